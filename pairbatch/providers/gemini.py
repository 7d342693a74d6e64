"""Gemini batch mode: request lines, results parsing and the HTTP client."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import attrs
import orjson

from pairbatch._fs import atomic_writer
from pairbatch.errors import InputError, ProviderError
from pairbatch.models import BatchState, BatchStatus, Candidate, Job, Provider, RequestCounts
from pairbatch.providers.base import (
    BackendBase,
    Downloaded,
    JsonApiClient,
    Options,
    check_bool,
    check_int,
    check_number,
    read_request_lines,
    reject_unknown,
)
from pairbatch.results import (
    Row,
    RowTuple,
    dig,
    int_or_none,
    is_int64,
    text_or_none,
)

log = logging.getLogger("pairbatch.providers.gemini")

_OPTIONS = frozenset(
    {
        "include_thoughts",
        "thinking_level",
        "thinking_budget",
        "temperature",
        "top_p",
        "top_k",
        "max_output_tokens",
        "inline",
    }
)
THINKING_LEVELS = ("minimal", "low", "medium", "high")
_GEMINI_3 = re.compile(r"gemini-3", re.IGNORECASE)
_FLASH = re.compile(r"gemini-3-.*flash", re.IGNORECASE)


class GeminiBackend(BackendBase):
    provider = Provider.GEMINI

    def prepare_options(self, model: str, options: Options) -> dict[str, Any]:
        """Reference rules (``build_gemini_batch_requests``), made safe for Gemini 2.x.

        Gemini 3 models get a ``thinkingLevel`` (default ``low``, title case, ``medium``
        mapped to ``High`` off Flash as the reference does). Other models get no
        thinking level unless asked, since they reject the field; ``thinking_budget``
        is their knob.
        """
        reject_unknown(self.provider, options, _OPTIONS)
        include_thoughts = check_bool("include_thoughts", options.get("include_thoughts", False))
        level = options.get("thinking_level")
        budget = check_int("thinking_budget", options.get("thinking_budget"), low=0)
        gemini3 = bool(_GEMINI_3.search(model))
        if level is not None and level not in THINKING_LEVELS:
            raise InputError(
                f"option 'thinking_level' must be one of {', '.join(THINKING_LEVELS)}, "
                f"got {level!r}"
            )
        if gemini3:
            if budget is not None:
                raise InputError(
                    "option 'thinking_budget' is not used by Gemini 3; use thinking_level"
                )
            level = level or "low"
            flash = bool(_FLASH.search(model))
            if level == "minimal" and not flash:
                raise InputError(
                    "thinking_level='minimal' is only supported by Gemini 3 Flash models"
                )
            if level == "medium" and not flash:
                log.warning("thinking_level='medium' is not supported by %s; using 'high'", model)
                level = "high"
        inline = options.get("inline")
        return {
            "include_thoughts": include_thoughts,
            "thinking_level": level.capitalize() if level else None,
            "thinking_budget": budget,
            "temperature": check_number("temperature", options.get("temperature"), low=0, high=2),
            "top_p": check_number("top_p", options.get("top_p"), low=0, high=1),
            "top_k": check_int("top_k", options.get("top_k")),
            "max_output_tokens": check_int("max_output_tokens", options.get("max_output_tokens")),
            "inline": None if inline is None else check_bool("inline", inline),
        }

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


# ---------------------------------------------------------------- results parsing


def parse_line(obj: dict[str, Any]) -> Row:
    """``{key, response | error}``, the results-file shape (inline results are written in
    it too). Parts flagged ``thought: true`` are thoughts, the rest is the answer."""
    row: Row = {"custom_id": text_or_none(obj.get("key") or dig(obj, "metadata", "key"))}
    row["object_type"] = "generateContent"
    error = obj.get("error")
    response = obj.get("response")
    if isinstance(error, dict):
        row["result_type"] = "errored"
        row["status_code"] = int_or_none(error.get("code"))
        row["error_message"] = text_or_none(error.get("message")) or text_or_none(
            error.get("status")
        )
        return row
    if not isinstance(response, dict):
        row["result_type"] = "errored"
        row["error_message"] = "result line has no response"
        return row
    row["status_code"] = 200
    row["result_type"] = "succeeded"
    row["model"] = text_or_none(response.get("modelVersion") or response.get("model"))
    candidates = response.get("candidates") or []
    first = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    thoughts: list[str] = []
    content: list[str] = []
    for part in dig(first, "content", "parts") or []:
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            continue
        (thoughts if part.get("thought") is True else content).append(part["text"])
    row["thoughts"] = text_or_none("".join(thoughts))
    row["content"] = text_or_none("".join(content))
    if row["content"] is None:
        reason = first.get("finishReason") or dig(response, "promptFeedback", "blockReason")
        if reason:
            row["error_message"] = f"no answer (finishReason {reason})"
    usage = response.get("usageMetadata")
    if isinstance(usage, dict):
        candidates_tokens = int_or_none(usage.get("candidatesTokenCount"))
        thought_tokens = int_or_none(usage.get("thoughtsTokenCount"))
        row["prompt_tokens"] = int_or_none(usage.get("promptTokenCount"))
        # completion = answer + thinking: what is billed as output (the reference left
        # thinking out, under-counting thinking models).
        if candidates_tokens is not None or thought_tokens is not None:
            row["completion_tokens"] = (candidates_tokens or 0) + (thought_tokens or 0)
        row["reasoning_tokens"] = thought_tokens
        row["total_tokens"] = int_or_none(usage.get("totalTokenCount"))
        row["prompt_cached_tokens"] = int_or_none(usage.get("cachedContentTokenCount"))
    return row


def fast_line(obj: dict[str, Any]) -> RowTuple | None:
    """:func:`parse_line` for a line with a response whose first candidate has answer
    text; ``None`` (or an exception) leaves the line to it. Must agree with it exactly
    (tested)."""
    key = obj.get("key")
    response = obj["response"]
    if not key or type(key) is not str or obj.get("error") is not None:
        return None
    if type(response) is not dict:
        return None
    model = response.get("modelVersion") or response.get("model")
    if model is not None and type(model) is not str:
        return None
    first = response["candidates"][0]
    thoughts: list[str] = []
    content: list[str] = []
    for part in first["content"]["parts"]:
        text = part["text"]
        if type(text) is not str:
            return None
        (thoughts if part.get("thought") is True else content).append(text)
    answer = "".join(content)
    if not answer:
        return None  # parse_line explains a missing answer from finishReason
    usage = response.get("usageMetadata")
    if usage is None:
        prompt = completion = total = cached = thought_tokens = None
    else:
        prompt = usage.get("promptTokenCount")
        candidate_tokens = usage.get("candidatesTokenCount")
        thought_tokens = usage.get("thoughtsTokenCount")
        total = usage.get("totalTokenCount")
        cached = usage.get("cachedContentTokenCount")
        # Counts are summed below; one out of Int64 range is the careful parser's to null.
        for number in (prompt, candidate_tokens, thought_tokens, total, cached):
            if number is not None and not is_int64(number):
                return None
        completion = (
            (candidate_tokens or 0) + (thought_tokens or 0)
            if candidate_tokens is not None or thought_tokens is not None
            else None
        )
    return (
        key,
        model,
        "generateContent",
        200,
        "succeeded",
        None,
        "".join(thoughts),
        answer,
        prompt,
        completion,
        total,
        cached,
        thought_tokens,
    )


# ---------------------------------------------------------------- HTTP client

INLINE_LIMIT_BYTES = 10_000_000  # the documented inline limit is 20 MB; keep clear of it
_LIST_PAGES = 10
_STATES = {
    "PENDING": BatchState.PENDING,
    "RUNNING": BatchState.RUNNING,
    "SUCCEEDED": BatchState.SUCCEEDED,
    "FAILED": BatchState.FAILED,
    "CANCELLED": BatchState.CANCELLED,
    "EXPIRED": BatchState.EXPIRED,
}
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


@attrs.define(repr=False)
class GeminiClient(JsonApiClient):
    """Gemini batch mode over the shared transport."""

    provider: Provider = Provider.GEMINI
    # Inline results arrive in the final status body; keeping it saves fetching the
    # whole payload a second time to download it.
    _finished: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def _headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self._api_key, "content-type": "application/json"}

    async def submit(self, job: Job, requests_path: Path, options: Options) -> str:
        name = display_name(job)
        size = (await asyncio.to_thread(requests_path.stat)).st_size
        inline = options.get("inline")
        if inline is None:
            inline = size <= INLINE_LIMIT_BYTES
        path = f"/v1beta/models/{job.model}:batchGenerateContent"
        if inline:
            body = await asyncio.to_thread(_inline_body, requests_path, name)
        else:
            file_name = await self._upload(requests_path, size, name)
            body = orjson.dumps(
                {"batch": {"display_name": name, "input_config": {"file_name": file_name}}}
            )
        batch = await self._call("POST", path, data=body, idempotent=False)
        batch_name = batch.get("name") or batch.get("id")
        if not batch_name:
            raise ProviderError(self.provider.value, None, "create answer has no batch name")
        return str(batch_name)

    async def _upload(self, path: Path, size: int, name: str) -> str:
        """The resumable upload protocol: start, then one upload-and-finalize."""
        start = await self.transport.request(
            self.provider.value,
            "POST",
            f"{self.base_url}/upload/v1beta/files",
            headers=self._headers()
            | {
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": str(size),
                "X-Goog-Upload-Header-Content-Type": "application/jsonl",
            },
            json={"file": {"display_name": name}},
            retry=self.retry,
        )
        upload_url = start.headers.get("x-goog-upload-url")
        if not upload_url:
            raise ProviderError(self.provider.value, start.status, "upload start gave no URL")
        data = await asyncio.to_thread(path.read_bytes)
        done = await self.transport.request(
            self.provider.value,
            "POST",
            upload_url,
            headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"},
            data=data,
            retry=self.retry,
        )
        info = done.json()
        file_info = info.get("file") if isinstance(info, dict) else None
        if not isinstance(file_info, dict) or not file_info.get("name"):
            raise ProviderError(self.provider.value, done.status, "upload gave no file name")
        return str(file_info["name"])

    async def status(self, batch_id: str) -> BatchStatus:
        batch = await self._call("GET", f"/v1beta/{batch_id}")
        metadata = batch.get("metadata") or {}
        raw = str(metadata.get("state") or batch.get("state") or "STATE_UNSPECIFIED")
        short = raw.removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")
        state = _STATES.get(short, BatchState.RUNNING)
        stats = metadata.get("batchStats") or {}
        output_ref: str | None = None
        if state.is_terminal:
            output = _output(batch)
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
        )

    async def download(self, job: Job, status: BatchStatus) -> Downloaded:
        dest = Path(job.batch_output_path)
        if status.output_ref == INLINE_REF:
            batch = self._finished.pop(status.batch_id, None)
            if batch is None:
                batch = await self._call("GET", f"/v1beta/{status.batch_id}")
            responses = _inline_responses(batch) or []
            await asyncio.to_thread(_write_inline_results, responses, dest)
            return Downloaded(output_path=dest)
        if status.output_ref:
            await self.transport.download(
                self.provider.value,
                f"{self.base_url}/download/v1beta/{status.output_ref}:download",
                dest,
                headers=self._headers(),
                params={"alt": "media"},
                retry=self.retry,
                origin=self.base_url,
            )
            return Downloaded(output_path=dest)
        return Downloaded(output_path=None)

    async def cancel(self, batch_id: str) -> None:
        await self._call("POST", f"/v1beta/{batch_id}:cancel")

    async def find_batches(self, job: Job) -> list[Candidate]:
        """Every batch whose display name carries this run's tag and this segment."""
        wanted = display_name(job)
        found: list[Candidate] = []
        token: str | None = None
        for _ in range(_LIST_PAGES):
            params = {"pageSize": "100"} | ({"pageToken": token} if token else {})
            page = await self._call("GET", "/v1beta/batches", params=params)
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
