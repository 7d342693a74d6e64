"""The run's own worker threads (pairbatch.threads): used inside a run, nowhere else."""

from __future__ import annotations

import asyncio
import threading

from pairbatch.threads import RUN_THREADS, run_context, to_thread


def _name() -> str:
    return threading.current_thread().name


def test_tasks_in_the_run_context_use_the_run_pool_and_others_the_default() -> None:
    async def main() -> tuple[set[str], str, str]:
        with run_context() as context:

            async def job() -> str:
                return await to_thread(_name)

            tasks = [asyncio.create_task(job(), context=context) for _ in range(20)]
            inside = set(await asyncio.gather(*tasks))
            outside = await to_thread(_name)  # this task was not made in the run context
        after = await to_thread(_name)
        return inside, outside, after

    inside, outside, after = asyncio.run(main())
    assert inside and all(name.startswith("pairbatch-run") for name in inside)
    assert len(inside) <= RUN_THREADS
    assert not outside.startswith("pairbatch-run")
    assert not after.startswith("pairbatch-run")


def test_arguments_results_and_errors_pass_through() -> None:
    def add(a: int, b: int = 0) -> int:
        if a < 0:
            raise ValueError("negative")
        return a + b

    async def main() -> None:
        with run_context() as context:
            assert await asyncio.create_task(to_thread(add, 2, b=3), context=context) == 5
            task = asyncio.create_task(to_thread(add, -1), context=context)
            try:
                await task
            except ValueError as exc:
                assert str(exc) == "negative"
            else:
                raise AssertionError("the error was lost")

    asyncio.run(main())
