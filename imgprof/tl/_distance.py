"""Distances between groups of single cells, and permutation tests of each perturbation against controls.

``ip.tl.distance`` computes one of :data:`DISTANCES` between every pair of
groups (a group × group matrix) and/or between each group and a reference
(the controls); ``ip.tl.distance_test`` runs an E-test style permutation test
of each perturbation against the controls; ``ip.tl.cluster_composition``
compares each perturbation's Leiden-cluster fractions with the controls'.

Definitions follow pertpy 1.0 (``pt.tl.Distance``) where the distance exists
there; the docs page *Single-cell distances* gives each formula and its
reference. Sums over all pairs of cells are computed block by block (BLAS
products of at most ``block × block`` cells, reduced on the fly by a numba
kernel), so no ``n × n`` matrix is ever held for all cells at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.provenance import log_step
from .._core.validation import check_finite, check_obs_keys, finish, get_matrix, start

# ----------------------------------------------------------------------------------------------
# grouped data


@dataclass
class Grouped:
    """Cells sorted by group: ``X[starts[g]:starts[g+1]]`` are the cells of ``names[g]``."""

    X: np.ndarray
    starts: np.ndarray
    names: list[str]

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.starts)

    def cells(self, g: int) -> np.ndarray:
        return self.X[self.starts[g]:self.starts[g + 1]]

    def means(self) -> np.ndarray:
        sums = np.add.reduceat(self.X, self.starts[:-1], axis=0)
        return sums / self.sizes[:, None]


def group_cells(
    X: np.ndarray,
    labels: Sequence | np.ndarray | pd.Series,
    *,
    max_cells: int | None = None,
    seed: int = 0,
) -> tuple[Grouped, dict[str, int]]:
    """Sort cells by group (optionally subsampling groups larger than ``max_cells``, seeded).

    Returns the grouped cells and ``{group: n_cells_before_subsampling}`` for the
    groups that were subsampled. Cells with a missing label are left out.
    """
    X = np.asarray(X, dtype=np.float64)
    lab = pd.Series(np.asarray(labels, dtype=object) if not isinstance(labels, pd.Series) else labels.to_numpy())
    if len(lab) != X.shape[0]:
        raise ValueError(f"labels has {len(lab)} entries but the matrix has {X.shape[0]} rows.")
    cat = pd.Categorical(lab)
    codes = np.asarray(cat.codes)
    keep = codes >= 0
    names = [str(c) for c in cat.categories]
    order = np.argsort(codes[keep], kind="stable")
    idx = np.flatnonzero(keep)[order]
    c = codes[idx]
    counts = np.bincount(c, minlength=len(names))
    subsampled: dict[str, int] = {}
    if max_cells is not None:
        if max_cells < 2:
            raise ValueError(f"max_cells must be >= 2, got {max_cells}.")
        rng = np.random.default_rng(seed)
        bounds = np.r_[0, np.cumsum(counts)]
        parts = []
        for g in range(len(names)):
            seg = idx[bounds[g]:bounds[g + 1]]
            if len(seg) > max_cells:
                subsampled[names[g]] = len(seg)
                seg = np.sort(rng.choice(seg, max_cells, replace=False))
            parts.append(seg)
        idx = np.concatenate(parts) if parts else idx
        counts = np.array([len(p) for p in parts], dtype=np.int64)
    present = counts > 0
    if not present.all():  # unused categories
        names = [n for n, p in zip(names, present) if p]
        counts = counts[present]
    starts = np.r_[0, np.cumsum(counts)].astype(np.int64)
    return Grouped(X[idx], starts, names), subsampled


# ----------------------------------------------------------------------------------------------
# the distances: each takes the grouped cells and the pairs (P × 2 array of group indices)


def _pair_index(G: int, ref: int | None) -> np.ndarray:
    if ref is None:
        a, b = np.triu_indices(G, k=1)
        return np.stack([a, b], axis=1).astype(np.int64)
    others = np.array([g for g in range(G) if g != ref], dtype=np.int64)
    return np.stack([others, np.full(len(others), ref, dtype=np.int64)], axis=1)


def _kernel_sums(grp: Grouped, pairs: np.ndarray, kind: int, gamma: float, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(within-group sums per group, cross sums per pair) of the kernel."""
    from ._distance_kernels import block_sums

    X = grp.X - grp.X.mean(axis=0)  # distances are translation-invariant; centring limits cancellation
    G = len(grp.names)
    involved = np.unique(pairs)
    all_pairs = len(pairs) == G * (G - 1) // 2 and G > 2
    if all_pairs:
        S = block_sums(X, grp.starts, X, grp.starts, kind=kind, gamma=gamma, symmetric=True, block=block)
        return np.diag(S).copy(), S[pairs[:, 0], pairs[:, 1]]
    within = np.full(G, np.nan)
    for g in involved:
        Xg = X[grp.starts[g]:grp.starts[g + 1]]
        within[g] = block_sums(Xg, np.array([0, len(Xg)]), Xg, None, kind=kind, gamma=gamma, symmetric=True,
                               block=block)[0, 0]
    cross = np.empty(len(pairs))
    refs = np.unique(pairs[:, 1])
    for r in refs:
        sel = np.flatnonzero(pairs[:, 1] == r)
        rows = pairs[sel, 0]
        Xr = X[grp.starts[r]:grp.starts[r + 1]]
        # rows of all groups paired with r, stacked contiguously
        parts = [X[grp.starts[g]:grp.starts[g + 1]] for g in rows]
        st = np.r_[0, np.cumsum([len(p) for p in parts])]
        S = block_sums(np.concatenate(parts), st, Xr, np.array([0, len(Xr)]), kind=kind, gamma=gamma, block=block)
        cross[sel] = S[:, 0]
    return within, cross


