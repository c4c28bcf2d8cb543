"""Docstring text shared by the benchmark metrics (``@doc_params(**BENCH_DOC)``)."""

from __future__ import annotations

#: Parameter descriptions repeated across :mod:`imgprof.bench` metric functions.
BENCH_DOC: dict[str, str] = {
    "X_embedding": "X\n    Embedding ``(n_obs, n_dims)``.",
    "X_neighbors": "X\n    Neighbour graph from :func:`imgprof.bench.knn` (a :class:`~imgprof.bench.Neighbors`).",
    "labels": "labels\n    Label of every observation.",
    "batch": "batch\n    Batch of every observation.",
    "batches": "batches\n    Batch of every observation.",
    "lisi_perplexity": "perplexity\n    LISI perplexity (default ``n_neighbors // 3``).",
    "n_jobs": "n_jobs\n    Threads for the distance computations.",
}
