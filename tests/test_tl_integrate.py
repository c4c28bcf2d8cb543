"""ip.tl.integrate: one interface, clear errors, provenance, and parity with the reference tools on real data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import imgprof as ip


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Small matrices: one BLAS thread avoids oversubscription on busy CI machines (results are identical)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield

FAST_METHODS = ["none", "harmony", "combat", "sphering", "mnn", "scanorama", "rpca"]
EXTRA = {"sphering": {"epsilon": 1e-2}}


@pytest.fixture
def small():
    """Small simulated well-level set, standardised on the controls of all plates (batches kept)."""
    a = ip.datasets.simulate(n_plates=4, n_batches=2, n_perturbations=24, n_moa=4, n_features=40, seed=3)
    ctrl = (a.obs["Metadata_control_type"] == "negcon").to_numpy()
    a.X = (a.X - a.X[ctrl].mean(0)) / a.X[ctrl].std(0)
    ip.tl.pca(a, n_comps=10)
    return a


@pytest.fixture(scope="module")
def cmqtl():
    a = ip.datasets.cmqtl_crispri()
    ip.tl.pca(a, n_comps=30)
    return a


# --------------------------------------------------------------------------- interface


@pytest.mark.parametrize("method", FAST_METHODS)
def test_integrate_writes_obsm_and_logs(small, method):
    ip.tl.integrate(small, method, "Metadata_Batch", **EXTRA.get(method, {}))
    key = f"X_{method}"
    Y = small.obsm[key]
    assert Y.shape[0] == small.n_obs and np.isfinite(Y).all()
    steps = ip.provenance(small)
    last = steps.iloc[-1]
    fn = "tl.no_correction" if method == "none" else f"tl.{method}"
    assert last["function"] == fn
    assert last["params"]["batch_key"] == "Metadata_Batch"
    assert last["extra"]["key_added"] == key


def test_integrate_defaults_and_copy(small):
    before = set(small.obsm)
    out = ip.tl.integrate(small, "harmony", "Metadata_Batch", key_added="H", copy=True)
    assert set(small.obsm) == before  # input untouched
    assert out.obsm["H"].shape == small.obsm["X_pca"].shape  # harmony defaults to use_rep="X_pca"
    assert ip.tl.integrate(small, "combat", "Metadata_Batch") is None
    assert small.obsm["X_combat"].shape == small.shape  # combat defaults to use_rep="X"


def test_none_is_the_input(small):
    ip.tl.integrate(small, "none", "Metadata_Batch", use_rep="X_pca")
    np.testing.assert_array_equal(small.obsm["X_none"], small.obsm["X_pca"])
    assert not np.shares_memory(small.obsm["X_none"], small.obsm["X_pca"])


def test_add_layer_feature_outputs(small):
    ip.tl.combat(small, "Metadata_Batch", add_layer=True)
    assert np.shares_memory(small.layers["X_combat"], small.obsm["X_combat"])
    df = ip.io.to_pandas(small, layer="X_combat")
    assert list(df.columns[-small.n_vars:]) == list(small.var_names)
    with pytest.raises(ValueError, match="use_rep='X'"):
        ip.tl.combat(small, "Metadata_Batch", use_rep="X_pca", add_layer=True)


def test_method_names():
    assert set(ip.tl.METHODS) == {"none", "harmony", "scvi", "combat", "sphering", "mnn", "scanorama", "rpca"}
    assert ip.tl.get_method("HARMONY") is ip.tl.harmony


# --------------------------------------------------------------------------- bad input, before heavy work


def test_unknown_method(small):
    with pytest.raises(ValueError, match="unknown method 'bbknn'"):
        ip.tl.integrate(small, "bbknn", "Metadata_Batch")


@pytest.mark.parametrize("method", ip.tl.METHODS)
def test_missing_batch_key(small, method):
    with pytest.raises(KeyError, match="Metadata_Batchh"):
        ip.tl.integrate(small, method, "Metadata_Batchh", **EXTRA.get(method, {}))


@pytest.mark.parametrize("method", ip.tl.METHODS)
def test_single_level_batch(small, method):
    small.obs["one"] = "b1"
    with pytest.raises(ValueError, match="single level"):
        ip.tl.integrate(small, method, "one", **EXTRA.get(method, {}))


@pytest.mark.parametrize("method", ip.tl.METHODS)
def test_batch_with_one_sample(small, method):
    b = small.obs["Metadata_Batch"].astype(str).to_numpy().copy()
    b[0] = "lonely"
    small.obs["b"] = b
    with pytest.raises(ValueError, match="'lonely' \\(n=1\\)"):
        ip.tl.integrate(small, method, "b", **EXTRA.get(method, {}))


@pytest.mark.parametrize("method", ip.tl.METHODS)
def test_nan_batch_label(small, method):
    b = small.obs["Metadata_Batch"].astype(object).to_numpy().copy()
    b[3] = np.nan
    small.obs["b"] = b
    with pytest.raises(ValueError, match="no batch label"):
        ip.tl.integrate(small, method, "b", **EXTRA.get(method, {}))


@pytest.mark.parametrize("method", ip.tl.METHODS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input(small, method, bad):
    small.X[5, 2] = bad
    small.obsm["X_pca"][5, 1] = bad
    with pytest.raises(ValueError, match="NaN/inf"):
        ip.tl.integrate(small, method, "Metadata_Batch", **EXTRA.get(method, {}))


@pytest.mark.parametrize("method", ip.tl.METHODS)
def test_missing_use_rep(small, method):
    with pytest.raises(KeyError, match="X_umap"):
        ip.tl.integrate(small, method, "Metadata_Batch", use_rep="X_umap", **EXTRA.get(method, {}))


def test_missing_pca_hint(small):
    del small.obsm["X_pca"]
    with pytest.raises(KeyError, match="ip.tl.pca"):
        ip.tl.harmony(small, "Metadata_Batch")


def test_errors_come_before_heavy_imports():
    """Bad input fails before torch/scvi/harmonypy/scanorama are imported, and import imgprof stays light."""
    code = """
