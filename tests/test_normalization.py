"""Aligning parsed results with a segment's pairs (reference §4, fixes W13 and W21).

Sample IDs always come from the stored pairs (never parsed out of a key), so any ID
round-trips; every pair lands in exactly one of ``results`` / non-duplicate
``failed_attempts``; extra lines for a key become ``is_duplicate`` failed attempts.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pairbatch.errors import InputError
from pairbatch.normalize import (
    DUPLICATE_DETAIL,
    FAILED_SCHEMA,
    MISSING_DETAIL,
    failed_attempts_from_pairs,
    normalize_results,
)
from pairbatch.pairs import assign_custom_ids, load_pairs, with_pair_keys
from pairbatch.providers.anthropic import BACKEND as ANTHROPIC
from pairbatch.providers.openai import BACKEND as OPENAI
from pairbatch.results import COLUMNS, RESULT_SCHEMA, find_winner

S1 = "<BETTER_SAMPLE>SAMPLE_1</BETTER_SAMPLE>"
S2 = "<BETTER_SAMPLE>SAMPLE_2</BETTER_SAMPLE>"
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HOSTILE_IDS = [
    "a_b",
    "x_vs_y",
    "LIVE_S1_vs_S2",
    "with space",
    " padded ",
    "ünïcødé",
    "日本語",
    "emoji 🎉",
    "a:b",
    "#1",
    "c,d",
    'q"uote',
    "it's",
    "007",
    "back\\slash",
    "tab\there",
]


def segment(
    id_pairs: list[tuple[str, str]],
    *,
    run_tag: str = "pbtest",
    segment_index: int = 0,
    first_row: int = 0,
    **extra: list[Any],
) -> pl.DataFrame:
    """A stored segment as submit builds it: validated, keyed, with request keys."""
    frame = pl.DataFrame(
        {
            "ID1": [a for a, _ in id_pairs],
            "text1": [f"text of {a}" for a, _ in id_pairs],
            "ID2": [b for _, b in id_pairs],
            "text2": [f"text of {b}" for _, b in id_pairs],
            **extra,
        }
    )
    return assign_custom_ids(with_pair_keys(load_pairs(frame)), run_tag, segment_index, first_row)


def raw_row(custom_id: str | None, content: str | None = None, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "custom_id": custom_id,
        "model": "model-snapshot-1",
        "object_type": "chat.completion",
        "status_code": 200,
        "result_type": "succeeded",
        "content": content,
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "total_tokens": 13,
    }
    row.update(fields)
    row["better_sample"] = find_winner(row["content"], "<BETTER_SAMPLE>", "</BETTER_SAMPLE>")
    return row


def raw_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], schema=RESULT_SCHEMA)


def normalize(raw: pl.DataFrame, pairs: pl.DataFrame, **kwargs: Any):
    kwargs.setdefault("backend", "openai")
    kwargs.setdefault("model", "gpt-requested")
    kwargs.setdefault("received_at", WHEN)
    return normalize_results(raw, pairs, **kwargs)


def assert_partition(pairs: pl.DataFrame, out: Any) -> None:
    """Every pair is in exactly one of results / non-duplicate failed attempts."""
    got = out.results.get_column("custom_id").to_list()
    failed = out.failed_attempts.filter(~pl.col("is_duplicate")).get_column("custom_id").to_list()
    assert len(set(got)) == len(got)
    assert len(set(failed)) == len(failed)
    assert not set(got) & set(failed)
    assert sorted(got + failed) == sorted(pairs.get_column("custom_id").to_list())
    assert out.failed_attempts.schema == pl.Schema(FAILED_SCHEMA)


def write_openai(path: Path, lines: list[tuple[str, str]]) -> Path:
    with path.open("wb") as handle:
        for key, content in lines:
            body = {
                "object": "chat.completion",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            }
            line = {"custom_id": key, "response": {"status_code": 200, "body": body}, "error": None}
            handle.write(orjson.dumps(line) + b"\n")
    return path


# ---------------------------------------------------------------- IDs


def test_hostile_ids_round_trip(tmp_path: Path) -> None:
    ids = HOSTILE_IDS
    id_pairs = [(ids[i], ids[(i + 1) % len(ids)]) for i in range(len(ids))]
    id_pairs += [(b, a) for a, b in id_pairs[:3]]  # reversed orders too
    # through a CSV file, as a user would give them: nothing may be type-inferred or trimmed
    source = pl.DataFrame(
        {
            "ID1": [a for a, _ in id_pairs],
            "text1": ["t"] * len(id_pairs),
            "ID2": [b for _, b in id_pairs],
            "text2": ["u"] * len(id_pairs),
        }
    )
    csv = tmp_path / "pairs.csv"
    source.write_csv(csv)
    pairs = assign_custom_ids(with_pair_keys(load_pairs(csv)), "pbx", 3, 100)
    assert pairs.get_column("ID1").to_list() == [a for a, _ in id_pairs]
    keys = pairs.get_column("custom_id").to_list()
    assert all(k.startswith("pbx-3-") for k in keys)  # no sample ID inside the key
    winners = [S1 if n % 2 == 0 else S2 for n in range(len(keys))]
    path = write_openai(tmp_path / "out.jsonl", list(zip(keys, winners, strict=True))[::-1])
    out = normalize(OPENAI.parse_results(path), pairs)
    assert out.failed_attempts.height == 0
    res = out.results.sort("custom_id").join(
        pairs.select("custom_id", pl.col("ID1").alias("p1"), pl.col("ID2").alias("p2")),
        on="custom_id",
    )
    assert res.height == len(id_pairs)
    for row in res.iter_rows(named=True):
        assert (row["ID1"], row["ID2"]) == (row["p1"], row["p2"])
        assert (row["A_id"], row["B_id"]) == (row["p1"], row["p2"])
        expected = row["p1"] if row["better_sample"] == "SAMPLE_1" else row["p2"]
        assert row["better_id"] == expected
        assert row["winner_pos"] == (1 if row["better_sample"] == "SAMPLE_1" else 2)
    assert set(res.get_column("better_id")) <= set(ids)


def test_hostile_ids_in_failed_attempts() -> None:
    pairs = segment([("a_vs_b", "c d"), ("x:y", 'q"'), ("#", ",")])
    keys = pairs.get_column("custom_id").to_list()
    raw = raw_frame([raw_row(keys[0], "no tag"), raw_row(keys[1], S1), raw_row(keys[1], S2)])
    out = normalize(raw, pairs)
    failed = out.failed_attempts.sort("custom_id")
    assert failed.select("A_id", "B_id").rows() == [("a_vs_b", "c d"), ("x:y", 'q"'), ("#", ",")]
    assert failed.get_column("is_duplicate").to_list() == [False, True, False]
    assert out.results.row(0, named=True)["better_id"] == 'q"'


# ---------------------------------------------------------------- duplicates and unknown keys


def test_duplicates_last_line_wins() -> None:
    pairs = segment([("A", "B"), ("C", "D")])
    k0, k1 = pairs.get_column("custom_id").to_list()
    raw = raw_frame(
        [
            raw_row(k0, S1, prompt_tokens=1),
            raw_row(k1, S1),
            raw_row(
                k0,
                None,
                status_code=500,
                result_type="errored",
                error_message="server error",
                prompt_tokens=2,
            ),
            raw_row(k0, S2, prompt_tokens=3),
        ]
    )
    out = normalize(raw, pairs)
    assert_partition(pairs, out)
    results = out.results.sort("custom_id")
    assert results.get_column("better_id").to_list() == ["B", "C"]
    assert results.get_column("prompt_tokens").to_list() == [3, 10]
    dups = out.failed_attempts.filter(pl.col("is_duplicate"))
    assert dups.height == 2
    assert set(dups.get_column("custom_id")) == {k0}
    assert dups.get_column("error_code").to_list() == ["http_error", "http_error"]
    assert dups.get_column("error_detail").to_list() == [DUPLICATE_DETAIL] * 2
    # the duplicates keep what the line said, in file order
    assert dups.get_column("prompt_tokens").to_list() == [1, 2]
    assert dups.get_column("status_code").to_list() == [200, 500]
    assert dups.get_column("error_message").to_list() == [None, "server error"]
    assert dups.select(
        "A_id", "B_id", "ordered_key", "unordered_key", "pair_uid"
    ).unique().rows() == [("A", "B", "A:B", "A:B", "A:B#1")]
    assert dups.get_column("model").to_list() == ["model-snapshot-1"] * 2


def test_duplicate_last_line_errored_makes_the_pair_failed() -> None:
    pairs = segment([("A", "B")])
    (k0,) = pairs.get_column("custom_id").to_list()
    raw = raw_frame([raw_row(k0, S1), raw_row(k0, None, result_type="expired", status_code=None)])
    out = normalize(raw, pairs)
    assert out.results.height == 0
    assert_partition(pairs, out)
    rows = out.failed_attempts.sort("is_duplicate").rows(named=True)
    assert (rows[0]["is_duplicate"], rows[0]["error_code"], rows[0]["error_detail"]) == (
        False,
        "http_error",
        "Request expired",
    )
    assert (rows[1]["is_duplicate"], rows[1]["error_detail"]) == (True, DUPLICATE_DETAIL)


def test_unknown_custom_ids_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    pairs = segment([("A", "B"), ("A", "B")])
    keys = pairs.get_column("custom_id").to_list()
    other = segment([("A", "B")], run_tag="pbother").get_column("custom_id").item()
    raw = raw_frame(
        [
            raw_row(other, S1),  # another run's key
            raw_row("A:B#1", S1),  # a pair_uid is not a request key
            raw_row("pbtest-0-99", S2),  # a row that is not in this segment
            raw_row(None, S1),  # a malformed line without a recoverable key
            raw_row(keys[1], S2),
        ]
    )
    out = normalize(raw, pairs)
    assert_partition(pairs, out)
    assert out.results.get_column("custom_id").to_list() == [keys[1]]
    assert out.results.get_column("pair_uid").to_list() == ["A:B#2"]
    failed = out.failed_attempts
    assert failed.height == 1 and not failed.get_column("is_duplicate").item()
    assert failed.row(0, named=True)["error_detail"] == MISSING_DETAIL
    assert "match no pair" in caplog.text


# ---------------------------------------------------------------- missing results, error codes


def test_missing_results() -> None:
    pairs = segment([("A", "B"), ("C", "D"), ("E", "F")])
    k0 = pairs.get_column("custom_id").item(0)
    out = normalize(raw_frame([raw_row(k0, S2)]), pairs)
    assert_partition(pairs, out)
    failed = out.failed_attempts
    assert failed.get_column("error_code").to_list() == ["http_error"] * 2
    assert failed.get_column("error_detail").to_list() == [MISSING_DETAIL] * 2
    assert failed.get_column("status_code").to_list() == [None, None]
    assert failed.get_column("model").to_list() == ["gpt-requested"] * 2  # requested model
    assert failed.get_column("backend").to_list() == ["openai"] * 2
    assert failed.get_column("attempted_at").to_list() == [WHEN] * 2


@pytest.mark.parametrize("raw", [pl.DataFrame(), pl.DataFrame(schema=RESULT_SCHEMA)])
def test_no_results_with_batch_status(raw: pl.DataFrame) -> None:
    pairs = segment([("A", "B"), ("C", "D")])
    out = normalize(raw, pairs, batch_status="expired", segment_index=4, batch_id="batch_9")
    assert out.results.height == 0
    assert_partition(pairs, out)
    failed = out.failed_attempts
    assert failed.get_column("error_code").to_list() == ["http_error"] * 2
    assert failed.get_column("error_detail").to_list() == ["Batch status: expired"] * 2
    assert failed.get_column("segment_index").to_list() == [4, 4]
    assert failed.get_column("batch_id").to_list() == ["batch_9"] * 2


def test_every_error_code_reachable(tmp_path: Path) -> None:
    """Reference §4.3, in its order, with real parsed lines where the wire has them."""
    pairs = segment([(f"S{i}", f"T{i}") for i in range(10)])
    k = pairs.get_column("custom_id").to_list()
    openai_lines = [
        {
            "custom_id": k[0],
            "response": None,
            "error": {"code": "request_timeout", "message": "The request timed out."},
        },
        {
            "custom_id": k[2],
            "response": {
                "status_code": 400,
                "body": {
                    "error": {"message": "Invalid value for 'max_tokens'", "code": "invalid_value"}
                },
            },
            "error": None,
        },
        {
            "custom_id": k[3],
            "response": {
                "status_code": 503,
                "body": {
                    "object": "chat.completion",
                    "choices": [{"message": {"content": "overloaded"}}],
                },
            },
            "error": None,
        },
        {
            "custom_id": k[4],
            "response": None,
            "error": {"code": "batch_expired", "message": "This request expired."},
        },
        {
            "custom_id": k[5],
            "response": {
                "status_code": 200,
                "body": {
                    "object": "chat.completion",
                    "choices": [{"message": {"content": "Both are good."}}],
                },
            },
            "error": None,
        },
        {
            "custom_id": k[6],
            "response": {
                "status_code": 200,
                "body": {
                    "object": "chat.completion",
                    "choices": [{"message": {"content": f"Sure: {S2}"}}],
                },
            },
            "error": None,
        },
        # a valid winner is a result even when the line also reports a problem (§4.3 #1)
        {
            "custom_id": k[7],
            "response": {
                "status_code": 500,
                "body": {"object": "chat.completion", "choices": [{"message": {"content": S1}}]},
            },
            "error": None,
        },
    ]
    out_path = tmp_path / "out.jsonl"
    with out_path.open("wb") as handle:
        for line in openai_lines:
            handle.write(orjson.dumps(line) + b"\n")
        handle.write(b'{"custom_id": "' + k[1].encode() + b'", "response": {"status_co\n')
    raw = OPENAI.parse_results(out_path)
    anthropic_path = tmp_path / "anthropic.jsonl"
    anthropic_path.write_bytes(
        orjson.dumps({"custom_id": k[8], "result": {"type": "canceled"}}) + b"\n"
    )
    raw = pl.concat([raw, ANTHROPIC.parse_results(anthropic_path)])
    # a line with a result type but no message at all
    raw = pl.concat([raw, raw_frame([raw_row(k[9], None, status_code=None, result_type="failed")])])
    out = normalize(raw, pairs)
    assert_partition(pairs, out)
    assert out.results.select("custom_id", "better_id", "winner_pos").rows() == [
        (k[6], "T6", 2),
        (k[7], "S7", 1),
    ]
    failed = {r["custom_id"]: r for r in out.failed_attempts.iter_rows(named=True)}
    expected = {
        k[0]: ("timeout", "The request timed out."),
        k[1]: ("parse_error", "Failed to parse JSON line 8 of out.jsonl"),
        k[2]: ("http_error", "Invalid value for 'max_tokens'"),
        k[3]: ("http_error", "HTTP 503"),
        k[4]: ("http_error", "This request expired."),
        k[5]: ("backend_missing_fields", "No winner tag found in the response"),
        k[8]: ("http_error", "request canceled"),
        k[9]: ("http_error", "Request failed"),
    }
    assert {key: (r["error_code"], r["error_detail"]) for key, r in failed.items()} == expected
    assert failed[k[2]]["status_code"] == 400
    assert failed[k[0]]["error_message"] == "The request timed out."


def test_timeout_wins_over_status_and_parse_over_http() -> None:
    pairs = segment([("A", "B"), ("C", "D"), ("E", "F")])
    k = pairs.get_column("custom_id").to_list()
    raw = raw_frame(
        [
            raw_row(k[0], None, status_code=504, error_message="Gateway Timeout"),
            raw_row(k[1], None, status_code=400, error_message="could not parse the JSON body"),
            raw_row(k[2], "", result_type="errored", status_code=None),
        ]
    )
    codes = normalize(raw, pairs).failed_attempts.sort("custom_id").get_column("error_code")
    assert codes.to_list() == ["timeout", "parse_error", "http_error"]


# ---------------------------------------------------------------- input coercion


@pytest.mark.parametrize(
    ("left", "right"),
    [("A", "B"), ("id1", "id2"), ("A_id", "B_id"), ("idA", "idB"), ("ID_A", "ID_B")],
)
def test_id_aliases(left: str, right: str) -> None:
    pairs = pl.DataFrame({"custom_id": ["r0", "r1"], left: ["x_1", "y:2"], right: ["z 3", "w#4"]})
    raw = raw_frame([raw_row("r1", S1), raw_row("r0", S2)])
    out = normalize(raw, pairs)
    res = out.results.sort("custom_id")
    assert res.select("ID1", "ID2", "A_id", "B_id").rows() == [
        ("x_1", "z 3", "x_1", "z 3"),
        ("y:2", "w#4", "y:2", "w#4"),
    ]
    assert res.get_column("better_id").to_list() == ["z 3", "y:2"]
    assert res.get_column("winner_pos").to_list() == [2, 1]
    assert res.get_column("pair_uid").to_list() == ["x_1:z 3#1", "w#4:y\\:2#1"]
    assert res.get_column("text1").to_list() == [None, None]


def test_missing_id_columns_raise() -> None:
    with pytest.raises(InputError, match="ID1, ID2"):
        normalize(raw_frame([]), pl.DataFrame({"custom_id": ["r0"], "left": ["a"], "right": ["b"]}))


def test_numeric_ids_become_strings() -> None:
    pairs = pl.DataFrame({"custom_id": ["r0"], "ID1": [7], "ID2": [11]})
    out = normalize(raw_frame([raw_row("r0", S2)]), pairs)
    assert out.results.select("ID1", "ID2", "better_id").row(0) == ("7", "11", "11")


def test_given_pair_uid_kept_and_phase_iter() -> None:
    pairs = segment(
        [("A", "B"), ("A", "B")], pair_uid=["mine", ""], phase=["warm", "warm"], iter=[1, 2]
    )
    k = pairs.get_column("custom_id").to_list()
    out = normalize(raw_frame([raw_row(k[0], S1), raw_row(k[1], "?"), raw_row(k[1], S1)]), pairs)
    # k[1]'s last line has a winner; its earlier line is a duplicate attempt
    assert out.results.select("pair_uid", "phase", "iter").rows() == [
        ("mine", "warm", 1),
        ("A:B#2", "warm", 2),
    ]
    failed = out.failed_attempts.select("pair_uid", "phase", "iter", "is_duplicate").rows()
    assert failed == [("A:B#2", "warm", 2, True)]
    out = normalize(raw_frame([raw_row(k[0], S1), raw_row(k[1], S1), raw_row(k[1], "?")]), pairs)
    failed = out.failed_attempts.sort("is_duplicate")
    assert failed.select("pair_uid", "phase", "iter", "is_duplicate").rows() == [
        ("A:B#2", "warm", 2, False),
        ("A:B#2", "warm", 2, True),
    ]


def test_results_columns_and_types() -> None:
    pairs = segment([("A", "B")], phase=["main"])
    k0 = pairs.get_column("custom_id").item()
    out = normalize(
        raw_frame([raw_row(k0, S2, model=None)]),
        pairs,
        backend="gemini",
        segment_index=2,
        batch_id="batches/x",
    )
    row = out.results.row(0, named=True)
    assert row["model"] == "gpt-requested"  # no reported model: the requested one
    assert (row["backend"], row["segment_index"], row["batch_id"]) == ("gemini", 2, "batches/x")
    assert (row["received_at"], row["phase"], row["iter"]) == (WHEN, "main", None)
    schema = out.results.schema
    assert schema["winner_pos"] == pl.Int64
    assert schema["received_at"] == pl.Datetime("us", "UTC")
    for name in (
        "pair_uid",
        "unordered_key",
        "ordered_key",
        "A_id",
        "B_id",
        "better_id",
        "winner_pos",
        "phase",
        "iter",
        "received_at",
        "backend",
        "model",
    ):
        assert name in schema
    assert "_matched" not in schema and "_line" not in schema


def test_pairs_without_custom_id_aligned_by_row_order() -> None:
    pairs = pl.DataFrame({"ID1": ["a_b", "c"], "ID2": ["d", "e f"]})
    raw = raw_frame([raw_row("k-0", S2), raw_row("k-1", "no tag")])
    out = normalize(raw, pairs)
    assert out.results.select("custom_id", "ID1", "ID2", "better_id", "winner_pos").rows() == [
        ("k-0", "a_b", "d", "d", 2)
    ]
    failed = out.failed_attempts.row(0, named=True)
    assert (failed["custom_id"], failed["A_id"], failed["error_code"]) == (
        "k-1",
        "c",
        "backend_missing_fields",
    )


def test_row_order_needs_equal_counts() -> None:
    pairs = pl.DataFrame({"ID1": ["a", "c"], "ID2": ["b", "d"]})
    with pytest.raises(InputError, match="Unable to align"):
        normalize(raw_frame([raw_row("k-0", S2)]), pairs)


# ---------------------------------------------------------------- failed_attempts_from_pairs


def test_failed_attempts_from_pairs() -> None:
    pairs = segment([("a_vs_b", "c"), ("c", "a_vs_b")], phase=["p", "p"], iter=[3, 4])
    out = failed_attempts_from_pairs(
        pairs,
        backend="anthropic",
        model="claude-x",
        error_code="http_error",
        error_detail="Batch status: failed",
        attempted_at=WHEN,
        segment_index=1,
        batch_id="b1",
    )
    assert out.schema == pl.Schema(FAILED_SCHEMA)
    assert out.height == 2
    assert out.get_column("custom_id").to_list() == pairs.get_column("custom_id").to_list()
    assert out.select("A_id", "B_id", "unordered_key", "pair_uid").rows() == [
        ("a_vs_b", "c", "a_vs_b:c", "a_vs_b:c#1"),
        ("c", "a_vs_b", "a_vs_b:c", "a_vs_b:c#2"),
    ]
    row = out.row(0, named=True)
    assert (row["backend"], row["model"], row["error_code"], row["error_detail"]) == (
        "anthropic",
        "claude-x",
        "http_error",
        "Batch status: failed",
    )
    assert (row["attempted_at"], row["segment_index"], row["batch_id"]) == (WHEN, 1, "b1")
    assert (row["phase"], row["iter"], row["is_duplicate"]) == ("p", 3, False)
    assert row["status_code"] is None


def test_failed_attempts_from_pairs_aliases_without_custom_id() -> None:
    out = failed_attempts_from_pairs(
        pl.DataFrame({"A": ["x"], "B": ["y"]}),
        backend="openai",
        model="m",
        error_code="timeout",
        error_detail="Timed out waiting",
    )
    row = out.row(0, named=True)
    assert (row["A_id"], row["B_id"], row["custom_id"], row["error_code"]) == (
        "x",
        "y",
        None,
        "timeout",
    )
    assert row["attempted_at"] is not None
    assert (row["phase"], row["iter"]) == (None, None)


def test_failed_attempts_from_pairs_requires_ids() -> None:
    with pytest.raises(InputError):
        failed_attempts_from_pairs(
            pl.DataFrame({"x": [1]}),
            backend="openai",
            model="m",
            error_code="http_error",
            error_detail="d",
        )


# ---------------------------------------------------------------- the invariant, property-based

OUTCOMES = ("s1", "s2", "notag", "errored", "errored_with_tag", "timeout", "parse")


def _line(custom_id: str, outcome: str) -> dict[str, Any]:
    if outcome == "s1":
        return raw_row(custom_id, f"because... {S1}")
    if outcome == "s2":
        return raw_row(custom_id, f"{S1}? no: {S2}")
    if outcome == "notag":
        return raw_row(custom_id, "SAMPLE_1 maybe")
    if outcome == "errored":
        return raw_row(
            custom_id, None, status_code=500, result_type="errored", error_message="boom"
        )
    if outcome == "errored_with_tag":
        return raw_row(custom_id, S2, status_code=500, result_type="errored")
    if outcome == "timeout":
        return raw_row(
            custom_id,
            None,
            status_code=None,
            result_type="errored",
            error_message="request timed out",
        )
    return raw_row(
        custom_id,
        None,
        status_code=None,
        result_type="errored",
        error_message="Failed to parse JSON line 3 of out.jsonl",
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    ids = draw(st.lists(st.sampled_from(HOSTILE_IDS), min_size=2, max_size=5, unique=True))
    n = draw(st.integers(1, 20))
    id_pairs = []
    for _ in range(n):
        a, b = draw(st.sampled_from([(x, y) for x in ids for y in ids if x != y]))
        id_pairs.append((a, b))
    pairs = segment(
        id_pairs,
        run_tag="pbprop",
        segment_index=draw(st.integers(0, 3)),
        first_row=draw(st.integers(0, 50)),
    )
    lines: list[dict[str, Any]] = []
    for key in pairs.get_column("custom_id"):
        answers = draw(st.lists(st.sampled_from(OUTCOMES), max_size=3))  # 0: missing, >1: dups
        lines.extend(_line(key, outcome) for outcome in answers)
    for n_unknown in range(draw(st.integers(0, 3))):
        unknown = draw(st.sampled_from(["pbother-0-0", "pbprop-9-999", "A:B#1", f"u{n_unknown}"]))
        lines.append(_line(unknown, draw(st.sampled_from(OUTCOMES))))
    random.Random(draw(st.integers(0, 2**32))).shuffle(lines)
    return pairs, lines


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), batch_status=st.sampled_from([None, "expired"]))
def test_invariant_property(
    scenario: tuple[pl.DataFrame, list[dict[str, Any]]], batch_status: str | None
) -> None:
    pairs, lines = scenario
    out = normalize(raw_frame(lines), pairs, batch_status=batch_status)
    assert_partition(pairs, out)

    keys = set(pairs.get_column("custom_id"))
    known = [line for line in lines if line["custom_id"] in keys]
    last = {line["custom_id"]: line for line in known}  # the last line of each key wins
    answered = {k for k, line in last.items() if line["better_sample"] is not None}
    assert set(out.results.get_column("custom_id")) == answered

    dups = out.failed_attempts.filter(pl.col("is_duplicate"))
    assert dups.height == len(known) - len(last)
    assert set(dups.get_column("custom_id")) <= keys
    assert set(dups.get_column("error_detail")) <= {DUPLICATE_DETAIL}

    res = out.results
    sample_pos = res.get_column("better_sample").replace_strict({"SAMPLE_1": 1, "SAMPLE_2": 2})
    assert res.get_column("winner_pos").to_list() == sample_pos.to_list()
    expected_id = pl.when(pl.col("winner_pos") == 1).then(pl.col("ID1")).otherwise(pl.col("ID2"))
    assert res.select((pl.col("better_id") == expected_id).all()).item() in (True, None)
    assert (
        res.select((pl.col("A_id") == pl.col("ID1")) & (pl.col("B_id") == pl.col("ID2")))
        .to_series()
        .all()
    )

    missing = out.failed_attempts.filter(
        ~pl.col("is_duplicate") & ~pl.col("custom_id").is_in(list(last))
    )
    detail = f"Batch status: {batch_status}" if batch_status else MISSING_DETAIL
    assert set(missing.get_column("error_detail")) <= {detail}
    assert missing.height == len(keys) - len(last)
    codes = set(out.failed_attempts.get_column("error_code"))
    assert codes <= {"http_error", "timeout", "parse_error", "backend_missing_fields"}
