"""One run's connections: a shared transport and a lazily built client per provider."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType

from pairbatch.models import Provider
from pairbatch.providers import get_backend
from pairbatch.providers.base import BatchClient
from pairbatch.retry import RetryPolicy
from pairbatch.settings import by_provider, resolve_api_key, resolve_base_url
from pairbatch.transport import Transport

DEFAULT_MAX_TRIES = 5


class Session:
    """Owns the :class:`Transport` (unless one is given) and one client per provider.

    Clients are created on first use, so a run over OpenAI only never asks for an
    Anthropic key.
    """

    def __init__(
        self,
        *,
        transport: Transport | None = None,
        api_keys: Mapping[str, str] | None = None,
        base_urls: Mapping[str, str] | None = None,
        max_concurrency: int = 32,
        rate_limits: Mapping[str, float] | None = None,
        bursts: Mapping[str, float] | None = None,
        max_tries: Mapping[str, int] | None = None,
    ) -> None:
        self._owns_transport = transport is None
        self.transport = transport or Transport(
            max_concurrency=max_concurrency,
            rate_limits=dict(rate_limits or {}),
            bursts=dict(bursts or {}),
        )
        self._api_keys: dict[Provider, str] = by_provider(api_keys, "api_keys")
        self._base_urls: dict[Provider, str] = by_provider(base_urls, "base_urls")
        self._max_tries: dict[Provider, int] = by_provider(max_tries, "max_tries")
        self._clients: dict[Provider, BatchClient] = {}

    def __repr__(self) -> str:
        return f"Session(providers={sorted(p.value for p in self._clients)})"

    def retry_policy(self, provider: Provider) -> RetryPolicy:
        return RetryPolicy(max_tries=self._max_tries.get(provider, DEFAULT_MAX_TRIES))

    def client(self, provider: Provider | str) -> BatchClient:
        provider = Provider.parse(provider)
        if provider not in self._clients:
            self._clients[provider] = get_backend(provider).client(
                self.transport,
                api_key=resolve_api_key(provider, self._api_keys.get(provider)),
                base_url=resolve_base_url(provider, self._base_urls.get(provider)),
                retry=self.retry_policy(provider),
            )
        return self._clients[provider]

    async def __aenter__(self) -> Session:
        if self._owns_transport:
            await self.transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owns_transport:
            await self.transport.__aexit__(exc_type, exc, tb)

    def counters(self) -> dict[str, int]:
        """Requests, retries and 429s so far (the transport's counters)."""
        return self.transport.counters()
