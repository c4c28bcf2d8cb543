"""Every metric the :class:`imgprof.bench.Benchmarker` runs, registered once (one function each).

Registration order is the order of the fields of :class:`BioConservation` /
:class:`BatchCorrection` (scib-metrics' positional order first) and of the
results columns. To add a metric, add one decorated function here; its
field, default, display name and docstring follow from :func:`register_metric`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from . import batch as _batch
from . import bio as _bio
from ._kernels import codes_of, scaled_clisi, scaled_ilisi, simpson_index
from ._registry import BATCH, BIO, MetricInputs, register_metric


def _lisi(inputs: MetricInputs, groups: np.ndarray, perplexity: float | None) -> tuple[np.ndarray, int]:
    nn, P, H = inputs.lisi_weights(perplexity)
    codes, L = codes_of(groups)
    return 1 / simpson_index(P, H, nn.indices, codes, L), L


# ------------------------------------------------------------------------------------------ bio conservation


@register_metric("isolated_labels", BIO, "Isolated labels", inputs=("embedding", "labels", "batch"),
                 cache=("label_silhouette",))
def isolated_labels_metric(inputs: MetricInputs, rescale: bool = True, iso_threshold: int | None = None) -> float:
    """Isolated-label ASW (:func:`imgprof.bench.isolated_labels`) from the shared label silhouettes."""
    return _bio.isolated_labels_from_silhouette(inputs.label_silhouette(), inputs.labels, inputs.batch, rescale, iso_threshold)


@register_metric("nmi_ari_cluster_labels_leiden", BIO, {"nmi": "Leiden NMI", "ari": "Leiden ARI"},
                 inputs=("neighbors", "labels"), cache=("knn:connectivity",))
def leiden_metric(inputs: MetricInputs, **kwargs: Any) -> Any:
    """NMI/ARI of Leiden clusters (:func:`imgprof.bench.nmi_ari_cluster_labels_leiden`)."""
    return _bio.nmi_ari_cluster_labels_leiden(inputs.knn("connectivity"), inputs.labels, **kwargs)


@register_metric("nmi_ari_cluster_labels_kmeans", BIO, {"nmi": "KMeans NMI", "ari": "KMeans ARI"},
                 inputs=("embedding", "labels"))
def kmeans_metric(inputs: MetricInputs, **kwargs: Any) -> dict[str, float]:
    """NMI/ARI of k-means clusters (:func:`imgprof.bench.nmi_ari_cluster_labels_kmeans`)."""
    return _bio.nmi_ari_cluster_labels_kmeans(inputs.X, inputs.labels, **kwargs)


@register_metric("silhouette_label", BIO, "Silhouette label", inputs=("embedding", "labels"),
                 cache=("label_silhouette",), cache_kwargs=("rescale",))
def silhouette_label_metric(inputs: MetricInputs, **kwargs: Any) -> float:
    """Label ASW (:func:`imgprof.bench.silhouette_label`); from the shared label silhouettes unless other options are given."""
    if set(kwargs) - {"rescale"}:
        return _bio.silhouette_label(inputs.X, inputs.labels, n_jobs=inputs.n_jobs, **kwargs)
    asw = float(np.mean(inputs.label_silhouette()))
    return (asw + 1) / 2 if kwargs.get("rescale", True) else asw


@register_metric("clisi_knn", BIO, "cLISI", inputs=("neighbors", "labels"), cache=("knn:lisi", "lisi_weights"))
def clisi_metric(inputs: MetricInputs, perplexity: float | None = None, scale: bool = True) -> float:
    """Label LISI (:func:`imgprof.bench.clisi_knn`) from the LISI weights shared with iLISI."""
    lisi, L = _lisi(inputs, inputs.labels, perplexity)
    return scaled_clisi(lisi, L) if scale else float(np.nanmedian(lisi))


@register_metric("map_nonrep", BIO, "mAP nonrep", inputs=("embedding", "labels", "negcon", "groups"))
def map_nonrep_metric(inputs: MetricInputs, **kwargs: Any) -> Any:
    """mAP of replicates against non-replicates (:func:`imgprof.bench.map_nonrep`); negative controls left out."""
    return _bio.map_nonrep(inputs.X, inputs.labels, inputs.negcon, groups=inputs.groups, **kwargs)


@register_metric("map_negcon", BIO, "mAP negcon", inputs=("embedding", "labels", "negcon", "groups"),
                 default=None, requires=("negcon",))
def map_negcon_metric(inputs: MetricInputs, **kwargs: Any) -> Any:
    """mAP against negative controls (:func:`imgprof.bench.map_negcon`); on by default when ``negcon`` is given."""
    return _bio.map_negcon(inputs.X, inputs.labels, inputs.negcon, groups=inputs.groups, **kwargs)


# ------------------------------------------------------------------------------------------ batch correction


@register_metric("silhouette_batch", BATCH, "Silhouette batch", inputs=("embedding", "labels", "batch"), default=False)
def silhouette_batch_metric(inputs: MetricInputs, **kwargs: Any) -> Any:
    """Classic batch ASW (:func:`imgprof.bench.silhouette_batch`); off by default as in scib-metrics >= 0.5.6."""
    return _batch.silhouette_batch(inputs.X, inputs.labels, inputs.batch, n_jobs=inputs.n_jobs, **kwargs)


@register_metric("bras", BATCH, "BRAS", inputs=("embedding", "labels", "batch"))
def bras_metric(inputs: MetricInputs, **kwargs: Any) -> float:
    """Batch removal adapted silhouette (:func:`imgprof.bench.bras`)."""
    return _batch.bras(inputs.X, inputs.labels, inputs.batch, n_jobs=inputs.n_jobs, **kwargs)


@register_metric("ilisi_knn", BATCH, "iLISI", inputs=("neighbors", "batch"), cache=("knn:lisi", "lisi_weights"),
                 floor_why="every profile's LISI neighbourhood holds essentially one batch (median batch LISI = 1), "
                           "so no embedding mixes batches at this neighbourhood size")
def ilisi_metric(inputs: MetricInputs, perplexity: float | None = None, scale: bool = True) -> float:
    """Integration LISI (:func:`imgprof.bench.ilisi_knn`) from the LISI weights shared with cLISI."""
    lisi, L = _lisi(inputs, inputs.batch, perplexity)
    return scaled_ilisi(lisi, L) if scale else float(np.nanmedian(lisi))


@register_metric("kbet_per_label", BATCH, "KBET", inputs=("neighbors", "labels", "batch"), cache=("knn:kbet",),
                 floor_why="kBET rejects batch mixing in every neighbourhood of every embedding")
def kbet_metric(inputs: MetricInputs, **kwargs: Any) -> Any:
    """kBET within each label, averaged (:func:`imgprof.bench.kbet_per_label`)."""
    return _batch.kbet_per_label(inputs.knn("kbet"), inputs.batch, inputs.labels, **kwargs)


@register_metric("graph_connectivity", BATCH, "Graph connectivity", inputs=("neighbors", "labels"),
                 cache=("knn:connectivity",), ceiling_why="every label's kNN graph is connected in every embedding")
def graph_connectivity_metric(inputs: MetricInputs) -> float:
    """Graph connectivity (:func:`imgprof.bench.graph_connectivity`)."""
    return _batch.graph_connectivity(inputs.knn("connectivity"), inputs.labels)


def _pcr_guard(X_pre: np.ndarray, batch: np.ndarray, pre_key: str | None) -> str | None:
    """A message when PCR comparison cannot rank embeddings (batch explains ~no variance of the uncorrected one)."""
    r2 = float(_batch.principal_component_regression(X_pre, batch, categorical=True))
    if r2 >= 1e-3:
        return None
    # scib's PCR comparison is a ratio over the batch variance of the uncorrected embedding: when
    # that is ~0 (e.g. after per-batch standardization) the ratio is noise, 0 or 1 at random
    return (f"PCR comparison: batch explains only {r2:.2%} of the variance of the uncorrected "
            f"embedding ({pre_key}), so the ratio (before − after) / before is dominated by noise "
            "and jumps between 0 and 1 (it is 0 for the baseline by construction). It cannot rank the "
            "methods here, yet it still enters the aggregate scores.")


@register_metric("pcr_comparison", BATCH, "PCR comparison", inputs=("embedding", "batch", "pre_integrated"),
                 guard=_pcr_guard)
def pcr_comparison_metric(inputs: MetricInputs, **kwargs: Any) -> float:
    """Principal component regression against the uncorrected embedding (:func:`imgprof.bench.pcr_comparison`)."""
    kwargs = {"categorical": True, **kwargs}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PCR comparison score is negative")
        if inputs.pre_integrated is None:
            raise ValueError("pcr_comparison needs the uncorrected embedding (pre_integrated_embedding_obsm_key).")
        return _batch.pcr_comparison(inputs.pre_integrated, inputs.X, inputs.batch, **kwargs)
