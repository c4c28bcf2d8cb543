"""Profile tables (CSV/CSV.GZ/TSV/parquet and pandas DataFrames) ↔ AnnData.

The round trip ``to_pandas(from_pandas(df))`` returns the same columns, in the
same order, with the same dtypes and index, so pycytominer code keeps working.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._core.anatomy import parse_feature_names
from .._core.features import (
    METADATA_PREFIXES,
    check_numeric_features,
    check_unique_columns,
    feature_matrix,
    split_columns,
)
from .._core.provenance import log_step, record, set_level
from ._formats import READERS as READERS
from ._formats import detect_format, is_parquet_source
from ._formats import read as read
from ._formats import reader_for as reader_for
from ._write import PARQUET_KEY
from ._write import check_writable as check_writable
from ._write import write_profiles as write_profiles

PathLike = str | os.PathLike


def from_pandas(
    df: pd.DataFrame,
    *,
    source: str = "DataFrame",
    metadata: Sequence[str] | None = None, features: Sequence[str] | None = None,
    metadata_prefix: str | Sequence[str] = METADATA_PREFIXES, level: str | None = None, require_metadata: bool = True,
) -> ad.AnnData:
    """Build an AnnData from a pycytominer-style profile DataFrame.

    Parameters
    ----------
    df
        One row per profile (cell or well); ``Metadata_*`` columns and feature columns.
    source
        Name of the input used in error messages.
    metadata, features
        Explicit column lists; by default metadata are the columns starting with
        ``metadata_prefix`` and features are all the others.
    metadata_prefix
        Prefix(es) that mark metadata columns.
    level
        ``"single_cell"``, ``"well"``, ``"consensus"``...; guessed when ``None``
        (``single_cell`` when an ``ObjectNumber`` column exists, else ``well``).
    require_metadata
        Raise when no metadata column is found.

    Returns
    -------
    AnnData with ``.obs`` = metadata (names unchanged), ``.X`` = features,
    ``.var`` = parsed feature anatomy plus the original ``dtype``.

    Examples
    --------
    >>> import pandas as pd, imgprof as ip
    >>> df = pd.DataFrame({"Metadata_Well": ["A01", "A02"], "Cells_AreaShape_Area": [10.0, 12.0]})
    >>> adata = ip.io.from_pandas(df)
    >>> adata.var.loc["Cells_AreaShape_Area", "feature_group"]
    'AreaShape'
    >>> ip.io.to_pandas(adata).equals(df)
    True
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}.")
    if df.shape[0] == 0:
        raise ValueError(f"{source}: the table has no rows.")
    if any(not isinstance(c, str) for c in df.columns):
        # Integer or other labels (e.g. pd.DataFrame(array)): AnnData needs string names.
        df = df.rename(columns=str)
    meta, feats = split_columns(
        df, metadata=metadata, features=features, metadata_prefix=metadata_prefix, source=source,
        require_metadata=require_metadata,
    )
    check_numeric_features(df, feats, source=source)
    X = feature_matrix(df, feats)
    obs = df.loc[:, meta].copy()
    dtypes = dict(df.dtypes.items())
    if level is None:
        level = "single_cell" if any(c.endswith("ObjectNumber") for c in df.columns) else "well"
    adata = from_parts(
        obs, X, feats, [str(dtypes[c]) for c in feats], level=level, source=source,
        columns=[str(c) for c in df.columns],
    )
    log_step(adata, "io.from_pandas", {"source": source, "level": level}, n_metadata=len(meta), n_features=len(feats))
    return adata


