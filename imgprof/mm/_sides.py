"""One side of a join: the normalised key tuples of every row, and why a row cannot take part.

Private module of :mod:`imgprof.mm.join`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._core.validation import check_obs_keys
from ._keys import is_missing, normalize_names, recode_doses, split_multi, to_micromolar, unit_factor, unit_mismatch_hint
from ._spec import DoseSpec, DoseUnitError, KeySpec


@dataclass
class Side:
    """The keys of one modality's rows."""

    name: str
    n_rows: int
    # row position -> list of key tuples (normalised); empty when the row is dropped
    row_keys: list[list[tuple]]
    # normalised component value -> set of raw spellings, per key name
    raw: dict[str, dict[str, set]]
    drop_reason: np.ndarray
    dose_status: dict[str, int] = field(default_factory=dict)
    collisions: dict[str, dict[str, list]] = field(default_factory=dict)


@dataclass(frozen=True)
class DoseOptions:
    """How doses are matched (see :func:`imgprof.mm.join`)."""

    series: Sequence[float] | None
    rtol: float
    off_series: str


def resolve_unit(obs: pd.DataFrame, unit: str, side: str) -> Any:
    """A unit string (checked) or the ``obs`` column holding one unit per row."""
    if unit in obs.columns:
        return obs[unit]
    try:
        unit_factor(unit, where=f"dose_unit for {side}")
    except ValueError as e:
        raise DoseUnitError(
            f"dose_unit for {side}: {unit!r} is neither a known concentration unit (M, mM, uM/µM, nM, pM) "
            f"nor a column of {side}.obs."
        ) from e
    return unit


def _dose_label(v: float, recoded: bool) -> str:
    return f"{v:g}" if recoded else f"{v:.6g}"


def _key_component(obs: pd.DataFrame, k: KeySpec, col: str, names: Any, reason: np.ndarray) -> tuple[list, dict, dict]:
    """Per row: sorted normalised values of one key column; the raw spellings and merged spellings."""
    miss = is_missing(obs[col])
    raw_pieces = split_multi(obs[col].astype(object).where(~miss, None), k.sep)
    flat = [p for ps in raw_pieces for p in ps]
    norm_flat = normalize_names(pd.Series(flat, dtype=object), names).tolist() if flat else []
    it = iter(norm_flat)
    per_row = []
    mapping: dict[str, set] = {}
    for ps in raw_pieces:
        vals = []
        for p in ps:
            nv = next(it)
            if nv is None or nv is pd.NA:
                continue
            mapping.setdefault(nv, set()).add(p)
            vals.append(nv)
        per_row.append(sorted(set(vals)))
    for i, vals in enumerate(per_row):
        if not vals and reason[i] is None:
            reason[i] = f"missing {col}"
    merged = {nv: sorted(r) for nv, r in mapping.items() if len(r) > 1}
    return per_row, mapping, merged


def _recoded_doses(adata: ad.AnnData, dose: DoseSpec, idx: int, side: str, opts: DoseOptions) -> tuple[np.ndarray, np.ndarray]:
    """Doses in µM recoded onto the series (NaN: cannot take part) and their status."""
    obs = adata.obs
    col = dose.cols[idx]
    check_obs_keys(adata, [col], param=f"dose ({side})")
    unit = resolve_unit(obs, dose.units[idx], side)
    where = f"dose {side}.obs[{col!r}] (unit {dose.units[idx]!r})"
    try:
        um = to_micromolar(obs[col].to_numpy(), unit if isinstance(unit, str) else unit.to_numpy(), where=where)
    except ValueError as e:
        raise DoseUnitError(str(e)) from e
    if opts.series is not None:
        declared = unit_factor(unit, where=where) if isinstance(unit, str) else None
        hint = unit_mismatch_hint(um, opts.series, opts.rtol, declared)
        if hint:
            raise DoseUnitError(f"{where}: {hint}. Check dose_unit=.")
        return recode_doses(um, opts.series, rtol=opts.rtol, off_series=opts.off_series)
    rec = um.copy()
    status = np.where(np.isnan(um), "missing", np.where(um == 0, "zero", np.where(um < 0, "negative", "on_series")))
    rec[(um <= 0)] = np.nan
    return rec, status


def _dose_component(adata: ad.AnnData, dose: DoseSpec, idx: int, side: str, opts: DoseOptions,
                    reason: np.ndarray, raw: dict[str, dict[str, set]]) -> tuple[list, dict[str, int]]:
    """Per row: the dose label (empty when the dose cannot take part); the count per dose status."""
    col = dose.cols[idx]
    rec, status = _recoded_doses(adata, dose, idx, side, opts)
    dose_status = {str(s): int(c) for s, c in zip(*np.unique(status.astype(str), return_counts=True))}
    reasons_map = {
        "missing": f"missing dose ({col})",
        "zero": f"dose 0 ({col}; vehicle)",
        "negative": f"negative dose ({col})",
        "off_series": f"dose not on the series ({col})",
    }
    labels: list[list[str]] = []
    values = adata.obs[col]
    for i in range(adata.n_obs):
        if np.isnan(rec[i]):
            labels.append([])
            if reason[i] is None:
                reason[i] = reasons_map.get(str(status[i]), f"dose {status[i]}")
        else:
            lab = _dose_label(rec[i], opts.series is not None)
            labels.append([lab])
            raw.setdefault(dose.name, {}).setdefault(lab, set()).add(f"{values.iloc[i]}")
    raw.setdefault(dose.name, {})
    return labels, dose_status


def prepare_side(adata: ad.AnnData, side: str, idx: int, keys: list[KeySpec], dose: DoseSpec | None, names: Any,
                 opts: DoseOptions) -> Side:
    """Normalised key tuples of every row of one modality (``idx``: 0 left, 1 right column of each key)."""
    check_obs_keys(adata, [k.cols[idx] for k in keys], param=f"on ({side})")
    n = adata.n_obs
    reason = np.full(n, None, dtype=object)
    comps: list[list] = []  # per key: per row list of normalised values
    raw: dict[str, dict[str, set]] = {}
    collisions: dict[str, dict[str, list]] = {}
    for k in keys:
        per_row, raw[k.name], merged = _key_component(adata.obs, k, k.cols[idx], names, reason)
        comps.append(per_row)
        if merged:
            collisions[k.name] = merged
    dose_status: dict[str, int] = {}
    if dose is not None:
        labels, dose_status = _dose_component(adata, dose, idx, side, opts, reason, raw)
        comps.append(labels)
    row_keys = [[] if reason[i] is not None else [tuple(t) for t in itertools.product(*[c[i] for c in comps])]
                for i in range(n)]
    return Side(side, n, row_keys, raw, reason, dose_status, collisions)
