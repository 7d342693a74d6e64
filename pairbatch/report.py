"""Reading finished runs back from disk, scores per group, and a self-contained HTML report.

The report mirrors what pairwiseLLM's vignettes assemble by hand (``fit_bt_model``,
``check_positional_bias``, ``compute_reverse_consistency``): scores with 95 % intervals,
the position-1 win rate with its exact CI per backend/model, order consistency, and
failures and tokens per job. Plots are PNGs inlined as base64 (no network, no files);
they need ``pairbatch[report]`` (matplotlib, drawn on its Agg canvas).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import polars as pl

from pairbatch._fs import atomic_write_bytes, check_target
from pairbatch.analysis import GROUP_COLUMNS, position_bias, require_extra, reverse_consistency
from pairbatch.errors import InputError
from pairbatch.outcomes import load_outcome
from pairbatch.registry import read_registry, require_run
from pairbatch.summary import order_notes, summarize

log = logging.getLogger("pairbatch.report")

RunPath = str | os.PathLike[str]


@attrs.frozen
class RunData:
    """What a set of run folders holds: ``combined`` verdicts (None when there are none),
    ``failed`` attempts (None likewise) and ``jobs`` (one row per segment and run)."""

    combined: pl.DataFrame | None
    failed: pl.DataFrame | None
    jobs: pl.DataFrame


def load_runs(runs: Sequence[RunPath]) -> RunData:
    """Read the per-segment results and failures that resume stored, as the registry
    lists them. Stored keys are kept as they are; analyses recompute their own."""
    results, failures, jobs = [], [], []
    seen: dict[Path, RunPath] = {}
    for run in runs:
        folder = require_run(run)
        # The same folder twice would count every verdict twice (and inflate the
        # reliability), however it is spelled.
        key = folder.resolve()
        if key in seen:
            raise InputError(f"run folder {run} is given twice (also as {seen[key]})")
        seen[key] = run
        for job in read_registry(folder):
            outcome = load_outcome(job) if job.done else None
            if outcome is not None and outcome.error:
                raise InputError(outcome.error)
            got = _tag(outcome.results if outcome else None, folder.name)
            bad = _tag(outcome.failed_attempts if outcome else None, folder.name)
            results += [got] if got is not None else []
            failures += [bad] if bad is not None else []
            jobs.append(_job_row(job, folder.name, got, bad))
    combined = pl.concat(results, how="diagonal_relaxed") if results else None
    failed = pl.concat(failures, how="diagonal_relaxed") if failures else None
    return RunData(combined, failed, pl.DataFrame(jobs))


def _tag(frame: pl.DataFrame | None, run: str) -> pl.DataFrame | None:
    if frame is None or frame.height == 0:
        return None
    return frame.with_columns(pl.lit(run).alias("run"))


def _job_row(
    job: Any, run: str, got: pl.DataFrame | None, bad: pl.DataFrame | None
) -> dict[str, Any]:
    tokens = 0
    if got is not None and "total_tokens" in got.columns:
        tokens = int(got["total_tokens"].fill_null(0).sum())
    return {
        "run": run,
        "segment": job.segment_index,
        "backend": str(job.provider.value if hasattr(job.provider, "value") else job.provider),
        "model": job.model,
        "batch_id": job.batch_id,
        "status": str(job.status.value if hasattr(job.status, "value") else job.status),
        "pairs": job.n_pairs,
        "results": 0 if got is None else got.height,
        "failures": 0 if bad is None else bad.height,
        "total_tokens": tokens,
    }


def scores_by_group(combined: pl.DataFrame, *, position_effect: bool = False) -> pl.DataFrame:
    """Bradley–Terry scores, one fit per backend/model when the frame holds several,
    with ``lower``/``upper`` 95 % Wald intervals and (if asked) the position effect."""
    from pairbatch.scores import bradley_terry

    groups = [c for c in GROUP_COLUMNS if c in combined.columns]
    parts = combined.partition_by(groups, as_dict=True) if groups else {(): combined}
    out = []
    for key, part in parts.items():
        fit = bradley_terry(part, position_effect=position_effect)
        scores = fit.scores.with_columns(
            (pl.col("theta") - 1.96 * pl.col("se")).alias("lower"),
            (pl.col("theta") + 1.96 * pl.col("se")).alias("upper"),
            pl.lit(fit.reliability).alias("reliability"),
        )
        if fit.position_effect is not None:
            scores = scores.with_columns(
                pl.lit(fit.position_effect.estimate).alias("position_effect"),
                pl.lit(fit.position_effect.se).alias("position_effect_se"),
            )
        labels = [pl.lit(v).alias(c) for c, v in zip(groups, key, strict=True)]
        out.append(scores.select(*labels, pl.all()))
    return pl.concat(out, how="diagonal_relaxed")


def position_rates(combined: pl.DataFrame) -> pl.DataFrame:
    """Per backend/model: the SAMPLE_1 win rate with its exact (Clopper–Pearson) 95 % CI
    and the two-sided binomial p-value against 0.5."""
    require_extra()
    from scipy.stats import binomtest

    groups = [c for c in GROUP_COLUMNS if c in combined.columns]
    counts = (
        combined.group_by(groups).agg(
            (pl.col("winner_pos") == 1).sum().alias("pos1_wins"), pl.len().alias("n")
        )
        if groups
        else combined.select(
            (pl.col("winner_pos") == 1).sum().alias("pos1_wins"), pl.len().alias("n")
        )
    )
    rows = []
    for row in counts.iter_rows(named=True):
        test = binomtest(int(row["pos1_wins"]), int(row["n"]), 0.5)
        ci = test.proportion_ci(0.95, method="exact")
        rows.append(
            row
            | {"rate": row["pos1_wins"] / row["n"], "lower": ci.low, "upper": ci.high}
            | {"p_value": float(test.pvalue)}
        )
    out = pl.DataFrame(rows)
    if groups == list(GROUP_COLUMNS):  # say where the rate cannot be read as bias
        out = out.join(order_notes(combined, groups), on=groups, how="left")
    return out.sort(groups) if groups else out


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _scores_plot(scores: pl.DataFrame) -> str:
    from matplotlib.figure import Figure

    ordered = scores.sort("theta")
    height = max(2.5, 0.22 * ordered.height + 1)
    fig = Figure(figsize=(7, min(height, 40)))
    ax = fig.subplots()
    y = list(range(ordered.height))
    theta = ordered["theta"].to_list()
    err = [
        (t - lo, hi - t)
        for t, lo, hi in zip(theta, ordered["lower"], ordered["upper"], strict=True)
    ]
    ax.errorbar(theta, y, xerr=list(zip(*err, strict=True)), fmt="o", ms=3, capsize=2)
    ax.set_yticks(y, [str(v)[:30] for v in ordered["id"]], fontsize=7)
    ax.set_xlabel("Bradley–Terry score (logit), 95 % interval")
    return _png(fig)


def _rates_plot(rates: pl.DataFrame) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, max(2.0, 0.5 * rates.height + 1)))
    ax = fig.subplots()
    labels = [
        " / ".join(str(r[c]) for c in GROUP_COLUMNS if c in r)
        + (f"\n({r['pos1_note']})" if r.get("pos1_note") else "")
        for r in rates.iter_rows(named=True)
    ]
    y = list(range(rates.height))
    rate = rates["rate"].to_list()
    lo = [r - low for r, low in zip(rate, rates["lower"], strict=True)]
    hi = [high - r for r, high in zip(rate, rates["upper"], strict=True)]
    ax.errorbar(rate, y, xerr=[lo, hi], fmt="s", capsize=3)
    ax.axvline(0.5, color="grey", linestyle="--")
    ax.set_yticks(y, labels or ["all"], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of verdicts for the sample shown first (95 % exact CI)")
    return _png(fig)


def _table(frame: pl.DataFrame, limit: int = 200) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = []
    for row in frame.head(limit).iter_rows():
        cells = "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    more = f"<p>… {frame.height - limit} more rows</p>" if frame.height > limit else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse;"
    "font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
)


def build_report(data: RunData, *, position_effect: bool = False) -> str:
    """The report as one HTML string (no external resources)."""
    require_extra("report")
    parts = ["<h1>pairbatch study report</h1>"]
    parts += ["<h2>Jobs: failures and tokens</h2>", _table(data.jobs)]
    combined = data.combined
    if combined is None or combined.height == 0:
        parts.append("<p>No verdicts yet.</p>")
        return _page(parts)
    parts += ["<h2>Summary</h2>", _table(summarize(combined, data.failed))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = scores_by_group(combined, position_effect=position_effect)
    for warning in caught:
        parts.append(f"<p><b>Warning:</b> {html.escape(str(warning.message))}</p>")
    parts.append("<h2>Scores (Bradley–Terry)</h2>")
    groups = [c for c in GROUP_COLUMNS if c in scores.columns]
    for key, part in (
        scores.partition_by(groups, as_dict=True) if groups else {(): scores}
    ).items():
        if key:
            parts.append(f"<h3>{html.escape(' / '.join(map(str, key)))}</h3>")
        parts += [_scores_plot(part), _table(part.drop(groups))]
    rates = position_rates(combined)
    parts += ["<h2>Position-1 win rate</h2>", _rates_plot(rates), _table(rates)]
    consistency = reverse_consistency(combined)
    parts.append("<h2>Consistency across orders</h2>")
    if consistency.details.height:
        parts.append(_table(consistency.summary))
        bias = position_bias(consistency, n_boot=1000, seed=0).summary
        parts += ["<h3>Position bias (pairs judged in both orders)</h3>", _table(bias)]
    else:
        parts.append("<p>No pair was judged in both orders.</p>")
    return _page(parts)


def _page(parts: list[str]) -> str:
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>pairbatch report</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def write_report(runs: Sequence[RunPath], out: RunPath, *, position_effect: bool = False) -> Path:
    """Load ``runs`` and write the HTML report to ``out`` (its folder made if missing)."""
    check_target("report", out)
    text = build_report(load_runs(runs), position_effect=position_effect)
    path = Path(out)
    atomic_write_bytes(path, text.encode("utf-8"))
    log.info("wrote %s", path)
    return path
