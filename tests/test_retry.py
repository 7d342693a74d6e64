"""The retry rules (one test per rule) and the backoff-driven loop."""

from __future__ import annotations

import email.utils
import logging
import random
import time

import orjson
import pytest

from pairbatch.errors import ProviderError, RetryExhaustedError
from pairbatch.providers.gemini import per_day_quota
from pairbatch.providers.openai import insufficient_quota
from pairbatch.retry import (
    RetryPolicy,
    TransientError,
    call_with_retries,
    is_retryable,
    parse_retry_after,
)

QUICK = RetryPolicy(max_tries=4, base_delay=0.001, max_delay=0.002)


# ---------------------------------------------------------------- is_retryable


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable(status, {})


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 422])
def test_other_4xx_not_retried(status: int) -> None:
    assert not is_retryable(status, {})


def test_x_should_retry_false_wins_over_status() -> None:
    assert not is_retryable(503, {"x-should-retry": "false"})
    assert not is_retryable(429, {"X-Should-Retry": "FALSE"})


def test_x_should_retry_true_wins_over_status() -> None:
    assert is_retryable(400, {"X-Should-Retry": "true"})
    # Anything but true/false is ignored.
    assert not is_retryable(400, {"x-should-retry": "maybe"})


def test_openai_insufficient_quota_not_retried() -> None:
    by_code = {
        "error": {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}
    }
    assert not is_retryable(429, {"retry-after": "1"}, by_code, exhausted=insufficient_quota)
    by_type_only = {"error": {"message": "quota", "type": "insufficient_quota", "code": None}}
    assert not is_retryable(429, {}, by_type_only, exhausted=insufficient_quota)
    # Raw bytes work too.
    assert not is_retryable(429, {}, orjson.dumps(by_code), exhausted=insufficient_quota)
    rate_limited = {"error": {"type": "requests", "code": "rate_limit_exceeded", "message": "x"}}
    assert is_retryable(429, {}, rate_limited, exhausted=insufficient_quota)


def test_gemini_per_day_quota_not_retried_per_minute_is() -> None:
    def body(quota_id: str) -> dict[str, object]:
        return {
            "error": {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "message": "quota",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [{"quotaId": quota_id}],
                    },
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "58s"},
                ],
            }
        }

    day, minute = "GenerateRequestsPerDayPerProjectPerModel", "GenerateRequestsPerMinute"
    assert not is_retryable(429, {}, body(day + "-FreeTier"), exhausted=per_day_quota)
    assert per_day_quota(body(day + "-FreeTier"))
    assert is_retryable(429, {}, body(minute + "PerProjectPerModel"), exhausted=per_day_quota)


def test_odd_bodies_do_not_crash_classification() -> None:
    for body in (
        None,
        b"",
        b"not json",
        "text",
        [],
        {"error": "string"},
        {"error": {"details": ["x", 1, None]}},
        {"error": {"details": [{"violations": "nope"}]}},
        {"error": {"details": [{"violations": [None, 3]}]}},
    ):
        for quirk in (None, insufficient_quota, per_day_quota):
            assert is_retryable(429, {}, body, exhausted=quirk)


# ---------------------------------------------------------------- parse_retry_after


def test_retry_after_ms_first() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"Retry-After-Ms": "250.5"}) == pytest.approx(0.2505)


def test_retry_after_seconds() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after": "-4"}) == 0.0


def test_retry_after_http_date() -> None:
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30, abs=1.5)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now) == 0.0
    # "-0000" (no zone information) is read as UTC.
    naive = email.utils.formatdate(now + 10).rsplit(" ", 1)[0] + " -0000"
    assert parse_retry_after({"retry-after": naive}, now=now) == pytest.approx(10, abs=1.5)


def test_gemini_retry_delay() -> None:
    gemini = {"error": {"details": [{"@type": "x.RetryInfo", "retryDelay": "12.77s"}]}}
    assert parse_retry_after({}, gemini) == pytest.approx(12.77)
    assert parse_retry_after({}, orjson.dumps(gemini)) == pytest.approx(12.77)
    # Headers come first.
    assert parse_retry_after({"retry-after": "2"}, gemini) == 2.0


def test_unparsable_values_are_skipped_not_raised() -> None:
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": ""}) is None
    assert parse_retry_after({"retry-after-ms": "nan", "retry-after": "4"}) == 4.0
    assert parse_retry_after({"retry-after-ms": "x"}) is None
    assert parse_retry_after({}, {"error": {"details": [{"retryDelay": "PT5S"}]}}) is None
    assert parse_retry_after({}, b"<html>") is None


