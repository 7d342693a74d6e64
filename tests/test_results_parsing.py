"""Parsing provider results files into the typed result frame (``RESULT_SCHEMA``).

Every provider and body kind the wire spec documents (provider-wire-spec §1.8, §2.5,
§3.3-3.4), the reference fixes W9-W11, W12 (per-line errors, ``thought`` flag) and W14
(last tag wins), and the robustness rules of ``pairbatch.results``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from pairbatch.errors import InputError
from pairbatch.providers.anthropic import BACKEND as ANTHROPIC
from pairbatch.providers.gemini import BACKEND as GEMINI
from pairbatch.providers.openai import BACKEND as OPENAI
from pairbatch.results import RESULT_SCHEMA, find_winner, int_or_none
from pairbatch.testing.bodies import (
    Answer,
    anthropic_message,
    chat_completion,
    gemini_response,
    response_object,
)

S1 = "<BETTER_SAMPLE>SAMPLE_1</BETTER_SAMPLE>"
S2 = "<BETTER_SAMPLE>SAMPLE_2</BETTER_SAMPLE>"
BACKENDS = {"openai": OPENAI, "anthropic": ANTHROPIC, "gemini": GEMINI}


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    """Dicts are dumped with orjson; ``str``/``bytes`` lines are written verbatim."""
    with path.open("wb") as handle:
        for line in lines:
            if isinstance(line, bytes):
                handle.write(line)
            elif isinstance(line, str):
                handle.write(line.encode())
            else:
                handle.write(orjson.dumps(line))
            handle.write(b"\n")
    return path


def parse(backend: Any, tmp_path: Path, lines: list[Any], **kwargs: Any) -> pl.DataFrame:
    frame = backend.parse_results(write_jsonl(tmp_path / "out.jsonl", lines), **kwargs)
    assert frame.schema == pl.Schema(RESULT_SCHEMA)
    return frame


def one(frame: pl.DataFrame) -> dict[str, Any]:
    assert frame.height == 1
    return frame.row(0, named=True)


def assert_no_empty_strings(frame: pl.DataFrame) -> None:
    for name, dtype in frame.schema.items():
        if dtype == pl.Utf8:
            assert (frame.get_column(name) == "").sum() == 0, name


# ---------------------------------------------------------------- OpenAI


def openai_line(custom_id: str, body: dict[str, Any] | None, status: int = 200, error: Any = None):
    response = (
        None if body is None else {"status_code": status, "request_id": "req_1", "body": body}
    )
    return {"id": "batch_req_1", "custom_id": custom_id, "response": response, "error": error}


CHAT_BODY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1711475054,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": f"Reasoning... {S2}", "refusal": None},
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 0},
    },
    "system_fingerprint": None,
}


def responses_body(summary: str | None) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if summary is not None:
        output.append(
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": summary}],
            }
        )
    output.append(
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": S1, "annotations": []}],
        }
    )
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1760000000,
        "status": "completed",
        "model": "gpt-5-mini-2025-08-07",
        "output": output,
        "usage": {
            "input_tokens": 50,
            "input_tokens_details": {"cached_tokens": 8},
            "output_tokens": 10,
            "output_tokens_details": {"reasoning_tokens": 4},
            "total_tokens": 60,
        },
    }


def test_openai_chat_completion(tmp_path: Path) -> None:
    row = one(parse(OPENAI, tmp_path, [openai_line("k1", CHAT_BODY)]))
    assert row == {
        "custom_id": "k1",
        "model": "gpt-4o-mini-2024-07-18",
        "object_type": "chat.completion",
        "status_code": 200,
        "result_type": "succeeded",
        "error_message": None,
        "thoughts": None,
        "content": f"Reasoning... {S2}",
        "better_sample": "SAMPLE_2",
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_cached_tokens": 64,
        "reasoning_tokens": 12,
    }


def test_openai_chat_completion_minimal_usage_gives_nulls(tmp_path: Path) -> None:
    body = dict(CHAT_BODY, usage={"prompt_tokens": 24, "completion_tokens": 15, "total_tokens": 39})
    row = one(parse(OPENAI, tmp_path, [openai_line("k1", body)]))
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (24, 15, 39)
    assert row["prompt_cached_tokens"] is None
    assert row["reasoning_tokens"] is None


def test_openai_chat_completion_empty_content_is_null(tmp_path: Path) -> None:
    body = dict(CHAT_BODY, choices=[{"index": 0, "message": {"role": "assistant", "content": ""}}])
    row = one(parse(OPENAI, tmp_path, [openai_line("k1", body)]))
    assert row["content"] is None
    assert row["better_sample"] is None
    assert row["result_type"] == "succeeded"


@pytest.mark.parametrize("summary", [None, "I compared clarity and structure."])
def test_openai_responses(tmp_path: Path, summary: str | None) -> None:
    row = one(parse(OPENAI, tmp_path, [openai_line("LIVE_A_vs_B", responses_body(summary))]))
    assert row == {
        "custom_id": "LIVE_A_vs_B",
        "model": "gpt-5-mini-2025-08-07",
        "object_type": "response",
        "status_code": 200,
        "result_type": "succeeded",
        "error_message": None,
        "thoughts": summary,
        "content": S1,
        "better_sample": "SAMPLE_1",
        "prompt_tokens": 50,
        "completion_tokens": 10,
        "total_tokens": 60,
        "prompt_cached_tokens": 8,
        "reasoning_tokens": 4,
    }


def test_openai_responses_reasoning_with_empty_summary(tmp_path: Path) -> None:
    body = responses_body(None)
    body["output"].insert(0, {"type": "reasoning", "id": "rs_1", "summary": []})
    row = one(parse(OPENAI, tmp_path, [openai_line("k", body)]))
    assert row["thoughts"] is None
    assert row["better_sample"] == "SAMPLE_1"


def test_openai_emulator_bodies(tmp_path: Path) -> None:
    """The emulator's bodies (what the fake server returns) parse as the real ones do."""
    answer = Answer(
        content=S2,
        thoughts="Thinking it over.",
        prompt_tokens=40,
        output_tokens=9,
        reasoning_tokens=7,
    )
    chat = chat_completion({"model": "gpt-4o-mini"}, answer, ident="a", created=1)
    resp = response_object({"model": "gpt-5-mini"}, answer, ident="b", created=1, reasoning=True)
    frame = parse(OPENAI, tmp_path, [openai_line("a", chat), openai_line("b", resp)])
    assert frame.get_column("better_sample").to_list() == ["SAMPLE_2", "SAMPLE_2"]
    assert frame.get_column("completion_tokens").to_list() == [16, 16]
    assert frame.get_column("reasoning_tokens").to_list() == [7, 7]
    assert frame.get_column("thoughts").to_list() == [None, "Thinking it over."]
    assert frame.get_column("object_type").to_list() == ["chat.completion", "response"]


