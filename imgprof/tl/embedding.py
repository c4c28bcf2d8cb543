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

import logging
import warnings
from typing import Any, cast

from anndata import AnnData

from .._core.docs import doc_params
from .._core.progress import progress_message
from .._core.provenance import log_step
from .._core.validation import (
    check_adata,
    check_bool,
    check_finite,
    check_float,
    check_int,
    check_new_obs_key,
    finish,
    get_matrix,
    is_dask,
    start,
)
from .integrate import EXAMPLE_CMQTL


@doc_params("copy", example_cmqtl=EXAMPLE_CMQTL)
def pca(
    adata: AnnData,
    n_comps: int | None = 50,
    *,
    layer: str | None = None,
    zero_center: bool = True,
    svd_solver: str | None = None,
    random_state: int = 0, key_added: str | None = None, copy: bool = False,
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
    {copy}
    **kwargs
        Passed to :func:`scanpy.pp.pca`.

    Returns
    -------
    AnnData or None
        ``None`` (``copy=False``) or the modified copy; writes ``obsm["X_pca"]``,
        ``varm["PCs"]`` and ``uns["pca"]`` (variance ratios), as scanpy. A capped ``n_comps`` is warned about;
        the provenance records the value used and the one requested.

    {example_cmqtl}
    >>> ip.tl.pca(adata, n_comps=20)
    >>> adata.obsm["X_pca"].shape
    (768, 20)
    """
    n_comps = check_int(n_comps, "n_comps", min_value=1, allow_none=True)
    check_bool(zero_center, "zero_center")
    check_adata(adata)
    X = get_matrix(adata, layer=layer)
    what = f"adata.layers[{layer!r}]" if layer else "adata.X"
    check_finite(X, what=what, var_names=list(map(str, adata.var_names)))
    cap = min(adata.n_obs, adata.n_vars) - 1
    if cap < 1:
        raise ValueError(f"pca: need at least 2 observations and 2 features, got shape {adata.shape}.")
    n = cap if n_comps is None else min(n_comps, cap)
    if n_comps is not None and n_comps > cap:
        warnings.warn(
            f"pca: n_comps={n_comps} is more than the data allow (min(n_obs, n_vars) - 1 = {cap}); using n_comps={n}.",
            UserWarning,
            stacklevel=2,
        )
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
    log_step(adata, "tl.pca", dict(n_comps=n, n_comps_requested=n_comps, layer=layer, zero_center=zero_center,
                                   svd_solver=svd_solver, random_state=random_state, key_added=key_added, **kwargs),
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


#: Up to this many observations :func:`neighbors` finds the *exact* neighbours by brute
#: force (scikit-learn), which takes a few seconds at most and needs no compile step.
#: Above it, the approximate pynndescent search (scanpy's default) is used; its first
#: call in a process compiles numba kernels (30-60 s, announced by a log message).
EXACT_MAX_OBS = 10_000

_logger = logging.getLogger(__name__)
_announced_compile = False


def _announce_compile(n_obs: int) -> None:
    """Say once per process that the first approximate search compiles (no silent stall)."""
    global _announced_compile
    if _announced_compile:
        return
    _announced_compile = True
    _logger.warning(
        "ip.tl.neighbors: approximate kNN (pynndescent) on %d observations; the first call in a "
        "session compiles numba kernels, which can take 30-60 s once. Pass exact=True for a "
        "brute-force search instead.", n_obs,
    )


def _pynndescent_transformer(n_obs: int, n_neighbors: int, metric: str, random_state: int, metric_kwds: dict):
    """scanpy's default approximate-kNN transformer for ``n_obs >= 4096``, returning a ``csr_matrix``.

    With scipy >= 1.15, pynndescent returns a ``csr_array``, on which scanpy
    1.11 calls the removed ``getnnz`` and fails; this subclass converts the
    result (``imgprof._core.compat`` patches scanpy for direct
    ``sc.pp.neighbors`` calls too). Parameters are scanpy's (UMAP's) defaults,
    so the graph is the one scanpy would build.
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


