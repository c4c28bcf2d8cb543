"""The metric sets of the Benchmarker, built from the metric registry (one field per registered metric).

Each field is ``True`` (run with defaults), ``False`` (skip), ``None`` (run when
its required inputs are given) or a dict of keyword arguments for the metric.
"""

from __future__ import annotations

import inspect
from dataclasses import field, fields, make_dataclass
from typing import Any

from . import _metrics  # noqa: F401  (registers the metrics before the sets are built)
from ._registry import BATCH, BENCH_METRICS, BIO

MetricType = bool | dict[str, Any] | None


def _base(kind: str, name: str) -> Any:
    entries = [e for e in BENCH_METRICS.entries() if e["type"] == kind]
    return make_dataclass(name, [(e.name, MetricType, field(default=e["default"])) for e in entries], frozen=True)


def _field_docs(kind: str) -> str:
    lines = []
    for e in BENCH_METRICS.entries():
        if e["type"] == kind:
            summary = inspect.cleandoc(e.obj.__doc__ or "").split("\n\n")[0].replace("\n", " ")
            lines.append(f"{e.name}\n    {summary}")
    return "\n".join(lines)


def _fill(cls: type, kind: str) -> type:
    cls.__doc__ = (cls.__doc__ or "").replace("    {fields}", "\n".join(
        "    " + line if line else line for line in _field_docs(kind).splitlines()))
    return cls


_BioBase: Any = _base(BIO, "BioConservation")
_BatchBase: Any = _base(BATCH, "BatchCorrection")


class BioConservation(_BioBase):
    """Which biology-conservation metrics to run: one field per registered bio-conservation metric.

    ``map_negcon=None`` (default) runs it exactly when the Benchmarker is given
    ``negcon``; :meth:`scib_metrics` gives scib-metrics' default set (see the module
    docstring for the field values).

    Attributes
    ----------
    {fields}

    Examples
    --------
    >>> import imgprof as ip
    >>> ip.bench.BioConservation(map_nonrep=False).map_nonrep
    False
    """

    @classmethod
    def scib_metrics(cls) -> BioConservation:
        """scib-metrics 0.5 defaults: isolated labels, k-means NMI/ARI, silhouette label, cLISI."""
        return cls(nmi_ari_cluster_labels_leiden=False, map_nonrep=False, map_negcon=False)

    @classmethod
    def arevalo2024(cls) -> BioConservation:
        """The biology metrics of Arevalo et al. 2024: Leiden NMI/ARI, silhouette label, cLISI, isolated labels, mAP."""
        return cls(nmi_ari_cluster_labels_kmeans=False, map_nonrep=True, map_negcon=True)


class BatchCorrection(_BatchBase):
    """Which batch-removal metrics to run; each field ``True``, ``False`` or a dict of the metric's options.

    ``silhouette_batch`` (scib's classic batch ASW) is off by default, as in
    scib-metrics ≥ 0.5.6 which replaced it with BRAS; :meth:`arevalo2024` turns it on.

    Attributes
    ----------
    {fields}

    Examples
    --------
    >>> from imgprof.bench import BatchCorrection
    >>> bc = BatchCorrection(kbet_per_label=False)
    >>> (bc.kbet_per_label, bc.bras, bc.silhouette_batch)
    (False, True, False)
    """

    @classmethod
    def scib_metrics(cls) -> BatchCorrection:
        """scib-metrics 0.5 defaults: BRAS, iLISI, kBET, graph connectivity, PCR comparison."""
        return cls()

    @classmethod
    def arevalo2024(cls) -> BatchCorrection:
        """The batch metrics of Arevalo et al. 2024: silhouette batch, iLISI, kBET, graph connectivity, PCR."""
        return cls(silhouette_batch=True, bras=False)


_fill(BioConservation, BIO)
_fill(BatchCorrection, BATCH)


#: The default metric sets (shared: the sets are frozen).
DEFAULT_BIO = BioConservation()
DEFAULT_BATCH = BatchCorrection()


def enabled(spec: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(metric, kwargs)`` for every metric switched on in a metric set (``None``: none).

    Parameters
    ----------
    spec
        A :class:`BioConservation` or :class:`BatchCorrection`, or ``None``.

    Returns
    -------
    list
        ``(name, keyword arguments)`` in field order.

    Examples
    --------
    >>> from imgprof.bench._sets import BatchCorrection, enabled
    >>> [name for name, _ in enabled(BatchCorrection())]
    ['bras', 'ilisi_knn', 'kbet_per_label', 'graph_connectivity', 'pcr_comparison']
    """
    if spec is None:
        return []
    out = []
    for f in fields(spec):
        v = getattr(spec, f.name)
        if v is None or v is False:
            continue
        out.append((f.name, dict(v) if isinstance(v, dict) else {}))
    return out
