"""OpenAI model profiles: what each model family accepts, and option validation.

Sources (named per row below):

* [SDK] openai-python ``types/shared/reasoning_effort.py`` and the ``reasoning_effort``
  docstring of ``types/chat/completion_create_params.py`` (values none ... xhigh; "not
  all reasoning models support every value").
* [EFFORT-DOC] the ReasoningEffort description generated from OpenAI's OpenAPI spec
  (mirrored on learn.microsoft.com ``@azure/ai-projects/reasoningeffort``): gpt-5.1
  takes none/low/medium/high and defaults to none; models before gpt-5.1 default to
  medium and do not take none; gpt-5-pro takes only high; xhigh for models after
  gpt-5.1-codex-max.
* [ERR-5.1] the API's own 400 "Unsupported value: 'minimal' is not supported with the
  'gpt-5.1' model. Supported values are: 'none', 'low', 'medium', and 'high'."
  (anomalyco/opencode#4451).
* [ERR-TEMP] "Unsupported value: 'temperature' does not support 0 with this model. Only
  the default (1) value is supported." — reasoning models (o-series, gpt-5 family);
  gpt-5.1 and later take temperature/top_p/logprobs only with effort ``none``.
* [LIMITS] openai-python ``types/batch_create_params.py`` and ``resources/files.py``
  docstrings: 50,000 requests and 200 MB per input file; metadata 16 pairs, keys 64,
  values 512 characters.
"""

from __future__ import annotations

from typing import Any

import attrs

from pairbatch.errors import InputError
from pairbatch.providers.base import Options, check_bool, check_int, check_number
from pairbatch.providers.profiles import (
    BatchLimits,
    Family,
    check_choice,
    family,
    refused,
    resolve_profile,
)

ENDPOINTS = {"chat.completions": "/v1/chat/completions", "responses": "/v1/responses"}
REASONING_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})
OPTIONS = frozenset(
    {
        "endpoint",
        "temperature",
        "top_p",
        "logprobs",
        "reasoning",
        "include_thoughts",
        "max_output_tokens",
        "service_tier",
        "metadata",
        "profile",
    }
)
RESERVED_METADATA_KEYS = 2  # pairbatch_run and pairbatch_segment (see the client)


@attrs.frozen
class OpenAIProfile:
    """What one OpenAI model family accepts."""

    name: str
    #: Reasoning efforts the family takes; empty for a model with no reasoning.
    efforts: frozenset[str] = frozenset()
    #: temperature / top_p / logprobs accepted with no reasoning active. Reasoning models
    #: refuse them except, from gpt-5.1 on, with effort ``none`` [ERR-TEMP].
    sampling: bool = True
    #: Endpoints the family can be sent to.
    endpoints: frozenset[str] = frozenset(ENDPOINTS)

    @property
    def reasoning(self) -> bool:
        return bool(self.efforts)


_CHAT = OpenAIProfile("gpt-4", efforts=frozenset(), sampling=True)
_O_SERIES = OpenAIProfile("o-series", efforts=frozenset({"low", "medium", "high"}), sampling=False)
_GPT5 = OpenAIProfile(
    "gpt-5", efforts=frozenset({"minimal", "low", "medium", "high"}), sampling=False
)
_GPT5_PRO = OpenAIProfile(
    "gpt-5-pro", efforts=frozenset({"high"}), sampling=False, endpoints=frozenset({"responses"})
)
_GPT5_1 = OpenAIProfile("gpt-5.1", efforts=frozenset({"none", "low", "medium", "high"}))
_GPT5_2 = OpenAIProfile("gpt-5.2", efforts=frozenset({"none", "low", "medium", "high", "xhigh"}))
_GPT5_CHAT = OpenAIProfile("gpt-5-chat", efforts=frozenset(), sampling=False)
#: For an unknown model: no sampling parameter (reasoning models refuse them) and only
#: the efforts every reasoning family takes.
CONSERVATIVE = OpenAIProfile(
    "openai-conservative", efforts=frozenset({"low", "medium", "high"}), sampling=False
)

_DATE = r"(?:-\d{4}-\d{2}-\d{2}|-latest|-preview)*$"
TABLE: tuple[Family[OpenAIProfile], ...] = (
    # Order matters: the first match wins, so variants come before their base family.
    family(r"gpt-5(?:\.\d+)?-chat", _GPT5_CHAT, "[SDK] chat_model.py: chat-latest aliases"),
    family(r"gpt-5(?:\.\d+)?-pro" + _DATE, _GPT5_PRO, "[EFFORT-DOC] gpt-5-pro: high only"),
    family(r"gpt-5(?:-mini|-nano)?" + _DATE, _GPT5, "[EFFORT-DOC] before gpt-5.1: no none"),
    family(r"gpt-5\.1(?:-mini|-nano)?" + _DATE, _GPT5_1, "[EFFORT-DOC], [ERR-5.1]"),
    family(r"gpt-5\.\d+(?:-mini|-nano)?" + _DATE, _GPT5_2, "[EFFORT-DOC] xhigh after 5.1"),
    family(r"o\d+(?:-mini|-pro)?" + _DATE, _O_SERIES, "[EFFORT-DOC], [ERR-TEMP]"),
    family(r"(?:gpt-4|gpt-3\.5|chatgpt-4o)", _CHAT, "[SDK] chat_model.py: no reasoning"),
)
PROFILES = {row.profile.name: row.profile for row in TABLE} | {CONSERVATIVE.name: CONSERVATIVE}

