"""ip.io.read_cytotable, ip.io.read_deepprofiler and ip.io.read_embeddings on real outputs."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import shared

import imgprof as ip

CYTOTABLE = ("pycytominer", "cytotable", "examplehuman_joined_profiles.parquet")
NPZ = ("pycytominer", "deepprofiler", "Week1_22123_B02_s1.npz")


# ---------------------------------------------------------------------------------------------
# CytoTable
# ---------------------------------------------------------------------------------------------


def test_read_cytotable_layout():
    path = shared(*CYTOTABLE)
    df = pd.read_parquet(path)
    adata = ip.io.read_cytotable(path)
    assert adata.n_obs == len(df) == 289
    meta = [c for c in df.columns if c.startswith("Metadata_")]
    assert len(meta) == 10
    assert set(meta) <= set(adata.obs.columns)
    assert {"Image_FileName_DNA", "Image_FileName_PH3"} <= set(adata.obs.columns)  # strings never become features
    ids = [c for c in df.columns if c.endswith("_Number_Object_Number") or "_Parent_" in c and not c.startswith("Metadata_")]
    feats = [c for c in df.columns if c.startswith(("Cells_", "Cytoplasm_", "Nuclei_")) and c not in ids]
    assert list(adata.var_names) == feats
    np.testing.assert_array_equal(adata.X, df[feats].to_numpy(float))
    assert adata.obs["Metadata_Cells_ObjectNumber"].tolist() == df["Cells_Number_Object_Number"].tolist()
    assert adata.uns["imgprof"]["level"] == "single_cell"
    # All columns are kept when ids stay features (CytoTable's and pycytominer's choice).
    raw = ip.io.read_cytotable(path, ids_to_obs=False)
    assert raw.n_obs == 289 and raw.n_vars + raw.obs.shape[1] == df.shape[1]
    assert "Cells_Number_Object_Number" in raw.var_names


def test_read_cytotable_folder_and_image_features(tmp_path):
    df = pd.read_parquet(shared(*CYTOTABLE))
    df["Image_Count_Cells"] = 289
    (tmp_path / "ds").mkdir()
    df.iloc[:100].to_parquet(tmp_path / "ds" / "part0.parquet")
    df.iloc[100:].to_parquet(tmp_path / "ds" / "part1.parquet")
    adata = ip.io.read_cytotable(tmp_path / "ds")
    assert adata.n_obs == 289 and "Image_Count_Cells" in adata.obs.columns
    with_image = ip.io.read_cytotable(tmp_path / "ds", image_features=True)
    assert "Image_Count_Cells" in with_image.var_names
    assert "Image_FileName_DNA" in with_image.obs.columns


def test_read_cytotable_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        ip.io.read_cytotable(tmp_path / "missing.parquet")
    header_only = tmp_path / "header.parquet"
    pd.read_parquet(shared(*CYTOTABLE)).iloc[:0].to_parquet(header_only)
    with pytest.raises(ValueError, match="header.parquet: the table has a header but no rows"):
        ip.io.read_cytotable(header_only)
    meta_only = tmp_path / "meta.parquet"
    pd.DataFrame({"Metadata_Well": ["A01"], "Metadata_ObjectNumber": [1]}).to_parquet(meta_only)
    with pytest.raises(ValueError, match="meta.parquet: no feature column"):
        ip.io.read_cytotable(meta_only)
    dup = tmp_path / "dup.parquet"
    names = ["Cells_AreaShape_Area", "Cells_AreaShape_Area", "Metadata_Well"]
    pq.write_table(pa.table([[1.0], [2.0], ["A01"]], names=names), dup)
    with pytest.raises(ValueError, match=r"dup.parquet: duplicated column name.*Cells_AreaShape_Area"):
        ip.io.read_cytotable(dup)
    text = tmp_path / "notes.xlsx"
    text.write_text("x")
    with pytest.raises(ValueError, match="notes.xlsx: expected a CytoTable"):
        ip.io.read_cytotable(text)


# ---------------------------------------------------------------------------------------------
# DeepProfiler
# ---------------------------------------------------------------------------------------------


def test_read_deepprofiler_matches_pycytominer():
    from pycytominer.cyto_utils.load import load_npz_features

    path = shared(*NPZ)
    adata = ip.io.read_deepprofiler(path)
    ref = load_npz_features(str(path))
    feats = [c for c in ref.columns if not c.startswith("Metadata_")]
    assert adata.shape == (206, 50)
    assert list(adata.var_names) == feats == [f"cnn_{i}" for i in range(50)]
    np.testing.assert_array_equal(adata.X, ref[feats].to_numpy())
    assert adata.X.dtype == np.float32
    for col in ("Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_Model"):
        assert adata.obs[col].tolist() == ref[col].tolist()
    assert set(adata.var["source"]) == {"embedding"}
    assert adata.obs_names[0] == "Week1_22123_B02_s1_0"
    assert adata.uns["imgprof"]["level"] == "single_cell"


def _npz(path, X, metadata=None, locations=None):
    arrays = {"features": X}
    if metadata is not None:
        arrays["metadata"] = np.array(metadata, dtype=object)
    if locations is not None:
        arrays["locations"] = locations
    np.savez(path, **arrays)
    return path


def test_read_deepprofiler_folder_parses_file_names(tmp_path):
    rng = np.random.default_rng(0)
    for plate, well, site, n in (("P1", "A01", "1", 3), ("P1", "A02", "2", 4), ("P2", "B03", "1", 5)):
        (tmp_path / plate).mkdir(exist_ok=True)
        _npz(tmp_path / plate / f"{well}_{site}.npz", rng.normal(size=(n, 6)), locations=rng.uniform(0, 100, size=(n, 2)))
    shutil.copy(shared(*NPZ), tmp_path / "ignored.txt")
    adata = ip.io.read_deepprofiler(tmp_path)
    assert adata.shape == (12, 6)
    assert list(adata.var_names) == [f"DP_{i}" for i in range(6)]  # pycytominer's fallback prefix
    counts = adata.obs.groupby(["Metadata_Plate", "Metadata_Well", "Metadata_Site"]).size().to_dict()
    assert counts == {("P1", "A01", "1"): 3, ("P1", "A02", "2"): 4, ("P2", "B03", "1"): 5}
    assert adata.obs["Metadata_Location_Center_X"].between(0, 100).all()
    slash = ip.io.read_deepprofiler(sorted(tmp_path.rglob("*.npz")), feature_prefix="emb", filename_delimiter="_")
    assert list(slash.var_names)[:2] == ["emb_0", "emb_1"]


def test_read_deepprofiler_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file matching"):
        ip.io.read_deepprofiler(tmp_path)
    junk = tmp_path / "j.npz"
    junk.write_text("not a zip")
    with pytest.raises(ValueError, match="j.npz: not a readable .npz"):
        ip.io.read_deepprofiler(junk)
    no_feat = tmp_path / "nf.npz"
    np.savez(no_feat, other=np.zeros((2, 2)))
    with pytest.raises(KeyError, match=r"nf.npz: no 'features' array.*other"):
        ip.io.read_deepprofiler(no_feat)
    a = _npz(tmp_path / "P_A01_1.npz", np.zeros((2, 4)))
    b = _npz(tmp_path / "P_A01_2.npz", np.zeros((2, 5)))
    with pytest.raises(ValueError, match="P_A01_2.npz: 5 features"):
        ip.io.read_deepprofiler([a, b])
    bad_meta = _npz(tmp_path / "m.npz", np.zeros((2, 3)), metadata={"Well": ["A01", "A02", "A03"]})
    with pytest.raises(ValueError, match="m.npz: metadata field 'Well' has 3 values for 2 cells"):
        ip.io.read_deepprofiler(bad_meta)


# ---------------------------------------------------------------------------------------------
# Generic embeddings
# ---------------------------------------------------------------------------------------------


def test_read_embeddings_array_frame_and_file(tmp_path):
    dp = ip.io.read_deepprofiler(shared(*NPZ))
    obs = dp.obs[["Metadata_Plate", "Metadata_Well"]].reset_index(drop=True)
    emb = ip.io.read_embeddings(np.asarray(dp.X), obs=obs, prefix="cnn")
    np.testing.assert_array_equal(emb.X, dp.X)
    assert list(emb.var_names) == list(dp.var_names)
    frame = pd.DataFrame(np.asarray(dp.X))
    frame.insert(0, "Metadata_Well", "B02")
    from_frame = ip.io.read_embeddings(frame, prefix="x")
    assert from_frame.var_names[0] == "x_0" and from_frame.obs.columns.tolist() == ["Metadata_Well"]
    path = tmp_path / "emb.parquet"
    df = ip.io.to_pandas(dp)
    df["id"] = np.arange(len(df))  # a metadata column without the Metadata_ prefix
    df.to_parquet(path)
    from_file = ip.io.read_embeddings(path, prefix="cnn_")
    assert from_file.n_vars == 50 and "id" in from_file.obs.columns
    with pytest.raises(ValueError, match="no column starts with prefix='zzz'"):
        ip.io.read_embeddings(path, prefix="zzz")
    with pytest.raises(ValueError, match="obs has 3 rows, the array 206"):
        ip.io.read_embeddings(np.asarray(dp.X), obs=obs.iloc[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dp.write_h5ad(tmp_path / "dp.h5ad")  # unique embedding names write fine
