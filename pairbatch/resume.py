"""Resume: poll every unfinished job concurrently, download and parse as each one finishes.

Every unfinished job is its own task. A task waits for its provider's token bucket and the
global request semaphore (both inside the transport), polls, and sleeps its own interval:
there are no rounds that wait for the slowest job. A finished batch is streamed to disk
and parsed in a worker thread while the others keep polling. Each transition is recorded
in the registry before the task goes on, and a job's results land on disk before the
registry says it is done, so a process killed at any instant resumes where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import re
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import polars as pl

from pairbatch.errors import (
    InputError,
    PairbatchError,
    ProviderError,
    ProviderUnreachableError,
    RegistryError,
    RetryExhaustedError,
    UnresolvedBatchError,
)
from pairbatch.events import Emitter, Event, EventHandler, EventKind, verbose_logging
from pairbatch.integrity import DamagedFileError, describe, verify
from pairbatch.lock import RunLock
from pairbatch.models import BatchState, BatchStatus, FileCheck, Job, JobStatus, Provider, utcnow
from pairbatch.normalize import (
    empty_combined,
    empty_failed,
    failed_attempts_from_pairs,
    normalize_results,
)
from pairbatch.outcomes import (
    JobOutcome,
    batch_failure_frame,
    concat_frames,
    empty_batch_failures,
    load_outcome,
    persist_outcome,
)
from pairbatch.outcomes import write_combined_csv as write_combined_csv_file
from pairbatch.pairs import read_segment_pairs
from pairbatch.providers import get_backend
from pairbatch.providers.base import Downloaded, write_request_file
from pairbatch.reconcile import Reconciler, Verdict
from pairbatch.registry import Registry, holds_registry, read_registry, registry_path
from pairbatch.session import Session
from pairbatch.settings import SETTINGS_NAME, by_provider, read_settings, require_settings
from pairbatch.transport import DEFAULT_RATE, Transport

log = logging.getLogger("pairbatch.resume")

TAG = "[resume_multi_batches]"
# Statuses that mean the job can never succeed by polling again (wrong key, gone batch).
_PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 410, 422})
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


@attrs.frozen(kw_only=True)
class ResumeOptions:
    """The arguments of :func:`resume_multi_batches` that shape each job's work."""

    interval_seconds: float = 60.0
    write_results_csv: bool = False
    keep_jsonl: bool = True
    tag_prefix: str = "<BETTER_SAMPLE>"
    tag_suffix: str = "</BETTER_SAMPLE>"
    verbose: bool = False
    max_interval_seconds: float | None = None
    jitter: float = 0.1

    def next_delay(self, job: Job, status: BatchStatus | None, rng: random.Random) -> float:
        """Seconds until a job's next poll.

        ``interval_seconds`` is the base. A batch still validating, or one that has run a
        long time, is polled less often (up to 4x the base, or ``max_interval_seconds``):
        it is unlikely to change soon, and the saved requests go to jobs that will.
        """
        base = self.interval_seconds
        factor = 1.0
        if status is not None and status.state is BatchState.PENDING:
            factor = 1.5
        if job.submitted_at is not None:
            age_hours = max((utcnow() - job.submitted_at).total_seconds(), 0.0) / 3600
            factor *= 1.0 + min(age_hours, 3.0)
        cap = self.max_interval_seconds if self.max_interval_seconds is not None else base * 4
        delay = min(base * factor, max(cap, base))
        return max(delay * (1.0 + rng.uniform(-self.jitter, self.jitter)), 0.0)


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


def rebuild_request_file(job: Job, settings: Mapping[str, Any], pairs: pl.DataFrame) -> FileCheck:
    """Write a segment's request file again from its stored pairs and the run settings:
    the same bytes submit wrote (blocking)."""
    needed = ("prompt_template", "trait_name", "trait_description", "options", "model")
    absent = [k for k in needed if k not in settings]
    if absent:
        raise InputError(
            f"segment {job.segment_index}: request file {job.batch_input_path} is missing and "
            f"cannot be rebuilt: {SETTINGS_NAME} has no {', '.join(absent)}"
        )
    write_request_file(
        get_backend(job.provider),
        job.batch_input_path,
        pairs,
        model=job.model,
        template=str(settings["prompt_template"]),
        trait_name=str(settings["trait_name"]),
        trait_description=str(settings["trait_description"]),
        options=dict(settings["options"]),
    )
    return describe(job.batch_input_path, rows=pairs.height, hashed=True)


