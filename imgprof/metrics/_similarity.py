"""Blocked similarity between profiles (private).

Similarities follow copairs 0.5: ``cosine``, ``abs_cosine``, ``correlation``
(Pearson across features), and for distances ``1 / (1 + d)`` with
``euclidean``, ``manhattan`` (cityblock) and ``chebyshev``. A callable
``f(A, B) -> (len(A), len(B))`` similarity matrix is also accepted.

Each named similarity is one entry of :data:`SIMILARITIES` (a
:class:`~imgprof._core.registry.Registry`): how rows are prepared once
(``prep``), the similarity of a block of rows against a block of candidates
(``block``) and of paired rows (``pair``). Adding a similarity is one
``SIMILARITIES.add(...)`` here.

Rows whose similarity is undefined (any NaN/inf feature; zero norm under
cosine; zero variance under correlation) are flagged *invalid*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core.registry import Registry
from .._core.validation import check_array

#: Similarity name → ``prep`` (``"unit"``, ``"center_unit"``, ``"sq"`` or ``None``), ``block(A, B, sa, sb)``
#: and ``pair(a, b)``. Names are case-sensitive, as copairs' are.
SIMILARITIES = Registry("retrieval_similarity", param="metric", case_sensitive=True)


def _cosine(A: np.ndarray, B: np.ndarray, sa: Any, sb: Any) -> np.ndarray:
    """Cosine similarity: dot products of the rows :func:`prepare` scaled to unit norm.

    Examples
    --------
    >>> P = prepare(np.array([[3.0, 4.0], [6.0, 8.0], [4.0, -3.0]]), "cosine", np.float64)
    >>> P.X[0]  # each row scaled once, before any block
    array([0.6, 0.8])
    >>> _cosine(P.X[:1], P.X, None, None).round(6)  # same direction (twice as long): 1; orthogonal: 0
    array([[1., 1., 0.]])
    """
    return A @ B.T


def _abs_cosine(A: np.ndarray, B: np.ndarray, sa: Any, sb: Any) -> np.ndarray:
    """Absolute cosine similarity: a profile and its opposite are as similar as two equal profiles.

    Examples
    --------
    >>> P = prepare(np.array([[1.0, 2.0], [-1.0, -2.0]]), "abs_cosine", np.float64)
    >>> first = np.array([0])
    >>> similarity(P, P, first, None, "abs_cosine").round(6), similarity(P, P, first, None, "cosine").round(6)
    (array([[1., 1.]]), array([[ 1., -1.]]))
    """
    return np.abs(A @ B.T)


def _correlation(A: np.ndarray, B: np.ndarray, sa: Any, sb: Any) -> np.ndarray:
    """Pearson correlation across features: dot products of the rows :func:`prepare` centred and scaled.

    Examples
    --------
    An offset added to every feature of a profile does not change its correlations:

    >>> P = prepare(np.array([[1.0, 2.0, 3.0], [11.0, 12.0, 13.0], [3.0, 2.0, 1.0]]), "correlation", np.float64)
    >>> _correlation(P.X[:1], P.X, None, None).round(6)
    array([[ 1.,  1., -1.]])
    """
    return A @ B.T


def _euclidean(A: np.ndarray, B: np.ndarray, sa: np.ndarray, sb: np.ndarray) -> np.ndarray:
    """``1 / (1 + d)``, ``d`` the euclidean distance, from the rows' squared norms ``sa``, ``sb``.

    Examples
    --------
    >>> A, B = np.array([[0.0, 0.0]]), np.array([[3.0, 4.0], [0.0, 0.0]])
    >>> _euclidean(A, B, (A ** 2).sum(axis=1), (B ** 2).sum(axis=1))  # d = 5 and d = 0
    array([[0.16666667, 1.        ]])
    """
    d2 = sa[:, None] + sb[None, :] - 2.0 * (A @ B.T)
    np.maximum(d2, 0.0, out=d2)
    return 1.0 / (1.0 + np.sqrt(d2))


def _inverse_cdist(A: np.ndarray, B: np.ndarray, metric: str) -> np.ndarray:
    """``1 / (1 + d)`` for a :func:`scipy.spatial.distance.cdist` metric."""
    from scipy.spatial.distance import cdist

    return 1.0 / (1.0 + cdist(A, B, metric=metric))


def _manhattan(A: np.ndarray, B: np.ndarray, sa: Any, sb: Any) -> np.ndarray:
    """``1 / (1 + d)``, ``d`` the manhattan (cityblock) distance: the sum of absolute differences.

    Examples
    --------
    >>> _manhattan(np.zeros((1, 2)), np.array([[3.0, -4.0]]), None, None)  # d = 3 + 4
    array([[0.125]])
    """
    return _inverse_cdist(A, B, "cityblock")


def _chebyshev(A: np.ndarray, B: np.ndarray, sa: Any, sb: Any) -> np.ndarray:
    """``1 / (1 + d)``, ``d`` the chebyshev distance: the largest absolute difference of one feature.

    Examples
    --------
    >>> a = np.ones((1, 3))
    >>> _chebyshev(a, a + [[0.5, -4.0, 2.0]], None, None)  # only the largest difference counts: d = 4
    array([[0.2]])
    """
    return _inverse_cdist(A, B, "chebyshev")


def _pair_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def _pair_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = a - b
    return 1.0 / (1.0 + np.sqrt(np.einsum("ij,ij->i", diff, diff)))


def _pair_abs_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(np.einsum("ij,ij->i", a, b))


def _pair_manhattan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.abs(a - b).sum(axis=1))


def _pair_chebyshev(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.abs(a - b).max(axis=1))


def _add(name: str, prep: str | None, block: Callable[..., np.ndarray], pair: Callable[..., np.ndarray],
         description: str) -> None:
    SIMILARITIES.add(name, block, prep=prep, block=block, pair=pair, description=description)


_add("cosine", "unit", _cosine, _pair_dot, "cosine similarity (rows scaled to unit norm, then dot products)")
_add("abs_cosine", "unit", _abs_cosine, _pair_abs_dot, "absolute cosine similarity (anti-correlated profiles count as similar)")
_add("correlation", "center_unit", _correlation, _pair_dot, "Pearson correlation (rows centred and scaled, then dot products)")
_add("euclidean", "sq", _euclidean, _pair_euclidean, "1 / (1 + euclidean distance)")
_add("manhattan", None, _manhattan, _pair_manhattan, "1 / (1 + manhattan (cityblock) distance)")
_add("chebyshev", None, _chebyshev, _pair_chebyshev, "1 / (1 + chebyshev distance)")

#: Names of the built-in similarities.
METRICS = SIMILARITIES.names()


@dataclass
class Prepared:
    """A profile matrix transformed once for a similarity (unit rows for cosine/correlation)."""

    X: np.ndarray  # transformed matrix (unit rows for cosine/correlation)
    sq: np.ndarray | None  # squared norms (euclidean)
    invalid: np.ndarray  # bool, rows that cannot be compared
    reason: np.ndarray  # object, why a row is invalid ("" when valid)


def check_metric(metric: str | Callable) -> None:
    """Refuse a metric that is neither a registered similarity nor a callable."""
    if callable(metric):
        return
    if not isinstance(metric, str) or metric not in SIMILARITIES:
        raise ValueError(f"metric={metric!r} is not supported; use one of {list(METRICS)} or a callable f(A, B).")


def prepare(X: Any, metric: str | Callable, dtype: Any) -> Prepared:
    """Validate and transform a profile matrix once, before any block is computed."""
    X = check_array(X, param="profiles", allow_nan=True, allow_inf=True, min_rows=0, min_cols=0)
    X = np.array(X, dtype=dtype, copy=True)
    reason = np.full(X.shape[0], "", dtype=object)
    nonfinite = ~np.isfinite(X).all(axis=1)
    reason[nonfinite] = "NaN/inf feature"
    X[nonfinite] = 0.0
    sq = None
    prep = None if callable(metric) else SIMILARITIES.get(metric)["prep"]
    if prep in ("unit", "center_unit"):
        if prep == "center_unit":
            X -= X.mean(axis=1, keepdims=True)
        norms = np.sqrt(np.einsum("ij,ij->i", X, X))
        zero = (norms == 0) & ~nonfinite
        reason[zero] = "zero variance (correlation undefined)" if prep == "center_unit" else "zero norm (cosine undefined)"
        norms[norms == 0] = 1.0
        X /= norms[:, None]
    elif prep == "sq":
        sq = np.einsum("ij,ij->i", X, X)
    invalid = reason != ""
    return Prepared(X=X, sq=sq, invalid=invalid, reason=reason)


def _rows(v: np.ndarray | None, idx: np.ndarray | None) -> np.ndarray | None:
    if v is None:
        return None
    return v if idx is None else v[idx]


def similarity(pq: Prepared, pc: Prepared, qi: np.ndarray, ci: np.ndarray | None, metric: str | Callable) -> np.ndarray:
    """Similarity block ``(len(qi), len(ci))`` (``ci=None``: every candidate row)."""
    A = pq.X[qi]
    B = pc.X if ci is None else pc.X[ci]
    if not callable(metric):
        return SIMILARITIES.get(metric)["block"](A, B, _rows(pq.sq, qi), _rows(pc.sq, ci))
    S = np.asarray(metric(A, B), dtype=np.float64)
    if S.shape != (A.shape[0], B.shape[0]):
        raise ValueError(f"metric callable returned shape {S.shape}, expected {(A.shape[0], B.shape[0])}.")
    if not np.isfinite(S).all():
        raise ValueError("metric callable returned NaN/inf similarities.")
    return S


def pair_similarity(
    pq: Prepared, pc: Prepared, qi: np.ndarray, ci: np.ndarray, metric: str | Callable, *, chunk_elements: int = 2**22
) -> np.ndarray:
    """Similarity of paired rows ``(pq.X[qi[k]], pc.X[ci[k]])`` (used when few pairs of a block are needed)."""
    if callable(metric):  # pragma: no cover - callables always use dense blocks
        raise ValueError("pair_similarity does not support callable metrics")
    pair = SIMILARITIES.get(metric)["pair"]
    out = np.empty(qi.size, dtype=np.float64)
    d = max(pq.X.shape[1], 1)
    step = max(1, chunk_elements // d)
    for s in range(0, qi.size, step):
        out[s : s + step] = pair(pq.X[qi[s : s + step]], pc.X[ci[s : s + step]])
    return out
