"""OpenAI Files and Batch API routes (``/v1/files``, ``/v1/batches``)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import attrs
import orjson
from aiohttp import BodyPartReader, web

from pairbatch.testing._core import Core, route_name
from pairbatch.testing._http import OPENAI, error_response, json_response, read_json, stream_blob
from pairbatch.testing.blobs import Blob, BytesBlob, LineRenderer, SyntheticBlob
from pairbatch.testing.bodies import (
    chat_completion,
    make_answer,
    openai_limit,
    openai_reasoning,
    response_object,
)
from pairbatch.testing.faults import (
    BATCHES_CANCEL,
    BATCHES_CREATE,
    BATCHES_GET,
    BATCHES_LIST,
    FILES_CONTENT,
    FILES_CREATE,
    FILES_DELETE,
    FILES_GET,
    stable_int,
)
from pairbatch.testing.judge import fixed_judge, openai_prompt
from pairbatch.testing.rules import check_openai
from pairbatch.testing.state import Batch, EndKind, Outcome, Phase, Request, View, shuffled

logger = logging.getLogger("pairbatch.testing")

MAX_REQUESTS = 50_000
MAX_INPUT_BYTES = 200 * 1024 * 1024
SUPPORTED_ENDPOINTS = ("/v1/chat/completions", "/v1/responses")
KNOWN_ENDPOINTS = (
    *SUPPORTED_ENDPOINTS,
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
)
_PARSE_IN_THREAD = 1 << 20  # bigger inputs are parsed off the event loop


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


def _parse_input(
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


class OpenAIRoutes:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.files: dict[str, StoredFile] = {}

    def register(self, app: web.Application) -> None:
        add = app.router.add_route
        add("POST", "/v1/files", self.create_file, name=route_name(OPENAI, FILES_CREATE))
        add("GET", "/v1/files/{file_id:[^/:]+}", self.get_file, name=route_name(OPENAI, FILES_GET))
        add(
            "DELETE",
            "/v1/files/{file_id:[^/:]+}",
            self.delete_file,
            name=route_name(OPENAI, FILES_DELETE),
        )
        add(
            "GET",
            "/v1/files/{file_id:[^/:]+}/content",
            self.file_content,
            name=route_name(OPENAI, FILES_CONTENT),
        )
        add("POST", "/v1/batches", self.create_batch, name=route_name(OPENAI, BATCHES_CREATE))
        add("GET", "/v1/batches", self.list_batches, name=route_name(OPENAI, BATCHES_LIST))
        add(
            "GET",
            "/v1/batches/{batch_id:[^/:]+}",
            self.get_batch,
            name=route_name(OPENAI, BATCHES_GET),
        )
        add(
            "POST",
            "/v1/batches/{batch_id:[^/:]+}/cancel",
            self.cancel_batch,
            name=route_name(OPENAI, BATCHES_CANCEL),
        )

    # -- files ---------------------------------------------------------------------------

    def _add_file(self, filename: str, purpose: str, blob: Blob) -> StoredFile:
        stored = StoredFile(
            id="file-" + secrets.token_hex(11),
            filename=filename,
            purpose=purpose,
            created_at=int(self.core.wall(self.core.now())),
            blob=blob,
        )
        self.files[stored.id] = stored
        return stored

    async def create_file(self, request: web.Request) -> web.StreamResponse:
        if not request.content_type.startswith("multipart/"):
            return error_response(OPENAI, 400, "Expected a multipart/form-data upload.")
        purpose: str | None = None
        filename = "upload.jsonl"
        data: bytes | None = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = (await part.text()).strip()
            elif part.name == "file":
                filename = part.filename or filename
                data = bytes(await part.read())
            else:
                await part.release()
        if data is None:
            return error_response(OPENAI, 400, "Missing required parameter: 'file'.", param="file")
        if not purpose:
            return error_response(
                OPENAI, 400, "Missing required parameter: 'purpose'.", param="purpose"
            )
        stored = self._add_file(filename, purpose, BytesBlob(data))
        return json_response(stored.to_json())

    def _file_or_404(self, request: web.Request) -> StoredFile | web.Response:
        file_id = request.match_info["file_id"]
        stored = self.files.get(file_id)
        if stored is None:
            return error_response(OPENAI, 404, f"No such File object: {file_id}", param="id")
        return stored

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        stored = self._file_or_404(request)
        return stored if isinstance(stored, web.Response) else json_response(stored.to_json())

    async def delete_file(self, request: web.Request) -> web.StreamResponse:
        stored = self._file_or_404(request)
        if isinstance(stored, web.Response):
            return stored
        del self.files[stored.id]
        return json_response({"id": stored.id, "object": "file", "deleted": True})

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        stored = self._file_or_404(request)
        if isinstance(stored, web.Response):
            return stored
        return await stream_blob(request, stored.blob, content_type="application/octet-stream")

    # -- batches -------------------------------------------------------------------------

    async def create_batch(self, request: web.Request) -> web.StreamResponse:
        try:
            payload = await read_json(request)
        except ValueError as exc:
            return error_response(OPENAI, 400, str(exc))
        if not isinstance(payload, dict):
            return error_response(OPENAI, 400, "The body must be a JSON object.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(payload.get(name), str):
                return error_response(
                    OPENAI, 400, f"Missing required parameter: '{name}'.", param=name
                )
        endpoint = payload["endpoint"]
        if endpoint not in KNOWN_ENDPOINTS:
            return error_response(
                OPENAI,
                400,
                f"Invalid value for 'endpoint': {endpoint!r}.",
                param="endpoint",
                code="invalid_value",
            )
        if endpoint not in SUPPORTED_ENDPOINTS:
            return error_response(
                OPENAI,
                400,
                f"The emulator only serves {', '.join(SUPPORTED_ENDPOINTS)}.",
                param="endpoint",
                code="invalid_value",
            )
        if payload["completion_window"] != "24h":
            return error_response(
                OPENAI,
                400,
                "Invalid value for 'completion_window': only '24h' is supported.",
                param="completion_window",
                code="invalid_value",
            )
        metadata = payload.get("metadata")
        problem = _check_metadata(metadata)
        if problem:
            return error_response(OPENAI, 400, problem, param="metadata")
        stored = self.files.get(payload["input_file_id"])
        if stored is None or stored.purpose != "batch" or not isinstance(stored.blob, BytesBlob):
            return error_response(
                OPENAI,
                400,
                f"Invalid 'input_file_id': {payload['input_file_id']!r}. The file "
                "does not exist or was not uploaded with purpose 'batch'.",
                param="input_file_id",
            )
        data = stored.blob.data
        if len(data) > _PARSE_IN_THREAD:
            items, errors, model = await asyncio.to_thread(_parse_input, data, endpoint)
        else:
            items, errors, model = _parse_input(data, endpoint)
        batch_id = "batch_" + secrets.token_hex(16)
        info: dict[str, Any] = {
            "endpoint": endpoint,
            "input_file_id": stored.id,
            "completion_window": "24h",
            "metadata": metadata,
            "model": model,
        }
        batch = self.core.create_batch(
            OPENAI,
            batch_id,
            [(cid, body, None) for cid, body in items],
            info=info,
            errors=errors,
        )
        if not errors and batch.fate.value == "failed":
            batch.errors.append(
                {
                    "code": "token_limit_exceeded",
                    "message": f"Enqueued token limit reached for {model or 'this model'} in "
                    "organization org-emulator. Limit: 2,000,000 enqueued tokens. Please try "
                    "again once some in_progress batches have been completed.",
                    "param": None,
                    "line": None,
                }
            )
        return json_response(self.batch_json(batch))

    def _batch_or_404(self, request: web.Request) -> Batch | web.Response:
        batch_id = request.match_info["batch_id"]
        batch = self.core.batches[OPENAI].get(batch_id)
        if batch is None:
            return error_response(
                OPENAI, 404, f"No batch found with id '{batch_id}'.", param="batch_id"
            )
        return batch

    async def get_batch(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch_or_404(request)
        if isinstance(batch, web.Response):
            return batch
        return json_response(self.batch_json(batch))

    async def cancel_batch(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch_or_404(request)
        if isinstance(batch, web.Response):
            return batch
        view = batch.view(self.core.now())
        if view.terminal and view.end is not EndKind.CANCELLED:
            # 400, not 409: the SDKs retry 409s, and this cannot succeed on a retry.
            return error_response(
                OPENAI,
                400,
                f"Cannot cancel a batch with status '{_status(view)}'.",
            )
        if not view.terminal and view.phase is not Phase.CANCELLING:
            batch.cancel_requested = self.core.now()
        return json_response(self.batch_json(batch))

    async def list_batches(self, request: web.Request) -> web.StreamResponse:
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 100:
            return error_response(
                OPENAI, 400, "Invalid 'limit': must be between 1 and 100.", param="limit"
            )
        newest_first = list(reversed(self.core.batches[OPENAI].values()))
        after = request.query.get("after")
        start = 0
        if after:
            ids = [b.id for b in newest_first]
            start = ids.index(after) + 1 if after in ids else len(ids)
        page = newest_first[start : start + limit]
        data = [self.batch_json(b) for b in page]
        return json_response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": start + limit < len(newest_first),
            }
        )

    # -- rendering -----------------------------------------------------------------------

    def batch_json(self, batch: Batch) -> dict[str, Any]:
        view = batch.view(self.core.now())
        if view.terminal:
            self._render(batch, view)
        wall = self.core.wall

        def at(t: float | None) -> int | None:
            return None if t is None else int(wall(t))

        end = view.end
        answered = view.count(Outcome.SUCCEEDED, Outcome.NO_TAG)
        failed = view.count(Outcome.ERRORED, Outcome.CANCELED, Outcome.EXPIRED)
        if view.phase is Phase.PENDING or end is EndKind.FAILED:
            counts = {"total": 0, "completed": 0, "failed": 0}
        else:
            counts = {"total": batch.n_requests, "completed": answered, "failed": failed}
        output = batch.blobs.get("output")
        errors = batch.blobs.get("error")
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.info["endpoint"],
            "model": batch.info.get("model"),
            "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
            "input_file_id": batch.info["input_file_id"],
            "completion_window": "24h",
            "status": _status(view),
            "output_file_id": batch.info.get("output_file_id") if output is not None else None,
            "error_file_id": batch.info.get("error_file_id") if errors is not None else None,
            "created_at": at(batch.created),
            "in_progress_at": at(view.started_at),
            "expires_at": at(batch.created + 86400),
            "finalizing_at": at(view.finalizing_at),
            "completed_at": at(view.ended_at) if end is EndKind.COMPLETED else None,
            "failed_at": at(view.ended_at) if end is EndKind.FAILED else None,
            "expired_at": at(view.ended_at) if end is EndKind.EXPIRED else None,
            "cancelling_at": at(view.cancel_at),
            "cancelled_at": at(view.ended_at) if end is EndKind.CANCELLED else None,
            "request_counts": counts,
            "metadata": batch.info.get("metadata"),
            "usage": batch.info.get("usage", _zero_usage()),
        }

    def _render(self, batch: Batch, view: View) -> None:
        """Write the output and error files once, when the batch is first seen ended."""
        if batch.rendered:
            return
        batch.rendered = True
        if batch.synthetic_total is not None:
            return
        created = int(self.core.wall(view.ended_at or batch.created))
        ok_lines: list[bytes] = []
        error_lines: list[bytes] = []
        usage = _zero_usage()
        for request, outcome in zip(batch.requests, view.outcomes, strict=True):
            if outcome is None:
                continue
            line, body = self._line(batch, request, outcome, created)
            (ok_lines if body is not None else error_lines).append(orjson.dumps(line))
            if body is not None:
                _add_usage(usage, body.get("usage", {}))
        batch.info["usage"] = usage
        for role, lines in (("output", ok_lines), ("error", error_lines)):
            if not lines:
                continue
            data = b"\n".join(shuffled(lines, batch.shuffle_seed)) + b"\n"
            stored = self._add_file(
                f"batch_{batch.id}_{role}.jsonl", "batch_output", BytesBlob(data)
            )
            batch.info[f"{role}_file_id"] = stored.id
            batch.blobs[role] = stored.blob

    def _line(
        self, batch: Batch, request: Request, outcome: Outcome, created: int
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        ident = f"{stable_int(batch.id, request.index):016x}"
        line: dict[str, Any] = {"id": f"batch_req_{ident}", "custom_id": request.custom_id}
        if outcome in (Outcome.CANCELED, Outcome.EXPIRED):
            code = "batch_cancelled" if outcome is Outcome.CANCELED else "batch_expired"
            message = (
                "This request was cancelled before it could be processed."
                if outcome is Outcome.CANCELED
                else "This request could not be executed before the completion window expired."
            )
            line.update(response=None, error={"code": code, "message": message})
            return line, None
        body = request.body
        if outcome is Outcome.ERRORED:
            return self._error_line(line, request, ident), None
        refusal = check_openai(batch.info["endpoint"], body)
        if refusal is not None:
            # A line the API refuses is answered in the error file, as the real batch does.
            line.update(
                response={
                    "status_code": refusal.status,
                    "request_id": f"req_{ident}",
                    "body": refusal.body,
                },
                error=None,
            )
            return line, None
        reasoning, summary = openai_reasoning(body)
        try:
            answer = make_answer(
                self.core.judge,
                openai_prompt(body),
                no_tag=outcome is Outcome.NO_TAG,
                reasoning=reasoning,
                show_thoughts=summary,
                limit=openai_limit(body),
            )
        except Exception:
            logger.exception("judge failed on %s", request.custom_id)
            return self._error_line(line, request, ident, server=True), None
        if batch.info["endpoint"] == "/v1/responses":
            response = response_object(
                body, answer, ident=ident, created=created, reasoning=reasoning
            )
        else:
            response = chat_completion(body, answer, ident=ident, created=created)
        line.update(
            response={"status_code": 200, "request_id": f"req_{ident}", "body": response},
            error=None,
        )
        return line, response

    @staticmethod
    def _error_line(
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

    # -- synthetic -----------------------------------------------------------------------

    def synthetic_renderer(self, batch: Batch) -> LineRenderer:
        model = batch.info.get("model") or "gpt-4o-mini"
        created = int(self.core.wall(batch.created))
        templates = {}
        for winner in ("SAMPLE_1", "SAMPLE_2"):
            body = {"model": model, "messages": [{"role": "user", "content": ""}]}
            answer = make_answer(
                fixed_judge(winner),
                "synthetic prompt " * 20,
                no_tag=False,
                reasoning=False,
                show_thoughts=False,
            )
            templates[winner] = chat_completion(body, answer, ident="synthetic", created=created)

        def render(custom_id: str, position: int) -> bytes:
            winner = "SAMPLE_1" if position % 2 == 0 else "SAMPLE_2"
            return orjson.dumps(
                {
                    "id": f"batch_req_{custom_id}",
                    "custom_id": custom_id,
                    "response": {
                        "status_code": 200,
                        "request_id": f"req_{custom_id}",
                        "body": templates[winner],
                    },
                    "error": None,
                }
            )

        return render

    def attach_synthetic(self, batch: Batch, blob: SyntheticBlob) -> None:
        stored = self._add_file(f"batch_{batch.id}_output.jsonl", "batch_output", blob)
        batch.info["output_file_id"] = stored.id
        batch.blobs["output"] = blob
        batch.info["usage"] = _zero_usage()


def _status(view: View) -> str:
    if view.end is not None:
        return view.end.value
    return {
        Phase.PENDING: "validating",
        Phase.RUNNING: "in_progress",
        Phase.FINALIZING: "finalizing",
        Phase.CANCELLING: "cancelling",
        Phase.ENDED: "completed",
    }[view.phase]


def _check_metadata(metadata: Any) -> str | None:
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


def _zero_usage() -> dict[str, Any]:
    return {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }


def _add_usage(total: dict[str, Any], usage: dict[str, Any]) -> None:
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
