"""Subpopulation view: which cell states (clusters) does each perturbation enrich against the controls?"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.docs import doc_params
from .._core.store import store
from .._core.validation import check_obs_keys, finish, start
from ._distance_groups import DIST_DOC, labels_of
from ._distance_test import label_draws, results_table


def _chi2_stat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson χ² of 2 × K tables given row counts ``a`` and ``b`` (each ``(..., K)``)."""
    col = a + b
    na, nb = a.sum(axis=-1, keepdims=True), b.sum(axis=-1, keepdims=True)
    n = na + nb
    ea, eb = col * na / n, col * nb / n
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(col > 0, (a - ea) ** 2 / ea + (b - eb) ** 2 / eb, 0.0)
    return t.sum(axis=-1)


def _cluster(adata: AnnData, cluster_key: str, obsm_key: str | None, n_neighbors: int, metric: str,
             resolution: float, seed: int) -> bool:
    """Leiden on the joint embedding unless ``adata.obs[cluster_key]`` exists; whether it clustered here."""
    if cluster_key in adata.obs:
        return False
    from .embedding import leiden, neighbors

    rep = obsm_key or ("X_pca" if "X_pca" in adata.obsm else "X")
    neighbors(adata, n_neighbors=n_neighbors, use_rep=rep, metric=metric, random_state=seed)
    leiden(adata, resolution=resolution, key_added=cluster_key, random_state=seed)
    return True


