"""Gemini model profiles: what each family accepts, and option validation.

Sources (named per row below):

* [SDK] googleapis/python-genai ``google/genai/types.py``: ``ThinkingLevel`` is
  MINIMAL / LOW / MEDIUM / HIGH (sent upper case), ``ThinkingConfig.thinking_budget``
  ("0 is DISABLED. -1 is AUTOMATIC").
* [THINKING-DOC] ai.google.dev/gemini-api/docs/thinking and .../gemini-3: Gemini 3
  models take ``thinkingLevel`` (Pro: low, high; Flash: minimal, low, medium, high);
  Gemini 2.5 takes ``thinkingBudget`` (2.5 Pro 128..32768 and cannot turn thinking off;
  2.5 Flash 0..24576; 2.5 Flash-Lite 0 or 512..24576; -1 dynamic); sending both level
  and budget is a 400.
* [LIMITS] ai.google.dev/gemini-api/docs/batch-mode (inline requests under 20 MB) and the
  Files API (files up to 2 GB).
"""

from __future__ import annotations

import logging
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
    refused,
    resolve_profile,
)

log = logging.getLogger("pairbatch.providers.gemini")

OPTIONS = frozenset(
    {
        "include_thoughts",
        "thinking_level",
        "thinking_budget",
        "temperature",
        "top_p",
        "top_k",
        "max_output_tokens",
        "inline",
        "api_version",
        "profile",
    }
)
THINKING_LEVELS = ("minimal", "low", "medium", "high")
API_VERSIONS = ("v1beta", "v1")


@attrs.frozen
class GeminiProfile:
    """What one Gemini family accepts."""

    name: str
    #: "level" (thinkingLevel), "budget" (thinkingBudget) or "none" (no thinkingConfig).
    thinking: str = "none"
    levels: frozenset[str] = frozenset()
    #: The level sent when none is asked (None: leave it to the model).
    default_level: str | None = None
    #: Accepted thinkingBudget values: -1 (dynamic), 0 if it may be turned off, and the
    #: inclusive range of fixed budgets.
    budget_range: tuple[int, int] | None = None
    budget_off: bool = False


GEMINI_3_PRO = GeminiProfile(
    "gemini-3-pro", thinking="level", levels=frozenset({"low", "high"}), default_level="low"
)  # [THINKING-DOC]
GEMINI_3_FLASH = GeminiProfile(
    "gemini-3-flash",
    thinking="level",
    levels=frozenset(THINKING_LEVELS),
    default_level="low",
)  # [THINKING-DOC]
GEMINI_25_PRO = GeminiProfile("gemini-2.5-pro", thinking="budget", budget_range=(128, 32768))
GEMINI_25_FLASH = GeminiProfile(
    "gemini-2.5-flash", thinking="budget", budget_range=(1, 24576), budget_off=True
)
GEMINI_25_FLASH_LITE = GeminiProfile(
    "gemini-2.5-flash-lite", thinking="budget", budget_range=(512, 24576), budget_off=True
)
GEMINI_2 = GeminiProfile("gemini-2.0")  # no thinking: no thinkingConfig at all
#: For an unknown model: no thinkingConfig unless asked, then only the levels every
#: Gemini 3 model takes.
CONSERVATIVE = GeminiProfile(
    "gemini-conservative", thinking="level", levels=frozenset({"low", "high"})
)

_TAIL = r"(?:-preview|-latest|-exp|-\d{2}-\d{2,4}|-\d{3,4})*$"
TABLE: tuple[Family[GeminiProfile], ...] = (
    family(r"gemini-3(?:\.\d+)?-(?:flash|flash-lite)" + _TAIL, GEMINI_3_FLASH, "[THINKING-DOC]"),
    family(r"gemini-3(?:\.\d+)?-pro" + _TAIL, GEMINI_3_PRO, "[THINKING-DOC]"),
    family(r"gemini-2\.5-flash-lite" + _TAIL, GEMINI_25_FLASH_LITE, "[THINKING-DOC]"),
    family(r"gemini-2\.5-flash" + _TAIL, GEMINI_25_FLASH, "[THINKING-DOC]"),
    family(r"gemini-2\.5-pro" + _TAIL, GEMINI_25_PRO, "[THINKING-DOC]"),
    family(r"gemini-(?:2\.0|1\.5)-", GEMINI_2, "[THINKING-DOC]: thinking from 2.5 on"),
)
PROFILES = {row.profile.name: row.profile for row in TABLE} | {CONSERVATIVE.name: CONSERVATIVE}