def _edistance(grp: Grouped, pairs: np.ndarray, *, block: int = 512) -> np.ndarray:
    within, cross = _kernel_sums(grp, pairs, 0, 1.0, block)
    n = grp.sizes.astype(np.float64)
    a, b = pairs[:, 0], pairs[:, 1]
    return 2.0 * cross / (n[a] * n[b]) - within[a] / n[a] ** 2 - within[b] / n[b] ** 2


def _mean_pairwise(grp: Grouped, pairs: np.ndarray, *, block: int = 512) -> np.ndarray:
    _, cross = _kernel_sums(grp, pairs, 0, 1.0, block)
    n = grp.sizes.astype(np.float64)
    return cross / (n[pairs[:, 0]] * n[pairs[:, 1]])


def median_heuristic_gamma(X: np.ndarray, *, max_cells: int = 2000, seed: int = 0) -> float:
    """RBF ``gamma`` from the median heuristic: ``gamma = 1 / (2 * median(||x_i - x_j||²))``, i < j.

    The median is taken over the pairs of a seeded subsample of at most
    ``max_cells`` cells of all groups pooled (Gretton et al. 2012), so one
    kernel is shared by every pair of groups.

    Parameters
    ----------
    X
        Cells × features.
    max_cells
        Subsample size for the median.
    seed
        Seed of the subsample.

    Returns
    -------
    The bandwidth parameter ``gamma`` of ``exp(-gamma * ||x - y||²)``.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(500, 10))
    >>> round(median_heuristic_gamma(X), 3)  # median squared distance ≈ 2 * 10 - a bit
    0.027
    """
    X = np.asarray(X, dtype=np.float64)
    if X.shape[0] < 2:
        raise ValueError("median_heuristic_gamma: need at least 2 cells.")
    if X.shape[0] > max_cells:
        X = X[np.sort(np.random.default_rng(seed).choice(X.shape[0], max_cells, replace=False))]
    from scipy.spatial.distance import pdist

    med = float(np.median(pdist(X, "sqeuclidean")))
    if med <= 0:
        raise ValueError("median_heuristic_gamma: the median squared distance is 0 (most cells identical); pass gamma=.")
    return 1.0 / (2.0 * med)


def _mmd(grp: Grouped, pairs: np.ndarray, *, kernel: str = "rbf", gamma: float | None = None, block: int = 512,
         seed: int = 0) -> np.ndarray:
    a, b = pairs[:, 0], pairs[:, 1]
    if kernel == "linear":  # pertpy's default: mean of x·y terms = ||mean_a - mean_b||²
        M = grp.means()
        return ((M[a] - M[b]) ** 2).sum(axis=1)
    if kernel != "rbf":
        raise ValueError(f"kernel={kernel!r}: expected 'rbf' or 'linear'.")
    if gamma is None:
        gamma = median_heuristic_gamma(grp.X, seed=seed)
    within, cross = _kernel_sums(grp, pairs, 1, float(gamma), block)
    n = grp.sizes.astype(np.float64)
    return within[a] / n[a] ** 2 + within[b] / n[b] ** 2 - 2.0 * cross / (n[a] * n[b])


def _euclidean(grp: Grouped, pairs: np.ndarray) -> np.ndarray:
    M = grp.means()
    return np.sqrt(((M[pairs[:, 0]] - M[pairs[:, 1]]) ** 2).sum(axis=1))


def _cosine(grp: Grouped, pairs: np.ndarray) -> np.ndarray:
    M = grp.means()
    x, y = M[pairs[:, 0]], M[pairs[:, 1]]
    return 1.0 - (x * y).sum(axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))


def _pearson(grp: Grouped, pairs: np.ndarray) -> np.ndarray:
    M = grp.means()
    M = M - M.mean(axis=1, keepdims=True)
    x, y = M[pairs[:, 0]], M[pairs[:, 1]]
    return 1.0 - (x * y).sum(axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))


def _wasserstein(grp: Grouped, pairs: np.ndarray, *, method: str = "sliced", n_projections: int = 100,
                 seed: int = 0, max_exact: int = 250_000) -> np.ndarray:
    if method == "sliced":
        from ._distance_kernels import sliced_w2_pairs

        d = grp.X.shape[1]
        theta = np.random.default_rng(seed).normal(size=(n_projections, d))
        theta /= np.linalg.norm(theta, axis=1, keepdims=True)
        proj = theta @ grp.X.T
        for g in range(len(grp.names)):
            s, e = grp.starts[g], grp.starts[g + 1]
            proj[:, s:e].sort(axis=1)
        out = np.empty(len(pairs))
        sliced_w2_pairs(np.ascontiguousarray(proj), grp.starts, np.ascontiguousarray(pairs), out)
        return np.sqrt(out)
    if method == "exact":
        return np.array([_exact_w2(grp.cells(a), grp.cells(b), max_exact) for a, b in pairs])
    raise ValueError(f"wasserstein method={method!r}: expected 'sliced' or 'exact'.")


