"""Cells sorted by group, and the AnnData inputs of the single-cell distances (matrix and labels)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.validation import check_finite, check_obs_keys, get_matrix

#: Parameter text shared by :func:`distance`, :func:`~imgprof.tl.distance_test` and
#: :func:`~imgprof.tl.cluster_composition` (filled in by :func:`~imgprof._core.docs.doc_params`).
DIST_DOC: dict[str, str] = {
    "sc_adata": "adata\n    Single cells.",
    "sc_groupby": "groupby\n    ``.obs`` column naming each cell's group (perturbation).",
    "sc_rep": ("obsm_key, layer\n    Representation: an ``.obsm`` key (``\"X\"`` for ``.X``) or a layer; default\n"
               "    ``\"X_pca\"`` when present, else ``.X``."),
    "sc_alpha": "alpha\n    Level of the ``significant`` column(s) (on BH-adjusted p-values).",
    "sc_copy": "copy\n    Return a modified copy instead of writing into ``adata``.",
}


@dataclass
class Grouped:
    """Cells sorted by group: ``X[starts[g]:starts[g+1]]`` are the cells of ``names[g]``."""

    X: np.ndarray
    starts: np.ndarray
    names: list[str]

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.starts)

    def cells(self, g: int) -> np.ndarray:
        return self.X[self.starts[g]:self.starts[g + 1]]

    def means(self) -> np.ndarray:
        sums = np.add.reduceat(self.X, self.starts[:-1], axis=0)
        return sums / self.sizes[:, None]


def group_cells(
    X: np.ndarray,
    labels: Sequence | np.ndarray | pd.Series,
    *,
    max_cells: int | None = None,
    seed: int = 0,
) -> tuple[Grouped, dict[str, int]]:
    """Sort cells by group (optionally subsampling groups larger than ``max_cells``, seeded).

    Returns the grouped cells and ``{group: n_cells_before_subsampling}`` for the
    groups that were subsampled. Cells with a missing label are left out.
    """
    X = np.asarray(X, dtype=np.float64)
    lab = pd.Series(np.asarray(labels, dtype=object) if not isinstance(labels, pd.Series) else labels.to_numpy())
    if len(lab) != X.shape[0]:
        raise ValueError(f"labels has {len(lab)} entries but the matrix has {X.shape[0]} rows.")
    cat = pd.Categorical(lab)
    codes = np.asarray(cat.codes)
    keep = codes >= 0
    names = [str(c) for c in cat.categories]
    order = np.argsort(codes[keep], kind="stable")
    idx = np.flatnonzero(keep)[order]
    c = codes[idx]
    counts = np.bincount(c, minlength=len(names))
    subsampled: dict[str, int] = {}
    if max_cells is not None:
        if max_cells < 2:
            raise ValueError(f"max_cells must be >= 2, got {max_cells}.")
        rng = np.random.default_rng(seed)
        bounds = np.r_[0, np.cumsum(counts)]
        parts = []
        for g in range(len(names)):
            seg = idx[bounds[g]:bounds[g + 1]]
            if len(seg) > max_cells:
                subsampled[names[g]] = len(seg)
                seg = np.sort(rng.choice(seg, max_cells, replace=False))
            parts.append(seg)
        idx = np.concatenate(parts) if parts else idx
        counts = np.array([len(p) for p in parts], dtype=np.int64)
    present = counts > 0
    if not present.all():  # unused categories
        names = [n for n, p in zip(names, present) if p]
        counts = counts[present]
    starts = np.r_[0, np.cumsum(counts)].astype(np.int64)
    return Grouped(X[idx], starts, names), subsampled



def pair_index(G: int, ref: int | None) -> np.ndarray:
    """Pairs of group indices: all ``a < b`` (``ref=None``), else ``(g, ref)`` for every other group."""
    if ref is None:
        a, b = np.triu_indices(G, k=1)
        return np.stack([a, b], axis=1).astype(np.int64)
    others = np.array([g for g in range(G) if g != ref], dtype=np.int64)
    return np.stack([others, np.full(len(others), ref, dtype=np.int64)], axis=1)


def cells_matrix(adata: AnnData, obsm_key: str | None, layer: str | None, fn: str) -> tuple[np.ndarray, str]:
    """The float64 cells × dims matrix (``obsm_key`` or ``layer``; default ``X_pca``, else ``.X``) and its name."""
    if obsm_key is not None and layer is not None:
        raise ValueError(f"{fn}: pass either obsm_key= or layer=, not both.")
    if obsm_key is None and layer is None:
        obsm_key = "X_pca" if "X_pca" in adata.obsm else "X"
    X = get_matrix(adata, layer=layer, use_rep=obsm_key)
    what = f"adata.layers[{layer!r}]" if layer else ("adata.X" if obsm_key == "X" else f"adata.obsm[{obsm_key!r}]")
    X = np.asarray(X, dtype=np.float64)
    check_finite(X, what=what)
    return X, what



def labels_of(adata: AnnData, groupby: str) -> pd.Series:
    """``adata.obs[groupby]`` as strings, missing values as ``None``."""
    check_obs_keys(adata, groupby, param="groupby")
    lab = adata.obs[groupby]
    return lab.astype(object).where(lab.notna(), None).map(lambda v: None if v is None else str(v))

