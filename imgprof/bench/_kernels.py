"""Array kernels behind the benchmark metrics (numpy/scipy only, no AnnData).

* :func:`cluster_distance_sums`: for every observation, the sum of its
  distances to the members of every cluster, in one blocked pass over the
  pairwise distances (BLAS for the dot products, cache-sized blocks,
  multithreaded). Every silhouette variant (label, batch, BRAS, isolated
  labels) is derived from these sums.
* :func:`lisi_probabilities` / :func:`simpson_index`: the LISI
  perplexity-calibrated neighbour weights, vectorized over all observations;
  the weights depend only on the distances, so iLISI and cLISI share them.
* :func:`pcr`: principal component regression.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import pandas as pd
from scipy import sparse

BetweenCluster = Literal["nearest", "mean_other", "furthest"]


def codes_of(values) -> tuple[np.ndarray, int]:
    """Integer codes ``0..L-1`` (pandas categorical order) and ``L``."""
    cat = pd.Categorical(np.asarray(values))
    codes = np.asarray(cat.codes, dtype=np.int64)
    return codes, len(cat.categories)


def limited_threads(user_api: str | None = "blas"):
    """Context manager limiting BLAS (``user_api="blas"``) or all native thread pools (``None``) to one thread.

    Used where we parallelize with our own threads, and around ARPACK, whose
    small dense products are much slower with a multithreaded BLAS.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api=user_api)


def n_threads_for(n_jobs: int | None) -> int:
    if n_jobs is None or n_jobs < 1:
        return os.cpu_count() or 1
    return int(n_jobs)


