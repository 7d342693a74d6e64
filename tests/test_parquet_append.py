"""Joining eagerly written row groups into one Parquet file (``parquet_append``).

Two readers check every joined file: Polars, and pyarrow's C++ Parquet reader, which
shares no code with the footer writer or with Polars.
"""

from __future__ import annotations

import struct
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pairbatch.parquet_append import ParquetAppender, _footer
from pairbatch.thrift_compact import encode as _encode

SCHEMA = {
    "custom_id": pl.Utf8,
    "content": pl.Utf8,
    "winner_pos": pl.Int64,
    "cost": pl.Float64,
    "received_at": pl.Datetime("us", "UTC"),
    "empty": pl.Utf8,
    "ok": pl.Boolean,
}


def _frame(rows: int, tag: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "custom_id": [f"pb-{tag}-{i}" for i in range(rows)],
            "content": [None if i % 4 == 0 else "answer " * (i % 9) for i in range(rows)],
            "winner_pos": pl.Series([1 + (i + tag) % 2 for i in range(rows)], dtype=pl.Int64),
            "cost": [i / 7 if i % 3 else None for i in range(rows)],
            "received_at": [datetime(2026, 12, 4, tzinfo=UTC)] * rows,
            "empty": pl.Series([None] * rows, dtype=pl.Utf8),
            "ok": [i % 2 == 0 for i in range(rows)],
        },
        schema=SCHEMA,
    )


def _join(path: Path, frames: list[pl.DataFrame]) -> ParquetAppender:
    appender = ParquetAppender(path, frames[0].schema)
    for frame in frames:
        appender.append(frame)
    appender.close()
    return appender


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=20))
def test_joined_file_reads_back_as_the_frames_in_order(sizes: list[int]) -> None:
    frames = [_frame(rows, tag) for tag, rows in enumerate(sizes)]
    with tempfile.TemporaryDirectory() as folder:
        _check_joined(Path(folder) / "joined.parquet", frames, sizes)


def _check_joined(path: Path, frames: list[pl.DataFrame], sizes: list[int]) -> None:
    appender = _join(path, frames)
    want = pl.concat(frames)
    assert appender.rows == want.height
    assert pl.read_parquet(path).equals(want)
    assert pl.scan_parquet(path).select(pl.len()).collect().item() == want.height
    # pyarrow: the footer's row groups are the non-empty frames, each readable alone.
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == want.height
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [
        size for size in sizes if size
    ]
    assert pl.from_arrow(pq.read_table(path)).equals(want)


def test_filters_and_slices_use_the_moved_offsets(tmp_path: Path) -> None:
    frames = [_frame(rows, tag) for tag, rows in enumerate([40, 1300, 7, 900])]
    path = tmp_path / "joined.parquet"
    _join(path, frames)
    want = pl.concat(frames)
    got = pl.scan_parquet(path).filter(pl.col("custom_id") == "pb-3-5").collect()
    assert got.equals(want.filter(pl.col("custom_id") == "pb-3-5"))
    assert pl.scan_parquet(path).slice(1330, 20).collect().equals(want.slice(1330, 20))
    table = pq.ParquetFile(path)
    third = pl.from_arrow(table.read_row_group(2))
    assert third.equals(frames[2])
    stats = table.metadata.row_group(3).column(0).statistics
    assert (stats.min, stats.max) == ("pb-3-0", "pb-3-99")


def test_nothing_appended_gives_an_empty_frame_of_the_schema(tmp_path: Path) -> None:
    schema = _frame(1, 0).schema
    path = tmp_path / "empty.parquet"
    appender = ParquetAppender(path, schema)
    appender.append(_frame(0, 0))
    appender.close()
    back = pl.read_parquet(path)
    assert back.height == 0 and back.schema == schema
    assert pq.ParquetFile(path).metadata.num_rows == 0


def test_a_frame_of_another_schema_is_refused(tmp_path: Path) -> None:
    appender = ParquetAppender(tmp_path / "x.parquet", _frame(1, 0).schema)
    appender.append(_frame(3, 0))
    with pytest.raises(ValueError, match="schema"):
        appender.append(_frame(3, 1).drop("ok"))
    appender.close()
    assert pl.read_parquet(tmp_path / "x.parquet").equals(_frame(3, 0))


def test_the_footer_codec_gives_back_polars_bytes(tmp_path: Path) -> None:
    # Decoding then encoding a footer Polars wrote reproduces it byte for byte: the
    # codec keeps every field, type and value it does not move.
    path = tmp_path / "one.parquet"
    pl.concat([_frame(500, 0)] * 40).write_parquet(path, row_group_size=1000)
    data = path.read_bytes()
    start, footer = _footer(data)
    out = bytearray()
    _encode(footer, out)
    assert bytes(out) == data[start:-8]
    assert struct.unpack("<I", data[-8:-4])[0] == len(out)


def test_not_parquet_is_refused() -> None:
    with pytest.raises(ValueError, match="PAR1"):
        _footer(b"not a parquet file at all")
