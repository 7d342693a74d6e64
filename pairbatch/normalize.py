"""Aligning parsed results with a segment's pairs: results, and failed attempts.

Rows are matched on ``custom_id`` against the stored pairs, so sample IDs always come
from the pairs and never from parsing a key. Every pair of the segment ends up in exactly
one of ``results`` (a valid winner) or ``failed_attempts`` with ``is_duplicate == False``;
extra result lines for an already-answered key become additional failed attempts marked
``is_duplicate == True`` (reference §4.2: the last line wins).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime

import attrs
import polars as pl

from pairbatch.errors import InputError
from pairbatch.models import utcnow
from pairbatch.pairs import with_pair_keys
from pairbatch.results import RESULT_SCHEMA, empty_results

log = logging.getLogger("pairbatch.normalize")

_ALIASES = (("A_id", "B_id"), ("A", "B"), ("idA", "idB"), ("ID_A", "ID_B"), ("id1", "id2"))
_KEYS = ("A_id", "B_id", "ordered_key", "unordered_key", "pair_uid")
_TS = pl.Datetime("us", "UTC")

FAILED_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "A_id": pl.Utf8,
    "B_id": pl.Utf8,
    "unordered_key": pl.Utf8,
    "ordered_key": pl.Utf8,
    "pair_uid": pl.Utf8,
    "custom_id": pl.Utf8,
    "backend": pl.Utf8,
    "model": pl.Utf8,
    "status_code": pl.Int64,
    "error_message": pl.Utf8,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "total_tokens": pl.Int64,
    "error_code": pl.Utf8,
    "error_detail": pl.Utf8,
    "attempted_at": _TS,
    "segment_index": pl.Int64,
    "batch_id": pl.Utf8,
    "phase": pl.Utf8,
    "iter": pl.Int64,
    "is_duplicate": pl.Boolean,
}
_EMPTY_FAILED = pl.DataFrame(schema=FAILED_SCHEMA)
DUPLICATE_DETAIL = "Duplicate result row for custom_id; treated as non-observed attempt"
MISSING_DETAIL = "missing raw result for pair"


@attrs.frozen
class Normalized:
    results: pl.DataFrame
    failed_attempts: pl.DataFrame


def coerce_pairs(pairs: pl.DataFrame) -> pl.DataFrame:
    """Accept the reference's ID aliases and add pair keys where missing (§4.1)."""
    frame = pairs
    if "ID1" not in frame.columns or "ID2" not in frame.columns:
        for left, right in _ALIASES:
            if left in frame.columns and right in frame.columns:
                frame = frame.rename({left: "ID1", right: "ID2"})
                break
        else:
            raise InputError("`pairs` must contain columns: ID1, ID2")
    schema = frame.schema
    if schema["ID1"] != pl.Utf8 or schema["ID2"] != pl.Utf8:
        frame = frame.with_columns(pl.col("ID1", "ID2").cast(pl.Utf8))
    missing_text = [c for c in ("text1", "text2") if c not in schema]
    if missing_text:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Utf8).alias(c) for c in missing_text)
    if any(c not in frame.columns for c in _KEYS):
        frame = with_pair_keys(
            frame.drop([c for c in _KEYS if c != "pair_uid" and c in frame.columns])
        )
    return frame


def _meta(backend: str, segment_index: int | None, batch_id: str | None) -> list[pl.Expr]:
    return [
        pl.lit(backend, dtype=pl.Utf8).alias("backend"),
        pl.lit(segment_index, dtype=pl.Int64).alias("segment_index"),
        pl.lit(batch_id, dtype=pl.Utf8).alias("batch_id"),
    ]


def _phase_iter(columns: Collection[str]) -> list[pl.Expr]:
    return [
        (pl.col("phase").cast(pl.Utf8) if "phase" in columns else pl.lit(None, pl.Utf8)).alias(
            "phase"
        ),
        (
            pl.col("iter").cast(pl.Int64, strict=False)
            if "iter" in columns
            else pl.lit(None, pl.Int64)
        ).alias("iter"),
    ]


def _select_failed(frame: pl.DataFrame) -> pl.DataFrame:
    present = [
        pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in FAILED_SCHEMA.items()
    ]
    return frame.select(present)


def empty_failed() -> pl.DataFrame:
    # A shallow copy of one made once: building it took 0.18 ms, a tenth of a small
    # segment's settle.
    return _EMPTY_FAILED.clone()


