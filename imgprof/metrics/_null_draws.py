"""Random and exact AP nulls, cached in memory (private; used by :mod:`imgprof.metrics.null`).

The null of an AP with ``n_pos`` positives among ``total`` ranked items is the
AP of a uniformly random ranking. :func:`random_ap` draws it (vectorised
rejection sampling or a partial argsort), :func:`copairs_random_ap` reproduces
copairs 0.5's draws, and :func:`ap_distribution` enumerates it exactly when
small enough. Draws and distributions are cached per configuration.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_BYTES = 0
_CACHE_LIMIT = 512 * 2**20


def clear_null_cache() -> None:
    """Forget every cached null distribution.

    Returns
    -------
    None

    Examples
    --------
    >>> from imgprof.metrics import clear_null_cache
    >>> clear_null_cache()
    """
    global _CACHE_BYTES
    CACHE.clear()
    _CACHE_BYTES = 0


def _nbytes(value: Any) -> int:
    return sum(v.nbytes for v in value) if isinstance(value, tuple) else value.nbytes


def cache_put(key: tuple, value: Any) -> None:
    global _CACHE_BYTES
    CACHE[key] = value
    _CACHE_BYTES += _nbytes(value)
    while _CACHE_BYTES > _CACHE_LIMIT and len(CACHE) > 1:
        _, old = CACHE.popitem(last=False)
        _CACHE_BYTES -= _nbytes(old)


def random_positions(rng: np.random.Generator, n: int, k: int, m: int) -> np.ndarray:
    """``n`` sorted random ``k``-subsets of ``range(m)`` (uniform), shape ``(n, k)``."""
    if k >= m:
        return np.broadcast_to(np.arange(m), (n, m)).copy()
    if k * k <= 2 * m:
        out = np.empty((n, k), dtype=np.int64)
        todo = np.arange(n)
        while todo.size:
            draw = rng.integers(0, m, size=(todo.size, k))
            draw.sort(axis=1)
            ok = (np.diff(draw, axis=1) > 0).all(axis=1) if k > 1 else np.ones(todo.size, bool)
            out[todo[ok]] = draw[ok]
            todo = todo[~ok]
        return out
    out = np.empty((n, k), dtype=np.int64)
    chunk = max(1, (1 << 23) // m)
    for s in range(0, n, chunk):
        c = min(chunk, n - s)
        keys = rng.random((c, m))
        idx = np.argpartition(keys, k - 1, axis=1)[:, :k] if k < m else np.argsort(keys, axis=1)
        idx.sort(axis=1)
        out[s : s + c] = idx
    return out


def random_ap(null_size: int, n_pos: int, total: int, rng: np.random.Generator) -> np.ndarray:
    """APs (float64) of ``null_size`` random rankings with ``n_pos`` positives among ``total`` items.

    Parameters
    ----------
    null_size
        Number of random rankings.
    n_pos
        Positives among the ranked items.
    total
        Items ranked.
    rng
        NumPy random generator.

    Returns
    -------
    numpy.ndarray
        ``(null_size,)`` AP values.

    Examples
    --------
    >>> import numpy as np
    >>> x = random_ap(2000, 1, 2, np.random.default_rng(0))
    >>> sorted(set(np.round(x, 3).tolist()))
    [0.5, 1.0]
    """
    pos = random_positions(rng, int(null_size), int(n_pos), int(total))
    r = np.arange(1, n_pos + 1, dtype=np.float64)
    return (r / (pos + 1.0)).sum(axis=1) / n_pos


def copairs_random_ap(null_size: int, num_pos: Any, total: Any, seed: Any) -> np.ndarray:
    """copairs 0.5 ``compute.random_ap`` reproduced operation by operation (float32)."""
    rng = np.random.default_rng(seed)
    dtype = np.uint16 if total < 2**16 else np.uint32
    indices = np.tile(np.arange(total, dtype=dtype), (null_size, 1))
    rng.permuted(indices, axis=1, out=indices)
    rel_k = np.sort(indices[:, :num_pos], axis=1)
    pr_k = np.arange(1, num_pos + 1, dtype=np.float32) / (rel_k + 1)
    ap_values = pr_k.sum(axis=1) / num_pos
    return ap_values.astype(np.float32)


#: a configuration's AP distribution is enumerated when ``comb(total, n_pos)`` is at most this.
MEMBER_EXACT_LIMIT = 1_000_000
#: a group's null is exact when the convolution of all members but the largest has at most this
#: many distinct values (after merging equal ones) and the largest member at most MEMBER_EXACT_LIMIT.
GROUP_EXACT_LIMIT = 2_000_000
#: null values within this distance of the observed mAP count as ties (as large as the observed).
TIE_TOL = 1e-10
_MERGE_DECIMALS = 12


def ap_distribution(n_pos: int, total: int, *, max_patterns: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact null distribution of AP with ``n_pos`` positives among ``total`` randomly ranked items.

    Under the null the positives' ranks are a uniform random ``n_pos``-subset
    of ``1..total``; AP ``= (1/n_pos) * sum_j j / r_j`` over the sorted ranks
    ``r_1 < ... < r_n_pos``. Every subset is enumerated and equal AP values
    (to 12 decimals) are merged, so ties carry their full probability.

    Parameters
    ----------
    n_pos
        Number of positives (``>= 1``).
    total
        Number of ranked items, positives included (``>= n_pos``).
    max_patterns
        Give up (return ``None``) when there are more than this many rank
        patterns ``comb(total, n_pos)``; default :data:`MEMBER_EXACT_LIMIT`.

    Returns
    -------
    ``(values, probs)``: sorted distinct AP values (float64) and their
    probabilities (``count / comb(total, n_pos)``), or ``None`` when the
    distribution is too large to enumerate.

    Examples
    --------
    >>> v, p = ap_distribution(1, 4)
    >>> v.round(3).tolist(), p.tolist()
    ([0.25, 0.333, 0.5, 1.0], [0.25, 0.25, 0.25, 0.25])
    >>> v, p = ap_distribution(2, 6)   # 15 rank patterns; ranks (2,6) and (3,4) tie at AP 5/12
    >>> bool(np.isclose(p.sum(), 1.0)), len(v), float(p[np.isclose(v, 5 / 12)][0] * 15)
    (True, 14, 2.0)
    """
    from itertools import chain, combinations
    from math import comb

    k, m = int(n_pos), int(total)
    if k < 1 or m < k:
        raise ValueError(f"ap_distribution needs 1 <= n_pos <= total, got n_pos={n_pos}, total={total}.")
    limit = MEMBER_EXACT_LIMIT if max_patterns is None else int(max_patterns)
    key = ("exact", k, m)
    hit = CACHE.get(key)
    if hit is not None:
        return hit
    n_pat = comb(m, k)
    if n_pat > limit:
        return None
    if k == m:
        out = (np.ones(1), np.ones(1))
    elif k == 1:
        out = (1.0 / np.arange(m, 0, -1, dtype=np.float64), np.full(m, 1.0 / m))
    else:
        pos = np.fromiter(chain.from_iterable(combinations(range(1, m + 1), k)), dtype=np.int64, count=n_pat * k)
        pos = pos.reshape(n_pat, k)
        ap = (np.arange(1, k + 1, dtype=np.float64) / pos).sum(axis=1) / k
        vals, counts = np.unique(np.round(ap, _MERGE_DECIMALS), return_counts=True)
        out = (vals, counts / n_pat)
    cache_put(key, out)
    return out


