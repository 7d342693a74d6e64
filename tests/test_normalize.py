"""Normalisation against a segment's stored pairs: results, failed attempts, invariant."""

from __future__ import annotations

import logging
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
    Normalized,
    failed_attempts_from_pairs,
    normalize_results,
)
from pairbatch.pairs import assign_custom_ids, with_pair_keys
from pairbatch.providers import anthropic, openai
from pairbatch.results import RESULT_SCHEMA

S1 = "<BETTER_SAMPLE>SAMPLE_1</BETTER_SAMPLE>"
S2 = "<BETTER_SAMPLE>SAMPLE_2</BETTER_SAMPLE>"
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HOSTILE = ["a_b", "x_vs_y", "with space", "ünï©ødé", "k:1", "h#2", "EXP_1_vs_2", "plain"]


def make_pairs(ids: list[tuple[str, str]], *, extra: bool = True) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "ID1": [a for a, _ in ids],
            "text1": [f"text of {a}" for a, _ in ids],
            "ID2": [b for _, b in ids],
            "text2": [f"text of {b}" for _, b in ids],
        }
    )
    if extra:
        frame = frame.with_columns(pl.lit("essay").alias("task"))
    return assign_custom_ids(with_pair_keys(frame), "tagtest01", 3, 0)


def oa_line(cid: str, answer: str | None, *, status: int = 200) -> dict[str, Any]:
    if status != 200:
        body: dict[str, Any] = {"error": {"message": "bad request"}}
    else:
        body = {
            "object": "chat.completion",
            "model": "gpt-4.1-mini-2025-04-14",
            "choices": [{"message": {"content": answer}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        }
    return {"custom_id": cid, "response": {"status_code": status, "body": body}}


def raw_from(tmp_path: Path, lines: list[dict[str, Any] | bytes]) -> pl.DataFrame:
    path = tmp_path / "out.jsonl"
    path.write_bytes(
        b"".join((ln if isinstance(ln, bytes) else orjson.dumps(ln)) + b"\n" for ln in lines)
    )
    return openai.BACKEND.parse_results(path)


def norm(raw: pl.DataFrame, pairs: pl.DataFrame, **kwargs: Any) -> Normalized:
    return normalize_results(
        raw,
        pairs,
        backend="openai",
        model="gpt-4.1-mini",
        segment_index=3,
        batch_id="batch_1",
        received_at=WHEN,
        **kwargs,
    )


def test_results_columns_types_and_ids_from_pairs(tmp_path: Path) -> None:
    pairs = make_pairs([(HOSTILE[i], HOSTILE[-1 - i]) for i in range(len(HOSTILE))])
    keys = pairs.get_column("custom_id").to_list()
    answers = [S1 if i % 2 else S2 for i in range(len(keys))]
    lines = [oa_line(k, a) for k, a in zip(keys, answers, strict=True)]
    random.Random(3).shuffle(lines)  # providers do not keep request order
    out = norm(raw_from(tmp_path, lines), pairs)
    res = out.results.sort("custom_id")
    assert out.failed_attempts.height == 0
    assert res.columns[: pairs.width] == pairs.columns  # all pair columns, extras kept
    expected_tail = ["better_id", "backend", "segment_index", "batch_id", "winner_pos"]
    assert {*expected_tail, "received_at", *RESULT_SCHEMA} <= set(res.columns)
    assert res.schema["winner_pos"] == pl.Int64
    assert res.schema["segment_index"] == pl.Int64
    assert res.schema["received_at"] == pl.Datetime("us", "UTC")
    merged = res.join(pairs, on="custom_id", suffix="_p")
    # hostile IDs come back unchanged, from the pairs, never parsed from a key
    assert merged.get_column("ID1").to_list() == merged.get_column("ID1_p").to_list()
    for row in merged.iter_rows(named=True):
        winner = row["ID1"] if row["better_sample"] == "SAMPLE_1" else row["ID2"]
        assert row["better_id"] == winner
        assert row["winner_pos"] == (1 if row["better_sample"] == "SAMPLE_1" else 2)
    assert set(res.get_column("model")) == {"gpt-4.1-mini-2025-04-14"}  # API-reported
    assert set(res.get_column("received_at")) == {WHEN}
    assert set(res.get_column("batch_id")) == {"batch_1"}


def test_error_codes_in_reference_order(tmp_path: Path) -> None:
    pairs = make_pairs([(f"s{i}", f"t{i}") for i in range(7)])
    k = pairs.get_column("custom_id").to_list()
    lines: list[dict[str, Any] | bytes] = [
        oa_line(k[0], S1),  # valid
        oa_line(k[1], "no verdict"),  # backend_missing_fields
        oa_line(k[2], None, status=500),  # http_error, detail from the body
        {"custom_id": k[3], "response": None, "error": {"code": "x", "message": "Timed out"}},
        f'{{"custom_id": "{k[4]}", "response": {{'.encode(),  # parse_error
        {"custom_id": k[5], "response": None, "error": {"code": "batch_expired", "message": ""}},
    ]  # k[6]: no line at all
    out = norm(raw_from(tmp_path, lines), pairs)
    assert out.results.get_column("custom_id").to_list() == [k[0]]
    failed = {r["custom_id"]: r for r in out.failed_attempts.iter_rows(named=True)}
    codes = {key: failed[key]["error_code"] for key in k[1:]}
    assert codes == {
        k[1]: "backend_missing_fields",
        k[2]: "http_error",
        k[3]: "timeout",
        k[4]: "parse_error",
        k[5]: "http_error",
        k[6]: "http_error",
    }
    assert failed[k[2]]["error_detail"] == "bad request"
    assert failed[k[2]]["status_code"] == 500
    assert failed[k[6]]["error_detail"] == MISSING_DETAIL
    assert failed[k[1]]["prompt_tokens"] == 10
    assert out.failed_attempts.schema == pl.Schema(FAILED_SCHEMA)


def test_duplicates_last_line_wins_and_unknown_ids_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pairs = make_pairs([("a", "b"), ("c", "d")])
    k = pairs.get_column("custom_id").to_list()
    lines: list[dict[str, Any] | bytes] = [
        oa_line(k[0], S1),
        oa_line("someone-else-7", S2),
        oa_line(k[0], S2),  # the last line for k[0] is the verdict
        b"{broken",  # no key: can match no pair, logged
        oa_line(k[1], S1),
    ]
    with caplog.at_level(logging.WARNING, logger="pairbatch.normalize"):
        out = norm(raw_from(tmp_path, lines), pairs)
    assert "match no pair" in caplog.text and "someone-else-7" in caplog.text
    res = out.results.sort("custom_id")
    assert res.get_column("better_id").to_list() == ["b", "c"]
    dup = out.failed_attempts
    assert dup.height == 1
    assert dup.row(0, named=True)["error_detail"] == DUPLICATE_DETAIL
    assert dup.row(0, named=True)["error_code"] == "http_error"
    assert dup.row(0, named=True)["is_duplicate"] is True
    assert "someone-else-7" not in res.get_column("custom_id").to_list()


@pytest.mark.parametrize("status", [None, "expired", "cancelled"])
def test_salvaged_batch_status(tmp_path: Path, status: str | None) -> None:
    pairs = make_pairs([("a", "b"), ("c", "d"), ("e", "f")])
    k = pairs.get_column("custom_id").to_list()
    out = norm(raw_from(tmp_path, [oa_line(k[1], S2)]), pairs, batch_status=status)
    assert out.results.get_column("custom_id").to_list() == [k[1]]
    details = set(out.failed_attempts.get_column("error_detail"))
    assert details == {f"Batch status: {status}" if status else MISSING_DETAIL}


@pytest.mark.parametrize(
    ("left", "right"), [("A", "B"), ("idA", "idB"), ("ID_A", "ID_B"), ("id1", "id2")]
)
def test_aliases_without_custom_id_align_by_row_order(left: str, right: str) -> None:
    pairs = pl.DataFrame({left: ["x_1", "y 2"], right: ["z:3", "w#4"]})
    raw = pl.DataFrame(
        {"custom_id": ["r1", "r2"], "content": [S2, S1], "better_sample": ["SAMPLE_2", "SAMPLE_1"]}
    )
    out = norm(raw, pairs)
    assert out.results.get_column("better_id").to_list() == ["z:3", "y 2"]
    assert out.results.get_column("ordered_key").to_list() == ["x_1:z\\:3", "y 2:w#4"]


def test_row_order_alignment_refuses_ambiguity() -> None:
    pairs = pl.DataFrame({"ID1": ["a", "b"], "ID2": ["c", "d"]})
    with pytest.raises(InputError, match="Unable to align raw results with pairs"):
        norm(pl.DataFrame({"custom_id": ["r1"], "better_sample": ["SAMPLE_1"]}), pairs)
    with pytest.raises(InputError, match="Unable to align raw results with pairs"):
        norm(pl.DataFrame({"custom_id": ["r1", "r1"], "better_sample": [None, None]}), pairs)


def test_raw_with_other_dtypes_is_coerced() -> None:
    pairs = make_pairs([("a", "b")])
    raw = pl.DataFrame(
        {
            "custom_id": pairs.get_column("custom_id"),
            "status_code": pl.Series([200], dtype=pl.Int32),
            "better_sample": ["SAMPLE_2"],
        }
    )
    res = norm(raw, pairs).results
    assert res.schema["status_code"] == pl.Int64
    assert res.get_column("better_id").to_list() == ["b"]


def test_empty_inputs_give_typed_frames() -> None:
    pairs = make_pairs([("a", "b")]).clear()
    out = norm(pl.DataFrame(schema=RESULT_SCHEMA), pairs)
    assert out.results.height == 0 and out.failed_attempts.height == 0
    assert out.failed_attempts.schema == pl.Schema(FAILED_SCHEMA)
    both = pl.concat(
        [out.results, norm(pl.DataFrame(), make_pairs([("c", "d")])).results],
        how="diagonal_relaxed",
    )
    assert both.height == 0


def test_failed_attempts_from_pairs_whole_batch() -> None:
    pairs = make_pairs([("a_1", "b vs c"), ("d", "e")])
    failed = failed_attempts_from_pairs(
        pairs,
        backend="anthropic",
        model="claude-x",
        error_code="http_error",
        error_detail="Batch status: failed",
        attempted_at=WHEN,
        segment_index=3,
        batch_id="msgbatch_1",
    )
    assert failed.schema == pl.Schema(FAILED_SCHEMA)
    assert failed.get_column("A_id").to_list() == ["a_1", "d"]
    assert set(failed.get_column("error_detail")) == {"Batch status: failed"}
    assert failed.get_column("custom_id").to_list() == pairs.get_column("custom_id").to_list()


# ---------------------------------------------------------------- the invariant


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    ids = draw(st.lists(st.sampled_from(HOSTILE), min_size=2, max_size=6, unique=True))
    n = draw(st.integers(0, 12))
    pair_ids = [tuple(draw(st.permutations(ids))[:2]) for _ in range(n)]
    pairs = make_pairs([(a, b) for a, b in pair_ids], extra=False)
    lines: list[dict[str, Any]] = []
    kinds = ["s1", "s2", "none", "errored", "canceled", "expired"]
    for key in pairs.get_column("custom_id").to_list():
        for _ in range(draw(st.integers(0, 3))):  # unanswered, answered, duplicated
            kind = draw(st.sampled_from(kinds))
            result: dict[str, Any]
            if kind in ("errored", "canceled", "expired"):
                result = {"type": kind}
            else:
                text = {"s1": S1, "s2": S2, "none": "hmm"}[kind]
                message = {"type": "message", "content": [{"type": "text", "text": text}]}
                result = {"type": "succeeded", "message": message}
            lines.append({"custom_id": key, "result": result})
    if draw(st.booleans()):
        lines.append({"custom_id": "stranger", "result": {"type": "errored"}})
    return pairs, draw(st.permutations(lines))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario=scenarios(), batch_status=st.sampled_from([None, "expired"]))
def test_every_pair_exactly_once(
    tmp_path: Path, scenario: tuple[pl.DataFrame, list[dict[str, Any]]], batch_status: str | None
) -> None:
    pairs, lines = scenario
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    raw = anthropic.BACKEND.parse_results(path)
    out = normalize_results(
        raw, pairs, backend="anthropic", model="claude-x", batch_status=batch_status
    )
    failed = out.failed_attempts
    outcomes = (
        out.results.get_column("custom_id").to_list()
        + failed.filter(~pl.col("is_duplicate")).get_column("custom_id").to_list()
    )
    assert sorted(outcomes) == sorted(pairs.get_column("custom_id").to_list())
    # duplicates: one extra attempt per surplus line of a known key
    counts: dict[str, int] = {}
    for line in lines:
        counts[line["custom_id"]] = counts.get(line["custom_id"], 0) + 1
    known = set(pairs.get_column("custom_id"))
    surplus = sum(c - 1 for key, c in counts.items() if key in known)
    assert failed.get_column("is_duplicate").sum() == surplus
    # IDs always from the pairs
    by_key = {r["custom_id"]: (r["ID1"], r["ID2"]) for r in pairs.iter_rows(named=True)}
    for row in out.results.iter_rows(named=True):
        assert (row["A_id"], row["B_id"]) == by_key[row["custom_id"]]
        assert row["better_id"] in by_key[row["custom_id"]]
    assert "stranger" not in outcomes
