"""Adaptive studies: the pair choice, the stopping rule, and a study killed anywhere.

Verdicts come from a LatentJudge, served by the loopback emulator for batch runs and
called directly by ``simulate_adaptive``; both give the same verdict for the same
prompt, so an uninterrupted study is its simulation and a killed one must equal it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pairbatch import read_registry, sync
from pairbatch.adaptive import (
    SETTINGS_NAME,
    Design,
    StopRule,
    plot_rounds,
    round_folder,
    run_adaptive,
    simulate_adaptive,
)
from pairbatch.adaptive_select import fit_scores, plan_round
from pairbatch.adaptive_study import Study
from pairbatch.errors import InputError
from pairbatch.lock import RunLock, RunLockedError
from pairbatch.prompts import TRAITS
from pairbatch.registry import holds_registry
from pairbatch.testing import ProviderEmulator
from pairbatch.testing.judge import LatentJudge
from tests.test_cli import CLI, Ran, run_cli

NAME, DESCRIPTION = TRAITS["overall_quality"]
FIXED = StopRule(target_reliability=1.0, stability=1.0, max_rounds=4)  # stops at max_rounds


def world(n: int = 12, seed: int = 5, spread: float = 1.0) -> tuple[pl.DataFrame, LatentJudge]:
    rng = np.random.default_rng(seed)
    ids = [f"id,{i}" if i % 3 else f"é {i}" for i in range(n)]  # IDs that need quoting
    texts = [f"Sample {i}: " + "words " * (i % 5 + 1) for i in range(n)]
    quality = dict(zip(texts, rng.normal(0, spread, n), strict=True))
    judge = LatentJudge(quality, noise=0.7, position_bias=0.3, lapse=0.05, seed=seed)
    return pl.DataFrame({"ID": ids, "text": texts}), judge


def reference(samples: pl.DataFrame, judge: LatentJudge, pairs: int = 6, rounds: int = 4):  # type: ignore[no-untyped-def]
    design = Design(seed=7, pairs_per_round=pairs)
    stop = StopRule(target_reliability=1.0, stability=1.0, max_rounds=rounds)
    return simulate_adaptive(samples, judge.judge_pairs, design=design, stop=stop)


# ---------------------------------------------------------------- choosing pairs


def test_pairs_are_a_function_of_seed_and_earlier_verdicts() -> None:
    samples, judge = world(20)
    design = Design(seed=3, pairs_per_round=10)
    study = Study(samples, design, FIXED)
    for _ in range(3):
        pairs = study.next_pairs()
        again = plan_round(samples, design, study.next_round, study.history, study.steer, 10)
        assert pairs.equals(again)
        study.add_round(judge.judge_pairs(pairs), pairs.height)
    other = Study(samples, Design(seed=4, pairs_per_round=10), FIXED)
    assert not other.next_pairs().equals(
        plan_round(samples, design, 0, study.history[:0], None, 10)
    )


def test_caps_positions_and_connectivity() -> None:
    samples, judge = world(16)
    design = Design(seed=1, pairs_per_round=12, max_repeats=2, max_per_text=3)
    stop = StopRule(target_reliability=1.0, stability=1.0, max_rounds=12)
    result = simulate_adaptive(samples, judge.judge_pairs, design=design, stop=stop)
    history = result.results
    pair_counts = Counter(tuple(sorted(p)) for p in history.select("ID1", "ID2").iter_rows())
    assert max(pair_counts.values()) <= 2
    # A repeat is shown the other way round from the first time.
    shown = Counter(history.select("ID1", "ID2").iter_rows())
    assert max(shown.values()) == 1
    later = history.filter(pl.col("round") > 0)
    per_text = pl.concat(
        [
            later.select("round", pl.col("ID1").alias("id")),
            later.select("round", pl.col("ID2").alias("id")),
        ]
    )
    assert per_text.group_by("round", "id").len()["len"].max() <= 3  # type: ignore[operator]
    # Positions balance while most pairs are fresh (a repeat is flipped whatever the balance).
    early = history.filter(pl.col("round") < 6)
    first = Counter(early["ID1"])
    second = Counter(early["ID2"])
    imbalance = [abs(first[i] - second[i]) for i in samples["ID"]]
    assert max(imbalance) <= 2 and sum(imbalance) <= samples.height, imbalance
    assert set(result.scores["id"]) == set(samples["ID"])  # round 0 reached every text


def test_adaptive_pairs_are_closer_than_random_ones() -> None:
    samples, judge = world(40, spread=1.5)
    runs = {}
    for strategy in ("adaptive", "random"):
        design = Design(seed=2, pairs_per_round=20, strategy=strategy)  # type: ignore[arg-type]
        stop = StopRule(target_reliability=1.0, stability=1.0, max_rounds=8)
        runs[strategy] = simulate_adaptive(samples, judge.judge_pairs, design=design, stop=stop)
    texts = dict(samples.iter_rows())

    def information(history: pl.DataFrame) -> float:
        later = history.filter(pl.col("round") > 0)
        p = [
            judge.probability(texts[a], texts[b]) for a, b in later.select("ID1", "ID2").iter_rows()
        ]
        return float(np.mean([q * (1 - q) for q in p]))

    assert information(runs["adaptive"].results) > information(runs["random"].results)


@pytest.mark.parametrize("dense", [True, False])
def test_large_studies_use_neighbour_windows_and_diagonal_posteriors(
    dense: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pairbatch.adaptive_select as select

    monkeypatch.setattr(select, "DENSE_LIMIT", 1500 if dense else 100)
    samples, judge = world(400)  # 79,800 pairs: past ALL_PAIRS_LIMIT, so windows
    study = Study(samples, Design(seed=2, pairs_per_round=150), FIXED)
    study.add_round(judge.judge_pairs(study.next_pairs()), 400)
    pairs = study.next_pairs()
    assert pairs.height == 150
    assert (pairs["ID1"] != pairs["ID2"]).all()
    keys = {tuple(sorted(p)) for p in pairs.select("ID1", "ID2").iter_rows()}
    assert len(keys) == 150
    load = Counter(pairs["ID1"]) + Counter(pairs["ID2"])
    assert max(load.values()) <= Design(pairs_per_round=150).per_text_cap(400, 150)


# ---------------------------------------------------------------- stopping


def test_stops_at_target_with_the_reason_and_round_table() -> None:
    samples, judge = world(12, spread=3.0)
    stop = StopRule(target_reliability=0.8, stability=0.9, max_rounds=30)
    result = simulate_adaptive(
        samples, judge.judge_pairs, design=Design(pairs_per_round=12), stop=stop
    )
    assert result.stopped_because == "target"
    last = result.rounds.row(-1, named=True)
    assert last["reliability"] >= 0.8 and last["stability"] >= 0.9
    assert result.rounds.height < 30
    assert result.rounds["total_comparisons"].to_list() == list(
        np.cumsum(result.rounds["comparisons"])
    )
    assert result.round_scores["round"].n_unique() == result.rounds.height


def test_scores_are_the_regularised_fit_and_reliability_the_unpenalised_one() -> None:
    samples, judge = world(12, spread=3.0)
    stop = StopRule(target_reliability=2.0, stability=2.0, max_rounds=3)
    result = simulate_adaptive(
        samples, judge.judge_pairs, design=Design(pairs_per_round=12), stop=stop
    )
    verdicts = result.results.drop("round")
    shrunk = fit_scores(verdicts, prior_sd=1.5)
    plain = fit_scores(verdicts)
    assert_frame_equal(result.scores, shrunk.scores, rel_tol=1e-9)
    assert_frame_equal(result.mle_scores, plain.scores, rel_tol=1e-9)
    assert result.rounds["reliability"][-1] == pytest.approx(plain.reliability)
    # The prior pulls the scores in: the regularised spread is the smaller one.
    assert result.scores["theta"].std() < result.mle_scores["theta"].std()


def test_budget_cuts_the_last_round_and_round_zero_is_never_cut() -> None:
    samples, judge = world(12)
    stop = StopRule(target_reliability=1.0, stability=1.0, max_rounds=20, max_comparisons=25)
    result = simulate_adaptive(
        samples, judge.judge_pairs, design=Design(pairs_per_round=6), stop=stop
    )
    assert result.stopped_because == "max_comparisons"
    assert result.comparisons == 25 and result.rounds["comparisons"].to_list() == [12, 6, 6, 1]
    with pytest.raises(InputError, match="below round 0"):
        simulate_adaptive(
            samples,
            judge.judge_pairs,
            design=Design(pairs_per_round=6),
            stop=StopRule(max_comparisons=5),
        )


def test_exhausted_when_every_pair_is_at_its_cap() -> None:
    samples, judge = world(4)
    stop = StopRule(target_reliability=1.0, stability=1.0, max_rounds=50)
    design = Design(pairs_per_round=3, max_repeats=1)
    result = simulate_adaptive(samples, judge.judge_pairs, design=design, stop=stop)
    assert result.stopped_because == "exhausted"
    assert result.comparisons == 6  # each of the 4 * 3 / 2 pairs once


# ---------------------------------------------------------------- through batches


async def study(emu: ProviderEmulator, samples: pl.DataFrame, out: Path, **kw: object):  # type: ignore[no-untyped-def]
    options: dict[str, object] = {
        "pairs_per_round": 6,
        "max_rounds": 4,
        "target_reliability": 1.0,
        "stability": 1.0,
        "seed": 7,
        "interval_seconds": 0.05,
    } | kw
    return await run_adaptive(
        samples,
        backend="openai",
        model="gpt-4.1-mini",
        trait_name=NAME,
        trait_description=DESCRIPTION,
        output_dir=out,
        api_key="test-key",
        base_url=emu.base_url("openai"),
        **options,  # type: ignore[arg-type]
    )


async def test_a_study_through_batches_equals_its_simulation_and_reruns_free(
    tmp_path: Path,
) -> None:
    samples, judge = world()
    out = tmp_path / "study"
    async with ProviderEmulator(latency=0.05, judge=judge) as emu:
        result = await study(emu, samples, out)
        assert emu.stats.batches_created["openai"] == 4
        again = await study(emu, samples, out)
        assert emu.stats.batches_created["openai"] == 4  # a finished study pays nothing
        more = await study(emu, samples, out, max_rounds=5)  # stopping rules may change
        assert emu.stats.batches_created["openai"] == 5
        with pytest.raises(InputError, match="seed"):
            await study(emu, samples, out, seed=8)
    expected = reference(samples, judge)
    assert result.results.equals(expected.results)
    # Same verdicts; the fits may differ in the last bits (polars groups in any order).
    assert_frame_equal(result.scores, expected.scores, rel_tol=1e-9)
    assert_frame_equal(result.rounds, expected.rounds, rel_tol=1e-9)
    assert again.results.equals(result.results) and more.rounds.height == 5
    assert result.stopped_because == "max_rounds" and result.output_dir == out
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [f"round_00{i}" for i in range(5)]
    settings = orjson.loads((out / SETTINGS_NAME).read_bytes())
    assert settings["seed"] == 7 and settings["max_rounds"] == 5 and "api_key" not in settings
    png = plot_rounds(result, tmp_path / "rounds.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("prior", [0.0, -1.0, float("nan")])
async def test_a_bad_steering_prior_is_refused_before_anything_is_written(
    tmp_path: Path, prior: float
) -> None:
    samples, judge = world()
    out = tmp_path / "study"
    async with ProviderEmulator(latency=0.05, judge=judge) as emu:
        with pytest.raises(InputError, match="steer_prior_sd"):
            await study(emu, samples, out, steer_prior_sd=prior)
        assert emu.stats.batches_created["openai"] == 0
    assert not out.exists()


@pytest.mark.parametrize(
    ("rows", "options", "message"),
    [
        (2, {}, "at least three samples, got 2"),
        # No samples: the default round size (one per sample) is not what is blamed.
        (0, {"pairs_per_round": None}, "at least three samples, got 0"),
        # 0 is a value, not "use the default".
        (12, {"pairs_per_round": 0}, "pairs_per_round must be >= 1, got 0"),
        # Round 0 of 12 texts is 12 comparisons: a budget of 5 can never be kept.
        (12, {"max_comparisons": 5}, "max_comparisons=5 is below round 0's"),
        # resume refuses it, but only after round 0 would have been paid for.
        (12, {"interval_seconds": -1}, "'interval_seconds' must be a finite number >= 0"),
        # Refused by submit itself, after the study wrote its settings: they go again.
        (12, {"batch_size": 4, "n_segments": 2}, "only one of 'batch_size' or 'n_segments'"),
    ],
)
async def test_bad_study_input_is_refused_before_anything_is_written(
    tmp_path: Path, rows: int, options: dict[str, object], message: str
) -> None:
    samples, judge = world()
    out = tmp_path / "study"
    async with ProviderEmulator(latency=0.05, judge=judge) as emu:
        with pytest.raises(InputError, match=message):
            await study(emu, samples.head(rows), out, **options)
        assert emu.stats.batches_created["openai"] == 0
    assert not out.exists()


async def test_a_refused_first_call_leaves_a_folder_it_did_not_make_as_it_was(
    tmp_path: Path,
) -> None:
    samples, judge = world()
    out = tmp_path / "study"
    out.mkdir()
    async with ProviderEmulator(latency=0.05, judge=judge) as emu:
        with pytest.raises(InputError, match="only one of"):
            await study(emu, samples, out, batch_size=4, n_segments=2)
    assert out.is_dir() and not (out / "adaptive.json").exists()
    assert not (out / "round_000").exists()


async def test_a_second_writer_of_a_study_is_refused(tmp_path: Path) -> None:
    samples, judge = world()
    out = tmp_path / "study"
    out.mkdir()
    lock = RunLock(out, "adaptive")
    lock.acquire()
    try:
        async with ProviderEmulator(latency=0.05, judge=judge) as emu:
            with pytest.raises(RunLockedError):
                await study(emu, samples, out)
            assert emu.stats.batches_created["openai"] == 0
    finally:
        lock.release()


def test_sync_wrapper_runs_inside_an_event_loop(tmp_path: Path) -> None:
    samples, judge = world(6)

    async def main() -> int:
        async with ProviderEmulator(latency=0.05, judge=judge) as emu:
            result = await asyncio.to_thread(
                sync.run_adaptive,
                samples,
                backend="openai",
                model="gpt-4.1-mini",
                trait_name=NAME,
                trait_description=DESCRIPTION,
                output_dir=tmp_path / "s",
                max_rounds=2,
                interval_seconds=0.05,
                api_key="k",
                base_url=emu.base_url("openai"),
            )
            return int(result.rounds.height)

    assert asyncio.run(main()) == 2


# ---------------------------------------------------------------- killed anywhere


def cli_args(samples_csv: Path, out: Path) -> list[str | Path]:
    return [
        "adaptive",
        samples_csv,
        "--output-dir",
        out,
        "--backend",
        "openai",
        "--model",
        "gpt-4.1-mini",
        "--trait",
        "overall_quality",
        "--pairs-per-round",
        "6",
        "--max-rounds",
        "4",
        "--target-reliability",
        "1",
        "--stability",
        "1",
        "--seed",
        "7",
        "--interval-seconds",
        "0.05",
    ]


async def kill_while_polling(args: list[str | Path], env: dict[str, str], folder: Path) -> Ran:
    """Start the study and SIGKILL it once ``folder``'s batch exists (it is then polling)."""
    base = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    proc = await asyncio.create_subprocess_exec(
        *CLI, *map(str, args), env=base | env, stdout=asyncio.subprocess.DEVNULL
    )
    for _ in range(600):
        await asyncio.sleep(0.02)
        if holds_registry(folder) and all(j.batch_id for j in read_registry(folder)):
            break
    proc.send_signal(signal.SIGKILL)
    return Ran(await proc.wait(), "", "")


