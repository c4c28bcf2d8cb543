"""Permutation test of each perturbation against the controls (the E-test of Peidli et al.).

For each perturbation the cells of the perturbation and of the controls are pooled, their
dense kernel matrix (at most ``(2 max_cells)²``) is built once, and every permutation's
statistic is a quadratic form in the 0/1 label vector, so batches of permutations are one
matrix product (:func:`perm_stats`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.docs import doc_params
from .._core.store import store
from .._core.validation import check_obs_keys, finish, start
from ._distance_groups import DIST_DOC, cells_matrix, labels_of
from ._distance_metrics import median_heuristic_gamma

#: Distances :func:`distance_test` can permute (quadratic forms of a kernel matrix, or group means).
TESTABLE = ("edistance", "mmd", "mean_pairwise", "euclidean", "cosine", "pearson")

def union_kernel(U: np.ndarray, kind: int, gamma: float) -> np.ndarray:
    """Dense kernel matrix of the (subsampled) union of one perturbation and the controls."""
    U = U - U.mean(axis=0)
    n2 = np.einsum("ij,ij->i", U, U)
    D2 = n2[:, None] + n2[None, :] - 2.0 * (U @ U.T)
    np.maximum(D2, 0.0, out=D2)
    np.fill_diagonal(D2, 0.0)
    if kind == 0:
        return np.sqrt(D2, out=D2)
    return np.exp(-gamma * D2, out=D2)


def perm_stats(metric: str, U: np.ndarray, Z: np.ndarray, m: int, c: int, K: np.ndarray | None) -> np.ndarray:
    """The distance for each row of the 0/1 label matrix ``Z`` (1 = perturbation cell)."""
    if K is not None:
        r = K.sum(axis=1)
        T = r.sum()
        q = np.einsum("ij,ij->i", Z @ K, Z)  # sum over pairs inside the perturbation
        zr = Z @ r
        s_xy = zr - q
        s_yy = T - 2.0 * zr + q
        if metric == "edistance":
            return 2.0 * s_xy / (m * c) - q / m**2 - s_yy / c**2
        if metric == "mmd":
            return q / m**2 + s_yy / c**2 - 2.0 * s_xy / (m * c)
        return s_xy / (m * c)  # mean_pairwise
    tot = U.sum(axis=0)
    mx = (Z @ U) / m
    my = (tot[None, :] - Z @ U) / c
    if metric == "euclidean":
        return np.sqrt(((mx - my) ** 2).sum(axis=1))
    if metric == "pearson":
        mx = mx - mx.mean(axis=1, keepdims=True)
        my = my - my.mean(axis=1, keepdims=True)
    return 1.0 - (mx * my).sum(axis=1) / (np.linalg.norm(mx, axis=1) * np.linalg.norm(my, axis=1))



def label_draws(rng: np.random.Generator, z: np.ndarray, strata: list[np.ndarray], n: int) -> np.ndarray:
    """``n`` relabellings of ``z``, each permuting labels only within every stratum (plate)."""
    Z = np.zeros((n, len(z)))
    rows = np.arange(n)[:, None]
    for idx in strata:
        k = int(z[idx].sum())
        if k == 0:
            continue
        if k == len(idx):
            Z[:, idx] = 1.0
            continue
        pick = np.argsort(rng.random((n, len(idx))), axis=1)[:, :k]
        Z[rows, idx[pick]] = 1.0
    return Z



def _batches(adata: AnnData, batch_key: str | None) -> np.ndarray:
    """Each cell's batch (permutations stay within batches); one batch for all cells without ``batch_key``."""
    if batch_key is None:
        return np.zeros(adata.n_obs, dtype=object)
    check_obs_keys(adata, batch_key, param="batch_key")
    return adata.obs[batch_key].astype(str).to_numpy()


def _cells_per_group(labels: pd.Series, max_cells: int | None, rng: np.random.Generator) -> tuple[dict, dict]:
    """Row indices of each group (sorted names), groups above ``max_cells`` subsampled with ``rng``."""
    lab = labels.to_numpy(dtype=object)
    names = sorted({str(v) for v in lab[pd.notna(lab)]})
    cells = {n: np.flatnonzero(lab == n) for n in names}
    subsampled: dict[str, int] = {}
    if max_cells is not None:
        if max_cells < 2:
            raise ValueError(f"max_cells must be >= 2, got {max_cells}.")
        for n in names:
            if len(cells[n]) > max_cells:
                subsampled[n] = len(cells[n])
                cells[n] = np.sort(rng.choice(cells[n], max_cells, replace=False))
    return cells, subsampled


