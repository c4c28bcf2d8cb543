"""Plots of single-cell distances: group × group heatmap, volcano of distance vs −log10 p, cluster fractions."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._core.docs import doc_params
from ._utils import PLOT_DOC, PlotReturn, finish, get_ax, label_points, neg_log10, significance_scatter


def _uns(adata, key: str, fn: str):
    if key not in adata.uns:
        found = [k for k in adata.uns if str(k).startswith(("distance", "cluster_composition"))]
        raise KeyError(f"{fn}: adata.uns[{key!r}] not found; run the matching ip.tl function first (found: {found}).")
    return adata.uns[key]


@doc_params(**PLOT_DOC)
def distance_heatmap(
    adata: AnnData,
    key: str = "distance_edistance",
    *,
    groups: Sequence[str] | None = None,
    cluster: bool = True,
    cmap: str = "viridis",
    annotate: bool | None = None,
    ax: Axes | None = None, title: str | None = None,
    show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
) -> PlotReturn:
    """Heatmap of the group × group distance matrix written by :func:`imgprof.tl.distance`.

    Parameters
    ----------
    adata
        AnnData with ``adata.uns[key]["pairwise"]``.
    key
        ``.uns`` key (``f"distance_{metric}"`` by default in :func:`imgprof.tl.distance`).
    groups
        Subset and order of groups to show.
    cluster
        Order groups by average-linkage clustering of the matrix (ignored when ``groups`` is given).
    cmap
        Matplotlib colormap.
    annotate
        Write the values in the cells (default: when at most 15 groups).
    {ax}
    title
        Axes title (default: the metric).
    {show_save}

    Returns
    -------
    The ``Axes`` (or the ``Figure`` with ``return_fig``); ``None`` when shown.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate_cells(n_perturbations=3, n_cells=50, seed=0)
    >>> ip.tl.distance(adata, "Metadata_perturbation", obsm_key="X")
    >>> ax = ip.pl.distance_heatmap(adata, show=False)
    >>> ax.get_title()
    'edistance'
    """
    res = _uns(adata, key, "distance_heatmap")
    if "pairwise" not in res:
        raise KeyError(f"distance_heatmap: adata.uns[{key!r}] has no 'pairwise' matrix (computed with pairwise=False).")
    D = res["pairwise"]
    if groups is not None:
        missing = [g for g in groups if g not in D.index]
        if missing:
            raise KeyError(f"groups: {missing} not in the distance matrix (groups: {list(D.index)[:10]}...).")
        D = D.loc[list(groups), list(groups)]
    elif cluster and len(D) > 2:
        from scipy.cluster.hierarchy import leaves_list, linkage
        from scipy.spatial.distance import squareform

        M = D.to_numpy().copy()
        M = np.maximum((M + M.T) / 2, 0)  # E-distance can be slightly negative for near-identical groups
        np.fill_diagonal(M, 0)
        order = leaves_list(linkage(squareform(M, checks=False), "average"))
        D = D.iloc[order, order]
    n = len(D)
    fig, ax = get_ax(ax, figsize=(1.2 + 0.35 * n, 0.8 + 0.35 * n) if n > 6 else (4.5, 4))
    im = ax.imshow(D.to_numpy(), cmap=cmap)
    ax.set_xticks(range(n), labels=list(D.columns), rotation=90)
    ax.set_yticks(range(n), labels=list(D.index))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=str(res.get("params", {}).get("metric", key)))
    if annotate if annotate is not None else n <= 15:
        vmax = np.nanmax(D.to_numpy()) if n else 0
        for i in range(n):
            for j in range(n):
                v = D.iat[i, j]
                ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=7,
                        color="white" if v < 0.5 * vmax else "black")
    ax.set_title(title if title is not None else str(res.get("params", {}).get("metric", key)))
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)


@doc_params(**PLOT_DOC)
def distance_volcano(
    adata: AnnData,
    key: str = "distance_test",
    *,
    p_col: str = "pvalue_adj",
    threshold: float | None = 0.05,
    n_labels: int = 5,
    colors: tuple[str, str] = ("#c44e52", "#8c8c8c"),
    ax: Axes | None = None, title: str | None = None,
    show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
) -> PlotReturn:
    """Volcano-style plot of each perturbation: distance to controls (x) against −log10 p (y).

    Parameters
    ----------
    adata
        AnnData with the table of :func:`imgprof.tl.distance_test` in ``adata.uns[key]``.
    key
        ``.uns`` key of that table.
    p_col
        ``"pvalue_adj"`` (BH) or ``"pvalue"``.
    threshold
        Significance level: a dashed line, and the colour of points below it.
    n_labels
        Annotate this many perturbations with the largest distances among the significant ones.
    colors
        Colours of significant and non-significant perturbations.
    {ax}
    title
        Axes title (default: counts of significant perturbations).
    {show_save}

    Returns
    -------
    The ``Axes`` (or the ``Figure`` with ``return_fig``); ``None`` when shown.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate_cells(n_perturbations=4, n_cells=50, effects=["mean", "none"] * 2, seed=0)
    >>> ip.tl.distance_test(adata, "Metadata_perturbation", "control", obsm_key="X", n_perms=99)
    >>> fig = ip.pl.distance_volcano(adata, show=False, return_fig=True)
    >>> len(fig.axes)
    1
    """
    tab = _uns(adata, key, "distance_volcano")
    if not isinstance(tab, pd.DataFrame) or "distance" not in tab or p_col not in tab:
        raise KeyError(f"distance_volcano: adata.uns[{key!r}] is not a distance_test table with 'distance' and {p_col!r}.")
    x = tab["distance"].to_numpy(dtype=float)
    p = tab[p_col].to_numpy(dtype=float)
    y = neg_log10(p)
    sig = p < threshold if threshold is not None else np.zeros(len(p), dtype=bool)
    fig, ax = get_ax(ax, figsize=(4.5, 4.0))
    significance_scatter(ax, x, y, sig, colors, size=16, alpha=(0.85, 0.7), threshold=threshold, p_col=p_col)
    if n_labels > 0 and sig.any():
        top = np.flatnonzero(sig)[np.argsort(-x[sig])][:n_labels]
        label_points(ax, x[top], y[top], tab.index[top], offset=(3, 3))
    ax.set_xlabel("distance to controls")
    ax.set_title(title if title is not None else f"{int(sig.sum())} / {len(p)} perturbations with {p_col} < {threshold}")
    ax.legend(frameon=False, fontsize=7, loc="lower right")
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)


@doc_params(**PLOT_DOC)
def cluster_fractions(
    adata: AnnData,
    key: str = "cluster_composition",
    *,
    groups: Sequence[str] | None = None,
    cmap: str = "tab20",
    ax: Axes | None = None, title: str | None = None,
    show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
) -> PlotReturn:
    """Stacked bars of each group's cell-state (cluster) fractions from :func:`imgprof.tl.cluster_composition`.

    Parameters
    ----------
    adata
        AnnData with ``adata.uns[key]["fractions"]``.
    key
        ``.uns`` key.
    groups
        Subset and order of groups (default: all, the reference last as computed).
    cmap
        Colormap for the clusters.
    {ax}
    title
        Axes title.
    {show_save}

    Returns
    -------
    The ``Axes`` (or the ``Figure`` with ``return_fig``); ``None`` when shown.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate_cells(n_perturbations=2, n_cells=80, effects="subpopulation", effect_size=1.5)
    >>> ip.tl.cluster_composition(adata, "Metadata_perturbation", "control", obsm_key="X", resolution=0.3)
    >>> ax = ip.pl.cluster_fractions(adata, show=False)
    """
    import matplotlib.pyplot as plt

    F = _uns(adata, key, "cluster_fractions")["fractions"]
    if groups is not None:
        F = F.loc[list(groups)]
    fig, ax = get_ax(ax, figsize=(1.5 + 0.4 * len(F), 3.5))
    colors = plt.get_cmap(cmap)(np.linspace(0, 1, max(F.shape[1], 2)))
    bottom = np.zeros(len(F))
    for k, col in enumerate(F.columns):
        ax.bar(range(len(F)), F[col].to_numpy(), bottom=bottom, color=colors[k], label=str(col), width=0.8)
        bottom += F[col].to_numpy()
    ax.set_xticks(range(len(F)), labels=list(F.index), rotation=90)
    ax.set_ylabel("fraction of cells")
    ax.set_ylim(0, 1)
    ax.legend(title="cluster", bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=7, frameon=False)
    if title:
        ax.set_title(title)
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)
