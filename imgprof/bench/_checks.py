"""Input checks shared by the benchmark metrics (clear errors for bad input)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._core.validation import check_array


def check_embedding(X, *, what: str = "X") -> np.ndarray:
    """2-D finite float array, or a ValueError/TypeError naming ``what`` (see ``_core.validation.check_array``)."""
    if isinstance(X, pd.DataFrame):
        X = X.to_numpy()
    try:
        import scipy.sparse as sp

        if sp.issparse(X):
            X = X.toarray()
    except ImportError:  # pragma: no cover
        pass
    X = check_array(np.asarray(X), param=what, allow_nan=False, min_rows=2, min_cols=1)
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    return X


def check_vector(values, n: int, *, what: str, min_levels: int = 1, context: str = "") -> np.ndarray:
    """1-D array of length ``n`` without missing values and with at least ``min_levels`` distinct values."""
    if isinstance(values, (pd.Series, pd.Index)):
        arr = values.to_numpy()
    else:
        arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}.")
    if arr.shape[0] != n:
        raise ValueError(f"{what} has length {arr.shape[0]} but there are {n} observations{context}; lengths must match.")
    na = pd.isna(arr)
    if na.any():
        raise ValueError(f"{what} has {int(na.sum())} missing value(s) (first at position {int(np.flatnonzero(na)[0])}).")
    n_levels = len(pd.unique(arr))
    if n_levels < min_levels:
        raise ValueError(
            f"{what} has {n_levels} distinct value(s); this metric needs at least {min_levels}"
            f"{' (one batch means there is no batch effect to remove)' if 'batch' in what else ''}."
        )
    return arr


def check_neighbors_n(nn, n: int, *, what: str) -> None:
    if nn.n_samples != n:
        raise ValueError(f"{what} has length {n} but the neighbour graph has {nn.n_samples} observations; lengths must match.")
