"""Numerical kernels of average precision (private; arrays in, arrays out).

Ranking keys, the expected AP of a random ranking, and AP from positive keys
and negative keys (dense or sorted-and-searched). No metadata, no AnnData: the
blocked driver in :mod:`imgprof.metrics._ap_engine` calls these per block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._similarity import Prepared, pair_similarity, similarity


def orderable(f: np.ndarray) -> np.ndarray:
    """Map float32 values to uint64 integers with the same order (for batched searchsorted)."""
    u = np.ascontiguousarray(f, dtype=np.float32).view(np.uint32)
    neg = (u >> np.uint32(31)).astype(bool)
    out = np.where(neg, ~u, u | np.uint32(0x80000000))
    return out.astype(np.uint64)


def _harmonic(n_max: int) -> np.ndarray:
    """H_0..H_n_max with the same left-to-right summation as copairs."""
    h = np.zeros(n_max + 1, dtype=np.float64)
    if n_max > 0:
        h[1:] = np.cumsum(1.0 / np.arange(1, n_max + 1, dtype=np.float64))
    return h


def expected_ap(n_pos: Any, n_neg: Any) -> np.ndarray:
    """Expected AP under a random ranking (exact finite-sample formula, as copairs).

    ``E[AP] = (1/L) [ (M-1)/(L-1) (L - H_L) + H_L ]`` with ``M`` positives,
    ``L = M + N`` items and ``H_L`` the L-th harmonic number.

    Parameters
    ----------
    n_pos
        Number of positives (array-like).
    n_neg
        Number of negatives (array-like).

    Returns
    -------
    numpy.ndarray
        Expected AP of a random ranking.

    Examples
    --------
    >>> float(expected_ap(1, 1)[0])
    0.75
    """
    M = np.atleast_1d(np.asarray(n_pos, dtype=np.int64))
    N = np.atleast_1d(np.asarray(n_neg, dtype=np.int64))
    L = M + N
    H = _harmonic(int(L.max()) if L.size else 0)[L]
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = (1.0 / L) * (((M - 1.0) / (L - 1.0)) * (L - H) + H)
    mu = np.where(L == 1, np.where(M == 1, 1.0, 0.0), mu)
    mu = np.where(M == 0, 0.0, mu)
    mu = np.where((M == L) & (L > 0), 1.0, mu)
    return np.where(L < 1, np.nan, mu)


def normalized_ap(ap: Any, n_pos: Any, n_total: Any) -> np.ndarray:
    """Chance-corrected AP ``(AP - E[AP]) / (1 - E[AP])`` clipped to [-1, 1] (copairs' ``normalize_ap``).

    Parameters
    ----------
    ap
        Average precision values.
    n_pos
        Positives of each ranking.
    n_total
        Items ranked (positives + negatives).

    Returns
    -------
    numpy.ndarray
        Chance-corrected AP in ``[-1, 1]`` (0 = chance).

    Examples
    --------
    >>> from imgprof.metrics import normalized_ap
    >>> float(normalized_ap([1.0], [1], [2])[0]), float(normalized_ap([0.75], [1], [2])[0])
    (1.0, 0.0)
    """
    ap = np.asarray(ap, dtype=np.float64)
    n_pos = np.asarray(n_pos, dtype=np.int64)
    n_total = np.asarray(n_total, dtype=np.int64)
    out = np.full(ap.shape, np.nan)
    ok = n_total > 0
    if ok.any():
        mu = expected_ap(n_pos[ok], n_total[ok] - n_pos[ok])
        out[ok] = np.clip((ap[ok] - mu) / np.maximum(1 - mu, 1e-10), -1.0, 1.0)
    return out


def _key(S: np.ndarray) -> np.ndarray:
    """Ranking key as copairs builds it: ``1 - sim`` with ``sim`` stored as float32 (in place when possible).

    ``S`` must be a fresh array owned by the caller (similarities are finite:
    inputs were validated and callables are checked in ``similarity``).
    """
    key = np.asarray(S).astype(np.float32, copy=False)
    np.subtract(np.float32(1), key, out=key)
    return key


def _weighted_count(M: np.ndarray, size: np.ndarray) -> np.ndarray:
    """``M @ size`` for a boolean ``M`` without an int64 copy of ``M``."""
    if (size == 1).all():
        return np.count_nonzero(M, axis=1).astype(np.int64)
    dt = np.float32 if size.sum() < 2**24 else np.float64
    return np.rint(M.astype(dt) @ size.astype(dt)).astype(np.int64)


def _clear_self(M: np.ndarray, R: np.ndarray, cols: np.ndarray, buf: np.ndarray) -> None:
    """Set ``M[b, j] = False`` where candidate ``cols[j]`` is the query row ``R[b]`` itself."""
    buf[cols] = np.arange(cols.size)
    loc = buf[R]
    buf[cols] = -1
    hit = np.flatnonzero(loc >= 0)
    M[hit, loc[hit]] = False


_DENSE_MIN_FILL = 0.05  # below this share of needed entries, use paired products instead of a dense block


def _block_keys(
    pq: Prepared, pc: Prepared, metric: str | Callable, qrows: np.ndarray, crows: np.ndarray, M: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys of the entries of mask ``M`` (rows ``qrows`` × columns ``crows``), dense or paired."""
    r, c = np.nonzero(M)
    dense = callable(metric) or r.size >= _DENSE_MIN_FILL * M.size
    if dense:
        return r, c, _key(similarity(pq, pc, qrows, crows, metric))[r, c]
    return r, c, _key(pair_similarity(pq, pc, qrows[r], crows[c], metric))


def _ap_units(
    ur: np.ndarray, rows: np.ndarray, kp: np.ndarray, n_units: int, neg_r: np.ndarray, neg_k: np.ndarray, n_rows: int
) -> np.ndarray:
    """AP per unit from its positives' keys and its row's negative keys (lower key = more similar).

    ``ur``/``rows``/``kp``: unit, row and key of each positive; ``neg_r``/``neg_k``:
    row and key of each negative. At equal key a positive ranks before a
    negative (copairs' stable lexsort puts positives first).
    """
    order = np.lexsort((kp, ur))
    ur, kp, rows = ur[order], kp[order], rows[order]
    npos = np.bincount(ur, minlength=n_units)
    starts = np.cumsum(npos) - npos
    m = np.arange(ur.size) - np.repeat(starts, npos)
    if neg_r.size:
        flat = np.sort((neg_r.astype(np.uint64) << np.uint64(32)) | orderable(neg_k))
        nneg = np.bincount(neg_r, minlength=n_rows)
        row_start = np.cumsum(nneg) - nneg
        q = (rows.astype(np.uint64) << np.uint64(32)) | orderable(kp)
        cnt = np.searchsorted(flat, q, side="left").astype(np.int64) - row_start[rows]
    else:
        cnt = np.zeros(ur.size, dtype=np.int64)
    prec = (m + 1.0) / (m + 1.0 + cnt)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.bincount(ur, weights=prec, minlength=n_units) / npos


def _ap_dense(pr: np.ndarray, pk: np.ndarray, Kn: np.ndarray, n_rows: int) -> np.ndarray:
    """AP per row when each row's negative keys are a dense matrix ``Kn`` (non-negatives = +inf).

    Few positives per row: count negatives strictly more similar than each
    positive by direct comparison; many: sort each row, then binary-search.
    """
    order = np.lexsort((pk, pr))
    pr, pk = pr[order], pk[order]
    npos = np.bincount(pr, minlength=n_rows)
    starts = np.cumsum(npos) - npos
    m = np.arange(pr.size) - np.repeat(starts, npos)
    pmax = int(npos.max()) if pr.size else 0
    if pmax <= 16:
        pad = np.full((n_rows, pmax), np.inf, dtype=np.float32)
        pad[pr, m] = pk
        cnt_pad = np.empty((n_rows, pmax), dtype=np.int64)
        buf = np.empty(Kn.shape, dtype=bool)
        acc = np.uint32 if Kn.shape[1] < 2**32 else np.uint64
        for j in range(pmax):
            np.less(Kn, pad[:, j : j + 1], out=buf)
            cnt_pad[:, j] = buf.view(np.uint8).sum(axis=1, dtype=acc)
        cnt = cnt_pad[pr, m]
    else:
        Kn = np.sort(Kn, axis=1)
        W = Kn.shape[1]
        flat = ((np.arange(n_rows, dtype=np.uint64)[:, None] << np.uint64(32)) | orderable(Kn)).ravel()
        q = (pr.astype(np.uint64) << np.uint64(32)) | orderable(pk)
        cnt = np.searchsorted(flat, q, side="left").astype(np.int64) - pr.astype(np.int64) * W
    prec = (m + 1.0) / (m + 1.0 + cnt)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.bincount(pr, weights=prec, minlength=n_rows) / npos


# ---------------------------------------------------------------------------
# array-level kernel
