"""submit_pairs_multi_batch + resume_multi_batches end to end against the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import polars as pl
import pytest

import pairbatch
from pairbatch import registry as reg
from pairbatch.errors import InputError, RegistryError
from pairbatch.models import JobStatus
from pairbatch.testing import DOWNLOAD_ENDPOINTS, FaultConfig, ProviderEmulator
from pairbatch.transport import Transport
from tests.engine_helpers import MODELS, check_run, credentials, study_pairs

TRAIT = ("Quality", "How good the writing is")


async def submit(
    emu: ProviderEmulator, provider: str, pairs: pl.DataFrame, out: Path, **kwargs: object
) -> pairbatch.SubmitResult:
    creds = credentials(emu)
    return await pairbatch.submit_pairs_multi_batch(
        pairs,
        model=MODELS[provider],
        trait_name=TRAIT[0],
        trait_description=TRAIT[1],
        backend=provider,
        output_dir=out,
        api_key=creds["api_keys"][provider],
        base_url=creds["base_urls"][provider],
        **({"n_segments": 3, "write_registry": True} | kwargs),  # type: ignore[arg-type]
    )


async def resume(emu: ProviderEmulator, out: Path, **kwargs: object) -> pairbatch.ResumeResult:
    return await pairbatch.resume_multi_batches(
        output_dir=out,
        **({"interval_seconds": 0.05} | credentials(emu) | kwargs),  # type: ignore[arg-type]
    )


async def test_three_providers_many_segments_with_faults(tmp_path: Path) -> None:
    http_faults = {
        "rate_limit": 60.0,
        "burst": 5,
        "server_error_rate": 0.08,
        "reset_rate": 0.04,
        "request_error_rate": 0.05,
        "no_tag_rate": 0.05,
    }
    faults = {p: FaultConfig(**http_faults) for p in MODELS}  # type: ignore[arg-type]
    faults["openai"] = FaultConfig(
        truncate_rate=0.3, endpoints=DOWNLOAD_ENDPOINTS, request_error_rate=0.05
    )
    async with ProviderEmulator(latency=(0.1, 0.5), faults=faults, seed=11) as emu:
        pairs = {p: study_pairs(45, seed=i) for i, p in enumerate(MODELS)}
        for provider in MODELS:
            await submit(emu, provider, pairs[provider], tmp_path / provider, n_segments=5)
        results = await asyncio.gather(
            *(resume(emu, tmp_path / p, max_tries=8, openai_max_retries=8) for p in MODELS)
        )
    for provider, result in zip(MODELS, results, strict=True):
        assert result.all_done
        assert all(j.status is JobStatus.SUCCEEDED for j in result.jobs)
        check_run(result, pairs[provider])
        codes = set(result.failed_attempts["error_code"].to_list())
        assert codes <= {"http_error", "backend_missing_fields", "timeout", "parse_error"}
        assert result.combined.height >= 30


@pytest.fixture
def fixed_run_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator decides how much of an expired batch finished from the request keys,
    which carry the random run tag: fixed tags make that draw the same on every run."""
    tags = iter(f"pbfixed{i:03d}" for i in range(1000))
    monkeypatch.setattr("pairbatch.submit.new_run_tag", lambda: next(tags))


@pytest.mark.usefixtures("fixed_run_tags")
async def test_batch_failures_and_salvage(tmp_path: Path) -> None:
    faults = {
        "openai": FaultConfig(batch_failed_rate=1.0),
        "anthropic": FaultConfig(batch_expired_rate=1.0),
        "gemini": FaultConfig(batch_cancelled_rate=1.0),
    }
    async with ProviderEmulator(latency=0.2, faults=faults) as emu:
        pairs = study_pairs(20)
        for provider in MODELS:
            await submit(emu, provider, pairs, tmp_path / provider, n_segments=2)
        results = {p: await resume(emu, tmp_path / p) for p in MODELS}
    failed = results["openai"]
    assert failed.combined.height == 0 and "better_id" in failed.combined.columns
    assert failed.batch_failures.height == 2
    assert set(failed.batch_failures["status"].to_list()) == {"failed"}
    assert failed.failed_attempts.height == 20
    # The provider's own reason follows the status (OpenAI's batch.errors).
    details = set(failed.failed_attempts["error_detail"].to_list())
    assert all(d.startswith("Batch status: failed") for d in details)
    assert all(j.done and j.status is JobStatus.FAILED for j in failed.jobs)
    for provider in ("anthropic", "gemini"):
        result = results[provider]
        assert result.all_done
        assert result.batch_failures.height == 2
        check_run(result, pairs)
    # Anthropic's expired batch keeps the answers it finished.
    expired = results["anthropic"]
    assert expired.combined.height > 0
    for failure in expired.batch_failures.iter_rows(named=True):
        salvaged = expired.combined.filter(
            pl.col("segment_index") == failure["segment_index"]
        ).height
        detail = failure["error_detail"]
        # The status, then Anthropic's reason (how many requests ran out of time), then
        # what was salvaged.
        assert detail.startswith("Batch status: expired (expired: ")
        assert detail.endswith(f" ({salvaged} of 10 results salvaged)" if salvaged else ")")


