"""Anthropic Message Batches routes (``/v1/messages/batches``)."""

from __future__ import annotations

import logging
import re
import secrets
import string
from typing import Any

import orjson
from aiohttp import web

from pairbatch.testing._core import Core, rfc3339, route_name
from pairbatch.testing._http import (
    ANTHROPIC,
    error_response,
    json_response,
    read_json,
    stream_blob,
)
from pairbatch.testing.blobs import BytesBlob, LineRenderer, SyntheticBlob
from pairbatch.testing.bodies import (
    anthropic_limit,
    anthropic_message,
    anthropic_shows_thoughts,
    anthropic_thinking,
    make_answer,
)
from pairbatch.testing.faults import (
    BATCHES_CANCEL,
    BATCHES_CREATE,
    BATCHES_DELETE,
    BATCHES_GET,
    BATCHES_LIST,
    BATCHES_RESULTS,
    stable_int,
)
from pairbatch.testing.judge import anthropic_prompt, fixed_judge
from pairbatch.testing.rules import check_anthropic
from pairbatch.testing.state import Batch, Outcome, Phase, Request, View, shuffled

logger = logging.getLogger("pairbatch.testing")

CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1024 * 1024
_ALPHABET = string.ascii_letters + string.digits


def _new_id() -> str:
    return "msgbatch_01" + "".join(secrets.choice(_ALPHABET) for _ in range(22))


def _validate(payload: Any) -> str | None:
    """The first problem, worded like the API's pydantic-style messages."""
    if not isinstance(payload, dict) or "requests" not in payload:
        return "requests: Field required"
    requests = payload["requests"]
    if not isinstance(requests, list):
        return "requests: Input should be a valid list"
    if not requests:
        return "requests: List should have at least 1 item after validation, not 0"
    if len(requests) > MAX_REQUESTS:
        return (
            f"requests: List should have at most {MAX_REQUESTS} items after validation, "
            f"not {len(requests)}"
        )
    seen: set[str] = set()
    for i, item in enumerate(requests):
        if not isinstance(item, dict):
            return f"requests.{i}: Input should be a valid dictionary"
        custom_id = item.get("custom_id")
        if custom_id is None:
            return f"requests.{i}.custom_id: Field required"
        if not isinstance(custom_id, str):
            return f"requests.{i}.custom_id: Input should be a valid string"
        if len(custom_id) < 1:
            return f"requests.{i}.custom_id: String should have at least 1 character"
        if len(custom_id) > 64:
            return f"requests.{i}.custom_id: String should have at most 64 characters"
        if not CUSTOM_ID_RE.match(custom_id):
            return f"requests.{i}.custom_id: String should match pattern '{CUSTOM_ID_RE.pattern}'"
        if custom_id in seen:
            return (
                f"requests.{i}.custom_id: Duplicate custom_id '{custom_id}'; custom_id "
                "values must be unique within a batch"
            )
        seen.add(custom_id)
        params = item.get("params")
        if not isinstance(params, dict):
            return f"requests.{i}.params: Field required"
        for name in ("model", "max_tokens", "messages"):
            if name not in params:
                return f"requests.{i}.params.{name}: Field required"
        max_tokens = params["max_tokens"]
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            return f"requests.{i}.params.max_tokens: Input should be greater than or equal to 1"
        if params.get("stream"):
            return f"requests.{i}.params.stream: streaming is not supported in batches"
    return None


