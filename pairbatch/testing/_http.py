"""HTTP helpers shared by the provider routes: error shapes, JSON, ranged streaming."""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from pairbatch.testing.blobs import Blob

OPENAI = "openai"
ANTHROPIC = "anthropic"
GEMINI = "gemini"
PROVIDERS = (OPENAI, ANTHROPIC, GEMINI)

# Set by the fault layer when a download must be cut short: the share of bytes to send.
TRUNCATE_KEY: web.RequestKey[float] = web.RequestKey("pairbatch_truncate", float)

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "requests",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    416: "OUT_OF_RANGE",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def request_id(prefix: str = "req_") -> str:
    return prefix + secrets.token_hex(12)


def openai_error_body(
    status: int,
    message: str,
    *,
    type_: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    kind = type_ or _OPENAI_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def anthropic_error_body(
    status: int, message: str, *, type_: str | None = None, req_id: str | None = None
) -> dict[str, Any]:
    kind = type_ or _ANTHROPIC_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": req_id}


def google_error_body(
    status: int,
    message: str,
    *,
    status_name: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": status_name or _GOOGLE_STATUS.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def error_response(
    provider: str,
    status: int,
    message: str,
    *,
    kind: str | None = None,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> web.Response:
    """An error in ``provider``'s own shape. ``kind`` is the type / canonical status."""
    body: dict[str, Any]
    all_headers = dict(headers or {})
    if provider == OPENAI:
        body = openai_error_body(status, message, type_=kind, code=code, param=param)
    elif provider == ANTHROPIC:
        rid = request_id()
        all_headers.setdefault("request-id", rid)
        body = anthropic_error_body(status, message, type_=kind, req_id=rid)
    else:
        body = google_error_body(status, message, status_name=kind, details=details)
    return json_response(body, status=status, headers=all_headers)


async def read_json(request: web.Request) -> Any:
    """The JSON body, or ``ValueError`` with a message fit for a 400."""
    raw = await request.read()
    if not raw:
        raise ValueError("the request body is empty; expected JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the request body is not valid JSON: {exc}") from None


_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(start, end_exclusive)``, ``None`` for the whole body, or ``"unsatisfiable"``.

    Only single ranges are supported; a malformed header is ignored, as RFC 9110 allows.
    """
    if not header:
        return None
    match = _RANGE_RE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if start >= size or end <= start:
        return "unsatisfiable"
    return start, end


async def stream_blob(
    request: web.Request,
    blob: Blob,
    *,
    content_type: str = "application/octet-stream",
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Serve ``blob`` honouring ``Range``, and cut it short if the fault layer said so."""
    size = blob.size
    wanted = parse_range(request.headers.get("Range"), size)
    if wanted == "unsatisfiable":
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    response = web.StreamResponse(headers=headers)
    response.content_type = content_type
    response.headers["Accept-Ranges"] = "bytes"
    if isinstance(wanted, tuple):
        start, end = wanted
        response.set_status(206)
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    else:
        start, end = 0, size
    response.content_length = end - start
    truncate = request.get(TRUNCATE_KEY)
    limit = end - start
    if truncate is not None:
        limit = math.floor(limit * truncate)
    await response.prepare(request)
    sent = 0
    for chunk in blob.iter_range(start, end):
        if sent + len(chunk) > limit:
            chunk = chunk[: limit - sent]
        if chunk:
            await response.write(chunk)
            sent += len(chunk)
        if sent >= limit:
            break
    if sent < end - start:
        # Declared more than we sent: closing now is what a dropped proxy looks like.
        transport = request.transport
        if transport is not None:
            transport.abort()
        return response
    await response.write_eof()
    return response
