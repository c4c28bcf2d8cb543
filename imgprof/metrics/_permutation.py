"""Label-permutation p-values for phenotypic activity (private).

Null hypothesis: a perturbation is inactive, i.e. its wells are exchangeable
with the negative-control wells they are ranked against. Under it, which of
the wells of the pool *(perturbation wells + their controls)* carry the
perturbation's label is uniformly random — within each control stratum
(``sameby_controls``, e.g. the plate), so that every query keeps its number of
negatives. The p-value is the share of labelings whose mAP is at least the
observed one (the observed labeling included).

* **exact** when the number of labelings ``prod_s comb(n_s, r_s)`` is at most
  ``null_size``: every labeling is enumerated, ``p = #{mAP* >= mAP} / #labelings``;
* **monte_carlo** otherwise: ``null_size`` random labelings,
  ``p = (#{mAP* >= mAP} + 1) / (null_size + 1)`` — valid at any ``null_size``.

The test is exact (valid at every level) whatever the distribution of the
profiles: it does not assume that the replicates' APs are independent, which
they are not (two replicates share their pair similarity).

Each labeling's mAP is computed with the AP kernel's rules: similarities as
float32 keys ``1 - sim``, positives before negatives at equal key; a query
with no positive or no negative is left out of the mean.
"""

from __future__ import annotations

from itertools import combinations, product
from math import comb
from typing import Any

import numpy as np

from ._ap_kernels import orderable
from ._similarity import Prepared, similarity
from .null import TIE_TOL, random_positions

#: pools larger than this (perturbation wells + controls they are ranked against) are not permuted
#: (cost grows with the square of the pool; such perturbations get the conservative shared null).
MAX_POOL = 600


def _labelings_exact(members: list[np.ndarray], strata_r: np.ndarray) -> np.ndarray:
    """Every labeling: ``r_s`` of the pool positions ``members[s]`` in each stratum (columns by stratum)."""
    per = [[tuple(mb[list(c)]) for c in combinations(range(mb.size), int(r))] for mb, r in zip(members, strata_r)]
    rows = [sum(parts, ()) for parts in product(*per)]
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), -1)


def _labelings_random(rng: np.random.Generator, n: int, members: list[np.ndarray], strata_r: np.ndarray) -> np.ndarray:
    """``n`` uniformly random labelings (``r_s`` of ``members[s]`` in each stratum)."""
    cols = []
    for mb, r in zip(members, strata_r):
        if r == mb.size:
            cols.append(np.broadcast_to(mb, (n, mb.size)))
        else:
            cols.append(mb[random_positions(rng, n, int(r), int(mb.size))])
    return np.concatenate(cols, axis=1).astype(np.int64)


