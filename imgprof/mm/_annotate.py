"""Prepare the keys of a join: annotations looked up by name (MOA, target) and doses recoded onto a series.

Private module; :mod:`imgprof.mm` exports :func:`map_annotations` (formerly
``annotate``, kept as a deprecated alias) and :func:`recode_dose`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._core.docs import doc_params
from .._core.provenance import log_step
from .._core.store import store
from .._core.validation import as_list, check_df_keys, check_float, check_new_obs_key, check_obs_keys, finish, start
from ._keys import (
    STANDARD_DOSES_UM,
    canonical_unit,
    normalize_names,
    recode_doses,
    to_micromolar,
    unit_factor,
    unit_mismatch_hint,
)
from ._sides import resolve_unit
from ._spec import AmbiguousKeyError, DoseUnitError


@doc_params("adata", "copy", "returns_copy")
def map_annotations(
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
) -> ad.AnnData | None:
    """Look annotations (MOA, target...) up in a table by normalised name and add them as ``.obs`` columns.

    Unlike :func:`imgprof.pp.annotate` (which joins a platemap by plate and well),
    this maps a perturbation *name* column through an annotation table, with the
    name normalisation of :func:`imgprof.mm.join`, and reports what matched.

    Typical use: map L1000 ``pert_iname`` through the Drug Repurposing Hub
    (:func:`imgprof.datasets.repurposing_hub`) to get ``moa`` and ``target``.

    Parameters
    ----------
    {adata}
        ``adata.obs[on]`` holds the names.
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
    {copy}

    Returns
    -------
    {returns_copy}

    Raises
    ------
    AmbiguousKeyError
        When two table rows with different annotations normalise to the same name.

    Examples
    --------
    >>> import imgprof as ip
    >>> expr = ip.datasets.l1000_plate()
    >>> ip.mm.map_annotations(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["moa", "target"])
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
    lookup, spelled = _lookup_table(table, table_on, columns, names)
    norm = normalize_names(adata.obs[on], names)
    for c, nc in zip(columns, new_cols):
        adata.obs[nc] = norm.map(lookup[c]).astype(object).where(norm.notna() & norm.isin(lookup.index), np.nan).to_numpy()
    rep = _match_table(adata.obs[on], norm, lookup, spelled)
    store(adata, rep, slot="uns", key_added=key_added, function=None)
    log_step(
        adata, "mm.map_annotations",
        {"on": on, "table_on": table_on, "columns": columns, "names": str(names), "prefix": prefix},
        n_names=int(len(rep)), n_matched=int(rep["matched"].sum()), n_rows_matched=int(rep.loc[rep["matched"], "n_rows"].sum()),
    )
    return finish(adata, copy)


def _lookup_table(table: pd.DataFrame, table_on: str, columns: list[str], names: Any) -> tuple[pd.DataFrame, pd.Series]:
    """Annotations indexed by normalised name (one per name, else AmbiguousKeyError); the table's spellings."""
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
    spelled = t.groupby("_norm")[table_on].agg(lambda s: " / ".join(sorted(set(map(str, s)))))
    return dedup.set_index("_norm"), spelled


def _match_table(names_col: pd.Series, norm: pd.Series, lookup: pd.DataFrame, spelled: pd.Series) -> pd.DataFrame:
    """One row per distinct name: ``n_rows``, ``matched``, ``table_name``, ``note``."""
    raw = names_col.astype(object)
    rep = pd.DataFrame({"name": raw.astype(str).to_numpy(), "norm": norm.to_numpy()})
    rep = rep.groupby("name", sort=True, dropna=False).agg(n_rows=("norm", "size"), norm=("norm", "first")).reset_index()
    rep["matched"] = rep["norm"].isin(lookup.index) & rep["norm"].notna()
    rep["table_name"] = rep["norm"].map(spelled).fillna("").astype(str)
    rep["note"] = np.where(
        rep["matched"] & (rep["table_name"] != rep["name"]), "matched after name normalisation", ""
    )
    rep["note"] = np.where(rep["norm"].isna(), "missing name", rep["note"])
    return rep.drop(columns="norm")


def annotate(adata: ad.AnnData, table: pd.DataFrame, **kwargs: Any) -> ad.AnnData | None:
    """Deprecated alias of :func:`map_annotations` (renamed: it maps names through a table).

    Kept for one release; it warns with a ``FutureWarning``. :func:`imgprof.pp.annotate`
    (platemap join) is unrelated.

    Parameters
    ----------
    adata
        Profiles; ``adata.obs[on]`` holds the names.
    table
        Annotation table with one row per name.
    **kwargs
        Passed to :func:`map_annotations` (``on``, ``columns``, ``names``...).

    Returns
    -------
    AnnData or None
        As :func:`map_annotations`.

    Examples
    --------
    >>> import warnings, imgprof as ip
    >>> expr = ip.datasets.l1000_plate()
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     ip.mm.annotate(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["moa"])
    >>> w[0].category.__name__
    'FutureWarning'
    """
    warnings.warn("ip.mm.annotate is renamed ip.mm.map_annotations (it maps names through an annotation table; "
                  "ip.pp.annotate joins a platemap); the old name will be removed in the next release.",
                  FutureWarning, stacklevel=2)
    return map_annotations(adata, table, **kwargs)


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
) -> ad.AnnData | None:
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
    u = resolve_unit(adata.obs, unit, "adata")
    um = to_micromolar(adata.obs[dose_key].to_numpy(), u if isinstance(u, str) else u.to_numpy(),
                       where=f"adata.obs[{dose_key!r}]")
    hint = unit_mismatch_hint(um, series, rtol, unit_factor(u) if isinstance(u, str) else None)
    if hint:
        raise DoseUnitError(f"adata.obs[{dose_key!r}] (unit {unit!r}): {hint}.")
    rec, status = recode_doses(um, series, rtol=rtol, off_series=off_series)
    store(adata, rec, slot="obs", key_added=key_added, function=None)
    store(adata, status.astype(str), slot="obs", key_added=f"{key_added}_status", function=None)
    adata.obs[f"{key_added}_status"] = adata.obs[f"{key_added}_status"].astype("category")  # store writes plain arrays
    counts = {str(k): int(v) for k, v in zip(*np.unique(status.astype(str), return_counts=True))}
    log_step(
        adata, "mm.recode_dose",
        {"dose_key": dose_key, "unit": unit, "series": list(series), "rtol": rtol, "off_series": off_series},
        status=counts, unit_canonical=canonical_unit(unit) if isinstance(u, str) else "per-row",
    )
    return finish(adata, copy)
