"""No silent corruption in the API (issue #14): dtype records, views, selections, overwrites, capped sizes.

Integer features come back as the normalized floats (pycytominer's own normalize
test data, and the CytoTable ExampleHuman profiles); in-place steps never touch
a view's parent; a boolean Series selects by index; capped k / n_comps are
warned about and recorded as used.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import imgprof as ip
from imgprof._core.selection import resolve_rows

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
EXAMPLEHUMAN = DATA / "pycytominer" / "cytotable" / "examplehuman_joined_profiles.parquet"

# pycytominer tests/test_normalize.py: integer features on two plates
PYCYTO_DF = pd.DataFrame(
    {
        "Metadata_plate": ["a", "a", "a", "a", "b", "b", "b", "b"],
        "Metadata_treatment": ["drug", "drug", "control", "control", "drug", "drug", "control", "control"],
        "x": [1, 2, 8, 2, 5, 5, 5, 1],
        "y": [3, 1, 7, 4, 5, 9, 6, 1],
        "z": [1, 8, 2, 5, 6, 22, 2, 2],
        "zz": [14, 46, 1, 6, 30, 100, 2, 2],
    }
)


@pytest.mark.parametrize("method", ["standardize", "robustize", "mad_robustize"])
@pytest.mark.parametrize("samples", ["all", "Metadata_treatment == 'control'"])
def test_integer_features_normalized_match_pycytominer(method, samples):
    from pycytominer import normalize as pcm_normalize

    ref = pcm_normalize(PYCYTO_DF.copy(), features=["x", "y", "z", "zz"], meta_features="infer", samples=samples,
                        method=method)
    adata = ip.io.from_pandas(PYCYTO_DF.copy())
    assert (adata.var["input_dtype"] == "int64").all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ip.pp.normalize(adata, method, samples=samples, zero_scale="epsilon" if method == "mad_robustize" else "warn")
    out = ip.io.to_pandas(adata)
    for c in ["x", "y", "z", "zz"]:
        assert out[c].dtype.kind == "f", f"{c} came back as {out[c].dtype}"
    pd.testing.assert_frame_equal(out[ref.columns], ref, check_dtype=False, rtol=1e-9)
    assert not (out[["x", "y", "z", "zz"]] == out[["x", "y", "z", "zz"]].round()).all().all()


def test_integer_features_survive_csv_round_trip(tmp_path):
    adata = ip.io.from_pandas(PYCYTO_DF.copy())
    ip.pp.normalize(adata, "standardize", samples="all")
    path = tmp_path / "norm.csv"
    ip.io.write_profiles(adata, path)
    back = pd.read_csv(path)
    np.testing.assert_allclose(back[["x", "y", "z", "zz"]].to_numpy(), np.asarray(adata.X), rtol=1e-12)
    x = PYCYTO_DF["x"].to_numpy(dtype=float)
    assert back.loc[0, "x"] == pytest.approx((x[0] - x.mean()) / x.std())  # -1.12, not truncated to -1


def test_layer_export_is_not_cast_to_source_dtype():
    adata = ip.io.from_pandas(PYCYTO_DF.copy())
    ip.pp.normalize(adata, "standardize", samples="all", key_added="normalized")
    assert (adata.var["input_dtype"] == "int64").all()  # .X still holds the integers
    raw = ip.io.to_pandas(adata)
    assert raw["x"].dtype == np.int64 and raw["x"].tolist() == PYCYTO_DF["x"].tolist()
    norm = ip.io.to_pandas(adata, layer="normalized")
    np.testing.assert_allclose(norm[["x", "y", "z", "zz"]].to_numpy(), adata.layers["normalized"])


@pytest.mark.skipif(not EXAMPLEHUMAN.exists(), reason="shared data not available")
def test_examplehuman_integer_columns_not_truncated():
    df = pd.read_parquet(EXAMPLEHUMAN)
    meta = [c for c in df.columns if c.startswith(("Metadata_", "Image_"))]
    df = df.drop(columns=[c for c in df.columns if c not in meta and not pd.api.types.is_numeric_dtype(df[c])])
    ints = [c for c in df.columns if c not in meta and pd.api.types.is_integer_dtype(df[c])]
    assert len(ints) == 26
    adata = ip.io.from_pandas(df, metadata=meta)
    ip.pp.feature_select(adata, ["variance_threshold", "drop_na_columns"])
    kept = [c for c in ints if c in adata.var_names]
    assert kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ip.pp.normalize(adata, "standardize")
    out = ip.io.to_pandas(adata)
    X = pd.DataFrame(np.asarray(adata.X), columns=adata.var_names)
    for c in kept:
        assert out[c].dtype.kind == "f"
        np.testing.assert_allclose(out[c].to_numpy(), X[c].to_numpy(), rtol=0, atol=0, equal_nan=True)
    # the error the issue saw: up to ~1 per value
    assert float((out[kept] - out[kept].round()).abs().max().max()) > 0.1


# --------------------------------------------------------------------------- views


def _wells():
    return ip.datasets.simulate(n_plates=2, n_perturbations=4, n_moa=2, n_controls=4, n_features=12, seed=0)


@pytest.mark.parametrize(
    "step",
    [
        lambda a, **k: ip.pp.normalize(a, controls="Metadata_control_type == 'negcon'", **k),
        lambda a, **k: ip.pp.feature_select(a, **k),
        lambda a, **k: ip.pp.qc(a, **k),
        lambda a, **k: ip.tl.pca(a, n_comps=3, **k),
    ],
    ids=["normalize", "feature_select", "qc", "pca"],
)
def test_view_parent_never_modified(step):
    parent = _wells()
    X0, obs0, steps0 = parent.X.copy(), parent.obs.copy(), dict(parent.uns["imgprof"]["steps"])
    view = parent[parent.obs["Metadata_Plate"] == "plate_1"]
    with pytest.raises(ValueError, match="view"):
        step(view)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = step(view, copy=True)  # the documented way out
    assert out is not None and not out.is_view
    np.testing.assert_array_equal(parent.X, X0)
    pd.testing.assert_frame_equal(parent.obs, obs0)
    assert dict(parent.uns["imgprof"]["steps"]) == steps0


# --------------------------------------------------------------------------- selections


def test_series_selection_is_aligned_by_index():
    adata = _wells()
    ctrl = adata.obs["Metadata_control_type"] == "negcon"
    shuffled = ctrl.sample(frac=1.0, random_state=3)  # same labels, other order
    assert not (shuffled.to_numpy() == ctrl.to_numpy()).all()  # by position it would be wrong
    np.testing.assert_array_equal(resolve_rows(adata, shuffled), ctrl.to_numpy())
    a1, a2 = adata.copy(), adata.copy()
    ip.pp.normalize(a1, "standardize", controls="Metadata_control_type == 'negcon'")
    ip.pp.normalize(a2, "standardize", controls=shuffled)
    np.testing.assert_allclose(a1.X, a2.X)


def test_selection_forms_agree():
    adata = _wells()
    ctrl = (adata.obs["Metadata_control_type"] == "negcon").to_numpy()
    names = list(adata.obs_names[ctrl])
    adata.obs["is_ctrl"] = ctrl
    for sel in ["Metadata_control_type == 'negcon'", ctrl, list(ctrl), pd.Series(ctrl, index=adata.obs_names),
                names, pd.Index(names), "is_ctrl"]:
        np.testing.assert_array_equal(resolve_rows(adata, sel), ctrl)
    assert resolve_rows(adata, None).all()
    assert not resolve_rows(adata, "Metadata_moa == 'zzz'", allow_empty=True).any()


# --------------------------------------------------------------------------- overwrites and caps


def test_overwrite_true_allows_replacing_annotations():
    cells = ip.datasets.simulate(n_plates=1, n_perturbations=4, n_moa=2, n_controls=4, n_features=12,
                                 level="single_cell", seed=0)
    with pytest.raises(ValueError, match="overwrite=True"):
        ip.pp.aggregate(cells, count_key="Metadata_moa")
    wells = ip.pp.aggregate(cells, count_key="Metadata_moa", overwrite=True)
    assert wells.obs["Metadata_moa"].dtype.kind == "i"
    assert cells.obs["Metadata_moa"].dtype.kind != "i"  # input untouched
    # aggregated features are float in the record too
    assert set(wells.var["input_dtype"]) == {"float64"}


def test_leiden_rerun_and_overwrite():
    adata = _wells()
    ip.tl.pca(adata, n_comps=5)
    ip.tl.neighbors(adata, n_neighbors=4)
    ip.tl.leiden(adata)
    ip.tl.leiden(adata, resolution=0.5)  # its own previous result may be replaced
    moa = adata.obs["Metadata_moa"].copy()
    with pytest.raises(ValueError, match="Metadata_moa"):
        ip.tl.leiden(adata, key_added="Metadata_moa")
    pd.testing.assert_series_equal(adata.obs["Metadata_moa"], moa)
    ip.tl.leiden(adata, key_added="Metadata_moa", overwrite=True)
    assert not adata.obs["Metadata_moa"].equals(moa)


def test_capped_sizes_warn_and_are_recorded():
    adata = _wells()  # 16 x 12
    with pytest.warns(UserWarning, match="n_comps=50"):
        ip.tl.pca(adata, n_comps=50)
    step = ip.provenance(adata).iloc[-1]
    assert step["params"]["n_comps"] == 11 and step["params"]["n_comps_requested"] == 50
    assert adata.obsm["X_pca"].shape[1] == 11
    with pytest.warns(UserWarning, match="n_neighbors=40"):
        ip.tl.neighbors(adata, n_neighbors=40)
    step = ip.provenance(adata).iloc[-1]
    assert step["params"]["n_neighbors"] == 15 and step["params"]["n_neighbors_requested"] == 40


def test_align_capped_components_warn_and_are_recorded():
    a = _wells()
    md = ip.mm.join(a.copy(), a.copy(), on=["Metadata_Plate", "Metadata_Well"], level="well", mod_names=("m", "n"))
    with pytest.warns(UserWarning, match="n_components=50"):
        ip.mm.align(md, n_components=50)
    step = ip.provenance(md["m"]).iloc[-1]
    used = md["m"].obsm["X_cca"].shape[1]
    assert used < 50 and step["params"]["n_components"] == used and step["params"]["n_components_requested"] == 50


def test_duplicated_var_names_refused_not_dropped():
    adata = _wells()
    names = list(adata.var_names)
    names[1] = names[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.var_names = names
    with pytest.raises(ValueError, match=names[0]):
        ip.pp.feature_select(adata, "variance_threshold")
    assert adata.n_vars == 12
