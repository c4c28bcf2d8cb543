"""L1000 GCT (v1.2 and v1.3) reader and writer.

GCT stores genes as rows and samples as columns; imgprof follows the AnnData
convention (samples = observations), so the matrix is transposed: ``.obs`` holds
the column metadata (``pert_iname``, ``pert_dose``...), ``.var`` the row metadata
(``pr_gene_symbol``...).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._core.provenance import log_step, set_level, uns


def _open(path: Path):
    return gzip.open(path, "rt") if path.name.endswith(".gz") else open(path)


def _coerce(series: pd.Series) -> pd.Series:
    num = pd.to_numeric(series, errors="coerce")
    if num.notna().sum() == series.notna().sum():
        if (num.dropna() % 1 == 0).all():
            return num.astype("Int64") if num.isna().any() else num.astype(np.int64)
        return num
    return series


def read_gct(path: str | os.PathLike, *, obs_prefix: str | None = None) -> ad.AnnData:
    """Read a GCT 1.2/1.3 file (optionally gzip-compressed) into AnnData (samples × genes).

    Parameters
    ----------
    path
        ``.gct`` or ``.gct.gz`` file.
    obs_prefix
        If given (e.g. ``"Metadata_"``), column-metadata names get this prefix so they
        follow the profiling convention; the original names are kept in ``.uns``.

    Examples
    --------
    >>> import imgprof as ip
    >>> expr = ip.datasets.l1000_plate()        # uses read_gct under the hood
    >>> expr.shape
    (377, 978)
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file.")
    with _open(path) as fh:
        version = fh.readline().strip()
        if version not in ("#1.2", "#1.3"):
            raise ValueError(f"{path}: not a GCT file (first line is {version[:20]!r}, expected '#1.2' or '#1.3').")
        dims = fh.readline().rstrip("\n").split("\t")
        try:
            dims_i = [int(x) for x in dims if x.strip()]
        except ValueError as e:
            raise ValueError(f"{path}: line 2 must hold integer dimensions, got {dims!r}.") from e
        if version == "#1.2":
            n_rows, n_cols, n_rmeta, n_cmeta = dims_i[0], dims_i[1], 0, 0
        else:
            if len(dims_i) != 4:
                raise ValueError(f"{path}: GCT 1.3 line 2 must hold 4 integers, got {dims!r}.")
            n_rows, n_cols, n_rmeta, n_cmeta = dims_i
        header = fh.readline().rstrip("\n").split("\t")
        if version == "#1.2":
            header_offset = 2  # Name, Description
            n_rmeta = 1
        else:
            header_offset = 1 + n_rmeta
        col_ids = header[header_offset:]
        if len(col_ids) != n_cols:
            raise ValueError(f"{path}: header has {len(col_ids)} sample columns, line 2 declares {n_cols}.")
        cmeta = {}
        for i in range(n_cmeta):
            parts = fh.readline().rstrip("\n").split("\t")
            if len(parts) != header_offset + n_cols:
                raise ValueError(f"{path}: column-metadata line {4 + i} has {len(parts)} fields, expected {header_offset + n_cols}.")
            cmeta[parts[0]] = parts[header_offset:]
        body = pd.read_csv(fh, sep="\t", header=None, dtype=str, keep_default_na=False)
    if body.shape[0] != n_rows:
        raise ValueError(f"{path}: found {body.shape[0]} data rows, line 2 declares {n_rows}.")
    row_ids = body.iloc[:, 0].astype(str).tolist()
    rmeta_names = header[1:header_offset]
    var = pd.DataFrame({name: body.iloc[:, 1 + j].to_numpy() for j, name in enumerate(rmeta_names)}, index=row_ids)
    try:
        X = body.iloc[:, header_offset:].replace({"NaN": np.nan, "nan": np.nan, "": np.nan}).to_numpy(dtype=np.float64).T
    except ValueError as e:
        raise ValueError(f"{path}: the data block holds non-numeric values ({e}).") from e
    obs = pd.DataFrame(cmeta, index=col_ids)
    for c in obs.columns:
        obs[c] = _coerce(obs[c])
    for c in var.columns:
        var[c] = _coerce(var[c])
    original_obs = list(obs.columns)
    if obs_prefix:
        obs.columns = [f"{obs_prefix}{c}" for c in obs.columns]
    obs.index.name = None
    var.index.name = None
    adata = ad.AnnData(X=X, obs=obs, var=var)
    store = uns(adata)
    store["gct"] = {"version": version, "obs_names_original": original_obs, "var_meta": rmeta_names}
    set_level(adata, "well")
    log_step(adata, "io.read_gct", {"path": str(path), "obs_prefix": obs_prefix})
    return adata


def write_gct(adata: ad.AnnData, path: str | os.PathLike) -> None:
    """Write AnnData (samples × genes) as GCT 1.3 (genes as rows), gzip-compressed if the name ends in ``.gz``.

    Examples
    --------
    >>> import imgprof as ip, tempfile, os
    >>> expr = ip.datasets.l1000_plate()
    >>> ip.io.write_gct(expr, os.path.join(tempfile.mkdtemp(), "plate.gct"))
    """
    path = Path(path)
    X = np.asarray(adata.X)
    obs, var = adata.obs, adata.var
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt") as fh:
        fh.write("#1.3\n")
        fh.write(f"{adata.n_vars}\t{adata.n_obs}\t{var.shape[1]}\t{obs.shape[1]}\n")
        fh.write("\t".join(["id", *map(str, var.columns), *map(str, adata.obs_names)]) + "\n")
        na = ["na"] * var.shape[1]
        for c in obs.columns:
            vals = ["-666" if pd.isna(v) else str(v) for v in obs[c].tolist()]
            fh.write("\t".join([str(c), *na, *vals]) + "\n")
        for j, gene in enumerate(adata.var_names):
            meta = [str(v) for v in var.iloc[j].tolist()]
            vals = ["NaN" if np.isnan(v) else repr(float(v)) for v in X[:, j]]
            fh.write("\t".join([str(gene), *meta, *vals]) + "\n")
