"""Never pay twice: how a segment gets its batch, and how a crash is reconciled.

Every batch create follows one protocol, in submit and in resume alike:

1. The segment's files are on disk and its intent is recorded (``intent``): no create has
   been sent, so one may be sent without looking.
2. ``creating`` is recorded *before* the create goes out. From then on the segment may
   have a batch at the provider that the registry does not know.
3. The answer's batch id is recorded (``pending``). A definite refusal (a 4xx, a 429
   exhausted, a connection that never opened) is recorded as ``submit_failed``: nothing
   was created, so resume may send it again without looking.

A segment found in ``creating`` (a crash, a timeout, a dropped connection) is reconciled
by *proof*: the provider is asked for batches that carry this run's tag and this segment
(OpenAI metadata, Gemini display name, an Anthropic result line's custom_id prefix). One
proven batch is adopted; none means the create never landed and it is sent again; a batch
already claimed by another segment is never adopted; two proven batches, or look-alikes
that cannot be told apart yet (a running Anthropic batch of the same size: its custom_ids
only show once it ends), leave the segment unresolved with the reason, and it waits.

Anthropic is the provider whose batches cannot be proven while they run, so its creates
are sent one at a time per run: at most one Anthropic segment can be ``creating`` without
a batch id when a crash comes, and every other segment resumes at once.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from pairbatch import _crash
from pairbatch.errors import ProviderError, UnresolvedBatchError
from pairbatch.models import Candidate, Job, JobStatus, Provider, utcnow
from pairbatch.providers.base import BatchClient

log = logging.getLogger("pairbatch.reconcile")

Record = Callable[[Job], Awaitable[Job]]
# Providers whose batches carry no proof while running (see the module docstring).
_ONE_CREATE_AT_A_TIME = frozenset({Provider.ANTHROPIC})
# After a create whose outcome is unknown, give the provider a moment to finish it before
# listing: a create still being processed would not be listed yet.
AMBIGUOUS_SETTLE_SECONDS = 0.25


class Verdict(enum.Enum):
    ADOPT = "adopt"
    CREATE = "create"
    WAIT = "wait"


@attrs.frozen
class Resolution:
    verdict: Verdict
    batch_id: str | None = None
    reason: str = ""


def decide(job: Job, candidates: Iterable[Candidate], claimed: Iterable[str]) -> Resolution:
    """The rule, apart from any I/O: adopt only what is proven and unclaimed."""
    taken = set(claimed)
    free = [c for c in candidates if c.batch_id not in taken]
    proven = [c for c in free if c.proven]
    unproven = [c for c in free if not c.proven]
    if len(proven) == 1:
        return Resolution(Verdict.ADOPT, proven[0].batch_id)
    if len(proven) > 1:
        ids = ", ".join(c.batch_id for c in proven)
        return Resolution(
            Verdict.WAIT,
            reason=(
                f"segment {job.segment_index}: {len(proven)} batches carry this segment's tag "
                f"({ids}); adopting one would be a guess. Cancel the one(s) you do not want "
                "and resume again"
            ),
        )
    if unproven:
        ids = ", ".join(c.batch_id for c in unproven)
        return Resolution(
            Verdict.WAIT,
            reason=(
                f"segment {job.segment_index}: its create's outcome is unknown and "
                f"{len(unproven)} running batch(es) ({ids}) could be it; waiting for them "
                "to end to tell (never sending a second create on a guess)"
            ),
        )
    return Resolution(Verdict.CREATE)


class Reconciler:
    """Creates batches and reconciles unknown creates for one run (one session).

    ``client_for`` gives a provider's client; ``jobs`` the run's current jobs, whose
    batch ids are claimed by their segments.
    """

    def __init__(
        self,
        client_for: Callable[[Provider], BatchClient],
        jobs: Callable[[], Iterable[Job]],
        *,
        settle_seconds: float = AMBIGUOUS_SETTLE_SECONDS,
    ) -> None:
        self._client_for = client_for
        self._jobs = jobs
        self._settle = settle_seconds
        self._slots: dict[Provider, asyncio.Semaphore] = {}

    def _claimed(self, job: Job) -> set[str]:
        return {
            j.batch_id for j in self._jobs() if j.batch_id and j.segment_index != job.segment_index
        }

    async def resolve(self, job: Job) -> Resolution:
        """Reconcile a segment whose create may have been sent."""
        candidates = await self._client_for(job.provider).find_batches(job)
        resolution = decide(job, candidates, self._claimed(job))
        if resolution.verdict is Verdict.ADOPT:
            log.info(
                "segment %d: adopted batch %s (proven)", job.segment_index, resolution.batch_id
            )
        return resolution

    async def send(self, job: Job, path: Path, options: Mapping[str, Any], record: Record) -> Job:
        """Record ``creating``, send the create, record the batch id; returns the job.

        Raises :class:`ProviderError` for a definite refusal (the caller records
        ``submit_failed``) and :class:`UnresolvedBatchError` when the outcome stays unknown
        (the segment stays ``creating`` for resume to reconcile).
        """
        slot = self._slots.get(job.provider)
        if slot is None and job.provider in _ONE_CREATE_AT_A_TIME:
            slot = self._slots[job.provider] = asyncio.Semaphore(1)
        if slot is None:
            return await self._send(job, path, options, record)
        async with slot:
            return await self._send(job, path, options, record)

    async def _send(self, job: Job, path: Path, options: Mapping[str, Any], record: Record) -> Job:
        job = await record(job.transition(status=JobStatus.CREATING, error=None))
        _crash.point(f"create:before:{job.segment_index}")
        batch_id = await self._create(job, path, options)
        _crash.point(f"create:after:{job.segment_index}")
        job = await record(
            job.transition(
                batch_id=batch_id, status=JobStatus.PENDING, submitted_at=utcnow(), error=None
            )
        )
        _crash.point(f"create:recorded:{job.segment_index}")
        return job

    async def _create(
        self, job: Job, path: Path, options: Mapping[str, Any], attempts: int = 3
    ) -> str:
        client = self._client_for(job.provider)
        for attempt in range(1, attempts + 1):
            try:
                return await client.submit(job, path, options)
            except ProviderError as exc:
                if exc.error_type != "ambiguous":
                    raise
                ambiguous = exc
            await asyncio.sleep(self._settle)
            try:
                resolution = await self.resolve(job)
            except ProviderError as list_error:
                raise UnresolvedBatchError(
                    f"segment {job.segment_index}: create outcome unknown ({ambiguous.message}) "
                    f"and batches cannot be listed to check ({list_error.message})"
                ) from None
            if resolution.verdict is Verdict.ADOPT:
                assert resolution.batch_id is not None
                return resolution.batch_id
            if resolution.verdict is Verdict.WAIT:
                raise UnresolvedBatchError(resolution.reason)
            if attempt < attempts:
                log.info("segment %d: no batch was created; sending again", job.segment_index)
        raise UnresolvedBatchError(
            f"segment {job.segment_index}: {attempts} creates ended with no answer "
            f"({ambiguous.message}); resume will look for the batch again"
        )
