"""Cross-modal analysis: alignment (CCA/PLS), cross-modal retrieval, per-modality retrieval,
complementarity, and gene–compound matching.

All retrieval numbers are average precision / mAP from :mod:`imgprof.metrics`
(copairs-compatible, permutation p-values); this module only decides which
profiles are queries, positives and negatives. The computations live in private
modules (``_modalities``, ``_align``, ``_retrieval``, ``_genes``); the functions
here check their inputs and coordinate.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._core.docs import doc_params
from .._core.provenance import log_step
from .._core.store import store
from .._core.validation import check_df_keys, check_float, check_int, check_obs_keys
from ._align import ALIGN_METHODS, Aligner, check_align_args, cv_per_query, direction_summary, pair_groups, score_correlations
from ._genes import consensus_profiles, gene_map, gene_rows, keyed_rows, shared_features, sim_matrix
from ._modalities import as_mods, dense_float, paired, per_mod, two_mods
from ._retrieval import RESULT_COLS, activity_rows, consistency_rows, controls_and_labels, replicating_rows

__all__ = [
    "ALIGN_METHODS",
    "align",
    "compare_retrieval",
    "complementarity",
    "cross_retrieval",
    "gene_compound_match",
]


@doc_params("example_mm_target_join", "example_mm_moa")
def align(
    mdata: Any,
    *,
    key_added: str | None = None,
    mods: Sequence[str] | None = None, method: str = "cca", n_components: int = 2, n_pcs: int | None = None,
    scale: bool = True, use_rep: str | None = None, seed: int = 0,
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
    {example_mm_target_join}
    >>> ip.mm.align(mdata, n_components=2)
    >>> mdata["morph"].obsm["X_cca"].shape
    (15, 2)
    """

    check_align_args(n_components, n_pcs)
    a, b = two_mods(mdata, mods)
    X, Y, names = paired(mdata, (a, b), use_rep)
    al = Aligner(method, n_components, n_pcs, scale, seed).fit(X, Y)
    if al.k < n_components:
        warnings.warn(
            f"align: n_components={n_components} is more than {len(names)} pairs allow; using n_components={al.k}.",
            UserWarning,
            stacklevel=2,
        )
    U, V = al.transform(X, Y)
    key = key_added or f"X_{method}"
    store(mdata[a], U, slot="obsm", key_added=key, function=None)
    store(mdata[b], pd.DataFrame(V, index=names).reindex(mdata[b].obs_names).to_numpy(), slot="obsm", key_added=key,
          function=None)
    info = {
        "method": method, "mods": [a, b], "n_components": int(al.k),
        "n_pcs": [int(al.px[2].n_components_), int(al.py[2].n_components_)],
        "correlations": score_correlations(U, V), "in_sample": True, "n_pairs": len(names),
        "convergence_warnings": int(al.n_warnings),
    }
    store(mdata, info, slot="uns", key_added=key, function=None)
    for m in (a, b):
        log_step(mdata[m], "mm.align", {"method": method, "n_components": int(al.k), "n_components_requested": n_components,
                                        "n_pcs": n_pcs, "scale": scale, "use_rep": use_rep, "key_added": key})
    log_step(mdata, "mm.align", {"method": method, "n_components": int(al.k), "n_components_requested": n_components,
                                 "n_pcs": n_pcs, "mods": [a, b]},
             correlations=info["correlations"])


