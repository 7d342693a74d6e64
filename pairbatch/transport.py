"""The HTTP layer every provider client shares: one session, limits, retries, downloads.

One :class:`Transport` per run owns an ``aiohttp.ClientSession``, a global semaphore on
requests in flight and a token bucket per provider. Each attempt waits for the bucket
first and the semaphore second, so a provider paused by a 429 holds no slots the others
could use. API keys travel only in the per-call headers and never reach a log record or
an exception message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import attrs
import orjson

from pairbatch.errors import DownloadError, ProviderError
from pairbatch.limiter import TokenBucket, parse_duration, seconds_until
from pairbatch.retry import (
    RetryPolicy,
    TransientError,
    call_with_retries,
    is_retryable,
    parse_retry_after,
)

log = logging.getLogger("pairbatch.transport")

DEFAULT_RATE = 5.0
CHUNK_BYTES = 1 << 20
# Statuses at which a create call was rejected before anything was made, so sending it
# again cannot create a second batch.
_REJECTED_BEFORE_WORK = frozenset({429, 529})
_CONNECT_ERRORS = (aiohttp.ClientConnectorError,)
_TRANSPORT_ERRORS = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    asyncio.TimeoutError,
)

Payload = bytes | Callable[[], Any] | None


@attrs.frozen
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


def safe_url(url: str) -> str:
    """The URL without its query string (Gemini accepts ``?key=``) for logs."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def error_text(body: bytes, parsed: object) -> tuple[str, str | None]:
    """The provider's own error message and type from any of the three error shapes."""
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            kind = error.get("type") or error.get("status") or error.get("code")
            if message:
                return str(message), None if kind is None else str(kind)
        elif isinstance(error, str):
            return error, None
    text = body[:300].decode("utf-8", errors="replace").strip()
    return (text or "(empty body)"), None


def _loads(body: bytes) -> object:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


