"""Parsing + normalising a 200,000-line OpenAI ``responses`` output file.

Run by hand:  .venv/bin/python benchmarks/bench_parse.py [--lines 200000] [--repeat 3]

Measured (best of ``--repeat``), all in the same run on the same temp file:

* pairbatch:   ``BACKEND.parse_results(path)`` + ``normalize_results(...)`` (the full path)
* (a) bare     ``polars.read_ndjson(path)`` with schema inference, no field extraction
* (b) baseline ``json.loads`` per line, the same fields pulled into dicts, then
               ``pl.DataFrame(list_of_dicts)``
* (c) native   ``pl.scan_ndjson`` with an explicit nested ``schema=`` and Polars
               expressions for the same columns (happy path only: unlike pairbatch it
               cannot give a row for a malformed line, it fails or drops it)
* (d) careful  pairbatch's orjson loop with every line through the careful
               ``parse_line`` (no fast extractor): what the fast path saves

Targets: pairbatch <= 2x (a), and >= 8x faster than (b).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from pairbatch.normalize import normalize_results
from pairbatch.pairs import assign_custom_ids, with_pair_keys
from pairbatch.providers.openai import BACKEND, parse_line
from pairbatch.results import (
    DEFAULT_TAG_PREFIX,
    DEFAULT_TAG_SUFFIX,
    RESULT_SCHEMA,
    find_winner,
    parse_jsonl,
)

RUN_TAG = "pbbench0001"
MODEL = "gpt-5-mini-2025-08-07"
_WORDS = [
    "the",
    "essay",
    "argues",
    "clearly",
    "with",
    "a",
    "strong",
    "thesis",
    "while",
    "sample",
    "two",
    "offers",
    "richer",
    "evidence",
    "but",
    "weaker",
    "organisation",
    "coherence",
    "vocabulary",
    "transitions",
    "paragraphing",
    "conclusion",
    "reader",
    "audience",
    "claim",
    "counterargument",
    "support",
    "accuracy",
    "grammar",
    "style",
    "tone",
]


# ---------------------------------------------------------------- data


def _sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n_words)).capitalize() + "."


def make_files(directory: Path, n: int, n_samples: int = 2000) -> tuple[Path, pl.DataFrame]:
    rng = random.Random(1234)
    ids = [f"S{k:05d}" for k in range(n_samples)]
    id1, id2 = [], []
    for _ in range(n):
        a, b = rng.sample(ids, 2)
        id1.append(a)
        id2.append(b)
    pairs = pl.DataFrame(
        {
            "ID1": id1,
            "text1": [f"Text of {a}: " + _sentence(rng, 30) for a in id1],
            "ID2": id2,
            "text2": [f"Text of {b}: " + _sentence(rng, 30) for b in id2],
        }
    )
    pairs = assign_custom_ids(with_pair_keys(pairs), RUN_TAG, 0, 0)
    keys = pairs.get_column("custom_id").to_list()
    order = list(range(n))
    rng.shuffle(order)  # providers do not promise request order
    path = directory / "batch_00_output.jsonl"
    summaries = [" ".join(_sentence(rng, 12) for _ in range(5)) for _ in range(64)]
    explanations = [_sentence(rng, 25) for _ in range(64)]
    with path.open("wb") as handle:
        for k in order:
            winner = "SAMPLE_1" if rng.random() < 0.5 else "SAMPLE_2"
            answer = f"{rng.choice(explanations)} <BETTER_SAMPLE>{winner}</BETTER_SAMPLE>"
            in_tok, reason_tok, out_tok = rng.randint(300, 900), rng.randint(50, 400), 40
            body = {
                "id": f"resp_{k:08d}{rng.getrandbits(64):016x}",
                "object": "response",
                "created_at": 1760000000 + k,
                "status": "completed",
                "error": None,
                "incomplete_details": None,
                "model": MODEL,
                "output": [
                    {
                        "id": f"rs_{k:08d}{rng.getrandbits(64):016x}",
                        "type": "reasoning",
                        "summary": [{"type": "summary_text", "text": rng.choice(summaries)}],
                    },
                    {
                        "id": f"msg_{k:08d}{rng.getrandbits(64):016x}",
                        "type": "message",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": answer, "annotations": []}],
                    },
                ],
                "parallel_tool_calls": True,
                "reasoning": {"effort": "low", "summary": "auto"},
                "tool_choice": "auto",
                "tools": [],
                "usage": {
                    "input_tokens": in_tok,
                    "input_tokens_details": {"cached_tokens": in_tok // 2 // 64 * 64},
                    "output_tokens": out_tok + reason_tok,
                    "output_tokens_details": {"reasoning_tokens": reason_tok},
                    "total_tokens": in_tok + out_tok + reason_tok,
                },
            }
            line = {
                "id": f"batch_req_{k:08d}{rng.getrandbits(64):016x}",
                "custom_id": keys[k],
                "response": {"status_code": 200, "request_id": f"req_{k:08d}", "body": body},
                "error": None,
            }
            handle.write(orjson.dumps(line) + b"\n")
    return path, pairs


# ---------------------------------------------------------------- approaches


def pairbatch_parse(path: Path) -> pl.DataFrame:
    return BACKEND.parse_results(path)


def pairbatch_normalize(raw: pl.DataFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    return normalize_results(raw, pairs, backend="openai", model=MODEL, segment_index=0).results


def careful_only(path: Path) -> pl.DataFrame:
    return parse_jsonl([path], parse_line)


def bare_read_ndjson(path: Path) -> pl.DataFrame:
    return pl.read_ndjson(path)


def _json_row(obj: dict[str, Any]) -> dict[str, Any]:
    """The same fields as pairbatch's OpenAI parser, the straightforward way."""
    response = obj.get("response") or {}
    body = response.get("body") or {}
    error = obj.get("error")
    usage = body.get("usage") or {}
    thoughts, content = [], []
    for item in body.get("output") or []:
        if item.get("type") == "reasoning":
            thoughts.extend(p["text"] for p in item.get("summary") or [] if p.get("text"))
        elif item.get("type") == "message":
            content.extend(
                p["text"]
                for p in item.get("content") or []
                if p.get("type") in ("output_text", "text", None) and isinstance(p.get("text"), str)
            )
    text = "".join(content) or None
    status = response.get("status_code")
    if error:
        result_type = {"batch_expired": "expired", "batch_cancelled": "canceled"}.get(
            error.get("code"), "errored"
        )
    elif body.get("error") or not (status is None or 200 <= status < 300):
        result_type = "errored"
    else:
        result_type = "succeeded"
    return {
        "custom_id": obj.get("custom_id") or None,
        "model": body.get("model") or None,
        "object_type": body.get("object") or None,
        "status_code": status,
        "result_type": result_type,
        "error_message": (error or {}).get("message") or (body.get("error") or {}).get("message"),
        "thoughts": "\n\n".join(thoughts) or None,
        "content": text,
        "better_sample": find_winner(text, DEFAULT_TAG_PREFIX, DEFAULT_TAG_SUFFIX),
        "prompt_tokens": usage.get("input_tokens"),
        "completion_tokens": usage.get("output_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "prompt_cached_tokens": (usage.get("input_tokens_details") or {}).get("cached_tokens"),
        "reasoning_tokens": (usage.get("output_tokens_details") or {}).get("reasoning_tokens"),
    }


def json_loads_baseline(path: Path) -> pl.DataFrame:
    rows = []
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                rows.append(_json_row(json.loads(line)))
    return pl.DataFrame(rows, schema=RESULT_SCHEMA)


_PART = pl.Struct({"type": pl.Utf8, "text": pl.Utf8})
_TOKENS = pl.Int64
NDJSON_SCHEMA = {
    "custom_id": pl.Utf8,
    "response": pl.Struct(
        {
            "status_code": _TOKENS,
            "body": pl.Struct(
                {
                    "object": pl.Utf8,
                    "model": pl.Utf8,
                    "error": pl.Struct({"message": pl.Utf8, "code": pl.Utf8}),
                    "output": pl.List(
                        pl.Struct(
                            {
                                "type": pl.Utf8,
                                "summary": pl.List(_PART),
                                "content": pl.List(_PART),
                            }
                        )
                    ),
                    "usage": pl.Struct(
                        {
                            "input_tokens": _TOKENS,
                            "input_tokens_details": pl.Struct({"cached_tokens": _TOKENS}),
                            "output_tokens": _TOKENS,
                            "output_tokens_details": pl.Struct({"reasoning_tokens": _TOKENS}),
                            "total_tokens": _TOKENS,
                        }
                    ),
                }
            ),
        }
    ),
    "error": pl.Struct({"code": pl.Utf8, "message": pl.Utf8}),
}


def _null_if_empty(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr != "").then(expr)


def polars_native(path: Path) -> pl.DataFrame:
    """(c): everything in Polars, with an explicit nested schema (responses bodies only)."""
    body = pl.col("response").struct.field("body")
    usage = body.struct.field("usage")
    output = body.struct.field("output")
    item = pl.element()
    # ``pl.element()`` inside ``list.eval`` is always the list's own element, so every
    # filter on a derived value takes a second ``list.eval`` over the derived list.
    summary_texts = output.list.eval(
        item.filter(item.struct.field("type") == "reasoning")
        .struct.field("summary")
        .explode()
        .struct.field("text")
    )
    thoughts = summary_texts.list.eval(item.filter(item.is_not_null() & (item != ""))).list.join(
        "\n\n"
    )
    message_parts = output.list.eval(
        item.filter(item.struct.field("type") == "message").struct.field("content").explode()
    )
    part_type = item.struct.field("type")
    content = (
        message_parts.list.eval(
            item.filter(part_type.is_in(["output_text", "text"]) | part_type.is_null())
            .struct.field("text")
            .drop_nulls()
        )
    ).list.join("")
    tag = re.escape(DEFAULT_TAG_PREFIX) + "(SAMPLE_[12])" + re.escape(DEFAULT_TAG_SUFFIX)
    status = pl.col("response").struct.field("status_code")
    error = pl.col("error")
    error_code = error.struct.field("code")
    result_type = (
        pl.when(error.is_not_null())
        .then(
            pl.when(error_code == "batch_expired")
            .then(pl.lit("expired"))
            .when(error_code == "batch_cancelled")
            .then(pl.lit("canceled"))
            .otherwise(pl.lit("errored"))
        )
        .when(body.struct.field("error").is_not_null())
        .then(pl.lit("errored"))
        .when(status.is_null() | status.is_between(200, 299))
        .then(pl.lit("succeeded"))
        .otherwise(pl.lit("errored"))
    )
    frame = (
        pl.scan_ndjson(path, schema=NDJSON_SCHEMA)
        .with_columns(_null_if_empty(content).alias("content"))
        .select(
            _null_if_empty(pl.col("custom_id")).alias("custom_id"),
            _null_if_empty(body.struct.field("model")).alias("model"),
            _null_if_empty(body.struct.field("object")).alias("object_type"),
            status.alias("status_code"),
            result_type.alias("result_type"),
            pl.coalesce(
                error.struct.field("message"),
                body.struct.field("error").struct.field("message"),
            ).alias("error_message"),
            _null_if_empty(thoughts).alias("thoughts"),
            pl.col("content"),
            pl.col("content")
            .str.extract_all(tag)
            .list.last()
            .str.extract(tag)
            .alias("better_sample"),
            usage.struct.field("input_tokens").alias("prompt_tokens"),
            usage.struct.field("output_tokens").alias("completion_tokens"),
            usage.struct.field("total_tokens").alias("total_tokens"),
            usage.struct.field("input_tokens_details")
            .struct.field("cached_tokens")
            .alias("prompt_cached_tokens"),
            usage.struct.field("output_tokens_details")
            .struct.field("reasoning_tokens")
            .alias("reasoning_tokens"),
        )
    )
    return frame.collect()


# ---------------------------------------------------------------- timing


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        result = None
        gc.collect()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_parse_") as tmp:
        start = time.perf_counter()
        path, pairs = make_files(Path(tmp), args.lines)
        size = path.stat().st_size
        print(
            f"generated {args.lines:,} lines, {size / 1e6:.1f} MB "
            f"({size / args.lines:.0f} B/line) in {time.perf_counter() - start:.1f}s; "
            f"polars {pl.__version__}, repeat={args.repeat} (best of)"
        )

        def full() -> pl.DataFrame:
            return pairbatch_normalize(pairbatch_parse(path), pairs)

        r = args.repeat
        t_full, results = best_of(r, full)
        t_parse, raw = best_of(r, lambda: pairbatch_parse(path))
        t_norm, _ = best_of(r, lambda: pairbatch_normalize(raw, pairs))
        t_bare, bare = best_of(r, lambda: bare_read_ndjson(path))
        t_json, baseline = best_of(r, lambda: json_loads_baseline(path))
        t_native, native = best_of(r, lambda: polars_native(path))
        t_native_full, _ = best_of(r, lambda: pairbatch_normalize(polars_native(path), pairs))
        t_careful, careful = best_of(r, lambda: careful_only(path))

        # the approaches must agree, or the timings mean nothing
        assert results.height == args.lines, results.height
        assert bare.height == args.lines
        key = "custom_id"
        assert raw.sort(key).equals(baseline.sort(key)), "json.loads baseline differs"
        assert raw.sort(key).equals(native.sort(key)), "polars-native frame differs"
        assert raw.equals(careful), "fast path differs from the careful parser"

        print(f"\n{'approach':<58}{'seconds':>9}{'lines/s':>12}")
        rows = [
            ("pairbatch: parse_results + normalize_results (full path)", t_full),
            ("  of which parse_results", t_parse),
            ("  of which normalize_results", t_norm),
            ("(a) pl.read_ndjson(path), inferred schema, no extraction", t_bare),
            ("(b) json.loads per line + dicts + pl.DataFrame(rows)", t_json),
            ("(c) pl.scan_ndjson(schema=...) + expressions (parse only)", t_native),
            ("(c) + normalize_results", t_native_full),
            ("(d) orjson loop, careful parse_line only (parse only)", t_careful),
        ]
        for label, seconds in rows:
            print(f"{label:<58}{seconds:>9.3f}{args.lines / seconds:>12,.0f}")
        print()
        ratio_a = t_full / t_bare
        ratio_b = t_json / t_full
        print(
            f"full path / (a) = {ratio_a:.2f}x   (target <= 2x: {'met' if ratio_a <= 2 else 'MISSED'})"
        )
        print(
            f"(b) / full path = {ratio_b:.2f}x faster (target >= 8x: "
            f"{'met' if ratio_b >= 8 else 'MISSED'})"
        )
        print(f"(b) / parse_results only = {t_json / t_parse:.2f}x faster")
        print(f"parse_results / (c) = {t_parse / t_native:.2f}x  (>1 means (c) is faster)")


if __name__ == "__main__":
    main()
