"""Aggregate from a parquet file whose rows are NOT grouped by well: imgprof vs pycytominer, side by side.

Same file on disk for every tool (``bench_aggregate.write_parquet_shuffled``: the cells of
``write_parquet`` in random row order, float64, row groups of 50,000), median per
``Metadata_Plate`` + ``Metadata_Well``. Each tool runs in its own subprocess
(``bench_aggregate.worker``): pycytominer reads the file with ``pd.read_parquet`` and aggregates
(both timed); imgprof gets the path. Warm-up (imports, numba kernels, a 5,000-cell file) is
excluded. Peak = growth of resident memory (VmHWM) during the timed call. pandas copy-on-write:
off in the imgprof processes, on in the pycytominer ones (importing pycytominer turns it on).

Tools: pycytominer; imgprof's column passes (the default: a few feature columns of every row
per pass, each row placed in group order as it is decoded, the columnar file read once,
nothing spilled); with ``--buckets`` also imgprof's disk buckets (the fallback used when one
column of all rows exceeds the budget). Tools alternate (``--repeat`` rounds, best reported).

Usage::

    python benchmarks/bench_aggregate_unsorted.py --quick        # 20,000 cells x 50, not written
    python benchmarks/bench_aggregate_unsorted.py                # 1,000,000 cells x 500
    python benchmarks/bench_aggregate_unsorted.py --path /tmp/shuffled.parquet --repeat 2
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_aggregate as ba  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cells", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=500)
    ap.add_argument("--path", type=Path, default=None, help="reuse (or write and keep) this shuffled parquet file")
    ap.add_argument("--repeat", type=int, default=2, help="runs per tool, tools alternating; the best is reported")
    ap.add_argument("--buckets", action="store_true", help="also time the disk-bucket path (spill_dir-style fallback)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "aggregate_unsorted.md")
    args = ap.parse_args(argv)
    import numpy as np

    n, p = (20_000, 50) if args.quick else (args.cells, args.features)
    tmp = Path(tempfile.mkdtemp(prefix="bench_agg_unsorted_"))
    try:
        path = args.path or tmp / "shuffled.parquet"
        if not path.exists():
            ba.write_parquet_shuffled(path, n, p)
        tools = [
            ("pycytominer: pd.read_parquet + aggregate", {"tool": "pycytominer_file"}),
            ("ip.pp.aggregate(path), column passes (default)", {"tool": "imgprof_stream"}),
        ]
        if args.buckets:
            tools.append(("ip.pp.aggregate(path), disk buckets (fallback)", {"tool": "imgprof_stream", "force_buckets": True}))
        runs: dict = {label: [] for label, _ in tools}
        for rep in range(args.repeat):  # tools alternate, so both see the same machine load
            for i, (label, spec) in enumerate(tools):
                spec = dict(spec, cells=n, features=p, path=str(path), out=str(tmp / f"{i}.npy"))
                r = ba.run_worker(spec)
                runs[label].append(r)
                print(rep, label, r, flush=True)
        res = {label: min((r for r in rs if "error" not in r), key=lambda r: r["seconds"], default=rs[-1])
               for label, rs in runs.items()}
        ref_label = tools[0][0]
        ref = res[ref_label]
        ref_vals = np.load(tmp / "0.npy") if "error" not in ref else None
        rows = []
        for i, (label, _) in enumerate(tools):
            r = res[label]
            if "error" in r:
                rows.append(f"| {label} | failed: {r['error'][-200:]!r} | | | | | |")
                continue
            vals = np.load(tmp / f"{i}.npy")
            diff = "-" if i == 0 or ref_vals is None else f"{np.nanmax(np.abs(vals - ref_vals)):.1e}"
            speed = "-" if "error" in ref else f"{ref['seconds'] / r['seconds']:.2f}x"
            every = ", ".join(f"{x['seconds']:.1f}" for x in runs[label] if "error" not in x)
            rows.append(f"| {label} | {r['seconds']:.1f} | {every} | {speed} | {r['peak_extra_mb']:.0f} | {diff} | "
                        f"{r['cpu_seconds']:.1f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()
    lines = [
        f"# Aggregate from a parquet file with rows not grouped by well: {n:,} cells x {p} features",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs **shared with other engineers' jobs** (load average "
        f"at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}), Python {platform.python_version()}, numpy "
        f"{np.__version__}; run {time.strftime('%Y-%m-%d %H:%M')} UTC. Every tool reads the same file on disk, same "
        "operation (median by plate and well), each run in its own process, warm-up (imports, compiled kernels, a "
        f"5,000-cell file) excluded. The tools run alternately, {args.repeat} rounds, so each sees the same machine "
        "load; the table gives the best run (all runs listed). pandas copy-on-write: on for pycytominer (its import "
        "turns it on), off for imgprof (no DataFrame holds features there).",
        "",
        "| tool | seconds (best) | all runs (s) | speed-up vs pycytominer | peak extra memory (MB) | max abs diff vs "
        "pycytominer | CPU seconds (all threads, best run) |",
        "|---|---:|---|---:|---:|---:|---:|",
        *rows,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
