"""The on-disk jobs registry: an append-only journal, and a CSV snapshot of it.

``jobs_registry.journal`` is the truth: every job transition is appended as one JSON line
(a full job record with a ``rev``, a number that only grows), group-committed with one
fsync per batch of records. It is always written, whatever ``write_registry`` says, so
no paid batch id ever lives only in memory. When the journal has grown to a few times the
number of jobs it is compacted (rewritten atomically, one line per job), so its total
cost grows linearly with the run. ``jobs_registry.csv`` has the reference's nine columns
and pairbatch's additions; it is written atomically at compaction and on close when
``write_registry`` asks for it (or one already exists). Readers take, per segment, the
record with the highest ``rev`` from both files.

Damage is named, never repaired: a CSV cut mid-row, a row with too few fields, binary
data, a journal line that is not JSON (other than a torn last line: a crash mid-append,
which the next writer truncates away under the run lock), a record for a segment the run
does not have (``run_settings.json`` lists them), or two segments sharing a file, is a
:class:`RegistryError` naming the file and row; nothing is rewritten after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import orjson

from pairbatch._fs import atomic_write_bytes
from pairbatch.errors import InputError, RegistryError
from pairbatch.heap import collector_paused
from pairbatch.models import Job
from pairbatch.registry_codec import (
    COLUMNS,
    EXTRA_COLUMNS,
    JOURNAL_NAME,
    REFERENCE_COLUMNS,
    REGISTRY_NAME,
    SETTINGS_NAME,
    _csv_bytes,
    _job_record,
    _journal_bytes,
    _journal_lines,
    _Read,
    _read_bytes,
    _read_csv,
    _read_journal,
)
from pairbatch.registry_fast import read_csv_fast, read_journal_fast
from pairbatch.registry_merge import _check_against_run, _merge, merged_columns
from pairbatch.threads import to_thread

log = logging.getLogger("pairbatch.registry")


def registry_path(output_dir: str | os.PathLike[str]) -> Path:
    return Path(output_dir) / REGISTRY_NAME


def journal_path(output_dir: str | os.PathLike[str]) -> Path:
    return Path(output_dir) / JOURNAL_NAME


def holds_registry(output_dir: str | os.PathLike[str]) -> bool:
    """Whether ``output_dir`` holds a run's registry (either file)."""
    return registry_path(output_dir).exists() or journal_path(output_dir).exists()


def require_run(output_dir: str | os.PathLike[str]) -> Path:
    """``output_dir`` as a path, refused in one line unless it holds a run's registry:
    checked before a command takes the run lock, which would make a file in it."""
    folder = Path(output_dir)
    if not holds_registry(folder):
        raise InputError(f"{folder} is not a run folder (no {registry_path(folder).name})")
    return folder


def read_registry_revs(output_dir: str | os.PathLike[str]) -> list[tuple[Job, int]]:
    """The recorded jobs with their revs, by segment (see :func:`read_registry`)."""
    folder = Path(output_dir)
    csv_data = _read_bytes(registry_path(folder))
    return _read_revs(folder, csv_data, _read_bytes(journal_path(folder)))


def _read_revs(
    folder: Path, csv_data: bytes | None, journal_data: bytes | None, *, fast: bool = True
) -> list[tuple[Job, int]]:
    """:func:`read_registry_revs` of the two files' bytes (``None``: no such file).
    ``fast=False`` reads with the careful row reader alone (the fast reader's reference,
    which it falls back to whenever it cannot vouch for a file)."""
    with collector_paused():
        return _read_both(folder, csv_data, journal_data, fast=fast)


