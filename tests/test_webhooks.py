"""Webhooks: the Standard Webhooks verifier, the ASGI receiver, the emulator's signed events,
and a poll interval of 60 s cut short by a webhook end to end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import uvicorn
from aiohttp import web
from fastapi import FastAPI

import pairbatch
from pairbatch.testing import FaultConfig, ProviderEmulator
from pairbatch.wakeups import Wakeups
from pairbatch.webhooks import (
    ReplayGuard,
    SigningSecret,
    WebhookReceiver,
    WebhookRejected,
    batch_id_of,
    sign,
    signed_headers,
    verify_signature,
)
from tests.engine_helpers import MODELS, check_run, credentials, study_pairs

SECRET_TEXT = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwMTI="
SECRET = SigningSecret.parse(SECRET_TEXT)
OTHER_TEXT = SigningSecret.generate()[1]
NOW = 1_767_000_000


def openai_event(batch_id: str = "batch_abc", kind: str = "batch.completed") -> bytes:
    return orjson.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "created_at": NOW,
            "type": kind,
            "data": {"id": batch_id},
        }
    )


def receiver(wakeups: Wakeups | None = None, **kwargs: Any) -> WebhookReceiver:
    kwargs = {"openai_secret": SECRET_TEXT, "clock": lambda: float(NOW)} | kwargs
    return WebhookReceiver(wakeups or Wakeups(), **kwargs)


def headers_for(body: bytes, webhook_id: str = "wh_1", at: int = NOW) -> dict[str, str]:
    return signed_headers([SECRET], webhook_id, at, body)


# ---------------------------------------------------------------- the signature scheme


def test_standard_webhooks_reference_vector() -> None:
    # From the Standard Webhooks Python library's tests (libraries/python/tests).
    key = SigningSecret.parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": expected,
    }
    assert verify_signature(body, headers, [key], now=1614265330 + 10) == (
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        0,
    )


def test_valid_event_wakes_its_batch() -> None:
    wakeups = Wakeups()
    recv = receiver(wakeups)
    body = openai_event("batch_xyz")
    event = recv.verify(body, headers_for(body))
    assert (event.provider, event.type, event.batch_id) == (
        "openai",
        "batch.completed",
        "batch_xyz",
    )
    assert recv.handle(body, headers_for(body, "wh_2")) == (200, "ok")
    # Nobody was polling it: the wake is kept for the poller's next sleep.
    assert "batch_xyz" in wakeups._early


def test_header_names_are_case_insensitive() -> None:
    body = openai_event()
    upper = {k.upper(): v for k, v in headers_for(body).items()}
    assert receiver().handle(body, upper) == (200, "ok")


@pytest.mark.parametrize(
    ("mutate", "status", "reason"),
    [
        (
            lambda b, h: (b, signed_headers([SigningSecret.parse(OTHER_TEXT)], "wh_1", NOW, b)),
            401,
            "signature does not match",
        ),
        (lambda b, h: (b.replace(b"batch_abc", b"batch_evil"), h), 401, "signature does not match"),
        (lambda b, h: (b, h | {"webhook-id": "wh_other"}), 401, "signature does not match"),
        (lambda b, h: (b, headers_for(b, at=NOW - 301)), 401, "webhook-timestamp too old"),
        (lambda b, h: (b, headers_for(b, at=NOW + 301)), 401, "webhook-timestamp in the future"),
    ],
    ids=["wrong-secret", "tampered-body", "tampered-id", "stale", "future"],
)
def test_bad_deliveries_are_refused(
    mutate: Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]],
    status: int,
    reason: str,
) -> None:
    wakeups = Wakeups()
    recv = receiver(wakeups)
    body, headers = mutate(openai_event(), headers_for(openai_event()))
    assert recv.handle(body, headers) == (status, reason)
    assert not wakeups._early and recv.stats["accepted"] == 0


def test_tolerance_boundary_is_inclusive() -> None:
    recv = receiver()
    body = openai_event()
    assert recv.handle(body, headers_for(body, "wh_old", NOW - 300))[0] == 200
    assert recv.handle(body, headers_for(body, "wh_new", NOW + 300))[0] == 200


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"webhook-timestamp": str(NOW), "webhook-signature": "v1,AAAA"}, "missing"),
        ({"webhook-id": "wh_1", "webhook-signature": "v1,AAAA"}, "missing"),
        ({"webhook-id": "wh_1", "webhook-timestamp": str(NOW)}, "missing"),
        (
            {"webhook-id": "wh_1", "webhook-timestamp": "soon", "webhook-signature": "v1,AAAA"},
            "malformed webhook-timestamp",
        ),
        (
            {"webhook-id": "wh_1", "webhook-timestamp": f"{NOW}.5", "webhook-signature": "v1,AAAA"},
            "malformed webhook-timestamp",
        ),
        (
            {"webhook-id": "wh_1", "webhook-timestamp": f"-{NOW}", "webhook-signature": "v1,AAAA"},
            "malformed webhook-timestamp",
        ),
        (
            {"webhook-id": "wh 1", "webhook-timestamp": str(NOW), "webhook-signature": "v1,AAAA"},
            "malformed webhook-id",
        ),
        (
            {
                "webhook-id": "w" * 300,
                "webhook-timestamp": str(NOW),
                "webhook-signature": "v1,AAAA",
            },
            "malformed webhook-id",
        ),
        (
            {"webhook-id": "wh_1", "webhook-timestamp": str(NOW), "webhook-signature": "garbage"},
            "no v1 signature",
        ),
        (
            {
                "webhook-id": "wh_1",
                "webhook-timestamp": str(NOW),
                "webhook-signature": "v1,!!notbase64!!",
            },
            "no v1 signature",
        ),
        (
            {
                "webhook-id": "wh_1",
                "webhook-timestamp": str(NOW),
                "webhook-signature": "v1a,AAAA v2,AAAA",
            },
            "no v1 signature",
        ),
    ],
)
def test_malformed_headers_are_400(headers: dict[str, str], reason: str) -> None:
    status, said = receiver().handle(openai_event(), headers)
    assert status == 400 and reason in said


def test_one_matching_signature_among_several_is_enough() -> None:
    body = openai_event()
    good = sign(SECRET, "wh_1", NOW, body)
    junk = sign(SigningSecret.parse(OTHER_TEXT), "wh_1", NOW, body)
    header = f"{junk} v1a,bm90IGVkMjU1MTk= v2,{good[3:]} {good}"
    headers = {"webhook-id": "wh_1", "webhook-timestamp": str(NOW), "webhook-signature": header}
    assert receiver().handle(body, headers) == (200, "ok")


def test_rotation_accepts_old_and_new_secrets() -> None:
    recv = receiver(openai_secret=[SECRET_TEXT, OTHER_TEXT])
    body = openai_event()
    old = signed_headers([SigningSecret.parse(OTHER_TEXT)], "wh_a", NOW, body)
    assert recv.handle(body, old) == (200, "ok")
    assert recv.handle(body, headers_for(body, "wh_b")) == (200, "ok")


def test_replay_is_refused_and_a_redelivery_acknowledged_once() -> None:
    wakeups = Wakeups()
    recv = receiver(wakeups)
    body = openai_event("batch_r")
    headers = headers_for(body, "wh_r")
    assert recv.handle(body, headers) == (200, "ok")
    assert recv.handle(body, headers) == (401, "replayed webhook-id")
    # The sender retrying (same id, fresh timestamp and signature): acknowledged, not acted on.
    assert recv.handle(body, headers_for(body, "wh_r", NOW + 5)) == (200, "duplicate")
    assert recv.stats["accepted"] == 1 and recv.stats["duplicate"] == 1


def test_replay_memory_is_bounded_and_windowed() -> None:
    guard = ReplayGuard(window=600, capacity=3)
    for i in range(5):
        assert guard.check(f"id{i}", NOW, NOW) == "new"
    assert len(guard) == 3
    assert guard.check("id4", NOW, NOW + 1) == "replay"
    assert guard.check("id0", NOW, NOW + 1) == "new"  # evicted: the timestamp check guards it
    guard.check("late", NOW, NOW + 700)
    assert len(guard) == 1  # everything older than the window went
    # Per receiver: two receivers share nothing.
    a, b = receiver(), receiver()
    body = openai_event()
    assert a.handle(body, headers_for(body)) == (200, "ok")
    assert b.handle(body, headers_for(body)) == (200, "ok")


def test_signed_but_not_an_event_is_400() -> None:
    recv = receiver()
    for i, body in enumerate([b"not json", b"[1, 2]", b'{"data": {}}']):
        assert recv.handle(body, headers_for(body, f"wh_{i}"))[0] == 400


def test_events_that_are_not_about_a_batch_are_200_and_wake_nothing() -> None:
    wakeups = Wakeups()
    recv = receiver(wakeups)
    body = orjson.dumps({"id": "evt", "type": "response.completed", "data": {"id": "resp_1"}})
    assert recv.handle(body, headers_for(body)) == (200, "ok")
    assert not wakeups._early


def test_gemini_batch_ids_are_batch_names() -> None:
    assert (
        batch_id_of("gemini", {"type": "batch.succeeded", "data": {"id": "abc"}}) == "batches/abc"
    )
    assert (
        batch_id_of("gemini", {"type": "batch.failed", "data": {"id": "batches/abc"}})
        == "batches/abc"
    )
    named = {"type": "batch.expired", "data": {"name": "batches/n", "id": "x"}}
    assert batch_id_of("gemini", named) == "batches/n"
    assert (
        batch_id_of("openai", {"type": "batch.completed", "data": {"id": "batch_1"}}) == "batch_1"
    )
    assert batch_id_of("openai", {"type": "batch.completed", "data": {}}) is None
    assert batch_id_of("openai", {"type": "batch.completed"}) is None


def test_secrets_from_env_and_never_shown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("OPENAI_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("GEMINI_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ValueError, match="OPENAI_WEBHOOK_SECRET"):
        WebhookReceiver(Wakeups())
    monkeypatch.setenv("GEMINI_WEBHOOK_SECRET", SECRET_TEXT)
    recv = WebhookReceiver(Wakeups(), clock=lambda: float(NOW))
    assert recv.providers == ("gemini",)
    body = orjson.dumps({"type": "batch.succeeded", "data": {"id": "g1"}})
    caplog.set_level(logging.DEBUG, logger="pairbatch.webhooks")
    assert recv.handle(body, headers_for(body)) == (200, "ok")
    assert recv.handle(body, headers_for(body, at=NOW - 999))[0] == 401
    assert recv.handle(body, {"webhook-id": "x"}, provider="openai")[0] == 404
    key = SECRET_TEXT.removeprefix("whsec_")
    shown = caplog.text + repr(recv) + repr(SECRET) + str(recv.stats)
    assert key not in shown and SECRET.key.hex() not in shown
    bad = "whsec_%%%" + key
    with pytest.raises(ValueError) as info:
        SigningSecret.parse(bad, "OPENAI_WEBHOOK_SECRET")
    assert key not in str(info.value)
    with pytest.raises(WebhookRejected) as rejected:
        recv.verify(body, headers_for(body, "wh_z", NOW + 999))
    assert key not in str(rejected.value)


# ---------------------------------------------------------------- the ASGI app


async def test_asgi_routes_mounted_in_fastapi() -> None:
    wakeups = Wakeups()
    recv = receiver(wakeups, gemini_secret=OTHER_TEXT, max_body_bytes=4096)
    app = FastAPI()
    app.mount("/hooks", recv)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        body = openai_event("batch_m")
        response = await client.post("/hooks/openai", content=body, headers=headers_for(body))
        assert (response.status_code, response.text) == (200, "ok\n")
        # Signed with the OpenAI secret but sent to the Gemini route: refused.
        response = await client.post("/hooks/gemini", content=body, headers=headers_for(body, "x"))
        assert response.status_code == 401
        # The mount root tries every configured secret.
        g_body = orjson.dumps({"type": "batch.succeeded", "data": {"id": "gem1"}})
        g_headers = signed_headers([SigningSecret.parse(OTHER_TEXT)], "msg_1", NOW, g_body)
        response = await client.post("/hooks/", content=g_body, headers=g_headers)
        assert response.status_code == 200
        assert (await client.get("/hooks/openai")).status_code == 405
        assert (await client.post("/hooks/elsewhere", content=b"{}")).status_code == 404
        big = b"{" + b" " * 5000 + b"}"
        assert (await client.post("/hooks/openai", content=big)).status_code == 413
    assert {"batch_m", "batches/gem1"} <= set(wakeups._early)


async def test_provider_endpoint_as_a_starlette_route() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    recv = receiver()
    app = Starlette(routes=[Route("/openai-hook", recv.app("openai"), methods=["POST"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        body = openai_event()
        response = await client.post("/openai-hook", content=body, headers=headers_for(body))
        assert response.status_code == 200
    with pytest.raises(ValueError):
        recv.app("anthropic")


# ---------------------------------------------------------------- the emulator's events


@contextlib.asynccontextmanager
async def capture(
    answers: list[int] | None = None,
) -> AsyncIterator[tuple[str, list[tuple[bytes, dict[str, str]]]]]:
    """A loopback server recording every POST; answers ``answers`` in turn, then 200."""
    got: list[tuple[bytes, dict[str, str]]] = []
    queue = list(answers or [])

    async def hook(request: web.Request) -> web.Response:
        got.append((await request.read(), {k.lower(): v for k, v in request.headers.items()}))
        return web.Response(status=queue.pop(0) if queue else 200)

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", got
    finally:
        await runner.cleanup()


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def submit(
    emu: ProviderEmulator, provider: str, out: Path, n: int = 4, segments: int = 1
) -> None:
    creds = credentials(emu)
    await pairbatch.submit_pairs_multi_batch(
        study_pairs(n),
        model=MODELS[provider],
        trait_name="Quality",
        trait_description="How good the writing is",
        backend=provider,
        output_dir=out,
        n_segments=segments,
        write_registry=True,
        api_key=creds["api_keys"][provider],
        base_url=creds["base_urls"][provider],
    )


async def test_openai_sdk_accepts_what_the_emulator_signs(tmp_path: Path) -> None:
    async with capture() as (url, got), ProviderEmulator(latency=0.2, webhook_url=url) as emu:
        await submit(emu, "openai", tmp_path / "o")
        await submit(emu, "gemini", tmp_path / "g")
        await until(lambda: len(got) == 2)
        secrets = {p: emu.webhook_secret(p) for p in ("openai", "gemini")}
        batches = {p: emu.batch_ids(p)[0] for p in ("openai", "gemini")}
    assert secrets["openai"] != secrets["gemini"]  # random, one per provider
    by_type = {orjson.loads(body)["type"]: (body, headers) for body, headers in got}
    body, headers = by_type["batch.completed"]
    client = openai.OpenAI(api_key="unused", webhook_secret=secrets["openai"])
    event = client.webhooks.unwrap(body, headers)
    assert event.type == "batch.completed" and event.object == "event"
    assert event.data.id == batches["openai"] and event.id.startswith("evt_")
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(body + b" ", headers)
    # Gemini's static webhooks use the same scheme: the OpenAI SDK's reading agrees too.
    body, headers = by_type["batch.succeeded"]
    client.webhooks.verify_signature(body, headers, secret=secrets["gemini"])
    assert orjson.loads(body)["data"]["id"] == f"batches/{batches['gemini']}"


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        (FaultConfig(batch_failed_rate=1.0), "batch.failed"),
        (FaultConfig(batch_expired_rate=1.0), "batch.expired"),
        (FaultConfig(batch_cancelled_rate=1.0), "batch.cancelled"),
    ],
)
async def test_event_type_follows_how_the_batch_ended(
    tmp_path: Path, faults: FaultConfig, expected: str
) -> None:
    async with (
        capture() as (url, got),
        ProviderEmulator(
            latency=0.3,
            webhook_url={"openai": url},
            webhook_secret=SECRET_TEXT,
            faults={"openai": faults},
        ) as emu,
    ):
        await submit(emu, "openai", tmp_path)
        await until(lambda: len(got) == 1)
    body, headers = got[0]
    assert orjson.loads(body)["type"] == expected
    event = WebhookReceiver(Wakeups(), openai_secret=SECRET_TEXT).verify(body, headers)
    assert (event.type, event.batch_id) == (expected, emu.batch_ids("openai")[0])


async def test_retries_on_non_2xx_keep_the_id_and_re_sign(tmp_path: Path) -> None:
    async with (
        capture([500, 503]) as (url, got),
        ProviderEmulator(
            latency=0.1,
            webhook_url=url,
            webhook_secret=SECRET_TEXT,
            webhook_retries=(0.05, 0.05, 0.05),
        ) as emu,
    ):
        await submit(emu, "openai", tmp_path)
        await until(lambda: bool(emu.webhook_deliveries) and emu.webhook_deliveries[0].delivered)
        delivery = emu.webhook_deliveries[0]
    assert delivery.attempts == 3 and delivery.status == 200
    assert len(got) == 3
    assert len({h["webhook-id"] for _, h in got}) == 1
    assert len({b for b, _ in got}) == 1
    for body, headers in got:
        verify_signature(body, headers, [SECRET])


async def test_gone_stops_retries_and_close_cancels_deliveries(tmp_path: Path) -> None:
    gone = ProviderEmulator(latency=0.1, webhook_retries=(0.01,))
    async with capture([410]) as (url, got), gone as emu:
        emu.set_webhook("openai", url)
        await submit(emu, "openai", tmp_path / "a")
        await until(
            lambda: bool(emu.webhook_deliveries) and emu.webhook_deliveries[0].status == 410
        )
        await asyncio.sleep(0.1)
    assert len(got) == 1
    # A receiver that keeps failing, and a long backoff: closing must not wait for it.
    async with capture([500] * 10) as (url, got):
        emu = ProviderEmulator(latency=0.1, webhook_url=url, webhook_retries=(30.0, 30.0))
        await emu.start()
        await submit(emu, "openai", tmp_path / "b")
        await until(lambda: len(got) == 1)
        started = time.monotonic()
        await emu.close()
        assert time.monotonic() - started < 1.0
    left = [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith("pairbatch-")]
    assert left == []


def test_emulator_webhook_options_are_checked() -> None:
    with pytest.raises(ValueError, match="loopback"):
        ProviderEmulator(webhook_url="http://example.com/hook")
    with pytest.raises(ValueError, match="anthropic"):
        ProviderEmulator(webhook_url={"anthropic": "http://127.0.0.1:9/hook"})
    with pytest.raises(ValueError):
        ProviderEmulator(webhook_url="ftp://127.0.0.1/hook")
    emu = ProviderEmulator(webhook_url="http://[::1]:9/hook", webhook_secret=SECRET_TEXT)
    assert emu.webhook_secret("gemini") == SECRET_TEXT
    assert SECRET_TEXT not in repr(emu._webhooks.targets)
    with pytest.raises(LookupError):
        ProviderEmulator().webhook_secret("openai")


async def test_injected_clock_fires_when_stepped(tmp_path: Path) -> None:
    now = [1000.0]
    stepped = ProviderEmulator(latency=50.0, clock=lambda: now[0])
    async with capture() as (url, got), stepped as emu:
        emu.set_webhook("openai", url, SECRET_TEXT)
        await submit(emu, "openai", tmp_path)
        await asyncio.sleep(0.3)
        assert got == []
        now[0] += 51.0
        await until(lambda: len(got) == 1, within=1.0)


# ---------------------------------------------------------------- end to end


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[int]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or task.done())
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


@pytest.mark.parametrize("provider", ["openai", "gemini"])
async def test_webhook_ends_a_60s_poll_at_once(tmp_path: Path, provider: str) -> None:
    wakeups = Wakeups()
    recv = WebhookReceiver(wakeups, openai_secret=SECRET_TEXT, gemini_secret=SECRET_TEXT)
    pairs_n, segments = 6, 2
    async with (
        serve(recv) as port,
        ProviderEmulator(
            latency=(1.0, 1.5),
            webhook_url=f"http://127.0.0.1:{port}/{provider}",
            webhook_secret=SECRET_TEXT,
        ) as emu,
    ):
        await submit(emu, provider, tmp_path, n=pairs_n, segments=segments)
        result = await asyncio.wait_for(
            pairbatch.resume_multi_batches(
                output_dir=tmp_path, interval_seconds=60, wakeups=wakeups, **credentials(emu)
            ),
            timeout=15,
        )
        finished = time.monotonic()
        last_end = max(d.ended_at for d in emu.webhook_deliveries)
    assert len(result.jobs) == segments and all(j.done for j in result.jobs)
    check_run(result, study_pairs(pairs_n))
    # The emulator's clock is time.monotonic: results were on disk soon after the last end.
    assert finished - last_end < 2.0
    assert recv.stats["accepted"] == segments
    assert all(d.delivered and d.attempts == 1 for d in emu.webhook_deliveries)


async def test_a_webhook_set_later_reports_batches_still_running(tmp_path: Path) -> None:
    async with capture() as (url, got), ProviderEmulator(latency=0.6) as emu:
        await submit(emu, "openai", tmp_path / "a")
        assert emu._webhooks._pending == {}  # no webhook configured: nothing is kept
        emu.set_webhook("openai", url, SECRET_TEXT)
        await until(lambda: len(got) == 1)
        assert orjson.loads(got[0][0])["data"]["id"] == emu.batch_ids("openai")[0]
        emu.set_webhook("openai", None)
        await submit(emu, "openai", tmp_path / "b")
        await asyncio.sleep(0.8)
        assert len(got) == 1


async def test_a_receiver_on_another_thread_hands_wakes_to_the_pollers_loop() -> None:
    wakeups = Wakeups()
    recv = receiver(wakeups, loop=asyncio.get_running_loop())
    body = openai_event("batch_t")
    sleeper = asyncio.create_task(wakeups.sleep("batch_t", 30))
    await asyncio.sleep(0.01)
    status = await asyncio.to_thread(recv.handle, body, headers_for(body))
    assert status == (200, "ok")
    assert await asyncio.wait_for(sleeper, 2) is True
    assert recv.stats["handed_over"] == 1


async def test_early_wakes_are_kept_only_for_a_while_and_bounded() -> None:
    from pairbatch.wakeups import Wakeups

    wakeups = Wakeups()
    wakeups.early_max = 3
    for k in range(5):
        wakeups.wake(f"b{k}")
    assert list(wakeups._early) == ["b2", "b3", "b4"]
    assert await wakeups.sleep("b4", 5.0) is True  # an early wake is used at once
    wakeups.early_seconds = 0.0
    wakeups.wake("late")
    assert await wakeups.sleep("late", 0.01) is False  # too old to count
