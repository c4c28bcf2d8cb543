"""The 'How measured' paragraph every benchmark table carries (issue #17).

A reviewer checks a side-by-side number by four facts: both tools start from the same point (the same
file on disk, or each tool's own in-memory container built outside the timed region), they do the same
work (the same metric or method set), what warm-up is excluded (or included, and why), and the pandas
copy-on-write mode (importing pycytominer turns it on for the whole process; pandas 3 makes it the
default). Each benchmark script states them through :func:`how_measured`.
"""

from __future__ import annotations


def cow_mode() -> str:
    """'on' or 'off': pandas' copy-on-write mode in this process."""
    import pandas as pd

    return "on" if pd.options.mode.copy_on_write is True else "off"


def how_measured(*, start: str, same_work: str, warmup: str, repeats: str, cow: str) -> str:
    """One markdown paragraph: same starting point, same work, warm-up, repeats, copy-on-write mode."""
    return (
        f"**How measured.** *Same starting point:* {start} *Same work:* {same_work} *Warm-up:* {warmup} "
        f"*Repeats:* {repeats} *pandas copy-on-write:* {cow}"
    )
