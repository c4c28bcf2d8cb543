"""The ``spherize`` normalizer: one whitening map per group, fitted on the group's reference rows.

The whitening itself is :mod:`imgprof._core.whitening` (pycytominer's ``Spherize``,
shared with ``ip.tl.sphering``). Here: the per-group fits, numpy or dask by
:func:`functools.singledispatch` (dask: reference blocks that fit in memory are
loaded in one pass; larger ones are whitened (ZCA) from a Gram matrix reduced
with dask), and the transform.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import partial, singledispatch
from typing import Any, NamedTuple

import numpy as np

from .._core.dispatch import DaskArray
from .._core.groups import sort_groups
from .._core.whitening import (
    CORRELATION_VARIANTS,
    EPS,
    PCA_VARIANTS,
    Whitener,
    fit_whitener,
    spherize_moments,
    zca_from_gram,
)
from ._normalizers import Groups, describe

__all__ = ["Spherize"]

#: dask: a group's reference rows with more elements than this (and more rows than features) are
#: whitened (ZCA) from a Gram matrix reduced with dask instead of being loaded into memory.
_DASK_IN_MEMORY = 2**26


class _GroupFit(NamedTuple):
    mean: np.ndarray
    scale: np.ndarray
    whitener: Whitener
    rank: int


@dataclass
class SpherizeState:
    """One whitening fit per group, and what is logged about them."""

    fits: list[_GroupFit]
    same_features: bool
    extra: dict[str, Any] = field(default_factory=dict)


def _raise_constant(const: np.ndarray, method: str, groups: Groups, g: int) -> None:
    if const.any() and method in CORRELATION_VARIANTS:
        feats = [str(groups.var_names[c]) for c in np.flatnonzero(const)]
        raise ValueError(
            f"normalize('spherize', spherize_method={method!r}): {len(feats)} feature(s) are constant among the "
            f"reference rows of group {groups.label(g)}: {describe(feats)}. Sphering would divide by "
            "zero (pycytominer raises a 'Divide by zero' error here); "
            "drop them first (ip.pp.feature_select(..., operation='variance_threshold', samples=controls))."
        )


def _fit_block(Xf: np.ndarray, method: str, center: bool, epsilon: float, groups: Groups, g: int) -> _GroupFit:
    """Whitening fit of one group's reference rows, in memory."""
    mean, scale, const = spherize_moments(Xf, method, center)
    _raise_constant(const, method, groups, g)
    Xt = (Xf - mean) / scale
    W, r = fit_whitener(Xt, method, epsilon)
    n, d = Xt.shape
    if n > d and r < d:
        warnings.warn(
            f"normalize('spherize'): the reference matrix of group {groups.label(g)} has rank {r} < "
            f"{d} features; directions without reference variance are scaled by ~1/spherize_epsilon "
            "(as in pycytominer). Remove redundant features (feature_select 'correlation_threshold') first.",
            UserWarning,
            stacklevel=7,
        )
    return _GroupFit(mean, scale, W, r)


@singledispatch
def _fit_groups(X: Any, groups: Groups, method: str, center: bool, epsilon: float) -> list[_GroupFit]:
    """One :class:`_GroupFit` per group."""
    order, starts = sort_groups(groups.fit_codes, groups.n_groups)
    fits = []
    for g in range(groups.n_groups):  # a loop, not a comprehension: the rank warning's stacklevel counts frames
        fits.append(_fit_block(X[order[starts[g] : starts[g + 1]]], method, center, epsilon, groups, g))
    return fits


