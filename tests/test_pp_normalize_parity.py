"""ip.pp.normalize against pycytominer 1.7.1 on real data (LINCS, cmQTL, nELISA, ExampleHuman cells) and simulated data."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import imgprof as ip

pcm = pytest.importorskip("pycytominer")

TOL = dict(rtol=1e-6, atol=1e-6)
NEGCON = "Metadata_control_type == 'negcon'"


def _pcm_normalize(df, feats, by=None, **kw):
    """pycytominer.normalize, once per group of ``by`` (pycytominer has no by=), rows back in input order."""
    meta = [c for c in df.columns if c not in set(feats)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if by is None:
            out = pcm.normalize(df, features=feats, meta_features=meta, **kw)
        else:
            out = pd.concat([pcm.normalize(g, features=feats, meta_features=meta, **kw) for _, g in df.groupby(by)])
    out = out.loc[df.index]
    return out.drop(columns=meta).to_numpy(dtype=np.float64)


def _cells_adata(df):
    feats = [c for c in df.columns if c.startswith(("Cells_", "Cytoplasm_", "Nuclei_"))]
    meta = [c for c in df.columns if c not in set(feats)]
    return ip.io.from_pandas(df, metadata=meta, features=feats), feats


# ------------------------------------------------------------------------------------------------
# nELISA: 4 plates, negcon controls, per plate
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["standardize", "robustize", "mad_robustize", "inverse_normal"])
def test_nelisa_per_plate_negcon(nelisa_df, method):
    adata = ip.io.from_pandas(nelisa_df)
    feats = list(adata.var_names)
    ip.pp.normalize(adata, method, controls=NEGCON, by="Metadata_Plate")
    ref = _pcm_normalize(nelisa_df, feats, by="Metadata_Plate", samples=NEGCON, method=method)
    np.testing.assert_allclose(adata.X, ref, **TOL)
    # the controls of each plate are centred by construction (not a copy of our own output)
    if method in ("mad_robustize", "robustize"):
        ctrl = (nelisa_df["Metadata_control_type"] == "negcon").to_numpy()
        for plate in nelisa_df["Metadata_Plate"].unique():
            rows = ctrl & (nelisa_df["Metadata_Plate"] == plate).to_numpy()
            assert np.abs(np.median(adata.X[rows], axis=0)).max() < 1e-9


@pytest.mark.parametrize("sph", ["ZCA", "ZCA-cor", "PCA", "PCA-cor"])
def test_nelisa_spherize_per_plate(nelisa_df, sph):
    """n (64 controls) < d (191 proteins): pycytominer's rank handling; PCA keeps the r defined components."""
    adata = ip.io.from_pandas(nelisa_df)
    feats = list(adata.var_names)
    ip.pp.normalize(adata, "spherize", controls=NEGCON, by="Metadata_Plate", spherize_method=sph)
    ref = _pcm_normalize(nelisa_df, feats, by="Metadata_Plate", samples=NEGCON, method="spherize", spherize_method=sph)
    if sph.startswith("PCA"):
        out = adata.obsm["X_spherize"]
        assert out.shape == (adata.n_obs, 63)  # rank of 64 centred controls
        np.testing.assert_allclose(out, ref[:, :63], **TOL)
    else:
        np.testing.assert_allclose(adata.X, ref, **TOL)
        # whitened controls: identity covariance within the control span (ZCA keeps the feature axes)
        ctrl = (nelisa_df["Metadata_control_type"] == "negcon").to_numpy()
        plate1 = ctrl & (nelisa_df["Metadata_Plate"] == nelisa_df["Metadata_Plate"].iloc[0]).to_numpy()
        ev = np.linalg.eigvalsh(np.cov(adata.X[plate1], rowvar=False))
        np.testing.assert_allclose(ev[-63:], 1.0, atol=1e-3)


