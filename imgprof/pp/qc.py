"""Quality-control flags written to ``.obs``: ``ip.pp.qc``.

Flags, scores and a pass/fail column are added as ``Metadata_qc_*`` columns;
rows are never removed (subset with ``adata[adata.obs["Metadata_qc_pass"]]``
when you decide to).

* Well level: cell-count outliers (robust z-score of the count within each
  plate, optional absolute floor) and feature outliers (share of features whose
  robust z-score against the plate is extreme).
* Both levels: rows holding ±inf, or mostly NaN features.
* Single-cell level: the same feature-outlier score per cell, and optional
  coSMicQC-style threshold rules on named features (e.g. small nuclei with a
  low form factor).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from functools import singledispatch
from typing import Any, cast

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.dispatch import DaskArray, to_numpy
from .._core.docs import doc_params
from .._core.groups import group_codes, group_median_mad, group_reduce
from .._core.provenance import record
from .._core.selection import resolve_rows
from .._core.store import store
from .._core.validation import (
    as_list,
    check_adata,
    check_float,
    check_int,
    check_obs_keys,
    finish,
    get_matrix,
    start,
)

#: Count columns looked up (in this order) when ``count_key="auto"``.
COUNT_KEYS = ("Metadata_Object_Count", "Metadata_Count_Cells", "Metadata_Cells_Count", "Metadata_Count_Nuclei")

#: coSMicQC-style rules: ``{feature: z threshold}``; a negative threshold flags
#: ``z <= t``, a positive one ``z >= t``; a cell is flagged when all hold.
PRESETS: dict[str, dict[str, float]] = {
    "small_and_low_formfactor_nuclei": {"Nuclei_AreaShape_Area": -1.0, "Nuclei_AreaShape_FormFactor": -1.0},
    "elongated_nuclei": {"Nuclei_AreaShape_Eccentricity": 2.0},
    "large_nuclei": {"Nuclei_AreaShape_Area": 2.0, "Nuclei_AreaShape_FormFactor": -2.0},
}


def _feature_outliers(X, codes, med, scale, z: float, block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per row: share of usable features with ``|x - med| / scale > z``, and the number of usable features."""
    n, p = X.shape
    usable = np.isfinite(med) & np.isfinite(scale) & (scale > 0)  # (groups, p)
    n_extreme = np.zeros(n)
    n_usable = np.zeros(n)
    safe_scale = np.where(usable, scale, 1.0)
    for c0 in range(0, p, block):
        c1 = min(c0 + block, p)
        Xb = np.asarray(X[:, c0:c1], dtype=np.float64)
        ok = usable[codes, c0:c1] & np.isfinite(Xb)
        with np.errstate(invalid="ignore"):
            zb = np.abs(Xb - med[codes, c0:c1]) / safe_scale[codes, c0:c1]
        n_extreme += (ok & (zb > z)).sum(axis=1)
        n_usable += ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = n_extreme / n_usable
    return frac, n_usable


