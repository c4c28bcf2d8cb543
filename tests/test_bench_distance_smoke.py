"""benchmarks/bench_distance.py --quick runs end to end, and its numbers agree with pertpy's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_distance_quick(tmp_path):
    out = tmp_path / "distance_quick.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_distance.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, cwd=str(ROOT), timeout=1500, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    rows = [line for line in text.splitlines() if re.match(r"\| 10,000 \| (E-distance|MMD|E-test)", line)]
    assert len(rows) == 11 and all("| ok" in r for r in rows), rows
    diffs = [float(x) for x in re.findall(r"max relative difference ([0-9.e+-]+)", text)]
    assert len(diffs) == 7 and max(diffs) < 1e-9, diffs
