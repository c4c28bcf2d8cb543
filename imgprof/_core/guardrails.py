"""Guardrails: checks that speak up when an analysis would mislead.

Each check raises a warning of its own class (all subclasses of
:class:`ImgprofGuardrailWarning`, itself a ``UserWarning``), so a user can
filter, escalate (``warnings.simplefilter("error", FeatureDominanceWarning)``)
or test for it, and the report lists every one raised during a run.

* :class:`FeatureDominanceWarning` (``ip.pp.normalize``, ``ip.pp.feature_select``):
  one feature carries more than ``max_share`` of the total variance, or values
  exceed an outlier cutoff. Distances, PCA, mAP and every scib score are then
  driven by a handful of features.
* :class:`CircularTuningWarning` (``ip.bench.Benchmarker``): an embedding was
  tuned on the label it is scored with (e.g. sphering's epsilon chosen by
  replicate mAP on ``Metadata_target_gene`` and then benchmarked on it), or
  fitted on the rows that serve as negative controls in mAP.
* :class:`BaselineWarning` (``ip.bench.Benchmarker``): a correction is compared
  without an uncorrected baseline in the same space (PCA of the same features
  for methods that start from PCA).
* :class:`DegenerateMetricWarning` (``ip.bench.Benchmarker``): a metric takes
  one value for every embedding, so it cannot rank them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .groups import column_var_absmax

__all__ = [
    "BaselineWarning",
    "CircularTuningWarning",
    "DegenerateMetricWarning",
    "FeatureDominanceWarning",
    "ImgprofGuardrailWarning",
    "feature_dominance",
]

#: Default guardrail thresholds.
MAX_VARIANCE_SHARE = 0.10
OUTLIER_CUTOFF = 500.0


class ImgprofGuardrailWarning(UserWarning):
    """Base class of the warnings raised by imgprof's analysis guardrails."""


class FeatureDominanceWarning(ImgprofGuardrailWarning):
    """One feature carries too much of the total variance, or values exceed the outlier cutoff."""


class CircularTuningWarning(ImgprofGuardrailWarning):
    """An embedding was tuned (or fitted) on the labels or negative controls it is evaluated with."""


class BaselineWarning(ImgprofGuardrailWarning):
    """A correction method has no uncorrected baseline in the same space."""


class DegenerateMetricWarning(ImgprofGuardrailWarning):
    """A benchmark metric has the same value for every embedding and cannot rank them."""


def feature_dominance(X, var_names: Sequence[str] | None = None) -> dict:
    """Variance share of each feature and the largest absolute value of a matrix.

    Parameters
    ----------
    X
        ``n x d`` matrix (NaN ignored).
    var_names
        Feature names (default ``0..d-1``).

    Returns
    -------
    dict with ``share`` (variance share of each feature, sums to 1),
    ``top`` (list of ``(name, share)`` for the three largest), ``max_abs``,
    ``max_abs_feature``, ``n_outlier_features`` (beyond the default cutoff) and
    ``abs_max`` (largest absolute value of each feature).

    Examples
    --------
    >>> import numpy as np
    >>> from imgprof._core.guardrails import feature_dominance
    >>> X = np.random.default_rng(0).normal(size=(100, 5)); X[:, 0] *= 10
    >>> round(feature_dominance(X)["top"][0][1], 2) > 0.9
    True
    """
    X = np.asarray(X, dtype=np.float64)
    d = X.shape[1]
    names = [str(v) for v in (var_names if var_names is not None else range(d))]
    var, absmax = column_var_absmax(X)
    total = var.sum()
    share = var / total if total > 0 else np.zeros(d)
    order = np.argsort(-share, kind="stable")[:3]
    j = int(np.argmax(absmax)) if d else 0
    return {
        "share": share,
        "top": [(names[i], float(share[i])) for i in order],
        "max_abs": float(absmax[j]) if d else 0.0,
        "max_abs_feature": names[j] if d else None,
        "n_outlier_features": int((absmax > OUTLIER_CUTOFF).sum()),
        "abs_max": absmax,
    }


def check_feature_dominance(
    X,
    var_names: Sequence[str] | None,
    *,
    where: str,
    max_share: float | None = MAX_VARIANCE_SHARE,
    outlier_cutoff: float | None = OUTLIER_CUTOFF,
    stacklevel: int = 3,
) -> dict | None:
    """Warn (:class:`FeatureDominanceWarning`) when one feature dominates or values exceed the cutoff.

    Returns the :func:`feature_dominance` summary (``None`` when both checks are off
    or the matrix is lazy), plus ``"warning"``: the message, or ``None``.
    """
    if max_share is None and outlier_cutoff is None:
        return None
    if hasattr(X, "compute") or X.shape[1] < 2:  # lazy (dask) matrices are not computed for a check
        return None
    info = feature_dominance(X, var_names)
    abs_max = info.pop("abs_max")
    msgs = []
    name, top = info["top"][0]
    if max_share is not None and top > max_share:
        top2 = sum(s for _, s in info["top"][:2])
        msgs.append(
            f"feature {name!r} carries {top:.0%} of the total variance (top two features: {top2:.0%}); "
            f"distances, PCA, mAP and batch metrics will be driven by it"
        )
    if outlier_cutoff is not None:
        n_out = int((abs_max > outlier_cutoff).sum())
        info["n_outlier_features"] = n_out
        if n_out:
            msgs.append(
                f"{n_out} feature(s) have values beyond ±{outlier_cutoff:g} (largest |value| "
                f"{info['max_abs']:.3g} in {info['max_abs_feature']!r})"
            )
    info["warning"] = None
    if msgs:
        msg = (
            f"{where}: " + "; ".join(msgs) + ". Remove such features, e.g. ip.pp.feature_select(adata, "
            "operation=[..., 'drop_outliers']) (pycytominer's drop_outliers), or normalize each batch with "
            "method='standardize' before comparing batch corrections."
        )
        info["warning"] = msg
        warnings.warn(msg, FeatureDominanceWarning, stacklevel=stacklevel)
    return info