# The expressions that do not depend on a call's arguments are built once: for the small
# segments of a big run, building Polars expressions costs more than running them.
_RESULT_ITEMS = list(RESULT_SCHEMA.items())
# The plans below are written minimal, and what two of them share is materialised once;
# on 2-row segments the optimiser's passes and the streaming engine cost more than the
# whole work, and at 200,000 rows they save nothing measurable.
_AS_WRITTEN = pl.QueryOptFlags.none()
# Inside normalize_results every FAILED_SCHEMA column exists: pair keys from the pairs,
# the rest from the result schema or added on the way.
_SELECT_FAILED = [pl.col(name).cast(dtype) for name, dtype in FAILED_SCHEMA.items()]
_BETTER_ID = (
    pl.when(pl.col("better_sample") == "SAMPLE_1")
    .then(pl.col("ID1"))
    .when(pl.col("better_sample") == "SAMPLE_2")
    .then(pl.col("ID2"))
    .alias("better_id")
)
_WINNER_POS = (
    pl.when(pl.col("better_id") == pl.col("A_id"))
    .then(pl.lit(1, pl.Int64))
    .when(pl.col("better_id") == pl.col("B_id"))
    .then(pl.lit(2, pl.Int64))
    .alias("winner_pos")
)
_VALID = pl.col("winner_pos").is_not_null()
_UNMATCHED = ~pl.col("_matched")
_ENDED = pl.col("result_type").is_in(["errored", "failed", "canceled", "expired"])
_MESSAGE = pl.col("error_message").fill_null("")
_ERROR_CODE = (
    pl.when(_UNMATCHED)
    .then(pl.lit("http_error"))
    .when(_MESSAGE.str.contains(r"(?i)timeout|timed out"))
    .then(pl.lit("timeout"))
    .when(_MESSAGE.str.contains(r"(?i)parse"))
    .then(pl.lit("parse_error"))
    .when(pl.col("status_code") >= 400)
    .then(pl.lit("http_error"))
    .when(_ENDED)
    .then(pl.lit("http_error"))
    .when(pl.col("better_id").is_null())
    .then(pl.lit("backend_missing_fields"))
    .otherwise(pl.lit("invalid_winner"))
    .alias("error_code")
)
# The detail of an answered pair; an unanswered one's depends on the batch's status.
_ANSWERED_DETAIL = (
    pl.when(pl.col("error_message").is_not_null())
    .then(pl.col("error_message"))
    .when(pl.col("status_code").is_not_null() & (pl.col("status_code") >= 400))
    .then(pl.format("HTTP {}", pl.col("status_code")))
    .when(_ENDED)
    .then(pl.format("Request {}", pl.col("result_type")))
    .when(pl.col("better_id").is_null())
    .then(pl.lit("No winner tag found in the response"))
    .otherwise(pl.format("Invalid winner: {}", pl.col("better_id")))
)


