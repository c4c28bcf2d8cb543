"""Lazy profiles: ``.X`` as a dask array over parquet files or a zarr store, ``.obs`` in memory.

The dask tasks read the files themselves (one task per row-group run of a parquet
file, one per zarr chunk), so on a ``dask.distributed`` cluster the workers read the
data and the client only holds the metadata and the task graph.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._core.features import (
    METADATA_PREFIXES,
    check_numeric_features,
    check_unique_columns,
    split_columns,
)
from .._core.provenance import record
from ._formats import is_parquet_source, parquet_files

__all__ = ["CHUNK_BYTES", "anndata_zarr_group", "is_parquet_source", "parquet_files", "read_lazy", "read_zarr_lazy"]

#: Target decoded bytes of one dask chunk of a lazy parquet ``.X`` (consecutive row groups of one file merged).
CHUNK_BYTES = 64 << 20


def read_parquet_block(file: str, row_groups: Sequence[int], columns: Sequence[str], dtype: str) -> np.ndarray:
    """Feature columns of some row groups of one parquet file as a C-ordered matrix (nulls -> NaN).

    Module-level (picklable) so that ``dask.distributed`` process workers can run it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.ParquetFile(file, pre_buffer=False).read_row_groups(list(row_groups), columns=list(columns))
    out = np.empty((table.num_rows, len(columns)), dtype=dtype)
    for j, c in enumerate(columns):
        col = table.column(c)
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if col.null_count or not pa.types.is_floating(col.type):
            col = col.cast(pa.float64())
        out[:, j] = col.to_numpy(zero_copy_only=False)
    del table
    pa.default_memory_pool().release_unused()
    return out


def _row_group_runs(md, rows_per_chunk: int) -> list[tuple[list[int], int]]:
    """Consecutive row groups of one file merged into runs of about ``rows_per_chunk`` rows."""
    runs: list[tuple[list[int], int]] = []
    cur: list[int] = []
    n = 0
    for rg in range(md.num_row_groups):
        k = md.row_group(rg).num_rows
        if k == 0:
            continue
        if cur and n + k > rows_per_chunk:
            runs.append((cur, n))
            cur, n = [], 0
        cur.append(rg)
        n += k
    if cur:
        runs.append((cur, n))
    return runs


def _lazy_obs(tables: list, text: list[str]) -> pd.DataFrame:
    """The metadata tables of the files as one frame, strings as categoricals in sorted order."""
    import pyarrow as pa

    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    obs = table.unify_dictionaries().to_pandas()
    del table
    for c in text:  # categories in sorted order: groupby (aggregate, consensus...) then sorts as for strings
        cats = obs[c].cat.categories
        if not cats.is_monotonic_increasing:
            obs[c] = obs[c].cat.reorder_categories(cats.sort_values())
    return obs