def test_openai_error_file_non_2xx(tmp_path: Path) -> None:
    body = {
        "error": {
            "message": "This model's maximum context length is 128000 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    out = write_jsonl(tmp_path / "out.jsonl", [openai_line("ok", CHAT_BODY)])
    err = write_jsonl(tmp_path / "err.jsonl", [openai_line("bad", body, status=400)])
    frame = OPENAI.parse_results(out, error_path=err)
    assert frame.get_column("custom_id").to_list() == ["ok", "bad"]
    row = frame.row(1, named=True)
    assert row["status_code"] == 400
    assert row["result_type"] == "errored"
    assert row["error_message"] == "This model's maximum context length is 128000 tokens."
    assert row["content"] is None and row["better_sample"] is None
    assert row["model"] is None


@pytest.mark.parametrize(
    ("code", "result_type"),
    [("batch_expired", "expired"), ("batch_cancelled", "canceled"), ("request_timeout", "errored")],
)
def test_openai_error_file_no_response(tmp_path: Path, code: str, result_type: str) -> None:
    line = {
        "id": "batch_req_9",
        "custom_id": "r9",
        "response": None,
        "error": {"code": code, "message": f"{code} happened"},
    }
    row = one(parse(OPENAI, tmp_path, [line]))
    assert row["custom_id"] == "r9"
    assert row["result_type"] == result_type
    assert row["error_message"] == f"{code} happened"
    assert row["status_code"] is None


def test_openai_error_without_message_falls_back_to_code(tmp_path: Path) -> None:
    line = {
        "custom_id": "r9",
        "response": None,
        "error": {"code": "batch_expired", "message": None},
    }
    row = one(parse(OPENAI, tmp_path, [line]))
    assert (row["result_type"], row["error_message"]) == ("expired", "batch_expired")


def test_openai_non_2xx_without_error_body(tmp_path: Path) -> None:
    row = one(parse(OPENAI, tmp_path, [openai_line("k", CHAT_BODY, status=500)]))
    assert row["status_code"] == 500
    assert row["result_type"] == "errored"


def test_openai_line_without_body(tmp_path: Path) -> None:
    lines = [{"custom_id": "k1", "response": None, "error": None}, {"custom_id": "k2"}]
    frame = parse(OPENAI, tmp_path, lines)
    assert frame.get_column("custom_id").to_list() == ["k1", "k2"]
    assert frame.get_column("result_type").to_list() == ["errored", "errored"]
    assert frame.get_column("error_message").to_list() == ["result line has no response body"] * 2


def test_openai_unknown_object_type(tmp_path: Path) -> None:
    body = {"object": "embedding", "model": "text-embedding-3-small", "data": []}
    row = one(parse(OPENAI, tmp_path, [openai_line("k", body)]))
    assert row["object_type"] == "embedding"
    assert row["error_message"] == "unknown response object type 'embedding'"
    assert row["content"] is None and row["better_sample"] is None


# ---------------------------------------------------------------- Anthropic


def anthropic_succeeded(custom_id: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "result": {
            "type": "succeeded",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-haiku-4-5-20251001",
                "content": content,
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 16,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 3,
                    "output_tokens": 5,
                    "service_tier": "batch",
                },
            },
        },
    }


