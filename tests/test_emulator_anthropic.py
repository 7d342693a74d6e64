"""The official anthropic SDK against the emulator."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import anthropic
import pytest

from pairbatch.prompts import DEFAULT_TEMPLATE, build_prompt
from pairbatch.testing import ProviderEmulator, expected_winner


class StepClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def req(custom_id: str, prompt: str = "hi", **params: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "params": {
            "model": "claude-sonnet-4-5",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": prompt}],
            **params,
        },
    }


def client(emu: ProviderEmulator, **kwargs: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=emu.base_url("anthropic"), api_key="k", **kwargs)


async def wait_ended(c: anthropic.AsyncAnthropic, batch_id: str) -> Any:
    for _ in range(400):
        batch = await c.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        await asyncio.sleep(0.01)
    raise AssertionError("batch did not end")


async def test_create_retrieve_results() -> None:
    pairs = [("x" * i, "y" * (5 - i)) for i in range(6)]
    requests = [
        req(
            f"p{i}",
            build_prompt(DEFAULT_TEMPLATE, "T", "D", t1, t2),
            thinking={"type": "enabled", "budget_tokens": 1024} if i % 2 else None,
            # The real API wants max_tokens > budget_tokens.
            max_tokens=2048 if i % 2 else 64,
        )
        for i, (t1, t2) in enumerate(pairs)
    ]
    for r in requests:
        if r["params"]["thinking"] is None:
            del r["params"]["thinking"]
    # Content as a list of text parts must work too.
    requests[0]["params"]["messages"][0]["content"] = [
        {"type": "text", "text": requests[0]["params"]["messages"][0]["content"]}
    ]
    async with ProviderEmulator(latency=0.05) as emu, client(emu) as c:
        batch = await c.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        assert batch.processing_status == "in_progress"
        assert batch.request_counts.processing == 6 and batch.results_url is None
        done = await wait_ended(c, batch.id)
        assert done.request_counts.succeeded == 6 and done.request_counts.processing == 0
        assert done.ended_at is not None
        assert done.results_url == f"{emu.origin}/v1/messages/batches/{batch.id}/results"
        results = [r async for r in await c.messages.batches.results(batch.id)]
        assert [r.custom_id for r in results] != [f"p{i}" for i in range(6)]  # shuffled
        by_id = {r.custom_id: r for r in results}
        for i, (t1, t2) in enumerate(pairs):
            result = by_id[f"p{i}"].result
            assert result.type == "succeeded"
            blocks = result.message.content
            assert [b.type for b in blocks] == (["thinking", "text"] if i % 2 else ["text"])
            assert blocks[-1].text == f"<BETTER_SAMPLE>{expected_winner(t1, t2)}</BETTER_SAMPLE>"
            usage = result.message.usage
            assert usage.input_tokens > 0 and usage.output_tokens > 0
            assert usage.cache_read_input_tokens is not None


async def test_list_and_cancel() -> None:
    clock = StepClock()
    async with ProviderEmulator(latency=100.0, clock=clock) as emu, client(emu) as c:
        ids = [
            (await c.messages.batches.create(requests=[req(f"r{j}") for j in range(30)])).id
            for _ in range(5)
        ]  # type: ignore[list-item]
        first = await c.messages.batches.list(limit=2)
        assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more
        assert [b.id async for b in await c.messages.batches.list(limit=2)] == ids[::-1]
        clock.t = 50.0
        canceling = await c.messages.batches.cancel(ids[0])
        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at is not None
        assert canceling.request_counts.processing == 30
        clock.t = 65.0
        ended = await c.messages.batches.retrieve(ids[0])
        counts = ended.request_counts
        assert ended.processing_status == "ended"
        assert 0 < counts.canceled < 30 and counts.succeeded + counts.canceled == 30
        results = [r async for r in await c.messages.batches.results(ids[0])]
        assert sum(r.result.type == "canceled" for r in results) == counts.canceled
        with pytest.raises(anthropic.BadRequestError):
            await c.messages.batches.cancel(ids[0])
        with pytest.raises(anthropic.NotFoundError):
            await c.messages.batches.retrieve("msgbatch_nope")
        deleted = await c.messages.batches.delete(ids[0])
        assert deleted.type == "message_batch_deleted"


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([req("a" * 65)], "requests.0.custom_id: String should have at most 64 characters"),
        ([req("ok"), req("bad id")], "requests.1.custom_id: String should match pattern"),
        ([req("")], "requests.0.custom_id: String should have at least 1 character"),
        ([req("x"), req("x")], "requests.1.custom_id: Duplicate custom_id"),
        ([], "requests: List should have at least 1 item"),
        ([req(f"r{i}") for i in range(100_001)], "requests: List should have at most 100000"),
    ],
)
async def test_validation_400(requests: list[dict[str, Any]], message: str) -> None:
    async with ProviderEmulator() as emu:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{emu.base_url('anthropic')}/v1/messages/batches",
                json={"requests": requests},
                headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
            ) as r,
        ):
            assert r.status == 400
            body = await r.json()
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["message"].startswith(message)
        assert emu.stats.batches_created["anthropic"] == 0


async def test_results_before_end_is_an_error() -> None:
    clock = StepClock()
    async with ProviderEmulator(latency=10.0, clock=clock) as emu, client(emu, max_retries=0) as c:
        batch = await c.messages.batches.create(requests=[req("a")])  # type: ignore[list-item]
        with pytest.raises(anthropic.AnthropicError):
            await c.messages.batches.results(batch.id)
