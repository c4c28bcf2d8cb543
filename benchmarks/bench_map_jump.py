"""Benchmark: phenotypic activity at JUMP scale (imgprof, blocked and on dask.distributed) vs copairs 0.5.

Design (JUMP-like): compounds x 4 replicates on 384-well plates with 16-28 DMSO
wells per plate (one count per batch of 8 plates); the 4 replicates of a
compound sit on 4 different plates of one batch; 60 % of compounds active;
plate effects. Activity = replicates vs the DMSO wells of the query's own plate
(``sameby_controls="Metadata_Plate"``), copairs' reference-index recipe.

The profiles are written once to a float32 ``.npy`` file (outside any timed
region); imgprof reads it as a memory map (``np.load(mmap_mode="r")``) and
never holds the whole matrix: each block reads only its rows. copairs gets the
same matrix loaded in memory (its API needs an in-memory array; loading is not
timed).

Rows (each in a fresh subprocess; time = the call, imports excluded; peak RSS
growth over the call; pandas copy-on-write off):

* ``imgprof shared``   - ``phenotypic_activity_blocked(..., null="shared")``: the same null
  construction as copairs (one null row per configuration, ties counted), so the same work.
* ``imgprof permutation`` - the default exact label-permutation p-values.
* ``imgprof dask``     - ``null="shared"`` on a ``LocalCluster`` (2 process workers, 1 thread
  each); workers read their blocks from the file. RSS is the client's; worker
  peaks are reported separately.
* ``copairs``          - ``average_precision`` + ``mean_average_precision``, sizes doubled until a
  run exceeds the time limit (10 minutes at full size).

Usage: ``python benchmarks/bench_map_jump.py [--quick]`` -> ``benchmarks/results/map_jump.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def layout(n_cpd: int, seed: int = 0):
    """JUMP-like metadata for ``n_cpd`` compounds (4 replicates each) and the DMSO wells of their plates."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    cpd, plate, names = [], [], []
    c0, p0 = 0, 0
    while c0 < n_cpd:
        n_dmso = int(rng.integers(16, 29))
        per_plate = 384 - n_dmso
        n_b = min(2 * per_plate, n_cpd - c0)  # compounds in this batch of 8 plates
        c = np.arange(n_b)
        for r in range(4):
            cpd.append(c0 + c)
            plate.append(p0 + 2 * r + (c % 2))
        for q in range(8):  # a partial last batch leaves compound slots empty (plates keep 16-28 DMSO)
            cpd.append(np.full(n_dmso, -1))
            plate.append(np.full(n_dmso, p0 + q))
        c0 += n_b
        p0 += 8
    cpd = np.concatenate(cpd)
    plate = np.concatenate(plate)
    names = np.where(cpd >= 0, np.char.add("c", cpd.astype(str)), "DMSO")
    meta = pd.DataFrame({"Metadata_cpd": names, "Metadata_Plate": np.char.add("p", plate.astype(str)),
                         "Metadata_pert_type": np.where(cpd >= 0, "trt", "control")})
    order = np.lexsort((cpd, plate))
    meta = meta.iloc[order].reset_index(drop=True)
    meta.index = meta.index.astype(str)
    return meta


def write_profiles(meta, path: Path, d: int, seed: int = 0, chunk: int = 20000) -> None:
    """Profiles to a float32 .npy file, chunk by chunk (never the whole matrix in memory)."""
    rng = np.random.default_rng(seed)
    cpd = meta["Metadata_cpd"].to_numpy()
    codes, uniq = np.unique(cpd, return_inverse=True)[1], None
    plates = np.unique(meta["Metadata_Plate"].to_numpy(), return_inverse=True)[1]
    n_cpd = int(codes.max()) + 1
    active = np.random.default_rng(seed + 1).random(n_cpd) < 0.6
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(meta), d))
    for s in range(0, len(meta), chunk):
        e = min(len(meta), s + chunk)
        x = rng.standard_normal((e - s, d), dtype=np.float32)
        c = codes[s:e]
        trt = cpd[s:e] != "DMSO"
        # per-compound effect and per-plate effect from seeded generators (reproducible without storing them)
        for i in np.flatnonzero(trt & active[c]):
            x[i] += 0.35 * np.random.default_rng([seed, int(c[i])]).standard_normal(d, dtype=np.float32)
        for p in np.unique(plates[s:e]):
            sel = plates[s:e] == p
            x[sel] += 0.3 * np.random.default_rng([seed, 10**9 + int(p)]).standard_normal(d, dtype=np.float32)
        out[s:e] = x
    out.flush()
    del out
    _ = uniq


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the shared helpers
from _memory import status_mb  # noqa: E402


def _anon_mb() -> float:
    return status_mb("RssAnon")


