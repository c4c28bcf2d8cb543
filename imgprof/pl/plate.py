"""Plate-layout heatmaps (QC, cell counts, any feature or obs column)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

import re

import numpy as np
import pandas as pd

from .._core.docs import doc_params
from .._core.validation import check_obs_keys
from ._utils import PLOT_DOC, PlotReturn, finish, get_ax

_WELL = re.compile(r"^([A-Za-z]{1,2})(\d{1,2})$")


def _row_index(letters: str) -> int:
    letters = letters.upper()
    idx = 0
    for ch in letters:
        idx = idx * 26 + (ord(ch) - 64)
    return idx - 1


def well_to_rowcol(wells) -> tuple[np.ndarray, np.ndarray]:
    """Parse well names such as ``"A01"``/``"P24"``/``"AF48"`` into 0-based row and column indices.

    Examples
    --------
    >>> well_to_rowcol(["A01", "B03"])
    (array([0, 1]), array([0, 2]))
    """
    rows, cols = [], []
    for w in map(str, wells):
        m = _WELL.match(w.strip())
        if not m:
            raise ValueError(f"well name {w!r} is not of the form 'A01' (letters then column number).")
        rows.append(_row_index(m.group(1)))
        cols.append(int(m.group(2)) - 1)
    return np.array(rows), np.array(cols)


@doc_params(**PLOT_DOC)
def plate_layout(
    adata: AnnData,
    color: str = "Metadata_Count_Cells",
    *,
    plate: str | None = None,
    plate_key: str = "Metadata_Plate",
    well_key: str = "Metadata_Well",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    ax: Axes | None = None, show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
) -> PlotReturn:
    """Heatmap of one plate's wells coloured by an ``.obs`` column or a feature.

    Boolean QC flags (``Metadata_qc_*``) are shown as 0/1; missing wells are blank.

    Parameters
    ----------
    adata
        Well-level profiles with ``plate_key`` and ``well_key`` in ``.obs``.
    color
        An ``.obs`` column or a feature name (``adata.var_names``).
    plate
        Which plate (default: the first one).
    plate_key, well_key
        Metadata columns naming plate and well.
    cmap
        Matplotlib colour map.
    vmin, vmax
        Colour scale limits (default: the data range). Boolean QC flags
        (``Metadata_qc_*``) default to ``0`` and ``1`` so that 0 (not flagged)
        is always the bottom colour of ``cmap``.
    {ax}
    {show_save}

    Returns
    -------
    Axes or Figure or None
        The axes; the figure with ``return_fig=True``; ``None`` when shown.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate(n_plates=1, seed=0)
    >>> ax = ip.pl.plate_layout(adata, "Metadata_Count_Cells", show=False)
    """
    check_obs_keys(adata, [well_key], param="well_key")
    obs = adata.obs
    if plate_key in obs.columns:
        plates = pd.unique(obs[plate_key].astype(str))
        plate = plates[0] if plate is None else plate
        mask = (obs[plate_key].astype(str) == str(plate)).to_numpy()
        if not mask.any():
            raise KeyError(f"plate={plate!r} not found in adata.obs[{plate_key!r}] (have {list(plates)[:5]}).")
    else:
        mask = np.ones(adata.n_obs, dtype=bool)
    if color in obs.columns:
        col = obs.loc[mask, color]
        values = pd.to_numeric(col.astype(float if obs[color].dtype == bool else obs[color].dtype),
                               errors="coerce").to_numpy(dtype=float)
    elif color in adata.var_names:
        X = adata[mask, color].X
        values = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=float).ravel()
    else:
        raise KeyError(f"color={color!r} is neither an adata.obs column nor a feature name.")
    r, c = well_to_rowcol(obs.loc[mask, well_key])
    n_rows = max(16 if r.max() < 16 else 32, r.max() + 1)
    n_cols = max(24 if c.max() < 24 else 48, c.max() + 1)
    if r.max() < 8 and c.max() < 12:
        n_rows, n_cols = 8, 12
    grid = np.full((n_rows, n_cols), np.nan)
    grid[r, c] = values
    fig, ax = get_ax(ax, figsize=(0.35 * n_cols + 1.5, 0.35 * n_rows + 0.8))
    if color in obs.columns and (obs[color].dtype == bool or str(color).startswith("Metadata_qc_")):
        vmin = 0.0 if vmin is None else vmin
        vmax = max(1.0, float(np.nanmax(values)) if np.isfinite(values).any() else 1.0) if vmax is None else vmax
    im = ax.imshow(grid, cmap=cmap, aspect="equal", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(n_cols), [str(i + 1) for i in range(n_cols)], fontsize=6)
    ax.set_yticks(range(n_rows), [chr(65 + i) if i < 26 else "A" + chr(65 + i - 26) for i in range(n_rows)], fontsize=6)
    ax.set_title(f"{plate if plate is not None else ''} — {color}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    return finish(fig, ax, show=show, save=save, return_fig=return_fig)
