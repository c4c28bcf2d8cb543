"""Recipes on AnnData: phenotypic activity and phenotypic consistency (private; public in ``ip.metrics``).

Each recipe checks its inputs, builds the pair definition on ``.obs``, calls the
AP kernel and :func:`~imgprof.metrics.mean_average_precision`, and (activity)
replaces the p-values by the exact label-permutation test of
:mod:`imgprof.metrics._permutation`.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.docs import doc_params
from .._core.selection import resolve_rows
from .._core.validation import check_df_keys, check_obs_keys, get_matrix, is_dask
from ._map import DOC_MAP, check_null_args, finish_table, mean_average_precision
from ._results import DOC_KEY_ADDED, RetrievalResult, RetrievalWarning, check_table_key, store_table
from ._similarity import prepare

_REF = "__imgprof_reference_index"

#: Shared parameter text of the AnnData retrieval functions (filled by ``doc_params``).
DOC_RETRIEVAL = DOC_MAP | {
    "key_added": DOC_KEY_ADDED,
    "metric": (
        "metric\n    ``\"cosine\"``, ``\"abs_cosine\"``, ``\"correlation\"``, ``\"euclidean\"``, ``\"manhattan\"``,\n"
        "    ``\"chebyshev\"`` or a callable ``f(A, B)`` returning a similarity matrix."
    ),
    "use_rep": "use_rep\n    ``.obsm`` key of the profiles to rank (default ``.X`` or ``layer``).",
    "layer": "layer\n    Layer of the profiles to rank (default ``.X``).",
    "dtype": "dtype\n    ``\"float64\"`` (default, matches copairs) or ``\"float32\"`` (faster).",
    "return_ap": (
        "return_ap\n    Return a :class:`RetrievalResult` (``.map`` per group, ``.ap`` per profile)\n"
        "    instead of the mAP table alone."
    ),
    "multilabel_sep": (
        "multilabel_sep\n    Separator of multi-valued labels (``\"A|B\"`` belongs to both ``A`` and ``B``);\n"
        "    ``None`` = none."
    ),
}
#: The keyword set the two recipes share, documented in one place and in their signature order.
RECIPE_KEYWORDS = ("metric", "use_rep", "layer", "null_size", "threshold", "seed", "return_ap", "dtype", "key_added")
DOC_RETRIEVAL["recipe_keywords"] = "\n".join(DOC_RETRIEVAL[k] for k in RECIPE_KEYWORDS)


def dense_matrix(adata: AnnData, layer: str | None, use_rep: str | None) -> np.ndarray:
    """The profile matrix of ``adata`` as a numpy array (a dask array is computed)."""
    X = get_matrix(adata, layer=layer, use_rep=use_rep)
    return X.compute() if is_dask(X) else np.asarray(X)


def strata_codes(obs: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """Integer code of each row's values in ``cols`` (all 0 without columns)."""
    if not cols:
        return np.zeros(len(obs), dtype=np.int64)
    if len(cols) > 1:
        return pd.factorize(obs[cols].astype(str).agg("\x1f".join, axis=1))[0].astype(np.int64)
    return pd.factorize(obs[cols[0]])[0].astype(np.int64)


def control_mask(adata: AnnData, controls: Any) -> np.ndarray:
    """Rows selected by ``controls``; refuses a selection of every row."""
    cmask = resolve_rows(adata, controls, param="controls")
    if cmask.all():
        raise ValueError(f"controls={controls!r} selects every profile; nothing left to score.")
    return cmask


# ---------------------------------------------------------------------------
# phenotypic activity
# ---------------------------------------------------------------------------


def _activity_obs(adata: AnnData, keys: list[str], cmask: np.ndarray) -> pd.DataFrame:
    """``.obs`` with a reference index on the controls (controls missing a key get a placeholder)."""
    if _REF in adata.obs.columns:
        raise ValueError(f"adata.obs already has a column {_REF!r}; rename it.")
    obs = adata.obs.copy()
    # Controls are picked by ``controls=``: a missing perturbation key on a control row
    # (e.g. DMSO wells with no broad_sample) is not an error.
    for k in keys:
        fill = cmask & obs[k].isna().to_numpy()
        if fill.any():
            obs[k] = obs[k].astype(object)
            obs.loc[fill, k] = "__control__"
    ref = np.full(adata.n_obs, -1, dtype=np.int64)
    ref[cmask] = np.arange(int(cmask.sum()))
    obs[_REF] = ref
    return obs


