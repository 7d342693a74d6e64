"""TokenBucket: fairness, cancellation, pauses, header adaptation, the rate bound."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pairbatch.limiter import TokenBucket, parse_duration, rate_limit_hint, seconds_until


class FakeTime:
    """A clock and a sleep that advances it, so limiter tests are exact and instant."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the limiter must never sleep for nothing (busy loop)"
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    def bucket(self, rate: float, burst: float = 1.0) -> TokenBucket:
        return TokenBucket(rate, burst, clock=self.clock, sleep=self.sleep)


async def test_burst_then_rate() -> None:
    t = FakeTime()
    bucket = t.bucket(rate=10, burst=3)
    grants = []
    for _ in range(13):
        await bucket.acquire()
        grants.append(t.now)
    assert grants[:3] == [0, 0, 0]
    assert grants[3] == pytest.approx(0.1)
    assert grants[-1] == pytest.approx(1.0)


async def test_context_manager() -> None:
    t = FakeTime()
    bucket = t.bucket(rate=2)
    async with bucket:
        pass
    async with bucket:
        pass
    assert t.now == pytest.approx(0.5)


def test_validation() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(math.inf)
    with pytest.raises(ValueError):
        TokenBucket(1, burst=0.5)


async def test_acquire_more_than_burst_is_an_error() -> None:
    with pytest.raises(ValueError):
        await TokenBucket(1, burst=2).acquire(3)
    with pytest.raises(ValueError):
        await TokenBucket(1).acquire(0)


async def test_fifo_order() -> None:
    t = FakeTime()
    bucket = t.bucket(rate=5)
    order: list[int] = []

    async def take(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    await asyncio.gather(*(take(i) for i in range(20)))
    assert order == list(range(20))


async def test_small_request_never_overtakes_a_large_one() -> None:
    t = FakeTime()
    bucket = t.bucket(rate=1, burst=4)
    await bucket.acquire(4)  # empty
    order: list[str] = []

    async def take(name: str, tokens: float) -> None:
        await bucket.acquire(tokens)
        order.append(name)

    big = asyncio.create_task(take("big", 3))
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 1))
    await asyncio.gather(big, small)
    # The small one could have gone at t=1, but it queued behind the big one (t=3).
    assert order == ["big", "small"]
    assert t.now == pytest.approx(4.0)


async def test_cancelled_waiter_leaves_no_debt() -> None:
    t = FakeTime()
    bucket = t.bucket(rate=10)
    await bucket.acquire()
    victims = [asyncio.create_task(bucket.acquire()) for _ in range(5)]
    await asyncio.sleep(0)  # all queued; the head is asleep
    for task in victims:
        task.cancel()
    await asyncio.gather(*victims, return_exceptions=True)
    assert bucket.waiting == 0
    t.now = 0.1  # exactly one token has come back since the first grant
    before = len(t.sleeps)
    await bucket.acquire()
    assert len(t.sleeps) == before  # granted at once: the cancelled five took nothing


async def test_cancelled_head_does_not_block_the_queue() -> None:
    bucket = TokenBucket(rate=10)
    await bucket.acquire()
    head = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)
    behind = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0.01)
    head.cancel()
    start = time.monotonic()
    await asyncio.wait_for(behind, 1.0)
    # ``behind`` inherits the head's slot: it waits the remaining ~0.09 s, not 0.2 s.
    assert time.monotonic() - start < 0.15
    assert bucket.waiting == 0


