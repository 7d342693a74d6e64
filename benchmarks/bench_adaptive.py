"""Adaptive vs random designs against a judge with planted qualities.

Two kinds of figures, labelled in the output:

* **direct**: the study loop (``simulate_adaptive``, the same pair choice and fits as
  ``run_adaptive``) with verdicts from ``LatentJudge.judge_pairs``, no batches: for
  each seed and design, the comparisons needed until the reported scores' Spearman
  correlation with the planted qualities reaches 0.9 (linear between the two rounds
  that straddle it; the round-granular count is printed too, and the same figures for
  the unpenalised MLE fit), and per round the reported (scale-separation) reliability
  next to the true agreement, so inflation shows, and the information the round's
  verdicts carried about the planted qualities (:func:`information_share`);
* **emulator**: one adaptive study through ``run_adaptive`` and real batches on the
  loopback ProviderEmulator serving the same LatentJudge, checked against the direct
  run of the same seed (it must choose the same pairs and get the same verdicts).

    python benchmarks/bench_adaptive.py --seeds 10        # 200 texts, seeds 0-9
    python benchmarks/bench_adaptive.py --seeds 10 --first-seed 10 --emulator-rounds 0

Seed ranges may run in parallel processes (one per core): OpenBLAS is held to one thread
here unless ``OPENBLAS_NUM_THREADS`` says otherwise. Its threads gain nothing on these
200-text fits (9.2 s a seed at 25 pairs per round either way) and two processes with
them ran 5.8x slower each (53 s a seed, against 8.8 s with one thread).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS

import numpy as np
import polars as pl

from pairbatch.adaptive import Design, StopRule, run_adaptive, simulate_adaptive
from pairbatch.adaptive_select import spearman
from pairbatch.adaptive_study import Study
from pairbatch.prompts import TRAITS
from pairbatch.testing import ProviderEmulator
from pairbatch.testing.judge import LatentJudge

NEVER = StopRule(target_reliability=2.0, stability=2.0)  # run every round: a fixed budget


def world(n: int, seed: int, noise: float, bias: float, lapse: float):
    rng = np.random.default_rng(seed)
    quality = rng.normal(0.0, 1.0, n)
    ids = [f"s{i:03d}" for i in range(n)]
    texts = [f"Essay {i} of study {seed}: " + "lorem ipsum " * (i % 7 + 1) for i in range(n)]
    samples = pl.DataFrame({"ID": ids, "text": texts})
    judge = LatentJudge(
        dict(zip(texts, quality, strict=True)),
        noise=noise,
        position_bias=bias,
        lapse=lapse,
        seed=seed,
    )
    return samples, judge, dict(zip(ids, quality, strict=True))


def truth_rho(scores: pl.DataFrame, truth: dict[str, float]) -> float:
    return spearman(scores["theta"].to_numpy(), [truth[i] for i in scores["id"]])


# comparisons, reliability, rho, MLE rho, the round's information share (see below)
Trace = list[tuple[int, float, float, float, float]]


def information_share(judge: LatentJudge, pairs: pl.DataFrame) -> float:
    """The mean Fisher information a round's verdicts carry about the two texts' quality
    difference, under the planted truth, as a share of the most one verdict can carry
    (a pair the judge calls 50:50). It shows where a design's saving comes from: a
    random pair of far-apart texts is nearly certain and teaches little."""
    lapse, noise = judge.lapse, judge.noise
    best = (1 - lapse) ** 2 / (4 * noise * noise)
    shares = []
    for text1, text2 in zip(pairs["text1"], pairs["text2"], strict=True):
        p = judge.probability(text1, text2)  # the judge's own model, lapses included
        s = (p - lapse / 2) / (1 - lapse)  # the logistic part, whose slope carries it
        shares.append(((1 - lapse) * s * (1 - s) / noise) ** 2 / (p * (1 - p)) / best)
    return statistics.mean(shares) if shares else math.nan


def run_direct(args: argparse.Namespace, seed: int, strategy: str) -> Trace:
    samples, judge, truth = world(args.texts, seed, args.noise, args.bias, args.lapse)
    trace: Trace = []
    shares: list[float] = []

    def judge_round(pairs: pl.DataFrame) -> pl.DataFrame:
        shares.append(information_share(judge, pairs))
        return judge.judge_pairs(pairs)

    def on_round(study: Study) -> None:
        row = study.rows[-1]
        rho = truth_rho(study.fits[-1].scores, truth)  # the reported (regularised) fit
        mle = truth_rho(study.mle_fits[-1].scores, truth)
        total = int(row["total_comparisons"])
        trace.append((total, float(row["reliability"]), rho, mle, shares[-1]))

    design = Design(seed=seed, pairs_per_round=args.pairs_per_round, strategy=strategy)  # type: ignore[arg-type]
    stop = StopRule(target_reliability=2.0, stability=2.0, max_rounds=args.rounds)
    simulate_adaptive(samples, judge_round, design=design, stop=stop, on_round=on_round)
    return trace


def needed(trace: Trace, level: float, column: int = 2, granular: bool = False) -> float:
    """Comparisons until ``trace[column]`` first reaches ``level``: interpolated
    linearly between the rounds before and at the crossing, or (``granular``) the
    count at the end of the round that crosses it."""
    before: tuple[float, float] | None = None
    for row in trace:
        count, rho = float(row[0]), row[column]
        if rho >= level:
            if granular or before is None:
                return count
            return before[0] + (count - before[0]) * (level - before[1]) / (rho - before[1])
        before = (count, rho)
    return math.inf


def saving_interval(r: np.ndarray, a: np.ndarray) -> tuple[float, float]:
    """A 95% percentile-bootstrap interval of the saving ``1 - mean(a) / mean(r)`` (the
    comparisons each seed needed, random and adaptive), resampling seeds: each seed's
    pair of designs stays together, as the seeds' worlds differ far more than the
    designs do. Seeded, so runs repeat."""
    if r.size < 2 or not (np.isfinite(r).all() and np.isfinite(a).all()):
        return math.nan, math.nan
    picks = np.random.default_rng(0).integers(0, r.size, size=(10_000, r.size))
    savings = 1.0 - a[picks].mean(axis=1) / r[picks].mean(axis=1)
    low, high = np.percentile(savings, [2.5, 97.5])
    return float(low), float(high)


def direct(args: argparse.Namespace) -> None:
    print(
        f"direct: {args.texts} texts, qualities N(0,1), noise {args.noise} (logit SD "
        f"{1 / args.noise:.2f}), position bias {args.bias}, lapse {args.lapse}, "
        f"{args.pairs_per_round} pairs per round, {args.rounds} rounds"
    )
    traces: dict[str, list[Trace]] = {"random": [], "adaptive": []}
    start = time.perf_counter()
    print(f"comparisons to Spearman >= {args.level} with the planted qualities")
    print(f"{'seed':>4} {'random':>8} {'adaptive':>9} {'saving':>7}")
    for seed in args.seed_list:
        for strategy in traces:
            traces[strategy].append(run_direct(args, seed, strategy))
        r, a = needed(traces["random"][-1], args.level), needed(traces["adaptive"][-1], args.level)
        print(f"{seed:>4} {r:>8.0f} {a:>9.0f} {1 - a / r:>7.1%}")
    for label, column, granular in (
        ("mean", 2, False),
        ("mean, round-granular", 2, True),
        ("mean, unpenalised MLE fit", 3, False),
    ):
        r, a = (
            np.array([needed(t, args.level, column, granular) for t in traces[strategy]])
            for strategy in ("random", "adaptive")
        )
        mean_r, mean_a = float(r.mean()), float(a.mean())
        low, high = saving_interval(r, a)
        print(
            f"{label}: random {mean_r:.0f}, adaptive {mean_a:.0f}, saving {1 - mean_a / mean_r:.1%}"
            f" (95% bootstrap interval over seeds {low:.1%} to {high:.1%})"
        )
    # Round 0 is the same random connected design for both, so the saving of the rounds
    # that differ is printed as well (each trace less its own round 0).
    first = float(traces["random"][0][0][0])
    r, a = (
        np.array([needed(t, args.level) - t[0][0] for t in traces[strategy]])
        for strategy in ("random", "adaptive")
    )
    low, high = saving_interval(r, a)
    print(
        f"after the shared round 0 ({first:.0f} comparisons): random {r.mean():.0f}, adaptive "
        f"{a.mean():.0f}, saving {1 - a.mean() / r.mean():.1%} ({low:.1%} to {high:.1%})"
    )
    print(f"({time.perf_counter() - start:.1f} s)")
    print("\nper round, mean over seeds: reported reliability vs Spearman with the truth, and")
    print("the information the round's verdicts carried (share of the most a verdict can carry)")
    print(
        f"{'comparisons':>11} | {'random rel':>10} {'true rho':>8} {'info':>5} |"
        f" {'adaptive rel':>12} {'true rho':>8} {'info':>5}"
    )
    for i in range(args.rounds):
        cells = []
        for strategy in ("random", "adaptive"):
            rows = [t[i] for t in traces[strategy] if len(t) > i]
            cells.append(tuple(statistics.mean(r[k] for r in rows) for k in (1, 2, 4)))
        count = traces["random"][0][i][0]
        (rel_r, rho_r, info_r), (rel_a, rho_a, info_a) = cells
        print(
            f"{count:>11} | {rel_r:>10.3f} {rho_r:>8.3f} {info_r:>5.2f} |"
            f" {rel_a:>12.3f} {rho_a:>8.3f} {info_a:>5.2f}"
        )


async def through_emulator(args: argparse.Namespace) -> None:
    seed = args.seed_list[0]
    samples, judge, truth = world(args.texts, seed, args.noise, args.bias, args.lapse)
    name, description = TRAITS["overall_quality"]
    stop = StopRule(target_reliability=2.0, stability=2.0, max_rounds=args.emulator_rounds)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        async with ProviderEmulator(latency=0.05, judge=judge) as emu:
            result = await run_adaptive(
                samples,
                backend="openai",
                model="gpt-4.1-mini",
                trait_name=name,
                trait_description=description,
                output_dir=Path(tmp) / "study",
                pairs_per_round=args.pairs_per_round,
                max_rounds=args.emulator_rounds,
                target_reliability=0.99,
                stability=0.99,
                interval_seconds=0.05,
                seed=seed,
                api_key="test-key",
                base_url=emu.base_url("openai"),
            )
            creates = emu.stats.batches_created["openai"]
    elapsed = time.perf_counter() - start
    design = Design(seed=seed, pairs_per_round=args.pairs_per_round)
    sim = simulate_adaptive(samples, judge.judge_pairs, design=design, stop=stop)
    same = result.results.equals(sim.results)
    print(
        f"\nemulator: seed {seed}, {result.rounds.height} rounds through run_adaptive, "
        f"{result.comparisons} comparisons, {creates} batches created, {elapsed:.1f} s; "
        f"stopped: {result.stopped_because}; verdicts identical to the direct run: {same}"
    )
    print(f"{'round':>5} {'comparisons':>11} {'reliability':>11} {'stability':>9} {'true rho':>8}")
    for row in result.rounds.iter_rows(named=True):
        fit = result.round_scores.filter(pl.col("round") == row["round"])
        print(
            f"{row['round']:>5} {row['total_comparisons']:>11} {row['reliability']:>11.3f} "
            f"{row['stability']:>9.3f} {truth_rho(fit, truth):>8.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="e.g. 10 for held-out seeds")
    parser.add_argument("--pairs-per-round", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--bias", type=float, default=0.3)
    parser.add_argument("--lapse", type=float, default=0.05)
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--emulator-rounds", type=int, default=8)
    args = parser.parse_args()
    args.seed_list = list(range(args.first_seed, args.first_seed + args.seeds))
    direct(args)
    if args.emulator_rounds:
        asyncio.run(through_emulator(args))


if __name__ == "__main__":
    main()
