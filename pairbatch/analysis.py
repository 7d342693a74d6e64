"""Order effects: agreement between the two orders, position bias, one verdict per pair.

Mirrors pairwiseLLM's ``compute_reverse_consistency`` and ``check_positional_bias``.
Keys are always recomputed from ``ID1``/``ID2`` (:func:`pairbatch.pairs.unordered_key_expr`):
older run folders store keys in a form where ``x:y``+``z`` and ``x``+``y:z`` collide, so
stored ``ordered_key``/``unordered_key`` columns are never trusted. Frames holding several
``backend``/``model`` values are analysed per group.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import attrs
import polars as pl

from pairbatch.errors import InputError, PairbatchError
from pairbatch.pairs import check_verdicts, ordered_key_expr, unordered_key_expr

log = logging.getLogger("pairbatch.analysis")

GROUP_COLUMNS = ("backend", "model")
Rule = Literal["conservative", "tie", "majority"]


def require_extra(extra: str = "analysis") -> None:
    """Raise one clear line when numpy/scipy (or matplotlib) are missing."""
    modules = ("numpy", "scipy") + (("matplotlib",) if extra == "report" else ())
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            raise PairbatchError(f"this needs {name}: pip install 'pairbatch[{extra}]'") from None


@attrs.frozen
class ReverseConsistency:
    """``summary``: per group ``n_pairs, n_consistent, prop_consistent, n_undecided``;
    ``details``: one row per unordered pair judged in both orders; ``rows``: the verdicts."""

    summary: pl.DataFrame
    details: pl.DataFrame
    rows: pl.DataFrame


@attrs.frozen
class PositionBias:
    """``summary``: per group the bootstrap CI of consistency and the exact binomial tests
    that SAMPLE_1 wins half the time; ``details``: the consistency details plus
    ``is_pos1_bias``/``is_pos2_bias`` for the inconsistent pairs."""

    summary: pl.DataFrame
    details: pl.DataFrame


def group_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c in GROUP_COLUMNS if c in frame.columns]


def verdict_rows(frame: pl.DataFrame, direction: str | None = None) -> pl.DataFrame:
    """Rows with a verdict: group columns, ``ID1, ID2, better_id``, ``pos1`` (the first
    shown won), ``key`` (recomputed unordered key) and ``direction`` (main/reverse).

    ``direction`` given labels every row; else ``order_role`` is used when present, else
    the orientation of a pair's first row in each group counts as "main".
    """
    missing = [c for c in ("ID1", "ID2") if c not in frame.columns]
    if missing or not ({"better_id", "better_sample", "winner_pos"} & set(frame.columns)):
        raise InputError(
            "results must contain columns ID1, ID2 and better_id (or better_sample/winner_pos)"
        )
    groups = group_columns(frame)
    ids = frame.with_columns(pl.col("ID1", "ID2").cast(pl.Utf8))
    if "better_id" in ids.columns:
        winner = pl.col("better_id").cast(pl.Utf8)
    elif "winner_pos" in ids.columns:
        pos = pl.col("winner_pos")
        winner = pl.when(pos == 1).then(pl.col("ID1")).when(pos == 2).then(pl.col("ID2"))
    else:
        sample = pl.col("better_sample")
        first, second = sample == "SAMPLE_1", sample == "SAMPLE_2"
        winner = pl.when(first).then(pl.col("ID1")).when(second).then(pl.col("ID2"))
    ids = ids.with_columns(winner.alias("better_id"))
    check_verdicts(ids)
    out = ids.filter(pl.col("better_id").is_not_null()).with_columns(
        unordered_key_expr().alias("key"),
        ordered_key_expr().alias("_okey"),
        (pl.col("better_id") == pl.col("ID1")).alias("pos1"),
    )
    if direction is not None:
        out = out.with_columns(pl.lit(direction).alias("direction"))
    elif "order_role" in out.columns:
        out = out.with_columns(pl.col("order_role").cast(pl.Utf8).alias("direction"))
    else:
        first = pl.col("_okey").first().over([*groups, "key"])
        out = out.with_columns(
            pl.when(pl.col("_okey") == first)
            .then(pl.lit("main"))
            .otherwise(pl.lit("reverse"))
            .alias("direction")
        )
    return out.select(*groups, "ID1", "ID2", "better_id", "pos1", "key", "direction")


def _rows(results: pl.DataFrame, reverse: pl.DataFrame | None) -> pl.DataFrame:
    if reverse is None:
        return verdict_rows(results)
    return pl.concat(
        [verdict_rows(results, "main"), verdict_rows(reverse, "reverse")], how="diagonal_relaxed"
    )


def _majority(rows: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Per ``by``: the ID with strictly most votes (null on a tie), vote and row counts."""
    votes = rows.group_by([*by, "better_id"]).agg(pl.len().alias("votes"))
    top = pl.col("votes").max()
    return votes.group_by(by).agg(
        pl.when((pl.col("votes") == top).sum() == 1)
        .then(pl.col("better_id").sort_by("votes", descending=True).first())
        .otherwise(None)
        .alias("winner"),
        pl.col("votes").sum().alias("n"),
    )


