"""Receiving the providers' signed "batch finished" webhooks, to wake a job's poller at once.

OpenAI (batch events) and the Gemini API (static, project-level webhooks) both sign with
the Standard Webhooks scheme (HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{body}``,
``whsec_`` secrets, a 300 s tolerance; the rules and their sources are in
:mod:`pairbatch._standard_webhooks`), so one verifier serves both.

Sources for the providers: the official ``openai`` SDK (``resources/webhooks``:
``unwrap``/``verify_signature``; ``types/webhooks``: the ``batch.completed``, ``.failed``,
``.expired`` and ``.cancelled`` events, ``data.id`` the batch id); Google's Gemini API
webhooks guide (ai.google.dev/gemini-api/docs/webhooks) and launch post (May 2026):
static webhooks follow Standard Webhooks with HMAC-SHA256, events ``batch.succeeded``,
``batch.failed``, ``batch.expired`` (google-genai's ``WebhookSubscribedEvent``) with a thin
``data`` naming the batch. Gemini's *dynamic* webhooks (per-job ``webhook_config``) are
signed with RS256 JWTs checked against Google's JWKS instead; they are not supported here.

An event is only a hint (see :mod:`pairbatch.wakeups`): the poll it triggers confirms the
state, so a valid event for an unknown batch is answered 200 and a redelivered one costs
nothing. Secrets are never logged, shown in a repr or put in an error message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

import attrs
import orjson

# The scheme itself lives in its own module; these names are part of this one's API.
from pairbatch._standard_webhooks import (
    DEFAULT_TOLERANCE,
    ReplayGuard,
    SigningSecret,
    WebhookRejected,
    sign,
    signed_headers,
    verify_signature,
)
from pairbatch.wakeups import Wakeups

__all__ = [
    "DEFAULT_TOLERANCE",
    "SECRET_ENV",
    "ProviderEndpoint",
    "ReplayGuard",
    "SigningSecret",
    "WebhookEvent",
    "WebhookReceiver",
    "WebhookRejected",
    "batch_id_of",
    "sign",
    "signed_headers",
    "verify_signature",
]

log = logging.getLogger("pairbatch.webhooks")

SECRET_ENV = {"openai": "OPENAI_WEBHOOK_SECRET", "gemini": "GEMINI_WEBHOOK_SECRET"}
PROVIDERS = tuple(SECRET_ENV)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@attrs.frozen
class WebhookEvent:
    """One verified event. ``batch_id`` is the id pairbatch polls (Gemini: ``batches/...``)
    when the event is about a batch, else ``None``."""

    provider: str
    webhook_id: str
    type: str
    batch_id: str | None
    duplicate: bool = False
    payload: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


def batch_id_of(provider: str, payload: Mapping[str, Any]) -> str | None:
    """The batch an event is about: ``data.id`` for OpenAI's ``batch.*`` events; for
    Gemini's, ``data.name`` or ``data.id``, as the ``batches/<id>`` name pairbatch uses."""
    kind = payload.get("type")
    data = payload.get("data")
    if not isinstance(kind, str) or not kind.startswith("batch.") or not isinstance(data, dict):
        return None
    value = data.get("name") if provider == "gemini" else None
    value = value if isinstance(value, str) and value else data.get("id")
    if not isinstance(value, str) or not value:
        return None
    if provider == "gemini" and not value.startswith("batches/"):
        value = f"batches/{value}"
    return value


def _secrets(value: str | Sequence[str] | None, provider: str) -> tuple[SigningSecret, ...]:
    what = SECRET_ENV[provider]
    if value is None:
        value = os.environ.get(what) or None
        if value is None:
            return ()
    texts = [value] if isinstance(value, str) else list(value)
    return tuple(SigningSecret.parse(t, what) for t in texts)


