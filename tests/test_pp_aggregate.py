"""ip.pp.aggregate: parity with pycytominer.aggregate on real single cells and simulated data, dask, streaming, bad input."""

from __future__ import annotations

import sqlite3
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import shared

import imgprof as ip

pycytominer = pytest.importorskip("pycytominer")

KEYS = ["Metadata_Plate", "Metadata_Well"]


# ----------------------------------------------------------------------------------------------
# real single-cell tables
# ----------------------------------------------------------------------------------------------
def _nf1_cells() -> pd.DataFrame:
    """NF1 Schwann-cell CellProfiler SQLite: Per_Cells + Per_Cytoplasm + well metadata from Per_Image."""
    con = sqlite3.connect(shared("cytotable", "NF1_SchwannCell", "all_cellprofiler.sqlite"))
    try:
        cells = pd.read_sql("select * from Per_Cells", con)
        cyto = pd.read_sql("select * from Per_Cytoplasm", con)
        image = pd.read_sql(
            "select ImageNumber, Image_Metadata_Plate, Image_Metadata_Well, Image_Metadata_Site from Per_Image", con
        )
    finally:
        con.close()
    df = cells.merge(cyto, left_on=["ImageNumber", "Cells_Number_Object_Number"], right_on=["ImageNumber", "Cytoplasm_Parent_Cells"])
    df = image.merge(df, on="ImageNumber").rename(
        columns={"Image_Metadata_Plate": "Metadata_Plate", "Image_Metadata_Well": "Metadata_Well", "Image_Metadata_Site": "Metadata_Site"}
    )
    return df.rename(columns={"ImageNumber": "Metadata_ImageNumber"})


def _examplehuman_cells() -> tuple[pd.DataFrame, list[str]]:
    df = pd.read_parquet(shared("pycytominer", "cytotable", "examplehuman_joined_profiles.parquet"))
    meta = [c for c in df.columns if not c.startswith(("Cells_", "Cytoplasm_", "Nuclei_"))]
    # one image only: make 7 real-valued pseudo-wells from the object number so groups are non-trivial
    df["Metadata_Well"] = "W" + (df["Metadata_ObjectNumber"] % 7).astype(str)
    df["Metadata_Plate"] = "ExampleHuman"
    return df, meta + ["Metadata_Well", "Metadata_Plate"]


def _br00121431_cells() -> pd.DataFrame:
    """One JUMP Target2 site: Cells/Cytoplasm/Nuclei CSVs joined on the parent objects."""
    base = ("pycytominer", "cellprofiler_csv", "BR00121431-A02-1")
    cells = pd.read_csv(shared(*base, "Cells.csv.gz"))
    cyto = pd.read_csv(shared(*base, "Cytoplasm.csv.gz"))
    nuc = pd.read_csv(shared(*base, "Nuclei.csv.gz"))
    image = pd.read_csv(shared(*base, "Image.csv.gz"), usecols=["ImageNumber", "Metadata_Plate", "Metadata_Well", "Metadata_Site"])

    def pre(t, comp, keep):
        return t.rename(columns={c: f"{comp}_{c}" for c in t.columns if c not in keep})

    cells = pre(cells, "Cells", ["ImageNumber"])
    cyto = pre(cyto, "Cytoplasm", ["ImageNumber"])
    nuc = pre(nuc, "Nuclei", ["ImageNumber"])
    df = cells.merge(cyto, left_on=["ImageNumber", "Cells_ObjectNumber"], right_on=["ImageNumber", "Cytoplasm_Parent_Cells"])
    df = df.merge(nuc, left_on=["ImageNumber", "Cytoplasm_Parent_Nuclei"], right_on=["ImageNumber", "Nuclei_ObjectNumber"])
    return image.merge(df, on="ImageNumber").rename(columns={"ImageNumber": "Metadata_ImageNumber"})


