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
import os
import random
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import polars as pl

from pairbatch.errors import (
    InputError,
    PairbatchError,
    ProviderError,
    RetryExhaustedError,
    UnresolvedBatchError,
)
from pairbatch.events import Emitter, Event, EventHandler, EventKind, verbose_logging
from pairbatch.models import BatchState, BatchStatus, Job, JobStatus, Provider, utcnow
from pairbatch.normalize import failed_attempts_from_pairs, normalize_results
from pairbatch.outcomes import (
    JobOutcome,
    batch_failure_frame,
    concat_frames,
    load_outcome,
    persist_outcome,
)
from pairbatch.outcomes import write_combined_csv as write_combined_csv_file
from pairbatch.pairs import read_segment_pairs
from pairbatch.providers import get_backend
from pairbatch.providers.base import Downloaded
from pairbatch.registry import Registry, read_registry, registry_path
from pairbatch.session import Session
from pairbatch.settings import read_settings
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
    """Jobs from the argument or the registry in ``output_dir``, and the run folder."""
    if jobs is None:
        if output_dir is None:
            raise InputError(
                "Either 'jobs' must be supplied or 'output_dir' must be provided to load a "
                "registry from disk."
            )
        return read_registry(output_dir), Path(output_dir)
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


class _Run:
    """The state of one resume call: its jobs, registry, connections and queue."""

    def __init__(
        self,
        jobs: list[Job],
        output_dir: Path,
        options: ResumeOptions,
        session: Session,
        registry: Registry | None,
        emit: Emitter,
    ) -> None:
        self.jobs = {job.segment_index: job for job in jobs}
        self.output_dir = output_dir
        self.options = options
        self.session = session
        self.registry = registry
        self.emit = emit
        self.rng = random.Random()
        self.level = logging.INFO if options.verbose else logging.DEBUG

    def say(self, message: str, *args: object) -> None:
        log.log(self.level, f"{TAG} {message}", *args)

    async def record(self, job: Job) -> Job:
        self.jobs[job.segment_index] = job
        if self.registry is not None:
            await self.registry.record(job)
        return job

    # ------------------------------------------------------------ one job

    async def drive(self, job: Job) -> JobOutcome:
        """Take one job from wherever it is to done (or a recorded permanent error)."""
        try:
            if job.batch_id is None:
                job = await self.adopt_or_submit(job)
            return await self.poll_until_done(job)
        except (ProviderError, PairbatchError, OSError, pl.exceptions.PolarsError) as exc:
            # One job's permanent error must not stop the others: record it on the job.
            job = self.jobs.get(job.segment_index, job)
            log.error("%s segment %d (%s): %s", TAG, job.segment_index, job.provider, exc)
            job = await self.record(job.transition(status=JobStatus.ERROR, error=str(exc)))
            self.emit(Event(EventKind.ERROR, job, detail=str(exc)))
            return JobOutcome(job, None, None)

    async def adopt_or_submit(self, job: Job) -> Job:
        from pairbatch.submit import create_batch  # submit imports this module

        """A segment with an intent but no batch id: find the batch it may have created
        before a crash, and only if there is none, send it again (never pay twice)."""
        client = self.session.client(job.provider)
        found = None
        while job.run_tag:
            try:
                found = await client.find_batch(job)
                break
            except UnresolvedBatchError as exc:
                self.say("%s", exc)
                await asyncio.sleep(self.options.next_delay(job, None, self.rng))
        if found:
            self.say("segment %d: adopted existing batch %s", job.segment_index, found)
        else:
            path = Path(job.batch_input_path)
            if not await asyncio.to_thread(path.exists):
                raise InputError(
                    f"segment {job.segment_index} has no batch id and its request file "
                    f"{path} is gone; it cannot be submitted"
                )
            # The submit call's options; read only here, as a resend is rare.
            settings = await asyncio.to_thread(read_settings, self.output_dir)
            options = settings.get("options")
            if not isinstance(options, dict) or settings.get("provider") != job.provider:
                options = get_backend(job.provider).prepare_options(job.model, {})
            found = await create_batch(client, job, path, options)
            self.say("segment %d: submitted batch %s", job.segment_index, found)
        job = await self.record(
            job.transition(
                batch_id=found, status=JobStatus.PENDING, submitted_at=utcnow(), error=None
            )
        )
        self.emit(Event(EventKind.SUBMITTED, job, detail=found))
        return job

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
                    self.say("Error retrieving %s batch %s: %s", job.provider, job.batch_id, exc)
                    self.emit(Event(EventKind.RETRY, job, detail=str(exc)))
                    continue
                raise
            self.say("%s batch %s status: %s", job.provider, job.batch_id, status.raw_state)
            self.emit(Event(EventKind.POLLED, job, detail=status.raw_state))
            if status.raw_state != job.raw_status and not status.state.is_terminal:
                job = await self.record(
                    job.transition(
                        status=JobStatus.from_state(status.state), raw_status=status.raw_state
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
                    self.emit(Event(EventKind.RETRY, job, detail=str(exc)))

    async def finish(self, job: Job, status: BatchStatus) -> JobOutcome:
        """Download a terminal batch, settle it on disk, then mark it done."""
        client = self.session.client(job.provider)
        downloaded: Downloaded | None = None
        has_output = status.output_ref is not None or status.error_ref is not None
        if status.state is BatchState.SUCCEEDED or has_output:
            downloaded = await client.download(job, status)
        # Everything else is file and CPU work: one trip to a worker thread, not one per
        # step, so the event loop keeps its requests on time.
        results, failed, failure = await asyncio.to_thread(
            _settle, job, status, downloaded, self.options
        )
        job = await self.record(
            job.transition(
                done=True,
                status=JobStatus.from_state(status.state),
                raw_status=status.raw_state,
                error=None,
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
) -> tuple[pl.DataFrame | None, pl.DataFrame, pl.DataFrame | None]:
    """Parse, normalise and persist a terminal batch (blocking; run in a worker thread).

    Returns its results (``None`` when the batch produced none), failed attempts and, for a
    batch that did not succeed, its one-row batch failure.
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
    persist_outcome(
        job,
        results,
        failed,
        write_results_csv=options.write_results_csv and results is not None,
    )
    if status.state is BatchState.SUCCEEDED and not options.keep_jsonl:
        _delete_jsonl(job)
    return results, failed, failure


def _segment_pairs(job: Job) -> pl.DataFrame:
    if not job.pairs_path or not Path(job.pairs_path).exists():
        raise InputError(
            f"Missing pair data for segment {job.segment_index}; unable to normalize results."
        )
    return read_segment_pairs(job.pairs_path)


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
        if per_job_delay <= 0:
            raise InputError("'per_job_delay' must be positive")
        # Compatibility: one request per per_job_delay seconds, for each provider.
        return {p.value: 1.0 / per_job_delay for p in Provider}
    limits = {p.value: DEFAULT_RATE for p in Provider}
    for name, rate in (rate_limits or {}).items():
        if not isinstance(rate, int | float) or rate <= 0:
            raise InputError(f"rate_limits[{name!r}] must be a positive number")
        limits[Provider.parse(name).value] = float(rate)
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
) -> AsyncGenerator[JobOutcome, None]:
    """Yield each job's :class:`JobOutcome` the moment its results are on disk.

    Jobs already done in the registry are yielded first, read back from disk with no
    provider calls. Use ``contextlib.aclosing`` (or ``async for`` to the end) so that
    stopping early cancels the polling tasks and leaves the registry consistent. Arguments
    are those of :func:`resume_multi_batches`, less the combined-CSV ones.
    """
    if interval_seconds < 0:
        raise InputError("'interval_seconds' must be >= 0")
    if openai_max_retries < 1 or max_tries < 1:
        raise InputError("'openai_max_retries' and 'max_tries' must be at least 1")
    job_list, out_dir = await asyncio.to_thread(load_jobs, jobs, output_dir)
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
    keep_registry = write_registry or await asyncio.to_thread(registry_path(out_dir).exists)
    registry = Registry(out_dir, job_list) if keep_registry else None
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
    run = _Run(job_list, out_dir, options, session, registry, Emitter(on_event, log))
    with verbose_logging(verbose):
        tasks: list[asyncio.Task[JobOutcome]] = []
        entered = False
        try:
            for job in job_list:
                if job.done:
                    yield await asyncio.to_thread(load_outcome, job)
            pending_jobs = [job for job in job_list if not job.done]
            if not pending_jobs:
                return
            await session.__aenter__()
            entered = True
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            tasks = [
                asyncio.create_task(run.drive(job), name=f"pairbatch-segment-{job.segment_index}")
                for job in pending_jobs
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
            if registry is not None:
                await asyncio.shield(registry.close())


@attrs.frozen
class ResumeResult:
    """What :func:`resume_multi_batches` returns (the reference's list, as attributes)."""

    jobs: list[Job]
    outcomes: list[JobOutcome]
    combined: pl.DataFrame | None
    failed_attempts: pl.DataFrame
    batch_failures: pl.DataFrame
    combined_csv_path: Path | None = None

    @property
    def all_done(self) -> bool:
        return all(job.done for job in self.jobs)


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
) -> ResumeResult:
    """Poll, download and parse every unfinished job; return the combined results.

    Same arguments and semantics as the reference ``llm_resume_multi_batches()``, with
    the per-job sleep replaced by concurrency under per-provider rate limits
    (``per_job_delay``, when given, sets every provider to one request per that many
    seconds). Jobs completed in earlier runs are included in ``combined``. A ``transport``
    passed in is shared as it is: its own rate limits apply, not ``rate_limits``.
    """
    job_list, out_dir = await asyncio.to_thread(load_jobs, jobs, output_dir)
    outcomes: dict[int, JobOutcome] = {}
    gen = iter_completed(
        job_list,
        out_dir,
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
    )
    async with contextlib.aclosing(gen):
        async for outcome in gen:
            outcomes[outcome.job.segment_index] = outcome
    final_jobs = [
        outcomes[j.segment_index].job if j.segment_index in outcomes else j for j in job_list
    ]
    ordered = [outcomes[k] for k in sorted(outcomes)]
    combined = concat_frames([o.results for o in ordered if o.results is not None])
    failed = concat_frames([o.failed_attempts for o in ordered if o.failed_attempts is not None])
    failures = concat_frames([o.batch_failure for o in ordered if o.batch_failure is not None])
    written: Path | None = None
    with verbose_logging(verbose):
        if write_combined_csv and combined is not None:
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
        failed_attempts=failed if failed is not None else pl.DataFrame(),
        batch_failures=failures if failures is not None else pl.DataFrame(),
        combined_csv_path=written,
    )
