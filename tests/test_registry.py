from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pairbatch import registry as reg
from pairbatch.errors import RegistryError
from pairbatch.models import Job, JobStatus, Provider


def make_job(out: Path, k: int, **changes: object) -> Job:
    job = Job(
        segment_index=k,
        provider="openai",
        model="gpt-4.1",
        batch_id=f"batch_{k}",
        batch_input_path=str(out / f"batch_{k:02d}_input.jsonl"),
        batch_output_path=str(out / f"batch_{k:02d}_output.jsonl"),
        csv_path=str(out / f"batch_{k:02d}_results.csv"),
        pairs_path=str(out / f"batch_{k:02d}_pairs.parquet"),
        n_pairs=10,
        run_tag="pbabc",
    )
    return job.transition(**changes) if changes else job


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    jobs = [
        make_job(tmp_path, 1),
        make_job(
            tmp_path,
            2,
            done=True,
            status=JobStatus.FAILED,
            raw_status="failed",
            error='boom, "quoted"\nline',
        ),
        make_job(tmp_path, 3, batch_id=None, status=JobStatus.INTENT, pairs_path=None),
    ]
    path = reg.write_registry(tmp_path, jobs)
    header = path.read_text().splitlines()[0].split(",")
    assert header[:9] == list(reg.REFERENCE_COLUMNS)
    assert reg.read_registry(tmp_path) == jobs
    (tmp_path / reg.JOURNAL_NAME).unlink()  # the CSV alone holds every field too
    assert reg.read_registry(tmp_path) == jobs


def test_paths_are_stored_relative_so_the_folder_can_move(tmp_path: Path) -> None:
    old = tmp_path / "old"
    reg.write_registry(old, [make_job(old, 1)])
    assert "batch_01_input.jsonl" in (old / reg.REGISTRY_NAME).read_text()
    assert str(old) not in (old / reg.REGISTRY_NAME).read_text()
    new = tmp_path / "new"
    old.rename(new)
    (job,) = reg.read_registry(new)
    assert job.batch_output_path == str(new / "batch_01_output.jsonl")


@pytest.mark.parametrize("fast", [True, False])
def test_file_names_starting_with_a_tilde_are_not_home_folders(tmp_path: Path, fast: bool) -> None:
    # (Found by a property test: "./~1" is "~1" to pathlib, whose expanduser then
    # looked for user "1" and raised RuntimeError.)
    out = tmp_path / "run"
    reg.write_registry(out, [make_job(out, 1, csv_path=str(out / "~1"))])
    csv_file = out / reg.REGISTRY_NAME
    assert "./~1" in csv_file.read_text()  # never stored as "~1"

    def read_csv_path() -> str:
        journal = out / reg.JOURNAL_NAME
        data = [csv_file.read_bytes(), journal.read_bytes() if journal.exists() else None]
        ((job, _),) = reg._read_revs(out, *data, fast=fast)
        return job.csv_path

    assert read_csv_path() == str(out / "~1")
    (out / reg.JOURNAL_NAME).unlink()  # the CSV alone from here, edited by hand
    written = csv_file.read_text()
    csv_file.write_text(written.replace("./~1", "~nosuchuser1"))  # an older record
    assert read_csv_path() == str(out / "~nosuchuser1")  # no such user: a file name
    csv_file.write_text(written.replace("./~1", "~/x.csv"))
    assert read_csv_path() == str(Path("~/x.csv").expanduser())  # a home folder


def test_reference_registry_without_our_columns(tmp_path: Path) -> None:
    (tmp_path / reg.REGISTRY_NAME).write_text(
        "segment_index,provider,model,batch_id,batch_input_path,batch_output_path,csv_path,pairs_path,done\n"
        "1,openai,gpt-4.1,batch_1,in.jsonl,out.jsonl,r.csv,NA,FALSE\n"
        "2,Anthropic,claude,msgbatch_2,in2.jsonl,out2.jsonl,r2.csv,p.rds,TRUE\n"
    )
    jobs = reg.read_registry(tmp_path)
    assert [j.provider for j in jobs] == [Provider.OPENAI, Provider.ANTHROPIC]
    assert jobs[0].pairs_path is None and jobs[0].status is JobStatus.PENDING
    assert jobs[1].done and jobs[1].status is JobStatus.SUCCEEDED


