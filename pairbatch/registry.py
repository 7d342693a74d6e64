"""The on-disk jobs registry: a CSV snapshot plus an append-only journal.

``jobs_registry.csv`` has the reference's nine columns and pairbatch's additions. Rewriting
a 10,000-row CSV after every job transition would cost megabytes per poll, so transitions
are appended to ``jobs_registry.journal`` (one JSON line per job snapshot, group-committed
with one fsync per batch of records) and folded into the CSV every ``fold_every`` entries
and on close. Readers apply the journal on top of the CSV, so the registry on disk is
true after every transition. Both files are written so that a crash at any instant leaves
a readable registry: the CSV only ever changes by atomic rename, and a torn last journal
line is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from pairbatch._fs import atomic_write_bytes
from pairbatch.errors import RegistryError
from pairbatch.models import Job, JobStatus, Provider

log = logging.getLogger("pairbatch.registry")

REGISTRY_NAME = "jobs_registry.csv"
JOURNAL_NAME = "jobs_registry.journal"

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
)
COLUMNS = REFERENCE_COLUMNS + EXTRA_COLUMNS
_PATH_COLUMNS = ("batch_input_path", "batch_output_path", "csv_path", "pairs_path")
_TRUE = frozenset({"true", "t", "1", "yes"})
_FALSE = frozenset({"false", "f", "0", "no"})
_NA = frozenset({"", "na", "nan", "null", "none"})


def registry_path(output_dir: str | os.PathLike[str]) -> Path:
    return Path(output_dir) / REGISTRY_NAME


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
        return absolute[len(base) + 1 :]
    return path


def _absolute(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    candidate = Path(path).expanduser()
    return str(candidate if candidate.is_absolute() else base / candidate)


def _job_record(job: Job, base: str) -> dict[str, Any]:
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
    }
    for column in _PATH_COLUMNS:
        record[column] = _relative(getattr(job, column), base)
    return record


def _csv_bytes(jobs: Iterable[Job], base: Path) -> bytes:
    root = os.path.abspath(base)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for job in sorted(jobs, key=lambda j: j.segment_index):
        record = _job_record(job, root)
        row = []
        for column in COLUMNS:
            value = record[column]
            if value is None:
                row.append("NA")
            elif isinstance(value, bool):
                row.append("TRUE" if value else "FALSE")
            else:
                row.append(str(value))
        writer.writerow(row)
    return buffer.getvalue().encode()


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
        text = str(value)
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

    def job(self, base: Path) -> Job:
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
        paths = {}
        for column in _PATH_COLUMNS:
            value = self.text(column) if column == "pairs_path" else self.required(column)
            paths[column] = _absolute(value, base)
        return Job(
            segment_index=self.integer("segment_index"),
            provider=provider,
            model=self.required("model"),
            batch_id=self.text("batch_id"),
            batch_input_path=paths["batch_input_path"] or "",
            batch_output_path=paths["batch_output_path"] or "",
            csv_path=paths["csv_path"] or "",
            pairs_path=paths["pairs_path"],
            done=done,
            status=status,
            raw_status=self.text("raw_status"),
            n_pairs=self.integer("n_pairs", default=0),
            run_tag=self.text("run_tag") or "",
            submitted_at=self.timestamp("submitted_at"),
            updated_at=self.timestamp("updated_at"),
            error=self.text("error"),
        )


def _read_csv(path: Path) -> list[Job]:
    base = path.parent
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise RegistryError(
            f"No registry file found at {path}. Please supply 'jobs' or ensure that "
            "'output_dir' contains a 'jobs_registry.csv' created by submit_pairs_multi_batch()."
        ) from None
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in REFERENCE_COLUMNS if c not in header and c != "pairs_path"]
    if missing:
        raise RegistryError(f"{path}: missing column(s): {', '.join(missing)}")
    jobs: dict[int, Job] = {}
    for number, row in enumerate(reader, start=1):
        job = _RowReader(str(path), number, row).job(base)
        if job.segment_index in jobs:
            raise RegistryError(
                f"{path}: row {number}, column 'segment_index': "
                f"duplicate segment {job.segment_index}"
            )
        jobs[job.segment_index] = job
    return list(jobs.values())


def _read_journal(path: Path, base: Path) -> list[Job]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    torn_tail = not data.endswith(b"\n")
    jobs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            if torn_tail and number == len(lines):
                log.warning("ignoring a torn last line in %s (a crash mid-append)", path)
                continue
            raise RegistryError(f"{path}: line {number} is not valid JSON") from None
        jobs.append(_RowReader(str(path), number, record).job(base))
    return jobs


def read_registry(output_dir: str | os.PathLike[str]) -> list[Job]:
    """The jobs recorded in ``output_dir``: the CSV with the journal applied, by segment."""
    path = registry_path(output_dir)
    jobs = {job.segment_index: job for job in _read_csv(path)}
    for job in _read_journal(path.with_name(JOURNAL_NAME), path.parent):
        jobs[job.segment_index] = job
    return sorted(jobs.values(), key=lambda j: j.segment_index)


def write_registry(output_dir: str | os.PathLike[str], jobs: Iterable[Job]) -> Path:
    """Atomically write the full CSV and drop the journal it supersedes."""
    path = registry_path(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, _csv_bytes(jobs, path.parent))
    with contextlib.suppress(FileNotFoundError):
        path.with_name(JOURNAL_NAME).unlink()
    return path


# ---------------------------------------------------------------- live registry


class Registry:
    """A registry kept true on disk while the engine runs.

    ``await record(job)`` returns once the transition is durable. Records made while a
    write is in flight are committed together (one append, one fsync), so a thousand jobs
    finishing at once cost a handful of disk flushes, not a thousand.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        jobs: Iterable[Job] = (),
        *,
        fold_every: int = 512,
        fsync: bool = True,
    ) -> None:
        self.path = registry_path(output_dir)
        self.journal_path = self.path.with_name(JOURNAL_NAME)
        self._base = self.path.parent
        self._root = os.path.abspath(self._base)
        self._jobs: dict[int, Job] = {job.segment_index: job for job in jobs}
        self._fold_every = fold_every
        self._fsync = fsync
        self._pending: list[Job] = []
        self._journal_entries = 0
        self._committed: asyncio.Future[None] | None = None
        self._committer: asyncio.Task[None] | None = None

    @property
    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.segment_index)

    def write_now(self) -> None:
        """Synchronously fold everything into the CSV (for use outside an event loop)."""
        write_registry(self._base, self._jobs.values())
        self._journal_entries = 0

    async def record(self, job: Job) -> None:
        """Record a transition; returns when it is on disk."""
        self._jobs[job.segment_index] = job
        self._pending.append(job)
        if self._committed is None or self._committed.done():
            self._committed = asyncio.get_running_loop().create_future()
        waiter = self._committed
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_loop())
        # The commit goes on even if this caller is cancelled: it is shared.
        await asyncio.shield(waiter)

    async def _commit_loop(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            waiter, self._committed = self._committed, None
            try:
                await asyncio.to_thread(self._append, batch)
                if self._journal_entries >= self._fold_every:
                    snapshot = list(self._jobs.values())
                    await asyncio.to_thread(self._fold, snapshot)
            except BaseException as exc:
                if waiter is not None and not waiter.done():
                    waiter.set_exception(exc)
                raise
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _append(self, batch: list[Job]) -> None:
        payload = b"".join(orjson.dumps(_job_record(j, self._root)) + b"\n" for j in batch)
        with self.journal_path.open("ab") as handle:
            handle.write(payload)
            handle.flush()
            if self._fsync:
                os.fsync(handle.fileno())
        self._journal_entries += len(batch)

    def _fold(self, snapshot: list[Job]) -> None:
        atomic_write_bytes(self.path, _csv_bytes(snapshot, self._base), fsync=self._fsync)
        with contextlib.suppress(FileNotFoundError):
            self.journal_path.unlink()
        self._journal_entries = 0

    async def close(self) -> None:
        """Wait for pending records, then fold the journal into the CSV."""
        if self._committer is not None:
            with contextlib.suppress(Exception):
                await self._committer
        snapshot = list(self._jobs.values())
        await asyncio.to_thread(self._fold, snapshot)
