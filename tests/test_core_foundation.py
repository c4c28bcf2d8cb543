"""Shared internals: feature anatomy on real names, validation errors, provenance, column splitting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import shared

import imgprof as ip
from imgprof._core import validation as V
from imgprof._core.anatomy import ANATOMY_COLUMNS, parse_feature_name, parse_feature_names
from imgprof._core.features import check_numeric_features, feature_matrix, split_columns
from imgprof._core.provenance import log_step, provenance, set_level

# ---------------------------------------------------------------------------------------------
# Anatomy
# ---------------------------------------------------------------------------------------------

KNOWN = {
    # name: (compartment, feature_group, feature, channel, channel2, parameters)
    "Cells_AreaShape_Area": ("Cells", "AreaShape", "Area", None, None, None),
    "Cells_AreaShape_Zernike_5_1": ("Cells", "AreaShape", "Zernike", None, None, "5_1"),
    "Cytoplasm_Texture_InfoMeas1_ER_3_0": ("Cytoplasm", "Texture", "InfoMeas1", "ER", None, "3_0"),
    "Cells_Texture_AngularSecondMoment_AGP_10_00_256": ("Cells", "Texture", "AngularSecondMoment", "AGP", None, "10_00_256"),
    "Nuclei_Correlation_Correlation_DNA_ER": ("Nuclei", "Correlation", "Correlation", "DNA", "ER", None),
    "Cells_Correlation_K_AGP_Mito": ("Cells", "Correlation", "K", "AGP", "Mito", None),
    "Nuclei_Granularity_1_Mito": ("Nuclei", "Granularity", "Granularity", "Mito", None, "1"),
    "Cells_Intensity_MeanIntensity_DNA": ("Cells", "Intensity", "MeanIntensity", "DNA", None, None),
    "Cytoplasm_RadialDistribution_FracAtD_RNA_3of4": ("Cytoplasm", "RadialDistribution", "FracAtD", "RNA", None, "3of4"),
    "Cells_Location_CenterMassIntensity_X_DNA": ("Cells", "Location", "CenterMassIntensity", "DNA", None, "X"),
    "Nuclei_Neighbors_NumberOfNeighbors_Adjacent": ("Nuclei", "Neighbors", "NumberOfNeighbors", None, None, "Adjacent"),
    "Image_ImageQuality_PowerLogLogSlope_OrigDNA": ("Image", "ImageQuality", "PowerLogLogSlope", "OrigDNA", None, None),
    "Image_Granularity_1_OrigRNA": ("Image", "Granularity", "Granularity", "OrigRNA", None, "1"),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_parse_known_names(name):
    out = parse_feature_name(name)
    assert out["source"] == "cellprofiler"
    got = tuple(out[k] for k in ("compartment", "feature_group", "feature", "channel", "channel2", "parameters"))
    assert got == KNOWN[name]


def test_parse_non_cellprofiler_names():
    assert parse_feature_name("efficientnet_12")["source"] == "embedding"
    assert parse_feature_name("efficientnet_12")["feature_group"] == "efficientnet"
    assert parse_feature_name("Metadata_Plate")["source"] == "metadata"
    assert parse_feature_name("IL6")["source"] in ("other", "embedding")
    assert parse_feature_name("CXCL10 protein")["source"] == "other"


@pytest.mark.parametrize(
    "parts",
    [
        ("lincs", "SQ00015054_normalized_feature_select.csv.gz"),
        ("cmqtl", "2022_09_07_Batch8_cmQTL_CRISPRi_plate1_normalized_feature_select_batch.csv.gz"),
    ],
    ids=["lincs", "cmqtl"],
)
def test_real_profile_names_all_parse(parts):
    cols = pd.read_csv(shared(*parts), nrows=0).columns
    feats = [c for c in cols if not c.startswith("Metadata_")]
    var = parse_feature_names(feats)
    assert list(var.columns) == list(ANATOMY_COLUMNS)
    assert (var["source"] == "cellprofiler").all()
    assert set(var["compartment"]) <= {"Cells", "Cytoplasm", "Nuclei", "Image"}
    # Every name's parts are found back in the name, in order.
    for name, row in var.iterrows():
        assert name.startswith(f"{row.compartment}_{row.feature_group}_")
        if isinstance(row.channel, str):
            assert f"_{row.channel}" in name
    # Channel groups carry a channel; shape groups do not.
    channelled = var["feature_group"].isin(["Intensity", "Texture", "Granularity", "RadialDistribution", "Correlation"])
    assert var.loc[channelled, "channel"].notna().all()
    assert var.loc[var["feature_group"] == "AreaShape", "channel"].isna().all()
    assert set(var.loc[channelled, "channel"]) <= {"DNA", "RNA", "ER", "AGP", "Mito", "Brightfield"}


def test_examplehuman_names_parse():
    adata = ip.io.read_cellprofiler(shared("cytotable", "ExampleHuman"))
    var = adata.var
    assert (var["source"] == "cellprofiler").all()
    assert set(var["channel"].dropna()) == {"DNA", "PH3"}  # ExampleHuman measures DNA and PH3 intensities
    assert set(var["compartment"]) == {"Cells", "Cytoplasm", "Nuclei"}


def test_anatomy_columns_are_categorical_and_writable(tmp_path):
    var = parse_feature_names(["cnn_0", "cnn_1", "cnn_2"])
    assert all(isinstance(var[c].dtype, pd.CategoricalDtype) for c in ANATOMY_COLUMNS)
    adata = ip.io.read_embeddings(np.eye(3), prefix="cnn", obs=pd.DataFrame({"Metadata_Well": ["A01", "A02", "A03"]}))
    adata.write_h5ad(tmp_path / "e.h5ad")  # all-distinct names used to break anndata's string writer
    back = ip.io.read_profiles(tmp_path / "e.h5ad")
    assert back.var["feature"].tolist() == ["cnn_0", "cnn_1", "cnn_2"]


# ---------------------------------------------------------------------------------------------
# Column splitting
# ---------------------------------------------------------------------------------------------


def test_split_columns_rules():
    df = pd.DataFrame({"Metadata_A": [1], "ImageNumber": [1], "Cells_X": [1.0]})
    assert split_columns(df) == (["Metadata_A"], ["ImageNumber", "Cells_X"])
    assert split_columns(df, metadata=["Metadata_A", "ImageNumber"]) == (["Metadata_A", "ImageNumber"], ["Cells_X"])
    assert split_columns(df, features=["Cells_X"]) == (["Metadata_A", "ImageNumber"], ["Cells_X"])
    assert split_columns(df, metadata_prefix=("Metadata_", "Image")) == (["Metadata_A", "ImageNumber"], ["Cells_X"])
    assert split_columns(df[["Cells_X"]], metadata=[]) == ([], ["Cells_X"])
    with pytest.raises(ValueError, match="mytable: no metadata column found"):
        split_columns(df[["Cells_X"]], source="mytable")


def test_numeric_check_names_columns_and_examples():
    df = pd.DataFrame({"Cells_A": ["x", "y"], "Cells_B": [1.0, 2.0], "Cells_C": [True, False]})
    with pytest.raises(TypeError, match=r"t: feature column\(s\) \['Cells_A'\] are not numeric \(e.g. \{'Cells_A': \['x', 'y'\]\}\)"):
        check_numeric_features(df, ["Cells_A", "Cells_B"], source="t")
    check_numeric_features(df, ["Cells_B", "Cells_C"], source="t")
    assert feature_matrix(df, ["Cells_B", "Cells_C"]).dtype == np.float64


# ---------------------------------------------------------------------------------------------
# Validation vocabulary
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def small():
    return ip.datasets.simulate(n_plates=2, n_perturbations=6, n_moa=2, n_controls=4, n_features=12, seed=3)


def test_check_obs_keys_suggests(small):
    assert V.check_obs_keys(small, "Metadata_Plate") == ["Metadata_Plate"]
    with pytest.raises(KeyError, match=r"by: column\(s\) \['Metadata_plate'\] not found.*Did you mean \['Metadata_Plate'"):
        V.check_obs_keys(small, ["Metadata_plate"], param="by")


def test_resolve_mask_forms(small):
    q = V.resolve_mask(small, "Metadata_control_type == 'negcon'")
    assert q.sum() == 8
    assert V.resolve_mask(small, None).all()
    assert (V.resolve_mask(small, small.obs["Metadata_control_type"].eq("negcon").to_numpy()) == q).all()
    assert V.resolve_mask(small, list(small.obs_names[:3])).sum() == 3
    with pytest.raises(ValueError, match=r"controls=.*selects no observation \(0 of 20"):
        V.resolve_mask(small, "Metadata_Perturbation == 'nothing'")
    with pytest.raises(ValueError, match="could not be evaluated"):
        V.resolve_mask(small, "Metadata_nope == 1")
    with pytest.raises(KeyError, match="not in adata.obs_names"):
        V.resolve_mask(small, ["zzz"])
    with pytest.raises(ValueError, match="boolean mask has length 2"):
        V.resolve_mask(small, np.array([True, False]))


def test_check_finite_names_columns():
    X = np.ones((3, 3))
    X[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN/inf value\(s\) in 1 column\(s\), e.g. \['c'\]"):
        V.check_finite(X, var_names=["a", "b", "c"])
    V.check_finite(X, allow_nan=True)
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"inf value\(s\) in 1 column\(s\), e.g. \['a'\]"):
        V.check_finite(X, var_names=["a", "b", "c"], allow_nan=True)


def test_get_matrix_and_copy_idiom(small):
    assert V.get_matrix(small) is small.X
    small.obsm["X_pca"] = np.zeros((small.n_obs, 2))
    assert V.get_matrix(small, use_rep="X_pca").shape == (small.n_obs, 2)
    with pytest.raises(KeyError, match=r"use_rep='X_umap' not found in adata.obsm \(available: \['X_pca'\]\)"):
        V.get_matrix(small, use_rep="X_umap")
    with pytest.raises(KeyError, match="layer='raw' not found"):
        V.get_matrix(small, layer="raw")
    copy = V.start(small, True)
    assert copy is not small and V.finish(copy, True) is copy and V.finish(small, False) is None
    with pytest.raises(KeyError, match="already exists"):
        V.check_key_added(small.obsm, "X_pca", where="adata.obsm", overwrite=False)


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------


def test_provenance_log_survives_h5ad(tmp_path):
    adata = ip.io.from_pandas(pd.DataFrame({"Metadata_Well": ["A01", "B01"], "Cells_X": [1.0, 2.0]}))
    log_step(adata, "pp.test", {"method": "mad", "arr": np.arange(3), "n": np.int64(4)}, n_dropped=2)
    set_level(adata, "consensus")
    prov = provenance(adata)
    assert prov["function"].tolist() == ["io.from_pandas", "pp.test"]
    assert prov["params"].iloc[1] == {"arr": [0, 1, 2], "method": "mad", "n": 4}
    assert prov["extra"].iloc[1] == {"n_dropped": 2} and prov["shape"].iloc[1] == (2, 1)
    adata.write_h5ad(tmp_path / "p.h5ad")
    back = ip.io.read_profiles(tmp_path / "p.h5ad")
    pd.testing.assert_frame_equal(provenance(back), prov)
    assert back.uns["imgprof"]["level"] == "consensus"
    assert ip.provenance is provenance
