"""ip.pp.annotate: plate-map joins with pycytominer.annotate semantics, and loud failures instead of silent drops."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import imgprof as ip

pycytominer = pytest.importorskip("pycytominer")

PLATEMAP_COLS = [
    "Metadata_plate_map_name", "Metadata_broad_sample", "Metadata_mg_per_ml", "Metadata_mmoles_per_liter",
    "Metadata_solvent", "Metadata_pert_id", "Metadata_pert_type", "Metadata_moa", "Metadata_target",
]


@pytest.fixture
def plate(lincs):
    """The real LINCS plate split into a LINCS-style plate map (no prefix, ``well_position``) and bare profiles."""
    pm = lincs.obs[PLATEMAP_COLS + ["Metadata_Well"]].copy()
    pm.columns = [c.removeprefix("Metadata_") for c in pm.columns]
    pm = pm.rename(columns={"Well": "well_position"}).sample(frac=1.0, random_state=0).reset_index(drop=True)
    bare = lincs[:, :].copy()
    bare.obs = bare.obs.drop(columns=PLATEMAP_COLS)
    return bare, pm


def test_parity_with_pycytominer_tsv_platemap(plate, lincs, tmp_path):
    bare, pm = plate
    path = tmp_path / "C-7161-01-LM6-027.txt"
    pm.to_csv(path, sep="\t", index=False)
    before = path.read_bytes()
    ours = ip.pp.annotate(bare, path, join_on=["Metadata_well_position", "Metadata_Well"], copy=True)
    assert path.read_bytes() == before  # input file untouched
    ref = pycytominer.annotate(ip.io.to_pandas(bare), str(path), join_on=["Metadata_well_position", "Metadata_Well"])
    o = ip.io.to_pandas(ours).set_index("Metadata_Well")
    r = ref.set_index("Metadata_Well").loc[o.index]
    assert set(r.columns) == set(o.columns)  # same columns (pycytominer orders rows by plate map)
    for c in PLATEMAP_COLS:
        pd.testing.assert_series_equal(o[c], r[c], check_dtype=False, check_names=False)
    feats = list(lincs.var_names)
    np.testing.assert_array_equal(o[feats].to_numpy(), r[feats].to_numpy())
    # and the plate map went back where it came from
    for c in PLATEMAP_COLS:
        pd.testing.assert_series_equal(ours.obs[c], lincs.obs[c], check_dtype=False, check_categorical=False)
    assert ours.obs_names.equals(bare.obs_names)  # row order kept
    step = ip.provenance(ours).iloc[-1]
    assert step["function"] == "pp.annotate" and step["extra"]["n_unmatched"] == 0


def test_dataframe_platemap_in_place_and_collision_suffix(plate):
    bare, pm = plate
    pm = pm.assign(Plate="from_platemap")  # collides with the profiles' Metadata_Plate
    orig = pm.copy()
    assert ip.pp.annotate(bare, pm, join_on=["Metadata_well_position", "Metadata_Well"]) is None
    pd.testing.assert_frame_equal(pm, orig)  # caller's DataFrame not modified
    assert (bare.obs["Metadata_Plate_platemap"] == "from_platemap").all()
    assert (bare.obs["Metadata_Plate"] == "SQ00015054").all()
    ref = pycytominer.annotate(ip.io.to_pandas(bare.copy()), orig, join_on=["Metadata_well_position", "Metadata_Well"])
    assert "Metadata_Plate_platemap" in ref.columns


def test_plate_and_well_join(lincs):
    two = ad.concat(
        {"p1": lincs, "p2": lincs}, label="_src", index_unique="-", merge="first", uns_merge="first"
    )
    two.obs["Metadata_Plate"] = two.obs["_src"].astype(str)
    two.obs = two.obs.drop(columns=["_src", "Metadata_moa"])
    pm = lincs.obs[["Metadata_Well", "Metadata_moa"]].rename(columns={"Metadata_Well": "well_position", "Metadata_moa": "moa"})
    pm = pd.concat([pm.assign(plate="p1"), pm.assign(plate="p2", moa="swapped")], ignore_index=True)
    ip.pp.annotate(
        two, pm, join_on=[["Metadata_plate", "Metadata_well_position"], ["Metadata_Plate", "Metadata_Well"]]
    )
    p2 = two.obs["Metadata_Plate"] == "p2"
    assert (two.obs.loc[p2, "Metadata_moa"] == "swapped").all()
    np.testing.assert_array_equal(
        two.obs.loc[~p2, "Metadata_moa"].astype(object).fillna("-").to_numpy(),
        lincs.obs["Metadata_moa"].astype(object).fillna("-").to_numpy(),
    )
    assert "Metadata_plate" not in two.obs.columns  # plate-map keys dropped, as pycytominer


def test_unmatched_profiles_raise_keep_or_drop(plate):
    bare, pm = plate
    short = pm[~pm["well_position"].isin(["A01", "B02"])]
    with pytest.raises(ValueError, match="2 of 384 profile"):
        ip.pp.annotate(bare, short, join_on=["Metadata_well_position", "Metadata_Well"], copy=True)
    with pytest.warns(UserWarning, match="no plate-map row"):
        kept = ip.pp.annotate(bare, short, join_on=["Metadata_well_position", "Metadata_Well"], unmatched="keep", copy=True)
    assert kept.n_obs == 384 and kept.obs.loc[kept.obs["Metadata_Well"] == "A01", "Metadata_moa"].isna().all()
    with pytest.warns(UserWarning, match="removed"):
        dropped = ip.pp.annotate(bare, short, join_on=["Metadata_well_position", "Metadata_Well"], unmatched="drop", copy=True)
    assert dropped.n_obs == 382 and dropped.X.shape == (382, bare.n_vars)
    assert ip.provenance(dropped)["extra"].iloc[-1]["n_dropped"] == 2


def test_duplicated_platemap_keys_raise(plate):
    bare, pm = plate
    dup = pd.concat([pm, pm.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="share a key"):
        ip.pp.annotate(bare, dup, join_on=["Metadata_well_position", "Metadata_Well"])


def test_missing_keys_and_files(plate, tmp_path):
    bare, pm = plate
    with pytest.raises(KeyError, match="Metadata_well_positon"):
        ip.pp.annotate(bare, pm, join_on=["Metadata_well_positon", "Metadata_Well"])
    with pytest.raises(KeyError, match="Metadata_Wel"):
        ip.pp.annotate(bare, pm, join_on=["Metadata_well_position", "Metadata_Wel"])
    with pytest.raises(FileNotFoundError):
        ip.pp.annotate(bare, tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="together"):
        ip.pp.annotate(bare, pm, join_on=["Metadata_well_position", "Metadata_Well"], external_metadata=pm)


def test_external_metadata_left_join_like_pycytominer(plate, tmp_path):
    bare, pm = plate
    qc = pd.DataFrame({"Metadata_Well": ["A01", "A02", "A03"], "qc_flag": [True, False, True]})
    path = tmp_path / "qc.csv"
    qc.to_csv(path, index=False)
    with pytest.warns(UserWarning, match="381 of 384"):
        out = ip.pp.annotate(
            bare, pm, join_on=["Metadata_well_position", "Metadata_Well"], external_metadata=path,
            external_join_on="Metadata_Well", copy=True,
        )
    ref = pycytominer.annotate(
        ip.io.to_pandas(bare), pm, join_on=["Metadata_well_position", "Metadata_Well"], external_metadata=qc,
        external_join_on=["Metadata_Well"],
    )
    o = out.obs.set_index("Metadata_Well")["Metadata_qc_flag"]
    r = ref.set_index("Metadata_Well")["Metadata_qc_flag"].loc[o.index]
    assert o.astype(object).fillna("-").tolist() == r.astype(object).fillna("-").tolist()
    with pytest.raises(ValueError, match="share a key"):
        ip.pp.annotate(
            bare, pm, join_on=["Metadata_well_position", "Metadata_Well"],
            external_metadata=pd.concat([qc, qc]), external_join_on="Metadata_Well",
        )


def test_clean_cellprofiler_renames_image_metadata():
    df = pd.DataFrame({"Image_Metadata_Well": ["A01", "A02"], "Metadata_x": [1, 2], "Cells_a": [1.0, 2.0]})
    adata = ip.io.from_pandas(df, metadata=["Image_Metadata_Well", "Metadata_x"])
    ip.pp.annotate(adata, pd.DataFrame({"well": ["A01", "A02"], "dose": [1, 2]}), join_on=["Metadata_well", "Image_Metadata_Well"])
    assert "Metadata_Well" in adata.obs.columns and adata.obs["Metadata_dose"].tolist() == [1, 2]
