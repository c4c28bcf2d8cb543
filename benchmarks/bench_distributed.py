"""Aggregate single cells -> wells on a dask.distributed cluster vs the single-machine streaming path.

Data: simulated cells grouped by plate and well (``bench_aggregate.grouped_layout`` /
``grouped_chunk``: ~325 cells per well, 2 plates per 250,000 cells, 0.1 % NaN), float32
features, split across parquet files of about 200,000 cells (row groups of 50,000 rows).
Both tools start from the **same files on disk** and compute the same thing (per-well
medians of every feature, ``by=["Metadata_Plate", "Metadata_Well"]``); the outputs are
compared.

- *streaming*: ``ip.pp.aggregate(folder)`` in one process (no dask), all cores.
- *distributed*: a ``LocalCluster`` of 2 process workers x 1 thread (memory limit per worker
  ``--worker-memory``), then ``cells = ip.io.read_profiles(folder, lazy=True)`` and
  ``ip.pp.aggregate(cells)`` in the client; the workers read the files.

Each tool runs in its own subprocess. Warm-up excluded: the cluster start, the imports and a
first aggregation of one file (numba kernels compiled and cached) happen before the timed
call. Peak memory: growth of the resident set during the timed call (Linux ``VmHWM``, reset
through ``/proc/self/clear_refs``), for the streaming process, the client, and each worker.
pandas copy-on-write mode is printed (it does not touch these code paths: no DataFrame holds
features). The data files are deleted at the end.

Usage::

    python benchmarks/bench_distributed.py --quick                 # 100,000 cells x 50 features, not written
    python benchmarks/bench_distributed.py --cells 1000000 2000000 --features 500
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BY = ["Metadata_Plate", "Metadata_Well"]


sys.path.insert(0, str(HERE))  # benchmarks/: the shared helpers (_memory, _worker, bench_aggregate)


def _warm_worker() -> None:
    """Import imgprof and run the median kernel once (numba) in a worker."""
    import numpy as np

    from imgprof._core.groups import group_reduce

    group_reduce(np.random.default_rng(0).random((100, 4)), np.repeat(np.arange(10), 10), 10, "median", n_jobs=1)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def _bench_aggregate():
    import bench_aggregate

    return bench_aggregate


def write_cells(folder: Path, n_cells: int, n_features: int, *, seed: int = 0, row_group: int = 50_000) -> int:
    """Write the cells as parquet files of whole wells (~200,000 cells each); return the number of files."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    ba = _bench_aggregate()
    names = ba.feature_names(n_features)
    sizes, chunks = ba.grouped_layout(n_cells, seed=seed, chunk_cells=200_000)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (g0, g1) in enumerate(chunks):
        obs, X = ba.grouped_chunk(sizes, g0, g1, n_features, seed=seed)
        X = X.astype(np.float32)
        cols = {k: pa.array(obs[k].tolist()) for k in BY}
        for j, n in enumerate(names):
            cols[n] = pa.array(np.ascontiguousarray(X[:, j]))
        pq.write_table(pa.table(cols), folder / f"cells_{i:04d}.parquet", row_group_size=row_group)
        del obs, X, cols
    return len(chunks)


# ----------------------------------------------------------------------------------------------
# workers
# ----------------------------------------------------------------------------------------------
def run_streaming(folder: Path, out: Path) -> dict:
    import numpy as np
    from _memory import reset_peak, rss_kb

    import imgprof as ip

    first = sorted(folder.glob("*.parquet"))[0]
    ip.pp.aggregate(first, by=BY)  # warm-up: numba kernels, imports
    base = reset_peak()
    t0 = time.perf_counter()
    wells = ip.pp.aggregate(folder, by=BY)
    sec = time.perf_counter() - t0
    peak = max(0, rss_kb("VmHWM") - base)
    np.save(out, np.asarray(wells.X))
    return {"seconds": sec, "client_peak_mb": peak / 1024, "n_wells": int(wells.n_obs)}


def run_distributed(folder: Path, out: Path, n_workers: int, worker_memory: str) -> dict:
    import warnings

    import _memory
    import cloudpickle
    import numpy as np
    from _memory import reset_peak, rss_kb
    from distributed import Client, LocalCluster

    import imgprof as ip

    warnings.filterwarnings("ignore")
    # The memory helpers run in the workers too, which need not import benchmarks/: send them by value.
    cloudpickle.register_pickle_by_value(_memory)
    with LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, memory_limit=worker_memory, dashboard_address=None,
    ) as cluster, Client(cluster) as client:
        first = sorted(folder.glob("*.parquet"))[0]
        client.run(_warm_worker)  # warm-up: imports and numba kernels in every worker
        ip.pp.aggregate(ip.io.read_profiles(first, lazy=True), by=BY)  # and the whole path once
        base = reset_peak()
        wbase = client.run(reset_peak)
        t0 = time.perf_counter()
        cells = ip.io.read_profiles(folder, lazy=True)
        wells = ip.pp.aggregate(cells, by=BY)
        sec = time.perf_counter() - t0
        peak = max(0, rss_kb("VmHWM") - base)
        wpeak = client.run(rss_kb, "VmHWM")
        worker_peaks = [max(0, wpeak[w] - wbase[w]) / 1024 for w in wpeak]
        worker_abs = [wpeak[w] / 1024 for w in wpeak]
        n_chunks = int(cells.X.npartitions)
    np.save(out, np.asarray(wells.X))
    return {
        "seconds": sec, "client_peak_mb": peak / 1024, "worker_peak_mb": max(worker_peaks),
        "worker_rss_max_mb": max(worker_abs), "n_wells": int(wells.n_obs), "n_chunks": n_chunks,
    }


