"""KeyIndex.lookup gives what a dict of every pair's key would."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pairbatch.keyindex import KeyIndex

_KEY = st.one_of(
    st.none(),
    st.integers(-3, 40).map(lambda i: f"pbrun-0-{i}"),
    st.text(alphabet="ab-09", max_size=6),
)


@settings(max_examples=150, deadline=None)
@given(
    numbered=st.booleans(),
    size=st.integers(0, 30),
    first=st.integers(0, 5),
    others=st.lists(st.one_of(st.none(), st.text(alphabet="ab-09", max_size=6)), max_size=30),
    wanted=st.lists(_KEY, max_size=40),
)
def test_lookup_matches_a_dict(
    numbered: bool, size: int, first: int, others: list[str | None], wanted: list[str | None]
) -> None:
    keys = [f"pbrun-0-{first + i}" for i in range(size)] if numbered else others
    frame = pl.DataFrame({"custom_id": keys}, schema={"custom_id": pl.Utf8}).with_row_index("_pair")
    expected: dict[str, int] = {}
    for row, key in enumerate(keys):
        if key is not None:
            expected.setdefault(key, row)
    if len(expected) != sum(k is not None for k in keys):
        return  # duplicate keys: submit never writes them
    got = KeyIndex.of(frame).lookup(pl.Series("custom_id", wanted, dtype=pl.Utf8))
    assert got.dtype == pl.UInt32 and got.name == "_pair"
    assert got.to_list() == [None if w is None else expected.get(w) for w in wanted]
