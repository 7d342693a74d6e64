"""State shared by one emulator's routes, and the layer every request goes through.

The layer order mirrors a real edge: authentication, then the rate limiter, then
injected transport faults, then the handler. Every request is counted, whatever
happens to it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
from aiohttp import web

from pairbatch.testing._http import (
    ANTHROPIC,
    GEMINI,
    OPENAI,
    PROVIDERS,
    TRUNCATE_KEY,
    error_response,
    request_id,
)
from pairbatch.testing.faults import (
    DOWNLOAD_ENDPOINTS,
    NO_FAULTS,
    NOT_FOUND,
    UPLOAD_CHUNK,
    UPLOAD_START,
    FaultConfig,
    stable_int,
)
from pairbatch.testing.judge import Judge
from pairbatch.testing.state import (
    CANCEL_SHARE,
    Batch,
    BatchFate,
    Clock,
    Fates,
    Outcome,
    Request,
)
from pairbatch.testing.stats import EmulatorStats

logger = logging.getLogger("pairbatch.testing")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.define
class TokenBucket:
    rate: float
    burst: int
    tokens: float
    last: float

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def go_duration(seconds: float) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` style: ``1s``, ``250ms``, ``6m0s``."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:.0f}s" if minutes else f"{secs:.3g}s"


@attrs.define(eq=False)
class Core:
    """Everything one emulator owns. Nothing here is shared between emulators."""

    seed: int
    latency: float | tuple[float, float]
    judge: Judge
    faults: Mapping[str, FaultConfig]
    clock: Clock
    api_key: str | None
    stats: EmulatorStats = attrs.field(factory=EmulatorStats)
    batches: dict[str, dict[str, Batch]] = attrs.field(factory=lambda: {p: {} for p in PROVIDERS})
    fates: dict[str, Fates] = attrs.field(init=False)
    rngs: dict[str, random.Random] = attrs.field(init=False)
    buckets: dict[str, TokenBucket] = attrs.field(factory=dict)
    epoch_offset: float = attrs.field(init=False)
    # OpenAI route name -> (Gemini endpoint, handler) for the /v1 paths both serve; a
    # request with Google credentials goes to the Gemini one.
    twins: dict[str, tuple[str, Handler]] = attrs.field(factory=dict)
    origin: str = ""  # http://host:port, known once the server is bound
    server: web.Server | None = None
    # Answer a model id the rules table does not know with the services' 404.
    refuse_unknown_models: bool = False
    # Told of every batch added (the webhook sender watches for its end); None: nobody.
    on_batch: Callable[[Batch], None] | None = None

    def __attrs_post_init__(self) -> None:
        self.fates = {p: Fates(self.seed, p, self.latency) for p in PROVIDERS}
        self.rngs = {p: random.Random(f"{self.seed}:{p}:http") for p in PROVIDERS}
        # Wall-clock timestamps follow the (possibly injected) clock from "now".
        self.epoch_offset = time.time() - self.clock()

    def now(self) -> float:
        return self.clock()

    def wall(self, t: float) -> float:
        return self.epoch_offset + t

    def fault_config(self, provider: str) -> FaultConfig:
        return self.faults.get(provider, NO_FAULTS)

    def create_batch(
        self,
        provider: str,
        batch_id: str,
        items: list[tuple[str, dict[str, Any], Any]],
        *,
        info: dict[str, Any],
        errors: list[dict[str, Any]] | None = None,
        cancel_delay_share: float = CANCEL_SHARE,
    ) -> Batch:
        """Decide a new batch's fates from hashes and store it.

        ``items`` are ``(custom_id, body, metadata)``. Validation ``errors`` make the batch
        fail whatever the fault draw says.
        """
        fates = self.fates[provider]
        faults = self.fault_config(provider)
        content, attempt = fates.batch_draw([cid for cid, _, _ in items])
        fate = BatchFate.FAILED if errors else fates.batch_fate(faults, content, attempt)
        if provider == ANTHROPIC and fate is BatchFate.FAILED:
            # Anthropic batches cannot fail as a whole; the closest is every request erroring.
            fate = BatchFate.ALL_ERRORED
        requests = []
        for index, (custom_id, body, metadata) in enumerate(items):
            outcome, done = fates.request(faults, custom_id)
            if fate is BatchFate.ALL_ERRORED:
                outcome = Outcome.ERRORED
            requests.append(Request(index, custom_id, body, outcome, done, metadata))
        batch = Batch(
            provider=provider,
            id=batch_id,
            created=self.now(),
            latency=fates.batch_latency(content, attempt),
            fate=fate,
            cut=fates.cut(content, attempt),
            shuffle_seed=stable_int(self.seed, provider, "shuffle", content, attempt),
            requests=requests,
            info=info,
            errors=list(errors or []),
            cancel_delay_share=cancel_delay_share,
        )
        self.add_batch(batch)
        return batch

    def add_batch(self, batch: Batch) -> None:
        self.batches[batch.provider][batch.id] = batch
        self.stats.batches_created[batch.provider] += 1
        if self.on_batch is not None:
            self.on_batch(batch)
        logger.debug(
            "%s batch %s created (%d requests, fate %s, latency %.3fs)",
            batch.provider,
            batch.id,
            batch.n_requests,
            batch.fate.value,
            batch.latency,
        )

    # -- the request layer -------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        name = request.match_info.route.name
        twin = self.twins.get(name) if name else None
        if twin is not None and _google_credentials(request):
            provider, (endpoint, handler) = GEMINI, twin
        elif name and ":" in name:
            provider, endpoint = name.split(":", 1)
            endpoint = endpoint.split("-", 1)[0]
        else:
            provider, endpoint = _guess_provider(request), NOT_FOUND
        if endpoint == UPLOAD_START and request.query.get("upload_id"):
            endpoint = UPLOAD_CHUNK  # the query form of a resumable upload URL
        connections = len(self.server.connections) if self.server is not None else 0
        self.stats.started(provider, time.monotonic(), connections)
        status = 0
        try:
            response = await self._pipeline(request, handler, provider, endpoint)
            transport = request.transport
            status = 0 if transport is None or transport.is_closing() else response.status
            if request.get(TRUNCATE_KEY) is not None:
                status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.stats.finished(provider, endpoint, status)

    async def _pipeline(
        self, request: web.Request, handler: Handler, provider: str, endpoint: str
    ) -> web.StreamResponse:
        if endpoint == NOT_FOUND:
            return error_response(provider, 404, f"no route for {request.method} {request.path}")
        if endpoint != UPLOAD_CHUNK:
            denied = self._check_auth(request, provider)
            if denied is not None:
                return denied
        faults = self.fault_config(provider)
        rng = self.rngs[provider]
        slow = False
        if faults.targets(endpoint):
            limited = self._rate_limit(provider, faults)
            if limited is not None:
                return limited
            injected = self._transport_fault(request, provider, faults, rng)
            if injected is not None:
                return injected
            if (
                endpoint in DOWNLOAD_ENDPOINTS
                and faults.truncate_rate > 0
                and rng.random() < faults.truncate_rate
            ):
                request[TRUNCATE_KEY] = faults.truncate_fraction
                self.stats.fault(provider, "truncate")
        if faults.slow_targets(endpoint) and faults.slow_rate > 0:
            slow = rng.random() < faults.slow_rate
        if slow and not faults.slow_after:
            self.stats.fault(provider, "slow")
            await asyncio.sleep(faults.slow_seconds)
        response = await handler(request)
        if slow and faults.slow_after:
            self.stats.fault(provider, "slow")
            await asyncio.sleep(faults.slow_seconds)
        self._decorate(response, provider, faults)
        return response

    def _decorate(self, response: web.StreamResponse, provider: str, faults: FaultConfig) -> None:
        if response.prepared:
            return
        if provider == OPENAI:
            response.headers.setdefault("x-request-id", request_id())
            response.headers.setdefault("openai-processing-ms", "1")
        elif provider == ANTHROPIC:
            response.headers.setdefault("request-id", request_id())
        bucket = self.buckets.get(provider)
        if bucket is not None and faults.rate_limit is not None:
            remaining = str(max(0, math.floor(bucket.tokens)))
            if provider == OPENAI:
                response.headers["x-ratelimit-limit-requests"] = str(faults.burst)
                response.headers["x-ratelimit-remaining-requests"] = remaining
                response.headers["x-ratelimit-reset-requests"] = go_duration(
                    1.0 / faults.rate_limit
                )
            elif provider == ANTHROPIC:
                response.headers["anthropic-ratelimit-requests-limit"] = str(faults.burst)
                response.headers["anthropic-ratelimit-requests-remaining"] = remaining
                response.headers["anthropic-ratelimit-requests-reset"] = rfc3339(
                    time.time() + 1.0 / faults.rate_limit
                )

    def _check_auth(self, request: web.Request, provider: str) -> web.Response | None:
        headers = request.headers
        if provider == OPENAI:
            auth = headers.get("Authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if not key:
                return error_response(
                    OPENAI,
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                )
            if self.api_key is not None and key != self.api_key:
                return error_response(
                    OPENAI, 401, "Incorrect API key provided.", code="invalid_api_key"
                )
            return None
        if provider == ANTHROPIC:
            key = headers.get("x-api-key", "").strip()
            auth = headers.get("Authorization", "")
            if not key and auth[:7].lower() == "bearer ":
                key = auth[7:].strip()
            if not key:
                return error_response(ANTHROPIC, 401, "x-api-key header is required")
            if self.api_key is not None and key != self.api_key:
                return error_response(ANTHROPIC, 401, "invalid x-api-key")
            if not headers.get("anthropic-version"):
                return error_response(ANTHROPIC, 400, "anthropic-version: header is required")
            return None
        key = headers.get("x-goog-api-key", "").strip() or request.query.get("key", "").strip()
        if not key:
            return error_response(
                GEMINI,
                401,
                "Request is missing required authentication credential. Expected an API key "
                "in the x-goog-api-key header or the key query parameter.",
            )
        if self.api_key is not None and key != self.api_key:
            return error_response(
                GEMINI,
                400,
                "API key not valid. Please pass a valid API key.",
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                    }
                ],
            )
        return None

    def _rate_limit(self, provider: str, faults: FaultConfig) -> web.Response | None:
        if faults.rate_limit is None:
            return None
        now = time.monotonic()
        bucket = self.buckets.get(provider)
        if bucket is None:
            bucket = TokenBucket(faults.rate_limit, faults.burst, float(faults.burst), now)
            self.buckets[provider] = bucket
        wait = bucket.take(now)
        if wait <= 0:
            return None
        self.stats.rate_limited[provider] += 1
        self.stats.fault(provider, "rate_limit")
        headers = self._retry_headers(faults)
        if provider == GEMINI:
            # Gemini sends no Retry-After header; the delay is a protobuf Duration.
            return error_response(
                GEMINI,
                429,
                "Resource has been exhausted (e.g. check quota).",
                headers=headers,
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [
                            {
                                "quotaMetric": "generativelanguage.googleapis.com/batch_requests",
                                "quotaId": "BatchRequestsPerMinutePerProject",
                            }
                        ],
                    },
                    {
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": f"{wait:.3f}s",
                    },
                ],
            )
        headers["retry-after"] = str(max(1, math.ceil(wait)))
        headers["retry-after-ms"] = f"{wait * 1000:.0f}"
        if provider == OPENAI:
            headers["x-ratelimit-limit-requests"] = str(faults.burst)
            headers["x-ratelimit-remaining-requests"] = "0"
            headers["x-ratelimit-reset-requests"] = go_duration(wait)
            return error_response(
                OPENAI,
                429,
                f"Rate limit reached for requests. Limit {faults.burst}, Used {faults.burst}, "
                f"Requested 1. Please try again in {go_duration(wait)}.",
                code="rate_limit_exceeded",
                headers=headers,
            )
        headers["anthropic-ratelimit-requests-limit"] = str(faults.burst)
        headers["anthropic-ratelimit-requests-remaining"] = "0"
        headers["anthropic-ratelimit-requests-reset"] = rfc3339(time.time() + wait)
        return error_response(
            ANTHROPIC,
            429,
            "This request would exceed the rate limit for your organization. "
            "Please slow down and retry later.",
            headers=headers,
        )

    @staticmethod
    def _retry_headers(faults: FaultConfig) -> dict[str, str]:
        if faults.should_retry is None:
            return {}
        return {"x-should-retry": "true" if faults.should_retry else "false"}

    def _transport_fault(
        self, request: web.Request, provider: str, faults: FaultConfig, rng: random.Random
    ) -> web.Response | None:
        total = faults.overloaded_rate + faults.server_error_rate + faults.reset_rate
        if total <= 0:
            return None
        u = rng.random()
        if u < faults.reset_rate:
            self.stats.fault(provider, "reset")
            transport = request.transport
            if transport is not None:
                transport.abort()
            # Nothing reaches the client; aiohttp just drops this response.
            return web.Response(status=500)
        u -= faults.reset_rate
        headers = self._retry_headers(faults)
        if u < faults.overloaded_rate:
            self.stats.fault(provider, "overloaded")
            if provider == ANTHROPIC:
                return error_response(ANTHROPIC, 529, "Overloaded", headers=headers)
            return error_response(
                provider,
                503,
                "The service is temporarily overloaded. Please try again later.",
                headers=headers,
            )
        u -= faults.overloaded_rate
        if u < faults.server_error_rate:
            status = faults.server_error_statuses[
                int(u / faults.server_error_rate * len(faults.server_error_statuses))
                % len(faults.server_error_statuses)
            ]
            self.stats.fault(provider, f"http_{status}")
            return error_response(
                provider,
                status,
                "The server had an error while processing your request.",
                headers=headers,
            )
        return None


def _google_credentials(request: web.Request) -> bool:
    return "x-goog-api-key" in request.headers or "key" in request.query


def _guess_provider(request: web.Request) -> str:
    path = request.path
    if path.startswith(("/v1beta", "/upload/", "/download/")) or _google_credentials(request):
        return GEMINI
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    return OPENAI


def build_app(core: Core, register: list[Callable[[web.Application], None]]) -> web.Application:
    # Anthropic batches may be 256 MB and OpenAI input files 200 MB.
    app = web.Application(middlewares=[core.middleware], client_max_size=512 * 1024 * 1024)
    for add_routes in register:
        add_routes(app)
    return app


def route_name(provider: str, endpoint: str, alias: int = 0) -> str:
    """aiohttp wants unique route names; ``-n`` tells aliases of one endpoint apart."""
    return f"{provider}:{endpoint}" + (f"-alias{alias}" if alias else "")
