"""Newton's method and standard errors for :mod:`pairbatch.scores` (numpy/scipy only).

Parameters are all item scores ``theta`` plus, optionally, the position effect
``delta``. Without a prior the information matrix is singular along "shift every
theta"; adding ``u u^T`` for that direction (``u`` = ones/sqrt(n) on theta) gives a
non-singular system whose solution has the same fit and a centred step.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
from scipy import sparse
from scipy.sparse.linalg import LinearOperator, cg


@attrs.define
class NewtonState:
    theta: Any
    delta: float | None
    log_likelihood: float
    iterations: int
    converged: bool
    weights: Any  # n p (1 - p) per ordered pair at the optimum
    pattern: Pattern


def _eta(data: Any, theta: Any, delta: float | None) -> Any:
    eta = theta[data.first] - theta[data.second]
    return eta + delta if delta is not None else eta


def _objective(
    data: Any, theta: Any, delta: float | None, precision: float, delta_precision: float
) -> float:
    eta = _eta(data, theta, delta)
    loglik = float(np.sum(data.w * eta - data.n * np.logaddexp(0.0, eta)))
    penalty = precision * float(theta @ theta) + delta_precision * (delta or 0.0) ** 2
    return loglik - 0.5 * penalty


@attrs.frozen
class Pattern:
    """The sparsity pattern of the information matrix, built once per fit.

    Ordered pairs (a, b) and (b, a) share one edge of the comparison graph; each
    Newton step only refills the CSR values, so no COO-to-CSR sort runs per iteration.
    """

    k: int
    edge: Any  # edge index of each ordered pair
    lo: Any
    hi: Any
    order: Any  # permutation from (edge values, mirrored values, diagonal) into CSR rows
    indices: Any
    indptr: Any

    @classmethod
    def build(cls, data: Any) -> Pattern:
        k = len(data.ids)
        lo, hi = np.minimum(data.first, data.second), np.maximum(data.first, data.second)
        keys, edge = np.unique(lo * k + hi, return_inverse=True)
        lo, hi = keys // k, keys % k
        diag = np.arange(k)
        rows = np.concatenate([lo, hi, diag])
        cols = np.concatenate([hi, lo, diag])
        # CSR needs entries grouped by row only; matvecs do not need sorted columns.
        order = np.argsort(rows, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=k))])
        return cls(k, edge, lo, hi, order, cols[order].astype(np.int32), indptr)

    def edge_weights(self, weights: Any) -> Any:
        return np.bincount(self.edge, weights, self.lo.size)


def _information(pattern: Pattern, weights: Any, precision: float) -> Any:
    """The theta-block of the information: a weighted Laplacian (+ prior precision)."""
    k = pattern.k
    w = pattern.edge_weights(weights)
    degree = np.bincount(pattern.lo, w, k) + np.bincount(pattern.hi, w, k) + precision
    values = np.concatenate([-w, -w, degree])[pattern.order]
    return sparse.csr_matrix((values, pattern.indices, pattern.indptr), shape=(k, k))


def _coupling(data: Any, weights: Any, k: int) -> Any:
    """d^2/(dtheta ddelta): +v for the item shown first, -v for the second."""
    return np.bincount(data.first, weights, k) - np.bincount(data.second, weights, k)


def _full_matrix(info: Any, coupling: Any, total: float, with_delta: bool) -> Any:
    """The whole information matrix; ``total`` already holds any prior on delta."""
    if not with_delta:
        return info
    col = sparse.csr_matrix(coupling.reshape(-1, 1))
    return sparse.bmat([[info, col], [col.T, sparse.csr_matrix([[total]])]], format="csr")


def _solve(matrix: Any, rhs: Any, k: int, gauge: bool, dense: bool) -> Any:
    """Solve ``(matrix + u u^T) x = rhs``; ``u`` spans the shift direction if ``gauge``."""
    u = np.zeros(matrix.shape[0])
    if gauge:
        u[:k] = 1.0 / np.sqrt(k)
    if dense:
        full = matrix.toarray() + np.outer(u, u)
        try:
            return np.linalg.solve(full, rhs)
        except np.linalg.LinAlgError:  # weights underflowed to 0 far out: least squares
            return np.linalg.lstsq(full, rhs, rcond=None)[0]
    diag = matrix.diagonal() + u * u
    op = LinearOperator(matrix.shape, matvec=lambda x: matrix @ x + u * (u @ x))
    pre = LinearOperator(matrix.shape, matvec=lambda x: x / diag)
    x, _info = cg(op, rhs, M=pre, rtol=1e-12, atol=0.0, maxiter=2000)
    return x


def fit_newton(
    data: Any,
    with_delta: bool,
    precision: float,
    delta_precision: float,
    max_iter: int,
    tol: float,
    dense: bool,
) -> NewtonState:
    k = len(data.ids)
    pattern = Pattern.build(data)
    # Start from smoothed log win/loss ratios: on large designs that saves a few steps.
    ratio = np.log((data.wins + 0.5) / (data.games - data.wins + 0.5))
    theta = (ratio - ratio.mean()) / 2
    delta = 0.0 if with_delta else None
    current = _objective(data, theta, delta, precision, delta_precision)
    converged, iterations = False, 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        eta = _eta(data, theta, delta)
        p = 1.0 / (1.0 + np.exp(-eta))
        resid = data.w - data.n * p
        weights = data.n * p * (1.0 - p)
        grad: Any = np.bincount(data.first, resid, k) - np.bincount(data.second, resid, k)
        grad = grad - precision * theta
        info = _information(pattern, weights, precision)
        total = float(weights.sum()) + delta_precision
        matrix = _full_matrix(info, _coupling(data, weights, k), total, with_delta)
        d_grad = float(resid.sum()) - delta_precision * (delta or 0.0)
        rhs = np.append(grad, d_grad) if with_delta else grad
        step = _solve(matrix, rhs, k, precision == 0.0, dense)
        scale = 1.0
        while True:  # step halving keeps each iteration an ascent step
            new_theta = theta + scale * step[:k]
            new_delta = None if delta is None else delta + scale * float(step[k])
            value = _objective(data, new_theta, new_delta, precision, delta_precision)
            if value >= current - 1e-9 * abs(current) or scale < 1e-6:
                break
            scale /= 2
        theta, delta, current = new_theta, new_delta, value
        if float(np.max(np.abs(scale * step))) < tol:
            converged = True
            break
    eta = _eta(data, theta, delta)
    p = 1.0 / (1.0 + np.exp(-eta))
    weights = data.n * p * (1 - p)
    return NewtonState(theta, delta, current, iterations, converged, weights, pattern)


def standard_errors(
    data: Any,
    state: NewtonState,
    precision: float,
    delta_precision: float,
    reference: str | None,
    dense: bool,
) -> tuple[Any, Any, float]:
    """Variances of the centred scores, of the contrasts with ``reference`` (None
    without one) and the SE of delta (nan without it)."""
    k = len(data.ids)
    with_delta = state.delta is not None
    info = _information(state.pattern, state.weights, precision)
    coupling = _coupling(data, state.weights, k)
    total = float(state.weights.sum()) + delta_precision
    ref = None if reference is None else data.ids.index(reference)
    if dense:
        matrix = _full_matrix(info, coupling, total, with_delta).toarray()
        cov = _dense_covariance(matrix, k, precision)
        delta_se = float(np.sqrt(cov[k, k])) if with_delta else float("nan")
        centred = _contrast_variances(cov[:k, :k], None)
        return centred, None if ref is None else _contrast_variances(cov[:k, :k], ref), delta_se
    centred = _approximate_variances(info, None)
    var = None if ref is None else _approximate_variances(info, ref)
    delta_se = float("nan")
    if with_delta:
        x = _solve(info, coupling, k, precision == 0.0, dense=False)
        delta_se = float(1.0 / np.sqrt(total - coupling @ x))
    return centred, var, delta_se


def _dense_covariance(matrix: Any, k: int, precision: float) -> Any:
    if precision > 0:
        return np.linalg.inv(matrix)
    # Fix theta[0] = 0 (drop its row and column): any contrast is gauge-invariant.
    cov = np.zeros_like(matrix)
    cov[1:, 1:] = np.linalg.inv(matrix[1:, 1:])
    return cov


def _contrast_variances(cov: Any, ref: int | None) -> Any:
    diag = np.diag(cov)
    if ref is not None:
        return diag + cov[ref, ref] - 2.0 * cov[:, ref]
    # Variance of theta_i - mean(theta): diag(C cov C) with C the centring matrix.
    return diag - 2.0 * cov.mean(axis=1) + cov.mean()


def _approximate_variances(info: Any, ref: int | None) -> Any:
    """Diagonal of the inverse information to second order in 1/degree:
    ``1/d_i + sum_j W_ij^2 / (d_i^2 d_j)``, then centred or contrasted."""
    d = info.diagonal()
    off = info - sparse.diags(d)
    var = 1.0 / d + (off.multiply(off) @ (1.0 / d)) / d**2
    k = d.size
    if ref is None:
        return var * (1.0 - 2.0 / k) + var.mean() / k
    cross = -np.asarray(off[:, ref].toarray()).ravel() / (d * d[ref])
    out = var + var[ref] - 2.0 * cross
    out[ref] = 0.0
    return out
