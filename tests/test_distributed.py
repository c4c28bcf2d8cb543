"""Out of core on ``dask.distributed``: ``read_profiles(folder, lazy=True)`` under a LocalCluster.

Two *process* workers, each with a memory limit smaller than the data; the workers read the
parquet files themselves (the client only holds ``.obs`` and the task graph). Every big step
gives the same numbers as the in-memory path, and the client's peak Python allocation
(tracemalloc, which sees numpy buffers) stays below a quarter of the data.

Size: ``IMGPROF_DIST_TEST_MB`` (default 520) MB of float64 features on disk, workers limited
to ``IMGPROF_DIST_WORKER_MB`` (default 480) MB each, so no worker could hold the matrix.
"""

from __future__ import annotations

import os
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import imgprof as ip

DATA_MB = float(os.environ.get("IMGPROF_DIST_TEST_MB", "520"))
WORKER_MB = float(os.environ.get("IMGPROF_DIST_WORKER_MB", "480"))
N_FEATURES = 100
N_FILES = 6
WELLS = [f"{r}{c:02d}" for r in "ABCDEFGHIJKLMNOP" for c in range(1, 25)]
#: The client may allocate at most this fraction of the data (metadata, group codes, small results).
CLIENT_FRACTION = 0.25


def _write_cells(folder, n_cells: int, p: int, n_files: int, seed: int = 0) -> None:
    """Cells grouped by plate and well, split in ``n_files`` parquet files (whole plates each)."""
    rng = np.random.default_rng(seed)
    n_plates = 2 * n_files
    n_groups = n_plates * len(WELLS)
    sizes = rng.multinomial(n_cells, rng.dirichlet(np.full(n_groups, 20.0)))
    loc = np.exp(rng.uniform(0, 4, size=p))
    g_per_file = n_groups // n_files
    for fi in range(n_files):
        g0, g1 = fi * g_per_file, (fi + 1) * g_per_file
        gid = np.repeat(np.arange(g0, g1), sizes[g0:g1])
        well = np.array(WELLS, dtype=object)[gid % len(WELLS)]
        cols = {
            "Metadata_Plate": pa.array([f"plate_{i:02d}" for i in gid // len(WELLS)]),
            "Metadata_Well": pa.array(well.tolist()),
            "Metadata_control_type": pa.array(np.where(gid % len(WELLS) < 24, "negcon", "trt").tolist()),
            "Metadata_Perturbation": pa.array([f"cmpd_{(g % len(WELLS)) % 96}" for g in gid]),
        }
        effect = rng.normal(size=(g1 - g0, p)) * 0.3
        X = rng.standard_normal((gid.size, p)) + effect[gid - g0]
        X *= loc * 0.2
        X += loc
        X[:, 7] = X[:, 3] * 0.999 + 1e-3 * X[:, 5]  # a correlated pair for correlation_threshold
        X[:, 11] = 1.0  # a constant feature for variance_threshold
        X[rng.integers(0, gid.size, 50), rng.integers(12, p, 50)] = np.nan
        for j in range(p):
            cols[f"Cells_Intensity_Feature{j:03d}_DNA"] = pa.array(X[:, j])
        pq.write_table(pa.table(cols), os.path.join(folder, f"part_{fi:02d}.parquet"), row_group_size=20_000)


@pytest.fixture(scope="module")
def cells_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cells")
    n_cells = int(DATA_MB * 1e6 / (8 * N_FEATURES))
    _write_cells(folder, n_cells, N_FEATURES, N_FILES)
    return folder


@pytest.fixture(scope="module")
def in_memory(cells_folder):
    return ip.io.read_profiles(cells_folder)


@pytest.fixture(scope="module")
def client():
    import dask

    # a worker pauses at 95 % of its limit and is killed at 98 %: a task that held the matrix would fail
    with dask.config.set({"distributed.worker.memory.pause": 0.95, "distributed.worker.memory.terminate": 0.98}), \
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, memory_limit=f"{int(WORKER_MB)}MB",
                dashboard_address=None,
            ) as cluster, distributed.Client(cluster) as c:
        yield c


def _lazy(folder):
    return ip.io.read_profiles(folder, lazy=True, chunk_bytes=8 << 20)


class _ClientPeak:
    """Peak bytes allocated by Python/numpy in the client while the block runs (tracemalloc)."""

    def __enter__(self):
        tracemalloc.start()
        tracemalloc.reset_peak()
        return self

    def __exit__(self, *exc):
        self.peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def _data_bytes(adata) -> int:
    return int(adata.n_obs * adata.n_vars * 8)


def _client_bound(adata) -> float:
    """What the client may allocate: a quarter of the data (16 MB floor for tiny test runs)."""
    return max(CLIENT_FRACTION * _data_bytes(adata), 16e6)


def _on_client(func, adata, *args, bound=None, **kw):
    """``func(adata, *args, **kw)``, checking that the client allocated less than :func:`_client_bound` of ``bound``."""
    with _ClientPeak() as cp:
        out = func(adata, *args, **kw)
    assert cp.peak < _client_bound(adata if bound is None else bound), cp.peak
    return out


def test_data_is_larger_than_a_worker_limit(cells_folder, client):
    lazy = _lazy(cells_folder)
    limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
    assert len(limits) == 2
    assert _data_bytes(lazy) > max(limits)
    assert all(w["type"] == "Worker" for w in client.scheduler_info()["workers"].values())
    # the client never read the features: its graph holds only file names and row groups
    assert lazy.X.npartitions > N_FILES


def test_lazy_read_same_as_in_memory(cells_folder, in_memory, client):
    with _ClientPeak() as cp:
        lazy = _lazy(cells_folder)
    assert type(lazy.X).__module__.startswith("dask")
    assert cp.peak < _client_bound(lazy)
    # string metadata are categoricals in the lazy AnnData (lean client), plain strings in memory
    assert all(isinstance(t, pd.CategoricalDtype) for t in lazy.obs.dtypes)
    pd.testing.assert_frame_equal(lazy.obs.astype(object), in_memory.obs.astype(object))
    pd.testing.assert_frame_equal(lazy.var, in_memory.var)
    first = lazy[:1000].copy()
    first.X = np.asarray(first.X.compute())
    pd.testing.assert_frame_equal(ip.io.to_pandas(first), ip.io.to_pandas(in_memory[:1000]))
    # sums per column, computed by the workers, equal numpy's
    import dask.array as da

    np.testing.assert_allclose(np.asarray(da.nansum(lazy.X, axis=0).compute()), np.nansum(in_memory.X, axis=0), rtol=1e-12)


def test_aggregate_on_cluster(cells_folder, in_memory, client):
    lazy = _lazy(cells_folder)
    wells = _on_client(ip.pp.aggregate, lazy, by=["Metadata_Plate", "Metadata_Well"])
    ref = ip.pp.aggregate(in_memory, by=["Metadata_Plate", "Metadata_Well"])
    np.testing.assert_array_equal(wells.X, ref.X)
    pd.testing.assert_frame_equal(wells.obs, ref.obs)


def test_qc_on_cluster(cells_folder, in_memory, client):
    lazy = _lazy(cells_folder)
    kw = {"by": "Metadata_Plate", "controls": "Metadata_control_type == 'negcon'", "level": "single_cell"}
    _on_client(ip.pp.qc, lazy, **kw)
    ref = ip.pp.qc(in_memory, copy=True, **kw)
    cols = [c for c in ref.obs.columns if c.startswith("Metadata_qc")]
    assert cols
    pd.testing.assert_frame_equal(lazy.obs[cols], ref.obs[cols])


def test_normalize_on_cluster(cells_folder, in_memory, client):
    lazy = _lazy(cells_folder)
    kw = {"method": "mad_robustize", "controls": "Metadata_control_type == 'negcon'", "by": "Metadata_Plate"}
    _on_client(ip.pp.normalize, lazy, **kw)
    assert type(lazy.X).__module__.startswith("dask")  # the result stays on the cluster
    ref = ip.pp.normalize(in_memory, copy=True, **kw)
    # compare a column sum and a row sample, computed on the workers
    np.testing.assert_allclose(np.asarray(lazy.X.sum(axis=0).compute()), np.sum(ref.X, axis=0), rtol=1e-9)
    rows = np.sort(np.random.default_rng(0).choice(lazy.n_obs, 2000, replace=False))
    np.testing.assert_array_equal(np.asarray(lazy.X[rows].compute()), ref.X[rows])


def test_feature_select_on_cluster(cells_folder, in_memory, client):
    lazy = _lazy(cells_folder)
    ops = ["variance_threshold", "correlation_threshold", "drop_na_columns"]
    _on_client(ip.pp.feature_select, lazy, ops, bound=in_memory)
    ref = ip.pp.feature_select(in_memory, ops, copy=True)
    assert list(lazy.var_names) == list(ref.var_names)
    assert lazy.n_vars < N_FEATURES  # the constant and the correlated feature went


def test_consensus_on_cluster(cells_folder, in_memory, client):
    lazy = _lazy(cells_folder)
    kw = {"by": ["Metadata_Plate", "Metadata_Perturbation"], "operation": "median", "keep_metadata": False}
    with _ClientPeak() as cp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cons = ip.pp.consensus(lazy, **kw)
    ref = ip.pp.consensus(in_memory, **kw)
    np.testing.assert_array_equal(cons.X, ref.X)
    pd.testing.assert_frame_equal(cons.obs, ref.obs)
    assert cp.peak < _client_bound(lazy), cp.peak


def test_pca_on_cluster(cells_folder, in_memory, client):
    lazy = _lazy(cells_folder)
    sub = [f"Cells_Intensity_Feature{j:03d}_DNA" for j in range(12, N_FEATURES)]  # finite columns only
    import dask.array as da

    lazy = lazy[:, sub].copy()
    lazy.X = da.nan_to_num(lazy.X)
    ref = in_memory[:, sub].copy()
    ref.X = np.nan_to_num(ref.X)
    ip.tl.pca(ref, n_comps=10, svd_solver="covariance_eigh")  # first: scanpy's imports are not counted below
    _on_client(ip.tl.pca, lazy, n_comps=10, svd_solver="covariance_eigh", bound=in_memory)
    got = lazy.obsm["X_pca"]
    got = np.asarray(got.compute() if hasattr(got, "compute") else got)
    want = ref.obsm["X_pca"]
    sign = np.sign(np.sum(got * want, axis=0))
    np.testing.assert_allclose(got * sign, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    np.testing.assert_allclose(lazy.uns["pca"]["variance"], ref.uns["pca"]["variance"], rtol=1e-9)


def test_workers_did_the_reading(cells_folder, client):
    """The parquet reads ran on the workers (task stream), not in the client."""
    lazy = _lazy(cells_folder)
    with distributed.get_task_stream(client) as ts:
        lazy.X.sum().compute()
    reads = [t for t in ts.data if str(t["key"]).find("read-parquet") >= 0 or "read_parquet" in str(t["key"])]
    assert len(reads) == lazy.X.npartitions
    assert len({t["worker"] for t in reads}) == 2


def test_aggregate_unsorted_rows_on_cluster(in_memory, client, tmp_path):
    """Rows not grouped by well (the dask path sorts them on the workers): same medians."""
    sub = in_memory[: min(in_memory.n_obs, 30_000)].copy()
    df = ip.io.to_pandas(sub).sample(frac=1.0, random_state=0).reset_index(drop=True)
    folder = tmp_path / "shuffled"
    folder.mkdir()
    for i, part in enumerate(np.array_split(df, 3)):
        part.to_parquet(folder / f"part_{i}.parquet", row_group_size=4000)
    lazy = ip.io.read_profiles(folder, lazy=True, chunk_bytes=2 << 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = ip.pp.aggregate(lazy, by=["Metadata_Plate", "Metadata_Well"])
        want = ip.pp.aggregate(sub, by=["Metadata_Plate", "Metadata_Well"])
    np.testing.assert_array_equal(got.X, want.X)
    pd.testing.assert_frame_equal(got.obs, want.obs)
