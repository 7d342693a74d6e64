"""What each provider refuses, per model: the emulator's own reading of public sources.

This is the one table of model rules. It is written from the providers' docs, the
official SDKs' types and error bodies that users reported verbatim, never from
pairbatch's client code: a test passes only when the two readings agree.

Each check returns a :class:`Refusal` (HTTP status + the provider's error body) or
``None``. The same check runs on a synchronous request (answered with the refusal) and
on each batch line (the refusal becomes that line's per-request error).

Unknown model ids are accepted with no model rules by default: tests use placeholder
and fine-tuned ids (``ft:...``) that no table can list, and pairbatch warns about
unknown models itself. ``refuse_unknown=True`` (``ProviderEmulator(unknown_models=
"refuse")``) answers as the real services do for an id they do not serve: a 404 with
OpenAI ``model_not_found``, Anthropic ``not_found_error``, Gemini ``NOT_FOUND`` (see
:func:`model_not_found`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from pairbatch.testing._http import anthropic_error_body, google_error_body, openai_error_body

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"


@attrs.frozen
class Refusal:
    status: int
    body: dict[str, Any]

    @property
    def message(self) -> str:
        error = self.body.get("error") or {}
        return str(error.get("message", ""))


def _num(value: Any) -> str:
    """A number as the services print it back (Python-ish: 0, 0.2, 0.0)."""
    return repr(value) if isinstance(value, (int, float)) else repr(str(value))


def _english_list(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + ", and " + quoted[-1]


# -- OpenAI ---------------------------------------------------------------------------


@attrs.frozen
class OpenAIModel:
    """One family. ``efforts`` empty: not a reasoning model (rejects ``reasoning``).

    ``default_effort`` matters because gpt-5.1 and later accept sampling parameters only
    when the effective effort is ``none``, and their default is ``none``.
    """

    pattern: re.Pattern[str]
    efforts: tuple[str, ...]
    default_effort: str | None = None
    sampling_with_none: bool = False


# Effort values: openai-python `types/shared/reasoning_effort.py` lists
# none|minimal|low|medium|high|xhigh|max; which family takes which is from the docs'
# ReasoningEffort text ("gpt-5.1 defaults to none ... The supported reasoning values for
# gpt-5.1 are none, low, medium, and high"; "All models before gpt-5.1 default to medium
# reasoning effort, and do not support none"; "The gpt-5-pro model defaults to (and only
# supports) high"; "xhigh is supported for all models after gpt-5.1-codex-max",
# learn.microsoft.com/.../ai-projects/reasoningeffort) and the errors quoted at each
# check below.
OPENAI_MODELS: tuple[OpenAIModel, ...] = (
    # gpt-5-chat is not a reasoning model: "Unsupported parameter: 'reasoning.effort' is
    # not supported with this model." (github Laisky/one-api#120).
    OpenAIModel(re.compile(r"^gpt-5(\.\d+)?-chat"), ()),
    OpenAIModel(re.compile(r"^gpt-5-pro"), ("high",), "high"),
    # gpt-5.1: openai/openai-agents-python#2089 ("Supported values are: 'none', 'low',
    # 'medium', and 'high'."); sampling with effort none: vercel/ai#10932.
    OpenAIModel(
        re.compile(r"^gpt-5\.1(?![\d])"),
        ("none", "low", "medium", "high"),
        "none",
        sampling_with_none=True,
    ),
    # gpt-5.2 and later add xhigh (CLIProxyAPI v6.6.5 "add none ... to gpt-5.2").
    OpenAIModel(
        re.compile(r"^gpt-5\.([2-9]|\d\d)"),
        ("none", "low", "medium", "high", "xhigh"),
        "none",
        sampling_with_none=True,
    ),
    # gpt-5, -mini, -nano, date-stamped: "Supported values are: 'minimal', 'low',
    # 'medium', and 'high'." (Kilo-Org/cloud#3807); temperature refused for gpt-5-mini
    # (QwenLM/qwen-code#921).
    OpenAIModel(re.compile(r"^gpt-5(?![.\d])"), ("minimal", "low", "medium", "high"), "medium"),
    # o-series: low/medium/high ("Earlier reasoning models like o3 supported only low,
    # medium, and high", davidmigloz/langchain_dart#760, quoting OpenAI's guide);
    # temperature refused for o1-mini (OpenHands/OpenHands#4131).
    OpenAIModel(re.compile(r"^o\d"), ("low", "medium", "high"), "medium"),
    OpenAIModel(re.compile(r"^(gpt-4|gpt-3\.5|chatgpt-4o)"), ()),
)


def openai_model(model: str) -> OpenAIModel | None:
    name = model.removeprefix("openai/")
    for entry in OPENAI_MODELS:
        if entry.pattern.match(name):
            return entry
    return None


def _oa(message: str, param: str | None, code: str | None) -> Refusal:
    return Refusal(400, openai_error_body(400, message, code=code, param=param))


def _unsupported_parameter(name: str) -> Refusal:
    # "Unsupported parameter: 'reasoning.effort' is not supported with this model."
    # param + code unsupported_parameter (BoundaryML/baml#2708); the same sentence is
    # used for every parameter a model does not take.
    return _oa(
        f"Unsupported parameter: '{name}' is not supported with this model.",
        name,
        "unsupported_parameter",
    )


def model_not_found(provider: str, model: str, api_version: str = "v1beta") -> Refusal:
    """The 404 each service answers for a model id it does not serve."""
    if provider == "openai":
        # Verbatim, code model_not_found, param null (shobrook/wut#14, ksred/GitPilotAI#12).
        return Refusal(
            404,
            openai_error_body(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            ),
        )
    if provider == "anthropic":
        # {"type":"not_found_error","message":"model: sonnet4"} (anthropics/claude-code#5349).
        return Refusal(404, anthropic_error_body(404, f"model: {model}"))
    # google/adk-python#200, swuecho/chat#597, verbatim form.
    name = model if model.startswith("models/") else f"models/{model}"
    return Refusal(
        404,
        google_error_body(
            404,
            f"{name} is not found for API version {api_version}, or is not supported for "
            "generateContent. Call ListModels to see the list of available models and their "
            "supported methods.",
        ),
    )


def check_openai(
    endpoint: str, body: Mapping[str, Any], *, refuse_unknown: bool = False
) -> Refusal | None:
    """The first rule ``body`` breaks on ``endpoint`` (chat completions or responses)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _oa("you must provide a model parameter", None, None)
    if endpoint == RESPONSES:
        for old, new in (
            ("reasoning_effort", "reasoning.effort"),
            ("max_completion_tokens", "max_output_tokens"),
            ("max_tokens", "max_output_tokens"),
        ):
            if old in body:
                # OpenHands/software-agent-sdk#755 (verbatim for reasoning_effort, param
                # null); the max-token names are moved the same way.
                return _oa(
                    f"Unsupported parameter: '{old}'. In the Responses API, this parameter "
                    f"has moved to '{new}'. Try again with the new parameter. See the API "
                    "documentation for more information: "
                    "https://platform.openai.com/docs/api-reference/responses/create.",
                    None,
                    "unsupported_parameter",
                )
        limit = body.get("max_output_tokens")
        if isinstance(limit, int) and limit < 16:
            # The API reference gives max_output_tokens a minimum of 16.
            return _oa(
                "Invalid 'max_output_tokens': integer below minimum value. Expected a value "
                f">= 16, but got {limit} instead.",
                "max_output_tokens",
                "integer_below_min_value",
            )
    elif "reasoning" in body:
        # Chat completions take `reasoning_effort`; an unknown top-level key is refused.
        return _oa("Unrecognized request argument supplied: reasoning", None, "unknown_parameter")
    entry = openai_model(model)
    if entry is None:
        return model_not_found("openai", model) if refuse_unknown else None
    if endpoint == RESPONSES:
        reasoning = body.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, Mapping) else None
        asked = isinstance(reasoning, Mapping) and bool(reasoning)
        # A summary alone names its own field in the refusal.
        only_summary = asked and effort is None and isinstance(reasoning, Mapping)
        effort_param = "reasoning.summary" if only_summary else "reasoning.effort"
    else:
        effort = body.get("reasoning_effort")
        effort_param = "reasoning_effort"
        asked = effort is not None
    if not entry.efforts:
        if asked:
            return _unsupported_parameter(effort_param)
        return None
    if effort is not None and effort not in entry.efforts:
        supported = _english_list(entry.efforts)
        if endpoint == RESPONSES:
            # openai-agents-python#2089 / opencode#4451, param reasoning.effort.
            message = (
                f"Unsupported value: '{effort}' is not supported with the '{model}' model. "
                f"Supported values are: {supported}."
            )
        else:
            # livekit/agents#3966, Kilo-Org/cloud#3807, param reasoning_effort.
            message = (
                f"Unsupported value: 'reasoning_effort' does not support '{effort}' with "
                f"this model. Supported values are: {supported}."
            )
        return _oa(message, effort_param, "unsupported_value")
    if endpoint == CHAT and "max_tokens" in body:
        # Reasoning models on chat take max_completion_tokens (OpenAI reasoning guide).
        return _oa(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "max_tokens",
            "unsupported_parameter",
        )
    effective = effort if effort is not None else entry.default_effort
    if entry.sampling_with_none and effective == "none":
        return None
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        # Verbatim from gabrii/Cursor-Azure-GPT-5#33 and johny-b/llmcomp#69.
        return _oa(
            f"Unsupported value: 'temperature' does not support {_num(temperature)} with "
            "this model. Only the default (1) value is supported.",
            "temperature",
            "unsupported_value",
        )
    for name in ("top_p", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty"):
        if body.get(name) is not None:
            return _unsupported_parameter(name)
    return None


def openai_reasoning_model(model: str) -> bool:
    entry = openai_model(model)
    return entry is not None and bool(entry.efforts)


# -- Anthropic ------------------------------------------------------------------------


@attrs.frozen
class AnthropicModel:
    pattern: re.Pattern[str]
    # "enabled" (budget_tokens) and/or "adaptive" thinking.
    thinking: frozenset[str]
    # Sampling parameters refused outright (Opus 4.7 and later).
    no_sampling: bool = False
    # temperature and top_p refused together (Sonnet/Haiku 4.5, the 4.6 models).
    one_of_temperature_top_p: bool = False
    effort: bool = False


ANTHROPIC_MODELS: tuple[AnthropicModel, ...] = (
    # Opus 4.7 and later generations: adaptive thinking only, no sampling parameters.
    # '"thinking.type.enabled" is not supported for this model. Use
    # "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
    # (OpenHands/software-agent-sdk#3427, srtab/daiv#1429: "Opus 4.7, Opus 4.8, Opus 5,
    # Sonnet 5"); "`temperature` is deprecated for this model." for claude-opus-4-7
    # (UKGovernmentBEIS/inspect_ai#3721); top_p/top_k likewise (inspect_ai#3722,
    # promptfoo#9500 quoting the migration guide).
    AnthropicModel(
        re.compile(r"^claude-(opus-4-[7-9]|opus-[5-9]|sonnet-[5-9]|haiku-[5-9])"),
        frozenset({"adaptive"}),
        no_sampling=True,
        effort=True,
    ),
    # The 4.6 models take both forms (defog-ai/defog#217: adaptive + output_config.effort
    # for Opus 4.6; AAswordman/Operit#568: "Opus 4.6/Sonnet 4.6 | adaptive / enabled").
    AnthropicModel(
        re.compile(r"^claude-(opus|sonnet)-4-6"),
        frozenset({"enabled", "adaptive"}),
        one_of_temperature_top_p=True,
        effort=True,
    ),
    # Sonnet 4.5 / Haiku 4.5: "`temperature` and `top_p` cannot both be specified for
    # this model. Please use only one." (BerriAI/litellm#15097, charmbracelet/mods#618).
    AnthropicModel(
        re.compile(r"^claude-(sonnet|haiku)-4-5"),
        frozenset({"enabled"}),
        one_of_temperature_top_p=True,
    ),
    AnthropicModel(re.compile(r"^claude-opus-4-5"), frozenset({"enabled"}), effort=True),
    # Claude 4 / 4.1 and 3.7 Sonnet: budget thinking only.
    AnthropicModel(re.compile(r"^claude-(opus-4|sonnet-4|3-7-sonnet)"), frozenset({"enabled"})),
    # Older models have no extended thinking.
    AnthropicModel(re.compile(r"^claude-(3|instant|2)"), frozenset()),
)

_ANTHROPIC_EFFORTS = ("low", "medium", "high", "xhigh", "max")  # OutputConfigParam.effort
_THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"


def anthropic_model(model: str) -> AnthropicModel | None:
    for entry in ANTHROPIC_MODELS:
        if entry.pattern.match(model):
            return entry
    return None


def _an(message: str) -> Refusal:
    return Refusal(400, anthropic_error_body(400, message))


def check_anthropic(params: Mapping[str, Any], *, refuse_unknown: bool = False) -> Refusal | None:
    """The first rule a Messages request breaks (shape checks live in the routes)."""
    model = str(params.get("model", ""))
    entry = anthropic_model(model)
    if entry is None and refuse_unknown:
        return model_not_found("anthropic", model)
    thinking = params.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, Mapping) else None
    temperature, top_p, top_k = (params.get(n) for n in ("temperature", "top_p", "top_k"))
    output_config = params.get("output_config")
    effort = output_config.get("effort") if isinstance(output_config, Mapping) else None
    if effort is not None and effort not in _ANTHROPIC_EFFORTS:
        # pydantic-style wording of the API's validation errors.
        return _an(
            "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
        )
    if entry is not None:
        if entry.no_sampling:
            for name, value, default in (
                ("temperature", temperature, 1),
                ("top_p", top_p, 1),
                ("top_k", top_k, None),
            ):
                if value is not None and value != default:
                    return _an(f"`{name}` is deprecated for this model.")
        if kind in ("enabled", "adaptive") and kind not in entry.thinking:
            if kind == "enabled":
                return _an(
                    '"thinking.type.enabled" is not supported for this model. Use '
                    '"thinking.type.adaptive" and "output_config.effort" to control '
                    "thinking behavior."
                )
            # Same form of sentence for the reverse case.
            return _an('"thinking.type.adaptive" is not supported for this model.')
        if effort is not None and not entry.effort:
            return _an("output_config.effort: This model does not support the effort parameter.")
        if entry.one_of_temperature_top_p and temperature is not None and top_p is not None:
            return _an(
                "`temperature` and `top_p` cannot both be specified for this model. "
                "Please use only one."
            )
    if kind == "enabled":
        budget = thinking.get("budget_tokens") if isinstance(thinking, Mapping) else None
        if not isinstance(budget, int) or isinstance(budget, bool):
            return _an("thinking.enabled.budget_tokens: Field required")
        if budget < 1024:
            # ThinkingConfigEnabledParam: "Must be ≥1024 and less than max_tokens";
            # wording from workglow-dev/libs#746 (live probe).
            return _an(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            )
        max_tokens = params.get("max_tokens")
        if isinstance(max_tokens, int) and max_tokens <= budget:
            # router-for-me/CLIProxyAPI#413, verbatim.
            return _an(
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult "
                f"our documentation at {_THINKING_DOCS}#max-tokens-and-context-window-size"
            )
    if kind in ("enabled", "adaptive"):
        mode = "when thinking is enabled" + (" or in adaptive mode" if kind == "adaptive" else "")
        if temperature is not None and temperature != 1:
            # workglow-dev/libs#746; "or in adaptive mode": mnfst/modelparams.dev#214.
            return _an(
                f"`temperature` may only be set to 1 {mode}. Please consult our "
                f"documentation at {_THINKING_DOCS}#feature-compatibility"
            )
        if top_k is not None:
            # quarkiverse/quarkus-langchain4j#1812, verbatim.
            return _an(
                f"`top_k` must be unset {mode}. Please consult our documentation at "
                f"{_THINKING_DOCS}#important-considerations-when-using-extended-thinking"
            )
        if isinstance(top_p, (int, float)) and not 0.95 <= top_p <= 1:
            # Docs: with thinking, top_p may be set between 0.95 and 1
            # (Kiln-AI/Kiln#1479: "top_p >= 0.95 or unset").
            return _an(
                f"`top_p` must be greater than or equal to 0.95 or unset {mode}. Please "
                f"consult our documentation at {_THINKING_DOCS}#feature-compatibility"
            )
    return None


