"""Small frames as Parquet bytes without Polars' writer, which costs about 0.7 ms of CPU
for a 2-row, 34-column results frame (its streaming engine wakes threads for every
file) against about 0.2 ms here: in a run of small segments, a tenth of a finished
job's CPU.

The file is the plainest Parquet there is: one row group, one uncompressed v1 data page
per column, ``PLAIN`` values with ``RLE`` definition levels, every column ``OPTIONAL``,
no statistics; the footer is Thrift compact, through :mod:`pairbatch.parquet_append`'s
encoder. Only the types results are made of are written (strings, 64-bit integers,
microsecond UTC timestamps); for any other frame :func:`small_parquet` gives ``None``
and the caller uses Polars. Tests read every file back with Polars and with pyarrow.
Field ids and enum values are apache/parquet-format's ``src/main/thrift/parquet.thrift``.

:func:`read_small` reads back only what :func:`small_parquet` wrote (a third of Polars'
CPU for a 2-pair segment's file), checking the layout byte by byte as it goes; any other
or damaged file gives ``None``, and the caller reads it with Polars.
"""

from __future__ import annotations

import functools
import struct
from typing import Any, Final

import polars as pl

from pairbatch.parquet_append import MAGIC
from pairbatch.thrift_compact import (
    BINARY,
    I32,
    I64,
    LIST,
    STRUCT,
    TRUE,
    Reader,
    Struct,
    encode,
    varint,
    zigzag,
)

# Up to here this writer is the cheaper (34 result columns: 0.22 vs 0.68 ms of CPU at 2
# rows, 0.32 vs 0.69 at 16, 0.64 vs 0.76 at 64, 1.08 vs 0.97 at 128); past it Polars'
# dictionary encoding also makes the smaller file.
SMALL_ROWS: Final = 32

# parquet.thrift enums
_INT64, _BYTE_ARRAY = 2, 6  # Type
_OPTIONAL = 1  # FieldRepetitionType
_UTF8, _TIMESTAMP_MICROS = 0, 10  # ConvertedType
_PLAIN, _RLE = 0, 3  # Encoding
_DATA_PAGE = 0  # PageType
_CREATED_BY: Final = b"pairbatch"
_UTC_MICROS: Final = pl.Datetime("us", "UTC")
# Each column kind: its dtype, physical type and converted type (the reader's key).
_KINDS: Final = {
    "string": (pl.String(), _BYTE_ARRAY, _UTF8),
    "int": (pl.Int64(), _INT64, None),
    "time": (_UTC_MICROS, _INT64, _TIMESTAMP_MICROS),
}
_KIND_OF_TYPES: Final = {(physical, converted): k for k, (_, physical, converted) in _KINDS.items()}


def small_parquet(frame: pl.DataFrame) -> bytes | None:
    """``frame`` as a whole Parquet file, or ``None`` if it is not small and plain."""
    if frame.height > SMALL_ROWS or not frame.width:
        return None
    kinds: list[str] = []
    for dtype in frame.dtypes:
        kind = _kind(dtype)
        if kind is None:
            return None
        kinds.append(kind)
    out = bytearray(MAGIC)
    root = bytearray(_ROOT_HEAD)
    zigzag(frame.width, root)
    schema: list[bytes] = [bytes(root) + b"\x00"]
    chunks: list[bytes] = []
    for column, kind in zip(frame.get_columns(), kinds, strict=True):
        offset = len(out)
        # A timestamp's physical value is its microseconds since the epoch: exact.
        physical = column.cast(pl.Int64) if kind == "time" else column
        out += _page(physical.to_list(), kind)
        element, meta_head = _column_parts(column.name, kind)
        schema.append(element)
        chunks.append(_chunk(meta_head, frame.height, len(out) - offset, offset))
    total = len(out) - len(MAGIC)
    group: Struct = [
        [1, LIST, (STRUCT, chunks)],
        [2, I64, total],
        [3, I64, frame.height],
        [5, I64, len(MAGIC)],
        [6, I64, total],
    ]
    footer: Struct = [
        [1, I32, 2],
        [2, LIST, (STRUCT, schema)],
        [3, I64, frame.height],
        [4, LIST, (STRUCT, [group])],
        [6, BINARY, _CREATED_BY],
    ]
    tail = bytearray()
    encode(footer, tail)
    out += tail
    out += struct.pack("<I", len(tail))
    out += MAGIC
    return bytes(out)


