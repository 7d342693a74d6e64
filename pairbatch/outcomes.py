"""What a finished job leaves behind, on disk and in memory."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from pathlib import Path

import attrs
import polars as pl

from pairbatch._fs import atomic_writer
from pairbatch.models import Job, JobStatus, utcnow

log = logging.getLogger("pairbatch.outcomes")

BATCH_FAILURE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "segment_index": pl.Int64,
    "provider": pl.Utf8,
    "model": pl.Utf8,
    "batch_id": pl.Utf8,
    "status": pl.Utf8,
    "error_detail": pl.Utf8,
    "failed_at": pl.Datetime("us", "UTC"),
}

_FAILED_STATUSES = (JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELLED)


@attrs.frozen
class JobOutcome:
    """One job's end state: its registry row, parsed results and failures.

    ``results`` is ``None`` when the batch produced nothing usable; ``batch_failure`` is a
    one-row frame when the batch itself ended failed / expired / cancelled (salvaged
    results, if any, are still in ``results``). ``from_disk`` marks outcomes reloaded from
    an earlier run rather than downloaded now.
    """

    job: Job
    results: pl.DataFrame | None
    failed_attempts: pl.DataFrame | None
    batch_failure: pl.DataFrame | None = None
    from_disk: bool = False

    @property
    def ok(self) -> bool:
        return self.job.status is JobStatus.SUCCEEDED


def batch_failure_frame(
    job: Job, status: str, detail: str, at: datetime | None = None
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "segment_index": [job.segment_index],
            "provider": [job.provider.value],
            "model": [job.model],
            "batch_id": [job.batch_id],
            "status": [status],
            "error_detail": [detail],
            "failed_at": [at or utcnow()],
        },
        schema=BATCH_FAILURE_SCHEMA,
    )


def _write_parquet(frame: pl.DataFrame, path: str) -> None:
    with atomic_writer(path) as handle:
        frame.write_parquet(handle)


def _write_csv(frame: pl.DataFrame, path: str) -> None:
    # Reference CSV conventions: NA for missing, ISO-8601 UTC timestamps.
    with atomic_writer(path) as handle:
        frame.write_csv(handle, null_value="NA", datetime_format="%Y-%m-%dT%H:%M:%S%.fZ")


def persist_outcome(
    job: Job,
    results: pl.DataFrame | None,
    failed_attempts: pl.DataFrame | None,
    *,
    write_results_csv: bool,
) -> None:
    """Write a job's frames next to its batch files (before the registry says done)."""
    if results is not None:
        _write_parquet(results, job.results_path)
        if write_results_csv:
            _write_csv(results, job.csv_path)
    else:
        with contextlib.suppress(FileNotFoundError):
            Path(job.results_path).unlink()
    if failed_attempts is not None:
        _write_parquet(failed_attempts, job.failed_path)


def load_outcome(job: Job) -> JobOutcome:
    """Rebuild a done job's outcome from disk, making no provider calls.

    Registries written by the reference have only per-batch CSVs; those are read when
    the Parquet copies are absent.
    """
    results: pl.DataFrame | None = None
    if Path(job.results_path).exists():
        results = pl.read_parquet(job.results_path)
    elif job.csv_path and Path(job.csv_path).exists():
        results = pl.read_csv(job.csv_path, null_values="NA", infer_schema_length=10_000)
    failed = pl.read_parquet(job.failed_path) if Path(job.failed_path).exists() else None
    failure = None
    if job.status in _FAILED_STATUSES:
        status = job.raw_status or job.status.value
        failure = batch_failure_frame(job, status, f"Batch status: {status}", job.updated_at)
    if results is None and failed is None and job.status is JobStatus.SUCCEEDED:
        log.warning(
            "segment %d is marked done but its results files are missing (%s)",
            job.segment_index,
            job.results_path,
        )
    return JobOutcome(job, results, failed, failure, from_disk=True)


def write_combined_csv(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_csv(frame, str(path))


def concat_frames(frames: list[pl.DataFrame]) -> pl.DataFrame | None:
    frames = [f for f in frames if f is not None]
    if not frames:
        return None
    return pl.concat(frames, how="diagonal_relaxed")
