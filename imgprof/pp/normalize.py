"""Normalize profiles against a reference set (controls), optionally per group (e.g. per plate).

Numerically the methods follow pycytominer 1.7.1 ``normalize``:

* ``standardize``: ``(x - mean) / std`` with the population std (``ddof=0``), and
  scikit-learn's ``StandardScaler`` rule for (near-)constant features;
* ``robustize``: ``(x - median) / IQR`` (scikit-learn ``RobustScaler``);
* ``mad_robustize``: ``(x - median) / (1.4826 * MAD + epsilon)`` (pycytominer's
  ``RobustMAD``, ``epsilon=1e-18``);
* ``spherize``: whitening, ``"ZCA"``, ``"PCA"``, ``"ZCA-cor"`` or ``"PCA-cor"``,
  with pycytominer's centring, rank handling and ``spherize_epsilon`` added to the
  singular values;
* ``inverse_normal``: rank-based inverse normal transform (scikit-learn's
  ``QuantileTransformer(output_distribution="normal")`` with
  ``n_quantiles = min(n_quantiles, n_reference_rows)``).

The statistics are fitted on the reference rows (``controls=``) of each group
(``by=``) and applied to every row of that group. :func:`normalize` only checks
its inputs, looks the method up in :data:`NORMALIZERS` (one registered class per
method, ``fit`` → state and ``transform``: :mod:`imgprof.pp._normalizers` and
:mod:`imgprof.pp._normalize_spherize`) and stores the result; the array kernels
(:mod:`imgprof.pp._normalize_kernels`) take numpy or dask arrays, dispatched on
the array type (dask: per-group statistics reduced with dask, transforms lazy
through ``map_blocks``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.docs import doc_params
from .._core.features import record_values_changed
from .._core.groups import group_codes, group_sizes
from .._core.guardrails import check_feature_dominance
from .._core.registry import Entry
from .._core.selection import resolve_features, resolve_rows
from .._core.store import Slot, store
from .._core.validation import (
    check_array,
    check_bool,
    check_choice,
    check_float,
    check_int,
    finish,
    get_matrix,
    start,
)
from .._core.whitening import CORRELATION_VARIANTS, SPHERIZE_VARIANTS
from ._normalize_kernels import as_float64, assemble
from ._normalizers import MAD_SCALE, NORMALIZERS, Groups, describe

__all__ = ["MAD_SCALE", "NORMALIZERS", "SPHERIZE_METHODS", "normalize"]

#: Sphering variants (pycytominer's names; the one list is :data:`imgprof._core.whitening.SPHERIZE_VARIANTS`).
SPHERIZE_METHODS = SPHERIZE_VARIANTS
#: Options of :func:`normalize` that only some methods read: logged as ``None`` for the others.
_METHOD_OPTIONS = ("spherize_method", "spherize_center", "spherize_epsilon", "n_quantiles")


def __getattr__(name: str) -> tuple[str, ...]:
    # NORMALIZE_METHODS (and its old name METHODS): the registered names, including ones added later
    if name in ("NORMALIZE_METHODS", "METHODS"):
        return NORMALIZERS.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------
def _check_options(entry: Entry, controls: Any, samples: Any, opts: dict[str, Any]) -> Any:
    """Check the method options (in place: ``n_quantiles`` becomes an int); return the reference selection."""
    check_choice(opts["spherize_method"], "spherize_method", SPHERIZE_VARIANTS)
    if entry.name == "spherize" and opts["spherize_method"] in CORRELATION_VARIANTS and not opts["spherize_center"]:
        raise ValueError("spherize_method='ZCA-cor'/'PCA-cor' require spherize_center=True.")
    check_choice(opts["zero_scale"], "zero_scale", ("warn", "raise", "epsilon"))
    if "epsilon" in entry.meta.get("options", ()):
        if opts["epsilon"] is None:
            raise ValueError("epsilon must be a finite number >= 0, got None.")
        check_float(opts["epsilon"], "epsilon", min_value=0.0)
    if opts["spherize_epsilon"] is None:
        raise ValueError("spherize_epsilon must be a finite number >= 0, got None.")
    check_float(opts["spherize_epsilon"], "spherize_epsilon", min_value=0.0)
    check_bool(opts["spherize_center"], "spherize_center")
    opts["n_quantiles"] = check_int(opts["n_quantiles"], "n_quantiles", min_value=1)
    if samples is not None:
        if controls is not None:
            raise ValueError("Give either controls= or samples= (pycytominer's name), not both.")
        controls = None if isinstance(samples, str) and samples == "all" else samples
    return controls



def _short(selection: Any) -> str:
    if selection is None or isinstance(selection, str):
        return repr(selection)
    return f"<{type(selection).__name__} of length {len(selection)}>"


def _groups(adata: AnnData, controls: Any, by: str | Sequence[str] | None, var_names: pd.Index) -> Groups:
    """The groups of ``by`` and the reference rows of each; every group needs two of them."""
    mask = resolve_rows(adata, controls, param="controls")
    labels = None
    codes = np.zeros(adata.n_obs, dtype=np.int64)
    if by is not None:
        codes, labels = group_codes(adata.obs, by, param="by")
        key_df = adata.obs.loc[:, list(labels.columns)]
        if key_df.isna().any().any():
            bad = key_df.columns[key_df.isna().any()].tolist()
            raise ValueError(
                f"by: column(s) {bad} have missing values in {int(key_df.isna().any(axis=1).sum())} row(s); "
                "fill them (or subset the AnnData) so that every row belongs to a group."
            )
    n_groups = 1 if labels is None else len(labels)
    groups = Groups(codes, np.where(mask, codes, -1), n_groups, labels, var_names)
    n_ref = group_sizes(groups.fit_codes, n_groups)
    none = [groups.label(g) for g in np.flatnonzero(n_ref == 0)]
    if none:
        raise ValueError(
            f"controls={_short(controls)} selects no observation in group(s) {describe(none)} "
            f"of by={by!r}; every group needs reference rows."
        )
    single = [groups.label(g) for g in np.flatnonzero(n_ref < 2)]
    if single:
        raise ValueError(
            f"controls={_short(controls)} selects a single observation in group(s) {describe(single)} of by={by!r}; "
            "at least two are needed to estimate a scale. Pool groups (a coarser by=) or use more controls."
        )
    return groups


# ----------------------------------------------------------------------------------------------
# fit, transform, store
# ----------------------------------------------------------------------------------------------
def _fit_transform(entry: Entry, X: Any, groups: Groups, opts: dict[str, Any]) -> tuple[Any, Any]:
    """Fit the registered normalizer on the reference rows of each group; transform every row."""
    norm = entry.obj() if isinstance(entry.obj, type) else entry.obj
    state = norm.fit(X, groups, **{k: opts[k] for k in entry.meta.get("options", ())})
    return state, norm.transform(X, groups, state)


def _store(adata: AnnData, result: Any, X_in: Any, cols: np.ndarray | None, *, obsm_key: str | None,
           layer: str | None, key_added: str | None, params: dict[str, Any], extra: dict[str, Any]) -> None:
    """Write the result (``.obsm``, ``.layers`` or ``.X``; ``cols``: the columns it replaces, ``None``: all) and log."""
    slot: Slot = "obsm"
    key = obsm_key
    if obsm_key is None:
        if cols is not None:
            result = assemble(X_in, cols, result, X_in.dtype)
        key = key_added if key_added is not None else layer
        slot = "layers" if key is not None else "X"
    target = "X" if slot == "X" else f"{slot}[{key!r}]"
    store(adata, result, slot=slot, key_added=key, function="pp.normalize", params=params, output=target, **extra)
    if slot == "X":
        record_values_changed(adata)  # int features are floats now: to_pandas must not truncate them


def _guardrail(result: Any, var_names: pd.Index | None, method: str, max_share: float | None,
               cutoff: float | None, extra: dict[str, Any]) -> None:
    dom = check_feature_dominance(result, var_names, where=f"normalize({method!r})", max_share=max_share,
                                  outlier_cutoff=cutoff, stacklevel=4)
    if dom is not None:
        extra["top_variance_share"] = [[n, round(v, 4)] for n, v in dom["top"]]
        extra["max_abs_value"] = dom["max_abs"]
        if dom["warning"]:
            extra["guardrail_warning"] = dom["warning"]


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------
@doc_params("copy", "layer", "samples")
def normalize(
    adata: AnnData,
    method: str = "mad_robustize",
    controls: Any = None,
    by: str | Sequence[str] | None = None,
    *,
    samples: Any = None,
    features: Sequence[str] | None = None,
    epsilon: float = 1e-18,
    zero_scale: Literal["warn", "raise", "epsilon"] = "warn",
    spherize_method: Literal["ZCA", "PCA", "ZCA-cor", "PCA-cor"] = "ZCA-cor",
    spherize_center: bool = True,
    spherize_epsilon: float = 1e-6,
    n_quantiles: int = 1000,
    max_variance_share: float | None = 0.10,
    outlier_cutoff: float | None = 500.0,
    layer: str | None = None, key_added: str | None = None, copy: bool = False,
) -> AnnData | None:
    """Normalize features against reference rows, per group.

    Parameters
    ----------
    adata
        Profiles (``.X`` numpy or dask; integer dtypes are converted to float64).
    method
        A registered normalizer (:data:`NORMALIZERS`): ``"standardize"``, ``"robustize"``,
        ``"mad_robustize"``, ``"spherize"`` or ``"inverse_normal"`` (pycytominer's names
        and formulas, see the module docs).
    controls
        Reference rows the statistics are fitted on: a pandas query on ``.obs``
        (``"Metadata_control_type == 'negcon'"``), a boolean mask, or obs names.
        ``None`` uses all rows. Every group must have at least two reference rows.
        Give ``controls`` or ``samples``, not both.
    by
        ``.obs`` column(s) defining groups normalized separately (e.g. ``"Metadata_Plate"``).
    {samples}
    features
        Features to normalize (default: all of ``adata.var_names``); the others are left as they are.
    epsilon
        ``mad_robustize`` fudge factor added to the MAD (pycytominer's ``mad_robustize_epsilon``).
    zero_scale
        Features whose reference scale is zero in a group (constant controls: zero
        MAD, zero variance or zero IQR). ``"warn"`` (default): warn, naming them, and
        divide by 1 instead, so the output is ``x - center`` (scikit-learn's rule,
        which pycytominer's standardize/robustize follow; pycytominer's
        mad_robustize divides by ``epsilon`` instead, giving values around 1e18).
        ``"raise"``: a ``ValueError`` naming them. ``"epsilon"``: pycytominer's
        exact mad_robustize numbers (divide by ``MAD + epsilon``), with a warning;
        raises when that would give inf (``epsilon=0``).
    spherize_method, spherize_center, spherize_epsilon
        Sphering variant, centring (required for the ``-cor`` variants) and the
        regularisation added to the singular values.
    n_quantiles
        Quantile landmarks of ``inverse_normal`` (capped at the number of reference rows).
    max_variance_share, outlier_cutoff
        Guardrail on the output (in-memory matrices): a
        :class:`~imgprof.pp.FeatureDominanceWarning` when one feature carries more
        than ``max_variance_share`` of the total variance, or any value is beyond
        ``±outlier_cutoff`` (pycytominer's ``drop_outliers`` default, 500). Either
        ``None`` switches that check off. The shares are recorded in the provenance log.
    {layer}
    key_added
        Where the result goes. ``None``: overwrite the input (``.X`` or ``layer``);
        otherwise ``adata.layers[key_added]``. ``spherize`` with ``"PCA"``/``"PCA-cor"``
        leaves feature space, so its result goes to ``adata.obsm[key_added or "X_spherize"]``.
    {copy}

    Returns
    -------
    ``None``, or the normalized AnnData when ``copy=True``. The step is recorded in
    the provenance log (``ip.provenance(adata)``).

    Raises
    ------
    ValueError
        An unknown method, inf values, a control query matching nothing (overall
        or in a group), groups with fewer than two reference rows, features that
        are all-NaN in a group's references, NaN with ``spherize``, constant
        reference features with ``spherize``, ``zero_scale="raise"`` with
        zero-scale features.
    KeyError
        A missing ``by`` column, layer or feature.

    Examples
    --------
    >>> import numpy as np, imgprof as ip
    >>> adata = ip.datasets.simulate(n_plates=2, seed=0)
    >>> ip.pp.normalize(adata, "mad_robustize", controls="Metadata_control_type == 'negcon'", by="Metadata_Plate")
    >>> ctrl = adata[adata.obs["Metadata_control_type"] == "negcon"]
    >>> float(abs(np.median(ctrl.X[ctrl.obs["Metadata_Plate"] == "plate_1"], axis=0)).max()) < 1e-12
    True
    """
    entry = NORMALIZERS.get(method, where="normalize")
    opts = dict(epsilon=epsilon, zero_scale=zero_scale, spherize_method=spherize_method,
                spherize_center=spherize_center, spherize_epsilon=spherize_epsilon, n_quantiles=n_quantiles)
    controls = _check_options(entry, controls, samples, opts)
    adata = start(adata, copy)
    if adata.n_obs == 0:
        raise ValueError("adata has 0 observations; nothing to normalize.")
    X_in = get_matrix(adata, layer=layer)
    cols = resolve_features(adata, features, param="features", unique=True)
    all_cols = cols.size == adata.n_vars and bool((cols == np.arange(adata.n_vars)).all())
    var_names = adata.var_names[cols]
    what = f"adata.layers[{layer!r}]" if layer is not None else "adata.X"
    X = check_array(X_in if all_cols else X_in[:, cols], param=what, var_names=var_names,
                    allow_nan=entry.meta.get("allow_nan", True), min_rows=0, min_cols=0, check_dask_finite=True)
    groups = _groups(adata, controls, by, var_names)
    state, result = _fit_transform(entry, as_float64(X), groups, opts)

    extra = {"n_groups": groups.n_groups, "n_reference_rows": int((groups.fit_codes >= 0).sum()),
             **getattr(state, "extra", {})}
    obsm_key = None if getattr(state, "same_features", True) else key_added or f"X_{entry.name}"
    if X_in.dtype == np.float32:
        result = result.astype(np.float32)
    _guardrail(result, None if obsm_key is not None else var_names, entry.name, max_variance_share, outlier_cutoff, extra)
    params = {
        "method": entry.name,
        "controls": controls if controls is None or isinstance(controls, str) else
        f"<selection of {extra['n_reference_rows']} rows>",
        "by": by, "features": None if features is None else len(cols), "epsilon": epsilon, "zero_scale": zero_scale,
        **{k: opts[k] if k in entry.meta.get("options", ()) else None for k in _METHOD_OPTIONS},
        "layer": layer, "key_added": key_added, "max_variance_share": max_variance_share,
        "outlier_cutoff": outlier_cutoff,
    }
    _store(adata, result, X_in, None if all_cols else cols, obsm_key=obsm_key, layer=layer, key_added=key_added,
           params=params, extra=extra)
    return finish(adata, copy)
