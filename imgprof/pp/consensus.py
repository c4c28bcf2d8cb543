"""Replicate → consensus signatures: ``ip.pp.consensus`` (median, mean, MODZ).

Matches ``pycytominer.consensus`` (median/mean through the aggregate kernels) and
``pycytominer.cyto_utils.modz`` (replicate-correlation-weighted sum) number for
number on NaN-free profiles.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.dispatch import DaskArray
from .._core.docs import doc_params
from .._core.groups import group_apply, group_codes, group_reduce, sort_groups
from .._core.provenance import log_step
from .._core.validation import (
    as_list,
    check_adata,
    check_array,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_new_obs_key,
    check_obs_keys,
    get_matrix,
)
from .aggregate import grouped_result

#: How replicates are summarised (``operation=`` of :func:`consensus`).
CONSENSUS_OPERATIONS = ("median", "mean", "modz")
#: Correlations between replicates for the MODZ weights (``method=``).
MODZ_CORRELATIONS = ("pearson", "spearman", "kendall")


def modz_weights(
    Xg: np.ndarray, *, method: str = "spearman", min_weight: float = 0.01, precision: int = 4
) -> np.ndarray:
    """MODZ replicate weights of one group (``pycytominer.cyto_utils.modz_base``).

    Each replicate's weight is its mean correlation (``method``) with the other
    replicates across features, negative correlations clipped to 0, the mean
    clipped below at ``min_weight``, normalized to sum 1 and rounded to
    ``precision`` decimals. A replicate whose correlations are all undefined
    (e.g. a constant profile) gets weight NaN, i.e. is left out, as in
    pycytominer; if every weight is undefined the replicates get equal weights.

    Parameters
    ----------
    Xg
        ``(n_replicates, n_features)`` profiles of one group.
    method
        Correlation between replicates: ``"spearman"`` (as cmapPy/pycytominer) or ``"pearson"``.
    min_weight
        Lower clip of the weights before normalising.
    precision
        Decimals the weights are rounded to (pycytominer's ``precision``).

    Returns
    -------
    ``(n_replicates,)`` float64 weights (NaN = excluded).

    Examples
    --------
    >>> X = np.array([[1.0, 2, 3, 4], [1.1, 2.1, 2.9, 4.2], [4.0, 3, 2, 1]])
    >>> modz_weights(X).tolist()
    [0.495, 0.495, 0.0099]
    """
    k = Xg.shape[0]
    if k == 0:
        raise ValueError("modz: a group has no replicate.")
    if k == 1:
        return np.ones(1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if method == "pearson" and np.isfinite(Xg).all():
            cor = np.corrcoef(Xg)
        else:
            cor = pd.DataFrame(Xg.T).corr(method=method).to_numpy()
    cor = np.array(cor, dtype=np.float64, copy=True)
    np.fill_diagonal(cor, np.nan)
    cor = np.where(np.isnan(cor), np.nan, np.maximum(cor, 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        raw = np.nanmean(cor, axis=1)
    raw = np.where(np.isnan(raw), np.nan, np.maximum(raw, min_weight))
    total = np.nansum(raw)
    weights = np.full(k, 1.0 / k) if total == 0 else raw / total
    return np.round(weights, precision)


def _modz_group(Xg: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sum of replicates; NaN values are left out and the weights rescaled.

    Without NaN this is ``sum_i w_i x_i`` (pycytominer). With NaN in a feature,
    ``sum_valid w_i x_i * sum(w) / sum_valid(w)``; a feature NaN in every
    replicate (or with zero valid weight) stays NaN.
    """
    w = np.where(np.isnan(weights), 0.0, weights)
    valid = ~np.isnan(Xg)
    contrib = np.where(valid, Xg, 0.0) * w[:, None]
    s = contrib.sum(axis=0)
    if valid.all():
        return s
    w_valid = (valid * w[:, None]).sum(axis=0)
    w_all = w.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        out = s * (w_all / w_valid)
    out[w_valid == 0] = np.nan
    return out


def _modz_block(method: str, min_weight: float, precision: int) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    def fn(Xs: np.ndarray, codes: np.ndarray, n: int) -> np.ndarray:
        Xs = np.asarray(Xs, dtype=np.float64)
        out = np.full((n, Xs.shape[1]), np.nan)
        starts = np.searchsorted(codes, np.arange(n + 1))
        for g in range(n):
            a, b = starts[g], starts[g + 1]
            if b > a:
                Xg = Xs[a:b]
                out[g] = _modz_group(Xg, modz_weights(Xg, method=method, min_weight=min_weight, precision=precision))
        return out

    return fn


def _check_single_replicates(sizes: np.ndarray, by: list[str], single_replicate: str) -> int:
    """Number of groups with one replicate; warned about or refused as ``single_replicate`` says."""
    singles = int((sizes == 1).sum())
    if singles:
        msg = (
            f"consensus: {singles} of {sizes.size} group(s) of {by} have a single replicate; their consensus is "
            "that one profile (as in pycytominer)."
        )
        if single_replicate == "raise":
            raise ValueError(msg + " Pass single_replicate='warn' or 'ignore' to accept this.")
        if single_replicate == "warn":
            warnings.warn(msg, UserWarning, stacklevel=3)
    return singles


def _summarise(
    X: Any, codes: np.ndarray, n_groups: int, operation: str, *, what: str, var_names: pd.Index,
    method: str, min_weight: float, precision: int,
) -> np.ndarray:
    """One consensus row per group: median/mean by the grouped kernels, MODZ group by group."""
    if operation in ("median", "mean"):
        return group_reduce(X, codes, n_groups, operation, var_names=var_names, what=what)
    # MODZ: NaN are left out of the weighted sums, inf cannot be (dask arrays are scanned once)
    check_array(X, param=what, var_names=var_names, allow_nan=True, min_rows=0, min_cols=0, check_dask_finite=True)
    return group_apply(X, codes, n_groups, _modz_block(method, min_weight, precision))


@doc_params("layer")
def consensus(
    adata: AnnData,
    by: str | Sequence[str] = ("Metadata_Plate", "Metadata_Well"),
    *,
    operation: str = "median",
    method: str = "spearman",
    min_weight: float = 0.01,
    precision: int = 4,
    single_replicate: str = "warn",
    layer: str | None = None, count_key: str | None = "Metadata_Replicate_Count", keep_metadata: bool | Sequence[str] = True,
    dropna: bool = False, level: str = "consensus", overwrite: bool = False,
) -> AnnData:
    """Collapse replicate profiles into one consensus signature per ``by`` group.

    Returns a **new** AnnData (one row per group, sorted by key, as
    ``pycytominer.consensus`` returns a new frame); the input is not modified.

    Parameters
    ----------
    adata
        Well-level (usually normalized) profiles; ``.X`` numpy or dask.
    by
        ``.obs`` column(s) identifying replicates of one signature (pycytominer's
        ``replicate_columns``), e.g. ``["Metadata_broad_sample", "Metadata_mmoles_per_liter"]``.
    operation
        ``"median"`` (default), ``"mean"`` or ``"modz"``.
    method, min_weight, precision
        MODZ arguments (pycytominer's ``modz_args``): correlation between replicates
        (``"spearman"``, ``"pearson"``, ``"kendall"``), lower clip of the weights,
        decimals the weights are rounded to.
    single_replicate
        Groups with one replicate: their consensus is that profile (as in
        pycytominer). ``"warn"`` (default) says how many there are, ``"ignore"``
        stays silent, ``"raise"`` refuses.
    {layer}
    count_key
        ``.obs`` column receiving the number of replicates per group (``None`` to skip).
    keep_metadata
        ``True``: keep the ``.obs`` columns constant within every group;
        ``False``: only ``by``; a list: those (raise if one varies within a group).
    dropna
        ``False`` (pycytominer): a missing key is a group of its own.
    level
        Level recorded on the result.
    overwrite
        Allow ``count_key`` to name an existing ``.obs`` column, which the count
        then replaces (default: refuse, naming the column).

    Returns
    -------
    AnnData
        A new object (another shape: one row per group), so there is no ``copy``
        argument and the input is never modified: consensus profiles (float64),
        ``.obs`` = ``by``, ``count_key`` and constant metadata, provenance of the
        input extended with ``pp.consensus``.

    Notes
    -----
    MODZ with NaN: pycytominer's weighted sum counts a NaN as 0 (and a lone
    replicate's NaN becomes 0). Here a NaN value is left out and the remaining
    weights are rescaled to the same total, and a feature missing in every
    replicate stays NaN (with a warning). Without NaN the numbers are the same.

    Examples
    --------
    >>> import imgprof as ip
    >>> wells = ip.datasets.simulate(n_plates=3, n_perturbations=6, n_moa=2, n_features=30, seed=0)
    >>> sig = ip.pp.consensus(wells, by="Metadata_Perturbation", operation="modz")
    >>> sig.n_obs, int(sig.obs.loc[sig.obs["Metadata_Perturbation"] == "pert_000", "Metadata_Replicate_Count"].iloc[0])
    (7, 3)
    """
    check_choice(operation, "operation", CONSENSUS_OPERATIONS)
    method = method.lower() if isinstance(method, str) else method
    check_choice(method, "method", MODZ_CORRELATIONS)
    check_choice(single_replicate, "single_replicate", ("warn", "ignore", "raise"))
    min_weight = cast(float, check_float(min_weight, "min_weight", min_value=0.0, max_value=1.0))
    precision = cast(int, check_int(precision, "precision", min_value=0, max_value=15))
    check_bool(dropna, "dropna")
    check_bool(overwrite, "overwrite")
    check_adata(adata)
    by = check_obs_keys(adata, as_list(by), param="by")
    if not by:
        raise ValueError("by: give at least one .obs column identifying replicates.")
    if count_key is not None:
        if count_key in by:
            raise ValueError(f"count_key={count_key!r} is also a by= key.")
        check_new_obs_key(adata, count_key, param="count_key", overwrite=overwrite)
    if adata.n_obs == 0:
        raise ValueError("adata has 0 observations; nothing to summarize.")
    X = get_matrix(adata, layer=layer)  # numeric dtype checked there
    X = X if isinstance(X, DaskArray) else np.asarray(X)
    what = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    codes, groups = group_codes(adata.obs, by, dropna=dropna, param="by")
    n_groups = len(groups)
    if n_groups == 0:
        raise ValueError(f"by={by}: every row has a missing key; nothing to summarize.")
    order, starts = sort_groups(codes, n_groups)
    singles = _check_single_replicates(np.diff(starts), by, single_replicate)
    Xout = _summarise(X, codes, n_groups, operation, what=what, var_names=adata.var_names, method=method,
                      min_weight=min_weight, precision=precision)
    result, dropped_meta, n_nan = grouped_result(
        adata, by, groups, order, starts, Xout, count_key=count_key, keep_metadata=keep_metadata, level=level,
        what="consensus",
    )
    log_step(
        result, "pp.consensus",
        {"by": by, "operation": operation, "method": method, "min_weight": min_weight, "precision": precision,
         "layer": layer, "count_key": count_key, "keep_metadata": keep_metadata, "dropna": dropna, "level": level},
        n_profiles=int(adata.n_obs), n_groups=n_groups, n_single_replicate=singles, dropped_metadata=dropped_meta,
        n_nan_values=n_nan, dask=isinstance(X, DaskArray),
    )
    return result