class _AnonPeak:
    """Peak anonymous resident memory (heap, not memory-mapped file pages) sampled every 50 ms."""

    def __enter__(self):
        import threading

        self.base = self.peak = _anon_mb()
        self._stop = threading.Event()

        def loop():
            while not self._stop.wait(0.05):
                self.peak = max(self.peak, _anon_mb())

        self._t = threading.Thread(target=loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _anon_mb())


def worker(spec: dict) -> dict:
    import warnings

    import pandas as pd

    warnings.simplefilter("ignore")
    meta = pd.read_parquet(spec["meta"])
    X = np.load(spec["x"], mmap_mode="r")
    null_size = spec["null_size"]
    tool = spec["tool"]
    import anndata as ad

    import imgprof as ip

    out: dict = {}
    if tool == "copairs":
        import copairs.map as cm

        Xm = np.asarray(X)  # copairs needs the matrix in memory (not timed)
        m = meta.reset_index(drop=True).copy()
        ctrl = (m["Metadata_cpd"] == "DMSO").to_numpy()
        m["Metadata_ref"] = -1
        m.loc[ctrl, "Metadata_ref"] = np.arange(int(ctrl.sum()))
        rss0 = _rss_mb()
        anon = _AnonPeak().__enter__()
        t0 = time.perf_counter()
        ap = cm.average_precision(m, Xm, ["Metadata_cpd", "Metadata_ref"], [], ["Metadata_Plate"],
                                  ["Metadata_cpd", "Metadata_ref"], progress_bar=False)
        with tempfile.TemporaryDirectory() as cache:
            res = cm.mean_average_precision(ap.loc[~ctrl], ["Metadata_cpd"], null_size=null_size, threshold=0.05, seed=0,
                                            progress_bar=False, cache_dir=cache)
        out["seconds"] = time.perf_counter() - t0
        anon.__exit__()
        out["anon_peak_growth_mb"] = anon.peak - anon.base
        res = res.sort_values("Metadata_cpd").reset_index(drop=True)
        np.save(spec["save"], res["mean_average_precision"].to_numpy(float))
    else:
        a = ad.AnnData(X, obs=meta)
        client = cluster = None
        if tool == "dask":
            from dask.distributed import Client, LocalCluster

            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="3GiB",
                                   dashboard_address=":0")
            client = Client(cluster)
            # warm the workers' imports (not timed): anndata + imgprof.metrics, as the tasks use them
            client.run(lambda: [__import__(m) for m in ("anndata", "imgprof.metrics", "imgprof.metrics.scale")] and None)
        null = "permutation" if tool == "permutation" else "shared"
        rss0 = _rss_mb()
        anon = _AnonPeak().__enter__()
        t0 = time.perf_counter()
        res = ip.metrics.phenotypic_activity_blocked(a, "Metadata_cpd", controls="Metadata_cpd == 'DMSO'",
                                                    sameby_controls="Metadata_Plate", block_size=spec["block"],
                                                    null_size=null_size, seed=0, null=null, client=client, dtype="float32")
        out["seconds"] = time.perf_counter() - t0
        anon.__exit__()
        out["anon_peak_growth_mb"] = anon.peak - anon.base
        if client is not None:
            peaks = client.run(lambda: __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss / 1024)
            out["worker_peak_rss_mb"] = max(peaks.values())
            client.close()
            cluster.close()
        out["methods"] = {str(k): int(v) for k, v in res["p_value_method"].value_counts().items()}
        out["n_active"] = int(res["below_corrected_p"].sum())
        res = res.sort_values("Metadata_cpd").reset_index(drop=True)
        np.save(spec["save"], res["mean_average_precision"].to_numpy(float))
    out["n_groups"] = len(res)
    out["rss_growth_mb"] = _peak_rss_mb() - rss0
    return out