@overload
def phenotypic_activity(
    adata: AnnData, perturbation_key: str | Sequence[str] = ..., controls: Any = ..., *, sameby_controls: Any = ...,
    pos_diffby: Any = ..., null: str = ...,
    metric: str | Callable = ..., use_rep: str | None = ..., layer: str | None = ...,
    null_size: int = ..., threshold: float = ..., seed: int | None = ..., return_ap: Literal[False] = ...,
    dtype: str = ..., key_added: str | None = ...,
) -> pd.DataFrame: ...


@overload
def phenotypic_activity(
    adata: AnnData, perturbation_key: str | Sequence[str] = ..., controls: Any = ..., *, sameby_controls: Any = ...,
    pos_diffby: Any = ..., null: str = ...,
    metric: str | Callable = ..., use_rep: str | None = ..., layer: str | None = ...,
    null_size: int = ..., threshold: float = ..., seed: int | None = ..., return_ap: Literal[True],
    dtype: str = ..., key_added: str | None = ...,
) -> RetrievalResult: ...


@overload
def phenotypic_activity(
    adata: AnnData, perturbation_key: str | Sequence[str] = ..., controls: Any = ..., *, sameby_controls: Any = ...,
    pos_diffby: Any = ..., null: str = ...,
    metric: str | Callable = ..., use_rep: str | None = ..., layer: str | None = ...,
    null_size: int = ..., threshold: float = ..., seed: int | None = ..., return_ap: bool,
    dtype: str = ..., key_added: str | None = ...,
) -> pd.DataFrame | RetrievalResult: ...


@doc_params(**DOC_RETRIEVAL)
def phenotypic_activity(
    adata: AnnData,
    perturbation_key: str | Sequence[str] = "Metadata_broad_sample",
    controls: Any = "Metadata_pert_type == 'control'",
    *,
    sameby_controls: str | Sequence[str] | None = None,
    pos_diffby: str | Sequence[str] | None = None,
    null: str = "permutation",
    metric: str | Callable = "cosine", use_rep: str | None = None, layer: str | None = None, null_size: int = 10000,
    threshold: float = 0.05, seed: int | None = 0, return_ap: bool = False, dtype: str = "float64", key_added: str | None = None,
) -> pd.DataFrame | RetrievalResult:
    """Phenotypic activity: can each perturbation's replicates be retrieved against negative controls?

    For every non-control profile, its replicates (same ``perturbation_key``)
    are positives and the control profiles are negatives (the copairs recipe
    with a reference index on controls). mAP per perturbation with a
    permutation p-value; ``below_corrected_p`` marks active perturbations.

    Parameters
    ----------
    adata
        Well-level profiles.
    perturbation_key
        Column(s) identifying a perturbation (add a dose column to score each dose).
    controls
        Negative controls: query string on ``.obs``, boolean mask or obs names.
    sameby_controls
        Restrict negatives to controls sharing these columns with the query
        (e.g. ``"Metadata_Plate"`` for same-plate controls).
    pos_diffby
        Columns replicates must differ in (e.g. ``"Metadata_Plate"`` to only
        count replicates from other plates).
    null
        ``"permutation"`` (default): exact label-permutation test — under the
        null the perturbation's wells are exchangeable with its controls (within
        each ``sameby_controls`` stratum); every labeling is enumerated when
        there are at most ``null_size`` of them (``p_value_method`` =
        ``"permutation_exact"``), else ``null_size`` random labelings
        (``"permutation_monte_carlo"``). Valid whatever the distribution of the
        profiles. Perturbations whose pool (wells + controls) exceeds
        ``_permutation.MAX_POOL`` (600) fall back to the conservative
        ``"shared"`` null (``p_value_method`` says which).
        ``"independent"`` / ``"shared"``: see :func:`mean_average_precision`.
    {recipe_keywords}

    Returns
    -------
    mAP DataFrame per perturbation: ``n_profiles``, ``mean_average_precision``,
    ``mean_normalized_average_precision``, ``p_value``, ``corrected_p_value``,
    ``below_p``, ``below_corrected_p``, ``p_value_se``, ``p_value_method``; or
    a :class:`RetrievalResult` with ``return_ap=True``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> act = ip.metrics.phenotypic_activity(adata, "Metadata_broad_sample", null_size=1000)
    >>> "below_corrected_p" in act
    True
    """
    from .average_precision import average_precision_kernel

    null_size, threshold = check_null_args(null_size, threshold, seed)
    check_table_key(adata, key_added)
    keys = check_obs_keys(adata, perturbation_key, param="perturbation_key")
    sc = check_obs_keys(adata, sameby_controls, param="sameby_controls")
    pdiff = check_obs_keys(adata, pos_diffby, param="pos_diffby")
    cmask = control_mask(adata, controls)
    if null not in ("permutation", "independent", "shared"):
        raise ValueError(f"null must be 'permutation', 'independent' or 'shared', got {null!r}.")
    obs = _activity_obs(adata, keys, cmask)
    X = dense_matrix(adata, layer, use_rep)
    ap = average_precision_kernel(
        X, obs, keys + [_REF], pdiff, sc, keys + [_REF], metric=metric, query=~cmask, dtype=np.dtype(dtype),
    ).drop(columns=[_REF])
    m = mean_average_precision(
        ap.loc[~cmask], keys, null_size=null_size, threshold=threshold, seed=seed,
        null="shared" if null == "permutation" else null,
    )
    if null == "permutation":
        groups = _PermutationGroups(m, ap, obs, cmask, keys, sc, pdiff)
        _activity_permutation(groups, X, metric, dtype, null_size, seed, threshold)
    store_table(adata, m, key_added, function="metrics.phenotypic_activity",
                params={"perturbation_key": keys, "controls": controls, "sameby_controls": sc, "pos_diffby": pdiff,
                        "metric": metric, "use_rep": use_rep, "layer": layer, "null_size": null_size, "seed": seed,
                        "null": null})
    return RetrievalResult(map=m, ap=ap) if return_ap else m


