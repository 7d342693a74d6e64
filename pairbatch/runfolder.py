"""Run folders: claiming one for a new submit (made if needed, locked, never over a live
run), and opening one to resume (its jobs, registry writer and settings)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from pairbatch.errors import InputError, PairbatchError, RegistryError
from pairbatch.lock import RunLock
from pairbatch.models import Job, JobStatus
from pairbatch.registry import (
    JOURNAL_NAME,
    REGISTRY_NAME,
    Registry,
    holds_registry,
    read_registry,
    registry_path,
)
from pairbatch.settings import SETTINGS_NAME, read_settings

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


# ---------------------------------------------------------------- opening a run to resume

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def resolve_combined_path(output_dir: Path, combined_csv_path: str | None) -> Path:
    """Reference rules: a bare file name goes under ``output_dir``; a path that is
    absolute (``/``, ``~/``, ``C:``) or has a folder part is used exactly as given."""
    if not combined_csv_path:
        return output_dir / "combined_results.csv"
    if (
        combined_csv_path.startswith(("/", "~"))
        or _WINDOWS_DRIVE.match(combined_csv_path)
        or str(Path(combined_csv_path).parent) != "."
    ):
        return Path(combined_csv_path).expanduser()
    return output_dir / combined_csv_path


def _coerce_job(value: Job | Mapping[str, Any]) -> Job:
    if isinstance(value, Job):
        return value
    if isinstance(value, Mapping):
        fields = {f.name for f in attrs.fields(Job)}
        unknown = set(value) - fields - {"pairs", "results", "failed_attempts", "batch_failure"}
        if unknown:
            raise InputError(f"job has unknown field(s): {', '.join(sorted(unknown))}")
        try:
            return Job(**{k: v for k, v in value.items() if k in fields})
        except (TypeError, ValueError) as exc:
            raise InputError(f"invalid job {dict(value)!r}: {exc}") from None
    raise InputError(f"jobs must be Job objects or mappings, not {type(value).__name__}")


def load_jobs(
    jobs: Sequence[Job | Mapping[str, Any]] | None, output_dir: str | os.PathLike[str] | None
) -> tuple[list[Job], Path]:
    """Jobs from the argument (validated) or none, and the run folder."""
    if jobs is None:
        if output_dir is None:
            raise InputError(
                "Either 'jobs' must be supplied or 'output_dir' must be provided to load a "
                "registry from disk."
            )
        return [], Path(output_dir)
    loaded = [_coerce_job(j) for j in jobs]
    if output_dir is None:
        if not loaded:
            raise InputError("'jobs' is empty and no 'output_dir' was given")
        output_dir = Path(loaded[0].batch_output_path).parent
    seen: set[int] = set()
    for job in loaded:
        if job.segment_index in seen:
            raise InputError(f"jobs: segment_index {job.segment_index} appears twice")
        seen.add(job.segment_index)
    return loaded, Path(output_dir)


def open_run(given: list[Job], output_dir: Path, *, csv: bool) -> tuple[Registry, dict[str, Any]]:
    """The run's registry writer and settings (blocking; call it under the run lock).

    The registry on disk is the truth: a given job replaces a recorded one only when the
    folder has no record of its segment (a registry from elsewhere, or none at all).
    """
    if not output_dir.is_dir():
        raise InputError(f"output_dir {output_dir} is not a folder")
    settings = read_settings(output_dir)
    if holds_registry(output_dir):
        registry = Registry.open(output_dir, csv=csv)
        recorded = {job.segment_index for job in registry.jobs}
        extra = [job for job in given if job.segment_index not in recorded]
        for job in extra:
            registry.adopt(job)
        return registry, settings
    if not given:
        if settings:
            raise RegistryError(
                f"No registry file found at {registry_path(output_dir)}: the submit that made "
                "this folder stopped before recording its intents, so no batch was sent. "
                "Run the submit again (into this folder or another)."
            )
        raise RegistryError(
            f"No registry file found at {registry_path(output_dir)}. Please supply 'jobs' or "
            "ensure that 'output_dir' contains a 'jobs_registry.csv' created by "
            "submit_pairs_multi_batch()."
        )
    registry = Registry(output_dir, given, csv=csv)
    registry.write_now()
    return registry, settings


def known_segments(redownload: Iterable[int], given: list[Job], output_dir: Path) -> frozenset[int]:
    """``redownload`` as a set, refused if it names a segment the run does not have
    (a typo would otherwise fetch nothing, silently); reads only (blocking)."""
    wanted = frozenset(redownload)
    if not wanted:
        return wanted
    recorded = read_registry(output_dir) if holds_registry(output_dir) or not given else []
    known = {job.segment_index for job in [*given, *recorded]}
    unknown = sorted(wanted - known)
    if unknown:
        have = f"segments {min(known)}-{max(known)}" if known else "no segments"
        raise InputError(
            f"redownload: segment(s) {', '.join(map(str, unknown))} not in this run ({have})"
        )
    return wanted
