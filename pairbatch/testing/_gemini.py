"""Gemini batch mode routes (``/v1beta/...``), with the resumable File API upload."""

from __future__ import annotations

import logging
import secrets
import string
from typing import Any

import attrs
import orjson
from aiohttp import web

from pairbatch.testing._core import Core, rfc3339, route_name
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
from pairbatch.testing.rules import check_gemini
from pairbatch.testing.state import Batch, EndKind, Outcome, Phase, Request, View

logger = logging.getLogger("pairbatch.testing")

BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
MAX_INLINE_BYTES = 20 * 1024 * 1024
CHUNK_GRANULARITY = 8 * 1024 * 1024
_ID_ALPHABET = string.ascii_lowercase + string.digits


def _token(n: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(n))


def _get(mapping: Any, *names: str) -> Any:
    """Proto-JSON accepts both lowerCamelCase and snake_case keys."""
    if not isinstance(mapping, dict):
        return None
    for name in names:
        if name in mapping:
            return mapping[name]
    return None


@attrs.define(eq=False)
class GeminiFile:
    id: str
    display_name: str
    mime_type: str
    created: float  # wall clock
    blob: Blob
    source: str  # UPLOADED | GENERATED

    def to_json(self, origin: str) -> dict[str, Any]:
        created = rfc3339(self.created)
        body: dict[str, Any] = {
            "name": f"files/{self.id}",
            "displayName": self.display_name,
            "mimeType": self.mime_type,
            "sizeBytes": str(self.blob.size),
            "createTime": created,
            "updateTime": created,
            "expirationTime": rfc3339(self.created + 48 * 3600),
            "sha256Hash": "",
            "uri": f"{origin}/v1beta/files/{self.id}",
            "state": "ACTIVE",
            "source": self.source,
        }
        if self.source == "GENERATED":
            body["downloadUri"] = f"{origin}/download/v1beta/files/{self.id}:download?alt=media"
        return body


@attrs.define(eq=False)
class Upload:
    display_name: str
    mime_type: str
    data: bytearray = attrs.field(factory=bytearray)
    legs: int = 0  # data legs seen, for the upload fault
    faulted: bool = False
    final: dict[str, Any] | None = None  # the file, once finalized (a query still answers)
    received: int = 0  # bytes received, kept once `data` is handed to the file