def _crosstab(adata: AnnData, labels: pd.Series, groupby: str,
              cluster_key: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Groups × clusters counts, the labels, the cells with both, and each cell's cluster code."""
    clusters = adata.obs[cluster_key].astype(str)
    lab = labels.to_numpy(dtype=object)
    ok = pd.notna(lab) & clusters.notna().to_numpy()
    ct = pd.crosstab(pd.Series(lab[ok], name=groupby), pd.Series(clusters.to_numpy()[ok], name=cluster_key))
    code = pd.Categorical(clusters.to_numpy(), categories=list(ct.columns)).codes
    return ct, lab, ok, code


def _perm_pvalue(stat: float, z: np.ndarray, onehot: np.ndarray, strata: list[np.ndarray], n_perms: int,
                 rng: np.random.Generator) -> float:
    """Permutation p-value of the χ² statistic, labels ``z`` permuted within ``strata``."""
    tot = onehot.sum(axis=0)
    null = []
    for s0 in range(0, n_perms, 250):
        Z = label_draws(rng, z, strata, min(250, n_perms - s0))
        pa = Z @ onehot
        null.append(_chi2_stat(pa, tot[None, :] - pa))
    null_arr = np.concatenate(null)
    return (int((null_arr >= stat - 1e-12 * max(1.0, stat)).sum()) + 1) / (n_perms + 1)


def _enrichment(name: str, a: np.ndarray, b: np.ndarray, clusters: pd.Index, groupby: str,
                cluster_key: str) -> tuple[list[dict], np.ndarray]:
    """Per cluster: fractions, smoothed log2 ratio and two-sided Fisher p-value (cluster vs rest)."""
    from scipy.stats import fisher_exact

    K = len(a)
    na, nb = a.sum(), b.sum()
    l2r = np.log2(((a + 0.5) / (na + 0.5 * K)) / ((b + 0.5) / (nb + 0.5 * K)))
    rows = []
    for k, cl in enumerate(clusters):
        fp = fisher_exact([[a[k], na - a[k]], [b[k], nb - b[k]]])[1] if (a[k] + b[k]) > 0 else 1.0
        rows.append({groupby: name, cluster_key: str(cl), "fraction": a[k] / na, "reference_fraction": b[k] / nb,
                     "log2_ratio": float(l2r[k]), "pvalue": float(fp)})
    return rows, l2r


@doc_params(**DIST_DOC)
def cluster_composition(
    adata: AnnData, groupby: str, reference: str,
    *,
    cluster_key: str = "leiden",
    resolution: float = 1.0,
    n_neighbors: int = 15,
    metric: str = "euclidean",
    method: str = "chi2",
    n_perms: int = 1000,
    batch_key: str | None = None,
    alpha: float = 0.05,
    obsm_key: str | None = None, seed: int = 0, key_added: str = "cluster_composition", copy: bool = False,
) -> AnnData | None:
    """Each perturbation's cell-state (cluster) fractions against the controls, with a test.

    Cells of all groups are clustered together (Leiden on the joint embedding, through
    :func:`imgprof.tl.neighbors` and :func:`imgprof.tl.leiden`, unless ``adata.obs[cluster_key]``
    exists). For each perturbation, its cluster counts and the controls' form a 2 × K table:
    ``method="chi2"`` tests it with Pearson's χ² (asymptotic; approximate when expected counts
    are small), ``method="permutation"`` with the same statistic and labels permuted between the
    perturbation's and the controls' cells (within ``batch_key`` levels if given;
    p = (k+1)/(N+1)). p-values are BH-adjusted across perturbations. Per cluster, a two-sided
    Fisher exact test (cluster vs rest, BH over all perturbation × cluster cells) says which
    states are enriched or depleted. Cells are treated as independent: when wells differ,
    prefer ``batch_key`` permutation or confirm on wells.

    Parameters
    ----------
    {sc_adata}
    groupby
        ``.obs`` column of perturbations.
    reference
        Control group.
    cluster_key
        ``.obs`` column of clusters; computed with Leiden when absent.
    resolution, n_neighbors, metric
        Leiden resolution, neighbours and neighbour metric (only when clustering here).
    method
        ``"chi2"`` or ``"permutation"``.
    n_perms
        Permutations (``method="permutation"``).
    batch_key
        Permute within these levels (``method="permutation"``).
    {sc_alpha}
    obsm_key
        Embedding for the neighbour graph (default ``"X_pca"`` if present, else ``.X``).
    seed
        Seed of Leiden and of permutations.
    key_added
        ``.uns`` key of the result.
    {sc_copy}

    Returns
    -------
    ``None`` (or the copy). ``adata.uns[key_added]`` holds ``"fractions"`` (groups × clusters),
    ``"test"`` (per perturbation: ``statistic``, ``dof``, ``pvalue``, ``pvalue_adj``,
    ``significant``, ``top_cluster``, ``top_log2_ratio``) and ``"enrichment"`` (one row per
    perturbation × cluster: ``fraction``, ``reference_fraction``, ``log2_ratio``, ``pvalue``,
    ``pvalue_adj``).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate_cells(n_perturbations=2, n_cells=150, effects=["subpopulation", "none"],
    ...                                    effect_size=1.5, n_features=5)
    >>> ip.tl.cluster_composition(adata, "Metadata_perturbation", "control", obsm_key="X", resolution=0.3)
    >>> adata.uns["cluster_composition"]["test"]["significant"].to_dict()
    {'P00': True, 'P01': False}
    """
    from scipy.stats import chi2 as chi2_dist

    from ..metrics.null import benjamini_hochberg

    if method not in ("chi2", "permutation"):
        raise ValueError(f"method={method!r}: expected 'chi2' or 'permutation'.")
    labels = labels_of(adata, groupby)
    if str(reference) not in set(labels.dropna()):
        raise ValueError(f"reference={reference!r} is not a value of adata.obs[{groupby!r}].")
    if batch_key is not None:
        check_obs_keys(adata, batch_key, param="batch_key")
    adata = start(adata, copy)
    clustered_here = _cluster(adata, cluster_key, obsm_key, n_neighbors, metric, resolution, seed)
    ct, lab, ok, code = _crosstab(adata, labels, groupby, cluster_key)
    names = [str(n) for n in ct.index]
    counts = ct.to_numpy().astype(np.float64)
    fractions = pd.DataFrame(counts / counts.sum(axis=1, keepdims=True), index=ct.index, columns=ct.columns)
    ref_row = names.index(str(reference))
    b = counts[ref_row]
    rng = np.random.default_rng(seed)
    batches = adata.obs[batch_key].astype(str).to_numpy() if batch_key is not None else np.zeros(adata.n_obs, object)
    rows: list[dict[str, Any]] = []
    enrich: list[dict[str, Any]] = []
    K = counts.shape[1]
    for gi, name in enumerate(names):
        if gi == ref_row:
            continue
        a = counts[gi]
        stat = float(_chi2_stat(a, b))
        used = (a + b) > 0
        dof = int(used.sum()) - 1
        if method == "chi2":
            p = float(chi2_dist.sf(stat, dof)) if dof > 0 else 1.0
        else:
            idx = np.flatnonzero(ok & ((lab == name) | (lab == str(reference))))
            onehot = np.zeros((len(idx), K))
            onehot[np.arange(len(idx)), code[idx]] = 1.0
            bt = batches[idx]
            p = _perm_pvalue(stat, (lab[idx] == name).astype(np.float64), onehot,
                             [np.flatnonzero(bt == v) for v in pd.unique(bt)], n_perms, rng)
        enr_rows, l2r = _enrichment(name, a, b, ct.columns, groupby, cluster_key)
        enrich += enr_rows
        top = int(np.argmax(np.abs(l2r) * used))
        rows.append({groupby: name, "statistic": stat, "dof": dof, "pvalue": p, "n_cells": int(a.sum()),
                     "top_cluster": str(ct.columns[top]), "top_log2_ratio": float(l2r[top])})
    test = results_table(rows, groupby, alpha, at=3)
    enr = pd.DataFrame(enrich)
    enr["pvalue_adj"] = benjamini_hochberg(enr["pvalue"].to_numpy())
    enr["significant"] = enr["pvalue_adj"] < alpha
    fractions.index = fractions.index.astype(str)
    fractions.columns = fractions.columns.astype(str)
    params = {"groupby": groupby, "reference": reference, "cluster_key": cluster_key, "obsm_key": obsm_key,
              "resolution": resolution, "n_neighbors": n_neighbors, "metric": metric, "method": method,
              "n_perms": n_perms if method == "permutation" else None, "batch_key": batch_key, "alpha": alpha,
              "seed": seed}
    store(adata, {"fractions": fractions, "test": test, "enrichment": enr}, slot="uns", key_added=key_added,
          function="tl.cluster_composition", params=params, clustered_here=clustered_here, n_clusters=K,
          n_significant=int(test["significant"].sum()))
    return finish(adata, copy)