def _read_both(
    folder: Path, csv_data: bytes | None, journal_data: bytes | None, *, fast: bool
) -> list[tuple[Job, int]]:
    path, journal = registry_path(folder), journal_path(folder)
    fast_csv = read_csv_fast(path, csv_data) if fast and csv_data is not None else None
    fast_journal = (
        read_journal_fast(journal, folder, journal_data)
        if fast and journal_data is not None
        else None
    )
    read_fast = (fast_csv is not None or csv_data is None) and (
        fast_journal is not None or journal_data is None
    )
    if read_fast and (fast_csv is not None or fast_journal is not None):
        # Every file there is read fast: merged without building the losers' jobs.
        merged_fast = merged_columns(folder, fast_csv, fast_journal)
        if merged_fast is not None:
            return merged_fast
    csv_records: list[_Read] = []
    if csv_data is not None:
        csv_records = _read_csv(path, csv_data) if fast_csv is None else fast_csv.records()
    journal_records: list[_Read] = []
    if journal_data is not None:
        journal_records = (
            _read_journal(journal, folder, journal_data)
            if fast_journal is None
            else fast_journal.records()
        )
    if not csv_records and not journal_records:
        if csv_data is not None or journal_data is not None:
            raise RegistryError(f"{path if csv_data is not None else journal}: holds no jobs")
        raise RegistryError(
            f"No registry file found at {path}. Please supply 'jobs' or ensure that "
            "'output_dir' contains a 'jobs_registry.csv' created by submit_pairs_multi_batch()."
        )
    merged = _merge(csv_records, journal_records)
    _check_against_run(folder, merged, journal if journal_records else path)
    return [(job, rev) for job, rev, _ in (merged[k] for k in sorted(merged))]


def read_registry(output_dir: str | os.PathLike[str]) -> list[Job]:
    """The jobs recorded in ``output_dir``, by segment: the newest record of each from the
    journal and the CSV. Raises :class:`RegistryError` naming the file and row for any
    damage."""
    return [job for job, _ in read_registry_revs(output_dir)]


def write_registry(output_dir: str | os.PathLike[str], jobs: Iterable[Job]) -> Path:
    """Atomically write a whole registry (journal snapshot and CSV); returns the CSV."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    numbered = [(job, 0) for job in jobs]
    atomic_write_bytes(journal_path(folder), _journal_bytes(numbered, folder))
    atomic_write_bytes(registry_path(folder), _csv_bytes(numbered, folder))
    return registry_path(folder)


# ---------------------------------------------------------------- live registry


def repair_torn_tail(path: Path) -> bool:
    """Cut a torn last journal line away (a crash mid-append), so the next append starts
    on a line of its own. Only a writer holding the run lock may call this. Returns
    whether anything was cut."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    return len(_repair_tail(path, data)) < len(data)


