"""Guardrails: feature dominance, circular tuning, like-for-like baselines, degenerate metrics;
Benchmarker drop-in parity with scib-metrics' API."""

import inspect
import warnings

import numpy as np
import pandas as pd
import pytest

import imgprof as ip
from imgprof._core.guardrails import (
    BaselineWarning,
    CircularTuningWarning,
    DegenerateMetricWarning,
    FeatureDominanceWarning,
)

CTRL = "Metadata_target_gene == 'CONTROL'"


def _sim():
    return ip.datasets.simulate(n_plates=2, n_batches=2, n_perturbations=12, n_moa=3, n_features=30, seed=0)


@pytest.mark.parametrize("shape", [(300, 9), (1, 4), (0, 3)])
def test_feature_dominance_equals_numpy_with_nan_and_inf(shape):
    # the compiled column moments (no copy of X) give exactly np.nanvar / np.nanmax(np.abs(X)), edge values included
    from imgprof._core.guardrails import feature_dominance

    X = np.random.default_rng(1).normal(size=shape) * np.arange(1, shape[1] + 1)
    if shape[0] > 5:
        X[:, 2] = np.nan  # all-NaN column
        X[3, 4], X[4, 5], X[0, 6], X[2, 0] = np.inf, -np.inf, 1e200, np.nan
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        var = np.nan_to_num(np.nanvar(X, axis=0)) if shape[0] else np.zeros(shape[1])
        absmax = np.nan_to_num(np.nanmax(np.abs(X), axis=0)) if shape[0] else np.zeros(shape[1])
    info = feature_dominance(X)
    want = var / var.sum() if var.sum() > 0 else np.zeros(shape[1])
    np.testing.assert_array_equal(info["share"], want)
    assert info["max_abs"] == absmax.max()
    assert info["max_abs_feature"] == str(int(np.argmax(absmax)))


def test_feature_dominance_warns_on_constructed_matrix():
    # a feature nearly constant in the controls explodes under mad_robustize (the cmQTL failure mode)
    b = _sim()
    Y = np.asarray(b.X, dtype=np.float64)
    negcon = (b.obs["Metadata_control_type"] == "negcon").to_numpy()
    Y[negcon, 5] = Y[negcon, 5].mean() + 1e-3 * (Y[negcon, 5] - Y[negcon, 5].mean())  # near-constant in controls
    b.X = Y
    with pytest.warns(FeatureDominanceWarning, match=r"carries \d+% of the total variance") as rec:
        ip.pp.normalize(b, "mad_robustize", controls="Metadata_control_type == 'negcon'")
    msg = str(next(w.message for w in rec if w.category is FeatureDominanceWarning))
    assert str(b.var_names[5]) in msg and "drop_outliers" in msg
    share = np.nanvar(b.X, 0) / np.nanvar(b.X, 0).sum()
    assert share.max() > 0.10
    prov = ip.provenance(b).iloc[-1]["extra"]
    assert prov["top_variance_share"][0][0] == str(b.var_names[5])
    # the recipe's drop_outliers removes it and the kept matrix is quiet
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureDominanceWarning)
        ip.pp.feature_select(b, ["drop_outliers"], outlier_cutoff=100)
    assert b.uns["feature_select"]["drop_outliers"] == [str(_sim().var_names[5])]
    share = np.nanvar(b.X, 0) / np.nanvar(b.X, 0).sum()
    assert share.max() <= 0.10


def test_no_dominance_warning_on_balanced_matrix_and_switch_off():
    a = _sim()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureDominanceWarning)
        ip.pp.normalize(a, "standardize", by="Metadata_Plate")
    X = np.asarray(a.X).copy()
    X[:, 0] *= 1e3
    a.X = X
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureDominanceWarning)
        ip.pp.normalize(a, "robustize", max_variance_share=None, outlier_cutoff=None)


def test_readme_recipe_leaves_no_dominant_feature():
    """README recipe on the bundled cmQTL data: the first normalize warns, feature_select fixes it."""
    a = ip.datasets.cmqtl_crispri()
    with pytest.warns(FeatureDominanceWarning, match="Cytoplasm_Correlation_Costes_DNA_Mito"):
        ip.pp.normalize(a, method="mad_robustize", controls=CTRL, by="Metadata_Batch")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureDominanceWarning)
        ip.pp.feature_select(a, operation=["variance_threshold", "correlation_threshold", "drop_na_columns",
                                           "blocklist", "drop_outliers"], outlier_cutoff=100)
    v = np.nanvar(np.asarray(a.X, dtype=float), 0)
    assert (v / v.sum()).max() <= 0.10
    assert "Cytoplasm_Correlation_Costes_DNA_Mito" in a.uns["feature_select"]["drop_outliers"]