class Transport:
    """Shared HTTP machinery for one run (an async context manager)."""

    def __init__(
        self,
        *,
        max_concurrency: int = 32,
        rate_limits: Mapping[str, float] | None = None,
        bursts: Mapping[str, float] | None = None,
        default_rate: float = DEFAULT_RATE,
        timeout: aiohttp.ClientTimeout | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._rates = {k.lower(): float(v) for k, v in (rate_limits or {}).items()}
        self._bursts = {k.lower(): float(v) for k, v in (bursts or {}).items()}
        self._default_rate = default_rate
        self._timeout = timeout or aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._max_concurrency = max_concurrency
        self._semaphore: asyncio.Semaphore | None = None
        self._limiters: dict[str, TokenBucket] = {}
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
            connector = aiohttp.TCPConnector(limit=64, limit_per_host=32, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, raise_for_status=False
            )
            self._owns_session = True
        return self._session

    def _gate(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._max_concurrency)
        return self._semaphore

    # ------------------------------------------------------------ limits and counters

    def limiter(self, provider: str) -> TokenBucket:
        key = provider.lower()
        if key not in self._limiters:
            rate = self._rates.get(key, self._default_rate)
            # A small default burst: a run's first wave of polls should not arrive at
            # once, which is what trips servers' own buckets.
            burst = self._bursts.get(key, 1.0)
            self._limiters[key] = TokenBucket(rate, burst, clock=self._clock)
        return self._limiters[key]

    def counters(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for (_, name), count in self.stats.items():
            totals[name] += count
        return dict(totals)

    def _observe(self, provider: str, headers: Mapping[str, str]) -> None:
        remaining = headers.get("x-ratelimit-remaining-requests") or headers.get(
            "anthropic-ratelimit-requests-remaining"
        )
        if remaining is None:
            return
        try:
            left = int(float(remaining))
        except ValueError:
            return
        reset = headers.get("x-ratelimit-reset-requests")
        seconds = parse_duration(reset) if reset else None
        if seconds is None and headers.get("anthropic-ratelimit-requests-reset"):
            seconds = seconds_until(headers["anthropic-ratelimit-requests-reset"])
        self.limiter(provider).observe_remaining(left, seconds)

    def _fail(self, provider: str, response: Response, policy: RetryPolicy) -> ProviderError:
        parsed = _loads(response.body)
        message, kind = error_text(response.body, parsed)
        if not is_retryable(response.status, response.headers, parsed):
            return ProviderError(provider, response.status, message, error_type=kind)
        delay = parse_retry_after(response.headers, parsed)
        if response.status == 429:
            self.stats[(provider, "429s")] += 1
            # One 429 must not become a 429 from every waiting task: pause them all,
            # and come back slower than the rate that was refused.
            limiter = self.limiter(provider)
            limiter.penalize()
            limiter.pause(delay if delay else policy.backoff_delay(0))
        return TransientError(
            provider, response.status, message, error_type=kind, server_delay=delay
        )

    # ------------------------------------------------------------ requests

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
    ) -> Response:
        """Send with retries; raise :class:`ProviderError` for answers retrying won't fix.

        With ``idempotent=False`` (batch creates) only failures that certainly happened
        before the server did anything are retried; a timeout or a reset after sending
        raises ``ProviderError(error_type="ambiguous")`` so the caller can look for the
        batch instead of paying for it twice.
        """
        policy = retry or RetryPolicy()
        where = f"{method} {safe_url(url)}"

        async def attempt() -> Response:
            await self.limiter(provider).acquire()
            async with self._gate():
                self.stats[(provider, "requests")] += 1
                session = self._ensure_session()
                payload = data() if callable(data) else data
                body_json = None if json is None else orjson.dumps(json)
                send_headers = dict(headers)
                if body_json is not None:
                    send_headers.setdefault("content-type", "application/json")
                try:
                    async with session.request(
                        method,
                        url,
                        headers=send_headers,
                        data=body_json if body_json is not None else payload,
                        params=params,
                    ) as resp:
                        body = await resp.read()
                        response = Response(
                            resp.status, {k.lower(): v for k, v in resp.headers.items()}, body
                        )
                except _CONNECT_ERRORS as exc:
                    raise TransientError(
                        provider, None, f"{where}: cannot connect ({type(exc).__name__})"
                    ) from None
                except _TRANSPORT_ERRORS as exc:
                    reason = f"{where}: {type(exc).__name__}"
                    if not idempotent:
                        raise ProviderError(
                            provider,
                            None,
                            f"{reason}; the request may have been processed",
                            error_type="ambiguous",
                        ) from None
                    raise TransientError(provider, None, reason) from None
            self._observe(provider, response.headers)
            if response.status < 400:
                return response
            error = self._fail(provider, response, policy)
            if (
                isinstance(error, TransientError)
                and not idempotent
                and response.status not in _REJECTED_BEFORE_WORK
            ):
                raise ProviderError(
                    provider,
                    response.status,
                    f"{error.message}; the request may have been processed",
                    error_type="ambiguous",
                )
            raise error

        response: Response = await self._with_retries(attempt, policy, provider, where)
        return response

    async def _with_retries(
        self, attempt: Callable[[], Any], policy: RetryPolicy, provider: str, where: str
    ) -> Any:
        tries = 0

        async def counted() -> Any:
            nonlocal tries
            tries += 1
            if tries > 1:
                self.stats[(provider, "retries")] += 1
            return await attempt()

        return await call_with_retries(counted, policy, provider=provider, what=where)

    async def first_line(
        self,
        provider: str,
        url: str,
        *,
        headers: Mapping[str, str],
        retry: RetryPolicy | None = None,
        limit: int = 1 << 20,
    ) -> bytes:
        """The first line of a (possibly huge) body, reading no further than it."""
        policy = retry or RetryPolicy()
        where = f"GET {safe_url(url)}"

        async def attempt() -> bytes:
            await self.limiter(provider).acquire()
            async with self._gate():
                self.stats[(provider, "requests")] += 1
                session = self._ensure_session()
                try:
                    async with session.get(url, headers=dict(headers)) as resp:
                        if resp.status >= 400:
                            body = await resp.read()
                            answer = Response(
                                resp.status, {k.lower(): v for k, v in resp.headers.items()}, body
                            )
                            raise self._fail(provider, answer, policy)
                        line = await resp.content.readuntil(b"\n") if limit else b""
                        return line[:limit].strip()
                except _TRANSPORT_ERRORS as exc:
                    raise TransientError(provider, None, f"{where}: {type(exc).__name__}") from None

        line: bytes = await self._with_retries(attempt, policy, provider, where)
        return line

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
    ) -> int:
        """Stream ``url`` to ``dest``; return its size.

        The body goes to ``dest.part`` in 1 MiB chunks written from a worker thread, is
        checked against Content-Length, fsynced and renamed. A short body is retried and,
        where the server honours ``Range``, resumed. On failure nothing is left at
        ``dest`` (nor a ``.part`` file).
        """
        policy = retry or RetryPolicy()
        target = Path(dest)
        part = target.with_name(target.name + ".part")
        where = f"GET {safe_url(url)}"
        await asyncio.to_thread(_prepare, part)

        async def attempt() -> int:
            await self.limiter(provider).acquire()
            async with self._gate():
                self.stats[(provider, "requests")] += 1
                return await self._stream_once(provider, url, part, headers, params, policy, where)

        try:
            size = await self._with_retries(attempt, policy, provider, where)
            await asyncio.to_thread(_commit, part, target)
        except BaseException:
            with contextlib.suppress(OSError):
                await asyncio.shield(asyncio.to_thread(_discard, part))
            raise
        self.stats[(provider, "bytes_downloaded")] += size
        return int(size)

    async def _stream_once(
        self,
        provider: str,
        url: str,
        part: Path,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        policy: RetryPolicy,
        where: str,
    ) -> int:
        have = await asyncio.to_thread(_size, part)
        send = dict(headers)
        if have:
            send["Range"] = f"bytes={have}-"
        session = self._ensure_session()
        try:
            async with session.get(url, headers=send, params=params) as resp:
                if resp.status >= 400:
                    body = await resp.read()
                    response = Response(
                        resp.status, {k.lower(): v for k, v in resp.headers.items()}, body
                    )
                    if resp.status == 416:
                        await asyncio.to_thread(_discard, part)
                        raise TransientError(provider, 416, f"{where}: range not satisfiable")
                    raise self._fail(provider, response, policy)
                resumed = resp.status == 206 and have > 0
                offset = have if resumed else 0
                length = resp.content_length
                expected = None if length is None else offset + length
                handle = await asyncio.to_thread(_open, part, resumed)
                written = offset
                try:
                    async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                        await asyncio.to_thread(handle.write, chunk)
                        written += len(chunk)
                finally:
                    await asyncio.to_thread(_close, handle)
        except _TRANSPORT_ERRORS as exc:
            raise TransientError(
                provider, None, f"{where}: {type(exc).__name__} mid-body"
            ) from None
        if expected is not None and written != expected:
            raise TransientError(
                provider, None, f"{where}: body ended at {written} of {expected} bytes"
            )
        if written == 0 and expected is None:
            log.debug("%s %s: empty body", provider, where)
        return written


def _prepare(part: Path) -> None:
    part.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        part.unlink()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _open(path: Path, append: bool) -> IO[bytes]:
    return path.open("ab" if append else "wb")


def _close(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _commit(part: Path, target: Path) -> None:
    part.replace(target)


def _discard(part: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        part.unlink()


__all__ = ["DownloadError", "Response", "Transport", "error_text", "safe_url"]
