"""When to retry a provider call, and how long to wait (the official SDKs' rules).

Retried: connection errors and timeouts, HTTP 408, 409, 429, 5xx and 529, unless the
server says ``x-should-retry: false`` (or forces a retry with ``true``). Never retried:
other 4xx, and the 429s a provider's module says cannot succeed until a human acts or the
day ends (OpenAI ``insufficient_quota``, Gemini per-day quotas: ``RetryPolicy.exhausted``).
The wait is the server's own delay when it gives one (``retry-after-ms``,
``retry-after`` in seconds or as an HTTP date, Gemini's ``RetryInfo.retryDelay``), else
``min(base * 2**k, max_delay)`` times a jitter in [0.75, 1]. A server delay above
``max_server_delay`` gives up at once rather than hammer the server early or sit
silently for an hour.

The loop itself is the ``backoff`` package's ``on_exception``: backoff 2.x sends each
caught exception into the wait generator (``_next_wait`` calls ``wait.send(exc)``), so
the generator reads the server's delay off the exception and no wait is ever guessed.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from datetime import UTC
from typing import Any, TypeVar

import attrs
import backoff
import orjson

from pairbatch.errors import ProviderError, RetryExhaustedError

log = logging.getLogger("pairbatch.retry")

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 409, 429, 529})
# protobuf Duration in its JSON form: "58s", "12.771204034s".
_PROTO_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _positive_int(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _jitter_range(_: object, attribute: attrs.Attribute[Any], value: tuple[float, float]) -> None:
    low, high = value
    if not (0 <= low <= high):
        raise ValueError(f"{attribute.name} must be (low, high) with 0 <= low <= high")


@attrs.frozen
class RetryPolicy:
    """How often and how patiently to retry.

    ``max_tries`` counts every attempt, the first included (the reference's
    ``openai_max_retries``). Backoff after the k-th retry (k = 0, 1, ...) is
    ``min(base_delay * 2**k, max_delay) * U(jitter)``; a server-named delay is used as
    is when it is at most ``max_server_delay`` and makes the call give up when above.
    """

    max_tries: int = attrs.field(default=4, validator=_positive_int)
    base_delay: float = attrs.field(default=0.5, validator=_non_negative)
    max_delay: float = attrs.field(default=8.0, validator=_non_negative)
    max_server_delay: float = attrs.field(default=120.0, validator=_non_negative)
    jitter: tuple[float, float] = attrs.field(
        default=(0.75, 1.0), converter=tuple, validator=_jitter_range
    )
    #: The provider's test for a 429 no retry can fix (see :func:`is_retryable`).
    exhausted: Callable[[object], bool] | None = attrs.field(default=None, eq=False)

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


# ---------------------------------------------------------------- classification


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _as_json(body: object) -> object:
    """Accept the parsed body or its raw bytes/text; anything unparsable is ``None``."""
    if isinstance(body, bytes | bytearray | memoryview | str):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
    return body


def _error_object(body: object) -> dict[str, Any]:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return error
    return {}


def _error_details(body: object) -> list[dict[str, Any]]:
    details = _error_object(body).get("details")
    if isinstance(details, list):
        return [d for d in details if isinstance(d, dict)]
    return []


def _finite_seconds(value: float) -> float | None:
    if math.isnan(value):
        return None
    return max(value, 0.0)  # inf stays inf: "far too long", the cap gives up on it


def parse_retry_after(
    headers: Mapping[str, str], body: object = None, *, now: float | None = None
) -> float | None:
    """The server's requested wait in seconds, or ``None`` when it named none.

    Order as the OpenAI/Anthropic SDKs: ``retry-after-ms``, then ``retry-after`` as
    seconds or an HTTP date; then Gemini's ``error.details[].retryDelay`` (``"12.77s"``).
    ``body`` is the parsed JSON body or its raw bytes. Unparsable values are skipped.
    """
    value = _header(headers, "retry-after-ms")
    if value is not None:
        try:
            seconds = _finite_seconds(float(value) / 1000.0)
        except ValueError:
            seconds = None
        if seconds is not None:
            return seconds
    value = _header(headers, "retry-after")
    if value is not None:
        try:
            seconds = _finite_seconds(float(value))
        except ValueError:
            seconds = _http_date_delay(value, now)
        if seconds is not None:
            return seconds
    for detail in _error_details(_as_json(body)):
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and (match := _PROTO_DURATION.match(delay)):
            return float(match.group(1))
    return None


def _http_date_delay(value: str, now: float | None) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with unknown local offset (RFC 5322)
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def error_object(body: object) -> dict[str, Any]:
    """The ``error`` object of a JSON error body (parsed, bytes or text), or ``{}``."""
    return _error_object(_as_json(body))


def error_details(body: object) -> list[dict[str, Any]]:
    """The ``error.details[]`` entries of a Google-style error body."""
    return _error_details(_as_json(body))


def is_retryable(
    status: int,
    headers: Mapping[str, str],
    body: object = None,
    *,
    exhausted: Callable[[object], bool] | None = None,
) -> bool:
    """Whether an HTTP answer is worth another try (``x-should-retry`` decides first).

    ``exhausted`` is the provider's own test for a 429 that no retry within a run can fix
    (OpenAI ``insufficient_quota``, a Gemini per-day quota; see each provider's module).
    """
    forced = _header(headers, "x-should-retry")
    if forced is not None and forced.strip().lower() in ("true", "false"):
        return forced.strip().lower() == "true"
    if status == 429 and exhausted is not None and exhausted(_as_json(body)):
        return False
    return status in RETRY_STATUSES or status >= 500


# ---------------------------------------------------------------- the loop


def _wait_gen(policy: RetryPolicy) -> Generator[float, Any, None]:
    """A backoff wait generator: each retry sends in the exception that caused it."""
    retries = 0
    exc = yield 0.0  # backoff primes the generator with send(None)
    while True:
        delay = getattr(exc, "server_delay", None)
        if delay is None or not delay > 0:
            delay = policy.backoff_delay(retries)
        retries += 1
        exc = yield delay


def _describe(exc: object) -> str:
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if status is not None else "transport error"


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]], policy: RetryPolicy, *, provider: str, what: str
) -> T:
    """Run ``attempt`` until it succeeds, raises a non-transient error, or runs out of tries.

    ``attempt`` raises :class:`TransientError` for what is worth retrying; any other
    exception passes straight through. Exhaustion, or a server delay above
    ``policy.max_server_delay``, raises :class:`RetryExhaustedError` with the real
    number of attempts. ``what`` is logged: pass no secrets and no query strings.
    """
    tries = 0

    def too_far(exc: Exception) -> bool:
        delay = getattr(exc, "server_delay", None)
        return delay is not None and delay > policy.max_server_delay

    def on_backoff(details: Any) -> None:
        exc = details.get("exception")
        log.info(
            "%s %s: %s%s; attempt %d of %d failed, retrying in %.2f s",
            provider,
            what,
            _describe(exc),
            f" [{exc.error_type}]" if getattr(exc, "error_type", None) else "",
            details["tries"],
            policy.max_tries,
            details["wait"],
        )
        log.debug("%s %s: retry reason: %s", provider, what, getattr(exc, "message", ""))

    def on_giveup(details: Any) -> None:
        nonlocal tries
        tries = details["tries"]

    # Most calls succeed at once: try first, and build backoff's machinery (a decorator
    # per call, a good share of a small request's CPU) only once a try has failed. The
    # failure is then replayed as backoff's first try, so what follows is the same.
    try:
        return await attempt()
    except TransientError as exc:
        failed_first: TransientError | None = exc

    async def call() -> T:
        # backoff picks its async loop by ``iscoroutinefunction(target)``, which is false
        # for callable objects and partials: always hand it a real coroutine function.
        nonlocal failed_first
        if failed_first is not None:
            replay, failed_first = failed_first, None
            raise replay
        return await attempt()

    retrying = backoff.on_exception(
        _wait_gen,
        TransientError,
        max_tries=policy.max_tries,
        jitter=None,  # the policy jitters its own backoff; a server's delay is exact
        giveup=too_far,
        on_backoff=on_backoff,
        on_giveup=on_giveup,
        logger=None,
        policy=policy,
    )(call)
    try:
        return await retrying()
    except TransientError as exc:
        attempts = tries or policy.max_tries
        if too_far(exc):
            log.info(
                "%s %s: server asked to wait %.0f s (cap %.0f s); giving up after %d attempt(s)",
                provider,
                what,
                exc.server_delay,
                policy.max_server_delay,
                attempts,
            )
            last = TransientError(
                exc.provider,
                exc.status,
                f"{exc.message} (server asked to wait {exc.server_delay:.0f} s, more than "
                f"max_server_delay={policy.max_server_delay:g} s)",
                error_type=exc.error_type,
                server_delay=exc.server_delay,
            )
            raise RetryExhaustedError(last, attempts) from exc
        log.info("%s %s: %s; giving up after %d attempts", provider, what, _describe(exc), attempts)
        raise RetryExhaustedError(exc, attempts) from exc
