"""An async token bucket: fair, cancellation-safe, pausable by the server's Retry-After."""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from types import TracebackType

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


class TokenBucket:
    """Grant at most ``burst + rate * t`` acquisitions over any window of ``t`` seconds.

    Waiters are served strictly first come, first served; a cancelled waiter leaves no
    debt and does not hold up those behind it. No background task: the head waiter
    sleeps until its token is due, everyone else waits on a future.
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.rate = float(rate)
        self.base_rate = float(rate)
        self.ceiling = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._paused_until = 0.0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst})"

    def _refill(self) -> None:
        now = self._clock()
        start = max(self._updated, self._paused_until) if now > self._paused_until else now
        if now > start:
            self._tokens = min(self.burst, self._tokens + (now - start) * self.rate)
        self._updated = now

    def _delay(self, tokens: float) -> float:
        """Seconds until ``tokens`` are available (0 when they are now)."""
        self._refill()
        now = self._clock()
        if now < self._paused_until:
            # After a pause the bucket restarts empty: the server just said "slow down".
            return self._paused_until - now + tokens / self.rate
        # Float refills can land a hair short of a whole token; that is a whole token.
        if self._tokens >= tokens - 1e-9:
            return 0.0
        return (tokens - self._tokens) / self.rate

    def pause(self, seconds: float) -> None:
        self.pause_until(self._clock() + seconds)

    def pause_until(self, deadline: float) -> None:
        """Grant nothing before ``deadline`` (clock seconds); pauses only ever extend."""
        if deadline > self._paused_until:
            self._paused_until = deadline
            self._tokens = 0.0
            self._updated = deadline

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def penalize(self) -> None:
        """A 429 said this rate is too fast: halve it, and never come back above 90%
        of the rate that was refused (additive recovery up to that ceiling)."""
        self.ceiling = max(self.rate * 0.9, self.base_rate / 16)
        self.rate = max(self.rate / 2, self.base_rate / 16)

    def _recover(self) -> None:
        if self.rate < self.ceiling:
            self.rate = min(self.ceiling, self.rate + self.base_rate * 0.02)

    def observe_remaining(self, remaining: int | None, reset_seconds: float | None) -> None:
        """Slow down before a 429: the server says no requests are left until reset."""
        if remaining is not None and remaining <= 0 and reset_seconds and reset_seconds > 0:
            self.pause(reset_seconds)

    async def acquire(self, tokens: float = 1.0) -> None:
        if tokens > self.burst:
            raise ValueError(f"cannot acquire {tokens} tokens from a bucket of {self.burst}")
        if not self._waiters and self._delay(tokens) == 0:
            self._tokens = max(self._tokens - tokens, 0.0)
            self._recover()
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            if self._waiters[0] is not turn:
                await turn  # resolved when every earlier waiter has been served
            while (delay := self._delay(tokens)) > 0:
                await self._sleep(delay)
            self._tokens = max(self._tokens - tokens, 0.0)
            self._recover()
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


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations: ``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        value, unit = float(match.group(1)), match.group(2)
        total += value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
        position = match.end()
    return total if position == len(text) and position else None


def seconds_until(timestamp: str, now: datetime | None = None) -> float | None:
    """Anthropic's RFC 3339 reset times, as seconds from ``now``."""
    try:
        when = datetime.fromisoformat(timestamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    current = now or datetime.now(when.tzinfo)
    return max((when - current).total_seconds(), 0.0)
