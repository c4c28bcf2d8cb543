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
import pandas as pd

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


def _nbytes(value) -> int:
    return sum(v.nbytes for v in value) if isinstance(value, tuple) else value.nbytes


def _cache_put(key, value) -> None:
    global _CACHE_BYTES
    _CACHE[key] = value
    _CACHE_BYTES += _nbytes(value)
    while _CACHE_BYTES > _CACHE_LIMIT and len(_CACHE) > 1:
        _, old = _CACHE.popitem(last=False)
        _CACHE_BYTES -= _nbytes(old)


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


# ---------------------------------------------------------------------------
# exact AP distributions and group nulls (default p-values)
# ---------------------------------------------------------------------------

#: a configuration's AP distribution is enumerated when ``comb(total, n_pos)`` is at most this.
MEMBER_EXACT_LIMIT = 1_000_000
#: a group's null is exact when the convolution of all members but the largest has at most this
#: many distinct values (after merging equal ones) and the largest member at most MEMBER_EXACT_LIMIT.
GROUP_EXACT_LIMIT = 2_000_000
#: null values within this distance of the observed mAP count as ties (as large as the observed).
TIE_TOL = 1e-10
_MERGE_DECIMALS = 12


def ap_distribution(n_pos: int, total: int, *, max_patterns: int | None = None):
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
    hit = _CACHE.get(key)
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
    _cache_put(key, out)
    return out


def _convolve(a, b):
    """Distribution of the sum of two independent discrete variables (values merged to 12 decimals)."""
    va, pa = a
    vb, pb = b
    v = (va[:, None] + vb[None, :]).ravel()
    p = (pa[:, None] * pb[None, :]).ravel()
    vals, inv = np.unique(np.round(v, _MERGE_DECIMALS), return_inverse=True)
    return vals, np.bincount(inv.reshape(-1), weights=p, minlength=vals.size)


def _exact_class_p(dists, sums: np.ndarray) -> np.ndarray | None:
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


def _member_draws(k: int, m: int, null_size: int, slot: int, seed: int | None) -> np.ndarray:
    """``null_size`` independent AP draws for configuration ``(k, m)``, stream ``slot`` (cached when seeded).

    Slots are independent streams: two members of one group with the same
    configuration use different slots, so their draws are independent.
    """
    key = ("draws", seed, null_size, k, m, slot)
    hit = _CACHE.get(key) if seed is not None else None
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
        _cache_put(key, hit)
    return hit


