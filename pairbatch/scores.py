"""Bradley–Terry scores by maximum likelihood, with an optional first-position effect.

Mirrors pairwiseLLM's ``fit_bt_model`` (which calls sirt::btm or BradleyTerry2::BTm).
The model is ``logit P(ID1 beats ID2) = theta[ID1] - theta[ID2] (+ delta)``, ``delta``
being the advantage of the sample shown first. Newton's method on the counts of each
ordered pair, with the analytic gradient and Hessian (a weighted graph Laplacian);
the Newton systems are solved densely for small designs and by Jacobi-preconditioned
conjugate gradients beyond; exact SEs invert the information matrix once, up to
``dense_limit`` items. Needs ``pairbatch[analysis]``.

Identification: ``reference=ID`` fixes that item at 0 and SEs are those of contrasts
with it (as BradleyTerry2 reports them); otherwise scores sum to zero and SEs are
those of the centred scores. When the maximum likelihood estimate does not exist
(an item that won or lost every comparison, or more generally a win graph that is not
strongly connected, e.g. a disconnected design) a warning names the items and a weak
Gaussian prior ``theta ~ N(0, prior_sd^2)`` (default ``prior_sd = 3``) is added, which
keeps every estimate finite: the result is then a penalised (MAP) estimate.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import attrs
import polars as pl

from pairbatch.analysis import require_extra
from pairbatch.elo import EloFit, elo
from pairbatch.errors import InputError
from pairbatch.pairs import check_verdicts

log = logging.getLogger("pairbatch.scores")

DENSE_STEP_LIMIT = 300

__all__ = ["BTFit", "EloFit", "PositionEffect", "bradley_terry", "elo"]


@attrs.frozen
class PositionEffect:
    """The first-shown advantage on the logit scale, and its standard error."""

    estimate: float
    se: float


@attrs.frozen
class BTFit:
    """A fitted Bradley–Terry model. ``scores``: ``id, theta, se, rank, n, wins``.

    ``reliability`` is the scale-separation reliability used in comparative judgement,
    ``(var(theta) - mean(se^2)) / var(theta)`` (sample variance); it is below 0 when the
    SEs outweigh the scores' spread (too few comparisons a text to separate them, as
    after a first round of two a text), and is reported as computed. ``prior_sd`` is None
    for a plain maximum-likelihood fit; ``se_method`` is ``"exact"`` (inverse of the
    information matrix) or ``"approximate"`` (large designs, see :func:`bradley_terry`).
    """

    scores: pl.DataFrame
    position_effect: PositionEffect | None
    reliability: float
    log_likelihood: float
    iterations: int
    converged: bool
    reference: str | None
    prior_sd: float | None
    se_method: str


@attrs.frozen
class _Data:
    ids: list[str]
    first: Any  # item index shown first, per distinct ordered pair
    second: Any
    n: Any  # comparisons of the ordered pair
    w: Any  # wins of the first-shown item
    wins: Any  # per item
    games: Any  # per item


def _prepare(results: pl.DataFrame) -> _Data:
    import numpy as np

    missing = [c for c in ("ID1", "ID2", "better_id") if c not in results.columns]
    if missing:
        raise InputError(f"results must contain columns ID1, ID2, better_id; missing {missing}")
    check_verdicts(results)
    frame = results.select(pl.col("ID1", "ID2", "better_id").cast(pl.Utf8)).drop_nulls("better_id")
    if frame.height == 0:
        raise InputError("results hold no verdicts to score")
    ids_series = pl.concat([frame["ID1"], frame["ID2"]]).unique().sort()
    ids = ids_series.to_list()
    # Integer codes first: grouping a million string pairs is several times slower.
    code = pl.Enum(ids_series)
    counts = (
        frame.select(
            pl.col("ID1").cast(code).to_physical().cast(pl.Int64).alias("a"),
            pl.col("ID2").cast(code).to_physical().cast(pl.Int64).alias("b"),
            (pl.col("better_id") == pl.col("ID1")).alias("first_won"),
        )
        .group_by("a", "b")
        .agg(pl.len().alias("n"), pl.col("first_won").sum().alias("w"))
        # group_by's order varies between calls; sums in a fixed order make the same
        # input give bit-identical estimates (adaptive rounds steer on them).
        .sort("a", "b")
    )
    a, b = counts["a"].to_numpy(), counts["b"].to_numpy()
    n, w = counts["n"].to_numpy().astype(float), counts["w"].to_numpy().astype(float)
    wins = np.bincount(a, w, len(ids)) + np.bincount(b, n - w, len(ids))
    games = np.bincount(a, n, len(ids)) + np.bincount(b, n, len(ids))
    return _Data(ids, a, b, n, w, wins, games)


def _mle_problems(data: _Data) -> list[str]:
    """IDs outside the largest strongly connected part of the win graph (Ford, 1957:
    the MLE exists iff every item can be reached from every other through wins)."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    k = len(data.ids)
    # An edge loser -> winner for every pair with at least one such win.
    src = np.concatenate([data.second[data.w > 0], data.first[data.w < data.n]])
    dst = np.concatenate([data.first[data.w > 0], data.second[data.w < data.n]])
    graph = coo_matrix((np.ones(src.size), (src, dst)), shape=(k, k)).tocsr()
    count, labels = connected_components(graph, directed=True, connection="strong")
    if count == 1:
        return []
    main = np.bincount(labels).argmax()
    return [data.ids[i] for i in np.flatnonzero(labels != main)]


