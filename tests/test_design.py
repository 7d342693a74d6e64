"""Designs: reading samples, sampling, balanced connected designs, orders."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from pairbatch.design import (
    alternate_pair_order,
    apply_order,
    balanced_pairs,
    make_pairs,
    randomize_pair_order,
    read_samples,
    reverse_pairs,
    sample_pairs,
)
from pairbatch.errors import InputError
from pairbatch.pairs import load_pairs, unordered_pair_key


def samples(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {"ID": [f"s{i:03d}" for i in range(n)], "text": [f"text {i}" for i in range(n)]}
    )


def connected(pairs: pl.DataFrame, ids: list[str]) -> bool:
    adj: dict[str, set[str]] = {i: set() for i in ids}
    for a, b in zip(pairs["ID1"], pairs["ID2"], strict=True):
        adj[a].add(b)
        adj[b].add(a)
    seen, stack = {ids[0]}, [ids[0]]
    while stack:
        for nxt in adj[stack.pop()] - seen:
            seen.add(nxt)
            stack.append(nxt)
    return len(seen) == len(ids)


def test_read_samples_from_frame_csv_parquet_and_folder(tmp_path: Path) -> None:
    frame = pl.DataFrame({"key": ["007", "b"], "essay": ["one", "two"]})
    assert read_samples(frame, id_col="key", text_col="essay")["ID"].to_list() == ["007", "b"]
    frame.write_csv(tmp_path / "s.csv")
    assert read_samples(tmp_path / "s.csv", id_col="key", text_col="essay")["ID"][0] == "007"
    frame.write_parquet(tmp_path / "s.parquet")
    assert read_samples(str(tmp_path / "s.parquet"), id_col="key", text_col="essay").height == 2
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "b.txt").write_text("bee", encoding="utf-8")
    (folder / "a:1.txt").write_text("ay", encoding="utf-8")
    (folder / "notes.md").write_text("skip", encoding="utf-8")
    assert read_samples(folder).rows() == [("a:1", "ay"), ("b", "bee")]


def test_read_samples_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="duplicate ID 'a' at rows 1, 3"):
        read_samples(pl.DataFrame({"ID": ["a", "b", "a"], "text": ["x", "y", "z"]}))
    with pytest.raises(InputError, match="'text' is missing a value at row 2"):
        read_samples(pl.DataFrame({"ID": ["a", "b"], "text": ["x", None]}))
    with pytest.raises(InputError, match="must contain columns"):
        read_samples(pl.DataFrame({"ID": ["a"]}))
    with pytest.raises(InputError, match="not found"):
        read_samples(tmp_path / "none.csv")
    semicolons = tmp_path / "semi.csv"
    semicolons.write_text("ID;text\na;x\n", encoding="utf-8")
    with pytest.raises(InputError, match="one column 'ID;text': is it ';'-separated"):
        read_samples(semicolons)
    (tmp_path / "pairs.csv").write_text("ID1|text1|ID2|text2\na|x|b|y\n", encoding="utf-8")
    with pytest.raises(InputError, match="is it '\\|'-separated"):
        load_pairs(tmp_path / "pairs.csv")
    with pytest.raises(InputError, match="duplicate ID"):
        make_pairs(pl.DataFrame({"ID": ["a", "a"], "text": ["x", "y"]}))


def test_make_pairs_and_sample_pairs() -> None:
    pairs = make_pairs(samples(6))
    assert pairs.height == 15
    assert sample_pairs(pairs, fraction=1.0).equals(pairs)
    assert sample_pairs(pairs).equals(pairs)
    half = sample_pairs(pairs, fraction=0.5, seed=3)
    assert half.height == 7
    assert half.equals(sample_pairs(pairs, fraction=0.5, seed=3))
    assert sample_pairs(pairs, fraction=0.5, n=4, seed=3).height == 4
    assert sample_pairs(pairs, n=100).height == 15
    with pytest.raises(InputError, match="'n'"):
        sample_pairs(pairs, n=-1)


@pytest.mark.parametrize(("n", "k"), [(10, 2), (60, 4), (101, 7), (200, 10)])
def test_balanced_pairs_are_balanced_connected_and_seeded(n: int, k: int) -> None:
    texts = samples(n)
    pairs = balanced_pairs(texts, k, seed=11)
    ids = texts["ID"].to_list()
    degree = Counter(pairs["ID1"].to_list() + pairs["ID2"].to_list())
    assert set(degree) == set(ids)
    assert max(degree.values()) <= k
    assert min(degree.values()) >= max(2, k - 2)
    assert sum(degree.values()) >= n * k * 0.97
    assert connected(pairs, ids)
    keys = [unordered_pair_key(a, b) for a, b in zip(pairs["ID1"], pairs["ID2"], strict=True)]
    assert len(set(keys)) == len(keys)
    assert (pairs["ID1"] != pairs["ID2"]).all()
    assert pairs.equals(balanced_pairs(texts, k, seed=11))
    assert not pairs.equals(balanced_pairs(texts, k, seed=12))


def test_balanced_pairs_limits() -> None:
    assert balanced_pairs(samples(5), 4).height == 10
    with pytest.raises(InputError, match="'k'"):
        balanced_pairs(samples(5), 1)


def test_randomize_is_seeded_per_pair_and_stable_when_pairs_are_added() -> None:
    pairs = make_pairs(samples(30))
    shuffled = randomize_pair_order(pairs, seed=5)
    assert shuffled.equals(randomize_pair_order(pairs, seed=5))
    swapped = (shuffled["ID1"] != pairs["ID1"]).sum()
    assert 150 < swapped < 285  # about half of 435
    grown = pl.concat([pairs, make_pairs(samples(31)).filter(pl.col("ID2") == "s030")])
    assert randomize_pair_order(grown, seed=5).head(pairs.height).equals(shuffled)
    # The same pair given the other way round ends in the same order.
    flipped = pairs.select(ID1="ID2", text1="text2", ID2="ID1", text2="text1")
    assert randomize_pair_order(flipped, seed=5).equals(shuffled)
    assert not randomize_pair_order(pairs, seed=6).equals(shuffled)
    assert sorted(shuffled["text1"].to_list() + shuffled["text2"].to_list()) == sorted(
        pairs["text1"].to_list() + pairs["text2"].to_list()
    )


def test_alternate_and_reverse_pairs() -> None:
    pairs = make_pairs(samples(4))
    alt = alternate_pair_order(pairs)
    assert alt["ID1"].to_list()[:2] == ["s000", "s002"]
    assert alt.row(1) == (pairs["ID2"][1], pairs["text2"][1], pairs["ID1"][1], pairs["text1"][1])
    rev = reverse_pairs(pairs, fraction=0.5, seed=1)
    assert rev.height == 3
    assert rev.columns == ["ID1", "text1", "ID2", "text2"]
    originals = set(zip(pairs["ID1"], pairs["ID2"], strict=True))
    assert all((b, a) in originals for a, b in zip(rev["ID1"], rev["ID2"], strict=True))
    assert reverse_pairs(pairs, fraction=0.5, n=2).height == 2
    assert reverse_pairs(pairs, fraction=1.0).height == 6
    assert reverse_pairs(pairs, fraction=0.0).height == 0
    with pytest.raises(InputError, match="at least one of"):
        reverse_pairs(pairs)


def test_apply_order_both_links_the_copies_and_counts_repeats() -> None:
    pairs = pl.concat([make_pairs(samples(3)), make_pairs(samples(2))])
    both = apply_order(pairs, "both", seed=1)
    assert both.height == 8
    assert both["order_role"].to_list() == ["main"] * 4 + ["reverse"] * 4
    main, rev = both.head(4), both.tail(4)
    assert main["pair_uid"].to_list() == rev["pair_uid"].to_list()
    assert main["ID1"].to_list() == rev["ID2"].to_list()
    assert main["repeat"].to_list() == [1, 1, 1, 2]
    assert main["pair_uid"].to_list()[3] == "s000:s001#2"
    given = apply_order(pairs.head(3), "as_given")
    assert given.select("ID1", "ID2").equals(pairs.head(3).select("ID1", "ID2"))
    assert set(given["order_role"]) == {"main"}
    rand = apply_order(pairs.head(3), "random", seed=2)
    assert rand.select("ID1", "ID2").equals(
        randomize_pair_order(pairs.head(3), seed=2).select("ID1", "ID2")
    )


def test_apply_order_rejects_self_pairs_and_bad_orders() -> None:
    bad = pl.DataFrame(
        {"ID1": ["a", "b"], "text1": ["x", "y"], "ID2": ["b", "b"], "text2": ["y", "y"]}
    )
    with pytest.raises(InputError, match="row 2 pairs ID 'b' with itself"):
        apply_order(bad, "both")
    with pytest.raises(InputError, match="order must be"):
        apply_order(bad.head(1), "sideways")  # type: ignore[arg-type]
