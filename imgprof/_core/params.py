"""Checks of scalar parameters (integers, reals, choices, booleans), naming the parameter at fault.

Re-exported by :mod:`imgprof._core.validation`, where most callers import them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .docs import doc_params

_doc = doc_params(
    value="value\n    The value given by the user.",
    param="param\n    Its name, used in error messages.",
    allow_none="allow_none\n    Accept ``None`` (returned unchanged).",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _bounds(min_value, max_value, include_min=True, include_max=True) -> str:
    lo = "" if min_value is None else f"{'>=' if include_min else '>'} {min_value}"
    hi = "" if max_value is None else f"{'<=' if include_max else '<'} {max_value}"
    return " and ".join(t for t in (lo, hi) if t) or "any value"


@_doc
def check_int(
    value: Any, param: str, *, min_value: int | None = None, max_value: int | None = None, allow_none: bool = False
) -> int | None:
    """Check an integer parameter and return it as ``int``.

    Parameters
    ----------
    {value}
    {param}
    min_value, max_value
        Inclusive bounds (``None``: unbounded).
    {allow_none}

    Returns
    -------
    int or None
        The checked value.

    Raises
    ------
    TypeError
        Not an integer (``5.7``, ``"30"``, ``True``...).
    ValueError
        Out of bounds.

    Examples
    --------
    >>> from imgprof._core.params import check_int
    >>> check_int(15, "n_neighbors", min_value=1)
    15
    """
    if value is None and allow_none:
        return None
    if not _is_int(value):
        if isinstance(value, (float, np.floating)) and float(value).is_integer() and np.isfinite(value):
            value = int(value)
        else:
            raise TypeError(
                f"{param} must be an integer ({_bounds(min_value, max_value)}), got {value!r} ({type(value).__name__})."
            )
    value = int(value)
    if (min_value is not None and value < min_value) or (max_value is not None and value > max_value):
        raise ValueError(f"{param} must be an integer {_bounds(min_value, max_value)}, got {value}.")
    return value


@_doc
def check_float(
    value: Any,
    param: str,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    include_min: bool = True,
    include_max: bool = True,
    allow_none: bool = False,
) -> float | None:
    """Check a finite real parameter and return it as ``float``.

    Parameters
    ----------
    {value}
    {param}
    min_value, max_value
        Bounds (``None``: unbounded).
    include_min, include_max
        Whether the bounds themselves are allowed.
    {allow_none}

    Returns
    -------
    float or None
        The checked value.

    Raises
    ------
    TypeError
        Not a real number (a string, a bool...).
    ValueError
        NaN, inf or out of bounds.

    Examples
    --------
    >>> from imgprof._core.params import check_float
    >>> check_float(0.05, "alpha", min_value=0, max_value=1, include_min=False)
    0.05
    """
    if value is None and allow_none:
        return None
    if not _is_real(value):
        bounds = _bounds(min_value, max_value, include_min, include_max)
        raise TypeError(f"{param} must be a number ({bounds}), got {value!r} ({type(value).__name__}).")
    value = float(value)
    bad = not np.isfinite(value)
    if min_value is not None:
        bad |= value < min_value if include_min else value <= min_value
    if max_value is not None:
        bad |= value > max_value if include_max else value >= max_value
    if bad:
        bounds = _bounds(min_value, max_value, include_min, include_max)
        raise ValueError(f"{param} must be a finite number {bounds}, got {value!r}.")
    return value


@_doc
def check_choice(value: Any, param: str, choices: Sequence[Any], *, allow_none: bool = False):
    """Check that ``value`` is one of ``choices`` and return it.

    Parameters
    ----------
    {value}
    {param}
    choices
        The allowed values.
    {allow_none}

    Returns
    -------
    object
        ``value``.

    Raises
    ------
    ValueError
        Naming the parameter and the allowed values.

    Examples
    --------
    >>> from imgprof._core.params import check_choice
    >>> check_choice("pearson", "method", ["pearson", "spearman"])
    'pearson'
    """
    if value is None and allow_none:
        return None
    try:
        ok = value in list(choices)
    except TypeError:
        ok = False
    if not ok or isinstance(value, (bool, np.bool_)) and not any(isinstance(c, bool) for c in choices):
        raise ValueError(f"{param} must be one of {list(choices)}, got {value!r}.")
    return value


@_doc
def check_bool(value: Any, param: str) -> bool:
    """Check a True/False parameter (``0``/``1``/strings are refused).

    Parameters
    ----------
    {value}
    {param}

    Returns
    -------
    bool
        ``value``.

    Examples
    --------
    >>> from imgprof._core.params import check_bool
    >>> check_bool(True, "dropna")
    True
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{param} must be True or False, got {value!r} ({type(value).__name__}).")
    return bool(value)
