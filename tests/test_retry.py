from __future__ import annotations

import email.utils
import time

import pytest

from pairbatch.errors import ProviderError, RetryExhaustedError
from pairbatch.retry import (
    RetryPolicy,
    TransientError,
    call_with_retries,
    is_retryable,
    parse_retry_after,
)


def test_retryable_statuses() -> None:
    for status in (408, 409, 429, 500, 502, 503, 504, 529):
        assert is_retryable(status, {})
    for status in (400, 401, 403, 404, 413, 422):
        assert not is_retryable(status, {})


def test_x_should_retry_wins() -> None:
    assert not is_retryable(503, {"x-should-retry": "false"})
    assert is_retryable(400, {"X-Should-Retry": "true"})


def test_quota_errors_are_not_retried() -> None:
    assert not is_retryable(429, {}, {"error": {"code": "insufficient_quota", "message": "x"}})
    per_day = {
        "error": {
            "code": 429,
            "details": [{"violations": [{"quotaId": "GenerateRequestsPerDayPerProject"}]}],
        }
    }
    assert not is_retryable(429, {}, per_day)
    per_minute = {"error": {"details": [{"violations": [{"quotaId": "PerMinute"}]}]}}
    assert is_retryable(429, {}, per_minute)


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30, abs=1.5)
    gemini = {"error": {"details": [{"@type": "RetryInfo", "retryDelay": "12.77s"}]}}
    assert parse_retry_after({}, gemini) == pytest.approx(12.77)
    assert parse_retry_after({}) is None


def test_backoff_delay_bounds() -> None:
    policy = RetryPolicy()
    for k, top in enumerate([0.5, 1, 2, 4, 8, 8]):
        delay = policy.backoff_delay(k)
        assert 0.75 * top <= delay <= top


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_tries=0)


async def test_tries_exactly_max_tries_then_gives_up() -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        raise TransientError("openai", 503, "busy", server_delay=0.001)

    with pytest.raises(RetryExhaustedError) as info:
        await call_with_retries(flaky, RetryPolicy(max_tries=3), provider="openai", what="GET x")
    assert calls == 3
    assert info.value.attempts == 3 and info.value.status == 503


async def test_success_after_transient_failures() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TransientError("anthropic", 529, "overloaded", server_delay=0.001)
        return "ok"

    assert await call_with_retries(flaky, RetryPolicy(max_tries=5), provider="a", what="x") == "ok"
    assert calls == 3


async def test_non_transient_error_is_not_retried() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ProviderError("gemini", 404, "not found")

    with pytest.raises(ProviderError, match="404"):
        await call_with_retries(broken, RetryPolicy(max_tries=5), provider="g", what="x")
    assert calls == 1


async def test_server_delay_above_cap_gives_up_at_once() -> None:
    calls = 0

    async def far() -> None:
        nonlocal calls
        calls += 1
        raise TransientError("openai", 429, "later", server_delay=500)

    with pytest.raises(RetryExhaustedError):
        await call_with_retries(far, RetryPolicy(max_tries=5), provider="o", what="x")
    assert calls == 1


async def test_server_delay_is_honoured() -> None:
    calls: list[float] = []

    async def slow_down() -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise TransientError("openai", 429, "wait", server_delay=0.3)
        return "ok"

    await call_with_retries(slow_down, RetryPolicy(max_tries=2), provider="o", what="x")
    assert calls[1] - calls[0] >= 0.29
