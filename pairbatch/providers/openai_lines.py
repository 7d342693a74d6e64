"""OpenAI Batch result lines: the careful parser and the typed fast path.

``parse_line`` reads any decoded line, checking every field. ``fast_line`` decodes the
raw bytes of a line of the usual shape straight into typed structs (msgspec: no dict of
the fields nobody reads is ever built) and hands anything else back, as ``None`` or a
decoding error, to ``parse_line``; tests hold the two to the same rows.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from pairbatch.results import Row, RowTuple, dig, int64_or_miss, int_or_none, text_or_none

_EXPIRY_CODES = {"batch_expired": "expired", "batch_cancelled": "canceled"}


def _openai_usage(row: Row, usage: object) -> None:
    if not isinstance(usage, dict):
        return
    if "input_tokens" in usage or "output_tokens" in usage:  # responses shape
        row["prompt_tokens"] = int_or_none(usage.get("input_tokens"))
        row["completion_tokens"] = int_or_none(usage.get("output_tokens"))
        row["prompt_cached_tokens"] = int_or_none(
            dig(usage, "input_tokens_details", "cached_tokens")
        )
        row["reasoning_tokens"] = int_or_none(
            dig(usage, "output_tokens_details", "reasoning_tokens")
        )
    else:  # chat.completions shape
        row["prompt_tokens"] = int_or_none(usage.get("prompt_tokens"))
        row["completion_tokens"] = int_or_none(usage.get("completion_tokens"))
        row["prompt_cached_tokens"] = int_or_none(
            dig(usage, "prompt_tokens_details", "cached_tokens")
        )
        row["reasoning_tokens"] = int_or_none(
            dig(usage, "completion_tokens_details", "reasoning_tokens")
        )
    row["total_tokens"] = int_or_none(usage.get("total_tokens"))


def _responses_text(body: dict[str, Any]) -> tuple[str | None, str | None]:
    thoughts: list[str] = []
    content: list[str] = []
    for item in body.get("output") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "reasoning":
            for part in item.get("summary") or []:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str) and text:
                    thoughts.append(text)
        elif item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") in ("output_text", "text", None):
                    text = part.get("text")
                    if isinstance(text, str):
                        content.append(text)
    return text_or_none("\n\n".join(thoughts)), text_or_none("".join(content))


def parse_line(obj: dict[str, Any]) -> Row:
    """One output- or error-file line: ``{custom_id, response: {status_code, body}, error}``."""
    row: Row = {"custom_id": text_or_none(obj.get("custom_id"))}
    response = obj.get("response")
    error = obj.get("error")
    status = int_or_none(dig(response, "status_code"))
    row["status_code"] = status
    body = dig(response, "body")
    if isinstance(error, dict):
        row["error_message"] = text_or_none(error.get("message")) or text_or_none(error.get("code"))
        row["result_type"] = _EXPIRY_CODES.get(str(error.get("code")), "errored")
    if not isinstance(body, dict):
        if not isinstance(error, dict):
            row["result_type"] = "errored"
            row["error_message"] = "result line has no response body"
        return row
    row["model"] = text_or_none(body.get("model"))
    row["object_type"] = text_or_none(body.get("object"))
    body_error = body.get("error")
    if isinstance(body_error, dict):
        row["result_type"] = "errored"
        row["error_message"] = text_or_none(body_error.get("message")) or "request failed"
        return row
    _openai_usage(row, body.get("usage"))
    kind = body.get("object")
    if kind == "chat.completion":
        choice = (body.get("choices") or [None])[0]
        message = dig(choice, "message") or {}
        row["content"] = text_or_none(message.get("content"))
        row["thoughts"] = text_or_none(message.get("reasoning_content"))
        if dig(choice, "finish_reason") == "length":
            # Cut off at max_completion_tokens: say so rather than "no winner tag".
            row["error_message"] = "truncated: length"
    elif kind == "response":
        row["thoughts"], row["content"] = _responses_text(body)
        if body.get("status") == "incomplete":
            # e.g. incomplete_details.reason "max_output_tokens" (types/responses/response.py)
            reason = text_or_none(dig(body, "incomplete_details", "reason")) or "incomplete"
            row["error_message"] = f"truncated: {reason}"
    else:
        row["error_message"] = f"unknown response object type {kind!r}"
    ok = status is None or 200 <= status < 300
    row.setdefault("result_type", "succeeded" if ok else "errored")
    return row


# ---------------------------------------------------------------- typed fast path
# Each struct names only the fields the row needs; a field of another type is a
# ValidationError, which hands the line to ``parse_line``. ``UNSET`` marks a field whose
# absence ``parse_line`` treats differently from a null.


class _Part(msgspec.Struct, gc=False):
    type: str | UnsetType | None = UNSET
    text: str | UnsetType = UNSET


class _Item(msgspec.Struct, gc=False):
    type: str
    summary: list[_Part] | UnsetType = UNSET
    content: list[_Part] | UnsetType = UNSET


class _Details(msgspec.Struct, gc=False):
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct, gc=False):
    input_tokens: int | UnsetType | None = UNSET
    output_tokens: int | UnsetType | None = UNSET
    input_tokens_details: _Details | None = None
    output_tokens_details: _Details | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _Details | None = None
    completion_tokens_details: _Details | None = None
    total_tokens: int | None = None


class _Message(msgspec.Struct, gc=False):
    content: str | None = None
    reasoning_content: str | None = None


class _Choice(msgspec.Struct, gc=False):
    message: _Message
    finish_reason: str | None = None


class _Body(msgspec.Struct, gc=False):
    object: str | None = None
    model: str | None = None
    status: str | None = None
    error: msgspec.Raw | None = None
    usage: _Usage | None = None
    output: list[_Item] | UnsetType = UNSET
    choices: list[_Choice] | UnsetType = UNSET


class _Response(msgspec.Struct, gc=False):
    status_code: int
    body: _Body


class _Line(msgspec.Struct, gc=False):
    response: _Response
    custom_id: str | None = None
    error: msgspec.Raw | None = None


_decode = msgspec.json.Decoder(_Line).decode


def _usage(usage: _Usage | None) -> tuple[int | None, ...]:
    """(prompt, completion, total, cached, reasoning), told apart by the keys present as
    ``_openai_usage`` does; raises ``ValueError`` for a count beyond Int64."""
    if usage is None:
        return (None, None, None, None, None)
    if usage.input_tokens is not UNSET or usage.output_tokens is not UNSET:
        prompt = None if usage.input_tokens is UNSET else usage.input_tokens
        completion = None if usage.output_tokens is UNSET else usage.output_tokens
        details_in, details_out = usage.input_tokens_details, usage.output_tokens_details
    else:
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        details_in, details_out = usage.prompt_tokens_details, usage.completion_tokens_details
    cached = None if details_in is None else details_in.cached_tokens
    reasoning = None if details_out is None else details_out.reasoning_tokens
    return int64_or_miss(prompt, completion, usage.total_tokens, cached, reasoning)


def _output_text(output: list[_Item]) -> tuple[str, str] | None:
    thoughts: list[str] = []
    content: list[str] = []
    for item in output:
        if item.type == "reasoning":
            if item.summary is UNSET:
                return None
            for part in item.summary:
                if part.text is UNSET:
                    return None
                if part.text:
                    thoughts.append(part.text)
        elif item.type == "message":
            if item.content is UNSET:
                return None
            for part in item.content:
                if part.type is UNSET:
                    return None
                if part.type in ("output_text", "text", None):
                    if part.text is UNSET:
                        return None
                    content.append(part.text)
    return "\n\n".join(thoughts), "".join(content)


def _texts(body: _Body) -> tuple[str | None, str | None] | None:
    """(thoughts, answer) of a finished body, or ``None`` for ``parse_line``."""
    if body.object == "response":
        if body.status == "incomplete" or body.output is UNSET:
            return None  # the careful parser says why it was cut short
        return _output_text(body.output)
    if body.object == "chat.completion" and body.choices is not UNSET and body.choices:
        choice = body.choices[0]
        if choice.finish_reason == "length":
            return None
        return choice.message.reasoning_content, choice.message.content
    return None


def fast_line(line: bytes) -> RowTuple | None:
    """:func:`parse_line`'s row of a successful line of the usual shape, from its bytes;
    ``None`` or an exception (``msgspec.ValidationError``, ``ValueError``) leaves the
    line to :func:`parse_line`. Strings may be empty (the frame builder nulls them)."""
    decoded = _decode(line)
    response = decoded.response
    body = response.body
    if decoded.error is not None or body.error is not None:
        return None
    if not 200 <= response.status_code < 300:
        return None
    texts = _texts(body)
    if texts is None:
        return None
    prompt, completion, total, cached, reasoning = _usage(body.usage)
    return (
        decoded.custom_id,
        body.model,
        body.object,
        response.status_code,
        "succeeded",
        None,
        texts[0],
        texts[1],
        prompt,
        completion,
        total,
        cached,
        reasoning,
    )