@pytest.mark.usefixtures("fixed_run_tags")
async def test_openai_expired_batch_salvages_output_file(tmp_path: Path) -> None:
    async with ProviderEmulator(
        latency=0.2, faults={"openai": FaultConfig(batch_expired_rate=1.0)}
    ) as emu:
        pairs = study_pairs(30)
        await submit(emu, "openai", pairs, tmp_path, n_segments=1)
        result = await resume(emu, tmp_path)
    check_run(result, pairs)
    assert 0 < result.combined.height < 30
    assert result.batch_failures["status"].to_list() == ["expired"]
    details = set(result.failed_attempts["error_detail"].to_list())
    assert details <= {"Batch status: expired"} | {d for d in details if "expired" in d.lower()}


async def test_registry_on_disk_and_idempotent_resume(tmp_path: Path) -> None:
    async with ProviderEmulator(latency=0.1) as emu:
        pairs = study_pairs(12)
        submitted = await submit(emu, "gemini", pairs, tmp_path, write_registry=True)
        assert [j.status for j in reg.read_registry(tmp_path)] == [JobStatus.PENDING] * 3
        assert submitted.registry.columns[:9] == list(reg.REFERENCE_COLUMNS)
        first = await resume(emu, tmp_path)
        assert all(j.done for j in reg.read_registry(tmp_path))
        calls = sum(emu.stats.requests.values())
        second = await resume(emu, tmp_path)
        assert sum(emu.stats.requests.values()) == calls  # no provider calls at all
    assert second.combined.sort("custom_id").equals(first.combined.sort("custom_id"))
    assert all(o.from_disk for o in second.outcomes)


async def test_reference_argument_behaviours(tmp_path: Path) -> None:
    async with ProviderEmulator(latency=0.1) as emu:
        pairs = study_pairs(8)
        out = tmp_path / "run"
        submitted = await submit(emu, "anthropic", pairs, out, n_segments=2, write_registry=False)
        job = submitted.jobs[0]
        # jobs given, output_dir inferred from the first job's batch_output_path
        result = await pairbatch.resume_multi_batches(
            submitted.jobs,
            interval_seconds=0.05,
            write_results_csv=True,
            keep_jsonl=False,
            write_combined_csv=True,
            combined_csv_path="final.csv",
            **credentials(emu),  # type: ignore[arg-type]
        )
    assert result.combined_csv_path == out / "final.csv"
    assert pl.read_csv(out / "final.csv").height == result.combined.height  # type: ignore[union-attr]
    assert Path(job.csv_path).exists()
    assert not Path(job.batch_input_path).exists()
    assert not Path(job.batch_output_path).exists()
    assert not (out / reg.REGISTRY_NAME).exists()  # write_registry=False and none existed


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "OUT/combined_results.csv"),
        ("", "OUT/combined_results.csv"),
        ("bare.csv", "OUT/bare.csv"),
        ("ABS/deep/x.csv", "ABS/deep/x.csv"),
        ("sub/x.csv", "sub/x.csv"),
        ("~/x.csv", "~/x.csv"),
        ("C:/x.csv", "C:/x.csv"),
    ],
)
def test_combined_csv_path_rules(tmp_path: Path, given: str | None, expected: str) -> None:
    from pairbatch.runfolder import resolve_combined_path

    out = tmp_path / "out"
    if given is not None:
        given = given.replace("ABS", str(tmp_path))
    want = expected.replace("OUT", str(out)).replace("ABS", str(tmp_path))
    assert resolve_combined_path(out, given) == Path(want).expanduser()


