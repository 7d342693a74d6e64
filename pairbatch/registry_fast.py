"""The registry's columnar reader: a whole file decoded at once, every column validated
at once, jobs built without re-running ``Job.__init__`` on values already checked.

It returns ``None`` whenever it cannot vouch for the file (see
:mod:`pairbatch.registry_columns`): the caller then reads it with the careful row reader
of :mod:`pairbatch.registry_codec`, which gives the exact value or the exact error. The
fast reader never produces an error of its own, so every message a damaged registry gets
is the careful reader's, naming the file, row and column.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from pairbatch.models import Job, build_unchecked
from pairbatch.registry_codec import REFERENCE_COLUMNS, _Read, _Resolver
from pairbatch.registry_columns import (
    Doubt,
    FileRecord,
    file_checks,
    file_lists,
    flags,
    integers,
    paths,
    providers,
    required,
    statuses,
    texts,
    timestamps,
)

_BOM = b"\xef\xbb\xbf"


def read_csv_fast(path: Path, data: bytes) -> list[_Read] | None:
    """The CSV snapshot's records, or ``None``: read it the careful way."""
    try:
        frame = _csv_frame(data)
        count = frame.height
        columns = {name: frame[name] for name in frame.columns}
        revs: list[int | None] = (
            integers(columns["rev"], count, -1) if "rev" in columns else [None] * count
        )
        files = file_lists(columns.get("files"), count)
        jobs = _jobs(columns, files, count, _Resolver(path.parent))
    except Doubt:
        return None
    return list(zip(jobs, revs, [f"{path}: row {n}" for n in range(1, count + 1)], strict=True))


def _csv_frame(data: bytes) -> pl.DataFrame:
    """Every cell as text, in a file whose every byte polars and the ``csv`` module read
    alike: it must be exactly what a canonical writer makes of the cells polars found."""
    if b"\r" in data or b"\x00" in data:
        # "\r" ends a row for the csv module but not for polars; NUL is damage.
        raise Doubt("line ends or bytes the readers may take differently")
    body = data[len(_BOM) :] if data.startswith(_BOM) else data
    try:
        frame = pl.read_csv(body, infer_schema=False, raise_if_empty=False)
    except pl.exceptions.PolarsError as exc:
        raise Doubt(str(exc)) from None
    if frame.height == 0 or any(c not in frame.columns for c in _REQUIRED_COLUMNS):
        raise Doubt("no rows, or a missing column")
    canonical = io.BytesIO()
    frame.write_csv(canonical, quote_style="necessary")
    # Same bytes back means no odd quoting, blank line, ragged row or stray quote that
    # either reader would have taken its own way.
    if canonical.getbuffer() != body:
        raise Doubt("the file is not in the form pairbatch writes")
    return frame


_REQUIRED_COLUMNS = [c for c in REFERENCE_COLUMNS if c != "pairs_path"]


class _Line(msgspec.Struct, gc=False):
    """A journal record with the types pairbatch writes; a missing key is ``None``, as
    ``dict.get`` gives the careful reader. Any other type is a decode error: a doubt."""

    segment_index: int | None = None
    provider: str | None = None
    model: str | None = None
    batch_id: str | None = None
    batch_input_path: str | None = None
    batch_output_path: str | None = None
    csv_path: str | None = None
    pairs_path: str | None = None
    done: bool | None = None
    status: str | None = None
    raw_status: str | None = None
    n_pairs: int | None = None
    run_tag: str | None = None
    submitted_at: str | None = None
    updated_at: str | None = None
    error: str | None = None
    rev: int | None = None
    files: list[FileRecord] | None = None


_LINES = msgspec.json.Decoder(_Line)
_INTEGER_FIELDS = ("segment_index", "n_pairs", "rev")


def read_journal_fast(path: Path, base: Path, data: bytes) -> list[_Read] | None:
    """The journal's records, or ``None``: read it the careful way."""
    try:
        lines = _journal_lines(data)
        count = len(lines)
        # Field by field (a tuple per record would be 100,000 more objects to collect).
        values = {name: list(map(attrgetter(name), lines)) for name in _Line.__struct_fields__}
        columns = {name: _series(name, column) for name, column in values.items()}
        revs = values["rev"]
        files: list[list[FileRecord] | None] = values["files"]
        jobs = _jobs(columns, files, count, _Resolver(base))
    except Doubt:
        return None
    return list(zip(jobs, revs, [f"{path}: line {n}" for n in range(1, count + 1)], strict=True))


def _journal_lines(data: bytes) -> list[_Line]:
    if not data.endswith(b"\n") or data.startswith(_BOM):
        raise Doubt("a torn last line, or a byte order mark")
    if b"\\ud" in data or b"\\uD" in data:
        raise Doubt("an escaped surrogate, which the two JSON decoders may take apart")
    if not data.isascii():
        try:
            data.decode()
        except UnicodeDecodeError:
            raise Doubt("not UTF-8") from None
    try:
        lines = _LINES.decode_lines(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Doubt(str(exc)) from None
    # One record per newline: no blank lines, which would shift the line numbers.
    if len(lines) != data.count(b"\n"):
        raise Doubt("blank lines")
    return lines


def _series(name: str, values: list[Any]) -> pl.Series | None:
    if name == "files":
        return None
    dtype = pl.Int64 if name in _INTEGER_FIELDS else pl.Boolean if name == "done" else pl.String
    try:
        return pl.Series(name, values, dtype=dtype, strict=True)
    except (OverflowError, TypeError, pl.exceptions.PolarsError) as exc:
        raise Doubt(str(exc)) from None


def _jobs(
    columns: Mapping[str, pl.Series | None],
    files: list[list[FileRecord] | None],
    count: int,
    resolve: _Resolver,
) -> list[Job]:
    """``_RowReader.job`` for every row at once."""
    get = columns.get
    done = flags(get("done"), count)
    fields: dict[str, Sequence[object]] = {
        "segment_index": integers(get("segment_index"), count, None),
        "provider": providers(get("provider"), count),
        "model": required(get("model"), count),
        "batch_id": texts(get("batch_id"), count),
        "pairs_path": paths(get("pairs_path"), count, resolve, optional=True),
        "done": done,
        "status": statuses(get("status"), done),
        "raw_status": texts(get("raw_status"), count),
        "n_pairs": integers(get("n_pairs"), count, 0),
        "run_tag": [t or "" for t in texts(get("run_tag"), count)],
        "submitted_at": timestamps(get("submitted_at"), count),
        "updated_at": timestamps(get("updated_at"), count),
        "error": texts(get("error"), count),
        "files": file_checks(files),
    }
    for column in ("batch_input_path", "batch_output_path", "csv_path"):
        fields[column] = paths(get(column), count, resolve)
    return build_unchecked(Job, count, fields)