def _gram_fit(Xf: Any, method: str, center: bool, epsilon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """ZCA fit of a large dask reference block: moments and ``Xt^T Xt`` in one dask computation.

    Returns ``(shift, scale, const, W)``; ``W`` is ``None`` for constant features under
    ``ZCA-cor`` (the caller raises) and when the Gram matrix is too ill-conditioned.
    """
    import dask
    import dask.array as da

    n = Xf.shape[0]
    mean_d, var_d = Xf.mean(axis=0), Xf.var(axis=0)
    const_d = (var_d <= n * EPS * var_d + (n * mean_d * EPS) ** 2) | (var_d == 0)
    if method == "ZCA-cor":
        scale_d = da.where(const_d, 1.0, da.sqrt(var_d))
        shift_d = mean_d
    else:
        scale_d = da.ones_like(mean_d)
        shift_d = mean_d if center else da.zeros_like(mean_d)
    Xt = (Xf - shift_d) / scale_d
    shift, scale, const, G = dask.compute(shift_d, scale_d, const_d, Xt.T @ Xt)
    shift, scale, const = np.asarray(shift), np.asarray(scale), np.asarray(const)
    if const.any() and method == "ZCA-cor":
        return shift, scale, const, None
    return shift, scale, const, zca_from_gram(np.asarray(G), n, epsilon)


@_fit_groups.register(DaskArray)
def _(X: Any, groups: Groups, method: str, center: bool, epsilon: float) -> list[_GroupFit]:
    import dask

    order, starts = sort_groups(groups.fit_codes, groups.n_groups)
    rows = [np.sort(order[starts[g] : starts[g + 1]]) for g in range(groups.n_groups)]
    p = X.shape[1]
    small = [g for g, r in enumerate(rows)
             if not (r.size * p > _DASK_IN_MEMORY and r.size > p and method in ("ZCA", "ZCA-cor"))]
    blocks = dask.compute(*[X[rows[g]] for g in small])  # the blocks that fit in memory, in one pass
    loaded = {g: np.asarray(b, dtype=np.float64) for g, b in zip(small, blocks)}
    fits = []
    for g in range(groups.n_groups):
        if g not in loaded:
            shift, scale, const, W = _gram_fit(X[rows[g]], method, center, epsilon)
            _raise_constant(const, method, groups, g)
            if W is not None:
                fits.append(_GroupFit(shift, scale, W, p))
                continue
            loaded[g] = np.asarray(X[rows[g]].compute(), dtype=np.float64)  # ill-conditioned: SVD of the block
        fits.append(_fit_block(loaded.pop(g), method, center, epsilon, groups, g))
    return fits


@singledispatch
def _whiten(X: Any, codes: np.ndarray, fits: list[_GroupFit]) -> Any:
    """Every row whitened with its group's fit."""
    if len(fits) == 1:
        f = fits[0]
        return f.whitener.apply((X - f.mean) / f.scale)
    out = np.empty((X.shape[0], fits[0].whitener.out_dim), dtype=np.float64)
    order, starts = sort_groups(codes, len(fits))
    for g, f in enumerate(fits):
        rows = order[starts[g] : starts[g + 1]]
        out[rows] = f.whitener.apply((X[rows] - f.mean) / f.scale)
    return out


def _whiten_block(x: Any, c: Any, fits: list[_GroupFit]) -> np.ndarray:
    cc = np.asarray(c)[:, 0]
    x = np.asarray(x, dtype=np.float64)
    out = np.empty((x.shape[0], fits[0].whitener.out_dim), dtype=np.float64)
    for g in np.unique(cc):
        rows = cc == g
        out[rows] = fits[g].whitener.apply((x[rows] - fits[g].mean) / fits[g].scale)
    return out


@_whiten.register(DaskArray)
def _(X: Any, codes: np.ndarray, fits: list[_GroupFit]) -> Any:
    import dask.array as da

    Xr = X.rechunk({1: -1})
    cd = da.from_array(codes, chunks=(Xr.chunks[0],))[:, None]
    fn = partial(_whiten_block, fits=fits)
    return da.map_blocks(fn, Xr, cd, dtype=np.float64, chunks=(Xr.chunks[0], (fits[0].whitener.out_dim,)))


class Spherize:
    """Whitening (``"ZCA"``, ``"PCA"``, ``"ZCA-cor"``, ``"PCA-cor"``), pycytominer's ``Spherize``.

    ``PCA``/``PCA-cor`` leave feature space (the state's ``same_features`` is False).

    Examples
    --------
    Features sharing a common factor (correlated); after sphering, the controls'
    covariance is the identity (up to ``spherize_epsilon``):

    >>> import anndata as ad, imgprof as ip
    >>> rng = np.random.default_rng(0)
    >>> adata = ad.AnnData(rng.normal(size=(50, 16)) + rng.normal(size=(50, 1)))
    >>> ip.pp.normalize(adata, "spherize", controls=np.arange(50) < 40)
    >>> bool(np.allclose(np.cov(adata.X[:40], rowvar=False), np.eye(16), atol=1e-4))
    True
    """

    def fit(self, X: Any, groups: Groups, *, spherize_method: str = "ZCA-cor", spherize_center: bool = True,
            spherize_epsilon: float = 1e-6) -> SpherizeState:
        fits = _fit_groups(X, groups, spherize_method, spherize_center, spherize_epsilon)
        widths = {f.whitener.out_dim for f in fits}
        if len(widths) > 1:  # PCA with n <= d: keep the components every group defines
            k = min(widths)
            fits = [f._replace(whitener=f.whitener.truncate(k)) for f in fits]
        return SpherizeState(fits, same_features=spherize_method not in PCA_VARIANTS,
                             extra={"rank": [f.rank for f in fits]})

    def transform(self, X: Any, groups: Groups, state: SpherizeState) -> Any:
        return _whiten(X, groups.codes, state.fits)
