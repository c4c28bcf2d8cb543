"""Single cells → wells (or any ``by=`` keys): ``ip.pp.aggregate``.

Matches ``pycytominer.aggregate`` (groupby median/mean, ``dropna=False``, groups
in sorted key order) while reducing sorted segments with compiled kernels, column
block by column block, without building a pandas frame. Works on numpy ``.X``,
dask ``.X`` (any scheduler, including ``dask.distributed``), and streams parquet
files or zarr stores too large for memory.
"""

from __future__ import annotations

import copy as _copy
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._core.anatomy import parse_feature_names
from .._core.features import METADATA_PREFIXES, check_numeric_features, split_columns
from .._core.groups import group_codes, group_first_constant, group_reduce, sort_groups
from .._core.provenance import UNS_KEY, log_step, set_level
from .._core.validation import as_list, check_df_keys, check_obs_keys, get_matrix, is_dask

PathLike = str | os.PathLike

DEFAULT_BY = ("Metadata_Plate", "Metadata_Well")
_FUNCS = ("median", "mean")


def _check_func(operation: str) -> str:
    if operation not in _FUNCS:
        raise ValueError(f"operation must be one of {_FUNCS} (pycytominer's operations), got {operation!r}.")
    return operation


def _warn_nan(X: np.ndarray, var_names, *, what: str) -> int:
    """Warn (naming columns) when the output holds NaN; return the NaN count."""
    nan = np.isnan(X)
    n = int(nan.sum())
    if n:
        cols = np.flatnonzero(nan.any(axis=0))
        names = [str(var_names[c]) for c in cols[:5]]
        warnings.warn(
            f"{what}: {n} value(s) in {cols.size} feature(s) are NaN because every input value of that "
            f"feature was NaN within a group (e.g. {names}); they stay NaN, as in pycytominer. "
            "Drop or impute such features (ip.pp.feature_select(..., operation=['drop_na_columns'])).",
            UserWarning,
            stacklevel=4,
        )
    return n


def _new_uns(src_uns: dict | None, obs: pd.DataFrame, features: Sequence[str], obs_dtypes: dict) -> dict:
    """uns of an aggregated AnnData: the input's provenance, fresh column/dtype/index info."""
    uns: dict = {}
    store = _copy.deepcopy(dict(src_uns.get(UNS_KEY, {}))) if src_uns else {}
    store["columns"] = [str(c) for c in obs.columns] + [str(f) for f in features]
    store["obs_dtypes"] = json.dumps({c: d for c, d in obs_dtypes.items() if c in obs.columns})
    store["index"] = json.dumps({"kind": "range", "start": 0, "step": 1, "name": None})
    uns[UNS_KEY] = store
    return uns


def _group_metadata(
    obs: pd.DataFrame, by: list[str], groups: pd.DataFrame, order: np.ndarray, starts: np.ndarray,
    keep_metadata: bool | Sequence[str],
) -> tuple[pd.DataFrame, list[str]]:
    """Key columns plus the metadata columns constant within every group (first value)."""
    out = groups.copy()
    dropped: list[str] = []
    if keep_metadata is False:
        return out, [c for c in obs.columns if c not in by]
    candidates = [c for c in obs.columns if c not in by]
    explicit = not isinstance(keep_metadata, bool)
    if explicit:
        candidates = as_list(keep_metadata)
        check_df_keys(obs, candidates, param="keep_metadata", where="adata.obs")
    for c in candidates:
        constant, first = group_first_constant(obs[c], order, starts)
        if constant:
            vals = obs[c].iloc[np.maximum(first, 0)]
            out[c] = vals.to_numpy() if not isinstance(vals.dtype, pd.CategoricalDtype) else vals.values
            if (first < 0).any():
                out.loc[first < 0, c] = np.nan
        elif explicit:
            raise ValueError(
                f"keep_metadata: column {c!r} is not constant within every group of {by}; "
                "it cannot describe one aggregated profile."
            )
        else:
            dropped.append(c)
    return out, dropped


