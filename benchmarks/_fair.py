"""The 'How measured' paragraph every benchmark table carries (issue #17).

A reviewer checks a side-by-side number by four facts: both tools start from the same point (the same
file on disk, or each tool's own in-memory container built outside the timed region), they do the same
work (the same metric or method set), what warm-up is excluded (or included, and why), and the pandas
copy-on-write mode (importing pycytominer turns it on for the whole process; pandas 3 makes it the
default). Each benchmark script states them through :func:`how_measured`.
"""

from __future__ import annotations


def cow_mode() -> str:
    """'on' or 'off': pandas' copy-on-write mode in this process."""
    import pandas as pd

    return "on" if pd.options.mode.copy_on_write is True else "off"


#: Each benchmark's terms: same starting point, same work, warm-up, repeats, copy-on-write mode.
TERMS: dict[str, dict[str, str]] = {
    "tl": dict(
        start="both tools get the same synthetic matrix (same generator and seed), built in the worker process before the clock starts (not timed); Harmony and Leiden read the same PCs/graph.",
        same_work="the reference call and imgprof's wrapper with the same method parameters on the same input (Harmony: outputs compared for identity; scVI: same CytoVI model, epochs and accelerator; scanorama/combat: the same scanpy-external/scanpy call underneath).",
        warmup="every library either side needs is imported before the clock starts (`_warm_imports`); no other warm-up (first-call JIT compilation, if any, is timed on both sides alike).",
        repeats="Harmony: best of 3 runs alternating the two tools in one process; other rows: one timed call per tool, each in a fresh subprocess.",
        cow="off (pandas default; the sphering row imports pycytominer, which turns it on for that worker only).",
    ),
    "mm": dict(
        start="the same files on disk (GCT/GCTX written once before timing; the join reads both AnnData from `.h5ad` before the clock starts).",
        same_work="read the whole GCT/GCTX (cmapPy `parse` vs `ip.io.read_gct[x]`); for the join, the same MOA explode + median consensus + inner merge (the pandas recipe vs `ip.mm.join`), outputs compared.",
        warmup="none beyond imports (done before the timed call); the best of up to 3 calls is reported, so the first call's one-time costs drop out when a later call is faster.",
        repeats="up to 3 calls per tool in its own subprocess (stops after a call over 20 s); best shown.",
        cow="off (pandas default; neither tool imports pycytominer).",
    ),
    "im": dict(
        start="the same image files on disk (the real ExampleHuman site and its 8 rotations/flips, written before timing).",
        same_work="imgprof configurations against each other (2 workers vs 1); the only outside reference is CellProfiler's own recorded `ExecutionTime_*` for the ExampleHuman modules (CellProfiler 4.0.6 is not installable here, so that time is the recorded one, on unknown hardware: not a side-by-side ratio).",
        warmup="one untimed `profile_images` call on the real site first (imports, numba compilation).",
        repeats="one timed call per configuration, each in a fresh subprocess.",
        cow="off (pandas default).",
    ),
    "io": dict(
        start="the same files on disk for both tools (SQLite, CSV.GZ, DeepProfiler `.npz` folders built before timing).",
        same_work="each tool's reader for the same file into its own container (pycytominer `SingleCells.merge_single_cells` / `load_profiles` / `load_npz_features` + concat \u2192 DataFrame; imgprof \u2192 AnnData), outputs compared column by column.",
        warmup="one untimed call per tool before the timed ones (lazy imports, first-call setup).",
        repeats="best of up to 3 timed calls, each tool in its own subprocess.",
        cow="on in the pycytominer processes (importing pycytominer turns it on), off in imgprof's; imgprof's readers were also checked under copy-on-write (see tests/test_cow.py).",
    ),
    "benchmarker": dict(
        start="the same AnnData (same simulator, seed and two 50-dim embeddings), built in each tool's subprocess before the clock starts (not timed).",
        same_work="scib-metrics' default metric set on both sides (isolated labels, k-means NMI/ARI, silhouette label, cLISI, BRAS, iLISI, kBET, graph connectivity, PCR comparison), scores compared below.",
        warmup="none, deliberately: each tool runs in a fresh process with its imports done before the clock, so JIT compilation (JAX for scib-metrics, numba for imgprof) is inside the timed region on both sides, as a user meets it.",
        repeats="the tools alternate in fresh subprocesses; best total of the runs shown (all totals listed).",
        cow="off (pandas default; neither side imports pycytominer).",
    ),
    "map": dict(
        start="each tool's own in-memory input built from the same generated matrix and metadata (same seed) before the clock starts: imgprof an AnnData, copairs a DataFrame + numpy array (not timed).",
        same_work="the same AP/mAP: the same positive/negative pair rules (copairs' `pos_sameby`/`neg_diffby` as imgprof's recipe), the same null construction for mAP p-values (`null=\"shared\"`, copairs' one null per configuration), AP values compared.",
        warmup="imports before the clock; no other warm-up (numba compilation is cached on disk from earlier runs).",
        repeats="one timed call per tool and case, each in a fresh subprocess.",
        cow="off (pandas default; copairs does not import pycytominer).",
    ),
}


def how_measured(name: str) -> str:
    """One markdown paragraph stating how benchmark ``name`` was measured (see :data:`TERMS`)."""
    t = TERMS[name]
    start, same_work, warmup, repeats, cow = t["start"], t["same_work"], t["warmup"], t["repeats"], t["cow"]
    return (
        f"**How measured.** *Same starting point:* {start} *Same work:* {same_work} *Warm-up:* {warmup} "
        f"*Repeats:* {repeats} *pandas copy-on-write:* {cow}"
    )
