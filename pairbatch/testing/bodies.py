"""Realistic response bodies for each provider, built from the judge's answer.

Token counts come from text lengths only, so the same request always reports the same
usage and tests can assert on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from pairbatch.testing import rules
from pairbatch.testing.judge import (
    NO_TAG_ANSWER,
    Judge,
    cached_tokens,
    reasoning_text,
    tokens,
)


@attrs.frozen
class Answer:
    content: str
    thoughts: str | None  # shown to the client only when it asked for thoughts
    prompt_tokens: int
    output_tokens: int  # visible answer only
    reasoning_tokens: int
    truncated: bool = False  # the output limit was hit (stop reason "length")

    def capped(self, limit: int) -> Answer:
        """The answer cut at ``limit`` output tokens, reasoning counted first, as the
        services count it: a limit spent on thinking leaves no visible text."""
        limit = max(0, limit)
        if self.output_tokens + self.reasoning_tokens <= limit:
            return self
        reasoning = min(self.reasoning_tokens, limit)
        visible = limit - reasoning
        # tokens() is len // 4 + 1, so (visible - 1) * 4 + 3 characters fit in `visible`.
        content = self.content[: (visible - 1) * 4 + 3] if visible > 0 else ""
        thoughts = self.thoughts
        if thoughts is not None and reasoning < self.reasoning_tokens:
            thoughts = thoughts[: max(0, (reasoning - 1) * 4 + 3)]
        return attrs.evolve(
            self,
            content=content,
            thoughts=thoughts,
            output_tokens=visible,
            reasoning_tokens=reasoning,
            truncated=True,
        )


def make_answer(
    judge: Judge,
    prompt: str | None,
    *,
    no_tag: bool,
    reasoning: bool,
    show_thoughts: bool,
    limit: int | None = None,
) -> Answer:
    """Run the judge (which may raise: callers turn that into an errored request)."""
    text = prompt or ""
    content = NO_TAG_ANSWER if no_tag else judge(text)
    thought = reasoning_text(text) if (reasoning or show_thoughts) else None
    answer = Answer(
        content=content,
        thoughts=thought if show_thoughts else None,
        prompt_tokens=tokens(text),
        output_tokens=tokens(content),
        reasoning_tokens=tokens(thought) if thought is not None else 0,
    )
    return answer if limit is None else answer.capped(limit)


def _get(mapping: Mapping[str, Any], *names: str) -> Any:
    """The first present key among ``names`` (proto-JSON accepts camelCase and snake_case)."""
    for name in names:
        if name in mapping:
            return mapping[name]
    return None


# -- OpenAI ---------------------------------------------------------------------------


def openai_reasoning(body: Mapping[str, Any]) -> tuple[bool, bool]:
    """``(reasoning active, summary requested)`` for a chat or responses body.

    A reasoning model reasons at its default effort when none is given; a model the
    rules know is not a reasoning model never does.
    """
    entry = rules.openai_model(str(body.get("model", "")))
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping):
        effort = reasoning.get("effort")
        summary = reasoning.get("summary") is not None
    else:
        effort, summary = body.get("reasoning_effort"), False
    if entry is not None:
        if not entry.efforts:
            return False, False
        effective = effort if effort is not None else entry.default_effort
        return effective != "none", summary and effective != "none"
    return (effort not in (None, "none")) or summary, summary


def openai_limit(body: Mapping[str, Any]) -> int | None:
    """The output cap of a chat or responses body (reasoning tokens count against it)."""
    for name in ("max_output_tokens", "max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def chat_completion(
    body: Mapping[str, Any], answer: Answer, *, ident: str, created: int
) -> dict[str, Any]:
    completion = answer.output_tokens + answer.reasoning_tokens
    return {
        "id": f"chatcmpl-{ident}",
        "object": "chat.completion",
        "created": created,
        "model": str(body.get("model", "gpt-4o-mini")),
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": answer.content,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "length" if answer.truncated else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": answer.prompt_tokens + completion,
            "prompt_tokens_details": {
                "cached_tokens": cached_tokens(answer.prompt_tokens),
                "audio_tokens": 0,
            },
            "completion_tokens_details": {
                "reasoning_tokens": answer.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        # ChatCompletion.service_tier has no "batch" (auto|default|flex|scale|priority|fast).
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }


def response_object(
    body: Mapping[str, Any], answer: Answer, *, ident: str, created: int, reasoning: bool
) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if reasoning or answer.thoughts is not None:
        summary = (
            [{"type": "summary_text", "text": answer.thoughts}]
            if answer.thoughts is not None
            else []
        )
        output.append({"id": f"rs_{ident}", "type": "reasoning", "summary": summary})
    if answer.content or not answer.truncated:
        # A limit spent on reasoning leaves no message item at all.
        output.append(
            {
                "id": f"msg_{ident}",
                "type": "message",
                "status": "incomplete" if answer.truncated else "completed",
                "role": "assistant",
                "content": [
                    {
                        "type": "output_text",
                        "text": answer.content,
                        "annotations": [],
                    }
                ],
            }
        )
    completion = answer.output_tokens + answer.reasoning_tokens
    return {
        "id": f"resp_{ident}",
        "object": "response",
        "created_at": created,
        "status": "incomplete" if answer.truncated else "completed",
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if answer.truncated else None,
        "max_output_tokens": body.get("max_output_tokens"),
        "model": str(body.get("model", "gpt-5-mini")),
        "output": output,
        "parallel_tool_calls": True,
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": answer.prompt_tokens,
            # openai-python ResponseUsage requires cache_write_tokens beside cached_tokens.
            "input_tokens_details": {
                "cached_tokens": cached_tokens(answer.prompt_tokens),
                "cache_write_tokens": 0,
            },
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
            "total_tokens": answer.prompt_tokens + completion,
        },
    }


# -- Anthropic ------------------------------------------------------------------------


def anthropic_thinking(params: Mapping[str, Any]) -> bool:
    thinking = params.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")


def anthropic_message(params: Mapping[str, Any], answer: Answer, *, ident: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if answer.thoughts is not None or (anthropic_thinking(params) and answer.reasoning_tokens):
        # Omitted display: the block and its signature stay, the text is empty.
        content.append(
            {"type": "thinking", "thinking": answer.thoughts or "", "signature": f"sig_{ident}"}
        )
    if answer.content or not answer.truncated:
        content.append({"type": "text", "text": answer.content})
    return {
        "id": f"msg_{ident}",
        "type": "message",
        "role": "assistant",
        "model": str(params.get("model", "claude-sonnet-4-5")),
        "content": content,
        "stop_reason": "max_tokens" if answer.truncated else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": answer.prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached_tokens(answer.prompt_tokens),
            "output_tokens": answer.output_tokens + answer.reasoning_tokens,
            "service_tier": "batch",
        },
    }


# -- Gemini ---------------------------------------------------------------------------


def gemini_thinking(request: Mapping[str, Any]) -> tuple[bool, bool]:
    """``(thinks at all, thoughts shown)``: thinking is on unless the budget is 0."""
    config = _get(request, "generationConfig", "generation_config")
    thinking = (
        _get(config, "thinkingConfig", "thinking_config") if isinstance(config, Mapping) else None
    )
    if not isinstance(thinking, Mapping):
        return True, False
    budget = _get(thinking, "thinkingBudget", "thinking_budget")
    include = bool(_get(thinking, "includeThoughts", "include_thoughts"))
    return budget != 0, include


def gemini_response(model: str, answer: Answer, *, ident: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if answer.thoughts is not None:
        parts.append({"text": answer.thoughts, "thought": True})
    parts.append({"text": answer.content})
    usage: dict[str, Any] = {
        "promptTokenCount": answer.prompt_tokens,
        "candidatesTokenCount": answer.output_tokens,
        "totalTokenCount": answer.prompt_tokens + answer.output_tokens + answer.reasoning_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": answer.prompt_tokens}],
    }
    if answer.reasoning_tokens:
        usage["thoughtsTokenCount"] = answer.reasoning_tokens
    cached = cached_tokens(answer.prompt_tokens)
    if cached:
        usage["cachedContentTokenCount"] = cached
    return {
        "candidates": [
            {
                "content": {"parts": parts, "role": "model"},
                "finishReason": "MAX_TOKENS" if answer.truncated else "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": ident,
    }


def gemini_limit(request: Mapping[str, Any]) -> int | None:
    """``generationConfig.maxOutputTokens``: thoughts count against it on 2.5 and 3."""
    config = _get(request, "generationConfig", "generation_config")
    value = (
        _get(config, "maxOutputTokens", "max_output_tokens")
        if isinstance(config, Mapping)
        else None
    )
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def anthropic_limit(params: Mapping[str, Any]) -> int | None:
    value = params.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def anthropic_shows_thoughts(params: Mapping[str, Any]) -> bool:
    """``display: "omitted"`` keeps the thinking block but empties its text.

    The adaptive-only models (Opus 4.7 on) default to omitted: "Opus 4.8/4.7 default to
    display: omitted ... set display: summarized" (AAswordman/Operit#568, srtab/daiv#1429).
    """
    thinking = params.get("thinking")
    if not anthropic_thinking(params) or not isinstance(thinking, Mapping):
        return False
    display = thinking.get("display")
    if display is None:
        entry = rules.anthropic_model(str(params.get("model", "")))
        display = "omitted" if entry is not None and entry.no_sampling else "summarized"
    return display != "omitted"
