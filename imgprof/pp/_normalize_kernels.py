"""Array kernels of ``ip.pp.normalize``: numpy and dask, chosen by :func:`functools.singledispatch`.

Each kernel is a generic function whose default implementation takes numpy
arrays and whose :class:`DaskArray` implementation builds the same computation
lazily (per-group statistics reduced with dask, transforms through
``map_blocks``). :class:`DaskArray` is a virtual base class matched on the
array's class, so neither ``import imgprof`` nor these registrations import dask.
"""

from __future__ import annotations

import warnings
from functools import singledispatch
from typing import Any

import numpy as np

from .._core.dispatch import DaskArray
from .._core.groups import sort_groups

__all__ = [
    "BOUNDS_THRESHOLD",
    "DaskArray",
    "apply_inverse_normal",
    "as_float64",
    "assemble",
    "center_scale",
    "group_quantiles",
    "inverse_normal",
]

#: scikit-learn's ``QuantileTransformer`` bound threshold.
BOUNDS_THRESHOLD = 1e-7


# ----------------------------------------------------------------------------------------------
# float64 input
# ----------------------------------------------------------------------------------------------
@singledispatch
def as_float64(X: Any) -> Any:
    """``X`` as float64 (no copy when it already is)."""
    return np.asarray(X).astype(np.float64, copy=False)


@as_float64.register(DaskArray)
def _(X: Any) -> Any:
    return X.astype(np.float64) if X.dtype != np.float64 else X


# ----------------------------------------------------------------------------------------------
# per-group quantiles of the reference rows
# ----------------------------------------------------------------------------------------------
@singledispatch
def group_quantiles(X: Any, fit_codes: np.ndarray, n_groups: int, qs: list[np.ndarray]) -> list[np.ndarray]:
    """``nanpercentile(X[reference rows of g], qs[g], axis=0)`` for every group ``g`` (``(len(qs[g]), p)`` each).

    Rows with code ``-1`` are not references. All-NaN columns give NaN (the caller checks them).
    """
    order, starts = sort_groups(fit_codes, n_groups)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns checked by the caller
        for g in range(n_groups):
            Xg = X[order[starts[g] : starts[g + 1]]]
            f = np.nanpercentile if np.isnan(Xg).any() else np.percentile
            out.append(np.atleast_2d(f(Xg, qs[g], axis=0)))
    return out


