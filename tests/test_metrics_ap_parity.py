"""Average precision: parity with copairs 0.5 on real (LINCS, nELISA) and simulated data."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import shared

import imgprof as ip
apmod = __import__("importlib").import_module("imgprof.metrics._ap_kernels")  # holds _DENSE_MIN_FILL

copairs_map = pytest.importorskip("copairs.map")


def _lincs():
    df = pd.read_csv(shared("lincs", "SQ00015054_normalized_feature_select.csv.gz"))
    return ip.io.from_pandas(df)


def _with_ref(meta: pd.DataFrame, col: str, control: str) -> pd.DataFrame:
    meta = meta.reset_index(drop=True).copy()
    ctrl = (meta[col] == control).to_numpy()
    meta["Metadata_ref"] = -1
    meta.loc[ctrl, "Metadata_ref"] = np.arange(int(ctrl.sum()))
    return meta


def _assert_same(ours: pd.DataFrame, theirs: pd.DataFrame):
    np.testing.assert_array_equal(ours["n_pos_pairs"].to_numpy(), theirs["n_pos_pairs"].to_numpy())
    np.testing.assert_array_equal(ours["n_total_pairs"].to_numpy(), theirs["n_total_pairs"].to_numpy())
    a, b = ours["average_precision"].to_numpy(float), theirs["average_precision"].to_numpy(float)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=0, atol=1e-9)
    a, b = ours["normalized_average_precision"].to_numpy(float), theirs["normalized_average_precision"].to_numpy(float)
    np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=0, atol=1e-9)


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


@pytest.fixture(scope="module")
def lincs():
    return _lincs()


def test_lincs_replicates_vs_dmso_match_copairs(lincs):
    """Compound-level retrieval (doses pooled: one well per compound-dose) against DMSO, copairs' reference-index recipe."""
    meta = _with_ref(lincs.obs, "Metadata_broad_sample", "DMSO")
    X = np.asarray(lincs.X)
    args = (["Metadata_broad_sample", "Metadata_ref"], [], [], ["Metadata_broad_sample", "Metadata_ref"])
    theirs = copairs_map.average_precision(meta, X, *args, progress_bar=False)
    ours = _quiet(ip.metrics.average_precision_kernel, X, meta, *args)
    _assert_same(ours, theirs)
    # the AnnData API gives the same numbers, with the reference index as an obs column
    ad = lincs.copy()
    ad.obs["Metadata_ref"] = meta["Metadata_ref"].to_numpy()
    api = _quiet(ip.metrics.average_precision, ad, *args)
    _assert_same(api.reset_index(drop=True), theirs)
    assert list(api.index) == list(ad.obs_names)
    # DMSO wells have no positive pair: NaN, as in copairs
    assert api.loc[ad.obs["Metadata_broad_sample"].eq("DMSO").to_numpy(), "average_precision"].isna().all()


@pytest.mark.parametrize("metric", ["cosine", "correlation", "euclidean"])
def test_lincs_all_other_compounds_as_negatives(lincs, metric):
    meta = lincs.obs.reset_index(drop=True)
    X = np.asarray(lincs.X)
    args = (["Metadata_broad_sample"], [], [], ["Metadata_broad_sample"])
    theirs = copairs_map.average_precision(meta, X, *args, distance=metric, progress_bar=False)
    ours = _quiet(ip.metrics.average_precision_kernel, X, meta, *args, metric=metric)
    _assert_same(ours, theirs)


def test_lincs_moa_consistency_multilabel_matches_copairs(lincs):
    keep = lincs.obs["Metadata_moa"].notna().to_numpy()
    meta = lincs.obs.loc[keep].reset_index(drop=True)
    X = np.asarray(lincs.X)[keep]
    copairs_meta = meta.assign(Metadata_moa=meta["Metadata_moa"].str.split("|"))
    for pos_diffby in ([],):
        theirs = copairs_map.multilabel.average_precision(
            copairs_meta, X, ["Metadata_moa"], pos_diffby, [], ["Metadata_moa"], multilabel_col="Metadata_moa", progress_bar=False
        )
        ours = _quiet(
            ip.metrics.average_precision_kernel, X, meta, ["Metadata_moa"], pos_diffby, [], ["Metadata_moa"],
            multilabel="Metadata_moa",
        )
        # copairs lists only (profile, label) units with positives; we list all, NaN where none
        assert ours.loc[ours["n_pos_pairs"] == 0, "average_precision"].isna().all()
        ours = ours.loc[ours["n_pos_pairs"] > 0]
        o = ours.set_index(["Metadata_Well", "Metadata_moa"]).sort_index()
        t = theirs.set_index(["Metadata_Well", "Metadata_moa"]).sort_index()
        assert o.index.equals(t.index)
        _assert_same(o, t)
    # several labels per profile really are split ("a|b" -> two units)
    assert ours["Metadata_moa"].str.contains("|", regex=False).sum() == 0


