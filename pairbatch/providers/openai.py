"""OpenAI Batch API: request lines and the HTTP client (result lines: :mod:`.openai_lines`)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from pairbatch.models import BatchState, BatchStatus, Candidate, Job, Provider, RequestCounts
from pairbatch.providers import openai_profiles
from pairbatch.providers.base import (
    BackendBase,
    Downloaded,
    JsonApiClient,
    Options,
    ProviderInfo,
    reject_unknown,
)
from pairbatch.providers.openai_lines import fast_line, parse_line
from pairbatch.providers.openai_profiles import ENDPOINTS
from pairbatch.providers.profiles import PreflightAnswer, StateWarner, preflight_answer
from pairbatch.retry import error_object

log = logging.getLogger("pairbatch.providers.openai")
LIMITS = openai_profiles.LIMITS
check_limits = LIMITS.check


class OpenAIBackend(BackendBase):
    provider = Provider.OPENAI
    limits = LIMITS

    def prepare_options(self, model: str, options: Options) -> dict[str, Any]:
        """Options checked against the model family's profile (:mod:`.openai_profiles`)."""
        reject_unknown(self.provider, options, openai_profiles.OPTIONS)
        return openai_profiles.prepare(model, options)

    def request_line(
        self, custom_id: str, prompt: str, model: str, options: Options
    ) -> dict[str, Any]:
        endpoint = options["endpoint"]
        body: dict[str, Any] = {"model": model}
        if endpoint == "responses":
            body["input"] = prompt
            if options.get("reasoning") is not None:
                reasoning: dict[str, Any] = {"effort": options["reasoning"]}
                if options.get("include_thoughts"):
                    reasoning["summary"] = "auto"
                body["reasoning"] = reasoning
            if options.get("max_output_tokens") is not None:
                body["max_output_tokens"] = options["max_output_tokens"]
        else:
            body["messages"] = [{"role": "user", "content": prompt}]
            if options.get("max_output_tokens") is not None:
                body["max_completion_tokens"] = options["max_output_tokens"]
            if options.get("logprobs") is not None:
                body["logprobs"] = options["logprobs"]
        for name in ("temperature", "top_p", "service_tier"):
            if options.get(name) is not None:
                body[name] = options[name]
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINTS[endpoint], "body": body}


# ---------------------------------------------------------------- HTTP client

_OPENAI_STATES = {
    "validating": BatchState.PENDING,
    "in_progress": BatchState.RUNNING,
    "finalizing": BatchState.RUNNING,
    "cancelling": BatchState.RUNNING,
    "completed": BatchState.SUCCEEDED,
    "failed": BatchState.FAILED,
    "expired": BatchState.EXPIRED,
    "cancelled": BatchState.CANCELLED,
}
RUN_TAG_KEY = "pairbatch_run"
SEGMENT_KEY = "pairbatch_segment"
_LIST_PAGES = 10


