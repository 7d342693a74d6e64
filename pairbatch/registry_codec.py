"""The registry's rows: jobs encoded as CSV rows and journal records, and read back strictly.

Every value is checked as it is read and an error names the file, the row (or line) and
the column; a registry that does not parse whole is never "repaired" (see
:mod:`pairbatch.registry`, which reads and writes the files).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from pairbatch.errors import RegistryError
from pairbatch.models import Job, JobStatus, Provider

log = logging.getLogger("pairbatch.registry")

REGISTRY_NAME = "jobs_registry.csv"
JOURNAL_NAME = "jobs_registry.journal"
SETTINGS_NAME = "run_settings.json"

REFERENCE_COLUMNS = (
    "segment_index",
    "provider",
    "model",
    "batch_id",
    "batch_input_path",
    "batch_output_path",
    "csv_path",
    "pairs_path",
    "done",
)
EXTRA_COLUMNS = (
    "status",
    "raw_status",
    "n_pairs",
    "run_tag",
    "submitted_at",
    "updated_at",
    "error",
    "rev",
    "files",
)
COLUMNS = REFERENCE_COLUMNS + EXTRA_COLUMNS
_PATH_COLUMNS = ("batch_input_path", "batch_output_path", "csv_path", "pairs_path")
_TRUE = frozenset({"true", "t", "1", "yes"})
_FALSE = frozenset({"false", "f", "0", "no"})
_NA = frozenset({"", "na", "nan", "null", "none"})


# ---------------------------------------------------------------- encoding


def _relative(path: str | None, base: str) -> str | None:
    """Store paths inside the run folder relative to it, so the folder can move.

    ``os.path.abspath`` rather than ``Path.resolve``: no syscalls, which matters when a
    10,000-row registry is encoded.
    """
    if path is None:
        return None
    absolute = os.path.abspath(path)
    if absolute.startswith(base + os.sep):
        inside = absolute[len(base) + 1 :]
        # A file named ``~x`` in the folder is stored ``./~x``: a leading ``~`` reads
        # back as a home folder.
        return "./" + inside if inside.startswith("~") else inside
    return path


def _absolute(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    candidate = Path(path)
    # Only a path written with a leading ``~`` names a home folder: ``Path("./~x")`` is
    # ``~x`` to pathlib, which would expand it. A ``~name`` with no such user (pathlib
    # raises RuntimeError) can only be a file of that name, taken as written.
    if path.startswith("~"):
        with contextlib.suppress(RuntimeError):
            candidate = candidate.expanduser()
    return str(candidate if candidate.is_absolute() else base / candidate)


# A stored path that ``pathlib`` would leave as written: no ``~``, no empty, ``.`` or
# ``..``-free normalisation to do (``..`` is kept by pathlib too), no trailing slash.
_PLAIN_PATH = re.compile(r"[^~/][^/]*(?:/[^/]+)*")
_DOT_SEGMENT = re.compile(r"(?:^|/)\.(?:/|$)")


class _Resolver:
    """:func:`_absolute` for many paths under one folder. Building ``Path`` objects was
    60% of reading a registry (100 µs a job); plain relative names, the only kind
    pairbatch writes, are joined as strings to the same result."""

    def __init__(self, base: Path) -> None:
        self.base = base
        text = str(base)
        self.prefix = "" if text == "." else text.rstrip("/") + "/"

    def __call__(self, path: str | None) -> str | None:
        if path is None:
            return None
        if _PLAIN_PATH.fullmatch(path) and not _DOT_SEGMENT.search(path):
            return self.prefix + path
        return _absolute(path, self.base)


def _job_record(job: Job, base: str, rev: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "segment_index": job.segment_index,
        "provider": job.provider.value,
        "model": job.model,
        "batch_id": job.batch_id,
        "done": job.done,
        "status": job.status.value,
        "raw_status": job.raw_status,
        "n_pairs": job.n_pairs,
        "run_tag": job.run_tag,
        "submitted_at": job.submitted_at.isoformat() if job.submitted_at else None,
        "updated_at": job.updated_at.isoformat() if job.updated_at else None,
        "error": job.error,
        "rev": rev,
        "files": [f.as_dict() for f in job.files],
    }
    for column in _PATH_COLUMNS:
        record[column] = _relative(getattr(job, column), base)
    return record


def _csv_row(record: Mapping[str, Any]) -> list[str]:
    row = []
    for column in COLUMNS:
        value = record[column]
        if value is None:
            row.append("NA")
        elif isinstance(value, bool):
            row.append("TRUE" if value else "FALSE")
        elif column == "files":
            row.append(orjson.dumps(value).decode() if value else "NA")
        else:
            row.append(str(value))
    return row


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    text = buffer.getvalue()
    if "\r" not in text:
        return text
    # csv.writer quotes a field holding its line terminator ("\n") but not a lone "\r",
    # which a reader takes for the end of the row: such rows are quoted here instead.
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        if any("\r" in cell for cell in row):
            buffer.write(",".join(_quoted_cell(cell) for cell in row) + "\n")
        else:
            writer.writerow(row)
    return buffer.getvalue()


def _quoted_cell(cell: str) -> str:
    if any(c in cell for c in ',"\n\r'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def _csv_bytes(jobs: Iterable[tuple[Job, int]], base: Path) -> bytes:
    root = os.path.abspath(base)
    rows = [list(COLUMNS)]
    for job, rev in sorted(jobs, key=lambda item: item[0].segment_index):
        rows.append(_csv_row(_job_record(job, root, rev)))
    return _csv_text(rows).encode()


def _journal_bytes(jobs: Iterable[tuple[Job, int]], base: Path) -> bytes:
    root = os.path.abspath(base)
    return b"".join(orjson.dumps(_job_record(job, root, rev)) + b"\n" for job, rev in jobs)


# ---------------------------------------------------------------- decoding


class _RowReader:
    """Typed access to one registry row, with errors naming the row and column."""

    def __init__(self, source: str, row_number: int, row: Mapping[str, Any]) -> None:
        self.source, self.row_number, self.row = source, row_number, row

    def fail(self, column: str, message: str) -> RegistryError:
        return RegistryError(f"{self.source}: row {self.row_number}, column {column!r}: {message}")

    def text(self, column: str) -> str | None:
        value = self.row.get(column)
        if value is None:
            return None
        text = value if type(value) is str else str(value)
        # Every NA spelling is at most 4 characters once stripped: longer text is text.
        if len(text) > 4 and not text[0].isspace() and not text[-1].isspace():
            return text
        return None if text.strip().lower() in _NA else text

    def required(self, column: str) -> str:
        value = self.text(column)
        if value is None:
            raise self.fail(column, "value is missing")
        return value

    def integer(self, column: str, default: int | None = None) -> int:
        value = self.row.get(column)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = self.text(column)
        if text is None:
            if default is not None:
                return default
            raise self.fail(column, "value is missing")
        try:
            number = float(text)
        except ValueError:
            raise self.fail(column, f"{text!r} is not an integer") from None
        if not number.is_integer():
            raise self.fail(column, f"{text!r} is not an integer")
        return int(number)

    def boolean(self, column: str) -> bool:
        value = self.row.get(column)
        if isinstance(value, bool):
            return value
        text = (self.text(column) or "").strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE or text == "":
            return False
        raise self.fail(column, f"{value!r} is not a boolean (use TRUE or FALSE)")

    def timestamp(self, column: str) -> datetime | None:
        text = self.text(column)
        if text is None:
            return None
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise self.fail(column, f"{text!r} is not an ISO-8601 timestamp") from None

    def files(self) -> list[Any]:
        value = self.row.get("files")
        if isinstance(value, list):
            return value
        text = self.text("files")
        if text is None:
            return []
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise self.fail("files", "is not a JSON list of file records") from None
        if not isinstance(parsed, list):
            raise self.fail("files", "is not a JSON list of file records")
        return parsed

    def job(self, base: Path | _Resolver) -> Job:
        provider_text = self.required("provider")
        try:
            provider = Provider.parse(provider_text)
        except ValueError as exc:
            raise self.fail("provider", str(exc)) from None
        done = self.boolean("done")
        status_text = self.text("status")
        if status_text is None:
            # A reference registry has no status: done is all it knows.
            status = JobStatus.SUCCEEDED if done else JobStatus.PENDING
        else:
            try:
                status = JobStatus(status_text)
            except ValueError:
                valid = ", ".join(s.value for s in JobStatus)
                raise self.fail("status", f"{status_text!r} is not one of {valid}") from None
        resolve = base if isinstance(base, _Resolver) else _Resolver(base)
        paths = {}
        for column in _PATH_COLUMNS:
            value = self.text(column) if column == "pairs_path" else self.required(column)
            paths[column] = resolve(value)
        fields: dict[str, Any] = {
            "segment_index": self.integer("segment_index"),
            "provider": provider,
            "model": self.required("model"),
            "batch_id": self.text("batch_id"),
            "batch_input_path": paths["batch_input_path"] or "",
            "batch_output_path": paths["batch_output_path"] or "",
            "csv_path": paths["csv_path"] or "",
            "pairs_path": paths["pairs_path"],
            "done": done,
            "status": status,
            "raw_status": self.text("raw_status"),
            "n_pairs": self.integer("n_pairs", default=0),
            "run_tag": self.text("run_tag") or "",
            "submitted_at": self.timestamp("submitted_at"),
            "updated_at": self.timestamp("updated_at"),
            "error": self.text("error"),
        }
        files = self.files()
        # Only the file records are converted in Job() (a RegistryError is a ValueError:
        # a column's own error must not be caught here and called a bad file record).
        try:
            return Job(**fields, files=files)
        except (TypeError, ValueError) as exc:
            raise self.fail("files", f"bad file record: {exc}") from None


# A record as read: the job, its rev (None when the source had none), and where it was.
_Read = tuple[Job, int | None, str]


def _decode_text(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RegistryError(
            f"{path}: line {line} is not UTF-8 text (byte {exc.start}); the file is damaged"
        ) from None


def _read_bytes(path: Path) -> bytes | None:
    """The file's bytes; ``None`` when it does not exist; an error naming it otherwise."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(f"{path}: cannot be read ({exc.strerror})") from None


