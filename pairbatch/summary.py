"""A short summary of a run's results: counts, positional bias, tokens."""

from __future__ import annotations

import polars as pl

_TOKENS = ("prompt_tokens", "completion_tokens", "total_tokens")


def summarize(
    combined: pl.DataFrame | None, failed_attempts: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Per backend and model: results, failures, position-1 win rate and token totals.

    ``pos1_win_rate`` is the share of verdicts for the sample shown first; far from 0.5
    on balanced pairs it signals positional bias.
    """
    keys = ["backend", "model"]
    frames = []
    if combined is not None and combined.height:
        tokens = [pl.col(c).sum().alias(c) for c in _TOKENS if c in combined.columns]
        frames.append(
            combined.group_by(keys).agg(
                pl.len().alias("results"),
                (pl.col("winner_pos") == 1).mean().alias("pos1_win_rate"),
                *tokens,
            )
        )
    if (
        failed_attempts is not None
        and failed_attempts.height
        and "backend" in failed_attempts.columns
    ):
        frames.append(failed_attempts.group_by(keys).agg(pl.len().alias("failures")))
    if not frames:
        return pl.DataFrame(
            schema={
                "backend": pl.Utf8,
                "model": pl.Utf8,
                "results": pl.UInt32,
                "failures": pl.UInt32,
            }
        )
    out = frames[0]
    for frame in frames[1:]:
        out = out.join(frame, on=keys, how="full", coalesce=True)
    for column in ("results", "failures"):
        if column not in out.columns:
            out = out.with_columns(pl.lit(0, dtype=pl.UInt32).alias(column))
    out = out.with_columns(pl.col("results", "failures").fill_null(0))
    return out.sort(keys)
