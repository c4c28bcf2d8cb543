"""Benchmark ip.mm / ip.io GCT against the reference tools, side by side on the same data.

Cases (built from the bundled real plates, replicated ``--copies`` times):

* ``gct_read``: the L1000 plate (978 genes x 377 wells) with its wells repeated ``--copies`` times,
  as a plain GCT 1.3. Reference: cmapPy 4.0.1 ``pandasGEXpress.parse`` (when importable; it is not
  a dependency: point ``CMAPPY_PATH`` at a ``pip install --target`` folder); imgprof: ``ip.io.read_gct``.
* ``gctx_read``: the same matrix as GCTX (written by ``ip.io.write_gctx``). Reference: cmapPy
  ``parse``; imgprof: ``ip.io.read_gctx``.
* ``join_moa``: LINCS Cell Painting plate and L1000 plate (annotated through the Repurposing Hub),
  each repeated ``--copies`` times, joined by MOA with '|'-separated labels and a median consensus
  per MOA. Reference: the pandas recipe people write by hand (explode labels, casefold, groupby
  median, inner merge); imgprof: ``ip.mm.join(..., level="perturbation")``. The consensus matrices
  are compared.

Every measurement runs in its own subprocess; time is the best of up to three runs, peak memory the
growth of the resident set during the timed call (Linux ``VmHWM`` after resetting it).

Usage::

    python benchmarks/bench_mm.py            # writes benchmarks/results/mm.md
    python benchmarks/bench_mm.py --quick    # small smoke run
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import reset_peak as _reset_peak  # noqa: E402
from _memory import rss_kb as _rss_kb  # noqa: E402


def _how(name: str) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _fair import how_measured

    return how_measured(name)


def _cmappy_available() -> bool:
    extra = os.environ.get("CMAPPY_PATH")
    if extra and extra not in sys.path:
        sys.path.insert(0, extra)
    try:
        import cmapPy.pandasGEXpress.parse  # noqa: F401

        return True
    except Exception:
        return False


# ------------------------------------------------------------------------------------------------ data


def _replicate(adata, copies: int):
    import anndata as ad

    parts = []
    for k in range(copies):
        a = adata.copy()
        a.obs_names = [f"{n}_c{k}" for n in a.obs_names]
        parts.append(a)
    out = ad.concat(parts, merge="same")
    out.var = adata.var.copy()
    return out


def make_data(d: Path, copies: int) -> None:
    sys.path.insert(0, str(ROOT))
    import imgprof as ip

    expr = _replicate(ip.datasets.l1000_plate(), copies)
    ip.io.write_gct(expr, d / "plate.gct")
    ip.io.write_gctx(expr, d / "plate.gctx")
    morph = _replicate(ip.datasets.lincs_plate(), copies)
    morph.write_h5ad(d / "morph.h5ad")
    e = _replicate(ip.datasets.l1000_plate(), copies)
    ip.mm.map_annotations(e, ip.datasets.repurposing_hub(), on="pert_iname", columns=["moa"])
    e.write_h5ad(d / "expr.h5ad")


# ------------------------------------------------------------------------------------------------ workers


def _pandas_join(morph, expr):
    import numpy as np
    import pandas as pd

    def cons(adata, col):
        df = pd.DataFrame(adata.X, index=adata.obs_names)
        lab = adata.obs[col].astype(object).where(adata.obs[col].notna(), None)
        df["_moa"] = [[p.strip().casefold() for p in v.split("|") if p.strip()] if isinstance(v, str) else [] for v in lab]
        df = df.explode("_moa").dropna(subset=["_moa"])
        return df.groupby("_moa").median()

    a, b = cons(morph, "Metadata_moa"), cons(expr, "moa")
    shared = a.index.intersection(b.index)
    return a.loc[shared].to_numpy(np.float64), b.loc[shared].to_numpy(np.float64), list(shared)


def worker(case: str, tool: str, d: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    _cmappy_available()  # puts CMAPPY_PATH on sys.path
    warnings.simplefilter("ignore")
    import anndata as ad
    import numpy as np

    import imgprof as ip

    if case == "join_moa":
        morph, expr = ad.read_h5ad(d / "morph.h5ad"), ad.read_h5ad(d / "expr.h5ad")
    times = []
    peak = 0
    out = None
    for _ in range(3):
        base = _reset_peak()
        t = time.perf_counter()
        if case in ("gct_read", "gctx_read"):
            suffix = case.split("_")[0]  # "gct" or "gctx": the same matrix, read by each tool's reader
            if tool == "imgprof":
                out = (ip.io.read_gct if suffix == "gct" else ip.io.read_gctx)(d / f"plate.{suffix}")
                shape = out.shape
            else:
                from cmapPy.pandasGEXpress.parse import parse

                out = parse(str(d / f"plate.{suffix}"))
                shape = out.data_df.T.shape
        elif case == "join_moa":
            if tool == "imgprof":
                md = ip.mm.join(morph, expr, on={"moa": ("Metadata_moa", "moa")}, sep="|")
                out = (md["morph"].X, md["expr"].X, list(md.obs_names))
            else:
                out = _pandas_join(morph, expr)
            shape = (len(out[2]), out[0].shape[1] + out[1].shape[1])
        dt = time.perf_counter() - t
        times.append(dt)
        peak = max(peak, _rss_kb("VmHWM") - base)
        if dt > 20:
            break
    res = {"seconds": min(times), "peak_mb": peak / 1024, "shape": list(shape)}
    if case == "join_moa":
        np.save(d / f"{tool}_morph.npy", out[0])
        np.save(d / f"{tool}_expr.npy", out[1])
        (d / f"{tool}_keys.json").write_text(json.dumps(out[2]))
    return res


def run_sub(case: str, tool: str, d: Path) -> dict:
    from _worker import run_worker

    return run_worker([sys.executable, __file__, "--worker", case, tool, str(d)], what=f"{case}/{tool}")


def main() -> None:
    from _worker import copies_cli, reply

    args = copies_cli(worker_nargs=3)
    if args.worker:
        return reply(worker(args.worker[0], args.worker[1], Path(args.worker[2])))
    import numpy as np

    copies = args.copies or (2 if args.quick else 40)
    have_cmap = _cmappy_available()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_data(d, copies)
        for case, ref in (("gct_read", "cmapPy"), ("gctx_read", "cmapPy"), ("join_moa", "pandas")):
            r_ip = run_sub(case, "imgprof", d)
            if ref == "cmapPy" and not have_cmap:
                rows.append((case, r_ip, None, "cmapPy not importable"))
                continue
            r_ref = run_sub(case, ref, d)
            note = ""
            if case == "join_moa":
                same_keys = json.loads((d / "imgprof_keys.json").read_text()) == json.loads((d / "pandas_keys.json").read_text())
                ok = same_keys and all(
                    np.allclose(np.load(d / f"imgprof_{m}.npy"), np.load(d / f"pandas_{m}.npy")) for m in ("morph", "expr")
                )
                note = "consensus identical" if ok else "MISMATCH"
            else:
                note = "same shape" if r_ip["shape"] == r_ref["shape"] else "SHAPE MISMATCH"
            rows.append((case, r_ip, r_ref, note))
    lines = [
        f"# ip.mm / GCT benchmark ({'quick' if args.quick else 'full'}, copies={copies})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}.",
        "",
        _how("mm"),
        "",
        "| case | output (rows x cols) | imgprof s | reference | reference s | ratio (ref/imgprof) | imgprof peak MB | reference peak MB | check |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case, a, b, note in rows:
        ref = "cmapPy 4.0.1" if case != "join_moa" else "pandas recipe"
        if b is None:
            lines.append(f"| {case} | {a['shape'][0]} x {a['shape'][1]} | {a['seconds']:.2f} | {ref} | n/a | n/a | "
                         f"{a['peak_mb']:.0f} | n/a | {note} |")
        else:
            lines.append(
                f"| {case} | {a['shape'][0]} x {a['shape'][1]} | {a['seconds']:.2f} | {ref} | {b['seconds']:.2f} | "
                f"{b['seconds'] / a['seconds']:.2f} | {a['peak_mb']:.0f} | {b['peak_mb']:.0f} | {note} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        out = HERE / "results" / "mm.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text)


if __name__ == "__main__":
    main()
