"""ip.pp.feature_select against pycytominer 1.7.1: identical selected feature sets on real and simulated data."""

from __future__ import annotations

import warnings

import pytest

import imgprof as ip

pcm = pytest.importorskip("pycytominer")

ALL_OPS = ["drop_na_columns", "variance_threshold", "frequency_threshold", "correlation_threshold", "blocklist", "drop_outliers"]


def _pcm_selected(df, feats, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = pcm.feature_select(df, features=list(feats), **kw)
    keep = set(out.columns)
    return [f for f in feats if f in keep]


def _check(adata, df, **kw):
    feats = list(adata.var_names)
    ref = _pcm_selected(df, feats, **kw)
    ours = ip.pp.feature_select(adata, copy=True, **kw)
    assert list(ours.var_names) == ref
    # the record lists exactly the dropped features, each under one operation
    rec = ours.uns["feature_select"]
    dropped = [f for names in rec.values() for f in names]
    assert len(dropped) == len(set(dropped))
    assert set(dropped) == set(feats) - set(ref)
    return ours


@pytest.mark.parametrize("corr_threshold", [0.9, 0.7, 0.5])
def test_lincs_correlation_threshold(lincs_df, corr_threshold):
    adata = ip.io.from_pandas(lincs_df)
    ours = _check(adata, lincs_df, operation="correlation_threshold", corr_threshold=corr_threshold)
    if corr_threshold < 0.9:
        assert ours.n_vars < adata.n_vars  # the threshold actually bites on this plate


def test_lincs_all_operations(lincs_df):
    adata = ip.io.from_pandas(lincs_df)
    _check(adata, lincs_df, operation=ALL_OPS, corr_threshold=0.8, outlier_cutoff=15, freq_cut=0.1, unique_cut=0.1)


def test_lincs_samples_query(lincs_df):
    adata = ip.io.from_pandas(lincs_df)
    q = "Metadata_pert_type == 'control'"
    _check(adata, lincs_df, operation=["variance_threshold", "correlation_threshold", "drop_outliers"], samples=q,
           corr_threshold=0.8, outlier_cutoff=5)


def test_lincs_noise_removal(lincs_df):
    adata = ip.io.from_pandas(lincs_df)
    ours = _check(adata, lincs_df, operation="noise_removal", noise_removal_perturb_groups="Metadata_broad_sample",
                  noise_removal_stdev_cutoff=1.0)
    assert 0 < len(ours.uns["feature_select"]["noise_removal"]) < adata.n_vars


def test_cmqtl_two_batches(cmqtl_df):
    adata = ip.io.from_pandas(cmqtl_df)
    _check(adata, cmqtl_df, operation=ALL_OPS, corr_threshold=0.8, outlier_cutoff=20)
    _check(adata, cmqtl_df, operation=["noise_removal", "correlation_threshold"], corr_threshold=0.9,
           noise_removal_perturb_groups="Metadata_target_gene", noise_removal_stdev_cutoff=1.2)


def test_nelisa_negcon(nelisa_df):
    adata = ip.io.from_pandas(nelisa_df)
    q = "Metadata_control_type == 'negcon'"
    _check(adata, nelisa_df, operation=ALL_OPS, samples=q, corr_threshold=0.6, outlier_cutoff=8)
    _check(adata, nelisa_df, operation="correlation_threshold", corr_threshold=0.5, corr_method="spearman")


def test_cells_constant_and_integer_features(cells_df):
    feats = [c for c in cells_df.columns if c.startswith(("Cells_", "Cytoplasm_", "Nuclei_"))]
    meta = [c for c in cells_df.columns if c not in set(feats)]
    adata = ip.io.from_pandas(cells_df, metadata=meta, features=feats)
    ours = _check(adata, cells_df, operation=["variance_threshold", "frequency_threshold", "correlation_threshold", "blocklist"])
    assert len(ours.uns["feature_select"]["variance_threshold"]) >= 20  # the 20 constant features
    ours = _check(adata, cells_df, operation=["frequency_threshold", "correlation_threshold"], unique_cut=0.1)
    assert len(ours.uns["feature_select"]["frequency_threshold"]) > 20  # constants (ratio 0) and few-valued counts
    _check(adata, cells_df, operation=["variance_threshold", "correlation_threshold"], min_variance=0.0, corr_threshold=0.95)


@pytest.fixture(scope="module")
def sim_nan():
    return ip.datasets.simulate(n_plates=4, n_features=100, nan_fraction=0.05, n_constant=3, n_correlated=5, seed=11)


@pytest.mark.parametrize("op", ALL_OPS)
def test_simulated_nan_each_operation(sim_nan, op):
    df = ip.io.to_pandas(sim_nan)
    _check(sim_nan, df, operation=op, outlier_cutoff=1000, na_cutoff=0.06)


def test_simulated_nan_pipeline_and_noise(sim_nan):
    df = ip.io.to_pandas(sim_nan)
    ours = _check(sim_nan, df, operation=ALL_OPS + ["noise_removal"], na_cutoff=0.06, outlier_cutoff=1000,
                  noise_removal_perturb_groups="Metadata_Perturbation", noise_removal_stdev_cutoff=100)
    rec = ours.uns["feature_select"]
    consts = [f"Nuclei_Neighbors_NumberOfNeighbors_{i}" for i in range(3)]
    assert not set(consts) & set(ours.var_names)
    assert set(consts) <= set(rec["variance_threshold"]) | set(rec["drop_na_columns"])
    # near-duplicates (r > 0.99) that survive the NaN filter are caught despite 5 % NaN
    # (pandas' pairwise-complete correlation path in pycytominer)
    assert any("_dup" in f for f in rec["correlation_threshold"])
    # with samples= (negcon rows only) as well
    _check(sim_nan, df, operation=["variance_threshold", "correlation_threshold", "drop_na_columns"],
           samples="Metadata_control_type == 'negcon'", na_cutoff=0.1)
