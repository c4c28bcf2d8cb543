"""Benchmark ip.tl against the reference tools, side by side on the same data.

Every measurement runs in its own subprocess (fresh interpreter), which
reports wall seconds for the call and its peak resident memory
(``ru_maxrss``, which includes the synthetic data the process built first,
identical for both tools). Results are printed as markdown and written to
``benchmarks/results/tl.md``.

Usage::

    python benchmarks/bench_tl.py            # full sizes (Harmony 1M × 50, scVI 100k × 500, Leiden 100k)
    python benchmarks/bench_tl.py --quick    # small smoke run
    python benchmarks/bench_tl.py --only harmony --harmony-n 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "tl.md"


# --------------------------------------------------------------------------- data (deterministic)


def _pcs(n: int, d: int = 50, n_batches: int = 4, n_clusters: int = 20, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(n_clusters, d))
    shifts = rng.normal(scale=2.0, size=(n_batches, d))
    cl = rng.integers(0, n_clusters, n)
    b = rng.integers(0, n_batches, n)
    X = centers[cl] + shifts[b] + rng.normal(size=(n, d))
    return X, b, cl


def _anndata_pcs(n: int, d: int = 50, n_batches: int = 4):
    import anndata as ad
    import numpy as np
    import pandas as pd

    X, b, _ = _pcs(n, d, n_batches)
    obs = pd.DataFrame({"batch": pd.Categorical([f"b{i}" for i in b])}, index=pd.RangeIndex(n).astype(str))
    a = ad.AnnData(X=np.zeros((n, 1), dtype=np.float32), obs=obs)
    a.obsm["X_pca"] = X
    return a


def _features(n: int, p: int, n_batches: int = 4, seed: int = 0):
    """Profiles-like matrix: low-rank biology + per-batch shift and scale + noise, standardised."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    k = 12
    L = rng.normal(size=(k, p)) / np.sqrt(k)
    cl = rng.integers(0, 10, n)
    C = rng.normal(scale=1.5, size=(10, k))
    b = rng.integers(0, n_batches, n)
    shift = rng.normal(size=(n_batches, p))
    scale = np.exp(rng.normal(scale=0.2, size=(n_batches, p)))
    X = ((C[cl] @ L) + rng.normal(size=(n, p))) * scale[b] + shift[b]
    X = (X - X.mean(0)) / X.std(0)
    obs = pd.DataFrame({
        "batch": pd.Categorical([f"b{i}" for i in b]),
        "Metadata_control_type": np.where(cl == 0, "negcon", "trt"),
        "Metadata_Perturbation": [f"p{i}" for i in cl],
    }, index=pd.RangeIndex(n).astype(str))
    return ad.AnnData(X=X, obs=obs)


# --------------------------------------------------------------------------- workers (run in a subprocess)