class _PermutationGroups:
    """What the label-permutation test of :func:`phenotypic_activity` needs, in one place."""

    def __init__(self, m: pd.DataFrame, ap: pd.DataFrame, obs: pd.DataFrame, cmask: np.ndarray, keys: list[str],
                 sc: list[str], pdiff: list[str]) -> None:
        self.m, self.ap, self.obs, self.cmask, self.keys = m, ap, obs, cmask, keys
        self.stratum = strata_codes(obs, sc)
        self.posdiff = np.stack([pd.factorize(obs[c])[0] for c in pdiff], axis=1) if pdiff else None

    def rows(self, valid: np.ndarray) -> list[np.ndarray]:
        """Rows of each scored group of the mAP table (the AP table's groups), valid vectors only."""
        trt = self.ap.loc[~self.cmask]
        scored = trt["average_precision"].notna() & (trt["n_pos_pairs"] > 0)
        row_of = pd.Series(np.arange(len(self.obs)), index=self.obs.index)
        grp = trt.groupby(self.keys, observed=True, sort=True)
        ids = grp.ngroup().to_numpy()
        rows = row_of.loc[trt.index].to_numpy()
        n_groups = int(ids.max()) + 1 if ids.size else 0
        in_m = grp["average_precision"].apply(lambda s: bool(s.notna().any())).to_numpy()
        keep = valid[rows]
        groups = [np.sort(rows[(ids == g) & keep]) for g in range(n_groups)]
        return [groups[g] for g in range(n_groups) if in_m[g] and scored[ids == g].any()]

    def seeds(self) -> np.ndarray:
        """Each group's draws are seeded by its key values: the same p-value whatever else is in the call."""
        labels = self.m[self.keys].astype(str).agg("\x1f".join, axis=1).to_numpy()
        return np.array([zlib.crc32(s.encode()) for s in labels], dtype=np.int64)


def _check_permutation_map(obs_map: np.ndarray, kernel_map: np.ndarray) -> None:
    """The permutation's own observed mAP must equal the kernel's (up to float near-ties, reported)."""
    # It equals the kernel's mAP except where two similarities are tied within float rounding and the kernel's
    # products (dense or paired) and the pool's product round them apart (rare; float32 makes it likelier).
    diff = np.abs(obs_map - kernel_map)
    if diff.size and diff.max() > 0.5:
        raise RuntimeError(
            "phenotypic_activity: permutation mAP differs from the AP kernel's mAP by "
            f"{diff.max():.3g}; please report this."
        )
    if diff.size and (diff > 1e-9).any():
        warnings.warn(
            f"phenotypic_activity: for {int((diff > 1e-9).sum())} perturbation(s) the permutation test ranked "
            f"near-tied similarities differently from the AP kernel (float rounding; max mAP difference "
            f"{diff.max():.2g}); their p-values compare the permutation's own observed mAP with its null.",
            RetrievalWarning, stacklevel=4,
        )


