"""Consistency, position bias and combined verdicts, on hand-made and simulated data."""

from __future__ import annotations

import polars as pl
import pytest

from pairbatch.analysis import combine_orders, position_bias, reverse_consistency
from pairbatch.design import apply_order, balanced_pairs
from pairbatch.errors import InputError
from pairbatch.testing.judge import LatentJudge

HOSTILE = ["a:b", "a", "b:c", "x_vs_y", 'q"uote', "com,ma", "ünï:cødé", "back\\slash"]


def verdicts(rows: list[tuple[str, str, str]], **extra: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ID1": [r[0] for r in rows],
            "ID2": [r[1] for r in rows],
            "better_id": [r[2] for r in rows],
            **extra,
        }
    )


def test_consistency_from_two_frames_with_duplicates_and_ties() -> None:
    main = verdicts(
        [
            ("a:b", "c", "a:b"),
            ("a", "b:c", "b:c"),  # colliding under the old 'a:b:c' keys
            ("x_vs_y", "q", "q"),
            ("x_vs_y", "q", "x_vs_y"),  # a tie in the main order
            ("u", "v", "u"),
            ("u", "v", "u"),
            ("u", "v", "v"),  # majority u
        ]
    )
    rev = verdicts([("c", "a:b", "a:b"), ("b:c", "a", "a"), ("q", "x_vs_y", "q"), ("v", "u", "u")])
    out = reverse_consistency(main, rev)
    assert out.summary.row(0, named=True) == {
        "n_pairs": 3,
        "n_consistent": 2,
        "prop_consistent": pytest.approx(2 / 3),
        "n_undecided": 1,
    }
    by_key = {r["ID1_main"]: r for r in out.details.iter_rows(named=True)}
    assert by_key["a:b"]["is_consistent"] is True
    assert by_key["a"]["is_consistent"] is False
    assert by_key["x_vs_y"]["is_consistent"] is None
    assert by_key["u"]["n_main"] == 3


def test_single_frame_with_hostile_ids_and_stale_keys() -> None:
    rows = []
    for i, a in enumerate(HOSTILE):
        b = HOSTILE[(i + 1) % len(HOSTILE)]
        rows += [(a, b, a), (b, a, a if i % 2 else b)]
    frame = verdicts(rows).with_columns(
        # An old run's keys: plain joins that collide; they must be ignored.
        pl.concat_str(["ID1", "ID2"], separator=":").alias("unordered_key")
    )
    out = reverse_consistency(frame)
    assert out.summary["n_pairs"].item() == len(HOSTILE)
    assert out.summary["n_consistent"].item() == len(HOSTILE) // 2
    assert sorted(out.details["ID1_main"].to_list()) == sorted(HOSTILE)


def test_order_role_column_and_groups() -> None:
    frame = verdicts(
        [("a", "b", "a"), ("b", "a", "a"), ("a", "b", "a"), ("b", "a", "b")],
        order_role=["main", "reverse", "main", "reverse"],
        backend=["openai", "openai", "gemini", "gemini"],
        model=["m1", "m1", "m2", "m2"],
    )
    out = reverse_consistency(frame)
    assert out.summary.select("backend", "n_consistent").rows() == [("gemini", 0), ("openai", 1)]
    bias = position_bias(out, n_boot=50)
    gem = bias.summary.filter(pl.col("backend") == "gemini").row(0, named=True)
    assert gem["n_inconsistent_pos1"] == 1
    assert gem["p_sample1_overall"] == 1.0


def test_bad_inputs_are_one_line_errors() -> None:
    with pytest.raises(InputError, match="better_id"):
        reverse_consistency(pl.DataFrame({"ID1": ["a"], "ID2": ["b"]}))
    with pytest.raises(InputError, match="row 2: better_id 'c' is neither ID1 'a' nor ID2 'b'"):
        reverse_consistency(verdicts([("a", "b", "a"), ("a", "b", "c")]))
    with pytest.raises(InputError, match="both orders"):
        position_bias(verdicts([("a", "b", "a")]))


def test_combine_orders_rules() -> None:
    frame = verdicts(
        [
            ("a", "b", "a"),
            ("b", "a", "a"),  # consistent
            ("c", "d", "c"),
            ("d", "c", "d"),  # order-dependent
            ("e", "f", "f"),  # one order only
            ("g", "h", "g"),
            ("g", "h", "h"),  # a tie in its only order
        ]
    )
    cons = combine_orders(frame)
    assert cons.select("ID1", "ID2", "better_id", "verdict").rows() == [
        ("a", "b", "a", "decided"),
        ("c", "d", None, "inconsistent"),
        ("e", "f", "f", "decided"),
        ("g", "h", None, "tie"),
    ]
    assert combine_orders(frame, rule="tie")["verdict"].to_list()[1] == "tie"
    major = combine_orders(frame, rule="majority")
    assert major["verdict"].to_list() == ["decided", "tie", "decided", "tie"]
    assert major["n_judgements"].to_list() == [2, 2, 1, 2]
    with pytest.raises(InputError, match="rule"):
        combine_orders(frame, rule="vote")  # type: ignore[arg-type]


def simulate(n: int, k: int, bias: float, seed: int) -> tuple[pl.DataFrame, dict[str, float]]:
    import random

    rng = random.Random(seed)
    samples = pl.DataFrame(
        {"ID": [f"t{i}" for i in range(n)], "text": [f"essay {i}" for i in range(n)]}
    )
    quality = {f"essay {i}": rng.gauss(0, 1.5) for i in range(n)}
    judge = LatentJudge(quality, position_bias=bias, seed=seed)
    pairs = apply_order(balanced_pairs(samples, k, seed=seed), "both", seed=seed)
    return judge.judge_pairs(pairs), {f"t{i}": quality[f"essay {i}"] for i in range(n)}