class GeminiRoutes:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.files: dict[str, GeminiFile] = {}
        self.uploads: dict[str, Upload] = {}

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
            add("POST", f"/upload{v}/files", self.upload, name=name(UPLOAD_START))
            # The data legs carry no key; the middleware tells them apart by this name.
            add(
                "POST",
                f"/upload{v}/files/session/{{upload_id}}",
                self.upload_chunk,
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

    async def upload(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("upload_id"):
            # Some clients keep the query form of the upload URL; serve it as a data leg.
            return await self._chunk(request, request.query["upload_id"])
        protocol = request.headers.get("X-Goog-Upload-Protocol", "").lower()
        command = request.headers.get("X-Goog-Upload-Command", "").lower()
        if protocol != "resumable" or command != "start":
            return error_response(
                GEMINI,
                400,
                "Only the resumable upload protocol is "
                "supported: send X-Goog-Upload-Protocol: resumable and "
                "X-Goog-Upload-Command: start.",
            )
        meta: Any = None
        raw = await request.read()
        if raw:
            try:
                meta = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return error_response(GEMINI, 400, "Invalid JSON payload received.")
        file_meta = _get(meta, "file") or {}
        upload_id = _token(24)
        self.uploads[upload_id] = Upload(
            display_name=str(_get(file_meta, "displayName", "display_name") or upload_id),
            mime_type=str(
                _get(file_meta, "mimeType", "mime_type")
                or request.headers.get("X-Goog-Upload-Header-Content-Type")
                or "application/jsonl"
            ),
        )
        version = request.path.split("/")[2]  # /upload/{version}/files
        url = f"{self.core.origin}/upload/{version}/files/session/{upload_id}"
        return web.Response(
            status=200,
            headers={
                "x-goog-upload-url": url,
                "x-goog-upload-status": "active",
                "x-goog-upload-chunk-granularity": str(CHUNK_GRANULARITY),
            },
        )

    async def upload_chunk(self, request: web.Request) -> web.StreamResponse:
        return await self._chunk(request, request.match_info["upload_id"])

    async def _chunk(self, request: web.Request, upload_id: str) -> web.StreamResponse:
        """One leg of the resumable protocol: ``upload``, ``upload, finalize`` or ``query``.

        google-genai sends 8 MiB legs with ``X-Goog-Upload-Offset`` and re-sends a leg
        whose answer has no ``x-goog-upload-status``; a client that lost a connection
        asks with ``query`` and gets ``x-goog-upload-size-received`` back.
        """
        upload = self.uploads.get(upload_id)
        if upload is None:
            return error_response(GEMINI, 404, "Upload session not found.")
        commands = {
            c.strip() for c in request.headers.get("X-Goog-Upload-Command", "").lower().split(",")
        }
        data = await request.read()
        if "query" in commands:
            status = "final" if upload.final is not None else "active"
            headers = {
                "x-goog-upload-status": status,
                "x-goog-upload-size-received": str(upload.received or len(upload.data)),
                "x-goog-upload-chunk-granularity": str(CHUNK_GRANULARITY),
            }
            if upload.final is not None:
                return json_response({"file": upload.final}, headers=headers)
            return web.Response(status=200, headers=headers)
        if upload.final is not None:
            return error_response(
                GEMINI,
                400,
                "The upload is already finalized.",
                headers={"x-goog-upload-status": "final"},
            )
        if not commands & {"upload", "finalize"}:
            return error_response(
                GEMINI,
                400,
                "X-Goog-Upload-Command must be upload, finalize or query.",
                headers={"x-goog-upload-status": "active"},
            )
        offset_header = request.headers.get("X-Goog-Upload-Offset")
        if offset_header is None:
            return error_response(
                GEMINI,
                400,
                "X-Goog-Upload-Offset is required.",
                headers={"x-goog-upload-status": "active"},
            )
        try:
            offset = int(offset_header)
        except ValueError:
            return error_response(GEMINI, 400, "Invalid X-Goog-Upload-Offset.")
        if offset != len(upload.data):
            return error_response(
                GEMINI,
                400,
                f"Upload offset {offset} does not match the {len(upload.data)}"
                " bytes received so far.",
                headers={"x-goog-upload-status": "active"},
            )
        upload.legs += 1
        faults = self.core.fault_config(GEMINI)
        if (
            faults.upload_fail_leg is not None
            and not upload.faulted
            and upload.legs == faults.upload_fail_leg
        ):
            upload.faulted = True
            self.core.stats.fault(GEMINI, f"upload_{faults.upload_fail_mode}")
            if faults.upload_fail_mode == "reset":
                # Part of the leg arrived before the connection broke.
                upload.data.extend(data[: len(data) // 2])
                if request.transport is not None:
                    request.transport.abort()
                return web.Response(status=500)
            # A front end's error page: no upload status, nothing stored.
            return web.Response(status=503, text="Service Unavailable")
        if "upload" in commands:
            upload.data.extend(data)
        if "finalize" not in commands:
            return web.Response(status=200, headers={"x-goog-upload-status": "active"})
        stored = GeminiFile(
            id=_token(12),
            display_name=upload.display_name,
            mime_type=upload.mime_type,
            created=self.core.wall(self.core.now()),
            blob=BytesBlob(bytes(upload.data)),
            source="UPLOADED",
        )
        self.files[stored.id] = stored
        upload.final = stored.to_json(self.core.origin)
        upload.data = bytearray()  # the bytes live in the file now
        upload.received = stored.blob.size
        return json_response({"file": upload.final}, headers={"x-goog-upload-status": "final"})

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
        model = request.match_info["model"]
        spec = _get(payload, "batch")
        if spec is None and isinstance(payload, dict):
            spec = payload
        if not isinstance(spec, dict):
            return error_response(GEMINI, 400, "Invalid JSON payload: 'batch' must be an object.")
        config = _get(spec, "inputConfig", "input_config")
        if not isinstance(config, dict):
            return error_response(GEMINI, 400, "batch.input_config is required.")
        requests = _get(config, "requests")
        file_name = _get(config, "fileName", "file_name")
        if (requests is None) == (file_name is None):
            return error_response(
                GEMINI,
                400,
                "batch.input_config must set exactly one of 'requests' and 'file_name'.",
            )
        items: list[tuple[str, dict[str, Any], Any]] = []
        if requests is not None:
            inner = _get(requests, "requests")
            if not isinstance(inner, list) or not inner:
                return error_response(
                    GEMINI, 400, "batch.input_config.requests.requests must be a non-empty list."
                )
            for i, entry in enumerate(inner):
                request_body = _get(entry, "request")
                problem = _check_request(
                    request_body, f"batch.input_config.requests.requests[{i}].request"
                )
                if problem:
                    return error_response(GEMINI, 400, problem)
                metadata = _get(entry, "metadata")
                key = _get(metadata, "key")
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
            "display_name": str(_get(spec, "displayName", "display_name") or ""),
            "mode": mode,
            "file_name": file_name,
        }
        batch = self.core.create_batch(GEMINI, _token(36), items, info=info, cancel_delay_share=0.0)
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