def group_null_p_values(
    observed,
    group,
    n_pos,
    n_total,
    *,
    null_size: int = 10000,
    seed: int | None = 0,
    exact: bool | None = None,
) -> pd.DataFrame:
    """Valid p-value of each group's mean AP: exact where feasible, Monte Carlo otherwise.

    The null of a group's mAP is the distribution of the mean of independent
    draws, one from each member's own AP null (a uniformly random ranking with
    the member's ``n_pos`` positives among ``n_total`` items). The p-value is
    ``P(null mAP >= observed mAP)`` — ties (within ``TIE_TOL``) count as at
    least as extreme. Groups with the same multiset of ``(n_pos, n_total)``
    share one null, computed once.

    * **exact** — every member's AP distribution is enumerated
      (``comb(n_total, n_pos) <= MEMBER_EXACT_LIMIT``) and the convolution of all
      members but the largest has at most ``GROUP_EXACT_LIMIT`` distinct values:
      the p-value is computed exactly (up to float rounding), no sampling.
    * **monte_carlo** — otherwise: ``null_size`` draws of the group mean, each
      member drawn independently (from its exact distribution when it is
      enumerable, else from random rankings); ``p = (#{null >= mAP} + 1) / (null_size + 1)``
      with standard error ``sqrt(p (1 - p) / null_size)``.

    Parameters
    ----------
    observed
        Observed mAP of each group, shape ``(G,)``.
    group
        Group index (``0..G-1``) of each profile, shape ``(n,)``.
    n_pos, n_total
        Each profile's number of positive pairs and of ranked pairs, shape ``(n,)``.
    null_size
        Monte Carlo draws per group null (ignored for exact groups).
    seed
        Seed of the Monte Carlo draws; ``None`` for fresh, uncached draws.
    exact
        ``None`` (default): exact where feasible; ``False``: always Monte Carlo;
        ``True``: exact or raise ``ValueError``.

    Returns
    -------
    DataFrame with one row per group: ``p_value``, ``p_value_se`` (0 when
    exact) and ``p_value_method`` (``"exact"`` or ``"monte_carlo"``).

    Examples
    --------
    >>> # two replicates, 12 controls, each replicate ranks its partner first: p = (1/13)**2
    >>> r = group_null_p_values([1.0], [0, 0], [1, 1], [13, 13])
    >>> round(float(r["p_value"].iloc[0]) * 169, 9), r["p_value_method"].iloc[0]
    (1.0, 'exact')
    """
    observed = np.asarray(observed, dtype=np.float64).reshape(-1)
    group = np.asarray(group, dtype=np.int64).reshape(-1)
    n_pos = np.asarray(n_pos, dtype=np.int64).reshape(-1)
    n_total = np.asarray(n_total, dtype=np.int64).reshape(-1)
    G = observed.size
    if not (group.size == n_pos.size == n_total.size):
        raise ValueError("group, n_pos and n_total must have one entry per profile.")
    if group.size and (group.min() < 0 or group.max() >= G):
        raise ValueError("group must index the observed values (0..G-1).")
    if (n_pos < 1).any() or (n_total < n_pos).any():
        raise ValueError("every profile needs 1 <= n_pos <= n_total.")
    null_size = int(null_size)
    if null_size < 1:
        raise ValueError(f"null_size must be >= 1, got {null_size}.")
    sizes = np.bincount(group, minlength=G)
    if (sizes == 0).any():
        raise ValueError("every group needs at least one profile.")
    # configuration id of each profile, members sorted by (group, configuration)
    confs, cid = np.unique(np.stack([n_pos, n_total], axis=1), axis=0, return_inverse=True)
    cid = np.asarray(cid).reshape(-1)
    order = np.lexsort((cid, group))
    g_s, c_s = group[order], cid[order]
    # class = the group's sorted tuple of configuration ids (the multiset); groups in a class share a null
    starts = np.searchsorted(g_s, np.arange(G))
    member_codes = c_s.astype(np.int64)
    keys = [tuple(member_codes[starts[g] : starts[g] + sizes[g]].tolist()) for g in range(G)]
    cls_codes, cls_keys = pd.factorize(pd.Series(keys, dtype=object))
    n_cls = len(cls_keys)
    p = np.empty(G)
    se = np.zeros(G)
    method = np.empty(G, dtype=object)
    sums = observed * sizes
    cls_order = np.argsort(cls_codes, kind="stable")
    cls_bounds = np.searchsorted(cls_codes[cls_order], np.arange(n_cls + 1))
    mc_classes = []
    for c in range(n_cls):
        members = cls_keys[c]
        gs = cls_order[cls_bounds[c] : cls_bounds[c + 1]]
        res = None
        if exact is not False:
            dists = [ap_distribution(*confs[j]) for j in members]
            if all(d is not None for d in dists):
                res = _exact_class_p(dists, sums[gs])
            if res is None and exact:
                raise ValueError(
                    f"exact=True: the null of a group with configurations {[tuple(confs[j]) for j in members]} "
                    f"is too large to enumerate (limits MEMBER_EXACT_LIMIT={MEMBER_EXACT_LIMIT}, "
                    f"GROUP_EXACT_LIMIT={GROUP_EXACT_LIMIT})."
                )
        if res is not None:
            p[gs] = res
            method[gs] = "exact"
        else:
            mc_classes.append(c)
    if mc_classes:
        # rows of the draw matrix: one per (configuration, slot) used by a Monte Carlo class
        rows: dict = {}
        for c in mc_classes:
            seen: dict = {}
            for j in cls_keys[c]:
                s_ = seen.get(j, 0)
                seen[j] = s_ + 1
                rows.setdefault((j, s_), len(rows))
        draws = np.empty((len(rows), null_size))
        for (j, s_), r in rows.items():
            draws[r] = _member_draws(int(confs[j][0]), int(confs[j][1]), null_size, s_, seed)
        chunk = max(1, (1 << 22) // null_size)
        for b in range(0, len(mc_classes), chunk):
            block = mc_classes[b : b + chunk]
            nulls = np.zeros((len(block), null_size))
            for i, c in enumerate(block):
                seen = {}
                for j in cls_keys[c]:
                    s_ = seen.get(j, 0)
                    seen[j] = s_ + 1
                    nulls[i] += draws[rows[(j, s_)]]
                nulls[i] /= len(cls_keys[c])
            nulls.sort(axis=1)
            for i, c in enumerate(block):
                gs = cls_order[cls_bounds[c] : cls_bounds[c + 1]]
                k_ge = null_size - np.searchsorted(nulls[i], observed[gs] - TIE_TOL, side="left")
                pv = (k_ge + 1.0) / (null_size + 1.0)
                p[gs] = pv
                se[gs] = np.sqrt(pv * (1 - pv) / null_size)
                method[gs] = "monte_carlo"
    return pd.DataFrame({"p_value": p, "p_value_se": se, "p_value_method": method})


def shared_group_p_values(observed, group, n_pos, n_total, *, null_size: int = 10000, seed: int | None = 0) -> np.ndarray:
    """Conservative p-value of each group's mean AP from one shared null row per configuration.

    Every member with the same ``(n_pos, n_total)`` reuses the same
    ``null_size`` null APs (as copairs does), so the null of the group mean is
    as wide as a single AP's; ``p = (#{null >= mAP} + 1) / (null_size + 1)``.
    This was imgprof's default before 0.x and is kept as ``null="shared"``.

    Parameters
    ----------
    observed
        Observed mAP per group ``(G,)``.
    group
        Group index of each profile ``(n,)``.
    n_pos, n_total
        Each profile's positive pairs and ranked pairs ``(n,)``.
    null_size, seed
        Draws per configuration and their seed.

    Returns
    -------
    Array of ``G`` p-values.

    Examples
    --------
    >>> p = shared_group_p_values([1.0], [0, 0], [1, 1], [13, 13], null_size=4000)
    >>> bool(0.06 < p[0] < 0.1)   # the null of one AP: P(AP = 1) = 1/13
    True
    """
    import scipy.sparse as sp

    observed = np.asarray(observed, dtype=np.float64)
    group = np.asarray(group, dtype=np.int64)
    G = observed.size
    confs = np.stack([np.asarray(n_pos, dtype=np.int64), np.asarray(n_total, dtype=np.int64)], axis=1)
    uconfs, rev = np.unique(confs, axis=0, return_inverse=True)
    rev = np.asarray(rev).reshape(-1)
    nulls = null_distributions(uconfs, null_size, seed)
    counts = sp.csr_matrix((np.ones(group.size), (group, rev)), shape=(G, len(uconfs)))
    sizes = np.asarray(counts.sum(axis=1)).ravel()
    Wn = sp.diags(1.0 / sizes) @ counts
    pvals = np.empty(G)
    chunk = max(1, (1 << 22) // max(null_size, 1))
    for s in range(0, G, chunk):
        block = np.asarray(Wn[s : s + chunk] @ nulls)
        num = (block >= observed[s : s + chunk, None] - TIE_TOL).sum(axis=1)
        pvals[s : s + chunk] = (num + 1) / (null_size + 1)
    return pvals


def group_p_values(
    observed: np.ndarray,
    group: np.ndarray,
    confs: np.ndarray,
    *,
    null_size: int,
    seed: int | None,
    copairs_compat: bool = False,
) -> np.ndarray:
    """copairs 0.5's p-value of each group's mean AP (used by ``copairs_compat=True``).

    ``group[i]`` is the group of profile ``i`` (0..G-1) and ``confs[i]`` its
    ``(n_pos, total)``; the group's null mAP is the mean of its profiles'
    cached nulls — one null row per configuration, so members sharing a
    configuration reuse the same draws — and ``p = (#{null > mAP} + 1) / (null_size + 1)``
    on float32 null means. Only the copairs-compatible mode is supported; the
    default p-values come from :func:`group_null_p_values`.
    """
    if not copairs_compat:
        raise ValueError("group_p_values reproduces copairs only; use group_null_p_values for valid p-values.")
    observed = np.asarray(observed, dtype=np.float64)
    group = np.asarray(group, dtype=np.int64)
    G = observed.size
    uconfs, rev = np.unique(np.asarray(confs, dtype=np.int64), axis=0, return_inverse=True)
    rev = np.asarray(rev).reshape(-1)
    nulls = null_distributions(uconfs, null_size, seed, copairs_compat=True)
    pvals = np.empty(G, dtype=np.float64)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(G + 1))
    for g in range(G):
        idx = order[bounds[g] : bounds[g + 1]]
        null_dist = nulls[rev[idx]].mean(axis=0)
        num = (null_dist > observed[g]).sum()
        pvals[g] = (num + 1) / (null_size + 1)
    return pvals


def ap_p_values(ap, n_pos, n_total, *, null_size: int = 10000, seed: int | None = 0) -> np.ndarray:
    """Per-profile p-values ``P(null AP >= AP)`` (NaN where AP is NaN or there are no positives).

    Exact where the configuration's AP distribution can be enumerated
    (:func:`ap_distribution`), else ``(#{null >= AP} + 1) / (null_size + 1)``
    from ``null_size`` random rankings; ties count as at least as extreme.

    Parameters
    ----------
    ap
        Average precision of each profile.
    n_pos, n_total
        Number of positive pairs and of ranked pairs of each profile.
    null_size, seed
        Monte Carlo draws and seed (used where the exact null is too large).

    Returns
    -------
    Array of p-values, NaN where the AP is NaN or ``n_pos == 0``.

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
    >>> p.round(3).tolist()   # exact: P(AP >= 1) = 1/10, P(AP >= 0.2) = 5/10
    [0.1, 0.5]
    """
    ap = np.asarray(ap, dtype=np.float64)
    n_pos = np.asarray(n_pos, dtype=np.int64)
    n_total = np.asarray(n_total, dtype=np.int64)
    out = np.full(ap.shape, np.nan)
    ok = np.isfinite(ap) & (n_pos > 0)
    if ok.any():
        idx = np.arange(int(ok.sum()))
        res = group_null_p_values(ap[ok], idx, n_pos[ok], n_total[ok], null_size=null_size, seed=seed)
        out[ok] = res["p_value"].to_numpy()
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