@doc_params("example_mm_target_join", "example_mm_moa")
def cross_retrieval(
    mdata: Any,
    *,
    n_splits: int = 5,
    return_per_query: bool = False,
    mods: Sequence[str] | None = None, method: str = "cca", n_components: int = 2, n_pcs: int | None = None,
    scale: bool = True, use_rep: str | None = None,
    metric: str | Callable = "cosine", null_size: int = 10000, threshold: float = 0.05, seed: int = 0,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
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
    ``p_value``, ``corrected_p_value`` (BH over the two directions), ``below_corrected_p``,
    ``top1`` (fraction of queries whose partner
    ranks first), ``n_pairs``, ``n_distinct_pairs``, ``n_folds``.

    Examples
    --------
    {example_mm_target_join}
    >>> res = ip.mm.cross_retrieval(mdata, n_splits=5, null_size=1000)
    >>> res["direction"].tolist()
    ['morph->expr', 'expr->morph']
    """

    check_align_args(n_components, n_pcs)
    check_int(n_splits, "n_splits", min_value=2)
    check_int(null_size, "null_size", min_value=1)
    check_float(threshold, "threshold", min_value=0.0, max_value=1.0, include_min=False, include_max=False)
    a, b = two_mods(mdata, mods)
    X, Y, names = paired(mdata, (a, b), use_rep)
    n = len(names)
    if n < 3:
        raise ValueError(f"cross_retrieval: need at least 3 pairs, got {n}.")
    if int(n_splits) < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}.")
    gx, gy, comp, n_comp = pair_groups(X, Y)
    k = int(min(n_splits, n_comp))
    per_query, n_warn = cv_per_query(X, Y, names, (a, b), (gx, gy, comp), k, method=method, n_components=n_components,
                                     n_pcs=n_pcs, scale=scale, metric=metric, seed=seed)
    summary = direction_summary(per_query, [f"{a}->{b}", f"{b}->{a}"], null_size, threshold, seed)
    summary["n_pairs"] = n
    summary["n_distinct_pairs"] = n_comp
    summary["n_folds"] = k
    summary["method"] = method
    summary["convergence_warnings"] = n_warn
    per_query = per_query.rename(columns={"key": "pair_key"})[
        ["direction", "pair_key", "fold", "n_pos_pairs", "n_total_pairs", "average_precision"]
    ].reset_index(drop=True)
    return (summary, per_query) if return_per_query else summary


@doc_params("example_mm_target_join", "example_mm_moa")
def compare_retrieval(
    data: Any,
    *,
    perturbation: str | Mapping[str, str] | Sequence[str],
    controls: Any,
    annotation: str | Mapping[str, str] | Sequence[str] | None = None,
    mods: Sequence[str] | None = None,
    multilabel_sep: str | None = "|",
    consistency_on: str = "all",
    replicating: bool = True,
    n_null: int = 1000,
    metric: str | Callable = "cosine", null_size: int = 10000, threshold: float = 0.05, seed: int = 0,
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
    {example_mm_moa}
    >>> md = ip.mm.join(morph, expr, on={"moa": ("Metadata_moa", "moa")}, sep="|", level="well", paired=False,
    ...                 controls=("Metadata_pert_type == 'control'", "pert_type == 'ctl_vehicle'"))
    >>> res = ip.mm.compare_retrieval(md, perturbation={"morph": "Metadata_pert_id", "expr": "pert_id"},
    ...                               controls="mm_control", annotation="mm_moa", null_size=1000)
    >>> sorted(res["task"].unique())
    ['activity', 'consistency', 'replicating']
    """

    if consistency_on not in ("all", "active"):
        raise ValueError(f"consistency_on={consistency_on!r}: expected 'all' or 'active'.")
    ms = as_mods(data, mods)
    names = list(ms)
    pert = per_mod(perturbation, names, "perturbation")
    ctrl = per_mod(controls, names, "controls")
    ann = per_mod(annotation, names, "annotation") if annotation is not None else None
    stats: dict[str, Any] = {"metric": metric, "null_size": null_size, "threshold": threshold, "seed": seed}
    out = []
    for m, x0 in ms.items():
        x, cmask = controls_and_labels(x0, m, pert[m], ctrl[m])
        rows, act = activity_rows(x, m, pert[m], cmask, **stats)
        out.append(rows)
        if ann is not None:
            active = act if consistency_on == "active" else None
            cons = consistency_rows(x, m, ann[m], pert[m], cmask, active, multilabel_sep=multilabel_sep, **stats)
            if cons is not None:
                out.append(cons)
        if replicating:
            out.append(replicating_rows(x, m, pert[m], cmask, n_null=n_null, threshold=threshold, seed=seed))
    res = pd.concat(out, ignore_index=True).reindex(columns=RESULT_COLS)
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


def gene_compound_match(
    genes: ad.AnnData,
    compounds: ad.AnnData,
    *,
    gene_key: str,
    target_key: str,
    compound_key: str,
    gene_controls: Any = None,
    compound_controls: Any = None,
    sep: str | None = "|",
    names: str = "casefold",
    consensus: str = "median",
    n_top: int = 3,
    metric: str | Callable = "abs_cosine", null_size: int = 10000, threshold: float = 0.05, seed: int = 0,
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

    check_obs_keys(genes, gene_key, param="gene_key")
    check_obs_keys(compounds, [target_key, compound_key], param="target_key/compound_key")
    shared = shared_features(genes, compounds)
    g, c = keyed_rows(genes, compounds, shared, gene_key=gene_key, target_key=target_key, gene_controls=gene_controls,
                      compound_controls=compound_controls, sep=sep, names=names)
    gc, cc = consensus_profiles(g, c, compound_key, consensus)
    Xg, Xc = dense_float(gc.X), dense_float(cc.X)
    m = gene_map(Xg, Xc, gc, cc, metric=metric, null_size=null_size, threshold=threshold, seed=seed)
    out = gene_rows(sim_matrix(Xg, Xc, metric), gc, cc, m, compound_key, n_top)
    out.attrs["n_shared_features"] = len(shared)
    out.attrs["n_compounds"] = int(cc.n_obs)
    return out
