"""CCA/PLS alignment of two paired modalities and the folds of held-out cross-modal retrieval.

Private module of :mod:`imgprof.mm.crossmodal`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from .._core.validation import check_int

#: Alignment methods of :func:`imgprof.mm.align` and :func:`imgprof.mm.cross_retrieval`.
ALIGN_METHODS = ("cca", "pls")


def check_align_args(n_components: Any, n_pcs: Any) -> None:
    """Check the latent and PCA dimensions."""
    check_int(n_components, "n_components", min_value=1)
    check_int(n_pcs, "n_pcs", min_value=1, allow_none=True)


class Aligner:
    """Standardise → PCA → CCA/PLS, fitted on training pairs only."""

    def __init__(self, method: str, n_components: int, n_pcs: int | None, scale: bool, seed: int):
        if method not in ALIGN_METHODS:
            raise ValueError(f"method={method!r}: expected one of {ALIGN_METHODS}.")
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


def score_correlations(U: np.ndarray, V: np.ndarray) -> list[float]:
    out = []
    for j in range(U.shape[1]):
        u, v = U[:, j], V[:, j]
        out.append(float(np.corrcoef(u, v)[0, 1]) if u.std() > 0 and v.std() > 0 else float("nan"))
    return out



def identical_groups(M: np.ndarray) -> np.ndarray:
    """Group id per row; rows with identical profiles (e.g. two keys built from the same wells) share one."""
    _, inv = np.unique(np.ascontiguousarray(M), axis=0, return_inverse=True)
    return inv.ravel().astype(int)


def components(ga: np.ndarray, gb: np.ndarray) -> np.ndarray:
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


def pair_groups(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Identical-profile groups of each side, the pair components kept in one fold, and their count (≥ 3)."""
    gx, gy = identical_groups(X), identical_groups(Y)
    comp = components(gx, gy)
    n_comp = int(comp.max()) + 1
    if n_comp < 3:
        raise ValueError(
            f"cross_retrieval: only {n_comp} distinct pair(s) once identical profiles are merged; need at least 3."
        )
    return gx, gy, comp, n_comp


def _distinct_queries(te: np.ndarray, gq: np.ndarray, gc: np.ndarray) -> np.ndarray:
    """One query per distinct (query profile, partner profile) among the held-out pairs ``te``."""
    seen, te_q = set(), []
    for i in te:
        if (gq[i], gc[i]) not in seen:
            seen.add((gq[i], gc[i]))
            te_q.append(i)
    return np.asarray(te_q, dtype=int)


def cv_per_query(X: np.ndarray, Y: np.ndarray, names: list[str], mods: tuple[str, str], groups: tuple, n_folds: int, *,
                 method: str, n_components: int, n_pcs: int | None, scale: bool, metric: str | Callable,
                 seed: int) -> tuple[pd.DataFrame, int]:
    """AP of every held-out query in both directions (aligner fitted on the training folds); convergence warnings."""
    from sklearn.model_selection import GroupKFold

    from ..metrics import average_precision_kernel

    a, b = mods
    gx, gy, comp = groups
    folds = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.arange(len(names)), groups=comp)
    keys = np.asarray(names, dtype=object)
    rows = []
    n_warn = 0
    for f, (tr, te) in enumerate(folds):
        al = Aligner(method, n_components, n_pcs, scale, seed).fit(X[tr], Y[tr])
        n_warn += al.n_warnings
        U, V = al.transform(X, Y)
        for direction, Q, C, gq, gc in ((f"{a}->{b}", U, V, gx, gy), (f"{b}->{a}", V, U, gy, gx)):
            # one query per distinct (query profile, partner profile); the partner's identical copies are positives
            te_q = _distinct_queries(te, gq, gc)
            obs_q = pd.DataFrame({"pair": gc[te_q].astype(str), "key": keys[te_q]},
                                 index=[f"{direction}:{x}" for x in keys[te_q]])
            obs_c = pd.DataFrame({"pair": gc.astype(str)}, index=[f"c:{x}" for x in keys])
            ap = average_precision_kernel(
                Q[te_q], obs_q, ["pair"], [], [], ["pair"], metric=metric, reference_X=C, reference_obs=obs_c, warn=False,
            )
            ap["direction"] = direction
            ap["fold"] = f
            rows.append(ap)
    return pd.concat(rows), n_warn


def direction_summary(per_query: pd.DataFrame, order: list[str], null_size: int, threshold: float, seed: int) -> pd.DataFrame:
    """mAP per direction with the p-value of the mean against independent random rankings of every query."""
    from ..metrics import benjamini_hochberg, expected_ap, random_ap

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
    return summary
