"""scib-metrics' aggregation of benchmark scores: min-max scaling, per-type means, total = 0.4 batch + 0.6 bio."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._registry import BATCH, BIO

AGGREGATE = "Aggregate score"
TOTAL = "Total"


def min_max(df: pd.DataFrame) -> pd.DataFrame:
    """Scale every column to ``[0, 1]`` like ``sklearn.preprocessing.MinMaxScaler`` (constant column → 0, NaN kept).

    Parameters
    ----------
    df
        Scores, one column per metric.

    Returns
    -------
    pandas.DataFrame
        The scaled scores.

    Examples
    --------
    >>> import pandas as pd
    >>> from imgprof.bench.benchmarker import min_max
    >>> min_max(pd.DataFrame({"m": [1.0, 2.0, 3.0]}))["m"].tolist()
    [0.0, 0.5, 1.0]
    """
    V = df.to_numpy(dtype=float)
    lo, hi = np.nanmin(V, axis=0), np.nanmax(V, axis=0)
    rng = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        S = np.where(rng > 0, (V - lo) / np.where(rng > 0, rng, 1.0), 0.0)
    S[np.isnan(V)] = np.nan
    return pd.DataFrame(S, index=df.index, columns=df.columns)


def aggregate_scores(scores: pd.DataFrame, types: Sequence[str]) -> dict[str, Any]:
    """Per-type means of the metrics (NaN skipped) and, when both types are there, total = 0.4 batch + 0.6 bio.

    Parameters
    ----------
    scores
        One row per embedding, one column per metric.
    types
        The type (``"Batch correction"``/``"Bio conservation"``) of each column.

    Returns
    -------
    dict
        ``{"Batch correction": Series, "Bio conservation": Series, "Total": Series}`` (those that apply).

    Examples
    --------
    >>> import pandas as pd
    >>> from imgprof.bench._aggregate import aggregate_scores
    >>> s = pd.DataFrame({"a": [1.0], "b": [0.5]})
    >>> float(aggregate_scores(s, ["Batch correction", "Bio conservation"])["Total"].iloc[0])
    0.7
    """
    types = list(types)
    agg: dict[str, Any] = {}
    for t in (BATCH, BIO):
        cols = [c for c, ct in zip(scores.columns, types) if ct == t]
        if cols:
            agg[t] = scores[cols].mean(axis=1, skipna=True)
    if BATCH in agg and BIO in agg:
        agg[TOTAL] = 0.4 * agg[BATCH] + 0.6 * agg[BIO]
    return agg
