"""L1000 GCT (v1.2 and v1.3) and GCTX (HDF5) readers and writers.

GCT stores genes as rows and samples as columns; imgprof follows the AnnData
convention (samples = observations), so the matrix is transposed: ``.obs`` holds
the column metadata (``pert_iname``, ``pert_dose``...), ``.var`` the row metadata
(``pr_gene_symbol``...).

GCTX is the HDF5 layout written by cmapPy / the Connectivity Map: the matrix at
``/0/DATA/0/matrix`` (shape samples × genes), ids and metadata fields at
``/0/META/COL/<field>`` and ``/0/META/ROW/<field>``, strings stored as bytes and
``-666`` for missing values. h5py is imported only when a GCTX file is touched.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import IO

import anndata as ad
import numpy as np
import pandas as pd

from .._core.docs import doc_params
from .._core.provenance import log_step, record
from ._atomic import atomic_path
from ._text import ReadError, check_field_counts, check_file, check_last_row, wrap_errors
from ._write import RETURNS_WRITTEN

#: The CMap "not available" sentinel.
NA_TOKEN = "-666"

_DATA_NODE = "/0/DATA/0/matrix"
_COL_NODE = "/0/META/COL"
_ROW_NODE = "/0/META/ROW"


#: Parameters shared by the GCT/GCTX readers and writers (filled in by ``doc_params``).
_DOC = {
    "gct_adata": "adata\n    Samples × genes; ``.obs`` is written as column metadata, ``.var`` as row metadata.",
    "obs_prefix": (
        "obs_prefix\n    If given (e.g. ``\"Metadata_\"``), column-metadata names get this prefix so they\n"
        "    follow the profiling convention; the original names are kept in ``.uns``."
    ),
    "convert_neg_666": (
        "convert_neg_666\n    Replace the CMap missing-value sentinel ``-666`` by NaN in the metadata (what\n"
        "    cmapPy's ``parse`` does by default). Off by default, so the values are kept\n"
        "    exactly as written in the file."
    ),
}


def _open(path: Path):
    return gzip.open(path, "rt") if path.name.endswith(".gz") else open(path)


def _coerce(series: pd.Series) -> pd.Series:
    """Numeric dtype when every non-missing value is a number (int64 / Int64 / float), else unchanged."""
    if series.dtype == object:
        first = series.dropna()
        if len(first):
            try:  # cheap early exit for text columns
                float(first.iloc[0])
            except (TypeError, ValueError):
                return series
    num = pd.to_numeric(series, errors="coerce")
    if num.notna().sum() == series.notna().sum() and series.notna().any():
        if (num.dropna() % 1 == 0).all():
            return num.astype("Int64") if num.isna().any() else num.astype(np.int64)
        return num
    return series


def _convert_666(df: pd.DataFrame) -> pd.DataFrame:
    """Replace the CMap ``-666`` sentinel (as number or string) by NaN, then re-infer dtypes."""
    out = df.copy()
    for c in out.columns:
        s = out[c]
        mask = s.astype(str).str.strip().isin([NA_TOKEN, "-666.0"])
        if mask.any():
            s = s.astype(object).where(~mask, np.nan)
            out[c] = _coerce(s)
    return out


def _check_unique(ids: list[str], what: str, path: Path) -> None:
    s = pd.Index(ids)
    if s.has_duplicates:
        dup = s[s.duplicated()].unique().tolist()[:5]
        raise ValueError(f"{path}: duplicated {what} id(s) {dup}; GCT ids must be unique.")


def _finish(X, obs, var, path, version, obs_prefix, convert_neg_666, reader):
    for c in obs.columns:
        obs[c] = _coerce(obs[c])
    for c in var.columns:
        var[c] = _coerce(var[c])
    if convert_neg_666:
        obs, var = _convert_666(obs), _convert_666(var)
    original_obs = list(obs.columns)
    if obs_prefix:
        obs.columns = [f"{obs_prefix}{c}" for c in obs.columns]
    obs.index.name = None
    var.index.name = None
    adata = ad.AnnData(X=X, obs=obs, var=var)
    rec = record(adata)
    rec.set("gct", {"version": version, "obs_names_original": original_obs, "var_meta": list(var.columns)})
    rec.level = "well"
    log_step(adata, reader, {"path": str(path), "obs_prefix": obs_prefix, "convert_neg_666": convert_neg_666})
    return adata


@doc_params(obs_prefix=_DOC["obs_prefix"], convert_neg_666=_DOC["convert_neg_666"])
def read_gct(path: str | os.PathLike, *, obs_prefix: str | None = None, convert_neg_666: bool = False) -> ad.AnnData:
    """Read a GCT 1.2/1.3 file (optionally gzip-compressed) into AnnData (samples × genes).

    Parameters
    ----------
    path
        ``.gct`` or ``.gct.gz`` file.
    {obs_prefix}
    {convert_neg_666}

    Returns
    -------
    AnnData
        Samples × genes; column metadata in ``.obs``, row metadata in ``.var``.

    Raises
    ------
    imgprof.io.ReadError
        (a ``ValueError``) the file is empty, truncated (a row cut short, a cut ``.gz``), not UTF-8,
        malformed, or holds a metadata field name twice; the message names the file and line.

    Examples
    --------
    >>> import imgprof as ip
    >>> expr = ip.datasets.l1000_plate()        # uses read_gct under the hood
    >>> expr.shape
    (377, 978)
    """
    path = Path(path)
    check_file(path, path, "GCT file")
    with wrap_errors(path):
        return _read_gct(path, obs_prefix, convert_neg_666)


def _gct_dims(path: Path, version: str, line: str) -> tuple[int, int, int, int]:
    """Rows, columns, row-metadata and column-metadata counts from line 2."""
    dims = line.rstrip("\n").split("\t")
    try:
        dims_i = [int(x) for x in dims if x.strip()]
    except ValueError as e:
        raise ValueError(f"{path}: line 2 must hold integer dimensions, got {dims!r}.") from e
    if version == "#1.2":
        if len(dims_i) < 2:
            raise ValueError(f"{path}: GCT 1.2 line 2 must hold 2 integers, got {dims!r}.")
        return dims_i[0], dims_i[1], 0, 0
    if len(dims_i) != 4:
        raise ValueError(f"{path}: GCT 1.3 line 2 must hold 4 integers, got {dims!r}.")
    return dims_i[0], dims_i[1], dims_i[2], dims_i[3]


def _gct_column_metadata(fh: IO[str], path: Path, n_cmeta: int, header_offset: int, n_cols: int) -> dict[str, list[str]]:
    """The ``n_cmeta`` column-metadata lines (field name → one value per sample)."""
    cmeta: dict[str, list[str]] = {}
    cmeta_line: dict[str, int] = {}
    for i in range(n_cmeta):
        parts = fh.readline().rstrip("\n").split("\t")
        if len(parts) != header_offset + n_cols:
            raise ValueError(
                f"{path}: column-metadata line {4 + i} has {len(parts)} fields, expected {header_offset + n_cols}."
            )
        if parts[0] in cmeta:
            raise ReadError(
                f"{path}, line {4 + i}: column-metadata field {parts[0]!r} appears twice (also on line "
                f"{cmeta_line[parts[0]]}); field names must be unique.", path=path, line=4 + i,
            )
        cmeta[parts[0]] = parts[header_offset:]
        cmeta_line[parts[0]] = 4 + i
    return cmeta


def _read_gct(path: Path, obs_prefix, convert_neg_666) -> ad.AnnData:
    with _open(path) as fh:
        version = fh.readline().strip()
        if version not in ("#1.2", "#1.3"):
            raise ValueError(f"{path}: not a GCT file (first line is {version[:20]!r}, expected '#1.2' or '#1.3').")
        n_rows, n_cols, n_rmeta, n_cmeta = _gct_dims(path, version, fh.readline())
        header = fh.readline().rstrip("\n").split("\t")
        if version == "#1.2":
            header_offset = 2  # Name, Description
        else:
            header_offset = 1 + n_rmeta
        col_ids = header[header_offset:]
        if len(col_ids) != n_cols:
            raise ValueError(f"{path}: header has {len(col_ids)} sample columns, line 2 declares {n_cols}.")
        _check_unique(col_ids, "sample (column)", path)
        rmeta_names = header[1:header_offset]
        dup_r = sorted({n for n in rmeta_names if rmeta_names.count(n) > 1})
        if dup_r:
            raise ReadError(f"{path}, line 3: row-metadata field(s) {dup_r} appear twice; field names must be unique.",
                            path=path, line=3)
        cmeta = _gct_column_metadata(fh, path, n_cmeta, header_offset, n_cols)
        # Metadata columns as text; the data block parsed as float by pandas' C parser with Python's
        # correctly rounded conversion (float_precision="round_trip", so values are exact). As in
        # cmapPy, "NaN", "nan", "NA" and empty fields are missing (data and row metadata alike).
        body = pd.read_csv(
            fh, sep="\t", header=None, keep_default_na=False, dtype=dict.fromkeys(range(header_offset), str),
            na_values=["NaN", "nan", "NA", ""], low_memory=False, float_precision="round_trip",
        )
    if not path.name.lower().endswith(".gz"):
        check_last_row(path, "\t", header_offset + n_cols, str(path), n_lines=3 + n_cmeta + body.shape[0], frame=body)
    # rows cut short in the middle (pandas would fill them with NaN)
    check_field_counts(path, "\t", header_offset + n_cols, str(path), gz=path.name.lower().endswith(".gz"),
                       n_header_lines=3 + n_cmeta)
    if body.shape[0] != n_rows:
        raise ValueError(f"{path}: found {body.shape[0]} data rows, line 2 declares {n_rows}.")
    if body.shape[1] != header_offset + n_cols:
        raise ValueError(f"{path}: data rows have {body.shape[1]} fields, expected {header_offset + n_cols}.")
    row_ids = body.iloc[:, 0].astype(str).tolist()
    _check_unique(row_ids, "gene (row)", path)
    var = pd.DataFrame({name: body.iloc[:, 1 + j].to_numpy() for j, name in enumerate(rmeta_names)}, index=row_ids)
    block = body.iloc[:, header_offset:]
    bad = [j for j, dt in enumerate(block.dtypes) if not pd.api.types.is_numeric_dtype(dt)]
    if bad:
        col = block.iloc[:, bad[0]]
        ex = col[pd.to_numeric(col, errors="coerce").isna() & col.notna()].astype(str).head(3).tolist()
        raise ValueError(
            f"{path}: the data block holds non-numeric values in {len(bad)} sample column(s), "
            f"e.g. {col_ids[bad[0]]!r}: {ex}."
        )
    X = block.to_numpy(dtype=np.float64).T
    obs = pd.DataFrame(cmeta, index=col_ids)
    return _finish(X, obs, var, path, version, obs_prefix, convert_neg_666, "io.read_gct")


def _meta_strings(values) -> list[str]:
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            out.append(NA_TOKEN)
        else:
            out.append(str(v))
    return out


def _check_writable(adata: ad.AnnData):
    from .._core.validation import get_matrix

    X = get_matrix(adata)
    if hasattr(X, "compute"):
        X = X.compute()
    X = np.asarray(X)
    if not np.issubdtype(X.dtype, np.number):
        raise TypeError(f"adata.X must be numeric to write GCT/GCTX, got dtype {X.dtype}.")
    for what, names in (("obs", adata.obs_names), ("var", adata.var_names)):
        if pd.Index(names).has_duplicates:
            raise ValueError(f"adata.{what}_names are not unique; GCT ids must be unique ({what}_names_make_unique()).")
        bad = [n for n in names if "\t" in str(n) or "\n" in str(n)]
        if bad:
            raise ValueError(f"adata.{what}_names {bad[:3]} contain tabs or newlines, which GCT cannot store.")
    return X


@doc_params(gct_adata=_DOC["gct_adata"], returns_written=RETURNS_WRITTEN)
def write_gct(adata: ad.AnnData, path: str | os.PathLike) -> None:
    """Write AnnData (samples × genes) as GCT 1.3 (genes as rows), gzip-compressed if the name ends in ``.gz``.

    Missing metadata values are written as ``-666`` (the CMap convention), missing
    data values as ``NaN``. The input object is not modified. The file is written to a
    temporary name next to ``path`` and renamed on success, so a failure never leaves a
    half-written file; values GCT cannot hold (tabs or newlines in metadata) are refused
    before anything is written, naming the column and value.

    Parameters
    ----------
    {gct_adata}
    path
        Output ``.gct`` or ``.gct.gz`` file.

    {returns_written}
    >>> expr = ip.datasets.l1000_plate()
    >>> ip.io.write_gct(expr, os.path.join(tempfile.mkdtemp(), "plate.gct"))
    """
    path = Path(path)
    X = _check_writable(adata)
    obs, var = adata.obs, adata.var
    opener = gzip.open if path.name.endswith(".gz") else open
    for df, what in ((obs, "obs"), (var, "var")):
        bad = [c for c in df.columns if "\t" in str(c) or "\n" in str(c) or "\r" in str(c)]
        if bad:
            raise ValueError(f"{path}: adata.{what} column name(s) {bad} contain tabs or newlines, which GCT cannot store "
                             "(nothing was written).")
        dup = sorted({str(c) for c in df.columns if list(map(str, df.columns)).count(str(c)) > 1})
        if dup:
            raise ValueError(f"{path}: adata.{what} has duplicated column name(s) {dup} (nothing was written).")
        for c in df.columns:
            s = df[c]
            if pd.api.types.is_numeric_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype):
                continue
            txt = s.astype(object).dropna().astype(str)
            hit = txt[txt.str.contains("[\t\r\n]", regex=True)]
            if len(hit):
                raise ValueError(
                    f"{path}: adata.{what}[{str(c)!r}] value {hit.iloc[0]!r} (row {hit.index[0]!r}) contains a tab or "
                    "newline, which GCT cannot store: the file could not be read back. Replace them first, e.g. "
                    f"adata.{what}[{str(c)!r}] = adata.{what}[{str(c)!r}].str.replace('\\t', ' ') (nothing was written)."
                )
    if "id" in map(str, var.columns):
        raise ValueError(f"{path}: adata.var has a column named 'id', the GCT header's first field (nothing was written).")
    with atomic_path(path) as tmp, opener(tmp, "wt") as fh:
        fh.write("#1.3\n")
        fh.write(f"{adata.n_vars}\t{adata.n_obs}\t{var.shape[1]}\t{obs.shape[1]}\n")
        fh.write("\t".join(["id", *map(str, var.columns), *map(str, adata.obs_names)]) + "\n")
        na = [NA_TOKEN] * var.shape[1]
        for c in obs.columns:
            fh.write("\t".join([str(c), *na, *_meta_strings(obs[c].tolist())]) + "\n")
        var_str = [_meta_strings(var[c].tolist()) for c in var.columns]
        for j, gene in enumerate(adata.var_names):
            meta = [col[j] for col in var_str]
            vals = ["NaN" if np.isnan(v) else repr(float(v)) for v in X[:, j]]
            fh.write("\t".join([str(gene), *meta, *vals]) + "\n")


def _h5_meta(group, path: Path, what: str) -> pd.DataFrame:
    if "id" not in group:
        raise ValueError(f"{path}: GCTX group {group.name} has no 'id' dataset.")
    cols = {}
    order = group.attrs.get("imgprof_fields")
    keys = [k.decode() if isinstance(k, bytes) else str(k) for k in order] if order is not None else list(group.keys())
    for k in ["id", *[k for k in keys if k != "id"]]:
        if k not in group:
            continue
        arr = group[k][()]
        if arr.dtype.kind == "S":
            arr = np.char.decode(arr, "utf-8").astype(object)
        elif arr.dtype.kind == "O":
            arr = np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr], dtype=object)
        cols[str(k)] = arr
    ids = [str(v) for v in cols.pop("id")]
    _check_unique(ids, what, path)
    df = pd.DataFrame({k: np.asarray(v) for k, v in cols.items()}, index=ids)
    return df


@doc_params(obs_prefix=_DOC["obs_prefix"], convert_neg_666=_DOC["convert_neg_666"])
def read_gctx(path: str | os.PathLike, *, obs_prefix: str | None = None, convert_neg_666: bool = False) -> ad.AnnData:
    """Read a GCTX (HDF5) file, the binary L1000 format, into AnnData (samples × genes).

    Parameters
    ----------
    path
        ``.gctx`` file (layout of cmapPy / CMap: ``/0/DATA/0/matrix``, ``/0/META/COL``, ``/0/META/ROW``).
    {obs_prefix}
    {convert_neg_666}

    Returns
    -------
    AnnData
        Samples × genes, as :func:`read_gct`.

    Examples
    --------
    >>> import imgprof as ip, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "plate.gctx")
    >>> ip.io.write_gctx(ip.datasets.l1000_plate(), p)
    >>> ip.io.read_gctx(p).shape
    (377, 978)
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file.")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path}: not an HDF5 file, so not a GCTX file (a text GCT is read with ip.io.read_gct).")
    try:
        with h5py.File(path, "r") as f:
            for node in (_DATA_NODE, _COL_NODE, _ROW_NODE):
                if node not in f:
                    raise ValueError(f"{path}: GCTX node {node!r} is missing (not a CMap GCTX layout).")
            version = f.attrs.get("version", b"GCTX1.0")
            if isinstance(version, np.ndarray):
                version = version.ravel()[0]
            version = version.decode() if isinstance(version, bytes) else str(version)
            obs = _h5_meta(f[_COL_NODE], path, "sample (column)")
            var = _h5_meta(f[_ROW_NODE], path, "gene (row)")
            X = f[_DATA_NODE][()]
    except OSError as e:
        raise ReadError(f"{path}: not a readable GCTX/HDF5 file ({e}); truncated?", path=path) from e
    if X.shape != (obs.shape[0], var.shape[0]):
        raise ValueError(
            f"{path}: matrix shape {X.shape} does not match {obs.shape[0]} column ids × {var.shape[0]} row ids."
        )
    return _finish(np.asarray(X), obs, var, path, version, obs_prefix, convert_neg_666, "io.read_gctx")


