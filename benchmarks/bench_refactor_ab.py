"""imgprof before and after a refactor: the same public calls timed on two checkouts of the package.

Issue #15 asks that a refactor leaves every number unchanged. This script times the same public
calls (normalize, spherize, feature_select, in-memory aggregate, phenotypic_activity,
average_precision, Benchmarker) on whatever ``imgprof`` is importable and prints one JSON line per
case: best wall seconds of ``AB_REPEAT`` runs (default 5) after one warm-up call (excluded; numba
kernels compile or load from the cache there), the process CPU seconds of the best run, and a
digest of the output (values and names), so that the two versions' outputs can be compared for
equality. Data: ``bench_normalize.make_data`` (20 plates x 384 wells x 1,000 features, and a copy
with 5 % NaN) in ``--data`` (written once if missing), simulated single cells for aggregate and the
Benchmarker. pandas copy-on-write: off (pandas' default; nothing here imports pycytominer).

Usage (two checkouts, run alternately so that both see the same machine)::

    git worktree add /tmp/before <commit>
    for i in 1 2; do
      PYTHONPATH=/tmp/before python benchmarks/bench_refactor_ab.py before --data /tmp/normdata
      PYTHONPATH=$PWD       python benchmarks/bench_refactor_ab.py after  --data /tmp/normdata
    done > ab.jsonl
    python benchmarks/bench_refactor_ab.py --table ab.jsonl

Result of the #15 refactor: ``benchmarks/results/refactor_ab.md``.
"""
import hashlib
import json
import os
import sys
import warnings

import anndata as ad
import numpy as np

import imgprof as ip

warnings.simplefilter("ignore")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import timed_runs  # noqa: E402


def table(path: str) -> str:
    """Markdown table of the JSON lines in ``path``: best before/after seconds and output equality."""
    import collections

    rows = [json.loads(line) for line in open(path) if line.startswith('{"label"')]
    t: dict = collections.defaultdict(lambda: collections.defaultdict(list))
    dg: dict = collections.defaultdict(dict)
    for r in rows:
        if "seconds" in r:
            t[r["case"]][r["label"]].append(r["seconds"])
            dg[r["case"]][r["label"]] = r["digest"]
    out = ["| case | before: best s (all) | after: best s (all) | after / before | output identical |",
           "|---|---:|---:|---:|---|"]
    for case, v in t.items():
        b, a = min(v["before"]), min(v["after"])
        runs = lambda xs: ", ".join(f"{x:.3f}" for x in xs)  # noqa: E731
        out.append(f"| {case} | {b:.3f} ({runs(v['before'])}) | {a:.3f} ({runs(v['after'])}) | {a / b:.2f} "
                   f"| {'yes' if dg[case]['before'] == dg[case]['after'] else 'NO'} |")
    return "\n".join(out)


if sys.argv[1] == "--table":
    print(table(sys.argv[2]))
    sys.exit(0)
label = sys.argv[1]
REP = int(os.environ.get("AB_REPEAT", "5"))
d = sys.argv[sys.argv.index("--data") + 1] if "--data" in sys.argv else "/tmp/imgprof_ab_data"
if not os.path.exists(f"{d}/clean.h5ad"):
    from pathlib import Path

    import bench_normalize

    os.makedirs(d, exist_ok=True)
    bench_normalize.make_data(Path(d), 20, 1000)
clean = ad.read_h5ad(f"{d}/clean.h5ad")
nan = ad.read_h5ad(f"{d}/nan.h5ad")
NEG = "Metadata_control_type == 'negcon'"


def digest(x):
    if isinstance(x, ad.AnnData):
        return hashlib.sha1(np.ascontiguousarray(np.asarray(x.X, dtype=np.float64)).tobytes()
                            + ",".join(map(str, x.var_names)).encode()).hexdigest()[:12]
    import pandas as pd
    if isinstance(x, pd.DataFrame):
        num = x.select_dtypes("number")
        return hashlib.sha1(np.ascontiguousarray(num.to_numpy(dtype=np.float64)).tobytes()).hexdigest()[:12]
    return hashlib.sha1(np.ascontiguousarray(np.asarray(x, dtype=np.float64)).tobytes()).hexdigest()[:12]


