"""mAP p-values: exact AP nulls, the independent-member null, the label-permutation test.

Calibration (pure noise), power (a known effect), exact vs Monte Carlo, brute force vs vectorised.
"""

from __future__ import annotations

import warnings
from itertools import combinations
from math import comb

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import imgprof as ip
from imgprof.metrics import null as nullmod


def _noise_plates(G, R, C, d=10, seed=0, effect=0.0):
    """G compounds, each on its own plate with R replicate wells and C control wells (pure noise + effect)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((G * (R + C), d))
    is_trt = np.tile(np.r_[np.ones(R, bool), np.zeros(C, bool)], G)
    plate = np.repeat(np.arange(G), R + C)
    if effect:
        shift = rng.standard_normal((G, d))
        X[is_trt] += effect * np.repeat(shift, R, axis=0)
    name = np.where(is_trt, "c" + plate.astype(str), "DMSO")
    obs = pd.DataFrame({"Metadata_broad_sample": name, "Metadata_Plate": "p" + plate.astype(str),
                        "Metadata_pert_type": np.where(is_trt, "trt", "control")}, index=[str(i) for i in range(len(X))])
    return ad.AnnData(X, obs=obs)


def _activity(a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ip.metrics.RetrievalWarning)
        return ip.metrics.phenotypic_activity(a, "Metadata_broad_sample", sameby_controls="Metadata_Plate", **kw)


# --------------------------------------------------------------------------- exact AP nulls


def test_ap_distribution_is_the_enumeration():
    # ranks (2,6) and (3,4) give the same AP 5/12: a tie carrying 2/15
    v, p = ip.metrics.ap_distribution(2, 6)
    assert len(v) == 14 and np.isclose(p.sum(), 1.0)
    assert np.isclose(p[np.isclose(v, 5 / 12)][0], 2 / 15)
    for k, m in [(1, 7), (2, 9), (3, 12), (4, 10), (5, 5)]:
        v, p = ip.metrics.ap_distribution(k, m)
        # brute force over every rank pattern
        aps = [np.mean([(j + 1) / (r + 1) for j, r in enumerate(c)]) for c in combinations(range(m), k)]
        vals, counts = np.unique(np.round(aps, 12), return_counts=True)
        np.testing.assert_allclose(v, vals, atol=1e-12)
        np.testing.assert_allclose(p, counts / comb(m, k), rtol=1e-12)
        # mean = copairs' closed form
        assert np.isclose((v * p).sum(), ip.metrics.expected_ap(k, m - k)[0], rtol=1e-12)
    assert ip.metrics.ap_distribution(6, 200) is None  # comb(200, 6) > MEMBER_EXACT_LIMIT


def test_independent_null_perfect_pair_is_exactly_one_over_169():
    # 2 replicates + 12 controls, each replicate ranks its partner first; AP = 1 has probability 1/13 each
    r = ip.metrics.group_null_p_values([1.0], [0, 0], [1, 1], [13, 13])
    assert r["p_value_method"].iloc[0] == "exact" and r["p_value_se"].iloc[0] == 0
    assert r["p_value"].iloc[0] == pytest.approx(1 / 169, rel=1e-12)
    mc = ip.metrics.group_null_p_values([1.0], [0, 0], [1, 1], [13, 13], exact=False, null_size=200_000, seed=1)
    assert mc["p_value_method"].iloc[0] == "monte_carlo"
    assert abs(mc["p_value"].iloc[0] - 1 / 169) < 4 * mc["p_value_se"].iloc[0]
    # ties count: AP 1/2 for the pair (ranks 2 and 2) -> P(mean >= 1/2) by enumeration of the 13 x 13 outcomes
    v = 1 / np.arange(1, 14)
    brute = np.mean((v[:, None] + v[None, :]) / 2 >= 0.5 - 1e-12)
    r = ip.metrics.group_null_p_values([0.5], [0, 0], [1, 1], [13, 13])
    assert r["p_value"].iloc[0] == pytest.approx(brute, rel=1e-12)


def test_exact_and_monte_carlo_agree():
    # three members with different configurations; observed values spread over the null
    n_pos, n_tot = np.array([2, 2, 1]), np.array([20, 20, 15])
    obs = np.linspace(0.1, 0.9, 9)
    G = obs.size
    group = np.repeat(np.arange(G), 3)
    args = (obs, group, np.tile(n_pos, G), np.tile(n_tot, G))
    ex = ip.metrics.group_null_p_values(*args)
    mc = ip.metrics.group_null_p_values(*args, exact=False, null_size=50_000, seed=3)
    assert (ex["p_value_method"] == "exact").all() and (mc["p_value_method"] == "monte_carlo").all()
    tol = 4 * np.sqrt(ex["p_value"] * (1 - ex["p_value"]) / 50_000) + 2 / 50_001
    assert (np.abs(ex["p_value"] - mc["p_value"]) <= tol).all()
    # brute force of the exact value for one of them
    d1 = ip.metrics.ap_distribution(2, 20)
    d2 = ip.metrics.ap_distribution(1, 15)
    s = (d1[0][:, None, None] + d1[0][None, :, None] + d2[0][None, None, :]) / 3
    w = d1[1][:, None, None] * d1[1][None, :, None] * d2[1][None, None, :]
    assert ex["p_value"].iloc[4] == pytest.approx(w[s >= obs[4] - 1e-10].sum(), rel=1e-9)
    with pytest.raises(ValueError, match="too large"):
        ip.metrics.group_null_p_values([0.5], [0, 0], [8, 8], [300, 300], exact=True)


def test_independent_null_is_exact_on_independent_rankings():
    """When members' APs really are independent, P(p <= a) <= a for every a (coarse, discrete designs)."""
    rng = np.random.default_rng(5)
    G = 4000
    for R, k, m in [(2, 1, 4), (3, 2, 6), (4, 3, 35)]:
        aps = nullmod.random_ap(G * R, k, m, rng).reshape(G, R)
        res = ip.metrics.group_null_p_values(aps.mean(1), np.repeat(np.arange(G), R), np.full(G * R, k),
                                             np.full(G * R, m), null_size=4000, seed=0)
        p = res["p_value"].to_numpy()
        for a in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5):
            assert (p <= a).mean() <= a + 3 * np.sqrt(a * (1 - a) / G), (R, k, m, a)


