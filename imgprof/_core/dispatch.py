"""A dask-array type for :func:`functools.singledispatch`, without importing dask.

Register the dask implementation of a statistic on :class:`DaskArray`::

    @singledispatch
    def na_fraction(X, n_rows): ...          # numpy

    @na_fraction.register(DaskArray)
    def _(X, n_rows): ...                    # dask

``DaskArray`` is an abstract class that ``dask.array.Array`` counts as a
subclass of (by its module and name), so ``import imgprof`` never imports dask
and numpy arrays never reach the dask implementation (as ``scanpy.get.aggregate``
dispatches, without its import of dask).
"""

from __future__ import annotations

import abc
from typing import Any

__all__ = ["DaskArray", "to_numpy"]


class DaskArray(abc.ABC):  # noqa: B024 - a marker: no abstract methods, only the subclass hook
    """``dask.array.Array`` and its subclasses, recognised without importing dask."""

    @classmethod
    def __subclasshook__(cls, C: type) -> Any:
        for base in C.__mro__:
            if base.__name__ == "Array" and base.__module__.startswith("dask.array"):
                return True
        return NotImplemented


def to_numpy(X: Any) -> Any:
    """``X`` as a numpy array (a dask array is computed)."""
    import numpy as np

    return np.asarray(X.compute()) if isinstance(X, DaskArray) else np.asarray(X)  # type: ignore[attr-defined]