def _activity_permutation(g: _PermutationGroups, X: np.ndarray, metric: str | Callable, dtype: str, null_size: int,
                          seed: int | None, threshold: float) -> None:
    """Replace ``g.m``'s p-values by label-permutation p-values (in place; see ``_permutation``)."""
    from ._permutation import permutation_p_values

    pq = prepare(X, metric, np.dtype(dtype))
    valid = ~pq.invalid
    groups = g.rows(valid)
    m = g.m
    obs_map, p, se, method = permutation_p_values(
        pq, metric, groups, np.flatnonzero(g.cmask & valid), g.stratum, g.posdiff, null_size=int(null_size), seed=seed,
        group_seeds=g.seeds(),
    )
    if len(groups) != len(m):  # pragma: no cover - defensive: group bookkeeping must match mean_average_precision
        raise RuntimeError("phenotypic_activity: permutation groups do not match the mAP table.")
    done = method != ""
    _check_permutation_map(obs_map[done], m["mean_average_precision"].to_numpy()[done])
    m.loc[done, "p_value"] = p[done]
    m.loc[done, "p_value_se"] = se[done]
    m.loc[done, "p_value_method"] = np.array(["permutation_" + s for s in method[done]], dtype=object)
    finish_table(m, threshold)


# ---------------------------------------------------------------------------
# phenotypic consistency
# ---------------------------------------------------------------------------


def _consistency_rows(adata: AnnData, annotation_key: str, perturbation_key: str, controls: Any, active: Any) -> np.ndarray:
    """Rows scored for consistency: not controls, annotated, and (if given) active."""
    keep = np.ones(adata.n_obs, dtype=bool)
    if controls is not None:
        keep &= ~resolve_rows(adata, controls, param="controls")
    ann = adata.obs[annotation_key]
    missing = ann.isna().to_numpy() | (ann.astype(str).str.strip() == "").to_numpy()
    if (missing & keep).any():
        warnings.warn(
            f"phenotypic_consistency: {int((missing & keep).sum())} profile(s) without {annotation_key!r} are left out.",
            RetrievalWarning, stacklevel=3,
        )
    keep &= ~missing
    if active is not None:
        if isinstance(active, pd.DataFrame):
            check_df_keys(active, [perturbation_key, "below_corrected_p"], param="active", where="the activity table")
            active = active.loc[active["below_corrected_p"], perturbation_key].tolist()
        keep &= adata.obs[perturbation_key].isin(list(active)).to_numpy()
    if not keep.any():
        raise ValueError("phenotypic_consistency: no profile left after removing controls / unannotated / inactive ones.")
    return keep


def _consensus(X: np.ndarray, obs: pd.DataFrame, annotation_key: str, perturbation_key: str,
               aggregate: str) -> tuple[np.ndarray, pd.DataFrame]:
    """One median/mean profile per perturbation, with its (single) annotation."""
    n_ann = obs.groupby(perturbation_key, observed=True)[annotation_key].nunique()
    bad = n_ann[n_ann > 1]
    if len(bad):
        raise ValueError(
            f"phenotypic_consistency: perturbation(s) {list(bad.index[:5])} carry several {annotation_key!r} values; "
            "fix the annotation or use aggregate=None."
        )
    codes, uniq = pd.factorize(obs[perturbation_key], sort=True)
    agg = np.nanmedian if aggregate == "median" else np.nanmean
    Xa = np.vstack([agg(X[codes == k], axis=0) for k in range(len(uniq))])
    first = obs.groupby(perturbation_key, observed=True, sort=True)[annotation_key].first()
    obs_a = pd.DataFrame({perturbation_key: np.asarray(uniq, dtype=object), annotation_key: first.loc[uniq].to_numpy()})
    obs_a.index = obs_a[perturbation_key].astype(str).to_numpy()
    return Xa, obs_a


@overload
def phenotypic_consistency(
    adata: AnnData, annotation_key: str = ..., perturbation_key: str = ..., *, active: Any = ...,
    controls: Any = ..., aggregate: str | None = ..., multilabel_sep: str | None = ...,
    metric: str | Callable = ..., use_rep: str | None = ..., layer: str | None = ...,
    null_size: int = ..., threshold: float = ..., seed: int | None = ..., return_ap: Literal[False] = ...,
    dtype: str = ..., key_added: str | None = ...,
) -> pd.DataFrame: ...


@overload
def phenotypic_consistency(
    adata: AnnData, annotation_key: str = ..., perturbation_key: str = ..., *, active: Any = ...,
    controls: Any = ..., aggregate: str | None = ..., multilabel_sep: str | None = ...,
    metric: str | Callable = ..., use_rep: str | None = ..., layer: str | None = ...,
    null_size: int = ..., threshold: float = ..., seed: int | None = ..., return_ap: Literal[True],
    dtype: str = ..., key_added: str | None = ...,
) -> RetrievalResult: ...


