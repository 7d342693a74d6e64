"""Claiming a run folder for a new submit: made if needed, locked, never over a live run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from pathlib import Path

from pairbatch.errors import InputError, PairbatchError
from pairbatch.lock import RunLock
from pairbatch.models import Job, JobStatus
from pairbatch.registry import JOURNAL_NAME, REGISTRY_NAME, holds_registry, read_registry
from pairbatch.settings import SETTINGS_NAME

log = logging.getLogger("pairbatch.submit")
TAG = "[submit_pairs_multi_batch]"


async def lock_new_run(
    output_dir: str | os.PathLike[str] | None, overwrite: bool
) -> tuple[Path, RunLock, bool]:
    """The run folder, made if needed and locked, and whether this call made it;
    refused if it holds a live run."""
    out_dir, created_dir = await asyncio.to_thread(_claim_folder, output_dir, overwrite)
    lock = RunLock(out_dir, "submit")
    try:
        await asyncio.to_thread(lock.acquire)
        await asyncio.to_thread(_refuse_live_run, out_dir, overwrite)
    except BaseException:
        await asyncio.to_thread(abandon_new_run, out_dir, lock, created_dir)
        raise
    if output_dir is None:
        log.warning("%s no output_dir given; the run folder is %s", TAG, out_dir)
    return out_dir, lock, created_dir


def abandon_new_run(folder: Path, lock: RunLock, created: bool) -> None:
    """Undo claiming a folder for a submit that stopped before recording any intent: a
    folder this submit made is removed again, so a refused submit leaves nothing."""
    lock.release()
    if created:
        with contextlib.suppress(OSError):
            lock.path.unlink()
        _remove_empty(folder)


def check_new_run_folder(output_dir: str | os.PathLike[str] | None, overwrite: bool) -> None:
    """Refuse a folder a new run cannot go into, reading only (blocking)."""
    if output_dir is None:
        return
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"output_dir {folder} is a file, not a folder")
    _refuse_live_run(folder, overwrite, remove=False)


def _claim_folder(output_dir: str | os.PathLike[str] | None, overwrite: bool) -> tuple[Path, bool]:
    """The run folder (made if needed) and whether this call made it."""
    if output_dir is None:
        return Path(tempfile.mkdtemp(prefix="pairbatch_")), True
    folder = Path(output_dir)
    check_new_run_folder(folder, overwrite)  # refuse before writing anything
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"output_dir {folder}: cannot be created ({exc.strerror})") from None
    return folder, created


def _refuse_live_run(folder: Path, overwrite: bool, *, remove: bool = True) -> None:
    """A folder holding a run is never silently replaced: its batches may be paid for.

    Files without a registry are what a submit killed before recording its intents
    leaves: no create was ever sent, so a new submit may write over them."""
    if not holds_registry(folder):
        return
    try:
        jobs = read_registry(folder)
    except PairbatchError as exc:
        raise InputError(
            f"output_dir {folder} already holds a run whose registry cannot be read ({exc}); "
            "choose another folder"
        ) from None
    unfinished = [j for j in jobs if not j.done and j.status is not JobStatus.SUBMIT_FAILED]
    if not overwrite:
        raise InputError(
            f"output_dir {folder} already holds a run ({len(jobs)} segment(s), "
            f"{len(unfinished)} not done); resume it with `pairbatch resume {folder}` or "
            "choose another folder"
        )
    live = [j for j in unfinished if j.batch_id is not None or j.status is JobStatus.CREATING]
    if live:
        raise InputError(
            f"output_dir {folder}: overwrite refused, {len(live)} batch(es) of the run there "
            "are not done (resume or cancel them first)"
        )
    if not remove:  # only ever under the run lock
        return
    for job in jobs:
        for name in _job_files(job):
            with contextlib.suppress(FileNotFoundError):
                Path(name).unlink()
    for name in (REGISTRY_NAME, JOURNAL_NAME, SETTINGS_NAME):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()


def _job_files(job: Job) -> list[str]:
    paths = [job.batch_input_path, job.batch_output_path, job.csv_path, job.pairs_path]
    paths += [job.results_path, job.failed_path, job.error_output_path]
    return [p for p in paths if p]


def _remove_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()
