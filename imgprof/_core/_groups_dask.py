"""The dask side of :mod:`imgprof._core.groups`: one task per row chunk re-chunked on group boundaries."""

from __future__ import annotations

import numpy as np

from .groups import group_median_mad, group_reduce, raise_inf, sort_groups
from .validation import check_numeric


def median_mad_dask(
    X, codes: np.ndarray, n_groups: int, *, want_mad: bool, mad_scale: float, min_count: int, inf: str,
    var_names, what: str, block_size: int | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`~imgprof._core.groups.group_median_mad` of a dask array: one task per row chunk."""
    if not want_mad:
        med = group_reduce_dask(
            X, codes, n_groups, "median", min_count=min_count, inf=inf, var_names=var_names, what=what,
            block_size=block_size,
        )
        return med, None

    def _both(block, c_local, n_local):
        m, d = group_median_mad(
            np.asarray(block), c_local, n_local, mad_scale=mad_scale, min_count=min_count, inf="propagate",
            n_jobs=1, block_size=block_size,
        )
        return np.concatenate([m, d], axis=1)

    check_numeric(X, param=what)
    p = X.shape[1]
    if inf == "raise" and X.dtype.kind == "f":
        import dask.array as da

        both, n_inf = dask_by_chunks(X, codes, n_groups, _both, out_factor=2, extra=da.isinf(X).sum(axis=0))
        raise_inf(np.asarray(n_inf), var_names, what)
    else:
        both = dask_by_chunks(X, codes, n_groups, _both, out_factor=2)
    return both[:, :p], both[:, p:]


def _aligned_row_chunks(starts: np.ndarray, old_chunks: tuple[int, ...]) -> tuple[int, ...]:
    """Row chunk sizes whose boundaries fall on group starts, close to the old boundaries."""
    total = int(starts[-1])
    bounds = np.cumsum(old_chunks)[:-1]
    group_starts = np.unique(starts)
    # snap every old boundary to the next group start (a group is never split)
    pos = np.searchsorted(group_starts, bounds, side="left")
    pos = np.clip(pos, 0, len(group_starts) - 1)
    snapped = np.unique(group_starts[pos])
    snapped = snapped[(snapped > 0) & (snapped < total)]
    edges = np.concatenate([[0], snapped, [total]])
    sizes = tuple(int(s) for s in np.diff(edges) if s > 0)
    return sizes or (total,)


def group_reduce_dask(
    X, codes, n_groups, func, *, ddof=1, mad_scale=1.0, min_count=1, inf="raise", var_names=None,
    what="adata.X", block_size=None,
) -> np.ndarray:
    """Group reduction of a dask array: one task per row chunk aligned on group boundaries."""
    check_numeric(X, param=what)

    def _reduce_block(block, c_local, n_local):
        return group_reduce(
            np.asarray(block), c_local, n_local, func, ddof=ddof, mad_scale=mad_scale, min_count=min_count,
            inf="propagate", n_jobs=1, block_size=block_size,
        )

    n_inf = None
    if inf == "raise" and X.dtype.kind == "f":
        import dask.array as da

        n_inf = da.isinf(X).sum(axis=0)
    fill = 0.0 if func in ("count", "sum") else np.nan
    if n_inf is None:
        return dask_by_chunks(X, codes, n_groups, _reduce_block, fill=fill)
    out, n_inf_np = dask_by_chunks(X, codes, n_groups, _reduce_block, fill=fill, extra=n_inf)
    raise_inf(np.asarray(n_inf_np), var_names, what)
    return out


def dask_by_chunks(X, codes, n_groups, block_fn, *, fill=np.nan, extra=None, out_factor=1):
    """Run ``block_fn(block, local_codes, n_local)`` on row chunks aligned to groups; stack results.

    ``block_fn`` returns ``(n_local, out_factor * block_width)``; with
    ``out_factor > 1`` the result is ``out_factor`` arrays side by side
    (``[A | B]``), each ``(n_groups, n_features)``. When ``extra`` (a dask
    object) is given it is computed together with the result and
    ``(out, extra_value)`` is returned.
    """
    import dask
    import dask.array as da

    order, starts = sort_groups(codes, n_groups)
    Xs = X
    if not (order.size == X.shape[0] and (order.size == 0 or (order[0] == 0 and (np.diff(order) == 1).all()))):
        Xs = X[order]  # rows grouped; dask gathers per output chunk
    sorted_codes = codes[order]
    p = X.shape[1]
    out = np.full((n_groups, out_factor * p), fill, dtype=np.float64)
    if sorted_codes.size == 0:
        return (out, dask.compute(extra)[0]) if extra is not None else out
    row_chunks = _aligned_row_chunks(starts, Xs.chunks[0])
    Xs = Xs.rechunk((row_chunks, Xs.chunks[1]))
    edges = np.concatenate([[0], np.cumsum(row_chunks)])
    # groups covered by each row chunk: [g_lo, g_hi) (empty groups inside the range included)
    g_lo = sorted_codes[edges[:-1]]
    g_hi = np.append(g_lo[1:], sorted_codes[-1] + 1)
    parts = []
    delayed_blocks = Xs.to_delayed()
    call = dask.delayed(block_fn, pure=True)
    for i in range(len(row_chunks)):
        lo, hi = int(g_lo[i]), int(g_hi[i])
        c_local = sorted_codes[edges[i] : edges[i + 1]] - lo
        row = [
            da.from_delayed(call(delayed_blocks[i, j], c_local, hi - lo), shape=(hi - lo, out_factor * width), dtype=np.float64)
            for j, width in enumerate(Xs.chunks[1])
        ]
        parts.append(da.concatenate(row, axis=1) if len(row) > 1 else row[0])
    res = da.concatenate(parts, axis=0)
    if extra is not None:
        res_np, extra_np = dask.compute(res, extra)
    else:
        res_np, extra_np = res.compute(), None
    res_np = np.asarray(res_np)
    if out_factor > 1:  # per column chunk [A_j | B_j] -> [A | B]
        col_edges = np.concatenate([[0], np.cumsum(Xs.chunks[1])])
        pieces, pos = [[] for _ in range(out_factor)], 0
        for w in Xs.chunks[1]:
            for f in range(out_factor):
                pieces[f].append(res_np[:, pos + f * w : pos + (f + 1) * w])
            pos += out_factor * w
        res_np = np.concatenate([np.concatenate(pc, axis=1) for pc in pieces], axis=1)
        del col_edges
    out[int(sorted_codes[0]) : int(sorted_codes[-1]) + 1] = res_np
    return (out, extra_np) if extra is not None else out
