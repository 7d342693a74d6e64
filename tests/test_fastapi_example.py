"""examples/fastapi_app.py served by a real uvicorn server in-process, against the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import uvicorn
from fastapi import FastAPI

from examples.fastapi_app import create_app
from pairbatch import JobStatus, read_registry
from pairbatch.testing import ProviderEmulator, expected_winner
from tests.engine_helpers import MODELS, study_pairs

TRAIT = {"trait_name": "Overall quality", "trait_description": "Which text is better overall?"}


def make_app(emu: ProviderEmulator, runs_dir: Path, **kwargs: Any) -> FastAPI:
    return create_app(
        runs_dir=runs_dir,
        api_keys={p: "test-key" for p in MODELS},
        base_urls={p: emu.base_url(p) for p in MODELS},
        **({"interval_seconds": 0.2, "rate_limits": {p: 50.0 for p in MODELS}} | kwargs),
    )


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app`` under uvicorn on a free loopback port; stop it (lifespan and all) on exit."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


def run_body(pairs: pl.DataFrame, backend: str, **extra: Any) -> dict[str, Any]:
    return {
        "pairs": pairs.select("ID1", "text1", "ID2", "text2").to_dicts(),
        "backend": backend,
        "model": MODELS[backend],
        **TRAIT,
        **({"n_segments": 2} | extra),
    }


async def wait_finished(
    client: httpx.AsyncClient, run_id: str, within: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        response = await client.get(f"/runs/{run_id}")
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if status["state"] != "running":
            return status
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.1)


def check_results(frame: pl.DataFrame, pairs: pl.DataFrame, backend: str) -> None:
    """Every pair exactly once, IDs as given, every winner the emulator judge's."""
    assert frame.height == pairs.height
    assert frame["custom_id"].n_unique() == pairs.height
    given = sorted(pairs.select("ID1", "ID2", "text1", "text2").iter_rows())
    got = sorted(frame.select("ID1", "ID2", "text1", "text2").iter_rows())
    assert got == given
    assert set(frame["backend"].to_list()) == {backend}
    for t1, t2, pos, id1, id2, better in frame.select(
        "text1", "text2", "winner_pos", "ID1", "ID2", "better_id"
    ).iter_rows():
        want = 1 if expected_winner(t1, t2) == "SAMPLE_1" else 2
        assert int(pos) == want
        assert better == (id1 if want == 1 else id2)


