"""Scanpy's PCA, neighbour graph, Leiden clustering and UMAP with defaults that suit profiles.

These are thin wrappers: the work is done by :func:`scanpy.pp.pca`,
:func:`scanpy.pp.neighbors`, :func:`scanpy.tl.leiden` (igraph flavour) and
:func:`scanpy.tl.umap`, which write the keys scanpy's plotting expects
(``obsm["X_pca"]``, ``uns["neighbors"]``, ``obs["leiden"]``,
``obsm["X_umap"]``), so ``sc.pl.umap(adata, color=...)`` works unchanged.
What the wrappers add: input checks with clear messages before any work,
profile-friendly defaults (cosine metric, the largest sensible number of
PCs, igraph Leiden), and a provenance entry.
"""

from __future__ import annotations

from typing import Any

from anndata import AnnData

from .._core.provenance import log_step
from .._core.validation import check_finite, finish, get_matrix, is_dask, start


def pca(
    adata: AnnData,
    n_comps: int | None = 50,
    *,
    layer: str | None = None,
    zero_center: bool = True,
    svd_solver: str | None = None,
    random_state: int = 0,
    key_added: str | None = None,
    copy: bool = False,
    **kwargs: Any,
) -> AnnData | None:
    """Principal components of the profiles (:func:`scanpy.pp.pca`).

    Parameters
    ----------
    adata
        Profiles; ``.X`` (or ``layer``) must be finite.
    n_comps
        Components; capped at ``min(n_obs, n_vars) - 1`` (profiles often have
        fewer wells than scanpy's default of 50 assumes). ``None`` → that cap.
    layer
        Use ``adata.layers[layer]`` instead of ``.X``.
    zero_center, svd_solver, random_state
        As in :func:`scanpy.pp.pca`.
    key_added
        Store under ``obsm[key_added]``/``varm[key_added]``/``uns[key_added]``
        (scanpy's ``X_pca``/``PCs``/``pca`` by default).
    copy
        Return a modified copy.
    **kwargs
        Passed to :func:`scanpy.pp.pca`.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> ip.tl.pca(adata, n_comps=20)
    >>> adata.obsm["X_pca"].shape
    (768, 20)
    """
    X = get_matrix(adata, layer=layer)
    what = f"adata.layers[{layer!r}]" if layer else "adata.X"
    check_finite(X, what=what, var_names=list(map(str, adata.var_names)))
    cap = min(adata.n_obs, adata.n_vars) - 1
    if cap < 1:
        raise ValueError(f"pca: need at least 2 observations and 2 features, got shape {adata.shape}.")
    n = cap if n_comps is None else int(min(n_comps, cap))
    if n < 1:
        raise ValueError(f"pca: n_comps must be >= 1, got {n_comps}.")
    import scanpy as sc

    adata = start(adata, copy)
    kw = dict(n_comps=n, zero_center=zero_center, random_state=random_state, layer=layer, **kwargs)
    if svd_solver is not None:
        kw["svd_solver"] = svd_solver
    if key_added is not None:
        kw["key_added"] = key_added
    dask_x = is_dask(X) and layer is None
    if dask_x and X.chunksize[1] != X.shape[1]:
        adata.X = X.rechunk({1: -1})  # scanpy's dask PCA needs whole rows per chunk (same values)
    sc.pp.pca(adata, **kw)
    if dask_x:
        _dask_pca_ddof1(adata, key_added or "pca")
    log_step(adata, "tl.pca", dict(n_comps=n, layer=layer, zero_center=zero_center, svd_solver=svd_solver,
                                   random_state=random_state, key_added=key_added, **kwargs),
             dask=is_dask(adata.X))
    return finish(adata, copy)


