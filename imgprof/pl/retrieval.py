"""Plots for retrieval metrics: mAP vs significance, percent replicating vs its null."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes

import numpy as np
import pandas as pd

from .._core.docs import doc_params
from ._utils import PLOT_DOC, PlotReturn, finish, get_ax, label_points, neg_log10, significance_scatter


@doc_params(**PLOT_DOC)
def map_scatter(
    map_df: pd.DataFrame,
    *,
    p_col: str = "corrected_p_value",
    threshold: float | None = 0.05,
    label: str | None = None,
    n_labels: int = 0,
    colors: tuple[str, str] = ("#c44e52", "#8c8c8c"),
    ax: Axes | None = None, title: str | None = None,
    show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
) -> PlotReturn:
    """Scatter of mAP (x) against −log10 p (y), significant groups highlighted.

    Parameters
    ----------
    map_df
        Output of :func:`imgprof.metrics.mean_average_precision` (or the activity /
        consistency recipes).
    p_col
        p-value column on the y axis (``"corrected_p_value"`` or ``"p_value"``).
    threshold
        Significance level drawn as a horizontal line and used for colours
        (``None``: no line, colour by ``below_corrected_p`` if present).
    label
        Column naming each group; with ``n_labels > 0`` the most significant
        groups are annotated.
    n_labels
        Write ``label`` next to the ``n_labels`` most significant points (0 = none).
    colors
        Colours of significant and non-significant groups.
    {ax}
    title
        Axes title; default reports the share of significant groups.
    {show_save}

    Returns
    -------
    The matplotlib ``Axes`` (``None`` when shown).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> act = ip.metrics.phenotypic_activity(adata, "Metadata_broad_sample", null_size=1000)
    >>> ax = ip.pl.map_scatter(act, show=False)
    """
    for c in ("mean_average_precision", p_col):
        if c not in map_df.columns:
            raise KeyError(f"map_scatter: column {c!r} not in the mAP table (columns: {list(map_df.columns)}).")
    fig, ax = get_ax(ax, figsize=(4.5, 4.0))
    p = map_df[p_col].to_numpy(dtype=float)
    y = neg_log10(p)
    x = map_df["mean_average_precision"].to_numpy(dtype=float)
    if threshold is not None:
        sig = p < threshold
    elif "below_corrected_p" in map_df:
        sig = map_df["below_corrected_p"].to_numpy(dtype=bool)
    else:
        sig = np.zeros(len(x), dtype=bool)
    significance_scatter(ax, x, y, sig, colors, size=14, alpha=(0.8, 0.7), threshold=threshold, p_col=p_col)
    ax.set_xlabel("mAP")
    ax.set_xlim(-0.02, 1.02)
    if label is not None and n_labels > 0:
        if label not in map_df:
            raise KeyError(f"map_scatter: label column {label!r} not in the mAP table.")
        top = np.argsort(-y, kind="stable")[:n_labels]
        label_points(ax, x[top], y[top], map_df[label].iloc[top])
    frac = sig.mean() if len(sig) else 0.0
    ax.set_title(title if title is not None else f"{100 * frac:.0f}% significant ({int(sig.sum())}/{len(sig)})")
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)


@doc_params(**PLOT_DOC)
def percent_replicating(
    result: pd.DataFrame,
    *,
    bins: int = 30,
    colors: tuple[str, str] = ("#4c72b0", "#8c8c8c"),
    ax: Axes | None = None, title: str | None = None,
    show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
) -> PlotReturn:
    """Histogram of replicate (or matching) median correlations against their null.

    Parameters
    ----------
    result
        :class:`imgprof.metrics.ReplicatingResult` from
        :func:`imgprof.metrics.percent_replicating` or :func:`~imgprof.metrics.percent_matching`.
    bins
        Histogram bins (shared by both distributions).
    colors
        Colours of the observed and null distributions.
    {ax}
    title
        Default reports the percent replicating/matching.
    {show_save}

    Returns
    -------
    The matplotlib ``Axes`` (``None`` when shown).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> res = ip.metrics.percent_replicating(adata, "Metadata_broad_sample",
    ...                                      controls="Metadata_broad_sample == 'DMSO'", n_null=200)
    >>> ax = ip.pl.percent_replicating(res, show=False)
    """
    from ..metrics.replicating import ReplicatingResult

    if not isinstance(result, ReplicatingResult):
        raise TypeError(f"percent_replicating: expected a ReplicatingResult, got {type(result).__name__}.")
    fig, ax = get_ax(ax, figsize=(4.5, 4.0))
    obs = result.table["median_correlation"].dropna().to_numpy()
    null = result.null_values
    both = np.concatenate([obs, null]) if null.size else obs
    edges = np.histogram_bin_edges(both, bins=bins)
    rep = result.kind == "replicating"
    ax.hist(null, bins=edges.tolist(), density=True, color=colors[1], alpha=0.6,
            label="null (non-replicates)" if rep else "null (non-matching)")
    ax.hist(obs, bins=edges.tolist(), density=True, color=colors[0], alpha=0.6, label="replicates" if rep else "matching")
    if null.size:
        ax.axvline(np.quantile(null, 1 - result.alpha), color="k", ls="--", lw=0.8,
                   label=f"null {100 * (1 - result.alpha):.0f}th pct (pooled)")
    ax.set_xlabel(f"median pairwise {result.method} correlation")
    ax.set_ylabel("density")
    ax.set_title(title if title is not None else f"percent {result.kind}: {100 * result.percent:.1f}%")
    ax.legend(frameon=False, fontsize=8)
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)
