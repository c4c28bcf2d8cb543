"""Compiled (numba) column summaries behind :mod:`imgprof._core.guardrails`.

Imported lazily (numba is optional). Branch-free inner loops over the columns of a
C-ordered matrix, so LLVM vectorises them; rows are accumulated in order, which gives
exactly the sums of ``np.nansum(X, axis=0)`` and hence of ``np.nanvar``.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(nogil=True, cache=True)
def var_absmax_kernel(X, s1, s2, cnt, low, high):  # pragma: no cover - compiled
    # pass 1: per-column sum, count, min and max of the non-NaN values
    n, d = X.shape
    for i in range(n):
        for j in range(d):
            v = X[i, j]
            ok = v == v
            s1[j] += v if ok else 0.0
            cnt[j] += 1 if ok else 0
            low[j] = min(low[j], v if ok else np.inf)
            high[j] = max(high[j], v if ok else -np.inf)
    mean = s1 / np.maximum(cnt, 1)
    # pass 2: per-column sum of squared deviations from the mean (numerically stable)
    for i in range(n):
        for j in range(d):
            v = X[i, j]
            dv = v - mean[j]
            s2[j] += dv * dv if v == v else 0.0
