"""Merging a registry's two files into one record per segment, and checking the result
against the run's settings (its segments, run tag, and files no two segments share)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import orjson
import polars as pl

from pairbatch.errors import RegistryError
from pairbatch.models import Job
from pairbatch.registry_codec import SETTINGS_NAME, _Read
from pairbatch.registry_fast import Columns


def _merge(csv_records: list[_Read], journal: list[_Read]) -> dict[int, tuple[Job, int, str]]:
    """Per segment, the newest record. A journal line without a rev (older versions)
    is newer than any CSV row and than the lines before it."""
    merged: dict[int, tuple[Job, int, str]] = {}
    seen_csv: set[int] = set()
    for job, rev, where in csv_records:
        if job.segment_index in seen_csv:
            raise RegistryError(
                f"{where}, column 'segment_index': duplicate segment {job.segment_index}"
            )
        seen_csv.add(job.segment_index)
        merged[job.segment_index] = (job, -1 if rev is None else rev, where)
    floor = max((rev for _, rev, _ in merged.values()), default=-1)
    for order, (job, rev, where) in enumerate(journal, start=1):
        effective = floor + order if rev is None else rev
        current = merged.get(job.segment_index)
        if current is None or effective >= current[1]:
            merged[job.segment_index] = (job, effective, where)
    return merged


def _run_segments(output_dir: Path) -> tuple[set[int] | None, set[int], str | None]:
    """The segments, the pending ones (a retry's new segments whose intents may not be
    recorded yet) and the run tag ``run_settings.json`` lists (``None`` if none)."""
    try:
        settings = orjson.loads((output_dir / SETTINGS_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None, set(), None
    if not isinstance(settings, dict):
        return None, set(), None
    segments = settings.get("segments")
    pending = settings.get("pending_segments") or []
    tag = settings.get("run_tag") if isinstance(settings.get("run_tag"), str) else None
    if not isinstance(segments, list) or not all(isinstance(s, int) for s in segments):
        return None, set(), tag
    return set(segments), {s for s in pending if isinstance(s, int)}, tag


def _check_against_run(
    output_dir: Path, merged: Mapping[int, tuple[Job, int, str]], source: Path
) -> None:
    segments, pending, tag = _run_segments(output_dir)
    if segments is not None:
        allowed = segments | pending  # once: per job it made a 100,000-job check quadratic
        for job, _, where in merged.values():
            if job.segment_index not in allowed:
                raise RegistryError(
                    f"{where}: segment {job.segment_index} is not a segment of this run "
                    f"({SETTINGS_NAME} lists {_ranges(segments)})"
                )
        absent = sorted(segments - set(merged))
        if absent:
            raise RegistryError(
                f"{source}: segment(s) {_ranges(absent)} of this run are missing "
                f"({SETTINGS_NAME} lists {_ranges(segments)}); the registry is damaged"
            )
    owners: dict[str, int] = {}
    for job, _, where in merged.values():
        if tag is not None and job.run_tag and job.run_tag != tag:
            raise RegistryError(f"{where}: run tag {job.run_tag!r} is not this run's ({tag!r})")
        for path in (job.batch_input_path, job.pairs_path):
            if path is None:
                continue
            other = owners.setdefault(path, job.segment_index)
            if other != job.segment_index:
                raise RegistryError(
                    f"{where}: segment {job.segment_index} names {Path(path).name}, "
                    f"which is segment {other}'s"
                )


def _ranges(values: Iterable[int]) -> str:
    ordered = sorted(values)
    parts: list[str] = []
    start = prev = None
    for value in [*ordered, None]:
        if value is not None and prev is not None and value == prev + 1:
            prev = value
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = value
    return ", ".join(parts)


def merged_columns(
    output_dir: Path, csv: Columns | None, journal: Columns | None
) -> list[tuple[Job, int]] | None:
    """:func:`_merge` and :func:`_check_against_run` of two columnar reads, by segment,
    building jobs only for the records that win (a snapshot and the journal it was
    written with hold every job twice). ``None`` when anything is out of the ordinary
    (a duplicate row, a foreign segment, a shared file ...): the caller then merges
    record by record, which gives the exact message."""
    csv_segments = csv.fields["segment_index"] if csv else []
    if len(set(csv_segments)) != len(csv_segments):
        return None
    csv_revs = [-1 if r is None else r for r in csv.revs] if csv else []
    floor = max(csv_revs, default=-1)
    journal_revs = list(journal.revs) if journal else []
    if None in journal_revs:
        journal_revs = [floor + n if r is None else r for n, r in enumerate(journal_revs, 1)]
    # Per segment the last record of the highest rev, as _merge's ">=" keeps: sorted by
    # (segment, rev, position), with the journal's positions after the CSV's.
    records = pl.DataFrame(
        {
            "segment": [*csv_segments, *(journal.fields["segment_index"] if journal else [])],
            "rev": [*csv_revs, *journal_revs],
        },
        schema={"segment": pl.Int64, "rev": pl.Int64},
    ).with_row_index("position")
    winners = records.sort("segment", "rev", "position").unique(
        "segment", keep="last", maintain_order=True
    )
    positions = winners.get_column("position").to_list()
    jobs = _winning_jobs(positions, len(csv_revs), csv, journal)
    if not _fits_the_run(output_dir, jobs):
        return None
    return list(zip(jobs, winners.get_column("rev").to_list(), strict=True))


def _winning_jobs(
    positions: list[int], split: int, csv: Columns | None, journal: Columns | None
) -> list[Job]:
    """The jobs at ``positions`` (the CSV's rows, then the journal's lines), in order."""
    from_csv = [p for p in positions if p < split]
    if len(from_csv) == len(positions) and csv is not None:
        return csv.jobs(from_csv)
    from_journal = [p - split for p in positions if p >= split]
    if len(from_journal) == len(positions) and journal is not None:
        return journal.jobs(from_journal)
    assert csv is not None and journal is not None
    csv_jobs, journal_jobs = iter(csv.jobs(from_csv)), iter(journal.jobs(from_journal))
    return [next(csv_jobs) if p < split else next(journal_jobs) for p in positions]


def _fits_the_run(output_dir: Path, jobs: list[Job]) -> bool:
    """Whether :func:`_check_against_run` certainly finds nothing (``False``: it may)."""
    segments, pending, tag = _run_segments(output_dir)
    found = {job.segment_index for job in jobs}
    if segments is not None and (segments - found or not found <= segments | pending):
        return False
    # An empty or missing tag is never checked (``job.run_tag and ...`` there).
    if tag is not None and not {job.run_tag for job in jobs} <= {None, "", tag}:
        return False
    inputs = {job.batch_input_path for job in jobs}
    pairs = [job.pairs_path for job in jobs if job.pairs_path is not None]
    # No file named twice (a job naming one file as both is fine, but rare: checked).
    return len(inputs) == len(jobs) and len(set(pairs)) == len(pairs) and inputs.isdisjoint(pairs)
