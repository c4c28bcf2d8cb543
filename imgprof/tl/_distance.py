"""Distances between groups of single cells, and permutation tests of each perturbation against controls.

``ip.tl.distance`` computes one of :data:`DISTANCES` between every pair of
groups (a group × group matrix) and/or between each group and a reference
(the controls); ``ip.tl.distance_test`` runs an E-test style permutation test
of each perturbation against the controls; ``ip.tl.cluster_composition``
compares each perturbation's Leiden-cluster fractions with the controls'.

Definitions follow pertpy 1.0 (``pt.tl.Distance``) where the distance exists
there; the docs page *Single-cell distances* gives each formula and its
reference. Sums over all pairs of cells are computed block by block (BLAS
products of at most ``block × block`` cells, reduced on the fly by a numba
kernel), so no ``n × n`` matrix is ever held for all cells at once.
"""


from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.docs import doc_params
from .._core.store import store
from .._core.validation import finish, start
from ._cluster_composition import cluster_composition
from ._distance_groups import DIST_DOC, Grouped, cells_matrix, group_cells, labels_of, pair_index
from ._distance_metrics import DISTANCES, DistanceSpec, classifier_split, median_heuristic_gamma
from ._distance_test import TESTABLE, distance_test

__all__ = ["DISTANCES", "TESTABLE", "DistanceSpec", "Grouped", "classifier_split", "cluster_composition", "distance",
           "distance_test", "group_cells", "group_distances", "median_heuristic_gamma"]



def group_distances(
    X: np.ndarray,
    labels: Sequence | np.ndarray | pd.Series,
    metric: str = "edistance",
    *,
    reference: str | None = None,
    max_cells: int | None = None,
    seed: int = 0,
    **metric_kwds: Any,
) -> pd.DataFrame | pd.Series:
    """Distances between groups of cells of a matrix (the array-level form of :func:`distance`).

    Parameters
    ----------
    X
        Cells × features (an embedding such as PCA, or features).
    labels
        Group of each cell (missing labels are left out).
    metric
        A name in :data:`DISTANCES`.
    reference
        ``None``: the full group × group matrix. A group name: a Series of each
        group's distance to that group (the reference itself gets 0).
    max_cells
        Subsample groups larger than this (seeded by ``seed``).
    seed
        Seed of subsampling and of randomised distances (sliced projections, classifier split).
    **metric_kwds
        Passed to the distance (``gamma``/``kernel`` for ``mmd``, ``method``/``n_projections`` for
        ``wasserstein``, ``test_fraction`` for ``classifier``, ``block`` for the blocked sums).

    Returns
    -------
    A symmetric DataFrame (groups × groups, zero diagonal) or, with ``reference``, a Series.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(300, 5))
    >>> labels = np.repeat(["a", "b", "c"], 100)
    >>> group_distances(X, labels, "euclidean").shape
    (3, 3)
    """
    spec = DISTANCES.spec(metric, where="group_distances")
    grp, _ = group_cells(X, labels, max_cells=max_cells, seed=seed)
    return _compute(grp, metric, spec, reference, seed, metric_kwds)



def _call(spec: DistanceSpec, grp: Grouped, pairs: np.ndarray, seed: int, kw: dict) -> np.ndarray:
    import inspect

    params = inspect.signature(spec.fn).parameters
    if "seed" in params:
        kw = {"seed": seed, **kw}
    unknown = [k for k in kw if k not in params]
    if unknown:
        raise TypeError(f"unexpected keyword(s) {unknown} for this distance; it accepts {list(params)[2:]}.")
    return spec.fn(grp, pairs, **kw)


def _compute(grp: Grouped, metric: str, spec: DistanceSpec, reference: str | None, seed: int, kw: dict):
    G = len(grp.names)
    if G < 2:
        raise ValueError(f"{metric}: need at least two groups, got {grp.names}.")
    if reference is None:
        pairs = pair_index(G, None)
        # asymmetric distances (classifier): (later group as "perturbed", earlier as "control"), as pertpy's pairwise
        vals = _call(spec, grp, pairs if spec.symmetric else pairs[:, ::-1].copy(), seed, kw)
        D = np.zeros((G, G))
        D[pairs[:, 0], pairs[:, 1]] = vals
        D[pairs[:, 1], pairs[:, 0]] = vals
        return pd.DataFrame(D, index=pd.Index(grp.names), columns=pd.Index(grp.names))
    if str(reference) not in grp.names:
        raise ValueError(f"reference={reference!r} is not one of the groups ({grp.names[:10]}...).")
    ref = grp.names.index(str(reference))
    pairs = pair_index(G, ref)
    vals = _call(spec, grp, pairs, seed, kw)
    s = pd.Series(0.0, index=pd.Index(grp.names), name=metric)
    s.iloc[pairs[:, 0]] = vals
    return s



