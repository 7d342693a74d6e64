"""What the pre-flight costs a submit (issue: right against today's real APIs).

Run by hand:  .venv/bin/python benchmarks/bench_preflight.py [--pairs 300] [--runs 3]

A 3-provider submit on the emulator (in this process, loopback), with and without the
pre-flight, in the same run: the extra requests (goal: one per request shape, i.e. one
per provider here) and the extra time (goal: under 1 s in all).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pairbatch
from pairbatch.testing import ProviderEmulator
from pairbatch.testing.faults import GENERATE
from tests.engine_helpers import MODELS, study_pairs


async def submit_all(emu: ProviderEmulator, root: Path, preflight: bool) -> float:
    pairs = study_pairs(ARGS.pairs, seed=1)
    started = time.perf_counter()
    for provider, model in MODELS.items():
        await pairbatch.submit_pairs_multi_batch(
            pairs,
            model=model,
            trait_name="T",
            trait_description="D",
            backend=provider,
            n_segments=3,
            output_dir=root / f"{provider}-{preflight}",
            api_key="k",
            base_url=emu.base_url(provider),
            preflight=preflight,
            rate_limits={provider: 1000.0},
        )
    return time.perf_counter() - started


async def main() -> None:
    with_times, without_times, extra = [], [], []
    for run in range(ARGS.runs):
        with tempfile.TemporaryDirectory() as tmp:
            async with ProviderEmulator(latency=60.0) as emu:
                without_times.append(await submit_all(emu, Path(tmp) / f"a{run}", False))
                before = emu.stats.count(endpoint=GENERATE)
                with_times.append(await submit_all(emu, Path(tmp) / f"b{run}", True))
                extra.append(emu.stats.count(endpoint=GENERATE) - before)
    cost = [w - o for w, o in zip(with_times, without_times, strict=True)]
    print(f"3-provider submit of {ARGS.pairs} pairs x 3 segments each, {ARGS.runs} runs:")
    print(f"  without pre-flight: {min(without_times):.3f}-{max(without_times):.3f} s")
    print(f"  with pre-flight:    {min(with_times):.3f}-{max(with_times):.3f} s")
    print(f"  pre-flight adds {statistics.median(cost) * 1000:.0f} ms (median; goal < 1 s)")
    print(f"  and {sorted(set(extra))} ordinary request(s) per 3-provider submit (goal: 3)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    ARGS = parser.parse_args()
    asyncio.run(main())
