"""Single cells → wells (or any ``by=`` keys): ``ip.pp.aggregate``.

Matches ``pycytominer.aggregate`` (groupby median/mean, ``dropna=False``, groups
in sorted key order) while reducing sorted segments with compiled kernels, column
block by column block, without building a pandas frame. Works on numpy ``.X``,
dask ``.X`` (any scheduler, including ``dask.distributed``), and streams parquet
files or zarr stores too large for memory: the file side is
:mod:`imgprof.io._stream` (a :class:`~imgprof.io._stream.ProfileSource`), the
streamed reduction :mod:`imgprof.pp._aggregate_stream`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np

from .._core.groups import group_codes, group_reduce, sort_groups
from .._core.provenance import log_step
from .._core.validation import as_list, check_adata, check_bool, check_int, check_obs_keys, get_matrix, is_dask
from ..io._stream import ZarrSource, open_source
from ._aggregate_stream import stream_aggregate
from ._grouped import check_count_key, grouped_result, summarise_qc_flags

__all__ = ["DEFAULT_BY", "aggregate", "grouped_result"]

PathLike = str | os.PathLike

DEFAULT_BY = ("Metadata_Plate", "Metadata_Well")
_FUNCS = ("median", "mean")


def _check_func(operation: str) -> str:
    if operation not in _FUNCS:
        raise ValueError(f"operation must be one of {_FUNCS} (pycytominer's operations), got {operation!r}.")
    return operation


def _check_args(operation, by, *, count_key, inf, dropna, overwrite, n_jobs) -> tuple[str, list[str]]:
    """Check the arguments every path shares; return the operation and ``by`` as a list."""
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
    return func, by


def aggregate(
    adata: ad.AnnData | PathLike,
    by: str | Sequence[str] = DEFAULT_BY,
    *,
    operation: str = "median",
    inf: str = "raise",
    features: Sequence[str] | None = None,
    metadata: Sequence[str] | None = None,
    n_jobs: int | None = None,
    spill_dir: PathLike | None = None,
    layer: str | None = None, count_key: str | None = "Metadata_Object_Count", keep_metadata: bool | Sequence[str] = True,
    dropna: bool = False, level: str = "well", overwrite: bool = False,
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
    inf
        ``"raise"`` (default) on ±inf in the features; ``"propagate"`` to use
        them as values.
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
    level
        Level recorded on the result (its provenance record's ``level``).
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
    func, by = _check_args(operation, by, count_key=count_key, inf=inf, dropna=dropna, overwrite=overwrite, n_jobs=n_jobs)
    params = {"by": by, "operation": func, "count_key": count_key, "keep_metadata": keep_metadata, "dropna": dropna,
              "inf": inf, "level": level}
    if isinstance(adata, (str, os.PathLike)):
        src = open_source(
            Path(adata), by, keep_metadata=keep_metadata, layer=layer, features=features, metadata=metadata, n_jobs=n_jobs,
        )
        check_count_key(count_key, src.annotation_columns, overwrite, where=src.where)
        if not isinstance(src, ZarrSource) or (src.zarr_X is not None and count_key not in by):
            src.check()
            return stream_aggregate(src, by, params=params, keep_metadata=keep_metadata, count_key=count_key,
                                    spill_dir=spill_dir)
        adata = src  # a sparse zarr X (or count_key among by): the dask path below
    elif not isinstance(adata, ad.AnnData):
        raise TypeError(f"adata must be an AnnData or a path, got {type(adata).__name__}.")
    else:
        check_adata(adata)
    if features is not None or metadata is not None:
        raise ValueError("features= and metadata= apply to parquet input only; subset the AnnData instead (adata[:, cols]).")
    if spill_dir is not None:
        raise ValueError("spill_dir= applies to parquet/zarr paths only; an AnnData is aggregated in memory (or by dask).")
    return _aggregate_in_memory(adata, by, params, layer=layer, n_jobs=n_jobs, overwrite=overwrite)


def _aggregate_in_memory(
    adata, by: list[str], params: dict, *, layer: str | None, n_jobs: int | None, overwrite: bool,
) -> ad.AnnData:
    """Aggregate an AnnData (numpy or dask ``.X``; or a zarr store's lazy stand-in) in memory or by dask."""
    check_obs_keys(adata, by, param="by")
    count_key = params["count_key"]
    if count_key is not None and count_key in by:
        raise ValueError(f"count_key={count_key!r} is also a by= key.")
    check_count_key(count_key, adata.obs.columns, overwrite, where="adata.obs")
    if adata.n_obs == 0:
        raise ValueError("adata has 0 observations; nothing to aggregate.")
    X = get_matrix(adata, layer=layer)  # numeric dtype checked there
    if not is_dask(X):
        X = np.asarray(X)
    codes, groups = group_codes(adata.obs, by, dropna=params["dropna"], param="by")
    n_groups = len(groups)
    if n_groups == 0:
        raise ValueError(f"by={by}: every row has a missing key; nothing to aggregate (dropna=True).")
    order, starts = sort_groups(codes, n_groups)
    what = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    Xout = group_reduce(X, codes, n_groups, params["operation"], inf=params["inf"], var_names=adata.var_names, what=what,
                        n_jobs=n_jobs)
    result, dropped_meta, n_nan = grouped_result(
        adata, by, groups, order, starts, Xout, count_key=count_key, keep_metadata=params["keep_metadata"],
        level=params["level"], what="aggregate",
    )
    qc_summary = summarise_qc_flags(adata, result, codes, n_groups)
    log_step(
        result, "pp.aggregate", {**params, "layer": layer},
        n_cells=int(adata.n_obs), n_groups=n_groups, n_rows_missing_key=int((codes < 0).sum()),
        dropped_metadata=dropped_meta, n_nan_values=n_nan, dask=is_dask(X), qc_summarised=qc_summary,
    )
    return result
