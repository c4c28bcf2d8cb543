"""Each correction removes simulated batch effects while keeping mechanism classes apart (numbers, not plots).

The simulator shifts and scales features per batch; standardising on the
controls of all plates together (not per plate) leaves those batch effects in,
so there is something to correct. The same seed with the technical effects set
to zero gives the batch-free truth.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from sklearn.metrics import silhouette_score
from sklearn.neighbors import NearestNeighbors

import imgprof as ip


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Small matrices: one BLAS thread avoids oversubscription on busy CI machines (results are identical)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield

SIM = dict(n_plates=6, n_batches=3, n_perturbations=48, n_moa=6, n_features=100, moa_strength=0.65, seed=0)


def _standardise_on_controls(a):
    """z-score on the negative controls of all plates together (no by=): batch effects stay in."""
    ip.pp.normalize(a, "standardize", controls="Metadata_control_type == 'negcon'")
    return a


def knn_same_rate(Y, labels, k=10, mask=None):
    """Mean share of each row's k nearest neighbours (cosine) with the same label."""
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    idx = NearestNeighbors(n_neighbors=k + 1).fit(Yn).kneighbors(Yn, return_distance=False)[:, 1:]
    r = (labels[idx] == labels[:, None]).mean(1)
    return float(r.mean() if mask is None else r[mask].mean())


@pytest.fixture(scope="module")
def sim():
    a = _standardise_on_controls(ip.datasets.simulate(**SIM))
    ip.tl.pca(a, n_comps=30)
    return a


@pytest.fixture(scope="module")
def clean():
    return _standardise_on_controls(ip.datasets.simulate(**SIM, batch_additive=0, batch_multiplicative=0, plate_additive=0))


@pytest.fixture(scope="module")
def baseline(sim):
    a = sim.copy()
    ip.tl.integrate(a, "none", "Metadata_Batch")
    return _scores(a, "X_none")


def _scores(a, key):
    Y = a.obsm[key]
    b = a.obs["Metadata_Batch"].to_numpy()
    moa = a.obs["Metadata_moa"].to_numpy()
    act = a.obs["Metadata_active"].to_numpy(bool)
    return {
        "batch_knn": knn_same_rate(Y, b),
        "batch_sil": float(silhouette_score(Y, b, metric="cosine")),
        "moa_knn": knn_same_rate(Y, moa, mask=act),
        "moa_sil": float(silhouette_score(Y[act], moa[act], metric="cosine")),
    }


def test_simulation_has_a_batch_effect(sim, clean, baseline):
    """Sanity: the baseline is batch-dominated, the truth is not (3 batches: 1/3 ≈ mixed)."""
    assert baseline["batch_knn"] > 0.7
    assert knn_same_rate(clean.X, clean.obs["Metadata_Batch"].to_numpy()) < 0.4


METHOD_PARAMS = {
    "harmony": {},
    "combat": {},
    "sphering": {"label_key": "Metadata_Perturbation"},
    "mnn": {},
    "scanorama": {},
    "rpca": {},
}


@pytest.mark.parametrize("method", list(METHOD_PARAMS))
def test_method_mixes_batches_and_keeps_moa(sim, baseline, method):
    a = sim.copy()
    ip.tl.integrate(a, method, "Metadata_Batch", **METHOD_PARAMS[method])
    s = _scores(a, f"X_{method}")
    # batches mix: the same-batch share of the 10 nearest neighbours drops by at least 0.15,
    # and the batch silhouette falls below the baseline's
    assert s["batch_knn"] < baseline["batch_knn"] - 0.15, s
    assert s["batch_sil"] < baseline["batch_sil"], s
    # mechanism classes stay apart
    assert s["moa_knn"] > 0.8 * baseline["moa_knn"], s
    assert s["moa_sil"] > 0.8 * baseline["moa_sil"], s


def test_rpca_recovers_ground_truth(sim, clean):
    """RPCA-integrated profiles are closer to the batch-free simulation than the uncorrected ones."""
    a = sim.copy()
    ip.tl.rpca(a, "Metadata_Batch")
    ctrl = (a.obs["Metadata_control_type"] == "negcon").to_numpy()

    def profile_corr(Y):
        Yc, Cc = Y - Y[ctrl].mean(0), clean.X - clean.X[ctrl].mean(0)
        return np.mean([np.corrcoef(Yc[i], Cc[i])[0, 1] for i in range(len(Y))])

    before, after = profile_corr(a.X), profile_corr(a.obsm["X_rpca"])
    assert after > before + 0.05, (before, after)
    # anchors: mostly between wells of the same mechanism class (chance is ~1/7 here)
    R = importlib.import_module("imgprof.tl.rpca")
    codes = a.obs["Metadata_Batch"].astype("category").cat.codes.to_numpy()
    rows = [np.flatnonzero(codes == i) for i in range(2)]
    S = [R._scale(a.X[r]) for r in rows]
    pcs = [R._svd(s, 30) for s in S]
    anchors = R.find_anchors_pair(S[0], S[1], pcs[0], pcs[1])
    moa = a.obs["Metadata_moa"].to_numpy()
    same = moa[rows[0][anchors[:, 0].astype(int)]] == moa[rows[1][anchors[:, 1].astype(int)]]
    assert len(anchors) > 50 and same.mean() > 0.5
    assert ((anchors[:, 2] >= 0) & (anchors[:, 2] <= 1)).all()


def test_rpca_reference_unchanged_and_order(sim):
    """The reference batch of a two-batch merge keeps its values (Seurat's IntegrateData behaviour)."""
    a = sim[sim.obs["Metadata_Batch"].isin(["batch_1", "batch_2"])].copy()
    ip.tl.rpca(a, "Metadata_Batch")
    merges = ip.provenance(a).iloc[-1]["extra"]["merges"]
    ref = merges[0]["reference"][0]
    m = (a.obs["Metadata_Batch"] == ref).to_numpy()
    np.testing.assert_array_equal(a.obsm["X_rpca"][m], a.X[m])
    assert not np.allclose(a.obsm["X_rpca"][~m], a.X[~m])


def test_mnn_pairs_and_merge_order(sim):
    a = sim.copy()
    ip.tl.mnn(a, "Metadata_Batch", merge_order=["batch_3", "batch_1", "batch_2"])
    extra = ip.provenance(a).iloc[-1]["extra"]
    assert extra["merge_order"] == ["batch_3", "batch_1", "batch_2"]
    assert all(n > 0 for n in extra["n_pairs"])
    with pytest.raises(ValueError, match="merge_order"):
        ip.tl.mnn(a, "Metadata_Batch", merge_order=["batch_3", "batch_1"])
