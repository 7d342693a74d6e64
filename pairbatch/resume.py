"""Resume: poll every unfinished job concurrently, download and parse as each one finishes.

This module is the entry point: it checks the arguments, takes the run folder's lock,
opens its registry and drives every unfinished job concurrently (:mod:`pairbatch.fanout`,
each job's life in :mod:`pairbatch.drive`), yielding outcomes as they come; finished
batches are settled in worker threads (:mod:`pairbatch.settle`) while the others keep
polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import polars as pl

from pairbatch._fs import check_target
from pairbatch.budgets import Prices, actual_tokens
from pairbatch.drive import JobDriver, ResumeOptions
from pairbatch.errors import (
    InputError,
)
from pairbatch.events import Emitter, EventHandler, verbose_logging
from pairbatch.fanout import TAG, drive_all
from pairbatch.lock import RunLock
from pairbatch.models import Job, Provider
from pairbatch.normalize import (
    empty_combined,
    empty_failed,
)
from pairbatch.outcomes import (
    JobOutcome,
    concat_frames,
    empty_batch_failures,
)
from pairbatch.outcomes import write_combined_csv as write_combined_csv_file
from pairbatch.registry import read_registry
from pairbatch.runfolder import known_segments, load_jobs, open_run, resolve_combined_path
from pairbatch.session import Session, check_number, rate_limits_for
from pairbatch.settings import read_settings
from pairbatch.transport import Transport
from pairbatch.wakeups import Wakeups

log = logging.getLogger("pairbatch.resume")

# Statuses that mean the job can never succeed by polling again (wrong key, gone batch).
_PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 410, 422})


async def iter_completed(
    jobs: Sequence[Job | Mapping[str, Any]] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    interval_seconds: float = 60,
    per_job_delay: float | None = None,
    write_results_csv: bool = False,
    keep_jsonl: bool = True,
    write_registry: bool = False,
    tag_prefix: str = "<BETTER_SAMPLE>",
    tag_suffix: str = "</BETTER_SAMPLE>",
    verbose: bool = False,
    openai_max_retries: int = 3,
    *,
    max_concurrency: int = 32,
    rate_limits: Mapping[str, float] | None = None,
    max_tries: int = 5,
    max_interval_seconds: float | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - an overall deadline, not a per-call one
    api_keys: Mapping[str, str] | None = None,
    base_urls: Mapping[str, str] | None = None,
    transport: Transport | None = None,
    on_event: EventHandler | None = None,
    redownload: Iterable[int] | bool = (),
    wakeups: Wakeups | None = None,
) -> AsyncGenerator[JobOutcome, None]:
    """Yield each job's :class:`JobOutcome` the moment its results are on disk.

    Jobs already done in the registry are yielded first, read back from disk (and checked
    against what was written) with no provider calls; a done job whose files are missing
    or damaged yields an outcome whose ``error`` names the file. ``redownload`` (segment
    numbers, or ``True`` for every such job) fetches their results again instead. The
    run folder is locked for the whole iteration: a second writer is refused. ``wakeups``
    lets a webhook receiver (:mod:`pairbatch.wakeups`) cut a job's poll interval short. Use
    ``contextlib.aclosing`` (or ``async for`` to the end) so that stopping early cancels
    the polling tasks and leaves the registry consistent. Arguments are those of
    :func:`resume_multi_batches`, less the combined-CSV ones.
    """
    check_number("interval_seconds", interval_seconds, low=0)
    if max_interval_seconds is not None:
        check_number("max_interval_seconds", max_interval_seconds, low=0)
    if timeout is not None:
        check_number("timeout", timeout, low=0)
    for name, value in (
        ("openai_max_retries", openai_max_retries),
        ("max_tries", max_tries),
        ("max_concurrency", max_concurrency),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"'{name}' must be an integer >= 1, got {value!r}")
    given, out_dir = await asyncio.to_thread(load_jobs, jobs, output_dir)
    options = ResumeOptions(
        interval_seconds=float(interval_seconds),
        write_results_csv=write_results_csv,
        keep_jsonl=keep_jsonl,
        tag_prefix=tag_prefix,
        tag_suffix=tag_suffix,
        verbose=verbose,
        max_interval_seconds=max_interval_seconds,
    )
    limits = rate_limits_for(per_job_delay, rate_limits)
    tries = {p.value: max_tries for p in Provider} | {"openai": openai_max_retries}
    session = Session(
        transport=transport,
        api_keys=api_keys,
        base_urls=base_urls,
        max_concurrency=max_concurrency,
        rate_limits=limits,
        # The reference paced one request at a time; keep that when asked for it.
        bursts={p.value: 1.0 for p in Provider} if per_job_delay is not None else None,
        max_tries=tries,
    )
    lock = RunLock(out_dir, "resume")
    if not await asyncio.to_thread(out_dir.is_dir):
        raise InputError(f"output_dir {out_dir} is not a folder")
    if not isinstance(redownload, bool):
        # Read only, before the run is opened: a refused list changes nothing on disk.
        redownload = await asyncio.to_thread(known_segments, redownload, given, out_dir)
    await asyncio.to_thread(lock.acquire)
    try:
        registry, settings = await asyncio.to_thread(open_run, given, out_dir, csv=write_registry)
        run = JobDriver(
            registry.jobs,
            out_dir,
            options,
            session,
            registry,
            Emitter(on_event, log),
            settings,
            wakeups,
        )
        with verbose_logging(verbose):
            async with contextlib.aclosing(drive_all(run, session, timeout, redownload)) as gen:
                async for outcome in gen:
                    yield outcome
    finally:
        lock.release()


@attrs.frozen
class ResumeResult:
    """What :func:`resume_multi_batches` returns (the reference's list, as attributes).

    Frames always have their declared columns, also when empty: ``combined`` (no rows
    when no pair has a result), ``failed_attempts`` and ``batch_failures``. ``errors``
    lists what kept a job from being complete (a damaged file, a permanent error).
    """

    jobs: list[Job]
    outcomes: list[JobOutcome]
    combined: pl.DataFrame
    failed_attempts: pl.DataFrame
    batch_failures: pl.DataFrame
    combined_csv_path: Path | None = None
    #: Tokens the answers report (results and failed attempts), and their cost when the
    #: run was submitted with ``prices`` (the batch discount applied).
    tokens: tuple[int, int] = (0, 0)
    cost: float | None = None

    @property
    def errors(self) -> list[str]:
        return [o.error for o in self.outcomes if o.error]

    @property
    def all_done(self) -> bool:
        return all(job.done for job in self.jobs) and not self.errors


async def resume_multi_batches(
    jobs: Sequence[Job | Mapping[str, Any]] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    interval_seconds: float = 60,
    per_job_delay: float | None = None,
    write_results_csv: bool = False,
    keep_jsonl: bool = True,
    write_registry: bool = False,
    tag_prefix: str = "<BETTER_SAMPLE>",
    tag_suffix: str = "</BETTER_SAMPLE>",
    verbose: bool = False,
    write_combined_csv: bool = False,
    combined_csv_path: str | None = None,
    openai_max_retries: int = 3,
    *,
    max_concurrency: int = 32,
    rate_limits: Mapping[str, float] | None = None,
    max_tries: int = 5,
    max_interval_seconds: float | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - an overall deadline, not a per-call one
    api_keys: Mapping[str, str] | None = None,
    base_urls: Mapping[str, str] | None = None,
    transport: Transport | None = None,
    on_event: EventHandler | None = None,
    redownload: Iterable[int] | bool = (),
    wakeups: Wakeups | None = None,
    retry_failed: int = 0,
) -> ResumeResult:
    """Poll, download and parse every unfinished job; return the combined results.

    Same arguments and semantics as the reference ``llm_resume_multi_batches()``, with
    the per-job sleep replaced by concurrency under per-provider rate limits
    (``per_job_delay``, when given, sets every provider to one request per that many
    seconds). Jobs completed in earlier runs are included in ``combined``. The registry
    journal is always written; ``write_registry`` asks for the CSV snapshot as well (kept
    anyway when one exists). A ``transport`` passed in is shared as it is: its own rate
    limits apply, not ``rate_limits``. ``redownload``: see :func:`iter_completed`.
    ``retry_failed=N``: once every job is done, send the pairs with no result again
    (:func:`pairbatch.retries.retry_failed`, at most ``N + 1`` attempts each) and resume
    those, up to ``N`` rounds.
    """
    arguments = dict(locals())
    if isinstance(retry_failed, bool) or not isinstance(retry_failed, int) or retry_failed < 0:
        raise InputError(f"'retry_failed' must be an integer >= 0, got {retry_failed!r}")
    _, out_dir = load_jobs(jobs, output_dir)
    written = resolve_combined_path(out_dir, combined_csv_path) if write_combined_csv else None
    if written is not None:  # a target that cannot be written is refused before the work
        await asyncio.to_thread(check_target, "combined_csv_path", written)
    outcomes: dict[int, JobOutcome] = {}
    gen = iter_completed(
        jobs,
        output_dir,
        interval_seconds,
        per_job_delay,
        write_results_csv,
        keep_jsonl,
        write_registry,
        tag_prefix,
        tag_suffix,
        verbose,
        openai_max_retries,
        max_concurrency=max_concurrency,
        rate_limits=rate_limits,
        max_tries=max_tries,
        max_interval_seconds=max_interval_seconds,
        timeout=timeout,
        api_keys=api_keys,
        base_urls=base_urls,
        transport=transport,
        on_event=on_event,
        redownload=redownload,
        wakeups=wakeups,
    )
    async with contextlib.aclosing(gen):
        async for outcome in gen:
            outcomes[outcome.job.segment_index] = outcome
    # File and frame work: one trip to a worker thread (a run's frames take a while to
    # join, and the event loop may be serving other runs).
    recorded, ordered, combined, failed, failures = await asyncio.to_thread(
        _gathered, out_dir, outcomes
    )
    final_jobs = [
        outcomes[j.segment_index].job if j.segment_index in outcomes else j for j in recorded
    ]
    with verbose_logging(verbose):
        if written is not None:
            await asyncio.to_thread(write_combined_csv_file, combined, written)
            log.log(
                logging.INFO if verbose else logging.DEBUG,
                "%s Combined results written to %s",
                TAG,
                written,
            )
    failed_frame = failed if failed is not None else empty_failed()
    tokens = actual_tokens([combined, failed_frame])
    budget = (await asyncio.to_thread(read_settings, out_dir)).get("budget") or {}
    prices = Prices.coerce(budget.get("prices"))
    result = ResumeResult(
        tokens=tokens,
        cost=None if prices is None else prices.cost(*tokens),
        jobs=final_jobs,
        outcomes=ordered,
        combined=combined,
        failed_attempts=failed_frame,
        batch_failures=failures if failures is not None else empty_batch_failures(),
        combined_csv_path=written,
    )
    if retry_failed and result.all_done and await _retry_round(arguments, out_dir, recorded):
        return await resume_multi_batches(
            **(arguments | {"jobs": None, "output_dir": out_dir, "retry_failed": retry_failed - 1})
        )
    return result


def _gathered(
    out_dir: Path, outcomes: Mapping[int, JobOutcome]
) -> tuple[list[Job], list[JobOutcome], pl.DataFrame, pl.DataFrame | None, pl.DataFrame | None]:
    """The registry as recorded, the outcomes in segment order, and their results,
    failed attempts and batch failures joined (blocking)."""
    ordered = [outcomes[k] for k in sorted(outcomes)]
    combined = concat_frames([o.results for o in ordered if o.results is not None])
    failed = concat_frames([o.failed_attempts for o in ordered if o.failed_attempts is not None])
    failures = concat_frames([o.batch_failure for o in ordered if o.batch_failure is not None])
    return (
        read_registry(out_dir),
        ordered,
        combined if combined is not None else empty_combined(),
        failed,
        failures,
    )


async def _retry_round(arguments: Mapping[str, Any], out_dir: Path, jobs: list[Job]) -> bool:
    """One automatic retry round; whether it sent anything. Each round adds at most one
    attempt to each pair without a result, so ``N`` rounds bound a pair at ``N + 1``."""
    from pairbatch.retries import retry_failed

    provider = jobs[0].provider.value if jobs else None
    keys, urls = arguments["api_keys"] or {}, arguments["base_urls"] or {}
    sent = await retry_failed(
        out_dir,
        max_attempts=1_000_000,  # the rounds are the bound here
        api_key=keys.get(provider) if provider else None,
        base_url=urls.get(provider) if provider else None,
        transport=arguments["transport"],
        verbose=arguments["verbose"],
        on_event=arguments["on_event"],
    )
    return bool(sent.jobs)