@singledispatch
def _outlier_share(X: Any, codes: np.ndarray, med: np.ndarray, scale: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_feature_outliers` on numpy, or block by block on dask (all features of a row in one block)."""
    return _feature_outliers(np.asarray(X), codes, med, scale, z)


@_outlier_share.register(DaskArray)
def _(X: Any, codes: np.ndarray, med: np.ndarray, scale: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    import dask.array as da

    Xr = X.rechunk({1: -1})
    cd = da.from_array(codes, chunks=(Xr.chunks[0],))

    def blk(xb, cb):
        f, u = _feature_outliers(np.asarray(xb), np.asarray(cb).ravel(), med, scale, z)
        return np.stack([f, u], axis=1)

    res = da.map_blocks(blk, Xr, cd[:, None], dtype=np.float64, chunks=(Xr.chunks[0], (2,)))
    out = np.asarray(res.compute())
    return out[:, 0], out[:, 1]


@singledispatch
def _inf_as_nan(X: Any) -> Any:
    """``X`` with ±inf as NaN (robust statistics over finite values only); ``X`` itself when it has none."""
    return np.where(np.isinf(X), np.nan, X) if (X.dtype.kind == "f" and np.isinf(X).any()) else X


@_inf_as_nan.register(DaskArray)
def _(X: Any) -> Any:
    import dask.array as da

    return da.where(da.isinf(X), np.nan, X) if X.dtype.kind == "f" else X


@singledispatch
def _nan_inf_per_row(X: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per row: number of NaN and of ±inf values (zeros for a non-float matrix)."""
    if X.dtype.kind != "f":
        return np.zeros(X.shape[0], dtype=np.int64), np.zeros(X.shape[0], dtype=np.int64)
    return np.isnan(X).sum(axis=1), np.isinf(X).sum(axis=1)


@_nan_inf_per_row.register(DaskArray)
def _(X: Any) -> tuple[np.ndarray, np.ndarray]:
    if X.dtype.kind != "f":
        return np.zeros(X.shape[0], dtype=np.int64), np.zeros(X.shape[0], dtype=np.int64)
    import dask.array as da

    n_nan, n_inf = da.compute(da.isnan(X).sum(axis=1), da.isinf(X).sum(axis=1))
    return np.asarray(n_nan), np.asarray(n_inf)


def _robust_count_z(counts: np.ndarray, codes: np.ndarray, n_groups: int, ref: np.ndarray) -> np.ndarray:
    c = counts.astype(np.float64)[:, None]
    med, mad = group_median_mad(c, np.where(ref, codes, -1), n_groups, mad_scale="normal", inf="propagate")
    assert mad is not None  # want_mad is the default
    m, s = med[codes, 0], mad[codes, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        zc = (c[:, 0] - m) / s
    zc[~(s > 0)] = np.nan
    return zc


def _resolve_rules(spec: Any) -> dict[str, dict[str, float]]:
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, Mapping):
        rules = {str(k): dict(v) for k, v in spec.items()}
    else:
        rules = {}
        for name in spec:
            if name not in PRESETS:
                raise ValueError(f"feature_thresholds: unknown preset {name!r}; choose from {list(PRESETS)} or pass a dict.")
            rules[name] = dict(PRESETS[name])
    for name, conds in rules.items():
        if not conds or any(t == 0 for t in conds.values()):
            raise ValueError(f"feature_thresholds[{name!r}]: give nonzero z thresholds for at least one feature.")
    return rules


def _check_rules(adata: AnnData, feature_thresholds: Any) -> dict[str, dict[str, float]]:
    rules = _resolve_rules(feature_thresholds) if feature_thresholds is not None else {}
    for rule, conds in rules.items():
        missing_feats = [f for f in conds if f not in adata.var_names]
        if missing_feats:
            raise KeyError(f"feature_thresholds[{rule!r}]: feature(s) {missing_feats} not in adata.var_names.")
    return rules


def _level(adata: AnnData, level: str) -> str:
    if level == "auto":
        return "single_cell" if record(adata).get("level", "well") == "single_cell" else "well"
    if level not in ("well", "single_cell"):
        raise ValueError(f"level must be 'well', 'single_cell' or 'auto', got {level!r}.")
    return level


def _reference(adata: AnnData, by: list[str], controls: Any) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """Group codes, number of groups, reference rows, and groups with fewer than 3 reference rows (warned)."""
    ref = resolve_rows(adata, controls, param="controls")
    if by:
        codes, groups = group_codes(adata.obs, by, param="by")
    else:
        codes, groups = np.zeros(adata.n_obs, dtype=np.int64), pd.DataFrame(index=[0])
    n_groups = len(groups)
    ref_per_group = np.bincount(codes[ref], minlength=n_groups)
    if controls is not None and (ref_per_group == 0).any():
        missing = groups.loc[ref_per_group == 0].head(5).to_dict("records")
        raise ValueError(
            f"controls={controls!r} selects no row in {int((ref_per_group == 0).sum())} group(s) of {by}, e.g. {missing}."
        )
    small = ref_per_group < 3
    if small.any():
        warnings.warn(
            f"qc: {int(small.sum())} group(s) of {by or 'all rows'} have fewer than 3 reference rows "
            f"(e.g. {groups.loc[small].head(3).to_dict('records')}); their rows get no z-scores and are not flagged.",
            UserWarning,
            stacklevel=3,
        )
    return codes, n_groups, ref, small


def _count_columns(
    adata: AnnData, count_key: str | None, codes: np.ndarray, n_groups: int, ref: np.ndarray, *,
    count_z: float, min_cells: int | None,
) -> tuple[str | None, dict[str, np.ndarray]]:
    """The count key used and the ``count_z``/``low_count`` columns (none without a count column)."""
    obs = adata.obs
    if count_key == "auto":
        found = [k for k in COUNT_KEYS if k in obs.columns]
        count_key = found[0] if found else None
        if count_key is None:
            warnings.warn(
                f"qc: no cell-count column found (looked for {list(COUNT_KEYS)}); count flags skipped. "
                "Pass count_key= to name it.",
                UserWarning,
                stacklevel=3,
            )
            return None, {}
    else:
        check_obs_keys(adata, count_key, param="count_key")
    counts = pd.to_numeric(obs[count_key], errors="raise").to_numpy(dtype=np.float64)
    if np.isnan(counts).any():
        raise ValueError(f"count_key={count_key!r} has {int(np.isnan(counts).sum())} missing value(s).")
    zc = _robust_count_z(counts, codes, n_groups, ref)
    low = np.nan_to_num(zc, nan=0.0) < -count_z
    if min_cells is not None:
        low |= counts < min_cells
    return count_key, {"count_z": zc, "low_count": low}


def _rule_columns(
    Xs: Any, rules: dict[str, dict[str, float]], var_names: pd.Index, codes: np.ndarray, ref_codes: np.ndarray, n_groups: int
) -> dict[str, np.ndarray]:
    """One flag per coSMicQC rule set: every condition on the classic z-score (ddof=0) holds."""
    names = list(map(str, var_names))
    out = {}
    for rule, conds in rules.items():
        sub = np.asarray(to_numpy(Xs[:, [names.index(f) for f in conds]]), dtype=np.float64)
        # scipy.stats.zscore: ddof=0
        mean = group_reduce(sub, ref_codes, n_groups, "mean", ddof=0, inf="propagate")
        std = group_reduce(sub, ref_codes, n_groups, "std", ddof=0, inf="propagate")
        with np.errstate(invalid="ignore", divide="ignore"):
            zs = (sub - mean[codes]) / std[codes]
        hit = np.ones(sub.shape[0], dtype=bool)
        for j, t in enumerate(conds.values()):
            zj = zs[:, j]
            hit &= np.where(np.isnan(zj), False, zj <= t if t < 0 else zj >= t)
        out[rule] = hit
    return out


@doc_params("layer", "copy", "returns_copy")
def qc(
    adata: AnnData,
    *,
    by: str | Sequence[str] | None = "Metadata_Plate",
    level: str = "auto",
    controls: Any = None,
    count_key: str | None = "auto",
    min_cells: int | None = None,
    count_z: float = 3.0,
    outlier_z: float = 5.0,
    outlier_fraction: float = 0.25,
    max_nan_fraction: float = 0.5,
    feature_thresholds: str | Sequence[str] | Mapping[str, Mapping[str, float]] | None = None,
    layer: str | None = None, key_added: str = "Metadata_qc", copy: bool = False,
) -> AnnData | None:
    """Flag low-count wells and outlier wells or cells in ``.obs``; never removes rows.

    Parameters
    ----------
    adata
        Well-level or single-cell profiles (``.X`` numpy or dask). Use raw or
        normalized features: every score is a robust z-score against the
        ``by`` group, so scales do not matter.
    by
        ``.obs`` column(s) within which medians and MADs are computed (default
        per plate; ``None`` = all rows together).
    level
        ``"well"``, ``"single_cell"``, or ``"auto"`` (the level recorded by the
        step that built ``adata``; ``"well"`` when none is).
    controls
        Reference rows for the medians/MADs (query string, boolean mask or obs
        names), e.g. ``"Metadata_control_type == 'negcon'"``; default all rows.
        A query matching nothing, or a ``by`` group without reference rows, raises.
    count_key
        Cell-count column for the count flags (well level). ``"auto"`` looks for
        :data:`COUNT_KEYS`; ``None`` skips the count flags.
    min_cells
        Absolute floor: wells with fewer cells are flagged (default: none).
    count_z
        Wells whose count lies more than ``count_z`` robust SDs *below* the
        ``by``-group median are flagged.
    outlier_z, outlier_fraction
        A row is a feature outlier when more than ``outlier_fraction`` of its
        usable features (finite, with a nonzero MAD in its group) have
        ``|robust z| > outlier_z``.
    max_nan_fraction
        Rows with a larger share of NaN features are flagged ``_missing``.
    feature_thresholds
        Single-cell rule sets (coSMicQC style): names of :data:`PRESETS`, or
        ``{name: {feature: z}}``. z-scores here are classic ``(x - mean) / std`` (``ddof=0``, as ``scipy.stats.zscore``)
        over the ``by`` group; a cell matches a rule set when every condition
        holds (negative threshold: ``z <= t``; positive: ``z >= t``). Default none.
    {layer}
    key_added
        The results are per-observation values, so they go to ``.obs`` (one
        meaning of ``key_added`` per kind of result, see :mod:`imgprof._core.store`):
        ``key_added`` is the prefix of the new columns ``{key_added}_<name>``.
    {copy}

    Returns
    -------
    {returns_copy}
        Columns written (prefix ``key_added``): ``_count_z``, ``_low_count``
        (well level with a count column); ``_outlier_fraction``, ``_outlier``;
        ``_nan_fraction``, ``_missing`` (share of NaN features above
        ``max_nan_fraction``), ``_inf`` (any ±inf feature); ``_<rule>`` per
        threshold rule; and ``_pass`` (no flag set).

    Notes
    -----
    Groups with fewer than 3 reference rows get no z-scores (NaN scores, never
    flagged) and a warning. Non-finite values (NaN, ±inf) are left out of the
    medians, MADs and outlier shares.

    Examples
    --------
    >>> import imgprof as ip
    >>> wells = ip.datasets.simulate(n_plates=2, n_features=30, seed=0)
    >>> ip.pp.qc(wells, by="Metadata_Plate", min_cells=10)
    >>> int(wells.obs["Metadata_qc_pass"].sum()) <= wells.n_obs
    True
    """
    check_adata(adata)
    min_cells = check_int(min_cells, "min_cells", min_value=0, allow_none=True)
    count_z = cast(float, check_float(count_z, "count_z", min_value=0.0, include_min=False))
    outlier_z = cast(float, check_float(outlier_z, "outlier_z", min_value=0.0, include_min=False))
    outlier_fraction = cast(float, check_float(outlier_fraction, "outlier_fraction", min_value=0.0, max_value=1.0))
    max_nan_fraction = cast(float, check_float(max_nan_fraction, "max_nan_fraction", min_value=0.0, max_value=1.0))
    if not isinstance(key_added, str) or not key_added:
        raise TypeError(f"key_added must be a non-empty string (the prefix of the QC columns), got {key_added!r}.")
    if adata.n_obs == 0:
        raise ValueError("adata has 0 observations; nothing to check.")
    level = _level(adata, level)
    rules = _check_rules(adata, feature_thresholds)
    by = as_list(by)
    check_obs_keys(adata, by, param="by")
    codes, n_groups, ref, small = _reference(adata, by, controls)
    X: Any = get_matrix(adata, layer=layer)  # numeric dtype checked there
    X = X if isinstance(X, DaskArray) else np.asarray(X)
    ref_codes = np.where(ref, codes, -1)
    Xs = _inf_as_nan(X)  # robust statistics over finite values only
    med, mad = group_median_mad(Xs, ref_codes, n_groups, mad_scale="normal", inf="propagate")
    med[small] = np.nan
    frac, _ = _outlier_share(Xs, codes, med, cast(np.ndarray, mad), outlier_z)

    adata = start(adata, copy)
    cols: dict[str, np.ndarray] = {}
    if level == "well" and count_key is not None:
        count_key, cols = _count_columns(adata, count_key, codes, n_groups, ref & ~small[codes], count_z=count_z,
                                         min_cells=min_cells)
    n_nan, n_inf = _nan_inf_per_row(X)
    nan_frac = n_nan / max(X.shape[1], 1)
    cols |= {"outlier_fraction": frac, "outlier": np.nan_to_num(frac, nan=0.0) > outlier_fraction,
             "nan_fraction": nan_frac, "missing": nan_frac > max_nan_fraction, "inf": n_inf > 0}
    hits = _rule_columns(Xs, rules, adata.var_names, codes, ref_codes, n_groups)
    flags = ["low_count"] * ("low_count" in cols) + ["outlier", "missing", "inf", *hits]
    cols |= hits
    cols["pass"] = passed = ~np.any(np.column_stack([cols[f] for f in flags]), axis=1)
    summary: dict[str, Any] = {f"n_{f}": int(cols[f].sum()) for f in flags}
    store(
        adata, pd.DataFrame(cols, index=adata.obs_names), slot="obs", key_added=key_added, function="pp.qc",
        params={"by": by, "level": level, "controls": controls, "layer": layer, "count_key": count_key,
                "min_cells": min_cells, "count_z": count_z, "outlier_z": outlier_z, "outlier_fraction": outlier_fraction,
                "max_nan_fraction": max_nan_fraction, "feature_thresholds": feature_thresholds, "key_added": key_added},
        columns=[f"{key_added}_{c}" for c in cols], n_failed=int((~passed).sum()),
        n_groups_without_zscores=int(small.sum()), **summary,
    )
    return finish(adata, copy)
