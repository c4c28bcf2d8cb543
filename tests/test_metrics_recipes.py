"""Phenotypic activity / consistency, percent replicating / matching, plots, doctests, benchmark smoke."""

from __future__ import annotations

import doctest
import importlib
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import shared

import imgprof as ip


@pytest.fixture(scope="module")
def lincs():
    return ip.io.from_pandas(pd.read_csv(shared("lincs", "SQ00015054_normalized_feature_select.csv.gz")))


def _normalized_sim(seed=2, **kw):
    """Simulated plates, log + z-scored to the negative controls of each plate (a robust-normalization stand-in)."""
    params = dict(n_plates=4, n_perturbations=24, n_moa=6, n_controls=16, n_features=60, seed=seed)
    params.update(kw)
    a = ip.datasets.simulate(**params)
    X = np.asarray(a.X, dtype=float)
    ctrl = a.obs["Metadata_control_type"].eq("negcon").to_numpy()
    for p in a.obs["Metadata_Plate"].unique():
        m = a.obs["Metadata_Plate"].eq(p).to_numpy()
        mu, sd = X[m & ctrl].mean(0), X[m & ctrl].std(0) + 1e-9
        X[m] = (X[m] - mu) / sd
    a.X = X
    return a


def test_phenotypic_activity_equals_copairs_recipe(lincs, tmp_path):
    copairs_map = pytest.importorskip("copairs.map")
    res = ip.metrics.phenotypic_activity(lincs, "Metadata_broad_sample", controls="Metadata_broad_sample == 'DMSO'",
                                         null_size=2000, seed=0, return_ap=True)
    assert isinstance(res, ip.metrics.RetrievalResult)
    ap, m = res.ap, res.map
    with pytest.raises(TypeError, match="not a tuple"):
        ap, m = res
    meta = lincs.obs.reset_index(drop=True).copy()
    ctrl = meta["Metadata_broad_sample"].eq("DMSO").to_numpy()
    meta["ref"] = -1
    meta.loc[ctrl, "ref"] = np.arange(int(ctrl.sum()))
    theirs = copairs_map.average_precision(meta, np.asarray(lincs.X), ["Metadata_broad_sample", "ref"], [], [],
                                           ["Metadata_broad_sample", "ref"], progress_bar=False)
    np.testing.assert_allclose(ap["average_precision"].to_numpy(float), theirs["average_precision"].to_numpy(float), atol=1e-9)
    assert list(ap.columns[: lincs.obs.shape[1]]) == list(lincs.obs.columns)
    ref = copairs_map.mean_average_precision(theirs.loc[~ctrl], ["Metadata_broad_sample"], null_size=2000, threshold=0.05,
                                             seed=0, progress_bar=False, cache_dir=tmp_path)
    np.testing.assert_allclose(m["mean_average_precision"], ref["mean_average_precision"], atol=1e-12)
    assert "DMSO" not in set(m["Metadata_broad_sample"])


def test_phenotypic_activity_recovers_simulated_truth():
    a = _normalized_sim()
    m = ip.metrics.phenotypic_activity(a, "Metadata_Perturbation", controls="Metadata_control_type == 'negcon'",
                                       sameby_controls="Metadata_Plate", null_size=2000)
    truth = a.obs.groupby("Metadata_Perturbation")["Metadata_active"].first()
    active = m.set_index("Metadata_Perturbation")["below_corrected_p"]
    t = truth.loc[active.index]
    assert active[t].mean() >= 0.8  # sensitivity
    assert active[~t].mean() <= 0.34  # few inactive calls (4 replicates: power is limited either way)


