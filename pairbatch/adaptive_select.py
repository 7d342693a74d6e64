"""Choosing each round's pairs for an adaptive comparative-judgement study (pure functions).

Every choice here is a deterministic function of the design (seed, sizes, caps), the
round number and the verdicts of earlier rounds, so a study re-run after a crash
chooses exactly the pairs it chose before. Randomness is a keyed hash, never an RNG
whose state could depend on what ran earlier; the fitted scores are rounded before
they steer anything, so last-bit float differences between fits cannot flip a choice.
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from collections import Counter
from typing import Any, Literal

import attrs
import polars as pl

from pairbatch.design import balanced_pairs
from pairbatch.errors import InputError
from pairbatch.pairs import REQUIRED_COLUMNS
from pairbatch.scores import BTFit, bradley_terry

log = logging.getLogger("pairbatch.adaptive")

Strategy = Literal["adaptive", "random"]
# Past this many candidate pairs only near neighbours in the current ranking compete:
# a pair far apart on the scale has p(1-p) close to zero and would never be chosen.
ALL_PAIRS_LIMIT = 50_000
WINDOW = 40
# Up to this many texts the posterior covariance is kept dense (an n x n inverse).
DENSE_LIMIT = 1500
_DIGITS = 8  # fitted values are rounded to this many decimals before steering choices


@attrs.frozen
class Design:
    """What fixes the pairs of every round (stopping rules do not: see ``run_adaptive``).

    ``pairs_per_round``: comparisons per round (round 0 is a random connected design of
    about that size). ``max_repeats``: how often one unordered pair may be judged in the
    whole study (repeats are shown the other way round). ``max_per_text``: how many
    comparisons one text may get in one round (None: twice the average load, at least 2).
    ``strategy="random"`` draws random level-load pairs every round: the baseline.
    """

    seed: int = 0
    pairs_per_round: int = 100
    max_repeats: int = 2
    max_per_text: int | None = None
    strategy: Strategy = "adaptive"

    def __attrs_post_init__(self) -> None:
        if self.pairs_per_round < 1:
            raise InputError(f"pairs_per_round must be >= 1, got {self.pairs_per_round!r}")
        if self.max_repeats < 1:
            raise InputError(f"max_repeats must be >= 1, got {self.max_repeats!r}")
        if self.max_per_text is not None and self.max_per_text < 1:
            raise InputError(f"max_per_text must be >= 1, got {self.max_per_text!r}")
        if self.strategy not in ("adaptive", "random"):
            raise InputError(f"strategy must be 'adaptive' or 'random', got {self.strategy!r}")

    def per_text_cap(self, n_texts: int, n_pairs: int) -> int:
        if self.max_per_text is not None:
            return self.max_per_text
        return max(2, math.ceil(4 * n_pairs / n_texts))


def _hash_unit(*parts: object) -> float:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / float(2**64)


def _key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def fit_scores(results: pl.DataFrame, prior_sd: float | None = None) -> BTFit:
    """Bradley–Terry with the first-position effect, quietly: early rounds of a sparse
    design often have no finite MLE and the fit's penalised fallback is what we want."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = bradley_terry(results, position_effect=True, prior_sd=prior_sd)
    for warning in caught:
        log.debug("adaptive fit: %s", warning.message)
    return fit


