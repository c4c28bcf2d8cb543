"""Results table of a batch-correction benchmark (scib-metrics' style, matplotlib only)."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from ._utils import finish

_AGG = "Aggregate score"
_TYPE_ORDER = ("Bio conservation", "Batch correction", _AGG)


def _wide(results, min_max_scale: bool) -> pd.DataFrame:
    """Wide table (embedding × (metric_type, metric)) from a Benchmarker, a tidy or a wide results frame."""
    if hasattr(results, "_results_multi"):
        return results._results_multi(min_max_scale, True)
    if hasattr(results, "get_results"):  # a scib-metrics Benchmarker
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
        from ..bench.benchmarker import min_max

        scaled = min_max(sub)
        wide = scaled.copy()
        agg = {}
        for t in ("Batch correction", "Bio conservation"):
            cols = [c for c in metric_cols if c[0] == t]
            if cols:
                agg[(_AGG, t)] = scaled[cols].mean(axis=1)
        if len(agg) == 2:
            agg[(_AGG, "Total")] = 0.4 * agg[(_AGG, "Batch correction")] + 0.6 * agg[(_AGG, "Bio conservation")]
        for k, v in agg.items():
            wide[k] = v
        wide.columns = pd.MultiIndex.from_tuples(wide.columns, names=["metric_type", "metric"])
    cols = sorted(wide.columns, key=lambda c: _TYPE_ORDER.index(c[0]) if c[0] in _TYPE_ORDER else 1)
    return wide[cols]


def plot_results_table(
    results,
    *,
    min_max_scale: bool = False,
    sort_by: str | None = "Total",
    cmap: str = "PRGn",
    bar_cmap: str = "YlGnBu",
    fmt: str = "{:.2f}",
    title: str | None = None,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
):
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
    title
        Figure title.
    ax
        Axes to draw on (a new figure sized to the table otherwise).
    show
        Show the figure; ``None`` → ``sc.settings.autoshow`` (as in scanpy). A shown plot returns ``None``.
    save
        ``True`` or a scanpy-style suffix (``"_batch.png"``) saves into ``sc.settings.figdir`` as
        ``<function name><suffix>``; a path with a directory (or a :class:`~pathlib.Path`) is used as is.
    return_fig
        Return the matplotlib ``Figure`` instead of the axes.

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
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    wide = _wide(results, min_max_scale)
    if wide.empty:
        raise ValueError("results: nothing to plot (no embedding or no metric).")
    if sort_by is not None:
        key = (_AGG, sort_by)
        if key not in wide.columns:
            avail = [c[1] for c in wide.columns if c[0] == _AGG]
            if avail:
                key = (_AGG, avail[-1])
            else:
                key = None
        if key is not None:
            wide = wide.sort_values(key, ascending=False)
    n_rows, n_cols = wide.shape
    name_w, col_w, row_h, head_h = 2.2, 1.0, 0.55, 1.3
    width = name_w + col_w * n_cols
    height = head_h + row_h * n_rows
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.95 * width), max(2.0, 0.95 * height)))
    else:
        fig = ax.figure
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    circ_cmap = mpl.colormaps[cmap]
    b_cmap = mpl.colormaps[bar_cmap]
    types = [c[0] for c in wide.columns]
    y_of = {i: height - head_h - row_h * (i + 0.5) for i in range(n_rows)}
    # method names
    for i, emb in enumerate(wide.index):
        ax.text(0.1, y_of[i], str(emb), ha="left", va="center", fontsize=10, fontweight="bold")
    first_agg = True
    for j, (mtype, metric) in enumerate(wide.columns):
        x0 = name_w + col_w * j
        xc = x0 + col_w / 2
        label = "\n".join(textwrap.wrap(str(metric), 8, break_long_words=False)) or str(metric)
        ax.text(xc, height - head_h + 0.1, label, ha="center", va="bottom", fontsize=8)
        vals = wide.iloc[:, j].to_numpy(dtype=float)
        if mtype == _AGG:
            if first_agg:
                ax.plot([x0, x0], [0, height - head_h + 0.05], color="k", lw=1)
                first_agg = False
            for i, v in enumerate(vals):
                if not np.isfinite(v):
                    ax.text(xc, y_of[i], "NA", ha="center", va="center", fontsize=8)
                    continue
                ax.barh(y_of[i], max(v, 0) * col_w * 0.9, left=x0 + 0.05 * col_w, height=row_h * 0.8,
                        color=b_cmap(float(np.clip(v, 0, 1))))
                ax.text(x0 + 0.1 * col_w, y_of[i], fmt.format(v), ha="left", va="center", fontsize=8,
                        color="k" if v < 0.6 else "w")
        else:
            fin = vals[np.isfinite(vals)]
            lo, hi = (fin.min(), fin.max()) if fin.size else (0.0, 1.0)
            for i, v in enumerate(vals):
                if not np.isfinite(v):
                    ax.text(xc, y_of[i], "NA", ha="center", va="center", fontsize=8)
                    continue
                t = 0.5 if hi == lo else 0.15 + 0.7 * (v - lo) / (hi - lo)
                ax.scatter([xc], [y_of[i]], s=620, color=circ_cmap(t), edgecolor="none", zorder=2)
                ax.text(xc, y_of[i], fmt.format(v), ha="center", va="center", fontsize=7.5, zorder=3,
                        color="w" if (t < 0.25 or t > 0.75) else "k")
    # group headers
    start = 0
    for j in range(1, n_cols + 1):
        if j == n_cols or types[j] != types[start]:
            xa, xb = name_w + col_w * start + 0.1, name_w + col_w * j - 0.1
            yh = height - 0.25
            ax.plot([xa, xb], [yh - 0.12, yh - 0.12], color="k", lw=1)
            ax.text((xa + xb) / 2, yh, types[start], ha="center", va="bottom", fontsize=10, fontweight="bold")
            start = j
    ax.plot([0, width], [height - head_h, height - head_h], color="k", lw=1)
    for i in range(1, n_rows):
        y = height - head_h - row_h * i
        ax.plot([0, width], [y, y], color="0.6", lw=0.6, ls=(0, (1, 5)))
    if title:
        ax.set_title(title)
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)


#: Alias of :func:`plot_results_table`.
benchmark_table = plot_results_table
