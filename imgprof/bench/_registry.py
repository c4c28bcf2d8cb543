"""The Benchmarker's metric registry (as scib-metrics' ``MetricAnnDataAPI``, one entry per metric).

Each metric registers once, in :mod:`imgprof.bench._metrics`, with
:func:`register_metric`: its name (the field of :class:`BioConservation` or
:class:`BatchCorrection`), its type (bio conservation or batch correction), a
display name, the inputs it reads and the shared computations (cache keys) it
uses. :class:`imgprof.bench.Benchmarker` only iterates :data:`BENCH_METRICS`;
the metric-set dataclasses are built from it, so adding a metric is one
registered function in one file.

A registered function takes a :class:`MetricInputs` (the embedding, labels,
batch, kNN graph and the caches shared by the metrics of one embedding) and
the user's keyword arguments, and returns a float or a dict of floats (one
column per key, named ``{metric}_{key}``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from .._core.registry import Entry, Registry
from ._kernels import cluster_distance_sums, codes_of, lisi_probabilities, silhouette_from_sums
from ._neighbors import Neighbors

BATCH = "Batch correction"
BIO = "Bio conservation"
TYPES = (BIO, BATCH)

#: Inputs a metric may read (``MetricInputs`` attributes).
INPUTS = ("embedding", "labels", "batch", "neighbors", "pre_integrated", "negcon", "groups")

#: Which of the Benchmarker's three neighbourhood sizes a kNN use takes.
KNN_USES = {"connectivity": 0, "kbet": 1, "lisi": 2}

#: Every Benchmarker metric, in the order of the metric-set fields and of the results columns.
BENCH_METRICS = Registry("bench_metric", param="metric", case_sensitive=True)

_DOC_TAIL = '''

Parameters
----------
inputs
    The embedding's :class:`~imgprof.bench._registry.MetricInputs` (reads {inputs}).
{options}
Returns
-------
{returns}

Examples
--------
>>> from imgprof.bench._registry import BENCH_METRICS
>>> BENCH_METRICS.get("{name}")["display"]
{display!r}
'''


def register_metric(
    name: str,
    type: str,
    display: str | dict[str, str],
    *,
    inputs: tuple[str, ...],
    cache: tuple[str, ...] = (),
    cache_kwargs: tuple[str, ...] | None = None,
    default: bool | None = True,
    requires: tuple[str, ...] = (),
    **meta: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a Benchmarker metric (decorator); completes its docstring from the metadata.

    Parameters
    ----------
    name
        Field name in the metric set and column name in the results.
    type
        :data:`BIO` or :data:`BATCH`.
    display
        Display name; a dict ``{suffix: name}`` for a metric returning several values.
    inputs
        What it reads, from :data:`INPUTS`.
    cache
        Shared computations it uses (``"knn:<use>"``, ``"label_silhouette"``, ``"lisi:<use>"``).
    cache_kwargs
        Keyword arguments under which the caches are still used (``None``: any).
    default
        Field default: on, off, or ``None`` (on exactly when every ``requires`` input is given).
    requires
        Optional inputs that must be given for the metric to run (``"negcon"``).
    **meta
        More metadata (``floor_why``/``ceiling_why``: why a metric at 0/1 for every embedding; ``guard``).

    Returns
    -------
    callable
        The decorator.

    Examples
    --------
    >>> from imgprof.bench._registry import BENCH_METRICS
    >>> BENCH_METRICS.get("clisi_knn")["type"]
    'Bio conservation'
    """
    if type not in TYPES:
        raise ValueError(f"register_metric({name!r}): type must be one of {TYPES}, got {type!r}.")
    unknown = set(inputs) - set(INPUTS)
    if unknown:
        raise ValueError(f"register_metric({name!r}): unknown input(s) {sorted(unknown)}; choose from {INPUTS}.")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        returns = "dict\n    ``{suffix: value}``." if isinstance(display, dict) else "float\n    The score."
        fn.__doc__ = inspect.cleandoc(fn.__doc__ or name) + _DOC_TAIL.format(
            inputs=", ".join(inputs), options=_options_doc(fn, "BioConservation" if type == BIO else "BatchCorrection", name),
            name=name, returns=returns, display=display)
        BENCH_METRICS.add(name, fn, type=type, display=display, inputs=tuple(inputs), cache=tuple(cache),
                          cache_kwargs=cache_kwargs, default=default, requires=tuple(requires), **meta)
        return fn

    return deco


def _options_doc(fn: Callable[..., Any], spec: str, name: str) -> str:
    """Parameters text for the metric's options (what users pass as ``spec(name=dict(...))``)."""
    out = []
    for p in list(inspect.signature(fn).parameters.values())[1:]:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            out.append(f"**{p.name}\n    The metric's keyword arguments, given as ``{spec}({name}=dict(...))``.")
        else:
            out.append(f"{p.name}\n    Option (default {p.default!r}): ``{spec}({name}=dict({p.name}=...))``.")
    return "\n".join(out) + ("\n" if out else "")


