"""Benchmark ip.pp.aggregate against pycytominer 1.7.1 (single cells -> wells), side by side.

Data: simulated CellProfiler-like single cells (float64, positive raw scales, 0.1 % NaN)
in 2 plates x 384 wells, rows grouped by plate and well as CellProfiler writes them
(also a shuffled copy for imgprof). Median by ``Metadata_Plate`` + ``Metadata_Well``.

Every measurement runs in its own subprocess, which builds the data in the tool's native
form (a pandas DataFrame for pycytominer, an AnnData for imgprof), warms the code up on a
small slice (pycytominer imports, imgprof's numba kernels load from the on-disk cache),
then times one call. Peak memory is the growth of the resident set during the timed call:
Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs`` minus the RSS just
before the call. The two outputs are compared (max |difference|).

pycytominer runs on both row orders (grouped as CellProfiler writes them, and shuffled), so
each imgprof row is compared with pycytominer on the same data.

Streaming: parquet files (rows grouped by plate/well, 50,000-row row groups) and AnnData
zarr stores (``write_zarr``'s default chunks) of several sizes are aggregated straight from disk
(``ip.pp.aggregate(path)``); peak memory is measured the same way, from a process that has
only imported imgprof.

Usage::

    python benchmarks/bench_aggregate.py                 # 1,000,000 cells x 500 features
    python benchmarks/bench_aggregate.py --quick         # 20,000 cells x 50 features smoke run
    python benchmarks/bench_aggregate.py --cells 300000  # other sizes
    python benchmarks/bench_aggregate.py --file-only shuffled --repeat 3   # only the shuffled-parquet row, best of 3

Fairness: both tools start from the same state (the in-memory rows: each tool's own container,
built outside the timed region; the file rows: the same parquet file on disk, read inside the
timed region by both); both compute the same median by plate + well; each worker warms up on a
small input first (imports, numba cache load, pyarrow) and that warm-up is not timed; the pandas
copy-on-write mode in effect during the timed call is recorded per row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAIR_MEMORY = (
    "Same starting point: each tool's own in-memory container (DataFrame / AnnData), built outside the timed "
    "region; the same median by plate + well on both sides; warm-up (a call on a 2,000-row slice, in the same "
    "process, before timing) excluded."
)
ROOT = HERE.parent
KEYS = ["Metadata_Plate", "Metadata_Well"]


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def feature_names(p: int) -> list[str]:
    comps = ("Cells", "Cytoplasm", "Nuclei")
    return [f"{comps[i % 3]}_Intensity_Feature{i}_DNA" for i in range(p)]


WELLS = [f"{r}{c:02d}" for r in "ABCDEFGHIJKLMNOP" for c in range(1, 25)]


def grouped_layout(n_cells: int, *, n_plates: int | None = None, seed: int = 0, chunk_cells: int = 200_000):
    """Cells per well and chunks of whole wells of about ``chunk_cells``.

    Default: 2 plates (x 384 wells) per 250,000 cells, so a well holds ~325 cells at every size,
    as in a real screen that grows by plates.
    """
    import numpy as np

    if n_plates is None:
        n_plates = 2 * max(1, -(-n_cells // 250_000))
    rng = np.random.default_rng(seed)
    n_groups = n_plates * len(WELLS)
    sizes = rng.multinomial(n_cells, rng.dirichlet(np.full(n_groups, 20.0)))
    ends = np.cumsum(sizes)
    cuts = np.unique(np.searchsorted(ends, np.arange(chunk_cells, n_cells, chunk_cells)) + 1)
    edges = [0, *[int(c) for c in cuts if 0 < c < n_groups], n_groups]
    return sizes, list(zip(edges[:-1], edges[1:]))


def grouped_chunk(sizes, g0: int, g1: int, n_features: int, *, seed: int = 0, keys_only: bool = False):
    """(obs, X) of wells ``g0..g1-1``, rows grouped by plate and well, 0.1 % NaN."""
    import numpy as np
    import pandas as pd

    gid = np.repeat(np.arange(g0, g1), sizes[g0:g1])
    plates = np.array([f"plate_{i + 1}" for i in range(len(sizes) // len(WELLS))], dtype=object)
    obs = pd.DataFrame({"Metadata_Plate": plates[gid // len(WELLS)], "Metadata_Well": np.array(WELLS, dtype=object)[gid % len(WELLS)]})
    if keys_only:
        return obs, None
    base = np.random.default_rng(seed)
    loc = np.exp(base.uniform(0, 6, size=n_features))
    scale = loc * base.uniform(0.05, 0.3, size=n_features)
    rng = np.random.default_rng([seed, g0])
    effect = rng.normal(size=(g1 - g0, n_features)) * 0.3
    X = rng.standard_normal((gid.size, n_features))
    X += effect[gid - g0]
    X *= scale
    X += loc
    k = max(1, gid.size * n_features // 1000)
    X[rng.integers(0, gid.size, k), rng.integers(0, n_features, k)] = np.nan
    return obs, X


def make_cells(n_cells: int, n_features: int, *, n_plates: int | None = None, seed: int = 0, shuffle: bool = False):
    """(obs, X float64) of ``n_cells`` cells grouped by plate and well (:func:`grouped_layout`,
    :func:`grouped_chunk`), built chunk of wells by chunk of wells; ``shuffle``: the same cells in
    random row order."""
    import numpy as np
    import pandas as pd

    sizes, chunks = grouped_layout(n_cells, n_plates=n_plates, seed=seed)
    obs = pd.concat([grouped_chunk(sizes, g0, g1, 1, keys_only=True)[0] for g0, g1 in chunks], ignore_index=True)
    X = np.empty((n_cells, n_features))
    for g0, g1 in chunks:
        a = int(sizes[:g0].sum())
        X[a : a + int(sizes[g0:g1].sum())] = grouped_chunk(sizes, g0, g1, n_features, seed=seed)[1]
    if shuffle:
        perm = np.random.default_rng(seed + 1).permutation(n_cells)
        obs = obs.iloc[perm].reset_index(drop=True)
        X = X[perm]
    return obs, X


def _write_pieces(path: Path, pieces, n_features: int, row_group: int) -> None:
    """Write ``(obs, X)`` pieces, in order, as one parquet file with ``row_group``-row row groups."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = feature_names(n_features)
    writer = None
    for obs, X in pieces:
        cols = {k: pa.array(obs[k].tolist()) for k in KEYS}
        for j, n in enumerate(names):
            cols[n] = pa.array(np.ascontiguousarray(X[:, j]))
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(str(path), table.schema)
        writer.write_table(table, row_group_size=row_group)
        del obs, X, table, cols
    writer.close()