def test_nelisa_replicates_vs_same_plate_dmso(shared_data):
    df = pd.read_parquet(shared("nelisa", "nelisa_profiles.parquet"))
    meta = df.filter(like="Metadata_").copy()
    X = df.drop(columns=meta.columns).to_numpy(dtype=float)
    meta["Metadata_broad_sample"] = meta["Metadata_broad_sample"].fillna("DMSO")
    meta = _with_ref(meta, "Metadata_broad_sample", "DMSO")
    args = (["Metadata_broad_sample", "Metadata_ref"], [], ["Metadata_Plate"], ["Metadata_broad_sample", "Metadata_ref"])
    theirs = copairs_map.average_precision(meta, X, *args, progress_bar=False)
    ours = _quiet(ip.metrics.average_precision_kernel, X, meta, *args)
    _assert_same(ours, theirs)
    # negatives restricted to the query's plate: 64 DMSO per plate
    trt = meta["Metadata_broad_sample"].ne("DMSO").to_numpy()
    assert set((ours["n_total_pairs"] - ours["n_pos_pairs"])[trt]) == {64}


def _simulated(seed=3):
    a = ip.datasets.simulate(n_plates=18, n_batches=3, n_perturbations=10, n_moa=4, n_controls=4, n_features=30, seed=seed)
    X = np.asarray(a.X, dtype=float)
    ctrl = a.obs["Metadata_control_type"].eq("negcon").to_numpy()
    X = (X - X[ctrl].mean(0)) / X[ctrl].std(0)
    return X, a.obs.reset_index(drop=True)


@pytest.mark.parametrize("fill", [0.0, 2.0])
def test_simulated_dense_and_paired_paths(monkeypatch, fill):
    """>16 replicates per row (sorted-row path); dense or paired similarity blocks; tiny blocks."""
    X, meta = _simulated()
    monkeypatch.setattr(apmod, "_DENSE_MIN_FILL", fill)
    cases = [
        (["Metadata_Perturbation"], [], [], ["Metadata_Perturbation"]),
        (["Metadata_Perturbation"], ["Metadata_Batch"], ["Metadata_Plate"], ["Metadata_Perturbation"]),
        (["Metadata_moa"], ["Metadata_Perturbation"], [], ["Metadata_moa"]),
        (["Metadata_Batch"], ["Metadata_Plate"], ["Metadata_Plate"], ["Metadata_Well"]),  # pos/neg overlap allowed
    ]
    for args in cases:
        theirs = copairs_map.average_precision(meta, X, *args, progress_bar=False)
        ours = _quiet(ip.metrics.average_precision_kernel, X, meta, *args, max_block_elements=3000)
        _assert_same(ours, theirs)
    assert theirs["n_pos_pairs"].max() > 16


def _brute_counts(meta, sameby, diffby):
    """Oracle: count partners by the definition (all: every column; any: at least one column)."""
    v = {c: meta[c].to_numpy() for c in meta.columns}
    n = len(meta)
    out = np.zeros(n, int)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            ok = all(v[c][i] == v[c][j] for c in sameby.get("all", []))
            if sameby.get("any"):
                ok &= any(v[c][i] == v[c][j] for c in sameby["any"])
            ok &= all(v[c][i] != v[c][j] for c in diffby.get("all", []))
            if diffby.get("any"):
                ok &= any(v[c][i] != v[c][j] for c in diffby["any"])
            out[i] += ok
    return out


def test_any_all_dict_pair_definitions():
    import itertools

    from copairs.matching import Matcher

    X, meta = _simulated()
    meta = meta.iloc[::4].reset_index(drop=True)
    X = X[::4]
    cols = ["Metadata_Batch", "Metadata_moa", "Metadata_Plate", "Metadata_Well", "Metadata_Perturbation"]
    # 1) checked against copairs' Matcher (its fast path: sameby 'any' only)
    sameby = {"any": ["Metadata_moa", "Metadata_Plate"]}
    diffby = {"all": ["Metadata_Batch"], "any": ["Metadata_Perturbation", "Metadata_Well"]}
    pairs = np.asarray(list(itertools.chain.from_iterable(Matcher(meta[cols], cols, seed=0).get_all_pairs(sameby, diffby).values())))
    expected = np.bincount(pairs.ravel(), minlength=len(meta))
    ours = _quiet(ip.metrics.average_precision_kernel, X, meta, sameby, diffby, [], ["Metadata_Perturbation"])
    assert expected.sum() > 0
    np.testing.assert_array_equal(ours["n_pos_pairs"].to_numpy(), expected)
    np.testing.assert_array_equal(_brute_counts(meta, sameby, diffby), expected)
    # 2) 'all' and 'any' together, against the oracle
    sameby = {"all": ["Metadata_Batch"], "any": ["Metadata_moa", "Metadata_Plate"]}
    diffby = {"any": ["Metadata_Perturbation", "Metadata_Well"]}
    ours = _quiet(ip.metrics.average_precision_kernel, X, meta, sameby, diffby, [], ["Metadata_Perturbation"])
    brute = _brute_counts(meta, sameby, diffby)
    assert brute.sum() > 0
    np.testing.assert_array_equal(ours["n_pos_pairs"].to_numpy(), brute)


