"""Retrieval metrics: average precision, mAP with permutation p-values, percent replicating.

The AP/mAP functions reproduce copairs 0.5 (pair definitions, ties, NaN rules,
null distributions) on AnnData, with a blocked matrix-product kernel.
"""

from .._core.namespace import public_dir
from .average_precision import (
    RetrievalResult,
    RetrievalWarning,
    average_precision,
    average_precision_kernel,
    expected_ap,
    mean_average_precision,
    normalized_ap,
    phenotypic_activity,
    phenotypic_consistency,
)
from .null import (
    ap_distribution,
    ap_p_values,
    benjamini_hochberg,
    clear_null_cache,
    group_null_p_values,
    null_distributions,
    random_ap,
)

__all__ = [
    "RetrievalResult",
    "RetrievalWarning",
    "ap_distribution",
    "ap_p_values",
    "average_precision",
    "average_precision_kernel",
    "benjamini_hochberg",
    "clear_null_cache",
    "expected_ap",
    "group_null_p_values",
    "mean_average_precision",
    "normalized_ap",
    "null_distributions",
    "phenotypic_activity",
    "phenotypic_consistency",
    "random_ap",
]

from .replicating import ReplicatingResult, percent_matching, percent_replicating

__all__ += ["ReplicatingResult", "percent_matching", "percent_replicating"]

from .scale import phenotypic_activity_blocked  # noqa: E402

__all__ += ["phenotypic_activity_blocked"]

__dir__ = public_dir(__all__)  # tab completion shows the public API only
