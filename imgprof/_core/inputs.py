"""Checks of per-observation vectors (batch, labels) and embeddings, shared by ``ip.tl`` and ``ip.bench``.

Matrices go through :func:`imgprof._core.validation.check_array` (the one matrix
check); these add what batch correction and benchmarking need on top: a batch
column with at least two well-populated levels, a label vector of the right
length without missing values, an embedding as a finite floating array.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .validation import check_array, check_obs_keys

__all__ = ["check_batches", "check_embedding", "check_vector"]


def check_batches(adata: Any, batch_key: str | None, *, min_per_batch: int = 2,
                  param: str = "batch_key") -> tuple[np.ndarray, list[str]]:
    """Validate ``adata.obs[batch_key]`` and return integer codes and level names.

    Parameters
    ----------
    adata
        The AnnData.
    batch_key
        ``adata.obs`` column with the batch.
    min_per_batch
        Fewest observations a batch may have.
    param
        Parameter name used in messages.

    Returns
    -------
    tuple
        ``(codes, levels)``: integer code of every observation and the level names.

    Raises
    ------
    ValueError
        If ``batch_key`` is None, has missing values, only one level, or a
        level with fewer than ``min_per_batch`` observations.
    KeyError
        If the column does not exist.

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof._core.inputs import check_batches
    >>> codes, levels = check_batches(ip.datasets.cmqtl_crispri(), "Metadata_Batch")
    >>> len(levels) > 1
    True
    """
    if batch_key is None:
        raise ValueError(f"{param} is required: name the adata.obs column that holds the batch (e.g. 'Metadata_Batch').")
    check_obs_keys(adata, batch_key, param=param)
    col = adata.obs[batch_key]
    missing = int(col.isna().sum())
    if missing:
        raise ValueError(
            f"{param}={batch_key!r}: {missing} observation(s) have no batch label (NaN). "
            "Label them or remove them before integration."
        )
    if isinstance(col.dtype, pd.CategoricalDtype):
        cat = col.cat.remove_unused_categories().values
    else:
        cat = pd.Categorical(col.astype(str))
    levels = [str(c) for c in cat.categories]
    if len(levels) < 2:
        raise ValueError(
            f"{param}={batch_key!r} has a single level ({levels[0]!r} for all {adata.n_obs} observations): "
            "there is nothing to integrate. Use a column with at least two batches."
        )
    codes = np.asarray(cat.codes, dtype=np.int64)
    counts = np.bincount(codes, minlength=len(levels))
    small = [f"{levels[i]!r} (n={int(counts[i])})" for i in np.flatnonzero(counts < min_per_batch)]
    if small:
        raise ValueError(
            f"{param}={batch_key!r}: batch(es) {small[:10]} have fewer than {min_per_batch} observations; "
            "integration needs at least that many per batch. Merge or drop those batches first."
        )
    return codes, levels


def check_embedding(X: Any, *, what: str = "X") -> np.ndarray:
    """A 2-D finite floating array (at least 2 rows), or an error naming ``what``.

    Parameters
    ----------
    X
        Array, sparse matrix or DataFrame.
    what
        Name used in messages (``"adata.obsm['X_pca']"``).

    Returns
    -------
    numpy.ndarray
        ``X`` as a dense floating array (float64 unless already floating).

    Examples
    --------
    >>> import numpy as np
    >>> from imgprof._core.inputs import check_embedding
    >>> check_embedding(np.eye(3, dtype=int)).dtype
    dtype('float64')
    """
    if isinstance(X, pd.DataFrame):
        X = X.to_numpy()
    import scipy.sparse as sp

    if sp.issparse(X):
        X = X.toarray()
    X = check_array(np.asarray(X), param=what, allow_nan=False, min_rows=2, min_cols=1)
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    return X


def check_vector(values: Any, n: int, *, what: str, min_levels: int = 1, context: str = "") -> np.ndarray:
    """A 1-D array of length ``n`` without missing values and with at least ``min_levels`` distinct values.

    Parameters
    ----------
    values
        Labels or batches (array, Series, Index, or an ``(n, 1)`` array).
    n
        Expected length.
    what
        Name used in messages.
    min_levels
        Fewest distinct values.
    context
        Appended to the length message.

    Returns
    -------
    numpy.ndarray
        The values as a 1-D array.

    Examples
    --------
    >>> from imgprof._core.inputs import check_vector
    >>> check_vector(["a", "b", "a"], 3, what="labels", min_levels=2).tolist()
    ['a', 'b', 'a']
    """
    arr = values.to_numpy() if isinstance(values, (pd.Series, pd.Index)) else np.asarray(values)
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