@pytest.mark.parametrize("sph", ["ZCA", "PCA", "ZCA-cor", "PCA-cor"])
def test_nelisa_spherize_all_rows_n_gt_d(nelisa_df, sph):
    """n (1,525) > d (191): full-rank whitening; PCA signs match pycytominer's SVD."""
    adata = ip.io.from_pandas(nelisa_df)
    feats = list(adata.var_names)
    ip.pp.normalize(adata, "spherize", spherize_method=sph, key_added="sph")
    ref = _pcm_normalize(nelisa_df, feats, samples="all", method="spherize", spherize_method=sph)
    out = adata.obsm["sph"] if sph.startswith("PCA") else adata.layers["sph"]
    np.testing.assert_allclose(out, ref, **TOL)
    cov = np.cov(out, rowvar=False)
    np.testing.assert_allclose(cov, np.eye(cov.shape[0]), atol=1e-4)


def test_nelisa_spherize_uncentered(nelisa_df):
    adata = ip.io.from_pandas(nelisa_df)
    feats = list(adata.var_names)
    ip.pp.normalize(adata, "spherize", spherize_method="ZCA", spherize_center=False)
    ref = _pcm_normalize(nelisa_df, feats, samples="all", method="spherize", spherize_method="ZCA", spherize_center=False)
    np.testing.assert_allclose(adata.X, ref, **TOL)


# ------------------------------------------------------------------------------------------------
# LINCS plate (already normalized: re-normalization is still a valid parity check)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["standardize", "robustize", "mad_robustize", "inverse_normal"])
def test_lincs_dmso(lincs_df, method):
    q = "Metadata_pert_type == 'control'"
    adata = ip.io.from_pandas(lincs_df)
    feats = list(adata.var_names)
    ip.pp.normalize(adata, method, controls=q)
    ref = _pcm_normalize(lincs_df, feats, samples=q, method=method)
    np.testing.assert_allclose(adata.X, ref, **TOL)


def test_lincs_spherize_all_wells(lincs_df):
    adata = ip.io.from_pandas(lincs_df)
    feats = list(adata.var_names)
    ip.pp.normalize(adata, "spherize", spherize_method="ZCA-cor", spherize_epsilon=1e-3)
    ref = _pcm_normalize(lincs_df, feats, samples="all", method="spherize", spherize_method="ZCA-cor", spherize_epsilon=1e-3)
    np.testing.assert_allclose(adata.X, ref, **TOL)


# ------------------------------------------------------------------------------------------------
# cmQTL: two batches, per plate, CONTROL wells
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["mad_robustize", "standardize"])
def test_cmqtl_two_batches_per_plate(cmqtl_df, method):
    q = "Metadata_target_gene == 'CONTROL'"
    adata = ip.io.from_pandas(cmqtl_df)
    feats = list(adata.var_names)
    assert adata.obs["Metadata_Plate"].nunique() == 2
    ref = _pcm_normalize(cmqtl_df, feats, by="Metadata_Plate", samples=q, method=method)
    if method == "mad_robustize":
        # two Costes features have zero MAD on the CONTROL wells: pycytominer divides them by 1e-18
        with pytest.warns(UserWarning, match="divided by epsilon"):
            exact = ip.pp.normalize(adata, method, controls=q, by="Metadata_Plate", zero_scale="epsilon", copy=True)
        np.testing.assert_allclose(exact.X, ref, **TOL)
        with pytest.warns(UserWarning, match="Nuclei_Correlation_Costes_DNA_ER"):
            ip.pp.normalize(adata, method, controls=q, by="Metadata_Plate")
        zero = np.abs(ref).max(axis=0) > 1e12
        assert zero.sum() == 2
        np.testing.assert_allclose(adata.X[:, ~zero], ref[:, ~zero], **TOL)
        assert np.abs(adata.X[:, zero]).max() < 1e3
    else:
        ip.pp.normalize(adata, method, controls=q, by="Metadata_Plate")
        np.testing.assert_allclose(adata.X, ref, **TOL)


def test_cmqtl_spherize_per_plate(cmqtl_df):
    q = "Metadata_target_gene == 'CONTROL'"
    adata = ip.io.from_pandas(cmqtl_df)
    feats = list(adata.var_names)
    ip.pp.normalize(adata, "spherize", controls=q, by="Metadata_Plate", spherize_method="ZCA-cor")
    ref = _pcm_normalize(cmqtl_df, feats, by="Metadata_Plate", samples=q, method="spherize", spherize_method="ZCA-cor")
    np.testing.assert_allclose(adata.X, ref, **TOL)


