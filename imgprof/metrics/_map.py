"""Mean average precision per group and its null (private; public as ``ip.metrics.mean_average_precision``).

The null of a group's mAP is one entry of :data:`MAP_NULLS` (``null=`` of
:func:`mean_average_precision`): ``"shared"``, ``"independent"`` and
``"copairs"`` (``copairs_compat=True``). Each takes the observed mAPs, the group
of every member and the members' ``(n_pos, n_total)`` and returns the p-value
columns. Adding a null is one decorated function here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._core.docs import doc_params
from .._core.registry import Registry
from .._core.validation import as_list, check_choice, check_df_keys, check_float, check_int
from ._ap_kernels import normalized_ap
from .null import benjamini_hochberg, group_null_p_values, group_p_values, shared_group_p_values

#: Null of a group's mAP → function ``(observed, group, confs, *, null_size, seed, exact) -> {column: values}``.
MAP_NULLS = Registry("map_null", param="null", case_sensitive=True)

#: Shared parameter text of the retrieval metrics (filled by ``doc_params``).
DOC_MAP = {
    "null_size": "null_size\n    Monte Carlo draws per group null (unused where the p-value is exact).",
    "threshold": "threshold\n    Significance level for ``below_p`` and ``below_corrected_p``.",
    "seed": "seed\n    Seed; the same seed gives the same p-values (``None``: fresh, uncached draws).",
}


@MAP_NULLS.register("copairs")
def _copairs_null(observed: np.ndarray, group: np.ndarray, confs: np.ndarray, *, null_size: int, seed: int | None,
                  exact: bool | None) -> dict[str, Any]:
    """copairs 0.5's p-values (one null row per configuration, strict ``>``, float32): ``copairs_compat=True``.

    Examples
    --------
    Three replicates each ranking both of their 2 positives first among 10 (AP 1): a
    null AP can equal 1 but never exceed it, so the strict ``>`` counts no draw and
    the p-value is the smallest possible, ``1 / (null_size + 1)``:

    >>> import pandas as pd, imgprof as ip
    >>> ap = pd.DataFrame({"g": ["A"] * 3, "average_precision": 1.0, "n_pos_pairs": 2, "n_total_pairs": 10})
    >>> ip.metrics.mean_average_precision(ap, "g", null_size=1000, copairs_compat=True)["p_value"].round(6).tolist()
    [0.000999]
    """
    return {"p_value": group_p_values(observed, group, confs, null_size=null_size, seed=seed, copairs_compat=True)}


@MAP_NULLS.register("shared")
def _shared_null(observed: np.ndarray, group: np.ndarray, confs: np.ndarray, *, null_size: int, seed: int | None,
                 exact: bool | None) -> dict[str, Any]:
    """One null row per configuration reused by every member, ties counted (conservative; the default).

    Examples
    --------
    The members share one null draw, so the group mean is as rare as one member's AP:
    three replicates with AP 1 (2 positives ranked first among 10) get about
    ``1 / 45``, a single AP's chance, with its Monte Carlo standard error.

    >>> confs = np.array([[2, 10], [2, 10], [2, 10]])
    >>> out = _shared_null(np.array([1.0]), np.zeros(3, dtype=int), confs, null_size=1000, seed=0, exact=None)
    >>> out["p_value"].round(3), out["p_value_se"].round(3)
    (array([0.028]), array([0.005]))
    """
    pv = shared_group_p_values(observed, group, confs[:, 0], confs[:, 1], null_size=null_size, seed=seed)
    return {"p_value": pv, "p_value_se": np.sqrt(pv * (1 - pv) / null_size), "p_value_method": "shared_monte_carlo"}


@MAP_NULLS.register("independent")
def _independent_null(observed: np.ndarray, group: np.ndarray, confs: np.ndarray, *, null_size: int, seed: int | None,
                      exact: bool | None) -> dict[str, Any]:
    """Mean of independent member draws: exact where it can be enumerated, else Monte Carlo.

    Examples
    --------
    Three members each with AP 1 (2 positives ranked first among 10, chance
    ``1 / 45``) drawn independently: the mean is 1 only if all three are, an exact
    ``(1 / 45)³``, far below the ``"shared"`` null's ``1 / 45``.

    >>> n_pos, n_total = np.full(3, 2), np.full(3, 10)
    >>> out = _independent_null(np.array([1.0]), np.array([0, 0, 0]), np.c_[n_pos, n_total],
    ...                         null_size=1000, seed=0, exact=None)
    >>> round(float(out["p_value"][0]) * 45 ** 3, 9), out["p_value_method"][0]
    (1.0, 'independent_exact')
    """
    pv = group_null_p_values(observed, group, confs[:, 0], confs[:, 1], null_size=null_size, seed=seed, exact=exact)
    return {
        "p_value": pv["p_value"].to_numpy(),
        "p_value_se": pv["p_value_se"].to_numpy(),
        "p_value_method": ("independent_" + pv["p_value_method"]).to_numpy(),
    }


def finish_table(res: pd.DataFrame, threshold: float) -> None:
    """BH-corrected p-values and the ``below_*`` flags, in place."""
    res["corrected_p_value"] = benjamini_hochberg(res["p_value"].to_numpy())
    res["below_p"] = res["p_value"] < threshold
    res["below_corrected_p"] = res["corrected_p_value"] < threshold


def check_null_args(null_size: Any, threshold: Any, seed: Any) -> tuple[int, float]:
    """Validate the null-distribution arguments up front (before any AP is computed)."""
    null_size = check_int(null_size, "null_size", min_value=1)
    threshold = check_float(threshold, "threshold", min_value=0.0, max_value=1.0, include_min=False, include_max=False)
    check_int(seed, "seed", min_value=0, allow_none=True)
    return int(null_size), float(threshold)


def _scored_ap(ap: Any, sameby: list[str]) -> pd.DataFrame:
    """The AP table's scored rows (finite AP, a positive pair), checked."""
    if not sameby:
        raise ValueError("sameby: give at least one column to group profiles by.")
    if not isinstance(ap, pd.DataFrame):
        raise TypeError(f"ap must be the DataFrame returned by average_precision, got {type(ap).__name__}.")
    check_df_keys(ap, ["average_precision", "n_pos_pairs", "n_total_pairs"], param="ap", where="the AP table")
    check_df_keys(ap, sameby, param="sameby", where="the AP table")
    return ap


