"""Profile tables (CSV/CSV.GZ/TSV/parquet and pandas DataFrames) ↔ AnnData.

The round trip ``to_pandas(from_pandas(df))`` returns the same columns, in the
same order, with the same dtypes and index, so pycytominer code keeps working.
"""

from __future__ import annotations

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
from .._core.provenance import log_step, set_level, uns
from ._atomic import atomic_path

PathLike = str | os.PathLike


def from_pandas(
    df: pd.DataFrame,
    *,
    metadata: Sequence[str] | None = None,
    features: Sequence[str] | None = None,
    metadata_prefix: str | Sequence[str] = METADATA_PREFIXES,
    level: str | None = None,
    source: str = "DataFrame",
    require_metadata: bool = True,
) -> ad.AnnData:
    """Build an AnnData from a pycytominer-style profile DataFrame.

    Parameters
    ----------
    df
        One row per profile (cell or well); ``Metadata_*`` columns and feature columns.
    metadata, features
        Explicit column lists; by default metadata are the columns starting with
        ``metadata_prefix`` and features are all the others.
    metadata_prefix
        Prefix(es) that mark metadata columns.
    level
        ``"single_cell"``, ``"well"``, ``"consensus"``...; guessed when ``None``
        (``single_cell`` when an ``ObjectNumber`` column exists, else ``well``).
    source
        Name of the input used in error messages.
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
    adata = _from_parts(
        obs, X, feats, [str(dtypes[c]) for c in feats], level=level, source=source,
        columns=[str(c) for c in df.columns],
    )
    log_step(adata, "io.from_pandas", {"source": source, "level": level}, n_metadata=len(meta), n_features=len(feats))
    return adata


def _from_parts(
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
    store = uns(adata)
    store["columns"] = list(columns) if columns is not None else [*map(str, obs.columns), *map(str, features)]
    store["obs_dtypes"] = json.dumps(obs_dtypes)
    store["index"] = json.dumps(index_info)
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
    store = adata.uns.get("imgprof", {})
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
        present = set(df.columns)
        ordered = [c for c in original if c in present]
        extra_meta = [c for c in obs.columns if c not in set(original)]
        extra_feat = [c for c in feat_names if c not in set(original)]
        # Original order; metadata added later go right after the last original metadata column.
        n_meta_orig = sum(1 for c in ordered if c in set(obs.columns))
        meta_part = [c for c in ordered if c in set(obs.columns)] + extra_meta
        feat_part = [c for c in ordered if c not in set(obs.columns)] + extra_feat
        if n_meta_orig == 0 or ordered[:n_meta_orig] == meta_part[:n_meta_orig]:
            # Metadata first, as documented (also when every metadata column was renamed, e.g. by
            # pp.annotate(clean_cellprofiler=True), so none of them is in the recorded order).
            df = df[meta_part + feat_part]
        else:
            df = df[ordered + extra_meta + extra_feat]
    if isinstance(store.get("index"), str):
        index_info = json.loads(store["index"])
    elif list(df.index) == [str(i) for i in range(len(df))]:
        index_info = {"kind": "range", "start": 0, "step": 1, "name": None}  # e.g. simulated data
    else:
        index_info = {"kind": "labels"}
    if index_info.get("kind") == "range" and adata.n_obs == len(df):
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
            try:
                df.index = df.index.astype(dt)
            except (TypeError, ValueError):
                pass
        df.index.name = index_info.get("name")
    df.columns.name = None
    return df


def _sniff_header(path: Path, sep: str) -> list[str]:
    from ._text import open_text, wrap_errors

    with wrap_errors(path), open_text(path) as fh:
        line = fh.readline()
    if not line.strip():
        raise ValueError(f"{path}: the file is empty (no header line).")
    from ._text import sniff_sep

    return next(csv.reader([line.rstrip("\r\n")], delimiter=sniff_sep(line, sep)))


def _sep_for(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    return "\t" if name.endswith((".tsv", ".txt")) else ","


def read_profiles(
    path: PathLike,
    *,
    metadata: Sequence[str] | None = None,
    features: Sequence[str] | None = None,
    metadata_prefix: str | Sequence[str] = METADATA_PREFIXES,
    level: str | None = None,
    sep: str | None = None,
    require_metadata: bool = True,
    encoding: str = "utf-8",
    lazy: bool = False,
    chunk_bytes: int | None = None,
) -> ad.AnnData:
    """Read a profile table (CSV, CSV.GZ, TSV, parquet, h5ad or zarr) into AnnData.

    Parameters
    ----------
    path
        File path. ``.csv``/``.csv.gz``/``.tsv``/``.txt`` are read with pandas,
        ``.parquet``/``.pq`` with pyarrow, ``.h5ad``/``.zarr`` with anndata.
        A folder of parquet files (same columns in each; read in sorted path
        order, rows concatenated) is read as one table.
    metadata, features, metadata_prefix, level, require_metadata
        See :func:`from_pandas`.
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
        ``uns['imgprof']`` (so :func:`to_pandas` restores the table).

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
    name = path.name.lower()
    from ._lazy import is_parquet_source, read_lazy

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
    if name.endswith(".h5ad"):
        try:
            return ad.read_h5ad(path)
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise ReadError(f"{path}: not a readable h5ad file ({type(e).__name__}: {e}); truncated or not HDF5?",
                            path=path) from e
    if name.endswith(".zarr"):
        try:
            return ad.read_zarr(path)
        except Exception as e:  # zarr raises many types for a broken store
            raise ReadError(f"{path}: not a readable zarr store ({type(e).__name__}: {e}).", path=path) from e
    if name.endswith((".parquet", ".pq")):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
            check_unique_columns(schema.names, source=str(path))
            df = pd.read_parquet(path)
        except (pa.ArrowException, OSError) as e:
            raise ReadError(f"{path}: not a readable parquet file ({type(e).__name__}: {e}); truncated or not parquet?",
                            path=path) from e
        hint = (schema.metadata or {}).get(_PARQUET_KEY)
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


