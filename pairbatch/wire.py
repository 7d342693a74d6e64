"""What crosses the wire: whole responses, the secrets kept out of every message, the
providers' error texts and the words for a failed connection."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiohttp
import attrs
import orjson
from yarl import URL

_ERROR_TEXT_LIMIT = 300

_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key"}
)
_SECRET_PARAMS = frozenset({"key", "api_key", "apikey", "access_token", "token"})


@attrs.frozen
class Response:
    """A whole HTTP answer: status, lower-cased headers and the body bytes."""

    status: int
    headers: dict[str, str] = attrs.field(repr=False)
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


# ---------------------------------------------------------------- secrets


def safe_url(url: str | URL) -> str:
    """The URL without credentials, query string or fragment: fit for a log line."""
    parts = urlsplit(str(url))
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Redactor:
    """Replaces every secret of one call (header keys, ``?key=`` values) with ``***``.

    The secrets are found on first use: most calls succeed and never format an error,
    and finding them (a URL parse) was ~5 % of the event loop's work per request.
    ``headers`` and ``params`` must not change after the call is made.
    """

    def __init__(
        self,
        headers: Mapping[str, str],
        url: str | URL = "",
        params: Mapping[str, str] | None = None,
    ) -> None:
        self._sources = (headers, url, params)
        self._found: list[str] | None = None

    @property
    def _secrets(self) -> list[str]:
        if self._found is None:
            self._found = _secrets_of(*self._sources)
        return self._found

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"


def _secrets_of(
    headers: Mapping[str, str], url: str | URL, params: Mapping[str, str] | None
) -> list[str]:
    found: set[str] = set()
    for name, value in headers.items():
        if name.lower() in _SECRET_HEADERS and value:
            found.add(value)
            scheme, _, token = value.partition(" ")
            if token and scheme.lower() in ("bearer", "basic", "token"):
                found.add(token.strip())
    query = list(parse_qsl(urlsplit(str(url)).query)) + list((params or {}).items())
    found.update(v for k, v in query if k.lower() in _SECRET_PARAMS and v)
    # Longest first, so a token inside "Bearer <token>" never leaves "Bearer ***"'s
    # tail behind; very short values would mangle ordinary text and are no secret.
    return sorted((s for s in found if len(s) >= 6), key=len, reverse=True)


def without_secrets(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers minus every one that carries a credential."""
    return {k: v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS}


# ---------------------------------------------------------------- error bodies


def error_text(body: bytes, parsed: object) -> tuple[str, str | None]:
    """The provider's own error message and type from any of the three error shapes.

    OpenAI ``{"error": {"message", "type", "code"}}``, Anthropic ``{"type": "error",
    "error": {"type", "message"}}``, Gemini ``{"error": {"code", "message", "status"}}``;
    otherwise a short, truncated text of the body.
    """
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            kind = error.get("type") or error.get("status") or error.get("code")
            if message:
                return _shorten(str(message), 2000), None if kind is None else str(kind)
        elif isinstance(error, str) and error:
            return _shorten(error, 2000), None
    text = body[:_ERROR_TEXT_LIMIT].decode("utf-8", errors="replace").strip()
    if len(body) > _ERROR_TEXT_LIMIT:
        text += "…"
    return (" ".join(text.split()) or "(empty body)"), None


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def loads_or_none(body: bytes) -> object:
    """The body as JSON, or ``None`` when it is empty or not JSON."""
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with lower-cased names, as every reader here looks them up."""
    return {k.lower(): v for k, v in headers.items()}


def connection_cause(exc: BaseException) -> str:
    """What went wrong on the wire, in words a person can act on."""
    certificate = getattr(aiohttp, "ClientConnectorCertificateError", ())
    ssl_error = getattr(aiohttp, "ClientConnectorSSLError", ())
    dns_error = getattr(aiohttp, "ClientConnectorDNSError", ())
    if certificate and isinstance(exc, certificate):
        return "TLS certificate not trusted"
    if ssl_error and isinstance(exc, ssl_error):
        return "TLS handshake failed"
    if dns_error and isinstance(exc, dns_error):
        return "DNS lookup failed"
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    os_error = getattr(exc, "os_error", None)
    errno_value = getattr(os_error, "errno", None)
    if isinstance(os_error, socket.gaierror):
        return "DNS lookup failed"
    if errno_value in (errno.ECONNREFUSED,):
        return "connection refused"
    if errno_value in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "network unreachable"
    if errno_value in (errno.ECONNRESET, errno.EPIPE):
        return "connection reset"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, aiohttp.ClientConnectorError) and os_error is not None:
        return f"cannot connect: {getattr(os_error, 'strerror', None) or os_error}"
    return type(exc).__name__
