"""Gemini batch mode: request lines and the HTTP client (result lines: :mod:`.gemini_lines`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import attrs
import orjson

from pairbatch._fs import atomic_writer
from pairbatch.errors import ProviderError
from pairbatch.models import BatchState, BatchStatus, Candidate, Job, Provider, RequestCounts
from pairbatch.providers import gemini_profiles
from pairbatch.providers.base import (
    BackendBase,
    Downloaded,
    JsonApiClient,
    Options,
    ProviderInfo,
    read_request_lines,
    reject_unknown,
)
from pairbatch.providers.gemini_lines import fast_line, parse_line
from pairbatch.providers.gemini_upload import CHUNK_BYTES, ResumableUpload
from pairbatch.providers.profiles import (
    PreflightAnswer,
    StateWarner,
    bare_model,
    preflight_answer,
)
from pairbatch.retry import error_details
from pairbatch.threads import to_thread

log = logging.getLogger("pairbatch.providers.gemini")

LIMITS = gemini_profiles.LIMITS
check_limits = LIMITS.check


class GeminiBackend(BackendBase):
    provider = Provider.GEMINI
    limits = LIMITS

    def prepare_options(self, model: str, options: Options) -> dict[str, Any]:
        """Options checked against the Gemini family's profile (:mod:`.gemini_profiles`)."""
        reject_unknown(self.provider, options, gemini_profiles.OPTIONS)
        return gemini_profiles.prepare(model, options)

    def request_line(
        self, custom_id: str, prompt: str, model: str, options: Options
    ) -> dict[str, Any]:
        """A line of the file-input form, ``{"key", "request"}``; inline batches reuse it."""
        config: dict[str, Any] = {}
        for name, wire in (
            ("temperature", "temperature"),
            ("top_p", "topP"),
            ("top_k", "topK"),
            ("max_output_tokens", "maxOutputTokens"),
        ):
            if options.get(name) is not None:
                config[wire] = options[name]
        thinking: dict[str, Any] = {}
        if options.get("include_thoughts"):
            thinking["includeThoughts"] = True
        if options.get("thinking_level"):
            thinking["thinkingLevel"] = options["thinking_level"]
        if options.get("thinking_budget") is not None:
            thinking["thinkingBudget"] = options["thinking_budget"]
        if thinking:
            config["thinkingConfig"] = thinking
        request: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
        if config:
            request["generationConfig"] = config
        return {"key": custom_id, "request": request}


# ---------------------------------------------------------------- HTTP client

INLINE_LIMIT_BYTES = 10_000_000  # the documented inline limit is 20 MB; keep clear of it
_LIST_PAGES = 10
# REST BatchState names, and the SDK's JobState names for the same (and Vertex's extra
# ones); the prefixes are cut before the lookup.
_STATES = {
    "PENDING": BatchState.PENDING,
    "QUEUED": BatchState.PENDING,
    "RUNNING": BatchState.RUNNING,
    "CANCELLING": BatchState.RUNNING,
    "PAUSED": BatchState.RUNNING,
    "UPDATING": BatchState.RUNNING,
    "SUCCEEDED": BatchState.SUCCEEDED,
    "FAILED": BatchState.FAILED,
    "CANCELLED": BatchState.CANCELLED,
    "EXPIRED": BatchState.EXPIRED,
}
# Vertex's JOB_STATE_PARTIALLY_SUCCEEDED: ended, some requests failed; results salvaged.
_PARTIAL = "PARTIALLY_SUCCEEDED"
INLINE_REF = "inline"


def display_name(job: Job) -> str:
    return f"pairbatch-{job.run_tag}-{job.segment_index}"


def _inline_body(path: Path, name: str) -> bytes:
    items = []
    for line in read_request_lines(path):
        record = orjson.loads(line)
        items.append({"request": record["request"], "metadata": {"key": record["key"]}})
    return orjson.dumps(
        {"batch": {"display_name": name, "input_config": {"requests": {"requests": items}}}}
    )