# ---------------------------------------------------------------- policy


def test_backoff_delay_bounds_and_jitter() -> None:
    policy = RetryPolicy()
    rng = random.Random(0)
    for k, top in enumerate([0.5, 1, 2, 4, 8, 8, 8]):
        delays = [policy.backoff_delay(k, rng) for _ in range(50)]
        assert all(0.75 * top <= d <= top for d in delays)
        assert max(delays) - min(delays) > 0.05 * top  # it does jitter


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_tries=0)
    with pytest.raises(ValueError):
        RetryPolicy(max_tries=True)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=-1)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=(1.0, 0.5))
    assert RetryPolicy(max_tries=1).max_tries == 1
    assert RetryPolicy(jitter=[0.5, 1.0]).jitter == (0.5, 1.0)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the loop


class Script:
    """An attempt function that raises the scripted errors in turn, then succeeds."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls: list[float] = []

    async def __call__(self) -> str:
        self.calls.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


@pytest.mark.parametrize("max_tries", [1, 2, 4])
async def test_tries_exactly_max_tries_then_gives_up(max_tries: int) -> None:
    script = Script(*[TransientError("openai", 503, "busy") for _ in range(10)])
    policy = RetryPolicy(max_tries=max_tries, base_delay=0.001, max_delay=0.002)
    with pytest.raises(RetryExhaustedError) as info:
        await call_with_retries(script, policy, provider="openai", what="GET /x")
    assert len(script.calls) == max_tries
    assert info.value.attempts == max_tries and info.value.status == 503
    assert info.value.provider == "openai"
    assert isinstance(info.value.last, TransientError)


async def test_success_after_transient_failures() -> None:
    script = Script(
        TransientError("anthropic", 529, "overloaded"), TransientError("anthropic", None, "reset")
    )
    assert await call_with_retries(script, QUICK, provider="anthropic", what="x") == "ok"
    assert len(script.calls) == 3


async def test_non_transient_error_is_not_retried() -> None:
    script = Script(ProviderError("gemini", 404, "not found"))
    with pytest.raises(ProviderError, match="404") as info:
        await call_with_retries(script, QUICK, provider="gemini", what="x")
    assert not isinstance(info.value, RetryExhaustedError)
    assert len(script.calls) == 1


async def test_server_delay_above_cap_gives_up_at_once() -> None:
    script = Script(TransientError("openai", 429, "later", server_delay=500))
    with pytest.raises(RetryExhaustedError) as info:
        await call_with_retries(script, RetryPolicy(max_tries=5), provider="openai", what="x")
    assert len(script.calls) == 1
    assert info.value.attempts == 1  # the real count, not max_tries
    assert "500 s" in info.value.message


async def test_server_delay_is_honoured_without_jitter() -> None:
    script = Script(TransientError("openai", 429, "wait", server_delay=0.3))
    await call_with_retries(script, RetryPolicy(max_tries=2, base_delay=5), provider="o", what="x")
    gap = script.calls[1] - script.calls[0]
    assert 0.29 <= gap < 0.5  # the server's 0.3 s, not the 5 s backoff nor a jittered 0.225


async def test_exponential_backoff_between_tries() -> None:
    script = Script(*[TransientError("openai", 500, "x") for _ in range(3)])
    policy = RetryPolicy(max_tries=4, base_delay=0.05, max_delay=0.1)
    await call_with_retries(script, policy, provider="o", what="x")
    gaps = [b - a for a, b in zip(script.calls, script.calls[1:], strict=False)]
    # 0.05·U[.75,1], 0.1·U[.75,1], then capped at 0.1·U[.75,1]
    assert 0.035 <= gaps[0] <= 0.08
    assert 0.07 <= gaps[1] <= 0.14
    assert 0.07 <= gaps[2] <= 0.14


async def test_retries_are_logged_with_provider_status_attempt_and_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pairbatch.retry")
    script = Script(TransientError("anthropic", 529, "overloaded", server_delay=0.01))
    await call_with_retries(script, QUICK, provider="anthropic", what="GET http://h/v1/x")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(
        "anthropic" in m and "HTTP 529" in m and "attempt 1 of 4" in m and "0.01 s" in m
        for m in lines
    ), lines


def test_each_providers_quota_quirk_reaches_its_clients_policy() -> None:
    from pairbatch.models import Provider
    from pairbatch.session import Session

    session = Session()
    assert session.retry_policy(Provider.OPENAI).exhausted is insufficient_quota
    assert session.retry_policy(Provider.GEMINI).exhausted is per_day_quota
    assert session.retry_policy(Provider.ANTHROPIC).exhausted is None
