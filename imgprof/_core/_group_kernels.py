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
    # In-place quickselect: after return a[k] is the k-th smallest of a[lo:hi],
    # everything left of k is <= a[k], everything right is >= a[k].
    hi = hi - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        # median of three pivot
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return


@_jit
def _median(a, m):  # pragma: no cover - compiled
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
def _bracket_median(a, m, tmp, samp):  # pragma: no cover - compiled
    # Median of a[:m] (no NaN). Large inputs: bracket the median between two
    # order statistics of a regular sample, keep only the values inside the
    # bracket (one branch-free pass) and select there; falls back to quickselect.
    if m < 512:
        return _median(a, m)
    k = m // 2
    ns = int(np.sqrt(m)) * 2 + 16
    if ns > samp.shape[0]:
        ns = samp.shape[0]
    step = m / ns
    for t in range(ns):
        samp[t] = a[int(t * step)]
    sv = np.sort(samp[:ns])
    pos = (k + 0.5) * ns / m
    half = 2.5 * np.sqrt(ns * 0.25) + 2.0
    ilo = int(pos - half)
    ihi = int(pos + half) + 1
    if ilo < 0 or ihi >= ns:
        return _median(a, m)
    lo = sv[ilo]
    hi = sv[ihi]
    below = 0
    c = 0
    for t in range(m):
        v = a[t]
        below += v < lo
        tmp[c] = v
        c += (v >= lo) & (v <= hi)
    kk = k - below
    if kk < 1 or kk >= c:
        return _median(a, m)
    _select(tmp, 0, c, kk)
    h = tmp[kk]
    if m % 2 == 1:
        return h
    low = tmp[0]
    for t in range(1, kk):
        if tmp[t] > low:
            low = tmp[t]
    return (low + h) / 2.0


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
    tmp = np.empty(maxlen, dtype=np.float64)
    samp = np.empty(int(np.sqrt(maxlen)) * 2 + 16, dtype=np.float64)
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
            med = _bracket_median(row, mm, tmp, samp)
            out[g, c0 + j] = med
            if want_mad:
                for t in range(mm):
                    row[t] = abs(row[t] - med)
                mad[g, c0 + j] = _bracket_median(row, mm, tmp, samp)


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
