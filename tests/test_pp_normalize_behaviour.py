"""ip.pp.normalize: bad input, copy/layer semantics, provenance and dask (LocalCluster)."""

from __future__ import annotations

import numpy as np
import pytest

import imgprof as ip

NEGCON = "Metadata_control_type == 'negcon'"


@pytest.fixture
def sim():
    return ip.datasets.simulate(n_plates=3, n_perturbations=12, n_moa=3, n_controls=8, n_features=30, seed=5)


# ------------------------------------------------------------------------------------------------
# bad input: clear errors
# ------------------------------------------------------------------------------------------------
def test_unknown_method(sim):
    with pytest.raises(ValueError, match=r"method=.zscore.*choose one of"):
        ip.pp.normalize(sim, "zscore")
    with pytest.raises(ValueError, match="spherize_method"):
        ip.pp.normalize(sim, "spherize", spherize_method="whiten")
    with pytest.raises(ValueError, match="require spherize_center=True"):
        ip.pp.normalize(sim, "spherize", spherize_method="ZCA-cor", spherize_center=False)


def test_control_query_matches_nothing(sim):
    with pytest.raises(ValueError, match=r"Metadata_control_type == 'poscon'.*selects no observation"):
        ip.pp.normalize(sim, controls="Metadata_control_type == 'poscon'")


def test_controls_missing_in_one_group(sim):
    obs = sim.obs
    ctrl = (obs["Metadata_control_type"] == "negcon") & (obs["Metadata_Plate"] != "plate_2")
    with pytest.raises(ValueError, match="plate_2"):
        ip.pp.normalize(sim, controls=ctrl.to_numpy(), by="Metadata_Plate")


def test_single_control_in_a_group(sim):
    obs = sim.obs
    ctrl = (obs["Metadata_control_type"] == "negcon").to_numpy().copy()
    p3 = np.flatnonzero(ctrl & (obs["Metadata_Plate"] == "plate_3").to_numpy())
    ctrl[p3[1:]] = False
    with pytest.raises(ValueError, match=r"single observation.*plate_3"):
        ip.pp.normalize(sim, controls=ctrl, by="Metadata_Plate")


def test_missing_by_key(sim):
    with pytest.raises(KeyError, match="Metadata_plate"):
        ip.pp.normalize(sim, by="Metadata_plate")


def test_by_with_missing_values(sim):
    sim.obs["Metadata_Plate"] = sim.obs["Metadata_Plate"].astype(object)
    sim.obs.iloc[0, sim.obs.columns.get_loc("Metadata_Plate")] = np.nan
    with pytest.raises(ValueError, match="missing values"):
        ip.pp.normalize(sim, by="Metadata_Plate")


def test_all_nan_control_column(sim):
    ctrl = (sim.obs["Metadata_control_type"] == "negcon").to_numpy()
    sim.X[np.ix_(ctrl, [4])] = np.nan
    name = sim.var_names[4]
    with pytest.raises(ValueError, match=f"all-NaN.*{name}"):
        ip.pp.normalize(sim, controls=ctrl)


def test_inf_values(sim):
    sim.X[3, 7] = np.inf
    with pytest.raises(ValueError, match=sim.var_names[7]):
        ip.pp.normalize(sim, "standardize")


def test_spherize_nan_and_constant(sim):
    a = sim.copy()
    a.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ip.pp.normalize(a, "spherize")
    b = sim.copy()
    b.X[:, 2] = 3.0
    with pytest.raises(ValueError, match=rf"constant.*{sim.var_names[2]}"):
        ip.pp.normalize(b, "spherize", spherize_method="ZCA-cor")


def test_samples_alias(sim):
    a = ip.pp.normalize(sim, "standardize", samples=NEGCON, copy=True)
    b = ip.pp.normalize(sim, "standardize", controls=NEGCON, copy=True)
    np.testing.assert_array_equal(a.X, b.X)
    c = ip.pp.normalize(sim, "standardize", samples="all", copy=True)
    d = ip.pp.normalize(sim, "standardize", copy=True)
    np.testing.assert_array_equal(c.X, d.X)
    with pytest.raises(ValueError, match="not both"):
        ip.pp.normalize(sim, samples=NEGCON, controls=NEGCON)


