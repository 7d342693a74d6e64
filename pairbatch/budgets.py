"""Staying inside budgets: estimated tokens per segment, an enqueued-token limit, a cost cap.

Providers limit the tokens a batch queue may hold per model (OpenAI's "enqueued token
limit", which depends on the account's tier, so pairbatch does not guess it: you give it);
going over makes creates fail after the fact. pairbatch estimates each segment's tokens
before it submits: input from the request file's bytes (about four bytes a token, or the
pre-flight's real count for the first pair's bytes when there is one), output from the
configured maximum per request (``max_tokens`` / ``max_output_tokens``, else
:data:`DEFAULT_MAX_OUTPUT`). Segments that would take the queue over the limit stay
``intent`` (never sent) and are created by resume as earlier batches finish. With prices
(per million tokens, the batch discount applied), a submit whose estimate exceeds
``cost_cap`` is refused before anything is created, and resume reports the actual cost
from the answers' ``usage``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import polars as pl

from pairbatch.errors import InputError
from pairbatch.models import Job
from pairbatch.settings import SETTINGS_NAME, read_settings, write_settings

log = logging.getLogger("pairbatch.submit")
TAG = "[submit_pairs_multi_batch]"

BYTES_PER_TOKEN = 4.0
DEFAULT_MAX_OUTPUT = 1024  # per request, when the options name no maximum


@attrs.frozen
class Prices:
    """USD per million tokens, and the discount batch jobs get (half, on all three)."""

    input_per_million: float
    output_per_million: float
    batch_discount: float = 0.5

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        full = (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1e6
        return full * (1.0 - self.batch_discount)

    @classmethod
    def coerce(cls, value: Prices | Mapping[str, float] | None) -> Prices | None:
        if value is None or isinstance(value, Prices):
            return value
        try:
            prices = cls(**{k: float(v) for k, v in value.items()})
        except (TypeError, ValueError) as exc:
            raise InputError(f"prices: {exc}") from None
        if min(prices.input_per_million, prices.output_per_million) < 0 or not (
            0 <= prices.batch_discount < 1
        ):
            raise InputError("prices must be >= 0 and batch_discount within [0, 1)")
        return prices


@attrs.frozen
class Estimate:
    input_tokens: int
    output_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


def tokens_per_byte(preflight: Mapping[str, Any] | None, first_line_bytes: int) -> float:
    """Input tokens per request-file byte: the pre-flight's real count when known."""
    if preflight and preflight.get("prompt_tokens") and first_line_bytes > 0:
        return float(preflight["prompt_tokens"]) / first_line_bytes
    return 1.0 / BYTES_PER_TOKEN


def max_output(options: Mapping[str, Any]) -> int:
    for name in ("max_tokens", "max_output_tokens"):
        value = options.get(name)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_OUTPUT


def estimate(
    request_bytes: int, n_requests: int, per_byte: float, per_request_out: int
) -> Estimate:
    return Estimate(round(request_bytes * per_byte), n_requests * per_request_out)


def admit(
    estimates: Mapping[int, Estimate], limit: int | None, queued: int = 0
) -> tuple[list[int], list[int]]:
    """Segments to create now and to hold back, in segment order, so the queue (already
    holding ``queued`` tokens) never goes over ``limit``."""
    if limit is None:
        return sorted(estimates), []
    now: list[int] = []
    later: list[int] = []
    used = queued
    for index in sorted(estimates):
        need = estimates[index].total
        if need > limit:
            raise InputError(
                f"segment {index} needs about {need:,} tokens, more than "
                f"enqueued_token_limit={limit:,}: choose a smaller batch_size"
            )
        if later or used + need > limit:
            later.append(index)
        else:
            now.append(index)
            used += need
    return now, later


def actual_tokens(frames: Iterable[pl.DataFrame | None]) -> tuple[int, int]:
    """Input and output tokens the answers report (``prompt_tokens``,
    ``completion_tokens``), over results and failed attempts."""
    prompt = completion = 0
    for frame in frames:
        if frame is None or frame.height == 0:
            continue
        if "prompt_tokens" in frame.columns:
            prompt += int(frame["prompt_tokens"].fill_null(0).sum())
        if "completion_tokens" in frame.columns:
            completion += int(frame["completion_tokens"].fill_null(0).sum())
    return prompt, completion