def from_parts(
    obs: pd.DataFrame,
    X,
    features: Sequence[str],
    input_dtypes: Sequence[str],
    *,
    level: str,
    source: str,
    columns: Sequence[str] | None = None,
) -> ad.AnnData:
    """AnnData from metadata + a feature matrix, recording the table layout ``to_pandas`` restores.

    Shared by :func:`from_pandas` and the readers that assemble the matrix themselves (without
    building one wide DataFrame first). ``obs.index`` becomes the obs names (as strings).
    """
    if isinstance(obs.index, pd.RangeIndex):
        index_info = {"kind": "range", "start": int(obs.index.start), "step": int(obs.index.step), "name": obs.index.name}
    else:
        index_info = {"kind": "labels", "name": obs.index.name, "dtype": str(obs.index.dtype)}
    obs_dtypes = {str(c): str(t) for c, t in obs.dtypes.items()}
    obs = obs.copy(deep=False)
    obs.index = pd.Index([str(i) for i in obs.index], name=None)
    if obs.index.has_duplicates:
        raise ValueError(f"{source}: the table's index has duplicated labels; reset it first (df.reset_index(drop=True)).")
    var = parse_feature_names(features)
    var["input_dtype"] = list(input_dtypes)
    adata = ad.AnnData(X=X, obs=obs, var=var)
    rec = record(adata)
    rec.set("columns", list(columns) if columns is not None else [*map(str, obs.columns), *map(str, features)])
    rec.set("obs_dtypes", json.dumps(obs_dtypes))
    rec.set("index", json.dumps(index_info))
    set_level(adata, level)
    return adata


def _restore_dtype(series: pd.Series, dtype: str) -> pd.Series:
    try:
        if isinstance(series.dtype, pd.CategoricalDtype) and dtype in ("object", "str", "string"):
            out = series.astype(object)
            return out.where(out.notna(), np.nan) if dtype == "object" else out.astype(dtype)
        return series.astype(dtype)
    except (TypeError, ValueError):
        return series


def to_pandas(adata: ad.AnnData, *, layer: str | None = None, use_rep: str | None = None) -> pd.DataFrame:
    """Return the profiles as a pycytominer-style DataFrame (metadata then features).

    When ``adata`` came from :func:`from_pandas` (or a reader), the original
    column order, dtypes and index are restored. Columns added later (new
    ``.obs`` columns, dropped features) are handled: new metadata go after the
    original metadata, removed features are left out.

    Parameters
    ----------
    adata
        Profiles.
    layer
        Use ``adata.layers[layer]`` instead of ``.X``.
    use_rep
        Export an embedding from ``.obsm`` (columns ``<use_rep>_0``...) instead of features.

    Returns
    -------
    pandas.DataFrame
        Metadata columns then feature columns, one row per observation. Source dtypes are restored
        for ``.X`` only, and an integer dtype only where every value is still a whole number (never truncated).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate(n_plates=1, seed=0)
    >>> df = ip.io.to_pandas(adata)
    >>> df.columns[0]
    'Metadata_Plate'
    """
    from .._core.validation import get_matrix

    X = get_matrix(adata, layer=layer, use_rep=use_rep)
    X = np.asarray(X.compute() if hasattr(X, "compute") else X)
    if use_rep not in (None, "X"):
        feat_names = [f"{use_rep}_{i}" for i in range(X.shape[1])]
        dtypes = {}
    else:
        feat_names = list(map(str, adata.var_names))
        dtypes = dict(zip(feat_names, adata.var["input_dtype"])) if "input_dtype" in adata.var else {}
    store = record(adata).as_dict()
    obs_dtypes = json.loads(store.get("obs_dtypes", "{}")) if isinstance(store.get("obs_dtypes", "{}"), str) else {}
    obs = adata.obs.copy()
    for c, dt in obs_dtypes.items():
        if c in obs.columns:
            obs[c] = _restore_dtype(obs[c], dt)
    for c in obs.columns:
        # anndata turns string columns into categoricals when writing h5ad/zarr; a column whose
        # original dtype was not recorded comes back as plain values, as pycytominer expects.
        if c not in obs_dtypes and isinstance(obs[c].dtype, pd.CategoricalDtype):
            cats = obs[c].cat.categories
            if cats.dtype == object or obs[c].isna().any():
                obs[c] = _restore_dtype(obs[c], "object")
            else:
                obs[c] = obs[c].astype(cats.dtype)
    feats = pd.DataFrame(X, columns=feat_names, index=obs.index)
    if layer is not None:
        dtypes = {}  # a layer is a derived matrix (normalized, corrected): its values are not the source's
    for c, dt in dtypes.items():
        if dt and dt != str(feats[c].dtype):
            col = feats[c]
            if np.issubdtype(np.dtype(dt), np.integer) and (col.isna().any() or not np.array_equal(col, np.round(col))):
                continue  # NaN or fractions cannot live in an int column: keep float rather than truncate
            feats[c] = _restore_dtype(col, dt)
    df = pd.concat([obs, feats], axis=1)
    original = list(store.get("columns", []))
    if original and use_rep in (None, "X"):
        df = df[_column_order(original, list(obs.columns), feat_names)]
    df = _restore_index(df, store.get("index"), adata.n_obs)
    df.columns.name = None
    return df


