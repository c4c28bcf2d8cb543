"""ip.pp.feature_select's operations registry: a new operation is one registered function."""

from __future__ import annotations

import numpy as np
import pytest

import imgprof as ip
from imgprof.pp.feature_select import FEATURE_OPS, OPERATIONS, FeatureData


@pytest.fixture
def sim():
    return ip.datasets.simulate(n_plates=2, n_perturbations=6, n_moa=2, n_features=20, n_constant=2, seed=4)


@pytest.fixture
def toy_op():
    """Register ``drop_first_two`` for one test (dropping the first two features still in play)."""
    seen: dict = {}

    @FEATURE_OPS.register("drop_first_two", params=("min_variance",))
    def drop_first_two(data: FeatureData, *, min_variance: float):
        seen.update(n_rows=data.n_rows, n_cols=data.columns.size, shape=data.sub().shape, min_variance=min_variance)
        drop = np.zeros(data.columns.size, dtype=bool)
        drop[:2] = True
        return drop, {"note": "toy"}

    yield seen
    FEATURE_OPS.unregister("drop_first_two")


def test_builtin_operations_are_registered():
    assert OPERATIONS == ("variance_threshold", "frequency_threshold", "correlation_threshold", "drop_na_columns",
                          "blocklist", "drop_outliers", "noise_removal")
    assert set(OPERATIONS) <= set(FEATURE_OPS.names())
    assert FEATURE_OPS.get("blocklist")["values"] is False
    assert FEATURE_OPS.get("noise_removal")["groups"] is True


def test_toy_operation_end_to_end(sim, toy_op):
    names = list(sim.var_names)
    samples = "Metadata_control_type == 'negcon'"
    out = ip.pp.feature_select(sim, ["variance_threshold", "drop_first_two"], samples=samples, min_variance=1e-6,
                               copy=True)
    rec = out.uns["feature_select"]
    assert list(rec) == ["variance_threshold", "drop_first_two"]
    kept_after_var = [n for n in names if n not in rec["variance_threshold"]]
    assert rec["drop_first_two"] == kept_after_var[:2]  # applied after, on what variance_threshold kept
    assert list(out.var_names) == kept_after_var[2:]
    n_neg = int((sim.obs["Metadata_control_type"] == "negcon").sum())
    assert toy_op == {"n_rows": n_neg, "n_cols": len(kept_after_var), "shape": (n_neg, len(kept_after_var)),
                      "min_variance": 1e-6}
    step = ip.provenance(out).iloc[-1]
    assert step["function"] == "pp.feature_select"
    assert step["params"]["operation"] == ["variance_threshold", "drop_first_two"]
    assert step["extra"]["reports"] == {"drop_first_two": {"note": "toy"}}
    assert step["extra"]["n_dropped"]["drop_first_two"] == 2
    assert sim.n_vars == len(names)  # copy=True left the input alone
    assert ip.pp.feature_select(sim, "drop_first_two") is None and sim.n_vars == len(names) - 2


def test_unknown_operation_names_parameter_and_choices(sim):
    with pytest.raises(ValueError, match=r"operation='variance_thresh'") as err:
        ip.pp.feature_select(sim, ["blocklist", "variance_thresh"])
    msg = str(err.value)
    assert "pp.feature_select" in msg
    assert all(name in msg for name in OPERATIONS)  # lists the choices
    assert "Did you mean 'variance_threshold'" in msg
    with pytest.raises(ValueError, match="at least one operation"):
        ip.pp.feature_select(sim, [])
    with pytest.raises(TypeError, match="operation"):
        ip.pp.feature_select(sim, [3])


def test_bad_mask_from_an_operation_is_reported(sim):
    @FEATURE_OPS.register("wrong_length")
    def wrong_length(data):
        return np.zeros(1, dtype=bool)

    try:
        with pytest.raises(RuntimeError, match="wrong_length.*mask of shape"):
            ip.pp.feature_select(sim, "wrong_length")
    finally:
        FEATURE_OPS.unregister("wrong_length")