def _spawn(kind: str, folder: Path, out: Path, args) -> dict:
    from _worker import run_worker, worker_env

    cmd = [sys.executable, __file__, "--worker", kind, str(folder), str(out), str(args.workers), args.worker_memory]
    return run_worker(cmd, what=kind, env=worker_env(), on_error="return")


# ----------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="100,000 cells x 50 features; results not written")
    p.add_argument("--cells", nargs="*", type=int, default=[1_000_000])
    p.add_argument("--features", type=int, default=500)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker-memory", default="2GB", help="memory limit per dask worker")
    p.add_argument("--tmp", default=None, help="folder for the data files (default: the system's temporary folder)")
    p.add_argument("--out", default=None, help="markdown output (default benchmarks/results/distributed.md; --quick: none)")
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        kind, folder, out, n_workers, mem = args.worker
        res = run_streaming(Path(folder), Path(out)) if kind == "streaming" else run_distributed(
            Path(folder), Path(out), int(n_workers), mem)
        print(json.dumps(res))
        return 0
    import numpy as np

    sizes, n_features = ([100_000], 50) if args.quick else (args.cells, args.features)
    rows = []
    for n_cells in sizes:
        need = n_cells * n_features * 4 * 1.1
        tmp_root = Path(args.tmp or tempfile.gettempdir())
        free = shutil.disk_usage(tmp_root).free
        if need > 0.9 * free:
            print(f"skip {n_cells:,} cells: needs ~{need / 1e9:.1f} GB, {free / 1e9:.1f} GB free", flush=True)
            continue
        work = Path(tempfile.mkdtemp(prefix="imgprof_bench_dist_", dir=tmp_root))
        try:
            folder = work / "cells"
            t0 = time.time()
            n_files = write_cells(folder, n_cells, n_features)
            disk = sum(f.stat().st_size for f in folder.glob("*.parquet")) / 1e9
            print(f"{n_cells:,} cells x {n_features}: {n_files} files, {disk:.2f} GB ({time.time() - t0:.0f} s to write)", flush=True)
            st = _spawn("streaming", folder, work / "streaming.npy", args)
            print("  streaming  ", st, flush=True)
            di = _spawn("distributed", folder, work / "distributed.npy", args)
            print("  distributed", di, flush=True)
            same = "n/a"
            if "error" not in st and "error" not in di:
                same = "identical" if np.array_equal(np.load(work / "streaming.npy"), np.load(work / "distributed.npy"), equal_nan=True) else "DIFFERENT"
            rows.append((n_cells, n_features, n_files, disk, st, di, same))
            _write_table(rows, args)  # after each size: a cut-off run keeps what it measured
        finally:
            shutil.rmtree(work, ignore_errors=True)  # the data files go, whatever happened
    _write_table(rows, args)
    return 0


def _write_table(rows, args) -> None:
    import numpy as np
    import pandas as pd

    cow = pd.options.mode.copy_on_write
    lines = [
        "# Aggregate on dask.distributed vs the single-machine streaming path",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs **shared with other engineers' jobs (loaded)**, "
        f"Python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__} "
        f"(copy-on-write {'on' if cow else 'off'}; no DataFrame holds features on either path).",
        "",
        f"Same parquet files on disk for both (float32, files of ~200,000 cells, row groups of 50,000); "
        f"per-well medians of all features by {BY}. *streaming*: `ip.pp.aggregate(folder)` in one process "
        f"(threads = CPUs). *distributed*: `LocalCluster` of {args.workers} process workers x 1 thread, "
        f"memory limit {args.worker_memory} each; `ip.io.read_profiles(folder, lazy=True)` then "
        "`ip.pp.aggregate(cells)`, the workers read the files. Warm-up excluded (imports, cluster start, "
        "numba compilation on one file). Peak = growth of resident memory (VmHWM) during the timed call; "
        "worker peak = the largest over workers (idle RSS of a worker with imgprof imported: ~250 MB, not included).",
        "",
        "| cells x features | files | on disk | streaming s | distributed s | ratio dist/stream | streaming peak MB | "
        "client peak MB | worker peak MB (max) | chunks | outputs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n_cells, p_, n_files, disk, st, di, same in rows:
        if "error" in st or "error" in di:
            lines.append(f"| {n_cells:,} x {p_} | {n_files} | {disk:.2f} GB | {st.get('error', '')} | {di.get('error', '')} | | | | | | |")
            continue
        lines.append(
            f"| {n_cells:,} x {p_} | {n_files} | {disk:.2f} GB | {st['seconds']:.1f} | {di['seconds']:.1f} | "
            f"{di['seconds'] / st['seconds']:.2f} | {st['client_peak_mb']:.0f} | {di['client_peak_mb']:.0f} | "
            f"{di['worker_peak_mb']:.0f} | {di['n_chunks']} | {same} |"
        )
    if len(rows) > 1 and all("error" not in r[4] and "error" not in r[5] for r in rows):
        a, b = rows[0], rows[-1]
        lines += ["", "Scaling (largest / smallest size): cells x{:.1f}, streaming time x{:.2f}, distributed time x{:.2f}.".format(
            b[0] / a[0], b[4]["seconds"] / a[4]["seconds"], b[5]["seconds"] / a[5]["seconds"])]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        out = Path(args.out) if args.out else HERE / "results" / "distributed.md"
        out.write_text(text)
        print(f"written to {out}")


if __name__ == "__main__":
    sys.exit(main())