def worker(task: str, n: int, p: int, extra: dict) -> dict:
    import numpy as np

    out: dict = {}
    if task.startswith("harmony"):
        a = _anndata_pcs(n)
        t = time.perf_counter()
        if task == "harmony_imgprof":
            import imgprof as ip

            ip.tl.harmony(a, "batch")
            Z = a.obsm["X_harmony"]
        else:
            import harmonypy

            Z = harmonypy.run_harmony(a.obsm["X_pca"], a.obs, "batch", verbose=False).Z_corr
        out["seconds"] = time.perf_counter() - t
        out["checksum"] = float(np.asarray(Z, dtype=np.float64).sum())
    elif task.startswith("scvi"):
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        logging.disable(logging.WARNING)
        a = _features(n, p)
        epochs = int(extra.get("epochs", 2))
        if task == "scvi_imgprof":
            import imgprof as ip

            t = time.perf_counter()
            ip.tl.scvi(a, "batch", max_epochs=epochs, early_stopping=False, accelerator="cpu", standardize=False)
            out["seconds"] = time.perf_counter() - t
            ex = ip.provenance(a).iloc[-1]["extra"]
            out["seconds_per_epoch"] = ex["seconds_per_epoch"]
        else:
            import anndata as ad
            import scvi
            from scvi.external import CYTOVI

            scvi.settings.seed = 0
            t = time.perf_counter()
            tmp = ad.AnnData(X=a.X.astype(np.float32), obs=a.obs[["batch"]].copy())
            CYTOVI.setup_anndata(tmp, batch_key="batch")
            m = CYTOVI(tmp)
            t1 = time.perf_counter()
            m.train(max_epochs=epochs, early_stopping=False, accelerator="cpu", enable_progress_bar=False)
            out["seconds_per_epoch"] = (time.perf_counter() - t1) / epochs
            m.get_latent_representation()
            out["seconds"] = time.perf_counter() - t
    elif task.startswith("neighbors") or task.startswith("leiden"):
        import scanpy as sc

        import imgprof as ip

        a = _anndata_pcs(n)
        if task.startswith("leiden"):
            ip.tl.neighbors(a, use_rep="X_pca")
            t = time.perf_counter()
            if task == "leiden_imgprof":
                ip.tl.leiden(a)
            else:
                sc.tl.leiden(a, flavor="igraph", n_iterations=2, directed=False, random_state=0)
            out["seconds"] = time.perf_counter() - t
            out["n_clusters"] = int(a.obs["leiden"].nunique())
        else:
            t = time.perf_counter()
            if task == "neighbors_imgprof":
                ip.tl.neighbors(a, use_rep="X_pca")
            else:
                sc.pp.neighbors(a, use_rep="X_pca", metric="cosine", random_state=0)
            out["seconds"] = time.perf_counter() - t
    else:  # feature-space methods on one medium profile matrix
        import imgprof as ip

        a = _features(n, p)
        method = task.split("_", 1)[0]
        impl = task.split("_", 1)[1]
        if method == "scanorama":
            ip.tl.pca(a, n_comps=50)
        t = time.perf_counter()
        if impl == "imgprof":
            kw = {"epsilon": 1e-2} if method == "sphering" else {}
            if method == "scanorama":
                kw["cos_norm"] = False
            ip.tl.integrate(a, method, "batch", **kw)
        elif method == "combat":
            import scanpy as sc

            sc.pp.combat(a, key="batch", inplace=False)
        elif method == "scanorama":
            import scanpy.external as sce

            order = np.argsort(a.obs["batch"].cat.codes.to_numpy(), kind="stable")
            a = a[order].copy()
            t = time.perf_counter()
            sce.pp.scanorama_integrate(a, "batch", basis="X_pca", verbose=0)
        elif method == "sphering":
            import pandas as pd
            from pycytominer.operations import Spherize

            df = pd.DataFrame(a.X)
            ctrl = (a.obs["Metadata_control_type"] == "negcon").to_numpy()
            Spherize(epsilon=1e-2, method="ZCA-cor").fit(df[ctrl]).transform(df)
        out["seconds"] = time.perf_counter() - t
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run(task: str, n: int, p: int = 50, timeout: int = 3600, **extra) -> dict:
    cmd = [sys.executable, __file__, "--worker", task, "--n", str(n), "--p", str(p), "--extra", json.dumps(extra)]
    t = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout}s"}
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"rc={res.returncode}"}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_seconds"] = time.perf_counter() - t
    print(f"  {task} n={n}: {out}", flush=True)
    return out


