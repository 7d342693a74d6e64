"""Fault configuration and the seeded decisions that apply it.

Two kinds of randomness live here, on purpose:

* *Fates* (how a batch ends, how each request ends, how long a batch takes) are pure
  functions of ``(seed, provider, content, attempt)``, hashed with :func:`unit`. Concurrent
  clients therefore see the same outcomes whatever order their requests arrive in.
* *HTTP faults* (429, 5xx, resets, slow answers) draw from a seeded RNG per provider: they
  are about the transport, and tests only need their rates, not their positions.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

import attrs

# Endpoint names used for targeting and in statistics. The same name means the same
# operation on every provider that has it.
FILES_CREATE = "files.create"
FILES_GET = "files.get"
FILES_DELETE = "files.delete"
FILES_CONTENT = "files.content"  # OpenAI output/error file bytes
FILES_DOWNLOAD = "files.download"  # Gemini responses file bytes
UPLOAD_START = "upload.start"  # Gemini resumable upload, first leg
UPLOAD_CHUNK = "upload.chunk"  # Gemini resumable upload, data legs (no auth)
BATCHES_CREATE = "batches.create"
BATCHES_GET = "batches.get"
BATCHES_LIST = "batches.list"
BATCHES_CANCEL = "batches.cancel"
BATCHES_DELETE = "batches.delete"
BATCHES_RESULTS = "batches.results"  # Anthropic results stream
GENERATE = "generate"  # the synchronous endpoints: chat/responses, messages, generateContent
NOT_FOUND = "not_found"

ENDPOINTS = frozenset(
    {
        FILES_CREATE,
        FILES_GET,
        FILES_DELETE,
        FILES_CONTENT,
        FILES_DOWNLOAD,
        UPLOAD_START,
        UPLOAD_CHUNK,
        BATCHES_CREATE,
        BATCHES_GET,
        BATCHES_LIST,
        BATCHES_CANCEL,
        BATCHES_DELETE,
        BATCHES_RESULTS,
        GENERATE,
    }
)
DOWNLOAD_ENDPOINTS = frozenset({FILES_CONTENT, FILES_DOWNLOAD, BATCHES_RESULTS})
CREATE_ENDPOINTS = frozenset({BATCHES_CREATE})
POLL_ENDPOINTS = frozenset({BATCHES_GET, BATCHES_LIST})


def _rate(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be within [0, 1], got {value!r}")


def _non_negative(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _endpoint_set(value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    names = frozenset(value)
    unknown = sorted(names - ENDPOINTS)
    if unknown:
        raise ValueError(f"unknown endpoint name(s) {unknown}; known: {sorted(ENDPOINTS)}")
    return names


@attrs.frozen(kw_only=True)
class FaultConfig:
    """Faults for one provider. Everything defaults to off.

    HTTP faults (``rate_limit``, ``overloaded_rate``, ``server_error_rate``,
    ``reset_rate``, ``slow_rate``, ``truncate_rate``) apply to the endpoints in
    ``endpoints`` (``None``: all of them). ``slow_endpoints`` overrides that set for slow
    answers only, so "only creates are slow" can sit beside "429 everywhere".

    Batch and request fates are rates of batches/requests; within each group the rates
    are exclusive and must sum to at most 1.
    """

    # Token bucket, refilled at `rate_limit` requests/s up to `burst` tokens.
    rate_limit: float | None = attrs.field(default=None)
    burst: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    # Anthropic answers 529 overloaded_error; the other providers answer 503.
    overloaded_rate: float = attrs.field(default=0.0, validator=_rate)
    server_error_rate: float = attrs.field(default=0.0, validator=_rate)
    server_error_statuses: tuple[int, ...] = (500, 502, 503)
    # Sent as `x-should-retry` on injected 429/5xx/529 answers when not None.
    should_retry: bool | None = None
    reset_rate: float = attrs.field(default=0.0, validator=_rate)
    slow_rate: float = attrs.field(default=0.0, validator=_rate)
    slow_seconds: float = attrs.field(default=5.0, validator=_non_negative)
    # False: stall before handling. True: handle (e.g. create the batch), then stall,
    # so a client that times out leaves the work done behind it.
    slow_after: bool = False
    truncate_rate: float = attrs.field(default=0.0, validator=_rate)
    # Share of the declared body actually sent before the connection is closed.
    truncate_fraction: float = attrs.field(default=0.5, validator=_rate)
    # OpenAI's enqueued-token limit: a batch whose input tokens, with those of the
    # provider's batches still in progress, exceed it fails validation with
    # ``token_limit_exceeded``, as the real service's batches do.
    enqueued_token_limit: int | None = None
    endpoints: frozenset[str] | None = attrs.field(default=None, converter=_endpoint_set)
    slow_endpoints: frozenset[str] | None = attrs.field(default=None, converter=_endpoint_set)

    batch_failed_rate: float = attrs.field(default=0.0, validator=_rate)
    batch_expired_rate: float = attrs.field(default=0.0, validator=_rate)
    batch_cancelled_rate: float = attrs.field(default=0.0, validator=_rate)
    # Every request of the batch errors (OpenAI: completed with output_file_id null).
    batch_all_errored_rate: float = attrs.field(default=0.0, validator=_rate)

    request_error_rate: float = attrs.field(default=0.0, validator=_rate)
    no_tag_rate: float = attrs.field(default=0.0, validator=_rate)

    # Gemini resumable upload: the data leg with this 1-based number fails, once per
    # upload session. "no_status": a 503 without x-goog-upload-status and nothing kept
    # (google-genai re-sends the leg); "reset": half the leg is kept and the connection
    # dropped (a client asks with `X-Goog-Upload-Command: query` where to resume).
    upload_fail_leg: int | None = attrs.field(default=None)
    upload_fail_mode: str = attrs.field(
        default="no_status", validator=attrs.validators.in_(("no_status", "reset"))
    )

    def __attrs_post_init__(self) -> None:
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError(f"rate_limit must be > 0 req/s, got {self.rate_limit!r}")
        groups = {
            "batch fate rates": (
                self.batch_failed_rate
                + self.batch_expired_rate
                + self.batch_cancelled_rate
                + self.batch_all_errored_rate
            ),
            "request fate rates": self.request_error_rate + self.no_tag_rate,
            "overloaded_rate + server_error_rate + reset_rate": (
                self.overloaded_rate + self.server_error_rate + self.reset_rate
            ),
        }
        for name, total in groups.items():
            if total > 1.0 + 1e-9:
                raise ValueError(f"{name} sum to {total}, more than 1")
        if not self.server_error_statuses or any(
            not 500 <= s <= 599 for s in self.server_error_statuses
        ):
            raise ValueError("server_error_statuses must be non-empty 5xx codes")

    def targets(self, endpoint: str) -> bool:
        return self.endpoints is None or endpoint in self.endpoints

    def slow_targets(self, endpoint: str) -> bool:
        chosen = self.slow_endpoints if self.slow_endpoints is not None else self.endpoints
        return chosen is None or endpoint in chosen


NO_FAULTS = FaultConfig()


def unit(*parts: object) -> float:
    """A uniform number in [0, 1) that depends only on ``parts``."""
    digest = hashlib.blake2b(
        "\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return float(struct.unpack(">Q", digest)[0] >> 11) / float(1 << 53)


def stable_int(*parts: object) -> int:
    """A 64-bit integer that depends only on ``parts`` (seeds for per-batch shuffles)."""
    digest = hashlib.blake2b(
        "\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int(struct.unpack(">Q", digest)[0])
