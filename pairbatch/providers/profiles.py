"""Shared pieces of the per-provider model profiles.

A *profile* says what one model family accepts (sampling parameters, reasoning or
thinking forms, endpoints); each provider declares its own profile type and table in
``<provider>_profiles.py``. This module holds what every provider shares: how a model id
finds its family, the batch limits object, the pre-flight answer and the error wording.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import attrs

from pairbatch.errors import InputError
from pairbatch.results import DEFAULT_TAG_PREFIX, DEFAULT_TAG_SUFFIX, Row, find_winner

log = logging.getLogger("pairbatch.providers.profiles")


class Profile(Protocol):
    """What every provider's profile type has: a family name."""

    @property
    def name(self) -> str: ...


T = TypeVar("T")
Q = TypeVar("Q", bound=Profile)


@attrs.frozen
class Family(Generic[T]):
    """One row of a provider's profile table: a model-id pattern and its profile."""

    pattern: re.Pattern[str]
    profile: T
    #: Where the rule comes from (kept next to the data so a reviewer can check it).
    source: str = ""


def family(pattern: str, profile: T, source: str = "") -> Family[T]:
    return Family(re.compile(pattern, re.IGNORECASE), profile, source)


def bare_model(model: str) -> str:
    """The model id without an API resource prefix (``models/gemini-2.5-flash``) and
    surrounding blanks; what the profile tables match against."""
    return model.strip().removeprefix("models/")


def match_profile(provider: str, model: str, table: Sequence[Family[Q]], conservative: Q) -> Q:
    """The first family whose pattern matches ``model`` from its start; otherwise the
    provider's most conservative profile, with one warning saying so."""
    bare = bare_model(model)
    for row in table:
        if row.pattern.match(bare):
            return row.profile
    # Said once per resolution, i.e. once per submit (the options are prepared once and
    # every line reuses them); no process-wide memory of what was said.
    log.warning(
        "%s model %r matches no known family; using the conservative profile %r "
        "(only options every %s model accepts). Pass profile=<family name> to choose one.",
        provider,
        bare,
        conservative.name,
        provider,
    )
    return conservative


def resolve_profile(
    provider: str,
    model: str,
    override: object,
    table: Sequence[Family[Q]],
    conservative: Q,
    profile_type: type[Q],
) -> Q:
    """The profile for ``model``, or the user's ``profile=`` override: a profile object,
    a family name from the table, or another model id to take the profile of."""
    if override is None:
        return match_profile(provider, model, table, conservative)
    if isinstance(override, profile_type):
        return override
    if isinstance(override, str):
        by_name = {row.profile.name: row.profile for row in table}
        by_name[conservative.name] = conservative
        if override in by_name:
            return by_name[override]
        for row in table:
            if row.pattern.match(bare_model(override)):
                return row.profile
        raise InputError(
            f"option 'profile' for {provider} model {model!r}: unknown family {override!r}; "
            f"known: {', '.join(sorted(by_name))}"
        )
    raise InputError(
        f"option 'profile' for {provider} model {model!r} must be a family name or a "
        f"{profile_type.__name__}, got {type(override).__name__}"
    )


def refused(option: str, model: str, profile: Profile, why: str = "") -> InputError:
    """The error for an option the model does not take; names option, model and family."""
    detail = f": {why}" if why else ""
    return InputError(
        f"option {option!r} is not accepted by model {model!r} (profile {profile.name!r}){detail}"
    )


def check_choice(
    option: str,
    value: object,
    allowed: Sequence[str] | frozenset[str],
    model: str,
    profile: Profile,
) -> str:
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(sorted(allowed)) or "none"
        raise refused(option, model, profile, f"got {value!r}; this model takes: {choices}")
    return value


# ---------------------------------------------------------------- batch limits