def _kind(dtype: pl.DataType) -> str | None:
    return next((kind for kind, (known, _, _) in _KINDS.items() if dtype == known), None)


def _element(name: bytes, kind: str) -> Struct:
    """The column's SchemaElement: physical type, OPTIONAL, name, its logical type."""
    _, physical, converted = _KINDS[kind]
    element: Struct = [[1, I32, physical], [3, I32, _OPTIONAL], [4, BINARY, name]]
    if converted is not None:
        element.append([6, I32, converted])
    if kind == "string":
        element.append([10, STRUCT, [[1, STRUCT, []]]])  # LogicalType.STRING
    elif kind == "time":
        unit: Struct = [[2, STRUCT, []]]  # TimeUnit.MICROS
        timestamp: Struct = [[1, TRUE, None], [2, STRUCT, unit]]  # isAdjustedToUTC
        element.append([10, STRUCT, [[8, STRUCT, timestamp]]])  # LogicalType.TIMESTAMP
    return element


@functools.lru_cache(maxsize=1024)
def _column_parts(name: str, kind: str) -> tuple[bytes, bytes]:
    """A column's encoded SchemaElement, and the start of its ColumnMetaData (type,
    encodings, path, codec: the fields that do not depend on the data)."""
    element = bytearray()
    encode(_element(name.encode(), kind), element)
    head = bytearray()
    meta: Struct = [
        [1, I32, _KINDS[kind][1]],
        [2, LIST, (I32, [_PLAIN, _RLE])],
        [3, LIST, (BINARY, [name.encode()])],
        [4, I32, 0],  # UNCOMPRESSED
    ]
    encode(meta, head)
    return bytes(element), bytes(head[:-1])  # the struct left open: no STOP yet


# The footer's per-column parts are written by hand, field by field (a field header is
# ``delta << 4 | type``: 0x15 an i32, 0x16 an i64 one field on, 0x26 two on, 0x1C / 0x2C
# a struct one / two on; 0x00 ends a struct); tests hold each to the generic encoder.
_ROOT_HEAD: Final = b"\x48\x06schema\x15"  # name "schema", then num_children


def _chunk(meta_head: bytes, rows: int, size: int, offset: int) -> bytes:
    """A ColumnChunk: its file offset, then its metadata (values, sizes, page offset)."""
    out = bytearray(b"\x26")
    zigzag(offset, out)
    out += b"\x1c"
    out += meta_head
    for head, value in ((0x16, rows), (0x16, size), (0x16, size), (0x26, offset)):
        out.append(head)
        zigzag(value, out)
    out += b"\x00\x00"
    return bytes(out)


_PAGE_START: Final = b"\x15\x00\x15"  # type DATA_PAGE, then the uncompressed size
_PAGE_END: Final = b"\x15\x00\x15\x06\x15\x06\x00\x00"  # PLAIN, RLE, RLE; two STOPs


def _page_header(values: int, size: int) -> bytes:
    """A v1 DATA_PAGE header: PLAIN values, RLE definition and repetition levels."""
    out = bytearray(_PAGE_START)
    zigzag(size, out)
    out.append(0x15)
    zigzag(size, out)
    out += b"\x2c\x15"
    zigzag(values, out)
    out += _PAGE_END
    return bytes(out)


def _page(values: list[Any], kind: str) -> bytes:
    """One data page: its header, the definition levels, then the non-null values."""
    present = [v for v in values if v is not None]
    if kind == "string":
        body = b"".join(struct.pack("<I", len(b)) + b for b in (v.encode() for v in present))
    else:
        body = struct.pack(f"<{len(present)}q", *present)
    levels = _levels([v is not None for v in values])
    data = struct.pack("<I", len(levels)) + levels + body
    return _page_header(len(values), len(data)) + data


def _levels(defined: list[bool]) -> bytes:
    """Definition levels (bit width 1) as RLE runs: a varint ``length << 1``, then the
    level in one byte."""
    out = bytearray()
    start = 0
    while start < len(defined):
        end = start
        while end < len(defined) and defined[end] == defined[start]:
            end += 1
        varint((end - start) << 1, out)
        out.append(1 if defined[start] else 0)
        start = end
    return bytes(out)


# What a footer small_parquet wrote ends with: created_by (field 6, two on), then STOP.
_FOOTER_END: Final = b"\x28\x09" + _CREATED_BY + b"\x00"


