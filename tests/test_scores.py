"""Bradley–Terry against published fits, degenerate data, large-design paths; Elo."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from pairbatch.design import apply_order, balanced_pairs
from pairbatch.errors import InputError
from pairbatch.scores import bradley_terry, elo
from pairbatch.testing.judge import LatentJudge

# Agresti (2002, p. 448) / BradleyTerry2 `citations`: (winner, loser, count).
CITATIONS = [
    ("Biometrika", "Comm Statist", 730),
    ("Comm Statist", "Biometrika", 33),
    ("Biometrika", "JASA", 498),
    ("JASA", "Biometrika", 320),
    ("Biometrika", "JRSS-B", 221),
    ("JRSS-B", "Biometrika", 284),
    ("JASA", "Comm Statist", 813),
    ("Comm Statist", "JASA", 68),
    ("JRSS-B", "Comm Statist", 276),
    ("Comm Statist", "JRSS-B", 17),
    ("JRSS-B", "JASA", 325),
    ("JASA", "JRSS-B", 142),
]

# BradleyTerry2 `baseball` (Agresti 2002, p. 438): home, away, home wins, away wins.
BASEBALL = """Milwaukee,Detroit,4,3;Milwaukee,Toronto,4,2;Milwaukee,New York,4,3;Milwaukee,Boston,6,1
Milwaukee,Cleveland,4,2;Milwaukee,Baltimore,6,0;Detroit,Milwaukee,3,3;Detroit,Toronto,4,2
Detroit,New York,4,3;Detroit,Boston,6,0;Detroit,Cleveland,6,1;Detroit,Baltimore,4,3
Toronto,Milwaukee,2,5;Toronto,Detroit,4,3;Toronto,New York,2,4;Toronto,Boston,4,3
Toronto,Cleveland,4,2;Toronto,Baltimore,6,0;New York,Milwaukee,3,3;New York,Detroit,5,1
New York,Toronto,2,5;New York,Boston,4,3;New York,Cleveland,4,2;New York,Baltimore,6,1
Boston,Milwaukee,5,1;Boston,Detroit,2,5;Boston,Toronto,3,3;Boston,New York,4,2
Boston,Cleveland,5,2;Boston,Baltimore,6,0;Cleveland,Milwaukee,2,5;Cleveland,Detroit,3,3
Cleveland,Toronto,3,4;Cleveland,New York,4,3;Cleveland,Boston,4,2;Cleveland,Baltimore,2,4
Baltimore,Milwaukee,2,5;Baltimore,Detroit,1,5;Baltimore,Toronto,1,6;Baltimore,New York,2,4
Baltimore,Boston,1,6;Baltimore,Cleveland,3,4"""


def rows(triples: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(triples, schema=["ID1", "ID2", "better_id"], orient="row")


def citations() -> pl.DataFrame:
    # Alternate the shown order so the data carry no position information.
    out = []
    for w, loser, n in CITATIONS:
        out += [(w, loser, w) if i % 2 else (loser, w, w) for i in range(n)]
    return rows(out)


def baseball() -> pl.DataFrame:
    out = []
    for line in BASEBALL.replace("\n", ";").split(";"):
        home, away, hw, aw = line.split(",")
        out += [(home, away, home)] * int(hw) + [(home, away, away)] * int(aw)
    return rows(out)


def test_citations_match_bradleyterry2_with_biometrika_as_reference() -> None:
    fit = bradley_terry(citations(), reference="Biometrika")
    got = {r["id"]: (r["theta"], r["se"]) for r in fit.scores.iter_rows(named=True)}
    published = {
        "Comm Statist": (-2.9491, 0.1025),
        "JASA": (-0.4796, 0.0606),
        "JRSS-B": (0.2690, 0.0708),
        "Biometrika": (0.0, 0.0),
    }
    for name, (theta, se) in published.items():
        assert got[name][0] == pytest.approx(theta, abs=1e-3)
        assert got[name][1] == pytest.approx(se, abs=1e-3)
    assert fit.converged and fit.iterations < 20
    assert fit.prior_sd is None and fit.position_effect is None
    assert fit.scores["rank"].to_list() == [1, 2, 3, 4]
    assert fit.scores.filter(pl.col("id") == "JASA")["wins"].item() == 320 + 813 + 142


def test_sum_to_zero_is_the_same_fit_centred() -> None:
    ref = bradley_terry(citations(), reference="Biometrika").scores.sort("id")
    centred = bradley_terry(citations()).scores.sort("id")
    assert centred["theta"].sum() == pytest.approx(0.0, abs=1e-9)
    diff = (centred["theta"] - ref["theta"]).to_numpy()
    assert np.allclose(diff, diff[0], atol=1e-8)
    assert (centred["se"] > 0).all()
    fit = bradley_terry(citations())
    assert 0.9 < fit.reliability < 1.0


def test_baseball_home_advantage_matches_bradleyterry2() -> None:
    # BradleyTerry2 tests/testthat/test-baseball.R, from Agresti (2002) Table 10.11.
    plain = bradley_terry(baseball(), reference="Baltimore")
    estimates = sorted(plain.scores.filter(pl.col("id") != "Baltimore")["theta"].to_list())
    assert [round(x, 2) for x in estimates] == [0.68, 1.11, 1.25, 1.29, 1.44, 1.58]
    assert all(round(se, 1) == 0.3 for se in plain.scores["se"].to_list() if se > 0)
    home = bradley_terry(baseball(), reference="Baltimore", position_effect=True)
    assert home.position_effect is not None
    assert round(home.position_effect.estimate, 3) == 0.302
    assert home.position_effect.se == pytest.approx(0.131, abs=1e-3)
    ability = np.exp(home.scores["theta"].to_numpy())
    assert list(np.round(np.sort(ability / ability.sum()), 3)) == [
        0.044,
        0.088,
        0.137,
        0.157,
        0.164,
        0.190,
        0.220,
    ]


def test_perfect_winners_and_disconnected_designs_warn_and_stay_finite() -> None:
    data = rows(
        [("a", "b", "a"), ("b", "c", "b"), ("c", "a", "c"), ("a", "d", "a"), ("d", "b", "b")]
    )
    with pytest.warns(RuntimeWarning, match="'d'"):
        fit = bradley_terry(data)
    assert fit.prior_sd == 3.0
    assert np.isfinite(fit.scores["theta"].to_numpy()).all()
    assert np.isfinite(fit.scores["se"].to_numpy()).all()
    assert fit.scores["id"][-1] == "d"
    split = rows([("a", "b", "a"), ("b", "a", "b"), ("c", "d", "c"), ("d", "c", "c")])
    with pytest.warns(RuntimeWarning, match="MLE does not exist"):
        fit = bradley_terry(split, reference="a")
    assert np.isfinite(fit.scores["theta"].to_numpy()).all()
    with pytest.warns(RuntimeWarning, match="position effect"):
        fit = bradley_terry(rows([("a", "b", "a"), ("b", "a", "b")] * 3), position_effect=True)
    assert fit.position_effect is not None and np.isfinite(fit.position_effect.estimate)


def test_bad_inputs() -> None:
    with pytest.raises(InputError, match="better_id"):
        bradley_terry(pl.DataFrame({"ID1": ["a"], "ID2": ["b"]}))
    with pytest.raises(InputError, match="neither"):
        bradley_terry(rows([("a", "b", "c")]))
    with pytest.raises(InputError, match="reference"):
        bradley_terry(citations(), reference="Nature")
    with pytest.raises(InputError, match="no verdicts"):
        bradley_terry(rows([("a", "b", None)]))  # type: ignore[list-item]


def simulated(n: int, k: int, bias: float, seed: int) -> tuple[pl.DataFrame, dict[str, float]]:
    rng = random.Random(seed)
    samples = pl.DataFrame(
        {"ID": [f"t{i}" for i in range(n)], "text": [f"essay {i}" for i in range(n)]}
    )
    quality = {f"essay {i}": rng.gauss(0, 1.5) for i in range(n)}
    judge = LatentJudge(quality, position_bias=bias, lapse=0.05, seed=seed)
    pairs = apply_order(balanced_pairs(samples, k, seed=seed), "both", seed=seed)
    truth = {f"t{i}": quality[f"essay {i}"] for i in range(n)}
    return judge.judge_pairs(pairs), truth


def test_latent_judge_qualities_and_position_bias_are_recovered() -> None:
    results, truth = simulated(60, 12, 0.6, seed=3)
    fit = bradley_terry(results, position_effect=True)
    assert fit.position_effect is not None
    low = fit.position_effect.estimate - 2.58 * fit.position_effect.se
    assert low > 0.25 and fit.position_effect.estimate < 0.9
    scores = fit.scores.sort("id")
    rho = spearmanr(scores["theta"].to_numpy(), [truth[i] for i in scores["id"]]).statistic
    assert rho >= 0.9
    assert fit.reliability > 0.8


def test_conjugate_gradient_path_and_approximate_ses_agree_with_dense() -> None:
    results, _ = simulated(300, 30, 0.3, seed=5)
    exact = bradley_terry(results, position_effect=True)
    approx = bradley_terry(results, position_effect=True, dense_limit=10)
    assert approx.se_method == "approximate" and exact.se_method == "exact"
    a, b = exact.scores.sort("id"), approx.scores.sort("id")
    assert np.allclose(a["theta"].to_numpy(), b["theta"].to_numpy(), atol=1e-6)
    assert np.allclose(a["se"].to_numpy(), b["se"].to_numpy(), rtol=0.05)
    assert exact.position_effect is not None and approx.position_effect is not None
    assert approx.position_effect.se == pytest.approx(exact.position_effect.se, rel=1e-4)
    ref_exact = bradley_terry(results, reference="t0").scores.sort("id")
    ref_approx = bradley_terry(results, reference="t0", dense_limit=10).scores.sort("id")
    assert np.allclose(ref_exact["se"].to_numpy(), ref_approx["se"].to_numpy(), rtol=0.05)


def test_missing_extra_is_one_clear_error() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['scipy'] = None\n"
        "import polars as pl\n"
        "from pairbatch.scores import bradley_terry\n"
        "bradley_terry(pl.DataFrame({'ID1': ['a'], 'ID2': ['b'], 'better_id': ['a']}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 1
    assert "PairbatchError: this needs scipy: pip install 'pairbatch[analysis]'" in run.stderr


def test_elo_ranks_and_reliability() -> None:
    results, truth = simulated(30, 10, 0.0, seed=7)
    fit = elo(results, runs=20, seed=1)
    assert fit.runs == 20 and fit.per_run.height == 20
    assert 0.5 < fit.reliability <= 1.0 and 0.5 < fit.reliability_weighted <= 1.0
    ratings = fit.ratings.sort("id")
    rho = spearmanr(ratings["elo"].to_numpy(), [truth[i] for i in ratings["id"]]).statistic
    assert rho > 0.8
    assert fit.ratings.equals(elo(results, runs=20, seed=1).ratings)
    assert ratings["n"].sum() == 2 * results.height
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = elo(rows([("a", "b", "a")]), runs=1)
    assert one.ratings.select("id", "elo").rows() == [("a", 50.0), ("b", -50.0)]
    with pytest.raises(InputError, match="runs"):
        elo(results, runs=0)


@pytest.mark.parametrize("fit", [bradley_terry, elo], ids=["bt", "elo"])
def test_a_bad_verdict_is_named_by_its_row(fit: Callable[..., object]) -> None:
    rows = {"ID1": ["a", "b", "c"], "ID2": ["b", "c", "a"], "better_id": ["a", None, "z"]}
    with pytest.raises(InputError, match=r"^results: row 3: better_id 'z' is neither ID1 'c' nor"):
        fit(pl.DataFrame(rows))
    itself = {"ID1": ["a", "b"], "ID2": ["b", "b"], "better_id": ["a", "b"]}
    with pytest.raises(InputError, match=r"^results: row 2: compares ID 'b' with itself"):
        fit(pl.DataFrame(itself))
