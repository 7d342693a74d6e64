"""The model rules table over real model ids: what is accepted, what is refused and the
exact error bodies, checked on the functions and over HTTP on the sync endpoints."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from pairbatch.testing import ProviderEmulator
from pairbatch.testing.rules import (
    CHAT,
    RESPONSES,
    check_anthropic,
    check_gemini,
    check_openai,
)

MSG = [{"role": "user", "content": "hi"}]


def oa_error(message: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


# -- OpenAI ---------------------------------------------------------------------------

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
ACCEPTED_EFFORTS = {
    "gpt-5": {"minimal", "low", "medium", "high"},
    "gpt-5-mini": {"minimal", "low", "medium", "high"},
    "gpt-5-nano-2025-08-07": {"minimal", "low", "medium", "high"},
    "gpt-5.1": {"none", "low", "medium", "high"},
    "gpt-5.2": {"none", "low", "medium", "high", "xhigh"},
    "o4-mini": {"low", "medium", "high"},
    "o3": {"low", "medium", "high"},
}


@pytest.mark.parametrize("model", sorted(ACCEPTED_EFFORTS))
@pytest.mark.parametrize("effort", EFFORTS)
def test_openai_effort_per_family(model: str, effort: str) -> None:
    responses = check_openai(
        RESPONSES, {"model": model, "input": "x", "reasoning": {"effort": effort}}
    )
    chat = check_openai(CHAT, {"model": model, "messages": MSG, "reasoning_effort": effort})
    if effort in ACCEPTED_EFFORTS[model]:
        assert responses is None and chat is None
        return
    assert responses is not None and chat is not None
    assert responses.status == chat.status == 400
    assert responses.body["error"]["param"] == "reasoning.effort"
    assert responses.body["error"]["code"] == "unsupported_value"
    assert responses.message.startswith(
        f"Unsupported value: '{effort}' is not supported with the '{model}' model. "
        "Supported values are: "
    )
    assert chat.body["error"]["param"] == "reasoning_effort"
    assert chat.message.startswith(
        f"Unsupported value: 'reasoning_effort' does not support '{effort}' with this model."
    )


def test_openai_exact_effort_message() -> None:
    refusal = check_openai(
        RESPONSES, {"model": "gpt-5.1", "input": "x", "reasoning": {"effort": "minimal"}}
    )
    assert refusal is not None
    assert refusal.body == oa_error(
        "Unsupported value: 'minimal' is not supported with the 'gpt-5.1' model. "
        "Supported values are: 'none', 'low', 'medium', and 'high'.",
        "reasoning.effort",
        "unsupported_value",
    )


@pytest.mark.parametrize(
    "model", ["gpt-5-mini", "gpt-5-mini-2025-08-07", "gpt-5", "o4-mini", "o1", "o3-mini"]
)
@pytest.mark.parametrize("endpoint", [CHAT, RESPONSES])
def test_openai_reasoning_models_refuse_sampling(model: str, endpoint: str) -> None:
    base: dict[str, Any] = {"model": model}
    base.update({"messages": MSG} if endpoint == CHAT else {"input": "x"})
    refusal = check_openai(endpoint, {**base, "temperature": 0})
    assert refusal is not None
    assert refusal.body == oa_error(
        "Unsupported value: 'temperature' does not support 0 with this model. "
        "Only the default (1) value is supported.",
        "temperature",
        "unsupported_value",
    )
    assert check_openai(endpoint, {**base, "temperature": 1}) is None
    for name, value in (("top_p", 0.9), ("logprobs", True)):
        refusal = check_openai(endpoint, {**base, name: value})
        assert refusal is not None
        assert refusal.body == oa_error(
            f"Unsupported parameter: '{name}' is not supported with this model.",
            name,
            "unsupported_parameter",
        )


def test_openai_gpt51_sampling_only_without_reasoning() -> None:
    body = {"model": "gpt-5.1", "input": "x", "temperature": 0.2}
    assert check_openai(RESPONSES, body) is None  # default effort is none
    refusal = check_openai(RESPONSES, {**body, "reasoning": {"effort": "low"}})
    assert refusal is not None and refusal.body["error"]["param"] == "temperature"


@pytest.mark.parametrize("model", ["gpt-4.1-mini", "gpt-4.1", "gpt-4o", "gpt-4o-mini"])
def test_openai_non_reasoning_models(model: str) -> None:
    assert (
        check_openai(CHAT, {"model": model, "messages": MSG, "temperature": 0, "top_p": 0.5})
        is None
    )
    assert check_openai(RESPONSES, {"model": model, "input": "x", "temperature": 0}) is None
    refusal = check_openai(
        RESPONSES, {"model": model, "input": "x", "reasoning": {"effort": "low"}}
    )
    assert refusal is not None
    assert refusal.body == oa_error(
        "Unsupported parameter: 'reasoning.effort' is not supported with this model.",
        "reasoning.effort",
        "unsupported_parameter",
    )
    refusal = check_openai(CHAT, {"model": model, "messages": MSG, "reasoning_effort": "low"})
    assert refusal is not None and refusal.body["error"]["param"] == "reasoning_effort"


def test_openai_endpoint_parameters() -> None:
    refusal = check_openai(
        RESPONSES, {"model": "gpt-5-mini", "input": "x", "reasoning_effort": "low"}
    )
    assert refusal is not None
    assert refusal.body["error"]["code"] == "unsupported_parameter"
    assert refusal.body["error"]["param"] is None
    assert refusal.message.startswith(
        "Unsupported parameter: 'reasoning_effort'. In the Responses API, this parameter has "
        "moved to 'reasoning.effort'."
    )
    refusal = check_openai(RESPONSES, {"model": "gpt-4.1-mini", "input": "x", "max_tokens": 50})
    assert refusal is not None and "'max_output_tokens'" in refusal.message
    refusal = check_openai(CHAT, {"model": "o4-mini", "messages": MSG, "max_tokens": 50})
    assert refusal is not None and refusal.body["error"]["param"] == "max_tokens"
    assert (
        check_openai(CHAT, {"model": "o4-mini", "messages": MSG, "max_completion_tokens": 50})
        is None
    )
    assert check_openai(CHAT, {"model": "gpt-4.1-mini", "messages": MSG, "max_tokens": 50}) is None
    refusal = check_openai(RESPONSES, {"model": "gpt-5", "input": "x", "max_output_tokens": 8})
    assert refusal is not None and refusal.body["error"]["code"] == "integer_below_min_value"


def test_openai_unknown_model_is_accepted() -> None:
    assert check_openai(CHAT, {"model": "my-finetune", "messages": MSG, "temperature": 0}) is None


# -- Anthropic ------------------------------------------------------------------------

AN_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"


def an(**params: Any) -> dict[str, Any]:
    return {"max_tokens": 4096, "messages": MSG, **params}


def an_message(params: dict[str, Any]) -> str | None:
    refusal = check_anthropic(params)
    if refusal is None:
        return None
    assert refusal.status == 400
    assert refusal.body["type"] == "error"
    assert refusal.body["error"]["type"] == "invalid_request_error"
    return refusal.message


@pytest.mark.parametrize(
    "model", ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-sonnet-4-5-20250929"]
)
def test_anthropic_classic_thinking(model: str) -> None:
    ok = {"type": "enabled", "budget_tokens": 1024}
    assert an_message(an(model=model, thinking=ok)) is None
    assert an_message(an(model=model, temperature=0)) is None
    assert an_message(an(model=model, thinking=ok, temperature=1)) is None
    assert an_message(an(model=model, thinking={"type": "enabled", "budget_tokens": 1000})) == (
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
    )
    assert an_message(
        an(model=model, max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 2000})
    ) == (
        "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
        f"documentation at {AN_DOCS}#max-tokens-and-context-window-size"
    )
    assert an_message(an(model=model, thinking=ok, temperature=0.5)) == (
        "`temperature` may only be set to 1 when thinking is enabled. Please consult our "
        f"documentation at {AN_DOCS}#feature-compatibility"
    )
    assert an_message(an(model=model, thinking=ok, top_k=5)) == (
        "`top_k` must be unset when thinking is enabled. Please consult our documentation "
        f"at {AN_DOCS}#important-considerations-when-using-extended-thinking"
    )
    assert an_message(an(model=model, temperature=0.5, top_p=0.9)) == (
        "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
    )
    assert an_message(an(model=model, thinking={"type": "adaptive"})) is not None


@pytest.mark.parametrize("model", ["claude-opus-4-7", "claude-opus-4-8"])
def test_anthropic_adaptive_only(model: str) -> None:
    assert an_message(an(model=model)) is None
    assert (
        an_message(an(model=model, thinking={"type": "adaptive"}, output_config={"effort": "max"}))
        is None
    )
    assert an_message(an(model=model, thinking={"type": "enabled", "budget_tokens": 2048})) == (
        '"thinking.type.enabled" is not supported for this model. Use '
        '"thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
    )
    for name, value in (("temperature", 0), ("top_p", 0.5), ("top_k", 10)):
        assert (
            an_message(an(model=model, **{name: value}))
            == f"`{name}` is deprecated for this model."
        )
    assert an_message(an(model=model, output_config={"effort": "extreme"})) is not None


def test_anthropic_46_takes_both_and_unknown_is_accepted() -> None:
    for kind in ({"type": "adaptive"}, {"type": "enabled", "budget_tokens": 1024}):
        assert an_message(an(model="claude-sonnet-4-6", thinking=kind)) is None
    assert an_message(an(model="claude-next-experimental", temperature=0.3, top_p=0.3)) is None


# -- Gemini ---------------------------------------------------------------------------


def gm(**thinking: Any) -> dict[str, Any]:
    return {
        "contents": [{"parts": [{"text": "x"}]}],
        "generationConfig": {"thinkingConfig": thinking},
    }


def gm_message(model: str, request: dict[str, Any]) -> str | None:
    refusal = check_gemini(model, request)
    if refusal is None:
        return None
    assert refusal.status == 400
    assert refusal.body["error"]["code"] == 400
    assert refusal.body["error"]["status"] == "INVALID_ARGUMENT"
    return refusal.message


def test_gemini_25_budgets() -> None:
    assert gm_message("gemini-2.5-flash", gm(thinkingBudget=0)) is None
    assert gm_message("gemini-2.5-flash", gm(thinking_budget=-1)) is None
    assert gm_message("models/gemini-2.5-flash", gm(thinkingBudget=24576)) is None
    assert (
        gm_message("gemini-2.5-flash", gm(thinkingBudget=30000))
        == "The thinking budget (30000) is invalid."
    )
    assert gm_message("gemini-2.5-pro", gm(thinkingBudget=0)) == (
        "Budget 0 is invalid. This model only works in thinking mode."
    )
    assert (
        gm_message("gemini-2.5-pro", gm(thinkingBudget=64))
        == "The thinking budget (64) is invalid."
    )
    assert gm_message("gemini-2.5-flash-lite", gm(thinkingBudget=0)) is None
    for model in ("gemini-2.5-flash", "gemini-2.5-pro"):
        assert (
            gm_message(model, gm(thinkingLevel="LOW"))
            == "Thinking level is not supported for this model."
        )


def test_gemini_3_levels() -> None:
    for level in ("minimal", "LOW", "MEDIUM", "HIGH"):
        assert gm_message("gemini-3-flash-preview", gm(thinkingLevel=level)) is None
    assert gm_message("gemini-3-pro-preview", gm(thinkingLevel="HIGH")) is None
    assert gm_message("gemini-3-pro-preview", gm(thinkingLevel="MEDIUM")) == (
        "thinking_level MEDIUM is not supported by this model."
    )
    assert gm_message("gemini-3-pro-preview", gm(thinkingBudget=1024)) is None
    assert gm_message("gemini-3-flash-preview", gm(thinkingLevel="LOW", thinkingBudget=512)) == (
        "You can only set only one of thinking budget and thinking level."
    )
    assert gm_message("gemini-unknown", gm(thinkingLevel="LOW")) is None


# -- over HTTP: the sync endpoints answer the same bodies -----------------------------


async def test_sync_endpoints_answer_refusals_verbatim() -> None:
    async with ProviderEmulator(latency=0.01) as emu, aiohttp.ClientSession() as s:
        cases = [
            (
                f"{emu.base_url('openai')}/chat/completions",
                {"Authorization": "Bearer k"},
                {"model": "gpt-5-mini", "messages": MSG, "temperature": 0},
                check_openai(CHAT, {"model": "gpt-5-mini", "messages": MSG, "temperature": 0}),
            ),
            (
                f"{emu.base_url('anthropic')}/v1/messages",
                {"x-api-key": "k", "anthropic-version": "2023-06-01"},
                an(model="claude-opus-4-7", temperature=0),
                check_anthropic(an(model="claude-opus-4-7", temperature=0)),
            ),
            (
                f"{emu.base_url('gemini')}/v1/models/gemini-2.5-pro:generateContent",
                {"x-goog-api-key": "k"},
                gm(thinkingBudget=0),
                check_gemini("gemini-2.5-pro", gm(thinkingBudget=0)),
            ),
        ]
        for url, headers, body, expected in cases:
            assert expected is not None
            async with s.post(url, json=body, headers=headers) as r:
                assert r.status == 400
                got = await r.json()
            got.pop("request_id", None)
            expected.body.pop("request_id", None)
            assert got == expected.body
        for provider in ("openai", "anthropic", "gemini"):
            assert emu.stats.count(provider, "generate", 400) == 1
            assert emu.stats.batches_created[provider] == 0


async def test_unknown_models_refused_on_request() -> None:
    async with (
        ProviderEmulator(latency=0.01, unknown_models="refuse") as emu,
        aiohttp.ClientSession() as s,
    ):
        cases = [
            (
                f"{emu.base_url('openai')}/chat/completions",
                {"Authorization": "Bearer k"},
                {"model": "gpt-9-imaginary", "messages": MSG},
                {
                    "error": {
                        "message": "The model `gpt-9-imaginary` does not exist or you do not have access to it.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "model_not_found",
                    }
                },
            ),
            (
                f"{emu.base_url('anthropic')}/v1/messages",
                {"x-api-key": "k", "anthropic-version": "2023-06-01"},
                an(model="sonnet4"),
                {
                    "type": "error",
                    "error": {"type": "not_found_error", "message": "model: sonnet4"},
                },
            ),
            (
                f"{emu.base_url('gemini')}/v1/models/gemini-1.0-pro:generateContent",
                {"x-goog-api-key": "k"},
                gm(),
                {
                    "error": {
                        "code": 404,
                        "message": "models/gemini-1.0-pro is not found for API version v1, or is not "
                        "supported for generateContent. Call ListModels to see the list of available "
                        "models and their supported methods.",
                        "status": "NOT_FOUND",
                    }
                },
            ),
            (
                f"{emu.base_url('gemini')}/v1beta/models/gemini-1.0-pro:batchGenerateContent",
                {"x-goog-api-key": "k"},
                {"batch": {"input_config": {"requests": {"requests": [{"request": gm()}]}}}},
                None,
            ),
        ]
        for url, headers, body, expected in cases:
            async with s.post(url, json=body, headers=headers) as r:
                assert r.status == 404
                got = await r.json()
            got.pop("request_id", None)
            if expected is not None:
                assert got == expected
            else:
                assert got["error"]["status"] == "NOT_FOUND"
        # Known ids still pass.
        async with s.post(
            f"{emu.base_url('openai')}/chat/completions",
            json={"model": "gpt-4.1-mini", "messages": MSG},
            headers={"Authorization": "Bearer k"},
        ) as r:
            assert r.status == 200