@doc_params(**DOC_MAP)
def mean_average_precision(
    ap: pd.DataFrame,
    sameby: str | Sequence[str],
    null_size: int = 10000,
    threshold: float = 0.05,
    seed: int | None = 0,
    *,
    copairs_compat: bool = False,
    exact: bool | None = None,
    null: str = "shared",
) -> pd.DataFrame:
    """Mean AP per group with a permutation p-value and Benjamini–Hochberg correction.

    Each member's AP null is that of a random ranking with its number of
    positive pairs among its ``n_total_pairs``; the p-value is
    ``P(null mAP >= mAP)``: ties count as at least as extreme. Two nulls of the
    group mean (``null=``): ``"shared"`` (default, conservative) reuses one
    null draw per configuration for every member, ``(#{null >= mAP} + 1) / (null_size + 1)``;
    ``"independent"`` is the mean of independent draws, one per member —
    **exact** where it can be enumerated (see
    :func:`imgprof.metrics.group_null_p_values`), else Monte Carlo. The
    Monte Carlo standard error is in ``p_value_se``. For replicate retrieval
    against controls prefer :func:`phenotypic_activity`, whose default
    label-permutation p-value is exact and valid. See ``docs/metrics_pvalues.md``.

    Parameters
    ----------
    ap
        Output of :func:`average_precision` (needs ``average_precision``,
        ``n_pos_pairs``, ``n_total_pairs`` and the ``sameby`` columns).
    sameby
        Column(s) defining the groups (e.g. the perturbation).
    {null_size}
    {threshold}
    {seed}
    copairs_compat
        Reproduce copairs 0.5 exactly: per-configuration seeds drawn in
        configuration order from ``seed``, float32 null APs, and a strict ``>``
        comparison (``#{null > mAP}``) — equal to copairs' output when its disk
        cache is empty. copairs reuses one null row for every member sharing a
        configuration, so its null of a group mean is as wide as a single AP's:
        its p-values are not those of the mean of independent members.
    exact
        ``None`` (default): exact p-values where the null is small enough,
        Monte Carlo elsewhere; ``False``: always Monte Carlo; ``True``: exact or
        ``ValueError``. Ignored with ``copairs_compat``.
    null
        ``"shared"`` (default): one null row per configuration reused by every
        member (copairs' construction, ties counted): conservative.
        ``"independent"``: the members' APs are drawn independently (exact /
        Monte Carlo, see above) — valid only if the members' APs are
        independent. Replicates of one group share their pair similarities,
        so on real profiles their APs are positively dependent and this null
        is anti-conservative (about 10 % of pure-noise groups under 0.05).
        An AP table alone cannot give a valid *and* powerful test;
        :func:`phenotypic_activity` (which has the profiles) uses an exact
        label-permutation test. See ``docs/metrics_pvalues.md``.

    Returns
    -------
    DataFrame, one row per group: ``sameby`` columns, ``n_profiles``,
    ``mean_average_precision``, ``mean_normalized_average_precision``,
    ``p_value``, ``corrected_p_value``, ``below_p``, ``below_corrected_p``,
    and (not with ``copairs_compat``) ``p_value_se`` (Monte Carlo standard
    error, 0 when exact) and ``p_value_method`` (``"exact"`` or ``"monte_carlo"``).
    Profiles with NaN AP or no positive pair are left out (as copairs).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> ap = ip.metrics.average_precision(adata, ["Metadata_broad_sample"], neg_diffby=["Metadata_broad_sample"],
    ...                                   query="Metadata_broad_sample != 'DMSO'")
    >>> m = ip.metrics.mean_average_precision(ap, "Metadata_broad_sample", null_size=1000, seed=0)
    >>> bool(m["p_value"].between(0, 1).all())
    True
    """
    sameby = as_list(sameby)
    ap = _scored_ap(ap, sameby)
    null_size, threshold = check_null_args(null_size, threshold, seed)
    null = check_choice(null, "null", ("independent", "shared"))
    df = ap.loc[ap["average_precision"].notna() & (ap["n_pos_pairs"] > 0)].reset_index(drop=True)
    if df.empty:
        raise ValueError("mean_average_precision: no profile has a finite AP with at least one positive pair.")
    if "normalized_average_precision" not in df:
        df["normalized_average_precision"] = normalized_ap(df["average_precision"], df["n_pos_pairs"], df["n_total_pairs"])
    grouped = df.groupby(sameby, observed=True, sort=True)
    res = grouped.agg(
        mean_average_precision=("average_precision", "mean"),
        mean_normalized_average_precision=("normalized_average_precision", "mean"),
        n_profiles=("average_precision", "size"),
    ).reset_index()
    confs = df[["n_pos_pairs", "n_total_pairs"]].to_numpy(dtype=np.int64)
    compute = MAP_NULLS.get("copairs" if copairs_compat else null, where="mean_average_precision").obj
    pcols = compute(res["mean_average_precision"].to_numpy(), grouped.ngroup().to_numpy(), confs,
                    null_size=null_size, seed=seed, exact=exact)
    for col, values in pcols.items():
        res[col] = values
    finish_table(res, threshold)
    cols = sameby + ["n_profiles", "mean_average_precision", "mean_normalized_average_precision", "p_value",
                     "corrected_p_value", "below_p", "below_corrected_p"]
    return res[cols + [c for c in pcols if c != "p_value"]]
