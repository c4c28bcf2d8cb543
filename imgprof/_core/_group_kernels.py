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
    # faster than Hoare's); when the pivot is the range's minimum a second pass gathers
    # the values equal to it, so runs of ties (discrete features) cannot make it
    # quadratic. Small ranges: insertion sort.
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
        if i > lo:  # progress: go on right of the values below the pivot
            lo = i
            continue
        # nothing below the pivot (it is the range's minimum): gather the values equal to it,
        # so runs of ties cannot stall the selection
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
def _median_select(a, m):  # pragma: no cover - compiled
    # Median of a[:m] (no NaN) by quickselect; reorders a. Even m: mean of the two middle values.
    return _median_select_at(a, m, m // 2, m % 2 == 0)


#: Below this many values the plain quickselect is faster than the sample filter.
_FILTER_MIN = 600


@_jit
def _median(a, m, tmp, samp):  # pragma: no cover - compiled
    # Median of a[:m] (no NaN); may reorder a. Large m: pick two bounds p1 <= p2 bracketing
    # the median from an evenly spaced sample, copy the values in [p1, p2] to tmp in one
    # branch-free pass (counting those below p1) and select there: about one pass over
    # the data instead of the ~3 of quickselect. If the bracket misses the middle rank(s)
    # (rare) fall back to quickselect. Exact either way.
    if m < _FILTER_MIN:
        return _median_select(a, m)
    k = m // 2
    s = samp.shape[0]
    step = m / s
    for t in range(s):
        samp[t] = a[int(t * step)]
    half = 0.75 * np.sqrt(s) + 1.0  # 1.5 sample standard deviations of the middle rank
    r1 = int(0.5 * s - half)
    r2 = int(0.5 * s + half)
    r1 = max(r1, 0)
    r2 = min(r2, s - 1)
    _select(samp, 0, s, r1)
    p1 = samp[r1]
    _select(samp, r1, s, r2)
    p2 = samp[r2]
    below = 0
    n_in = 0
    for t in range(m):
        x = a[t]
        below += x < p1
        tmp[n_in] = x
        n_in += (x >= p1) & (x <= p2)
    klo = k - 1 if m % 2 == 0 else k
    if below <= klo and k < below + n_in:
        return _median_select_at(tmp, n_in, k - below, m % 2 == 0)
    return _median_select(a, m)


@_jit
def _median_select_at(a, n, kk, even):  # pragma: no cover - compiled
    # kk-th smallest of a[:n]; with even=True the mean of the (kk-1)-th and kk-th.
    _select(a, 0, n, kk)
    hi = a[kk]
    if not even:
        return hi
    lo = a[0]
    for t in range(1, kk):
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
    tmp = np.empty(maxlen, dtype=np.float64)
    samp = np.empty(64, dtype=np.float64)
    for g in range(g0, g1):
        a = starts[g]
        m = starts[g + 1] - a
        # Eight rows at a time: eight independent memory streams (rows in random order are
        # read faster) and eight adjacent writes, one buffer cache line, per column.
        fin = 0.0
        i = 0
        while i + 8 <= m:
            r0 = order[a + i]
            r1 = order[a + i + 1]
            r2 = order[a + i + 2]
            r3 = order[a + i + 3]
            r4 = order[a + i + 4]
            r5 = order[a + i + 5]
            r6 = order[a + i + 6]
            r7 = order[a + i + 7]
            for j in range(ncol):
                c = c0 + j
                v0 = np.float64(X[r0, c])
                v1 = np.float64(X[r1, c])
                v2 = np.float64(X[r2, c])
                v3 = np.float64(X[r3, c])
                v4 = np.float64(X[r4, c])
                v5 = np.float64(X[r5, c])
                v6 = np.float64(X[r6, c])
                v7 = np.float64(X[r7, c])
                buf[j, i] = v0
                buf[j, i + 1] = v1
                buf[j, i + 2] = v2
                buf[j, i + 3] = v3
                buf[j, i + 4] = v4
                buf[j, i + 5] = v5
                buf[j, i + 6] = v6
                buf[j, i + 7] = v7
                # NaN once any value is NaN or inf
                fin += ((v0 - v0) + (v1 - v1) + (v2 - v2) + (v3 - v3)) + ((v4 - v4) + (v5 - v5) + (v6 - v6) + (v7 - v7))
            i += 8
        while i < m:
            r = order[a + i]
            for j in range(ncol):
                v = np.float64(X[r, c0 + j])
                buf[j, i] = v
                fin += v - v
            i += 1
        bad = not (fin == 0.0)  # noqa: SIM201  (True for NaN and inf sums; kept as written)
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
            med = _median(row, mm, tmp, samp)
            out[g, c0 + j] = med
            if want_mad:
                if not (med - med == 0.0):  # noqa: SIM201  (median is +-inf or NaN)
                    # median is +-inf: |x - inf| would hold NaN (inf - inf) and stall the selection
                    mad[g, c0 + j] = np.nan
                    continue
                for t in range(mm):
                    row[t] = abs(row[t] - med)
                mad[g, c0 + j] = _median(row, mm, tmp, samp)


@nb.njit(inline="always")
def _moments_pass(X, codes, c0, c1, mean, s1, s2, mn, mx, cnt, sqdev, want_minmax, n_inf):  # pragma: no cover
    # The loop both moment kernels share: rows of groups >= 0, columns c0:c1, NaN skipped. sqdev=False:
    # sums, counts, ±inf counts (and min/max); sqdev=True: squared deviations from ``mean``. Inlined into
    # each kernel with ``sqdev`` a constant, so the compiled loops are the separate ones they replace.
    n = X.shape[0]
    for i in range(n):
        g = codes[i]
        if g < 0:
            continue
        for j in range(c0, c1):
            v = np.float64(X[i, j])
            if v == v:
                if sqdev:
                    d = v - mean[g, j]
                    s2[g, j] += d * d
                    continue
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
def moments_kernel(X, codes, c0, c1, s1, mn, mx, cnt, want_minmax, n_inf):  # pragma: no cover - compiled
    # Per group and column: sum and count of the non-NaN values (and min/max); ±inf counted per column.
    _moments_pass(X, codes, c0, c1, s1, s1, s1, mn, mx, cnt, False, want_minmax, n_inf)


@_jit
def sqdev_kernel(X, codes, c0, c1, mean, s2):  # pragma: no cover - compiled
    # Per group and column: sum of squared deviations of the non-NaN values from ``mean``.
    unused = np.empty((1, 1), dtype=np.int64)
    _moments_pass(X, codes, c0, c1, mean, mean, s2, mean, mean, unused, True, False, unused[0])


@_jit
def place_rows_kernel(tmp, dest, out):  # pragma: no cover - compiled
    # out[dest[i], :] = tmp[i, :] where dest[i] >= 0: rows read in file order placed in group order.
    # Blocks of 256 rows: the destination rows of a block stay in cache while every column is copied.
    n, w = tmp.shape
    for b0 in range(0, n, 256):
        b1 = min(b0 + 256, n)
        for j in range(w):
            for i in range(b0, b1):
                d = dest[i]
                if d >= 0:
                    out[d, j] = tmp[i, j]


@_jit
def var_absmax_kernel(X, s1, s2, cnt, low, high):  # pragma: no cover - compiled
    # Column summaries of a C-ordered matrix for imgprof._core.guardrails (one group: no codes).
    # Branch-free inner loops over the columns, so LLVM vectorises them; rows are accumulated in
    # order, which gives exactly the sums of np.nansum(X, axis=0) and hence of np.nanvar.
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
