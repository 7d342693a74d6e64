from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pairbatch.errors import InputError
from pairbatch.pairs import (
    assign_custom_ids,
    custom_id,
    load_pairs,
    new_run_tag,
    read_segment_pairs,
    segment_sizes,
    split_pairs,
    with_pair_keys,
    write_segment_pairs,
)

HOSTILE_IDS = [
    "a_b",
    "x_vs_y",
    "A_vs_",
    "_vs_",
    "with space",
    "ünïcødé",
    "日本",
    "a:b",
    "#1",
    "'\"",
    ",",
]


def make_pairs(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ID1": [f"S{i}" for i in range(n)],
            "text1": [f"text one {i}" for i in range(n)],
            "ID2": [f"T{i}" for i in range(n)],
            "text2": [f"text two {i}" for i in range(n)],
        }
    )


@pytest.mark.parametrize(
    ("n", "kwargs", "expected"),
    [
        (5, {"batch_size": 2}, [2, 2, 1]),
        (5, {"n_segments": 3}, [2, 2, 1]),
        (4, {"n_segments": 2}, [2, 2]),
        (7, {"n_segments": 3}, [3, 2, 2]),
        (6, {"batch_size": 6}, [6]),
        (6, {"batch_size": 10}, [6]),
        (3, {"n_segments": 5}, [1, 1, 1]),
    ],
)
def test_segment_sizes(n: int, kwargs: dict[str, int], expected: list[int]) -> None:
    assert segment_sizes(n, **kwargs) == expected


@given(st.integers(1, 500), st.integers(1, 600))
def test_n_segments_sizes_differ_by_at_most_one(n: int, k: int) -> None:
    sizes = segment_sizes(n, n_segments=k)
    assert sum(sizes) == n
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)
    assert min(sizes) >= 1


@given(st.integers(1, 500), st.integers(1, 600))
def test_batch_size_sizes(n: int, size: int) -> None:
    sizes = segment_sizes(n, batch_size=size)
    assert sum(sizes) == n
    assert all(s == size for s in sizes[:-1])
    assert 1 <= sizes[-1] <= size