def reverse_consistency(
    results: pl.DataFrame, reverse: pl.DataFrame | None = None
) -> ReverseConsistency:
    """Do the two orders agree? (reference ``compute_reverse_consistency``).

    Give the main and reverse results as two frames, or one frame holding both orders
    (split by ``order_role``, else by each pair's orientation). Within each direction
    the verdict is the majority over repeats, a tie counts as undecided (null); a pair
    is consistent when both directions pick the same ID.
    """
    rows = _rows(results, reverse)
    groups = [c for c in GROUP_COLUMNS if c in rows.columns]
    orient = (
        rows.filter(pl.col("direction") == "main")
        .group_by([*groups, "key"], maintain_order=True)
        .agg(pl.col("ID1").first().alias("ID1_main"), pl.col("ID2").first().alias("ID2_main"))
    )
    votes = _majority(rows, [*groups, "key", "direction"])
    main = votes.filter(pl.col("direction") == "main").drop("direction")
    rev = votes.filter(pl.col("direction") == "reverse").drop("direction")
    details = (
        orient.join(main, on=[*groups, "key"])
        .join(rev, on=[*groups, "key"], suffix="_rev")
        .rename({"winner": "better_id_main", "winner_rev": "better_id_rev", "n": "n_main"})
        .with_columns((pl.col("better_id_main") == pl.col("better_id_rev")).alias("is_consistent"))
        .sort([*groups, "key"])
    )
    decided = pl.col("is_consistent").is_not_null()
    summary_aggs = [
        decided.sum().alias("n_pairs"),
        pl.col("is_consistent").sum().alias("n_consistent"),
        pl.col("is_consistent").mean().alias("prop_consistent"),
        (~decided).sum().alias("n_undecided"),
    ]
    if groups:
        summary = details.group_by(groups).agg(summary_aggs).sort(groups)
    else:
        summary = details.select(summary_aggs)
    if details.height == 0:
        log.info("no pair was judged in both orders")
    return ReverseConsistency(summary=summary, details=details, rows=rows)


def position_bias(
    results: pl.DataFrame | ReverseConsistency,
    reverse: pl.DataFrame | None = None,
    *,
    n_boot: int = 1000,
    conf_level: float = 0.95,
    seed: int = 0,
) -> PositionBias:
    """Position bias (reference ``check_positional_bias``).

    Percentile-bootstrap CI for the share of consistent pairs, and exact two-sided
    binomial tests (``scipy.stats.binomtest``) that SAMPLE_1 wins half of the judgements
    in the main order, the reverse order and overall (each judgement counts; the
    reference counts one per pair). Inconsistent pairs are split by the position that
    won both times, and ``mcnemar_p`` tests that split against 50:50.

    Which test to read: with both orders judged, a pair's two position-1 outcomes are
    negatively correlated, so ``binom_p_overall`` is conservative (fewer false alarms
    than nominal, less power); ``mcnemar_p`` is exact for that design. ``binom_p_main``
    is exact when the main order was randomised. Needs ``pairbatch[analysis]``.
    """
    require_extra()
    import numpy as np

    cons = results if isinstance(results, ReverseConsistency) else None
    cons = cons or reverse_consistency(results, reverse)  # type: ignore[arg-type]
    if cons.details.height == 0:
        raise InputError("position_bias needs pairs judged in both orders; none were found")
    groups = [c for c in GROUP_COLUMNS if c in cons.rows.columns]
    rng = np.random.default_rng(seed)
    inconsistent = pl.col("is_consistent").not_()
    details = cons.details.with_columns(
        (inconsistent & (pl.col("better_id_main") == pl.col("ID1_main"))).alias("is_pos1_bias"),
        (inconsistent & (pl.col("better_id_main") == pl.col("ID2_main"))).alias("is_pos2_bias"),
    )
    rows_by = _split(cons.rows, groups)
    summaries = []
    for key, part in _split(details, groups).items():
        row: dict[str, Any] = dict(zip(groups, key, strict=True))
        flags = part.get_column("is_consistent").drop_nulls().cast(pl.Float64).to_numpy()
        row.update(_bootstrap(flags, n_boot, conf_level, rng))
        row["n_inconsistent_pos1"] = pos1 = int(part["is_pos1_bias"].sum())
        row["n_inconsistent_pos2"] = pos2 = int(part["is_pos2_bias"].sum())
        # Exact McNemar test: without a position effect an order-dependent pair is as
        # likely to favour position 1 as position 2, whatever the two texts' qualities.
        row["mcnemar_p"] = _binom_p(pos1, pos1 + pos2)
        judged = rows_by.get(key, cons.rows.clear())
        for name, sub in (
            ("main", judged.filter(pl.col("direction") == "main")),
            ("rev", judged.filter(pl.col("direction") == "reverse")),
            ("overall", judged),
        ):
            row.update(_binom(name, int(sub["pos1"].sum()), sub.height))
        summaries.append(row)
    return PositionBias(summary=pl.DataFrame(summaries), details=details)


