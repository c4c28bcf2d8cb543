"""Feature selection with pycytominer 1.7.1's operations and semantics.

Operations (applied in the order given, each on the features the previous ones kept,
as in pycytominer):

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
one sort per column); dask arrays are reduced with dask. The result of each
operation is kept in ``adata.uns[key_added]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._core.groups import group_codes, group_reduce
from .._core.provenance import log_step
from .._core.validation import (
    check_adata,
    check_array,
    check_choice,
    check_float,
    check_obs_keys,
    finish,
    get_matrix,
    is_dask,
    resolve_mask,
    start,
)

__all__ = ["feature_select", "OPERATIONS", "load_blocklist", "BLOCKLIST_PATH"]

#: Operations understood by :func:`feature_select` (pycytominer's names).
OPERATIONS = (
    "variance_threshold",
    "frequency_threshold",
    "correlation_threshold",
    "drop_na_columns",
    "blocklist",
    "drop_outliers",
    "noise_removal",
)
#: The standard CellProfiler blocklist shipped with imgprof (copied from pycytominer, BSD-3).
BLOCKLIST_PATH = Path(__file__).with_name("data") / "blocklist.txt"
_VALUE_OPS = set(OPERATIONS) - {"blocklist"}


def load_blocklist(path: str | Path | None = None) -> list[str]:
    """Feature names of a blocklist file (one per line, ``#`` comments).

    ``None`` reads the standard CellProfiler blocklist shipped with imgprof
    (pycytominer's ``blocklist_features.txt``, 55 features). A file with a
    ``blocklist`` header line (pycytominer's CSV format) is accepted too.

    Examples
    --------
    >>> from imgprof.pp.feature_select import load_blocklist
    >>> len(load_blocklist())
    55
    """
    p = Path(path) if path is not None else BLOCKLIST_PATH
    if not p.exists():
        raise FileNotFoundError(f"{p}: blocklist file not found.")
    names = []
    for line in p.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and line != "blocklist":
            names.append(line)
    return names


# ----------------------------------------------------------------------------------------------
# array kernels (numpy only)
# ----------------------------------------------------------------------------------------------
def _frequency_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _pairwise_sums(Z: np.ndarray, nan: np.ndarray):
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
    Nn = nan.astype(np.float32 if exact32 else np.float64)
    B = np.asarray(Nn.T @ Nn, dtype=np.float64)
    N = n - a[:, None] - a[None, :] + B
    cz = np.asarray(Z.astype(Nn.dtype).T @ Nn, dtype=np.float64)  # [i, j]: sum of Z[:, i] where j is NaN
    cz2 = np.asarray(Z2.astype(Nn.dtype).T @ Nn, dtype=np.float64)
    Sx = Z.sum(axis=0)[:, None] - cz
    Sxx = Z2.sum(axis=0)[:, None] - cz2
    return N, Sx, Sxx, Sxy


def _pearson_pairwise(X: np.ndarray) -> np.ndarray:
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
        N, Sx, Sxx, Sxy = _pairwise_sums(Z, nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            cov = Sxy - Sx * Sx.T / N
            vx = Sxx - Sx * Sx / N  # var of i over the pair's rows (x n)
            vy = vx.T
            tiny = 1e-12
            bad = (N < 1) | (vx <= tiny * Sxx) | (vy <= tiny * Sxx.T)
            C = cov / np.sqrt(vx * vy)
        C[bad] = np.nan
    if const.any():
        C[const, :] = np.nan
        C[:, const] = np.nan
    return C


def _correlation_matrix(X: np.ndarray, method: str) -> np.ndarray:
    if method == "pearson":
        return _pearson_pairwise(X)
    if method == "spearman" and not np.isnan(X).any():
        from scipy.stats import rankdata

        return _pearson_pairwise(rankdata(X, axis=0, method="average"))
    C = pd.DataFrame(X).corr(method=method).to_numpy()
    const = _constant_cols(X)
    C[const, :] = np.nan
    C[:, const] = np.nan
    return C


def _correlation_exclusions(C: np.ndarray, threshold: float) -> np.ndarray:
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
# statistics: numpy or dask
# ----------------------------------------------------------------------------------------------
def _stat_na_fraction(X, n):
    if is_dask(X):
        import dask.array as da

        return np.asarray(da.isnan(X).sum(axis=0).compute()) / n
    return np.isnan(X).sum(axis=0) / n


def _stat_variance(X, min_variance):
    """Per-column variance (ddof=0, NaN skipped; scikit-learn ``VarianceThreshold`` semantics)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if is_dask(X):
            import dask
            import dask.array as da

            var, hi, lo = dask.compute(da.nanvar(X, axis=0), da.max(X, axis=0), da.min(X, axis=0))
            var, ptp = np.asarray(var), np.asarray(hi) - np.asarray(lo)
        else:
            # two-pass grouped kernel with one group: same numbers as np.nanvar, without its copies
            var = group_reduce(X, np.zeros(X.shape[0], dtype=np.int64), 1, "var", ddof=0, inf="propagate")[0]
            ptp = np.ptp(X, axis=0) if min_variance == 0 else None
        if min_variance == 0:  # scikit-learn: also use the peak-to-peak range
            var = np.nanmin(np.vstack([var, ptp]), axis=0)
    return var


def _stat_minmax(X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if is_dask(X):
            import dask
            import dask.array as da

            hi, lo = dask.compute(da.nanmax(X, axis=0), da.nanmin(X, axis=0))
            return np.asarray(hi), np.asarray(lo)
        return np.nanmax(X, axis=0), np.nanmin(X, axis=0)


def _stat_frequency(X):
    if not is_dask(X):
        return _frequency_stats(X)

    n = X.shape[0]
    width = int(max(1, min(X.shape[1], (2**27) // max(n * 8, 1))))  # ~128 MB per task
    Xr = X.rechunk({0: -1, 1: width})

    def block(b):
        r, u = _frequency_stats(np.asarray(b, dtype=np.float64))
        return np.vstack([r, u.astype(np.float64)])

    out = np.asarray(Xr.map_blocks(block, chunks=((2,), Xr.chunks[1]), dtype=np.float64).compute())
    return out[0], out[1].astype(np.int64)


def _stat_correlation(X, method):
    if not is_dask(X):
        return _correlation_matrix(X, method)
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
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = Sxy - Sx * Sx.T / N
        vx = Sxx - Sx * Sx / N
        vy = vx.T
        bad = (N < 1) | (vx <= 1e-12 * Sxx) | (vy <= 1e-12 * Sxx.T)
        C = cov / np.sqrt(vx * vy)
    C[bad] = np.nan
    const = ~(np.asarray(hi) > np.asarray(lo))
    C[const, :] = np.nan
    C[:, const] = np.nan
    return C


def _stat_noise(X, codes, n_groups):
    """Mean over groups of the within-group std (ddof=0), NaN skipped."""
    std = group_reduce(X, codes, n_groups, "std", ddof=0, inf="propagate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(std, axis=0)


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------
def feature_select(
    adata,
    operation: str | Sequence[str] = "variance_threshold",
    *,
    samples=None,
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
    layer: str | None = None,
    key_added: str = "feature_select",
    copy: bool = False,
):
    """Drop uninformative, redundant or noisy features (pycytominer's ``feature_select``).

    Parameters
    ----------
    adata
        Profiles (``.X`` numpy or dask).
    operation
        One operation or a list, applied in order; see the module docs. Names as in
        pycytominer: ``"variance_threshold"``, ``"frequency_threshold"``,
        ``"correlation_threshold"``, ``"drop_na_columns"``, ``"blocklist"``,
        ``"drop_outliers"``, ``"noise_removal"``.
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
    layer
        Compute the statistics on ``adata.layers[layer]`` instead of ``.X``.
    key_added
        ``adata.uns[key_added]`` receives ``{operation: [dropped features]}``.
    copy
        Return a new AnnData instead of subsetting ``adata`` in place.

    Returns
    -------
    ``None`` or, with ``copy=True``, the AnnData restricted to the selected features.
    ``adata.uns[key_added]`` records what each operation dropped (a feature is listed
    under the first operation that dropped it); the step goes to the provenance log.

    Raises
    ------
    ValueError
        inf values, an unknown operation or out-of-range cut-off, ``noise_removal``
        without its two arguments, or a selection that would drop every feature.
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
    ops = [operation] if isinstance(operation, str) else list(operation)
    unknown = [o for o in ops if o not in OPERATIONS]
    if unknown or not ops:
        raise ValueError(f"operation: {unknown or ops} not supported; choose from {list(OPERATIONS)}.")
    if len(set(ops)) != len(ops):
        raise ValueError(f"operation: {ops} lists an operation twice.")
    for name, val in (("na_cutoff", na_cutoff), ("corr_threshold", corr_threshold), ("freq_cut", freq_cut), ("unique_cut", unique_cut)):
        check_float(val, name, min_value=0.0, max_value=1.0)
    min_variance = check_float(min_variance, "min_variance", min_value=0.0)
    outlier_cutoff = check_float(outlier_cutoff, "outlier_cutoff", min_value=0.0, include_min=False)
    noise_removal_stdev_cutoff = check_float(
        noise_removal_stdev_cutoff, "noise_removal_stdev_cutoff", min_value=0.0, allow_none=True
    )
    check_choice(corr_method, "corr_method", ["pearson", "spearman", "kendall"])
    if not isinstance(key_added, str) or not key_added:
        raise TypeError(f"key_added must be a non-empty string (a key of adata.uns), got {key_added!r}.")
    groups_arg = noise_removal_perturb_groups
    if groups_arg is not None and not isinstance(groups_arg, str) and (np.ndim(groups_arg) != 1):
        raise TypeError(
            "noise_removal_perturb_groups must be an .obs column name or one label per observation "
            f"(a list, array or Series), got {groups_arg!r}."
        )
    check_adata(adata)
    if adata.n_obs == 0:
        raise ValueError("adata has 0 observations; nothing to select features on.")
    if "noise_removal" in ops and (noise_removal_perturb_groups is None or noise_removal_stdev_cutoff is None):
        raise ValueError(
            "noise_removal needs both noise_removal_perturb_groups (an .obs column or one label per row) and "
            "noise_removal_stdev_cutoff."
        )

    adata = start(adata, copy)
    X_all = get_matrix(adata, layer=layer)
    dask_mode = is_dask(X_all)
    what = f"adata.layers[{layer!r}]" if layer is not None else "adata.X"
    if features is None:
        cand = np.arange(adata.n_vars)
    else:
        feats = [features] if isinstance(features, str) else list(features)
        cand = adata.var_names.get_indexer(pd.Index(feats))
        missing = [f for f, i in zip(feats, cand) if i < 0]
        if missing:
            raise KeyError(f"features: {missing[:5]} not found in adata.var_names.")
    if isinstance(samples, str) and samples == "all":
        samples = None
    mask = resolve_mask(adata, samples, param="samples")
    n_rows = int(mask.sum())

    X = None
    if _VALUE_OPS & set(ops):
        X = X_all if mask.all() else X_all[np.flatnonzero(mask)]
        X = X if dask_mode else np.asarray(X)
        X = X.astype(np.float64) if X.dtype != np.float64 else X
        # the one matrix check: numeric, no inf (NaN allowed); dask arrays are scanned once
        check_array(X, param=what, var_names=adata.var_names, allow_nan=True, min_rows=0, min_cols=0, check_dask_finite=True)

    noise_codes = None
    if "noise_removal" in ops:
        if isinstance(groups_arg, str):
            check_obs_keys(adata, groups_arg, param="noise_removal_perturb_groups")
            labels = adata.obs[groups_arg]
        elif isinstance(groups_arg, pd.Series):  # aligned by index, like every Series selection
            idx = pd.Index(groups_arg.index.astype(str))
            if len(groups_arg) != adata.n_obs or idx.has_duplicates or not idx.isin(adata.obs_names).all():
                raise ValueError(
                    "noise_removal_perturb_groups: a Series is aligned on adata.obs_names by its index, and its index "
                    f"does not match them ({len(groups_arg)} labels for {adata.n_obs} observations)."
                )
            labels = pd.Series(groups_arg.to_numpy(dtype=object), index=idx).reindex(adata.obs_names)
        else:
            if len(groups_arg) != adata.n_obs:
                raise ValueError(
                    f"noise_removal_perturb_groups: {len(groups_arg)} labels given for {adata.n_obs} observations."
                )
            labels = pd.Series(np.asarray(groups_arg, dtype=object), index=adata.obs_names)
        labels = labels[mask]
        n_na = int(pd.isna(labels).sum())
        if n_na:
            warnings.warn(
                f"noise_removal: {n_na} row(s) have no group label; they are left out of the within-group std "
                "(as pandas groupby does).",
                UserWarning,
                stacklevel=2,
            )
        noise_codes, noise_groups = group_codes(labels.to_frame("g"), "g", dropna=True, param="noise_removal_perturb_groups")

    remaining = list(cand)  # positions into adata.var_names, in var order
    dropped: dict[str, list[str]] = {}
    var_names = adata.var_names
    p_all = X_all.shape[1]
    for op in ops:
        rem = np.asarray(remaining, dtype=np.int64)
        # column-wise statistics are computed on all columns (no copy) and indexed; the
        # frequency and correlation tests work on the remaining columns only
        if X is not None and op in ("frequency_threshold", "correlation_threshold"):
            Xr = X if rem.size == p_all and (rem == np.arange(p_all)).all() else X[:, rem]
        if op == "variance_threshold":
            var = _stat_variance(X, min_variance)[rem]
            with np.errstate(invalid="ignore"):
                drop = ~(var > min_variance)
        elif op == "frequency_threshold":
            ratio, n_unique = _stat_frequency(Xr)
            drop = (ratio < freq_cut) | (n_unique / max(n_rows, 1) < unique_cut)
        elif op == "correlation_threshold":
            C = _stat_correlation(Xr, corr_method)
            drop = _correlation_exclusions(C, corr_threshold)
        elif op == "drop_na_columns":
            drop = _stat_na_fraction(X, n_rows)[rem] > na_cutoff
        elif op == "blocklist":
            if blocklist is None or isinstance(blocklist, (str, Path)):
                block = set(load_blocklist(blocklist))
            else:
                block = {str(b) for b in blocklist}
            drop = np.array([str(var_names[i]) in block for i in rem], dtype=bool)
        elif op == "drop_outliers":
            hi, lo = _stat_minmax(X)
            with np.errstate(invalid="ignore"):
                drop = (np.abs(hi[rem]) > outlier_cutoff) | (np.abs(lo[rem]) > outlier_cutoff)
        else:  # noise_removal
            stdev = _stat_noise(X, noise_codes, len(noise_groups))[rem]
            with np.errstate(invalid="ignore"):
                drop = stdev > noise_removal_stdev_cutoff
        drop = np.asarray(drop, dtype=bool)
        dropped[op] = [str(var_names[i]) for i in rem[drop]]
        remaining = rem[~drop].tolist()
        if not remaining and adata.n_vars - len(cand) == 0:
            raise ValueError(
                f"feature_select: operation {op!r} drops every remaining feature ({int(drop.sum())}); "
                "nothing would be left. Check the cut-offs and the samples= selection."
            )

    all_dropped = {n for names in dropped.values() for n in names}
    keep = ~adata.var_names.isin(list(all_dropped))
    adata.uns[key_added] = {op: list(names) for op, names in dropped.items()}
    if not keep.all():
        adata._inplace_subset_var(keep)
    dom_extra = {}
    steps = adata.uns.get("imgprof", {}).get("steps", {}) or {}
    if layer is None and any(str(k).endswith("pp.normalize") for k in steps):
        # guardrail: after normalize, say whether one feature still dominates the kept matrix
        from .._core.guardrails import check_feature_dominance

        dom = check_feature_dominance(
            get_matrix(adata), adata.var_names, where="feature_select (kept features)",
            outlier_cutoff=outlier_cutoff if "drop_outliers" in ops else None,
        )
        if dom is not None:
            dom_extra = {"top_variance_share": [[n, round(v, 4)] for n, v in dom["top"]]}
            if dom["warning"]:
                dom_extra["guardrail_warning"] = dom["warning"]
    log_step(
        adata,
        "pp.feature_select",
        {
            "operation": ops,
            "samples": samples if samples is None or isinstance(samples, str) else f"<selection of {int(mask.sum())} rows>",
            "features": None if features is None else len(cand),
            "na_cutoff": na_cutoff,
            "corr_threshold": corr_threshold,
            "corr_method": corr_method,
            "freq_cut": freq_cut,
            "unique_cut": unique_cut,
            "min_variance": min_variance,
            "blocklist": blocklist if blocklist is None or isinstance(blocklist, (str, Path)) else f"<{len(blocklist)} names>",
            "outlier_cutoff": outlier_cutoff,
            "noise_removal_perturb_groups": noise_removal_perturb_groups if isinstance(noise_removal_perturb_groups, str) else None,
            "noise_removal_stdev_cutoff": noise_removal_stdev_cutoff,
            "layer": layer,
            "key_added": key_added,
        },
        n_dropped={op: len(v) for op, v in dropped.items()},
        n_kept=int(keep.sum()),
        **dom_extra,
    )
    return finish(adata, copy)
