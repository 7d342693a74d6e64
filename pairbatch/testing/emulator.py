"""The provider emulator: one aiohttp server speaking the three batch APIs on loopback."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import attrs
from aiohttp import web

from pairbatch.testing._anthropic import AnthropicRoutes
from pairbatch.testing._core import Core, build_app
from pairbatch.testing._gemini import GeminiRoutes
from pairbatch.testing._http import ANTHROPIC, GEMINI, OPENAI, PROVIDERS
from pairbatch.testing._openai import OpenAIRoutes
from pairbatch.testing._sync import SyncRoutes
from pairbatch.testing._webhooks import (
    DEFAULT_RETRIES,
    WEBHOOK_PROVIDERS,
    Delivery,
    WebhookSender,
)
from pairbatch.testing.blobs import SyntheticBlob, synthetic_custom_id
from pairbatch.testing.faults import FaultConfig
from pairbatch.testing.judge import Judge, default_judge
from pairbatch.testing.state import Batch, BatchFate, Clock
from pairbatch.testing.stats import EmulatorStats

logger = logging.getLogger("pairbatch.testing")

_ENV_NAMES = {
    OPENAI: ("OPENAI_BASE_URL", "OPENAI_API_KEY"),
    ANTHROPIC: ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"),
    GEMINI: ("GEMINI_BASE_URL", "GEMINI_API_KEY"),
}


@attrs.frozen
class SyntheticBatch:
    """A completed batch whose results file is generated on the fly.

    ``result_ref`` is where the bytes are: the OpenAI output file id, the Anthropic
    results URL, or the Gemini file name (``files/batch-...``).
    """

    provider: str
    batch_id: str
    result_ref: str
    n_requests: int
    line_bytes: int
    size_bytes: int

    @staticmethod
    def custom_id(index: int) -> str:
        return synthetic_custom_id(index)

    @staticmethod
    def expected_verdict(index: int) -> str:
        """The winner on line ``index``: even lines SAMPLE_1, odd lines SAMPLE_2."""
        return "SAMPLE_1" if index % 2 == 0 else "SAMPLE_2"


def _provider_name(provider: object) -> str:
    name = str(getattr(provider, "value", provider)).strip().lower()
    if name not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; should be one of {PROVIDERS}")
    return name


class ProviderEmulator:
    """Fake OpenAI, Anthropic and Gemini batch APIs on one loopback port.

    ``latency`` is how long a batch takes from create to end (seconds), fixed or a
    ``(lo, hi)`` range drawn per batch from the seed. ``clock`` (seconds, monotonic) drives
    batch states; inject one to step time in tests. ``faults`` maps provider names to
    :class:`FaultConfig`. ``api_key``, when given, is the only key accepted; otherwise
    any non-empty key is. ``unknown_models="refuse"`` answers a model id the rules table
    (:mod:`pairbatch.testing.rules`) does not know with the services' 404; the default
    accepts it with no model rules.

    ``webhook_url`` (one URL for OpenAI and Gemini, or a mapping by provider; loopback
    only) makes the emulator POST a signed Standard Webhooks event to it when a batch
    ends, as those services do; ``webhook_secret`` (``whsec_...``, one or by provider)
    signs them, a random one per provider when not given (see :meth:`webhook_secret`).
    Non-2xx answers are retried after ``webhook_retries`` seconds.
    """

    def __init__(
        self,
        *,
        latency: float | tuple[float, float] = 1.0,
        seed: int = 0,
        judge: Judge | None = None,
        faults: Mapping[Any, FaultConfig] | None = None,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        unknown_models: str = "accept",
        webhook_url: str | Mapping[Any, str] | None = None,
        webhook_secret: str | Mapping[Any, str] | None = None,
        webhook_retries: Sequence[float] = DEFAULT_RETRIES,
    ) -> None:
        if isinstance(latency, tuple):
            lo, hi = latency
            if not 0 <= lo <= hi:
                raise ValueError(f"latency range must satisfy 0 <= lo <= hi, got {latency!r}")
        elif latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency!r}")
        if unknown_models not in ("accept", "refuse"):
            raise ValueError(f"unknown_models must be 'accept' or 'refuse', got {unknown_models!r}")
        fault_map = {_provider_name(k): v for k, v in (faults or {}).items()}
        self._host = host
        self._port = port
        self._api_key = api_key
        self._core = Core(
            seed=seed,
            latency=latency,
            judge=judge or default_judge,
            faults=fault_map,
            clock=clock or time.monotonic,
            api_key=api_key,
            refuse_unknown_models=unknown_models == "refuse",
        )
        self._openai = OpenAIRoutes(self._core)
        self._anthropic = AnthropicRoutes(self._core)
        self._gemini = GeminiRoutes(self._core)
        self._sync = SyncRoutes(self._core)
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._webhooks = WebhookSender(self._core, retries=webhook_retries)
        self._core.on_batch = self._webhooks.watch
        for name, url in _per_provider(webhook_url).items():
            self._webhooks.set_target(name, url, _per_provider(webhook_secret).get(name))

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> Self:
        if self._runner is not None:
            return self
        app = build_app(
            self._core,
            [
                self._openai.register,
                self._anthropic.register,
                self._gemini.register,
                self._sync.register,
            ],
        )
        # No access log (it costs more than a request here); slow handlers are cancelled
        # when their client goes away, and closing never waits on them for long.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])
        self._core.origin = f"http://{_url_host(self._host)}:{self._bound_port}"
        self._core.server = runner.server
        logger.info("provider emulator listening on %s", self._core.origin)
        if self._webhooks.targets:
            self._webhooks.start()
        return self

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        await self._webhooks.close()
        if runner is not None:
            self._core.server = None
            await runner.cleanup()
            logger.info("provider emulator on %s closed", self._core.origin)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- addresses -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("the emulator is not started")
        return self._bound_port

    @property
    def origin(self) -> str:
        """``http://host:port``."""
        self.port  # noqa: B018  (raises when not started)
        return self._core.origin

    def base_url(self, provider: object) -> str:
        """The base URL an SDK or client takes (OpenAI's includes ``/v1``)."""
        name = _provider_name(provider)
        return f"{self.origin}/v1" if name == OPENAI else self.origin

    def api_key(self, provider: object) -> str:
        return self._api_key or f"sk-emulator-{_provider_name(provider)}"

    def env(self) -> dict[str, str]:
        """Environment variables that point the SDKs and pairbatch at this emulator."""
        result: dict[str, str] = {}
        for provider, (url_name, key_name) in _ENV_NAMES.items():
            result[url_name] = self.base_url(provider)
            result[key_name] = self.api_key(provider)
        return result

    # -- inspection and control ----------------------------------------------------------

    @property
    def stats(self) -> EmulatorStats:
        return self._core.stats

    @property
    def seed(self) -> int:
        return self._core.seed

    def set_faults(self, provider: object, faults: FaultConfig | None) -> None:
        """Change one provider's faults while running (``None``: none)."""
        name = _provider_name(provider)
        fault_map = dict(self._core.faults)
        if faults is None:
            fault_map.pop(name, None)
        else:
            fault_map[name] = faults
        self._core.faults = fault_map
        self._core.buckets.pop(name, None)

    def set_webhook(
        self, provider: object, url: str | None, secret: str | None = None
    ) -> str | None:
        """Send ``provider``'s batch events to ``url`` (``None``: stop) from now on, signed
        with ``secret`` (a new random one when ``None``). Returns the secret."""
        text = self._webhooks.set_target(_provider_name(provider), url, secret)
        if self._runner is not None and self._webhooks.targets:
            self._webhooks.start()
        return text

    def webhook_secret(self, provider: object) -> str:
        """The ``whsec_...`` secret ``provider``'s webhooks are signed with."""
        target = self._webhooks.targets.get(_provider_name(provider))
        if target is None:
            raise LookupError(f"no webhook is configured for {provider}")
        return target.secret_text

    @property
    def webhook_deliveries(self) -> list[Delivery]:
        """Every webhook event sent so far, with its attempts and last answer."""
        return list(self._webhooks.deliveries)

    def batch_ids(self, provider: object) -> list[str]:
        """Ids of the batches on ``provider``, oldest first."""
        return list(self._core.batches[_provider_name(provider)])

    def batch_fate(self, provider: object, batch_id: str) -> str:
        """How the batch was drawn to end (``completed``, ``failed``, ``expired``, ...)."""
        return self._core.batches[_provider_name(provider)][batch_id].fate.value

    def add_synthetic_batch(
        self,
        provider: object,
        *,
        n_requests: int | None = None,
        output_bytes: int | None = None,
        line_bytes: int | None = None,
        model: str | None = None,
        metadata: Mapping[str, str] | None = None,
        display_name: str | None = None,
    ) -> SyntheticBatch:
        """A completed batch with a huge results file that is generated, never stored.

        Give ``n_requests``, or ``output_bytes`` (the file size is then rounded down to a
        whole number of ``line_bytes``-wide lines). Every line succeeds; custom ids are
        :meth:`SyntheticBatch.custom_id` and verdicts :meth:`SyntheticBatch.expected_verdict`.
        """
        name = _provider_name(provider)
        if (n_requests is None) == (output_bytes is None):
            raise ValueError("give exactly one of n_requests and output_bytes")
        core = self._core
        created = core.now() - max(
            1.0, float(core.latency if not isinstance(core.latency, tuple) else core.latency[1])
        )
        batch = Batch(
            provider=name,
            id="",
            created=created,
            latency=0.0,
            fate=BatchFate.COMPLETED,
            cut=1.0,
            shuffle_seed=0,
            requests=[],
            rendered=True,
        )
        if name == OPENAI:
            batch.id = "batch_" + _hex(16)
            batch.info.update(
                endpoint="/v1/chat/completions",
                input_file_id="file-synthetic",
                completion_window="24h",
                metadata=dict(metadata or {}) or None,
                model=model or "gpt-4o-mini",
            )
            routes: OpenAIRoutes | AnthropicRoutes | GeminiRoutes = self._openai
        elif name == ANTHROPIC:
            batch.id = "msgbatch_01" + _hex(11)
            batch.info.update(model=model or "claude-sonnet-4-5")
            routes = self._anthropic
        else:
            batch.id = _hex(18)
            batch.info.update(
                model=f"models/{model or 'gemini-2.5-flash'}",
                display_name=display_name or "synthetic",
                mode="file",
                file_name=None,
            )
            routes = self._gemini
        render = routes.synthetic_renderer(batch)
        if n_requests is None:
            assert output_bytes is not None
            width = SyntheticBlob.build(render, 1, line_bytes).line_bytes
            n_requests = max(1, output_bytes // width)
        blob = SyntheticBlob.build(render, n_requests, line_bytes)
        routes.attach_synthetic(batch, blob)
        batch.synthetic_total = n_requests
        core.add_batch(batch)
        if name == OPENAI:
            ref = str(batch.info["output_file_id"])
        elif name == ANTHROPIC:
            ref = f"{core.origin}/v1/messages/batches/{batch.id}/results"
        else:
            ref = f"files/batch-{batch.id}"
        return SyntheticBatch(name, batch.id, ref, n_requests, blob.line_bytes, blob.size)


def _per_provider(value: str | Mapping[Any, str] | None) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        return dict.fromkeys(WEBHOOK_PROVIDERS, value)
    return {_provider_name(k): v for k, v in value.items()}


def _hex(n: int) -> str:
    return secrets.token_hex(n)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready: asyncio.Future[dict[str, str]] | None = None,
    **kwargs: Any,
) -> None:
    """Run an emulator until cancelled. Logs the base URLs and, if given, resolves
    ``ready`` with :meth:`ProviderEmulator.env` once listening."""
    async with ProviderEmulator(host=host, port=port, **kwargs) as emulator:
        env = emulator.env()
        for name, value in env.items():
            if name.endswith("_BASE_URL"):
                logger.info("%s=%s", name, value)
        if ready is not None and not ready.done():
            ready.set_result(env)
        await asyncio.Event().wait()


async def main(host: str = "127.0.0.1", port: int = 8765, **kwargs: Any) -> None:
    """Entry point for ``pairbatch emulator``: serve on a fixed port until cancelled."""
    await serve(host, port, **kwargs)
