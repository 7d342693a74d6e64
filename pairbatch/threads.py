"""The worker threads of one run: a small pool of its own instead of the loop's default.

Every job's blocking work (part files, settles, registry appends) is a short trip to a
worker thread. Through the loop's default executor (``min(32, cores + 4)`` threads,
six on two cores) up to six threads at once want the GIL back from their syscalls and
the event loop waits behind them: a 999-job drain at 200 req/s per provider spent
1.4–1.6 s of kernel time and took 1.12–1.29x the ideal. Through two threads a run it
spent 1.0 s and took 1.06–1.15x (``benchmarks/bench_engine.py``; the measurements are in
the CHANGELOG). That drain is three runs at once, one per provider, so six threads in
all, as many as the default executor had: the gain is measured, its cause not pinned
down (one two-thread pool shared by the three runs measured the same, within the
noise). Two, not one: one thread can wait on an fsync while the other computes.

The pool is found through a context variable set in the context every job task is
created in (:func:`run_context`), so nothing global changes: the host application's
default executor is untouched, and code outside a run falls back to it, exactly as
:func:`asyncio.to_thread` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

RUN_THREADS = 2

_POOL: contextvars.ContextVar[ThreadPoolExecutor | None] = contextvars.ContextVar(
    "pairbatch_run_threads", default=None
)


async def to_thread(func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """:func:`asyncio.to_thread` on the current run's pool (the default executor
    outside a run); the caller's context goes with the call, as there."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, func, *args, **kwargs)
    return await loop.run_in_executor(_POOL.get(), call)


@contextlib.contextmanager
def run_context(threads: int = RUN_THREADS) -> Iterator[contextvars.Context]:
    """A context whose tasks (``asyncio.create_task(..., context=...)``) send their
    blocking work to a pool of ``threads`` threads, shut down on exit.

    On exit the pool takes no new work; a call still running (a cancelled run's
    settle) finishes in its thread, as it would have in the default executor.
    """
    pool = ThreadPoolExecutor(threads, thread_name_prefix="pairbatch-run")
    context = contextvars.copy_context()
    context.run(_POOL.set, pool)
    try:
        yield context
    finally:
        pool.shutdown(wait=False)
