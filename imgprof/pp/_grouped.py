"""The AnnData of a grouped step (aggregate, consensus): group metadata, counts, uns, QC summary.

Shared by every path of ``ip.pp.aggregate`` (in memory, dask, streamed parquet / zarr)
and by ``ip.pp.consensus``.
"""

from __future__ import annotations

import copy as _copy
import json
import types
import warnings
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .._core.features import record_values_changed
from .._core.groups import group_codes, group_first_constant
from .._core.provenance import record, set_level
from .._core.validation import as_list, check_df_keys
from ..io._stream import qc_columns, recorded_obs_dtypes

__all__ = ["assemble", "check_count_key", "grouped_result", "summarise_qc_flags", "summarise_qc_rows", "warn_nan"]


def warn_nan(X: np.ndarray, var_names, *, what: str, stacklevel: int = 4) -> int:
    """Warn (naming columns) when the output holds NaN; return the NaN count."""
    nan = np.isnan(X)
    n = int(nan.sum())
    if n:
        cols = np.flatnonzero(nan.any(axis=0))
        names = [str(var_names[c]) for c in cols[:5]]
        warnings.warn(
            f"{what}: {n} value(s) in {cols.size} feature(s) are NaN because every input value of that "
            f"feature was NaN within a group (e.g. {names}); they stay NaN, as in pycytominer. "
            "Drop or impute such features (ip.pp.feature_select(..., operation=['drop_na_columns'])).",
            UserWarning,
            stacklevel=stacklevel,
        )
    return n


def _new_uns(src_uns: dict | None, obs: pd.DataFrame, features: Sequence[str], obs_dtypes: dict) -> dict:
    """uns of an aggregated AnnData: the input's provenance, fresh column/dtype/index info."""
    src = record(types.SimpleNamespace(uns=src_uns if isinstance(src_uns, dict) else {}))
    store = _copy.deepcopy(dict(src.as_dict()))
    store["columns"] = [str(c) for c in obs.columns] + [str(f) for f in features]
    store["obs_dtypes"] = json.dumps({c: d for c, d in obs_dtypes.items() if c in obs.columns})
    store["index"] = json.dumps({"kind": "range", "start": 0, "step": 1, "name": None})
    out = types.SimpleNamespace(uns={})
    for k, v in store.items():
        record(out).set(k, v)
    return out.uns


def _group_metadata(
    obs: pd.DataFrame, by: list[str], groups: pd.DataFrame, order: np.ndarray, starts: np.ndarray,
    keep_metadata: bool | Sequence[str],
) -> tuple[pd.DataFrame, list[str]]:
    """Key columns plus the metadata columns constant within every group (first value)."""
    out = groups.copy()
    dropped: list[str] = []
    if keep_metadata is False:
        return out, [c for c in obs.columns if c not in by]
    candidates = [c for c in obs.columns if c not in by]
    explicit = not isinstance(keep_metadata, bool)
    if not isinstance(keep_metadata, bool):
        candidates = as_list(keep_metadata)
        check_df_keys(obs, candidates, param="keep_metadata", where="adata.obs")
    for c in candidates:
        constant, first = group_first_constant(obs[c], order, starts)
        if constant:
            vals = obs[c].iloc[np.maximum(first, 0)]
            out[c] = vals.to_numpy() if not isinstance(vals.dtype, pd.CategoricalDtype) else vals.values
            if (first < 0).any():
                out.loc[first < 0, c] = np.nan
        elif explicit:
            raise ValueError(
                f"keep_metadata: column {c!r} is not constant within every group of {by}; "
                "it cannot describe one aggregated profile."
            )
        else:
            dropped.append(c)
    return out, dropped


def assemble(
    out_obs: pd.DataFrame, sizes, Xout: np.ndarray, var: pd.DataFrame, src_uns, src_dtypes: dict, *, by: list[str],
    count_key: str | None, dropped_meta: list[str], level: str, what: str, stacklevel: int,
) -> tuple[ad.AnnData, int]:
    """The AnnData of a grouped result: count column, string index, float ``input_dtype``, uns, level.

    ``dropped_meta`` gains ``count_key`` when a metadata column of that name is
    replaced. Returns the AnnData and the number of NaN values in ``Xout`` (warned about).
    """
    if count_key is not None:
        if count_key in out_obs.columns:
            out_obs = out_obs.drop(columns=count_key)
            dropped_meta.append(count_key)
        out_obs.insert(len(by), count_key, np.asarray(sizes, dtype=np.int64))
    out_obs.index = pd.Index([str(i) for i in range(len(out_obs))])
    n_nan = warn_nan(Xout, var.index, what=what, stacklevel=stacklevel)
    obs_dtypes = {c: src_dtypes[c] for c in out_obs.columns if c in src_dtypes}
    if count_key is not None:
        obs_dtypes[count_key] = "int64"
    var = var.copy()
    record_values_changed(var, np.float64, replace_all=True)  # medians/means are float: to_pandas must not cast them back to int
    result = ad.AnnData(X=Xout, obs=out_obs, var=var, uns=_new_uns(src_uns, out_obs, var.index, obs_dtypes))
    set_level(result, level)
    return result, n_nan