def _compare(ours: pd.DataFrame, ref: pd.DataFrame, keys, feats, atol=1e-6):
    assert len(ours) == len(ref)
    pd.testing.assert_frame_equal(
        ours[keys].reset_index(drop=True).astype(object).fillna("<NA>").astype(str),
        ref[keys].reset_index(drop=True).astype(object).fillna("<NA>").astype(str),
    )
    a, b = ours[feats].to_numpy(dtype=float), ref[feats].to_numpy(dtype=float)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=atol, equal_nan=True)


@pytest.mark.parametrize("func", ["median", "mean"])
def test_parity_nf1_sqlite(func):
    df = _nf1_cells()
    feats = [c for c in df.columns if c.startswith(("Cells_", "Cytoplasm_"))]
    adata = ip.io.from_pandas(df, features=feats)
    wells = ip.pp.aggregate(adata, by=KEYS, operation=func)
    ref = pycytominer.aggregate(df, strata=KEYS, features=feats, operation=func)
    assert wells.n_obs == 8 and wells.uns["imgprof"]["level"] == "well"
    assert wells.obs["Metadata_Object_Count"].sum() == len(df)
    _compare(ip.io.to_pandas(wells), ref, KEYS, feats)


@pytest.mark.parametrize("func", ["median", "mean"])
def test_parity_examplehuman_parquet(func):
    df, meta = _examplehuman_cells()
    feats = [c for c in df.columns if c not in meta]
    assert any(df[c].dtype.kind == "i" for c in feats)  # integer features are part of the test
    adata = ip.io.from_pandas(df, metadata=meta)
    wells = ip.pp.aggregate(adata, by=KEYS, operation=func)
    ref = pycytominer.aggregate(df, strata=KEYS, features=feats, operation=func)
    _compare(ip.io.to_pandas(wells), ref, KEYS, feats)


def test_parity_jump_site_csv_wide():
    df = _br00121431_cells()
    feats = [c for c in df.columns if c.startswith(("Cells_", "Cytoplasm_", "Nuclei_"))]
    feats = [c for c in feats if pd.api.types.is_numeric_dtype(df[c])]
    meta = [c for c in df.columns if c not in feats]
    adata = ip.io.from_pandas(df, metadata=meta, features=feats)
    assert adata.n_vars > 5000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a few all-NaN features stay NaN (checked below)
        wells = ip.pp.aggregate(adata, by=KEYS)
    ref = pycytominer.aggregate(df, strata=KEYS, features=feats, operation="median")
    _compare(ip.io.to_pandas(wells), ref, KEYS, feats)
    # the NaN that remain are exactly the features with no value in the well
    assert np.array_equal(np.isnan(wells.X[0]), df[feats].isna().all().to_numpy())


@pytest.mark.parametrize("func", ["median", "mean"])
def test_parity_simulated_nan_constant(func):
    cells = ip.datasets.simulate(
        n_plates=2, n_perturbations=6, n_moa=2, n_controls=6, n_features=40, level="single_cell",
        nan_fraction=0.1, n_constant=3, seed=3,
    )
    df = ip.io.to_pandas(cells)
    feats = list(cells.var_names)
    ref = pycytominer.aggregate(df, strata=KEYS, features=feats, operation=func)
    wells = ip.pp.aggregate(cells, operation=func)
    _compare(ip.io.to_pandas(wells), ref, KEYS, feats)
    # metadata constant within a well are kept, varying ones (site, object number) are not
    assert {"Metadata_Perturbation", "Metadata_moa", "Metadata_Count_Cells"} <= set(wells.obs.columns)
    varying = [c for c in cells.obs.columns if c == "Metadata_Site" or c.endswith("ObjectNumber")]
    assert len(varying) == 2 and not set(varying) & set(wells.obs.columns)
    steps = ip.provenance(wells)
    assert steps["function"].iloc[-1] == "pp.aggregate"
    assert set(steps["extra"].iloc[-1]["dropped_metadata"]) == set(varying)


