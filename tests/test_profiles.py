"""Model profiles: each family's request shape, refused options, matching and limits.

The rules under test come from the sources named in ``pairbatch/providers/*_profiles.py``
(the official SDKs' types and the providers' documented 400 errors).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from pairbatch.errors import InputError
from pairbatch.providers import anthropic_profiles, gemini_profiles, get_backend, openai_profiles
from pairbatch.providers.anthropic_profiles import AnthropicProfile
from pairbatch.providers.openai_profiles import OpenAIProfile
from pairbatch.providers.profiles import BatchLimits

PROMPT = "Which is better? <BETTER_SAMPLE>SAMPLE_1</BETTER_SAMPLE>"


def line(provider: str, model: str, **options: Any) -> dict[str, Any]:
    backend = get_backend(provider)
    prepared = backend.prepare_options(model, options)
    json.dumps(prepared)  # stored in run_settings.json: must stay JSON-serialisable
    return backend.request_line("pb-1-0", PROMPT, model, prepared)


def refused(provider: str, model: str, option: str, **options: Any) -> None:
    """The option is refused with an InputError that names the option and the model."""
    with pytest.raises(InputError) as caught:
        get_backend(provider).prepare_options(model, options)
    message = str(caught.value)
    assert repr(option) in message or option in message, message
    assert model in message, message


# ---------------------------------------------------------------- OpenAI

SAMPLING = {"temperature": 0.0, "top_p": 0.5, "logprobs": True}


def test_openai_chat_model_defaults() -> None:
    got = line("openai", "gpt-4.1-mini")
    assert got["url"] == "/v1/chat/completions"
    assert got["body"]["temperature"] == 0.0 and "reasoning" not in got["body"]
    got = line("openai", "gpt-4.1-mini", top_p=0.5, logprobs=True, temperature=0.3)
    assert got["body"]["top_p"] == 0.5 and got["body"]["logprobs"] is True
    refused("openai", "gpt-4.1-mini", "logprobs", logprobs=True, endpoint="responses")
    refused("openai", "gpt-4.1-mini", "reasoning", reasoning="low")
    refused("openai", "gpt-4.1-mini", "include_thoughts", include_thoughts=True)


@pytest.mark.parametrize(
    "model", ["gpt-5-mini", "gpt-5-nano", "gpt-5", "gpt-5-mini-2025-08-07", "o4-mini", "o3"]
)
def test_openai_reasoning_models_send_no_sampling(model: str) -> None:
    body = line("openai", model)["body"]
    assert set(body) == {"model", "messages"}  # nothing the model could refuse
    for name, value in SAMPLING.items():
        refused("openai", model, name, **{name: value})
    # the only temperature such a model takes is the default; it is then left out
    assert "temperature" not in line("openai", model, temperature=1)["body"]
    got = line("openai", model, include_thoughts=True)
    assert got["url"] == "/v1/responses"
    assert got["body"]["reasoning"] == {"effort": "low", "summary": "auto"}
    assert "temperature" not in got["body"]


@pytest.mark.parametrize("effort", ["minimal", "low", "medium", "high"])
def test_gpt5_each_effort(effort: str) -> None:
    got = line("openai", "gpt-5", reasoning=effort)
    assert got["url"] == "/v1/responses" and got["body"]["reasoning"] == {"effort": effort}
    assert "temperature" not in got["body"]
    refused("openai", "gpt-5", "temperature", reasoning=effort, temperature=0.2)


@pytest.mark.parametrize("effort", ["none", "xhigh"])
def test_gpt5_refused_efforts(effort: str) -> None:
    refused("openai", "gpt-5", "reasoning", reasoning=effort)
    refused("openai", "gpt-5-mini", "reasoning", reasoning=effort)


def test_o_series_efforts() -> None:
    assert line("openai", "o4-mini", reasoning="high")["body"]["reasoning"] == {"effort": "high"}
    refused("openai", "o4-mini", "reasoning", reasoning="minimal")
    refused("openai", "o3-2025-04-16", "reasoning", reasoning="none")


def test_gpt51_and_later() -> None:
    # effort none: sampling allowed (the default temperature 0 is sent)
    got = line("openai", "gpt-5.1", reasoning="none", temperature=0.4)
    assert got["body"]["temperature"] == 0.4
    refused("openai", "gpt-5.1", "reasoning", reasoning="minimal")
    refused("openai", "gpt-5.1", "reasoning", reasoning="xhigh")
    refused("openai", "gpt-5.1", "temperature", reasoning="low", temperature=0.4)
    # no effort given: the model reasons at its default, so no sampling by default
    assert "temperature" not in line("openai", "gpt-5.1")["body"]
    # newer, date-stamped names land on their family
    for model in ("gpt-5.2", "gpt-5.2-mini-2026-01-15", "gpt-5.4-nano", "gpt-5.5-2026-04-23"):
        assert openai_profiles.profile_for(model).name == "gpt-5.2"
        assert line("openai", model, reasoning="xhigh")["body"]["reasoning"]["effort"] == "xhigh"
        refused("openai", model, "reasoning", reasoning="minimal")


def test_gpt5_pro_only_high_on_responses() -> None:
    got = line("openai", "gpt-5-pro")
    assert got["url"] == "/v1/responses"
    assert line("openai", "gpt-5-pro", reasoning="high")["body"]["reasoning"]["effort"] == "high"
    refused("openai", "gpt-5-pro", "reasoning", reasoning="low")
    refused("openai", "gpt-5-pro", "endpoint", endpoint="chat.completions")


def test_openai_unknown_model_is_conservative_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    backend = get_backend("openai")
    with caplog.at_level(logging.WARNING, logger="pairbatch.providers.profiles"):
        prepared = backend.prepare_options("gpt-7-turbo-test", {})
        # Every line of the submit reuses the prepared options: no warning per line.
        body = backend.request_line("pb-1-0", PROMPT, "gpt-7-turbo-test", prepared)["body"]
        backend.request_line("pb-1-1", PROMPT, "gpt-7-turbo-test", prepared)
    assert set(body) == {"model", "messages"}
    warnings = [r for r in caplog.records if "gpt-7-turbo-test" in r.getMessage()]
    assert len(warnings) == 1 and "conservative" in warnings[0].getMessage()
    refused("openai", "gpt-7-turbo-test", "temperature", temperature=0.0)


def test_openai_profile_override() -> None:
    # a fine-tune of a chat model: name it as such
    got = line("openai", "ft:my-judge-model", profile="gpt-4")
    assert got["body"]["temperature"] == 0.0
    # a model id also names its family
    assert "temperature" not in line("openai", "ft:my-judge-model", profile="gpt-5-mini")["body"]
    custom = OpenAIProfile("house", efforts=frozenset({"high"}), sampling=False)
    got = line("openai", "house-model", profile=custom, reasoning="high")
    assert got["body"]["reasoning"] == {"effort": "high"}
    with pytest.raises(InputError, match="profile.*unknown family"):
        get_backend("openai").prepare_options("x", {"profile": "no-such-family"})
    with pytest.raises(InputError, match="profile"):
        get_backend("openai").prepare_options("x", {"profile": 3})


def test_openai_metadata_limits() -> None:
    backend = get_backend("openai")
    backend.prepare_options("gpt-4.1", {"metadata": {f"k{i}": "v" for i in range(14)}})
    with pytest.raises(InputError, match="at most 16 keys"):
        backend.prepare_options("gpt-4.1", {"metadata": {f"k{i}": "v" for i in range(15)}})
    with pytest.raises(InputError, match="longer than 64"):
        backend.prepare_options("gpt-4.1", {"metadata": {"k" * 65: "v"}})
    with pytest.raises(InputError, match="longer than 512"):
        backend.prepare_options("gpt-4.1", {"metadata": {"k": "v" * 513}})


# ---------------------------------------------------------------- Anthropic


@pytest.mark.parametrize(
    "model",
    ["claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "claude-haiku-4-5", "claude-opus-4-5"],
)
def test_claude_45_family(model: str) -> None:
    assert anthropic_profiles.profile_for(model).name == "claude-4-5"
    params = line("anthropic", model)["params"]
    assert params["temperature"] == 0.0 and params["max_tokens"] == 768
    assert "thinking" not in params and "top_p" not in params
    # temperature and top_p cannot both be specified for these models
    refused("anthropic", model, "top_p", temperature=0.2, top_p=0.9)
    params = line("anthropic", model, include_thoughts=True)["params"]
    assert params["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert params["temperature"] == 1.0
    assert (
        "temperature" not in line("anthropic", model, include_thoughts=True, top_p=0.97)["params"]
    )
    refused("anthropic", model, "reasoning", reasoning="adaptive")
    refused("anthropic", model, "effort", effort="high")
    refused("anthropic", model, "top_k", include_thoughts=True, top_k=5)
    refused("anthropic", model, "top_p", include_thoughts=True, top_p=0.5)


@pytest.mark.parametrize(
    "model", ["claude-opus-4-7", "claude-opus-4-8", "claude-opus-4-7-20260416", "claude-opus-5"]
)
def test_claude_adaptive_only(model: str) -> None:
    assert anthropic_profiles.profile_for(model).name == "claude-opus-4-7"
    params = line("anthropic", model)["params"]
    assert not {"temperature", "top_p", "top_k", "thinking"} & set(params)
    for name, value in (("temperature", 0.0), ("top_p", 0.9), ("top_k", 5)):
        refused("anthropic", model, name, **{name: value})
    params = line("anthropic", model, include_thoughts=True, effort="xhigh")["params"]
    # thinking text is hidden by default on these models: ask for the summary
    assert params["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert params["output_config"] == {"effort": "xhigh"} and params["max_tokens"] == 4096
    assert "temperature" not in params and "budget_tokens" not in json.dumps(params)
    refused("anthropic", model, "reasoning", reasoning="enabled")
    refused("anthropic", model, "thinking_budget_tokens", thinking_budget_tokens=2048)
    refused("anthropic", model, "effort", effort="extreme")


@pytest.mark.parametrize("model", ["claude-opus-4-6", "claude-sonnet-4-6"])
def test_claude_46_takes_both_forms(model: str) -> None:
    params = line("anthropic", model, include_thoughts=True)["params"]
    assert params["thinking"] == {"type": "adaptive"}
    params = line("anthropic", model, reasoning="enabled", thinking_budget_tokens=2000)["params"]
    assert params["thinking"] == {"type": "enabled", "budget_tokens": 2000}
    assert line("anthropic", model, effort="max")["params"]["output_config"] == {"effort": "max"}
    refused("anthropic", model, "effort", effort="xhigh")
    refused("anthropic", model, "top_p", temperature=0.5, top_p=0.5)


def test_claude_older_families() -> None:
    assert anthropic_profiles.profile_for("claude-3-7-sonnet-20250219").name == "claude-4"
    params = line("anthropic", "claude-3-7-sonnet-20250219", temperature=0.2, top_p=0.9)
    assert params["params"]["temperature"] == 0.2 and params["params"]["top_p"] == 0.9
    assert anthropic_profiles.profile_for("claude-3-5-haiku-20241022").name == "claude-3"
    refused("anthropic", "claude-3-5-haiku-20241022", "include_thoughts", include_thoughts=True)


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("claude-sonnet-4-20250514", "claude-4"),
        ("claude-opus-4-1-20250805", "claude-4-5"),
        ("claude-3-5-sonnet-20241022", "claude-3"),
        ("claude-3-haiku-20240307", "claude-3"),
        ("anthropic.claude-opus-4-6-v1", "claude-4-6"),
        ("claude-opus-4-6@20260101", "claude-4-6"),
        ("claude-sonnet-5", "claude-opus-4-7"),
        ("claude-mythos-preview", "claude-opus-4-7"),
    ],
)
def test_claude_ids_find_their_family(model: str, family: str) -> None:
    assert anthropic_profiles.profile_for(model).name == family


def test_claude_unknown_model(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pairbatch.providers.profiles"):
        params = line("anthropic", "claude-nova-test")["params"]
    assert "temperature" not in params
    assert any("claude-nova-test" in r.getMessage() for r in caplog.records)
    # an override picks the family
    assert line("anthropic", "claude-nova-test", profile="claude-4-5")["params"]["temperature"] == 0
    own = AnthropicProfile("mine", sampling=True, thinking=frozenset())
    assert line("anthropic", "claude-nova-test", profile=own, top_k=3)["params"]["top_k"] == 3


# ---------------------------------------------------------------- Gemini


def config(model: str, **options: Any) -> dict[str, Any]:
    request = line("gemini", model, **options)["request"]
    return dict(request.get("generationConfig") or {})


def test_gemini_25_budgets() -> None:
    assert "thinkingConfig" not in config("gemini-2.5-flash")
    assert config("gemini-2.5-flash", thinking_budget=0)["thinkingConfig"] == {"thinkingBudget": 0}
    assert config("gemini-2.5-flash", thinking_budget=-1)["thinkingConfig"] == {
        "thinkingBudget": -1
    }
    refused("gemini", "gemini-2.5-flash", "thinking_budget", thinking_budget=30000)
    refused("gemini", "gemini-2.5-pro", "thinking_budget", thinking_budget=0)
    refused("gemini", "gemini-2.5-flash-lite", "thinking_budget", thinking_budget=100)
    refused("gemini", "gemini-2.5-flash", "thinking_level", thinking_level="low")
    got = config("gemini-2.5-flash", include_thoughts=True, temperature=0.0)
    assert got == {"temperature": 0.0, "thinkingConfig": {"includeThoughts": True}}


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gemini-3-pro-preview", "gemini-3-pro"),
        ("gemini-3.1-pro-preview", "gemini-3-pro"),
        ("gemini-3-flash-preview", "gemini-3-flash"),
        ("gemini-3.5-flash", "gemini-3-flash"),
        ("gemini-3.1-flash-lite", "gemini-3-flash"),
    ],
)
def test_gemini_3_levels(model: str, family: str) -> None:
    assert gemini_profiles.profile_for(model).name == family
    assert config(model)["thinkingConfig"] == {"thinkingLevel": "LOW"}
    assert config(model, thinking_level="high", include_thoughts=True)["thinkingConfig"] == {
        "includeThoughts": True,
        "thinkingLevel": "HIGH",
    }
    refused("gemini", model, "thinking_budget", thinking_budget=1024)
    if family == "gemini-3-pro":
        refused("gemini", model, "thinking_level", thinking_level="minimal")
    else:
        assert config(model, thinking_level="minimal")["thinkingConfig"]["thinkingLevel"] == (
            "MINIMAL"
        )


def test_gemini_model_prefix_and_versions() -> None:
    prepared = get_backend("gemini").prepare_options("models/gemini-2.5-flash", {})
    assert prepared["model"] == "gemini-2.5-flash" and prepared["api_version"] == "v1beta"
    assert gemini_profiles.profile_for("models/gemini-3-pro-preview").name == "gemini-3-pro"
    assert get_backend("gemini").prepare_options("gemini-2.5-flash", {"api_version": "v1"})[
        "api_version"
    ] == ("v1")
    with pytest.raises(InputError, match="api_version"):
        get_backend("gemini").prepare_options("gemini-2.5-flash", {"api_version": "v2"})
    refused("gemini", "gemini-2.0-flash", "include_thoughts", include_thoughts=True)


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("provider", "requests", "size"),
    [("openai", 50_000, 200_000_000), ("anthropic", 100_000, 256_000_000)],
)
def test_batch_limits(provider: str, requests: int, size: int) -> None:
    backend = get_backend(provider)
    assert isinstance(backend.limits, BatchLimits)
    assert backend.limits.max_requests == requests and backend.limits.max_bytes == size
    backend.check_limits(requests, size)
    with pytest.raises(InputError, match="max_requests"):
        backend.check_limits(requests + 1, 10)
    with pytest.raises(InputError, match="max_bytes"):
        backend.check_limits(10, size + 1)


def test_gemini_limits() -> None:
    from pairbatch.providers import gemini

    limits = get_backend("gemini").limits
    assert limits.inline_max_bytes == 20_000_000 and limits.max_bytes == 2_000_000_000
    gemini.check_limits(1_000_000, 1_000)
    with pytest.raises(InputError, match="max_bytes"):
        gemini.check_limits(1, 2_000_000_001)
    assert openai_profiles.LIMITS.metadata_max_keys == 16