def test_phenotypic_consistency_multilabel_matches_copairs(lincs):
    copairs_map = pytest.importorskip("copairs.map")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ip.metrics.phenotypic_consistency(lincs, "Metadata_moa", "Metadata_broad_sample",
                                                controls="Metadata_broad_sample == 'DMSO'", null_size=1000, return_ap=True)
    ap, m = res.ap, res.map
    # copairs on the same consensus profiles
    keep = lincs.obs["Metadata_moa"].notna() & lincs.obs["Metadata_broad_sample"].ne("DMSO")
    sub = lincs[keep.to_numpy()]
    df = pd.DataFrame(np.asarray(sub.X)).assign(p=sub.obs["Metadata_broad_sample"].to_numpy())
    cons = df.groupby("p", sort=True).median()
    moa = sub.obs.groupby("Metadata_broad_sample", observed=True)["Metadata_moa"].first().loc[cons.index]
    meta = pd.DataFrame({"Metadata_broad_sample": cons.index, "Metadata_moa": moa.str.split("|").to_numpy()})
    theirs = copairs_map.multilabel.average_precision(meta, cons.to_numpy(), ["Metadata_moa"], [], [], ["Metadata_moa"],
                                                      multilabel_col="Metadata_moa", progress_bar=False)
    o = ap.loc[ap["n_pos_pairs"] > 0].set_index(["Metadata_broad_sample", "Metadata_moa"]).sort_index()
    t = theirs.set_index(["Metadata_broad_sample", "Metadata_moa"]).sort_index()
    assert o.index.equals(t.index)
    np.testing.assert_allclose(o["average_precision"], t["average_precision"], atol=1e-9)
    assert m["Metadata_moa"].is_unique and set(m["Metadata_moa"]) == set(t.index.get_level_values(1))