def test_nan_keys_form_a_group_like_pycytominer():
    cells = ip.datasets.simulate(n_plates=1, n_perturbations=4, n_moa=2, n_controls=4, n_features=12, level="single_cell", seed=0)
    cells.obs["Metadata_Well"] = cells.obs["Metadata_Well"].astype(object)
    cells.obs.iloc[:5, cells.obs.columns.get_loc("Metadata_Well")] = np.nan
    df = ip.io.to_pandas(cells)
    ref = pycytominer.aggregate(df, strata=KEYS, features=list(cells.var_names))
    ours = ip.pp.aggregate(cells)
    assert ours.n_obs == len(ref)
    assert pd.isna(ours.obs["Metadata_Well"].iloc[-1])  # NaN group sorted last, as pandas
    np.testing.assert_allclose(ours.X, ref[list(cells.var_names)].to_numpy(), rtol=1e-12)
    dropped = ip.pp.aggregate(cells, dropna=True)
    assert dropped.n_obs == ours.n_obs - 1
    assert ip.provenance(dropped)["extra"].iloc[-1]["n_rows_missing_key"] == 5


def test_input_untouched_and_layer():
    cells = ip.datasets.simulate(n_plates=1, n_perturbations=4, n_moa=2, n_controls=4, n_features=10, level="single_cell", seed=1)
    before = cells.X.copy()
    cells.layers["double"] = cells.X * 2
    a = ip.pp.aggregate(cells, operation="mean")
    b = ip.pp.aggregate(cells, operation="mean", layer="double")
    np.testing.assert_allclose(b.X, 2 * a.X)
    np.testing.assert_array_equal(cells.X, before)
    assert cells.uns["imgprof"]["level"] == "single_cell"


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------
def test_missing_by_key_names_column():
    cells = ip.datasets.simulate(n_plates=1, n_perturbations=4, n_moa=2, n_controls=4, n_features=10, level="single_cell", seed=0)
    with pytest.raises(KeyError, match="Metadata_Wel"):
        ip.pp.aggregate(cells, by=["Metadata_Plate", "Metadata_Wel"])
    with pytest.raises(ValueError, match="operation"):
        ip.pp.aggregate(cells, operation="sum")


def test_inf_raises_naming_feature():
    cells = ip.datasets.simulate(n_plates=1, n_perturbations=4, n_moa=2, n_controls=4, n_features=10, level="single_cell", seed=0)
    cells.X[4, 2] = np.inf
    with pytest.raises(ValueError, match=str(cells.var_names[2])):
        ip.pp.aggregate(cells)
    out = ip.pp.aggregate(cells, inf="propagate", operation="mean")
    assert np.isinf(out.X[:, 2]).sum() == 1


def test_all_nan_feature_warns_and_stays_nan():
    cells = ip.datasets.simulate(n_plates=1, n_perturbations=4, n_moa=2, n_controls=4, n_features=10, level="single_cell", seed=0)
    cells.X[:, 5] = np.nan
    with pytest.warns(UserWarning, match=str(cells.var_names[5])):
        wells = ip.pp.aggregate(cells)
    assert np.isnan(wells.X[:, 5]).all() and not np.isnan(np.delete(wells.X, 5, axis=1)).any()
    assert ip.provenance(wells)["extra"].iloc[-1]["n_nan_values"] == wells.n_obs


def test_integer_features_are_reduced_as_float():
    df = pd.DataFrame(
        {"Metadata_Plate": ["p"] * 4, "Metadata_Well": ["A01", "A01", "B01", "B01"], "Cells_Count": [1, 2, 3, 6]}
    )
    adata = ip.io.from_pandas(df)
    wells = ip.pp.aggregate(adata)
    assert wells.X.dtype == np.float64
    assert wells.X[:, 0].tolist() == [1.5, 4.5]


