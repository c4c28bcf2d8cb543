"""The steps of :func:`imgprof.metrics.average_precision_kernel` (private).

1. :func:`check_inputs` — pair definitions, metadata, matrices → an :class:`APProblem`
   (prepared matrices, valid rows, integer-encoded pair columns).
2. :func:`count_pairs` / :func:`build_units` — positives and negatives per query
   (combo level, cheap) and the scored units (a profile, or a (profile, label)).
3. :func:`blocked_ap` — the numerical kernel: blocks of queries, their candidate
   similarities and APs (:mod:`imgprof.metrics._ap_kernels`), memory bounded by
   ``max_block_elements``.
4. :func:`assemble` / :func:`report` — the output table and the NaN summary.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._core.validation import check_df_keys, is_dask
from . import _ap_kernels as K
from . import _pairs
from ._results import RetrievalWarning
from ._similarity import Prepared, check_metric, prepare, similarity

__all__ = ["APProblem", "Units", "assemble", "blocked_ap", "build_units", "check_inputs", "count_pairs", "report"]


@dataclass
class APProblem:
    """Checked inputs of one AP computation."""

    pos_s: _pairs.Spec
    pos_d: _pairs.Spec
    neg_s: _pairs.Spec
    neg_d: _pairs.Spec
    multilabel: str | None
    expand: bool  # AP per (profile, label)
    pq: Prepared  # queries
    pc: Prepared  # candidates (pq itself when same_set)
    same_set: bool
    metric: str | Callable
    qmask: np.ndarray  # rows that get an AP
    vq: np.ndarray  # valid query rows
    vc: np.ndarray  # valid candidate rows
    enc: _pairs.Encoded

    @property
    def skip(self) -> str | None:
        """Pair column handled per label (left out of the combo masks)."""
        return self.multilabel if self.expand else None

    def pos_mask(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Positive-pair mask between combos ``a`` and ``b``."""
        return _pairs.combo_mask(self.enc, self.pos_s, self.pos_d, a, b, skip=self.skip)

    def neg_mask(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Negative-pair mask between combos ``a`` and ``b``."""
        return _pairs.combo_mask(self.enc, self.neg_s, self.neg_d, a, b)


# ---------------------------------------------------------------------------
# 1. inputs
# ---------------------------------------------------------------------------


def pair_specs(pos_sameby: Any, pos_diffby: Any, neg_sameby: Any, neg_diffby: Any) -> tuple[list[_pairs.Spec], list[str]]:
    """The four pair specs (copairs' rules checked) and every column they name."""
    named = (("pos_sameby", pos_sameby), ("pos_diffby", pos_diffby), ("neg_sameby", neg_sameby), ("neg_diffby", neg_diffby))
    specs = [_pairs.as_spec(v, param=n) for n, v in named]
    _pairs.check_pair_definition(specs[0], specs[1], what="positive pairs")
    _pairs.check_pair_definition(specs[2], specs[3], what="negative pairs")
    columns = list(dict.fromkeys(c for s in specs for c in _pairs.spec_columns(s)))
    return specs, columns


def _check_metadata(obs: Any, reference_obs: Any, same_set: bool, columns: list[str], multilabel: str | None,
                    pos_s: _pairs.Spec) -> bool:
    """Check the metadata tables and the multi-label column; return whether AP is per (profile, label)."""
    if not isinstance(obs, pd.DataFrame):
        raise TypeError(f"obs must be a pandas DataFrame, got {type(obs).__name__}.")
    check_df_keys(obs, columns, param="pair columns", where="the query metadata")
    if not same_set:
        if reference_obs is None:
            raise ValueError("reference_X needs reference_obs (its metadata).")
        check_df_keys(reference_obs, columns, param="pair columns", where="the reference metadata")
    if multilabel is not None and multilabel not in columns:
        raise ValueError(f"multilabel={multilabel!r} is not one of the pair columns {columns}.")
    if multilabel is not None and multilabel in pos_s["any"]:
        raise ValueError("multilabel column in pos_sameby['any'] is not supported; put it in the plain list.")
    return multilabel is not None and multilabel in pos_s["all"]


def _n_rows(X: Any) -> int:
    return X.shape[0] if hasattr(X, "shape") else len(X)


def _prepare_matrices(X: Any, obs: pd.DataFrame, reference_X: Any, reference_obs: Any, metric: str | Callable,
                      dtype: Any) -> tuple[Prepared, Prepared]:
    """Prepared query and candidate matrices (the same object when there is no reference)."""
    Xq = X.compute() if is_dask(X) else X
    nq = _n_rows(Xq)
    if nq != len(obs):
        raise ValueError(f"X has {nq} rows but obs has {len(obs)}.")
    pq = prepare(Xq, metric, dtype)
    if reference_X is None:
        return pq, pq
    Xc = reference_X.compute() if is_dask(reference_X) else reference_X
    pc = prepare(Xc, metric, dtype)
    if pc.X.shape[0] != len(reference_obs):
        raise ValueError(f"reference_X has {pc.X.shape[0]} rows but reference_obs has {len(reference_obs)}.")
    if pc.X.shape[1] != pq.X.shape[1]:
        raise ValueError(
            f"query profiles have {pq.X.shape[1]} features but the reference has {pc.X.shape[1]}; retrieval "
            "across sets needs a shared feature space (same features, or a joint embedding in .obsm)."
        )
    return pq, pc


def check_inputs(
    X: Any, obs: pd.DataFrame, pairs: tuple[Any, Any, Any, Any], *, metric: str | Callable, reference_X: Any,
    reference_obs: pd.DataFrame | None, multilabel: str | None, multilabel_sep: str | None, query: Any, dtype: Any,
) -> APProblem:
    """Check every input of the AP kernel and encode the pair columns of the valid rows."""
    check_metric(metric)
    specs, columns = pair_specs(*pairs)
    same_set = reference_X is None
    expand = _check_metadata(obs, reference_obs, same_set, columns, multilabel, specs[0])
    pq, pc = _prepare_matrices(X, obs, reference_X, reference_obs, metric, dtype)
    nq = pq.X.shape[0]
    qmask = np.ones(nq, dtype=bool) if query is None else np.asarray(query, dtype=bool)
    if qmask.shape != (nq,):
        raise ValueError(f"query mask has shape {qmask.shape}, expected ({nq},).")
    vq = np.flatnonzero(~pq.invalid)
    vc = vq if same_set else np.flatnonzero(~pc.invalid)
    if vq.size == 0 or vc.size == 0:
        raise ValueError("no valid profile left: every row has NaN/inf features or a zero-norm vector.")
    obs_c = None if same_set or reference_obs is None else reference_obs.iloc[vc]  # reference_obs checked above
    enc = _pairs.encode(
        obs.iloc[vq], obs_c, columns, multilabel=multilabel, multilabel_sep=multilabel_sep, order_first=specs[0]["all"],
        where="obs", where_ref="reference_obs",
    )
    return APProblem(pos_s=specs[0], pos_d=specs[1], neg_s=specs[2], neg_d=specs[3], multilabel=multilabel, expand=expand,
                     pq=pq, pc=pc, same_set=same_set, metric=metric, qmask=qmask, vq=vq, vc=vc, enc=enc)


# ---------------------------------------------------------------------------
# 2. pair counts and units
# ---------------------------------------------------------------------------


@dataclass
class Units:
    """What gets an AP: one unit per valid query row, or per (row, label) in multi-label mode."""

    vrow: np.ndarray  # valid-row position of each unit
    label: np.ndarray | None  # label index of each unit (multi-label mode)
    npos: np.ndarray
    nneg: np.ndarray
    query: np.ndarray  # the unit's row is a query
    ap: np.ndarray  # filled by blocked_ap

    @property
    def active(self) -> np.ndarray:
        """Units that get an AP: queries with at least one positive and one negative pair."""
        return self.query & (self.npos > 0) & (self.nneg > 0)


def count_pairs(p: APProblem, max_block_elements: int) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Positive and negative pairs per query combo (and per label of each combo in multi-label mode)."""
    enc = p.enc
    n_combo = enc.n_combos
    all_b = np.arange(n_combo)
    size = enc.size_c
    uq_all = np.unique(enc.combo_q)
    npos_combo = np.zeros(n_combo, dtype=np.int64)
    nneg_combo = np.zeros(n_combo, dtype=np.int64)
    npos_label: dict[int, np.ndarray] = {}
    step = max(1, max_block_elements // max(n_combo, 1))
    for s0 in range(0, uq_all.size, step):
        a = uq_all[s0 : s0 + step]
        Mp = p.pos_mask(a, all_b)
        Mn = p.neg_mask(a, all_b)
        self_p = Mp[np.arange(a.size), a] if p.same_set else np.zeros(a.size, bool)
        self_n = Mn[np.arange(a.size), a] if p.same_set else np.zeros(a.size, bool)
        nneg_combo[a] = K._weighted_count(Mn, size) - self_n
        if p.expand:
            Lw = np.asarray((enc.combo_labels.T @ (Mp * size).T).T)  # (|a|, n_labels)
            for k, c in enumerate(a):
                labs = enc.combo_labels[c].indices
                npos_label[int(c)] = (Lw[k, labs] - self_p[k]).astype(np.int64)
        else:
            npos_combo[a] = K._weighted_count(Mp, size) - self_p
    return npos_combo, nneg_combo, npos_label


def build_units(p: APProblem, max_block_elements: int) -> Units:
    """The scored units with their pair counts (AP still NaN)."""
    npos_combo, nneg_combo, npos_label = count_pairs(p, max_block_elements)
    cq = p.enc.combo_q
    unit_label: np.ndarray | None
    if p.expand:
        lab_lists = [p.enc.combo_labels[c].indices for c in range(p.enc.n_combos)]
        nlab = np.array([len(lab_lists[c]) for c in cq], dtype=np.int64)
        unit_vrow = np.repeat(np.arange(p.vq.size), nlab)
        unit_label = np.concatenate([lab_lists[c] for c in cq]) if p.vq.size else np.array([], dtype=np.int64)
        unit_npos = np.concatenate([npos_label[int(c)] for c in cq])
    else:
        unit_vrow = np.arange(p.vq.size)
        unit_label = None
        unit_npos = npos_combo[cq]
    return Units(
        vrow=unit_vrow, label=unit_label, npos=unit_npos, nneg=nneg_combo[cq][unit_vrow],
        query=p.qmask[p.vq][unit_vrow], ap=np.full(unit_vrow.size, np.nan),
    )


# ---------------------------------------------------------------------------
# 3. blocked AP (the numerical kernel)
# ---------------------------------------------------------------------------


@dataclass
class _Block:
    """A block of query rows ``R`` (valid-row positions) and its candidate columns."""

    R: np.ndarray
    inv: np.ndarray  # combo of each row, as an index into the block's combos
    Mp: np.ndarray  # (block combos, all combos) positive mask
    Mn: np.ndarray  # (block combos, all combos) negative mask
    prow: np.ndarray  # positive candidates (valid candidate positions)
    nrow: np.ndarray  # negative candidates

    @property
    def n_candidates(self) -> int:
        return self.prow.size + self.nrow.size


def _block(p: APProblem, R: np.ndarray, all_b: np.ndarray) -> _Block:
    a, inv = np.unique(p.enc.combo_q[R], return_inverse=True)
    Mp = p.pos_mask(a, all_b)
    if p.expand:
        Mp &= _pairs.label_overlap(p.enc, a, all_b)
    Mn = p.neg_mask(a, all_b)
    prow = p.enc.rows_of(np.flatnonzero(Mp.any(axis=0)))
    nrow = p.enc.rows_of(np.flatnonzero(Mn.any(axis=0)))
    return _Block(R=R, inv=inv, Mp=Mp, Mn=Mn, prow=prow, nrow=nrow)


def blocked_ap(p: APProblem, u: Units, max_block_elements: int) -> None:
    """Fill ``u.ap`` block by block; at most about ``max_block_elements`` similarities are held at once."""
    active = u.active
    act_rows = np.unique(u.vrow[active])
    if not act_rows.size:
        return
    cq = p.enc.combo_q
    act_rows = act_rows[np.lexsort((act_rows, cq[act_rows]))]  # rows sharing candidates in one block
    unit_start = np.concatenate([[0], np.cumsum(np.bincount(u.vrow, minlength=p.vq.size))])
    loc_buf = np.full(p.vc.size, -1, dtype=np.int64)
    all_b = np.arange(p.enc.n_combos)
    b_cap = max(1, 4 * max_block_elements // max(p.enc.n_combos, 1))  # combo masks are (block combos x all combos)
    B = max(1, min(act_rows.size, max_block_elements // max(p.vc.size, 1), b_cap))
    i0 = 0
    while i0 < act_rows.size:
        blk = _block(p, act_rows[i0 : i0 + B], all_b)
        C = blk.n_candidates
        if blk.R.size > 1 and blk.R.size * C > 2 * max_block_elements:
            B = max(1, max_block_elements // max(C, 1))
            continue
        _score_block(p, u, blk, active, loc_buf, unit_start)
        i0 += blk.R.size
        if C:
            B = max(1, min(2 * B, max_block_elements // C, b_cap))


def _self_positions(p: APProblem, blk: _Block, loc_buf: np.ndarray) -> np.ndarray | None:
    """Position of each query row among the block's negative candidates (-1: not there); None across sets."""
    if not p.same_set:
        return None
    loc_buf[blk.nrow] = np.arange(blk.nrow.size)
    self_loc = loc_buf[blk.R]
    loc_buf[blk.nrow] = -1
    return self_loc


def _score_block(p: APProblem, u: Units, blk: _Block, active: np.ndarray, loc_buf: np.ndarray,
                 unit_start: np.ndarray) -> None:
    R, inv, prow, nrow = blk.R, blk.inv, blk.prow, blk.nrow
    qrows = p.vq[R]
    P = blk.Mp[:, p.enc.combo_c[prow]][inv]  # positives: (row, candidate), self excluded
    if p.same_set:
        K._clear_self(P, R, prow, loc_buf)
    Nc = blk.Mn[:, p.enc.combo_c[nrow]]  # negatives: combo-level mask first
    n_true = Nc.sum(axis=1)[inv]
    self_loc = _self_positions(p, blk, loc_buf)
    dense_neg = callable(p.metric) or n_true.sum() >= K._DENSE_MIN_FILL * R.size * max(nrow.size, 1)
    if not p.expand and dense_neg:
        Kn = K._key(similarity(p.pq, p.pc, qrows, p.vc[nrow], p.metric))
        if not bool((n_true == nrow.size).all()):
            Kn[~Nc[inv]] = np.inf
        if self_loc is not None:
            hit = np.flatnonzero(self_loc >= 0)
            Kn[hit, self_loc[hit]] = np.inf
        pr, _, pk = K._block_keys(p.pq, p.pc, p.metric, qrows, p.vc[prow], P)
        ap = K._ap_dense(pr, pk, Kn, R.size)
        keep = active[R]
        u.ap[R[keep]] = ap[keep]
        return
    N = Nc[inv]
    if self_loc is not None:
        hit = np.flatnonzero(self_loc >= 0)
        N[hit, self_loc[hit]] = False
    neg_r, _, neg_k = K._block_keys(p.pq, p.pc, p.metric, qrows, p.vc[nrow], N)
    if p.expand:
        _score_labels(p, u, blk, P, neg_r, neg_k, active, unit_start)
        return
    pr, _, pk = K._block_keys(p.pq, p.pc, p.metric, qrows, p.vc[prow], P)
    ap = K._ap_units(pr, pr, pk, R.size, neg_r, neg_k, R.size)
    keep = active[R]
    u.ap[R[keep]] = ap[keep]


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + c)`` for every (start, count)."""
    return np.repeat(starts, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))


def _score_labels(p: APProblem, u: Units, blk: _Block, P: np.ndarray, neg_r: np.ndarray, neg_k: np.ndarray,
                  active: np.ndarray, unit_start: np.ndarray) -> None:
    """AP per (row, label) unit of the block: a positive counts for the labels its candidate carries."""
    R, prow = blk.R, blk.prow
    assert u.label is not None  # multi-label mode
    counts = unit_start[R + 1] - unit_start[R]
    uidx = _ranges(unit_start[R], counts)
    labs_blk, lab_local = np.unique(u.label[uidx], return_inverse=True)
    Hc = np.asarray(p.enc.combo_labels[p.enc.combo_c[prow]][:, labs_blk].toarray() > 0)  # (Cp, L_blk)
    pr, pc_, pk = K._block_keys(p.pq, p.pc, p.metric, p.vq[R], p.vc[prow], P)
    # expand each positive (row, col) to the units of that row, keep those whose label the col carries
    first_unit = np.concatenate([[0], np.cumsum(counts)])
    rep = counts[pr]
    e_row = np.repeat(pr, rep)
    e_col = np.repeat(pc_, rep)
    e_key = np.repeat(pk, rep)
    e_unit = _ranges(first_unit[pr], rep)
    has = Hc[e_col, lab_local[e_unit]]
    ap = K._ap_units(e_unit[has], e_row[has], e_key[has], uidx.size, neg_r, neg_k, R.size)
    keep = active[uidx]
    u.ap[uidx[keep]] = ap[keep]


# ---------------------------------------------------------------------------
# 4. result
# ---------------------------------------------------------------------------


def assemble(p: APProblem, u: Units, obs: pd.DataFrame) -> pd.DataFrame:
    """``obs`` plus the AP columns (rows repeated per label in multi-label mode, in row order)."""
    total = u.npos + u.nneg
    if p.expand:
        assert u.label is not None and p.multilabel is not None
        rows_full = p.vq[u.vrow]
        invalid_rows = np.flatnonzero(p.pq.invalid)
        out = obs.iloc[np.concatenate([rows_full, invalid_rows])].copy()
        out[p.multilabel] = np.concatenate(
            [p.enc.label_names[u.label], obs[p.multilabel].iloc[invalid_rows].astype(object).to_numpy()]
        )
        npp = np.concatenate([u.npos, np.zeros(invalid_rows.size, np.int64)])
        ntp = np.concatenate([total, np.zeros(invalid_rows.size, np.int64)])
        apv = np.concatenate([u.ap, np.full(invalid_rows.size, np.nan)])
        order = np.argsort(np.concatenate([rows_full, invalid_rows]), kind="stable")
        out = out.iloc[order]
        npp, ntp, apv = npp[order], ntp[order], apv[order]
    else:
        nq = p.pq.X.shape[0]
        out = obs.copy()
        npp = np.zeros(nq, np.int64)
        ntp = np.zeros(nq, np.int64)
        apv = np.full(nq, np.nan)
        npp[p.vq] = u.npos
        ntp[p.vq] = total
        apv[p.vq] = u.ap
    out["n_pos_pairs"] = npp
    out["n_total_pairs"] = ntp
    out["average_precision"] = apv
    out["normalized_average_precision"] = K.normalized_ap(apv, npp, ntp)
    return out


def report(p: APProblem, u: Units, obs: pd.DataFrame, out: pd.DataFrame, *, warn: bool) -> None:
    """Refuse a result without any AP; warn (``RetrievalWarning``) about the NaN APs and why."""
    if not np.isfinite(out["average_precision"].to_numpy()).any():
        raise ValueError(
            "average_precision: no profile got an AP "
            f"({int(u.npos.sum())} positive and {int(u.nneg.sum())} negative pair memberships found). "
            f"Check the pair definition: pos_sameby={p.pos_s}, pos_diffby={p.pos_d}, neg_sameby={p.neg_s}, "
            f"neg_diffby={p.neg_d}."
        )
    if not warn:
        return
    msgs = []
    n_inv = int(p.pq.invalid.sum())
    if n_inv:
        ex = list(obs.index[p.pq.invalid][:3])
        why = sorted(set(p.pq.reason[p.pq.invalid]))
        msgs.append(f"{n_inv} profile(s) are invalid ({', '.join(why)}), e.g. {ex}: NaN AP, removed from all rankings")
    if not p.same_set and p.pc.invalid.any():
        msgs.append(f"{int(p.pc.invalid.sum())} reference profile(s) are invalid and were removed from all rankings")
    no_pos = int((u.query & (u.npos == 0)).sum())
    if no_pos:
        msgs.append(f"{no_pos} {'(profile, label) unit(s)' if p.expand else 'profile(s)'} have no positive pair: NaN AP")
    no_neg = int((u.query & (u.npos > 0) & (u.nneg == 0)).sum())
    if no_neg:
        msgs.append(f"{no_neg} {'unit(s)' if p.expand else 'profile(s)'} have positives but no negative pair: "
                    "NaN AP (copairs would report 1.0)")
    if msgs:
        warnings.warn("average_precision: " + "; ".join(msgs) + ".", RetrievalWarning, stacklevel=4)
