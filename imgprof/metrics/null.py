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

from typing import Any

import numpy as np
import pandas as pd

from ._null_draws import (
    CACHE,
    GROUP_EXACT_LIMIT,
    MEMBER_EXACT_LIMIT,
    TIE_TOL,
    ap_distribution,
    cache_put,
    clear_null_cache,
    copairs_random_ap,
    exact_class_p,
    member_draws,
    random_ap,
    random_positions,
)

__all__ = [
    "GROUP_EXACT_LIMIT",
    "MEMBER_EXACT_LIMIT",
    "TIE_TOL",
    "CACHE",
    "copairs_random_ap",
    "random_positions",
    "ap_distribution",
    "ap_p_values",
    "benjamini_hochberg",
    "clear_null_cache",
    "group_null_p_values",
    "group_p_values",
    "null_distributions",
    "random_ap",
    "shared_group_p_values",
]


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
            key: tuple[Any, ...] = ("copairs", int(seeds[i]), null_size, int(k), int(m))
            hit = CACHE.get(key) if seed is not None else None
            if hit is None:
                hit = copairs_random_ap(null_size, np.int64(k), np.int64(m), seeds[i])
                if seed is not None:
                    cache_put(key, hit)
            out[i] = hit
        return out
    out = np.empty((len(confs), null_size), dtype=np.float64)
    for i, (k, m) in enumerate(confs):
        key = ("stable", seed, null_size, int(k), int(m))
        hit = CACHE.get(key) if seed is not None else None
        if hit is None:
            rng = np.random.default_rng(None if seed is None else [int(seed), int(k), int(m)])
            hit = random_ap(null_size, int(k), int(m), rng)
            if seed is not None:
                cache_put(key, hit)
        out[i] = hit
    return out

