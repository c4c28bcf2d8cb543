"""Pair definitions (sameby/diffby) encoded as integer codes, evaluated on blocks.

Private helpers for :mod:`imgprof.metrics.average_precision`. A pair
definition follows copairs: two profiles ``i != j`` form a pair when they share
the value of every ``sameby`` column and differ in every ``diffby`` column.
Either list may also be a dict ``{"all": [...], "any": [...]}`` (copairs'
``Matcher`` semantics): ``"any"`` columns need at least one shared
(``sameby``) or differing (``diffby``) value. A *multi-label* column holds
label sets (``"a|b"`` strings or lists); for it "same" means "share at least
one label" and "different" means "share no label".

Rows with identical codes in every relevant column (a *combo*) are
interchangeable for pair membership, so masks are first evaluated on combos
(cheap) and only then expanded to the rows that are actually candidates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._core.validation import as_list

Spec = dict  # {"all": list[str], "any": list[str]}


def as_spec(value: Any, *, param: str) -> Spec:
    """Normalise a sameby/diffby argument to ``{"all": [...], "any": [...]}``."""
    if value is None:
        return {"all": [], "any": []}
    if isinstance(value, Mapping):
        bad = set(value) - {"all", "any"}
        if bad:
            raise ValueError(f"{param}: dict keys must be 'all' and/or 'any', got {sorted(map(str, bad))}.")
        spec = {"all": as_list(value.get("all")), "any": as_list(value.get("any"))}
    else:
        spec = {"all": as_list(value), "any": []}
    for key in ("all", "any"):
        for c in spec[key]:
            if not isinstance(c, str):
                raise TypeError(f"{param}: column names must be strings, got {c!r}.")
    if len(spec["any"]) == 1:
        raise ValueError(f"{param}: an 'any' list needs at least two columns, got {spec['any']}.")
    return spec


def spec_columns(spec: Spec) -> list[str]:
    """Columns named by a spec (``all`` then ``any``), once each."""
    return list(dict.fromkeys(spec["all"] + spec["any"]))


def check_pair_definition(sameby: Spec, diffby: Spec, *, what: str) -> None:
    """copairs' rules: sameby and diffby disjoint, and at least one given."""
    s, d = set(spec_columns(sameby)), set(spec_columns(diffby))
    if s & d:
        raise ValueError(f"{what}: sameby and diffby must be disjoint, both name {sorted(s & d)}.")
    if not s and not d:
        raise ValueError(f"{what}: give at least one sameby or diffby column.")


def split_labels(value: Any, sep: str | None) -> tuple[str, ...]:
    if isinstance(value, str):
        parts = value.split(sep) if sep else [value]
    elif isinstance(value, (list, tuple, set, frozenset, np.ndarray, pd.Series)):
        parts = [str(v) for v in value]
    else:
        parts = [str(value)]
    return tuple(sorted({p.strip() for p in parts if p is not None and p.strip() != ""}))


@dataclass
class Encoded:
    """Integer encoding of the pair-defining metadata of a query and a candidate set."""

    columns: list[str]
    combo_q: np.ndarray  # combo id of each query row
    combo_c: np.ndarray  # combo id of each candidate row
    table: np.ndarray  # (n_combos, n_columns) codes
    multilabel: str | None = None
    label_names: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    combo_labels: Any = None  # scipy.sparse CSR (n_combos, n_labels) bool, or None
    size_c: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))  # candidate rows per combo
    # CSR of candidate rows grouped by combo
    c_indptr: np.ndarray = field(default_factory=lambda: np.array([0], dtype=np.int64))
    c_rows: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))

    @property
    def n_combos(self) -> int:
        return self.table.shape[0]

    def col(self, name: str) -> int:
        return self.columns.index(name)

    def rows_of(self, combos: np.ndarray) -> np.ndarray:
        """Candidate rows belonging to ``combos`` (ascending row order)."""
        if len(combos) == 0:
            return np.array([], dtype=np.int64)
        starts, ends = self.c_indptr[combos], self.c_indptr[combos + 1]
        lens = ends - starts
        total = int(lens.sum())
        if total == 0:
            return np.array([], dtype=np.int64)
        offs = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        rows = self.c_rows[np.arange(total) + offs]
        rows.sort()
        return rows


def check_complete(obs: pd.DataFrame, cols: Sequence[str], *, where: str, what: str = "column", hint: str) -> None:
    """Raise ``"<where>: <what> 'col' has <n> missing value(s)<hint>"`` for the first of ``cols`` with NaN/None."""
    for col in cols:
        n_na = int(obs[col].isna().sum())
        if n_na:
            raise ValueError(f"{where}: {what} {col!r} has {n_na} missing value(s){hint}")


def _column_values(obs: pd.DataFrame, col: str, *, where: str) -> pd.Series:
    check_complete(obs, [col], where=where, what="metadata column", hint=(
        " (NaN/None); pairs cannot be defined on them. Fill them (e.g. obs[col].fillna('none')) or subset the AnnData first."
    ))
    s = obs[col]
    return s.astype(object) if isinstance(s.dtype, pd.CategoricalDtype) else s


