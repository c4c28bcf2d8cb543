"""ip.bench metric kernels: correctness against independent references and behaviour on known cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

import imgprof as ip
from imgprof.bench._kernels import cluster_distance_sums, pcr, silhouette_samples


def _blobs(n_per=60, n_batches=2, n_labels=3, batch_shift=0.0, seed=0, dim=5):
    """Labels as well-separated blobs; batches optionally shifted."""
    rng = np.random.default_rng(seed)
    X, lab, bat = [], [], []
    for lb in range(n_labels):
        for b in range(n_batches):
            X.append(rng.normal(size=(n_per, dim)) + 8 * lb + batch_shift * b * np.r_[0, 1, np.zeros(dim - 2)][None, :])
            lab += [f"l{lb}"] * n_per
            bat += [f"b{b}"] * n_per
    return np.vstack(X), np.array(lab), np.array(bat)


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cluster_distance_sums_match_cdist(metric, dtype):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(700, 7)) + 3
    codes = rng.integers(0, 4, size=700)
    S = cluster_distance_sums(X, codes, 4, metric=metric, dtype=dtype, block_rows=64, block_cols=100, n_jobs=2)
    D = cdist(X, X, metric=metric)
    if metric == "cosine":
        D = np.clip(D, 0, 2)
    ref = np.stack([D[:, codes == k].sum(1) for k in range(4)], axis=1)
    np.testing.assert_allclose(S, ref, rtol=1e-5 if dtype == np.float32 else 1e-9, atol=1e-6)


def test_silhouette_samples_match_sklearn():
    from sklearn.metrics import silhouette_samples as sk

    X, lab, _ = _blobs(n_per=30)
    lab = lab.copy()
    lab[0] = "singleton"  # singleton clusters get 0 in both
    np.testing.assert_allclose(silhouette_samples(X, lab), sk(X, lab), atol=1e-10)
    np.testing.assert_allclose(silhouette_samples(X, lab, metric="cosine"), sk(X, lab, metric="cosine"), atol=1e-10)


def test_pcr_direct_formula_equals_regression_on_all_pcs():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 6))
    b = rng.choice(["a", "b", "c"], size=300)
    X[b == "a"] += 1.5
    direct = pcr(X, b, categorical=True)
    via_pcs = pcr(X, b, categorical=True, n_components=6)
    assert direct == pytest.approx(via_pcs, abs=1e-10)
    # between-group share of variance, computed independently
    Xc = X - X.mean(0)
    means = pd.DataFrame(Xc).groupby(b).transform("mean").to_numpy()
    assert direct == pytest.approx((means**2).sum() / (Xc**2).sum(), abs=1e-10)


def test_knn_exact_self_first():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 4))
    X[1] = X[0]  # exact duplicate: self must still come first
    nn = ip.bench.knn(X, 10)
    assert (nn.indices[:, 0] == np.arange(150)).all()
    assert (nn.distances[:, 0] == 0).all()
    D = cdist(X, X)
    ref = np.sort(D, axis=1)[:, :10]
    np.testing.assert_allclose(nn.distances, ref, atol=1e-9)
    sub = nn.subset_neighbors(5)
    assert sub.n_neighbors == 5 and (sub.indices == nn.indices[:, :5]).all()
    C = nn.knn_graph_connectivities
    assert abs(C - C.T).max() < 1e-7
    assert C.data.min() > 0 and C.data.max() <= 1 + 1e-6
    assert C.diagonal().sum() == 0


@pytest.mark.slow
def test_knn_pynndescent_recall():
    pytest.importorskip("pynndescent")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    exact = ip.bench.knn(X, 15, method="exact")
    approx = ip.bench.knn(X, 15, method="pynndescent")
    recall = np.mean([len(np.intersect1d(a, b)) / 15 for a, b in zip(exact.indices, approx.indices)])
    assert recall > 0.95
    assert approx.method == "pynndescent"


# ----------------------------------------------------------------------------- behaviour


def test_batch_metrics_rank_mixed_above_separated():
    Xm, lab, bat = _blobs(batch_shift=0.0)
    Xs, _, _ = _blobs(batch_shift=6.0)
    for X in (Xm, Xs):
        assert X.shape[0] == lab.shape[0]
    nn_m, nn_s = ip.bench.knn(Xm, 90), ip.bench.knn(Xs, 90)
    assert ip.bench.silhouette_batch(Xm, lab, bat) > ip.bench.silhouette_batch(Xs, lab, bat)
    assert ip.bench.bras(Xm, lab, bat) > ip.bench.bras(Xs, lab, bat)
    assert ip.bench.ilisi_knn(nn_m, bat) > 0.7
    assert ip.bench.ilisi_knn(nn_s, bat) < 0.1
    assert ip.bench.kbet_per_label(nn_m.subset_neighbors(50), bat, lab) > ip.bench.kbet_per_label(
        nn_s.subset_neighbors(50), bat, lab
    )
    # labels stay well separated in both: label-level scores are near perfect
    assert ip.bench.clisi_knn(nn_m, lab) > 0.99
    assert ip.bench.graph_connectivity(nn_m.subset_neighbors(15), lab) > 0.95
    assert ip.bench.nmi_ari_cluster_labels_kmeans(Xm, lab)["nmi"] > 0.95
    assert ip.bench.nmi_ari_cluster_labels_leiden(nn_m.subset_neighbors(15), lab)["ari"] > 0.9
    # the batch shift is what integration would remove
    assert ip.bench.pcr_comparison(Xs, Xm, bat) > 0.9


def test_kbet_deterministic_and_threads_agree():
    Xm, lab, bat = _blobs(batch_shift=1.0, n_per=80)
    nn = ip.bench.knn(Xm, 50)
    a = ip.bench.kbet_per_label(nn, bat, lab, n_jobs=1)
    b = ip.bench.kbet_per_label(nn, bat, lab, n_jobs=2)
    c, df = ip.bench.kbet_per_label(nn, bat, lab, return_df=True)
    assert a == b == c
    assert list(df.columns) == ["cluster", "kBET"] and len(df) == 3


def test_isolated_labels_uses_labels_in_fewest_batches():
    X, lab, bat = _blobs(n_per=40)
    lab = lab.copy()
    # label l2 only in batch b0 → it is the only isolated label
    keep = ~((lab == "l2") & (bat == "b1"))
    X, lab, bat = X[keep], lab[keep], bat[keep]
    sil = silhouette_samples(X, lab)
    expected = ((sil[lab == "l2"] + 1) / 2).mean()
    assert ip.bench.isolated_labels(X, lab, bat) == pytest.approx(expected)


def test_map_scores_match_copairs(cmqtl_small):
    copairs_map = pytest.importorskip("copairs.map")
    X, obs = cmqtl_small
    lab = obs["Metadata_target_gene"].to_numpy()
    neg = lab == "CONTROL"
    # nonrep: controls dropped; positives same gene, negatives other genes
    meta = obs.loc[~neg, ["Metadata_target_gene"]].reset_index(drop=True)
    ap = copairs_map.average_precision(meta, X[~neg], pos_sameby=["Metadata_target_gene"], pos_diffby=[],
                                       neg_sameby=[], neg_diffby=["Metadata_target_gene"], batch_size=20000)
    ref = ap.groupby("Metadata_target_gene")["average_precision"].mean().mean()
    assert ip.bench.map_nonrep(X, lab, neg) == pytest.approx(ref, abs=1e-6)
    # negcon: positives same gene, negatives the controls
    meta = obs[["Metadata_target_gene"]].reset_index(drop=True).copy()
    meta["is_neg"] = neg
    meta["pert"] = np.where(neg, [f"ctl{i}" for i in range(len(neg))], lab)
    ap = copairs_map.average_precision(meta, X, pos_sameby=["pert"], pos_diffby=[], neg_sameby=[],
                                       neg_diffby=["pert", "is_neg"], batch_size=20000)
    ap = ap[~ap["is_neg"]]
    ref = ap.groupby("pert")["average_precision"].mean().mean()
    assert ip.bench.map_negcon(X, lab, neg) == pytest.approx(ref, abs=1e-6)


@pytest.fixture(scope="module")
def cmqtl_small():
    from conftest import shared

    shared("cmqtl", "2022_09_22_Batch8Rerun_MT_rerun_20220919_normalized_feature_select_batch.csv.gz")
    a = ip.datasets.cmqtl_crispri()
    return np.asarray(a.X, dtype=np.float64), a.obs


# ----------------------------------------------------------------------------- bad input


def test_bad_input_errors():
    X, lab, bat = _blobs(n_per=20)
    with pytest.raises(ValueError, match="length"):
        ip.bench.silhouette_label(X, lab[:-1])
    with pytest.raises(ValueError, match="length"):
        ip.bench.silhouette_batch(X, lab, bat[:-3])
    with pytest.raises(ValueError, match="at least 2"):
        ip.bench.silhouette_label(X, np.full(len(X), "only"))
    with pytest.raises(ValueError, match="batch"):
        ip.bench.silhouette_batch(X, lab, np.full(len(X), "b0"))
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ip.bench.silhouette_label(Xn, lab)
    with pytest.raises(ValueError, match="NaN"):
        ip.bench.knn(Xn, 5)
    with pytest.raises(ValueError, match="Dimension mismatch"):
        ip.bench.pcr_comparison(X, X[:-1], bat)
    nn = ip.bench.knn(X, 15)
    with pytest.raises(ValueError, match="length"):
        ip.bench.ilisi_knn(nn, bat[:-1])
    with pytest.raises(ValueError, match="distinct"):
        ip.bench.ilisi_knn(nn, np.full(len(X), "b0"))
    with pytest.raises(ValueError, match="does not match"):
        ip.bench.kbet_per_label(nn, bat[:-1], lab)
    with pytest.raises(ValueError, match="missing"):
        ip.bench.clisi_knn(nn, pd.Series(lab).where(np.arange(len(lab)) != 2))
    with pytest.raises(TypeError, match="Neighbors"):
        ip.bench.graph_connectivity(X, lab)
    with pytest.raises(ValueError, match="exceeds"):
        ip.bench.knn(X[:5], 10)
