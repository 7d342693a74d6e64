"""The synchronous endpoints a client's pre-flight calls, one per provider.

OpenAI ``POST /v1/chat/completions`` and ``POST /v1/responses``, Anthropic
``POST /v1/messages``, Gemini ``POST /{v1beta|v1}/models/{model}:generateContent``. They
apply the same model rules as batch lines (:mod:`pairbatch.testing.rules`) and answer
with the same judge and body renderers, so a request that passes here behaves the same
in a batch. All are counted under the endpoint name ``generate``.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiohttp import web

from pairbatch.testing._core import Core, route_name
from pairbatch.testing._http import (
    ANTHROPIC,
    GEMINI,
    OPENAI,
    error_response,
    json_response,
    read_json,
    request_id,
)
from pairbatch.testing.bodies import (
    anthropic_limit,
    anthropic_message,
    anthropic_shows_thoughts,
    anthropic_thinking,
    chat_completion,
    gemini_limit,
    gemini_response,
    gemini_thinking,
    make_answer,
    openai_limit,
    openai_reasoning,
    response_object,
)
from pairbatch.testing.faults import GENERATE
from pairbatch.testing.judge import anthropic_prompt, gemini_prompt, openai_prompt
from pairbatch.testing.rules import (
    CHAT,
    RESPONSES,
    Refusal,
    check_anthropic,
    check_gemini,
    check_openai,
)

logger = logging.getLogger("pairbatch.testing")


def _refused(refusal: Refusal, provider: str) -> web.Response:
    body = refusal.body
    headers: dict[str, str] = {}
    if provider == ANTHROPIC:
        rid = request_id()
        body = {**body, "request_id": rid}
        headers["request-id"] = rid
    return json_response(body, status=refusal.status, headers=headers)


async def _json_object(request: web.Request, provider: str) -> dict[str, Any] | web.Response:
    try:
        payload = await read_json(request)
    except ValueError as exc:
        return error_response(provider, 400, str(exc))
    if not isinstance(payload, dict):
        return error_response(provider, 400, "The request body must be a JSON object.")
    if payload.get("stream"):
        # Nothing in pairbatch streams; refuse loudly rather than answer unstreamed.
        return error_response(provider, 400, "The emulator does not stream responses.")
    return payload


class SyncRoutes:
    def __init__(self, core: Core) -> None:
        self.core = core

    def register(self, app: web.Application) -> None:
        add = app.router.add_route
        add("POST", CHAT, self.openai_chat, name=route_name(OPENAI, GENERATE))
        add("POST", RESPONSES, self.openai_responses, name=route_name(OPENAI, GENERATE, 1))
        add("POST", "/v1/messages", self.anthropic, name=route_name(ANTHROPIC, GENERATE))
        for alias, version in enumerate(("v1beta", "v1")):
            add(
                "POST",
                f"/{version}/models/{{model:[^/:]+}}:generateContent",
                self.gemini,
                name=route_name(GEMINI, GENERATE, alias),
            )

    def _created(self) -> int:
        return int(self.core.wall(self.core.now()))

    # -- OpenAI ----------------------------------------------------------------------

    async def openai_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, CHAT)

    async def openai_responses(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, RESPONSES)

    async def _openai(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        body = await _json_object(request, OPENAI)
        if isinstance(body, web.Response):
            return body
        field = "messages" if endpoint == CHAT else "input"
        if not body.get(field):
            return error_response(
                OPENAI,
                400,
                f"Missing required parameter: '{field}'.",
                param=field,
                code="missing_required_parameter",
            )
        refusal = check_openai(endpoint, body, refuse_unknown=self.core.refuse_unknown_models)
        if refusal is not None:
            return _refused(refusal, OPENAI)
        reasoning, summary = openai_reasoning(body)
        try:
            answer = make_answer(
                self.core.judge,
                openai_prompt(body),
                no_tag=False,
                reasoning=reasoning,
                show_thoughts=summary,
                limit=openai_limit(body),
            )
        except Exception:
            logger.exception("judge failed on a synchronous request")
            return error_response(
                OPENAI, 500, "The server had an error while processing your request."
            )
        ident = secrets.token_hex(12)
        if endpoint == CHAT:
            out = chat_completion(body, answer, ident=ident, created=self._created())
        else:
            out = response_object(
                body, answer, ident=ident, created=self._created(), reasoning=reasoning
            )
        return json_response(out)

    # -- Anthropic -------------------------------------------------------------------

    async def anthropic(self, request: web.Request) -> web.StreamResponse:
        params = await _json_object(request, ANTHROPIC)
        if isinstance(params, web.Response):
            return params
        for name in ("model", "max_tokens", "messages"):
            if name not in params:
                return error_response(ANTHROPIC, 400, f"{name}: Field required")
        max_tokens = params["max_tokens"]
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            return error_response(
                ANTHROPIC, 400, "max_tokens: Input should be greater than or equal to 1"
            )
        refusal = check_anthropic(params, refuse_unknown=self.core.refuse_unknown_models)
        if refusal is not None:
            return _refused(refusal, ANTHROPIC)
        thinking = anthropic_thinking(params)
        try:
            answer = make_answer(
                self.core.judge,
                anthropic_prompt(params),
                no_tag=False,
                reasoning=thinking,
                show_thoughts=anthropic_shows_thoughts(params),
                limit=anthropic_limit(params),
            )
        except Exception:
            logger.exception("judge failed on a synchronous request")
            return error_response(ANTHROPIC, 500, "Internal server error")
        out = anthropic_message(params, answer, ident="01" + secrets.token_hex(11))
        out["usage"]["service_tier"] = "standard"
        return json_response(out)

    # -- Gemini ----------------------------------------------------------------------

    async def gemini(self, request: web.Request) -> web.StreamResponse:
        payload = await _json_object(request, GEMINI)
        if isinstance(payload, web.Response):
            return payload
        model = request.match_info["model"].removeprefix("models/")
        contents = payload.get("contents")
        if not isinstance(contents, list) or not contents:
            # The API's own wording for an empty request.
            return error_response(
                GEMINI, 400, "* GenerateContentRequest.contents: contents is not specified\n"
            )
        refusal = check_gemini(
            model,
            payload,
            refuse_unknown=self.core.refuse_unknown_models,
            api_version=request.path.split("/")[1],
        )
        if refusal is not None:
            return _refused(refusal, GEMINI)
        thinks, show = gemini_thinking(payload)
        try:
            answer = make_answer(
                self.core.judge,
                gemini_prompt(payload),
                no_tag=False,
                reasoning=thinks,
                show_thoughts=show,
                limit=gemini_limit(payload),
            )
        except Exception:
            logger.exception("judge failed on a synchronous request")
            return error_response(GEMINI, 500, "An internal error has occurred.")
        return json_response(gemini_response(model, answer, ident=secrets.token_hex(8)))
