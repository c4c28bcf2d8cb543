"""Biology-conservation metrics (scib / scib-metrics definitions) and retrieval (mAP) scores.

Scores are in ``[0, 1]``, higher = biology better preserved. Signatures and
scaling match the scib-metrics functions of the same name; the two mAP scores
follow Arevalo et al. 2024 and use :mod:`imgprof.metrics`' average-precision
kernel.
"""

from __future__ import annotations

import logging
import random
from typing import Literal

import numpy as np
import pandas as pd

from .._core.docs import doc_params
from .._core.inputs import check_vector
from .._core.selection import check_bool_vector
from ._docs import BENCH_DOC
from ._inputs import embedding_labels
from ._kernels import scaled_clisi, silhouette_samples
from ._neighbors import Neighbors, as_neighbors
from .batch import median_lisi

logger = logging.getLogger(__name__)

__all__ = [
    "clisi_knn",
    "isolated_labels",
    "map_negcon",
    "map_nonrep",
    "nmi_ari_cluster_labels_kmeans",
    "nmi_ari_cluster_labels_leiden",
    "silhouette_label",
]


@doc_params(**BENCH_DOC)
def silhouette_label(
    X: np.ndarray, labels: np.ndarray,
    rescale: bool = True,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    *,
    n_jobs: int | None = None,
) -> float:
    """Average silhouette width of the labels (ASW), ``(s + 1) / 2`` when ``rescale``.

    Parameters
    ----------
    {X_embedding}
    {labels}
    rescale
        Map the silhouette from ``[-1, 1]`` to ``[0, 1]``.
    metric
        ``"euclidean"`` (scib) or ``"cosine"``.
    {n_jobs}

    Returns
    -------
    float
        Mean (rescaled) silhouette width of the labels.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> 0 <= ip.bench.silhouette_label(adata.X, adata.obs["Metadata_target_gene"]) <= 1
    True
    """
    X, labels = embedding_labels(X, labels, min_levels=2)
    asw = float(np.mean(silhouette_samples(X, labels, metric=metric, n_jobs=n_jobs)))
    return (asw + 1) / 2 if rescale else asw


def _isolated(labels: np.ndarray, batch: np.ndarray, iso_threshold: int | None) -> np.ndarray:
    tmp = pd.DataFrame({"label": labels, "batch": batch}).drop_duplicates()
    per = tmp.groupby("label")["batch"].count()
    if iso_threshold is None:
        iso_threshold = int(per.min())
    return np.asarray(per.index[per <= iso_threshold])


def isolated_labels_from_silhouette(sil: np.ndarray, labels: np.ndarray, batch: np.ndarray, rescale: bool = True,
                                    iso_threshold: int | None = None) -> float:
    """Isolated-label score from precomputed label silhouettes (shares the pass with :func:`silhouette_label`)."""
    if rescale:
        sil = (sil + 1) / 2
    iso = _isolated(labels, batch, iso_threshold)
    if len(iso) == 0:
        return float("nan")
    return float(pd.Series({lab: np.mean(sil[labels == lab]) for lab in iso}).mean())


@doc_params(**BENCH_DOC)
def isolated_labels(
    X: np.ndarray, labels: np.ndarray, batch: np.ndarray,
    rescale: bool = True,
    iso_threshold: int | None = None,
    *,
    n_jobs: int | None = None,
) -> float:
    """Isolated-label ASW (scib-metrics): label silhouette averaged over the labels found in the fewest batches.

    A label is isolated when it occurs in at most ``iso_threshold`` batches
    (default: the minimum over labels). The score is the mean, over isolated
    labels, of their observations' rescaled label silhouette.

    Parameters
    ----------
    {X_embedding}
    {labels}
    {batch}
    rescale
        Map silhouettes from ``[-1, 1]`` to ``[0, 1]``.
    iso_threshold
        Largest number of batches an isolated label may occur in (default: the minimum over labels).
    {n_jobs}

    Returns
    -------
    float
        Mean rescaled silhouette of the isolated labels' observations.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> s = ip.bench.isolated_labels(adata.X, adata.obs["Metadata_target_gene"], adata.obs["Metadata_Batch"])
    >>> 0 <= s <= 1
    True
    """
    X, labels = embedding_labels(X, labels, min_levels=2)
    batch = check_vector(batch, X.shape[0], what="batch")
    sil = silhouette_samples(X, labels, n_jobs=n_jobs)
    return isolated_labels_from_silhouette(sil, labels, batch, rescale, iso_threshold)


