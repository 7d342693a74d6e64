"""Fan-out: drive every pending job of a run concurrently and yield each outcome as it
lands.

Done jobs are answered from disk first; the pending ones' tasks are started a slice at a
time (so the first polls go out while the rest are still being scheduled, and the loop
never stalls) and report through a queue as they finish. On the way out, whatever way it
is, the pollers stop before their connections and the registry is folded last.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence

from pairbatch.drive import JobDriver
from pairbatch.heap import FrozenHeap, frozen_heap
from pairbatch.models import Job
from pairbatch.outcomes import JobOutcome, load_outcome
from pairbatch.session import Session
from pairbatch.threads import run_context, to_thread

log = logging.getLogger("pairbatch.resume")

TAG = "[resume_multi_batches]"


async def drive_all(
    run: JobDriver, session: Session, deadline_s: float | None, redownload: Iterable[int] | bool
) -> AsyncGenerator[JobOutcome, None]:
    """Yield done jobs from disk, then drive the rest concurrently (under the lock).

    The pending jobs' tasks are started a slice at a time by a starter task, so the
    first polls go out while the rest are still being scheduled, and finished tasks
    report through a queue (``asyncio.wait`` over every task costs O(jobs) per wake-up,
    which made a polling round's per-job cost grow with the run).
    """
    wanted = redownload if isinstance(redownload, bool) else frozenset(redownload)
    tasks: list[asyncio.Task[JobOutcome]] = []
    starter: asyncio.Task[None] | None = None
    entered = False
    held = contextlib.ExitStack()
    try:
        pending_jobs = [job for job in run.jobs.values() if not job.done]
        heap = held.enter_context(frozen_heap(len(pending_jobs)))
        for job in [j for j in run.jobs.values() if j.done]:
            asked = wanted is True or (not isinstance(wanted, bool) and job.segment_index in wanted)
            outcome = None if asked and job.batch_id else await to_thread(load_outcome, job)
            if outcome is None or (outcome.error and wanted is True):
                # Fetched again from the provider: the results are re-derived, not guessed.
                pending_jobs.append(await run.record(job.transition(done=False)))
                continue
            yield outcome
        if not pending_jobs:
            return
        # The job tasks' blocking work goes to the run's own threads (pairbatch.threads).
        context = held.enter_context(run_context())
        await session.__aenter__()
        entered = True
        loop = asyncio.get_running_loop()
        deadline = None if deadline_s is None else loop.time() + deadline_s
        finished: asyncio.Queue[asyncio.Task[JobOutcome]] = asyncio.Queue()
        ordered = sorted(pending_jobs, key=lambda j: j.segment_index)
        starter = asyncio.create_task(
            start_jobs(run, ordered, tasks, finished.put_nowait, heap, context),
            name="pairbatch-start",
        )
        left = len(ordered)
        while left:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                log.warning("%s timeout reached; %d job(s) unfinished", TAG, left)
                break
            try:
                first = await asyncio.wait_for(finished.get(), timeout=remaining)
            except TimeoutError:
                continue
            batch = [first]
            while not finished.empty():
                batch.append(finished.get_nowait())
            for task in sorted(batch, key=lambda t: t.get_name()):
                outcome = task.result()
                left -= 1
                run.progress()
                yield outcome
    finally:
        # Stop the pollers before the connections they use, and fold the registry
        # last; shielded so a second cancellation cannot leave it half-closed.
        if starter is not None:
            starter.cancel()
            await asyncio.gather(starter, return_exceptions=True)
        # Only the unfinished ones: gathering 100,000 finished tasks held the loop ~0.3 s.
        live = [task for task in tasks if not task.done()]
        for task in live:
            task.cancel()
        if live:
            await asyncio.gather(*live, return_exceptions=True)
        if entered:
            await session.__aexit__(None, None, None)
        await asyncio.shield(run.registry.close())
        held.close()


# How long one slice of task starts may hold the loop. A task's first step (up to its
# first request) costs ~0.2 ms, so starting 30,000 at once held the loop 5.9 s; slices of
# ~5 ms keep every pause far under the 20 ms goal and lose nothing measurable in total.
START_SLICE_S = 0.005


async def start_jobs(
    run: JobDriver,
    jobs: Sequence[Job],
    tasks: list[asyncio.Task[JobOutcome]],
    on_done: Callable[[asyncio.Task[JobOutcome]], object],
    heap: FrozenHeap | None = None,
    context: contextvars.Context | None = None,
) -> None:
    """Create the jobs' tasks in slices sized so that each slice's first steps fit
    :data:`START_SLICE_S`, yielding to the loop between slices (and keeping the tasks
    made so far out of the collector's full passes, see :mod:`pairbatch.heap`), in
    ``context`` when given (the run's threads, :func:`pairbatch.threads.run_context`)."""
    clock = time.perf_counter
    size, index = 8, 0
    while index < len(jobs):
        began = clock()
        for job in jobs[index : index + size]:
            name = f"pairbatch-segment-{job.segment_index}"
            task = asyncio.create_task(run.drive(job), name=name, context=context)
            task.add_done_callback(on_done)
            tasks.append(task)
        index += size
        # The new tasks' first steps run in the loop's next iteration, before this one
        # resumes: the time until then is what the slice cost.
        await asyncio.sleep(0)
        spent = max(clock() - began, 1e-6)
        size = max(1, min(4096, int(size * START_SLICE_S / spent)))
        if heap is not None:
            heap.refreeze()
    if heap is not None:
        heap.every_s = 0.0
        heap.refreeze()
