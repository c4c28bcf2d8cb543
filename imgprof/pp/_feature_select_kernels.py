"""Array kernels of :func:`imgprof.pp.feature_select` (pycytominer 1.7.1 semantics).

Pure functions on arrays: the numpy kernels (frequencies from one sort per
column, correlations from matrix products) and the column statistics the
operations read, each a :func:`functools.singledispatch` function with a numpy
and a dask implementation (reduced with dask).
"""

from __future__ import annotations

import warnings
from functools import singledispatch
from typing import Any

import numpy as np
import pandas as pd

from .._core.dispatch import DaskArray
from .._core.groups import group_reduce

__all__ = [
    "correlation",
    "correlation_exclusions",
    "frequency",
    "minmax",
    "na_fraction",
    "noise",
    "variance",
]


# ----------------------------------------------------------------------------------------------
# numpy kernels
# ----------------------------------------------------------------------------------------------
def frequency_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: (count of 2nd most common value / count of most common, number of distinct values).

    NaN are not values (pandas ``value_counts``/``nunique``); a column with fewer
    than two distinct values has ratio 0. One sort per column, then run lengths.
    """
    n, p = X.shape
    if n == 0 or p == 0:
        return np.zeros(p), np.zeros(p, dtype=np.int64)
    S = np.sort(np.ascontiguousarray(X.T), axis=1)  # (p, n), NaN last
    valid = ~np.isnan(S)
    n_valid = valid.sum(axis=1)
    new = np.empty_like(valid)
    new[:, 0] = valid[:, 0]
    new[:, 1:] = (S[:, 1:] != S[:, :-1]) & valid[:, 1:]
    n_unique = new.sum(axis=1)
    # columns whose values are all distinct: both top counts are 1
    top1 = np.where(n_valid > 0, 1.0, 0.0)
    top2 = np.where(n_valid > 1, 1.0, 0.0)
    dup = np.flatnonzero(n_unique < n_valid)
    if dup.size:
        sub = new[dup]
        pos = np.flatnonzero(sub.ravel())  # run starts, column by column
        col, row = np.divmod(pos, n)
        change = np.r_[True, col[1:] != col[:-1]]
        nxt = np.empty_like(row)
        nxt[:-1] = row[1:]
        length = np.where(np.append(~change[1:], False), nxt, n_valid[dup][col]) - row
        seg = np.flatnonzero(change)  # first run of each column
        seg_id = np.cumsum(change) - 1
        m1 = np.maximum.reduceat(length, seg)
        # remove one occurrence of each column's maximum: the next maximum is the runner-up
        first_max = np.flatnonzero(length == m1[seg_id])
        keep_first = np.r_[True, col[first_max][1:] != col[first_max][:-1]]
        rest = length.copy()
        rest[first_max[keep_first]] = 0
        top1[dup] = m1
        top2[dup] = np.maximum.reduceat(rest, seg)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where((n_unique >= 2) & (top1 > 0), top2 / np.where(top1 > 0, top1, 1), 0.0)
    return ratio, n_unique


def _constant_cols(X: np.ndarray) -> np.ndarray:
    """Columns with a single distinct non-NaN value (or none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return ~(np.nanmax(X, axis=0) > np.nanmin(X, axis=0))


def _pairwise_sums(Z: np.ndarray, nan: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise-complete sums of the columns of ``Z`` (globally centred, 0 where ``nan``).

    Returns ``N[i, j]`` (rows where both are present), ``Sx[i, j]`` (sum of column
    i over those rows), ``Sxx[i, j]`` (sum of its squares) and ``Sxy = Z^T Z``.
    ``N``, ``Sx`` and ``Sxx`` are the all-rows sums minus corrections over the rows
    where column j is NaN; the corrections are products with the NaN mask in float32
    (counts are exact below 2**24 rows; the correction sums carry ~1e-7 relative
    error, on quantities that are themselves a few percent of the totals).
    """
    n, p = Z.shape
    Z2 = Z * Z
    Sxy = Z.T @ Z
    a = nan.sum(axis=0).astype(np.float64)
    exact32 = n < 2**24
    Nn: np.ndarray = nan.astype(np.float32 if exact32 else np.float64)
    B = np.asarray(Nn.T @ Nn, dtype=np.float64)
    N = n - a[:, None] - a[None, :] + B
    cz = np.asarray(Z.astype(Nn.dtype).T @ Nn, dtype=np.float64)  # [i, j]: sum of Z[:, i] where j is NaN
    cz2 = np.asarray(Z2.astype(Nn.dtype).T @ Nn, dtype=np.float64)
    Sx = Z.sum(axis=0)[:, None] - cz
    Sxx = Z2.sum(axis=0)[:, None] - cz2
    return N, Sx, Sxx, Sxy


def _correlation_from_sums(N, Sx, Sxx, Sxy) -> np.ndarray:
    """Pearson correlations from pairwise-complete sums; pairs without variance are NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = Sxy - Sx * Sx.T / N
        vx = Sxx - Sx * Sx / N  # var of i over the pair's rows (x n)
        vy = vx.T
        tiny = 1e-12
        bad = (N < 1) | (vx <= tiny * Sxx) | (vy <= tiny * Sxx.T)
        C = cov / np.sqrt(vx * vy)
    C[bad] = np.nan
    return C


def _blank_constant(C: np.ndarray, const: np.ndarray) -> np.ndarray:
    if const.any():
        C[const, :] = np.nan
        C[:, const] = np.nan
    return C


def pearson_pairwise(X: np.ndarray) -> np.ndarray:
    """Pearson correlation matrix of the columns; pairwise-complete when NaN are present.

    Without NaN this is ``np.corrcoef`` (pycytominer's path). With NaN it matches
    pandas ``DataFrame.corr()`` (each pair on the rows where both are present),
    computed with four matrix products on globally centred data instead of a
    per-pair loop. Pairs without variance are NaN.
    """
    n, p = X.shape
    if p == 0:
        return np.zeros((0, 0))
    nan = np.isnan(X)
    const = _constant_cols(X)
    if not nan.any():
        with np.errstate(invalid="ignore", divide="ignore"):
            C = np.corrcoef(X, rowvar=False) if p > 1 else np.ones((1, 1))
        C = np.atleast_2d(C)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mu = np.nanmean(X, axis=0)
        Z = np.where(nan, 0.0, X - np.where(np.isnan(mu), 0.0, mu))
        C = _correlation_from_sums(*_pairwise_sums(Z, nan))
    return _blank_constant(C, const)


def _correlation_matrix(X: np.ndarray, method: str) -> np.ndarray:
    if method == "pearson":
        return pearson_pairwise(X)
    if method == "spearman" and not np.isnan(X).any():
        from scipy.stats import rankdata

        return pearson_pairwise(rankdata(X, axis=0, method="average"))
    C = pd.DataFrame(X).corr(method=method).to_numpy()
    return _blank_constant(C, _constant_cols(X))


def correlation_exclusions(C: np.ndarray, threshold: float) -> np.ndarray:
    """pycytominer's rule: for each pair with corr > threshold drop the member with the larger
    total absolute correlation (ranked with pandas' ``sort_values``). Returns a boolean mask."""
    p = C.shape[0]
    excluded = np.zeros(p, dtype=bool)
    if p < 2:
        return excluded
    colsum = np.nansum(np.abs(C), axis=0)
    order = pd.Series(colsum).sort_values().index.to_numpy()
    rank = np.empty(p, dtype=np.int64)
    rank[order] = np.arange(p)
    with np.errstate(invalid="ignore"):
        high = np.tril(threshold < C, k=-1)
    i, j = np.nonzero(high)
    if i.size:
        drop = np.where(rank[i] > rank[j], i, j)
        excluded[np.unique(drop)] = True
    return excluded


# ----------------------------------------------------------------------------------------------
# column statistics: numpy, or dask by dispatch
# ----------------------------------------------------------------------------------------------
@singledispatch
def na_fraction(X: Any, n_rows: int) -> np.ndarray:
    """Per column: share of NaN values among ``n_rows`` rows."""
    return np.isnan(X).sum(axis=0) / n_rows


@na_fraction.register(DaskArray)
def _(X: Any, n_rows: int) -> np.ndarray:
    import dask.array as da

    return np.asarray(da.isnan(X).sum(axis=0).compute()) / n_rows


@singledispatch
def _var_ptp(X: Any, need_ptp: bool) -> tuple[np.ndarray, np.ndarray | None]:
    # two-pass grouped kernel with one group: same numbers as np.nanvar, without its copies
    var = group_reduce(X, np.zeros(X.shape[0], dtype=np.int64), 1, "var", ddof=0, inf="propagate")[0]
    return var, (np.ptp(X, axis=0) if need_ptp else None)


@_var_ptp.register(DaskArray)
def _(X: Any, need_ptp: bool) -> tuple[np.ndarray, np.ndarray | None]:
    import dask
    import dask.array as da

    if not need_ptp:
        return np.asarray(da.nanvar(X, axis=0).compute()), None
    var, hi, lo = dask.compute(da.nanvar(X, axis=0), da.max(X, axis=0), da.min(X, axis=0))
    return np.asarray(var), np.asarray(hi) - np.asarray(lo)


def variance(X: Any, min_variance: float) -> np.ndarray:
    """Per-column variance (ddof=0, NaN skipped; scikit-learn ``VarianceThreshold`` semantics)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        var, ptp = _var_ptp(X, min_variance == 0)
        if ptp is not None:  # min_variance == 0, as scikit-learn: also use the peak-to-peak range
            var = np.nanmin(np.vstack([var, ptp]), axis=0)
    return var


@singledispatch
def _nanmax_nanmin(X: Any) -> tuple[np.ndarray, np.ndarray]:
    return np.nanmax(X, axis=0), np.nanmin(X, axis=0)


@_nanmax_nanmin.register(DaskArray)
def _(X: Any) -> tuple[np.ndarray, np.ndarray]:
    import dask
    import dask.array as da

    hi, lo = dask.compute(da.nanmax(X, axis=0), da.nanmin(X, axis=0))
    return np.asarray(hi), np.asarray(lo)


def minmax(X: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per column: largest and smallest value (NaN skipped)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _nanmax_nanmin(X)


@singledispatch
def frequency(X: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per column: ratio of the 2nd most common to the most common value, and the number of distinct values."""
    return frequency_stats(X)


@frequency.register(DaskArray)
def _(X: Any) -> tuple[np.ndarray, np.ndarray]:
    n = X.shape[0]
    width = int(max(1, min(X.shape[1], (2**27) // max(n * 8, 1))))  # ~128 MB per task
    Xr = X.rechunk({0: -1, 1: width})

    def block(b):
        r, u = frequency_stats(np.asarray(b, dtype=np.float64))
        return np.vstack([r, u.astype(np.float64)])

    out = np.asarray(Xr.map_blocks(block, chunks=((2,), Xr.chunks[1]), dtype=np.float64).compute())
    return out[0], out[1].astype(np.int64)


@singledispatch
def correlation(X: Any, method: str) -> np.ndarray:
    """Correlation matrix of the columns (``"pearson"``, ``"spearman"`` or ``"kendall"``), pairwise complete."""
    return _correlation_matrix(X, method)


@correlation.register(DaskArray)
def _(X: Any, method: str) -> np.ndarray:
    if method != "pearson":
        raise NotImplementedError(
            f"corr_method={method!r} is not available for dask arrays; use 'pearson' or compute .X first."
        )
    import dask
    import dask.array as da

    mu = np.asarray(da.nanmean(X, axis=0).compute())
    mu = np.where(np.isnan(mu), 0.0, mu)
    nan = da.isnan(X)
    M = (~nan).astype(np.float64)
    Z = da.where(nan, 0.0, X - mu)
    N, Sx, Sxx, Sxy, hi, lo = dask.compute(M.T @ M, Z.T @ M, (Z * Z).T @ M, Z.T @ Z, da.nanmax(X, 0), da.nanmin(X, 0))
    C = _correlation_from_sums(N, Sx, Sxx, Sxy)
    return _blank_constant(C, ~(np.asarray(hi) > np.asarray(lo)))


def noise(X: Any, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean over groups of the within-group std (ddof=0), NaN skipped."""
    std = group_reduce(X, codes, n_groups, "std", ddof=0, inf="propagate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(std, axis=0)
