"""The HTTP layer every provider client shares: one session, limits, retries, downloads.

One :class:`Transport` per run owns an ``aiohttp.ClientSession`` and, per provider, a
semaphore on requests in flight and a token bucket. Each attempt enters its provider's
semaphore first and waits for the bucket second, so nothing stands between a grant and
its send (sends keep the bucket's spacing), and a provider paused by a 429 holds no
slots another provider could use. API keys travel only in the per-call headers; every
message this module builds passes through a redactor that knows them, and URLs are
logged without their query strings (Gemini accepts ``?key=``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import aiohttp
import attrs
import orjson
from yarl import URL

from pairbatch.download import download
from pairbatch.errors import DownloadError, ProviderError
from pairbatch.failures import CAUGHT, http_failure, transport_failure
from pairbatch.limiter import TokenBucket
from pairbatch.models import Provider
from pairbatch.retry import (
    RetryPolicy,
    TransientError,
    call_with_retries,
)
from pairbatch.wire import (
    Redactor,
    Response,
    error_text,
    lower_keys,
    safe_url,
    without_secrets,
)

log = logging.getLogger("pairbatch.transport")

DEFAULT_RATE = 5.0
# A burst of 1 by default: a run's first wave of polls should not arrive at once,
# which is what trips the servers' own buckets.
DEFAULT_BURST = 1.0
MAX_REDIRECTS = 5

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


# ``data`` may be a zero-argument factory: aiohttp's FormData is single-use (it empties
# itself when sent), so a retryable upload must be rebuilt for each attempt.
Payload = bytes | aiohttp.FormData | Callable[[], Any] | None


# ---------------------------------------------------------------- transport


class Transport:
    """Shared HTTP machinery for one run (an async context manager).

    ``rate_limits``/``bursts`` map provider names to requests per second and bucket
    sizes; unlisted providers get ``default_rate``/``default_burst``. ``timeout``
    defaults to no total limit (downloads can be long), 10 s to connect and 120 s
    between reads. An injected ``session`` is used as is and never closed here.
    """

    def __init__(
        self,
        *,
        max_concurrency: int = 32,
        rate_limits: Mapping[str, float] | None = None,
        bursts: Mapping[str, float] | None = None,
        default_rate: float = DEFAULT_RATE,
        default_burst: float = DEFAULT_BURST,
        timeout: aiohttp.ClientTimeout | None = None,
        session: aiohttp.ClientSession | None = None,
        retry: RetryPolicy | None = None,
        connection_limit: int = 64,
        connection_limit_per_host: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._rates = {k.lower(): float(v) for k, v in (rate_limits or {}).items()}
        self._bursts = {k.lower(): float(v) for k, v in (bursts or {}).items()}
        self._default_rate = float(default_rate)
        self._default_burst = float(default_burst)
        self._timeout = timeout or aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=10, sock_read=120
        )
        self._session = session
        self._owns_session = session is None
        self._connection_limits = (connection_limit, connection_limit_per_host)
        self._clock = clock
        self._max_concurrency = max_concurrency
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._limiters: dict[str, TokenBucket] = {}
        self.retry = retry or RetryPolicy()
        #: ``(provider, name)`` -> count; names: requests, retries, 429s, bytes_downloaded.
        self.stats: Counter[tuple[str, str]] = Counter()

    def __repr__(self) -> str:
        return f"Transport(max_concurrency={self._max_concurrency}, rates={self._rates})"

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Transport:
        self._ensure_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Never fewer connections than the gates let requests through (one gate per
            # provider, each provider its own host): a request that holds its grant and
            # then queues in the pool for a connection goes out late, in a bunch.
            limit, per_host = self._connection_limits
            per_host = max(per_host, self._max_concurrency)
            limit = max(limit, len(Provider) * self._max_concurrency)
            connector = aiohttp.TCPConnector(
                limit=limit, limit_per_host=per_host, keepalive_timeout=30, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, raise_for_status=False
            )
            self._owns_session = True
        return self._session

    def _gate(self, provider: str) -> asyncio.Semaphore:
        """The provider's bound on requests in flight, entered *before* its bucket's
        grant: a request granted and then kept waiting for a slot goes out late, in a
        bunch with the others (at 200 req/s with every slot taken, 20-40 sends past the
        server's burst and as many 429s). One gate per provider, so requests waiting for
        a slow provider's tokens never hold the slots another provider's need."""
        # Created on first use so that the Transport can be built outside a running loop.
        key = provider.lower()
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = asyncio.Semaphore(self._max_concurrency)
        return gate

    # ------------------------------------------------------------ limits and counters

    def limiter(self, provider: str) -> TokenBucket:
        """The provider's token bucket (created on first use)."""
        key = provider.lower()
        bucket = self._limiters.get(key)
        if bucket is None:
            rate = self._rates.get(key, self._default_rate)
            burst = self._bursts.get(key, self._default_burst)
            bucket = self._limiters[key] = TokenBucket(rate, max(burst, 1.0), clock=self._clock)
        return bucket

    def counters(self, provider: str | None = None) -> dict[str, int]:
        """Totals of requests, retries, 429s and bytes downloaded (one provider or all)."""
        totals: Counter[str] = Counter()
        for (who, name), count in self.stats.items():
            if provider is None or who == provider.lower():
                totals[name] += count
        return dict(totals)

    def _count(self, provider: str, name: str, n: int = 1) -> None:
        self.stats[(provider.lower(), name)] += n

    # ------------------------------------------------------------ sending

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        headers: Mapping[str, str],
        origin: str | None = None,
        **kwargs: Any,
    ) -> aiohttp.ClientResponse:
        """Send; follow GET redirects ourselves so that keys never leave their origin.

        ``origin`` is the provider's own (its configured base URL): a request to any
        other host, whether a server-supplied URL or a redirect, goes without the key.
        aiohttp would forward ``x-api-key``/``x-goog-api-key`` to whatever host a
        redirect names (it only drops ``Authorization``).
        """
        current = URL(url)
        trusted = URL(origin).origin() if origin else current.origin()
        for _ in range(MAX_REDIRECTS + 1):
            send_headers = dict(headers)
            if current.origin() != trusted:
                send_headers = without_secrets(send_headers)
                if len(send_headers) != len(headers):
                    log.warning(
                        "not sending the API key to %s: it is not the provider's origin %s",
                        safe_url(current),
                        trusted,
                    )
            resp = await session.request(
                method, current, headers=send_headers, allow_redirects=False, **kwargs
            )
            location = resp.headers.get("Location")
            if method != "GET" or resp.status not in _REDIRECTS or not location:
                return resp
            resp.release()
            current = current.join(URL(location))
            kwargs.pop("params", None)  # they are part of the Location already
        raise aiohttp.TooManyRedirects(resp.request_info, resp.history)

    def _http_failure(
        self,
        provider: str,
        response: Response,
        policy: RetryPolicy,
        redact: Redactor,
        *,
        granted_at: float,
        idempotent: bool,
    ) -> ProviderError:
        """The error for an answer >= 400; a 429 also slows the whole provider down."""
        if response.status == 429:
            self._count(provider, "429s")
        failure = http_failure(provider, response, policy, redact, idempotent=idempotent)
        if response.status == 429 and isinstance(failure, TransientError):
            # One 429 must not become a 429 from every waiting task: pause them all and
            # come back slower. A delay past the cap is the caller's to give up on; the
            # other requests merely wait the cap.
            limiter = self.limiter(provider)
            limiter.penalize(granted_at)
            delay = failure.server_delay
            pause = delay if delay is not None and delay > 0 else policy.backoff_delay(0)
            limiter.pause(min(pause, policy.max_server_delay))
        return failure

    async def _admit(self, provider: str, first: bool) -> float:
        """Wait for the provider's bucket; return the grant time (for ``penalize``)."""
        limiter = self.limiter(provider)
        await limiter.acquire()
        self._count(provider, "requests")
        if not first:
            self._count(provider, "retries")
        return self._clock()

    async def request(
        self,
        provider: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        json: object | None = None,
        data: Payload = None,
        params: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        idempotent: bool = True,
        origin: str | None = None,
    ) -> Response:
        """Send with retries; raise :class:`ProviderError` for answers retrying won't fix.

        ``data`` is bytes, an ``aiohttp.FormData`` (single-use in aiohttp, so sent only
        once) or a zero-argument factory building one per attempt. Exhausted retries
        raise :class:`RetryExhaustedError`. With ``idempotent=False`` (batch creates)
        only failures that certainly happened before the server did anything are
        retried (connection refused, 429, 529); a timeout, a reset or a 5xx after
        sending raises ``ProviderError(error_type="ambiguous")`` so the caller can look
        for the batch instead of paying for it twice.
        """
        policy = retry or self.retry
        if isinstance(data, aiohttp.FormData):
            policy = attrs.evolve(policy, max_tries=1)
        redact = Redactor(headers, url, params)
        where = f"{method} {safe_url(url)}"
        body_json = None if json is None else orjson.dumps(json)
        send_headers = dict(headers)
        if body_json is not None and not any(k.lower() == "content-type" for k in headers):
            send_headers["Content-Type"] = "application/json"
        tries = 0

        async def attempt() -> Response:
            nonlocal tries
            tries += 1
            async with self._gate(provider):
                granted_at = await self._admit(provider, tries == 1)
                session = self._ensure_session()
                payload = body_json if body_json is not None else data
                if callable(payload) and not isinstance(payload, aiohttp.FormData):
                    payload = payload()
                started = time.monotonic()
                try:
                    async with await self._send(
                        session, method, url, send_headers, origin, data=payload, params=params
                    ) as resp:
                        body = await resp.read()
                        response = Response(resp.status, lower_keys(resp.headers), body)
                    self._count(provider, "responses")
                except CAUGHT as exc:
                    raise transport_failure(provider, exc, where, idempotent=idempotent) from None
            log.debug(
                "%s %s -> %d (%d bytes, %.0f ms)",
                provider,
                where,
                response.status,
                len(response.body),
                (time.monotonic() - started) * 1000,
            )
            self.limiter(provider).observe_headers(response.headers)
            if response.status < 400:
                return response
            raise self._http_failure(
                provider, response, policy, redact, granted_at=granted_at, idempotent=idempotent
            )

        return await call_with_retries(attempt, policy, provider=provider, what=where)

    async def first_line(
        self,
        provider: str,
        url: str,
        *,
        headers: Mapping[str, str],
        retry: RetryPolicy | None = None,
        limit: int = 1 << 20,
        origin: str | None = None,
    ) -> bytes:
        """The first line of a (possibly huge) body, reading no further than it (and at
        most ``limit`` bytes); the connection is dropped rather than drained."""
        policy = retry or self.retry
        redact = Redactor(headers, url)
        where = f"GET {safe_url(url)}"
        tries = 0

        async def attempt() -> bytes:
            nonlocal tries
            tries += 1
            async with self._gate(provider):
                granted_at = await self._admit(provider, tries == 1)
                session = self._ensure_session()
                try:
                    async with await self._send(session, "GET", url, headers, origin) as resp:
                        self._count(provider, "responses")
                        if resp.status >= 400:
                            answer = Response(
                                resp.status, lower_keys(resp.headers), await resp.read()
                            )
                        else:
                            line = bytearray()
                            async for chunk in resp.content.iter_any():
                                end = chunk.find(b"\n")
                                line += chunk if end < 0 else chunk[:end]
                                if end >= 0 or len(line) >= limit:
                                    break
                            # Leaving the block unread closes the connection: cheaper than
                            # draining a 200 MB results file.
                            return bytes(line[:limit]).strip()
                except CAUGHT as exc:
                    raise transport_failure(provider, exc, where, idempotent=True) from None
            raise self._http_failure(
                provider, answer, policy, redact, granted_at=granted_at, idempotent=True
            )

        return await call_with_retries(attempt, policy, provider=provider, what=where)

    # ------------------------------------------------------------ downloads

    async def download(
        self,
        provider: str,
        url: str,
        dest: str | os.PathLike[str],
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        origin: str | None = None,
    ) -> int:
        """Stream ``url`` to ``dest``; return its size in bytes (see
        :func:`pairbatch.download.download`: temporary sibling, checked length, fsync,
        rename, resumed with ``Range`` after a short body)."""
        return await download(
            self, provider, url, dest, headers=headers, params=params, retry=retry, origin=origin
        )


__all__ = [
    "DownloadError",
    "Redactor",
    "Response",
    "Transport",
    "error_text",
    "safe_url",
]
