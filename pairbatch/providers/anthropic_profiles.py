"""Anthropic model profiles: what each Claude family accepts, and option validation.

Sources (named per row below):

* [SDK] anthropic-sdk-python ``types/thinking_config_enabled_param.py`` (budget_tokens
  ≥ 1024 and < max_tokens), ``thinking_config_adaptive_param.py`` (``{"type":
  "adaptive", "display": "summarized"|"omitted"}``), ``output_config_param.py``
  (``output_config.effort``: low, medium, high, xhigh, max), ``types/model_param.py``
  (model ids).
* [ADAPTIVE] AWS Bedrock "Adaptive thinking" user guide (Claude Messages): Opus 4.7 and
  later take only adaptive thinking, ``enabled`` + budget_tokens returns 400; enabled is
  deprecated on Opus 4.6 / Sonnet 4.6; Sonnet 4.5, Opus 4.5 and older need ``enabled``.
* [SAMPLING-4.7] Anthropic "What's new in Claude 4.7 — sampling parameters removed":
  temperature / top_p / top_k at a non-default value return 400 (quoted in
  UKGovernmentBEIS/inspect_ai#3722, anomalyco/models.dev#1468).
* [TEMP-XOR-TOP_P] the API's 400 "`temperature` and `top_p` cannot both be specified for
  this model. Please use only one." on Sonnet 4.5 and Sonnet 4.6 (BerriAI/litellm#15097,
  iOfficeAI/AionUi#912).
* [THINKING-DOC] extended-thinking docs: thinking is not compatible with temperature
  or top_k changes; top_p may be set between 0.95 and 1.
* [EFFORT-4.7] xhigh is new with Opus 4.7; Opus 4.6 / Sonnet 4.6 take low..high and max;
  Opus 4.7 hides thinking text unless ``display: "summarized"``.
* [LIMITS] docs.anthropic.com "Creating message batches": 100,000 requests or 256 MB.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from pairbatch.errors import InputError
from pairbatch.providers.base import Options, check_bool, check_int, check_number
from pairbatch.providers.profiles import (
    BatchLimits,
    Family,
    bare_model,
    check_choice,
    family,
    match_profile,
    refused,
    resolve_profile,
)

OPTIONS = frozenset(
    {
        "reasoning",
        "include_thoughts",
        "effort",
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "thinking_budget_tokens",
        "anthropic_version",
        "profile",
    }
)
MIN_THINKING_BUDGET = 1024  # [SDK] thinking_config_enabled_param.py
DEFAULT_MAX_TOKENS = 768
DEFAULT_THINKING_MAX_TOKENS = 2048
# Adaptive thinking sets its own depth from the effort, so its cap leaves it more room:
# an answer cut off by max_tokens is a wasted request, and unused tokens cost nothing.
DEFAULT_ADAPTIVE_MAX_TOKENS = 4096


@attrs.frozen
class AnthropicProfile:
    """What one Claude family accepts."""

    name: str
    #: temperature / top_p / top_k accepted at all [SAMPLING-4.7].
    sampling: bool = True
    #: temperature and top_p may not both be sent [TEMP-XOR-TOP_P].
    temperature_xor_top_p: bool = False
    #: Thinking forms: "enabled" (budget_tokens) and/or "adaptive" (with effort).
    thinking: frozenset[str] = frozenset({"enabled"})
    #: output_config.effort values; empty where the family has no effort setting.
    efforts: frozenset[str] = frozenset()
    #: Adaptive thinking text is hidden unless display "summarized" is asked [EFFORT-4.7].
    hides_thinking: bool = False


ADAPTIVE_ONLY = AnthropicProfile(
    "claude-opus-4-7",
    sampling=False,
    thinking=frozenset({"adaptive"}),
    efforts=frozenset({"low", "medium", "high", "xhigh", "max"}),
    hides_thinking=True,
)  # [ADAPTIVE], [SAMPLING-4.7], [EFFORT-4.7]
CLAUDE_4_6 = AnthropicProfile(
    "claude-4-6",
    temperature_xor_top_p=True,
    thinking=frozenset({"adaptive", "enabled"}),
    efforts=frozenset({"low", "medium", "high", "max"}),
)  # [ADAPTIVE], [TEMP-XOR-TOP_P], [EFFORT-4.7]
CLAUDE_4_5 = AnthropicProfile("claude-4-5", temperature_xor_top_p=True)  # [TEMP-XOR-TOP_P]
CLAUDE_4 = AnthropicProfile("claude-4")  # Sonnet/Opus 4.0 and 3.7: enabled thinking [SDK]
CLAUDE_3 = AnthropicProfile("claude-3", thinking=frozenset())  # before 3.7: no thinking
#: For an unknown model: nothing optional that a newer model refuses — no sampling
#: parameters and only adaptive thinking, with the efforts every adaptive family takes.
CONSERVATIVE = AnthropicProfile(
    "anthropic-conservative",
    sampling=False,
    thinking=frozenset({"adaptive"}),
    efforts=frozenset({"low", "medium", "high"}),
    hides_thinking=True,
)
PROFILES = {p.name: p for p in (ADAPTIVE_ONLY, CLAUDE_4_6, CLAUDE_4_5, CLAUDE_4, CLAUDE_3)}

# claude-<tier>-<major>[-<minor>][-<date>] (claude-sonnet-4-5-20250929, claude-opus-4-8)
# and the older claude-<major>[-<minor>]-<tier>[-<date>] (claude-3-7-sonnet-20250219).
_NEW = re.compile(r"claude-([a-z]+)-(\d+)(?:-(\d{1,2}))?(?:-\d{8}|-latest|-v\d.*|@.*)?$")
_OLD = re.compile(r"claude-(\d+)(?:-(\d{1,2}))?-([a-z]+)(?:-\d{8}|-latest|-v\d.*|@.*)?$")


def family_of(model: str) -> AnthropicProfile | None:
    """The family a Claude model id belongs to, by its version; ``None`` if unknown.

    Versions decide rather than a list of names, so a newer id of a known line
    (``claude-opus-4-8``, ``claude-sonnet-5``) lands on the newest rules.
    """
    bare = bare_model(model).lower().removeprefix("anthropic.")
    if bare.startswith("claude-mythos"):
        return ADAPTIVE_ONLY  # [ADAPTIVE]: Mythos Preview is adaptive-only
    found = _NEW.match(bare)
    if found:
        tier, major, minor = found.group(1), int(found.group(2)), int(found.group(3) or 0)
    else:
        found = _OLD.match(bare)
        if not found:
            return None
        major, minor, tier = int(found.group(1)), int(found.group(2) or 0), found.group(3)
    if tier not in ("opus", "sonnet", "haiku", "fable", "mythos"):
        return None
    version = (major, minor)
    if version >= (4, 7):
        return ADAPTIVE_ONLY  # Opus 4.7+, and every Claude 5 model [ADAPTIVE]
    if version == (4, 6):
        return CLAUDE_4_6
    if version >= (4, 1):
        return CLAUDE_4_5  # Opus 4.1, Sonnet/Haiku/Opus 4.5
    if version >= (3, 7):
        return CLAUDE_4
    return CLAUDE_3


LIMITS = BatchLimits(
    provider="anthropic", max_requests=100_000, max_bytes=256 * 1_000_000, source="[LIMITS]"
)


def profile_for(model: str, override: object = None) -> AnthropicProfile:
    if override is not None:
        if isinstance(override, str) and override not in PROFILES:
            found = family_of(override)
            if found is not None:
                return found
        table = [_row(p) for p in PROFILES.values()]
        return resolve_profile("anthropic", model, override, table, CONSERVATIVE, AnthropicProfile)
    found = family_of(model)
    if found is not None:
        return found
    return match_profile("anthropic", model, (), CONSERVATIVE)


def _row(profile: AnthropicProfile) -> Family[AnthropicProfile]:
    return family(re.escape(profile.name) + "$", profile)


def prepare(model: str, options: Options) -> dict[str, Any]:
    """Validate ``options`` against the model's profile; the JSON-ready settings.

    ``reasoning`` is ``"none"``, ``"enabled"`` (budget_tokens) or ``"adaptive"``
    (with ``effort``); ``include_thoughts`` turns thinking on in the family's preferred
    form (adaptive where it exists). With enabled thinking, temperature stays 1 and the
    budget is at least 1024 and below ``max_tokens`` [SDK].
    """
    profile = profile_for(model, options.get("profile"))
    reasoning = options.get("reasoning", "none")
    if reasoning not in ("none", "enabled", "adaptive"):
        raise InputError(
            f"option 'reasoning' must be 'none', 'enabled' or 'adaptive', got {reasoning!r}"
        )
    include_thoughts = check_bool("include_thoughts", options.get("include_thoughts", False))
    effort = options.get("effort")
    budget = check_int("thinking_budget_tokens", options.get("thinking_budget_tokens"))
    if reasoning == "none" and (include_thoughts or budget is not None):
        # Asking for thoughts or a budget turns thinking on, in the form the family
        # prefers (adaptive where it exists, since enabled is deprecated there). An
        # effort alone does not: output_config.effort also works without thinking.
        if budget is not None and "enabled" in profile.thinking:
            reasoning = "enabled"
        elif "adaptive" in profile.thinking:
            reasoning = "adaptive"
        elif "enabled" in profile.thinking:
            reasoning = "enabled"
        else:
            raise refused("include_thoughts", model, profile, "this model has no thinking")
    if reasoning != "none" and reasoning not in profile.thinking:
        forms = ", ".join(sorted(profile.thinking)) or "none"
        raise refused(
            "reasoning", model, profile, f"thinking {reasoning!r}; this model takes: {forms}"
        )
    temperature = check_number("temperature", options.get("temperature"), low=0, high=1)
    top_p = check_number("top_p", options.get("top_p"), low=0, high=1)
    top_k = check_int("top_k", options.get("top_k"))
    max_tokens = check_int("max_tokens", options.get("max_tokens"))
    if not profile.sampling:
        for name, value in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k)):
            if value is not None:
                raise refused(name, model, profile, "sampling parameters were removed")
    if profile.temperature_xor_top_p and temperature is not None and top_p is not None:
        raise refused("top_p", model, profile, "temperature and top_p cannot both be specified")
    if reasoning != "none" and top_p is not None and top_p < 0.95:
        raise refused("top_p", model, profile, "it must be within [0.95, 1] while thinking")
    if reasoning == "enabled":
        if temperature is not None and temperature != 1:
            raise refused(
                "temperature", model, profile, "it must be 1 when extended thinking is enabled"
            )
        if top_k is not None:
            raise refused("top_k", model, profile, "it must be unset with extended thinking")
        # 1 is the default; sent only where nothing forbids it alongside top_p.
        temperature = 1.0 if top_p is None and profile.sampling else None
        max_tokens = max_tokens or DEFAULT_THINKING_MAX_TOKENS
        budget = budget or MIN_THINKING_BUDGET
        if budget < MIN_THINKING_BUDGET:
            raise InputError(
                f"option 'thinking_budget_tokens' must be at least {MIN_THINKING_BUDGET} "
                f"(model {model!r})"
            )
        if budget >= max_tokens:
            raise InputError(
                f"option 'thinking_budget_tokens' must be smaller than 'max_tokens' "
                f"(model {model!r}: {budget} >= {max_tokens})"
            )
    else:
        if budget is not None:
            raise refused("thinking_budget_tokens", model, profile, f"thinking is {reasoning!r}")
        if reasoning == "adaptive":
            if temperature is not None and temperature != 1:
                raise refused("temperature", model, profile, "it must be 1 while thinking")
            if top_k is not None:
                raise refused("top_k", model, profile, "it must be unset while thinking")
            temperature = None
            max_tokens = max_tokens or DEFAULT_ADAPTIVE_MAX_TOKENS
        else:
            max_tokens = max_tokens or DEFAULT_MAX_TOKENS
            if temperature is None and profile.sampling and top_p is None:
                temperature = 0.0  # deterministic judgements where the model allows it
    if effort is not None:
        if not profile.efforts:
            raise refused("effort", model, profile, "this model has no effort setting")
        check_choice("effort", effort, profile.efforts, model, profile)
    return {
        "profile": profile.name,
        "reasoning": reasoning,
        "include_thoughts": include_thoughts,
        "effort": effort,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_tokens": max_tokens,
        "thinking_budget_tokens": budget if reasoning == "enabled" else None,
        # Adaptive thinking text is hidden by default on newer models: ask for it.
        "thinking_display": (
            "summarized"
            if reasoning == "adaptive" and include_thoughts and profile.hides_thinking
            else None
        ),
        "anthropic_version": options.get("anthropic_version", "2023-06-01"),
    }
