"""Streaming a 1 GB results file: memory stays flat.

Run by hand:  .venv/bin/python benchmarks/bench_download.py [--gb 1.0]

The emulator generates the file on the fly (never in memory) and pairbatch's
``Transport.download`` streams it to disk. Printed, measured in this run: throughput and
the process's peak RSS growth during the download (target: under 64 MB), against a
baseline that reads a body whole with ``resp.read()`` (a quarter of the size, to keep the
machine safe), the way the reference handles downloads.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

from pairbatch.testing import ProviderEmulator
from pairbatch.transport import Transport


class PeakRss:
    """Samples this process's RSS every 5 ms in a background task."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss)
            await asyncio.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 1e6


async def main(gb: float) -> None:
    size = int(gb * 1e9)
    async with ProviderEmulator() as emu, Transport() as transport:
        big = emu.add_synthetic_batch("openai", output_bytes=size)
        small = emu.add_synthetic_batch("openai", output_bytes=size // 4)
        headers = {"Authorization": "Bearer k"}
        with tempfile.TemporaryDirectory() as tmp:
            url = f"{emu.base_url('openai')}/files/{big.result_ref}/content"
            with PeakRss() as rss:
                start = time.perf_counter()
                written = await transport.download("openai", url, Path(tmp) / "out.jsonl", headers=headers)
                elapsed = time.perf_counter() - start
            assert written == big.size_bytes
            print(f"pairbatch streamed download: {written / 1e9:.2f} GB in {elapsed:.1f} s "
                  f"({written / 1e6 / elapsed:.0f} MB/s), peak RSS growth {rss.growth_mb:.1f} MB")
            (Path(tmp) / "out.jsonl").unlink()

            url = f"{emu.base_url('openai')}/files/{small.result_ref}/content"
            async with aiohttp.ClientSession() as session:
                with PeakRss() as base_rss:
                    start = time.perf_counter()
                    async with session.get(url, headers=headers) as resp:
                        body = await resp.read()
                    (Path(tmp) / "whole.jsonl").write_bytes(body)
                    whole = time.perf_counter() - start
                    n = len(body)
                    del body
            print(f"baseline resp.read() of {n / 1e9:.2f} GB: {whole:.1f} s, "
                  f"peak RSS growth {base_rss.growth_mb:.1f} MB "
                  f"({base_rss.growth_mb / max(rss.growth_mb, 0.1):.0f}x pairbatch's, "
                  f"for a quarter of the bytes)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0)
    asyncio.run(main(parser.parse_args().gb))
