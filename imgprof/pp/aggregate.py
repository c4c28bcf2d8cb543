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
from .._core.features import METADATA_PREFIXES, check_numeric_features, record_values_changed, split_columns
from .._core.groups import group_codes, group_first_constant, group_reduce, group_sizes, sort_groups
from .._core.progress import progress_bar
from .._core.provenance import UNS_KEY, log_step, set_level
from .._core.validation import (
    as_list,
    check_adata,
    check_bool,
    check_df_keys,
    check_int,
    check_numeric,
    check_obs_keys,
    get_matrix,
    is_dask,
)
from ..io._lazy import anndata_zarr_group

PathLike = str | os.PathLike

DEFAULT_BY = ("Metadata_Plate", "Metadata_Well")
_FUNCS = ("median", "mean")


def _check_func(operation: str) -> str:
    if operation not in _FUNCS:
        raise ValueError(f"operation must be one of {_FUNCS} (pycytominer's operations), got {operation!r}.")
    return operation


def _warn_nan(X: np.ndarray, var_names, *, what: str, stacklevel: int = 4) -> int:
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
            stacklevel=stacklevel,
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


def _source_obs_dtypes(uns) -> dict:
    """The ``.obs`` dtypes recorded by ``from_pandas`` (empty when there are none)."""
    store = uns.get(UNS_KEY, {}) if isinstance(uns, dict) else {}
    return json.loads(store.get("obs_dtypes", "{}") or "{}")


def _assemble(
    out_obs: pd.DataFrame, sizes, Xout: np.ndarray, var: pd.DataFrame, src_uns, src_dtypes: dict, *, by: list[str],
    count_key: str | None, dropped_meta: list[str], level: str, what: str, stacklevel: int,
) -> tuple[ad.AnnData, int]:
    """The AnnData of a grouped result: count column, string index, float ``input_dtype``, uns, level.

    ``dropped_meta`` gains ``count_key`` when a metadata column of that name is
    replaced. Returns the AnnData and the number of NaN values in ``Xout`` (warned about).
    """
    if count_key is not None:
        if count_key in out_obs.columns:
            out_obs = out_obs.drop(columns=count_key)
            dropped_meta.append(count_key)
        out_obs.insert(len(by), count_key, np.asarray(sizes, dtype=np.int64))
    out_obs.index = pd.Index([str(i) for i in range(len(out_obs))])
    n_nan = _warn_nan(Xout, var.index, what=what, stacklevel=stacklevel)
    obs_dtypes = {c: src_dtypes[c] for c in out_obs.columns if c in src_dtypes}
    if count_key is not None:
        obs_dtypes[count_key] = "int64"
    var = var.copy()
    record_values_changed(var, np.float64, replace_all=True)  # medians/means are float: to_pandas must not cast them back to int
    result = ad.AnnData(X=Xout, obs=out_obs, var=var, uns=_new_uns(src_uns, out_obs, var.index, obs_dtypes))
    set_level(result, level)
    return result, n_nan


def _check_count_key(count_key: str | None, columns, overwrite: bool, *, where: str) -> None:
    """Refuse a ``count_key`` that would replace an existing annotation column (unless ``overwrite``)."""
    if count_key is not None and not overwrite and count_key in set(map(str, columns)):
        raise ValueError(
            f"count_key={count_key!r} is already a column of {where}; the counts would replace it. "
            "Pick another count_key, count_key=None, or pass overwrite=True."
        )