def _split(frame: pl.DataFrame, groups: list[str]) -> dict[tuple[Any, ...], pl.DataFrame]:
    if not groups:
        return {(): frame}
    return {tuple(k): v for k, v in frame.partition_by(groups, as_dict=True).items()}


def _bootstrap(flags: Any, n_boot: int, conf_level: float, rng: Any) -> dict[str, float | int]:
    import numpy as np

    n = int(flags.size)
    if n == 0:
        nan = float("nan")
        return {"n_pairs": 0, "prop_consistent": nan, "boot_mean": nan}
    means = rng.choice(flags, size=(n_boot, n), replace=True).mean(axis=1)
    alpha = (1 - conf_level) / 2
    return {
        "n_pairs": n,
        "prop_consistent": float(flags.mean()),
        "boot_mean": float(means.mean()),
        "boot_lwr": float(np.quantile(means, alpha)),
        "boot_upr": float(np.quantile(means, 1 - alpha)),
    }


def _binom_p(wins: int, n: int) -> float | None:
    """Exact two-sided binomial p-value against 1/2 (None without trials)."""
    from scipy.stats import binomtest

    return float(binomtest(wins, n, 0.5).pvalue) if n else None


def _binom(name: str, wins: int, n: int) -> dict[str, float | int | None]:
    return {
        f"n_{name}": n,
        f"p_sample1_{name}": wins / n if n else None,
        f"binom_p_{name}": _binom_p(wins, n),
    }


def combine_orders(
    results: pl.DataFrame, reverse: pl.DataFrame | None = None, *, rule: Rule = "conservative"
) -> pl.DataFrame:
    """One verdict per unordered pair (and group) from judgements in either order.

    No pairwiseLLM counterpart: its vignettes drop or keep reversed rows by hand.

    Each direction's verdict is its majority (ties undecided). ``"conservative"``: a pair
    whose two directions disagree, or where one is undecided, gets ``verdict =
    "inconsistent"`` and no ``better_id``; ``"tie"``: the same pairs get ``"tie"``;
    ``"majority"``: the majority over all judgements, ``"tie"`` when even. A pair judged
    in one order only keeps that order's verdict. ``ID1, ID2`` are the main orientation,
    so the decided rows feed :func:`pairbatch.scores.bradley_terry` directly.
    """
    if rule not in ("conservative", "tie", "majority"):
        raise InputError(f"rule must be 'conservative', 'tie' or 'majority', got {rule!r}")
    rows = _rows(results, reverse)
    groups = [c for c in GROUP_COLUMNS if c in rows.columns]
    by = [*groups, "key"]
    ids = rows.group_by(by, maintain_order=True).agg(
        pl.col("ID1").sort_by(pl.col("direction") != "main").first(),
        pl.col("ID2").sort_by(pl.col("direction") != "main").first(),
        pl.len().alias("n_judgements"),
        pl.col("direction").n_unique().alias("n_orders"),
    )
    if rule == "majority":
        verdicts = _majority(rows, by).select(*by, pl.col("winner").alias("better_id"))
        out = ids.join(verdicts, on=by)
        label = pl.when(pl.col("better_id").is_null()).then(pl.lit("tie"))
        return out.with_columns(label.otherwise(pl.lit("decided")).alias("verdict")).sort(by)
    per_dir = _majority(rows, [*by, "direction"])
    agg = per_dir.group_by(by).agg(
        pl.col("winner").drop_nulls().n_unique().alias("_kinds"),
        pl.col("winner").null_count().alias("_undecided"),
        pl.col("winner").drop_nulls().first().alias("_winner"),
    )
    clean = (pl.col("_kinds") == 1) & (pl.col("_undecided") == 0)
    bad_label = "inconsistent" if rule == "conservative" else "tie"
    out = ids.join(agg, on=by).with_columns(
        pl.when(clean).then(pl.col("_winner")).otherwise(None).alias("better_id"),
        pl.when(clean)
        .then(pl.lit("decided"))
        .when(pl.col("_kinds") == 0)  # every direction tied: nothing order-dependent
        .then(pl.lit("tie"))
        .otherwise(pl.lit(bad_label))
        .alias("verdict"),
    )
    return out.drop("_kinds", "_undecided", "_winner").sort(by)
