"""The columnar registry reader gives exactly what the careful row reader gives: the same
jobs (same values, same types) for any registry, the same error text for any damage."""

from __future__ import annotations

import csv
import io
import sys
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pairbatch import registry as reg
from pairbatch.errors import RegistryError
from pairbatch.models import FileCheck, Job, JobStatus, Provider
from pairbatch.registry_codec import _csv_bytes, _csv_text, _journal_bytes
from pairbatch.registry_columns import PY_SPACES
from pairbatch.registry_fast import read_csv_fast, read_journal_fast

TRICKY = [
    *(",", '"', "\n", "\r", "\r\n", "", " ", "\t", "\x1c", "\u00a0", "\u2028", "é", "€", "𝄞"),
    *("NA", "na", " NA ", "NULL", "None", "nan", "Nan\t", "none\u00a0", "N/A", "NAN!"),
    *("TRUE", "yes", "0", "1.0", " 5", "-3", "+4", "1e3", "2026-01-01T00:00:00Z"),
    *('a "quoted", text', "line\nbreak", "cr\ronly", "[]", "{}", "x" * 40),
]
text = st.one_of(
    st.sampled_from(TRICKY),
    st.text(st.sampled_from(list(',"\n\r \tNnAa1é€\u00a0\x1c/.~')), max_size=8),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
)
maybe_text = st.none() | text
path_text = st.one_of(
    st.sampled_from(["in.jsonl", "sub/b.jsonl", "/abs/x.jsonl", "~/h.jsonl", "./d.jsonl"]),
    st.sampled_from(["a/./b", "a/../b", "dir/", "a//b", ".", "..", "..x", "a/.", "x\n/."]),
    text,
    # "~name" for a user that does not exist is a RuntimeError in pathlib, in both readers.
).filter(lambda p: not p.startswith("~") or p.startswith("~/"))
moment = st.none() | st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)
).flatmap(
    lambda d: st.sampled_from(
        [d, d.replace(tzinfo=UTC), d.replace(tzinfo=timezone(timedelta(hours=-5, minutes=-30)))]
    )
)
file_check = st.builds(
    FileCheck,
    name=text,
    size=st.integers(-(2**40), 2**62),
    rows=st.none() | st.integers(0, 10**9),
    sha256=st.none() | text,
)


@st.composite
def jobs(draw: st.DrawFn) -> list[Job]:
    indexes = draw(st.lists(st.integers(-5, 10**6), min_size=1, max_size=6, unique=True))
    out = []
    for k in indexes:
        out.append(
            Job(
                segment_index=k,
                provider=draw(st.sampled_from(Provider)),
                model=draw(text),
                batch_id=draw(maybe_text),
                batch_input_path=draw(path_text) + f"_{k}_in",
                batch_output_path=draw(path_text),
                csv_path=draw(path_text),
                pairs_path=draw(st.none() | path_text.map(lambda p, k=k: f"{p}_{k}_pairs")),
                done=draw(st.booleans()),
                status=draw(st.sampled_from(JobStatus)),
                raw_status=draw(maybe_text),
                n_pairs=draw(st.integers(-(10**16), 10**16)),
                run_tag=draw(st.sampled_from(["", "pbabc"]) | text),
                submitted_at=draw(moment),
                updated_at=draw(moment),
                error=draw(maybe_text),
                files=draw(st.lists(file_check, max_size=3)),
            )
        )
    return out


def _outcome(folder: Path, data: tuple[bytes | None, bytes | None], fast: bool) -> object:
    try:
        read = reg._read_revs(folder, *data, fast=fast)
    except RegistryError as exc:
        return ("error", str(exc))
    # repr as well as ==: equal datetimes with other tzinfo objects, or a str where an
    # enum belongs, compare equal but are not the same result.
    return ("ok", read, repr(read))


def _same_both_ways(folder: Path, csv_data: bytes | None, journal: bytes | None) -> object:
    careful = _outcome(folder, (csv_data, journal), fast=False)
    assert _outcome(folder, (csv_data, journal), fast=True) == careful
    return careful


def _files(
    folder: Path, listed: list[Job], later: list[Job], revs: bool = True
) -> tuple[bytes, bytes]:
    """A snapshot of ``listed`` at rev 0, and a journal of it and of ``later`` after it
    (without revs unless ``revs``, as older versions wrote)."""
    numbered = [(job, 0) for job in listed]
    csv_data = _csv_bytes(numbered, folder)
    moves = _journal_bytes([(job, rev) for rev, job in enumerate(later, start=1)], folder)
    if not revs:
        lines = [orjson.loads(line) for line in moves.splitlines()]
        moves = b"".join(orjson.dumps({**r, "rev": None}) + b"\n" for r in lines)
    return csv_data, _journal_bytes(numbered, folder) + moves


def _settings(folder: Path, listed: list[Job], data: st.DataObject) -> None:
    """Sometimes a run_settings.json: the segments, one left out or one extra, a tag."""
    segments = [job.segment_index for job in listed]
    change = data.draw(st.sampled_from(["none", "same", "fewer", "more", "pending"]))
    if change == "none":
        return
    if change == "fewer":
        segments = segments[1:]
    settings = {
        "segments": [*segments, 10**7] if change == "more" else segments,
        "pending_segments": segments[:1] if change == "pending" else [],
        "run_tag": data.draw(st.sampled_from(["pbabc", ""]) | text),
    }
    (folder / reg.SETTINGS_NAME).write_bytes(orjson.dumps(settings))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(listed=jobs(), later=st.lists(st.integers(0, 5), max_size=4), data=st.data())
