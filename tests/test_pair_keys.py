"""Pair keys are injective for any ID characters, and old-style keys are never trusted."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pairbatch.errors import InputError
from pairbatch.pairs import (
    pair_key,
    split_pair_key,
    unordered_pair_key,
    with_pair_keys,
)

ids = st.text(min_size=1, max_size=8)


@given(ids, ids, ids, ids)
def test_different_ordered_pairs_never_share_a_key(a: str, b: str, c: str, d: str) -> None:
    if (a, b) != (c, d):
        assert pair_key(a, b) != pair_key(c, d)
    assert split_pair_key(pair_key(a, b)) == (a, b)


@given(ids, ids, ids, ids)
def test_different_unordered_pairs_never_share_a_key(a: str, b: str, c: str, d: str) -> None:
    same = {a, b} == {c, d} and sorted((a, b)) == sorted((c, d))
    assert (unordered_pair_key(a, b) == unordered_pair_key(c, d)) == same
    assert unordered_pair_key(a, b) == unordered_pair_key(b, a)


@given(st.lists(st.tuples(ids, ids), min_size=1, max_size=6))
def test_frame_keys_match_python_keys(pairs: list[tuple[str, str]]) -> None:
    frame = pl.DataFrame(
        {
            "ID1": [p[0] for p in pairs],
            "text1": ["t"] * len(pairs),
            "ID2": [p[1] for p in pairs],
            "text2": ["u"] * len(pairs),
        },
        schema={"ID1": pl.Utf8, "text1": pl.Utf8, "ID2": pl.Utf8, "text2": pl.Utf8},
    )
    keyed = with_pair_keys(frame)
    assert keyed["ordered_key"].to_list() == [pair_key(a, b) for a, b in pairs]
    assert keyed["unordered_key"].to_list() == [unordered_pair_key(a, b) for a, b in pairs]
    assert keyed["pair_uid"].n_unique() == len(pairs)


def test_the_old_collision_is_gone_and_plain_ids_keep_the_old_form() -> None:
    assert pair_key("x:y", "z") != pair_key("x", "y:z")
    assert pair_key("a", "b") == "a:b"
    assert unordered_pair_key("b", "a") == "a:b"
    assert pair_key("x:y", "z") == "x\\:y:z"


@pytest.mark.parametrize("bad", ["abc", "a:b:c", "a\\b:c"])
def test_split_rejects_non_keys(bad: str) -> None:
    with pytest.raises(InputError, match="not a pair key"):
        split_pair_key(bad)
