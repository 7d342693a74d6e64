"""OpenAI Files and Batch API routes (``/v1/files``, ``/v1/batches``)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from pairbatch.testing._core import Core, route_name
from pairbatch.testing._http import OPENAI, error_response, json_response, read_json, stream_blob
from pairbatch.testing._openai_input import (
    KNOWN_ENDPOINTS,
    PARSE_IN_THREAD,
    SUPPORTED_ENDPOINTS,
    StoredFile,
    add_usage,
    check_metadata,
    error_line,
    parse_input,
    zero_usage,
)
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
from pairbatch.testing.judge import fixed_judge, openai_prompt, tokens
from pairbatch.testing.rules import check_openai
from pairbatch.testing.state import Batch, EndKind, Outcome, Phase, Request, View, shuffled

logger = logging.getLogger("pairbatch.testing")


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
        problem = check_metadata(metadata)
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
        if len(data) > PARSE_IN_THREAD:
            items, errors, model = await asyncio.to_thread(parse_input, data, endpoint)
        else:
            items, errors, model = parse_input(data, endpoint)
        batch_id = "batch_" + secrets.token_hex(16)
        enqueued = sum(tokens(openai_prompt(body) or "") for _, body in items)
        info: dict[str, Any] = {
            "endpoint": endpoint,
            "input_file_id": stored.id,
            "completion_window": "24h",
            "metadata": metadata,
            "model": model,
            "enqueued_tokens": enqueued,
        }
        limit = self.core.fault_config(OPENAI).enqueued_token_limit
        if not errors and limit is not None and self._queued_tokens() + enqueued > limit:
            errors = [_queue_full(model, limit)]
        batch = self.core.create_batch(
            OPENAI,
            batch_id,
            [(cid, body, None) for cid, body in items],
            info=info,
            errors=errors,
        )
        if not errors and batch.fate.value == "failed":
            batch.errors.append(dict(_FAULT_FAILED))  # each batch its own record
        return json_response(self.batch_json(batch))

    def _queued_tokens(self) -> int:
        """Input tokens of the batches still in the queue (not yet ended)."""
        now = self.core.now()
        return sum(
            int(batch.info.get("enqueued_tokens") or 0)
            for batch in self.core.batches[OPENAI].values()
            if not batch.view(now).terminal
        )

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
            "usage": batch.info.get("usage", zero_usage()),
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
        usage = zero_usage()
        for request, outcome in zip(batch.requests, view.outcomes, strict=True):
            if outcome is None:
                continue
            line, body = self._line(batch, request, outcome, created)
            (ok_lines if body is not None else error_lines).append(orjson.dumps(line))
            if body is not None:
                add_usage(usage, body.get("usage", {}))
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
            return error_line(line, request, ident), None
        refusal = check_openai(
            batch.info["endpoint"], body, refuse_unknown=self.core.refuse_unknown_models
        )
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
            return error_line(line, request, ident, server=True), None
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
        batch.info["usage"] = zero_usage()


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


# The ``batch_failed_rate`` fault's reason: a failure the client cannot mend by sending
# the batch again (a full queue is ``enqueued_token_limit``'s, which a client may resend).
_FAULT_FAILED: dict[str, Any] = {
    "code": "emulator_fault",
    "message": "The batch failed (emulator fault: batch_failed_rate).",
    "param": None,
    "line": None,
}


def _queue_full(model: str | None, limit: int) -> dict[str, Any]:
    """The validation error of a batch over the enqueued-token limit (the real wording,
    as users report it: "Enqueued token limit reached for gpt-4o in organization ...")."""
    return {
        "code": "token_limit_exceeded",
        "message": f"Enqueued token limit reached for {model or 'this model'} in organization "
        f"org-emulator. Limit: {limit:,} enqueued tokens. Please try again once some "
        "in_progress batches have been completed.",
        "param": None,
        "line": None,
    }
