"""Smoke test of benchmarks/bench_tl.py: its workers run and ours matches harmonypy on the benchmark data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_tl.py"


@pytest.fixture(scope="module")
def bench():
    if not BENCH.exists():
        pytest.skip("benchmarks/bench_tl.py not present")
    spec = importlib.util.spec_from_file_location("bench_tl", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_harmony_workers_agree(bench):
    ours = bench.worker("harmony_imgprof", 1500, 50, {})
    ref = bench.worker("harmony_harmonypy", 1500, 50, {})
    assert ours["checksum"] == pytest.approx(ref["checksum"], rel=1e-9)
    assert ours["seconds"] > 0 and ours["peak_rss_mb"] > 0


def test_method_worker_runs(bench):
    out = bench.worker("combat_imgprof", 400, 20, {})
    assert out["seconds"] > 0
