"""One run's connections: a shared transport and a lazily built client per provider."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import TracebackType

from pairbatch.errors import InputError
from pairbatch.models import Provider
from pairbatch.providers import get_backend, get_info
from pairbatch.providers.base import BatchClient
from pairbatch.retry import RetryPolicy
from pairbatch.settings import by_provider, resolve_api_key, resolve_base_url
from pairbatch.transport import DEFAULT_RATE, Transport

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
        return RetryPolicy(
            max_tries=self._max_tries.get(provider, DEFAULT_MAX_TRIES),
            exhausted=get_info(provider).exhausted_429,
        )

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


def check_number(name: str, value: object, *, low: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < low
    ):
        raise InputError(f"'{name}' must be a finite number >= {low:g}, got {value!r}")
    return float(value)


def rate_limits_for(
    per_job_delay: float | None, rate_limits: Mapping[str, float] | None
) -> dict[str, float]:
    """Every provider's requests/second: from ``per_job_delay`` (the reference's pacing)
    or ``rate_limits`` over the default; an :class:`InputError` for anything not a
    positive finite number or an unknown provider."""
    if per_job_delay is not None:
        delay = check_number("per_job_delay", per_job_delay, low=0)
        if delay == 0:
            raise InputError("'per_job_delay' must be positive, got 0")
        # Compatibility: one request per per_job_delay seconds, for each provider.
        return {p.value: 1.0 / delay for p in Provider}
    limits = {p.value: DEFAULT_RATE for p in Provider}
    for name, rate in by_provider(rate_limits, "rate_limits").items():
        value = check_number(f"rate_limits[{name.value!r}]", rate, low=0)
        if value == 0:
            raise InputError(f"'rate_limits[{name.value!r}]' must be positive, got 0")
        limits[name.value] = value
    return limits


def one_provider_session(
    provider: Provider,
    *,
    transport: Transport | None,
    api_key: str | None,
    base_url: str | None,
    max_concurrency: int,
    rate_limits: Mapping[str, float] | None,
    max_tries: int,
    openai_max_retries: int,
) -> Session:
    """The session a submit (or a retry) of one provider's run uses."""
    return Session(
        transport=transport,
        api_keys={provider.value: api_key} if api_key else None,
        base_urls={provider.value: base_url} if base_url else None,
        max_concurrency=max_concurrency,
        rate_limits=rate_limits_for(None, rate_limits),
        max_tries={p.value: max_tries for p in Provider} | {"openai": openai_max_retries},
    )