def group_null_p_values(
    observed: Any,
    group: Any,
    n_pos: Any,
    n_total: Any,
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
    observed, group, n_pos, n_total, sizes = _check_group_args(observed, group, n_pos, n_total, null_size)
    null_size = int(null_size)
    confs, cls_keys, cls_groups = _null_classes(group, n_pos, n_total, sizes)
    G = observed.size
    p = np.empty(G)
    se = np.zeros(G)
    method = np.empty(G, dtype=object)
    sums = observed * sizes
    mc_classes = []
    for c, members in enumerate(cls_keys):
        gs = cls_groups[c]
        res = None if exact is False else _exact_p(confs, members, sums[gs], required=bool(exact))
        if res is not None:
            p[gs] = res
            method[gs] = "exact"
        else:
            mc_classes.append(c)
    if mc_classes:
        _monte_carlo_p(observed, confs, cls_keys, cls_groups, mc_classes, null_size, seed, out=(p, se, method))
    return pd.DataFrame({"p_value": p, "p_value_se": se, "p_value_method": method})


def _check_group_args(observed: Any, group: Any, n_pos: Any, n_total: Any, null_size: Any) -> tuple[np.ndarray, ...]:
    """Arrays of :func:`group_null_p_values`, checked, and the size of each group."""
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
    if int(null_size) < 1:
        raise ValueError(f"null_size must be >= 1, got {int(null_size)}.")
    sizes = np.bincount(group, minlength=G)
    if (sizes == 0).any():
        raise ValueError("every group needs at least one profile.")
    return observed, group, n_pos, n_total, sizes


def _null_classes(group: np.ndarray, n_pos: np.ndarray, n_total: np.ndarray,
                  sizes: np.ndarray) -> tuple[np.ndarray, list[tuple[int, ...]], list[np.ndarray]]:
    """Configurations, and the classes of groups sharing a null (same multiset of configurations).

    Returns the unique ``(n_pos, n_total)`` rows, each class's sorted configuration ids and the groups of each class.
    """
    G = sizes.size
    confs, cid = np.unique(np.stack([n_pos, n_total], axis=1), axis=0, return_inverse=True)
    cid = np.asarray(cid).reshape(-1)
    order = np.lexsort((cid, group))
    g_s, c_s = group[order], cid[order]
    starts = np.searchsorted(g_s, np.arange(G))
    member_codes = c_s.astype(np.int64)
    keys = [tuple(member_codes[starts[g] : starts[g] + sizes[g]].tolist()) for g in range(G)]
    cls_codes, cls_keys = pd.factorize(pd.Series(keys, dtype=object))
    n_cls = len(cls_keys)
    cls_order = np.argsort(cls_codes, kind="stable")
    cls_bounds = np.searchsorted(cls_codes[cls_order], np.arange(n_cls + 1))
    groups = [cls_order[cls_bounds[c] : cls_bounds[c + 1]] for c in range(n_cls)]
    return confs, list(cls_keys), groups


def _exact_p(confs: np.ndarray, members: tuple[int, ...], sums: np.ndarray, *, required: bool) -> np.ndarray | None:
    """Exact p-values of one class (``None`` when too large; ``ValueError`` then if ``required``)."""
    dists = [ap_distribution(*confs[j]) for j in members]
    res = exact_class_p(dists, sums) if all(d is not None for d in dists) else None
    if res is None and required:
        raise ValueError(
            f"exact=True: the null of a group with configurations {[tuple(confs[j]) for j in members]} "
            f"is too large to enumerate (limits MEMBER_EXACT_LIMIT={MEMBER_EXACT_LIMIT}, "
            f"GROUP_EXACT_LIMIT={GROUP_EXACT_LIMIT})."
        )
    return res


def _slots(members: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(configuration, slot)`` of each member: repeated configurations use successive independent streams."""
    seen: dict[int, int] = {}
    out = []
    for j in members:
        s_ = seen.get(j, 0)
        seen[j] = s_ + 1
        out.append((j, s_))
    return out


def _monte_carlo_p(observed: np.ndarray, confs: np.ndarray, cls_keys: list[tuple[int, ...]], cls_groups: list[np.ndarray],
                   mc_classes: list[int], null_size: int, seed: int | None,
                   out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Monte Carlo p-values of the classes ``mc_classes``, written into ``out = (p, se, method)``."""
    p, se, method = out
    # rows of the draw matrix: one per (configuration, slot) used by a Monte Carlo class
    rows: dict[tuple[int, int], int] = {}
    for c in mc_classes:
        for js in _slots(cls_keys[c]):
            rows.setdefault(js, len(rows))
    draws = np.empty((len(rows), null_size))
    for (j, s_), r in rows.items():
        draws[r] = member_draws(int(confs[j][0]), int(confs[j][1]), null_size, s_, seed)
    chunk = max(1, (1 << 22) // null_size)
    for b in range(0, len(mc_classes), chunk):
        block = mc_classes[b : b + chunk]
        nulls = np.zeros((len(block), null_size))
        for i, c in enumerate(block):
            for js in _slots(cls_keys[c]):
                nulls[i] += draws[rows[js]]
            nulls[i] /= len(cls_keys[c])
        nulls.sort(axis=1)
        for i, c in enumerate(block):
            gs = cls_groups[c]
            k_ge = null_size - np.searchsorted(nulls[i], observed[gs] - TIE_TOL, side="left")
            pv = (k_ge + 1.0) / (null_size + 1.0)
            p[gs] = pv
            se[gs] = np.sqrt(pv * (1 - pv) / null_size)
            method[gs] = "monte_carlo"


def shared_group_p_values(
    observed: Any, group: Any, n_pos: Any, n_total: Any, *, null_size: int = 10000, seed: int | None = 0
) -> np.ndarray:
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


def ap_p_values(ap: Any, n_pos: Any, n_total: Any, *, null_size: int = 10000, seed: int | None = 0) -> np.ndarray:
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


def benjamini_hochberg(p: Any) -> np.ndarray:
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
