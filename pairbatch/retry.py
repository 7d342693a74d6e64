"""When to retry a provider call, and how long to wait (the official SDKs' rules).

Retried: connection errors and timeouts, HTTP 408, 409, 429, 5xx and 529, unless the
server says ``x-should-retry: false`` (or forces a retry with ``true``). Never retried:
other 4xx, OpenAI ``insufficient_quota`` and Gemini per-day quota 429s, which cannot
succeed until a human acts or the day ends. The wait is the server's own delay when it
gives one (``retry-after-ms``, ``retry-after`` in seconds or as an HTTP date, Gemini's
``RetryInfo.retryDelay``), else ``min(base * 2**k, max_delay)`` times a jitter in
[0.75, 1]. A server delay above ``max_server_delay`` gives up rather than hammer early.
The loop itself is the ``backoff`` package's, fed by a wait generator that reads the
server's delay off each exception.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any, TypeVar

import attrs
import backoff

from pairbatch.errors import ProviderError, RetryExhaustedError

log = logging.getLogger("pairbatch.retry")

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 409, 429, 529})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _positive_int(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """``max_tries`` counts every attempt (the reference's ``openai_max_retries``)."""

    max_tries: int = attrs.field(default=4, validator=_positive_int)
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_server_delay: float = 120.0
    jitter: tuple[float, float] = (0.75, 1.0)

    def backoff_delay(self, retries_so_far: int, rng: random.Random | None = None) -> float:
        delay = min(self.base_delay * 2**retries_so_far, self.max_delay)
        low, high = self.jitter
        return float(delay * (rng or random).uniform(low, high))


class TransientError(ProviderError):
    """A failure worth another try; ``server_delay`` is the wait the server asked for."""

    def __init__(
        self,
        provider: str,
        status: int | None,
        message: str,
        *,
        error_type: str | None = None,
        server_delay: float | None = None,
    ) -> None:
        super().__init__(provider, status, message, error_type=error_type, retryable=True)
        self.server_delay = server_delay


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _error_details(body: object) -> list[Any]:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("details"), list):
            return list(error["details"])
    return []


def parse_retry_after(
    headers: Mapping[str, str], body: object = None, *, now: float | None = None
) -> float | None:
    """The server's requested wait in seconds, or ``None`` when it named none."""
    value = _header(headers, "retry-after-ms")
    if value is not None:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if value is not None:
        try:
            return max(float(value), 0.0)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value) if value.strip() else None
            if parsed is not None:
                return max(parsed.timestamp() - (now if now is not None else time.time()), 0.0)
    for detail in _error_details(body):
        if isinstance(detail, dict) and isinstance(detail.get("retryDelay"), str):
            match = _DURATION.match(detail["retryDelay"])
            if match:
                return float(match.group(1))
    return None


def _quota_exhausted(body: object) -> bool:
    if not isinstance(body, dict):
        return False
    error = body.get("error")
    if isinstance(error, dict):
        if "insufficient_quota" in (error.get("code"), error.get("type")):
            return True
        for detail in _error_details(body):
            for violation in (detail or {}).get("violations") or []:
                if "PerDay" in str((violation or {}).get("quotaId", "")):
                    return True
    return False


def is_retryable(status: int, headers: Mapping[str, str], body: object = None) -> bool:
    forced = _header(headers, "x-should-retry")
    if forced is not None and forced.strip().lower() in ("true", "false"):
        return forced.strip().lower() == "true"
    if status == 429 and _quota_exhausted(body):
        return False
    return status in RETRY_STATUSES or status >= 500


def _wait_gen(policy: RetryPolicy) -> Generator[float, Any, None]:
    """A backoff wait generator: each retry sends in the exception that caused it."""
    retries = 0
    exc = yield 0.0
    while True:
        delay = getattr(exc, "server_delay", None)
        if delay is None or delay <= 0:
            delay = policy.backoff_delay(retries)
        retries += 1
        exc = yield delay


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]], policy: RetryPolicy, *, provider: str, what: str
) -> T:
    """Run ``attempt`` until it succeeds, raises a non-transient error, or runs out of tries.

    ``attempt`` raises :class:`TransientError` for what is worth retrying.
    """

    def give_up(exc: Exception) -> bool:
        delay = getattr(exc, "server_delay", None)
        return delay is not None and delay > policy.max_server_delay

    def on_backoff(details: Any) -> None:
        exc = details.get("exception")
        log.info(
            "%s %s: %s; retry %d of %d in %.2f s",
            provider,
            what,
            getattr(exc, "message", exc),
            details["tries"],
            policy.max_tries - 1,
            details["wait"],
        )

    retrying = backoff.on_exception(
        _wait_gen,
        TransientError,
        max_tries=policy.max_tries,
        jitter=None,
        giveup=give_up,
        on_backoff=on_backoff,
        logger=None,
        policy=policy,
    )(attempt)
    try:
        return await retrying()
    except TransientError as exc:
        raise RetryExhaustedError(exc, policy.max_tries) from exc
