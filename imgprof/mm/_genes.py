"""Consensus profiles and the per-gene table of :func:`imgprof.mm.gene_compound_match`.

Private module of :mod:`imgprof.mm.crossmodal`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._core.validation import resolve_mask
from ._keys import normalize_names, split_multi


def shared_features(genes: ad.AnnData, compounds: ad.AnnData) -> list[str]:
    """Feature names in both sets (in ``genes`` order); an empty intersection raises."""
    shared = [v for v in genes.var_names if v in set(compounds.var_names)]
    if not shared:
        raise ValueError(
            "gene_compound_match: genes and compounds share no feature name; they must be in one feature space "
            f"(e.g. {list(genes.var_names[:3])} vs {list(compounds.var_names[:3])})."
        )
    return shared


def _keep(adata: ad.AnnData, controls: Any, param: str) -> np.ndarray:
    return np.ones(adata.n_obs, bool) if controls is None else ~resolve_mask(adata, controls, param=param)


def keyed_rows(genes: ad.AnnData, compounds: ad.AnnData, shared: list[str], *, gene_key: str, target_key: str,
               gene_controls: Any, compound_controls: Any, sep: str | None, names: str) -> tuple[ad.AnnData, ad.AnnData]:
    """Non-control rows on the shared features, with ``mm_gene`` / ``mm_target`` (normalised, ``|``-joined)."""
    g = genes[_keep(genes, gene_controls, "gene_controls"), shared].copy()
    c = compounds[_keep(compounds, compound_controls, "compound_controls"), shared].copy()
    g.obs["mm_gene"] = normalize_names(g.obs[gene_key], names).astype(object).to_numpy()
    if g.obs["mm_gene"].isna().any():
        raise ValueError(f"genes.obs[{gene_key!r}] has missing values; pass gene_controls= or drop those rows.")
    tgt_lists = split_multi(c.obs[target_key].astype(object).where(c.obs[target_key].notna(), None), sep)
    norm_lists = [sorted(set(normalize_names(pd.Series(t, dtype=object), names).dropna())) if t else []
                  for t in tgt_lists]
    c.obs["mm_target"] = ["|".join(t) for t in norm_lists]
    genes_set = set(g.obs["mm_gene"])
    all_targets = {x for t in norm_lists for x in t}
    if not all_targets & genes_set:
        raise ValueError(
            f"no compound in `compounds` targets any of the {len(genes_set)} gene(s) in `genes` "
            f"(genes: {sorted(genes_set)[:10]}; {len(all_targets)} distinct compound targets)."
        )
    return g, c


def consensus_profiles(g: ad.AnnData, c: ad.AnnData, compound_key: str, consensus: str) -> tuple[ad.AnnData, ad.AnnData]:
    """One profile per gene and per compound (with a target), each with ``mm_target``."""
    from ..pp import consensus as _consensus

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        gc = _consensus(g, by="mm_gene", operation=consensus, count_key=None, keep_metadata=False, single_replicate="ignore")
        c_ok = c[c.obs["mm_target"] != ""].copy()
        cc = _consensus(c_ok, by=[compound_key], operation=consensus, count_key=None, keep_metadata=False,
                        single_replicate="ignore")
    tmap = c_ok.obs.groupby(compound_key, observed=True)["mm_target"].agg(
        lambda s: "|".join(sorted({x for v in s for x in v.split("|") if x})))
    cc.obs["mm_target"] = tmap.reindex(cc.obs[compound_key]).to_numpy()
    gc.obs["mm_target"] = gc.obs["mm_gene"].astype(str).to_numpy()
    return gc, cc


def gene_map(Xg: np.ndarray, Xc: np.ndarray, gc: ad.AnnData, cc: ad.AnnData, *, metric: str | Callable, null_size: int,
             threshold: float, seed: int) -> pd.DataFrame:
    """mAP per gene (positives: compounds targeting it), indexed by gene."""
    from ..metrics import RetrievalWarning, average_precision_kernel, mean_average_precision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RetrievalWarning)
        ap = average_precision_kernel(
            Xg, gc.obs[["mm_target"]], ["mm_target"], [], [], ["mm_target"], metric=metric,
            reference_X=Xc, reference_obs=cc.obs[["mm_target"]], multilabel="mm_target", multilabel_sep="|", warn=False,
        )
    ap = ap.reset_index(drop=True)
    scored = ap.loc[ap["n_pos_pairs"] > 0]
    if len(scored):
        m = mean_average_precision(scored, "mm_target", null_size=null_size, threshold=threshold, seed=seed)
    else:  # pragma: no cover - guarded by the hits check in keyed_rows
        m = pd.DataFrame(columns=["mm_target", "mean_average_precision", "p_value", "corrected_p_value", "below_corrected_p"])
    return m.set_index("mm_target")


def gene_rows(S: np.ndarray, gc: ad.AnnData, cc: ad.AnnData, m: pd.DataFrame, compound_key: str, n_top: int) -> pd.DataFrame:
    """One row per gene: its targeting compounds, mAP and p-values, the ``n_top`` most similar compounds."""
    cnames = cc.obs[compound_key].astype(str).to_numpy()
    rows = []
    for i, gene in enumerate(gc.obs["mm_gene"].astype(str)):
        targeting = [cnames[j] for j, t in enumerate(cc.obs["mm_target"]) if gene in t.split("|")]
        top = [cnames[j] for j in np.argsort(-S[i])[:n_top]]
        rows.append({
            "gene": gene, "n_target_compounds": len(targeting),
            "mean_average_precision": m["mean_average_precision"].get(gene, np.nan),
            "p_value": m["p_value"].get(gene, np.nan), "corrected_p_value": m["corrected_p_value"].get(gene, np.nan),
            "retrieved": bool(m["below_corrected_p"].get(gene, False)),
            "top_compounds": "|".join(top), "target_compounds": "|".join(targeting),
        })
    return pd.DataFrame(rows)


def sim_matrix(A: np.ndarray, B: np.ndarray, metric: str | Callable) -> np.ndarray:
    """Full similarity matrix with the metrics module's own similarity (same metric as the AP)."""
    from ..metrics._similarity import prepare, similarity

    pa, pb = prepare(A, metric, np.float64), prepare(B, metric, np.float64)
    return np.asarray(similarity(pa, pb, np.arange(A.shape[0]), None, metric))
