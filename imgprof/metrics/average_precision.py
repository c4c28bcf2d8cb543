"""Average precision (AP) and mean average precision (mAP) on AnnData, copairs-compatible.

For each query profile, the profiles forming a *positive* pair with it and
those forming a *negative* pair with it are ranked by similarity (most similar first)
and the average precision of the positives is computed. Pairs follow copairs
0.5 (``pos_sameby``/``pos_diffby``/``neg_sameby``/``neg_diffby``), and so do
ties (at equal similarity, rounded to float32 as copairs stores it, positives
rank before negatives) and which rows get NaN.

Two layers:

* :func:`average_precision_kernel` — arrays + a metadata DataFrame in, a
  DataFrame out. No AnnData. Used by ``ip.bench`` and ``ip.mm``.
* :func:`average_precision`, :func:`mean_average_precision`,
  :func:`phenotypic_activity`, :func:`phenotypic_consistency` — AnnData API.

Similarities are computed block by block with matrix products; only the
candidate columns of a block of queries are ever materialised, so memory is
bounded by ``max_block_elements`` whatever the number of profiles.

The implementation lives in private modules: ``_ap_engine`` (the kernel's
steps: input check, pair counts, blocked AP, result), ``_ap_kernels``
(numerical kernels), ``_similarity`` (similarity registry), ``_map``
(:func:`mean_average_precision` and its null registry) and ``_recipes``
(phenotypic activity / consistency). Their public names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.docs import doc_params
from .._core.selection import resolve_rows
from .._core.store import store
from .._core.validation import check_bool, check_int, check_new_obs_key, check_obs_keys, start
from . import _ap_engine, _pairs
from ._ap_kernels import expected_ap, normalized_ap
from ._map import MAP_NULLS, finish_table, mean_average_precision
from ._recipes import DOC_RETRIEVAL, dense_matrix, phenotypic_activity, phenotypic_consistency
from ._results import AP_COLUMNS, RetrievalResult, RetrievalWarning
from ._similarity import SIMILARITIES

__all__ = [
    "AP_COLUMNS",
    "MAP_NULLS",
    "SIMILARITIES",
    "RetrievalResult",
    "RetrievalWarning",
    "average_precision",
    "average_precision_kernel",
    "expected_ap",
    "mean_average_precision",
    "normalized_ap",
    "phenotypic_activity",
    "phenotypic_consistency",
]

_finish = finish_table  # former private name (imported by older code)


def average_precision_kernel(
    X: Any,
    obs: pd.DataFrame,
    pos_sameby: Any = None,
    pos_diffby: Any = None,
    neg_sameby: Any = None,
    neg_diffby: Any = None,
    *,
    metric: str | Callable = "cosine",
    reference_X: Any = None,
    reference_obs: pd.DataFrame | None = None,
    multilabel: str | None = None,
    multilabel_sep: str | None = "|",
    query: np.ndarray | None = None,
    dtype: Any = np.float64,
    max_block_elements: int = 2**23,
    warn: bool = True,
) -> pd.DataFrame:
    """Average precision of every query profile (array-level kernel, no AnnData).

    Parameters
    ----------
    X
        Profiles, ``(n, d)`` array (rows align with ``obs``).
    obs
        Metadata, one row per profile.
    pos_sameby, pos_diffby, neg_sameby, neg_diffby
        Column lists defining positive and negative pairs (copairs semantics):
        a pair shares every ``*_sameby`` value and differs in every
        ``*_diffby`` value. A dict ``{"all": [...], "any": [...]}`` adds
        "at least one of these columns" conditions.
    metric
        ``"cosine"`` (default), ``"abs_cosine"``, ``"correlation"``,
        ``"euclidean"``, ``"manhattan"``, ``"chebyshev"`` (distances become
        ``1/(1+d)``), or a callable ``f(A, B)`` returning the similarity matrix.
    reference_X, reference_obs
        Candidates from another set (e.g. another modality in a shared space):
        queries are rows of ``X``, positives/negatives are rows of
        ``reference_X``. Pair columns must exist in both metadata tables.
    multilabel
        Column holding label sets (``"a|b"`` strings split on
        ``multilabel_sep``, or lists). In a sameby list it means "share a
        label", in a diffby list "share no label". When it is in
        ``pos_sameby``, AP is computed per (profile, label), as copairs'
        ``multilabel.average_precision`` does, and the output has one row per
        label with the column holding that single label.
    query
        Boolean mask of rows that get an AP (default: all). The others still
        serve as candidates and get NaN.
    dtype
        Precision of the similarity products (``float64`` default; ``float32``
        is about twice as fast and may reorder near-ties below 1e-7).
    max_block_elements
        Upper bound on query × candidate elements held at once.
    warn
        Emit :class:`RetrievalWarning` summarising NaN APs.
    multilabel_sep
        Separator of multi-valued labels in string columns (``"A|B"``); ``None`` = none.

    Returns
    -------
    DataFrame with ``obs``'s columns plus ``n_pos_pairs``, ``n_total_pairs``,
    ``average_precision`` and ``normalized_average_precision``, indexed like
    ``obs`` (repeated per label in per-label multi-label mode).

    Notes
    -----
    A row gets NaN AP when it has no positive pair (as copairs), when it has
    positives but no negative pair (copairs would report 1.0; that value is
    meaningless, so it is NaN here, with a warning), or when its profile is
    invalid (NaN/inf features, zero norm under cosine, zero variance under
    correlation: such rows are also removed from every other row's ranking).

    Examples
    --------
    >>> import imgprof as ip
    >>> a = ip.datasets.simulate(n_plates=2, n_perturbations=8, n_moa=2, n_features=30, seed=0)
    >>> ap = average_precision_kernel(a.X, a.obs, ["Metadata_Perturbation"], [], [], ["Metadata_Perturbation"],
    ...                               query=(a.obs["Metadata_control_type"] == "trt").to_numpy())
    >>> trt = ap["Metadata_control_type"] == "trt"
    >>> int(ap.loc[trt, "n_pos_pairs"].max()), bool(ap.loc[~trt, "average_precision"].isna().all())
    (1, True)
    """

    p = _ap_engine.check_inputs(
        X, obs, (pos_sameby, pos_diffby, neg_sameby, neg_diffby), metric=metric, reference_X=reference_X,
        reference_obs=reference_obs, multilabel=multilabel, multilabel_sep=multilabel_sep, query=query, dtype=dtype,
    )
    units = _ap_engine.build_units(p, max_block_elements)
    _ap_engine.blocked_ap(p, units, max_block_elements)
    out = _ap_engine.assemble(p, units, obs)
    _ap_engine.report(p, units, obs, out, warn=warn)
    return out


def _check_pair_columns(adata: AnnData, reference: AnnData | None, pairs: dict[str, Any]) -> None:
    """Every pair column is in ``adata.obs`` (and in ``reference.obs``)."""
    for name, val in pairs.items():
        cols = _pairs.spec_columns(_pairs.as_spec(val, param=name))
        check_obs_keys(adata, cols, param=name)
        if reference is not None:
            check_obs_keys(reference, cols, param=f"{name} (reference)")


@doc_params(**DOC_RETRIEVAL)
def average_precision(
    adata: AnnData,
    pos_sameby: str | Sequence[str] | dict,
    pos_diffby: str | Sequence[str] | dict | None = None,
    neg_sameby: str | Sequence[str] | dict | None = None,
    neg_diffby: str | Sequence[str] | dict | None = None,
    *,
    metric: str | Callable = "cosine",
    use_rep: str | None = None,
    layer: str | None = None,
    reference: AnnData | None = None,
    reference_use_rep: str | None = None,
    reference_layer: str | None = None,
    multilabel: str | None = None,
    multilabel_sep: str | None = "|",
    query: Any = None,
    dtype: str = "float64",
    key_added: str | None = None,
    max_block_elements: int = 2**23,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Average precision of every profile's positives against its negatives (copairs-compatible).

    For each query profile, every profile forming a positive pair with it and
    every profile forming a negative pair with it are ranked by similarity;
    the AP of the positives in that ranking is reported. Pair rules, ties
    (positives first at equal float32 similarity), NaN rules and output
    columns follow copairs 0.5 ``map.average_precision``.

    Parameters
    ----------
    adata
        Profiles (``.X``, a ``layer`` or an ``.obsm`` embedding via ``use_rep``).
    pos_sameby, pos_diffby
        Columns a positive pair shares / differs in (e.g. ``pos_sameby=["Metadata_broad_sample"]``
        for replicates). A dict ``{"all": [...], "any": [...]}`` is also accepted.
    neg_sameby, neg_diffby
        Same for negative pairs (e.g. ``neg_diffby=["Metadata_broad_sample"]``).
    {metric}
    {use_rep}
    {layer}
    reference
        Another AnnData holding the candidates (retrieval across modalities or
        sets; queries come from ``adata``). Both must be in the same feature
        space (``reference_use_rep`` / ``reference_layer`` pick its matrix;
        ``reference_use_rep`` defaults to ``use_rep``).
    multilabel, multilabel_sep
        Multi-label column (``"a|b"`` strings) and separator; see
        :func:`average_precision_kernel`.
    query
        Which profiles get an AP: a query string on ``.obs``, a boolean mask or
        obs names (default all). The others still serve as candidates.
    {dtype}
    key_added
        If given, write the AP to ``adata.obs[key_added]`` (not in per-label
        multi-label mode). ``adata`` must then not be a view, and an existing
        column is refused unless ``overwrite=True``.
    max_block_elements
        Memory bound: most query × candidate similarities held at once.
    overwrite
        Allow ``key_added`` to replace an existing ``.obs`` column.
    reference_use_rep, reference_layer
        Matrix of ``reference`` to rank (an ``.obsm`` key, a layer); ``reference_use_rep``
        defaults to ``use_rep``.

    Returns
    -------
    DataFrame indexed by obs names with the ``.obs`` columns plus
    ``n_pos_pairs``, ``n_total_pairs``, ``average_precision`` and
    ``normalized_average_precision``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> ap = ip.metrics.average_precision(
    ...     adata, pos_sameby=["Metadata_broad_sample"], neg_diffby=["Metadata_broad_sample"],
    ...     query="Metadata_broad_sample != 'DMSO'")
    >>> ap.loc[ap["Metadata_broad_sample"] != "DMSO", "n_pos_pairs"].value_counts().to_dict()
    {5: 336, 11: 24}
    >>> bool(ap["average_precision"].dropna().between(0, 1).all())
    True
    """

    if key_added is not None:
        start(adata, False)  # refuses a view: the AP column would be written into it
        check_new_obs_key(adata, key_added, param="key_added", overwrite=check_bool(overwrite, "overwrite"))
    check_int(max_block_elements, "max_block_elements", min_value=1)
    X = dense_matrix(adata, layer, use_rep)
    ref_X = ref_obs = None
    if reference is not None:
        ref_rep = reference_use_rep if reference_use_rep is not None else use_rep
        ref_X, ref_obs = dense_matrix(reference, reference_layer, ref_rep), reference.obs
    pairs = {"pos_sameby": pos_sameby, "pos_diffby": pos_diffby, "neg_sameby": neg_sameby, "neg_diffby": neg_diffby}
    _check_pair_columns(adata, reference, pairs)
    qmask = None if query is None else resolve_rows(adata, query, param="query")
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
    out = average_precision_kernel(
        X, adata.obs, pos_sameby, pos_diffby, neg_sameby, neg_diffby,
        metric=metric, reference_X=ref_X, reference_obs=ref_obs, multilabel=multilabel,
        multilabel_sep=multilabel_sep, query=qmask, dtype=dt, max_block_elements=max_block_elements,
    )
    if key_added is not None:
        if out.index.has_duplicates:
            raise ValueError("key_added cannot be used in per-label multi-label mode (several APs per profile).")
        store(
            adata, out["average_precision"].reindex(adata.obs_names).to_numpy(), slot="obs", key_added=key_added,
            function="metrics.average_precision",
            params=pairs | {"metric": metric, "use_rep": use_rep, "layer": layer, "multilabel": multilabel,
                            "key_added": key_added, "reference": reference is not None},
            n_with_ap=int(out["average_precision"].notna().sum()),
        )
    return out