async def test_combined_csv_creates_missing_folders(tmp_path: Path) -> None:
    async with ProviderEmulator(latency=0.1) as emu:
        await submit(emu, "openai", study_pairs(6), tmp_path / "run", write_registry=True)
        target = tmp_path / "new" / "deeper" / "all.csv"
        result = await resume(
            emu, tmp_path / "run", write_combined_csv=True, combined_csv_path=str(target)
        )
    assert result.combined_csv_path == target and target.exists()


@pytest.mark.parametrize("where", ["a folder", "under a file"])
async def test_a_combined_csv_target_that_cannot_be_written_is_refused_first(
    tmp_path: Path, where: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    target = tmp_path if where == "a folder" else blocker / "all.csv"
    async with ProviderEmulator(latency=0.1) as emu:
        await submit(emu, "openai", study_pairs(6), tmp_path / "run", write_registry=True)
        before = reg.registry_path(tmp_path / "run").read_bytes()
        calls = sum(emu.stats.requests.values())
        with pytest.raises(InputError, match="combined_csv_path: .*(is a folder|not a folder)"):
            await resume(
                emu, tmp_path / "run", write_combined_csv=True, combined_csv_path=str(target)
            )
        # Refused before the run was opened: no poll, no download, the registry as it was.
        assert sum(emu.stats.requests.values()) == calls
    assert reg.registry_path(tmp_path / "run").read_bytes() == before
    assert not any(job.done for job in reg.read_registry(tmp_path / "run"))


async def test_loading_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Either 'jobs' must be supplied"):
        await pairbatch.resume_multi_batches()
    with pytest.raises(RegistryError, match="No registry file found"):
        await pairbatch.resume_multi_batches(output_dir=tmp_path)


async def test_one_jobs_permanent_error_does_not_stop_the_others(tmp_path: Path) -> None:
    async with ProviderEmulator(latency=0.1) as emu:
        await submit(emu, "openai", study_pairs(9), tmp_path, write_registry=True)
        jobs = reg.read_registry(tmp_path)
        jobs[1] = jobs[1].transition(batch_id="batch_does_not_exist")
        reg.write_registry(tmp_path, jobs)
        result = await resume(emu, tmp_path)
    statuses = [j.status for j in result.jobs]
    assert statuses == [JobStatus.SUCCEEDED, JobStatus.ERROR, JobStatus.SUCCEEDED]
    broken = reg.read_registry(tmp_path)[1]
    assert not broken.done and "404" in (broken.error or "")
    assert not result.all_done


async def test_missing_pairs_file_is_that_jobs_error_and_resume_recovers(tmp_path: Path) -> None:
    pairs = study_pairs(9)
    async with ProviderEmulator(latency=0.05) as emu:
        await submit(emu, "anthropic", pairs, tmp_path, write_registry=True)
        job = reg.read_registry(tmp_path)[1]
        assert job.pairs_path is not None
        pairs_file = Path(job.pairs_path)
        kept = pairs_file.read_bytes()
        pairs_file.unlink()
        first = await resume(emu, tmp_path)
        assert [j.status for j in first.jobs] == [
            JobStatus.SUCCEEDED,
            JobStatus.ERROR,
            JobStatus.SUCCEEDED,
        ]
        broken = reg.read_registry(tmp_path)[1]
        assert not broken.done and "batch_02_pairs.parquet: the file is missing" in (
            broken.error or ""
        )
        # Nothing half-settled: no results or failed attempts persisted for it.
        assert not Path(broken.results_path).exists() and not Path(broken.failed_path).exists()
        pairs_file.write_bytes(kept)
        second = await resume(emu, tmp_path)
    assert second.all_done
    check_run(second, pairs)


async def test_submit_failure_is_recorded_and_resume_sends_it(tmp_path: Path) -> None:
    faults = {"anthropic": FaultConfig(server_error_rate=1.0, endpoints={"batches.create"})}
    async with ProviderEmulator(latency=0.1, faults=faults) as emu:
        submitted = await submit(emu, "anthropic", study_pairs(6), tmp_path, write_registry=True)
        assert len(submitted.failed) == 3
        # A 5xx after the create was sent may have made a batch: it is left "creating"
        # for resume to reconcile (it finds none, so it sends each create once).
        assert all(j.status is JobStatus.CREATING for j in reg.read_registry(tmp_path))
        assert emu.stats.batches_created["anthropic"] == 0
        emu.set_faults("anthropic", None)
        result = await resume(emu, tmp_path)
        assert emu.stats.batches_created["anthropic"] == 3
    assert result.all_done


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_create_that_times_out_is_adopted_not_paid_twice(
    tmp_path: Path, provider: str
) -> None:
    faults = {
        provider: FaultConfig(
            slow_rate=1.0, slow_seconds=1.5, slow_after=True, slow_endpoints={"batches.create"}
        )
    }
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=0.4)
    async with (
        ProviderEmulator(latency=0.2, faults=faults) as emu,
        Transport(timeout=timeout) as transport,
    ):
        submitted = await submit(
            emu, provider, study_pairs(9), tmp_path, write_registry=True, transport=transport
        )
        assert emu.stats.batches_created[provider] == 3
        created = {b.removeprefix("batches/") for b in emu.batch_ids(provider)}
        if provider == "anthropic":
            # No metadata to match on while the batches run: the intents stay open for
            # resume to confirm from the results, and nothing is sent twice.
            assert all(j.status is JobStatus.CREATING for j in submitted.failed)
        else:
            assert not submitted.failed
            assert {j.batch_id.removeprefix("batches/") for j in submitted.jobs} == created  # type: ignore[union-attr]
        emu.set_faults(provider, None)
        result = await resume(emu, tmp_path)
        assert emu.stats.batches_created[provider] == 3
    assert result.all_done
    assert {j.batch_id.removeprefix("batches/") for j in result.jobs} == created  # type: ignore[union-attr]


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_crash_between_create_and_registry_write_is_reconciled(
    tmp_path: Path, provider: str
) -> None:
    async with ProviderEmulator(latency=0.2) as emu:
        pairs = study_pairs(9)
        await submit(emu, provider, pairs, tmp_path, write_registry=True)
        # As if the process died after the create call but before recording its id.
        jobs = reg.read_registry(tmp_path)
        jobs[2] = jobs[2].transition(batch_id=None, status=JobStatus.CREATING)
        reg.write_registry(tmp_path, jobs)
        result = await resume(emu, tmp_path)
        assert emu.stats.batches_created[provider] == 3  # adopted, not re-sent
    assert result.all_done
    check_run(result, pairs)


