"""GCT / GCTX readers and writers on the real L1000 plate, hand-written files, and cmapPy when installed."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pandas as pd
import pytest

import imgprof as ip
from imgprof.datasets import data_path

GCT = data_path("l1000", "LJP005_A375_24H_X1_B19.gct.gz")


@pytest.fixture(scope="module")
def plate():
    return ip.io.read_gct(GCT)


def _raw_lines():
    with gzip.open(GCT, "rt") as fh:
        return fh.read().split("\n")


def test_read_real_gct_matches_the_text(plate):
    lines = _raw_lines()
    assert lines[0] == "#1.3"
    n_rows, n_cols, n_rmeta, n_cmeta = map(int, lines[1].split("\t"))
    assert plate.shape == (n_cols, n_rows) == (377, 978)
    assert plate.var.shape[1] == n_rmeta == 11 and plate.obs.shape[1] == n_cmeta == 35
    header = lines[2].split("\t")
    assert list(plate.obs_names) == header[1 + n_rmeta:]
    # one data row and one metadata row, parsed by hand
    row = lines[3 + n_cmeta].split("\t")
    gene = row[0]
    np.testing.assert_allclose(plate[:, gene].X.ravel(), np.array(row[1 + n_rmeta:], dtype=float))
    assert plate.var.loc[gene, "pr_gene_symbol"] == row[header.index("pr_gene_symbol")]
    meta = {ln.split("\t")[0]: ln.split("\t")[1 + n_rmeta:] for ln in lines[3:3 + n_cmeta]}
    assert plate.obs["pert_iname"].tolist() == meta["pert_iname"]
    # the counts stated in the data manifest
    assert plate.obs["pert_type"].value_counts().to_dict() == {"trt_cp": 328, "ctl_vehicle": 26, "trt_poscon": 23}
    assert np.isfinite(plate.X).all()
    assert plate.uns["imgprof"]["gct"]["version"] == "#1.3"


def test_convert_neg_666(plate):
    assert (plate.obs.loc[plate.obs["pert_type"] == "ctl_vehicle", "pert_dose"] == -666).all()
    conv = ip.io.read_gct(GCT, convert_neg_666=True)
    d = conv.obs["pert_dose"]
    assert d.dtype.kind == "f" and d.isna().sum() == 26
    assert set(d.dropna()) == {0.04, 0.12, 0.37, 1.11, 3.33, 10.0}
    assert conv.obs["pert_dose_unit"].isna().sum() == 26
    np.testing.assert_array_equal(conv.X, plate.X)


def test_obs_prefix(plate):
    a = ip.io.read_gct(GCT, obs_prefix="Metadata_")
    assert all(c.startswith("Metadata_") for c in a.obs.columns)
    assert a.uns["imgprof"]["gct"]["obs_names_original"] == list(plate.obs.columns)


@pytest.mark.parametrize("name", ["x.gct", "x.gct.gz"])
def test_gct_round_trip_exact(tmp_path, plate, name):
    before = plate.obs.copy()
    p = tmp_path / name
    ip.io.write_gct(plate, p)
    back = ip.io.read_gct(p)
    np.testing.assert_array_equal(back.X, plate.X)
    pd.testing.assert_frame_equal(back.obs, plate.obs)
    pd.testing.assert_frame_equal(back.var, plate.var)
    pd.testing.assert_frame_equal(plate.obs, before)  # input untouched


def test_gctx_round_trip_exact(tmp_path, plate):
    p = tmp_path / "x.gctx"
    ip.io.write_gctx(plate, p)
    back = ip.io.read_gctx(p)
    np.testing.assert_array_equal(back.X, plate.X)
    pd.testing.assert_frame_equal(back.obs, plate.obs)
    pd.testing.assert_frame_equal(back.var, plate.var)
    conv = ip.io.read_gctx(p, convert_neg_666=True)
    assert conv.obs["pert_dose"].isna().sum() == 26
    # NaN metadata written as -666 and read back as NaN
    c = ip.io.read_gct(GCT, convert_neg_666=True)
    ip.io.write_gctx(c, tmp_path / "c.gctx", dtype=np.float32)
    cc = ip.io.read_gctx(tmp_path / "c.gctx", convert_neg_666=True)
    pd.testing.assert_frame_equal(cc.obs, c.obs)
    assert cc.X.dtype == np.float32
    np.testing.assert_allclose(cc.X, c.X, rtol=1e-6)


def test_gctx_layout_is_cmap(tmp_path, plate):
    import h5py

    p = tmp_path / "x.gctx"
    ip.io.write_gctx(plate, p)
    with h5py.File(p, "r") as f:
        assert f["/0/DATA/0/matrix"].shape == (377, 978)  # samples x genes, as cmapPy writes it
        assert f["/0/META/COL/id"][0].decode() == plate.obs_names[0]
        assert f["/0/META/ROW/id"][0].decode() == plate.var_names[0]
        assert f.attrs["version"] in (b"GCTX1.0", "GCTX1.0")


def test_gct_1_2(tmp_path):
    p = tmp_path / "v12.gct"
    p.write_text("#1.2\n3\t2\nName\tDescription\tS1\tS2\nG1\tgene one\t1.5\t2\nG2\tna\tNaN\t-1\nG3\tx\t0\t4e-3\n")
    a = ip.io.read_gct(p)
    assert a.shape == (2, 3) and list(a.var_names) == ["G1", "G2", "G3"]
    assert a.var["Description"].tolist() == ["gene one", "na", "x"]
    np.testing.assert_allclose(a.X, [[1.5, np.nan, 0.0], [2.0, -1.0, 0.004]])


@pytest.mark.parametrize(
    "text, match",
    [
        ("#1.4\n1\t1\n", "not a GCT file"),
        ("#1.3\n2\t1\t0\n", "4 integers"),
        ("#1.3\n1\t2\t0\t0\nid\tS1\n", "header has 1 sample"),
        ("#1.3\n1\t2\t0\t0\nid\tS1\tS1\nG\t1\t2\n", "duplicated sample"),
        ("#1.3\n2\t1\t0\t0\nid\tS1\nG\t1\n", "found 1 data rows"),
        ("#1.3\n1\t1\t0\t0\nid\tS1\nG\tabc\n", "non-numeric"),
        ("#1.3\n2\t1\t0\t0\nid\tS1\nG\t1\nG\t2\n", "duplicated gene"),
    ],
)
def test_gct_bad_input(tmp_path, text, match):
    p = tmp_path / "bad.gct"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        ip.io.read_gct(p)


def test_gctx_bad_input(tmp_path):
    import h5py

    with pytest.raises(FileNotFoundError):
        ip.io.read_gctx(tmp_path / "missing.gctx")
    txt = tmp_path / "t.gctx"
    txt.write_text("#1.3\n")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        ip.io.read_gctx(txt)
    h = tmp_path / "h.gctx"
    with h5py.File(h, "w") as f:
        f.create_dataset("/0/DATA/0/matrix", data=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="/0/META/COL"):
        ip.io.read_gctx(h)


def test_write_refuses_what_gct_cannot_hold(tmp_path, plate):
    a = plate[:5, :4].copy()
    a.obs_names = ["s"] * 5
    with pytest.raises(ValueError, match="not unique"):
        ip.io.write_gct(a, tmp_path / "d.gct")


def test_parity_with_cmappy(tmp_path, plate):
    """cmapPy (the CMap reference reader) parses the same values, and reads our GCTX."""
    cmap_parse = pytest.importorskip("cmapPy.pandasGEXpress.parse").parse
    raw = tmp_path / "plate.gct"
    with gzip.open(GCT, "rt") as src:
        raw.write_text(src.read())  # cmapPy does not read .gz
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cmapPy 4.0 uses pandas APIs deprecated in pandas 2
        g = cmap_parse(str(raw))
    ours = ip.io.read_gct(raw, convert_neg_666=True)
    # cmapPy stores the matrix as float32
    np.testing.assert_allclose(ours.X, g.data_df.T.loc[ours.obs_names, ours.var_names].to_numpy(), rtol=1e-6)
    for c in g.col_metadata_df.columns:
        a, b = ours.obs[c], g.col_metadata_df.loc[ours.obs_names, c]
        assert (a.isna().to_numpy() == b.isna().to_numpy()).all(), c
        assert (a.dropna().astype(str).to_numpy() == b.dropna().astype(str).to_numpy()).all(), c
    p = tmp_path / "ours.gctx"
    ip.io.write_gctx(ours, p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g2 = cmap_parse(str(p))
    np.testing.assert_allclose(g2.data_df.T.loc[ours.obs_names, ours.var_names].to_numpy(), ours.X, rtol=1e-6)
    assert list(g2.col_metadata_df["pert_iname"].loc[ours.obs_names]) == ours.obs["pert_iname"].tolist()

