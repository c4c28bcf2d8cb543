"""What a public namespace (``ip.pp``, ``ip.io``...) shows to ``dir()`` and tab completion."""

from __future__ import annotations

from collections.abc import Callable


def public_dir(names: list[str]) -> Callable[[], list[str]]:
    """A module ``__dir__`` that lists the public API only (no submodule or import leftovers).

    Parameters
    ----------
    names
        The namespace's ``__all__`` (the list itself: names added to it later are listed too).

    Returns
    -------
    callable
        To assign to the module's ``__dir__``; returns ``sorted(names)``.

    Examples
    --------
    >>> __all__ = ["simulate", "nelisa"]
    >>> __dir__ = public_dir(__all__)
    >>> __all__ += ["cmqtl_crispri"]
    >>> __dir__()
    ['cmqtl_crispri', 'nelisa', 'simulate']
    """

    def __dir__() -> list[str]:
        return sorted(names)

    return __dir__