@overload
def phenotypic_consistency(
    adata: AnnData, annotation_key: str = ..., perturbation_key: str = ..., *, active: Any = ...,
    controls: Any = ..., aggregate: str | None = ..., multilabel_sep: str | None = ...,
    metric: str | Callable = ..., use_rep: str | None = ..., layer: str | None = ...,
    null_size: int = ..., threshold: float = ..., seed: int | None = ..., return_ap: bool,
    dtype: str = ..., key_added: str | None = ...,
) -> pd.DataFrame | RetrievalResult: ...


@doc_params(**DOC_RETRIEVAL)
def phenotypic_consistency(
    adata: AnnData,
    annotation_key: str = "Metadata_moa", perturbation_key: str = "Metadata_broad_sample",
    *,
    active: Any = None,
    controls: Any = None, aggregate: str | None = "median", multilabel_sep: str | None = "|",
    metric: str | Callable = "cosine", use_rep: str | None = None, layer: str | None = None, null_size: int = 10000,
    threshold: float = 0.05, seed: int | None = 0, return_ap: bool = False, dtype: str = "float64", key_added: str | None = None,
) -> pd.DataFrame | RetrievalResult:
    """Phenotypic consistency: do perturbations sharing an annotation (MOA, target) retrieve each other?

    Profiles are aggregated per perturbation (consensus), then for each
    (perturbation, label) the other perturbations carrying that label are
    positives and perturbations sharing no label are negatives (copairs'
    multi-label recipe). mAP per label.

    Parameters
    ----------
    adata
        Profiles (well level, or already one row per perturbation with ``aggregate=None``).
    annotation_key
        Annotation column; multi-label values like ``"a|b"`` are split on ``multilabel_sep``
        (``None``: single label).
    perturbation_key
        Perturbation column (consensus profiles are built per value).
    active
        Keep only these perturbations: a list of values, or the DataFrame of
        :func:`phenotypic_activity` (its rows with ``below_corrected_p``).
    controls
        Profiles to leave out (e.g. ``"Metadata_pert_type == 'control'"``).
    aggregate
        ``"median"`` (default) or ``"mean"`` consensus per perturbation, or
        ``None`` to keep profiles as they are (replicates of the same
        perturbation are then excluded from each other's positives).
    {multilabel_sep}
    {recipe_keywords}

    Returns
    -------
    mAP DataFrame per label, or a :class:`RetrievalResult` (``.map``, ``.ap``)
    with ``return_ap=True``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> cons = ip.metrics.phenotypic_consistency(adata, "Metadata_moa", controls="Metadata_broad_sample == 'DMSO'",
    ...                                          null_size=1000)
    >>> cons["Metadata_moa"].is_unique
    True
    """
    from .average_precision import average_precision_kernel

    null_size, threshold = check_null_args(null_size, threshold, seed)
    check_table_key(adata, key_added)
    check_obs_keys(adata, [annotation_key, perturbation_key], param="annotation_key/perturbation_key")
    if aggregate not in (None, "median", "mean"):
        raise ValueError(f"aggregate must be 'median', 'mean' or None, got {aggregate!r}.")
    keep = _consistency_rows(adata, annotation_key, perturbation_key, controls, active)
    X = dense_matrix(adata, layer, use_rep)[keep]
    obs = adata.obs.loc[keep, [perturbation_key, annotation_key]].copy()
    for c in obs.columns:
        if isinstance(obs[c].dtype, pd.CategoricalDtype):
            obs[c] = obs[c].astype(object)
    pos_diff = [perturbation_key]
    if aggregate is not None:
        X, obs = _consensus(X, obs, annotation_key, perturbation_key, aggregate)
        pos_diff = []
    ap = average_precision_kernel(
        X, obs, [annotation_key], pos_diff, [], [annotation_key], metric=metric, multilabel=annotation_key,
        multilabel_sep=multilabel_sep, dtype=np.dtype(dtype),
    )
    m = mean_average_precision(ap, [annotation_key], null_size=null_size, threshold=threshold, seed=seed)
    store_table(adata, m, key_added, function="metrics.phenotypic_consistency",
                params={"annotation_key": annotation_key, "perturbation_key": perturbation_key, "controls": controls,
                        "aggregate": aggregate, "metric": metric, "use_rep": use_rep, "layer": layer,
                        "null_size": null_size, "seed": seed})
    return RetrievalResult(map=m, ap=ap) if return_ap else m


__all__ = ["control_mask", "dense_matrix", "phenotypic_activity", "phenotypic_consistency", "strata_codes"]
