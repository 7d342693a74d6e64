"""Provider backends, one module each; :func:`get_backend` picks one by name."""

from __future__ import annotations

from pairbatch.models import Provider
from pairbatch.providers import anthropic, gemini, openai
from pairbatch.providers.base import Backend

_BACKENDS: dict[Provider, Backend] = {
    Provider.OPENAI: openai.BACKEND,
    Provider.ANTHROPIC: anthropic.BACKEND,
    Provider.GEMINI: gemini.BACKEND,
}


def get_backend(provider: str | Provider) -> Backend:
    """The backend for ``provider`` (case-insensitive name or :class:`Provider`)."""
    return _BACKENDS[Provider.parse(provider)]


__all__ = ["Backend", "get_backend"]