class QueueGate:
    """Holds back creates while the provider's queue is full (resume's side of the
    limit): a create waits until the tokens of this run's batches still running, plus
    its own, fit under the limit. Woken whenever a job changes."""

    def __init__(
        self,
        limit: int | None,
        estimates: Mapping[int, Estimate],
        jobs: Callable[[], Iterable[Job]],
    ) -> None:
        self._limit = limit
        self._estimates = estimates
        self._jobs = jobs
        self._changed = asyncio.Condition()

    def _queued(self, skip: int) -> int:
        return sum(
            self._estimates[j.segment_index].total
            for j in self._jobs()
            if j.batch_id
            and not j.done
            and j.segment_index != skip
            and j.segment_index in self._estimates
        )

    def fits(self, job: Job) -> bool:
        need = self._estimates.get(job.segment_index)
        if self._limit is None or need is None:
            return True
        return self._queued(job.segment_index) + need.total <= self._limit

    async def wait_for_room(self, job: Job) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.fits(job))

    async def wait_for_a_finish(self, at_most: float) -> None:
        """Until one more of the run's jobs is done, or ``at_most`` seconds."""

        def done() -> int:
            return sum(1 for j in self._jobs() if j.done)

        before = done()
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: done() > before), at_most)

    async def changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()


def read_estimates(settings: Mapping[str, Any]) -> dict[int, Estimate]:
    raw = settings.get("estimates") or {}
    return {int(k): Estimate(int(v[0]), int(v[1])) for k, v in raw.items()}


@attrs.frozen
class Budget:
    limit: int | None
    prices: Prices | None
    cost_cap: float | None

    @classmethod
    def check(cls, limit: object, prices: object, cost_cap: object) -> Budget:
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InputError(f"'enqueued_token_limit' must be an integer >= 1, got {limit!r}")
        parsed = Prices.coerce(prices)  # type: ignore[arg-type]
        if cost_cap is not None:
            if parsed is None:
                raise InputError("'cost_cap' needs 'prices' (per million input/output tokens)")
            if (
                isinstance(cost_cap, bool)
                or not isinstance(cost_cap, int | float)
                or not cost_cap >= 0
            ):
                raise InputError(f"'cost_cap' must be a number >= 0, got {cost_cap!r}")
        return cls(limit, parsed, None if cost_cap is None else float(cost_cap))


def plan_budget(
    out_dir: Path,
    jobs: list[Job],
    options: Mapping[str, Any],
    preflight: Mapping[str, Any] | None,
    budget: Budget,
) -> set[int]:
    """Estimate every segment, refuse a run over the cost cap (removing what phase 1
    wrote: no intent exists yet), keep the estimates in the run settings, and return the
    segments to hold back for the enqueued-token limit (blocking)."""
    first = Path(jobs[0].batch_input_path)
    with first.open("rb") as handle:
        first_line = len(handle.readline())
    per_byte = tokens_per_byte(preflight, first_line)
    out = max_output(options)
    estimates = {}
    for job in jobs:
        check = job.file_check(job.batch_input_path)
        size = check.size if check else first.stat().st_size
        estimates[job.segment_index] = estimate(size, job.n_pairs, per_byte, out)
    total_in = sum(e.input_tokens for e in estimates.values())
    total_out = sum(e.output_tokens for e in estimates.values())
    cost = None if budget.prices is None else budget.prices.cost(total_in, total_out)
    if cost is not None and budget.cost_cap is not None and cost > budget.cost_cap:
        for job in jobs:
            for path in (job.pairs_path, job.batch_input_path):
                with contextlib.suppress(OSError):
                    Path(path or "").unlink()
        with contextlib.suppress(OSError):
            (out_dir / SETTINGS_NAME).unlink()
        raise InputError(
            f"the run's estimate (~{total_in:,} input + {total_out:,} output tokens) costs "
            f"about {dollars(cost)}, over cost_cap={dollars(budget.cost_cap)}; nothing was sent"
        )
    _, later = admit(estimates, budget.limit)
    settings = read_settings(out_dir)
    settings.pop("format", None)
    settings["estimates"] = {
        str(k): [e.input_tokens, e.output_tokens] for k, e in estimates.items()
    }
    settings["budget"] = {
        "enqueued_token_limit": budget.limit,
        "prices": None if budget.prices is None else attrs.asdict(budget.prices),
        "cost_cap": budget.cost_cap,
        "estimated_cost": cost,
    }
    write_settings(out_dir, settings)
    if later:
        log.info(
            "%s %d segment(s) held back for the enqueued-token limit (%s); resume sends them "
            "as earlier batches finish",
            TAG,
            len(later),
            budget.limit,
        )
    return set(later)


def dollars(amount: float) -> str:
    """``$1,234.56``; an amount under a cent keeps two significant digits (``$0.0034``),
    so a small run's cost does not print as ``$0.00``."""
    if amount == 0 or abs(amount) >= 0.01:
        return f"${amount:,.2f}"
    return f"${amount:.2g}"
