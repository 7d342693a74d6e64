"""``pairbatch demo``: a whole study on the built-in emulator, no keys, no network.

It pairs the bundled sample texts, judges every pair in both orders on all three emulated
providers, whose judge has *known* qualities for the texts and a planted first-position
bias (:class:`~pairbatch.testing.LatentJudge`); resumes them concurrently with a live
progress display; checks every verdict against what the judge answered; then tests for
the position bias, fits Bradley–Terry scores, compares them with the planted truth and
writes an HTML report.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from pathlib import Path

import polars as pl

from pairbatch.errors import PairbatchError
from pairbatch.pairs import make_pairs, sample_texts
from pairbatch.progress import ProgressDisplay
from pairbatch.prompts import DEFAULT_TEMPLATE, build_prompt, trait_description
from pairbatch.resume import ResumeResult, resume_multi_batches
from pairbatch.submit import submit_pairs_multi_batch
from pairbatch.summary import summarize
from pairbatch.testing import LatentJudge, ProviderEmulator
from pairbatch.transport import Transport

MODELS = {
    "openai": "gpt-4.1-mini",
    "anthropic": "claude-sonnet-4-5",
    "gemini": "gemini-2.5-flash",
}
POSITION_BIAS = 0.4  # logits in favour of the text shown first


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def planted_qualities(texts: pl.DataFrame, seed: int = 7) -> dict[str, float]:
    """Longer, fuller texts are better, give or take: the truth the scores should find."""
    rng = random.Random(seed)
    lengths = [len(t) for t in texts["text"]]
    mean = sum(lengths) / len(lengths)
    spread = (sum((n - mean) ** 2 for n in lengths) / len(lengths)) ** 0.5 or 1.0
    return {
        t: (n - mean) / spread * 1.5 + rng.gauss(0, 0.3)
        for t, n in zip(texts["text"], lengths, strict=True)
    }


def _agreement(
    result: ResumeResult, judge: LatentJudge, name: str, description: str
) -> tuple[int, int]:
    """Verdicts equal to what the judge answered for exactly that prompt."""
    rows = result.combined.select("text1", "text2", "winner_pos").iter_rows()
    matched = total = 0
    for text1, text2, pos in rows:
        prompt = build_prompt(DEFAULT_TEMPLATE, name, description, text1, text2)
        total += 1
        matched += judge.answer(prompt) == f"<BETTER_SAMPLE>SAMPLE_{pos}</BETTER_SAMPLE>"
    return matched, total


async def run_demo(
    output_dir: Path, *, n_pairs: int | None = None, latency: float = 2.0, verbose: bool = False
) -> int:
    started = time.perf_counter()
    texts = sample_texts()
    pairs = make_pairs(texts)
    if n_pairs is not None:
        pairs = pairs.head(n_pairs)
    truth = planted_qualities(texts)
    judge = LatentJudge(truth, noise=1.0, position_bias=POSITION_BIAS, seed=7)
    name, description = trait_description("overall_quality")
    _out(
        f"pairbatch demo: {pairs.height} pairs x 2 orders x {len(MODELS)} providers on the "
        f"local emulator (judge: known qualities, first-position bias {POSITION_BIAS:g})"
    )
    async with (
        ProviderEmulator(latency=(latency * 0.5, latency), seed=7, judge=judge) as emulator,
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
                order="both",
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
    agree = [_agreement(r, judge, name, description) for r in results]
    matched, total = sum(a for a, _ in agree), sum(t for _, t in agree)
    _out(f"verdicts equal to the emulator judge's answers: {matched}/{total}")
    for provider, outcome in zip(runs, results, strict=True):
        _out(f"  {provider}: combined CSV {outcome.combined_csv_path}")
    _study(combined, truth, output_dir, [r.output_dir for r in runs.values()])
    where = os.path.abspath(output_dir)  # noqa: ASYNC240 - string work, no disk access
    _out(f"done in {time.perf_counter() - started:.1f} s; files under {where}")
    all_ok = all(r.all_done and r.batch_failures.height == 0 for r in results)
    return 0 if all_ok and matched == total else 1


def _study(combined: pl.DataFrame, truth: dict[str, float], out: Path, runs: list[Path]) -> None:
    """Position bias, scores against the planted truth, and the report (needs the
    ``analysis`` and ``report`` extras; says so in one line when they are missing)."""
    try:
        from pairbatch.analysis import position_bias
        from pairbatch.report import write_report
        from pairbatch.scores import bradley_terry

        bias = position_bias(combined).summary
        _out("position bias (both orders judged; exact McNemar test on order-dependent pairs):")
        for row in bias.iter_rows(named=True):
            _out(
                f"  {row['backend']}: SAMPLE_1 won {row['p_sample1_overall']:.1%} of "
                f"{row['n_overall']} judgements; McNemar p = {row['mcnemar_p']:.2g}"
            )
        # The three emulated providers share one judge (same prompt, same draw), so their
        # verdicts are copies: fit one, or the pooled SEs would be too small.
        first = combined.filter(pl.col("backend") == next(iter(MODELS)))
        fit = bradley_terry(first, position_effect=True)
        texts = _texts(combined)
        quality = texts.with_columns(
            pl.Series("truth", [truth[t] for t in texts["text"]], dtype=pl.Float64)
        )
        scored = fit.scores.join(quality, on="id")
        rho = scored.select(pl.corr("theta", "truth", method="spearman")).item()
        effect = fit.position_effect
        _out(
            f"Bradley-Terry ({next(iter(MODELS))}): reliability {fit.reliability:.2f}, "
            f"first-position effect {effect.estimate:+.2f} (SE {effect.se:.2f}; planted "
            f"{POSITION_BIAS:+g}), Spearman with the planted qualities {rho:.2f}"
            if effect is not None
            else f"Bradley-Terry: reliability {fit.reliability:.2f}, Spearman {rho:.2f}"
        )
        _out("top scores:")
        for row in fit.scores.sort("rank").head(5).iter_rows(named=True):
            _out(f"  {row['rank']:>2}. {row['id']}  theta {row['theta']:+.2f} (SE {row['se']:.2f})")
        report = write_report(runs, out / "report.html", position_effect=True)
        _out(f"report: {os.path.abspath(report)}")
    except (ImportError, PairbatchError) as exc:
        _out(f"(scores and report skipped: {exc})")


def _texts(combined: pl.DataFrame) -> pl.DataFrame:
    """Each judged text once: ``id, text``."""
    sides = [
        combined.select(pl.col(f"ID{k}").alias("id"), pl.col(f"text{k}").alias("text"))
        for k in (1, 2)
    ]
    return pl.concat(sides).unique("id", keep="first")