def _write_inline_results(responses: list[Any], dest: Path) -> int:
    """Inline results, as the same ``{"key", "response"|"error"}`` lines a file batch has."""
    with atomic_writer(dest) as handle:
        for item in responses:
            if not isinstance(item, dict):
                continue
            line: dict[str, Any] = {"key": (item.get("metadata") or {}).get("key")}
            if "error" in item:
                line["error"] = item["error"]
            else:
                line["response"] = item.get("response")
            handle.write(orjson.dumps(line) + b"\n")
    return len(responses)


def _output(batch: dict[str, Any]) -> dict[str, Any]:
    output = (batch.get("metadata") or {}).get("output") or batch.get("response") or {}
    return output if isinstance(output, dict) else {}


def _inline_responses(batch: dict[str, Any]) -> list[Any] | None:
    inlined = _output(batch).get("inlinedResponses")
    if isinstance(inlined, dict):
        inlined = inlined.get("inlinedResponses")
    return inlined if isinstance(inlined, list) else None


def _operation_error(batch: dict[str, Any]) -> str | None:
    """A failed operation's ``error`` Status ({code, message, status}) as one line."""
    error = batch.get("error")
    if not isinstance(error, dict):
        return None
    label = error.get("status") or error.get("code")
    message = error.get("message")
    text = ": ".join(str(v) for v in (label, message) if v not in (None, ""))
    return text or None


