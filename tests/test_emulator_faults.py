"""Every fault kind, auth failures and statistics, observed from the client side."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from pairbatch.testing import DOWNLOAD_ENDPOINTS, FaultConfig, ProviderEmulator

AUTH = {
    "openai": {"Authorization": "Bearer k"},
    "anthropic": {"x-api-key": "k", "anthropic-version": "2023-06-01"},
    "gemini": {"x-goog-api-key": "k"},
}
LIST_PATH = {
    "openai": "/v1/batches",
    "anthropic": "/v1/messages/batches",
    "gemini": "/v1beta/batches",
}


class StepClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def raw(
    emu: ProviderEmulator,
    provider: str,
    method: str = "GET",
    path: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any, Any]:
    url = emu.origin + (path or LIST_PATH[provider])
    async with (
        aiohttp.ClientSession() as s,
        s.request(
            method, url, headers=AUTH[provider] if headers is None else headers, **kwargs
        ) as r,
    ):
        data = await r.read()
        body = orjson.loads(data) if data else None
        return r.status, r.headers, body


# -- batch creation helpers, one per provider ---------------------------------------------


async def make_openai(emu: ProviderEmulator, n: int, prefix: str = "r") -> str:
    lines = b"".join(
        orjson.dumps(
            {
                "custom_id": f"{prefix}{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            }
        )
        + b"\n"
        for i in range(n)
    )
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", lines, filename="in.jsonl")
    _, _, f = await raw(emu, "openai", "POST", "/v1/files", data=form)
    _, _, b = await raw(
        emu,
        "openai",
        "POST",
        "/v1/batches",
        json={
            "input_file_id": f["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    batch_id: str = b["id"]
    return batch_id


async def make_anthropic(emu: ProviderEmulator, n: int, prefix: str = "r") -> str:
    _, _, b = await raw(
        emu,
        "anthropic",
        "POST",
        "/v1/messages/batches",
        json={
            "requests": [
                {
                    "custom_id": f"{prefix}{i}",
                    "params": {
                        "model": "m",
                        "max_tokens": 5,
                        "messages": [{"role": "user", "content": "x"}],
                    },
                }
                for i in range(n)
            ]
        },
    )
    batch_id: str = b["id"]
    return batch_id


async def make_gemini(emu: ProviderEmulator, n: int, prefix: str = "r") -> str:
    _, _, op = await raw(
        emu,
        "gemini",
        "POST",
        "/v1beta/models/m:batchGenerateContent",
        json={
            "batch": {
                "input_config": {
                    "requests": {
                        "requests": [
                            {
                                "request": {"contents": [{"parts": [{"text": "x"}]}]},
                                "metadata": {"key": f"{prefix}{i}"},
                            }
                            for i in range(n)
                        ]
                    }
                }
            }
        },
    )
    name: str = op["name"]
    return name.removeprefix("batches/")


async def openai_files(emu: ProviderEmulator, batch: dict[str, Any]) -> tuple[list[Any], ...]:
    out = []
    for key in ("output_file_id", "error_file_id"):
        if batch[key] is None:
            out.append([])
            continue
        _, _, _ = await raw(emu, "openai", path=f"/v1/files/{batch[key]}")
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{emu.origin}/v1/files/{batch[key]}/content", headers=AUTH["openai"]) as r,
        ):
            out.append([orjson.loads(x) for x in (await r.read()).splitlines()])
    return tuple(out)


async def anthropic_results(emu: ProviderEmulator, batch_id: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{emu.origin}/v1/messages/batches/{batch_id}/results", headers=AUTH["anthropic"]
        ) as r,
    ):
        assert r.status == 200
        return [orjson.loads(x) for x in (await r.read()).splitlines()]


# -- HTTP faults ----------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_rate_limit_429_with_retry_hints(provider: str) -> None:
    faults = {provider: FaultConfig(rate_limit=2.0, burst=2)}
    async with ProviderEmulator(faults=faults) as emu:
        statuses = [await raw(emu, provider) for _ in range(3)]
        assert [s for s, _, _ in statuses] == [200, 200, 429]
        _, headers, body = statuses[2]
        assert emu.stats.rate_limited[provider] == 1
        assert emu.stats.count(provider, "batches.list", 429) == 1
        if provider == "gemini":
            assert "retry-after" not in headers
            assert body["error"]["status"] == "RESOURCE_EXHAUSTED"
            info = [d for d in body["error"]["details"] if d["@type"].endswith("RetryInfo")]
            assert info[0]["retryDelay"].endswith("s")
            assert 0 < float(info[0]["retryDelay"][:-1]) <= 0.5
        else:
            assert int(headers["retry-after"]) >= 1
            assert 0 < float(headers["retry-after-ms"]) <= 500
            if provider == "openai":
                assert body["error"]["code"] == "rate_limit_exceeded"
                assert headers["x-ratelimit-remaining-requests"] == "0"
            else:
                assert body["error"]["type"] == "rate_limit_error"
        await asyncio.sleep(0.55)
        assert (await raw(emu, provider))[0] == 200


async def test_sdk_rides_out_the_rate_limit() -> None:
    faults = {"openai": FaultConfig(rate_limit=20.0, burst=1)}
    async with (
        ProviderEmulator(faults=faults) as emu,
        openai.AsyncOpenAI(base_url=emu.base_url("openai"), api_key="k", max_retries=5) as c,
    ):
        await asyncio.gather(*(c.batches.list() for _ in range(5)))
        assert emu.stats.rate_limited["openai"] > 0
        assert emu.stats.count("openai", "batches.list", 200) == 5


async def test_anthropic_529_and_openai_503_when_overloaded() -> None:
    faults = {p: FaultConfig(overloaded_rate=1.0, should_retry=False) for p in AUTH}
    async with ProviderEmulator(faults=faults) as emu:
        status, headers, body = await raw(emu, "anthropic")
        assert status == 529 and body["error"]["type"] == "overloaded_error"
        assert headers["x-should-retry"] == "false"
        status, _, body = await raw(emu, "openai")
        assert status == 503 and body["error"]["type"] == "server_error"
        async with anthropic.AsyncAnthropic(base_url=emu.base_url("anthropic"), api_key="k") as c:
            with pytest.raises(anthropic.InternalServerError):
                await c.messages.batches.list()
        assert emu.stats.faults[("anthropic", "overloaded")] == 2


async def test_server_errors_mix_statuses() -> None:
    faults = {"gemini": FaultConfig(server_error_rate=1.0)}
    async with ProviderEmulator(faults=faults, seed=3) as emu:
        seen = {(await raw(emu, "gemini"))[0] for _ in range(40)}
        assert seen == {500, 502, 503}
        status, _, body = await raw(emu, "gemini")
        assert body["error"]["code"] == status and body["error"]["status"] in (
            "INTERNAL",
            "UNAVAILABLE",
        )


async def test_connection_reset() -> None:
    faults = {"openai": FaultConfig(reset_rate=1.0, endpoints=frozenset({"batches.list"}))}
    async with ProviderEmulator(faults=faults) as emu:
        with pytest.raises(aiohttp.ClientConnectionError):
            await raw(emu, "openai")
        assert emu.stats.count("openai", "batches.list", 0) >= 1
        # Other endpoints are untouched.
        assert (await raw(emu, "openai", path="/v1/batches/batch_x"))[0] == 404


async def test_truncated_downloads_only() -> None:
    faults = {p: FaultConfig(truncate_rate=1.0, endpoints=DOWNLOAD_ENDPOINTS) for p in AUTH}
    async with ProviderEmulator(latency=0.01, faults=faults) as emu:
        batch_id = await make_anthropic(emu, 20)
        await asyncio.sleep(0.05)
        status, _, batch = await raw(emu, "anthropic", path=f"/v1/messages/batches/{batch_id}")
        assert status == 200
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientPayloadError):
                async with s.get(batch["results_url"], headers=AUTH["anthropic"]) as r:
                    assert int(r.headers["Content-Length"]) > 0
                    await r.read()
        assert emu.stats.faults[("anthropic", "truncate")] == 1


async def test_slow_responses_and_slow_create_leaves_a_batch() -> None:
    faults = {
        "openai": FaultConfig(
            slow_rate=1.0, slow_seconds=0.3, endpoints=frozenset({"batches.get"})
        ),
        "anthropic": FaultConfig(
            slow_rate=1.0,
            slow_seconds=2.0,
            slow_after=True,
            endpoints=frozenset({"batches.create"}),
        ),
    }
    async with ProviderEmulator(faults=faults) as emu:
        started = time.monotonic()
        assert (await raw(emu, "openai", path="/v1/batches/nope"))[0] == 404
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        await raw(emu, "openai")
        assert time.monotonic() - started < 0.3
        c = anthropic.AsyncAnthropic(
            base_url=emu.base_url("anthropic"), api_key="k", max_retries=0, timeout=0.2
        )
        async with c:
            with pytest.raises(anthropic.APITimeoutError):
                await c.messages.batches.create(
                    requests=[
                        {  # type: ignore[list-item]
                            "custom_id": "a",
                            "params": {"model": "m", "max_tokens": 5, "messages": []},
                        }
                    ]
                )
            # The create happened before the stall: a client must look before re-creating.
            listed = [b.id async for b in await c.with_options(timeout=5).messages.batches.list()]
        assert listed == emu.batch_ids("anthropic") and len(listed) == 1


# -- batch fates ----------------------------------------------------------------------------


async def test_failed_batches() -> None:
    clock = StepClock()
    faults = {p: FaultConfig(batch_failed_rate=1.0) for p in AUTH}
    async with ProviderEmulator(latency=10.0, clock=clock, faults=faults) as emu:
        oid = await make_openai(emu, 4)
        aid = await make_anthropic(emu, 4)
        gid = await make_gemini(emu, 4)
        clock.t = 20.0
        _, _, batch = await raw(emu, "openai", path=f"/v1/batches/{oid}")
        assert batch["status"] == "failed" and batch["failed_at"] is not None
        # The fault's own reason: not a full queue, so a client must not resend it.
        assert batch["errors"]["data"][0]["code"] == "emulator_fault"
        assert batch["output_file_id"] is None
        _, _, mb = await raw(emu, "anthropic", path=f"/v1/messages/batches/{aid}")
        assert mb["processing_status"] == "ended" and mb["request_counts"]["errored"] == 4
        _, _, op = await raw(emu, "gemini", path=f"/v1beta/batches/{gid}")
        assert op["metadata"]["state"] == "BATCH_STATE_FAILED" and op["done"] is True
        assert "response" not in op and op["error"]["code"] == 13


async def test_expired_batches_keep_partial_output() -> None:
    clock = StepClock()
    faults = {p: FaultConfig(batch_expired_rate=1.0) for p in AUTH}
    async with ProviderEmulator(latency=10.0, clock=clock, faults=faults) as emu:
        oid = await make_openai(emu, 40)
        aid = await make_anthropic(emu, 40)
        gid = await make_gemini(emu, 40)
        clock.t = 5.0
        assert (await raw(emu, "openai", path=f"/v1/batches/{oid}"))[2]["status"] == "in_progress"
        clock.t = 9.99
        _, _, running = await raw(emu, "openai", path=f"/v1/batches/{oid}")
        clock.t = 20.0
        _, _, batch = await raw(emu, "openai", path=f"/v1/batches/{oid}")
        assert batch["status"] == "expired" and batch["expired_at"] is not None
        assert running["status"] == "in_progress"
        assert running["request_counts"]["completed"] == batch["request_counts"]["completed"]
        ok, errors = await openai_files(emu, batch)
        assert 0 < len(ok) < 40 and len(ok) + len(errors) == 40
        assert {e["error"]["code"] for e in errors} == {"batch_expired"}
        assert batch["request_counts"] == {"total": 40, "completed": len(ok), "failed": len(errors)}
        _, _, mb = await raw(emu, "anthropic", path=f"/v1/messages/batches/{aid}")
        counts = mb["request_counts"]
        assert mb["processing_status"] == "ended" and 0 < counts["expired"] < 40
        kinds = [r["result"]["type"] for r in await anthropic_results(emu, aid)]
        assert kinds.count("expired") == counts["expired"]
        assert kinds.count("succeeded") == counts["succeeded"] == 40 - counts["expired"]
        _, _, op = await raw(emu, "gemini", path=f"/v1beta/batches/{gid}")
        assert op["metadata"]["state"] == "BATCH_STATE_EXPIRED"


async def test_cancelled_by_fault() -> None:
    clock = StepClock()
    faults = {p: FaultConfig(batch_cancelled_rate=1.0) for p in AUTH}
    async with ProviderEmulator(latency=10.0, clock=clock, faults=faults) as emu:
        oid = await make_openai(emu, 40)
        aid = await make_anthropic(emu, 40)
        gid = await make_gemini(emu, 40)
        clock.t = 20.0
        _, _, batch = await raw(emu, "openai", path=f"/v1/batches/{oid}")
        assert batch["status"] == "cancelled" and batch["cancelling_at"] is not None
        ok, errors = await openai_files(emu, batch)
        assert 0 < len(ok) < 40 and {e["error"]["code"] for e in errors} == {"batch_cancelled"}
        _, _, mb = await raw(emu, "anthropic", path=f"/v1/messages/batches/{aid}")
        assert mb["processing_status"] == "ended" and 0 < mb["request_counts"]["canceled"] < 40
        _, _, op = await raw(emu, "gemini", path=f"/v1beta/batches/{gid}")
        assert op["metadata"]["state"] == "BATCH_STATE_CANCELLED"


async def test_request_errors_in_each_shape() -> None:
    faults = {p: FaultConfig(request_error_rate=0.5) for p in AUTH}
    async with ProviderEmulator(latency=0.02, faults=faults) as emu:
        oid = await make_openai(emu, 60)
        aid = await make_anthropic(emu, 60)
        gid = await make_gemini(emu, 60)
        await asyncio.sleep(0.05)
        _, _, batch = await raw(emu, "openai", path=f"/v1/batches/{oid}")
        ok, errors = await openai_files(emu, batch)
        assert batch["status"] == "completed" and 10 < len(errors) < 50
        assert len(ok) + len(errors) == 60
        with_response = [e for e in errors if e["response"] is not None]
        without = [e for e in errors if e["response"] is None]
        assert with_response and without
        assert all(
            e["error"] is None
            and e["response"]["status_code"] >= 400
            and "error" in e["response"]["body"]
            for e in with_response
        )
        assert all(set(e["error"]) == {"code", "message"} for e in without)
        results = await anthropic_results(emu, aid)
        errored = [r["result"] for r in results if r["result"]["type"] == "errored"]
        assert 10 < len(errored) < 50
        for result in errored:
            assert result["error"]["type"] == "error"
            assert set(result["error"]["error"]) == {"type", "message"}
        _, _, op = await raw(emu, "gemini", path=f"/v1beta/batches/{gid}")
        inlined = op["response"]["inlinedResponses"]["inlinedResponses"]
        bad = [e for e in inlined if "error" in e]
        assert 10 < len(bad) < 50
        assert all(
            {"code", "message", "status"} <= set(e["error"]) and "metadata" in e for e in bad
        )
        assert op["metadata"]["batchStats"]["failedRequestCount"] == str(len(bad))


async def test_no_tag_answers() -> None:
    faults = {p: FaultConfig(no_tag_rate=1.0) for p in AUTH}
    async with ProviderEmulator(latency=0.02, faults=faults) as emu:
        oid = await make_openai(emu, 3)
        aid = await make_anthropic(emu, 3)
        await asyncio.sleep(0.05)
        _, _, batch = await raw(emu, "openai", path=f"/v1/batches/{oid}")
        ok, _ = await openai_files(emu, batch)
        texts = [line["response"]["body"]["choices"][0]["message"]["content"] for line in ok]
        texts += [
            r["result"]["message"]["content"][-1]["text"] for r in await anthropic_results(emu, aid)
        ]
        assert len(texts) == 6 and not any("BETTER_SAMPLE" in t for t in texts)


async def test_openai_all_errored_completes_without_output_file() -> None:
    faults = {"openai": FaultConfig(batch_all_errored_rate=1.0)}
    async with ProviderEmulator(latency=0.02, faults=faults) as emu:
        oid = await make_openai(emu, 5)
        await asyncio.sleep(0.05)
        async with openai.AsyncOpenAI(base_url=emu.base_url("openai"), api_key="k") as c:
            batch = await c.batches.retrieve(oid)
        assert batch.status == "completed" and batch.output_file_id is None
        assert batch.error_file_id is not None
        assert batch.request_counts is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (0, 5)


# -- auth -------------------------------------------------------------------------------------


async def test_auth_errors_in_provider_shapes() -> None:
    async with ProviderEmulator(api_key="sk-only-this") as emu:
        status, _, body = await raw(emu, "openai", headers={})
        assert status == 401 and body["error"]["type"] == "invalid_request_error"
        status, _, body = await raw(emu, "openai")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        status, _, body = await raw(emu, "anthropic", headers={"anthropic-version": "x"})
        assert status == 401 and body["type"] == "error"
        assert body["error"]["type"] == "authentication_error"
        status, _, body = await raw(emu, "anthropic", headers={"x-api-key": "sk-only-this"})
        assert status == 400 and "anthropic-version" in body["error"]["message"]
        status, _, body = await raw(emu, "gemini", headers={})
        assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
        assert (await raw(emu, "gemini", headers={}, params={"key": "sk-only-this"}))[0] == 200
        assert (await raw(emu, "openai", headers={"Authorization": "Bearer sk-only-this"}))[
            0
        ] == 200
        env = emu.env()
        assert env["OPENAI_API_KEY"] == "sk-only-this"
        assert env["OPENAI_BASE_URL"] == f"{emu.origin}/v1"
        assert env["GEMINI_BASE_URL"] == env["ANTHROPIC_BASE_URL"] == emu.origin
        assert emu.stats.count(status=401) == 4


async def test_default_env_keys(emulator: ProviderEmulator) -> None:
    env = emulator.env()
    assert env["ANTHROPIC_API_KEY"].startswith("sk-emulator-")
    async with openai.AsyncOpenAI(
        base_url=env["OPENAI_BASE_URL"], api_key=env["OPENAI_API_KEY"]
    ) as c:
        assert [b async for b in await c.batches.list()] == []


# -- stats, determinism, isolation ----------------------------------------------------------


async def test_stats() -> None:
    async with ProviderEmulator(latency=0.01) as emu:
        await make_anthropic(emu, 2)
        await asyncio.gather(*(raw(emu, "gemini") for _ in range(8)))
        stats = emu.stats
        assert stats.batches_created["anthropic"] == 1
        assert stats.count("gemini", "batches.list", 200) == 8
        assert stats.count("anthropic") == 1
        assert stats.peak_rate("gemini", window=5.0) == 8
        assert len(stats.request_times["gemini"]) == 8
        assert stats.peak_connections >= 2 and stats.peak_in_flight >= 1
        assert (await raw(emu, "openai", path="/v1/nowhere"))[0] == 404
        assert stats.count("openai", "not_found", 404) == 1
        stats.reset()
        assert stats.count() == 0 and stats.peak_rate("gemini") == 0
        emu.set_faults("gemini", FaultConfig(server_error_rate=1.0))
        assert (await raw(emu, "gemini"))[0] >= 500
        emu.set_faults("gemini", None)
        assert (await raw(emu, "gemini"))[0] == 200
        assert (
            stats.faults[("gemini", "http_500")]
            + stats.faults[("gemini", "http_502")]
            + (stats.faults[("gemini", "http_503")])
            == 1
        )


async def _anthropic_fates(emu: ProviderEmulator, order: list[int]) -> dict[str, str]:
    ids = await asyncio.gather(*(make_anthropic(emu, 10, prefix=f"b{i}x") for i in order))
    await asyncio.sleep(0.05)
    fates: dict[str, str] = {}
    for batch_id in ids:
        for line in await anthropic_results(emu, batch_id):
            result = line["result"]
            fates[line["custom_id"]] = result["type"] + (
                ""
                if result["type"] != "succeeded"
                else str("BETTER_SAMPLE" in result["message"]["content"][-1]["text"])
            )
    return fates


async def test_fates_reproducible_across_emulators_and_orders() -> None:
    faults = {
        "anthropic": FaultConfig(request_error_rate=0.3, no_tag_rate=0.2, batch_expired_rate=0.3)
    }
    async with (
        ProviderEmulator(latency=0.02, faults=faults, seed=7) as one,
        ProviderEmulator(latency=0.02, faults=faults, seed=7) as two,
    ):
        first = await _anthropic_fates(one, list(range(6)))
        second = await _anthropic_fates(two, list(range(6))[::-1])
        assert first == second
        assert len(set(first.values())) >= 3
        # The emulators share nothing.
        assert set(one.batch_ids("anthropic")).isdisjoint(two.batch_ids("anthropic"))
        assert one.stats.batches_created["anthropic"] == 6
        assert one.port != two.port
    async with ProviderEmulator(latency=0.02, faults=faults, seed=8) as other:
        assert await _anthropic_fates(other, list(range(6))) != first


async def test_fault_config_validation() -> None:
    with pytest.raises(ValueError):
        FaultConfig(request_error_rate=0.7, no_tag_rate=0.4)
    with pytest.raises(ValueError):
        FaultConfig(endpoints=frozenset({"bogus"}))
    with pytest.raises(ValueError):
        FaultConfig(server_error_rate=1.5)
    with pytest.raises(ValueError):
        ProviderEmulator(faults={"nope": FaultConfig()})