def timed(name, make, fn, rep=REP):
    try:
        _timed(name, make, fn, rep)
    except Exception as e:  # noqa: BLE001 - report and go on with the other cases
        print(json.dumps({"label": label, "case": name, "error": repr(e)[:300]}), flush=True)


def _timed(name, make, fn, rep):
    fn(make())  # warm-up (numba compile/cache, imports)
    times, cpus, _, out = timed_runs(fn, rep, prepare=make)
    best = min(range(len(times)), key=times.__getitem__)
    print(json.dumps({"label": label, "case": name, "seconds": round(times[best], 4), "cpu": round(cpus[best], 4),
                      "digest": digest(out)}), flush=True)


def norm(method, data=clean, **kw):
    def fn(a):
        ip.pp.normalize(a, method=method, controls=NEG, by="Metadata_Plate", **kw)
        return a
    return (lambda: data.copy()), fn


for m in ("mad_robustize", "standardize", "inverse_normal"):
    timed(f"normalize {m}", *norm(m))
timed("normalize mad_robustize 5% NaN", *norm("mad_robustize", data=nan))
timed("spherize ZCA-cor per plate", *norm("spherize", spherize_method="ZCA-cor"))
for op in ("variance_threshold", "frequency_threshold", "correlation_threshold",
           ["drop_na_columns", "blocklist", "drop_outliers"]):
    def fs(a, op=op):
        return ip.pp.feature_select(a, operation=op, copy=True)
    timed(f"feature_select {op}", lambda: nan, fs)

# aggregate in memory: single cells (simulated), median per plate + well
cells = ip.datasets.simulate(n_plates=4, n_perturbations=48, n_moa=8, n_features=500, level="single_cell",
                             cells_per_well=100, seed=0)
timed(f"aggregate median {cells.n_obs} cells x {cells.n_vars}", lambda: cells,
      lambda a: ip.pp.aggregate(a, by=["Metadata_Plate", "Metadata_Well"], operation="median"))

# mAP: replicate retrieval against negcon, 7,680 wells x 1,000 features, permutation p-values
std = clean.copy()
ip.pp.normalize(std, method="standardize", by="Metadata_Plate")
timed("phenotypic_activity 7,680 x 1,000 (null_size 1000)", lambda: std,
      lambda a: ip.metrics.phenotypic_activity(a, "Metadata_Perturbation", NEG, null_size=1000, seed=0), rep=3)
timed("average_precision MOA (pos same moa, other perturbation)", lambda: std,
      lambda a: ip.metrics.average_precision(a, "Metadata_moa", "Metadata_Perturbation", None, "Metadata_moa"), rep=3)
# Benchmarker on a small single-cell set (scib defaults)
try:
    sc_cells = ip.datasets.simulate(n_plates=4, n_batches=2, n_perturbations=24, n_moa=4, n_features=50,
                                    level="single_cell", cells_per_well=5, seed=1)
    import scanpy as sc
    sc.pp.pca(sc_cells, n_comps=20)
    sc_cells.obsm["X_pca2"] = sc_cells.obsm["X_pca"][:, :10].copy()
except Exception as e:  # noqa: BLE001
    print(e)

def bm(a):
    b = ip.bench.Benchmarker(a, batch_key="Metadata_Batch", label_key="Metadata_moa",
                             embedding_obsm_keys=["X_pca", "X_pca2"], n_jobs=1, progress_bar=False)
    b.benchmark()
    return b.get_results(min_max_scale=False).iloc[:-1].astype(float)
timed(f"Benchmarker {sc_cells.n_obs} cells x 2 embeddings", lambda: sc_cells, bm, rep=2)
