"""ip.bench.Benchmarker, run_methods and ip.pl.plot_results_table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import imgprof as ip

NEG = "Metadata_target_gene == 'CONTROL'"


@pytest.fixture(scope="module")
def cmqtl_bench():
    from conftest import shared

    shared("cmqtl", "2022_09_07_Batch8_cmQTL_CRISPRi_plate1_normalized_feature_select_batch.csv.gz")
    a = ip.datasets.cmqtl_crispri()
    X = np.asarray(a.X, dtype=np.float64)
    a.X = (X - X.mean(0)) / X.std(0)  # one feature has sd 1,770: standardize so no feature dominates
    res = ip.bench.run_methods(a, ["none", "harmony"], "Metadata_Batch", "Metadata_target_gene", negcon=NEG,
                               progress_bar=False)
    return a, res


def test_run_methods_real_data(cmqtl_bench):
    a, res = cmqtl_bench
    assert list(res.columns) == ["embedding", "metric_type", "metric", "value"]
    assert set(res["embedding"]) == {"X_pca", "X_none", "X_harmony"}  # X_pca: harmony's same-space baseline
    assert {"X_none", "X_harmony", "X_pca"} <= set(a.obsm)
    metrics = set(res["metric"])
    expected = {"Isolated labels", "Leiden NMI", "Leiden ARI", "KMeans NMI", "KMeans ARI", "Silhouette label",
                "cLISI", "mAP nonrep", "mAP negcon", "BRAS", "iLISI", "KBET", "Graph connectivity",
                "PCR comparison", "Batch correction", "Bio conservation", "Total"}
    assert expected == metrics
    v = res.set_index(["embedding", "metric"])["value"]
    # cmQTL has a real batch effect (83 % same-batch neighbours): Harmony must remove part of it
    assert v[("X_harmony", "Batch correction")] > v[("X_none", "Batch correction")]
    assert v[("X_harmony", "iLISI")] > v[("X_none", "iLISI")]
    assert v[("X_harmony", "PCR comparison")] > v[("X_none", "PCR comparison")]
    # ...and must not destroy the gene signal retrieved against controls
    assert v[("X_harmony", "mAP negcon")] > 0.5 * v[("X_none", "mAP negcon")]
    # results and timings stored, step logged
    assert set(a.uns["bench"]) == {"results", "timings", "flags"}
    assert "integration" in set(a.uns["bench"]["timings"]["step"])
    assert "bench.run_methods" in ip.provenance(a)["function"].tolist()


def test_aggregation_is_scib_weighting(cmqtl_bench):
    _, res = cmqtl_bench
    for emb, g in res.groupby("embedding"):
        vals = g.set_index("metric")["value"]
        batch = g.loc[g["metric_type"] == "Batch correction", "value"].mean()
        bio = g.loc[g["metric_type"] == "Bio conservation", "value"].mean()
        assert vals["Batch correction"] == pytest.approx(batch)
        assert vals["Bio conservation"] == pytest.approx(bio)
        assert vals["Total"] == pytest.approx(0.4 * batch + 0.6 * bio)
        scores = g.loc[g["metric_type"] != "Aggregate score", "value"]
        assert scores.between(0, 1).all(), emb


def test_min_max_scaling_and_wide_format():
    a = ip.datasets.simulate(n_plates=4, n_batches=2, n_perturbations=16, n_moa=4, n_features=40, seed=2)
    X = np.asarray(a.X, dtype=np.float64)
    a.X = (X - X.mean(0)) / X.std(0)
    ip.tl.integrate(a, "none", "Metadata_Batch")
    ip.tl.integrate(a, "combat", "Metadata_Batch")
    a.obsm["X_noise"] = np.random.default_rng(0).normal(size=(a.n_obs, 10))
    bm = ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_moa", ["X_none", "X_combat", "X_noise"],
                              negcon="Metadata_control_type == 'negcon'", progress_bar=False)
    bm.benchmark()
    wide = bm._results_multi(False, True)
    assert isinstance(wide.columns, pd.MultiIndex)
    assert list(wide.index) == ["X_none", "X_combat", "X_noise"]
    scaled = bm._results_multi(True, True)
    metric_cols = [c for c in scaled.columns if c[0] != "Aggregate score"]
    for c in metric_cols:
        col = scaled[c]
        if wide[c].nunique() > 1:
            assert col.min() == pytest.approx(0) and col.max() == pytest.approx(1)
    # simulator ground truth: random noise preserves no biology, the corrected data the most
    bio = wide[("Aggregate score", "Bio conservation")]
    assert bio["X_noise"] < bio["X_none"] and bio["X_noise"] < bio["X_combat"]
    assert wide[("Bio conservation", "mAP negcon")]["X_noise"] < 0.5 * wide[("Bio conservation", "mAP negcon")]["X_combat"]
    t = bm.timings
    assert "neighbors + label silhouette" in set(t["step"])  # one pass for kNN and label silhouettes
    assert "kbet_per_label" in set(t["step"]) and (t["seconds"] >= 0).all()
    assert set(bm.neighbors) == {"X_none", "X_combat", "X_noise"}
    # rerunning warns and gives the same numbers
    before = bm.get_results()
    with pytest.warns(UserWarning, match="already been run"):
        assert bm.benchmark() is None
    pd.testing.assert_frame_equal(before, bm.get_results())


def test_metric_kwargs_and_presets():
    a = ip.datasets.simulate(n_plates=2, n_batches=2, n_perturbations=12, n_moa=3, n_features=30, seed=0)
    a.obsm["X_raw"] = (a.X - a.X.mean(0)) / a.X.std(0)
    bm = ip.bench.Benchmarker(
        a, "Metadata_Batch", "Metadata_moa", ["X_raw"],
        ip.bench.BioConservation(silhouette_label={"metric": "cosine"}, nmi_ari_cluster_labels_leiden=False,
                                 nmi_ari_cluster_labels_kmeans=False, isolated_labels=False, clisi_knn=False,
                                 map_nonrep=False),
        ip.bench.BatchCorrection.arevalo2024(), progress_bar=False,
    )
    bm.benchmark()
    res = bm.get_results(tidy=True).set_index("metric")["value"]
    assert res["Silhouette label"] == pytest.approx(
        ip.bench.silhouette_label(a.obsm["X_raw"], a.obs["Metadata_moa"], metric="cosine"))
    assert "Silhouette batch" in res and "BRAS" not in res
    assert ip.bench.BioConservation.scib_metrics().nmi_ari_cluster_labels_leiden is False


def test_progress_bar_shown(capsys):
    a = ip.datasets.simulate(n_plates=2, n_batches=2, n_perturbations=8, n_moa=2, n_features=20, seed=0)
    a.X = (a.X - a.X.mean(0)) / a.X.std(0)
    ip.bench.run_methods(a, ["none"], "Metadata_Batch", "Metadata_moa", progress_bar=True,
                         bio_conservation_metrics=ip.bench.BioConservation(nmi_ari_cluster_labels_leiden=False))
    err = capsys.readouterr().err
    assert "Correction methods" in err and "Embeddings" in err


def test_bad_input():
    a = ip.datasets.simulate(n_plates=2, n_batches=2, n_perturbations=8, n_moa=2, n_features=20, seed=0)
    a.obsm["E"] = np.asarray(a.X)
    with pytest.raises(KeyError, match="Metadata_nope"):
        ip.bench.Benchmarker(a, "Metadata_nope", "Metadata_moa", ["E"])
    with pytest.raises(KeyError, match="X_missing"):
        ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_moa", ["X_missing"])
    a.obs["one_batch"] = "b"
    with pytest.raises(ValueError, match="one_batch.*single level"):
        ip.bench.Benchmarker(a, "one_batch", "Metadata_moa", ["E"])
    a.obs["one_label"] = "x"
    with pytest.raises(ValueError, match="one_label.*single level"):
        ip.bench.Benchmarker(a, "Metadata_Batch", "one_label", ["E"])
    # a single batch is fine when only biology is measured
    ip.bench.Benchmarker(a, "one_batch", "Metadata_moa", ["E"], batch_correction_metrics=None)
    a.obsm["E_nan"] = a.obsm["E"].copy()
    a.obsm["E_nan"][5, 2] = np.nan
    bm = ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_moa", ["E", "E_nan"], progress_bar=False)
    with pytest.raises(ValueError, match=r"adata.obsm\['E_nan'\] contains 1 NaN"):
        bm.benchmark()
    a.obs.loc[a.obs_names[0], "Metadata_moa"] = np.nan
    with pytest.raises(ValueError, match="missing value"):
        ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_moa", ["E"])
    with pytest.raises(ValueError, match="map_negcon"):
        ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_Plate", ["E"], ip.bench.BioConservation(map_negcon=True))
    with pytest.raises(ValueError, match="selects no observation"):
        ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_Plate", ["E"], negcon="Metadata_moa == 'zzz'")
    with pytest.raises(ValueError, match="unknown method"):
        ip.bench.run_methods(a, ["nope"], "Metadata_Batch", "Metadata_Plate")
    with pytest.raises(RuntimeError, match="benchmark"):
        ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_Plate", ["E"]).get_results()


def test_plot_results_table(cmqtl_bench, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    _, res = cmqtl_bench
    out = tmp_path / "table.png"
    ax = ip.pl.plot_results_table(res, show=False, save=str(out))
    assert out.stat().st_size > 1000
    texts = {t.get_text() for t in ax.texts}
    assert {"X_none", "X_harmony", "Batch correction", "Bio conservation", "Aggregate score"} <= texts
    # rows sorted by total: the first method name drawn is the best one
    tot = res[res["metric"] == "Total"].set_index("embedding")["value"]
    names = [t.get_text() for t in ax.texts if t.get_text() in ("X_none", "X_harmony")]
    assert names[0] == tot.idxmax()
    ax2 = ip.pl.benchmark_table(res, min_max_scale=True, show=False)
    assert ax2 is not None
    with pytest.raises(ValueError, match="missing column"):
        ip.pl.plot_results_table(res.drop(columns="metric_type"), show=False)
