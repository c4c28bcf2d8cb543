"""Guardrails of the Benchmarker: findings that make a comparison unfair or a metric unable to rank.

Each finding is a :class:`Flag`; the Benchmarker lists them in
:attr:`~imgprof.bench.Benchmarker.flags` and raises each as a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .._core.guardrails import BaselineWarning, CircularTuningWarning, DegenerateMetricWarning
from ._registry import BENCH_METRICS, metric_names


class Flag(NamedTuple):
    """One guardrail finding."""

    kind: str
    embedding: str
    metric: str
    message: str
    category: type[Warning]


def _made(adata: Any) -> dict[str, dict[str, Any]]:
    """``key_added`` → the provenance step that wrote it."""
    from .._core.provenance import provenance

    try:
        prov = provenance(adata)
    except Exception:
        return {}
    made: dict[str, dict[str, Any]] = {}
    for _, row in prov.iterrows():
        key = row["extra"].get("key_added") if isinstance(row["extra"], dict) else None
        if key is not None:
            made[key] = {"function": row["function"], "params": row["params"], "extra": row["extra"], "shape": row["shape"]}
    return made


def _circular(key: str, info: dict[str, Any], label_key: str, negcon: np.ndarray | None, n_obs: int) -> list[Flag]:
    out = []
    tuned = info["extra"].get("tuned_on_label")
    if tuned is not None and tuned == label_key:
        msg = (
            f"{key}: {info['function']} chose a hyperparameter by replicate retrieval on label_key={tuned!r}, "
            f"the label it is now evaluated with; its bio-conservation scores are optimistic (circular). "
            "Tune on a held-out label or label-free (e.g. ip.tl.sphering(..., criterion='control_likelihood'))."
        )
        out.append(Flag("circular", key, "all bio metrics", msg, CircularTuningWarning))
    rows = info["extra"].get("fitted_on_rows")
    if rows is not None and negcon is not None:
        same_shape = tuple(info["shape"])[:1] == (n_obs,)
        if same_shape and bool(negcon[np.asarray(rows, dtype=np.int64)].any()):
            msg = (
                f"{key}: {info['function']} was fitted on {info['extra'].get('fitted_on')!r}, rows that are "
                "also the negative controls of mAP negcon; those controls are whitened to a centred, unit-covariance "
                "cloud by construction, so its mAP against them is inflated and not comparable with the other "
                "embeddings."
            )
            out.append(Flag("circular", key, metric_names()["map_negcon"], msg, CircularTuningWarning))
    return out


def _baseline(key: str, info: dict[str, Any], keys: Sequence[str], base_space: set[str]) -> list[Flag]:
    if info["function"] in ("tl.no_correction", "tl.pca") or not info["function"].startswith("tl."):
        return []
    space = info["params"].get("use_rep") or "X"
    if space in keys or space in base_space:
        return []
    what = "PCA of the same features" if space.startswith("X_pca") else f"{space!r} itself"
    msg = (
        f"{key}: {info['function']} starts from {space!r} but no uncorrected embedding of that space "
        f"({what}) is benchmarked; add {('X_none' if space == 'X' else space)!r} to embedding_obsm_keys "
        "so the correction is compared like for like."
    )
    return [Flag("baseline", key, "all", msg, BaselineWarning)]


def audit_provenance(
    adata: Any, keys: Sequence[str], label_key: str, negcon: np.ndarray | None, *, wants_negcon: bool,
) -> list[Flag]:
    """Read the provenance of each embedding: circular tuning and missing same-space baselines.

    Parameters
    ----------
    adata
        The benchmarked AnnData.
    keys
        The embeddings.
    label_key
        The label the bio metrics use.
    negcon
        Negative-control mask, or ``None``.
    wants_negcon
        Whether mAP negcon runs (fits on the negative controls are then circular).

    Returns
    -------
    list of Flag
        The findings, in embedding order.

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof.bench._guards import audit_provenance
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> audit_provenance(adata, ["X"], "Metadata_target_gene", None, wants_negcon=False)
    []
    """
    made = _made(adata)
    baselines = {"X"} | {k for k in keys if made.get(k, {}).get("function") == "tl.no_correction"}
    base_space = {"X" if k == "X" else made[k]["params"].get("use_rep") or "X" for k in baselines if k == "X" or k in made}
    out: list[Flag] = []
    for key in keys:
        info = made.get(key)
        if info is None:
            continue
        out += _circular(key, info, label_key, negcon if wants_negcon else None, adata.n_obs)
        out += _baseline(key, info, keys, base_space)
    return out


def _why(name: str, v: float) -> str:
    meta = BENCH_METRICS.get(name).meta if name in BENCH_METRICS else {}
    if v <= 1e-9:
        return meta.get("floor_why") or "the metric is at its floor (0) for every embedding"
    if v >= 1 - 1e-9:
        return meta.get("ceiling_why") or "the metric is at its ceiling (1) for every embedding"
    return "the embeddings do not differ on this metric"


def degenerate_metrics(
    raw: Mapping[tuple[str, str], float], keys: Sequence[str], guard_args: dict[str, Any],
) -> list[Flag]:
    """Metrics equal for every embedding (they cannot rank them), and metric-specific guards (PCR comparison).

    Parameters
    ----------
    raw
        ``(result column, embedding) → value``.
    keys
        The embeddings.
    guard_args
        Keyword arguments of the registered ``guard`` callables (``X_pre``, ``batch``, ``pre_key``).

    Returns
    -------
    list of Flag
        One finding per degenerate metric.

    Examples
    --------
    >>> from imgprof.bench._guards import degenerate_metrics
    >>> raw = {("graph_connectivity", "a"): 1.0, ("graph_connectivity", "b"): 1.0}
    >>> degenerate_metrics(raw, ["a", "b"], {})[0].metric
    'Graph connectivity'
    """
    if len(keys) < 2:
        return []
    names = metric_names()
    out: list[Flag] = []
    metrics = list(dict.fromkeys(m for m, _ in raw))
    for m in list(metrics):
        guard = BENCH_METRICS.get(m).meta.get("guard") if m in BENCH_METRICS else None
        if guard is not None and guard_args.get("X_pre") is not None:
            msg = guard(guard_args["X_pre"], guard_args["batch"], guard_args.get("pre_key"))
            if msg is not None:
                out.append(Flag("degenerate", "(all)", names.get(m, m), msg, DegenerateMetricWarning))
                metrics.remove(m)
    for m in metrics:
        vals = np.array([raw.get((m, e), np.nan) for e in keys], dtype=float)
        fin = vals[np.isfinite(vals)]
        if fin.size < 2 or np.ptp(fin) > 1e-9:
            continue
        v, name = float(fin[0]), names.get(m, m)
        msg = (f"{name} = {v:.3f} for every embedding: {_why(m, v)}. It cannot rank the methods (min-max scaling "
               "turns it into 0 for all), yet it still enters the aggregate scores.")
        out.append(Flag("degenerate", "(all)", name, msg, DegenerateMetricWarning))
    return out