def normalize_results(
    raw: pl.DataFrame,
    pairs: pl.DataFrame,
    *,
    backend: str,
    model: str,
    segment_index: int | None = None,
    batch_id: str | None = None,
    received_at: datetime | None = None,
    batch_status: str | None = None,
) -> Normalized:
    """Split one segment's parsed results into valid results and failed attempts.

    ``batch_status`` (e.g. ``"expired"``) marks a batch that ended before every request
    ran: its unanswered pairs get ``error_detail = "Batch status: <status>"``.
    """
    frame = coerce_pairs(pairs)
    raw = raw if raw.width else empty_results()
    if list(raw.schema.items()) != _RESULT_ITEMS:
        # A raw frame from elsewhere (a CSV, an older run) may miss columns or carry
        # other dtypes; the typed frames downstream must not depend on that.
        raw = raw.select(
            pl.col(name).cast(dtype)
            if name in raw.columns
            else pl.lit(None, dtype=dtype).alias(name)
            for name, dtype in _RESULT_ITEMS
        )
    if "custom_id" not in frame.columns:
        frame = _align_by_order(raw, frame)
    # A few lazy plans, each collected once with the optimiser off: the steps are many but
    # each is tiny, and what two plans share is materialised rather than recomputed.
    at = pl.lit(received_at or utcnow(), dtype=_TS)
    meta = _meta(backend, segment_index, batch_id)
    model_or_default = pl.coalesce(pl.col("model"), pl.lit(model, dtype=pl.Utf8)).alias("model")
    phase_iter = _phase_iter(frame.columns)
    ids = frame.get_column("custom_id").drop_nulls().implode()
    # A line whose key could not be recovered (null) can match no pair: it is logged with
    # the unknown ones rather than vanishing in the filters below. A key is either known
    # or not, so "last line for its key" needs no filtering first.
    flagged = _collect(
        raw.lazy().with_columns(
            pl.col("custom_id").is_in(ids).fill_null(False).alias("_known"),
            pl.col("custom_id").is_last_distinct().alias("_last"),
        )
    ).lazy()
    unknown = flagged.filter(~pl.col("_known")).select("custom_id")
    kept = (
        flagged.filter(pl.col("_known") & pl.col("_last"))
        .drop("_known", "_last")
        .with_columns(pl.lit(True).alias("_matched"))
    )
    duplicates = flagged.filter(pl.col("_known") & ~pl.col("_last")).drop("_known", "_last")

    pair_columns = [c for c in frame.columns if c not in RESULT_SCHEMA or c == "custom_id"]
    joined = _collect(
        frame.lazy()
        .select(pair_columns)
        .join(kept, on="custom_id", how="left", maintain_order="left")
        .with_columns(pl.col("_matched").fill_null(False), _BETTER_ID, model_or_default, *meta)
        .with_columns(_WINNER_POS)
    ).lazy()
    results = (
        joined.filter(_VALID).with_columns(at.alias("received_at"), *phase_iter).drop("_matched")
    )
    missing_detail = f"Batch status: {batch_status}" if batch_status else MISSING_DETAIL
    failed = (
        joined.filter(~_VALID)
        .with_columns(
            _ERROR_CODE,
            pl.when(_UNMATCHED)
            .then(pl.lit(missing_detail))
            .otherwise(_ANSWERED_DETAIL)
            .alias("error_detail"),
            at.alias("attempted_at"),
            pl.lit(False).alias("is_duplicate"),
            *phase_iter,
        )
        .select(_SELECT_FAILED)
    )
    keys = frame.lazy().select(
        "custom_id", *_KEYS, *[c for c in ("phase", "iter") if c in frame.columns]
    )
    repeated = (
        duplicates.join(keys, on="custom_id", how="left", maintain_order="left")
        .with_columns(
            model_or_default,
            *meta,
            pl.lit("http_error").alias("error_code"),
            pl.lit(DUPLICATE_DETAIL).alias("error_detail"),
            at.alias("attempted_at"),
            pl.lit(True).alias("is_duplicate"),
            *phase_iter,
        )
        .select(_SELECT_FAILED)
    )
    stray, valid, invalid, extra = pl.collect_all(
        [unknown, results, failed, repeated], engine="in-memory", optimizations=_AS_WRITTEN
    )
    if stray.height:
        log.warning(
            "segment %s: %d result line(s) match no pair (custom_id %s...); ignored",
            segment_index,
            stray.height,
            stray.get_column("custom_id").head(3).to_list(),
        )
    failed_attempts = pl.concat([invalid, extra]) if extra.height else invalid
    return Normalized(results=valid, failed_attempts=failed_attempts)


def _collect(plan: pl.LazyFrame) -> pl.DataFrame:
    return plan.collect(engine="in-memory", optimizations=_AS_WRITTEN)


def _align_by_order(raw: pl.DataFrame, frame: pl.DataFrame) -> pl.DataFrame:
    """A hand-made registry's pairs carry no keys: align by row order, as the
    reference's last resort does, and only when that is unambiguous."""
    raw_keys = raw.get_column("custom_id")
    if raw.height != frame.height:
        raise InputError("Unable to align raw results with pairs (no custom_id, counts differ)")
    if raw_keys.null_count() or raw_keys.n_unique() != raw_keys.len():
        raise InputError(
            "Unable to align raw results with pairs (no custom_id, and the results' "
            "custom_ids are missing or repeated)"
        )
    return frame.with_columns(raw_keys.alias("custom_id"))


def failed_attempts_from_pairs(
    pairs: pl.DataFrame,
    *,
    backend: str,
    model: str,
    error_code: str,
    error_detail: str,
    attempted_at: datetime | None = None,
    segment_index: int | None = None,
    batch_id: str | None = None,
) -> pl.DataFrame:
    """One failed attempt per pair, for a batch that failed as a whole (§4.5)."""
    frame = coerce_pairs(pairs)
    if "custom_id" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Utf8).alias("custom_id"))
    out = frame.with_columns(
        pl.lit(model, dtype=pl.Utf8).alias("model"),
        *_meta(backend, segment_index, batch_id),
        pl.lit(error_code).alias("error_code"),
        pl.lit(error_detail).alias("error_detail"),
        pl.lit(attempted_at or utcnow(), dtype=_TS).alias("attempted_at"),
        pl.lit(False).alias("is_duplicate"),
        *_phase_iter(frame.columns),
    )
    return _select_failed(out)


def empty_combined() -> pl.DataFrame:
    """The results frame of a run with no results: no rows, every base column typed."""
    pairs = pl.DataFrame(
        schema={
            "custom_id": pl.Utf8,
            "ID1": pl.Utf8,
            "text1": pl.Utf8,
            "ID2": pl.Utf8,
            "text2": pl.Utf8,
        }
    )
    return normalize_results(empty_results(), pairs, backend="", model="").results
