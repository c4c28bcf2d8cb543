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
from collections.abc import Callable
from typing import Literal, cast

import numpy as np
import pandas as pd
from scipy.sparse.csgraph import connected_components

from .._core.docs import doc_params
from .._core.inputs import check_embedding, check_vector
from ._docs import BENCH_DOC
from ._inputs import embedding_labels
from ._kbet import kbet, kbet_per_label
from ._kernels import (
    BetweenCluster,
    cluster_distance_sums,
    codes_of,
    lisi_probabilities,
    pcr,
    scaled_ilisi,
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


@doc_params(**BENCH_DOC)
def silhouette_batch(
    X: np.ndarray, labels: np.ndarray, batch: np.ndarray,
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
    {X_embedding}
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
    >>> genes, batch = adata.obs["Metadata_target_gene"], adata.obs["Metadata_Batch"]
    >>> score, per_gene = ip.bench.silhouette_batch(adata.X, genes, batch, return_per_label=True)
    >>> bool(0 <= score <= 1), bool(score == per_gene.mean())  # the score is the mean over labels
    (True, True)
    """
    X, labels = embedding_labels(X, labels)
    batch = check_vector(batch, X.shape[0], what="batch", min_levels=2)
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


@doc_params(**BENCH_DOC)
def bras(
    X: np.ndarray, labels: np.ndarray, batch: np.ndarray,
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
    {X_embedding}
    labels
        Label (cell type / perturbation) of every observation; silhouettes are computed within labels.
    {batch}
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
    >>> X, genes, batch = adata.X, adata.obs["Metadata_target_gene"], adata.obs["Metadata_Batch"]
    >>> bras = ip.bench.bras(X, genes, batch)
    >>> bras == ip.bench.silhouette_batch(X, genes, batch, metric="cosine", between_cluster_distances="mean_other")
    True
    """
    return cast(float, silhouette_batch(X, labels, batch, True, metric, between_cluster_distances, n_jobs=n_jobs))


# --------------------------------------------------------------------------- LISI


@doc_params(**BENCH_DOC)
def lisi_knn(X: Neighbors, labels: np.ndarray, perplexity: float | None = None) -> np.ndarray:
    """Local inverse Simpson index of every observation (Korsunsky et al. 2019).

    ``perplexity`` defaults to ``n_neighbors // 3``. Observations whose
    neighbour weights all vanish get -1 (as in scib-metrics).

    Parameters
    ----------
    {X_neighbors}
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


@doc_params(**BENCH_DOC)
def ilisi_knn(X: Neighbors, batches: np.ndarray, perplexity: float | None = None, scale: bool = True) -> float:
    """Integration LISI: effective number of batches in each neighbourhood, median over observations.

    ``scale=True`` maps it to ``[0, 1]`` as ``(iLISI - 1) / (n_batches - 1)`` (scib).

    Parameters
    ----------
    {X_neighbors}
    {batches}
    {lisi_perplexity}
    scale
        Map to ``[0, 1]`` (1 = batches perfectly mixed).

    Returns
    -------
    float
        Median iLISI: the effective number of batches around an observation (1 to ``n_batches``),
        or with ``scale`` its ``[0, 1]`` mapping.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> nn = ip.bench.knn(adata.X, 90)
    >>> n_eff = ip.bench.ilisi_knn(nn, adata.obs["Metadata_Batch"], scale=False)  # effective number of batches
    >>> 1 <= n_eff <= adata.obs["Metadata_Batch"].nunique()
    True
    """
    return median_lisi(X, batches, what="batches", perplexity=perplexity, scale=scale, scaled=scaled_ilisi)


def median_lisi(X: Neighbors, values: np.ndarray, *, what: str, perplexity: float | None, scale: bool,
                scaled: Callable[[np.ndarray, int], float]) -> float:
    """The median LISI of ``values`` (batches or labels) over the graph, or ``scaled(lisi, n_levels)`` with ``scale``.

    The shared body of :func:`ilisi_knn` and :func:`~imgprof.bench.clisi_knn`.
    """
    nn = as_neighbors(X)
    values = check_vector(values, nn.n_samples, what=what, min_levels=2, context=" in the neighbour graph")
    lisi = lisi_knn(nn, values, perplexity=perplexity)
    return scaled(lisi, len(pd.unique(values))) if scale else float(np.nanmedian(lisi))




# --------------------------------------------------------------------------- graph connectivity


@doc_params(**BENCH_DOC)
def graph_connectivity(X: Neighbors, labels: np.ndarray) -> float:
    """Graph connectivity (scib): per label, the share of its observations in the largest
    strongly connected component of the kNN graph restricted to that label; mean over labels.

    Parameters
    ----------
    {X_neighbors}
    {labels}

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
    X: np.ndarray, covariate: np.ndarray, categorical: bool = False, n_components: int | None = None
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
    covariate: np.ndarray,
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


def batch_neighbor_share(
    X: np.ndarray, batches: np.ndarray, k: int = 10, *, exclude: np.ndarray | None = None
) -> dict[str, float]:
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