@doc_params(**BENCH_DOC)
def clisi_knn(X: Neighbors, labels: np.ndarray, perplexity: float | None = None, scale: bool = True) -> float:
    """Cell-type (label) LISI, median over observations; ``scale`` maps it to ``[0, 1]`` as
    ``(n_labels - cLISI) / (n_labels - 1)`` (scib), 1 = neighbourhoods of a single label.

    Parameters
    ----------
    {X_neighbors}
    {labels}
    {lisi_perplexity}
    scale
        Map to ``[0, 1]`` (1 = pure neighbourhoods).

    Returns
    -------
    float
        Median cLISI, or with ``scale`` its ``[0, 1]`` mapping (1 = pure neighbourhoods).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> round(ip.bench.clisi_knn(ip.bench.knn(adata.X, 90), adata.obs["Metadata_target_gene"]), 3)
    0.509
    """
    return median_lisi(X, labels, what="labels", perplexity=perplexity, scale=scale, scaled=scaled_clisi)


# --------------------------------------------------------------------------- NMI / ARI


def _nmi_ari(labels, pred) -> tuple[float, float]:
    from sklearn.metrics.cluster import (
        adjusted_rand_score,
        normalized_mutual_info_score,
    )

    return (
        float(normalized_mutual_info_score(labels, pred, average_method="arithmetic")),
        float(adjusted_rand_score(labels, pred)),
    )


@doc_params(**BENCH_DOC)
def nmi_ari_cluster_labels_kmeans(X: np.ndarray, labels: np.ndarray, *, seed: int = 0, n_init: int = 1) -> dict[str, float]:
    """NMI and ARI between k-means clusters (k = number of labels) and the labels.

    scib-metrics runs its own JAX k-means (k-means++ init, one start); this uses
    scikit-learn's ``KMeans`` with the same k and initialisation, so values agree
    up to the randomness of the initialisation, not bit for bit.

    Parameters
    ----------
    {X_embedding}
    labels
        Label of every observation (k = number of distinct labels).
    seed
        Random state of k-means.
    n_init
        Number of k-means starts (scib-metrics: 1).

    Returns
    -------
    dict
        ``{"nmi": float, "ari": float}``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> sorted(ip.bench.nmi_ari_cluster_labels_kmeans(adata.X, adata.obs["Metadata_target_gene"]))
    ['ari', 'nmi']
    """
    from sklearn.cluster import KMeans

    X, labels = embedding_labels(X, labels, min_levels=2)
    k = len(pd.unique(labels))
    km = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed)
    pred = km.fit_predict(np.asarray(X, dtype=np.float64))
    nmi, ari = _nmi_ari(labels, pred)
    return {"nmi": nmi, "ari": ari}


def _leiden(conn, resolution: float, seed: int) -> np.ndarray:
    import igraph

    rng = random.Random(seed)
    igraph.set_random_number_generator(rng)
    try:
        g = igraph.Graph.Weighted_Adjacency(conn, mode="directed")
        g.to_undirected(mode="each")
        clustering = g.community_leiden(objective_function="modularity", weights="weight", resolution=resolution)
    finally:
        igraph.set_random_number_generator(random)
    return np.asarray(clustering.membership)


