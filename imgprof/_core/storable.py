"""Make an AnnData writable by ``write_h5ad`` *and* ``write_zarr`` (and readable back).

Two things in real metadata tables break anndata's writers:

* an object column whose values are all missing (``None``): ``write_h5ad`` fails with
  "Can't implicitly convert non-string objects to strings". Such a column becomes a
  float column of NaN, which is what ``pandas.read_csv`` gives for an empty column.
* two columns whose names differ only by case (``Metadata_plate_map_name`` and
  ``Metadata_Plate_Map_Name``): ``write_zarr`` writes a store that cannot be read back.
  Every later column of such a clash is renamed with the suffix ``_2`` (``_3``...),
  e.g. ``Metadata_Plate_Map_Name_2``; the renames are recorded in
  ``uns['imgprof']['renamed_columns']`` and the provenance column list.
"""

from __future__ import annotations

import pandas as pd

from .provenance import UNS_KEY


def _all_missing_object(s: pd.Series) -> bool:
    return s.dtype == object and len(s) > 0 and bool(s.isna().all())


def _dedupe_case(columns: list[str]) -> dict[str, str]:
    seen: set[str] = set()
    taken = {c.lower() for c in columns}
    renames: dict[str, str] = {}
    for c in columns:
        if c.lower() not in seen:
            seen.add(c.lower())
            continue
        i = 2
        while f"{c}_{i}".lower() in seen or f"{c}_{i}".lower() in taken:
            i += 1
        renames[c] = f"{c}_{i}"
        seen.add(renames[c].lower())
    return renames


def make_storable(adata) -> dict[str, str]:
    """Fix, in place, the ``.obs``/``.var`` columns that anndata's writers cannot store.

    Parameters
    ----------
    adata
        The AnnData to fix.

    Returns
    -------
    dict
        ``{old_name: new_name}`` of the ``.obs``/``.var`` columns renamed because of a
        case clash (empty when none were).
    """
    renamed: dict[str, str] = {}
    for attr in ("obs", "var"):
        df = getattr(adata, attr)
        for c in df.columns:
            if _all_missing_object(df[c]):
                df[c] = df[c].astype(float)
        ren = _dedupe_case([str(c) for c in df.columns])
        if ren:
            df.rename(columns=ren, inplace=True)
            renamed.update(ren)
    if renamed:
        store = adata.uns.setdefault(UNS_KEY, {})
        store["renamed_columns"] = {**store.get("renamed_columns", {}), **renamed}
        if "columns" in store:
            store["columns"] = [renamed.get(c, c) for c in store["columns"]]
    return renamed