LIMITS = BatchLimits(
    provider="gemini",
    max_requests=None,  # not documented
    max_bytes=2 * 1_000_000_000,
    inline_max_bytes=20 * 1_000_000,
    source="[LIMITS]",
)


def profile_for(model: str, override: object = None) -> GeminiProfile:
    return resolve_profile("gemini", model, override, TABLE, CONSERVATIVE, GeminiProfile)


def _check_budget(budget: int, model: str, profile: GeminiProfile) -> None:
    if budget == -1:
        return
    if budget == 0 and profile.budget_off:
        return
    low, high = profile.budget_range or (0, 0)
    if not low <= budget <= high:
        off = "0, " if profile.budget_off else ""
        raise refused(
            "thinking_budget", model, profile, f"got {budget}; takes -1, {off}{low}..{high}"
        )


def prepare(model: str, options: Options) -> dict[str, Any]:
    """Validate ``options`` against the model's profile; the JSON-ready settings.

    Gemini 3 models get a ``thinkingLevel`` (default ``low``; ``medium`` on a model
    without it becomes ``high`` with a warning, as the reference did). Gemini 2.5 takes
    ``thinking_budget`` instead; older models take no thinking settings.
    """
    profile = profile_for(model, options.get("profile"))
    include_thoughts = check_bool("include_thoughts", options.get("include_thoughts", False))
    level = options.get("thinking_level")
    budget = options.get("thinking_budget")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
        raise InputError(f"option 'thinking_budget' must be an integer, got {budget!r}")
    if level is not None and level not in THINKING_LEVELS:
        raise InputError(
            f"option 'thinking_level' must be one of {', '.join(THINKING_LEVELS)}, got {level!r}"
        )
    if profile.thinking == "none":
        for name, value in (("thinking_level", level), ("thinking_budget", budget)):
            if value is not None:
                raise refused(name, model, profile, "this model does not think")
        if include_thoughts:
            raise refused("include_thoughts", model, profile, "this model does not think")
    elif profile.thinking == "level":
        if budget is not None:
            raise refused("thinking_budget", model, profile, "Gemini 3 models take thinking_level")
        level = level or profile.default_level
        if level == "medium" and "medium" not in profile.levels and "high" in profile.levels:
            log.warning("thinking_level='medium' is not supported by %s; using 'high'", model)
            level = "high"
        if level is not None:
            if level == "minimal" and "minimal" not in profile.levels:
                raise refused(
                    "thinking_level", model, profile, "'minimal' is only for Gemini 3 Flash"
                )
            check_choice("thinking_level", level, profile.levels, model, profile)
    else:  # budget
        if level is not None:
            raise refused(
                "thinking_level", model, profile, "Gemini 2.5 models take thinking_budget"
            )
        if budget is not None:
            _check_budget(budget, model, profile)
    api_version = options.get("api_version", "v1beta")
    if api_version not in API_VERSIONS:
        raise InputError(
            f"option 'api_version' must be one of {', '.join(API_VERSIONS)}, got {api_version!r}"
        )
    inline = options.get("inline")
    return {
        "profile": profile.name,
        # The batch line carries no model; the client's pre-flight needs it.
        "model": bare_model(model),
        "include_thoughts": include_thoughts,
        # The REST enum's own spelling [SDK].
        "thinking_level": level.upper() if level else None,
        "thinking_budget": budget,
        "temperature": check_number("temperature", options.get("temperature"), low=0, high=2),
        "top_p": check_number("top_p", options.get("top_p"), low=0, high=1),
        "top_k": check_int("top_k", options.get("top_k")),
        "max_output_tokens": check_int("max_output_tokens", options.get("max_output_tokens")),
        "inline": None if inline is None else check_bool("inline", inline),
        "api_version": api_version,
    }
