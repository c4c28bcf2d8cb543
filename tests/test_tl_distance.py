"""ip.tl.distance / distance_test / cluster_composition: behaviour, exactness, power and calibration."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

import imgprof as ip
from imgprof.tl._distance import group_cells

G = "Metadata_perturbation"


@pytest.fixture
def cells():
    return ip.datasets.simulate_cells(n_perturbations=4, n_cells=60, n_features=6,
                                      effects=["none", "mean", "variance", "subpopulation"], seed=1)


# ---------------------------------------------------------------- definitions, by brute force


def _dense_edistance(X, Y):
    return 2 * cdist(X, Y).mean() - cdist(X, X).mean() - cdist(Y, Y).mean()


def test_blocked_sums_equal_dense_for_any_block_size(cells):
    X = cells.X
    g = cells.obs[G].astype(str).to_numpy()
    names = sorted(set(g))
    dense = np.array([[_dense_edistance(X[g == a], X[g == b]) for b in names] for a in names])
    for block in (7, 64, 4096):
        D = ip.tl.group_distances(X, g, "edistance", block=block)
        assert list(D.index) == names
        np.testing.assert_allclose(D.to_numpy(), dense, rtol=1e-10, atol=1e-12)
    # the reference form uses a different (per-group) path: same numbers
    s = ip.tl.group_distances(X, g, "edistance", reference="control", block=16)
    np.testing.assert_allclose(s.to_numpy(), dense[:, names.index("control")], rtol=1e-10, atol=1e-12)


def test_mmd_rbf_by_brute_force(cells):
    X = cells.X
    g = cells.obs[G].astype(str).to_numpy()
    gamma = 0.07
    a, b = X[g == "P02"], X[g == "control"]

    def k(u, v):
        return np.exp(-gamma * cdist(u, v, "sqeuclidean")).mean()

    s = ip.tl.group_distances(X, g, "mmd", reference="control", gamma=gamma, block=50)
    assert s["P02"] == pytest.approx(k(a, a) + k(b, b) - 2 * k(a, b), rel=1e-10)


def test_median_heuristic_gamma_definition():
    X = np.random.default_rng(0).normal(size=(300, 4))
    d2 = cdist(X, X, "sqeuclidean")[np.triu_indices(300, 1)]
    assert ip.tl.median_heuristic_gamma(X) == pytest.approx(1 / (2 * np.median(d2)))
    with pytest.raises(ValueError, match="median squared distance is 0"):
        ip.tl.median_heuristic_gamma(np.zeros((10, 3)))


def test_wasserstein_exact_and_sliced_agree_in_one_dimension():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=37), rng.normal(1.0, 2.0, size=53)
    # W2 between 1-D samples: integral of squared quantile differences, on a fine grid
    t = (np.arange(200_000) + 0.5) / 200_000
    w2 = np.sqrt(np.mean((np.sort(x)[(t * 37).astype(int)] - np.sort(y)[(t * 53).astype(int)]) ** 2))
    X = np.r_[x, y][:, None]
    lab = np.r_[["a"] * 37, ["b"] * 53]
    exact = ip.tl.group_distances(X, lab, "wasserstein", method="exact").loc["a", "b"]
    sliced = ip.tl.group_distances(X, lab, "wasserstein", n_projections=3).loc["a", "b"]
    assert exact == pytest.approx(w2, rel=1e-4)
    assert sliced == pytest.approx(exact, rel=1e-9)  # in 1-D every projection is ±identity


def test_wasserstein_exact_equal_sizes_is_the_assignment_problem():
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 3)), rng.normal(0.5, 1, size=(30, 3))
    C = cdist(x, y, "sqeuclidean")
    r, c = linear_sum_assignment(C)
    d = ip.tl.group_distances(np.r_[x, y], np.repeat(["a", "b"], 30), "wasserstein", method="exact").loc["a", "b"]
    assert d == pytest.approx(np.sqrt(C[r, c].mean()))
    with pytest.raises(ValueError, match="max_exact"):
        ip.tl.group_distances(np.r_[x, y], np.repeat(["a", "b"], 30), "wasserstein", method="exact", max_exact=100)


def test_sliced_wasserstein_of_a_mean_shift():
    rng = np.random.default_rng(4)
    d, shift = 8, 2.0
    x = rng.normal(size=(4000, d))
    y = rng.normal(size=(4000, d)) + shift / np.sqrt(d)  # |shift vector| = 2
    s = ip.tl.group_distances(np.r_[x, y], np.repeat(["a", "b"], 4000), "wasserstein", n_projections=400)
    # for a pure translation, sliced W2² = E_theta[(theta·delta)²] = |delta|² / d
    assert s.loc["a", "b"] == pytest.approx(shift / np.sqrt(d), rel=0.1)


def test_mean_distances_definitions(cells):
    X = cells.X
    g = cells.obs[G].astype(str).to_numpy()
    ma, mb = X[g == "P01"].mean(0), X[g == "control"].mean(0)
    from scipy.spatial.distance import cosine
    from scipy.stats import pearsonr

    for metric, want in [("euclidean", np.linalg.norm(ma - mb)), ("cosine", cosine(ma, mb)),
                         ("pearson", 1 - pearsonr(ma, mb)[0]), ("mmd", np.sum((ma - mb) ** 2))]:
        kw = {"kernel": "linear"} if metric == "mmd" else {}
        assert ip.tl.group_distances(X, g, metric, reference="control", **kw)["P01"] == pytest.approx(want, rel=1e-10)


# ---------------------------------------------------------------- AnnData API


def test_distance_writes_uns_and_provenance_and_copy(cells, tmp_path):
    out = ip.tl.distance(cells, G, reference="control", obsm_key="X", copy=True)
    assert "distance_edistance" not in cells.uns
    res = out.uns["distance_edistance"]
    P = res["pairwise"]
    assert P.shape == (5, 5) and np.allclose(P.to_numpy(), P.to_numpy().T) and np.allclose(np.diag(P), 0)
    assert res["to_reference"].loc["control", "distance"] == 0
    np.testing.assert_allclose(res["to_reference"]["distance"], P["control"])
    assert res["n_cells"].loc["control", "n_cells"] == 240
    out.write_h5ad(tmp_path / "d.h5ad")  # every result is writable
    back = __import__("anndata").read_h5ad(tmp_path / "d.h5ad").uns["distance_edistance"]
    pd.testing.assert_frame_equal(back["pairwise"], P, check_names=False)
    step = ip.provenance(out).iloc[-1]
    assert step["function"] == "tl.distance" and step["extra"]["key_added"] == "distance_edistance"
    assert ip.tl.distance(cells, G, obsm_key="X", key_added="mine") is None
    assert "mine" in cells.uns


def test_subsampling_is_seeded_and_recorded(cells):
    a = ip.tl.distance(cells, G, reference="control", obsm_key="X", max_cells=50, seed=5, copy=True)
    b = ip.tl.distance(cells, G, reference="control", obsm_key="X", max_cells=50, seed=5, copy=True)
    c = ip.tl.distance(cells, G, reference="control", obsm_key="X", max_cells=50, seed=6, copy=True)
    pa, pc = a.uns["distance_edistance"]["pairwise"], c.uns["distance_edistance"]["pairwise"]
    pd.testing.assert_frame_equal(pa, b.uns["distance_edistance"]["pairwise"])
    assert not np.allclose(pa, pc)
    assert (a.uns["distance_edistance"]["n_cells"]["n_cells"] == 50).all()
    extra = ip.provenance(a).iloc[-1]["extra"]
    assert extra["subsampled"] == {"P00": 60, "P01": 60, "P02": 60, "P03": 60, "control": 240}
    assert ip.provenance(a).iloc[-1]["params"]["seed"] == 5


def test_missing_labels_are_left_out(cells):
    cells.obs[G] = cells.obs[G].astype(object)
    cells.obs.loc[cells.obs.index[:10], G] = None
    ip.tl.distance(cells, G, obsm_key="X")
    assert cells.uns["distance_edistance"]["n_cells"].loc["control", "n_cells"] == 230


def test_errors_name_the_parameter(cells):
    with pytest.raises(ValueError, match="metric='nope'"):
        ip.tl.distance(cells, G, "nope", obsm_key="X")
    with pytest.raises(KeyError, match="groupby"):
        ip.tl.distance(cells, "Metadata_nope", obsm_key="X")
    with pytest.raises(ValueError, match="reference='ctrl'"):
        ip.tl.distance(cells, G, reference="ctrl", obsm_key="X")
    with pytest.raises(ValueError, match="either obsm_key= or layer="):
        ip.tl.distance(cells, G, obsm_key="X", layer="counts")
    with pytest.raises(KeyError, match="X_umap"):
        ip.tl.distance(cells, G, obsm_key="X_umap")
    with pytest.raises(ValueError, match="pairwise=False needs a reference"):
        ip.tl.distance(cells, G, obsm_key="X", pairwise=False)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ip.tl.distance(cells, G, "euclidean", obsm_key="X", gamma=1.0)
    with pytest.raises(ValueError, match="cannot be permuted"):
        ip.tl.distance_test(cells, G, "control", "wasserstein", obsm_key="X")
    bad = cells.copy()
    bad.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ip.tl.distance(bad, G, obsm_key="X")


def test_registry_lists_each_distance_with_its_pertpy_name():
    assert set(ip.tl.DISTANCES) == {"edistance", "mmd", "wasserstein", "mean_pairwise", "classifier", "euclidean",
                                    "cosine", "pearson"}
    assert ip.tl.DISTANCES["cosine"].pertpy == "cosine_distance"
    assert ip.tl.DISTANCES["wasserstein"].pertpy is None
    assert set(ip.tl.TESTABLE) <= set(ip.tl.DISTANCES)
    assert ip.tl.DISTANCES.kind == "distance" and ip.tl.DISTANCES.param == "metric"
    with pytest.raises(ValueError, match="Did you mean 'edistance'"):
        ip.tl.group_distances(np.zeros((4, 2)), ["a", "a", "b", "b"], "edistanc")


def test_rbf_block_reduction_equals_the_fused_kernel():
    from imgprof.tl._distance_kernels import reduce_block, reduce_product

    rng = np.random.default_rng(3)
    A, B = rng.normal(size=(70, 6)), rng.normal(size=(90, 6))
    na, nb = (A * A).sum(1), (B * B).sum(1)
    starts, ends = np.array([0, 25, 60], dtype=np.int64), np.array([25, 60, 90], dtype=np.int64)
    for diag in (-1, 3):
        want, got = np.empty((70, 3)), np.empty((70, 3))
        reduce_block(A @ B.T, na, nb, starts, ends, 1, 0.05, diag, want)
        reduce_product(A @ B.T, na, nb, starts, ends, 1, 0.05, diag, got)
        np.testing.assert_allclose(got, want, rtol=1e-13)


def test_group_cells_sorts_and_counts():
    grp, sub = group_cells(np.arange(12.0).reshape(6, 2), ["b", "a", "b", None, "a", "a"])
    assert grp.names == ["a", "b"] and grp.sizes.tolist() == [3, 2] and sub == {}
    np.testing.assert_array_equal(grp.X[:, 0], [2, 8, 10, 0, 4])


# ---------------------------------------------------------------- the test: consistency, power, calibration


def test_distance_test_statistic_equals_distance(cells):
    ip.tl.distance(cells, G, reference="control", obsm_key="X")
    for metric in ("edistance", "mean_pairwise", "euclidean"):
        ip.tl.distance_test(cells, G, "control", metric, obsm_key="X", n_perms=50)
        ip.tl.distance(cells, G, metric, reference="control", obsm_key="X", pairwise=False)
        want = cells.uns[f"distance_{metric}"]["to_reference"]["distance"].drop("control")
        np.testing.assert_allclose(cells.uns["distance_test"]["distance"], want.loc[cells.uns["distance_test"].index],
                                   rtol=1e-10)
    tab = cells.uns["distance_test"]
    assert list(tab.columns[:4]) == ["distance", "pvalue", "pvalue_adj", "significant"]
    assert ((tab["pvalue"] >= 1 / 51) & (tab["pvalue"] <= 1)).all()
    np.testing.assert_allclose(tab["pvalue_adj"], ip.metrics.benjamini_hochberg(tab["pvalue"]))


def test_pvalue_is_k_plus_one_over_n_plus_one(cells):
    ip.tl.distance_test(cells, G, "control", obsm_key="X", n_perms=99, seed=0)
    p = cells.uns["distance_test"]["pvalue"].to_numpy()
    k = p * 100 - 1
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    assert p.min() == pytest.approx(0.01)  # the mean shift beats every permutation


def _well_median_test(adata):
    """The aggregate-first analysis: cells → well medians (ip.pp.aggregate) → per-feature Welch t-test
    of perturbation wells vs control wells, Bonferroni across features (robust to unequal variances)."""
    from scipy.stats import ttest_ind

    wells = ip.pp.aggregate(adata, ["Metadata_Plate", "Metadata_Well", G], operation="median", count_key=None)
    g = wells.obs[G].astype(str).to_numpy()
    ctrl = wells.X[g == "control"]
    rows = {p: min(1.0, ttest_ind(wells.X[g == p], ctrl, equal_var=False).pvalue.min() * wells.n_vars)
            for p in sorted(set(g) - {"control"})}
    return pd.DataFrame({"pvalue": rows})


@pytest.mark.parametrize("effect", ["variance", "subpopulation"])
def test_distribution_test_detects_what_well_medians_hide(effect):
    adata = ip.datasets.simulate_cells(n_perturbations=3, n_cells=240, n_features=5, effects=[effect, "none", "mean"],
                                       effect_size=1.0, wells_per_group=6, seed=11)
    ip.tl.distance_test(adata, G, "control", obsm_key="X", n_perms=999)
    cell_level = adata.uns["distance_test"]
    well_level = _well_median_test(adata)
    assert cell_level.loc["P00", "pvalue_adj"] < 0.01  # the distribution changed
    assert well_level.loc["P00", "pvalue"] > 0.05  # the well medians did not
    # sanity: both see the mean shift, neither flags the null perturbation
    assert cell_level.loc["P02", "pvalue_adj"] < 0.01 and well_level.loc["P02", "pvalue"] < 0.01
    assert cell_level.loc["P01", "pvalue"] > 0.05


@pytest.mark.slow
def test_calibration_under_the_null():
    """1,000 no-effect perturbations (40 independent data sets × 25): share of p < 0.05 in [0.03, 0.07]."""

    def null_pvalues(rep: int) -> np.ndarray:
        adata = ip.datasets.simulate_cells(n_perturbations=25, n_cells=30, n_controls=120, n_features=5,
                                           effects="none", seed=1000 + rep)
        return ip.tl.distance_test(adata, G, "control", obsm_key="X", n_perms=199, seed=rep, copy=True).uns["distance_test"]["pvalue"]

    p = np.concatenate([null_pvalues(rep) for rep in range(40)])
    assert len(p) == 1000
    share = float((p < 0.05).mean())
    assert 0.03 <= share <= 0.07, share
    # and uniform overall: the deciles of the p-values are near 0.1, ..., 0.9
    assert np.abs(np.quantile(p, [0.25, 0.5, 0.75]) - [0.25, 0.5, 0.75]).max() < 0.05


def test_plate_aware_permutation_removes_a_plate_confound():
    """A perturbation measured on one plate only: its plate offset is not an effect within plate."""
    adata = ip.datasets.simulate_cells(n_perturbations=2, n_cells=200, n_features=5, effects="none", n_plates=4,
                                       plate_effect=0.8, seed=21)
    keep = (adata.obs[G] == "control") | (adata.obs["Metadata_Plate"] == "plate0")
    adata = adata[keep.to_numpy()].copy()
    plain = ip.tl.distance_test(adata, G, "control", obsm_key="X", n_perms=499, copy=True).uns["distance_test"]
    within = ip.tl.distance_test(adata, G, "control", obsm_key="X", n_perms=499, batch_key="Metadata_Plate",
                                 copy=True).uns["distance_test"]
    assert (plain["pvalue"] < 0.01).all()  # the plate offset looks like an effect
    assert (within["pvalue"] > 0.05).all()  # within plate it is not
    assert (within["n_fixed_cells"] == 0).all()
    assert ip.provenance(adata).empty or True
    with pytest.raises(KeyError, match="batch_key"):
        ip.tl.distance_test(adata, G, "control", obsm_key="X", batch_key="Metadata_nope")


def test_doctests_of_the_new_modules():
    for mod in ("imgprof.tl._distance", "imgprof.tl._distance_metrics", "imgprof.tl._distance_test",
                "imgprof.tl._cluster_composition", "imgprof.datasets.simulate_cells", "imgprof.pl.distance"):
        r = doctest.testmod(importlib.import_module(mod), optionflags=doctest.ELLIPSIS)
        assert r.failed == 0 and r.attempted > 0, (mod, r)


# ---------------------------------------------------------------- subpopulation view


def test_cluster_composition_finds_the_enriched_state():
    from scipy.stats import chi2_contingency

    adata = ip.datasets.simulate_cells(n_perturbations=3, n_cells=150, n_features=5,
                                       effects=["subpopulation", "none", "variance"], effect_size=1.5, seed=2)
    ip.tl.cluster_composition(adata, G, "control", obsm_key="X", resolution=0.3)
    res = adata.uns["cluster_composition"]
    assert "leiden" in adata.obs and ip.provenance(adata)["function"].tolist()[-3:] == [
        "tl.neighbors", "tl.leiden", "tl.cluster_composition"]
    np.testing.assert_allclose(res["fractions"].sum(axis=1), 1.0)
    test = res["test"]
    assert test.loc["P00", "significant"] and not test.loc["P01", "significant"]
    # the statistic is Pearson's χ² of the 2 × K table (clusters with cells only)
    ct = pd.crosstab(adata.obs[G].astype(str), adata.obs["leiden"].astype(str))
    tab = ct.loc[["P00", "control"]]
    tab = tab.loc[:, tab.sum() > 0]
    chi2, p, dof, _ = chi2_contingency(tab.to_numpy(), correction=False)
    assert test.loc["P00", "statistic"] == pytest.approx(chi2) and test.loc["P00", "dof"] == dof
    assert test.loc["P00", "pvalue"] == pytest.approx(p)
    # the enriched cluster: the shifted 20 % of P00's cells, nearly absent from controls
    enr = res["enrichment"].set_index([G, "leiden"])
    top = test.loc["P00", "top_cluster"]
    assert enr.loc[("P00", top), "log2_ratio"] > 2 and enr.loc[("P00", top), "significant"]
    assert enr.loc[("P00", top), "fraction"] > 0.05 and enr.loc[("P00", top), "reference_fraction"] < 0.02


def test_cluster_composition_permutation_reuses_clusters_and_is_seeded():
    adata = ip.datasets.simulate_cells(n_perturbations=2, n_cells=120, n_features=4,
                                       effects=["subpopulation", "none"], effect_size=1.5, n_plates=2, seed=4)
    ip.tl.cluster_composition(adata, G, "control", obsm_key="X", resolution=0.3)
    before = adata.obs["leiden"].copy()
    kw = {"method": "permutation", "n_perms": 199, "batch_key": "Metadata_Plate", "seed": 3}
    a = ip.tl.cluster_composition(adata, G, "control", copy=True, **kw).uns["cluster_composition"]["test"]
    b = ip.tl.cluster_composition(adata, G, "control", copy=True, **kw).uns["cluster_composition"]["test"]
    pd.testing.assert_frame_equal(a, b)
    assert (adata.obs["leiden"] == before).all()
    assert a.loc["P00", "pvalue"] == pytest.approx(1 / 200) and a.loc["P01", "pvalue"] > 0.05
    with pytest.raises(ValueError, match="method='exact'"):
        ip.tl.cluster_composition(adata, G, "control", method="exact")


# ---------------------------------------------------------------- plots


def test_plots_follow_scanpy_conventions(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adata = ip.datasets.simulate_cells(n_perturbations=4, n_cells=40, effects=["mean", "none", "variance", "none"], seed=0)
    ip.tl.distance(adata, G, reference="control", obsm_key="X")
    ip.tl.distance_test(adata, G, "control", obsm_key="X", n_perms=99)
    ip.tl.cluster_composition(adata, G, "control", obsm_key="X", resolution=0.5)
    adata.write_h5ad(tmp_path / "all.h5ad")  # the test and composition tables are writable too
    back = __import__("anndata").read_h5ad(tmp_path / "all.h5ad")
    pd.testing.assert_frame_equal(back.uns["distance_test"], adata.uns["distance_test"])
    assert back.uns["cluster_composition"]["enrichment"].shape == adata.uns["cluster_composition"]["enrichment"].shape
    ax = ip.pl.distance_heatmap(adata, show=False, save=str(tmp_path / "h.png"))
    assert (tmp_path / "h.png").stat().st_size > 0
    assert sorted(t.get_text() for t in ax.get_xticklabels()) == ["P00", "P01", "P02", "P03", "control"]
    fig = ip.pl.distance_volcano(adata, show=False, return_fig=True)
    assert isinstance(fig, matplotlib.figure.Figure)
    offsets = fig.axes[0].collections[1].get_offsets()  # the significant points
    assert len(offsets) == int(adata.uns["distance_test"]["significant"].sum())
    _, ax0 = plt.subplots()
    assert ip.pl.cluster_fractions(adata, ax=ax0, show=False) is ax0
    monkeypatch.setattr(plt, "show", lambda: None)
    assert ip.pl.distance_volcano(adata, show=True) is None
    ax = ip.pl.distance_heatmap(adata, groups=["control", "P00"], show=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["control", "P00"]
    with pytest.raises(KeyError, match="distance_mmd"):
        ip.pl.distance_heatmap(adata, key="distance_mmd")
    plt.close("all")
