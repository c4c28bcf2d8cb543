"""Peak-memory helpers shared by the benchmark scripts (Linux /proc, with a getrusage fallback)."""

from __future__ import annotations


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


def reset_peak() -> int:
    """Reset the process's ``VmHWM`` to its current RSS (where the kernel allows) and return that RSS in kB."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return rss_kb()