# ------------------------------------------------------------------------------------------------
# ExampleHuman single cells: integer features, constant and zero-MAD features
# ------------------------------------------------------------------------------------------------
def test_cells_mad_robustize_zero_mad(cells_df):
    adata, feats = _cells_adata(cells_df)
    ref = _pcm_normalize(cells_df, feats, method="mad_robustize")
    # pycytominer divides zero-MAD features by epsilon=1e-18: huge values
    X = adata.X
    med = np.median(X, axis=0)
    zero_mad = np.median(np.abs(X - med), axis=0) == 0
    varying = zero_mad & (np.ptp(X, axis=0) > 0)
    assert zero_mad.sum() > varying.sum() > 0
    assert np.abs(ref[:, varying]).max() > 1e15
    # zero_scale="epsilon" reproduces pycytominer exactly (with a warning)
    a_eps = adata.copy()
    with pytest.warns(UserWarning, match="zero MAD"):
        ip.pp.normalize(a_eps, "mad_robustize", zero_scale="epsilon")
    np.testing.assert_allclose(a_eps.X, ref, rtol=1e-6, atol=1e-6)
    # default: same values on the other features, zero-MAD features only centred
    with pytest.warns(UserWarning, match="zero reference scale"):
        ip.pp.normalize(adata, "mad_robustize")
    np.testing.assert_allclose(adata.X[:, ~zero_mad], ref[:, ~zero_mad], **TOL)
    np.testing.assert_allclose(adata.X[:, zero_mad], (X - med)[:, zero_mad], **TOL)
    assert np.isfinite(adata.X).all() and np.abs(adata.X).max() < 1e6


@pytest.mark.parametrize("method", ["standardize", "robustize"])
def test_cells_sklearn_scalers_constant_features(cells_df, method):
    adata, feats = _cells_adata(cells_df)
    assert adata.X.dtype == np.float64  # integer columns were converted
    ref = _pcm_normalize(cells_df, feats, method=method)
    with pytest.warns(UserWarning, match="zero reference scale"):
        ip.pp.normalize(adata, method)
    np.testing.assert_allclose(adata.X, ref, **TOL)


# ------------------------------------------------------------------------------------------------
# simulated data with NaN, constant and near-duplicate features
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim_nan():
    return ip.datasets.simulate(n_plates=4, n_features=80, nan_fraction=0.05, n_constant=3, n_correlated=5, seed=7)


@pytest.mark.parametrize("method", ["standardize", "robustize", "mad_robustize", "inverse_normal"])
def test_simulated_nan_per_plate(sim_nan, method):
    df = ip.io.to_pandas(sim_nan)
    feats = list(sim_nan.var_names)
    a = sim_nan.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the 3 constant features
        ip.pp.normalize(a, method, controls=NEGCON, by="Metadata_Plate", zero_scale="warn")
    ref = _pcm_normalize(df, feats, by="Metadata_Plate", samples=NEGCON, method=method)
    const = np.zeros(len(feats), dtype=bool)
    const[-3:] = True
    np.testing.assert_array_equal(np.isnan(a.X), np.isnan(sim_nan.X))  # NaN stay NaN, none created
    np.testing.assert_allclose(a.X[:, ~const], ref[:, ~const], **TOL)
    assert np.isfinite(a.X[:, const][~np.isnan(sim_nan.X[:, const])]).all()


@pytest.mark.parametrize("sph", ["ZCA", "PCA", "ZCA-cor", "PCA-cor"])
def test_simulated_spherize_n_gt_d(sph):
    adata = ip.datasets.simulate(n_plates=6, n_features=40, seed=3)
    df = ip.io.to_pandas(adata)
    feats = list(adata.var_names)
    ip.pp.normalize(adata, "spherize", controls=None, spherize_method=sph, spherize_epsilon=1e-6)
    ref = _pcm_normalize(df, feats, samples="all", method="spherize", spherize_method=sph)
    out = adata.obsm["X_spherize"] if sph.startswith("PCA") else adata.X
    np.testing.assert_allclose(out, ref, **TOL)
