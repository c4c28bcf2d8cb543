"""Normalize profiles against a reference set (controls), optionally per group (e.g. per plate).

Numerically the methods follow pycytominer 1.7.1 ``normalize``:

* ``standardize``: ``(x - mean) / std`` with the population std (``ddof=0``), and
  scikit-learn's ``StandardScaler`` rule for (near-)constant features;
* ``robustize``: ``(x - median) / IQR`` (scikit-learn ``RobustScaler``);
* ``mad_robustize``: ``(x - median) / (1.4826 * MAD + epsilon)`` (pycytominer's
  ``RobustMAD``, ``epsilon=1e-18``);
* ``spherize``: whitening, ``"ZCA"``, ``"PCA"``, ``"ZCA-cor"`` or ``"PCA-cor"``,
  with pycytominer's centring, rank handling and ``spherize_epsilon`` added to the
  singular values;
* ``inverse_normal``: rank-based inverse normal transform (scikit-learn's
  ``QuantileTransformer(output_distribution="normal")`` with
  ``n_quantiles = min(n_quantiles, n_reference_rows)``).

The statistics are fitted on the reference rows (``controls=``) of each group
(``by=``) and applied to every row of that group. The module has two layers:
array kernels (``_fit_*``/``_apply_*``, numpy only) and the AnnData wrapper
:func:`normalize`. Dask arrays are reduced with dask (per-group statistics) and
transformed lazily with ``map_blocks``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from .._core.features import record_values_changed
from .._core.groups import (
    group_codes,
    group_median_mad,
    group_reduce,
    group_sizes,
    sort_groups,
)
from .._core.guardrails import check_feature_dominance
from .._core.provenance import log_step
from .._core.validation import (
    check_bool,
    check_finite,
    check_float,
    check_int,
    check_numeric,
    finish,
    get_matrix,
    is_dask,
    resolve_mask,
    start,
)
from .._core.whitening import (
    EPS,
    constant_mask_sklearn,
    fit_whitener,
    spherize_moments,
    zca_from_gram,
)

__all__ = ["MAD_SCALE", "METHODS", "SPHERIZE_METHODS", "normalize"]

#: Normalization methods (pycytominer's names).
METHODS = ("standardize", "robustize", "mad_robustize", "spherize", "inverse_normal")
#: Sphering variants (pycytominer's names).
SPHERIZE_METHODS = ("ZCA", "PCA", "ZCA-cor", "PCA-cor")
#: MAD consistency factor used by pycytominer's ``RobustMAD`` (``scale=1/1.4826`` in scipy).
MAD_SCALE = 1.4826
#: scikit-learn's ``QuantileTransformer`` bound threshold.
_BOUNDS_THRESHOLD = 1e-7


# ----------------------------------------------------------------------------------------------
# array kernels (numpy only)
# ----------------------------------------------------------------------------------------------
def _group_quantiles(X: np.ndarray, order: np.ndarray, starts: np.ndarray, q: np.ndarray) -> list[np.ndarray]:
    """``np.nanpercentile(X[rows of g], q, axis=0)`` for every group (list of ``(len(q), p)``)."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns checked by the caller
        for g in range(starts.shape[0] - 1):
            rows = order[starts[g] : starts[g + 1]]
            Xg = X[rows]
            f = np.nanpercentile if np.isnan(Xg).any() else np.percentile
            out.append(np.atleast_2d(f(Xg, q, axis=0)))
    return out