_PARQUET_KEY = b"imgprof"


def _case_collisions(names) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for n in map(str, names):
        groups.setdefault(n.lower(), []).append(n)
    return [g for g in groups.values() if len(g) > 1]


def _writable_frame(frame: pd.DataFrame, where: str) -> pd.DataFrame | None:
    """A copy of ``frame`` that h5ad/zarr can store, or ``None`` when it already can.

    anndata cannot store object columns that hold no string at all (all missing) or mix types;
    all-missing columns are written as float NaN (``to_pandas`` restores the recorded dtype),
    mixed ones raise an error naming the column.
    """
    fixed = None
    for c in frame.columns:
        s = frame[c]
        if s.dtype != object:
            continue
        kind = pd.api.types.infer_dtype(s, skipna=True)
        if kind == "string":
            continue
        fixed = frame.copy() if fixed is None else fixed
        if kind == "empty":
            fixed[c] = s.astype("float64")
            continue
        inferred = s.infer_objects()
        if inferred.dtype != object:
            fixed[c] = inferred
            continue
        examples = s.dropna().map(type).drop_duplicates().map(lambda t: t.__name__).tolist()[:4]
        raise TypeError(
            f"{where} column {c!r} mixes value types {examples}; h5ad/zarr store one type per column. "
            f"Convert it first, e.g. adata.{where}[{c!r}] = adata.{where}[{c!r}].astype(str)."
        )
    return fixed


def _write_anndata(adata: ad.AnnData, path: Path, fmt: str) -> None:
    if fmt == "zarr":
        _check_zarr_keys(adata, path)
    obs_fix = _writable_frame(adata.obs, "obs")
    var_fix = _writable_frame(adata.var, "var")
    if adata.is_view and (obs_fix is not None or var_fix is not None):
        adata = adata.copy()
    obs_bak, var_bak = adata.obs, adata.var
    try:
        if obs_fix is not None:
            adata.obs = obs_fix
        if var_fix is not None:
            adata.var = var_fix
        with atomic_path(path) as tmp:
            if fmt == "zarr":
                adata.write_zarr(tmp)
            else:
                adata.write_h5ad(tmp)
    finally:
        if obs_fix is not None:
            adata.obs = obs_bak
        if var_fix is not None:
            adata.var = var_bak


_TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz", ".parquet", ".pq")
_ANNDATA_SUFFIXES = (".h5ad", ".zarr")


