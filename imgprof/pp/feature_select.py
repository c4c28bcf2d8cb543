"""Feature selection with pycytominer 1.7.1's operations and semantics.

Operations (applied in the order given, each on the features the previous ones kept,
as in pycytominer), each one function registered in :data:`FEATURE_OPS`
(``imgprof/pp/_feature_ops.py``):

* ``variance_threshold``: drop features whose variance (``ddof=0``, NaN skipped) is
  not above ``min_variance`` (scikit-learn ``VarianceThreshold``);
* ``frequency_threshold``: drop features whose ratio of the second most common to
  the most common value is below ``freq_cut``, or whose number of distinct values
  over the number of rows is below ``unique_cut``;
* ``correlation_threshold``: Pearson (or Spearman/Kendall) correlations; for every
  pair correlated above ``corr_threshold`` drop the member with the larger total
  absolute correlation to all features (pycytominer's ``determine_high_cor_pair``);
* ``drop_na_columns``: drop features with a NaN fraction above ``na_cutoff``;
* ``blocklist``: drop the standard CellProfiler blocklist (shipped with imgprof) or
  a given list;
* ``drop_outliers``: drop features whose max or min absolute value exceeds ``outlier_cutoff``;
* ``noise_removal``: drop features whose mean within-group standard deviation
  (``ddof=0``) across replicate groups exceeds ``noise_removal_stdev_cutoff``.

Statistics are vectorised numpy (correlations from matrix products, frequencies from
one sort per column); dask arrays are reduced with dask (by dispatch on the array
type, ``imgprof/pp/_feature_select_kernels.py``). What each operation dropped is a
report, kept in ``adata.uns[key_added]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.dispatch import DaskArray
from .._core.docs import doc_params
from .._core.groups import group_codes
from .._core.provenance import record
from .._core.registry import Entry
from .._core.selection import resolve_features, resolve_rows
from .._core.store import store
from .._core.validation import (
    check_adata,
    check_array,
    check_choice,
    check_float,
    check_obs_keys,
    finish,
    get_matrix,
    start,
)
from ._feature_ops import BLOCKLIST_PATH, FEATURE_OPS, FeatureData, load_blocklist
from ._feature_select_kernels import frequency_stats, pearson_pairwise  # noqa: F401 - used by tests

__all__ = ["feature_select", "FEATURE_OPS", "FeatureData", "OPERATIONS", "load_blocklist", "BLOCKLIST_PATH"]

#: The operations shipped with imgprof (pycytominer's names); :data:`FEATURE_OPS` holds every registered one.
OPERATIONS = FEATURE_OPS.names()


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------
def _operations(operation: str | Sequence[str]) -> list[Entry]:
    """The registry entries of ``operation`` (one name or a list), each once."""
    names = [operation] if isinstance(operation, str) else list(operation)
    if not names:
        raise ValueError(f"operation: give at least one operation; choose one of {list(FEATURE_OPS.names())}.")
    entries = [FEATURE_OPS.get(name, where="pp.feature_select") for name in names]
    canonical = [e.name for e in entries]
    if len(set(canonical)) != len(canonical):
        raise ValueError(f"operation: {names} lists an operation twice.")
    return entries


def _check_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Check the operations' cut-offs (all of them, whichever operations run); return them checked."""
    for name in ("na_cutoff", "corr_threshold", "freq_cut", "unique_cut"):
        opts[name] = check_float(opts[name], name, min_value=0.0, max_value=1.0)
    opts["min_variance"] = check_float(opts["min_variance"], "min_variance", min_value=0.0)
    opts["outlier_cutoff"] = check_float(opts["outlier_cutoff"], "outlier_cutoff", min_value=0.0, include_min=False)
    opts["noise_removal_stdev_cutoff"] = check_float(
        opts["noise_removal_stdev_cutoff"], "noise_removal_stdev_cutoff", min_value=0.0, allow_none=True
    )
    check_choice(opts["corr_method"], "corr_method", ["pearson", "spearman", "kendall"])
    groups = opts["noise_removal_perturb_groups"]
    if groups is not None and not isinstance(groups, str) and (np.ndim(groups) != 1):
        raise TypeError(
            "noise_removal_perturb_groups must be an .obs column name or one label per observation "
            f"(a list, array or Series), got {groups!r}."
        )
    return opts


