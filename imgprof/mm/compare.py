"""One scanpy pipeline (normalize → PCA → neighbours → Leiden → UMAP) on every modality, side by side.

The steps are :func:`imgprof.pp.normalize` and :func:`imgprof.tl.pca` /
:func:`~imgprof.tl.neighbors` / :func:`~imgprof.tl.leiden` /
:func:`~imgprof.tl.umap` (scanpy underneath), run with the same settings on
each modality so that differences come from the data, not the pipeline.
:func:`pipeline_summary` compares the results (clusters vs annotations, and,
for paired observations, how much the modalities agree on neighbours and
clusters); :func:`imgprof.pl.mm_embedding` draws them side by side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

import warnings
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .._core.provenance import log_step
from .._core.selection import Selection
from .._core.store import store
from .._core.validation import check_obs_keys
from ._modalities import as_mods, per_mod

__all__ = ["pipeline_summary", "run_pipeline"]

NORMALIZED_LAYER = "mm_normalized"


def run_pipeline(
    data: AnnData | MuData,
    *,
    mods: Sequence[str] | None = None,
    normalize: str | None | Mapping[str, str | None] = "standardize",
    controls: Selection = None,
    n_comps: int = 30,
    n_neighbors: int = 15,
    metric: str = "cosine",
    resolution: float = 1.0,
    umap: bool = True,
    seed: int = 0,
) -> None:
    """Run the same normalize → PCA → neighbours → Leiden → UMAP pipeline on each modality.

    Parameters
    ----------
    data
        MuData (e.g. from :func:`imgprof.mm.join`) or ``{modality: AnnData}``; modified in place.
    mods
        Modalities to process (default all).
    normalize
        :func:`imgprof.pp.normalize` method (``"standardize"``, ``"mad_robustize"``...),
        ``"counts"`` for RNA-seq counts (scanpy's ``normalize_total`` to 10,000 per cell +
        ``log1p``), or ``None`` (data already normalized); one for all or one per modality.
        The result goes to ``layers["mm_normalized"]``; ``.X`` is left unchanged.
    controls
        Reference rows for the normalization (one selection for all or per modality;
        ``None``: all rows).
    n_comps, n_neighbors, metric, resolution, seed
        PCA components (capped by the data size), neighbours, neighbour metric,
        Leiden resolution and random seed, identical for every modality.
    umap
        Also compute a UMAP.

    Returns
    -------
    None. Each modality gets ``obsm["X_pca"]``, the neighbour graph, ``obs["leiden"]``
    and ``obsm["X_umap"]``.

    Examples
    --------
    >>> import imgprof as ip
    >>> morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
    >>> ip.mm.run_pipeline({"morph": morph, "expr": expr}, n_comps=10)
    >>> morph.obs["leiden"].nunique() > 1 and "X_umap" in expr.obsm
    True
    """
    from .. import pp, tl

    ms = as_mods(data, mods)
    names = list(ms)
    norm = per_mod(normalize, names, "normalize")
    ctrl = per_mod(controls, names, "controls")
    for m, x in ms.items():
        layer = None
        if norm[m] == "counts":
            import scanpy as sc

            store(x, x.X.copy(), slot="layers", key_added=NORMALIZED_LAYER, function=None)
            sc.pp.normalize_total(x, target_sum=1e4, layer=NORMALIZED_LAYER)
            sc.pp.log1p(x, layer=NORMALIZED_LAYER)
            layer = NORMALIZED_LAYER
        elif norm[m] is not None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*zero reference scale.*")
                pp.normalize(x, method=norm[m], controls=ctrl[m], key_added=NORMALIZED_LAYER)
            layer = NORMALIZED_LAYER
        tl.pca(x, n_comps=n_comps, layer=layer, random_state=seed)
        tl.neighbors(x, n_neighbors=n_neighbors, metric=metric, random_state=seed)
        tl.leiden(x, resolution=resolution, random_state=seed)
        if umap:
            tl.umap(x, random_state=seed)
        log_step(x, "mm.run_pipeline", {"modality": m, "normalize": norm[m], "n_comps": n_comps,
                                         "n_neighbors": n_neighbors, "metric": metric, "resolution": resolution,
                                         "umap": umap, "seed": seed})
    if hasattr(data, "mod"):
        log_step(data, "mm.run_pipeline", {"mods": names, "normalize": {m: norm[m] for m in names}, "n_comps": n_comps,
                                            "n_neighbors": n_neighbors, "resolution": resolution})


def _knn_sets(x: ad.AnnData, names: list[str]) -> list[set]:
    key = x.uns.get("neighbors", {}).get("distances_key", "distances")
    if key not in x.obsp:
        raise KeyError("pipeline_summary: no neighbour graph; run ip.mm.run_pipeline first.")
    D = x.obsp[key].tocsr()
    pos = {n: i for i, n in enumerate(x.obs_names)}
    out = []
    for n in names:
        row = D.getrow(pos[n])
        out.append({x.obs_names[j] for j in row.indices})
    return out


def pipeline_summary(
    data: AnnData | MuData, *, label: str | Mapping[str, str] | None = None, mods: Sequence[str] | None = None
) -> pd.DataFrame:
    """Compare the pipeline results of the modalities.

    Parameters
    ----------
    data
        MuData or ``{modality: AnnData}`` after :func:`run_pipeline`.
    label
        Annotation column (one for all or per modality), e.g. the MOA; clusters are
        compared with it by adjusted Rand index (ARI) and normalised mutual information (NMI).
    mods
        Modalities (default all).

    Returns
    -------
    One row per modality: ``n_obs``, ``n_vars``, ``n_pcs``, ``n_clusters``, ``ari_label``,
    ``nmi_label``. When observations are shared between modalities (a paired join),
    one extra row per pair of modalities (``modality="A|B"``) gives ``ari_clusters``
    (agreement of the two Leiden partitions; 0 = chance), ``knn_jaccard`` (mean Jaccard
    overlap of each observation's neighbours in the two modalities) and
    ``knn_jaccard_chance`` (its approximate value for unrelated neighbourhoods).

    Examples
    --------
    >>> import imgprof as ip
    >>> morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
    >>> ip.mm.run_pipeline({"morph": morph, "expr": expr}, n_comps=10, umap=False)
    >>> bool(ip.mm.pipeline_summary({"morph": morph, "expr": expr})["n_clusters"].gt(1).all())
    True
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    ms = as_mods(data, mods)
    names = list(ms)
    lab = per_mod(label, names, "label") if label is not None else None
    rows = []
    for m, x in ms.items():
        if "leiden" not in x.obs or "X_pca" not in x.obsm:
            raise KeyError(f"pipeline_summary: modality {m!r} has no 'leiden'/'X_pca'; run ip.mm.run_pipeline first.")
        r = {"modality": m, "n_obs": x.n_obs, "n_vars": x.n_vars, "n_pcs": int(x.obsm["X_pca"].shape[1]),
             "n_clusters": int(x.obs["leiden"].nunique())}
        if lab is not None:
            check_obs_keys(x, lab[m], param=f"label ({m})")
            y = x.obs[lab[m]]
            ok = y.notna().to_numpy() & (y.astype(str) != "").to_numpy()
            r["ari_label"] = float(adjusted_rand_score(y[ok].astype(str), x.obs["leiden"][ok])) if ok.sum() > 1 else np.nan
            r["nmi_label"] = (float(normalized_mutual_info_score(y[ok].astype(str), x.obs["leiden"][ok]))
                              if ok.sum() > 1 else np.nan)
        rows.append(r)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = [n for n in ms[a].obs_names if n in set(ms[b].obs_names)]
            if len(shared) < 3:
                continue
            la = ms[a].obs.loc[shared, "leiden"].astype(str)
            lb = ms[b].obs.loc[shared, "leiden"].astype(str)
            ka, kb = _knn_sets(ms[a], shared), _knn_sets(ms[b], shared)
            sset = set(shared)
            jac = [len((p & sset) & (q & sset)) / max(1, len((p | q) & sset)) for p, q in zip(ka, kb)]
            # chance: two independent random neighbour sets of the same sizes among the other n - 1 observations
            n_o = len(shared)
            ks = np.array([[len(p & sset), len(q & sset)] for p, q in zip(ka, kb)], dtype=float)
            inter = ks[:, 0] * ks[:, 1] / max(1, n_o - 1)
            chance = float(np.mean(inter / np.maximum(1e-12, ks.sum(axis=1) - inter)))
            rows.append({"modality": f"{a}|{b}", "n_obs": n_o, "ari_clusters": float(adjusted_rand_score(la, lb)),
                         "knn_jaccard": float(np.mean(jac)), "knn_jaccard_chance": chance})
    return pd.DataFrame(rows)