class _Run:
    """The state of one resume call: its jobs, registry, connections and queue."""

    def __init__(
        self,
        jobs: list[Job],
        output_dir: Path,
        options: ResumeOptions,
        session: Session,
        registry: Registry,
        emit: Emitter,
        settings: Mapping[str, Any],
    ) -> None:
        self.jobs = {job.segment_index: job for job in jobs}
        self.output_dir = output_dir
        self.options = options
        self.session = session
        self.registry = registry
        self.emit = emit
        self.settings = settings
        self.reconciler = Reconciler(session.client, lambda: self.jobs.values())
        self.rng = random.Random()
        self.level = logging.INFO if options.verbose else logging.DEBUG

    def say(self, message: str, *args: object) -> None:
        log.log(self.level, f"{TAG} {message}", *args)

    async def record(self, job: Job) -> Job:
        self.jobs[job.segment_index] = job
        await self.registry.record(job)
        return job

    # ------------------------------------------------------------ one job

    async def drive(self, job: Job) -> JobOutcome:
        """Take one job from wherever it is to done (or a recorded permanent error)."""
        try:
            if job.batch_id is None:
                job = await self.obtain_batch(job)
            return await self.poll_until_done(job)
        except ProviderUnreachableError:
            raise  # the whole run stops: every job of that provider would fail the same way
        except (ProviderError, PairbatchError, OSError, pl.exceptions.PolarsError) as exc:
            # One job's permanent error must not stop the others: record it on the job.
            job = self.jobs.get(job.segment_index, job)
            log.error("%s segment %d (%s): %s", TAG, job.segment_index, job.provider, exc)
            job = await self.record(job.transition(status=JobStatus.ERROR, error=str(exc)))
            self.emit(Event(EventKind.ERROR, job, detail=str(exc)))
            return JobOutcome(job, None, None, error=str(exc))

    async def obtain_batch(self, job: Job) -> Job:
        """A segment with no batch id: adopt the batch its create made (proven), or send
        the create, never both (see :mod:`pairbatch.reconcile`)."""
        if not self._never_sent(job):
            while True:
                resolution = await self.reconciler.resolve(job)
                if resolution.verdict is not Verdict.WAIT:
                    break
                if job.error != resolution.reason:
                    job = await self.record(job.transition(error=resolution.reason))
                self.say("%s", resolution.reason)
                self.emit(Event(EventKind.RETRY, job, detail=resolution.reason))
                await asyncio.sleep(self.options.next_delay(job, None, self.rng))
            if resolution.verdict is Verdict.ADOPT:
                self.say(
                    "segment %d: adopted existing batch %s", job.segment_index, resolution.batch_id
                )
                job = await self.record(
                    job.transition(
                        batch_id=resolution.batch_id,
                        status=JobStatus.PENDING,
                        submitted_at=utcnow(),
                        error=None,
                    )
                )
                self.emit(Event(EventKind.SUBMITTED, job, detail=job.batch_id))
                return job
        path, options, files = await asyncio.to_thread(self.sendable, job)
        job = attrs.evolve(job, files=files)
        try:
            job = await self.reconciler.send(job, path, options, self.record)
        except UnresolvedBatchError as exc:
            job = self.jobs.get(job.segment_index, job)
            raise PairbatchError(str(exc)) from None
        self.say("segment %d: submitted batch %s", job.segment_index, job.batch_id)
        self.emit(Event(EventKind.SUBMITTED, job, detail=job.batch_id))
        return job

    def _never_sent(self, job: Job) -> bool:
        """Whether the registry proves no create was ever sent for ``job``."""
        if job.status is JobStatus.SUBMIT_FAILED:
            return True
        # Before format 2, "intent" was recorded just before the create was sent.
        return job.status is JobStatus.INTENT and self.settings.get("format", 1) >= 2

    def sendable(self, job: Job) -> tuple[Path, dict[str, Any], tuple[FileCheck, ...]]:
        """The request file to send (checked, or rebuilt when missing), the submit call's
        options and the job's file records (blocking: run in a thread)."""
        settings = require_settings(self.output_dir, "options", "provider")
        if settings.get("provider") != job.provider.value:
            raise InputError(
                f"{self.output_dir / SETTINGS_NAME} is for provider {settings.get('provider')!r}, "
                f"not segment {job.segment_index}'s {job.provider.value!r}"
            )
        options = dict(settings["options"])
        path = Path(job.batch_input_path)
        if path.exists():
            verify(
                path,
                job.file_check(path),
                remedy="delete it to have it rebuilt from the segment's pairs",
            )
            return path, options, job.files
        rebuilt = rebuild_request_file(job, settings, _segment_pairs(job))
        log.warning(
            "%s segment %d: request file %s was missing; rebuilt", TAG, job.segment_index, path
        )
        return path, options, job.with_files(rebuilt)

    async def poll_until_done(self, job: Job) -> JobOutcome:
        client = self.session.client(job.provider)
        assert job.batch_id is not None
        status: BatchStatus | None = None
        first = True
        while True:
            if not first:
                await asyncio.sleep(self.options.next_delay(job, status, self.rng))
            first = False
            self.say(
                "Polling segment %d (provider=%s, id=%s)...",
                job.segment_index,
                job.provider,
                job.batch_id,
            )
            try:
                status = await client.status(job.batch_id)
            except ProviderError as exc:
                if isinstance(exc, RetryExhaustedError) or exc.status not in _PERMANENT_STATUSES:
                    job = await self.unreachable(job, exc)
                    continue
                raise
            self.say("%s batch %s status: %s", job.provider, job.batch_id, status.raw_state)
            self.emit(Event(EventKind.POLLED, job, detail=status.raw_state))
            if (status.raw_state != job.raw_status or job.error) and not status.state.is_terminal:
                job = await self.record(
                    job.transition(
                        status=JobStatus.from_state(status.state),
                        raw_status=status.raw_state,
                        error=None,
                    )
                )
            if status.state.is_terminal:
                try:
                    return await self.finish(job, status)
                except RetryExhaustedError as exc:
                    self.say(
                        "Failed to download %s batch %s after retries; will retry: %s",
                        job.provider,
                        job.batch_id,
                        exc,
                    )
                    job = await self.unreachable(job, exc)

    async def unreachable(self, job: Job, exc: ProviderError) -> Job:
        """A poll or download that failed after its retries: the reason goes on the job
        (registry, status, progress) and it polls again later. A provider that has not
        answered once in this run stops the run with one line instead."""
        provider = job.provider.value
        if exc.error_type == "connect" and not self.session.transport.counters(provider).get(
            "responses"
        ):
            raise ProviderUnreachableError(
                f"{provider} cannot be reached: {exc.message}; check its base URL and network"
            ) from None
        self.say("Error retrieving %s batch %s: %s", job.provider, job.batch_id, exc)
        self.emit(Event(EventKind.RETRY, job, detail=str(exc)))
        if job.error != str(exc):
            job = await self.record(job.transition(error=str(exc)))
        return job

    async def finish(self, job: Job, status: BatchStatus) -> JobOutcome:
        """Download a terminal batch, settle it on disk, then mark it done."""
        client = self.session.client(job.provider)
        downloaded: Downloaded | None = None
        has_output = status.output_ref is not None or status.error_ref is not None
        if status.state is BatchState.SUCCEEDED or has_output:
            downloaded = await client.download(job, status)
        # Everything else is file and CPU work: one trip to a worker thread, not one per
        # step, so the event loop keeps its requests on time.
        results, failed, failure, files = await asyncio.to_thread(
            _settle, job, status, downloaded, self.options
        )
        job = await self.record(
            job.transition(
                done=True,
                status=JobStatus.from_state(status.state),
                raw_status=status.raw_state,
                error=None,
                files=job.with_files(*files),
            )
        )
        n_results = 0 if results is None else results.height
        n_failed = 0 if failed is None else failed.height
        kind = EventKind.COMPLETED if failure is None else EventKind.BATCH_FAILED
        self.emit(Event(kind, job, detail=status.raw_state, n_results=n_results, n_failed=n_failed))
        return JobOutcome(job, results, failed, failure)

    def progress(self) -> None:
        done = sum(j.done for j in self.jobs.values())
        total = len(self.jobs)
        self.say("Completed %d of %d jobs; %d remaining.", done, total, total - done)


