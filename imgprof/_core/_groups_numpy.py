"""numpy fallbacks of :mod:`imgprof._core.groups` (used when numba is unavailable or disabled)."""

from __future__ import annotations

import warnings

import numpy as np


def np_median_block(Xb: np.ndarray, starts: np.ndarray, want_mad: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Xb: rows already in group order (a copy of one column block)."""
    n_groups = starts.shape[0] - 1
    p = Xb.shape[1]
    med = np.full((n_groups, p), np.nan)
    mad = np.full((n_groups, p), np.nan) if want_mad else None
    has_nan = np.isnan(Xb).any()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN, handled by callers
        for g in range(n_groups):
            a, b = starts[g], starts[g + 1]
            if b <= a:
                continue
            seg = Xb[a:b]
            f = np.nanmedian if has_nan else np.median
            m = f(seg, axis=0)
            med[g] = m
            if mad is not None:
                mad[g] = f(np.abs(seg - m), axis=0)
    return med, mad
