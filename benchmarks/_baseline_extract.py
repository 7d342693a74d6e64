"""The baseline's extraction: the same row from an ``orjson.loads`` dict, as a plain loop
would do it (pairbatch 0.1's dict fast path for OpenAI lines), for the benchmarks."""

from __future__ import annotations

from typing import Any


def dict_extract(obj: dict[str, Any]) -> tuple[Any, ...] | None:
    """The extraction on an orjson-decoded dict: pairbatch's OpenAI fast path before
    typed decoding (0.1.x), kept here as the baseline's per-line work."""
    if obj.get("error") is not None:
        return None
    response = obj["response"]
    status = response["status_code"]
    body = response["body"]
    if type(status) is not int or not 200 <= status < 300 or type(body) is not dict:
        return None
    custom_id = obj.get("custom_id")
    model = body.get("model")
    kind = body.get("object")
    if body.get("error") is not None or not (
        (custom_id is None or type(custom_id) is str) and (model is None or type(model) is str)
    ):
        return None
    usage = body.get("usage")
    if usage is None:
        prompt = completion = total = cached = reasoning = None
    else:
        # The usage shape is told by its keys, as in ``_openai_usage``, not by ``kind``.
        if "input_tokens" in usage or "output_tokens" in usage:
            prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
            details_in = usage.get("input_tokens_details")
            details_out = usage.get("output_tokens_details")
        else:
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            details_in = usage.get("prompt_tokens_details")
            details_out = usage.get("completion_tokens_details")
        total = usage.get("total_tokens")
        cached = None if details_in is None else details_in.get("cached_tokens")
        reasoning = None if details_out is None else details_out.get("reasoning_tokens")
        for number in (prompt, completion, total, cached, reasoning):
            if number is not None and type(number) is not int:
                return None
    if kind == "response":
        if body.get("status") == "incomplete":
            return None  # the careful parser says why it was cut short
        thoughts: list[str] = []
        content: list[str] = []
        for item in body["output"]:
            item_type = item["type"]
            if item_type == "reasoning":
                for part in item["summary"]:
                    text = part["text"]
                    if type(text) is not str:
                        return None
                    if text:
                        thoughts.append(text)
            elif item_type == "message":
                for part in item["content"]:
                    if part["type"] in ("output_text", "text", None):
                        text = part["text"]
                        if type(text) is not str:
                            return None
                        content.append(text)
        thought_text: str | None = "\n\n".join(thoughts)
        answer: str | None = "".join(content)
    elif kind == "chat.completion":
        choice = body["choices"][0]
        message = choice["message"]
        if type(message) is not dict or choice.get("finish_reason") == "length":
            return None
        answer = message.get("content")
        thought_text = message.get("reasoning_content")
        if not (answer is None or type(answer) is str) or not (
            thought_text is None or type(thought_text) is str
        ):
            return None
    else:
        return None
    return (
        custom_id,
        model,
        kind,
        status,
        "succeeded",
        None,
        thought_text,
        answer,
        prompt,
        completion,
        total,
        cached,
        reasoning,
    )