# ------------------------------------------------------------------------------------------------
# zero scale, dtypes
# ------------------------------------------------------------------------------------------------
def test_zero_mad_policies(sim):
    ctrl = (sim.obs["Metadata_control_type"] == "negcon").to_numpy()
    sim.X[ctrl, 5] = 2.0  # constant on the controls, varying elsewhere
    with pytest.warns(UserWarning, match=sim.var_names[5]):
        out = ip.pp.normalize(sim, controls=ctrl, copy=True)
    np.testing.assert_allclose(out.X[:, 5], sim.X[:, 5] - 2.0)
    assert np.isfinite(out.X).all()
    with pytest.raises(ValueError, match=rf"zero reference scale.*{sim.var_names[5]}"):
        ip.pp.normalize(sim, controls=ctrl, zero_scale="raise")
    with pytest.raises(ValueError, match="epsilon=0"):
        ip.pp.normalize(sim, controls=ctrl, zero_scale="epsilon", epsilon=0)
    with pytest.warns(UserWarning, match="divided by epsilon"):
        eps = ip.pp.normalize(sim, controls=ctrl, zero_scale="epsilon", copy=True)
    assert np.abs(eps.X[~ctrl, 5]).max() > 1e15  # pycytominer's numbers


def test_integer_input(sim):
    Xi = np.round(sim.X).astype(np.int64)
    a = sim.copy()
    a.X = Xi
    ip.pp.normalize(a, "standardize")
    assert a.X.dtype == np.float64
    Xf = Xi.astype(float)
    np.testing.assert_allclose(a.X, (Xf - Xf.mean(0)) / Xf.std(0), rtol=1e-10, atol=1e-10)


def test_float32_stays_float32(sim):
    sim.X = sim.X.astype(np.float32)
    ip.pp.normalize(sim, "mad_robustize")
    assert sim.X.dtype == np.float32


# ------------------------------------------------------------------------------------------------
# AnnData semantics and provenance
# ------------------------------------------------------------------------------------------------
def test_copy_layer_key_added(sim):
    X0 = sim.X.copy()
    out = ip.pp.normalize(sim, controls=NEGCON, by="Metadata_Plate", copy=True)
    np.testing.assert_array_equal(sim.X, X0)  # input untouched
    assert out is not sim
    assert ip.pp.normalize(sim, controls=NEGCON, by="Metadata_Plate", key_added="mad") is None
    np.testing.assert_array_equal(sim.X, X0)
    np.testing.assert_array_equal(sim.layers["mad"], out.X)
    # normalize a layer in place
    sim.layers["raw"] = X0.copy()
    ip.pp.normalize(sim, controls=NEGCON, by="Metadata_Plate", layer="raw")
    np.testing.assert_array_equal(sim.layers["raw"], out.X)
    np.testing.assert_array_equal(sim.X, X0)


def test_features_subset(sim):
    feats = list(sim.var_names[:5])
    out = ip.pp.normalize(sim, "standardize", features=feats, copy=True)
    np.testing.assert_array_equal(out.X[:, 5:], sim.X[:, 5:])
    ref = (sim.X[:, :5] - sim.X[:, :5].mean(0)) / sim.X[:, :5].std(0)
    np.testing.assert_allclose(out.X[:, :5], ref, rtol=1e-10, atol=1e-10)
    with pytest.raises(KeyError, match="not_a_feature"):
        ip.pp.normalize(sim, features=["not_a_feature"])


def test_controls_as_obs_names(sim):
    names = sim.obs_names[sim.obs["Metadata_control_type"] == "negcon"].tolist()
    a = ip.pp.normalize(sim, controls=names, copy=True)
    b = ip.pp.normalize(sim, controls=NEGCON, copy=True)
    np.testing.assert_array_equal(a.X, b.X)


def test_provenance(sim):
    ip.pp.normalize(sim, "robustize", controls=NEGCON, by="Metadata_Plate")
    prov = ip.provenance(sim)
    last = prov.iloc[-1]
    assert last["function"] == "pp.normalize"
    assert last["params"]["method"] == "robustize"
    assert last["params"]["by"] == "Metadata_Plate"
    assert last["extra"]["n_groups"] == 3


