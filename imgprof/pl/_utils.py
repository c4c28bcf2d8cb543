"""Small shared helpers for plotting (matplotlib imported lazily).

:func:`savefig_or_show` is the one place where every ``ip.pl`` function shows,
saves and returns its figure, following :mod:`scanpy.plotting`:

* ``show=None`` means ``sc.settings.autoshow`` (``True`` unless changed); a
  shown plot returns ``None``.
* ``save=True`` writes ``{sc.settings.figdir}/{name}{sc.settings.plot_suffix}.{sc.settings.file_format_figs}``;
  ``save="_suffix.png"`` (a string without a directory) appends the suffix to the
  plot's name, the extension (``.png``, ``.pdf``, ``.svg``) choosing the format,
  exactly as scanpy does; ``save=None`` means ``sc.settings.autosave``.
  A :class:`pathlib.Path`, or a string with a directory part
  (``"out/plate.png"``), is written to that path as given.
* ``return_fig=True`` returns the :class:`~matplotlib.figure.Figure`; otherwise
  the axes are returned when the plot is not shown.

scanpy's settings are read when scanpy is already imported; otherwise its
defaults apply (``./figures/``, pdf, autoshow on, autosave off), so plotting
does not import scanpy by itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: Parameter text shared by every ``ip.pl`` function (filled in by :func:`imgprof._core.docs.doc_params`;
#: ``show`` / ``save`` / ``return_fig`` describe :func:`savefig_or_show`, scanpy's convention).
PLOT_DOC: dict[str, str] = {
    "ax": "ax\n    Matplotlib axes to draw on (a new figure otherwise).",
    "ax_panel": "ax\n    Matplotlib axes to draw one panel on.",
    "show": "show\n    Show the figure; ``None`` → ``sc.settings.autoshow`` (as in scanpy). A shown plot returns ``None``.",
    "save": ("save\n    ``True`` or a scanpy-style suffix (``\"_batch.png\"``) saves into ``sc.settings.figdir`` as\n"
             "    ``<plot name><suffix>``; a path with a directory (or a :class:`~pathlib.Path`) is used as is."),
    "return_fig": "return_fig\n    Return the matplotlib ``Figure`` instead of the axes.",
}
#: ``show``, ``save`` and ``return_fig`` together, the three that follow every plot's own parameters.
PLOT_DOC["show_save"] = "\n".join(PLOT_DOC[k] for k in ("show", "save", "return_fig"))

_SCANPY_DEFAULTS = {"autoshow": True, "autosave": False, "figdir": "figures", "file_format_figs": "pdf",
                    "plot_suffix": ""}
_EXTS = (".svg", ".pdf", ".png")

#: What an ``ip.pl`` function returns: the Axes (or a list of them, or the Figure with ``return_fig=True``)
#: when ``show=False``; ``None`` once the figure is shown or saved (scanpy's convention).
PlotReturn = Any



def get_ax(ax=None, figsize=(6, 4)):
    """Return ``(fig, ax)``, creating a figure when ``ax`` is None."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    return fig, ax


def neg_log10(p: np.ndarray) -> np.ndarray:
    """``−log10(p)``, with ``p`` clipped to ``[1e-300, 1]`` so that ``p = 0`` stays finite."""
    return -np.log10(np.clip(p, 1e-300, 1))


def significance_scatter(ax: Any, x: np.ndarray, y: np.ndarray, sig: np.ndarray, colors: tuple[str, str], *,
                         size: float, alpha: tuple[float, float], threshold: float | None, p_col: str) -> None:
    """Draw ``y = −log10 p`` against ``x``: the points that are not significant (``colors[1]``), then the
    significant ones (``colors[0]``), the dashed line at ``threshold`` and the y-axis label naming ``p_col``.

    The part :func:`~imgprof.pl.map_scatter` and :func:`~imgprof.pl.distance_volcano` share; ``alpha`` is
    (significant, not significant).
    """
    ax.scatter(x[~sig], y[~sig], s=size, c=colors[1], alpha=alpha[1], linewidths=0, label="not significant")
    ax.scatter(x[sig], y[sig], s=size, c=colors[0], alpha=alpha[0], linewidths=0, label="significant")
    if threshold is not None:
        ax.axhline(-np.log10(threshold), color="k", ls="--", lw=0.8)
    ax.set_ylabel(f"−log10({p_col.replace('_', ' ')})")


def label_points(ax: Any, x: Any, y: Any, texts: Any, *, fontsize: float = 7, offset: tuple[float, float] = (2, 2)) -> None:
    """Write ``str(text)`` next to each point ``(x, y)``, ``offset`` points up and to the right."""
    for xi, yi, t in zip(x, y, texts):
        ax.annotate(str(t), (xi, yi), fontsize=fontsize, xytext=offset, textcoords="offset points")


def _setting(name: str):
    sc = sys.modules.get("scanpy")
    settings = getattr(sc, "settings", None)
    return getattr(settings, name, _SCANPY_DEFAULTS[name]) if settings is not None else _SCANPY_DEFAULTS[name]


def figure_path(writekey: str, save: bool | str | os.PathLike) -> Path:
    """The file ``save=`` names for a plot called ``writekey`` (scanpy's convention, see module docs)."""
    if isinstance(save, os.PathLike) or (isinstance(save, str) and (os.sep in save or "/" in save)):
        return Path(save)
    ext = None
    if isinstance(save, str):
        for e in _EXTS:
            if save.endswith(e):
                ext, save = e[1:], save[: -len(e)]
                break
        writekey += save
    if ext is None:
        ext = _setting("file_format_figs")
    return Path(_setting("figdir")) / f"{writekey}{_setting('plot_suffix')}.{ext}"


def savefig_or_show(
    fig,
    axes,
    *,
    show: bool | None = None,
    save: bool | str | os.PathLike | None = None,
    return_fig: bool = False,
    writekey: str | None = None,
    dpi: int = 150,
):
    """Save and/or show ``fig`` like scanpy; return what scanpy would return.

    Parameters
    ----------
    fig
        The figure drawn.
    axes
        The axes (or array/list of axes) to return when the plot is not shown.
    show
        Show the figure (``plt.show()``); ``None`` → ``sc.settings.autoshow``.
    save
        ``True``, a scanpy-style suffix (``"_batch.png"``) or a path; ``None`` →
        ``sc.settings.autosave``. See the module documentation.
    return_fig
        Return the figure instead of the axes.
    writekey
        The plot's name in saved file names (default: the calling function's name).
    dpi
        Resolution of saved raster images.

    Returns
    -------
    Figure, axes or None
        ``fig`` when ``return_fig``; else ``None`` when shown; else ``axes``.
    """
    import matplotlib.pyplot as plt

    if writekey is None:
        writekey = sys._getframe(1).f_code.co_name
    save = _setting("autosave") if save is None else save
    show = _setting("autoshow") if show is None else bool(show)
    if save is not False and save is not None and save != "":
        path = figure_path(writekey, save)
        if path.parent != Path():
            path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight", dpi=dpi)
    if show:
        plt.show()
    if return_fig:
        return fig
    if show:
        return None
    return axes


def finish(fig, ax, *, show: bool | None, save=None, return_fig: bool = False):
    """Backwards-compatible name of :func:`savefig_or_show` (the caller's name is the write key)."""
    return savefig_or_show(fig, ax, show=show, save=save, return_fig=return_fig,
                           writekey=sys._getframe(1).f_code.co_name)
