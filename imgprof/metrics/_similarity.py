"""Blocked similarity between profiles (private).

Similarities follow copairs 0.5: ``cosine``, ``abs_cosine``, ``correlation``
(Pearson across features), and for distances ``1 / (1 + d)`` with
``euclidean``, ``manhattan`` (cityblock) and ``chebyshev``. A callable
``f(A, B) -> (len(A), len(B))`` similarity matrix is also accepted.

Rows whose similarity is undefined (any NaN/inf feature; zero norm under
cosine; zero variance under correlation) are flagged *invalid*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._core.validation import check_numeric

METRICS = ("cosine", "abs_cosine", "correlation", "euclidean", "manhattan", "chebyshev")


@dataclass
class Prepared:
    X: np.ndarray  # transformed matrix (unit rows for cosine/correlation)
    sq: np.ndarray | None  # squared norms (euclidean)
    invalid: np.ndarray  # bool, rows that cannot be compared
    reason: np.ndarray  # object, why a row is invalid ("" when valid)


def check_metric(metric) -> None:
    if callable(metric):
        return
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not supported; use one of {list(METRICS)} or a callable f(A, B).")


def prepare(X, metric: str | Callable, dtype) -> Prepared:
    """Validate and transform a profile matrix once, before any block is computed."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"profiles must be a 2-D matrix, got shape {X.shape}.")
    check_numeric(X, param="profiles")
    X = np.array(X, dtype=dtype, copy=True)
    reason = np.full(X.shape[0], "", dtype=object)
    nonfinite = ~np.isfinite(X).all(axis=1)
    reason[nonfinite] = "NaN/inf feature"
    X[nonfinite] = 0.0
    sq = None
    if metric in ("cosine", "abs_cosine", "correlation"):
        if metric == "correlation":
            X -= X.mean(axis=1, keepdims=True)
        norms = np.sqrt(np.einsum("ij,ij->i", X, X))
        zero = (norms == 0) & ~nonfinite
        reason[zero] = "zero variance (correlation undefined)" if metric == "correlation" else "zero norm (cosine undefined)"
        norms[norms == 0] = 1.0
        X /= norms[:, None]
    elif metric == "euclidean":
        sq = np.einsum("ij,ij->i", X, X)
    invalid = reason != ""
    return Prepared(X=X, sq=sq, invalid=invalid, reason=reason)


def similarity(pq: Prepared, pc: Prepared, qi: np.ndarray, ci: np.ndarray | None, metric) -> np.ndarray:
    """Similarity block ``(len(qi), len(ci))`` (``ci=None``: every candidate row)."""
    A = pq.X[qi]
    B = pc.X if ci is None else pc.X[ci]
    if metric in ("cosine", "correlation"):
        return A @ B.T
    if metric == "abs_cosine":
        return np.abs(A @ B.T)
    if metric == "euclidean":
        sb = pc.sq if ci is None else pc.sq[ci]
        d2 = pq.sq[qi][:, None] + sb[None, :] - 2.0 * (A @ B.T)
        np.maximum(d2, 0.0, out=d2)
        return 1.0 / (1.0 + np.sqrt(d2))
    if metric in ("manhattan", "chebyshev"):
        from scipy.spatial.distance import cdist

        d = cdist(A, B, metric="cityblock" if metric == "manhattan" else "chebyshev")
        return 1.0 / (1.0 + d)
    S = np.asarray(metric(A, B), dtype=np.float64)
    if S.shape != (A.shape[0], B.shape[0]):
        raise ValueError(f"metric callable returned shape {S.shape}, expected {(A.shape[0], B.shape[0])}.")
    if not np.isfinite(S).all():
        raise ValueError("metric callable returned NaN/inf similarities.")
    return S


def pair_similarity(pq: Prepared, pc: Prepared, qi: np.ndarray, ci: np.ndarray, metric, *, chunk_elements: int = 2**22) -> np.ndarray:
    """Similarity of paired rows ``(pq.X[qi[k]], pc.X[ci[k]])`` (used when few pairs of a block are needed)."""
    out = np.empty(qi.size, dtype=np.float64)
    d = max(pq.X.shape[1], 1)
    step = max(1, chunk_elements // d)
    for s in range(0, qi.size, step):
        a = pq.X[qi[s : s + step]]
        b = pc.X[ci[s : s + step]]
        if metric in ("cosine", "correlation"):
            out[s : s + step] = np.einsum("ij,ij->i", a, b)
        elif metric == "abs_cosine":
            out[s : s + step] = np.abs(np.einsum("ij,ij->i", a, b))
        elif metric == "euclidean":
            diff = a - b
            out[s : s + step] = 1.0 / (1.0 + np.sqrt(np.einsum("ij,ij->i", diff, diff)))
        elif metric == "manhattan":
            out[s : s + step] = 1.0 / (1.0 + np.abs(a - b).sum(axis=1))
        elif metric == "chebyshev":
            out[s : s + step] = 1.0 / (1.0 + np.abs(a - b).max(axis=1))
        else:  # pragma: no cover - callables always use dense blocks
            raise ValueError("pair_similarity does not support callable metrics")
    return out