def test_per_group_equals_separate_calls(sim):
    """by= gives the same numbers as normalizing each plate on its own."""
    out = ip.pp.normalize(sim, "mad_robustize", controls=NEGCON, by="Metadata_Plate", copy=True)
    for plate in sim.obs["Metadata_Plate"].unique():
        rows = (sim.obs["Metadata_Plate"] == plate).to_numpy()
        sub = ip.pp.normalize(sim[rows].copy(), "mad_robustize", controls=NEGCON, copy=True)
        np.testing.assert_allclose(out.X[rows], sub.X, rtol=1e-12, atol=1e-12)


def test_spherize_whitens_and_warns_on_rank_deficiency():
    adata = ip.datasets.simulate(n_plates=4, n_features=20, seed=2)
    out = ip.pp.normalize(adata, "spherize", spherize_method="ZCA", copy=True)
    np.testing.assert_allclose(np.cov(out.X, rowvar=False), np.eye(20), atol=1e-4)
    adata.X[:, 1] = 2 * adata.X[:, 0] + 1  # exact linear dependency, n > d
    with pytest.warns(UserWarning, match="rank 19"):
        ip.pp.normalize(adata, "spherize", spherize_method="ZCA")


# ------------------------------------------------------------------------------------------------
# dask (LocalCluster): same code, same numbers, lazy result
# ------------------------------------------------------------------------------------------------
def test_dask_local_cluster():
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    adata = ip.datasets.simulate(n_plates=3, n_features=24, nan_fraction=0.02, seed=4)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cl, \
            distributed.Client(cl):
        for method in ["mad_robustize", "standardize", "robustize", "inverse_normal"]:
            ref = ip.pp.normalize(adata, method, controls=NEGCON, by="Metadata_Plate", copy=True)
            lazy = adata.copy()
            lazy.X = da.from_array(adata.X, chunks=(50, 10))
            ip.pp.normalize(lazy, method, controls=NEGCON, by="Metadata_Plate")
            assert isinstance(lazy.X, da.Array)
            np.testing.assert_allclose(lazy.X.compute(), ref.X, rtol=1e-10, atol=1e-10, equal_nan=True)
        full = ip.datasets.simulate(n_plates=3, n_features=24, seed=4)
        ref = ip.pp.normalize(full, "spherize", controls=NEGCON, by="Metadata_Plate", copy=True)
        lazy = full.copy()
        lazy.X = da.from_array(full.X, chunks=(50, 10))
        ip.pp.normalize(lazy, "spherize", controls=NEGCON, by="Metadata_Plate")
        np.testing.assert_allclose(lazy.X.compute(), ref.X, rtol=1e-10, atol=1e-10)
        # a reference set too large for memory: ZCA fitted from a dask-reduced Gram matrix
        import sys

        mod = sys.modules["imgprof.pp._normalize_spherize"]
        old_limit, mod._DASK_IN_MEMORY = mod._DASK_IN_MEMORY, 100
        try:
            ref = ip.pp.normalize(full, "spherize", spherize_method="ZCA", copy=True)
            lazy = full.copy()
            lazy.X = da.from_array(full.X, chunks=(50, 10))
            ip.pp.normalize(lazy, "spherize", spherize_method="ZCA")
            np.testing.assert_allclose(lazy.X.compute(), ref.X, rtol=1e-8, atol=1e-8)
        finally:
            mod._DASK_IN_MEMORY = old_limit
        bad = full.copy()
        bad.X = da.from_array(np.where(np.arange(24) == 3, np.inf, full.X), chunks=(50, 10))
        with pytest.raises(ValueError, match="inf"):
            ip.pp.normalize(bad, controls=NEGCON)


def test_features_unknown_or_repeated_are_named(sim):
    """normalize(features=) uses the one feature lookup: the error names the unknown or repeated feature."""
    f0 = str(sim.var_names[0])
    with pytest.raises(KeyError, match=r"features: \['Cells_Nope'\] not found in adata.var_names"):
        ip.pp.normalize(sim, method="standardize", features=[f0, "Cells_Nope"], copy=True)
    with pytest.raises(ValueError, match=rf"features: \['{f0}'\] listed more than once"):
        ip.pp.normalize(sim, method="standardize", features=[f0, f0], copy=True)
