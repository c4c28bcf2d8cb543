"""Phenotypic activity at JUMP scale: blocks of perturbations, optionally on a dask.distributed cluster.

A perturbation's activity only involves its own wells and the controls they
are ranked against (its ``sameby_controls`` strata, e.g. its plates). So the
perturbations can be scored in blocks: each block reads the rows of its
perturbations plus their strata's controls, runs :func:`phenotypic_activity`
on that sub-matrix — mAP and p-values are identical to a single run, because
every AP and every permutation null depends only on those rows — and the
Benjamini–Hochberg correction is applied once, over all perturbations, at the
end. Memory is bounded by one block (never an n × n matrix, never the whole
matrix when ``adata.X`` is a memory map). With a ``dask.distributed`` client
the blocks are tasks; when ``adata.X`` is a ``numpy.memmap`` (e.g.
``np.load(path, mmap_mode="r")``) the workers read their rows from the file
themselves, otherwise the client slices each block and sends it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.validation import check_obs_keys, is_dask
from ._map import finish_table
from ._recipes import control_mask, strata_codes
from ._results import check_table_key, store_table


def _read_rows(source: tuple, rows: np.ndarray) -> np.ndarray:
    kind = source[0]
    if kind == "memmap":
        _, filename, dtype, offset, shape, order = source
        mm = np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=tuple(shape), order=order)
        return np.asarray(mm[rows])
    return np.asarray(source[1])  # already sliced


def _score_block(source: tuple, rows: np.ndarray, obs_block: pd.DataFrame, keys: list[str], kwargs: dict) -> pd.DataFrame:
    import warnings

    import anndata as ad

    from ._recipes import phenotypic_activity
    from ._results import RetrievalWarning

    X = _read_rows(source, np.asarray(rows))
    a = ad.AnnData(X, obs=obs_block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RetrievalWarning)
        return phenotypic_activity(a, keys, controls=obs_block["__imgprof_is_control"].to_numpy(), **kwargs)


def phenotypic_activity_blocked(
    adata: AnnData,
    perturbation_key: str | Sequence[str] = "Metadata_broad_sample",
    controls: Any = "Metadata_pert_type == 'control'",
    *,
    sameby_controls: str | Sequence[str] | None = None,
    block_size: int = 250,
    client: Any = None,
    threshold: float = 0.05,
    **kwargs: Any,
) -> pd.DataFrame:
    """:func:`phenotypic_activity` computed block by block (bounded memory), optionally on a dask cluster.

    Parameters
    ----------
    adata
        Well-level profiles. ``.X`` may be a numpy array or a ``numpy.memmap``
        (then only one block's rows are ever read; on a cluster the workers
        read them from the file).
    perturbation_key, controls, sameby_controls
        As in :func:`phenotypic_activity`. With ``sameby_controls`` (e.g. the
        plate) a block holds only its perturbations' strata's controls;
        without it every block holds every control.
    block_size
        Perturbations per block (default 250). Perturbations are ordered by the
        strata of their wells, so a block touches few plates. The AP kernel's
        pair search is quadratic in the block, so small blocks are faster as
        long as the per-block overhead stays small (on the JUMP-like
        benchmark, blocks of 100–300 were faster than 700 or 2,000).
    client
        A ``dask.distributed.Client``: blocks run as tasks on its workers.
        ``None``: blocks run one after the other here.
    threshold
        Significance level; the Benjamini–Hochberg correction is over all
        perturbations, after the blocks.
    **kwargs
        Passed to :func:`phenotypic_activity` (``null_size``, ``seed``,
        ``null``, ``metric``, ``pos_diffby``, ``dtype`` …; not ``return_ap``). ``key_added``
        stores the final table in ``adata.uns[key_added]``.

    Returns
    -------
    DataFrame, one row per perturbation, with the columns of
    :func:`phenotypic_activity` (rows sorted by the perturbation key).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> a = ip.metrics.phenotypic_activity_blocked(adata, "Metadata_broad_sample", block_size=20, null_size=200)
    >>> b = ip.metrics.phenotypic_activity(adata, "Metadata_broad_sample", null_size=200)
    >>> bool((a["mean_average_precision"].to_numpy() == b["mean_average_precision"].to_numpy()).all())
    True
    """
    if "return_ap" in kwargs:
        raise ValueError("phenotypic_activity_blocked does not return the AP table (return_ap is not supported).")
    keys = check_obs_keys(adata, perturbation_key, param="perturbation_key")
    sc = check_obs_keys(adata, sameby_controls, param="sameby_controls")
    if int(block_size) < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}.")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}.")
    kwargs = dict(kwargs)
    key_added = kwargs.pop("key_added", None)
    check_table_key(adata, key_added)
    cmask = control_mask(adata, controls)
    obs = adata.obs.copy()
    obs["__imgprof_is_control"] = cmask
    if sc:
        kwargs["sameby_controls"] = sc
    tasks = [(_block_source(adata.X, rows), rows, obs.iloc[rows]) for rows in _block_rows(obs, cmask, keys, sc, int(block_size))]
    if client is None:
        parts = [_score_block(s, r, o, keys, kwargs) for s, r, o in tasks]
    else:
        futures = [client.submit(_score_block, s, r, o, keys, kwargs, pure=False) for s, r, o in tasks]
        parts = client.gather(futures)
    res = pd.concat(parts, ignore_index=True).sort_values(keys, kind="stable").reset_index(drop=True)
    finish_table(res, threshold)
    store_table(adata, res, key_added, function="metrics.phenotypic_activity_blocked",
                params={"perturbation_key": keys, "controls": controls, "block_size": block_size, **kwargs})
    return res


def _block_rows(obs: pd.DataFrame, cmask: np.ndarray, keys: list[str], sc: list[str], block_size: int) -> list[np.ndarray]:
    """Rows of each block: its perturbations' wells plus the controls of their strata (all controls without strata)."""
    stratum = strata_codes(obs, sc)
    trt = np.flatnonzero(~cmask)
    pert = obs.iloc[trt][keys]
    pcode = pert.astype(str).agg("\x1f".join, axis=1).to_numpy() if len(keys) > 1 else pert[keys[0]].astype(str).to_numpy()
    codes, uniq = pd.factorize(pcode)
    # order perturbations by their smallest stratum so that a block touches few strata
    first = np.full(len(uniq), np.iinfo(np.int64).max)
    np.minimum.at(first, codes, stratum[trt])
    porder = np.argsort(first, kind="stable")
    well_order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[well_order], np.arange(len(uniq) + 1))
    c_rows = np.flatnonzero(cmask)
    c_str = stratum[c_rows]
    blocks = []
    for b in range(0, len(uniq), block_size):
        ps = porder[b : b + block_size]
        wells = np.concatenate([trt[well_order[bounds[p] : bounds[p + 1]]] for p in ps])
        ctrl = c_rows if not sc else c_rows[np.isin(c_str, np.unique(stratum[wells]))]
        blocks.append(np.sort(np.concatenate([wells, ctrl])))
    return blocks


def _block_source(X: Any, rows: np.ndarray) -> tuple:
    """How a block gets its rows: a memmap's file description (workers read it), or the sliced rows themselves."""
    if isinstance(X, np.memmap):
        order = "F" if X.flags.f_contiguous and not X.flags.c_contiguous else "C"
        return ("memmap", str(X.filename), X.dtype.str, int(X.offset), tuple(X.shape), order)
    sub = X[rows]
    if is_dask(sub):
        sub = sub.compute()
    if hasattr(sub, "toarray"):
        sub = sub.toarray()
    return ("array", np.asarray(sub))
