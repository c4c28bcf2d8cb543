"""DeepProfiler per-site ``.npz`` outputs and generic embedding tables → AnnData.

DeepProfiler writes one ``.npz`` per site (``features/<plate>/<well>_<site>.npz``) holding
``features`` (cells × embedding dimensions), ``metadata`` (a dict: ``Metadata_Plate``,
``Metadata_Well``, ``Metadata_Site``, ``Metadata_Model``...) and sometimes ``locations``
(cell centres). Features are named ``<Metadata_Model>_<i>`` (``cnn_0``, ``efficientnet_0``...),
exactly as pycytominer's ``load_npz_features`` names them.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._core.features import check_unique_columns
from .._core.provenance import log_step
from .._core.validation import as_list

PathLike = str | os.PathLike


def _filename_metadata(path: Path, delimiter: str) -> dict[str, str]:
    """Plate, well and site from a DeepProfiler file name.

    ``<plate>/<well><delimiter><site>.npz`` (pycytominer's layout) or
    ``<plate><delimiter><well><delimiter><site>.npz``; with ``delimiter="/"``,
    ``<plate>/<well>/<site>.npz``.
    """
    if delimiter == "/":
        return {"Metadata_Plate": path.parent.parent.name, "Metadata_Well": path.parent.name, "Metadata_Site": path.stem}
    tokens = path.stem.split(delimiter)
    if len(tokens) < 2:
        return {}
    site, well = tokens[-1], tokens[-2]
    plate = delimiter.join(tokens[:-2]) if len(tokens) > 2 else path.parent.name
    return {"Metadata_Plate": plate, "Metadata_Well": well, "Metadata_Site": site}


def _open_npz(path: Path) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """``features``, ``metadata`` (a dict) and ``locations`` (or ``None``) of one DeepProfiler ``.npz``."""
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes).")
    if not zipfile.is_zipfile(path):  # never unpickle a bare file: an .npz is a zip archive
        raise ValueError(f"{path}: not a readable .npz file (not a zip archive).")
    try:
        # allow_pickle: DeepProfiler stores 'metadata' as a pickled dict (as pycytominer reads it).
        npz = np.load(path, allow_pickle=True)
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e}).") from e
    with npz:
        if "features" not in npz.files:
            raise KeyError(f"{path}: no 'features' array in this .npz (arrays: {npz.files}).")
        X = np.asarray(npz["features"])
        if X.ndim != 2:
            raise ValueError(f"{path}: 'features' must be 2-D (cells × dimensions), got shape {X.shape}.")
        if not np.issubdtype(X.dtype, np.number):
            raise TypeError(f"{path}: 'features' must be numeric, got dtype {X.dtype}.")
        meta: dict = {}
        if "metadata" in npz.files:
            m = npz["metadata"]
            m = m.item() if m.dtype == object and m.shape == () else m
            if not isinstance(m, dict):
                raise TypeError(f"{path}: 'metadata' must hold a dict, got {type(m).__name__}.")
            meta = dict(m)
        locations = np.asarray(npz["locations"]) if "locations" in npz.files else None
    return X, meta, locations


def _load_npz(
    path: Path, *, feature_prefix: str | None, fallback_prefix: str, delimiter: str, parse_filename: bool,
) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    X, meta, locations = _open_npz(path)
    n = X.shape[0]
    cols: dict[str, Any] = {}  # name -> scalar (one value for the file) or array (one per cell)
    for k, v in meta.items():
        name = k if str(k).startswith("Metadata_") else f"Metadata_{k}"
        arr = np.asarray(v)
        if arr.ndim == 0:
            cols[name] = str(arr.item())
        elif arr.shape[0] == n:
            cols[name] = arr.astype(str).astype(object)
        else:
            raise ValueError(f"{path}: metadata field {k!r} has {arr.shape[0]} values for {n} cells.")
    if parse_filename:
        for k, v in _filename_metadata(path, delimiter).items():
            cols.setdefault(k, v)
    if locations is not None:
        if locations.ndim != 2 or locations.shape[0] != n or locations.shape[1] < 2:
            raise ValueError(f"{path}: 'locations' has shape {locations.shape}, expected ({n}, >=2).")
        cols["Metadata_Location_Center_X"] = locations[:, 0]
        cols["Metadata_Location_Center_Y"] = locations[:, 1]
    cols["Metadata_DeepProfiler_File"] = path.name
    prefix = feature_prefix
    if prefix is None:
        model = cols.get("Metadata_Model")
        prefix = str(model if isinstance(model, str) else model[0]) if model is not None and n else fallback_prefix
    names = [f"{prefix}_{i}" for i in range(X.shape[1])]
    return X, cols, names


def _column(parts: list, counts: list[int]) -> np.ndarray:
    """One obs column from per-file scalars/arrays (``None`` where a file lacks the field)."""
    out = []
    for v, n in zip(parts, counts):
        if isinstance(v, np.ndarray):
            out.append(v)
        else:
            out.append(np.full(n, np.nan if v is None else v, dtype=object))
    arr = np.concatenate(out) if out else np.array([], dtype=object)
    return pd.Series(arr).infer_objects().to_numpy() if arr.dtype == object else arr


def _npz_files(path: PathLike | Sequence[PathLike], pattern: str) -> list[Path]:
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder.")
        files = sorted(p.rglob(pattern)) if p.is_dir() else [p]
        if not files:
            raise FileNotFoundError(f"{p}: no file matching {pattern!r} in this folder (searched recursively).")
    else:
        files = [Path(q) for q in path]
        if not files:
            raise ValueError("read_deepprofiler: empty list of files.")
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"{f}: no such file.")
    return files


def read_deepprofiler(
    path: PathLike | Sequence[PathLike],
    *,
    feature_prefix: str | None = None,
    fallback_prefix: str = "DP",
    filename_delimiter: str = "_",
    parse_filename: bool = True,
    pattern: str = "*.npz",
) -> ad.AnnData:
    """Read DeepProfiler single-cell features (``.npz`` per site) into one AnnData.

    Parameters
    ----------
    path
        One ``.npz`` file, a list of them, or a folder searched recursively for ``pattern``
        (files are read in sorted path order and concatenated).
    feature_prefix
        Feature names are ``<prefix>_<i>``. Default: the file's ``Metadata_Model``
        (``cnn_0``, ``efficientnet_0``...), else ``fallback_prefix`` (pycytominer's rule).
    fallback_prefix
        Prefix when the file has no ``Metadata_Model``.
    filename_delimiter
        How plate, well and site are separated in file names (pycytominer's ``filename_delimiter``):
        ``"_"`` for ``<plate>/<well>_<site>.npz`` or ``<plate>_<well>_<site>.npz``,
        ``"/"`` for ``<plate>/<well>/<site>.npz``.
    parse_filename
        Fill ``Metadata_Plate``/``Metadata_Well``/``Metadata_Site`` from the file name when the
        file's own metadata lacks them (the file's values always win).
    pattern
        Glob used inside a folder.

    Returns
    -------
    AnnData, one observation per cell: ``.obs`` holds the file's metadata as strings
    (``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site``, ``Metadata_Model``...),
    ``Metadata_Location_Center_X/Y`` when the file stores locations, and
    ``Metadata_DeepProfiler_File`` (the file name); ``.X`` the embedding;
    ``.var`` anatomy with ``source="embedding"``. Obs names are ``<plate>_<well>_<site>_<i>``.

    Examples
    --------
    >>> import imgprof as ip
    >>> cells = ip.io.read_deepprofiler("Week1_22123_B02_s1.npz")  # doctest: +SKIP
    >>> cells.shape, cells.var_names[0]  # doctest: +SKIP
    ((206, 50), 'cnn_0')
    """
    files = _npz_files(path, pattern)
    Xs: list[np.ndarray] = []
    metas: list[dict[str, Any]] = []
    obs_names: list[str] = []
    names0: list[str] = []
    first: Path | None = None
    for f in files:
        X, cols, names = _load_npz(
            f, feature_prefix=feature_prefix, fallback_prefix=fallback_prefix, delimiter=filename_delimiter,
            parse_filename=parse_filename,
        )
        if first is None:
            names0, first = names, f
        elif names != names0:
            raise ValueError(
                f"{f}: {len(names)} features named {names[0]!r}... but {first} has {len(names0)} named {names0[0]!r}...; "
                "files from different models cannot be concatenated."
            )
        ids = [cols.get(c) for c in ("Metadata_Plate", "Metadata_Well", "Metadata_Site")]
        key = "_".join(str(v if isinstance(v, str) else v[0]) for v in ids if v is not None and X.shape[0])
        obs_names.extend(f"{key or f.stem}_{i}" for i in range(X.shape[0]))
        Xs.append(X)
        metas.append(cols)
    counts = [x.shape[0] for x in Xs]
    order = list(dict.fromkeys(k for m in metas for k in m))
    obs = pd.DataFrame({k: _column([m.get(k) for m in metas], counts) for k in order})
    obs.index = pd.Index(obs_names)
    if obs.index.has_duplicates:
        obs.index = [f"{i}_{j}" for j, i in enumerate(obs.index)]
    X = np.vstack(Xs)
    if X.shape[0] == 0:
        raise ValueError(f"{path}: the file(s) hold no cell (0 rows).")
    from .profiles import from_parts

    check_unique_columns([*map(str, obs.columns), *names0], source=str(path))
    adata = from_parts(obs, X, names0, [str(X.dtype)] * len(names0), level="single_cell", source=str(path))
    log_step(
        adata, "io.read_deepprofiler",
        {"path": [str(f) for f in files] if len(files) > 1 else str(files[0]), "feature_prefix": feature_prefix,
         "filename_delimiter": filename_delimiter, "parse_filename": parse_filename},
        n_files=len(files),
    )
    return adata


def read_embeddings(
    data: pd.DataFrame | np.ndarray | PathLike,
    *,
    obs: pd.DataFrame | None = None,
    features: Sequence[str] | None = None,
    prefix: str | None = None,
    metadata: Sequence[str] | None = None,
    level: str | None = None,
) -> ad.AnnData:
    """Read a generic embedding table (any model's per-cell or per-well vectors) into AnnData.

    Parameters
    ----------
    data
        A DataFrame (metadata + embedding columns), a path read like
        :func:`~imgprof.io.read_profiles` (CSV/TSV/parquet), or a 2-D array (then ``obs`` gives
        the metadata).
    obs
        Metadata for an array input (one row per embedding row).
    features
        Embedding columns. Default: columns starting with ``prefix`` when given, else every
        column not starting with ``Metadata_``.
    prefix
        Embedding column prefix (``"emb"`` matches ``emb_0``, ``emb_1``...). For an array or a
        DataFrame with integer column labels, columns are named ``<prefix>_<i>`` (default ``emb``).
    metadata
        Metadata columns (default: every column that is not a feature).
    level
        Profile level (guessed by :func:`~imgprof.io.from_pandas` when ``None``).

    Returns
    -------
    AnnData
        Embedding vectors in ``.X`` (``.var`` source ``"embedding"``), metadata in ``.obs``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, imgprof as ip
    >>> meta = pd.DataFrame({"Metadata_Well": ["A01", "A02", "A03"]})
    >>> emb = ip.io.read_embeddings(np.eye(3, 4), obs=meta, prefix="dino")
    >>> list(emb.var_names), emb.var["source"].iloc[0]
    (['dino_0', 'dino_1', 'dino_2', 'dino_3'], 'embedding')
    """
    from .profiles import from_pandas

    if isinstance(data, np.ndarray):
        df, features, metadata = _frame_from_array(data, obs, prefix)
    elif isinstance(data, pd.DataFrame):
        if obs is not None:
            raise ValueError("read_embeddings: obs= is only for array input; a DataFrame carries its own metadata.")
        df, features = _name_integer_columns(data, prefix, features, metadata)
    else:
        return _read_embedding_file(Path(data), features=features, prefix=prefix, metadata=metadata, level=level)
    if features is None and prefix is not None:
        features = [c for c in df.columns if str(c).startswith(prefix)]
        if not features:
            raise ValueError(f"read_embeddings: no column starts with prefix={prefix!r}.")
    adata = from_pandas(df, metadata=metadata, features=as_list(features) if features is not None else None,
                        level=level, source="embeddings", require_metadata=False)
    log_step(adata, "io.read_embeddings", {"prefix": prefix, "n_features": adata.n_vars})
    return adata


def _frame_from_array(
    data: np.ndarray, obs: pd.DataFrame | None, prefix: str | None,
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """An array of embeddings and its metadata → one frame, the feature and the metadata columns."""
    if data.ndim != 2:
        raise ValueError(f"read_embeddings: expected a 2-D array, got shape {data.shape}.")
    p = prefix or "emb"
    emb = pd.DataFrame(data, columns=[f"{p}_{i}" for i in range(data.shape[1])])
    if obs is None:
        obs = pd.DataFrame(index=range(data.shape[0]))
    if len(obs) != data.shape[0]:
        raise ValueError(f"read_embeddings: obs has {len(obs)} rows, the array {data.shape[0]}.")
    clash = [c for c in emb.columns if c in obs.columns]
    if clash:
        raise ValueError(f"read_embeddings: obs already has column(s) {clash[:5]}; pass another prefix=.")
    emb.index = obs.index
    return pd.concat([obs, emb], axis=1), list(emb.columns), list(obs.columns)


def _name_integer_columns(
    df: pd.DataFrame, prefix: str | None, features: Sequence[str] | None, metadata: Sequence[str] | None,
) -> tuple[pd.DataFrame, Sequence[str] | None]:
    """Integer column labels become ``<prefix>_<i>`` (and the features, unless columns were chosen)."""
    non_str = [c for c in df.columns if not isinstance(c, str)]
    if non_str:
        p = prefix or "emb"
        df = df.rename(columns={c: f"{p}_{c}" for c in non_str})
        if features is None and metadata is None:
            features = [f"{p}_{c}" for c in non_str]
    return df, features


def _file_columns(path: Path) -> list[str]:
    if path.name.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as e:  # pyarrow raises several types for unreadable input
            raise ValueError(f"{path}: not a readable parquet file ({type(e).__name__}: {e}).") from e
    from .profiles import sep_for, sniff_header

    return list(sniff_header(path, sep_for(path)))


def _read_embedding_file(
    path: Path, *, features: Sequence[str] | None, prefix: str | None, metadata: Sequence[str] | None, level: str | None,
) -> ad.AnnData:
    from .profiles import read_profiles

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file.")
    if features is None and prefix is not None:
        features = [c for c in _file_columns(path) if c.startswith(prefix)]
        if not features:
            raise ValueError(f"{path}: no column starts with prefix={prefix!r}.")
    adata = read_profiles(path, metadata=metadata, features=features, level=level, require_metadata=False)
    log_step(adata, "io.read_embeddings", {"path": str(path), "prefix": prefix})
    return adata
