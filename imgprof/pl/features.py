"""Feature-anatomy summaries: which compartments / channels / feature groups drive a profile."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._core.docs import doc_params
from .._core.selection import Selection
from .._core.validation import get_matrix, resolve_mask
from ._utils import PLOT_DOC, PlotReturn, finish, get_ax


def feature_group_summary(
    adata: AnnData, *,
    groupby: str | Sequence[str] = ("compartment", "feature_group"), samples: Selection = None,
    layer: str | None = None, stat: str = "mean_abs",
) -> pd.DataFrame:
    """Summarise profiles by feature anatomy (``.var`` columns).

    For the selected samples, each feature's mean absolute value (``stat="mean_abs"``,
    suited to normalized profiles where 0 = control) or its variance
    (``stat="var"``) is averaged within each anatomy group.

    Parameters
    ----------
    adata
        Profiles whose ``.var`` holds anatomy columns (``compartment``, ``feature_group``, ``channel``).
    groupby
        ``.var`` column(s) to group features by.
    samples
        Which profiles (query string, mask or names; default all).
    layer
        Use a layer instead of ``.X``.
    stat
        ``"mean_abs"`` or ``"var"``.

    Returns
    -------
    DataFrame with one row per anatomy group: ``n_features`` and ``score``, sorted by score.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> df = ip.pl.feature_group_summary(adata, groupby="channel", samples="Metadata_pert_type == 'trt'")
    >>> set(df.index) >= {"DNA", "RNA"}
    True
    """
    keys = [groupby] if isinstance(groupby, str) else list(groupby)
    missing = [k for k in keys if k not in adata.var.columns]
    if missing:
        raise KeyError(f"groupby: {missing} not in adata.var columns ({list(adata.var.columns)}).")
    mask = resolve_mask(adata, samples, param="samples")
    X = np.asarray(get_matrix(adata, layer=layer))[mask]
    if stat == "mean_abs":
        per_feature = np.nanmean(np.abs(X), axis=0)
    elif stat == "var":
        per_feature = np.nanvar(X, axis=0)
    else:
        raise ValueError(f"stat must be 'mean_abs' or 'var', got {stat!r}.")
    df = adata.var[keys].astype(str).replace({"<NA>": "none", "nan": "none"}).copy()
    df["score"] = per_feature
    out = df.groupby(keys, observed=True)["score"].agg(n_features="size", score="mean")
    return out.sort_values("score", ascending=False)


@doc_params(**PLOT_DOC)
def feature_groups(
    adata: AnnData, *,
    groupby: str | Sequence[str] = ("compartment", "feature_group"), samples: Selection = None,
    layer: str | None = None, stat: str = "mean_abs",
    ax: Axes | None = None, show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
) -> PlotReturn:
    """Bar chart of :func:`feature_group_summary`: which compartments / feature groups / channels carry the signal.

    Parameters
    ----------
    adata
        Profiles whose ``.var`` holds anatomy columns (``compartment``, ``feature_group``, ``channel``).
    groupby, samples, layer, stat
        As in :func:`feature_group_summary`.
    {ax}
    {show_save}

    Returns
    -------
    Axes or Figure or None
        The axes (the figure with ``return_fig=True``); ``None`` when shown.

    Examples
    --------
    >>> import imgprof as ip
    >>> ax = ip.pl.feature_groups(ip.datasets.lincs_plate(), groupby="channel", show=False)
    """
    df = feature_group_summary(adata, groupby=groupby, samples=samples, layer=layer, stat=stat)
    labels = [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in df.index]
    fig, ax = get_ax(ax, figsize=(6, 0.25 * len(df) + 1))
    ax.barh(labels[::-1], df["score"].to_numpy()[::-1], color="#4C72B0")
    ax.set_xlabel("mean |value|" if stat == "mean_abs" else "variance")
    ax.set_title("Feature groups")
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)
