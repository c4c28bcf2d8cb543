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


# ExampleHuman's channel tokens and names, as the im tests read its images
EH_CHANNELS = {"0": "DNA", "1": "PH3", "2": "cellbody"}


@pytest.fixture(scope="module")
def eh() -> Path:
    """The ExampleHuman images folder."""
    import imgprof as ip

    return ip.datasets.examplehuman_images_path()


@pytest.fixture(scope="module")
def site(eh):
    """The first ExampleHuman site, read with EH_CHANNELS."""
    import imgprof as ip

    return ip.io.read_images(eh, channels=EH_CHANNELS).read(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} not found")
    return SHARED_DATA


# the shared profile tables of the pycytominer parity tests (read once per test module)
@pytest.fixture(scope="module")
def lincs_df():
    """LINCS plate SQ00015054, normalized and feature-selected (pycytominer's output)."""
    import pandas as pd

    return pd.read_csv(shared("lincs", "SQ00015054_normalized_feature_select.csv.gz"))


@pytest.fixture(scope="module")
def nelisa_df():
    """The nELISA profiles."""
    import pandas as pd

    return pd.read_parquet(shared("nelisa", "nelisa_profiles.parquet"))


@pytest.fixture(scope="module")
def cmqtl_df():
    """Two cmQTL CRISPRi batches, on their common columns."""
    import pandas as pd

    files = [
        "2022_09_07_Batch8_cmQTL_CRISPRi_plate1_normalized_feature_select_batch.csv.gz",
        "2022_09_22_Batch8Rerun_MT_rerun_20220919_normalized_feature_select_batch.csv.gz",
    ]
    dfs = [pd.read_csv(shared("cmqtl", f)) for f in files]
    common = [c for c in dfs[0].columns if c in set(dfs[1].columns)]
    return pd.concat([d[common] for d in dfs], ignore_index=True)


@pytest.fixture(scope="module")
def cells_df():
    """ExampleHuman single cells joined by CytoTable (pycytominer's test data)."""
    import pandas as pd

    return pd.read_parquet(shared("pycytominer", "cytotable", "examplehuman_joined_profiles.parquet"))


@pytest.fixture
def sim_wells():
    import imgprof as ip

    return ip.datasets.simulate(n_plates=4, n_perturbations=24, n_moa=4, n_features=60, seed=1)


@pytest.fixture(scope="session")
def lincs():
    import imgprof as ip

    return ip.datasets.lincs_plate()


# pandas copy-on-write (the default in pandas 3; importing pycytominer turns it on). IMGPROF_COW=1 runs
# every test with it on, IMGPROF_COW=0 with it off, set around each test (after the test modules, and
# pycytominer with them, are imported); unset: whatever the imports leave. tests/test_cow_modes.py reruns
# the key pycytominer parity tests in both modes.
_COW = os.environ.get("IMGPROF_COW")


@pytest.fixture(autouse=_COW in ("0", "1"))
def _pandas_copy_on_write():
    import pandas as pd

    with pd.option_context("mode.copy_on_write", _COW == "1"):
        yield


def pytest_configure(config):
    config.addinivalue_line("markers", "cow: reruns parity checks with pandas copy-on-write on and off")
