"""What every provider module offers, and the pieces they share.

A provider is one module under :mod:`pairbatch.providers` exposing a ``BACKEND`` object
that satisfies :class:`Backend`. Request building and result parsing are plain, sync,
CPU-bound functions (the engine runs them in a thread); the HTTP side is a client bound
to one :class:`~pairbatch.transport.Transport` and one set of credentials.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import attrs
import orjson
import polars as pl

from pairbatch._fs import atomic_writer
from pairbatch.errors import InputError, ProviderError
from pairbatch.models import BatchStatus, Candidate, Job, Provider
from pairbatch.prompts import build_prompt
from pairbatch.providers.profiles import BatchLimits, PreflightAnswer
from pairbatch.results import (
    DEFAULT_TAG_PREFIX,
    DEFAULT_TAG_SUFFIX,
    FastLine,
    LineParser,
    as_path,
    parse_jsonl,
)
from pairbatch.retry import RetryPolicy

if TYPE_CHECKING:
    from pairbatch.transport import Transport

Options = Mapping[str, Any]


@attrs.frozen
class ProviderInfo:
    """Everything the rest of pairbatch knows of one provider, declared in its module:
    names, where its key and base URL come from, its options, its backend, and its
    error quirks. Adding a provider is its module, its line in
    ``pairbatch/providers/__init__.py`` and its :class:`~pairbatch.models.Provider` name."""

    provider: Provider
    display: str
    key_env: tuple[str, ...]
    base_url_env: str
    default_base_url: str
    options: frozenset[str]
    backend: Backend
    #: What the provider calls a batch's handle in messages ("id", "name").
    batch_noun: str = "id"
    #: A 429 that no retry within a run can fix (a spent quota), from its parsed body.
    exhausted_429: Callable[[object], bool] | None = attrs.field(default=None, eq=False)


class Backend(Protocol):
    """The sync half of a provider: request lines in, parsed result frames out."""

    @property
    def provider(self) -> Provider: ...

    def prepare_options(self, model: str, options: Options) -> dict[str, Any]:
        """Validate user options and apply the provider's defaults; raise ``InputError``."""
        ...

    def request_line(
        self, custom_id: str, prompt: str, model: str, options: Options
    ) -> dict[str, Any]:
        """One line of the provider's request file."""
        ...

    def parse_results(
        self,
        output_path: str | os.PathLike[str] | None,
        *,
        error_path: str | os.PathLike[str] | None = None,
        tag_prefix: str = ...,
        tag_suffix: str = ...,
    ) -> pl.DataFrame:
        """The typed result frame (:data:`pairbatch.results.RESULT_SCHEMA`)."""
        ...

    def client(
        self, transport: Transport, *, api_key: str, base_url: str, retry: RetryPolicy
    ) -> BatchClient:
        """An HTTP client bound to one transport and one key."""
        ...

    @property
    def limits(self) -> BatchLimits:
        """What one batch may hold (requests, bytes, metadata, inline size)."""
        ...

    def check_limits(self, n_requests: int, n_bytes: int) -> None:
        """Raise ``InputError`` naming the limit a batch of this size would pass."""
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
    if not math.isfinite(value):  # NaN would be sent as null, inf as a string
        raise InputError(f"option {name!r} must be a finite number, got {value!r}")
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


# ---------------------------------------------------------------- the HTTP side


@attrs.frozen
class Downloaded:
    """Where a finished batch's results (and error lines) were written."""

    output_path: Path | None
    error_path: Path | None = None


class BatchClient(Protocol):
    """The async half of a provider, bound to one transport and one set of credentials."""

    provider: Provider

    async def submit(self, job: Job, requests_path: Path, options: Options) -> str:
        """Upload / create the batch; return its id. Tags it with ``job.run_tag``."""
        ...

    async def status(self, batch_id: str) -> BatchStatus: ...

    async def download(self, job: Job, status: BatchStatus) -> Downloaded:
        """Stream the results (and errors) next to ``job.batch_output_path``."""
        ...

    async def cancel(self, batch_id: str) -> None: ...

    def use_options(self, options: Options) -> None:
        """Take the run's options (e.g. Gemini's API version) for later calls."""
        ...

    async def find_batches(self, job: Job) -> list[Candidate]:
        """Batches this job's create may have made: proven by run tag and segment, or
        unproven look-alikes (see :class:`~pairbatch.models.Candidate`)."""
        ...

    async def preflight(self, line: dict[str, Any], options: Options) -> PreflightAnswer:
        """Send one request line's exact body as an ordinary synchronous request."""
        ...


@attrs.frozen
class BackendBase:
    """What the three backends share: parsing a results file line by line, and making
    clients. A provider module builds its ``BACKEND`` from its own line parsers and client
    class; the subclass adds request building (``prepare_options``, ``request_line``)."""

    provider: ClassVar[Provider]
    #: One decoded results line as a row of the result frame.
    parse_line: LineParser
    #: The row of a canonical line as a ``ROW_FIELDS`` tuple, or ``None`` to leave the
    #: line to ``parse_line`` (see :mod:`pairbatch.results`).
    fast_line: FastLine | None
    client_type: Callable[..., BatchClient]
    #: The provider's documented batch limits (set by each backend class).
    limits: ClassVar[BatchLimits]

    def check_limits(self, n_requests: int, n_bytes: int) -> None:
        """Raise ``InputError`` naming the limit a batch of this size would pass."""
        self.limits.check(n_requests, n_bytes)

    def parse_results(
        self,
        output_path: str | os.PathLike[str] | None,
        *,
        error_path: str | os.PathLike[str] | None = None,
        tag_prefix: str = DEFAULT_TAG_PREFIX,
        tag_suffix: str = DEFAULT_TAG_SUFFIX,
    ) -> pl.DataFrame:
        """The typed result frame of a results file (and error file, if any)."""
        return parse_jsonl(
            [as_path(output_path), as_path(error_path)],
            self.parse_line,
            tag_prefix=tag_prefix,
            tag_suffix=tag_suffix,
            fast_line=self.fast_line,
        )

    def client(
        self, transport: Transport, *, api_key: str, base_url: str, retry: RetryPolicy
    ) -> BatchClient:
        """An HTTP client bound to one transport and one key."""
        return self.client_type(transport, base_url, retry, api_key=api_key)


@attrs.define(repr=False)
class JsonApiClient:
    """A provider's JSON API over the shared transport; the key stays out of reprs."""

    transport: Transport
    base_url: str
    retry: RetryPolicy
    _api_key: str = attrs.field(alias="api_key")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    @property
    def provider_name(self) -> str:
        return str(getattr(self, "provider", "provider"))

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def use_options(self, options: Options) -> None:
        """Take the run's options for later calls (a stored batch is polled with the API
        version it was created under); most providers need none of them."""

    async def _call(
        self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any
    ) -> dict[str, Any]:
        response = await self.transport.request(
            self.provider_name,
            method,
            f"{self.base_url}{path}",
            headers=self._headers(),
            retry=self.retry,
            idempotent=idempotent,
            origin=self.base_url,
            **kwargs,
        )
        body = response.json()
        if not isinstance(body, dict):
            raise ProviderError(self.provider_name, response.status, "unexpected response body")
        return body
