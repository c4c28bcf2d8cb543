"""mAP, permutation nulls, p-values and BH: parity with copairs and statistical checks."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import shared

import imgprof as ip
from imgprof.metrics import null as nullmod

copairs_map = pytest.importorskip("copairs.map")


@pytest.fixture(scope="module")
def lincs_ap():
    df = pd.read_csv(shared("lincs", "SQ00015054_normalized_feature_select.csv.gz"))
    meta = df.filter(like="Metadata_").copy()
    X = df.drop(columns=meta.columns).to_numpy(float)
    ctrl = (meta["Metadata_broad_sample"] == "DMSO").to_numpy()
    meta["Metadata_ref"] = -1
    meta.loc[ctrl, "Metadata_ref"] = np.arange(int(ctrl.sum()))
    args = (["Metadata_broad_sample", "Metadata_ref"], [], [], ["Metadata_broad_sample", "Metadata_ref"])
    theirs = copairs_map.average_precision(meta, X, *args, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = ip.metrics.average_precision_kernel(X, meta, *args)
    return ours, theirs


def test_map_copairs_compat_is_identical(lincs_ap, tmp_path):
    ours, theirs = lincs_ap
    ref = copairs_map.mean_average_precision(
        theirs, ["Metadata_broad_sample"], null_size=2000, threshold=0.05, seed=7, progress_bar=False, cache_dir=tmp_path
    )
    ip.metrics.clear_null_cache()
    m = ip.metrics.mean_average_precision(ours, "Metadata_broad_sample", null_size=2000, seed=7, copairs_compat=True)
    assert list(m["Metadata_broad_sample"]) == list(ref["Metadata_broad_sample"])
    np.testing.assert_allclose(m["mean_average_precision"], ref["mean_average_precision"], atol=1e-12)
    np.testing.assert_allclose(m["mean_normalized_average_precision"], ref["mean_normalized_average_precision"], atol=1e-12)
    np.testing.assert_array_equal(m["p_value"].to_numpy(), ref["p_value"].to_numpy())
    np.testing.assert_allclose(m["corrected_p_value"], ref["corrected_p_value"], rtol=1e-12)
    np.testing.assert_array_equal(m["below_p"], ref["below_p"])
    np.testing.assert_array_equal(m["below_corrected_p"], ref["below_corrected_p"])
    assert set(m["n_profiles"]) == {6, 12}  # 56 compounds x 6 doses, 2 compounds x 12 wells


def test_map_default_agrees_statistically_with_copairs(lincs_ap, tmp_path):
    ours, theirs = lincs_ap
    ref = copairs_map.mean_average_precision(
        theirs, ["Metadata_broad_sample"], null_size=5000, threshold=0.05, seed=1, progress_bar=False, cache_dir=tmp_path
    )
    m = ip.metrics.mean_average_precision(ours, "Metadata_broad_sample", null_size=5000, seed=1)
    np.testing.assert_allclose(m["mean_average_precision"], ref["mean_average_precision"], atol=1e-12)
    # same null, different draws: p-values agree up to Monte Carlo error (+ ties counted as >=)
    p, q = m["p_value"].to_numpy(), ref["p_value"].to_numpy()
    assert np.corrcoef(np.log(p), np.log(q))[0, 1] > 0.97
    assert np.all(p >= q - 4 * np.sqrt(q * (1 - q) / 5000) - 2e-3)
    assert (m["below_corrected_p"] == ref["below_corrected_p"]).mean() >= 0.85


def test_seed_reproducible_and_cached(lincs_ap):
    ours, _ = lincs_ap
    ip.metrics.clear_null_cache()
    a = ip.metrics.mean_average_precision(ours, "Metadata_broad_sample", null_size=1000, seed=3)
    assert len(nullmod.CACHE) >= 1
    n_cached = len(nullmod.CACHE)
    b = ip.metrics.mean_average_precision(ours, "Metadata_broad_sample", null_size=1000, seed=3)
    assert len(nullmod.CACHE) == n_cached  # served from the (n_pos, total) cache
    pd.testing.assert_frame_equal(a, b)
    ip.metrics.clear_null_cache()
    c = ip.metrics.mean_average_precision(ours, "Metadata_broad_sample", null_size=1000, seed=3)
    pd.testing.assert_frame_equal(a, c)  # same numbers after recomputation: the cache changes nothing
    d = ip.metrics.mean_average_precision(ours, "Metadata_broad_sample", null_size=1000, seed=4)
    assert not np.array_equal(a["p_value"], d["p_value"])
    # a configuration's null does not depend on which other configurations exist
    x = ip.metrics.null_distributions(np.array([[2, 30]]), 500, seed=9)
    y = ip.metrics.null_distributions(np.array([[1, 5], [2, 30], [4, 90]]), 500, seed=9)
    np.testing.assert_array_equal(x[0], y[1])


def test_p_value_formula_counts_ties():
    """(#null >= observed + 1) / (null_size + 1): with 1 positive among 2, AP is 1 or 0.5, each half the time."""
    ap = pd.DataFrame({"g": ["a"], "average_precision": [1.0], "n_pos_pairs": [1], "n_total_pairs": [2]})
    m = ip.metrics.mean_average_precision(ap, "g", null_size=4000, seed=0)
    null = ip.metrics.null_distributions(np.array([[1, 2]]), 4000, seed=0)[0]
    assert m["p_value"].iloc[0] == ((null >= 1.0).sum() + 1) / 4001
    assert 0.45 < m["p_value"].iloc[0] < 0.55
    # copairs' strict '>' would call this perfect-but-uninformative AP significant
    c = ip.metrics.mean_average_precision(ap, "g", null_size=4000, seed=0, copairs_compat=True)
    assert c["p_value"].iloc[0] == 1 / 4001


def test_null_distribution_matches_theory_and_copairs():
    from scipy.stats import ks_2samp

    from copairs.compute import random_ap as copairs_random_ap

    for k, m in [(1, 10), (3, 40), (5, 12), (12, 30), (40, 60)]:
        ours = ip.metrics.random_ap(20000, k, m, np.random.default_rng(0))
        theirs = copairs_random_ap(20000, k, m, seed=1)
        mu = ip.metrics.expected_ap(k, m - k)[0]
        assert abs(ours.mean() - mu) < 4 * ours.std() / np.sqrt(20000) + 1e-12
        assert ks_2samp(np.round(ours, 6), np.round(theirs.astype(float), 6)).pvalue > 1e-3
    # copairs-compatible draws are bit-identical
    np.testing.assert_array_equal(nullmod.copairs_random_ap(300, np.int64(3), np.int64(25), 11), copairs_random_ap(300, 3, 25, 11))


def test_expected_and_normalized_ap_match_copairs():
    from copairs.map.normalization import expected_ap, normalize_ap

    M = np.array([0, 1, 1, 2, 3, 5, 10, 7])
    N = np.array([4, 0, 1, 3, 10, 0, 50, 93])
    np.testing.assert_allclose(ip.metrics.expected_ap(M, N), [expected_ap(int(a), int(b)) for a, b in zip(M, N)], rtol=1e-15)
    ap = np.linspace(0.05, 1, len(M))
    np.testing.assert_allclose(ip.metrics.normalized_ap(ap, M, M + N), normalize_ap(ap, M, N), rtol=1e-15)


def test_benjamini_hochberg_matches_statsmodels():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests

    p = np.random.default_rng(0).uniform(size=200) ** 3
    np.testing.assert_allclose(ip.metrics.benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], rtol=1e-12)
    q = ip.metrics.benjamini_hochberg(np.array([0.01, np.nan, 0.02]))
    assert np.isnan(q[1]) and np.allclose(q[[0, 2]], [0.02, 0.02])


def test_per_profile_p_values():
    p = ip.metrics.ap_p_values([1.0, 0.1, np.nan], [3, 3, 3], [50, 50, 50], null_size=2000, seed=0)
    assert p[0] < 0.01 < p[1] and np.isnan(p[2])


def test_map_bad_input():
    ap = pd.DataFrame({"g": ["a", "b"], "average_precision": [np.nan, np.nan], "n_pos_pairs": [0, 0], "n_total_pairs": [3, 3]})
    with pytest.raises(ValueError, match="no profile has a finite AP"):
        ip.metrics.mean_average_precision(ap, "g")
    with pytest.raises(KeyError, match="Metadata_nope"):
        ip.metrics.mean_average_precision(ap, "Metadata_nope")
    with pytest.raises(KeyError, match="n_total_pairs"):
        ip.metrics.mean_average_precision(ap.drop(columns="n_total_pairs"), "g")
    with pytest.raises(ValueError, match="threshold"):
        ip.metrics.mean_average_precision(ap, "g", threshold=2)
