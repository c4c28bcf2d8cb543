"""Benchmark several embeddings of the same profiles with batch-removal and bio-conservation metrics.

:class:`Benchmarker` follows ``scib_metrics.benchmark.Benchmarker`` (same
constructor, ``prepare``/``benchmark``/``get_results``, same aggregation:
per-type mean of the metrics, total = 0.4 batch + 0.6 biology, optional
min-max scaling of every metric across embeddings) and adds the retrieval
scores of Arevalo et al. 2024 (mAP against non-replicates and against
negative controls). It computes one kNN graph per embedding and shares it,
the label silhouettes, the LISI neighbour weights and the connectivity
graphs across metrics.

:func:`run_methods` runs correction methods of :mod:`imgprof.tl` and
benchmarks their outputs in one call.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd

from .._core.validation import (
    as_list,
    check_adata,
    check_int,
    check_obs_keys,
    resolve_mask,
)
from . import batch as _batch
from . import bio as _bio
from ._checks import check_embedding
from ._kernels import (
    cluster_distance_sums,
    codes_of,
    lisi_probabilities,
    silhouette_from_sums,
    simpson_index,
)
from ._neighbors import EXACT_MAX_N, Neighbors, _self_first, as_neighbors, knn

MetricType = bool | dict[str, Any] | None

_PREPARE_STEPS = ("neighbors", "neighbors + label silhouette", "pre-integrated PCA")

BATCH = "Batch correction"
BIO = "Bio conservation"
AGGREGATE = "Aggregate score"
_METRIC_TYPE = "Metric Type"
TOTAL = "Total"

#: Clean display names (scib-metrics' names where the metric is shared).
METRIC_NAMES: dict[str, str] = {
    "silhouette_label": "Silhouette label",
    "silhouette_batch": "Silhouette batch",
    "isolated_labels": "Isolated labels",
    "nmi_ari_cluster_labels_leiden_nmi": "Leiden NMI",
    "nmi_ari_cluster_labels_leiden_ari": "Leiden ARI",
    "nmi_ari_cluster_labels_kmeans_nmi": "KMeans NMI",
    "nmi_ari_cluster_labels_kmeans_ari": "KMeans ARI",
    "clisi_knn": "cLISI",
    "ilisi_knn": "iLISI",
    "kbet_per_label": "KBET",
    "bras": "BRAS",
    "graph_connectivity": "Graph connectivity",
    "pcr_comparison": "PCR comparison",
    "map_nonrep": "mAP nonrep",
    "map_negcon": "mAP negcon",
}


@dataclass(frozen=True)
class BioConservation:
    """Which biology-conservation metrics to run (``True``/``False``, or a dict of keyword arguments).

    Each field is ``True`` (run with defaults), ``False`` (skip) or a dict of keyword
    arguments for the metric.

    ``map_negcon=None`` (default) runs it exactly when the Benchmarker is given
    ``negcon``. :meth:`scib_metrics` gives scib-metrics' default set.

    Parameters
    ----------
    isolated_labels
        Isolated-label ASW (:func:`imgprof.bench.isolated_labels`).
    nmi_ari_cluster_labels_leiden
        NMI/ARI of Leiden clusters (:func:`imgprof.bench.nmi_ari_cluster_labels_leiden`).
    nmi_ari_cluster_labels_kmeans
        NMI/ARI of k-means clusters (:func:`imgprof.bench.nmi_ari_cluster_labels_kmeans`).
    silhouette_label
        Label ASW (:func:`imgprof.bench.silhouette_label`).
    clisi_knn
        Label LISI (:func:`imgprof.bench.clisi_knn`).
    map_nonrep
        imgprof's mAP of replicates against non-replicates (:func:`imgprof.bench.map_nonrep`).
    map_negcon
        mAP against negative controls (:func:`imgprof.bench.map_negcon`); ``None`` runs it
        when the Benchmarker has ``negcon``.

    Examples
    --------
    >>> import imgprof as ip
    >>> bio = ip.bench.BioConservation(map_nonrep=False)
    >>> bio.map_nonrep, bio.silhouette_label
    (False, True)
    """

    isolated_labels: MetricType = True
    nmi_ari_cluster_labels_leiden: MetricType = True
    nmi_ari_cluster_labels_kmeans: MetricType = True
    silhouette_label: MetricType = True
    clisi_knn: MetricType = True
    map_nonrep: MetricType = True
    map_negcon: MetricType = None

    @classmethod
    def scib_metrics(cls) -> BioConservation:
        """scib-metrics 0.5 defaults: isolated labels, k-means NMI/ARI, silhouette label, cLISI."""
        return cls(nmi_ari_cluster_labels_leiden=False, map_nonrep=False, map_negcon=False)

    @classmethod
    def arevalo2024(cls) -> BioConservation:
        """The biology metrics of Arevalo et al. 2024: Leiden NMI/ARI, silhouette label, cLISI, isolated labels, mAP."""
        return cls(nmi_ari_cluster_labels_kmeans=False, map_nonrep=True, map_negcon=True)


@dataclass(frozen=True)
class BatchCorrection:
    """Which batch-removal metrics to run (``True``/``False``, or a dict of keyword arguments).

    Each field is ``True`` (run with defaults), ``False`` (skip) or a dict of keyword
    arguments for the metric.

    ``silhouette_batch`` (scib's classic batch ASW) is off by default, as in
    scib-metrics ≥ 0.5.6 which replaced it with BRAS; :meth:`arevalo2024` turns it on.

    Parameters
    ----------
    silhouette_batch
        Classic batch ASW (scib); off by default as in scib-metrics >= 0.5.6.
    bras
        Batch removal adapted silhouette (:func:`imgprof.bench.bras`).
    ilisi_knn
        Integration LISI (:func:`imgprof.bench.ilisi_knn`).
    kbet_per_label
        kBET computed within each label and averaged (scib-metrics' ``kbet_per_label``).
    graph_connectivity
        :func:`imgprof.bench.graph_connectivity`.
    pcr_comparison
        :func:`imgprof.bench.pcr_comparison` against the uncorrected representation.

    Examples
    --------
    >>> import imgprof as ip
    >>> bc = ip.bench.BatchCorrection(kbet_per_label=False)
    >>> bc.kbet_per_label, bc.bras
    (False, True)
    """

    silhouette_batch: MetricType = False
    bras: MetricType = True
    ilisi_knn: MetricType = True
    kbet_per_label: MetricType = True
    graph_connectivity: MetricType = True
    pcr_comparison: MetricType = True

    @classmethod
    def scib_metrics(cls) -> BatchCorrection:
        """scib-metrics 0.5 defaults: BRAS, iLISI, kBET, graph connectivity, PCR comparison."""
        return cls()

    @classmethod
    def arevalo2024(cls) -> BatchCorrection:
        """The batch metrics of Arevalo et al. 2024: silhouette batch, iLISI, kBET, graph connectivity, PCR."""
        return cls(silhouette_batch=True, bras=False)


def _enabled(spec) -> list[tuple[str, dict]]:
    out = []
    if spec is None:
        return out
    for f in fields(spec):
        v = getattr(spec, f.name)
        if v is None or v is False:
            continue
        out.append((f.name, dict(v) if isinstance(v, dict) else {}))
    return out


class Benchmarker:
    """Benchmark embeddings of one AnnData with scib-style metrics plus mAP (Arevalo et al. 2024).

    Parameters
    ----------
    adata
        Profiles; the embeddings to compare are ``adata.obsm[key]`` (use
        ``"X"`` for ``adata.X`` itself). Nothing in ``adata`` is modified.
    batch_key
        ``.obs`` column with the batch.
    label_key
        ``.obs`` column with the biological label (perturbation, gene, MOA).
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
        adata,
        batch_key: str,
        label_key: str,
        embedding_obsm_keys: Sequence[str],
        bio_conservation_metrics: BioConservation | None = BioConservation(),
        batch_correction_metrics: BatchCorrection | None = BatchCorrection(),
        pre_integrated_embedding_obsm_key: str | None = None,
        n_jobs: int | None = None,
        progress_bar: bool = True,
        solver: str = "arpack",
        *,
        negcon=None,
        map_groups_key: str | None = None,
        n_neighbors: tuple[int, int, int] = (15, 50, 90),
        neighbors_method: str = "auto",
        on_circular: str = "warn",
    ):
        check_adata(adata, var_names=False)  # embeddings are benchmarked, not features
        if bio_conservation_metrics is None and batch_correction_metrics is None:
            raise ValueError("Either batch or bio metrics must be defined.")
        self._adata = adata
        self._batch_key = batch_key
        self._label_key = label_key
        self._embedding_obsm_keys = as_list(embedding_obsm_keys)
        if not self._embedding_obsm_keys:
            raise ValueError("embedding_obsm_keys: give at least one .obsm key to benchmark.")
        dup = pd.Index(self._embedding_obsm_keys)
        if dup.has_duplicates:
            raise ValueError(f"embedding_obsm_keys has duplicates: {dup[dup.duplicated()].tolist()}.")
        self._pre_key = pre_integrated_embedding_obsm_key
        if isinstance(n_neighbors, (str, int)) or len(n_neighbors) != 3:
            raise ValueError(f"n_neighbors must be three sizes (graph connectivity/Leiden, kBET, LISI), got {n_neighbors!r}.")
        self._n_neighbors = tuple(check_int(k, "n_neighbors", min_value=1) for k in n_neighbors)
        if len(self._n_neighbors) != 3:
            raise ValueError("n_neighbors must be three sizes: (graph connectivity/Leiden, kBET, LISI).")
        self._neighbors_method = neighbors_method
        self._n_jobs = n_jobs
        self._progress_bar = progress_bar
        self._solver = solver
        if on_circular not in ("warn", "raise"):
            raise ValueError(f"on_circular must be 'warn' or 'raise', got {on_circular!r}.")
        self._on_circular = on_circular
        self._flags: list[dict[str, str]] = []
        self._map_groups_key = map_groups_key

        check_obs_keys(adata, [batch_key, label_key], param="batch_key/label_key")
        if map_groups_key is not None:
            check_obs_keys(adata, map_groups_key, param="map_groups_key")
        for key in self._embedding_obsm_keys:
            if key != "X" and key not in adata.obsm:
                raise KeyError(
                    f"embedding_obsm_keys: {key!r} not found in adata.obsm (available: {list(adata.obsm.keys())})."
                )
        self._negcon = None if negcon is None else resolve_mask(adata, negcon, param="negcon")

        bio = bio_conservation_metrics
        if bio is not None and bio.map_negcon is None:
            bio = replace(bio, map_negcon=self._negcon is not None)
        if bio is not None and bio.map_negcon and self._negcon is None:
            raise ValueError("BioConservation(map_negcon=True) needs the negative controls: pass negcon=... .")
        self._bio = bio
        self._batch_metrics = batch_correction_metrics
        self._metric_collection = {}
        if self._bio is not None and _enabled(self._bio):
            self._metric_collection[BIO] = self._bio
        if self._batch_metrics is not None and _enabled(self._batch_metrics):
            self._metric_collection[BATCH] = self._batch_metrics
        if not self._metric_collection:
            raise ValueError("Every metric is switched off; enable at least one.")

        self._batch = self._check_column(batch_key, "batch_key", min_levels=2 if BATCH in self._metric_collection else 1)
        self._labels = self._check_column(label_key, "label_key", min_levels=2 if BIO in self._metric_collection else 1)
        self._neighbors: dict[str, Neighbors] = {}
        self._sil_cache: dict[str, np.ndarray] = {}
        self._X_pre: np.ndarray | None = None
        self._raw: dict[tuple[str, str], float] = {}
        self._types: dict[str, str] = {}
        self._timings: list[dict] = []
        self._prepared = False
        self._benchmarked = False
        self._audit()

    # ------------------------------------------------------------------ helpers
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

    def _timed(self, emb: str, step: str, fn: Callable, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        self._timings.append({"embedding": emb, "step": step, "seconds": time.perf_counter() - t})
        return out

    # ------------------------------------------------------------------ pipeline
    def prepare(self, neighbor_computer: Callable[[np.ndarray, int], Any] | None = None) -> None:
        """Check the embeddings, get the uncorrected embedding for PCR and compute one kNN graph per embedding.

        Parameters
        ----------
        neighbor_computer
            ``f(X, n_neighbors)`` returning a :class:`Neighbors` or a
            scib-metrics ``NeighborsResults``; default :func:`imgprof.bench.knn`.
        """
        for key in self._embedding_obsm_keys:
            self._embedding(key)
        needs_pre = BATCH in self._metric_collection and bool(self._batch_metrics.pcr_comparison)
        if needs_pre:
            self._X_pre = self._timed("(all)", "pre-integrated PCA", self._pre_embedding)
        kmax = max(self._n_neighbors)
        embs = self._embedding_obsm_keys
        it = _progress(embs, self._progress_bar, desc="Computing neighbors")
        for key in it:
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
        bio = self._metric_collection.get(BIO)
        if bio is None:
            return False
        wants = any(name in ("silhouette_label", "isolated_labels") and not (name == "silhouette_label" and kw
                    and set(kw) - {"rescale"}) for name, kw in _enabled(bio))
        method = self._neighbors_method
        exact = method == "exact" or (method == "auto" and X.shape[0] <= EXACT_MAX_N)
        return wants and exact

    def _fused(self, key: str, X: np.ndarray, k: int) -> Neighbors:
        codes, L = codes_of(self._labels)
        S, idx, dist = cluster_distance_sums(X, codes, L, n_jobs=self._n_jobs, knn_k=k)
        self._sil_cache[key] = silhouette_from_sums(S, codes, "nearest")
        idx = np.ascontiguousarray(idx)
        dist = np.ascontiguousarray(dist, dtype=np.float32 if X.dtype == np.float32 else np.float64)
        _self_first(idx, dist)
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

    def benchmark(self) -> None:
        """Run every enabled metric on every embedding (results: :meth:`get_results`), then flag degenerate metrics."""
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
        n_metrics = sum(len(_enabled(s)) for s in self._metric_collection.values())
        embs = _progress(self._embedding_obsm_keys, self._progress_bar, desc="Embeddings", position=0)
        for key in embs:
            pbar = _bar(n_metrics, self._progress_bar)
            X = self._embedding(key)
            cache: dict[str, Any] = {"key": key}
            for mtype, spec in self._metric_collection.items():
                for name, kwargs in _enabled(spec):
                    if pbar is not None:
                        pbar.set_postfix_str(f"{mtype}: {name}")
                    value = self._timed(key, name, self._run_metric, name, kwargs, key, X, cache)
                    if isinstance(value, dict):
                        for sub, v in value.items():
                            self._raw[(f"{name}_{sub}", key)] = float(v)
                            self._types[f"{name}_{sub}"] = mtype
                    else:
                        self._raw[(name, key)] = float(value)
                        self._types[name] = mtype
                    if pbar is not None:
                        pbar.update(1)
            if pbar is not None:
                pbar.close()
        self._benchmarked = True
        self._flag_degenerate()

    # ------------------------------------------------------------------ metrics
    def _nn(self, key: str, which: int) -> Neighbors:
        nn = self._neighbors[key]
        k = min(self._n_neighbors[which], nn.n_neighbors)
        return nn if k == nn.n_neighbors else nn.subset_neighbors(k)

    def _label_silhouette(self, X, cache) -> np.ndarray:
        if "sil_label" not in cache and cache.get("key") in self._sil_cache:
            cache["sil_label"] = self._sil_cache[cache["key"]]
        if "sil_label" not in cache:
            codes, L = codes_of(self._labels)
            S = cluster_distance_sums(X, codes, L, n_jobs=self._n_jobs)
            cache["sil_label"] = silhouette_from_sums(S, codes, "nearest")
        return cache["sil_label"]

    def _lisi_weights(self, key, cache, perplexity):
        ck = ("lisi", perplexity)
        if ck not in cache:
            nn = self._nn(key, 2)
            if perplexity is None:
                perplexity = np.floor(nn.n_neighbors / 3)
            cache[ck] = (nn, *lisi_probabilities(nn.distances, nn.indices, perplexity))
        return cache[ck]

    def _run_metric(self, name: str, kw: dict, key: str, X: np.ndarray, cache: dict):
        labels, batch, n_jobs = self._labels, self._batch, self._n_jobs
        if name == "silhouette_label":
            if kw and any(k not in ("rescale",) for k in kw):
                return _bio.silhouette_label(X, labels, n_jobs=n_jobs, **kw)
            asw = float(np.mean(self._label_silhouette(X, cache)))
            return (asw + 1) / 2 if kw.get("rescale", True) else asw
        if name == "isolated_labels":
            sil = self._label_silhouette(X, cache)
            return _bio.isolated_labels_from_silhouette(
                sil, labels, batch, kw.get("rescale", True), kw.get("iso_threshold")
            )
        if name == "clisi_knn":
            nn, P, H = self._lisi_weights(key, cache, kw.get("perplexity"))
            codes, L = codes_of(labels)
            lisi = 1 / simpson_index(P, H, nn.indices, codes, L)
            return _bio._scaled_clisi(lisi, L) if kw.get("scale", True) else float(np.nanmedian(lisi))
        if name == "ilisi_knn":
            nn, P, H = self._lisi_weights(key, cache, kw.get("perplexity"))
            codes, L = codes_of(batch)
            lisi = 1 / simpson_index(P, H, nn.indices, codes, L)
            return _batch._scaled_ilisi(lisi, L) if kw.get("scale", True) else float(np.nanmedian(lisi))
        if name == "nmi_ari_cluster_labels_kmeans":
            return _bio.nmi_ari_cluster_labels_kmeans(X, labels, **kw)
        if name == "nmi_ari_cluster_labels_leiden":
            return _bio.nmi_ari_cluster_labels_leiden(self._nn(key, 0), labels, **kw)
        if name == "map_nonrep":
            groups = None if self._map_groups_key is None else self._adata.obs[self._map_groups_key].to_numpy()
            return _bio.map_nonrep(X, labels, self._negcon, groups=groups, **kw)
        if name == "map_negcon":
            groups = None if self._map_groups_key is None else self._adata.obs[self._map_groups_key].to_numpy()
            return _bio.map_negcon(X, labels, self._negcon, groups=groups, **kw)
        if name == "silhouette_batch":
            return _batch.silhouette_batch(X, labels, batch, n_jobs=n_jobs, **kw)
        if name == "bras":
            return _batch.bras(X, labels, batch, n_jobs=n_jobs, **kw)
        if name == "kbet_per_label":
            return _batch.kbet_per_label(self._nn(key, 1), batch, labels, **kw)
        if name == "graph_connectivity":
            return _batch.graph_connectivity(self._nn(key, 0), labels)
        if name == "pcr_comparison":
            kw = {"categorical": True, **kw}
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="PCR comparison score is negative")
                return _batch.pcr_comparison(self._X_pre, X, batch, **kw)
        raise ValueError(f"unknown metric {name!r}")  # pragma: no cover

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

    def _flag(self, kind: str, embedding: str, metric: str, message: str, category) -> None:
        self._flags.append({"embedding": embedding, "metric": metric, "kind": kind, "message": message})
        warnings.warn(message, category, stacklevel=4)

    def _audit(self) -> None:
        """Read the provenance of each embedding: circular tuning and missing same-space baselines."""
        from .._core.guardrails import BaselineWarning, CircularTuningWarning
        from .._core.provenance import provenance

        try:
            prov = provenance(self._adata)
        except Exception:
            return
        made: dict[str, dict] = {}
        for _, row in prov.iterrows():
            key = row["extra"].get("key_added") if isinstance(row["extra"], dict) else None
            if key is not None:
                made[key] = {"function": row["function"], "params": row["params"], "extra": row["extra"],
                             "shape": row["shape"]}
        keys = self._embedding_obsm_keys
        baselines = {"X"} | {k for k in keys if made.get(k, {}).get("function") == "tl.no_correction"}
        base_space = {"X" if k == "X" else made[k]["params"].get("use_rep") or "X" for k in baselines if k == "X" or k in made}
        for key in keys:
            info = made.get(key)
            if info is None:
                continue
            tuned = info["extra"].get("tuned_on_label")
            if tuned is not None and tuned == self._label_key:
                msg = (
                    f"{key}: {info['function']} chose a hyperparameter by replicate retrieval on label_key={tuned!r}, "
                    f"the label it is now evaluated with; its bio-conservation scores are optimistic (circular). "
                    "Tune on a held-out label or label-free (e.g. ip.tl.sphering(..., criterion='control_likelihood'))."
                )
                if self._on_circular == "raise":
                    raise ValueError(msg)
                self._flag("circular", key, "all bio metrics", msg, CircularTuningWarning)
            rows = info["extra"].get("fitted_on_rows")
            wants_negcon = self._bio is not None and bool(self._bio.map_negcon)
            if rows is not None and self._negcon is not None and wants_negcon:
                same_shape = tuple(info["shape"])[:1] == (self._adata.n_obs,)
                overlap = same_shape and bool(self._negcon[np.asarray(rows, dtype=np.int64)].any())
                if overlap:
                    msg = (
                        f"{key}: {info['function']} was fitted on {info['extra'].get('fitted_on')!r}, rows that are "
                        "also the negative controls of mAP negcon; those controls are whitened to a centred, unit-covariance "
                        "cloud by construction, so its mAP against them is inflated and not comparable with the other "
                        "embeddings."
                    )
                    self._flag("circular", key, METRIC_NAMES["map_negcon"], msg, CircularTuningWarning)
            if info["function"] in ("tl.no_correction", "tl.pca"):
                continue
            if not info["function"].startswith("tl."):
                continue
            space = info["params"].get("use_rep") or "X"
            has = space in keys or space in base_space
            if not has:
                what = "PCA of the same features" if space.startswith("X_pca") else f"{space!r} itself"
                msg = (
                    f"{key}: {info['function']} starts from {space!r} but no uncorrected embedding of that space "
                    f"({what}) is benchmarked; add {('X_none' if space == 'X' else space)!r} to embedding_obsm_keys "
                    "so the correction is compared like for like."
                )
                self._flag("baseline", key, "all", msg, BaselineWarning)

    def _flag_degenerate(self) -> None:
        from .._core.guardrails import DegenerateMetricWarning

        self._flags = [f for f in self._flags if f["kind"] != "degenerate"]
        if len(self._embedding_obsm_keys) < 2:
            return
        metrics = list(dict.fromkeys(m for m, _ in self._raw))
        if "pcr_comparison" in metrics and self._X_pre is not None:
            # scib's PCR comparison is a ratio over the batch variance of the uncorrected embedding: when
            # that is ~0 (e.g. after per-batch standardization) the ratio is noise, 0 or 1 at random
            r2 = float(_batch.principal_component_regression(self._X_pre, self._batch, categorical=True))
            self._pcr_pre = r2
            if r2 < 1e-3:
                msg = (f"PCR comparison: batch explains only {r2:.2%} of the variance of the uncorrected "
                       f"embedding ({self._pre_key}), so the ratio (before − after) / before is dominated by noise "
                       "and jumps between 0 and 1 (it is 0 for the baseline by construction). It cannot rank the "
                       "methods here, yet it still enters the aggregate scores.")
                self._flag("degenerate", "(all)", METRIC_NAMES["pcr_comparison"], msg, DegenerateMetricWarning)
                metrics = [m for m in metrics if m != "pcr_comparison"]
        for m in metrics:
            vals = np.array([self._raw.get((m, e), np.nan) for e in self._embedding_obsm_keys], dtype=float)
            fin = vals[np.isfinite(vals)]
            if fin.size < 2 or np.ptp(fin) > 1e-9:
                continue
            v = float(fin[0])
            name = METRIC_NAMES.get(m, m)
            if m == "ilisi_knn" and v <= 1e-9:
                why = ("every profile's LISI neighbourhood holds essentially one batch (median batch LISI = 1), "
                       "so no embedding mixes batches at this neighbourhood size")
            elif m == "kbet_per_label" and v <= 1e-9:
                why = "kBET rejects batch mixing in every neighbourhood of every embedding"
            elif m == "graph_connectivity" and v >= 1 - 1e-9:
                why = "every label's kNN graph is connected in every embedding"
            elif v <= 1e-9:
                why = "the metric is at its floor (0) for every embedding"
            elif v >= 1 - 1e-9:
                why = "the metric is at its ceiling (1) for every embedding"
            else:
                why = "the embeddings do not differ on this metric"
            msg = (f"{name} = {v:.3f} for every embedding: {why}. It cannot rank the methods (min-max scaling "
                   "turns it into 0 for all), yet it still enters the aggregate scores.")
            self._flag("degenerate", "(all)", name, msg, DegenerateMetricWarning)

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
        agg = {}
        for t in (BATCH, BIO):
            cols = [m for m in metrics if types[m] == t]
            if cols:
                agg[t] = wide[cols].mean(axis=1, skipna=True)
        if BATCH in agg and BIO in agg:
            agg[TOTAL] = 0.4 * agg[BATCH] + 0.6 * agg[BIO]
        order = [m for m in metrics if types[m] == BIO] + [m for m in metrics if types[m] == BATCH]
        names = {m: (METRIC_NAMES.get(m, m) if clean_names else m) for m in order}
        cols = pd.MultiIndex.from_tuples(
            [(types[m], names[m]) for m in order] + [(AGGREGATE, a) for a in agg], names=["metric_type", "metric"]
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

    def plot_results_table(self, min_max_scale: bool = False, show: bool = True, save_dir: str | None = None):
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
        >>> adata = ip.datasets.cmqtl_crispri()
        >>> ip.tl.pca(adata, n_comps=20)
        >>> bm = ip.bench.Benchmarker(adata, "Metadata_Batch", "Metadata_target_gene", ["X_pca"], progress_bar=False)
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


def min_max(df: pd.DataFrame) -> pd.DataFrame:
    """Scale every column to ``[0, 1]`` like ``sklearn.preprocessing.MinMaxScaler`` (constant column → 0, NaN kept)."""
    V = df.to_numpy(dtype=float)
    lo, hi = np.nanmin(V, axis=0), np.nanmax(V, axis=0)
    rng = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        S = np.where(rng > 0, (V - lo) / np.where(rng > 0, rng, 1.0), 0.0)
    S[np.isnan(V)] = np.nan
    return pd.DataFrame(S, index=df.index, columns=df.columns)


def _progress(items, show: bool, **kw):
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, **kw)


def _bar(total: int, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Metrics", position=1, leave=False)


# ---------------------------------------------------------------------------- run_methods


def run_methods(
    adata,
    methods: Sequence[str] = ("none", "combat", "harmony"),
    batch_key: str = "Metadata_Batch",
    label_key: str = "Metadata_moa",
    *,
    negcon=None,
    method_kwargs: dict[str, dict[str, Any]] | None = None,
    bio_conservation_metrics: BioConservation | None = BioConservation(),
    batch_correction_metrics: BatchCorrection | None = BatchCorrection(),
    min_max_scale: bool = False,
    on_error: str = "raise",
    progress_bar: bool = True,
    key_added: str = "bench",
    pca_baseline: bool = True,
    **benchmarker_kwargs: Any,
) -> pd.DataFrame:
    """Run batch-correction methods of :func:`imgprof.tl.integrate` and benchmark them in one go.

    Each method writes ``adata.obsm[f"X_{method}"]``; then a
    :class:`Benchmarker` scores all of them. A 50-component PCA of ``adata.X``
    (``adata.obsm["X_pca"]``, via :func:`imgprof.tl.pca`) is computed first if
    missing: harmony and scanorama start from it and PCR comparison uses it as
    the uncorrected reference.

    Parameters
    ----------
    adata
        Profiles (normalized and feature-selected).
    methods
        Names accepted by :func:`imgprof.tl.integrate` (``"none"`` is the uncorrected baseline).
    batch_key, label_key
        Batch and biological label columns.
    negcon
        Negative controls for mAP negcon (query string, mask or obs names).
    method_kwargs
        Extra parameters per method, e.g. ``{"scvi": {"max_epochs": 5}}``.
    bio_conservation_metrics, batch_correction_metrics
        Metric sets.
    min_max_scale
        Scale metrics across methods before aggregating.
    on_error
        ``"raise"``, or ``"warn"`` to skip a method that fails (it is named in the warning).
    progress_bar
        tqdm progress over methods and metrics.
    key_added
        The tidy results and timings are stored in ``adata.uns[key_added]``.
    pca_baseline
        Also benchmark the uncorrected ``"X_pca"`` when a method starts from it
        (harmony, scanorama), so those are compared with a baseline in their own
        space (``"none"`` is the baseline of the methods working on ``X``).
    **benchmarker_kwargs
        Passed to :class:`Benchmarker` (``map_groups_key``, ``neighbors_method``, ``n_jobs``...).

    Returns
    -------
    Tidy results (``Benchmarker.get_results(tidy=True)``), ``embedding`` named ``X_<method>``
    (plus ``"X_pca"``, see ``pca_baseline``). The Benchmarker's guardrail findings
    (:attr:`Benchmarker.flags`) go to ``adata.uns[key_added]["flags"]``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> res = ip.bench.run_methods(adata, ["none", "combat"], "Metadata_Batch", "Metadata_target_gene",
    ...                            negcon="Metadata_target_gene == 'CONTROL'", progress_bar=False)
    >>> sorted(res["embedding"].unique())
    ['X_combat', 'X_none']
    """
    from .. import tl
    from .._core.provenance import log_step

    methods = as_list(methods)
    if not methods:
        raise ValueError("methods: give at least one method name (see ip.tl.METHODS).")
    unknown = [m for m in methods if m.lower() not in tl.METHODS]
    if unknown:
        raise ValueError(f"methods: unknown method(s) {unknown}; choose from {list(tl.METHODS)}.")
    if on_error not in ("raise", "warn"):
        raise ValueError(f"on_error must be 'raise' or 'warn', got {on_error!r}.")
    method_kwargs = dict(method_kwargs or {})
    extra = set(method_kwargs) - {m.lower() for m in methods}
    if extra:
        raise ValueError(f"method_kwargs names method(s) {sorted(extra)} that are not in methods={methods}.")
    check_obs_keys(adata, [batch_key, label_key], param="batch_key/label_key")
    from .._core.optional import require_methods

    require_methods(methods, purpose="ip.bench.run_methods")  # before any work, with the pip command

    if "X_pca" not in adata.obsm:
        tl.pca(adata, n_comps=50)
    keys, times = [], []
    it = _progress(methods, progress_bar, desc="Correction methods")
    for m in it:
        if progress_bar and hasattr(it, "set_postfix_str"):
            it.set_postfix_str(m)
        key = f"X_{m.lower()}"
        t = time.perf_counter()
        try:
            tl.integrate(adata, m, batch_key, key_added=key, **method_kwargs.get(m.lower(), {}))
        except Exception as e:
            if on_error == "raise":
                raise
            warnings.warn(f"run_methods: method {m!r} failed and is skipped: {type(e).__name__}: {e}", stacklevel=2)
            continue
        times.append({"embedding": key, "step": "integration", "seconds": time.perf_counter() - t})
        keys.append(key)
    if not keys:
        raise RuntimeError("run_methods: every method failed; nothing to benchmark.")
    from ..tl.integrate import _METHODS as _TL_METHODS

    pca_based = [k for m, k in zip(methods, [f"X_{m.lower()}" for m in methods])
                 if k in keys and method_kwargs.get(m.lower(), {}).get("use_rep", _TL_METHODS[m.lower()][2]) == "X_pca"]
    if pca_baseline and pca_based and "X_pca" not in keys:
        keys.insert(0, "X_pca")  # like-for-like: the uncorrected PCA that harmony/scanorama start from
    bm = Benchmarker(
        adata, batch_key, label_key, keys, bio_conservation_metrics, batch_correction_metrics,
        pre_integrated_embedding_obsm_key="X_pca", negcon=negcon, progress_bar=progress_bar, **benchmarker_kwargs,
    )
    bm.benchmark()
    res = bm.get_results(min_max_scale=min_max_scale, tidy=True)
    timings = pd.concat([pd.DataFrame(times), bm.timings], ignore_index=True)
    adata.uns[key_added] = {"results": res.copy(), "timings": timings, "flags": bm.flags}
    log_step(
        adata, "bench.run_methods",
        {"methods": methods, "batch_key": batch_key, "label_key": label_key, "negcon": negcon,
         "min_max_scale": min_max_scale, "method_kwargs": method_kwargs},
        embeddings=keys,
    )
    return res
