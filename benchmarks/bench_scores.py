"""Bradley–Terry on 10,000 texts and 1,000,000 comparisons: pairbatch vs baselines.

Run by hand (not in tests): ``.venv/bin/python benchmarks/bench_scores.py [--items N
--comparisons M]``. Simulates verdicts from a Bradley–Terry model with a position
effect, then times and measures the peak traced memory (tracemalloc) of
``pairbatch.scores.bradley_terry`` against baselines measured in the same run: scipy's
L-BFGS-B on the same likelihood with its analytic gradient, and ``choix.ilsr_pairwise``
when choix is installed. Prints times, memory, ratios and how well the estimates agree.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import minimize

from pairbatch.scores import bradley_terry


def simulate(items: int, comparisons: int, seed: int) -> tuple[pl.DataFrame, Any]:
    rng = np.random.default_rng(seed)
    truth = rng.normal(0, 1.0, items)
    a = rng.integers(0, items, comparisons)
    b = (a + rng.integers(1, items, comparisons)) % items  # never a self-pair
    p_first = 1 / (1 + np.exp(-(truth[a] - truth[b] + 0.3)))
    first_wins = rng.random(comparisons) < p_first
    ids = np.array([f"t{i:05d}" for i in range(items)])
    frame = pl.DataFrame({"ID1": ids[a], "ID2": ids[b]}).with_columns(
        pl.when(pl.Series(first_wins))
        .then(pl.col("ID1"))
        .otherwise(pl.col("ID2"))
        .alias("better_id")
    )
    return frame, truth


def measure(name: str, fn: Callable[[], Any]) -> tuple[Any, float, float]:
    tracemalloc.start()
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"{name:<34} {seconds:8.2f} s  {peak:8.1f} MiB peak")
    return out, seconds, peak


def indices(frame: pl.DataFrame) -> tuple[Any, Any, int]:
    """Winner and loser indices, the baselines' input."""
    ids = pl.concat([frame["ID1"], frame["ID2"]]).unique().sort()
    index = {v: i for i, v in enumerate(ids)}
    loser = (
        pl.when(pl.col("better_id") == pl.col("ID1")).then(pl.col("ID2")).otherwise(pl.col("ID1"))
    )
    pairs = frame.select(
        pl.col("better_id").replace_strict(index, return_dtype=pl.Int64).alias("w"),
        loser.replace_strict(index, return_dtype=pl.Int64).alias("l"),
    )
    return pairs["w"].to_numpy(), pairs["l"].to_numpy(), len(ids)


def scipy_baseline(w: Any, loser: Any, k: int) -> Any:
    """L-BFGS-B on the plain BT negative log-likelihood, analytic gradient, then centred."""

    def objective(theta: Any) -> tuple[float, Any]:
        d = theta[w] - theta[loser]
        value = float(np.sum(np.logaddexp(0.0, -d)))
        r = 1 / (1 + np.exp(d))  # P(upset)
        grad = np.bincount(loser, r, k) - np.bincount(w, r, k)
        return value, grad

    res = minimize(
        objective,
        np.zeros(k),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 5000, "gtol": 1e-9, "ftol": 1e-15},
    )
    return res.x - res.x.mean()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--choix", action="store_true", help="also time choix.ilsr_pairwise (dense k x k chain)"
    )
    args = parser.parse_args()
    frame, truth = simulate(args.items, args.comparisons, args.seed)
    print(f"{args.items} items, {frame.height} comparisons")
    fit, t_ours, m_ours = measure("pairbatch bradley_terry", lambda: bradley_terry(frame))
    print(
        f"  iterations {fit.iterations}, converged {fit.converged}, SEs {fit.se_method}, reliability {fit.reliability:.4f}"
    )
    pe, _, _ = measure(
        "pairbatch bradley_terry + position", lambda: bradley_terry(frame, position_effect=True)
    )
    assert pe.position_effect is not None
    print(
        f"  position effect {pe.position_effect.estimate:.4f} ± {pe.position_effect.se:.4f} (true 0.3)"
    )
    ours = fit.scores.sort("id")["theta"].to_numpy()
    # Timed from the same string frame, so both sides pay for turning IDs into indices.
    base, t_base, m_base = measure(
        "scipy L-BFGS-B (same likelihood)", lambda: scipy_baseline(*indices(frame))
    )
    print(
        f"  ratio time {t_base / t_ours:.2f}x, memory {m_base / m_ours:.2f}x; max |diff| {np.max(np.abs(base - ours)):.2e}"
    )
    try:
        import choix
    except ImportError:
        choix = None
    if choix is None or not args.choix:
        print("choix.ilsr_pairwise skipped (pass --choix; it builds a dense k x k chain)")
    else:
        w, loser, k = indices(frame)
        data = list(zip(w.tolist(), loser.tolist(), strict=True))
        est, t_c, m_c = measure(
            "choix.ilsr_pairwise", lambda: choix.ilsr_pairwise(k, data, tol=1e-10)
        )
        est = est - est.mean()
        print(
            f"  ratio time {t_c / t_ours:.2f}x, memory {m_c / m_ours:.2f}x; max |diff| {np.max(np.abs(est - ours)):.2e}"
        )
    corr = np.corrcoef(ours, truth - truth.mean())[0, 1]
    print(f"correlation with the simulated truth: {corr:.4f}")


if __name__ == "__main__":
    main()
