"""The modalities of a join, one builder per ``level``/``paired`` branch.

Private module of :mod:`imgprof.mm.join`. Every builder keeps the provenance of
its input (earlier steps and level, through :func:`imgprof._core.provenance.inherit`
or by copying rows of the input) and appends the ``mm.join`` step.
"""

from __future__ import annotations

import warnings
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._core.provenance import inherit, log_step, record
from .._core.validation import get_matrix, is_dask
from ._report import JoinReport
from ._sides import Side
from ._spec import KEY_SEP, AmbiguousKeyError


def dense(X: Any) -> np.ndarray:
    """A numpy array (a dask array is computed)."""
    if is_dask(X):
        X = X.compute()
    return np.asarray(X)


def keys_frame(keys_str: list[str], comp_names: list[str], report: JoinReport) -> pd.DataFrame:
    """Component values of each key string (looked up, never parsed back from the string)."""
    t = report.table.set_index("key")
    return t.loc[list(keys_str), comp_names].set_axis(list(keys_str), axis=0)


def _group_consensus(sub: ad.AnnData, by: str, method: str) -> ad.AnnData:
    """Consensus profile per group with :func:`imgprof.pp.consensus` (median, mean or MODZ)."""
    from ..pp import consensus as _consensus

    with warnings.catch_warnings():
        # all-NaN features within a group stay NaN and are warned about by pp itself; silence duplicates here
        warnings.simplefilter("ignore", category=UserWarning)
        return _consensus(sub, by=by, operation=method, count_key=None, keep_metadata=True, single_replicate="ignore")


def _exploded(adata: ad.AnnData, side: Side, matched: set, comp_names: list[str], report: JoinReport) -> ad.AnnData:
    """One row per (row, matched key) of ``adata``, with ``mm_key`` and ``mm_<component>``."""
    rows_l, ks = [], []
    for i, tuples in enumerate(side.row_keys):
        for t in tuples:
            k = KEY_SEP.join(t)
            if k in matched:
                rows_l.append(i)
                ks.append(k)
    rows = np.asarray(rows_l, dtype=int)
    X = dense(get_matrix(adata))[rows]
    obs = adata.obs.iloc[rows].copy()
    obs.index = [f"{side.name}:{adata.obs_names[i]}:{k}" for i, k in zip(rows, ks)]
    obs["mm_key"] = pd.Categorical(ks)
    kf = keys_frame(ks, comp_names, report)
    for c in comp_names:
        obs[f"mm_{c}"] = kf[c].to_numpy()
    sub = ad.AnnData(X=X, obs=obs, var=adata.var.copy())
    inherit(sub, adata)  # earlier provenance steps and the level travel with the rows
    rec = record(sub)
    if rec.level is None:
        rec.level = "well"
    return sub


def perturbation_mods(inputs: tuple, sides: list[Side], report: JoinReport, consensus: str, params: dict) -> dict:
    """``level="perturbation"``: one consensus profile per matched key in each modality."""
    matched = report.matched
    comp_names = report.summary["keys"]
    mods = {}
    for x, s in zip(inputs, sides):
        sub = _exploded(x, s, set(matched), comp_names, report)
        cons = _group_consensus(sub, "mm_key", consensus)
        cons.obs_names = cons.obs["mm_key"].astype(str).to_numpy()
        cons = cons[matched].copy()
        kf = keys_frame(matched, comp_names, report)
        for c in comp_names:
            cons.obs[f"mm_{c}"] = kf[c].to_numpy()
        counts = sub.obs["mm_key"].astype(str).value_counts()
        cons.obs["mm_n_profiles"] = counts.reindex(matched).to_numpy().astype(int)
        record(cons).level = "consensus"
        log_step(cons, "mm.join", params, modality=s.name, n_keys=len(matched))
        mods[s.name] = cons
    return mods


def paired_mods(inputs: tuple, sides: list[Side], report: JoinReport, params: dict) -> dict:
    """``level="well", paired=True``: the one row of each matched key in each modality, shared names."""
    matched = report.matched
    a_name, b_name = (s.name for s in sides)
    t = report.table
    multi = t.loc[(t["status"] == "matched") & ((t[f"n_{a_name}"] > 1) | (t[f"n_{b_name}"] > 1))]
    if len(multi):
        ex = multi.head(5)[["key", f"n_{a_name}", f"n_{b_name}"]].to_dict("records")
        raise AmbiguousKeyError(
            f"join(level='well', paired=True): {len(multi)} of {len(matched)} matched key(s) identify several rows, "
            f"e.g. {ex}. Add keys that make rows unique (replicate, plate, well), use level='perturbation' to "
            "take a consensus per key first, or paired=False to keep the rows unpaired.",
            report,
        )
    mods = {}
    for x, s in zip(inputs, sides):
        sub = _exploded(x, s, set(matched), report.summary["keys"], report)
        sub.obs_names = sub.obs["mm_key"].astype(str).to_numpy()
        sub = sub[matched].copy()
        log_step(sub, "mm.join", params, modality=s.name, n_keys=len(matched))
        mods[s.name] = sub
    return mods


def _unpaired_one(x: ad.AnnData, s: Side, cmask: np.ndarray, report: JoinReport, params: dict) -> ad.AnnData:
    mset = set(report.matched)
    comp_names = report.summary["keys"]
    keep = [i for i, ks in enumerate(s.row_keys) if cmask[i] or any(KEY_SEP.join(t) in mset for t in ks)]
    sub = x[keep].copy()  # a copy of the input's rows: its provenance (uns) comes along
    sub.X = dense(sub.X) if is_dask(sub.X) else sub.X
    sub.obs_names = [f"{s.name}:{n}" for n in sub.obs_names]
    sub.obs["mm_key"] = ["|".join(sorted({KEY_SEP.join(t) for t in s.row_keys[i] if KEY_SEP.join(t) in mset}))
                         for i in keep]
    for j, c in enumerate(comp_names):
        sub.obs[f"mm_{c}"] = ["|".join(sorted({t[j] for t in s.row_keys[i] if KEY_SEP.join(t) in mset})) for i in keep]
    sub.obs["mm_control"] = cmask[keep]
    # a control row is a control, even if its name (e.g. DMSO) also matched as a key
    ck = np.asarray(cmask[keep])
    for col in ["mm_key", *[f"mm_{c}" for c in comp_names]]:
        sub.obs.loc[ck, col] = ""
    report.summary.setdefault("n_controls", {})[s.name] = int(ck.sum())
    report.summary.setdefault("n_controls_with_matched_key", {})[s.name] = int(
        sum(1 for i in keep if cmask[i] and any(KEY_SEP.join(t) in mset for t in s.row_keys[i]))
    )
    log_step(sub, "mm.join", params, modality=s.name, n_keys=len(mset), n_controls=int(cmask.sum()))
    return sub


def unpaired_mods(inputs: tuple, sides: list[Side], report: JoinReport, ctrl_masks: list, params: dict) -> dict:
    """``level="well", paired=False``: every row of a matched key (and the controls), names prefixed by modality."""
    return {s.name: _unpaired_one(x, s, cmask, report, params) for x, s, cmask in zip(inputs, sides, ctrl_masks)}
