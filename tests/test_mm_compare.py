"""ip.mm.run_pipeline / pipeline_summary (one scanpy pipeline on every modality) and the ip.pl multimodal plots."""

from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest

import imgprof as ip

matplotlib.use("Agg")


def _two_views(n_per=12, n_moa=3, seed=0, shared=True):
    """Two modalities of the same perturbations; labels = MOA; shared latent when ``shared``."""
    rng = np.random.default_rng(seed)
    moa = np.repeat([f"moa{i}" for i in range(n_moa)], n_per)
    centers = rng.normal(scale=4, size=(n_moa, 5))
    Z = centers[pd.factorize(moa)[0]] + rng.normal(size=(len(moa), 5))
    Zb = Z if shared else rng.normal(size=Z.shape)
    keys = [f"p{i}" for i in range(len(moa))]
    obs = pd.DataFrame({"pert": keys, "moa": moa}, index=keys)
    a = ad.AnnData(X=Z @ rng.normal(size=(5, 40)) + 0.5 * rng.normal(size=(len(moa), 40)), obs=obs.copy(),
                   var=pd.DataFrame(index=[f"f{j}" for j in range(40)]))
    b = ad.AnnData(X=Zb @ rng.normal(size=(5, 60)) + 0.5 * rng.normal(size=(len(moa), 60)) + 8, obs=obs.copy(),
                   var=pd.DataFrame(index=[f"g{j}" for j in range(60)]))
    return a, b


def test_run_pipeline_same_steps_on_each_modality():
    a, b = _two_views()
    X0 = b.X.copy()
    ip.mm.run_pipeline({"morph": a, "expr": b}, n_comps=8, n_neighbors=8, umap=False)
    for x in (a, b):
        assert x.obsm["X_pca"].shape == (36, 8)
        assert "leiden" in x.obs and "connectivities" in x.obsp
        z = x.layers["mm_normalized"]
        np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-8)  # standardized, in a layer
    np.testing.assert_array_equal(b.X, X0)  # .X untouched
    steps = ip.provenance(b)["function"].tolist()
    assert steps[-1] == "mm.run_pipeline" and {"tl.pca", "tl.neighbors", "tl.leiden"} <= set(steps)
    s = ip.mm.pipeline_summary({"morph": a, "expr": b}, label="moa").set_index("modality")
    assert s.loc["morph", "ari_label"] > 0.8 and s.loc["expr", "ari_label"] > 0.8
    # same observations in both: the pair row compares the partitions and neighbourhoods
    assert s.loc["morph|expr", "ari_clusters"] > 0.8
    assert s.loc["morph|expr", "knn_jaccard"] > 0.3 > 2 * s.loc["morph|expr", "knn_jaccard_chance"]


def test_scanpy_counts_modality_sparse():
    """An RNA-seq-like AnnData (sparse counts) joins and runs through the same pipeline."""
    import scipy.sparse as sp

    a, _ = _two_views(seed=4)
    rng = np.random.default_rng(4)
    lam = np.exp(0.4 * a.X[:, :30] / a.X[:, :30].std())
    counts = sp.csr_matrix(rng.poisson(lam * 5).astype(np.float32))
    rna = ad.AnnData(X=counts, obs=a.obs.copy(), var=pd.DataFrame(index=[f"gene{j}" for j in range(30)]))
    md = ip.mm.join(a, rna, on="pert", level="perturbation", mod_names=("morph", "rna"))
    np.testing.assert_allclose(md["rna"].X, counts.toarray()[[list(a.obs_names).index(k) for k in md.obs_names]])
    ip.mm.run_pipeline({"morph": a, "rna": rna}, normalize={"morph": "standardize", "rna": "counts"}, n_comps=5,
                       n_neighbors=6, umap=False)
    z = rna.layers["mm_normalized"]
    z = z.toarray() if sp.issparse(z) else z
    np.testing.assert_allclose(np.expm1(z).sum(axis=1), 1e4, rtol=1e-3)
    assert sp.issparse(rna.X)  # input matrix left as it was


def test_pipeline_summary_detects_unrelated_modalities():
    a, b = _two_views(shared=False, seed=1)
    ip.mm.run_pipeline({"morph": a, "expr": b}, n_comps=8, n_neighbors=8, umap=False)
    s = ip.mm.pipeline_summary({"morph": a, "expr": b}, label="moa").set_index("modality")
    assert s.loc["expr", "ari_label"] < 0.3 < s.loc["morph", "ari_label"]
    assert s.loc["morph|expr", "knn_jaccard"] < 2 * s.loc["morph|expr", "knn_jaccard_chance"]


def test_run_pipeline_on_mudata_and_plots(tmp_path):
    a, b = _two_views(seed=2)
    md = ip.mm.join(a, b, on="pert", level="well")
    ip.mm.run_pipeline(md, normalize={"morph": None, "expr": "standardize"}, n_comps=6, n_neighbors=6, umap=False)
    assert "mm_normalized" not in md["morph"].layers and "mm_normalized" in md["expr"].layers
    axes = ip.pl.mm_embedding(md, basis="pca", color=["leiden", "moa"], show=False)
    assert axes.shape == (2, 2)
    out = tmp_path / "side_by_side.png"
    ip.pl.mm_embedding(md, basis="pca", color={"morph": "moa", "expr": "leiden"}, show=False, save=str(out))
    assert out.stat().st_size > 0
    with pytest.raises(KeyError, match="basis="):
        ip.pl.mm_embedding(md, basis="tsne", show=False)
    with pytest.raises(KeyError, match="color"):
        ip.pl.mm_embedding(md, basis="pca", color="nope", show=False)
    s = ip.mm.cross_retrieval(md, n_components=3, n_pcs=6, null_size=500)
    ax = ip.pl.mm_cross_retrieval(s, show=False)
    assert len(ax.patches) == 4


def test_retrieval_and_report_plots():
    res = pd.DataFrame({
        "modality": ["a", "a", "b", "b"], "task": "consistency", "id": ["x", "y", "x", "y"],
        "mean_average_precision": [0.9, 0.2, 0.8, 0.7], "retrieved": [True, False, True, True],
    })
    ax = ip.pl.mm_retrieval(res, task="consistency", show=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    ax = ip.pl.mm_complementarity(ip.mm.complementarity(res), show=False)
    assert ax.get_legend() is not None
    with pytest.raises(ValueError, match="no rows with task"):
        ip.pl.mm_retrieval(res, task="activity", show=False)
    rep_rows = res.assign(task="replicating", mean_average_precision=np.nan, median_correlation=[0.5, -0.1, 0.3, 0.2])
    ax = ip.pl.mm_retrieval(rep_rows, task="replicating", show=False)
    assert ax.get_ylabel() == "median replicate correlation" and ax.get_ylim()[0] < -0.1
    morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
    ip.mm.map_annotations(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["moa"])
    rep = ip.mm.match_keys(morph, expr, on=("Metadata_moa", "moa"), sep="|")
    ax = ip.pl.mm_join_report(rep, show=False)
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths == sorted([rep.summary["n_matched"], rep.summary["n_only"]["morph"], rep.summary["n_only"]["expr"]])


@pytest.mark.slow
def test_run_pipeline_umap():
    a, b = _two_views(seed=3)
    ip.mm.run_pipeline({"morph": a, "expr": b}, n_comps=6, n_neighbors=6, umap=True)
    assert a.obsm["X_umap"].shape == b.obsm["X_umap"].shape == (36, 2)
    axes = ip.pl.mm_embedding({"morph": a, "expr": b}, basis="umap", color="moa", show=False)
    assert axes.shape == (1, 2)
