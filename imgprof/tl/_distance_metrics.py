"""The registered single-cell distances: one decorated function each in :data:`DISTANCES`.

Each distance takes the grouped cells and a ``P × 2`` array of group-index pairs and
returns ``P`` values. Sums over all pairs of cells go through the blocked kernels of
:mod:`imgprof.tl._distance_kernels`, so no ``n × n`` matrix is held for all cells.
Adding a distance is one function here, decorated with ``@DISTANCES.register(name, kind=...,
pertpy=..., description=...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._core.registry import Registry
from ._distance_groups import Grouped


@dataclass(frozen=True)
class DistanceSpec:
    """One registered distance: its function and what it is (``DISTANCES[name]``)."""

    fn: Callable[..., np.ndarray]
    kind: str  # "distribution" or "mean"
    pertpy: str | None  # the pertpy metric name it equals, if any
    symmetric: bool = True
    description: str = ""


class DistanceRegistry(Registry):
    """The :class:`~imgprof._core.registry.Registry` of distances; ``DISTANCES[name]`` is its :class:`DistanceSpec`."""

    def __getitem__(self, name: str) -> DistanceSpec:
        entry = self.get(name)
        return DistanceSpec(entry.obj, **entry.meta)

    def spec(self, name: str, where: str) -> DistanceSpec:
        """:class:`DistanceSpec` of ``name``; a clear error naming ``metric=`` and the choices otherwise."""
        entry = self.get(name, where=where)
        return DistanceSpec(entry.obj, **entry.meta)


#: Registry ``name → DistanceSpec``; :func:`imgprof.tl.distance` accepts these names as ``metric=``.
DISTANCES = DistanceRegistry("distance", param="metric")


def kernel_sums(grp: Grouped, pairs: np.ndarray, kind: int, gamma: float, block: int) -> tuple[np.ndarray, np.ndarray]:
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



@DISTANCES.register("edistance", kind="distribution", pertpy="edistance",
                    description="energy distance 2δ − σ_X − σ_Y of mean euclidean distances (Peidli et al. 2024)")
def _edistance(grp: Grouped, pairs: np.ndarray, *, block: int = 512) -> np.ndarray:
    """Energy distance ``2 E|x - y| - E|x - x'| - E|y - y'|``: zero only for equal distributions.

    Examples
    --------
    Two groups with the same mean (0) but different spread: the mean distances see
    nothing, the energy distance does (``2 * 3 - 1 - 3``, the mean distances across,
    within the first and within the second group).

    >>> grp = Grouped(np.array([[-1.0], [1.0], [-3.0], [3.0]]), np.array([0, 2, 4]), ["narrow", "wide"])
    >>> _edistance(grp, np.array([[0, 1]])).round(6), _euclidean(grp, np.array([[0, 1]]))
    (array([2.]), array([0.]))
    """
    within, cross = kernel_sums(grp, pairs, 0, 1.0, block)
    n = grp.sizes.astype(np.float64)
    a, b = pairs[:, 0], pairs[:, 1]
    return 2.0 * cross / (n[a] * n[b]) - within[a] / n[a] ** 2 - within[b] / n[b] ** 2



@DISTANCES.register("mmd", kind="distribution", pertpy="mmd",
                    description="maximum mean discrepancy (biased V-statistic), RBF kernel, median-heuristic gamma")
def _mmd(grp: Grouped, pairs: np.ndarray, *, kernel: str = "rbf", gamma: float | None = None, block: int = 512,
         seed: int = 0) -> np.ndarray:
    """Maximum mean discrepancy (biased): ``E k(x, x') + E k(y, y') - 2 E k(x, y)``.

    ``kernel="rbf"`` (default) uses ``exp(-gamma * |x - y|²)`` with the median-heuristic
    ``gamma`` unless one is given; ``kernel="linear"`` (pertpy's default) reduces to the
    squared distance between the group means.

    Examples
    --------
    >>> grp = Grouped(np.array([[0.0], [2.0], [5.0], [7.0]]), np.array([0, 2, 4]), ["a", "b"])
    >>> pairs = np.array([[0, 1]])
    >>> _mmd(grp, pairs, kernel="linear")  # (mean 6 - mean 1)²
    array([25.])
    >>> _mmd(grp, pairs, gamma=0.5).round(3)  # RBF: bounded by 2, however far apart the groups are
    array([1.13])
    """
    a, b = pairs[:, 0], pairs[:, 1]
    if kernel == "linear":  # pertpy's default: mean of x·y terms = ||mean_a - mean_b||²
        M = grp.means()
        return ((M[a] - M[b]) ** 2).sum(axis=1)
    if kernel != "rbf":
        raise ValueError(f"kernel={kernel!r}: expected 'rbf' or 'linear'.")
    if gamma is None:
        gamma = median_heuristic_gamma(grp.X, seed=seed)
    within, cross = kernel_sums(grp, pairs, 1, float(gamma), block)
    n = grp.sizes.astype(np.float64)
    return within[a] / n[a] ** 2 + within[b] / n[b] ** 2 - 2.0 * cross / (n[a] * n[b])



@DISTANCES.register("wasserstein", kind="distribution", pertpy=None,
                    description="2-Wasserstein: sliced (random projections) or exact (small groups)")
def _wasserstein(grp: Grouped, pairs: np.ndarray, *, method: str = "sliced", n_projections: int = 100,
                 seed: int = 0, max_exact: int = 250_000) -> np.ndarray:
    """2-Wasserstein distance: ``"sliced"`` (default; mean over seeded random 1-D projections) or ``"exact"``.

    The exact distance solves the optimal transport (an assignment for equal group
    sizes, a linear program otherwise) and is limited to ``max_exact`` cell pairs.
    The sliced one averages squared 1-D distances over directions, so it is smaller
    in more than one dimension.

    Examples
    --------
    Two groups shifted by 3 along the first of two features:

    >>> grp = Grouped(np.array([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 1.0]]), np.array([0, 2, 4]), ["a", "b"])
    >>> _wasserstein(grp, np.array([[0, 1]]), method="exact")
    array([3.])
    >>> _wasserstein(grp, np.array([[0, 1]]), n_projections=100, seed=0).round(2)  # about 3 / sqrt(2)
    array([2.12])
    """
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



@DISTANCES.register("mean_pairwise", kind="distribution", pertpy="mean_pairwise",
                    description="mean euclidean distance between cells of the two groups")
def _mean_pairwise(grp: Grouped, pairs: np.ndarray, *, block: int = 512) -> np.ndarray:
    """Mean euclidean distance over every (cell of the first group, cell of the second) pair.

    Examples
    --------
    Cells at 3 and at ``sqrt(10)`` from each other: the spread within the groups adds
    to the distance between their means (3).

    >>> cells = np.array([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 1.0]])
    >>> d = _mean_pairwise(Grouped(cells, np.array([0, 2, 4]), ["a", "b"]), np.array([[0, 1]]))
    >>> bool(np.isclose(d[0], (3 + 3 + 2 * np.sqrt(10)) / 4))
    True
    """
    _, cross = kernel_sums(grp, pairs, 0, 1.0, block)
    n = grp.sizes.astype(np.float64)
    return cross / (n[pairs[:, 0]] * n[pairs[:, 1]])



@DISTANCES.register("classifier", kind="distribution", pertpy="classifier_proba", symmetric=False,
                    description="mean P(perturbed) of a logistic regression on held-out perturbed cells")
def _classifier(grp: Grouped, pairs: np.ndarray, *, test_fraction: float = 0.2, seed: int = 0,
                max_iter: int = 100) -> np.ndarray:
    """pertpy's ``classifier_proba``: mean P(perturbed) of a logistic regression on held-out perturbed cells.

    Each pair is ``(perturbed, control)``: the model is trained on the control cells and
    the perturbed cells but those :func:`classifier_split` holds out, and scores the
    held-out ones. Not symmetric: swapping the pair changes the value.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> cells = np.concatenate([rng.normal(0, 1, (40, 2)), rng.normal(1, 1, (10, 2))])
    >>> grp = Grouped(cells, np.array([0, 40, 50]), ["control", "drug"])
    >>> _classifier(grp, np.array([[1, 0], [0, 1]])).round(2)  # drug vs control, control vs drug
    array([0.3 , 0.78])
    """
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



@DISTANCES.register("euclidean", kind="mean", pertpy="euclidean", description="euclidean distance between group means")
def _euclidean(grp: Grouped, pairs: np.ndarray) -> np.ndarray:
    """Euclidean distance between the group means (the cells' spread is ignored).

    Examples
    --------
    >>> from imgprof.tl._distance_groups import group_cells
    >>> grp, _ = group_cells(np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 4.0]]), ["a", "a", "b"])
    >>> _euclidean(grp, np.array([[0, 1]]))  # means (1, 0) and (4, 4): sqrt(3² + 4²)
    array([5.])
    """
    M = grp.means()
    return np.sqrt(((M[pairs[:, 0]] - M[pairs[:, 1]]) ** 2).sum(axis=1))




@DISTANCES.register("cosine", kind="mean", pertpy="cosine_distance", description="1 − cosine similarity of group means")
def _cosine(grp: Grouped, pairs: np.ndarray) -> np.ndarray:
    """``1 - cos`` of the angle between the group means: their lengths do not matter.

    Examples
    --------
    >>> grp = Grouped(np.array([[1.0, 0.0], [5.0, 5.0], [-2.0, 0.0]]), np.array([0, 1, 2, 3]), ["x", "y", "z"])
    >>> _cosine(grp, np.array([[0, 1], [0, 2]])).round(4)  # 45° apart: 1 - 1/sqrt(2); opposite: 2
    array([0.2929, 2.    ])
    """
    M = grp.means()
    x, y = M[pairs[:, 0]], M[pairs[:, 1]]
    return 1.0 - (x * y).sum(axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))




@DISTANCES.register("pearson", kind="mean", pertpy="pearson_distance",
                    description="1 − Pearson correlation of group means (across features)")
def _pearson(grp: Grouped, pairs: np.ndarray) -> np.ndarray:
    """``1 - r``, with ``r`` the Pearson correlation of two group means across features.

    Unlike ``cosine``, each mean is centred first: adding a constant to every feature
    of a group does not change the distance.

    Examples
    --------
    >>> means = np.array([[1.0, 2.0, 3.0], [12.0, 14.0, 16.0], [3.0, 2.0, 1.0]])
    >>> d = _pearson(Grouped(means, np.arange(4), ["x", "y", "z"]), np.array([[0, 1], [0, 2]]))
    >>> np.abs(d).round(6)  # x and y rise together (r = 1), x and z are mirrored (r = -1)
    array([0., 2.])
    """
    M = grp.means()
    M = M - M.mean(axis=1, keepdims=True)
    x, y = M[pairs[:, 0]], M[pairs[:, 1]]
    return 1.0 - (x * y).sum(axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))



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

