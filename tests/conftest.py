"""Shared fixtures: the real data in ../shared/data and small simulated sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IMGPROF_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared(*parts: str) -> Path:
    """Path of a file under ../shared/data; skips the test with a clear reason when absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data file {p} not available")
    return p


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} not found")
    return SHARED_DATA


@pytest.fixture
def sim_wells():
    import imgprof as ip

    return ip.datasets.simulate(n_plates=4, n_perturbations=24, n_moa=4, n_features=60, seed=1)


@pytest.fixture(scope="session")
def lincs():
    import imgprof as ip

    return ip.datasets.lincs_plate()


# pandas copy-on-write (pandas 3's default; importing pycytominer turns it on for the whole session).
# IMGPROF_PANDAS_COW=1 runs the collected tests with it on, =0 with it off (set after collection, so
# that a module importing pycytominer cannot change it); unset: left as the imports leave it.
# CI runs the parity suite both ways, e.g. IMGPROF_PANDAS_COW=0 pytest tests/test_pp_normalize_parity.py
_COW_ENV = os.environ.get("IMGPROF_PANDAS_COW")


def pytest_configure(config):
    config.addinivalue_line("markers", "cow: reruns parity checks with pandas copy-on-write on and off")


def pytest_collection_finish(session):
    if _COW_ENV in ("0", "1"):
        import pandas as pd

        pd.options.mode.copy_on_write = _COW_ENV == "1"


def pytest_report_header(config):
    return f"imgprof: IMGPROF_PANDAS_COW={_COW_ENV!r} (pandas copy-on-write set after collection when 0/1)"
