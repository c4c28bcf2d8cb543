"""The report of a join: which keys matched, which did not and why.

Private module of :mod:`imgprof.mm.join`; :mod:`imgprof.mm` exports :class:`JoinReport`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .._core.docs import doc_params
from .._core.store import store
from ._keys import normalize_names
from ._sides import Side
from ._spec import KEY_SEP, DoseSpec, KeySpec, sep_label

#: ``.uns`` key of the stored report (read back by :func:`imgprof.mm.join_report`).
REPORT_KEY = "mm_join"


@doc_params("example_mm_moa")
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
    {example_mm_moa}
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




def _key_counts(s: Side) -> dict[tuple, int]:
    c: dict[tuple, int] = {}
    for ks in s.row_keys:
        for t in ks:
            c[t] = c.get(t, 0) + 1
    return c


def _key_row(t: tuple, a: Side, b: Side, na: int, nb: int, comp_names: list[str], dose: DoseSpec | None) -> dict:
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
    row: dict[str, Any] = {"key": KEY_SEP.join(t)}
    row.update(dict(zip(comp_names, t)))
    row.update({
        "status": status, f"n_{a.name}": na, f"n_{b.name}": nb,
        f"raw_{a.name}": KEY_SEP.join(ra), f"raw_{b.name}": KEY_SEP.join(rb), "note": note,
    })
    return row


def _key_table(a: Side, b: Side, counts: list[dict], comp_names: list[str], dose: DoseSpec | None) -> pd.DataFrame:
    rows = [_key_row(t, a, b, counts[0].get(t, 0), counts[1].get(t, 0), comp_names, dose)
            for t in sorted(set(counts[0]) | set(counts[1]))]
    cols = ["key", *comp_names, "status", f"n_{a.name}", f"n_{b.name}", f"raw_{a.name}", f"raw_{b.name}", "note"]
    table = pd.DataFrame(rows, columns=cols)
    if table["key"].duplicated().any():
        dup = table.loc[table["key"].duplicated(keep=False), comp_names].head(4).to_dict("records")
        raise ValueError(
            f"join: key values contain the separator {KEY_SEP!r}, so different keys read the same, e.g. {dup}; "
            "pass a names= callable that removes it."
        )
    return table


def _note_near_misses(table: pd.DataFrame, sides: tuple[Side, Side], counts: list[dict], keys: list[KeySpec]) -> None:
    """Unmatched values that coincide with a value of the other side under names="alnum"."""
    if not len(table):
        return
    for j, c in enumerate(k.name for k in keys):
        vals = sorted({t[j] for cnt in counts for t in cnt})
        loose_of = dict(zip(vals, normalize_names(pd.Series(vals, dtype=object), "alnum").tolist()))
        for own, other in ((0, 1), (1, 0)):
            other_vals = {t[j] for t in counts[other]}
            loose: dict[str, set] = {}
            for v in other_vals:
                loose.setdefault(loose_of[v], set()).add(v)
            mask = table["status"] == f"only_{sides[own].name}"
            for v in set(table.loc[mask, c]) - other_vals:
                lv = loose_of.get(v)
                if lv is not None and lv in loose:
                    table.loc[mask & (table[c] == v), "note"] = (
                        f"{c} {v!r} would match {sorted(loose[lv])} with names='alnum' (punctuation ignored)"
                    )


def _dropped_table(sides: tuple[Side, Side]) -> pd.DataFrame:
    drops = []
    for s in sides:
        r = pd.Series(s.drop_reason)
        r = r[r.notna()]
        for reason, grp in r.groupby(r):
            drops.append({"modality": s.name, "reason": reason, "n_rows": int(len(grp)), "rows": [int(i) for i in grp.index[:5]]})
    return pd.DataFrame(drops, columns=["modality", "reason", "n_rows", "rows"])


def _note_same_rows(table: pd.DataFrame, sides: tuple[Side, Side], matched: set) -> dict[str, list[list[str]]]:
    """Matched keys built from exactly the same rows in a modality are the same profile (not independent)."""
    same_rows: dict[str, list[list[str]]] = {}
    for s in sides:
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
    return same_rows


def build_report(a: Side, b: Side, keys: list[KeySpec], dose: DoseSpec | None, names: Any, level: str, sep: Any) -> JoinReport:
    """The :class:`JoinReport` of two prepared sides."""
    comp_names = [k.name for k in keys] + ([dose.name] if dose is not None else [])
    sides = (a, b)
    counts = [_key_counts(s) for s in sides]
    table = _key_table(a, b, counts, comp_names, dose)
    _note_near_misses(table, sides, counts, keys)
    dropped = _dropped_table(sides)
    matched = set(table.loc[table["status"] == "matched", "key"])
    same_rows = _note_same_rows(table, sides, matched)
    summary = {
        "modalities": [a.name, b.name],
        "keys": comp_names,
        "columns": {k.name: list(k.cols) for k in keys} | ({dose.name: list(dose.cols)} if dose else {}),
        "names": names if isinstance(names, str) else getattr(names, "__name__", "callable"),
        "sep": sep_label(sep),
        "level": level,
        "n_matched": int(len(matched)),
        "n_rows": {s.name: s.n_rows for s in sides},
        "n_rows_usable": {s.name: int(sum(bool(k) for k in s.row_keys)) for s in sides},
        "n_rows_matched": {
            s.name: int(sum(any(KEY_SEP.join(t) in matched for t in ks) for ks in s.row_keys)) for s in sides
        },
        "n_keys": {s.name: int(len(c)) for s, c in zip(sides, counts)},
        "n_only": {s.name: int((table["status"] == f"only_{s.name}").sum()) for s in sides},
        "dose_status": {s.name: s.dose_status for s in sides},
        "merged_spellings": {s.name: s.collisions for s in sides},
        "keys_with_identical_rows": same_rows,
    }
    return JoinReport(table, dropped, summary)


def per_component_overlap(report: JoinReport, a: str, b: str) -> str:
    """Shared values per key component (the JoinError message: which key prevents matching)."""
    t = report.table
    parts = []
    for c in report.summary["keys"]:
        va = set(t.loc[t[f"n_{a}"] > 0, c])
        vb = set(t.loc[t[f"n_{b}"] > 0, c])
        ex_a, ex_b = sorted(va)[:3], sorted(vb)[:3]
        parts.append(f"{c}: {len(va & vb)} shared value(s) ({a} has {len(va)}, e.g. {ex_a}; {b} has {len(vb)}, e.g. {ex_b})")
    return "; ".join(parts)


def store_report(mdata: Any, report: JoinReport) -> None:
    """Write ``report`` into ``mdata.uns[REPORT_KEY]`` (h5mu-storable: JSON summary, string tables)."""
    dropped = report.dropped.copy()
    dropped["rows"] = dropped["rows"].map(json.dumps) if len(dropped) else dropped["rows"].astype(str)
    value = {
        "table": report.table.astype({c: str for c in report.table.columns if report.table[c].dtype == object}),
        "dropped": dropped,
        "summary": json.dumps(report.summary, default=str),
    }
    store(mdata, value, slot="uns", key_added=REPORT_KEY, function=None)


def load_report(mdata: Any) -> JoinReport:
    """The :class:`JoinReport` stored by :func:`store_report`."""
    if REPORT_KEY not in mdata.uns:
        raise KeyError(f"mdata.uns[{REPORT_KEY!r}] not found: this object was not made by ip.mm.join.")
    st = mdata.uns[REPORT_KEY]
    dropped = pd.DataFrame(st["dropped"]).copy()
    if len(dropped):
        dropped["rows"] = dropped["rows"].map(json.loads)
    return JoinReport(pd.DataFrame(st["table"]).copy(), dropped, json.loads(st["summary"]))
