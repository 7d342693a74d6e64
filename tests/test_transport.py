"""Transport against small real aiohttp servers on 127.0.0.1 (no mocks of the HTTP layer)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import attrs
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pairbatch.errors import DownloadError, ProviderError, RetryExhaustedError
from pairbatch.providers.gemini import per_day_quota
from pairbatch.providers.openai import insufficient_quota
from pairbatch.retry import RetryPolicy
from pairbatch.transport import Redactor, Response, Transport, error_text, safe_url

KEY = "sk-very-secret-key-0123456789"
FAST = RetryPolicy(max_tries=4, base_delay=0.01, max_delay=0.02)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[[Handler], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a one-handler aiohttp server (every path) and return its base URL."""
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


def fast_transport(**kwargs: object) -> Transport:
    options: dict[str, object] = {"default_rate": 1000.0, "default_burst": 100.0, "retry": FAST}
    options.update(kwargs)
    return Transport(**options)  # type: ignore[arg-type]


def openai_error(message: str, type_: str, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def reset(request: web.Request) -> web.Response:
    """Drop the connection without an answer (a reset as the client sees it)."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- plain requests


async def test_request_sends_json_params_and_returns_response(serve: Serve) -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(
            body=await request.json(),
            ctype=request.headers["Content-Type"],
            query=dict(request.query),
        )
        return web.json_response({"id": "batch_1"}, headers={"X-Thing": "yes"})

    base = await serve(handler)
    async with fast_transport() as transport:
        response = await transport.request(
            "openai", "POST", f"{base}/v1/batches", headers={}, json={"a": 1}, params={"limit": "2"}
        )
    assert isinstance(response, Response)
    assert response.status == 200 and response.json() == {"id": "batch_1"}
    assert response.headers["x-thing"] == "yes"  # lower-cased keys, a plain dict
    assert seen == {"body": {"a": 1}, "ctype": "application/json", "query": {"limit": "2"}}
    assert KEY not in repr(response)


async def test_429_with_retry_after_is_retried_the_expected_number_of_times(serve: Serve) -> None:
    hits: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        if len(hits) <= 2:
            body = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
            return web.json_response(body, status=429, headers={"retry-after-ms": "100"})
        return web.json_response({"ok": True})

    base = await serve(handler)
    async with fast_transport() as transport:
        response = await transport.request("anthropic", "GET", f"{base}/v1/x", headers={})
        assert response.status == 200
        assert len(hits) == 3
        assert hits[1] - hits[0] >= 0.095 and hits[2] - hits[1] >= 0.095
        counts = transport.counters("anthropic")
        assert counts["requests"] == 3 and counts["retries"] == 2 and counts["429s"] == 2


async def test_429_storm_pauses_the_bucket_instead_of_hammering(serve: Serve) -> None:
    # The server refuses everything for its first 0.3 s. 40 tasks wait at the client's
    # bucket; without the shared pause each would collect its own 429 (40+ of them).
    opened_at = time.monotonic() + 0.3
    refused = 0
    served = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal refused, served
        left = opened_at - time.monotonic()
        if left > 0:
            refused += 1
            return web.Response(
                status=429,
                body=openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
                headers={"retry-after-ms": str(int(left * 1000) + 1)},
            )
        served += 1
        return web.json_response({})

    base = await serve(handler)
    async with fast_transport(rate_limits={"openai": 200.0}, bursts={"openai": 5.0}) as transport:

        async def one() -> int:
            response = await transport.request(
                "openai", "GET", f"{base}/v1/batches", headers={}, retry=RetryPolicy(max_tries=3)
            )
            return response.status

        statuses = await asyncio.gather(*(one() for _ in range(40)))
        assert statuses == [200] * 40
        assert served == 40
        # Only the first wave (the burst, and what the bucket granted before the first
        # 429 came back, a few more on a loaded machine) is refused, never all 40.
        assert refused <= 15, refused
        assert transport.counters("openai")["429s"] == refused
        assert transport.limiter("openai").rate < 200  # and the bucket slowed down


async def test_5xx_burst_retried_until_success(serve: Serve) -> None:
    statuses = [500, 502, 503]
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        if statuses:
            return web.Response(status=statuses.pop(0), text="upstream trouble")
        return web.json_response({"ok": 1})

    base = await serve(handler)
    async with fast_transport() as transport:
        response = await transport.request("gemini", "GET", f"{base}/v1beta/batches", headers={})
        assert response.status == 200 and hits == 4
        assert transport.counters() == {"requests": 4, "retries": 3, "responses": 4}


async def test_5xx_exhausts_tries(serve: Serve) -> None:
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return web.json_response(body, status=529)

    base = await serve(handler)
    async with fast_transport() as transport:
        with pytest.raises(RetryExhaustedError) as info:
            await transport.request(
                "anthropic",
                "GET",
                f"{base}/v1/x",
                headers={},
                retry=RetryPolicy(max_tries=3, base_delay=0.01),
            )
    assert hits == 3
    error = info.value
    assert (error.provider, error.status, error.attempts) == ("anthropic", 529, 3)
    assert error.error_type == "overloaded_error" and "Overloaded" in error.message


@pytest.mark.parametrize(
    ("status", "body", "headers", "message", "error_type"),
    [
        (
            404,
            openai_error("No batch found", "invalid_request_error", "not_found"),
            {},
            "No batch found",
            "invalid_request_error",
        ),
        (
            400,
            orjson.dumps(
                {"type": "error", "error": {"type": "invalid_request_error", "message": "bad id"}}
            ),
            {},
            "bad id",
            "invalid_request_error",
        ),
        (
            403,
            orjson.dumps(
                {"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}
            ),
            {},
            "denied",
            "PERMISSION_DENIED",
        ),
        (
            429,
            openai_error(
                "You exceeded your current quota", "insufficient_quota", "insufficient_quota"
            ),
            {"retry-after": "1"},
            "exceeded your current quota",
            "insufficient_quota",
        ),
        (
            503,
            b"<html>maintenance</html>",
            {"x-should-retry": "false"},
            "<html>maintenance</html>",
            None,
        ),
        (422, b"x" * 5000, {}, "x" * 300 + "…", None),
    ],
)
async def test_non_retryable_errors_carry_provider_status_and_message(
    serve: Serve,
    status: int,
    body: bytes,
    headers: dict[str, str],
    message: str,
    error_type: str | None,
) -> None:
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(status=status, body=body, headers=headers)

    base = await serve(handler)
    # The quota quirk is the provider's (its client's policy carries it).
    policy = attrs.evolve(FAST, exhausted=insufficient_quota)
    async with fast_transport() as transport:
        with pytest.raises(ProviderError) as info:
            await transport.request(
                "openai", "GET", f"{base}/v1/batches/b", headers={}, retry=policy
            )
    error = info.value
    assert not isinstance(error, RetryExhaustedError)
    assert (error.provider, error.status, error.error_type) == ("openai", status, error_type)
    assert message in error.message and f"HTTP {status}" in str(error)
    assert hits == 1


async def test_gemini_per_day_quota_is_not_retried(serve: Serve) -> None:
    hits = 0
    body = {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.01s"},
            ],
        }
    }

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.json_response(body, status=429)

    base = await serve(handler)
    async with fast_transport() as transport:
        with pytest.raises(ProviderError) as info:
            await transport.request(
                "gemini",
                "GET",
                f"{base}/v1beta/batches",
                headers={},
                retry=attrs.evolve(FAST, exhausted=per_day_quota),
            )
    assert hits == 1 and info.value.error_type == "RESOURCE_EXHAUSTED"
    assert transport.counters()["429s"] == 1


async def test_server_delay_above_cap_gives_up_without_waiting(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=429, headers={"retry-after": "3600"})

    base = await serve(handler)
    async with fast_transport() as transport:
        start = time.monotonic()
        with pytest.raises(RetryExhaustedError) as info:
            await transport.request("openai", "GET", f"{base}/v1/batches", headers={})
        assert time.monotonic() - start < 1
        assert info.value.attempts == 1
        # Other requests are held back no longer than the cap, not the hour.
        limiter = transport.limiter("openai")
        assert limiter.paused_until - time.monotonic() <= FAST.max_server_delay


async def test_rate_limit_headers_slow_down_before_a_429(serve: Serve) -> None:
    hits: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "300ms"}
        return web.json_response({}, headers=headers if len(hits) == 1 else {})

    base = await serve(handler)
    async with fast_transport() as transport:
        await transport.request("openai", "GET", f"{base}/v1/batches", headers={})
        await transport.request("openai", "GET", f"{base}/v1/batches", headers={})
    assert hits[1] - hits[0] >= 0.29


# ---------------------------------------------------------------- connection trouble


async def test_connection_resets_are_retried(serve: Serve) -> None:
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return reset(request) if hits <= 2 else web.json_response({"ok": 1})

    base = await serve(handler)
    async with fast_transport() as transport:
        response = await transport.request("anthropic", "GET", f"{base}/v1/x", headers={})
    assert response.status == 200 and hits == 3


async def test_reset_after_sending_a_create_is_ambiguous_not_resent(serve: Serve) -> None:
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        await request.read()
        return reset(request)

    base = await serve(handler)
    async with fast_transport() as transport:
        with pytest.raises(ProviderError) as info:
            await transport.request(
                "openai", "POST", f"{base}/v1/batches", headers={}, json={}, idempotent=False
            )
    assert info.value.error_type == "ambiguous" and info.value.status is None
    assert hits == 1


async def test_5xx_on_a_create_is_ambiguous_but_429_is_retried(serve: Serve) -> None:
    replies = [429, 529, 500]
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(status=replies.pop(0), headers={"retry-after-ms": "10"})

    base = await serve(handler)
    async with fast_transport() as transport:
        with pytest.raises(ProviderError) as info:
            await transport.request(
                "openai", "POST", f"{base}/v1/batches", headers={}, json={}, idempotent=False
            )
    # 429 and 529 refuse before any work: resent. The 500 might have made a batch.
    assert hits == 3
    assert info.value.error_type == "ambiguous" and info.value.status == 500


async def test_connection_refused_is_retried_even_for_a_create() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1/batches"
    async with fast_transport() as transport:
        with pytest.raises(RetryExhaustedError) as info:
            await transport.request("openai", "POST", url, headers={}, json={}, idempotent=False)
        assert transport.counters()["requests"] == FAST.max_tries
    assert info.value.error_type != "ambiguous" and "could not connect" in info.value.message


async def test_slow_responses_hit_the_read_timeout(serve: Serve) -> None:
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        await asyncio.sleep(2)
        return web.json_response({})

    base = await serve(handler)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=0.15)
    async with fast_transport(timeout=timeout) as transport:
        start = time.monotonic()
        with pytest.raises(RetryExhaustedError, match="timed out") as info:
            await transport.request(
                "gemini",
                "GET",
                f"{base}/v1beta/batches",
                headers={},
                retry=RetryPolicy(max_tries=3, base_delay=0.01),
            )
        assert time.monotonic() - start < 1.5
        assert hits == 3 and info.value.attempts == 3
        # The same timeout on a create is ambiguous and not resent.
        with pytest.raises(ProviderError) as ambiguous:
            await transport.request(
                "gemini",
                "POST",
                f"{base}/v1beta/models/m:batchGenerateContent",
                headers={},
                json={},
                idempotent=False,
            )
        assert ambiguous.value.error_type == "ambiguous" and hits == 4


async def test_semaphore_bounds_each_providers_requests_in_flight(serve: Serve) -> None:
    in_flight: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    async def handler(request: web.Request) -> web.Response:
        who = request.path.strip("/")
        in_flight[who] += 1
        peak[who] = max(peak[who], in_flight[who])
        await asyncio.sleep(0.02)
        in_flight[who] -= 1
        return web.json_response({})

    base = await serve(handler)
    async with fast_transport(max_concurrency=3) as transport:
        await asyncio.gather(
            *(
                transport.request(p, "GET", f"{base}/{p}", headers={})
                for p in ("openai", "gemini") * 10
            )
        )
    # Each provider has its own gate (entered before its bucket's grant), so one
    # provider's waiting requests never hold the slots of another.
    assert peak == {"openai": 3, "gemini": 3}


async def test_a_paused_provider_holds_no_semaphore_slot(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    base = await serve(handler)
    async with fast_transport(max_concurrency=1) as transport:
        transport.limiter("openai").pause(5)
        blocked = asyncio.create_task(transport.request("openai", "GET", f"{base}/x", headers={}))
        await asyncio.sleep(0.01)
        start = time.monotonic()
        await transport.request("gemini", "GET", f"{base}/x", headers={})
        assert time.monotonic() - start < 0.5
        assert not blocked.done()
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        assert transport.limiter("openai").waiting == 0


async def test_form_factory_is_rebuilt_for_each_attempt(serve: Serve) -> None:
    forms: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        post = await request.post()
        forms.append({k: str(v) for k, v in post.items()})
        return web.Response(status=503 if len(forms) == 1 else 200)

    def form() -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field("purpose", "batch")
        data.add_field("file", b'{"a":1}\n', filename="in.jsonl", content_type="application/jsonl")
        return data

    base = await serve(handler)
    async with fast_transport() as transport:
        await transport.request("openai", "POST", f"{base}/v1/files", headers={}, data=form)
    assert len(forms) == 2 and forms[0]["purpose"] == forms[1]["purpose"] == "batch"


async def test_injected_session_is_used_and_not_closed(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    base = await serve(handler)
    async with aiohttp.ClientSession() as session:
        async with Transport(session=session) as transport:
            await transport.request("openai", "GET", f"{base}/x", headers={})
        assert not session.closed


async def test_redirect_to_another_origin_drops_the_key(serve: Serve) -> None:
    seen: dict[str, str | None] = {}

    async def elsewhere(request: web.Request) -> web.Response:
        seen["elsewhere"] = request.headers.get("x-goog-api-key")
        return web.Response(body=b"line\n")

    other = await serve(elsewhere)

    async def origin(request: web.Request) -> web.Response:
        if request.path == "/same":
            seen["same"] = request.headers.get("x-goog-api-key")
            return web.Response(body=b"ok\n")
        if request.path == "/hop":
            raise web.HTTPFound("/same")
        raise web.HTTPFound(f"{other}/file")

    base = await serve(origin)
    async with fast_transport() as transport:
        await transport.request("gemini", "GET", f"{base}/hop", headers={"x-goog-api-key": KEY})
        await transport.request("gemini", "GET", f"{base}/away", headers={"x-goog-api-key": KEY})
    assert seen == {"same": KEY, "elsewhere": None}


async def test_keys_go_only_to_the_providers_own_origin(serve: Serve, tmp_path: Path) -> None:
    # A server-supplied URL (Anthropic's results_url, say) on another host gets no key,
    # for the first request as for redirects; the provider's own host gets it.
    seen: list[tuple[str, str | None]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.host, request.headers.get("x-api-key")))
        return web.Response(body=b"line\n")

    provider = await serve(handler)
    stranger = await serve(handler)
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    async with fast_transport() as transport:
        await transport.request(
            "anthropic", "GET", f"{provider}/ok", headers=headers, origin=provider
        )
        await transport.first_line("anthropic", f"{stranger}/r", headers=headers, origin=provider)
        await transport.download(
            "anthropic", f"{stranger}/r", tmp_path / "o", headers=headers, origin=provider
        )
    keys = [key for _, key in seen]
    assert keys == [KEY, None, None]


async def test_first_line_reads_only_the_first_line(serve: Serve) -> None:
    long_line = b'{"custom_id":"run-1",' + b"x" * 300_000 + b"}"

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(long_line + b"\n")
        for _ in range(50):  # more than the client will ever read
            await resp.write(b"y" * 65536 + b"\n")
        return resp

    base = await serve(handler)
    async with fast_transport() as transport:
        line = await transport.first_line("anthropic", f"{base}/results", headers={})
    assert line == long_line


# ---------------------------------------------------------------- downloads

BODY = b"".join(b'{"custom_id": "r%06d", "n": %d}\n' % (i, i) for i in range(40_000))  # ~1.3 MB
ETAG = '"' + hashlib.sha1(BODY).hexdigest() + '"'


def range_start(request: web.Request) -> int:
    header = request.headers.get("Range", "")
    return int(header.removeprefix("bytes=").rstrip("-")) if header else 0


async def send_body(
    request: web.Request, *, cut: int | None, ranges: bool = True
) -> web.StreamResponse:
    """Serve BODY (honouring Range when ``ranges``); with ``cut``, declare the full
    length but drop the connection after ``cut`` bytes of this response."""
    start = range_start(request) if ranges else 0
    if ranges and request.headers.get("If-Range") not in (None, ETAG):
        start = 0
    payload = BODY[start:]
    resp = web.StreamResponse(status=206 if start else 200)
    resp.headers["ETag"] = ETAG
    resp.headers["Accept-Ranges"] = "bytes" if ranges else "none"
    if start:
        resp.headers["Content-Range"] = f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"
    resp.content_length = len(payload)
    await resp.prepare(request)
    if cut is None:
        await resp.write(payload)
        return resp
    await resp.write(payload[:cut])
    await asyncio.sleep(0.02)  # let the bytes reach the client before the drop
    assert request.transport is not None
    request.transport.close()
    return resp


async def test_truncated_download_retries_and_resumes_with_range(
    serve: Serve, tmp_path: Path
) -> None:
    requests: list[tuple[str | None, str | None]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        requests.append((request.headers.get("Range"), request.headers.get("If-Range")))
        return await send_body(request, cut=400_000 if len(requests) <= 2 else None)

    base = await serve(handler)
    dest = tmp_path / "sub" / "out.jsonl"
    async with fast_transport() as transport:
        size = await transport.download("openai", f"{base}/files/f/content", dest, headers={})
        assert transport.counters()["bytes_downloaded"] == len(BODY)
    assert size == len(BODY) and dest.read_bytes() == BODY
    assert requests == [
        (None, None),
        ("bytes=400000-", ETAG),  # resumed where the first one stopped
        ("bytes=800000-", ETAG),
    ]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.jsonl"]


async def test_truncated_download_restarts_when_the_server_ignores_range(
    serve: Serve, tmp_path: Path
) -> None:
    hits = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal hits
        hits += 1
        return await send_body(request, cut=500_000 if hits == 1 else None, ranges=False)

    base = await serve(handler)
    dest = tmp_path / "out.jsonl"
    async with fast_transport() as transport:
        size = await transport.download("openai", f"{base}/f", dest, headers={})
    assert hits == 2 and size == len(BODY) and dest.read_bytes() == BODY


async def test_download_that_always_ends_short_leaves_no_file(serve: Serve, tmp_path: Path) -> None:
    hits = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal hits
        hits += 1
        return await send_body(request, cut=1000)

    base = await serve(handler)
    dest = tmp_path / "out.jsonl"
    async with fast_transport() as transport:
        with pytest.raises(RetryExhaustedError) as info:
            await transport.download(
                "openai",
                f"{base}/f",
                dest,
                headers={},
                retry=RetryPolicy(max_tries=3, base_delay=0.01),
            )
    assert hits == 3
    assert isinstance(info.value.last, DownloadError)
    assert list(tmp_path.iterdir()) == []


async def test_download_http_error_leaves_no_file(serve: Serve, tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=404, body=openai_error("No such file", "invalid_request_error"))

    base = await serve(handler)
    async with fast_transport() as transport:
        with pytest.raises(ProviderError) as info:
            await transport.download("openai", f"{base}/f", tmp_path / "out.jsonl", headers={})
    assert info.value.status == 404 and "No such file" in info.value.message
    assert list(tmp_path.iterdir()) == []


async def test_cancelled_download_leaves_no_file(serve: Serve, tmp_path: Path) -> None:
    started = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 10_000_000
        await resp.prepare(request)
        await resp.write(b"x" * 200_000)
        started.set()
        await asyncio.sleep(10)
        return resp

    base = await serve(handler)
    async with fast_transport() as transport:
        task = asyncio.create_task(
            transport.download("openai", f"{base}/f", tmp_path / "o", headers={})
        )
        await started.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- secrets


async def test_key_never_logged_nor_raised(
    serve: Serve, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    hits = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal hits
        hits += 1
        if request.path.startswith("/dl"):
            return await send_body(request, cut=100)
        if hits % 3 == 1:
            return web.Response(status=503, headers={"retry-after-ms": "5"})
        if hits % 3 == 2:
            return reset(request)
        # A server that echoes the key back in its error message.
        return web.Response(
            status=401,
            body=openai_error(f"Incorrect API key provided: {KEY}", "invalid_request_error"),
        )

    base = await serve(handler)
    texts: list[str] = []
    cases = [
        ("openai", {"Authorization": f"Bearer {KEY}"}, f"{base}/v1/batches"),
        ("anthropic", {"x-api-key": KEY}, f"{base}/v1/messages/batches"),
        ("gemini", {"x-goog-api-key": KEY}, f"{base}/v1beta/batches?key={KEY}"),
    ]
    async with fast_transport() as transport:
        for provider, headers, url in cases:
            for call in (
                transport.request(provider, "GET", url, headers=headers),
                transport.request(
                    provider, "POST", url, headers=headers, json={}, idempotent=False
                ),
                transport.download(
                    provider, url.replace("/v1", "/dl"), tmp_path / "o", headers=headers
                ),
                transport.first_line(provider, url, headers=headers),
            ):
                try:
                    await call
                except ProviderError as exc:
                    texts += [str(exc), repr(exc), exc.message, str(getattr(exc, "last", ""))]
        texts += [repr(transport), str(transport.counters())]
        texts += [repr(transport.limiter(p)) for p, _, _ in cases]
    assert len(texts) > 20
    # The test server's own access log shows the ?key= it received; that side is not ours.
    for record in caplog.records:
        if record.name.startswith("aiohttp.access"):
            continue
        texts.append(record.getMessage())
        texts.append(str(record.args))
    assert any("Incorrect API key provided: ***" in t for t in texts)
    assert not [t for t in texts if KEY in t]


def test_redactor_and_safe_url() -> None:
    redact = Redactor(
        {"Authorization": f"Bearer {KEY}", "X-Other": "visible"}, f"http://h/p?key={KEY}x&alt=media"
    )
    assert redact(f"token {KEY} and {KEY}x here") == "token *** and *** here"
    assert redact("visible") == "visible"
    assert KEY not in repr(redact)
    assert safe_url(f"https://user:pw@h.example/v1beta/files/f:download?alt=media&key={KEY}#x") == (
        "https://h.example/v1beta/files/f:download"
    )


def test_error_text_shapes() -> None:
    assert error_text(b"", {"error": {"message": "m", "type": "t", "code": "c"}}) == ("m", "t")
    assert error_text(
        b"", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    ) == (
        "Overloaded",
        "overloaded_error",
    )
    assert error_text(b"", {"error": {"code": 404, "message": "gone", "status": "NOT_FOUND"}}) == (
        "gone",
        "NOT_FOUND",
    )
    assert error_text(b"  plain\n text ", None) == ("plain text", None)
    assert error_text(b"", None) == ("(empty body)", None)
