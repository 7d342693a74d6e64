"""Batches, their fates, and the clock model that moves them through their states.

Nothing runs in the background: a batch is a creation time, a latency and the fates
decided at creation, and every GET computes where it is now. Thousands of batches cost
only their memory.

Timeline of a batch created at ``c`` with latency ``L`` (provider words differ, the shape
is the same): pending (OpenAI ``validating``) until ``c + 0.1 L``, running until
``c + 0.9 L`` (requests finish one by one in that window), finalizing until ``c + L``,
then ended. A cancel at ``t`` stops the batch: requests not finished by ``t`` end
cancelled, after a short ``canceling`` window.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from pairbatch.testing.blobs import Blob
from pairbatch.testing.faults import FaultConfig, stable_int, unit

Clock = Callable[[], float]

PENDING_SHARE = 0.1
RUNNING_END_SHARE = 0.9
CANCEL_SHARE = 0.1  # how long "cancelling" lasts, as a share of the latency


class Outcome(enum.Enum):
    """How one request ended."""

    SUCCEEDED = "succeeded"
    NO_TAG = "no_tag"  # succeeded, but the answer carries no <BETTER_SAMPLE> tag
    ERRORED = "errored"
    CANCELED = "canceled"
    EXPIRED = "expired"

    @property
    def answered(self) -> bool:
        return self in (Outcome.SUCCEEDED, Outcome.NO_TAG)


class BatchFate(enum.Enum):
    """How a batch will end if nobody cancels it."""

    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"  # a cancel nobody asked for, part-way through
    ALL_ERRORED = "all_errored"


class Phase(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    FINALIZING = "finalizing"
    CANCELLING = "cancelling"
    ENDED = "ended"


class EndKind(enum.Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@attrs.define(eq=False)
class Request:
    """One request of a batch, with its fate decided at creation."""

    index: int
    custom_id: str
    body: dict[str, Any]  # OpenAI line body, Anthropic params, or Gemini request
    fate: Outcome
    done_share: float  # when it finishes, as a share of the running window
    metadata: Any = None  # Gemini inline metadata, echoed back


@attrs.frozen
class View:
    """Where a batch is at one instant."""

    phase: Phase
    end: EndKind | None
    started_at: float | None
    finalizing_at: float | None
    ended_at: float | None
    cancel_at: float | None
    outcomes: tuple[Outcome | None, ...]  # None: still processing
    # Tallies of `outcomes`, or given directly for synthetic batches that have no list.
    tallies: Counter[Outcome | None] = attrs.field(eq=False)

    @tallies.default
    def _tally(self) -> Counter[Outcome | None]:
        return Counter(self.outcomes)

    @property
    def terminal(self) -> bool:
        return self.phase is Phase.ENDED

    def count(self, *kinds: Outcome) -> int:
        return sum(self.tallies[kind] for kind in kinds)

    @property
    def pending(self) -> int:
        return self.tallies[None]


@attrs.define(eq=False)
class Batch:
    provider: str
    id: str
    created: float
    latency: float
    fate: BatchFate
    cut: float  # share of the running window at which an expiry/fault cancel stops it
    shuffle_seed: int
    requests: list[Request]
    info: dict[str, Any] = attrs.field(factory=dict)
    errors: list[dict[str, Any]] = attrs.field(factory=list)  # OpenAI validation errors
    cancel_requested: float | None = None
    # Present for synthetic batches: already-built result files, no Request objects.
    synthetic_total: int | None = None
    blobs: dict[str, Blob] = attrs.field(factory=dict)  # rendered result files, by role
    cancel_delay_share: float = CANCEL_SHARE
    rendered: bool = False
    # An ended batch never changes again, so its view is computed once.
    _final: View | None = attrs.field(default=None, init=False)

    @property
    def n_requests(self) -> int:
        if self.synthetic_total is not None:
            return self.synthetic_total
        return len(self.requests)

    @property
    def start_at(self) -> float:
        return self.created + PENDING_SHARE * self.latency

    @property
    def finalize_at(self) -> float:
        return self.created + RUNNING_END_SHARE * self.latency

    @property
    def end_at(self) -> float:
        return self.created + self.latency

    def done_time(self, request: Request) -> float:
        return self.start_at + request.done_share * (self.finalize_at - self.start_at)

    def _natural_end(self) -> tuple[float, EndKind]:
        if self.fate is BatchFate.FAILED:
            return self.start_at, EndKind.FAILED
        if self.fate is BatchFate.EXPIRED:
            return self.end_at, EndKind.EXPIRED
        return self.end_at, EndKind.COMPLETED

    def effective_cancel(self) -> float | None:
        """When processing was (or will be) stopped by a cancel, if before the natural end."""
        candidates = []
        if self.cancel_requested is not None:
            candidates.append(self.cancel_requested)
        if self.fate is BatchFate.CANCELLED:
            candidates.append(self.start_at + self.cut * (self.finalize_at - self.start_at))
        if not candidates:
            return None
        at = min(candidates)
        natural_at, _ = self._natural_end()
        return at if at < natural_at else None

    def view(self, now: float) -> View:
        if self._final is not None:
            return self._final
        view = self._view(now)
        if view.terminal:
            self._final = view
        return view

    def _view(self, now: float) -> View:
        if self.synthetic_total is not None:
            return View(
                Phase.ENDED,
                EndKind.COMPLETED,
                self.start_at,
                self.finalize_at,
                self.end_at,
                None,
                (),
                Counter({Outcome.SUCCEEDED: self.synthetic_total}),
            )
        cancel_at = self.effective_cancel()
        if cancel_at is not None and now >= cancel_at:
            ended_at = cancel_at + self.cancel_delay_share * self.latency
            started = self.start_at if cancel_at >= self.start_at else None
            outcomes = self._outcomes(stop=cancel_at, stopped=Outcome.CANCELED, now=now)
            if now < ended_at:
                return View(
                    Phase.CANCELLING,
                    None,
                    started,
                    None,
                    None,
                    cancel_at,
                    tuple(None if o is Outcome.CANCELED else o for o in outcomes),
                )
            return View(
                Phase.ENDED, EndKind.CANCELLED, started, None, ended_at, cancel_at, outcomes
            )
        natural_at, kind = self._natural_end()
        if now < self.start_at:
            return View(Phase.PENDING, None, None, None, None, None, self._outcomes(now=now))
        if now >= natural_at:
            if kind is EndKind.FAILED:
                return View(
                    Phase.ENDED,
                    kind,
                    None,
                    None,
                    natural_at,
                    None,
                    tuple(None for _ in range(self.n_requests)),
                )
            if kind is EndKind.EXPIRED:
                stop = self.start_at + self.cut * (self.finalize_at - self.start_at)
                outcomes = self._outcomes(stop=stop, stopped=Outcome.EXPIRED, now=now)
                return View(Phase.ENDED, kind, self.start_at, None, natural_at, None, outcomes)
            return View(
                Phase.ENDED,
                kind,
                self.start_at,
                self.finalize_at,
                natural_at,
                None,
                self._outcomes(now=now),
            )
        if now >= self.finalize_at and kind is EndKind.COMPLETED:
            return View(
                Phase.FINALIZING,
                None,
                self.start_at,
                self.finalize_at,
                None,
                None,
                self._outcomes(now=now),
            )
        if kind is EndKind.EXPIRED:
            # Requests past the cut never finish: they stay processing until the expiry.
            stop = self.start_at + self.cut * (self.finalize_at - self.start_at)
            outcomes = self._outcomes(stop=stop, stopped=None, now=now)
        else:
            outcomes = self._outcomes(now=now)
        return View(Phase.RUNNING, None, self.start_at, None, None, None, outcomes)

    def _outcomes(
        self, *, now: float, stop: float | None = None, stopped: Outcome | None = None
    ) -> tuple[Outcome | None, ...]:
        result: list[Outcome | None] = []
        for request in self.requests:
            at = self.done_time(request)
            if stop is not None and at > stop:
                result.append(stopped if now >= stop else None)
            elif at <= now:
                result.append(request.fate)
            else:
                result.append(None)
        return tuple(result)


def shuffled(items: Sequence[Any], seed: int) -> list[Any]:
    """A seeded permutation that needs no RNG object (sort by a per-item hash)."""
    return [
        item
        for _, item in sorted(
            ((stable_int(seed, i), item) for i, item in enumerate(items)), key=lambda p: p[0]
        )
    ]


@attrs.define
class Fates:
    """Decides fates from hashes and counts resubmissions so a retry gets a fresh draw."""

    seed: int
    provider: str
    latency: float | tuple[float, float]
    _seen_ids: Counter[str] = attrs.field(factory=Counter)
    _seen_batches: Counter[int] = attrs.field(factory=Counter)

    def batch_draw(self, custom_ids: Sequence[str]) -> tuple[int, int]:
        """``(content key, attempt)`` for a new batch with these request ids."""
        content = stable_int("content", *custom_ids)
        attempt = self._seen_batches[content]
        self._seen_batches[content] += 1
        return content, attempt

    def batch_fate(self, faults: FaultConfig, content: int, attempt: int) -> BatchFate:
        u = unit(self.seed, self.provider, "batch", content, attempt)
        for rate, fate in (
            (faults.batch_failed_rate, BatchFate.FAILED),
            (faults.batch_expired_rate, BatchFate.EXPIRED),
            (faults.batch_cancelled_rate, BatchFate.CANCELLED),
            (faults.batch_all_errored_rate, BatchFate.ALL_ERRORED),
        ):
            if u < rate:
                return fate
            u -= rate
        return BatchFate.COMPLETED

    def batch_latency(self, content: int, attempt: int) -> float:
        if isinstance(self.latency, tuple):
            lo, hi = self.latency
            return lo + (hi - lo) * unit(self.seed, self.provider, "latency", content, attempt)
        return float(self.latency)

    def cut(self, content: int, attempt: int) -> float:
        # Somewhere in the middle, so partial outputs are neither empty nor complete.
        return 0.25 + 0.5 * unit(self.seed, self.provider, "cut", content, attempt)

    def request(self, faults: FaultConfig, custom_id: str) -> tuple[Outcome, float]:
        attempt = self._seen_ids[custom_id]
        self._seen_ids[custom_id] += 1
        u = unit(self.seed, self.provider, "request", custom_id, attempt)
        if u < faults.request_error_rate:
            fate = Outcome.ERRORED
        elif u < faults.request_error_rate + faults.no_tag_rate:
            fate = Outcome.NO_TAG
        else:
            fate = Outcome.SUCCEEDED
        done = unit(self.seed, self.provider, "done", custom_id, attempt)
        return fate, done
