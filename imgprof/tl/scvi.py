"""Variational-autoencoder integration with scvi-tools, using a Gaussian likelihood.

scVI's default model (``scvi.model.SCVI``) has a count likelihood (ZINB/NB),
which is wrong for normalised, signed morphology features. scvi-tools ≥ 1.4
ships ``scvi.external.CYTOVI`` for continuous cytometry-like features: a VAE
whose decoder outputs a Normal (or Beta) distribution per feature, with the
batch injected into the decoder (so the latent space is freed from it) and a
mixture-of-Gaussians prior. CytoVI's own pipeline expects arcsinh-transformed,
min-max-scaled protein intensities, but with ``protein_likelihood="normal"``
(its default) the model places no range constraint on the input; we feed it
the profiles standardised per feature (``standardize=True``), which is the
scale a Normal likelihood with unit-order variances suits.

torch and scvi-tools are imported only when this function runs; install them
with ``pip install imgprof[scvi]``. Training uses the GPU when one is
available (``accelerator="auto"``) and the CPU otherwise.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.docs import doc_params
from .._core.validation import check_int, finish, start
from .integrate import INTEGRATION_DOC, prepare, store_correction


def default_max_epochs(n_obs: int) -> int:
    """scvi-tools' heuristic: ``min(round(20000 / n_obs * 400), 400)`` epochs."""
    return int(max(1, min(round(20000 / max(n_obs, 1) * 400), 400)))


def kl_warmup_epochs(max_epochs: int) -> int:
    """KL warm-up: half the training, at most CytoVI's 400 epochs.

    CytoVI warms the KL weight up over 400 epochs whatever ``max_epochs`` is,
    so shorter runs never reach the full KL term and the latent space keeps
    batch information (on the simulator, 100 epochs: same-batch 10-NN share
    0.64 with 400 warm-up epochs vs 0.39 with 50).
    """
    return int(min(400, max(1, round(max_epochs / 2))))


def _import_scvi():
    try:
        import scvi
        from scvi.external import CYTOVI
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ip.tl.scvi needs scvi-tools >= 1.4 (scvi.external.CYTOVI) and torch: pip install 'imgprof[scvi]'."
        ) from e
    return scvi, CYTOVI


def _standardize(X: np.ndarray, use_rep: str) -> np.ndarray:
    """z-score every column; constant columns are refused (they would divide by 0)."""
    sd = X.std(axis=0)
    bad = np.flatnonzero(sd == 0)
    if bad.size:
        raise ValueError(
            f"scvi: {bad.size} column(s) of {use_rep!r} are constant (e.g. index {bad[:5].tolist()}); "
            "drop them first (ip.pp.feature_select) or pass standardize=False."
        )
    return (X - X.mean(axis=0)) / sd


def _train(model: Any, train_kwargs: dict[str, Any], num_threads: int | None) -> tuple[np.ndarray, float, int]:
    """Train with ``num_threads`` torch threads (restored afterwards); ``(latent, seconds, threads before)``."""
    import torch

    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        t0 = time.perf_counter()
        model.train(**train_kwargs)
        seconds = time.perf_counter() - t0
        Z = model.get_latent_representation()
    finally:
        torch.set_num_threads(threads_before)
    return Z, seconds, threads_before


def _device(model: Any) -> str:
    """The device the model trained on (with the GPU's name)."""
    import torch

    device = str(next(model.module.parameters()).device)
    if device.startswith("cuda"):
        device = f"{device} ({torch.cuda.get_device_name()})"
    return device