class WebhookReceiver:
    """Verifies webhook deliveries and wakes the pollers of the batches they name.

    A plain ASGI app: mount it (``app.mount("/webhooks", receiver)``) and point OpenAI at
    ``.../webhooks/openai`` and Gemini at ``.../webhooks/gemini``; a POST to the mount
    root is checked against every configured secret. :meth:`handle` is the same thing for
    any other framework (give it the raw body and the headers). ``openai_secret`` and
    ``gemini_secret`` (a ``whsec_...`` string, or several during a rotation) default to
    ``OPENAI_WEBHOOK_SECRET`` and ``GEMINI_WEBHOOK_SECRET``. :class:`~pairbatch.wakeups.Wakeups`
    is not thread-safe: serve the receiver on the pollers' event loop, or pass that loop
    as ``loop`` and wakes from any other thread are handed to it.
    """

    def __init__(
        self,
        wakeups: Wakeups,
        *,
        openai_secret: str | Sequence[str] | None = None,
        gemini_secret: str | Sequence[str] | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        replay_capacity: int = 10_000,
        max_body_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.time,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if tolerance <= 0:
            raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
        self.wakeups = wakeups
        self._secrets = {
            "openai": _secrets(openai_secret, "openai"),
            "gemini": _secrets(gemini_secret, "gemini"),
        }
        if not any(self._secrets.values()):
            names = " or ".join(SECRET_ENV.values())
            raise ValueError(f"no webhook secret: pass one or set {names}")
        self.tolerance = float(tolerance)
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self.loop = loop
        self.replays = ReplayGuard(2 * self.tolerance, replay_capacity)
        self.stats: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"WebhookReceiver(providers={self.providers!r})"

    @property
    def providers(self) -> tuple[str, ...]:
        """The providers with a secret configured."""
        return tuple(p for p in PROVIDERS if self._secrets[p])

    # -- framework-free

    def verify(
        self, body: bytes, headers: Mapping[str, str], provider: str | None = None
    ) -> WebhookEvent:
        """Check one delivery (signature, timestamp, replay) and parse it; raises
        :class:`WebhookRejected`. ``provider=None`` tries every configured secret."""
        lowered = {k.lower(): v for k, v in headers.items()}
        candidates = [provider] if provider is not None else list(self.providers)
        keys = [(p, s) for p in candidates for s in self._secrets.get(p, ())]
        if not keys:
            raise WebhookRejected(404, f"no webhook secret configured for {provider}")
        now = self.clock()
        webhook_id, timestamp, index = verify_signature(
            body, lowered, [s for _, s in keys], tolerance=self.tolerance, now=now
        )
        seen = self.replays.check(webhook_id, timestamp, now)
        if seen == "replay":
            raise WebhookRejected(401, "replayed webhook-id")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise WebhookRejected(400, "body is not JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
            raise WebhookRejected(400, "body is not an event object")
        name = keys[index][0]
        return WebhookEvent(
            name,
            webhook_id,
            payload["type"],
            batch_id_of(name, payload),
            duplicate=seen == "redelivery",
            payload=payload,
        )

    def handle(
        self, body: bytes, headers: Mapping[str, str], provider: str | None = None
    ) -> tuple[int, str]:
        """Verify, wake the batch's poller, and say what to answer: ``(status, reason)``."""
        try:
            event = self.verify(body, headers, provider)
        except WebhookRejected as exc:
            self.stats[f"rejected:{exc.reason}"] += 1
            log.warning("webhook rejected (%d): %s", exc.status, exc.reason)
            return exc.status, exc.reason
        if event.duplicate:
            self.stats["duplicate"] += 1
            log.debug("webhook %s redelivered; already acted on", event.webhook_id)
            return 200, "duplicate"
        self.stats["accepted"] += 1
        if event.batch_id is not None:
            if self.loop is not None and _running_loop() is not self.loop:
                self.loop.call_soon_threadsafe(self.wakeups.wake, event.batch_id)
                self.stats["handed_over"] += 1
                outcome = "handed to its event loop"
            else:
                woke = self.wakeups.wake(event.batch_id)
                self.stats["woken" if woke else "early"] += 1
                outcome = "woken" if woke else "not sleeping; kept for its next sleep"
            log.info(
                "%s webhook %s for batch %s (poller %s)",
                event.provider,
                event.type,
                event.batch_id,
                outcome,
            )
        return 200, "ok"

    # -- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(scope, receive, send, None)

    def app(self, provider: str) -> ProviderEndpoint:
        """An ASGI app for one provider's deliveries, at any path (a Starlette ``Route``)."""
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; should be one of {PROVIDERS}")
        return ProviderEndpoint(self, provider)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, fixed: str | None) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"WebhookReceiver does not serve {scope['type']!r}")
        provider = fixed
        if provider is None:
            path = _route_path(scope).strip("/")
            if path and path not in PROVIDERS:
                await _respond(send, 404, "not found")
                return
            provider = path or None
        if scope.get("method") != "POST":
            await _respond(send, 405, "use POST", [(b"allow", b"POST")])
            return
        headers = _headers(scope)
        body = await self._read(receive, headers)
        if body is None:
            await _respond(send, 413, "body too large")
            return
        status, reason = self.handle(body, headers, provider)
        await _respond(send, status, reason)

    async def _read(self, receive: Receive, headers: Mapping[str, str]) -> bytes | None:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


@attrs.frozen
class ProviderEndpoint:
    """:meth:`WebhookReceiver.app`: an object, not a function, because Starlette takes a
    plain function as a request-response endpoint and anything else as an ASGI app."""

    receiver: WebhookReceiver
    provider: str

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.receiver._serve(scope, receive, send, self.provider)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _route_path(scope: Scope) -> str:
    # Starlette's Mount keeps the full path and extends root_path (as its get_route_path).
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _headers(scope: Scope) -> dict[str, str]:
    result: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        # Signature lists may arrive split over repeated headers; anything else repeated
        # is left empty so the verifier refuses it as malformed.
        if name in result:
            value = f"{result[name]} {value}" if name == "webhook-signature" else ""
        result[name] = value
    return result


async def _respond(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = text.encode() + b"\n"
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    # Served on its own (``uvicorn pairbatch.webhooks:...``) the app has nothing to set up.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
