"""Smoke test of benchmarks/bench_normalize.py: tiny data, both tools in-process, outputs compared."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("pycytominer")
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_normalize.py"


def test_bench_normalize_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_normalize", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.make_data(tmp_path, n_plates=2, n_features=30)
    for task in ("mad_plate", "fs_all"):
        rows = {tool: bench.worker(tool, task, tmp_path, tmp_path, repeats=1) for tool in ("imgprof", "pycytominer")}
        assert all(r["seconds"] > 0 for r in rows.values())
        agree = bench._agreement(task, tmp_path)
        assert agree.startswith("identical") or float(agree.split()[-1]) < 1e-9, agree
    md = bench._markdown([("fs_all", rows, agree)], 2, 30, type("A", (), {"repeats": 1, "threads": None})())
    assert "| feature_select, all six operations" in md
    assert json.loads((tmp_path / "imgprof_fs_all.json").read_text())
