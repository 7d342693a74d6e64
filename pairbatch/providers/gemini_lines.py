"""Gemini batch result lines: the careful parser and the typed fast path.

As in :mod:`.openai_lines`: ``parse_line`` reads any decoded line; ``fast_line`` decodes
a line whose first candidate has answer text from its bytes into typed structs and
hands anything else back to ``parse_line``; tests hold the two to the same rows.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pairbatch.results import Row, RowTuple, dig, int64_or_miss, int_or_none, text_or_none


def parse_line(obj: dict[str, Any]) -> Row:
    """``{key, response | error}``, the results-file shape (inline results are written in
    it too). Parts flagged ``thought: true`` are thoughts, the rest is the answer."""
    row: Row = {"custom_id": text_or_none(obj.get("key") or dig(obj, "metadata", "key"))}
    row["object_type"] = "generateContent"
    error = obj.get("error")
    response = obj.get("response")
    if isinstance(error, dict):
        row["result_type"] = "errored"
        row["status_code"] = int_or_none(error.get("code"))
        row["error_message"] = text_or_none(error.get("message")) or text_or_none(
            error.get("status")
        )
        return row
    if not isinstance(response, dict):
        row["result_type"] = "errored"
        row["error_message"] = "result line has no response"
        return row
    row["status_code"] = 200
    row["result_type"] = "succeeded"
    row["model"] = text_or_none(response.get("modelVersion") or response.get("model"))
    candidates = response.get("candidates") or []
    first = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    thoughts: list[str] = []
    content: list[str] = []
    for part in dig(first, "content", "parts") or []:
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            continue
        (thoughts if part.get("thought") is True else content).append(part["text"])
    row["thoughts"] = text_or_none("".join(thoughts))
    row["content"] = text_or_none("".join(content))
    if first.get("finishReason") == "MAX_TOKENS":
        # Cut off at maxOutputTokens (thinking counts against it): say so.
        row["error_message"] = "truncated: MAX_TOKENS"
    elif row["content"] is None:
        reason = first.get("finishReason") or dig(response, "promptFeedback", "blockReason")
        if reason:
            row["error_message"] = f"no answer (finishReason {reason})"
    usage = response.get("usageMetadata")
    if isinstance(usage, dict):
        row["prompt_tokens"] = int_or_none(usage.get("promptTokenCount"))
        # The API's own split: candidatesTokenCount is the answer, thoughtsTokenCount
        # the thinking (types.py GenerateContentResponseUsageMetadata); not summed.
        row["completion_tokens"] = int_or_none(usage.get("candidatesTokenCount"))
        row["reasoning_tokens"] = int_or_none(usage.get("thoughtsTokenCount"))
        row["total_tokens"] = int_or_none(usage.get("totalTokenCount"))
        row["prompt_cached_tokens"] = int_or_none(usage.get("cachedContentTokenCount"))
    return row


# ---------------------------------------------------------------- typed fast path
# Only the fields the row needs; another type (or a missing required field) is a
# ValidationError, and the careful parser then reads the line.


class _Part(msgspec.Struct, gc=False):
    text: str
    thought: bool | None = None


class _Content(msgspec.Struct, gc=False):
    parts: list[_Part]


class _Candidate(msgspec.Struct, gc=False):
    content: _Content
    finishReason: str | None = None


class _Usage(msgspec.Struct, gc=False):
    promptTokenCount: int | None = None
    candidatesTokenCount: int | None = None
    thoughtsTokenCount: int | None = None
    totalTokenCount: int | None = None
    cachedContentTokenCount: int | None = None


class _Response(msgspec.Struct, gc=False):
    candidates: list[_Candidate]
    modelVersion: str | None = None
    model: str | None = None
    usageMetadata: _Usage | None = None


class _Line(msgspec.Struct, gc=False):
    response: _Response
    key: str | None = None
    error: msgspec.Raw | None = None


_decode = msgspec.json.Decoder(_Line).decode


def _usage(usage: _Usage | None) -> tuple[int | None, ...]:
    """(prompt, completion, total, cached, thoughts); ``ValueError`` beyond Int64."""
    if usage is None:
        return (None, None, None, None, None)
    return int64_or_miss(
        usage.promptTokenCount,
        usage.candidatesTokenCount,
        usage.totalTokenCount,
        usage.cachedContentTokenCount,
        usage.thoughtsTokenCount,
    )


def fast_line(line: bytes) -> RowTuple | None:
    """:func:`parse_line`'s row of a line whose first candidate has answer text, from
    its bytes; ``None`` or an exception leaves the line to :func:`parse_line`."""
    decoded = _decode(line)
    response = decoded.response
    if not decoded.key or decoded.error is not None:
        return None
    first = response.candidates[0]
    if first.finishReason == "MAX_TOKENS":
        return None  # the careful parser says it was cut off
    thoughts: list[str] = []
    content: list[str] = []
    for part in first.content.parts:
        (thoughts if part.thought is True else content).append(part.text)
    answer = "".join(content)
    if not answer:
        return None  # parse_line explains a missing answer from finishReason
    prompt, completion, total, cached, thought_tokens = _usage(response.usageMetadata)
    return (
        decoded.key,
        response.modelVersion or response.model,
        "generateContent",
        200,
        "succeeded",
        None,
        "".join(thoughts),
        answer,
        prompt,
        completion,
        total,
        cached,
        thought_tokens,
    )