def _to_reference(result: dict, grp: Grouped, spec: DistanceSpec, metric: str, groupby: str, reference: str,
                  seed: int, kw: dict) -> pd.DataFrame:
    """Each group's distance to ``reference`` (a column of the pairwise matrix when it is symmetric)."""
    if str(reference) not in grp.names:
        raise ValueError(f"reference={reference!r} is not a value of adata.obs[{groupby!r}].")
    if "pairwise" in result and spec.symmetric:
        s = result["pairwise"].loc[:, str(reference)]
    else:
        s = _compute(grp, metric, spec, str(reference), seed, dict(kw))
    return pd.DataFrame({"distance": s.to_numpy(), "n_cells": grp.sizes}, index=pd.Index(grp.names, name=groupby))


@doc_params(**DIST_DOC)
def distance(
    adata: AnnData, groupby: str,
    metric: str = "edistance",
    *,
    reference: str | None = None,
    pairwise: bool = True,
    max_cells: int | None = None,
    obsm_key: str | None = None, layer: str | None = None, seed: int = 0, key_added: str | None = None, copy: bool = False,
    **metric_kwds: Any,
) -> AnnData | None:
    """Distances between groups of cells: a group × group matrix and/or each group against the controls.

    Parameters
    ----------
    {sc_adata}
    {sc_groupby}
    metric
        One of :data:`DISTANCES`: ``"edistance"`` (default), ``"mmd"``, ``"wasserstein"``,
        ``"mean_pairwise"``, ``"classifier"``, ``"euclidean"``, ``"cosine"``, ``"pearson"``.
    reference
        Control group: each group's distance to it is stored as well.
    pairwise
        Compute the full group × group matrix (``False``: only against ``reference``).
    max_cells
        Subsample groups with more cells than this (seeded; recorded in provenance).
    {sc_rep}
    seed
        Seed for subsampling, the median-heuristic subsample, sliced projections and the classifier split.
    key_added
        ``.uns`` key of the result (default ``f"distance_{metric}"``).
    {sc_copy}
    **metric_kwds
        Passed to the distance: ``gamma``, ``kernel`` (``mmd``); ``method``, ``n_projections``
        (``wasserstein``); ``test_fraction`` (``classifier``); ``block`` (blocked sums).

    Returns
    -------
    ``None`` (or the copy). Writes ``adata.uns[key_added]``: a dict with ``"pairwise"``
    (DataFrame, groups × groups), ``"to_reference"`` (DataFrame with ``distance`` and ``n_cells``,
    when ``reference`` is given), ``"n_cells"`` (cells used per group) and ``"params"``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate_cells(n_perturbations=4, n_cells=100, seed=0)
    >>> ip.tl.distance(adata, "Metadata_perturbation", reference="control", obsm_key="X")
    >>> adata.uns["distance_edistance"]["pairwise"].shape
    (5, 5)
    """
    spec = DISTANCES.spec(metric, where="distance")
    if not pairwise and reference is None:
        raise ValueError("distance: pairwise=False needs a reference= group.")
    X, what = cells_matrix(adata, obsm_key, layer, "distance")
    grp, subsampled = group_cells(X, labels_of(adata, groupby), max_cells=max_cells, seed=seed)
    if metric == "mmd" and metric_kwds.get("kernel", "rbf") == "rbf" and metric_kwds.get("gamma") is None:
        metric_kwds = dict(metric_kwds, gamma=median_heuristic_gamma(grp.X, seed=seed))  # one kernel for all pairs
    result: dict[str, Any] = {}
    if pairwise:
        result["pairwise"] = _compute(grp, metric, spec, None, seed, dict(metric_kwds))
    if reference is not None:
        result["to_reference"] = _to_reference(result, grp, spec, metric, groupby, reference, seed, metric_kwds)
    # a one-column DataFrame, not a Series: AnnData writes DataFrames in .uns, not Series
    result["n_cells"] = pd.DataFrame({"n_cells": grp.sizes}, index=pd.Index(grp.names, name=groupby))
    params = dict(groupby=groupby, metric=metric, reference=reference, pairwise=pairwise, representation=what,
                  max_cells=max_cells, seed=seed, **metric_kwds)
    result["params"] = {k: (v if isinstance(v, (str, int, float, bool)) else str(v)) for k, v in params.items()
                        if v is not None}
    adata = start(adata, copy)
    store(adata, result, slot="uns", key_added=key_added or f"distance_{metric}", function="tl.distance",
          params=params, n_groups=len(grp.names), subsampled=subsampled)
    return finish(adata, copy)
