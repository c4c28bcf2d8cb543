"""The code on docs/extending.md runs: each example registers its entry, the public coordinator uses
it, and the entry is removed again (so the examples cannot drift from the registries' API)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import imgprof as ip

DOC = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()


def _block(heading: str) -> str:
    """The first ```python block under the ``## heading`` of the page."""
    section = DOC.split(f"## {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _sim():
    return ip.datasets.simulate(n_plates=2, n_batches=2, n_perturbations=8, n_moa=2, n_features=12, seed=0)


def test_registry_overview_block_runs():
    ns: dict = {}
    exec(DOC.split("```python\n", 1)[1].split("```", 1)[0], ns)
    assert "normalizer" in ns["REGISTRIES"]


def test_new_normalizer_example():
    from imgprof.pp.normalize import NORMALIZERS

    ns: dict = {}
    exec(_block("A new normalizer"), ns)
    try:
        a = _sim()
        ctrl = a.obs["Metadata_control_type"] == "negcon"
        ip.pp.normalize(a, method="center_only", samples="Metadata_control_type == 'negcon'", by="Metadata_Plate")
        for plate in a.obs["Metadata_Plate"].unique():
            rows = (ctrl & (a.obs["Metadata_Plate"] == plate)).to_numpy()
            np.testing.assert_allclose(np.asarray(a.X)[rows].mean(axis=0), 0, atol=1e-9)
        assert ip.provenance(a).iloc[-1]["function"] == "pp.normalize"
    finally:
        NORMALIZERS.unregister("center_only")


def test_new_feature_select_operation_example():
    from imgprof.pp.feature_select import FEATURE_OPS

    ns: dict = {}
    exec(_block("A new feature-selection operation"), ns)
    try:
        a = _sim()
        negative = np.nanmean(np.asarray(a.X), axis=0) < 0
        out = ip.pp.feature_select(a, operation=["drop_negative_means"], copy=True)
        assert list(out.var_names) == list(a.var_names[~negative])
    finally:
        FEATURE_OPS.unregister("drop_negative_means")


def test_new_integration_method_example():
    from imgprof.tl import INTEGRATIONS

    code = _block("A new integration method")
    # the page registers a module path inside the package; here the function is defined in place
    code = re.sub(r'INTEGRATIONS\.register_lazy\("my_method", "[^"]+", (.*)\)',
                  r'INTEGRATIONS.register("my_method", \1)(my_method)', code)
    ns: dict = {}
    exec(code, ns)
    try:
        a = _sim()
        ip.tl.integrate(a, "my_method", "Metadata_Batch", scale=True)
        Y = a.obsm["X_my_method"]
        for b in a.obs["Metadata_Batch"].unique():
            rows = (a.obs["Metadata_Batch"] == b).to_numpy()
            np.testing.assert_allclose(Y[rows].mean(axis=0), 0, atol=1e-9)
        step = ip.provenance(a).iloc[-1]
        assert step["function"] == "tl.my_method" and step["params"]["batch_key"] == "Metadata_Batch"
    finally:
        INTEGRATIONS.unregister("my_method")


def test_new_distance_example():
    from imgprof.tl import DISTANCES

    ns = {"np": np, "DISTANCES": DISTANCES}
    exec(_block("A new single-cell distance"), ns)
    try:
        a = _sim()
        d = ip.tl.distance(a, "Metadata_Batch", metric="mean_abs", copy=True)
        assert d is not None
    finally:
        DISTANCES.unregister("mean_abs")


def test_new_reader_example_registers_by_suffix():
    from imgprof.io import READERS
    from imgprof.io._formats import detect_format

    line = _block("A new reader").strip().splitlines()[-1]
    exec(line, {"READERS": READERS})
    try:
        assert detect_format("cells.loom") == "loom"  # the suffix now picks the entry
        with pytest.raises((ImportError, AttributeError)):  # the example's reader itself is not part of imgprof
            _ = READERS.get("loom").obj
    finally:
        READERS.unregister("loom")
