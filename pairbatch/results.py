"""Turning a provider's results JSONL into the parsed-result frame.

How a file is read (measured by ``benchmarks/bench_parse.py``):

* Each line is decoded with orjson and the provider's *fast* extractor pulls the few
  fields the frame needs straight into a row tuple. It only accepts the canonical shape
  (right keys, right types); for anything else it returns ``None`` (or raises) and the
  provider's careful ``parse_line`` handles that one line. A bad line therefore costs the
  slow path for itself only, never for the whole file.
* The rows become one typed frame at the end; the work that is the same for every row
  (empty strings to null, tag detection) is done there as Polars expressions.

``polars.read_ndjson`` / ``scan_ndjson`` with an explicit nested schema was measured too:
on responses bodies its ``List(Struct)`` decoding was several times slower than orjson,
and it cannot give a row for a malformed line.

Robustness contract: a blank line is skipped; a line that is not JSON, or not the shape
expected, still gives a row (with the request key when it can be recovered) and an
``error_message``, so no request is ever dropped silently.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec
import orjson
import polars as pl

from pairbatch.errors import InputError

log = logging.getLogger("pairbatch.results")

DEFAULT_TAG_PREFIX = "<BETTER_SAMPLE>"
DEFAULT_TAG_SUFFIX = "</BETTER_SAMPLE>"

RESULT_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "custom_id": pl.Utf8,
    "model": pl.Utf8,
    "object_type": pl.Utf8,
    "status_code": pl.Int64,
    "result_type": pl.Utf8,
    "error_message": pl.Utf8,
    "thoughts": pl.Utf8,
    "content": pl.Utf8,
    "better_sample": pl.Utf8,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "total_tokens": pl.Int64,
    "prompt_cached_tokens": pl.Int64,
    "reasoning_tokens": pl.Int64,
}
COLUMNS = tuple(RESULT_SCHEMA)
# What a line parser produces: every column except ``better_sample``, which is derived
# from ``content`` for the whole frame at once. Fast extractors return a tuple in this
# order.
ROW_FIELDS = tuple(name for name in COLUMNS if name != "better_sample")
_TEXT_FIELDS = tuple(name for name in ROW_FIELDS if RESULT_SCHEMA[name] == pl.Utf8)

Row = dict[str, Any]
RowTuple = tuple[Any, ...]
LineParser = Callable[[dict[str, Any]], Row]
# Returns a ``ROW_FIELDS``-ordered tuple for a canonical line, from the line's raw bytes
# (a typed decode: the fields nobody reads are never built), or ``None`` to hand the
# line to the careful ``LineParser``. Strings may be empty (made null later) but must be
# ``str`` or ``None``; integers must be ``int`` (not ``bool``) within Int64, or ``None``.
FastLine = Callable[[bytes], "RowTuple | None"]

_KEY_RE = re.compile(rb'"(?:custom_id|key)"\s*:\s*"((?:[^"\\]|\\.)*)"')
# Exceptions a fast extractor may raise on an unexpected shape (a decoding or validation
# error included); the careful parser then gets the line.
FAST_MISS = (msgspec.MsgspecError, KeyError, TypeError, IndexError, AttributeError, ValueError)


def empty_results() -> pl.DataFrame:
    return pl.DataFrame(schema=RESULT_SCHEMA)


def text_or_none(value: object) -> str | None:
    """Strings as they are, empty strings and anything else as null."""
    return value if isinstance(value, str) and value != "" else None


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def is_int64(value: object) -> bool:
    """An ``int`` (not a ``bool``) that fits the frame's Int64 columns."""
    return type(value) is int and _INT64_MIN <= value <= _INT64_MAX


def int64_or_miss(*values: int | None) -> tuple[int | None, ...]:
    """``values`` as they are if each is null or fits Int64; else ``ValueError``, which
    hands a fast path's line to the careful parser (that nulls the number)."""
    for value in values:
        if value is not None and not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"count out of Int64 range: {value}")
    return values


def int_or_none(value: object) -> int | None:
    """An integer that fits the frame's Int64 columns, else null (so no line can fail
    the whole frame): bools, fractions and out-of-range numbers are null."""
    if type(value) is int:  # the common case, first (``bool`` is not ``int`` here)
        return value if _INT64_MIN <= value <= _INT64_MAX else None
    number: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            return None
    return number if number is not None and _INT64_MIN <= number <= _INT64_MAX else None


def dig(value: object, *path: str) -> Any:
    """``value[path[0]][path[1]]...`` or ``None`` wherever a step is missing."""
    for step in path:
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value


# ---------------------------------------------------------------- tag detection


def find_winner(content: str | None, prefix: str, suffix: str) -> str | None:
    """Which sample the answer names, from the exact tag text (scalar twin of
    :func:`better_sample_expr`, for callers holding one string).

    When both tags appear (a model that echoes the instructions, then answers), the
    **last** one is the verdict; the reference took SAMPLE_1 whenever it appeared, which
    biases such answers towards the first position (reference W14).
    """
    if content is None:
        return None
    return _last_tag(content, f"{prefix}SAMPLE_1{suffix}", f"{prefix}SAMPLE_2{suffix}")


