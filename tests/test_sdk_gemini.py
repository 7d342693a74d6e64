"""The official google-genai SDK against the emulator: batches (inline and file), the
resumable upload, the synchronous endpoint, under both /v1beta and /v1.

Every body goes through the SDK's own pydantic types (extra fields forbidden).
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import aiohttp
import pytest
from google import genai
from google.genai import batches as gemini_batches
from google.genai import errors, types

from pairbatch.prompts import DEFAULT_TEMPLATE, build_prompt
from pairbatch.testing import FaultConfig, ProviderEmulator, expected_winner

VERSIONS = ("v1beta", "v1")


def client(emu: ProviderEmulator, version: str = "v1beta") -> genai.Client:
    return genai.Client(
        api_key="k",
        http_options=types.HttpOptions(base_url=emu.base_url("gemini"), api_version=version),
    )


def content(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


async def wait_done(c: genai.Client, name: str) -> types.BatchJob:
    for _ in range(2000):
        job = await c.aio.batches.get(name=name)
        if job.done:
            return job
        await asyncio.sleep(0.01)
    raise AssertionError("batch did not end")


async def raw_operation(emu: ProviderEmulator, version: str, name: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{emu.base_url('gemini')}/{version}/{name}", headers={"x-goog-api-key": "k"}) as r,
    ):
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


PAIRS = [("a" * 30, "b" * 10), ("c" * 5, "d" * 40), ("e" * 12, "f" * 12)]


@pytest.mark.parametrize("version", VERSIONS)
async def test_inline_batch_cycle(version: str) -> None:
    src = [
        {
            "contents": [content(build_prompt(DEFAULT_TEMPLATE, "T", "D", t1, t2))],
            "config": {"thinking_config": {"thinking_budget": 0}} if i == 0 else {},
        }
        for i, (t1, t2) in enumerate(PAIRS)
    ]
    async with ProviderEmulator(latency=0.05) as emu:
        c = client(emu, version)
        job = await c.aio.batches.create(
            model="gemini-2.5-flash", src=src, config={"display_name": "pairs"}
        )
        assert job.state == types.JobState.JOB_STATE_PENDING
        assert job.name is not None
        done = await wait_done(c, job.name)
        assert done.state == types.JobState.JOB_STATE_SUCCEEDED
        assert done.dest is not None and done.dest.inlined_responses is not None
        answers = done.dest.inlined_responses
        for (t1, t2), item in zip(PAIRS, answers, strict=True):
            assert item.response is not None
            assert item.response.text == f"<BETTER_SAMPLE>{expected_winner(t1, t2)}</BETTER_SAMPLE>"
        usage = [a.response.usage_metadata for a in answers if a.response is not None]
        # Thinking off: no thought tokens; the default (dynamic) budget thinks.
        assert usage[0] is not None and not usage[0].thoughts_token_count
        assert usage[1] is not None and (usage[1].thoughts_token_count or 0) > 0
        assert usage[1].candidates_token_count == 10
        names = [b.name async for b in await c.aio.batches.list()]
        assert names == [job.name]
        assert emu.stats.count("gemini", "batches.create") == 1


@pytest.mark.parametrize("version", VERSIONS)
async def test_file_batch_cycle_and_raw_types(version: str) -> None:
    lines = [
        {
            "key": f"k{i}",
            "request": {"contents": [content(build_prompt(DEFAULT_TEMPLATE, "T", "D", t1, t2))]},
        }
        for i, (t1, t2) in enumerate(PAIRS)
    ]
    # A request the model refuses errors alone: thinkingLevel on 2.5.
    lines.append(
        {
            "key": "bad",
            "request": {
                "contents": [content("x")],
                "generationConfig": {"thinkingConfig": {"thinkingLevel": "LOW"}},
            },
        }
    )
    data = b"\n".join(json.dumps(line).encode() for line in lines) + b"\n"
    async with ProviderEmulator(latency=0.05) as emu:
        c = client(emu, version)
        uploaded = await c.aio.files.upload(
            file=io.BytesIO(data), config={"mime_type": "application/jsonl", "display_name": "in"}
        )
        assert uploaded.name is not None and uploaded.size_bytes == len(data)
        again = await c.aio.files.get(name=uploaded.name)
        assert again.state == types.FileState.ACTIVE
        job = await c.aio.batches.create(model="models/gemini-2.5-flash", src=uploaded.name)
        assert job.name is not None
        done = await wait_done(c, job.name)
        assert done.dest is not None and done.dest.file_name is not None
        raw = await c.aio.files.download(file=done.dest.file_name)
        by_key = {}
        for line in raw.splitlines():
            row = json.loads(line)
            by_key[row.pop("key")] = row
        assert by_key["bad"] == {
            "error": {
                "code": 400,
                "message": "Thinking level is not supported for this model.",
                "status": "INVALID_ARGUMENT",
            }
        }
        for i, (t1, t2) in enumerate(PAIRS):
            response = types.GenerateContentResponse.model_validate(by_key[f"k{i}"]["response"])
            assert response.text == f"<BETTER_SAMPLE>{expected_winner(t1, t2)}</BETTER_SAMPLE>"
        # The raw operation, through the SDK's own converter and type.
        op = await raw_operation(emu, version, job.name)
        parsed = types.BatchJob.model_validate(gemini_batches._BatchJob_from_mldev(op))
        assert parsed.state == types.JobState.JOB_STATE_SUCCEEDED


async def test_failed_batch_carries_error() -> None:
    faults = {"gemini": FaultConfig(batch_failed_rate=1.0)}
    async with ProviderEmulator(latency=0.02, faults=faults) as emu:
        c = client(emu)
        job = await c.aio.batches.create(
            model="gemini-2.5-flash", src=[{"contents": [content("x")]}]
        )
        assert job.name is not None
        done = await wait_done(c, job.name)
        assert done.state == types.JobState.JOB_STATE_FAILED
        # The SDK's Gemini-API converter drops the operation's `error`; read it raw.
        op = await raw_operation(emu, "v1beta", job.name)
        assert op["done"] is True
        error = types.JobError.model_validate(op["error"])
        assert error.code and error.message


async def test_sync_generate_content_and_rules() -> None:
    async with ProviderEmulator(latency=0.02) as emu:
        for version in VERSIONS:
            c = client(emu, version)
            prompt = build_prompt(DEFAULT_TEMPLATE, "T", "D", "long text", "short")
            ok = await c.aio.models.generate_content(
                model="gemini-3-flash-preview",
                contents=prompt,
                config=types.GenerateContentConfig(
                    thinking_config=types.ThinkingConfig(thinking_level=types.ThinkingLevel.MINIMAL)
                ),
            )
            assert ok.text == "<BETTER_SAMPLE>SAMPLE_1</BETTER_SAMPLE>"
            with pytest.raises(errors.ClientError) as caught:
                await c.aio.models.generate_content(
                    model="gemini-2.5-pro",
                    contents=prompt,
                    config=types.GenerateContentConfig(
                        thinking_config=types.ThinkingConfig(thinking_budget=0)
                    ),
                )
            assert caught.value.code == 400
            assert caught.value.status == "INVALID_ARGUMENT"
            assert (
                caught.value.message
                == "Budget 0 is invalid. This model only works in thinking mode."
            )
            short = await c.aio.models.generate_content(
                model="gemini-2.5-flash",
                contents=prompt,
                config=types.GenerateContentConfig(max_output_tokens=5),
            )
            assert (
                short.candidates
                and short.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
            )
        assert emu.stats.count("gemini", "generate") == 6
        assert emu.stats.batches_created["gemini"] == 0


BIG = 20 * 1024 * 1024 + 12345  # three 8 MiB legs


async def test_chunked_upload_resent_leg_through_sdk() -> None:
    """google-genai re-sends a leg answered without x-goog-upload-status."""
    faults = {"gemini": FaultConfig(upload_fail_leg=2, endpoints=frozenset())}
    data = bytes(range(256)) * (BIG // 256) + b"x" * (BIG % 256)
    async with ProviderEmulator(latency=0.02, faults=faults) as emu:
        c = client(emu)
        uploaded = await c.aio.files.upload(
            file=io.BytesIO(data), config={"mime_type": "application/jsonl"}
        )
        assert uploaded.size_bytes == BIG
        legs = emu.stats.count("gemini", "upload.chunk")
        assert legs == 4  # three legs and the one re-sent
        assert emu.stats.faults[("gemini", "upload_no_status")] == 1
        assert uploaded.name is not None
        assert await c.aio.files.download(file=uploaded.name) == data


async def test_chunked_upload_resumed_by_query() -> None:
    """A dropped connection mid-leg: ask where the upload stands, resume from there."""
    faults = {"gemini": FaultConfig(upload_fail_leg=2, upload_fail_mode="reset")}
    data = b"0123456789abcdef" * (BIG // 16)
    chunk = 8 * 1024 * 1024
    async with ProviderEmulator(latency=0.02, faults=faults) as emu, aiohttp.ClientSession() as s:
        base = emu.base_url("gemini")
        async with s.post(
            f"{base}/upload/v1beta/files",
            headers={
                "x-goog-api-key": "k",
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": str(len(data)),
                "X-Goog-Upload-Header-Content-Type": "application/jsonl",
            },
            json={"file": {"display_name": "big"}},
        ) as r:
            assert r.headers["x-goog-upload-status"] == "active"
            url = r.headers["x-goog-upload-url"]
        offset, broken = 0, 0
        final: dict[str, Any] | None = None
        while final is None:
            piece = data[offset : offset + chunk]
            last = offset + len(piece) >= len(data)
            try:
                async with s.post(
                    url,
                    data=piece,
                    headers={
                        "X-Goog-Upload-Command": "upload, finalize" if last else "upload",
                        "X-Goog-Upload-Offset": str(offset),
                    },
                ) as r:
                    status = r.headers["x-goog-upload-status"]
                    if status == "final":
                        final = await r.json()
                    offset += len(piece)
            except aiohttp.ClientError:
                broken += 1
                async with s.post(url, headers={"X-Goog-Upload-Command": "query"}) as q:
                    assert q.headers["x-goog-upload-status"] == "active"
                    offset = int(q.headers["x-goog-upload-size-received"])
                assert chunk < offset < 2 * chunk  # half the second leg arrived
        assert broken == 1
        assert final["file"]["sizeBytes"] == str(len(data))
        types.File.model_validate(final["file"])
        async with s.post(url, headers={"X-Goog-Upload-Command": "query"}) as q:
            assert q.headers["x-goog-upload-status"] == "final"
            assert q.headers["x-goog-upload-size-received"] == str(len(data))
        name = final["file"]["name"]
        async with s.get(
            f"{base}/v1beta/{name}:download", params={"alt": "media", "key": "k"}
        ) as r:
            assert await r.read() == data


async def test_inline_body_over_20_mb_refused() -> None:
    text = "x" * (1024 * 1024)
    body = {
        "batch": {
            "input_config": {
                "requests": {
                    "requests": [{"request": {"contents": [content(text)]}} for _ in range(21)]
                }
            }
        }
    }
    async with ProviderEmulator(latency=0.02) as emu:
        c = client(emu)
        with pytest.raises(errors.ClientError) as caught:
            await c.aio.batches.create(
                model="gemini-2.5-flash",
                src=[{"contents": [content(text)]} for _ in range(21)],
            )
        assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{emu.base_url('gemini')}/v1beta/models/gemini-2.5-flash:batchGenerateContent",
                json=body,
                headers={"x-goog-api-key": "k"},
            ) as r,
        ):
            assert r.status == 400
        assert emu.stats.batches_created["gemini"] == 0