def grouped_result(
    adata: ad.AnnData, by: list[str], groups: pd.DataFrame, order: np.ndarray, starts: np.ndarray, Xout: np.ndarray,
    *, count_key: str | None, keep_metadata, level: str, what: str,
) -> tuple[ad.AnnData, list[str], int]:
    """Build the AnnData of a grouped step (aggregate, consensus): obs, count, uns, level.

    Returns the new AnnData, the metadata columns that were dropped (not constant
    within groups) and the number of NaN values in ``Xout`` (warned about).
    """
    out_obs, dropped_meta = _group_metadata(adata.obs, by, groups, order, starts, keep_metadata)
    result, n_nan = _assemble(
        out_obs, np.diff(starts), Xout, adata.var, adata.uns, _source_obs_dtypes(adata.uns), by=by,
        count_key=count_key, dropped_meta=dropped_meta, level=level, what=what, stacklevel=5,
    )
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
    n_jobs: int | None = None,
    spill_dir: PathLike | None = None,
    overwrite: bool = False,
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
    n_jobs
        Threads for the in-memory kernels (default: all CPUs).
    spill_dir
        For a parquet or zarr path whose rows are not grouped by ``by``: folder for
        the temporary bucket files (default: the system's temporary folder; they
        take about the size of the features as float64 and are deleted at the end).
        Giving it makes a parquet source spill to disk too (by default an ungrouped
        parquet file is read by blocks of columns, without temporary files).
    overwrite
        Allow ``count_key`` to name an existing ``.obs`` / metadata column, which
        the count then replaces (default: refuse, naming the column).

    Returns
    -------
    AnnData with one row per group: ``.obs`` = ``by`` columns, ``count_key`` and
    constant metadata; ``.X`` = float64 medians/means; ``.var`` copied; the
    provenance log of the input plus a ``pp.aggregate`` step; level ``"well"``.

    Notes
    -----
    *Out of core.* Pass a path and ``.X`` is never loaded whole. A parquet
    file (or a folder of parquet files) is read one row group at a time and,
    within it, one block of columns per thread, narrow enough that each read
    decodes about 8 MB. A ``.zarr`` AnnData store is opened with only the
    ``.obs`` columns that can be kept (no cell names) and its ``.X`` (or
    ``layer``) is read a few row chunks at a time. When each group's rows are
    consecutive (sorted or partitioned by ``by``, as CellProfiler/CytoTable
    exports per plate and well are), the working memory is a few blocks per
    thread plus the rows of the group still open, whatever the number of
    cells. When the rows of a parquet source are not grouped, it is read a
    block of columns of every row at a time (a buffer of about 256 MB; each
    row is placed by group as it is decoded) and each block is reduced in
    memory: every value is read once and nothing is written to disk. Memory:
    the buffer plus the key columns of all rows. Above about 134 million rows
    (one float64 column over 1 GB), with ``spill_dir=``, and for zarr stores,
    the rows are instead appended by bucket of groups (about 256 MB each) to
    temporary files in ``spill_dir`` and each bucket is then reduced alone:
    memory is one bucket plus the key columns of all rows.
    What grows with the screen is the ``(groups x features)`` result and, for
    parquet, the file footer pyarrow parses (about 1 KB per column and row
    group: prefer large row groups, which cost nothing extra here). A dask
    ``.X`` is re-chunked on group boundaries (sorted first when the rows are
    not grouped) and each chunk reduced in its own task, so memory per task is
    one chunk; this runs on any scheduler, ``dask.distributed`` included.
    Inside ``imgprof._core.progress.show_progress()`` (as in ``imgprof run``) the
    streamed paths show a bar per row group / column pass / bucket; silent otherwise.

    *Cell-level QC.* The ``.obs`` columns written by :func:`imgprof.pp.qc` (known
    from the provenance log; for a parquet file, its ``Metadata_qc_*`` columns)
    are not copied to the groups: each boolean flag becomes
    ``<flag>_cell_fraction`` (the fraction of the group's rows flagged, e.g.
    ``Metadata_qc_pass_cell_fraction``) and numeric QC scores are dropped, the
    same on every path (in memory, dask, parquet, zarr).

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
    check_bool(overwrite, "overwrite")
    check_bool(dropna, "dropna")
    check_int(n_jobs, "n_jobs", min_value=1, allow_none=True)
    if count_key is not None and (not isinstance(count_key, str) or not count_key):
        raise TypeError(f"count_key must be a non-empty string or None, got {count_key!r}.")
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
                level=level, features=features, metadata=metadata, n_jobs=n_jobs, spill_dir=spill_dir,
                overwrite=overwrite,
            )
        if name.endswith(".zarr"):
            if features is not None or metadata is not None:
                raise ValueError("features= and metadata= apply to parquet input only.")
            adata = _open_zarr_store(path, by, keep_metadata, layer)
            _check_count_key(count_key, adata.obs.columns, overwrite, where=str(path))
            zarr_X = adata.zarr_layer if layer is not None else adata.zarr_X
            if zarr_X is not None and count_key not in by:
                return _aggregate_zarr_streamed(
                    path, adata, zarr_X, by, func=func, count_key=count_key, keep_metadata=keep_metadata,
                    dropna=dropna, inf=inf, level=level, n_jobs=n_jobs, spill_dir=spill_dir,
                )
        else:
            raise ValueError(f"{path}: aggregate streams .parquet files and .zarr stores; read other formats with ip.io.read_profiles.")
    elif not isinstance(adata, (ad.AnnData, _ZarrProfiles)):
        raise TypeError(f"adata must be an AnnData or a path, got {type(adata).__name__}.")
    else:
        check_adata(adata)
    if features is not None or metadata is not None:
        raise ValueError("features= and metadata= apply to parquet input only; subset the AnnData instead (adata[:, cols]).")
    if spill_dir is not None:
        raise ValueError("spill_dir= applies to parquet/zarr paths only; an AnnData is aggregated in memory (or by dask).")
    check_obs_keys(adata, by, param="by")
    if count_key is not None and count_key in by:
        raise ValueError(f"count_key={count_key!r} is also a by= key.")
    _check_count_key(count_key, adata.obs.columns, overwrite, where="adata.obs")
    if adata.n_obs == 0:
        raise ValueError("adata has 0 observations; nothing to aggregate.")
    X = get_matrix(adata, layer=layer)  # numeric dtype checked there
    if not is_dask(X):
        X = np.asarray(X)
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
    qc_summary = _summarise_qc_flags(adata, result, codes, n_groups)
    log_step(
        result, "pp.aggregate",
        {"by": by, "operation": func, "layer": layer, "count_key": count_key, "keep_metadata": keep_metadata, "dropna": dropna, "inf": inf, "level": level},
        n_cells=int(adata.n_obs), n_groups=n_groups, n_rows_missing_key=n_dropped, dropped_metadata=dropped_meta,
        n_nan_values=n_nan, dask=is_dask(X), qc_summarised=qc_summary,
    )
    return result


def _qc_columns(adata) -> list[str]:
    """``.obs`` columns written by ``ip.pp.qc`` on this object (from its provenance log)."""
    return _qc_columns_in(adata.uns, adata.obs.columns)


def _qc_columns_in(uns, columns) -> list[str]:
    """The columns among ``columns`` that ``ip.pp.qc`` wrote, per the provenance log in ``uns``."""
    steps = ((uns or {}).get(UNS_KEY, {}) or {}).get("steps", {}) or {}
    present = set(map(str, columns))
    cols: list[str] = []
    for key in sorted(steps):
        step = steps[key]
        if step.get("function") != "pp.qc":
            continue
        extra = json.loads(step.get("extra", "{}") or "{}")
        cols += [c for c in extra.get("columns", []) if c in present and c not in cols]
    return cols


def _summarise_qc_flags(adata, result: ad.AnnData, codes: np.ndarray, n_groups: int) -> dict[str, str]:
    """QC summary of the in-memory (numpy or dask) path: see :func:`_summarise_qc_obs`."""
    return _summarise_qc_obs(adata.obs, _qc_columns(adata), result, codes, n_groups)


