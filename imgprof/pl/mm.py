"""Multimodal plots: embeddings side by side, per-modality retrieval, complementarity, cross-modal retrieval, join report.

matplotlib is imported inside each function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

import numpy as np
import pandas as pd

from .._core.docs import DOC, doc_params
from .._core.validation import as_list, check_df_keys, check_obs_keys
from ._utils import PLOT_DOC, PlotReturn, finish, get_ax, label_points, savefig_or_show

#: Parameter texts shared by the plots of this module (filled in by ``doc_params``).
_PLOT_DOC: dict[str, str] = PLOT_DOC | {
    "example_mm_moa": DOC["example_mm_moa"],
    "returns_axes": "Axes or Figure or None\n    The axes; the figure with ``return_fig=True``; ``None`` when shown.",
}
#: ``ax``, ``title``, ``show``, ``save`` and ``return_fig``: the parameters that end every single-axes plot here.
_PLOT_DOC["ax_title_show_save"] = "\n".join(
    [PLOT_DOC["ax"], "title\n    Plot title (a default otherwise).", PLOT_DOC["show_save"]])


def _mods_of(data: Any, mods: Sequence[str] | None) -> dict:
    from ..mm._modalities import as_mods

    return as_mods(data, mods)


@doc_params(**_PLOT_DOC)
def mm_embedding(
    data: Any,
    basis: str = "umap",
    color: str | Sequence[str] | dict | None = "leiden",
    *,
    mods: Sequence[str] | None = None,
    panel_size: tuple[float, float] = (4.0, 3.6),
    show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
    **kwargs: Any,
) -> PlotReturn:
    """Embeddings of several modalities side by side (one column per modality, one row per colour).

    Parameters
    ----------
    data
        MuData or ``{modality: AnnData}`` (e.g. after :func:`imgprof.mm.run_pipeline`).
    basis
        ``.obsm`` embedding (``"umap"``, ``"pca"``, ``"cca"``...; ``X_`` prefix optional).
    color
        ``.obs`` column(s) to colour by, the same name in every modality, or a dict
        ``{modality: column}`` for one row with a different column per modality.
    mods
        Modalities (default all).
    panel_size
        Size of one panel in inches.
    {show_save}
    kwargs
        Passed to :func:`scanpy.pl.embedding`.

    Returns
    -------
    numpy.ndarray or Figure or None
        2-D array of axes (rows = colours, columns = modalities); the figure with
        ``return_fig=True``; ``None`` when shown.

    Examples
    --------
    >>> import imgprof as ip
    >>> morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
    >>> ip.mm.run_pipeline({"morph": morph, "expr": expr}, n_comps=10, umap=False)
    >>> axes = ip.pl.mm_embedding({"morph": morph, "expr": expr}, basis="pca", show=False)
    >>> axes.shape
    (1, 2)
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    ms = _mods_of(data, mods)
    names = list(ms)
    key = basis if basis.startswith("X_") else f"X_{basis}"
    for m, x in ms.items():
        if key not in x.obsm:
            raise KeyError(f"basis={basis!r}: {m}.obsm[{key!r}] not found (available: {list(x.obsm.keys())}).")
    if isinstance(color, dict):
        rows = [{m: color.get(m) for m in names}]
    else:
        rows = [dict.fromkeys(names, c) for c in (as_list(color) or [None])]  # type: ignore[list-item]
    for r in rows:
        for m, c in r.items():
            if c is not None:
                check_obs_keys(ms[m], [c], param=f"color ({m})")
    fig, axes = plt.subplots(len(rows), len(names), figsize=(panel_size[0] * len(names), panel_size[1] * len(rows)),
                             squeeze=False)
    for i, r in enumerate(rows):
        for j, m in enumerate(names):
            ax = axes[i, j]
            sc.pl.embedding(ms[m], basis=key, color=r[m], ax=ax, show=False, **kwargs)
            ax.set_title(f"{m}: {r[m]}" if r[m] else m)
    fig.tight_layout()
    return savefig_or_show(fig, axes, show=show, save=save, return_fig=return_fig, writekey="mm_embedding")


