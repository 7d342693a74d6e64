"""``pairbatch demo``: a whole study on the built-in emulator, no keys, no network.

It pairs the bundled sample texts, submits them to all three emulated providers,
resumes them concurrently with a live progress display, checks every verdict against
the emulator's judge and prints a summary.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import polars as pl

from pairbatch.pairs import make_pairs, sample_texts
from pairbatch.progress import ProgressDisplay
from pairbatch.prompts import trait_description
from pairbatch.resume import ResumeResult, resume_multi_batches
from pairbatch.submit import submit_pairs_multi_batch
from pairbatch.summary import summarize
from pairbatch.testing import ProviderEmulator, expected_winner
from pairbatch.transport import Transport

MODELS = {
    "openai": "gpt-4.1-mini",
    "anthropic": "claude-sonnet-4-5",
    "gemini": "gemini-2.5-flash",
}


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _agreement(result: ResumeResult) -> tuple[int, int]:
    combined = result.combined
    if combined.height == 0:
        return 0, 0
    truth = [
        expected_winner(t1, t2) == ("SAMPLE_1" if pos == 1 else "SAMPLE_2")
        for t1, t2, pos in combined.select("text1", "text2", "winner_pos").iter_rows()
    ]
    return sum(truth), len(truth)


async def run_demo(
    output_dir: Path, *, n_pairs: int | None = None, latency: float = 2.0, verbose: bool = False
) -> int:
    started = time.perf_counter()
    pairs = make_pairs(sample_texts())
    if n_pairs is not None:
        pairs = pairs.head(n_pairs)
    name, description = trait_description("overall_quality")
    _out(f"pairbatch demo: {pairs.height} pairs x {len(MODELS)} providers on the local emulator")
    async with (
        ProviderEmulator(latency=(latency * 0.5, latency), seed=7) as emulator,
        Transport(max_concurrency=32, rate_limits={p: 20.0 for p in MODELS}) as transport,
    ):
        keys = {p: "demo-key" for p in MODELS}
        urls = {p: emulator.base_url(p) for p in MODELS}
        runs = {}
        for provider, model in MODELS.items():
            result = await submit_pairs_multi_batch(
                pairs,
                model=model,
                trait_name=name,
                trait_description=description,
                backend=provider,
                n_segments=3,
                output_dir=output_dir / provider,
                write_registry=True,
                overwrite=True,  # a finished earlier demo is replaced; a live one refused
                verbose=verbose,
                api_key=keys[provider],
                base_url=urls[provider],
                transport=transport,
            )
            runs[provider] = result
            _out(f"  submitted {provider}: {len(result.jobs)} batches -> {result.output_dir}")
        display = ProgressDisplay(sys.stderr, total_jobs=sum(len(r.jobs) for r in runs.values()))
        results = await asyncio.gather(
            *(
                resume_multi_batches(
                    None,
                    run.output_dir,
                    interval_seconds=max(latency / 4, 0.1),
                    write_results_csv=True,
                    write_combined_csv=True,
                    verbose=verbose,
                    api_keys=keys,
                    base_urls=urls,
                    transport=transport,
                    on_event=display,
                )
                for run in runs.values()
            )
        )
        display.close()
    combined = pl.concat([r.combined for r in results], how="diagonal_relaxed")
    failed = pl.concat([r.failed_attempts for r in results], how="diagonal_relaxed")
    _out()
    with pl.Config(tbl_rows=20, tbl_cols=10, tbl_hide_dataframe_shape=True, tbl_width_chars=120):
        _out(str(summarize(combined, failed)))
    agree = [_agreement(r) for r in results]
    matched, total = sum(a for a, _ in agree), sum(t for _, t in agree)
    _out(f"verdicts matching the emulator's judge: {matched}/{total}")
    for provider, outcome in zip(runs, results, strict=True):
        _out(f"  {provider}: combined CSV {outcome.combined_csv_path}")
    where = os.path.abspath(output_dir)  # noqa: ASYNC240 - string work, no disk access
    _out(f"done in {time.perf_counter() - started:.1f} s; files under {where}")
    all_ok = all(r.all_done and r.batch_failures.height == 0 for r in results)
    return 0 if all_ok and matched == total else 1