def _read_csv(path: Path, data: bytes | None) -> list[_Read]:
    """The careful reader of the CSV snapshot ``data`` (``None``: no file), row by row."""
    base = path.parent
    if data is None:
        return []
    text = _decode_text(path, data)
    if "\x00" in text:
        raise RegistryError(f"{path}: holds NUL bytes; the file is damaged")
    reader = csv.DictReader(io.StringIO(text))
    resolve = _Resolver(base)
    try:
        header = reader.fieldnames or []
        missing = [c for c in REFERENCE_COLUMNS if c not in header and c != "pairs_path"]
        if missing:
            raise RegistryError(f"{path}: missing column(s): {', '.join(missing)}")
        out: list[_Read] = []
        for number, row in enumerate(reader, start=1):
            if None in row or any(v is None for v in row.values()):
                raise RegistryError(
                    f"{path}: row {number} has {len(row) - (None in row)} of {len(header)} "
                    "fields; the file is damaged (cut or edited)"
                )
            reader_row = _RowReader(str(path), number, row)
            rev = reader_row.integer("rev", default=-1) if "rev" in header else None
            out.append((reader_row.job(resolve), rev, f"{path}: row {number}"))
    except csv.Error as exc:
        raise RegistryError(f"{path}: line {reader.line_num}: {exc}") from None
    if out and not text.endswith(("\n", "\r")):
        raise RegistryError(
            f"{path}: row {len(out)} ends without a newline: the file was cut mid-row"
        )
    return out


def _journal_lines(data: bytes) -> tuple[list[bytes], bool]:
    """The journal's lines, and whether the last one is torn (no newline after it)."""
    lines = data.split(b"\n")
    torn = bool(lines and lines[-1].strip())
    return lines, torn


def _read_journal(path: Path, base: Path, data: bytes | None) -> list[_Read]:
    """The careful reader of the journal ``data`` (``None``: no file), line by line."""
    if data is None:
        return []
    lines, torn = _journal_lines(data)
    resolve = _Resolver(base)
    out: list[_Read] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            if torn and number == len(lines):
                log.warning("ignoring a torn last line in %s (a crash mid-append)", path)
                continue
            raise RegistryError(f"{path}: line {number} is not valid JSON") from None
        if not isinstance(record, dict):
            raise RegistryError(f"{path}: line {number} is not a JSON object")
        reader = _RowReader(str(path), number, record)
        rev = reader.integer("rev") if record.get("rev") is not None else None
        out.append((reader.job(resolve), rev, f"{path}: line {number}"))
    return out
