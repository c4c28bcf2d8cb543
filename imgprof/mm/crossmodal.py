"""Cross-modal analysis: alignment (CCA/PLS), cross-modal retrieval, per-modality retrieval,
complementarity, and gene–compound matching.

All retrieval numbers are average precision / mAP from :mod:`imgprof.metrics`
(copairs-compatible, permutation p-values); this module only decides which
profiles are queries, positives and negatives.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .._core.provenance import log_step
from .._core.validation import (
    check_df_keys,
    check_float,
    check_int,
    check_obs_keys,
    get_matrix,
    is_dask,
    resolve_mask,
)

__all__ = [
    "align",
    "compare_retrieval",
    "complementarity",
    "cross_retrieval",
    "gene_compound_match",
]

_METHODS = ("cca", "pls")


# ----------------------------------------------------------------------------- helpers


def _dense(X) -> np.ndarray:
    if is_dask(X):
        X = X.compute()
    return np.asarray(X, dtype=np.float64)


def _two_mods(mdata, mods) -> tuple[str, str]:
    if not hasattr(mdata, "mod") or not isinstance(getattr(mdata, "mod", None), Mapping):
        raise TypeError(
            f"mdata must be a MuData with two modalities (from ip.mm.join), got {type(mdata).__name__}."
        )
    names = list(mdata.mod.keys())
    mods = tuple(mods) if mods is not None else tuple(names)
    if len(mods) != 2:
        raise ValueError(f"mods: give exactly two modalities, got {list(mods)} (available: {names}).")
    missing = [m for m in mods if m not in mdata.mod]
    if missing:
        raise KeyError(f"mods: modality {missing} not in mdata (available: {names}).")
    return mods


def _paired(mdata, mods, use_rep=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    a, b = _two_mods(mdata, mods)
    A, B = mdata[a], mdata[b]
    if A.n_obs != B.n_obs or set(A.obs_names) != set(B.obs_names):
        raise ValueError(
            f"{a} and {b} do not share their observations ({A.n_obs} vs {B.n_obs}, "
            f"{len(set(A.obs_names) & set(B.obs_names))} in common): cross-modal pairing needs a paired join, "
            "ip.mm.join(..., level='perturbation') or level='well' with paired=True."
        )
    names = list(A.obs_names)
    X = _dense(get_matrix(A, use_rep=use_rep))
    Y = _dense(get_matrix(B[names], use_rep=use_rep))
    for M, m in ((X, a), (Y, b)):
        if not np.isfinite(M).all():
            raise ValueError(f"{m}: the profiles contain NaN/inf; impute or drop those features first.")
    return X, Y, names


def _check_align_args(n_components, n_pcs) -> None:
    check_int(n_components, "n_components", min_value=1)
    check_int(n_pcs, "n_pcs", min_value=1, allow_none=True)


class _Aligner:
    """Standardise → PCA → CCA/PLS, fitted on training pairs only."""

    def __init__(self, method: str, n_components: int, n_pcs: int | None, scale: bool, seed: int):
        if method not in _METHODS:
            raise ValueError(f"method={method!r}: expected one of {_METHODS}.")
        self.method, self.n_components, self.n_pcs, self.scale, self.seed = method, n_components, n_pcs, scale, seed

    def _prep_fit(self, X):
        mu = X.mean(axis=0)
        sd = X.std(axis=0) if self.scale else np.ones(X.shape[1])
        sd = np.where(sd > 0, sd, 1.0)
        Z = (X - mu) / sd
        from sklearn.decomposition import PCA

        k = min(self.n_pcs or 50, X.shape[0] - 1, X.shape[1])
        if k < 1:
            raise ValueError(f"alignment needs at least 2 training pairs, got {X.shape[0]}.")
        pca = PCA(n_components=k, random_state=self.seed).fit(Z)
        return (mu, sd, pca)

    @staticmethod
    def _prep_apply(p, X):
        mu, sd, pca = p
        return pca.transform((X - mu) / sd)

    def fit(self, X, Y):
        from sklearn.cross_decomposition import CCA, PLSCanonical

        self.px, self.py = self._prep_fit(X), self._prep_fit(Y)
        Xp, Yp = self._prep_apply(self.px, X), self._prep_apply(self.py, Y)
        k = int(min(self.n_components, Xp.shape[1], Yp.shape[1], X.shape[0] - 1))
        if k < 1:
            raise ValueError("alignment: fewer than one component can be fitted with this many pairs.")
        self.k = k
        cls = CCA if self.method == "cca" else PLSCanonical
        self.model = cls(n_components=k, scale=False, max_iter=1000)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            self.model.fit(Xp, Yp)
        self.n_warnings = sum(1 for x in w if "converge" in str(x.message).lower())
        return self

    def transform(self, X, Y):
        Xp, Yp = self._prep_apply(self.px, X), self._prep_apply(self.py, Y)
        U, V = self.model.transform(Xp, Yp)
        return np.asarray(U), np.asarray(V)


def _score_correlations(U: np.ndarray, V: np.ndarray) -> list[float]:
    out = []
    for j in range(U.shape[1]):
        u, v = U[:, j], V[:, j]
        out.append(float(np.corrcoef(u, v)[0, 1]) if u.std() > 0 and v.std() > 0 else float("nan"))
    return out


# ----------------------------------------------------------------------------- alignment


def align(
    mdata,
    *,
    mods: Sequence[str] | None = None,
    method: str = "cca",
    n_components: int = 2,
    n_pcs: int | None = None,
    scale: bool = True,
    use_rep: str | None = None,
    key_added: str | None = None,
    seed: int = 0,
) -> None:
    """Align two paired modalities in a shared space with CCA or PLS (fitted on all pairs).

    Each modality is standardised, reduced to ``n_pcs`` principal components,
    then CCA (``method="cca"``) or canonical PLS (``"pls"``) finds
    ``n_components`` maximally correlated (CCA) or co-varying (PLS) directions.
    The scores go to ``mdata[mod].obsm[key_added]``.

    The fit uses every pair, so the canonical correlations written to
    ``mdata.uns[key_added]`` are in-sample and optimistic (with fewer pairs than
    PCs they are 1 by construction). Use :func:`cross_retrieval` for held-out
    numbers.

    Parameters
    ----------
    mdata
        Paired MuData from :func:`imgprof.mm.join`.
    mods
        The two modalities (default: both of ``mdata``).
    method
        ``"cca"`` or ``"pls"``.
    n_components, n_pcs
        Latent dimensions, and PCs per modality before alignment (default
        ``min(50, n_pairs - 1, n_features)``).
    scale
        Standardise features before PCA.
    use_rep
        Start from an ``.obsm`` representation instead of ``.X``.
    key_added
        ``.obsm`` key (default ``"X_cca"`` / ``"X_pls"``).
    seed
        PCA random state.

    Returns
    -------
    None
        Writes ``mdata[mod].obsm[key_added]`` for both modalities and ``mdata.uns[key_added]``
        (the number of components actually used, the canonical correlations). A
        ``n_components`` larger than the pairs allow is reduced with a warning.

    Examples
    --------
    >>> import imgprof as ip
    >>> morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
    >>> ip.mm.annotate(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["target"])
    >>> mdata = ip.mm.join(morph, expr, on=("Metadata_target", "target"), sep="|")
    >>> ip.mm.align(mdata, n_components=2)
    >>> mdata["morph"].obsm["X_cca"].shape
    (15, 2)
    """
    _check_align_args(n_components, n_pcs)
    a, b = _two_mods(mdata, mods)
    X, Y, names = _paired(mdata, (a, b), use_rep)
    al = _Aligner(method, n_components, n_pcs, scale, seed).fit(X, Y)
    if al.k < n_components:
        warnings.warn(
            f"align: n_components={n_components} is more than {len(names)} pairs allow; using n_components={al.k}.",
            UserWarning,
            stacklevel=2,
        )
    U, V = al.transform(X, Y)
    key = key_added or f"X_{method}"
    mdata[a].obsm[key] = U
    mdata[b].obsm[key] = pd.DataFrame(V, index=names).reindex(mdata[b].obs_names).to_numpy()
    info = {
        "method": method, "mods": [a, b], "n_components": int(al.k), "n_pcs": [int(al.px[2].n_components_), int(al.py[2].n_components_)],
        "correlations": _score_correlations(U, V), "in_sample": True, "n_pairs": len(names),
        "convergence_warnings": int(al.n_warnings),
    }
    mdata.uns[key] = info
    for m in (a, b):
        log_step(mdata[m], "mm.align", {"method": method, "n_components": int(al.k), "n_components_requested": n_components,
                                        "n_pcs": n_pcs, "scale": scale, "use_rep": use_rep, "key_added": key})
    log_step(mdata, "mm.align", {"method": method, "n_components": int(al.k), "n_components_requested": n_components,
                                 "n_pcs": n_pcs, "mods": [a, b]},
             correlations=info["correlations"])


def cross_retrieval(
    mdata,
    *,
    mods: Sequence[str] | None = None,
    method: str = "cca",
    n_components: int = 2,
    n_pcs: int | None = None,
    scale: bool = True,
    use_rep: str | None = None,
    n_splits: int = 5,
    metric: str | Callable = "cosine",
    null_size: int = 10000,
    threshold: float = 0.05,
    seed: int = 0,
    return_per_query: bool = False,
):
    """Held-out cross-modal retrieval: does a profile in one modality find its partner in the other?

    The pairs are split into ``n_splits`` folds (leave-one-out when ``n_splits``
    ≥ number of pairs). For each fold, standardisation, PCA and CCA/PLS are fitted
    on the training pairs only; the held-out profiles of modality A are projected
    and ranked against **all** profiles of modality B in the shared space (and B → A).
    Each query has one positive (its partner), so its AP is the reciprocal rank
    (computed by :func:`imgprof.metrics.average_precision_kernel`). The p-value of
    the mAP per direction compares it with the mean AP of independent random
    rankings of every query (:func:`imgprof.metrics.random_ap`), i.e. the null of
    the mean itself, not of a single query.

    Keys built from exactly the same profiles (e.g. four PKC targets all
    annotated to one compound) are not independent: identical profiles are
    grouped, such groups stay in one fold (no leakage), the partner's identical
    copies count as positives, and each distinct (query, partner) profile pair
    is queried once, so duplicates neither inflate the mAP nor the p-value.

    Parameters
    ----------
    mdata
        Paired MuData (:func:`imgprof.mm.join`, ``level="perturbation"``).
    mods, method, n_components, n_pcs, scale, use_rep
        See :func:`align`.
    n_splits
        Cross-validation folds (``>= 2``).
    metric
        Similarity in the shared space (see :func:`imgprof.metrics.average_precision`).
    null_size, threshold, seed
        Permutation null size, significance level, and seed (folds and null).
    return_per_query
        Also return the per-query table (fold, AP, rank).

    Returns
    -------
    DataFrame with one row per direction (``"A->B"``): ``n_profiles`` (queries),
    ``mean_average_precision``, ``chance_map`` (expected mAP of a random ranking),
    ``p_value``, ``corrected_p_value`` (BH over the two directions), ``below_corrected_p``, ``top1`` (fraction of queries whose partner
    ranks first), ``n_pairs``, ``n_distinct_pairs``, ``n_folds``.

    Examples
    --------
    >>> import imgprof as ip
    >>> morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
    >>> ip.mm.annotate(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["target"])
    >>> mdata = ip.mm.join(morph, expr, on=("Metadata_target", "target"), sep="|")
    >>> res = ip.mm.cross_retrieval(mdata, n_splits=5, null_size=1000)
    >>> res["direction"].tolist()
    ['morph->expr', 'expr->morph']
    """
    from sklearn.model_selection import GroupKFold

    from ..metrics import average_precision_kernel, benjamini_hochberg, expected_ap, random_ap

    _check_align_args(n_components, n_pcs)
    check_int(n_splits, "n_splits", min_value=2)
    check_int(null_size, "null_size", min_value=1)
    check_float(threshold, "threshold", min_value=0.0, max_value=1.0, include_min=False, include_max=False)
    a, b = _two_mods(mdata, mods)
    X, Y, names = _paired(mdata, (a, b), use_rep)
    n = len(names)
    if n < 3:
        raise ValueError(f"cross_retrieval: need at least 3 pairs, got {n}.")
    if int(n_splits) < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}.")
    gx, gy = _identical_groups(X), _identical_groups(Y)
    comp = _components(gx, gy)
    n_comp = int(comp.max()) + 1
    if n_comp < 3:
        raise ValueError(
            f"cross_retrieval: only {n_comp} distinct pair(s) once identical profiles are merged; need at least 3."
        )
    k = int(min(n_splits, n_comp))
    folds = GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.arange(n), groups=comp)
    keys = np.asarray(names, dtype=object)
    rows = []
    n_warn = 0
    for f, (tr, te) in enumerate(folds):
        al = _Aligner(method, n_components, n_pcs, scale, seed).fit(X[tr], Y[tr])
        n_warn += al.n_warnings
        U, V = al.transform(X, Y)
        for direction, Q, C, gq, gc in ((f"{a}->{b}", U, V, gx, gy), (f"{b}->{a}", V, U, gy, gx)):
            # one query per distinct (query profile, partner profile); the partner's identical copies are positives
            seen, te_q = set(), []
            for i in te:
                if (gq[i], gc[i]) not in seen:
                    seen.add((gq[i], gc[i]))
                    te_q.append(i)
            te_q = np.asarray(te_q, dtype=int)
            obs_q = pd.DataFrame({"pair": gc[te_q].astype(str), "key": keys[te_q]}, index=[f"{direction}:{x}" for x in keys[te_q]])
            obs_c = pd.DataFrame({"pair": gc.astype(str)}, index=[f"c:{x}" for x in keys])
            ap = average_precision_kernel(
                Q[te_q], obs_q, ["pair"], [], [], ["pair"], metric=metric, reference_X=C, reference_obs=obs_c, warn=False,
            )
            ap["direction"] = direction
            ap["fold"] = f
            rows.append(ap)
    per_query = pd.concat(rows)
    order = [f"{a}->{b}", f"{b}->{a}"]
    rng = np.random.default_rng(seed)
    recs = []
    for d in order:
        pq = per_query.loc[(per_query["direction"] == d) & per_query["average_precision"].notna()]
        npos = pq["n_pos_pairs"].to_numpy(int)
        ntot = pq["n_total_pairs"].to_numpy(int)
        obs_map = float(pq["average_precision"].mean())
        # null of the mean of independent random rankings (one fresh draw per query, not per configuration)
        null = np.zeros(int(null_size))
        for kq, tq in zip(npos, ntot):
            null += random_ap(int(null_size), int(kq), int(tq), rng)
        null /= max(1, len(npos))
        recs.append({
            "direction": d, "n_profiles": int(len(pq)), "mean_average_precision": obs_map,
            "chance_map": float(np.mean(expected_ap(npos, ntot - npos))),
            "p_value": float((np.sum(null >= obs_map - 1e-12) + 1) / (null_size + 1)),
            "top1": float((pq["average_precision"] == 1.0).mean()),
        })
    summary = pd.DataFrame(recs)
    summary["corrected_p_value"] = benjamini_hochberg(summary["p_value"].to_numpy())
    summary["below_corrected_p"] = summary["corrected_p_value"] < threshold
    summary["n_pairs"] = n
    summary["n_distinct_pairs"] = n_comp
    summary["n_folds"] = k
    summary["method"] = method
    summary["convergence_warnings"] = n_warn
    per_query = per_query.rename(columns={"key": "pair_key"})[
        ["direction", "pair_key", "fold", "n_pos_pairs", "n_total_pairs", "average_precision"]
    ].reset_index(drop=True)
    return (summary, per_query) if return_per_query else summary


def _identical_groups(M: np.ndarray) -> np.ndarray:
    """Group id per row; rows with identical profiles (e.g. two keys built from the same wells) share one."""
    _, inv = np.unique(np.ascontiguousarray(M), axis=0, return_inverse=True)
    return inv.ravel().astype(int)


def _components(ga: np.ndarray, gb: np.ndarray) -> np.ndarray:
    """Connected components of pairs linked by an identical profile on either side (kept in one fold)."""
    n = len(ga)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for g in (ga, gb):
        first: dict[int, int] = {}
        for i, v in enumerate(g):
            if v in first:
                ri, rj = find(i), find(first[v])
                if ri != rj:
                    parent[ri] = rj
            else:
                first[v] = i
    roots = [find(i) for i in range(n)]
    _, comp = np.unique(roots, return_inverse=True)
    return comp.astype(int)


# ----------------------------------------------------------------------------- per-modality retrieval


def _per_mod(value, mods: Sequence[str], what: str) -> dict:
    if isinstance(value, Mapping):
        missing = [m for m in mods if m not in value]
        if missing:
            raise KeyError(f"{what}: no entry for modality {missing} (got {list(value)}).")
        return {m: value[m] for m in mods}
    if isinstance(value, (tuple, list)) and len(value) == len(mods) and not isinstance(value, str):
        return dict(zip(mods, value))
    return dict.fromkeys(mods, value)


def _as_mods(data, mods) -> dict[str, ad.AnnData]:
    if isinstance(data, Mapping):
        out = dict(data)
    elif hasattr(data, "mod"):
        out = dict(data.mod)
    else:
        raise TypeError(f"expected a MuData or a dict of AnnData, got {type(data).__name__}.")
    if mods is not None:
        missing = [m for m in mods if m not in out]
        if missing:
            raise KeyError(f"mods: modality {missing} not found (available: {list(out)}).")
        out = {m: out[m] for m in mods}
    for m, x in out.items():
        if not isinstance(x, ad.AnnData):
            raise TypeError(f"modality {m!r}: expected an AnnData, got {type(x).__name__}.")
    return out


_RESULT_COLS = [
    "modality", "task", "id", "n_profiles", "mean_average_precision", "median_correlation", "p_value",
    "corrected_p_value", "retrieved",
]


def compare_retrieval(
    data,
    *,
    perturbation: str | Mapping[str, str] | Sequence[str],
    controls,
    annotation: str | Mapping[str, str] | Sequence[str] | None = None,
    mods: Sequence[str] | None = None,
    multilabel_sep: str | None = "|",
    consistency_on: str = "all",
    replicating: bool = True,
    metric: str | Callable = "cosine",
    null_size: int = 10000,
    n_null: int = 1000,
    threshold: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Replicate and mechanism retrieval in each modality, on the same perturbations.

    For every modality: *activity* (:func:`imgprof.metrics.phenotypic_activity`:
    are a perturbation's replicates retrieved against negative controls?) and,
    with ``annotation``, *consistency* (:func:`imgprof.metrics.phenotypic_consistency`:
    do perturbations sharing a MOA/target retrieve each other?), and *replicating*
    (:func:`imgprof.metrics.percent_replicating`: is the median replicate correlation
    above a null of non-replicates? Way et al. 2022). Run it on the
    unpaired well-level join (``ip.mm.join(..., level="well", paired=False,
    controls=...)``) so that both modalities are restricted to the shared
    mechanisms, and use the normalised key (``"mm_moa"``) as annotation.

    Parameters
    ----------
    data
        MuData or ``{modality: AnnData}``.
    perturbation
        Perturbation column (one name, or one per modality as a dict/sequence).
    controls
        Negative controls per modality (query string, mask; one value or one per modality),
        e.g. ``"mm_control"`` on a joined object.
    annotation
        Mechanism column(s) for consistency (multi-label values split on ``multilabel_sep``).
    mods
        Modalities to use (default all).
    consistency_on
        ``"all"`` perturbations, or ``"active"`` ones only (significant activity).
    replicating
        Also run percent replicating (Spearman, ``n_null`` random non-replicate sets).
    metric, null_size, threshold, seed
        See :func:`imgprof.metrics.mean_average_precision` (``threshold`` is also the
        percent-replicating ``alpha``).
    multilabel_sep
        Separator of multi-valued labels (e.g. ``"A|B"`` targets); ``None`` = none.
    n_null
        Random non-replicate sets per group size for percent replicating.

    Returns
    -------
    Long DataFrame: ``modality``, ``task`` (``"activity"``, ``"consistency"``,
    ``"replicating"``), ``id`` (perturbation or label), ``n_profiles``,
    ``mean_average_precision`` (mAP tasks), ``median_correlation`` (replicating),
    ``p_value``, ``corrected_p_value`` (BH within modality and task; NaN for
    replicating, which uses the raw p as Way et al.), ``retrieved``
    (``corrected_p_value < threshold``; ``p_value < threshold`` for replicating).
    Per-modality percent replicating is the mean of ``retrieved`` over its rows.

    Examples
    --------
    >>> import imgprof as ip
    >>> morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
    >>> ip.mm.annotate(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["moa"])
    >>> md = ip.mm.join(morph, expr, on={"moa": ("Metadata_moa", "moa")}, sep="|", level="well", paired=False,
    ...                 controls=("Metadata_pert_type == 'control'", "pert_type == 'ctl_vehicle'"))
    >>> res = ip.mm.compare_retrieval(md, perturbation={"morph": "Metadata_pert_id", "expr": "pert_id"},
    ...                               controls="mm_control", annotation="mm_moa", null_size=1000)
    >>> sorted(res["task"].unique())
    ['activity', 'consistency', 'replicating']
    """
    from ..metrics import RetrievalWarning, percent_replicating, phenotypic_activity, phenotypic_consistency

    if consistency_on not in ("all", "active"):
        raise ValueError(f"consistency_on={consistency_on!r}: expected 'all' or 'active'.")
    ms = _as_mods(data, mods)
    names = list(ms)
    pert = _per_mod(perturbation, names, "perturbation")
    ctrl = _per_mod(controls, names, "controls")
    ann = _per_mod(annotation, names, "annotation") if annotation is not None else None
    out = []
    for m, x in ms.items():
        check_obs_keys(x, pert[m], param=f"perturbation ({m})")
        c = ctrl[m]
        if isinstance(c, str) and c in x.obs.columns and x.obs[c].dtype == bool:
            c = x.obs[c].to_numpy()
        cmask = resolve_mask(x, c, param=f"controls ({m})")
        miss = x.obs[pert[m]].isna().to_numpy()
        if (miss & ~cmask).any():
            raise ValueError(
                f"perturbation ({m}): {int((miss & ~cmask).sum())} non-control row(s) have no {pert[m]!r} value; "
                "fill them or mark them as controls."
            )
        if miss.any():  # controls without a perturbation id (DMSO rows often have none): label them explicitly
            obs = x.obs.copy()
            col = obs[pert[m]].astype(object)
            obs[pert[m]] = col.where(~miss, "__control__")
            x = ad.AnnData(X=x.X, obs=obs, var=x.var)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RetrievalWarning)
            act = phenotypic_activity(x, pert[m], cmask, metric=metric, null_size=null_size, threshold=threshold, seed=seed)
        out.append(pd.DataFrame({
            "modality": m, "task": "activity", "id": act[pert[m]].astype(str).to_numpy(),
            "n_profiles": act["n_profiles"].to_numpy(), "mean_average_precision": act["mean_average_precision"].to_numpy(),
            "p_value": act["p_value"].to_numpy(), "corrected_p_value": act["corrected_p_value"].to_numpy(),
            "retrieved": act["below_corrected_p"].to_numpy(),
        }))
        if ann is not None:
            check_obs_keys(x, ann[m], param=f"annotation ({m})")
            active = act if consistency_on == "active" else None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RetrievalWarning)
                    cons = phenotypic_consistency(
                        x, ann[m], pert[m], controls=cmask, active=active, multilabel_sep=multilabel_sep,
                        metric=metric, null_size=null_size, threshold=threshold, seed=seed,
                    )
            except ValueError as e:
                if "no profile" not in str(e) and "no profile has a finite AP" not in str(e):
                    raise
                cons = None
            if cons is not None:
                out.append(pd.DataFrame({
                    "modality": m, "task": "consistency", "id": cons[ann[m]].astype(str).to_numpy(),
                    "n_profiles": cons["n_profiles"].to_numpy(),
                    "mean_average_precision": cons["mean_average_precision"].to_numpy(),
                    "p_value": cons["p_value"].to_numpy(), "corrected_p_value": cons["corrected_p_value"].to_numpy(),
                    "retrieved": cons["below_corrected_p"].to_numpy(),
                }))
        if replicating:
            rep = percent_replicating(x, pert[m], controls=cmask, n_null=n_null, alpha=threshold, seed=seed)
            t = rep.table.loc[rep.table["median_correlation"].notna()]
            out.append(pd.DataFrame({
                "modality": m, "task": "replicating", "id": t[pert[m]].astype(str).to_numpy(),
                "n_profiles": t["n_profiles"].to_numpy(), "mean_average_precision": np.nan,
                "median_correlation": t["median_correlation"].to_numpy(), "p_value": t["p_value"].to_numpy(),
                "corrected_p_value": np.nan, "retrieved": t["above_null"].to_numpy(),
            }))
    res = pd.concat(out, ignore_index=True).reindex(columns=_RESULT_COLS)
    res["retrieved"] = res["retrieved"].astype(bool)
    return res


