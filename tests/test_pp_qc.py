"""ip.pp.qc: count and outlier flags in .obs, never removing rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from conftest import shared

import imgprof as ip


@pytest.fixture
def wells():
    a = ip.datasets.simulate(n_plates=3, n_perturbations=40, n_moa=4, n_features=50, seed=2)
    return a


def test_planted_low_count_and_outlier_wells_are_flagged(wells):
    rng = np.random.default_rng(0)
    low = rng.choice(wells.n_obs, 4, replace=False)
    wells.obs.iloc[low, wells.obs.columns.get_loc("Metadata_Count_Cells")] = 1
    bad = np.setdiff1d(rng.choice(wells.n_obs, 4, replace=False), low)
    sd = np.nanstd(wells.X, axis=0)
    wells.X[bad] += 50 * sd  # every feature of these wells far away
    n, X_before = wells.n_obs, wells.X.copy()
    assert ip.pp.qc(wells) is None
    obs = wells.obs
    assert wells.n_obs == n and np.array_equal(wells.X, X_before)  # nothing removed or changed
    assert obs["Metadata_qc_low_count"].to_numpy()[low].all()
    assert obs["Metadata_qc_outlier"].to_numpy()[bad].all()
    np.testing.assert_array_equal(obs["Metadata_qc_outlier_fraction"].to_numpy()[bad], 1.0)
    flagged = obs["Metadata_qc_low_count"] | obs["Metadata_qc_outlier"]
    assert (obs["Metadata_qc_pass"] == ~flagged).all()
    assert flagged.sum() < 0.1 * n  # the defaults do not flag the bulk of normal wells
    step = ip.provenance(wells).iloc[-1]
    assert step["function"] == "pp.qc" and step["extra"]["n_failed"] == int((~obs["Metadata_qc_pass"]).sum())


def test_count_z_on_real_cmqtl_counts():
    path = shared("cmqtl", "2022_09_07_Batch8_cmQTL_CRISPRi_plate1_normalized_feature_select_batch.csv.gz")
    adata = ip.io.read_profiles(path)
    ip.pp.qc(adata, by="Metadata_Plate", min_cells=100)
    counts = adata.obs["Metadata_Count_Cells"].to_numpy(float)
    z = (counts - np.median(counts)) / scipy.stats.median_abs_deviation(counts, scale="normal")
    np.testing.assert_allclose(adata.obs["Metadata_qc_count_z"], z, rtol=1e-12)
    np.testing.assert_array_equal(adata.obs["Metadata_qc_low_count"], (z < -3) | (counts < 100))


def test_controls_define_the_reference(wells):
    ip.pp.qc(wells, controls="Metadata_control_type == 'negcon'", key_added="Metadata_qcneg")
    neg = wells.obs["Metadata_control_type"] == "negcon"
    X = wells.X[(wells.obs["Metadata_Plate"] == "plate_1").to_numpy() & neg.to_numpy()]
    med = np.median(X, axis=0)
    mad = scipy.stats.median_abs_deviation(X, axis=0, scale="normal")
    first = np.flatnonzero((wells.obs["Metadata_Plate"] == "plate_1").to_numpy())[0]
    expected = np.mean(np.abs(wells.X[first] - med) / mad > 5.0)
    assert wells.obs["Metadata_qcneg_outlier_fraction"].iloc[first] == pytest.approx(expected)
    with pytest.raises(ValueError, match="selects no"):
        ip.pp.qc(wells, controls="Metadata_control_type == 'poscon'")


def test_single_well_groups_warn_and_are_not_flagged(wells):
    wells.obs["Metadata_Plate"] = wells.obs["Metadata_Plate"].astype(str)
    wells.obs.iloc[0, wells.obs.columns.get_loc("Metadata_Plate")] = "lonely"
    with pytest.warns(UserWarning, match="fewer than 3"):
        ip.pp.qc(wells)
    assert np.isnan(wells.obs["Metadata_qc_outlier_fraction"].iloc[0])
    assert wells.obs["Metadata_qc_pass"].iloc[0]


def test_inf_nan_and_missing_keys(wells):
    wells.X[3, :40] = np.nan
    wells.X[5, 2] = np.inf
    ip.pp.qc(wells, count_key=None)
    obs = wells.obs
    assert obs["Metadata_qc_missing"].iloc[3] and obs["Metadata_qc_inf"].iloc[5]
    assert obs["Metadata_qc_inf"].sum() == 1 and not obs["Metadata_qc_pass"].iloc[[3, 5]].any()
    assert np.isfinite(obs["Metadata_qc_outlier_fraction"].iloc[5])  # inf left out, not propagated
    assert "Metadata_qc_count_z" not in obs.columns
    with pytest.raises(KeyError, match="Metadata_Plat"):
        ip.pp.qc(wells, by="Metadata_Plat")
    with pytest.raises(KeyError, match="Metadata_n_cells"):
        ip.pp.qc(wells, count_key="Metadata_n_cells")


def test_no_count_column_warns():
    adata = ip.datasets.nelisa()
    with pytest.warns(UserWarning, match="no cell-count column"):
        ip.pp.qc(adata)
    assert "Metadata_qc_low_count" not in adata.obs.columns
    assert adata.obs.groupby("Metadata_Plate", observed=True)["Metadata_qc_outlier"].mean().max() < 0.2


def test_single_cell_presets_on_real_examplehuman():
    df = pd.read_parquet(shared("pycytominer", "cytotable", "examplehuman_joined_profiles.parquet"))
    meta = [c for c in df.columns if not c.startswith(("Cells_", "Cytoplasm_", "Nuclei_"))]
    cells = ip.io.from_pandas(df, metadata=meta, level="single_cell")
    ip.pp.qc(cells, by=None, feature_thresholds=["small_and_low_formfactor_nuclei", "large_nuclei"])
    z_area = scipy.stats.zscore(df["Nuclei_AreaShape_Area"])
    z_ff = scipy.stats.zscore(df["Nuclei_AreaShape_FormFactor"])
    np.testing.assert_array_equal(cells.obs["Metadata_qc_small_and_low_formfactor_nuclei"], (z_area <= -1) & (z_ff <= -1))
    np.testing.assert_array_equal(cells.obs["Metadata_qc_large_nuclei"], (z_area >= 2) & (z_ff <= -2))
    assert "Metadata_qc_low_count" not in cells.obs.columns  # cell level: no count flag
    assert cells.n_obs == len(df)
    with pytest.raises(ValueError, match="unknown preset"):
        ip.pp.qc(cells, by=None, feature_thresholds="tiny")
    with pytest.raises(KeyError, match="Nuclei_Nope"):
        ip.pp.qc(cells, by=None, feature_thresholds={"x": {"Nuclei_Nope": 2}})


def test_dask_matches_numpy():
    da = pytest.importorskip("dask.array")
    cells = ip.datasets.simulate(
        n_plates=2, n_perturbations=4, n_moa=2, n_controls=4, n_features=20, level="single_cell", nan_fraction=0.02, seed=4
    )
    lazy = cells.copy()
    lazy.X = da.from_array(np.asarray(cells.X), chunks=(100, 7))
    ip.pp.qc(cells)
    ip.pp.qc(lazy)
    cols = [c for c in cells.obs.columns if c.startswith("Metadata_qc")]
    pd.testing.assert_frame_equal(cells.obs[cols], lazy.obs[cols])