def _column_order(original: list, obs_cols: list, feat_names: list) -> list:
    """The recorded column order; columns added later go after the original metadata / features."""
    obs_set, orig_set = set(obs_cols), set(original)
    present = obs_set | set(feat_names)
    ordered = [c for c in original if c in present]
    extra_meta = [c for c in obs_cols if c not in orig_set]
    extra_feat = [c for c in feat_names if c not in orig_set]
    # Original order; metadata added later go right after the last original metadata column.
    n_meta_orig = sum(1 for c in ordered if c in obs_set)
    meta_part = [c for c in ordered if c in obs_set] + extra_meta
    feat_part = [c for c in ordered if c not in obs_set] + extra_feat
    if n_meta_orig == 0 or ordered[:n_meta_orig] == meta_part[:n_meta_orig]:
        # Metadata first, as documented (also when every metadata column was renamed, e.g. by
        # pp.annotate(clean_cellprofiler=True), so none of them is in the recorded order).
        return meta_part + feat_part
    return ordered + extra_meta + extra_feat


def _restore_index(df: pd.DataFrame, recorded, n_obs: int) -> pd.DataFrame:
    """The index the source table had (recorded as JSON by ``from_parts``), when it still applies."""
    if isinstance(recorded, str):
        index_info = json.loads(recorded)
    elif list(df.index) == [str(i) for i in range(len(df))]:
        index_info = {"kind": "range", "start": 0, "step": 1, "name": None}  # e.g. simulated data
    else:
        index_info = {"kind": "labels"}
    if index_info.get("kind") == "range" and n_obs == len(df):
        start, step = index_info.get("start", 0), index_info.get("step", 1)
        expected = [str(start + i * step) for i in range(len(df))]
        if list(df.index) == expected:
            df.index = pd.RangeIndex(start, start + step * len(df), step, name=index_info.get("name"))
        else:
            # A row subset (or reordering) keeps its original integer labels, as df.loc[...] would.
            try:
                df.index = pd.Index(df.index.astype(np.int64), name=index_info.get("name"))
            except (TypeError, ValueError):
                df = df.reset_index(drop=True)
    elif index_info.get("kind") == "labels":
        dt = index_info.get("dtype")
        if dt and dt != "object":
            with contextlib.suppress(TypeError, ValueError):
                df.index = df.index.astype(dt)
        df.index.name = index_info.get("name")
    return df


def sniff_header(path: Path, sep: str) -> list[str]:
    from ._text import open_text, wrap_errors

    with wrap_errors(path), open_text(path) as fh:
        line = fh.readline()
    if not line.strip():
        raise ValueError(f"{path}: the file is empty (no header line).")
    from ._text import sniff_sep

    return next(csv.reader([line.rstrip("\r\n")], delimiter=sniff_sep(line, sep)))


