"""The normalizer registry of ``ip.pp.normalize`` and its centre/scale and quantile normalizers.

A normalizer is a class registered in :data:`NORMALIZERS` with two methods::

    @NORMALIZERS.register("my_method", options=("epsilon",))
    class MyMethod:
        def fit(self, X, groups: Groups, *, epsilon) -> state: ...
        def transform(self, X, groups: Groups, state) -> X_out: ...

``fit`` gets the float64 matrix (numpy or dask) of the selected features and a
:class:`Groups` (the group of every row, the reference rows of each group) and
returns any state; ``transform`` maps every row of ``X`` with it. Registration
metadata: ``options``, the ``normalize()`` keyword arguments passed to ``fit``
(and logged; the others are logged as ``None``), and ``allow_nan`` (default
True; False refuses NaN input). A state may carry ``extra`` (a dict logged in
the provenance step) and ``same_features`` (False when the output columns are
not the input features: the result then goes to ``.obsm``).

``spherize`` is registered lazily (:mod:`imgprof.pp._normalize_spherize`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._core.groups import group_median_mad, group_reduce, group_sizes
from .._core.registry import Registry
from .._core.whitening import EPS, constant_mask_sklearn
from ._normalize_kernels import center_scale, group_quantiles, inverse_normal

__all__ = ["MAD_SCALE", "NORMALIZERS", "CenterScale", "Groups", "describe"]

#: Normalization methods of ``ip.pp.normalize(method=...)``, by name.
NORMALIZERS = Registry("normalizer", param="method")

#: MAD consistency factor used by pycytominer's ``RobustMAD`` (``scale=1/1.4826`` in scipy).
MAD_SCALE = 1.4826


def describe(names: Sequence[str], k: int = 5) -> str:
    """The first ``k`` names, and how many more."""
    names = list(names)
    more = f" (+{len(names) - k} more)" if len(names) > k else ""
    return f"{names[:k]}{more}"


@dataclass(frozen=True)
class Groups:
    """The rows' groups (``by=``) and the reference rows (``controls=``) a normalizer fits on.

    Parameters
    ----------
    codes
        Group of every row (``0 .. n_groups - 1``).
    fit_codes
        Group of every reference row, ``-1`` for the other rows.
    n_groups
        Number of groups.
    labels
        One row per group with its ``by`` values (``None``: a single group, ``"all"``).
    var_names
        Names of the columns of ``X``, for messages.
    """

    codes: np.ndarray
    fit_codes: np.ndarray
    n_groups: int
    labels: pd.DataFrame | None
    var_names: pd.Index

    def label(self, g: int | np.integer) -> str:
        """Group ``g`` as users name it (its ``by`` value(s))."""
        if self.labels is None:
            return "all"
        row = self.labels.iloc[int(g)]
        return str(row.iloc[0]) if len(row) == 1 else str(tuple(row.tolist()))

    def report(self, bad: np.ndarray) -> tuple[list[str], str]:
        """Features and groups flagged in a ``(n_groups, p)`` boolean matrix (names, group text)."""
        feats = [str(self.var_names[c]) for c in np.flatnonzero(bad.any(axis=0))]
        where = describe([self.label(g) for g in np.flatnonzero(bad.any(axis=1))], 3)
        return feats, where

    def check_all_nan(self, C: np.ndarray) -> None:
        """Refuse features that are all-NaN among a group's references (``C``: a NaN-skipping statistic)."""
        bad = np.isnan(C)
        if bad.any():
            feats, where = self.report(bad)
            raise ValueError(
                f"normalize: {len(feats)} feature(s) are all-NaN among the reference rows of group(s) {where}: "
                f"{describe(feats)}. Drop them first (ip.pp.feature_select(..., operation='drop_na_columns'))."
            )


# ----------------------------------------------------------------------------------------------
# (x - center) / scale
# ----------------------------------------------------------------------------------------------
@dataclass
class CenterScale:
    """Per-group centre and scale (``(n_groups, p)`` each) and what is logged about them."""

    center: np.ndarray
    scale: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


