"""Provider modules, one each; their :class:`ProviderInfo` objects are the registry.

A provider is one module exposing ``INFO`` (names, key and base-URL variables, options,
backend, error quirks); adding one is its module and its line in ``_MODULES`` (and its
name in :class:`~pairbatch.models.Provider`).
"""

from __future__ import annotations

from pairbatch.models import Provider
from pairbatch.providers import anthropic, gemini, openai
from pairbatch.providers.base import Backend, ProviderInfo

_MODULES = (openai, anthropic, gemini)
_INFO: dict[Provider, ProviderInfo] = {module.INFO.provider: module.INFO for module in _MODULES}


def get_info(provider: str | Provider) -> ProviderInfo:
    """Everything known of ``provider`` (case-insensitive name or :class:`Provider`)."""
    return _INFO[Provider.parse(provider)]


def get_backend(provider: str | Provider) -> Backend:
    """The backend for ``provider`` (case-insensitive name or :class:`Provider`)."""
    return get_info(provider).backend


def all_info() -> tuple[ProviderInfo, ...]:
    return tuple(_INFO.values())


__all__ = ["Backend", "ProviderInfo", "all_info", "get_backend", "get_info"]