@attrs.frozen
class BatchLimits:
    """What one batch may hold, as the provider documents it."""

    provider: str
    max_requests: int | None
    max_bytes: int | None
    metadata_max_keys: int | None = None
    metadata_key_chars: int | None = None
    metadata_value_chars: int | None = None
    #: Largest request body sent inline (Gemini); ``None`` where there is no inline form.
    inline_max_bytes: int | None = None
    source: str = ""

    def check(self, n_requests: int, n_bytes: int) -> None:
        """Raise ``InputError`` naming the limit a batch of this size would pass."""
        if self.max_requests is not None and n_requests > self.max_requests:
            raise InputError(
                f"{self.provider}: a batch holds at most {self.max_requests:,} requests "
                f"(max_requests); this one has {n_requests:,}. Use a smaller batch_size."
            )
        if self.max_bytes is not None and n_bytes > self.max_bytes:
            raise InputError(
                f"{self.provider}: a batch input is at most {self.max_bytes:,} bytes "
                f"(max_bytes); this one is {n_bytes:,}. Use a smaller batch_size."
            )

    def check_metadata(self, metadata: dict[str, Any], reserved: int = 0) -> None:
        """Raise ``InputError`` for metadata past the key count or lengths."""
        if self.metadata_max_keys is not None and len(metadata) + reserved > self.metadata_max_keys:
            raise InputError(
                f"option 'metadata': {self.provider} takes at most {self.metadata_max_keys} "
                f"keys, {reserved} of them pairbatch's own; got {len(metadata)}"
            )
        for key, value in metadata.items():
            if self.metadata_key_chars is not None and len(str(key)) > self.metadata_key_chars:
                raise InputError(
                    f"option 'metadata': key {str(key)[:20]!r}... is longer than "
                    f"{self.metadata_key_chars} characters"
                )
            if (
                self.metadata_value_chars is not None
                and len(str(value)) > self.metadata_value_chars
            ):
                raise InputError(
                    f"option 'metadata': the value of {key!r} is longer than "
                    f"{self.metadata_value_chars} characters"
                )


# ---------------------------------------------------------------- pre-flight


@attrs.frozen
class PreflightAnswer:
    """One synchronous request's answer, parsed by the provider's own line parser."""

    content: str | None
    better_sample: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    reasoning_tokens: int | None
    latency_s: float
    raw_model: str | None
    #: The parser's note on the answer (e.g. ``"truncated: max_tokens"``), if any.
    error_message: str | None = None


def preflight_answer(
    parse: Callable[[dict[str, Any]], Row],
    wrapped: dict[str, Any],
    latency_s: float,
    options: Any,
) -> PreflightAnswer:
    """Parse a synchronous body wrapped in the shape of a batch result line."""
    row = parse(wrapped)
    prefix = options.get("tag_prefix", DEFAULT_TAG_PREFIX) if options else DEFAULT_TAG_PREFIX
    suffix = options.get("tag_suffix", DEFAULT_TAG_SUFFIX) if options else DEFAULT_TAG_SUFFIX
    content = row.get("content")
    return PreflightAnswer(
        content=content,
        better_sample=find_winner(content, prefix, suffix),
        prompt_tokens=row.get("prompt_tokens"),
        completion_tokens=row.get("completion_tokens"),
        reasoning_tokens=row.get("reasoning_tokens"),
        latency_s=latency_s,
        raw_model=row.get("model"),
        error_message=row.get("error_message"),
    )


# ---------------------------------------------------------------- unknown states


class StateWarner:
    """Logs an unknown provider state once per batch (polls repeat every few seconds)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._seen: set[str] = set()

    def __call__(self, provider: str, batch_id: str, raw: str) -> None:
        if batch_id in self._seen:
            return
        self._seen.add(batch_id)
        self._log.warning(
            "%s batch %s reports state %r, which pairbatch does not know; "
            "BatchStatus.unknown_state is set (running unless the provider says it is done)",
            provider,
            batch_id,
            raw,
        )
