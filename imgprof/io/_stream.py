"""Profile sources streamed piece by piece: what ``ip.pp.aggregate`` reads from a path.

:func:`open_source` looks at a path once (:func:`imgprof.io._formats.detect_format`) and
returns a :class:`ProfileSource` — a parquet file / folder of parquet files, or a dense
AnnData zarr store. A source cuts the rows into *units* (parquet row groups, runs of zarr
row chunks), in file order, and reads, per unit, the key and kept metadata columns
(:meth:`ProfileSource.read_meta`) and blocks of feature columns as float64
(:meth:`ProfileSource.read_block`, :meth:`ProfileSource.read_placed`). It never holds the
feature matrix; the consumer decides how the pieces are reduced.
"""

from __future__ import annotations

import json
import os
import threading
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._core.features import METADATA_PREFIXES, check_numeric_features, split_columns
from .._core.groups import place_rows
from .._core.provenance import record
from .._core.validation import as_list, check_df_keys, check_numeric
from ._formats import detect_format, is_parquet_source, parquet_files
from ._lazy import anndata_zarr_group

PathLike = str | os.PathLike

#: Decoded float64 bytes of one (row group x column block) read; pyarrow holds about 3.5x this
#: while decoding, so each reading thread holds a few tens of MB whatever the file size.
_READ_BLOCK_BYTES = 8 << 20
#: Rows of a zarr store read at once: whole chunks, about this many bytes of float64.
_ZARR_UNIT_BYTES = 64 << 20
#: Columns of a parquet source summarised per group as QC flags (``ip.pp.qc``'s default prefix).
QC_PREFIX = "Metadata_qc_"


def qc_columns(uns: Any, columns) -> list[str]:
    """The columns among ``columns`` that ``ip.pp.qc`` wrote, per the provenance log in ``uns`` (a dict)."""
    steps = record(types.SimpleNamespace(uns=uns if isinstance(uns, dict) else {})).steps
    present = set(map(str, columns))
    cols: list[str] = []
    for key in sorted(steps):
        step = steps[key]
        if step.get("function") != "pp.qc":
            continue
        extra = json.loads(step.get("extra", "{}") or "{}")
        cols += [c for c in extra.get("columns", []) if c in present and c not in cols]
    return cols


def recorded_obs_dtypes(uns: Any) -> dict:
    """The ``.obs`` dtypes recorded by ``from_pandas`` in ``uns`` (a dict; empty when there are none)."""
    rec = record(types.SimpleNamespace(uns=uns if isinstance(uns, dict) else {}))
    return json.loads(rec.get("obs_dtypes", "{}") or "{}")


def kept_columns(meta_cols: list[str], keep_metadata, by: list[str]) -> list[str]:
    """Metadata columns a streamed aggregation carries (``keep_metadata``; ``by`` is always kept)."""
    if keep_metadata is False:
        return []
    if keep_metadata is True:
        return [c for c in meta_cols if c not in by]
    return [c for c in as_list(keep_metadata) if c not in by]


def resolve_threads(n_jobs: int | None) -> int:
    """``n_jobs``, or every CPU when it is ``None``."""
    return n_jobs if n_jobs is not None and n_jobs > 0 else (os.cpu_count() or 1)


def arrow_column(table, c: str) -> np.ndarray:
    """One column of an arrow table as a numpy float array (nulls -> NaN)."""
    import pyarrow as pa

    col = table.column(c)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if not pa.types.is_floating(col.type):  # integers, booleans (nulls -> NaN)
        col = col.cast(pa.float64())
    return col.to_numpy()


def read_parquet_columns(files: list[str], cols: list[str]) -> pd.DataFrame:
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


