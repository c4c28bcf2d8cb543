"""Grouped kernels: group codes from ``.obs`` keys and per-group reductions.

Every grouped step of ``ip.pp`` (aggregate, consensus, per-plate normalization,
QC) goes through two functions:

* :func:`group_codes` turns one or more ``.obs`` columns into integer group codes
  (pandas ``groupby(sort=True, dropna=False)`` order, so outputs line up row for
  row with pycytominer), plus a frame with one row per group.
* :func:`group_reduce` reduces the rows of a matrix per group (median, mean, MAD,
  std, ...). It sorts the codes once (stable argsort) and reduces contiguous
  segments, column block by column block, so the only extra memory is one
  ``(block of columns) x (largest group)`` buffer per thread plus the small
  ``(n_groups, n_features)`` result. NaN are skipped (pandas ``skipna``), an empty
  or all-NaN group gives NaN. The compiled kernels use numba when it is
  importable (``nogil``; threads split the columns) and fall back to numpy.

Dask arrays are accepted too: rows are re-chunked on group boundaries (sorted
first when needed) and each chunk is reduced independently, so memory per task
is bounded by the chunk, not by the number of rows.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._groups_numpy import np_median_block as _np_median_block
from ._groups_tasks import column_blocks, median_tasks, resolve_jobs, run_tasks
from .validation import as_list, check_df_keys, check_numeric, is_dask

__all__ = [
    "REDUCTIONS",
    "group_codes",
    "group_apply",
    "group_first_constant",
    "group_median_mad",
    "group_reduce",
    "group_sizes",
    "sort_groups",
]

#: Reductions understood by :func:`group_reduce`.
REDUCTIONS = ("median", "mean", "sum", "count", "mad", "std", "var", "min", "max")

_MAD_NORMAL = 1.482602218505602  # 1 / Phi^-1(3/4), scipy's scale="normal"


# ----------------------------------------------------------------------------------------------
# group codes
# ----------------------------------------------------------------------------------------------
def group_codes(
    obs: pd.DataFrame,
    keys: str | Sequence[str],
    *,
    dropna: bool = False,
    sort: bool = True,
    param: str = "by",
    where: str = "adata.obs",
) -> tuple[np.ndarray, pd.DataFrame]:
    """Integer group codes for the rows of ``obs`` grouped by ``keys``.

    Groups are numbered like ``obs.groupby(keys, sort=sort, dropna=dropna,
    observed=True)``: with ``sort=True`` in sorted key order (categorical keys in
    category order), missing values (NaN) forming their own group placed last.

    Parameters
    ----------
    obs
        Metadata frame (usually ``adata.obs``).
    keys
        One column name or a list of them.
    dropna
        When ``True`` rows with a missing key get code ``-1`` (ignored by
        :func:`group_reduce`); when ``False`` (pycytominer's behaviour) NaN is a group.
    sort
        Number groups in sorted key order (else in order of first appearance).
    param, where
        Used in error messages (which argument, which table).

    Returns
    -------
    codes
        ``int64`` array of length ``len(obs)``, values in ``[0, n_groups)`` (or ``-1``).
    groups
        One row per group (index ``0..n_groups-1``), the key columns with their
        original dtypes. ``n_groups = len(groups)``.

    Examples
    --------
    >>> import pandas as pd
    >>> obs = pd.DataFrame({"plate": ["p2", "p1", "p2", "p1"], "well": ["A01", "A01", "A01", "B01"]})
    >>> codes, groups = group_codes(obs, ["plate", "well"])
    >>> codes.tolist()
    [2, 0, 2, 1]
    >>> groups.values.tolist()
    [['p1', 'A01'], ['p1', 'B01'], ['p2', 'A01']]
    """
    keys = as_list(keys)
    if not keys:
        raise ValueError(f"{param}: give at least one column to group by.")
    check_df_keys(obs, keys, param=param, where=where)
    dup = [k for k in keys if keys.count(k) > 1]
    if dup:
        raise ValueError(f"{param}: column(s) {sorted(set(dup))} listed more than once.")
    n = len(obs)
    if n == 0:
        return np.zeros(0, dtype=np.int64), obs.loc[:, keys].iloc[:0].reset_index(drop=True)
    key_df = obs.loc[:, keys]
    ng = key_df.groupby(keys, sort=sort, dropna=dropna, observed=True).ngroup()
    arr = ng.to_numpy()
    if arr.dtype.kind == "f":  # dropna=True: dropped rows are NaN
        arr = np.where(np.isnan(arr), -1, arr)
    codes = arr.astype(np.int64, copy=False)
    valid = codes >= 0
    n_groups = int(codes.max()) + 1 if valid.any() else 0
    first = np.full(n_groups, n, dtype=np.int64)
    rows = np.flatnonzero(valid)
    # first occurrence of each group: reversed assignment keeps the smallest row index
    first[codes[rows[::-1]]] = rows[::-1]
    groups = key_df.iloc[first].reset_index(drop=True)
    return codes, groups


def group_sizes(codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Rows per group (codes ``-1`` ignored).

    Examples
    --------
    >>> group_sizes(np.array([0, 2, 2, -1]), 3).tolist()
    [1, 0, 2]
    """
    codes = np.asarray(codes)
    return np.bincount(codes[codes >= 0], minlength=n_groups).astype(np.int64)


def sort_groups(codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable sort of the rows by group: ``order`` and segment ``starts``.

    Rows of group ``g`` are ``order[starts[g]:starts[g + 1]]`` (in their original
    relative order). Rows with code ``-1`` are left out of ``order``.

    Examples
    --------
    >>> order, starts = sort_groups(np.array([1, 0, 1, -1]), 2)
    >>> order.tolist(), starts.tolist()
    ([1, 0, 2], [0, 1, 3])
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.size and codes.min() < -1:
        raise ValueError("group codes must be >= -1.")
    if codes.size and codes.max() >= n_groups:
        raise ValueError(f"group codes go up to {int(codes.max())} but n_groups={n_groups}.")
    sizes = group_sizes(codes, n_groups)
    starts = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    if codes.size and (codes[1:] >= codes[:-1]).all() and codes[0] >= 0:
        order = np.arange(codes.size, dtype=np.int64)  # already grouped: no sort
    else:
        # a stable sort; codes that fit 16 bits take numpy's radix sort (about 10x faster than timsort)
        small = codes.astype(np.int16) if n_groups < (1 << 15) else codes
        order = np.argsort(small, kind="stable").astype(np.int64, copy=False)
        n_drop = int((codes < 0).sum())
        order = order[n_drop:]
    return order, starts


def place_rows(rows: np.ndarray, dest: np.ndarray, out: np.ndarray) -> None:
    """``out[dest[i]] = rows[i]`` for every ``dest[i] >= 0``: rows read in file order placed in group order.

    ``dest`` is the inverse of :func:`sort_groups`' ``order`` (``-1`` for rows without a group),
    so rows land where a gather by ``order`` would put them, as they are read. ``out`` is a
    C-ordered float64 matrix with as many columns as ``rows``.

    Examples
    --------
    >>> out = np.zeros((2, 1))
    >>> place_rows(np.array([[5.0], [6.0], [7.0]]), np.array([1, -1, 0]), out); out.ravel().tolist()
    [7.0, 5.0]
    """
    kernels = _numba_kernels()
    if kernels and rows.dtype == np.float64 and out.flags.c_contiguous:
        kernels["place_rows"](rows, dest, out)
        return
    ok = dest >= 0
    out[dest[ok]] = rows[ok]


def column_var_absmax(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column variance (ddof 0) and largest absolute value, NaN skipped, non-finite as ``np.nan_to_num``.

    One compiled two-pass kernel reads ``X`` in place (``np.nanvar`` copies the whole matrix
    to zero its NaN); the values equal ``np.nanvar(X, 0)`` / ``np.nanmax(np.abs(X), 0)``
    exactly (rows summed in the same order). Without numba, or for a matrix that is not a
    C-ordered float64 array, numpy computes them.

    Examples
    --------
    >>> var, absmax = column_var_absmax(np.array([[1.0, -4.0], [3.0, np.nan]]))
    >>> var.tolist(), absmax.tolist()
    ([1.0, 0.0], [3.0, 4.0])
    """
    n, d = X.shape
    if n == 0:
        return np.zeros(d), np.zeros(d)
    kernel = _numba_kernels().get("var_absmax") if X.dtype == np.float64 and X.flags.c_contiguous else None
    with warnings.catch_warnings(), np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if kernel is None:
            return np.nan_to_num(np.nanvar(X, axis=0)), np.nan_to_num(np.nanmax(np.abs(X), axis=0))
        s1, s2, cnt = np.zeros(d), np.zeros(d), np.zeros(d, dtype=np.int64)
        low, high = np.full(d, np.inf), np.full(d, -np.inf)
        kernel(X, s1, s2, cnt, low, high)
        var = np.where(cnt > 0, s2 / np.maximum(cnt, 1), np.nan)
        var[~np.isfinite(s1)] = np.nan  # an infinite value: np.nanvar gives NaN (inf - inf)
        absmax = np.where(cnt > 0, np.fmax(np.abs(low), np.abs(high)), np.nan)
    return np.nan_to_num(var), np.nan_to_num(absmax)


def group_first_constant(values: pd.Series | np.ndarray, order: np.ndarray, starts: np.ndarray) -> tuple[bool, np.ndarray]:
    """Whether ``values`` is constant within every group, and each group's first row.

    NaN counts as a value (a group of NaN is constant; NaN mixed with a value is
    not). Empty groups are ignored.

    Returns
    -------
    constant
        True when every non-empty group holds a single distinct value.
    first
        Row index (into ``values``) of each group's first row (``-1`` for empty groups).
    """
    codes, _ = pd.factorize(pd.Series(values), use_na_sentinel=False)
    codes = codes.astype(np.int64, copy=False)
    sizes = np.diff(starts)
    nonempty = sizes > 0
    first = np.full(sizes.shape[0], -1, dtype=np.int64)
    if order.size == 0:
        return True, first
    first[nonempty] = order[starts[:-1][nonempty]]
    c = codes[order]
    idx = starts[:-1][nonempty]
    mins = np.minimum.reduceat(c, idx)
    maxs = np.maximum.reduceat(c, idx)
    return bool((mins == maxs).all()), first


# ----------------------------------------------------------------------------------------------
# numba kernels (compiled lazily, cached on disk)
# ----------------------------------------------------------------------------------------------
_NUMBA: dict | None = None


def _numba_kernels():
    """Compile (once) and return the numba kernels, or ``{}`` when numba is unavailable."""
    global _NUMBA
    if _NUMBA is not None:
        return _NUMBA
    if os.environ.get("IMGPROF_DISABLE_NUMBA", "") not in ("", "0"):
        _NUMBA = {}
        return _NUMBA
    try:
        from . import _group_kernels as gk
    except Exception:  # pragma: no cover - numba missing or broken
        _NUMBA = {}
        return _NUMBA

    _NUMBA = {
        "median": gk.median_kernel, "moments": gk.moments_kernel, "sqdev": gk.sqdev_kernel, "place_rows": gk.place_rows_kernel,
        "var_absmax": gk.var_absmax_kernel,
    }
    return _NUMBA


def _as_float_matrix(X) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {X.shape}.")
    if X.dtype.kind not in "f":
        check_numeric(X, param="the matrix")
        X = X.astype(np.float64)
    elif X.dtype.itemsize > 8:
        X = X.astype(np.float64)
    return X


def raise_inf(n_inf: np.ndarray, var_names, what: str) -> None:
    cols = np.flatnonzero(n_inf)
    if cols.size:
        names = [str(var_names[c]) for c in cols[:5]] if var_names is not None else cols[:5].tolist()
        raise ValueError(
            f"{what} contains {int(n_inf.sum())} inf value(s) in {cols.size} column(s), e.g. {names}. "
            "Replace them (e.g. with NaN) before reducing; a median or mean with inf is not a profile."
        )


# ----------------------------------------------------------------------------------------------
# public reductions
# ----------------------------------------------------------------------------------------------
def group_reduce(
    X,
    codes: np.ndarray,
    n_groups: int,
    func: str = "median",
    *,
    ddof: int = 1,
    mad_scale: float | str = 1.0, min_count: int = 1, inf: str = "raise",
    var_names: Sequence[str] | None = None, what: str = "adata.X", block_size: int | None = None, n_jobs: int | None = None,
) -> np.ndarray:
    """Reduce the rows of ``X`` per group.

    Parameters
    ----------
    X
        ``(n_obs, n_features)`` matrix: numpy (any float or integer dtype; computed
        in float64) or a dask array.
    codes
        Group code of each row (from :func:`group_codes`); ``-1`` rows are ignored.
    n_groups
        Number of groups (``len(groups)``); groups without rows give NaN (0 for counts/sums).
    func
        ``"median"``, ``"mean"``, ``"sum"``, ``"count"`` (non-NaN values),
        ``"mad"`` (median absolute deviation from the group median),
        ``"std"``/``"var"`` (with ``ddof``), ``"min"``, ``"max"``. NaN are skipped.
    ddof
        Delta degrees of freedom for std/var (pandas default 1).
    mad_scale
        Factor applied to the MAD; ``"normal"`` = 1.4826 (scipy's ``scale="normal"``).
    min_count
        Groups with fewer non-NaN values than this get NaN (except count/sum).
    inf
        ``"raise"`` (default): a ``ValueError`` naming the columns holding ±inf;
        ``"propagate"``: use them as values (medians may then be inf).
    var_names, what
        Column names and matrix name for error messages.
    block_size
        Columns per task (default for medians: as many as keep one gather buffer
        under ~64 MB per thread; 256 for the other reductions).
    n_jobs
        Threads (default: all CPUs); tasks are row-balanced chunks of groups times
        column blocks, so results do not depend on ``n_jobs``.

    Returns
    -------
    ``(n_groups, n_features)`` float64 array.

    Examples
    --------
    >>> X = np.array([[1.0, 10], [3, 30], [2, np.nan], [100, 5]])
    >>> group_reduce(X, np.array([0, 0, 0, 1]), 2, "median").tolist()
    [[2.0, 20.0], [100.0, 5.0]]
    >>> group_reduce(X, np.array([0, 0, 0, 1]), 2, "count").tolist()
    [[3.0, 2.0], [1.0, 1.0]]
    """
    if func not in REDUCTIONS:
        raise ValueError(f"func must be one of {REDUCTIONS}, got {func!r}.")
    if inf not in ("raise", "propagate"):
        raise ValueError(f"inf must be 'raise' or 'propagate', got {inf!r}.")
    codes = np.asarray(codes)
    if codes.ndim != 1 or codes.shape[0] != X.shape[0]:
        raise ValueError(f"codes has shape {codes.shape}; expected one code per row ({X.shape[0]}).")
    codes = codes.astype(np.int64, copy=False)
    if is_dask(X):
        from ._groups_dask import group_reduce_dask

        return group_reduce_dask(
            X, codes, n_groups, func, ddof=ddof, mad_scale=mad_scale, min_count=min_count, inf=inf,
            var_names=var_names, what=what, block_size=block_size,
        )
    if func == "median":
        return group_median_mad(
            X, codes, n_groups, want_mad=False, min_count=min_count, inf=inf, var_names=var_names, what=what,
            block_size=block_size, n_jobs=n_jobs,
        )[0]
    if func == "mad":
        mad = group_median_mad(
            X, codes, n_groups, want_mad=True, mad_scale=mad_scale, min_count=min_count, inf=inf,
            var_names=var_names, what=what, block_size=block_size, n_jobs=n_jobs,
        )[1]
        assert mad is not None  # want_mad=True
        return mad
    return _group_moments(
        X, codes, n_groups, func, ddof=ddof, min_count=min_count, inf=inf, var_names=var_names, what=what,
        block_size=block_size, n_jobs=n_jobs,
    )


def group_median_mad(
    X,
    codes: np.ndarray,
    n_groups: int,
    *,
    want_mad: bool = True,
    mad_scale: float | str = 1.0, min_count: int = 1, inf: str = "raise",
    var_names: Sequence[str] | None = None, what: str = "adata.X", block_size: int | None = None, n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-group median and (optionally) MAD in one pass over ``X``.

    The MAD is ``median(|x - median(x)|)`` over the non-NaN values, times
    ``mad_scale`` (``"normal"`` gives scipy's ``median_abs_deviation(scale="normal")``).
    Arguments as in :func:`group_reduce`.

    Returns
    -------
    ``(median, mad)``: two ``(n_groups, n_features)`` float64 arrays (``mad`` is
    ``None`` when ``want_mad=False``).

    Examples
    --------
    >>> X = np.array([[1.0], [2.0], [4.0], [10.0]])
    >>> med, mad = group_median_mad(X, np.array([0, 0, 0, 1]), 2)
    >>> med.ravel().tolist(), mad.ravel().tolist()
    ([2.0, 10.0], [1.0, 0.0])
    """
    if isinstance(mad_scale, str):
        if mad_scale != "normal":
            raise ValueError(f"mad_scale must be a number or 'normal', got {mad_scale!r}.")
        mad_scale = _MAD_NORMAL
    codes = np.asarray(codes, dtype=np.int64)
    if is_dask(X):
        from ._groups_dask import median_mad_dask

        return median_mad_dask(
            X, codes, n_groups, want_mad=want_mad, mad_scale=mad_scale, min_count=min_count, inf=inf,
            var_names=var_names, what=what, block_size=block_size,
        )
    X = _as_float_matrix(X)
    med, mad, n_inf = _median_mad_numpy(X, codes, n_groups, want_mad, block_size, n_jobs)
    if inf == "raise":
        raise_inf(n_inf, var_names, what)
    if mad is not None and mad_scale != 1.0:
        mad *= mad_scale
    if min_count > 1:
        cnt = _group_moments(X, codes, n_groups, "count", n_jobs=n_jobs, inf="propagate")
        low = cnt < min_count
        med[low] = np.nan
        if mad is not None:
            mad[low] = np.nan
    return med, mad


def _median_mad_numpy(
    X: np.ndarray, codes: np.ndarray, n_groups: int, want_mad: bool, block_size: int | None, n_jobs: int | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Medians (and MADs) of a float numpy matrix, and the ±inf count per column."""
    p = X.shape[1]
    order, starts = sort_groups(codes, n_groups)
    med = np.empty((n_groups, p), dtype=np.float64)
    mad = np.empty((n_groups, p), dtype=np.float64) if want_mad else None
    n_inf = np.zeros(p, dtype=np.int64)
    if p == 0 or n_groups == 0:
        return med, mad, n_inf
    kernels = _numba_kernels()
    if kernels:
        k = kernels["median"]
        mad_arr = mad if mad is not None else np.empty((1, 1))
        Xc = X if (X.flags.c_contiguous or X.flags.f_contiguous) else np.ascontiguousarray(X)
        tasks = median_tasks(starts, p, block_size, resolve_jobs(n_jobs, 1 << 30))

        def run(task):
            (g0, g1), (c0, c1) = task
            n_inf_local = np.zeros(p, dtype=np.int64)
            k(Xc, order, starts, g0, g1, c0, c1, med, mad_arr, want_mad, n_inf_local)
            return n_inf_local

        run_tasks(run, tasks, n_jobs, n_inf)
        return med, mad, n_inf
    for c0, c1 in column_blocks(p, block_size or 32):
        Xb = X[order, c0:c1].astype(np.float64, copy=False)
        n_inf[c0:c1] += np.isinf(Xb).sum(axis=0)
        m, d = _np_median_block(Xb, starts, want_mad)
        med[:, c0:c1] = m
        if mad is not None and d is not None:
            mad[:, c0:c1] = d
    return med, mad, n_inf


def _group_moments(
    X, codes, n_groups, func, *, ddof=1, min_count=1, inf="raise", var_names=None, what="adata.X",
    block_size=None, n_jobs=None,
) -> np.ndarray:
    X = _as_float_matrix(X)
    n, p = X.shape
    s1 = np.zeros((n_groups, p))
    cnt = np.zeros((n_groups, p), dtype=np.int64)
    want_minmax = func in ("min", "max")
    mn = np.full((n_groups, p), np.inf) if want_minmax else np.empty((1, 1))
    mx = np.full((n_groups, p), -np.inf) if want_minmax else np.empty((1, 1))
    n_inf = np.zeros(p, dtype=np.int64)
    kernels = _numba_kernels()
    blocks = column_blocks(p, block_size or 256)
    if p and n_groups:
        if kernels:
            k = kernels["moments"]

            def run(bl):
                local = np.zeros(p, dtype=np.int64)
                k(X, codes, bl[0], bl[1], s1, mn, mx, cnt, want_minmax, local)
                return local

            run_tasks(run, blocks, n_jobs, n_inf)
        else:
            valid = codes >= 0
            cv = codes[valid]
            for c0, c1 in blocks:
                Xb = X[valid, c0:c1].astype(np.float64, copy=False)
                finite = ~np.isnan(Xb)
                n_inf[c0:c1] += np.isinf(Xb).sum(axis=0)
                np.add.at(s1[:, c0:c1], cv, np.where(finite, Xb, 0.0))
                np.add.at(cnt[:, c0:c1], cv, finite.astype(np.int64))
                if want_minmax:
                    np.minimum.at(mn[:, c0:c1], cv, np.where(finite, Xb, np.inf))
                    np.maximum.at(mx[:, c0:c1], cv, np.where(finite, Xb, -np.inf))
    if inf == "raise" and func != "count":
        raise_inf(n_inf, var_names, what)
    if func == "count":
        return cnt.astype(np.float64)
    if func == "sum":
        return s1
    low = cnt < max(min_count, 1)
    if func in ("min", "max"):
        out = mn if func == "min" else mx
        out[low] = np.nan
        return out
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / cnt
    mean[low] = np.nan
    if func == "mean":
        return mean
    # var / std: second pass on deviations (numerically stable)
    s2 = np.zeros((n_groups, p))
    if p and n_groups:
        if kernels:
            k2 = kernels["sqdev"]
            mean0 = np.where(np.isnan(mean), 0.0, mean)

            def run2(bl):
                k2(X, codes, bl[0], bl[1], mean0, s2)

            run_tasks(run2, blocks, n_jobs)
        else:
            valid = codes >= 0
            cv = codes[valid]
            for c0, c1 in blocks:
                Xb = X[valid, c0:c1].astype(np.float64, copy=False)
                d = Xb - mean[cv, c0:c1]
                np.add.at(s2[:, c0:c1], cv, np.where(np.isnan(d), 0.0, d * d))
    with np.errstate(invalid="ignore", divide="ignore"):
        var = s2 / (cnt - ddof)
    var[(cnt - ddof) <= 0] = np.nan
    var[low] = np.nan
    return np.sqrt(var) if func == "std" else var


def group_apply(X, codes: np.ndarray, n_groups: int, fn) -> np.ndarray:
    """Apply ``fn(X_sorted, local_codes, n_local_groups) -> (n_local_groups, p)`` per group.

    ``X_sorted`` holds whole rows (all columns) of consecutive groups (in group order) and
    ``local_codes`` their codes renumbered from 0. For numpy input ``fn`` is
    called once on all rows; for dask input once per row chunk re-chunked on
    group boundaries (so a group is never split), and the results are stacked.
    Groups without rows are NaN.

    Examples
    --------
    >>> X = np.array([[1.0], [5.0], [2.0]])
    >>> group_apply(X, np.array([1, 0, 1]), 2, lambda x, c, n: np.stack([x[c == g].max(0) for g in range(n)])).tolist()
    [[5.0], [2.0]]
    """
    codes = np.asarray(codes, dtype=np.int64)
    if is_dask(X):
        from ._groups_dask import dask_by_chunks

        # fn sees whole rows (e.g. MODZ correlates replicates across all features): one column chunk
        return dask_by_chunks(X.rechunk({1: -1}), codes, n_groups, lambda block, c, n: fn(np.asarray(block), c, n), fill=np.nan)
    X = np.asarray(X)
    order, starts = sort_groups(codes, n_groups)
    out = np.full((n_groups, X.shape[1]), np.nan)
    if order.size == 0:
        return out
    sc = codes[order]
    lo, hi = int(sc[0]), int(sc[-1]) + 1
    out[lo:hi] = fn(X[order], sc - lo, hi - lo)
    return out
