"""Benchmark ip.im: images → single-cell profiles (segmentation + full cp-measure measurement).

Data: CellProfiler's ExampleHuman images (real, 512 × 512, 3 channels, 289 cells), turned into a
plate of ``--sites`` sites by the 8 rotations/flips of the image set (each site is real data with
~289 cells). Each configuration runs in its own subprocess; peak memory is the largest resident
set of that process *and its worker processes* (psutil, sampled every 50 ms).

Configurations

* ``full, 2 workers``: every feature group (AreaShape, Intensity, Texture, Granularity,
  RadialDistribution, Correlation, Neighbors) on every compartment × channel, sites in parallel
  through dask (``processes`` scheduler, 2 workers) — the headline number.
* ``full, 1 worker``: the same, sequential, to show the parallel speed-up.
* ``ExampleHuman pipeline``: what CellProfiler's ExampleHuman.cppipe measured (segmentation
  + MeasureObjectIntensity on DNA/PH3 + MeasureObjectSizeShape with Zernikes) on the single
  real site, next to CellProfiler's own ``ExecutionTime_*`` recorded in ``Image.csv`` for the
  same modules (CellProfiler 4.0.6 is not installable here, so its time is the recorded one,
  on unknown hardware).

It also writes the parity table against CellProfiler's measurements (object counts and
per-image medians of every shared AreaShape/Intensity feature).

Usage::

    python benchmarks/bench_im.py            # 8 sites; writes benchmarks/results/im.md
    python benchmarks/bench_im.py --quick    # 2 sites smoke run (does not overwrite results)
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
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

CH = {"0": "DNA", "1": "PH3", "2": "cellbody"}


def _how(name: str) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _fair import how_measured

    return how_measured(name)


def build_plate(folder: Path, n_sites: int) -> Path:
    import numpy as np
    import tifffile

    import imgprof as ip

    eh = ip.datasets.examplehuman_images_path()
    raw = {name: tifffile.imread(eh / f"AS_09125_050116030001_D03f00d{t}.tif") for t, name in CH.items()}
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(n_sites):
        k = s % 8
        for c, name in enumerate(("DNA", "PH3", "cellbody"), start=1):
            a = np.rot90(raw[name], k % 4)
            if k >= 4:
                a = a[:, ::-1]
            well = f"A{1 + s // 8:02d}"
            tifffile.imwrite(folder / f"BENCH_{well}_s{s % 8 + 1}_w{c}.tif", np.ascontiguousarray(a))
    return folder


def worker(cfg: dict) -> dict:
    import warnings

    import numpy as np

    import imgprof as ip

    warnings.simplefilter("ignore")
    kw = dict(cfg["kwargs"])
    src = cfg["source"]
    if cfg.get("cppipe"):
        kw["segmenter"] = ip.datasets.examplehuman_images_path() / "ExampleHuman.cppipe"
    else:
        kw.update(nuclei_channel="DNA", cells_channel="cellbody")
    # warm-up outside the timing: imports and numba-compiled kernels (cached on disk after the first run)
    ip.im.profile_images(ip.datasets.examplehuman_images_path(), channels=CH, features=kw.get("features"),
                         measure_channels=kw.get("measure_channels"), n_jobs=1, qc=False,
                         nuclei_channel="DNA", cells_channel="cellbody")
    t0 = time.perf_counter()
    adata = ip.im.profile_images(src, channels=["DNA", "PH3", "cellbody"] if cfg.get("plate") else CH, **kw)
    wall = time.perf_counter() - t0
    sites = adata.uns["imgprof"]["sites"]
    tcols = [c for c in sites.columns if c.startswith("seconds_")]
    sums = {c.removeprefix("seconds_"): float(np.nansum(sites[c].astype(float))) for c in tcols}
    return {"wall": wall, "n_cells": int(adata.n_obs), "n_features": int(adata.n_vars), "n_sites": int(len(sites)),
            "site_seconds": float(np.nansum(sites["seconds"].astype(float))),
            "cpu_seconds": float(np.nansum(sites["cpu_seconds"].astype(float))), "parts": sums}


def run_sub(cfg: dict) -> dict:
    import psutil

    proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    p = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed:\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_mb"] = peak / 2**20
    return res


def parity_table() -> tuple[str, dict]:
    import numpy as np
    import pandas as pd

    import imgprof as ip

    eh = ip.datasets.examplehuman_images_path()
    site = ip.io.read_images(eh, channels=CH).read(0)
    labels = ip.im.segment_site(site, ip.im.CellProfilerSegmenter.from_cppipe(eh / "ExampleHuman.cppipe"))
    ours = ip.im.measure_objects(site, labels, features=["AreaShape", "Intensity"], channels=["DNA", "PH3"])
    lines = ["| compartment | objects (imgprof / CellProfiler) | features compared | median rel. diff | max rel. diff "
             "| features > 1 % | features > 10 % |", "|---|---|---|---|---|---|---|"]
    detail = []
    summary = {}
    for comp in ("Nuclei", "Cells", "Cytoplasm"):
        cp = pd.read_csv(eh / f"{comp}.csv.gz")
        rel = {}
        for col in cp.columns:
            if not col.startswith(("AreaShape_", "Intensity_")):
                continue
            a, b = float(ours[f"{comp}_{col}"].median()), float(cp[col].median())
            if col == "AreaShape_Orientation":
                a = np.deg2rad(a)  # CellProfiler 4.0.6 reported radians, cp-measure degrees
                r = abs(a - b) / float(cp[col].quantile(0.75) - cp[col].quantile(0.25))
            else:
                r = abs(a - b) / abs(b) if b else abs(a - b)
            rel[col] = r
            if col in ("AreaShape_Area", "AreaShape_Perimeter", "AreaShape_FormFactor", "AreaShape_Solidity",
                       "AreaShape_MajorAxisLength", "AreaShape_Zernike_2_0", "Intensity_MeanIntensity_DNA",
                       "Intensity_IntegratedIntensity_DNA", "Intensity_MedianIntensity_PH3",
                       "Intensity_MADIntensity_DNA"):
                detail.append(f"| {comp}_{col} | {a:.5g} | {b:.5g} | {100 * r:.2f} % |")
        v = np.array(list(rel.values()))
        n_ours = int(labels[comp].max())
        summary[comp] = (n_ours, len(cp))
        lines.append(f"| {comp} | {n_ours} / {len(cp)} | {len(v)} | {100 * np.median(v):.3f} % | "
                     f"{100 * v.max():.2f} % ({max(rel, key=rel.get)}) | {(v > 0.01).sum()} | {(v > 0.10).sum()} |")
    det = ["| feature | imgprof median | CellProfiler median | rel. diff |", "|---|---|---|---|", *detail]
    return "\n".join(lines) + "\n\nExamples:\n\n" + "\n".join(det), summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sites", type=int, default=8)
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    n_sites = 2 if args.quick else args.sites
    import imgprof as ip

    with tempfile.TemporaryDirectory() as tmp:
        plate = build_plate(Path(tmp) / "plate", n_sites)
        full = {"features": list(ip.im.FEATURE_GROUPS), "qc": True}
        configs = [
            ("full, 2 workers (dask processes)", {"source": str(plate), "plate": True,
                                                  "kwargs": {**full, "n_jobs": 2, "scheduler": "processes"}}),
            ("full, 1 worker", {"source": str(plate), "plate": True, "kwargs": {**full, "n_jobs": 1}}),
            ("ExampleHuman pipeline (1 site)", {"source": str(ip.datasets.examplehuman_images_path()),
                                                "cppipe": True,
                                                "kwargs": {"features": ["AreaShape", "Intensity"],
                                                           "measure_channels": ["DNA", "PH3"], "qc": False,
                                                           "n_jobs": 1}}),
        ]
        results = {}
        for name, cfg in configs:
            print(f"running {name} ...", flush=True)
            results[name] = run_sub(cfg)
            print(f"  {results[name]}", flush=True)

    import pandas as pd

    img = pd.read_csv(ip.datasets.examplehuman_images_path() / "Image.csv")
    cp_modules = ["ExecutionTime_05IdentifyPrimaryObjects", "ExecutionTime_08IdentifySecondaryObjects",
                  "ExecutionTime_09IdentifyTertiaryObjects", "ExecutionTime_10MeasureObjectIntensity",
                  "ExecutionTime_11MeasureObjectSizeShape"]
    cp_seconds = float(img[cp_modules].iloc[0].sum())

    rows = ["| configuration | sites | cells | features | wall s | wall s / 1,000 cells | CPU s / 1,000 cells "
            "| ratio vs 1 worker (wall) | segmentation share | cp-measure share | peak memory MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = results["full, 1 worker"]["wall"]
    for name, r in results.items():
        parts = r["parts"]
        seg = parts.get("segmentation", 0.0)
        meas = sum(v for k, v in parts.items() if k.startswith("measure."))
        tot = r["site_seconds"]
        ratio = f"{base / r['wall']:.2f}x faster" if "full" in name else "—"
        rows.append(f"| {name} | {r['n_sites']} | {r['n_cells']} | {r['n_features']} | {r['wall']:.1f} | "
                    f"{1000 * r['wall'] / r['n_cells']:.1f} | {1000 * r['cpu_seconds'] / r['n_cells']:.1f} | {ratio} | "
                    f"{100 * seg / tot:.1f} % | {100 * meas / tot:.1f} % | {r['peak_mb']:.0f} |")
    eh = results["ExampleHuman pipeline (1 site)"]
    rows.append(f"| CellProfiler 4.0.6, same modules (recorded `ExecutionTime_*` in Image.csv, other hardware) | 1 | "
                f"289 | 300 | {cp_seconds:.1f} | {1000 * cp_seconds / 289:.1f} | — | — | — | — | — |")

    full2 = results["full, 2 workers (dask processes)"]
    groups = {k.removeprefix("measure."): v for k, v in full2["parts"].items() if k.startswith("measure.")}
    tot = full2["site_seconds"]
    grows = ["| step (full, summed over sites) | seconds | share of site time |", "|---|---|---|"]
    for k in ("read", "qc", "segmentation"):
        if k in full2["parts"]:
            grows.append(f"| {k} | {full2['parts'][k]:.1f} | {100 * full2['parts'][k] / tot:.1f} % |")
    for k, v in sorted(groups.items(), key=lambda kv: -kv[1]):
        grows.append(f"| cp-measure: {k} | {v:.1f} | {100 * v / tot:.1f} % |")

    parity, _ = parity_table()
    load = os.getloadavg()[1] if hasattr(os, "getloadavg") else float("nan")
    env = (f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
           f"cp-measure numba accelerator {'on' if _has_numba() else 'off'}; load average during the run "
           f"(5 min, at the end) {load:.1f} — other jobs shared the cores, so treat wall times as upper bounds.")
    md = "\n".join([
        "# ip.im benchmark: images → single-cell profiles",
        "",
        f"Generated by `python benchmarks/bench_im.py{' --quick' if args.quick else ''}`. {env}",
        "",
        _how("im"),
        "Plate: the real ExampleHuman image set (512 × 512, DNA/PH3/cell body) as "
        f"{n_sites} sites (its rotations/flips). Wall time includes reading, QC, segmentation, measurement "
        "and building the AnnData; CPU s is the processor time the site tasks used (unaffected by other "
        "jobs waiting for the same cores); shares are of the summed per-site time inside the workers.",
        "",
        "\n".join(rows),
        "",
        "\n".join(grows),
        "",
        "## Parity with CellProfiler (ExampleHuman, CellProfiler 4.0.6 output)",
        "",
        parity,
        "",
    ])
    print(md)
    if not args.quick:
        out = HERE / "results" / "im.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(md)
        print(f"wrote {out}")


def _has_numba() -> bool:
    from importlib.util import find_spec

    return find_spec("numba") is not None


if __name__ == "__main__":
    main()
