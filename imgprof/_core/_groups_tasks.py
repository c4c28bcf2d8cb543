"""Task splitting of :mod:`imgprof._core.groups`: (groups x columns) tasks run on a thread pool."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def median_tasks(starts: np.ndarray, p: int, block_size: int | None, jobs: int) -> list:
    """Split (groups x columns) into tasks: row-balanced group chunks, column blocks
    sized so that one gather buffer stays under ~64 MB."""
    n_groups = starts.shape[0] - 1
    maxlen = int(np.diff(starts).max()) if n_groups else 1
    cols = block_size or max(1, min(p, (8 << 20) // max(maxlen, 1)))
    col_blocks = column_blocks(p, cols)
    n_chunks = 1 if jobs == 1 else max(1, min(n_groups, 4 * jobs))
    if n_chunks > 1:
        targets = np.linspace(0, starts[-1], n_chunks + 1)[1:-1]
        cuts = np.unique(np.searchsorted(starts, targets).clip(1, n_groups - 1))
        edges = np.concatenate([[0], cuts, [n_groups]])
    else:
        edges = np.array([0, n_groups])
    group_chunks = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    return [(gc, cb) for gc in group_chunks for cb in col_blocks]


def resolve_jobs(n_jobs: int | None, n_blocks: int) -> int:
    if n_jobs is None or n_jobs <= 0:
        n_jobs = os.cpu_count() or 1
    return max(1, min(n_jobs, n_blocks))


def run_tasks(run, tasks: list, n_jobs: int | None, total: np.ndarray | None = None) -> None:
    """Run ``run(task)`` for every task, on up to ``n_jobs`` threads; add the results into ``total``."""
    jobs = resolve_jobs(n_jobs, len(tasks))
    results: Iterator
    if jobs == 1:
        results = map(run, tasks)
    else:
        ex = ThreadPoolExecutor(jobs)
        results = ex.map(run, tasks)
    try:
        for r in results:
            if total is not None:
                total += r
    finally:
        if jobs != 1:
            ex.shutdown()


def column_blocks(p: int, block_size: int) -> list[tuple[int, int]]:
    return [(c, min(c + block_size, p)) for c in range(0, p, block_size)] or [(0, 0)]