@attrs.define(repr=False)
class OpenAIClient(JsonApiClient):
    """OpenAI Batch API over the shared transport."""

    provider: Provider = Provider.OPENAI
    _warn_state: StateWarner = attrs.field(factory=lambda: StateWarner(log), init=False)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    async def preflight(self, line: dict[str, Any], options: Options) -> PreflightAnswer:
        """One synchronous request with the exact body of a request line, sent to the
        line's own endpoint (``/v1/chat/completions`` or ``/v1/responses``)."""
        path = str(line.get("url") or ENDPOINTS["chat.completions"]).removeprefix("/v1")
        started = time.monotonic()
        body = await self._call("POST", path, json=line["body"])
        latency = time.monotonic() - started
        # The shape of a batch output line, so the batch parser reads it unchanged.
        wrapped = {
            "custom_id": line.get("custom_id"),
            "response": {"status_code": 200, "body": body},
            "error": None,
        }
        return preflight_answer(parse_line, wrapped, latency, options)

    async def submit(self, job: Job, requests_path: Path, options: Options) -> str:
        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("purpose", "batch")
            data.add_field(
                "file",
                requests_path.open("rb"),
                filename=requests_path.name,
                content_type="application/jsonl",
            )
            return data

        uploaded = await self._call("POST", "/files", data=form)
        metadata = {str(k): str(v) for k, v in (options.get("metadata") or {}).items()}
        metadata |= {RUN_TAG_KEY: job.run_tag, SEGMENT_KEY: str(job.segment_index)}
        batch = await self._call(
            "POST",
            "/batches",
            idempotent=False,
            json={
                "input_file_id": uploaded["id"],
                "endpoint": ENDPOINTS[options.get("endpoint") or "chat.completions"],
                "completion_window": "24h",
                "metadata": metadata,
            },
        )
        return str(batch["id"])

    async def status(self, batch_id: str) -> BatchStatus:
        batch = await self._call("GET", f"/batches/{batch_id}")
        raw = str(batch.get("status") or "unknown")
        counts = batch.get("request_counts") or {}
        state = _OPENAI_STATES.get(raw)
        if state is None:
            self._warn_state(self.provider.value, batch_id, raw)
        return BatchStatus(
            batch_id=batch_id,
            state=state or BatchState.RUNNING,
            raw_state=raw,
            unknown_state=state is None,
            queue_full=queue_full(batch),
            error=batch_errors(batch.get("errors")),
            counts=RequestCounts(
                total=counts.get("total"),
                succeeded=counts.get("completed"),
                failed=counts.get("failed"),
            ),
            created_at=_from_epoch(batch.get("created_at")),
            ended_at=_from_epoch(
                batch.get("completed_at")
                or batch.get("failed_at")
                or batch.get("expired_at")
                or batch.get("cancelled_at")
            ),
            output_ref=batch.get("output_file_id") or None,
            error_ref=batch.get("error_file_id") or None,
        )

    async def download(self, job: Job, status: BatchStatus) -> Downloaded:
        output = error = None
        if status.output_ref:
            output = Path(job.batch_output_path)
            await self._fetch_file(status.output_ref, output)
        if status.error_ref:
            error = Path(job.error_output_path)
            await self._fetch_file(status.error_ref, error)
        return Downloaded(output_path=output, error_path=error)

    async def _fetch_file(self, file_id: str, dest: Path) -> None:
        await self.transport.download(
            self.provider.value,
            f"{self.base_url}/files/{file_id}/content",
            dest,
            headers=self._headers(),
            retry=self.retry,
            origin=self.base_url,
        )

    async def cancel(self, batch_id: str) -> None:
        await self._call("POST", f"/batches/{batch_id}/cancel")

    async def find_batches(self, job: Job) -> list[Candidate]:
        """Newest first, a few pages back: every batch whose metadata carries this run's
        tag and this segment (proof; a timestamp or a size would only be a guess)."""
        found: list[Candidate] = []
        after: str | None = None
        for _ in range(_LIST_PAGES):
            params = {"limit": "100"} | ({"after": after} if after else {})
            page = await self._call("GET", "/batches", params=params)
            data = page.get("data") or []
            for batch in data:
                metadata = batch.get("metadata") or {}
                ours = metadata.get(RUN_TAG_KEY) == job.run_tag
                if ours and metadata.get(SEGMENT_KEY) == str(job.segment_index):
                    if queue_full(batch):
                        continue  # refused for a full queue: never ran, sent again later
                    found.append(Candidate(str(batch["id"]), proven=True, detail="metadata"))
            if not page.get("has_more") or not data:
                break
            after = str(data[-1]["id"])
        return found


def batch_errors(errors: object) -> str | None:
    """``errors.data[]`` ({code, message, param, line}, types/batch_error.py) as one
    line each: "duplicate_custom_id: ... (line 21)"."""
    data = errors.get("data") if isinstance(errors, dict) else errors
    if not isinstance(data, list):
        return None
    parts: list[str] = []
    for item in data:
        if not isinstance(item, dict):
            continue
        text = ": ".join(
            str(v) for v in (item.get("code"), item.get("message")) if v not in (None, "")
        )
        if item.get("param"):
            text += f" [param {item['param']}]"
        if item.get("line") is not None:
            text += f" (line {item['line']})"
        if text:
            parts.append(text)
    return "; ".join(parts) or None


def _from_epoch(value: object) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


BACKEND = OpenAIBackend(parse_line, fast_line, OpenAIClient)


QUEUE_FULL = "token_limit_exceeded"


def queue_full(batch: dict[str, Any]) -> bool:
    """A batch that failed validation because the enqueued-token limit was reached: it
    never ran and costs nothing, and the segment may be sent again."""
    errors = (batch.get("errors") or {}).get("data") or []
    failed = batch.get("status") == "failed"
    return failed and any(isinstance(e, dict) and e.get("code") == QUEUE_FULL for e in errors)


def insufficient_quota(body: object) -> bool:
    """``insufficient_quota``: the account is out of credit, which no retry fixes."""
    error = error_object(body)
    return "insufficient_quota" in (error.get("code"), error.get("type"))


INFO = ProviderInfo(
    provider=Provider.OPENAI,
    display="OpenAI",
    key_env=("OPENAI_API_KEY",),
    base_url_env="OPENAI_BASE_URL",
    default_base_url="https://api.openai.com/v1",
    options=openai_profiles.OPTIONS,
    backend=BACKEND,
    exhausted_429=insufficient_quota,
)
