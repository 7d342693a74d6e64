"""Finish what failed: errored, expired and unparseable pairs sent again, to completion,
paid once per attempt, safe to kill."""

from __future__ import annotations

import signal
from pathlib import Path

import polars as pl
import pytest

import pairbatch
from pairbatch.retries import retry_failed
from pairbatch.testing import FaultConfig, ProviderEmulator
from tests.engine_helpers import MODELS, credentials, study_pairs, submit_to
from tests.test_cli import run_cli

# Errored requests, unparseable answers, and batches that expire part-way.
FAULTS = FaultConfig(request_error_rate=0.25, no_tag_rate=0.15, batch_expired_rate=0.3)


async def first_pass(emu: ProviderEmulator, out: Path, pairs: pl.DataFrame, provider: str) -> None:
    creds = credentials(emu)
    await pairbatch.submit_pairs_multi_batch(
        pairs,
        model=MODELS[provider],
        trait_name="T",
        trait_description="D",
        backend=provider,
        n_segments=3,
        output_dir=out,
        api_key="k",
        base_url=creds["base_urls"][provider],
    )
    await resume(emu, out)


async def resume(emu: ProviderEmulator, out: Path) -> pairbatch.ResumeResult:
    return await pairbatch.resume_multi_batches(
        output_dir=out,
        interval_seconds=0.05,
        **credentials(emu),  # type: ignore[arg-type]
    )


def each_pair_once(result: pairbatch.ResumeResult, pairs: pl.DataFrame) -> None:
    combined = result.combined
    assert combined.height == pairs.height
    origins = (
        pl.coalesce(pl.col("origin_id"), pl.col("custom_id"))
        if "origin_id" in combined.columns
        else pl.col("custom_id")
    )
    assert combined.select(origins.n_unique()).item() == pairs.height


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_failed_pairs_are_retried_to_completion(tmp_path: Path, provider: str) -> None:
    pairs = study_pairs(30, seed=3)
    async with ProviderEmulator(latency=0.1, faults={provider: FAULTS}, seed=4) as emu:
        await first_pass(emu, tmp_path, pairs, provider)
        before = await resume(emu, tmp_path)
        failed = pairs.height - before.combined.height
        assert failed > 0
        emu.set_faults(provider, None)
        creds = credentials(emu)
        retried = await retry_failed(tmp_path, api_key="k", base_url=creds["base_urls"][provider])
        assert sum(j.n_pairs for j in retried.jobs) == failed
        assert retried.jobs[0].segment_index == 4
        result = await resume(emu, tmp_path)
        assert emu.stats.batches_created[provider] == 3 + len(retried.jobs)
        # Nothing left to retry: no new batch.
        again = await retry_failed(tmp_path, api_key="k", base_url=creds["base_urls"][provider])
        assert again.jobs == []
    each_pair_once(result, pairs)
    # Every attempt's history stays: the first failures are still there.
    assert result.failed_attempts.filter(~pl.col("is_duplicate")).height >= failed


async def test_attempts_are_bounded_and_codes_select(tmp_path: Path) -> None:
    pairs = study_pairs(20, seed=5)
    always = FaultConfig(request_error_rate=1.0)
    async with ProviderEmulator(latency=0.1, faults={"openai": always}) as emu:
        await first_pass(emu, tmp_path, pairs, "openai")
        url = credentials(emu)["base_urls"]["openai"]
        assert (
            await retry_failed(tmp_path, codes={"parse_error"}, api_key="k", base_url=url)
        ).jobs == []
        second = await retry_failed(tmp_path, max_attempts=2, api_key="k", base_url=url)
        assert sum(j.n_pairs for j in second.jobs) == 20
        await resume(emu, tmp_path)
        third = await retry_failed(tmp_path, max_attempts=2, api_key="k", base_url=url)
        assert third.jobs == []  # two attempts each: bounded
        assert emu.stats.batches_created["openai"] == 3 + len(second.jobs)


async def test_retry_refuses_a_run_that_is_not_done(tmp_path: Path) -> None:
    pairs = study_pairs(6)
    async with ProviderEmulator(latency=30.0) as emu:
        creds = credentials(emu)
        await submit_to(emu, "openai", pairs, tmp_path, n_segments=2)
        with pytest.raises(pairbatch.InputError, match="not done; resume the run"):
            await retry_failed(tmp_path, api_key="k", base_url=creds["base_urls"]["openai"])


@pytest.mark.parametrize(
    "point", ["retry:pending", "retry:intents", "create:before:4", "create:after:4"]
)
async def test_kill_anywhere_during_a_retry_then_again_pays_once(
    tmp_path: Path, point: str
) -> None:
    pairs = study_pairs(24, seed=3)
    out = tmp_path / "run"
    async with ProviderEmulator(latency=0.1, faults={"openai": FAULTS}, seed=4) as emu:
        await first_pass(emu, out, pairs, "openai")
        emu.set_faults("openai", None)
        env = emu.env()
        killed = await run_cli("retry", out, env=env | {"PAIRBATCH_CRASH_AT": point})
        assert killed.rc == -signal.SIGKILL, killed.stderr
        # Resume creates whatever the retry recorded; retrying again sends the rest.
        await resume(emu, out)
        ran = await run_cli("retry", out, env=env)
        assert ran.rc == 0, ran.stderr
        result = await resume(emu, out)
        segments = len(pairbatch.read_registry(out))
        assert emu.stats.batches_created["openai"] == segments
        # Every pair has its result now: a third retry says so and sends nothing.
        ran = await run_cli("retry", out, env=env)
        assert ran.rc == 0 and "nothing to retry" in ran.stdout, ran.stdout + ran.stderr
        assert emu.stats.batches_created["openai"] == segments
    each_pair_once(result, pairs)


async def test_resume_can_retry_failed_pairs_by_itself(tmp_path: Path) -> None:
    from pairbatch.retries import pairs_to_retry

    pairs = study_pairs(30, seed=8)
    noisy = FaultConfig(request_error_rate=0.3)
    async with ProviderEmulator(latency=0.1, faults={"openai": noisy}, seed=2) as emu:
        await submit_to(emu, "openai", pairs, tmp_path, n_segments=3)
        result = await pairbatch.resume_multi_batches(
            output_dir=tmp_path,
            interval_seconds=0.05,
            retry_failed=3,
            **credentials(emu),  # type: ignore[arg-type]
        )
    assert result.all_done
    jobs = pairbatch.read_registry(tmp_path)
    assert len(jobs) > 3  # it did retry
    left = pairs_to_retry(jobs, max_attempts=1_000_000)
    # 30 % errors, four attempts: about 1 % of pairs still without a result.
    assert left.height <= 3 and (left.height == 0 or left["attempt"].max() == 5)
    assert result.combined.height == pairs.height - left.height