def _last_tag(content: str, one_tag: str, two_tag: str) -> str | None:
    one, two = content.rfind(one_tag), content.rfind(two_tag)
    if one < 0 and two < 0:
        return None
    return "SAMPLE_1" if one > two else "SAMPLE_2"


@lru_cache(maxsize=16)
def tags_overlap(prefix: str, suffix: str) -> bool:
    """Whether one tag's end can be another's start: only then can the last tag found
    left to right without overlaps (:func:`better_sample_expr`) differ from the last by
    ``rfind`` (:func:`find_winner`)."""
    tags = [f"{prefix}SAMPLE_{k}{suffix}" for k in (1, 2)]
    return any(a[-k:] == b[:k] for a in tags for b in tags for k in range(1, len(a)))


def _winners(contents: Sequence[Any], prefix: str, suffix: str) -> list[str | None]:
    """:func:`find_winner` of each answer, the tags built once (a third of the regex's
    cost on 1 KB answers); empty answers have none, as the nulls they become."""
    one_tag, two_tag = f"{prefix}SAMPLE_1{suffix}", f"{prefix}SAMPLE_2{suffix}"
    # (A non-text, which the frame nulls too, has none either.)
    return [_last_tag(c, one_tag, two_tag) if type(c) is str and c else None for c in contents]


def _regex_literal(text: str) -> str:
    # Every character as a code-point escape: a custom tag can hold anything (``<<``,
    # ``#``, spaces, ``]``) and this is the one escaping the regex crate reads the same
    # way for all of them, unlike Python's ``re.escape``.
    return "".join(f"\\x{{{ord(char):X}}}" for char in text)


def better_sample_expr(
    content: pl.Expr | str = "content",
    prefix: str = DEFAULT_TAG_PREFIX,
    suffix: str = DEFAULT_TAG_SUFFIX,
) -> pl.Expr:
    """``"SAMPLE_1"``, ``"SAMPLE_2"`` or null from the exact tag text in ``content``.

    Same rule as :func:`find_winner`: the last tag in the text wins (tags are found left
    to right without overlapping, which only differs from ``rfind`` for tags whose suffix
    itself contains ``prefix + "SAMPLE_"``). ``extract_all`` + ``list.last`` is used
    because a greedy ``.*(tag)`` capture was ~15x slower on 200k answers.
    """
    column = pl.col(content) if isinstance(content, str) else content
    pattern = _regex_literal(prefix) + "SAMPLE_[12]" + _regex_literal(suffix)
    last = column.str.extract_all(pattern).list.last()
    return (
        pl.when(last == f"{prefix}SAMPLE_1{suffix}")
        .then(pl.lit("SAMPLE_1"))
        .when(last.is_not_null())
        .then(pl.lit("SAMPLE_2"))
        .otherwise(pl.lit(None, dtype=pl.Utf8))
    )


# ---------------------------------------------------------------- reading lines


def _recover_key(line: bytes) -> str | None:
    match = _KEY_RE.search(line)
    if not match:
        return None
    try:
        key = orjson.loads(b'"' + match.group(1) + b'"')
    except orjson.JSONDecodeError:
        return None
    return text_or_none(key)


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, stripped line) for each non-blank line."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            stripped = line.strip()
            if stripped:
                yield number, stripped


def _as_tuple(row: Row) -> RowTuple:
    return tuple(row.get(name) for name in ROW_FIELDS)


def _bad_json_row(line: bytes, number: int, target: Path, exc: Exception) -> RowTuple:
    log.warning("Failed to parse JSON on line %d of %s: %s", number, target, exc)
    return _as_tuple(
        {
            "custom_id": _recover_key(line.strip()),
            "result_type": "errored",
            "error_message": f"Failed to parse JSON line {number} of {target.name}",
        }
    )


def _careful_row(
    obj: dict[str, Any], parse_line: LineParser, number: int, target: Path
) -> RowTuple:
    try:
        row = parse_line(obj)
    except FAST_MISS as exc:
        key = obj.get("custom_id") or obj.get("key")
        row = {
            "custom_id": text_or_none(key),
            "result_type": "errored",
            "error_message": f"Failed to parse result on line {number} of {target.name}: {exc}",
        }
    return _as_tuple(row)


# Bytes read at a time. Reading blocks and splitting them on ``\n`` matches
# ``enumerate(handle)``'s line numbering and was as fast as iterating the file; the last
# piece of a block (a line cut by the block boundary) is carried into the next one.
READ_BLOCK = 4 << 20