class ProfileSource:
    """Rows of profiles on disk, read one unit (a run of rows) and one block of columns at a time.

    Attributes set by each source: ``where`` (the path, for messages), ``var`` (feature
    annotations; ``var_names`` its index), ``uns``, ``obs_dtypes``, ``meta_cols`` (metadata
    columns other than ``by``), ``keep_cols`` (those carried to the groups), ``meta_read``
    (``by`` + ``keep_cols``), ``units`` and ``unit_rows`` (rows of each unit), ``columnar``
    (whether a block of columns of every row reads each value once: :meth:`read_placed`),
    ``annotation_columns`` (columns a count column must not silently replace),
    ``jobs`` (reading threads) and ``extra`` (facts for the provenance log).
    """

    where: str
    var: pd.DataFrame
    uns: dict
    obs_dtypes: dict
    meta_cols: list[str]
    keep_cols: list[str]
    meta_read: list[str]
    annotation_columns: list[str]
    units: list
    unit_rows: list[int]
    columnar: bool = False
    jobs: int = 1
    extra: dict

    @property
    def var_names(self) -> pd.Index:
        """Feature names, in column order."""
        return self.var.index

    def check(self) -> None:
        """Index the units (and check the columns of every file); call before reading."""
        raise NotImplementedError

    def read_meta(self, unit) -> pd.DataFrame:
        """The ``meta_read`` columns of one unit's rows."""
        raise NotImplementedError

    def read_block(self, unit, c0: int, c1: int) -> np.ndarray:
        """Feature columns ``c0:c1`` of one unit's rows as a float64 matrix."""
        raise NotImplementedError

    def read_placed(self, unit, c0: int, c1: int, dest: np.ndarray, out: np.ndarray) -> None:
        """Write the unit's feature columns ``c0:c1`` into the rows ``dest`` of ``out`` (columnar sources).

        ``dest`` holds one destination row per row of the unit (``-1``: left out); ``out`` is a
        C-ordered float64 ``(rows, c1 - c0)`` matrix, rows in group order.
        """
        raise NotImplementedError

    def blocks_for(self, rows: int) -> tuple[list[tuple[int, int]], int]:
        """Column blocks to read a unit of ``rows`` rows by, and the threads each block's reduction may use."""
        raise NotImplementedError

    def all_meta(self) -> pd.DataFrame:
        """The ``meta_read`` columns of every row, in file order."""
        raise NotImplementedError

    def qc_rows(self) -> tuple[pd.DataFrame, list[str]]:
        """The ``by`` keys and QC columns (of ``ip.pp.qc``) of every row, and the QC column names."""
        raise NotImplementedError

    def release(self) -> None:
        """Hand cached memory back after a unit (nothing by default)."""