def check_count_key(count_key: str | None, columns, overwrite: bool, *, where: str) -> None:
    """Refuse a ``count_key`` that would replace an existing annotation column (unless ``overwrite``)."""
    if count_key is not None and not overwrite and count_key in set(map(str, columns)):
        raise ValueError(
            f"count_key={count_key!r} is already a column of {where}; the counts would replace it. "
            "Pick another count_key, count_key=None, or pass overwrite=True."
        )


def grouped_result(
    adata: ad.AnnData, by: list[str], groups: pd.DataFrame, order: np.ndarray, starts: np.ndarray, Xout: np.ndarray,
    *, count_key: str | None, keep_metadata, level: str, what: str,
) -> tuple[ad.AnnData, list[str], int]:
    """Build the AnnData of a grouped step (aggregate, consensus): obs, count, uns, level.

    Returns the new AnnData, the metadata columns that were dropped (not constant
    within groups) and the number of NaN values in ``Xout`` (warned about).
    """
    out_obs, dropped_meta = _group_metadata(adata.obs, by, groups, order, starts, keep_metadata)
    result, n_nan = assemble(
        out_obs, np.diff(starts), Xout, adata.var, adata.uns, recorded_obs_dtypes(adata.uns), by=by,
        count_key=count_key, dropped_meta=dropped_meta, level=level, what=what, stacklevel=5,
    )
    return result, dropped_meta, n_nan


def summarise_qc_flags(adata, result: ad.AnnData, codes: np.ndarray, n_groups: int) -> dict[str, str]:
    """QC summary of the in-memory (numpy or dask) path: see :func:`summarise_qc_obs`."""
    return summarise_qc_obs(adata.obs, qc_columns(adata.uns, adata.obs.columns), result, codes, n_groups)


def summarise_qc_rows(rows: pd.DataFrame, cols: list[str], result: ad.AnnData, by: list[str], dropna: bool) -> dict[str, str]:
    """QC summary of the streamed (parquet / zarr) paths.

    ``rows`` holds the ``by`` keys and the QC columns of every row of the source; each
    group is matched to its row of ``result`` by its key values (the streamed result
    orders groups on its own), then :func:`summarise_qc_obs` does the rest.
    """
    if not cols:
        return {}
    rows = rows.reset_index(drop=True)
    codes, groups = group_codes(rows, by, dropna=dropna, sort=False, param="by")

    def key(t) -> tuple:
        return tuple(None if pd.isna(v) else v for v in t)

    pos = {key(t): i for i, t in enumerate(result.obs.loc[:, by].itertuples(index=False, name=None))}
    try:
        gmap = np.array([pos[key(t)] for t in groups.loc[:, by].itertuples(index=False, name=None)], dtype=np.int64)
    except KeyError as e:  # pragma: no cover - the result holds every group by construction
        raise RuntimeError(f"aggregate: group {e} of the QC columns not found among the aggregated groups.") from e
    codes = np.where(codes >= 0, gmap[np.maximum(codes, 0)], -1)
    return summarise_qc_obs(rows, cols, result, codes, result.n_obs)


def summarise_qc_obs(obs: pd.DataFrame, cols: list[str], result: ad.AnnData, codes: np.ndarray, n_groups: int) -> dict[str, str]:
    """Replace the lower-level QC columns of ``ip.pp.qc`` by the fraction of flagged rows per group.

    Shared by every path of :func:`aggregate` (in memory, dask, parquet and zarr streaming).

    A cell-level flag copied to a well (because it happened to be constant in every
    well) would read as a verdict on the well. Boolean QC columns become
    ``<column>_cell_fraction`` (fraction of the group's rows flagged, e.g.
    ``Metadata_qc_pass_cell_fraction``); numeric QC scores (z-scores, fractions)
    are dropped. Returns ``{old: new or "dropped"}``.
    """
    done: dict[str, str] = {}
    if not cols:
        return done
    valid = codes >= 0
    sizes = np.bincount(codes[valid], minlength=n_groups).astype(np.float64)
    store = record(result).as_dict()
    for c in cols:
        if c in result.obs.columns:
            result.obs.drop(columns=c, inplace=True)
        s = obs[c]
        if s.dtype == object and s.notna().any() and s.dropna().map(lambda v: isinstance(v, (bool, np.bool_))).all():
            s = s.astype("boolean")  # a flag read back with missing values (e.g. parquet bool with nulls)
        if s.dtype == bool or str(s.dtype) == "boolean":
            flagged = s.fillna(False).to_numpy(dtype=bool)
            counts = np.bincount(codes[valid], weights=flagged[valid].astype(np.float64), minlength=n_groups)
            with np.errstate(invalid="ignore", divide="ignore"):
                result.obs[f"{c}_cell_fraction"] = counts / sizes
            done[c] = f"{c}_cell_fraction"
        else:
            done[c] = "dropped"
    if "columns" in store:
        n_obs_cols = [x for x in store["columns"] if x not in cols and x not in result.var_names]
        store["columns"] = [*n_obs_cols, *[v for v in done.values() if v != "dropped"], *map(str, result.var_names)]
    if "obs_dtypes" in store:
        dtypes = {k: v for k, v in json.loads(store["obs_dtypes"] or "{}").items() if k not in cols}
        dtypes.update({v: "float64" for v in done.values() if v != "dropped"})
        store["obs_dtypes"] = json.dumps(dtypes)
    return done