def spearman(x: Any, y: Any) -> float:
    """Spearman's rho of two equal-length sequences (average ranks for ties)."""
    from scipy.stats import spearmanr

    if len(x) < 3:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def random_round(
    samples: pl.DataFrame, design: Design, round_index: int, history: pl.DataFrame | None = None
) -> pl.DataFrame:
    """A random round, unoriented. Round 0: ``balanced_pairs``, a random cycle plus
    random matchings (connected, each text in about ``2 * pairs_per_round / n``
    comparisons). Later rounds (the random baseline): random pairs that keep every
    text's total load level, each drawn between the least-compared texts (ties broken
    by a keyed hash), avoiding pairs already judged while any other partner is left.
    """
    n = samples.height
    if round_index == 0 or history is None:
        k = max(2, round(2 * design.pairs_per_round / n))
        seed = int(_hash_unit(design.seed, "random", round_index) * 2**31)
        return balanced_pairs(samples, min(k, n - 1), seed=seed).select(REQUIRED_COLUMNS)
    ids, texts = samples["ID"].to_list(), samples["text"].to_list()
    load = Counter(history["ID1"]) + Counter(history["ID2"])
    seen = Counter(_key(a, b) for a, b in zip(*_ids(history), strict=True))
    rank = {i: _hash_unit(design.seed, "random", round_index, i) for i in ids}
    rows: list[tuple[str, str, str, str]] = []
    for _ in range(design.pairs_per_round):
        a = min(range(n), key=lambda i: (load[ids[i]], rank[ids[i]]))
        b = min(
            (i for i in range(n) if i != a),
            key=lambda i: (seen[_key(ids[a], ids[i])], load[ids[i]], rank[ids[i]]),
        )
        rows.append((ids[a], texts[a], ids[b], texts[b]))
        load[ids[a]] += 1
        load[ids[b]] += 1
        seen[_key(ids[a], ids[b])] += 1
    return pl.DataFrame(rows, schema=dict.fromkeys(REQUIRED_COLUMNS, pl.Utf8), orient="row")


def _ids(pairs: pl.DataFrame) -> tuple[list[str], list[str]]:
    return pairs["ID1"].to_list(), pairs["ID2"].to_list()


def adaptive_round(
    samples: pl.DataFrame,
    design: Design,
    round_index: int,
    history: pl.DataFrame,
    fit: BTFit,
    n_pairs: int,
) -> pl.DataFrame:
    """The ``n_pairs`` pairs expected to teach most about the ranking, given the fit.

    The scores' posterior covariance ``C`` is the inverse of the fitted information
    matrix (a graph Laplacian weighted by ``p(1-p)`` of every verdict so far, plus the
    weak N(0, 3^2) prior that keeps it invertible). One more verdict on pair (i, j), at
    the predictive ``p`` (the logistic of the contrast shrunk by its uncertainty
    ``V = u'Cu``, ``d / sqrt(1 + pi V / 8)``), would lower the weighted posterior
    variance ``sum_k w_k C_kk`` by ``I u'CWCu / (1 + I V)``, ``I = p(1-p)``: weighted
    A-optimality. The weights ``w`` (see :func:`_rank_weight`) turn score variance into
    rank variance, so the design spends its comparisons where texts are crowded and
    ranks are easily swapped. The gain counts pairs whose outcome is uncertain *and*
    whose verdict moves many scores, so it also favours links between poorly connected
    parts of the graph over yet another comparison of close neighbours. Pairs are taken
    greedily with a rank-one update of ``C`` after each; repeats are down-weighted by
    ``1 / (1 + times judged)`` and capped, and each text's load in a round is capped.
    """
    import numpy as np

    ids = samples["ID"].to_list()
    texts = samples["text"].to_list()
    theta, posterior = _posterior(ids, history, fit)
    seen = Counter(_key(a, b) for a, b in zip(*_ids(history), strict=True))
    a, b = _candidates(theta, ids)
    times = np.array(
        [seen.get(_key(ids[x], ids[y]), 0) for x, y in zip(a, b, strict=True)], dtype=float
    )
    allowed = times < design.max_repeats
    a, b, times = a[allowed], b[allowed], times[allowed]
    cap = design.per_text_cap(len(ids), n_pairs)
    load = np.zeros(len(ids))
    free = np.ones(a.size, dtype=bool)
    d = theta[a] - theta[b]
    chosen: list[tuple[int, int]] = []
    while len(chosen) < n_pairs and free.any():
        v, spread = posterior.contrasts(a, b)
        p = 1.0 / (1.0 + np.exp(-d / np.sqrt(1.0 + math.pi * v / 8.0)))
        info = p * (1.0 - p)
        gain = np.where(free, info * spread / (1.0 + info * v) / (1.0 + times), -1.0)
        best = int(np.argmax(gain))  # the first maximum: candidates are in a fixed order
        x, y = int(a[best]), int(b[best])
        chosen.append((x, y))
        free[best] = False
        posterior.observe(x, y, float(info[best]))
        load[x] += 1
        load[y] += 1
        for full in (x, y):
            if load[full] >= cap:
                free &= (a != full) & (b != full)
    rows = [(ids[x], texts[x], ids[y], texts[y]) for x, y in chosen]
    return pl.DataFrame(rows, schema=dict.fromkeys(REQUIRED_COLUMNS, pl.Utf8), orient="row")


