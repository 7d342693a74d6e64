"""One Parquet file from row groups written one at a time, in memory bounded by one.

Polars' streaming ``sink_parquet`` keeps about a byte per cell written until the file
is closed (31 MB a million rows of the 31 result columns; ``benchmarks/bench_sink.py``),
so a big results file grew the parse's peak with its size. An eager
``DataFrame.write_parquet`` of one chunk does not, but makes a whole file. This module
joins such files without decoding a page: each part's column chunks are copied as they
are, and one footer lists every part's row groups with their file offsets moved by where
the part's bytes landed — the "binary copy" merge Parquet's own tools do.

The footer is Thrift's compact protocol; :mod:`pairbatch.thrift_compact` reads and
writes it generically (every field kept with its type), so only the offsets named below
are touched. The page index (per-page offsets, optional) is dropped: its page locations
would point into the part, not into the joined file.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any, BinaryIO, Final

import polars as pl

from pairbatch.thrift_compact import LIST, STRUCT, Reader, Struct, encode

__all__ = ["ParquetAppender"]

MAGIC: Final = b"PAR1"
# Field ids (parquet.thrift) of the absolute file offsets a moved part must shift.
_FILE_NUM_ROWS, _FILE_ROW_GROUPS = 3, 4
_RG_COLUMNS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 5, 7
_CC_FILE_OFFSET, _CC_META = 2, 3
_CC_PAGE_INDEX: Final = frozenset({4, 5, 6, 7})  # offset/column index offsets and lengths
_CMD_OFFSETS: Final = frozenset({9, 10, 11, 14})  # data, index, dictionary page; bloom filter


def _get(fields: Struct, field: int) -> list[Any] | None:
    return next((f for f in fields if f[0] == field), None)


def _moved_row_group(group: Struct, shift: int, ordinal: int) -> Struct:
    """A part's row group as it sits ``shift`` bytes further into the joined file."""
    for entry in group:
        if entry[0] == _RG_FILE_OFFSET:
            entry[2] += shift
        elif entry[0] == _RG_ORDINAL:
            entry[2] = ordinal
    columns = _get(group, _RG_COLUMNS)
    for chunk in columns[2][1] if columns else []:
        chunk[:] = [entry for entry in chunk if entry[0] not in _CC_PAGE_INDEX]
        for entry in chunk:
            # A zero file_offset is the old writers' "not set", not byte 0: left alone.
            if entry[0] == _CC_FILE_OFFSET and entry[2]:
                entry[2] += shift
            elif entry[0] == _CC_META:
                for meta in entry[2]:
                    if meta[0] in _CMD_OFFSETS:
                        meta[2] += shift
    return group


def _footer(data: bytes) -> tuple[int, Struct]:
    """(where the part's footer starts, the footer) of a whole Parquet file's bytes."""
    if len(data) < 12 or data[:4] != MAGIC or data[-4:] != MAGIC:
        raise ValueError("not a Parquet file (no PAR1 magic)")
    (size,) = struct.unpack("<I", data[-8:-4])
    start = len(data) - 8 - size
    return start, Reader(data[start:-8]).struct()


class ParquetAppender:
    """Writes frames of one schema as the row groups of one Parquet file at ``path``.

    ``append`` writes a frame eagerly (a whole small file in memory), copies its row
    groups to the end of ``path`` and keeps only their metadata; ``close`` writes the
    footer. A frame of no rows adds nothing; with none appended the file is an empty
    frame of ``schema``. The caller makes the file durable and renames it into place.
    """

    def __init__(self, path: Path, schema: pl.Schema, **write_options: Any) -> None:
        self._handle: BinaryIO = path.open("wb")
        self._handle.write(MAGIC)
        self._schema = schema
        self._options = write_options
        self._head: Struct | None = None  # the first part's footer, less its row groups
        # Each row group's metadata is kept encoded: decoded into Python lists it took
        # about 4 KB a column chunk, 60 MB for a 1 GB results file.
        self._groups: list[bytes] = []
        self.rows = 0

    def append(self, frame: pl.DataFrame) -> None:
        """Add ``frame``'s rows as row group(s) at the end of the file; ``ValueError``
        (nothing written) if its schema is not the file's."""
        if not frame.height:
            return
        if frame.schema != self._schema:
            raise ValueError(f"frame schema {frame.schema} differs from the file's")
        buffer = io.BytesIO()
        frame.write_parquet(buffer, **self._options)
        data = buffer.getvalue()
        start, footer = _footer(data)
        # The part's offsets count from its own first byte; its pages land here.
        shift = self._handle.tell() - len(MAGIC)
        self._handle.write(memoryview(data)[len(MAGIC) : start])
        groups = _get(footer, _FILE_ROW_GROUPS)
        for group in groups[2][1] if groups else []:
            encoded = bytearray()
            encode(_moved_row_group(group, shift, len(self._groups)), encoded)
            self._groups.append(bytes(encoded))
        if self._head is None:
            self._head = [entry for entry in footer if entry[0] != _FILE_ROW_GROUPS]
        self.rows += frame.height

    def close(self) -> None:
        """Write the footer (every row group appended) and close the file."""
        try:
            if self._head is None:
                # Nothing appended: an empty file of the schema, written whole.
                self._handle.seek(0)
                self._handle.truncate()
                pl.DataFrame(schema=self._schema).write_parquet(self._handle, **self._options)
                return
            footer = [
                [field, kind, self.rows if field == _FILE_NUM_ROWS else value]
                for field, kind, value in self._head
            ]
            footer.append([_FILE_ROW_GROUPS, LIST, (STRUCT, self._groups)])
            footer.sort(key=lambda entry: int(entry[0]))
            out = bytearray()
            encode(footer, out)
            self._handle.write(out)
            self._handle.write(struct.pack("<I", len(out)))
            self._handle.write(MAGIC)
        finally:
            self._handle.close()

    def abort(self) -> None:
        """Close the file without a footer (the caller removes it)."""
        self._handle.close()