@doc_params(**_PLOT_DOC)
def mm_retrieval(
    results: pd.DataFrame,
    *,
    task: str = "activity",
    ax: Axes | None = None, title: str | None = None,
    show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
) -> PlotReturn:
    """Per-modality scores (one strip per modality), retrieved ids highlighted, with the retrieved share.

    Parameters
    ----------
    results
        Output of :func:`imgprof.mm.compare_retrieval`.
    task
        ``"activity"``, ``"consistency"`` (mAP) or ``"replicating"`` (median replicate correlation).
    {ax_title_show_save}

    Returns
    -------
    {returns_axes}

    Examples
    --------
    >>> import pandas as pd, imgprof as ip
    >>> res = pd.DataFrame({"modality": ["a", "a", "b"], "task": "activity", "id": ["x", "y", "x"],
    ...                     "mean_average_precision": [0.9, 0.2, 0.5], "retrieved": [True, False, False]})
    >>> ax = ip.pl.mm_retrieval(res, show=False)
    """
    check_df_keys(results, ["modality", "task", "mean_average_precision", "retrieved"], param="results",
                  where="the compare_retrieval table")
    r = results.loc[results["task"] == task]
    if r.empty:
        raise ValueError(f"mm_retrieval: no rows with task={task!r}.")
    ycol = "median_correlation" if task == "replicating" and "median_correlation" in r else "mean_average_precision"
    fig, ax = get_ax(ax, figsize=(1.8 + 1.6 * r["modality"].nunique(), 3.6))
    mods = list(dict.fromkeys(r["modality"]))
    rng = np.random.default_rng(0)
    for i, m in enumerate(mods):
        d = r.loc[r["modality"] == m]
        x = i + rng.uniform(-0.15, 0.15, len(d))
        ok = d["retrieved"].to_numpy(bool)
        y = d[ycol].to_numpy(dtype=float)
        ax.scatter(x[ok], y[ok], color="#c44e52", s=18, label="retrieved" if i == 0 else None)
        ax.scatter(x[~ok], y[~ok], color="#8c8c8c", s=18, label="not retrieved" if i == 0 else None)
        ax.text(i, 1.04, f"{ok.mean():.0%} of {len(d)}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(mods)))
    ax.set_xticklabels(mods)
    if ycol == "mean_average_precision":
        ax.set_ylim(0, 1.12)
    else:
        lo = float(np.nanmin(r[ycol])) if r[ycol].notna().any() else 0.0
        ax.set_ylim(min(0.0, lo) - 0.05, 1.12)
    ax.set_ylabel("mAP" if ycol == "mean_average_precision" else "median replicate correlation")
    ax.set_title(title or f"{task} per modality")
    ax.legend(fontsize=7, loc="best", frameon=False)
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)


@doc_params(**_PLOT_DOC)
def mm_complementarity(
    table: pd.DataFrame,
    *,
    label: bool = True,
    ax: Axes | None = None, title: str | None = None,
    show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
) -> PlotReturn:
    """mAP in one modality against the other, coloured by complementarity category.

    Parameters
    ----------
    table
        Output of :func:`imgprof.mm.complementarity`.
    label
        Write the ids next to the points.
    {ax_title_show_save}

    Returns
    -------
    {returns_axes}

    Examples
    --------
    >>> import pandas as pd, imgprof as ip
    >>> res = pd.DataFrame({"modality": ["a", "a", "b", "b"], "task": "consistency", "id": ["x", "y", "x", "y"],
    ...                     "mean_average_precision": [0.9, 0.2, 0.8, 0.7], "retrieved": [True, False, True, True]})
    >>> ax = ip.pl.mm_complementarity(ip.mm.complementarity(res), show=False)
    """
    cols = [c for c in table.columns if c.startswith("mAP_")]
    if len(cols) != 2 or "category" not in table:
        raise ValueError("mm_complementarity: expected the table of ip.mm.complementarity (two mAP_<mod> columns).")
    a, b = (c[4:] for c in cols)
    fig, ax = get_ax(ax, figsize=(4.2, 4.0))
    palette = {"both": "#55a868", f"only_{a}": "#4c72b0", f"only_{b}": "#dd8452", "neither": "#8c8c8c",
               "not_evaluable": "#d0d0d0"}
    for cat, d in table.groupby("category"):
        xa = d[f"mAP_{a}"].fillna(0).to_numpy()
        xb = d[f"mAP_{b}"].fillna(0).to_numpy()
        ax.scatter(xa, xb, color=palette.get(cat, "black"), s=24, label=f"{cat} ({len(d)})")
        if label:
            label_points(ax, xa, xb, [str(t)[:28] for t in d["id"]], fontsize=6)
    ax.plot([0, 1], [0, 1], color="#cccccc", lw=0.8, zorder=0)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"mAP {a} (0 = not evaluable)")
    ax.set_ylabel(f"mAP {b} (0 = not evaluable)")
    s = table.attrs.get("summary", {})
    ax.set_title(title or (f"{s.get('task', '')}: both {s.get('n_both', '?')}, union {s.get('n_union', '?')}"))
    ax.legend(fontsize=7, frameon=False)
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)


