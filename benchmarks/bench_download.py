"""Streaming a 1 GB results file with ``Transport.download``: memory stays flat.

Run by hand (not in CI):  .venv/bin/python benchmarks/bench_download.py [--gb 1.0]

A tiny aiohttp server in a child process generates the body in 1 MiB chunks (never
held in memory), so the figures below are the client's alone. Measured in this run:

1. ``Transport.download`` of the full body: throughput, peak RSS growth of this
   process (sampled every 5 ms; target < 64 MB) and the worst event-loop stall seen
   by a 10 ms ticker (file writes happen in a worker thread and must not block it).
2. Baseline, same size: a raw aiohttp ``iter_chunked`` loop writing synchronously on
   the event loop, then fsync (the same durability) — the fastest naive code, which
   blocks the loop for every write; it shows what the thread hand-off costs.
3. Baseline, a quarter of the size: ``await resp.read()`` then one write — what a
   non-streaming client does — to show the memory contrast.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
import psutil
from aiohttp import web

from pairbatch.transport import Transport

BLOCK = (b'{"custom_id": "pair-000001", "response": {"status_code": 200}}\n' * 20_000)[: 1 << 20]


async def _body(request: web.Request) -> web.StreamResponse:
    size = int(request.match_info["size"])
    resp = web.StreamResponse()
    resp.content_length = size
    resp.content_type = "application/jsonl"
    await resp.prepare(request)
    left = size
    while left > 0:
        await resp.write(BLOCK[: min(left, len(BLOCK))])
        left -= len(BLOCK)
    return resp


def _serve(conn: Connection) -> None:
    async def main() -> None:
        app = web.Application()
        app.router.add_get("/bytes/{size}", _body)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        conn.send(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


class Probe:
    """Peak RSS growth (5 ms samples) and the worst event-loop stall (10 ms ticker)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self.max_lag = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    async def _rss(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss)
            await asyncio.sleep(0.005)

    async def _lag(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            self.max_lag = max(self.max_lag, time.perf_counter() - start - 0.01)

    async def __aenter__(self) -> Probe:
        self._tasks = [asyncio.create_task(self._rss()), asyncio.create_task(self._lag())]
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 1e6


def _report(name: str, size: int, seconds: float, probe: Probe) -> float:
    rate = size / 1e6 / seconds
    print(
        f"{name:<44} {size / 1e9:5.2f} GB {seconds:6.2f} s {rate:7.0f} MB/s  "
        f"peak RSS +{probe.growth_mb:7.1f} MB  worst loop stall {probe.max_lag * 1000:6.1f} ms"
    )
    return rate


async def bench(base: str, gb: float, tmp: Path) -> None:
    size = int(gb * 1e9)
    out = tmp / "out.jsonl"

    async with Transport(default_rate=100.0) as transport, Probe() as probe:
        start = time.perf_counter()
        written = await transport.download("bench", f"{base}/bytes/{size}", out, headers={})
        seconds = time.perf_counter() - start
    assert written == size == out.stat().st_size
    ours = _report("pairbatch Transport.download", size, seconds, probe)
    ours_mb = probe.growth_mb
    out.unlink()

    async with aiohttp.ClientSession() as session, Probe() as probe:
        start = time.perf_counter()
        async with session.get(f"{base}/bytes/{size}") as resp:
            with out.open("wb") as handle:
                async for chunk in resp.content.iter_chunked(1 << 20):
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())  # the same durability as download()
        seconds = time.perf_counter() - start
    raw = _report("baseline: raw iter_chunked, sync write+fsync", size, seconds, probe)
    out.unlink()

    quarter = size // 4
    async with aiohttp.ClientSession() as session, Probe() as probe:
        start = time.perf_counter()
        async with session.get(f"{base}/bytes/{quarter}") as resp:
            body = await resp.read()
        out.write_bytes(body)
        del body
        seconds = time.perf_counter() - start
    _report("baseline: resp.read() whole body (1/4 size)", quarter, seconds, probe)
    read_mb = probe.growth_mb

    print()
    print(f"throughput vs raw loop: {ours / raw:.2f}x")
    print(
        f"memory: download grew RSS {ours_mb:.1f} MB for {size / 1e9:.2f} GB "
        f"(target < 64 MB: {'OK' if ours_mb < 64 else 'MISSED'}); resp.read() grew "
        f"{read_mb:.0f} MB for a quarter of that ({read_mb / max(ours_mb, 0.1):.0f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the big body in GB")
    args = parser.parse_args()
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(child,), daemon=True)
    server.start()
    try:
        port = parent.recv()
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(bench(f"http://127.0.0.1:{port}", args.gb, Path(tmp)))
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    main()