def labeling_map(
    T: np.ndarray, K: np.ndarray, POS: np.ndarray, NEG: np.ndarray, LTN: np.ndarray, nneg: np.ndarray
) -> np.ndarray:
    """mAP of each labeling (rows of ``T``: pool positions of the labelled wells).

    ``K``: float32 ranking keys (lower = more similar); ``POS[i, l]``: ``l`` may
    be a positive of ``i`` when both are labelled; ``NEG[i, l]``: ``l`` is a
    negative of ``i`` when unlabelled; ``LTN[i, j] = #{l: NEG[i, l], K[i, l] < K[i, j]}``;
    ``nneg[i] = NEG[i].sum()``.
    """
    N, R = T.shape
    if R < 2:
        return np.full(N, np.nan)
    oi = np.array([[b for b in range(R) if b != a] for a in range(R)])  # (R, R-1) others of each member
    P = K.shape[0]
    flat = (T[:, :, None] * P + T[:, oi]).reshape(N, R, R - 1)  # pair indices into the P x P matrices
    k = K.ravel()[flat]
    # order each query's labelled others by key (stable: the kernel's order among tied positives)
    order = np.argsort(k, axis=-1, kind="stable")
    flat = np.take_along_axis(flat, order, axis=-1)
    k = np.take_along_axis(k, order, axis=-1)
    pos = POS.ravel()[flat]
    neg = NEG.ravel()[flat]
    # m: positives ranked before (ties in order); labelled negatives-eligible others strictly more similar
    m = np.cumsum(pos, axis=-1, dtype=np.int32) - pos
    cneg = np.cumsum(neg, axis=-1, dtype=np.int32) - neg  # before, in sorted order
    idx = np.broadcast_to(np.arange(R - 1), k.shape)
    new_run = np.ones(k.shape, dtype=bool)
    new_run[..., 1:] = k[..., 1:] != k[..., :-1]
    start = np.maximum.accumulate(np.where(new_run, idx, 0), axis=-1)  # first index of each tie run
    cnt = LTN.ravel()[flat] - np.take_along_axis(cneg, start, axis=-1)
    prec = np.where(pos, (m + 1.0) / (m + 1.0 + cnt), 0.0)
    npos = pos.sum(-1)
    nn = nneg[T] - neg.sum(-1)
    ok = (npos > 0) & (nn > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(ok, prec.sum(-1) / np.maximum(npos, 1), 0.0)
        return ap.sum(1) / ok.sum(1)


def _less_counts(K: np.ndarray, NEG: np.ndarray) -> np.ndarray:
    """``LTN[i, j] = #{l: NEG[i, l], K[i, l] < K[i, j]}`` for every pair, by one batched search."""
    P = K.shape[0]
    if P <= 128:
        Kn = np.where(NEG, K, np.float32(np.inf))
        return (Kn[:, None, :] < K[:, :, None]).sum(-1, dtype=np.int32)
    Kn = np.sort(np.where(NEG, K, np.float32(np.inf)), axis=1)
    rows = (np.arange(P, dtype=np.uint64) << np.uint64(32))[:, None]
    flat = (rows | orderable(Kn)).ravel()
    q = (rows | orderable(K)).ravel()
    out = np.searchsorted(flat, q, side="left").reshape(P, P).astype(np.int64)
    return out - (np.arange(P, dtype=np.int64) * P)[:, None]


def _control_keys(prepared: Prepared, metric: Any, c_sorted: np.ndarray, limit: int) -> np.ndarray | None:
    """Float32 keys ``1 - sim`` among the controls, computed once when there are at most ``limit`` of them."""
    if callable(metric) or c_sorted.size > limit:
        return None
    CC = np.asarray(similarity(prepared, prepared, c_sorted, c_sorted, metric)).astype(np.float32)
    np.subtract(np.float32(1), CC, out=CC)
    return CC


def _pool(wells: np.ndarray, stratum: np.ndarray, c_str: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The group's wells sorted by stratum, its strata, wells per stratum and the positions of their controls."""
    ws = stratum[wells]
    strata, r_s = np.unique(ws, return_counts=True)
    wells = wells[np.argsort(ws, kind="stable")]
    parts = [np.arange(np.searchsorted(c_str, s, "left"), np.searchsorted(c_str, s, "right")) for s in strata]
    cpos = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return wells, strata, r_s, cpos


def _pool_keys(prepared: Prepared, metric: Any, wells: np.ndarray, pool: np.ndarray, cpos: np.ndarray,
               CC: np.ndarray | None) -> np.ndarray:
    """``(P, P)`` float32 keys of the pool (wells first), reusing the control block when cached."""
    P, R = pool.size, wells.size
    K = np.empty((P, P), dtype=np.float32)
    if CC is not None:
        KW = np.asarray(similarity(prepared, prepared, wells, pool, metric)).astype(np.float32)
        np.subtract(np.float32(1), KW, out=KW)
        K[:R] = KW
        K[R:, :R] = KW[:, R:].T
        K[R:, R:] = CC[np.ix_(cpos, cpos)]
    else:
        K[:] = np.asarray(similarity(prepared, prepared, pool, pool, metric))
        np.subtract(np.float32(1), K, out=K)
    return K


def _pair_masks(ps: np.ndarray, pool: np.ndarray, posdiff: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``POS`` (may be a positive pair) and ``NEG`` (same stratum) masks over the pool, self excluded."""
    P = pool.size
    notself = ~np.eye(P, dtype=bool)
    NEG = (ps[:, None] == ps[None, :]) & notself
    if posdiff is None:
        return notself, NEG
    pdv = posdiff[pool]
    return notself & (pdv[:, None, :] != pdv[None, :, :]).all(-1), NEG


def _group_p(o: float, arrays: tuple[np.ndarray, ...], members: list[np.ndarray], r_s: np.ndarray, R: int, *,
             null_size: int, rng_seed: list[int] | None) -> tuple[float, float, str]:
    """p-value of the observed mAP ``o`` over every labeling (exact) or ``null_size`` random ones."""
    n_lab = 1
    for mb, r in zip(members, r_s):
        n_lab *= comb(int(mb.size), int(r))
    if n_lab <= null_size:
        null = labeling_map(_labelings_exact(members, r_s), *arrays)
        null = np.where(np.isfinite(null), null, -np.inf)
        return float((null >= o - TIE_TOL).sum() / n_lab), 0.0, "exact"
    rng = np.random.default_rng(rng_seed)
    null = np.empty(null_size)
    step = max(1, (1 << 21) // max(1, R * R))
    for s0 in range(0, null_size, step):
        n = min(step, null_size - s0)
        null[s0 : s0 + n] = labeling_map(_labelings_random(rng, n, members, r_s), *arrays)
    null = np.where(np.isfinite(null), null, -np.inf)
    pv = ((null >= o - TIE_TOL).sum() + 1.0) / (null_size + 1.0)
    return float(pv), float(np.sqrt(pv * (1 - pv) / null_size)), "monte_carlo"


def permutation_p_values(
    prepared: Prepared,
    metric: Any,
    groups: list[np.ndarray],
    control_rows: np.ndarray,
    stratum: np.ndarray,
    posdiff: np.ndarray | None,
    *,
    null_size: int,
    seed: int | None,
    max_pool: int = MAX_POOL,
    control_cache_limit: int = 4096,
    group_seeds: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Permutation p-value of each group's mAP against its controls.

    Parameters
    ----------
    prepared, metric
        Prepared profile matrix (all rows) and the similarity metric.
    groups
        Row indices of each group's (valid) wells.
    control_rows
        Rows of the (valid) negative controls.
    stratum
        Control stratum code of every row (``sameby_controls`` values; all 0 when none).
    posdiff
        ``(n_rows, n_cols)`` codes of the ``pos_diffby`` columns (a positive pair must
        differ in every one), or ``None``.
    null_size, seed
        Labelings drawn when they cannot all be enumerated; seed of the draws.
    max_pool
        Groups whose pool is larger get NaN (the caller falls back to another null).
    control_cache_limit
        With at most this many controls their similarity matrix is computed once
        (float32); otherwise each group's pool is computed on its own.
    group_seeds
        One integer per group mixed into its generator (default: its position),
        so that a group's draws do not depend on the other groups of the call.

    Returns
    -------
    ``(observed_map, p_value, p_value_se, method)`` arrays, one entry per group;
    ``method`` is ``"exact"``, ``"monte_carlo"`` or ``""`` (not computed).
    """
    G = len(groups)
    obs = np.full(G, np.nan)
    p = np.full(G, np.nan)
    se = np.zeros(G)
    method = np.full(G, "", dtype=object)
    c_sorted = control_rows[np.argsort(stratum[control_rows], kind="stable")]
    c_str = stratum[c_sorted]
    CC = _control_keys(prepared, metric, c_sorted, control_cache_limit)
    for g, wells in enumerate(groups):
        wells = np.asarray(wells, dtype=np.int64)
        if wells.size < 2:
            continue
        wells, strata, r_s, cpos = _pool(wells, stratum, c_str)
        pool = np.concatenate([wells, c_sorted[cpos]])
        if max_pool < pool.size:
            continue
        K = _pool_keys(prepared, metric, wells, pool, cpos, CC)
        ps = stratum[pool]
        POS, NEG = _pair_masks(ps, pool, posdiff)
        arrays = (K, POS, NEG, _less_counts(K, NEG), NEG.sum(1))
        R = wells.size
        obs[g] = o = labeling_map(np.arange(R)[None, :], *arrays)[0]
        if not np.isfinite(o):
            continue
        members = [np.flatnonzero(ps == s) for s in strata]  # pool positions per stratum (wells first)
        gs = g if group_seeds is None else int(group_seeds[g])
        p[g], se[g], method[g] = _group_p(o, arrays, members, r_s, R, null_size=null_size,
                                          rng_seed=None if seed is None else [int(seed), gs, 23])
    return obs, p, se, method
