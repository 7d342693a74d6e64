"""The Gemini File API's resumable upload (``/upload/{version}/files``) and file records.

The protocol as google-genai speaks it (``_api_client.py``): a ``start`` leg returns
``x-goog-upload-url``; data legs of 8 MiB carry ``X-Goog-Upload-Command: upload`` (the
last ``upload, finalize``) and ``X-Goog-Upload-Offset``, and each answer carries
``x-goog-upload-status`` (``active`` / ``final``). A leg answered without that header is
re-sent by the SDK; ``query`` reports ``x-goog-upload-size-received`` so a client that
lost a connection resumes from there.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

import attrs
import orjson
from aiohttp import web

from pairbatch.testing._core import Core, rfc3339
from pairbatch.testing._http import GEMINI, error_response, json_response
from pairbatch.testing.blobs import Blob, BytesBlob

CHUNK_GRANULARITY = 8 * 1024 * 1024
MAX_FILE_BYTES = 2 * 1024 * 1024 * 1024
_ID_ALPHABET = string.ascii_lowercase + string.digits


def token(n: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(n))


def pick(mapping: Any, *names: str) -> Any:
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


class Uploads:
    """Upload sessions; finished files land in the ``files`` map shared with the routes."""

    def __init__(self, core: Core, files: dict[str, GeminiFile]) -> None:
        self.core = core
        self.files = files
        self.uploads: dict[str, Upload] = {}

    async def start(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("upload_id"):
            # Some clients keep the query form of the upload URL; serve it as a data leg.
            return await self._chunk(request, request.query["upload_id"])
        declared = request.headers.get("X-Goog-Upload-Header-Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_FILE_BYTES:
            # Files API: at most 2 GB a file.
            return error_response(
                GEMINI, 400, f"File size {declared} exceeds the maximum of {MAX_FILE_BYTES} bytes."
            )
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
        file_meta = pick(meta, "file") or {}
        upload_id = token(24)
        self.uploads[upload_id] = Upload(
            display_name=str(pick(file_meta, "displayName", "display_name") or upload_id),
            mime_type=str(
                pick(file_meta, "mimeType", "mime_type")
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

    async def leg(self, request: web.Request) -> web.StreamResponse:
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
            id=token(12),
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
