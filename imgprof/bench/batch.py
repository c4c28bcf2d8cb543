"""Batch-removal metrics (scib / scib-metrics definitions, numpy/scipy implementation).

Every function has the signature and the scaling of the scib-metrics function
of the same name, so results can be compared one to one: higher is better
(more batch mixing) for every score in ``[0, 1]``.

Functions taking ``X: Neighbors`` accept an :class:`imgprof.bench.Neighbors`
(see :func:`imgprof.bench.knn`) or a scib-metrics ``NeighborsResults``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from ._checks import check_embedding, check_vector
from ._kernels import (
    BetweenCluster,
    _n_threads,
    cluster_distance_sums,
    codes_of,
    limited_threads,
    lisi_probabilities,
    pcr,
    silhouette_from_sums,
    simpson_index,
)
from ._neighbors import Neighbors, as_neighbors, knn

logger = logging.getLogger(__name__)


__all__ = [
    "bras",
    "graph_connectivity",
    "ilisi_knn",
    "kbet",
    "kbet_per_label",
    "lisi_knn",
    "pcr_comparison",
    "principal_component_regression",
    "silhouette_batch",
]


# --------------------------------------------------------------------------- silhouette batch / BRAS


def silhouette_batch(
    X: np.ndarray,
    labels,
    batch,
    rescale: bool = True,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    between_cluster_distances: BetweenCluster = "nearest",
    *,
    n_jobs: int | None = None,
    return_per_label: bool = False,
) -> float | tuple[float, pd.Series]:
    """Batch silhouette within each label (scib's ``silhouette_batch``).

    For every label, the silhouette of each observation with respect to batch
    is computed among the observations of that label; scores are
    ``1 - |s|`` (``rescale=True``), averaged per label, then across labels.
    Labels seen in one batch only, or with one observation per batch, are skipped.

    Parameters
    ----------
    X
        Embedding ``(n_obs, n_dims)``.
    labels, batch
        Biological label and batch of every observation.
    rescale
        ``1 - |s|`` so that 1 = perfectly mixed.
    metric, between_cluster_distances
        ``"euclidean"``/``"nearest"`` is classic silhouette; BRAS uses
        ``"cosine"``/``"mean_other"`` (see :func:`bras`).
    n_jobs
        Threads for the distance computation.
    return_per_label
        Also return the per-label scores.

    Returns
    -------
    Score in ``[0, 1]`` (higher = better mixing).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> s = ip.bench.silhouette_batch(adata.X, adata.obs["Metadata_target_gene"], adata.obs["Metadata_Batch"])
    >>> 0 <= s <= 1
    True
    """
    X = check_embedding(X)
    n = X.shape[0]
    labels = check_vector(labels, n, what="labels")
    batch = check_vector(batch, n, what="batch", min_levels=2)
    per_label = {}
    for group in pd.unique(labels):
        m = labels == group
        b = batch[m]
        codes, L = codes_of(b)
        if L == 1 or int(m.sum()) == L:
            continue
        S = cluster_distance_sums(X[m], codes, L, metric=metric, n_jobs=n_jobs)
        sil = np.abs(silhouette_from_sums(S, codes, between_cluster_distances))
        if rescale:
            sil = 1 - sil
        per_label[group] = float(np.mean(sil))
    if not per_label:
        raise ValueError(
            "silhouette_batch: no label is present in more than one batch (with more observations than batches); "
            "the batch silhouette is undefined."
        )
    per = pd.Series(per_label, name="silhouette_batch").sort_index()
    score = float(per.mean())
    return (score, per) if return_per_label else score


def bras(
    X: np.ndarray,
    labels,
    batch,
    metric: Literal["euclidean", "cosine"] = "cosine",
    between_cluster_distances: Literal["mean_other", "furthest"] = "mean_other",
    *,
    n_jobs: int | None = None,
) -> float:
    """Batch removal adapted silhouette (BRAS; Rautenstrauch & Ohler 2025), as in scib-metrics ≥ 0.5.6.

    :func:`silhouette_batch` with cosine distance and the mean distance to
    all other batches instead of the nearest batch, which stays meaningful
    with nested batch effects and many batches.

    Parameters
    ----------
    X
        Embedding ``(n_obs, n_dims)``.
    labels
        Label (cell type / perturbation) of every observation; silhouettes are computed within labels.
    batch
        Batch of every observation.
    metric
        Distance: ``"cosine"`` (BRAS default) or ``"euclidean"``.
    between_cluster_distances
        ``"mean_other"`` (mean distance to all other batches, BRAS) or ``"furthest"``.
    n_jobs
        Threads for the distance computations (default: all).

    Returns
    -------
    float
        Score in ``[0, 1]``; 1 = batches fully mixed within every label.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> s = ip.bench.bras(adata.X, adata.obs["Metadata_target_gene"], adata.obs["Metadata_Batch"])
    >>> 0 <= s <= 1
    True
    """
    return silhouette_batch(
        X, labels, batch, True, metric, between_cluster_distances, n_jobs=n_jobs
    )


# --------------------------------------------------------------------------- LISI


def lisi_knn(X: Neighbors, labels, perplexity: float | None = None) -> np.ndarray:
    """Local inverse Simpson index of every observation (Korsunsky et al. 2019).

    ``perplexity`` defaults to ``n_neighbors // 3``. Observations whose
    neighbour weights all vanish get -1 (as in scib-metrics).

    Parameters
    ----------
    X
        Neighbour graph from :func:`imgprof.bench.knn` (a :class:`~imgprof.bench.Neighbors`).
    labels
        Label (or batch) of every observation.
    perplexity
        Perplexity of the Gaussian neighbour weights (default ``n_neighbors // 3``).

    Returns
    -------
    numpy.ndarray
        LISI of every observation (between 1 and the number of labels; -1 where undefined).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> lisi = ip.bench.lisi_knn(ip.bench.knn(adata.X, 90), adata.obs["Metadata_Batch"])
    >>> lisi.shape, bool(((lisi >= 1) & (lisi <= 2)).all())
    ((768,), True)
    """
    nn = as_neighbors(X)
    labels = check_vector(labels, nn.n_samples, what="labels", context=" in the neighbour graph")
    codes, L = codes_of(labels)
    if perplexity is None:
        perplexity = np.floor(nn.n_neighbors / 3)
    P, H = lisi_probabilities(nn.distances, nn.indices, perplexity)
    return 1 / simpson_index(P, H, nn.indices, codes, L)


def _scaled_ilisi(lisi: np.ndarray, n_batches: int) -> float:
    return float((np.nanmedian(lisi) - 1) / (n_batches - 1))


def ilisi_knn(X: Neighbors, batches, perplexity: float | None = None, scale: bool = True) -> float:
    """Integration LISI: effective number of batches in each neighbourhood, median over observations.

    ``scale=True`` maps it to ``[0, 1]`` as ``(iLISI - 1) / (n_batches - 1)`` (scib).

    Parameters
    ----------
    X
        Neighbour graph from :func:`imgprof.bench.knn` (a :class:`~imgprof.bench.Neighbors`).
    batches
        Batch of every observation.
    perplexity
        LISI perplexity (default ``n_neighbors // 3``).
    scale
        Map to ``[0, 1]`` (1 = batches perfectly mixed).

    Returns
    -------
    float
        Median (scaled) iLISI.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> nn = ip.bench.knn(adata.X, 90)
    >>> 0 <= ip.bench.ilisi_knn(nn, adata.obs["Metadata_Batch"]) <= 1
    True
    """
    nn = as_neighbors(X)
    batches = check_vector(batches, nn.n_samples, what="batches", min_levels=2, context=" in the neighbour graph")
    lisi = lisi_knn(nn, batches, perplexity=perplexity)
    if not scale:
        return float(np.nanmedian(lisi))
    return _scaled_ilisi(lisi, len(pd.unique(batches)))


# --------------------------------------------------------------------------- kBET


def _kbet_from_batch_ids(neigh_batch_ids: np.ndarray, batch_codes: np.ndarray, n_batches: int):
    from scipy.special import gammaincc

    expected_freq = np.bincount(batch_codes, minlength=n_batches).astype(np.float64)
    expected_freq /= expected_freq.sum()
    dof = n_batches - 1
    n, k = neigh_batch_ids.shape
    observed = np.zeros((n, n_batches))
    for b in range(n_batches):
        observed[:, b] = (neigh_batch_ids == b).sum(axis=1)
    expected = expected_freq * k
    with np.errstate(divide="ignore", invalid="ignore"):
        stats = np.sum((observed - expected) ** 2 / expected, axis=1)
    pvals = gammaincc(dof / 2, stats / 2)
    return stats, pvals


def kbet(X: Neighbors, batches, alpha: float = 0.05) -> tuple[float, np.ndarray, np.ndarray]:
    """kBET (Büttner et al. 2019) on a kNN graph: share of neighbourhoods whose batch mix passes a χ² test.

    Each observation's neighbourhood (self included, as in scib-metrics /
    Pegasus) is compared with the global batch frequencies.

    Parameters
    ----------
    X
        Neighbour graph from :func:`imgprof.bench.knn` (a :class:`~imgprof.bench.Neighbors`).
    batches
        Batch of every observation.
    alpha
        Significance level of each neighbourhood's χ² test.

    Returns
    -------
    acceptance_rate, test_statistics, p_values

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> rate, stats, pvals = ip.bench.kbet(ip.bench.knn(adata.X, 50), adata.obs["Metadata_Batch"])
    >>> 0 <= rate <= 1 and len(pvals) == adata.n_obs
    True
    """
    nn = as_neighbors(X)
    if len(batches) != nn.n_samples:
        raise ValueError("Length of batches does not match number of cells.")
    codes, L = codes_of(batches)
    stats, pvals = _kbet_from_batch_ids(codes[nn.indices], codes, L)
    return float((pvals >= alpha).mean()), stats, pvals


def _diffusion_embedding(conn: sparse.spmatrix, n_comps: int, power: int = 8) -> np.ndarray:
    """Diffusion-map embedding of a connectivity graph (scanpy's transitions, scib-metrics' scaling).

    The ``n_comps`` eigenpairs of largest magnitude of the symmetric transition
    matrix ``T`` are those of ``T**power`` for even ``power``; running ARPACK on
    ``T**power`` (applied as repeated sparse products) separates them far
    better and needs several times fewer Lanczos restarts. Eigenvalues are
    recovered as Rayleigh quotients ``v' T v``.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    n = conn.shape[0]
    # float64 from the start: with float32 transitions (scib-metrics), the eigenvalue 1 of every
    # extra connected component comes out as 1 ± 1e-7 and its scaling e / (1 - e) explodes at random.
    conn = sparse.csr_matrix(conn, dtype=np.float64)
    q = np.asarray(conn.sum(axis=0))
    Q = sparse.spdiags(1.0 / q, 0, n, n)
    K = Q @ conn @ Q
    z = np.sqrt(np.asarray(K.sum(axis=0)))
    Z = sparse.spdiags(1.0 / z, 0, n, n)
    T = (Z @ K @ Z).astype(np.float64).tocsr()
    n_comps = min(n - 1, n_comps)
    # Fixed starting vector: ARPACK's default is random (scipy >= 1.15 draws it from OS entropy).
    v0 = np.random.default_rng(0).uniform(-1.0, 1.0, size=n)
    if power > 1 and power % 2 == 0 and n > 2 * n_comps + 1:

        def matvec(x):
            for _ in range(power):
                x = T @ x
            return x

        op = LinearOperator(T.shape, matvec=matvec, dtype=np.float64)
        _, evecs = eigsh(op, k=n_comps, which="LM", v0=v0)
        evals = np.einsum("ij,ij->j", evecs, T @ evecs)
    else:
        evals, evecs = eigsh(T, k=n_comps, which="LM", ncv=None, v0=v0)
    evals, evecs = evals.astype(np.float32), evecs.astype(np.float32)
    evals = evals + np.float32(1e-8)
    scaled = np.array([e if e == 1 else e / (1 - e) for e in evals])
    return evecs * scaled


def _diffusion_nn(conn: sparse.spmatrix, k: int, n_comps: int) -> Neighbors:
    emb = _diffusion_embedding(conn, n_comps)
    if not np.isfinite(emb).all():
        raise ValueError("diffusion embedding is not finite")
    return knn(emb, n_neighbors=min(k + 1, emb.shape[0]), method="exact", n_jobs=1)


def kbet_per_label(
    X: Neighbors,
    batches,
    labels,
    alpha: float = 0.05,
    diffusion_n_comps: int = 100,
    return_df: bool = False,
    *,
    n_jobs: int | None = None,
) -> float | tuple[float, pd.DataFrame]:
    """kBET per label as in scib / scib-metrics, averaged over labels.

    For each label, the subgraph of its observations in the (UMAP)
    connectivity graph is embedded with diffusion maps
    (``diffusion_n_comps`` components) and kBET is run on the ``k0``
    nearest neighbours there, ``k0 = clip(mean batch size / 4, 10, 70)``.
    Labels with fewer than 10 observations or a single batch are skipped;
    labels whose graph splits into many small components score 0, as in scib.
    Nearest neighbours in the diffusion space are exact here (scib-metrics uses pynndescent).

    Parameters
    ----------
    X
        Neighbour graph (scib-metrics' Benchmarker uses 50 neighbours).
    batches, labels
        Batch and label of every observation.
    alpha
        Significance level of the χ² test.
    diffusion_n_comps
        Diffusion components.
    return_df
        Also return the per-label scores.
    n_jobs
        Threads for the per-label kNN/diffusion computations (default: all).

    Returns
    -------
    Mean acceptance rate over labels (higher = better mixing).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> nn = ip.bench.knn(adata.X, 50)
    >>> s = ip.bench.kbet_per_label(nn, adata.obs["Metadata_Batch"], adata.obs["Metadata_target_gene"])
    >>> 0 <= s <= 1
    True
    """
    nn = as_neighbors(X)
    if len(batches) != nn.n_samples:
        raise ValueError("Length of batches does not match number of cells.")
    if len(labels) != nn.n_samples:
        raise ValueError("Length of labels does not match number of cells.")
    # ARPACK and the small dense products inside it are far slower with a
    # multithreaded BLAS (thread start-up and spinning dominate); labels run
    # in parallel threads instead.
    with limited_threads(None):
        return _kbet_per_label(nn, batches, labels, alpha, diffusion_n_comps, return_df, n_jobs)


def _kbet_per_label(nn, batches, labels, alpha, diffusion_n_comps, return_df, n_jobs):
    size_max = 2**31 - 1
    batch_codes, _ = codes_of(batches)
    labels = np.asarray(labels)
    conn_graph = nn.knn_graph_connectivities
    uniq = np.unique(labels)

    def one(clus):
        mask = labels == clus
        sub = conn_graph[mask, :][:, mask]
        sub.sort_indices()
        n_obs = sub.shape[0]
        b_sub = batch_codes[mask]
        if n_obs < 10 or len(np.unique(b_sub)) == 1:
            logger.info("%s consists of a single batch or is too small. Skip.", clus)
            return np.nan
        quarter_mean = int(np.floor(np.mean(pd.Series(b_sub).value_counts()) / 4))
        k0 = int(min(70, max(10, quarter_mean)))
        if k0 * n_obs >= size_max:
            k0 = int(np.floor(size_max / n_obs))
        n_comp, labs = connected_components(sub, connection="strong")
        if n_comp == 1:
            graph, b_use = sub, b_sub
        else:
            comp_size = pd.Series(labs).value_counts()
            idx = np.flatnonzero(np.isin(labs, comp_size[comp_size >= 3 * k0].index))
            if len(idx) / len(labs) < 0.75:
                return 0.0  # too many small components: 100% rejection, as scib
            graph = sub[idx, :][:, idx]
            graph.sort_indices()
            b_use = b_sub[idx]
        try:
            nn_sub = _diffusion_nn(graph, k=k0, n_comps=min(diffusion_n_comps, graph.shape[0] - 1))
            score, _, _ = kbet(nn_sub, b_use, alpha=alpha)
        except ValueError:
            logger.info("Diffusion distance failed. Skip.")
            score = 0.0  # i.e. 100% rejection
        return score

    n_threads = min(_n_threads(n_jobs), len(uniq))
    if n_threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        # largest labels first so the threads finish together
        order = np.argsort([-(labels == c).sum() for c in uniq], kind="stable")
        with ThreadPoolExecutor(n_threads) as ex:
            res = dict(zip(uniq[order], ex.map(one, uniq[order])))
        scores = [res[c] for c in uniq]
    else:
        scores = [one(c) for c in uniq]
    rows = {"cluster": list(uniq), "kBET": scores}
    df = pd.DataFrame(rows)
    if df["kBET"].isna().all():
        warnings.warn(
            "kbet_per_label: every label is too small (< 10 observations) or seen in a single batch; score is NaN.",
            stacklevel=2,
        )
        final = float("nan")
    else:
        final = float(np.nanmean(df["kBET"]))
    return (final, df) if return_df else final


# --------------------------------------------------------------------------- graph connectivity


def graph_connectivity(X: Neighbors, labels) -> float:
    """Graph connectivity (scib): per label, the share of its observations in the largest
    strongly connected component of the kNN graph restricted to that label; mean over labels.

    Parameters
    ----------
    X
        Neighbour graph from :func:`imgprof.bench.knn` (a :class:`~imgprof.bench.Neighbors`).
    labels
        Label of every observation.

    Returns
    -------
    float
        Mean over labels of the largest-component share, in ``(0, 1]``; 1 = every label connected.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> nn = ip.bench.knn(adata.X, 15)
    >>> 0 < ip.bench.graph_connectivity(nn, adata.obs["Metadata_target_gene"]) <= 1
    True
    """
    nn = as_neighbors(X)
    labels = check_vector(labels, nn.n_samples, what="labels", context=" in the neighbour graph")
    graph = nn.knn_graph_distances
    res = []
    for label in np.unique(labels):
        mask = labels == label
        sub = graph[mask][:, mask]
        _, comps = connected_components(sub, connection="strong")
        counts = np.bincount(comps)
        res.append(counts.max() / counts.sum())
    return float(np.mean(res))


# --------------------------------------------------------------------------- PCR


def principal_component_regression(
    X: np.ndarray, covariate, categorical: bool = False, n_components: int | None = None
) -> float:
    """Variance of ``X`` explained by ``covariate`` through its principal components (scib's ``pc_regression``).

    Parameters
    ----------
    X
        Data or embedding ``(n_obs, n_dims)``.
    covariate
        Covariate of every observation (e.g. batch).
    categorical
        One-hot encode the covariate (for batches); ``False`` treats it as numeric.
    n_components
        Principal components used (default all).

    Returns
    -------
    float
        Variance explained: sum over PCs of the PC's variance share times the R² of
        regressing it on the covariate, in ``[0, 1]``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> r = ip.bench.principal_component_regression(adata.X, adata.obs["Metadata_Batch"], categorical=True)
    >>> 0 < r < 1
    True
    """
    X = check_embedding(X)
    return pcr(X, covariate, categorical=categorical, n_components=n_components)


def pcr_comparison(
    X_pre: np.ndarray,
    X_post: np.ndarray,
    covariate,
    scale: bool = True,
    categorical: bool | None = None,
    n_components: int | None = None,
) -> float:
    """PCR comparison (scib): how much of the batch-explained variance integration removed.

    ``(pcr_pre - pcr_post) / pcr_pre``, set to 0 (with a warning) when the
    batch explains more variance after integration; ``scale=False`` returns
    ``pcr_post - pcr_pre``.

    Parameters
    ----------
    X_pre, X_post
        Embeddings before (e.g. PCA of the uncorrected profiles) and after integration.
    covariate
        Batch of every observation.
    categorical
        Treat the covariate as categorical (one-hot); default: yes unless numeric.
    n_components
        Principal components used (default all).
    scale
        Return the relative reduction ``(pcr_pre - pcr_post) / pcr_pre`` (``True``) or the
        difference ``pcr_post - pcr_pre`` (``False``).

    Returns
    -------
    float
        Share of the batch-explained variance removed, in ``[0, 1]`` (``scale=True``);
        ``pcr_post - pcr_pre`` otherwise.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> b = adata.obs["Metadata_Batch"]
    >>> ip.bench.pcr_comparison(adata.X, adata.X, b)   # nothing removed
    0.0
    """
    X_pre = check_embedding(X_pre, what="X_pre")
    X_post = check_embedding(X_post, what="X_post")
    if X_pre.shape[0] != X_post.shape[0]:
        raise ValueError(
            f"Dimension mismatch: X_pre has {X_pre.shape[0]} rows and X_post {X_post.shape[0]}; they must match."
        )
    cov = check_vector(covariate, X_pre.shape[0], what="covariate")
    if categorical is None:
        categorical = not pd.api.types.is_numeric_dtype(pd.Series(cov).dtype)
    pcr_pre = pcr(X_pre, cov, categorical=categorical, n_components=n_components)
    pcr_post = pcr(X_post, cov, categorical=categorical, n_components=n_components)
    if scale:
        if pcr_pre == 0:
            return 0.0
        out = (pcr_pre - pcr_post) / pcr_pre
        if out < 0:
            warnings.warn(
                "PCR comparison score is negative, meaning variance contribution increased after integration. "
                "Setting to 0.",
                stacklevel=2,
            )
            out = 0.0
        return float(out)
    return float(pcr_post - pcr_pre)


def batch_neighbor_share(X, batches, k: int = 10, *, exclude=None) -> dict[str, float]:
    """Share of each profile's ``k`` nearest neighbours that come from its own batch.

    The plainest batch-mixing number: 1.0 means every neighbour is from the same
    batch (batches fully separated); under perfect mixing it equals the chance
    that a random other profile shares the batch (``expected``, about
    ``1 / n_batches`` for equal batch sizes). Lower is better mixing. Rows in
    ``exclude`` (e.g. negative controls, which have no biology to keep and would
    otherwise pair up across batches) are left out as queries and as neighbours.

    Parameters
    ----------
    X
        Embedding (``n x d``); Euclidean neighbours, exact.
    batches
        Batch of each row.
    k
        Number of neighbours.
    exclude
        Boolean mask of rows to leave out (default: none).

    Returns
    -------
    dict with ``share`` (mean over rows), ``expected`` (under perfect mixing) and ``n`` (rows used).

    Examples
    --------
    >>> import numpy as np, imgprof as ip
    >>> X = np.r_[np.zeros((20, 2)), np.ones((20, 2)) * 100] + np.random.default_rng(0).normal(size=(40, 2))
    >>> ip.bench.batch_neighbor_share(X, ["a"] * 20 + ["b"] * 20, k=5)["share"]
    1.0
    """
    X = check_embedding(X, what="X")
    b = np.asarray(pd.Series(np.asarray(batches)).astype(str))
    if b.shape[0] != X.shape[0]:
        raise ValueError(f"batches has {b.shape[0]} values but X has {X.shape[0]} rows.")
    keep = np.ones(X.shape[0], bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    Xk, bk = X[keep], b[keep]
    n = Xk.shape[0]
    if n < 2:
        raise ValueError("batch_neighbor_share: need at least 2 rows after exclude.")
    k = int(min(k, n - 1))
    nn = knn(Xk, k + 1, method="exact")
    idx = nn.indices[:, 1 : k + 1]
    share = float((bk[idx] == bk[:, None]).mean())
    counts = pd.Series(bk).value_counts().to_numpy(dtype=float)
    expected = float((counts * (counts - 1)).sum() / (n * (n - 1)))
    return {"share": share, "expected": expected, "n": int(n)}
