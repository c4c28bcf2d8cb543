"""k-nearest-neighbour graphs shared by the benchmark metrics.

One kNN search per embedding (``k`` = the largest neighbourhood any metric
needs, 90 by default as in scib-metrics) is computed once and sliced down for
the metrics that use fewer neighbours (15 for graph connectivity and Leiden,
50 for kBET, 90 for LISI).

:class:`Neighbors` mirrors ``scib_metrics.nearest_neighbors.NeighborsResults``
(``indices``, ``distances``, ``knn_graph_distances``,
``knn_graph_connectivities``, ``subset_neighbors``) so either object can be
passed to either package's metrics. The UMAP fuzzy-union connectivities are
re-implemented in vectorized numpy (float32 like ``umap-learn``) so neither
umap nor numba is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
from scipy import sparse

from ._kernels import KnnSelector, limited_threads, n_threads_for, run_blocks

#: Above this many observations ``method="auto"`` switches from exact to approximate search.
EXACT_MAX_N = 75_000

_SMOOTH_K_TOLERANCE = 1e-5
_MIN_K_DIST_SCALE = 1e-3
_FLOATMAX32 = np.finfo(np.float32).max


@dataclass
class Neighbors:
    """A kNN result: ``indices`` and ``distances`` of shape ``(n_obs, k)``, self included.

    Attribute names match ``scib_metrics.nearest_neighbors.NeighborsResults``.

    Parameters
    ----------
    indices
        ``(n_obs, k)`` integer array: the neighbours of each observation, itself in column 0.
    distances
        ``(n_obs, k)`` distances matching ``indices`` (0 in column 0).
    method
        How the graph was computed (``"precomputed"``, ``"exact"``...), for reports.

    Examples
    --------
    >>> import numpy as np
    >>> from imgprof.bench import knn
    >>> nn = knn(np.random.default_rng(0).normal(size=(200, 5)), n_neighbors=15)
    >>> nn.indices.shape, bool((nn.indices[:, 0] == np.arange(200)).all())
    ((200, 15), True)
    """

    indices: np.ndarray
    distances: np.ndarray
    method: str = field(default="precomputed", compare=False)

    def __post_init__(self):
        self.indices = np.asarray(self.indices)
        self.distances = np.asarray(self.distances)
        if self.indices.ndim != 2 or self.indices.shape != self.distances.shape:
            raise ValueError(
                f"Neighbors: indices {self.indices.shape} and distances {self.distances.shape} "
                "must be 2-D arrays of the same shape (n_obs, n_neighbors)."
            )

    @property
    def n_samples(self) -> int:
        return int(self.indices.shape[0])

    @property
    def n_neighbors(self) -> int:
        return int(self.indices.shape[1])

    def subset_neighbors(self, n: int) -> Neighbors:
        """The first ``n`` neighbours of every observation (results are sorted by distance)."""
        if n > self.n_neighbors:
            raise ValueError(f"n={n} neighbours requested but only {self.n_neighbors} were computed.")
        return Neighbors(self.indices[:, :n], self.distances[:, :n], method=self.method)

    @cached_property
    def knn_graph_distances(self) -> sparse.csr_matrix:
        """Directed kNN graph as a CSR matrix of distances (self edges kept, as in scib-metrics)."""
        n, k = self.indices.shape
        indptr = np.arange(0, n * k + 1, k)
        return sparse.csr_matrix((self.distances.ravel(), self.indices.ravel(), indptr), shape=(n, n))

    @cached_property
    def knn_graph_connectivities(self) -> sparse.csr_matrix:
        """UMAP fuzzy-union connectivities (what ``scanpy.pp.neighbors`` and scib-metrics use)."""
        return umap_connectivities(self.indices, self.distances)

    def to_scib(self):
        """The same neighbours as a ``scib_metrics`` ``NeighborsResults`` (needs scib-metrics)."""
        from scib_metrics.nearest_neighbors import NeighborsResults

        return NeighborsResults(indices=self.indices, distances=self.distances)

    @classmethod
    def from_scib(cls, res) -> Neighbors:
        """Wrap a ``scib_metrics`` ``NeighborsResults`` (or anything with ``indices``/``distances``)."""
        return cls(np.asarray(res.indices), np.asarray(res.distances))


def as_neighbors(X) -> Neighbors:
    """Accept a :class:`Neighbors` or an object with ``indices``/``distances`` (scib-metrics)."""
    if isinstance(X, Neighbors):
        return X
    if hasattr(X, "indices") and hasattr(X, "distances"):
        return Neighbors.from_scib(X)
    raise TypeError(
        f"expected a Neighbors object (see imgprof.bench.knn) or scib-metrics NeighborsResults, got {type(X).__name__}."
    )


def _exact_knn(X: np.ndarray, k: int, metric: str, n_jobs: int | None) -> tuple[np.ndarray, np.ndarray]:
    if metric == "euclidean" and X.shape[0] > _BLOCKED_MIN_N:
        return _blocked_knn(X, k, n_jobs=n_jobs)
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric=metric, n_jobs=n_jobs)
    nn.fit(X)
    dist, idx = nn.kneighbors(X, return_distance=True)
    return idx, dist


#: Above this size exact Euclidean search uses :func:`_blocked_knn` instead of scikit-learn.
_BLOCKED_MIN_N = 8192

#: :func:`_blocked_knn`'s tiles (rows x columns of one cache-sized float32 product), the random column sample
#: that bounds each row's distances, the candidates kept beyond ``k``, and the sample's seed.
_BLOCK_ROWS, _BLOCK_COLS, _SAMPLE, _MARGIN, _SEED = 256, 4096, 8192, 8, 0


def _blocked_knn(X: np.ndarray, k: int, *, n_jobs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean kNN by blocked float32 products with a per-row distance threshold.

    1. For every row, the ``k + _MARGIN``-th smallest squared distance to a random
       sample of ``_SAMPLE`` columns is an upper bound of its ``k + _MARGIN``-th nearest
       neighbour distance (a float32 tolerance is added).
    2. One pass over all pairs (``[x, |x|², 1] · [-2y, 1, |y|²]`` in float32,
       cache-sized tiles) keeps only the pairs under that bound (about
       ``k · n / _SAMPLE`` per row), found with a word-wise ``nonzero``.
    3. The best ``k + _MARGIN`` candidates are re-measured in float64 and sorted.

    Results equal brute force up to ties; about 1.5× faster than
    scikit-learn's brute force on one core and lighter on memory.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    Xc = X - X.mean(axis=0)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    A = np.ascontiguousarray(np.hstack([Xc, sq[:, None], np.ones((n, 1))]), dtype=np.float32)
    BT = np.ascontiguousarray(np.hstack([-2.0 * Xc, np.ones((n, 1)), sq[:, None]]).T, dtype=np.float32)
    sel = KnnSelector(Xc, sq, k, A, BT, np.float32, sample=_SAMPLE, margin=_MARGIN, seed=_SEED)
    out_i = np.empty((n, k), dtype=np.int64)
    out_d = np.empty((n, k), dtype=np.float64)

    def work(start: int) -> None:
        stop = min(start + _BLOCK_ROWS, n)
        Ar = A[start:stop]
        state = sel.start(Ar, start, stop, _BLOCK_COLS)
        G = np.empty((stop - start, _BLOCK_COLS), dtype=np.float32)
        for c0 in range(0, n, _BLOCK_COLS):
            c1 = min(c0 + _BLOCK_COLS, n)
            g = G[:, : c1 - c0]
            np.matmul(Ar, BT[:, c0:c1], out=g)
            sel.scan(state, g, c0)
        out_i[start:stop], out_d[start:stop] = sel.finish(state, start, stop)

    starts = list(range(0, n, _BLOCK_ROWS))
    with limited_threads("blas"):
        run_blocks(work, starts, min(n_threads_for(n_jobs), len(starts)))
    return out_i, out_d


def _pynndescent_knn(X: np.ndarray, k: int, metric: str, random_state: int, n_jobs: int | None):
    try:
        from pynndescent import NNDescent
    except ImportError as e:  # pragma: no cover - optional dependency
        raise ImportError("method='pynndescent' needs the pynndescent package (pip install pynndescent).") from e
    n = X.shape[0]
    # Parameters umap/scanpy/scib-metrics use.
    index = NNDescent(
        X,
        n_neighbors=k,
        metric=metric,
        random_state=random_state,
        low_memory=True,
        n_jobs=n_jobs if n_jobs is not None else -1,
        compressed=False,
        n_trees=min(64, 5 + round(n**0.5 / 20.0)),
        n_iters=max(5, round(float(np.log2(n)))),
        max_candidates=60,
    )
    return index.neighbor_graph


def self_first(idx: np.ndarray, dist: np.ndarray) -> None:
    """Put each observation itself in column 0 with distance exactly 0 (in place).

    Exact search can order exact duplicates arbitrarily and floating error can
    give self a distance of ~1e-8; UMAP connectivities and LISI assume the
    self edge comes first at distance 0.
    """
    n = idx.shape[0]
    rows = np.arange(n)
    is_self = idx == rows[:, None]
    has = is_self.any(axis=1)
    pos = np.where(has, is_self.argmax(axis=1), 0)
    move = has & (pos > 0)
    if move.any():
        r = rows[move]
        p = pos[move]
        idx[r, p] = idx[r, 0]
        dist[r, p] = dist[r, 0]
        idx[r, 0] = r
    dist[has, 0] = 0.0


def knn(
    X: np.ndarray,
    n_neighbors: int = 90,
    *,
    method: Literal["auto", "exact", "pynndescent"] = "auto",
    metric: Literal["euclidean", "cosine"] = "euclidean",
    random_state: int = 0,
    n_jobs: int | None = None,
) -> Neighbors:
    """Compute the k nearest neighbours of every row of ``X`` (self included, first).

    Parameters
    ----------
    X
        Array ``(n_obs, n_dims)``, e.g. an embedding from ``adata.obsm``.
    n_neighbors
        Neighbours per observation, including the observation itself.
    method
        ``"exact"`` (scikit-learn brute force, chunked and multithreaded),
        ``"pynndescent"`` (approximate, the search scib-metrics and scanpy use) or
        ``"auto"``: exact up to 75,000 observations, pynndescent above when installed.
    metric
        Distance.
    random_state, n_jobs
        Seed and threads of the search (``None``: all cores).

    Returns
    -------
    :class:`Neighbors` with ``indices``/``distances`` of shape ``(n_obs, n_neighbors)`` sorted by distance.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> nn = ip.bench.knn(adata.X, n_neighbors=15)
    >>> nn.n_neighbors
    15
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"knn: X must be 2-D (n_obs, n_dims), got shape {X.shape}.")
    n = X.shape[0]
    if not np.isfinite(X).all():
        raise ValueError(f"knn: X contains {int((~np.isfinite(X)).sum())} NaN/inf value(s); impute or drop them first.")
    if n_neighbors < 2:
        raise ValueError(f"knn: n_neighbors must be >= 2 (self plus one), got {n_neighbors}.")
    if n_neighbors > n:
        raise ValueError(f"knn: n_neighbors={n_neighbors} exceeds the number of observations ({n}).")
    if method not in ("auto", "exact", "pynndescent"):
        raise ValueError(f"knn: method must be 'auto', 'exact' or 'pynndescent', got {method!r}.")
    if method == "auto":
        method = "exact"
        if n > EXACT_MAX_N:
            try:
                import pynndescent  # noqa: F401

                method = "pynndescent"
            except ImportError:  # pragma: no cover
                method = "exact"
    if method == "exact":
        idx, dist = _exact_knn(X, n_neighbors, metric, n_jobs)
    else:
        idx, dist = _pynndescent_knn(X, n_neighbors, metric, random_state, n_jobs)
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    dist = np.ascontiguousarray(dist, dtype=np.float32 if X.dtype == np.float32 else np.float64)
    self_first(idx, dist)
    return Neighbors(idx, dist, method=method)


