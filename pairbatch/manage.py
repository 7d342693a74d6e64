"""Looking after a run folder: a status table of its jobs, and cancelling them."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import attrs
import polars as pl

from pairbatch.errors import ProviderError
from pairbatch.lock import RunLock
from pairbatch.models import BatchStatus, Job, utcnow
from pairbatch.registry import Registry, read_registry, require_run
from pairbatch.session import Session
from pairbatch.transport import Transport

log = logging.getLogger("pairbatch.manage")

STATUS_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "segment": pl.Int64,
    "provider": pl.Utf8,
    "batch_id": pl.Utf8,
    "state": pl.Utf8,
    "status": pl.Utf8,
    "done": pl.Boolean,
    "pairs": pl.Int64,
    "results": pl.Int64,
    "failed": pl.Int64,
    "age_min": pl.Float64,
    "error": pl.Utf8,
}


def _rows(job: Job, name: str) -> int | None:
    """Rows of a done job's file; 0 for one it has no record of while it has records of
    others (settle writes no file for no rows); unknown for a registry without records."""
    check = job.file_check(name)
    if check is None:
        return 0 if job.files else None
    return check.rows


def status_table(
    output_dir: str | os.PathLike[str], live: Mapping[int, BatchStatus | str] | None = None
) -> pl.DataFrame:
    """One row per job as the registry on disk has it (no lock: a reader), with its age
    in minutes and its result and failure counts. ``live`` maps segments to a fresh
    provider status (or the reason it could not be had), shown in ``state``."""
    return status_frame(read_registry(output_dir), live)


def status_frame(
    jobs: list[Job], live: Mapping[int, BatchStatus | str] | None = None
) -> pl.DataFrame:
    """:func:`status_table` of jobs already read."""
    now = utcnow()
    rows = []
    for job in jobs:
        # A finished job says how it ended in pairbatch's words; a live one, the provider's.
        state = job.status.value if job.done else (job.raw_status or job.status.value)
        fresh = (live or {}).get(job.segment_index)
        if isinstance(fresh, BatchStatus):
            state = fresh.raw_state
        elif isinstance(fresh, str):
            state = f"? ({fresh})"
        rows.append(
            {
                "segment": job.segment_index,
                "provider": job.provider.value,
                "batch_id": job.batch_id,
                "state": state,
                "status": job.status.value,
                "done": job.done,
                "pairs": job.n_pairs,
                "results": _rows(job, Path(job.results_path).name) if job.done else None,
                "failed": _rows(job, Path(job.failed_path).name) if job.done else None,
                "age_min": round((now - job.submitted_at).total_seconds() / 60, 1)
                if job.submitted_at
                else None,
                "error": job.error,
            }
        )
    return pl.DataFrame(rows, schema=STATUS_SCHEMA)


async def live_states(
    output_dir: str | os.PathLike[str],
    *,
    api_keys: Mapping[str, str] | None = None,
    base_urls: Mapping[str, str] | None = None,
    transport: Transport | None = None,
) -> dict[int, BatchStatus | str]:
    """Ask the providers for the state of every unfinished batch (read-only: no lock)."""
    jobs = [j for j in await asyncio.to_thread(read_registry, output_dir) if j.batch_id]
    out: dict[int, BatchStatus | str] = {}
    async with Session(transport=transport, api_keys=api_keys, base_urls=base_urls) as session:

        async def one(job: Job) -> None:
            assert job.batch_id is not None
            try:
                out[job.segment_index] = await session.client(job.provider).status(job.batch_id)
            except ProviderError as exc:
                out[job.segment_index] = exc.message

        await asyncio.gather(*(one(job) for job in jobs if not job.done))
    return out


@attrs.frozen
class CancelResult:
    """The jobs a cancel was sent for, and those it failed for (with the reason)."""

    cancelled: list[Job]
    failed: list[tuple[Job, str]]


async def cancel_multi_batches(
    output_dir: str | os.PathLike[str],
    *,
    api_keys: Mapping[str, str] | None = None,
    base_urls: Mapping[str, str] | None = None,
    transport: Transport | None = None,
) -> CancelResult:
    """Ask the provider to cancel every unfinished batch of a run (under the run lock).

    The registry is not marked done: a later resume collects what the cancelled batches
    finished (their partial results are salvaged) and records the rest as failures.
    """
    await asyncio.to_thread(require_run, output_dir)
    lock = RunLock(output_dir, "cancel")
    await asyncio.to_thread(lock.acquire)
    try:
        registry = await asyncio.to_thread(Registry.open, output_dir)
        jobs = [j for j in registry.jobs if not j.done and j.batch_id]
        cancelled: list[Job] = []
        failed: list[tuple[Job, str]] = []
        try:
            async with Session(
                transport=transport, api_keys=api_keys, base_urls=base_urls
            ) as session:

                async def cancel(job: Job) -> None:
                    assert job.batch_id is not None
                    try:
                        await session.client(job.provider).cancel(job.batch_id)
                    except ProviderError as exc:
                        log.warning(
                            "could not cancel segment %d (%s): %s",
                            job.segment_index,
                            job.batch_id,
                            exc,
                        )
                        failed.append((job, str(exc)))
                        return
                    updated = job.transition(raw_status="cancelling")
                    await registry.record(updated)
                    cancelled.append(updated)

                await asyncio.gather(*(cancel(job) for job in jobs))
        finally:
            await asyncio.shield(registry.close())
    finally:
        lock.release()
    return CancelResult(
        sorted(cancelled, key=lambda j: j.segment_index),
        sorted(failed, key=lambda item: item[0].segment_index),
    )


def budget_line(output_dir: str | os.PathLike[str], jobs: list[Job] | None = None) -> str | None:
    """Estimated tokens (and cost) of the run as submitted, and what the finished jobs'
    answers report so far; ``None`` for a run with no estimates (older versions).
    ``jobs``: the registry as already read (read here when not given)."""
    from pairbatch.budgets import Prices, actual_tokens, dollars, read_estimates
    from pairbatch.outcomes import load_outcome
    from pairbatch.settings import read_settings

    folder = Path(output_dir)
    settings = read_settings(folder)
    estimates = read_estimates(settings)
    if not estimates:
        return None
    budget = settings.get("budget") or {}
    prices = Prices.coerce(budget.get("prices"))
    est_in = sum(e.input_tokens for e in estimates.values())
    est_out = sum(e.output_tokens for e in estimates.values())
    frames = []
    for job in jobs if jobs is not None else read_registry(folder):
        if job.done:
            outcome = load_outcome(job)
            frames += [outcome.results, outcome.failed_attempts]
    got_in, got_out = actual_tokens(frames)
    text = f"tokens: estimated {est_in:,} in + {est_out:,} out (at most)"
    if prices is not None:
        text += f" ~{dollars(prices.cost(est_in, est_out))}"
    text += f"; answered so far {got_in:,} in + {got_out:,} out"
    if prices is not None:
        text += f" = {dollars(prices.cost(got_in, got_out))}"
    limit = budget.get("enqueued_token_limit")
    if limit:
        text += f"; enqueued-token limit {limit:,}"
    return text