def grouped_result(
    adata: ad.AnnData, by: list[str], groups: pd.DataFrame, order: np.ndarray, starts: np.ndarray, Xout: np.ndarray,
    *, count_key: str | None, keep_metadata, level: str, what: str,
) -> tuple[ad.AnnData, list[str], int]:
    """Build the AnnData of a grouped step (aggregate, consensus): obs, count, uns, level.

    Returns the new AnnData, the metadata columns that were dropped (not constant
    within groups) and the number of NaN values in ``Xout`` (warned about).
    """
    out_obs, dropped_meta = _group_metadata(adata.obs, by, groups, order, starts, keep_metadata)
    sizes = np.diff(starts)
    if count_key is not None:
        if count_key in out_obs.columns:
            out_obs = out_obs.drop(columns=count_key)
            dropped_meta.append(count_key)
        out_obs.insert(len(by), count_key, sizes.astype(np.int64))
    out_obs.index = pd.Index([str(i) for i in range(len(out_obs))])
    n_nan = _warn_nan(Xout, adata.var_names, what=what)
    src_dtypes = json.loads(adata.uns.get(UNS_KEY, {}).get("obs_dtypes", "{}") or "{}")
    obs_dtypes = {c: src_dtypes[c] for c in out_obs.columns if c in src_dtypes}
    if count_key is not None:
        obs_dtypes[count_key] = "int64"
    var = adata.var.copy()
    if "input_dtype" in var.columns:
        var["input_dtype"] = "float64"  # medians/means are float: to_pandas must not cast them back to int
    result = ad.AnnData(X=Xout, obs=out_obs, var=var, uns=_new_uns(adata.uns, out_obs, adata.var_names, obs_dtypes))
    set_level(result, level)
    return result, dropped_meta, n_nan