def _fit_inverse_normal(Xg: np.ndarray, n_quantiles: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantile landmarks of the reference rows (scikit-learn ``QuantileTransformer`` fit)."""
    nq = max(1, min(int(n_quantiles), Xg.shape[0]))
    references = np.linspace(0, 1, nq, endpoint=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        f = np.nanpercentile if np.isnan(Xg).any() else np.percentile
        quantiles = f(Xg, references * 100, axis=0)
    return np.atleast_2d(quantiles), references


def _apply_inverse_normal(X: np.ndarray, quantiles: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Map ``X`` through the fitted quantiles onto a standard normal (column by column)."""
    from scipy.special import ndtri  # what scipy.stats.norm.ppf calls

    X = np.array(X, dtype=np.float64, copy=True)
    for j in range(X.shape[1]):
        col = X[:, j]
        qj = quantiles[:, j]
        lo, hi = qj[0], qj[-1]
        with np.errstate(invalid="ignore"):
            low_idx = col - _BOUNDS_THRESHOLD < lo
            high_idx = col + _BOUNDS_THRESHOLD > hi
        finite = ~np.isnan(col)
        xf = col[finite]
        col[finite] = 0.5 * (np.interp(xf, qj, references) - np.interp(-xf, -qj[::-1], -references[::-1]))
        col[high_idx] = 1.0
        col[low_idx] = 0.0
        X[:, j] = col
    with np.errstate(invalid="ignore", divide="ignore"):
        X = ndtri(X)
    clip_min = ndtri(_BOUNDS_THRESHOLD - np.spacing(1))
    clip_max = ndtri(1 - (_BOUNDS_THRESHOLD - np.spacing(1)))
    return np.clip(X, clip_min, clip_max)


def _center_scale_block(x, c, C, S):
    cc = np.asarray(c)[:, 0]
    x = np.asarray(x, dtype=np.float64)
    if C.shape[0] == 1:
        return (x - C[0]) / S[0]
    return (x - C[cc]) / S[cc]


def _spherize_block(x, c, means, scales, Ws):
    cc = np.asarray(c)[:, 0]
    x = np.asarray(x, dtype=np.float64)
    out = np.empty((x.shape[0], Ws[0].out_dim), dtype=np.float64)
    for g in np.unique(cc):
        rows = cc == g
        out[rows] = Ws[g].apply((x[rows] - means[g]) / scales[g])
    return out


def _inverse_normal_block(x, c, qs, refs):
    cc = np.asarray(c)[:, 0]
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for g in np.unique(cc):
        rows = cc == g
        out[rows] = _apply_inverse_normal(x[rows], qs[g], refs[g])
    return out


# ----------------------------------------------------------------------------------------------
# helpers of the AnnData wrapper
# ----------------------------------------------------------------------------------------------
def _group_label(groups: pd.DataFrame | None, g: int) -> str:
    if groups is None:
        return "all"
    row = groups.iloc[g]
    return str(row.iloc[0]) if len(row) == 1 else str(tuple(row.tolist()))


def _short(selection) -> str:
    if selection is None or isinstance(selection, str):
        return repr(selection)
    return f"<{type(selection).__name__} of length {len(selection)}>"


def _describe(names: Sequence[str], k: int = 5) -> str:
    names = list(names)
    more = f" (+{len(names) - k} more)" if len(names) > k else ""
    return f"{names[:k]}{more}"


def _zero_scale_report(zero: np.ndarray, var_names: Sequence[str], groups) -> tuple[list[str], str]:
    cols = np.flatnonzero(zero.any(axis=0))
    feats = [str(var_names[c]) for c in cols]
    gidx = np.flatnonzero(zero.any(axis=1))
    where = _describe([_group_label(groups, g) for g in gidx], 3)
    return feats, where


def _resolve_columns(adata, features) -> np.ndarray:
    if features is None:
        return np.arange(adata.n_vars)
    feats = [features] if isinstance(features, str) else list(features)
    idx = adata.var_names.get_indexer(pd.Index(feats))
    missing = [f for f, i in zip(feats, idx) if i < 0]
    if missing:
        raise KeyError(f"features: {_describe(missing)} not found in adata.var_names.")
    if len(set(idx.tolist())) != len(idx):
        raise ValueError("features: a feature is listed more than once.")
    return idx


def _as_float(X):
    check_numeric(X, param="adata.X")
    if is_dask(X):
        return X.astype(np.float64) if X.dtype != np.float64 else X
    return np.asarray(X).astype(np.float64, copy=False)


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------
def normalize(
    adata,
    method: Literal["standardize", "robustize", "mad_robustize", "spherize", "inverse_normal"] = "mad_robustize",
    controls=None,
    by: str | Sequence[str] | None = None,
    *,
    samples=None,
    features: Sequence[str] | None = None,
    epsilon: float = 1e-18,
    zero_scale: Literal["warn", "raise", "epsilon"] = "warn",
    spherize_method: Literal["ZCA", "PCA", "ZCA-cor", "PCA-cor"] = "ZCA-cor",
    spherize_center: bool = True,
    spherize_epsilon: float = 1e-6,
    n_quantiles: int = 1000,
    layer: str | None = None,
    key_added: str | None = None,
    max_variance_share: float | None = 0.10,
    outlier_cutoff: float | None = 500.0,
    copy: bool = False,
):
    """Normalize features against reference rows, per group.

    Parameters
    ----------
    adata
        Profiles (``.X`` numpy or dask; integer dtypes are converted to float64).
    method
        ``"standardize"``, ``"robustize"``, ``"mad_robustize"``, ``"spherize"`` or
        ``"inverse_normal"`` (pycytominer's names and formulas, see the module docs).
    controls
        Reference rows the statistics are fitted on: a pandas query on ``.obs``
        (``"Metadata_control_type == 'negcon'"``), a boolean mask, or obs names.
        ``None`` uses all rows. Every group must have at least two reference rows.
    by
        ``.obs`` column(s) defining groups normalized separately (e.g. ``"Metadata_Plate"``).
    samples
        pycytominer's name for ``controls`` (``"all"`` = all rows); give one of the two.
    features
        Features to normalize (default: all of ``adata.var_names``); the others are left as they are.
    epsilon
        ``mad_robustize`` fudge factor added to the MAD (pycytominer's ``mad_robustize_epsilon``).
    zero_scale
        Features whose reference scale is zero in a group (constant controls: zero
        MAD, zero variance or zero IQR). ``"warn"`` (default): warn, naming them, and
        divide by 1 instead, so the output is ``x - center`` (scikit-learn's rule,
        which pycytominer's standardize/robustize follow; pycytominer's
        mad_robustize divides by ``epsilon`` instead, giving values around 1e18).
        ``"raise"``: a ``ValueError`` naming them. ``"epsilon"``: pycytominer's
        exact mad_robustize numbers (divide by ``MAD + epsilon``), with a warning;
        raises when that would give inf (``epsilon=0``).
    spherize_method, spherize_center, spherize_epsilon
        Sphering variant, centring (required for the ``-cor`` variants) and the
        regularisation added to the singular values.
    n_quantiles
        Quantile landmarks of ``inverse_normal`` (capped at the number of reference rows).
    layer
        Normalize ``adata.layers[layer]`` instead of ``.X``.
    key_added
        Where the result goes. ``None``: overwrite the input (``.X`` or ``layer``);
        otherwise ``adata.layers[key_added]``. ``spherize`` with ``"PCA"``/``"PCA-cor"``
        leaves feature space, so its result goes to ``adata.obsm[key_added or "X_spherize"]``.
    max_variance_share, outlier_cutoff
        Guardrail on the output (in-memory matrices): a
        :class:`~imgprof.pp.FeatureDominanceWarning` when one feature carries more
        than ``max_variance_share`` of the total variance, or any value is beyond
        ``±outlier_cutoff`` (pycytominer's ``drop_outliers`` default, 500). Either
        ``None`` switches that check off. The shares are recorded in the provenance log.
    copy
        Return a normalized copy instead of modifying ``adata``.

    Returns
    -------
    ``None``, or the normalized AnnData when ``copy=True``. The step is recorded in
    the provenance log (``ip.provenance(adata)``).

    Raises
    ------
    ValueError
        inf values, a control query matching nothing (overall or in a group),
        groups with fewer than two reference rows, features that are all-NaN in
        a group's references, NaN with ``spherize``, constant reference features
        with ``spherize``, ``zero_scale="raise"`` with zero-scale features.
    KeyError
        A missing ``by`` column, layer or feature.

    Examples
    --------
    >>> import numpy as np, imgprof as ip
    >>> adata = ip.datasets.simulate(n_plates=2, seed=0)
    >>> ip.pp.normalize(adata, "mad_robustize", controls="Metadata_control_type == 'negcon'", by="Metadata_Plate")
    >>> ctrl = adata[adata.obs["Metadata_control_type"] == "negcon"]
    >>> float(abs(np.median(ctrl.X[ctrl.obs["Metadata_Plate"] == "plate_1"], axis=0)).max()) < 1e-12
    True
    """
    method = str(method).lower()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if spherize_method not in SPHERIZE_METHODS:
        raise ValueError(f"spherize_method must be one of {SPHERIZE_METHODS}, got {spherize_method!r}.")
    if method == "spherize" and spherize_method in ("ZCA-cor", "PCA-cor") and not spherize_center:
        raise ValueError("spherize_method='ZCA-cor'/'PCA-cor' require spherize_center=True.")
    if zero_scale not in ("warn", "raise", "epsilon"):
        raise ValueError(f"zero_scale must be 'warn', 'raise' or 'epsilon', got {zero_scale!r}.")
    if method == "mad_robustize":
        if epsilon is None:
            raise ValueError("epsilon must be a finite number >= 0, got None.")
        check_float(epsilon, "epsilon", min_value=0.0)
    if spherize_epsilon is None:
        raise ValueError("spherize_epsilon must be a finite number >= 0, got None.")
    check_float(spherize_epsilon, "spherize_epsilon", min_value=0.0)
    check_bool(spherize_center, "spherize_center")
    n_quantiles = check_int(n_quantiles, "n_quantiles", min_value=1)
    if samples is not None:
        if controls is not None:
            raise ValueError("Give either controls= or samples= (pycytominer's name), not both.")
        controls = None if isinstance(samples, str) and samples == "all" else samples

    adata = start(adata, copy)
    if adata.n_obs == 0:
        raise ValueError("adata has 0 observations; nothing to normalize.")
    X_in = get_matrix(adata, layer=layer)
    in_dtype = X_in.dtype
    dask_mode = is_dask(X_in)
    cols = _resolve_columns(adata, features)
    all_cols = cols.size == adata.n_vars and (cols == np.arange(adata.n_vars)).all()
    var_names = adata.var_names[cols]
    X = _as_float(X_in if all_cols else X_in[:, cols])
    what = f"adata.layers[{layer!r}]" if layer is not None else "adata.X"
    if not dask_mode:
        check_finite(X, what=what, var_names=var_names, allow_nan=method != "spherize")
    elif method != "spherize":
        _check_inf_dask(X, var_names, what)  # before any kernel sees the values

    mask = resolve_mask(adata, controls, param="controls")
    if by is not None:
        codes, groups = group_codes(adata.obs, by, param="by")
        key_df = adata.obs.loc[:, list(groups.columns)]
        if key_df.isna().any().any():
            bad = key_df.columns[key_df.isna().any()].tolist()
            raise ValueError(
                f"by: column(s) {bad} have missing values in {int(key_df.isna().any(axis=1).sum())} row(s); "
                "fill them (or subset the AnnData) so that every row belongs to a group."
            )
    else:
        codes, groups = np.zeros(adata.n_obs, dtype=np.int64), None
    n_groups = 1 if groups is None else len(groups)
    fit_codes = np.where(mask, codes, -1)
    n_ref = group_sizes(fit_codes, n_groups)
    none = np.flatnonzero(n_ref == 0)
    if none.size:
        raise ValueError(
            f"controls={_short(controls)} selects no observation in group(s) {_describe([_group_label(groups, g) for g in none])} "
            f"of by={by!r}; every group needs reference rows."
        )
    single = np.flatnonzero(n_ref < 2)
    if single.size:
        raise ValueError(
            f"controls={_short(controls)} selects a single observation in group(s) "
            f"{_describe([_group_label(groups, g) for g in single])} of by={by!r}; at least two are needed to "
            "estimate a scale. Pool groups (a coarser by=) or use more controls."
        )

    extra: dict = {"n_groups": n_groups, "n_reference_rows": int(n_ref.sum())}
    obsm_out = None
    if method in ("standardize", "robustize", "mad_robustize"):
        C, S, zero = _fit_center_scale(X, fit_codes, n_groups, method, var_names, what, dask_mode)
        _check_all_nan(C, var_names, groups)
        if method == "mad_robustize":
            S = S + epsilon  # pycytominer: (x - median) / (mad + epsilon)
        if zero.any():
            feats, where = _zero_scale_report(zero, var_names, groups)
            extra["zero_scale_features"] = feats
            if zero_scale == "raise":
                raise ValueError(
                    f"normalize({method!r}): {len(feats)} feature(s) have zero reference scale in group(s) {where}: "
                    f"{_describe(feats)}. Drop them first (ip.pp.feature_select(..., operation='variance_threshold', "
                    "samples=controls)) or use zero_scale='warn'."
                )
            if zero_scale == "epsilon" and method == "mad_robustize":
                if epsilon == 0:
                    raise ValueError(
                        f"normalize('mad_robustize', zero_scale='epsilon', epsilon=0): {len(feats)} feature(s) have "
                        f"zero MAD in group(s) {where} ({_describe(feats)}); dividing by 0 gives inf/NaN."
                    )
                warnings.warn(
                    f"normalize('mad_robustize'): {len(feats)} feature(s) have zero MAD in group(s) {where} "
                    f"({_describe(feats)}); as in pycytominer they are divided by epsilon={epsilon:g}, giving huge values.",
                    UserWarning,
                    stacklevel=2,
                )
            else:
                S = np.where(zero, 1.0, S)
                warnings.warn(
                    f"normalize({method!r}): {len(feats)} feature(s) have zero reference scale in group(s) {where} "
                    f"({_describe(feats)}); they are centred but divided by 1 instead of 0. "
                    "Consider dropping them (ip.pp.feature_select).",
                    UserWarning,
                    stacklevel=2,
                )
        result = _transform_center_scale(X, codes, C, S, dask_mode)
    elif method == "inverse_normal":
        qs, refs = _fit_inverse_normal_groups(X, fit_codes, n_groups, n_quantiles, dask_mode)
        _check_all_nan(np.stack([q[0] for q in qs]), var_names, groups)
        result = _transform_inverse_normal(X, codes, qs, refs, n_groups, dask_mode)
    else:  # spherize
        result, ranks = _spherize(
            X, codes, fit_codes, n_groups, spherize_method, spherize_center, spherize_epsilon, var_names, groups,
            what, dask_mode,
        )
        extra["rank"] = ranks
        if spherize_method in ("PCA", "PCA-cor"):
            obsm_out = key_added or "X_spherize"

    if in_dtype == np.float32:
        result = result.astype(np.float32)
    dom = check_feature_dominance(
        result, None if obsm_out is not None else var_names, where=f"normalize({method!r})",
        max_share=max_variance_share, outlier_cutoff=outlier_cutoff,
    )
    if dom is not None:
        extra["top_variance_share"] = [[n, round(v, 4)] for n, v in dom["top"]]
        extra["max_abs_value"] = dom["max_abs"]
        if dom["warning"]:
            extra["guardrail_warning"] = dom["warning"]
    if obsm_out is not None:
        adata.obsm[obsm_out] = result
        target = f"obsm[{obsm_out!r}]"
    else:
        if not all_cols:
            result = _assemble(X_in, cols, result, dask_mode, in_dtype)
        if key_added is not None:
            adata.layers[key_added] = result
            target = f"layers[{key_added!r}]"
        elif layer is not None:
            adata.layers[layer] = result
            target = f"layers[{layer!r}]"
        else:
            adata.X = result
            record_values_changed(adata)  # int features are floats now: to_pandas must not truncate them
            target = "X"
    log_step(
        adata,
        "pp.normalize",
        {
            "method": method,
            "controls": controls if controls is None or isinstance(controls, str) else f"<selection of {int(mask.sum())} rows>",
            "by": by,
            "features": None if features is None else len(cols),
            "epsilon": epsilon,
            "zero_scale": zero_scale,
            "spherize_method": spherize_method if method == "spherize" else None,
            "spherize_center": spherize_center if method == "spherize" else None,
            "spherize_epsilon": spherize_epsilon if method == "spherize" else None,
            "n_quantiles": n_quantiles if method == "inverse_normal" else None,
            "layer": layer,
            "key_added": key_added,
            "max_variance_share": max_variance_share,
            "outlier_cutoff": outlier_cutoff,
        },
        output=target,
        **extra,
    )
    return finish(adata, copy)


def _assemble(X_in, cols, result, dask_mode, in_dtype):
    """Put the normalized columns back among the untouched ones."""
    if dask_mode:
        import dask.array as da

        p = X_in.shape[1]
        others = np.setdiff1d(np.arange(p), cols)
        full = da.concatenate([result, X_in[:, others].astype(result.dtype)], axis=1)
        pos = np.empty(p, dtype=np.int64)
        pos[np.concatenate([cols, others])] = np.arange(p)
        return full[:, pos]
    out_dtype = np.float32 if in_dtype == np.float32 else np.float64
    out = np.array(X_in, dtype=out_dtype, copy=True)
    out[:, cols] = result
    return out


def _check_inf_dask(X, var_names, what) -> None:
    import dask.array as da

    n_inf = np.asarray(da.isinf(X).sum(axis=0).compute())
    cols = np.flatnonzero(n_inf)
    if cols.size:
        raise ValueError(
            f"{what} contains {int(n_inf.sum())} inf value(s) in {cols.size} column(s), e.g. "
            f"{_describe([str(var_names[c]) for c in cols])}. Replace them (e.g. with NaN) first."
        )


def _check_all_nan(C: np.ndarray, var_names, groups) -> None:
    bad = np.isnan(C)
    if bad.any():
        feats, where = _zero_scale_report(bad, var_names, groups)
        raise ValueError(
            f"normalize: {len(feats)} feature(s) are all-NaN among the reference rows of group(s) {where}: "
            f"{_describe(feats)}. Drop them first (ip.pp.feature_select(..., operation='drop_na_columns'))."
        )


def _fit_center_scale(X, fit_codes, n_groups, method, var_names, what, dask_mode):
    """Per-group centre, scale and zero-scale mask (``(n_groups, p)`` each)."""
    if method == "mad_robustize":
        C, mad = group_median_mad(X, fit_codes, n_groups, mad_scale=MAD_SCALE, inf="propagate")
        zero = mad == 0
        return C, mad, zero
    if method == "standardize":
        mean = group_reduce(X, fit_codes, n_groups, "mean", inf="propagate")
        var = group_reduce(X, fit_codes, n_groups, "var", ddof=0, inf="propagate")
        cnt = group_reduce(X, fit_codes, n_groups, "count", inf="propagate")
        with np.errstate(invalid="ignore"):
            zero = constant_mask_sklearn(var, mean, cnt) & ~np.isnan(var)
        return mean, np.sqrt(var), zero
    # robustize
    C = group_reduce(X, fit_codes, n_groups, "median", inf="propagate")
    qs = _quantiles_by_group(X, fit_codes, n_groups, np.array([25.0, 75.0]), dask_mode)
    S = np.stack([q[1] - q[0] for q in qs])
    zero = S < 10 * EPS
    return C, S, zero


def _quantiles_by_group(X, fit_codes, n_groups, q, dask_mode) -> list[np.ndarray]:
    """Per-group ``nanpercentile`` of the reference rows (``q``: one array, or one per group).

    dask: one task per (group, column block), all groups computed together.
    """
    order, starts = sort_groups(fit_codes, n_groups)
    qs = list(q) if isinstance(q, list) else [q] * n_groups
    if not dask_mode:
        if all(qq is qs[0] for qq in qs):
            return _group_quantiles(X, order, starts, qs[0])
        return [_group_quantiles(X, order[starts[g] : starts[g + 1]], np.array([0, starts[g + 1] - starts[g]]), qs[g])[0]
                for g in range(n_groups)]
    import dask

    def _pct(block, q):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.atleast_2d(np.nanpercentile(np.asarray(block, dtype=np.float64), q, axis=0))

    parts = []
    for g in range(n_groups):
        rows = np.sort(order[starts[g] : starts[g + 1]])
        Xg = X[rows].rechunk({0: -1})
        parts.append(Xg.map_blocks(_pct, q=qs[g], chunks=((len(qs[g]),), Xg.chunks[1]), dtype=np.float64))
    return [np.asarray(p) for p in dask.compute(*parts)]


def _transform_center_scale(X, codes, C, S, dask_mode):
    if dask_mode:
        import dask.array as da

        cd = da.from_array(codes, chunks=(X.chunks[0],))[:, None]
        Cd = da.from_array(C, chunks=(C.shape[0], X.chunks[1]))
        Sd = da.from_array(S, chunks=(S.shape[0], X.chunks[1]))
        return da.map_blocks(_center_scale_block, X, cd, Cd, Sd, dtype=np.float64)
    if C.shape[0] == 1:
        out = np.subtract(X, C[0])
        out /= S[0]
        return out
    # (X - C[codes]) / S[codes] without the two (n x p) gathered temporaries: one group's run of
    # rows at a time when the rows are grouped, else blocks of rows small enough to stay in cache
    out = np.empty(X.shape, dtype=np.result_type(X.dtype, C.dtype, S.dtype))
    codes = np.asarray(codes)
    if codes.size and codes[0] >= 0 and (codes[1:] >= codes[:-1]).all():
        bounds = np.flatnonzero(np.diff(codes)) + 1
        for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [codes.size]])):
            g = codes[a]
            np.subtract(X[a:b], C[g], out=out[a:b])
            out[a:b] /= S[g]
        return out
    step = max(1, (1 << 17) // max(X.shape[1], 1))
    for a in range(0, codes.size, step):
        c = codes[a : a + step]
        np.subtract(X[a : a + step], C[c], out=out[a : a + step])
        out[a : a + step] /= S[c]
    return out


def _fit_inverse_normal_groups(X, fit_codes, n_groups, n_quantiles, dask_mode):
    n_ref = group_sizes(fit_codes, n_groups)
    refs = [np.linspace(0, 1, max(1, min(int(n_quantiles), int(n_ref[g]))), endpoint=True) for g in range(n_groups)]
    if not dask_mode:
        order, starts = sort_groups(fit_codes, n_groups)
        qs = []
        for g in range(n_groups):
            q, r = _fit_inverse_normal(X[order[starts[g] : starts[g + 1]]], n_quantiles)
            qs.append(q)
        return qs, refs
    return _quantiles_by_group(X, fit_codes, n_groups, [r * 100 for r in refs], True), refs


def _transform_inverse_normal(X, codes, qs, refs, n_groups, dask_mode):
    if dask_mode:
        import dask.array as da

        cd = da.from_array(codes, chunks=(X.chunks[0],))[:, None]
        # quantiles are tiny compared with X: pass them whole, slice per column block
        offsets = np.concatenate([[0], np.cumsum(X.chunks[1])])

        def block(x, c, block_info=None):
            j = block_info[0]["chunk-location"][1]
            sl = slice(offsets[j], offsets[j + 1])
            return _inverse_normal_block(x, c, [q[:, sl] for q in qs], refs)

        return da.map_blocks(block, X, cd, dtype=np.float64)
    if n_groups == 1:
        return _apply_inverse_normal(X, qs[0], refs[0])
    out = np.empty(X.shape, dtype=np.float64)
    order, starts = sort_groups(codes, n_groups)
    for g in range(n_groups):
        rows = order[starts[g] : starts[g + 1]]
        out[rows] = _apply_inverse_normal(X[rows], qs[g], refs[g])
    return out


#: dask: a group's reference rows with more elements than this (and more rows than features) are
#: whitened (ZCA) from a Gram matrix reduced with dask instead of being loaded into memory.
_DASK_IN_MEMORY = 2**26


def _raise_constant(const, method, var_names, groups, g) -> None:
    if const.any() and method in ("ZCA-cor", "PCA-cor"):
        feats = [str(var_names[c]) for c in np.flatnonzero(const)]
        raise ValueError(
            f"normalize('spherize', spherize_method={method!r}): {len(feats)} feature(s) are constant among the "
            f"reference rows of group {_group_label(groups, g)}: {_describe(feats)}. Sphering would divide by "
            "zero (pycytominer raises a 'Divide by zero' error here); "
            "drop them first (ip.pp.feature_select(..., operation='variance_threshold', samples=controls))."
        )


def _spherize_gram_dask(Xf, method, center, epsilon):
    """ZCA fit of a large dask reference block: moments and ``Xt^T Xt`` in one dask computation."""
    import dask
    import dask.array as da

    n = Xf.shape[0]
    mean_d, var_d = Xf.mean(axis=0), Xf.var(axis=0)
    const_d = (var_d <= n * EPS * var_d + (n * mean_d * EPS) ** 2) | (var_d == 0)
    if method == "ZCA-cor":
        scale_d = da.where(const_d, 1.0, da.sqrt(var_d))
        shift_d = mean_d
    else:
        scale_d = da.ones_like(mean_d)
        shift_d = mean_d if center else da.zeros_like(mean_d)
    Xt = (Xf - shift_d) / scale_d
    shift, scale, const, G = dask.compute(shift_d, scale_d, const_d, Xt.T @ Xt)
    shift, scale, const = np.asarray(shift), np.asarray(scale), np.asarray(const)
    if const.any() and method == "ZCA-cor":
        return shift, scale, const, None
    W = zca_from_gram(np.asarray(G), n, epsilon)
    if W is None:
        return None  # ill-conditioned: the caller falls back to the SVD of the loaded block
    return shift, scale, const, W


def _spherize(X, codes, fit_codes, n_groups, method, center, epsilon, var_names, groups, what, dask_mode):
    """Fit one whitening matrix per group on its reference rows and apply it to the group's rows."""
    if dask_mode:
        import dask
        import dask.array as da

        n_nan, n_inf = dask.compute(da.isnan(X).sum(), da.isinf(X).sum())
        if n_nan or n_inf:
            raise ValueError(
                f"normalize('spherize'): {what} contains {int(n_nan)} NaN and {int(n_inf)} inf value(s); sphering "
                "needs complete data. Drop or impute them first (ip.pp.feature_select(..., operation='drop_na_columns'))."
            )
    order, starts = sort_groups(fit_codes, n_groups)
    means, scales, Ws, ranks = [], [], [], []
    loaded = {}
    if dask_mode:  # load the reference blocks that fit in memory in one pass
        small = [g for g in range(n_groups)
                 if not ((starts[g + 1] - starts[g]) * X.shape[1] > _DASK_IN_MEMORY
                         and starts[g + 1] - starts[g] > X.shape[1] and method in ("ZCA", "ZCA-cor"))]
        blocks = dask.compute(*[X[np.sort(order[starts[g] : starts[g + 1]])] for g in small])
        loaded = {g: np.asarray(b, dtype=np.float64) for g, b in zip(small, blocks)}
    for g in range(n_groups):
        rows = order[starts[g] : starts[g + 1]]
        big = dask_mode and g not in loaded
        if big and method in ("ZCA", "ZCA-cor"):
            fitted = _spherize_gram_dask(X[np.sort(rows)], method, center, epsilon)
            if fitted is not None:
                mean, scale, const, W = fitted
                _raise_constant(const, method, var_names, groups, g)
                means.append(mean)
                scales.append(scale)
                Ws.append(W)
                ranks.append(X.shape[1])
                continue
        if dask_mode:
            Xf = loaded[g] if g in loaded else np.asarray(X[np.sort(rows)].compute(), dtype=np.float64)
        else:
            Xf = X[rows]
        mean, scale, const = spherize_moments(Xf, method, center)
        _raise_constant(const, method, var_names, groups, g)
        Xt = (Xf - mean) / scale
        W, r = fit_whitener(Xt, method, center, epsilon)
        n, d = Xt.shape
        if n > d and r < d:
            warnings.warn(
                f"normalize('spherize'): the reference matrix of group {_group_label(groups, g)} has rank {r} < "
                f"{d} features; directions without reference variance are scaled by ~1/spherize_epsilon "
                "(as in pycytominer). Remove redundant features (feature_select 'correlation_threshold') first.",
                UserWarning,
                stacklevel=3,
            )
        means.append(mean)
        scales.append(scale)
        Ws.append(W)
        ranks.append(r)
    widths = {W.out_dim for W in Ws}
    if len(widths) > 1:  # PCA with n <= d: keep the components every group defines
        k = min(widths)
        Ws = [W.truncate(k) for W in Ws]
    if dask_mode:
        import dask.array as da

        Xr = X.rechunk({1: -1})
        cd = da.from_array(codes, chunks=(Xr.chunks[0],))[:, None]
        from functools import partial

        fn = partial(_spherize_block, means=means, scales=scales, Ws=Ws)
        out = da.map_blocks(fn, Xr, cd, dtype=np.float64, chunks=(Xr.chunks[0], (Ws[0].out_dim,)))
        return out, ranks
    if n_groups == 1:
        return Ws[0].apply((X - means[0]) / scales[0]), ranks
    out = np.empty((X.shape[0], Ws[0].out_dim), dtype=np.float64)
    order_all, starts_all = sort_groups(codes, n_groups)
    for g in range(n_groups):
        rows = order_all[starts_all[g] : starts_all[g + 1]]
        out[rows] = Ws[g].apply((X[rows] - means[g]) / scales[g])
    return out, ranks