class _Posterior:
    """The scores' posterior covariance ``C`` and ``CWC`` (``W`` the diagonal of rank
    weights), dense (exact) or, past ``DENSE_LIMIT`` texts, their diagonals only (what
    the fit's SEs give)."""

    def __init__(self, cov: Any, dense: bool, weight: Any) -> None:
        self.dense = dense
        self.cov = cov
        self.weight = weight
        self.cov2 = cov @ (weight[:, None] * cov) if dense else cov * cov * weight

    def contrasts(self, a: Any, b: Any) -> tuple[Any, Any]:
        """``V = u'Cu`` and ``u'CWCu`` for every candidate ``u = e_a - e_b``."""
        import numpy as np

        c, c2 = self.cov, self.cov2
        if self.dense:
            v = c[a, a] + c[b, b] - 2 * c[a, b]
            spread = c2[a, a] + c2[b, b] - 2 * c2[a, b]
        else:
            v, spread = c[a] + c[b], c2[a] + c2[b]
        return np.maximum(v, 1e-12), np.maximum(spread, 0.0)

    def observe(self, x: int, y: int, info: float) -> None:
        """One verdict on (x, y) with information ``info``: the rank-one update of ``C``
        (Sherman–Morrison) and of ``CWC`` with it."""
        import numpy as np

        if not self.dense:
            for i in (x, y):
                self.cov[i] = 1.0 / (1.0 / self.cov[i] + info)
                self.cov2[i] = self.cov[i] ** 2 * self.weight[i]
            return
        cu = self.cov[:, x] - self.cov[:, y]
        c2u = self.cov2[:, x] - self.cov2[:, y]
        s = info / (1.0 + info * (cu[x] - cu[y]))
        self.cov2 = (
            self.cov2
            - s * (np.outer(c2u, cu) + np.outer(cu, c2u))
            + s * s * float(cu @ (self.weight * cu)) * np.outer(cu, cu)
        )
        self.cov = self.cov - s * np.outer(cu, cu)


def _posterior(ids: list[str], history: pl.DataFrame, fit: BTFit) -> tuple[Any, _Posterior]:
    """The rounded scores and their posterior: the inverse of the information matrix at
    the fit (a graph Laplacian weighted by ``p(1-p)`` of every verdict so far) plus the
    N(0, 3^2) prior that keeps it invertible."""
    import numpy as np

    scored = {
        name: (round(float(t), _DIGITS), round(float(s), _DIGITS))
        for name, t, s in fit.scores.select("id", "theta", "se").iter_rows()
    }
    theta = np.array([scored.get(i, (0.0, 3.0))[0] for i in ids])
    n = len(ids)
    if n > DENSE_LIMIT:
        var = np.array([max(scored.get(i, (0.0, 3.0))[1], 1e-3) ** 2 for i in ids])
        return theta, _Posterior(var, dense=False, weight=_rank_weight(theta))
    effect = fit.position_effect
    delta = 0.0 if effect is None else round(effect.estimate, _DIGITS)
    pos = {name: i for i, name in enumerate(ids)}
    first = np.array([pos[i] for i in history["ID1"]], dtype=np.int64)
    second = np.array([pos[i] for i in history["ID2"]], dtype=np.int64)
    p = 1.0 / (1.0 + np.exp(-(theta[first] - theta[second] + delta)))
    weight = p * (1.0 - p)
    info = np.zeros((n, n))
    np.add.at(info, (first, second), -weight)
    np.add.at(info, (second, first), -weight)
    info[np.diag_indices(n)] = -info.sum(axis=1) + 1.0 / 9.0
    return theta, _Posterior(np.linalg.inv(info), dense=True, weight=_rank_weight(theta))