def test_keep_metadata_explicit_varying_raises():
    cells = ip.datasets.simulate(n_plates=1, n_perturbations=4, n_moa=2, n_controls=4, n_features=10, level="single_cell", seed=0)
    with pytest.raises(ValueError, match="Metadata_Site"):
        ip.pp.aggregate(cells, keep_metadata=["Metadata_Site"])
    w = ip.pp.aggregate(cells, keep_metadata=False, count_key=None)
    assert list(w.obs.columns) == KEYS


# ----------------------------------------------------------------------------------------------
# dask, distributed, streaming
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim_cells():
    return ip.datasets.simulate(
        n_plates=2, n_perturbations=8, n_moa=2, n_controls=8, n_features=30, level="single_cell", nan_fraction=0.05, seed=5
    )


@pytest.mark.parametrize("shuffle", [False, True])
def test_dask_matches_numpy(sim_cells, shuffle):
    da = pytest.importorskip("dask.array")
    cells = sim_cells
    if shuffle:
        cells = cells[np.random.default_rng(0).permutation(cells.n_obs)].copy()
    ref = ip.pp.aggregate(cells)
    lazy = cells.copy()
    lazy.X = da.from_array(np.asarray(cells.X), chunks=(97, 11))
    out = ip.pp.aggregate(lazy)
    np.testing.assert_allclose(out.X, ref.X, rtol=0, atol=0, equal_nan=True)
    pd.testing.assert_frame_equal(out.obs, ref.obs)
    assert ip.provenance(out)["extra"].iloc[-1]["dask"] is True


def test_dask_distributed_cluster(sim_cells):
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    lazy = sim_cells.copy()
    lazy.X = da.from_array(np.asarray(sim_cells.X), chunks=(150, 30))
    ref = ip.pp.aggregate(sim_cells)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster:
        with distributed.Client(cluster) as client:
            with distributed.get_task_stream(client) as ts:
                out = ip.pp.aggregate(lazy)
                lazy_wells = out.copy()
                lazy_wells.X = da.from_array(out.X, chunks=(10, 30))
                sig = ip.pp.consensus(lazy_wells, by="Metadata_Perturbation", operation="modz", single_replicate="ignore")
    assert len(ts.data) > 0  # the work ran as tasks on the cluster
    np.testing.assert_allclose(out.X, ref.X, equal_nan=True)
    ref_sig = ip.pp.consensus(ref, by="Metadata_Perturbation", operation="modz", single_replicate="ignore")
    np.testing.assert_allclose(sig.X, ref_sig.X, rtol=1e-12, equal_nan=True)


