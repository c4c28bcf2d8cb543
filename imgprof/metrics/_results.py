"""Result types and the warning of the retrieval metrics (private; re-exported by ``imgprof.metrics``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd

AP_COLUMNS = ("n_pos_pairs", "n_total_pairs", "average_precision", "normalized_average_precision")


class RetrievalWarning(UserWarning):
    """Profiles that get a NaN average precision (no positives, no negatives, invalid vector)."""


@dataclass(frozen=True)
class RetrievalResult:
    """Outcome of :func:`phenotypic_activity` / :func:`phenotypic_consistency` with ``return_ap=True``.

    Attributes
    ----------
    map
        One row per group (perturbation or label): mAP, p-value, corrected
        p-value, ``below_corrected_p`` … — the table returned without ``return_ap``.
    ap
        One row per scored profile (or (profile, label)): ``n_pos_pairs``,
        ``n_total_pairs``, ``average_precision``, ``normalized_average_precision``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> res = ip.metrics.phenotypic_activity(adata, "Metadata_broad_sample", null_size=200, return_ap=True)
    >>> res
    RetrievalResult(map: 58 groups, ap: 384 profiles)
    >>> int(res.map["below_corrected_p"].sum()) <= len(res.map), "average_precision" in res.ap
    (True, True)
    """

    map: pd.DataFrame
    ap: pd.DataFrame

    def __repr__(self) -> str:
        return f"RetrievalResult(map: {len(self.map)} groups, ap: {len(self.ap)} profiles)"

    def __iter__(self) -> Iterator[pd.DataFrame]:
        raise TypeError(
            "RetrievalResult is not a tuple: use result.map (per group) and result.ap (per profile); "
            "before imgprof 0.x, return_ap=True returned the tuple (ap, map)."
        )
