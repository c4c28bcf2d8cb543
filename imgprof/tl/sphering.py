"""Sphering (whitening) fitted on negative controls, with the regularisation chosen from a grid.

The whitening kernel is the one behind ``ip.pp.normalize(method="spherize")``
(``imgprof._core.whitening``: ``spherize_moments`` / ``fit_whitener``), which
reproduces :class:`pycytominer.operations.Spherize` (values identical, tested
here too). This module adds the choice of the regularisation from a grid, as
in the JUMP / Arevalo et al. (2024) pipelines (the value with the best
replicate retrieval, mean of replicate mAP against negative controls and
against non-replicates), or label-free by the held-out likelihood of the
negative controls (:func:`control_likelihood`, the default without a label).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.docs import doc_params
from .._core.inputs import check_batches
from .._core.validation import check_obs_keys, finish, resolve_mask, start
from .._core.whitening import CORRELATION_VARIANTS, SPHERIZE_VARIANTS, fit_whitener, spherize_moments
from .integrate import INTEGRATION_DOC, get_rep
from .integrate import store_correction as store

#: Regularisation values tried by default (added to the singular values, as in pycytominer).
DEFAULT_EPSILON_GRID: tuple[float, ...] = tuple(float(10.0**e) for e in range(-5, 4))


def _check_variant(method: str) -> None:
    if method not in SPHERIZE_VARIANTS:
        raise ValueError(f"sphering: method must be one of {list(SPHERIZE_VARIANTS)}, got {method!r}.")


@dataclass
class SpherizeFit:
    """Centre/scale of the controls; ``transform(X, epsilon)`` whitens any rows with that regularisation."""

    method: str
    mean: np.ndarray
    scale: np.ndarray
    Zc: np.ndarray  # centred/scaled controls

    def transform(self, X: np.ndarray, epsilon: float) -> np.ndarray:
        whitener, _ = fit_whitener(self.Zc, self.method, float(epsilon))
        return whitener.apply((X - self.mean) / self.scale)


def spherize_fit(Xc: np.ndarray, method: str = "ZCA-cor", *, names: Sequence[str] | None = None) -> SpherizeFit:
    """Prepare the sphering of rows against control rows ``Xc`` (reuses ``ip.pp.normalize``'s kernel).

    Raises, as pycytominer does, for a constant control column (``-cor``
    methods) and for linearly dependent columns (rank below ``d`` with more
    controls than features).

    Parameters
    ----------
    Xc
        Control rows (``n x d``).
    method
        Sphering variant, one of :data:`imgprof._core.whitening.SPHERIZE_VARIANTS`.
    names
        Column names, for messages.

    Returns
    -------
    SpherizeFit
        The fit; ``.transform(X, epsilon)`` whitens any rows.

    Examples
    --------
    >>> import numpy as np
    >>> from imgprof.tl.sphering import spherize_fit
    >>> Xc = np.random.default_rng(0).normal(size=(50, 4))
    >>> Y = spherize_fit(Xc, "ZCA").transform(Xc, 0.0)
    >>> bool(np.allclose(np.cov(Y, rowvar=False), np.eye(4)))
    True
    """
    _check_variant(method)
    Xc = np.asarray(Xc, dtype=np.float64)
    n, d = Xc.shape
    if n < 2:
        raise ValueError(f"sphering: need at least 2 control rows to fit, got {n}.")
    mean, scale, const = spherize_moments(Xc, method, True)
    if method in CORRELATION_VARIANTS and const.any():
        bad = np.flatnonzero(const)
        cols = [str(names[i]) for i in bad[:5]] if names is not None else bad[:5].tolist()
        raise ValueError(
            f"sphering: {bad.size} column(s) are constant across the controls, e.g. {cols}; "
            "remove low-variance features first (ip.pp.feature_select)."
        )
    Zc = (Xc - mean) / scale
    if n > d:
        _, r = fit_whitener(Zc, "PCA", 0.0)  # rank from the SVD
        if r < d:
            raise ValueError(
                f"sphering: the control matrix is not full rank (n={n} controls, d={d} features, rank {r}); "
                "some features are linear combinations of others. Drop correlated features first "
                "(ip.pp.feature_select(..., operation=['correlation_threshold']))."
            )
    else:
        fit_whitener(Zc, method, 0.0)  # raises for rank other than n - 1 or n
    return SpherizeFit(method=method, mean=mean, scale=scale, Zc=Zc)


def _average_precision(sims: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(-sims, kind="stable")
    hits = positive[order]
    if not hits.any():
        return np.nan
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def replicate_map(
    Y: np.ndarray,
    labels: np.ndarray,
    is_control: np.ndarray,
    *,
    max_queries: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Replicate retrieval score used to pick the sphering regularisation.

    For every non-control row whose label has another non-control replicate,
    rank rows by cosine similarity and compute the average precision of its
    replicates among (a) the negative controls (``map_negcon``) and (b) the
    non-replicate treatments (``map_nonrep``); average per label, then over
    labels (copairs' mAP convention). ``score`` is their mean, the criterion
    of Arevalo et al. (2024).

    Parameters
    ----------
    Y
        Profiles (``n x d``).
    labels
        Replicate label of every row.
    is_control
        Boolean mask of the negative-control rows.
    max_queries
        At most this many query rows (a random subset beyond it).
    seed
        Seed of that subset.

    Returns
    -------
    dict
        ``map_negcon``, ``map_nonrep`` and their mean ``score``.

    Examples
    --------
    >>> import numpy as np
    >>> from imgprof.tl.sphering import replicate_map
    >>> Y = np.repeat(np.eye(3), 2, axis=0) + 0.01 * np.arange(6)[:, None]
    >>> replicate_map(Y, np.array(list("aabbcc")), np.array([False] * 4 + [True] * 2))["map_nonrep"]
    1.0
    """
    Yn = Y / np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels).astype(str)
    trt = ~is_control
    vc = pd.Series(labels[trt]).value_counts()
    ok_labels = set(vc.index[vc >= 2])
    queries = np.flatnonzero(trt & np.isin(labels, list(ok_labels)))
    if queries.size == 0:
        raise ValueError("sphering: no treatment label has 2 or more replicates; cannot score the epsilon grid.")
    if queries.size > max_queries:
        queries = np.sort(np.random.default_rng(seed).choice(queries, max_queries, replace=False))
    ctrl = np.flatnonzero(is_control)
    rows: dict[str, list[tuple[str, float]]] = {"negcon": [], "nonrep": []}
    for q in queries:
        same = (labels == labels[q]) & trt
        same[q] = False
        pos = np.flatnonzero(same)
        sims_pos = Yn[pos] @ Yn[q]
        if ctrl.size:
            neg = ctrl
            s = np.concatenate([sims_pos, Yn[neg] @ Yn[q]])
            p = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
            rows["negcon"].append((labels[q], _average_precision(s, p)))
        neg = np.flatnonzero(trt & (labels != labels[q]))
        if neg.size:
            s = np.concatenate([sims_pos, Yn[neg] @ Yn[q]])
            p = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
            rows["nonrep"].append((labels[q], _average_precision(s, p)))
    out = {}
    for k, v in rows.items():
        if v:
            df = pd.DataFrame(v, columns=["label", "ap"])
            out[f"map_{k}"] = float(df.groupby("label")["ap"].mean().mean())
        else:
            out[f"map_{k}"] = np.nan
    out["score"] = float(np.nanmean([out["map_negcon"], out["map_nonrep"]]))
    return out


