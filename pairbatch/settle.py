"""Settling a finished batch on disk: parse, normalise, persist (blocking; worker thread).

Also the segment files a resend needs: the stored pairs, checked against what submit
wrote, and the request file rebuilt from them when it is missing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from pairbatch.chunked import Segment, settle_chunked
from pairbatch.errors import InputError, first_line
from pairbatch.integrity import DamagedFileError, describe, verify
from pairbatch.models import BatchState, BatchStatus, FileCheck, Job, utcnow
from pairbatch.normalize import empty_failed, failed_attempts_from_pairs, normalize_results
from pairbatch.normalize_rows import clean_results
from pairbatch.outcomes import batch_failure_frame, concat_frames, persist_outcome, sink_csv
from pairbatch.pairs import read_segment_pairs
from pairbatch.providers import get_backend
from pairbatch.providers.base import BackendBase, Downloaded, write_request_file
from pairbatch.results import iter_row_chunks, rows_to_frame
from pairbatch.settings import SETTINGS_NAME

if TYPE_CHECKING:
    from pairbatch.drive import ResumeOptions

log = logging.getLogger("pairbatch.resume")

TAG = "[resume_multi_batches]"


def rebuild_request_file(job: Job, settings: Mapping[str, Any], pairs: pl.DataFrame) -> FileCheck:
    """Write a segment's request file again from its stored pairs and the run settings:
    the same bytes submit wrote (blocking)."""
    needed = ("prompt_template", "trait_name", "trait_description", "options", "model")
    absent = [k for k in needed if k not in settings]
    if absent:
        raise InputError(
            f"segment {job.segment_index}: request file {job.batch_input_path} is missing and "
            f"cannot be rebuilt: {SETTINGS_NAME} has no {', '.join(absent)}"
        )
    write_request_file(
        get_backend(job.provider),
        job.batch_input_path,
        pairs,
        model=job.model,
        template=str(settings["prompt_template"]),
        trait_name=str(settings["trait_name"]),
        trait_description=str(settings["trait_description"]),
        options=dict(settings["options"]),
    )
    return describe(job.batch_input_path, rows=pairs.height, hashed=True)


def _delete_jsonl(job: Job) -> None:
    for path in (job.batch_input_path, job.batch_output_path, job.error_output_path):
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()


def settle(
    job: Job, status: BatchStatus, downloaded: Downloaded | None, options: ResumeOptions
) -> tuple[pl.DataFrame | None, pl.DataFrame, pl.DataFrame | None, tuple[FileCheck, ...]]:
    """Parse, normalise and persist a terminal batch (blocking; run in a worker thread).

    Returns its results (``None`` when the batch produced none), failed attempts, for a
    batch that did not succeed its one-row batch failure, and the records of the files
    written.
    """
    pairs = segment_pairs(job)
    received_at = utcnow()
    word = status.outcome
    results: pl.DataFrame | None = None
    batch_status = None if status.state is BatchState.SUCCEEDED else word
    files: tuple[FileCheck, ...] = ()
    backend = get_backend(job.provider)
    if (
        downloaded is not None
        and isinstance(backend, BackendBase)
        and "custom_id" in pairs.columns
        and _is_big(downloaded)
    ):
        results, failed, files = _settle_big(
            job, status, downloaded, options, pairs, received_at, backend
        )
    elif downloaded is not None:
        results, failed = _normalized(
            job, status, downloaded, options, pairs, received_at, batch_status, backend
        )
    else:
        failed = failed_attempts_from_pairs(
            pairs,
            backend=job.provider.value,
            model=job.model,
            error_code="http_error",
            error_detail=failure_detail(status),
            attempted_at=received_at,
            segment_index=job.segment_index,
            batch_id=job.batch_id,
        )
    failure = None
    if status.state is not BatchState.SUCCEEDED:
        detail = failure_detail(status)
        if results is not None and results.height:
            detail += f" ({results.height} of {pairs.height} results salvaged)"
        failure = batch_failure_frame(job, word, detail, received_at)
    if not files:
        files = persist_outcome(
            job,
            results,
            failed,
            write_results_csv=options.write_results_csv and results is not None,
        )
    if status.state is BatchState.SUCCEEDED and not options.keep_jsonl:
        _delete_jsonl(job)
    return results, failed, failure, files


def failure_detail(status: BatchStatus) -> str:
    """``Batch status: failed``, with the provider's own reason when it gave one."""
    detail = f"Batch status: {status.outcome}"
    return f"{detail} ({status.error})" if status.error else detail


# From this size on a results file is parsed a block at a time (pairbatch.chunked): below
# it the in-memory path's fewer, larger Polars calls are cheaper, and its peak (about
# 1.7x the file's size, measured) is bounded by the threshold.
BIG_RESULTS_BYTES = 32 << 20


def _is_big(downloaded: Downloaded) -> bool:
    size = 0
    for path in (downloaded.output_path, downloaded.error_path):
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                size += Path(path).stat().st_size
    return size >= BIG_RESULTS_BYTES