def _dask_pca_ddof1(adata: AnnData, key: str) -> None:
    """scanpy's dask PCA (covariance_eigh) reports variances with ddof=0; numpy's path (sklearn) ddof=1.

    Rescaled so that ``uns[key]['variance']`` is the same for a dask and a numpy ``.X``
    (the ratios and the coordinates already are).
    """
    import numpy as np

    info = adata.uns.get(key)
    n = adata.n_obs
    if isinstance(info, dict) and "variance" in info and n > 1:
        info["variance"] = np.asarray(info["variance"]) * (n / (n - 1))


def _check_rep(adata: AnnData, use_rep: str | None) -> str:
    if use_rep is None:
        use_rep = "X_pca" if "X_pca" in adata.obsm else "X"
    X = get_matrix(adata, use_rep=use_rep)
    if not is_dask(X):
        what = "adata.X" if use_rep == "X" else f"adata.obsm[{use_rep!r}]"
        check_finite(X, what=what)
    return use_rep


def _pynndescent_transformer(n_obs: int, n_neighbors: int, metric: str, random_state: int, metric_kwds: dict):
    """scanpy's default approximate-kNN transformer for ``n_obs >= 4096``, returning a ``csr_matrix``.

    With scipy >= 1.15, pynndescent returns a ``csr_array``, on which scanpy
    1.11 calls the removed ``getnnz`` and fails; this subclass converts the
    result. Parameters are scanpy's (UMAP's) defaults, so the graph is the
    one scanpy would build.
    """
    import numpy as np
    import scanpy as sc
    import scipy.sparse as sparse
    from pynndescent import PyNNDescentTransformer

    class _CSRMatrixNNDescent(PyNNDescentTransformer):
        def fit_transform(self, X, y=None, **fit_params):
            return sparse.csr_matrix(super().fit_transform(X, y, **fit_params))

        def transform(self, X, y=None):
            return sparse.csr_matrix(super().transform(X, y))

    return _CSRMatrixNNDescent(
        n_neighbors=n_neighbors, metric=metric, metric_kwds=metric_kwds, random_state=random_state,
        n_jobs=sc.settings.n_jobs, n_trees=min(64, 5 + round(n_obs**0.5 / 20.0)), n_iters=max(5, round(np.log2(n_obs))),
    )


def neighbors(
    adata: AnnData,
    n_neighbors: int = 15,
    *,
    use_rep: str | None = None,
    n_pcs: int | None = None,
    metric: str = "cosine",
    random_state: int = 0,
    key_added: str | None = None,
    copy: bool = False,
    **kwargs: Any,
) -> AnnData | None:
    """k-nearest-neighbour graph (:func:`scanpy.pp.neighbors`), cosine by default.

    Profiles are compared by cosine similarity (or correlation) in the
    profiling field, so ``metric="cosine"`` is the default. From 4096
    observations scanpy uses pynndescent; with scipy >= 1.15 scanpy 1.11's
    own call then fails (``csr_array`` has no ``getnnz``), so this wrapper
    passes scanpy the same pynndescent transformer, with scanpy's settings,
    made to return a ``csr_matrix``.

    Parameters
    ----------
    adata
        Profiles.
    n_neighbors
        Neighbours per observation (capped at ``n_obs - 1``).
    use_rep
        Representation: an ``.obsm`` key such as ``"X_harmony"``, or ``"X"``;
        default ``"X_pca"`` when present, else ``"X"``.
    n_pcs, metric, random_state, key_added
        As in :func:`scanpy.pp.neighbors`.
    copy
        Return a modified copy.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> ip.tl.pca(adata, n_comps=20)
    >>> ip.tl.neighbors(adata)
    >>> "connectivities" in adata.obsp
    True
    """
    use_rep = _check_rep(adata, use_rep)
    if adata.n_obs < 3:
        raise ValueError(f"neighbors: need at least 3 observations, got {adata.n_obs}.")
    k = int(min(n_neighbors, adata.n_obs - 1))
    import scanpy as sc

    adata = start(adata, copy)
    # scanpy switches to pynndescent at 4096 observations (8192 for euclidean); see _pynndescent_transformer.
    call = dict(kwargs)
    approx = adata.n_obs >= (8192 if metric == "euclidean" else 4096)
    if approx and call.get("transformer") is None and call.get("knn", True) and call.get("method") != "rapids":
        call["transformer"] = _pynndescent_transformer(
            adata.n_obs, k, metric, random_state, dict(call.pop("metric_kwds", None) or {})
        )
    sc.pp.neighbors(adata, n_neighbors=k, use_rep=use_rep, n_pcs=n_pcs, metric=metric,
                    random_state=random_state, key_added=key_added, **call)
    log_step(adata, "tl.neighbors", dict(n_neighbors=k, use_rep=use_rep, n_pcs=n_pcs, metric=metric,
                                         random_state=random_state, key_added=key_added, **kwargs))
    return finish(adata, copy)


