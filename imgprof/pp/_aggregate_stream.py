"""``ip.pp.aggregate`` over a :class:`imgprof.io._stream.ProfileSource`: reduce groups as blocks arrive.

Rows grouped by ``by`` (sorted or partitioned, as CellProfiler/CytoTable exports are) are
reduced unit by unit, holding back only the group still open. Rows that are not grouped
are reduced either by column passes (a columnar source: a block of columns of every row
at a time) or by spilling them to disk in buckets of groups.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._core.groups import group_codes, group_first_constant, group_reduce, group_sizes, sort_groups
from .._core.progress import progress_bar
from .._core.provenance import log_step
from ..io._stream import ProfileSource
from ._grouped import assemble, summarise_qc_rows

#: Rows not grouped by ``by`` are spilled to disk in buckets of groups of about this many bytes.
_BUCKET_BYTES = 256 << 20
#: Parquet rows not grouped by ``by`` are read a block of columns at a time (a buffer of about
#: ``_BUCKET_BYTES``) while one column of every row takes at most this many bytes of float64;
#: beyond it (or when ``spill_dir`` is given) they are spilled to disk in buckets.
_COLUMN_PASS_MAX_BYTES = 1 << 30


class NotGrouped(ValueError):
    """The rows of a streamed source are not grouped by the ``by`` keys."""


def _short(where: str) -> str:
    """The file name of a source path, for progress labels."""
    return Path(where).name or where


class Streamed:
    """Accumulates the groups reduced while streaming a source."""

    def __init__(self, by: list[str], keep_cols: list[str], var_names: Sequence[str], *, func: str, inf: str, dropna: bool):
        self.by, self.keep_cols = by, keep_cols
        self.var_names = list(var_names)
        self.p = len(self.var_names)
        self.func, self.inf, self.dropna = func, inf, dropna
        self.results: list[np.ndarray] = []
        self.group_rows: list[pd.DataFrame] = []
        self.sizes: list[int] = []
        self.non_constant: set[str] = set()
        self.seen: set[tuple] = set()
        self.n_cells = 0
        self.n_missing = 0

    def _reduce(self, X: np.ndarray, codes: np.ndarray, n_groups: int, c0: int, c1: int, where: str, jobs: int):
        return group_reduce(
            X, codes, n_groups, self.func, inf=self.inf, var_names=self.var_names[c0:c1], what=where, n_jobs=jobs,
        )

    # -- rows grouped by `by` -------------------------------------------------------------------
    def run(self, src: ProfileSource) -> None:
        """Stream the units of ``src`` in order; the last group of a unit is held back (it may go on)."""
        pend_meta = None
        pend_X = np.empty((0, self.p))  # rows of the open group
        units = src.units
        with ThreadPoolExecutor(src.jobs) as ex:
            for ui, unit in enumerate(progress_bar(units, desc=f"aggregate {_short(src.where)}", unit="row groups")):
                pend_meta, pend_X = self._unit(src, ex, unit, pend_meta, pend_X, final=ui == len(units) - 1)
                src.release()

    def _unit_meta(self, src: ProfileSource, unit, pend_meta):
        meta = src.read_meta(unit)
        self.n_cells += len(meta)
        ok = None
        if self.dropna:
            ok = meta.loc[:, self.by].notna().all(axis=1).to_numpy()
            self.n_missing += int((~ok).sum())
            meta = meta.loc[ok]
            ok = None if ok.all() else ok
        n_pend = 0 if pend_meta is None else len(pend_meta)
        meta = pd.concat([pend_meta, meta], ignore_index=True) if n_pend else meta.reset_index(drop=True)
        return meta, ok, n_pend

    def _unit(self, src: ProfileSource, ex, unit, pend_meta, pend_X, *, final: bool):
        by, p, where = self.by, self.p, src.where
        meta, ok, n_pend = self._unit_meta(src, unit, pend_meta)
        if len(meta) == 0:
            return pend_meta, pend_X
        codes, groups = group_codes(meta, by, dropna=False, sort=False, param="by", where=where)
        if (np.diff(codes) < 0).any():
            raise NotGrouped(
                f"{where}: the rows are not grouped by {by} (a group reappears after another started). "
                "Sort or partition the data by these keys (e.g. with duckdb or pandas per plate) to stream "
                "them, or load them and pass an AnnData."
            )
        n_groups = len(groups)
        last = n_groups if final else n_groups - 1
        k = int(np.searchsorted(codes, last))  # rows [0, k) belong to complete groups
        blocks, reduce_jobs = src.blocks_for(n_pend + len(meta))

        def block_task(bl):
            c0, c1 = bl
            Xn = src.read_block(unit, c0, c1)
            if ok is not None:
                Xn = Xn[ok]
            if n_pend:
                Xn = np.concatenate([pend_X[:, c0:c1], Xn])
            red = self._reduce(Xn[:k], codes[:k], last, c0, c1, where, reduce_jobs) if last > 0 else None
            return red, Xn[k:].copy()

        outs = list(ex.map(block_task, blocks)) if len(blocks) > 1 else [block_task(blocks[0])]
        if last > 0:
            red = np.empty((last, p))
            for (c0, c1), (r, _) in zip(blocks, outs):
                red[:, c0:c1] = r
            self._add_groups(meta.iloc[:k], codes[:k], groups.iloc[:last], red, where)
        pend_meta = meta.iloc[k:].reset_index(drop=True)
        pend_X = np.concatenate([tail for _, tail in outs], axis=1) if len(pend_meta) else np.empty((0, p))
        return pend_meta, pend_X

    def _add_groups(self, mk: pd.DataFrame, codes: np.ndarray, groups: pd.DataFrame, red: np.ndarray, where: str) -> None:
        order, starts = sort_groups(codes, len(groups))
        gmeta = groups.copy()
        for c in self.keep_cols:
            constant, first = group_first_constant(mk[c], order, starts)
            if not constant:
                self.non_constant.add(c)
            gmeta[c] = mk[c].iloc[first].to_numpy()
        for row in gmeta.loc[:, self.by].itertuples(index=False, name=None):
            t = tuple(None if pd.isna(v) else v for v in row)
            if t in self.seen:
                raise NotGrouped(
                    f"{where}: group {dict(zip(self.by, t))} appears in two separate runs of rows; the data are not "
                    f"sorted/partitioned by {self.by}. Sort them to stream, or load them and pass an AnnData."
                )
            self.seen.add(t)
        self.results.append(red)
        self.group_rows.append(gmeta)
        self.sizes.extend(np.diff(starts).tolist())

    # -- rows not grouped -------------------------------------------------------------------------
    def _codes_of_all(self, meta: pd.DataFrame, where: str):
        codes, groups = group_codes(meta, self.by, dropna=self.dropna, param="by", where=where)
        self.n_cells = len(meta)
        self.n_missing = int((codes < 0).sum())
        return codes, groups

    def run_partitioned(self, src: ProfileSource, meta: pd.DataFrame, spill_dir=None) -> int:
        """Aggregate rows that are *not* grouped, in bounded memory: spill them to disk by bucket.

        ``meta`` holds the key (and kept metadata) columns of every row, in file order. Groups
        are cut into buckets of consecutive groups of about ``_BUCKET_BYTES`` of float64;
        one pass over the units appends each bucket's rows, column block by column block, to
        its own file in ``spill_dir`` (default: the system's temporary folder); then each
        bucket is loaded alone and reduced. Memory: the key columns and codes of all rows,
        one bucket, and the blocks in flight. Returns the number of buckets.
        """
        codes, groups = self._codes_of_all(meta, src.where)
        n_groups = len(groups)
        if n_groups == 0:
            return 0
        sizes = group_sizes(codes, n_groups)
        bucket_of_group = _buckets(sizes, max(1, _BUCKET_BYTES // (8 * max(self.p, 1))))
        n_buckets = int(bucket_of_group[-1]) + 1
        bucket_of_row = np.where(codes >= 0, bucket_of_group[np.maximum(codes, 0)], -1)
        folder = tempfile.mkdtemp(prefix="imgprof_aggregate_", dir=None if spill_dir is None else str(spill_dir))
        try:
            paths = [os.path.join(folder, f"bucket{i}.bin") for i in range(n_buckets)]
            counts, unit_blocks = _spill(src, bucket_of_row, paths)
            Xout = self._reduce_buckets(src, codes, bucket_of_group, bucket_of_row, paths, counts, unit_blocks)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self._finish_unsorted(meta, codes, groups, sizes, Xout)
        return n_buckets

    def _reduce_buckets(self, src, codes, bucket_of_group, bucket_of_row, paths, counts, unit_blocks) -> np.ndarray:
        """Load each bucket file alone (rows in file order, as written) and reduce its groups."""
        n_groups, n_buckets, p = bucket_of_group.size, len(paths), self.p
        Xout = np.empty((n_groups, p))
        g_first = np.searchsorted(bucket_of_group, np.arange(n_buckets))
        g_end = np.append(g_first[1:], n_groups)
        by_bucket = np.argsort(bucket_of_row, kind="stable")  # each bucket's rows in file order, as written
        r_first = np.searchsorted(bucket_of_row[by_bucket], np.arange(n_buckets))
        r_end = np.append(r_first[1:], by_bucket.size)
        for bi in progress_bar(range(n_buckets), desc=f"aggregate {_short(src.where)} (buckets)", unit="buckets"):
            rows = by_bucket[r_first[bi] : r_end[bi]]
            Mb = np.empty((rows.size, p))
            with open(paths[bi], "rb") as fh:
                off = 0
                for ui in range(len(src.units)):
                    nr = int(counts[ui, bi])
                    if nr == 0:
                        continue
                    for c0, c1 in unit_blocks[ui]:
                        Mb[off : off + nr, c0:c1] = np.fromfile(fh, dtype=np.float64, count=nr * (c1 - c0)).reshape(nr, c1 - c0)
                    off += nr
            os.remove(paths[bi])
            g0, g1 = int(g_first[bi]), int(g_end[bi])
            Xout[g0:g1] = self._reduce(Mb, codes[rows] - g0, g1 - g0, 0, p, src.where, src.jobs)
            del Mb
        return Xout

    def run_columns(self, src: ProfileSource, meta: pd.DataFrame) -> int:
        """Aggregate rows that are *not* grouped by reading a block of feature columns of every row at a time.

        For a columnar source (parquet) this reads each value once, with no temporary files:
        for each block of columns (a buffer of about ``_BUCKET_BYTES``), every unit's rows are
        decoded and placed straight at their rows in group order
        (:func:`~imgprof._core.groups.place_rows`; the group permutation is computed once),
        then the block is reduced in memory. Memory: the buffer, the key columns and codes of
        all rows, and the blocks in flight. Returns the number of column passes.
        """
        codes, groups = self._codes_of_all(meta, src.where)
        n_groups = len(groups)
        if n_groups == 0:
            return 0
        sizes = group_sizes(codes, n_groups)
        order, _ = sort_groups(codes, n_groups)  # file rows in group order (rows without a key left out)
        n, m, p, jobs = codes.size, order.size, self.p, src.jobs
        dest = np.full(n, -1, dtype=np.int64)
        dest[order] = np.arange(m, dtype=np.int64)  # where each file row goes
        sorted_codes = np.repeat(np.arange(n_groups, dtype=np.int64), sizes)
        edges = np.concatenate([[0], np.cumsum(src.unit_rows)]).astype(np.int64)
        width = max(1, min(_BUCKET_BYTES // max(8 * n, 1), p))
        store = np.empty(m * width, dtype=np.float64)
        Xout = np.empty((n_groups, p))
        passes = 0
        with ThreadPoolExecutor(jobs) as ex:
            desc = f"aggregate {_short(src.where)} (column passes)"
            for c0 in progress_bar(range(0, p, width), desc=desc, unit="passes"):
                c1 = min(c0 + width, p)
                grouped = store[: m * (c1 - c0)].reshape((m, c1 - c0))  # group order, C-ordered

                def read(ui: int, c0: int = c0, c1: int = c1, grouped: np.ndarray = grouped) -> None:
                    src.read_placed(src.units[ui], c0, c1, dest[edges[ui] : edges[ui + 1]], grouped)

                list(ex.map(read, range(len(src.units))))
                src.release()
                Xout[:, c0:c1] = self._reduce(grouped, sorted_codes, n_groups, c0, c1, src.where, jobs)
                passes += 1
        del store
        self._finish_unsorted(meta, codes, groups, sizes, Xout, order=order)
        return passes

    def _finish_unsorted(
        self, meta: pd.DataFrame, codes: np.ndarray, groups: pd.DataFrame, sizes, Xout, order: np.ndarray | None = None,
    ) -> None:
        """Group metadata and results of a pass over rows not grouped by ``by`` (``order``: of :func:`sort_groups`)."""
        n_groups = len(groups)
        if order is None:
            order, _ = sort_groups(codes, n_groups)
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        gmeta = groups.copy()
        for c in gmeta.columns:  # keys read as dictionaries: back to plain values, sorted like the streamed path
            if isinstance(gmeta[c].dtype, pd.CategoricalDtype):
                gmeta[c] = np.asarray(gmeta[c].astype(object))
        for c in self.keep_cols:
            constant, first = group_first_constant(meta[c], order, starts)
            if not constant:
                self.non_constant.add(c)
            gmeta[c] = meta[c].iloc[np.maximum(first, 0)].to_numpy()
        self.results = [Xout]
        self.group_rows = [gmeta]
        self.sizes = sizes.tolist()

    # -- the result ---------------------------------------------------------------------------------
    def _sorted_result(self) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """Groups, sizes and reduced rows in pycytominer's (sorted key) order."""
        gobs = pd.concat(self.group_rows, ignore_index=True)
        sort_codes, _ = group_codes(gobs, self.by, dropna=False, sort=True)
        perm = np.argsort(sort_codes, kind="stable")
        # place each piece at its sorted rows and let it go: peak = the result plus one piece
        dest = np.empty_like(perm)
        dest[perm] = np.arange(perm.size)
        Xout = np.empty((perm.size, self.p))
        pos = 0
        while self.results:
            piece = self.results.pop(0)
            Xout[dest[pos : pos + piece.shape[0]]] = piece
            pos += piece.shape[0]
            del piece
        return gobs.iloc[perm].reset_index(drop=True), np.asarray(self.sizes, dtype=np.int64)[perm], Xout

    def result(self, src: ProfileSource, *, params: dict, keep_metadata, count_key, extra: dict) -> ad.AnnData:
        """The aggregated AnnData: groups in sorted key order, QC columns summarised, the step logged."""
        by = self.by
        if not self.results:
            raise ValueError(f"{src.where}: no rows to aggregate.")
        gobs, size_arr, Xout = self._sorted_result()
        non_constant = sorted(self.non_constant)
        if non_constant and not isinstance(keep_metadata, bool):
            raise ValueError(f"keep_metadata: column(s) {non_constant} are not constant within every group of {by}.")
        dropped_meta = [c for c in src.meta_cols if c not in self.keep_cols and c not in by] + non_constant
        result, n_nan = assemble(
            gobs.drop(columns=non_constant), size_arr, Xout, src.var, src.uns, src.obs_dtypes, by=by, count_key=count_key,
            dropped_meta=dropped_meta, level=params["level"], what="aggregate", stacklevel=6,
        )
        qc_summary = summarise_qc_rows(*src.qc_rows(), result, by, self.dropna)
        log_step(
            result, "pp.aggregate", {"source": src.where, **params},
            n_cells=self.n_cells, n_groups=result.n_obs, n_rows_missing_key=self.n_missing, dropped_metadata=dropped_meta,
            n_nan_values=n_nan, streamed=True, qc_summarised=qc_summary, **extra,
        )
        return result


def _buckets(sizes: np.ndarray, cap: int) -> np.ndarray:
    """Bucket of each group: consecutive groups, about ``cap`` rows a bucket (a larger group is a bucket alone)."""
    bucket_of_group = np.empty(sizes.size, dtype=np.int64)
    b, filled = 0, 0
    for g, sz in enumerate(sizes):
        if filled and filled + sz > cap:
            b, filled = b + 1, 0
        bucket_of_group[g] = b
        filled += int(sz)
    return bucket_of_group


def _spill(src: ProfileSource, bucket_of_row: np.ndarray, paths: list[str]) -> tuple[np.ndarray, list]:
    """One pass over the units: append each bucket's rows (column block by block) to its file.

    Returns the rows per (unit, bucket) and the column blocks of each unit, to read the files back.
    """
    n_buckets, jobs = len(paths), src.jobs
    starts_rows = np.concatenate([[0], np.cumsum(src.unit_rows)])
    counts = np.zeros((len(src.units), n_buckets), dtype=np.int64)
    unit_blocks: list[list[tuple[int, int]]] = []
    keep_open = n_buckets <= 256
    handles = [open(q, "wb") for q in paths] if keep_open else []  # noqa: SIM115
    try:
        with ThreadPoolExecutor(jobs) as ex:
            desc = f"aggregate {_short(src.where)} (to buckets)"
            for ui, unit in enumerate(progress_bar(src.units, desc=desc, unit="row groups")):
                bu = bucket_of_row[starts_rows[ui] : starts_rows[ui + 1]]
                order = np.argsort(bu, kind="stable")
                cnt = np.bincount(bu[bu >= 0], minlength=n_buckets)
                counts[ui] = cnt
                edges = np.concatenate([[0], np.cumsum(cnt)]) + int((bu < 0).sum())  # -1 rows sort first
                blocks, _ = src.blocks_for(int(src.unit_rows[ui]))
                unit_blocks.append(blocks)
                def read_sorted(c0: int, c1: int, unit=unit, order=order) -> np.ndarray:
                    return src.read_block(unit, c0, c1)[order]  # rows by bucket (a copy, C-ordered)

                for w0 in range(0, len(blocks), jobs):  # at most `jobs` blocks in flight, written in order
                    futures = [ex.submit(read_sorted, c0, c1) for c0, c1 in blocks[w0 : w0 + jobs]]
                    for fut in futures:
                        _write_buckets(fut.result(), cnt, edges, handles, paths)
    finally:
        for fh in handles:
            fh.close()
    return counts, unit_blocks


def _write_buckets(Xs: np.ndarray, cnt: np.ndarray, edges: np.ndarray, handles: list, paths: list[str]) -> None:
    """Append the rows of each bucket (``Xs`` sorted by bucket) to the bucket's file."""
    for bi in np.flatnonzero(cnt):
        piece = Xs[edges[bi] : edges[bi + 1]]
        if handles:
            handles[bi].write(piece.tobytes())
        else:
            with open(paths[bi], "ab") as fh:
                fh.write(piece.tobytes())


def stream_aggregate(
    src: ProfileSource, by: list[str], *, params: dict, keep_metadata, count_key, spill_dir=None,
) -> ad.AnnData:
    """Aggregate a checked source: streamed when its rows are grouped by ``by``, else by column passes or buckets.

    ``params`` holds ``operation``, ``inf``, ``dropna`` and ``level`` (and is logged as given).
    """
    def new() -> Streamed:
        return Streamed(by, src.keep_cols, src.var_names, func=params["operation"], inf=params["inf"], dropna=params["dropna"])

    extra = dict(src.extra)
    acc = new()
    try:
        acc.run(src)
    except NotGrouped:
        # rows not grouped by `by`: the keys of all rows in memory, the features not
        acc = new()
        meta = src.all_meta()
        if src.columnar and spill_dir is None and 8 * len(meta) <= _COLUMN_PASS_MAX_BYTES:
            extra["column_passes"] = acc.run_columns(src, meta)  # each value read once, nothing written
        else:
            extra["partitioned_buckets"] = acc.run_partitioned(src, meta, spill_dir=spill_dir)
    return acc.result(src, params=params, keep_metadata=keep_metadata, count_key=count_key, extra=extra)
