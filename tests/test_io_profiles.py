"""Profile tables ↔ AnnData: exact round trips on real data, file formats, and every bad input."""

from __future__ import annotations

import gzip
import re
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import shared

import imgprof as ip

LINCS = ("lincs", "SQ00015054_normalized_feature_select.csv.gz")
CMQTL = ("cmqtl", "2022_09_07_Batch8_cmQTL_CRISPRi_plate1_normalized_feature_select_batch.csv.gz")
NELISA = ("nelisa", "nelisa_profiles.parquet")


def _read(parts) -> pd.DataFrame:
    p = shared(*parts)
    return pd.read_parquet(p) if p.name.endswith(".parquet") else pd.read_csv(p)


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parts", [LINCS, CMQTL, NELISA], ids=["lincs", "cmqtl", "nelisa"])
def test_from_pandas_to_pandas_is_exact(parts):
    df = _read(parts)
    adata = ip.io.from_pandas(df)
    meta = [c for c in df.columns if c.startswith("Metadata_")]
    assert list(adata.obs.columns) == meta
    assert adata.n_vars == df.shape[1] - len(meta)
    back = ip.io.to_pandas(adata)
    pd.testing.assert_frame_equal(back, df, check_exact=True)  # columns, order, dtypes, values, index


@pytest.mark.parametrize("parts", [LINCS, CMQTL, NELISA], ids=["lincs", "cmqtl", "nelisa"])
def test_h5ad_round_trip_is_exact(parts, tmp_path):
    df = _read(parts)
    ip.io.write_profiles(ip.io.from_pandas(df), tmp_path / "p.h5ad")
    back = ip.io.read_profiles(tmp_path / "p.h5ad")
    pd.testing.assert_frame_equal(ip.io.to_pandas(back), df, check_exact=True)
    assert back.uns["imgprof"]["level"] == "well"
    assert back.var["compartment"].notna().sum() == ip.io.from_pandas(df).var["compartment"].notna().sum()


def test_zarr_round_trip(tmp_path):
    df = _read(CMQTL)
    ip.io.write_profiles(ip.io.from_pandas(df), tmp_path / "p.zarr")
    pd.testing.assert_frame_equal(ip.io.to_pandas(ip.io.read_profiles(tmp_path / "p.zarr")), df, check_exact=True)


def test_zarr_refuses_case_colliding_columns(tmp_path):
    # Known anndata/zarr limitation: LINCS has Metadata_plate_map_name and Metadata_Plate_Map_Name.
    adata = ip.io.from_pandas(_read(LINCS))
    with pytest.raises(ValueError, match=r"Metadata_plate_map_name.*Metadata_Plate_Map_Name.*differ only by upper/lower case"):
        ip.io.write_profiles(adata, tmp_path / "p.zarr")
    assert not (tmp_path / "p.zarr").exists()
    adata.obs = adata.obs.rename(columns={"Metadata_plate_map_name": "Metadata_plate_map_name_lower"})
    ip.io.write_profiles(adata, tmp_path / "p.zarr")
    assert ip.io.read_profiles(tmp_path / "p.zarr").shape == adata.shape


@pytest.mark.parametrize("ext", ["csv", "csv.gz", "tsv", "parquet"])
def test_table_formats_round_trip(ext, tmp_path):
    df = _read(LINCS)
    path = tmp_path / f"p.{ext}"
    ip.io.write_profiles(ip.io.from_pandas(df), path)
    back = ip.io.read_profiles(path)
    assert back.shape == (384, 454)
    pd.testing.assert_frame_equal(ip.io.to_pandas(back), df, check_exact=ext == "parquet")
    if ext == "tsv":
        assert "\t" in path.read_text().splitlines()[0]


def test_parquet_remembers_metadata_without_prefix(tmp_path):
    df = pd.DataFrame({"Metadata_Well": ["A01", "A02"], "site_name": ["s1", "s2"], "Cells_AreaShape_Area": [1.0, 2.0]})
    adata = ip.io.from_pandas(df, metadata=["Metadata_Well", "site_name"])
    ip.io.write_profiles(adata, tmp_path / "p.parquet")
    back = ip.io.read_profiles(tmp_path / "p.parquet")
    assert list(back.obs.columns) == ["Metadata_Well", "site_name"] and list(back.var_names) == ["Cells_AreaShape_Area"]
    ip.io.write_profiles(adata, tmp_path / "p.csv")  # a CSV cannot carry that: metadata= is needed
    with pytest.raises(TypeError, match="site_name"):
        ip.io.read_profiles(tmp_path / "p.csv")
    assert ip.io.read_profiles(tmp_path / "p.csv", metadata=["Metadata_Well", "site_name"]).n_vars == 1