def _convolve(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Distribution of the sum of two independent discrete variables (values merged to 12 decimals)."""
    va, pa = a
    vb, pb = b
    v = (va[:, None] + vb[None, :]).ravel()
    p = (pa[:, None] * pb[None, :]).ravel()
    vals, inv = np.unique(np.round(v, _MERGE_DECIMALS), return_inverse=True)
    return vals, np.bincount(inv.reshape(-1), weights=p, minlength=vals.size)


def exact_class_p(dists: list, sums: np.ndarray) -> np.ndarray | None:
    """Exact ``P(sum of independent members >= s)`` for each ``s`` in ``sums`` (ties within TIE_TOL count).

    ``dists``: per member ``(values, probs)``. All members but the largest are
    convolved into ``A``; the last member ``X`` is summed over:
    ``p(s) = sum_x P(X = x) P(A >= s - x)``. ``None`` when too large.
    """
    dists = sorted(dists, key=lambda d: d[0].size)
    last = dists[-1]
    acc = (np.zeros(1), np.ones(1))
    for d in dists[:-1]:
        if acc[0].size * d[0].size > 4 * GROUP_EXACT_LIMIT:
            return None
        acc = _convolve(acc, d)
        if acc[0].size > GROUP_EXACT_LIMIT:
            return None
    va, pa = acc
    tail = np.zeros(va.size + 1)
    tail[:-1] = np.cumsum(pa[::-1])[::-1]  # P(A >= va[i]), small terms summed first
    vx, px = last
    tol = TIE_TOL * len(dists)
    out = np.empty(sums.size)
    chunk = max(1, (1 << 22) // max(vx.size, 1))
    for s in range(0, sums.size, chunk):
        q = sums[None, s : s + chunk] - vx[:, None] - tol
        idx = np.searchsorted(va, q, side="left")
        out[s : s + chunk] = (px[:, None] * tail[idx]).sum(axis=0)
    return np.clip(out, 0.0, 1.0)


def member_draws(k: int, m: int, null_size: int, slot: int, seed: int | None) -> np.ndarray:
    """``null_size`` independent AP draws for configuration ``(k, m)``, stream ``slot`` (cached when seeded).

    Slots are independent streams: two members of one group with the same
    configuration use different slots, so their draws are independent.
    """
    key = ("draws", seed, null_size, k, m, slot)
    hit = CACHE.get(key) if seed is not None else None
    if hit is not None:
        return hit
    rng = np.random.default_rng(None if seed is None else [int(seed), int(k), int(m), int(slot), 19])
    dist = ap_distribution(k, m)
    if dist is not None:
        vals, probs = dist
        cdf = np.cumsum(probs)
        cdf /= cdf[-1]
        idx = np.searchsorted(cdf, rng.random(null_size), side="right")
        hit = vals[np.minimum(idx, vals.size - 1)]
    else:
        hit = random_ap(null_size, k, m, rng)
    if seed is not None:
        cache_put(key, hit)
    return hit