def _summarise_qc_rows(rows: pd.DataFrame, cols: list[str], result: ad.AnnData, by: list[str], dropna: bool) -> dict[str, str]:
    """QC summary of the streamed (parquet / zarr) paths.

    ``rows`` holds the ``by`` keys and the QC columns of every row of the source; each
    group is matched to its row of ``result`` by its key values (the streamed result
    orders groups on its own), then :func:`_summarise_qc_obs` does the rest.
    """
    if not cols:
        return {}
    rows = rows.reset_index(drop=True)
    codes, groups = group_codes(rows, by, dropna=dropna, sort=False, param="by")

    def key(t) -> tuple:
        return tuple(None if pd.isna(v) else v for v in t)

    pos = {key(t): i for i, t in enumerate(result.obs.loc[:, by].itertuples(index=False, name=None))}
    try:
        gmap = np.array([pos[key(t)] for t in groups.loc[:, by].itertuples(index=False, name=None)], dtype=np.int64)
    except KeyError as e:  # pragma: no cover - the result holds every group by construction
        raise RuntimeError(f"aggregate: group {e} of the QC columns not found among the aggregated groups.") from e
    codes = np.where(codes >= 0, gmap[np.maximum(codes, 0)], -1)
    return _summarise_qc_obs(rows, cols, result, codes, result.n_obs)


def _summarise_qc_obs(obs: pd.DataFrame, cols: list[str], result: ad.AnnData, codes: np.ndarray, n_groups: int) -> dict[str, str]:
    """Replace the lower-level QC columns of ``ip.pp.qc`` by the fraction of flagged rows per group.

    Shared by every path of :func:`aggregate` (in memory, dask, parquet and zarr streaming).

    A cell-level flag copied to a well (because it happened to be constant in every
    well) would read as a verdict on the well. Boolean QC columns become
    ``<column>_cell_fraction`` (fraction of the group's rows flagged, e.g.
    ``Metadata_qc_pass_cell_fraction``); numeric QC scores (z-scores, fractions)
    are dropped. Returns ``{old: new or "dropped"}``.
    """
    done: dict[str, str] = {}
    if not cols:
        return done
    valid = codes >= 0
    sizes = np.bincount(codes[valid], minlength=n_groups).astype(np.float64)
    store = result.uns.get(UNS_KEY, {})
    for c in cols:
        if c in result.obs.columns:
            result.obs.drop(columns=c, inplace=True)
        s = obs[c]
        if s.dtype == object and s.notna().any() and s.dropna().map(lambda v: isinstance(v, (bool, np.bool_))).all():
            s = s.astype("boolean")  # a flag read back with missing values (e.g. parquet bool with nulls)
        if s.dtype == bool or str(s.dtype) == "boolean":
            flagged = s.fillna(False).to_numpy(dtype=bool)
            counts = np.bincount(codes[valid], weights=flagged[valid].astype(np.float64), minlength=n_groups)
            with np.errstate(invalid="ignore", divide="ignore"):
                result.obs[f"{c}_cell_fraction"] = counts / sizes
            done[c] = f"{c}_cell_fraction"
        else:
            done[c] = "dropped"
    if "columns" in store:
        n_obs_cols = [x for x in store["columns"] if x not in cols and x not in result.var_names]
        store["columns"] = [*n_obs_cols, *[v for v in done.values() if v != "dropped"], *map(str, result.var_names)]
    if "obs_dtypes" in store:
        dtypes = {k: v for k, v in json.loads(store["obs_dtypes"] or "{}").items() if k not in cols}
        dtypes.update({v: "float64" for v in done.values() if v != "dropped"})
        store["obs_dtypes"] = json.dumps(dtypes)
    return done


# ----------------------------------------------------------------------------------------------
# zarr: lazy X
# ----------------------------------------------------------------------------------------------
def read_zarr_lazy(path: PathLike) -> ad.AnnData:
    """Open an AnnData zarr store with ``.obs``/``.var`` in memory and ``.X`` as a dask array.

    Parameters
    ----------
    path
        An AnnData ``.zarr`` store.

    Returns
    -------
    AnnData
        ``.obs``/``.var`` in memory, ``.X`` (and layers) as dask arrays read on demand.

    Examples
    --------
    >>> import imgprof as ip, tempfile, os
    >>> a = ip.datasets.simulate(n_plates=1, n_features=10, seed=0)
    >>> p = os.path.join(tempfile.mkdtemp(), "a.zarr"); a.write_zarr(p)
    >>> type(ip.pp.read_zarr_lazy(p).X).__module__.split(".")[0]
    'dask'
    """
    from ..io._lazy import read_zarr_lazy as _read

    return _read(path)


class _ZarrProfiles:
    """The parts of an AnnData zarr store ``aggregate`` needs: lean ``.obs``, lazy ``.X``.

    ``.obs`` holds only the columns that can end up in the result, with a
    ``RangeIndex`` instead of the (string) cell names, so the memory it takes in
    the calling process is a few bytes per cell and column (categoricals).
    """

    def __init__(self, obs: pd.DataFrame, var: pd.DataFrame, uns: dict, X, layers: dict, zarr_X, zarr_layer):
        self.obs, self.var, self.uns, self.X, self.layers = obs, var, uns, X, layers
        self.zarr_X, self.zarr_layer = zarr_X, zarr_layer  # the dense zarr arrays (None when sparse)
        self.var_names = var.index
        self.n_obs = len(obs)