def test_planted_position_bias_is_detected() -> None:
    results, _ = simulate(60, 10, 0.6, seed=1)
    bias = position_bias(results, n_boot=200).summary.row(0, named=True)
    assert bias["binom_p_overall"] < 0.01
    assert bias["mcnemar_p"] < 0.01
    assert bias["p_sample1_overall"] > 0.55
    assert bias["n_inconsistent_pos1"] > 2 * bias["n_inconsistent_pos2"]
    assert bias["boot_lwr"] <= bias["prop_consistent"] <= bias["boot_upr"]


def test_no_planted_bias_gives_a_near_nominal_false_positive_rate() -> None:
    runs, alpha = 150, 0.10
    hits = {"binom_p_main": 0, "mcnemar_p": 0, "binom_p_overall": 0}
    for seed in range(runs):
        results, _ = simulate(20, 4, 0.0, seed=seed)
        summary = position_bias(results, n_boot=20, seed=seed).summary.row(0, named=True)
        for name in hits:
            hits[name] += summary[name] < alpha
    # Exact tests on discrete counts are slightly conservative; far from alpha is a bug.
    assert 0.02 * runs <= hits["binom_p_main"] <= 0.16 * runs
    assert 0.02 * runs <= hits["mcnemar_p"] <= 0.16 * runs
    # Both orders make a pair's two position-1 outcomes anti-correlated: conservative.
    assert hits["binom_p_overall"] <= alpha * runs


def prompt(text1: str, text2: str) -> str:
    from pairbatch.prompts import DEFAULT_TEMPLATE, build_prompt

    return build_prompt(DEFAULT_TEMPLATE, "Quality", "How good", text1, text2)


def test_latent_judge_is_deterministic_and_matches_its_probability() -> None:
    texts = [f"text {i}" for i in range(400)]
    quality = {t: 0.0 for t in texts} | {"strong": 1.0, "weak": 0.0}
    judge = LatentJudge(quality, noise=0.5, position_bias=0.3, seed=9)
    p = judge.probability("strong", "weak")
    assert p == pytest.approx(1 / (1 + 2.718281828459045 ** -(2.0 + 0.3)))
    one = prompt("strong", "weak")
    assert judge(one) == judge(one) == judge.answer(one)
    salted = {judge.answer(one, salt=str(i)) for i in range(50)}
    assert len(salted) == 2
    # Distinct prompts (the texts differ only in padding the judge ignores via qualities).
    wins = 0
    for i in range(0, 400, 2):
        wins += judge(prompt(texts[i], texts[i + 1])) == "<BETTER_SAMPLE>SAMPLE_1</BETTER_SAMPLE>"
    expected = judge.probability(texts[0], texts[1]) * 200
    assert abs(wins - expected) < 3 * (200 * 0.25) ** 0.5
    lapsing = LatentJudge(quality, noise=0.01, lapse=1.0)
    assert lapsing.probability("strong", "weak") == 0.5
    other_seed = LatentJudge(quality, seed=10)
    answers = [prompt(texts[i], texts[i + 1]) for i in range(0, 80, 2)]
    assert [judge(a) for a in answers] != [other_seed(a) for a in answers]


def test_latent_judge_errors() -> None:
    judge = LatentJudge({"a": 0.0, "b": 1.0})
    with pytest.raises(InputError, match="no quality"):
        judge(prompt("a", "zzz"))
    with pytest.raises(InputError, match="default template"):
        judge("which is better, a or b?")
    with pytest.raises(InputError, match="noise"):
        LatentJudge({}, noise=0)
    with pytest.raises(InputError, match="lapse"):
        LatentJudge({}, lapse=1.5)


def test_old_and_new_runs_join_on_recomputed_keys() -> None:
    # An old run stored plain-join keys: ("x:y", "z") and ("x", "y:z") both became "x:y:z".
    old = verdicts([("x:y", "z", "z"), ("x", "y:z", "x")]).with_columns(
        pl.lit("x:y:z").alias("unordered_key"),
        pl.lit("x:y:z").alias("ordered_key"),
        pl.Series("pair_uid", ["x:y:z#1", "x:y:z#2"]),
    )
    new = verdicts([("z", "x:y", "z"), ("y:z", "x", "y:z")]).with_columns(
        pl.Series("unordered_key", ["x\\:y:z", "x:y\\:z"]),
        pl.Series("pair_uid", ["x\\:y:z#1", "x:y\\:z#1"]),
    )
    out = reverse_consistency(old, new)
    assert out.summary.row(0) == (2, 1, 0.5, 0)
    combined = combine_orders(pl.concat([old, new], how="diagonal_relaxed"))
    assert combined.select("ID1", "ID2", "verdict").sort("ID1").rows() == [
        ("x", "y:z", "inconsistent"),
        ("x:y", "z", "decided"),
    ]


def test_apply_order_both_needs_unique_pair_uids() -> None:
    pairs = pl.DataFrame(
        {
            "ID1": ["a", "c"],
            "text1": ["x", "y"],
            "ID2": ["b", "d"],
            "text2": ["y", "z"],
            "pair_uid": ["p", "p"],
        }
    )
    assert apply_order(pairs, "as_given").height == 2
    with pytest.raises(InputError, match="pair_uid"):
        apply_order(pairs, "both")
