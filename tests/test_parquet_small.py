"""The small-frame Parquet writer (``parquet_small``), read back by two readers that share
no code with it: Polars and pyarrow's C++ Parquet reader."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pairbatch.pairs import write_parquet
from pairbatch.parquet_small import (
    SMALL_ROWS,
    _chunk,
    _column_parts,
    _page_header,
    read_small,
    small_parquet,
)
from pairbatch.thrift_compact import encode as _encode

UTC_US = pl.Datetime("us", "UTC")
KINDS = {"s": pl.String, "i": pl.Int64, "t": UTC_US}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _values(kind: str) -> st.SearchStrategy[object]:
    if kind == "s":
        return st.none() | st.text(max_size=40)  # any Unicode, empty strings included
    if kind == "i":
        return st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    return st.none() | st.integers(min_value=-(2**52), max_value=2**52).map(
        lambda us: _EPOCH + timedelta(microseconds=us)
    )


@st.composite
def frames(draw: st.DrawFn) -> pl.DataFrame:
    rows = draw(st.integers(min_value=0, max_value=SMALL_ROWS))
    kinds = draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=8))
    names = draw(st.lists(st.text(min_size=1, max_size=12), min_size=len(kinds),
                          max_size=len(kinds), unique=True))  # fmt: skip
    columns = [
        pl.Series(name, draw(st.lists(_values(kind), min_size=rows, max_size=rows)), KINDS[kind])
        for name, kind in zip(names, kinds, strict=True)
    ]
    return pl.DataFrame(columns)


def _check(frame: pl.DataFrame) -> None:
    data = small_parquet(frame)
    assert data is not None
    back = pl.read_parquet(io.BytesIO(data))
    assert back.schema == frame.schema
    assert back.equals(frame)
    table = pq.read_table(io.BytesIO(data))
    assert table.column_names == frame.columns
    assert pl.from_arrow(table).equals(frame)  # type: ignore[union-attr]
    mine = read_small(data)  # and this module's own reader
    assert mine is not None
    assert mine.schema == frame.schema
    assert mine.equals(frame)
    # A file another writer made is not this reader's to read.
    handle = io.BytesIO()
    frame.write_parquet(handle, compression="uncompressed", statistics=False)
    assert read_small(handle.getvalue()) is None


@settings(max_examples=150, deadline=None)
@given(frames())
def test_small_frames_read_back_exactly_by_polars_and_pyarrow(frame: pl.DataFrame) -> None:
    _check(frame)


@pytest.mark.parametrize("name", ["*", "^s.*$", "^x$"])
def test_timestamp_column_named_like_a_wildcard_or_regex(name: str) -> None:
    # (Found by the property test above: pl.col("*") cast every column to a timestamp.)
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    frame = pl.DataFrame(
        [
            pl.Series("s", ["a", None], pl.Utf8),
            # (Named after building: Polars' own constructor fails for "^x$".)
            pl.Series("t", [at, None], pl.Datetime("us", "UTC")).alias(name),
            pl.Series("n", [None, 7], pl.Int64),
        ]
    )
    _check(frame)
    _check(frame.head(0))


def test_results_like_frame_with_runs_of_nulls() -> None:
    rows = 20
    frame = pl.DataFrame(
        {
            "custom_id": [f"pb-{i}" for i in range(rows)],
            "content": [None if i < 7 or i % 5 == 0 else "é" * i for i in range(rows)],
            "phase": pl.Series([None] * rows, dtype=pl.String),
            "tokens": [None if i > 12 else i * 1000 for i in range(rows)],
            "received_at": [datetime(2026, 12, 4, 21, 0, i, 123456, tzinfo=UTC) for i in range(rows)],
        },
        schema={"custom_id": pl.String, "content": pl.String, "phase": pl.String,
                "tokens": pl.Int64, "received_at": UTC_US},
    )  # fmt: skip
    _check(frame)
    meta = pq.ParquetFile(io.BytesIO(small_parquet(frame) or b"")).metadata
    assert (meta.num_rows, meta.num_row_groups, meta.created_by) == (rows, 1, "pairbatch")


@pytest.mark.parametrize(
    "frame",
    [
        pl.DataFrame({"x": [1.5]}),
        pl.DataFrame({"x": [True]}),
        pl.DataFrame({"x": pl.Series([1], dtype=pl.Int32)}),
        pl.DataFrame({"x": [None]}),  # the Null type
        pl.DataFrame({"x": [datetime(2026, 1, 1)]}),  # no time zone
        pl.DataFrame(
            {"x": pl.Series([datetime(2026, 1, 1, tzinfo=UTC)], dtype=pl.Datetime("ns", "UTC"))}
        ),
        pl.DataFrame({"x": ["a"] * (SMALL_ROWS + 1)}),
        pl.DataFrame(),
    ],
)
def test_other_frames_are_left_to_polars(frame: pl.DataFrame) -> None:
    assert small_parquet(frame) is None
    handle = io.BytesIO()
    write_parquet(frame, handle)  # the caller's Polars path still writes it
    assert pl.read_parquet(io.BytesIO(handle.getvalue())).equals(frame)


@pytest.mark.parametrize("name", ["x", "é" * 20])
@pytest.mark.parametrize("values", [0, 1, 64, 2**31])
def test_hand_written_footer_parts_match_the_generic_encoder(name: str, values: int) -> None:
    header = bytearray()
    page = [[1, 5, values], [2, 5, 0], [3, 5, 3], [4, 5, 3]]  # PLAIN; RLE levels
    _encode([[1, 5, 0], [2, 5, values * 9], [3, 5, values * 9], [5, 12, page]], header)
    assert _page_header(values, values * 9) == bytes(header)
    for kind, physical in (("string", 6), ("int", 2), ("time", 2)):
        _, head = _column_parts(name, kind)
        chunk = bytearray()
        meta = [
            [1, 5, physical],
            [2, 9, (5, [0, 3])],
            [3, 9, (8, [name.encode()])],
            [4, 5, 0],
            [5, 6, values],
            [6, 6, values + 7],
            [7, 6, values + 7],
            [9, 6, values * 3],
        ]
        _encode([[2, 6, values * 3], [3, 12, meta]], chunk)
        assert _chunk(head, values, values + 7, values * 3) == bytes(chunk)


@settings(max_examples=60, deadline=None)
@given(frames(), st.data())
def test_damaged_small_files_are_refused_or_read_never_raise(
    frame: pl.DataFrame, data: st.DataObject
) -> None:
    """The reader never raises on damage: it gives ``None`` (Polars then reads the file
    and reports the damage) or a frame, which the caller's SHA-256 check then refuses."""
    written = small_parquet(frame)
    assert written is not None
    at = data.draw(st.integers(min_value=0, max_value=len(written) - 1))
    flipped = bytearray(written)
    flipped[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    for damaged in (bytes(flipped), written[:at], written[:at] + written[at + 1 :]):
        result = read_small(damaged)
        assert result is None or isinstance(result, pl.DataFrame)
