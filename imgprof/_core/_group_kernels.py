"""Compiled (numba) kernels behind :mod:`imgprof._core.groups`.

Imported lazily (numba is optional); ``nogil`` so that threads can share the
work, ``cache=True`` so the compilation (a few seconds) happens once per install.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_jit = nb.njit(nogil=True, cache=True)


@_jit
def _select(a, lo, hi, k):  # pragma: no cover - compiled
    # In-place selection: afterwards a[k] is the k-th smallest of a[lo:hi] and every
    # element left of k is <= a[k]. Quickselect with a median-of-3 pivot and a
    # branch-free Lomuto partition (no mispredicted branches on random data, ~3x
    # faster than Hoare's); a second pass gathers values equal to the pivot, so runs
    # of ties (discrete features) cannot make it quadratic. Small ranges: insertion sort.
    while hi - lo > 16:
        m = (lo + hi) >> 1
        x = a[lo]
        y = a[m]
        z = a[hi - 1]
        if x > y:
            x, y = y, x
        if y > z:
            y = z
            if x > y:
                y = x
        pivot = y
        i = lo
        for j in range(lo, hi):
            t = a[j]
            c = t < pivot
            a[j] = a[i]
            a[i] = t
            i += c
        if k < i:
            hi = i
            continue
        i2 = i
        for j in range(i, hi):
            t = a[j]
            c = t <= pivot
            a[j] = a[i2]
            a[i2] = t
            i2 += c
        if k < i2:  # a[i:i2] all equal the pivot
            a[k] = pivot
            return
        lo = i2
    for i in range(lo + 1, hi):
        t = a[i]
        j = i - 1
        while j >= lo and a[j] > t:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = t


@_jit
def _median(a, m):  # pragma: no cover - compiled
    # Median of a[:m] (no NaN); reorders a. Even m: mean of the two middle values.
    k = m // 2
    _select(a, 0, m, k)
    hi = a[k]
    if m % 2 == 1:
        return hi
    lo = a[0]
    for t in range(1, k):
        if a[t] > lo:
            lo = a[t]
    return (lo + hi) / 2.0


@_jit
def median_kernel(X, order, starts, g0, g1, c0, c1, out, mad, want_mad, n_inf):  # pragma: no cover - compiled
    # Groups g0..g1-1, columns c0..c1-1. Rows of a group are gathered once into a
    # (columns x rows) buffer, then each column's values are contiguous.
    ncol = c1 - c0
    maxlen = 1
    for g in range(g0, g1):
        ln = starts[g + 1] - starts[g]
        if ln > maxlen:
            maxlen = ln
    buf = np.empty((ncol, maxlen), dtype=np.float64)
    for g in range(g0, g1):
        a = starts[g]
        m = starts[g + 1] - a
        bad = False
        for i in range(m):
            r = order[a + i]
            for j in range(ncol):
                v = np.float64(X[r, c0 + j])
                buf[j, i] = v
                if not (v - v == 0.0):
                    bad = True
        for j in range(ncol):
            row = buf[j]
            mm = m
            if bad:
                kept = 0
                for t in range(m):
                    v = row[t]
                    if v == v:
                        if v - v != 0.0:
                            n_inf[c0 + j] += 1
                        row[kept] = v
                        kept += 1
                mm = kept
            if mm == 0:
                out[g, c0 + j] = np.nan
                if want_mad:
                    mad[g, c0 + j] = np.nan
                continue
            med = _median(row, mm)
            out[g, c0 + j] = med
            if want_mad:
                if not (med - med == 0.0):
                    # median is +-inf: |x - inf| would hold NaN (inf - inf) and stall the selection
                    mad[g, c0 + j] = np.nan
                    continue
                for t in range(mm):
                    row[t] = abs(row[t] - med)
                mad[g, c0 + j] = _median(row, mm)


@_jit
def moments_kernel(X, codes, c0, c1, s1, s2, mn, mx, cnt, want_m2, want_minmax, n_inf):  # pragma: no cover
    n = X.shape[0]
    for i in range(n):
        g = codes[i]
        if g < 0:
            continue
        for j in range(c0, c1):
            v = np.float64(X[i, j])
            if v == v:
                if v == np.inf or v == -np.inf:
                    n_inf[j] += 1
                s1[g, j] += v
                cnt[g, j] += 1
                if want_minmax:
                    if v < mn[g, j]:
                        mn[g, j] = v
                    if v > mx[g, j]:
                        mx[g, j] = v


@_jit
def sqdev_kernel(X, codes, c0, c1, mean, s2):  # pragma: no cover - compiled
    n = X.shape[0]
    for i in range(n):
        g = codes[i]
        if g < 0:
            continue
        for j in range(c0, c1):
            v = np.float64(X[i, j])
            if v == v:
                d = v - mean[g, j]
                s2[g, j] += d * d
