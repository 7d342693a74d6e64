"""Start-up of a big resume: the first polls, the event loop's worst pause, a round's cost.

Run by hand:  .venv/bin/python benchmarks/bench_startup.py [--jobs 1000 10000 100000]

``pairbatch.fanout.drive_all`` drives stand-in jobs whose ``drive`` costs what a real
job's first step costs (``--step-ms`` of CPU, then its status request) and then waits
for the answer; a heartbeat task records the longest the loop went without running it.
Baseline, measured in the same run: the previous scheduler (every task created at once,
then ``asyncio.wait(FIRST_COMPLETED)`` over all of them). Printed per size: time to the
first request, time until every job has sent its first request (per job), and the worst
event-loop pause.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

import attrs

from pairbatch.fanout import drive_all


@attrs.define
class FakeJob:
    segment_index: int
    done: bool = False
    batch_id: str = "b"


@attrs.define
class Stats:
    start: float = 0.0
    sends: list[float] = attrs.field(factory=list)


class FakeRegistry:
    async def close(self) -> None:
        return None


class FakeSession:
    async def __aenter__(self) -> FakeSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


@attrs.define
class FakeRun:
    jobs: dict[int, FakeJob]
    step_s: float
    answer_s: float
    stats: Stats
    registry: FakeRegistry = attrs.field(factory=FakeRegistry)

    async def drive(self, job: FakeJob) -> FakeJob:
        end = time.perf_counter() + self.step_s
        while time.perf_counter() < end:  # the CPU of building and sending a request
            pass
        self.stats.sends.append(time.perf_counter())
        await asyncio.sleep(self.answer_s)
        return job

    def progress(self) -> None:
        return None


async def old_drive_all(run: FakeRun) -> AsyncGenerator[Any, None]:
    tasks = [asyncio.create_task(run.drive(j)) for j in run.jobs.values()]
    waiting = set(tasks)
    while waiting:
        finished, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in finished:
            yield task.result()


async def heartbeat(worst: list[float]) -> None:
    last = time.perf_counter()
    while True:
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        worst[0] = max(worst[0], now - last - 0.001)
        last = now


async def measure(n: int, new: bool, step_s: float, answer_s: float) -> tuple[float, float, float]:
    stats = Stats()
    run = FakeRun({k: FakeJob(k) for k in range(n)}, step_s, answer_s, stats)
    worst = [0.0]
    beat = asyncio.create_task(heartbeat(worst))
    await asyncio.sleep(0.01)
    worst[0] = 0.0
    stats.start = time.perf_counter()
    gen = drive_all(run, FakeSession(), None, False) if new else old_drive_all(run)  # type: ignore[arg-type]
    count = 0
    async for _ in gen:
        count += 1
    beat.cancel()
    assert count == n
    first = min(stats.sends) - stats.start
    every = max(stats.sends) - stats.start
    return first, every / n, worst[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--step-ms", type=float, default=0.2)
    parser.add_argument("--answer-s", type=float, default=0.5)
    args = parser.parse_args()
    step = args.step_ms / 1e3
    print(f"first step {args.step_ms} ms of CPU a job, answers after {args.answer_s} s")
    print(f"{'jobs':>8} {'scheduler':<9} {'first send':>11} {'round/job':>11} {'worst pause':>12}")
    for n in args.jobs:
        for new in (False, True):
            first, per_job, worst = asyncio.run(measure(n, new, step, args.answer_s))
            name = "new" if new else "baseline"
            print(
                f"{n:>8,} {name:<9} {first * 1e3:>9.1f}ms {per_job * 1e6:>9.1f}us "
                f"{worst * 1e3:>10.1f}ms"
            )


if __name__ == "__main__":
    main()
