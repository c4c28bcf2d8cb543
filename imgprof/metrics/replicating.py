"""Percent replicating and percent matching (Way et al. 2022, Cell Systems).

*Percent replicating*: for each perturbation, the median pairwise correlation
(Spearman by default, as Way et al.) among its replicate profiles. Its null is
built from *non-replicates*: for every replicate count ``k`` (and stratum, e.g.
dose), ``n_null`` random sets of ``k`` profiles from ``k`` different
perturbations, each giving a median pairwise correlation. A perturbation's
p-value is ``#{null median >= observed} / n_null`` (their formula) and it is
*replicating* when ``p < alpha`` (above the null's 95th percentile for
``alpha=0.05``). Percent replicating is the share of perturbations that are.

*Percent matching*: the same test one level up. Profiles are aggregated per
perturbation (consensus), and for each annotation label (MOA, target;
multi-label ``"a|b"`` allowed) the median correlation among the perturbations
carrying it is compared with random sets of perturbations that share no label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.docs import doc_params
from .._core.selection import resolve_rows
from .._core.validation import check_adata, check_choice, check_float, check_int, check_obs_keys
from ._pairs import check_complete, split_labels
from ._recipes import DOC_RETRIEVAL, dense_matrix
from ._results import check_table_key, store_table

#: Correlations of the percent replicating / matching tests.
CORRELATION_METHODS = ("spearman", "pearson", "cosine")
METHODS = CORRELATION_METHODS  # former name

#: Shared parameter text of the two tests (filled by ``doc_params``).
DOC_TEST = {
    "method": "method\n    ``\"spearman\"`` (Way et al.), ``\"pearson\"`` or ``\"cosine\"``.",
    "alpha": "alpha\n    A group is above the null (replicating / matching) when ``p < alpha``.",
    "seed": "seed\n    Random seed of the null.",
    "use_rep": DOC_RETRIEVAL["use_rep"],
    "layer": DOC_RETRIEVAL["layer"],
    "multilabel_sep": DOC_RETRIEVAL["multilabel_sep"],
    "key_added": DOC_RETRIEVAL["key_added"],
}
#: The keyword set the two tests share after ``method`` and ``n_null`` (whose text differs), in signature order.
DOC_TEST["test_keywords"] = "\n".join(DOC_TEST[k] for k in ("alpha", "seed", "use_rep", "layer", "key_added"))


@dataclass
class ReplicatingResult:
    """Outcome of :func:`percent_replicating` / :func:`percent_matching`.

    Attributes
    ----------
    table
        One row per group: group keys, ``n_profiles``, ``median_correlation``,
        ``null_threshold`` (the null's ``1 - alpha`` quantile), ``p_value`` and
        ``above_null`` (``p_value < alpha``).
    null
        Null medians per ``(stratum, set size)``.
    percent
        Share of scored groups with ``above_null`` (0–1; multiply by 100 for %).
    kind
        ``"replicating"`` or ``"matching"``.
    method, alpha
        Correlation used and significance level.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> res = ip.metrics.percent_replicating(adata, "Metadata_broad_sample", n_samples=200)  # doctest: +SKIP
    >>> 0 <= res.percent <= 1  # doctest: +SKIP
    True
    """

    table: pd.DataFrame
    null: dict = field(repr=False)
    percent: float
    kind: str
    method: str
    alpha: float

    def __repr__(self) -> str:
        n = int(self.table["median_correlation"].notna().sum())
        return (f"ReplicatingResult(percent_{self.kind}={100 * self.percent:.1f}% of {n} groups, "
                f"method={self.method!r}, alpha={self.alpha})")

    @property
    def null_values(self) -> np.ndarray:
        """All null medians pooled (for plotting)."""
        return np.concatenate([v for v in self.null.values()]) if self.null else np.array([])


def _standardize(X: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled so that a dot product is the requested correlation; returns (Z, invalid)."""
    X = np.asarray(X, dtype=np.float64)
    bad = ~np.isfinite(X).all(axis=1)
    X = np.where(np.isfinite(X), X, 0.0)
    if method == "spearman":
        from scipy.stats import rankdata

        X = rankdata(X, axis=1)
    if method in ("spearman", "pearson"):
        X = X - X.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(X, axis=1)
    bad |= norms == 0
    norms[norms == 0] = 1.0
    return X / norms[:, None], bad


def _median_offdiag(Z: np.ndarray) -> float:
    C = Z @ Z.T
    iu = np.triu_indices(C.shape[0], k=1)
    return float(np.median(C[iu]))


def _sample_sets(rng: np.random.Generator, labels_csr: Any, pool: np.ndarray, k: int, n: int, *, what: str) -> np.ndarray:
    """``n`` random ``k``-subsets of ``pool`` whose members share no label (rejection sampling)."""
    out = np.empty((n, k), dtype=np.int64)
    got = 0
    P = pool.size
    tries = 0
    while got < n:
        need = n - got
        batch = max(64, int(need * 1.5))
        keys = rng.random((batch, P))
        idx = np.argpartition(keys, k - 1, axis=1)[:, :k] if k < P else np.argsort(keys, axis=1)
        sets = pool[idx]
        L = labels_csr[sets.ravel()]
        # pairwise overlaps within each set: count labels appearing twice
        rows = np.repeat(np.arange(batch), k)
        coo = L.tocoo()
        pairs = pd.DataFrame({"s": rows[coo.row], "lab": coo.col})
        dup = pairs.duplicated(["s", "lab"]).groupby(pairs["s"]).any()
        ok = np.ones(batch, dtype=bool)
        ok[dup.index[dup.to_numpy()]] = False
        good = sets[ok][:need]
        out[got : got + len(good)] = good
        got += len(good)
        tries += 1
        if tries > 200 and got < n:
            raise ValueError(
                f"{what}: could not draw {n} sets of {k} profiles with no shared label "
                f"(only {got} after {tries} rounds); the pool of {P} profiles is too homogeneous."
            )
    return out


def _correlation_test(
    Z: np.ndarray,
    groups: list[tuple[tuple, np.ndarray]],
    pools: dict,
    labels_csr: Any,
    strata_of_group: list,
    *,
    n_null: int,
    alpha: float,
    seed: int | None,
    what: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Median correlation of each group, its null (random label-disjoint sets of the same size) and p-value."""
    rng = np.random.default_rng(seed)
    obs_med = np.array([_median_offdiag(Z[idx]) if idx.size >= 2 else np.nan for _, idx in groups])
    sizes = np.array([idx.size for _, idx in groups])
    null: dict = {}
    for st, k in sorted({(strata_of_group[i], int(sizes[i])) for i in range(len(groups)) if sizes[i] >= 2}, key=str):
        pool = pools[st]
        if pool.size < k:
            raise ValueError(f"{what}: stratum {st!r} has only {pool.size} profiles, fewer than a group size {k}.")
        sets = _sample_sets(rng, labels_csr, pool, k, n_null, what=what)
        meds = np.empty(n_null)
        iu = np.triu_indices(k, k=1)
        step = max(1, (1 << 22) // max(k * Z.shape[1], 1))
        for s in range(0, n_null, step):
            Zs = Z[sets[s : s + step]]  # (b, k, d)
            C = np.einsum("bid,bjd->bij", Zs, Zs)
            meds[s : s + step] = np.median(C[:, iu[0], iu[1]], axis=1)
        null[(st, k)] = meds
    pvals = np.full(len(groups), np.nan)
    thr = np.full(len(groups), np.nan)
    for i in range(len(groups)):
        key = (strata_of_group[i], int(sizes[i]))
        if key in null and np.isfinite(obs_med[i]):
            pvals[i] = float(np.mean(null[key] >= obs_med[i]))
            thr[i] = float(np.quantile(null[key], 1 - alpha))
    return obs_med, sizes, pvals, thr, null


def _check_test_args(method: Any, n_null: Any, alpha: Any, seed: Any) -> tuple[int, float]:
    """Validate the correlation and null arguments shared by both tests."""
    check_choice(method, "method", list(CORRELATION_METHODS))
    n_null = check_int(n_null, "n_null", min_value=1)
    alpha = check_float(alpha, "alpha", min_value=0.0, max_value=1.0, include_min=False, include_max=False)
    check_int(seed, "seed", min_value=0, allow_none=True)
    return int(n_null), float(alpha)


def _result(table: pd.DataFrame, test: tuple, alpha: float, *, kind: str, method: str, empty: str) -> ReplicatingResult:
    """Add the test columns to ``table`` and wrap it (``empty``: the error when no group could be scored)."""
    med, sizes, pvals, thr, null = test
    table["n_profiles"] = sizes
    table["median_correlation"] = med
    table["null_threshold"] = thr
    table["p_value"] = pvals
    table["above_null"] = table["p_value"] < alpha
    scored = table["p_value"].notna()
    if not scored.any():
        raise ValueError(empty)
    percent = float(table.loc[scored, "above_null"].mean())
    return ReplicatingResult(table=table, null=null, percent=percent, kind=kind, method=method, alpha=alpha)


def _replicate_groups(obs: pd.DataFrame, keys: list[str], strata: list[str]) -> tuple[list, dict, Any, list[int]]:
    """Groups of replicates (per stratum), the pool of each stratum, the perturbation matrix and each group's stratum."""
    import scipy.sparse as sp

    pert_code = obs.groupby(keys, observed=True, sort=False).ngroup().to_numpy()
    labels = sp.csr_matrix((np.ones(len(obs)), (np.arange(len(obs)), pert_code)), shape=(len(obs), pert_code.max() + 1))
    stratum = obs.groupby(strata, observed=True, sort=True).ngroup().to_numpy() if strata else np.zeros(len(obs), int)
    gb = obs.groupby(keys + strata, observed=True, sort=True)
    groups = [(k if isinstance(k, tuple) else (k,), np.asarray(idx)) for k, idx in gb.indices.items()]
    pools = {s: np.flatnonzero(stratum == s) for s in np.unique(stratum)}
    return groups, pools, labels, [int(stratum[idx[0]]) for _, idx in groups]


@doc_params(**DOC_TEST)
def percent_replicating(
    adata: AnnData,
    replicate_key: str | Sequence[str] = "Metadata_broad_sample",
    *,
    groupby: str | Sequence[str] | None = None,
    controls: Any = None,
    method: str = "spearman", n_null: int = 1000, alpha: float = 0.05, seed: int | None = 0,
    use_rep: str | None = None, layer: str | None = None, key_added: str | None = None,
) -> ReplicatingResult:
    """Percent replicating (Way et al. 2022): replicate correlation vs a null of non-replicates.

    Parameters
    ----------
    adata
        Well-level profiles.
    replicate_key
        Column(s) identifying replicates of one perturbation.
    groupby
        Strata scored separately, each with its own null (e.g. ``"Metadata_dose"``;
        Way et al. score each dose).
    controls
        Profiles left out entirely (query string, mask or names), e.g. DMSO.
    {method}
    n_null
        Random non-replicate sets per (stratum, replicate count).
    {test_keywords}

    Returns
    -------
    :class:`ReplicatingResult` (``.percent``, ``.table``, ``.null``).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> dmso = "Metadata_broad_sample == 'DMSO'"
    >>> res = ip.metrics.percent_replicating(adata, "Metadata_broad_sample", controls=dmso, n_null=200)
    >>> 0 <= res.percent <= 1
    True
    """
    n_null, alpha = _check_test_args(method, n_null, alpha, seed)
    check_adata(adata, min_obs=1)
    check_table_key(adata, key_added)
    keys = check_obs_keys(adata, replicate_key, param="replicate_key")
    strata = check_obs_keys(adata, groupby, param="groupby")
    keep = np.ones(adata.n_obs, dtype=bool)
    if controls is not None:
        keep &= ~resolve_rows(adata, controls, param="controls")
    obs = adata.obs.loc[keep, keys + strata]
    check_complete(obs, keys + strata, where="percent_replicating", hint="; fill or drop them first.")
    Z, bad = _standardize(dense_matrix(adata, layer, use_rep)[keep], method)
    if bad.any():
        raise ValueError(
            f"percent_replicating: {int(bad.sum())} profile(s) have NaN/inf features or constant values "
            f"(e.g. {list(obs.index[bad][:3])}); impute or drop them first."
        )
    groups, pools, labels, st_of = _replicate_groups(obs, keys, strata)
    test = _correlation_test(Z, groups, pools, labels, st_of, n_null=n_null, alpha=alpha, seed=seed, what="percent_replicating")
    res = _result(pd.DataFrame([k for k, _ in groups], columns=keys + strata), test, alpha, kind="replicating",
                  method=method, empty="percent_replicating: no perturbation has two or more replicates.")
    store_table(adata, res.table, key_added, function="metrics.percent_replicating",
                params={"replicate_key": keys, "groupby": strata, "controls": controls, "method": method, "n_null": n_null,
                        "alpha": alpha, "seed": seed, "use_rep": use_rep, "layer": layer})
    return res


def _joined_labels(s: pd.Series, sep: str | None) -> str:
    return "|".join(sorted({x for v in s for x in split_labels(v, sep)}))


def _matching_profiles(X: np.ndarray, obs: pd.DataFrame, annotation_key: str, perturbation_key: str,
                       aggregate: str | None, multilabel_sep: str | None) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Consensus profiles per perturbation (or the profiles as they are) and each one's label set."""
    codes, uniq = pd.factorize(obs[perturbation_key], sort=True)
    if aggregate is not None:
        agg = np.nanmedian if aggregate == "median" else np.nanmean
        X = np.vstack([agg(X[codes == k], axis=0) for k in range(len(uniq))])
        ann = obs.groupby(perturbation_key, sort=True)[annotation_key].agg(_joined_labels, multilabel_sep)
        ann = ann.loc[uniq].to_numpy()
    else:
        if obs[perturbation_key].duplicated().any():
            raise ValueError(
                f"percent_matching: aggregate=None needs one profile per {perturbation_key!r}, but some repeat; "
                "use aggregate='median' (replicates would otherwise count as matches)."
            )
        ann = obs[annotation_key].to_numpy()
    return X, [split_labels(v, multilabel_sep if aggregate is None else "|") for v in ann]


def _label_groups(sets: list[tuple[str, ...]]) -> tuple[list[str], list, Any]:
    """The labels, the profiles carrying each label and the profile × label matrix."""
    import scipy.sparse as sp

    vocab = sorted({lab for s in sets for lab in s})
    li = {lab: i for i, lab in enumerate(vocab)}
    r = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
    c = np.array([li[lab] for s in sets for lab in s], dtype=np.int64)
    labels = sp.csr_matrix((np.ones(r.size), (r, c)), shape=(len(sets), len(vocab)))
    members = labels.tocsc()
    groups = [((lab,), np.sort(members.indices[members.indptr[j] : members.indptr[j + 1]])) for j, lab in enumerate(vocab)]
    return vocab, groups, labels


@doc_params(**DOC_TEST)
def percent_matching(
    adata: AnnData,
    annotation_key: str = "Metadata_moa", perturbation_key: str = "Metadata_broad_sample",
    *,
    controls: Any = None, aggregate: str | None = "median", multilabel_sep: str | None = "|",
    method: str = "spearman", n_null: int = 1000, alpha: float = 0.05, seed: int | None = 0,
    use_rep: str | None = None, layer: str | None = None, key_added: str | None = None,
) -> ReplicatingResult:
    """Percent matching: do perturbations sharing an annotation correlate more than unrelated ones?

    Consensus profiles per perturbation (``aggregate``); for each label the
    median pairwise correlation among its perturbations is compared with
    random sets of the same size of perturbations sharing no label.

    Parameters
    ----------
    adata
        Profiles.
    annotation_key
        MOA / target column; ``"a|b"`` values are split on ``multilabel_sep``.
    perturbation_key
        Perturbation column (one consensus profile per value).
    controls
        Profiles to leave out. Profiles without annotation are left out too.
    aggregate
        ``"median"``, ``"mean"`` or ``None`` (profiles already one per perturbation).
    {multilabel_sep}
    {method}
    n_null
        Random sets of perturbations sharing no label, per set size.
    {test_keywords}

    Returns
    -------
    :class:`ReplicatingResult` with one table row per label.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> res = ip.metrics.percent_matching(adata, "Metadata_moa", controls="Metadata_broad_sample == 'DMSO'", n_null=200)
    >>> res.kind
    'matching'
    """
    n_null, alpha = _check_test_args(method, n_null, alpha, seed)
    check_adata(adata, min_obs=1)
    check_table_key(adata, key_added)
    if aggregate not in (None, "median", "mean"):
        raise ValueError(f"aggregate must be 'median', 'mean' or None, got {aggregate!r}.")
    check_obs_keys(adata, [annotation_key, perturbation_key], param="annotation_key/perturbation_key")
    keep = np.ones(adata.n_obs, dtype=bool)
    if controls is not None:
        keep &= ~resolve_rows(adata, controls, param="controls")
    keep &= adata.obs[annotation_key].notna().to_numpy()
    if not keep.any():
        raise ValueError("percent_matching: no annotated profile left.")
    obs = adata.obs.loc[keep, [perturbation_key, annotation_key]].astype(object)
    X, sets = _matching_profiles(dense_matrix(adata, layer, use_rep)[keep], obs, annotation_key, perturbation_key,
                                 aggregate, multilabel_sep)
    Z, bad = _standardize(X, method)
    if bad.any():
        raise ValueError(f"percent_matching: {int(bad.sum())} consensus profile(s) have NaN/inf or constant values.")
    vocab, groups, labels = _label_groups(sets)
    test = _correlation_test(Z, groups, {0: np.arange(len(sets))}, labels, [0] * len(groups), n_null=n_null, alpha=alpha,
                             seed=seed, what="percent_matching")
    res = _result(pd.DataFrame({annotation_key: vocab}), test, alpha, kind="matching", method=method,
                  empty="percent_matching: no label is carried by two or more perturbations.")
    store_table(adata, res.table, key_added, function="metrics.percent_matching",
                params={"annotation_key": annotation_key, "perturbation_key": perturbation_key, "controls": controls,
                        "aggregate": aggregate, "method": method, "n_null": n_null, "alpha": alpha, "seed": seed,
                        "use_rep": use_rep, "layer": layer})
    return res
