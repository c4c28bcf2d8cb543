"""Checks and bookkeeping shared by the ``ip.tl`` integration methods.

Every integration wrapper runs :func:`prepare` first: it checks the batch
column, the representation and its finiteness and returns plain numpy inputs,
so that bad input fails with a clear message before any heavy import or
computation starts. :func:`store` writes the result and logs the step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .._core.provenance import log_step
from .._core.validation import check_adata, check_array, check_obs_keys, get_matrix, is_dask


def check_batches(adata, batch_key: str | None, *, min_per_batch: int = 2, param: str = "batch_key") -> tuple[np.ndarray, list[str]]:
    """Validate ``adata.obs[batch_key]`` and return integer codes and level names.

    Raises
    ------
    ValueError
        If ``batch_key`` is None, has missing values, only one level, or a
        level with fewer than ``min_per_batch`` observations.
    KeyError
        If the column does not exist.
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
    cat = pd.Categorical(col.astype(str)) if not isinstance(col.dtype, pd.CategoricalDtype) else col.cat.remove_unused_categories().values
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


def get_rep(adata, use_rep: str | None, *, param: str = "use_rep") -> np.ndarray:
    """The matrix to integrate, as a finite in-memory float array.

    ``use_rep="X"`` (or None) is ``adata.X``; any other value is a key of
    ``adata.obsm``. Dask arrays are computed (integration needs all rows).
    """
    try:
        X = get_matrix(adata, use_rep=use_rep)
    except KeyError as e:
        hint = " Run ip.tl.pca(adata) first." if use_rep == "X_pca" else ""
        raise KeyError(f"{param}: {e.args[0]}{hint}") from None
    if is_dask(X):
        X = X.compute()
    what = "adata.X" if use_rep in (None, "X") else f"adata.obsm[{use_rep!r}]"
    var_names = list(map(str, adata.var_names)) if use_rep in (None, "X") else None
    # the one matrix check: 2-D, numeric, finite (names the offending columns)
    X = check_array(X, param=what if use_rep in (None, "X") else f"{param}={use_rep!r}", var_names=var_names,
                    allow_nan=False, min_rows=1, min_cols=1)
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    if X.shape[1] < 2:
        raise ValueError(f"{what} has {X.shape[1]} column(s); integration needs at least 2.")
    return X


def prepare(adata, batch_key: str | None, use_rep: str | None, *, min_per_batch: int = 2, add_layer: bool = False):
    """Validate batches and representation; return ``(X, codes, levels)``."""
    if add_layer and use_rep not in (None, "X"):
        raise ValueError(
            f"add_layer=True stores a corrected feature matrix, which needs use_rep='X' (got use_rep={use_rep!r})."
        )
    check_adata(adata)
    if adata.n_obs == 0:
        raise ValueError("adata has 0 observations; nothing to integrate.")
    codes, levels = check_batches(adata, batch_key, min_per_batch=min_per_batch)
    X = get_rep(adata, use_rep)
    return X, codes, levels


def store(
    adata,
    Y: np.ndarray,
    *,
    key_added: str,
    function: str,
    params: dict[str, Any],
    use_rep: str | None,
    add_layer: bool = False,
    kind: str | None = None,
    **extra: Any,
) -> None:
    """Write ``Y`` to ``adata.obsm[key_added]`` (and ``.layers`` on request) and log the step.

    ``add_layer=True`` also stores ``Y`` as ``adata.layers[key_added]`` when it
    is a corrected feature matrix (``use_rep="X"`` and one column per feature),
    so ``ip.io.to_pandas(adata, layer=key_added)`` exports it with feature names.
    """
    Y = np.asarray(Y)
    if Y.shape[0] != adata.n_obs:
        raise RuntimeError(f"internal error: result has {Y.shape[0]} rows for {adata.n_obs} observations.")
    adata.obsm[key_added] = Y
    if kind is None:
        kind = "features" if (use_rep in (None, "X") and Y.shape[1] == adata.n_vars) else "embedding"
    if add_layer:
        if kind != "features":
            raise ValueError(
                f"add_layer=True needs a corrected feature matrix (use_rep='X' and {adata.n_vars} columns); "
                f"this result is an embedding with {Y.shape[1]} columns and stays in adata.obsm[{key_added!r}]."
            )
        adata.layers[key_added] = Y
    log_step(adata, function, params, key_added=key_added, kind=kind, n_columns=int(Y.shape[1]), **extra)