def _codes(
    obs_q: pd.DataFrame, obs_c: pd.DataFrame | None, order: list[str], multilabel: str | None, multilabel_sep: str | None,
    where: str, where_ref: str,
) -> tuple[list[np.ndarray], list[tuple[str, ...]]]:
    """Integer codes of each column over query then candidate rows, and the label sets of the multi-label column."""
    codes = []
    set_rows_labels: list[tuple[str, ...]] = []
    for col in order:
        sq = _column_values(obs_q, col, where=where)
        if obs_c is None:
            vals = sq
        else:
            sc = _column_values(obs_c, col, where=where_ref)
            vals = pd.concat([sq.reset_index(drop=True), sc.reset_index(drop=True)], ignore_index=True)
        if col == multilabel:
            sets = [split_labels(v, multilabel_sep) for v in vals]
            empty = sum(1 for s in sets if len(s) == 0)
            if empty:
                raise ValueError(f"{where}: multi-label column {col!r} has {empty} row(s) with no label.")
            set_rows_labels = sets
            code, _ = pd.factorize(pd.Series(["\x1f".join(s) for s in sets]), sort=True)
        else:
            code, _ = pd.factorize(vals, sort=True) if _sortable(vals) else pd.factorize(vals)
        codes.append(np.asarray(code, dtype=np.int64))
    return codes, set_rows_labels


def _label_matrix(set_rows_labels: list[tuple[str, ...]], first: np.ndarray, n_combos: int) -> tuple[Any, np.ndarray]:
    """``(n_combos, n_labels)`` CSR of each combo's labels (from its first row) and the label names."""
    import scipy.sparse as sp

    labels = sorted({lab for s in set_rows_labels for lab in s})
    lab_idx = {lab: i for i, lab in enumerate(labels)}
    indptr: list[int] = [0]
    indices: list[int] = []
    for r in first:
        indices.extend(lab_idx[lab] for lab in set_rows_labels[r])
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float32)
    csr = sp.csr_matrix((data, np.asarray(indices, dtype=np.int64), np.asarray(indptr)), shape=(n_combos, len(labels)))
    return csr, np.asarray(labels, dtype=object)


def encode(
    obs_q: pd.DataFrame,
    obs_c: pd.DataFrame | None,
    columns: Sequence[str],
    *,
    multilabel: str | None = None,
    multilabel_sep: str | None = "|",
    order_first: Sequence[str] = (),
    where: str = "adata.obs",
    where_ref: str = "reference.obs",
) -> Encoded:
    """Factorise ``columns`` jointly over query and candidate rows and build combos.

    ``obs_c=None`` means the candidates are the query rows themselves.
    ``order_first`` columns lead the combo sort order, so that rows sharing them
    get consecutive combo ids (and blocks of queries share candidates).
    """
    same_set = obs_c is None
    nq = len(obs_q)
    n_rows = nq if obs_c is None else nq + len(obs_c)
    columns = list(dict.fromkeys(columns))
    order = [c for c in order_first if c in columns] + [c for c in columns if c not in order_first]
    codes, set_rows_labels = _codes(obs_q, obs_c, order, multilabel, multilabel_sep, where, where_ref)
    if codes:
        table, first, inv = np.unique(np.stack(codes, axis=1), axis=0, return_index=True, return_inverse=True)
        inv = np.asarray(inv).reshape(-1)
    else:
        table, inv = np.zeros((1, 0), dtype=np.int64), np.zeros(n_rows, dtype=np.int64)
        first = np.zeros(1, dtype=np.int64)
    combo_q = inv[:nq]
    combo_c = combo_q if same_set else inv[nq:]
    enc = Encoded(columns=order, combo_q=combo_q, combo_c=combo_c, table=table, multilabel=multilabel)
    if multilabel is not None:
        enc.combo_labels, enc.label_names = _label_matrix(set_rows_labels, first, table.shape[0])
    size = np.bincount(combo_c, minlength=table.shape[0]).astype(np.int64)
    enc.size_c = size
    enc.c_rows = np.argsort(combo_c, kind="stable").astype(np.int64)
    enc.c_indptr = np.concatenate([[0], np.cumsum(size)]).astype(np.int64)
    return enc


def _sortable(vals: pd.Series) -> bool:
    try:
        pd.Index(vals.iloc[:1000]).sort_values()
        return True
    except TypeError:
        return False


def label_overlap(enc: Encoded, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean (len(a), len(b)): combos share at least one label."""
    La = enc.combo_labels[a]
    Lb = enc.combo_labels[b]
    return np.asarray((La @ Lb.T).toarray() > 0)


def combo_mask(enc: Encoded, sameby: Spec, diffby: Spec, a: np.ndarray, b: np.ndarray, *, skip: str | None = None) -> np.ndarray:
    """Pair mask between combos ``a`` (rows) and ``b`` (columns).

    ``skip`` names a column left out (the multi-label column handled per label).
    """
    T = enc.table
    M = np.ones((len(a), len(b)), dtype=bool)
    overlap = None

    def same(col):
        nonlocal overlap
        if col == enc.multilabel:
            if overlap is None:
                overlap = label_overlap(enc, a, b)
            return overlap
        k = enc.col(col)
        return T[a, k][:, None] == T[b, k][None, :]

    for col in sameby["all"]:
        if col != skip:
            M &= same(col)
    if sameby["any"]:
        anym = np.zeros_like(M)
        for col in sameby["any"]:
            anym |= same(col)
        M &= anym
    for col in diffby["all"]:
        if col != skip:
            M &= ~same(col)
    if diffby["any"]:
        anym = np.zeros_like(M)
        for col in diffby["any"]:
            anym |= ~same(col)
        M &= anym
    return M