def uses_cache(entry: Entry, kwargs: dict[str, Any], cache_key: str) -> bool:
    """Whether ``entry`` called with ``kwargs`` reads the shared computation ``cache_key``.

    Parameters
    ----------
    entry
        A :data:`BENCH_METRICS` entry.
    kwargs
        The keyword arguments it is run with.
    cache_key
        A cache key (``"label_silhouette"``...).

    Returns
    -------
    bool
        True when the metric reads that cache with these arguments.

    Examples
    --------
    >>> from imgprof.bench._registry import BENCH_METRICS, uses_cache
    >>> uses_cache(BENCH_METRICS.get("silhouette_label"), {"rescale": False}, "label_silhouette")
    True
    """
    allowed = entry["cache_kwargs"]
    if allowed is not None and set(kwargs) - set(allowed):
        return False
    return cache_key in entry["cache"]


def display_names(name: str, value: Any = None) -> dict[str, str]:
    """Result column → display name for metric ``name`` (a dict metric gives one column per key).

    Parameters
    ----------
    name
        A registered metric.
    value
        Its value (unused; the columns come from the registered display names).

    Returns
    -------
    dict
        ``{column: display name}``.

    Examples
    --------
    >>> from imgprof.bench._registry import display_names
    >>> display_names("nmi_ari_cluster_labels_kmeans")
    {'nmi_ari_cluster_labels_kmeans_nmi': 'KMeans NMI', 'nmi_ari_cluster_labels_kmeans_ari': 'KMeans ARI'}
    """
    display = BENCH_METRICS.get(name)["display"]
    if isinstance(display, dict):
        return {f"{name}_{sub}": d for sub, d in display.items()}
    return {name: display}


def metric_names() -> dict[str, str]:
    """Every result column → its display name (scib-metrics' names where the metric is shared).

    Returns
    -------
    dict
        ``{column: display name}`` over all registered metrics.

    Examples
    --------
    >>> from imgprof.bench._registry import metric_names
    >>> metric_names()["clisi_knn"]
    'cLISI'
    """
    out: dict[str, str] = {}
    for name in BENCH_METRICS.names():
        out.update(display_names(name))
    return out


class MetricInputs:
    """What the metrics of one embedding read, with the computations they share cached.

    Parameters
    ----------
    key
        The embedding's name (``.obsm`` key or ``"X"``).
    X
        The embedding (checked, floating point).
    labels, batch
        Label and batch of every observation (strings).
    neighbors
        The embedding's kNN graph (largest neighbourhood size).
    n_neighbors
        The three neighbourhood sizes (connectivity & Leiden, kBET, LISI).
    n_jobs
        Threads.
    pre_integrated
        The uncorrected embedding (PCR comparison), or ``None``.
    negcon
        Boolean mask of the negative controls, or ``None``.
    groups
        mAP grouping column values, or ``None``.
    label_silhouette
        Label silhouettes computed together with the neighbours, or ``None``.

    Examples
    --------
    >>> import numpy as np
    >>> from imgprof.bench import knn
    >>> from imgprof.bench._registry import MetricInputs
    >>> X = np.random.default_rng(0).normal(size=(40, 3))
    >>> labels = np.repeat(["a", "b"], 20)
    >>> inp = MetricInputs("X", X, labels, labels, knn(X, 10), (5, 8, 10), 1)
    >>> inp.knn("connectivity").n_neighbors
    5
    """

    def __init__(
        self,
        key: str,
        X: np.ndarray,
        labels: np.ndarray,
        batch: np.ndarray,
        neighbors: Neighbors,
        n_neighbors: tuple[int, ...],
        n_jobs: int | None,
        *,
        pre_integrated: np.ndarray | None = None,
        negcon: np.ndarray | None = None,
        groups: np.ndarray | None = None,
        label_silhouette: np.ndarray | None = None,
    ) -> None:
        self.key, self.X, self.labels, self.batch = key, X, labels, batch
        self.neighbors, self.n_neighbors, self.n_jobs = neighbors, n_neighbors, n_jobs
        self.pre_integrated, self.negcon, self.groups = pre_integrated, negcon, groups
        self._cache: dict[Any, Any] = {}
        if label_silhouette is not None:
            self._cache["label_silhouette"] = label_silhouette

    def knn(self, use: str) -> Neighbors:
        """The kNN graph cut to the neighbourhood size of ``use`` (``"connectivity"``, ``"kbet"``, ``"lisi"``)."""
        nn = self.neighbors
        k = min(self.n_neighbors[KNN_USES[use]], nn.n_neighbors)
        return nn if k == nn.n_neighbors else nn.subset_neighbors(k)

    def label_silhouette(self) -> np.ndarray:
        """Per-observation label silhouettes (nearest-cluster), computed once per embedding."""
        if "label_silhouette" not in self._cache:
            codes, L = codes_of(self.labels)
            S = cluster_distance_sums(self.X, codes, L, n_jobs=self.n_jobs)
            self._cache["label_silhouette"] = silhouette_from_sums(S, codes, "nearest")
        return self._cache["label_silhouette"]

    def lisi_weights(self, perplexity: float | None) -> tuple[Neighbors, np.ndarray, np.ndarray]:
        """``(neighbors, P, H)`` of the LISI neighbourhoods, shared by cLISI and iLISI."""
        key = ("lisi", perplexity)
        if key not in self._cache:
            nn = self.knn("lisi")
            perp = np.floor(nn.n_neighbors / 3) if perplexity is None else perplexity
            self._cache[key] = (nn, *lisi_probabilities(nn.distances, nn.indices, perp))
        return self._cache[key]
