"""Parity of ip.bench metrics with scib-metrics 0.5.x on the same neighbours.

Real data: the two cmQTL CRISPRi batches (768 wells, batch = Metadata_Batch,
label = Metadata_target_gene). Simulated: single cells from
ip.datasets.simulate (2 batches, a few thousand cells). Deterministic metrics
must agree within 1e-3.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import imgprof as ip

sm = pytest.importorskip("scib_metrics")
from scib_metrics.nearest_neighbors import NeighborsResults

TOL = 1e-3


def _pca(X, n):
    X = np.asarray(X, dtype=np.float64)
    X = X - X.mean(0)
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    return (U[:, :n] * s[:n]).astype(np.float32)


@pytest.fixture(scope="module")
def cmqtl():
    from conftest import shared

    shared("cmqtl", "2022_09_07_Batch8_cmQTL_CRISPRi_plate1_normalized_feature_select_batch.csv.gz")
    a = ip.datasets.cmqtl_crispri()
    X = np.asarray(a.X, dtype=np.float32)
    lab = a.obs["Metadata_target_gene"].to_numpy()
    b = a.obs["Metadata_Batch"].to_numpy()
    nn = ip.bench.knn(X, 90)
    return {"X": X, "labels": lab, "batch": b, "nn": nn, "scib_nn": NeighborsResults(nn.indices, nn.distances)}


@pytest.fixture(scope="module")
def sim():
    a = ip.datasets.simulate(
        n_plates=4, n_batches=2, n_perturbations=12, n_moa=3, n_controls=8, n_features=80,
        level="single_cell", cells_per_well=25, cell_noise=2.0, seed=3,
    )
    Xs = np.asarray(a.X)
    Xs = (Xs - Xs.mean(0)) / Xs.std(0)
    X = _pca(Xs, 20)
    lab = a.obs["Metadata_moa"].to_numpy()
    b = a.obs["Metadata_Batch"].to_numpy()
    nn = ip.bench.knn(X, 90)
    return {"X": X, "labels": lab, "batch": b, "nn": nn, "scib_nn": NeighborsResults(nn.indices, nn.distances)}


DATASETS = ["cmqtl", "sim"]


@pytest.fixture(params=DATASETS)
def data(request):
    return request.getfixturevalue(request.param)


def test_sizes(cmqtl, sim):
    assert cmqtl["X"].shape[0] == 768
    assert 1500 < sim["X"].shape[0] < 5000


def test_silhouettes(data):
    X, lab, b = data["X"], data["labels"], data["batch"]
    assert abs(ip.bench.silhouette_label(X, lab) - sm.silhouette_label(X, lab)) < TOL
    assert abs(ip.bench.silhouette_label(X, lab, metric="cosine") - sm.silhouette_label(X, lab, metric="cosine")) < TOL
    assert abs(ip.bench.silhouette_batch(X, lab, b) - sm.silhouette_batch(X, lab, b)) < TOL
    assert abs(ip.bench.bras(X, lab, b) - sm.bras(X, lab, b)) < TOL
    assert abs(ip.bench.isolated_labels(X, lab, b) - sm.isolated_labels(X, lab, b)) < TOL


def test_lisi(data):
    nn, snn, lab, b = data["nn"], data["scib_nn"], data["labels"], data["batch"]
    assert abs(ip.bench.ilisi_knn(nn, b) - sm.ilisi_knn(snn, b)) < TOL
    assert abs(ip.bench.clisi_knn(nn, lab) - sm.clisi_knn(snn, lab)) < TOL
    ours = ip.bench.lisi_knn(nn, lab)
    ref = sm.lisi_knn(snn, lab)
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_kbet(data):
    nn, snn, lab, b = data["nn"], data["scib_nn"], data["labels"], data["batch"]
    n50, s50 = nn.subset_neighbors(50), snn.subset_neighbors(50)
    assert abs(ip.bench.kbet(n50, b)[0] - sm.kbet(s50, b)[0]) < TOL
    ours = ip.bench.kbet_per_label(n50, b, lab)
    ref = sm.kbet_per_label(s50, b, lab)
    assert abs(ours - ref) < TOL


def test_graph_connectivity_and_connectivities(data):
    nn, snn, lab = data["nn"], data["scib_nn"], data["labels"]
    n15, s15 = nn.subset_neighbors(15), snn.subset_neighbors(15)
    assert abs(ip.bench.graph_connectivity(n15, lab) - sm.graph_connectivity(s15, lab)) < TOL
    ours = n15.knn_graph_connectivities
    ref = s15.knn_graph_connectivities.tocsr()
    assert ours.nnz == ref.nnz
    assert abs(ours - ref).max() < 1e-5


def test_leiden_nmi_ari(data):
    nn, snn, lab = data["nn"], data["scib_nn"], data["labels"]
    ours = ip.bench.nmi_ari_cluster_labels_leiden(nn.subset_neighbors(15), lab)
    ref = sm.nmi_ari_cluster_labels_leiden(snn.subset_neighbors(15), lab)
    assert abs(ours["nmi"] - ref["nmi"]) < TOL
    assert abs(ours["ari"] - ref["ari"]) < TOL


def test_pcr(data):
    X, b = data["X"], data["batch"]
    Xc = X.copy()
    for v in np.unique(b):  # remove half of each batch's mean shift
        Xc[b == v] -= 0.5 * (Xc[b == v].mean(0) - X.mean(0))
    Xpre = _pca(X, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sm.pcr_comparison(Xpre, Xc, b, categorical=True)
    ours = ip.bench.pcr_comparison(Xpre, Xc, b)
    assert 0 < ref < 1
    assert abs(ours - ref) < TOL
    for k in (None, 5):
        assert abs(
            ip.bench.principal_component_regression(X, b, categorical=True, n_components=k)
            - sm.utils.principal_component_regression(X, b, categorical=True, n_components=k)
        ) < TOL


def test_kmeans_close(sim):
    # Not deterministic across implementations (JAX vs scikit-learn k-means++ seeds):
    # on well-separated labels both must find the same structure.
    X, lab = sim["X"], sim["labels"]
    ours = ip.bench.nmi_ari_cluster_labels_kmeans(X, lab)
    ref = sm.nmi_ari_cluster_labels_kmeans(X, lab)
    assert abs(ours["nmi"] - ref["nmi"]) < 0.15


def test_benchmarker_matches_scib_benchmarker(cmqtl):
    """Whole pipeline, same neighbours and PCA: every deterministic metric and the aggregates agree."""
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    a = ip.datasets.cmqtl_crispri()
    a.obsm["X_pca"] = _pca(a.X, 30)
    b = a.obs["Metadata_Batch"].to_numpy()
    Xc = np.asarray(a.X, dtype=np.float32).copy()
    for v in np.unique(b):
        Xc[b == v] -= Xc[b == v].mean(0)
    a.obsm["X_center"] = _pca(Xc, 30)
    keys = ["X_pca", "X_center"]

    def nc(X, k):
        nn = ip.bench.knn(X, k)
        return NeighborsResults(nn.indices, nn.distances)

    bio = {"isolated_labels": True, "nmi_ari_cluster_labels_leiden": True, "nmi_ari_cluster_labels_kmeans": False,
           "silhouette_label": True, "clisi_knn": True}
    ref = Benchmarker(a, "Metadata_Batch", "Metadata_target_gene", keys, BioConservation(**bio), BatchCorrection(),
                      pre_integrated_embedding_obsm_key="X_pca", progress_bar=False)
    ref.prepare(neighbor_computer=nc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.benchmark()
    ours = ip.bench.Benchmarker(
        a, "Metadata_Batch", "Metadata_target_gene", keys,
        ip.bench.BioConservation(**bio, map_nonrep=False, map_negcon=False), ip.bench.BatchCorrection(),
        pre_integrated_embedding_obsm_key="X_pca", progress_bar=False,
    )
    ours.benchmark()
    for scale in (False, True):
        r_full = ref.get_results(min_max_scale=scale)
        o_full = ours.get_results(min_max_scale=scale)  # the same call, the same shape
        assert list(o_full.index) == list(r_full.index) and o_full.index.name == r_full.index.name
        assert set(o_full.columns) == set(r_full.columns)
        assert o_full.loc["Metric Type"].to_dict() == r_full.loc["Metric Type"].to_dict()
        r = r_full.drop("Metric Type").astype(float)
        o = o_full.drop("Metric Type").astype(float)
        assert set(r.columns) == set(o.columns)
        for col in r.columns:
            np.testing.assert_allclose(o.loc[r.index, col].to_numpy(), r[col].to_numpy(), atol=TOL, err_msg=col)
