"""Gemini batch mode routes (``/v1beta/...`` and ``/v1/...``) and the File API reads."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from pairbatch.testing._core import Core, rfc3339, route_name
from pairbatch.testing._gemini_upload import GeminiFile, Uploads, pick, token
from pairbatch.testing._http import (
    GEMINI,
    OPENAI,
    error_response,
    json_response,
    read_json,
    stream_blob,
)
from pairbatch.testing.blobs import Blob, BytesBlob, LineRenderer, SyntheticBlob
from pairbatch.testing.bodies import gemini_limit, gemini_response, gemini_thinking, make_answer
from pairbatch.testing.faults import (
    BATCHES_CANCEL,
    BATCHES_CREATE,
    BATCHES_DELETE,
    BATCHES_GET,
    BATCHES_LIST,
    FILES_DOWNLOAD,
    FILES_GET,
    UPLOAD_CHUNK,
    UPLOAD_START,
    stable_int,
)
from pairbatch.testing.judge import fixed_judge, gemini_prompt
from pairbatch.testing.rules import check_gemini, gemini_model, model_not_found
from pairbatch.testing.state import Batch, EndKind, Outcome, Phase, Request, View

logger = logging.getLogger("pairbatch.testing")

BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
MAX_INLINE_BYTES = 20 * 1024 * 1024


class GeminiRoutes:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.files: dict[str, GeminiFile] = {}
        self.uploads = Uploads(core, self.files)

    def register(self, app: web.Application) -> None:
        """Every route under both ``/v1beta`` and ``/v1``, as the API serves them.

        Under ``/v1`` three GET paths are also OpenAI's (``/v1/batches``,
        ``/v1/batches/{id}``, ``/v1/files/{id}``): those are not registered twice but
        declared as *twins* of the OpenAI routes, and the request layer hands a request
        with Google credentials (``x-goog-api-key`` or ``?key=``) to the Gemini handler.
        """
        add = app.router.add_route
        counter: dict[str, int] = {}

        def name(endpoint: str) -> str:
            n = counter.get(endpoint, 0)
            counter[endpoint] = n + 1
            return route_name(GEMINI, endpoint, n)

        for version in ("v1beta", "v1"):
            v = f"/{version}"
            add(
                "POST",
                v + "/models/{model:[^/:]+}:batchGenerateContent",
                self.create,
                name=name(BATCHES_CREATE),
            )
            add(
                "DELETE",
                v + "/batches/{batch_id:[^/:]+}",
                self.delete,
                name=name(BATCHES_DELETE),
            )
            add(
                "POST",
                v + "/batches/{batch_id:[^/:]+}:cancel",
                self.cancel,
                name=name(BATCHES_CANCEL),
            )
            add("POST", f"/upload{v}/files", self.uploads.start, name=name(UPLOAD_START))
            # The data legs carry no key; the middleware tells them apart by this name.
            add(
                "POST",
                f"/upload{v}/files/session/{{upload_id}}",
                self.uploads.leg,
                name=name(UPLOAD_CHUNK),
            )
            # The REST docs use the /download prefix, the SDK does not: serve both.
            for prefix in (f"/download{v}", v):
                add(
                    "GET",
                    prefix + "/files/{file_id:[^/:]+}:download",
                    self.download,
                    name=name(FILES_DOWNLOAD),
                )
            if version == "v1":
                continue
            add("GET", v + "/batches", self.list, name=name(BATCHES_LIST))
            add("GET", v + "/batches/{batch_id:[^/:]+}", self.get, name=name(BATCHES_GET))
            add("GET", v + "/files/{file_id:[^/:]+}", self.get_file, name=name(FILES_GET))
        twins = self.core.twins
        twins[route_name(OPENAI, BATCHES_LIST)] = (BATCHES_LIST, self.list)
        twins[route_name(OPENAI, BATCHES_GET)] = (BATCHES_GET, self.get)
        twins[route_name(OPENAI, FILES_GET)] = (FILES_GET, self.get_file)

    # -- files ---------------------------------------------------------------------------

    def _file(self, file_id: str) -> GeminiFile | None:
        stored = self.files.get(file_id)
        if stored is None and file_id.startswith("batch-"):
            batch = self.core.batches[GEMINI].get(file_id.removeprefix("batch-"))
            if batch is not None:
                view = batch.view(self.core.now())
                if view.end is EndKind.COMPLETED and batch.info.get("mode") == "file":
                    self._render(batch, view)
                    stored = self.files.get(file_id)
        return stored

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        stored = self._file(file_id)
        if stored is None:
            return error_response(GEMINI, 404, f"File files/{file_id} was not found.")
        return json_response(stored.to_json(self.core.origin))

    async def download(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        stored = self._file(file_id)
        if stored is None:
            return error_response(GEMINI, 404, f"File files/{file_id} was not found.")
        return await stream_blob(request, stored.blob, content_type="application/octet-stream")

    # -- batches -------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        if (request.content_length or 0) > MAX_INLINE_BYTES:
            return error_response(
                GEMINI, 400, f"Request payload size exceeds the limit: {MAX_INLINE_BYTES} bytes."
            )
        try:
            payload = await read_json(request)
        except ValueError as exc:
            return error_response(GEMINI, 400, f"Invalid JSON payload received. {exc}")
        model = request.match_info["model"].removeprefix("models/")
        if self.core.refuse_unknown_models and gemini_model(model) is None:
            refusal = model_not_found(GEMINI, model, request.path.split("/")[1])
            return json_response(refusal.body, status=refusal.status)
        spec = pick(payload, "batch")
        if spec is None and isinstance(payload, dict):
            spec = payload
        if not isinstance(spec, dict):
            return error_response(GEMINI, 400, "Invalid JSON payload: 'batch' must be an object.")
        config = pick(spec, "inputConfig", "input_config")
        if not isinstance(config, dict):
            return error_response(GEMINI, 400, "batch.input_config is required.")
        requests = pick(config, "requests")
        file_name = pick(config, "fileName", "file_name")
        if (requests is None) == (file_name is None):
            return error_response(
                GEMINI,
                400,
                "batch.input_config must set exactly one of 'requests' and 'file_name'.",
            )
        items: list[tuple[str, dict[str, Any], Any]] = []
        if requests is not None:
            inner = pick(requests, "requests")
            if not isinstance(inner, list) or not inner:
                return error_response(
                    GEMINI, 400, "batch.input_config.requests.requests must be a non-empty list."
                )
            for i, entry in enumerate(inner):
                request_body = pick(entry, "request")
                problem = _check_request(
                    request_body, f"batch.input_config.requests.requests[{i}].request"
                )
                if problem:
                    return error_response(GEMINI, 400, problem)
                metadata = pick(entry, "metadata")
                key = pick(metadata, "key")
                custom_id = str(key) if key is not None else f"#{i}"
                items.append((custom_id, request_body, metadata))
            mode = "inline"
        else:
            file_id = str(file_name).removeprefix("files/")
            stored = self.files.get(file_id)
            if stored is None or not isinstance(stored.blob, BytesBlob):
                return error_response(
                    GEMINI, 400, f"File {file_name} was not found or is not an uploaded input file."
                )
            parsed = _parse_file(stored.blob.data)
            if isinstance(parsed, str):
                return error_response(GEMINI, 400, parsed)
            items = parsed
            mode = "file"
        info = {
            "model": f"models/{model}",
            "display_name": str(pick(spec, "displayName", "display_name") or ""),
            "mode": mode,
            "file_name": file_name,
        }
        batch = self.core.create_batch(GEMINI, token(36), items, info=info, cancel_delay_share=0.0)
        return json_response(self.operation(batch, brief=True))

    def _batch_or_404(self, request: web.Request) -> Batch | web.Response:
        batch_id = request.match_info["batch_id"]
        batch = self.core.batches[GEMINI].get(batch_id)
        if batch is None:
            return error_response(GEMINI, 404, f"Batch batches/{batch_id} was not found.")
        return batch

    async def get(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch_or_404(request)
        if isinstance(batch, web.Response):
            return batch
        return json_response(self.operation(batch))

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch_or_404(request)
        if isinstance(batch, web.Response):
            return batch
        if not batch.view(self.core.now()).terminal:
            batch.cancel_requested = self.core.now()
        return json_response({})

    async def delete(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch_or_404(request)
        if isinstance(batch, web.Response):
            return batch
        del self.core.batches[GEMINI][batch.id]
        return json_response({})

    async def list(self, request: web.Request) -> web.StreamResponse:
        try:
            size = int(request.query.get("pageSize", request.query.get("page_size", "50")))
            token = request.query.get("pageToken", request.query.get("page_token", ""))
            start = int(token.removeprefix("o")) if token else 0
        except ValueError:
            return error_response(GEMINI, 400, "Invalid pageSize or pageToken.")
        if size < 1:
            return error_response(GEMINI, 400, "pageSize must be positive.")
        size = min(size, 1000)
        newest_first = list(reversed(self.core.batches[GEMINI].values()))
        page = newest_first[start : start + size]
        body: dict[str, Any] = {"operations": [self.operation(b, brief=True) for b in page]}
        if start + size < len(newest_first):
            body["nextPageToken"] = f"o{start + size}"
        return json_response(body)

    # -- rendering -----------------------------------------------------------------------

    def operation(self, batch: Batch, *, brief: bool = False) -> dict[str, Any]:
        """The Operation; ``brief`` leaves inlined responses out, as list does."""
        view = batch.view(self.core.now())
        wall = self.core.wall
        name = f"batches/{batch.id}"
        state = _state(view)
        transitions = [batch.created, view.started_at, view.cancel_at, view.ended_at]
        updated = max(t for t in transitions if t is not None)
        stats = {
            "requestCount": batch.n_requests,
            "successfulRequestCount": view.count(Outcome.SUCCEEDED, Outcome.NO_TAG),
            "failedRequestCount": view.count(Outcome.ERRORED, Outcome.CANCELED, Outcome.EXPIRED),
            "pendingRequestCount": 0 if view.terminal else view.pending,
        }
        metadata: dict[str, Any] = {
            "@type": BATCH_TYPE,
            "model": batch.info["model"],
            "displayName": batch.info["display_name"],
            "createTime": rfc3339(wall(batch.created)),
            "updateTime": rfc3339(wall(updated)),
            # int64 counters travel as strings, and zero counters are left out.
            "batchStats": {k: str(v) for k, v in stats.items() if v},
            "state": state,
            "name": name,
        }
        if batch.info.get("file_name"):
            metadata["inputConfig"] = {"fileName": batch.info["file_name"]}
        if view.ended_at is not None:
            metadata["endTime"] = rfc3339(wall(view.ended_at))
        op: dict[str, Any] = {"name": name, "metadata": metadata}
        if not view.terminal:
            return op
        op["done"] = True
        if view.end is EndKind.COMPLETED:
            self._render(batch, view)
            if batch.info["mode"] == "file":
                output: dict[str, Any] = {"responsesFile": f"files/batch-{batch.id}"}
            elif brief:
                output = {}
            else:
                output = {"inlinedResponses": {"inlinedResponses": batch.info["inlined"]}}
            if output:
                metadata["output"] = output
                op["response"] = {"@type": OUTPUT_TYPE, **output}
        elif view.end is EndKind.FAILED:
            op["error"] = {
                "code": 13,
                "message": "The batch failed: an internal error occurred while processing it.",
            }
        return op

    def _render(self, batch: Batch, view: View) -> None:
        if batch.rendered:
            return
        batch.rendered = True
        if batch.synthetic_total is not None:
            return
        entries = [
            self._entry(batch, request, outcome)
            for request, outcome in zip(batch.requests, view.outcomes, strict=True)
            if outcome is not None
        ]
        if batch.info["mode"] == "inline":
            batch.info["inlined"] = entries
            return
        # File output keeps input order (unlike the OpenAI and Anthropic files).
        lines = []
        for request, entry in zip(batch.requests, entries, strict=True):
            line: dict[str, Any] = {"key": request.custom_id}
            line.update({k: v for k, v in entry.items() if k != "metadata"})
            lines.append(orjson.dumps(line))
        self._add_output(batch, BytesBlob(b"\n".join(lines) + b"\n" if lines else b""))

    def _add_output(self, batch: Batch, blob: Blob) -> None:
        file_id = f"batch-{batch.id}"
        self.files[file_id] = GeminiFile(
            id=file_id,
            display_name=file_id,
            mime_type="application/jsonl",
            created=self.core.wall(self.core.now()),
            blob=blob,
            source="GENERATED",
        )
        batch.blobs["output"] = blob

    def _entry(self, batch: Batch, request: Request, outcome: Outcome) -> dict[str, Any]:
        entry: dict[str, Any] = {}
        refusal = check_gemini(str(batch.info["model"]), request.body)
        if outcome is Outcome.ERRORED:
            entry["error"] = _error(request.custom_id)
        elif refusal is not None:
            # A request the model refuses errors alone; the rest of the batch goes on.
            entry["error"] = refusal.body["error"]
        else:
            thinks, show = gemini_thinking(request.body)
            try:
                answer = make_answer(
                    self.core.judge,
                    gemini_prompt(request.body),
                    no_tag=outcome is Outcome.NO_TAG,
                    reasoning=thinks,
                    show_thoughts=show,
                    limit=gemini_limit(request.body),
                )
                ident = f"{stable_int(batch.id, request.index):016x}"
                entry["response"] = gemini_response(
                    batch.info["model"].removeprefix("models/"), answer, ident=ident
                )
            except Exception:
                logger.exception("judge failed on %s", request.custom_id)
                entry["error"] = _error(request.custom_id, server=True)
        if request.metadata is not None:
            entry["metadata"] = request.metadata
        return entry

    def synthetic_renderer(self, batch: Batch) -> LineRenderer:
        model = str(batch.info["model"]).removeprefix("models/")
        templates = {}
        for winner in ("SAMPLE_1", "SAMPLE_2"):
            answer = make_answer(
                fixed_judge(winner),
                "synthetic prompt " * 20,
                no_tag=False,
                reasoning=False,
                show_thoughts=False,
            )
            templates[winner] = gemini_response(model, answer, ident="synthetic")

        def render(custom_id: str, position: int) -> bytes:
            winner = "SAMPLE_1" if position % 2 == 0 else "SAMPLE_2"
            return orjson.dumps({"key": custom_id, "response": templates[winner]})

        return render

    def attach_synthetic(self, batch: Batch, blob: SyntheticBlob) -> None:
        self._add_output(batch, blob)


def _state(view: View) -> str:
    if view.end is not None:
        return {
            EndKind.COMPLETED: "BATCH_STATE_SUCCEEDED",
            EndKind.FAILED: "BATCH_STATE_FAILED",
            EndKind.EXPIRED: "BATCH_STATE_EXPIRED",
            EndKind.CANCELLED: "BATCH_STATE_CANCELLED",
        }[view.end]
    return "BATCH_STATE_PENDING" if view.phase is Phase.PENDING else "BATCH_STATE_RUNNING"


def _error(custom_id: str, *, server: bool = False) -> dict[str, Any]:
    if server or stable_int("kind", custom_id) % 2:
        return {
            "code": 500,
            "message": "An internal error has occurred. Please retry or "
            "report in https://developers.generativeai.google/guide/troubleshooting",
            "status": "INTERNAL",
        }
    return {
        "code": 400,
        "message": "The input token count exceeds the maximum number of tokens allowed.",
        "status": "INVALID_ARGUMENT",
    }


def _check_request(body: Any, where: str) -> str | None:
    if not isinstance(body, dict):
        return f"{where} is required and must be an object."
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return f"{where}.contents must be a non-empty list."
    return None


def _parse_file(data: bytes) -> list[tuple[str, dict[str, Any], Any]] | str:
    items: list[tuple[str, dict[str, Any], Any]] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return f"Invalid JSON on line {number} of the input file."
        if not isinstance(line, dict):
            return f"Line {number} of the input file is not a JSON object."
        problem = _check_request(line.get("request"), f"line {number}: request")
        if problem:
            return problem
        key = line.get("key")
        items.append((str(key) if key is not None else f"#{number - 1}", line["request"], None))
    if not items:
        return "The input file has no requests."
    return items