def run(spec: dict, timeout: float) -> dict:
    try:
        r = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, check=False,
                           timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        return {"timeout": True}
    if r.returncode != 0:
        print(r.stderr[-3000:], file=sys.stderr)
        return {"error": r.stderr.strip().splitlines()[-1][:200]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", default=None)
    ap.add_argument("--out", default=str(RESULTS / "map_jump.md"))
    ap.add_argument("--sizes", default=None, help="comma-separated compound counts for imgprof")
    ap.add_argument("--copairs-sizes", default=None)
    ap.add_argument("--perm-null", type=int, default=None)
    ap.add_argument("--perm-max", type=int, default=None, help="largest compound count for the permutation row")
    ap.add_argument("--block", type=int, default=None, help="compounds per block (imgprof)")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.quick:
        d, sizes, cp_sizes, null, limit, block = 50, [1000, 4000], [250, 500], 1000, 120, 250
    else:
        d, sizes, cp_sizes, null, limit, block = 1000, [10_000, 100_000], [8000, 16000, 32000, 64000], 10000, 600, 250
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    if args.copairs_sizes:
        cp_sizes = [int(s) for s in args.copairs_sizes.split(",")]
    perm_null = args.perm_null or null
    block = args.block or block
    tmp = Path(tempfile.mkdtemp(prefix="bench_map_jump_"))
    rows = []

    def data(n_cpd):
        meta = layout(n_cpd)
        mp, xp = tmp / f"meta_{n_cpd}.parquet", tmp / f"x_{n_cpd}.npy"
        if not xp.exists():
            meta.to_parquet(mp)
            write_profiles(meta, xp, d)
        return meta, mp, xp

    def record(n_cpd, tool, nul, timeout):
        meta, mp, xp = data(n_cpd)
        spec = {"meta": str(mp), "x": str(xp), "tool": tool, "null_size": nul, "block": block,
                "save": str(tmp / f"map_{n_cpd}_{tool}.npy")}
        print(f"running {n_cpd} compounds / {tool} ...", file=sys.stderr, flush=True)
        r = run(spec, timeout)
        r.update(n_cpd=n_cpd, tool=tool, n_wells=len(meta), null_size=nul,
                 n_plates=int(meta["Metadata_Plate"].nunique()), gib=len(meta) * d * 4 / 2**30)
        rows.append(r)
        print(r, file=sys.stderr, flush=True)
        return r

    # copairs: increasing sizes until one exceeds the limit
    cp_ok = None
    for n in cp_sizes:
        r = record(n, "copairs", null, limit)
        if r.get("timeout"):
            break
        cp_ok = n
    agree = {}
    if cp_ok is not None:
        for tool in ("shared", "permutation"):
            if tool == "permutation" and args.perm_max is not None and cp_ok > args.perm_max:
                continue
            record(cp_ok, tool, null if tool == "shared" else perm_null, limit * 4)
        a = np.load(tmp / f"map_{cp_ok}_shared.npy")
        b = np.load(tmp / f"map_{cp_ok}_copairs.npy")
        agree["max abs ΔmAP vs copairs"] = float(np.max(np.abs(a - b))) if a.shape == b.shape else f"shape {a.shape} vs {b.shape}"
    for n in sizes:
        record(n, "shared", null, 3600)
        record(n, "dask", null, 3600)
        if args.perm_max is None or n <= args.perm_max:
            record(n, "permutation", perm_null, 3600)

    lines = [
        "# JUMP-scale phenotypic activity: imgprof vs copairs 0.5.5",
        "",
        f"Machine: {os.cpu_count()} CPU cores, shared with other engineers' jobs (load varies: absolute times are",
        "noisy; the copairs/imgprof ratio is from the same run). Each row is one fresh subprocess with",
        "`OMP_NUM_THREADS=1`; imports and data generation are outside the timed region (no other warm-up);",
        "pandas copy-on-write off. Design: 4 replicates per compound on 4 plates of a batch of 8, 16–28 DMSO",
        f"wells per 384-well plate, {d:,} features, negatives = same-plate DMSO. Mode: {'quick' if args.quick else 'full'}.",
        f"copairs time limit per run: {limit} s.",
        "",
        "| compounds | wells | plates | matrix (GiB, float32) | tool | null | null_size | time (s) | peak RSS growth (MB) | workers' peak RSS (MB) | p-value methods |",
        "|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['n_cpd']:,} | {r['n_wells']:,} | {r['n_plates']:,} | {r['gib']:.2f} | {r['tool']} | – | – | "
                         f"error: {r['error']} | – | – | – |")
            continue
        t = "timeout" if r.get("timeout") else f"{r['seconds']:.1f}"
        nul = {"copairs": "copairs (shared, `>`)", "shared": "shared (`≥`)", "dask": "shared (`≥`)",
               "permutation": "permutation"}[r["tool"]]
        tool = {"copairs": "copairs", "shared": "imgprof blocked", "dask": "imgprof blocked, LocalCluster 2 workers",
                "permutation": "imgprof blocked"}[r["tool"]]
        rss = "–" if r.get("timeout") else f"{r['rss_growth_mb']:.0f}"
        wk = f"{r['worker_peak_rss_mb']:.0f}" if "worker_peak_rss_mb" in r else "–"
        lines.append(f"| {r['n_cpd']:,} | {r['n_wells']:,} | {r['n_plates']:,} | {r['gib']:.2f} | {tool} | {nul} | "
                     f"{r['null_size']:,} | {t} | {rss} | {wk} | {r.get('methods', '–')} |")
    if cp_ok is not None:
        cp = next(r for r in rows if r["tool"] == "copairs" and r["n_cpd"] == cp_ok)
        ip_ = next(r for r in rows if r["tool"] == "shared" and r["n_cpd"] == cp_ok)
        lines += ["", (f"Largest size copairs finished within the limit: {cp_ok:,} compounds; imgprof (same null "
                       f"construction) is {cp['seconds'] / ip_['seconds']:.0f}× faster there. {agree}")]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _fair import write_markdown

    write_markdown("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