@doc_params(**_PLOT_DOC)
def mm_cross_retrieval(
    summary: pd.DataFrame,
    *,
    ax: Axes | None = None, title: str | None = None,
    show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
) -> PlotReturn:
    """Held-out cross-modal retrieval mAP per direction next to its chance level.

    Parameters
    ----------
    summary
        Output of :func:`imgprof.mm.cross_retrieval`.
    {ax_title_show_save}

    Returns
    -------
    {returns_axes}

    Examples
    --------
    >>> import pandas as pd, imgprof as ip
    >>> s = pd.DataFrame({"direction": ["a->b", "b->a"], "mean_average_precision": [0.6, 0.4],
    ...                   "chance_map": [0.3, 0.3], "p_value": [0.01, 0.2]})
    >>> ax = ip.pl.mm_cross_retrieval(s, show=False)
    """
    check_df_keys(summary, ["direction", "mean_average_precision", "chance_map"], param="summary",
                  where="the cross_retrieval table")
    fig, ax = get_ax(ax, figsize=(4.0, 3.4))
    x = np.arange(len(summary))
    ax.bar(x - 0.18, summary["mean_average_precision"], width=0.36, color="#4c72b0", label="held-out mAP")
    ax.bar(x + 0.18, summary["chance_map"], width=0.36, color="#c8c8c8", label="chance")
    if "p_value" in summary:
        for i, p in enumerate(summary["p_value"]):
            ax.text(i - 0.18, summary["mean_average_precision"].iloc[i] + 0.02, f"p={p:.2g}", ha="center", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(summary["direction"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mAP")
    ax.set_title(title or "cross-modal retrieval")
    ax.legend(fontsize=7, frameon=False)
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)


@doc_params(**_PLOT_DOC)
def mm_join_report(
    report: Any,
    *,
    ax: Axes | None = None, title: str | None = None,
    show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
) -> PlotReturn:
    """Bar chart of a join: matched keys, keys only in each modality, and rows that could not take part.

    Parameters
    ----------
    report
        A :class:`imgprof.mm.JoinReport` (from :func:`imgprof.mm.match_keys` or
        :func:`imgprof.mm.join_report`).
    {ax_title_show_save}

    Returns
    -------
    {returns_axes}

    Examples
    --------
    {example_mm_moa}
    >>> ax = ip.pl.mm_join_report(ip.mm.match_keys(morph, expr, on=("Metadata_moa", "moa"), sep="|"), show=False)
    """
    s = report.summary
    a, b = s["modalities"]
    labels = ["matched", f"only {a}", f"only {b}"]
    vals = [s["n_matched"], s["n_only"][a], s["n_only"][b]]
    fig, ax = get_ax(ax, figsize=(4.4, 3.2))
    bars = ax.barh(labels[::-1], vals[::-1], color=["#dd8452", "#4c72b0", "#55a868"])
    for bar, v in zip(bars, vals[::-1]):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v}", va="center", fontsize=8)
    ax.set_xlabel("distinct keys")
    ax.set_title(title or f"join on {', '.join(s['keys'])}")
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)