def _open_zarr_store(path: Path, by: list[str], keep_metadata, layer: str | None) -> _ZarrProfiles:
    import zarr
    from anndata.experimental import read_elem_lazy

    g = anndata_zarr_group(path)
    og = g["obs"]
    columns = [str(c) for c in og.attrs.get("column-order", [])]
    available = pd.DataFrame(columns=columns)
    check_df_keys(available, by, param="by", where=f"{path} (obs)")
    if keep_metadata is True:
        wanted = columns
    elif keep_metadata is False:
        wanted = by
    else:
        check_df_keys(available, as_list(keep_metadata), param="keep_metadata", where=f"{path} (obs)")
        wanted = by + as_list(keep_metadata)
    uns = ad.io.read_elem(g["uns"]) if "uns" in g else {}
    # the QC columns of ip.pp.qc are always read: aggregate summarises them per group
    wanted = [c for c in columns if c in set(wanted) or c in set(_qc_columns_in(uns, columns))]

    def dense(elem):
        return elem if isinstance(elem, zarr.Array) and len(elem.shape) == 2 else None

    zarr_layer = None
    if layer is not None:
        if "layers" not in g or layer not in g["layers"]:
            have = list(g["layers"].keys()) if "layers" in g else []
            raise KeyError(f"layer={layer!r} not found in {path} (layers: {have}).")
        layers = {layer: read_elem_lazy(g["layers"][layer])}
        zarr_layer = dense(g["layers"][layer])
    else:
        layers = {}
    X = read_elem_lazy(g["X"])
    obs = pd.DataFrame({c: ad.io.read_elem(og[c]) for c in wanted}, index=pd.RangeIndex(X.shape[0]))
    var = ad.io.read_elem(g["var"])
    return _ZarrProfiles(obs, var, uns, X, layers, dense(g["X"]), zarr_layer)


# ----------------------------------------------------------------------------------------------
# parquet streaming
# ----------------------------------------------------------------------------------------------
#: Decoded float64 bytes of one (row group x column block) read; pyarrow holds about 3.5x this
#: while decoding, so each reading thread holds a few tens of MB whatever the file size.
_READ_BLOCK_BYTES = 8 << 20
#: Rows of a zarr store read at once: whole chunks, about this many bytes of float64.
_ZARR_UNIT_BYTES = 64 << 20
#: Rows not grouped by ``by`` are spilled to disk in buckets of groups of about this many bytes.
_BUCKET_BYTES = 256 << 20
#: Parquet rows not grouped by ``by`` are read a block of columns at a time (a buffer of about
#: ``_BUCKET_BYTES``) while one column of every row takes at most this many bytes of float64;
#: beyond it (or when ``spill_dir`` is given) they are spilled to disk in buckets.
_COLUMN_PASS_MAX_BYTES = 1 << 30


#: Columns of a parquet source summarised per group as QC flags (``ip.pp.qc``'s default prefix).
_QC_PREFIX = "Metadata_qc_"


class _NotGrouped(ValueError):
    """The rows of a streamed source are not grouped by the ``by`` keys."""