def test_phenotypic_consistency_filters_by_activity_and_validates(lincs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        act = ip.metrics.phenotypic_activity(lincs, "Metadata_broad_sample", controls="Metadata_broad_sample == 'DMSO'",
                                             null_size=500)
        ap = ip.metrics.phenotypic_consistency(lincs, "Metadata_moa", controls="Metadata_broad_sample == 'DMSO'",
                                               active=act, null_size=500, return_ap=True).ap
    assert set(ap["Metadata_broad_sample"]) <= set(act.loc[act["below_corrected_p"], "Metadata_broad_sample"])
    with pytest.raises(KeyError, match="Metadata_nope"):
        ip.metrics.phenotypic_consistency(lincs, "Metadata_nope")


def test_percent_replicating_real_data_and_definition(lincs):
    res = ip.metrics.percent_replicating(lincs, "Metadata_broad_sample", controls="Metadata_broad_sample == 'DMSO'",
                                         n_null=500, seed=0)
    t = res.table
    assert len(t) == 58 and t["p_value"].between(0, 1).all()
    # the statistic is the median pairwise Spearman correlation among replicates (Way et al. 2022)
    g = t.iloc[0]["Metadata_broad_sample"]
    sub = lincs[lincs.obs["Metadata_broad_sample"].eq(g).to_numpy()]
    C = pd.DataFrame(np.asarray(sub.X)).T.corr(method="spearman").to_numpy()
    assert t.iloc[0]["median_correlation"] == pytest.approx(np.median(C[np.triu_indices(len(C), 1)]), abs=1e-12)
    # p-value from the null of non-replicate sets of the same size
    null = res.null[(0, 6)]
    assert t.iloc[0]["p_value"] == pytest.approx(np.mean(null >= t.iloc[0]["median_correlation"]))
    assert res.percent > 0.5  # real replicate signal on this plate
    again = ip.metrics.percent_replicating(lincs, "Metadata_broad_sample", controls="Metadata_broad_sample == 'DMSO'",
                                           n_null=500, seed=0)
    pd.testing.assert_frame_equal(t, again.table)


def test_percent_replicating_is_calibrated_on_noise():
    import anndata as ad

    rng = np.random.default_rng(0)
    n_pert, reps = 120, 6
    obs = pd.DataFrame({"Metadata_pert": np.repeat([f"p{i}" for i in range(n_pert)], reps),
                        "Metadata_dose": np.tile(["lo", "mid", "hi"], n_pert * 2)}, index=[f"w{i}" for i in range(n_pert * reps)])
    a = ad.AnnData(rng.normal(size=(len(obs), 40)), obs=obs)
    res = ip.metrics.percent_replicating(a, "Metadata_pert", n_null=1000, method="pearson", seed=1)
    assert res.percent <= 0.12  # ~alpha = 5% under the null: no signal, no replication
    # strata (Way et al. score each dose): each dose its own null, 2 replicates per (pert, dose)
    strat = ip.metrics.percent_replicating(a, "Metadata_pert", groupby="Metadata_dose", n_null=300, seed=2)
    assert len(strat.table) == 3 * n_pert and set(strat.null) == {(0, 2), (1, 2), (2, 2)}
    assert strat.percent <= 0.12
    # signal makes it replicate
    X = np.asarray(a.X).copy()
    codes = pd.factorize(obs["Metadata_pert"])[0]
    X += rng.normal(size=(n_pert, 40))[codes] * 1.5
    a.X = X
    assert ip.metrics.percent_replicating(a, "Metadata_pert", n_null=300, method="pearson").percent > 0.9


def test_percent_matching_simulated():
    a = _normalized_sim(n_perturbations=32, n_moa=8, seed=4)
    res = ip.metrics.percent_matching(a, "Metadata_moa", "Metadata_Perturbation",
                                      controls="Metadata_control_type == 'negcon'", n_null=500)
    assert res.kind == "matching" and len(res.table) == 8
    assert res.percent >= 0.5  # MOA classes are real in the simulation
    b = _normalized_sim(n_perturbations=24, n_moa=4, seed=4)
    with pytest.raises(ValueError, match="no shared label"):
        ip.metrics.percent_matching(b, "Metadata_moa", "Metadata_Perturbation", controls="Metadata_control_type == 'negcon'",
                                    n_null=50)


def test_plots(lincs, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = ip.metrics.phenotypic_activity(lincs, "Metadata_broad_sample", null_size=500)
    ax = ip.pl.map_scatter(m, label="Metadata_broad_sample", n_labels=2, show=False, save=str(tmp_path / "m.png"))
    assert ax.get_xlabel() == "mAP" and (tmp_path / "m.png").stat().st_size > 0
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(m)
    res = ip.metrics.percent_replicating(lincs, controls="Metadata_broad_sample == 'DMSO'", n_null=100)
    ax = ip.pl.percent_replicating(res, show=False)
    assert "percent replicating" in ax.get_title()
    with pytest.raises(KeyError, match="mean_average_precision"):
        ip.pl.map_scatter(pd.DataFrame({"x": [1]}), show=False)


@pytest.mark.parametrize("mod", ["imgprof.metrics.average_precision", "imgprof.metrics.null", "imgprof.metrics.replicating",
                                 "imgprof.metrics.scale", "imgprof.pl.retrieval"])
def test_docstring_examples_run(mod):
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = doctest.testmod(importlib.import_module(mod), optionflags=doctest.ELLIPSIS)
    assert r.failed == 0 and r.attempted > 0


@pytest.mark.slow
def test_benchmark_quick_smoke(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "map.md"
    res = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_map.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=900, cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    text = out.read_text()
    assert "copairs" in text and "counts equal True" in text and "counts equal False" not in text


def test_tables_stored_in_uns_with_key_added():
    """key_added stores the returned table in .uns (tables go to .uns) and logs the step; default writes nothing."""
    a = ip.datasets.lincs_plate()
    ctrl = "Metadata_broad_sample == 'DMSO'"
    before = set(a.uns)
    m = ip.metrics.phenotypic_activity(a, "Metadata_broad_sample", controls=ctrl, null_size=200)
    assert set(a.uns) == before  # nothing written without key_added
    m2 = ip.metrics.phenotypic_activity(a, "Metadata_broad_sample", controls=ctrl, null_size=200, key_added="activity")
    pd.testing.assert_frame_equal(m, m2)
    pd.testing.assert_frame_equal(a.uns["activity"], m2)
    c = ip.metrics.phenotypic_consistency(a, "Metadata_moa", controls=ctrl, null_size=200, key_added="consistency")
    pd.testing.assert_frame_equal(a.uns["consistency"], c)
    r = ip.metrics.percent_replicating(a, "Metadata_broad_sample", controls=ctrl, n_null=100, key_added="replicating")
    pd.testing.assert_frame_equal(a.uns["replicating"], r.table)
    r = ip.metrics.percent_matching(a, "Metadata_moa", controls=ctrl, n_null=100, key_added="matching")
    pd.testing.assert_frame_equal(a.uns["matching"], r.table)
    b = ip.metrics.phenotypic_activity_blocked(a, "Metadata_broad_sample", controls=ctrl, block_size=20, null_size=200,
                                               key_added="blocked")
    pd.testing.assert_frame_equal(a.uns["blocked"], b)
    steps = ip.provenance(a)["function"].tolist()
    for f in ("phenotypic_activity", "phenotypic_consistency", "percent_replicating", "percent_matching",
              "phenotypic_activity_blocked"):
        assert f"metrics.{f}" in steps
    with pytest.raises(ValueError, match="view"):
        ip.metrics.phenotypic_activity(a[:200], "Metadata_broad_sample", controls=ctrl, null_size=50, key_added="x")
    with pytest.raises(TypeError, match="key_added"):
        ip.metrics.percent_replicating(a, "Metadata_broad_sample", controls=ctrl, n_null=50, key_added=3)
