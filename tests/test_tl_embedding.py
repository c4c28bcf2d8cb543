"""ip.tl.pca / neighbors / leiden / umap: scanpy underneath, profile defaults, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import imgprof as ip


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def cm():
    return ip.datasets.cmqtl_crispri()


def test_pca_matches_scanpy(cm):
    import scanpy as sc

    a, b = cm.copy(), cm.copy()
    ip.tl.pca(a, n_comps=20)
    sc.pp.pca(b, n_comps=20, random_state=0)
    np.testing.assert_allclose(np.abs(a.obsm["X_pca"]), np.abs(b.obsm["X_pca"]), rtol=1e-4, atol=1e-4)
    assert ip.provenance(a).iloc[-1]["function"] == "tl.pca"


def test_pca_caps_components_for_few_wells():
    a = ip.datasets.simulate(n_plates=1, n_perturbations=10, n_moa=2, n_controls=4, n_features=60, seed=0)
    ip.tl.pca(a)  # 14 wells: scanpy's default of 50 would fail
    assert a.obsm["X_pca"].shape == (14, 13)


def test_pca_rejects_nan(cm):
    a = cm.copy()
    a.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        ip.tl.pca(a)


def test_neighbors_leiden_pipeline(cm):
    a = cm.copy()
    ip.tl.pca(a, n_comps=20)
    ip.tl.integrate(a, "harmony", "Metadata_Batch")
    ip.tl.neighbors(a, use_rep="X_harmony")
    assert a.uns["neighbors"]["params"]["metric"] == "cosine"
    assert a.uns["neighbors"]["params"]["use_rep"] == "X_harmony"
    ip.tl.leiden(a, resolution=0.5)
    assert a.obs["leiden"].nunique() >= 2
    # leiden clusters follow the target genes more than chance (adjusted Rand index > 0)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(a.obs["Metadata_target_gene"], a.obs["leiden"]) > 0.02
    fns = ip.provenance(a)["function"].tolist()
    assert fns[-3:] == ["tl.harmony", "tl.neighbors", "tl.leiden"]


@pytest.mark.slow
def test_umap_and_scanpy_plotting(cm):
    """UMAP (numba compiles on first use, hence slow) and sc.pl.umap on our object, unchanged."""
    import matplotlib
    import scanpy as sc

    matplotlib.use("Agg")
    a = cm.copy()
    ip.tl.pca(a, n_comps=20)
    ip.tl.neighbors(a)
    ip.tl.leiden(a)
    ip.tl.umap(a)
    assert a.obsm["X_umap"].shape == (a.n_obs, 2) and np.isfinite(a.obsm["X_umap"]).all()
    sc.pl.umap(a, color=["leiden", "Metadata_Batch"], show=False)
    assert ip.provenance(a).iloc[-1]["function"] == "tl.umap"


def test_leiden_is_igraph_and_same_as_scanpy(cm):
    import scanpy as sc

    a = cm.copy()
    ip.tl.pca(a, n_comps=20)
    ip.tl.neighbors(a)
    b = a.copy()
    ip.tl.leiden(a)
    sc.tl.leiden(b, flavor="igraph", n_iterations=2, directed=False, random_state=0)
    assert (a.obs["leiden"] == b.obs["leiden"]).all()
    assert ip.provenance(a).iloc[-1]["params"]["flavor"] == "igraph"


@pytest.mark.slow
def test_neighbors_large_uses_pynndescent():
    """From 4096 rows scanpy switches to pynndescent (whose csr_array breaks scanpy 1.11 with new scipy)."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(0)
    centers = rng.normal(scale=4, size=(5, 10))
    lab = rng.integers(0, 5, 5000)
    a = ad.AnnData(X=centers[lab] + rng.normal(size=(5000, 10)), obs=pd.DataFrame({"c": lab.astype(str)}))
    a.obs_names = a.obs_names.astype(str)
    ip.tl.neighbors(a, use_rep="X", n_neighbors=10, exact=False)  # the approximate (pynndescent) path
    D = a.obsp["distances"]
    assert D.shape == (5000, 5000) and (np.diff(D.indptr) >= 9).all()
    rows = np.repeat(np.arange(5000), np.diff(D.indptr))
    assert (lab[rows] == lab[D.indices]).mean() > 0.95  # neighbours come from the same cluster
    ip.tl.leiden(a, resolution=0.2)
    assert a.obs["leiden"].nunique() >= 5


def test_graph_required(cm):
    a = cm.copy()
    with pytest.raises(KeyError, match="ip.tl.neighbors"):
        ip.tl.leiden(a)
    with pytest.raises(KeyError, match="ip.tl.neighbors"):
        ip.tl.umap(a)
    with pytest.raises(KeyError, match="X_nope"):
        ip.tl.neighbors(a, use_rep="X_nope")
