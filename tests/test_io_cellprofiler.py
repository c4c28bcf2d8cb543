"""ip.io.read_cellprofiler on real CellProfiler outputs, checked against pycytominer and CytoTable."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import shared

import imgprof as ip

EXAMPLEHUMAN = ("cytotable", "ExampleHuman")
TARGET2 = ("pycytominer", "cellprofiler_csv", "BR00121431-A02-1")
SQ_SQLITE = ("pycytominer", "sqlite", "test_SQ00014613.sqlite")
SQ_EXPECTED = ("pycytominer", "sqlite", "test_SQ00014613.csv.gz")
NF1_SQLITE = ("cytotable", "NF1_SchwannCell", "all_cellprofiler.sqlite")
CYTOTABLE_PARQUET = ("pycytominer", "cytotable", "examplehuman_joined_profiles.parquet")

# pycytominer column -> imgprof column (ids pycytominer keeps as features or names by merge suffix).
PYCYTOMINER_TO_IMGPROF = {
    "Image_Metadata_Plate": "Metadata_Plate",
    "Image_Metadata_Well": "Metadata_Well",
    "Metadata_ObjectNumber_cytoplasm": "Metadata_ObjectNumber",
    "Metadata_ObjectNumber_cells": "Metadata_Cells_ObjectNumber",
    "Metadata_ObjectNumber": "Metadata_Nuclei_ObjectNumber",
    "Cytoplasm_Number_Object_Number": "Metadata_ObjectNumber",
    "Cells_Number_Object_Number": "Metadata_Cells_ObjectNumber",
    "Nuclei_Number_Object_Number": "Metadata_Nuclei_ObjectNumber",
    "Metadata_Cells_Number_Object_Number": "Metadata_Cells_ObjectNumber",
    "Metadata_Nuclei_Number_Object_Number": "Metadata_Nuclei_ObjectNumber",
    "Cells_Parent_Nuclei": "Metadata_Cells_Parent_Nuclei",
}


def _assert_same_columns(ref: pd.DataFrame, mine: pd.DataFrame, *, rtol: float = 0.0):
    """Every column of the reference has an equal column in ours (same rows, same order)."""
    assert len(ref) == len(mine)
    for col in ref.columns:
        ours = PYCYTOMINER_TO_IMGPROF.get(col, col)
        assert ours in mine.columns, f"{col} ({ours}) missing"
        x, y = ref[col], mine[ours]
        if col == "Metadata_TableNumber" or not pd.api.types.is_numeric_dtype(y):
            assert x.astype(str).tolist() == y.astype(str).tolist(), col
        else:
            np.testing.assert_allclose(
                pd.to_numeric(x).to_numpy(float), y.to_numpy(float), rtol=rtol, atol=0, equal_nan=True, err_msg=col
            )


def _single_cells(sql_path, **kwargs) -> pd.DataFrame:
    from pycytominer.cyto_utils.cells import SingleCells

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SingleCells(f"sqlite:///{sql_path}", **kwargs).merge_single_cells()


# ---------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------


def test_examplehuman_csv_folder():
    adata = ip.io.read_cellprofiler(shared(*EXAMPLEHUMAN))
    assert adata.n_obs == 289
    assert adata.uns["imgprof"]["level"] == "single_cell"
    raw = {c: pd.read_csv(shared(*EXAMPLEHUMAN, f"{c}.csv.gz")) for c in ("Cells", "Cytoplasm", "Nuclei")}
    # Every measurement column of each table is a feature, prefixed by its compartment.
    ids = {"ImageNumber", "ObjectNumber", "Number_Object_Number"}
    for comp, df in raw.items():
        expected = {f"{comp}_{c}" for c in df.columns if c not in ids and not c.startswith("Parent_")}
        assert expected == {v for v in adata.var_names if v.startswith(f"{comp}_")}
        assert set(adata.var.loc[list(expected), "compartment"]) == {comp}
    # Values: cell k of image 1 is row k of Cells.csv (ExampleHuman objects are numbered alike).
    cells = raw["Cells"].set_index("ObjectNumber").loc[adata.obs["Metadata_Cells_ObjectNumber"].to_numpy()]
    np.testing.assert_array_equal(adata[:, "Cells_AreaShape_Area"].X.ravel(), cells["AreaShape_Area"].to_numpy())
    # Linking and image metadata land in .obs.
    assert (adata.obs["Metadata_Cytoplasm_Parent_Cells"] == adata.obs["Metadata_Cells_ObjectNumber"]).all()
    assert adata.obs["Metadata_FileName_DNA"].iloc[0] == "AS_09125_050116030001_D03f00d0.tif"
    assert adata.obs["Metadata_ImageNumber"].eq(1).all()


def test_bundled_examplehuman_loader_matches_shared_copy():
    bundled = ip.datasets.examplehuman_cells()
    direct = ip.io.read_cellprofiler(shared(*EXAMPLEHUMAN))
    assert bundled.shape == (289, direct.n_vars)
    np.testing.assert_array_equal(bundled.X, direct.X)


def test_target2_site_folder():
    adata = ip.io.read_cellprofiler(shared(*TARGET2))
    assert adata.n_obs == 36
    obs = adata.obs
    assert obs["Metadata_Plate"].eq("BR00121431").all() and obs["Metadata_Well"].eq("A02").all()
    assert obs["Metadata_Site"].eq(1).all()
    n = {c: pd.read_csv(shared(*TARGET2, f"{c}.csv.gz"), nrows=1).shape[1] for c in ("Cells", "Cytoplasm", "Nuclei")}
    # Cells: ImageNumber, ObjectNumber, Number_Object_Number, Parent_Nuclei are ids; Cytoplasm has two parents.
    assert adata.n_vars == (n["Cells"] - 4) + (n["Cytoplasm"] - 5) + (n["Nuclei"] - 3)
    assert not adata.var_names.str.contains("Parent_|Number_Object_Number").any()


def test_sqlite_cytominer_database_matches_pycytominer_and_expected_file():
    sql = shared(*SQ_SQLITE)
    adata = ip.io.read_cellprofiler(sql)
    mine = ip.io.to_pandas(adata)
    ref = _single_cells(sql, strata=["Image_Metadata_Plate", "Image_Metadata_Well"], image_cols=["TableNumber", "ImageNumber"])
    _assert_same_columns(ref, mine)
    # Same feature set: pycytominer's features minus the id columns imgprof keeps in .obs.
    ref_feats = {c for c in ref.columns if c.startswith(("Cells_", "Cytoplasm_", "Nuclei_"))}
    moved = {c for c in ref_feats if PYCYTOMINER_TO_IMGPROF.get(c, c).startswith("Metadata_")}
    assert set(adata.var_names) == ref_feats - moved
    expected = pd.read_csv(shared(*SQ_EXPECTED))
    _assert_same_columns(expected, mine, rtol=1e-12)


def test_sqlite_export_to_database_matches_pycytominer(tmp_path):
    src = shared(*NF1_SQLITE)
    adata = ip.io.read_cellprofiler(src)
    assert adata.n_obs == 242
    summary = ip.provenance(adata)["extra"].iloc[-1]["sources"][0]
    assert summary["n_objects"] == {"Cells": 242, "Cytoplasm": 242, "Nuclei": 433}
    assert summary["unreferenced"]["Nuclei"] == 433 - 242  # nuclei without a cell are reported, not hidden
    # pycytominer cannot name Per_* tables: give it views on a copy (the input stays untouched).
    copy = tmp_path / "copy.sqlite"
    shutil.copy(src, copy)
    with sqlite3.connect(copy) as con:
        for t in ("Image", "Cells", "Cytoplasm", "Nuclei"):
            con.execute(f"CREATE VIEW {t.lower()} AS SELECT * FROM Per_{t}")
    link = {
        "cytoplasm": {"cells": "Cytoplasm_Parent_Cells", "nuclei": "Cytoplasm_Parent_Nuclei"},
        "cells": {"cytoplasm": "Cells_Number_Object_Number"},
        "nuclei": {"cytoplasm": "Nuclei_Number_Object_Number"},
    }
    ref = _single_cells(
        copy, strata=["Image_Metadata_Plate", "Image_Metadata_Well"], image_cols=["ImageNumber"], merge_cols=["ImageNumber"],
        compartment_linking_cols=link,
    )
    _assert_same_columns(ref, ip.io.to_pandas(adata))


def test_csv_reader_matches_cytotable_output():
    cp = ip.io.read_cellprofiler(shared(*EXAMPLEHUMAN))
    ct = ip.io.read_cytotable(shared(*CYTOTABLE_PARQUET))
    # CytoTable moves the anchor's bounding box into Metadata_SourceBBox*; everything else is shared.
    only_cp = set(cp.var_names) - set(ct.var_names)
    assert only_cp == {f"Cytoplasm_AreaShape_BoundingBox{m}_{a}" for m in ("Maximum", "Minimum") for a in "XY"}
    assert set(ct.var_names) <= set(cp.var_names)
    key = ["Metadata_ImageNumber", "Metadata_ObjectNumber"]
    assert cp.obs[key].to_numpy().tolist() == ct.obs[key].to_numpy().tolist()
    common = list(ct.var_names)
    np.testing.assert_array_equal(cp[:, common].X, ct[:, common].X)  # CytoTable parses floats exactly, as we do
    for col in ("Metadata_Cytoplasm_Parent_Cells", "Metadata_Cytoplasm_Parent_Nuclei", "Metadata_Cells_Parent_Nuclei"):
        assert cp.obs[col].tolist() == ct.obs[col].tolist()
    bbox = ct.obs["Metadata_SourceBBoxXMin"].to_numpy()
    np.testing.assert_array_equal(bbox, cp[:, "Cytoplasm_AreaShape_BoundingBoxMinimum_X"].X.ravel())


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


def _copy_folder(src, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        shutil.copy(p, dst / p.name)
    return dst


def test_several_site_folders_are_concatenated(tmp_path):
    src = shared(*TARGET2)
    for name in ("site1", "site2"):
        _copy_folder(src, tmp_path / "plate" / name)
    adata = ip.io.read_cellprofiler(tmp_path / "plate")
    assert adata.n_obs == 72
    assert adata.obs["Metadata_TableNumber"].value_counts().to_dict() == {"site1": 36, "site2": 36}
    single = ip.io.read_cellprofiler(src)
    np.testing.assert_array_equal(adata.X[:36], single.X)
    both = ip.io.read_cellprofiler([tmp_path / "plate" / "site1", tmp_path / "plate" / "site2"])
    np.testing.assert_array_equal(both.X, adata.X)


def test_image_features_columns_and_names(tmp_path):
    adata = ip.io.read_cellprofiler(shared(*TARGET2), image_features=["Granularity", "Count"], image_columns=["Metadata"])
    image_feats = [v for v in adata.var_names if v.startswith("Image_")]
    assert "Image_Count_Cells" in image_feats and all(v.split("_")[1] in ("Granularity", "Count") for v in image_feats)
    assert not any(c.startswith("Metadata_FileName") for c in adata.obs.columns)
    kept = ip.io.read_cellprofiler(shared(*SQ_SQLITE), rename_image_metadata=False)
    assert {"Image_Metadata_Plate", "Image_FileName_OrigDNA"} <= set(kept.obs.columns)
    everything = ip.io.read_cellprofiler(shared(*EXAMPLEHUMAN), image_columns="all")
    assert {"Metadata_Count_Cells", "Metadata_MD5Digest_DNA", "Metadata_Threshold_FinalThreshold_Cells"} <= set(everything.obs)


def test_two_compartments_and_dtype():
    adata = ip.io.read_cellprofiler(shared(*EXAMPLEHUMAN), compartments=["Cells", "Nuclei"], dtype="float32")
    assert adata.n_obs == 289 and adata.X.dtype == np.float32
    assert {v.split("_")[0] for v in adata.var_names} == {"Cells", "Nuclei"}
    assert (adata.obs["Metadata_Cells_Parent_Nuclei"] == adata.obs["Metadata_Nuclei_ObjectNumber"]).all()


def test_export_prefixed_file_names(tmp_path):
    src = shared(*EXAMPLEHUMAN)
    for p in src.glob("*.csv*"):
        shutil.copy(p, tmp_path / f"MyExpt_{p.name}")
    adata = ip.io.read_cellprofiler(tmp_path)
    assert adata.shape == ip.io.read_cellprofiler(src).shape


# ---------------------------------------------------------------------------------------------
# Bad input: every error names the file and the column at fault
# ---------------------------------------------------------------------------------------------


def _write(df: pd.DataFrame, path):
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def eh_copy(tmp_path):
    return _copy_folder(shared(*EXAMPLEHUMAN), tmp_path / "eh")


def test_missing_compartment_table(eh_copy):
    (eh_copy / "Nuclei.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"eh: no compartment file Nuclei\.csv"):
        ip.io.read_cellprofiler(eh_copy)


def test_missing_image_table(eh_copy):
    (eh_copy / "Image.csv").unlink()
    with pytest.raises(FileNotFoundError, match="Image.csv"):
        ip.io.read_cellprofiler(eh_copy)
    assert ip.io.read_cellprofiler(eh_copy, image_table=None).n_obs == 289


@pytest.mark.parametrize(("table", "column"), [("Cytoplasm", "Parent_Cells"), ("Nuclei", "ImageNumber")],
                         ids=["missing_join_key", "missing_image_number"])
def test_missing_key_column(eh_copy, table, column):
    frame = pd.read_csv(eh_copy / f"{table}.csv.gz").drop(columns=column)
    (eh_copy / f"{table}.csv.gz").unlink()
    _write(frame, eh_copy / f"{table}.csv")
    with pytest.raises(KeyError, match=rf"{table}\.csv.*'{column}'"):
        ip.io.read_cellprofiler(eh_copy)


def test_mismatched_object_counts(eh_copy):
    cells = pd.read_csv(eh_copy / "Cells.csv.gz").iloc[:250]
    (eh_copy / "Cells.csv.gz").unlink()
    _write(cells, eh_copy / "Cells.csv")
    with pytest.raises(ValueError, match=r"39 of 289 Cytoplasm object\(s\).*Cells\.csv.*Cytoplasm_Parent_Cells"):
        ip.io.read_cellprofiler(eh_copy)
    left = ip.io.read_cellprofiler(eh_copy, join="left")
    assert left.n_obs == 289
    missing = np.isnan(left[:, "Cells_AreaShape_Area"].X.ravel())
    assert missing.sum() == 39 and not np.isnan(left[:, "Nuclei_AreaShape_Area"].X).any()
    inner = ip.io.read_cellprofiler(eh_copy, strict=False)
    assert inner.n_obs == 250
    assert ip.provenance(inner)["extra"].iloc[-1]["sources"][0]["unmatched_anchor"] == {"Cells": 39}


def test_objects_of_unknown_image(eh_copy):
    nuc = pd.read_csv(eh_copy / "Nuclei.csv.gz")
    cyto = pd.read_csv(eh_copy / "Cytoplasm.csv.gz")
    cells = pd.read_csv(eh_copy / "Cells.csv.gz")
    for name, df in (("Nuclei", nuc), ("Cytoplasm", cyto), ("Cells", cells)):
        df["ImageNumber"] = 2
        (eh_copy / f"{name}.csv.gz").unlink()
        _write(df, eh_copy / f"{name}.csv")
    with pytest.raises(ValueError, match=r"absent from the image table .*Image\.csv"):
        ip.io.read_cellprofiler(eh_copy)


def test_duplicated_objects(eh_copy):
    cells = pd.read_csv(eh_copy / "Cells.csv.gz")
    cells = pd.concat([cells, cells.iloc[:2]])
    (eh_copy / "Cells.csv.gz").unlink()
    _write(cells, eh_copy / "Cells.csv")
    with pytest.raises(ValueError, match=r"Cells\.csv: 2 duplicated object key"):
        ip.io.read_cellprofiler(eh_copy)


def test_empty_and_header_only_tables(eh_copy):
    (eh_copy / "Nuclei.csv.gz").unlink()
    (eh_copy / "Nuclei.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"Nuclei\.csv: the file is empty"):
        ip.io.read_cellprofiler(eh_copy)
    with gzip.open(shared(*EXAMPLEHUMAN, "Nuclei.csv.gz"), "rt") as fh:
        header = fh.readline()
    (eh_copy / "Nuclei.csv").write_text(header)
    with pytest.raises(ValueError, match=r"Nuclei\.csv: the table has a header but no rows"):
        ip.io.read_cellprofiler(eh_copy)


def test_non_numeric_measurement(eh_copy):
    cells = pd.read_csv(eh_copy / "Cells.csv.gz")
    cells["AreaShape_Area"] = "big"
    (eh_copy / "Cells.csv.gz").unlink()
    _write(cells, eh_copy / "Cells.csv")
    with pytest.raises(TypeError, match=r"Cells\.csv.*Cells_AreaShape_Area.*not numeric"):
        ip.io.read_cellprofiler(eh_copy)


def test_duplicated_column_names(eh_copy):
    with gzip.open(eh_copy / "Nuclei.csv.gz", "rt") as fh:
        text = fh.read().splitlines()
    header = text[0].split(",")
    header[-1] = header[-2]
    (eh_copy / "Nuclei.csv.gz").unlink()
    (eh_copy / "Nuclei.csv").write_text("\n".join([",".join(header), *text[1:]]) + "\n")
    with pytest.raises(ValueError, match=rf"Nuclei\.csv: duplicated column name.*{header[-1]}"):
        ip.io.read_cellprofiler(eh_copy)


def test_table_number_in_some_tables_only(eh_copy):
    cells = pd.read_csv(eh_copy / "Cells.csv.gz")
    cells = pd.concat([pd.DataFrame({"TableNumber": 1}, index=cells.index), cells], axis=1)
    (eh_copy / "Cells.csv.gz").unlink()
    _write(cells, eh_copy / "Cells.csv")
    with pytest.raises(KeyError, match=r"'TableNumber' is missing from .*Cytoplasm"):
        ip.io.read_cellprofiler(eh_copy)


def test_not_a_cellprofiler_output(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        ip.io.read_cellprofiler(tmp_path / "nope")
    table = shared("lincs", "SQ00015054_normalized_feature_select.csv.gz")
    with pytest.raises(ValueError, match="not a SQLite database.*read_profiles"):
        ip.io.read_cellprofiler(table)
    with sqlite3.connect(tmp_path / "other.sqlite") as con:
        con.execute("CREATE TABLE Image (ImageNumber INTEGER)")
    with pytest.raises(KeyError, match=r"other\.sqlite: no compartment table 'Cells'.*\['Image'\]"):
        ip.io.read_cellprofiler(tmp_path / "other.sqlite")
    with pytest.raises(ValueError, match="join must be"):
        ip.io.read_cellprofiler(shared(*EXAMPLEHUMAN), join="outer")
    with pytest.raises(ValueError, match="no default way to link"):
        ip.io.read_cellprofiler(shared(*EXAMPLEHUMAN), compartments=["Cells", "Cytoplasm"])


def test_inputs_are_never_written(tmp_path):
    paths = [shared(*SQ_SQLITE), shared(*NF1_SQLITE), *shared(*EXAMPLEHUMAN).iterdir()]
    # Work on writable copies so that a write would be possible (the shared files are read-only).
    copies = []
    for p in paths:
        dst = tmp_path / p.parent.name / p.name
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(p, dst)
        copies.append(dst)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in copies}
    ip.io.read_cellprofiler(tmp_path / "sqlite" / SQ_SQLITE[-1])
    ip.io.read_cellprofiler(tmp_path / "NF1_SchwannCell" / NF1_SQLITE[-1])
    ip.io.read_cellprofiler(tmp_path / "ExampleHuman")
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in copies}
    assert before == after
    assert sorted(q.name for q in (tmp_path / "sqlite").iterdir()) == [SQ_SQLITE[-1]]  # no journal left behind


def test_sqlite_null_runs_stay_numeric(tmp_path):
    # SQLite is read in chunks; a measurement NULL throughout the first chunk must stay numeric.
    from imgprof.io._cp_tables import _SQL_CHUNK

    n = 2 * _SQL_CHUNK + 5
    values = np.r_[np.full(_SQL_CHUNK + 3, np.nan), np.arange(n - _SQL_CHUNK - 3, dtype=float)]
    with sqlite3.connect(tmp_path / "t.sqlite") as con:
        pd.DataFrame({"ImageNumber": [1], "Image_Metadata_Well": ["A01"]}).to_sql("Image", con, index=False)
        for comp in ("Cells", "Cytoplasm", "Nuclei"):
            df = pd.DataFrame({"ImageNumber": 1, "ObjectNumber": np.arange(1, n + 1), f"{comp}_AreaShape_Area": values})
            if comp == "Cytoplasm":
                df["Cytoplasm_Parent_Cells"] = df["Cytoplasm_Parent_Nuclei"] = df["ObjectNumber"]
            df.to_sql(comp, con, index=False)
    adata = ip.io.read_cellprofiler(tmp_path / "t.sqlite")
    assert adata.shape == (n, 3) and adata.obs["Metadata_Well"].eq("A01").all()
    np.testing.assert_array_equal(adata[:, "Cells_AreaShape_Area"].X.ravel(), values)


def _single_object_table_db(tmp_path):
    """The NF1 database rewritten as ExportToDatabase's "single object table" (Per_Image + Per_Object)."""
    con = sqlite3.connect(shared(*NF1_SQLITE))
    try:
        tables = {t: pd.read_sql(f"select * from Per_{t}", con) for t in ("Cells", "Cytoplasm", "Nuclei", "Image")}
    finally:
        con.close()
    obj = None
    for comp in ("Nuclei", "Cells", "Cytoplasm"):  # one row per object number, NULL where a compartment has none
        t = tables[comp]
        t = t.assign(ObjectNumber=t[f"{comp}_Number_Object_Number"])
        obj = t if obj is None else obj.merge(t, on=["ImageNumber", "ObjectNumber"], how="outer")
    db = tmp_path / "single_object_table.sqlite"
    con = sqlite3.connect(db)
    try:
        tables["Image"].to_sql("Per_Image", con, index=False)
        obj.sort_values(["ImageNumber", "ObjectNumber"]).to_sql("Per_Object", con, index=False)
    finally:
        con.close()
    return db, len(tables["Nuclei"]), len(tables["Cells"])


def test_sqlite_single_object_table_reads_like_separate_tables(tmp_path):
    db, n_nuclei, n_cells = _single_object_table_db(tmp_path)
    assert n_nuclei > n_cells  # rows without a cell exist: they must not become cells
    ref = ip.io.read_cellprofiler(shared(*NF1_SQLITE))
    out = ip.io.read_cellprofiler(db)
    assert list(out.var_names) == list(ref.var_names)
    np.testing.assert_array_equal(out.X, ref.X)
    pd.testing.assert_frame_equal(out.obs.reset_index(drop=True), ref.obs.reset_index(drop=True))
    with pytest.raises(KeyError, match="Mito"):
        ip.io.read_cellprofiler(db, compartments=["Cells", "Mito"], linking={"Cells": {"Mito": "Cells_Parent_Mito"}})
