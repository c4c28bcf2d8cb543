"""Smoke test of benchmarks/bench_aggregate.py: its data writers and workers on tiny data, outputs compared."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pycytominer")
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_aggregate.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_aggregate", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_aggregate"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_layout_keeps_wells_whole_and_sizes_per_well(bench):
    sizes, chunks = bench.grouped_layout(600_000, chunk_cells=200_000)
    assert sizes.sum() == 600_000 and len(sizes) == 6 * 384  # 2 plates per 250,000 cells
    assert chunks[0][0] == 0 and chunks[-1][1] == len(sizes)
    assert all(a < b for a, b in chunks) and all(c[1] == d[0] for c, d in zip(chunks, chunks[1:]))


@pytest.mark.parametrize("writer", ["write_parquet", "write_parquet_shuffled", "write_zarr"])
def test_writers_and_stream_worker_match_pandas(bench, tmp_path, writer):
    suffix = ".zarr" if writer == "write_zarr" else ".parquet"
    path = tmp_path / f"cells{suffix}"
    getattr(bench, writer)(path, 6_000, 8, row_group=1_000) if writer != "write_zarr" else bench.write_zarr(path, 6_000, 8)
    out = bench.worker(dict(tool="imgprof_stream", cells=6_000, features=8, path=str(path), out=str(tmp_path / "o.npy")))
    n_wells = int((bench.grouped_layout(6_000)[0] > 0).sum())  # a well may draw no cell
    assert out["seconds"] > 0 and out["n_groups"] == n_wells
    ours = np.load(tmp_path / "o.npy")
    if writer == "write_zarr":  # the same cells as write_parquet
        bench.write_parquet(tmp_path / "same.parquet", 6_000, 8)
        ref = pd.read_parquet(tmp_path / "same.parquet").groupby(bench.KEYS).median().to_numpy()
        np.testing.assert_array_equal(ours, ref)
        return
    df = pd.read_parquet(path)
    assert df.duplicated(bench.KEYS).any()  # several cells per well
    ref = df.groupby(bench.KEYS).median().to_numpy()
    np.testing.assert_array_equal(ours, ref)
    pyc = bench.worker(dict(tool="pycytominer_file", cells=6_000, features=8, path=str(path), out=str(tmp_path / "p.npy")))
    assert pyc["n_groups"] == n_wells
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), ours)


def test_file_section_states_fairness_and_cow(bench, tmp_path):
    """--file-only: both tools on the same file, best of --repeat runs, the table says how and in which CoW mode."""
    args = type("A", (), {"repeat": 1})()
    lines = bench.file_section(args, 3_000, 6, tmp_path, ("shuffled",))
    text = "\n".join(lines)
    assert "Same starting point: the same parquet file on disk" in text and "Warm-up excluded" in text
    assert "| pandas CoW |" in text
    rows = [ln for ln in lines if ln.startswith("| shuffled |")]
    assert len(rows) == 2 and "failed" not in text
    cells = rows[1].strip("|").split("|")
    assert cells[7].strip() == "0.0e+00" and cells[8].strip() in ("on", "off", "warn")
