"""Looking after a run folder: a status table of its jobs, and cancelling them."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

import polars as pl

from pairbatch.errors import ProviderError
from pairbatch.models import Job, utcnow
from pairbatch.registry import Registry, read_registry
from pairbatch.session import Session
from pairbatch.transport import Transport

log = logging.getLogger("pairbatch.manage")


def status_table(output_dir: str | os.PathLike[str]) -> pl.DataFrame:
    """One row per job as the registry on disk has it, with its age in minutes."""
    jobs = read_registry(output_dir)
    now = utcnow()
    return pl.DataFrame(
        {
            "segment": [j.segment_index for j in jobs],
            "provider": [j.provider.value for j in jobs],
            "batch_id": [j.batch_id for j in jobs],
            "state": [j.raw_status or j.status.value for j in jobs],
            "status": [j.status.value for j in jobs],
            "done": [j.done for j in jobs],
            "pairs": [j.n_pairs for j in jobs],
            "age_min": [
                round((now - j.submitted_at).total_seconds() / 60, 1) if j.submitted_at else None
                for j in jobs
            ],
            "error": [j.error for j in jobs],
        },
        schema_overrides={"batch_id": pl.Utf8, "error": pl.Utf8, "age_min": pl.Float64},
    )


async def cancel_multi_batches(
    output_dir: str | os.PathLike[str],
    *,
    api_keys: Mapping[str, str] | None = None,
    base_urls: Mapping[str, str] | None = None,
    transport: Transport | None = None,
) -> list[Job]:
    """Ask the provider to cancel every unfinished batch of a run.

    The registry is not marked done: a later resume collects what the cancelled batches
    finished (their partial results are salvaged) and records the rest as failures.
    Returns the jobs a cancel was sent for.
    """
    recorded = await asyncio.to_thread(read_registry, output_dir)
    jobs = [j for j in recorded if not j.done and j.batch_id]
    registry = Registry(output_dir, recorded)
    cancelled: list[Job] = []
    async with Session(transport=transport, api_keys=api_keys, base_urls=base_urls) as session:

        async def cancel(job: Job) -> None:
            assert job.batch_id is not None
            try:
                await session.client(job.provider).cancel(job.batch_id)
            except ProviderError as exc:
                log.warning(
                    "could not cancel segment %d (%s): %s", job.segment_index, job.batch_id, exc
                )
                return
            updated = job.transition(raw_status="cancelling")
            await registry.record(updated)
            cancelled.append(updated)

        await asyncio.gather(*(cancel(job) for job in jobs))
    await registry.close()
    return sorted(cancelled, key=lambda j: j.segment_index)