def _format_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith(".zarr"):
        return "zarr"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.removesuffix(".gz").endswith((".tsv", ".txt")):
        return "tsv"
    if name.removesuffix(".gz").endswith(".csv"):
        return "csv"
    raise ValueError(
        f"{path}: unknown extension; use .csv, .csv.gz, .tsv, .parquet, .h5ad or .zarr (nothing was written)."
    )


def check_writable(adata: ad.AnnData, path: PathLike, *, layer: str | None = None) -> str:
    """Check, before anything is written, that ``adata`` can be written to ``path`` and read back.

    Parameters
    ----------
    adata
        Profiles.
    path
        Output file; the format follows the extension.
    layer
        The layer that would be exported (tables only).

    Returns
    -------
    The format name (``"csv"``, ``"tsv"``, ``"parquet"``, ``"h5ad"`` or ``"zarr"``).

    Raises
    ------
    ValueError
        Unknown extension; for tables, an ``.obs`` column named like a feature (the table would hold
        two columns of one name, which :func:`read_profiles` refuses); for zarr, keys that differ
        only by case. The message names the columns.
    TypeError
        ``adata`` is not an AnnData.

    Examples
    --------
    >>> import imgprof as ip
    >>> ip.io.check_writable(ip.datasets.simulate(n_plates=1, seed=0), "out.parquet")
    'parquet'
    """
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"expected an AnnData to write to {path}, got {type(adata).__name__}.")
    path = Path(path)
    fmt = _format_of(path)
    if fmt in ("h5ad", "zarr"):
        if fmt == "zarr":
            _check_zarr_keys(adata, path)
        return fmt
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"layer {layer!r} not in adata.layers ({list(adata.layers)}); nothing was written to {path}.")
    clash = sorted(set(map(str, adata.obs.columns)) & set(map(str, adata.var_names)))
    if clash:
        raise ValueError(
            f"{path}: .obs column(s) {clash[:10]} have the same name as feature(s); a {fmt} table would hold two "
            f"columns of one name, which no reader accepts. Rename them first, e.g. "
            f"adata.obs = adata.obs.rename(columns={{{clash[0]!r}: 'Metadata_{clash[0]}'}}) (nothing was written)."
        )
    return fmt


def _check_zarr_keys(adata: ad.AnnData, path: Path) -> None:
    # Known anndata/zarr limitation: keys that differ only by case collide in the store
    # (LINCS has Metadata_plate_map_name and Metadata_Plate_Map_Name) and the store cannot be read back.
    for where, names in (("obs", adata.obs.columns), ("var", adata.var.columns), ("obsm", adata.obsm.keys()),
                         ("layers", adata.layers.keys()), ("uns", adata.uns.keys())):
        bad = _case_collisions(names)
        if bad:
            raise ValueError(
                f"{path}: {where} keys {bad} differ only by upper/lower case, which a zarr store cannot hold "
                f"(it would be unreadable). Rename one of them (adata.{where} ...) or write .h5ad instead "
                "(nothing was written)."
            )


def write_profiles(adata: ad.AnnData, path: PathLike, *, layer: str | None = None, index: bool = False) -> None:
    """Write profiles as a pycytominer-style table (``.csv[.gz]``, ``.tsv``, ``.parquet``), or h5ad/zarr.

    Tables hold :func:`to_pandas` output. Parquet files also store which columns are metadata
    (schema key ``imgprof``), so :func:`read_profiles` gets the same split back even for
    ``.obs`` columns without the ``Metadata_`` prefix. For h5ad/zarr, object columns that hold
    only missing values are stored as float NaN (``to_pandas`` restores their dtype), columns
    mixing value types raise a ``TypeError`` naming them, and for zarr, keys that differ only
    by case (a zarr limitation) raise a ``ValueError`` naming them.

    Every format is written atomically: to a temporary file (or folder, for zarr) next to
    ``path``, renamed onto ``path`` only when writing succeeded. A failing write, or a process
    killed mid-write, leaves an existing file at ``path`` untouched. Values that could not be
    read back (see :func:`check_writable`) are refused before anything is written.

    Parameters
    ----------
    adata
        Profiles.
    path
        Output file; the format follows the extension.
    layer
        Export ``adata.layers[layer]`` instead of ``.X`` (tables only).
    index
        Also write the DataFrame index (tables only).

    Returns
    -------
    None
        The file is written.

    Examples
    --------
    >>> import imgprof as ip, tempfile, os
    >>> adata = ip.datasets.simulate(n_plates=1, seed=0)
    >>> ip.io.write_profiles(adata, os.path.join(tempfile.mkdtemp(), "profiles.parquet"))
    """
    path = Path(path)
    fmt = check_writable(adata, path, layer=layer)
    if fmt in ("h5ad", "zarr"):
        _write_anndata(adata, path, fmt)
        return
    df = to_pandas(adata, layer=layer)
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                table = pa.Table.from_pandas(df, preserve_index=index)
            except (pa.ArrowException, TypeError, ValueError) as e:
                raise TypeError(f"{path}: cannot store the table as parquet ({e}); convert that column first, e.g. "
                                ".astype(str) (nothing was written).") from e
            hint = {"metadata": [str(c) for c in adata.obs.columns], "level": adata.uns.get("imgprof", {}).get("level")}
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), _PARQUET_KEY: json.dumps(hint).encode()})
            pq.write_table(table, tmp)
        else:
            df.to_csv(tmp, sep="\t" if fmt == "tsv" else ",", index=index)


