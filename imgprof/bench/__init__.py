"""imgprof.bench: batch-correction benchmarking (scib-style metrics, mAP, a Benchmarker).

Batch-removal metrics (silhouette batch, BRAS, iLISI, kBET, graph
connectivity, PCR comparison) and biology-conservation metrics (NMI/ARI of
Leiden and k-means clusters, silhouette label, isolated labels, cLISI, mAP
against non-replicates and against negative controls) with the formulas of
scib-metrics, implemented with numpy/scipy/scikit-learn/igraph (no JAX).
One kNN graph per embedding is computed once and shared by every metric.

:class:`Benchmarker` scores several embeddings and aggregates like
scib-metrics (total = 0.4 batch + 0.6 biology); :func:`run_methods` runs the
correction methods of :mod:`imgprof.tl` and benchmarks them in one call;
``ip.pl.plot_results_table`` draws the results. Every metric the Benchmarker
runs is registered once (``imgprof/bench/_metrics.py``, with its inputs, type,
display name and shared computations); the metric sets are built from that registry.
"""

from .._core.guardrails import (
    BaselineWarning,
    CircularTuningWarning,
    DegenerateMetricWarning,
    ImgprofGuardrailWarning,
)
from .._core.namespace import public_dir
from ._neighbors import Neighbors, knn, umap_connectivities
from ._run_methods import run_methods
from .batch import (
    batch_neighbor_share,
    bras,
    graph_connectivity,
    ilisi_knn,
    kbet,
    kbet_per_label,
    lisi_knn,
    pcr_comparison,
    principal_component_regression,
    silhouette_batch,
)
from .benchmarker import BatchCorrection, Benchmarker, BioConservation
from .bio import (
    clisi_knn,
    isolated_labels,
    map_negcon,
    map_nonrep,
    nmi_ari_cluster_labels_kmeans,
    nmi_ari_cluster_labels_leiden,
    silhouette_label,
)

__all__: list[str] = [
    "BaselineWarning",
    "BatchCorrection",
    "Benchmarker",
    "BioConservation",
    "CircularTuningWarning",
    "DegenerateMetricWarning",
    "ImgprofGuardrailWarning",
    "Neighbors",
    "batch_neighbor_share",
    "bras",
    "clisi_knn",
    "graph_connectivity",
    "ilisi_knn",
    "isolated_labels",
    "kbet",
    "kbet_per_label",
    "knn",
    "lisi_knn",
    "map_negcon",
    "map_nonrep",
    "nmi_ari_cluster_labels_kmeans",
    "nmi_ari_cluster_labels_leiden",
    "pcr_comparison",
    "principal_component_regression",
    "run_methods",
    "silhouette_batch",
    "silhouette_label",
    "umap_connectivities",
]


__dir__ = public_dir(__all__)  # tab completion shows the public API only