def bradley_terry(
    results: pl.DataFrame,
    *,
    position_effect: bool = False,
    reference: str | None = None,
    prior_sd: float | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
    dense_limit: int = 3000,
) -> BTFit:
    """Fit Bradley–Terry scores to verdicts (``ID1, ID2, better_id``; null verdicts skipped).

    ``position_effect=True`` adds the first-shown advantage ``delta`` (as a
    BradleyTerry2 home-advantage term). ``prior_sd`` forces the Gaussian prior; by
    default it is used only when the MLE does not exist (see the module docstring).
    SEs come from the inverse information matrix; beyond ``dense_limit`` items they
    use a second-order expansion of its diagonal (accurate to O(1/degree^2)), and the
    position effect's SE stays exact (one CG solve).
    """
    require_extra()
    import numpy as np

    from pairbatch._bt_newton import fit_newton, standard_errors

    data = _prepare(results)
    if reference is not None and reference not in data.ids:
        raise InputError(f"reference {reference!r} is not one of the compared IDs")
    if prior_sd is None:
        problems = _mle_problems(data)
        if problems:
            shown = ", ".join(map(repr, problems[:5])) + (" …" if len(problems) > 5 else "")
            warnings.warn(
                f"Bradley–Terry MLE does not exist ({len(problems)} item(s) not linked both "
                f"ways by wins, e.g. {shown}); using a N(0, 3^2) prior on the scores",
                RuntimeWarning,
                stacklevel=2,
            )
            prior_sd = 3.0
    elif prior_sd <= 0:
        raise InputError(f"prior_sd must be positive, got {prior_sd!r}")
    precision = 0.0 if prior_sd is None else 1.0 / prior_sd**2
    delta_precision = 0.0
    first_wins = float(data.w.sum())
    if position_effect and first_wins in (0.0, float(data.n.sum())):
        warnings.warn(
            "the position effect has no finite MLE (the first-shown sample won every "
            "time, or never); using a N(0, 3^2) prior on it",
            RuntimeWarning,
            stacklevel=2,
        )
        delta_precision = 1.0 / 9.0
    dense = len(data.ids) <= dense_limit
    # Dense Newton solves cost O(k^3) per step; CG on the sparse system wins long before
    # the single dense inversion that exact SEs need stops being affordable.
    dense_steps = len(data.ids) <= min(dense_limit, DENSE_STEP_LIMIT)
    state = fit_newton(
        data, position_effect, precision, delta_precision, max_iter, tol, dense_steps
    )
    theta, delta = state.theta, state.delta
    centred, contrasts, delta_se = standard_errors(
        data, state, precision, delta_precision, reference, dense
    )
    var = centred if contrasts is None else contrasts
    ref_index = None if reference is None else data.ids.index(reference)
    theta = theta - (theta[ref_index] if ref_index is not None else theta.mean())
    if not state.converged:
        warnings.warn(
            f"Bradley–Terry fit did not converge in {max_iter} iterations",
            RuntimeWarning,
            stacklevel=2,
        )
    se = np.sqrt(np.maximum(var, 0.0))
    scores = pl.DataFrame(
        {
            "id": data.ids,
            "theta": theta,
            "se": se,
            "n": data.games.astype(np.int64),
            "wins": data.wins.astype(np.int64),
        }
    )
    scores = scores.with_columns(
        pl.col("theta").rank("min", descending=True).cast(pl.Int64).alias("rank")
    ).select("id", "theta", "se", "rank", "n", "wins")
    spread = float(np.var(theta, ddof=1)) if theta.size > 1 else 0.0
    # Reliability uses the centred scores' SEs, whatever the reported identification.
    noise = float(np.mean(np.maximum(centred, 0.0)))
    reliability = (spread - noise) / spread if spread > 0 else float("nan")
    return BTFit(
        scores=scores.sort("rank", "id"),
        position_effect=None if delta is None else PositionEffect(delta, delta_se),
        reliability=reliability,
        log_likelihood=state.log_likelihood,
        iterations=state.iterations,
        converged=state.converged,
        reference=reference,
        prior_sd=prior_sd,
        se_method="exact" if dense else "approximate",
    )
