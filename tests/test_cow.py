"""pandas copy-on-write on and off give the same results, and in-place steps still write in place.

Copy-on-write is pandas 3's default and importing pycytominer turns it on; each test here runs
the step twice, with the mode forced off and on, on the bundled LINCS plate (real data), and
compares the two results exactly. The whole parity suite can also be run in one mode with
``IMGPROF_COW=1`` (or ``=0``), see ``tests/conftest.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import imgprof as ip

pytestmark = pytest.mark.cow
NEGCON = "Metadata_broad_sample == 'DMSO'"


@pytest.fixture
def cow_mode():
    """Set pandas' copy-on-write mode for the duration of one call, restore it after."""
    old = pd.options.mode.copy_on_write

    def run(mode: bool, fn, *args, **kw):
        pd.options.mode.copy_on_write = mode
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return fn(*args, **kw)
        finally:
            pd.options.mode.copy_on_write = old

    return run


@pytest.fixture(scope="module")
def plate():
    return ip.datasets.lincs_plate()


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a.X), np.asarray(b.X))
    pd.testing.assert_frame_equal(a.obs, b.obs)
    assert list(a.var_names) == list(b.var_names)


@pytest.mark.parametrize("method", ["mad_robustize", "standardize", "robustize", "spherize", "inverse_normal"])
def test_normalize_same_under_cow(plate, cow_mode, method):
    kw = {"method": method, "controls": NEGCON}
    off = cow_mode(False, ip.pp.normalize, plate, copy=True, **kw)
    on = cow_mode(True, ip.pp.normalize, plate, copy=True, **kw)
    _same(off, on)
    inplace = plate.copy()
    cow_mode(True, ip.pp.normalize, inplace, **kw)  # copy=False must write into the object under CoW too
    np.testing.assert_array_equal(np.asarray(inplace.X), np.asarray(on.X))


def test_feature_select_same_under_cow(plate, cow_mode):
    ops = ["variance_threshold", "correlation_threshold", "drop_na_columns", "drop_outliers"]
    off = cow_mode(False, ip.pp.feature_select, plate, ops, copy=True)
    on = cow_mode(True, ip.pp.feature_select, plate, ops, copy=True)
    _same(off, on)
    inplace = plate.copy()
    cow_mode(True, ip.pp.feature_select, inplace, ops)
    assert list(inplace.var_names) == list(on.var_names)


def test_qc_writes_obs_under_cow(plate, cow_mode):
    off = cow_mode(False, ip.pp.qc, plate, by=None, controls=NEGCON, count_key=None, copy=True)
    inplace = plate.copy()
    cow_mode(True, ip.pp.qc, inplace, by=None, controls=NEGCON, count_key=None)
    cols = [c for c in off.obs.columns if c.startswith("Metadata_qc")]
    assert cols and all(c in inplace.obs.columns for c in cols)
    pd.testing.assert_frame_equal(off.obs[cols], inplace.obs[cols])


def test_aggregate_consensus_and_round_trip_under_cow(plate, cow_mode):
    by = ["Metadata_broad_sample"]
    _same(cow_mode(False, ip.pp.aggregate, plate, by=by), cow_mode(True, ip.pp.aggregate, plate, by=by))
    _same(cow_mode(False, ip.pp.consensus, plate, by=by, operation="modz"),
          cow_mode(True, ip.pp.consensus, plate, by=by, operation="modz"))
    df_off = cow_mode(False, ip.io.to_pandas, plate)
    df_on = cow_mode(True, ip.io.to_pandas, plate)
    pd.testing.assert_frame_equal(df_off, df_on)
    back = cow_mode(True, ip.io.from_pandas, df_on)
    pd.testing.assert_frame_equal(cow_mode(True, ip.io.to_pandas, back), df_on)
