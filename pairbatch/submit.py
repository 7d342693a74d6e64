"""Submit: split pairs into segments, write each segment's files, create the batches.

Segments are submitted concurrently under the same limits as polling. Before each create
call the job is recorded as an *intent* (segment, run tag) and the run tag travels in the
batch's metadata, so a create that timed out, or a crash between create and registry
write, is reconciled by finding the batch instead of paying for it twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import polars as pl

from pairbatch.errors import InputError, PairbatchError, ProviderError, UnresolvedBatchError
from pairbatch.events import Emitter, Event, EventHandler, EventKind, verbose_logging
from pairbatch.models import Job, JobStatus, Provider, utcnow
from pairbatch.pairs import (
    PairsSource,
    assign_custom_ids,
    load_pairs,
    new_run_tag,
    split_pairs,
    with_pair_keys,
    write_segment_pairs,
)
from pairbatch.prompts import DEFAULT_TEMPLATE, validate_template
from pairbatch.providers import get_backend
from pairbatch.providers.base import BatchClient, write_request_file
from pairbatch.registry import COLUMNS, Registry
from pairbatch.registry import write_registry as write_registry_file
from pairbatch.session import Session
from pairbatch.settings import write_settings
from pairbatch.transport import Transport

log = logging.getLogger("pairbatch.submit")

TAG = "[submit_pairs_multi_batch]"
_DISPLAY = {Provider.OPENAI: "OpenAI", Provider.ANTHROPIC: "Anthropic", Provider.GEMINI: "Gemini"}


def jobs_frame(jobs: list[Job]) -> pl.DataFrame:
    """The registry as a Polars frame (reference columns first)."""
    rows = []
    for job in jobs:
        row = attrs.asdict(job)
        row["provider"] = job.provider.value
        row["status"] = job.status.value
        rows.append({column: row[column] for column in COLUMNS})
    schema: dict[str, Any] = {c: pl.Utf8 for c in COLUMNS}
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
        """Segments with no batch id yet: ``submit_failed``, or ``intent`` when a create's
        outcome is unknown and resume must reconcile it first."""
        return [job for job in self.jobs if job.batch_id is None]


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
    **provider_options: Any,
) -> SubmitResult:
    """Split ``pairs`` into segments and create one provider batch per segment.

    Same arguments as the reference ``llm_submit_pairs_multi_batch()``; provider options
    (``temperature``, ``reasoning``, ``include_thoughts``, ``thinking_level`` ...) pass
    through as keyword arguments and are validated before anything is written. A segment
    that fails to submit is recorded with ``status="submit_failed"`` (see
    :attr:`SubmitResult.failed`) and the others go on; ``resume_multi_batches`` sends it
    again after checking that no batch for it exists. ``keep_jsonl`` is accepted for the
    reference's signature; as there, request files are only ever deleted by resume.
    """
    provider = Provider.parse(backend)
    if not isinstance(model, str) or not model.strip():
        raise InputError("'model' must be a non-empty string")
    for name, value in (("trait_name", trait_name), ("trait_description", trait_description)):
        if not isinstance(value, str):
            raise InputError(f"'{name}' must be a string")
    if openai_max_retries < 1 or max_tries < 1:
        raise InputError("'openai_max_retries' and 'max_tries' must be at least 1")
    template = validate_template(prompt_template)
    backend_impl = get_backend(provider)
    options = backend_impl.prepare_options(model, provider_options)
    segments = await asyncio.to_thread(_load_segments, pairs, batch_size, n_segments)
    out_dir = (
        Path(output_dir)
        if output_dir is not None
        else Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="pairbatch_"))
    )
    run_tag = new_run_tag()
    await asyncio.to_thread(
        write_settings,
        out_dir,
        {
            "run_tag": run_tag,
            "provider": provider.value,
            "model": model,
            "trait_name": trait_name,
            "options": options,
            "created_at": utcnow().isoformat(),
        },
    )
    jobs: list[Job] = []
    offset = 0
    for index, segment in enumerate(segments, start=1):
        jobs.append(
            Job(
                segment_index=index,
                provider=provider,
                model=model,
                batch_input_path=str(out_dir / f"batch_{index:02d}_input.jsonl"),
                batch_output_path=str(out_dir / f"batch_{index:02d}_output.jsonl"),
                csv_path=str(out_dir / f"batch_{index:02d}_results.csv"),
                pairs_path=str(out_dir / f"batch_{index:02d}_pairs.parquet"),
                status=JobStatus.INTENT,
                n_pairs=segment.height,
                run_tag=run_tag,
                updated_at=utcnow(),
            )
        )
        segments[index - 1] = assign_custom_ids(segment, run_tag, index, offset)
        offset += segment.height

    registry = Registry(out_dir, jobs) if write_registry else None
    if registry is not None:
        # Every intent is on disk before the first create call.
        await asyncio.to_thread(write_registry_file, out_dir, jobs)
    emit = Emitter(on_event, log)
    level = logging.INFO if verbose else logging.DEBUG
    session = Session(
        transport=transport,
        api_keys={provider.value: api_key} if api_key else None,
        base_urls={provider.value: base_url} if base_url else None,
        max_concurrency=max_concurrency,
        rate_limits=rate_limits,
        max_tries={p.value: max_tries for p in Provider} | {"openai": openai_max_retries},
    )
    client = session.client(provider)  # fails fast on a missing key, before any upload

    async def submit_one(job: Job, segment: pl.DataFrame) -> Job:
        try:
            await asyncio.to_thread(write_segment_pairs, segment, job.pairs_path or "")
            await asyncio.to_thread(
                write_request_file,
                backend_impl,
                job.batch_input_path,
                segment,
                model=model,
                template=template,
                trait_name=trait_name,
                trait_description=trait_description,
                options=options,
            )
            log.log(
                level,
                "%s Submitting segment %d of %d (%d pairs) to %s...",
                TAG,
                job.segment_index,
                len(jobs),
                job.n_pairs,
                provider.value,
            )
            batch_id = await create_batch(client, job, Path(job.batch_input_path), options)
        except UnresolvedBatchError as exc:
            # A batch may exist: leave the intent for resume to reconcile, never resend.
            return await failed(job, exc, status=JobStatus.INTENT)
        except (ProviderError, PairbatchError, OSError) as exc:
            return await failed(job, exc)
        job = job.transition(batch_id=batch_id, status=JobStatus.PENDING, submitted_at=utcnow())
        if registry is not None:
            await registry.record(job)
        noun = "name" if provider is Provider.GEMINI else "id"
        log.log(
            level,
            "%s Segment %d: %s batch created (%s = %s). Input path: %s",
            TAG,
            job.segment_index,
            _DISPLAY[provider],
            noun,
            batch_id,
            job.batch_input_path,
        )
        emit(Event(EventKind.SUBMITTED, job, detail=batch_id))
        return job

    async def failed(
        job: Job, exc: BaseException, status: JobStatus = JobStatus.SUBMIT_FAILED
    ) -> Job:
        log.error("%s segment %d failed to submit: %s", TAG, job.segment_index, exc)
        job = job.transition(status=status, error=str(exc))
        if registry is not None:
            await registry.record(job)
        emit(Event(EventKind.SUBMIT_FAILED, job, detail=str(exc)))
        return job

    with verbose_logging(verbose):
        try:
            async with session:
                submitted = await asyncio.gather(
                    *(submit_one(job, seg) for job, seg in zip(jobs, segments, strict=True))
                )
        finally:
            if registry is not None:
                await asyncio.shield(registry.close())
    failures = [job for job in submitted if job.batch_id is None]
    if failures:
        log.error(
            "%s %d of %d segment(s) failed to submit; resume_multi_batches() will retry them",
            TAG,
            len(failures),
            len(submitted),
        )
    return SubmitResult(jobs=list(submitted), output_dir=out_dir, run_tag=run_tag)


def _load_segments(
    pairs: PairsSource, batch_size: int | None, n_segments: int | None
) -> list[pl.DataFrame]:
    table = with_pair_keys(load_pairs(pairs))
    return split_pairs(table, batch_size=batch_size, n_segments=n_segments)


async def create_batch(
    client: BatchClient, job: Job, path: Path, options: Mapping[str, Any], attempts: int = 3
) -> str:
    """Create a segment's batch without ever paying for it twice.

    A create whose outcome is unknown (a timeout or a dropped connection after sending)
    is followed by a look for a batch carrying this job's tag; only when there is none is
    the create sent again.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await client.submit(job, path, options)
        except ProviderError as exc:
            if exc.error_type != "ambiguous":
                raise
            try:
                found = await client.find_batch(job)
            except ProviderError as list_error:
                log.warning(
                    "segment %d: cannot list batches to reconcile: %s",
                    job.segment_index,
                    list_error,
                )
                raise exc from None
            if found is not None:
                log.info(
                    "segment %d: create timed out but batch %s exists; adopted",
                    job.segment_index,
                    found,
                )
                return found
            if attempt == attempts:
                raise
            log.info("segment %d: no batch was created; sending again", job.segment_index)
    raise AssertionError("unreachable")