def write_parquet(path: Path, n_cells: int, n_features: int, seed: int = 0, row_group: int = 50_000) -> None:
    """Write a (plate, well)-grouped single-cell parquet file, chunk of wells by chunk of wells."""
    sizes, chunks = grouped_layout(n_cells, seed=seed)
    _write_pieces(path, (grouped_chunk(sizes, g0, g1, n_features, seed=seed) for g0, g1 in chunks), n_features, row_group)


def write_parquet_shuffled(path: Path, n_cells: int, n_features: int, seed: int = 0, row_group: int = 50_000) -> None:
    """The cells of :func:`write_parquet` in random row order (built in memory, written in row groups)."""
    obs, X = make_cells(n_cells, n_features, seed=seed, shuffle=True)
    slabs = (slice(a, a + row_group) for a in range(0, n_cells, row_group))
    _write_pieces(path, ((obs.iloc[rows], X[rows]) for rows in slabs), n_features, row_group)


def write_zarr(path: Path, n_cells: int, n_features: int, seed: int = 0) -> None:
    """Write a (plate, well)-grouped AnnData zarr store chunk of wells by chunk of wells (X as a
    dask array; the store gets anndata/zarr's default chunks)."""
    import warnings

    import anndata as ad
    import dask
    import dask.array as da
    import numpy as np
    import pandas as pd

    sizes, chunks = grouped_layout(n_cells, seed=seed)
    obs = pd.concat([grouped_chunk(sizes, g0, g1, 1, keys_only=True)[0] for g0, g1 in chunks], ignore_index=True)
    obs = obs.astype("category")
    obs.index = obs.index.astype(str)
    X = da.concatenate([
        da.from_delayed(dask.delayed(lambda a, b: grouped_chunk(sizes, a, b, n_features, seed=seed)[1])(g0, g1),
                        shape=(int(sizes[g0:g1].sum()), n_features), dtype=np.float64)
        for g0, g1 in chunks
    ])
    adata = ad.AnnData(X=X, obs=obs)
    adata.var_names = feature_names(n_features)
    with warnings.catch_warnings(), dask.config.set(scheduler="synchronous"):
        warnings.simplefilter("ignore")
        adata.write_zarr(str(path))


