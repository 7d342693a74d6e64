"""The official anthropic SDK against the emulator: a batch with thinking, refused
requests in the results, the synchronous Messages endpoint and batch validation.

Every body is parsed by the SDK's own types.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest
from anthropic.types import Message
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from pairbatch.prompts import DEFAULT_TEMPLATE, build_prompt
from pairbatch.testing import ProviderEmulator, expected_winner

PROMPT = build_prompt(DEFAULT_TEMPLATE, "T", "D", "short", "a longer sample")
WINNER = f"<BETTER_SAMPLE>{expected_winner('short', 'a longer sample')}</BETTER_SAMPLE>"


def client(emu: ProviderEmulator) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=emu.base_url("anthropic"), api_key="k", max_retries=0)


def params(model: str = "claude-sonnet-4-5", max_tokens: int = 64, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": PROMPT}],
        **extra,
    }


async def wait_ended(c: anthropic.AsyncAnthropic, batch_id: str) -> MessageBatch:
    for _ in range(2000):
        batch = await c.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        await asyncio.sleep(0.01)
    raise AssertionError("batch did not end")


async def test_batch_with_thinking_and_refused_requests() -> None:
    requests = [
        {"custom_id": "plain", "params": params(temperature=0)},
        {
            "custom_id": "think",
            "params": params(max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 2048}),
        },
        {
            "custom_id": "adaptive",
            "params": params(
                "claude-opus-4-7",
                max_tokens=4096,
                thinking={"type": "adaptive"},
                output_config={"effort": "low"},
            ),
        },
        {"custom_id": "short", "params": params("claude-haiku-4-5", max_tokens=4)},
        {
            "custom_id": "budget-too-big",
            "params": params(max_tokens=1024, thinking={"type": "enabled", "budget_tokens": 1024}),
        },
        {"custom_id": "opus-temp", "params": params("claude-opus-4-7", temperature=0.5)},
    ]
    async with ProviderEmulator(latency=0.05) as emu, client(emu) as c:
        batch = await c.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        done = await wait_ended(c, batch.id)
        assert done.request_counts.succeeded + done.request_counts.errored == 6
        results: dict[str, MessageBatchIndividualResponse] = {
            r.custom_id: r async for r in await c.messages.batches.results(batch.id)
        }
        for name in ("plain", "think", "adaptive"):
            result = results[name].result
            assert result.type == "succeeded", name
            message = Message.model_validate(result.message.model_dump())
            assert message.content[-1].type == "text" and message.content[-1].text == WINNER
            assert message.stop_reason == "end_turn"
        think = results["think"].result
        assert think.type == "succeeded"
        assert [b.type for b in think.message.content] == ["thinking", "text"]
        assert think.message.usage.output_tokens > 10  # thinking is billed as output
        assert think.message.content[0].type == "thinking" and think.message.content[0].thinking
        # Opus 4.7 defaults to display "omitted": the block stays, its text is empty.
        adaptive = results["adaptive"].result
        assert adaptive.type == "succeeded"
        block = adaptive.message.content[0]
        assert block.type == "thinking" and block.thinking == "" and block.signature
        short = results["short"].result
        assert short.type == "succeeded" and short.message.stop_reason == "max_tokens"
        assert short.message.usage.output_tokens == 4
        errors = {}
        for name in ("budget-too-big", "opus-temp"):
            result = results[name].result
            assert result.type == "errored"
            assert result.error.error.type == "invalid_request_error"
            errors[name] = result.error.error.message
        assert errors == {
            "budget-too-big": "`max_tokens` must be greater than `thinking.budget_tokens`. "
            "Please consult our documentation at https://docs.claude.com/en/docs/"
            "build-with-claude/extended-thinking#max-tokens-and-context-window-size",
            "opus-temp": "`temperature` is deprecated for this model.",
        }


async def test_sync_messages_rules() -> None:
    async with ProviderEmulator(latency=0.02) as emu, client(emu) as c:
        # This SDK version has no `temperature` argument; the API still takes it.
        message = await c.messages.create(
            **params("claude-sonnet-4-5"), extra_body={"temperature": 0}
        )
        assert message.content[0].type == "text" and message.content[0].text == WINNER
        assert message.usage.service_tier == "standard"
        adaptive = await c.messages.create(
            **params("claude-opus-4-7", max_tokens=2048),
            thinking={"type": "adaptive"},
            output_config={"effort": "xhigh"},
        )
        assert adaptive.content[-1].type == "text"
        with pytest.raises(anthropic.BadRequestError) as caught:
            await c.messages.create(
                **params("claude-opus-4-7", max_tokens=4096),
                thinking={"type": "enabled", "budget_tokens": 2048},
            )
        body = caught.value.body
        assert isinstance(body, dict)
        assert body["type"] == "error"
        assert body["error"] == {
            "type": "invalid_request_error",
            "message": '"thinking.type.enabled" is not supported for this model. Use '
            '"thinking.type.adaptive" and "output_config.effort" to control thinking behavior.',
        }
        assert emu.stats.count("anthropic", "generate") == 3
        # Past 100,000 requests (sent raw: the SDK's transform of 100k items is slow).
        tiny = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": []}
        many = {"requests": [{"custom_id": f"r{i}", "params": tiny} for i in range(100_001)]}
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{emu.base_url('anthropic')}/v1/messages/batches",
                data=orjson.dumps(many),
                headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
            ) as r,
        ):
            assert r.status == 400
            body = await r.json()
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["message"].startswith(
            "requests: List should have at most 100000 items"
        )
        assert emu.stats.batches_created["anthropic"] == 0


async def test_batch_validation() -> None:
    async with ProviderEmulator(latency=0.02) as emu, client(emu) as c:
        for requests, message in (
            (
                [{"custom_id": "a", "params": params()}, {"custom_id": "a", "params": params()}],
                "requests.1.custom_id: Duplicate custom_id 'a'",
            ),
            (
                [{"custom_id": "has space", "params": params()}],
                "requests.0.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
            ),
        ):
            with pytest.raises(anthropic.BadRequestError) as caught:
                await c.messages.batches.create(requests=requests)  # type: ignore[arg-type]
            assert isinstance(caught.value.body, dict)
            assert caught.value.body["error"]["message"].startswith(message)
        # Past 100,000 requests (sent raw: the SDK's transform of 100k items is slow).
        tiny = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": []}
        many = {"requests": [{"custom_id": f"r{i}", "params": tiny} for i in range(100_001)]}
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{emu.base_url('anthropic')}/v1/messages/batches",
                data=orjson.dumps(many),
                headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
            ) as r,
        ):
            assert r.status == 400
            body = await r.json()
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["message"].startswith(
            "requests: List should have at most 100000 items"
        )
        assert emu.stats.batches_created["anthropic"] == 0