def _kernel_kind(metric: str, X: np.ndarray, cells: dict, seed: int, metric_kwds: dict) -> tuple[int | None, Any, Any]:
    """``(kind, kernel, gamma)``: kernel matrix kind (0 distances, 1 RBF, ``None`` group means) and its parameters."""
    kernel, kind = metric_kwds.get("kernel", "rbf"), None
    gamma = metric_kwds.get("gamma")
    if metric in ("edistance", "mean_pairwise"):
        kind = 0
    elif metric == "mmd":
        if kernel == "linear":  # linear MMD = squared euclidean distance of means
            kind = None
        elif kernel == "rbf":
            kind = 1
            if gamma is None:
                used = np.concatenate(list(cells.values()))
                gamma = median_heuristic_gamma(X[used], seed=seed)
        else:
            raise ValueError(f"kernel={kernel!r}: expected 'rbf' or 'linear'.")
    unknown = set(metric_kwds) - {"kernel", "gamma"}
    if unknown:
        raise TypeError(f"distance_test: unexpected keyword(s) {sorted(unknown)}.")
    return kind, kernel, gamma


def _test_one(metric: str, U: np.ndarray, z: np.ndarray, b: np.ndarray, kind: int | None, gamma: Any, n_perms: int,
              rng: np.random.Generator) -> dict[str, Any]:
    """Observed distance, permutation p-value and null mean of one perturbation (``z``: 1 = its cells)."""
    strata = [np.flatnonzero(b == v) for v in pd.unique(b)]
    fixed = sum(int(z[s].sum()) for s in strata if z[s].all())
    m, c = int(z.sum()), int(len(z) - z.sum())
    K = union_kernel(U, kind, float(gamma or 1.0)) if kind is not None else None
    squared = metric == "mmd" and kind is None  # linear MMD: the squared euclidean distance of means
    stat = "euclidean" if squared else metric
    obs = perm_stats(stat, U, z[None, :], m, c, K)[0]
    chunk = 250
    null = [perm_stats(stat, U, label_draws(rng, z, strata, min(chunk, n_perms - s0)), m, c, K)
            for s0 in range(0, n_perms, chunk)]
    null_arr = np.concatenate(null)
    if squared:
        obs, null_arr = obs**2, null_arr**2
    tol = 1e-12 * max(1.0, abs(obs))
    k = int((null_arr >= obs - tol).sum())
    return {"distance": float(obs), "pvalue": (k + 1) / (n_perms + 1), "n_cells": m, "n_reference_cells": c,
            "null_mean": float(null_arr.mean()), "n_fixed_cells": fixed, "n_perms": int(n_perms)}


def results_table(rows: list[dict], index: str, alpha: float, at: int = 2) -> pd.DataFrame:
    """Rows → DataFrame indexed by ``index`` (the groupby column), with ``pvalue_adj`` (BH) and ``significant``."""
    from ..metrics.null import benjamini_hochberg

    tab = pd.DataFrame(rows).set_index(index)
    tab.index.name = index
    tab.insert(at, "pvalue_adj", benjamini_hochberg(tab["pvalue"].to_numpy()))
    tab.insert(at + 1, "significant", tab["pvalue_adj"] < alpha)
    return tab


