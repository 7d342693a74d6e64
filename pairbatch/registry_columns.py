"""Whole registry columns decoded at once, to exactly what the careful row reader gives.

Each function takes one column (a polars Series of the file's text, or of already typed
values from the journal) and returns the Python values :class:`~pairbatch.registry_codec.
_RowReader` would return for each row, or raises :class:`Doubt`. A function accepts only
values whose careful reading it can vouch for; everything else (a damaged value, but also
an unusual spelling the careful reader would accept, such as ``" 5"`` or ``"yes"``) is a
doubt, and the caller reads the whole file the careful way, which gives its exact value
or its exact error. So the two readers never disagree: the fast one just declines.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

import msgspec
import polars as pl

from pairbatch.errors import RegistryError
from pairbatch.models import FileCheck, JobStatus, Provider, build_unchecked
from pairbatch.registry_codec import _Resolver, _RowReader

_T = TypeVar("_T")


class Doubt(Exception):
    """A value the columnar reader cannot vouch for: read the file the careful way."""


def _cell(column: str, value: object) -> _RowReader:
    return _RowReader("", 0, {column: value})


def na_mask(values: pl.Series) -> pl.Series:
    """Where the careful reader's ``text`` gives ``None`` (empty, ``NA``, ``null`` ...).

    It treats text longer than four characters without whitespace at either end as text
    without looking further; the rest (few distinct values: mostly ``NA``) is judged by
    the careful rule itself, value by distinct value. "Whitespace" here is anything but
    printable ASCII, a superset of ``str.isspace``, so no doubtful value skips the rule.
    """
    short = values.str.len_chars() <= 4
    edged = values.str.contains(r"^[^!-~]|[^!-~]$")
    candidates = values.filter(short | edged).unique().drop_nulls().to_list()
    spelled = [v for v in candidates if _cell("c", v).text("c") is None]
    return values.is_null() | values.is_in(spelled)


def texts(values: pl.Series | None, count: int) -> list[str | None]:
    if values is None:
        return [None] * count
    if values.null_count() == count:
        return [None] * count
    na = na_mask(values)
    if not na.any():
        return values.to_list()
    return pl.select(pl.when(na).then(None).otherwise(values)).to_series().to_list()


def required(values: pl.Series | None, count: int) -> list[str]:
    out = texts(values, count)
    if values is None or None in out:
        raise Doubt("a required value is missing")
    return out  # type: ignore[return-value]


def by_value(values: pl.Series | None, count: int, decode: Callable[[Any], _T]) -> list[_T]:
    """``decode`` applied through a table of the column's distinct values (an enum, a
    flag: a handful of values in 100,000 rows). Any error it raises is a doubt."""
    raw = [None] * count if values is None else values.to_list()
    table: dict[Any, _T] = {}
    try:
        for value in set(raw):
            table[value] = decode(value)
    except (RegistryError, ValueError) as exc:
        raise Doubt(str(exc)) from None
    return list(map(table.__getitem__, raw))


def providers(values: pl.Series | None, count: int) -> list[Provider]:
    return by_value(values, count, lambda v: Provider.parse(_cell("p", v).required("p")))


def flags(values: pl.Series | None, count: int) -> list[bool]:
    if values is not None and values.dtype == pl.Boolean:
        return values.fill_null(False).to_list()
    return by_value(values, count, lambda v: _cell("done", v).boolean("done"))


def statuses(values: pl.Series | None, done: list[bool]) -> list[JobStatus]:
    """A missing status comes from ``done`` (a reference registry has no status column)."""

    def status(value: str | None) -> JobStatus | None:
        return None if value is None else JobStatus(value)

    given = by_value(values, len(done), status) if values is not None else [None] * len(done)
    if None not in given:
        return given  # type: ignore[return-value]
    return [
        (JobStatus.SUCCEEDED if d else JobStatus.PENDING) if s is None else s
        for s, d in zip(given, done, strict=True)
    ]


# Integers that float() reads exactly and int() gives back as written.
_PLAIN_INT = r"^-?[0-9]{1,15}$"


def integers(values: pl.Series | None, count: int, default: int | None) -> list[int | None]:
    """The careful ``integer``: a missing value is ``default`` (``None``: a doubt)."""
    if values is None:
        if default is None:
            raise Doubt("a required integer column is missing")
        return [default] * count
    if values.dtype == pl.String:
        na = na_mask(values)
        written = values.filter(~na)
        if not written.str.contains(_PLAIN_INT).all():
            raise Doubt("an integer the fast reader does not vouch for")
        numbers = pl.select(pl.when(na).then(None).otherwise(values).cast(pl.Int64)).to_series()
    else:
        numbers = values
    if numbers.null_count():
        if default is None:
            raise Doubt("a required integer is missing")
        numbers = numbers.fill_null(default)
    return numbers.to_list()


def timestamps(values: pl.Series | None, count: int) -> list[datetime | None]:
    """``datetime.fromisoformat`` itself, as the careful reader calls it, value by value
    (polars would give other ``tzinfo`` objects); only the NA test is columnar."""
    written = texts(values, count)
    if values is None or written.count(None) == count:
        return written  # type: ignore[return-value]
    parse = datetime.fromisoformat
    try:
        return [None if t is None else parse(t.replace("Z", "+00:00")) for t in written]
    except ValueError as exc:
        raise Doubt(str(exc)) from None


# A relative path the careful resolver joins as a plain string (``_PLAIN_PATH`` and no
# ``.`` segment), spelled without newlines so that ``$`` means the same to both engines.
_JOINABLE = r"^[^~/\n][^/\n]*(?:/[^/\n]+)*$"
_DOT = r"(?:^|/)\.(?:/|$)"


def paths(
    values: pl.Series | None, count: int, resolve: _Resolver, *, optional: bool = False
) -> list[str | None]:
    if values is None:
        return texts(values, count) if optional else required(values, count)  # type: ignore[return-value]
    na = na_mask(values)
    if not optional and na.any():
        raise Doubt("a required path is missing")
    column = pl.select(pl.when(na).then(None).otherwise(values)).to_series()
    joinable = column.str.contains(_JOINABLE) & ~column.str.contains(_DOT)
    joined = pl.select(
        pl.when(joinable).then(pl.lit(resolve.prefix) + column).otherwise(None)
    ).to_series()
    out: list[str | None] = joined.to_list()
    if joined.null_count() != column.null_count():
        # Absolute, ``~`` or dotted paths: the careful resolver's own answer, one by one.
        for index in (~joinable.fill_null(True)).arg_true().to_list():
            out[index] = resolve(column[index])
    return out


class FileRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A file record exactly as :class:`FileCheck` takes it (``FileCheck(**item)``)."""

    name: str
    size: int
    rows: int | None = None
    sha256: str | None = None