HEADER = "segment_index,provider,model,batch_id,batch_input_path,batch_output_path,csv_path,pairs_path,done\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "1,openai,m,b,i,o,c,p,FALSE\n2,mistral,m,b,i,o,c,p,FALSE\n",
            r"row 2, column 'provider'.*mistral",
        ),
        ("1,openai,m,b,i,o,c,p,maybe\n", r"row 1, column 'done'.*not a boolean"),
        ("x,openai,m,b,i,o,c,p,TRUE\n", r"row 1, column 'segment_index'.*not an integer"),
        ("1.5,openai,m,b,i,o,c,p,TRUE\n", r"row 1, column 'segment_index'"),
        ("1,openai,NA,b,i,o,c,p,TRUE\n", r"row 1, column 'model'.*missing"),
        ("1,openai,m,b,i,o,c,p,TRUE\n1,openai,m,b,i,o,c,p,TRUE\n", r"row 2.*duplicate segment"),
    ],
)
def test_malformed_registry_errors_name_row_and_column(
    tmp_path: Path, body: str, message: str
) -> None:
    (tmp_path / reg.REGISTRY_NAME).write_text(HEADER + body)
    with pytest.raises(RegistryError, match=message):
        reg.read_registry(tmp_path)


def test_missing_column_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / reg.REGISTRY_NAME).write_text("segment_index,provider,model\n1,openai,m\n")
    with pytest.raises(RegistryError, match="missing column.*batch_id"):
        reg.read_registry(tmp_path)
    with pytest.raises(RegistryError, match="No registry file found"):
        reg.read_registry(tmp_path / "nowhere")


def test_bad_status_value(tmp_path: Path) -> None:
    reg.write_registry(tmp_path, [make_job(tmp_path, 1)])
    path = tmp_path / reg.REGISTRY_NAME
    path.write_text(path.read_text().replace(",pending,", ",weird,"))
    with pytest.raises(RegistryError, match="column 'status'"):
        reg.read_registry(tmp_path)


def test_crash_mid_write_keeps_the_old_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = [make_job(tmp_path, 1)]
    reg.write_registry(tmp_path, old)
    before = (tmp_path / reg.REGISTRY_NAME).read_bytes()

    def die(*args: object) -> None:
        raise OSError("disk on fire")

    # The rename is the commit point: dying just before it must leave the old file whole.
    monkeypatch.setattr(Path, "replace", die)
    with pytest.raises(OSError, match="disk on fire"):
        reg.write_registry(tmp_path, [make_job(tmp_path, 1, done=True), make_job(tmp_path, 2)])
    assert (tmp_path / reg.REGISTRY_NAME).read_bytes() == before
    assert reg.read_registry(tmp_path) == old
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


async def test_live_registry_is_true_on_disk_after_each_record(tmp_path: Path) -> None:
    jobs = [make_job(tmp_path, k) for k in range(1, 6)]
    reg.write_registry(tmp_path, jobs)
    live = reg.Registry.open(tmp_path)
    live._compact_min = 3
    live._compact_factor = 0.5
    for k in range(1, 6):
        updated = jobs[k - 1].transition(done=True, status=JobStatus.SUCCEEDED)
        await live.record(updated)
        on_disk = {j.segment_index: j for j in reg.read_registry(tmp_path)}
        assert on_disk[k] == updated
    await live.close()
    # Compacted: one line per job, and the CSV snapshot agrees.
    assert live.journal_path.read_bytes().count(b"\n") == 5
    assert all(j.done for j in reg.read_registry(tmp_path))
    (tmp_path / reg.JOURNAL_NAME).unlink()
    assert all(j.done for j in reg.read_registry(tmp_path))


async def test_journal_is_written_without_a_csv(tmp_path: Path) -> None:
    jobs = [make_job(tmp_path, k) for k in range(1, 3)]
    live = reg.Registry(tmp_path, jobs, csv=False)
    live.write_now()
    await live.record(jobs[0].transition(done=True))
    await live.close()
    assert not (tmp_path / reg.REGISTRY_NAME).exists()
    assert reg.read_registry(tmp_path)[0].done


async def test_concurrent_records_are_group_committed(tmp_path: Path) -> None:
    jobs = [make_job(tmp_path, k) for k in range(1, 201)]
    reg.write_registry(tmp_path, jobs)
    live = reg.Registry.open(tmp_path)
    appends = 0
    original = live._append

    def counting(batch: list[tuple[Job, int]]) -> None:
        nonlocal appends
        appends += 1
        original(batch)

    live._append = counting  # type: ignore[method-assign]
    await asyncio.gather(*(live.record(j.transition(done=True)) for j in jobs))
    assert appends < 20
    assert all(j.done for j in reg.read_registry(tmp_path))
    await live.close()


