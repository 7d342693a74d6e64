"""The official openai SDK against the emulator: batch cycles on both endpoints, the
synchronous endpoints, refused lines and batch-level validation.

Every body the emulator returns is parsed by the SDK's own types.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from openai.types import Batch
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from pairbatch.prompts import DEFAULT_TEMPLATE, build_prompt
from pairbatch.testing import ProviderEmulator, expected_winner

PROMPT = build_prompt(DEFAULT_TEMPLATE, "T", "D", "a longer sample", "short")
WINNER = f"<BETTER_SAMPLE>{expected_winner('a longer sample', 'short')}</BETTER_SAMPLE>"


def client(emu: ProviderEmulator) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=emu.base_url("openai"), api_key="k", max_retries=0)


def line(custom_id: str, url: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def chat(custom_id: str, model: str = "gpt-4.1-mini", **extra: Any) -> dict[str, Any]:
    return line(
        custom_id,
        "/v1/chat/completions",
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        **extra,
    )


def resp(custom_id: str, model: str = "gpt-5-mini", **extra: Any) -> dict[str, Any]:
    return line(custom_id, "/v1/responses", model=model, input=PROMPT, **extra)


async def run_batch(c: openai.AsyncOpenAI, lines: list[dict[str, Any]], endpoint: str) -> Batch:
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    uploaded = await c.files.create(file=("in.jsonl", data), purpose="batch")
    batch = await c.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )
    for _ in range(2000):
        batch = await c.batches.retrieve(batch.id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        await asyncio.sleep(0.01)
    raise AssertionError("batch did not end")


async def lines_of(c: openai.AsyncOpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    raw = (await c.files.content(file_id)).content
    return {row["custom_id"]: row for row in map(json.loads, raw.splitlines())}


async def test_chat_batch_cycle_with_a_refused_line() -> None:
    lines = [
        chat("plain", temperature=0),
        chat("mini5", model="gpt-5-mini", reasoning_effort="minimal", max_completion_tokens=500),
        chat("hot", model="gpt-5-mini", temperature=0),
    ]
    async with ProviderEmulator(latency=0.05) as emu, client(emu) as c:
        batch = await run_batch(c, lines, "/v1/chat/completions")
        assert batch.status == "completed"
        assert batch.request_counts is not None and batch.request_counts.total == 3
        ok = await lines_of(c, batch.output_file_id)
        bad = await lines_of(c, batch.error_file_id)
        assert set(ok) == {"plain", "mini5"} and set(bad) == {"hot"}
        for name in ok:
            completion = ChatCompletion.model_validate(ok[name]["response"]["body"])
            assert completion.choices[0].message.content == WINNER
            assert completion.choices[0].finish_reason == "stop"
        plain = ChatCompletion.model_validate(ok["plain"]["response"]["body"])
        mini = ChatCompletion.model_validate(ok["mini5"]["response"]["body"])
        assert plain.usage is not None and mini.usage is not None
        assert plain.usage.completion_tokens_details is not None
        assert plain.usage.completion_tokens_details.reasoning_tokens == 0
        assert mini.usage.completion_tokens_details is not None
        assert (mini.usage.completion_tokens_details.reasoning_tokens or 0) > 0
        assert bad["hot"]["response"]["status_code"] == 400
        assert bad["hot"]["response"]["body"] == {
            "error": {
                "message": "Unsupported value: 'temperature' does not support 0 with this "
                "model. Only the default (1) value is supported.",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": "unsupported_value",
            }
        }


async def test_responses_batch_cycle_and_incomplete() -> None:
    lines = [
        resp("low", reasoning={"effort": "low", "summary": "auto"}),
        resp("tight", max_output_tokens=16),
        resp("four", model="gpt-4.1-mini", temperature=0.2),
    ]
    async with ProviderEmulator(latency=0.05) as emu, client(emu) as c:
        batch = await run_batch(c, lines, "/v1/responses")
        assert batch.status == "completed" and batch.error_file_id is None
        ok = await lines_of(c, batch.output_file_id)
        low = Response.model_validate(ok["low"]["response"]["body"])
        assert low.status == "completed" and low.output_text == WINNER
        assert low.usage is not None and low.usage.output_tokens_details.reasoning_tokens > 0
        tight = Response.model_validate(ok["tight"]["response"]["body"])
        # The default (medium) reasoning spends the 16 tokens before any text.
        assert tight.status == "incomplete"
        assert tight.incomplete_details is not None
        assert tight.incomplete_details.reason == "max_output_tokens"
        assert tight.usage is not None and tight.usage.output_tokens == 16
        four = Response.model_validate(ok["four"]["response"]["body"])
        assert four.output_text == WINNER
        assert four.usage is not None and four.usage.output_tokens_details.reasoning_tokens == 0


async def test_sync_endpoints_counted_and_refused() -> None:
    async with ProviderEmulator(latency=0.02) as emu, client(emu) as c:
        completion = await c.chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": PROMPT}], temperature=0
        )
        assert completion.choices[0].message.content == WINNER
        response = await c.responses.create(
            model="gpt-5", input=PROMPT, reasoning={"effort": "high"}
        )
        assert response.output_text == WINNER
        with pytest.raises(openai.BadRequestError) as caught:
            await c.responses.create(model="gpt-5-nano", input=PROMPT, reasoning={"effort": "none"})
        assert caught.value.body == {
            "message": "Unsupported value: 'none' is not supported with the 'gpt-5-nano' model. "
            "Supported values are: 'minimal', 'low', 'medium', and 'high'.",
            "type": "invalid_request_error",
            "param": "reasoning.effort",
            "code": "unsupported_value",
        }
        assert emu.stats.count("openai", "generate") == 3
        assert emu.stats.count("openai", "generate", 400) == 1
        assert emu.stats.batches_created["openai"] == 0


async def test_duplicate_custom_id_and_wrong_url_fail_the_batch() -> None:
    lines = [chat("a"), chat("b"), chat("a"), resp("c")]
    async with ProviderEmulator(latency=0.02) as emu, client(emu) as c:
        batch = await run_batch(c, lines, "/v1/chat/completions")
        assert batch.status == "failed" and batch.output_file_id is None
        assert batch.errors is not None and batch.errors.data is not None
        by_code = {e.code: e for e in batch.errors.data}
        assert by_code["duplicate_custom_id"].line == 3
        assert by_code["duplicate_custom_id"].param == "custom_id"
        assert by_code["mismatched_endpoint"].line == 4


async def test_metadata_and_size_limits() -> None:
    async with ProviderEmulator(latency=0.02) as emu, client(emu) as c:
        uploaded = await c.files.create(
            file=("in.jsonl", json.dumps(chat("a")).encode()), purpose="batch"
        )
        for metadata in (
            {f"k{i}": "v" for i in range(17)},
            {"k" * 65: "v"},
            {"k": "v" * 513},
        ):
            with pytest.raises(openai.BadRequestError) as caught:
                await c.batches.create(
                    input_file_id=uploaded.id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                    metadata=metadata,
                )
            assert caught.value.body["param"] == "metadata"  # type: ignore[index]
        many = b"".join(json.dumps(chat(f"r{i}")).encode() + b"\n" for i in range(50_001))
        uploaded = await c.files.create(file=("many.jsonl", many), purpose="batch")
        created = await c.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for _ in range(2000):
            created = await c.batches.retrieve(created.id)
            if created.status == "failed":
                break
            await asyncio.sleep(0.01)
        assert created.status == "failed"
        assert created.errors is not None and created.errors.data is not None
        assert created.errors.data[0].code == "too_many_requests"
