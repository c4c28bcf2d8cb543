"""Benchmark several embeddings of the same profiles with batch-removal and bio-conservation metrics.

:class:`Benchmarker` follows ``scib_metrics.benchmark.Benchmarker`` (same
constructor, ``prepare``/``benchmark``/``get_results``, same aggregation:
per-type mean of the metrics, total = 0.4 batch + 0.6 biology, optional
min-max scaling of every metric across embeddings) and adds the retrieval
scores of Arevalo et al. 2024 (mAP against non-replicates and against
negative controls). It computes one kNN graph per embedding and shares it,
the label silhouettes, the LISI neighbour weights and the connectivity
graphs across metrics.

The metrics are the entries of the metric registry
(:data:`imgprof.bench._registry.BENCH_METRICS`, registered in
:mod:`imgprof.bench._metrics`); the Benchmarker only iterates it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, cast

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.docs import doc_params
from .._core.inputs import check_embedding
from .._core.validation import as_list, check_adata, check_choice, check_int, check_obs_keys, resolve_mask
from ._aggregate import AGGREGATE, TOTAL, aggregate_scores, min_max
from ._guards import Flag, audit_provenance, degenerate_metrics
from ._kernels import cluster_distance_sums, codes_of, silhouette_from_sums
from ._neighbors import EXACT_MAX_N, Neighbors, as_neighbors, knn, self_first
from ._registry import BATCH, BENCH_METRICS, BIO, MetricInputs, metric_names, uses_cache
from ._sets import DEFAULT_BATCH, DEFAULT_BIO, BatchCorrection, BioConservation, enabled

__all__ = [
    "AGGREGATE", "BATCH", "BIO", "TOTAL", "BatchCorrection", "Benchmarker", "BioConservation", "aggregate_scores", "min_max",
]

_PREPARE_STEPS = ("neighbors", "neighbors + label silhouette", "pre-integrated PCA")
_METRIC_TYPE = "Metric Type"


def _resolve_sets(bio: Any, batch: Any, has: dict[str, bool]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(type, metric, kwargs)`` of every metric to run; ``None`` fields run when their inputs are given."""
    out = []
    for spec in (bio, batch):
        if spec is None:
            continue
        auto = {e.name: all(has.get(r, False) for r in e["requires"]) for e in BENCH_METRICS.entries()}
        spec = replace(spec, **{n: auto[n] for n, _ in _all_fields(spec) if getattr(spec, n) is None})
        for name, kwargs in enabled(spec):
            missing = [r for r in BENCH_METRICS.get(name)["requires"] if not has.get(r, False)]
            if missing:
                raise ValueError(f"{type(spec).__name__}({name}=True) needs {missing}: pass {missing[0]}=... .")
            out.append((BENCH_METRICS.get(name)["type"], name, kwargs))
    if not out:
        raise ValueError("Every metric is switched off; enable at least one.")
    return out


def _all_fields(spec: Any) -> list[tuple[str, Any]]:
    from dataclasses import fields

    return [(f.name, getattr(spec, f.name)) for f in fields(spec)]


def progress_iter(items: Iterable[Any], show: bool, **kw: Any) -> Any:
    """A tqdm bar over ``items`` when ``show`` (keyword arguments go to tqdm), else ``items`` itself."""
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, **kw)