@doc_params(**INTEGRATION_DOC)
def scvi(
    adata: AnnData, batch_key: str, *,
    n_latent: int | None = None,
    n_hidden: int = 128,
    n_layers: int = 1,
    max_epochs: int | None = None,
    batch_size: int = 128,
    standardize: bool = True,
    accelerator: str = "auto",
    devices: int | str = "auto",
    early_stopping: bool = True,
    progress_bar: bool = False,
    num_threads: int | None = None,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
    train_kwargs: dict[str, Any] | None = None,
    return_model: bool = False,
    use_rep: str = "X", key_added: str = "X_scvi", copy: bool = False,
) -> Any:
    """Learn a batch-corrected latent space with a Gaussian-likelihood VAE (scvi-tools' CytoVI).

    Parameters
    ----------
    {adata_batch}
    n_latent, n_hidden, n_layers
        Network size; ``n_latent=None`` uses CytoVI's heuristic (half the
        features, clamped to 10–20).
    max_epochs
        Training epochs; default scvi-tools' heuristic
        (``min(round(20000 / n_obs × 400), 400)``). The KL weight warms up
        over half of them (at most 400; :func:`kl_warmup_epochs`); override
        with ``train_kwargs={"n_epochs_kl_warmup": ...}``.
    batch_size
        Minibatch size.
    standardize
        z-score every feature over all observations before training.
    accelerator, devices
        Lightning settings: ``"auto"`` trains on a GPU when present, else the CPU.
    early_stopping
        Stop on the validation loss (CytoVI's default, patience 30).
    progress_bar
        Show Lightning's progress bar.
    num_threads
        CPU threads for torch during this call (restored afterwards); default
        torch's own. On a busy machine 1 thread can be far faster than
        several (torch's OpenMP threads spin when cores are oversubscribed).
    seed
        ``scvi.settings.seed`` for reproducibility.
    model_kwargs, train_kwargs
        Extra arguments to ``CYTOVI(...)`` and ``CYTOVI.train(...)``.
    return_model
        Return the trained model (with ``copy=True``: ``(adata, model)``).
    use_rep
        ``"X"`` (default) or an ``.obsm`` key.
    {key_added}
    {copy}

    Returns
    -------
    None, the copy, or the model (see ``return_model``). Sets
    ``adata.obsm[key_added]``; epochs, seconds per epoch and the device go
    to the provenance log.

    {example_cmqtl}
    >>> ip.tl.scvi(adata, "Metadata_Batch", max_epochs=2)  # doctest: +SKIP
    >>> adata.obsm["X_scvi"].shape[0]  # doctest: +SKIP
    768
    """
    from .._core.optional import require_methods

    require_methods(["scvi"], purpose="ip.tl.scvi")  # before any work, with the pip command
    check_int(n_latent, "n_latent", min_value=1, allow_none=True)
    check_int(n_hidden, "n_hidden", min_value=1)
    check_int(n_layers, "n_layers", min_value=1)
    check_int(batch_size, "batch_size", min_value=2)
    check_int(num_threads, "num_threads", min_value=1, allow_none=True)
    check_int(max_epochs, "max_epochs", min_value=1, allow_none=True)
    X, codes, levels = prepare(adata, batch_key, use_rep)
    if standardize:
        X = _standardize(X, use_rep)
    scvi_mod, CYTOVI = _import_scvi()

    adata = start(adata, copy)
    scvi_mod.settings.seed = seed
    epochs = int(max_epochs) if max_epochs is not None else default_max_epochs(adata.n_obs)
    obs = pd.DataFrame({"batch": pd.Categorical.from_codes(codes, categories=levels)}, index=adata.obs_names.copy())
    tmp = AnnData(X=np.ascontiguousarray(X, dtype=np.float32), obs=obs)
    CYTOVI.setup_anndata(tmp, batch_key="batch")
    model = CYTOVI(tmp, n_hidden=n_hidden, n_latent=n_latent, n_layers=n_layers, **(model_kwargs or {}))
    tk = dict(max_epochs=epochs, batch_size=batch_size, accelerator=accelerator, devices=devices,
              early_stopping=early_stopping, enable_progress_bar=progress_bar,
              n_epochs_kl_warmup=kl_warmup_epochs(epochs))
    tk.update(train_kwargs or {})
    Z, seconds, threads_before = _train(model, tk, num_threads)
    trained = int(model.trainer.current_epoch) if getattr(model, "trainer", None) is not None else epochs
    trained = max(trained, 1)
    params = dict(n_latent=model.module.n_latent, n_hidden=n_hidden,
                  n_layers=n_layers, max_epochs=epochs, batch_size=batch_size, standardize=standardize,
                  accelerator=accelerator, early_stopping=early_stopping, seed=seed,
                  n_epochs_kl_warmup=tk["n_epochs_kl_warmup"], num_threads=num_threads,
                  model_kwargs=model_kwargs or {}, train_kwargs=train_kwargs or {})
    store_correction(adata, Z, function="tl.scvi", batch_key=batch_key, levels=levels, params=params, use_rep=use_rep,
                     key_added=key_added, kind="embedding", model="scvi.external.CYTOVI", epochs_trained=trained,
                     seconds_train=round(seconds, 3), seconds_per_epoch=round(seconds / trained, 3), device=_device(model),
                     torch_threads=int(num_threads) if num_threads is not None else threads_before)
    if return_model:
        return (finish(adata, copy), model) if copy else model
    return finish(adata, copy)