def aggregate(
    adata: ad.AnnData | PathLike,
    by: str | Sequence[str] = DEFAULT_BY,
    *,
    operation: str = "median",
    layer: str | None = None,
    count_key: str | None = "Metadata_Object_Count",
    keep_metadata: bool | Sequence[str] = True,
    dropna: bool = False,
    inf: str = "raise",
    level: str = "well",
    features: Sequence[str] | None = None,
    metadata: Sequence[str] | None = None,
    batch_rows: int = 8_192,
    n_jobs: int | None = None,
) -> ad.AnnData:
    """Aggregate single-cell profiles into well (or any ``by``) profiles.

    Like ``pycytominer.aggregate`` this returns a **new** AnnData (one row per
    group, groups in sorted key order, missing keys forming their own group) and
    leaves the input untouched; there is therefore no ``copy`` argument.

    Parameters
    ----------
    adata
        Single-cell profiles: an AnnData whose ``.X`` is numpy or a dask array, or
        the path of a ``.parquet`` file / ``.zarr`` AnnData store, which is
        streamed (see Notes).
    by
        ``.obs`` column(s) defining the groups (pycytominer's ``strata``).
    operation
        ``"median"`` (default) or ``"mean"`` (pycytominer's ``operation``). NaN are skipped.
    layer
        Aggregate ``adata.layers[layer]`` instead of ``.X``.
    count_key
        ``.obs`` column receiving the number of cells per group (pycytominer's
        ``Metadata_Object_Count``); ``None`` to skip.
    keep_metadata
        ``True``: keep every other ``.obs`` column that is constant within every
        group (its value per group); ``False``: keep only ``by``; a list: keep
        those columns and raise if one varies within a group.
    dropna
        ``False`` (pycytominer): rows with a missing key form a NaN group;
        ``True``: they are left out (their number is logged).
    inf
        ``"raise"`` (default) on ±inf in the features; ``"propagate"`` to use
        them as values.
    level
        Level recorded on the result (``adata.uns['imgprof']['level']``).
    features, metadata
        For parquet input only: explicit feature / metadata columns (default:
        ``Metadata_*`` columns are metadata, every other column a feature).
    batch_rows
        For parquet input: rows read per batch.
    n_jobs
        Threads for the in-memory kernels (default: all CPUs).

    Returns
    -------
    AnnData with one row per group: ``.obs`` = ``by`` columns, ``count_key`` and
    constant metadata; ``.X`` = float64 medians/means; ``.var`` copied; the
    provenance log of the input plus a ``pp.aggregate`` step; level ``"well"``.

    Notes
    -----
    *Out of core.* A dask ``.X`` is re-chunked on group boundaries (sorted first
    when the rows are not grouped) and each chunk reduced in its own task, so
    memory per task is one chunk. A parquet file (or a folder of parquet files)
    is read in batches of ``batch_rows`` rows, one row group at a time; it must
    hold each group in consecutive rows (sorted or partitioned by ``by``, as
    CellProfiler/CytoTable exports per plate and well are): peak memory is one
    row group plus one batch plus the largest group, independent of the number
    of cells (write files with moderate row groups, e.g. ``row_group_size=50_000``).
    A group that reappears after another one started raises.

    *Differences from pycytominer.* Features are every column of ``.X`` (not
    inferred from the ``Cells_``/``Nuclei_``/``Cytoplasm_`` prefixes); integer
    features are reduced as float64 (as pycytominer's ``astype(float)``);
    ±inf raise instead of entering medians; a feature that is NaN for every cell
    of a group stays NaN (as pycytominer) but with a warning; constant metadata
    are kept (pycytominer keeps only the strata).

    Examples
    --------
    >>> import imgprof as ip
    >>> cells = ip.datasets.simulate(n_plates=1, n_perturbations=4, n_moa=2, n_controls=4,
    ...                              n_features=20, level="single_cell", seed=0)
    >>> wells = ip.pp.aggregate(cells, by=["Metadata_Plate", "Metadata_Well"])
    >>> wells.n_obs, int(wells.obs["Metadata_Object_Count"].sum()) == cells.n_obs
    (8, True)
    """
    func = _check_func(operation)
    if inf not in ("raise", "propagate"):
        raise ValueError(f"inf must be 'raise' or 'propagate', got {inf!r}.")
    by = as_list(by)
    if not by:
        raise ValueError("by: give at least one .obs column to aggregate by (e.g. ['Metadata_Plate', 'Metadata_Well']).")
    if isinstance(adata, (str, os.PathLike)):
        path = Path(adata)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or store.")
        name = path.name.lower()
        if name.endswith((".parquet", ".pq")) or (path.is_dir() and any(path.glob("*.parquet"))):
            return _aggregate_parquet(
                path, by, func=func, count_key=count_key, keep_metadata=keep_metadata, dropna=dropna, inf=inf,
                level=level, features=features, metadata=metadata, batch_rows=batch_rows, n_jobs=n_jobs,
            )
        if name.endswith(".zarr"):
            adata = read_zarr_lazy(path)
        else:
            raise ValueError(f"{path}: aggregate streams .parquet files and .zarr stores; read other formats with ip.io.read_profiles.")
    elif not isinstance(adata, ad.AnnData):
        raise TypeError(f"adata must be an AnnData or a path, got {type(adata).__name__}.")
    if features is not None or metadata is not None:
        raise ValueError("features= and metadata= apply to parquet input only; subset the AnnData instead (adata[:, cols]).")
    check_obs_keys(adata, by, param="by")
    if count_key is not None and count_key in by:
        raise ValueError(f"count_key={count_key!r} is also a by= key.")
    X = get_matrix(adata, layer=layer)
    if not is_dask(X):
        X = np.asarray(X)
        if X.dtype.kind not in "fbiu":
            raise TypeError(f"adata.X must be numeric, got dtype {X.dtype}.")
    obs = adata.obs
    codes, groups = group_codes(obs, by, dropna=dropna, param="by")
    n_groups = len(groups)
    if n_groups == 0:
        raise ValueError(f"by={by}: every row has a missing key; nothing to aggregate (dropna=True).")
    n_dropped = int((codes < 0).sum())
    order, starts = sort_groups(codes, n_groups)
    Xout = group_reduce(X, codes, n_groups, func, inf=inf, var_names=adata.var_names, what="adata.X" if layer is None else f"adata.layers[{layer!r}]", n_jobs=n_jobs)
    result, dropped_meta, n_nan = grouped_result(
        adata, by, groups, order, starts, Xout, count_key=count_key, keep_metadata=keep_metadata, level=level,
        what="aggregate",
    )
    log_step(
        result, "pp.aggregate",
        {"by": by, "operation": func, "layer": layer, "count_key": count_key, "keep_metadata": keep_metadata, "dropna": dropna, "inf": inf, "level": level},
        n_cells=int(adata.n_obs), n_groups=n_groups, n_rows_missing_key=n_dropped, dropped_metadata=dropped_meta,
        n_nan_values=n_nan, dask=is_dask(X),
    )
    return result