def read_parquet_lazy(
    path: Path,
    *,
    chunk_bytes: int | None,
    metadata: Sequence[str] | None, features: Sequence[str] | None,
    metadata_prefix: str | Sequence[str], level: str | None, require_metadata: bool,
) -> ad.AnnData:
    """AnnData over parquet file(s): ``.obs`` read now, ``.X`` a dask array read by the tasks."""
    import dask
    import dask.array as da
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ._write import PARQUET_KEY
    from .profiles import from_parts

    files = parquet_files(path)
    if not files:
        raise ValueError(f"{path}: no parquet file found.")
    schema = pq.read_schema(files[0])
    check_unique_columns(schema.names, source=files[0])
    empty = schema.empty_table().to_pandas()
    hint = (schema.metadata or {}).get(PARQUET_KEY)
    if hint and metadata is None and features is None:
        hint = json.loads(hint)
        metadata = [c for c in hint.get("metadata", []) if c in empty.columns]
        level = level or hint.get("level")
    meta, feats = split_columns(
        empty, metadata=metadata, features=features, metadata_prefix=metadata_prefix, source=str(path),
        require_metadata=require_metadata,
    )
    check_numeric_features(empty, feats, source=str(path))
    f_dtypes = {str(empty[c].dtype) for c in feats}
    dtype = "float32" if f_dtypes == {"float32"} else "float64"  # as from_pandas / feature_matrix
    itemsize = np.dtype(dtype).itemsize
    rows_per_chunk = max(1, (chunk_bytes or CHUNK_BYTES) // max(itemsize * len(feats), 1))
    blocks = []
    obs_parts = []
    read = dask.delayed(read_parquet_block, pure=True)
    for f in files:
        md = pq.read_metadata(f)
        names = md.schema.to_arrow_schema().names
        if names != schema.names:
            missing = [c for c in schema.names if c not in names]
            raise ValueError(
                f"{f}: its columns differ from {files[0]} (missing {missing[:5]}, or another order); "
                "every file of a lazy profile folder must have the same columns."
            )
        text = [c for c in meta if pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(schema.field(c).type)]
        # strings as dictionaries: in the client a cell costs a few bytes per metadata column, not a Python string
        obs_parts.append(pq.read_table(f, columns=meta, read_dictionary=text) if meta else md.num_rows)
        for rgs, nrows in _row_group_runs(md, rows_per_chunk):
            name = f"read-parquet-{dask.base.tokenize(f, os.path.getmtime(f), rgs, feats, dtype)}"
            blocks.append(
                da.from_delayed(read(f, rgs, feats, dtype, dask_key_name=name), shape=(nrows, len(feats)), dtype=dtype)
            )
        del md
    if not blocks:
        raise ValueError(f"{path}: the parquet file(s) hold no rows.")
    X = da.concatenate(blocks, axis=0) if len(blocks) > 1 else blocks[0]
    obs = _lazy_obs(obs_parts, text) if meta else pd.DataFrame(index=pd.RangeIndex(sum(obs_parts)))
    if level is None:
        level = "single_cell" if any(c.endswith("ObjectNumber") for c in empty.columns) else "well"
    adata = from_parts(
        obs, X, feats, [str(empty[c].dtype) for c in feats], level=level, source=str(path),
        columns=[str(c) for c in empty.columns],
    )
    # the table's own dtypes (object for strings), so that to_pandas gives what lazy=False gives
    record(adata).set("obs_dtypes", json.dumps({str(c): str(empty[c].dtype) for c in meta}))
    return adata


def anndata_zarr_group(path):
    """The root group of an AnnData zarr store, opened read-only (raises if it is not one)."""
    import zarr

    g = zarr.open_group(str(path), mode="r")
    for key in ("obs", "var", "X"):
        if key not in g:
            raise ValueError(f"{path}: not an AnnData zarr store (no {key!r} element).")
    return g


def read_zarr_lazy(path: str | os.PathLike) -> ad.AnnData:
    """Open an AnnData zarr store with ``.obs``/``.var``/``.uns`` in memory and ``.X`` as a dask array.

    (Formerly also ``ip.pp.read_zarr_lazy``; ``ip.io.read_profiles(path, lazy=True)`` does the same.)

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
    >>> type(ip.io.read_zarr_lazy(p).X).__module__.split(".")[0]
    'dask'
    """
    from anndata.experimental import read_elem_lazy

    g = anndata_zarr_group(path)
    obs = ad.io.read_elem(g["obs"])
    var = ad.io.read_elem(g["var"])
    uns = ad.io.read_elem(g["uns"]) if "uns" in g else {}
    layers = {k: read_elem_lazy(g["layers"][k]) for k in g["layers"]} if "layers" in g else {}
    X = read_elem_lazy(g["X"])
    return ad.AnnData(X=X, obs=obs, var=var, uns=uns, layers=layers)


def read_lazy(
    path: Path,
    *,
    chunk_bytes: int | None = None,
    metadata: Sequence[str] | None = None, features: Sequence[str] | None = None,
    metadata_prefix: str | Sequence[str] = METADATA_PREFIXES, level: str | None = None, require_metadata: bool = True,
) -> ad.AnnData:
    """Dispatch of ``read_profiles(..., lazy=True)`` on the kind of source."""
    if path.name.lower().endswith(".zarr"):
        if metadata is not None or features is not None:
            raise ValueError("metadata= and features= apply to parquet input; a zarr store keeps its own split.")
        return read_zarr_lazy(path)
    if is_parquet_source(path):
        return read_parquet_lazy(
            path, metadata=metadata, features=features, metadata_prefix=metadata_prefix, level=level,
            require_metadata=require_metadata, chunk_bytes=chunk_bytes,
        )
    raise ValueError(
        f"{path}: lazy=True reads a parquet file, a folder of parquet files or a .zarr AnnData store; "
        "read other formats with lazy=False (or convert them with ip.io.write_profiles)."
    )
