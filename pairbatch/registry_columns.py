"""Whole registry columns decoded at once, to exactly what the careful row reader gives.

:func:`decoded` takes a file's columns (a polars frame of the CSV's text, or of the
journal's already typed values) and returns, column by column, the Python values
:class:`~pairbatch.registry_codec._RowReader` would give each row, or raises
:class:`Doubt`. It accepts only values whose careful reading it can vouch for; anything
else (a damaged value, but also an unusual spelling the careful reader would accept,
such as ``" 5"`` or ``"yes"``) is a doubt, and the caller reads the whole file the
careful way, which gives its exact value or its exact error. So the two readers never
disagree: the fast one just declines. The work is two polars passes over the frame (its
NA spellings, then everything else), not one per column: each pass costs ~2 ms however
little it does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import polars as pl

from pairbatch.errors import RegistryError
from pairbatch.models import JobStatus, Provider
from pairbatch.registry_codec import _NA, _Resolver, _RowReader

_T = TypeVar("_T")

PATH_COLUMNS = ("batch_input_path", "batch_output_path", "csv_path", "pairs_path")
INTEGER_COLUMNS = ("segment_index", "n_pairs", "rev")
_TIME_COLUMNS = ("submitted_at", "updated_at")
# Every character ``str.isspace`` accepts, which is what ``str.strip()`` removes
# (tests/test_registry_fast.py checks the list against Python's own).
PY_SPACES = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_NA_SPELLINGS = sorted(_NA)
# Integers that float() reads exactly and int() gives back as written.
_PLAIN_INT = r"^-?[0-9]{1,15}$"
# A relative path the careful resolver joins as a plain string (``_PLAIN_PATH`` and no
# ``.`` segment), spelled without newlines so that ``$`` means the same to both engines.
_JOINABLE = r"^[^~/\n][^/\n]*(?:/[^/\n]+)*$"
_DOT = r"(?:^|/)\.(?:/|$)"


class Doubt(Exception):
    """A value the columnar reader cannot vouch for: read the file the careful way."""


def _cell(column: str, value: object) -> _RowReader:
    return _RowReader("", 0, {column: value})


def _na_cleaned(frame: pl.DataFrame) -> pl.LazyFrame:
    """The frame with every text the careful ``text`` reads as ``None`` made null:
    ``text.strip().lower() in _NA``, its rule, with ``str.isspace``'s own characters (no
    lowercase letter outside ASCII lowers to one of the NA spellings, in either engine).
    """
    strings = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    spelled = [
        pl.col(c).str.strip_chars(PY_SPACES).str.to_lowercase().is_in(_NA_SPELLINGS)
        for c in strings
    ]
    return frame.lazy().with_columns(
        pl.when(na).then(None).otherwise(pl.col(c)).alias(c)
        for c, na in zip(strings, spelled, strict=True)
    )


def _derived(cleaned: pl.LazyFrame, schema: pl.Schema, prefix: str) -> pl.DataFrame:
    """Paths joined to the folder, integers parsed, timestamps respelled, in one pass."""
    exprs: list[pl.Expr] = []
    for name, dtype in schema.items():
        column = pl.col(name)
        if name in PATH_COLUMNS:
            joinable = column.str.contains(_JOINABLE) & ~column.str.contains(_DOT)
            exprs.append(pl.when(joinable).then(pl.lit(prefix) + column).alias(name))
            exprs.append((column.is_not_null() & ~joinable).alias(f"{name}:odd"))
            exprs.append(column.alias(f"{name}:written"))
        elif name in INTEGER_COLUMNS and dtype == pl.String:
            exprs.append(column.cast(pl.Int64, strict=False).alias(name))
            exprs.append((column.is_null() | column.str.contains(_PLAIN_INT)).alias(f"{name}:ok"))
        elif name in _TIME_COLUMNS and dtype == pl.String:
            exprs.append(column.str.replace_all("Z", "+00:00", literal=True).alias(name))
        else:
            exprs.append(column)
    return cleaned.select(exprs).collect()


def decoded(frame: pl.DataFrame, resolve: _Resolver) -> dict[str, Sequence[Any] | None]:
    """Each of ``Job``'s columns but ``files`` (and ``rev``, parsed but not defaulted,
    and ``files`` as text for the CSV), as the careful reader gives them."""
    count = frame.height
    columns = _derived(_na_cleaned(frame), frame.schema, resolve.prefix)
    get = columns.get_column if count else None
    present = set(columns.columns)

    def column(name: str) -> pl.Series | None:
        return get(name) if get is not None and name in present else None

    done = flags(column("done"), count)
    out: dict[str, Sequence[Any] | None] = {
        "segment_index": integers(columns, "segment_index", count, None),
        "provider": by_value(column("provider"), count, _provider),
        "model": required(column("model"), count),
        "batch_id": texts(column("batch_id"), count),
        "done": done,
        "status": statuses(column("status"), done),
        "raw_status": texts(column("raw_status"), count),
        "n_pairs": integers(columns, "n_pairs", count, 0),
        "run_tag": [t or "" for t in texts(column("run_tag"), count)],
        "submitted_at": timestamps(column("submitted_at"), count),
        "updated_at": timestamps(column("updated_at"), count),
        "error": texts(column("error"), count),
        "rev": integers(columns, "rev", count, None, keep_missing=True),
        "files": texts(column("files"), count) if "files" in present else None,
    }
    for name in PATH_COLUMNS:
        out[name] = paths(columns, name, count, resolve, optional=name == "pairs_path")
    return out


def texts(values: pl.Series | None, count: int) -> list[str | None]:
    if values is None or values.null_count() == count:
        return [None] * count
    return values.to_list()


def required(values: pl.Series | None, count: int) -> list[str]:
    if values is None or values.null_count():
        raise Doubt("a required value is missing")
    return values.to_list()


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


def _provider(value: str | None) -> Provider:
    return Provider.parse(_cell("provider", value).required("provider"))


def flags(values: pl.Series | None, count: int) -> list[bool]:
    if values is not None and values.dtype == pl.Boolean:
        return values.fill_null(False).to_list()
    return by_value(values, count, lambda v: _cell("done", v).boolean("done"))


def statuses(values: pl.Series | None, done: list[bool]) -> list[JobStatus]:
    """A missing status comes from ``done`` (a reference registry has no status column)."""

    def status(value: str | None) -> JobStatus | None:
        return None if value is None else JobStatus(value)

    given = by_value(values, len(done), status)
    if None not in given:
        return given  # type: ignore[return-value]
    return [
        (JobStatus.SUCCEEDED if d else JobStatus.PENDING) if s is None else s
        for s, d in zip(given, done, strict=True)
    ]


def integers(
    columns: pl.DataFrame,
    name: str,
    count: int,
    default: int | None,
    *,
    keep_missing: bool = False,
) -> list[int | None] | None:
    """The careful ``integer``: a missing value is ``default`` (``None``: a doubt), or
    ``None`` if ``keep_missing`` (a missing column is then ``None`` too)."""
    if name not in columns.columns:
        if keep_missing:
            return None
        if default is None:
            raise Doubt("a required integer column is missing")
        return [default] * count
    numbers = columns.get_column(name)
    ok = f"{name}:ok"
    if ok in columns.columns and not columns.get_column(ok).all():
        raise Doubt("an integer the fast reader does not vouch for")
    if numbers.null_count() and not keep_missing:
        if default is None:
            raise Doubt("a required integer is missing")
        numbers = numbers.fill_null(default)
    return numbers.to_list()


def timestamps(values: pl.Series | None, count: int) -> list[datetime | None]:
    """``datetime.fromisoformat`` itself, as the careful reader calls it, value by value
    (polars would give other ``tzinfo`` objects); only the NA test is columnar."""
    written = texts(values, count)
    if values is None or values.null_count() == count:
        return written  # type: ignore[return-value]
    parse = datetime.fromisoformat
    try:
        return [None if t is None else parse(t) for t in written]
    except ValueError as exc:
        raise Doubt(str(exc)) from None


def paths(
    columns: pl.DataFrame, name: str, count: int, resolve: _Resolver, *, optional: bool
) -> list[str | None]:
    if name not in columns.columns:
        if optional:
            return [None] * count
        raise Doubt("a required path column is missing")
    written = columns.get_column(f"{name}:written")
    if not optional and written.null_count():
        raise Doubt("a required path is missing")
    out: list[str | None] = columns.get_column(name).to_list()
    odd = columns.get_column(f"{name}:odd")
    if odd.any():
        # Absolute, ``~`` or dotted paths: the careful resolver's own answer, one by one.
        for index in odd.arg_true().to_list():
            out[index] = resolve(written[index])
    return out