# --------------------------------------------------------------------------------------------
# One reader for every suffix
# --------------------------------------------------------------------------------------------

#: Suffix → reader name in :mod:`imgprof.io`, checked in order (longest suffixes first).
READERS: dict[str, str] = {
    ".sqlite": "read_cellprofiler", ".sqlite3": "read_cellprofiler", ".db": "read_cellprofiler",
    ".gct.gz": "read_gct", ".gct": "read_gct", ".gctx": "read_gctx",
    ".npz": "read_deepprofiler",
    ".h5ad": "read_profiles", ".zarr": "read_profiles", ".parquet": "read_profiles", ".pq": "read_profiles",
    ".csv.gz": "read_profiles", ".tsv.gz": "read_profiles", ".txt.gz": "read_profiles",
    ".csv": "read_profiles", ".tsv": "read_profiles", ".txt": "read_profiles",
}


def reader_for(path: PathLike) -> str:
    """The name of the :mod:`imgprof.io` reader :func:`read` uses for ``path``.

    Parameters
    ----------
    path
        A file or folder. Folders holding TIFF images (and no ``Cells.csv``) are ``"read_images"``,
        other folders CellProfiler CSV folders (``"read_cellprofiler"``).

    Returns
    -------
    The reader's name, e.g. ``"read_profiles"``.

    Raises
    ------
    ValueError
        No reader handles the suffix; the message lists the known suffixes.

    Examples
    --------
    >>> import imgprof as ip
    >>> ip.io.reader_for("plate.gct.gz"), ip.io.reader_for("SQ00014613.sqlite")
    ('read_gct', 'read_cellprofiler')
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir() and not name.endswith(".zarr"):
        if any(path.glob("*.parquet")) and not any(path.glob("*.csv*")):
            return "read_cytotable"
        if any(path.glob("*.tif*")) and not any(path.glob("Cells.csv*")):
            return "read_images"
        return "read_cellprofiler"
    for suffix in sorted(READERS, key=len, reverse=True):
        if name.endswith(suffix):
            return READERS[suffix]
    raise ValueError(f"{path}: no reader for this file type; known suffixes: {sorted(READERS)}.")


def read(path: PathLike, **kwargs) -> ad.AnnData:
    """Read any supported input, picking the reader by suffix (see :data:`READERS`).

    Parameters
    ----------
    path
        Profile table (``.csv[.gz]``, ``.tsv``, ``.parquet``, ``.h5ad``, ``.zarr``), CellProfiler
        SQLite (``.sqlite``/``.db``) or CSV folder, GCT/GCTX, DeepProfiler ``.npz``, image folder.
    **kwargs
        Passed to the reader.

    Returns
    -------
    AnnData.

    Examples
    --------
    >>> import imgprof as ip, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "p.csv")
    >>> ip.io.write_profiles(ip.datasets.simulate(n_plates=1, seed=0), p)
    >>> ip.io.read(p).n_obs > 0
    True
    """
    from .. import io as ipio

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder.")
    return getattr(ipio, reader_for(path))(path, **kwargs)