def test_sphering_label_free_by_default_and_records_tuning():
    a = ip.datasets.cmqtl_crispri()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ip.pp.normalize(a, "standardize", by="Metadata_Batch")
    ip.tl.integrate(a, "sphering", "Metadata_Batch", controls=CTRL)  # a grid, no label: label-free
    u = a.uns["sphering"]
    assert u["criterion"] == "control_likelihood" and u["tuned_on_label"] is None
    assert len(u["grid"]["epsilon"]) > 1
    ip.tl.integrate(a, "sphering", "Metadata_Batch", controls=CTRL, label_key="Metadata_target_gene",
                    key_added="X_sph_label")
    extra = ip.provenance(a).iloc[-1]["extra"]
    assert extra["tuned_on_label"] == "Metadata_target_gene"
    assert extra["fitted_on"] == CTRL


def test_benchmarker_flags_circular_tuning_and_refuses_on_request():
    a = ip.datasets.cmqtl_crispri()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ip.pp.normalize(a, "standardize", by="Metadata_Batch")
        ip.tl.integrate(a, "none", "Metadata_Batch")
        ip.tl.integrate(a, "sphering", "Metadata_Batch", controls=CTRL, label_key="Metadata_target_gene")
        ip.tl.integrate(a, "sphering", "Metadata_Batch", controls=CTRL, key_added="X_sph_free")
    with pytest.warns(CircularTuningWarning, match="Metadata_target_gene"):
        bm = ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_target_gene", ["X_none", "X_sphering"],
                                  progress_bar=False)
    assert (bm.flags["kind"] == "circular").sum() == 1 and bm.flags["embedding"].iloc[0] == "X_sphering"
    with pytest.raises(ValueError, match="label_key='Metadata_target_gene'"):
        ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_target_gene", ["X_none", "X_sphering"],
                             progress_bar=False, on_circular="raise")
    # evaluated on another label: not circular in the label sense; fitted controls = negcon still flagged
    with pytest.warns(CircularTuningWarning, match="negative controls of mAP negcon"):
        bm = ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_target_gene", ["X_none", "X_sph_free"],
                                  negcon=CTRL, progress_bar=False)
    assert set(bm.flags["metric"]) == {"mAP negcon"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", CircularTuningWarning)
        bm = ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_target_gene", ["X_none", "X_sph_free"],
                                  progress_bar=False)
    assert bm.flags.empty


def test_benchmarker_asks_for_same_space_baseline():
    a = ip.datasets.cmqtl_crispri()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ip.pp.normalize(a, "standardize", by="Metadata_Batch")
    ip.tl.pca(a, n_comps=20)
    ip.tl.integrate(a, "none", "Metadata_Batch")
    ip.tl.integrate(a, "harmony", "Metadata_Batch")
    with pytest.warns(BaselineWarning, match="X_pca"):
        bm = ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_target_gene", ["X_none", "X_harmony"],
                                  progress_bar=False)
    assert list(bm.flags["kind"]) == ["baseline"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", BaselineWarning)
        ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_target_gene", ["X_pca", "X_harmony"], progress_bar=False)


def test_benchmarker_flags_degenerate_metric():
    a = _sim()
    rng = np.random.default_rng(0)
    b = (a.obs["Metadata_Batch"] == a.obs["Metadata_Batch"].iloc[0]).to_numpy()
    # batches far apart in every embedding: iLISI is 0 for all of them
    for i in range(2):
        E = rng.normal(size=(a.n_obs, 5))
        E[b] += 1000.0
        a.obsm[f"X_e{i}"] = E
    bm = ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_moa", ["X_e0", "X_e1"], progress_bar=False,
                              bio_conservation_metrics=None)
    with pytest.warns(DegenerateMetricWarning, match="iLISI = 0.000 for every embedding: every profile"):
        bm.benchmark()
    f = bm.flags
    assert "iLISI" in set(f.loc[f["kind"] == "degenerate", "metric"])
    ilisi = bm.get_results().drop("Metric Type")["iLISI"].astype(float)
    assert (ilisi == 0).all()


def test_benchmarker_is_a_drop_in_for_scib_metrics():
    scib = pytest.importorskip("scib_metrics.benchmark")
    ours, ref = ip.bench.Benchmarker, scib.Benchmarker
    p_o = list(inspect.signature(ours.__init__).parameters.values())
    p_r = list(inspect.signature(ref.__init__).parameters.values())
    # the same positional parameters, in the same order
    assert [p.name for p in p_r] == [p.name for p in p_o[: len(p_r)]]
    for name in ("get_results", "plot_results_table", "prepare", "benchmark"):
        sr = inspect.signature(getattr(ref, name)).parameters
        so = inspect.signature(getattr(ours, name)).parameters
        for pname, par in sr.items():
            assert pname in so, (name, pname)
            assert so[pname].default == par.default, (name, pname)
    # BioConservation.scib_metrics() reproduces scib's default set; ours adds Leiden and mAP, and says so
    ref_bio = {k: v for k, v in vars(scib.BioConservation()).items()}
    mine = ip.bench.BioConservation.scib_metrics()
    assert {k: getattr(mine, k) for k in ref_bio} == ref_bio
    assert not mine.map_nonrep and not mine.map_negcon
    ref_batch = vars(scib.BatchCorrection())
    mb = ip.bench.BatchCorrection.scib_metrics()
    assert {k: getattr(mb, k) for k in ref_batch} == ref_batch and not mb.silhouette_batch
    assert "Leiden" in ours.__doc__ and "mAP" in ours.__doc__


