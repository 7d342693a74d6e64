"""Registry updates on a 10,000-job run: journal + group commit vs rewriting the CSV.

Run by hand:  .venv/bin/python benchmarks/bench_registry.py [--jobs 10000] [--updates 2000]

Baseline (measured in the same run): the reference's approach made per-transition,
i.e. rewrite the whole CSV atomically after every job transition.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import polars as pl

from pairbatch import registry as reg
from pairbatch.models import Job, JobStatus


def make_jobs(out: Path, n: int) -> list[Job]:
    return [
        Job(
            segment_index=k,
            provider="openai",
            model="gpt-4.1-mini",
            batch_id=f"batch_{k:08d}abcdef",
            batch_input_path=str(out / f"batch_{k:02d}_input.jsonl"),
            batch_output_path=str(out / f"batch_{k:02d}_output.jsonl"),
            csv_path=str(out / f"batch_{k:02d}_results.csv"),
            pairs_path=str(out / f"batch_{k:02d}_pairs.parquet"),
            n_pairs=500,
            run_tag="pb0123456789",
        )
        for k in range(1, n + 1)
    ]


def rewrite_each_time(out: Path, jobs: list[Job], updates: int) -> float:
    current = {j.segment_index: j for j in jobs}
    start = time.perf_counter()
    for job in jobs[:updates]:
        current[job.segment_index] = job.transition(done=True, status=JobStatus.SUCCEEDED)
        reg.write_registry(out, current.values())
    return time.perf_counter() - start


async def journal(out: Path, jobs: list[Job], updates: int, concurrent: bool) -> float:
    live = reg.Registry(out, jobs)
    changed = [j.transition(done=True, status=JobStatus.SUCCEEDED) for j in jobs[:updates]]
    start = time.perf_counter()
    if concurrent:
        await asyncio.gather(*(live.record(j) for j in changed))
    else:
        for job in changed:
            await live.record(job)
    await live.close()
    return time.perf_counter() - start


def reading(sizes: list[int], repeat: int = 2) -> None:
    """``read_registry`` (CSV snapshot + journal of the same jobs) against a plain
    ``pl.read_csv`` of the snapshot, same files, best of ``repeat``."""
    print("reading a registry (snapshot + journal), best of", repeat)
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            reg.write_registry(out, make_jobs(out, n))
            ours = base = float("inf")
            for _ in range(repeat):
                start = time.perf_counter()
                reg.read_registry(out)
                ours = min(ours, time.perf_counter() - start)
                start = time.perf_counter()
                pl.read_csv(reg.registry_path(out))
                base = min(base, time.perf_counter() - start)
            print(
                f"  {n:>7,} jobs: read_registry {ours:7.3f} s ({ours / n * 1e6:5.1f} us/job), "
                f"pl.read_csv {base:6.3f} s, ratio {ours / base:5.1f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--updates", type=int, default=1_000)
    parser.add_argument("--read", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    args = parser.parse_args()
    if args.read:
        reading(args.read)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        results = {}
        for name in ("rewrite", "journal_sequential", "journal_concurrent"):
            out = base / name
            jobs = make_jobs(out, args.jobs)
            reg.write_registry(out, jobs)
            if name == "rewrite":
                results[name] = rewrite_each_time(out, jobs, args.updates)
            else:
                results[name] = asyncio.run(
                    journal(out, jobs, args.updates, concurrent=name.endswith("concurrent"))
                )
            assert sum(j.done for j in reg.read_registry(out)) == args.updates
        csv_size = (base / "rewrite" / reg.REGISTRY_NAME).stat().st_size
        print(f"{args.jobs} jobs, {args.updates} transitions, registry CSV {csv_size / 1e6:.2f} MB")
        baseline = results["rewrite"]
        for name, seconds in results.items():
            per = seconds / args.updates * 1e3
            print(
                f"  {name:20s} {seconds:8.3f} s  {per:7.3f} ms/transition  "
                f"{baseline / seconds:8.1f}x faster than rewrite"
            )
        print(f"  bytes written per transition: rewrite {csv_size / 1e3:.0f} KB, journal ~0.5 KB")


if __name__ == "__main__":
    main()
