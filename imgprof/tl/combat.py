"""ComBat (Johnson et al. 2007) through :func:`scanpy.pp.combat`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.docs import doc_params
from .._core.validation import as_list, check_obs_keys, finish, start
from .integrate import INTEGRATION_DOC, prepare, store_correction


def _check_variance(X: np.ndarray, codes: np.ndarray, levels: list[str], names: Sequence[str] | None) -> None:
    """ComBat divides by per-batch variances: refuse constant columns up front."""
    for b, level in enumerate(levels):
        sd = X[codes == b].std(axis=0)
        bad = np.flatnonzero(sd == 0)
        if bad.size:
            cols = [str(names[i]) for i in bad[:5]] if names is not None else bad[:5].tolist()
            raise ValueError(
                f"combat: {bad.size} column(s) are constant within batch {level!r}, e.g. {cols}; ComBat cannot "
                "estimate their batch scale. Drop constant features first (ip.pp.feature_select)."
            )


@doc_params(**INTEGRATION_DOC)
def combat(
    adata: AnnData, batch_key: str, *,
    covariates: str | Sequence[str] | None = None,
    use_rep: str = "X", key_added: str = "X_combat", add_layer: bool = False, copy: bool = False,
) -> AnnData | None:
    """Correct location and scale batch effects per feature with ComBat.

    Runs :func:`scanpy.pp.combat` on a temporary AnnData that holds
    ``adata.obsm[use_rep]`` (or ``.X``), so the values are exactly those of
    ``sc.pp.combat`` (tested), but ``adata.X`` is left untouched.

    Parameters
    ----------
    {adata_batch}
    covariates
        Biological ``.obs`` columns to protect (``mod`` in sva's ComBat).
    use_rep
        ``"X"`` (features, default) or an ``.obsm`` key.
    {key_added}
    {add_layer}
    {copy}

    {returns_obsm}

    {example_cmqtl}
    >>> ip.tl.combat(adata, "Metadata_Batch")
    >>> adata.obsm["X_combat"].shape == adata.shape
    True
    """
    X, codes, levels = prepare(adata, batch_key, use_rep, add_layer=add_layer)
    covariates = as_list(covariates)
    check_obs_keys(adata, covariates, param="covariates")
    if batch_key in covariates:
        raise ValueError(f"covariates must not contain batch_key={batch_key!r}.")
    names = list(map(str, adata.var_names)) if use_rep in (None, "X") else None
    _check_variance(X, codes, levels, names)
    import scanpy as sc

    adata = start(adata, copy)
    obs = adata.obs[[batch_key, *covariates]].copy()
    obs[batch_key] = pd.Categorical(obs[batch_key].astype(str))
    tmp = AnnData(X=np.array(X, dtype=np.float64, copy=True), obs=obs)
    Y = sc.pp.combat(tmp, key=batch_key, covariates=covariates or None, inplace=False)
    store_correction(adata, np.asarray(Y), function="tl.combat", batch_key=batch_key, levels=levels,
                     params=dict(covariates=covariates), use_rep=use_rep, key_added=key_added, add_layer=add_layer)
    return finish(adata, copy)