def _settle_big(
    job: Job,
    status: BatchStatus,
    downloaded: Downloaded,
    options: ResumeOptions,
    pairs: pl.DataFrame,
    received_at: datetime,
    backend: BackendBase,
) -> tuple[pl.DataFrame, pl.DataFrame, tuple[FileCheck, ...]]:
    """Parse, normalise and write a big file chunk by chunk; the frames the caller
    gets are then read back from the files written."""
    paths = [downloaded.output_path, downloaded.error_path]
    if downloaded.output_path is None:
        paths = [downloaded.error_path]
    segment = Segment(
        pairs=pairs,
        backend=job.provider.value,
        model=job.model,
        segment_index=job.segment_index,
        batch_id=job.batch_id,
        received_at=received_at,
        batch_status=None if status.state is BatchState.SUCCEEDED else status.outcome,
        tag_prefix=options.tag_prefix,
        tag_suffix=options.tag_suffix,
    )
    settled = settle_chunked(
        paths,
        backend.parse_line,
        backend.fast_line,
        segment,
        results_path=job.results_path,
        failed_path=job.failed_path,
    )
    _reconcile_counts(job, status, settled.lines)
    files = [settled.results]
    if options.write_results_csv:
        files.append(sink_csv(job.results_path, job.csv_path))
    files.append(settled.failed_attempts)
    results = pl.read_parquet(job.results_path)
    return results, pl.read_parquet(job.failed_path), tuple(files)


def segment_pairs(job: Job) -> pl.DataFrame:
    """The segment's stored pairs, checked against what submit wrote."""
    if not job.pairs_path:
        raise InputError(
            f"Missing pair data for segment {job.segment_index}; unable to normalize results."
        )
    path = Path(job.pairs_path)
    remedy = "restore it from a backup (its pairs cannot be matched to results without it)"
    try:
        # Read once: the same bytes are parsed and checked against the record.
        data = path.read_bytes()
        pairs = read_segment_pairs(path, data)
    except (InputError, FileNotFoundError):
        raise DamagedFileError(path, "the file is missing", remedy) from None
    except (OSError, pl.exceptions.PolarsError) as exc:
        first = first_line(exc)
        raise DamagedFileError(path, f"cannot be read ({first})", remedy) from None
    verify(path, job.file_check(path), rows=pairs.height, remedy=remedy, data=data)
    if job.n_pairs and pairs.height != job.n_pairs:
        raise DamagedFileError(
            path, f"holds {pairs.height} pairs but the segment has {job.n_pairs}", remedy
        )
    return pairs


def _normalized(
    job: Job,
    status: BatchStatus,
    downloaded: Downloaded,
    options: ResumeOptions,
    pairs: pl.DataFrame,
    received_at: datetime,
    batch_status: str | None,
    backend: Any,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Results and failed attempts of a downloaded batch below the chunked path's size:
    straight from the rows for a clean segment, else by the general normaliser."""
    prefix, suffix = options.tag_prefix, options.tag_suffix
    if isinstance(backend, BackendBase):
        paths = [downloaded.output_path, downloaded.error_path]
        rows = [
            row
            for chunk in iter_row_chunks(paths, backend.parse_line, backend.fast_line)
            for row in chunk
        ]
        _reconcile_counts(job, status, len(rows))
        clean = clean_results(
            rows,
            pairs,
            backend=job.provider.value,
            model=job.model,
            segment_index=job.segment_index,
            batch_id=job.batch_id,
            received_at=received_at,
            tag_prefix=prefix,
            tag_suffix=suffix,
        )
        if clean is not None:
            return clean, empty_failed()
        raw = rows_to_frame(rows, tag_prefix=prefix, tag_suffix=suffix)
    else:
        raw = _parse(backend, downloaded, prefix, suffix)
        _reconcile_counts(job, status, raw.height)
    normalized = normalize_results(
        raw,
        pairs,
        backend=job.provider.value,
        model=job.model,
        segment_index=job.segment_index,
        batch_id=job.batch_id,
        received_at=received_at,
        batch_status=batch_status,
    )
    return normalized.results, normalized.failed_attempts


def _parse(backend: Any, downloaded: Downloaded, prefix: str, suffix: str) -> pl.DataFrame:
    frames = []
    if downloaded.output_path is not None:
        frames.append(
            backend.parse_results(
                downloaded.output_path,
                error_path=downloaded.error_path,
                tag_prefix=prefix,
                tag_suffix=suffix,
            )
        )
    elif downloaded.error_path is not None:
        # A completed OpenAI batch whose every request failed has only an error file.
        frames.append(
            backend.parse_results(
                downloaded.error_path, error_path=None, tag_prefix=prefix, tag_suffix=suffix
            )
        )
    frame = concat_frames(frames)
    if frame is None:
        frame = backend.parse_results(None, error_path=None, tag_prefix=prefix, tag_suffix=suffix)
    return frame


def _reconcile_counts(job: Job, status: BatchStatus, lines: int) -> None:
    counts = status.counts
    expected = None
    if counts.succeeded is not None or counts.failed is not None:
        expected = (counts.succeeded or 0) + (counts.failed or 0)
    if status.state is BatchState.SUCCEEDED and counts.total is not None:
        expected = counts.total
    if expected is not None and expected != lines:
        log.warning(
            "%s segment %d: provider reports %d finished requests but %d result lines were "
            "downloaded",
            TAG,
            job.segment_index,
            expected,
            lines,
        )
