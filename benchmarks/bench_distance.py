"""Benchmark: imgprof.tl distances between groups of cells against pertpy 1.0.3, side by side.

Data: ``n`` simulated cells × ``d`` dimensions (an embedding, float64) in ``G`` equal groups,
one of them "control", each group shifted by a random offset. Cases:

1. E-distance, full group × group matrix.
2. E-distance, each group against the control.
3. MMD (RBF kernel, fixed gamma), each group against the control.
4. E-test: permutation test of each group against the control (``N_PERMS`` permutations);
   pertpy's ``pt.tl.DistanceTest`` against ``ip.tl.distance_test`` (no subsampling). Only the
   observed distances are compared (the two tools draw different permutations).

pertpy is run two ways. ``pertpy_api``: its own ``Distance.pairwise`` / ``onesided_distances`` with
``n_jobs=1``, as users call them. pertpy 1.0.3 takes its precomputed path only for metrics with
``accepts_precomputed=True`` (E-distance, mean_pairwise): it first builds the dense ``n × n`` cell
distance matrix (8·n² bytes: 3.2 GB at 20,000 cells, 80 GB at 100,000, so it runs only up to
``--pertpy-api-max-n``). MMD has ``accepts_precomputed=False``: its API loops over pairs with
per-pair memory and runs at every size. Its DistanceTest precomputes per perturbation and always
runs. ``pertpy_pairs``: pertpy's metric called on each pair of groups (``Distance(metric)(X, Y)``),
the loop ``Distance.pairwise`` runs for metrics without a precomputed path.

Sizes: 20,000 cells × 50 dims in 100 groups (where pertpy's own API fits in memory) and 100,000
cells × 50 dims in 100 groups (``--sizes``). The ``distances (M)`` column counts the cell-to-cell
distances or kernel values each tool computes (:func:`distances_computed`), which bounds the
speed-up of an exact method at equal BLAS efficiency.

Each (case, tool) runs in a fresh subprocess, with one BLAS / numba thread, after a warm-up call
on a small subset (numba compilation, imports and JAX start-up excluded from the timing). Peak
memory: growth of the process's peak RSS (VmHWM) over the timed call. The parent compares the
values of every tool with imgprof's.

Usage: ``python benchmarks/bench_distance.py [--quick] [--sizes 20000x100,100000x100] [--cases ...]``;
writes ``benchmarks/results/distance.md`` (``distance_quick.md`` with ``--quick``: 10,000 cells, 20 groups),
rewriting it after every row.
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
GAMMA = 0.01
N_PERMS = 100


def make_cells(n: int, d: int, G: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat([f"g{i:03d}" for i in range(G - 1)] + ["control"], n // G)
    labels = np.r_[labels, np.full(n - len(labels), "control")]
    offsets = {g: rng.normal(scale=0.3, size=d) for g in np.unique(labels)}
    offsets["control"] = np.zeros(d)
    X = rng.normal(size=(n, d)) + np.stack([offsets[g] for g in labels])
    return X, labels


def _pertpy():
    import statsmodels.sandbox.stats.multicomp as smc
    import statsmodels.stats.multitest as mt

    if not hasattr(smc, "multipletests"):  # pertpy 1.0.3 vs statsmodels 0.15 (import location only)
        smc.multipletests = mt.multipletests
    import pertpy as pt

    return pt


def run_case(case: str, tool: str, X: np.ndarray, labels: np.ndarray):
    """Return a ``{group or 'a|b': value}`` dict."""
    names = sorted(set(labels))
    if case == "etest_control":
        import anndata as ad
        import pandas as pd

        adata = ad.AnnData(np.zeros((len(labels), 1)), obs=pd.DataFrame({"g": labels}, index=map(str, range(len(labels)))))
        adata.obsm["X_pca"] = X
        if tool == "imgprof":
            import imgprof as ip

            ip.tl.distance_test(adata, "g", "control", obsm_key="X_pca", n_perms=N_PERMS, max_cells=None)
            tab = adata.uns["distance_test"]
        else:
            tab = _pertpy().tl.DistanceTest("edistance", n_perms=N_PERMS, obsm_key="X_pca")(
                adata, "g", "control", show_progressbar=False)
        return {g: float(tab.loc[g, "distance"]) for g in names if g != "control"}
    if tool == "imgprof":
        import imgprof as ip

        if case == "edistance_pairwise":
            D = ip.tl.group_distances(X, labels, "edistance")
            return {f"{a}|{b}": float(D.loc[a, b]) for i, a in enumerate(names) for b in names[i + 1:]}
        metric, kw = ("edistance", {}) if case == "edistance_control" else ("mmd", {"gamma": GAMMA})
        s = ip.tl.group_distances(X, labels, metric, reference="control", **kw)
        return {g: float(s[g]) for g in names if g != "control"}
    pt = _pertpy()
    if tool == "pertpy_api":
        import anndata as ad
        import pandas as pd

        adata = ad.AnnData(np.zeros((len(labels), 1)), obs=pd.DataFrame({"g": labels}, index=map(str, range(len(labels)))))
        adata.obsm["X_pca"] = X
        if case == "edistance_pairwise":
            D = pt.tl.Distance("edistance", obsm_key="X_pca").pairwise(adata, "g", show_progressbar=False,
                                                                                     n_jobs=1)
            return {f"{a}|{b}": float(D.loc[a, b]) for i, a in enumerate(names) for b in names[i + 1:]}
        metric, kw = ("edistance", {}) if case == "edistance_control" else ("mmd", {"kernel": "rbf", "gamma": GAMMA})
        s = pt.tl.Distance(metric, obsm_key="X_pca").onesided_distances(adata, "g", selected_group="control",
                                                                         show_progressbar=False, n_jobs=1, **kw)
        return {g: float(s[g]) for g in names if g != "control"}
    # pertpy_pairs: pertpy's metric on each pair of groups
    cells = {g: X[labels == g] for g in names}
    if case == "edistance_pairwise":
        dist = pt.tl.Distance("edistance")
        return {f"{a}|{b}": float(dist(cells[a], cells[b])) for i, a in enumerate(names) for b in names[i + 1:]}
    if case == "edistance_control":
        dist = pt.tl.Distance("edistance")
        return {g: float(dist(cells[g], cells["control"])) for g in names if g != "control"}
    dist = pt.tl.Distance("mmd")
    return {g: float(dist(cells[g], cells["control"], kernel="rbf", gamma=GAMMA)) for g in names if g != "control"}


def worker(args) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _memory import reset_peak, rss_kb

    X, labels = make_cells(args.n, args.d, args.groups)
    # warm-up on a subset: compilation / imports / JAX start-up are not timed
    sub = np.r_[np.flatnonzero(labels == "control")[:50], np.flatnonzero(labels == labels[0])[:50]]
    run_case(args.case, args.tool, X[sub], labels[sub])
    base = reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    values = run_case(args.case, args.tool, X, labels)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = rss_kb("VmHWM")
    Path(args.values).write_text(json.dumps(values))
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_rss_growth_mb": max(peak - base, 0) / 1024}))


def measure(case: str, tool: str, n: int, d: int, G: int, timeout: float):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        vpath = fh.name
    cmd = [sys.executable, __file__, "--worker", "--case", case, "--tool", tool, "--n", str(n), "--d", str(d),
           "--groups", str(G), "--values", vpath]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout > {timeout:.0f} s"}, None
    if proc.returncode != 0:
        return {"status": "failed: " + proc.stderr.strip().splitlines()[-1][:120]}, None
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    values = json.loads(Path(vpath).read_text())
    os.unlink(vpath)
    res["status"] = "ok"
    return res, values


CASES = {
    "edistance_pairwise": "E-distance, group × group matrix",
    "edistance_control": "E-distance, each group vs control",
    "mmd_control": f"MMD (RBF, gamma={GAMMA}), each group vs control",
    "etest_control": f"E-test, each group vs control, {N_PERMS} permutations",
}

#: pertpy 1.0.3 ``AbstractDistance.accepts_precomputed``: ``Distance.pairwise`` / ``onesided_distances`` first build
#: the dense n × n cell distance matrix (``precompute_distances``) only for these metrics; MMD (False) loops over pairs.
PRECOMPUTED = {"edistance_pairwise": True, "edistance_control": True, "mmd_control": False}


def _blocked_symmetric(n: int, block: int = 512) -> int:
    """Kernel evaluations of ``block_sums(symmetric=True)`` on ``n`` rows: blocks on and above the diagonal."""
    b = [min(block, n - r) for r in range(0, n, block)]
    return sum(b[i] * b[j] for i in range(len(b)) for j in range(i, len(b)))


def distances_computed(case: str, tool: str, n: int, G: int) -> int | None:
    """Cell-to-cell distances (kernel evaluations) each tool computes for a case (groups of ``n // G`` cells)."""
    sizes = [n // G] * (G - 1) + [n - (n // G) * (G - 1)]
    nc, others = sizes[-1], sizes[:-1]
    if case == "etest_control":
        return sum((m + nc) ** 2 for m in others)  # both tools: the dense union matrix per perturbation
    if tool == "pertpy_api" and PRECOMPUTED[case]:
        return n * n  # sklearn pairwise_distances(X, X): every ordered pair, once
    if case == "edistance_pairwise":
        if tool == "imgprof":
            return _blocked_symmetric(n)
        return sum(a * a + b * b + a * b for i, a in enumerate(sizes) for b in sizes[i + 1:])
    if tool == "imgprof":  # each group's within term once (blocked, symmetric), the control's once, the cross terms
        return sum(_blocked_symmetric(m) for m in sizes) + sum(m * nc for m in others)
    return sum(m * m + nc * nc + m * nc for m in others)  # pertpy: X·X, Y·Y and X·Y for every pair


def _table(rows, agree, sizes, d) -> str:
    import pandas as pd

    what = ", ".join(f"{n:,} cells × {d} dims, {G} groups" for n, G in sizes)
    lines = [
        f"# Single-cell distance benchmark: imgprof.tl vs pertpy 1.0.3 ({what})",
        "",
        (f"Machine: 2 CPU cores shared with other jobs (times are noisy; ratios come from the same run). "
         f"One BLAS/numba thread per tool (pertpy's `n_jobs=1`). Each row is a fresh subprocess; a warm-up call on "
         f"100 cells (numba compilation, imports, JAX start-up) runs first and is excluded. pandas copy-on-write: "
         f"{'on' if pd.options.mode.copy_on_write else 'off'} (not used by either code path). "
         f"`pertpy_api` = `pt.tl.Distance(...).pairwise / onesided_distances` as users call them (for E-distance, "
         f"`accepts_precomputed=True`, they first build the dense n × n cell distance matrix; MMD has "
         f"`accepts_precomputed=False` and loops over pairs); `pertpy_pairs` = pertpy's metric called per pair of "
         f"groups. Peak memory = growth of peak RSS over the call. CPU time (process user + system) is less affected "
         f"by other jobs on the machine than wall time. `distances (M)` = cell-to-cell distances or kernel values "
         f"the tool computes, in millions (from the algorithm, not measured)."),
        "",
        "| cells | case | tool | distances (M) | wall time (s) | CPU time (s) | peak RSS growth (MB) | status |",
        "|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for n, label, tool, work, t, cpu, mem, status in rows:
        lines.append(f"| {n:,} | {label} | {tool} | {'' if work is None else f'{work / 1e6:,.0f}'} | "
                     f"{'' if t is None else f'{t:.2f}'} | {'' if cpu is None else f'{cpu:.2f}'} | "
                     f"{'' if mem is None else f'{mem:.0f}'} | {status} |")
    lines += ["", "Agreement with imgprof on the same run:", ""] + [f"- {a}" for a in agree] + [""]
    return "\n".join(lines)


def run_size(n: int, d: int, G: int, tools, args, rows, agree, write) -> None:
    for case, label in CASES.items():
        if args.cases and case not in args.cases.split(","):
            continue
        ref_t, ref_c, ref_v = None, None, None
        for tool in tools:
            if case == "etest_control" and tool == "pertpy_pairs":
                continue  # pertpy's DistanceTest is its API (pertpy_api); no per-pair form
            work = distances_computed(case, tool, n, G)
            if tool == "pertpy_api" and n > args.pertpy_api_max_n and PRECOMPUTED.get(case, False):
                rows.append((n, label, tool, work, None, None, None,
                             f"not run: dense {n:,} × {n:,} float64 matrix = {8 * n * n / 1e9:.0f} GB"))
                write()
                continue
            res, values = measure(case, tool, n, d, G, args.timeout)
            print(n, case, tool, res, flush=True)
            if res["status"] != "ok":
                rows.append((n, label, tool, work, None, None, None, res["status"]))
                write()
                continue
            if tool == "imgprof":
                ref_t, ref_c, ref_v = res["wall_s"], res["cpu_s"], values
            status = "ok"
            if tool != "imgprof" and ref_t is not None:
                status = f"ok; imgprof {res['wall_s'] / ref_t:.1f}× faster (wall), {res['cpu_s'] / ref_c:.1f}× (CPU)"
                keys = sorted(ref_v)
                a, b = np.array([ref_v[k] for k in keys]), np.array([values[k] for k in keys])
                agree.append(f"{n:,} cells, {label}, {tool}: max relative difference "
                             f"{np.max(np.abs(a - b) / np.abs(b)):.1e} over {len(keys)} values")
            rows.append((n, label, tool, work, res["wall_s"], res["cpu_s"], res["peak_rss_growth_mb"], status))
            write()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 cells × 50 dims, 20 groups")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--case", default="edistance_pairwise")
    ap.add_argument("--tool", default="imgprof")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--d", type=int, default=50)
    ap.add_argument("--groups", type=int, default=None)
    ap.add_argument("--sizes", default=None,
                    help="comma-separated CELLSxGROUPS, run in this order (default 20000x100,100000x100; --quick 10000x20)")
    ap.add_argument("--cases", default=None, help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--values", default="")
    ap.add_argument("--only", default=None, help="comma-separated tools (imgprof, pertpy_api, pertpy_pairs)")
    ap.add_argument("--pertpy-api-max-n", type=int, default=20_000,
                    help="run pertpy's own API where it builds a dense n × n matrix only up to this many cells")
    ap.add_argument("--timeout", type=float, default=3000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.sizes:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    elif args.n or args.groups:
        sizes = [(args.n or (10_000 if args.quick else 100_000), args.groups or (20 if args.quick else 100))]
    else:
        sizes = [(10_000, 20)] if args.quick else [(20_000, 100), (100_000, 100)]
    tools = args.only.split(",") if args.only else ["imgprof", "pertpy_api", "pertpy_pairs"]
    out = Path(args.out) if args.out else RESULTS / ("distance_quick.md" if args.quick else "distance.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list = []
    agree: list[str] = []

    def write() -> None:  # after every row, so an interrupted run keeps what it measured
        out.write_text(_table(rows, agree, sizes, args.d))

    for n, G in sizes:
        run_size(n, args.d, G, tools, args, rows, agree, write)
    write()
    print(out.read_text())


if __name__ == "__main__":
    main()