def _iter_line_blocks(target: Path, block_bytes: int) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, lines) for consecutive blocks of ``target``; a line
    is never split, however small ``block_bytes`` is."""
    number = 1
    carry = b""
    with target.open("rb") as handle:
        while block := handle.read(block_bytes):
            lines = (carry + block).split(b"\n") if carry else block.split(b"\n")
            del block  # held across the yield, it doubled the chunk's bytes in memory
            carry = lines.pop()
            if lines:
                count = len(lines)  # counted first: the caller may empty the list
                yield number, lines
                number += count
    if carry:
        yield number, [carry]


def _rows_from_lines(
    lines: list[bytes],
    first: int,
    target: Path,
    parse_line: LineParser,
    fast_line: FastLine | None,
    rows: list[RowTuple],
) -> None:
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    append = rows.append
    # The hot loop: no generator, no per-line strip (both decoders ignore surrounding
    # whitespace), the careful path only for lines the typed fast path hands back.
    for number, line in enumerate(lines, start=first):
        if fast_line is not None:
            try:
                fast = fast_line(line)
            except FAST_MISS:
                fast = None
            if fast is not None:
                append(fast)
                continue
        try:
            obj = loads(line)
        except decode_error as exc:
            if line.strip():
                append(_bad_json_row(line, number, target, exc))
            continue
        if type(obj) is not dict:
            append(_bad_json_row(line, number, target, ValueError("not a JSON object")))
            continue
        append(_careful_row(obj, parse_line, number, target))


def iter_row_chunks(
    paths: Iterable[Path | None],
    parse_line: LineParser,
    fast_line: FastLine | None = None,
    *,
    block_bytes: int = READ_BLOCK,
) -> Iterator[list[RowTuple]]:
    """The files' rows (``ROW_FIELDS`` tuples), about ``block_bytes`` of input at a
    time, in line order; the same rows :func:`parse_jsonl` gives, whatever the block
    size. A missing file raises :class:`InputError`."""
    for path in paths:
        if path is None:
            continue
        target = Path(path)
        if not target.is_file():
            raise InputError(f"results file does not exist: {target}")
        for number, lines in _iter_line_blocks(target, block_bytes):
            rows: list[RowTuple] = []
            _rows_from_lines(lines, number, target, parse_line, fast_line, rows)
            lines.clear()  # the block generator holds the list until its next step
            if rows:
                yield rows


def _series(name: str, values: Sequence[Any]) -> pl.Series:
    dtype = RESULT_SCHEMA[name]
    try:
        series = pl.Series(name, values, dtype=dtype)
    except (OverflowError, TypeError, ValueError, pl.exceptions.PolarsError):
        # Only a fast extractor's out-of-Int64-range number gets here: null it the way
        # the careful parsers do rather than failing the whole file.
        if dtype == pl.Int64:
            return pl.Series(name, [int_or_none(v) for v in values], dtype=dtype)
        return pl.Series(name, [text_or_none(v) for v in values], dtype=dtype)
    if dtype == pl.Utf8:
        # Fast extractors leave empty strings for the frame to null. Looking first
        # costs a scan; nulling always copied every answer and thought (0.25 s a
        # 200 MB file).
        empty = series == ""
        if empty.any():
            series = series.set(empty, None)
    return series


def rows_to_frame(
    rows: Sequence[RowTuple],
    *,
    tag_prefix: str = DEFAULT_TAG_PREFIX,
    tag_suffix: str = DEFAULT_TAG_SUFFIX,
) -> pl.DataFrame:
    """The typed result frame from ``ROW_FIELDS``-ordered row tuples."""
    if not rows:
        return empty_results()
    columns = list(zip(*rows, strict=True))
    series = {name: _series(name, col) for name, col in zip(ROW_FIELDS, columns, strict=True)}
    if tags_overlap(tag_prefix, tag_suffix):
        winner = pl.DataFrame([series["content"]]).select(
            better_sample_expr("content", tag_prefix, tag_suffix).alias("better_sample")
        )
        series["better_sample"] = winner.to_series()
    else:
        contents = columns[ROW_FIELDS.index("content")]
        found = _winners(contents, tag_prefix, tag_suffix)
        series["better_sample"] = pl.Series("better_sample", found, dtype=pl.Utf8)
    return pl.DataFrame([series[name] for name in COLUMNS])


def parse_jsonl(
    paths: Iterable[Path | None],
    parse_line: LineParser,
    *,
    tag_prefix: str = DEFAULT_TAG_PREFIX,
    tag_suffix: str = DEFAULT_TAG_SUFFIX,
    fast_line: FastLine | None = None,
) -> pl.DataFrame:
    """Parse result files into the typed result frame (:data:`RESULT_SCHEMA`).

    ``fast_line`` handles canonical lines; ``parse_line`` every other one. Rows keep the
    files' line order (the order of lines carries no meaning: rows are matched to pairs
    by ``custom_id``). A missing file raises :class:`InputError`.
    """
    rows: list[RowTuple] = []
    for chunk in iter_row_chunks(paths, parse_line, fast_line):
        rows.extend(chunk)
    return rows_to_frame(rows, tag_prefix=tag_prefix, tag_suffix=tag_suffix)


def as_path(path: str | os.PathLike[str] | None) -> Path | None:
    return None if path is None else Path(path)
