"""Blocking wrappers for scripts and notebooks.

``pairbatch.sync.resume_multi_batches(...)`` takes the same arguments as the async
function. Outside an event loop it uses ``asyncio.run``. Inside one (Jupyter, IPython),
where ``asyncio.run`` is not allowed, it runs the coroutine on a fresh loop in a worker
thread and blocks until it is done; in a notebook, ``await pairbatch.resume_multi_batches(...)``
in a cell is the better way and keeps the kernel responsive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

from pairbatch import adaptive as _adaptive
from pairbatch import resume as _resume
from pairbatch import submit as _submit

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, loop or no loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pairbatch-sync") as pool:
        return pool.submit(asyncio.run, coro).result()


def submit_pairs_multi_batch(*args: Any, **kwargs: Any) -> _submit.SubmitResult:
    """Blocking :func:`pairbatch.submit_pairs_multi_batch`."""
    return run(_submit.submit_pairs_multi_batch(*args, **kwargs))


def resume_multi_batches(*args: Any, **kwargs: Any) -> _resume.ResumeResult:
    """Blocking :func:`pairbatch.resume_multi_batches`."""
    return run(_resume.resume_multi_batches(*args, **kwargs))


def run_adaptive(*args: Any, **kwargs: Any) -> _adaptive.AdaptiveResult:
    """Blocking :func:`pairbatch.adaptive.run_adaptive`."""
    return run(_adaptive.run_adaptive(*args, **kwargs))


__all__ = ["resume_multi_batches", "run", "run_adaptive", "submit_pairs_multi_batch"]