@attrs.define(repr=False)
class GeminiClient(JsonApiClient):
    """Gemini batch mode over the shared transport.

    ``api_version`` (``v1beta`` or ``v1``) is used for every path; ``submit`` takes it
    from the prepared options, and a client made to poll a stored batch is given the
    run's through :meth:`use_options`.
    """

    provider: Provider = Provider.GEMINI
    api_version: str = "v1beta"
    # Inline results arrive in the final status body; keeping it saves fetching the
    # whole payload a second time to download it.
    _finished: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    _warn_state: StateWarner = attrs.field(factory=lambda: StateWarner(log), init=False)
    #: Upload chunk size (8 MiB as the SDK; smaller in tests).
    upload_chunk_bytes: int = CHUNK_BYTES

    def _headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self._api_key, "content-type": "application/json"}

    def use_options(self, options: Options) -> None:
        self._use_version(options)

    def _use_version(self, options: Options | None) -> str:
        version = (options or {}).get("api_version") or self.api_version
        self.api_version = str(version)
        return self.api_version

    async def submit(self, job: Job, requests_path: Path, options: Options) -> str:
        version = self._use_version(options)
        name = display_name(job)
        size = (await to_thread(requests_path.stat)).st_size
        inline = options.get("inline")
        if inline is None:
            inline = size <= INLINE_LIMIT_BYTES
        path = f"/{version}/models/{bare_model(job.model)}:batchGenerateContent"
        if inline:
            body = await to_thread(_inline_body, requests_path, name)
        else:
            upload = ResumableUpload(
                self.transport,
                self.retry,
                f"{self.base_url}/upload/{version}/files",
                self._headers(),
                chunk_bytes=self.upload_chunk_bytes,
            )
            file_name = await upload.run(requests_path, size, name)
            body = orjson.dumps(
                {"batch": {"display_name": name, "input_config": {"file_name": file_name}}}
            )
        batch = await self._call("POST", path, data=body, idempotent=False)
        batch_name = batch.get("name") or batch.get("id")
        if not batch_name:
            raise ProviderError(self.provider.value, None, "create answer has no batch name")
        return str(batch_name)

    async def preflight(self, line: dict[str, Any], options: Options) -> PreflightAnswer:
        """One ``generateContent`` call with the line's exact ``request``."""
        version = self._use_version(options)
        model = (options or {}).get("model") or line.get("model")
        if not model:
            raise ProviderError(self.provider.value, None, "pre-flight needs the model name")
        started = time.monotonic()
        response = await self._call(
            "POST",
            f"/{version}/models/{bare_model(str(model))}:generateContent",
            json=line["request"],
        )
        latency = time.monotonic() - started
        wrapped = {"key": line.get("key"), "response": response}
        return preflight_answer(parse_line, wrapped, latency, options)

    async def status(self, batch_id: str) -> BatchStatus:
        batch = await self._call("GET", f"/{self.api_version}/{batch_id}")
        metadata = batch.get("metadata") or {}
        raw = str(metadata.get("state") or batch.get("state") or "STATE_UNSPECIFIED")
        short = raw.removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")
        output = _output(batch)
        has_output = bool(output.get("responsesFile")) or _inline_responses(batch) is not None
        error = _operation_error(batch)
        ending: str | None = None
        state = _STATES.get(short)
        unknown = False
        if short == _PARTIAL:
            state = BatchState.SUCCEEDED if has_output else BatchState.FAILED
            ending = "partially_succeeded"
        elif state is None:
            unknown = True
            self._warn_state(self.provider.value, batch_id, raw)
            if batch.get("done") is True:
                # Whatever the word, the operation is over.
                state = BatchState.SUCCEEDED if has_output and not error else BatchState.FAILED
            else:
                state = BatchState.RUNNING
        stats = metadata.get("batchStats") or {}
        output_ref: str | None = None
        if state.is_terminal:
            if output.get("responsesFile"):
                output_ref = str(output["responsesFile"])
            elif _inline_responses(batch) is not None:
                output_ref = INLINE_REF
                self._finished[batch_id] = batch
        return BatchStatus(
            batch_id=batch_id,
            state=state,
            raw_state=short,
            counts=RequestCounts(
                total=_int(stats.get("requestCount")),
                succeeded=_int(stats.get("successfulRequestCount")),
                failed=_int(stats.get("failedRequestCount")),
                processing=_int(stats.get("pendingRequestCount")),
            ),
            output_ref=output_ref,
            ending=ending,
            error=error,
            unknown_state=unknown,
        )

    async def download(self, job: Job, status: BatchStatus) -> Downloaded:
        dest = Path(job.batch_output_path)
        if status.output_ref == INLINE_REF:
            batch = self._finished.pop(status.batch_id, None)
            if batch is None:
                batch = await self._call("GET", f"/{self.api_version}/{status.batch_id}")
            responses = _inline_responses(batch) or []
            await to_thread(_write_inline_results, responses, dest)
            return Downloaded(output_path=dest)
        if status.output_ref:
            await self.transport.download(
                self.provider.value,
                f"{self.base_url}/download/{self.api_version}/{status.output_ref}:download",
                dest,
                headers=self._headers(),
                params={"alt": "media"},
                retry=self.retry,
                origin=self.base_url,
            )
            return Downloaded(output_path=dest)
        return Downloaded(output_path=None)

    async def cancel(self, batch_id: str) -> None:
        await self._call("POST", f"/{self.api_version}/{batch_id}:cancel")

    async def find_batches(self, job: Job) -> list[Candidate]:
        """Every batch whose display name carries this run's tag and this segment."""
        wanted = display_name(job)
        found: list[Candidate] = []
        token: str | None = None
        for _ in range(_LIST_PAGES):
            params = {"pageSize": "100"} | ({"pageToken": token} if token else {})
            page = await self._call("GET", f"/{self.api_version}/batches", params=params)
            for operation in page.get("operations") or page.get("batches") or []:
                metadata = operation.get("metadata") or {}
                name = metadata.get("displayName") or operation.get("displayName")
                if name == wanted:
                    found.append(
                        Candidate(str(operation.get("name")), proven=True, detail="display name")
                    )
            token = page.get("nextPageToken")
            if not token:
                break
        return found


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return None


BACKEND = GeminiBackend(parse_line, fast_line, GeminiClient)


def per_day_quota(body: object) -> bool:
    """A ``...PerDay...`` quota violation: nothing succeeds again before the day ends."""
    for detail in error_details(body):
        violations = detail.get("violations")
        if isinstance(violations, list) and any(
            isinstance(v, dict) and "PerDay" in str(v.get("quotaId", "")) for v in violations
        ):
            return True
    return False


INFO = ProviderInfo(
    provider=Provider.GEMINI,
    display="Google Gemini",
    key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    base_url_env="GEMINI_BASE_URL",
    default_base_url="https://generativelanguage.googleapis.com",
    options=gemini_profiles.OPTIONS,
    backend=BACKEND,
    batch_noun="name",
    exhausted_429=per_day_quota,
)