def sep_for(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    return "\t" if name.endswith((".tsv", ".txt")) else ","


def read_profiles(
    path: PathLike,
    *,
    sep: str | None = None,
    encoding: str = "utf-8",
    lazy: bool = False,
    chunk_bytes: int | None = None,
    metadata: Sequence[str] | None = None, features: Sequence[str] | None = None,
    metadata_prefix: str | Sequence[str] = METADATA_PREFIXES, level: str | None = None, require_metadata: bool = True,
) -> ad.AnnData:
    """Read a profile table (CSV, CSV.GZ, TSV, parquet, h5ad or zarr) into AnnData.

    Parameters
    ----------
    path
        File path. ``.csv``/``.csv.gz``/``.tsv``/``.txt`` are read with pandas,
        ``.parquet``/``.pq`` with pyarrow, ``.h5ad``/``.zarr`` with anndata.
        A folder of parquet files (same columns in each; read in sorted path
        order, rows concatenated) is read as one table.
    sep
        Column separator for text files (default: from the extension, corrected by sniffing the
        header line as pycytominer does, so a tab-separated ``.csv`` is read right).
    encoding
        Text encoding of CSV/TSV files (e.g. ``"latin-1"``).
    lazy
        ``True``: for a parquet file, a folder of parquet files or a ``.zarr``
        AnnData store, return an AnnData whose ``.obs``/``.var`` are in memory
        and whose ``.X`` is a **dask array over the files**: each task reads its
        own rows (a run of row groups of one file, or zarr chunks), so under an
        active ``dask.distributed.Client`` the workers read the data and the
        client never holds the matrix. Every ``ip.pp`` step and ``ip.tl.pca``
        accept it (see the "Scaling out" docs page). Same values, dtypes,
        obs/var names and ``.obs`` as ``lazy=False``.
    chunk_bytes
        With ``lazy=True`` and parquet input: about this many decoded bytes per
        dask chunk (consecutive row groups of a file are merged; a row group is
        never split; default 64 MB).
    metadata, features, metadata_prefix, level, require_metadata
        See :func:`from_pandas`.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    imgprof.io.ReadError
        (a ``ValueError``) the file is empty, truncated, not valid text in ``encoding``, malformed
        (the message gives the line), a binary file with a text name, has duplicated column names,
        or is an unreadable parquet/h5ad/zarr file. The message names the file.

    Returns
    -------
    AnnData
        Profiles: metadata in ``.obs``, features in ``.X`` (float; a dask array over the files
        with ``lazy=True``), feature anatomy in
        ``.var``, and the original column order/dtypes plus a provenance entry in
        the provenance record (``imgprof._core.provenance.record``) (so :func:`to_pandas` restores the table).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.io.read_profiles("SQ00015054_normalized_feature_select.csv.gz")  # doctest: +SKIP
    >>> cells = ip.io.read_profiles("cells/", lazy=True)  # doctest: +SKIP
    >>> type(cells.X).__module__.split(".")[0]  # doctest: +SKIP
    'dask'
    """
    from ._text import ReadError, read_text_table

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file.")
    from ._lazy import read_lazy

    if lazy or (path.is_dir() and is_parquet_source(path)):
        adata = read_lazy(
            path, metadata=metadata, features=features, metadata_prefix=metadata_prefix, level=level,
            require_metadata=require_metadata, chunk_bytes=chunk_bytes,
        )
        if not lazy:  # a folder of parquet files, loaded
            adata.X = np.asarray(adata.X.compute(scheduler="threads"))  # read here, even under a Client
        log_step(adata, "io.read_profiles", {"path": str(path), "lazy": bool(lazy)})
        return adata
    if chunk_bytes is not None:
        raise ValueError("chunk_bytes= applies to lazy=True only.")
    if path.is_file() and path.stat().st_size == 0:
        raise ReadError(f"{path}: the file is empty (0 bytes).", path=path)
    try:
        fmt = detect_format(path)
    except ValueError:
        fmt = "csv"  # an unknown suffix is read as a text table (the separator sniffed)
    if fmt == "h5ad":
        try:
            return ad.read_h5ad(path)
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise ReadError(f"{path}: not a readable h5ad file ({type(e).__name__}: {e}); truncated or not HDF5?",
                            path=path) from e
    if fmt == "zarr":
        try:
            return ad.read_zarr(path)
        except Exception as e:  # zarr raises many types for a broken store
            raise ReadError(f"{path}: not a readable zarr store ({type(e).__name__}: {e}).", path=path) from e
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
            check_unique_columns(schema.names, source=str(path))
            df = pd.read_parquet(path)
        except (pa.ArrowException, OSError) as e:
            raise ReadError(f"{path}: not a readable parquet file ({type(e).__name__}: {e}); truncated or not parquet?",
                            path=path) from e
        hint = (schema.metadata or {}).get(PARQUET_KEY)
        if hint and metadata is None and features is None:
            # Written by write_profiles: reuse its metadata/feature split (obs columns need no Metadata_ prefix).
            hint = json.loads(hint)
            metadata = [c for c in hint.get("metadata", []) if c in df.columns]
            level = level or hint.get("level")
    else:
        df = read_text_table(path, sep=sep, encoding=encoding)
    if df.shape[0] == 0:
        raise ReadError(f"{path}: the table has a header but no rows.", path=path)
    adata = from_pandas(
        df, metadata=metadata, features=features, metadata_prefix=metadata_prefix, level=level,
        source=str(path), require_metadata=require_metadata,
    )
    log_step(adata, "io.read_profiles", {"path": str(path)})
    return adata

