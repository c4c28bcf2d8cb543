"""At home in scverse: dir() hygiene, ip.concat vs ad.concat, every bundled dataset stores as h5ad and zarr."""

from __future__ import annotations

import inspect
import types
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import imgprof as ip

NAMESPACES = ["io", "im", "pp", "tl", "pl", "metrics", "bench", "mm", "datasets"]


@pytest.mark.parametrize("ns", ["", *NAMESPACES])
def test_dir_shows_only_the_public_api(ns):
    mod = ip if not ns else getattr(ip, ns)
    names = dir(mod)
    assert names == sorted(mod.__all__)
    for leftover in ("importlib", "TYPE_CHECKING", "annotations", "Any"):
        assert leftover not in names, f"{leftover} in dir(ip{'.' + ns if ns else ''})"
    for name in names:
        value = getattr(mod, name)  # every advertised name resolves
        if isinstance(value, types.ModuleType):  # only the top level lists sub-namespaces
            assert not ns and name in NAMESPACES, f"submodule {name!r} in dir(ip.{ns})"


def test_dir_no_submodule_file_names():
    assert "bench" not in dir(ip.pl) and "embedding" not in dir(ip.tl)
    assert "umap" in dir(ip.tl) and "neighbors" in dir(ip.tl)


def _two_runs():
    a = ip.datasets.simulate(n_plates=2, seed=0)
    b = ip.datasets.simulate(n_plates=2, seed=1)
    ip.pp.normalize(b, method="standardize")
    return a, b


def test_concat_keeps_var_anatomy_and_provenance_unlike_ad_concat():
    a, b = _two_runs()
    plain = ad.concat([a, b])
    assert plain.var.shape[1] == 0 and "imgprof" not in plain.uns  # what anndata alone gives
    both = ip.concat({"run1": a, "run2": b}, label="run", index_unique="-")
    # same data and obs as anndata's own concat
    ref = ad.concat({"run1": a, "run2": b}, label="run", index_unique="-")
    np.testing.assert_array_equal(both.X, ref.X)
    pd.testing.assert_frame_equal(both.obs, ref.obs)
    # anatomy kept, identical to the inputs'
    pd.testing.assert_frame_equal(both.var, a.var)
    # provenance: every input step, tagged with its input, then the concat step
    prov = ip.provenance(both)
    fns = prov["function"].tolist()
    assert fns == ["datasets.simulate", "datasets.simulate", "pp.normalize", "concat"]
    assert [e.get("input") for e in prov["extra"].iloc[:3]] == ["run1", "run2", "run2"]
    assert prov["extra"].iloc[-1]["n_obs_per_input"] == {"run1": a.n_obs, "run2": b.n_obs}
    assert both.uns["imgprof"]["level"] == a.uns["imgprof"]["level"]
    assert both.uns["imgprof"]["columns"] == [*a.obs.columns, "run", *a.var_names]
    assert a.n_obs == 128 and "imgprof" in a.uns and len(ip.provenance(a)) == 1  # inputs untouched


def test_concat_outer_join_derives_anatomy_of_partial_features():
    a, b = _two_runs()
    a2 = a[:, a.var_names[:150]].copy()
    b2 = b[:, b.var_names[50:]].copy()
    out = ip.concat([a2, b2], join="outer", keys=["x", "y"], label="src", index_unique="-")
    assert out.n_vars == 200 and out.var["compartment"].notna().all()
    pd.testing.assert_series_equal(out.var["feature_group"].astype(str), a.var.loc[out.var_names, "feature_group"].astype(str),
                                   check_names=False)
    assert np.isnan(out[out.obs["src"] == "x", a.var_names[160]].X).all()


def test_concat_round_trips_and_refuses_bad_input(tmp_path):
    a, b = _two_runs()
    both = ip.concat([a, b], index_unique="-")
    both.write_h5ad(tmp_path / "both.h5ad")
    back = ad.read_h5ad(tmp_path / "both.h5ad")
    assert ip.provenance(back)["function"].tolist() == ip.provenance(both)["function"].tolist()
    with pytest.raises(ValueError, match="keys"):
        ip.concat([a, b], keys=["only-one"])
    with pytest.raises(TypeError, match="not an AnnData"):
        ip.concat([a, a.to_df()])
    cells = a.copy()
    cells.uns["imgprof"]["level"] = "single_cell"
    with pytest.raises(ValueError, match="different profile levels"):
        ip.concat([cells, b])


