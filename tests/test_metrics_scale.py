"""Blocked / distributed phenotypic activity: identical to the single run, data read from a memory map."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import imgprof as ip


def _jump_like(tmp_path, n_cpd=120, d=20, seed=0):
    """Compounds x 4 replicates on 4 plates of a batch of 8; 16-28 DMSO per plate; X saved as .npy."""
    rng = np.random.default_rng(seed)
    rows = []
    c0 = p0 = 0
    while c0 < n_cpd:
        n_b = min(16, n_cpd - c0)
        for c in range(n_b):
            for r in range(4):
                rows.append((f"c{c0 + c}", f"p{p0 + 2 * r + c % 2}"))
        for q in range(8):
            rows += [("DMSO", f"p{p0 + q}")] * int(rng.integers(16, 29))
        c0 += n_b
        p0 += 8
    obs = pd.DataFrame(rows, columns=["Metadata_cpd", "Metadata_Plate"])
    obs.index = obs.index.astype(str)
    X = rng.standard_normal((len(obs), d)).astype(np.float32)
    trt = (obs["Metadata_cpd"] != "DMSO").to_numpy()
    codes = pd.factorize(obs["Metadata_cpd"])[0]
    eff = rng.standard_normal((codes.max() + 1, d)).astype(np.float32) * (rng.random(codes.max() + 1) < 0.5)[:, None]
    X[trt] += eff[codes[trt]]
    path = tmp_path / "x.npy"
    np.save(path, X)
    return ad.AnnData(np.load(path, mmap_mode="r"), obs=obs), X


def _run(a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ip.metrics.RetrievalWarning)
        return ip.metrics.phenotypic_activity_blocked(a, "Metadata_cpd", controls="Metadata_cpd == 'DMSO'",
                                                      sameby_controls="Metadata_Plate", **kw)


def test_blocked_equals_single_run(tmp_path):
    a, X = _jump_like(tmp_path)
    assert isinstance(a.X, np.memmap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ip.metrics.RetrievalWarning)
        full = ip.metrics.phenotypic_activity(ad.AnnData(X, obs=a.obs), "Metadata_cpd", controls="Metadata_cpd == 'DMSO'",
                                              sameby_controls="Metadata_Plate", null_size=500)
    for bs in (7, 50):
        b = _run(a, block_size=bs, null_size=500)
        pd.testing.assert_frame_equal(b, full)  # same mAP, same p-values (per-group seeds), BH over all groups
    assert (full["p_value_method"] == "permutation_monte_carlo").all()
    # the shared null gives the same answer in blocks too
    s1 = _run(a, block_size=11, null_size=300, null="shared")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ip.metrics.RetrievalWarning)
        s0 = ip.metrics.phenotypic_activity(ad.AnnData(X, obs=a.obs), "Metadata_cpd", controls="Metadata_cpd == 'DMSO'",
                                            sameby_controls="Metadata_Plate", null_size=300, null="shared")
    pd.testing.assert_frame_equal(s1, s0)
    with pytest.raises(ValueError, match="return_ap"):
        _run(a, return_ap=True)
    with pytest.raises(ValueError, match="block_size"):
        _run(a, block_size=0)


def test_blocked_on_a_local_cluster_reads_the_memmap_on_workers(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    a, _ = _jump_like(tmp_path, n_cpd=60)
    single = _run(a, block_size=1000, null_size=300)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GiB",
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        res = _run(a, block_size=15, null_size=300, client=client)
        # the tasks carried the file description, not the matrix
        assert len(client.run(lambda: 1)) == 2
    pd.testing.assert_frame_equal(res, single)
