"""The clean segment's row path gives the general normaliser's frames, and is taken
whenever a segment is clean."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from pairbatch.normalize import normalize_results
from pairbatch.normalize_rows import clean_results
from pairbatch.results import ROW_FIELDS, rows_to_frame

AT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
TAGS = [("<BETTER_SAMPLE>", "</BETTER_SAMPLE>"), ("[[", "]]"), ("X", "X")]
IDS = st.sampled_from(["a", "b", "c", "NA", "", "é"])


@st.composite
def segments(draw: st.DrawFn) -> tuple[pl.DataFrame, list[tuple[Any, ...]], tuple[str, str]]:
    n = draw(st.integers(1, 5))
    keys = [f"k{i}" for i in range(n)]
    if draw(st.integers(0, 9)) == 0:
        keys[-1] = keys[0]  # two pairs sharing a key: not clean
    columns: dict[str, Any] = {
        "custom_id": keys,
        "ID1": [draw(IDS) for _ in range(n)],
        "text1": [draw(st.sampled_from(["t", None])) for _ in range(n)],
        "ID2": [draw(IDS) for _ in range(n)],
        "text2": ["u"] * n,
    }
    if draw(st.booleans()):
        columns["extra"] = list(range(n))  # a user column, carried through
    if draw(st.integers(0, 9)) == 0:
        columns["phase"] = ["p"] * n
    pairs = pl.DataFrame(columns)
    prefix, suffix = draw(st.sampled_from(TAGS))
    lines = list(keys)
    lines = draw(st.permutations(lines))
    if draw(st.integers(0, 4)) == 0:
        lines = [*lines, draw(st.sampled_from([*keys, "stray", None]))]
    if draw(st.integers(0, 4)) == 0 and len(lines) > 1:
        lines = lines[1:]
    rows = [_row(draw, key, prefix, suffix) for key in lines]
    return pairs, rows, (prefix, suffix)


def _row(draw: st.DrawFn, key: str | None, prefix: str, suffix: str) -> tuple[Any, ...]:
    verdict = draw(st.sampled_from(["1", "2", "12", "21", "", "3"]))
    content = "".join(f"a {prefix}SAMPLE_{k}{suffix} b" for k in verdict)
    values = {
        "custom_id": key,
        "model": draw(st.sampled_from([None, "", "gpt-x"])),
        "object_type": draw(st.sampled_from([None, "response"])),
        "status_code": draw(st.sampled_from([200, None, 500])),
        "result_type": draw(st.sampled_from(["succeeded", "errored"])),
        "error_message": draw(st.sampled_from([None, "truncated: length", "timed out"])),
        "thoughts": draw(st.sampled_from([None, "", "hmm"])),
        "content": draw(st.sampled_from([content, content, "", None])),
        "prompt_tokens": draw(st.sampled_from([None, 0, 12])),
        "completion_tokens": draw(st.sampled_from([None, 5])),
        "total_tokens": draw(st.sampled_from([None, 17, 2**62])),
        "prompt_cached_tokens": None,
        "reasoning_tokens": draw(st.sampled_from([None, 3])),
    }
    return tuple(values[name] for name in ROW_FIELDS)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=segments())
def test_row_path_equals_general_normaliser(
    case: tuple[pl.DataFrame, list[tuple[Any, ...]], tuple[str, str]],
) -> None:
    pairs, rows, (prefix, suffix) = case
    meta: dict[str, Any] = {
        "backend": "openai",
        "model": "default-model",
        "segment_index": 3,
        "batch_id": "batch_1",
        "received_at": AT,
    }
    general = normalize_results(
        rows_to_frame(rows, tag_prefix=prefix, tag_suffix=suffix), pairs, **meta
    )
    clean = clean_results(rows, pairs, tag_prefix=prefix, tag_suffix=suffix, **meta)
    if clean is not None:
        assert general.failed_attempts.height == 0
        assert_frame_equal(clean, general.results)
    elif (
        general.failed_attempts.height == 0
        and len(rows) == pairs.height  # no line matching no pair
        and "phase" not in pairs.columns
        and prefix != "X"  # tags that can overlap go the general way
    ):
        raise AssertionError("a clean segment missed the row path")


def test_clean_segment_takes_the_row_path() -> None:
    pairs = pl.DataFrame({"custom_id": ["k0"], "ID1": ["a"], "text1": ["t"], "ID2": ["b"]})
    row = {name: None for name in ROW_FIELDS} | {
        "custom_id": "k0",
        "content": "<BETTER_SAMPLE>SAMPLE_2</BETTER_SAMPLE>",
    }
    frame = clean_results(
        [tuple(row[n] for n in ROW_FIELDS)],
        pairs,
        backend="anthropic",
        model="m",
        segment_index=1,
        batch_id=None,
        received_at=AT,
    )
    assert frame is not None
    assert frame.select("better_id", "winner_pos", "model").row(0) == ("b", 2, "m")
