"""Never pay twice, never lose a pair: the run folder under misuse and crashes.

Writers run as real processes (the ``pairbatch`` console script) against an emulator served
from the test process; kills are SIGKILLs at named points (``PAIRBATCH_CRASH_AT``), so
nothing of the killed process's cleanup runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import polars as pl
import pytest

import pairbatch
from pairbatch import registry as reg
from pairbatch.lock import LOCK_NAME, RunLock
from pairbatch.models import JobStatus
from pairbatch.testing import FaultConfig, ProviderEmulator
from tests.engine_helpers import MODELS, check_run, credentials, study_pairs, submit_to
from tests.test_cli import run_cli

TRAIT = ["--trait", "overall_quality"]


def submit_args(provider: str, pairs_csv: Path, out: Path, n: int = 3) -> list[str | Path]:
    return [
        "submit",
        pairs_csv,
        "--backend",
        provider,
        "--model",
        MODELS[provider],
        *TRAIT,
        "--n-segments",
        str(n),
        "--output-dir",
        out,
    ]


def write_pairs(tmp_path: Path, n: int = 9, seed: int = 3) -> tuple[Path, pl.DataFrame]:
    pairs = study_pairs(n, seed=seed)
    path = tmp_path / "pairs.csv"
    pairs.write_csv(path)
    return path, pairs


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != LOCK_NAME}


async def resume_in_process(emu: ProviderEmulator, out: Path) -> pairbatch.ResumeResult:
    return await pairbatch.resume_multi_batches(
        output_dir=out,
        interval_seconds=0.05,
        **credentials(emu),  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------- one writer


async def test_two_resumes_at_once_pay_once_and_one_is_refused(tmp_path: Path) -> None:
    path, pairs = write_pairs(tmp_path)
    out = tmp_path / "run"
    async with ProviderEmulator(latency=2.0) as emu:
        env = emu.env()
        # Every intent recorded, no create sent: both resumes would have to create.
        killed = await run_cli(
            *submit_args("openai", path, out), env=env | {"PAIRBATCH_CRASH_AT": "submit:intents"}
        )
        assert killed.rc == -signal.SIGKILL
        assert all(j.status is JobStatus.INTENT for j in reg.read_registry(out))
        flags = ["--interval-seconds", "0.1", "--no-progress"]
        first, second = await asyncio.gather(
            run_cli("resume", out, *flags, env=env), run_cli("resume", out, *flags, env=env)
        )
        assert emu.stats.batches_created["openai"] == 3
    outcomes = sorted([first, second], key=lambda r: r.rc)
    assert outcomes[0].rc == 0, outcomes[0].stderr
    assert outcomes[1].rc == 1
    refusal = outcomes[1].stderr.strip().splitlines()
    assert len(refusal) == 1 and "is being written by PID" in refusal[0], refusal
    assert "(resume)" in refusal[0]
    check_run(await resume_after(out), pairs)


async def resume_after(out: Path) -> pairbatch.ResumeResult:
    """A finished run resumes with no provider calls at all (no emulator needed)."""
    return await pairbatch.resume_multi_batches(output_dir=out, api_keys={"openai": "x"})


async def test_resume_while_submit_creates_is_refused(tmp_path: Path) -> None:
    path, pairs = write_pairs(tmp_path)
    out = tmp_path / "run"
    slow = FaultConfig(slow_rate=1.0, slow_seconds=1.5, slow_endpoints={"batches.create"})
    async with ProviderEmulator(latency=0.2, faults={"openai": slow}) as emu:
        env = emu.env()
        submit = asyncio.ensure_future(run_cli(*submit_args("openai", path, out), env=env))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if reg.holds_registry(out):
                break
        refused = await run_cli("resume", out, "--no-progress", env=env)
        assert refused.rc == 1
        assert "is being written by PID" in refused.stderr and "(submit)" in refused.stderr
        done = await submit
        assert done.rc == 0, done.stderr
        emu.set_faults("openai", None)
        result = await resume_in_process(emu, out)
        assert emu.stats.batches_created["openai"] == 3
    check_run(result, pairs)


async def test_submit_into_a_folder_holding_a_run_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    path, _ = write_pairs(tmp_path)
    out = tmp_path / "run"
    async with ProviderEmulator(latency=5.0) as emu:
        env = emu.env()
        assert (await run_cli(*submit_args("openai", path, out), env=env)).rc == 0
        before = snapshot(out)
        again = await run_cli(*submit_args("openai", path, out), env=env)
        assert again.rc == 2
        assert again.stderr.count("\n") == 1 and "already holds a run" in again.stderr
        # Not even with --overwrite while its batches run; and a missing key fails first.
        forced = await run_cli(*submit_args("openai", path, out), "--overwrite", env=env)
        assert forced.rc == 2 and "overwrite refused, 3 batch(es)" in forced.stderr
        no_key = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
        keyless = await run_cli(*submit_args("openai", path, out), env=no_key)
        assert keyless.rc == 2 and "No API key found" in keyless.stderr
        assert snapshot(out) == before
        assert emu.stats.batches_created["openai"] == 3


async def test_a_submit_that_fails_validation_writes_nothing(tmp_path: Path) -> None:
    path, _ = write_pairs(tmp_path)
    out = tmp_path / "new-run"
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}
    ran = await run_cli(*submit_args("openai", path, out), env=env)  # no key
    assert ran.rc == 2 and "No API key found" in ran.stderr
    bad = await run_cli(
        *submit_args("openai", path, out),
        "--option",
        "temperature=9",
        env=env | {"OPENAI_API_KEY": "k"},
    )
    assert bad.rc == 2 and "temperature" in bad.stderr
    assert not out.exists()


# ---------------------------------------------------------------- kill anywhere

_ALL_POINTS = [
    *(f"submit:{what}:{k}" for what in ("pairs", "requests") for k in (1, 2, 3)),
    "submit:settings",
    "submit:intents",
    *(f"create:{when}:{k}" for when in ("before", "after", "recorded") for k in (1, 2, 3)),
]
# Every point for Anthropic, whose batches cannot be proven while they run (the hardest
# reconciliation); one point of each phase for the other two (CI time).
_EACH_PHASE = [
    "submit:pairs:2",
    "submit:requests:3",
    "submit:settings",
    "submit:intents",
    "create:before:2",
    "create:after:2",
    "create:recorded:2",
]
CASES = [("anthropic", p) for p in _ALL_POINTS] + [
    (provider, p) for provider in ("openai", "gemini") for p in _EACH_PHASE
]


@pytest.mark.parametrize(("provider", "point"), CASES)
async def test_kill_at_any_point_of_submit_then_resume_pays_once_and_judges_every_pair(
    tmp_path: Path, provider: str, point: str
) -> None:
    path, pairs = write_pairs(tmp_path)
    out = tmp_path / "run"
    async with ProviderEmulator(latency=0.2) as emu:
        env = emu.env()
        killed = await run_cli(
            *submit_args(provider, path, out), env=env | {"PAIRBATCH_CRASH_AT": point}
        )
        assert killed.rc == -signal.SIGKILL, killed.stderr
        if not reg.holds_registry(out):
            # Killed before any intent: nothing was sent, and submitting again is allowed.
            assert emu.stats.batches_created[provider] == 0
            again = await run_cli(*submit_args(provider, path, out), env=env)
            assert again.rc == 0, again.stderr
        result = await resume_in_process(emu, out)
        assert emu.stats.batches_created[provider] == 3
    assert result.all_done
    check_run(result, pairs)
    assert not [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".part"))]


async def test_torn_journal_then_a_second_crash_still_resumes(tmp_path: Path) -> None:
    pairs = study_pairs(12, seed=5)
    async with ProviderEmulator(latency=(0.3, 3.0), seed=8) as emu:
        creds = credentials(emu)
        await submit_to(emu, "openai", pairs, tmp_path, n_segments=4)
        journal = tmp_path / reg.JOURNAL_NAME
        with journal.open("ab") as handle:
            handle.write(b'{"segment_index": 2, "provi')  # a crash mid-append
        await pairbatch.resume_multi_batches(
            output_dir=tmp_path,
            interval_seconds=0.05,
            timeout=0.5,
            **creds,  # type: ignore[arg-type]
        )
        with journal.open("ab") as handle:
            handle.write(b'{"segment_ind')  # and another, after more records
        result = await resume_in_process(emu, tmp_path)
        assert emu.stats.batches_created["openai"] == 4
    check_run(result, pairs)


# ---------------------------------------------------------------- damage is named


@pytest.fixture
async def finished_run(tmp_path: Path) -> tuple[Path, pl.DataFrame]:
    pairs = study_pairs(9, seed=1)
    async with ProviderEmulator(latency=0.1) as emu:
        await submit_to(emu, "openai", pairs, tmp_path / "run", n_segments=3, write_registry=True)
        await resume_in_process(emu, tmp_path / "run")
    return tmp_path / "run", pairs


async def test_deleted_results_of_a_done_job_is_named_and_can_be_fetched_again(
    tmp_path: Path,
) -> None:
    pairs = study_pairs(9, seed=1)
    out = tmp_path / "run"
    async with ProviderEmulator(latency=0.1) as emu:
        creds = credentials(emu)
        await submit_to(emu, "openai", pairs, out, n_segments=3)
        await resume_in_process(emu, out)
        (out / "batch_02_results.parquet").unlink()
        before = snapshot(out)
        damaged = await resume_in_process(emu, out)
        assert not damaged.all_done
        (error,) = damaged.errors
        assert "batch_02_results.parquet: the file is missing" in error
        assert "--redownload 2" in error
        assert damaged.combined.height == 6  # the other jobs go on
        assert snapshot(out) == before  # nothing "repaired" into loss
        cli = await run_cli("resume", out, "--no-progress", env=emu.env())
        assert cli.rc == 1 and "batch_02_results.parquet" in cli.stderr
        # A segment the run does not have is a typo, not "fetch nothing".
        before = snapshot(out)  # the CLI's resume wrote the registry CSV
        cli = await run_cli("resume", out, "--redownload", "2,7", env=emu.env())
        assert cli.rc == 2 and "segment(s) 7 not in this run (segments 1-3)" in cli.stderr
        assert snapshot(out) == before
        fetched = await pairbatch.resume_multi_batches(
            output_dir=out,
            interval_seconds=0.05,
            redownload=[2],
            **creds,  # type: ignore[arg-type]
        )
    assert fetched.all_done
    check_run(fetched, pairs)


async def test_garbled_results_parquet_is_one_line_naming_the_file(
    finished_run: tuple[Path, pl.DataFrame],
) -> None:
    out, _ = finished_run
    target = out / "batch_01_results.parquet"
    target.write_bytes(target.read_bytes()[:100] + b"\0" * 50)
    before = snapshot(out)
    result = await resume_after(out)
    (error,) = result.errors
    assert error.startswith(str(target)) and "\n" not in error
    assert snapshot(out) == before


def _registry_only_csv(out: Path) -> Path:
    (out / reg.JOURNAL_NAME).unlink()
    return out / reg.REGISTRY_NAME


async def test_cut_registry_is_an_error_and_never_rewritten(
    finished_run: tuple[Path, pl.DataFrame],
) -> None:
    out, _ = finished_run
    csv_path = _registry_only_csv(out)
    data = csv_path.read_bytes()
    csv_path.write_bytes(data[: len(data) // 2])
    before = snapshot(out)
    with pytest.raises(pairbatch.RegistryError, match="jobs_registry.csv: row"):
        await resume_after(out)
    ran = await run_cli("resume", out, "--no-progress")
    assert ran.rc == 2 and ran.stderr.count("\n") == 1 and "jobs_registry.csv" in ran.stderr
    assert snapshot(out) == before


async def test_pending_job_with_damaged_pairs_is_named_and_sends_nothing(tmp_path: Path) -> None:
    pairs = study_pairs(9, seed=2)
    out = tmp_path / "run"
    async with ProviderEmulator(latency=0.3) as emu:
        await submit_to(emu, "openai", pairs, out, n_segments=3)
        pairs_file = out / "batch_01_pairs.parquet"
        original = pairs_file.read_bytes()
        # Rows missing: a whole, readable Parquet file with one pair fewer.
        pl.read_parquet(pairs_file).head(2).write_parquet(pairs_file)
        result = await resume_in_process(emu, out)
        (error,) = result.errors
        assert "batch_01_pairs.parquet" in error and ("rows" in error or "bytes" in error)
        assert result.combined.height == 6
        pairs_file.write_bytes(original)
        healed = await resume_in_process(emu, out)
    check_run(healed, pairs)


async def test_request_file_cut_mid_line_is_not_sent(tmp_path: Path) -> None:
    path, pairs = write_pairs(tmp_path)
    out = tmp_path / "run"
    async with ProviderEmulator(latency=0.2) as emu:
        env = emu.env()
        killed = await run_cli(
            *submit_args("openai", path, out), env=env | {"PAIRBATCH_CRASH_AT": "submit:intents"}
        )
        assert killed.rc == -signal.SIGKILL
        request = out / "batch_02_input.jsonl"
        request.write_bytes(request.read_bytes()[:-30])
        result = await resume_in_process(emu, out)
        assert emu.stats.batches_created["openai"] == 2
        (error,) = result.errors
        assert "batch_02_input.jsonl" in error and "delete it to have it rebuilt" in error
        request.unlink()  # rebuilt from the pairs and the run settings
        healed = await resume_in_process(emu, out)
        assert emu.stats.batches_created["openai"] == 3
    check_run(healed, pairs)


async def test_missing_settings_when_a_resend_is_needed_is_an_error(tmp_path: Path) -> None:
    path, _ = write_pairs(tmp_path)
    out = tmp_path / "run"
    async with ProviderEmulator(latency=0.2) as emu:
        env = emu.env()
        killed = await run_cli(
            *submit_args("openai", path, out), env=env | {"PAIRBATCH_CRASH_AT": "submit:intents"}
        )
        assert killed.rc == -signal.SIGKILL
        (out / "run_settings.json").unlink()
        result = await resume_in_process(emu, out)
        assert emu.stats.batches_created["openai"] == 0
    assert len(result.errors) == 3
    assert all("run_settings.json is missing" in e for e in result.errors)


def test_stale_temp_files_of_killed_writes_are_removed_under_the_lock(tmp_path: Path) -> None:
    stale = [
        tmp_path / f".batch_01_results.parquet.{os.getpid() + 1}.0badc0de.tmp",
        tmp_path / ".batch_01_output.jsonl.4242.deadbeef.part",
    ]
    for path in stale:
        path.write_bytes(b"half")
    keep = tmp_path / "notes.tmp"
    keep.write_text("mine")
    with RunLock(tmp_path, "test") as lock:
        assert not any(p.exists() for p in stale)
        assert keep.exists()
        with pytest.raises(
            pairbatch.PairbatchError, match=r"being written by PID \d+ on .* \(test\)"
        ):
            RunLock(tmp_path, "second").acquire()
        assert lock.held
    RunLock(tmp_path, "third").acquire().release()  # released on exit


async def test_unreachable_provider_fails_fast_with_one_line(tmp_path: Path) -> None:
    path, _ = write_pairs(tmp_path)
    out = tmp_path / "run"
    async with ProviderEmulator(latency=5.0) as emu:
        env = emu.env()
        assert (await run_cli(*submit_args("openai", path, out), env=env)).rc == 0
    dead = env | {"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}
    ran = await run_cli("resume", out, "--no-progress", "--openai-max-retries", "2", env=dead)
    assert ran.rc == 1
    lines = [line for line in ran.stderr.splitlines() if line.startswith("pairbatch: error")]
    assert len(lines) == 1 and "connection refused" in lines[0], ran.stderr
