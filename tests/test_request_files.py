from __future__ import annotations

import re
from pathlib import Path

import orjson
import polars as pl
import pytest

from pairbatch.errors import InputError
from pairbatch.pairs import assign_custom_ids, load_pairs, with_pair_keys
from pairbatch.prompts import DEFAULT_TEMPLATE, build_prompt
from pairbatch.providers import get_backend
from pairbatch.providers.base import write_request_file


@pytest.fixture
def segment() -> pl.DataFrame:
    pairs = pl.DataFrame(
        {
            "ID1": ["a_vs_b", "ü"],
            "text1": ["first text", 'ünïcødé "quoted"\nnew line'],
            "ID2": ["c d", "x:y"],
            "text2": ["second", "{SAMPLE_1}"],
        }
    )
    return assign_custom_ids(with_pair_keys(load_pairs(pairs)), "pbtest", 1, 0)


def write(
    provider: str, model: str, segment: pl.DataFrame, tmp_path: Path, **options: object
) -> list[dict]:
    backend = get_backend(provider)
    prepared = backend.prepare_options(model, options)
    path = tmp_path / f"{provider}.jsonl"
    size = write_request_file(
        backend,
        path,
        segment,
        model=model,
        template=DEFAULT_TEMPLATE,
        trait_name="Quality",
        trait_description="How good",
        options=prepared,
    )
    assert size == path.stat().st_size
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == segment.height
    return [orjson.loads(line) for line in raw.splitlines()]


def expected_prompt(segment: pl.DataFrame, i: int) -> str:
    return build_prompt(
        DEFAULT_TEMPLATE, "Quality", "How good", segment["text1"][i], segment["text2"][i]
    )


def test_openai_chat_lines(segment: pl.DataFrame, tmp_path: Path) -> None:
    lines = write("openai", "gpt-4.1", segment, tmp_path)
    for i, line in enumerate(lines):
        assert set(line) == {"custom_id", "method", "url", "body"}
        assert line["custom_id"] == segment["custom_id"][i]
        assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
        assert line["body"] == {
            "model": "gpt-4.1",
            "messages": [{"role": "user", "content": expected_prompt(segment, i)}],
            "temperature": 0.0,
        }


def test_openai_responses_with_reasoning(segment: pl.DataFrame, tmp_path: Path) -> None:
    lines = write("openai", "gpt-5.1-mini", segment, tmp_path, include_thoughts=True)
    body = lines[0]["body"]
    assert lines[0]["url"] == "/v1/responses"
    assert body["input"] == expected_prompt(segment, 0)
    assert body["reasoning"] == {"effort": "low", "summary": "auto"}
    assert "temperature" not in body
    lines = write("openai", "gpt-5.1", segment, tmp_path, reasoning="none", include_thoughts=True)
    assert lines[0]["body"]["reasoning"] == {"effort": "none", "summary": "auto"}
    assert lines[0]["body"]["temperature"] == 0.0


def test_openai_option_errors() -> None:
    backend = get_backend("openai")
    with pytest.raises(InputError, match="unknown option.*max_tokens"):
        backend.prepare_options("gpt-4.1", {"max_tokens": 5})
    with pytest.raises(InputError, match="temperature, top_p and logprobs must be unset"):
        backend.prepare_options("gpt-5.1", {"reasoning": "high", "temperature": 0.5})
    with pytest.raises(InputError, match="endpoint"):
        backend.prepare_options("gpt-4.1", {"endpoint": "embeddings"})


def test_anthropic_lines(segment: pl.DataFrame, tmp_path: Path) -> None:
    # Sonnet 4.5 refuses temperature and top_p together ("`temperature` and `top_p`
    # cannot both be specified for this model"), so an explicit top_p replaces the
    # default temperature of 0.
    lines = write("anthropic", "claude-sonnet-4-5", segment, tmp_path)
    assert lines[0]["params"]["temperature"] == 0.0 and "top_p" not in lines[0]["params"]
    lines = write("anthropic", "claude-sonnet-4-5", segment, tmp_path, top_p=0.9)
    for i, line in enumerate(lines):
        assert set(line) == {"custom_id", "params"}
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", line["custom_id"])
        params = line["params"]
        assert params == {
            "model": "claude-sonnet-4-5",
            "max_tokens": 768,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": expected_prompt(segment, i)}]}
            ],
            "top_p": 0.9,
        }
        assert "system" not in params


def test_anthropic_thinking(segment: pl.DataFrame, tmp_path: Path) -> None:
    lines = write("anthropic", "claude-sonnet-4-5", segment, tmp_path, include_thoughts=True)
    params = lines[0]["params"]
    assert params["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert params["temperature"] == 1.0 and params["max_tokens"] == 2048
    backend = get_backend("anthropic")
    with pytest.raises(InputError, match="temperature.*must be 1"):
        backend.prepare_options("claude-sonnet-4-5", {"reasoning": "enabled", "temperature": 0})
    with pytest.raises(InputError, match="at least 1024"):
        backend.prepare_options(
            "claude-sonnet-4-5", {"reasoning": "enabled", "thinking_budget_tokens": 10}
        )
    with pytest.raises(InputError, match="smaller than 'max_tokens'"):
        backend.prepare_options(
            "claude-sonnet-4-5",
            {"reasoning": "enabled", "thinking_budget_tokens": 4096, "max_tokens": 2048},
        )


def test_gemini_lines(segment: pl.DataFrame, tmp_path: Path) -> None:
    lines = write(
        "gemini",
        "gemini-2.5-flash",
        segment,
        tmp_path,
        include_thoughts=True,
        temperature=0.0,
        top_k=3,
    )
    for i, line in enumerate(lines):
        assert set(line) == {"key", "request"}
        assert line["key"] == segment["custom_id"][i]
        assert line["request"] == {
            "contents": [{"role": "user", "parts": [{"text": expected_prompt(segment, i)}]}],
            "generationConfig": {
                "temperature": 0.0,
                "topK": 3,
                "thinkingConfig": {"includeThoughts": True},
            },
        }


def test_gemini_3_thinking_level(segment: pl.DataFrame, tmp_path: Path) -> None:
    lines = write("gemini", "gemini-3-pro-preview", segment, tmp_path)
    assert lines[0]["request"]["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "LOW"}
    backend = get_backend("gemini")
    assert (
        backend.prepare_options("gemini-3-pro", {"thinking_level": "medium"})["thinking_level"]
        == "HIGH"
    )
    with pytest.raises(InputError, match="Flash"):
        backend.prepare_options("gemini-3-pro", {"thinking_level": "minimal"})
    assert (
        backend.prepare_options("gemini-3-flash-preview", {"thinking_level": "minimal"})[
            "thinking_level"
        ]
        == "MINIMAL"
    )
    with pytest.raises(InputError, match="thinking_budget"):
        backend.prepare_options("gemini-3-pro", {"thinking_budget": 100})


def test_unknown_provider() -> None:
    with pytest.raises(ValueError, match="should be one of"):
        get_backend("mistral")