# ----------------------------------------------------------------------------------------------
# measurement (inside a worker subprocess)
# ----------------------------------------------------------------------------------------------
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the shared helpers
from _memory import status_mb  # noqa: E402


def _rss_mb() -> float:
    return status_mb("VmRSS")


def _hwm_mb() -> float:
    return status_mb("VmHWM")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def worker(spec: dict) -> dict:
    import gc

    import numpy as np

    tool, n, p = spec["tool"], spec["cells"], spec["features"]
    out: dict = {"tool": tool}
    if tool == "pycytominer":
        import pandas as pd
        import pycytominer

        obs, X = make_cells(n, p, n_plates=2, shuffle=spec.get("shuffle", False))
        df = pd.concat([obs, pd.DataFrame(X, columns=feature_names(p), copy=False)], axis=1)
        del X
        pycytominer.aggregate(df.iloc[:2000], strata=KEYS, features=feature_names(p))  # warm-up
        run = lambda: pycytominer.aggregate(df, strata=KEYS, features=feature_names(p), operation="median")  # noqa: E731
    elif tool == "imgprof":
        import anndata as ad

        import imgprof as ip

        obs, X = make_cells(n, p, n_plates=2, shuffle=spec.get("shuffle", False))
        obs.index = obs.index.astype(str)
        adata = ad.AnnData(X=X, obs=obs)
        adata.var_names = feature_names(p)
        del X
        ip.pp.aggregate(adata[:2000].copy(), by=KEYS)  # warm-up (kernel load)
        run = lambda: ip.pp.aggregate(adata, by=KEYS, n_jobs=spec.get("n_jobs"))  # noqa: E731
    elif tool == "pycytominer_file":
        import pandas as pd
        import pycytominer

        small = Path(spec["path"]).with_name("warmup.parquet")
        if not small.exists():
            write_parquet(small, 5000, p)
        pycytominer.aggregate(pd.read_parquet(small), strata=KEYS, features=feature_names(p))  # warm-up
        run = lambda: pycytominer.aggregate(  # noqa: E731
            pd.read_parquet(spec["path"]), strata=KEYS, features=feature_names(p), operation="median"
        )
    elif tool == "imgprof_stream":
        import imgprof as ip

        fmt = "zarr" if spec["path"].endswith(".zarr") else "parquet"
        small = Path(spec["path"]).with_name(f"warmup.{fmt}")
        if not small.exists():
            (write_zarr if fmt == "zarr" else write_parquet)(small, 5000, p)
        ip.pp.aggregate(small)  # warm-up
        if spec.get("force_buckets"):  # the disk-bucket path for rows not grouped (before the column passes)
            import importlib

            importlib.import_module("imgprof.pp._aggregate_stream")._COLUMN_PASS_MAX_BYTES = 0
        run = lambda: ip.pp.aggregate(spec["path"], by=KEYS)  # noqa: E731
    else:
        raise ValueError(tool)
    gc.collect()
    base = _rss_mb()
    ok = _reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    res = run()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    import pandas as pd

    cow = pd.options.mode.copy_on_write
    out.update(seconds=dt, cpu_seconds=cpu, base_mb=base, peak_extra_mb=_hwm_mb() - base, peak_method="VmHWM" if ok else "VmHWM(lifetime)",
               cow="on" if cow is True else ("warn" if cow == "warn" else "off"))
    # save the result for the cross-check (small: n_groups x p)
    if tool in ("pycytominer", "pycytominer_file"):
        vals = res[feature_names(p)].to_numpy()
    else:
        vals = np.asarray(res.X)
    np.save(spec["out"], vals)
    out["n_groups"] = int(vals.shape[0])
    return out