import sys, json, imgprof as ip
a = ip.datasets.simulate(n_plates=2, n_batches=2, n_perturbations=8, n_moa=2, n_features=20, seed=0)
errors = {}
for m in ["scvi", "harmony", "scanorama"]:
    try:
        ip.tl.integrate(a, m, "Metadata_Batchh", use_rep="X")
    except KeyError as e:
        errors[m] = "ok"
heavy = [m for m in ("torch", "scvi", "harmonypy", "scanorama", "lightning", "jax") if m in sys.modules]
print(json.dumps({"errors": errors, "heavy": heavy}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["errors"] == {"scvi": "ok", "harmony": "ok", "scanorama": "ok"}
    assert res["heavy"] == []


# --------------------------------------------------------------------------- parity with the reference tools (real data)


def test_harmony_equals_harmonypy(cmqtl):
    import harmonypy

    a = cmqtl.copy()
    ip.tl.harmony(a, "Metadata_Batch", theta=2.0, random_state=0)
    direct = harmonypy.run_harmony(a.obsm["X_pca"], a.obs, "Metadata_Batch", theta=2.0, random_state=0, verbose=False)
    np.testing.assert_array_equal(a.obsm["X_harmony"], direct.Z_corr)
    # and it changes something
    assert not np.allclose(a.obsm["X_harmony"], a.obsm["X_pca"])


def test_combat_equals_scanpy(cmqtl):
    import scanpy as sc

    a = cmqtl.copy()
    X0 = a.X.copy()
    ip.tl.combat(a, "Metadata_Batch")
    np.testing.assert_array_equal(a.X, X0)  # .X untouched
    b = cmqtl.copy()
    sc.pp.combat(b, key="Metadata_Batch")
    np.testing.assert_allclose(a.obsm["X_combat"], b.X, rtol=1e-10, atol=1e-10)


def test_combat_covariates_equal_scanpy(cmqtl):
    import scanpy as sc

    a = cmqtl.copy()
    ip.tl.combat(a, "Metadata_Batch", covariates=["Metadata_target_gene"])
    b = cmqtl.copy()
    sc.pp.combat(b, key="Metadata_Batch", covariates=["Metadata_target_gene"])
    np.testing.assert_allclose(a.obsm["X_combat"], b.X, rtol=1e-10, atol=1e-10)


def test_combat_constant_feature_error(small):
    small.X[:, 4] = 1.0
    with pytest.raises(ValueError, match="constant within batch"):
        ip.tl.combat(small, "Metadata_Batch")


def test_scanorama_equals_scanpy_external(cmqtl):
    import scanpy.external as sce

    # scanpy's wrapper needs contiguous batches; cmQTL rows are ordered by batch.
    a = cmqtl.copy()
    ip.tl.scanorama(a, "Metadata_Batch", cos_norm=False)
    b = cmqtl.copy()
    sce.pp.scanorama_integrate(b, "Metadata_Batch", basis="X_pca", adjusted_basis="ref", verbose=0)
    np.testing.assert_allclose(a.obsm["X_scanorama"], b.obsm["ref"], rtol=1e-10, atol=1e-10)
    assert not np.allclose(a.obsm["X_scanorama"], a.obsm["X_pca"])


def test_scanorama_order_independent(cmqtl):
    """Rows interleaved across batches give the same per-row result (scanpy's wrapper would refuse)."""
    a = cmqtl.copy()
    ip.tl.scanorama(a, "Metadata_Batch", approx=False)
    perm = np.random.default_rng(0).permutation(a.n_obs)
    b = a[perm].copy()
    ip.tl.scanorama(b, "Metadata_Batch", approx=False)
    np.testing.assert_allclose(b.obsm["X_scanorama"], a.obsm["X_scanorama"][perm], rtol=1e-5, atol=1e-6)  # float32 PCs


def test_sphering_equals_pycytominer(lincs):
    from pycytominer.operations import Spherize

    a = lincs.copy()
    ctrl = (a.obs["Metadata_pert_type"] == "control").to_numpy()
    for method in ["ZCA-cor", "ZCA", "PCA-cor", "PCA"]:  # every method ip.tl.sphering offers
        ip.tl.sphering(a, controls="Metadata_pert_type == 'control'", method=method, epsilon=1e-2)
        df = pd.DataFrame(a.X, columns=a.var_names)
        ref = Spherize(epsilon=1e-2, method=method).fit(df[ctrl]).transform(df).to_numpy()
        out = a.obsm["X_sphering"]
        if method.startswith("PCA"):
            # fewer controls than features: imgprof keeps the r components with non-zero control
            # variance; pycytominer appends the controls' null space in an arbitrary basis
            assert ctrl.sum() <= a.n_vars and out.shape[1] == ctrl.sum() - 1
            ref = ref[:, : out.shape[1]]
        np.testing.assert_allclose(out, ref, rtol=1e-7, atol=1e-7)


def test_sphering_grid_picks_best_replicate_map(lincs):
    a = lincs.copy()
    ip.tl.sphering(a, controls="Metadata_pert_type == 'control'", label_key="Metadata_broad_sample",
                   epsilon=[1e-3, 1e-1, 10.0, 1e3])
    grid = pd.DataFrame(a.uns["sphering"]["grid"])
    assert len(grid) == 4 and grid["score"].notna().all()
    assert a.uns["sphering"]["epsilon"] == grid.loc[grid["score"].idxmax(), "epsilon"]
    extra = ip.provenance(a).iloc[-1]["extra"]
    assert extra["epsilon_chosen"] == a.uns["sphering"]["epsilon"]
    # with more controls than features and no regularisation, the sphered controls have identity covariance
    b = lincs[:, :15].copy()
    ctrl = (b.obs["Metadata_pert_type"] == "control").to_numpy()
    ip.tl.sphering(b, controls=ctrl, epsilon=0.0, key_added="S")
    np.testing.assert_allclose(np.cov(b.obsm["S"][ctrl].T), np.eye(15), atol=1e-6)
    assert np.abs(np.cov(b.X[ctrl].T) - np.eye(15)).max() > 0.1  # ... which the input did not


def test_sphering_errors(lincs, small):
    with pytest.raises(ValueError, match="label_key"):
        ip.tl.sphering(small, criterion="replicate_map")  # replicate retrieval needs replicate labels
    with pytest.raises(ValueError, match="criterion must be"):
        ip.tl.sphering(small, criterion="best")
    with pytest.raises(ValueError, match="selects no observation"):
        ip.tl.sphering(small, controls="Metadata_Plate == 'nope'", epsilon=0.1)
    small.X[:, 3] = 2.0
    with pytest.raises(ValueError, match="constant across the controls"):
        ip.tl.sphering(small, epsilon=0.1)
    with pytest.raises(ValueError, match="method must be one of"):
        ip.tl.sphering(lincs, method="ZCA-corr", epsilon=0.1)
