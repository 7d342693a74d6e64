"""Anthropic Message Batches: request lines and the HTTP client.

Result lines are read in :mod:`.anthropic_lines`.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import orjson

from pairbatch.models import BatchState, BatchStatus, Candidate, Job, Provider, RequestCounts
from pairbatch.providers import anthropic_profiles
from pairbatch.providers.anthropic_lines import fast_line, parse_line
from pairbatch.providers.base import (
    BackendBase,
    Downloaded,
    JsonApiClient,
    Options,
    ProviderInfo,
    read_request_lines,
    reject_unknown,
)
from pairbatch.providers.profiles import PreflightAnswer, StateWarner, preflight_answer
from pairbatch.threads import to_thread

log = logging.getLogger("pairbatch.providers.anthropic")
LIMITS = anthropic_profiles.LIMITS
check_limits = LIMITS.check
MIN_THINKING_BUDGET = anthropic_profiles.MIN_THINKING_BUDGET


class AnthropicBackend(BackendBase):
    provider = Provider.ANTHROPIC
    limits = LIMITS

    def prepare_options(self, model: str, options: Options) -> dict[str, Any]:
        """Options checked against the Claude family's profile (:mod:`.anthropic_profiles`)."""
        reject_unknown(self.provider, options, anthropic_profiles.OPTIONS)
        return anthropic_profiles.prepare(model, options)

    def request_line(
        self, custom_id: str, prompt: str, model: str, options: Options
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": model,
            "max_tokens": options["max_tokens"],
            "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        }
        # Only what the profile let through is set; None means "leave it out".
        for name in ("temperature", "top_p", "top_k"):
            if options.get(name) is not None:
                params[name] = options[name]
        reasoning = options.get("reasoning")
        if reasoning == "enabled":
            params["thinking"] = {
                "type": "enabled",
                "budget_tokens": options["thinking_budget_tokens"],
            }
        elif reasoning == "adaptive":
            thinking: dict[str, Any] = {"type": "adaptive"}
            if options.get("thinking_display"):
                thinking["display"] = options["thinking_display"]
            params["thinking"] = thinking
        if options.get("effort"):
            params["output_config"] = {"effort": options["effort"]}
        return {"custom_id": custom_id, "params": params}


# ---------------------------------------------------------------- HTTP client

_LIST_PAGES = 10
# A batch created this long before the intent was recorded cannot be ours.
_CLOCK_SKEW = timedelta(minutes=5)


def _requests_body(path: Path) -> bytes:
    """``{"requests": [...]}`` built from the JSONL lines without decoding them."""
    return b'{"requests":[' + b",".join(read_request_lines(path)) + b"]}"


@attrs.define(repr=False)
class AnthropicClient(JsonApiClient):
    """Anthropic Message Batches over the shared transport."""

    version: str = "2023-06-01"
    provider: Provider = Provider.ANTHROPIC
    _warn_state: StateWarner = attrs.field(factory=lambda: StateWarner(log), init=False)

    def _headers(self) -> dict[str, str]:
        return {
            "x-api-key": self._api_key,
            "anthropic-version": self.version,
            "content-type": "application/json",
        }

    async def submit(self, job: Job, requests_path: Path, options: Options) -> str:
        body = await to_thread(_requests_body, requests_path)
        batch = await self._call("POST", "/v1/messages/batches", data=body, idempotent=False)
        return str(batch["id"])

    async def status(self, batch_id: str) -> BatchStatus:
        batch = await self._call("GET", f"/v1/messages/batches/{batch_id}")
        status = _status(batch_id, batch)
        if status.unknown_state:
            self._warn_state(self.provider.value, batch_id, status.raw_state)
        return status

    async def preflight(self, line: dict[str, Any], options: Options) -> PreflightAnswer:
        """One ``POST /v1/messages`` with the line's exact ``params``."""
        started = time.monotonic()
        message = await self._call("POST", "/v1/messages", json=line["params"])
        latency = time.monotonic() - started
        # The shape of a succeeded batch result line, for the batch parser.
        wrapped = {
            "custom_id": line.get("custom_id"),
            "result": {"type": "succeeded", "message": message},
        }
        return preflight_answer(parse_line, wrapped, latency, options)

    async def download(self, job: Job, status: BatchStatus) -> Downloaded:
        url = status.output_ref or f"{self.base_url}/v1/messages/batches/{status.batch_id}/results"
        dest = Path(job.batch_output_path)
        # ``results_url`` comes from the server: the key goes with it only to our origin.
        await self.transport.download(
            self.provider.value,
            url,
            dest,
            headers=self._headers(),
            retry=self.retry,
            origin=self.base_url,
        )
        return Downloaded(output_path=dest)

    async def cancel(self, batch_id: str) -> None:
        await self._call("POST", f"/v1/messages/batches/{batch_id}/cancel")

    async def find_batches(self, job: Job) -> list[Candidate]:
        """Anthropic batches carry no metadata; every custom_id of ours starts with
        ``<run_tag>-<segment>-``, which only the results show. Candidates are batches
        created since the intent with this segment's request count: an ended one is
        proven (or ruled out) by the first line of its results; a running one stays
        unproven, and the caller waits rather than guess."""
        since = job.updated_at or job.submitted_at
        prefix = f"{job.run_tag}-{job.segment_index}-"
        found: list[Candidate] = []
        after: str | None = None
        for _ in range(_LIST_PAGES):
            params = {"limit": "100"} | ({"after_id": after} if after else {})
            page = await self._call("GET", "/v1/messages/batches", params=params)
            data = page.get("data") or []
            for batch in data:
                created = _parse_time(batch.get("created_at"))
                if since is not None and created is not None and created < since - _CLOCK_SKEW:
                    continue
                counts = batch.get("request_counts") or {}
                if sum(int(v or 0) for v in counts.values()) != job.n_pairs:
                    continue
                batch_id = str(batch["id"])
                url = batch.get("results_url")
                if batch.get("processing_status") == "ended" and url:
                    if prefix in _first_custom_id(await self._first_line(str(url))):
                        found.append(Candidate(batch_id, proven=True, detail="result custom_id"))
                else:
                    found.append(Candidate(batch_id, proven=False, detail="running, same size"))
            if not page.get("has_more") or not data:
                break
            after = str(page.get("last_id") or data[-1]["id"])
        return found

    async def _first_line(self, url: str) -> bytes:
        return await self.transport.first_line(
            self.provider.value,
            url,
            headers=self._headers(),
            retry=self.retry,
            origin=self.base_url,
        )


def _first_custom_id(line: bytes) -> str:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return ""
    value = record.get("custom_id") if isinstance(record, dict) else None
    return f"{value}" if isinstance(value, str) else ""


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _status(batch_id: str, batch: dict[str, Any]) -> BatchStatus:
    raw = str(batch.get("processing_status") or "unknown")
    counts = batch.get("request_counts") or {}
    failed = sum(int(counts.get(k) or 0) for k in ("errored", "canceled", "expired"))
    succeeded = int(counts.get("succeeded") or 0)
    processing = int(counts.get("processing") or 0)
    state: BatchState | None
    if raw == "ended":
        # "ended" covers finished, cancelled and expired batches alike; per-request
        # outcomes are in the results, which are salvaged in every case.
        if batch.get("cancel_initiated_at"):
            state = BatchState.CANCELLED
        elif int(counts.get("expired") or 0) > 0:
            state = BatchState.EXPIRED  # ran out of time: finished requests are salvaged
        else:
            state = BatchState.SUCCEEDED
    elif raw in ("errored", "canceled", "expired"):
        # The reference treats these as terminal; the API never sends them here.
        state = {"errored": BatchState.FAILED, "canceled": BatchState.CANCELLED}.get(
            raw, BatchState.EXPIRED
        )
    elif raw in ("in_progress", "canceling"):
        state = BatchState.RUNNING
    else:
        state = None
    # Anthropic has no batch-level error field; how it ended is the only reason to give.
    error = None
    if state is BatchState.EXPIRED:
        error = f"expired: {int(counts.get('expired') or 0)} request(s) ran out of time"
    elif state is BatchState.CANCELLED and raw == "ended":
        error = f"canceled: {int(counts.get('canceled') or 0)} request(s) canceled"
    return BatchStatus(
        batch_id=batch_id,
        state=state or BatchState.RUNNING,
        raw_state=raw,
        unknown_state=state is None,
        error=error,
        ending=state.value if raw == "ended" and state else None,
        counts=RequestCounts(
            total=succeeded + failed + processing,
            succeeded=succeeded,
            failed=failed,
            processing=processing,
        ),
        created_at=_parse_time(batch.get("created_at")),
        ended_at=_parse_time(batch.get("ended_at")),
        output_ref=batch.get("results_url") or None,
    )


BACKEND = AnthropicBackend(parse_line, fast_line, AnthropicClient)


INFO = ProviderInfo(
    provider=Provider.ANTHROPIC,
    display="Anthropic",
    key_env=("ANTHROPIC_API_KEY",),
    base_url_env="ANTHROPIC_BASE_URL",
    default_base_url="https://api.anthropic.com",
    options=anthropic_profiles.OPTIONS,
    backend=BACKEND,
)