def run_worker(spec: dict, timeout: int = 3600) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    from _worker import worker_env

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=worker_env())
    if proc.returncode != 0:
        return {"tool": spec["tool"], "error": (proc.stderr or proc.stdout)[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--cells", type=int, default=None)
    ap.add_argument("--features", type=int, default=None)
    ap.add_argument("--stream-cells", type=int, nargs="+", default=None, help="sizes (cells) for the streaming test")
    ap.add_argument("--skip-stream", action="store_true")
    ap.add_argument("--file-cells", type=int, default=None, help="cells of the file-to-wells comparison (0: skip)")
    ap.add_argument("--file-only", choices=["grouped", "shuffled", "both"], default=None,
                    help="run only the parquet-file-to-wells comparison, for these row orders")
    ap.add_argument("--repeat", type=int, default=1, help="file rows: runs per tool, alternating; the best is reported")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "aggregate.md")
    ap.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    import numpy as np

    n = args.cells or (20_000 if args.quick else 1_000_000)
    p = args.features or (50 if args.quick else 500)
    stream = args.stream_cells or ([20_000, 60_000] if args.quick else [250_000, 1_000_000, 2_000_000])
    if args.file_cells is None:
        args.file_cells = 20_000 if args.quick else 1_000_000
    tmp = Path(tempfile.mkdtemp(prefix="bench_aggregate_"))
    if args.file_only:
        lines = file_section(args, args.file_cells, p, tmp, ("grouped", "shuffled") if args.file_only == "both" else (args.file_only,))
        return finish(args, lines)
    rows = []
    specs = [
        ("pycytominer.aggregate (median)", dict(tool="pycytominer")),
        ("ip.pp.aggregate (median, 1 thread)", dict(tool="imgprof", n_jobs=1)),
        ("ip.pp.aggregate (median, all CPUs)", dict(tool="imgprof")),
        ("pycytominer.aggregate (median, rows shuffled)", dict(tool="pycytominer", shuffle=True)),
        ("ip.pp.aggregate (median, 1 thread, rows shuffled)", dict(tool="imgprof", shuffle=True, n_jobs=1)),
        ("ip.pp.aggregate (median, all CPUs, rows shuffled)", dict(tool="imgprof", shuffle=True)),
    ]
    results = {}
    for label, spec in specs:
        spec = dict(spec, cells=n, features=p, out=str(tmp / f"{len(results)}.npy"))
        print(f"running {label} ...", flush=True)
        r = run_worker(spec)
        r["label"], r["spec"] = label, spec
        results[label] = r
        print("   ", {k: v for k, v in r.items() if k not in ("spec",)}, flush=True)
    first = results[specs[0][0]]
    ref_vals = np.load(first["spec"]["out"]) if "error" not in first else None
    for label, r in results.items():
        if "error" in r:
            rows.append(f"| {label} | failed | | | | | | | |")
            continue
        # each row against pycytominer on the same row order
        ref = next(x for x in results.values() if x["spec"]["tool"] == "pycytominer"
                   and x["spec"].get("shuffle", False) == r["spec"].get("shuffle", False))
        diff = ""
        if ref_vals is not None and r is not first:
            v = np.load(r["spec"]["out"])
            diff = f"{np.nanmax(np.abs(v - ref_vals)):.1e}" if v.shape == ref_vals.shape else "shape differs"
        t_ratio = ref["seconds"] / r["seconds"] if "error" not in ref else float("nan")
        m_ratio = ref["peak_extra_mb"] / max(r["peak_extra_mb"], 1e-9) if "error" not in ref else float("nan")
        c_ratio = ref["cpu_seconds"] / r["cpu_seconds"] if "error" not in ref else float("nan")
        rows.append(
            f"| {label} | {r['seconds']:.2f} | {t_ratio:.1f}x | {r['cpu_seconds']:.2f} | {c_ratio:.1f}x "
            f"| {r['peak_extra_mb']:.0f} | {m_ratio:.1f}x | {diff or '-'} | {r.get('cow', '?')} |"
        )
    lines = [
        f"## ip.pp.aggregate vs pycytominer.aggregate: {n:,} cells x {p} features, median by plate + well",
        "",
        f"{2 * 384} wells (2 plates), float64, 0.1 % NaN; input {n * p * 8 / 1e9:.1f} GB. "
        "Each row is its own subprocess; memory = peak RSS growth during the call (VmHWM minus RSS before). "
        "CPU s = process CPU time (all threads), less sensitive than wall time to other load on the machine. "
        "Speed-up and memory ratio: against pycytominer on the same row order; the difference: against "
        "pycytominer on grouped rows. " + FAIR_MEMORY,
        "",
        "| tool | wall s | wall speed-up | CPU s | CPU speed-up | peak extra memory (MB) | memory ratio | max abs diff vs pycytominer | pandas CoW |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
    ]
    if not args.skip_stream:
        import shutil

        srows = []
        for fmt in ("parquet", "zarr"):
            for m in stream:
                path = tmp / f"cells_{m}.{fmt}"
                print(f"writing {path} ...", flush=True)
                (write_zarr if fmt == "zarr" else write_parquet)(path, m, p)
                size_gb = sum(f.stat().st_size for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file()) / 1e9
                if fmt == "zarr":
                    import zarr

                    chunks = zarr.open_group(str(path), mode="r")["X"].chunks
                    label = f"zarr ({chunks[0]:,} x {chunks[1]} chunks)"
                else:
                    import pyarrow.parquet as pq

                    md = pq.read_metadata(str(path))
                    label = f"parquet ({md.num_row_groups} row groups, footer {md.serialized_size / 1e6:.1f} MB)"
                r = run_worker(dict(tool="imgprof_stream", cells=m, features=p, path=str(path), out=str(tmp / f"s{m}.npy")))
                print("   ", r, flush=True)
                if "error" in r:
                    srows.append(f"| {label} | {m:,} | {size_gb:.2f} | failed | | | | |")
                else:
                    srows.append(
                        f"| {label} | {m:,} | {size_gb:.2f} | {m * p * 8 / 1e9:.1f} | {r['n_groups']:,} "
                        f"| {r['n_groups'] * p * 8 / 1e6:.0f} | {r['seconds']:.1f} | {r['peak_extra_mb']:.0f} |"
                    )
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        lines += [
            "",
            f"### Streaming from disk (rows grouped by plate/well), {p} features",
            "",
            "`ip.pp.aggregate(path)`; the process holds only imgprof before the call. Zarr: an AnnData store "
            "written by `write_zarr` with its default chunks. The screen grows by plates (2 plates of 384 wells "
            "per 250,000 cells, ~325 cells per well), so the result (wells x features) grows with it, and so "
            "does the parquet footer, which pyarrow parses whole (about 1 KB per column and row group; "
            "`footer` is its size on disk).",
            "",
            "| format | cells | on disk (GB) | in memory as float64 (GB) | groups | result (MB) | seconds | peak extra memory (MB) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *srows,
        ]
    if not args.skip_stream and args.file_cells:
        lines += file_section(args, args.file_cells, p, tmp, ("grouped", "shuffled"))
    finish(args, lines)


def finish(args, lines: list[str]) -> None:
    lines += [
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"run {time.strftime('%Y-%m-%d %H:%M')}; load average at the end {os.getloadavg()[0]:.1f} (a shared machine: other "
        "jobs ran at the same time, so wall times are noisy; CPU seconds less so).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.file_only and args.out == HERE / "results" / "aggregate.md":
        return  # a partial run: printed only (paste it into the results file by hand)
    if not args.quick or args.out != HERE / "results" / "aggregate.md":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")


def file_section(args, m: int, p: int, tmp: Path, orders) -> list[str]:
    """Parquet file -> wells, both tools from the same file on disk; best of ``args.repeat`` runs each."""
    import numpy as np

    frows = []
    for order in orders:
        path = tmp / f"file_{order}.parquet"
        print(f"writing {path} ...", flush=True)
        (write_parquet if order == "grouped" else write_parquet_shuffled)(path, m, p)
        res: dict = {}
        for rep in range(max(1, args.repeat)):
            for tool in ("pycytominer_file", "imgprof_stream"):
                r = run_worker(dict(tool=tool, cells=m, features=p, path=str(path), out=str(tmp / f"f_{order}_{tool}.npy")))
                print(f"    run {rep + 1}:", r, flush=True)
                best = res.get(tool)
                if best is None or ("error" not in r and ("error" in best or r["seconds"] < best["seconds"])):
                    res[tool] = r
        ref = res["pycytominer_file"]
        for tool, label in (("pycytominer_file", "pycytominer: pd.read_parquet + aggregate"),
                            ("imgprof_stream", "ip.pp.aggregate(path)" + (", unsorted rows" if order == "shuffled" else ", streamed"))):
            r = res[tool]
            if "error" in r or "error" in ref:
                frows.append(f"| {order} | {label} | failed | | | | | |")
                continue
            diff = "-"
            if tool == "imgprof_stream":
                a, b = np.load(tmp / f"f_{order}_{tool}.npy"), np.load(tmp / f"f_{order}_pycytominer_file.npy")
                diff = f"{np.nanmax(np.abs(a - b)):.1e}" if a.shape == b.shape else "shape differs"
            frows.append(
                f"| {order} | {label} | {r['seconds']:.1f} | {ref['seconds'] / r['seconds']:.1f}x | {r['cpu_seconds']:.1f} "
                f"| {r['peak_extra_mb']:.0f} | {ref['peak_extra_mb'] / max(r['peak_extra_mb'], 1e-9):.1f}x | {diff} | {r.get('cow', '?')} |"
            )
        path.unlink()
    return [
        "",
        f"### From a parquet file to wells, side by side: {m:,} cells x {p} features, rows grouped or shuffled",
        "",
        "Same starting point: the same parquet file on disk; both tools read it inside the timed region "
        "(pycytominer needs the table in memory: `pd.read_parquet` + `aggregate`, timed and measured together). "
        "Same method: median by plate + well. Warm-up excluded: each process first aggregates a 5,000-cell file "
        "with the same tool (imports, numba cache load, pyarrow), untimed. Best of "
        f"{max(1, args.repeat)} run(s) per tool, the tools alternating. imgprof streams the grouped file; for the "
        "shuffled one it reads a block of columns of every row at a time (a buffer of about 256 MB, rows placed "
        "by group as they are decoded) and reduces each block in memory, so each value is read once and nothing "
        "is written to disk (above about 134 M rows, or with `spill_dir=`, it spills buckets of wells to "
        "temporary files instead).",
        "",
        "| rows | tool | seconds | speed-up | CPU s | peak extra memory (MB) | memory ratio | max abs diff vs pycytominer | pandas CoW |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
        *frows,
    ]


if __name__ == "__main__":
    main()
