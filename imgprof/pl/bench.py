"""Results table of a batch-correction benchmark (scib-metrics' style, matplotlib only)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

import numpy as np
import pandas as pd

from .._core.docs import doc_params
from ._utils import PLOT_DOC, PlotReturn, finish, get_ax

_AGG = "Aggregate score"
_TYPE_ORDER = ("Bio conservation", "Batch correction", _AGG)


def _wide(results: Any, min_max_scale: bool) -> pd.DataFrame:
    """Wide table (embedding × (metric_type, metric)) from a Benchmarker, a tidy or a wide results frame."""
    if hasattr(results, "get_results"):  # an imgprof or scib-metrics Benchmarker
        results = results.get_results(min_max_scale=min_max_scale)
        min_max_scale = False
    if isinstance(results, pd.DataFrame) and "Metric Type" in results.index:  # scib-metrics' wide shape
        types = results.loc["Metric Type"]
        body = results.drop("Metric Type").astype(float)
        body.columns = pd.MultiIndex.from_tuples(list(zip(types, body.columns)), names=["metric_type", "metric"])
        body.index.name = "embedding"
        results = body
    if not isinstance(results, pd.DataFrame):
        raise TypeError(
            "results must be an ip.bench.Benchmarker (or a scib-metrics one) or a DataFrame from "
            f"Benchmarker.get_results() (wide or tidy=True) / ip.bench.run_methods, got {type(results).__name__}."
        )
    if isinstance(results.columns, pd.MultiIndex):
        wide = results.copy()
    else:
        need = {"embedding", "metric_type", "metric", "value"}
        missing = need - set(results.columns)
        if missing:
            raise ValueError(f"results: tidy table is missing column(s) {sorted(missing)} (expected {sorted(need)}).")
        wide = results.pivot_table(index="embedding", columns=["metric_type", "metric"], values="value", sort=False)
        order = list(dict.fromkeys(results["embedding"]))
        wide = wide.loc[order]
    if min_max_scale:
        metric_cols = [c for c in wide.columns if c[0] != _AGG]
        sub = wide[metric_cols]
        from ..bench.benchmarker import aggregate_scores, min_max

        scaled = min_max(sub)
        wide = scaled.copy()
        for name, v in aggregate_scores(scaled, [c[0] for c in metric_cols]).items():
            wide[(_AGG, name)] = v
        wide.columns = pd.MultiIndex.from_tuples(wide.columns, names=["metric_type", "metric"])
    cols = sorted(wide.columns, key=lambda c: _TYPE_ORDER.index(c[0]) if c[0] in _TYPE_ORDER else 1)
    return wide[cols]


@doc_params(**PLOT_DOC)
def plot_results_table(
    results: Any,
    *,
    min_max_scale: bool = False,
    sort_by: str | None = "Total",
    cmap: str = "PRGn",
    bar_cmap: str = "YlGnBu",
    fmt: str = "{:.2f}",
    ax: Axes | None = None, title: str | None = None,
    show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
) -> PlotReturn:
    """Draw benchmark results as scib-metrics does: one row per embedding, a coloured
    circle per metric (colours scaled per column), bars for the aggregate scores.

    Parameters
    ----------
    results
        An :class:`imgprof.bench.Benchmarker` (or a scib-metrics one) after
        ``benchmark()``, or a results table: ``get_results()`` (scib-metrics' wide
        shape with a ``"Metric Type"`` row), ``get_results(tidy=True)`` or
        :func:`imgprof.bench.run_methods`' tidy table.
    min_max_scale
        Min-max scale every metric across embeddings (and recompute the aggregates) first.
    sort_by
        Aggregate column to sort the rows by (descending); ``None`` keeps the order.
    cmap, bar_cmap
        Colormaps of the metric circles and of the aggregate bars.
    fmt
        Number format.
    ax
        Axes to draw on (a new figure sized to the table otherwise).
    title
        Figure title.
    {show_save}

    Returns
    -------
    The matplotlib ``Axes`` (``None`` when shown).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> res = ip.bench.run_methods(adata, ["none", "combat"], "Metadata_Batch", "Metadata_target_gene",
    ...                            progress_bar=False)
    >>> ax = ip.pl.plot_results_table(res, show=False)
    """
    wide = _sorted(_wide(results, min_max_scale), sort_by)
    n_rows, n_cols = wide.shape
    g = _Geometry(n_rows, n_cols)
    fig, ax = get_ax(ax, figsize=(max(4.0, 0.95 * g.width), max(2.0, 0.95 * g.height)))
    ax.set_xlim(0, g.width)
    ax.set_ylim(0, g.height)
    ax.axis("off")
    for i, emb in enumerate(wide.index):  # method names
        ax.text(0.1, g.y(i), str(emb), ha="left", va="center", fontsize=10, fontweight="bold")
    first_agg = next((j for j, c in enumerate(wide.columns) if c[0] == _AGG), None)
    for j, (mtype, metric) in enumerate(wide.columns):
        label = "\n".join(textwrap.wrap(str(metric), 8, break_long_words=False)) or str(metric)
        ax.text(g.xc(j), g.height - g.head_h + 0.1, label, ha="center", va="bottom", fontsize=8)
        vals = wide.iloc[:, j].to_numpy(dtype=float)
        if mtype == _AGG:
            if j == first_agg:
                ax.plot([g.x0(j), g.x0(j)], [0, g.height - g.head_h + 0.05], color="k", lw=1)
            _draw_bars(ax, g, j, vals, bar_cmap, fmt)
        else:
            _draw_circles(ax, g, j, vals, cmap, fmt)
    _draw_frame(ax, g, [c[0] for c in wide.columns])
    if title:
        ax.set_title(title)
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)


def _sorted(wide: pd.DataFrame, sort_by: str | None) -> pd.DataFrame:
    """Rows sorted by an aggregate column (the last aggregate when ``sort_by`` is missing)."""
    if wide.empty:
        raise ValueError("results: nothing to plot (no embedding or no metric).")
    if sort_by is None:
        return wide
    key: tuple[str, str] | None = (_AGG, sort_by)
    if key not in wide.columns:
        avail = [c[1] for c in wide.columns if c[0] == _AGG]
        key = (_AGG, avail[-1]) if avail else None
    return wide if key is None else wide.sort_values(key, ascending=False)


class _Geometry:
    """Layout of the table in data coordinates."""

    name_w, col_w, row_h, head_h = 2.2, 1.0, 0.55, 1.3

    def __init__(self, n_rows: int, n_cols: int) -> None:
        self.n_rows, self.n_cols = n_rows, n_cols
        self.width = self.name_w + self.col_w * n_cols
        self.height = self.head_h + self.row_h * n_rows

    def y(self, i: int) -> float:
        return self.height - self.head_h - self.row_h * (i + 0.5)

    def x0(self, j: int) -> float:
        return self.name_w + self.col_w * j

    def xc(self, j: int) -> float:
        return self.x0(j) + self.col_w / 2


def _finite_cells(ax: Any, g: _Geometry, j: int, vals: np.ndarray) -> Iterator[tuple[int, float]]:
    """Write "NA" in the cells of column ``j`` whose value is not finite; yield ``(row, value)`` for the others."""
    for i, v in enumerate(vals):
        if np.isfinite(v):
            yield i, v
        else:
            ax.text(g.xc(j), g.y(i), "NA", ha="center", va="center", fontsize=8)


def _draw_bars(ax: Any, g: _Geometry, j: int, vals: np.ndarray, bar_cmap: str, fmt: str) -> None:
    import matplotlib as mpl

    b_cmap = mpl.colormaps[bar_cmap]
    x0 = g.x0(j)
    for i, v in _finite_cells(ax, g, j, vals):
        ax.barh(g.y(i), max(v, 0) * g.col_w * 0.9, left=x0 + 0.05 * g.col_w, height=g.row_h * 0.8,
                color=b_cmap(float(np.clip(v, 0, 1))))
        ax.text(x0 + 0.1 * g.col_w, g.y(i), fmt.format(v), ha="left", va="center", fontsize=8,
                color="k" if v < 0.6 else "w")


def _draw_circles(ax: Any, g: _Geometry, j: int, vals: np.ndarray, cmap: str, fmt: str) -> None:
    import matplotlib as mpl

    circ_cmap = mpl.colormaps[cmap]
    xc = g.xc(j)
    fin = vals[np.isfinite(vals)]
    lo, hi = (fin.min(), fin.max()) if fin.size else (0.0, 1.0)
    for i, v in _finite_cells(ax, g, j, vals):
        t = 0.5 if hi == lo else 0.15 + 0.7 * (v - lo) / (hi - lo)
        ax.scatter([xc], [g.y(i)], s=620, color=circ_cmap(t), edgecolor="none", zorder=2)
        ax.text(xc, g.y(i), fmt.format(v), ha="center", va="center", fontsize=7.5, zorder=3,
                color="w" if (t < 0.25 or t > 0.75) else "k")


def _draw_frame(ax: Any, g: _Geometry, types: list[str]) -> None:
    """Group headers over each metric type, the header rule and the dotted row separators."""
    start = 0
    for j in range(1, g.n_cols + 1):
        if j == g.n_cols or types[j] != types[start]:
            xa, xb = g.x0(start) + 0.1, g.x0(j) - 0.1
            yh = g.height - 0.25
            ax.plot([xa, xb], [yh - 0.12, yh - 0.12], color="k", lw=1)
            ax.text((xa + xb) / 2, yh, types[start], ha="center", va="bottom", fontsize=10, fontweight="bold")
            start = j
    ax.plot([0, g.width], [g.height - g.head_h, g.height - g.head_h], color="k", lw=1)
    for i in range(1, g.n_rows):
        y = g.height - g.head_h - g.row_h * i
        ax.plot([0, g.width], [y, y], color="0.6", lw=0.6, ls=(0, (1, 5)))


#: Alias of :func:`plot_results_table`.
benchmark_table = plot_results_table
