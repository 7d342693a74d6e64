"""What every provider module offers, and the pieces they share.

A provider is one module under :mod:`pairbatch.providers` exposing a ``BACKEND`` object
that satisfies :class:`Backend`. Request building and result parsing are plain, sync,
CPU-bound functions (the engine runs them in a thread); the HTTP side is a client bound
to one :class:`~pairbatch.transport.Transport` and one set of credentials.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson
import polars as pl

from pairbatch._fs import atomic_writer
from pairbatch.errors import InputError
from pairbatch.models import Provider
from pairbatch.prompts import build_prompt

Options = Mapping[str, Any]


class Backend(Protocol):
    """The sync half of a provider: request lines in, parsed result frames out."""

    provider: Provider

    def prepare_options(self, model: str, options: Options) -> dict[str, Any]:
        """Validate user options and apply the provider's defaults; raise ``InputError``."""
        ...

    def request_line(
        self, custom_id: str, prompt: str, model: str, options: Options
    ) -> dict[str, Any]:
        """One line of the provider's request file."""
        ...


def reject_unknown(provider: Provider, options: Options, allowed: frozenset[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(
            f"unknown option(s) for {provider.value}: {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def check_number(
    name: str, value: object, *, low: float | None = None, high: float | None = None
) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"option {name!r} must be a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise InputError(f"option {name!r} must be within [{low}, {high}], got {value!r}")
    return value


def check_int(name: str, value: object, *, low: int = 1) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"option {name!r} must be an integer >= {low}, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"option {name!r} must be True or False, got {value!r}")
    return value


def iter_prompts(
    segment: pl.DataFrame, template: str, trait_name: str, trait_description: str
) -> Iterator[tuple[str, str]]:
    """(custom_id, prompt) for each pair, without materialising all prompts at once."""
    for key, text1, text2 in segment.select("custom_id", "text1", "text2").iter_rows():
        yield key, build_prompt(template, trait_name, trait_description, text1, text2)


def write_request_file(
    backend: Backend,
    path: str | os.PathLike[str],
    segment: pl.DataFrame,
    *,
    model: str,
    template: str,
    trait_name: str,
    trait_description: str,
    options: Options,
) -> int:
    """Stream a segment's requests to ``path`` as JSONL (atomically). Returns its size."""
    with atomic_writer(path) as handle:
        for key, prompt in iter_prompts(segment, template, trait_name, trait_description):
            handle.write(orjson.dumps(backend.request_line(key, prompt, model, options)))
            handle.write(b"\n")
        size = handle.tell()
    return size


def read_request_lines(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """The raw lines of a request file, one at a time."""
    with Path(path).open("rb") as handle:
        for line in handle:
            line = line.strip()
            if line:
                yield line
