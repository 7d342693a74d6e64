"""Merging a registry's two files into one record per segment, and checking the result
against the run's settings (its segments, run tag, and files no two segments share)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import orjson

from pairbatch.errors import RegistryError
from pairbatch.models import Job
from pairbatch.registry_codec import SETTINGS_NAME, _Read


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