def _delete_jsonl(job: Job) -> None:
    for path in (job.batch_input_path, job.batch_output_path, job.error_output_path):
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()


def _settle(
    job: Job, status: BatchStatus, downloaded: Downloaded | None, options: ResumeOptions
) -> tuple[pl.DataFrame | None, pl.DataFrame, pl.DataFrame | None, tuple[FileCheck, ...]]:
    """Parse, normalise and persist a terminal batch (blocking; run in a worker thread).

    Returns its results (``None`` when the batch produced none), failed attempts, for a
    batch that did not succeed its one-row batch failure, and the records of the files
    written.
    """
    pairs = _segment_pairs(job)
    received_at = utcnow()
    word = status.outcome
    results: pl.DataFrame | None = None
    if downloaded is not None:
        raw = _parse(get_backend(job.provider), downloaded, options.tag_prefix, options.tag_suffix)
        _reconcile_counts(job, status, raw.height)
        normalized = normalize_results(
            raw,
            pairs,
            backend=job.provider.value,
            model=job.model,
            segment_index=job.segment_index,
            batch_id=job.batch_id,
            received_at=received_at,
            batch_status=None if status.state is BatchState.SUCCEEDED else word,
        )
        results, failed = normalized.results, normalized.failed_attempts
    else:
        failed = failed_attempts_from_pairs(
            pairs,
            backend=job.provider.value,
            model=job.model,
            error_code="http_error",
            error_detail=f"Batch status: {status.raw_state}",
            attempted_at=received_at,
            segment_index=job.segment_index,
            batch_id=job.batch_id,
        )
    failure = None
    if status.state is not BatchState.SUCCEEDED:
        detail = f"Batch status: {word}"
        if results is not None and results.height:
            detail += f" ({results.height} of {pairs.height} results salvaged)"
        failure = batch_failure_frame(job, word, detail, received_at)
    files = persist_outcome(
        job,
        results,
        failed,
        write_results_csv=options.write_results_csv and results is not None,
    )
    if status.state is BatchState.SUCCEEDED and not options.keep_jsonl:
        _delete_jsonl(job)
    return results, failed, failure, files