def test_parquet_streaming_matches_in_memory(sim_cells, tmp_path):
    df = ip.io.to_pandas(sim_cells).sort_values(KEYS, kind="stable")
    ref = ip.pp.aggregate(sim_cells)
    for row_group in (7, 33, 10_000):  # groups spanning several row groups, and one row group
        path = tmp_path / f"cells_{row_group}.parquet"
        df.to_parquet(path, row_group_size=row_group)
        out = ip.pp.aggregate(path)
        np.testing.assert_allclose(out.X, ref.X, rtol=1e-12, equal_nan=True)
        assert list(out.var_names) == list(ref.var_names)
        pd.testing.assert_frame_equal(
            out.obs[KEYS + ["Metadata_Object_Count", "Metadata_Perturbation"]].reset_index(drop=True),
            ref.obs[KEYS + ["Metadata_Object_Count", "Metadata_Perturbation"]].reset_index(drop=True),
            check_dtype=False, check_categorical=False,
        )
    assert ip.provenance(out)["extra"].iloc[-1]["streamed"] is True
    # also pycytominer on the same file
    pref = pycytominer.aggregate(df, strata=KEYS, features=list(sim_cells.var_names))
    np.testing.assert_allclose(out.X, pref[list(sim_cells.var_names)].to_numpy(), rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("dropna", [False, True])
def test_parquet_ungrouped_file_is_bucketed_on_disk(sim_cells, tmp_path, monkeypatch, dropna):
    import importlib

    monkeypatch.setattr(importlib.import_module("imgprof.pp._aggregate_stream"), "_BUCKET_BYTES", 30 * 8 * 150)  # ~150 rows a bucket
    cells = sim_cells.copy()
    cells.obs["Metadata_Well"] = cells.obs["Metadata_Well"].astype(object)
    cells.obs.iloc[:7, cells.obs.columns.get_loc("Metadata_Well")] = None  # a missing-key group
    df = ip.io.to_pandas(cells).sample(frac=1.0, random_state=0)
    path = tmp_path / "shuffled.parquet"
    df.to_parquet(path, row_group_size=50)
    spill = tmp_path / "spill"
    spill.mkdir()
    out = ip.pp.aggregate(path, spill_dir=spill, dropna=dropna)
    ref = ip.pp.aggregate(cells, dropna=dropna)
    np.testing.assert_allclose(out.X, ref.X, rtol=1e-12, equal_nan=True)
    _obs_equal(out, ref, KEYS + ["Metadata_Object_Count", "Metadata_Perturbation"])
    step = ip.provenance(out)["extra"].iloc[-1]
    assert step["partitioned_buckets"] > 1 and step["n_cells"] == cells.n_obs
    assert step["n_rows_missing_key"] == (7 if dropna else 0)
    assert list(spill.iterdir()) == []  # bucket files removed
    if not dropna:  # and the same numbers as pycytominer on the shuffled table
        pref = pycytominer.aggregate(df, strata=KEYS, features=list(cells.var_names))
        np.testing.assert_allclose(out.X, pref[list(cells.var_names)].to_numpy(), rtol=1e-12, equal_nan=True)
    with pytest.raises(KeyError, match="Metadata_Nope"):
        ip.pp.aggregate(path, by=["Metadata_Nope"])
    with pytest.raises(ValueError, match="spill_dir"):
        ip.pp.aggregate(cells, spill_dir=spill)


@pytest.mark.parametrize("dropna", [False, True])
def test_parquet_ungrouped_file_is_read_by_column_blocks(sim_cells, tmp_path, monkeypatch, dropna):
    """Without spill_dir, an ungrouped parquet file is read a few columns of every row at a time
    (no temporary file); above the size limit it falls back to the buckets on disk."""
    import importlib

    mod = importlib.import_module("imgprof.pp._aggregate_stream")
    cells = sim_cells.copy()
    cells.obs["Metadata_Well"] = cells.obs["Metadata_Well"].astype(object)
    cells.obs.iloc[:7, cells.obs.columns.get_loc("Metadata_Well")] = None  # a missing-key group
    cells.X[3, 4] = np.nan
    df = ip.io.to_pandas(cells).sample(frac=1.0, random_state=1)
    path = tmp_path / "shuffled.parquet"
    df.to_parquet(path, row_group_size=70)
    monkeypatch.setattr(mod, "_BUCKET_BYTES", 8 * cells.n_obs * 7)  # 7 columns a pass
    ref = ip.pp.aggregate(cells, dropna=dropna)
    for jobs in (1, 2):
        out = ip.pp.aggregate(path, dropna=dropna, n_jobs=jobs)
        np.testing.assert_array_equal(out.X, ref.X)
        _obs_equal(out, ref, KEYS + ["Metadata_Object_Count", "Metadata_Perturbation"])
        step = ip.provenance(out)["extra"].iloc[-1]
        assert step["column_passes"] == -(-cells.n_vars // 7) and "partitioned_buckets" not in step
        assert step["n_cells"] == cells.n_obs and step["n_rows_missing_key"] == (7 if dropna else 0)
    if not dropna:  # the same numbers as pycytominer on the shuffled table
        pref = pycytominer.aggregate(df, strata=KEYS, features=list(cells.var_names))
        np.testing.assert_array_equal(out.X, pref[list(cells.var_names)].to_numpy())
    mean = ip.pp.aggregate(path, dropna=dropna, operation="mean")
    np.testing.assert_allclose(mean.X, ip.pp.aggregate(cells, dropna=dropna, operation="mean").X, rtol=1e-12)
    monkeypatch.setattr(mod, "_COLUMN_PASS_MAX_BYTES", 0)  # too many rows for a column pass: buckets on disk
    out = ip.pp.aggregate(path, dropna=dropna)
    np.testing.assert_array_equal(out.X, ref.X)
    assert ip.provenance(out)["extra"].iloc[-1]["partitioned_buckets"] >= 1


def _write_zarr(adata, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_zarr(path, **kw)


def _obs_equal(out, ref, cols):
    def norm(obs):  # missing keys as one marker (None or NaN)
        df = obs[cols].reset_index(drop=True).astype(object)
        return df.where(df.notna(), "<NA>")

    pd.testing.assert_frame_equal(norm(out.obs), norm(ref.obs), check_dtype=False)


def test_zarr_store_is_read_lazily(sim_cells, tmp_path):
    path = tmp_path / "cells.zarr"
    _write_zarr(sim_cells, path)
    lazy = ip.io.read_zarr_lazy(path)
    assert type(lazy.X).__module__.startswith("dask")
    out = ip.pp.aggregate(path)
    np.testing.assert_allclose(out.X, ip.pp.aggregate(sim_cells).X, equal_nan=True)


def test_zarr_grouped_store_streams_chunk_by_chunk(sim_cells, tmp_path, monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.import_module("imgprof.io._stream"), "_ZARR_UNIT_BYTES", 1)  # one row chunk per read
    cells = sim_cells[np.lexsort([sim_cells.obs[k].astype(str) for k in reversed(KEYS)])].copy()
    cells.layers["double"] = np.asarray(cells.X) * 2
    path = tmp_path / "sorted.zarr"
    _write_zarr(cells, path, chunks=(37, 7))  # groups span chunks; column chunks become blocks
    ref = ip.pp.aggregate(cells)
    out = ip.pp.aggregate(path)
    np.testing.assert_allclose(out.X, ref.X, rtol=1e-12, equal_nan=True)
    _obs_equal(out, ref, KEYS + ["Metadata_Object_Count", "Metadata_Perturbation"])
    step = ip.provenance(out)["extra"].iloc[-1]
    assert step["streamed"] is True and step["n_chunks_read"] > 1
    assert list(out.var_names) == list(cells.var_names)
    # keep_metadata variants, a layer, the mean
    lean = ip.pp.aggregate(path, keep_metadata=False)
    assert list(lean.obs.columns) == KEYS + ["Metadata_Object_Count"]
    listed = ip.pp.aggregate(path, keep_metadata=["Metadata_Perturbation"])
    assert list(listed.obs.columns) == KEYS + ["Metadata_Object_Count", "Metadata_Perturbation"]
    np.testing.assert_allclose(ip.pp.aggregate(path, layer="double").X, 2 * ref.X, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(
        ip.pp.aggregate(path, operation="mean").X, ip.pp.aggregate(cells, operation="mean").X, rtol=1e-12, equal_nan=True
    )
    with pytest.raises(KeyError, match="Metadata_Nope"):
        ip.pp.aggregate(path, by=["Metadata_Nope"])
    with pytest.raises(KeyError, match="layer='nope'"):
        ip.pp.aggregate(path, layer="nope")


def test_zarr_ungrouped_store_is_bucketed_on_disk(sim_cells, tmp_path, monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.import_module("imgprof.pp._aggregate_stream"), "_BUCKET_BYTES", 30 * 8 * 200)
    cells = sim_cells[np.random.default_rng(1).permutation(sim_cells.n_obs)].copy()
    path = tmp_path / "shuffled.zarr"
    _write_zarr(cells, path, chunks=(50, 30))
    out = ip.pp.aggregate(path)
    ref = ip.pp.aggregate(sim_cells)
    np.testing.assert_allclose(out.X, ref.X, rtol=1e-12, equal_nan=True)
    _obs_equal(out, ref, KEYS + ["Metadata_Object_Count", "Metadata_Perturbation"])
    assert ip.provenance(out)["extra"].iloc[-1]["partitioned_buckets"] > 1


def test_zarr_sparse_store_goes_the_dask_way(tmp_path):
    import scipy.sparse as sp

    cells = ip.datasets.simulate(n_plates=1, n_features=10, level="single_cell", seed=0)
    cells.X = sp.csr_matrix(np.nan_to_num(np.asarray(cells.X)))
    path = tmp_path / "sparse.zarr"
    _write_zarr(cells, path)
    out = ip.pp.aggregate(path)
    np.testing.assert_allclose(out.X, ip.pp.aggregate(cells).X, rtol=1e-12)
    assert ip.provenance(out)["extra"].iloc[-1]["dask"] is True


def test_parquet_streaming_dtypes_missing_keys_and_inf(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame({
        "Metadata_Plate": ["p1"] * n,
        "Metadata_Well": np.repeat(["A01", "A02", None], n // 3),
        "Cells_Count_Int": pd.array(rng.integers(0, 9, n), dtype="Int64"),
        "Cells_Flag_Bool": pd.array(rng.random(n) > 0.5, dtype="boolean"),
        "Cells_Area": rng.random(n),
    })
    df.loc[3, "Cells_Count_Int"] = pd.NA
    df.loc[4, "Cells_Flag_Bool"] = pd.NA
    path = tmp_path / "mixed.parquet"
    df.to_parquet(path, row_group_size=16)
    feats = ["Cells_Count_Int", "Cells_Flag_Bool", "Cells_Area"]
    ref = pycytominer.aggregate(df.astype({"Cells_Count_Int": float, "Cells_Flag_Bool": float}), strata=KEYS, features=feats)
    out = ip.pp.aggregate(path)
    np.testing.assert_allclose(out.X, ref[feats].to_numpy(dtype=float), rtol=1e-12)
    assert pd.isna(out.obs["Metadata_Well"].iloc[-1])  # missing well: its own group, last
    kept = ip.pp.aggregate(path, dropna=True)
    assert kept.n_obs == 2 and ip.provenance(kept)["extra"].iloc[-1]["n_rows_missing_key"] == n // 3
    df.loc[7, "Cells_Area"] = np.inf
    df.to_parquet(path, row_group_size=16)
    with pytest.raises(ValueError, match="Cells_Area"):
        ip.pp.aggregate(path)


def test_parquet_folder_partitioned_by_plate(sim_cells, tmp_path):
    df = ip.io.to_pandas(sim_cells)
    folder = tmp_path / "by_plate"
    folder.mkdir()
    for i, (_, part) in enumerate(df.groupby("Metadata_Plate", sort=True)):
        part.to_parquet(folder / f"part{i}.parquet")
    out = ip.pp.aggregate(folder)
    np.testing.assert_allclose(out.X, ip.pp.aggregate(sim_cells).X, equal_nan=True)
    assert ip.provenance(out)["extra"].iloc[-1]["n_files"] == 2
    # every file must hold the same columns: the one that does not is named
    part.drop(columns=[sim_cells.var_names[0]]).to_parquet(folder / "part1.parquet")
    with pytest.raises(KeyError, match="part1.parquet"):
        ip.pp.aggregate(folder)


@pytest.mark.slow
def test_dask_distributed_two_process_workers(sim_cells):
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    lazy = sim_cells.copy()
    lazy.X = da.from_array(np.asarray(sim_cells.X), chunks=(200, 15))
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GB", dashboard_address=":0"
    ) as cluster, distributed.Client(cluster):
        out = ip.pp.aggregate(lazy, operation="median")
        ip.pp.qc(lazy, by="Metadata_Plate")
    np.testing.assert_allclose(out.X, ip.pp.aggregate(sim_cells).X, equal_nan=True)
    assert "Metadata_qc_pass" in lazy.obs.columns