def _h5_write_meta(f, node: str, ids, df: pd.DataFrame) -> None:
    g = f.create_group(node)
    g.create_dataset("id", data=np.array([str(i).encode("utf-8") for i in ids], dtype="S"))
    fields = []
    for c in df.columns:
        name = str(c)
        if name == "id" or "/" in name:
            raise ValueError(f"metadata field name {name!r} cannot be stored in GCTX (reserved or contains '/').")
        s = df[c]
        if pd.api.types.is_bool_dtype(s):
            data = np.array(_meta_strings(s.astype(object).tolist()), dtype="S")
        elif pd.api.types.is_numeric_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype):
            vals = pd.to_numeric(s).astype(float) if s.isna().any() else s.to_numpy()
            data = np.where(pd.isna(vals), -666, vals) if s.isna().any() else np.asarray(vals)
        else:
            data = np.array([v.encode("utf-8") for v in _meta_strings(s.astype(object).tolist())], dtype="S")
        g.create_dataset(name, data=data)
        fields.append(name.encode("utf-8"))
    g.attrs["imgprof_fields"] = np.array(fields, dtype="S") if fields else np.array([], dtype="S1")


@doc_params(gct_adata=_DOC["gct_adata"])
def write_gctx(
    adata: ad.AnnData, path: str | os.PathLike, *, dtype: str | np.dtype | None = None, compression: str | None = None
) -> None:
    """Write AnnData (samples × genes) as GCTX (HDF5, the cmapPy / CMap layout).

    Parameters
    ----------
    {gct_adata}
    path
        Output ``.gctx`` file.
    dtype
        Matrix dtype (default: keep ``adata.X``'s float dtype; cmapPy writes float32).
    compression
        HDF5 compression of the matrix (default none, as cmapPy writes it; ``"gzip"`` for smaller files).

    Returns
    -------
    None
        The file is written to a temporary name next to ``path`` and renamed on success.

    Examples
    --------
    >>> import imgprof as ip, tempfile, os
    >>> ip.io.write_gctx(ip.datasets.l1000_plate(), os.path.join(tempfile.mkdtemp(), "plate.gctx"))
    """
    import h5py

    path = Path(path)
    X = _check_writable(adata)
    X = X.astype(dtype or (X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["version"] = np.bytes_(b"GCTX1.0")
        f.attrs["src"] = str(path)  # the final name, not the temporary one
        f.create_dataset(_DATA_NODE, data=X, compression=compression)
        _h5_write_meta(f, _COL_NODE, adata.obs_names, adata.obs)
        _h5_write_meta(f, _ROW_NODE, adata.var_names, adata.var)
