"""sc.pp.neighbors on imgprof objects at >= 4,096 cells (scipy >= 1.15 shim) and no silent first-call stall."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import imgprof as ip
from imgprof.tl import embedding as emb


def _blobs(n: int, seed: int = 0) -> tuple[ad.AnnData, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4, size=(5, 12))
    lab = rng.integers(0, 5, n)
    a = ad.AnnData(X=(centers[lab] + rng.normal(size=(n, 12))).astype(np.float32),
                   obs=pd.DataFrame({"c": lab.astype(str)}, index=[f"c{i}" for i in range(n)]))
    return a, lab


@pytest.mark.slow
def test_scanpy_neighbors_works_at_5000_cells_after_import_imgprof():
    """scanpy's own call, in a fresh process where imgprof is imported before scanpy (the import hook)."""
    prog = (
        "import imgprof, json, numpy as np, anndata as ad, scanpy as sc\n"
        "rng = np.random.default_rng(0)\n"
        "a = ad.AnnData(rng.normal(size=(5000, 12)).astype('float32'))\n"
        "sc.pp.neighbors(a, metric='cosine', n_neighbors=10)\n"
        "sc.tl.leiden(a, flavor='igraph', n_iterations=2, directed=False)\n"
        "D = a.obsp['distances']\n"
        "print(json.dumps({'n': D.shape[0], 'min_nnz': int(np.diff(D.indptr).min()), 'leiden': a.obs['leiden'].nunique()}))\n"
    )
    env = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    import os

    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=False, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["n"] == 5000 and res["min_nnz"] >= 9 and res["leiden"] >= 2


def test_shim_patches_scanpy_helpers_and_keeps_the_graph():
    """The shim converts csr_array to csr_matrix; indices/distances are the same as from the matrix."""
    import scipy.sparse as sp
    from scanpy.neighbors import _common

    import imgprof.tl  # noqa: F401  (applies the shim)

    assert getattr(_common, "_imgprof_csr_array_shim", False) or hasattr(sp.csr_array, "getnnz")
    rng = np.random.default_rng(1)
    n, k = 50, 5
    idx = np.stack([np.r_[i, rng.choice(np.delete(np.arange(n), i), k - 1, replace=False)] for i in range(n)])
    dist = np.sort(rng.random((n, k)), axis=1)
    dist[:, 0] = 0
    m = sp.csr_matrix((dist.ravel(), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    i1, d1 = _common._get_indices_distances_from_sparse_matrix(sp.csr_array(m), k)
    i2, d2 = _common._get_indices_distances_from_sparse_matrix(m, k)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)


def test_neighbors_exact_below_threshold_matches_brute_force():
    """5,000 rows: the exact (brute-force) path is used, and the graph is the exact kNN graph."""
    from sklearn.neighbors import NearestNeighbors

    assert emb.EXACT_MAX_OBS >= 5000
    a, _ = _blobs(5000)
    ip.tl.neighbors(a, use_rep="X", n_neighbors=10)
    last = ip.provenance(a).iloc[-1]
    assert last["function"] == "tl.neighbors" and last["extra"]["search"] == "exact"
    nn = NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute").fit(a.X)
    _, ref = nn.kneighbors(a.X)
    D = a.obsp["distances"]
    got = [set(D.indices[D.indptr[i]:D.indptr[i + 1]]) for i in range(0, 5000, 97)]
    want = [set(ref[i, 1:]) - {i} for i in range(0, 5000, 97)]
    agree = np.mean([len(g & w) / len(w) for g, w in zip(got, want)])
    assert agree > 0.99  # exact (ties aside)


def test_neighbors_exact_flag_validated_and_threshold_switches(monkeypatch, caplog):
    a, _ = _blobs(300)
    with pytest.raises(TypeError, match="exact"):
        ip.tl.neighbors(a, use_rep="X", exact="yes")
    # above the threshold the approximate search is announced (no silent compile stall)
    monkeypatch.setattr(emb, "EXACT_MAX_OBS", 100)
    monkeypatch.setattr(emb, "_announced_compile", False)
    monkeypatch.setattr(emb, "_pynndescent_transformer", lambda *args, **kw: "sklearn")  # skip the compile here
    with caplog.at_level(logging.WARNING, logger="imgprof.tl.embedding"):
        ip.tl.neighbors(a, use_rep="X", n_neighbors=10)
    assert "compiles numba kernels" in caplog.text
    assert ip.provenance(a).iloc[-1]["extra"]["search"] == "approximate"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="imgprof.tl.embedding"):
        ip.tl.neighbors(a, use_rep="X", n_neighbors=10)
    assert "compiles numba kernels" not in caplog.text  # said once per session
