"""Whitening (sphering) kernels shared by ``ip.pp.normalize(method="spherize")`` and ``ip.tl`` sphering.

Numpy only. :func:`fit_whitener` reproduces ``pycytominer.operations.Spherize.fit``
(values identical, see the parity tests) while never forming the ``n x n`` ``U``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CORRELATION_VARIANTS",
    "EPS",
    "GRAM_MIN_RATIO",
    "PCA_VARIANTS",
    "SPHERIZE_VARIANTS",
    "Whitener",
    "constant_mask_sklearn",
    "fit_whitener",
    "spherize_moments",
    "zca_from_gram",
]

EPS = np.finfo(np.float64).eps

#: Sphering variants, pycytominer's names and order: the one list behind
#: ``ip.pp.normalize(spherize_method=...)`` and ``ip.tl.sphering(method=...)``.
SPHERIZE_VARIANTS: tuple[str, ...] = ("ZCA", "PCA", "ZCA-cor", "PCA-cor")
#: Variants that scale every feature to unit variance first (whitening of the correlation matrix).
CORRELATION_VARIANTS: tuple[str, ...] = tuple(m for m in SPHERIZE_VARIANTS if m.endswith("-cor"))
#: Variants that stay in the principal-component basis (they leave feature space).
PCA_VARIANTS: tuple[str, ...] = tuple(m for m in SPHERIZE_VARIANTS if m.startswith("PCA"))


def constant_mask_sklearn(var: np.ndarray, mean: np.ndarray, n: np.ndarray) -> np.ndarray:
    """scikit-learn's ``_is_constant_feature`` (float64 accumulators)."""
    upper = n * EPS * var + (n * mean * EPS) ** 2
    return var <= upper


def spherize_moments(Xf: np.ndarray, method: str, center: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre and scale of a sphering fit, plus the (near-)constant-feature mask."""
    mean = Xf.mean(axis=0)
    var = Xf.var(axis=0)
    const = constant_mask_sklearn(var, mean, np.full(var.shape, Xf.shape[0], dtype=np.float64)) | (var == 0)
    if method in CORRELATION_VARIANTS:
        scale = np.sqrt(var)
        scale[const] = 1.0
        return mean, scale, const
    if not center:
        mean = np.zeros_like(mean)
    return mean, np.ones_like(mean), const


class Whitener:
    """A whitening map ``x -> x @ W``, stored densely or as ``V^T diag(coef) V + diag * I`` (ZCA, low rank)."""

    __slots__ = ("dense", "V", "coef", "diag")

    def __init__(self, dense: np.ndarray | None = None, V: np.ndarray | None = None, coef: np.ndarray | None = None,
                 diag: float = 0.0) -> None:
        self.dense, self.V, self.coef, self.diag = dense, V, coef, diag

    @property
    def out_dim(self) -> int:
        if self.dense is not None:
            return self.dense.shape[1]
        assert self.V is not None
        return self.V.shape[1]

    def truncate(self, k: int) -> Whitener:
        return Whitener(dense=self.dense[:, :k]) if self.dense is not None else self

    def apply(self, Xt: np.ndarray) -> np.ndarray:
        if self.dense is not None:
            return Xt @ self.dense
        assert self.V is not None
        out = ((Xt @ self.V.T) * self.coef) @ self.V
        out += self.diag * Xt
        return out


#: Gram-matrix eigendecomposition is used for ZCA when lambda_min / lambda_max exceeds this
#: (relative error of the singular values ~ 1e-16 / ratio); otherwise the SVD of the data.
GRAM_MIN_RATIO = 1e-8


def zca_from_gram(G: np.ndarray, n: int, epsilon: float) -> Whitener | None:
    """ZCA map from the Gram matrix ``Xt^T Xt`` (``None`` when too ill-conditioned for it)."""
    lam, E = np.linalg.eigh(G)
    if not lam[0] > GRAM_MIN_RATIO * lam[-1] > 0:
        return None
    S = np.sqrt(lam)
    return Whitener(dense=(E * (np.sqrt(n - 1) / (S + epsilon))) @ E.T)


def fit_whitener(Xt: np.ndarray, method: str, epsilon: float) -> tuple[Whitener, int]:
    """Whitening map of the already centred/scaled reference matrix ``Xt`` (``n x d``).

    Follows pycytominer's ``Spherize.fit``: SVD ``Xt = U S V^T``, singular values
    beyond the rank replaced by the last non-zero one when ``n <= d``, ``epsilon``
    added, ``W = V diag(sqrt(n - 1) / (s + epsilon))`` and, for ZCA, rotated back
    by ``V^T``. Differences in how it is computed, not in what:

    * the ``n x n`` matrix ``U`` is never formed (pycytominer's ``full_matrices=True``);
    * ZCA with ``n > d`` uses the eigendecomposition of ``Xt^T Xt`` (``V`` and ``S**2``)
      when it is well conditioned (``W`` does not depend on eigenvector signs), else the SVD;
    * ZCA with ``n <= d`` is kept as ``V_r^T diag(a - b) V_r + b I`` (the null-space
      projector in closed form), applied without forming ``W``;
    * PCA with ``n <= d`` returns only the ``r`` components with non-zero variance:
      pycytominer also returns ``d - r`` components spanning the references' null
      space, whose basis is arbitrary (it changes with rounding).

    Returns ``(whitener, rank)``.
    """
    n, d = Xt.shape
    c = np.sqrt(n - 1)
    pca = method in PCA_VARIANTS
    if n > d:
        if not pca:
            w = zca_from_gram(Xt.T @ Xt, n, epsilon)
            if w is not None:
                return w, d
        _, S, Vt = np.linalg.svd(Xt, full_matrices=False)
        tol = S.max(initial=0.0) * max(n, d) * EPS
        r = int((tol < S).sum())
        W = (Vt / (S + epsilon)[:, None]).T * c
        if not pca:
            W = W @ Vt
        return Whitener(dense=W), r
    # n <= d: at most n (n - 1 when centred) non-zero singular values
    _, S, Vt = np.linalg.svd(Xt, full_matrices=False)
    tol = S.max(initial=0.0) * max(n, d) * EPS
    r = int((tol < S).sum())
    if r not in (n - 1, n) or r == 0:
        raise ValueError(
            f"spherize: the reference matrix has rank {r} with n={n} rows and d={d} features; with n <= d "
            f"the rank must be n - 1 or n. Remove linearly dependent reference rows or use more references."
        )
    if pca:
        return Whitener(dense=(Vt[:r] / (S[:r] + epsilon)[:, None]).T * c), r
    a = 1.0 / (S[:r] + epsilon)
    b = 1.0 / (S[r - 1] + epsilon)
    return Whitener(V=Vt[:r], coef=c * (a - b), diag=c * b), r