def _repair_tail(path: Path, data: bytes) -> bytes:
    """:func:`repair_torn_tail` of the journal's bytes ``data``; returns them as they
    are on disk afterwards, so the caller need not read the file again."""
    lines, torn = _journal_lines(data)
    if not torn:
        return data
    try:
        orjson.loads(lines[-1])
    except orjson.JSONDecodeError:
        keep = len(data) - len(lines[-1])
        with path.open("r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
        log.warning("cut a torn last line (%d bytes) from %s", len(lines[-1]), path)
        return data[:keep]
    # A whole record that lost only its newline: keep it, end its line.
    with path.open("ab") as handle:
        handle.write(b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return data + b"\n"


class Registry:
    """A registry kept true on disk while the engine runs (use it under the run lock).

    ``await record(job)`` returns once the transition is durable in the journal. Records
    made while a write is in flight are committed together (one append, one fsync), so a
    thousand jobs finishing at once cost a handful of disk flushes, not a thousand. The
    journal is compacted once it holds ``compact_factor`` times as many lines as there
    are jobs, after the records that triggered it are already acknowledged.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        jobs: Iterable[Job | tuple[Job, int]] = (),
        *,
        csv: bool = True,
        fsync: bool = True,
        compact_factor: float = 4.0,
        compact_min: int = 256,
    ) -> None:
        self.path = registry_path(output_dir)
        self.journal_path = journal_path(output_dir)
        self._base = self.path.parent
        self._root = os.path.abspath(self._base)
        self._jobs: dict[int, Job] = {}
        self._revs: dict[int, int] = {}
        for item in jobs:
            job, rev = item if isinstance(item, tuple) else (item, 0)
            self._jobs[job.segment_index] = job
            self._revs[job.segment_index] = rev
        self._rev = max(self._revs.values(), default=0)
        self.csv = csv
        self._fsync = fsync
        self._compact_factor = compact_factor
        self._compact_min = compact_min
        self._pending: list[Job] = []
        self._journal_lines = 0
        self._committed: asyncio.Future[None] | None = None
        self._committer: asyncio.Task[None] | None = None

    @classmethod
    def open(
        cls, output_dir: str | os.PathLike[str], *, csv: bool = False, fsync: bool = True
    ) -> Registry:
        """The writer for an existing registry (blocking: call it in a thread, under the
        lock). Cuts a torn journal tail first; writes the CSV only if ``csv`` is true or
        one exists. Each file is read once: the journal's bytes serve the repair, the
        reading and the line count."""
        folder = Path(output_dir)
        journal = _read_bytes(journal_path(folder))
        if journal is not None:
            journal = _repair_tail(journal_path(folder), journal)
        csv_data = _read_bytes(registry_path(folder))
        records = _read_revs(folder, csv_data, journal)
        registry = cls(folder, records, csv=csv or csv_data is not None, fsync=fsync)
        registry._journal_lines = journal.count(b"\n") if journal is not None else 0
        return registry

    @property
    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.segment_index)

    def adopt(self, job: Job) -> None:
        """Add a job the registry has no record of (durable at the next write)."""
        self._rev += 1
        self._jobs[job.segment_index] = job
        self._revs[job.segment_index] = self._rev

    def write_now(self) -> None:
        """Synchronously write the whole registry (its first version, or a snapshot)."""
        self._compact(self._snapshot())

    def _snapshot(self) -> list[tuple[Job, int]]:
        return [(self._jobs[k], self._revs[k]) for k in sorted(self._jobs)]

    async def record(self, job: Job) -> None:
        """Record a transition; returns when it is on disk."""
        self._rev += 1
        self._jobs[job.segment_index] = job
        self._revs[job.segment_index] = self._rev
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
            lines = [(job, self._revs[job.segment_index]) for job in batch]
            try:
                await to_thread(self._append, lines)
            except BaseException as exc:
                if waiter is not None and not waiter.done():
                    waiter.set_exception(exc)
                raise
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if self._journal_lines >= max(
                self._compact_min, self._compact_factor * len(self._jobs)
            ):
                # After the waiters are answered: compaction is off the transitions' path.
                await to_thread(self._compact, self._snapshot())

    def _append(self, lines: list[tuple[Job, int]]) -> None:
        payload = b"".join(orjson.dumps(_job_record(j, self._root, r)) + b"\n" for j, r in lines)
        with self.journal_path.open("ab") as handle:
            handle.write(payload)
            handle.flush()
            if self._fsync:
                os.fsync(handle.fileno())
        self._journal_lines += len(lines)

    def _compact(self, snapshot: list[tuple[Job, int]]) -> None:
        self._base.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(
            self.journal_path, _journal_bytes(snapshot, self._base), fsync=self._fsync
        )
        self._journal_lines = len(snapshot)
        if self.csv:
            atomic_write_bytes(self.path, _csv_bytes(snapshot, self._base), fsync=self._fsync)

    async def close(self) -> None:
        """Wait for pending records, then write the snapshot (journal, and CSV if kept)."""
        if self._committer is not None:
            with contextlib.suppress(Exception):
                await self._committer
        if self._jobs:
            await to_thread(self._compact, self._snapshot())


__all__ = [
    "COLUMNS",
    "EXTRA_COLUMNS",
    "JOURNAL_NAME",
    "REFERENCE_COLUMNS",
    "REGISTRY_NAME",
    "SETTINGS_NAME",
    "Registry",
    "holds_registry",
    "journal_path",
    "read_registry",
    "read_registry_revs",
    "registry_path",
    "repair_torn_tail",
    "write_registry",
]