@doc_params("batch_key", "label_key")
class Benchmarker:
    """Benchmark embeddings of one AnnData with scib-style metrics plus mAP (Arevalo et al. 2024).

    Parameters
    ----------
    adata
        Profiles; the embeddings to compare are ``adata.obsm[key]`` (use
        ``"X"`` for ``adata.X`` itself). Nothing in ``adata`` is modified.
    {batch_key}
    {label_key}
    embedding_obsm_keys
        Embeddings to benchmark.
    bio_conservation_metrics, batch_correction_metrics
        Metric sets (see :class:`BioConservation`, :class:`BatchCorrection`); ``None`` skips a family.
    pre_integrated_embedding_obsm_key
        Uncorrected embedding for PCR comparison (default: ``"X_pca"`` if
        present, else a 50-component PCA of ``adata.X`` computed here).
    n_jobs
        Threads (default: all cores; scib-metrics' default is 1).
    progress_bar
        Show tqdm progress bars.
    solver
        SVD solver of the PCA computed for PCR comparison when no uncorrected
        embedding is given (scikit-learn's names; scib-metrics' default ``"arpack"``).
    negcon
        Negative controls for mAP negcon (query string on ``.obs``, boolean
        mask or obs names), e.g. ``"Metadata_target_gene == 'CONTROL'"``. They
        are also left out of mAP nonrep.
    map_groups_key
        Optional ``.obs`` column restricting mAP negatives to the same group
        (Arevalo et al. used the plate).
    n_neighbors
        Neighbourhood sizes ``(graph connectivity & Leiden, kBET, LISI)``; one
        search with the largest is done per embedding (scib-metrics: 15, 50, 90).
    neighbors_method
        ``"auto"``, ``"exact"`` or ``"pynndescent"`` (see :func:`imgprof.bench.knn`).
    on_circular
        What to do with an embedding tuned on ``label_key`` (its provenance says
        so, e.g. sphering's epsilon chosen by replicate mAP on the same label):
        ``"warn"`` (default: a :class:`CircularTuningWarning`, and the embedding
        is listed in :attr:`flags`) or ``"raise"`` (refuse with a ``ValueError``).

    Notes
    -----
    A drop-in for ``scib_metrics.benchmark.Benchmarker``: the same positional
    constructor, ``prepare``/``benchmark``/``get_results``/``plot_results_table``
    with the same defaults, ``get_results()`` in the same wide shape (one row per
    embedding plus a ``"Metric Type"`` row) and the same aggregation.
    Differences: the **default** biology set adds imgprof's own metrics, Leiden
    NMI/ARI and mAP against non-replicates (and mAP against negative controls
    when ``negcon`` is given); ``BioConservation.scib_metrics()`` and
    ``BatchCorrection.scib_metrics()`` give scib-metrics' exact set.
    ``n_jobs`` defaults to all cores. ``get_results(tidy=True)`` gives a long table.

    Guardrails (:attr:`flags`, each also raised as a warning): an embedding
    tuned on ``label_key`` or fitted on the ``negcon`` rows
    (:class:`CircularTuningWarning`); a correction without an uncorrected
    baseline in the same space, e.g. harmony (which starts from ``X_pca``)
    benchmarked without ``"X_pca"`` (:class:`BaselineWarning`); a metric equal for
    every embedding, which cannot rank them (:class:`DegenerateMetricWarning`).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> ip.tl.pca(adata, n_comps=20)
    >>> ip.tl.integrate(adata, "combat", "Metadata_Batch")
    >>> bm = ip.bench.Benchmarker(adata, "Metadata_Batch", "Metadata_target_gene", ["X_pca", "X_combat"],
    ...                           negcon="Metadata_target_gene == 'CONTROL'", progress_bar=False)
    >>> bm.benchmark()
    >>> df = bm.get_results()      # scib-metrics' shape: embeddings + a "Metric Type" row
    >>> df.index.tolist()
    ['X_pca', 'X_combat', 'Metric Type']
    >>> sorted(bm.get_results(tidy=True)["metric_type"].unique())
    ['Aggregate score', 'Batch correction', 'Bio conservation']
    """


    def __init__(
        self,
        adata: AnnData,
        batch_key: str,
        label_key: str,
        embedding_obsm_keys: Sequence[str],
        bio_conservation_metrics: BioConservation | None = DEFAULT_BIO,
        batch_correction_metrics: BatchCorrection | None = DEFAULT_BATCH,
        pre_integrated_embedding_obsm_key: str | None = None,
        n_jobs: int | None = None,
        progress_bar: bool = True,
        solver: str = "arpack",
        *,
        negcon: Any = None,
        map_groups_key: str | None = None,
        n_neighbors: tuple[int, int, int] = (15, 50, 90),
        neighbors_method: str = "auto",
        on_circular: str = "warn",
    ) -> None:
        check_adata(adata, var_names=False)  # embeddings are benchmarked, not features
        if bio_conservation_metrics is None and batch_correction_metrics is None:
            raise ValueError("Either batch or bio metrics must be defined.")
        self._adata, self._batch_key, self._label_key = adata, batch_key, label_key
        self._embedding_obsm_keys = self._check_embedding_keys(as_list(embedding_obsm_keys))
        self._pre_key = pre_integrated_embedding_obsm_key
        self._n_neighbors = self._check_n_neighbors(n_neighbors)
        self._neighbors_method, self._n_jobs, self._progress_bar, self._solver = neighbors_method, n_jobs, progress_bar, solver
        self._on_circular = check_choice(on_circular, "on_circular", ("warn", "raise"))
        self._flags: list[dict[str, str]] = []
        self._map_groups_key = map_groups_key
        check_obs_keys(adata, [batch_key, label_key], param="batch_key/label_key")
        if map_groups_key is not None:
            check_obs_keys(adata, map_groups_key, param="map_groups_key")
        self._negcon = None if negcon is None else resolve_mask(adata, negcon, param="negcon")
        self._metrics = _resolve_sets(bio_conservation_metrics, batch_correction_metrics, {"negcon": self._negcon is not None})
        types = {t for t, _, _ in self._metrics}
        self._batch = self._check_column(batch_key, "batch_key", min_levels=2 if BATCH in types else 1)
        self._labels = self._check_column(label_key, "label_key", min_levels=2 if BIO in types else 1)
        self._neighbors: dict[str, Neighbors] = {}
        self._sil_cache: dict[str, np.ndarray] = {}
        self._X_pre: np.ndarray | None = None
        self._raw: dict[tuple[str, str], float] = {}
        self._types: dict[str, str] = {}
        self._timings: list[dict[str, Any]] = []
        self._prepared = self._benchmarked = False
        wants_negcon = any(name == "map_negcon" for _, name, _ in self._metrics)
        for flag in audit_provenance(adata, self._embedding_obsm_keys, label_key, self._negcon, wants_negcon=wants_negcon):
            if self._on_circular == "raise" and flag.kind == "circular" and flag.metric == "all bio metrics":
                raise ValueError(flag.message)
            self._flag(flag)

    # ------------------------------------------------------------------ checks
    def _check_embedding_keys(self, keys: list[str]) -> list[str]:
        if not keys:
            raise ValueError("embedding_obsm_keys: give at least one .obsm key to benchmark.")
        dup = pd.Index(keys)
        if dup.has_duplicates:
            raise ValueError(f"embedding_obsm_keys has duplicates: {dup[dup.duplicated()].tolist()}.")
        for key in keys:
            if key != "X" and key not in self._adata.obsm:
                raise KeyError(
                    f"embedding_obsm_keys: {key!r} not found in adata.obsm (available: {list(self._adata.obsm.keys())})."
                )
        return keys

    @staticmethod
    def _check_n_neighbors(n_neighbors: Any) -> tuple[int, ...]:
        if isinstance(n_neighbors, (str, int)) or len(n_neighbors) != 3:
            raise ValueError(f"n_neighbors must be three sizes (graph connectivity/Leiden, kBET, LISI), got {n_neighbors!r}.")
        return tuple(cast(int, check_int(k, "n_neighbors", min_value=1)) for k in n_neighbors)

    def _check_column(self, key: str, param: str, min_levels: int) -> np.ndarray:
        col = self._adata.obs[key]
        na = int(col.isna().sum())
        if na:
            raise ValueError(f"{param}={key!r}: {na} observation(s) have a missing value; label or drop them first.")
        vals = col.astype(str).to_numpy()
        levels = pd.unique(vals)
        if len(levels) < min_levels:
            what = (
                "batch-removal metrics need at least two batches (one batch means there is nothing to correct)"
                if param == "batch_key"
                else "biology-conservation metrics need at least two labels"
            )
            raise ValueError(
                f"{param}={key!r} has a single level ({levels[0]!r} for all {len(vals)} observations): {what}."
            )
        return vals

    def _embedding(self, key: str) -> np.ndarray:
        X = self._adata.X if key == "X" else self._adata.obsm[key]
        what = "adata.X" if key == "X" else f"adata.obsm[{key!r}]"
        X = check_embedding(X, what=what)
        if X.shape[0] != self._adata.n_obs:
            raise ValueError(f"{what} has {X.shape[0]} rows but adata has {self._adata.n_obs} observations.")
        return X

    def _timed(self, emb: str, step: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        self._timings.append({"embedding": emb, "step": step, "seconds": time.perf_counter() - t})
        return out

    def _needs(self, what: str) -> bool:
        """Whether an enabled metric reads input ``what`` (e.g. ``"pre_integrated"``)."""
        return any(what in BENCH_METRICS.get(name)["inputs"] for _, name, _ in self._metrics)

    # ------------------------------------------------------------------ pipeline
    def prepare(self, neighbor_computer: Callable[[np.ndarray, int], Any] | None = None) -> None:
        """Check the embeddings, get the uncorrected embedding for PCR and compute one kNN graph per embedding.

        Parameters
        ----------
        neighbor_computer
            ``f(X, n_neighbors)`` returning a :class:`Neighbors` or a
            scib-metrics ``NeighborsResults``; default :func:`imgprof.bench.knn`.

        Returns
        -------
        None
            The graphs are in :attr:`neighbors`.

        Examples
        --------
        >>> import imgprof as ip
        >>> adata = ip.datasets.cmqtl_crispri()
        >>> bm = ip.bench.Benchmarker(adata, "Metadata_Batch", "Metadata_target_gene", ["X"], progress_bar=False)
        >>> bm.prepare()
        >>> bm.neighbors["X"].n_neighbors
        90
        """
        for key in self._embedding_obsm_keys:
            self._embedding(key)
        if self._needs("pre_integrated"):
            self._X_pre = self._timed("(all)", "pre-integrated PCA", self._pre_embedding)
        kmax = max(self._n_neighbors)
        for key in progress_iter(self._embedding_obsm_keys, self._progress_bar, desc="Computing neighbors"):
            X = self._embedding(key)
            k = min(kmax, X.shape[0])
            if neighbor_computer is not None:
                nn = self._timed(key, "neighbors", lambda X=X, k=k: as_neighbors(neighbor_computer(X, k)))
                if nn.n_samples != X.shape[0] or nn.n_neighbors < 2:
                    raise ValueError(
                        f"neighbor_computer returned {nn.indices.shape} neighbours for {key!r}; expected "
                        f"({X.shape[0]}, {k})."
                    )
            elif self._fuse_silhouette(X):
                nn = self._timed(key, "neighbors + label silhouette", self._fused, key, X, k)
            else:
                nn = self._timed(key, "neighbors", knn, X, k, method=self._neighbors_method, n_jobs=self._n_jobs)
            self._neighbors[key] = nn
        self._prepared = True

    def _fuse_silhouette(self, X: np.ndarray) -> bool:
        """Exact Euclidean neighbours and label silhouettes can come from one pass over the distances."""
        wants = any(uses_cache(BENCH_METRICS.get(name), kw, "label_silhouette") for _, name, kw in self._metrics)
        method = self._neighbors_method
        exact = method == "exact" or (method == "auto" and X.shape[0] <= EXACT_MAX_N)
        return wants and exact

    def _fused(self, key: str, X: np.ndarray, k: int) -> Neighbors:
        codes, L = codes_of(self._labels)
        S, idx, dist = cluster_distance_sums(X, codes, L, n_jobs=self._n_jobs, knn_k=k)
        self._sil_cache[key] = silhouette_from_sums(S, codes, "nearest")
        idx = np.ascontiguousarray(idx)
        dist = np.ascontiguousarray(dist, dtype=np.float32 if X.dtype == np.float32 else np.float64)
        self_first(idx, dist)
        return Neighbors(idx, dist, method="exact")

    def _pre_embedding(self) -> np.ndarray:
        if self._pre_key is not None:
            if self._pre_key != "X" and self._pre_key not in self._adata.obsm:
                raise KeyError(
                    f"pre_integrated_embedding_obsm_key={self._pre_key!r} not found in adata.obsm "
                    f"(available: {list(self._adata.obsm.keys())})."
                )
            return self._embedding(self._pre_key)
        if "X_pca" in self._adata.obsm:
            self._pre_key = "X_pca"
            return self._embedding("X_pca")
        X = check_embedding(self._adata.X, what="adata.X")
        from sklearn.decomposition import PCA

        n_comps = int(min(50, X.shape[0] - 1, X.shape[1] - 1))
        self._pre_key = "<PCA of adata.X>"
        return PCA(n_components=n_comps, svd_solver=self._solver, random_state=0).fit_transform(X.astype(np.float64))

    def _inputs(self, key: str) -> MetricInputs:
        groups = None if self._map_groups_key is None else self._adata.obs[self._map_groups_key].to_numpy()
        return MetricInputs(key, self._embedding(key), self._labels, self._batch, self._neighbors[key], self._n_neighbors,
                            self._n_jobs, pre_integrated=self._X_pre, negcon=self._negcon, groups=groups,
                            label_silhouette=self._sil_cache.get(key))

    def _record(self, name: str, mtype: str, key: str, value: Any) -> None:
        for col, v in (value.items() if isinstance(value, dict) else [(None, value)]):
            column = name if col is None else f"{name}_{col}"
            self._raw[(column, key)] = float(v)
            self._types[column] = mtype

    def benchmark(self) -> None:
        """Run every enabled metric on every embedding (results: :meth:`get_results`), then flag degenerate metrics.

        Returns
        -------
        None
            The scores are read with :meth:`get_results`.

        Examples
        --------
        >>> import imgprof as ip
        >>> adata = ip.datasets.cmqtl_crispri()
        >>> bm = ip.bench.Benchmarker(adata, "Metadata_Batch", "Metadata_target_gene", ["X"], progress_bar=False,
        ...                           bio_conservation_metrics=None)
        >>> bm.benchmark()
        >>> "KBET" in bm.get_results().columns
        True
        """
        if self._benchmarked:
            warnings.warn(
                "The benchmark has already been run. Running it again will overwrite the previous results.",
                UserWarning,
                stacklevel=2,
            )
            self._raw.clear()
            self._timings = [t for t in self._timings if t["step"] in _PREPARE_STEPS]
        if not self._prepared:
            self.prepare()
        for key in progress_iter(self._embedding_obsm_keys, self._progress_bar, desc="Embeddings", position=0):
            inputs = self._inputs(key)
            pbar = progress_iter(self._metrics, self._progress_bar, desc="Metrics", position=1, leave=False)
            for mtype, name, kwargs in pbar:
                if hasattr(pbar, "set_postfix_str"):
                    pbar.set_postfix_str(f"{mtype}: {name}")
                self._record(name, mtype, key, self._timed(key, name, BENCH_METRICS.get(name).obj, inputs, **kwargs))
        self._benchmarked = True
        self._flags = [f for f in self._flags if f["kind"] != "degenerate"]
        guard_args = {"X_pre": self._X_pre, "batch": self._batch, "pre_key": self._pre_key}
        for flag in degenerate_metrics(self._raw, self._embedding_obsm_keys, guard_args):
            self._flag(flag)

    # ------------------------------------------------------------------ results
    @property
    def neighbors(self) -> dict[str, Neighbors]:
        """The kNN graph of every embedding (after :meth:`prepare`)."""
        return dict(self._neighbors)

    @property
    def timings(self) -> pd.DataFrame:
        """Seconds spent per embedding and step (neighbours and each metric)."""
        return pd.DataFrame(self._timings, columns=["embedding", "step", "seconds"])

    @property
    def flags(self) -> pd.DataFrame:
        """Guardrail findings: one row per (embedding, metric, kind, message); also raised as warnings.

        ``kind`` is ``"circular"`` (tuned on ``label_key`` or fitted on the
        ``negcon`` rows), ``"baseline"`` (no uncorrected baseline in the same
        space) or ``"degenerate"`` (one value for every embedding).
        """
        return pd.DataFrame(self._flags, columns=["embedding", "metric", "kind", "message"])

    def _flag(self, flag: Flag) -> None:
        self._flags.append({"embedding": flag.embedding, "metric": flag.metric, "kind": flag.kind, "message": flag.message})
        warnings.warn(flag.message, flag.category, stacklevel=3)

    def _results_multi(self, min_max_scale: bool, clean_names: bool) -> pd.DataFrame:
        """Wide table, one row per embedding, columns a ``(metric_type, metric)`` MultiIndex."""
        if not self._benchmarked:
            raise RuntimeError("Run benchmark() first.")
        metrics = list(dict.fromkeys(m for m, _ in self._raw))
        wide = pd.DataFrame(
            {m: [self._raw.get((m, e), np.nan) for e in self._embedding_obsm_keys] for m in metrics},
            index=pd.Index(self._embedding_obsm_keys, name="embedding"),
            dtype=float,
        )
        if min_max_scale:
            wide = min_max(wide)
        types = {m: self._types[m] for m in metrics}
        agg = aggregate_scores(wide, [types[m] for m in metrics])
        order = [m for m in metrics if types[m] == BIO] + [m for m in metrics if types[m] == BATCH]
        names = metric_names() if clean_names else {}
        cols = pd.MultiIndex.from_tuples(
            [(types[m], names.get(m, m)) for m in order] + [(AGGREGATE, a) for a in agg], names=["metric_type", "metric"]
        )
        out = pd.concat([wide[order], pd.DataFrame(agg)], axis=1)
        out.columns = cols
        return out

    def get_results(self, min_max_scale: bool = False, clean_names: bool = True, tidy: bool = False) -> pd.DataFrame:
        """The benchmark results with per-type aggregates and the total score, in scib-metrics' shape.

        Aggregation as scib-metrics: optionally min-max scale each metric across
        embeddings (``sklearn.preprocessing.MinMaxScaler``; a metric equal for
        all embeddings becomes 0), average the metrics of each type (NaN
        skipped), total = 0.4 × batch correction + 0.6 × bio conservation.

        Parameters
        ----------
        min_max_scale
            Scale each metric to ``[0, 1]`` across embeddings before aggregating.
        clean_names
            Display names (``"Silhouette label"``) instead of function names.
        tidy
            ``False`` (default, as scib-metrics): one row per embedding (index
            ``"Embedding"``) plus a last row ``"Metric Type"`` naming each
            column's type, one column per metric then ``"Batch correction"``,
            ``"Bio conservation"``, ``"Total"``; object dtype because of the
            type row (``df.drop("Metric Type").astype(float)`` for numbers).
            ``True``: long table with columns ``embedding``, ``metric_type``,
            ``metric``, ``value`` (aggregates have ``metric_type == "Aggregate score"``).

        Returns
        -------
        The results table.

        Examples
        --------
        >>> import imgprof as ip
        >>> adata = ip.datasets.cmqtl_crispri()
        >>> ip.tl.pca(adata, n_comps=20)
        >>> bm = ip.bench.Benchmarker(adata, "Metadata_Batch", "Metadata_target_gene", ["X_pca"], progress_bar=False)
        >>> bm.benchmark()
        >>> bm.get_results().loc["Metric Type", "Total"]
        'Aggregate score'
        """
        out = self._results_multi(min_max_scale, clean_names)
        if tidy:
            long = out.stack(level=[0, 1], future_stack=True).rename("value").reset_index()
            return long[["embedding", "metric_type", "metric", "value"]]
        df = pd.DataFrame(out.to_numpy(dtype=float), index=pd.Index(list(out.index), name="Embedding"),
                          columns=[m for _, m in out.columns]).astype(object)
        df.loc[_METRIC_TYPE] = [t for t, _ in out.columns]
        return df

    def plot_results_table(self, min_max_scale: bool = False, show: bool = True, save_dir: str | None = None) -> Any:
        """Plot the results as scib-metrics does (circles per metric, bars for the aggregates).

        Parameters
        ----------
        min_max_scale
            Min-max scale every metric across embeddings first.
        show
            Show the figure.
        save_dir
            Folder to save ``scib_results.svg`` in (scib-metrics' file name); ``None``: not saved.

        Returns
        -------
        The matplotlib ``Axes`` of the table (scib-metrics returns a plottable ``Table``).

        Examples
        --------
        >>> import imgprof as ip
        >>> bm = ip.bench.Benchmarker(ip.datasets.cmqtl_crispri(), "Metadata_Batch", "Metadata_target_gene", ["X"],
        ...                           bio_conservation_metrics=None, progress_bar=False)
        >>> bm.benchmark()
        >>> ax = bm.plot_results_table(show=False)
        """
        import os

        from ..pl.bench import plot_results_table

        ax = plot_results_table(self, min_max_scale=min_max_scale, show=False)
        if save_dir is not None:
            ax.figure.savefig(os.path.join(save_dir, "scib_results.svg"), facecolor=ax.get_facecolor(), dpi=300)
        if show:
            import matplotlib.pyplot as plt

            plt.show()
        return ax
