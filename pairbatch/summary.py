"""A short summary of a run's results: counts, positional bias, tokens."""

from __future__ import annotations

import polars as pl

from pairbatch.pairs import ordered_key_expr, unordered_key_expr

_TOKENS = ("prompt_tokens", "completion_tokens", "total_tokens")
NOTE_OK = {
    "random": "order randomised",
    "both": "both orders judged",
}
NOTE_NOT_RANDOMISED = "order not randomised"  # the rate then mixes bias with pair order


def order_notes(combined: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per group, why the position-1 rate can (or cannot) be read as position bias.

    ``order_design`` (written by :func:`pairbatch.design.apply_order`) says how the
    order was chosen; without it a group counts as "both orders judged" when every
    pair was shown both ways. Keys are recomputed from the IDs, never read from disk.
    """
    frame = combined.with_columns(unordered_key_expr().alias("_k"), ordered_key_expr().alias("_o"))
    if "order_design" in frame.columns:
        design = pl.col("order_design").drop_nulls().first()
    else:
        design = pl.lit(None, dtype=pl.Utf8)
    both = frame.group_by([*keys, "_k"]).agg(pl.col("_o").n_unique().alias("_ways"))
    both = both.group_by(keys).agg((pl.col("_ways") == 2).all().alias("_both"))
    notes = frame.group_by(keys).agg(design.alias("_design")).join(both, on=keys, how="left")
    note = (
        pl.when(pl.col("_design").is_in(list(NOTE_OK)))
        .then(pl.col("_design").replace_strict(NOTE_OK, default=None))
        .when(pl.col("_both"))
        .then(pl.lit(NOTE_OK["both"]))
        .otherwise(pl.lit(NOTE_NOT_RANDOMISED))
    )
    return notes.select(*keys, note.alias("pos1_note"))


def summarize(
    combined: pl.DataFrame | None, failed_attempts: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Per backend and model: results, failures, position-1 win rate and token totals.

    ``pos1_win_rate`` is the share of verdicts for the sample shown first; far from 0.5
    it signals positional bias, but only where the shown order was randomised or both
    orders were judged. Elsewhere it is null and ``pos1_note`` says why.
    """
    keys = ["backend", "model"]
    frames = []
    if combined is not None and combined.height:
        tokens = [pl.col(c).sum().alias(c) for c in _TOKENS if c in combined.columns]
        rates = combined.group_by(keys).agg(
            pl.len().alias("results"),
            (pl.col("winner_pos") == 1).mean().alias("pos1_win_rate"),
            *tokens,
        )
        rates = rates.join(order_notes(combined, keys), on=keys, how="left")
        usable = pl.col("pos1_note") != NOTE_NOT_RANDOMISED
        frames.append(
            rates.with_columns(pl.when(usable).then(pl.col("pos1_win_rate")).alias("pos1_win_rate"))
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