def _smooth_knn_dist(distances: np.ndarray, k: float, n_iter: int = 64, local_connectivity: float = 1.0):
    """Vectorized ``umap.umap_.smooth_knn_dist`` (float32 arithmetic, sequential sums, like umap-learn)."""
    d = np.asarray(distances, dtype=np.float32)
    n = d.shape[0]
    target = np.log2(k)
    rho = np.zeros(n, dtype=np.float32)
    # rho = distance to the first non-zero neighbour (local_connectivity=1).
    nz = d > 0
    n_nz = nz.sum(axis=1)
    index = int(np.floor(local_connectivity))
    interpolation = np.float32(local_connectivity - index)
    has = n_nz >= local_connectivity
    if index > 0:
        # the index-th non-zero distance of each row
        csum = np.cumsum(nz, axis=1)
        col = np.argmax(csum >= index, axis=1)
        rho[has] = d[has, col[has]]
        if interpolation > _SMOOTH_K_TOLERANCE:
            col2 = np.argmax(csum >= index + 1, axis=1)
            rho[has] += interpolation * (d[has, col2[has]] - d[has, col[has]])
    else:
        first = np.argmax(nz, axis=1)
        rho[has] = interpolation * d[has, first[has]]
    some = (~has) & (n_nz > 0)
    if some.any():
        rho[some] = np.where(nz[some], d[some], 0).max(axis=1)

    lo = np.zeros(n, dtype=np.float32)
    hi = np.full(n, _FLOATMAX32, dtype=np.float32)
    mid = np.ones(n, dtype=np.float32)
    active = np.ones(n, dtype=bool)
    dd = d[:, 1:] - rho[:, None]
    pos = dd > 0
    for _ in range(n_iter):
        a = np.flatnonzero(active)
        if a.size == 0:
            break
        m = mid[a]
        with np.errstate(over="ignore", under="ignore"):
            vals = np.where(pos[a], np.exp(-(dd[a] / m[:, None])), np.float32(1.0)).astype(np.float32)
        psum = np.cumsum(vals, axis=1, dtype=np.float32)[:, -1] if vals.shape[1] else np.zeros(a.size, np.float32)
        done = np.abs(psum - target) < _SMOOTH_K_TOLERANCE
        over = (~done) & (psum > target)
        under = (~done) & ~(psum > target)
        l, h = lo[a], hi[a]
        h = np.where(over, m, h)
        l = np.where(under, m, l)
        new_mid = np.where(
            over,
            (l + h) / np.float32(2.0),
            np.where(under & (h >= _FLOATMAX32), m * np.float32(2.0), (l + h) / np.float32(2.0)),
        ).astype(np.float32)
        new_mid = np.where(done, m, new_mid)
        lo[a], hi[a], mid[a] = l, h, new_mid
        active[a[done]] = False
    result = mid.copy()
    mean_all = np.float32(np.mean(d))
    row_mean = d.mean(axis=1)
    floor = np.where(rho > 0, _MIN_K_DIST_SCALE * row_mean, _MIN_K_DIST_SCALE * mean_all).astype(np.float32)
    result = np.where(result < floor, floor, result).astype(np.float32)
    return result, rho