@doc_params("copy", example_cmqtl=EXAMPLE_CMQTL)
def neighbors(
    adata: AnnData,
    n_neighbors: int = 15,
    *,
    use_rep: str | None = None,
    n_pcs: int | None = None,
    metric: str = "cosine",
    exact: bool | None = None,
    random_state: int = 0, key_added: str | None = None, copy: bool = False,
    **kwargs: Any,
) -> AnnData | None:
    """k-nearest-neighbour graph (:func:`scanpy.pp.neighbors`), cosine by default.

    Profiles are compared by cosine similarity (or correlation) in the
    profiling field, so ``metric="cosine"`` is the default. Up to
    :data:`EXACT_MAX_OBS` (10,000) observations the neighbours are exact
    (brute force, a few seconds at most, no compile step); above it scanpy's
    approximate pynndescent search is used, whose first call in a session
    compiles numba kernels (30-60 s once; a log message says so, and a line on
    stderr inside ``imgprof._core.progress.show_progress()``, as in ``imgprof run``). With scipy
    >= 1.15 scanpy 1.11's own pynndescent call fails (``csr_array`` has no
    ``getnnz``), so this wrapper passes scanpy the same pynndescent
    transformer, with scanpy's settings, made to return a ``csr_matrix``.

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
    exact
        ``True``: brute-force exact neighbours; ``False``: approximate
        (pynndescent, as scanpy from 4,096 cells); ``None`` (default): exact up
        to :data:`EXACT_MAX_OBS` observations. Ignored when ``transformer=`` is
        passed.
    {copy}
    **kwargs
        Passed to :func:`scanpy.pp.neighbors` (e.g. ``transformer=``, ``method=``).

    Returns
    -------
    AnnData or None
        ``None`` (``copy=False``) or the modified copy. Writes
        ``obsp["distances"]``, ``obsp["connectivities"]`` and ``uns["neighbors"]``
        (prefixed by ``key_added`` when given), as scanpy does. A capped ``n_neighbors``
        is warned about; the provenance records the value used and the one requested.

    {example_cmqtl}
    >>> ip.tl.pca(adata, n_comps=20)
    >>> ip.tl.neighbors(adata)
    >>> "connectivities" in adata.obsp
    True
    """
    n_neighbors = cast(int, check_int(n_neighbors, "n_neighbors", min_value=2))
    n_pcs = check_int(n_pcs, "n_pcs", min_value=1, allow_none=True)
    if not isinstance(metric, str) and not callable(metric):
        raise TypeError(f"metric must be a metric name (e.g. 'cosine', 'euclidean') or a callable, got {metric!r}.")
    check_adata(adata)
    use_rep = _check_rep(adata, use_rep)
    if adata.n_obs < 3:
        raise ValueError(f"neighbors: need at least 3 observations, got {adata.n_obs}.")
    if exact not in (None, True, False):
        raise TypeError(f"neighbors: exact must be True, False or None, got {exact!r}.")
    k = int(min(n_neighbors, adata.n_obs - 1))
    if k < n_neighbors:
        warnings.warn(
            f"neighbors: n_neighbors={n_neighbors} is more than the {adata.n_obs - 1} other observations; using "
            f"n_neighbors={k}.",
            UserWarning,
            stacklevel=2,
        )
    import scanpy as sc

    adata = start(adata, copy)
    call = dict(kwargs)
    use_exact = exact if exact is not None else adata.n_obs <= EXACT_MAX_OBS
    custom = call.get("transformer") is not None or not call.get("knn", True) or call.get("method") == "rapids"
    how = "custom"
    if not custom:
        if use_exact:
            call["transformer"] = "sklearn"  # scanpy's own brute-force exact path (as below 4,096 cells)
            how = "exact"
        else:
            kwds = dict(call.pop("metric_kwds", None) or {})
            _announce_compile(adata.n_obs)
            progress_message(f"tl.neighbors: approximate kNN (pynndescent) on {adata.n_obs} observations "
                             "(the first call in a session compiles numba kernels, 30-60 s once)")
            call["transformer"] = _pynndescent_transformer(adata.n_obs, k, metric, random_state, kwds)
            how = "approximate"
    sc.pp.neighbors(adata, n_neighbors=k, use_rep=use_rep, n_pcs=n_pcs, metric=metric,
                    random_state=random_state, key_added=key_added, **call)
    log_step(adata, "tl.neighbors", dict(n_neighbors=k, n_neighbors_requested=n_neighbors, use_rep=use_rep, n_pcs=n_pcs,
                                         metric=metric, exact=exact, random_state=random_state, key_added=key_added, **kwargs),
             search=how)
    return finish(adata, copy)


#: Docstring text shared by the steps that read the neighbour graph (:func:`leiden`, :func:`umap`).
GRAPH_DOC: dict[str, str] = {
    "graph_adata": "adata\n    Profiles with a neighbour graph (:func:`neighbors`).",
    "neighbors_key": "neighbors_key\n    Key of the neighbour graph in ``.uns`` (default ``\"neighbors\"``).",
    "random_state": "random_state\n    Seed.",
    "example_cmqtl": EXAMPLE_CMQTL,
}


def _is_own_clustering(adata: AnnData, key: str) -> bool:
    """True when ``obs[key]`` was written by an earlier Leiden run (rerunning may replace it)."""
    params = adata.uns.get(key)
    return isinstance(params, dict) and "params" in params and key in adata.obs.columns


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


