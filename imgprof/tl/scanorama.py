"""Scanorama (Hie et al. 2019) panoramic stitching of batches."""

from __future__ import annotations

from typing import Any

import numpy as np
from anndata import AnnData

from .._core.docs import doc_params
from .._core.validation import check_float, check_int, finish, start
from .integrate import INTEGRATION_DOC, prepare, store_correction


@doc_params(**INTEGRATION_DOC)
def scanorama(
    adata: AnnData, batch_key: str, *,
    knn: int = 20,
    sigma: float = 15.0,
    approx: bool = True,
    alpha: float = 0.1,
    batch_size: int = 5000,
    cos_norm: bool = True,
    use_rep: str = "X_pca", key_added: str = "X_scanorama", add_layer: bool = False, copy: bool = False,
    **kwargs: Any,
) -> AnnData | None:
    """Integrate batches with :func:`scanorama.assemble`.

    With ``cos_norm=False`` this is the computation of
    :func:`scanpy.external.pp.scanorama_integrate` (tested), without its
    requirement that batches be contiguous rows: rows are grouped by batch
    (in order of first appearance), corrected, and put back in their
    original order. By default (``cos_norm=True``) every row of the
    representation (the PCs, by default) is first scaled to unit length; on
    simulated profiles this keeps mechanism classes apart better than the raw
    PCs (see ``docs/tl.md``). This default is neither scanpy's wrapper (no
    scaling) nor Scanorama's own ``integrate`` pipeline, which scales the rows
    of the feature matrix *before* its own SVD (``dimred=100``) and stitches
    those components.

    Parameters
    ----------
    {adata_batch}
    knn, sigma, approx, alpha, batch_size
        :func:`scanorama.assemble` parameters (same defaults).
    cos_norm
        Scale each row to unit L2 norm before stitching.
    use_rep
        Embedding to correct (``"X_pca"`` default) or ``"X"``.
    {key_added}
    {add_layer}
    {copy}
    **kwargs
        Other :func:`scanorama.assemble` arguments.

    {returns_obsm}

    {example_cmqtl}
    >>> ip.tl.pca(adata, n_comps=30)
    >>> ip.tl.scanorama(adata, "Metadata_Batch")
    >>> adata.obsm["X_scanorama"].shape
    (768, 30)
    """
    from .._core.optional import require

    require("scanorama", extra="integration", purpose="ip.tl.scanorama")
    check_int(knn, "knn", min_value=1)
    check_float(sigma, "sigma", min_value=0.0, include_min=False)
    check_float(alpha, "alpha", min_value=0.0, max_value=1.0)
    check_int(batch_size, "batch_size", min_value=1)
    X, codes, levels = prepare(adata, batch_key, use_rep, add_layer=add_layer)
    import scanorama as _scanorama

    adata = start(adata, copy)
    # Batches in order of first appearance, as scanpy's wrapper names them.
    _, first = np.unique(codes, return_index=True)
    order = np.argsort(first)
    rows = [np.flatnonzero(codes == b) for b in order]
    if cos_norm:
        norm = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.where(norm > 0, norm, 1.0)
    datasets = [np.array(X[r], copy=True) for r in rows]  # dtype kept, as scanpy's wrapper
    integrated = _scanorama.assemble(
        datasets, knn=knn, sigma=sigma, approx=approx, alpha=alpha,
        ds_names=[levels[b] for b in order], batch_size=batch_size, verbose=kwargs.pop("verbose", False), **kwargs,
    )
    Y = np.empty((adata.n_obs, integrated[0].shape[1]), dtype=np.result_type(*[np.asarray(p).dtype for p in integrated]))
    for r, part in zip(rows, integrated):
        Y[r] = np.asarray(part.toarray() if hasattr(part, "toarray") else part)
    params = dict(knn=knn, sigma=sigma, approx=approx, alpha=alpha, batch_size=batch_size, cos_norm=cos_norm, **kwargs)
    store_correction(adata, Y, function="tl.scanorama", batch_key=batch_key, levels=levels, params=params, use_rep=use_rep,
                     key_added=key_added, add_layer=add_layer)
    return finish(adata, copy)
