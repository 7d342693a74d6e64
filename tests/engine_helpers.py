"""Shared pieces of the engine tests: a study's pairs and the checks every run must pass."""

from __future__ import annotations

import random

import polars as pl

import pairbatch
from pairbatch.resume import ResumeResult
from pairbatch.testing import ProviderEmulator, expected_winner

MODELS = {"openai": "gpt-4.1-mini", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}
HOSTILE = ["a_b", "x_vs_y", "with space", "ünï", "日本", "a:b", "#1", "q'\"", "c,d", "_vs_"]


def study_pairs(n: int, seed: int = 0) -> pl.DataFrame:
    """``n`` pairs over hostile IDs with texts of distinct lengths (so verdicts are clear)."""
    rng = random.Random(seed)
    ids = [f"{HOSTILE[i % len(HOSTILE)]}-{i}" for i in range(max(4, n // 2))]
    rows = []
    for _ in range(n):
        a, b = rng.sample(ids, 2)
        rows.append(
            {
                "ID1": a,
                "text1": "word " * rng.randint(1, 40) + a,
                "ID2": b,
                "text2": "text " * rng.randint(1, 40) + b,
            }
        )
    return pl.DataFrame(rows)


def credentials(emu: ProviderEmulator) -> dict[str, dict[str, str]]:
    return {
        "api_keys": {p: "test-key" for p in MODELS},
        "base_urls": {p: emu.base_url(p) for p in MODELS},
    }


def check_run(result: ResumeResult, pairs: pl.DataFrame) -> None:
    """Every pair exactly once across results and failed attempts; every winner right."""
    combined = result.combined
    failed = result.failed_attempts
    outcome_keys: list[str] = []
    if combined.height:
        outcome_keys += combined["custom_id"].to_list()
        for t1, t2, pos, id1, id2, better in combined.select(
            "text1", "text2", "winner_pos", "ID1", "ID2", "better_id"
        ).iter_rows():
            winner = expected_winner(t1, t2)
            assert pos == (1 if winner == "SAMPLE_1" else 2)
            assert better == (id1 if pos == 1 else id2)
    if failed.height:
        outcome_keys += failed.filter(~pl.col("is_duplicate"))["custom_id"].to_list()
    assert len(outcome_keys) == len(set(outcome_keys)) == pairs.height
    # IDs came back exactly as given, hostile characters and all.
    if combined.height:
        given = set(zip(pairs["ID1"], pairs["ID2"], strict=True))
        got = set(zip(combined["ID1"], combined["ID2"], strict=True))
        assert got <= given


async def submit_to(
    emu: ProviderEmulator,
    provider: str,
    pairs: pl.DataFrame,
    out: object,
    *,
    n_segments: int = 3,
    **options: object,
) -> pairbatch.SubmitResult:
    """Submit ``pairs`` to one emulated provider with the tests' defaults."""
    return await pairbatch.submit_pairs_multi_batch(
        pairs,
        model=MODELS[provider],
        trait_name="T",
        trait_description="D",
        backend=provider,
        n_segments=n_segments,
        output_dir=out,  # type: ignore[arg-type]
        api_key="k",
        base_url=emu.base_url(provider),
        **options,  # type: ignore[arg-type]
    )
