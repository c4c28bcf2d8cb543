"""Smoke test of benchmarks/bench_normalize.py: tiny data, both tools in-process, outputs compared."""

from __future__ import annotations

import importlib.util
import json
import re
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
        tools = ("imgprof", "pycytominer") + (("numpy",) if task in bench.NUMPY_TASKS else ())
        rows = {tool: bench.worker(tool, task, tmp_path, tmp_path, repeats=1) for tool in tools}
        assert all(r["seconds"] > 0 and r["cow"] in ("on", "off", "warn") for r in rows.values())
        agree = bench._agreement(task, tmp_path)
        if task == "mad_plate":  # imgprof and the plain-numpy reference both agree with pycytominer
            diffs = [float(x) for x in re.findall(r"\d\.\de[+-]\d+", agree)]
            assert len(diffs) == 2 and max(diffs) < 1e-9, agree
        else:
            assert agree.startswith("identical"), agree
        md = bench._markdown([(task, rows, agree)], 2, 30, type("A", (), {"repeats": 1, "threads": None})())
        assert f"| {bench.TASKS[task][0]} |" in md and "CoW" in md
    assert json.loads((tmp_path / "imgprof_fs_all.json").read_text())
