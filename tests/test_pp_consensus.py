"""ip.pp.consensus: parity with pycytominer.consensus / modz on the LINCS plate and the 4-plate nELISA set."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import imgprof as ip

pycytominer = pytest.importorskip("pycytominer")


def _ref(adata, by, operation, **modz_args):
    df = ip.io.to_pandas(adata)
    feats = list(adata.var_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pycytominer.consensus(
            df, replicate_columns=by, operation=operation, features=feats, modz_args=modz_args or {"method": "spearman"}
        )
    return ref, feats


def _check(ours, ref, by, feats):
    o = ip.io.to_pandas(ours)
    assert len(o) == len(ref)
    pd.testing.assert_frame_equal(
        o[by].reset_index(drop=True).astype(object).fillna("<NA>").astype(str),
        ref[by].reset_index(drop=True).astype(object).fillna("<NA>").astype(str),
    )
    np.testing.assert_allclose(o[feats].to_numpy(float), ref[feats].to_numpy(float), rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize(
    "operation, kwargs",
    [("median", {}), ("mean", {}), ("modz", {}), ("modz", {"method": "pearson"}), ("modz", {"method": "spearman", "min_weight": 0.2, "precision": 2})],
)
def test_parity_lincs_compound_consensus(lincs, operation, kwargs):
    by = ["Metadata_broad_sample"]  # 6 doses per compound, 24 DMSO wells
    ref, feats = _ref(lincs, by, operation, **kwargs)
    ours = ip.pp.consensus(lincs, by=by, operation=operation, single_replicate="ignore", **kwargs)
    _check(ours, ref, by, feats)
    assert ours.uns["imgprof"]["level"] == "consensus"
    counts = lincs.obs.groupby(by).size()
    got = ours.obs.set_index(by[0])["Metadata_Replicate_Count"]
    assert (got.loc[counts.index] == counts).all()


@pytest.mark.slow
def test_parity_lincs_modz_kendall(lincs):
    by = ["Metadata_moa"]
    ref, feats = _ref(lincs, by, "modz", method="kendall")
    _check(ip.pp.consensus(lincs, by=by, operation="modz", method="kendall", single_replicate="ignore"), ref, by, feats)


@pytest.mark.parametrize("operation", ["median", "modz"])
def test_parity_nelisa_four_plates(operation):
    adata = ip.datasets.nelisa()
    by = ["Metadata_broad_sample"]  # replicates across the 4 plates; DMSO have a missing broad_sample -> NaN group
    assert adata.obs[by[0]].isna().any()
    ref, feats = _ref(adata, by, operation)
    ours = ip.pp.consensus(adata, by=by, operation=operation, single_replicate="ignore")
    _check(ours, ref, by, feats)
    assert pd.isna(ours.obs[by[0]].iloc[-1])
    # metadata constant within a compound are kept (e.g. its name), plate is not
    assert "Metadata_pert_iname" in ours.obs.columns and "Metadata_Plate" not in ours.obs.columns


def test_modz_weights_reference_values():
    # two concordant replicates, one anti-correlated: the anti-correlated one gets min_weight before normalizing
    X = np.array([[1.0, 2, 3, 4, 5], [1.2, 2.2, 2.9, 4.1, 5.3], [5.0, 4, 3, 2, 1]])
    w = ip.pp.modz_weights(X, method="pearson", min_weight=0.01, precision=4)
    r = np.corrcoef(X)
    raw = np.array([np.mean(np.clip([r[0, 1], r[0, 2]], 0, None)), np.mean(np.clip([r[1, 0], r[1, 2]], 0, None)), 0.0])
    raw = np.maximum(raw, 0.01)
    np.testing.assert_allclose(w, np.round(raw / raw.sum(), 4))
    assert ip.pp.modz_weights(X[:1]).tolist() == [1.0]


def test_single_replicate_groups_warn_or_raise(sim_wells):
    one = sim_wells[sim_wells.obs["Metadata_Plate"] == "plate_1"].copy()
    with pytest.warns(UserWarning, match="single replicate"):
        out = ip.pp.consensus(one, by="Metadata_Perturbation")
    np.testing.assert_allclose(
        out[out.obs["Metadata_Perturbation"] == "pert_000"].X[0], one[one.obs["Metadata_Perturbation"] == "pert_000"].X[0]
    )
    with pytest.raises(ValueError, match="single replicate"):
        ip.pp.consensus(one, by="Metadata_Perturbation", single_replicate="raise")


def test_modz_with_nan_rescales_weights_instead_of_zero_filling():
    rng = np.random.default_rng(0)
    base = rng.normal(size=8)
    X = np.vstack([base + rng.normal(scale=s, size=8) for s in (0.1, 0.5, 1.0)])
    X[1, 3] = np.nan
    df = pd.DataFrame(X, columns=[f"Cells_f{i}" for i in range(8)])
    df.insert(0, "Metadata_g", "a")
    out = ip.pp.consensus(ip.io.from_pandas(df), by="Metadata_g", operation="modz", method="pearson")
    w = ip.pp.modz_weights(X, method="pearson")
    assert (w > 0.01).all()
    np.testing.assert_allclose(out.X[0, [0, 1, 2]], (w[:, None] * X[:, [0, 1, 2]]).sum(axis=0))
    # feature 3: replicate 2 missing -> the other weights are rescaled to the same total
    # (pycytominer counts the NaN as 0, shrinking the value towards 0)
    expected = (w[0] * X[0, 3] + w[2] * X[2, 3]) * w.sum() / (w[0] + w[2])
    assert out.X[0, 3] == pytest.approx(expected)
    lone = ip.io.from_pandas(pd.DataFrame({"Metadata_g": ["a", "b"], "Cells_x": [1.0, np.nan]}))
    with pytest.warns(UserWarning, match="NaN"):
        res = ip.pp.consensus(lone, by="Metadata_g", operation="modz", single_replicate="ignore")
    assert np.isnan(res.X[1, 0])  # never a silent 0


def test_bad_input(sim_wells):
    with pytest.raises(KeyError, match="Metadata_Perturbatio"):
        ip.pp.consensus(sim_wells, by="Metadata_Perturbatio")
    with pytest.raises(ValueError, match="operation"):
        ip.pp.consensus(sim_wells, by="Metadata_Perturbation", operation="max")
    with pytest.raises(ValueError, match="method"):
        ip.pp.consensus(sim_wells, by="Metadata_Perturbation", operation="modz", method="cosine")
    bad = sim_wells.copy()
    bad.X[0, 1] = np.inf
    with pytest.raises(ValueError, match="inf"):
        ip.pp.consensus(bad, by="Metadata_Perturbation", operation="modz")
    with pytest.raises(ValueError, match="inf"):
        ip.pp.consensus(bad, by="Metadata_Perturbation")


def test_dask_consensus_matches_numpy(sim_wells):
    da = pytest.importorskip("dask.array")
    lazy = sim_wells.copy()
    lazy.X = da.from_array(np.asarray(sim_wells.X), chunks=(37, 25))
    for op in ("median", "modz"):
        a = ip.pp.consensus(sim_wells, by="Metadata_Perturbation", operation=op)
        b = ip.pp.consensus(lazy, by="Metadata_Perturbation", operation=op)
        np.testing.assert_allclose(a.X, b.X, rtol=1e-12)
        pd.testing.assert_frame_equal(a.obs, b.obs)
