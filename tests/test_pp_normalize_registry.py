"""ip.pp.normalize looks its method up in NORMALIZERS: one registered class is a new method, end to end."""

from __future__ import annotations

import numpy as np
import pytest

import imgprof as ip
from imgprof.pp._normalizers import Groups
from imgprof.pp.normalize import NORMALIZERS

NEGCON = "Metadata_control_type == 'negcon'"


@pytest.fixture
def sim():
    return ip.datasets.simulate(n_plates=3, n_perturbations=12, n_moa=3, n_controls=8, n_features=30, seed=5)


@pytest.fixture
def toy():
    """A toy normalizer, ``x - max`` of the group's reference rows, registered for the test only."""
    seen = {}

    class MaxShift:
        def fit(self, X, groups: Groups, *, epsilon):
            seen["epsilon"] = epsilon
            seen["n_ref"] = int((groups.fit_codes >= 0).sum())
            return np.stack([X[groups.fit_codes == g].max(axis=0) for g in range(groups.n_groups)])

        def transform(self, X, groups: Groups, state):
            return X - state[groups.codes]

    NORMALIZERS.register("max_shift", options=("epsilon",))(MaxShift)
    try:
        yield seen
    finally:
        NORMALIZERS.unregister("max_shift")


def test_registered_normalizer_runs_end_to_end(sim, toy):
    assert "max_shift" in NORMALIZERS.names()
    from imgprof.pp.normalize import NORMALIZE_METHODS

    assert "max_shift" in NORMALIZE_METHODS
    out = ip.pp.normalize(sim, "max_shift", controls=NEGCON, by="Metadata_Plate", epsilon=0.5, key_added="shifted",
                          max_variance_share=None, outlier_cutoff=None, copy=True)
    assert toy == {"epsilon": 0.5, "n_ref": int((sim.obs["Metadata_control_type"] == "negcon").sum())}
    np.testing.assert_array_equal(out.X, sim.X)  # key_added: a layer, .X untouched
    ctrl = (sim.obs["Metadata_control_type"] == "negcon").to_numpy()
    for plate in sim.obs["Metadata_Plate"].unique():
        rows = (sim.obs["Metadata_Plate"] == plate).to_numpy()
        expected = sim.X[rows] - sim.X[rows & ctrl].max(axis=0)
        np.testing.assert_allclose(out.layers["shifted"][rows], expected, rtol=0, atol=0)
    last = ip.provenance(out).iloc[-1]
    assert last["params"]["method"] == "max_shift"
    assert last["params"]["n_quantiles"] is None  # options the method does not read are logged as None
    assert last["extra"]["output"] == "layers['shifted']"
    assert last["extra"]["n_groups"] == 3


def test_registered_normalizer_honours_features_and_copy(sim, toy):
    feats = list(sim.var_names[[4, 2]])
    before = sim.X.copy()
    ip.pp.normalize(sim, "MAX_SHIFT", features=feats, max_variance_share=None, outlier_cutoff=None)
    cols = [4, 2]
    np.testing.assert_allclose(sim.X[:, cols], before[:, cols] - before[:, cols].max(axis=0))
    others = np.setdiff1d(np.arange(sim.n_vars), cols)
    np.testing.assert_array_equal(sim.X[:, others], before[:, others])


def test_unknown_method_names_parameter_and_choices(sim):
    with pytest.raises(ValueError, match=r"method='zscore'") as err:
        ip.pp.normalize(sim, "zscore")
    msg = str(err.value)
    for name in ("standardize", "robustize", "mad_robustize", "spherize", "inverse_normal"):
        assert name in msg
    with pytest.raises(ValueError, match=r"Did you mean 'standardize'"):
        ip.pp.normalize(sim, "standardise")


def test_registry_lists_the_builtin_methods_in_pycytominer_order():
    assert NORMALIZERS.names() == ("standardize", "robustize", "mad_robustize", "spherize", "inverse_normal")
    assert NORMALIZERS.get("spherize")["allow_nan"] is False
