"""Elo ratings over random orders of the comparisons, with EloChoice's reliability.

Mirrors pairwiseLLM's ``fit_elo_model``, which calls ``EloChoice::elochoice`` (start
value 0, ``kval`` 100) and ``EloChoice::reliability``. Elo depends on the sequence, so
the ratings are averaged over ``runs`` sequences: the given order first, then random
permutations from ``seed``. Pure Python (the update is sequential); no extra needed.
"""

from __future__ import annotations

import random
import statistics

import attrs
import polars as pl

from pairbatch.errors import InputError
from pairbatch.pairs import check_verdicts

__all__ = ["EloFit", "elo"]


@attrs.frozen
class EloFit:
    """``ratings``: ``id, elo`` (mean over runs), ``elo_sd``, ``rank, n, wins``.

    ``reliability`` is EloChoice's index ``1 - upsets / trials`` (an upset: the winner
    was rated below the loser before the trial; trials between equal ratings are left
    out), averaged over runs; ``reliability_weighted`` weights each trial by the rating
    difference. ``per_run`` holds both indices for every run."""

    ratings: pl.DataFrame
    reliability: float
    reliability_weighted: float
    runs: int
    per_run: pl.DataFrame


def _one_run(
    trials: list[tuple[int, int]], n_items: int, k: float, start: float
) -> tuple[list[float], float, float]:
    rating = [start] * n_items
    upsets = decisive = 0
    upset_weight = total_weight = 0.0
    for w, loser in trials:
        diff = rating[w] - rating[loser]
        if diff != 0:
            decisive += 1
            total_weight += abs(diff)
            if diff < 0:
                upsets += 1
                upset_weight += -diff
        expected = 1.0 / (1.0 + 10.0 ** (-diff / 400.0))
        change = k * (1.0 - expected)
        rating[w] += change
        rating[loser] -= change
    rel = 1.0 - upsets / decisive if decisive else float("nan")
    rel_w = 1.0 - upset_weight / total_weight if total_weight else float("nan")
    return rating, rel, rel_w


def elo(
    results: pl.DataFrame, *, k: float = 100.0, runs: int = 5, seed: int = 0, start: float = 0.0
) -> EloFit:
    """Elo ratings from ``ID1, ID2, better_id`` rows in their given order."""
    missing = [c for c in ("ID1", "ID2", "better_id") if c not in results.columns]
    if missing:
        raise InputError(f"results must contain columns ID1, ID2, better_id; missing {missing}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise InputError(f"runs must be a positive integer, got {runs!r}")
    check_verdicts(results)
    frame = results.select(pl.col("ID1", "ID2", "better_id").cast(pl.Utf8)).drop_nulls()
    loser = pl.when(pl.col("better_id") == pl.col("ID1")).then(pl.col("ID2"))
    frame = frame.with_columns(
        loser.when(pl.col("better_id") == pl.col("ID2")).then(pl.col("ID1")).alias("loser")
    )
    if frame["loser"].null_count():
        raise InputError("results: a better_id is neither ID1 nor ID2")
    if frame.height == 0:
        raise InputError("results hold no verdicts to rate")
    ids = sorted(set(frame["ID1"]) | set(frame["ID2"]))
    index = {v: i for i, v in enumerate(ids)}
    trials = [
        (index[w], index[lo]) for w, lo in zip(frame["better_id"], frame["loser"], strict=True)
    ]
    rng = random.Random(seed)
    sums = [[0.0] * runs for _ in ids]
    rels: list[tuple[int, float, float]] = []
    for run in range(runs):
        order = trials if run == 0 else rng.sample(trials, len(trials))
        rating, rel, rel_w = _one_run(order, len(ids), k, start)
        for i, value in enumerate(rating):
            sums[i][run] = value
        rels.append((run + 1, rel, rel_w))
    means = [statistics.fmean(r) for r in sums]
    sds = [statistics.stdev(r) if runs > 1 else 0.0 for r in sums]
    wins = frame.group_by("better_id").len()
    games = pl.concat([frame["ID1"], frame["ID2"]]).value_counts(name="n")
    ratings = (
        pl.DataFrame({"id": ids, "elo": means, "elo_sd": sds})
        .join(games.rename({frame["ID1"].name: "id"}), on="id", how="left")
        .join(wins.rename({"better_id": "id", "len": "wins"}), on="id", how="left")
        .with_columns(
            pl.col("elo").rank("min", descending=True).cast(pl.Int64).alias("rank"),
            pl.col("n").cast(pl.Int64),
            pl.col("wins").fill_null(0).cast(pl.Int64),
        )
        .select("id", "elo", "elo_sd", "rank", "n", "wins")
        .sort("rank", "id")
    )
    per_run = pl.DataFrame(
        rels, schema=["run", "reliability", "reliability_weighted"], orient="row"
    )
    return EloFit(
        ratings=ratings,
        reliability=float(per_run["reliability"].mean()),  # type: ignore[arg-type]
        reliability_weighted=float(per_run["reliability_weighted"].mean()),  # type: ignore[arg-type]
        runs=runs,
        per_run=per_run,
    )