def _segment_pairs(job: Job) -> pl.DataFrame:
    """The segment's stored pairs, checked against what submit wrote."""
    if not job.pairs_path:
        raise InputError(
            f"Missing pair data for segment {job.segment_index}; unable to normalize results."
        )
    path = Path(job.pairs_path)
    remedy = "restore it from a backup (its pairs cannot be matched to results without it)"
    try:
        pairs = read_segment_pairs(path)
    except (InputError, FileNotFoundError):
        raise DamagedFileError(path, "the file is missing", remedy) from None
    except (OSError, pl.exceptions.PolarsError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DamagedFileError(path, f"cannot be read ({first})", remedy) from None
    verify(path, job.file_check(path), rows=pairs.height, remedy=remedy)
    if job.n_pairs and pairs.height != job.n_pairs:
        raise DamagedFileError(
            path, f"holds {pairs.height} pairs but the segment has {job.n_pairs}", remedy
        )
    return pairs


def _parse(backend: Any, downloaded: Downloaded, prefix: str, suffix: str) -> pl.DataFrame:
    frames = []
    if downloaded.output_path is not None:
        frames.append(
            backend.parse_results(
                downloaded.output_path,
                error_path=downloaded.error_path,
                tag_prefix=prefix,
                tag_suffix=suffix,
            )
        )
    elif downloaded.error_path is not None:
        # A completed OpenAI batch whose every request failed has only an error file.
        frames.append(
            backend.parse_results(
                downloaded.error_path, error_path=None, tag_prefix=prefix, tag_suffix=suffix
            )
        )
    frame = concat_frames(frames)
    if frame is None:
        frame = backend.parse_results(None, error_path=None, tag_prefix=prefix, tag_suffix=suffix)
    return frame


def _reconcile_counts(job: Job, status: BatchStatus, lines: int) -> None:
    counts = status.counts
    expected = None
    if counts.succeeded is not None or counts.failed is not None:
        expected = (counts.succeeded or 0) + (counts.failed or 0)
    if status.state is BatchState.SUCCEEDED and counts.total is not None:
        expected = counts.total
    if expected is not None and expected != lines:
        log.warning(
            "%s segment %d: provider reports %d finished requests but %d result lines were "
            "downloaded",
            TAG,
            job.segment_index,
            expected,
            lines,
        )


def _rate_limits(
    per_job_delay: float | None, rate_limits: Mapping[str, float] | None
) -> dict[str, float]:
    if per_job_delay is not None:
        delay = _check_number("per_job_delay", per_job_delay, low=0)
        if delay == 0:
            raise InputError("'per_job_delay' must be positive, got 0")
        # Compatibility: one request per per_job_delay seconds, for each provider.
        return {p.value: 1.0 / delay for p in Provider}
    limits = {p.value: DEFAULT_RATE for p in Provider}
    for name, rate in by_provider(rate_limits, "rate_limits").items():
        value = _check_number(f"rate_limits[{name.value!r}]", rate, low=0)
        if value == 0:
            raise InputError(f"'rate_limits[{name.value!r}]' must be positive, got 0")
        limits[name.value] = value
    return limits


async def iter_completed(
    jobs: Sequence[Job | Mapping[str, Any]] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    interval_seconds: float = 60,
    per_job_delay: float | None = None,
    write_results_csv: bool = False,
    keep_jsonl: bool = True,
    write_registry: bool = False,
    tag_prefix: str = "<BETTER_SAMPLE>",
    tag_suffix: str = "</BETTER_SAMPLE>",
    verbose: bool = False,
    openai_max_retries: int = 3,
    *,
    max_concurrency: int = 32,
    rate_limits: Mapping[str, float] | None = None,
    max_tries: int = 5,
    max_interval_seconds: float | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - an overall deadline, not a per-call one
    api_keys: Mapping[str, str] | None = None,
    base_urls: Mapping[str, str] | None = None,
    transport: Transport | None = None,
    on_event: EventHandler | None = None,
    redownload: Iterable[int] | bool = (),
) -> AsyncGenerator[JobOutcome, None]:
    """Yield each job's :class:`JobOutcome` the moment its results are on disk.

    Jobs already done in the registry are yielded first, read back from disk (and checked
    against what was written) with no provider calls; a done job whose files are missing
    or damaged yields an outcome whose ``error`` names the file. ``redownload`` (segment
    numbers, or ``True`` for every such job) fetches their results again instead. The
    run folder is locked for the whole iteration: a second writer is refused. Use
    ``contextlib.aclosing`` (or ``async for`` to the end) so that stopping early cancels
    the polling tasks and leaves the registry consistent. Arguments are those of
    :func:`resume_multi_batches`, less the combined-CSV ones.
    """
    _check_number("interval_seconds", interval_seconds, low=0)
    if max_interval_seconds is not None:
        _check_number("max_interval_seconds", max_interval_seconds, low=0)
    if timeout is not None:
        _check_number("timeout", timeout, low=0)
    for name, value in (
        ("openai_max_retries", openai_max_retries),
        ("max_tries", max_tries),
        ("max_concurrency", max_concurrency),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"'{name}' must be an integer >= 1, got {value!r}")
    given, out_dir = await asyncio.to_thread(load_jobs, jobs, output_dir)
    options = ResumeOptions(
        interval_seconds=float(interval_seconds),
        write_results_csv=write_results_csv,
        keep_jsonl=keep_jsonl,
        tag_prefix=tag_prefix,
        tag_suffix=tag_suffix,
        verbose=verbose,
        max_interval_seconds=max_interval_seconds,
    )
    limits = _rate_limits(per_job_delay, rate_limits)
    tries = {p.value: max_tries for p in Provider} | {"openai": openai_max_retries}
    session = Session(
        transport=transport,
        api_keys=api_keys,
        base_urls=base_urls,
        max_concurrency=max_concurrency,
        rate_limits=limits,
        # The reference paced one request at a time; keep that when asked for it.
        bursts={p.value: 1.0 for p in Provider} if per_job_delay is not None else None,
        max_tries=tries,
    )
    lock = RunLock(out_dir, "resume")
    if not await asyncio.to_thread(out_dir.is_dir):
        raise InputError(f"output_dir {out_dir} is not a folder")
    await asyncio.to_thread(lock.acquire)
    try:
        registry, settings = await asyncio.to_thread(open_run, given, out_dir, csv=write_registry)
        run = _Run(
            registry.jobs, out_dir, options, session, registry, Emitter(on_event, log), settings
        )
        with verbose_logging(verbose):
            async with contextlib.aclosing(_drive_all(run, session, timeout, redownload)) as gen:
                async for outcome in gen:
                    yield outcome
    finally:
        lock.release()


async def _drive_all(
    run: _Run, session: Session, deadline_s: float | None, redownload: Iterable[int] | bool
) -> AsyncGenerator[JobOutcome, None]:
    """Yield done jobs from disk, then drive the rest concurrently (under the lock)."""
    wanted = redownload if isinstance(redownload, bool) else frozenset(redownload)
    tasks: list[asyncio.Task[JobOutcome]] = []
    entered = False
    try:
        pending_jobs = [job for job in run.jobs.values() if not job.done]
        for job in [j for j in run.jobs.values() if j.done]:
            asked = wanted is True or (not isinstance(wanted, bool) and job.segment_index in wanted)
            outcome = None if asked and job.batch_id else await asyncio.to_thread(load_outcome, job)
            if outcome is None or (outcome.error and wanted is True):
                # Fetched again from the provider: the results are re-derived, not guessed.
                pending_jobs.append(await run.record(job.transition(done=False)))
                continue
            yield outcome
        if not pending_jobs:
            return
        await session.__aenter__()
        entered = True
        loop = asyncio.get_running_loop()
        deadline = None if deadline_s is None else loop.time() + deadline_s
        tasks = [
            asyncio.create_task(run.drive(job), name=f"pairbatch-segment-{job.segment_index}")
            for job in sorted(pending_jobs, key=lambda j: j.segment_index)
        ]
        waiting: set[asyncio.Task[JobOutcome]] = set(tasks)
        while waiting:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                log.warning("%s timeout reached; %d job(s) unfinished", TAG, len(waiting))
                break
            finished, waiting = await asyncio.wait(
                waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            for task in sorted(finished, key=lambda t: t.get_name()):
                outcome = task.result()
                run.progress()
                yield outcome
    finally:
        # Stop the pollers before the connections they use, and fold the registry
        # last; shielded so a second cancellation cannot leave it half-closed.
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if entered:
            await session.__aexit__(None, None, None)
        await asyncio.shield(run.registry.close())


def _check_number(name: str, value: object, *, low: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < low
    ):
        raise InputError(f"'{name}' must be a finite number >= {low:g}, got {value!r}")
    return float(value)


@attrs.frozen
class ResumeResult:
    """What :func:`resume_multi_batches` returns (the reference's list, as attributes).

    Frames always have their declared columns, also when empty: ``combined`` (no rows
    when no pair has a result), ``failed_attempts`` and ``batch_failures``. ``errors``
    lists what kept a job from being complete (a damaged file, a permanent error).
    """

    jobs: list[Job]
    outcomes: list[JobOutcome]
    combined: pl.DataFrame
    failed_attempts: pl.DataFrame
    batch_failures: pl.DataFrame
    combined_csv_path: Path | None = None

    @property
    def errors(self) -> list[str]:
        return [o.error for o in self.outcomes if o.error]

    @property
    def all_done(self) -> bool:
        return all(job.done for job in self.jobs) and not self.errors


async def resume_multi_batches(
    jobs: Sequence[Job | Mapping[str, Any]] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    interval_seconds: float = 60,
    per_job_delay: float | None = None,
    write_results_csv: bool = False,
    keep_jsonl: bool = True,
    write_registry: bool = False,
    tag_prefix: str = "<BETTER_SAMPLE>",
    tag_suffix: str = "</BETTER_SAMPLE>",
    verbose: bool = False,
    write_combined_csv: bool = False,
    combined_csv_path: str | None = None,
    openai_max_retries: int = 3,
    *,
    max_concurrency: int = 32,
    rate_limits: Mapping[str, float] | None = None,
    max_tries: int = 5,
    max_interval_seconds: float | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - an overall deadline, not a per-call one
    api_keys: Mapping[str, str] | None = None,
    base_urls: Mapping[str, str] | None = None,
    transport: Transport | None = None,
    on_event: EventHandler | None = None,
    redownload: Iterable[int] | bool = (),
) -> ResumeResult:
    """Poll, download and parse every unfinished job; return the combined results.

    Same arguments and semantics as the reference ``llm_resume_multi_batches()``, with
    the per-job sleep replaced by concurrency under per-provider rate limits
    (``per_job_delay``, when given, sets every provider to one request per that many
    seconds). Jobs completed in earlier runs are included in ``combined``. The registry
    journal is always written; ``write_registry`` asks for the CSV snapshot as well (kept
    anyway when one exists). A ``transport`` passed in is shared as it is: its own rate
    limits apply, not ``rate_limits``. ``redownload``: see :func:`iter_completed`.
    """
    outcomes: dict[int, JobOutcome] = {}
    gen = iter_completed(
        jobs,
        output_dir,
        interval_seconds,
        per_job_delay,
        write_results_csv,
        keep_jsonl,
        write_registry,
        tag_prefix,
        tag_suffix,
        verbose,
        openai_max_retries,
        max_concurrency=max_concurrency,
        rate_limits=rate_limits,
        max_tries=max_tries,
        max_interval_seconds=max_interval_seconds,
        timeout=timeout,
        api_keys=api_keys,
        base_urls=base_urls,
        transport=transport,
        on_event=on_event,
        redownload=redownload,
    )
    async with contextlib.aclosing(gen):
        async for outcome in gen:
            outcomes[outcome.job.segment_index] = outcome
    _, out_dir = load_jobs(jobs, output_dir)
    recorded = await asyncio.to_thread(read_registry, out_dir)
    final_jobs = [
        outcomes[j.segment_index].job if j.segment_index in outcomes else j for j in recorded
    ]
    ordered = [outcomes[k] for k in sorted(outcomes)]
    combined = concat_frames([o.results for o in ordered if o.results is not None])
    failed = concat_frames([o.failed_attempts for o in ordered if o.failed_attempts is not None])
    failures = concat_frames([o.batch_failure for o in ordered if o.batch_failure is not None])
    combined = combined if combined is not None else empty_combined()
    written: Path | None = None
    with verbose_logging(verbose):
        if write_combined_csv:
            written = resolve_combined_path(out_dir, combined_csv_path)
            await asyncio.to_thread(write_combined_csv_file, combined, written)
            log.log(
                logging.INFO if verbose else logging.DEBUG,
                "%s Combined results written to %s",
                TAG,
                written,
            )
    return ResumeResult(
        jobs=final_jobs,
        outcomes=ordered,
        combined=combined,
        failed_attempts=failed if failed is not None else empty_failed(),
        batch_failures=failures if failures is not None else empty_batch_failures(),
        combined_csv_path=written,
    )