def test_anthropic_thinking_and_text(tmp_path: Path) -> None:
    content = [
        {"type": "thinking", "thinking": "Sample 2 is clearer.", "signature": "sig"},
        {"type": "redacted_thinking", "data": "xxx"},
        {"type": "text", "text": f"Verdict: {S2}"},
    ]
    row = one(parse(ANTHROPIC, tmp_path, [anthropic_succeeded("a", content)]))
    assert row == {
        "custom_id": "a",
        "model": "claude-haiku-4-5-20251001",
        "object_type": "message",
        "status_code": 200,
        "result_type": "succeeded",
        "error_message": None,
        "thoughts": "Sample 2 is clearer.",
        "content": f"Verdict: {S2}",
        "better_sample": "SAMPLE_2",
        "prompt_tokens": 16,
        "completion_tokens": 5,
        "total_tokens": 21,
        "prompt_cached_tokens": 3,
        "reasoning_tokens": None,
    }


def test_anthropic_text_only(tmp_path: Path) -> None:
    answer = Answer(
        content=S1, thoughts=None, prompt_tokens=10, output_tokens=4, reasoning_tokens=0
    )
    line = {
        "custom_id": "a",
        "result": {"type": "succeeded", "message": anthropic_message({}, answer, ident="x")},
    }
    row = one(parse(ANTHROPIC, tmp_path, [line]))
    assert row["thoughts"] is None
    assert row["content"] == S1
    assert row["better_sample"] == "SAMPLE_1"
    assert row["total_tokens"] == 14