# --------------------------------------------------------------------------- label-permutation test


def test_permutation_p_value_equals_brute_force():
    """Every labeling of a small pool re-scored with the AP kernel itself (strata + pos_diffby + exact ties)."""
    rng = np.random.default_rng(2)
    # one compound, 3 wells on 2 plates (2 + 1), 3 controls per plate
    plate = np.array(["A", "A", "B", "A", "A", "A", "B", "B", "B"])
    trt = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    X = rng.standard_normal((9, 6))
    X[trt] += 0.8 * rng.standard_normal(6)
    X[4] = X[0]  # exact ties (equal float32 keys) between a replicate and a control, and between two controls
    X[7] = 2 * X[5]
    obs = pd.DataFrame({"Metadata_broad_sample": np.where(trt, "cpd", "DMSO"), "Metadata_Plate": plate,
                        "Metadata_pert_type": np.where(trt, "trt", "control")}, index=[f"w{i}" for i in range(9)])
    a = ad.AnnData(X, obs=obs)
    for pdiff in (None, "Metadata_Plate"):
        m = _activity(a, null_size=10_000, pos_diffby=pdiff)
        assert m["p_value_method"].iloc[0] == "permutation_exact"
        # brute force: relabel 2 of plate A's 5 wells and 1 of plate B's 4, score with the kernel
        A_, B_ = np.flatnonzero(plate == "A"), np.flatnonzero(plate == "B")
        maps = []
        for ca in combinations(A_, 2):
            for cb in combinations(B_, 1):
                lab = np.zeros(9, bool)
                lab[list(ca) + list(cb)] = True
                o2 = obs.copy()
                o2["Metadata_broad_sample"] = np.where(lab, "cpd", "DMSO")
                o2["Metadata_pert_type"] = np.where(lab, "trt", "control")
                mm = _activity(ad.AnnData(X, obs=o2), null_size=10, pos_diffby=pdiff, null="shared")
                maps.append(mm["mean_average_precision"].iloc[0])
        maps = np.array(maps)
        assert len(maps) == comb(5, 2) * 4
        observed = m["mean_average_precision"].iloc[0]
        assert m["p_value"].iloc[0] == pytest.approx(np.mean(maps >= observed - 1e-10), abs=1e-12)


