"""Right against today's APIs, end to end: pre-flight, limits, failure reasons, versions,
orders. The emulator's rules are its own reading of the providers' docs
(``pairbatch.testing.rules``); the client's are the profiles: a pass means both agree."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import polars as pl
import pytest

import pairbatch
from pairbatch import registry as reg
from pairbatch.testing import FaultConfig, ProviderEmulator
from pairbatch.testing.faults import GENERATE
from tests.engine_helpers import check_run, credentials, study_pairs


async def submit(
    emu: ProviderEmulator, provider: str, model: str, out: Path, **options: object
) -> pairbatch.SubmitResult:
    creds = credentials(emu)
    return await pairbatch.submit_pairs_multi_batch(
        options.pop("pairs", study_pairs(6, seed=4)),  # type: ignore[arg-type]
        model=model,
        trait_name="T",
        trait_description="D",
        backend=provider,
        n_segments=options.pop("n_segments", 2),  # type: ignore[arg-type]
        output_dir=out,
        api_key="k",
        base_url=creds["base_urls"][provider],
        **options,
    )


async def resume(emu: ProviderEmulator, out: Path) -> pairbatch.ResumeResult:
    return await pairbatch.resume_multi_batches(
        output_dir=out,
        interval_seconds=0.05,
        **credentials(emu),  # type: ignore[arg-type]
    )


# Shapes the emulator's independent rules refuse, with what the client must do instead.
REFUSED = [
    ("openai", "gpt-5-mini", {"temperature": 0}),
    ("openai", "o4-mini", {"top_p": 0.5}),
    ("anthropic", "claude-opus-4-7", {"temperature": 0.2}),
    ("gemini", "gemini-2.5-flash", {"thinking_level": "low"}),
]


@pytest.mark.parametrize(("provider", "model", "options"), REFUSED)
async def test_an_option_the_model_refuses_fails_at_submit_and_writes_nothing(
    tmp_path: Path, provider: str, model: str, options: dict[str, object]
) -> None:
    out = tmp_path / "run"
    async with ProviderEmulator(latency=0.1) as emu:
        with pytest.raises(pairbatch.InputError) as info:
            await submit(emu, provider, model, out, **options)
        assert emu.stats.count() == 0  # not even a pre-flight: the profile knew
    assert model in str(info.value) and next(iter(options)) in str(info.value)
    assert not out.exists()


async def test_preflight_refusal_stops_the_submit_before_any_upload(tmp_path: Path) -> None:
    # The profile override says "accepts temperature" (a user who knows better); the
    # service (its emulator) refuses it: the pre-flight quotes it, nothing is created.
    out = tmp_path / "run"
    async with ProviderEmulator(latency=0.1) as emu:
        with pytest.raises(pairbatch.InputError, match=r"pre-flight: openai refused") as info:
            await submit(emu, "openai", "gpt-5-mini", out, temperature=0, profile="gpt-4.1")
        assert emu.stats.count("openai", GENERATE) == 1
        assert emu.stats.count("openai", "files.create") == 0
        assert emu.stats.batches_created["openai"] == 0
    assert "temperature" in str(info.value)
    assert not out.exists()


@pytest.mark.parametrize(
    ("provider", "model", "options"),
    [
        ("openai", "gpt-4.1-mini", {}),
        ("openai", "gpt-5-mini", {"reasoning": "low", "include_thoughts": True}),
        ("anthropic", "claude-opus-4-7", {"include_thoughts": True}),
        ("anthropic", "claude-haiku-4-5", {}),
        ("gemini", "gemini-3-flash-preview", {"thinking_level": "low"}),
    ],
)
async def test_an_accepted_shape_logs_its_preflight_verdict_and_runs(
    tmp_path: Path,
    provider: str,
    model: str,
    options: dict[str, object],
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "run"
    pairs = study_pairs(6, seed=4)
    async with ProviderEmulator(latency=0.1) as emu:
        with caplog.at_level(logging.INFO, logger="pairbatch.submit"):
            await submit(emu, provider, model, out, pairs=pairs, **options)
        assert emu.stats.count(provider, GENERATE) == 1
        result = await resume(emu, out)
    assert "pre-flight" in caplog.text and "verdict SAMPLE_" in caplog.text
    settings = orjson.loads((out / "run_settings.json").read_bytes())
    assert settings["preflight"]["verdict"] in ("SAMPLE_1", "SAMPLE_2")
    assert result.all_done
    check_run(result, pairs)


async def test_no_preflight_sends_no_ordinary_request(tmp_path: Path) -> None:
    async with ProviderEmulator(latency=0.1) as emu:
        await submit(emu, "openai", "gpt-4.1-mini", tmp_path / "run", preflight=False)
        assert emu.stats.count("openai", GENERATE) == 0
        assert emu.stats.batches_created["openai"] == 2


async def test_a_segment_over_the_request_limit_is_an_error_naming_it(tmp_path: Path) -> None:
    from pairbatch.providers import get_backend

    limit = get_backend("openai").limits.max_requests
    many = pl.DataFrame(
        {
            "ID1": [f"a{i}" for i in range(limit + 1)],
            "text1": ["x"] * (limit + 1),
            "ID2": [f"b{i}" for i in range(limit + 1)],
            "text2": ["y"] * (limit + 1),
        }
    )
    async with ProviderEmulator(latency=0.1) as emu:
        with pytest.raises(pairbatch.InputError, match=r"segment 1 \(50001 pairs\).*max_requests"):
            await submit(emu, "openai", "gpt-4.1-mini", tmp_path / "run", pairs=many, n_segments=1)
        assert emu.stats.count() == 0
    assert not (tmp_path / "run").exists()


async def test_a_failed_batch_carries_the_providers_reason(tmp_path: Path) -> None:
    faults = {"openai": FaultConfig(batch_failed_rate=1.0)}
    async with ProviderEmulator(latency=0.1, faults=faults) as emu:
        await submit(emu, "openai", "gpt-4.1-mini", tmp_path, n_segments=1)
        result = await resume(emu, tmp_path)
    (detail,) = result.batch_failures["error_detail"].to_list()
    assert detail.startswith("Batch status: failed (") and ":" in detail
    (job,) = reg.read_registry(tmp_path)
    assert job.error == detail
    assert set(result.failed_attempts["error_detail"]) == {detail}


async def test_gemini_v1_runs_end_to_end(tmp_path: Path) -> None:
    pairs = study_pairs(6, seed=6)
    async with ProviderEmulator(latency=0.1) as emu:
        await submit(
            emu, "gemini", "models/gemini-2.5-flash", tmp_path, pairs=pairs, api_version="v1"
        )
        result = await resume(emu, tmp_path)
    check_run(result, pairs)


async def test_both_orders_judge_every_pair_twice_linked_by_pair_uid(tmp_path: Path) -> None:
    pairs = study_pairs(8, seed=2)
    async with ProviderEmulator(latency=0.1) as emu:
        await submit(emu, "anthropic", "claude-sonnet-4-5", tmp_path, pairs=pairs, order="both")
        result = await resume(emu, tmp_path)
    combined = result.combined
    assert combined.height == 16
    assert combined.group_by("pair_uid").len()["len"].to_list() == [2] * 8
    roles = combined.group_by("pair_uid").agg(pl.col("order_role").sort())["order_role"]
    assert all(list(r) == ["main", "reverse"] for r in roles)
    swapped = combined.group_by("pair_uid").agg(pl.col("ID1").n_unique())["ID1"]
    assert set(swapped.to_list()) == {2}


async def test_a_self_pair_is_an_error_naming_the_row(tmp_path: Path) -> None:
    pairs = study_pairs(4).with_columns(pl.Series("ID2", ["x", "y", "z", "z"]))
    pairs = pairs.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("z")).otherwise("ID1").alias("ID1")
    )
    async with ProviderEmulator(latency=0.1) as emu:
        with pytest.raises(pairbatch.InputError, match="row 4"):
            await submit(emu, "openai", "gpt-4.1-mini", tmp_path / "run", pairs=pairs)


def test_an_unknown_state_is_polled_only_until_the_completion_window_ends(tmp_path: Path) -> None:
    from datetime import timedelta

    from pairbatch.drive import COMPLETION_WINDOW, UNKNOWN_STATE_GRACE, JobDriver
    from pairbatch.models import BatchState, BatchStatus, Job, utcnow

    status = BatchStatus(
        batch_id="b", state=BatchState.RUNNING, raw_state="PARTIALLY_DONE", unknown_state=True
    )
    young = Job(
        segment_index=1,
        provider="gemini",
        model="gemini-2.5-flash",
        batch_id="b",
        batch_input_path=str(tmp_path / "i"),
        batch_output_path=str(tmp_path / "o"),
        csv_path=str(tmp_path / "c"),
        submitted_at=utcnow() - timedelta(hours=2),
    )
    old = young.transition(submitted_at=utcnow() - COMPLETION_WINDOW - UNKNOWN_STATE_GRACE)
    past = JobDriver.past_window
    assert past(None, young, status) is status  # type: ignore[arg-type]
    ended = past(None, old, status)  # type: ignore[arg-type]
    assert ended.state is BatchState.FAILED and "unknown state PARTIALLY_DONE" in ended.outcome


async def test_the_readme_tutorial_analysis_runs_as_written_on_a_run_where_all_failed(
    tmp_path: Path,
) -> None:
    import re

    faults = {"openai": FaultConfig(batch_failed_rate=1.0)}
    async with ProviderEmulator(latency=0.1, faults=faults) as emu:
        await submit(emu, "openai", "gpt-4.1-mini", tmp_path, order="both")
        result = await resume(emu, tmp_path)
    assert result.combined.height == 0 and result.failed_attempts.height == 12
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    tutorial = re.search(r"# 3\. analyse with Polars.*?\n\n\n", readme, re.S)
    assert tutorial is not None
    code = "\n".join(line[4:] for line in tutorial.group(0).splitlines()[1:])
    exec(compile(code, "README.md", "exec"), {"result": result, "print": lambda *a: None})


# Real model ids with default options and with reasoning / thinking on: every request the
# client's profiles build must be accepted by the emulator's independent rules (sent as
# the pre-flight's ordinary request: the same body a batch line carries).
MATRIX = [
    ("openai", "gpt-4.1-mini", {}),
    ("openai", "gpt-4.1-mini", {"endpoint": "responses"}),
    ("openai", "gpt-5-mini", {}),
    *[("openai", "gpt-5-mini", {"reasoning": e}) for e in ("minimal", "low", "medium", "high")],
    ("openai", "o4-mini", {}),
    ("openai", "o4-mini", {"reasoning": "high", "include_thoughts": True}),
    *[("openai", "gpt-5", {"reasoning": e}) for e in ("minimal", "low", "medium", "high")],
    ("openai", "gpt-5-mini-2025-08-07", {"include_thoughts": True}),
    ("openai", "gpt-5.1", {"reasoning": "none", "temperature": 0}),
    ("openai", "gpt-5.2", {"reasoning": "xhigh"}),
    ("anthropic", "claude-sonnet-4-5", {}),
    ("anthropic", "claude-sonnet-4-5", {"include_thoughts": True}),
    ("anthropic", "claude-haiku-4-5", {}),
    ("anthropic", "claude-haiku-4-5", {"include_thoughts": True}),
    ("anthropic", "claude-opus-4-7", {}),
    ("anthropic", "claude-opus-4-7", {"include_thoughts": True}),
    ("anthropic", "claude-opus-4-8", {"effort": "high"}),
    ("gemini", "gemini-2.5-flash", {}),
    ("gemini", "gemini-2.5-flash", {"include_thoughts": True, "thinking_budget": 512}),
    ("gemini", "gemini-2.5-pro", {"include_thoughts": True}),
    ("gemini", "gemini-3-flash-preview", {}),
    ("gemini", "gemini-3-flash-preview", {"thinking_level": "high", "include_thoughts": True}),
    ("gemini", "gemini-3-pro-preview", {"thinking_level": "low"}),
]


async def test_every_request_the_profiles_build_is_accepted_by_the_emulators_rules() -> None:
    from pairbatch.prompts import DEFAULT_TEMPLATE, build_prompt
    from pairbatch.providers import get_backend
    from pairbatch.session import Session

    prompt = build_prompt(DEFAULT_TEMPLATE, "T", "D", "a short one", "a much longer text here")
    async with ProviderEmulator(latency=0.1) as emu:
        async with Session(
            api_keys={p: "k" for p in ("openai", "anthropic", "gemini")},
            base_urls={p: emu.base_url(p) for p in ("openai", "anthropic", "gemini")},
            rate_limits={p: 500.0 for p in ("openai", "anthropic", "gemini")},
        ) as session:
            for provider, model, options in MATRIX:
                backend = get_backend(provider)
                prepared = backend.prepare_options(model, options)
                line = backend.request_line("pbm-1-0", prompt, model, prepared)
                answer = await session.client(provider).preflight(line, prepared)
                assert answer.better_sample == "SAMPLE_2", (provider, model, options, answer)
        assert emu.stats.count(endpoint=GENERATE, status=200) == len(MATRIX)
