"""From a batch ending on the provider to its results on disk: polling vs webhooks.

Run by hand:  .venv/bin/python benchmarks/bench_webhooks.py [--interval 60] [--batches 4]

Each mode submits the same batches (same seed, so the same latencies, spread over the
first part of the poll interval) to an emulator that posts signed webhooks to a
receiver served by uvicorn on loopback, then drains them with ``iter_completed`` at the
poll interval given (default 60 s, pairbatch's default; a batch still validating at a
poll is next polled after 1.5x that, as the engine does). In "poll" mode the receiver
wakes a ``Wakeups`` nobody sleeps on, so the load is the same and only polling finds
the end; in "webhook" mode the resumer shares the receiver's ``Wakeups``. Printed per
mode: the delay from each batch's end (the emulator's clock is ``time.monotonic``) to the
moment ``iter_completed`` yields its outcome, i.e. its results are on disk (and, for
webhooks, the part of it until the receiver answered the event).
The polling mode takes about 1.5 intervals of wall time; use ``--interval 10`` for a
quick look (and say so when quoting it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import polars as pl
import uvicorn

import pairbatch
from pairbatch.testing import ProviderEmulator
from pairbatch.wakeups import Wakeups
from pairbatch.webhooks import SigningSecret, WebhookReceiver

MODELS = {"openai": "gpt-4.1-mini", "gemini": "gemini-2.5-flash"}


@contextlib.asynccontextmanager
async def serve(app: WebhookReceiver) -> AsyncIterator[int]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await task


def pairs(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ID1": [f"a{i}" for i in range(n)],
            "text1": ["short" if i % 2 else "a longer text" for i in range(n)],
            "ID2": [f"b{i}" for i in range(n)],
            "text2": ["medium text"] * n,
        }
    )


async def one_mode(
    mode: str, provider: str, interval: float, n_batches: int, root: Path
) -> tuple[list[float], list[float], float]:
    _, secret = SigningSecret.generate()
    shared = Wakeups()
    receiver = WebhookReceiver(shared, openai_secret=secret, gemini_secret=secret)
    resumer_wakeups = shared if mode == "webhook" else Wakeups()
    # Ends spread over the first 80% of an interval: polling's delay then depends on
    # where in its cycle each end falls, as it would for real batches.
    latency = (2.0, max(2.5, 0.8 * interval))
    async with serve(receiver) as port:
        url = f"http://127.0.0.1:{port}/{provider}"
        emulator = ProviderEmulator(latency=latency, seed=7, webhook_url=url, webhook_secret=secret)
        async with emulator as emu:
            out = root / mode
            await pairbatch.submit_pairs_multi_batch(
                pairs(4 * n_batches),
                model=MODELS[provider],
                trait_name="T",
                trait_description="D",
                backend=provider,
                n_segments=n_batches,
                output_dir=out,
                write_registry=True,
                api_key="bench-key",
                base_url=emu.base_url(provider),
            )
            started = time.monotonic()
            on_disk: dict[str, float] = {}
            gen = pairbatch.iter_completed(
                output_dir=out,
                interval_seconds=interval,
                api_keys={provider: "bench-key"},
                base_urls={provider: emu.base_url(provider)},
                wakeups=resumer_wakeups,
            )
            async with contextlib.aclosing(gen):
                async for outcome in gen:
                    assert outcome.error is None, outcome.error
                    assert outcome.job.batch_id is not None
                    on_disk[outcome.job.batch_id] = time.monotonic()
            wall = time.monotonic() - started
            deliveries = {d.batch_id: d for d in emu.webhook_deliveries}
    key = (lambda b: b.removeprefix("batches/")) if provider == "gemini" else (lambda b: b)
    delays = [at - deliveries[key(batch_id)].ended_at for batch_id, at in on_disk.items()]
    hooked = [d.sent_at - d.ended_at for d in deliveries.values() if d.sent_at is not None]
    return delays, hooked, wall


def describe(delays: list[float]) -> str:
    return (
        f"mean {statistics.mean(delays):7.3f} s  median {statistics.median(delays):7.3f} s  "
        f"max {max(delays):7.3f} s"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=60.0, help="poll interval, seconds")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--provider", choices=sorted(MODELS), default="openai")
    args = parser.parse_args()
    print(
        f"{args.batches} {args.provider} batches, poll interval {args.interval:g} s; "
        "delay from batch end to results on disk:"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("webhook", "poll"):
            delays, hooked, wall = await one_mode(
                mode, args.provider, args.interval, args.batches, Path(tmp)
            )
            print(f"  {mode:8s} {describe(delays)}   (drain took {wall:6.1f} s)", flush=True)
            if mode == "webhook":
                print(f"    of which end -> webhook answered: {describe(hooked)}", flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
