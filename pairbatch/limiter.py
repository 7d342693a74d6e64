"""An async token bucket: fair, cancellation-safe, pausable by the server's Retry-After.

Also the parsers for the providers' rate-limit headers, so a bucket can stop before the
server starts answering 429.
"""

from __future__ import annotations

import asyncio
import collections
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from types import TracebackType

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# Float refills can land a hair short of a whole token; that hair is not worth a sleep.
_EPSILON = 1e-9


class TokenBucket:
    """Grant at most ``burst + rate * t`` tokens over any window of ``t`` seconds.

    Waiters are served strictly first come, first served: a later request, however
    small, never overtakes an earlier one. A cancelled waiter leaves no debt (tokens are
    taken only at the moment of the grant) and does not hold up those behind it. There
    is no background task: the head of the queue sleeps until its tokens are due and
    everyone behind it waits on a future the head resolves when it leaves.

    ``pause``/``pause_until`` stop all grants until a deadline (a server's Retry-After);
    pauses only ever extend. ``penalize`` slows the rate after a 429, at most once per
    ``penalty_hold`` seconds, and time wins it back, never above the configured rate, so
    the ``burst + rate * t`` bound holds for the configured rate. A waiter the event
    loop wakes late is owed the lost time, up to ``timer_slack`` seconds (the bound is
    then ``burst + rate * (t + timer_slack)``).
    """

    # How the rate adapts to 429s (additive increase, multiplicative decrease, by time):
    # a penalty multiplies the rate by the share of requests the server admitted since
    # the last one, but by no less than a half (a server limiting at L while we send at
    # r <= 2L admits L/r of them, so the rate lands on L; a storm halves it each second
    # down to the floor), and every second without a penalty adds
    # ``recovery_per_second`` of the configured rate back, up to a ceiling. A 429 taken
    # at the ceiling lowers it by ``ceiling_margin``: a server limiting at exactly our
    # rate refuses what a busy loop sends a few ms late and then early, so the rate that
    # drew one goes on a margin below it; the ceiling creeps back by ``ceiling_recovery``
    # of the rate a second (a 429 taken on the way up, below it, says nothing new and
    # leaves it where it is). Penalties count at most once per ``penalty_hold``: a burst
    # of 429s from requests in flight is one signal, and a steady background of random 429s (an
    # overloaded provider, not our rate) settles well above the floor instead of
    # ratcheting down to it (30 % random 429s hold about 0.6x the configured rate).
    recovery_per_second = 0.25
    ceiling_margin = 0.05
    ceiling_recovery = 0.005
    penalty_hold = 1.0
    floor_share = 1 / 16
    # A header saying "0 left, resets in 23h" (a daily quota) would otherwise freeze the
    # provider for a day; past this cap the next request gets the server's own 429, and
    # the retry policy decides what to do with it.
    max_header_pause = 60.0
    # How late (seconds) a waiter may wake and still be owed the time: the bound becomes
    # ``burst + rate * (t + timer_slack)``, a difference no server can tell from jitter.
    timer_slack = 0.005

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number, got {rate!r}")
        if not (burst >= 1 and math.isfinite(burst)):
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.base_rate = float(rate)
        self.rate = float(rate)
        self._ceiling = self.rate
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        # ``_tokens`` is the level at time ``_updated``, which a pause may set in the future.
        self._tokens = float(burst)
        self._updated = clock()
        self._paused_until = -math.inf
        self._last_penalty = -math.inf
        self._last_recovery = self._updated
        # Grants and 429s since the last penalty: the share the server admitted.
        self._granted_since = 0
        self._refused_since = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.granted = 0

    def __repr__(self) -> str:
        return (
            f"TokenBucket(rate={self.rate:g}, burst={self.burst:g}, waiting={len(self._waiters)})"
        )

    # ------------------------------------------------------------ state

    def _refill(self, now: float) -> None:
        if now > self._updated:
            cap = self.burst
            if self._waiters:
                # Tokens that came due while a request was waiting for them belong to it:
                # a waiter woken late by a busy event loop makes the time up on the next
                # grants instead of losing it for good (at 50 req/s, 1 ms late per grant
                # would cost 5% of the rate). Bounded by ``timer_slack``.
                cap += min(self.rate * self.timer_slack, 1.0)
            self._tokens = min(cap, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def _delay(self, tokens: float) -> float:
        """Seconds until ``tokens`` can be granted (0 when they can be now)."""
        now = self._clock()
        self._refill(now)
        self._recover(now)
        start = max(now, self._updated)
        missing = tokens - self._tokens
        if missing <= _EPSILON:
            return max(start - now, 0.0)
        return start - now + missing / self.rate

    def _take(self, tokens: float) -> None:
        self._tokens = max(self._tokens - tokens, 0.0)
        self.granted += 1
        self._granted_since += 1
        self._recover(self._clock())

    @property
    def paused_until(self) -> float:
        """The clock time before which nothing is granted (``-inf`` if never paused)."""
        return self._paused_until

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    # ------------------------------------------------------------ server signals

    def pause(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` from now (see :meth:`pause_until`)."""
        self.pause_until(self._clock() + seconds)

    def pause_until(self, deadline: float) -> None:
        """Grant nothing before ``deadline`` (clock seconds). Pauses only ever extend.

        At the deadline the bucket holds at most one token: one request probes the
        server, the rest follow at the bucket's rate instead of all at once.
        """
        if not deadline > self._paused_until:  # also rejects NaN
            return
        now = self._clock()
        if deadline <= now:
            return
        self._refill(now)
        natural = min(self.burst, self._tokens + (deadline - self._updated) * self.rate)
        self._tokens = min(natural, 1.0)
        self._updated = deadline
        self._paused_until = deadline
        # The head waiter may be asleep on a shorter delay; it re-checks when it wakes.

    def penalize(self, sent_at: float | None = None) -> bool:
        """A 429 said this rate is too fast: slow down. Returns whether it slowed.

        ``sent_at`` is the clock time the refused request was granted; a request granted
        before the last penalty belongs to the same congestion event, and within
        ``penalty_hold`` of a penalty a 429 only counts towards the next one.
        """
        now = self._clock()
        self._recover(now)
        self._refused_since += 1
        if sent_at is not None and sent_at < self._last_penalty:
            return False
        if now - self._last_penalty < self.penalty_hold:
            return False
        sent = max(self._granted_since, self._refused_since)
        admitted = max(sent - self._refused_since, 0) / sent
        floor = self.base_rate * self.floor_share
        if self.rate >= self._ceiling * (1 - 1e-9):
            self._ceiling = max(self._ceiling * (1 - self.ceiling_margin), floor)
        # At most halved per penalty: a handful of requests is a noisy sample.
        self.rate = max(min(self.rate * max(admitted, 0.5), self._ceiling), floor)
        self._last_penalty = now
        self._granted_since = self._refused_since = 0
        return True

    def _recover(self, now: float) -> None:
        elapsed = now - self._last_recovery
        self._last_recovery = now
        if self.rate < self.base_rate and elapsed > 0:
            lift = self.base_rate * self.ceiling_recovery * elapsed
            self._ceiling = min(self.base_rate, self._ceiling + lift)
            gain = self.base_rate * self.recovery_per_second * elapsed
            self.rate = min(self._ceiling, self.rate + gain)

    def observe_remaining(self, remaining: int | None, reset_seconds: float | None) -> None:
        """Stop before the 429: the server says nothing is left until ``reset_seconds``."""
        if (
            remaining is not None
            and remaining <= 0
            and reset_seconds is not None
            and 0 < reset_seconds < math.inf
        ):
            self.pause(min(reset_seconds, self.max_header_pause))

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """:meth:`observe_remaining` from a response's headers (lower-cased keys)."""
        hint = rate_limit_hint(headers)
        if hint is not None:
            self.observe_remaining(*hint)

    # ------------------------------------------------------------ acquiring

    async def acquire(self, tokens: float = 1.0) -> None:
        """Wait for ``tokens`` (at most ``burst``), in arrival order."""
        if not (0 < tokens <= self.burst):
            raise ValueError(f"cannot acquire {tokens!r} tokens from a bucket of {self.burst:g}")
        if not self._waiters and self._delay(tokens) == 0:
            self._take(tokens)
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            if self._waiters[0] is not turn:
                await turn  # resolved when every earlier waiter has been served or left
            # Re-checked after each sleep: a pause or a penalty may have moved the time.
            while (delay := self._delay(tokens)) > 0:
                if self.rate < self.base_rate:
                    # A slowed rate climbs back while we wait: look again soon.
                    delay = min(delay, self.penalty_hold / 4)
                await self._sleep(delay)
            self._take(tokens)
        finally:
            was_head = self._waiters[0] is turn
            self._waiters.remove(turn)
            if was_head and self._waiters and not self._waiters[0].done():
                self._waiters[0].set_result(None)

    async def __aenter__(self) -> TokenBucket:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


# ---------------------------------------------------------------- header parsing


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations (Go ``time.Duration`` strings): ``1s``, ``6m0s``, ``20ms``,
    ``1h2m3.5s``; a bare number is seconds. ``None`` for anything else."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total if position == len(text) else None


def seconds_until(timestamp: str, now: datetime | None = None) -> float | None:
    """Anthropic's RFC 3339 reset times, as seconds from ``now`` (never negative)."""
    try:
        when = datetime.fromisoformat(timestamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    current = now or datetime.now(when.tzinfo)
    return max((when - current).total_seconds(), 0.0)


def rate_limit_hint(
    headers: Mapping[str, str], now: datetime | None = None
) -> tuple[int, float | None] | None:
    """``(remaining requests, seconds until reset)`` from OpenAI's ``x-ratelimit-*`` or
    Anthropic's ``anthropic-ratelimit-requests-*`` headers (keys lower-cased), else None."""
    for remaining_key, reset_key, parse in (
        ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests", parse_duration),
        (
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
            lambda text: seconds_until(text, now),
        ),
    ):
        raw = headers.get(remaining_key)
        if raw is None:
            continue
        try:
            remaining = int(float(raw))
        except (ValueError, OverflowError):
            continue
        reset = headers.get(reset_key)
        return remaining, (parse(reset) if reset else None)
    return None