@doc_params(**DIST_DOC)
def distance_test(
    adata: AnnData, groupby: str, reference: str,
    metric: str = "edistance",
    *,
    n_perms: int = 1000,
    batch_key: str | None = None,
    max_cells: int | None = 1000,
    alpha: float = 0.05,
    obsm_key: str | None = None, layer: str | None = None, seed: int = 0, key_added: str = "distance_test", copy: bool = False,
    **metric_kwds: Any,
) -> AnnData | None:
    """Permutation test of each perturbation against the controls (the E-test of Peidli et al.).

    For each group ``g`` other than ``reference``, the cells of ``g`` and of the controls are
    pooled and their labels permuted ``n_perms`` times (keeping the two group sizes); the
    p-value is ``(k + 1) / (n_perms + 1)`` with ``k`` the number of permutations whose distance
    is at least the observed one (Phipson & Smyth 2010). p-values are adjusted across
    perturbations with Benjamini–Hochberg. With ``batch_key`` labels are permuted only within
    each batch (plate): a perturbation's cells swap only with controls of their own plate, so
    plate effects shared by the perturbation's wells do not count as a perturbation effect.

    Parameters
    ----------
    {sc_adata}
    {sc_groupby}
    reference
        The control group (a value of ``groupby``).
    metric
        One of :data:`TESTABLE`: ``"edistance"`` (default), ``"mmd"``, ``"mean_pairwise"``,
        ``"euclidean"``, ``"cosine"``, ``"pearson"``.
    n_perms
        Permutations per perturbation.
    batch_key
        ``.obs`` column (e.g. ``"Metadata_Plate"``): permute only within its levels.
    max_cells
        Groups (the controls included) with more cells are subsampled to this many, seeded by
        ``seed``; the subsampled groups and their sizes are recorded in provenance. The pooled
        kernel matrix is at most ``(2 max_cells)²``. ``None``: no subsampling.
    {sc_alpha}
    {sc_rep}
    seed
        Seed of subsampling and permutations.
    key_added
        ``.uns`` key of the result table.
    {sc_copy}
    **metric_kwds
        ``gamma`` / ``kernel`` for ``mmd`` (default RBF with the median-heuristic gamma of all
        the cells used, shared by every perturbation).

    Returns
    -------
    ``None`` (or the copy). ``adata.uns[key_added]`` is a DataFrame indexed by perturbation with
    ``distance`` (on the cells used), ``pvalue``, ``pvalue_adj`` (BH), ``significant``,
    ``n_cells``, ``n_reference_cells``, ``null_mean`` (mean distance under permutation),
    ``n_fixed_cells`` (cells in batches without controls, never relabelled) and ``n_perms``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate_cells(n_perturbations=2, n_cells=60, effects=["variance", "none"])
    >>> ip.tl.distance_test(adata, "Metadata_perturbation", "control", obsm_key="X", n_perms=199)
    >>> adata.uns["distance_test"]["pvalue"].round(3).to_dict()
    {'P00': 0.005, 'P01': 0.48}
    """
    if metric not in TESTABLE:
        raise ValueError(f"distance_test: metric={metric!r} cannot be permuted efficiently; choose one of {TESTABLE}.")
    if n_perms < 1:
        raise ValueError(f"n_perms must be >= 1, got {n_perms}.")
    X, what = cells_matrix(adata, obsm_key, layer, "distance_test")
    labels = labels_of(adata, groupby)
    if str(reference) not in set(labels.dropna()):
        raise ValueError(f"reference={reference!r} is not a value of adata.obs[{groupby!r}].")
    batches = _batches(adata, batch_key)
    rng = np.random.default_rng(seed)
    cells, subsampled = _cells_per_group(labels, max_cells, rng)
    ctrl = cells[str(reference)]
    kind, kernel, gamma = _kernel_kind(metric, X, cells, seed, metric_kwds)
    biggest = max(len(v) for n, v in cells.items() if n != str(reference)) + len(ctrl)
    if kind is not None and biggest > 20_000:
        raise ValueError(f"distance_test: pooling {biggest:,} cells would need a {biggest:,}² kernel matrix; "
                         "pass max_cells= (e.g. 1000) to subsample large groups.")
    rows = []
    for n, gi in cells.items():
        if n == str(reference):
            continue
        idx = np.r_[gi, ctrl]
        z = np.r_[np.ones(len(gi)), np.zeros(len(ctrl))]
        rows.append({"group": n, **_test_one(metric, X[idx], z, batches[idx], kind, gamma, n_perms, rng)})
    tab = results_table(rows, "group", alpha)
    tab.index.name = groupby
    adata = start(adata, copy)
    params = {"groupby": groupby, "reference": reference, "metric": metric, "n_perms": n_perms, "batch_key": batch_key,
              "max_cells": max_cells, "representation": what, "alpha": alpha, "seed": seed,
              "kernel": kernel if metric == "mmd" else None, "gamma": gamma}
    store(adata, tab, slot="uns", key_added=key_added, function="tl.distance_test", params=params,
          subsampled=subsampled, n_tested=len(tab), n_significant=int(tab["significant"].sum()))
    return finish(adata, copy)
