"""Submit: split pairs into segments, write each segment's files, create the batches.

Every file a segment needs is written before any intent is recorded, every intent before
any create, and each create is recorded as ``creating`` before it is sent (see
:mod:`pairbatch.reconcile`), so a crash at any instant is resumed without paying twice.
Creates run concurrently under the same limits as polling.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import polars as pl

from pairbatch import _crash
from pairbatch.budgets import Budget, Prices, plan_budget
from pairbatch.errors import InputError, PairbatchError, ProviderError, UnresolvedBatchError
from pairbatch.events import Emitter, Event, EventHandler, EventKind, verbose_logging
from pairbatch.models import Job, JobStatus, Provider
from pairbatch.pairs import (
    PairsSource,
    assign_custom_ids,
    new_run_tag,
)
from pairbatch.preflight import preflight_check
from pairbatch.prompts import DEFAULT_TEMPLATE
from pairbatch.providers import get_backend, get_info
from pairbatch.providers.base import BatchClient
from pairbatch.reconcile import Reconciler
from pairbatch.registry import (
    COLUMNS,
    Registry,
)
from pairbatch.runfolder import abandon_new_run, check_new_run_folder, lock_new_run
from pairbatch.segments import Plan, load_segments, write_segments
from pairbatch.session import one_provider_session
from pairbatch.transport import Transport

log = logging.getLogger("pairbatch.submit")

TAG = "[submit_pairs_multi_batch]"


def jobs_frame(jobs: list[Job]) -> pl.DataFrame:
    """The registry as a Polars frame (reference columns first)."""
    columns = [c for c in COLUMNS if c not in ("rev", "files")]
    rows = []
    for job in jobs:
        row = attrs.asdict(job, recurse=False)
        row["provider"] = job.provider.value
        row["status"] = job.status.value
        rows.append({column: row[column] for column in columns})
    schema: dict[str, Any] = {c: pl.Utf8 for c in columns}
    schema |= {
        "segment_index": pl.Int64,
        "done": pl.Boolean,
        "n_pairs": pl.Int64,
        "submitted_at": pl.Datetime("us", "UTC"),
        "updated_at": pl.Datetime("us", "UTC"),
    }
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


@attrs.frozen
class SubmitResult:
    """Jobs for :func:`~pairbatch.resume_multi_batches`, and the registry as a frame."""

    jobs: list[Job]
    output_dir: Path
    run_tag: str

    @property
    def registry(self) -> pl.DataFrame:
        return jobs_frame(self.jobs)

    @property
    def failed(self) -> list[Job]:
        """Segments whose create failed: ``submit_failed``, or ``creating`` when its
        outcome is unknown and resume must reconcile it first."""
        return [j for j in self.jobs if j.batch_id is None and j.status is not JobStatus.INTENT]

    @property
    def held(self) -> list[Job]:
        """Segments held back for the enqueued-token limit (resume sends them)."""
        return [j for j in self.jobs if j.batch_id is None and j.status is JobStatus.INTENT]


async def submit_pairs_multi_batch(
    pairs: PairsSource,
    *,
    model: str,
    trait_name: str,
    trait_description: str,
    prompt_template: str = DEFAULT_TEMPLATE,
    backend: str | Provider,
    batch_size: int | None = None,
    n_segments: int | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    write_registry: bool = False,
    keep_jsonl: bool = True,
    verbose: bool = False,
    openai_max_retries: int = 3,
    max_tries: int = 5,
    max_concurrency: int = 8,
    rate_limits: Mapping[str, float] | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    transport: Transport | None = None,
    on_event: EventHandler | None = None,
    overwrite: bool = False,
    order: str = "as_given",
    order_seed: int = 0,
    preflight: bool = True,
    enqueued_token_limit: int | None = None,
    prices: Prices | Mapping[str, float] | None = None,
    cost_cap: float | None = None,
    **provider_options: Any,
) -> SubmitResult:
    """Split ``pairs`` into segments and create one provider batch per segment.

    Same arguments as the reference ``llm_submit_pairs_multi_batch()``; provider options
    (``temperature``, ``reasoning``, ``include_thoughts``, ``thinking_level`` ...) pass
    through as keyword arguments. It runs in three phases, so that a crash or a full disk
    at any instant loses nothing and pays for nothing twice:

    1. validate everything (options against the model's profile, key, pairs, the
       provider's batch limits, the folder), send one ordinary request with the exact
       body of the first pair (the *pre-flight*: a refused option stops the submit here,
       quoting the provider; ``preflight=False`` skips it), then write every segment's
       pairs and request file, and the run settings, fsynced; a failure here removes what
       it wrote and no batch exists;
    2. record every segment's intent in the registry (journal always; the CSV snapshot
       when ``write_registry``);
    3. create the batches concurrently, each recorded as ``creating`` before it is sent.

    Budgets (see :mod:`pairbatch.budgets`): with ``enqueued_token_limit`` the segments
    that would take the provider's queue over it stay ``intent`` and resume creates them
    as earlier batches finish; with ``prices`` and ``cost_cap`` a run whose estimate
    exceeds the cap is refused before anything is created.
    ``order`` is ``"as_given"``, ``"random"`` (each pair's order drawn from ``order_seed``
    and its key) or ``"both"`` (every pair judged in both orders, linked by ``pair_uid``;
    see :func:`pairbatch.design.apply_order`). A segment over the provider's request or
    byte limit is an error naming the limit (choose a smaller ``batch_size``).
    A folder that already holds a run is refused (resume it, or choose another folder);
    ``overwrite=True`` replaces a run only when none of its batches can still be running.
    A segment that fails to submit is recorded (see :attr:`SubmitResult.failed`) and the
    others go on; ``resume_multi_batches`` sends it again, or reconciles it first when
    its create's outcome is unknown. ``keep_jsonl`` is accepted for the reference's
    signature; as there, request files are only ever deleted by resume.
    """
    provider = _provider(backend)
    plan = Plan.check(
        model=model,
        trait_name=trait_name,
        trait_description=trait_description,
        template=prompt_template,
        retries=(openai_max_retries, max_tries, max_concurrency),
    )
    backend_impl = get_backend(provider)
    options = backend_impl.prepare_options(model, provider_options)
    budget = Budget.check(enqueued_token_limit, prices, cost_cap)
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
    client = session.client(provider)  # a missing key fails here, before any file
    segments = await asyncio.to_thread(
        load_segments, pairs, batch_size, n_segments, order, order_seed, backend_impl
    )
    await asyncio.to_thread(check_new_run_folder, output_dir, overwrite)
    run_tag = new_run_tag()
    emit = Emitter(on_event, log)
    with verbose_logging(verbose):
        async with session:
            checked = None
            if preflight:
                first = assign_custom_ids(segments[0].head(1), run_tag, 1, 0)
                checked = await preflight_check(client, backend_impl, first, model, plan, options)
            out_dir, lock, created = await lock_new_run(output_dir, overwrite)
            try:
                try:
                    jobs = await asyncio.to_thread(
                        write_segments,
                        out_dir,
                        segments,
                        provider,
                        model,
                        run_tag,
                        plan,
                        options,
                        backend_impl,
                        {"order": order, "order_seed": order_seed, "preflight": checked},
                    )
                    held = await asyncio.to_thread(
                        plan_budget, out_dir, jobs, options, checked, budget
                    )
                except BaseException:
                    await asyncio.to_thread(abandon_new_run, out_dir, lock, created)
                    raise
                registry = Registry(out_dir, jobs, csv=write_registry)
                await asyncio.to_thread(registry.write_now)  # phase 2: every intent, durably
                _crash.point("submit:intents")
                try:
                    submitted = await create_all(
                        [j for j in jobs if j.segment_index not in held],
                        client,
                        registry,
                        options,
                        emit,
                        verbose,
                        provider,
                    )
                    submitted += await _hold(registry, [j for j in jobs if j.segment_index in held])
                finally:
                    await asyncio.shield(registry.close())
            finally:
                lock.release()
    submitted.sort(key=lambda j: j.segment_index)
    failures = [
        job for job in submitted if job.batch_id is None and job.status is not JobStatus.INTENT
    ]
    if failures:
        log.error(
            "%s %d of %d segment(s) failed to submit; resume_multi_batches() will retry them",
            TAG,
            len(failures),
            len(submitted),
        )
    return SubmitResult(jobs=list(submitted), output_dir=out_dir, run_tag=run_tag)


def _provider(backend: str | Provider) -> Provider:
    try:
        return Provider.parse(backend)
    except ValueError as exc:
        raise InputError(f"backend: {exc}") from None


async def _hold(registry: Registry, jobs: list[Job]) -> list[Job]:
    """Segments held back by the queue limit: intents (never sent) saying why."""
    held = [j.transition(error="queued: waiting for room under enqueued_token_limit") for j in jobs]
    await asyncio.gather(*(registry.record(j) for j in held))
    return held


async def create_all(
    jobs: list[Job],
    client: BatchClient,
    registry: Registry,
    options: Mapping[str, Any],
    emit: Emitter,
    verbose: bool,
    provider: Provider,
) -> list[Job]:
    """Phase 3: create every segment's batch (concurrently, under the transport's limits)."""
    level = logging.INFO if verbose else logging.DEBUG
    reconciler = Reconciler(lambda _: client, lambda: registry.jobs)

    async def record(job: Job) -> Job:
        await registry.record(job)
        return job

    async def one(job: Job) -> Job:
        log.log(
            level,
            "%s Submitting segment %d of %d (%d pairs) to %s...",
            TAG,
            job.segment_index,
            len(jobs),
            job.n_pairs,
            provider.value,
        )
        try:
            job = await reconciler.send(job, Path(job.batch_input_path), options, record)
        except UnresolvedBatchError as exc:
            # A batch may exist: leave it ``creating`` for resume to reconcile, never resend.
            current = registry_job(registry, job)
            return await failed(current, exc, JobStatus.CREATING)
        except (ProviderError, PairbatchError, OSError) as exc:
            return await failed(registry_job(registry, job), exc, JobStatus.SUBMIT_FAILED)
        info = get_info(provider)
        log.log(
            level,
            "%s Segment %d: %s batch created (%s = %s). Input path: %s",
            TAG,
            job.segment_index,
            info.display,
            info.batch_noun,
            job.batch_id,
            job.batch_input_path,
        )
        emit(Event(EventKind.SUBMITTED, job, detail=job.batch_id))
        return job

    async def failed(job: Job, exc: BaseException, status: JobStatus) -> Job:
        log.error("%s segment %d failed to submit: %s", TAG, job.segment_index, exc)
        job = await record(job.transition(status=status, error=str(exc)))
        emit(Event(EventKind.SUBMIT_FAILED, job, detail=str(exc)))
        return job

    return list(await asyncio.gather(*(one(job) for job in jobs)))


def registry_job(registry: Registry, job: Job) -> Job:
    """The registry's newest version of a job (a create may have recorded ``creating``)."""
    return next((j for j in registry.jobs if j.segment_index == job.segment_index), job)