@doc_params(**BENCH_DOC)
def nmi_ari_cluster_labels_leiden(
    X: Neighbors, labels: np.ndarray,
    optimize_resolution: bool = True,
    resolution: float = 1.0,
    n_jobs: int = 1,
    seed: int = 42,
    *,
    return_all: bool = False,
) -> dict[str, float] | tuple[dict[str, float], pd.DataFrame]:
    """NMI and ARI between Leiden clusters of the kNN connectivity graph and the labels.

    As in scib-metrics: Leiden (igraph, modularity, seeded) on the UMAP
    connectivities of the neighbour graph (15 neighbours in the Benchmarker) at
    resolutions 0.2, 0.4, ..., 2.0; the resolution with the best NMI is kept
    and its NMI and ARI are returned (``optimize_resolution=False``: only
    ``resolution``).

    Parameters
    ----------
    X
        Neighbour graph.
    {labels}
    optimize_resolution, resolution
        Resolution search, or the single resolution to use.
    n_jobs
        Unused (kept for scib-metrics signature compatibility; igraph's RNG is global).
    seed
        Seed of the clustering.
    return_all
        Also return NMI/ARI/number of clusters at every resolution.

    Returns
    -------
    dict or (dict, pandas.DataFrame)
        ``{"nmi": float, "ari": float}`` at the best (or given) resolution; with
        ``return_all=True`` also one row per resolution (``resolution``, ``nmi``, ``ari``, ``n_clusters``).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> nn = ip.bench.knn(adata.X, 15)
    >>> r = ip.bench.nmi_ari_cluster_labels_leiden(nn, adata.obs["Metadata_target_gene"])
    >>> 0 <= r["nmi"] <= 1
    True
    """
    nn = as_neighbors(X)
    labels = check_vector(labels, nn.n_samples, what="labels", min_levels=2, context=" in the neighbour graph")
    conn = nn.knn_graph_connectivities
    if optimize_resolution:
        resolutions = np.array([2 * x / 10 for x in range(1, 11)])
    else:
        resolutions = np.array([resolution])
    rows = []
    for r in resolutions:
        pred = _leiden(conn, float(r), seed)
        nmi, ari = _nmi_ari(labels, pred)
        rows.append({"resolution": float(r), "nmi": nmi, "ari": ari, "n_clusters": int(pred.max() + 1)})
    df = pd.DataFrame(rows)
    best = int(np.argmax(df["nmi"].to_numpy()))
    out = {"nmi": float(df["nmi"].iloc[best]), "ari": float(df["ari"].iloc[best])}
    return (out, df) if return_all else out


# --------------------------------------------------------------------------- retrieval (mAP)

_LABEL, _NEG, _GROUP = "__label", "__negcon", "__group"


def _map_obs(labels, negcon, groups) -> pd.DataFrame:
    obs = pd.DataFrame({_LABEL: np.asarray(labels).astype(str)})
    if negcon is not None:
        obs[_NEG] = np.asarray(negcon, dtype=bool)
    if groups is not None:
        obs[_GROUP] = np.asarray(groups).astype(str)
    return obs


def _mean_map(ap: pd.DataFrame) -> float:
    per_label = ap.loc[ap["average_precision"].notna()].groupby(_LABEL, observed=True)["average_precision"].mean()
    if per_label.empty:
        return float("nan")
    return float(per_label.mean())


_MAP_DOC = {
    "map_options": (
        "groups\n    Optional column restricting negatives to the same group (Arevalo: plate).\n"
        "metric\n    Similarity (``\"cosine\"`` as copairs).\n"
        "return_ap\n    Also return the per-profile AP table.\n\n"
        "Returns\n-------\n"
        "float or (float, pandas.DataFrame)\n    The mean over labels of the label's mAP, in ``[0, 1]``; with "
        "``return_ap=True``\n    also the per-profile average-precision table."
    ),
}