def test_round_trip_after_changes():
    df = _read(LINCS)
    adata = ip.io.from_pandas(df)
    sub = adata[adata.obs["Metadata_pert_type"] == "control", adata.var_names[:10]].copy()
    sub.obs["Metadata_new"] = 1
    out = ip.io.to_pandas(sub)
    meta = [c for c in df.columns if c.startswith("Metadata_")]
    assert list(out.columns) == [*meta, "Metadata_new", *adata.var_names[:10]]
    expected = df.loc[df["Metadata_pert_type"] == "control", [*meta, *adata.var_names[:10]]]
    pd.testing.assert_frame_equal(out.drop(columns="Metadata_new"), expected)


def test_dtypes_and_index_survive(tmp_path):
    df = pd.DataFrame(
        {
            "Metadata_str": ["a", np.nan, "c"],  # missing strings as read_csv gives them
            "Metadata_int": [1, 2, 3],
            "Metadata_bool": [True, False, True],
            "Metadata_Int64": pd.array([1, None, 3], dtype="Int64"),
            "Metadata_cat": pd.Categorical(["x", "y", "x"]),
            "Metadata_empty": pd.Series([None, None, None], dtype=object),
            "Cells_f32": np.float32([1, 2, 3]),
            "Cells_int": [4, 5, 6],
            "Nuclei_nan": [1.5, np.nan, 2.5],
        },
        index=pd.Index([10, 20, 30], name="row"),
    )
    adata = ip.io.from_pandas(df)
    assert adata.X.dtype == np.float64
    pd.testing.assert_frame_equal(ip.io.to_pandas(adata), df)
    ip.io.write_profiles(adata, tmp_path / "p.h5ad")
    # h5ad cannot store an object column without a single string: it comes back as NaN (not None).
    expected = df.assign(Metadata_empty=pd.Series([np.nan] * 3, index=df.index, dtype=object))
    pd.testing.assert_frame_equal(ip.io.to_pandas(ip.io.read_profiles(tmp_path / "p.h5ad")), expected)
    only32 = ip.io.from_pandas(df[["Metadata_str", "Cells_f32"]])
    assert only32.X.dtype == np.float32


def test_integer_column_labels_become_strings():
    adata = ip.io.from_pandas(pd.DataFrame(np.eye(3)), metadata=[])
    assert list(adata.var_names) == ["0", "1", "2"]


def test_simulated_data_round_trips(tmp_path):
    sim = ip.datasets.simulate(n_plates=2, n_perturbations=8, n_moa=2, n_features=20, seed=0)
    df = ip.io.to_pandas(sim)
    assert isinstance(df.index, pd.RangeIndex)
    ip.io.write_profiles(sim, tmp_path / "s.h5ad")
    pd.testing.assert_frame_equal(ip.io.to_pandas(ip.io.read_profiles(tmp_path / "s.h5ad")), df)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


#: The file readers, each with a 0-byte file it is given (the message names the file).
EMPTY_FILES = [
    *(("read_profiles", name) for name in ("e.csv", "e.csv.gz", "e.parquet", "e.tsv", "e.h5ad")),
    ("read_cellprofiler", "empty.sqlite"),
    ("read_cytotable", "empty.parquet"),
    ("read_deepprofiler", "e.npz"),
    ("read_gct", "e.gct"),
]


@pytest.mark.parametrize(("reader", "name"), EMPTY_FILES)
def test_empty_files(tmp_path, reader, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match=rf"{re.escape(name)}: the file is empty \(0 bytes\)"):
        getattr(ip.io, reader)(tmp_path / name)


def test_empty_gzip_text(tmp_path):
    with gzip.open(tmp_path / "z.csv.gz", "wt") as fh:
        fh.write("")
    with pytest.raises(ValueError, match=r"z.csv.gz: the file is empty \(no header line\)"):
        ip.io.read_profiles(tmp_path / "z.csv.gz")