def _rank_weight(theta: Any, bins: int = 512) -> Any:
    """Each text's weight in the variance to reduce: how far a score error moves its
    rank. A text's rank changes by about ``n f(theta) * error`` (``f`` the density of
    the scores), so a text in the crowded middle of the scale matters more for the
    ranking than one alone in a tail: the weight is ``f^2`` (normalised to mean 1),
    ``f`` a Gaussian kernel density (Silverman's bandwidth) computed on a fine grid so
    it costs O(n) for any study size."""
    import numpy as np

    spread = float(np.std(theta))
    if theta.size < 3 or spread == 0:
        return np.ones(theta.size)
    h = 1.06 * spread * theta.size ** (-0.2)
    low, high = float(theta.min()) - 4 * h, float(theta.max()) + 4 * h
    counts, edges = np.histogram(theta, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    z = (centres[:, None] - centres[None, :]) / h
    grid = np.exp(-0.5 * z * z) @ counts
    density = np.interp(theta, centres, grid)
    weight = density**2
    return weight / weight.mean()


def _candidates(theta: Any, ids: list[str]) -> tuple[Any, Any]:
    """Candidate pairs as index arrays in a fixed order: every pair for small studies,
    else each text with its ``WINDOW`` nearest successors in the current ranking."""
    import numpy as np

    n = len(ids)
    if n * (n - 1) // 2 <= ALL_PAIRS_LIMIT:
        a, b = np.triu_indices(n, k=1)
        return a, b
    # Ties in theta are broken by ID so the order never depends on float noise.
    order = np.array(sorted(range(n), key=lambda i: (-theta[i], ids[i])))
    firsts, seconds = [], []
    for offset in range(1, min(WINDOW, n - 1) + 1):
        firsts.append(order[:-offset])
        seconds.append(order[offset:])
    return np.concatenate(firsts), np.concatenate(seconds)


def orient(pairs: pl.DataFrame, history: pl.DataFrame, seed: int, round_index: int) -> pl.DataFrame:
    """Choose who is shown first, balancing each text's first and second showings.

    A pair judged before is shown the other way round than last time: an LLM tends to
    repeat itself verbatim, so only the other order is a genuinely new observation (and
    the two orders cancel the position effect). Otherwise the text shown first less often
    so far goes first, and a keyed coin settles a tie.
    """
    balance: Counter[str] = Counter()
    last: dict[tuple[str, str], str] = {}
    for one, two in zip(*_ids(history), strict=True):
        balance[one] += 1
        balance[two] -= 1
        last[_key(one, two)] = one
    rows = []
    for one, t1, two, t2 in pairs.select(REQUIRED_COLUMNS).iter_rows():
        before = last.get(_key(one, two))
        if before is not None:
            swap = before == one
        elif balance[one] != balance[two]:
            swap = balance[one] > balance[two]
        else:
            swap = _hash_unit(seed, "orient", round_index, *_key(one, two)) < 0.5
        if swap:
            one, t1, two, t2 = two, t2, one, t1
        balance[one] += 1
        balance[two] -= 1
        last[_key(one, two)] = one
        rows.append((one, t1, two, t2))
    return pl.DataFrame(rows, schema=dict.fromkeys(REQUIRED_COLUMNS, pl.Utf8), orient="row")


def plan_round(
    samples: pl.DataFrame,
    design: Design,
    round_index: int,
    history: pl.DataFrame,
    fit: BTFit | None,
    n_pairs: int,
) -> pl.DataFrame:
    """Round ``round_index``'s pairs, oriented: the whole design rule in one call."""
    if round_index == 0 or design.strategy == "random" or fit is None:
        sized = attrs.evolve(design, pairs_per_round=n_pairs) if round_index else design
        pairs = random_round(samples, sized, round_index, history)
    else:
        pairs = adaptive_round(samples, design, round_index, history, fit, n_pairs)
    return orient(pairs, history, design.seed, round_index)
