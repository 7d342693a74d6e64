"""The official openai SDK against the emulator."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from pairbatch.prompts import DEFAULT_TEMPLATE, build_prompt
from pairbatch.testing import ProviderEmulator, expected_winner


class StepClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def chat_line(custom_id: str, prompt: str = "hello", **extra: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": prompt}],
            **extra,
        },
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def client(emu: ProviderEmulator, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=emu.base_url("openai"), api_key="sk-test", **kwargs)


async def submit(c: openai.AsyncOpenAI, lines: list[dict[str, Any]], **kwargs: Any) -> Any:
    uploaded = await c.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    endpoint = lines[0]["url"] if lines else "/v1/chat/completions"
    return await c.batches.create(
        input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h", **kwargs
    )


async def wait_done(c: openai.AsyncOpenAI, batch_id: str) -> Any:
    for _ in range(400):
        batch = await c.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        await asyncio.sleep(0.01)
    raise AssertionError("batch did not finish")


def parse(content: bytes) -> dict[str, dict[str, Any]]:
    return {line["custom_id"]: line for line in map(orjson.loads, content.splitlines())}


async def test_full_flow_with_metadata_and_verdicts() -> None:
    pairs = [("a" * i, "b" * (7 - i)) for i in range(8)]
    lines = [
        chat_line(f"p{i}", build_prompt(DEFAULT_TEMPLATE, "T", "D", t1, t2))
        for i, (t1, t2) in enumerate(pairs)
    ]
    async with ProviderEmulator(latency=0.05) as emu, client(emu) as c:
        created = await submit(c, lines, metadata={"run": "tag-123"})
        assert created.status == "validating"
        assert created.metadata == {"run": "tag-123"}
        assert created.request_counts is not None and created.request_counts.total == 0
        done = await wait_done(c, created.id)
        assert done.status == "completed"
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed) == (8, 8)
        assert done.error_file_id is None and done.output_file_id
        for stamp in ("created_at", "in_progress_at", "finalizing_at", "completed_at"):
            assert getattr(done, stamp) is not None
        assert done.failed_at is None and done.cancelled_at is None
        assert done.usage is not None and done.usage.input_tokens > 0
        content = (await c.files.content(done.output_file_id)).content
        results = parse(content)
        assert [line["custom_id"] for line in map(orjson.loads, content.splitlines())] != [
            f"p{i}" for i in range(8)
        ], "results should come out shuffled"
        for i, (t1, t2) in enumerate(pairs):
            body = results[f"p{i}"]["response"]["body"]
            assert body["object"] == "chat.completion"
            text = body["choices"][0]["message"]["content"]
            assert text == f"<BETTER_SAMPLE>{expected_winner(t1, t2)}</BETTER_SAMPLE>"
            usage = body["usage"]
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            assert "cached_tokens" in usage["prompt_tokens_details"]
            assert "reasoning_tokens" in usage["completion_tokens_details"]
        info = await c.files.retrieve(done.output_file_id)
        assert info.purpose == "batch_output" and info.bytes == len(content)


async def test_states_follow_the_injected_clock() -> None:
    clock = StepClock()
    async with ProviderEmulator(latency=100.0, clock=clock) as emu, client(emu) as c:
        batch = await submit(c, [chat_line(f"r{i}") for i in range(20)])
        seen = []
        for step in (5.0, 50.0, 95.0, 101.0):
            clock.t = 1000.0 + step
            now = await c.batches.retrieve(batch.id)
            assert now.request_counts is not None
            seen.append((now.status, now.request_counts.completed))
        assert [s for s, _ in seen] == ["validating", "in_progress", "finalizing", "completed"]
        assert seen[0][1] == 0 < seen[1][1] < 20 == seen[2][1] == seen[3][1]


async def test_responses_endpoint_with_reasoning_summary() -> None:
    prompt = build_prompt(DEFAULT_TEMPLATE, "T", "D", "short", "a longer one")
    line = {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/responses",
        "body": {
            "model": "gpt-5-mini",
            "input": prompt,
            "reasoning": {"effort": "low", "summary": "auto"},
        },
    }
    plain = {
        **line,
        "custom_id": "r2",
        "body": {
            "model": "gpt-5-mini",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": prompt}]}],
        },
    }
    async with ProviderEmulator(latency=0.02) as emu, client(emu) as c:
        done = await wait_done(c, (await submit(c, [line, plain])).id)
        results = parse((await c.files.content(done.output_file_id)).content)
        body = results["r1"]["response"]["body"]
        assert body["object"] == "response"
        kinds = [item["type"] for item in body["output"]]
        assert kinds == ["reasoning", "message"]
        assert body["output"][0]["summary"][0]["type"] == "summary_text"
        assert body["output"][0]["summary"][0]["text"]
        assert body["output"][1]["content"][0] == {
            "type": "output_text",
            "text": "<BETTER_SAMPLE>SAMPLE_2</BETTER_SAMPLE>",
            "annotations": [],
        }
        assert body["usage"]["output_tokens_details"]["reasoning_tokens"] > 0
        other = results["r2"]["response"]["body"]
        # gpt-5-mini reasons at its default effort: a reasoning item without a summary.
        assert [item["type"] for item in other["output"]] == ["reasoning", "message"]
        assert other["output"][0]["summary"] == []
        assert other["usage"]["output_tokens_details"]["reasoning_tokens"] > 0
        assert other["output"][1]["content"][0]["text"].endswith("SAMPLE_2</BETTER_SAMPLE>")


async def test_list_paginates_newest_first() -> None:
    async with ProviderEmulator(latency=0.02) as emu, client(emu) as c:
        ids = [(await submit(c, [chat_line("x")], metadata={"n": str(i)})).id for i in range(7)]
        first = await c.batches.list(limit=3)
        assert [b.id for b in first.data] == ids[::-1][:3]
        assert first.has_more is True
        every = [b.id async for b in await c.batches.list(limit=3)]
        assert every == ids[::-1]
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                f"{emu.base_url('openai')}/batches",
                params={"limit": "5", "after": ids[1]},
                headers={"Authorization": "Bearer k"},
            ) as r,
        ):
            page = await r.json()
        assert [b["id"] for b in page["data"]] == [ids[0]]
        assert page["has_more"] is False
        assert page["first_id"] == page["last_id"] == ids[0]
        # A client can find its own batch by a metadata tag.
        found = [b.id async for b in await c.batches.list() if (b.metadata or {}).get("n") == "4"]
        assert found == [ids[4]]


async def test_cancel_keeps_partial_output() -> None:
    clock = StepClock()
    async with ProviderEmulator(latency=100.0, clock=clock) as emu, client(emu) as c:
        batch = await submit(c, [chat_line(f"r{i}") for i in range(40)])
        clock.t += 50.0
        cancelling = await c.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        clock.t += 20.0
        done = await c.batches.retrieve(batch.id)
        assert done.status == "cancelled" and done.cancelled_at is not None
        assert done.request_counts is not None
        ok = parse((await c.files.content(done.output_file_id)).content)
        errors = parse((await c.files.content(done.error_file_id)).content)
        assert 0 < len(ok) < 40 and len(ok) + len(errors) == 40
        assert (done.request_counts.completed, done.request_counts.failed) == (len(ok), len(errors))
        assert {e["error"]["code"] for e in errors.values()} == {"batch_cancelled"}
        assert all(e["response"] is None for e in errors.values())
        # Cancelling again is harmless; cancelling a batch that completed is a 400.
        assert (await c.batches.cancel(batch.id)).status == "cancelled"
        other = await submit(c, [chat_line("y")])
        clock.t += 200.0
        with pytest.raises(openai.BadRequestError):
            await c.batches.cancel(other.id)


@pytest.mark.parametrize(
    ("lines", "code"),
    [
        ([b"{not json"], "invalid_json_line"),
        ([orjson.dumps({**chat_line("a"), "url": "/v1/responses"})], "mismatched_endpoint"),
        ([orjson.dumps({**chat_line("a"), "method": "GET"})], "invalid_value"),
        ([orjson.dumps(chat_line("a")), orjson.dumps(chat_line("a"))], "duplicate_custom_id"),
        ([orjson.dumps(chat_line(f"r{i}")) for i in range(50_001)], "too_many_requests"),
    ],
)
async def test_bad_input_fails_the_batch(lines: list[bytes], code: str) -> None:
    async with ProviderEmulator(latency=0.02) as emu, client(emu) as c:
        uploaded = await c.files.create(file=("in.jsonl", b"\n".join(lines)), purpose="batch")
        batch = await c.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert batch.status == "validating"
        done = await wait_done(c, batch.id)
        assert done.status == "failed" and done.failed_at is not None
        assert done.errors is not None and done.errors.data
        assert code in {e.code for e in done.errors.data}
        assert done.output_file_id is None and done.error_file_id is None


async def test_create_errors_are_400() -> None:
    async with ProviderEmulator() as emu, client(emu, max_retries=0) as c:
        with pytest.raises(openai.BadRequestError):
            await c.batches.create(
                input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
            )
        uploaded = await c.files.create(file=("in.jsonl", jsonl([chat_line("a")])), purpose="batch")
        with pytest.raises(openai.BadRequestError):
            await c.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="48h"
            )  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError):
            await c.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={f"k{i}": "v" for i in range(17)},
            )
        with pytest.raises(openai.NotFoundError):
            await c.batches.retrieve("batch_missing")
        with pytest.raises(openai.NotFoundError):
            await c.files.content("file-missing")


async def test_content_supports_ranges() -> None:
    async with ProviderEmulator(latency=0.02) as emu, client(emu) as c:
        done = await wait_done(c, (await submit(c, [chat_line(f"r{i}") for i in range(5)])).id)
        full = (await c.files.content(done.output_file_id)).content
        url = f"{emu.base_url('openai')}/files/{done.output_file_id}/content"
        auth = {"Authorization": "Bearer k"}
        async with aiohttp.ClientSession() as s:
            async with s.get(url, headers={**auth, "Range": "bytes=10-"}) as r:
                assert r.status == 206
                assert r.headers["Content-Range"] == f"bytes 10-{len(full) - 1}/{len(full)}"
                assert await r.read() == full[10:]
            async with s.get(url, headers={**auth, "Range": "bytes=3-7"}) as r:
                assert r.status == 206 and await r.read() == full[3:8]
            async with s.get(url, headers={**auth, "Range": f"bytes={len(full)}-"}) as r:
                assert r.status == 416
