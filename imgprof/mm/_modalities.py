"""Modalities of a MuData (or a ``{name: AnnData}`` dict): checks and paired matrices.

Private module shared by :mod:`imgprof.mm.crossmodal`, :mod:`imgprof.mm.compare`
and :mod:`imgprof.pl.mm`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np

from .._core.validation import get_matrix, is_dask


def dense_float(X: Any) -> np.ndarray:
    """A float64 numpy array (a dask array is computed)."""
    if is_dask(X):
        X = X.compute()
    return np.asarray(X, dtype=np.float64)


def two_mods(mdata: Any, mods: Sequence[str] | None) -> tuple[str, str]:
    """The two modality names to use (checked against ``mdata``)."""
    if not hasattr(mdata, "mod") or not isinstance(getattr(mdata, "mod", None), Mapping):
        raise TypeError(
            f"mdata must be a MuData with two modalities (from ip.mm.join), got {type(mdata).__name__}."
        )
    names = list(mdata.mod.keys())
    mods = tuple(mods) if mods is not None else tuple(names)
    if len(mods) != 2:
        raise ValueError(f"mods: give exactly two modalities, got {list(mods)} (available: {names}).")
    missing = [m for m in mods if m not in mdata.mod]
    if missing:
        raise KeyError(f"mods: modality {missing} not in mdata (available: {names}).")
    return mods[0], mods[1]


def paired(mdata: Any, mods: Sequence[str] | None, use_rep: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The two modalities' matrices, rows in the same (shared) observation order, finite."""
    a, b = two_mods(mdata, mods)
    A, B = mdata[a], mdata[b]
    if A.n_obs != B.n_obs or set(A.obs_names) != set(B.obs_names):
        raise ValueError(
            f"{a} and {b} do not share their observations ({A.n_obs} vs {B.n_obs}, "
            f"{len(set(A.obs_names) & set(B.obs_names))} in common): cross-modal pairing needs a paired join, "
            "ip.mm.join(..., level='perturbation') or level='well' with paired=True."
        )
    names = list(A.obs_names)
    X = dense_float(get_matrix(A, use_rep=use_rep))
    Y = dense_float(get_matrix(B[names], use_rep=use_rep))
    for M, m in ((X, a), (Y, b)):
        if not np.isfinite(M).all():
            raise ValueError(f"{m}: the profiles contain NaN/inf; impute or drop those features first.")
    return X, Y, names


def per_mod(value: Any, mods: Sequence[str], what: str) -> dict:
    """One value per modality: a mapping, a sequence of one per modality, or one value for all."""
    if isinstance(value, Mapping):
        missing = [m for m in mods if m not in value]
        if missing:
            raise KeyError(f"{what}: no entry for modality {missing} (got {list(value)}).")
        return {m: value[m] for m in mods}
    if isinstance(value, (tuple, list)) and len(value) == len(mods) and not isinstance(value, str):
        return dict(zip(mods, value))
    return dict.fromkeys(mods, value)


def as_mods(data: Any, mods: Sequence[str] | None) -> dict[str, ad.AnnData]:
    """``{name: AnnData}`` of a MuData or a dict, restricted to ``mods``."""
    if isinstance(data, Mapping):
        out = dict(data)
    elif hasattr(data, "mod"):
        out = dict(data.mod)
    else:
        raise TypeError(f"expected a MuData or a dict of AnnData, got {type(data).__name__}.")
    if mods is not None:
        missing = [m for m in mods if m not in out]
        if missing:
            raise KeyError(f"mods: modality {missing} not found (available: {list(out)}).")
        out = {m: out[m] for m in mods}
    for m, x in out.items():
        if not isinstance(x, ad.AnnData):
            raise TypeError(f"modality {m!r}: expected an AnnData, got {type(x).__name__}.")
    return out
