"""One Parquet file from row groups written one at a time, in memory bounded by one.

Polars' streaming ``sink_parquet`` keeps about a byte per cell written until the file
is closed (31 MB a million rows of the 31 result columns; ``benchmarks/bench_sink.py``),
so a big results file grew the parse's peak with its size. An eager
``DataFrame.write_parquet`` of one chunk does not, but makes a whole file. This module
joins such files without decoding a page: each part's column chunks are copied as they
are, and one footer lists every part's row groups with their file offsets moved by where
the part's bytes landed — the "binary copy" merge Parquet's own tools do.

The footer is Thrift's compact protocol; :class:`_Reader` and :func:`_encode` read and
write it generically (every field kept with its type), so only the offsets named below
are touched. The page index (per-page offsets, optional) is dropped: its page locations
would point into the part, not into the joined file.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any, BinaryIO, Final

import polars as pl

__all__ = ["ParquetAppender"]

_MAGIC: Final = b"PAR1"
# Compact protocol type codes.
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY = range(9)
_LIST, _SET, _MAP, _STRUCT = 9, 10, 11, 12
_INTS: Final = (_I16, _I32, _I64)

# Field ids (parquet.thrift) of the absolute file offsets a moved part must shift.
_FILE_NUM_ROWS, _FILE_ROW_GROUPS = 3, 4
_RG_COLUMNS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 5, 7
_CC_FILE_OFFSET, _CC_META = 2, 3
_CC_PAGE_INDEX: Final = frozenset({4, 5, 6, 7})  # offset/column index offsets and lengths
_CMD_OFFSETS: Final = frozenset({9, 10, 11, 14})  # data, index, dictionary page; bloom filter

# A struct is a list of [field id, type, value]; a list or set (elem type, [values]).
Struct = list[list[Any]]


class _Reader:
    """A cursor over compact-protocol bytes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def byte(self) -> int:
        value = self.data[self.at]
        self.at += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, kind: int) -> Any:
        if kind in _INTS:
            return self.zigzag()
        if kind == _BINARY:
            size = self.varint()
            self.at += size
            return self.data[self.at - size : self.at]
        if kind == _STRUCT:
            return self.struct()
        if kind in (_LIST, _SET):
            head = self.byte()
            size, elem = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            return (elem, [self.value(elem) for _ in range(size)])
        if kind in (_TRUE, _FALSE, _BYTE):  # a bool inside a list is one byte
            return self.byte()
        if kind == _DOUBLE:
            self.at += 8
            return self.data[self.at - 8 : self.at]
        raise ValueError(f"unsupported Thrift compact type {kind} in a Parquet footer")

    def struct(self) -> Struct:
        fields: Struct = []
        last = 0
        while (head := self.byte()) != _STOP:
            kind, delta = head & 0x0F, head >> 4
            field = last + delta if delta else self.zigzag()
            if kind in (_TRUE, _FALSE):
                fields.append([field, kind, None])  # a bool field's value is its type
            else:
                fields.append([field, kind, self.value(kind)])
            last = field
        return fields


def _varint(n: int, out: bytearray) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zigzag(n: int, out: bytearray) -> None:
    _varint((n << 1) ^ (n >> 63), out)


def _encode_value(kind: int, value: Any, out: bytearray) -> None:
    if kind in _INTS:
        _zigzag(value, out)
    elif kind == _BINARY:
        _varint(len(value), out)
        out += value
    elif kind == _STRUCT:
        if isinstance(value, bytes):  # a struct kept encoded (see ParquetAppender)
            out += value
        else:
            _encode(value, out)
    elif kind in (_LIST, _SET):
        elem, items = value
        if len(items) < 15:
            out.append(len(items) << 4 | elem)
        else:
            out.append(0xF0 | elem)
            _varint(len(items), out)
        for item in items:
            _encode_value(elem, item, out)
    elif kind in (_TRUE, _FALSE, _BYTE):
        out.append(value)
    else:  # _DOUBLE, kept as its 8 bytes
        out += value


def _encode(fields: Struct, out: bytearray) -> None:
    last = 0
    for field, kind, value in fields:
        delta = field - last
        if 0 < delta <= 15:
            out.append(delta << 4 | kind)
        else:
            out.append(kind)
            _zigzag(field, out)
        if kind not in (_TRUE, _FALSE):
            _encode_value(kind, value, out)
        last = field
    out.append(_STOP)


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
    if len(data) < 12 or data[:4] != _MAGIC or data[-4:] != _MAGIC:
        raise ValueError("not a Parquet file (no PAR1 magic)")
    (size,) = struct.unpack("<I", data[-8:-4])
    start = len(data) - 8 - size
    return start, _Reader(data[start:-8]).struct()


class ParquetAppender:
    """Writes frames of one schema as the row groups of one Parquet file at ``path``.

    ``append`` writes a frame eagerly (a whole small file in memory), copies its row
    groups to the end of ``path`` and keeps only their metadata; ``close`` writes the
    footer. A frame of no rows adds nothing; with none appended the file is an empty
    frame of ``schema``. The caller makes the file durable and renames it into place.
    """

    def __init__(self, path: Path, schema: pl.Schema, **write_options: Any) -> None:
        self._handle: BinaryIO = path.open("wb")
        self._handle.write(_MAGIC)
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
        shift = self._handle.tell() - len(_MAGIC)
        self._handle.write(memoryview(data)[len(_MAGIC) : start])
        groups = _get(footer, _FILE_ROW_GROUPS)
        for group in groups[2][1] if groups else []:
            encoded = bytearray()
            _encode(_moved_row_group(group, shift, len(self._groups)), encoded)
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
            footer.append([_FILE_ROW_GROUPS, _LIST, (_STRUCT, self._groups)])
            footer.sort(key=lambda entry: int(entry[0]))
            out = bytearray()
            _encode(footer, out)
            self._handle.write(out)
            self._handle.write(struct.pack("<I", len(out)))
            self._handle.write(_MAGIC)
        finally:
            self._handle.close()

    def abort(self) -> None:
        """Close the file without a footer (the caller removes it)."""
        self._handle.close()
