"""Signed webhooks from the emulator when a batch ends, as OpenAI and the Gemini API send them.

Batch states follow the clock and nothing runs per batch (see :mod:`pairbatch.testing.state`),
so one background task watches the batches not yet ended: it sleeps until the next end
time (at most ``tick`` seconds, so an injected or stepped clock and a cancel that moves an
end forward are seen too), confirms the end with the batch's own view, and posts the
event. Deliveries are signed per Standard Webhooks (:mod:`pairbatch.webhooks`), retried
on a non-2xx answer or a connection error with a short backoff (the real senders retry
for up to 72 h (OpenAI) or 24 h (Gemini); a test wants seconds), keep their
``webhook-id`` across retries and are re-signed with a fresh timestamp each time, as the
spec says. Anthropic documents no batch webhooks, so none are sent for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import random
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import attrs
import orjson

from pairbatch.testing._core import Core
from pairbatch.testing._http import GEMINI, OPENAI
from pairbatch.testing.state import Batch, BatchFate, EndKind, View
from pairbatch.webhooks import SigningSecret, signed_headers

logger = logging.getLogger("pairbatch.testing")

WEBHOOK_PROVIDERS = (OPENAI, GEMINI)
DEFAULT_RETRIES = (0.2, 1.0, 3.0)  # seconds before the 2nd, 3rd and 4th attempts

# OpenAI: the SDK's batch event types. Gemini: google-genai's WebhookSubscribedEvent
# (batch.succeeded / batch.failed / batch.expired) plus batch.cancelled from its guide.
_EVENT_TYPES = {
    OPENAI: {
        EndKind.COMPLETED: "batch.completed",
        EndKind.FAILED: "batch.failed",
        EndKind.EXPIRED: "batch.expired",
        EndKind.CANCELLED: "batch.cancelled",
    },
    GEMINI: {
        EndKind.COMPLETED: "batch.succeeded",
        EndKind.FAILED: "batch.failed",
        EndKind.EXPIRED: "batch.expired",
        EndKind.CANCELLED: "batch.cancelled",
    },
}


def check_loopback(url: str) -> str:
    """``url`` if it is http(s) on a loopback host; the emulator posts nowhere else."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"webhook_url must be an http(s) URL, got {url!r}")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"webhook_url must be on loopback (127.0.0.1, ::1), got {host!r}")
    return url


@attrs.define
class WebhookTarget:
    url: str
    secret: SigningSecret = attrs.field(repr=False)
    secret_text: str = attrs.field(repr=False)


@attrs.define
class Delivery:
    """One event and how its delivery went. ``status`` is the last answer (0: none)."""

    provider: str
    batch_id: str
    event_type: str
    webhook_id: str
    attempts: int = 0
    status: int = 0
    delivered: bool = False
    ended_at: float = 0.0  # the batch's end, on the emulator clock
    sent_at: float | None = None  # time.monotonic() of the successful attempt


def ends_at(batch: Batch) -> float:
    """When ``batch`` becomes terminal by the clock model (a cancel moves it forward)."""
    if batch.synthetic_total is not None:
        return batch.end_at
    cancel = batch.effective_cancel()
    if cancel is not None:
        return cancel + batch.cancel_delay_share * batch.latency
    return batch.start_at if batch.fate is BatchFate.FAILED else batch.end_at