def test_get_results_shape_and_plot_like_scib(tmp_path):
    a = _sim()
    X = np.asarray(a.X, dtype=np.float64)
    a.obsm["X_a"] = (X - X.mean(0)) / X.std(0)
    a.obsm["X_b"] = a.obsm["X_a"][:, :10]
    bm = ip.bench.Benchmarker(a, "Metadata_Batch", "Metadata_moa", ["X_a", "X_b"],
                              ip.bench.BioConservation.scib_metrics(), progress_bar=False)
    assert bm.benchmark() is None
    df = bm.get_results()
    assert list(df.index) == ["X_a", "X_b", "Metric Type"] and df.index.name == "Embedding"
    assert list(df.columns[-3:]) == ["Batch correction", "Bio conservation", "Total"]
    assert df.loc["Metric Type", "Total"] == "Aggregate score"
    assert df.loc["Metric Type", "iLISI"] == "Batch correction"
    tidy = bm.get_results(tidy=True)
    assert list(tidy.columns) == ["embedding", "metric_type", "metric", "value"]
    num = df.drop("Metric Type").astype(float)
    for _, r in tidy.iterrows():
        assert num.loc[r["embedding"], r["metric"]] == pytest.approx(r["value"], nan_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    ax = bm.plot_results_table(show=False, save_dir=str(tmp_path))
    assert (tmp_path / "scib_results.svg").exists() and ax is not None
    # ip.pl.plot_results_table also draws scib-metrics' wide table itself
    ip.pl.plot_results_table(df, show=False)


@pytest.mark.slow
def test_report_flags_sphering_without_a_benchmarker(tmp_path):
    """A run with [evaluate] but no [benchmark]: the report still refuses sphering's mAP against its own controls."""
    from imgprof.pipeline import Config
    from imgprof.report import write_report

    a = ip.datasets.cmqtl_crispri()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ip.pp.normalize(a, "standardize", by="Metadata_Batch")
    ip.tl.integrate(a, "none", "Metadata_Batch")
    ip.tl.integrate(a, "sphering", "Metadata_Batch", controls=CTRL)
    ctrl = (a.obs["Metadata_target_gene"] == "CONTROL").to_numpy()
    rows, maps = [], {}
    for key in ("X_none", "X_sphering"):
        m = ip.metrics.phenotypic_activity(a, "Metadata_target_gene", controls=CTRL, use_rep=key, null_size=200)
        maps[key] = m
        sh = ip.bench.batch_neighbor_share(a.obsm[key], a.obs["Metadata_Batch"], exclude=ctrl)
        for name, v in (("mean_mAP", m["mean_average_precision"].mean()), ("fraction_active", m["below_corrected_p"].mean()),
                        ("same_batch_share_10nn", sh["share"]), ("same_batch_share_expected", sh["expected"])):
            rows.append({"embedding": key, "metric": name, "value": float(v)})
    cfg = Config(sections={"input": {}, "evaluate": {"perturbation_key": "Metadata_target_gene", "controls": CTRL}})
    import matplotlib

    matplotlib.use("Agg")
    html = write_report(a, tmp_path / "r.html", metrics=pd.DataFrame(rows),
                        extras={"map": maps}, config=cfg).read_text()
    assert "not comparable (flagged" in html
    assert "the negative controls of mAP" in html


def test_qc_plate_map_starts_at_zero():
    """A QC flag map never paints 'not flagged' (0) in the middle of the colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    a = ip.datasets.simulate(n_plates=1, seed=0)
    flags = np.zeros(a.n_obs, dtype=bool)
    a.obs["Metadata_qc_any"] = flags  # nothing flagged: the whole plate must be the bottom colour
    ax = ip.pl.plate_layout(a, "Metadata_qc_any", show=False, cmap="Reds")
    norm = ax.images[0].norm
    assert norm.vmin == 0 and norm.vmax == 1
    rgba = ax.images[0].to_rgba(np.array([0.0]))
    assert np.allclose(rgba[0][:3], matplotlib.colormaps["Reds"](0.0)[:3])