class _CenterScaleNormalizer:
    """``(x - center) / scale`` with the zero-scale rule of ``normalize(zero_scale=...)``."""

    name = ""
    #: Whether ``zero_scale="epsilon"`` divides by ``scale + epsilon`` (pycytominer's mad_robustize).
    epsilon_rule = False

    def center_scale(self, X: Any, groups: Groups, epsilon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre, scale and zero-scale mask (``(n_groups, p)`` each) of the reference rows."""
        raise NotImplementedError

    def fit(self, X: Any, groups: Groups, *, epsilon: float = 0.0, zero_scale: str = "warn") -> CenterScale:
        C, S, zero = self.center_scale(X, groups, epsilon)
        groups.check_all_nan(C)
        state = CenterScale(C, S)
        if zero.any():
            state.scale = self._zero_scale(S, zero, groups, epsilon, zero_scale, state.extra)
        return state

    def _zero_scale(self, S: np.ndarray, zero: np.ndarray, groups: Groups, epsilon: float, zero_scale: str,
                    extra: dict[str, Any]) -> np.ndarray:
        feats, where = groups.report(zero)
        extra["zero_scale_features"] = feats
        if zero_scale == "raise":
            raise ValueError(
                f"normalize({self.name!r}): {len(feats)} feature(s) have zero reference scale in group(s) {where}: "
                f"{describe(feats)}. Drop them first (ip.pp.feature_select(..., operation='variance_threshold', "
                "samples=controls)) or use zero_scale='warn'."
            )
        if zero_scale == "epsilon" and self.epsilon_rule:
            if epsilon == 0:
                raise ValueError(
                    f"normalize({self.name!r}, zero_scale='epsilon', epsilon=0): {len(feats)} feature(s) have "
                    f"zero MAD in group(s) {where} ({describe(feats)}); dividing by 0 gives inf/NaN."
                )
            warnings.warn(
                f"normalize({self.name!r}): {len(feats)} feature(s) have zero MAD in group(s) {where} "
                f"({describe(feats)}); as in pycytominer they are divided by epsilon={epsilon:g}, giving huge values.",
                UserWarning,
                stacklevel=5,
            )
            return S
        warnings.warn(
            f"normalize({self.name!r}): {len(feats)} feature(s) have zero reference scale in group(s) {where} "
            f"({describe(feats)}); they are centred but divided by 1 instead of 0. "
            "Consider dropping them (ip.pp.feature_select).",
            UserWarning,
            stacklevel=5,
        )
        return np.where(zero, 1.0, S)

    def transform(self, X: Any, groups: Groups, state: CenterScale) -> Any:
        return center_scale(X, groups.codes, state.center, state.scale)


@NORMALIZERS.register("standardize", options=("zero_scale",))
class Standardize(_CenterScaleNormalizer):
    """``(x - mean) / std``, population std (scikit-learn ``StandardScaler``, its rule for constant features).

    Examples
    --------
    Fitted on the reference rows of each group (here rows 0 and 1 of a single group),
    applied to every row:

    >>> X = np.array([[1.0, 10.0], [3.0, 30.0], [100.0, 0.0]])
    >>> groups = Groups(np.zeros(3, dtype=int), np.array([0, 0, -1]), 1, None, pd.Index(["a", "b"]))
    >>> state = Standardize().fit(X, groups)
    >>> state.center, state.scale  # the references' mean and population std
    (array([[ 2., 20.]]), array([[ 1., 10.]]))
    >>> Standardize().transform(X, groups, state)[2]
    array([98., -2.])
    """

    name = "standardize"

    def center_scale(self, X: Any, groups: Groups, epsilon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        args = (X, groups.fit_codes, groups.n_groups)
        mean = group_reduce(*args, "mean", inf="propagate")
        var = group_reduce(*args, "var", ddof=0, inf="propagate")
        cnt = group_reduce(*args, "count", inf="propagate")
        with np.errstate(invalid="ignore"):
            zero = constant_mask_sklearn(var, mean, cnt) & ~np.isnan(var)
        return mean, np.sqrt(var), zero


@NORMALIZERS.register("robustize", options=("zero_scale",))
class Robustize(_CenterScaleNormalizer):
    """``(x - median) / IQR`` (scikit-learn ``RobustScaler``).

    Examples
    --------
    Controls 0 to 4 (median 2, quartiles 1 and 3); the last row is not a control and
    its outlier value is scaled, not clipped:

    >>> import anndata as ad, imgprof as ip
    >>> adata = ad.AnnData(np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [40.0]]))
    >>> ip.pp.normalize(adata, "robustize", controls=[True] * 5 + [False], max_variance_share=None)  # one feature
    >>> adata.X.ravel()
    array([-1. , -0.5,  0. ,  0.5,  1. , 19. ])
    """

    name = "robustize"

    def center_scale(self, X: Any, groups: Groups, epsilon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        C = group_reduce(X, groups.fit_codes, groups.n_groups, "median", inf="propagate")
        qs = group_quantiles(X, groups.fit_codes, groups.n_groups, [np.array([25.0, 75.0])] * groups.n_groups)
        S = np.stack([q[1] - q[0] for q in qs])
        return C, S, S < 10 * EPS


@NORMALIZERS.register("mad_robustize", options=("epsilon", "zero_scale"))
class MadRobustize(_CenterScaleNormalizer):
    """``(x - median) / (MAD_SCALE * MAD + epsilon)`` (pycytominer's ``RobustMAD``).

    Examples
    --------
    After the transform, every feature of the controls has median 0 and
    ``MAD_SCALE * MAD`` 1 (``MAD_SCALE`` makes the MAD of normal data its std):

    >>> import anndata as ad, imgprof as ip
    >>> adata = ad.AnnData(np.random.default_rng(0).normal(5.0, 3.0, size=(40, 20)))
    >>> ip.pp.normalize(adata, "mad_robustize", controls=np.arange(40) < 30)
    >>> ctrl = adata.X[:30]
    >>> bool(np.allclose(np.median(ctrl, axis=0), 0)), bool(np.allclose(MAD_SCALE * np.median(np.abs(ctrl), axis=0), 1))
    (True, True)
    """

    name = "mad_robustize"
    epsilon_rule = True

    def center_scale(self, X: Any, groups: Groups, epsilon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        C, mad = group_median_mad(X, groups.fit_codes, groups.n_groups, mad_scale=MAD_SCALE, inf="propagate")
        assert mad is not None
        return C, mad + epsilon, mad == 0  # pycytominer: (x - median) / (mad + epsilon)


# whitening, numpy/dask kernels in its own module (registered in pycytominer's order of methods)
NORMALIZERS.register_lazy(
    "spherize",
    "imgprof.pp._normalize_spherize:Spherize",
    options=("spherize_method", "spherize_center", "spherize_epsilon"),
    allow_nan=False,
)


# ----------------------------------------------------------------------------------------------
# inverse normal transform
# ----------------------------------------------------------------------------------------------
@dataclass
class Quantiles:
    """Per-group quantile landmarks (``(n_q, p)``) and their probabilities (``(n_q,)``)."""

    quantiles: list[np.ndarray]
    references: list[np.ndarray]


@NORMALIZERS.register("inverse_normal", options=("n_quantiles",))
class InverseNormal:
    """Rank-based inverse normal transform (``QuantileTransformer(output_distribution="normal")``).

    ``n_quantiles`` landmarks, capped at the number of reference rows of the group.

    Examples
    --------
    Only the ranks among the references count: the largest reference (100) maps to
    the top of the range however far out it is, their median to 0, and a row between
    two references is interpolated:

    >>> X = np.array([[1.0], [2.0], [3.0], [4.0], [100.0], [2.5]])
    >>> groups = Groups(np.zeros(6, dtype=int), np.array([0, 0, 0, 0, 0, -1]), 1, None, pd.Index(["f"]))
    >>> inv = InverseNormal()
    >>> inv.transform(X, groups, inv.fit(X, groups)).ravel().round(3)
    array([-5.199, -0.674,  0.   ,  0.674,  5.199, -0.319])
    """

    def fit(self, X: Any, groups: Groups, *, n_quantiles: int = 1000) -> Quantiles:
        n_ref = group_sizes(groups.fit_codes, groups.n_groups)
        refs = [np.linspace(0, 1, max(1, min(int(n_quantiles), int(n))), endpoint=True) for n in n_ref]
        qs = group_quantiles(X, groups.fit_codes, groups.n_groups, [r * 100 for r in refs])
        groups.check_all_nan(np.stack([q[0] for q in qs]))
        return Quantiles(qs, refs)

    def transform(self, X: Any, groups: Groups, state: Quantiles) -> Any:
        return inverse_normal(X, groups.codes, state.quantiles, state.references)