def _exact_w2(X: np.ndarray, Y: np.ndarray, max_exact: int) -> float:
    """Exact 2-Wasserstein distance (squared-euclidean cost, uniform weights) by linear programming."""
    from scipy.spatial.distance import cdist

    m, n = len(X), len(Y)
    if m * n > max_exact:
        raise ValueError(f"wasserstein method='exact': {m} × {n} cells exceeds max_exact={max_exact} transport "
                         "variables; use method='sliced' or subsample with max_cells=.")
    C = cdist(X, Y, "sqeuclidean")
    if m == n:  # an optimal plan is a permutation (Birkhoff)
        from scipy.optimize import linear_sum_assignment

        r, c = linear_sum_assignment(C)
        return float(np.sqrt(C[r, c].mean()))
    import scipy.sparse as sp
    from scipy.optimize import linprog

    rows = sp.kron(sp.eye(m), np.ones((1, n)))
    cols = sp.kron(np.ones((1, m)), sp.eye(n))
    A = sp.vstack([rows, cols]).tocsr()
    b = np.r_[np.full(m, 1.0 / m), np.full(n, 1.0 / n)]
    res = linprog(C.ravel(), A_eq=A, b_eq=b, bounds=(0, None), method="highs")
    if not res.success:  # pragma: no cover - HiGHS solves these feasible problems
        raise RuntimeError(f"exact Wasserstein: linear program failed ({res.message}).")
    return float(np.sqrt(max(res.fun, 0.0)))


def _classifier(grp: Grouped, pairs: np.ndarray, *, test_fraction: float = 0.2, seed: int = 0,
                max_iter: int = 100) -> np.ndarray:
    """pertpy's ``classifier_proba``: train on the first group + 80 % of the second, score held-out second."""
    from sklearn.linear_model import LogisticRegression

    out = np.empty(len(pairs))
    for p, (b, a) in enumerate(pairs):  # pairs are (perturbed, control): control cells "c", perturbed "p"
        X, Y = grp.cells(a), grp.cells(b)
        test = classifier_split(len(Y), test_fraction, seed)
        train_y = np.setdiff1d(np.arange(len(Y)), test)
        label = np.array(["c"] * len(X) + ["p"] * len(train_y))
        clf = LogisticRegression(max_iter=max_iter).fit(np.concatenate([X, Y[train_y]]), label)
        out[p] = float(np.mean(clf.predict_proba(Y[test])[:, 1]))
    return out


