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


def test_paths_are_stored_relative_so_the_folder_can_move(tmp_path: Path) -> None:
    old = tmp_path / "old"
    reg.write_registry(old, [make_job(old, 1)])
    assert "batch_01_input.jsonl" in (old / reg.REGISTRY_NAME).read_text()
    assert str(old) not in (old / reg.REGISTRY_NAME).read_text()
    new = tmp_path / "new"
    old.rename(new)
    (job,) = reg.read_registry(new)
    assert job.batch_output_path == str(new / "batch_01_output.jsonl")


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
    live = reg.Registry(tmp_path, jobs, fold_every=3)
    for k in range(1, 6):
        updated = jobs[k - 1].transition(done=True, status=JobStatus.SUCCEEDED)
        await live.record(updated)
        on_disk = {j.segment_index: j for j in reg.read_registry(tmp_path)}
        assert on_disk[k] == updated
    await live.close()
    assert not live.journal_path.exists()
    assert all(j.done for j in reg.read_registry(tmp_path))


async def test_concurrent_records_are_group_committed(tmp_path: Path) -> None:
    jobs = [make_job(tmp_path, k) for k in range(1, 201)]
    reg.write_registry(tmp_path, jobs)
    live = reg.Registry(tmp_path, jobs, fold_every=10_000)
    appends = 0
    original = live._append

    def counting(batch: list[Job]) -> None:
        nonlocal appends
        appends += 1
        original(batch)

    live._append = counting  # type: ignore[method-assign]
    await asyncio.gather(*(live.record(j.transition(done=True)) for j in jobs))
    assert appends < 20
    assert all(j.done for j in reg.read_registry(tmp_path))
    await live.close()


def test_torn_journal_tail_is_ignored(tmp_path: Path) -> None:
    jobs = [make_job(tmp_path, 1), make_job(tmp_path, 2)]
    reg.write_registry(tmp_path, jobs)
    live = reg.Registry(tmp_path, jobs)
    live._append([jobs[0].transition(done=True)])
    with live.journal_path.open("ab") as handle:
        handle.write(b'{"segment_index": 2, "prov')
    on_disk = reg.read_registry(tmp_path)
    assert on_disk[0].done and not on_disk[1].done


def test_corrupt_journal_middle_is_an_error(tmp_path: Path) -> None:
    jobs = [make_job(tmp_path, 1)]
    reg.write_registry(tmp_path, jobs)
    (tmp_path / reg.JOURNAL_NAME).write_bytes(b"garbage\n{}\n")
    with pytest.raises(RegistryError, match="line 1"):
        reg.read_registry(tmp_path)
