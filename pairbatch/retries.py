"""Finish what failed: send the pairs that have no result again, as new segments of the run.

Every pair of a run descends from one original request (its ``origin_id``: the first
``custom_id`` it was sent under). A pair has a result when any of its attempts has one;
its attempts are the segments' rows that carry its origin. :func:`retry_failed` gathers
the pairs without a result (errored requests, the unfinished remainder of expired or
cancelled batches, missing lines, unparseable answers; selectable by failure code) whose
attempts are below ``max_attempts``, and submits them through the same protocol as a
first submit (files, then intents, then creates recorded as ``creating``; see
:mod:`pairbatch.reconcile`), so a retry can be killed anywhere and run again without
paying twice.

The new segments are listed in ``run_settings.json`` as ``pending_segments`` before their
intents are recorded and moved to ``segments`` after, so the registry's check "every
segment of the run is recorded" holds at every instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from pairbatch import _crash
from pairbatch.errors import InputError
from pairbatch.events import Emitter, EventHandler, verbose_logging
from pairbatch.lock import RunLock
from pairbatch.models import Job, Provider
from pairbatch.outcomes import load_outcome
from pairbatch.pairs import split_pairs
from pairbatch.providers import get_backend
from pairbatch.registry import Registry, require_run
from pairbatch.segments import Plan, write_segments
from pairbatch.session import Session, one_provider_session
from pairbatch.settings import require_settings, write_settings
from pairbatch.settle import segment_pairs
from pairbatch.submit import SubmitResult, create_all
from pairbatch.transport import Transport

log = logging.getLogger("pairbatch.retries")
TAG = "[retry_failed]"
ORIGIN = "origin_id"
ATTEMPT = "attempt"


def _origin(frame: pl.DataFrame) -> pl.Expr:
    if ORIGIN in frame.columns:
        return pl.coalesce(pl.col(ORIGIN), pl.col("custom_id"))
    return pl.col("custom_id")


def pairs_to_retry(
    jobs: list[Job], *, max_attempts: int, codes: Collection[str] | None = None
) -> pl.DataFrame:
    """The latest attempt of every pair with no result, whose attempts are below
    ``max_attempts`` and (with ``codes``) whose last failure has one of those codes.
    Blocking: reads every segment's files (checked against their records)."""
    attempts, succeeded, last_code = [], [], []
    for job in jobs:
        pairs = segment_pairs(job)
        attempts.append(pairs.with_columns(_origin(pairs).alias(ORIGIN)))
        outcome = load_outcome(job)
        if outcome.error:
            raise InputError(f"segment {job.segment_index}: {outcome.error}")
        if outcome.results is not None and outcome.results.height:
            succeeded.append(outcome.results.select(_origin(outcome.results).alias(ORIGIN)))
        failed = outcome.failed_attempts
        if failed is not None and failed.height:
            origins = pairs.select("custom_id", _origin(pairs).alias(ORIGIN))
            last_code.append(
                failed.filter(~pl.col("is_duplicate"))
                .select("custom_id", "error_code", "attempted_at")
                .join(origins, on="custom_id", how="inner")
            )
    every = pl.concat(attempts, how="diagonal_relaxed")
    done = pl.concat(succeeded)[ORIGIN].unique() if succeeded else pl.Series(ORIGIN, [], pl.Utf8)
    counts = every.group_by(ORIGIN).len("n_attempts")
    latest = every.group_by(ORIGIN, maintain_order=True).last()
    todo = latest.join(counts, on=ORIGIN).filter(
        ~pl.col(ORIGIN).is_in(done.implode()) & (pl.col("n_attempts") < max_attempts)
    )
    if codes is not None:
        if not last_code:
            return todo.clear()
        code = (
            pl.concat(last_code)
            .sort("attempted_at")
            .group_by(ORIGIN)
            .last()
            .select(ORIGIN, "error_code")
        )
        todo = (
            todo.join(code, on=ORIGIN, how="left")
            .filter(pl.col("error_code").is_in(list(codes)))
            .drop("error_code")
        )
    return todo.with_columns((pl.col("n_attempts") + 1).cast(pl.Int64).alias(ATTEMPT)).drop(
        "n_attempts"
    )


def _fresh(todo: pl.DataFrame) -> pl.DataFrame:
    """The rows as a new attempt: the request key is made anew for its new segment."""
    return todo.drop("custom_id")