@doc_params("copy", **GRAPH_DOC)
def leiden(
    adata: AnnData,
    resolution: float = 1.0,
    *,
    neighbors_key: str | None = None,
    n_iterations: int = 2,
    overwrite: bool = False,
    random_state: int = 0, key_added: str = "leiden", copy: bool = False,
    **kwargs: Any,
) -> AnnData | None:
    """Leiden clusters with igraph (:func:`scanpy.tl.leiden` ``flavor="igraph"``).

    The igraph implementation is scanpy's future default and much faster
    than ``leidenalg`` on large graphs; ``n_iterations=2`` and an undirected
    graph are what scanpy recommends with it.

    Parameters
    ----------
    {graph_adata}
    resolution
        Leiden resolution, a number > 0 (higher: more clusters).
    {neighbors_key}
    n_iterations
        Leiden iterations (``-1``: until convergence), an integer.
    overwrite
        Allow ``key_added`` to replace an existing ``.obs`` column.
    {random_state}
    key_added
        ``.obs`` column receiving the cluster labels. An existing column other
        than a previous Leiden result is refused unless ``overwrite=True``.
    {copy}
    **kwargs
        Passed to :func:`scanpy.tl.leiden`.

    Returns
    -------
    AnnData or None
        ``None`` (``copy=False``) or the modified copy; writes ``obs[key_added]``
        (categorical) and ``uns[key_added]``.

    {example_cmqtl}
    >>> ip.tl.pca(adata, n_comps=20)
    >>> ip.tl.neighbors(adata)
    >>> ip.tl.leiden(adata)
    >>> adata.obs["leiden"].nunique() > 1
    True
    """
    resolution = cast(float, check_float(resolution, "resolution", min_value=0.0, include_min=False))
    n_iterations = cast(int, check_int(n_iterations, "n_iterations", min_value=-1))
    if n_iterations == 0:
        raise ValueError("n_iterations must be a positive integer or -1 (until convergence), got 0.")
    check_bool(overwrite, "overwrite")
    check_adata(adata)
    _check_graph(adata, neighbors_key, "leiden")
    if not (overwrite or _is_own_clustering(adata, key_added)):
        check_new_obs_key(adata, key_added, param="key_added")
    import scanpy as sc

    adata = start(adata, copy)
    sc.tl.leiden(adata, resolution=resolution, key_added=key_added, neighbors_key=neighbors_key,
                 flavor="igraph", directed=False, n_iterations=n_iterations, random_state=random_state, **kwargs)
    log_step(adata, "tl.leiden", dict(resolution=resolution, key_added=key_added, neighbors_key=neighbors_key,
                                      n_iterations=n_iterations, random_state=random_state, flavor="igraph", **kwargs),
             n_clusters=int(adata.obs[key_added].nunique()))
    return finish(adata, copy)


@doc_params("copy", **GRAPH_DOC)
def umap(
    adata: AnnData,
    *,
    neighbors_key: str | None = None,
    min_dist: float = 0.5,
    spread: float = 1.0,
    n_components: int = 2,
    random_state: int = 0, key_added: str | None = None, copy: bool = False,
    **kwargs: Any,
) -> AnnData | None:
    """UMAP of the neighbour graph (:func:`scanpy.tl.umap`), stored as ``obsm["X_umap"]``.

    Parameters
    ----------
    {graph_adata}
    {neighbors_key}
    min_dist, spread
        UMAP's layout parameters (``min_dist >= 0``, ``spread > 0``).
    n_components
        Dimensions of the embedding, an integer >= 1.
    {random_state}
    key_added
        ``.obsm`` key of the embedding (default ``"X_umap"``).
    {copy}
    **kwargs
        Passed to :func:`scanpy.tl.umap`.

    Returns
    -------
    AnnData or None
        ``None`` (``copy=False``) or the modified copy; writes ``obsm["X_umap"]``.

    {example_cmqtl}
    >>> ip.tl.pca(adata, n_comps=20)
    >>> ip.tl.neighbors(adata)
    >>> ip.tl.umap(adata)
    >>> adata.obsm["X_umap"].shape
    (768, 2)
    """
    min_dist = cast(float, check_float(min_dist, "min_dist", min_value=0.0))
    spread = cast(float, check_float(spread, "spread", min_value=0.0, include_min=False))
    n_components = cast(int, check_int(n_components, "n_components", min_value=1))
    check_adata(adata)
    _check_graph(adata, neighbors_key, "umap")
    if n_components >= adata.n_obs:
        raise ValueError(f"n_components={n_components} must be smaller than the number of observations ({adata.n_obs}).")
    import scanpy as sc

    adata = start(adata, copy)
    kw = dict(min_dist=min_dist, spread=spread, n_components=n_components, neighbors_key=neighbors_key,
              random_state=random_state, **kwargs)
    if key_added is not None:
        kw["key_added"] = key_added
    sc.tl.umap(adata, **kw)
    log_step(adata, "tl.umap", dict(kw, key_added=key_added))
    return finish(adata, copy)