LIMITS = BatchLimits(
    provider="openai",
    max_requests=50_000,
    max_bytes=200 * 1_000_000,
    metadata_max_keys=16,
    metadata_key_chars=64,
    metadata_value_chars=512,
    source="[LIMITS]",
)


def profile_for(model: str, override: object = None) -> OpenAIProfile:
    return resolve_profile("openai", model, override, TABLE, CONSERVATIVE, OpenAIProfile)


def prepare(model: str, options: Options) -> dict[str, Any]:
    """Validate ``options`` against the model's profile; the JSON-ready settings.

    ``include_thoughts`` on a reasoning model with no effort asks for ``"low"``;
    reasoning or thoughts select the responses endpoint; temperature defaults to 0 only
    where the model takes it (never on a reasoning model unless effort is ``none``).
    """
    profile = profile_for(model, options.get("profile"))
    include_thoughts = check_bool("include_thoughts", options.get("include_thoughts", False))
    effort = options.get("reasoning")
    if effort is not None:
        if effort not in REASONING_EFFORTS:
            raise InputError(
                f"option 'reasoning' must be one of {', '.join(sorted(REASONING_EFFORTS))}, "
                f"got {effort!r}"
            )
        if not profile.reasoning:
            raise refused("reasoning", model, profile, "this model has no reasoning effort")
        check_choice("reasoning", effort, profile.efforts, model, profile)
    if include_thoughts and effort is None:
        if not profile.reasoning:
            raise refused("include_thoughts", model, profile, "this model does not reason")
        effort = "low" if "low" in profile.efforts else min(profile.efforts)
    reasoning_active = effort is not None and effort != "none"
    # A reasoning model with no effort given reasons at its own default (medium before
    # gpt-5.1), so it takes sampling parameters only with an explicit effort "none"
    # (gpt-5.1 and later) [ERR-TEMP].
    sampling = profile.sampling and (effort == "none" if profile.reasoning else True)
    endpoint = options.get("endpoint")
    if endpoint is None:
        endpoint = "responses" if (reasoning_active or include_thoughts) else "chat.completions"
        if endpoint not in profile.endpoints:
            endpoint = min(profile.endpoints)
    endpoint = str(endpoint).removeprefix("/v1/").replace("/", ".")
    if endpoint not in ENDPOINTS:
        raise InputError(
            f"option 'endpoint' must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}"
        )
    if endpoint not in profile.endpoints:
        raise refused("endpoint", model, profile, f"{endpoint!r} is not served for it")
    if endpoint == "chat.completions" and (reasoning_active or include_thoughts):
        raise InputError(
            f"option 'reasoning' needs endpoint='responses' on OpenAI (model {model!r}): "
            "reasoning summaries are only returned there"
        )
    temperature = check_number("temperature", options.get("temperature"), low=0, high=2)
    top_p = check_number("top_p", options.get("top_p"), low=0, high=1)
    logprobs = options.get("logprobs")
    logprobs = None if logprobs is None else check_bool("logprobs", logprobs)
    if logprobs and endpoint != "chat.completions":
        # Responses takes logprobs through include[]/top_logprobs, which pairbatch does
        # not build; refuse rather than drop the option silently.
        raise refused("logprobs", model, profile, "only sent on endpoint 'chat.completions'")
    if not sampling:
        why = (
            f"temperature, top_p and logprobs must be unset when a reasoning effort "
            f"({effort!r}) is active"
            if reasoning_active
            else "only the default temperature (1) is supported"
        )
        if temperature is not None and temperature != 1:
            raise refused("temperature", model, profile, why)
        if top_p is not None:
            raise refused("top_p", model, profile, why)
        if logprobs:
            raise refused("logprobs", model, profile, why)
        temperature = None  # 1 is the default: leave it out
    elif temperature is None:
        temperature = 0.0
    metadata = options.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise InputError("option 'metadata' must be a dict of strings")
        LIMITS.check_metadata(metadata, reserved=RESERVED_METADATA_KEYS)
    return {
        "profile": profile.name,
        "endpoint": endpoint,
        "temperature": temperature,
        "top_p": top_p,
        "logprobs": logprobs if sampling else None,
        "reasoning": effort,
        "include_thoughts": include_thoughts,
        "max_output_tokens": check_int("max_output_tokens", options.get("max_output_tokens")),
        "service_tier": options.get("service_tier"),
        "metadata": metadata,
    }