def test_fast_and_careful_readers_agree(
    listed: list[Job], later: list[int], data: st.DataObject
) -> None:
    changed = [
        listed[i % len(listed)].transition(error=data.draw(maybe_text), done=True) for i in later
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _settings(folder, listed, data)
        csv_data, journal = _files(folder, listed, changed, revs=data.draw(st.booleans()))
        _same_both_ways(folder, csv_data, None)
        _same_both_ways(folder, None, journal)
        _same_both_ways(folder, csv_data, journal)


def _csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode())))


DAMAGE = [
    ("segment_index", "x1"),
    ("segment_index", "1.5"),
    ("segment_index", "NA"),
    ("n_pairs", "ten"),
    ("rev", "9.5"),
    ("provider", "mistral"),
    ("status", "weird"),
    ("done", "maybe"),
    ("submitted_at", "2026-13-01T00:00:00"),
    ("files", '[{"name": "a"}]'),
    ("files", "[1, 2]"),
    ("model", None),  # the column is gone
    ("batch_input_path", None),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(listed=jobs(), damage=st.sampled_from(DAMAGE), data=st.data())
def test_damaged_csv_gives_the_careful_error(
    listed: list[Job], damage: tuple[str, str | None], data: st.DataObject
) -> None:
    column, value = damage
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = _csv_rows(_csv_bytes([(job, 0) for job in listed], folder))
        at = rows[0].index(column)
        if value is None:
            rows = [row[:at] + row[at + 1 :] for row in rows]
        else:
            rows[data.draw(st.integers(1, len(rows) - 1))][at] = value
        outcome = _same_both_ways(folder, _csv_text(rows).encode(), None)
        assert outcome[0] == "error"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(listed=jobs(), damage=st.sampled_from(DAMAGE), data=st.data())
def test_damaged_journal_gives_the_careful_error(
    listed: list[Job], damage: tuple[str, str | None], data: st.DataObject
) -> None:
    column, value = damage
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        records = [orjson.loads(line) for line in _files(folder, listed, [])[1].splitlines()]
        record = records[data.draw(st.integers(0, len(records) - 1))]
        if value is None:
            del record[column]
        elif column == "files":
            record[column] = orjson.loads(value)
        else:
            record[column] = value
        journal = b"".join(orjson.dumps(r) + b"\n" for r in records)
        outcome = _same_both_ways(folder, None, journal)
        assert outcome[0] == "error"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(listed=jobs(), data=st.data())
def test_torn_journal_line_in_the_middle_gives_the_careful_error(
    listed: list[Job], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lines = _files(folder, listed, listed)[1].splitlines(keepends=True)
        at = data.draw(st.integers(0, len(lines) - 2))
        lines[at] = lines[at][: data.draw(st.integers(1, len(lines[at]) - 2))] + b"\n"
        outcome = _same_both_ways(folder, None, b"".join(lines))
        # The torn line's own error, unless a line before it has one (odd text can be NA).
        assert outcome[0] == "error"


def test_the_fast_reader_takes_an_ordinary_registry(tmp_path: Path) -> None:
    """It must not quietly decline the registries pairbatch writes, odd text and all."""
    jobs = [
        Job(
            segment_index=k,
            provider="gemini",
            model="m",
            batch_input_path=str(tmp_path / f"b{k}_in.jsonl"),
            batch_output_path=f"/elsewhere/b{k}_out.jsonl",
            csv_path=str(tmp_path / f"b{k}.csv"),
            error='a, "b"\nc' if k % 2 else None,
            submitted_at=datetime(2026, 12, 2, tzinfo=UTC),
            files=(FileCheck("x", 5, 2, "ab"),),
        )
        for k in range(1, 40)
    ]
    reg.write_registry(tmp_path, jobs)
    csv_data = reg.registry_path(tmp_path).read_bytes()
    journal = reg.journal_path(tmp_path).read_bytes()
    assert read_csv_fast(reg.registry_path(tmp_path), csv_data) is not None
    assert read_journal_fast(reg.journal_path(tmp_path), tmp_path, journal) is not None
    assert reg.read_registry(tmp_path) == jobs


@pytest.mark.parametrize("cell", ["cr\ronly", "cr at end\r", "x\r\ny"])
def test_a_lone_carriage_return_is_quoted_and_read_back(tmp_path: Path, cell: str) -> None:
    job = Job(
        segment_index=1,
        provider="openai",
        model="m",
        batch_input_path="i",
        batch_output_path="o",
        csv_path="c",
        error=cell,
    )
    reg.write_registry(tmp_path, [job])
    reg.journal_path(tmp_path).unlink()
    (read,) = reg.read_registry(tmp_path)
    assert read.error == cell


def test_the_whitespace_list_is_pythons() -> None:
    assert {c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()} == set(PY_SPACES)
