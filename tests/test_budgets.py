"""Budgets: estimated tokens, a queue limit that holds segments back, a cost cap."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest

import pairbatch
from pairbatch import registry as reg
from pairbatch.budgets import Estimate, Prices, admit
from pairbatch.models import JobStatus
from pairbatch.testing import ProviderEmulator
from tests.engine_helpers import check_run, credentials, study_pairs
from tests.test_cli import run_cli


async def submit(emu: ProviderEmulator, out: Path, **kwargs: object) -> pairbatch.SubmitResult:
    return await pairbatch.submit_pairs_multi_batch(
        kwargs.pop("pairs", study_pairs(12, seed=2)),  # type: ignore[arg-type]
        model="gpt-4.1-mini",
        trait_name="T",
        trait_description="D",
        backend="openai",
        n_segments=4,
        output_dir=out,
        api_key="k",
        base_url=credentials(emu)["base_urls"]["openai"],
        max_output_tokens=16,
        **kwargs,
    )


def test_admit_holds_back_what_would_overflow_the_queue() -> None:
    estimates = {k: Estimate(100, 20) for k in range(1, 5)}
    assert admit(estimates, None) == ([1, 2, 3, 4], [])
    assert admit(estimates, 250) == ([1, 2], [3, 4])
    assert admit(estimates, 250, queued=200) == ([], [1, 2, 3, 4])
    with pytest.raises(pairbatch.InputError, match="segment 1 needs about 120 tokens"):
        admit(estimates, 100)
    assert Prices(2.0, 8.0).cost(1_000_000, 500_000) == pytest.approx(3.0)


async def test_a_queue_limit_holds_segments_back_and_resume_sends_them_in_turn(
    tmp_path: Path,
) -> None:
    pairs = study_pairs(12, seed=2)
    async with ProviderEmulator(latency=0.3) as emu:
        probe = await submit(emu, tmp_path / "probe", pairs=pairs, preflight=False)
        settings = orjson.loads((probe.output_dir / "run_settings.json").read_bytes())
        per_segment = max(sum(v) for v in settings["estimates"].values())
        limit = 2 * per_segment  # room for two segments at a time
        created_before = emu.stats.batches_created["openai"]
        run = await submit(
            emu, tmp_path / "run", pairs=pairs, enqueued_token_limit=limit, preflight=False
        )
        assert emu.stats.batches_created["openai"] - created_before == 2
        held = [j for j in run.jobs if j.batch_id is None]
        assert [j.status for j in held] == [JobStatus.INTENT] * 2
        assert all("enqueued_token_limit" in (j.error or "") for j in held)
        assert not run.failed  # held back is not failed
        peak = 0

        def watch(event: pairbatch.Event) -> None:
            nonlocal peak
            jobs = reg.read_registry(tmp_path / "run")
            peak = max(peak, sum(1 for j in jobs if j.batch_id and not j.done))

        result = await pairbatch.resume_multi_batches(
            output_dir=tmp_path / "run",
            interval_seconds=0.05,
            on_event=watch,
            **credentials(emu),  # type: ignore[arg-type]
        )
        assert emu.stats.batches_created["openai"] - created_before == 4
    assert peak <= 2
    check_run(result, pairs)


async def test_a_cost_cap_refuses_the_run_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    async with ProviderEmulator(latency=0.1) as emu:
        with pytest.raises(pairbatch.InputError, match=r"over cost_cap=\$0\.00; nothing was sent"):
            await submit(
                emu,
                out,
                prices={"input_per_million": 1000, "output_per_million": 1000},
                cost_cap=0.0,
            )
        assert emu.stats.batches_created["openai"] == 0
    assert not out.exists()


async def test_resume_and_status_report_tokens_and_cost(tmp_path: Path) -> None:
    out = tmp_path / "run"
    prices = {"input_per_million": 2.0, "output_per_million": 8.0}
    async with ProviderEmulator(latency=0.1) as emu:
        await submit(emu, out, prices=prices, cost_cap=100.0)
        result = await pairbatch.resume_multi_batches(
            output_dir=out,
            interval_seconds=0.05,
            **credentials(emu),  # type: ignore[arg-type]
        )
        status = await run_cli("status", out, env=emu.env())
    prompt, completion = result.tokens
    assert prompt > 0 and completion > 0
    assert result.cost == pytest.approx((prompt * 2.0 + completion * 8.0) / 1e6 * 0.5)
    assert (
        "tokens: estimated" in status.stdout and f"answered so far {prompt:,} in" in status.stdout
    )


async def test_the_emulators_queue_limit_refuses_a_batch_and_it_is_queued_again(
    tmp_path: Path,
) -> None:
    # With no limit of its own the client overfills the (emulated) provider's queue: the
    # batches refused with token_limit_exceeded are sent again once there is room, and
    # every pair is judged; the refused ones are never adopted.
    pairs = study_pairs(12, seed=2)
    async with ProviderEmulator(latency=0.4) as emu:
        probe = await submit(emu, tmp_path / "probe", pairs=pairs, preflight=False)
        await pairbatch.resume_multi_batches(
            output_dir=probe.output_dir,
            interval_seconds=0.05,
            **credentials(emu),  # type: ignore[arg-type]
        )
        done = await pairbatch.resume_multi_batches(
            output_dir=probe.output_dir, api_keys={"openai": "k"}
        )
        # The provider's own count of a segment's input tokens, from its answers' usage.
        per_segment = done.combined.group_by("segment_index").agg(pl.col("prompt_tokens").sum())
        from pairbatch.testing import FaultConfig

        limit = int(2.5 * per_segment["prompt_tokens"].max())  # two segments at a time
        emu.set_faults("openai", FaultConfig(enqueued_token_limit=limit))
        before = emu.stats.batches_created["openai"]
        # Fast enough that all four creates land while the first batches still run.
        fast = {"openai": 500.0}
        await submit(emu, tmp_path / "run", pairs=pairs, preflight=False, rate_limits=fast)
        result = await pairbatch.resume_multi_batches(
            output_dir=tmp_path / "run",
            interval_seconds=0.05,
            **credentials(emu),  # type: ignore[arg-type]
        )
        created = emu.stats.batches_created["openai"] - before
    assert result.all_done and result.batch_failures.height == 0
    check_run(result, pairs)
    assert created > 4  # some were refused and sent again


async def test_a_client_limit_within_the_providers_means_no_batch_is_refused(
    tmp_path: Path,
) -> None:
    pairs = study_pairs(12, seed=2)
    async with ProviderEmulator(latency=0.4) as emu:
        probe = await submit(emu, tmp_path / "probe", pairs=pairs, preflight=False)
        await pairbatch.resume_multi_batches(
            output_dir=probe.output_dir,
            interval_seconds=0.05,
            **credentials(emu),  # type: ignore[arg-type]
        )
        settings = orjson.loads((probe.output_dir / "run_settings.json").read_bytes())
        per_segment = max(sum(v) for v in settings["estimates"].values())
        from pairbatch.testing import FaultConfig

        # The provider counts input tokens only; the client's estimate adds the output.
        emu.set_faults("openai", FaultConfig(enqueued_token_limit=2 * per_segment))
        before = emu.stats.batches_created["openai"]
        await submit(
            emu,
            tmp_path / "run",
            pairs=pairs,
            preflight=False,
            enqueued_token_limit=2 * per_segment,
        )
        result = await pairbatch.resume_multi_batches(
            output_dir=tmp_path / "run",
            interval_seconds=0.05,
            **credentials(emu),  # type: ignore[arg-type]
        )
        assert emu.stats.batches_created["openai"] - before == 4  # none refused
    check_run(result, pairs)


def test_dollars_keep_a_small_cost_visible() -> None:
    from pairbatch.budgets import dollars

    assert dollars(0) == "$0.00"
    assert dollars(0.0023) == "$0.0023"  # not "$0.00", next to a cap of $0.00
    assert dollars(0.01) == "$0.01"
    assert dollars(1234.5) == "$1,234.50"