def cluster_distance_sums(
    X: np.ndarray,
    codes: np.ndarray,
    n_clusters: int,
    *,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    dtype=None,
    block_rows: int = 128,
    block_cols: int = 2048,
    n_jobs: int | None = None,
    knn_k: int | None = None,
):
    """``S[i, c] = sum_{j in cluster c} d(x_i, x_j)`` for all observations and clusters.

    The pairwise distances are produced tile by tile (``block_rows`` ×
    ``block_cols``, cache-sized) and never stored: one BLAS product per tile
    on augmented vectors gives the squared distances directly
    (``[x, |x|², 1] · [-2y, 1, |y|²]``), columns are sorted by cluster so each
    tile is summed into a single cluster, and row blocks run in threads.

    Parameters
    ----------
    X
        ``(n, d)`` data.
    codes
        ``(n,)`` cluster codes in ``0..n_clusters-1``.
    metric
        ``"euclidean"`` or ``"cosine"`` (``1 - cos``, clipped to ``[0, 2]`` as scib-metrics does).
    dtype
        Precision of the distance tiles; default float64 up to 20,000
        observations, float32 above (sums are accumulated in float64; relative
        error about 1e-6).
    block_rows, block_cols
        Tile shape.
    n_jobs
        Threads (default: all cores).
    knn_k
        Also return the exact ``knn_k`` nearest neighbours (Euclidean, self
        included) found in the same pass over the distances (see
        :func:`knn_from_candidates`): ``(S, indices, distances)``.

    Returns
    -------
    ``(n, n_clusters)`` float64 array (and the kNN arrays when ``knn_k`` is set).
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    codes = np.asarray(codes, dtype=np.int64)
    if knn_k is not None and metric != "euclidean":
        raise ValueError("knn_k is only supported with metric='euclidean'.")
    if dtype is None:
        dtype = np.float64 if n <= 20_000 else np.float32
    if metric == "cosine":
        norms = np.sqrt(np.einsum("ij,ij->i", X, X))
        with np.errstate(divide="ignore", invalid="ignore"):
            Xn = X / norms[:, None]
        A = np.hstack([Xn, np.ones((n, 1))])
        B = np.hstack([-Xn, np.ones((n, 1))])
    elif metric == "euclidean":
        # Centering does not change distances and reduces cancellation in |x|^2 + |y|^2 - 2xy.
        Xc = X - X.mean(axis=0)
        sq = np.einsum("ij,ij->i", Xc, Xc)
        A = np.hstack([Xc, sq[:, None], np.ones((n, 1))])
        B = np.hstack([-2.0 * Xc, np.ones((n, 1)), sq[:, None]])
    else:
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}.")
    order = np.argsort(codes, kind="stable")
    A = np.ascontiguousarray(A, dtype=dtype)
    BT = np.ascontiguousarray(B[order].T, dtype=dtype)
    bounds = np.searchsorted(codes[order], np.arange(n_clusters + 1))
    tiles = [
        (k, c, min(c + block_cols, bounds[k + 1]))
        for k in range(n_clusters)
        for c in range(bounds[k], bounds[k + 1], block_cols)
    ]
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)  # column of observation i in the sorted order
    out = np.zeros((n, n_clusters), dtype=np.float64)
    if knn_k is not None:
        sel = KnnSelector(Xc, sq, knn_k, A, BT, dtype)
        out_i = np.empty((n, knn_k), dtype=np.int64)
        out_d = np.empty((n, knn_k), dtype=np.float64)

    def work(start: int) -> None:
        stop = min(start + block_rows, n)
        Ar = A[start:stop]
        acc = np.zeros((stop - start, n_clusters), dtype=np.float64)
        G = np.empty((stop - start, block_cols), dtype=dtype)
        rows = np.arange(start, stop)
        if knn_k is not None:
            state = sel.start(Ar, start, stop, block_cols)
        for k, c0, c1 in tiles:
            g = G[:, : c1 - c0]
            np.matmul(Ar, BT[:, c0:c1], out=g)
            if knn_k is not None:
                sel.scan(state, g, c0)
            if metric == "euclidean":
                np.maximum(g, 0, out=g)
                np.sqrt(g, out=g)
                # exact zero self-distance
                hit = (pos[rows] >= c0) & (pos[rows] < c1)
                if hit.any():
                    g[np.flatnonzero(hit), pos[rows[hit]] - c0] = 0
            else:
                np.clip(g, 0, 2, out=g)
            acc[:, k] += g.sum(axis=1, dtype=np.float64)
        out[start:stop] = acc
        if knn_k is not None:
            i_, d_ = sel.finish(state, start, stop, col_index=order)
            out_i[start:stop], out_d[start:stop] = i_, d_

    starts = list(range(0, n, block_rows))
    with limited_threads("blas"):
        run_blocks(work, starts, min(n_threads_for(n_jobs), len(starts)))
    if knn_k is not None:
        return out, out_i, out_d
    return out


class KnnSelector:
    """Exact Euclidean kNN from a blocked pass over squared distances ``A @ BT``.

    ``A = [x, |x|², 1]`` and ``BT = [-2y, 1, |y|²]ᵀ`` (rows centered), so a tile
    product is a tile of squared distances.

    1. :meth:`start`: for every row of a block, the ``k + margin``-th smallest
       squared distance to a fixed random sample of columns bounds its
       ``k + margin``-th nearest neighbour distance from above (plus a
       tolerance covering float32 rounding).
    2. :meth:`scan`: in each tile, only the pairs under that bound are kept
       (about ``k · n / sample`` per row), found with a word-wise ``nonzero``
       since hits are rare.
    3. :meth:`finish`: the best ``k + margin`` candidates are re-measured in
       float64 and sorted; results equal brute force up to exact ties.
    """

    def __init__(self, Xc, sq, k, A, BT, dtype, *, sample: int = 8192, margin: int = 8, seed: int = 0):
        n = Xc.shape[0]
        self.Xc, self.k, self.dtype = Xc, int(k), dtype
        self.kk = min(n, self.k + margin)
        rng = np.random.default_rng(seed)
        cols = np.sort(rng.choice(n, size=min(n, max(sample, 4 * self.kk)), replace=False))
        self.BS = np.ascontiguousarray(BT[:, cols])
        self.tol = 1e-5 * (sq + sq.max()) + 1e-9

    def start(self, Ar, start, stop, block_cols):
        thr = np.partition(Ar @ self.BS, self.kk - 1, axis=1)[:, self.kk - 1] + self.tol[start:stop]
        R = stop - start
        return {"thr": thr.astype(self.dtype)[:, None], "M": np.empty((R, block_cols), dtype=bool),
                "rows": [], "cols": [], "vals": []}

    def scan(self, state, g, c0):
        R, w = g.shape
        m = state["M"][:, :w]
        np.less_equal(g, state["thr"], out=m)
        if w % 8 == 0:
            wr, wc = np.nonzero(m.view(np.uint64))
            rr, kb = np.nonzero(m.reshape(R, w // 8, 8)[wr, wc])
            r, cc = wr[rr], wc[rr] * 8 + kb
        else:
            r, cc = np.nonzero(m)
        state["rows"].append(r)
        state["cols"].append(cc + c0)
        state["vals"].append(g[r, cc])

    def finish(self, state, start, stop, col_index=None):
        R, k, kk = stop - start, self.k, self.kk
        r = np.concatenate(state["rows"])
        cc = np.concatenate(state["cols"])
        v = np.concatenate(state["vals"])
        if col_index is not None:
            cc = col_index[cc]
        o = np.argsort(r, kind="stable")
        r, cc, v = r[o], cc[o], v[o]
        cnt = np.bincount(r, minlength=R)
        first = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        pos = np.arange(r.size) - first[r]
        width = int(cnt.max())
        V = np.full((R, width), np.inf, dtype=np.float64)
        C = np.zeros((R, width), dtype=np.int64)
        V[r, pos] = v
        C[r, pos] = cc
        q = min(kk, width)
        sel = np.argpartition(V, q - 1, axis=1)[:, :q] if width > q else np.argsort(V, axis=1)[:, :q]
        Cs = np.take_along_axis(C, sel, 1)
        bad = ~np.isfinite(np.take_along_axis(V, sel, 1))
        Xc = self.Xc
        D = np.sqrt(np.maximum(((Xc[Cs] - Xc[start:stop, None, :]) ** 2).sum(-1), 0.0))
        D[bad] = np.inf
        o2 = np.argsort(D, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(Cs, o2, 1), np.take_along_axis(D, o2, 1)


def scaled_clisi(lisi: np.ndarray, n_labels: int) -> float:
    """cLISI scaled to ``[0, 1]`` as scib does: ``(n_labels - median) / (n_labels - 1)``."""
    return float((n_labels - np.nanmedian(lisi)) / (n_labels - 1))


def scaled_ilisi(lisi: np.ndarray, n_batches: int) -> float:
    """iLISI scaled to ``[0, 1]`` as scib does: ``(median - 1) / (n_batches - 1)``."""
    return float((np.nanmedian(lisi) - 1) / (n_batches - 1))


def run_blocks(work, starts, n_threads: int) -> None:
    if n_threads <= 1:
        for s in starts:
            work(s)
    else:
        with ThreadPoolExecutor(n_threads) as ex:
            list(ex.map(work, starts))


def silhouette_from_sums(
    S: np.ndarray,
    codes: np.ndarray,
    between_cluster_distances: BetweenCluster = "nearest",
) -> np.ndarray:
    """Per-observation silhouette from :func:`cluster_distance_sums` (scib-metrics / sklearn formula).

    Singleton clusters and 0/0 give 0, as ``jnp.nan_to_num`` does in scib-metrics.
    """
    n, L = S.shape
    freqs = np.bincount(codes, minlength=L).astype(np.float64)
    rows = np.arange(n)
    own = S[rows, codes]
    with np.errstate(divide="ignore", invalid="ignore"):
        intra = own / (freqs[codes] - 1.0)
        if between_cluster_distances == "nearest":
            M = S / freqs[None, :]
            M[rows, codes] = np.inf
            inter = M.min(axis=1)
        elif between_cluster_distances == "furthest":
            M = S / freqs[None, :]
            M[rows, codes] = -np.inf
            inter = M.max(axis=1)
        elif between_cluster_distances == "mean_other":
            inter = (S.sum(axis=1) - own) / (freqs.sum() - freqs[codes])
        else:
            raise ValueError(
                "between_cluster_distances must be 'nearest', 'mean_other' or 'furthest', "
                f"got {between_cluster_distances!r}."
            )
        sil = (inter - intra) / np.maximum(intra, inter)
    return np.nan_to_num(sil)


def silhouette_samples(
    X: np.ndarray,
    labels,
    *,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    between_cluster_distances: BetweenCluster = "nearest",
    n_jobs: int | None = None,
) -> np.ndarray:
    """Silhouette of every observation (``sklearn.metrics.silhouette_samples`` for ``"nearest"``)."""
    codes, L = codes_of(labels)
    S = cluster_distance_sums(X, codes, L, metric=metric, n_jobs=n_jobs)
    return silhouette_from_sums(S, codes, between_cluster_distances)


# --------------------------------------------------------------------------- LISI


def lisi_probabilities(
    knn_dists: np.ndarray,
    knn_idx: np.ndarray,
    perplexity: float,
    tol: float = 1e-5,
    max_tries: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian neighbour weights calibrated to ``perplexity`` (Harmony's LISI / scib-metrics binary search).

    Self edges get weight 0. Returns ``(P, H)``: row-normalized weights
    ``(n, k)`` and the entropy per row (``H == 0`` marks rows whose weights
    all vanished; their Simpson index is -1, as in scib-metrics).
    """
    D = np.asarray(knn_dists, dtype=np.float64)
    n = D.shape[0]
    mask = np.asarray(knn_idx) != np.arange(n)[:, None]
    # Self edges get weight 0: a huge finite distance makes exp(-d * beta) exactly 0 and d * P exactly 0.
    Dm = np.where(mask, D, 1e300)
    logU = np.log(perplexity)

    def hbeta(Dr, beta):
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            P = np.exp(-Dr * beta[:, None])
            sumP = P.sum(axis=1)
            ok = sumP != 0
            safe = np.where(ok, sumP, 1.0)
            H = np.where(ok, np.log(safe) + beta * np.einsum("ij,ij->i", Dr, P) / safe, 0.0)
            P /= safe[:, None]
            P[~ok] = 0.0
        return H, P

    beta = np.ones(n)
    betamin = np.full(n, -np.inf)
    betamax = np.full(n, np.inf)
    H, P = hbeta(Dm, beta)
    Hdiff = H - logU
    tries = np.zeros(n, dtype=np.int64)
    active = (np.abs(Hdiff) >= tol) & (tries < max_tries)
    while active.any():
        a = np.flatnonzero(active)
        hd, b, bmin, bmax = Hdiff[a], beta[a], betamin[a], betamax[a]
        pos = hd > 0
        new_bmin = np.where(pos, b, bmin)
        new_bmax = np.where(pos, bmax, b)
        new_b = np.where(
            pos,
            np.where(bmax == np.inf, b * 2, (b + bmax) / 2),
            np.where(bmin == -np.inf, b / 2, (b + bmin) / 2),
        )
        h, p = hbeta(Dm[a], new_b)
        H[a], P[a] = h, p
        Hdiff[a] = h - logU
        beta[a], betamin[a], betamax[a] = new_b, new_bmin, new_bmax
        tries[a] += 1
        active[a] = (np.abs(Hdiff[a]) >= tol) & (tries[a] < max_tries)
    return P, H


