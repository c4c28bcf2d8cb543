"""ip.tl.scvi: scvi-tools' Gaussian-likelihood VAE (CytoVI), tiny and CPU-only here."""

from __future__ import annotations

import numpy as np
import pytest

import imgprof as ip

pytest.importorskip("scvi")
pytestmark = [pytest.mark.slow, pytest.mark.scvi]


@pytest.fixture(scope="module")
def sim():
    a = ip.datasets.simulate(n_plates=4, n_batches=2, n_perturbations=24, n_moa=4, n_features=40, seed=2)
    ctrl = (a.obs["Metadata_control_type"] == "negcon").to_numpy()
    a.X = (a.X - a.X[ctrl].mean(0)) / a.X[ctrl].std(0)
    return a


def test_scvi_tiny_fit(sim):
    a = sim.copy()
    model = ip.tl.scvi(a, "Metadata_Batch", n_latent=8, max_epochs=2, return_model=True, num_threads=1)
    Z = a.obsm["X_scvi"]
    assert Z.shape == (a.n_obs, 8) and np.isfinite(Z).all()
    assert type(model).__name__ == "CYTOVI"
    assert model.module.protein_likelihood == "normal"  # a Gaussian likelihood, not a count model
    step = ip.provenance(a).iloc[-1]
    assert step["function"] == "tl.scvi"
    assert step["extra"]["epochs_trained"] == 2
    assert step["extra"]["device"].startswith(("cpu", "cuda"))
    assert step["extra"]["seconds_per_epoch"] > 0
    # the user's AnnData did not get scvi-tools' registry
    assert not any(k.startswith("_scvi") for k in a.uns)


def test_scvi_reproducible(sim):
    a, b = sim.copy(), sim.copy()
    ip.tl.scvi(a, "Metadata_Batch", n_latent=8, max_epochs=1, seed=1, num_threads=1)
    ip.tl.scvi(b, "Metadata_Batch", n_latent=8, max_epochs=1, seed=1, num_threads=1)
    np.testing.assert_allclose(a.obsm["X_scvi"], b.obsm["X_scvi"], rtol=1e-5, atol=1e-5)


def test_scvi_bad_input_before_training(sim):
    a = sim.copy()
    a.X[:, 0] = 3.0
    with pytest.raises(ValueError, match="constant"):
        ip.tl.scvi(a, "Metadata_Batch", max_epochs=1)
    with pytest.raises(ValueError, match="max_epochs"):
        ip.tl.scvi(sim.copy(), "Metadata_Batch", max_epochs=0)