def _percentile_block(block: Any, q: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.atleast_2d(np.nanpercentile(np.asarray(block, dtype=np.float64), q, axis=0))


@group_quantiles.register(DaskArray)
def _(X: Any, fit_codes: np.ndarray, n_groups: int, qs: list[np.ndarray]) -> list[np.ndarray]:
    # one task per (group, column block); all groups computed together
    import dask

    order, starts = sort_groups(fit_codes, n_groups)
    parts = []
    for g in range(n_groups):
        rows = np.sort(order[starts[g] : starts[g + 1]])
        Xg = X[rows].rechunk({0: -1})
        parts.append(Xg.map_blocks(_percentile_block, q=qs[g], chunks=((len(qs[g]),), Xg.chunks[1]), dtype=np.float64))
    return [np.asarray(p) for p in dask.compute(*parts)]


# ----------------------------------------------------------------------------------------------
# (x - center) / scale, per group
# ----------------------------------------------------------------------------------------------
@singledispatch
def center_scale(X: Any, codes: np.ndarray, C: np.ndarray, S: np.ndarray) -> Any:
    """``(X - C[codes]) / S[codes]`` (``C``, ``S``: ``(n_groups, p)``) without gathered ``n x p`` temporaries."""
    if C.shape[0] == 1:
        out = np.subtract(X, C[0])
        out /= S[0]
        return out
    # one group's run of rows at a time when the rows are grouped, else blocks of rows small
    # enough to stay in cache
    out = np.empty(X.shape, dtype=np.result_type(X.dtype, C.dtype, S.dtype))
    codes = np.asarray(codes)
    if codes.size and codes[0] >= 0 and (codes[1:] >= codes[:-1]).all():
        bounds = np.flatnonzero(np.diff(codes)) + 1
        for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [codes.size]])):
            g = codes[a]
            np.subtract(X[a:b], C[g], out=out[a:b])
            out[a:b] /= S[g]
        return out
    step = max(1, (1 << 17) // max(X.shape[1], 1))
    for a in range(0, codes.size, step):
        c = codes[a : a + step]
        np.subtract(X[a : a + step], C[c], out=out[a : a + step])
        out[a : a + step] /= S[c]
    return out


def _center_scale_block(x: Any, c: Any, C: np.ndarray, S: np.ndarray) -> np.ndarray:
    cc = np.asarray(c)[:, 0]
    x = np.asarray(x, dtype=np.float64)
    if C.shape[0] == 1:
        return (x - C[0]) / S[0]
    return (x - C[cc]) / S[cc]


@center_scale.register(DaskArray)
def _(X: Any, codes: np.ndarray, C: np.ndarray, S: np.ndarray) -> Any:
    import dask.array as da

    cd = da.from_array(codes, chunks=(X.chunks[0],))[:, None]
    Cd = da.from_array(C, chunks=(C.shape[0], X.chunks[1]))
    Sd = da.from_array(S, chunks=(S.shape[0], X.chunks[1]))
    return da.map_blocks(_center_scale_block, X, cd, Cd, Sd, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# inverse normal transform
# ----------------------------------------------------------------------------------------------
def apply_inverse_normal(X: np.ndarray, quantiles: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Map ``X`` through fitted quantiles onto a standard normal, column by column.

    scikit-learn's ``QuantileTransformer(output_distribution="normal").transform``:
    interpolation both ways (ties averaged), bounds clipped at :data:`BOUNDS_THRESHOLD`.
    """
    from scipy.special import ndtri  # what scipy.stats.norm.ppf calls

    X = np.array(X, dtype=np.float64, copy=True)
    for j in range(X.shape[1]):
        col = X[:, j]
        qj = quantiles[:, j]
        lo, hi = qj[0], qj[-1]
        with np.errstate(invalid="ignore"):
            low_idx = col - BOUNDS_THRESHOLD < lo
            high_idx = col + BOUNDS_THRESHOLD > hi
        finite = ~np.isnan(col)
        xf = col[finite]
        col[finite] = 0.5 * (np.interp(xf, qj, references) - np.interp(-xf, -qj[::-1], -references[::-1]))
        col[high_idx] = 1.0
        col[low_idx] = 0.0
        X[:, j] = col
    with np.errstate(invalid="ignore", divide="ignore"):
        X = ndtri(X)
    clip_min = ndtri(BOUNDS_THRESHOLD - np.spacing(1))
    clip_max = ndtri(1 - (BOUNDS_THRESHOLD - np.spacing(1)))
    return np.clip(X, clip_min, clip_max)


@singledispatch
def inverse_normal(X: Any, codes: np.ndarray, qs: list[np.ndarray], refs: list[np.ndarray]) -> Any:
    """:func:`apply_inverse_normal` with group ``g``'s quantiles ``qs[g]``/``refs[g]`` on its rows."""
    n_groups = len(qs)
    if n_groups == 1:
        return apply_inverse_normal(X, qs[0], refs[0])
    out = np.empty(X.shape, dtype=np.float64)
    order, starts = sort_groups(codes, n_groups)
    for g in range(n_groups):
        rows = order[starts[g] : starts[g + 1]]
        out[rows] = apply_inverse_normal(X[rows], qs[g], refs[g])
    return out


def _inverse_normal_block(x: Any, c: Any, qs: list[np.ndarray], refs: list[np.ndarray]) -> np.ndarray:
    cc = np.asarray(c)[:, 0]
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for g in np.unique(cc):
        rows = cc == g
        out[rows] = apply_inverse_normal(x[rows], qs[g], refs[g])
    return out


@inverse_normal.register(DaskArray)
def _(X: Any, codes: np.ndarray, qs: list[np.ndarray], refs: list[np.ndarray]) -> Any:
    import dask.array as da

    cd = da.from_array(codes, chunks=(X.chunks[0],))[:, None]
    # quantiles are tiny compared with X: pass them whole, slice per column block
    offsets = np.concatenate([[0], np.cumsum(X.chunks[1])])

    def block(x: Any, c: Any, block_info: Any = None) -> np.ndarray:
        j = block_info[0]["chunk-location"][1]
        sl = slice(offsets[j], offsets[j + 1])
        return _inverse_normal_block(x, c, [q[:, sl] for q in qs], refs)

    return da.map_blocks(block, X, cd, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# normalized columns back among the untouched ones (features=)
# ----------------------------------------------------------------------------------------------
@singledispatch
def assemble(X_in: Any, cols: np.ndarray, result: Any, in_dtype: np.dtype) -> Any:
    """``X_in`` with columns ``cols`` replaced by ``result`` (float32 input stays float32)."""
    out_dtype = np.float32 if in_dtype == np.float32 else np.float64
    out = np.array(X_in, dtype=out_dtype, copy=True)
    out[:, cols] = result
    return out


@assemble.register(DaskArray)
def _(X_in: Any, cols: np.ndarray, result: Any, in_dtype: np.dtype) -> Any:
    import dask.array as da

    p = X_in.shape[1]
    others = np.setdiff1d(np.arange(p), cols)
    full = da.concatenate([result, X_in[:, others].astype(result.dtype)], axis=1)
    pos = np.empty(p, dtype=np.int64)
    pos[np.concatenate([cols, others])] = np.arange(p)
    return full[:, pos]