# ----------------------------------------------------------------------------------------------
# zarr: lazy X
# ----------------------------------------------------------------------------------------------
def read_zarr_lazy(path: PathLike) -> ad.AnnData:
    """Open an AnnData zarr store with ``.obs``/``.var`` in memory and ``.X`` as a dask array.

    Examples
    --------
    >>> import imgprof as ip, tempfile, os
    >>> a = ip.datasets.simulate(n_plates=1, n_features=10, seed=0)
    >>> p = os.path.join(tempfile.mkdtemp(), "a.zarr"); a.write_zarr(p)
    >>> type(ip.pp.read_zarr_lazy(p).X).__module__.split(".")[0]
    'dask'
    """
    import zarr

    g = zarr.open_group(str(path), mode="r")
    for key in ("obs", "var", "X"):
        if key not in g:
            raise ValueError(f"{path}: not an AnnData zarr store (no {key!r} element).")
    from anndata.experimental import read_elem_lazy

    obs = ad.io.read_elem(g["obs"])
    var = ad.io.read_elem(g["var"])
    uns = ad.io.read_elem(g["uns"]) if "uns" in g else {}
    X = read_elem_lazy(g["X"])
    return ad.AnnData(X=X, obs=obs, var=var, uns=uns)


# ----------------------------------------------------------------------------------------------
# parquet streaming
# ----------------------------------------------------------------------------------------------
def _aggregate_parquet(
    path: Path, by: list[str], *, func, count_key, keep_metadata, dropna, inf, level, features, metadata, batch_rows, n_jobs,
) -> ad.AnnData:
    import pyarrow as pa
    import pyarrow.dataset as pds

    dataset = pds.dataset(str(path), format="parquet")
    schema = dataset.schema
    empty = schema.empty_table().to_pandas()
    meta_cols, feat_cols = split_columns(
        empty, metadata=metadata, features=features, metadata_prefix=METADATA_PREFIXES, source=str(path)
    )
    check_df_keys(empty, by, param="by", where=str(path))
    by_set = set(by)
    feat_cols = [c for c in feat_cols if c not in by_set]
    # Non-numeric "features" that are CellProfiler bookkeeping (e.g. ImageNumber strings) are an error, as in from_pandas.
    check_numeric_features(empty, feat_cols, source=str(path))
    drop_ids = [c for c in ("ImageNumber", "ObjectNumber") if c in feat_cols]
    feat_cols = [c for c in feat_cols if c not in drop_ids]
    meta_cols = [c for c in meta_cols if c not in by_set]
    keep_cols = [] if keep_metadata is False else (meta_cols if keep_metadata is True else as_list(keep_metadata))
    if not isinstance(keep_metadata, bool):
        check_df_keys(empty, keep_cols, param="keep_metadata", where=str(path))
    p = len(feat_cols)
    if p == 0:
        raise ValueError(f"{path}: no feature column to aggregate.")

    results: list[np.ndarray] = []
    group_rows: list[pd.DataFrame] = []
    sizes: list[int] = []
    non_constant: set[str] = set()
    seen: set[tuple] = set()
    n_inf = np.zeros(p, dtype=np.int64)
    n_cells = 0
    n_missing = 0
    pend_meta: pd.DataFrame | None = None
    pend_X: np.ndarray | None = None

    def key_tuples(frame: pd.DataFrame) -> list[tuple]:
        return [tuple(None if pd.isna(v) else v for v in row) for row in frame.loc[:, by].itertuples(index=False, name=None)]

    def flush(meta: pd.DataFrame, X: np.ndarray, final: bool):
        nonlocal n_missing
        if dropna:
            ok = meta.loc[:, by].notna().all(axis=1).to_numpy()
            n_missing += int((~ok).sum())
            meta, X = meta.loc[ok], X[ok]
        if len(meta) == 0:
            return None, None
        codes, groups = group_codes(meta, by, dropna=False, sort=False, param="by", where=str(path))
        if (np.diff(codes) < 0).any():
            raise ValueError(
                f"{path}: the rows are not grouped by {by} (a group reappears after another started). "
                "Sort or partition the file by these keys (e.g. with duckdb or pandas per plate) to stream it, "
                "or load it and pass an AnnData."
            )
        n_groups = len(groups)
        # hold back the last group: it may continue in the next batch
        last = n_groups - 1 if not final else n_groups
        keep = codes < last
        if last > 0:
            cc = codes[keep]
            Xc = X[keep]
            red = group_reduce(Xc, cc, last, func, inf="propagate", n_jobs=n_jobs)
            n_inf[:] += np.isinf(Xc).sum(axis=0) if inf == "raise" else 0
            order, starts = sort_groups(cc, last)
            gmeta = groups.iloc[:last].copy()
            mk = meta.loc[keep]
            for c in keep_cols:
                constant, first = group_first_constant(mk[c], order, starts)
                if not constant:
                    non_constant.add(c)
                gmeta[c] = mk[c].iloc[first].to_numpy()
            for t in key_tuples(gmeta):
                if t in seen:
                    raise ValueError(
                        f"{path}: group {dict(zip(by, t))} appears in two separate runs of rows; the file is not "
                        f"sorted/partitioned by {by}. Sort it to stream, or load it and pass an AnnData."
                    )
                seen.add(t)
            results.append(red)
            group_rows.append(gmeta)
            sizes.extend(np.diff(starts).tolist())
        if final:
            return None, None
        return meta.loc[~keep].reset_index(drop=True), X[~keep]

    read_cols = list(dict.fromkeys(by + keep_cols + feat_cols))
    if path.is_file():
        import pyarrow.parquet as pq

        # sequential row-group reads, no read-ahead: memory = one row group + one batch + the open group
        # pre_buffer=False: with pre-buffering pyarrow keeps column chunks and memory grows with the file
        batches = pq.ParquetFile(str(path), pre_buffer=False).iter_batches(
            batch_size=batch_rows, columns=read_cols, use_threads=True
        )
    else:
        batches = dataset.scanner(
            columns=read_cols, batch_size=batch_rows, batch_readahead=1, fragment_readahead=1,
            fragment_scan_options=pds.ParquetFragmentScanOptions(pre_buffer=False),
        ).to_batches()
    for batch in batches:
        if batch.num_rows == 0:
            continue
        n_cells += batch.num_rows
        meta = batch.select(by + [c for c in keep_cols if c not in by_set]).to_pandas()
        Xb = np.empty((batch.num_rows, p), dtype=np.float64)
        for j, c in enumerate(feat_cols):
            col = batch.column(c)
            if pa.types.is_dictionary(col.type):
                col = col.dictionary_decode()
            Xb[:, j] = col.to_numpy(zero_copy_only=False)
        if pend_meta is not None and len(pend_meta):
            meta = pd.concat([pend_meta, meta], ignore_index=True)
            Xb = np.concatenate([pend_X, Xb])
        pend_meta, pend_X = flush(meta, Xb, final=False)
    if pend_meta is not None and len(pend_meta):
        flush(pend_meta, pend_X, final=True)
    if inf == "raise":
        from .._core.groups import _raise_inf

        _raise_inf(n_inf, feat_cols, str(path))
    if not results:
        raise ValueError(f"{path}: no rows to aggregate.")
    Xout = np.concatenate(results)
    gobs = pd.concat(group_rows, ignore_index=True)
    # pycytominer order: groups sorted by key (NaN last)
    sort_codes, _ = group_codes(gobs, by, dropna=False, sort=True)
    perm = np.argsort(sort_codes, kind="stable")
    Xout = Xout[perm]
    gobs = gobs.iloc[perm].reset_index(drop=True)
    size_arr = np.asarray(sizes, dtype=np.int64)[perm]
    dropped_meta = [c for c in meta_cols if c not in keep_cols] + sorted(non_constant)
    if non_constant and not isinstance(keep_metadata, bool):
        raise ValueError(f"keep_metadata: column(s) {sorted(non_constant)} are not constant within every group of {by}.")
    gobs = gobs.drop(columns=sorted(non_constant))
    if count_key is not None:
        if count_key in gobs.columns:
            gobs = gobs.drop(columns=count_key)
        gobs.insert(len(by), count_key, size_arr)
    gobs.index = pd.Index([str(i) for i in range(len(gobs))])
    n_nan = _warn_nan(Xout, feat_cols, what="aggregate")
    var = parse_feature_names(feat_cols)
    var["input_dtype"] = "float64"
    obs_dtypes = {c: str(empty[c].dtype) for c in gobs.columns if c in empty.columns}
    if count_key is not None:
        obs_dtypes[count_key] = "int64"
    result = ad.AnnData(X=Xout, obs=gobs, var=var, uns=_new_uns({}, gobs, feat_cols, obs_dtypes))
    set_level(result, level)
    log_step(
        result, "pp.aggregate",
        {"source": str(path), "by": by, "operation": func, "count_key": count_key, "keep_metadata": keep_metadata, "dropna": dropna,
         "inf": inf, "level": level, "batch_rows": batch_rows},
        n_cells=n_cells, n_groups=len(gobs), n_rows_missing_key=n_missing, dropped_metadata=dropped_meta,
        dropped_id_columns=drop_ids, n_nan_values=n_nan, streamed=True,
    )
    return result