class ParquetSource(ProfileSource):
    """A parquet file or a folder of parquet files (same columns), read by row group and column block.

    One ``ParquetFile`` per thread (readers are not shared across threads), all sharing the
    current file's footer: parsed, it takes ~1 KB per column and row group, so one copy per
    thread would grow with the file. No pre-buffering, which keeps column chunks alive.
    """

    columnar = True

    def __init__(self, path: Path, by: list[str], *, keep_metadata, features, metadata, n_jobs: int | None):
        import pyarrow.parquet as pq

        self.where, self.by = str(path), by
        self.files = parquet_files(path)
        if not self.files:
            raise ValueError(f"{path}: no parquet file to aggregate.")
        empty = pq.read_schema(self.files[0]).empty_table().to_pandas()
        meta_cols, feat_cols = split_columns(
            empty, metadata=metadata, features=features, metadata_prefix=METADATA_PREFIXES, source=self.where
        )
        check_df_keys(empty, by, param="by", where=self.where)
        feat_cols = [c for c in feat_cols if c not in set(by)]
        # Non-numeric "features" that are CellProfiler bookkeeping (e.g. ImageNumber strings) are an error, as in from_pandas.
        check_numeric_features(empty, feat_cols, source=self.where)
        self.drop_ids = [c for c in ("ImageNumber", "ObjectNumber") if c in feat_cols]
        self.feat_cols = [c for c in feat_cols if c not in self.drop_ids]
        self.meta_cols = [c for c in meta_cols if c not in set(by)]
        self.annotation_columns = self.meta_cols
        if not isinstance(keep_metadata, bool):
            check_df_keys(empty, as_list(keep_metadata), param="keep_metadata", where=self.where)
        self.keep_cols = kept_columns(self.meta_cols, keep_metadata, by)
        self.meta_read = list(dict.fromkeys(by + self.keep_cols))
        self.obs_dtypes = {c: str(empty[c].dtype) for c in empty.columns}
        self.uns, self.jobs = {}, resolve_threads(n_jobs)
        self._local, self._lock = threading.local(), threading.Lock()
        self._footer: dict[str, Any] = {}

    def check(self) -> None:
        """Index the row groups of every file (and check each file has the columns)."""
        import pyarrow.parquet as pq

        from .._core.anatomy import parse_feature_names

        if not self.feat_cols:
            raise ValueError(f"{self.where}: no feature column to aggregate.")
        self.var = parse_feature_names(self.feat_cols).assign(input_dtype="float64")
        self.units, self.unit_rows = [], []
        for f in self.files:
            md = pq.read_metadata(f)
            names = set(md.schema.to_arrow_schema().names)
            missing = [c for c in self.meta_read + self.feat_cols if c not in names]
            if missing:
                raise KeyError(
                    f"{f}: column(s) {missing[:5]} missing (present in {self.files[0]}); every file must have the same columns."
                )
            for rg in range(md.num_row_groups):
                if md.row_group(rg).num_rows > 0:
                    self.units.append((f, rg))
                    self.unit_rows.append(md.row_group(rg).num_rows)
            del md
        self.extra = {"dropped_id_columns": self.drop_ids, "n_files": len(self.files), "n_row_groups": len(self.units)}

    def _reader(self, f: str):
        import pyarrow.parquet as pq

        local = self._local
        if getattr(local, "name", None) != f:
            with self._lock:
                if f not in self._footer:
                    self._footer.clear()
                    self._footer[f] = pq.read_metadata(f)
                md = self._footer[f]
            local.pf = pq.ParquetFile(f, pre_buffer=False, metadata=md)
            local.name = f
        return local.pf

    def _read(self, unit, c0: int, c1: int):
        return self._reader(unit[0]).read_row_group(unit[1], columns=self.feat_cols[c0:c1])

    def read_meta(self, unit) -> pd.DataFrame:
        return self._reader(unit[0]).read_row_group(unit[1], columns=self.meta_read).to_pandas()

    def read_block(self, unit, c0: int, c1: int) -> np.ndarray:
        table = self._read(unit, c0, c1)
        out = np.empty((table.num_rows, c1 - c0))
        for j, c in enumerate(self.feat_cols[c0:c1]):
            out[:, j] = arrow_column(table, c)
        return out

    def read_placed(self, unit, c0: int, c1: int, dest: np.ndarray, out: np.ndarray) -> None:
        # decoded column by column into a file-order block, then placed row by row (cache-blocked)
        table = self._read(unit, c0, c1)
        block = np.empty((table.num_rows, c1 - c0), order="F")
        for j, c in enumerate(self.feat_cols[c0:c1]):
            block[:, j] = arrow_column(table, c)
        del table
        place_rows(block, dest, out)

    def blocks_for(self, rows: int) -> tuple[list[tuple[int, int]], int]:
        # narrow blocks: each read decodes about _READ_BLOCK_BYTES; at least two blocks per thread
        p = len(self.feat_cols)
        width = max(1, _READ_BLOCK_BYTES // max(8 * rows, 1))
        width = min(width, max(1, -(-p // (2 * self.jobs))))
        return [(c, min(c + width, p)) for c in range(0, p, width)], 1

    def all_meta(self) -> pd.DataFrame:
        return read_parquet_columns(self.files, self.meta_read)

    def qc_rows(self) -> tuple[pd.DataFrame, list[str]]:
        # a parquet file has no provenance: its Metadata_qc_* columns
        cols = [c for c in self.meta_cols if c.startswith(QC_PREFIX)]
        if not cols:
            return pd.DataFrame(), cols
        return read_parquet_columns(self.files, list(dict.fromkeys(self.by + cols))), cols

    def release(self) -> None:
        """Hand pyarrow's cached decode buffers back (its allocator keeps them per thread)."""
        import pyarrow as pa

        pa.default_memory_pool().release_unused()


class ZarrSource(ProfileSource):
    """The parts of an AnnData zarr store ``aggregate`` needs: lean ``.obs``, lazy ``.X``.

    ``.obs`` holds only the columns that can end up in the result, with a ``RangeIndex``
    instead of the (string) cell names, so the memory it takes in the calling process is a
    few bytes per cell and column (categoricals). ``X``/``layers`` are dask arrays (an
    AnnData stand-in for the in-memory path); ``zarr_X`` the dense zarr array streamed
    (``None`` when the matrix is sparse).
    """

    def __init__(self, path: Path, by: list[str], *, keep_metadata, layer: str | None, n_jobs: int | None):
        from anndata.experimental import read_elem_lazy

        self.where, self.by, self.jobs = str(path), by, resolve_threads(n_jobs)
        g = anndata_zarr_group(path)
        og = g["obs"]
        columns = [str(c) for c in og.attrs.get("column-order", [])]
        wanted = self._wanted(columns, by, keep_metadata, path)
        self.uns = ad.io.read_elem(g["uns"]) if "uns" in g else {}
        # the QC columns of ip.pp.qc are always read: aggregate summarises them per group
        qc = set(qc_columns(self.uns, columns))
        wanted = [c for c in columns if c in set(wanted) or c in qc]
        self.layers: dict = {}
        self.zarr_X = self._dense(g["X"])
        if layer is not None:
            if "layers" not in g or layer not in g["layers"]:
                have = list(g["layers"].keys()) if "layers" in g else []
                raise KeyError(f"layer={layer!r} not found in {path} (layers: {have}).")
            self.layers = {layer: read_elem_lazy(g["layers"][layer])}
            self.zarr_X = self._dense(g["layers"][layer])
        self.X = read_elem_lazy(g["X"])
        self.obs = pd.DataFrame({c: ad.io.read_elem(og[c]) for c in wanted}, index=pd.RangeIndex(self.X.shape[0]))
        self.var = ad.io.read_elem(g["var"])
        self.n_obs = len(self.obs)
        self.obs_dtypes = recorded_obs_dtypes(self.uns)
        self.meta_cols = [c for c in self.obs.columns if c not in set(by)]
        self.annotation_columns = list(self.obs.columns)
        self.keep_cols = kept_columns(self.meta_cols, keep_metadata, by)
        self.meta_read = list(dict.fromkeys(by + self.keep_cols))

    @staticmethod
    def _wanted(columns: list[str], by: list[str], keep_metadata, path: Path) -> list[str]:
        available = pd.DataFrame(columns=columns)
        check_df_keys(available, by, param="by", where=f"{path} (obs)")
        if keep_metadata is True:
            return columns
        if keep_metadata is False:
            return by
        check_df_keys(available, as_list(keep_metadata), param="keep_metadata", where=f"{path} (obs)")
        return by + as_list(keep_metadata)

    @staticmethod
    def _dense(elem):
        import zarr

        return elem if isinstance(elem, zarr.Array) and len(elem.shape) == 2 else None

    def check(self) -> None:
        """Cut the rows into units of whole row chunks (about ``_ZARR_UNIT_BYTES`` each).

        (Not called for a sparse ``X``: ``aggregate`` then takes the dask path.)
        """
        zx = self.zarr_X
        n, p = zx.shape
        chunk_rows = int(zx.chunks[0]) or n
        per_unit = chunk_rows * max(1, _ZARR_UNIT_BYTES // max(chunk_rows * p * 8, 1))
        self.units = [(a, min(a + per_unit, n)) for a in range(0, n, per_unit)]
        self.unit_rows = [b - a for a, b in self.units]
        col_chunk = int(zx.chunks[1]) or p
        self.column_blocks = [(c, min(c + col_chunk, p)) for c in range(0, p, col_chunk)]
        self.extra = {"n_chunks_read": len(self.units)}

    def read_meta(self, unit) -> pd.DataFrame:
        return self.obs.iloc[unit[0] : unit[1]].loc[:, self.meta_read]

    def read_block(self, unit, c0: int, c1: int) -> np.ndarray:
        X = np.asarray(self.zarr_X[unit[0] : unit[1], c0:c1])
        check_numeric(X, param=f"{self.where}: X")
        return X.astype(np.float64, copy=False)

    def blocks_for(self, rows: int) -> tuple[list[tuple[int, int]], int]:
        # blocks follow the store's column chunks (a read decompresses whole chunks)
        return self.column_blocks, max(1, self.jobs // len(self.column_blocks))

    def all_meta(self) -> pd.DataFrame:
        return self.obs.loc[:, self.meta_read]

    def qc_rows(self) -> tuple[pd.DataFrame, list[str]]:
        cols = qc_columns(self.uns, self.obs.columns)
        return self.obs.loc[:, list(dict.fromkeys(self.by + cols))], cols


def open_source(
    path: PathLike, by: Sequence[str], *, keep_metadata=True, layer: str | None = None,
    features: Sequence[str] | None = None, metadata: Sequence[str] | None = None, n_jobs: int | None = None,
) -> ProfileSource:
    """Open a parquet file / folder or an AnnData zarr store as a :class:`ProfileSource`.

    Parameters
    ----------
    path
        A ``.parquet``/``.pq`` file, a folder of parquet files, or a ``.zarr`` AnnData store.
    by
        Group keys (``.obs`` / metadata columns), always read.
    keep_metadata
        ``True``, ``False`` or the metadata columns to carry (as in ``ip.pp.aggregate``).
    layer
        For a zarr store: stream ``layers[layer]`` instead of ``X``.
    features, metadata
        For parquet: explicit feature / metadata columns (default: ``Metadata_*`` are metadata).
    n_jobs
        Reading threads (default: all CPUs).

    Returns
    -------
    ProfileSource
        A :class:`ParquetSource` or a :class:`ZarrSource`; call its ``check()`` before reading.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Another format, or ``features``/``metadata`` for a zarr store.

    Examples
    --------
    >>> import imgprof as ip, tempfile, os
    >>> from imgprof.io._stream import open_source
    >>> p = os.path.join(tempfile.mkdtemp(), "cells.parquet")
    >>> ip.io.write_profiles(ip.datasets.simulate(n_plates=1, n_features=5, seed=0), p)
    >>> src = open_source(p, ["Metadata_Plate", "Metadata_Well"]); src.check()
    >>> len(src.var_names), src.columnar
    (5, True)
    """
    path = Path(path)
    by = list(by)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or store.")
    try:
        fmt = detect_format(path)
    except ValueError:
        fmt = ""
    if fmt == "parquet" or is_parquet_source(path):
        return ParquetSource(path, by, keep_metadata=keep_metadata, features=features, metadata=metadata, n_jobs=n_jobs)
    if fmt == "zarr":
        if features is not None or metadata is not None:
            raise ValueError("features= and metadata= apply to parquet input only.")
        return ZarrSource(path, by, keep_metadata=keep_metadata, layer=layer, n_jobs=n_jobs)
    raise ValueError(f"{path}: aggregate streams .parquet files and .zarr stores; read other formats with ip.io.read_profiles.")