def _check_graph(adata: AnnData, neighbors_key: str | None, fn: str) -> None:
    key = neighbors_key or "neighbors"
    if key not in adata.uns:
        raise KeyError(
            f"{fn}: adata.uns[{key!r}] not found: compute the neighbour graph first with ip.tl.neighbors(adata"
            + (f", key_added={neighbors_key!r}" if neighbors_key else "") + ")."
        )
    ckey = adata.uns[key].get("connectivities_key", "connectivities")
    if ckey not in adata.obsp:
        raise KeyError(f"{fn}: adata.obsp[{ckey!r}] is missing; rerun ip.tl.neighbors(adata).")


def leiden(
    adata: AnnData,
    resolution: float = 1.0,
    *,
    key_added: str = "leiden",
    neighbors_key: str | None = None,
    n_iterations: int = 2,
    random_state: int = 0,
    copy: bool = False,
    **kwargs: Any,
) -> AnnData | None:
    """Leiden clusters with igraph (:func:`scanpy.tl.leiden` ``flavor="igraph"``).

    The igraph implementation is scanpy's future default and much faster
    than ``leidenalg`` on large graphs; ``n_iterations=2`` and an undirected
    graph are what scanpy recommends with it.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> ip.tl.pca(adata, n_comps=20)
    >>> ip.tl.neighbors(adata)
    >>> ip.tl.leiden(adata)
    >>> adata.obs["leiden"].nunique() > 1
    True
    """
    _check_graph(adata, neighbors_key, "leiden")
    import scanpy as sc

    adata = start(adata, copy)
    sc.tl.leiden(adata, resolution=resolution, key_added=key_added, neighbors_key=neighbors_key,
                 flavor="igraph", directed=False, n_iterations=n_iterations, random_state=random_state, **kwargs)
    log_step(adata, "tl.leiden", dict(resolution=resolution, key_added=key_added, neighbors_key=neighbors_key,
                                      n_iterations=n_iterations, random_state=random_state, flavor="igraph", **kwargs),
             n_clusters=int(adata.obs[key_added].nunique()))
    return finish(adata, copy)


def umap(
    adata: AnnData,
    *,
    min_dist: float = 0.5,
    spread: float = 1.0,
    n_components: int = 2,
    neighbors_key: str | None = None,
    random_state: int = 0,
    key_added: str | None = None,
    copy: bool = False,
    **kwargs: Any,
) -> AnnData | None:
    """UMAP of the neighbour graph (:func:`scanpy.tl.umap`), stored as ``obsm["X_umap"]``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> ip.tl.pca(adata, n_comps=20)
    >>> ip.tl.neighbors(adata)
    >>> ip.tl.umap(adata)
    >>> adata.obsm["X_umap"].shape
    (768, 2)
    """
    _check_graph(adata, neighbors_key, "umap")
    import scanpy as sc

    adata = start(adata, copy)
    kw = dict(min_dist=min_dist, spread=spread, n_components=n_components, neighbors_key=neighbors_key,
              random_state=random_state, **kwargs)
    if key_added is not None:
        kw["key_added"] = key_added
    sc.tl.umap(adata, **kw)
    log_step(adata, "tl.umap", dict(kw, key_added=key_added))
    return finish(adata, copy)
