"""Smoke run of benchmarks/bench_benchmarker.py (imgprof side only, tiny size)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_benchmarker_smoke(tmp_path):
    out = tmp_path / "bench.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_benchmarker.py"), "--only", "imgprof", "--n-cells", "1600",
         "--out", str(out)],
        capture_output=True, text=True, cwd=str(ROOT), timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    for step in ("prepare: neighbours", "kbet_per_label", "silhouette_label", "**total**", "peak RSS"):
        assert step in text