def test_anthropic_errored_nested_and_flat(tmp_path: Path) -> None:
    nested = {
        "custom_id": "b",
        "result": {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "max_tokens: 100000 > 64000",
                    "details": {"error_visibility": "user_facing"},
                },
                "request_id": None,
            },
        },
    }
    flat = {
        "custom_id": "c",
        "result": {
            "type": "errored",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
        },
    }
    frame = parse(ANTHROPIC, tmp_path, [nested, flat])
    assert frame.get_column("custom_id").to_list() == ["b", "c"]
    assert frame.get_column("result_type").to_list() == ["errored", "errored"]
    assert frame.get_column("error_message").to_list() == [
        "max_tokens: 100000 > 64000",
        "Overloaded",
    ]
    assert frame.get_column("status_code").to_list() == [None, None]
    assert frame.get_column("better_sample").to_list() == [None, None]


@pytest.mark.parametrize("kind", ["canceled", "expired"])
def test_anthropic_canceled_expired(tmp_path: Path, kind: str) -> None:
    row = one(parse(ANTHROPIC, tmp_path, [{"custom_id": "d", "result": {"type": kind}}]))
    assert row["custom_id"] == "d"
    assert row["result_type"] == kind
    assert row["error_message"] == f"request {kind}"
    assert row["content"] is None and row["thoughts"] is None


def test_anthropic_line_without_result(tmp_path: Path) -> None:
    row = one(parse(ANTHROPIC, tmp_path, [{"custom_id": "e"}]))
    assert (row["custom_id"], row["result_type"]) == ("e", "errored")
    assert row["error_message"] == "result line has no result"


# ---------------------------------------------------------------- Gemini


def test_gemini_thought_parts_vs_answer(tmp_path: Path) -> None:
    line = {
        "key": "req_1",
        "response": {
            "candidates": [
                {
                    "content": {
                        "parts": [
                            {"text": "Let me think. ", "thought": True},
                            {
                                "text": "I mention <BETTER_SAMPLE>SAMPLE_2</BETTER_SAMPLE>?",
                                "thought": True,
                            },
                            {"text": f"Answer: {S1}"},
                        ],
                        "role": "model",
                    },
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 5,
                "candidatesTokenCount": 1373,
                "totalTokenCount": 2960,
                "thoughtsTokenCount": 1582,
                "cachedContentTokenCount": 2,
            },
            "modelVersion": "gemini-2.5-flash",
            "responseId": "rrs5",
        },
    }
    row = one(parse(GEMINI, tmp_path, [line]))
    assert row == {
        "custom_id": "req_1",
        "model": "gemini-2.5-flash",
        "object_type": "generateContent",
        "status_code": 200,
        "result_type": "succeeded",
        "error_message": None,
        "thoughts": "Let me think. I mention <BETTER_SAMPLE>SAMPLE_2</BETTER_SAMPLE>?",
        "content": f"Answer: {S1}",
        # the tag in a thought part is not the verdict
        "better_sample": "SAMPLE_1",
        "prompt_tokens": 5,
        "completion_tokens": 1373,  # candidatesTokenCount only; thoughts are reasoning_tokens
        "total_tokens": 2960,
        "prompt_cached_tokens": 2,
        "reasoning_tokens": 1582,
    }


def test_gemini_emulator_body_and_metadata_key(tmp_path: Path) -> None:
    answer = Answer(
        content=S2, thoughts=None, prompt_tokens=10, output_tokens=4, reasoning_tokens=0
    )
    line = {
        "metadata": {"key": "inline-1"},
        "response": gemini_response("gemini-2.5-pro", answer, ident="r"),
    }
    row = one(parse(GEMINI, tmp_path, [line]))
    assert row["custom_id"] == "inline-1"
    assert row["better_sample"] == "SAMPLE_2"
    assert row["completion_tokens"] == 4  # no thoughtsTokenCount: candidates only
    assert row["reasoning_tokens"] is None
    assert row["thoughts"] is None


def test_gemini_per_line_error(tmp_path: Path) -> None:
    line = {
        "key": "req_2",
        "error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"},
    }
    row = one(parse(GEMINI, tmp_path, [line]))
    assert row["result_type"] == "errored"  # the reference called these "succeeded" (W12)
    assert row["status_code"] == 429
    assert row["error_message"] == "Resource exhausted"
    assert row["content"] is None


