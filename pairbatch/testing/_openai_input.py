"""OpenAI input files: what the Batch API checks in them, and batch usage totals."""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from pairbatch.testing.blobs import Blob
from pairbatch.testing.faults import stable_int
from pairbatch.testing.state import Request

MAX_REQUESTS = 50_000
MAX_INPUT_BYTES = 200 * 1024 * 1024
SUPPORTED_ENDPOINTS = ("/v1/chat/completions", "/v1/responses")
KNOWN_ENDPOINTS = (
    *SUPPORTED_ENDPOINTS,
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
)
PARSE_IN_THREAD = 1 << 20  # bigger inputs are parsed off the event loop


@attrs.define(eq=False)
class StoredFile:
    id: str
    filename: str
    purpose: str
    created_at: int
    blob: Blob

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.blob.size,
            "created_at": self.created_at,
            "expires_at": self.created_at + 30 * 86400,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


def parse_input(
    data: bytes, endpoint: str
) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]], str | None]:
    """Check an input file the way the Batch API does after create: ``(items, errors, model)``."""
    errors: list[dict[str, Any]] = []

    def fail(code: str, message: str, line: int | None, param: str | None = None) -> None:
        if len(errors) < 100:
            errors.append({"code": code, "message": message, "param": param, "line": line})

    if len(data) > MAX_INPUT_BYTES:
        fail(
            "file_too_large",
            f"The input file is larger than the {MAX_INPUT_BYTES} byte limit.",
            None,
        )
        return [], errors, None
    items: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    model: str | None = None
    lines = [line for line in data.splitlines() if line.strip()]
    if not lines:
        fail("empty_file", "The input file is empty.", None)
    if len(lines) > MAX_REQUESTS:
        fail(
            "too_many_requests",
            f"The input file has {len(lines)} requests; a batch may have at most {MAX_REQUESTS}.",
            None,
        )
        return [], errors, None
    for number, raw in enumerate(lines, start=1):
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            fail("invalid_json_line", "This line is not parseable as valid JSON.", number)
            continue
        if not isinstance(line, dict):
            fail("invalid_json_line", "Each line must be a JSON object.", number)
            continue
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            fail(
                "missing_required_parameter",
                "Missing required parameter: 'custom_id'.",
                number,
                "custom_id",
            )
            continue
        if line.get("method") != "POST":
            fail(
                "invalid_value",
                f"Invalid value for 'method': {line.get('method')!r}; only 'POST' is supported.",
                number,
                "method",
            )
        if line.get("url") != endpoint:
            fail(
                "mismatched_endpoint",
                f"The URL provided for this request ({line.get('url')!r})"
                f" does not match the batch endpoint ({endpoint!r}).",
                number,
                "url",
            )
        body = line.get("body")
        if not isinstance(body, dict):
            fail(
                "missing_required_parameter", "Missing required parameter: 'body'.", number, "body"
            )
            continue
        if custom_id in seen:
            fail(
                "duplicate_custom_id",
                f"The custom_id {custom_id!r} is used more than once in "
                "this file; custom_id must be unique within a batch.",
                number,
                "custom_id",
            )
        seen.add(custom_id)
        if model is None and isinstance(body.get("model"), str):
            model = body["model"]
        items.append((custom_id, body))
    return items, errors, model


def check_metadata(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return "Invalid type for 'metadata': expected an object."
    if len(metadata) > 16:
        return "Invalid 'metadata': at most 16 key-value pairs are allowed."
    for key, value in metadata.items():
        if len(key) > 64:
            return f"Invalid 'metadata': key {key[:20]!r}... is longer than 64 characters."
        if not isinstance(value, str) or len(value) > 512:
            return f"Invalid 'metadata.{key}': values must be strings of at most 512 characters."
    return None


def zero_usage() -> dict[str, Any]:
    return {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }


def add_usage(total: dict[str, Any], usage: dict[str, Any]) -> None:
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    cached = (usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}).get(
        "cached_tokens", 0
    )
    reasoning = (
        usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    ).get("reasoning_tokens", 0)
    total["input_tokens"] += prompt
    total["output_tokens"] += completion
    total["total_tokens"] += prompt + completion
    total["input_tokens_details"]["cached_tokens"] += cached
    total["output_tokens_details"]["reasoning_tokens"] += reasoning


def error_line(
    line: dict[str, Any], request: Request, ident: str, *, server: bool = False
) -> dict[str, Any]:
    # Both shapes of the error file: an API answer with a non-2xx status, and a
    # request that never got one. Which one is a pure function of the custom id.
    if server or stable_int("shape", request.custom_id) % 2 == 0:
        status, error = (
            (
                500,
                {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                },
            )
            if server
            else (
                400,
                {
                    "message": "This model's maximum context length is 128000 tokens. However, "
                    "your messages resulted in 131072 tokens. Please reduce the length of the "
                    "messages.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                },
            )
        )
        line.update(
            response={
                "status_code": status,
                "request_id": f"req_{ident}",
                "body": {"error": error},
            },
            error=None,
        )
    else:
        line.update(
            response=None,
            error={
                "code": "request_timeout",
                "message": "The request timed out before it could be completed.",
            },
        )
    return line