@doc_params(**_MAP_DOC, **BENCH_DOC)
def map_nonrep(
    X: np.ndarray, labels: np.ndarray,
    negcon: np.ndarray | None = None,
    *,
    groups: np.ndarray | None = None,
    metric: str = "cosine",
    return_ap: bool = False,
) -> float | tuple[float, pd.DataFrame]:
    """mAP of replicates against non-replicates (Arevalo et al. 2024, "mAP nonrep").

    Every non-control profile ranks all other non-control profiles; positives
    share its label, negatives have another label (restricted to the same
    ``groups`` value, e.g. plate, when given). Negative controls are left out
    entirely. The score is the mean over labels of the label's mean AP
    (labels with a single profile have no positive pair and are skipped).
    AP comes from :func:`imgprof.metrics.average_precision_kernel` (copairs rules).

    Parameters
    ----------
    {X_embedding}
    labels
        Label (perturbation, gene...) of every profile.
    negcon
        Boolean mask of negative controls (dropped), or ``None``.
    {map_options}

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> neg = (adata.obs["Metadata_target_gene"] == "CONTROL").to_numpy()
    >>> 0 <= ip.bench.map_nonrep(adata.X, adata.obs["Metadata_target_gene"], neg) <= 1
    True
    """
    from ..metrics import average_precision_kernel

    X, labels = embedding_labels(X, labels)
    n = X.shape[0]
    keep = np.ones(n, dtype=bool)
    if negcon is not None:
        negcon = check_bool_vector(negcon, n, param="negcon")
        keep = ~negcon
    if groups is not None:
        groups = check_vector(groups, n, what="groups")
    obs = _map_obs(labels[keep], None, None if groups is None else groups[keep])
    if obs[_LABEL].nunique() < 2:
        raise ValueError("map_nonrep: needs at least two non-control labels (negatives are other labels).")
    ap = average_precision_kernel(
        X[keep], obs, pos_sameby=[_LABEL], pos_diffby=[], neg_sameby=[_GROUP] if groups is not None else [],
        neg_diffby=[_LABEL], metric=metric, warn=False,
    )
    score = _mean_map(ap)
    return (score, ap) if return_ap else score


@doc_params(**_MAP_DOC, **BENCH_DOC)
def map_negcon(
    X: np.ndarray, labels: np.ndarray,
    negcon: np.ndarray | None,
    *,
    groups: np.ndarray | None = None,
    metric: str = "cosine",
    return_ap: bool = False,
) -> float | tuple[float, pd.DataFrame]:
    """mAP of replicates against negative controls (Arevalo et al. 2024, "mAP negcon").

    Every non-control profile ranks the other profiles of its label
    (positives) against the negative controls (negatives, restricted to the
    same ``groups`` value when given). Score: mean over labels of the label's mean AP.

    Parameters
    ----------
    {X_embedding}
    labels
        Label of every profile.
    negcon
        Boolean mask of the negative controls.
    {map_options}

    Examples
    --------
    >>> from imgprof.bench import map_negcon
    >>> from imgprof.datasets import cmqtl_crispri
    >>> adata = cmqtl_crispri()
    >>> genes = adata.obs["Metadata_target_gene"].to_numpy()
    >>> score = map_negcon(adata.X, genes, genes == "CONTROL")
    >>> 0.0 <= score <= 1.0
    True
    """
    from ..metrics import average_precision_kernel

    X, labels = embedding_labels(X, labels)
    n = X.shape[0]
    if negcon is None:
        raise ValueError("map_negcon: give the negative controls (negcon=boolean mask).")
    negcon = check_bool_vector(negcon, n, param="negcon")
    if not negcon.any():
        raise ValueError("map_negcon: negcon selects no observation; negative controls are the negatives of this mAP.")
    if negcon.all():
        raise ValueError("map_negcon: every observation is a negative control; nothing to retrieve.")
    if groups is not None:
        groups = check_vector(groups, n, what="groups")
    obs = _map_obs(labels, negcon, groups)
    # Controls must not be positives of each other or of treatments: give them their own label values.
    obs.loc[negcon, _LABEL] = [f"__negcon_{i}" for i in range(int(negcon.sum()))]
    ap = average_precision_kernel(
        X, obs, pos_sameby=[_LABEL], pos_diffby=[], neg_sameby=[_GROUP] if groups is not None else [],
        neg_diffby=[_LABEL, _NEG], metric=metric, query=~negcon, warn=False,
    )
    ap = ap.loc[~negcon]
    score = _mean_map(ap)
    return (score, ap) if return_ap else score

