"""Gemini batch mode over raw aiohttp: inline and file input, list, cancel, download."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from pairbatch.prompts import DEFAULT_TEMPLATE, build_prompt
from pairbatch.testing import ProviderEmulator, expected_winner

KEY = {"x-goog-api-key": "k"}


def gem_request(prompt: str, include_thoughts: bool = False) -> dict[str, Any]:
    request: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    if include_thoughts:
        request["generationConfig"] = {"thinkingConfig": {"includeThoughts": True}}
    return request


async def create_inline(
    s: aiohttp.ClientSession,
    emu: ProviderEmulator,
    items: list[tuple[str, dict[str, Any]]],
    display_name: str = "job",
) -> dict[str, Any]:
    body = {
        "batch": {
            "display_name": display_name,
            "input_config": {
                "requests": {"requests": [{"request": r, "metadata": {"key": k}} for k, r in items]}
            },
        }
    }
    url = f"{emu.base_url('gemini')}/v1beta/models/gemini-2.5-flash:batchGenerateContent"
    async with s.post(url, json=body, headers=KEY) as r:
        assert r.status == 200, await r.text()
        result: dict[str, Any] = await r.json()
        return result


async def poll(s: aiohttp.ClientSession, emu: ProviderEmulator, name: str) -> dict[str, Any]:
    for _ in range(400):
        async with s.get(f"{emu.base_url('gemini')}/v1beta/{name}", headers=KEY) as r:
            op: dict[str, Any] = await r.json()
        if op.get("done"):
            return op
        await asyncio.sleep(0.01)
    raise AssertionError("batch did not finish")


async def test_inline_batch_matched_by_key() -> None:
    pairs = {f"k{i}": ("é" * i, "🙂" * (4 - i)) for i in range(5)}
    items = [
        (k, gem_request(build_prompt(DEFAULT_TEMPLATE, "T", "D", a, b), include_thoughts=k == "k1"))
        for k, (a, b) in pairs.items()
    ]
    async with ProviderEmulator(latency=0.05) as emu, aiohttp.ClientSession() as s:
        op = await create_inline(s, emu, items, display_name="run-42")
        assert op["name"].startswith("batches/") and "done" not in op
        assert op["metadata"]["state"] == "BATCH_STATE_PENDING"
        assert op["metadata"]["displayName"] == "run-42"
        assert op["metadata"]["batchStats"] == {"requestCount": "5", "pendingRequestCount": "5"}
        done = await poll(s, emu, op["name"])
        meta = done["metadata"]
        assert meta["state"] == "BATCH_STATE_SUCCEEDED" and "endTime" in meta
        assert meta["batchStats"] == {"requestCount": "5", "successfulRequestCount": "5"}
        inlined = meta["output"]["inlinedResponses"]["inlinedResponses"]
        assert done["response"]["inlinedResponses"]["inlinedResponses"] == inlined
        assert done["response"]["@type"].endswith("GenerateContentBatchOutput")
        assert [e["metadata"]["key"] for e in inlined] == list(pairs)  # request order
        for entry in inlined:
            a, b = pairs[entry["metadata"]["key"]]
            parts = entry["response"]["candidates"][0]["content"]["parts"]
            if entry["metadata"]["key"] == "k1":
                assert parts[0]["thought"] is True and len(parts) == 2
            assert parts[-1] == {"text": f"<BETTER_SAMPLE>{expected_winner(a, b)}</BETTER_SAMPLE>"}
            usage = entry["response"]["usageMetadata"]
            assert usage["totalTokenCount"] == (
                usage["promptTokenCount"]
                + usage["candidatesTokenCount"]
                + usage.get("thoughtsTokenCount", 0)
            )
            assert entry["response"]["modelVersion"] == "gemini-2.5-flash"


async def upload(s: aiohttp.ClientSession, emu: ProviderEmulator, data: bytes) -> str:
    base = emu.base_url("gemini")
    start_headers = {
        **KEY,
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": str(len(data)),
        "X-Goog-Upload-Header-Content-Type": "application/jsonl",
    }
    async with s.post(
        f"{base}/upload/v1beta/files",
        headers=start_headers,
        json={"file": {"display_name": "input"}},
    ) as r:
        assert r.status == 200 and r.headers["x-goog-upload-status"] == "active"
        url = r.headers["x-goog-upload-url"]
    half = len(data) // 2
    # No key on the data legs: the upload URL is the credential.
    async with s.post(
        url,
        data=data[:half],
        headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"},
    ) as r:
        assert r.status == 200 and r.headers["x-goog-upload-status"] == "active"
    async with s.post(
        url,
        data=data[half:],
        headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": str(half)},
    ) as r:
        assert r.status == 200 and r.headers["x-goog-upload-status"] == "final"
        file_info = (await r.json())["file"]
    assert file_info["sizeBytes"] == str(len(data))
    name: str = file_info["name"]
    return name


async def test_file_batch_and_download_on_both_paths() -> None:
    lines = [
        {
            "key": f"req-{i}",
            "request": gem_request(build_prompt(DEFAULT_TEMPLATE, "T", "D", "a" * i, "bb")),
        }
        for i in range(6)
    ]
    data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    async with ProviderEmulator(latency=0.05) as emu, aiohttp.ClientSession() as s:
        file_name = await upload(s, emu, data)
        url = f"{emu.base_url('gemini')}/v1beta/models/gemini-2.5-flash:batchGenerateContent"
        body = {"batch": {"displayName": "files", "inputConfig": {"fileName": file_name}}}
        async with s.post(url, json=body, headers=KEY) as r:
            op = await r.json()
        done = await poll(s, emu, op["name"])
        out = done["metadata"]["output"]["responsesFile"]
        assert out == f"files/batch-{op['name'].removeprefix('batches/')}"
        assert done["response"]["responsesFile"] == out
        base = emu.base_url("gemini")
        bodies = []
        for path in (f"/download/v1beta/{out}:download", f"/v1beta/{out}:download"):
            async with s.get(base + path, params={"alt": "media"}, headers=KEY) as r:
                assert r.status == 200
                bodies.append(await r.read())
        assert bodies[0] == bodies[1]
        results = [orjson.loads(line) for line in bodies[0].splitlines()]
        assert [r["key"] for r in results] == [f"req-{i}" for i in range(6)]
        for i, r in enumerate(results):
            text = r["response"]["candidates"][0]["content"]["parts"][-1]["text"]
            assert text == f"<BETTER_SAMPLE>{expected_winner('a' * i, 'bb')}</BETTER_SAMPLE>"


async def test_list_cancel_and_invalid_input() -> None:
    async with ProviderEmulator(latency=30.0) as emu, aiohttp.ClientSession() as s:
        names = [
            (await create_inline(s, emu, [("a", gem_request("x"))], f"job-{i}"))["name"]
            for i in range(5)
        ]
        base = emu.base_url("gemini")
        seen: list[str] = []
        token = None
        while True:
            params = {"pageSize": "2", **({"pageToken": token} if token else {})}
            async with s.get(f"{base}/v1beta/batches", params=params, headers=KEY) as r:
                page = await r.json()
            seen += [op["name"] for op in page["operations"]]
            token = page.get("nextPageToken")
            if not token:
                break
        assert seen == names[::-1]
        async with s.post(f"{base}/v1beta/{names[0]}:cancel", headers=KEY) as r:
            assert r.status == 200 and await r.json() == {}
        async with s.get(f"{base}/v1beta/{names[0]}", headers=KEY) as r:
            op = await r.json()
        assert op["metadata"]["state"] == "BATCH_STATE_CANCELLED" and op["done"] is True
        url = f"{base}/v1beta/models/gemini-2.5-flash:batchGenerateContent"
        for bad in (
            {"batch": {"input_config": {"requests": {"requests": []}}}},
            {"batch": {"input_config": {"requests": {"requests": [{"request": {}}]}}}},
            {"batch": {"input_config": {"file_name": "files/missing"}}},
            {"batch": {}},
        ):
            async with s.post(url, json=bad, headers=KEY) as r:
                assert r.status == 400
                error = (await r.json())["error"]
                assert error["status"] == "INVALID_ARGUMENT" and error["code"] == 400
        async with s.get(f"{base}/v1beta/batches/nope", headers=KEY) as r:
            assert r.status == 404 and (await r.json())["error"]["status"] == "NOT_FOUND"


@pytest.mark.parametrize("bad_line", [b"{oops", b'{"key": "a"}'])
async def test_bad_input_file_is_400(bad_line: bytes) -> None:
    async with ProviderEmulator() as emu, aiohttp.ClientSession() as s:
        name = await upload(s, emu, bad_line + b"\n")
        url = f"{emu.base_url('gemini')}/v1beta/models/m:batchGenerateContent"
        body = {"batch": {"input_config": {"file_name": name}}}
        async with s.post(url, json=body, params={"key": "k"}) as r:
            assert r.status == 400
            assert (await r.json())["error"]["status"] == "INVALID_ARGUMENT"