class _Streamed:
    """Accumulates the groups reduced while streaming a source that holds each group in consecutive rows."""

    def __init__(self, by: list[str], keep_cols: list[str], var_names: Sequence[str]):
        self.by, self.keep_cols = by, keep_cols
        self.var_names = list(var_names)
        self.p = len(self.var_names)
        self.results: list[np.ndarray] = []
        self.group_rows: list[pd.DataFrame] = []
        self.sizes: list[int] = []
        self.non_constant: set[str] = set()
        self.seen: set[tuple] = set()
        self.n_cells = 0
        self.n_missing = 0

    def run(self, units, read_meta, read_block, blocks_for, *, func, inf, dropna, jobs, where, release=None) -> None:
        """Stream ``units`` (row ranges) in order.

        ``read_meta(unit)`` gives the unit's ``by`` + kept metadata columns (a DataFrame),
        ``read_block(unit, c0, c1)`` its float64 feature columns ``c0:c1``;
        ``blocks_for(n_rows)`` the column blocks and the threads each block's reduction uses.
        The last group of a unit is held back (it may go on in the next unit).
        ``release()``, when given, runs after each unit (e.g. to hand cached allocator memory back).
        """
        from concurrent.futures import ThreadPoolExecutor

        by, p = self.by, self.p
        pend_meta: pd.DataFrame | None = None
        pend_X = np.empty((0, p))  # rows of the open group
        with ThreadPoolExecutor(jobs) as ex:
            for ui, unit in enumerate(progress_bar(units, desc=f"aggregate {_short(where)}", unit="row groups")):
                final = ui == len(units) - 1
                meta = read_meta(unit)
                self.n_cells += len(meta)
                ok = None
                if dropna:
                    ok = meta.loc[:, by].notna().all(axis=1).to_numpy()
                    self.n_missing += int((~ok).sum())
                    meta = meta.loc[ok]
                    ok = None if ok.all() else ok
                n_pend = 0 if pend_meta is None else len(pend_meta)
                if n_pend:
                    meta = pd.concat([pend_meta, meta], ignore_index=True)
                else:
                    meta = meta.reset_index(drop=True)
                if len(meta) == 0:
                    continue
                codes, groups = group_codes(meta, by, dropna=False, sort=False, param="by", where=where)
                if (np.diff(codes) < 0).any():
                    raise _NotGrouped(
                        f"{where}: the rows are not grouped by {by} (a group reappears after another started). "
                        "Sort or partition the data by these keys (e.g. with duckdb or pandas per plate) to stream "
                        "them, or load them and pass an AnnData."
                    )
                n_groups = len(groups)
                last = n_groups if final else n_groups - 1
                k = int(np.searchsorted(codes, last))  # rows [0, k) belong to complete groups
                blocks, reduce_jobs = blocks_for(n_pend + len(meta))

                def block_task(bl, unit=unit, ok=ok, n_pend=n_pend, k=k, last=last, codes=codes, pend_X=pend_X):
                    c0, c1 = bl
                    Xn = read_block(unit, c0, c1)
                    if ok is not None:
                        Xn = Xn[ok]
                    if n_pend:
                        Xn = np.concatenate([pend_X[:, c0:c1], Xn])
                    red = None
                    if last > 0:
                        red = group_reduce(
                            Xn[:k], codes[:k], last, func, inf=inf, var_names=self.var_names[c0:c1], what=where,
                            n_jobs=reduce_jobs,
                        )
                    return red, Xn[k:].copy()

                outs = list(ex.map(block_task, blocks)) if len(blocks) > 1 else [block_task(blocks[0])]
                if last > 0:
                    red = np.empty((last, p))
                    for (c0, c1), (r, _) in zip(blocks, outs):
                        red[:, c0:c1] = r
                    self._add_groups(meta.iloc[:k], codes[:k], groups.iloc[:last], red, where)
                pend_meta = meta.iloc[k:].reset_index(drop=True)
                pend_X = np.concatenate([tail for _, tail in outs], axis=1) if len(pend_meta) else np.empty((0, p))
                del outs
                if release is not None:
                    release()

    def run_partitioned(
        self, units, unit_rows: list[int], meta: pd.DataFrame, read_block, blocks_for, *, func, inf, dropna, jobs, where,
        spill_dir=None,
    ) -> int:
        """Aggregate rows that are *not* grouped, in bounded memory: spill them to disk by bucket.

        ``meta`` holds the key (and kept metadata) columns of every row, in file order. Groups
        are cut into buckets of consecutive groups of about ``_BUCKET_BYTES`` of float64;
        one pass over ``units`` appends each bucket's rows, column block by column block, to
        its own file in ``spill_dir`` (default: the system's temporary folder); then each
        bucket is loaded alone and reduced. Memory: the key columns and codes of all rows,
        one bucket, and the blocks in flight. Returns the number of buckets.
        """
        import shutil
        import tempfile
        from concurrent.futures import ThreadPoolExecutor

        p = self.p
        codes, groups = group_codes(meta, self.by, dropna=dropna, param="by", where=where)
        n_groups = len(groups)
        self.n_cells = len(meta)
        self.n_missing = int((codes < 0).sum())
        if n_groups == 0:
            return 0
        sizes = group_sizes(codes, n_groups)
        # buckets of consecutive groups, each about _BUCKET_BYTES (a larger group is a bucket alone)
        cap = max(1, _BUCKET_BYTES // (8 * max(p, 1)))
        bucket_of_group = np.empty(n_groups, dtype=np.int64)
        b, filled = 0, 0
        for g, sz in enumerate(sizes):
            if filled and filled + sz > cap:
                b, filled = b + 1, 0
            bucket_of_group[g] = b
            filled += int(sz)
        n_buckets = b + 1
        bucket_of_row = np.where(codes >= 0, bucket_of_group[np.maximum(codes, 0)], -1)
        starts_rows = np.concatenate([[0], np.cumsum(unit_rows)])
        counts = np.zeros((len(units), n_buckets), dtype=np.int64)
        unit_blocks: list[list[tuple[int, int]]] = []
        folder = tempfile.mkdtemp(prefix="imgprof_aggregate_", dir=None if spill_dir is None else str(spill_dir))
        try:
            paths = [os.path.join(folder, f"bucket{i}.bin") for i in range(n_buckets)]
            keep_open = n_buckets <= 256
            handles = [open(q, "wb") for q in paths] if keep_open else None  # noqa: SIM115
            try:
                with ThreadPoolExecutor(jobs) as ex:
                    for ui, unit in enumerate(progress_bar(units, desc=f"aggregate {_short(where)} (to buckets)", unit="row groups")):
                        bu = bucket_of_row[starts_rows[ui] : starts_rows[ui + 1]]
                        order = np.argsort(bu, kind="stable")
                        cnt = np.bincount(bu[bu >= 0], minlength=n_buckets)
                        counts[ui] = cnt
                        edges = np.concatenate([[0], np.cumsum(cnt)]) + int((bu < 0).sum())  # -1 rows sort first
                        blocks, _ = blocks_for(int(unit_rows[ui]))
                        unit_blocks.append(blocks)
                        # at most `jobs` blocks in flight, written in order
                        def read_sorted(c0, c1, unit=unit, order=order):
                            return read_block(unit, c0, c1)[order]  # rows by bucket (a copy, C-ordered)

                        for w0 in range(0, len(blocks), jobs):
                            futures = [ex.submit(read_sorted, c0, c1) for c0, c1 in blocks[w0 : w0 + jobs]]
                            for fut in futures:
                                Xs = fut.result()
                                for bi in np.flatnonzero(cnt):
                                    piece = Xs[edges[bi] : edges[bi + 1]]
                                    if keep_open:
                                        handles[bi].write(piece.tobytes())
                                    else:
                                        with open(paths[bi], "ab") as fh:
                                            fh.write(piece.tobytes())
                                del Xs
            finally:
                if handles is not None:
                    for fh in handles:
                        fh.close()
            Xout = np.empty((n_groups, p))
            g_first = np.searchsorted(bucket_of_group, np.arange(n_buckets))
            g_end = np.append(g_first[1:], n_groups)
            by_bucket = np.argsort(bucket_of_row, kind="stable")  # each bucket's rows in file order, as written
            r_first = np.searchsorted(bucket_of_row[by_bucket], np.arange(n_buckets))
            r_end = np.append(r_first[1:], by_bucket.size)
            for bi in progress_bar(range(n_buckets), desc=f"aggregate {_short(where)} (buckets)", unit="buckets"):
                rows = by_bucket[r_first[bi] : r_end[bi]]
                Mb = np.empty((rows.size, p))
                with open(paths[bi], "rb") as fh:
                    off = 0
                    for ui in range(len(units)):
                        nr = int(counts[ui, bi])
                        if nr == 0:
                            continue
                        for c0, c1 in unit_blocks[ui]:
                            Mb[off : off + nr, c0:c1] = np.fromfile(fh, dtype=np.float64, count=nr * (c1 - c0)).reshape(nr, c1 - c0)
                        off += nr
                os.remove(paths[bi])
                g0, g1 = int(g_first[bi]), int(g_end[bi])
                Xout[g0:g1] = group_reduce(
                    Mb, codes[rows] - g0, g1 - g0, func, inf=inf, var_names=self.var_names, what=where, n_jobs=jobs,
                )
                del Mb
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self._finish_unsorted(meta, codes, groups, sizes, Xout)
        return n_buckets

    def run_columns(
        self, units, unit_rows: list[int], meta: pd.DataFrame, read_into, *, width: int, func, inf, dropna, jobs, where,
    ) -> int:
        """Aggregate rows that are *not* grouped by reading ``width`` feature columns of every row at a time.

        For a columnar source (parquet) this reads each value once, with no temporary files:
        for each block of columns, every unit's rows are decoded into a ``(rows, width)``
        column-major buffer in file order, each column is then gathered into group order in
        place (one column of scratch), and the block is reduced in memory. Memory: the buffer,
        the key columns and codes of all rows, and the blocks in flight.
        ``read_into(unit, c0, c1, r0, buf)`` writes the unit's columns ``c0:c1`` into
        ``buf[r0 : r0 + rows, :]``. Returns the number of column passes.
        """
        from concurrent.futures import ThreadPoolExecutor

        p = self.p
        codes, groups = group_codes(meta, self.by, dropna=dropna, param="by", where=where)
        n_groups = len(groups)
        self.n_cells = len(meta)
        self.n_missing = int((codes < 0).sum())
        if n_groups == 0:
            return 0
        sizes = group_sizes(codes, n_groups)
        order, _ = sort_groups(codes, n_groups)  # file rows in group order (rows without a key left out)
        n, m = codes.size, order.size
        sorted_codes = np.repeat(np.arange(n_groups, dtype=np.int64), sizes)
        starts_rows = np.concatenate([[0], np.cumsum(unit_rows)]).astype(np.int64)
        width = max(1, min(int(width), p))
        store = np.empty(n * width, dtype=np.float64)
        Xout = np.empty((n_groups, p))
        passes = 0
        with ThreadPoolExecutor(jobs) as ex:
            for c0 in progress_bar(range(0, p, width), desc=f"aggregate {_short(where)} (column passes)", unit="passes"):
                c1 = min(c0 + width, p)
                w = c1 - c0
                # file order, column-major: column j of the block is store[j*n:(j+1)*n]
                filed = store[: n * w].reshape((n, w), order="F")

                def task(ui, c0=c0, c1=c1, filed=filed):
                    read_into(units[ui], c0, c1, int(starts_rows[ui]), filed)

                list(ex.map(task, range(len(units))))
                # group order, column-major, over the same memory (column j at store[j*m:(j+1)*m]);
                # column j overwrites only file-order columns <= j, already gathered
                # (`jobs` columns gathered at once, then written back in column order)
                scratch = [np.empty(m, dtype=np.float64) for _ in range(min(jobs, w))]
                for j0 in range(0, w, len(scratch)):
                    cols = range(j0, min(j0 + len(scratch), w))

                    def gather(j, j0=j0, scratch=scratch, store=store):
                        np.take(store[j * n : (j + 1) * n], order, out=scratch[j - j0])

                    list(ex.map(gather, cols))
                    for j in cols:
                        store[j * m : (j + 1) * m] = scratch[j - j0]
                del scratch
                grouped = store[: m * w].reshape((m, w), order="F")
                Xout[:, c0:c1] = group_reduce(
                    grouped, sorted_codes, n_groups, func, inf=inf, var_names=self.var_names[c0:c1], what=where,
                    n_jobs=jobs,
                )
                passes += 1
        del store
        self._finish_unsorted(meta, codes, groups, sizes, Xout)
        return passes

    def _finish_unsorted(self, meta: pd.DataFrame, codes: np.ndarray, groups: pd.DataFrame, sizes, Xout) -> None:
        """Group metadata and results of a pass over rows not grouped by ``by``."""
        n_groups = len(groups)
        order, starts = sort_groups(codes, n_groups)
        gmeta = groups.copy()
        for c in gmeta.columns:  # keys read as dictionaries: back to plain values, sorted like the streamed path
            if isinstance(gmeta[c].dtype, pd.CategoricalDtype):
                gmeta[c] = np.asarray(gmeta[c].astype(object))
        for c in self.keep_cols:
            constant, first = group_first_constant(meta[c], order, starts)
            if not constant:
                self.non_constant.add(c)
            gmeta[c] = meta[c].iloc[np.maximum(first, 0)].to_numpy()
        self.results = [Xout]
        self.group_rows = [gmeta]
        self.sizes = sizes.tolist()

    def _add_groups(self, mk: pd.DataFrame, codes: np.ndarray, groups: pd.DataFrame, red: np.ndarray, where: str) -> None:
        order, starts = sort_groups(codes, len(groups))
        gmeta = groups.copy()
        for c in self.keep_cols:
            constant, first = group_first_constant(mk[c], order, starts)
            if not constant:
                self.non_constant.add(c)
            gmeta[c] = mk[c].iloc[first].to_numpy()
        for row in gmeta.loc[:, self.by].itertuples(index=False, name=None):
            t = tuple(None if pd.isna(v) else v for v in row)
            if t in self.seen:
                raise _NotGrouped(
                    f"{where}: group {dict(zip(self.by, t))} appears in two separate runs of rows; the data are not "
                    f"sorted/partitioned by {self.by}. Sort them to stream, or load them and pass an AnnData."
                )
            self.seen.add(t)
        self.results.append(red)
        self.group_rows.append(gmeta)
        self.sizes.extend(np.diff(starts).tolist())

    def result(
        self, *, source: str, var: pd.DataFrame, uns: dict, obs_dtypes: dict, meta_cols: list[str], keep_metadata,
        count_key, func, dropna, inf, level, extra: dict, qc=None,
    ) -> ad.AnnData:
        """The aggregated AnnData: groups in pycytominer's (sorted key) order.

        ``qc()``, when given, returns ``(rows, columns)``: the ``by`` keys and QC columns of
        every source row, summarised per group as on the in-memory path.
        """
        by = self.by
        if not self.results:
            raise ValueError(f"{source}: no rows to aggregate.")
        gobs = pd.concat(self.group_rows, ignore_index=True)
        sort_codes, _ = group_codes(gobs, by, dropna=False, sort=True)
        perm = np.argsort(sort_codes, kind="stable")
        # place each piece at its sorted rows and let it go: peak = the result plus one piece
        dest = np.empty_like(perm)
        dest[perm] = np.arange(perm.size)
        Xout = np.empty((perm.size, self.p))
        pos = 0
        while self.results:
            piece = self.results.pop(0)
            Xout[dest[pos : pos + piece.shape[0]]] = piece
            pos += piece.shape[0]
            del piece
        gobs = gobs.iloc[perm].reset_index(drop=True)
        size_arr = np.asarray(self.sizes, dtype=np.int64)[perm]
        non_constant = sorted(self.non_constant)
        if non_constant and not isinstance(keep_metadata, bool):
            raise ValueError(f"keep_metadata: column(s) {non_constant} are not constant within every group of {by}.")
        dropped_meta = [c for c in meta_cols if c not in self.keep_cols and c not in by] + non_constant
        result, n_nan = _assemble(
            gobs.drop(columns=non_constant), size_arr, Xout, var, uns, obs_dtypes, by=by, count_key=count_key,
            dropped_meta=dropped_meta, level=level, what="aggregate", stacklevel=6,
        )
        qc_summary = _summarise_qc_rows(*qc(), result, by, dropna) if qc is not None else {}
        log_step(
            result, "pp.aggregate",
            {"source": source, "by": by, "operation": func, "count_key": count_key, "keep_metadata": keep_metadata,
             "dropna": dropna, "inf": inf, "level": level},
            n_cells=self.n_cells, n_groups=result.n_obs, n_rows_missing_key=self.n_missing, dropped_metadata=dropped_meta,
            n_nan_values=n_nan, streamed=True, qc_summarised=qc_summary, **extra,
        )
        return result


def _short(where: str) -> str:
    """The file name of a source path, for progress labels."""
    return Path(where).name or where


def _kept_columns(meta_cols: list[str], keep_metadata, by: list[str]) -> list[str]:
    """Metadata columns a streamed aggregation carries (``keep_metadata``; ``by`` is always kept)."""
    if keep_metadata is False:
        return []
    if keep_metadata is True:
        return [c for c in meta_cols if c not in by]
    return [c for c in as_list(keep_metadata) if c not in by]


def _parquet_files(path: Path) -> list[str]:
    if path.is_file():
        return [str(path)]
    import pyarrow.dataset as pds

    return sorted(pds.dataset(str(path), format="parquet").files)


def _arrow_column(table, c: str) -> np.ndarray:
    """One column of an arrow table as a numpy float array (nulls -> NaN)."""
    import pyarrow as pa

    col = table.column(c)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if not pa.types.is_floating(col.type):  # integers, booleans (nulls -> NaN)
        col = col.cast(pa.float64())
    return col.to_numpy()


def _arrow_to_matrix(table, cols: list[str], out: np.ndarray) -> None:
    """Copy the named columns of an arrow table into the float64 matrix ``out`` (nulls -> NaN)."""
    for j, c in enumerate(cols):
        out[:, j] = _arrow_column(table, c)


def _resolve_threads(n_jobs: int | None) -> int:
    return n_jobs if n_jobs is not None and n_jobs > 0 else (os.cpu_count() or 1)


def _aggregate_parquet(
    path: Path, by: list[str], *, func, count_key, keep_metadata, dropna, inf, level, features, metadata, n_jobs,
    spill_dir=None, overwrite: bool = False,
) -> ad.AnnData:
    import threading

    import pyarrow.parquet as pq

    files = _parquet_files(path)
    if not files:
        raise ValueError(f"{path}: no parquet file to aggregate.")
    empty = pq.read_schema(files[0]).empty_table().to_pandas()
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
    _check_count_key(count_key, meta_cols, overwrite, where=str(path))
    if not isinstance(keep_metadata, bool):
        check_df_keys(empty, as_list(keep_metadata), param="keep_metadata", where=str(path))
    keep_cols = _kept_columns(meta_cols, keep_metadata, by)
    p = len(feat_cols)
    if p == 0:
        raise ValueError(f"{path}: no feature column to aggregate.")
    meta_read = list(dict.fromkeys(by + keep_cols))
    jobs = _resolve_threads(n_jobs)

    units: list[tuple[str, int]] = []
    unit_rows: list[int] = []
    for f in files:
        md = pq.read_metadata(f)
        names = set(md.schema.to_arrow_schema().names)
        missing = [c for c in meta_read + feat_cols if c not in names]
        if missing:
            raise KeyError(f"{f}: column(s) {missing[:5]} missing (present in {files[0]}); every file must have the same columns.")
        for rg in range(md.num_row_groups):
            if md.row_group(rg).num_rows > 0:
                units.append((f, rg))
                unit_rows.append(md.row_group(rg).num_rows)
        del md

    # One ParquetFile per thread (readers are not shared across threads), all sharing the
    # current file's footer: parsed, it takes ~1 KB per column and row group, so one copy per
    # thread would grow with the file. No pre-buffering, which keeps column chunks alive.
    local = threading.local()
    lock = threading.Lock()
    footer: dict = {}

    def reader(f: str):
        if getattr(local, "name", None) != f:
            with lock:
                if f not in footer:
                    footer.clear()
                    footer[f] = pq.read_metadata(f)
                md = footer[f]
            local.pf = pq.ParquetFile(f, pre_buffer=False, metadata=md)
            local.name = f
        return local.pf

    def read_meta(unit):
        return reader(unit[0]).read_row_group(unit[1], columns=meta_read).to_pandas()

    def read_block(unit, c0, c1):
        cols = feat_cols[c0:c1]
        table = reader(unit[0]).read_row_group(unit[1], columns=cols)
        out = np.empty((table.num_rows, c1 - c0))
        _arrow_to_matrix(table, cols, out)
        return out

    def blocks_for(rows):
        # narrow blocks: each read decodes about _READ_BLOCK_BYTES; at least two blocks per thread
        width = max(1, _READ_BLOCK_BYTES // max(8 * rows, 1))
        width = min(width, max(1, -(-p // (2 * jobs))))
        return [(c, min(c + width, p)) for c in range(0, p, width)], 1

    def read_into(unit, c0, c1, r0, buf):
        table = reader(unit[0]).read_row_group(unit[1], columns=feat_cols[c0:c1])
        r1 = r0 + table.num_rows
        for j, c in enumerate(feat_cols[c0:c1]):
            buf[r0:r1, j] = _arrow_column(table, c)

    import pyarrow as pa

    extra = {"dropped_id_columns": drop_ids, "n_files": len(files), "n_row_groups": len(units)}
    acc = _Streamed(by, keep_cols, feat_cols)
    try:
        # pyarrow's allocator keeps freed decode buffers per thread; hand them back after each row group
        acc.run(units, read_meta, read_block, blocks_for, func=func, inf=inf, dropna=dropna, jobs=jobs, where=str(path),
                release=pa.default_memory_pool().release_unused)
    except _NotGrouped:
        # rows not grouped by `by`: bucket them on disk (keys of all rows in memory, features not)
        acc = _Streamed(by, keep_cols, feat_cols)
        meta = _read_parquet_columns(files, meta_read)
        n_rows = len(meta)
        if spill_dir is None and 8 * n_rows <= _COLUMN_PASS_MAX_BYTES:
            # parquet is columnar: read a block of columns of every row at a time (each value read once)
            width = max(1, _BUCKET_BYTES // max(8 * n_rows, 1))
            extra["column_passes"] = acc.run_columns(
                units, unit_rows, meta, read_into, width=width, func=func, inf=inf, dropna=dropna, jobs=jobs,
                where=str(path),
            )
        else:
            extra["partitioned_buckets"] = acc.run_partitioned(
                units, unit_rows, meta, read_block, blocks_for, func=func, inf=inf, dropna=dropna, jobs=jobs,
                where=str(path), spill_dir=spill_dir,
            )
    # QC columns of ip.pp.qc (a parquet file has no provenance: its Metadata_qc_* columns)
    qc_cols = [c for c in meta_cols if c.startswith(_QC_PREFIX)]
    return acc.result(
        source=str(path), var=parse_feature_names(feat_cols).assign(input_dtype="float64"), uns={},
        obs_dtypes={c: str(empty[c].dtype) for c in empty.columns},
        meta_cols=meta_cols, keep_metadata=keep_metadata, count_key=count_key, func=func, dropna=dropna, inf=inf,
        level=level, extra=extra, qc=lambda: (_read_parquet_columns(files, list(dict.fromkeys(by + qc_cols))), qc_cols),
    )


def _read_parquet_columns(files: list[str], cols: list[str]) -> pd.DataFrame:
    """Some columns of every row of the files, strings dictionary-encoded (pandas categoricals)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for f in files:
        schema = pq.read_schema(f)
        text = [c for c in cols if pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(schema.field(c).type)]
        tables.append(pq.read_table(f, columns=cols, read_dictionary=text))
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return table.to_pandas()


def _aggregate_zarr_streamed(
    path: Path, store: _ZarrProfiles, zarr_X, by: list[str], *, func, count_key, keep_metadata, dropna, inf, level, n_jobs,
    spill_dir=None,
) -> ad.AnnData:
    """Stream a dense zarr ``X``: a few row chunks at a time when its rows are grouped by ``by``,
    else bucketed on disk first."""
    obs = store.obs
    n, p = zarr_X.shape
    chunk_rows = int(zarr_X.chunks[0]) or n
    per_unit = chunk_rows * max(1, _ZARR_UNIT_BYTES // max(chunk_rows * p * 8, 1))
    units = [(a, min(a + per_unit, n)) for a in range(0, n, per_unit)]
    col_chunk = int(zarr_X.chunks[1]) or p
    jobs = _resolve_threads(n_jobs)
    col_blocks = [(c, min(c + col_chunk, p)) for c in range(0, p, col_chunk)]
    meta_cols = [c for c in obs.columns if c not in set(by)]
    keep_cols = _kept_columns(meta_cols, keep_metadata, by)
    meta_read = list(dict.fromkeys(by + keep_cols))

    def read_meta(unit):
        return obs.iloc[unit[0] : unit[1]].loc[:, meta_read]

    def read_block(unit, c0, c1):
        X = np.asarray(zarr_X[unit[0] : unit[1], c0:c1])
        check_numeric(X, param=f"{path}: X")
        return X.astype(np.float64, copy=False)

    def blocks_for(rows):
        # blocks follow the store's column chunks (a read decompresses whole chunks)
        return col_blocks, max(1, jobs // len(col_blocks))

    extra = {"n_chunks_read": len(units)}
    acc = _Streamed(by, keep_cols, store.var_names)
    try:
        acc.run(units, read_meta, read_block, blocks_for, func=func, inf=inf, dropna=dropna, jobs=jobs, where=str(path))
    except _NotGrouped:
        # rows not grouped by `by`: bucket them on disk
        acc = _Streamed(by, keep_cols, store.var_names)
        extra["partitioned_buckets"] = acc.run_partitioned(
            units, [b - a for a, b in units], obs.loc[:, meta_read], read_block, blocks_for, func=func, inf=inf,
            dropna=dropna, jobs=jobs, where=str(path), spill_dir=spill_dir,
        )
    qc_cols = _qc_columns_in(store.uns, obs.columns)
    return acc.result(
        source=str(path), var=store.var, uns=store.uns, obs_dtypes=_source_obs_dtypes(store.uns), meta_cols=meta_cols,
        keep_metadata=keep_metadata, count_key=count_key, func=func, dropna=dropna, inf=inf, level=level,
        extra=extra, qc=lambda: (obs.loc[:, list(dict.fromkeys(by + qc_cols))], qc_cols),
    )
