"""The clean segment's results, from row tuples (blocking).

Most segments of a big run end clean: one line per pair, every answer naming a valid
winner, nothing repeated or unknown. For those the results frame is built straight
from the parsed rows: a dict lookup per line instead of the dozen Polars plans of
:func:`pairbatch.normalize.normalize_results`, which on a 2-pair segment cost several
times the work itself. Anything else (a missing or repeated line, a line no pair has, a
failed answer, pairs with ``phase``/``iter`` or columns named like a result's) gives
``None``, and the caller takes the general path. Tests hold the two to the same frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import polars as pl

from pairbatch.normalize import coerce_pairs, normalize_results
from pairbatch.results import (
    DEFAULT_TAG_PREFIX,
    DEFAULT_TAG_SUFFIX,
    RESULT_SCHEMA,
    ROW_FIELDS,
    RowTuple,
    empty_results,
    find_winner,
    tags_overlap,
)

_TS = pl.Datetime("us", "UTC")
_CONTENT = ROW_FIELDS.index("content")
_MODEL = ROW_FIELDS.index("model")
_TEXT = tuple(i for i, name in enumerate(ROW_FIELDS) if RESULT_SCHEMA[name] == pl.Utf8)
# Columns the general path adds after the results' own; a pair column of one of these
# names would be replaced there, so such pairs go that way.
_ADDED = ("better_id", "backend", "segment_index", "batch_id", "winner_pos", "received_at")


@lru_cache(maxsize=64)
def _layout(pair_schema: tuple[tuple[str, pl.DataType], ...]) -> tuple[tuple[str, Any], ...]:
    """The results frame's (name, dtype) columns for pairs of this schema, as the general
    path lays them out (taken from it, on no rows, once per schema)."""
    empty = pl.DataFrame(schema=dict(pair_schema))
    frame = normalize_results(empty_results(), empty, backend="", model="").results
    return tuple(frame.schema.items())


def clean_results(
    rows: Sequence[RowTuple],
    pairs: pl.DataFrame,
    *,
    backend: str,
    model: str,
    segment_index: int | None,
    batch_id: str | None,
    received_at: datetime,
    tag_prefix: str = DEFAULT_TAG_PREFIX,
    tag_suffix: str = DEFAULT_TAG_SUFFIX,
) -> pl.DataFrame | None:
    """The results frame :func:`normalize_results` gives for a clean segment (its failed
    attempts are then empty), or ``None`` when the segment is not clean."""
    frame = coerce_pairs(pairs)
    columns = frame.columns
    if (
        "custom_id" not in columns
        or "phase" in columns
        or "iter" in columns
        or any(c in RESULT_SCHEMA and c != "custom_id" for c in columns)
        or any(c in _ADDED for c in columns)
        or len(rows) != frame.height
        or tags_overlap(tag_prefix, tag_suffix)
    ):
        return None
    ordered = _in_pair_order(rows, frame.get_column("custom_id").to_list())
    if ordered is None:
        return None
    winners = _winners(ordered, frame, tag_prefix, tag_suffix)
    if winners is None:
        return None
    better_id, winner_pos = winners
    n = len(ordered)
    values: dict[str, Sequence[Any]] = {
        name: [row[i] for row in ordered] for i, name in enumerate(ROW_FIELDS) if i
    }
    for i in _TEXT:
        if i:
            values[ROW_FIELDS[i]] = [None if v == "" else v for v in values[ROW_FIELDS[i]]]
    values["model"] = [m if m is not None else model for m in values["model"]]
    values["better_sample"] = [
        find_winner(row[_CONTENT] or None, tag_prefix, tag_suffix) for row in ordered
    ]
    values |= {
        "better_id": better_id,
        "backend": [backend] * n,
        "segment_index": [segment_index] * n,
        "batch_id": [batch_id] * n,
        "winner_pos": winner_pos,
        "received_at": [received_at] * n,
        "phase": [None] * n,
        "iter": [None] * n,
    }
    layout = _layout(tuple(frame.schema.items()))
    built = _frame_of(values, [(name, dtype) for name, dtype in layout if name not in columns], n)
    return pl.DataFrame(
        [
            frame.get_column(name) if name in columns else built.get_column(name)
            for name, _ in layout
        ]
    )


def _frame_of(
    values: dict[str, Sequence[Any]], schema: list[tuple[str, Any]], n: int
) -> pl.DataFrame:
    """The new columns as one frame: row dicts decoded in one Polars call (a Series per
    column cost 25 Python-side constructions, most of a 2-pair segment's settle)."""
    names = [name for name, _ in schema]
    records = [{name: values[name][i] for name in names} for i in range(n)]
    try:
        return pl.from_dicts(records, schema=dict(schema))
    except (OverflowError, TypeError, ValueError, pl.exceptions.PolarsError):
        # Whatever the row decoder refuses gets the column constructors' own verdict.
        return pl.DataFrame([pl.Series(name, values[name], dtype=dtype) for name, dtype in schema])


def _in_pair_order(rows: Sequence[RowTuple], ids: list[Any]) -> list[RowTuple] | None:
    """The rows in the pairs' order, if each pair has exactly one."""
    position = {key: i for i, key in enumerate(ids)}
    if len(position) != len(ids) or None in position:
        return None
    ordered: list[RowTuple | None] = [None] * len(ids)
    for row in rows:
        at = position.get(row[0])
        if at is None or ordered[at] is not None:
            return None
        ordered[at] = row
    return ordered  # type: ignore[return-value]  # every slot was filled: len(rows) == len(ids)


def _winners(
    ordered: list[RowTuple], frame: pl.DataFrame, prefix: str, suffix: str
) -> tuple[list[str], list[int]] | None:
    """(better_id, winner_pos) per pair, or ``None`` if any answer names no valid winner."""
    id1, id2 = frame.get_column("ID1").to_list(), frame.get_column("ID2").to_list()
    a_ids, b_ids = frame.get_column("A_id").to_list(), frame.get_column("B_id").to_list()
    better: list[str] = []
    positions: list[int] = []
    for i, row in enumerate(ordered):
        sample = find_winner(row[_CONTENT] or None, prefix, suffix)
        winner = id1[i] if sample == "SAMPLE_1" else id2[i] if sample == "SAMPLE_2" else None
        if winner is None:
            return None
        if winner == a_ids[i]:
            positions.append(1)
        elif winner == b_ids[i]:
            positions.append(2)
        else:
            return None
        better.append(winner)
    return better, positions
