"""How a failed HTTP exchange is classified: try again, give up, or "may have been done".

Pure functions of what happened (an aiohttp exception, or an answer >= 400) and of
whether the request is safe to send twice. A create (``idempotent=False``) is retried
only when the failure certainly came before the server did anything: a refused
connection, or a 429/529, which servers answer before any work. Anything else after
sending is ``ambiguous``, so the caller looks for the batch instead of paying twice.
"""

from __future__ import annotations

import asyncio

import aiohttp

from pairbatch.errors import ProviderError
from pairbatch.retry import RetryPolicy, TransientError, is_retryable, parse_retry_after
from pairbatch.wire import Redactor, Response, connection_cause, error_text, loads_or_none


def _optional(*names: str) -> tuple[type[BaseException], ...]:
    """aiohttp exception classes newer than our oldest supported aiohttp, when present."""
    found = (getattr(aiohttp, name, None) for name in names)
    return tuple(t for t in found if isinstance(t, type) and issubclass(t, BaseException))


# A create rejected with these was refused before any work, so sending it again cannot
# make a second batch.
REJECTED_BEFORE_WORK = frozenset({429, 529})
# Failures that certainly happened before a byte of the request reached the server.
_BEFORE_SEND: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    *_optional("ConnectionTimeoutError"),
)
# Failures after which the server may or may not have acted on the request.
_MAYBE_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientResponseError,
    asyncio.TimeoutError,
)
# Mistakes no retry fixes.
_HOPELESS: tuple[type[BaseException], ...] = (
    aiohttp.InvalidURL,
    aiohttp.TooManyRedirects,
    *_optional("NonHttpUrlClientError"),
)
CAUGHT: tuple[type[BaseException], ...] = (*_MAYBE_SENT, *_HOPELESS, aiohttp.ClientError)


def transport_failure(
    provider: str,
    exc: BaseException,
    where: str,
    *,
    idempotent: bool,
    stage: str = "",
) -> ProviderError:
    """The error for an exchange that got no answer (``stage`` says how far it got)."""
    name = connection_cause(exc)
    if isinstance(exc, _HOPELESS):
        return ProviderError(provider, None, f"{where}: invalid URL ({name})")
    if isinstance(exc, _BEFORE_SEND):
        # Nothing reached the server: safe to send again even for a create.
        return TransientError(
            provider, None, f"{where}: could not connect ({name})", error_type="connect"
        )
    reason = f"{where}: {name}{stage}"
    if not idempotent:
        return ProviderError(
            provider,
            None,
            f"{reason}; the request may have been processed",
            error_type="ambiguous",
        )
    return TransientError(provider, None, reason)


def http_failure(
    provider: str,
    response: Response,
    policy: RetryPolicy,
    redact: Redactor,
    *,
    idempotent: bool,
) -> ProviderError:
    """The error for an answer >= 400: a :class:`TransientError` (with the wait the
    server asked for) when another try may succeed, else final."""
    parsed = loads_or_none(response.body)
    message, kind = error_text(response.body, parsed)
    message = redact(message)
    status = response.status
    if not is_retryable(status, response.headers, parsed, exhausted=policy.exhausted):
        return ProviderError(provider, status, message, error_type=kind)
    delay = parse_retry_after(response.headers, parsed)
    forced = response.headers.get("x-should-retry", "").strip().lower() == "true"
    if not idempotent and status not in REJECTED_BEFORE_WORK and not forced:
        return ProviderError(
            provider,
            status,
            f"{message}; the request may have been processed",
            error_type="ambiguous",
        )
    return TransientError(provider, status, message, error_type=kind, server_delay=delay)
