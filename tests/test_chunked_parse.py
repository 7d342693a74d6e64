"""The chunked parse + normalise path gives the in-memory path's results, on any chunking."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from pairbatch.chunked import Segment, settle_chunked
from pairbatch.normalize import normalize_results
from pairbatch.pairs import assign_custom_ids, with_pair_keys
from pairbatch.providers import openai
from pairbatch.results import iter_row_chunks, parse_jsonl, rows_to_frame

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TAG = "<BETTER_SAMPLE>{}</BETTER_SAMPLE>"


def make_pairs(n: int) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "ID1": [f"a{i}" for i in range(n)],
            "text1": [f"text of a{i}" for i in range(n)],
            "ID2": [f"b{i}" for i in range(n)],
            "text2": [f"text of b{i}" for i in range(n)],
        }
    ).with_columns(pl.lit("essay").alias("task"), pl.lit(2, pl.Int64).alias("iter"))
    return assign_custom_ids(with_pair_keys(frame), "tagchunk01", 3, 0)


def line(cid: str, answer: str | None, *, status: int = 200) -> dict[str, Any]:
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


def write_messy_file(path: Path, keys: list[str], seed: int = 7) -> None:
    """Valid, invalid, errored, duplicated, stray, broken and blank lines, shuffled;
    some pairs get no line at all."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for key in keys[: len(keys) - 5]:
        kind = rng.random()
        if kind < 0.6:
            body = line(key, "because " + TAG.format(rng.choice(["SAMPLE_1", "SAMPLE_2"])))
        elif kind < 0.7:
            body = line(key, "no verdict here")
        elif kind < 0.8:
            body = line(key, None, status=500)
        else:
            body = line(key, "first " + TAG.format("SAMPLE_1"))
            out.append(orjson.dumps(body))  # a duplicate; the later line wins
            body = line(key, "again " + TAG.format("SAMPLE_2"))
        out.append(orjson.dumps(body))
    out.append(orjson.dumps(line("stranger-key", TAG.format("SAMPLE_1"))))
    out.append(b'{"custom_id": "' + keys[0].encode() + b'", "response": {not json')
    out.append(b"[1, 2]")
    out.append(b"   ")
    rng.shuffle(out)
    path.write_bytes(b"\n".join(out))  # no newline after the last line