# -- Gemini ---------------------------------------------------------------------------


@attrs.frozen
class GeminiModel:
    pattern: re.Pattern[str]
    # thinkingBudget range (inclusive); -1 (dynamic) is always allowed where budgets are.
    budget: tuple[int, int] | None
    budget_zero: bool  # 0 turns thinking off
    levels: tuple[str, ...]  # thinkingLevel values; empty: thinkingLevel refused


# Budget ranges: ai.google.dev/gemini-api/docs/thinking (quoted in juspay/neurolink#1707:
# 2.5 Flash 1..24576, 2.5 Pro 128..32768, 2.5 Flash-Lite 512..24576; "Thinking can't be
# turned off for Gemini 2.5 Pro"; "If you use the thinking_level parameter with a model
# earlier than Gemini 3, the model returns an error"). Levels: google-genai
# `types.ThinkingLevel` (MINIMAL, LOW, MEDIUM, HIGH); per model, gemini-3-pro refuses
# MEDIUM (jenslys/opencode-gemini-auth#14), Gemini 3 Flash takes all four
# (checkmarble/llmberjack#14, quoting the docs' table).
GEMINI_MODELS: tuple[GeminiModel, ...] = (
    GeminiModel(re.compile(r"^gemini-2\.5-pro"), (128, 32768), False, ()),
    GeminiModel(re.compile(r"^gemini-2\.5-flash-lite"), (512, 24576), True, ()),
    GeminiModel(re.compile(r"^gemini-2\.5-flash"), (1, 24576), True, ()),
    GeminiModel(re.compile(r"^gemini-3(\.0)?-pro"), (128, 32768), False, ("LOW", "HIGH")),
    GeminiModel(re.compile(r"^gemini-3\.\d+-pro"), (128, 32768), False, ("LOW", "MEDIUM", "HIGH")),
    GeminiModel(
        re.compile(r"^gemini-3(\.\d+)?-flash"),
        (1, 24576),
        False,
        ("MINIMAL", "LOW", "MEDIUM", "HIGH"),
    ),
)