def test_split_errors() -> None:
    with pytest.raises(InputError, match="Specify only one"):
        segment_sizes(5, batch_size=2, n_segments=2)
    with pytest.raises(InputError, match="Either 'batch_size' or 'n_segments'"):
        segment_sizes(5)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="positive integer"):
            segment_sizes(5, batch_size=bad)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="positive integer"):
            segment_sizes(5, n_segments=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no rows"):
        segment_sizes(0, batch_size=1)


def test_split_pairs_contiguous_in_order() -> None:
    pairs = make_pairs(5)
    segments = split_pairs(pairs, batch_size=2)
    assert [s.height for s in segments] == [2, 2, 1]
    assert pl.concat(segments).equals(pairs)


def test_load_pairs_validation(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Missing: text2"):
        load_pairs(make_pairs(2).drop("text2"))
    with pytest.raises(InputError, match="no rows"):
        load_pairs(make_pairs(0))
    bad = make_pairs(3).with_columns(pl.Series("text1", ["a", None, "c"]))
    with pytest.raises(InputError, match=r"'text1' is missing a value at row 2"):
        load_pairs(bad)
    empty_id = make_pairs(3).with_columns(pl.Series("ID2", ["a", "b", ""]))
    with pytest.raises(InputError, match=r"'ID2' is empty at row 3"):
        load_pairs(empty_id)
    with pytest.raises(InputError, match="not found"):
        load_pairs(tmp_path / "nope.csv")
    with pytest.raises(InputError, match=r"\.csv, \.tsv or \.parquet"):
        (tmp_path / "p.txt").write_text("x")
        load_pairs(tmp_path / "p.txt")
    with pytest.raises(InputError, match="must be a polars DataFrame"):
        load_pairs(42)  # type: ignore[arg-type]


def test_load_pairs_from_files_keeps_ids_as_text(tmp_path: Path) -> None:
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("ID1,text1,ID2,text2,extra\n007,hello,10,world,x\n")
    frame = load_pairs(csv_path)
    assert frame["ID1"].to_list() == ["007"]
    assert frame["extra"].to_list() == ["x"]
    parquet_path = tmp_path / "pairs.parquet"
    make_pairs(3).write_parquet(parquet_path)
    assert load_pairs(parquet_path).height == 3
    numeric = pl.DataFrame({"ID1": [1], "text1": ["a"], "ID2": [2], "text2": ["b"]})
    assert load_pairs(numeric)["ID2"].to_list() == ["2"]


def test_pair_keys_and_pair_uid() -> None:
    pairs = pl.DataFrame(
        {
            "ID1": ["b", "a", "b", "x"],
            "text1": ["1", "2", "3", "4"],
            "ID2": ["a", "b", "a", "y"],
            "text2": ["1", "2", "3", "4"],
            "pair_uid": [None, "", None, "given"],
        }
    )
    keyed = with_pair_keys(pairs)
    assert keyed["unordered_key"].to_list() == ["a:b", "a:b", "a:b", "x:y"]
    assert keyed["ordered_key"].to_list() == ["b:a", "a:b", "b:a", "x:y"]
    assert keyed["pair_uid"].to_list() == ["a:b#1", "a:b#2", "a:b#3", "given"]


def test_run_tag_and_custom_ids_are_valid_everywhere() -> None:
    tag = new_run_tag()
    assert re.fullmatch(r"pb[0-9a-f]{10}", tag)
    key = custom_id(tag, 9999, 10_000_000)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key)
    with pytest.raises(InputError):
        custom_id("bad tag!", 1, 1)


def test_hostile_ids_round_trip_through_keys(tmp_path: Path) -> None:
    n = len(HOSTILE_IDS)
    pairs = pl.DataFrame(
        {
            "ID1": HOSTILE_IDS,
            "text1": ["t"] * n,
            "ID2": list(reversed(HOSTILE_IDS)),
            "text2": ["u"] * n,
        }
    )
    keyed = assign_custom_ids(with_pair_keys(load_pairs(pairs)), new_run_tag(), 3, 100)
    assert keyed.columns[0] == "custom_id"
    assert keyed["custom_id"].n_unique() == n
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", k) for k in keyed["custom_id"])
    path = tmp_path / "batch_03_pairs.parquet"
    write_segment_pairs(keyed, path)
    back = read_segment_pairs(path)
    assert back.equals(keyed)
    lookup = dict(zip(back["custom_id"], zip(back["ID1"], back["ID2"], strict=True), strict=True))
    for key, id1, id2 in keyed.select("custom_id", "ID1", "ID2").iter_rows():
        assert lookup[key] == (id1, id2)


@pytest.mark.parametrize("given_bytes", [False, True])
def test_read_segment_pairs_gives_one_chunk_per_column(tmp_path: Path, given_bytes: bool) -> None:
    # Parquet gives a chunk per row group; a big segment's lines are matched to their
    # pairs by a gather per chunk of lines, which costs about the column's length for
    # every chunk of lines when the column is in many chunks.
    n = 5_000
    frame = pl.DataFrame(
        {
            "custom_id": [f"pbtag-0-{i}" for i in range(n)],
            "ID1": [f"a{i}" for i in range(n)],
            "text1": [f"text one {i}" for i in range(n)],
        }
    )
    path = tmp_path / "batch_00_pairs.parquet"
    frame.write_parquet(path, row_group_size=1_000)
    assert pl.read_parquet(path).n_chunks("all") == [5, 5, 5]  # what Polars gives
    back = read_segment_pairs(path, path.read_bytes() if given_bytes else None)
    assert back.n_chunks("all") == [1, 1, 1]
    assert back.equals(frame)


@pytest.mark.parametrize("name", ["*", "^x$", "^$", "^a.*$"])
def test_pattern_like_column_names_are_refused_naming_the_column(name: str) -> None:
    # Polars reads these as "every column" or a regex: an extra pair column so named was
    # dropped from the results ("^x$") or lost every result ("*").
    frame = pl.DataFrame({"ID1": ["a"], "text1": ["x"], "ID2": ["b"], "text2": ["y"], name: [1]})
    with pytest.raises(InputError, match=re.escape(f"column name {name!r} is not supported")):
        load_pairs(frame)


@pytest.mark.parametrize("name", ["^x", "x$", "$^", "a*b", "**"])
def test_other_unusual_column_names_are_carried(name: str) -> None:
    frame = pl.DataFrame({"ID1": ["a"], "text1": ["x"], "ID2": ["b"], "text2": ["y"], name: [1]})
    assert load_pairs(frame).get_column(name).to_list() == [1]