def classifier_split(n: int, test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Held-out cells of the ``classifier`` distance: ``max(1, int(n * test_fraction))`` cells, seeded.

    Parameters
    ----------
    n
        Cells in the perturbed group.
    test_fraction
        Share held out (pertpy holds out 20 %).
    seed
        Seed of the draw.

    Returns
    -------
    Indices of the held-out cells (in draw order, as ``numpy.random.Generator.choice`` returns them).

    Examples
    --------
    >>> len(classifier_split(50))
    10
    """
    k = max(1, int(n * test_fraction))
    if k >= n:
        raise ValueError(f"classifier distance: a group of {n} cells leaves no training cells after holding out {k}.")
    return np.random.default_rng(seed).choice(n, k, replace=False)


@dataclass(frozen=True)
class DistanceSpec:
    """One registered distance: its function and what it is."""

    fn: Callable[..., np.ndarray]
    kind: str  # "distribution" or "mean"
    pertpy: str | None  # the pertpy metric name it equals, if any
    symmetric: bool = True
    description: str = ""


#: Registry ``name → DistanceSpec``; :func:`distance` accepts these names.
DISTANCES: dict[str, DistanceSpec] = {
    "edistance": DistanceSpec(_edistance, "distribution", "edistance",
                              description="energy distance 2δ − σ_X − σ_Y of mean euclidean distances (Peidli et al. 2024)"),
    "mmd": DistanceSpec(_mmd, "distribution", "mmd",
                        description="maximum mean discrepancy (biased V-statistic), RBF kernel, median-heuristic gamma"),
    "wasserstein": DistanceSpec(_wasserstein, "distribution", None,
                                description="2-Wasserstein: sliced (random projections) or exact (small groups)"),
    "mean_pairwise": DistanceSpec(_mean_pairwise, "distribution", "mean_pairwise",
                                  description="mean euclidean distance between cells of the two groups"),
    "classifier": DistanceSpec(_classifier, "distribution", "classifier_proba", symmetric=False,
                               description="mean P(perturbed) of a logistic regression on held-out perturbed cells"),
    "euclidean": DistanceSpec(_euclidean, "mean", "euclidean", description="euclidean distance between group means"),
    "cosine": DistanceSpec(_cosine, "mean", "cosine_distance", description="1 − cosine similarity of group means"),
    "pearson": DistanceSpec(_pearson, "mean", "pearson_distance",
                            description="1 − Pearson correlation of group means (across features)"),
}


def _spec(metric: str) -> DistanceSpec:
    if metric not in DISTANCES:
        raise ValueError(f"metric={metric!r} is not a registered distance; choose one of {sorted(DISTANCES)}.")
    return DISTANCES[metric]


def group_distances(
    X: np.ndarray,
    labels: Sequence | np.ndarray | pd.Series,
    metric: str = "edistance",
    *,
    reference: str | None = None,
    max_cells: int | None = None,
    seed: int = 0,
    **metric_kwds: Any,
) -> pd.DataFrame | pd.Series:
    """Distances between groups of cells of a matrix (the array-level form of :func:`distance`).

    Parameters
    ----------
    X
        Cells × features (an embedding such as PCA, or features).
    labels
        Group of each cell (missing labels are left out).
    metric
        A name in :data:`DISTANCES`.
    reference
        ``None``: the full group × group matrix. A group name: a Series of each
        group's distance to that group (the reference itself gets 0).
    max_cells
        Subsample groups larger than this (seeded by ``seed``).
    seed
        Seed of subsampling and of randomised distances (sliced projections, classifier split).
    **metric_kwds
        Passed to the distance (``gamma``/``kernel`` for ``mmd``, ``method``/``n_projections`` for
        ``wasserstein``, ``test_fraction`` for ``classifier``, ``block`` for the blocked sums).

    Returns
    -------
    A symmetric DataFrame (groups × groups, zero diagonal) or, with ``reference``, a Series.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(300, 5))
    >>> labels = np.repeat(["a", "b", "c"], 100)
    >>> group_distances(X, labels, "euclidean").shape
    (3, 3)
    """
    spec = _spec(metric)
    grp, _ = group_cells(X, labels, max_cells=max_cells, seed=seed)
    return _compute(grp, metric, spec, reference, seed, metric_kwds)


def _call(spec: DistanceSpec, grp: Grouped, pairs: np.ndarray, seed: int, kw: dict) -> np.ndarray:
    import inspect

    params = inspect.signature(spec.fn).parameters
    if "seed" in params:
        kw = {"seed": seed, **kw}
    unknown = [k for k in kw if k not in params]
    if unknown:
        raise TypeError(f"unexpected keyword(s) {unknown} for this distance; it accepts {list(params)[2:]}.")
    return spec.fn(grp, pairs, **kw)


def _compute(grp: Grouped, metric: str, spec: DistanceSpec, reference: str | None, seed: int, kw: dict):
    G = len(grp.names)
    if G < 2:
        raise ValueError(f"{metric}: need at least two groups, got {grp.names}.")
    if reference is None:
        pairs = _pair_index(G, None)
        # asymmetric distances (classifier): (later group as "perturbed", earlier as "control"), as pertpy's pairwise
        vals = _call(spec, grp, pairs if spec.symmetric else pairs[:, ::-1].copy(), seed, kw)
        D = np.zeros((G, G))
        D[pairs[:, 0], pairs[:, 1]] = vals
        D[pairs[:, 1], pairs[:, 0]] = vals
        return pd.DataFrame(D, index=pd.Index(grp.names), columns=pd.Index(grp.names))
    if str(reference) not in grp.names:
        raise ValueError(f"reference={reference!r} is not one of the groups ({grp.names[:10]}...).")
    ref = grp.names.index(str(reference))
    pairs = _pair_index(G, ref)
    vals = _call(spec, grp, pairs, seed, kw)
    s = pd.Series(0.0, index=pd.Index(grp.names), name=metric)
    s.iloc[pairs[:, 0]] = vals
    return s


# ----------------------------------------------------------------------------------------------
# AnnData entry points


def _matrix(adata: AnnData, obsm_key: str | None, layer: str | None, fn: str) -> tuple[np.ndarray, str]:
    if obsm_key is not None and layer is not None:
        raise ValueError(f"{fn}: pass either obsm_key= or layer=, not both.")
    if obsm_key is None and layer is None:
        obsm_key = "X_pca" if "X_pca" in adata.obsm else "X"
    X = get_matrix(adata, layer=layer, use_rep=obsm_key)
    what = f"adata.layers[{layer!r}]" if layer else ("adata.X" if obsm_key == "X" else f"adata.obsm[{obsm_key!r}]")
    X = np.asarray(X, dtype=np.float64)
    check_finite(X, what=what)
    return X, what


def _labels(adata: AnnData, groupby: str) -> pd.Series:
    check_obs_keys(adata, groupby, param="groupby")
    lab = adata.obs[groupby]
    return lab.astype(object).where(lab.notna(), None).map(lambda v: None if v is None else str(v))


def distance(
    adata: AnnData,
    groupby: str,
    metric: str = "edistance",
    *,
    reference: str | None = None,
    pairwise: bool = True,
    obsm_key: str | None = None,
    layer: str | None = None,
    max_cells: int | None = None,
    seed: int = 0,
    key_added: str | None = None,
    copy: bool = False,
    **metric_kwds: Any,
) -> AnnData | None:
    """Distances between groups of cells: a group × group matrix and/or each group against the controls.

    Parameters
    ----------
    adata
        Single cells.
    groupby
        ``.obs`` column naming each cell's group (perturbation).
    metric
        One of :data:`DISTANCES`: ``"edistance"`` (default), ``"mmd"``, ``"wasserstein"``,
        ``"mean_pairwise"``, ``"classifier"``, ``"euclidean"``, ``"cosine"``, ``"pearson"``.
    reference
        Control group: each group's distance to it is stored as well.
    pairwise
        Compute the full group × group matrix (``False``: only against ``reference``).
    obsm_key, layer
        Representation: an ``.obsm`` key (``"X"`` for ``.X``) or a layer; default ``"X_pca"`` when
        present, else ``.X``.
    max_cells
        Subsample groups with more cells than this (seeded; recorded in provenance).
    seed
        Seed for subsampling, the median-heuristic subsample, sliced projections and the classifier split.
    key_added
        ``.uns`` key of the result (default ``f"distance_{metric}"``).
    copy
        Return a modified copy instead of writing into ``adata``.
    **metric_kwds
        Passed to the distance: ``gamma``, ``kernel`` (``mmd``); ``method``, ``n_projections``
        (``wasserstein``); ``test_fraction`` (``classifier``); ``block`` (blocked sums).

    Returns
    -------
    ``None`` (or the copy). Writes ``adata.uns[key_added]``: a dict with ``"pairwise"``
    (DataFrame, groups × groups), ``"to_reference"`` (DataFrame with ``distance`` and ``n_cells``,
    when ``reference`` is given), ``"n_cells"`` (cells used per group) and ``"params"``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate_cells(n_perturbations=4, n_cells=100, seed=0)
    >>> ip.tl.distance(adata, "Metadata_perturbation", reference="control", obsm_key="X")
    >>> adata.uns["distance_edistance"]["pairwise"].shape
    (5, 5)
    """
    spec = _spec(metric)
    if not pairwise and reference is None:
        raise ValueError("distance: pairwise=False needs a reference= group.")
    X, what = _matrix(adata, obsm_key, layer, "distance")
    labels = _labels(adata, groupby)
    grp, subsampled = group_cells(X, labels, max_cells=max_cells, seed=seed)
    if metric == "mmd" and metric_kwds.get("kernel", "rbf") == "rbf" and metric_kwds.get("gamma") is None:
        metric_kwds = dict(metric_kwds, gamma=median_heuristic_gamma(grp.X, seed=seed))  # one kernel for all pairs
    result: dict[str, Any] = {}
    if pairwise:
        result["pairwise"] = _compute(grp, metric, spec, None, seed, dict(metric_kwds))
    if reference is not None:
        if pairwise and spec.symmetric:
            s = result["pairwise"].loc[:, str(reference)] if str(reference) in grp.names else None
            if s is None:
                raise ValueError(f"reference={reference!r} is not a value of adata.obs[{groupby!r}].")
        else:
            if str(reference) not in grp.names:
                raise ValueError(f"reference={reference!r} is not a value of adata.obs[{groupby!r}].")
            s = _compute(grp, metric, spec, str(reference), seed, dict(metric_kwds))
        result["to_reference"] = pd.DataFrame({"distance": s.to_numpy(), "n_cells": grp.sizes},
                                              index=pd.Index(grp.names, name=groupby))
    # a one-column DataFrame, not a Series: AnnData writes DataFrames in .uns, not Series
    result["n_cells"] = pd.DataFrame({"n_cells": grp.sizes}, index=pd.Index(grp.names, name=groupby))
    params = dict(groupby=groupby, metric=metric, reference=reference, pairwise=pairwise, representation=what,
                  max_cells=max_cells, seed=seed, **metric_kwds)
    result["params"] = {k: (v if isinstance(v, (str, int, float, bool)) else str(v)) for k, v in params.items()
                        if v is not None}
    adata = start(adata, copy)
    key = key_added or f"distance_{metric}"
    adata.uns[key] = result
    log_step(adata, "tl.distance", params, key_added=key, n_groups=len(grp.names), subsampled=subsampled)
    return finish(adata, copy)


# ----------------------------------------------------------------------------------------------
# permutation test against the controls

#: Distances :func:`distance_test` can permute (quadratic forms of a kernel matrix, or group means).
TESTABLE = ("edistance", "mmd", "mean_pairwise", "euclidean", "cosine", "pearson")


def _union_kernel(U: np.ndarray, kind: int, gamma: float) -> np.ndarray:
    """Dense kernel matrix of the (subsampled) union of one perturbation and the controls."""
    U = U - U.mean(axis=0)
    n2 = np.einsum("ij,ij->i", U, U)
    D2 = n2[:, None] + n2[None, :] - 2.0 * (U @ U.T)
    np.maximum(D2, 0.0, out=D2)
    np.fill_diagonal(D2, 0.0)
    if kind == 0:
        return np.sqrt(D2, out=D2)
    return np.exp(-gamma * D2, out=D2)


def _perm_stats(metric: str, U: np.ndarray, Z: np.ndarray, m: int, c: int, K: np.ndarray | None) -> np.ndarray:
    """The distance for each row of the 0/1 label matrix ``Z`` (1 = perturbation cell)."""
    if K is not None:
        r = K.sum(axis=1)
        T = r.sum()
        q = np.einsum("ij,ij->i", Z @ K, Z)  # sum over pairs inside the perturbation
        zr = Z @ r
        s_xy = zr - q
        s_yy = T - 2.0 * zr + q
        if metric == "edistance":
            return 2.0 * s_xy / (m * c) - q / m**2 - s_yy / c**2
        if metric == "mmd":
            return q / m**2 + s_yy / c**2 - 2.0 * s_xy / (m * c)
        return s_xy / (m * c)  # mean_pairwise
    tot = U.sum(axis=0)
    mx = (Z @ U) / m
    my = (tot[None, :] - Z @ U) / c
    if metric == "euclidean":
        return np.sqrt(((mx - my) ** 2).sum(axis=1))
    if metric == "pearson":
        mx = mx - mx.mean(axis=1, keepdims=True)
        my = my - my.mean(axis=1, keepdims=True)
    return 1.0 - (mx * my).sum(axis=1) / (np.linalg.norm(mx, axis=1) * np.linalg.norm(my, axis=1))


def _label_draws(rng: np.random.Generator, z: np.ndarray, strata: list[np.ndarray], n: int) -> np.ndarray:
    """``n`` relabellings of ``z``, each permuting labels only within every stratum (plate)."""
    Z = np.zeros((n, len(z)))
    rows = np.arange(n)[:, None]
    for idx in strata:
        k = int(z[idx].sum())
        if k == 0:
            continue
        if k == len(idx):
            Z[:, idx] = 1.0
            continue
        pick = np.argsort(rng.random((n, len(idx))), axis=1)[:, :k]
        Z[rows, idx[pick]] = 1.0
    return Z


def distance_test(
    adata: AnnData,
    groupby: str,
    reference: str,
    metric: str = "edistance",
    *,
    n_perms: int = 1000,
    batch_key: str | None = None,
    max_cells: int | None = 1000,
    obsm_key: str | None = None,
    layer: str | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    key_added: str = "distance_test",
    copy: bool = False,
    **metric_kwds: Any,
) -> AnnData | None:
    """Permutation test of each perturbation against the controls (the E-test of Peidli et al.).

    For each group ``g`` other than ``reference``, the cells of ``g`` and of the controls are
    pooled and their labels permuted ``n_perms`` times (keeping the two group sizes); the
    p-value is ``(k + 1) / (n_perms + 1)`` with ``k`` the number of permutations whose distance
    is at least the observed one (Phipson & Smyth 2010). p-values are adjusted across
    perturbations with Benjamini–Hochberg. With ``batch_key`` labels are permuted only within
    each batch (plate): a perturbation's cells swap only with controls of their own plate, so
    plate effects shared by the perturbation's wells do not count as a perturbation effect.

    Parameters
    ----------
    adata
        Single cells.
    groupby
        ``.obs`` column naming each cell's perturbation.
    reference
        The control group (a value of ``groupby``).
    metric
        One of :data:`TESTABLE`: ``"edistance"`` (default), ``"mmd"``, ``"mean_pairwise"``,
        ``"euclidean"``, ``"cosine"``, ``"pearson"``.
    n_perms
        Permutations per perturbation.
    batch_key
        ``.obs`` column (e.g. ``"Metadata_Plate"``): permute only within its levels.
    max_cells
        Groups (the controls included) with more cells are subsampled to this many, seeded by
        ``seed``; the subsampled groups and their sizes are recorded in provenance. The pooled
        kernel matrix is at most ``(2 max_cells)²``. ``None``: no subsampling.
    obsm_key, layer
        Representation, as in :func:`distance`.
    alpha
        Level for the ``significant`` column (on BH-adjusted p-values).
    seed
        Seed of subsampling and permutations.
    key_added
        ``.uns`` key of the result table.
    copy
        Return a modified copy.
    **metric_kwds
        ``gamma`` / ``kernel`` for ``mmd`` (default RBF with the median-heuristic gamma of all
        the cells used, shared by every perturbation).

    Returns
    -------
    ``None`` (or the copy). ``adata.uns[key_added]`` is a DataFrame indexed by perturbation with
    ``distance`` (on the cells used), ``pvalue``, ``pvalue_adj`` (BH), ``significant``,
    ``n_cells``, ``n_reference_cells``, ``null_mean`` (mean distance under permutation),
    ``n_fixed_cells`` (cells in batches without controls, never relabelled) and ``n_perms``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate_cells(n_perturbations=2, n_cells=60, effects=["variance", "none"])
    >>> ip.tl.distance_test(adata, "Metadata_perturbation", "control", obsm_key="X", n_perms=199)
    >>> adata.uns["distance_test"]["pvalue"].round(3).to_dict()
    {'P00': 0.005, 'P01': 0.48}
    """
    if metric not in TESTABLE:
        raise ValueError(f"distance_test: metric={metric!r} cannot be permuted efficiently; choose one of {TESTABLE}.")
    if n_perms < 1:
        raise ValueError(f"n_perms must be >= 1, got {n_perms}.")
    X, what = _matrix(adata, obsm_key, layer, "distance_test")
    labels = _labels(adata, groupby)
    if str(reference) not in set(labels.dropna()):
        raise ValueError(f"reference={reference!r} is not a value of adata.obs[{groupby!r}].")
    if batch_key is not None:
        check_obs_keys(adata, batch_key, param="batch_key")
        batches = adata.obs[batch_key].astype(str).to_numpy()
    else:
        batches = np.zeros(adata.n_obs, dtype=object)
    rng = np.random.default_rng(seed)
    lab = labels.to_numpy(dtype=object)
    valid = pd.notna(lab)
    names = sorted({str(v) for v in lab[valid]})
    cells = {n: np.flatnonzero(lab == n) for n in names}
    subsampled: dict[str, int] = {}
    if max_cells is not None:
        if max_cells < 2:
            raise ValueError(f"max_cells must be >= 2, got {max_cells}.")
        for n in names:
            if len(cells[n]) > max_cells:
                subsampled[n] = len(cells[n])
                cells[n] = np.sort(rng.choice(cells[n], max_cells, replace=False))
    ctrl = cells[str(reference)]
    kernel, kind = metric_kwds.get("kernel", "rbf"), None
    gamma = metric_kwds.get("gamma")
    if metric in ("edistance", "mean_pairwise"):
        kind = 0
    elif metric == "mmd":
        if kernel == "linear":  # linear MMD = squared euclidean distance of means
            kind = None
        elif kernel == "rbf":
            kind = 1
            if gamma is None:
                used = np.concatenate(list(cells.values()))
                gamma = median_heuristic_gamma(X[used], seed=seed)
        else:
            raise ValueError(f"kernel={kernel!r}: expected 'rbf' or 'linear'.")
    unknown = set(metric_kwds) - {"kernel", "gamma"}
    if unknown:
        raise TypeError(f"distance_test: unexpected keyword(s) {sorted(unknown)}.")
    biggest = max(len(cells[n]) for n in names if n != str(reference)) + len(cells[str(reference)])
    if kind is not None and biggest > 20_000:
        raise ValueError(f"distance_test: pooling {biggest:,} cells would need a {biggest:,}² kernel matrix; "
                         "pass max_cells= (e.g. 1000) to subsample large groups.")
    rows = []
    chunk = 250
    for n in names:
        if n == str(reference):
            continue
        gi = cells[n]
        idx = np.r_[gi, ctrl]
        U = X[idx]
        z = np.r_[np.ones(len(gi)), np.zeros(len(ctrl))]
        b = batches[idx]
        strata = [np.flatnonzero(b == v) for v in pd.unique(b)]
        fixed = sum(int(z[s].sum()) for s in strata if z[s].all())
        m, c = len(gi), len(ctrl)
        K = _union_kernel(U, kind, float(gamma or 1.0)) if kind is not None else None
        stat_metric = "euclidean_sq" if (metric == "mmd" and kind is None) else metric
        obs = _perm_stats("euclidean" if stat_metric == "euclidean_sq" else metric, U, z[None, :], m, c, K)[0]
        null = []
        for s0 in range(0, n_perms, chunk):
            Z = _label_draws(rng, z, strata, min(chunk, n_perms - s0))
            null.append(_perm_stats("euclidean" if stat_metric == "euclidean_sq" else metric, U, Z, m, c, K))
        null_arr = np.concatenate(null)
        if stat_metric == "euclidean_sq":
            obs, null_arr = obs**2, null_arr**2
        tol = 1e-12 * max(1.0, abs(obs))
        k = int((null_arr >= obs - tol).sum())
        rows.append({"group": n, "distance": float(obs), "pvalue": (k + 1) / (n_perms + 1), "n_cells": m,
                         "n_reference_cells": c, "null_mean": float(null_arr.mean()), "n_fixed_cells": fixed,
                         "n_perms": int(n_perms)})
    from ..metrics.null import benjamini_hochberg

    tab = pd.DataFrame(rows).set_index("group")
    tab.index.name = groupby
    tab.insert(2, "pvalue_adj", benjamini_hochberg(tab["pvalue"].to_numpy()))
    tab.insert(3, "significant", tab["pvalue_adj"] < alpha)
    adata = start(adata, copy)
    adata.uns[key_added] = tab
    params = {"groupby": groupby, "reference": reference, "metric": metric, "n_perms": n_perms, "batch_key": batch_key,
                  "max_cells": max_cells, "representation": what, "alpha": alpha, "seed": seed, "kernel": kernel if metric == "mmd"
                  else None, "gamma": gamma}
    log_step(adata, "tl.distance_test", params, key_added=key_added, subsampled=subsampled,
             n_tested=len(tab), n_significant=int(tab["significant"].sum()))
    return finish(adata, copy)


# ----------------------------------------------------------------------------------------------
# subpopulation view: which cell states does a perturbation enrich?


def _chi2_stat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson χ² of 2 × K tables given row counts ``a`` and ``b`` (each ``(..., K)``)."""
    col = a + b
    na, nb = a.sum(axis=-1, keepdims=True), b.sum(axis=-1, keepdims=True)
    n = na + nb
    ea, eb = col * na / n, col * nb / n
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(col > 0, (a - ea) ** 2 / ea + (b - eb) ** 2 / eb, 0.0)
    return t.sum(axis=-1)


