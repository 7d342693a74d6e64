"""Streaming a response body to disk: the other half of :class:`Transport` (its
downloads), kept apart because a body is not an answer: it is written a chunk at a
time by a worker thread, checked against its length, and resumed with ``Range`` when it
comes up short. It goes through the same gate, bucket, redirect rule and failure
classification as every request (the transport's ``_gate``, ``_admit``, ``_send`` and
``_http_failure``: this module is the one other user of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pairbatch._fs import temp_name
from pairbatch.errors import ProviderError
from pairbatch.failures import CAUGHT, transport_failure
from pairbatch.partfile import (
    CHUNK_BYTES,
    ChunkWriter,
    ResumeState,
    ShortBody,
    commit_part,
    discard_part,
    part_size,
    prepare_part,
    range_start,
)
from pairbatch.retry import RetryPolicy, TransientError, call_with_retries
from pairbatch.threads import to_thread
from pairbatch.wire import Redactor, Response, lower_keys, safe_url

if TYPE_CHECKING:
    from pairbatch.transport import Transport


async def download(
    transport: Transport,
    provider: str,
    url: str,
    dest: str | os.PathLike[str],
    *,
    headers: Mapping[str, str],
    params: Mapping[str, str] | None = None,
    retry: RetryPolicy | None = None,
    origin: str | None = None,
) -> int:
    """Stream ``url`` to ``dest``; return its size in bytes.

    The body goes to a temporary sibling (``.<name>.<pid>.<random>.part``) in chunks
    of up to 1 MiB written by a worker thread while the next chunk arrives, is checked
    against Content-Length, fsynced and renamed into place. A short body is retried
    and resumed with ``Range`` (and ``If-Range``) when the server answers 206, else
    restarted. On failure or cancellation neither ``dest`` nor the ``.part`` file is
    left behind.
    """
    policy = retry or transport.retry
    target = Path(dest)
    # Unique per process and call, like every temporary name here (see _fs.temp_name).
    part = temp_name(target).with_suffix(".part")
    redact = Redactor(headers, url, params)
    where = f"GET {safe_url(url)}"
    state = ResumeState()
    tries = 0
    await to_thread(prepare_part, part)

    async def attempt() -> int:
        nonlocal tries
        tries += 1
        # Measured before the bucket grant: between a grant and its send there must be
        # no wait (a thread hop could be long), or sends bunch up past the server's limit.
        have = await to_thread(part_size, part) if tries > 1 and state.resumable else 0
        async with transport._gate(provider):
            granted_at = await transport._admit(provider, tries == 1)
            return await _stream_once(
                transport,
                provider,
                url,
                origin,
                part,
                have,
                headers,
                params,
                policy,
                where,
                redact,
                state,
                granted_at,
            )

    try:
        size = await call_with_retries(attempt, policy, provider=provider, what=where)
        await to_thread(commit_part, part, target)
    except BaseException:
        with contextlib.suppress(OSError):
            await asyncio.shield(to_thread(discard_part, part))
        raise
    transport._count(provider, "bytes_downloaded", size)
    return size


async def _stream_once(
    transport: Transport,
    provider: str,
    url: str,
    origin: str | None,
    part: Path,
    have: int,
    headers: Mapping[str, str],
    params: Mapping[str, str] | None,
    policy: RetryPolicy,
    where: str,
    redact: Redactor,
    state: ResumeState,
    granted_at: float,
) -> int:
    send = {k: v for k, v in headers.items() if k.lower() not in ("range", "if-range")}
    if not any(k.lower() == "accept-encoding" for k in send):
        # Content-Length and Range must count the bytes we store, not a gzip of them.
        send["Accept-Encoding"] = "identity"
    if have:
        send["Range"] = f"bytes={have}-"
        if state.validator:
            send["If-Range"] = state.validator
    session = transport._ensure_session()
    written = 0
    try:
        async with await transport._send(session, "GET", url, send, origin, params=params) as resp:
            transport._count(provider, "responses")
            if resp.status >= 400:
                body = await resp.read()
                if resp.status == 416 and have:
                    # Our partial file no longer fits the resource: start over.
                    await to_thread(discard_part, part)
                    raise TransientError(provider, 416, f"{where}: range not satisfiable")
                answer = Response(resp.status, lower_keys(resp.headers), body)
                raise transport._http_failure(
                    provider, answer, policy, redact, granted_at=granted_at, idempotent=True
                )
            etag = resp.headers.get("ETag")
            strong = etag if etag and not etag.startswith("W/") else None
            state.validator = strong or resp.headers.get("Last-Modified")
            encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
            state.resumable = not encoded
            offset = 0
            if resp.status == 206 and have:
                if range_start(resp.headers.get("Content-Range")) != have:
                    await to_thread(discard_part, part)
                    raise TransientError(provider, 206, f"{where}: unexpected Content-Range")
                offset = have
            length = None if encoded else resp.content_length
            expected = None if length is None else offset + length
            writer = ChunkWriter(part, append=offset > 0)
            written = offset
            try:
                async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                    await writer.write(chunk)
                    written += len(chunk)
            finally:
                await writer.close()
    except ProviderError:
        raise
    except CAUGHT as exc:
        failure = transport_failure(
            provider, exc, where, idempotent=True, stage=f" after {written} bytes"
        )
        if isinstance(failure, TransientError):
            raise ShortBody(provider, None, failure.message) from None
        raise failure from None
    if expected is not None and written != expected:
        raise ShortBody(provider, None, f"{where}: body ended at {written} of {expected} bytes")
    return written