def test_gemini_error_status_only(tmp_path: Path) -> None:
    row = one(parse(GEMINI, tmp_path, [{"key": "k", "error": {"code": 13, "status": "INTERNAL"}}]))
    assert row["error_message"] == "INTERNAL"


def test_gemini_candidate_without_parts(tmp_path: Path) -> None:
    line = {
        "key": "req_3",
        "response": {
            "candidates": [{"finishReason": "SAFETY", "index": 0}],
            "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
            "modelVersion": "gemini-2.5-flash",
        },
    }
    row = one(parse(GEMINI, tmp_path, [line]))
    assert row["content"] is None and row["thoughts"] is None
    assert row["better_sample"] is None
    assert row["error_message"] == "no answer (finishReason SAFETY)"
    assert row["prompt_tokens"] == 7
    assert row["completion_tokens"] is None
    assert row["total_tokens"] == 7


def test_gemini_no_candidates_prompt_blocked(tmp_path: Path) -> None:
    line = {"key": "k", "response": {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}}
    row = one(parse(GEMINI, tmp_path, [line]))
    assert row["error_message"] == "no answer (finishReason PROHIBITED_CONTENT)"


def test_gemini_line_without_response(tmp_path: Path) -> None:
    row = one(parse(GEMINI, tmp_path, [{"key": "k"}]))
    assert (row["custom_id"], row["result_type"]) == ("k", "errored")
    assert row["error_message"] == "result line has no response"


# ---------------------------------------------------------------- robustness (all providers)


def good_line(provider: str, key: str, content: str) -> dict[str, Any]:
    if provider == "openai":
        body = dict(
            CHAT_BODY, choices=[{"index": 0, "message": {"role": "assistant", "content": content}}]
        )
        return openai_line(key, body)
    if provider == "anthropic":
        return anthropic_succeeded(key, [{"type": "text", "text": content}])
    return {"key": key, "response": {"candidates": [{"content": {"parts": [{"text": content}]}}]}}


@pytest.mark.parametrize("provider", list(BACKENDS))
def test_blank_lines_skipped(tmp_path: Path, provider: str) -> None:
    lines = ["", good_line(provider, "a", S1), "   ", "\t", good_line(provider, "b", S2), ""]
    frame = parse(BACKENDS[provider], tmp_path, lines)
    assert frame.get_column("custom_id").to_list() == ["a", "b"]
    assert frame.get_column("better_sample").to_list() == ["SAMPLE_1", "SAMPLE_2"]


@pytest.mark.parametrize("provider", list(BACKENDS))
def test_crlf_line_endings(tmp_path: Path, provider: str) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"\r\n".join(orjson.dumps(good_line(provider, k, S1)) for k in "ab") + b"\r\n")
    frame = BACKENDS[provider].parse_results(path)
    assert frame.get_column("custom_id").to_list() == ["a", "b"]


@pytest.mark.parametrize("provider", list(BACKENDS))
def test_malformed_json_line(tmp_path: Path, provider: str) -> None:
    key_field = "key" if provider == "gemini" else "custom_id"
    truncated = orjson.dumps(good_line(provider, "cut-1", S1))[:60]
    assert f'"{key_field}":"cut-1"'.encode() in truncated
    lines = [
        good_line(provider, "a", S1),
        truncated,  # line 2: a truncated line still names its key
        b"{not json at all",  # line 3: nothing to recover
        b"[1, 2, 3]",  # line 4: JSON, but not an object
        b'{"' + key_field.encode() + b'": "esc\\"aped", "oops": }',  # line 5
        good_line(provider, "b", S2),
    ]
    frame = parse(BACKENDS[provider], tmp_path, lines)
    assert frame.height == 6
    assert frame.get_column("custom_id").to_list() == ["a", "cut-1", None, None, 'esc"aped', "b"]
    bad = frame.slice(1, 4)
    assert bad.get_column("result_type").to_list() == ["errored"] * 4
    assert bad.get_column("error_message").to_list() == [
        f"Failed to parse JSON line {n} of out.jsonl" for n in (2, 3, 4, 5)
    ]
    assert bad.get_column("better_sample").null_count() == 4
    assert frame.get_column("better_sample").to_list()[::5] == ["SAMPLE_1", "SAMPLE_2"]