def _fmt(x, nd=2):
    return "—" if x is None else (f"{x:,.{nd}f}" if isinstance(x, float) else str(x))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=None, help="comma list of sections: harmony,scvi,leiden,methods")
    ap.add_argument("--harmony-n", type=int, default=None)
    ap.add_argument("--worker", default=None)
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--p", type=int, default=50)
    ap.add_argument("--extra", default="{}")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.p, json.loads(args.extra))))
        return
    sections = set((args.only or "harmony,scvi,leiden,methods").split(","))
    q = args.quick
    sizes = {
        "harmony": args.harmony_n or (20_000 if q else 1_000_000),
        "scvi": (5_000, 100) if q else (100_000, 500),
        "leiden": 10_000 if q else 100_000,
        "methods": (2_000, 100) if q else (20_000, 300),
    }
    rows = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    header = (f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
              f"load average at start {load:.1f}. Seconds are wall time of the call; memory is the worker "
              "process's peak RSS (includes the synthetic input, identical for both tools).")
    if "harmony" in sections:
        n = sizes["harmony"]
        ours, ref = run("harmony_imgprof", n), run("harmony_harmonypy", n)
        same = ("checksum" in ours and "checksum" in ref and abs(ours["checksum"] - ref["checksum"]) <= 1e-6 * max(1.0, abs(ref["checksum"])))
        rows.append(("Harmony", f"{n:,} × 50 PCs, 4 batches", "harmonypy.run_harmony", ours, ref, "identical output" if same else "outputs differ!"))
    if "scvi" in sections:
        n, p = sizes["scvi"]
        ours, ref = run("scvi_imgprof", n, p, epochs=2), run("scvi_cytovi", n, p, epochs=2)
        rows.append(("scVI (CytoVI, CPU)", f"{n:,} × {p}, 2 epochs", "scvi.external.CYTOVI direct", ours, ref,
                     f"s/epoch: ours {_fmt(ours.get('seconds_per_epoch'))}, direct {_fmt(ref.get('seconds_per_epoch'))}"))
    if "leiden" in sections:
        n = sizes["leiden"]
        ours, ref = run("neighbors_imgprof", n), run("neighbors_scanpy", n)
        rows.append(("neighbors (cosine, k=15)", f"{n:,} × 50 PCs", "sc.pp.neighbors", ours, ref, ""))
        ours, ref = run("leiden_imgprof", n), run("leiden_scanpy", n)
        rows.append(("Leiden (igraph)", f"{n:,} cells, 15-NN graph", "sc.tl.leiden(flavor='igraph')", ours, ref,
                     f"{ours.get('n_clusters', '?')} clusters; leidenalg is not installed here"))
    if "methods" in sections:
        n, p = sizes["methods"]
        for m, refname in [("combat", "sc.pp.combat"), ("scanorama", "sce.pp.scanorama_integrate"),
                           ("sphering", "pycytominer Spherize (1 ε)"), ("mnn", None), ("rpca", None)]:
            ours = run(f"{m}_imgprof", n, p)
            ref = run(f"{m}_ref", n, p) if refname else {}
            what = f"{n:,} × {p}" + (" (50 PCs)" if m == "scanorama" else "") + ", 4 batches"
            note = "ours: grid of 1 ε" if m == "sphering" else ("no Python reference" if refname is None else "")
            rows.append((m, what, refname or "—", ours, ref, note))
    lines = ["| task | data | reference | imgprof s | reference s | ratio | imgprof peak MB | reference peak MB | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, data, refname, ours, ref, note in rows:
        so, sr = ours.get("seconds"), ref.get("seconds")
        ratio = so / sr if so and sr else None
        err = "; ".join(f"{k}: {d['error']}" for k, d in (("ours", ours), ("ref", ref)) if "error" in d)
        lines.append(f"| {name} | {data} | {refname} | {_fmt(so)} | {_fmt(sr)} | {_fmt(ratio)} | "
                     f"{_fmt(ours.get('peak_rss_mb'), 0)} | {_fmt(ref.get('peak_rss_mb'), 0)} | {note}{(' ' + err) if err else ''} |")
    table = "\n".join(lines)
    print()
    print(header)
    print()
    print(table)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        mode = "quick" if q else "full"
        RESULTS.write_text(f"# ip.tl benchmark ({mode})\n\n{header}\n\n{table}\n")
        print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