_FILE_LISTS = msgspec.json.Decoder(list[FileRecord])


def file_lists(values: pl.Series | None, count: int) -> list[list[FileRecord] | None]:
    """The CSV's ``files`` cells (JSON text), one JSON document a line for one decode."""
    written = texts(values, count)
    present = [t for t in written if t is not None]
    if not present:
        return [None] * count
    if any("\n" in t or "\\ud" in t or "\\uD" in t for t in present):
        # A document across lines would shift the line boundaries; an escaped surrogate
        # is a case where the two JSON decoders might disagree.
        raise Doubt("files text the fast reader does not vouch for")
    try:
        decoded = _FILE_LISTS.decode_lines("\n".join(present).encode())
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Doubt(str(exc)) from None
    if len(decoded) != len(present):
        raise Doubt("a files cell holds no JSON document")
    records = iter(decoded)
    return [None if t is None else next(records) for t in written]


def file_checks(lists: list[list[FileRecord] | None]) -> list[tuple[FileCheck, ...]]:
    """``FileCheck`` tuples built column by column (400,000 ``__init__`` calls are most
    of reading a registry with file records)."""
    flat = [record for records in lists if records for record in records]
    if not flat:
        return [()] * len(lists)
    columns = {
        name: [getattr(r, name) for r in flat] for name in ("name", "size", "rows", "sha256")
    }
    checks = iter(build_unchecked(FileCheck, len(flat), columns))
    return [tuple(islice(checks, len(records))) if records else () for records in lists]