def test_invalid_utf8_line(tmp_path: Path) -> None:
    lines = [b'{"custom_id": "u1", "response": "\xff\xfe"}', good_line("openai", "a", S1)]
    frame = parse(OPENAI, tmp_path, lines)
    assert frame.get_column("custom_id").to_list() == ["u1", "a"]
    assert frame.row(0, named=True)["error_message"] == "Failed to parse JSON line 1 of out.jsonl"


@pytest.mark.parametrize("provider", list(BACKENDS))
def test_unexpected_shape_never_crashes(tmp_path: Path, provider: str) -> None:
    key_field = "key" if provider == "gemini" else "custom_id"
    odd: list[dict[str, Any]] = [
        {
            key_field: "x1",
            "response": {"status_code": "nope", "body": {"object": "response", "output": 5}},
            "result": {"type": "succeeded", "message": {"content": 7, "usage": []}},
        },
        {
            key_field: "x2",
            "response": {"body": {"object": "chat.completion", "choices": "??"}},
            "result": {"type": "succeeded", "message": "text"},
        },
        {key_field: "x3", "response": {"candidates": {"0": 1}}, "result": 3},
        {key_field: 12, "response": [], "result": [], "error": "boom"},
    ]
    frame = parse(BACKENDS[provider], tmp_path, odd)
    assert frame.height == 4
    assert frame.get_column("custom_id").to_list() == ["x1", "x2", "x3", None]
    assert frame.get_column("better_sample").null_count() == 4
    assert_no_empty_strings(frame)


def test_parse_line_exception_becomes_error_row(tmp_path: Path) -> None:
    # candidates is a dict: indexing it raises inside gemini.parse_line
    line = {"key": "g1", "response": {"candidates": {"a": 1}}}
    row = one(parse(GEMINI, tmp_path, [line]))
    assert row["custom_id"] == "g1"
    assert row["result_type"] == "errored"
    assert row["error_message"].startswith("Failed to parse result on line 1 of out.jsonl")


@pytest.mark.parametrize("provider", list(BACKENDS))
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f"Options: {S1} or {S2}. My answer: {S2}", "SAMPLE_2"),
        (f"Options: {S2} or {S1}. My answer: {S1}", "SAMPLE_1"),
        (f"{S2} ... {S1}", "SAMPLE_1"),
        (f"{S1} ... {S2}", "SAMPLE_2"),
        ("No tag here, SAMPLE_1 is better", None),
        ("<better_sample>SAMPLE_1</better_sample>", None),  # exact tag text only
        ("<BETTER_SAMPLE>SAMPLE_3</BETTER_SAMPLE>", None),
    ],
)
def test_last_tag_wins(tmp_path: Path, provider: str, content: str, expected: str | None) -> None:
    row = one(parse(BACKENDS[provider], tmp_path, [good_line(provider, "k", content)]))
    assert row["content"] == content
    assert row["better_sample"] == expected


@pytest.mark.parametrize("provider", list(BACKENDS))
def test_custom_tags(tmp_path: Path, provider: str) -> None:
    lines = [
        good_line(provider, "a", "<<SAMPLE_2>>"),
        good_line(provider, "b", f"{S2} then <<SAMPLE_1>>"),
        good_line(provider, "c", f"only the default tag {S1}"),
        good_line(provider, "d", "<<SAMPLE_1>> <<SAMPLE_2>> <<SAMPLE_1>>"),
    ]
    frame = parse(BACKENDS[provider], tmp_path, lines, tag_prefix="<<", tag_suffix=">>")
    assert frame.get_column("better_sample").to_list() == ["SAMPLE_2", "SAMPLE_1", None, "SAMPLE_1"]