def _bundled_anndata():
    for name in ip.datasets.__all__:
        fn = getattr(ip.datasets, name)
        sig = inspect.signature(fn)
        if any(p.default is inspect.Parameter.empty for p in sig.parameters.values()):
            continue
        if "AnnData" not in str(sig.return_annotation):
            continue
        yield name


@pytest.mark.parametrize("name", list(_bundled_anndata()))
def test_every_bundled_dataset_round_trips_h5ad_and_zarr(name, tmp_path):
    adata = getattr(ip.datasets, name)()
    assert isinstance(adata, ad.AnnData)
    for ext, write, read in (("h5ad", "write_h5ad", ad.read_h5ad), ("zarr", "write_zarr", ad.read_zarr)):
        path = tmp_path / f"{name}.{ext}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            getattr(adata, write)(path)
        back = read(path)
        assert back.shape == adata.shape
        assert list(back.obs.columns) == list(adata.obs.columns)
        assert list(back.var.columns) == list(adata.var.columns)
        np.testing.assert_allclose(np.asarray(back.X, dtype=float), np.asarray(adata.X, dtype=float), equal_nan=True)
        assert ip.provenance(back)["function"].tolist() == ip.provenance(adata)["function"].tolist()


def test_bundled_dataset_list_is_not_empty():
    assert {"lincs_plate", "nelisa", "cmqtl_crispri"} <= set(_bundled_anndata())


def test_lincs_case_clash_renamed_with_documented_suffix():
    adata = ip.datasets.lincs_plate()
    cols = [c.lower() for c in adata.obs.columns]
    assert len(cols) == len(set(cols))
    assert "Metadata_Plate_Map_Name_2" in adata.obs and "Metadata_plate_map_name" in adata.obs
    assert adata.uns["imgprof"]["renamed_columns"] == {"Metadata_Plate_Map_Name": "Metadata_Plate_Map_Name_2"}


def test_make_storable_unit(tmp_path):
    from imgprof._core.storable import make_storable

    a = ad.AnnData(np.ones((3, 2)), obs=pd.DataFrame({"A": ["x", "y", "z"], "a": ["x", "y", "z"], "A_2": [1, 2, 3],
                                                      "empty": [None, None, None]}, index=["r0", "r1", "r2"]))
    renamed = make_storable(a)
    assert renamed == {"a": "a_3"}  # "a_2" clashes with the existing "A_2"
    assert a.obs["empty"].dtype == float and a.obs["empty"].isna().all()
    a.write_h5ad(tmp_path / "a.h5ad")
    a.write_zarr(tmp_path / "a.zarr")
    assert list(ad.read_zarr(tmp_path / "a.zarr").obs.columns) == ["A", "a_3", "A_2", "empty"]


def test_aggregate_summarises_cell_level_qc_flags():
    cells = ip.datasets.simulate(n_plates=1, n_perturbations=4, n_moa=2, n_controls=4, n_features=20,
                                 level="single_cell", seed=0)
    ip.pp.qc(cells)
    qc_cols = [c for c in cells.obs.columns if c.startswith("Metadata_qc")]
    assert "Metadata_qc_pass" in qc_cols
    by = ["Metadata_Plate", "Metadata_Well"]
    wells = ip.pp.aggregate(cells, by=by)
    for c in qc_cols:
        assert c not in wells.obs.columns, f"cell-level QC column {c} leaked into well-level .obs"
    key = cells.obs[by].astype(str).agg("/".join, axis=1)
    expect = cells.obs["Metadata_qc_pass"].groupby(key.to_numpy()).mean()
    got = pd.Series(wells.obs["Metadata_qc_pass_cell_fraction"].to_numpy(),
                    index=wells.obs[by].astype(str).agg("/".join, axis=1).to_numpy())
    np.testing.assert_allclose(got.loc[expect.index].to_numpy(), expect.to_numpy())
    assert ((got >= 0) & (got <= 1)).all()
    summary = ip.provenance(wells).iloc[-1]["extra"]["qc_summarised"]
    assert summary["Metadata_qc_pass"] == "Metadata_qc_pass_cell_fraction"
    assert summary["Metadata_qc_outlier_fraction"] == "dropped"
    # and the well table still round-trips through the writers
    df = ip.io.to_pandas(wells)
    assert "Metadata_qc_pass_cell_fraction" in df.columns and "Metadata_qc_pass" not in df.columns