async def test_newer_csv_row_is_not_undone_by_an_older_journal_line(tmp_path: Path) -> None:
    # A compaction writes the journal and the CSV one after the other; whichever is
    # newer per segment wins (by rev), never the order of the files.
    jobs = [make_job(tmp_path, 1)]
    live = reg.Registry(tmp_path, jobs)
    live.write_now()
    await live.record(jobs[0].transition(raw_status="in_progress"))
    stale_journal = live.journal_path.read_bytes()
    await live.record(jobs[0].transition(done=True, status=JobStatus.SUCCEEDED))
    await live.close()
    live.journal_path.write_bytes(stale_journal)  # as if the newest line were lost
    assert reg.read_registry(tmp_path)[0].done


def test_torn_journal_tail_is_ignored_then_cut_by_the_writer(tmp_path: Path) -> None:
    jobs = [make_job(tmp_path, 1), make_job(tmp_path, 2)]
    reg.write_registry(tmp_path, jobs)
    live = reg.Registry.open(tmp_path)
    live._append([(jobs[0].transition(done=True), 5)])
    with live.journal_path.open("ab") as handle:
        handle.write(b'{"segment_index": 2, "prov')
    on_disk = reg.read_registry(tmp_path)
    assert on_disk[0].done and not on_disk[1].done
    # The next writer cuts the fragment away, so its appends start on a line of their own
    # and a second crash cannot glue two records into one bad line.
    again = reg.Registry.open(tmp_path)
    assert not again.journal_path.read_bytes().endswith(b"prov")
    again._append([(jobs[1].transition(done=True), 6)])
    with again.journal_path.open("ab") as handle:
        handle.write(b'{"segment_ind')
    reg.Registry.open(tmp_path)
    assert [j.done for j in reg.read_registry(tmp_path)] == [True, True]


def test_corrupt_journal_middle_is_an_error(tmp_path: Path) -> None:
    jobs = [make_job(tmp_path, 1)]
    reg.write_registry(tmp_path, jobs)
    (tmp_path / reg.JOURNAL_NAME).write_bytes(b"garbage\n{}\n")
    with pytest.raises(RegistryError, match="line 1"):
        reg.read_registry(tmp_path)


def _settings(folder: Path, segments: list[int]) -> None:
    import orjson

    (folder / reg.SETTINGS_NAME).write_bytes(
        orjson.dumps({"format": 2, "run_tag": "pbabc", "segments": segments})
    )


def test_cut_csv_is_an_error_naming_the_row_and_never_rewritten(tmp_path: Path) -> None:
    jobs = [make_job(tmp_path, k) for k in range(1, 5)]
    reg.write_registry(tmp_path, jobs)
    (tmp_path / reg.JOURNAL_NAME).unlink()
    path = tmp_path / reg.REGISTRY_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # cut inside the last row
    with pytest.raises(RegistryError, match=r"row 4"):
        reg.read_registry(tmp_path)
    # Cut at a row boundary: the run settings know there were four segments.
    lines = data.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]))
    _settings(tmp_path, [1, 2, 3, 4])
    with pytest.raises(RegistryError, match=r"segment\(s\) 3-4 of this run are missing"):
        reg.read_registry(tmp_path)
    assert path.read_bytes() == b"".join(lines[:3])


def test_binary_registry_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / reg.REGISTRY_NAME).write_bytes(b"segment_index,provider\n\xff\xfe\x00\x01")
    with pytest.raises(RegistryError, match="jobs_registry.csv: line 2 is not UTF-8"):
        reg.read_registry(tmp_path)


def test_journal_record_for_an_unknown_segment_is_an_error(tmp_path: Path) -> None:
    import orjson

    jobs = [make_job(tmp_path, k) for k in range(1, 3)]
    reg.write_registry(tmp_path, jobs)
    _settings(tmp_path, [1, 2])
    record = orjson.loads((tmp_path / reg.JOURNAL_NAME).read_bytes().splitlines()[0])
    record["segment_index"] = 7
    with (tmp_path / reg.JOURNAL_NAME).open("ab") as handle:
        handle.write(orjson.dumps(record) + b"\n")
    with pytest.raises(RegistryError, match=r"line 3: segment 7 is not a segment of this run"):
        reg.read_registry(tmp_path)
    # Without settings, the shared file still gives it away.
    (tmp_path / reg.SETTINGS_NAME).unlink()
    with pytest.raises(RegistryError, match=r"segment 7 names batch_01_input.jsonl"):
        reg.read_registry(tmp_path)
