"""Bad inputs to the readers and writers of ``ip.io`` (issue #14, io and writer half).

Every case asserts the exception type, that the message names the culprit (file, column,
value or line), and that the inputs and any earlier output are byte-for-byte unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import imgprof as ip
from imgprof.io import ReadError
from imgprof.io._atomic import TMP_MARKER, atomic_path, atomic_write_text

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def tree_hash(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (or of ``root`` itself)."""
    root = Path(root)
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def assert_refused(root: Path, exc, pattern: str, func, *args, **kwargs):
    """``func(*args, **kwargs)`` raises ``exc`` matching ``pattern``, and every file under ``root`` is as it was."""
    before = tree_hash(root)
    with pytest.raises(exc, match=pattern) as info:
        func(*args, **kwargs)
    assert tree_hash(root) == before
    return info


def no_leftovers(folder: Path) -> bool:
    return not [p for p in Path(folder).iterdir() if p.name.startswith(TMP_MARKER)]


def profile_frame(n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "Metadata_Plate": ["P1"] * n,
        "Metadata_Well": [f"A{i:02d}" for i in range(1, n + 1)],
        "Cells_AreaShape_Area": rng.normal(100, 5, n).round(3),
        "Nuclei_Intensity_MeanIntensity_DNA": rng.normal(0.5, 0.1, n).round(4),
        "Cytoplasm_Texture_Contrast_RNA_3": rng.normal(2, 0.3, n).round(4),
    })


def csv_text(sep: str = ",") -> str:
    return profile_frame().to_csv(index=False, sep=sep)


def small_adata() -> ad.AnnData:
    return ip.io.from_pandas(profile_frame())


# --------------------------------------------------------------------------------------------
# bad files for read_profiles: builder(tmp_path) -> path; expected type; regex the message must match
# --------------------------------------------------------------------------------------------


def _w(tmp, name, data):
    p = tmp / name
    if isinstance(data, str):
        p.write_text(data)
    else:
        p.write_bytes(data)
    return p


def _cut_last_row(text: str, keep_fields: int = 2, sep: str = ",") -> str:
    lines = text.rstrip("\n").split("\n")
    lines[-1] = sep.join(lines[-1].split(sep)[:keep_fields])
    return "\n".join(lines)


def _short_line(text: str, line: int, sep: str = ",") -> str:
    """Drop the last two fields of one line (1-based line number, header = line 1)."""
    lines = text.split("\n")
    lines[line - 1] = sep.join(lines[line - 1].split(sep)[:-2])
    return "\n".join(lines)


def _gz_cut(text: str) -> bytes:
    blob = gzip.compress(text.encode())
    return blob[: len(blob) - 12]


def _file_bytes(tmp, suffix: str) -> bytes:
    """The bytes of a valid small parquet or h5ad file (to rename or cut)."""
    p = tmp / f"_src.{suffix}"
    profile_frame().to_parquet(p) if suffix == "parquet" else small_adata().write_h5ad(p)
    data = p.read_bytes()
    p.unlink()
    return data


def _parquet_bytes(tmp) -> bytes:
    return _file_bytes(tmp, "parquet")


def _h5ad_bytes(tmp) -> bytes:
    return _file_bytes(tmp, "h5ad")


def _xlsx_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
    return buf.getvalue()


def _sqlite_bytes(tmp) -> bytes:
    p = tmp / "_src.sqlite"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE t (a INTEGER)")
    con.commit()
    con.close()
    data = p.read_bytes()
    p.unlink()
    return data


LATIN1 = "Metadata_Plate,Metadata_Compound,Cells_AreaShape_Area\nP1,Caféine,1.0\nP1,Naïve,2.0\n".encode("latin-1")

