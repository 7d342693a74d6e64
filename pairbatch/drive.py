"""The story of one job's life: get a batch, poll it, download it, settle it, done.

Every unfinished job is its own task. A task waits for its provider's token bucket and the
global request semaphore (both inside the transport), polls, and sleeps its own interval:
there are no rounds that wait for the slowest job. Each transition is recorded in the
registry before the task goes on, and a job's results land on disk before the registry
says it is done, so a process killed at any instant resumes where it was.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import polars as pl

from pairbatch.budgets import QueueGate, read_estimates
from pairbatch.errors import (
    InputError,
    PairbatchError,
    ProviderError,
    ProviderUnreachableError,
    RetryExhaustedError,
    UnresolvedBatchError,
)
from pairbatch.events import Emitter, Event, EventKind
from pairbatch.integrity import verify
from pairbatch.models import BatchState, BatchStatus, FileCheck, Job, JobStatus, Provider, utcnow
from pairbatch.outcomes import JobOutcome
from pairbatch.providers.base import BatchClient, Downloaded
from pairbatch.reconcile import Reconciler, Verdict
from pairbatch.registry import Registry
from pairbatch.session import Session
from pairbatch.settings import SETTINGS_NAME, require_settings
from pairbatch.settle import TAG, failure_detail, rebuild_request_file, segment_pairs, settle
from pairbatch.threads import to_thread
from pairbatch.wakeups import Wakeups

log = logging.getLogger("pairbatch.resume")

# Every provider's batches end within 24 hours; a state we do not know is given that and
# an hour more before it is called a failure.
COMPLETION_WINDOW = timedelta(hours=24)
UNKNOWN_STATE_GRACE = timedelta(hours=1)
# How often one segment refused for a full queue is sent again within a resume before
# its failure stands.
MAX_REQUEUES = 10
# Statuses that mean the job can never succeed by polling again (wrong key, gone batch).
_PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 410, 422})


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


class JobDriver:
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
        wakeups: Wakeups | None = None,
    ) -> None:
        self.jobs = {job.segment_index: job for job in jobs}
        # Kept as jobs change: counting on each progress line was O(jobs) per finish.
        self._done = sum(job.done for job in self.jobs.values())
        self.output_dir = output_dir
        self.options = options
        self.session = session
        self.registry = registry
        self.emit = emit
        self.settings = settings
        self.wakeups = wakeups or Wakeups()
        budget = settings.get("budget") or {}
        self.queue = QueueGate(
            budget.get("enqueued_token_limit"), read_estimates(settings), self.jobs.values
        )
        # With a queue limit, creates go one at a time: each sees the queue its
        # predecessor left (room is checked and taken as one step).
        self._create_turn = asyncio.Lock()
        self._requeues: dict[int, int] = {}
        self.reconciler = Reconciler(self.client_for, lambda: self.jobs.values())
        self.rng = random.Random()
        self.level = logging.INFO if options.verbose else logging.DEBUG

    def say(self, message: str, *args: object) -> None:
        log.log(self.level, f"{TAG} {message}", *args)

    async def record(self, job: Job) -> Job:
        before = self.jobs.get(job.segment_index)
        self._done += job.done - (before is not None and before.done)
        self.jobs[job.segment_index] = job
        await self.registry.record(job)
        await self.queue.changed()
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
        path, options, files = await to_thread(self.sendable, job)
        job = attrs.evolve(job, files=files)
        try:
            async with self._create_turn:
                if not self.queue.fits(job):
                    self.say(
                        "segment %d: waiting for room in the provider's queue", job.segment_index
                    )
                    await self.queue.wait_for_room(job)
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
        rebuilt = rebuild_request_file(job, settings, segment_pairs(job))
        log.warning(
            "%s segment %d: request file %s was missing; rebuilt", TAG, job.segment_index, path
        )
        return path, options, job.with_files(rebuilt)

    async def poll_until_done(self, job: Job) -> JobOutcome:
        client = self.client_for(job.provider)
        assert job.batch_id is not None
        status: BatchStatus | None = None
        first = True
        while True:
            if not first:
                # A webhook (or anything else that heard the batch change) may cut it short.
                await self.wakeups.sleep(
                    job.batch_id, self.options.next_delay(job, status, self.rng)
                )
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
            status = self.past_window(job, status)
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
            if status.state.is_terminal and self.requeues_left(job, status):
                job = await self.requeue(job, status)
                job = await self.obtain_batch(job)
                client, status, first = self.client_for(job.provider), None, True
                continue
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

    def requeues_left(self, job: Job, status: BatchStatus) -> bool:
        """A batch the provider refused for a full queue (it never ran) is sent again,
        a few times, once there is room, instead of failing its pairs."""
        full = status.state is BatchState.FAILED and status.queue_full
        return full and self._requeues.get(job.segment_index, 0) < MAX_REQUEUES

    async def requeue(self, job: Job, status: BatchStatus) -> Job:
        self._requeues[job.segment_index] = self._requeues.get(job.segment_index, 0) + 1
        reason = f"queued again: the provider's queue was full ({status.error})"
        self.say("segment %d: %s", job.segment_index, reason)
        job = await self.record(
            job.transition(batch_id=None, status=JobStatus.INTENT, raw_status=None, error=reason)
        )
        self.emit(Event(EventKind.RETRY, job, detail=reason))
        # Ask again once one of this run's batches has finished (room in the queue), or
        # after a few poll intervals when none of them is running.
        await self.queue.wait_for_a_finish(4 * self.options.next_delay(job, None, self.rng))
        return job

    def past_window(self, job: Job, status: BatchStatus) -> BatchStatus:
        """A state pairbatch does not know is polled (the provider logged a warning) until
        the batch's completion window and a grace period have passed; then it is a
        terminal failure, whatever output it has salvaged. Never polled forever."""
        if not status.unknown_state or status.state.is_terminal or job.submitted_at is None:
            return status
        if utcnow() - job.submitted_at < COMPLETION_WINDOW + UNKNOWN_STATE_GRACE:
            return status
        return attrs.evolve(
            status,
            state=BatchState.FAILED,
            ending=f"unknown state {status.raw_state} past the completion window",
        )

    def client_for(self, provider: Provider) -> BatchClient:
        """The provider's client, speaking the API version the run was submitted with."""
        client = self.session.client(provider)
        options = self.settings.get("options")
        if isinstance(options, dict) and self.settings.get("provider") == provider.value:
            client.use_options(options)
        return client

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
        client = self.client_for(job.provider)
        downloaded: Downloaded | None = None
        has_output = status.output_ref is not None or status.error_ref is not None
        if status.state is BatchState.SUCCEEDED or has_output:
            downloaded = await client.download(job, status)
        # Everything else is file and CPU work: one trip to a worker thread, not one per
        # step, so the event loop keeps its requests on time.
        results, failed, failure, files = await to_thread(
            settle, job, status, downloaded, self.options
        )
        job = await self.record(
            job.transition(
                done=True,
                status=JobStatus.from_state(status.state),
                raw_status=status.raw_state,
                error=None if failure is None else failure_detail(status),
                files=job.with_outcome_files(*files),
            )
        )
        n_results = 0 if results is None else results.height
        n_failed = 0 if failed is None else failed.height
        kind = EventKind.COMPLETED if failure is None else EventKind.BATCH_FAILED
        self.emit(Event(kind, job, detail=status.raw_state, n_results=n_results, n_failed=n_failed))
        return JobOutcome(job, results, failed, failure)

    def progress(self) -> None:
        done, total = self._done, len(self.jobs)
        self.say("Completed %d of %d jobs; %d remaining.", done, total, total - done)
