from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pairbatch.limiter import TokenBucket, parse_duration, seconds_until


class FakeTime:
    """A clock and a sleep that advances it, so limiter tests are exact and instant."""

    def __init__(self) -> None:
        self.now = 0.0
        self.grants: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def test_burst_then_rate() -> None:
    t = FakeTime()
    bucket = TokenBucket(rate=10, burst=3, clock=t.clock, sleep=t.sleep)
    for _ in range(13):
        await bucket.acquire()
        t.grants.append(t.now)
    assert t.grants[:3] == [0, 0, 0]
    assert t.grants[-1] == pytest.approx(1.0)


async def test_fifo_order() -> None:
    t = FakeTime()
    bucket = TokenBucket(rate=5, burst=1, clock=t.clock, sleep=t.sleep)
    order: list[int] = []

    async def take(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    await asyncio.gather(*(take(i) for i in range(20)))
    assert order == list(range(20))


async def test_cancelled_waiter_leaves_no_debt() -> None:
    bucket = TokenBucket(rate=20, burst=1)
    await bucket.acquire()
    victims = [asyncio.create_task(bucket.acquire()) for _ in range(5)]
    await asyncio.sleep(0.01)
    for task in victims:
        task.cancel()
    await asyncio.gather(*victims, return_exceptions=True)
    start = time.monotonic()
    await bucket.acquire()
    # Only the one token owed since the first acquire is waited for, not six.
    assert time.monotonic() - start < 0.1


async def test_cancelled_head_does_not_block_the_queue() -> None:
    bucket = TokenBucket(rate=10, burst=1)
    await bucket.acquire()
    head = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)
    behind = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0.01)
    head.cancel()
    await asyncio.wait_for(behind, 1.0)


async def test_pause_stops_everyone_and_only_extends() -> None:
    t = FakeTime()
    bucket = TokenBucket(rate=100, burst=10, clock=t.clock, sleep=t.sleep)
    bucket.pause(2.0)
    bucket.pause(0.5)  # shorter: ignored
    assert bucket.paused_until == 2.0
    await bucket.acquire()
    assert t.now >= 2.0


async def test_observe_remaining_pauses_until_reset() -> None:
    t = FakeTime()
    bucket = TokenBucket(rate=100, burst=10, clock=t.clock, sleep=t.sleep)
    bucket.observe_remaining(5, 3.0)
    assert bucket.paused_until == 0
    bucket.observe_remaining(0, 3.0)
    assert bucket.paused_until == 3.0


def test_header_formats() -> None:
    assert parse_duration("1s") == 1.0
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("2.5") == 2.5
    assert parse_duration("soon") is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = (now + timedelta(seconds=7)).isoformat().replace("+00:00", "Z")
    assert seconds_until(later, now) == pytest.approx(7.0)
    assert seconds_until("garbage") is None


@settings(max_examples=40, deadline=None)
@given(
    rate=st.floats(0.5, 50),
    burst=st.integers(1, 10),
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=60),
)
def test_grants_never_exceed_burst_plus_rate_times_window(
    rate: float, burst: int, gaps: list[float]
) -> None:
    t = FakeTime()

    async def run() -> None:
        bucket = TokenBucket(rate=rate, burst=burst, clock=t.clock, sleep=t.sleep)
        for gap in gaps:
            t.now += gap
            await bucket.acquire()
            t.grants.append(t.now)

    asyncio.run(run())
    grants = t.grants
    for i in range(len(grants)):
        for j in range(i, len(grants)):
            window = grants[j] - grants[i]
            assert j - i + 1 <= burst + rate * window + 1e-6


async def test_real_time_rate() -> None:
    bucket = TokenBucket(rate=50, burst=5)
    start = time.monotonic()
    await asyncio.gather(*(bucket.acquire() for _ in range(30)))
    elapsed = time.monotonic() - start
    assert elapsed == pytest.approx((30 - 5) / 50, abs=0.15)