async def test_cancelled_middle_waiter_keeps_order() -> None:
    t = FakeTime()
    bucket = t.bucket(rate=1)
    await bucket.acquire()
    order: list[int] = []

    async def take(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    tasks = [asyncio.create_task(take(i)) for i in range(4)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == [0, 2, 3]
    assert t.now == pytest.approx(3.0)


async def test_pause_stops_everyone_and_only_extends() -> None:
    t = FakeTime()
    bucket = t.bucket(rate=100, burst=10)
    bucket.pause(2.0)
    bucket.pause(0.5)  # shorter: ignored
    assert bucket.paused_until == 2.0
    grants: list[float] = []

    async def take() -> None:
        await bucket.acquire()
        grants.append(t.now)

    await asyncio.gather(*(take() for _ in range(5)))
    # One probe at the deadline, then the rate: never the whole burst at once.
    assert grants[0] == pytest.approx(2.0)
    assert grants == pytest.approx([2.0, 2.01, 2.02, 2.03, 2.04])


async def test_pause_extended_while_waiting() -> None:
    t = FakeTime()
    bucket = t.bucket(rate=10)
    await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)  # the fake sleep has already moved the clock to 0.1
    bucket.pause(5.0)
    await waiter
    assert bucket.paused_until == pytest.approx(5.1)
    assert t.now == pytest.approx(5.1)


async def test_pause_never_grants_more_than_the_bucket_would() -> None:
    # A short pause right after a grant must not hand out a free token at its end.
    t = FakeTime()
    bucket = t.bucket(rate=1)
    await bucket.acquire()
    bucket.pause(0.1)
    await bucket.acquire()
    assert t.now == pytest.approx(1.0)


async def test_penalize_once_per_congestion_event_and_recovery() -> None:
    t = FakeTime()
    bucket = t.bucket(rate=8)
    for _ in range(4):
        await bucket.acquire()
    sent = t.now
    # One of the four sent since the start was refused: the rate lands on the share
    # the server admitted.
    assert bucket.penalize(sent)
    assert bucket.rate == pytest.approx(6.0)
    # More 429s for requests granted before that penalty, or within the hold: one
    # congestion event, no more slowing.
    assert not bucket.penalize(sent)
    assert not bucket.penalize(t.now)
    assert bucket.rate == pytest.approx(6.0)
    # Time wins it back (a quarter of the configured rate per second), never above it.
    t.now += 0.5
    await bucket.acquire()
    assert bucket.rate == pytest.approx(7.0, rel=0.02)
    t.now += 10.0
    await bucket.acquire()
    assert bucket.rate == 8


async def test_a_429_at_full_rate_leaves_a_margin_that_time_wins_back() -> None:
    # A server limiting at exactly the configured rate: after its first 429 the bucket
    # stays a margin below that rate (sends a busy loop delays can then bunch without
    # a refusal), and only creeps back to it over tens of seconds.
    t = FakeTime()
    bucket = t.bucket(rate=200)
    for _ in range(20):
        await bucket.acquire()
    assert bucket.penalize(None)  # 1 of 20 refused: lands on the margin, not 190 * 0.95
    assert bucket.rate == pytest.approx(190.0)
    start, rates = t.now, []
    for _ in range(500):  # 2.6 s of steady sending
        await bucket.acquire()
        rates.append(bucket.rate)
    creep = 200 * TokenBucket.ceiling_recovery * (t.now - start)
    assert t.now - start > 2.5 and max(rates) <= 190 + creep + 1e-6
    # A 429 on the way up (below the ceiling) does not lower the ceiling again.
    t.now += 1.0
    bucket._recover(t.now)
    bucket._granted_since = 10
    assert bucket.penalize(None)
    slowed = bucket.rate
    t.now += 2.0
    await bucket.acquire()
    assert bucket.rate > slowed
    t.now += 15.0
    await bucket.acquire()
    assert bucket.rate == 200


async def test_penalty_after_the_hold_uses_every_429_counted_during_it() -> None:
    t = FakeTime()
    bucket = t.bucket(rate=10)
    for _ in range(10):
        await bucket.acquire()
    assert bucket.penalize(None)  # 1 of 10 refused
    assert bucket.rate == pytest.approx(9.0)
    for _ in range(8):
        await bucket.acquire()
    assert not bucket.penalize(None) and not bucket.penalize(None)  # held, but counted
    t.now += 1.0
    bucket._recover(t.now)
    before = bucket.rate
    assert bucket.penalize(None)  # 3 of 8 refused since the last penalty
    assert bucket.rate == pytest.approx(before * 5 / 8)


async def test_a_storm_drops_to_the_floor_and_recovers_within_seconds() -> None:
    t = FakeTime()
    bucket = t.bucket(rate=20)
    await bucket.acquire()
    for _ in range(5):  # a storm: everything refused, halved every second
        assert bucket.penalize(None)
        t.now += 1.0
    assert bucket.rate <= 0.3 * 20
    start = t.now
    while bucket.rate < 0.9 * 20:
        await bucket.acquire()
    assert t.now - start < 4.0


async def test_observe_remaining_pauses_until_reset() -> None:
    t = FakeTime()
    bucket = t.bucket(rate=100, burst=10)
    bucket.observe_remaining(5, 3.0)
    assert bucket.paused_until == -math.inf
    bucket.observe_remaining(0, None)
    assert bucket.paused_until == -math.inf
    bucket.observe_remaining(0, 3.0)
    assert bucket.paused_until == 3.0
    bucket.observe_remaining(0, 86_400)  # a daily quota: capped, the server's 429 decides
    assert bucket.paused_until == TokenBucket.max_header_pause


async def test_observe_headers_openai_and_anthropic() -> None:
    t = FakeTime()
    bucket = t.bucket(rate=100)
    bucket.observe_headers(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"}
    )
    assert bucket.paused_until == 1.5
    reset = (datetime.now(UTC) + timedelta(seconds=20)).isoformat().replace("+00:00", "Z")
    bucket.observe_headers(
        {"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": reset}
    )
    assert bucket.paused_until == pytest.approx(20, abs=1)


def test_duration_formats() -> None:
    assert parse_duration("1s") == 1.0
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("2.5") == 2.5
    assert parse_duration("0s") == 0.0
    for bad in ("soon", "", "1x", "s", "-1", "1s2", "nan"):
        assert parse_duration(bad) is None, bad


def test_rfc3339_reset() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = (now + timedelta(seconds=7)).isoformat().replace("+00:00", "Z")
    assert seconds_until(later, now) == pytest.approx(7.0)
    assert seconds_until("2025-12-31T23:59:00Z", now) == 0.0
    assert seconds_until("2026-01-01T00:00:07", now) is None  # no zone: not RFC 3339
    assert seconds_until("garbage") is None


def test_rate_limit_hint() -> None:
    assert rate_limit_hint({}) is None
    assert rate_limit_hint({"x-ratelimit-remaining-requests": "59"}) == (59, None)
    assert rate_limit_hint(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
    ) == (0, 360.0)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    hint = rate_limit_hint(
        {
            "anthropic-ratelimit-requests-remaining": "3",
            "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:30Z",
        },
        now,
    )
    assert hint == (3, 30.0)
    assert rate_limit_hint({"x-ratelimit-remaining-requests": "lots"}) is None


# An arrival: (seconds after the previous one, tokens, pause to apply first or 0).
arrivals = st.lists(
    st.tuples(st.floats(0, 0.5), st.sampled_from([1.0, 1.0, 1.0, 0.5, 2.0]), st.floats(0, 1)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rate=st.floats(0.5, 50), burst=st.integers(2, 10), plan=arrivals, concurrent=st.booleans())
def test_grants_never_exceed_burst_plus_rate_times_window(
    rate: float, burst: int, plan: list[tuple[float, float, float]], concurrent: bool
) -> None:
    t = FakeTime()
    grants: list[tuple[float, float]] = []

    async def run() -> None:
        bucket = t.bucket(rate, burst)

        async def take(tokens: float) -> None:
            await bucket.acquire(tokens)
            grants.append((t.now, tokens))

        tasks = []
        for gap, tokens, pause in plan:
            t.now += gap
            if pause > 0.8:
                bucket.pause(pause)
            if concurrent:
                tasks.append(asyncio.create_task(take(tokens)))
                await asyncio.sleep(0)
            else:
                await take(tokens)
        await asyncio.gather(*tasks)

    asyncio.run(run())
    assert len(grants) == len(plan)
    times = [g[0] for g in grants]
    assert times == sorted(times)
    for i in range(len(grants)):
        total = 0.0
        for j in range(i, len(grants)):
            total += grants[j][1]
            window = grants[j][0] - grants[i][0]
            # The driver advancing the clock while a waiter sleeps is a late wake-up:
            # that time is owed to the waiter, up to the bucket's timer slack.
            assert total <= burst + rate * (window + TokenBucket.timer_slack) + 1e-6


async def test_late_wakeups_do_not_cost_rate() -> None:
    """A busy loop wakes the head waiter late; the bucket makes that time up (within its
    slack) instead of running at ``1 / (1/rate + lateness)``."""
    t = FakeTime()
    late = 0.002

    async def oversleep(seconds: float) -> None:
        await t.sleep(seconds + late)

    bucket = TokenBucket(50, 1, clock=t.clock, sleep=oversleep)
    grants: list[float] = []

    async def take() -> None:
        await bucket.acquire()
        grants.append(t.now)

    await asyncio.gather(*(take() for _ in range(201)))
    # 200 intervals of 20 ms; losing 2 ms each would take 4.4 s.
    assert grants[-1] == pytest.approx(4.0, abs=0.01)
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    # Never closer than the slack allows, never an idle bucket's worth of burst.
    assert min(gaps) >= 0.02 - TokenBucket.timer_slack - 1e-9
    assert bucket.waiting == 0
    # Once nobody waits, the level is capped at ``burst`` again.
    t.now += 10
    await bucket.acquire()
    assert bucket._delay(1) > 0


async def test_real_time_rate() -> None:
    bucket = TokenBucket(rate=50, burst=5)
    start = time.monotonic()
    await asyncio.gather(*(bucket.acquire() for _ in range(30)))
    elapsed = time.monotonic() - start
    assert elapsed == pytest.approx((30 - 5) / 50, abs=0.08)


async def test_no_background_tasks() -> None:
    before = len(asyncio.all_tasks())
    bucket = TokenBucket(rate=1000, burst=1)
    await asyncio.gather(*(bucket.acquire() for _ in range(10)))
    assert len(asyncio.all_tasks()) == before


async def test_rate_comes_back_after_a_storm_and_holds_under_random_429s() -> None:
    # The loose version of benchmarks/bench_429.py (which prints the full figures).
    from tests.load_429 import drive, recovery_seconds

    stormy = await drive(rate=20, seconds=5.5, storm=(0.5, 1.5))
    assert recovery_seconds(stormy, 1.5, target=0.8 * 20) < 4.0
    noisy = await drive(rate=20, seconds=5.0, share=0.3)
    admitted = noisy.rate(1.5, 5.0, admitted_only=True)
    assert admitted >= 0.4 * (0.7 * 20), admitted  # the server admits 14/s at the full rate