def test_header_only_files(tmp_path):
    header = ",".join(_read(LINCS).columns[:5]) + "\n"
    (tmp_path / "h.csv").write_text(header)
    with pytest.raises(ValueError, match="h.csv: the table has a header but no rows"):
        ip.io.read_profiles(tmp_path / "h.csv")
    _read(LINCS).iloc[:0].to_parquet(tmp_path / "h.parquet")
    with pytest.raises(ValueError, match="h.parquet: the table has a header but no rows"):
        ip.io.read_profiles(tmp_path / "h.parquet")
    with pytest.raises(ValueError, match="DataFrame: the table has no rows"):
        ip.io.from_pandas(_read(LINCS).iloc[:0])


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        ip.io.read_profiles(tmp_path / "nothing.csv")


def test_no_metadata_or_no_features(tmp_path):
    df = _read(LINCS)
    feats = df.loc[:, ~df.columns.str.startswith("Metadata_")]
    feats.to_csv(tmp_path / "nometa.csv", index=False)
    with pytest.raises(ValueError, match=r"nometa.csv: no metadata column found.*Metadata_"):
        ip.io.read_profiles(tmp_path / "nometa.csv")
    assert ip.io.read_profiles(tmp_path / "nometa.csv", metadata=[]).shape == (384, 454)
    assert ip.io.read_profiles(tmp_path / "nometa.csv", require_metadata=False).obs.shape[1] == 0
    df.filter(like="Metadata_").to_parquet(tmp_path / "nofeat.parquet")
    with pytest.raises(ValueError, match=r"nofeat.parquet: no feature column found"):
        ip.io.read_profiles(tmp_path / "nofeat.parquet")


def test_duplicated_column_names(tmp_path):
    lines = (tmp_path / "x").parent.joinpath("d.csv")
    lines.write_text("Metadata_Well,Cells_AreaShape_Area,Cells_AreaShape_Area\nA01,1,2\n")
    with pytest.raises(ValueError, match=r"d.csv: duplicated column name\(s\) \['Cells_AreaShape_Area'\]"):
        ip.io.read_profiles(lines)
    table = pa.table([["A01"], [1.0], [2.0]], names=["Metadata_Well", "Nuclei_AreaShape_Area", "Nuclei_AreaShape_Area"])
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(ValueError, match=r"d.parquet: duplicated column name\(s\) \['Nuclei_AreaShape_Area'\]"):
        ip.io.read_profiles(tmp_path / "d.parquet")
    frame = pd.DataFrame([[1, 2.0, 3.0]], columns=["Metadata_Well", "Cells_X", "Cells_X"])
    with pytest.raises(ValueError, match=r"duplicated column name\(s\) \['Cells_X'\]"):
        ip.io.from_pandas(frame)


def test_non_numeric_features(tmp_path):
    df = _read(LINCS).head(5)
    df["Cells_AreaShape_Area"] = ["a", "b", "c", "d", "e"]
    df.to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(TypeError, match=r"s.csv: feature column\(s\) \['Cells_AreaShape_Area'\] are not numeric"):
        ip.io.read_profiles(tmp_path / "s.csv")


def test_explicit_column_lists_are_checked():
    df = _read(LINCS).head(3)
    with pytest.raises(KeyError, match=r"metadata column\(s\) \['Metadata_nope'\] not found"):
        ip.io.from_pandas(df, metadata=["Metadata_nope"])
    with pytest.raises(KeyError, match=r"feature column\(s\) \['Cells_nope'\] not found"):
        ip.io.from_pandas(df, features=["Cells_nope"])
    meta = [c for c in df.columns if c.startswith("Metadata_")]
    with pytest.raises(ValueError, match="neither metadata nor features"):
        ip.io.from_pandas(df, metadata=meta, features=[df.columns[-1]])
    with pytest.raises(ValueError, match="both metadata and features"):
        ip.io.from_pandas(df, metadata=meta, features=meta[:1])


def test_write_errors_name_the_culprit(tmp_path):
    adata = ip.io.from_pandas(_read(LINCS).head(4))
    adata.obs["Metadata_mixed"] = pd.Series([1, "a", 2.5, None], index=adata.obs_names, dtype=object)
    with pytest.raises(TypeError, match="obs column 'Metadata_mixed' mixes value types"):
        ip.io.write_profiles(adata, tmp_path / "m.h5ad")
    with pytest.raises(ValueError, match=r"p.xlsx: unknown extension"):
        ip.io.write_profiles(adata, tmp_path / "p.xlsx")


def test_inputs_are_never_modified(tmp_path):
    files = [shared(*LINCS), shared(*CMQTL), shared(*NELISA)]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    for p in files:
        adata = ip.io.read_profiles(p)
        ip.io.write_profiles(adata, tmp_path / (p.name.split(".")[0] + ".parquet"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ip.datasets.lincs_plate()
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before
