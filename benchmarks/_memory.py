"""Peak-memory helpers shared by the benchmark scripts (Linux /proc, with a getrusage fallback)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def rss_kb(field: str = "VmRSS") -> int:
    """Current resident memory (``VmRSS``) or its high-water mark (``VmHWM``) of this process, in kB."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``, ``RssAnon``, ...) in MiB; NaN where absent."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> int:
    """Reset the process's ``VmHWM`` to its current RSS (where the kernel allows) and return that RSS in kB."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return rss_kb()


def timed_runs(run: Callable[[Any], Any], repeats: int, *, prepare: Callable[[], Any] | None = None,
               budget_s: float = float("inf")) -> tuple[list[float], list[float], int, Any]:
    """Time ``run(prepare())`` up to ``repeats`` times, stopping once the runs took more than ``budget_s`` in all.

    ``prepare`` (untimed; ``None`` passes ``None``) builds each run's input. Returns the wall and CPU
    seconds of every run, the peak RSS growth (kB) of the last run over its start, and its result.
    """
    times: list[float] = []
    cpus: list[float] = []
    peak, out = 0, None
    for _ in range(repeats):
        arg = prepare() if prepare is not None else None
        base = reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        out = run(arg)
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        peak = max(0, rss_kb("VmHWM") - base)
        if sum(times) > budget_s:
            break
    return times, cpus, peak, out