def simpson_index(P: np.ndarray, H: np.ndarray, knn_idx: np.ndarray, codes: np.ndarray, n_labels: int) -> np.ndarray:
    """Simpson index per row: ``sum_l (sum of P over neighbours with label l)^2``; -1 where ``H == 0``."""
    n, k = P.shape
    nb = codes[np.asarray(knn_idx)]
    rows = np.repeat(np.arange(n), k)
    M = sparse.csr_matrix((P.ravel(), (rows, nb.ravel())), shape=(n, n_labels))
    M.sum_duplicates()
    simpson = np.asarray(M.multiply(M).sum(axis=1)).ravel()
    return np.where(H == 0, -1.0, simpson)


# --------------------------------------------------------------------------- PCR


def pcr(
    X: np.ndarray,
    covariate,
    *,
    categorical: bool = False,
    n_components: int | None = None,
) -> float:
    """Principal component regression: variance-weighted R² of each PC on the covariate.

    Same formula as ``scib_metrics.utils.principal_component_regression``: PCA of
    centered ``X`` (all components unless ``n_components``), R² of each PC from
    a least-squares fit on the centered covariate (one-hot when categorical),
    clipped at 0, averaged with the PC variances as weights. For a categorical
    covariate with all components this equals the between-group share of the
    total variance, computed directly without the SVD.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"pcr: X must be 2-D, got shape {X.shape}.")
    cov = np.asarray(covariate)
    if cov.shape[0] != X.shape[0]:
        raise ValueError(f"pcr: X has {X.shape[0]} rows but the covariate has {cov.shape[0]}.")
    n = X.shape[0]
    max_comp = min(X.shape)
    if n_components is not None and n_components > max_comp:
        raise ValueError(f"n_components = {n_components} must be <= min(n_obs, n_features) = {max_comp}")
    Xc = X - X.mean(axis=0)
    if categorical:
        codes, L = codes_of(cov.ravel())
        if n_components is None or n_components == max_comp:
            counts = np.bincount(codes, minlength=L).astype(np.float64)
            sums = np.zeros((L, X.shape[1]))
            np.add.at(sums, codes, Xc)
            keep = counts > 0
            between = float(((sums[keep] ** 2) / counts[keep, None]).sum())
            total = float((Xc**2).sum())
            return between / total if total > 0 else 0.0
        C = np.zeros((n, L))
        C[np.arange(n), codes] = 1.0
    else:
        C = cov.reshape(n, -1).astype(np.float64)
    C = C - C.mean(axis=0)
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    k = n_components or max_comp
    coords = U[:, :k] * s[:k]
    var = (s[:k] ** 2) / (n - 1)
    beta, *_ = np.linalg.lstsq(C, coords, rcond=None)
    resid = ((coords - C @ beta) ** 2).sum(axis=0)
    total = (coords**2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.maximum(0.0, 1.0 - resid / total)
    r2 = np.nan_to_num(r2)
    return float(np.dot(r2, var) / var.sum())
