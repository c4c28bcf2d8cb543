"""Average precision (AP) and mean average precision (mAP) on AnnData, copairs-compatible.

For each query profile, the profiles forming a *positive* pair with it and those
forming a *negative* pair with it are ranked by similarity (most similar first)
and the average precision of the positives is computed. Pairs follow copairs
0.5 (``pos_sameby``/``pos_diffby``/``neg_sameby``/``neg_diffby``), and so do
ties (at equal similarity, rounded to float32 as copairs stores it, positives
rank before negatives) and which rows get NaN.

Two layers:

* :func:`average_precision_kernel` — arrays + a metadata DataFrame in, a
  DataFrame out. No AnnData. Used by ``ip.bench`` and ``ip.mm``.
* :func:`average_precision`, :func:`mean_average_precision`,
  :func:`phenotypic_activity`, :func:`phenotypic_consistency` — AnnData API.

Similarities are computed block by block with matrix products; only the
candidate columns of a block of queries are ever materialised, so memory is
bounded by ``max_block_elements`` whatever the number of profiles.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._core.provenance import log_step
from .._core.validation import (
    as_list,
    check_bool,
    check_choice,
    check_df_keys,
    check_float,
    check_int,
    check_new_obs_key,
    check_obs_keys,
    get_matrix,
    is_dask,
    resolve_mask,
    start,
)
from . import _pairs
from ._similarity import check_metric, pair_similarity, prepare, similarity

AP_COLUMNS = ("n_pos_pairs", "n_total_pairs", "average_precision", "normalized_average_precision")


class RetrievalWarning(UserWarning):
    """Profiles that get a NaN average precision (no positives, no negatives, invalid vector)."""


@dataclass(frozen=True)
class RetrievalResult:
    """Outcome of :func:`phenotypic_activity` / :func:`phenotypic_consistency` with ``return_ap=True``.

    Attributes
    ----------
    map
        One row per group (perturbation or label): mAP, p-value, corrected
        p-value, ``below_corrected_p`` … — the table returned without ``return_ap``.
    ap
        One row per scored profile (or (profile, label)): ``n_pos_pairs``,
        ``n_total_pairs``, ``average_precision``, ``normalized_average_precision``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> res = ip.metrics.phenotypic_activity(adata, "Metadata_broad_sample", null_size=200, return_ap=True)
    >>> res
    RetrievalResult(map: 58 groups, ap: 384 profiles)
    >>> int(res.map["below_corrected_p"].sum()) <= len(res.map), "average_precision" in res.ap
    (True, True)
    """

    map: pd.DataFrame
    ap: pd.DataFrame

    def __repr__(self) -> str:
        return f"RetrievalResult(map: {len(self.map)} groups, ap: {len(self.ap)} profiles)"

    def __iter__(self):
        raise TypeError(
            "RetrievalResult is not a tuple: use result.map (per group) and result.ap (per profile); "
            "before imgprof 0.x, return_ap=True returned the tuple (ap, map)."
        )


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _orderable(f: np.ndarray) -> np.ndarray:
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


def expected_ap(n_pos, n_neg) -> np.ndarray:
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


def normalized_ap(ap, n_pos, n_total) -> np.ndarray:
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


def _block_keys(pq, pc, metric, qrows, crows, M):
    """Keys of the entries of mask ``M`` (rows ``qrows`` × columns ``crows``), dense or paired."""
    r, c = np.nonzero(M)
    dense = callable(metric) or r.size >= _DENSE_MIN_FILL * M.size
    if dense:
        return r, c, _key(similarity(pq, pc, qrows, crows, metric))[r, c]
    return r, c, _key(pair_similarity(pq, pc, qrows[r], crows[c], metric))


def _ap_units(ur, rows, kp, n_units, neg_r, neg_k, n_rows):
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
        flat = np.sort((neg_r.astype(np.uint64) << np.uint64(32)) | _orderable(neg_k))
        nneg = np.bincount(neg_r, minlength=n_rows)
        row_start = np.cumsum(nneg) - nneg
        q = (rows.astype(np.uint64) << np.uint64(32)) | _orderable(kp)
        cnt = np.searchsorted(flat, q, side="left").astype(np.int64) - row_start[rows]
    else:
        cnt = np.zeros(ur.size, dtype=np.int64)
    prec = (m + 1.0) / (m + 1.0 + cnt)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.bincount(ur, weights=prec, minlength=n_units) / npos


def _ap_dense(pr, pk, Kn, n_rows):
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
        flat = ((np.arange(n_rows, dtype=np.uint64)[:, None] << np.uint64(32)) | _orderable(Kn)).ravel()
        q = (pr.astype(np.uint64) << np.uint64(32)) | _orderable(pk)
        cnt = np.searchsorted(flat, q, side="left").astype(np.int64) - pr.astype(np.int64) * W
    prec = (m + 1.0) / (m + 1.0 + cnt)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.bincount(pr, weights=prec, minlength=n_rows) / npos


# ---------------------------------------------------------------------------
# array-level kernel
# ---------------------------------------------------------------------------


def average_precision_kernel(
    X,
    obs: pd.DataFrame,
    pos_sameby=None,
    pos_diffby=None,
    neg_sameby=None,
    neg_diffby=None,
    *,
    metric: str | Callable = "cosine",
    reference_X=None,
    reference_obs: pd.DataFrame | None = None,
    multilabel: str | None = None,
    multilabel_sep: str | None = "|",
    query: np.ndarray | None = None,
    dtype=np.float64,
    max_block_elements: int = 2**23,
    warn: bool = True,
) -> pd.DataFrame:
    """Average precision of every query profile (array-level kernel, no AnnData).

    Parameters
    ----------
    X
        Profiles, ``(n, d)`` array (rows align with ``obs``).
    obs
        Metadata, one row per profile.
    pos_sameby, pos_diffby, neg_sameby, neg_diffby
        Column lists defining positive and negative pairs (copairs semantics):
        a pair shares every ``*_sameby`` value and differs in every
        ``*_diffby`` value. A dict ``{"all": [...], "any": [...]}`` adds
        "at least one of these columns" conditions.
    metric
        ``"cosine"`` (default), ``"abs_cosine"``, ``"correlation"``,
        ``"euclidean"``, ``"manhattan"``, ``"chebyshev"`` (distances become
        ``1/(1+d)``), or a callable ``f(A, B)`` returning the similarity matrix.
    reference_X, reference_obs
        Candidates from another set (e.g. another modality in a shared space):
        queries are rows of ``X``, positives/negatives are rows of
        ``reference_X``. Pair columns must exist in both metadata tables.
    multilabel
        Column holding label sets (``"a|b"`` strings split on
        ``multilabel_sep``, or lists). In a sameby list it means "share a
        label", in a diffby list "share no label". When it is in
        ``pos_sameby``, AP is computed per (profile, label), as copairs'
        ``multilabel.average_precision`` does, and the output has one row per
        label with the column holding that single label.
    query
        Boolean mask of rows that get an AP (default: all). The others still
        serve as candidates and get NaN.
    dtype
        Precision of the similarity products (``float64`` default; ``float32``
        is about twice as fast and may reorder near-ties below 1e-7).
    max_block_elements
        Upper bound on query × candidate elements held at once.
    warn
        Emit :class:`RetrievalWarning` summarising NaN APs.
    multilabel_sep
        Separator of multi-valued labels in string columns (``"A|B"``); ``None`` = none.

    Returns
    -------
    DataFrame with ``obs``'s columns plus ``n_pos_pairs``, ``n_total_pairs``,
    ``average_precision`` and ``normalized_average_precision``, indexed like
    ``obs`` (repeated per label in per-label multi-label mode).

    Notes
    -----
    A row gets NaN AP when it has no positive pair (as copairs), when it has
    positives but no negative pair (copairs would report 1.0; that value is
    meaningless, so it is NaN here, with a warning), or when its profile is
    invalid (NaN/inf features, zero norm under cosine, zero variance under
    correlation: such rows are also removed from every other row's ranking).

    Examples
    --------
    >>> import imgprof as ip
    >>> a = ip.datasets.simulate(n_plates=2, n_perturbations=8, n_moa=2, n_features=30, seed=0)
    >>> ap = average_precision_kernel(a.X, a.obs, ["Metadata_Perturbation"], [], [], ["Metadata_Perturbation"],
    ...                               query=(a.obs["Metadata_control_type"] == "trt").to_numpy())
    >>> trt = ap["Metadata_control_type"] == "trt"
    >>> int(ap.loc[trt, "n_pos_pairs"].max()), bool(ap.loc[~trt, "average_precision"].isna().all())
    (1, True)
    """
    check_metric(metric)
    pos_s = _pairs.as_spec(pos_sameby, param="pos_sameby")
    pos_d = _pairs.as_spec(pos_diffby, param="pos_diffby")
    neg_s = _pairs.as_spec(neg_sameby, param="neg_sameby")
    neg_d = _pairs.as_spec(neg_diffby, param="neg_diffby")
    _pairs.check_pair_definition(pos_s, pos_d, what="positive pairs")
    _pairs.check_pair_definition(neg_s, neg_d, what="negative pairs")
    columns = list(dict.fromkeys(
        _pairs.spec_columns(pos_s) + _pairs.spec_columns(pos_d) + _pairs.spec_columns(neg_s) + _pairs.spec_columns(neg_d)
    ))
    if not isinstance(obs, pd.DataFrame):
        raise TypeError(f"obs must be a pandas DataFrame, got {type(obs).__name__}.")
    check_df_keys(obs, columns, param="pair columns", where="the query metadata")
    same_set = reference_X is None
    if not same_set:
        if reference_obs is None:
            raise ValueError("reference_X needs reference_obs (its metadata).")
        check_df_keys(reference_obs, columns, param="pair columns", where="the reference metadata")
    if multilabel is not None and multilabel not in columns:
        raise ValueError(f"multilabel={multilabel!r} is not one of the pair columns {columns}.")
    expand = multilabel is not None and multilabel in pos_s["all"]
    if multilabel is not None and multilabel in pos_s["any"]:
        raise ValueError("multilabel column in pos_sameby['any'] is not supported; put it in the plain list.")

    Xq = X.compute() if is_dask(X) else X
    nq = Xq.shape[0] if hasattr(Xq, "shape") else len(Xq)
    if nq != len(obs):
        raise ValueError(f"X has {nq} rows but obs has {len(obs)}.")
    pq = prepare(Xq, metric, dtype)
    if same_set:
        pc = pq
        obs_c = None
    else:
        Xc = reference_X.compute() if is_dask(reference_X) else reference_X
        pc = prepare(Xc, metric, dtype)
        if pc.X.shape[0] != len(reference_obs):
            raise ValueError(f"reference_X has {pc.X.shape[0]} rows but reference_obs has {len(reference_obs)}.")
        if pc.X.shape[1] != pq.X.shape[1]:
            raise ValueError(
                f"query profiles have {pq.X.shape[1]} features but the reference has {pc.X.shape[1]}; retrieval "
                "across sets needs a shared feature space (same features, or a joint embedding in .obsm)."
            )
        obs_c = reference_obs
    qmask = np.ones(nq, dtype=bool) if query is None else np.asarray(query, dtype=bool)
    if qmask.shape != (nq,):
        raise ValueError(f"query mask has shape {qmask.shape}, expected ({nq},).")

    # restrict to valid rows
    vq = np.flatnonzero(~pq.invalid)
    vc = vq if same_set else np.flatnonzero(~pc.invalid)
    if vq.size == 0 or vc.size == 0:
        raise ValueError("no valid profile left: every row has NaN/inf features or a zero-norm vector.")
    enc = _pairs.encode(
        obs.iloc[vq],
        None if same_set else obs_c.iloc[vc],
        columns,
        multilabel=multilabel,
        multilabel_sep=multilabel_sep,
        order_first=pos_s["all"],
        where="obs",
        where_ref="reference_obs",
    )
    skip = multilabel if expand else None
    n_combo = enc.n_combos
    all_b = np.arange(n_combo)
    size = enc.size_c

    # ---- counts per query combo (cheap, combo level) ----
    uq_all = np.unique(enc.combo_q)
    npos_combo = np.zeros(n_combo, dtype=np.int64)
    nneg_combo = np.zeros(n_combo, dtype=np.int64)
    npos_label = {}  # combo -> array over its labels (expand mode)
    step = max(1, max_block_elements // max(n_combo, 1))
    for s0 in range(0, uq_all.size, step):
        a = uq_all[s0 : s0 + step]
        Mp = _pairs.combo_mask(enc, pos_s, pos_d, a, all_b, skip=skip)
        Mn = _pairs.combo_mask(enc, neg_s, neg_d, a, all_b)
        self_p = Mp[np.arange(a.size), a] if same_set else np.zeros(a.size, bool)
        self_n = Mn[np.arange(a.size), a] if same_set else np.zeros(a.size, bool)
        nneg_combo[a] = _weighted_count(Mn, size) - self_n
        if expand:
            Lw = np.asarray((enc.combo_labels.T @ (Mp * size).T).T)  # (|a|, n_labels)
            for k, c in enumerate(a):
                labs = enc.combo_labels[c].indices
                npos_label[int(c)] = (Lw[k, labs] - self_p[k]).astype(np.int64)
        else:
            npos_combo[a] = _weighted_count(Mp, size) - self_p

    # ---- units ----
    cq = enc.combo_q
    if expand:
        lab_lists = [enc.combo_labels[c].indices for c in range(n_combo)]
        nlab = np.array([len(lab_lists[c]) for c in cq], dtype=np.int64)
        unit_vrow = np.repeat(np.arange(vq.size), nlab)
        unit_label = np.concatenate([lab_lists[c] for c in cq]) if vq.size else np.array([], dtype=np.int64)
        unit_npos = np.concatenate([npos_label[int(c)] for c in cq])
    else:
        unit_vrow = np.arange(vq.size)
        unit_label = None
        unit_npos = npos_combo[cq]
    unit_nneg = nneg_combo[cq][unit_vrow]
    unit_ap = np.full(unit_vrow.size, np.nan)
    unit_query = qmask[vq][unit_vrow]
    active = unit_query & (unit_npos > 0) & (unit_nneg > 0)

    # ---- blocked AP ----
    act_rows = np.unique(unit_vrow[active])
    if act_rows.size:
        # order rows so that blocks share candidates
        act_rows = act_rows[np.lexsort((act_rows, cq[act_rows]))]
        unit_start = np.concatenate([[0], np.cumsum(np.bincount(unit_vrow, minlength=vq.size))])
        loc_buf = np.full(vc.size, -1, dtype=np.int64)
        # combo-level masks are (block combos x all combos): bound them too
        b_cap = max(1, 4 * max_block_elements // max(n_combo, 1))
        B = max(1, min(act_rows.size, max_block_elements // max(vc.size, 1), b_cap))
        i0 = 0
        while i0 < act_rows.size:
            R = act_rows[i0 : i0 + B]
            a, inv = np.unique(cq[R], return_inverse=True)
            Mp = _pairs.combo_mask(enc, pos_s, pos_d, a, all_b, skip=skip)
            if expand:
                Mp &= _pairs.label_overlap(enc, a, all_b)
            Mn = _pairs.combo_mask(enc, neg_s, neg_d, a, all_b)
            pos_cc = np.flatnonzero(Mp.any(axis=0))
            neg_cc = np.flatnonzero(Mn.any(axis=0))
            prow = enc.rows_of(pos_cc)  # positive candidates (indices into valid candidate rows)
            nrow = enc.rows_of(neg_cc)  # negative candidates
            C = prow.size + nrow.size
            if R.size > 1 and R.size * C > 2 * max_block_elements:
                B = max(1, max_block_elements // max(C, 1))
                continue
            qrows = vq[R]
            # positives: (row, candidate) mask, self excluded
            P = Mp[:, enc.combo_c[prow]][inv]
            if same_set:
                _clear_self(P, R, prow, loc_buf)
            # negatives: combo-level mask first; rows only if not all true
            Nc = Mn[:, enc.combo_c[nrow]]  # (|a|, Cn)
            n_true = Nc.sum(axis=1)[inv]
            all_neg = bool((n_true == nrow.size).all())
            self_loc = None
            if same_set:
                loc_buf[nrow] = np.arange(nrow.size)
                self_loc = loc_buf[R]
                loc_buf[nrow] = -1
            dense_neg = callable(metric) or n_true.sum() >= _DENSE_MIN_FILL * R.size * max(nrow.size, 1)
            if not expand and dense_neg:
                Kn = _key(similarity(pq, pc, qrows, vc[nrow], metric))
                if not all_neg:
                    Kn[~Nc[inv]] = np.inf
                if self_loc is not None:
                    hit = np.flatnonzero(self_loc >= 0)
                    Kn[hit, self_loc[hit]] = np.inf
                pr, _, pk = _block_keys(pq, pc, metric, qrows, vc[prow], P)
                ap = _ap_dense(pr, pk, Kn, R.size)
                keep = active[R]
                unit_ap[R[keep]] = ap[keep]
            else:
                N = Nc[inv]
                if self_loc is not None:
                    hit = np.flatnonzero(self_loc >= 0)
                    N[hit, self_loc[hit]] = False
                neg_r, _, neg_k = _block_keys(pq, pc, metric, qrows, vc[nrow], N)
                if expand:
                    counts = unit_start[R + 1] - unit_start[R]
                    uidx = np.repeat(unit_start[R], counts) + (
                        np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
                    )
                    labs_blk, lab_local = np.unique(unit_label[uidx], return_inverse=True)
                    Hc = np.asarray(enc.combo_labels[enc.combo_c[prow]][:, labs_blk].toarray() > 0)  # (Cp, L_blk)
                    pr, pc_, pk = _block_keys(pq, pc, metric, qrows, vc[prow], P)
                    # expand each positive (row, col) to the units of that row, keep those whose label the col carries
                    first_unit = np.concatenate([[0], np.cumsum(counts)])
                    rep = counts[pr]
                    e_row = np.repeat(pr, rep)
                    e_col = np.repeat(pc_, rep)
                    e_key = np.repeat(pk, rep)
                    e_unit = np.repeat(first_unit[pr], rep) + (np.arange(rep.sum()) - np.repeat(np.cumsum(rep) - rep, rep))
                    has = Hc[e_col, lab_local[e_unit]]
                    ap = _ap_units(e_unit[has], e_row[has], e_key[has], uidx.size, neg_r, neg_k, R.size)
                    keep = active[uidx]
                    unit_ap[uidx[keep]] = ap[keep]
                else:
                    pr, _, pk = _block_keys(pq, pc, metric, qrows, vc[prow], P)
                    ap = _ap_units(pr, pr, pk, R.size, neg_r, neg_k, R.size)
                    keep = active[R]
                    unit_ap[R[keep]] = ap[keep]
            i0 += R.size
            if C:
                B = max(1, min(2 * B, max_block_elements // C, b_cap))

    # ---- assemble ----
    total = unit_npos + unit_nneg
    if expand:
        rows_full = vq[unit_vrow]
        invalid_rows = np.flatnonzero(pq.invalid)
        out = obs.iloc[np.concatenate([rows_full, invalid_rows])].copy()
        labels_col = np.concatenate([enc.label_names[unit_label], obs[multilabel].iloc[invalid_rows].astype(object).to_numpy()])
        out[multilabel] = labels_col
        npp = np.concatenate([unit_npos, np.zeros(invalid_rows.size, np.int64)])
        ntp = np.concatenate([total, np.zeros(invalid_rows.size, np.int64)])
        apv = np.concatenate([unit_ap, np.full(invalid_rows.size, np.nan)])
        order = np.argsort(np.concatenate([rows_full, invalid_rows]), kind="stable")
        out = out.iloc[order]
        npp, ntp, apv = npp[order], ntp[order], apv[order]
    else:
        out = obs.copy()
        npp = np.zeros(nq, np.int64)
        ntp = np.zeros(nq, np.int64)
        apv = np.full(nq, np.nan)
        npp[vq] = unit_npos
        ntp[vq] = total
        apv[vq] = unit_ap
    out["n_pos_pairs"] = npp
    out["n_total_pairs"] = ntp
    out["average_precision"] = apv
    out["normalized_average_precision"] = normalized_ap(apv, npp, ntp)

    if not np.isfinite(apv).any():
        pos_total = int(unit_npos.sum())
        neg_total = int(unit_nneg.sum())
        raise ValueError(
            "average_precision: no profile got an AP "
            f"({pos_total} positive and {neg_total} negative pair memberships found). "
            f"Check the pair definition: pos_sameby={pos_s}, pos_diffby={pos_d}, neg_sameby={neg_s}, neg_diffby={neg_d}."
        )
    if warn:
        msgs = []
        n_inv = int(pq.invalid.sum())
        if n_inv:
            ex = list(obs.index[pq.invalid][:3])
            why = sorted(set(pq.reason[pq.invalid]))
            msgs.append(f"{n_inv} profile(s) are invalid ({', '.join(why)}), e.g. {ex}: NaN AP, removed from all rankings")
        if not same_set and pc.invalid.any():
            msgs.append(f"{int(pc.invalid.sum())} reference profile(s) are invalid and were removed from all rankings")
        no_pos = int((unit_query & (unit_npos == 0)).sum())
        if no_pos:
            msgs.append(f"{no_pos} {'(profile, label) unit(s)' if expand else 'profile(s)'} have no positive pair: NaN AP")
        no_neg = int((unit_query & (unit_npos > 0) & (unit_nneg == 0)).sum())
        if no_neg:
            msgs.append(f"{no_neg} {'unit(s)' if expand else 'profile(s)'} have positives but no negative pair: NaN AP (copairs would report 1.0)")
        if msgs:
            warnings.warn("average_precision: " + "; ".join(msgs) + ".", RetrievalWarning, stacklevel=3)
    return out


# ---------------------------------------------------------------------------
# AnnData API
# ---------------------------------------------------------------------------


def _matrix(adata, layer, use_rep, what):
    X = get_matrix(adata, layer=layer, use_rep=use_rep)
    return X.compute() if is_dask(X) else np.asarray(X)


def average_precision(
    adata,
    pos_sameby: str | Sequence[str] | dict,
    pos_diffby: str | Sequence[str] | dict | None = None,
    neg_sameby: str | Sequence[str] | dict | None = None,
    neg_diffby: str | Sequence[str] | dict | None = None,
    *,
    metric: str | Callable = "cosine",
    use_rep: str | None = None,
    layer: str | None = None,
    reference=None,
    reference_use_rep: str | None = None,
    reference_layer: str | None = None,
    multilabel: str | None = None,
    multilabel_sep: str | None = "|",
    query=None,
    dtype: str = "float64",
    key_added: str | None = None,
    max_block_elements: int = 2**23,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Average precision of every profile's positives against its negatives (copairs-compatible).

    For each query profile, every profile forming a positive pair with it and
    every profile forming a negative pair with it are ranked by similarity;
    the AP of the positives in that ranking is reported. Pair rules, ties
    (positives first at equal float32 similarity), NaN rules and output
    columns follow copairs 0.5 ``map.average_precision``.

    Parameters
    ----------
    adata
        Profiles (``.X``, a ``layer`` or an ``.obsm`` embedding via ``use_rep``).
    pos_sameby, pos_diffby
        Columns a positive pair shares / differs in (e.g. ``pos_sameby=["Metadata_broad_sample"]``
        for replicates). A dict ``{"all": [...], "any": [...]}`` is also accepted.
    neg_sameby, neg_diffby
        Same for negative pairs (e.g. ``neg_diffby=["Metadata_broad_sample"]``).
    metric
        ``"cosine"``, ``"abs_cosine"``, ``"correlation"``, ``"euclidean"``, ``"manhattan"``,
        ``"chebyshev"`` or a callable ``f(A, B)`` returning a similarity matrix.
    use_rep, layer
        Which matrix of ``adata`` to use.
    reference
        Another AnnData holding the candidates (retrieval across modalities or
        sets; queries come from ``adata``). Both must be in the same feature
        space (``reference_use_rep`` / ``reference_layer`` pick its matrix;
        ``reference_use_rep`` defaults to ``use_rep``).
    multilabel, multilabel_sep
        Multi-label column (``"a|b"`` strings) and separator; see
        :func:`average_precision_kernel`.
    query
        Which profiles get an AP: a query string on ``.obs``, a boolean mask or
        obs names (default all). The others still serve as candidates.
    dtype
        ``"float64"`` (default, matches copairs) or ``"float32"`` (faster).
    key_added
        If given, write the AP to ``adata.obs[key_added]`` (not in per-label
        multi-label mode). ``adata`` must then not be a view, and an existing
        column is refused unless ``overwrite=True``.
    max_block_elements
        Memory bound: most query × candidate similarities held at once.
    overwrite
        Allow ``key_added`` to replace an existing ``.obs`` column.
    reference_use_rep, reference_layer
        Matrix of ``reference`` to rank (an ``.obsm`` key, a layer); ``reference_use_rep``
        defaults to ``use_rep``.

    Returns
    -------
    DataFrame indexed by obs names with the ``.obs`` columns plus
    ``n_pos_pairs``, ``n_total_pairs``, ``average_precision`` and
    ``normalized_average_precision``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> ap = ip.metrics.average_precision(
    ...     adata, pos_sameby=["Metadata_broad_sample"], neg_diffby=["Metadata_broad_sample"],
    ...     query="Metadata_broad_sample != 'DMSO'")
    >>> ap.loc[ap["Metadata_broad_sample"] != "DMSO", "n_pos_pairs"].value_counts().to_dict()
    {5: 336, 11: 24}
    >>> bool(ap["average_precision"].dropna().between(0, 1).all())
    True
    """
    if key_added is not None:
        start(adata, False)  # refuses a view: the AP column would be written into it
        check_new_obs_key(adata, key_added, param="key_added", overwrite=check_bool(overwrite, "overwrite"))
    max_block_elements = check_int(max_block_elements, "max_block_elements", min_value=1)
    X = _matrix(adata, layer, use_rep, "adata")
    ref_X = ref_obs = None
    if reference is not None:
        ref_X = _matrix(reference, reference_layer, reference_use_rep if reference_use_rep is not None else use_rep, "reference")
        ref_obs = reference.obs
    for name, val in (("pos_sameby", pos_sameby), ("pos_diffby", pos_diffby), ("neg_sameby", neg_sameby), ("neg_diffby", neg_diffby)):
        spec = _pairs.as_spec(val, param=name)
        cols = _pairs.spec_columns(spec)
        check_obs_keys(adata, cols, param=name)
        if reference is not None:
            check_obs_keys(reference, cols, param=f"{name} (reference)")
    qmask = None if query is None else resolve_mask(adata, query, param="query")
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
    out = average_precision_kernel(
        X, adata.obs, pos_sameby, pos_diffby, neg_sameby, neg_diffby,
        metric=metric, reference_X=ref_X, reference_obs=ref_obs, multilabel=multilabel,
        multilabel_sep=multilabel_sep, query=qmask, dtype=dt, max_block_elements=max_block_elements,
    )
    if key_added is not None:
        if out.index.has_duplicates:
            raise ValueError("key_added cannot be used in per-label multi-label mode (several APs per profile).")
        adata.obs[key_added] = out["average_precision"].reindex(adata.obs_names).to_numpy()
        log_step(
            adata, "metrics.average_precision",
            {"pos_sameby": pos_sameby, "pos_diffby": pos_diffby, "neg_sameby": neg_sameby, "neg_diffby": neg_diffby,
             "metric": metric, "use_rep": use_rep, "layer": layer, "multilabel": multilabel, "key_added": key_added,
             "reference": reference is not None},
            n_with_ap=int(out["average_precision"].notna().sum()),
        )
    return out


def mean_average_precision(
    ap: pd.DataFrame,
    sameby: str | Sequence[str],
    null_size: int = 10000,
    threshold: float = 0.05,
    seed: int | None = 0,
    *,
    copairs_compat: bool = False,
    exact: bool | None = None,
    null: str = "shared",
) -> pd.DataFrame:
    """Mean AP per group with a permutation p-value and Benjamini–Hochberg correction.

    Each member's AP null is that of a random ranking with its number of
    positive pairs among its ``n_total_pairs``; the p-value is
    ``P(null mAP >= mAP)``: ties count as at least as extreme. Two nulls of the
    group mean (``null=``): ``"shared"`` (default, conservative) reuses one
    null draw per configuration for every member, ``(#{null >= mAP} + 1) / (null_size + 1)``;
    ``"independent"`` is the mean of independent draws, one per member —
    **exact** where it can be enumerated (see
    :func:`imgprof.metrics.group_null_p_values`), else Monte Carlo. The
    Monte Carlo standard error is in ``p_value_se``. For replicate retrieval
    against controls prefer :func:`phenotypic_activity`, whose default
    label-permutation p-value is exact and valid. See ``docs/metrics_pvalues.md``.

    Parameters
    ----------
    ap
        Output of :func:`average_precision` (needs ``average_precision``,
        ``n_pos_pairs``, ``n_total_pairs`` and the ``sameby`` columns).
    sameby
        Column(s) defining the groups (e.g. the perturbation).
    null_size
        Monte Carlo draws per group null (unused where the p-value is exact).
    threshold
        Significance level for ``below_p`` and ``below_corrected_p``.
    seed
        Seed; the same seed gives the same p-values (``None``: fresh, uncached draws).
    copairs_compat
        Reproduce copairs 0.5 exactly: per-configuration seeds drawn in
        configuration order from ``seed``, float32 null APs, and a strict ``>``
        comparison (``#{null > mAP}``) — equal to copairs' output when its disk
        cache is empty. copairs reuses one null row for every member sharing a
        configuration, so its null of a group mean is as wide as a single AP's:
        its p-values are not those of the mean of independent members.
    exact
        ``None`` (default): exact p-values where the null is small enough,
        Monte Carlo elsewhere; ``False``: always Monte Carlo; ``True``: exact or
        ``ValueError``. Ignored with ``copairs_compat``.
    null
        ``"shared"`` (default): one null row per configuration reused by every
        member (copairs' construction, ties counted): conservative.
        ``"independent"``: the members' APs are drawn independently (exact /
        Monte Carlo, see above) — valid only if the members' APs are
        independent. Replicates of one group share their pair similarities,
        so on real profiles their APs are positively dependent and this null
        is anti-conservative (about 10 % of pure-noise groups under 0.05).
        An AP table alone cannot give a valid *and* powerful test;
        :func:`phenotypic_activity` (which has the profiles) uses an exact
        label-permutation test. See ``docs/metrics_pvalues.md``.

    Returns
    -------
    DataFrame, one row per group: ``sameby`` columns, ``n_profiles``,
    ``mean_average_precision``, ``mean_normalized_average_precision``,
    ``p_value``, ``corrected_p_value``, ``below_p``, ``below_corrected_p``,
    and (not with ``copairs_compat``) ``p_value_se`` (Monte Carlo standard
    error, 0 when exact) and ``p_value_method`` (``"exact"`` or ``"monte_carlo"``).
    Profiles with NaN AP or no positive pair are left out (as copairs).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> ap = ip.metrics.average_precision(adata, ["Metadata_broad_sample"], neg_diffby=["Metadata_broad_sample"],
    ...                                   query="Metadata_broad_sample != 'DMSO'")
    >>> m = ip.metrics.mean_average_precision(ap, "Metadata_broad_sample", null_size=1000, seed=0)
    >>> bool(m["p_value"].between(0, 1).all())
    True
    """
    from .null import group_null_p_values, group_p_values, shared_group_p_values

    sameby = as_list(sameby)
    if not sameby:
        raise ValueError("sameby: give at least one column to group profiles by.")
    if not isinstance(ap, pd.DataFrame):
        raise TypeError(f"ap must be the DataFrame returned by average_precision, got {type(ap).__name__}.")
    check_df_keys(ap, ["average_precision", "n_pos_pairs", "n_total_pairs"], param="ap", where="the AP table")
    check_df_keys(ap, sameby, param="sameby", where="the AP table")
    null_size = check_int(null_size, "null_size", min_value=1)
    threshold = check_float(threshold, "threshold", min_value=0.0, max_value=1.0, include_min=False, include_max=False)
    check_int(seed, "seed", min_value=0, allow_none=True)
    null = check_choice(null, "null", ("independent", "shared"))
    df = ap.loc[ap["average_precision"].notna() & (ap["n_pos_pairs"] > 0)].reset_index(drop=True)
    if df.empty:
        raise ValueError("mean_average_precision: no profile has a finite AP with at least one positive pair.")
    if "normalized_average_precision" not in df:
        df["normalized_average_precision"] = normalized_ap(df["average_precision"], df["n_pos_pairs"], df["n_total_pairs"])
    grouped = df.groupby(sameby, observed=True, sort=True)
    res = grouped.agg(
        mean_average_precision=("average_precision", "mean"),
        mean_normalized_average_precision=("normalized_average_precision", "mean"),
        n_profiles=("average_precision", "size"),
    ).reset_index()
    gid = grouped.ngroup().to_numpy()
    confs = df[["n_pos_pairs", "n_total_pairs"]].to_numpy(dtype=np.int64)
    extra = []
    if copairs_compat:
        res["p_value"] = group_p_values(
            res["mean_average_precision"].to_numpy(), gid, confs, null_size=int(null_size), seed=seed,
            copairs_compat=True,
        )
    elif null == "shared":
        pv = shared_group_p_values(
            res["mean_average_precision"].to_numpy(), gid, confs[:, 0], confs[:, 1], null_size=int(null_size), seed=seed,
        )
        res["p_value"] = pv
        res["p_value_se"] = np.sqrt(pv * (1 - pv) / int(null_size))
        res["p_value_method"] = "shared_monte_carlo"
        extra = ["p_value_se", "p_value_method"]
    else:
        pv = group_null_p_values(
            res["mean_average_precision"].to_numpy(), gid, confs[:, 0], confs[:, 1], null_size=int(null_size),
            seed=seed, exact=exact,
        )
        res["p_value"] = pv["p_value"].to_numpy()
        res["p_value_se"] = pv["p_value_se"].to_numpy()
        res["p_value_method"] = ("independent_" + pv["p_value_method"]).to_numpy()
        extra = ["p_value_se", "p_value_method"]
    _finish(res, threshold)
    cols = sameby + ["n_profiles", "mean_average_precision", "mean_normalized_average_precision", "p_value",
                     "corrected_p_value", "below_p", "below_corrected_p"] + extra
    return res[cols]


def _finish(res: pd.DataFrame, threshold: float) -> None:
    """BH-corrected p-values and the ``below_*`` flags, in place."""
    from .null import benjamini_hochberg

    res["corrected_p_value"] = benjamini_hochberg(res["p_value"].to_numpy())
    res["below_p"] = res["p_value"] < threshold
    res["below_corrected_p"] = res["corrected_p_value"] < threshold


# ---------------------------------------------------------------------------
# recipes: phenotypic activity and consistency
# ---------------------------------------------------------------------------

_REF = "__imgprof_reference_index"


def _check_null_args(null_size, threshold, seed) -> None:
    """Validate the null-distribution arguments up front (before any AP is computed)."""
    check_int(null_size, "null_size", min_value=1)
    check_float(threshold, "threshold", min_value=0.0, max_value=1.0, include_min=False, include_max=False)
    check_int(seed, "seed", min_value=0, allow_none=True)


def phenotypic_activity(
    adata,
    perturbation_key: str | Sequence[str] = "Metadata_broad_sample",
    controls="Metadata_pert_type == 'control'",
    *,
    sameby_controls: str | Sequence[str] | None = None,
    pos_diffby: str | Sequence[str] | None = None,
    metric: str | Callable = "cosine",
    use_rep: str | None = None,
    layer: str | None = None,
    null_size: int = 10000,
    threshold: float = 0.05,
    seed: int | None = 0,
    return_ap: bool = False,
    dtype: str = "float64",
    null: str = "permutation",
):
    """Phenotypic activity: can each perturbation's replicates be retrieved against negative controls?

    For every non-control profile, its replicates (same ``perturbation_key``)
    are positives and the control profiles are negatives (the copairs recipe
    with a reference index on controls). mAP per perturbation with a
    permutation p-value; ``below_corrected_p`` marks active perturbations.

    Parameters
    ----------
    adata
        Well-level profiles.
    perturbation_key
        Column(s) identifying a perturbation (add a dose column to score each dose).
    controls
        Negative controls: query string on ``.obs``, boolean mask or obs names.
    sameby_controls
        Restrict negatives to controls sharing these columns with the query
        (e.g. ``"Metadata_Plate"`` for same-plate controls).
    pos_diffby
        Columns replicates must differ in (e.g. ``"Metadata_Plate"`` to only
        count replicates from other plates).
    metric, use_rep, layer, dtype
        See :func:`average_precision`.
    null_size, threshold, seed
        See :func:`mean_average_precision`.
    return_ap
        Return a :class:`RetrievalResult` (``.map`` per perturbation, ``.ap``
        per profile) instead of the mAP table alone.
    null
        ``"permutation"`` (default): exact label-permutation test — under the
        null the perturbation's wells are exchangeable with its controls (within
        each ``sameby_controls`` stratum); every labeling is enumerated when
        there are at most ``null_size`` of them (``p_value_method`` =
        ``"permutation_exact"``), else ``null_size`` random labelings
        (``"permutation_monte_carlo"``). Valid whatever the distribution of the
        profiles. Perturbations whose pool (wells + controls) exceeds
        ``_permutation.MAX_POOL`` (600) fall back to the conservative
        ``"shared"`` null (``p_value_method`` says which).
        ``"independent"`` / ``"shared"``: see :func:`mean_average_precision`.

    Returns
    -------
    mAP DataFrame per perturbation: ``n_profiles``, ``mean_average_precision``,
    ``mean_normalized_average_precision``, ``p_value``, ``corrected_p_value``,
    ``below_p``, ``below_corrected_p``, ``p_value_se``, ``p_value_method``; or
    a :class:`RetrievalResult` with ``return_ap=True``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> act = ip.metrics.phenotypic_activity(adata, "Metadata_broad_sample", null_size=1000)
    >>> "below_corrected_p" in act
    True
    """
    _check_null_args(null_size, threshold, seed)
    keys = as_list(perturbation_key)
    check_obs_keys(adata, keys, param="perturbation_key")
    sc = as_list(sameby_controls)
    check_obs_keys(adata, sc, param="sameby_controls")
    pdiff = as_list(pos_diffby)
    check_obs_keys(adata, pdiff, param="pos_diffby")
    cmask = resolve_mask(adata, controls, param="controls")
    if cmask.all():
        raise ValueError(f"controls={controls!r} selects every profile; nothing left to score.")
    if null not in ("permutation", "independent", "shared"):
        raise ValueError(f"null must be 'permutation', 'independent' or 'shared', got {null!r}.")
    if _REF in adata.obs.columns:
        raise ValueError(f"adata.obs already has a column {_REF!r}; rename it.")
    obs = adata.obs.copy()
    # Controls are picked by ``controls=``: a missing perturbation key on a control row
    # (e.g. DMSO wells with no broad_sample) is not an error.
    for k in keys:
        fill = cmask & obs[k].isna().to_numpy()
        if fill.any():
            obs[k] = obs[k].astype(object)
            obs.loc[fill, k] = "__control__"
    ref = np.full(adata.n_obs, -1, dtype=np.int64)
    ref[cmask] = np.arange(int(cmask.sum()))
    obs[_REF] = ref
    X = _matrix(adata, layer, use_rep, "adata")
    ap = average_precision_kernel(
        X, obs, keys + [_REF], pdiff, sc, keys + [_REF], metric=metric, query=~cmask, dtype=np.dtype(dtype),
    ).drop(columns=[_REF])
    m = mean_average_precision(
        ap.loc[~cmask], keys, null_size=null_size, threshold=threshold, seed=seed,
        null="shared" if null == "permutation" else null,
    )
    if null == "permutation":
        _activity_permutation(m, ap, X, obs, cmask, keys, sc, pdiff, metric, dtype, null_size, seed, threshold)
    return RetrievalResult(map=m, ap=ap) if return_ap else m


def _activity_permutation(m, ap, X, obs, cmask, keys, sc, pdiff, metric, dtype, null_size, seed, threshold) -> None:
    """Replace ``m``'s p-values by label-permutation p-values (in place; see ``_permutation``)."""
    from ._permutation import permutation_p_values

    pq = prepare(X.compute() if is_dask(X) else X, metric, np.dtype(dtype))
    valid = ~pq.invalid
    stratum = (
        np.zeros(len(obs), dtype=np.int64) if not sc
        else pd.factorize(obs[sc].astype(str).agg("\x1f".join, axis=1))[0] if len(sc) > 1
        else pd.factorize(obs[sc[0]])[0]
    ).astype(np.int64)
    posdiff = None
    if pdiff:
        posdiff = np.stack([pd.factorize(obs[c])[0] for c in pdiff], axis=1)
    # rows of each scored group (the AP table's groups), valid vectors only
    trt = ap.loc[~cmask]
    scored = trt["average_precision"].notna() & (trt["n_pos_pairs"] > 0)
    row_of = pd.Series(np.arange(len(obs)), index=obs.index)
    grp = trt.groupby(keys, observed=True, sort=True)
    ids = grp.ngroup().to_numpy()
    rows = row_of.loc[trt.index].to_numpy()
    n_groups = int(ids.max()) + 1 if ids.size else 0
    in_m = grp["average_precision"].apply(lambda s: bool(s.notna().any())).to_numpy()
    keep = valid[rows]
    groups = [np.sort(rows[(ids == g) & keep]) for g in range(n_groups)]
    sel = [g for g in range(n_groups) if in_m[g] and scored[ids == g].any()]
    groups = [groups[g] for g in sel]
    # each group's draws are seeded by its key values: the same p-value whatever else is in the call
    import zlib

    labels = m[keys].astype(str).agg("\x1f".join, axis=1).to_numpy()
    group_seeds = np.array([zlib.crc32(s.encode()) for s in labels], dtype=np.int64)
    obs_map, p, se, method = permutation_p_values(
        pq, metric, groups, np.flatnonzero(cmask & valid), stratum, posdiff, null_size=int(null_size), seed=seed,
        group_seeds=group_seeds,
    )
    if len(groups) != len(m):  # pragma: no cover - defensive: group bookkeeping must match mean_average_precision
        raise RuntimeError("phenotypic_activity: permutation groups do not match the mAP table.")
    done = method != ""
    # The permutation p-value compares the routine's own observed mAP with its own null (consistent by
    # construction). It equals the kernel's mAP except where two similarities are tied within float rounding
    # and the kernel's products (dense or paired) and the pool's product round them apart (rare; float32
    # makes it likelier). Such groups are reported; a large difference would be a bug.
    diff = np.abs(obs_map[done] - m["mean_average_precision"].to_numpy()[done])
    if diff.size and diff.max() > 0.5:
        raise RuntimeError(
            "phenotypic_activity: permutation mAP differs from the AP kernel's mAP by "
            f"{diff.max():.3g}; please report this."
        )
    if diff.size and (diff > 1e-9).any():
        warnings.warn(
            f"phenotypic_activity: for {int((diff > 1e-9).sum())} perturbation(s) the permutation test ranked "
            f"near-tied similarities differently from the AP kernel (float rounding; max mAP difference "
            f"{diff.max():.2g}); their p-values compare the permutation's own observed mAP with its null.",
            RetrievalWarning, stacklevel=3,
        )
    m.loc[done, "p_value"] = p[done]
    m.loc[done, "p_value_se"] = se[done]
    m.loc[done, "p_value_method"] = np.array(["permutation_" + s for s in method[done]], dtype=object)
    _finish(m, threshold)


def phenotypic_consistency(
    adata,
    annotation_key: str = "Metadata_moa",
    perturbation_key: str = "Metadata_broad_sample",
    *,
    controls=None,
    active=None,
    aggregate: str | None = "median",
    multilabel_sep: str | None = "|",
    metric: str | Callable = "cosine",
    use_rep: str | None = None,
    layer: str | None = None,
    null_size: int = 10000,
    threshold: float = 0.05,
    seed: int | None = 0,
    return_ap: bool = False,
    dtype: str = "float64",
):
    """Phenotypic consistency: do perturbations sharing an annotation (MOA, target) retrieve each other?

    Profiles are aggregated per perturbation (consensus), then for each
    (perturbation, label) the other perturbations carrying that label are
    positives and perturbations sharing no label are negatives (copairs'
    multi-label recipe). mAP per label.

    Parameters
    ----------
    adata
        Profiles (well level, or already one row per perturbation with ``aggregate=None``).
    annotation_key
        Annotation column; multi-label values like ``"a|b"`` are split on ``multilabel_sep``
        (``None``: single label).
    perturbation_key
        Perturbation column (consensus profiles are built per value).
    controls
        Profiles to leave out (e.g. ``"Metadata_pert_type == 'control'"``).
    active
        Keep only these perturbations: a list of values, or the DataFrame of
        :func:`phenotypic_activity` (its rows with ``below_corrected_p``).
    aggregate
        ``"median"`` (default) or ``"mean"`` consensus per perturbation, or
        ``None`` to keep profiles as they are (replicates of the same
        perturbation are then excluded from each other's positives).
    metric, use_rep, layer, dtype, null_size, threshold, seed, return_ap
        As in :func:`phenotypic_activity`.
    multilabel_sep
        Separator of multi-valued labels (a compound with targets ``"A|B"`` belongs to
        both groups); ``None`` = none.

    Returns
    -------
    mAP DataFrame per label, or a :class:`RetrievalResult` (``.map``, ``.ap``)
    with ``return_ap=True``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> cons = ip.metrics.phenotypic_consistency(adata, "Metadata_moa", controls="Metadata_broad_sample == 'DMSO'",
    ...                                          null_size=1000)
    >>> cons["Metadata_moa"].is_unique
    True
    """

    _check_null_args(null_size, threshold, seed)
    check_obs_keys(adata, [annotation_key, perturbation_key], param="annotation_key/perturbation_key")
    if aggregate not in (None, "median", "mean"):
        raise ValueError(f"aggregate must be 'median', 'mean' or None, got {aggregate!r}.")
    keep = np.ones(adata.n_obs, dtype=bool)
    if controls is not None:
        keep &= ~resolve_mask(adata, controls, param="controls")
    missing = adata.obs[annotation_key].isna().to_numpy() | (adata.obs[annotation_key].astype(str).str.strip() == "").to_numpy()
    if (missing & keep).any():
        warnings.warn(
            f"phenotypic_consistency: {int((missing & keep).sum())} profile(s) without {annotation_key!r} are left out.",
            RetrievalWarning, stacklevel=2,
        )
    keep &= ~missing
    if active is not None:
        if isinstance(active, pd.DataFrame):
            check_df_keys(active, [perturbation_key, "below_corrected_p"], param="active", where="the activity table")
            active = active.loc[active["below_corrected_p"], perturbation_key].tolist()
        keep &= adata.obs[perturbation_key].isin(list(active)).to_numpy()
    if not keep.any():
        raise ValueError("phenotypic_consistency: no profile left after removing controls / unannotated / inactive ones.")
    X = _matrix(adata, layer, use_rep, "adata")[keep]
    obs = adata.obs.loc[keep, [perturbation_key, annotation_key]].copy()
    for c in obs.columns:
        if isinstance(obs[c].dtype, pd.CategoricalDtype):
            obs[c] = obs[c].astype(object)
    if aggregate is not None:
        n_ann = obs.groupby(perturbation_key, observed=True)[annotation_key].nunique()
        bad = n_ann[n_ann > 1]
        if len(bad):
            raise ValueError(
                f"phenotypic_consistency: perturbation(s) {list(bad.index[:5])} carry several {annotation_key!r} values; "
                "fix the annotation or use aggregate=None."
            )
        codes, uniq = pd.factorize(obs[perturbation_key], sort=True)
        Xa = np.vstack([
            (np.nanmedian if aggregate == "median" else np.nanmean)(X[codes == k], axis=0) for k in range(len(uniq))
        ])
        first = obs.groupby(perturbation_key, observed=True, sort=True)[annotation_key].first()
        obs_a = pd.DataFrame({perturbation_key: np.asarray(uniq, dtype=object), annotation_key: first.loc[uniq].to_numpy()})
        obs_a.index = obs_a[perturbation_key].astype(str).to_numpy()
        X, obs = Xa, obs_a
        pos_diff = []
    else:
        pos_diff = [perturbation_key]
    ap = average_precision_kernel(
        X, obs, [annotation_key], pos_diff, [], [annotation_key], metric=metric, multilabel=annotation_key,
        multilabel_sep=multilabel_sep, dtype=np.dtype(dtype),
    )
    m = mean_average_precision(ap, [annotation_key], null_size=null_size, threshold=threshold, seed=seed)
    return RetrievalResult(map=m, ap=ap) if return_ap else m