def cluster_composition(
    adata: AnnData,
    groupby: str,
    reference: str,
    *,
    cluster_key: str = "leiden",
    obsm_key: str | None = None,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    metric: str = "euclidean",
    method: str = "chi2",
    n_perms: int = 1000,
    batch_key: str | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    key_added: str = "cluster_composition",
    copy: bool = False,
) -> AnnData | None:
    """Each perturbation's cell-state (cluster) fractions against the controls, with a test.

    Cells of all groups are clustered together (Leiden on the joint embedding, through
    :func:`imgprof.tl.neighbors` and :func:`imgprof.tl.leiden`, unless ``adata.obs[cluster_key]``
    exists). For each perturbation, its cluster counts and the controls' form a 2 × K table:
    ``method="chi2"`` tests it with Pearson's χ² (asymptotic; approximate when expected counts
    are small), ``method="permutation"`` with the same statistic and labels permuted between the
    perturbation's and the controls' cells (within ``batch_key`` levels if given;
    p = (k+1)/(N+1)). p-values are BH-adjusted across perturbations. Per cluster, a two-sided
    Fisher exact test (cluster vs rest, BH over all perturbation × cluster cells) says which
    states are enriched or depleted. Cells are treated as independent: when wells differ,
    prefer ``batch_key`` permutation or confirm on wells.

    Parameters
    ----------
    adata
        Single cells.
    groupby
        ``.obs`` column of perturbations.
    reference
        Control group.
    cluster_key
        ``.obs`` column of clusters; computed with Leiden when absent.
    obsm_key
        Embedding for the neighbour graph (default ``"X_pca"`` if present, else ``.X``).
    resolution, n_neighbors, metric
        Leiden resolution, neighbours and neighbour metric (only when clustering here).
    method
        ``"chi2"`` or ``"permutation"``.
    n_perms
        Permutations (``method="permutation"``).
    batch_key
        Permute within these levels (``method="permutation"``).
    alpha
        Level of the ``significant`` columns (BH-adjusted).
    seed
        Seed of Leiden and of permutations.
    key_added
        ``.uns`` key of the result.
    copy
        Return a modified copy.

    Returns
    -------
    ``None`` (or the copy). ``adata.uns[key_added]`` holds ``"fractions"`` (groups × clusters),
    ``"test"`` (per perturbation: ``statistic``, ``dof``, ``pvalue``, ``pvalue_adj``,
    ``significant``, ``top_cluster``, ``top_log2_ratio``) and ``"enrichment"`` (one row per
    perturbation × cluster: ``fraction``, ``reference_fraction``, ``log2_ratio``, ``pvalue``,
    ``pvalue_adj``).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate_cells(n_perturbations=2, n_cells=150, effects=["subpopulation", "none"],
    ...                                    effect_size=1.5, n_features=5)
    >>> ip.tl.cluster_composition(adata, "Metadata_perturbation", "control", obsm_key="X", resolution=0.3)
    >>> adata.uns["cluster_composition"]["test"]["significant"].to_dict()
    {'P00': True, 'P01': False}
    """
    from scipy.stats import chi2 as chi2_dist
    from scipy.stats import fisher_exact

    from ..metrics.null import benjamini_hochberg

    if method not in ("chi2", "permutation"):
        raise ValueError(f"method={method!r}: expected 'chi2' or 'permutation'.")
    labels = _labels(adata, groupby)
    if str(reference) not in set(labels.dropna()):
        raise ValueError(f"reference={reference!r} is not a value of adata.obs[{groupby!r}].")
    if batch_key is not None:
        check_obs_keys(adata, batch_key, param="batch_key")
    adata = start(adata, copy)
    clustered_here = cluster_key not in adata.obs
    if clustered_here:
        from .embedding import leiden, neighbors

        rep = obsm_key or ("X_pca" if "X_pca" in adata.obsm else "X")
        neighbors(adata, n_neighbors=n_neighbors, use_rep=rep, metric=metric, random_state=seed)
        leiden(adata, resolution=resolution, key_added=cluster_key, random_state=seed)
    clusters = adata.obs[cluster_key].astype(str)
    lab = labels.to_numpy(dtype=object)
    ok = pd.notna(lab) & clusters.notna().to_numpy()
    ct = pd.crosstab(pd.Series(lab[ok], name=groupby), pd.Series(clusters.to_numpy()[ok], name=cluster_key))
    names = [str(n) for n in ct.index]
    counts = ct.to_numpy().astype(np.float64)
    fractions = pd.DataFrame(counts / counts.sum(axis=1, keepdims=True), index=ct.index, columns=ct.columns)
    ref_row = names.index(str(reference))
    b = counts[ref_row]
    rng = np.random.default_rng(seed)
    code = pd.Categorical(clusters.to_numpy(), categories=list(ct.columns)).codes
    batches = adata.obs[batch_key].astype(str).to_numpy() if batch_key is not None else np.zeros(adata.n_obs, object)
    rows, enrich = [], []
    K = counts.shape[1]
    for gi, name in enumerate(names):
        if gi == ref_row:
            continue
        a = counts[gi]
        stat = float(_chi2_stat(a, b))
        used = (a + b) > 0
        dof = int(used.sum()) - 1
        if method == "chi2":
            p = float(chi2_dist.sf(stat, dof)) if dof > 0 else 1.0
        else:
            idx = np.flatnonzero(ok & ((lab == name) | (lab == str(reference))))
            z = (lab[idx] == name).astype(np.float64)
            bt = batches[idx]
            strata = [np.flatnonzero(bt == v) for v in pd.unique(bt)]
            onehot = np.zeros((len(idx), K))
            onehot[np.arange(len(idx)), code[idx]] = 1.0
            tot = onehot.sum(axis=0)
            null = []
            for s0 in range(0, n_perms, 250):
                Z = _label_draws(rng, z, strata, min(250, n_perms - s0))
                pa = Z @ onehot
                null.append(_chi2_stat(pa, tot[None, :] - pa))
            null_arr = np.concatenate(null)
            p = (int((null_arr >= stat - 1e-12 * max(1.0, stat)).sum()) + 1) / (n_perms + 1)
        na, nb = a.sum(), b.sum()
        l2r = np.log2(((a + 0.5) / (na + 0.5 * K)) / ((b + 0.5) / (nb + 0.5 * K)))
        for k, cl in enumerate(ct.columns):
            fp = fisher_exact([[a[k], na - a[k]], [b[k], nb - b[k]]])[1] if (a[k] + b[k]) > 0 else 1.0
            enrich.append({groupby: name, cluster_key: str(cl), "fraction": a[k] / na, "reference_fraction": b[k] / nb,
                           "log2_ratio": float(l2r[k]), "pvalue": float(fp)})
        top = int(np.argmax(np.abs(l2r) * used))
        rows.append({groupby: name, "statistic": stat, "dof": dof, "pvalue": p, "n_cells": int(na),
                     "top_cluster": str(ct.columns[top]), "top_log2_ratio": float(l2r[top])})
    test = pd.DataFrame(rows).set_index(groupby)
    test.insert(3, "pvalue_adj", benjamini_hochberg(test["pvalue"].to_numpy()))
    test.insert(4, "significant", test["pvalue_adj"] < alpha)
    enr = pd.DataFrame(enrich)
    enr["pvalue_adj"] = benjamini_hochberg(enr["pvalue"].to_numpy())
    enr["significant"] = enr["pvalue_adj"] < alpha
    fractions.index = fractions.index.astype(str)
    fractions.columns = fractions.columns.astype(str)
    adata.uns[key_added] = {"fractions": fractions, "test": test, "enrichment": enr}
    log_step(adata, "tl.cluster_composition",
             {"groupby": groupby, "reference": reference, "cluster_key": cluster_key, "obsm_key": obsm_key,
              "resolution": resolution, "n_neighbors": n_neighbors, "metric": metric, "method": method,
              "n_perms": n_perms if method == "permutation" else None, "batch_key": batch_key, "alpha": alpha,
              "seed": seed},
             key_added=key_added, clustered_here=clustered_here, n_clusters=K,
             n_significant=int(test["significant"].sum()))
    return finish(adata, copy)
