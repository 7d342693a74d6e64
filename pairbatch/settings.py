"""Credentials, endpoints and the per-run settings file.

API keys come from arguments or the environment and live only in memory: they are never
written to the run folder, logged, or put in an exception message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from pairbatch._fs import atomic_write_bytes
from pairbatch.errors import InputError
from pairbatch.models import Provider
from pairbatch.providers import get_info

SETTINGS_NAME = "run_settings.json"


def by_provider(values: Mapping[str, Any] | None, what: str) -> dict[Provider, Any]:
    """Normalise a ``{"openai": ...}`` mapping, rejecting unknown provider names."""
    out: dict[Provider, Any] = {}
    for name, value in (values or {}).items():
        try:
            out[Provider.parse(name)] = value
        except ValueError as exc:
            raise InputError(f"{what}: {exc}") from None
    return out


def resolve_api_key(provider: Provider, explicit: str | None = None) -> str:
    if explicit:
        return explicit
    info = get_info(provider)
    for name in info.key_env:
        value = os.environ.get(name)
        if value:
            return value
    names = " or ".join(info.key_env)
    raise InputError(f"No API key found for {info.display}. Set {names} or pass it as an argument.")


def resolve_base_url(provider: Provider, explicit: str | None = None) -> str:
    info = get_info(provider)
    url = explicit or os.environ.get(info.base_url_env) or info.default_base_url
    return url.rstrip("/")


FORMAT = 2  # 2: intents are recorded before any create, "creating" before each one


def write_settings(output_dir: Path, settings: Mapping[str, Any]) -> None:
    """Everything resume needs to rebuild or re-send a segment (no keys)."""
    atomic_write_bytes(
        output_dir / SETTINGS_NAME,
        orjson.dumps({"format": FORMAT, **settings}, option=orjson.OPT_INDENT_2),
    )


def read_settings(output_dir: Path) -> dict[str, Any]:
    """The run's settings; ``{}`` when the folder has none (a run made by the reference)."""
    path = output_dir / SETTINGS_NAME
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object")
    return data


def require_settings(output_dir: Path, *keys: str) -> dict[str, Any]:
    """The settings a resend needs; an error naming the file when they are not there
    (defaults would send a different request from the one the user asked for)."""
    path = output_dir / SETTINGS_NAME
    settings = read_settings(output_dir)
    if not settings:
        raise InputError(
            f"{path} is missing: a segment must be sent again and its options, template "
            "and trait are not known without it (restore the file from a backup)"
        )
    absent = [k for k in keys if k not in settings]
    if absent:
        raise InputError(f"{path}: has no {', '.join(absent)} (a run from an older version?)")
    return settings
