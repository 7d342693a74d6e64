"""Study designs: samples in, pairs out, in the order(s) they are shown to the judge.

Mirrors pairwiseLLM's pairing helpers (``make_pairs``, ``sample_pairs``,
``randomize_pair_order``, ``alternate_pair_order``, ``sample_reverse_pairs``) and adds a
sparse connected design (:func:`balanced_pairs`) and :func:`apply_order`, which submit
calls. Randomness comes from ``random.Random(seed)`` or a keyed hash, never the global
RNG; the R RNG's exact draws are not reproduced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from pathlib import Path
from typing import Literal

import polars as pl

from pairbatch.errors import InputError
from pairbatch.pairs import (
    REQUIRED_COLUMNS,
    check_no_self_pairs,
    check_samples,
    load_pairs,
    make_pairs,
    separator_hint,
    unordered_key_expr,
)
from pairbatch.tables import TABLE_SUFFIXES, read_table

log = logging.getLogger("pairbatch.design")

Order = Literal["as_given", "random", "both"]
SamplesSource = pl.DataFrame | str | os.PathLike[str]

__all__ = [
    "alternate_pair_order",
    "apply_order",
    "balanced_pairs",
    "make_pairs",
    "randomize_pair_order",
    "read_samples",
    "reverse_pairs",
    "sample_pairs",
]


def read_samples(
    source: SamplesSource, *, id_col: str = "ID", text_col: str = "text"
) -> pl.DataFrame:
    """Samples as an ``ID, text`` frame from a frame, a CSV/Parquet file or a folder of
    ``.txt`` files (the file stem is the ID, files in name order). IDs stay strings.

    Mirrors pairwiseLLM's ``read_samples_df`` and ``read_samples_dir`` in one function;
    unlike them, duplicate IDs and missing values are errors naming the row.
    """
    name = "samples"
    if isinstance(source, pl.DataFrame):
        frame = source
    else:
        path = Path(source)
        name = str(path)
        frame = _read_path(path)
        if path.is_dir():
            id_col, text_col = "ID", "text"
    missing = [c for c in (id_col, text_col) if c not in frame.columns]
    if missing:
        raise InputError(
            f"{name} must contain columns {id_col!r} and {text_col!r}"
            + separator_hint(frame.columns, missing)
        )
    frame = frame.select(pl.col(id_col).alias("ID"), pl.col(text_col).alias("text"))
    return check_samples(frame, name)


def _read_path(path: Path) -> pl.DataFrame:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".txt")
        if not files:
            raise InputError(f"{path} holds no .txt files")
        return pl.DataFrame(
            {"ID": [p.stem for p in files], "text": [p.read_text("utf-8") for p in files]}
        )
    if not path.exists():
        raise InputError(f"samples file not found: {path}")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(f"samples file {path} must end in .csv, .tsv or .parquet, or be a folder")
    return read_table(path, "samples")


def _count(height: int, fraction: float | None, n: int | None, *, rounding: str) -> int:
    """How many rows a fraction/n request asks for, clamped to ``[0, height]``."""
    if fraction is None and n is None:
        raise InputError("Provide at least one of 'fraction' or 'n'.")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise InputError(f"'n' must be a non-negative integer, got {n!r}")
    if fraction is not None and not 0 <= fraction <= 1:
        log.warning("fraction=%s clamped to [0, 1]", fraction)
        fraction = min(max(fraction, 0.0), 1.0)
    if rounding == "min":  # sample_pairs: min(floor(pct * n), n_pairs)
        k = height if fraction is None else int(fraction * height)
        return max(0, min(k, n if n is not None else height, height))
    # sample_reverse_pairs: n takes precedence, else round(pct * n).
    if n is not None:
        return min(n, height)
    assert fraction is not None
    return round(height * fraction)


def sample_pairs(
    pairs: pl.DataFrame, *, fraction: float | None = None, n: int | None = None, seed: int = 0
) -> pl.DataFrame:
    """A random subset of rows (reference ``sample_pairs``): ``floor(fraction * rows)``,
    capped at ``n``. Taking every row returns the input unchanged, in its order."""
    if fraction is None and n is None:
        fraction = 1.0
    k = _count(pairs.height, fraction, n, rounding="min")
    if k == pairs.height:
        return pairs
    rows = random.Random(seed).sample(range(pairs.height), k)
    return pairs[rows]


def _swap(pairs: pl.DataFrame, flip: pl.Series | pl.Expr) -> pl.DataFrame:
    """Swap ``ID1/text1`` with ``ID2/text2`` where ``flip`` holds; other columns stay."""
    swapped = []
    for one, two in (("ID1", "ID2"), ("text1", "text2")):
        swapped.append(pl.when(flip).then(pl.col(two)).otherwise(pl.col(one)).alias(one))
        swapped.append(pl.when(flip).then(pl.col(one)).otherwise(pl.col(two)).alias(two))
    return pairs.with_columns(swapped)


def _coin(seed: int, key: str, occurrence: int) -> bool:
    digest = hashlib.blake2b(f"{seed}\x1f{key}\x1f{occurrence}".encode(), digest_size=8)
    return bool(digest.digest()[0] & 1)


def randomize_pair_order(pairs: pl.DataFrame, *, seed: int = 0) -> pl.DataFrame:
    """Show each pair in a random order (reference ``randomize_pair_order``).

    The order is a keyed hash of ``seed``, the pair's unordered key and its occurrence
    number, so it does not depend on the other rows: adding pairs never reshuffles
    the ones already there, and the same pair given either way round ends the same.
    """
    _require_pair_columns(pairs)
    if pairs.height == 0:
        return pairs
    keyed = pairs.select(
        unordered_key_expr().alias("k"),
        pl.int_range(1, pl.len() + 1).over(unordered_key_expr()).alias("occ"),
        (pl.col("ID1") <= pl.col("ID2")).alias("lo_first"),
    )
    want_lo_first = [
        _coin(seed, key, occ) for key, occ in zip(keyed["k"], keyed["occ"], strict=True)
    ]
    flip = keyed["lo_first"] != pl.Series(want_lo_first, dtype=pl.Boolean)
    return _swap(pairs, flip)


def alternate_pair_order(pairs: pl.DataFrame) -> pl.DataFrame:
    """Swap rows 2, 4, 6, … (reference ``alternate_pair_order``)."""
    _require_pair_columns(pairs)
    return _swap(pairs, pl.int_range(0, pl.len()) % 2 == 1)


def reverse_pairs(
    pairs: pl.DataFrame, *, fraction: float | None = None, n: int | None = None, seed: int = 0
) -> pl.DataFrame:
    """Position-swapped copies of a random subset (reference ``sample_reverse_pairs``):
    ``n`` rows if given, else ``round(fraction * rows)``; only the reversed rows return."""
    _require_pair_columns(pairs)
    k = _count(pairs.height, fraction, n, rounding="round")
    rows = sorted(random.Random(seed).sample(range(pairs.height), k))
    subset = pairs[rows] if k < pairs.height else pairs
    return _swap(subset.select(REQUIRED_COLUMNS), pl.lit(True))


def balanced_pairs(samples: pl.DataFrame, k: int, *, seed: int = 0) -> pl.DataFrame:
    """A sparse random design: each text in about ``k`` comparisons, graph connected.

    No pairwiseLLM counterpart (it samples from all pairs, which need not connect).

    A random Hamiltonian cycle (degree 2, connected) plus random matchings of the
    remaining ``k - 2`` "stubs" per text, skipping self-pairs and repeats; the shown
    order is then :func:`randomize_pair_order`. ``k >= n - 1`` gives every pair.
    """
    frame = check_samples(samples)
    n = frame.height
    if n < 2:
        raise InputError("At least two samples are required to create pairs.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise InputError(f"'k' must be an integer >= 2 (a connected design), got {k!r}")
    if k >= n - 1:
        return randomize_pair_order(make_pairs(frame), seed=seed)
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    edges = {_edge(order[i], order[(i + 1) % n]) for i in range(n)}
    stubs = [i for i in range(n) for _ in range(k - 2)]
    for _ in range(4):  # a few rounds re-pair the stubs that hit a repeat
        rng.shuffle(stubs)
        left: list[int] = []
        for a, b in zip(stubs[::2], stubs[1::2], strict=False):
            if a == b or _edge(a, b) in edges:
                left += [a, b]
            else:
                edges.add(_edge(a, b))
        stubs = left
    ids, texts = frame["ID"].to_list(), frame["text"].to_list()
    ordered = sorted(edges)
    pairs = pl.DataFrame(
        {
            "ID1": [ids[a] for a, _ in ordered],
            "text1": [texts[a] for a, _ in ordered],
            "ID2": [ids[b] for _, b in ordered],
            "text2": [texts[b] for _, b in ordered],
        },
        schema=dict.fromkeys(REQUIRED_COLUMNS, pl.Utf8),
    )
    return randomize_pair_order(pairs, seed=seed)


def _edge(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def apply_order(pairs: pl.DataFrame, order: Order = "as_given", *, seed: int = 0) -> pl.DataFrame:
    """The pairs as they will be submitted, with ``order_role`` and ``pair_uid``.

    ``"as_given"`` keeps each row's order, ``"random"`` applies
    :func:`randomize_pair_order`, ``"both"`` returns every pair twice: the given order
    (``order_role = "main"``) and, after all of them, the swapped copy (``"reverse"``),
    both carrying the same ``pair_uid`` (the given one, else ``unordered_key#occurrence``).
    ``repeat`` numbers repeated pairs (1 for a pair's first occurrence) and
    ``order_design`` records ``order``, so summaries know whether the position-1 rate
    means anything. Self-pairs are an error naming the row.
    """
    if order not in ("as_given", "random", "both"):
        raise InputError(f"order must be 'as_given', 'random' or 'both', got {order!r}")
    table = load_pairs(pairs)
    check_no_self_pairs(table)
    key = unordered_key_expr()
    repeat = pl.int_range(1, pl.len() + 1).over(key).cast(pl.Int64)
    computed = pl.concat_str([key, repeat.cast(pl.Utf8)], separator="#")
    if "pair_uid" in table.columns:
        given = pl.col("pair_uid")
        uid = pl.when(given.is_null() | (given == "")).then(computed).otherwise(given)
    else:
        uid = computed
    table = table.with_columns(uid.alias("pair_uid"), repeat.alias("repeat"))
    if order == "both" and table.get_column("pair_uid").is_duplicated().any():
        # pair_uid is what links a pair's two copies; a repeated one would link four.
        raise InputError("pairs: column 'pair_uid' has duplicate values")
    if order == "random":
        table = randomize_pair_order(table, seed=seed)
    table = table.with_columns(pl.lit(order).alias("order_design"))
    main = table.with_columns(pl.lit("main").alias("order_role"))
    if order != "both":
        return main
    reverse = _swap(table, pl.lit(True)).with_columns(pl.lit("reverse").alias("order_role"))
    return pl.concat([main, reverse])


def _require_pair_columns(pairs: pl.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in pairs.columns]
    if missing:
        raise InputError(
            f"pairs must contain columns: {', '.join(REQUIRED_COLUMNS)}. "
            f"Missing: {', '.join(missing)}"
        )