def test_reference_retrieval_equals_cross_set_pairs_in_copairs():
    """Query in one set, candidates in another = copairs on the union with 'different set' in every pair rule."""
    X, meta = _simulated(seed=5)
    rng = np.random.default_rng(0)
    in_a = rng.random(len(meta)) < 0.5
    meta = meta.assign(Metadata_set=np.where(in_a, "A", "B"))
    args = (["Metadata_Perturbation"], ["Metadata_set"], [], ["Metadata_Perturbation", "Metadata_set"])
    theirs = copairs_map.average_precision(meta, X, *args, progress_bar=False)
    ours = _quiet(
        ip.metrics.average_precision_kernel, X[in_a], meta.loc[in_a].reset_index(drop=True),
        ["Metadata_Perturbation"], [], [], ["Metadata_Perturbation"],
        reference_X=X[~in_a], reference_obs=meta.loc[~in_a].reset_index(drop=True),
    )
    _assert_same(ours, theirs.loc[in_a].reset_index(drop=True))
    # AnnData form
    import anndata as ad

    qo, ro = meta.loc[in_a].reset_index(drop=True), meta.loc[~in_a].reset_index(drop=True)
    q = ad.AnnData(X[in_a], obs=qo.set_axis([f"q{i}" for i in range(len(qo))]))
    r = ad.AnnData(X[~in_a], obs=ro.set_axis([f"r{i}" for i in range(len(ro))]))
    api = _quiet(ip.metrics.average_precision, q, ["Metadata_Perturbation"], neg_diffby=["Metadata_Perturbation"], reference=r)
    _assert_same(api.reset_index(drop=True), theirs.loc[in_a].reset_index(drop=True))


@pytest.mark.parametrize("metric", ["abs_cosine", "manhattan", "chebyshev"])
def test_other_metrics_on_simulated(metric):
    X, meta = _simulated(seed=7)
    args = (["Metadata_Perturbation"], ["Metadata_Plate"], [], ["Metadata_Perturbation"])
    theirs = copairs_map.average_precision(meta, X, *args, distance=metric, progress_bar=False)
    ours = _quiet(ip.metrics.average_precision_kernel, X, meta, *args, metric=metric)
    _assert_same(ours, theirs)


def test_multilabel_with_pos_diffby_on_simulated():
    X, meta = _simulated(seed=9)
    meta = meta.assign(Metadata_moa=np.where(meta.index % 3 == 0, meta["Metadata_moa"] + "|extra", meta["Metadata_moa"]))
    cm = meta.assign(Metadata_moa=meta["Metadata_moa"].str.split("|"))
    theirs = copairs_map.multilabel.average_precision(
        cm, X, ["Metadata_moa"], ["Metadata_Perturbation"], [], ["Metadata_moa"], multilabel_col="Metadata_moa", progress_bar=False
    )
    ours = _quiet(ip.metrics.average_precision_kernel, X, meta, ["Metadata_moa"], ["Metadata_Perturbation"], [], ["Metadata_moa"],
                  multilabel="Metadata_moa")
    ours = ours.loc[ours["n_pos_pairs"] > 0]
    o = ours.assign(r=ours.index.astype(int)).set_index(["r", "Metadata_moa"]).sort_index()
    t = theirs.assign(r=theirs["Metadata_Plate"] + theirs["Metadata_Well"])
    o2 = ours.assign(r=ours["Metadata_Plate"] + ours["Metadata_Well"]).set_index(["r", "Metadata_moa"]).sort_index()
    t = t.set_index(["r", "Metadata_moa"]).sort_index()
    assert o2.index.equals(t.index) and len(o) == len(t)
    _assert_same(o2, t)


def test_float32_agrees_with_float64_on_real_data(lincs):
    meta = _with_ref(lincs.obs, "Metadata_broad_sample", "DMSO")
    X = np.asarray(lincs.X)
    args = (["Metadata_broad_sample", "Metadata_ref"], [], [], ["Metadata_broad_sample", "Metadata_ref"])
    a = _quiet(ip.metrics.average_precision_kernel, X, meta, *args)
    b = _quiet(ip.metrics.average_precision_kernel, X, meta, *args, dtype=np.float32)
    np.testing.assert_allclose(a["average_precision"], b["average_precision"], atol=1e-6)
