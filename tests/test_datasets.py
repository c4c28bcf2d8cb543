"""Bundled loaders return the documented shapes; the simulator has the structure it promises."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

import imgprof as ip

# ---------------------------------------------------------------------------------------------
# Real data loaders
# ---------------------------------------------------------------------------------------------


def test_lincs_plate(lincs):
    assert lincs.shape == (384, 454)
    obs = lincs.obs
    assert obs.shape[1] == 26
    assert (obs["Metadata_pert_type"] == "control").sum() == 24
    assert obs["Metadata_moa"].nunique() == 50
    assert lincs.uns["imgprof"]["dataset"]["license"] == "BSD-3-Clause"
    assert lincs.uns["imgprof"]["level"] == "well"


def test_cmqtl_crispri():
    adata = ip.datasets.cmqtl_crispri()
    assert adata.shape == (768, 362)
    assert adata.obs["Metadata_Batch"].value_counts().tolist() == [384, 384]
    assert (adata.obs["Metadata_target_gene"] == "CONTROL").sum() == 208
    assert adata.obs_names.is_unique
    assert (adata.var["source"] == "cellprofiler").all()
    outer = ip.datasets.cmqtl_crispri(join="outer")
    assert outer.n_vars == 635 + 592 - 362


def test_nelisa():
    adata = ip.datasets.nelisa()
    assert adata.shape == (1525, 191)
    assert adata.obs["Metadata_Plate"].nunique() == 4
    assert (adata.obs["Metadata_control_type"] == "negcon").sum() == 256


def test_l1000_plate():
    adata = ip.datasets.l1000_plate()
    assert adata.shape == (377, 978)
    assert (adata.obs["pert_type"] == "ctl_vehicle").sum() == 26
    assert "Metadata_pert_iname" in ip.datasets.l1000_plate(obs_prefix="Metadata_").obs.columns


def test_examplehuman():
    adata = ip.datasets.examplehuman_cells()
    assert adata.n_obs == 289 and adata.n_vars == 300
    assert adata.uns["imgprof"]["level"] == "single_cell"
    tifs = sorted(p.name for p in ip.datasets.examplehuman_images_path().glob("*.tif"))
    assert tifs == [f"AS_09125_050116030001_D03f00d{i}.tif" for i in range(3)]


def test_tables():
    hub = ip.datasets.repurposing_hub()
    assert hub.shape == (6113, 6) and {"pert_iname", "moa", "target"} <= set(hub.columns)
    way = ip.datasets.way2022_percent_replicating()
    assert way.shape == (12, 4) and set(way["assay"]) == {"Cell Painting", "L1000"}


def test_loaders_return_fresh_objects_and_leave_files_alone():
    path = ip.datasets.data_path("lincs", "SQ00015054_normalized_feature_select.csv.gz")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    a = ip.datasets.lincs_plate()
    a.X[:] = 0
    b = ip.datasets.lincs_plate()
    assert np.abs(b.X).sum() > 0
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        ip.datasets.data_path("missing.csv")


# ---------------------------------------------------------------------------------------------
# Simulator
# ---------------------------------------------------------------------------------------------


def _standardize_per_plate(adata):
    """z-score each plate against its negative controls (raw features live on very different scales)."""
    X = np.asarray(adata.X, dtype=float)
    Z = np.empty_like(X)
    for _, idx in adata.obs.groupby("Metadata_Plate", observed=True).indices.items():
        ctrl = idx[adata.obs["Metadata_control_type"].to_numpy()[idx] == "negcon"]
        Z[idx] = (X[idx] - X[ctrl].mean(0)) / X[ctrl].std(0)
    return Z


def test_simulate_layout_and_truth(sim_wells):
    obs = sim_wells.obs
    truth = ["Metadata_Plate", "Metadata_Batch", "Metadata_Well", "Metadata_Perturbation", "Metadata_moa",
             "Metadata_control_type", "Metadata_pert_type", "Metadata_active", "Metadata_Count_Cells"]
    assert truth == list(obs.columns)
    assert sim_wells.shape == (4 * (24 + 16), 60)
    assert obs.groupby("Metadata_Plate", observed=True)["Metadata_Well"].nunique().eq(40).all()
    assert set(obs.loc[obs["Metadata_Perturbation"] == "DMSO", "Metadata_moa"]) == {"control"}
    assert set(obs["Metadata_control_type"]) == {"negcon", "trt"}
    assert obs["Metadata_Batch"].nunique() == 2
    assert sim_wells.uns["imgprof"]["level"] == "well"
    assert (sim_wells.var["source"] == "cellprofiler").all()
    assert (sim_wells.X > 0).mean() > 0.95  # raw CellProfiler-like scales
    per_moa = pd.Series(sim_wells.uns["simulation"]["perturbation_moa"]).value_counts()
    assert len(per_moa) == 4


def test_simulate_is_seeded():
    a = ip.datasets.simulate(n_plates=2, n_features=30, seed=7)
    b = ip.datasets.simulate(n_plates=2, n_features=30, seed=7)
    c = ip.datasets.simulate(n_plates=2, n_features=30, seed=8)
    np.testing.assert_array_equal(a.X, b.X)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    assert not np.allclose(a.X, c.X)


def test_simulate_batch_effect_visible(sim_wells):
    X = np.asarray(sim_wells.X)
    obs = sim_wells.obs
    ctrl = (obs["Metadata_control_type"] == "negcon").to_numpy()
    means = pd.DataFrame(X[ctrl]).groupby(obs.loc[ctrl, "Metadata_Batch"].to_numpy()).mean()
    within = pd.DataFrame(X[ctrl]).groupby(obs.loc[ctrl, "Metadata_Batch"].to_numpy()).std().mean()
    gap = (means.iloc[0] - means.iloc[1]).abs() / within
    assert gap.median() > 0.3  # control wells of the two batches differ systematically
    no_batch = ip.datasets.simulate(n_plates=4, n_perturbations=24, n_moa=4, n_features=60, seed=1,
                                    batch_additive=0.0, batch_multiplicative=0.0, plate_additive=0.0)
    Xn = np.asarray(no_batch.X)
    ctrl_n = (no_batch.obs["Metadata_control_type"] == "negcon").to_numpy()
    means_n = pd.DataFrame(Xn[ctrl_n]).groupby(no_batch.obs.loc[ctrl_n, "Metadata_Batch"].to_numpy()).mean()
    gap_n = (means_n.iloc[0] - means_n.iloc[1]).abs() / within
    assert gap.median() > 3 * gap_n.median()


def test_simulate_moa_structure_visible(sim_wells):
    Z = _standardize_per_plate(sim_wells)
    C = np.corrcoef(Z)
    obs = sim_wells.obs
    pert, moa = obs["Metadata_Perturbation"].to_numpy(), obs["Metadata_moa"].to_numpy()
    active = obs["Metadata_active"].to_numpy()
    i, j = np.triu_indices(len(obs), 1)
    trt = (pert[i] != "DMSO") & (pert[j] != "DMSO")
    replicate = trt & (pert[i] == pert[j]) & active[i]
    same_moa = trt & (pert[i] != pert[j]) & (moa[i] == moa[j]) & active[i] & active[j]
    other = trt & (moa[i] != moa[j])
    assert C[i, j][replicate].mean() > C[i, j][same_moa].mean() > C[i, j][other].mean() + 0.2
    inactive = trt & (pert[i] == pert[j]) & ~active[i]
    if inactive.any():
        assert C[i, j][inactive].mean() < C[i, j][replicate].mean() - 0.3


def test_simulate_data_quality_traps():
    adata = ip.datasets.simulate(n_plates=2, n_features=40, nan_fraction=0.05, n_constant=3, n_correlated=4, seed=2)
    assert adata.n_vars == 47
    X = np.asarray(adata.X)
    assert 0.03 < np.isnan(X).mean() < 0.07
    const = np.nanstd(X[:, -3:], axis=0)
    assert np.allclose(const, 0)
    df = pd.DataFrame(X)
    r = df.corr().to_numpy()
    for k in range(40, 44):
        assert np.nanmax(np.abs(r[k, :40])) > 0.99
    assert adata.var_names.is_unique


def test_simulate_single_cell():
    wells = ip.datasets.simulate(n_plates=2, n_perturbations=6, n_moa=2, n_features=20, seed=4)
    cells = ip.datasets.simulate(n_plates=2, n_perturbations=6, n_moa=2, n_features=20, seed=4, level="single_cell")
    assert cells.uns["imgprof"]["level"] == "single_cell"
    assert cells.n_obs == wells.obs["Metadata_Count_Cells"].sum()
    per_well = cells.obs.groupby(["Metadata_Plate", "Metadata_Well"], observed=True).size()
    counts = cells.obs.groupby(["Metadata_Plate", "Metadata_Well"], observed=True)["Metadata_Count_Cells"].first()
    assert (per_well == counts).all()
    assert (cells.obs.groupby(["Metadata_Plate", "Metadata_Well"], observed=True)["Metadata_ObjectNumber"].max() == counts).all()
    # Round trip through a table keeps the object number as metadata (not a feature).
    back = ip.io.from_pandas(ip.io.to_pandas(cells))
    assert "Metadata_ObjectNumber" in back.obs.columns and back.n_vars == 20


def test_simulate_bad_arguments():
    with pytest.raises(ValueError, match="level must be"):
        ip.datasets.simulate(level="plate")
    with pytest.raises(ValueError, match="n_moa"):
        ip.datasets.simulate(n_perturbations=2, n_moa=3)
    with pytest.raises(ValueError, match="n_batches=5 > n_plates=2"):
        ip.datasets.simulate(n_plates=2, n_batches=5)
