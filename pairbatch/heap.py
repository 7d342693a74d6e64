"""Keeping the garbage collector's full passes off a big run's event loop.

A run of 100,000 jobs keeps about a million objects alive (each job's task, its
coroutines, its record), and each of CPython's full collections walks all of them:
pauses of 50-200 ms on the event loop, measured (``benchmarks/bench_startup.py``), where
the goal is 20 ms. While a big run is driven, what is alive is moved out of the
collector's reach now and then (``gc.freeze``: nothing is freed or changed, the objects
are only no longer scanned; refcounting frees them as usual), and given back when the
last such run ends. The collector is one per process, so this is counted across
concurrent runs, in threads too.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Iterator

import attrs

# Below this many jobs a full pass costs a few ms: nothing is worth changing.
FREEZE_FROM_JOBS = 2_000
_lock = threading.Lock()
_holders = [0]  # runs holding the heap frozen in this process


@attrs.define
class FrozenHeap:
    """Freezes what is alive at most every ``every_s`` seconds while held."""

    every_s: float = 0.25
    _last: float = attrs.field(default=-1e9, init=False)

    def refreeze(self) -> None:
        """Move what became alive since the last call out of the collector's reach."""
        now = time.monotonic()
        if now - self._last >= self.every_s:
            gc.freeze()
            self._last = now


@contextlib.contextmanager
def frozen_heap(n_jobs: int) -> Iterator[FrozenHeap | None]:
    """Hold the heap frozen for a run of ``n_jobs`` (``None`` for a small run)."""
    if n_jobs < FREEZE_FROM_JOBS:
        yield None
        return
    with _lock:
        _holders[0] += 1
    heap = FrozenHeap()
    heap.refreeze()
    try:
        yield heap
    finally:
        with _lock:
            _holders[0] -= 1
            if _holders[0] == 0:
                gc.unfreeze()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No collections while a burst of objects that all stay alive is built (reading a
    100,000-job registry: the jobs, their file records, the merge's tuples). Each full
    pass would walk everything built so far, for nothing: it made the read ~3x slower.

    Threads may overlap: each only turns the collector back on if it found it on, so
    it is never left off; another thread's pause may end early (a slower read, no more).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