def complementarity(
    results: pd.DataFrame,
    *,
    task: str = "consistency",
    mods: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Which perturbations or mechanisms each modality retrieves: overlap, union, unique.

    Parameters
    ----------
    results
        Output of :func:`compare_retrieval` (columns ``modality``, ``task``, ``id``, ``retrieved``).
    task
        ``"consistency"`` (mechanisms) or ``"activity"`` (perturbations).
    mods
        The two modalities to compare (default: the two in ``results``).
    ids
        Restrict to these ids (e.g. the shared MOAs); ids that a modality could not
        evaluate (fewer than two perturbations with the label) are listed as such.

    Returns
    -------
    DataFrame, one row per id: ``mAP_<mod>``, ``retrieved_<mod>`` (``NaN`` = not
    evaluable in that modality) and ``category`` (``"both"``, ``"only_<mod>"``,
    ``"neither"``, ``"not_evaluable"``: at least one modality could not score it).
    ``.attrs["summary"]`` holds the counts, the union, the overlap and the Jaccard
    index over ids evaluable in both.

    Examples
    --------
    >>> import pandas as pd, imgprof as ip
    >>> res = pd.DataFrame({"modality": ["a", "a", "b", "b"], "task": "consistency", "id": ["x", "y", "x", "y"],
    ...                     "mean_average_precision": [0.9, 0.2, 0.8, 0.7], "retrieved": [True, False, True, True]})
    >>> ip.mm.complementarity(res)["category"].tolist()
    ['both', 'only_b']
    """
    check_df_keys(results, ["modality", "task", "id", "retrieved", "mean_average_precision"], param="results",
                  where="the compare_retrieval table")
    r = results.loc[results["task"] == task]
    if r.empty:
        raise ValueError(f"complementarity: no rows with task={task!r} (tasks: {sorted(results['task'].unique())}).")
    mods = list(mods) if mods is not None else list(dict.fromkeys(r["modality"]))
    if len(mods) != 2:
        raise ValueError(f"complementarity: need exactly two modalities, got {mods}.")
    wide_r = r.pivot_table(index="id", columns="modality", values="retrieved", aggfunc="first")
    wide_m = r.pivot_table(index="id", columns="modality", values="mean_average_precision", aggfunc="first")
    all_ids = sorted(set(ids) if ids is not None else set(wide_r.index))
    table = pd.DataFrame(index=pd.Index(all_ids, name="id"))
    for m in mods:
        table[f"mAP_{m}"] = wide_m[m].reindex(all_ids) if m in wide_m else np.nan
        table[f"retrieved_{m}"] = (wide_r[m].reindex(all_ids) if m in wide_r else pd.Series(np.nan, index=all_ids)).astype(object)
    a, b = mods

    def cat(row):
        ra, rb = row[f"retrieved_{a}"], row[f"retrieved_{b}"]
        if pd.isna(ra) or pd.isna(rb):
            return "not_evaluable"
        if ra and rb:
            return "both"
        if ra:
            return f"only_{a}"
        if rb:
            return f"only_{b}"
        return "neither"

    table["category"] = table.apply(cat, axis=1) if len(table) else pd.Series(dtype=object)
    table = table.reset_index()
    ev = table[table["category"] != "not_evaluable"]
    n_both = int((ev["category"] == "both").sum())
    union = int(ev["category"].isin(["both", f"only_{a}", f"only_{b}"]).sum())
    table.attrs["summary"] = {
        "task": task, "mods": mods, "n_ids": int(len(table)), "n_evaluable_both": int(len(ev)),
        "n_both": n_both, f"n_only_{a}": int((ev["category"] == f"only_{a}").sum()),
        f"n_only_{b}": int((ev["category"] == f"only_{b}").sum()), "n_neither": int((ev["category"] == "neither").sum()),
        "n_union": union, "jaccard": (n_both / union) if union else float("nan"),
        "n_not_evaluable": int((table["category"] == "not_evaluable").sum()),
    }
    return table


# ----------------------------------------------------------------------------- gene–compound matching


def gene_compound_match(
    genes: ad.AnnData,
    compounds: ad.AnnData,
    *,
    gene_key: str,
    target_key: str,
    compound_key: str,
    gene_controls=None,
    compound_controls=None,
    sep: str | None = "|",
    names: str = "casefold",
    consensus: str = "median",
    metric: str | Callable = "abs_cosine",
    n_top: int = 3,
    null_size: int = 10000,
    threshold: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Match genetic perturbations (CRISPR knockdown/knockout, ORF) to compounds that target the same gene.

    Both sets must be in one feature space (e.g. two Cell Painting experiments);
    features are intersected by name (the count is reported, never silently: an
    empty intersection raises). A consensus profile is taken per gene and per
    compound; each gene profile queries the compound profiles, positives are
    compounds whose ``target_key`` contains the gene, negatives compounds that
    share no target with it. AP/mAP and permutation p-values come from
    :mod:`imgprof.metrics`.

    Parameters
    ----------
    genes, compounds
        Genetic and chemical perturbation profiles.
    gene_key
        Column with the perturbed gene symbol in ``genes.obs``.
    target_key
        Column with compound targets in ``compounds.obs`` (multi-valued with ``sep``).
    compound_key
        Column identifying a compound.
    gene_controls, compound_controls
        Controls to leave out (non-targeting guides, DMSO).
    names
        Normalisation of gene symbols on both sides (see :func:`imgprof.mm.join`).
    consensus
        Consensus method (:func:`imgprof.pp.consensus`).
    metric
        Similarity; ``"abs_cosine"`` (default) because a knockdown can mimic an
        inhibitor (positive) or an activator (negative correlation).
    n_top
        Most similar compounds listed per gene.
    null_size, threshold, seed
        See :func:`imgprof.metrics.mean_average_precision`.
    sep
        Separator of multi-valued compound targets (``"A|B"``); ``None`` = one target per compound.

    Returns
    -------
    DataFrame, one row per gene: ``gene``, ``n_target_compounds``, ``mean_average_precision``,
    ``p_value``, ``corrected_p_value``, ``retrieved``, ``top_compounds`` (most similar),
    ``target_compounds``. Genes no compound targets get NaN mAP.
    ``.attrs["n_shared_features"]`` holds the feature count used.

    Raises
    ------
    ValueError
        No shared feature, or no compound targets any of the genes.

    Examples
    --------
    >>> import imgprof as ip
    >>> crispr, cpds = ip.datasets.cmqtl_crispri(), ip.datasets.lincs_plate()
    >>> try:
    ...     ip.mm.gene_compound_match(crispr, cpds, gene_key="Metadata_target_gene", target_key="Metadata_target",
    ...                               compound_key="Metadata_broad_sample")
    ... except ValueError as e:
    ...     print(str(e)[:45])
    no compound in `compounds` targets any of the
    """
    from ..metrics import RetrievalWarning, average_precision_kernel, mean_average_precision
    from ..pp import consensus as _consensus
    from ._keys import normalize_names, split_multi

    check_obs_keys(genes, gene_key, param="gene_key")
    check_obs_keys(compounds, [target_key, compound_key], param="target_key/compound_key")
    shared = [v for v in genes.var_names if v in set(compounds.var_names)]
    if not shared:
        raise ValueError(
            "gene_compound_match: genes and compounds share no feature name; they must be in one feature space "
            f"(e.g. {list(genes.var_names[:3])} vs {list(compounds.var_names[:3])})."
        )
    gmask = np.ones(genes.n_obs, bool) if gene_controls is None else ~resolve_mask(genes, gene_controls, param="gene_controls")
    cmask = np.ones(compounds.n_obs, bool) if compound_controls is None else ~resolve_mask(
        compounds, compound_controls, param="compound_controls")
    g = genes[gmask, shared].copy()
    c = compounds[cmask, shared].copy()
    g.obs["mm_gene"] = normalize_names(g.obs[gene_key], names).astype(object).to_numpy()
    if g.obs["mm_gene"].isna().any():
        raise ValueError(f"genes.obs[{gene_key!r}] has missing values; pass gene_controls= or drop those rows.")
    tgt_lists = split_multi(c.obs[target_key].astype(object).where(c.obs[target_key].notna(), None), sep)
    norm_lists = [sorted({x for x in normalize_names(pd.Series(t, dtype=object), names).dropna()}) if t else [] for t in tgt_lists]
    c.obs["mm_target"] = ["|".join(t) for t in norm_lists]
    genes_set = set(g.obs["mm_gene"])
    hits = {x for t in norm_lists for x in t} & genes_set
    if not hits:
        raise ValueError(
            f"no compound in `compounds` targets any of the {len(genes_set)} gene(s) in `genes` "
            f"(genes: {sorted(genes_set)[:10]}; {len({x for t in norm_lists for x in t})} distinct compound targets)."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        gc = _consensus(g, by="mm_gene", operation=consensus, count_key=None, keep_metadata=False, single_replicate="ignore")
        c_ok = c[c.obs["mm_target"] != ""].copy()
        cc = _consensus(c_ok, by=[compound_key], operation=consensus, count_key=None, keep_metadata=False,
                        single_replicate="ignore")
    tmap = c_ok.obs.groupby(compound_key, observed=True)["mm_target"].agg(lambda s: "|".join(sorted({x for v in s for x in v.split("|") if x})))
    cc.obs["mm_target"] = tmap.reindex(cc.obs[compound_key]).to_numpy()
    gc.obs["mm_target"] = gc.obs["mm_gene"].astype(str).to_numpy()
    Xg, Xc = _dense(gc.X), _dense(cc.X)
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
    else:  # pragma: no cover - guarded by the hits check above
        m = pd.DataFrame(columns=["mm_target", "mean_average_precision", "p_value", "corrected_p_value", "below_corrected_p"])
    m = m.set_index("mm_target")
    S = _sim_matrix(Xg, Xc, metric)
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
    out = pd.DataFrame(rows)
    out.attrs["n_shared_features"] = len(shared)
    out.attrs["n_compounds"] = int(cc.n_obs)
    return out


def _sim_matrix(A: np.ndarray, B: np.ndarray, metric) -> np.ndarray:
    """Full similarity matrix with the metrics module's own similarity (same metric as the AP)."""
    from ..metrics._similarity import prepare, similarity

    pa, pb = prepare(A, metric, np.float64), prepare(B, metric, np.float64)
    return np.asarray(similarity(pa, pb, np.arange(A.shape[0]), None, metric))
