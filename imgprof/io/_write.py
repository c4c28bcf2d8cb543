"""Writers: profiles as a pycytominer-style table (CSV/TSV/parquet) or an AnnData store (h5ad/zarr)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anndata as ad
import pandas as pd

from .._core.docs import doc_params
from .._core.provenance import record
from ._atomic import atomic_path
from ._formats import detect_format

PathLike = str | os.PathLike

#: Schema key of the parquet files :func:`write_profiles` writes (which columns are metadata, the level).
PARQUET_KEY = b"imgprof"


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


#: The formats :func:`write_profiles` writes (names of :func:`imgprof.io._formats.detect_format`).
_WRITABLE = ("csv", "tsv", "parquet", "h5ad", "zarr")


def _format_of(path: Path) -> str:
    try:
        fmt = detect_format(path, look_inside=False)
    except ValueError:
        fmt = ""
    if fmt not in _WRITABLE:
        raise ValueError(
            f"{path}: unknown extension; use .csv, .csv.gz, .tsv, .parquet, .h5ad or .zarr (nothing was written)."
        )
    return fmt


def check_writable(adata: ad.AnnData, path: PathLike, *, layer: str | None = None) -> str:
    """Check, before anything is written, that ``adata`` can be written to ``path`` and read back.

    Parameters
    ----------
    adata
        Profiles to check.
    path
        The file that would be written (its extension gives the format).
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


#: Shared docstring text of the writers: they return nothing, and their examples start alike.
RETURNS_WRITTEN = "Returns\n-------\nNone\n    The file is written.\n\nExamples\n--------\n>>> import imgprof as ip, tempfile, os"


@doc_params(returns_written=RETURNS_WRITTEN)
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

    {returns_written}
    >>> adata = ip.datasets.simulate(n_plates=1, seed=0)
    >>> ip.io.write_profiles(adata, os.path.join(tempfile.mkdtemp(), "profiles.parquet"))
    """
    path = Path(path)
    fmt = check_writable(adata, path, layer=layer)
    if fmt in ("h5ad", "zarr"):
        _write_anndata(adata, path, fmt)
        return
    from .profiles import to_pandas

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
            hint = {"metadata": [str(c) for c in adata.obs.columns], "level": record(adata).level}
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), PARQUET_KEY: json.dumps(hint).encode()})
            pq.write_table(table, tmp)
        else:
            df.to_csv(tmp, sep="\t" if fmt == "tsv" else ",", index=index)