class AnthropicRoutes:
    def __init__(self, core: Core) -> None:
        self.core = core

    def register(self, app: web.Application) -> None:
        add = app.router.add_route
        base = "/v1/messages/batches"
        add("POST", base, self.create, name=route_name(ANTHROPIC, BATCHES_CREATE))
        add("GET", base, self.list, name=route_name(ANTHROPIC, BATCHES_LIST))
        add("GET", base + "/{batch_id}", self.get, name=route_name(ANTHROPIC, BATCHES_GET))
        add("DELETE", base + "/{batch_id}", self.delete, name=route_name(ANTHROPIC, BATCHES_DELETE))
        add(
            "POST",
            base + "/{batch_id}/cancel",
            self.cancel,
            name=route_name(ANTHROPIC, BATCHES_CANCEL),
        )
        add(
            "GET",
            base + "/{batch_id}/results",
            self.results,
            name=route_name(ANTHROPIC, BATCHES_RESULTS),
        )

    async def create(self, request: web.Request) -> web.StreamResponse:
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return error_response(
                ANTHROPIC, 413, "Request exceeds the maximum allowed number of bytes."
            )
        try:
            payload = await read_json(request)
        except ValueError as exc:
            return error_response(ANTHROPIC, 400, str(exc))
        problem = _validate(payload)
        if problem is not None:
            return error_response(ANTHROPIC, 400, problem)
        items = [(r["custom_id"], r["params"], None) for r in payload["requests"]]
        batch = self.core.create_batch(ANTHROPIC, _new_id(), items, info={})
        return json_response(self.batch_json(batch))

    def _batch_or_404(self, request: web.Request) -> Batch | web.Response:
        batch_id = request.match_info["batch_id"]
        batch = self.core.batches[ANTHROPIC].get(batch_id)
        if batch is None:
            return error_response(ANTHROPIC, 404, f"Message Batch {batch_id} not found.")
        return batch

    async def get(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch_or_404(request)
        if isinstance(batch, web.Response):
            return batch
        return json_response(self.batch_json(batch))

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch_or_404(request)
        if isinstance(batch, web.Response):
            return batch
        view = batch.view(self.core.now())
        if view.terminal:
            return error_response(
                ANTHROPIC,
                400,
                f"Message Batch {batch.id} has already ended and cannot be canceled.",
            )
        if view.phase is not Phase.CANCELLING:
            batch.cancel_requested = self.core.now()
        return json_response(self.batch_json(batch))

    async def delete(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch_or_404(request)
        if isinstance(batch, web.Response):
            return batch
        if not batch.view(self.core.now()).terminal:
            return error_response(
                ANTHROPIC,
                400,
                f"Message Batch {batch.id} is still being "
                "processed; cancel it and wait for it to end first.",
            )
        del self.core.batches[ANTHROPIC][batch.id]
        return json_response({"id": batch.id, "type": "message_batch_deleted"})

    async def list(self, request: web.Request) -> web.StreamResponse:
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 1000:
            return error_response(ANTHROPIC, 400, "limit: Input should be between 1 and 1000")
        newest_first = list(reversed(self.core.batches[ANTHROPIC].values()))
        ids = [b.id for b in newest_first]
        after, before = request.query.get("after_id"), request.query.get("before_id")
        if after:
            start = ids.index(after) + 1 if after in ids else len(ids)
            page = newest_first[start : start + limit]
            has_more = start + limit < len(ids)
        elif before:
            stop = ids.index(before) if before in ids else 0
            page = newest_first[max(0, stop - limit) : stop]
            has_more = stop - limit > 0
        else:
            page = newest_first[:limit]
            has_more = limit < len(ids)
        data = [self.batch_json(b) for b in page]
        return json_response(
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def results(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch_or_404(request)
        if isinstance(batch, web.Response):
            return batch
        view = batch.view(self.core.now())
        if not view.terminal:
            return error_response(
                ANTHROPIC,
                400,
                f"Message Batch {batch.id} has not ended "
                "yet; results are available once processing_status is "
                "'ended'.",
            )
        self._render(batch, view)
        return await stream_blob(request, batch.blobs["results"], content_type="application/binary")

    # -- rendering -----------------------------------------------------------------------

    def batch_json(self, batch: Batch) -> dict[str, Any]:
        view = batch.view(self.core.now())
        wall = self.core.wall
        if view.terminal:
            counts = {
                "processing": 0,
                "succeeded": view.count(Outcome.SUCCEEDED, Outcome.NO_TAG),
                "errored": view.count(Outcome.ERRORED),
                "canceled": view.count(Outcome.CANCELED),
                "expired": view.count(Outcome.EXPIRED),
            }
            status = "ended"
        else:
            counts = {
                "processing": batch.n_requests,
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            }
            status = "canceling" if view.phase is Phase.CANCELLING else "in_progress"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": rfc3339(wall(batch.created)),
            "expires_at": rfc3339(wall(batch.created) + 86400),
            "ended_at": rfc3339(wall(view.ended_at)) if view.ended_at is not None else None,
            "cancel_initiated_at": (
                rfc3339(wall(view.cancel_at)) if view.cancel_at is not None else None
            ),
            "archived_at": None,
            "results_url": (
                f"{self.core.origin}/v1/messages/batches/{batch.id}/results"
                if view.terminal
                else None
            ),
        }

    def _render(self, batch: Batch, view: View) -> None:
        if batch.rendered:
            return
        batch.rendered = True
        lines = [
            orjson.dumps(self._line(batch, request, outcome))
            for request, outcome in zip(batch.requests, view.outcomes, strict=True)
            if outcome is not None
        ]
        data = b"\n".join(shuffled(lines, batch.shuffle_seed)) + b"\n" if lines else b""
        batch.blobs["results"] = BytesBlob(data)

    def _line(self, batch: Batch, request: Request, outcome: Outcome) -> dict[str, Any]:
        line: dict[str, Any] = {"custom_id": request.custom_id}
        if outcome is Outcome.CANCELED:
            line["result"] = {"type": "canceled"}
            return line
        if outcome is Outcome.EXPIRED:
            line["result"] = {"type": "expired"}
            return line
        ident = f"01{stable_int(batch.id, request.index):016x}"
        if outcome is Outcome.ERRORED:
            line["result"] = _errored(request.custom_id)
            return line
        params = request.body
        refusal = check_anthropic(params, refuse_unknown=self.core.refuse_unknown_models)
        if refusal is not None:
            line["result"] = {"type": "errored", "error": refusal.body}
            return line
        thinking = anthropic_thinking(params)
        try:
            answer = make_answer(
                self.core.judge,
                anthropic_prompt(params),
                no_tag=outcome is Outcome.NO_TAG,
                reasoning=thinking,
                show_thoughts=anthropic_shows_thoughts(params),
                limit=anthropic_limit(params),
            )
        except Exception:
            logger.exception("judge failed on %s", request.custom_id)
            line["result"] = _errored(request.custom_id, server=True)
            return line
        line["result"] = {
            "type": "succeeded",
            "message": anthropic_message(params, answer, ident=ident),
        }
        return line

    def synthetic_renderer(self, batch: Batch) -> LineRenderer:
        templates = {}
        for winner in ("SAMPLE_1", "SAMPLE_2"):
            answer = make_answer(
                fixed_judge(winner),
                "synthetic prompt " * 20,
                no_tag=False,
                reasoning=False,
                show_thoughts=False,
            )
            templates[winner] = anthropic_message(
                {"model": batch.info.get("model") or "claude-sonnet-4-5"},
                answer,
                ident="01synthetic",
            )

        def render(custom_id: str, position: int) -> bytes:
            winner = "SAMPLE_1" if position % 2 == 0 else "SAMPLE_2"
            return orjson.dumps(
                {
                    "custom_id": custom_id,
                    "result": {"type": "succeeded", "message": templates[winner]},
                }
            )

        return render

    def attach_synthetic(self, batch: Batch, blob: SyntheticBlob) -> None:
        batch.blobs["results"] = blob


def _errored(custom_id: str, *, server: bool = False) -> dict[str, Any]:
    if server or stable_int("kind", custom_id) % 2:
        inner = {"type": "api_error", "message": "Internal server error"}
    else:
        inner = {
            "type": "invalid_request_error",
            "message": "prompt is too long: 210000 tokens > 200000 maximum",
        }
    return {"type": "errored", "error": {"type": "error", "error": inner, "request_id": None}}
