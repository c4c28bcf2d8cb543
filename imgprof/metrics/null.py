"""Permutation nulls for average precision, p-values and Benjamini–Hochberg FDR.

The null of an AP with ``n_pos`` positives among ``total`` ranked items is the
AP of a uniformly random ranking: the positives' ranks are a random
``n_pos``-subset of ``1..total``. Nulls are drawn once per ``(n_pos, total)``
configuration and cached in memory, as copairs does (copairs caches on disk).

Two seeding schemes:

* default (``copairs_compat=False``): each configuration's generator is seeded
  with ``(seed, n_pos, total)``, so its null never depends on which other
  configurations are present; APs in float64; draws are vectorised
  (rejection sampling of sorted positions, or a partial argsort for dense
  configurations).
* ``copairs_compat=True``: copairs 0.5's exact draws — one seed per
  configuration from ``default_rng(seed).integers(8096)`` in sorted
  configuration order, ``rng.permuted`` rows, float32 APs.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

_CACHE: OrderedDict = OrderedDict()
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
    _CACHE.clear()
    _CACHE_BYTES = 0


def _cache_put(key, value: np.ndarray) -> None:
    global _CACHE_BYTES
    _CACHE[key] = value
    _CACHE_BYTES += value.nbytes
    while _CACHE_BYTES > _CACHE_LIMIT and len(_CACHE) > 1:
        _, old = _CACHE.popitem(last=False)
        _CACHE_BYTES -= old.nbytes


def _random_positions(rng: np.random.Generator, n: int, k: int, m: int) -> np.ndarray:
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
    pos = _random_positions(rng, int(null_size), int(n_pos), int(total))
    r = np.arange(1, n_pos + 1, dtype=np.float64)
    return (r / (pos + 1.0)).sum(axis=1) / n_pos


def _copairs_random_ap(null_size: int, num_pos, total, seed) -> np.ndarray:
    """copairs 0.5 ``compute.random_ap`` reproduced operation by operation (float32)."""
    rng = np.random.default_rng(seed)
    dtype = np.uint16 if total < 2**16 else np.uint32
    indices = np.tile(np.arange(total, dtype=dtype), (null_size, 1))
    rng.permuted(indices, axis=1, out=indices)
    rel_k = np.sort(indices[:, :num_pos], axis=1)
    pr_k = np.arange(1, num_pos + 1, dtype=np.float32) / (rel_k + 1)
    ap_values = pr_k.sum(axis=1) / num_pos
    return ap_values.astype(np.float32)


def null_distributions(confs: np.ndarray, null_size: int, seed: int | None, *, copairs_compat: bool = False) -> np.ndarray:
    """Null AP samples for each ``(n_pos, total)`` row of ``confs`` (unique, sorted rows).

    Returns an array ``(len(confs), null_size)`` (float32 in copairs mode, float64 otherwise).

    Parameters
    ----------
    confs
        ``(n, 2)`` unique sorted rows of ``(n_pos, total)``.
    null_size
        Samples per row.
    seed
        Seed (``None``: random).
    copairs_compat
        Draw exactly as copairs does (float32).

    Returns
    -------
    numpy.ndarray
        ``(len(confs), null_size)`` null AP samples.

    Examples
    --------
    >>> import numpy as np
    >>> from imgprof.metrics import null_distributions
    >>> null_distributions(np.array([[1, 2], [2, 10]]), 100, 0).shape
    (2, 100)
    """
    confs = np.asarray(confs, dtype=np.int64).reshape(-1, 2)
    if (confs[:, 0] < 1).any() or (confs[:, 1] < confs[:, 0]).any():
        raise ValueError("null configurations need 1 <= n_pos <= total.")
    if copairs_compat:
        seeds = np.random.default_rng(seed).integers(8096, size=len(confs))
        out = np.empty((len(confs), null_size), dtype=np.float32)
        for i, (k, m) in enumerate(confs):
            key = ("copairs", int(seeds[i]), null_size, int(k), int(m))
            hit = _CACHE.get(key) if seed is not None else None
            if hit is None:
                hit = _copairs_random_ap(null_size, np.int64(k), np.int64(m), seeds[i])
                if seed is not None:
                    _cache_put(key, hit)
            out[i] = hit
        return out
    out = np.empty((len(confs), null_size), dtype=np.float64)
    for i, (k, m) in enumerate(confs):
        key = ("stable", seed, null_size, int(k), int(m))
        hit = _CACHE.get(key) if seed is not None else None
        if hit is None:
            rng = np.random.default_rng(None if seed is None else [int(seed), int(k), int(m)])
            hit = random_ap(null_size, int(k), int(m), rng)
            if seed is not None:
                _cache_put(key, hit)
        out[i] = hit
    return out


def group_p_values(
    observed: np.ndarray,
    group: np.ndarray,
    confs: np.ndarray,
    *,
    null_size: int,
    seed: int | None,
    copairs_compat: bool = False,
) -> np.ndarray:
    """Permutation p-value of each group's mean AP.

    ``group[i]`` is the group of profile ``i`` (0..G-1) and ``confs[i]`` its
    ``(n_pos, total)``; the group's null mAP is the mean of its profiles'
    nulls. Default: ``(#{null >= observed} + 1) / (null_size + 1)`` (ties,
    up to 1e-12, count as at least as extreme). ``copairs_compat``: copairs'
    ``(#{null > observed} + 1) / (null_size + 1)`` on float32 null means.
    """
    observed = np.asarray(observed, dtype=np.float64)
    group = np.asarray(group, dtype=np.int64)
    G = observed.size
    uconfs, rev = np.unique(np.asarray(confs, dtype=np.int64), axis=0, return_inverse=True)
    rev = np.asarray(rev).reshape(-1)
    nulls = null_distributions(uconfs, null_size, seed, copairs_compat=copairs_compat)
    pvals = np.empty(G, dtype=np.float64)
    if copairs_compat:
        order = np.argsort(group, kind="stable")
        bounds = np.searchsorted(group[order], np.arange(G + 1))
        for g in range(G):
            idx = order[bounds[g] : bounds[g + 1]]
            null_dist = nulls[rev[idx]].mean(axis=0)
            num = (null_dist > observed[g]).sum()
            pvals[g] = (num + 1) / (null_size + 1)
        return pvals
    import scipy.sparse as sp

    counts = sp.csr_matrix((np.ones(group.size), (group, rev)), shape=(G, len(uconfs)))
    sizes = np.asarray(counts.sum(axis=1)).ravel()
    Wn = sp.diags(1.0 / sizes) @ counts
    chunk = max(1, (1 << 22) // max(null_size, 1))
    for s in range(0, G, chunk):
        block = np.asarray(Wn[s : s + chunk] @ nulls)
        obs = observed[s : s + chunk, None]
        num = (block >= obs - 1e-12).sum(axis=1)
        pvals[s : s + chunk] = (num + 1) / (null_size + 1)
    return pvals


def ap_p_values(ap, n_pos, n_total, *, null_size: int = 10000, seed: int | None = 0) -> np.ndarray:
    """Per-profile p-values ``(#{null >= AP} + 1) / (null_size + 1)`` (NaN where AP is NaN or no positives).

    Parameters
    ----------
    ap
        Average precision of each profile.
    n_pos, n_total
        Positives and ranked items of each profile.
    null_size
        Null samples per ``(n_pos, n_total)`` configuration.
    seed
        Seed of the null (``None``: random).

    Returns
    -------
    numpy.ndarray
        One p-value per profile (NaN where AP is NaN or there are no positives).

    Examples
    --------
    >>> p = ap_p_values([1.0, 0.2], [1, 1], [10, 10], null_size=999, seed=0)
    >>> bool(p[0] < p[1])
    True
    """
    ap = np.asarray(ap, dtype=np.float64)
    n_pos = np.asarray(n_pos, dtype=np.int64)
    n_total = np.asarray(n_total, dtype=np.int64)
    out = np.full(ap.shape, np.nan)
    ok = np.isfinite(ap) & (n_pos > 0)
    if ok.any():
        confs = np.stack([n_pos[ok], n_total[ok]], axis=1)
        uconfs, rev = np.unique(confs, axis=0, return_inverse=True)
        nulls = np.sort(null_distributions(uconfs, null_size, seed), axis=1)
        rev = np.asarray(rev).reshape(-1)
        vals = ap[ok]
        num = np.empty(vals.size)
        for j in range(len(uconfs)):
            sel = rev == j
            num[sel] = null_size - np.searchsorted(nulls[j], vals[sel] - 1e-12, side="left")
        out[ok] = (num + 1) / (null_size + 1)
    return out


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (NaN kept as NaN, others over the non-NaN set).

    Equal to ``statsmodels.stats.multitest.multipletests(p, method="fdr_bh")[1]``.

    Parameters
    ----------
    p
        p-values (NaN allowed).

    Returns
    -------
    numpy.ndarray
        Adjusted p-values (q-values), same shape.

    Examples
    --------
    >>> benjamini_hochberg([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.04, 0.04]
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError("p-values must lie in [0, 1].")
    pv = p[ok]
    n = pv.size
    order = np.argsort(pv, kind="mergesort")
    ranked = pv[order] * n / np.arange(1, n + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    adj = np.minimum(adj, 1.0)
    res = np.empty(n)
    res[order] = adj
    out[ok] = res
    return out
