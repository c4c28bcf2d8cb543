"""Result types and the warning of the retrieval metrics (private; re-exported by ``imgprof.metrics``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .._core.store import store
from .._core.validation import start

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


#: Shared text of ``key_added`` for the functions returning a table.
DOC_KEY_ADDED = (
    "key_added\n    Also store the returned per-group table in ``adata.uns[key_added]`` (tables and reports go\n"
    "    to ``.uns``; see :mod:`imgprof._core.store`), with a provenance step. Default: not stored."
)


def check_table_key(adata: Any, key_added: str | None) -> None:
    """Before computing: a table can be stored (``key_added`` a string, ``adata`` not a view)."""
    if key_added is None:
        return
    if not isinstance(key_added, str) or not key_added:
        raise TypeError(f"key_added must be a non-empty string or None, got {key_added!r}.")
    start(adata, False)


def store_table(adata: Any, table: pd.DataFrame, key_added: str | None, *, function: str, params: dict[str, Any]) -> None:
    """Write ``table`` to ``adata.uns[key_added]`` and log the step (nothing when ``key_added`` is None)."""
    if key_added is not None:
        store(adata, table, slot="uns", key_added=key_added, function=function, params=params | {"key_added": key_added},
              n_rows=len(table))
