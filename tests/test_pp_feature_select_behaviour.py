"""ip.pp.feature_select: record in .uns, copy semantics, bad input, blocklist, dask (LocalCluster)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import imgprof as ip
from imgprof.pp.feature_select import frequency_stats, pearson_pairwise, load_blocklist

OPS = ["drop_na_columns", "variance_threshold", "frequency_threshold", "correlation_threshold", "blocklist", "drop_outliers"]


@pytest.fixture
def sim():
    return ip.datasets.simulate(n_plates=3, n_perturbations=12, n_moa=3, n_features=40, nan_fraction=0.02,
                                n_constant=2, n_correlated=3, seed=9)


def test_record_copy_and_provenance(sim, tmp_path):
    n0 = sim.n_vars
    out = ip.pp.feature_select(sim, OPS, copy=True, na_cutoff=0.05)
    assert sim.n_vars == n0  # copy=True leaves the input alone
    rec = out.uns["feature_select"]
    assert list(rec) == OPS
    dropped = {f for v in rec.values() for f in v}
    assert set(sim.var_names) - set(out.var_names) == dropped
    assert {"Nuclei_Neighbors_NumberOfNeighbors_0", "Nuclei_Neighbors_NumberOfNeighbors_1"} <= set(rec["variance_threshold"])
    # in place
    assert ip.pp.feature_select(sim, OPS, na_cutoff=0.05) is None
    assert list(sim.var_names) == list(out.var_names)
    last = ip.provenance(sim).iloc[-1]
    assert last["function"] == "pp.feature_select"
    assert last["extra"]["n_kept"] == sim.n_vars
    # the record survives h5ad (empty lists included)
    path = tmp_path / "fs.h5ad"
    sim.write_h5ad(path)
    back = __import__("anndata").read_h5ad(path)
    assert sorted(map(str, back.uns["feature_select"]["variance_threshold"])) == sorted(rec["variance_threshold"])


def test_bad_input(sim):
    with pytest.raises(ValueError, match=r"unknown .*operation=.variance.; choose one of"):
        ip.pp.feature_select(sim, "variance")
    with pytest.raises(ValueError, match="noise_removal needs"):
        ip.pp.feature_select(sim, "noise_removal")
    with pytest.raises(ValueError, match="corr_threshold"):
        ip.pp.feature_select(sim, "correlation_threshold", corr_threshold=1.5)
    with pytest.raises(KeyError, match="Metadata_pert"):
        ip.pp.feature_select(sim, "noise_removal", noise_removal_perturb_groups="Metadata_pert", noise_removal_stdev_cutoff=1)
    with pytest.raises(ValueError, match="selects no observation"):
        ip.pp.feature_select(sim, samples="Metadata_control_type == 'poscon'")
    bad = sim.copy()
    bad.X[0, 3] = -np.inf
    with pytest.raises(ValueError, match=sim.var_names[3]):
        ip.pp.feature_select(bad, "variance_threshold")
    with pytest.raises(ValueError, match="drops every remaining feature"):
        ip.pp.feature_select(sim, "variance_threshold", min_variance=1e300)


def test_all_nan_column_and_integers(sim):
    sim.X[:, 0] = np.nan
    out = ip.pp.feature_select(sim, ["drop_na_columns"], copy=True)
    assert sim.var_names[0] in out.uns["feature_select"]["drop_na_columns"]
    out = ip.pp.feature_select(sim, ["variance_threshold"], copy=True)
    assert sim.var_names[0] in out.uns["feature_select"]["variance_threshold"]  # NaN variance is not > cut-off
    a = ip.datasets.simulate(n_plates=2, n_features=20, n_constant=1, seed=1)
    a.X = np.round(a.X).astype(np.int64)
    out = ip.pp.feature_select(a, ["variance_threshold", "frequency_threshold"], copy=True)
    assert "Nuclei_Neighbors_NumberOfNeighbors_0" in out.uns["feature_select"]["variance_threshold"]


def test_blocklist():
    names = load_blocklist()
    assert len(names) == 55 and names[0] == "Nuclei_Correlation_Manders_AGP_DNA"
    pcm = pytest.importorskip("pycytominer")
    from pycytominer.cyto_utils.blocklist import Blocklist

    assert names == Blocklist(blocklist_name="default").to_list()
    X = np.random.default_rng(0).normal(size=(10, 4))
    obs = pd.DataFrame({"Metadata_Well": [f"A{i:02d}" for i in range(10)]})
    cols = ["Nuclei_Correlation_Manders_AGP_DNA", "Cells_AreaShape_Area", "Nuclei_Granularity_16_RNA", "Cells_Foo"]
    df = pd.concat([obs, pd.DataFrame(X, columns=cols)], axis=1)
    adata = ip.io.from_pandas(df)
    out = ip.pp.feature_select(adata, "blocklist", copy=True)
    assert list(out.var_names) == ["Cells_AreaShape_Area", "Cells_Foo"]
    out = ip.pp.feature_select(adata, "blocklist", blocklist=["Cells_Foo"], copy=True)
    assert list(out.var_names) == cols[:3]
    with pytest.raises(FileNotFoundError):
        ip.pp.feature_select(adata, "blocklist", blocklist="no_such_file.txt")


def test_features_subset_and_layer(sim):
    feats = list(sim.var_names[-5:])  # includes the two constants
    out = ip.pp.feature_select(sim, "variance_threshold", features=feats, copy=True)
    assert out.n_vars == sim.n_vars - 2
    sim.layers["other"] = np.ones_like(sim.X)
    sim.layers["other"][:, :3] = np.arange(sim.n_obs)[:, None]
    out = ip.pp.feature_select(sim, "variance_threshold", layer="other", copy=True)
    assert list(out.var_names) == list(sim.var_names[:3])  # statistics came from the layer
    assert "other" in out.layers and out.layers["other"].shape == out.shape


def test_kernels_match_pandas():
    rng = np.random.default_rng(3)
    X = np.round(rng.normal(size=(60, 6)), 1)
    X[rng.random(X.shape) < 0.1] = np.nan
    X[:, 5] = 1.0
    ratio, n_unique = frequency_stats(X)
    df = pd.DataFrame(X)
    for j in range(6):
        vc = df[j].value_counts()
        exp = vc.iloc[1] / vc.iloc[0] if len(vc) >= 2 else 0.0
        assert ratio[j] == pytest.approx(exp)
        assert n_unique[j] == df[j].nunique()
    C = pearson_pairwise(X[:, :5])
    np.testing.assert_allclose(C, df.iloc[:, :5].corr().to_numpy(), atol=1e-12)


def test_dask_local_cluster(sim):
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    kw = dict(na_cutoff=0.05, outlier_cutoff=2000, noise_removal_perturb_groups="Metadata_Perturbation",
              noise_removal_stdev_cutoff=300)
    ops = OPS + ["noise_removal"]
    ref = ip.pp.feature_select(sim, ops, copy=True, **kw)
    lazy = sim.copy()
    lazy.X = da.from_array(sim.X, chunks=(40, 16))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cl, \
            distributed.Client(cl):
        ip.pp.feature_select(lazy, ops, samples="Metadata_Plate != 'plate_9'", **kw)
    assert isinstance(lazy.X, da.Array)
    assert list(lazy.var_names) == list(ref.var_names)
    assert lazy.uns["feature_select"] == ref.uns["feature_select"]
    np.testing.assert_array_equal(lazy.X.compute(), ref.X)
