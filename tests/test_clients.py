"""Each provider's HTTP client through a full cycle against the emulator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import polars as pl
import pytest

from pairbatch.models import BatchState, Job, Provider
from pairbatch.pairs import assign_custom_ids, load_pairs, with_pair_keys
from pairbatch.prompts import DEFAULT_TEMPLATE
from pairbatch.providers import get_backend
from pairbatch.providers.base import BatchClient, write_request_file
from pairbatch.retry import RetryPolicy
from pairbatch.session import Session
from pairbatch.testing import FaultConfig, ProviderEmulator, expected_winner
from tests.engine_helpers import MODELS, study_pairs

POLICY = RetryPolicy(max_tries=6, base_delay=0.01, max_delay=0.05)


def prepare(
    tmp_path: Path, provider: str, n: int = 8, **options: object
) -> tuple[Job, pl.DataFrame, dict]:
    backend = get_backend(provider)
    prepared = backend.prepare_options(MODELS[provider], options)
    segment = assign_custom_ids(with_pair_keys(load_pairs(study_pairs(n))), "pbclient", 1, 0)
    job = Job(
        segment_index=1,
        provider=provider,
        model=MODELS[provider],
        batch_input_path=str(tmp_path / "batch_01_input.jsonl"),
        batch_output_path=str(tmp_path / "batch_01_output.jsonl"),
        csv_path=str(tmp_path / "batch_01_results.csv"),
        n_pairs=n,
        run_tag="pbclient",
    )
    write_request_file(
        backend,
        job.batch_input_path,
        segment,
        model=job.model,
        template=DEFAULT_TEMPLATE,
        trait_name="T",
        trait_description="D",
        options=prepared,
    )
    return job, segment, prepared


def session_for(emu: ProviderEmulator) -> Session:
    return Session(
        api_keys={p: "k" for p in MODELS},
        base_urls={p: emu.base_url(p) for p in MODELS},
        rate_limits={p: 200.0 for p in MODELS},
        max_tries={p: 6 for p in MODELS},
    )


async def wait_terminal(client: BatchClient, batch_id: str) -> object:
    for _ in range(200):
        status = await client.status(batch_id)
        if status.state.is_terminal:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError("batch never ended")


CASES = [
    ("openai", {}),
    pytest.param(
        "openai",
        {"include_thoughts": True, "reasoning": "low", "endpoint": "responses"},
        # gpt-4.1-mini is not a reasoning model: the real API answers 400
        # "Unsupported parameter: 'reasoning.effort' is not supported with this model."
        marks=pytest.mark.xfail(
            strict=True,
            reason="client builds a request the real API refuses; fixed by model profiles "
            "(issue 12)",
        ),
    ),
    ("anthropic", {}),
    ("anthropic", {"include_thoughts": True}),
    ("gemini", {"include_thoughts": True}),
    ("gemini", {"inline": False}),
]


@pytest.mark.parametrize(("provider", "options"), CASES)
async def test_full_cycle(tmp_path: Path, provider: str, options: dict[str, object]) -> None:
    faults = {provider: FaultConfig(server_error_rate=0.2, reset_rate=0.05)}
    async with (
        ProviderEmulator(latency=0.2, faults=faults, seed=3) as emu,
        session_for(emu) as session,
    ):
        job, segment, prepared = prepare(tmp_path, provider, **options)
        client = session.client(provider)
        batch_id = await client.submit(job, Path(job.batch_input_path), prepared)
        first = await client.status(batch_id)
        assert first.batch_id == batch_id and not first.state.is_terminal
        status = await wait_terminal(client, batch_id)
        assert status.state is BatchState.SUCCEEDED  # type: ignore[attr-defined]
        assert status.counts.total in (None, job.n_pairs)  # type: ignore[attr-defined]
        job = job.transition(batch_id=batch_id)
        downloaded = await client.download(job, status)  # type: ignore[arg-type]
        assert downloaded.output_path == Path(job.batch_output_path)
        raw = get_backend(provider).parse_results(downloaded.output_path)
        assert raw.height == job.n_pairs
        assert await client.find_batch(job) == batch_id
    truth = {
        key: expected_winner(t1, t2)
        for key, t1, t2 in segment.select("custom_id", "text1", "text2").iter_rows()
    }
    assert dict(zip(raw["custom_id"], raw["better_sample"], strict=True)) == truth
    if options.get("include_thoughts"):
        assert raw["thoughts"].null_count() == 0
    assert raw["prompt_tokens"].null_count() == 0


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_cancel(tmp_path: Path, provider: str) -> None:
    async with ProviderEmulator(latency=30.0) as emu, session_for(emu) as session:
        job, _, prepared = prepare(tmp_path, provider)
        client = session.client(provider)
        batch_id = await client.submit(job, Path(job.batch_input_path), prepared)
        await client.cancel(batch_id)
        status = await wait_terminal(client, batch_id)
    assert status.state is BatchState.CANCELLED  # type: ignore[attr-defined]


async def test_openai_completed_with_only_an_error_file(tmp_path: Path) -> None:
    faults = {"openai": FaultConfig(batch_all_errored_rate=1.0)}
    async with ProviderEmulator(latency=0.2, faults=faults) as emu, session_for(emu) as session:
        job, _, prepared = prepare(tmp_path, "openai")
        client = session.client("openai")
        batch_id = await client.submit(job, Path(job.batch_input_path), prepared)
        status = await wait_terminal(client, batch_id)
        assert status.state is BatchState.SUCCEEDED  # type: ignore[attr-defined]
        assert status.output_ref is None and status.error_ref  # type: ignore[attr-defined]
        downloaded = await client.download(job.transition(batch_id=batch_id), status)  # type: ignore[arg-type]
    assert downloaded.output_path is None and downloaded.error_path is not None
    raw = get_backend("openai").parse_results(downloaded.error_path)
    assert raw.height == job.n_pairs
    assert set(raw["result_type"].to_list()) == {"errored"}
    assert raw["error_message"].null_count() == 0


async def test_missing_batch_is_a_clear_permanent_error(tmp_path: Path) -> None:
    from pairbatch.errors import ProviderError

    async with ProviderEmulator() as emu, session_for(emu) as session:
        for provider, missing in (
            ("openai", "batch_nope"),
            ("anthropic", "msgbatch_nope"),
            ("gemini", "batches/nope"),
        ):
            with pytest.raises(ProviderError) as info:
                await session.client(provider).status(missing)
            assert info.value.status == 404 and info.value.provider == provider


def test_client_reprs_hide_keys() -> None:
    session = Session(api_keys={p: "sk-secret-123" for p in MODELS})
    for provider in Provider:
        client = session.client(provider)
        assert "sk-secret-123" not in repr(client)
        assert "sk-secret-123" not in repr(session)
