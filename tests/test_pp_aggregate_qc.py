"""pp.aggregate summarises the cell-level QC flags of ip.pp.qc on every path (memory, dask, parquet, zarr)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import imgprof as ip

BY = ["Metadata_Plate", "Metadata_Well"]


@pytest.fixture(scope="module")
def qcd():
    cells = ip.datasets.simulate(n_plates=2, n_perturbations=4, n_moa=2, n_controls=4, n_features=12,
                                 level="single_cell", seed=0)
    ip.pp.qc(cells, outlier_z=1.5, outlier_fraction=0.2)  # strict: some cells fail
    assert cells.obs["Metadata_qc_pass"].dtype == bool and not cells.obs["Metadata_qc_pass"].all()
    return cells


@pytest.fixture(scope="module")
def in_memory(qcd):
    wells = ip.pp.aggregate(qcd, by=BY)
    assert "Metadata_qc_pass_cell_fraction" in wells.obs.columns
    return wells


def _same(got, ref):
    qc_ref = sorted(c for c in ref.obs.columns if c.startswith("Metadata_qc"))
    qc_got = sorted(c for c in got.obs.columns if c.startswith("Metadata_qc"))
    assert qc_got == qc_ref  # the same fractions, no raw cell-level flag or score
    assert all(c.endswith("_cell_fraction") for c in qc_got)
    keys = ref.obs[BY].astype(str).agg("/".join, axis=1).to_numpy()
    gkeys = got.obs[BY].astype(str).agg("/".join, axis=1).to_numpy()
    assert (gkeys == keys).all()
    for c in qc_ref:
        np.testing.assert_array_equal(got.obs[c].to_numpy(dtype=float), ref.obs[c].to_numpy(dtype=float))
    np.testing.assert_allclose(got.X, ref.X)
    s_ref = ip.provenance(ref).iloc[-1]["extra"]["qc_summarised"]
    s_got = ip.provenance(got).iloc[-1]["extra"]["qc_summarised"]
    assert s_got == s_ref and s_ref["Metadata_qc_pass"] == "Metadata_qc_pass_cell_fraction"


def test_dask_path_summarises_qc_flags(qcd, in_memory):
    import dask.array as da

    lazy = qcd.copy()
    lazy.X = da.from_array(np.asarray(qcd.X), chunks=(97, 5))
    _same(ip.pp.aggregate(lazy, by=BY), in_memory)


@pytest.mark.parametrize("shuffle", [False, True], ids=["grouped", "ungrouped"])
def test_parquet_path_summarises_qc_flags(qcd, in_memory, tmp_path, shuffle):
    path = tmp_path / "cells.parquet"
    src = qcd[np.random.default_rng(0).permutation(qcd.n_obs)].copy() if shuffle else qcd
    ip.io.write_profiles(src, path)
    _same(ip.pp.aggregate(path, by=BY), in_memory)


@pytest.mark.parametrize("shuffle", [False, True], ids=["grouped", "ungrouped"])
def test_zarr_path_summarises_qc_flags(qcd, in_memory, tmp_path, shuffle):
    path = tmp_path / "cells.zarr"
    src = qcd[np.random.default_rng(0).permutation(qcd.n_obs)].copy() if shuffle else qcd
    src.write_zarr(path)
    got = ip.pp.aggregate(path, by=BY)
    assert ip.provenance(got).iloc[-1]["extra"].get("streamed") is True
    _same(got, in_memory)


def test_streamed_summary_also_with_keep_metadata_false(qcd, tmp_path):
    qcd.write_zarr(tmp_path / "c.zarr")
    ref = ip.pp.aggregate(qcd, by=BY, keep_metadata=False)
    got = ip.pp.aggregate(tmp_path / "c.zarr", by=BY, keep_metadata=False)
    assert "Metadata_qc_pass_cell_fraction" in got.obs.columns
    np.testing.assert_array_equal(got.obs["Metadata_qc_pass_cell_fraction"].to_numpy(),
                                  ref.obs["Metadata_qc_pass_cell_fraction"].to_numpy())


def test_parquet_flag_with_missing_values_is_still_a_fraction(qcd, tmp_path):
    df = ip.io.to_pandas(qcd)
    df["Metadata_qc_pass"] = df["Metadata_qc_pass"].astype(object)
    df.loc[df.index[:3], "Metadata_qc_pass"] = None
    path = tmp_path / "nulls.parquet"
    df.to_parquet(path)
    got = ip.pp.aggregate(path, by=BY)
    flagged = df["Metadata_qc_pass"].eq(True)  # missing = not flagged
    expect = flagged.groupby([df[k] for k in BY]).mean()
    gotser = pd.Series(got.obs["Metadata_qc_pass_cell_fraction"].to_numpy(),
                       index=pd.MultiIndex.from_frame(got.obs[BY].astype(object)))
    np.testing.assert_allclose(gotser.loc[expect.index].to_numpy(), expect.to_numpy())
