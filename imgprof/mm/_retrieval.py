"""Per-modality retrieval tables of :func:`imgprof.mm.compare_retrieval` (activity, consistency, replicating).

Private module of :mod:`imgprof.mm.crossmodal`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._core.validation import check_obs_keys, resolve_mask

#: Columns of the compare_retrieval table.
RESULT_COLS = [
    "modality", "task", "id", "n_profiles", "mean_average_precision", "median_correlation", "p_value",
    "corrected_p_value", "retrieved",
]


def controls_and_labels(x: ad.AnnData, m: str, pert: str, controls: Any) -> tuple[ad.AnnData, np.ndarray]:
    """The control mask of one modality; controls without a perturbation id are labelled ``"__control__"``."""
    check_obs_keys(x, pert, param=f"perturbation ({m})")
    c = controls
    if isinstance(c, str) and c in x.obs.columns and x.obs[c].dtype == bool:
        c = x.obs[c].to_numpy()
    cmask = resolve_mask(x, c, param=f"controls ({m})")
    miss = x.obs[pert].isna().to_numpy()
    if (miss & ~cmask).any():
        raise ValueError(
            f"perturbation ({m}): {int((miss & ~cmask).sum())} non-control row(s) have no {pert!r} value; "
            "fill them or mark them as controls."
        )
    if miss.any():  # controls without a perturbation id (DMSO rows often have none): label them explicitly
        obs = x.obs.copy()
        col = obs[pert].astype(object)
        obs[pert] = col.where(~miss, "__control__")
        x = ad.AnnData(X=x.X, obs=obs, var=x.var)
    return x, cmask


def _map_rows(m: str, task: str, table: pd.DataFrame, id_col: str) -> pd.DataFrame:
    return pd.DataFrame({
        "modality": m, "task": task, "id": table[id_col].astype(str).to_numpy(),
        "n_profiles": table["n_profiles"].to_numpy(), "mean_average_precision": table["mean_average_precision"].to_numpy(),
        "p_value": table["p_value"].to_numpy(), "corrected_p_value": table["corrected_p_value"].to_numpy(),
        "retrieved": table["below_corrected_p"].to_numpy(),
    })


def activity_rows(x: ad.AnnData, m: str, pert: str, cmask: np.ndarray, *, metric: str | Callable, null_size: int,
                  threshold: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replicate retrieval against the controls: the rows of the result table, and the activity table."""
    from ..metrics import RetrievalWarning, phenotypic_activity

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RetrievalWarning)
        act = phenotypic_activity(x, pert, cmask, metric=metric, null_size=null_size, threshold=threshold, seed=seed)
    return _map_rows(m, "activity", act, pert), act


def consistency_rows(x: ad.AnnData, m: str, ann: str, pert: str, cmask: np.ndarray, active: pd.DataFrame | None, *,
                     multilabel_sep: str | None, metric: str | Callable, null_size: int, threshold: float,
                     seed: int) -> pd.DataFrame | None:
    """Mechanism retrieval (perturbations sharing a label); ``None`` when no profile can be scored."""
    from ..metrics import RetrievalWarning, phenotypic_consistency

    check_obs_keys(x, ann, param=f"annotation ({m})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RetrievalWarning)
            cons = phenotypic_consistency(
                x, ann, pert, controls=cmask, active=active, multilabel_sep=multilabel_sep,
                metric=metric, null_size=null_size, threshold=threshold, seed=seed,
            )
    except ValueError as e:
        if "no profile" not in str(e) and "no profile has a finite AP" not in str(e):
            raise
        return None
    return _map_rows(m, "consistency", cons, ann)


def replicating_rows(x: ad.AnnData, m: str, pert: str, cmask: np.ndarray, *, n_null: int, threshold: float,
                     seed: int) -> pd.DataFrame:
    """Percent replicating (median replicate correlation above a null of non-replicates)."""
    from ..metrics import percent_replicating

    rep = percent_replicating(x, pert, controls=cmask, n_null=n_null, alpha=threshold, seed=seed)
    t = rep.table.loc[rep.table["median_correlation"].notna()]
    return pd.DataFrame({
        "modality": m, "task": "replicating", "id": t[pert].astype(str).to_numpy(),
        "n_profiles": t["n_profiles"].to_numpy(), "mean_average_precision": np.nan,
        "median_correlation": t["median_correlation"].to_numpy(), "p_value": t["p_value"].to_numpy(),
        "corrected_p_value": np.nan, "retrieved": t["above_null"].to_numpy(),
    })
