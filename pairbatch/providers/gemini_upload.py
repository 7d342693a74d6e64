"""Gemini's resumable upload, streamed from disk in chunks.

The protocol, as google-genai's ``_api_client.py`` upload path speaks it (and the
provider wire spec §3.6): a ``start`` request returns a one-time ``x-goog-upload-url``;
each chunk is POSTed there with ``X-Goog-Upload-Command: upload`` and its
``X-Goog-Upload-Offset`` (``upload, finalize`` for the last), and each answer's
``x-goog-upload-status`` must read ``active`` (more expected) or, after the last,
``final``. After an interruption, ``X-Goog-Upload-Command: query`` answers with
``x-goog-upload-size-received``, where the upload goes on. The upload URL is the
credential: no API key is sent to it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from pairbatch.errors import ProviderError
from pairbatch.threads import to_thread

if TYPE_CHECKING:
    from pairbatch.retry import RetryPolicy
    from pairbatch.transport import Response, Transport

log = logging.getLogger("pairbatch.providers.gemini")

CHUNK_BYTES = 8 * 1024 * 1024  # the SDK's chunk size
MAX_RESUMES = 5
_PROVIDER = "gemini"


def _read_chunk(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def _interrupted(exc: ProviderError) -> bool:
    """A failure after which the upload may still be alive on the server."""
    return exc.retryable or exc.status is None or exc.status >= 500 or exc.status in (408, 429)


def _file_name(response: Response) -> str | None:
    try:
        info: Any = response.json()
    except ValueError:
        return None
    file_info = info.get("file") if isinstance(info, dict) else None
    if isinstance(file_info, dict) and file_info.get("name"):
        return str(file_info["name"])
    return None


@attrs.define
class ResumableUpload:
    """One file's upload over the shared transport (its limiter and retry policy)."""

    transport: Transport
    retry: RetryPolicy
    start_url: str
    headers: dict[str, str]
    chunk_bytes: int = CHUNK_BYTES

    async def run(self, path: Path, size: int, display_name: str) -> str:
        """Upload ``path`` (``size`` bytes); return the file's name (``files/...``)."""
        upload_url = await self._start(size, display_name)
        # A chunk is sent once: after a failure the server, not a blind resend, says how
        # much arrived (a resend at a stale offset would be refused).
        once = attrs.evolve(self.retry, max_tries=1)
        offset = 0
        resumes = 0
        while True:
            chunk = await to_thread(_read_chunk, path, offset, self.chunk_bytes)
            last = offset + len(chunk) >= size
            command = "upload, finalize" if last else "upload"
            try:
                answer = await self.transport.request(
                    _PROVIDER,
                    "POST",
                    upload_url,
                    headers={"X-Goog-Upload-Command": command, "X-Goog-Upload-Offset": str(offset)},
                    data=chunk,
                    retry=once,
                )
                status = answer.headers.get("x-goog-upload-status")
            except ProviderError as exc:
                if not _interrupted(exc):
                    raise
                status, answer = None, None
                log.info("gemini upload interrupted at offset %d (%s)", offset, exc.message)
            if status is None:
                # No answer, or one without the status header (the SDK retries those):
                # ask the server where it stands.
                resumes += 1
                if resumes > MAX_RESUMES:
                    raise ProviderError(
                        _PROVIDER, None, f"upload kept failing; gave up after {MAX_RESUMES} resumes"
                    )
                await asyncio.sleep(self.retry.backoff_delay(resumes - 1))
                state, received, final = await self._query(upload_url)
                if state == "final":
                    if final is None:
                        raise ProviderError(_PROVIDER, None, "upload finalized but gave no file")
                    return final
                if not 0 <= received <= size:
                    raise ProviderError(_PROVIDER, None, f"upload query gave offset {received}")
                offset = received
                continue
            if last:
                name = _file_name(answer) if answer is not None else None
                if status != "final" or name is None:
                    raise ProviderError(
                        _PROVIDER,
                        answer.status if answer is not None else None,
                        f"upload did not finalize (x-goog-upload-status {status!r})",
                    )
                return name
            if status != "active":
                raise ProviderError(
                    _PROVIDER,
                    answer.status if answer is not None else None,
                    f"upload is no longer active (x-goog-upload-status {status!r})",
                )
            offset += len(chunk)

    async def _start(self, size: int, display_name: str) -> str:
        start = await self.transport.request(
            _PROVIDER,
            "POST",
            self.start_url,
            headers=self.headers
            | {
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": str(size),
                "X-Goog-Upload-Header-Content-Type": "application/jsonl",
            },
            json={"file": {"display_name": display_name}},
            retry=self.retry,
        )
        upload_url = start.headers.get("x-goog-upload-url")
        if not upload_url:
            raise ProviderError(_PROVIDER, start.status, "upload start gave no URL")
        return upload_url

    async def _query(self, upload_url: str) -> tuple[str, int, str | None]:
        """(``x-goog-upload-status``, bytes received, file name if final)."""
        answer = await self.transport.request(
            _PROVIDER,
            "POST",
            upload_url,
            headers={"X-Goog-Upload-Command": "query"},
            data=b"",
            retry=self.retry,
        )
        state = answer.headers.get("x-goog-upload-status") or ""
        if state not in ("active", "final"):
            raise ProviderError(
                _PROVIDER, answer.status, f"upload is no longer active (status {state!r})"
            )
        try:
            received = int(answer.headers.get("x-goog-upload-size-received", ""))
        except ValueError:
            received = -1
        return state, received, _file_name(answer) if state == "final" else None