def umap_connectivities(indices: np.ndarray, distances: np.ndarray) -> sparse.csr_matrix:
    """UMAP fuzzy simplicial set (union) of a kNN graph, as ``umap.fuzzy_simplicial_set`` computes it.

    Parameters
    ----------
    indices, distances
        ``(n_obs, k)`` kNN result with self in column 0.

    Returns
    -------
    Symmetric CSR matrix of connectivities in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np, imgprof as ip
    >>> nn = ip.bench.knn(np.random.default_rng(0).normal(size=(100, 5)), n_neighbors=10)
    >>> C = ip.bench.umap_connectivities(nn.indices, nn.distances)
    >>> C.shape, bool(abs(C - C.T).max() < 1e-12)
    ((100, 100), True)
    """
    indices = np.asarray(indices)
    n, k = indices.shape
    d = np.asarray(distances, dtype=np.float32)
    sigmas, rhos = _smooth_knn_dist(d, float(k))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        val = np.exp(-((d - rhos[:, None]) / sigmas[:, None])).astype(np.float32)
    val = np.where((d - rhos[:, None] <= 0.0) | (sigmas[:, None] == 0.0), np.float32(1.0), val)
    val = np.where(indices == np.arange(n)[:, None], np.float32(0.0), val)
    val = np.where(indices == -1, np.float32(0.0), val)
    rows = np.repeat(np.arange(n), k)
    cols = np.where(indices == -1, 0, indices).ravel()
    result = sparse.coo_matrix((val.ravel(), (rows, cols)), shape=(n, n)).tocsr()
    result.eliminate_zeros()
    transpose = result.T.tocsr()
    prod = result.multiply(transpose)
    out = (result + transpose - prod).tocsr()
    out.eliminate_zeros()
    return out


def default_n_jobs() -> int:
    return os.cpu_count() or 1