async def test_cancelling_the_awaiting_task_leaves_a_consistent_registry(tmp_path: Path) -> None:
    async with ProviderEmulator(latency=(0.2, 6.0), seed=2) as emu:
        pairs = study_pairs(30)
        await submit(emu, "openai", pairs, tmp_path, write_registry=True, n_segments=6)
        task = asyncio.create_task(resume(emu, tmp_path, interval_seconds=0.1))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if sum(j.done for j in reg.read_registry(tmp_path)) >= 1:
                break
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("pairbatch-")]
        jobs = reg.read_registry(tmp_path)
        # Compacted on the way out: one journal line per job.
        assert (tmp_path / reg.JOURNAL_NAME).read_bytes().count(b"\n") == 6
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith((".part", ".tmp"))]
        assert leftovers == []
        assert 0 < sum(j.done for j in jobs) < 6
        result = await resume(emu, tmp_path)
    assert result.all_done
    check_run(result, pairs)


async def test_overall_timeout_returns_what_is_done(tmp_path: Path) -> None:
    async with ProviderEmulator(latency=30.0) as emu:
        await submit(emu, "gemini", study_pairs(4), tmp_path, write_registry=True, n_segments=2)
        result = await resume(emu, tmp_path, timeout=0.5)
    assert not result.all_done and result.combined.height == 0
    assert [j.raw_status for j in reg.read_registry(tmp_path)] == ["PENDING", "PENDING"]


