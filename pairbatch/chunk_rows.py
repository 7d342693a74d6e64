"""A results chunk's *candidate* rows: each line matched to its pair by key and shaped
into the row it gives if it is its key's last line ("last line wins"), plus the failed
attempts of last lines without a verdict, of repeated lines and of unanswered pairs.

Shared by both ways :mod:`pairbatch.chunked` writes a segment's files (one pass, or the
two-pass plan over candidate parts); blocking, Polars only.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import attrs
import polars as pl

from pairbatch.keyindex import KeyIndex
from pairbatch.normalize import (
    _ANSWERED_DETAIL,
    _BETTER_ID,
    _ERROR_CODE,
    _SELECT_FAILED,
    _VALID,
    _WINNER_POS,
    DUPLICATE_DETAIL,
    Normalized,
    _meta,
    _phase_iter,
    normalize_results,
)
from pairbatch.results import DEFAULT_TAG_PREFIX, DEFAULT_TAG_SUFFIX, empty_results

# The chunked path's logger, as before these helpers had a module of their own.
log = logging.getLogger("pairbatch.chunked")

_TS = pl.Datetime("us", "UTC")


@attrs.frozen
class Segment:
    """What a segment's rows are matched against and tagged with."""

    pairs: pl.DataFrame
    backend: str
    model: str
    segment_index: int | None
    batch_id: str | None
    received_at: datetime
    batch_status: str | None = None
    tag_prefix: str = DEFAULT_TAG_PREFIX
    tag_suffix: str = DEFAULT_TAG_SUFFIX


@attrs.define
class Parts:
    """The per-chunk candidate parts and the small key columns kept in memory."""

    directory: Path
    files: list[Path] = attrs.field(factory=list)
    keys: list[pl.DataFrame] = attrs.field(factory=list)
    lines: int = 0
    stray: int = 0
    stray_sample: list[str | None] = attrs.field(factory=list)

    def warn_stray(self, segment: Segment) -> None:
        if self.stray:
            log.warning(
                "segment %s: %d result line(s) match no pair (custom_id %s...); ignored",
                segment.segment_index,
                self.stray,
                self.stray_sample[:3],
            )


def unanswered_rows(missing: pl.DataFrame, *, seg: Segment) -> Normalized:
    """The failed attempts of pairs that no line answered."""
    return normalize_results(
        empty_results(),
        missing.drop("_pair"),
        backend=seg.backend,
        model=seg.model,
        segment_index=seg.segment_index,
        batch_id=seg.batch_id,
        received_at=seg.received_at,
        batch_status=seg.batch_status,
    )


@attrs.frozen
class CandidatePlan:
    """The columns and expressions a chunk's candidate rows are built with (made once)."""

    segment: Segment
    #: The pairs' columns (no rows): the outputs' shape is derived from them.
    shape: pl.DataFrame
    #: The results file's columns and types for these pairs.
    result_schema: pl.Schema = attrs.field(init=False)
    exprs: list[pl.Expr] = attrs.field(init=False)

    @property
    def pair_columns(self) -> list[str]:
        return self.shape.columns

    @property
    def result_columns(self) -> list[str]:
        return self.result_schema.names()

    def __attrs_post_init__(self) -> None:
        seg = self.segment
        empty = normalize_results(empty_results(), self.shape, backend=seg.backend, model=seg.model)
        object.__setattr__(self, "result_schema", empty.results.schema)
        model = pl.coalesce(pl.col("model"), pl.lit(seg.model, dtype=pl.Utf8)).alias("model")
        exprs = [
            pl.lit(True).alias("_matched"),
            _BETTER_ID,
            model,
            *_meta(seg.backend, seg.segment_index, seg.batch_id),
        ]
        object.__setattr__(self, "exprs", exprs)


def candidate_rows(
    raw: pl.DataFrame,
    parts: Parts,
    index: KeyIndex,
    pair_side: pl.DataFrame,
    plan: CandidatePlan,
) -> pl.DataFrame:
    """A chunk's lines that match a pair, each as the row it gives if it is its key's
    last line (counting the lines, and the ones matching no pair, in ``parts``)."""
    seg = plan.segment
    start = parts.lines
    parts.lines += raw.height
    pair = index.lookup(raw.get_column("custom_id"))
    lines = pl.int_range(start, start + raw.height, dtype=pl.UInt32, eager=True).alias("_line")
    known = raw.with_columns(lines, pair)
    if pair.null_count():
        stray = known.filter(pl.col("_pair").is_null()).get_column("custom_id")
        parts.stray += stray.len()
        parts.stray_sample.extend(stray.head(3).to_list())
        known = known.filter(pl.col("_pair").is_not_null())
    at = pl.lit(seg.received_at, dtype=_TS)
    # A gather by row number: joining on the key rebuilt a hash table of every pair
    # for each chunk (half the chunk's cost at 128,000 pairs).
    matched = pair_side[known.get_column("_pair")].drop("_pair")
    # One plan for the added columns: each eager call is a fixed cost per chunk.
    return (
        pl.concat([matched, known], how="horizontal")
        .lazy()
        .with_columns(plan.exprs)
        .with_columns(_WINNER_POS)
        .with_columns(at.alias("received_at"), *_phase_iter(plan.pair_columns))
        .collect()
    )


def failed_rows(chosen: pl.LazyFrame, earlier: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Failed attempts from last lines without a valid winner, and from earlier lines
    (duplicates)."""
    at = pl.col("received_at").alias("attempted_at")
    # Why a last line failed is worked out for the failed ones only (a regex per row).
    invalid = chosen.filter(~_VALID).with_columns(
        _ERROR_CODE, _ANSWERED_DETAIL.alias("error_detail"), at, pl.lit(False).alias("is_duplicate")
    )
    repeated = earlier.with_columns(
        pl.lit("http_error").alias("error_code"),
        pl.lit(DUPLICATE_DETAIL).alias("error_detail"),
        at,
        pl.lit(True).alias("is_duplicate"),
    )
    return invalid.select(_SELECT_FAILED), repeated.select(_SELECT_FAILED)