async def retry_failed(
    output_dir: str | os.PathLike[str],
    *,
    max_attempts: int = 3,
    codes: Collection[str] | None = None,
    batch_size: int | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    transport: Transport | None = None,
    max_tries: int = 5,
    openai_max_retries: int = 3,
    max_concurrency: int = 8,
    rate_limits: Mapping[str, float] | None = None,
    verbose: bool = False,
    on_event: EventHandler | None = None,
) -> SubmitResult:
    """Send every pair of the run that has no result again, as new segments (see the
    module docs); returns the new segments' jobs (none when there is nothing to retry).
    Every batch of the run must be done first (resume it). ``codes`` limits the retry to
    pairs whose last failure has one of these ``error_code`` values."""
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 2:
        raise InputError(f"'max_attempts' must be an integer >= 2, got {max_attempts!r}")
    folder = await asyncio.to_thread(require_run, output_dir)
    lock = RunLock(folder, "retry")
    await asyncio.to_thread(lock.acquire)
    try:
        registry = await asyncio.to_thread(Registry.open, folder)
        settings = await asyncio.to_thread(_settings, folder, registry)
        provider = Provider.parse(settings["provider"])
        session = one_provider_session(
            provider,
            transport=transport,
            api_key=api_key,
            base_url=base_url,
            max_concurrency=max_concurrency,
            rate_limits=rate_limits,
            max_tries=max_tries,
            openai_max_retries=openai_max_retries,
        )
        try:
            with verbose_logging(verbose):
                new = await _retry(
                    folder,
                    registry,
                    settings,
                    session,
                    provider,
                    max_attempts,
                    codes,
                    batch_size,
                    Emitter(on_event, log),
                    verbose,
                )
        finally:
            await asyncio.shield(registry.close())
    finally:
        lock.release()
    return SubmitResult(jobs=new, output_dir=folder, run_tag=str(settings["run_tag"]))


def _settings(folder: Path, registry: Registry) -> dict[str, Any]:
    """The run settings, with a retry that stopped between its steps finished first."""
    settings = require_settings(
        folder,
        "provider",
        "model",
        "options",
        "prompt_template",
        "trait_name",
        "trait_description",
        "segments",
        "run_tag",
    )
    pending = list(settings.get("pending_segments") or [])
    if pending:
        recorded = {job.segment_index for job in registry.jobs}
        settings["segments"] = sorted(
            {*settings["segments"], *(s for s in pending if s in recorded)}
        )
        settings["pending_segments"] = []
        for index in (s for s in pending if s not in recorded):  # files with no intent
            for name in (f"batch_{index:02d}_pairs.parquet", f"batch_{index:02d}_input.jsonl"):
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()
        write_settings(folder, {k: v for k, v in settings.items() if k != "format"})
    unfinished = [j.segment_index for j in registry.jobs if not j.done]
    if unfinished:
        raise InputError(
            f"{folder}: segment(s) {', '.join(map(str, unfinished))} are not done; "
            "resume the run before retrying its failed pairs"
        )
    return settings


async def _retry(
    folder: Path,
    registry: Registry,
    settings: dict[str, Any],
    session: Session,
    provider: Provider,
    max_attempts: int,
    codes: Collection[str] | None,
    batch_size: int | None,
    emit: Emitter,
    verbose: bool,
) -> list[Job]:
    jobs = registry.jobs
    todo = await asyncio.to_thread(pairs_to_retry, jobs, max_attempts=max_attempts, codes=codes)
    if todo.height == 0:
        log.info("%s %s: no pair to retry", TAG, folder)
        return []
    backend = get_backend(provider)
    size = batch_size or max(j.n_pairs for j in jobs)
    segments = split_pairs(_fresh(todo), batch_size=size)
    first = max(j.segment_index for j in jobs) + 1
    new_indices = list(range(first, first + len(segments)))
    log.info("%s %s: %d pair(s) to retry in segment(s) %s", TAG, folder, todo.height, new_indices)
    plan = Plan.check(
        model=settings["model"],
        trait_name=settings["trait_name"],
        trait_description=settings["trait_description"],
        template=settings["prompt_template"],
        retries=(1, 1, 1),
    )
    base = {k: v for k, v in settings.items() if k != "format"}
    await asyncio.to_thread(write_settings, folder, base | {"pending_segments": new_indices})
    _crash.point("retry:pending")
    new = await asyncio.to_thread(
        write_segments,
        folder,
        segments,
        provider,
        settings["model"],
        settings["run_tag"],
        plan,
        settings["options"],
        backend,
        None,
        first,
    )
    await asyncio.gather(*(registry.record(job) for job in new))  # one group commit
    _crash.point("retry:intents")
    merged = sorted({*settings["segments"], *new_indices})
    await asyncio.to_thread(
        write_settings, folder, base | {"segments": merged, "pending_segments": []}
    )
    client = session.client(provider)
    async with session:
        return await create_all(new, client, registry, settings["options"], emit, verbose, provider)