def control_likelihood(
    Xc: np.ndarray,
    grid: Sequence[float],
    method: str = "ZCA-cor",
    *,
    n_folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Label-free score of each regularisation: held-out log-likelihood of the negative controls.

    The controls are split into ``n_folds`` folds. For each fold the sphering
    transform ``W`` (pycytominer's, as in :func:`spherize_fit`) is fitted on
    the other controls, and the held-out controls are scored under the
    Gaussian model whose precision matrix is ``W^T W``:
    ``log|W| - ||W z||^2 / 2`` per row (constants dropped). A small epsilon
    over-fits the training controls' noise directions; a large one ignores
    their covariance; the best value models unseen control wells best. No
    label and no treatment row is used, so the score cannot leak into an
    evaluation on labels.

    Parameters
    ----------
    Xc
        Control rows (``n x d``).
    grid
        Epsilon values.
    method
        Sphering variant (``"ZCA-cor"``, ``"ZCA"``, ``"PCA-cor"``, ``"PCA"``; the
        likelihood is the same for ZCA and PCA, which differ by a rotation).
    n_folds
        Folds of the cross-validation.
    seed
        Seed of the fold assignment.

    Returns
    -------
    Mean held-out log-likelihood per row, one value per epsilon (higher is better).

    Examples
    --------
    >>> import numpy as np
    >>> from imgprof.tl.sphering import control_likelihood
    >>> Xc = np.random.default_rng(0).normal(size=(60, 10))
    >>> ll = control_likelihood(Xc, [1e-3, 1.0, 1e3])
    >>> int(np.argmax(ll))
    1
    """
    Xc = np.asarray(Xc, dtype=np.float64)
    n, d = Xc.shape
    n_folds = int(min(n_folds, n))
    if n_folds < 2:
        raise ValueError(f"sphering: need at least 2 control rows for the held-out likelihood, got {n}.")
    folds = np.random.default_rng(seed).permutation(n) % n_folds
    cor = method in CORRELATION_VARIANTS
    out = np.zeros(len(grid))
    for f in range(n_folds):
        tr, te = Xc[folds != f], Xc[folds == f]
        mean = tr.mean(axis=0)
        scale = tr.std(axis=0, ddof=1) if cor else np.ones(d)
        scale = np.where(scale > 0, scale, 1.0)
        Zt, Ze = (tr - mean) / scale, (te - mean) / scale
        c = np.sqrt(tr.shape[0] - 1)
        _, S, Vt = np.linalg.svd(Zt, full_matrices=False)
        tol = S.max(initial=0.0) * max(Zt.shape) * np.finfo(float).eps
        r = int((tol < S).sum())
        S, Vt = S[:r], Vt[:r]
        proj = Ze @ Vt.T
        resid = np.maximum((Ze**2).sum(axis=1) - (proj**2).sum(axis=1), 0.0)
        for i, e in enumerate(grid):
            a = c / (S + e)
            b = c / (S[-1] + e) if r < d else 0.0  # null space: pycytominer's last singular value
            logdet = np.log(a).sum() + ((d - r) * np.log(b) if r < d else 0.0)
            q = (proj**2 * a**2).sum(axis=1) + b**2 * resid
            out[i] += float(np.sum(logdet - 0.5 * q))
    return out / n


@doc_params("use_rep", **INTEGRATION_DOC)
def sphering(
    adata: AnnData, batch_key: str | None = None, *,
    controls: Any = "Metadata_control_type == 'negcon'",
    method: str = "ZCA-cor",
    epsilon: float | Sequence[float] = DEFAULT_EPSILON_GRID,
    label_key: str | None = None,
    criterion: str = "auto",
    use_rep: str = "X", key_added: str = "X_sphering", add_layer: bool = False, copy: bool = False,
) -> AnnData | None:
    """Whiten profiles with a sphering transform fitted on negative controls.

    The transform (pycytominer's ``Spherize``, default ``ZCA-cor``) is fitted
    on the control rows only and applied to all rows: directions in which
    controls vary (including plate and batch effects the controls share)
    are shrunk, so treatment effects stand out. ``epsilon`` is added to the
    singular values; a sequence of values is a grid, from which one value
    is kept by ``criterion``: the held-out likelihood of the negative controls
    (:func:`control_likelihood`, label-free, the default without
    ``label_key``) or the best replicate retrieval on ``label_key``
    (:func:`replicate_map`, as in Arevalo et al. 2024).

    The label used to choose epsilon is recorded in the provenance log
    (``tuned_on_label``) and in ``adata.uns["sphering"]``, and so are the
    control rows it was fitted on (``fitted_on``): :class:`imgprof.bench.Benchmarker`
    flags an embedding evaluated on the label it was tuned on, or with mAP
    against the controls it was fitted on (a
    :class:`~imgprof.bench.CircularTuningWarning`). Tune on a held-out label, or
    label-free, and evaluate on another.

    Parameters
    ----------
    adata
        Profiles (normalised features).
    batch_key
        Optional batch column; sphering does not use it, but it is
        validated and logged so that all ``ip.tl.integrate`` methods share one call.
    controls
        Negative controls to fit on: an ``.obs`` query string, a boolean mask or obs names.
    method
        ``"ZCA-cor"``, ``"ZCA"``, ``"PCA-cor"`` or ``"PCA"``.
    epsilon
        One regularisation value, or a grid (default ``1e-5 … 1e3``).
    label_key
        ``.obs`` column naming replicates (e.g. ``"Metadata_Perturbation"``) for
        ``criterion="replicate_map"``. Use a label you will *not* evaluate on.
    criterion
        How to choose epsilon from a grid: ``"control_likelihood"`` (label-free),
        ``"replicate_map"`` (needs ``label_key``), or ``"auto"``: replicate mAP
        when ``label_key`` is given, else the control likelihood.
    {use_rep}
    {key_added}
    {add_layer}
    {copy}

    Returns
    -------
    None, or the modified copy. ``adata.obsm[key_added]``; the grid scores go
    to the provenance log and ``adata.uns["sphering"]``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> ip.tl.sphering(adata, controls="Metadata_pert_type == 'control'", label_key="Metadata_broad_sample")
    >>> adata.uns["sphering"]["epsilon"] > 0
    True
    """
    levels = None
    if batch_key is not None:
        _, levels = check_batches(adata, batch_key)
    _check_variant(method)
    grid = [float(e) for e in np.atleast_1d(np.asarray(epsilon, dtype=float))]
    if not grid or any(not np.isfinite(e) or e < 0 for e in grid):
        raise ValueError(f"sphering: epsilon must be non-negative finite value(s), got {epsilon!r}.")
    if criterion not in ("auto", "control_likelihood", "replicate_map"):
        raise ValueError(
            f"sphering: criterion must be 'auto', 'control_likelihood' or 'replicate_map', got {criterion!r}."
        )
    if criterion == "auto":
        criterion = "replicate_map" if label_key is not None else "control_likelihood"
    if len(grid) > 1 and criterion == "replicate_map" and label_key is None:
        raise ValueError(
            "sphering: criterion='replicate_map' needs label_key= (the .obs column naming replicates, "
            "e.g. 'Metadata_Perturbation'); or use criterion='control_likelihood' (label-free)."
        )
    if label_key is not None:
        check_obs_keys(adata, label_key, param="label_key")
    if add_layer and use_rep not in (None, "X"):
        raise ValueError(f"add_layer=True needs use_rep='X' (got {use_rep!r}).")
    mask = resolve_mask(adata, controls, param="controls")
    X = get_rep(adata, use_rep)
    names = list(map(str, adata.var_names)) if use_rep in (None, "X") else None
    fit = spherize_fit(X[mask], method, names=names)

    adata = start(adata, copy)
    scores = []
    tuned_on = None
    if len(grid) == 1:
        best = grid[0]
    elif criterion == "replicate_map":
        labels = adata.obs[label_key].to_numpy()
        for e in grid:
            s = replicate_map(fit.transform(X, e), labels, mask)
            scores.append({"epsilon": e, **s})
        table = pd.DataFrame(scores)
        best = float(table.loc[table["score"].idxmax(), "epsilon"])
        tuned_on = label_key
    else:
        ll = control_likelihood(X[mask], grid, method)
        scores = [{"epsilon": e, "score": float(v)} for e, v in zip(grid, ll)]
        best = float(grid[int(np.argmax(ll))])
    Y = fit.transform(X, best)
    adata.uns["sphering"] = {
        "epsilon": best,
        "method": method,
        "n_controls": int(mask.sum()),
        "criterion": criterion if len(grid) > 1 else "fixed",
        "tuned_on_label": tuned_on,
        "grid": pd.DataFrame(scores).to_dict(orient="list") if scores else {},
    }
    params = dict(controls=controls, method=method, epsilon=grid, label_key=label_key, criterion=criterion)
    fitted_on = controls if isinstance(controls, str) else f"<{int(mask.sum())} control rows>"
    store(adata, Y, function="tl.sphering", batch_key=batch_key, levels=levels, params=params, use_rep=use_rep,
          key_added=key_added, add_layer=add_layer, epsilon_chosen=best, n_controls=int(mask.sum()), grid_scores=scores,
          tuned_on_label=tuned_on, fitted_on=fitted_on, fitted_on_rows=np.flatnonzero(mask).tolist())
    return finish(adata, copy)
