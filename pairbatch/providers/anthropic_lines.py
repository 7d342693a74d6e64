"""Anthropic Message Batches result lines: the careful parser and the typed fast path.

As in :mod:`.openai_lines`: ``parse_line`` reads any decoded line; ``fast_line`` decodes
a succeeded line of the usual shape from its bytes into typed structs and hands
anything else back to ``parse_line``; tests hold the two to the same rows.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from pairbatch.results import Row, RowTuple, dig, int64_or_miss, int_or_none, text_or_none

# stop_reason values (types/stop_reason.py) meaning the answer was cut off.
_TRUNCATED = frozenset({"max_tokens", "model_context_window_exceeded"})


def parse_line(obj: dict[str, Any]) -> Row:
    """``{custom_id, result: {type, message | error}}``."""
    row: Row = {"custom_id": text_or_none(obj.get("custom_id"))}
    result = obj.get("result")
    if not isinstance(result, dict):
        row["result_type"] = "errored"
        row["error_message"] = "result line has no result"
        return row
    kind = text_or_none(result.get("type"))
    row["result_type"] = kind
    if kind != "succeeded":
        error = result.get("error")
        # The API nests the message (an ErrorResponse); older fixtures have it flat.
        message = dig(error, "error", "message") or dig(error, "message")
        row["error_message"] = text_or_none(message) or (f"request {kind}" if kind else None)
        row["status_code"] = None
        return row
    message = result.get("message")
    if not isinstance(message, dict):
        row["result_type"] = "errored"
        row["error_message"] = "succeeded result has no message"
        return row
    row["status_code"] = 200
    row["object_type"] = text_or_none(message.get("type"))
    row["model"] = text_or_none(message.get("model"))
    thoughts: list[str] = []
    content: list[str] = []
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "thinking":
            text = block.get("thinking") or block.get("text")
            if isinstance(text, str) and text:
                thoughts.append(text)
        elif block.get("type") == "text":
            text = block.get("text")
            if isinstance(text, str):
                content.append(text)
    row["thoughts"] = text_or_none("\n\n".join(thoughts))
    row["content"] = text_or_none("".join(content))
    usage = message.get("usage")
    if isinstance(usage, dict):
        prompt = int_or_none(usage.get("input_tokens"))
        completion = int_or_none(usage.get("output_tokens"))
        row["prompt_tokens"] = prompt
        row["completion_tokens"] = completion
        row["total_tokens"] = (
            prompt + completion if prompt is not None and completion is not None else None
        )
        row["prompt_cached_tokens"] = int_or_none(usage.get("cache_read_input_tokens"))
        # output_tokens includes thinking; the breakdown is in output_tokens_details
        # (types/output_tokens_details.py: thinking_tokens).
        row["reasoning_tokens"] = int_or_none(
            dig(usage, "output_tokens_details", "thinking_tokens")
        )
    stop_reason = message.get("stop_reason")
    if stop_reason in _TRUNCATED:
        row["error_message"] = f"truncated: {stop_reason}"
    return row


# ---------------------------------------------------------------- typed fast path
# Only the fields the row needs; another type is a ValidationError (the careful parser
# then reads the line); ``UNSET`` where a missing field must hand the line over.


class _Block(msgspec.Struct, gc=False):
    type: str
    thinking: str | None = None
    text: str | UnsetType | None = UNSET


class _Details(msgspec.Struct, gc=False):
    thinking_tokens: int | UnsetType | None = UNSET


class _Usage(msgspec.Struct, gc=False):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: _Details | None = None


class _Message(msgspec.Struct, gc=False):
    content: list[_Block]
    type: str | None = None
    model: str | None = None
    stop_reason: str | None = None
    usage: _Usage | None = None


class _Result(msgspec.Struct, gc=False):
    type: str
    message: _Message


class _Line(msgspec.Struct, gc=False):
    result: _Result
    custom_id: str | None = None


_decode = msgspec.json.Decoder(_Line).decode


def _texts(blocks: list[_Block]) -> tuple[str, str] | None:
    thoughts: list[str] = []
    content: list[str] = []
    for block in blocks:
        if block.type == "thinking":
            text = block.thinking or block.text
            if text:
                thoughts.append(text)
        elif block.type == "text":
            if block.text is UNSET or block.text is None:
                return None
            content.append(block.text)
    return "\n\n".join(thoughts), "".join(content)


def _usage(usage: _Usage | None) -> tuple[int | None, ...]:
    """(prompt, completion, total, cached, thinking); ``ValueError`` beyond Int64."""
    if usage is None:
        return (None, None, None, None, None)
    details = usage.output_tokens_details
    thinking = None if details is None else details.thinking_tokens
    if thinking is UNSET:
        raise ValueError("output_tokens_details without thinking_tokens")
    prompt, completion, cached, thinking = int64_or_miss(
        usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens, thinking
    )
    total = prompt + completion if prompt is not None and completion is not None else None
    return prompt, completion, total, cached, thinking


def fast_line(line: bytes) -> RowTuple | None:
    """:func:`parse_line`'s row of a succeeded line of the usual shape, from its bytes;
    ``None`` or an exception leaves the line to :func:`parse_line`."""
    decoded = _decode(line)
    result = decoded.result
    message = result.message
    if result.type != "succeeded" or message.stop_reason in _TRUNCATED:
        return None  # the careful parser says why
    texts = _texts(message.content)
    if texts is None:
        return None
    prompt, completion, total, cached, thinking = _usage(message.usage)
    return (
        decoded.custom_id,
        message.model,
        message.type,
        200,
        "succeeded",
        None,
        texts[0],
        texts[1],
        prompt,
        completion,
        total,
        cached,
        thinking,
    )