async def test_iter_completed_yields_as_batches_finish(tmp_path: Path) -> None:
    async with ProviderEmulator(latency=(0.1, 1.0), seed=4) as emu:
        await submit(emu, "openai", study_pairs(20), tmp_path, write_registry=True, n_segments=4)
        events: list[pairbatch.Event] = []
        seen = []
        gen = pairbatch.iter_completed(
            output_dir=tmp_path, interval_seconds=0.05, on_event=events.append, **credentials(emu)
        )
        async with contextlib.aclosing(gen):
            async for outcome in gen:
                seen.append(outcome.job.segment_index)
                assert Path(outcome.job.results_path).exists()
                if len(seen) == 2:
                    break
        # Stopping early keeps the registry whole; the rest finishes next time.
        assert sum(j.done for j in reg.read_registry(tmp_path)) >= 2
        kinds = {e.kind for e in events}
        assert pairbatch.EventKind.POLLED in kinds and pairbatch.EventKind.COMPLETED in kinds
        result = await resume(emu, tmp_path)
    assert result.all_done and len(result.outcomes) == 4


async def test_per_job_delay_sets_the_polling_rate(tmp_path: Path) -> None:
    async with ProviderEmulator(latency=1.0) as emu:
        await submit(emu, "openai", study_pairs(8), tmp_path, write_registry=True, n_segments=4)
        emu.stats.reset()
        await resume(emu, tmp_path, per_job_delay=0.25, interval_seconds=0.0)
        # one request per 0.25 s, burst 1: never more than 4 in any second (+1 slack)
        assert emu.stats.peak_rate("openai", window=1.0) <= 5


async def test_verbose_messages_go_through_logging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pairbatch")
    async with ProviderEmulator(latency=0.1) as emu:
        await submit(emu, "anthropic", study_pairs(4), tmp_path, verbose=True, n_segments=1)
        await resume(emu, tmp_path, verbose=True, write_combined_csv=True, write_registry=True)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Anthropic batch created" in text
    assert "Polling segment 1 (provider=anthropic" in text
    assert "Completed 1 of 1 jobs; 0 remaining." in text
    assert "Combined results written to" in text


@contextlib.contextmanager
def emulator_in_thread(**kwargs: object) -> Iterator[ProviderEmulator]:
    """An emulator on its own loop and thread, so blocking code can call it."""
    ready: queue.Queue[ProviderEmulator] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        async with ProviderEmulator(**kwargs) as emu:  # type: ignore[arg-type]
            ready.put(emu)
            while not stop.is_set():  # noqa: ASYNC110 - the flag is set from another thread
                await asyncio.sleep(0.02)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield ready.get(timeout=10)
    finally:
        stop.set()
        thread.join(timeout=10)


def test_sync_wrappers_work_inside_and_outside_a_loop(tmp_path: Path) -> None:
    with emulator_in_thread(latency=0.1) as emu:
        creds = credentials(emu)
        submitted = pairbatch.sync.submit_pairs_multi_batch(
            study_pairs(4),
            model="m",
            trait_name="T",
            trait_description="D",
            backend="gemini",
            n_segments=1,
            output_dir=tmp_path,
            api_key="k",
            base_url=creds["base_urls"]["gemini"],
        )

        async def inside_a_running_loop() -> pairbatch.ResumeResult:
            # As in Jupyter: a blocking call made while an event loop is running.
            return pairbatch.sync.resume_multi_batches(
                submitted.jobs,
                interval_seconds=0.05,
                **creds,  # type: ignore[arg-type]
            )

        result = asyncio.run(inside_a_running_loop())
    assert result.all_done


async def test_key_from_environment_never_reaches_logs_or_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-env-secret-4f9a1c"
    caplog.set_level(logging.DEBUG)
    faults = {"openai": FaultConfig(server_error_rate=0.3, rate_limit=40, request_error_rate=0.2)}
    async with ProviderEmulator(latency=0.1, faults=faults, api_key=secret) as emu:
        monkeypatch.setenv("OPENAI_API_KEY", secret)
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url("openai"))
        await pairbatch.submit_pairs_multi_batch(
            study_pairs(10),
            model="gpt-4.1-mini",
            trait_name="T",
            trait_description="D",
            backend="openai",
            n_segments=2,
            output_dir=tmp_path,
            write_registry=True,
            verbose=True,
        )
        result = await pairbatch.resume_multi_batches(
            output_dir=tmp_path,
            interval_seconds=0.05,
            verbose=True,
            max_tries=8,
            openai_max_retries=8,
        )
    assert result.all_done
    records = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert records and not [r for r in records if secret in r]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
