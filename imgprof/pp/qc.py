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

import anndata as ad
import numpy as np
import pandas as pd

from .._core.groups import group_codes, group_median_mad
from .._core.provenance import get_level, log_step
from .._core.validation import (
    as_list,
    check_adata,
    check_float,
    check_int,
    check_obs_keys,
    finish,
    get_matrix,
    is_dask,
    resolve_mask,
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


def _feature_outliers_any(X, codes, med, scale, z):
    if not is_dask(X):
        return _feature_outliers(np.asarray(X), codes, med, scale, z)
    import dask.array as da

    Xr = X.rechunk({1: -1})
    cd = da.from_array(codes, chunks=(Xr.chunks[0],))

    def blk(xb, cb):
        f, u = _feature_outliers(np.asarray(xb), np.asarray(cb).ravel(), med, scale, z)
        return np.stack([f, u], axis=1)

    res = da.map_blocks(blk, Xr, cd[:, None], dtype=np.float64, chunks=(Xr.chunks[0], (2,)))
    out = np.asarray(res.compute())
    return out[:, 0], out[:, 1]


def _robust_count_z(counts: np.ndarray, codes: np.ndarray, n_groups: int, ref: np.ndarray) -> np.ndarray:
    c = counts.astype(np.float64)[:, None]
    med, mad = group_median_mad(c, np.where(ref, codes, -1), n_groups, mad_scale="normal", inf="propagate")
    m, s = med[codes, 0], mad[codes, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        zc = (c[:, 0] - m) / s
    zc[~(s > 0)] = np.nan
    return zc


def qc(
    adata: ad.AnnData,
    *,
    by: str | Sequence[str] | None = "Metadata_Plate",
    level: str = "auto",
    controls=None,
    layer: str | None = None,
    count_key: str | None = "auto",
    min_cells: int | None = None,
    count_z: float = 3.0,
    outlier_z: float = 5.0,
    outlier_fraction: float = 0.25,
    max_nan_fraction: float = 0.5,
    feature_thresholds: str | Sequence[str] | Mapping[str, Mapping[str, float]] | None = None,
    key_added: str = "Metadata_qc",
    copy: bool = False,
) -> ad.AnnData | None:
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
        ``"well"``, ``"single_cell"``, or ``"auto"`` (from ``adata.uns['imgprof']['level']``).
    controls
        Reference rows for the medians/MADs (query string, boolean mask or obs
        names), e.g. ``"Metadata_control_type == 'negcon'"``; default all rows.
        A query matching nothing, or a ``by`` group without reference rows, raises.
    layer
        Use ``adata.layers[layer]``.
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
    key_added
        Prefix of the new ``.obs`` columns.
    copy
        Return a copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` or the copy. Columns (prefix ``key_added``):
    ``_count_z``, ``_low_count`` (well level with a count column);
    ``_outlier_fraction``, ``_outlier``; ``_nan_fraction``, ``_missing``
    (share of NaN features above ``max_nan_fraction``), ``_inf`` (any ±inf
    feature); ``_<rule>`` per threshold rule; and ``_pass`` (no flag set).

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
    count_z = check_float(count_z, "count_z", min_value=0.0, include_min=False)
    outlier_z = check_float(outlier_z, "outlier_z", min_value=0.0, include_min=False)
    outlier_fraction = check_float(outlier_fraction, "outlier_fraction", min_value=0.0, max_value=1.0)
    max_nan_fraction = check_float(max_nan_fraction, "max_nan_fraction", min_value=0.0, max_value=1.0)
    if not isinstance(key_added, str) or not key_added:
        raise TypeError(f"key_added must be a non-empty string (the prefix of the QC columns), got {key_added!r}.")
    if adata.n_obs == 0:
        raise ValueError("adata has 0 observations; nothing to check.")
    if level == "auto":
        level = get_level(adata, "well")
        level = "single_cell" if level == "single_cell" else "well"
    if level not in ("well", "single_cell"):
        raise ValueError(f"level must be 'well', 'single_cell' or 'auto', got {level!r}.")
    if not (0 <= outlier_fraction <= 1):
        raise ValueError(f"outlier_fraction must be within [0, 1], got {outlier_fraction}.")
    if outlier_z <= 0 or count_z <= 0:
        raise ValueError("outlier_z and count_z must be positive.")
    rules = _resolve_rules(feature_thresholds) if feature_thresholds is not None else {}
    for rule, conds in rules.items():
        missing_feats = [f for f in conds if f not in adata.var_names]
        if missing_feats:
            raise KeyError(f"feature_thresholds[{rule!r}]: feature(s) {missing_feats} not in adata.var_names.")
    by = as_list(by)
    check_obs_keys(adata, by, param="by")
    ref = resolve_mask(adata, controls, param="controls")
    X = get_matrix(adata, layer=layer)  # numeric dtype checked there
    if is_dask(X):
        import dask.array as da
    else:
        X = np.asarray(X)
    if by:
        codes, groups = group_codes(adata.obs, by, param="by")
    else:
        codes, groups = np.zeros(adata.n_obs, dtype=np.int64), pd.DataFrame(index=[0])
    n_groups = len(groups)
    ref_per_group = np.bincount(codes[ref], minlength=n_groups)
    if controls is not None and (ref_per_group == 0).any():
        missing = groups.loc[ref_per_group == 0].head(5).to_dict("records")
        raise ValueError(f"controls={controls!r} selects no row in {int((ref_per_group == 0).sum())} group(s) of {by}, e.g. {missing}.")
    small = ref_per_group < 3
    if small.any():
        warnings.warn(
            f"qc: {int(small.sum())} group(s) of {by or 'all rows'} have fewer than 3 reference rows "
            f"(e.g. {groups.loc[small].head(3).to_dict('records')}); their rows get no z-scores and are not flagged.",
            UserWarning,
            stacklevel=2,
        )
    ref_codes = np.where(ref, codes, -1)
    # robust stats over finite values only (inf -> NaN for the statistics)
    if is_dask(X):
        Xs = da.where(da.isinf(X), np.nan, X) if X.dtype.kind == "f" else X
    else:
        Xs = np.where(np.isinf(X), np.nan, X) if (X.dtype.kind == "f" and np.isinf(X).any()) else X
    med, mad = group_median_mad(Xs, ref_codes, n_groups, mad_scale="normal", inf="propagate")
    med[small] = np.nan
    frac, n_usable = _feature_outliers_any(Xs, codes, med, mad, outlier_z)
    outlier = np.nan_to_num(frac, nan=0.0) > outlier_fraction
    adata = start(adata, copy)
    obs = adata.obs
    cols: list[str] = []
    flags: list[str] = []
    summary: dict = {}
    if level == "well" and count_key is not None:
        if count_key == "auto":
            found = [k for k in COUNT_KEYS if k in obs.columns]
            count_key = found[0] if found else None
            if count_key is None:
                warnings.warn(
                    f"qc: no cell-count column found (looked for {list(COUNT_KEYS)}); count flags skipped. "
                    "Pass count_key= to name it.",
                    UserWarning,
                    stacklevel=2,
                )
        else:
            check_obs_keys(adata, count_key, param="count_key")
        if count_key is not None:
            counts = pd.to_numeric(obs[count_key], errors="raise").to_numpy(dtype=np.float64)
            if np.isnan(counts).any():
                raise ValueError(f"count_key={count_key!r} has {int(np.isnan(counts).sum())} missing value(s).")
            zc = _robust_count_z(counts, codes, n_groups, ref & ~small[codes])
            low = np.nan_to_num(zc, nan=0.0) < -count_z
            if min_cells is not None:
                low |= counts < min_cells
            obs[f"{key_added}_count_z"] = zc
            obs[f"{key_added}_low_count"] = low
            cols += [f"{key_added}_count_z", f"{key_added}_low_count"]
            flags.append(f"{key_added}_low_count")
            summary["n_low_count"] = int(low.sum())
    obs[f"{key_added}_outlier_fraction"] = frac
    obs[f"{key_added}_outlier"] = outlier
    cols += [f"{key_added}_outlier_fraction", f"{key_added}_outlier"]
    flags.append(f"{key_added}_outlier")
    summary["n_outlier"] = int(outlier.sum())
    if X.dtype.kind == "f":
        if is_dask(X):
            n_nan, n_inf = da.compute(da.isnan(X).sum(axis=1), da.isinf(X).sum(axis=1))
            n_nan, n_inf = np.asarray(n_nan), np.asarray(n_inf)
        else:
            n_nan, n_inf = np.isnan(X).sum(axis=1), np.isinf(X).sum(axis=1)
    else:
        n_nan = n_inf = np.zeros(adata.n_obs, dtype=np.int64)
    nan_frac = n_nan / max(X.shape[1], 1)
    missing = nan_frac > max_nan_fraction
    has_inf = n_inf > 0
    obs[f"{key_added}_nan_fraction"] = nan_frac
    obs[f"{key_added}_missing"] = missing
    obs[f"{key_added}_inf"] = has_inf
    cols += [f"{key_added}_nan_fraction", f"{key_added}_missing", f"{key_added}_inf"]
    flags += [f"{key_added}_missing", f"{key_added}_inf"]
    summary["n_missing"] = int(missing.sum())
    summary["n_inf"] = int(has_inf.sum())
    if rules:
        names = list(map(str, adata.var_names))
        for rule, conds in rules.items():
            idx = [names.index(f) for f in conds]
            sub = Xs[:, idx]
            sub = np.asarray(sub.compute() if is_dask(sub) else sub, dtype=np.float64)
            mean = _group_stat(sub, ref_codes, n_groups, "mean")
            std = _group_stat(sub, ref_codes, n_groups, "std")
            with np.errstate(invalid="ignore", divide="ignore"):
                zs = (sub - mean[codes]) / std[codes]
            hit = np.ones(adata.n_obs, dtype=bool)
            for j, (f, t) in enumerate(conds.items()):
                zj = zs[:, j]
                hit &= np.where(np.isnan(zj), False, zj <= t if t < 0 else zj >= t)
            col = f"{key_added}_{rule}"
            obs[col] = hit
            cols.append(col)
            flags.append(col)
            summary[f"n_{rule}"] = int(hit.sum())
    passed = ~np.any(np.column_stack([obs[f].to_numpy(dtype=bool) for f in flags]), axis=1)
    obs[f"{key_added}_pass"] = passed
    cols.append(f"{key_added}_pass")
    log_step(
        adata, "pp.qc",
        {"by": by, "level": level, "controls": controls, "layer": layer, "count_key": count_key, "min_cells": min_cells,
         "count_z": count_z, "outlier_z": outlier_z, "outlier_fraction": outlier_fraction, "max_nan_fraction": max_nan_fraction,
         "feature_thresholds": feature_thresholds, "key_added": key_added},
        columns=cols, n_failed=int((~passed).sum()), n_groups_without_zscores=int(small.sum()), **summary,
    )
    return finish(adata, copy)


def _group_stat(sub, codes, n_groups, func):
    from .._core.groups import group_reduce

    return group_reduce(sub, codes, n_groups, func, ddof=0, inf="propagate")  # scipy.stats.zscore: ddof=0


def _resolve_rules(spec) -> dict[str, dict[str, float]]:
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