def gemini_model(model: str) -> GeminiModel | None:
    name = model.removeprefix("models/")
    for entry in GEMINI_MODELS:
        if entry.pattern.match(name):
            return entry
    return None


def _gm(message: str) -> Refusal:
    return Refusal(400, google_error_body(400, message))


def _pick(mapping: Any, camel: str, snake: str) -> Any:
    if not isinstance(mapping, Mapping):
        return None
    return mapping.get(camel, mapping.get(snake))


def gemini_thinking_config(request: Mapping[str, Any]) -> Mapping[str, Any] | None:
    config = _pick(request, "generationConfig", "generation_config")
    thinking = _pick(config, "thinkingConfig", "thinking_config")
    return thinking if isinstance(thinking, Mapping) else None


def check_gemini(
    model: str,
    request: Mapping[str, Any],
    *,
    refuse_unknown: bool = False,
    api_version: str = "v1beta",
) -> Refusal | None:
    if refuse_unknown and gemini_model(model) is None:
        return model_not_found("gemini", model, api_version)
    thinking = gemini_thinking_config(request)
    if thinking is None:
        return None
    budget = _pick(thinking, "thinkingBudget", "thinking_budget")
    level = _pick(thinking, "thinkingLevel", "thinking_level")
    if budget is not None and level is not None:
        # sterlp/eclipse-peon-ai#115, verbatim (sic).
        return _gm("You can only set only one of thinking budget and thinking level.")
    entry = gemini_model(model)
    if entry is None:
        return None
    if level is not None:
        if not entry.levels:
            # RooCodeInc/Roo-Code#10700 (gemini-2.5-flash), microsoft/vscode#334581 (2.5 Pro).
            return _gm("Thinking level is not supported for this model.")
        name = str(level).upper()
        if name not in entry.levels:
            # jenslys/opencode-gemini-auth#14 (the sentence inside Vertex's wrapper).
            return _gm(f"thinking_level {name} is not supported by this model.")
    if isinstance(budget, int) and budget != -1 and entry.budget is not None:
        if budget == 0 and not entry.budget_zero:
            # snailyp/gemini-balance#206, ChatLunaLab/chatluna#519, verbatim.
            return _gm("Budget 0 is invalid. This model only works in thinking mode.")
        lo, hi = entry.budget
        if budget != 0 and not lo <= budget <= hi:
            # RooCodeInc/Roo-Code#4399, verbatim form.
            return _gm(f"The thinking budget ({budget}) is invalid.")
    return None


def gemini_thinking_levels(model: str) -> bool:
    entry = gemini_model(model)
    return entry is not None and bool(entry.levels)
