"""How fast the client sends through 429s: a storm that ends, and a steady random share.

A small aiohttp server on loopback answers 200, or 429 (during a storm window, or at
random with probability ``share``); client tasks poll through one :class:`Transport`
configured at ``rate`` requests/second. Used by ``tests/test_limiter.py`` (short, loose)
and ``benchmarks/bench_429.py`` (long, printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import attrs
from aiohttp import web
from aiohttp.test_utils import TestServer

from pairbatch.errors import ProviderError
from pairbatch.retry import RetryPolicy
from pairbatch.transport import Transport


@attrs.define
class Load:
    """What the server saw: when each answer went out, and whether it was a 429."""

    times: list[float] = attrs.field(factory=list)
    refused: list[bool] = attrs.field(factory=list)

    def rate(self, start: float, end: float, *, admitted_only: bool = False) -> float:
        n = sum(
            1
            for t, r in zip(self.times, self.refused, strict=True)
            if start <= t < end and not (admitted_only and r)
        )
        return n / (end - start)


async def drive(
    *,
    rate: float,
    seconds: float,
    storm: tuple[float, float] | None = None,
    share: float = 0.0,
    workers: int = 16,
    seed: int = 1,
) -> Load:
    """Send for ``seconds``; 429 inside the ``storm`` window (start, end seconds), and
    a ``share`` of the other answers at random."""
    rng = random.Random(seed)
    load = Load()
    t0 = time.monotonic()

    async def handler(_: web.Request) -> web.Response:
        now = time.monotonic() - t0
        refused = bool(storm and storm[0] <= now < storm[1]) or rng.random() < share
        load.times.append(now)
        load.refused.append(refused)
        if refused:
            return web.json_response({"error": {"message": "slow down"}}, status=429)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    url = str(server.make_url("/poll"))
    policy = RetryPolicy(max_tries=3, base_delay=0.05, max_delay=0.2)
    try:
        async with Transport(rate_limits={"p": rate}, max_concurrency=workers) as transport:

            async def worker() -> None:
                while time.monotonic() - t0 < seconds:
                    with contextlib.suppress(ProviderError):
                        await transport.request("p", "GET", url, headers={}, retry=policy)

            await asyncio.gather(*(worker() for _ in range(workers)))
    finally:
        await server.close()
    return load


def recovery_seconds(load: Load, storm_end: float, target: float, window: float = 0.5) -> float:
    """Seconds from the storm's end until the send rate over ``window`` reaches
    ``target`` requests/second (inf if it never does)."""
    t = storm_end
    last = max(load.times, default=storm_end)
    while t + window <= last:
        if load.rate(t, t + window) >= target:
            return t - storm_end
        t += 0.05
    return float("inf")
