"""Benchmark the ip.io readers against pycytominer 1.7.1, side by side on the same files.

Cases (all built from the real files in ../shared/data, replicated to a realistic size):

* ``sqlite``: a cytominer-database style SQLite (``Image``/``Cells``/``Cytoplasm``/``Nuclei``)
  made from the NF1 Schwann-cell ExportToDatabase file with its 32 images repeated ``--copies``
  times (ImageNumber offset per copy). pycytominer: ``SingleCells(...).merge_single_cells()``;
  imgprof: ``ip.io.read_cellprofiler``. Outputs compared feature by feature.
* ``profiles``: the LINCS plate repeated ``--copies`` times as one CSV.GZ. pycytominer:
  ``pycytominer.cyto_utils.load_profiles`` (a DataFrame); imgprof: ``ip.io.read_profiles``.
* ``deepprofiler``: the DeepProfiler site file copied ``--copies * 10`` times into plate folders.
  pycytominer: ``load_npz_features`` per file + ``pd.concat``; imgprof: ``ip.io.read_deepprofiler``.
* ``csv_folder``: the Target2 CellProfiler CSV site folder copied ``--copies`` times (imgprof only:
  pycytominer has no CSV reader and CytoTable is not installed here).

Each measurement runs in its own subprocess; after one untimed warm-up call, time is the best of
up to three runs, peak memory the largest growth of the resident set during a timed call (Linux
``VmHWM`` after resetting it).
Note that importing pycytominer turns on pandas' copy-on-write mode process-wide; imgprof is timed
without it (its readers are also fast under copy-on-write, which pandas 3 makes the default).

Usage::

    python benchmarks/bench_io.py            # writes benchmarks/results/io.md
    python benchmarks/bench_io.py --quick    # small smoke run
"""

from __future__ import annotations

import json
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "data"


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import reset_peak as _reset_peak  # noqa: E402
from _memory import rss_kb as _rss_kb  # noqa: E402


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def _how(name: str) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _fair import how_measured

    return how_measured(name)


def make_data(d: Path, copies: int) -> None:
    import numpy as np
    import pandas as pd

    # SQLite in cytominer-database naming, from the NF1 ExportToDatabase file.
    src = sqlite3.connect(f"file:{SHARED / 'cytotable/NF1_SchwannCell/all_cellprofiler.sqlite'}?mode=ro", uri=True)
    out = sqlite3.connect(d / "plate.sqlite")
    n_img = pd.read_sql("SELECT MAX(ImageNumber) AS n FROM Per_Image", src)["n"].iloc[0]
    for table in ("Image", "Cells", "Cytoplasm", "Nuclei"):
        df = pd.read_sql(f"SELECT * FROM Per_{table}", src)
        if table != "Image":
            df.insert(1, "ObjectNumber", df[f"{table}_Number_Object_Number"])
        parts = []
        for k in range(copies):
            part = df.copy()
            part["ImageNumber"] = part["ImageNumber"] + k * n_img
            parts.append(part)
        pd.concat(parts).to_sql(table, out, index=False)
    out.commit()
    out.close()
    src.close()
    # One big profile table.
    lincs = pd.read_csv(SHARED / "lincs/SQ00015054_normalized_feature_select.csv.gz")
    pd.concat([lincs] * copies, ignore_index=True).to_csv(d / "profiles.csv.gz", index=False)
    # DeepProfiler folders.
    npz = SHARED / "pycytominer/deepprofiler/Week1_22123_B02_s1.npz"
    for k in range(copies * 10):
        plate = d / "dp" / f"plate{k % 4}"
        plate.mkdir(parents=True, exist_ok=True)
        shutil.copy(npz, plate / f"W{k:03d}_s{k % 9 + 1}.npz")
    # CellProfiler CSV site folders.
    for k in range(copies):
        shutil.copytree(SHARED / "pycytominer/cellprofiler_csv/BR00121431-A02-1", d / "csv" / f"site{k}")
    (d / "meta.json").write_text(json.dumps({"n_images": int(n_img) * copies}))


# ------------------------------------------------------------------------------------------------
# worker
# ------------------------------------------------------------------------------------------------
def _run(tool: str, case: str, d: Path):
    import warnings

    import numpy as np
    import pandas as pd

    warnings.simplefilter("ignore")
    if tool == "imgprof":
        import imgprof as ip

        if case == "sqlite":
            a = ip.io.read_cellprofiler(d / "plate.sqlite")
        elif case == "profiles":
            a = ip.io.read_profiles(d / "profiles.csv.gz")
        elif case == "deepprofiler":
            a = ip.io.read_deepprofiler(d / "dp")
        else:
            a = ip.io.read_cellprofiler(d / "csv")
        return a.shape, {v: np.asarray(a[:, v].X).ravel() for v in list(a.var_names[:3]) + list(a.var_names[-3:])}
    if case == "sqlite":
        from pycytominer.cyto_utils.cells import SingleCells

        sc = SingleCells(f"sqlite:///{d / 'plate.sqlite'}", strata=["Image_Metadata_Plate", "Image_Metadata_Well"],
                         image_cols=["ImageNumber"], merge_cols=["ImageNumber"])
        df = sc.merge_single_cells()
        feats = [c for c in df.columns if c.startswith(("Cells_", "Cytoplasm_", "Nuclei_"))]
    elif case == "profiles":
        from pycytominer.cyto_utils import load_profiles

        df = load_profiles(str(d / "profiles.csv.gz"))
        feats = [c for c in df.columns if not c.startswith("Metadata_")]
    elif case == "deepprofiler":
        from pycytominer.cyto_utils.load import load_npz_features

        files = sorted((d / "dp").rglob("*.npz"))
        df = pd.concat([load_npz_features(str(f)) for f in files], ignore_index=True)
        feats = [c for c in df.columns if not c.startswith("Metadata_")]
    else:
        return None, {}
    return (len(df), len(feats)), {c: df[c].to_numpy(dtype=float) for c in feats}


