"""One validation vocabulary for every public function.

Every check raises an error whose message names the key, column or file at
fault, and what was expected versus what was found (the scikit-learn habit).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .params import check_bool, check_choice, check_float, check_int
from .selection import resolve_rows as resolve_mask  # the one selection resolver, under its older name

__all__ = [
    "as_list",
    "check_adata",
    "check_array",
    "check_bool",
    "check_choice",
    "check_df_keys",
    "check_finite",
    "check_float",
    "check_int",
    "check_key_added",
    "check_new_obs_key",
    "check_numeric",
    "check_obs_keys",
    "finish",
    "get_matrix",
    "is_dask",
    "resolve_mask",
    "start",
]


def as_list(keys: str | Sequence[str] | None) -> list[str]:
    """Return ``keys`` as a list (``None`` → ``[]``, a string → ``[string]``)."""
    if keys is None:
        return []
    if isinstance(keys, str):
        return [keys]
    return list(keys)


def _suggest(missing: str, available: Iterable[str], n: int = 5) -> str:
    import difflib

    close = difflib.get_close_matches(missing, list(map(str, available)), n=n, cutoff=0.6)
    return f" Did you mean {close}?" if close else ""


def check_adata(adata, *, param: str = "adata", var_names: bool = True, min_obs: int = 0) -> None:
    """Check that ``adata`` is an AnnData (and that its feature names are unique).

    Parameters
    ----------
    adata
        The object to check.
    param
        Name of the parameter, used in error messages.
    var_names
        Also refuse duplicated ``adata.var_names`` (steps would mix or drop the duplicated columns).
    min_obs
        Least number of observations needed.

    Returns
    -------
    None

    Raises
    ------
    TypeError
        ``adata`` is not an AnnData (a DataFrame, an array, ``None``...).
    ValueError
        Duplicated feature names, or fewer than ``min_obs`` observations.

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof._core.validation import check_adata
    >>> check_adata(ip.datasets.simulate(n_plates=1, seed=0))
    """
    from anndata import AnnData

    duck = all(hasattr(adata, a) for a in ("obs", "var_names", "n_obs", "X"))  # e.g. aggregate's lazy zarr store
    if not isinstance(adata, AnnData) and not duck:
        hint = ""
        if isinstance(adata, pd.DataFrame):
            hint = " Convert a profile table first: adata = ip.io.from_pandas(df)."
        elif isinstance(adata, np.ndarray):
            hint = " Wrap a matrix first: anndata.AnnData(X)."
        raise TypeError(f"{param} must be an AnnData, got {type(adata).__name__}.{hint}")
    if var_names and adata.var_names.has_duplicates:
        dup = adata.var_names[adata.var_names.duplicated()].unique().tolist()
        raise ValueError(
            f"{param}.var_names has {len(dup)} duplicated feature name(s), e.g. {dup[:5]}; every feature must have "
            "a unique name. Rename or drop them first (adata.var_names_make_unique() keeps all of them)."
        )
    if adata.n_obs < min_obs:
        raise ValueError(f"{param} has {adata.n_obs} observation(s); at least {min_obs} are needed.")


def check_new_obs_key(adata, key: str, *, param: str = "key_added", overwrite: bool = False) -> None:
    """Refuse to replace an existing ``adata.obs`` column unless ``overwrite``.

    Parameters
    ----------
    adata
        The AnnData a result column is written to.
    key
        The column name.
    param
        The parameter that named it.
    overwrite
        Allow replacing an existing column.

    Returns
    -------
    None

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof._core.validation import check_new_obs_key
    >>> check_new_obs_key(ip.datasets.simulate(n_plates=1, seed=0), "leiden")
    """
    if not isinstance(key, str) or not key:
        raise TypeError(f"{param} must be a non-empty string, got {key!r}.")
    if not overwrite and key in adata.obs.columns:
        raise ValueError(
            f"{param}={key!r} is already a column of adata.obs; writing the result there would replace it. "
            "Pick another name or pass overwrite=True."
        )


def check_obs_keys(adata, keys: str | Sequence[str] | None, *, param: str = "keys") -> list[str]:
    """Check that every key is a column of ``adata.obs``; return them as a list.

    Raises
    ------
    KeyError
        Naming the parameter and each missing column, with close matches.
    """
    if not hasattr(adata, "obs"):
        check_adata(adata, var_names=False)  # raises the TypeError saying an AnnData was expected
    keys = as_list(keys)
    missing = [k for k in keys if k not in adata.obs.columns]
    if missing:
        hint = _suggest(missing[0], adata.obs.columns)
        raise KeyError(
            f"{param}: column(s) {missing} not found in adata.obs "
            f"({adata.obs.shape[1]} columns available).{hint}"
        )
    return keys


def check_df_keys(df: pd.DataFrame, keys: str | Sequence[str] | None, *, param: str, where: str) -> list[str]:
    """Like :func:`check_obs_keys` for any DataFrame, ``where`` names it in the message."""
    keys = as_list(keys)
    missing = [k for k in keys if k not in df.columns]
    if missing:
        hint = _suggest(missing[0], df.columns)
        raise KeyError(f"{param}: column(s) {missing} not found in {where}.{hint}")
    return keys


def is_dask(X: Any) -> bool:
    """True when ``X`` is a dask array (without importing dask otherwise)."""
    return type(X).__module__.startswith("dask")


def get_matrix(adata, *, layer: str | None = None, use_rep: str | None = None):
    """Return the matrix a function should work on.

    ``use_rep`` names a key of ``.obsm`` (``"X"`` means ``.X``); ``layer`` names
    a key of ``.layers``. Sparse input is densified (profiles are dense).
    ``adata`` must be an AnnData with unique feature names, and the matrix
    must be numeric (:func:`check_adata`, :func:`check_array`).
    """
    check_adata(adata, var_names=use_rep in (None, "X"))
    if layer is not None and use_rep not in (None, "X"):
        raise ValueError("Pass either layer= or use_rep=, not both.")
    if use_rep not in (None, "X"):
        if use_rep not in adata.obsm:
            raise KeyError(
                f"use_rep={use_rep!r} not found in adata.obsm (available: {list(adata.obsm.keys())})."
            )
        X = adata.obsm[use_rep]
        if isinstance(X, pd.DataFrame):
            X = X.to_numpy()
    elif layer is not None:
        if layer not in adata.layers:
            raise KeyError(f"layer={layer!r} not found in adata.layers (available: {list(adata.layers.keys())}).")
        X = adata.layers[layer]
    else:
        X = adata.X
    if X is None:
        raise ValueError("adata.X is None: this AnnData holds no feature matrix.")
    if getattr(X, "dtype", None) is not None and X.dtype.kind not in "fiub":
        what = f"adata.obsm[{use_rep!r}]" if use_rep not in (None, "X") else f"adata.layers[{layer!r}]" if layer else "adata.X"
        names = None if use_rep not in (None, "X") else list(map(str, adata.var_names))
        check_array(X, param=what, var_names=names, min_rows=0, min_cols=0)
    try:
        import scipy.sparse as sp

        if sp.issparse(X):
            X = X.toarray()
        elif is_dask(X) and sp.issparse(getattr(X, "_meta", None)):
            # e.g. the .X of a sparse zarr store read lazily: dense chunks, computed chunk by chunk
            X = X.map_blocks(lambda b: b.toarray(), dtype=X.dtype, meta=np.empty((0, 0), dtype=X.dtype))
    except ImportError:  # pragma: no cover
        pass
    return X


def check_numeric(X, *, param: str = "adata.X", var_names: Sequence[str] | None = None) -> None:
    """Raise ``TypeError`` unless ``X`` (numpy or dask) has a numeric or boolean dtype.

    The one numeric-dtype check of the package; for numpy object arrays the
    message quotes the first value that is not a number and its column.

    Parameters
    ----------
    X
        numpy or dask array.
    param
        What ``X`` is, in the message.
    var_names
        Column names, to name the column of the offending value.

    Returns
    -------
    None

    Examples
    --------
    >>> import numpy as np
    >>> from imgprof._core.validation import check_numeric
    >>> check_numeric(np.ones((2, 2)))
    """
    if X.dtype.kind in "fiub":
        return
    example = ""
    if not is_dask(X) and bool(getattr(X, "size", 0)):
        flat = np.asarray(X).ravel()
        ncol = X.shape[1] if X.ndim == 2 else 1
        for k in range(min(flat.size, 10000)):
            v = flat[k]
            try:
                float(v)
            except (TypeError, ValueError):
                col = k % ncol
                name = var_names[col] if var_names is not None and X.ndim == 2 else col
                example = f" (e.g. {v!r} in column {name!r})"
                break
    raise TypeError(
        f"{param} must hold numbers, got dtype {X.dtype}{example}. Features must be numeric: "
        "convert them, or move text columns to .obs."
    )


def check_array(
    X,
    *,
    param: str = "adata.X",
    var_names: Sequence[str] | None = None,
    allow_nan: bool = True,
    allow_inf: bool = False,
    min_rows: int = 1,
    min_cols: int = 1,
    check_dask_finite: bool = False,
):
    """The one matrix check (like scikit-learn's ``check_array``), numpy and dask aware.

    Checks that ``X`` is 2-D, numeric (or boolean), has at least ``min_rows``
    rows and ``min_cols`` columns, and holds no inf (and no NaN unless
    ``allow_nan``). Dask arrays get the dtype and shape checks for free; their
    values are scanned only with ``check_dask_finite=True`` (one pass).

    Parameters
    ----------
    X
        numpy/dask array (a DataFrame is converted).
    param
        What ``X`` is, in messages (``"adata.X"``, ``"adata.layers['raw']"``...).
    var_names
        Column names, to name the offending columns.
    allow_nan, allow_inf
        Which non-finite values are acceptable.
    min_rows, min_cols
        Least shape.
    check_dask_finite
        Scan dask arrays for non-finite values too.

    Returns
    -------
    array
        ``X`` (a numpy array unless it was dask).

    Raises
    ------
    TypeError
        Non-numeric dtype (strings, objects), naming an example value and its column.
    ValueError
        Wrong number of dimensions, too few rows/columns, NaN/inf values.

    Examples
    --------
    >>> import numpy as np
    >>> from imgprof._core.validation import check_array
    >>> check_array(np.ones((3, 2))).shape
    (3, 2)
    """
    if isinstance(X, pd.DataFrame):
        X = X.to_numpy()
    dask = is_dask(X)
    if not dask:
        X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{param} must be a 2-D matrix (observations x features), got shape {X.shape}.")
    check_numeric(X, param=param, var_names=var_names)
    if X.shape[0] < min_rows:
        raise ValueError(f"{param} has {X.shape[0]} row(s) (observations); at least {min_rows} needed.")
    if X.shape[1] < min_cols:
        raise ValueError(f"{param} has {X.shape[1]} column(s) (features); at least {min_cols} needed.")
    if X.dtype.kind not in "f" or (allow_nan and allow_inf):
        return X
    if dask:
        if not check_dask_finite:
            return X
        import dask.array as da

        bad = da.isinf(X) if allow_nan else ~da.isfinite(X)
        per_col: np.ndarray | None = np.asarray(bad.sum(axis=0).compute())
    else:
        bad = np.isinf(X) if allow_nan else ~np.isfinite(X)
        per_col = bad.sum(axis=0) if bad.any() else None
    if per_col is not None and per_col.any():
        kind = "inf" if allow_nan else "NaN/inf"
        cols = np.flatnonzero(per_col)
        names = [str(var_names[c]) for c in cols[:5]] if var_names is not None else cols[:5].tolist()
        raise ValueError(
            f"{param} contains {int(per_col.sum())} {kind} value(s) in {len(cols)} column(s), e.g. {names}. "
            "Impute or drop them first (e.g. ip.pp.feature_select(..., operation=['drop_na_columns']))."
        )
    return X


def check_finite(X, *, what: str = "adata.X", var_names: Sequence[str] | None = None, allow_nan: bool = False) -> None:
    """Raise ``ValueError`` if ``X`` holds inf (or NaN unless ``allow_nan``); see :func:`check_array`.

    Dask arrays are not scanned here (callers that stream check per block).
    """
    if not is_dask(X) and np.ndim(X) == 1:
        X = np.asarray(X)[:, None]
    check_array(X, param=what, var_names=var_names, allow_nan=allow_nan, min_rows=0, min_cols=0)


def start(adata, copy: bool, *, param: str = "adata"):
    """Scanpy's copy idiom: return the object to modify.

    Checks that ``adata`` is an AnnData without duplicated feature names, and
    refuses to modify a view in place: anndata views share their arrays (and
    ``.uns``) with the parent, so an in-place step could write through to it.

    Parameters
    ----------
    adata
        The AnnData a step was given.
    copy
        The step's ``copy`` argument.
    param
        Parameter name for error messages.

    Returns
    -------
    AnnData
        A copy when ``copy``, else ``adata`` itself (never a view).

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof._core.validation import start
    >>> adata = ip.datasets.simulate(n_plates=1, seed=0)
    >>> start(adata, copy=True) is adata
    False
    """
    check_adata(adata, param=param)
    if not isinstance(copy, (bool, np.bool_)):
        raise TypeError(f"copy must be True or False, got {copy!r}.")
    if copy:
        return adata.copy()
    if adata.is_view:
        raise ValueError(
            f"{param} is a view of another AnnData (e.g. adata[mask]); modifying it in place could change the parent. "
            "Pass copy=True, or make it an independent object first: sub = adata[mask].copy()."
        )
    return adata


def finish(adata, copy: bool):
    """Return ``adata`` when ``copy`` else ``None``."""
    return adata if copy else None


def check_key_added(container, key: str, *, where: str, overwrite: bool = True) -> None:
    """Refuse to overwrite an existing key unless ``overwrite`` is set."""
    if not overwrite and key in container:
        raise KeyError(f"{where}[{key!r}] already exists; pass a different key_added= or overwrite=True.")
