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
from itertools import islice
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

import attrs
import msgspec
import polars as pl

from pairbatch.models import FileCheck, Job, build_unchecked
from pairbatch.registry_codec import REFERENCE_COLUMNS, _Read, _Resolver
from pairbatch.registry_columns import INTEGER_COLUMNS, Doubt, decoded

_BOM = b"\xef\xbb\xbf"


@attrs.frozen
class Columns:
    """A file's records as validated columns: ``Job``'s fields, converted (``files``
    still as decoded records), each record's rev as the careful reader gives it, and
    ``place``, which a record's number follows in messages (``"<file>: row "``). Jobs
    are built from it only for the records a merge keeps."""

    fields: Mapping[str, Sequence[Any]]
    revs: Sequence[int | None]
    place: str

    def jobs(self, rows: Sequence[int] | None = None) -> list[Job]:
        """The jobs of ``rows`` (indexes, in that order; all of them if ``None``)."""
        if rows is None:
            picked = self.fields
        elif len(rows) == 1:
            picked = {name: [values[rows[0]]] for name, values in self.fields.items()}
        else:
            pick = itemgetter(*rows)  # in C: a tuple of the picked values
            picked = {name: pick(values) for name, values in self.fields.items()}
        count = len(self.revs) if rows is None else len(rows)
        if not count:
            return []
        fields = dict(picked)
        fields["files"] = file_checks(fields["files"])
        return build_unchecked(Job, count, fields)

    def records(self) -> list[_Read]:
        """What the careful reader gives for the same file."""
        places = map(self.place.__add__, map(str, range(1, len(self.revs) + 1)))
        return list(zip(self.jobs(), self.revs, places, strict=True))


def read_csv_fast(path: Path, data: bytes) -> Columns | None:
    """The CSV snapshot's records, or ``None``: read it the careful way."""
    try:
        frame = _csv_frame(data)
        columns = decoded(frame, _Resolver(path.parent))
        columns["files"] = file_lists(columns["files"], frame.height)  # type: ignore[arg-type]
        revs = columns.pop("rev")
    except Doubt:
        return None
    if revs is None:
        revs = [None] * frame.height
    elif None in revs:
        revs = [-1 if r is None else r for r in revs]
    fields = {name: values for name, values in columns.items() if values is not None}
    return Columns(fields, revs, f"{path}: row ")


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
    if canonical.getvalue() != body:
        raise Doubt("the file is not in the form pairbatch writes")
    return frame


_REQUIRED_COLUMNS = [c for c in REFERENCE_COLUMNS if c != "pairs_path"]


class FileRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A file record exactly as :class:`FileCheck` takes it (``FileCheck(**item)``)."""

    name: str
    size: int
    rows: int | None = None
    sha256: str | None = None


_FILE_LISTS = msgspec.json.Decoder(list[FileRecord])


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


def read_journal_fast(path: Path, base: Path, data: bytes) -> Columns | None:
    """The journal's records, or ``None``: read it the careful way."""
    try:
        lines = _journal_lines(data)
        # Field by field (a tuple per record would be 100,000 more objects to collect).
        values = {name: list(map(attrgetter(name), lines)) for name in _Line.__struct_fields__}
        files = values.pop("files")
        frame = pl.DataFrame([_series(name, column) for name, column in values.items()])
        columns = decoded(frame, _Resolver(base))
        columns["files"] = files
        revs = columns.pop("rev")
    except Doubt:
        return None
    assert revs is not None
    fields = {name: values for name, values in columns.items() if values is not None}
    return Columns(fields, revs, f"{path}: line ")


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


def _series(name: str, values: list[Any]) -> pl.Series:
    dtype = pl.Int64 if name in INTEGER_COLUMNS else pl.Boolean if name == "done" else pl.String
    try:
        return pl.Series(name, values, dtype=dtype, strict=True)
    except (OverflowError, TypeError, pl.exceptions.PolarsError) as exc:
        raise Doubt(str(exc)) from None


# ---------------------------------------------------------------- file records


def file_lists(written: list[str | None] | None, count: int) -> list[list[FileRecord] | None]:
    """The CSV's ``files`` cells (JSON text), one JSON document a line for one decode."""
    present = [t for t in written or () if t is not None]
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
    return [None if t is None else next(records) for t in written or ()]


def file_checks(lists: Sequence[list[FileRecord] | None]) -> list[tuple[FileCheck, ...]]:
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