def test_permutation_perfect_pair_power_and_floor():
    """2 replicates + 12 controls: the exact permutation p of a perfect pair, and why it cannot go below 1/91."""
    a = _noise_plates(300, 2, 12, d=10, seed=7)
    m = _activity(a, null_size=10_000)
    assert (m["p_value_method"] == "permutation_exact").all()  # comb(14, 2) = 91 labelings each
    # smallest possible p-value of a valid (exchangeability) test here: 1/91
    assert m["p_value"].min() >= 1 / 91 - 1e-12
    perfect = m["mean_average_precision"] > 1 - 1e-12
    assert perfect.any()
    # a perfect pair's p = (#labelings that are perfect pairs) / 91 — mutual nearest neighbours in the pool
    assert np.allclose(m.loc[perfect, "p_value"] * 91, np.round(m.loc[perfect, "p_value"] * 91))
    # the independent null would call every perfect pair p = 1/169 ~ 0.0059; under noise perfect pairs are
    # far more frequent than 1/169 (the two APs share the pair's similarity), so that value is not a valid p
    assert perfect.mean() > 3 / 169
    # power: a real effect with 4 replicates and 32 controls is detected, the exact way
    b = _noise_plates(40, 4, 32, d=10, seed=8, effect=1.5)
    mb = _activity(b, null_size=2000)
    assert (mb["p_value_method"] == "permutation_monte_carlo").all()
    assert (mb["p_value"] <= 0.01).mean() > 0.9
    assert (mb["p_value_se"] > 0).all()


def test_permutation_calibrated_fine_design():
    """Pure noise, 1,000 compounds x 4 replicates, 32 controls each (own plate): share of p < 0.05 in [0.03, 0.06]."""
    a = _noise_plates(1000, 4, 32, d=10, seed=11)
    m = _activity(a, null_size=1000)
    p = m["p_value"].to_numpy()
    assert len(p) == 1000 and (m["p_value_method"] == "permutation_monte_carlo").all()
    assert 0.03 <= (p < 0.05).mean() <= 0.06
    for al in (0.01, 0.1, 0.2, 0.5):
        assert (p <= al).mean() <= al + 3 * np.sqrt(al * (1 - al) / 1000)
    # FDR: BH on the permutation p-values; nothing survives on pure noise
    np.testing.assert_allclose(m["corrected_p_value"], ip.metrics.benjamini_hochberg(p))
    assert not m["below_corrected_p"].any()
    assert (m["below_p"] == (p < 0.05)).all()


def test_permutation_never_above_alpha_on_coarse_designs():
    for R, C, seed in [(2, 12, 1), (3, 5, 2), (2, 4, 3)]:
        a = _noise_plates(1000, R, C, d=8, seed=seed)
        m = _activity(a, null_size=10_000)
        assert (m["p_value_method"] == "permutation_exact").all()
        p = m["p_value"].to_numpy()
        for al in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5):
            assert (p <= al).mean() <= al + 3 * np.sqrt(al * (1 - al) / len(p)), (R, C, al)


def test_independent_null_is_anti_conservative_on_profiles():
    """Documented limitation: on real (noise) profiles the independent-member null calls too much."""
    a = _noise_plates(600, 2, 12, d=10, seed=13)
    ind = _activity(a, null="independent")
    shared = _activity(a, null="shared", null_size=2000)
    assert (ind["p_value"] <= 0.05).mean() > 0.08
    assert (shared["p_value"] <= 0.05).mean() <= 0.05
    assert set(ind["p_value_method"]) == {"independent_exact"}


def test_mean_average_precision_null_options_and_columns():
    ap = pd.DataFrame({"g": ["a", "a", "b", "b"], "average_precision": [1.0, 1.0, 0.2, 0.3],
                       "n_pos_pairs": [1, 1, 1, 1], "n_total_pairs": [13, 13, 13, 13]})
    ind = ip.metrics.mean_average_precision(ap, "g", null="independent")
    assert ind["p_value"].iloc[0] == pytest.approx(1 / 169)
    assert list(ind["p_value_method"]) == ["independent_exact"] * 2
    sh = ip.metrics.mean_average_precision(ap, "g", null_size=4000)
    assert list(sh["p_value_method"]) == ["shared_monte_carlo"] * 2
    assert 0.06 < sh["p_value"].iloc[0] < 0.1  # one AP's null: P(AP = 1) = 1/13
    for m in (ind, sh):
        np.testing.assert_allclose(m["corrected_p_value"], ip.metrics.benjamini_hochberg(m["p_value"]))
    cp = ip.metrics.mean_average_precision(ap, "g", null_size=4000, copairs_compat=True)
    assert "p_value_method" not in cp  # copairs' columns only
    with pytest.raises(ValueError, match="null must be"):
        ip.metrics.mean_average_precision(ap, "g", null="perm")
    with pytest.raises(ValueError, match="null must be"):
        ip.metrics.phenotypic_activity(_noise_plates(2, 2, 3), "Metadata_broad_sample", null="exact")
