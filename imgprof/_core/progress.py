"""Progress inside long single steps (one shared helper, off by default).

Library calls stay silent: no bar appears in tests or notebooks unless asked for,
with the context manager :func:`show_progress` (``imgprof run`` turns it on unless
``--no-progress``) or :func:`set_progress`. Long steps (reading a CellProfiler
SQLite, ``ip.pp.aggregate`` from a file, ``ip.im.profile_images``, the first
approximate ``ip.tl.neighbors``) then report through :func:`progress_bar` and
:func:`progress_message`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from typing import Any

_STATE = {"enabled": False}


def progress_enabled() -> bool:
    """Whether long steps currently show progress (default: ``False``)."""
    return bool(_STATE["enabled"])


def set_progress(enabled: bool) -> bool:
    """Switch progress of long steps on or off for the session; returns the previous setting."""
    previous = bool(_STATE["enabled"])
    _STATE["enabled"] = bool(enabled)
    return previous


@contextlib.contextmanager
def show_progress(enabled: bool = True) -> Iterator[None]:
    """Show (or hide, ``enabled=False``) the progress of long steps inside the ``with`` block.

    Library calls are silent by default; inside this block, reading a CellProfiler SQLite,
    ``ip.pp.aggregate`` from a file, ``ip.im.profile_images`` and the first approximate
    ``ip.tl.neighbors`` show progress bars (tqdm, on stderr). ``imgprof run`` turns it on.

    Parameters
    ----------
    enabled
        ``True`` shows the bars inside the block, ``False`` hides them.

    Returns
    -------
    contextlib.AbstractContextManager
        A context manager; the previous setting is restored when the block ends.

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof._core.progress import progress_enabled
    >>> with ip.show_progress():
    ...     progress_enabled()
    True
    >>> progress_enabled()
    False
    """
    previous = set_progress(enabled)
    try:
        yield
    finally:
        set_progress(previous)


class _Silent:
    """Stand-in for a disabled bar (no tqdm import, no output)."""

    n = 0

    def __init__(self, iterable: Iterable | None = None) -> None:
        self._it = iterable

    def __iter__(self):
        return iter(self._it if self._it is not None else ())

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
                 unit: str = "it", progress: bool | None = None) -> Any:
    """A tqdm bar over ``iterable`` (or a manual one with ``total``), shown only when progress is on.

    ``progress=None`` follows the session setting (:func:`show_progress`); ``True`` /
    ``False`` override it. Bars go to stderr and are cleared when done.
    """
    on = progress_enabled() if progress is None else bool(progress)
    if not on:
        return _Silent(iterable)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)


def progress_message(msg: str, *, progress: bool | None = None) -> None:
    """Print one line to stderr (above any bar) when progress is on."""
    on = progress_enabled() if progress is None else bool(progress)
    if on:
        from tqdm.auto import tqdm

        tqdm.write(f"imgprof: {msg}", file=sys.stderr)