@pytest.mark.parametrize(
    "point",
    [
        "submit:intents",  # round 0: intents recorded, no batch created
        "create:after:1",  # round 0 (segments count from 1): batch created, its id not yet recorded
        "adaptive:chosen:1",  # round 1 chosen, nothing written
        "adaptive:submitted:2",  # round 2 submitted, not yet polled
        "adaptive:resumed:1",  # between rounds 1 and 2
        "polling:1",  # SIGKILL from outside while round 1's batch is being polled
    ],
)
async def test_a_study_killed_anywhere_finishes_as_an_uninterrupted_one(
    tmp_path: Path, point: str
) -> None:
    samples, judge = world()
    samples_csv = tmp_path / "samples.csv"
    samples.write_csv(samples_csv)
    out = tmp_path / "study"
    args = cli_args(samples_csv, out)
    latency = 0.5 if point.startswith("polling") else 0.05
    async with ProviderEmulator(latency=latency, judge=judge) as emu:
        env = emu.env()
        if point.startswith("polling"):
            killed = await kill_while_polling(args, env, round_folder(out, int(point[-1])))
        else:
            killed = await run_cli(*args, env=env | {"PAIRBATCH_CRASH_AT": point})
        assert killed.rc == -signal.SIGKILL, killed.stderr
        extra: list[str | Path] = ["--scores-out", tmp_path / "scores.csv"]
        if point == "adaptive:resumed:1":
            extra += ["--plot", tmp_path / "rounds.png"]
        done = await run_cli(*args, *extra, env=env)
        assert done.rc == 0, done.stderr
        assert "stopped: max_rounds after 4 round(s)" in done.stdout
        assert emu.stats.batches_created["openai"] == 4  # one per round: none paid twice
        result = await study(emu, samples, out)  # reads the finished study back
        assert emu.stats.batches_created["openai"] == 4
    assert result.results.equals(reference(samples, judge).results)
    assert_frame_equal(pl.read_csv(tmp_path / "scores.csv"), result.scores, rel_tol=1e-9)
    if point == "adaptive:resumed:1":
        assert (tmp_path / "rounds.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--pairs-per-round", "0"], "--pairs-per-round: must be at least 1"),
        (["--batch-size", "0"], "--batch-size: must be at least 1"),
        (["--interval-seconds", "-1"], "--interval-seconds"),
        (["--max-comparisons", "3"], "below round 0"),
        (["--batch-size", "4", "--n-segments", "2"], "only one of"),
        (["--plot", "{file}/rounds.png"], "is a file, not a folder"),
        (["--scores-out", "{file}/deeper/scores.csv"], "is a file, not a folder"),
        (["--plot", "{folder}"], "is a folder"),
        (["--scores-out", "scores.txt"], "must end in .csv or .parquet"),
    ],
)
async def test_bad_adaptive_flags_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, flags: list[str], needle: str
) -> None:
    samples, judge = world()
    samples_csv = tmp_path / "samples.csv"
    samples.write_csv(samples_csv)
    out = tmp_path / "study"
    names = {"file": samples_csv, "folder": tmp_path}
    argv = [*cli_args(samples_csv, out), *(f.format(**names) for f in flags)]
    async with ProviderEmulator(latency=0.05, judge=judge) as emu:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": emu.base_url("openai")}
        ran = await run_cli(*map(str, argv), env=env)
        assert emu.stats.batches_created["openai"] == 0
    assert ran.rc == 2, (ran.stdout, ran.stderr)
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], ran.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.csv"]


async def test_adaptive_outputs_go_into_folders_made_for_them(tmp_path: Path) -> None:
    samples, judge = world()
    samples_csv = tmp_path / "samples.csv"
    samples.write_csv(samples_csv)
    plot, table = tmp_path / "figs" / "rounds.png", tmp_path / "tables" / "scores.csv"
    argv = [*cli_args(samples_csv, tmp_path / "study"), "--max-rounds", "2"]
    argv += ["--plot", plot, "--scores-out", table]
    async with ProviderEmulator(latency=0.05, judge=judge) as emu:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": emu.base_url("openai")}
        ran = await run_cli(*map(str, argv), env=env)
    assert ran.rc == 0, ran.stderr
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert pl.read_csv(table).height == samples.height