def in_memory(path: Path, pairs: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    raw = openai.BACKEND.parse_results(path)
    normalized = normalize_results(
        raw,
        pairs,
        backend="openai",
        model="gpt-4.1-mini",
        segment_index=3,
        batch_id="batch_x",
        received_at=WHEN,
        batch_status="expired",
    )
    return normalized.results, normalized.failed_attempts


def chunked(path: Path, pairs: pl.DataFrame, block: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    segment = Segment(
        pairs=pairs,
        backend="openai",
        model="gpt-4.1-mini",
        segment_index=3,
        batch_id="batch_x",
        received_at=WHEN,
        batch_status="expired",
    )
    out = path.parent / f"out{block}"
    out.mkdir()
    settled = settle_chunked(
        [path],
        openai.BACKEND.parse_line,
        openai.BACKEND.fast_line,
        segment,
        results_path=out / "results.parquet",
        failed_path=out / "failed.parquet",
        block_bytes=block,
    )
    results = pl.read_parquet(out / "results.parquet")
    failed = pl.read_parquet(out / "failed.parquet")
    assert settled.results.rows == results.height
    assert settled.failed_attempts.rows == failed.height
    assert settled.results.size == (out / "results.parquet").stat().st_size
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left"
    return results, failed


def ordered(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(["custom_id", "is_duplicate", "error_detail"], nulls_last=True)


@pytest.mark.parametrize("numbered", [True, False])
@pytest.mark.parametrize("block", [1, 37, 4096, 1 << 22])
def test_chunked_equals_in_memory_on_any_block_size(
    tmp_path: Path, block: int, numbered: bool
) -> None:
    pairs = make_pairs(60)
    if not numbered:  # keys found by binary search, not by their number
        pairs = pairs.with_columns(pl.col("custom_id").str.reverse() + "x")
    path = tmp_path / "out.jsonl"
    keys = pairs.get_column("custom_id").to_list()
    write_messy_file(path, keys)
    with path.open("ab") as handle:  # a key that only looks like a pair's number
        handle.write(b"\n" + orjson.dumps(line("tagchunk01-3-007", TAG.format("SAMPLE_1"))))
    want_results, want_failed = in_memory(path, pairs)
    got_results, got_failed = chunked(path, pairs, block)
    assert got_results.schema == want_results.schema
    assert got_results.sort("custom_id").equals(want_results.sort("custom_id"))
    assert got_failed.schema == want_failed.schema
    assert ordered(got_failed).equals(ordered(want_failed))
    # every pair exactly once as a non-duplicate
    answered = got_failed.filter(~pl.col("is_duplicate")).select("custom_id")
    firsts = pl.concat([got_results.select("custom_id"), answered])
    assert sorted(firsts["custom_id"].to_list()) == sorted(pairs["custom_id"].to_list())


@pytest.mark.parametrize("block", [1, 2, 5, 64, 1000])
def test_rows_are_the_same_whatever_the_block_size(tmp_path: Path, block: int) -> None:
    """Lines cut by a block boundary (including blank, broken and unterminated ones)
    give the rows, and the careful parser's line numbers, of the whole-file read."""
    pairs = make_pairs(25)
    path = tmp_path / "out.jsonl"
    write_messy_file(path, pairs.get_column("custom_id").to_list(), seed=block)
    whole = parse_jsonl([path], openai.BACKEND.parse_line, fast_line=openai.BACKEND.fast_line)
    careful = parse_jsonl([path], openai.BACKEND.parse_line, fast_line=None)
    rows = [
        row
        for chunk in iter_row_chunks(
            [path], openai.BACKEND.parse_line, openai.BACKEND.fast_line, block_bytes=block
        )
        for row in chunk
    ]
    assert whole.equals(careful)
    assert len(rows) == whole.height
    assert rows_to_frame(rows).equals(whole)


def test_no_lines_at_all(tmp_path: Path) -> None:
    pairs = make_pairs(4)
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"\n\n")
    want_results, want_failed = in_memory(path, pairs)
    got_results, got_failed = chunked(path, pairs, 1024)
    assert got_results.equals(want_results)
    assert got_failed.equals(want_failed)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_settle_takes_the_chunked_path_for_big_files(
    tmp_path: Path, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same run, same emulator seed: every file 'big' gives the small-file results."""
    import pairbatch
    import pairbatch.settle
    from pairbatch.testing import ProviderEmulator
    from tests.engine_helpers import MODELS, check_run, credentials, study_pairs

    pairs = study_pairs(30, seed=3)
    got = {}
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return settle_chunked(*args, **kwargs)

    monkeypatch.setattr(pairbatch.settle, "settle_chunked", counted)
    for threshold in (1 << 40, 0):
        monkeypatch.setattr(pairbatch.settle, "BIG_RESULTS_BYTES", threshold)
        async with ProviderEmulator(latency=0.05, seed=5) as emu:
            creds = credentials(emu)
            out = tmp_path / f"run{threshold}"
            await pairbatch.submit_pairs_multi_batch(
                pairs,
                model=MODELS[provider],
                trait_name="Quality",
                trait_description="How good",
                backend=provider,
                output_dir=out,
                api_key=creds["api_keys"][provider],
                base_url=creds["base_urls"][provider],
                n_segments=3,
                write_registry=True,
            )
            result = await pairbatch.resume_multi_batches(
                output_dir=out, interval_seconds=0.05, **creds
            )
        check_run(result, pairs)
        # Run tags (so custom ids) differ between the runs: pairs are matched by uid.
        keep = ["pair_uid", "better_id", "winner_pos", "content", "model", "backend"]
        failed = ["pair_uid", "error_code", "error_detail", "is_duplicate"]
        got[threshold] = (
            result.combined.select(keep).sort("pair_uid"),
            result.failed_attempts.select(failed).sort("pair_uid"),
        )
    assert len(calls) == 3  # the second run's three segments, and only those
    small, big = got[1 << 40], got[0]
    assert small[0].height == pairs.height
    assert small[0].equals(big[0])
    assert small[1].equals(big[1])


def test_a_failure_mid_file_leaves_no_results_file(tmp_path: Path) -> None:
    """A line parser that fails part-way (its 21st line, some chunks already written):
    no results file, no temporary file, nothing half-written for a later settle to
    trust."""
    pairs = make_pairs(60)
    path = tmp_path / "out.jsonl"
    write_messy_file(path, pairs["custom_id"].to_list())
    seen: list[int] = []

    def fails_later(obj: dict[str, Any]) -> Any:
        seen.append(1)
        if len(seen) > 20:
            raise RuntimeError("parser broke")
        return openai.BACKEND.parse_line(obj)

    segment = Segment(
        pairs=pairs, backend="openai", model="m", segment_index=0, batch_id=None, received_at=WHEN
    )
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match="parser broke"):
        settle_chunked(
            [path],
            fails_later,
            None,
            segment,
            results_path=out / "results.parquet",
            failed_path=out / "failed.parquet",
            block_bytes=256,
        )
    assert list(out.iterdir()) == []