async def fetch_results(
    client: httpx.AsyncClient, run_id: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    response = await client.get(f"/runs/{run_id}/results")
    assert response.status_code == 200
    payload = response.json()
    assert payload["complete"] is True
    assert payload["n_results"] == len(payload["results"])
    as_json = pl.DataFrame(payload["results"], infer_schema_length=None)

    response = await client.get(f"/runs/{run_id}/results", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["x-run-complete"] == "true"
    as_csv = pl.read_csv(io.BytesIO(response.content), infer_schema=False)
    return as_json, as_csv


async def test_full_run(tmp_path: Path) -> None:
    pairs = study_pairs(16, seed=1)
    async with ProviderEmulator(latency=0.3) as emu, serve(make_app(emu, tmp_path)) as client:
        response = await client.post("/runs", json=run_body(pairs, "openai"))
        assert response.status_code == 201, response.text
        created = response.json()
        run_id = created["run_id"]
        assert response.headers["location"] == f"/runs/{run_id}"
        assert created["state"] == "running"
        assert created["n_jobs"] == 2 and created["n_pairs"] == pairs.height
        assert all(job["batch_id"] for job in created["jobs"])

        status = await wait_finished(client, run_id)
        assert status["state"] == "succeeded", status
        assert status["n_done"] == status["n_succeeded"] == 2
        assert status["errors"] == []
        assert [j["n_results"] for j in status["jobs"]] == [8, 8]
        assert all(j["done"] and j["status"] == "succeeded" for j in status["jobs"])
        assert status["n_events"] > 0

        as_json, as_csv = await fetch_results(client, run_id)
        check_results(as_json, pairs, "openai")
        check_results(as_csv, pairs, "openai")

        listed = (await client.get("/runs")).json()["runs"]
        assert listed == [{"run_id": run_id, "state": "succeeded", "backend": "openai"}]
    run_dir = tmp_path / run_id
    assert all(j.done and j.status is JobStatus.SUCCEEDED for j in read_registry(run_dir))
    assert (run_dir / "combined_results.csv").exists()


async def test_bad_requests(tmp_path: Path) -> None:
    pairs = study_pairs(4)
    async with ProviderEmulator(latency=0.3) as emu, serve(make_app(emu, tmp_path)) as client:
        both = run_body(pairs, "openai", batch_size=2)
        assert (await client.post("/runs", json=both)).status_code == 422
        unknown = run_body(pairs, "openai", options={"bogus_knob": 1})
        response = await client.post("/runs", json=unknown)
        assert response.status_code == 422 and "bogus_knob" in response.text
        clash = run_body(pairs, "openai", options={"output_dir": "/tmp/elsewhere"})
        assert (await client.post("/runs", json=clash)).status_code == 422
        empty_id = run_body(pairs.with_columns(ID1=pl.lit("")), "openai")
        response = await client.post("/runs", json=empty_id)
        assert response.status_code == 422 and "ID1" in response.text
        assert (await client.get("/runs/nope")).status_code == 404
        assert (await client.get("/runs/..%2F..%2Fetc")).status_code == 404
        assert (await client.get("/runs")).json() == {"runs": []}
    # Rejected requests leave nothing behind.
    assert list(tmp_path.iterdir()) == []


async def test_two_runs_on_two_providers(tmp_path: Path) -> None:
    first, second = study_pairs(12, seed=2), study_pairs(10, seed=3)
    async with (
        ProviderEmulator(latency=(0.3, 0.6)) as emu,
        serve(make_app(emu, tmp_path)) as client,
    ):
        responses = await asyncio.gather(
            client.post("/runs", json=run_body(first, "anthropic")),
            client.post("/runs", json=run_body(second, "gemini", batch_size=4, n_segments=None)),
        )
        assert [r.status_code for r in responses] == [201, 201]
        ids = [r.json()["run_id"] for r in responses]
        assert ids[0] != ids[1]
        statuses = await asyncio.gather(*(wait_finished(client, i) for i in ids))
        assert [s["state"] for s in statuses] == ["succeeded", "succeeded"]
        assert [s["n_jobs"] for s in statuses] == [2, 3]
        for run_id, pairs, backend in zip(
            ids, (first, second), ("anthropic", "gemini"), strict=True
        ):
            as_json, as_csv = await fetch_results(client, run_id)
            check_results(as_json, pairs, backend)
            check_results(as_csv, pairs, backend)
    assert {p.name for p in tmp_path.iterdir()} == set(ids)


def _pollers() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith(("pairbatch-segment-", "resume-", "submit-")) and not t.done()
    ]


async def test_shutdown_mid_run_then_restart_finishes(tmp_path: Path) -> None:
    pairs = study_pairs(10, seed=4)
    async with ProviderEmulator(latency=3.0) as emu:
        async with serve(make_app(emu, tmp_path)) as client:
            response = await client.post("/runs", json=run_body(pairs, "openai"))
            assert response.status_code == 201, response.text
            run_id = response.json()["run_id"]
            # Wait until the background resume is polling.
            deadline = time.monotonic() + 5
            while True:
                status = (await client.get(f"/runs/{run_id}")).json()
                if status["n_events"] >= 2:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert status["state"] == "running" and status["n_done"] == 0
            stopping = time.monotonic()
        # The lifespan cancelled the resume and waited for it; nothing is left running.
        assert time.monotonic() - stopping < 2.5
        assert _pollers() == []

        run_dir = tmp_path / run_id
        jobs = read_registry(run_dir)
        assert len(jobs) == 2
        assert all(j.batch_id and not j.done for j in jobs)
        # Compacted on close: one journal line per job.
        assert (run_dir / "jobs_registry.journal").read_bytes().count(b"\n") == 2
        n_batches = len(emu.batch_ids("openai"))

        # A fresh app on the same folder resumes the run at startup and finishes it.
        async with serve(make_app(emu, tmp_path)) as client:
            status = (await client.get(f"/runs/{run_id}")).json()
            assert status["state"] == "running"
            status = await wait_finished(client, run_id)
            assert status["state"] == "succeeded", status
            as_json, as_csv = await fetch_results(client, run_id)
            check_results(as_json, pairs, "openai")
            check_results(as_csv, pairs, "openai")
        assert len(emu.batch_ids("openai")) == n_batches  # nothing was paid for twice
    assert all(j.done for j in read_registry(tmp_path / run_id))


async def test_two_apps_share_nothing(tmp_path: Path) -> None:
    pairs = study_pairs(6, seed=5)
    async with ProviderEmulator(latency=0.3) as emu:
        app_a, app_b = make_app(emu, tmp_path / "a"), make_app(emu, tmp_path / "b")
        async with serve(app_a) as a, serve(app_b) as b:
            assert app_a.state.runs is not app_b.state.runs
            assert app_a.state.runs.transport is not app_b.state.runs.transport
            run_id = (await a.post("/runs", json=run_body(pairs, "openai"))).json()["run_id"]
            assert (await b.get(f"/runs/{run_id}")).status_code == 404
            assert (await wait_finished(a, run_id))["state"] == "succeeded"
            assert (await b.get("/runs")).json() == {"runs": []}


WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtZmFzdGFwaS1leGFtcGxlLXRlc3Q="


async def test_webhooks_wake_the_background_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polls every 60 s, yet a run finishes about when its batches do: the emulator's
    signed events reach /webhooks and wake the resume's pollers."""
    for name in ("OPENAI_WEBHOOK_SECRET", "GEMINI_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    pairs = study_pairs(8, seed=6)
    secrets = {"openai": WEBHOOK_SECRET, "gemini": WEBHOOK_SECRET}
    async with ProviderEmulator(latency=1.0) as emu:
        app = make_app(emu, tmp_path, interval_seconds=60.0, webhook_secrets=secrets)
        async with serve(app) as client:
            for provider in ("openai", "gemini"):
                url = str(client.base_url.join(f"/webhooks/{provider}"))
                emu.set_webhook(provider, url, WEBHOOK_SECRET)
            started = time.monotonic()
            responses = await asyncio.gather(
                client.post("/runs", json=run_body(pairs, "openai")),
                client.post("/runs", json=run_body(pairs, "gemini")),
            )
            assert [r.status_code for r in responses] == [201, 201]
            ids = [r.json()["run_id"] for r in responses]
            statuses = await asyncio.gather(*(wait_finished(client, i, within=10) for i in ids))
            elapsed = time.monotonic() - started
            assert [s["state"] for s in statuses] == ["succeeded", "succeeded"]
            # 1 s batches and a 60 s interval: only the webhooks can explain this.
            assert elapsed < 5.0
            receiver = app.state.webhooks
            assert receiver.stats["accepted"] == 4 and receiver.stats["woken"] >= 1
            assert all(d.delivered for d in emu.webhook_deliveries)
            # Anything unsigned is refused, and the secret is nowhere in the answer.
            response = await client.post("/webhooks/openai", content=b"{}")
            assert response.status_code == 400 and "whsec" not in response.text
            forged = {"webhook-id": "wh_x", "webhook-timestamp": str(int(time.time()))}
            forged["webhook-signature"] = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
            response = await client.post("/webhooks/openai", content=b"{}", headers=forged)
            assert response.status_code == 401
            for run_id, backend in zip(ids, ("openai", "gemini"), strict=True):
                as_json, _ = await fetch_results(client, run_id)
                check_results(as_json, pairs, backend)


async def test_no_secret_no_webhook_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_WEBHOOK_SECRET", "GEMINI_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    async with ProviderEmulator(latency=0.3) as emu:
        app = make_app(emu, tmp_path)
        assert app.state.webhooks is None
        async with serve(app) as client:
            assert (await client.post("/webhooks/openai", content=b"{}")).status_code == 404
        monkeypatch.setenv("GEMINI_WEBHOOK_SECRET", WEBHOOK_SECRET)
        app = make_app(emu, tmp_path)
        assert app.state.webhooks.providers == ("gemini",)
        # One Wakeups per app, shared by the receiver and the resumes.
        assert app.state.webhooks.wakeups is app.state.wakeups
