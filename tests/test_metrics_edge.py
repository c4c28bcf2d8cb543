"""Bad input for the retrieval metrics: clear errors, or NaN AP with a warning — never a crash deep in numpy."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import imgprof as ip
from imgprof.metrics import RetrievalWarning


def _toy(n_pert=6, reps=3, n_ctrl=6, d=12, seed=0):
    rng = np.random.default_rng(seed)
    pert = np.r_[np.repeat([f"p{i}" for i in range(n_pert)], reps), ["DMSO"] * n_ctrl]
    X = rng.normal(size=(len(pert), d))
    for i in range(n_pert):
        X[pert == f"p{i}"] += rng.normal(size=d) * 2
    obs = pd.DataFrame({"Metadata_pert": pert, "Metadata_Plate": np.arange(len(pert)) % 3}, index=[f"w{i}" for i in range(len(pert))])
    return ad.AnnData(X, obs=obs)


ARGS = dict(pos_sameby=["Metadata_pert"], neg_diffby=["Metadata_pert"])


def test_nan_and_zero_norm_profiles_get_nan_with_warning_and_leave_rankings():
    a = _toy()
    a.X[0, 3] = np.nan
    a.X[4] = 0.0
    with pytest.warns(RetrievalWarning, match=r"2 profile\(s\) are invalid .*NaN/inf feature.*zero norm"):
        ap = ip.metrics.average_precision(a, **ARGS, query="Metadata_pert != 'DMSO'")
    assert np.isnan(ap.loc[["w0", "w4"], "average_precision"]).all()
    assert (ap.loc[["w0", "w4"], "n_total_pairs"] == 0).all()
    # the others are ranked as if the two rows were absent
    keep = np.ones(a.n_obs, bool)
    keep[[0, 4]] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ip.metrics.average_precision(a[keep].copy(), **ARGS, query="Metadata_pert != 'DMSO'")
    pd.testing.assert_frame_equal(ap.loc[ref.index, ref.columns], ref)


def test_zero_variance_under_correlation():
    a = _toy()
    a.X[2] = 5.0
    with pytest.warns(RetrievalWarning, match="zero variance"):
        ap = ip.metrics.average_precision(a, **ARGS, metric="correlation")
    assert np.isnan(ap["average_precision"].iloc[2])


def test_no_positive_and_no_negative_groups_are_nan_with_warning():
    a = _toy()
    obs = a.obs.copy()
    obs.loc["w0", "Metadata_pert"] = "singleton"  # no replicate
    a.obs = obs
    with pytest.warns(RetrievalWarning, match="no positive pair"):
        ap = ip.metrics.average_precision(a, **ARGS)
    assert np.isnan(ap.loc["w0", "average_precision"]) and ap.loc["w0", "n_pos_pairs"] == 0
    # negatives restricted to same-plate DMSO, but one plate's DMSO removed: those rows have no negatives
    b = _toy()
    b = b[~((b.obs["Metadata_pert"] == "DMSO") & (b.obs["Metadata_Plate"] == 0))].copy()
    b.obs["Metadata_isctrl"] = b.obs["Metadata_pert"] == "DMSO"
    with pytest.warns(RetrievalWarning, match="no negative pair"):
        ap = ip.metrics.average_precision(
            b, ["Metadata_pert"], neg_sameby=["Metadata_Plate"], neg_diffby=["Metadata_isctrl"], query="Metadata_pert != 'DMSO'"
        )
    no_neg = (ap["n_total_pairs"] == ap["n_pos_pairs"]) & (ap["n_pos_pairs"] > 0)
    assert no_neg.any() and ap.loc[no_neg, "average_precision"].isna().all()


def test_nothing_to_score_raises():
    a = _toy()
    a.obs["u"] = np.arange(a.n_obs)  # every profile its own group: no positive pair anywhere
    with pytest.raises(ValueError, match="no profile got an AP"):
        ip.metrics.average_precision(a, ["u"], neg_diffby=["Metadata_pert"])


def test_missing_keys_and_nan_metadata_are_named():
    a = _toy()
    with pytest.raises(KeyError, match="Metadata_nope"):
        ip.metrics.average_precision(a, ["Metadata_nope"], neg_diffby=["Metadata_pert"])
    obs = a.obs.copy()
    obs["Metadata_moa"] = np.where(np.arange(a.n_obs) < 3, None, "x")
    a.obs = obs
    with pytest.raises(ValueError, match=r"'Metadata_moa' has 3 missing value"):
        ip.metrics.average_precision(a, ["Metadata_moa"], neg_diffby=["Metadata_moa"])
    with pytest.raises(KeyError, match="use_rep"):
        ip.metrics.average_precision(a, **ARGS, use_rep="X_nope")


def test_bad_pair_definitions_and_options():
    a = _toy()
    with pytest.raises(ValueError, match="disjoint"):
        ip.metrics.average_precision(a, ["Metadata_pert"], ["Metadata_pert"], [], ["Metadata_pert"])
    with pytest.raises(ValueError, match="at least one"):
        ip.metrics.average_precision(a, [], [], [], ["Metadata_pert"])
    with pytest.raises(ValueError, match="'any' list needs at least two"):
        ip.metrics.average_precision(a, {"any": ["Metadata_pert"]}, neg_diffby=["Metadata_pert"])
    with pytest.raises(ValueError, match="metric"):
        ip.metrics.average_precision(a, **ARGS, metric="hamming-ish")
    with pytest.raises(ValueError, match="dtype"):
        ip.metrics.average_precision(a, **ARGS, dtype="int8")
    with pytest.raises(ValueError, match="selects no observation"):
        ip.metrics.average_precision(a, **ARGS, query="Metadata_pert == 'nothing'")


def test_reference_needs_shared_feature_space():
    a = _toy()
    b = _toy(d=7)
    with pytest.raises(ValueError, match="shared feature space"):
        ip.metrics.average_precision(a, **ARGS, reference=b)


def test_key_added_writes_obs_and_provenance_and_small_blocks_are_exact():
    a = _toy(n_pert=10, reps=4, n_ctrl=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ap = ip.metrics.average_precision(a, **ARGS, key_added="ap_replicate")
        small = ip.metrics.average_precision(a, **ARGS, max_block_elements=7)
    np.testing.assert_array_equal(a.obs["ap_replicate"].to_numpy(), ap["average_precision"].to_numpy())
    assert ip.provenance(a)["function"].iloc[-1] == "metrics.average_precision"
    pd.testing.assert_frame_equal(ap, small[ap.columns])


def test_callable_metric_and_embedding():
    a = _toy()
    a.obsm["X_pca"] = a.X[:, :5].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ip.metrics.average_precision(a, **ARGS, use_rep="X_pca")
        cal = ip.metrics.average_precision(a, **ARGS, use_rep="X_pca", metric=lambda A, B: (A / np.linalg.norm(A, axis=1, keepdims=True)) @ (B / np.linalg.norm(B, axis=1, keepdims=True)).T)
    np.testing.assert_allclose(ref["average_precision"], cal["average_precision"], equal_nan=True, atol=1e-12)
    with pytest.raises(ValueError, match="callable returned shape"):
        ip.metrics.average_precision(a, **ARGS, metric=lambda A, B: A)


def test_ties_rank_positives_first():
    """Exact ties: a positive and a negative at the same similarity -> the positive ranks first (copairs)."""
    X = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    obs = pd.DataFrame({"g": ["a", "a", "b", "b"]})
    ap = ip.metrics.average_precision_kernel(X, obs, ["g"], [], [], ["g"], warn=False)
    # row 0: positive row 1 (sim 1) tied with negative row 2 (sim 1) -> AP 1
    assert ap["average_precision"].iloc[0] == 1.0
    # row 2: positive row 3 (sim 0) below negatives rows 0, 1 (sim 1) -> AP 1/3
    assert ap["average_precision"].iloc[2] == pytest.approx(1 / 3)


def test_phenotypic_activity_tolerates_missing_key_on_control_rows():
    import imgprof as ip

    adata = ip.datasets.simulate(n_plates=2, n_perturbations=12, n_moa=3, n_features=30, seed=3)
    adata.obs["Metadata_Perturbation"] = adata.obs["Metadata_Perturbation"].astype(object)
    ctrl = (adata.obs["Metadata_control_type"] == "negcon").to_numpy()
    adata.obs.loc[ctrl, "Metadata_Perturbation"] = None
    res = ip.metrics.phenotypic_activity(
        adata, "Metadata_Perturbation", controls="Metadata_control_type == 'negcon'", null_size=200, seed=0
    )
    assert len(res) == 12 and res["mean_average_precision"].notna().all()
    # a treated row with a missing key is still an error
    adata.obs.loc[adata.obs_names[~ctrl][0], "Metadata_Perturbation"] = None
    import pytest

    with pytest.raises(ValueError, match="Metadata_Perturbation"):
        ip.metrics.phenotypic_activity(adata, "Metadata_Perturbation", controls="Metadata_control_type == 'negcon'", null_size=200)
