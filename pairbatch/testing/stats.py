"""What the emulator saw: requests, faults sent, concurrency and request rates."""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict

import attrs


@attrs.define
class EmulatorStats:
    """Counters for one emulator. Timestamps are ``time.monotonic()`` seconds.

    ``requests`` is keyed by ``(provider, endpoint, status)``; a connection reset is
    recorded with status 0.
    """

    requests: Counter[tuple[str, str, int]] = attrs.field(factory=Counter)
    rate_limited: Counter[str] = attrs.field(factory=Counter)
    faults: Counter[tuple[str, str]] = attrs.field(factory=Counter)  # (provider, kind)
    batches_created: Counter[str] = attrs.field(factory=Counter)
    request_times: defaultdict[str, list[float]] = attrs.field(factory=lambda: defaultdict(list))
    peak_connections: int = 0
    peak_in_flight: int = 0
    in_flight: int = 0

    def reset(self) -> None:
        """Forget everything counted so far (requests still in flight stay counted)."""
        self.requests.clear()
        self.rate_limited.clear()
        self.faults.clear()
        self.batches_created.clear()
        self.request_times.clear()
        self.peak_connections = 0
        self.peak_in_flight = self.in_flight

    def count(
        self, provider: str | None = None, endpoint: str | None = None, status: int | None = None
    ) -> int:
        """Requests matching every filter given."""
        return sum(
            n
            for (p, e, s), n in self.requests.items()
            if (provider is None or p == provider)
            and (endpoint is None or e == endpoint)
            and (status is None or s == status)
        )

    def peak_rate(self, provider: str, window: float = 1.0) -> int:
        """The most requests to ``provider`` that arrived within any ``window`` seconds."""
        times = self.request_times.get(provider, [])
        best = 0
        for i, start in enumerate(times):
            j = bisect.bisect_right(times, start + window, lo=i)
            best = max(best, j - i)
        return best

    def started(self, provider: str, now: float, connections: int) -> None:
        self.request_times[provider].append(now)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.peak_connections = max(self.peak_connections, connections)

    def finished(self, provider: str, endpoint: str, status: int) -> None:
        self.in_flight -= 1
        self.requests[(provider, endpoint, status)] += 1

    def fault(self, provider: str, kind: str) -> None:
        self.faults[(provider, kind)] += 1
