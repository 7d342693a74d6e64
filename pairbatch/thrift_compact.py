"""Thrift's compact protocol, generically: what Parquet footers and page headers are
written in (https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md;
the structs themselves are apache/parquet-format's ``src/main/thrift/parquet.thrift``).

:class:`Reader` decodes a struct keeping every field with its type, and :func:`encode`
writes one back byte for byte, so callers change only the fields they name
(:mod:`pairbatch.parquet_append`) or build small structs by hand
(:mod:`pairbatch.parquet_small`).
"""

from __future__ import annotations

from typing import Any, Final

# Compact protocol type codes.
STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY = range(9)
LIST, SET, MAP, STRUCT = 9, 10, 11, 12
INTS: Final = (I16, I32, I64)

# A struct is a list of [field id, type, value]; a list or set (elem type, [values]).
Struct = list[list[Any]]


class Reader:
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
        if kind in INTS:
            return self.zigzag()
        if kind == BINARY:
            size = self.varint()
            self.at += size
            return self.data[self.at - size : self.at]
        if kind == STRUCT:
            return self.struct()
        if kind in (LIST, SET):
            head = self.byte()
            size, elem = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            return (elem, [self.value(elem) for _ in range(size)])
        if kind in (TRUE, FALSE, BYTE):  # a bool inside a list is one byte
            return self.byte()
        if kind == DOUBLE:
            self.at += 8
            return self.data[self.at - 8 : self.at]
        raise ValueError(f"unsupported Thrift compact type {kind} in a Parquet footer")

    def struct(self) -> Struct:
        fields: Struct = []
        last = 0
        while (head := self.byte()) != STOP:
            kind, delta = head & 0x0F, head >> 4
            field = last + delta if delta else self.zigzag()
            if kind in (TRUE, FALSE):
                fields.append([field, kind, None])  # a bool field's value is its type
            else:
                fields.append([field, kind, self.value(kind)])
            last = field
        return fields


def varint(n: int, out: bytearray) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def zigzag(n: int, out: bytearray) -> None:
    varint((n << 1) ^ (n >> 63), out)


def _encode_value(kind: int, value: Any, out: bytearray) -> None:
    if kind in INTS:
        zigzag(value, out)
    elif kind == BINARY:
        varint(len(value), out)
        out += value
    elif kind == STRUCT:
        if isinstance(value, bytes):  # a struct kept encoded (see ParquetAppender)
            out += value
        else:
            encode(value, out)
    elif kind in (LIST, SET):
        elem, items = value
        if len(items) < 15:
            out.append(len(items) << 4 | elem)
        else:
            out.append(0xF0 | elem)
            varint(len(items), out)
        for item in items:
            _encode_value(elem, item, out)
    elif kind in (TRUE, FALSE, BYTE):
        out.append(value)
    else:  # DOUBLE, kept as its 8 bytes
        out += value


def encode(fields: Struct, out: bytearray) -> None:
    last = 0
    for field, kind, value in fields:
        delta = field - last
        if 0 < delta <= 15:
            out.append(delta << 4 | kind)
        else:
            out.append(kind)
            zigzag(field, out)
        if kind not in (TRUE, FALSE):
            _encode_value(kind, value, out)
        last = field
    out.append(STOP)