class WebhookSender:
    """Watches one emulator's batches and posts a signed event when each one ends."""

    def __init__(
        self,
        core: Core,
        *,
        retries: Sequence[float] = DEFAULT_RETRIES,
        tick: float = 0.1,
        timeout: float = 5.0,
    ) -> None:
        if tick <= 0 or timeout <= 0 or any(r < 0 for r in retries):
            raise ValueError("webhook tick and timeout must be > 0 and retries >= 0")
        self.core = core
        self.retries = tuple(float(r) for r in retries)
        self.tick = tick
        self.timeout = timeout
        self.targets: dict[str, WebhookTarget] = {}
        self.deliveries: list[Delivery] = []
        self._pending: dict[tuple[str, str], Batch] = {}
        self._changed = asyncio.Event()
        self._rng = random.Random(f"{core.seed}:webhooks")
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._running = False

    def set_target(self, provider: str, url: str | None, secret: str | None) -> str | None:
        """Send ``provider``'s events to ``url`` signed with ``secret`` (a new random
        ``whsec_`` one when ``None``); ``url=None`` stops them. Returns the secret text."""
        if provider not in WEBHOOK_PROVIDERS:
            raise ValueError(f"{provider} sends no batch webhooks; only {WEBHOOK_PROVIDERS} do")
        if url is None:
            self.targets.pop(provider, None)
            for stale in [k for k in self._pending if k[0] == provider]:
                del self._pending[stale]
            return None
        check_loopback(url)
        if secret is None:
            key, secret = SigningSecret.generate()
        else:
            key = SigningSecret.parse(secret, f"{provider} webhook_secret")
        if provider not in self.targets:
            # Like a real endpoint added later: batches still running will be reported.
            now = self.core.now()
            for batch in self.core.batches[provider].values():
                if ends_at(batch) > now:
                    self._pending[(provider, batch.id)] = batch
        self.targets[provider] = WebhookTarget(url, key, secret)
        self._changed.set()
        return secret

    def watch(self, batch: Batch) -> None:
        """``Core.on_batch``: remember a new batch until it ends (only while its provider
        has a target, so an emulator without webhooks keeps nothing)."""
        if batch.provider in self.targets:
            self._pending[(batch.provider, batch.id)] = batch
            self._changed.set()

    # -- lifecycle

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            # Deliveries go to loopback only; never through a proxy from the environment.
            trust_env=False,
        )
        self._task = asyncio.create_task(self._watch(), name="pairbatch-emulator-webhooks")

    async def close(self) -> None:
        """Stop watching and cancel deliveries in flight (nothing is left running)."""
        self._running = False
        tasks = [t for t in (self._task, *self._sending) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- watching

    async def _watch(self) -> None:
        while True:
            self._changed.clear()
            try:
                delay = self._fire_due()
            except Exception:
                # One bad batch must not silence every later webhook of this emulator.
                logger.exception("emulator webhook watcher failed; retrying")
                delay = self.tick
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), delay)

    def _fire_due(self) -> float | None:
        """Post the batches that have ended; the seconds until the next may have."""
        now = self.core.now()
        soonest = math.inf
        for key, batch in list(self._pending.items()):
            due = ends_at(batch)
            if due <= now:
                view = batch.view(now)
                if view.terminal:
                    del self._pending[key]
                    self._fire(batch, view)
                    continue
                due = now + self.tick  # the model and the view disagree: look again soon
            soonest = min(soonest, due)
        if soonest == math.inf:
            return None  # nothing to watch: sleep until a batch is added
        # Capped: an injected clock may run faster than real time, or be stepped.
        return min(max(soonest - now, 0.0), self.tick)

    def _fire(self, batch: Batch, view: View) -> None:
        target = self.targets.get(batch.provider)
        if target is None or view.end is None:
            return
        ended = view.ended_at if view.ended_at is not None else self.core.now()
        event_type = _EVENT_TYPES[batch.provider][view.end]
        body, webhook_id = self._event(batch, event_type, self.core.wall(ended))
        delivery = Delivery(batch.provider, batch.id, event_type, webhook_id, ended_at=ended)
        self.deliveries.append(delivery)
        task = asyncio.create_task(
            self._deliver(target, delivery, body), name=f"pairbatch-webhook-{batch.id}"
        )
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    @staticmethod
    def _event(batch: Batch, event_type: str, wall: float) -> tuple[bytes, str]:
        if batch.provider == OPENAI:
            # The shape of openai.types.webhooks.BatchCompletedWebhookEvent and siblings.
            payload: dict[str, Any] = {
                "id": "evt_" + secrets.token_hex(16),
                "object": "event",
                "created_at": int(wall),
                "type": event_type,
                "data": {"id": batch.id},
            }
            return orjson.dumps(payload), "wh_" + secrets.token_hex(16)
        # Gemini's thin payload: type, version, timestamp, and the batch in data.
        stamp = datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        payload = {
            "type": event_type,
            "version": "v1",
            "timestamp": stamp,
            "data": {"id": f"batches/{batch.id}"},
        }
        return orjson.dumps(payload), "msg_" + secrets.token_hex(16)

    async def _deliver(self, target: WebhookTarget, delivery: Delivery, body: bytes) -> None:
        session = self._session
        assert session is not None
        for attempt, backoff in enumerate((0.0, *self.retries)):
            if backoff:
                # Jittered, so retries of many events do not arrive together.
                await asyncio.sleep(backoff * self._rng.uniform(0.8, 1.2))
            delivery.attempts = attempt + 1
            headers = signed_headers([target.secret], delivery.webhook_id, int(time.time()), body)
            headers["content-type"] = "application/json"
            try:
                async with session.post(target.url, data=body, headers=headers) as response:
                    delivery.status = response.status
                    await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                delivery.status = 0
                logger.debug("webhook %s to %s failed: %r", delivery.webhook_id, target.url, exc)
                continue
            if 200 <= delivery.status < 300:
                delivery.delivered = True
                delivery.sent_at = time.monotonic()
                logger.debug(
                    "%s webhook %s for %s delivered (attempt %d)",
                    delivery.provider,
                    delivery.event_type,
                    delivery.batch_id,
                    delivery.attempts,
                )
                return
            if delivery.status == 410:
                break  # "Gone": the receiver wants no more (Standard Webhooks)
        logger.warning(
            "%s webhook %s for %s not delivered after %d attempts (last status %d)",
            delivery.provider,
            delivery.event_type,
            delivery.batch_id,
            delivery.attempts,
            delivery.status,
        )
