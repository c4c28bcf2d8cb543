"""Run the correction methods of :mod:`imgprof.tl` and benchmark their outputs in one call."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd
from anndata import AnnData

from .._core.docs import doc_params
from .._core.store import store
from .._core.validation import as_list, check_choice, check_obs_keys
from ._sets import DEFAULT_BATCH, DEFAULT_BIO, BatchCorrection, BioConservation


def _check_methods(methods: list[str], method_kwargs: dict[str, dict[str, Any]]) -> None:
    from ..tl.integrate import INTEGRATIONS

    if not methods:
        raise ValueError("methods: give at least one method name (see ip.tl.METHODS).")
    unknown = [m for m in methods if m.lower() not in INTEGRATIONS]
    if unknown:
        raise ValueError(f"methods: unknown method(s) {unknown}; choose from {list(INTEGRATIONS.names())}.")
    extra = set(method_kwargs) - {m.lower() for m in methods}
    if extra:
        raise ValueError(f"method_kwargs names method(s) {sorted(extra)} that are not in methods={methods}.")


def _integrate_all(adata: AnnData, methods: list[str], batch_key: str, method_kwargs: dict[str, dict[str, Any]],
                   on_error: str, progress_bar: bool) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """Run each method; return the keys written, their timings and the keys of methods starting from ``X_pca``."""
    from ..tl.integrate import INTEGRATIONS, integrate
    from .benchmarker import progress_iter

    keys, times, pca_based = [], [], []
    it = progress_iter(methods, progress_bar, desc="Correction methods")
    for m in it:
        if hasattr(it, "set_postfix_str"):
            it.set_postfix_str(m)
        key, kw = f"X_{m.lower()}", method_kwargs.get(m.lower(), {})
        t = time.perf_counter()
        try:
            integrate(adata, m, batch_key, key_added=key, **kw)
        except Exception as e:
            if on_error == "raise":
                raise
            warnings.warn(f"run_methods: method {m!r} failed and is skipped: {type(e).__name__}: {e}", stacklevel=3)
            continue
        times.append({"embedding": key, "step": "integration", "seconds": time.perf_counter() - t})
        keys.append(key)
        if kw.get("use_rep", INTEGRATIONS.get(m)["default_use_rep"]) == "X_pca":
            pca_based.append(key)
    if not keys:
        raise RuntimeError("run_methods: every method failed; nothing to benchmark.")
    return keys, times, pca_based


@doc_params("batch_key", "label_key")
def run_methods(
    adata: AnnData,
    methods: Sequence[str] = ("none", "combat", "harmony"),
    batch_key: str = "Metadata_Batch",
    label_key: str = "Metadata_moa",
    *,
    negcon: Any = None,
    method_kwargs: dict[str, dict[str, Any]] | None = None,
    bio_conservation_metrics: BioConservation | None = DEFAULT_BIO,
    batch_correction_metrics: BatchCorrection | None = DEFAULT_BATCH,
    min_max_scale: bool = False,
    on_error: str = "raise",
    progress_bar: bool = True,
    key_added: str = "bench",
    pca_baseline: bool = True,
    **benchmarker_kwargs: Any,
) -> pd.DataFrame:
    """Run batch-correction methods of :func:`imgprof.tl.integrate` and benchmark them in one go.

    Each method writes ``adata.obsm[f"X_{method}"]``; then a
    :class:`Benchmarker` scores all of them. A 50-component PCA of ``adata.X``
    (``adata.obsm["X_pca"]``, via :func:`imgprof.tl.pca`) is computed first if
    missing: harmony and scanorama start from it and PCR comparison uses it as
    the uncorrected reference.

    Parameters
    ----------
    adata
        Profiles (normalized and feature-selected).
    methods
        Names accepted by :func:`imgprof.tl.integrate` (``"none"`` is the uncorrected baseline).
    {batch_key}
    {label_key}
    negcon
        Negative controls for mAP negcon (query string, mask or obs names).
    method_kwargs
        Extra parameters per method, e.g. ``{"scvi": {"max_epochs": 5}}``.
    bio_conservation_metrics, batch_correction_metrics
        Metric sets.
    min_max_scale
        Scale metrics across methods before aggregating.
    on_error
        ``"raise"``, or ``"warn"`` to skip a method that fails (it is named in the warning).
    progress_bar
        tqdm progress over methods and metrics.
    key_added
        ``.uns`` key of the tidy results, timings and flags (``adata.uns[key_added]``).
    pca_baseline
        Also benchmark the uncorrected ``"X_pca"`` when a method starts from it
        (harmony, scanorama), so those are compared with a baseline in their own
        space (``"none"`` is the baseline of the methods working on ``X``).
    **benchmarker_kwargs
        Passed to :class:`Benchmarker` (``map_groups_key``, ``neighbors_method``, ``n_jobs``...).

    Returns
    -------
    Tidy results (``Benchmarker.get_results(tidy=True)``), ``embedding`` named ``X_<method>``
    (plus ``"X_pca"``, see ``pca_baseline``). The Benchmarker's guardrail findings
    (:attr:`Benchmarker.flags`) go to ``adata.uns[key_added]["flags"]``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> res = ip.bench.run_methods(adata, ["none", "combat"], "Metadata_Batch", "Metadata_target_gene",
    ...                            negcon="Metadata_target_gene == 'CONTROL'", progress_bar=False)
    >>> sorted(res["embedding"].unique())
    ['X_combat', 'X_none']
    """
    from .._core.optional import require_methods
    from ..tl.embedding import pca
    from .benchmarker import Benchmarker

    methods = as_list(methods)
    method_kwargs = dict(method_kwargs or {})
    _check_methods(methods, method_kwargs)
    check_choice(on_error, "on_error", ("raise", "warn"))
    check_obs_keys(adata, [batch_key, label_key], param="batch_key/label_key")
    require_methods(methods, purpose="ip.bench.run_methods")  # before any work, with the pip command
    if "X_pca" not in adata.obsm:
        pca(adata, n_comps=50)
    keys, times, pca_based = _integrate_all(adata, methods, batch_key, method_kwargs, on_error, progress_bar)
    if pca_baseline and pca_based and "X_pca" not in keys:
        keys.insert(0, "X_pca")  # like-for-like: the uncorrected PCA that harmony/scanorama start from
    bm = Benchmarker(
        adata, batch_key, label_key, keys, bio_conservation_metrics, batch_correction_metrics,
        pre_integrated_embedding_obsm_key="X_pca", negcon=negcon, progress_bar=progress_bar, **benchmarker_kwargs,
    )
    bm.benchmark()
    res = bm.get_results(min_max_scale=min_max_scale, tidy=True)
    timings = pd.concat([pd.DataFrame(times), bm.timings], ignore_index=True)
    store(adata, {"results": res.copy(), "timings": timings, "flags": bm.flags}, slot="uns", key_added=key_added,
          function="bench.run_methods",
          params={"methods": methods, "batch_key": batch_key, "label_key": label_key, "negcon": negcon,
                  "min_max_scale": min_max_scale, "method_kwargs": method_kwargs},
          embeddings=keys)
    return res
