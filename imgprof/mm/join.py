"""Join image-based profiles with another modality (expression, proteomics) by perturbation keys.

The join is explicit about every decision: how names are normalised (case,
whitespace, punctuation), how doses are converted to µM and recoded onto the
standard dose series, how multi-valued labels (``"EGFR inhibitor|KIT inhibitor"``)
are split, and which perturbations matched, which did not and why. The result is
a :class:`mudata.MuData` whose modalities share observations (one per matched
perturbation) so that cross-modal analyses can pair them.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd

from .._core.provenance import UNS_KEY, inherit, log_step, set_level
from .._core.validation import (
    as_list,
    check_df_keys,
    check_float,
    check_new_obs_key,
    check_obs_keys,
    finish,
    get_matrix,
    is_dask,
    resolve_mask,
    start,
)
from ._keys import (
    STANDARD_DOSES_UM,
    canonical_unit,
    is_missing,
    normalize_names,
    recode_doses,
    split_multi,
    to_micromolar,
    unit_factor,
    unit_mismatch_hint,
)

__all__ = [
    "AmbiguousKeyError",
    "DoseUnitError",
    "JoinError",
    "JoinReport",
    "STANDARD_DOSES_UM",
    "annotate",
    "join",
    "join_report",
    "match_keys",
    "recode_dose",
]

KEY_SEP = "; "


class JoinError(ValueError):
    """A join that cannot produce a meaningful result (no overlap, ambiguous keys). ``.report`` holds the details."""

    def __init__(self, message: str, report: JoinReport | None = None):
        super().__init__(message)
        self.report = report


class AmbiguousKeyError(JoinError):
    """One key matches several rows where exactly one was required."""


class DoseUnitError(ValueError):
    """Doses whose unit is unknown, missing or evidently wrong."""


# ----------------------------------------------------------------------------- key specs


@dataclass(frozen=True)
class _Key:
    name: str
    cols: tuple[str, str]
    sep: str | None = None


@dataclass(frozen=True)
class _Dose:
    name: str
    cols: tuple[str, str]
    units: tuple[str, str]


def _pair(value, what: str) -> tuple[str, str]:
    if isinstance(value, str):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return (value[0], value[1])
    raise TypeError(f"{what}: expected a column name or a (left, right) pair of column names, got {value!r}.")


def _parse_on(on, sep) -> list[_Key]:
    if on is None:
        return []
    if isinstance(on, Mapping):
        items = [(str(k), _pair(v, f"on[{k!r}]")) for k, v in on.items()]
    else:
        entries = [on] if isinstance(on, (str, tuple)) else list(on)
        items = []
        for e in entries:
            cols = _pair(e, "on")
            items.append((cols[0], cols))
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"on: key names must be unique, got {names}.")
    if isinstance(sep, Mapping):
        unknown = set(sep) - set(names)
        if unknown:
            raise KeyError(f"sep: key(s) {sorted(unknown)} are not join keys {names}.")
        return [_Key(n, c, sep.get(n)) for n, c in items]
    return [_Key(n, c, sep) for n, c in items]


def _parse_dose(dose, dose_unit, key_names) -> _Dose | None:
    if dose is None:
        if dose_unit is not None:
            raise ValueError("dose_unit= was given without dose=.")
        return None
    if isinstance(dose, Mapping):
        if len(dose) != 1:
            raise ValueError("dose: give one {name: (left, right)} entry.")
        (name, cols), = dose.items()
        cols = _pair(cols, "dose")
    else:
        cols = _pair(dose, "dose")
        name = "dose"
    if name in key_names:
        raise ValueError(f"dose key name {name!r} clashes with a join key in on=.")
    if dose_unit is None:
        raise DoseUnitError(
            "dose_unit= is required with dose=: give the unit of each side, as a unit ('uM', 'nM', 'mM') or the "
            "name of a column that holds one unit per row, e.g. dose_unit=('uM', 'pert_dose_unit'). "
            "Units are never guessed from column names (LINCS's 'Metadata_mmoles_per_liter' holds µM)."
        )
    units = _pair(dose_unit, "dose_unit") if not isinstance(dose_unit, str) else (dose_unit, dose_unit)
    return _Dose(str(name), cols, units)


def _sep_label(sep) -> str | dict | None:
    return dict(sep) if isinstance(sep, Mapping) else sep


# ----------------------------------------------------------------------------- one side


@dataclass
class _Side:
    name: str
    n_rows: int
    # row position -> list of key tuples (normalised); empty when the row is dropped
    row_keys: list[list[tuple]]
    # normalised component value -> set of raw spellings, per key name
    raw: dict[str, dict[str, set]]
    drop_reason: np.ndarray
    dose_status: dict[str, int] = field(default_factory=dict)
    collisions: dict[str, dict[str, list]] = field(default_factory=dict)


def _resolve_unit(obs: pd.DataFrame, unit: str, side: str):
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


def _prepare_side(
    adata,
    side: str,
    idx: int,
    keys: list[_Key],
    dose: _Dose | None,
    names,
    dose_series,
    dose_rtol: float,
    dose_off_series: str,
) -> _Side:
    obs = adata.obs
    check_obs_keys(adata, [k.cols[idx] for k in keys], param=f"on ({side})")
    n = adata.n_obs
    reason = np.full(n, None, dtype=object)
    comps: list[list[list[str]]] = []  # per key: per row list of normalised values
    raw: dict[str, dict[str, set]] = {}
    collisions: dict[str, dict[str, list]] = {}
    for k in keys:
        col = k.cols[idx]
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
        comps.append(per_row)
        raw[k.name] = mapping
        merged = {nv: sorted(r) for nv, r in mapping.items() if len(r) > 1}
        if merged:
            collisions[k.name] = merged
    dose_status: dict[str, int] = {}
    if dose is not None:
        col = dose.cols[idx]
        check_obs_keys(adata, [col], param=f"dose ({side})")
        unit = _resolve_unit(obs, dose.units[idx], side)
        where = f"dose {side}.obs[{col!r}] (unit {dose.units[idx]!r})"
        try:
            um = to_micromolar(obs[col].to_numpy(), unit if isinstance(unit, str) else unit.to_numpy(), where=where)
        except ValueError as e:
            raise DoseUnitError(str(e)) from e
        if dose_series is not None:
            declared = unit_factor(unit, where=where) if isinstance(unit, str) else None
            hint = unit_mismatch_hint(um, dose_series, dose_rtol, declared)
            if hint:
                raise DoseUnitError(f"{where}: {hint}. Check dose_unit=.")
            rec, status = recode_doses(um, dose_series, rtol=dose_rtol, off_series=dose_off_series)
        else:
            rec = um.copy()
            status = np.where(np.isnan(um), "missing", np.where(um == 0, "zero", np.where(um < 0, "negative", "on_series")))
            rec[(um <= 0)] = np.nan
        dose_status = {str(s): int(c) for s, c in zip(*np.unique(status.astype(str), return_counts=True))}
        labels = []
        reasons_map = {
            "missing": f"missing dose ({col})",
            "zero": f"dose 0 ({col}; vehicle)",
            "negative": f"negative dose ({col})",
            "off_series": f"dose not on the series ({col})",
        }
        for i in range(n):
            if np.isnan(rec[i]):
                labels.append([])
                if reason[i] is None:
                    reason[i] = reasons_map.get(str(status[i]), f"dose {status[i]}")
            else:
                lab = _dose_label(rec[i], dose_series is not None)
                labels.append([lab])
                raw.setdefault(dose.name, {}).setdefault(lab, set()).add(f"{obs[col].iloc[i]}")
        raw.setdefault(dose.name, {})
        comps.append(labels)
    row_keys = []
    for i in range(n):
        if reason[i] is not None:
            row_keys.append([])
            continue
        row_keys.append([tuple(t) for t in itertools.product(*[c[i] for c in comps])])
    return _Side(side, n, row_keys, raw, reason, dose_status, collisions)


# ----------------------------------------------------------------------------- report


@dataclass
class JoinReport:
    """What a join matched, what it did not and why.

    Attributes
    ----------
    table
        One row per perturbation key seen on either side: ``key``, one column per
        key component, ``status`` (``"matched"``, ``"only_<mod>"``), ``n_<mod>``
        (rows of each modality carrying the key), ``raw_<mod>`` (raw spellings
        before normalisation) and ``note``.
    dropped
        Rows that could not take part (missing key, dose off the series, vehicle...),
        counted per modality and reason, with examples.
    summary
        Counts and the normalisation that was applied.

    Examples
    --------
    >>> import imgprof as ip
    >>> morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
    >>> ip.mm.annotate(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["moa"])
    >>> rep = ip.mm.match_keys(morph, expr, on=("Metadata_moa", "moa"), sep="|")
    >>> sorted(rep.table["status"].unique())[0]
    'matched'
    """

    table: pd.DataFrame
    dropped: pd.DataFrame
    summary: dict

    @property
    def matched(self) -> list[str]:
        """Matched keys."""
        return self.table.loc[self.table["status"] == "matched", "key"].tolist()

    def __repr__(self) -> str:
        s = self.summary
        mods = s["modalities"]
        lines = [
            f"JoinReport: {s['n_matched']} matched key(s) on {s['keys']} (level={s['level']!r}, names={s['names']!r})",
        ]
        for m in mods:
            lines.append(
                f"  {m}: {s['n_rows'][m]} rows, {s['n_rows_usable'][m]} with usable keys, "
                f"{s['n_keys'][m]} distinct key(s), {s['n_only'][m]} only in {m}, {s['n_rows_matched'][m]} rows matched"
            )
        if len(self.dropped):
            lines.append("  rows that could not take part:")
            for _, r in self.dropped.iterrows():
                lines.append(f"    {r['modality']}: {r['n_rows']} row(s): {r['reason']}")
        notes = self.table.loc[self.table["note"] != "", ["key", "note"]]
        for _, r in notes.head(10).iterrows():
            lines.append(f"  note {r['key']!r}: {r['note']}")
        return "\n".join(lines)


def _build_report(a: _Side, b: _Side, keys: list[_Key], dose: _Dose | None, names, level, sep) -> JoinReport:
    comp_names = [k.name for k in keys] + ([dose.name] if dose is not None else [])
    counts = []
    for s in (a, b):
        c: dict[tuple, int] = {}
        for ks in s.row_keys:
            for t in ks:
                c[t] = c.get(t, 0) + 1
        counts.append(c)
    all_keys = sorted(set(counts[0]) | set(counts[1]))
    rows = []
    for t in all_keys:
        na, nb = counts[0].get(t, 0), counts[1].get(t, 0)
        status = "matched" if na and nb else (f"only_{a.name}" if na else f"only_{b.name}")
        ra = [" / ".join(sorted(a.raw[c].get(v, set()))) for c, v in zip(comp_names, t)]
        rb = [" / ".join(sorted(b.raw[c].get(v, set()))) for c, v in zip(comp_names, t)]
        note = ""
        if status == "matched":
            diffs = [
                f"{c}: {x!r} vs {y!r}" for c, x, y, v in zip(comp_names, ra, rb, t)
                if x != y and (dose is None or c != dose.name)
            ]
            if diffs:
                note = "matched after name normalisation (" + "; ".join(diffs) + ")"
        row = {"key": KEY_SEP.join(t)}
        row.update(dict(zip(comp_names, t)))
        row.update({
            "status": status,
            f"n_{a.name}": na,
            f"n_{b.name}": nb,
            f"raw_{a.name}": KEY_SEP.join(ra),
            f"raw_{b.name}": KEY_SEP.join(rb),
            "note": note,
        })
        rows.append(row)
    cols = ["key", *comp_names, "status", f"n_{a.name}", f"n_{b.name}", f"raw_{a.name}", f"raw_{b.name}", "note"]
    table = pd.DataFrame(rows, columns=cols)
    if table["key"].duplicated().any():
        dup = table.loc[table["key"].duplicated(keep=False), comp_names].head(4).to_dict("records")
        raise ValueError(
            f"join: key values contain the separator {KEY_SEP!r}, so different keys read the same, e.g. {dup}; "
            "pass a names= callable that removes it."
        )
    # near misses: unmatched values that coincide with a value of the other side under names="alnum"
    if len(table):
        for j, c in enumerate(k.name for k in keys):
            vals = sorted({t[j] for cnt in counts for t in cnt})
            loose_of = dict(zip(vals, normalize_names(pd.Series(vals, dtype=object), "alnum").tolist()))
            for own, other in ((0, 1), (1, 0)):
                own_name = (a, b)[own].name
                other_vals = {t[j] for t in counts[other]}
                loose: dict[str, set] = {}
                for v in other_vals:
                    loose.setdefault(loose_of[v], set()).add(v)
                mask = table["status"] == f"only_{own_name}"
                for v in set(table.loc[mask, c]) - other_vals:
                    lv = loose_of.get(v)
                    if lv is not None and lv in loose:
                        table.loc[mask & (table[c] == v), "note"] = (
                            f"{c} {v!r} would match {sorted(loose[lv])} with names='alnum' (punctuation ignored)"
                        )
    drops = []
    for s in (a, b):
        r = pd.Series(s.drop_reason)
        r = r[r.notna()]
        for reason, grp in r.groupby(r):
            drops.append({"modality": s.name, "reason": reason, "n_rows": int(len(grp)), "rows": [int(i) for i in grp.index[:5]]})
    dropped = pd.DataFrame(drops, columns=["modality", "reason", "n_rows", "rows"])
    matched = set(table.loc[table["status"] == "matched", "key"])
    # matched keys built from exactly the same rows in a modality are the same profile (not independent)
    same_rows: dict[str, list[list[str]]] = {}
    for s in (a, b):
        rowsets: dict[str, set] = {}
        for i, ks in enumerate(s.row_keys):
            for t in ks:
                k = KEY_SEP.join(t)
                if k in matched:
                    rowsets.setdefault(k, set()).add(i)
        groups: dict[frozenset, list[str]] = {}
        for k, r in rowsets.items():
            groups.setdefault(frozenset(r), []).append(k)
        same_rows[s.name] = [sorted(g) for g in groups.values() if len(g) > 1]
        for g in same_rows[s.name]:
            for k in g:
                others = [o for o in g if o != k]
                extra = f"same {s.name} rows as {others[:4]}{'...' if len(others) > 4 else ''}"
                cur = table.loc[table["key"] == k, "note"].iloc[0]
                table.loc[table["key"] == k, "note"] = f"{cur}; {extra}" if cur else extra
    summary = {
        "modalities": [a.name, b.name],
        "keys": comp_names,
        "columns": {k.name: list(k.cols) for k in keys} | ({dose.name: list(dose.cols)} if dose else {}),
        "names": names if isinstance(names, str) else getattr(names, "__name__", "callable"),
        "sep": _sep_label(sep),
        "level": level,
        "n_matched": int(len(matched)),
        "n_rows": {s.name: s.n_rows for s in (a, b)},
        "n_rows_usable": {s.name: int(sum(bool(k) for k in s.row_keys)) for s in (a, b)},
        "n_rows_matched": {
            s.name: int(sum(any(KEY_SEP.join(t) in matched for t in ks) for ks in s.row_keys)) for s in (a, b)
        },
        "n_keys": {s.name: int(len(c)) for s, c in zip((a, b), counts)},
        "n_only": {s.name: int((table["status"] == f"only_{s.name}").sum()) for s in (a, b)},
        "dose_status": {s.name: s.dose_status for s in (a, b)},
        "merged_spellings": {s.name: s.collisions for s in (a, b)},
        "keys_with_identical_rows": same_rows,
    }
    return JoinReport(table, dropped, summary)


def _per_component_overlap(report: JoinReport, a: str, b: str) -> str:
    t = report.table
    parts = []
    for c in report.summary["keys"]:
        va = set(t.loc[t[f"n_{a}"] > 0, c])
        vb = set(t.loc[t[f"n_{b}"] > 0, c])
        ex_a, ex_b = sorted(va)[:3], sorted(vb)[:3]
        parts.append(f"{c}: {len(va & vb)} shared value(s) ({a} has {len(va)}, e.g. {ex_a}; {b} has {len(vb)}, e.g. {ex_b})")
    return "; ".join(parts)


def _check_modalities(morph, expr, mod_names):
    for x, m in zip((morph, expr), mod_names):
        if not isinstance(x, ad.AnnData):
            raise TypeError(f"{m}: expected an AnnData, got {type(x).__name__}.")
    if len(mod_names) != 2 or mod_names[0] == mod_names[1]:
        raise ValueError(f"mod_names={mod_names!r}: give two different names.")


def _match(morph, expr, on, *, dose, dose_unit, dose_series, dose_rtol, dose_off_series, names, sep, mod_names, level):
    _check_modalities(morph, expr, mod_names)
    keys = _parse_on(on, sep)
    dspec = _parse_dose(dose, dose_unit, [k.name for k in keys])
    if not keys and dspec is None:
        raise ValueError("on: give at least one key column (or a dose=).")
    sides = [
        _prepare_side(x, m, i, keys, dspec, names, dose_series, dose_rtol, dose_off_series)
        for i, (x, m) in enumerate(zip((morph, expr), mod_names))
    ]
    return _build_report(sides[0], sides[1], keys, dspec, names, level, sep), sides


def match_keys(
    morph: ad.AnnData,
    expr: ad.AnnData,
    on,
    *,
    dose=None,
    dose_unit=None,
    dose_series: Sequence[float] | None = STANDARD_DOSES_UM,
    dose_rtol: float = 0.05,
    dose_off_series: str = "nan",
    names: str | Callable[[str], str] = "casefold",
    sep: str | Mapping[str, str] | None = None,
    mod_names: tuple[str, str] = ("morph", "expr"),
    level: str = "perturbation",
) -> JoinReport:
    """Match perturbation keys between two modalities and report the outcome, without joining.

    Takes the same key arguments as :func:`join` and never raises for a poor
    overlap: use it to inspect what a join would keep.

    Parameters
    ----------
    morph, expr
        The two modalities (profiles at perturbation or well level).
    on
        Key column(s): one name for both, or ``(morph_column, expr_column)``.
    dose, dose_unit, dose_series, dose_rtol, dose_off_series
        Optional dose matching, as in :func:`imgprof.mm.join`.
    names
        Name normalisation (``"casefold"`` or a callable).
    sep
        Separator of multi-valued keys (``"|"``), per modality when a mapping.
    mod_names
        Names of the two modalities in the report.
    level
        Level at which keys are matched (``"perturbation"``).

    Returns
    -------
    :class:`JoinReport`

    Examples
    --------
    >>> import imgprof as ip
    >>> morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
    >>> ip.mm.annotate(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["moa"])
    >>> rep = ip.mm.match_keys(morph, expr, on=("Metadata_moa", "moa"), sep="|")
    >>> rep.summary["n_matched"]
    8
    """
    return _match(
        morph, expr, on, dose=dose, dose_unit=dose_unit, dose_series=dose_series, dose_rtol=dose_rtol,
        dose_off_series=dose_off_series, names=names, sep=sep, mod_names=mod_names, level=level,
    )[0]


# ----------------------------------------------------------------------------- consensus


def _dense(X):
    if is_dask(X):
        X = X.compute()
    return np.asarray(X)


def _group_consensus(sub: ad.AnnData, by: str, method: str) -> ad.AnnData:
    """Consensus profile per group with :func:`imgprof.pp.consensus` (median, mean or MODZ)."""
    from ..pp import consensus as _consensus

    with warnings.catch_warnings():
        # all-NaN features within a group stay NaN and are warned about by pp itself; silence duplicates here
        warnings.simplefilter("ignore", category=UserWarning)
        return _consensus(sub, by=by, operation=method, count_key=None, keep_metadata=True, single_replicate="ignore")


# ----------------------------------------------------------------------------- join


def _keys_frame(keys_str: list[str], comp_names: list[str], report: JoinReport) -> pd.DataFrame:
    """Component values of each key string (looked up, never parsed back from the string)."""
    t = report.table.set_index("key")
    return t.loc[list(keys_str), comp_names].set_axis(list(keys_str), axis=0)


def _exploded(adata: ad.AnnData, side: _Side, matched: set, mod: str, comp_names, report) -> ad.AnnData:
    rows, ks = [], []
    for i, tuples in enumerate(side.row_keys):
        for t in tuples:
            k = KEY_SEP.join(t)
            if k in matched:
                rows.append(i)
                ks.append(k)
    rows = np.asarray(rows, dtype=int)
    X = _dense(get_matrix(adata))[rows]
    obs = adata.obs.iloc[rows].copy()
    obs.index = [f"{mod}:{adata.obs_names[i]}:{k}" for i, k in zip(rows, ks)]
    obs["mm_key"] = pd.Categorical(ks)
    kf = _keys_frame(ks, comp_names, report)
    for c in comp_names:
        obs[f"mm_{c}"] = kf[c].to_numpy()
    sub = ad.AnnData(X=X, obs=obs, var=adata.var.copy())
    inherit(sub, adata)  # earlier provenance steps and the level travel with the rows
    if "level" not in sub.uns[UNS_KEY]:
        set_level(sub, "well")
    return sub


def join(
    morph: ad.AnnData,
    expr: ad.AnnData,
    on,
    *,
    level: str = "perturbation",
    dose=None,
    dose_unit=None,
    dose_series: Sequence[float] | None = STANDARD_DOSES_UM,
    dose_rtol: float = 0.05,
    dose_off_series: str = "nan",
    names: str | Callable[[str], str] = "casefold",
    sep: str | Mapping[str, str] | None = None,
    consensus: str = "median",
    paired: bool = True,
    controls=None,
    mod_names: tuple[str, str] = ("morph", "expr"),
    min_matches: int = 1,
):
    """Join morphology profiles with another modality, matched by perturbation keys.

    Parameters
    ----------
    morph, expr
        The two modalities (any AnnData: Cell Painting, L1000/RNA-seq, proteomics).
    on
        Key columns: a name present in both ``.obs``, a ``(left, right)`` pair when
        the columns are named differently, a list of those, or a dict
        ``{key_name: (left, right)}``. E.g. ``on=("Metadata_moa", "moa")``.
    level
        ``"perturbation"``: take a consensus profile per key in each modality first
        (so well-level and consensus-level inputs can be joined) and pair the
        consensus profiles one to one. ``"well"``: keep every row; with
        ``paired=True`` each key must identify exactly one row in each modality
        (e.g. the same sample measured twice), otherwise an
        :class:`AmbiguousKeyError` is raised.
    dose, dose_unit
        Optional dose key: column name (or ``(left, right)``), with the unit of each
        side, as a unit string (``"uM"``, ``"nM"``...) or the name of a column with one
        unit per row (e.g. ``("uM", "pert_dose_unit")``). Doses are converted to µM
        and recoded onto ``dose_series``.
    dose_series, dose_rtol, dose_off_series
        Nominal doses (µM; default the 6-point LINCS series 0.04–10 µM), the relative
        tolerance for "the same dose", and what to do with doses off the series
        (``"nan"``: exclude and report, ``"nearest"``: snap anyway, ``"raise"``).
        ``dose_series=None`` matches exact doses (after unit conversion).
    names
        Name normalisation applied to every key before matching: ``"exact"``,
        ``"strip"``, ``"casefold"`` (default: case and whitespace ignored), ``"alnum"``
        (punctuation ignored too) or a callable.
    sep
        Separator of multi-valued labels (``"|"`` for Repurposing Hub MOAs and
        targets), for all keys or per key ``{key_name: "|"}``. A profile with several
        labels contributes to each of them.
    consensus
        Consensus method for ``level="perturbation"`` (passed to :func:`imgprof.pp.consensus`).
    paired
        For ``level="well"``: require one row per key on each side (observations are then
        shared between modalities). ``paired=False`` keeps all rows of matched keys
        unpaired (observation names prefixed by the modality name) for per-modality
        analyses on the same perturbations.
    controls
        Only with ``level="well", paired=False``: negative controls to keep as well,
        one selection per modality (query strings, boolean masks or obs names), e.g.
        ``("Metadata_pert_type == 'control'", "pert_type == 'ctl_vehicle'")``. They
        get ``obs["mm_control"] = True`` and an empty ``mm_key`` (also when their
        name matched as a key, e.g. DMSO; the report counts them), so replicate
        retrieval against controls can run on the joined object.
    mod_names
        Modality names in the result.
    min_matches
        Raise :class:`JoinError` when fewer keys match (default 1: an empty join is an error).

    Returns
    -------
    :class:`mudata.MuData` with modalities ``mod_names``. Each modality's ``.obs``
    holds ``mm_key`` and ``mm_<key>`` (normalised key values; plus
    ``mm_n_profiles`` for consensus profiles). ``mdata.obs`` holds the key columns
    when paired. The report is in ``mdata.uns`` (read it with :func:`join_report`).

    Raises
    ------
    JoinError
        No (or fewer than ``min_matches``) matched keys; the message counts the
        shared values per key component to show which key prevents matching.
    AmbiguousKeyError
        ``level="well", paired=True`` and a key matches several rows.
    DoseUnitError
        Missing or unknown dose units, or doses that look like the wrong unit.

    Examples
    --------
    >>> import imgprof as ip
    >>> morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
    >>> ip.mm.annotate(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["moa", "target"])
    >>> mdata = ip.mm.join(morph, expr, on={"moa": ("Metadata_moa", "moa")}, sep="|")
    >>> mdata.n_obs, mdata["morph"].shape[1], mdata["expr"].shape[1]
    (8, 454, 978)
    """
    import mudata as md

    if level not in ("perturbation", "well"):
        raise ValueError(f"level={level!r}: expected 'perturbation' or 'well'.")
    a_name, b_name = mod_names
    report, sides = _match(
        morph, expr, on, dose=dose, dose_unit=dose_unit, dose_series=dose_series, dose_rtol=dose_rtol,
        dose_off_series=dose_off_series, names=names, sep=sep, mod_names=mod_names, level=level,
    )
    comp_names = report.summary["keys"]
    matched = report.matched
    if len(matched) < max(1, min_matches):
        raise JoinError(
            f"join: {len(matched)} key(s) matched between {a_name} and {b_name} (need at least {max(1, min_matches)}). "
            f"Per key: {_per_component_overlap(report, a_name, b_name)}. "
            f"Rows usable: {report.summary['n_rows_usable']}. See the .report attribute of this error, or "
            "ip.mm.match_keys(...) to inspect; names='alnum' ignores punctuation.",
            report,
        )
    mset = set(matched)
    if controls is not None and (level != "well" or paired):
        raise ValueError("controls= is only used with level='well', paired=False (unpaired wells).")
    if controls is not None:
        if isinstance(controls, (str, np.ndarray, pd.Series)) or len(controls) != 2:
            raise ValueError("controls: give one selection per modality, e.g. (query_for_morph, query_for_expr).")
        ctrl_masks = [resolve_mask(x, c, param=f"controls ({m})") for x, c, m in zip((morph, expr), controls, mod_names)]
    else:
        ctrl_masks = [np.zeros(morph.n_obs, bool), np.zeros(expr.n_obs, bool)]
    params = {
        "on": report.summary["columns"], "level": level, "names": report.summary["names"], "sep": _sep_label(sep),
        "dose_unit": list(dose_unit) if isinstance(dose_unit, (tuple, list)) else dose_unit,
        "dose_series": list(dose_series) if dose_series is not None else None, "dose_rtol": dose_rtol,
        "consensus": consensus, "paired": paired, "mod_names": list(mod_names),
        "controls": [c if isinstance(c, str) else "<mask>" for c in controls] if controls is not None else None,
    }
    mods = {}
    if level == "perturbation":
        for x, s in zip((morph, expr), sides):
            sub = _exploded(x, s, mset, s.name, comp_names, report)
            cons = _group_consensus(sub, "mm_key", consensus)
            cons.obs_names = cons.obs["mm_key"].astype(str).to_numpy()
            cons = cons[matched].copy()
            kf = _keys_frame(matched, comp_names, report)
            for c in comp_names:
                cons.obs[f"mm_{c}"] = kf[c].to_numpy()
            counts = sub.obs["mm_key"].astype(str).value_counts()
            cons.obs["mm_n_profiles"] = counts.reindex(matched).to_numpy().astype(int)
            set_level(cons, "consensus")
            log_step(cons, "mm.join", params, modality=s.name, n_keys=len(matched))
            mods[s.name] = cons
    else:
        if paired:
            multi = report.table.loc[
                (report.table["status"] == "matched") & ((report.table[f"n_{a_name}"] > 1) | (report.table[f"n_{b_name}"] > 1))
            ]
            if len(multi):
                ex = multi.head(5)[["key", f"n_{a_name}", f"n_{b_name}"]].to_dict("records")
                raise AmbiguousKeyError(
                    f"join(level='well', paired=True): {len(multi)} of {len(matched)} matched key(s) identify several rows, "
                    f"e.g. {ex}. Add keys that make rows unique (replicate, plate, well), use level='perturbation' to "
                    "take a consensus per key first, or paired=False to keep the rows unpaired.",
                    report,
                )
            for x, s in zip((morph, expr), sides):
                sub = _exploded(x, s, mset, s.name, comp_names, report)
                sub.obs_names = sub.obs["mm_key"].astype(str).to_numpy()
                sub = sub[matched].copy()
                log_step(sub, "mm.join", params, modality=s.name, n_keys=len(matched))
                mods[s.name] = sub
        else:
            for x, s, cmask in zip((morph, expr), sides, ctrl_masks):
                keep = [
                    i for i, ks in enumerate(s.row_keys) if cmask[i] or any(KEY_SEP.join(t) in mset for t in ks)
                ]
                sub = x[keep].copy()
                sub.X = _dense(sub.X) if is_dask(sub.X) else sub.X
                sub.obs_names = [f"{s.name}:{n}" for n in sub.obs_names]
                mk = ["|".join(sorted({KEY_SEP.join(t) for t in s.row_keys[i] if KEY_SEP.join(t) in mset})) for i in keep]
                sub.obs["mm_key"] = mk
                for j, c in enumerate(comp_names):
                    sub.obs[f"mm_{c}"] = [
                        "|".join(sorted({t[j] for t in s.row_keys[i] if KEY_SEP.join(t) in mset})) for i in keep
                    ]
                sub.obs["mm_control"] = cmask[keep]
                # a control row is a control, even if its name (e.g. DMSO) also matched as a key
                ck = np.asarray(cmask[keep])
                for col in ["mm_key", *[f"mm_{c}" for c in comp_names]]:
                    sub.obs.loc[ck, col] = ""
                report.summary.setdefault("n_controls", {})[s.name] = int(ck.sum())
                report.summary.setdefault("n_controls_with_matched_key", {})[s.name] = int(
                    sum(1 for i in keep if cmask[i] and any(KEY_SEP.join(t) in mset for t in s.row_keys[i]))
                )
                log_step(sub, "mm.join", params, modality=s.name, n_keys=len(matched), n_controls=int(cmask.sum()))
                mods[s.name] = sub
    shared_vars = sorted(set(mods[a_name].var_names) & set(mods[b_name].var_names))
    report.summary["n_shared_var_names"] = len(shared_vars)
    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        # shared feature names (two Cell Painting sets) are fine here; their count is in the report
        warnings.filterwarnings("ignore", message="var_names are not unique")
        mdata = md.MuData(mods)
    if level == "perturbation" or paired:
        kf = _keys_frame(list(mdata.obs_names), comp_names, report)
        for c in comp_names:
            mdata.obs[c] = kf[c].to_numpy()
        for m in mod_names:
            if "mm_n_profiles" in mods[m].obs:
                mdata.obs[f"n_{m}"] = mods[m].obs.loc[mdata.obs_names, "mm_n_profiles"].to_numpy()
    _store_report(mdata, report)
    log_step(mdata, "mm.join", params, n_matched=len(matched), summary=report.summary)
    return mdata


def _store_report(mdata, report: JoinReport) -> None:
    import json

    dropped = report.dropped.copy()
    dropped["rows"] = dropped["rows"].map(json.dumps) if len(dropped) else dropped["rows"].astype(str)
    mdata.uns["mm_join"] = {
        "table": report.table.astype({c: str for c in report.table.columns if report.table[c].dtype == object}),
        "dropped": dropped,
        "summary": json.dumps(report.summary, default=str),
    }


def join_report(mdata) -> JoinReport:
    """The :class:`JoinReport` stored by :func:`join` in ``mdata.uns['mm_join']``.

    Parameters
    ----------
    mdata
        MuData returned by :func:`imgprof.mm.join`.

    Returns
    -------
    JoinReport
        Matched keys, keys only in one modality and dropped rows.

    Examples
    --------
    >>> import imgprof as ip
    >>> morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
    >>> ip.mm.annotate(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["target"])
    >>> mdata = ip.mm.join(morph, expr, on=("Metadata_target", "target"), sep="|")
    >>> len(ip.mm.join_report(mdata).matched)
    15
    """
    import json

    if "mm_join" not in mdata.uns:
        raise KeyError("mdata.uns['mm_join'] not found: this object was not made by ip.mm.join.")
    st = mdata.uns["mm_join"]
    dropped = pd.DataFrame(st["dropped"]).copy()
    if len(dropped):
        dropped["rows"] = dropped["rows"].map(json.loads)
    return JoinReport(pd.DataFrame(st["table"]).copy(), dropped, json.loads(st["summary"]))


# ----------------------------------------------------------------------------- annotation and doses


def annotate(
    adata: ad.AnnData,
    table: pd.DataFrame,
    *,
    on: str,
    table_on: str | None = None,
    columns: str | Sequence[str],
    names: str | Callable[[str], str] = "casefold",
    prefix: str = "",
    overwrite: bool = False,
    key_added: str = "mm_annotate",
    copy: bool = False,
):
    """Add annotation columns (MOA, target...) from a table, matched by normalised names.

    Typical use: map L1000 ``pert_iname`` through the Drug Repurposing Hub
    (:func:`imgprof.datasets.repurposing_hub`) to get ``moa`` and ``target``.

    Parameters
    ----------
    adata
        Profiles; ``adata.obs[on]`` holds the names.
    table
        Annotation table with one row per name.
    on, table_on
        Name column in ``adata.obs`` and in ``table`` (default the same name).
    columns
        Table columns to add to ``adata.obs`` (as ``prefix + column``).
    names
        Name normalisation (see :func:`imgprof.mm.join`).
    prefix
        Prefix for the new ``.obs`` columns.
    overwrite
        Replace existing ``.obs`` columns of the same name (otherwise an error).
    key_added
        ``adata.uns[key_added]``: one row per distinct name with ``n_rows``,
        ``matched`` and ``table_name`` (the spelling found in the table).
    copy
        Return a copy instead of modifying ``adata``.

    Returns
    -------
    AnnData or None
        ``None`` (``copy=False``) or the annotated copy.

    Raises
    ------
    AmbiguousKeyError
        When two table rows with different annotations normalise to the same name.

    Examples
    --------
    >>> import imgprof as ip
    >>> expr = ip.datasets.l1000_plate()
    >>> ip.mm.annotate(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["moa", "target"])
    >>> rep = expr.uns["mm_annotate"]
    >>> int(rep.loc[rep["name"] != "DMSO", "matched"].sum())
    38
    """
    adata = start(adata, copy)
    check_obs_keys(adata, on, param="on")
    table_on = table_on or on
    columns = as_list(columns)
    check_df_keys(table, [table_on, *columns], param="table", where="the annotation table")
    new_cols = [f"{prefix}{c}" for c in columns]
    clash = [c for c in new_cols if c in adata.obs.columns and c != on]
    if clash and not overwrite:
        raise KeyError(f"annotate: adata.obs already has column(s) {clash}; pass prefix= or overwrite=True.")
    if on in new_cols:
        raise ValueError(f"annotate: the new column {on!r} would replace the name column; pass prefix=.")
    t = table[[table_on, *columns]].copy()
    t["_norm"] = normalize_names(t[table_on], names)
    t = t[t["_norm"].notna()]
    dedup = t.drop_duplicates(subset=["_norm", *columns])
    dup = dedup["_norm"][dedup["_norm"].duplicated(keep=False)]
    if len(dup):
        ex = dedup.loc[dedup["_norm"].isin(dup.unique()[:3]), [table_on, *columns]].to_dict("records")
        raise AmbiguousKeyError(
            f"annotate: {dup.nunique()} name(s) in table[{table_on!r}] map to several different annotations after "
            f"names={names!r} normalisation, e.g. {ex}. De-duplicate the table first."
        )
    lookup = dedup.set_index("_norm")
    spelled = t.groupby("_norm")[table_on].agg(lambda s: " / ".join(sorted(set(map(str, s)))))
    norm = normalize_names(adata.obs[on], names)
    for c, nc in zip(columns, new_cols):
        adata.obs[nc] = norm.map(lookup[c]).astype(object).where(norm.notna() & norm.isin(lookup.index), np.nan).to_numpy()
    raw = adata.obs[on].astype(object)
    rep = pd.DataFrame({"name": raw.astype(str).to_numpy(), "norm": norm.to_numpy()})
    rep = rep.groupby("name", sort=True, dropna=False).agg(n_rows=("norm", "size"), norm=("norm", "first")).reset_index()
    rep["matched"] = rep["norm"].isin(lookup.index) & rep["norm"].notna()
    rep["table_name"] = rep["norm"].map(spelled).fillna("").astype(str)
    rep["note"] = np.where(
        rep["matched"] & (rep["table_name"] != rep["name"]), "matched after name normalisation", ""
    )
    rep["note"] = np.where(rep["norm"].isna(), "missing name", rep["note"])
    rep = rep.drop(columns="norm")
    adata.uns[key_added] = rep
    log_step(
        adata, "mm.annotate", {"on": on, "table_on": table_on, "columns": columns, "names": str(names), "prefix": prefix},
        n_names=int(len(rep)), n_matched=int(rep["matched"].sum()), n_rows_matched=int(rep.loc[rep["matched"], "n_rows"].sum()),
    )
    return finish(adata, copy)


def recode_dose(
    adata: ad.AnnData,
    dose_key: str,
    unit: str,
    *,
    series: Sequence[float] = STANDARD_DOSES_UM,
    rtol: float = 0.05,
    off_series: str = "nan",
    key_added: str = "Metadata_dose_recode",
    copy: bool = False,
    overwrite: bool = False,
):
    """Convert doses to µM and recode them onto a nominal dose series, explicitly.

    Writes ``adata.obs[key_added]`` (recoded dose in µM, NaN when not on the
    series) and ``adata.obs[key_added + "_status"]`` (``on_series``, ``off_series``,
    ``snapped``, ``zero``, ``negative``, ``missing``).

    Parameters
    ----------
    adata
        Profiles.
    dose_key
        ``.obs`` column with doses (``-666`` = missing).
    unit
        Unit of the doses (``"uM"``, ``"nM"``...) or a ``.obs`` column with one unit per
        row. Required: units are never guessed. LINCS Cell Painting's
        ``Metadata_mmoles_per_liter`` holds the final concentration in µM.
    series, rtol, off_series
        See :func:`imgprof.mm.join` (``dose_series`` etc.).
    key_added, copy
        Output column; return a copy instead of modifying ``adata``.
    overwrite
        Allow ``key_added`` (or ``key_added + "_status"``) to replace existing
        ``.obs`` columns (default: refuse, naming them).

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``.

    Returns
    -------
    AnnData or None
        ``None`` (``copy=False``) or the modified copy.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> ip.mm.recode_dose(adata, "Metadata_mmoles_per_liter", "uM")
    >>> int(adata.obs["Metadata_dose_recode_status"].value_counts()["on_series"])
    330
    """
    check_obs_keys(adata, dose_key, param="dose_key")
    for k in (key_added, f"{key_added}_status"):
        check_new_obs_key(adata, k, param="key_added", overwrite=overwrite)
    check_float(rtol, "rtol", min_value=0.0)
    adata = start(adata, copy)
    u = _resolve_unit(adata.obs, unit, "adata")
    um = to_micromolar(adata.obs[dose_key].to_numpy(), u if isinstance(u, str) else u.to_numpy(), where=f"adata.obs[{dose_key!r}]")
    hint = unit_mismatch_hint(um, series, rtol, unit_factor(u) if isinstance(u, str) else None)
    if hint:
        raise DoseUnitError(f"adata.obs[{dose_key!r}] (unit {unit!r}): {hint}.")
    rec, status = recode_doses(um, series, rtol=rtol, off_series=off_series)
    adata.obs[key_added] = rec
    adata.obs[f"{key_added}_status"] = pd.Categorical(status.astype(str))
    counts = {str(k): int(v) for k, v in zip(*np.unique(status.astype(str), return_counts=True))}
    log_step(
        adata, "mm.recode_dose", {"dose_key": dose_key, "unit": unit, "series": list(series), "rtol": rtol, "off_series": off_series},
        status=counts, unit_canonical=canonical_unit(unit) if isinstance(u, str) else "per-row",
    )
    return finish(adata, copy)