def read_small(data: bytes) -> pl.DataFrame | None:
    """The frame of a file :func:`small_parquet` wrote, or ``None`` for any other file,
    or a damaged one: the caller then reads it with Polars, which gives its error. Its
    pages follow each other from byte 4 to the footer, in the schema's order, laid out
    exactly as written; anything else is refused, never guessed at."""
    try:
        return _read(data)
    except (IndexError, KeyError, TypeError, ValueError, struct.error, UnicodeDecodeError):
        return None


def _read(data: bytes) -> pl.DataFrame | None:
    if len(data) < 12 or data[:4] != MAGIC or data[-4:] != MAGIC:
        return None
    (size,) = struct.unpack_from("<I", data, len(data) - 8)
    start = len(data) - 8 - size
    if start < len(MAGIC):
        return None
    footer = data[start:-8]
    if not footer.endswith(_FOOTER_END) or footer[:3] != b"\x15\x04\x19":
        return None
    reader = Reader(footer)
    reader.at = 3  # past the version (2) and the schema field's header: its list
    _, elements = reader.value(LIST)
    if reader.byte() != 0x16:  # num_rows, an i64
        return None
    rows = reader.zigzag()
    if not 0 <= rows <= SMALL_ROWS:  # a damaged count must not size anything
        return None
    columns: dict[str, list[Any]] = {}
    dtypes: dict[str, pl.DataType] = {}
    times: list[str] = []
    page = Reader(data)
    page.at = len(MAGIC)
    for element in elements[1:]:
        fields = {field: value for field, _, value in element}
        name = fields[4].decode()
        kind = _KIND_OF_TYPES[(fields[1], fields.get(6))]
        columns[name] = _read_page(page, rows, kind)
        # Timestamps are read as their microseconds and cast once, below.
        dtypes[name] = pl.String() if kind == "string" else pl.Int64()
        if kind == "time":
            times.append(name)
    if page.at != start or len(columns) != len(elements) - 1:
        return None
    frame = pl.from_dict(columns, schema=dtypes)
    # Cast by Series, not ``pl.col(name)``: a column may be called ``*`` or ``^a.*$``,
    # which ``pl.col`` reads as every column or as a regex.
    if not times:
        return frame
    return frame.with_columns(frame.get_column(name).cast(_UTC_MICROS) for name in times)


def _read_page(page: Reader, rows: int, kind: str) -> list[Any]:
    """The values of the page at ``page``'s cursor (``None`` where the level says
    null), which moves past it."""
    data = page.data
    if data[page.at : page.at + len(_PAGE_START)] != _PAGE_START:
        raise ValueError("not a page small_parquet writes")
    page.at += len(_PAGE_START)
    size = page.zigzag()
    if page.byte() != 0x15 or page.zigzag() != size or page.byte() != 0x2C:
        raise ValueError("not a page small_parquet writes")
    if page.byte() != 0x15 or page.zigzag() != rows:
        raise ValueError("the page does not hold the file's rows")
    if data[page.at : page.at + len(_PAGE_END)] != _PAGE_END:
        raise ValueError("not a page small_parquet writes")
    at = page.at + len(_PAGE_END)
    end = at + size
    (length,) = struct.unpack_from("<I", data, at)
    defined = _read_levels(data[at + 4 : at + 4 + length], rows)
    at += 4 + length
    values: list[Any]
    if kind == "string":
        values = []
        for is_set in defined:
            if is_set:
                (n,) = struct.unpack_from("<I", data, at)
                values.append(data[at + 4 : at + 4 + n].decode())
                at += 4 + n
            else:
                values.append(None)
    else:
        count = sum(defined)
        numbers = iter(struct.unpack_from(f"<{count}q", data, at))
        at += 8 * count
        values = [next(numbers) if is_set else None for is_set in defined]
    if at != end:
        raise ValueError("the page's size does not add up")
    page.at = end
    return values


def _read_levels(encoded: bytes, rows: int) -> list[bool]:
    """RLE runs of bit width 1, as :func:`_levels` writes them."""
    reader = Reader(encoded)
    out: list[bool] = []
    while reader.at < len(encoded):
        head = reader.varint()
        if head & 1:
            raise ValueError("bit-packed levels: not written here")
        level = reader.byte()
        if level > 1 or len(out) + (head >> 1) > rows:
            raise ValueError("a definition level over 1, or more levels than rows")
        out += [level == 1] * (head >> 1)
    if len(out) != rows:
        raise ValueError("the definition levels do not cover the rows")
    return out
