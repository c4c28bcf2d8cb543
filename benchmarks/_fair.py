"""The 'How measured' paragraph every benchmark table carries (issue #17).

A reviewer checks a side-by-side number by four facts: both tools start from the same point (the same
file on disk, or each tool's own in-memory container built outside the timed region), they do the same
work (the same metric or method set), what warm-up is excluded (or included, and why), and the pandas
copy-on-write mode (importing pycytominer turns it on for the whole process; pandas 3 makes it the
default). Each benchmark script states them through :func:`how_measured`.
"""

from __future__ import annotations

import json
from pathlib import Path


#: Each benchmark's terms (same starting point, same work, warm-up, repeats, copy-on-write mode) live in
#: ``benchmarks/fairness.json``, one entry per script, so that the prose is data and the code is one function.
TERMS_FILE = Path(__file__).resolve().parent / "fairness.json"


def how_measured(name: str) -> str:
    """One markdown paragraph stating how benchmark ``name`` was measured (see ``fairness.json``)."""
    t = json.loads(TERMS_FILE.read_text())[name]
    start, same_work, warmup, repeats, cow = t["start"], t["same_work"], t["warmup"], t["repeats"], t["cow"]
    return (
        f"**How measured.** *Same starting point:* {start} *Same work:* {same_work} *Warm-up:* {warmup} "
        f"*Repeats:* {repeats} *pandas copy-on-write:* {cow}"
    )


def write_markdown(text: str, out: str | Path) -> None:
    """Print a result table and write it to ``out`` (folders created)."""
    print(text)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def saved_pair(a: Path, b: Path, missing: str = ""):
    """The two arrays saved at ``a`` and ``b``, or the text a comparison reports instead.

    ``missing`` when either file is absent, ``"shape (..) vs (..)"`` when their shapes differ.
    """
    import numpy as np

    if not (a.exists() and b.exists()):
        return missing
    A, B = np.load(a), np.load(b)
    if A.shape != B.shape:
        return f"shape {A.shape} vs {B.shape}"
    return A, B
