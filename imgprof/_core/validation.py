"""One validation vocabulary for every public function.

Every check raises an error whose message names the key, column or file at
fault, and what was expected versus what was found (the scikit-learn habit).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd


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


def check_obs_keys(adata, keys: str | Sequence[str] | None, *, param: str = "keys") -> list[str]:
    """Check that every key is a column of ``adata.obs``; return them as a list.

    Raises
    ------
    KeyError
        Naming the parameter and each missing column, with close matches.
    """
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
    """
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


def check_finite(X, *, what: str = "adata.X", var_names: Sequence[str] | None = None, allow_nan: bool = False) -> None:
    """Raise ``ValueError`` if ``X`` holds inf (or NaN unless ``allow_nan``).

    The message counts the bad entries and names up to five offending columns.
    Dask arrays are checked lazily only when small enough to be cheap; callers
    that stream handle finiteness per block.
    """
    if is_dask(X):
        return
    X = np.asarray(X)
    if not np.issubdtype(X.dtype, np.number):
        raise TypeError(f"{what} must be numeric, got dtype {X.dtype}.")
    bad = ~np.isfinite(X) if not allow_nan else np.isinf(X)
    if bad.any():
        kind = "inf" if allow_nan else "NaN/inf"
        n = int(bad.sum())
        cols = np.flatnonzero(bad.any(axis=0)) if X.ndim == 2 else np.array([], dtype=int)
        names = [str(var_names[c]) for c in cols[:5]] if var_names is not None else cols[:5].tolist()
        raise ValueError(
            f"{what} contains {n} {kind} value(s) in {len(cols)} column(s), e.g. {names}. "
            "Impute or drop them first (e.g. ip.pp.feature_select(..., operation=['drop_na_columns']))."
        )


def resolve_mask(adata, selection, *, param: str = "controls", allow_empty: bool = False) -> np.ndarray:
    """Turn a selection of observations into a boolean mask.

    ``selection`` may be ``None`` (all rows), a pandas query string evaluated on
    ``adata.obs`` (e.g. ``"Metadata_control_type == 'negcon'"``), a boolean
    array/Series of length ``n_obs``, or a list of obs names.
    """
    n = adata.n_obs
    if selection is None:
        return np.ones(n, dtype=bool)
    if isinstance(selection, str):
        obs = adata.obs
        # pandas' eval builds a Series for every column of the frame it runs on; run it on the
        # columns the query names (any column whose name occurs in the text), the whole frame if that fails
        named = [c for c in obs.columns if isinstance(c, str) and c in selection]
        mask = None
        if 0 < len(named) < obs.shape[1]:
            try:
                mask = obs.loc[:, named].eval(selection)
            except Exception:  # noqa: BLE001 - retried on the whole frame, which reports the error
                mask = None
        if mask is None:
            try:
                mask = obs.eval(selection)
            except Exception as e:  # pandas raises many types here
                raise ValueError(f"{param}={selection!r} could not be evaluated on adata.obs: {e}") from e
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"{param}={selection!r} did not evaluate to one boolean per observation.")
    elif isinstance(selection, (pd.Series, np.ndarray)) and np.asarray(selection).dtype == bool:
        mask = np.asarray(selection, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"{param}: boolean mask has length {mask.shape[0]}, expected n_obs={n}.")
    else:
        names = pd.Index(as_list(selection) if not isinstance(selection, str) else [selection])
        missing = names.difference(adata.obs_names)
        if len(missing):
            raise KeyError(f"{param}: observation names {list(missing[:5])} not in adata.obs_names.")
        mask = adata.obs_names.isin(names)
    if not allow_empty and not mask.any():
        raise ValueError(f"{param}={selection!r} selects no observation (0 of {n} rows match).")
    return mask


def start(adata, copy: bool):
    """Scanpy's copy idiom: return the object to modify."""
    return adata.copy() if copy else adata


def finish(adata, copy: bool):
    """Return ``adata`` when ``copy`` else ``None``."""
    return adata if copy else None


def check_key_added(container, key: str, *, where: str, overwrite: bool = True) -> None:
    """Refuse to overwrite an existing key unless ``overwrite`` is set."""
    if not overwrite and key in container:
        raise KeyError(f"{where}[{key!r}] already exists; pass a different key_added= or overwrite=True.")
