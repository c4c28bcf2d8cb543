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


def test_scvi_equals_direct_cytovi_on_cmqtl():
    """The wrapper is scvi-tools' CytoVI: the same latent space as a direct call with the same settings (real data)."""
    import anndata as ad
    import pandas as pd
    import scvi
    from scvi.external import CYTOVI

    a = ip.datasets.cmqtl_crispri()
    ip.tl.scvi(a, "Metadata_Batch", max_epochs=2, seed=3, num_threads=1, accelerator="cpu")
    step = ip.provenance(a).iloc[-1]["params"]
    # the direct call, with the wrapper's documented choices spelled out
    X = np.asarray(a.X, dtype=np.float64)
    Xs = (X - X.mean(0)) / X.std(0)  # standardize=True
    obs = pd.DataFrame({"batch": a.obs["Metadata_Batch"].astype(str).astype("category").to_numpy()}, index=a.obs_names)
    tmp = ad.AnnData(X=np.ascontiguousarray(Xs, dtype=np.float32), obs=obs)
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scvi.settings.seed = 3
        CYTOVI.setup_anndata(tmp, batch_key="batch")
        model = CYTOVI(tmp, n_hidden=128, n_latent=None, n_layers=1)
        model.train(max_epochs=2, batch_size=128, accelerator="cpu", devices="auto", early_stopping=True,
                    enable_progress_bar=False, n_epochs_kl_warmup=step["n_epochs_kl_warmup"])
        Z = model.get_latent_representation()
    finally:
        torch.set_num_threads(before)
    assert step["n_epochs_kl_warmup"] == 1  # half of 2 epochs: the wrapper's deviation from CytoVI's 400
    np.testing.assert_allclose(a.obsm["X_scvi"], Z, rtol=1e-5, atol=1e-5)