def test_find_winner_directly() -> None:
    assert find_winner(None, "<", ">") is None
    assert find_winner("", "<", ">") is None
    assert find_winner("<SAMPLE_1><SAMPLE_2>", "<", ">") == "SAMPLE_2"
    assert find_winner("<SAMPLE_2><SAMPLE_1>", "<", ">") == "SAMPLE_1"


@pytest.mark.parametrize("provider", list(BACKENDS))
def test_missing_file_raises_input_error(tmp_path: Path, provider: str) -> None:
    with pytest.raises(InputError, match="does not exist"):
        BACKENDS[provider].parse_results(tmp_path / "nope.jsonl")


def test_missing_error_file_raises_input_error(tmp_path: Path) -> None:
    out = write_jsonl(tmp_path / "out.jsonl", [good_line("openai", "a", S1)])
    with pytest.raises(InputError):
        OPENAI.parse_results(out, error_path=tmp_path / "missing-errors.jsonl")


@pytest.mark.parametrize("provider", list(BACKENDS))
@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file_gives_typed_empty_frame(tmp_path: Path, provider: str, content: bytes) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(content)
    frame = BACKENDS[provider].parse_results(path)
    assert frame.height == 0
    assert list(frame.schema.items()) == list(RESULT_SCHEMA.items())


def test_no_paths_gives_typed_empty_frame() -> None:
    frame = OPENAI.parse_results(None)
    assert frame.height == 0
    assert frame.schema == pl.Schema(RESULT_SCHEMA)


@pytest.mark.parametrize("provider", list(BACKENDS))
def test_nulls_not_empty_strings(tmp_path: Path, provider: str) -> None:
    key_field = "key" if provider == "gemini" else "custom_id"
    lines: list[Any] = [
        good_line(provider, "", ""),
        {
            key_field: "",
            "error": {"code": "", "message": ""},
            "result": {"type": "", "error": {"message": ""}},
        },
        b'{"' + key_field.encode() + b'": "", broken',
    ]
    if provider == "openai":
        lines.append(
            openai_line("e", {"object": "", "model": "", "error": {"message": ""}}, status=400)
        )
        lines.append(openai_line("f", responses_body("")))
    elif provider == "anthropic":
        lines.append(
            anthropic_succeeded(
                "e", [{"type": "thinking", "thinking": ""}, {"type": "text", "text": ""}]
            )
        )
    else:
        lines.append(
            {
                "key": "e",
                "response": {
                    "modelVersion": "",
                    "candidates": [
                        {"content": {"parts": [{"text": "", "thought": True}, {"text": ""}]}}
                    ],
                },
            }
        )
    frame = parse(BACKENDS[provider], tmp_path, lines)
    assert_no_empty_strings(frame)
    assert frame.get_column("custom_id").to_list()[:3] == [None, None, None]


def test_int_or_none() -> None:
    assert [int_or_none(v) for v in (7, 0, -3, True, False, 2.0, 2.5, "12", "x", None, [1])] == [
        7, 0, -3, None, None, 2, None, 12, None, None, None,
    ]  # fmt: skip


def test_int_or_none_out_of_int64_range() -> None:
    assert int_or_none(2**63 - 1) == 2**63 - 1
    assert int_or_none(-(2**63)) == -(2**63)
    assert [int_or_none(v) for v in (2**63, -(2**63) - 1, 1e30, "99999999999999999999")] == [
        None, None, None, None,
    ]  # fmt: skip


def test_out_of_range_token_count_does_not_fail_the_frame(tmp_path: Path) -> None:
    body = dict(
        CHAT_BODY, usage={"prompt_tokens": 1e30, "completion_tokens": 2**63, "total_tokens": 3}
    )
    frame = parse(OPENAI, tmp_path, [openai_line("big", body), openai_line("ok", CHAT_BODY)])
    assert frame.get_column("prompt_tokens").to_list() == [None, 120]
    assert frame.get_column("completion_tokens").to_list() == [None, 30]
    assert frame.get_column("better_sample").to_list() == ["SAMPLE_2", "SAMPLE_2"]