def _check_requirements(entries: list[Entry], opts: dict[str, Any]) -> None:
    for e in entries:
        needed = e.meta.get("requires", ())
        if any(opts.get(arg) is None for arg in needed):
            raise ValueError(f"{e.name} needs {' and '.join(needed)} (none may be None).")


def _values(X_all: Any, mask: np.ndarray, *, param: str, var_names: pd.Index) -> Any:
    """The selected rows as float64 (numpy, or dask kept lazy), checked: numeric, no inf (NaN allowed)."""
    X: Any = X_all if mask.all() else X_all[np.flatnonzero(mask)]
    X = X if isinstance(X, DaskArray) else np.asarray(X)
    X = X.astype(np.float64) if X.dtype != np.float64 else X
    # the one matrix check; dask arrays are scanned once
    check_array(X, param=param, var_names=var_names, allow_nan=True, min_rows=0, min_cols=0, check_dask_finite=True)
    return X


def _perturb_groups(adata: AnnData, groups: Any, mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Replicate-group codes of the selected rows for ``noise_removal`` (``-1``: no label)."""
    param = "noise_removal_perturb_groups"
    if isinstance(groups, str):
        check_obs_keys(adata, groups, param=param)
        labels = adata.obs[groups]
    elif isinstance(groups, pd.Series):  # aligned by index, like every Series selection
        idx = pd.Index(groups.index.astype(str))
        if len(groups) != adata.n_obs or idx.has_duplicates or not idx.isin(adata.obs_names).all():
            raise ValueError(
                f"{param}: a Series is aligned on adata.obs_names by its index, and its index "
                f"does not match them ({len(groups)} labels for {adata.n_obs} observations)."
            )
        labels = pd.Series(groups.to_numpy(dtype=object), index=idx).reindex(adata.obs_names)
    else:
        if len(groups) != adata.n_obs:
            raise ValueError(f"{param}: {len(groups)} labels given for {adata.n_obs} observations.")
        labels = pd.Series(np.asarray(groups, dtype=object), index=adata.obs_names)
    labels = labels[mask]
    n_na = int(pd.isna(labels).sum())
    if n_na:
        warnings.warn(
            f"noise_removal: {n_na} row(s) have no group label; they are left out of the within-group std "
            "(as pandas groupby does).",
            UserWarning,
            stacklevel=3,
        )
    codes, uniq = group_codes(labels.to_frame("g"), "g", dropna=True, param=param)
    return codes, len(uniq)


# ----------------------------------------------------------------------------------------------
# coordination
# ----------------------------------------------------------------------------------------------
def _run(entries: list[Entry], data: FeatureData, opts: dict[str, Any], *, restricted: bool):
    """Apply the operations in order; return ``{operation: dropped names}`` and the operations' reports."""
    dropped: dict[str, list[str]] = {}
    reports: dict[str, dict] = {}
    for e in entries:
        out = e.obj(data, **{k: opts[k] for k in e.meta.get("params", ())})
        drop, report = out if isinstance(out, tuple) else (out, {})
        drop = np.asarray(drop, dtype=bool)
        if drop.shape != data.columns.shape:
            raise RuntimeError(f"feature_select operation {e.name!r} returned a mask of shape {drop.shape} "
                               f"for {data.columns.size} features.")
        dropped[e.name] = [str(data.var_names[i]) for i in data.columns[drop]]
        if report:
            reports[e.name] = report
        data.columns = data.columns[~drop]
        if not data.columns.size and not restricted:
            raise ValueError(
                f"feature_select: operation {e.name!r} drops every remaining feature ({int(drop.sum())}); "
                "nothing would be left. Check the cut-offs and the samples= selection."
            )
    return dropped, reports


def _dominance(adata: AnnData, layer: str | None, outlier_cutoff: float | None) -> dict[str, Any]:
    """After normalize: whether one feature still dominates the kept matrix (logged; may warn)."""
    if layer is not None or not any(str(k).endswith("pp.normalize") for k in record(adata).steps):
        return {}
    from .._core.guardrails import check_feature_dominance

    dom = check_feature_dominance(
        get_matrix(adata), adata.var_names, where="feature_select (kept features)", outlier_cutoff=outlier_cutoff
    )
    if dom is None:
        return {}
    extra: dict[str, Any] = {"top_variance_share": [[n, round(v, 4)] for n, v in dom["top"]]}
    if dom["warning"]:
        extra["guardrail_warning"] = dom["warning"]
    return extra


def _logged(opts: dict[str, Any], ops: list[str], samples: Any, n_rows: int, features: Any, n_cand: int) -> dict[str, Any]:
    """The parameters as logged in the provenance (selections summarised)."""
    blocklist, groups = opts["blocklist"], opts["noise_removal_perturb_groups"]
    return {
        "operation": ops,
        "samples": samples if samples is None or isinstance(samples, str) else f"<selection of {n_rows} rows>",
        "features": None if features is None else n_cand,
        **{k: v for k, v in opts.items() if k not in ("blocklist", "noise_removal_perturb_groups")},
        "blocklist": blocklist if blocklist is None or isinstance(blocklist, (str, Path)) else f"<{len(blocklist)} names>",
        "noise_removal_perturb_groups": groups if isinstance(groups, str) else None,
    }


@doc_params("copy", "layer", "returns_copy")
def feature_select(
    adata: AnnData,
    operation: str | Sequence[str] = "variance_threshold",
    *,
    samples: Any = None,
    features: Sequence[str] | None = None,
    na_cutoff: float = 0.05,
    corr_threshold: float = 0.9,
    corr_method: str = "pearson",
    freq_cut: float = 0.05,
    unique_cut: float = 0.01,
    min_variance: float = 1e-6,
    blocklist: str | Path | Sequence[str] | None = None,
    outlier_cutoff: float = 500.0,
    noise_removal_perturb_groups: str | Sequence | None = None,
    noise_removal_stdev_cutoff: float | None = None,
    layer: str | None = None, key_added: str = "feature_select", copy: bool = False,
) -> AnnData | None:
    """Drop uninformative, redundant or noisy features (pycytominer's ``feature_select``).

    Parameters
    ----------
    adata
        Profiles (``.X`` numpy or dask).
    operation
        One operation or a list, applied in order; see the module docs. Names as in
        pycytominer: ``"variance_threshold"``, ``"frequency_threshold"``,
        ``"correlation_threshold"``, ``"drop_na_columns"``, ``"blocklist"``,
        ``"drop_outliers"``, ``"noise_removal"``, or any name registered in
        :data:`FEATURE_OPS`.
    samples
        Rows the statistics are computed on: a query on ``.obs``, a boolean mask or
        obs names (``None`` or ``"all"``: all rows). Every row is kept in the output.
    features
        Features considered (default all); the others are never dropped.
    na_cutoff
        ``drop_na_columns``: largest tolerated NaN fraction.
    corr_threshold, corr_method
        ``correlation_threshold``: cut-off (pairs strictly above it, signed correlation)
        and ``"pearson"``, ``"spearman"`` or ``"kendall"``.
    freq_cut, unique_cut
        ``frequency_threshold`` cut-offs (pycytominer 1.7 defaults 0.05 and 0.01).
    min_variance
        ``variance_threshold``: features with variance ``<= min_variance`` are dropped.
    blocklist
        ``blocklist``: ``None`` (the standard CellProfiler blocklist), a path to a
        blocklist file, or a list of feature names.
    outlier_cutoff
        ``drop_outliers``: largest tolerated absolute max/min.
    noise_removal_perturb_groups, noise_removal_stdev_cutoff
        ``noise_removal``: an ``.obs`` column (or one label per row) defining replicate
        groups, and the largest tolerated mean within-group std.
    {layer}
    key_added
        The report is a table, so it goes to ``.uns`` (one meaning of ``key_added``
        per kind of result, see :mod:`imgprof._core.store`): ``adata.uns[key_added]``
        receives ``{operation: [dropped features]}``.
    {copy}

    Returns
    -------
    {returns_copy}
        With ``copy=True`` the copy is restricted to the selected features;
        otherwise ``adata`` is subset in place. ``adata.uns[key_added]`` records
        what each operation dropped (a feature is listed under the first operation
        that dropped it); the step goes to the provenance log.

    Raises
    ------
    ValueError
        inf values, an unknown operation (the message lists the registered ones) or
        out-of-range cut-off, ``noise_removal`` without its two arguments, or a
        selection that would drop every feature.
    KeyError
        A missing ``.obs`` column, layer or feature.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate(n_plates=2, n_constant=3, n_correlated=5, seed=0)
    >>> ip.pp.feature_select(adata, ["variance_threshold", "correlation_threshold", "blocklist"])
    >>> len(adata.uns["feature_select"]["variance_threshold"])
    3
    """
    entries = _operations(operation)
    opts = _check_options({
        "na_cutoff": na_cutoff, "corr_threshold": corr_threshold, "corr_method": corr_method, "freq_cut": freq_cut,
        "unique_cut": unique_cut, "min_variance": min_variance, "blocklist": blocklist, "outlier_cutoff": outlier_cutoff,
        "noise_removal_perturb_groups": noise_removal_perturb_groups, "noise_removal_stdev_cutoff": noise_removal_stdev_cutoff,
    })
    if not isinstance(key_added, str) or not key_added:
        raise TypeError(f"key_added must be a non-empty string (a key of adata.uns), got {key_added!r}.")
    check_adata(adata)
    if adata.n_obs == 0:
        raise ValueError("adata has 0 observations; nothing to select features on.")
    _check_requirements(entries, opts)

    adata = start(adata, copy)
    X_all = get_matrix(adata, layer=layer)
    cand = resolve_features(adata, features, param="features")
    samples = None if isinstance(samples, str) and samples == "all" else samples
    mask = resolve_rows(adata, samples, param="samples")
    data = FeatureData(X=None, columns=cand, var_names=adata.var_names, n_rows=int(mask.sum()))
    if any(e.meta.get("values", True) for e in entries):
        what = f"adata.layers[{layer!r}]" if layer is not None else "adata.X"
        data.X = _values(X_all, mask, param=what, var_names=adata.var_names)
    if any(e.meta.get("groups", False) for e in entries):
        data.codes, data.n_groups = _perturb_groups(adata, noise_removal_perturb_groups, mask)

    ops = [e.name for e in entries]
    dropped, reports = _run(entries, data, opts, restricted=len(cand) < adata.n_vars)
    keep = ~adata.var_names.isin([n for names in dropped.values() for n in names])
    if not keep.all():
        adata._inplace_subset_var(keep)
    extra = _dominance(adata, layer, opts["outlier_cutoff"] if "drop_outliers" in ops else None)
    if reports:
        extra["reports"] = reports
    store(
        adata, dropped, slot="uns", key_added=key_added, function="pp.feature_select",
        params={**_logged(opts, ops, samples, data.n_rows, features, len(cand)), "layer": layer, "key_added": key_added},
        n_dropped={op: len(v) for op, v in dropped.items()}, n_kept=int(keep.sum()), **extra,
    )
    return finish(adata, copy)
