"""Benchmark ip.pp.normalize / ip.pp.feature_select against pycytominer 1.7.1, side by side.

Data: ``ip.datasets.simulate`` with 20 plates x 384 wells x 1,000 features (32 negcon
wells per plate); a complete copy for normalize/spherize and a copy with 5 % NaN for
feature selection. pycytominer has no ``by=``: per-plate normalization is its usual
``groupby`` loop calling ``pycytominer.normalize`` once per plate.

Every measurement runs in its own subprocess, which loads the data in the tool's native
form (AnnData for imgprof, a pandas DataFrame for pycytominer), warms the code up on a
small slice (numba kernels are compiled and cached on disk once), then times the call.
Peak memory is the growth of the process's resident set during the timed call (Linux
``VmHWM`` after resetting it through ``/proc/self/clear_refs``). The outputs of the two
tools are compared (max |difference| or identical kept features).

imgprof runs twice per task, with pandas copy-on-write off and on (set before imgprof is
imported; pandas 3 makes it the default, and importing pycytominer turns it on), and the
per-plate center/scale tasks also get a plain-numpy reference (per-plate ``np.nanmedian`` /
``np.nanmean`` on the control rows, then ``(x - center) / scale``) built from arrays made
outside the timed region: the floor an AnnData-level API can approach.

Fairness: each tool starts from its own in-memory container (AnnData for imgprof, a DataFrame
for pycytominer, arrays for numpy), loaded from the same simulated data outside the timed
region; both compute the same method with the same controls and groups; warm-up (one call on
the first 2 plates, same process) is excluded; the copy-on-write mode of each run is recorded.

Usage::

    python benchmarks/bench_normalize.py            # full size, writes benchmarks/results/normalize.md
    python benchmarks/bench_normalize.py --quick    # 2 plates x 100 features smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NEGCON = "Metadata_control_type == 'negcon'"
FS_ALL = ["variance_threshold", "frequency_threshold", "correlation_threshold", "drop_na_columns", "blocklist", "drop_outliers"]

# name: (label, data, kind, kwargs)
TASKS = {
    "mad_plate": ("normalize mad_robustize, per plate, negcon", "clean", "normalize",
                  dict(method="mad_robustize", controls=NEGCON, by="Metadata_Plate")),
    "std_plate": ("normalize standardize, per plate, negcon", "clean", "normalize",
                  dict(method="standardize", controls=NEGCON, by="Metadata_Plate")),
    "int_plate": ("normalize inverse_normal, per plate, negcon", "clean", "normalize",
                  dict(method="inverse_normal", controls=NEGCON, by="Metadata_Plate")),
    "mad_plate_nan": ("normalize mad_robustize, per plate, negcon, 5 % NaN", "nan", "normalize",
                      dict(method="mad_robustize", controls=NEGCON, by="Metadata_Plate")),
    "sph_all": ("spherize ZCA-cor, fit on all 7,680 wells", "clean", "normalize",
                dict(method="spherize", spherize_method="ZCA-cor")),
    "sph_plate": ("spherize ZCA-cor, per plate, fit on negcon", "clean", "normalize",
                  dict(method="spherize", spherize_method="ZCA-cor", controls=NEGCON, by="Metadata_Plate")),
    "fs_var": ("feature_select variance_threshold, 5 % NaN", "nan", "feature_select", dict(operation="variance_threshold")),
    "fs_freq": ("feature_select frequency_threshold, 5 % NaN", "nan", "feature_select", dict(operation="frequency_threshold")),
    "fs_corr": ("feature_select correlation_threshold, 5 % NaN", "nan", "feature_select", dict(operation="correlation_threshold")),
    "fs_na_out": ("feature_select drop_na_columns + blocklist + drop_outliers, 5 % NaN", "nan", "feature_select",
                  dict(operation=["drop_na_columns", "blocklist", "drop_outliers"])),
    "fs_all": ("feature_select, all six operations, 5 % NaN", "nan", "feature_select", dict(operation=FS_ALL)),
}


# ------------------------------------------------------------------------------------------------
# worker (one tool, one task, one process)
# ------------------------------------------------------------------------------------------------
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fair import saved_pair  # noqa: E402
from _memory import timed_runs  # noqa: E402


def _run_pcm(task, df, feats):
    import warnings

    import pandas as pd
    import pycytominer as pcm

    _, _, kind, kw = TASKS[task]
    meta = [c for c in df.columns if c not in set(feats)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "normalize":
            kw = dict(kw)
            by = kw.pop("by", None)
            samples = kw.pop("controls", None) or "all"
            if by is None:
                return pcm.normalize(df, features=feats, meta_features=meta, samples=samples, **kw)
            parts = [pcm.normalize(g, features=feats, meta_features=meta, samples=samples, **kw) for _, g in df.groupby(by)]
            return pd.concat(parts).loc[df.index]
        return pcm.feature_select(df, features=feats, **kw)


def _run_ip(task, adata, dask_mode=False):
    import imgprof as ip

    _, _, kind, kw = TASKS[task]
    if kind == "normalize":
        ip.pp.normalize(adata, **kw)
    else:
        ip.pp.feature_select(adata, **kw)
    return adata


NUMPY_TASKS = ("mad_plate", "mad_plate_nan", "std_plate")


def _run_numpy(task, X, plate_codes, n_plates, ctrl):
    """Plain numpy: per plate, centre and scale from the control rows, then (x - c) / s."""
    import numpy as np

    out = np.empty_like(X)
    for g in range(n_plates):
        rows = np.flatnonzero(plate_codes == g)
        ref = X[rows[ctrl[rows]]]
        if task == "std_plate":
            c = np.nanmean(ref, axis=0)
            s = np.nanstd(ref, axis=0)
        else:
            c = np.nanmedian(ref, axis=0)
            s = np.nanmedian(np.abs(ref - c), axis=0) * 1.4826 + 1e-18
        out[rows] = (X[rows] - c) / s
    return out


def worker(tool: str, task: str, datadir: Path, outdir: Path, repeats: int) -> dict:
    import numpy as np
    import pandas as pd

    cow_env = os.environ.get("BENCH_PANDAS_COW")
    if cow_env is not None:  # before imgprof (and its pandas-using modules) are imported
        pd.options.mode.copy_on_write = cow_env == "on"
    label, data, kind, kw = TASKS[task]
    if tool == "numpy":
        import anndata as ad

        a = ad.read_h5ad(datadir / f"{data}.h5ad")
        X = np.asarray(a.X, dtype=np.float64)
        _, plate_codes = np.unique(a.obs["Metadata_Plate"].to_numpy(), return_inverse=True)
        n_plates = int(plate_codes.max()) + 1
        ctrl = (a.obs["Metadata_control_type"] == "negcon").to_numpy()
        del a
        _run_numpy(task, X[: 2 * 384], plate_codes[: 2 * 384], n_plates, ctrl[: 2 * 384])  # warm-up
        times, cpus, peak, out = timed_runs(lambda _: _run_numpy(task, X, plate_codes, n_plates, ctrl), repeats)
        np.save(outdir / f"{tool}_{task}.npy", out)
        return {"tool": tool, "task": task, "seconds": min(times), "runs": len(times), "peak_mb": peak / 1024,
                "cpu_seconds": min(cpus), "cow": _cow_mode()}
    if tool == "pycytominer":
        import pandas as pd

        df = pd.read_parquet(datadir / f"{data}.parquet")
        feats = json.loads((datadir / "features.json").read_text())
        plates = df["Metadata_Plate"].unique()[:2]
        _run_pcm(task, df[df["Metadata_Plate"].isin(plates)].reset_index(drop=True), feats)  # warm-up
        times, cpus, peak, out = timed_runs(lambda _: _run_pcm(task, df, feats), repeats, budget_s=60)
        if kind == "normalize":
            cols = [c for c in out.columns if c not in set(df.columns) - set(feats)]
            np.save(outdir / f"{tool}_{task}.npy", out[cols].to_numpy(dtype=np.float64))
        else:
            (outdir / f"{tool}_{task}.json").write_text(json.dumps([f for f in feats if f in set(out.columns)]))
    else:
        import anndata as ad

        base_adata = ad.read_h5ad(datadir / f"{data}.h5ad")
        dask_mode = tool == "imgprof-dask"
        client = None
        if dask_mode:
            import dask.array as da
            from distributed import Client, LocalCluster

            client = Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None))
        plates = base_adata.obs["Metadata_Plate"].unique()[:2]
        warm = base_adata[base_adata.obs["Metadata_Plate"].isin(plates).to_numpy()].copy()
        _run_ip(task, warm)  # warm-up (numba kernels)
        def prepare():
            a = base_adata.copy()
            if dask_mode:
                a.X = da.from_array(a.X, chunks=(1920, 250))
            return a

        def run(a):
            out = _run_ip(task, a)
            return out, (out.X.compute() if dask_mode and kind == "normalize" else None)

        times, cpus, peak, (out, res) = timed_runs(run, repeats, prepare=prepare, budget_s=60)
        if kind == "normalize":
            if dask_mode:
                X = res
            else:
                X = out.obsm["X_spherize"] if "X_spherize" in out.obsm else out.X
            np.save(outdir / f"{tool}_{task}.npy", np.asarray(X, dtype=np.float64))
        else:
            (outdir / f"{tool}_{task}.json").write_text(json.dumps(list(map(str, out.var_names))))
        if client is not None:
            client.close()
    return {"tool": tool, "task": task, "seconds": min(times), "runs": len(times), "peak_mb": peak / 1024,
            "cpu_seconds": min(cpus), "cow": _cow_mode()}


def _cow_mode() -> str:
    import pandas as pd

    cow = pd.options.mode.copy_on_write
    return "on" if cow is True else ("warn" if cow == "warn" else "off")


def _numpy_mad_plate(X, plates, ctl):
    """Plain numpy mad_robustize per plate on the control rows (the reference floor for imgprof)."""
    import numpy as np

    out = np.empty_like(X)
    for pl in np.unique(plates):
        rows = plates == pl
        ref = X[rows & ctl]
        med = np.median(ref, axis=0)
        mad = np.median(np.abs(ref - med), axis=0) * 1.482602218505602
        out[rows] = (X[rows] - med) / (mad + 1e-18)
    return out


def _numpy_worker(task, datadir, outdir, repeats) -> dict:
    import anndata as ad
    import numpy as np

    if task != "mad_plate":
        return {"tool": "numpy", "task": task, "error": "numpy baseline only for mad_plate"}
    a = ad.read_h5ad(datadir / f"{TASKS[task][1]}.h5ad")
    X = np.asarray(a.X, dtype=np.float64)
    plates = a.obs["Metadata_Plate"].to_numpy()
    ctl = (a.obs["Metadata_control_type"] == "negcon").to_numpy()
    _numpy_mad_plate(X[: 2 * 384], plates[: 2 * 384], ctl[: 2 * 384])  # warm-up
    times, _, peak, out = timed_runs(lambda _: _numpy_mad_plate(X, plates, ctl), repeats)
    np.save(outdir / f"numpy_{task}.npy", out)
    return {"tool": "numpy", "task": task, "seconds": min(times), "runs": len(times), "peak_mb": peak / 1024}


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------
def make_data(datadir: Path, n_plates: int, n_features: int) -> None:
    import imgprof as ip

    for name, nan in (("clean", 0.0), ("nan", 0.05)):
        adata = ip.datasets.simulate(
            n_plates=n_plates, n_perturbations=352, n_moa=16, n_controls=32, n_features=n_features,
            nan_fraction=nan, seed=0,
        )
        adata.write_h5ad(datadir / f"{name}.h5ad")
        ip.io.to_pandas(adata).to_parquet(datadir / f"{name}.parquet")
    (datadir / "features.json").write_text(json.dumps(list(map(str, adata.var_names))))


def _spawn(tool, task, datadir, outdir, repeats, threads=None):
    from _worker import run_worker, worker_env

    cow = None
    if tool == "imgprof-cow":
        tool, cow = "imgprof", "on"
    elif tool == "imgprof":
        cow = "off"
    cmd = [sys.executable, __file__, "--worker", tool, task, str(datadir), str(outdir), str(repeats)]
    env = worker_env()
    env.pop("BENCH_PANDAS_COW", None)
    if cow is not None:
        env["BENCH_PANDAS_COW"] = cow
    if threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[var] = str(threads)
    res = run_worker(cmd, what=f"{tool}/{task}", env=env, on_error="return")
    return {"tool": tool, "task": task, **res} if "error" in res else res


def _agreement(task, outdir) -> str:
    import numpy as np

    kind = TASKS[task][2]
    if kind == "normalize":
        pair = saved_pair(outdir / f"imgprof_{task}.npy", outdir / f"pycytominer_{task}.npy", "n/a")
        if isinstance(pair, str):
            return pair
        A, B = pair
        both = ~(np.isnan(A) & np.isnan(B))
        text = f"max abs diff {np.nanmax(np.abs(A - B)[both]):.1e}"
        c = outdir / f"numpy_{task}.npy"
        if c.exists():
            C = np.load(c)
            both = ~(np.isnan(C) & np.isnan(B))
            text += f" (numpy vs pycytominer {np.nanmax(np.abs(C - B)[both]):.1e})"
        return text
    a, b = outdir / f"imgprof_{task}.json", outdir / f"pycytominer_{task}.json"
    if not (a.exists() and b.exists()):
        return "n/a"
    A, B = json.loads(a.read_text()), json.loads(b.read_text())
    return f"identical ({len(A)} kept)" if A == B else f"DIFFERENT ({len(A)} vs {len(B)} kept)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 plates x 100 features smoke run")
    p.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dask", action="store_true", help="also time imgprof on a dask array (LocalCluster, 2 workers)")
    p.add_argument("--cow", action="store_true",
                   help="also time imgprof with pandas copy-on-write on, and plain numpy for mad_plate")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS/OpenMP/numba threads for both tools' processes (default: the libraries' own)")
    p.add_argument("--out", default=None, help="markdown output (default benchmarks/results/normalize.md; --quick: not written)")
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        tool, task, datadir, outdir, repeats = args.worker
        print(json.dumps(worker(tool, task, Path(datadir), Path(outdir), int(repeats))))
        return 0
    n_plates, n_features = (2, 100) if args.quick else (20, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        datadir = outdir = Path(tmp)
        t0 = time.time()
        make_data(datadir, n_plates, n_features)
        print(f"data: {n_plates} plates x 384 wells x {n_features} features ({time.time() - t0:.1f} s to simulate)", flush=True)
        rows = []
        for task in args.tasks:
            tools = (["imgprof", "imgprof-cow", "pycytominer"] + (["numpy"] if task in NUMPY_TASKS else [])
                     + (["imgprof-dask"] if args.dask and TASKS[task][2] == "normalize" else []))
            res = {t: _spawn(t, task, datadir, outdir, args.repeats, args.threads) for t in tools}
            agree = _agreement(task, outdir)
            rows.append((task, res, agree))
            ours, ref = res["imgprof"], res["pycytominer"]
            ratio = ref["seconds"] / ours["seconds"] if "seconds" in ours and "seconds" in ref else float("nan")
            print(f"{TASKS[task][0]:<70} imgprof {ours.get('seconds', float('nan')):8.3f}s  "
                  f"pycytominer {ref.get('seconds', float('nan')):8.3f}s  x{ratio:6.1f}  {agree}"
                  + "".join(f"  [{t}: {r.get('error')}]" for t, r in res.items() if "error" in r), flush=True)
    md = _markdown(rows, n_plates, n_features, args)
    print()
    print(md)
    if not args.quick or args.out:
        out = Path(args.out) if args.out else HERE / "results" / "normalize.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(md)
        print(f"written to {out}")
    return 0


def _wall_cpu(r: dict) -> str:
    if "seconds" not in r:
        return f"error: {r.get('error')}" if r else ""
    return f"{r['seconds']:.3f} (CPU {r['cpu_seconds']:.3f})" if "cpu_seconds" in r else f"{r['seconds']:.3f}"


def _markdown(rows, n_plates, n_features, args) -> str:
    from importlib.metadata import version

    import imgprof
    import numpy

    lines = [
        f"# normalize / feature_select / spherize: imgprof vs pycytominer {version('pycytominer')}",
        "",
        f"Data: `ip.datasets.simulate`, {n_plates} plates x 384 wells x {n_features} features (32 negcon wells per plate);"
        " feature selection on the same with 5 % NaN. Best of up to "
        f"{args.repeats} runs, each tool in its own process on its native input (AnnData / DataFrame / numpy arrays), "
        "loaded outside the timed region; same method, controls and groups on every side; warm-up (one call on "
        "the first 2 plates, same process) excluded. pandas copy-on-write: imgprof is run with it off and on "
        "(set before import); pycytominer runs as importing it leaves pandas (CoW on, as the column says). "
        "Speed-up: pycytominer / imgprof with CoW on (both tools in the same pandas mode). "
        "numpy: plain per-plate `nanmedian`/`nanmean` of the control rows then `(x - c) / s` on arrays (the floor). "
        "CPU s: process CPU time of the timed call, best run (threads pinned to 1 with --threads 1), far less "
        "sensitive than wall time to the other jobs of a shared machine.",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" numpy {numpy.__version__}, imgprof {imgprof.__version__}.",
        "pandas copy-on-write: off in the imgprof processes (unless a row says on), on in the pycytominer ones "
        "(importing pycytominer turns it on). Warm-up (2 plates) excluded for every tool.",
        "Peak memory: growth of resident memory during the timed call."
        + (f" BLAS/OpenMP/numba threads: {args.threads} for both tools." if args.threads else "")
        + (f" Load average when written: {os.getloadavg()[0]:.1f} (shared machine)." if hasattr(os, "getloadavg") else ""),
        "",
        "| task | imgprof, CoW off: wall s (CPU s) | imgprof, CoW on: wall s (CPU s) | plain numpy: wall s (CPU s) "
        "| imgprof CoW on / numpy | pycytominer: wall s (CPU s) "
        "| pycytominer CoW | speed-up | imgprof peak (MB) | pycytominer peak (MB) | outputs |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for task, res, agree in rows:
        ours, cow, ref = res["imgprof"], res.get("imgprof-cow", {}), res["pycytominer"]
        npy = res.get("numpy", {})
        if "seconds" in cow and "seconds" in ref:
            ratio = f"{ref['seconds'] / cow['seconds']:.1f}x"
        else:
            ratio = "n/a"
        fmt = lambda r, k, f: (f.format(r[k]) if k in r else f"error: {r.get('error')}")  # noqa: E731
        np_ratio = (f"{cow['seconds'] / npy['seconds']:.1f}x (CPU {cow['cpu_seconds']:.3f} / {npy['cpu_seconds']:.3f} s: "
                    f"{cow['cpu_seconds'] / npy['cpu_seconds']:.1f}x)" if "seconds" in npy and "seconds" in cow else "")
        lines.append(
            f"| {TASKS[task][0]} | {_wall_cpu(ours)} | {_wall_cpu(cow)} | {_wall_cpu(npy) if npy else ''} | {np_ratio} "
            f"| {_wall_cpu(ref)} | {ref.get('cow', '?')} | {ratio} | "
            f"{fmt(ours, 'peak_mb', '{:.0f}')} | {fmt(ref, 'peak_mb', '{:.0f}')} | {agree} |"
        )
        for extra, what in (("imgprof-cow", "↳ same, imgprof with pandas copy-on-write **on**"),
                            ("numpy", "↳ same math in plain numpy (np.median per plate; the floor)")):
            if extra in res:
                ex = res[extra]
                vs = (f"{ex['seconds'] / ours['seconds']:.2f}x imgprof(off)" if "seconds" in ex and "seconds" in ours else "n/a")
                r = f"{ref['seconds'] / ex['seconds']:.1f}x" if "seconds" in ex and "seconds" in ref else "n/a"
                lines.append(f"| {what} | {fmt(ex, 'seconds', '{:.3f}')} | | | | | | {r} | {fmt(ex, 'peak_mb', '{:.0f}')} | | {vs} |")
        if "imgprof-dask" in res:
            dk = res["imgprof-dask"]
            r = f"{ref['seconds'] / dk['seconds']:.1f}x" if "seconds" in dk and "seconds" in ref else "n/a"
            lines.append(f"| ↳ same, imgprof on a dask array (LocalCluster, 2 workers, compute included) | "
                         f"{fmt(dk, 'seconds', '{:.3f}')} | | | | | | {r} | {fmt(dk, 'peak_mb', '{:.0f}')} | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