def worker(tool: str, case: str, d: Path, out: Path) -> dict:
    import numpy as np

    import warnings

    warnings.simplefilter("ignore")
    # Import first so that imports are not timed. Only the tool measured is imported: importing
    # pycytominer switches pandas to copy-on-write mode for the whole process.
    if tool == "imgprof":
        import imgprof as ip

        ip.io.read_profiles  # noqa: B018  (loads imgprof.io)
    else:
        from pycytominer.cyto_utils import cells, load  # noqa: F401
    _run(tool, case, d)  # warm-up: lazy imports and first-call setup are not measured
    times, peak, res = [], 0, None
    for _ in range(3):
        base = _reset_peak()
        t0 = time.perf_counter()
        res = _run(tool, case, d)
        times.append(time.perf_counter() - t0)
        peak = max(peak, _rss_kb("VmHWM") - base)
        if sum(times) > 60:
            break
    shape, cols = res
    np.savez(out / f"{tool}_{case}.npz", **cols)
    return {"tool": tool, "case": case, "seconds": min(times), "peak_mb": peak / 1024, "shape": list(shape) if shape else None}


def _spawn(tool, case, d, out):
    from _worker import run_worker

    return run_worker([sys.executable, __file__, "--worker", tool, case, str(d), str(out)], what=f"{tool}/{case}", cwd=ROOT)


LABELS = {
    "sqlite": "CellProfiler SQLite → single cells (merge Cells/Cytoplasm/Nuclei + Image)",
    "profiles": "profile CSV.GZ → table / AnnData",
    "deepprofiler": "DeepProfiler .npz folder → single cells",
    "csv_folder": "CellProfiler CSV site folders → single cells",
}


def main() -> None:
    from _worker import copies_cli, reply

    args = copies_cli(worker_nargs=4)
    if args.worker:
        tool, case, d, out = args.worker
        return reply(worker(tool, case, Path(d), Path(out)))
    import numpy as np

    copies = args.copies or (2 if args.quick else 20)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d, out = Path(tmp) / "data", Path(tmp) / "out"
        d.mkdir()
        out.mkdir()
        make_data(d, copies)
        for case in ("sqlite", "profiles", "deepprofiler", "csv_folder"):
            ip_res = _spawn("imgprof", case, d, out)
            ref = None if case == "csv_folder" else _spawn("pycytominer", case, d, out)
            agree = "n/a"
            if ref is not None:
                a, b = np.load(out / f"imgprof_{case}.npz"), np.load(out / f"pycytominer_{case}.npz")
                diffs = [float(np.nanmax(np.abs(a[k] - b[k]))) if len(a[k]) else 0.0 for k in a.files if k in b.files]
                same_nan = all(np.array_equal(np.isnan(a[k]), np.isnan(b[k])) for k in a.files if k in b.files)
                agree = f"max abs diff {max(diffs):.1e} on {len(diffs)} checked columns" + ("" if same_nan else ", NaN differ")
            rows.append((case, ip_res, ref, agree))
    lines = [
        f"# ip.io benchmark ({'quick' if args.quick else 'full'}: {copies} copies)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}. "
        "Seconds: best of up to 3 runs after a warm-up, each tool in its own process. Peak MB: resident-set growth during the call.",
        "",
        _how("io"),
        "",
        "| case | rows × features (imgprof / pycytominer) | imgprof s | pycytominer s | ratio (pcm / ip) | imgprof peak MB | pycytominer peak MB | outputs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, a, b, agree in rows:
        shape = f"{a['shape'][0]} × {a['shape'][1]}" + (f" / {b['shape'][0]} × {b['shape'][1]}" if b else "")
        if b:
            lines.append(
                f"| {LABELS[case]} | {shape} | {a['seconds']:.2f} | {b['seconds']:.2f} | {b['seconds'] / a['seconds']:.1f}× | "
                f"{a['peak_mb']:.0f} | {b['peak_mb']:.0f} | {agree} |"
            )
        else:
            lines.append(f"| {LABELS[case]} | {shape} | {a['seconds']:.2f} | – | – | {a['peak_mb']:.0f} | – | no reference installed |")
    lines += [
        "",
        "pycytominer keeps `*_Number_Object_Number` and `Cells_Parent_Nuclei` as features; imgprof moves them to `.obs`, "
        "so its feature count is lower by those id columns (all other features are compared value by value in the tests).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "io.md").write_text(text)


if __name__ == "__main__":
    main()
