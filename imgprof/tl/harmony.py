"""Harmony integration through harmonypy (Korsunsky et al. 2019)."""

from __future__ import annotations

from typing import Any

from anndata import AnnData

from .._core.docs import doc_params
from .._core.validation import check_float, check_int, finish, start
from .integrate import INTEGRATION_DOC, prepare, store_correction


@doc_params(**INTEGRATION_DOC)
def harmony(
    adata: AnnData, batch_key: str, *,
    theta: float | None = None,
    sigma: float = 0.1,
    nclust: int | None = None,
    max_iter_harmony: int = 10,
    random_state: int = 0,
    verbose: bool = False,
    use_rep: str = "X_pca", key_added: str = "X_harmony", copy: bool = False,
    **kwargs: Any,
) -> AnnData | None:
    """Correct an embedding for batch with Harmony.

    Calls :func:`harmonypy.run_harmony` on ``adata.obsm[use_rep]`` with
    ``adata.obs`` as metadata, so the result is exactly what harmonypy gives
    when called directly with the same parameters (tested).

    Parameters
    ----------
    {adata_batch}
    theta, sigma, nclust, max_iter_harmony, random_state, verbose
        harmonypy parameters (same defaults, except ``verbose=False``).
    use_rep
        Embedding to correct (``"X_pca"`` by default; ``"X"`` for the features).
    {key_added}
    {copy}
    **kwargs
        Other :func:`harmonypy.run_harmony` arguments (``lamb``, ``tau``,
        ``block_size``, ``ncores``...).

    Returns
    -------
    None, or the modified copy when ``copy=True``. Sets
    ``adata.obsm[key_added]`` (``n_obs × n_components``).

    {example_cmqtl}
    >>> ip.tl.pca(adata, n_comps=20)
    >>> ip.tl.harmony(adata, "Metadata_Batch")
    >>> adata.obsm["X_harmony"].shape
    (768, 20)
    """
    check_float(sigma, "sigma", min_value=0.0, include_min=False)
    check_int(nclust, "nclust", min_value=1, allow_none=True)
    check_int(max_iter_harmony, "max_iter_harmony", min_value=1)
    if theta is not None and not hasattr(theta, "__len__"):  # one value, or one per batch key
        check_float(theta, "theta", min_value=0.0)
    X, codes, levels = prepare(adata, batch_key, use_rep)
    import harmonypy

    adata = start(adata, copy)
    out = harmonypy.run_harmony(
        X,
        adata.obs,
        batch_key,
        theta=theta,
        sigma=sigma,
        nclust=nclust,
        max_iter_harmony=max_iter_harmony,
        random_state=random_state,
        verbose=verbose,
        **kwargs,
    )
    Z = out.Z_corr
    if Z.shape[0] != adata.n_obs:  # harmonypy < 0.2 returned d × N
        Z = Z.T
    params = dict(theta=theta, sigma=sigma, nclust=nclust, max_iter_harmony=max_iter_harmony, random_state=random_state,
                  **kwargs)
    store_correction(adata, Z, function="tl.harmony", batch_key=batch_key, levels=levels, params=params, use_rep=use_rep,
                     key_added=key_added, n_iterations=len(out.objective_harmony))
    return finish(adata, copy)