READ_CASES = {
    "csv cut inside the last row": (lambda t: _w(t, "p.csv", _cut_last_row(csv_text())), ReadError, r"p\.csv.*line 7.*truncated"),
    "csv cut, trailing newline kept": (lambda t: _w(t, "p.csv", _cut_last_row(csv_text()) + "\n"), ReadError, r"p\.csv.*2 of 5 fields"),
    "csv cut after one field": (lambda t: _w(t, "p.csv", _cut_last_row(csv_text(), 1)), ReadError, r"p\.csv.*1 of 5"),
    "tsv cut inside the last row": (lambda t: _w(t, "p.tsv", _cut_last_row(csv_text("\t"), 3, "\t")), ReadError, r"p\.tsv.*3 of 5"),
    "txt cut inside the last row": (lambda t: _w(t, "p.txt", _cut_last_row(csv_text("\t"), 4, "\t")), ReadError, r"p\.txt.*truncated"),
    "csv.gz cut (EOFError)": (lambda t: _w(t, "p.csv.gz", _gz_cut(csv_text())), ReadError, r"p\.csv\.gz.*truncated or corrupt"),
    "tsv.gz cut (EOFError)": (lambda t: _w(t, "p.tsv.gz", _gz_cut(csv_text("\t"))), ReadError, r"p\.tsv\.gz.*truncated"),
    "csv.gz that is not gzip": (lambda t: _w(t, "p.csv.gz", csv_text()), ReadError, r"p\.csv\.gz.*not gzip-compressed"),
    "csv.gz with a corrupt stream": (lambda t: _w(t, "p.csv.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"garbage" * 10), ReadError, r"p\.csv\.gz.*corrupt"),
    "latin-1 csv": (lambda t: _w(t, "p.csv", LATIN1), ReadError, r"p\.csv, line 2: not valid utf-8.*latin-1"),
    "latin-1 csv.gz": (lambda t: _w(t, "p.csv.gz", gzip.compress(LATIN1)), ReadError, r"p\.csv\.gz, line 2: not valid utf-8"),
    "latin-1 header": (lambda t: _w(t, "p.csv", "Metadata_Plate,Cells_Größe\nP1,1\n".encode("latin-1")), ReadError, r"p\.csv, line 1: not valid"),
    "xlsx read as csv": (lambda t: _w(t, "p.csv", _xlsx_bytes()), ReadError, r"p\.csv.*Excel"),
    "parquet named csv": (lambda t: _w(t, "p.csv", _parquet_bytes(t)), ReadError, r"p\.csv.*parquet file"),
    "h5ad named csv": (lambda t: _w(t, "p.csv", _h5ad_bytes(t)), ReadError, r"p\.csv.*HDF5"),
    "sqlite named tsv": (lambda t: _w(t, "p.tsv", _sqlite_bytes(t)), ReadError, r"p\.tsv.*SQLite"),
    "0-byte csv": (lambda t: _w(t, "p.csv", ""), ReadError, r"p\.csv.*empty"),
    "blank-lines csv": (lambda t: _w(t, "p.csv", "\n\n\n"), ReadError, r"p\.csv.*empty"),
    "header without rows": (lambda t: _w(t, "p.csv", "Metadata_Plate,Cells_A\n"), ReadError, r"p\.csv.*no rows"),
    "row with extra fields": (lambda t: _w(t, "p.csv", "Metadata_Plate,Cells_A\nP1,1\nP1,2,3,4\nP1,3\n"), ReadError, r"p\.csv, line 3: malformed"),
    "short row in the middle": (lambda t: _w(t, "p.csv", _short_line(csv_text(), 3)), ReadError, r"p\.csv, line 3: 3 fields where the header has 5"),
    "short row in the middle of a csv.gz": (lambda t: _w(t, "p.csv.gz", gzip.compress(_short_line(csv_text(), 4).encode())), ReadError, r"p\.csv\.gz, line 4: 3 fields"),
    "short row in the middle, CRLF": (lambda t: _w(t, "p.csv", _short_line(csv_text(), 2).replace("\n", "\r\n")), ReadError, r"p\.csv, line 2: 3 fields"),
    "short row in the middle of a tsv": (lambda t: _w(t, "p.tsv", _short_line(csv_text("\t"), 5, "\t")), ReadError, r"p\.tsv, line 5: 3 fields"),
    "short row in a tab-separated .csv": (lambda t: _w(t, "p.csv", _short_line(csv_text("\t"), 2, "\t")), ReadError, r"p\.csv, line 2: 3 fields"),
    "unclosed quote": (lambda t: _w(t, "p.csv", 'Metadata_Plate,Cells_A\n"P1,1\nP2,2\n'), ReadError, r"p\.csv.*malformed"),
    "duplicated csv columns": (lambda t: _w(t, "p.csv", "Metadata_Plate,Cells_A,Cells_A\nP1,1,2\n"), ValueError, r"p\.csv.*duplicated column.*Cells_A"),
    "duplicated tsv columns": (lambda t: _w(t, "p.tsv", "Metadata_Plate\tCells_A\tMetadata_Plate\nP1\t1\tP2\n"), ValueError, r"p\.tsv.*duplicated.*Metadata_Plate"),
    "duplicated columns in a tab-separated .csv": (lambda t: _w(t, "p.csv", "Metadata_Plate\tCells_B\tCells_B\nP1\t1\t2\n"), ValueError, r"p\.csv.*Cells_B"),
    "duplicated parquet columns": (None, ValueError, r"p\.parquet.*duplicated.*Cells_A"),
    "cut parquet": (lambda t: _w(t, "p.parquet", _parquet_bytes(t)[:-40]), ReadError, r"p\.parquet.*not a readable parquet"),
    "garbage parquet": (lambda t: _w(t, "p.parquet", b"not a parquet file at all"), ReadError, r"p\.parquet.*not a readable parquet"),
    "cut h5ad": (lambda t: _w(t, "p.h5ad", _h5ad_bytes(t)[:2000]), ReadError, r"p\.h5ad.*not a readable h5ad"),
    "garbage h5ad": (lambda t: _w(t, "p.h5ad", b"hello, not hdf5"), ReadError, r"p\.h5ad.*not a readable h5ad"),
    "empty zarr folder": (lambda t: (t / "p.zarr").mkdir() or (t / "p.zarr"), ReadError, r"p\.zarr.*not a readable zarr"),
    "text in a feature column": (lambda t: _w(t, "p.csv", "Metadata_Plate,Cells_A\nP1,1\nP1,abc\n"), TypeError, r"p\.csv.*Cells_A"),
}


def _dup_parquet(t):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tbl = pa.table([pa.array(["P1"]), pa.array([1.0]), pa.array([2.0])], names=["Metadata_Plate", "Cells_A", "Cells_A"])
    pq.write_table(tbl, t / "p.parquet")
    return t / "p.parquet"


READ_CASES["duplicated parquet columns"] = (_dup_parquet, *READ_CASES["duplicated parquet columns"][1:])


@pytest.mark.parametrize("case", list(READ_CASES))
def test_read_profiles_bad_file(tmp_path, case):
    build, exc, pattern = READ_CASES[case]
    path = build(tmp_path)
    info = assert_refused(tmp_path, exc, pattern, ip.io.read_profiles, path)  # the input is untouched
    assert str(path.name) in str(info.value)


@pytest.mark.parametrize("case", ["csv cut inside the last row", "latin-1 csv", "csv.gz cut (EOFError)", "xlsx read as csv",
                                  "row with extra fields", "duplicated csv columns"])
def test_read_dispatch_gives_the_same_errors(tmp_path, case):
    build, exc, pattern = READ_CASES[case]
    path = build(tmp_path)
    with pytest.raises(exc, match=pattern):
        ip.io.read(path)


def test_read_errors_carry_path_and_line(tmp_path):
    p = _w(tmp_path, "p.csv", LATIN1)
    with pytest.raises(ReadError) as info:
        ip.io.read_profiles(p)
    assert info.value.path == str(p) and info.value.line == 2
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_latin1_reads_with_encoding(tmp_path):
    p = _w(tmp_path, "p.csv", LATIN1)
    a = ip.io.read_profiles(p, encoding="latin-1")
    assert a.obs["Metadata_Compound"].tolist() == ["Caféine", "Naïve"]


@pytest.mark.parametrize(("name", "sep"), [("p.csv", "\t"), ("p.tsv", ","), ("p.csv.gz", "\t"), ("p.txt", ","), ("p.csv", ";")])
def test_separator_is_sniffed_like_pycytominer(tmp_path, name, sep):
    text = csv_text(sep)
    p = _w(tmp_path, name, gzip.compress(text.encode()) if name.endswith(".gz") else text)
    a = ip.io.read_profiles(p)
    df = profile_frame()
    assert list(ip.io.to_pandas(a).columns) == list(df.columns)
    np.testing.assert_allclose(a.X, df.iloc[:, 2:].to_numpy())


def test_complete_file_without_final_newline_is_fine(tmp_path):
    p = _w(tmp_path, "p.csv", csv_text().rstrip("\n"))
    assert ip.io.read_profiles(p).n_obs == 6


def test_quoted_value_spanning_lines_in_the_last_row_is_not_truncation(tmp_path):
    p = _w(tmp_path, "p.csv", 'Metadata_Plate,Metadata_Note,Cells_A\nP1,ok,1\nP2,"two\nlines",2\n')
    a = ip.io.read_profiles(p)
    assert a.obs["Metadata_Note"].tolist() == ["ok", "two\nlines"]


def test_read_embeddings_sniffs_the_separator(tmp_path):
    p = _w(tmp_path, "e.csv", csv_text("\t"))
    a = ip.io.read_embeddings(p, prefix="Cells_")
    assert list(a.var_names) == ["Cells_AreaShape_Area"]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        ip.io.read_profiles(tmp_path / "nope.csv")


def test_read_unknown_suffix(tmp_path):
    p = _w(tmp_path, "p.xyz", "a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"p\.xyz.*no reader.*\.csv"):
        ip.io.read(p)


@pytest.mark.parametrize(("name", "reader"), [("a.csv", "read_profiles"), ("a.csv.gz", "read_profiles"), ("a.gct.gz", "read_gct"),
                                              ("a.gctx", "read_gctx"), ("a.sqlite", "read_cellprofiler"), ("a.npz", "read_deepprofiler"),
                                              ("a.h5ad", "read_profiles"), ("a.parquet", "read_profiles")])
def test_reader_registry(name, reader):
    assert ip.io.reader_for(name) == reader


# --------------------------------------------------------------------------------------------
# GCT
# --------------------------------------------------------------------------------------------

GCT = textwrap.dedent("""\
    #1.3
    3\t2\t1\t2
    id\tpr_gene_symbol\tS1\tS2
    pert_iname\t-666\tdrugA\tdrugB
    pert_dose\t-666\t1.0\t2.0
    g1\tA\t0.1\t0.2
    g2\tB\t0.3\t0.4
    g3\tC\t0.5\t0.6
    """).replace("    ", "")

GCT_CASES = {
    "two column-metadata lines of one name": (lambda t: _w(t, "x.gct", GCT.replace("pert_dose", "pert_iname")), ReadError, r"x\.gct, line 5.*'pert_iname' appears twice"),
    "two row-metadata fields of one name": (lambda t: _w(t, "x.gct", GCT.replace("3\t2\t1\t2", "3\t1\t2\t2").replace("id\tpr_gene_symbol\tS1\tS2", "id\tf\tf\tS2")
                                                         .replace("-666\tdrugA", "-666\t-666").replace("-666\t1.0", "-666\t-666")), ReadError, r"x\.gct, line 3.*'f'"),
    "cut inside the last row": (lambda t: _w(t, "x.gct", GCT.rstrip("\n")[:-4]), ReadError, r"x\.gct.*truncated"),
    "cut gct.gz": (lambda t: _w(t, "x.gct.gz", _gz_cut(GCT)), ReadError, r"x\.gct\.gz.*truncated"),
    "latin-1 gct": (lambda t: _w(t, "x.gct", GCT.replace("drugA", "Caféine").encode("latin-1")), ReadError, r"x\.gct, line 4: not valid utf-8"),
    "short row in the middle": (lambda t: _w(t, "x.gct", GCT.replace("g2\tB\t0.3\t0.4", "g2\tB\t0.3")), ReadError, r"x\.gct, line 7: 3 fields where the header has 4"),
    "short row in the middle of a gct.gz": (lambda t: _w(t, "x.gct.gz", gzip.compress(GCT.replace("g2\tB\t0.3\t0.4", "g2\tB").encode())), ReadError,
                                            r"x\.gct\.gz, line 7: 2 fields"),
    "row with extra fields": (lambda t: _w(t, "x.gct", GCT.replace("g2\tB\t0.3\t0.4", "g2\tB\t0.3\t0.4\t9\t9")), ReadError, r"x\.gct.*malformed"),
    "empty gct": (lambda t: _w(t, "x.gct", ""), ReadError, r"x\.gct.*empty"),
    "duplicated sample ids": (lambda t: _w(t, "x.gct", GCT.replace("S1\tS2", "S1\tS1")), ValueError, r"x\.gct.*duplicated sample.*S1"),
}


@pytest.mark.parametrize("case", list(GCT_CASES))
def test_read_gct_bad_file(tmp_path, case):
    build, exc, pattern = GCT_CASES[case]
    assert_refused(tmp_path, exc, pattern, ip.io.read_gct, build(tmp_path))


def test_good_gct_still_reads(tmp_path):
    a = ip.io.read_gct(_w(tmp_path, "x.gct", GCT))
    assert a.shape == (2, 3) and a.obs["pert_iname"].tolist() == ["drugA", "drugB"]


@pytest.mark.parametrize("data", [b"", b"garbage", None])
def test_read_gctx_bad_file(tmp_path, data):
    p = tmp_path / "x.gctx"
    if data is None:
        ip.io.write_gctx(ip.io.read_gct(_w(tmp_path, "x.gct", GCT)), p)
        p.write_bytes(p.read_bytes()[:1500])  # cut: the HDF5 superblock survives, the data does not
    else:
        p.write_bytes(data)
    assert_refused(tmp_path, ValueError, r"x\.gctx", ip.io.read_gctx, p)


# --------------------------------------------------------------------------------------------
# CellProfiler CSV folders and CytoTable
# --------------------------------------------------------------------------------------------


@pytest.fixture
def cp_folder(tmp_path):
    import shutil

    src = Path(ip.datasets.examplehuman_images_path())
    dst = tmp_path / "cp"
    dst.mkdir()
    for f in src.iterdir():
        if f.name.endswith((".csv", ".csv.gz")):
            shutil.copy(f, dst / f.name)
    return dst


def _rewrite_csv(folder: Path, name: str, fn) -> Path:
    p = folder / name
    raw = gzip.decompress(p.read_bytes()).decode() if name.endswith(".gz") else p.read_text()
    out = fn(raw)
    if name.endswith(".gz"):
        p.write_bytes(out if isinstance(out, bytes) else gzip.compress(out.encode()))
    else:
        p.write_bytes(out if isinstance(out, bytes) else out.encode())
    return p


def _dup_last_header(s: str) -> str:
    head, body = s.split("\n", 1)
    names = head.split(",")
    names[-1] = names[-2]
    return ",".join(names) + "\n" + body


def _short_crlf_line(s: str, line: int) -> str:
    lines = s.split("\r\n")
    lines[line - 1] = ",".join(lines[line - 1].split(",")[:4])
    return "\r\n".join(lines)


def _extra_fields_on_line3(s: str) -> str:
    lines = s.split("\n")
    lines[2] = lines[2].rstrip("\r") + ",1,2,3\r"  # the example's files have CRLF line ends
    return "\n".join(lines)


CP_CASES = {
    "cut Image.csv": ("Image.csv", lambda s: _cut_last_row(s, 3), ReadError, r"Image\.csv.*truncated"),
    "cut Cells.csv.gz": ("Cells.csv.gz", lambda s: _gz_cut(s), ReadError, r"Cells\.csv\.gz.*truncated"),
    "latin-1 Image.csv": ("Image.csv", lambda s: s.replace("Metadata", "Métadata", 1).encode("latin-1"), ReadError, r"Image\.csv, line 1: not valid utf-8"),
    "duplicated Nuclei column": ("Nuclei.csv.gz", lambda s: _dup_last_header(s), ValueError, r"Nuclei\.csv\.gz.*duplicated column"),
    "short Cells row (CRLF)": ("Cells.csv.gz", lambda s: _short_crlf_line(s, 4), ReadError, r"Cells\.csv\.gz, line 4: 4 fields where the header has"),
    "malformed Cells row": ("Cells.csv.gz", lambda s: _extra_fields_on_line3(s), ReadError, r"Cells\.csv\.gz, line 3: malformed"),
}


@pytest.mark.parametrize("case", list(CP_CASES))
def test_read_cellprofiler_bad_csv(cp_folder, case):
    name, fn, exc, pattern = CP_CASES[case]
    _rewrite_csv(cp_folder, name, fn)
    before = tree_hash(cp_folder)
    with pytest.raises(exc, match=pattern):
        ip.io.read_cellprofiler(cp_folder)
    assert tree_hash(cp_folder) == before


@pytest.mark.parametrize(("name", "data", "pattern"), [
    ("c.csv", lambda: _cut_last_row(csv_text()), r"c\.csv.*truncated"),
    ("c.csv.gz", lambda: _gz_cut(csv_text()), r"c\.csv\.gz.*truncated"),
    ("c.csv", lambda: "Metadata_Plate,Cells_A,Cells_A\nP1,1,2\n", r"c\.csv.*duplicated"),
    ("c.csv", lambda: LATIN1, r"c\.csv, line 2: not valid"),
])
def test_read_cytotable_bad_csv(tmp_path, name, data, pattern):
    assert_refused(tmp_path, ValueError, pattern, ip.io.read_cytotable, _w(tmp_path, name, data()))


# --------------------------------------------------------------------------------------------
# to_pandas order
# --------------------------------------------------------------------------------------------


def test_to_pandas_metadata_first_after_every_metadata_column_was_renamed():
    a = small_adata()
    a.obs = a.obs.rename(columns={"Metadata_Plate": "Metadata_Plate_renamed", "Metadata_Well": "Metadata_Well_renamed"})
    cols = list(ip.io.to_pandas(a).columns)
    assert cols[:2] == ["Metadata_Plate_renamed", "Metadata_Well_renamed"]
    assert cols[2:] == list(a.var_names)


def test_to_pandas_metadata_first_after_clean_cellprofiler(tmp_path):
    df = pd.DataFrame({"Image_Metadata_Plate": ["P1", "P1"], "Image_Metadata_Well": ["A01", "A02"], "Cells_A": [1.0, 2.0]})
    a = ip.io.from_pandas(df, metadata=["Image_Metadata_Plate", "Image_Metadata_Well"])
    pm = pd.DataFrame({"well_position": ["A01", "A02"], "Metadata_moa": ["x", "y"]})
    ip.pp.annotate(a, platemap=pm, join_on=["Metadata_well_position", "Image_Metadata_Well"], clean_cellprofiler=True)
    cols = list(ip.io.to_pandas(a).columns)
    assert cols[-1] == "Cells_A" and all(not c.startswith("Cells") for c in cols[:-1])
    assert "Metadata_Plate" in cols and "Image_Metadata_Plate" not in cols


# --------------------------------------------------------------------------------------------
# writers: refuse before writing, never leave a half-written file
# --------------------------------------------------------------------------------------------


def _with_bad_uns(a):
    a = a.copy()
    a.uns["bad"] = object()  # h5ad/zarr cannot store an arbitrary Python object
    return a


def _with_case_clash(a):
    a = a.copy()
    a.obs["metadata_plate"] = a.obs["Metadata_Plate"]
    return a


def _with_name_clash(a):
    a = a.copy()
    a.obs["Cells_AreaShape_Area"] = 1.0
    return a


def _with_mixed_column(a):
    a = a.copy()
    a.obs["Metadata_mixed"] = pd.Series([1, "a", 2.5, "b", 3, "c"], index=a.obs_names, dtype=object)
    return a


WRITE_CASES = {
    "h5ad with an unstorable .uns value": ("out.h5ad", _with_bad_uns, Exception, r"bad|object"),
    "zarr with an unstorable .uns value": ("out.zarr", _with_bad_uns, Exception, r"bad|object"),
    "zarr with obs columns differing by case": ("out.zarr", _with_case_clash, ValueError, r"out\.zarr.*Metadata_Plate.*metadata_plate"),
    "h5ad with a mixed-type obs column": ("out.h5ad", _with_mixed_column, TypeError, r"Metadata_mixed"),
    "csv with an obs column named like a feature": ("out.csv", _with_name_clash, ValueError, r"out\.csv.*Cells_AreaShape_Area"),
    "csv.gz with an obs column named like a feature": ("out.csv.gz", _with_name_clash, ValueError, r"out\.csv\.gz.*Cells_AreaShape_Area"),
    "tsv with an obs column named like a feature": ("out.tsv", _with_name_clash, ValueError, r"out\.tsv.*Cells_AreaShape_Area"),
    "parquet with an obs column named like a feature": ("out.parquet", _with_name_clash, ValueError, r"out\.parquet.*Cells_AreaShape_Area"),
    "parquet with a mixed-type obs column": ("out.parquet", _with_mixed_column, TypeError, r"out\.parquet.*Metadata_mixed"),
    "unknown extension": ("out.xlsx", lambda a: a, ValueError, r"out\.xlsx.*unknown extension"),
    "csv with a missing layer": ("out.csv", lambda a: a, KeyError, r"nolayer"),
}


@pytest.mark.parametrize("case", list(WRITE_CASES))
def test_failing_write_profiles_keeps_the_old_file(tmp_path, case):
    name, spoil, exc, pattern = WRITE_CASES[case]
    target = tmp_path / name
    good = small_adata()
    if not name.endswith(".xlsx"):
        ip.io.write_profiles(good, target)
    else:
        target.write_bytes(b"old workbook")
    before = tree_hash(tmp_path)
    bad = spoil(good)
    kw = {"layer": "nolayer"} if "layer" in case else {}
    with pytest.raises(exc, match=pattern):
        ip.io.write_profiles(bad, target, **kw)
    assert tree_hash(tmp_path) == before  # the old file is byte-for-byte intact
    assert no_leftovers(tmp_path)
    if not name.endswith(".xlsx"):
        ip.io.read_profiles(target)  # and still readable


@pytest.mark.parametrize("case", ["h5ad with an unstorable .uns value", "zarr with obs columns differing by case",
                                  "csv with an obs column named like a feature"])
def test_failing_write_creates_nothing(tmp_path, case):
    name, spoil, exc, pattern = WRITE_CASES[case]
    with pytest.raises(exc, match=pattern):
        ip.io.write_profiles(spoil(small_adata()), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ext", ["csv", "csv.gz", "tsv", "parquet", "h5ad", "zarr"])
def test_overwrite_replaces_atomically_and_round_trips(tmp_path, ext):
    target = tmp_path / f"p.{ext}"
    a = small_adata()
    ip.io.write_profiles(a, target)
    a2 = a.copy()
    a2.X = a2.X + 1
    ip.io.write_profiles(a2, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    np.testing.assert_allclose(ip.io.read_profiles(target).X, a2.X)


def test_writer_into_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nodir"):
        ip.io.write_profiles(small_adata(), tmp_path / "nodir" / "p.csv")
    assert list(tmp_path.iterdir()) == []


def test_writer_onto_a_folder(tmp_path):
    (tmp_path / "p.csv").mkdir()
    (tmp_path / "p.csv" / "keep.txt").write_text("keep")
    assert_refused(tmp_path, IsADirectoryError, r"p\.csv", ip.io.write_profiles, small_adata(), tmp_path / "p.csv")


def test_write_profiles_refuses_non_anndata(tmp_path):
    with pytest.raises(TypeError, match="DataFrame"):
        ip.io.write_profiles(profile_frame(), tmp_path / "p.csv")
    assert list(tmp_path.iterdir()) == []


def _gct_adata():
    a = ad.AnnData(np.arange(6, dtype=float).reshape(2, 3), obs=pd.DataFrame({"pert_iname": ["a", "b"]}, index=["S1", "S2"]),
                   var=pd.DataFrame({"pr_gene_symbol": ["A", "B", "C"]}, index=["g1", "g2", "g3"]))
    return a


def _obs_value(v):
    def f(a):
        a = a.copy()
        a.obs["pert_iname"] = ["ok", v]
        return a
    return f


def _var_value(v):
    def f(a):
        a = a.copy()
        a.var["pr_gene_symbol"] = ["ok", v, "ok"]
        return a
    return f


def _obs_col(name):
    def f(a):
        a = a.copy()
        a.obs[name] = ["x", "y"]
        return a
    return f


GCT_WRITE_CASES = {
    "tab in an obs value": (_obs_value("dr\tug"), r"x\.gct.*obs\['pert_iname'\].*'dr\\tug'.*tab or newline"),
    "newline in an obs value": (_obs_value("dr\nug"), r"obs\['pert_iname'\].*'dr\\nug'"),
    "carriage return in an obs value": (_obs_value("dr\rug"), r"obs\['pert_iname'\]"),
    "tab in a var value": (_var_value("B\t2"), r"var\['pr_gene_symbol'\].*'B\\t2'"),
    "newline in a var value": (_var_value("B\n2"), r"var\['pr_gene_symbol'\]"),
    "tab in an obs column name": (_obs_col("pert\tid"), r"obs column name.*pert\\tid"),
    "newline in an obs column name": (_obs_col("pert\nid"), r"obs column name.*pert\\nid"),
    "tab in an obs name": (lambda a: ad.AnnData(a.X, obs=a.obs.set_axis(["S\t1", "S2"]), var=a.var), r"obs_names.*S\\t1"),
    "duplicated obs names": (lambda a: ad.AnnData(a.X, obs=a.obs.set_axis(["S1", "S1"]), var=a.var), r"obs_names are not unique"),
    "a var column named id": (lambda a: ad.AnnData(a.X, obs=a.obs, var=a.var.rename(columns={"pr_gene_symbol": "id"})), r"x\.gct.*'id'"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["gct", "gct.gz"])
@pytest.mark.parametrize("case", list(GCT_WRITE_CASES))
def test_write_gct_refuses_unreadable_values(tmp_path, case, gz):
    spoil, pattern = GCT_WRITE_CASES[case]
    target = tmp_path / ("x.gct.gz" if gz else "x.gct")
    ip.io.write_gct(_gct_adata(), target)
    assert_refused(tmp_path, ValueError, pattern, ip.io.write_gct, spoil(_gct_adata()), target)
    assert ip.io.read_gct(target).shape == (2, 3)


def test_write_gctx_failure_keeps_old_file(tmp_path):
    target = tmp_path / "x.gctx"
    ip.io.write_gctx(_gct_adata(), target)
    before = tree_hash(tmp_path)
    bad = _obs_col("a/b")(_gct_adata())
    with pytest.raises(ValueError, match="'a/b'"):
        ip.io.write_gctx(bad, target)
    assert tree_hash(tmp_path) == before and no_leftovers(tmp_path)


def test_report_writer_is_atomic(tmp_path, monkeypatch):
    from imgprof import report

    target = tmp_path / "report.html"
    target.write_text("<html>old report</html>")
    before = tree_hash(tmp_path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("imgprof.io._atomic.os.fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        report.write_report(ip.datasets.simulate(n_plates=1, seed=0), target)
    assert tree_hash(tmp_path) == before and no_leftovers(tmp_path)


def test_atomic_path_failure_removes_temp_folder(tmp_path):
    target = tmp_path / "store.zarr"
    target.mkdir()
    (target / "old").write_text("old")
    before = tree_hash(tmp_path)
    with pytest.raises(RuntimeError, match="midway"), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
        raise RuntimeError("midway")
    assert tree_hash(tmp_path) == before and no_leftovers(tmp_path)


def test_zarr_store_swapped_whole(tmp_path):
    target = tmp_path / "p.zarr"
    a = small_adata()
    ip.io.write_profiles(a, target)
    b = a.copy()
    b.X = b.X * 2
    ip.io.write_profiles(b, target)
    np.testing.assert_allclose(ip.io.read_profiles(target).X, b.X)
    assert [p.name for p in tmp_path.iterdir()] == ["p.zarr"]


def test_atomic_write_text(tmp_path):
    p = atomic_write_text(tmp_path / "a.json", "{}")
    assert p.read_text() == "{}" and no_leftovers(tmp_path)


# --------------------------------------------------------------------------------------------
# a writer process killed mid-write leaves the old file intact
# --------------------------------------------------------------------------------------------

_KILL_SCRIPT = """
import sys, time, numpy as np, pandas as pd, imgprof as ip
from imgprof.io import _atomic
kind, target, mode = sys.argv[1], sys.argv[2], sys.argv[3]
n, m = 4000, 300
rng = np.random.default_rng(1)
df = pd.DataFrame(rng.normal(size=(n, m)), columns=[f"Cells_F_{i}" for i in range(m)])
df.insert(0, "Metadata_Well", [f"W{i}" for i in range(n)])
a = ip.io.from_pandas(df)
if mode == "before-rename":
    # the new content is complete in the temporary file; block right before the rename
    def blocked(src, dst):
        print("renaming", flush=True)
        time.sleep(600)
    import os, types
    fake_os = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    fake_os.replace = blocked  # only imgprof's final rename blocks (zarr uses os.replace internally)
    _atomic.os = fake_os
    _atomic._exchange = blocked  # a zarr store over an old one is swapped in with renameat2 on Linux
print("ready", flush=True)
if kind == "gct":
    ip.io.write_gct(a, target)
else:
    ip.io.write_profiles(a, target)
print("done", flush=True)
"""


@pytest.mark.parametrize(("name", "mode"), [
    ("old.csv", "mid-write"), ("old.csv.gz", "mid-write"), ("old.gct", "mid-write"), ("old.tsv", "mid-write"),
    ("old.h5ad", "before-rename"), ("old.zarr", "before-rename"), ("old.parquet", "before-rename"), ("old.csv", "before-rename"),
])
def test_writer_killed_mid_write_leaves_old_file(tmp_path, name, mode):
    target = tmp_path / name
    small = small_adata()
    if name.endswith(".gct"):
        ip.io.write_gct(ad.AnnData(small.X, obs=small.obs[[]], var=small.var[[]]), target)
    else:
        ip.io.write_profiles(small, target)
    before = tree_hash(target)
    script = tmp_path / "writer.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(ip.__file__).parent.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), "gct" if name.endswith(".gct") else "profiles", str(target), mode],
                            stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        if mode == "before-rename":
            assert proc.stdout.readline().strip() == b"renaming"
        else:
            # wait until the temporary file exists and holds data: the writer is mid-write
            deadline = time.time() + 120
            while time.time() < deadline:
                tmps = [p for p in tmp_path.iterdir() if p.name.startswith(TMP_MARKER)]
                if tmps and tmps[0].exists() and tmps[0].stat().st_size > 0:
                    break
                time.sleep(0.002)
            else:
                pytest.fail("the writer never started writing")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished
    assert tree_hash(target) == before  # the old file is byte-for-byte the same
    if name.endswith(".gct"):
        assert ip.io.read_gct(target).shape == small.shape
    else:
        assert ip.io.read_profiles(target).shape == small.shape


# --------------------------------------------------------------------------------------------
# other readers: SQLite, DeepProfiler, folders
# --------------------------------------------------------------------------------------------


def _sqlite_db(path: Path, cut: bool) -> Path:
    con = sqlite3.connect(path)
    pd.DataFrame({"ImageNumber": range(2000), "Image_Metadata_Plate": ["P"] * 2000}).to_sql("Image", con, index=False)
    pd.DataFrame({"ImageNumber": range(2000), "ObjectNumber": 1, "Cells_AreaShape_Area": 1.0}).to_sql("Cells", con, index=False)
    con.commit()
    con.close()
    if cut:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


def _npz(path: Path, cut: bool) -> Path:
    np.savez(path, features=np.ones((3, 4)))
    if cut:
        path.write_bytes(path.read_bytes()[:100])
    return path


OTHER_CASES = {
    "garbage .sqlite": (lambda t: _w(t, "x.sqlite", b"not a database" * 20), ip.io.read_cellprofiler, r"x\.sqlite.*not a readable SQLite"),
    "truncated .sqlite": (lambda t: _sqlite_db(t / "x.sqlite", True), ip.io.read_cellprofiler, r"x\.sqlite"),
    "garbage .npz": (lambda t: _w(t, "x.npz", b"garbage"), ip.io.read_deepprofiler, r"x\.npz.*not a readable"),
    "truncated .npz": (lambda t: _npz(t / "x.npz", True), ip.io.read_deepprofiler, r"x\.npz"),
    "folder named .csv": (lambda t: (t / "x.csv").mkdir() or (t / "x.csv"), ip.io.read_profiles, r"x\.csv.*folder"),
    "folder named .gct": (lambda t: (t / "x.gct").mkdir() or (t / "x.gct"), ip.io.read_gct, r"x\.gct.*folder"),
    "garbage .sqlite via ip.io.read": (lambda t: _w(t, "x.db", b"not a database" * 20), ip.io.read, r"x\.db"),
    "garbage .gctx via ip.io.read": (lambda t: _w(t, "x.gctx", b"not hdf5"), ip.io.read, r"x\.gctx"),
    "cut .csv via ip.io.read_cytotable": (lambda t: _w(t, "x.csv", _cut_last_row(csv_text())), ip.io.read_cytotable, r"x\.csv.*truncated"),
    "garbage parquet via read_embeddings": (lambda t: _w(t, "x.parquet", b"PAR1garbagePAR1"), lambda p: ip.io.read_embeddings(p, prefix="efficientnet_"),
                                            r"x\.parquet.*not a readable parquet"),
    "latin-1 csv via read_embeddings": (lambda t: _w(t, "x.csv", LATIN1), lambda p: ip.io.read_embeddings(p, prefix="Cells_"), r"x\.csv, line 2: not valid"),
    "cut csv.gz via read_embeddings": (lambda t: _w(t, "x.csv.gz", _gz_cut(csv_text())), lambda p: ip.io.read_embeddings(p, prefix="Cells_"),
                                       r"x\.csv\.gz.*truncated"),
    "garbage parquet via read_cytotable": (lambda t: _w(t, "x.parquet", b"PAR1garbagePAR1"), ip.io.read_cytotable, r"x\.parquet.*not a readable parquet"),
}


@pytest.mark.parametrize("case", list(OTHER_CASES))
def test_other_readers_bad_file(tmp_path, case):
    build, reader, pattern = OTHER_CASES[case]
    assert_refused(tmp_path, ValueError, pattern, reader, build(tmp_path))
