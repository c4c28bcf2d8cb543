"""Join the tables of one CellProfiler source into single cells (pycytominer's ``merge_single_cells``).

The join runs on the narrow key columns; measurement blocks are gathered by row position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._cp_tables import ImageTable, ObjectTable, Source


def _examples(df: pd.DataFrame, cols: Sequence[str], n: int = 3) -> list:
    return [tuple(r) for r in df.loc[:, list(cols)].head(n).itertuples(index=False)]


def _take(X: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Rows ``pos`` of ``X``; ``-1`` gives a row of NaN."""
    if (pos >= 0).all():
        return X[pos]
    out = np.full((len(pos), X.shape[1]), np.nan, dtype=X.dtype if X.dtype.kind == "f" else np.float64)
    ok = pos >= 0
    out[ok] = X[pos[ok]]
    return out


def _take_frame(df: pd.DataFrame, pos: np.ndarray) -> pd.DataFrame:
    return (df.reindex(pos) if (pos < 0).any() else df.iloc[pos]).reset_index(drop=True)


def _same(a: pd.Series, b: pd.Series) -> bool:
    return bool(((a.to_numpy() == b.to_numpy()) | (a.isna().to_numpy() & b.isna().to_numpy())).all())


class Merged:
    """The joined single cells of one source: ``obs`` (narrow), ``X`` and feature names/dtypes."""

    def __init__(self, obs: pd.DataFrame, X: np.ndarray, features: list[str], dtypes: list[str], summary: dict):
        self.obs, self.X, self.features, self.dtypes, self.summary = obs, X, features, dtypes, summary


def _load_tables(
    source: Source, compartments: Sequence[str], image_table: str | None, image_args: tuple[Any, Any, bool], dtype: np.dtype,
) -> tuple[dict[str, ObjectTable], ImageTable | None, list[str]]:
    """The object tables, the image table and the join keys (with ``TableNumber`` when every table has it)."""
    tables: dict[str, ObjectTable] = {}
    for comp in compartments:
        frame, label = source.object_table(comp)
        tables[comp] = ObjectTable(comp, frame, label, dtype)
    with_tn = [t.has_table_number for t in tables.values()]
    img = None
    if image_table is not None:
        iname = source.find(image_table, role="image")
        img = ImageTable(source.read(iname), source.label(iname), *image_args, dtype)
        with_tn.append("TableNumber" in img.keys.columns)
    if any(with_tn) and not all(with_tn):
        lacking = [t.label for t in tables.values() if not t.has_table_number]
        if img is not None and "TableNumber" not in img.keys.columns:
            lacking.append(img.label)
        raise KeyError(f"join key column 'TableNumber' is missing from {lacking} but present in the other tables.")
    keys = ["TableNumber", "ImageNumber"] if all(with_tn) else ["ImageNumber"]
    for t in tables.values():
        dup = t.ids.duplicated()
        if dup.any():
            raise ValueError(
                f"{t.label}: {int(dup.sum())} duplicated object key(s) {keys + ['ObjectNumber']}, "
                f"e.g. {_examples(t.ids[dup], [*keys, '__obj__'])}; each object must appear once."
            )
    return tables, img, keys


def _link_parent(
    a: ObjectTable, t: ObjectTable, anchor: str, other: str, parent_col: str, keys: list[str], *, strict_inner: bool,
) -> np.ndarray:
    """Row of ``t`` that each anchor object points to through ``parent_col`` (NaN when none)."""
    link = parent_col if parent_col.startswith("Metadata_") else f"Metadata_{parent_col}"
    if link not in a.meta_df.columns:
        raw = parent_col.removeprefix("Metadata_").split(f"{anchor}_", 1)[-1]
        raise KeyError(
            f"{a.label}: join key column {raw!r} (read as {parent_col!r}) not found in the {anchor} table; "
            f"it links each {anchor} object to its parent in {other}."
        )
    left = pd.concat([a.ids[keys], a.meta_df[link]], axis=1)
    right = t.ids.assign(__pos__=np.arange(len(t.ids)))
    m = left.merge(right, how="left", left_on=[*keys, link], right_on=[*keys, "__obj__"], validate="many_to_one")
    pos = m["__pos__"].to_numpy(dtype=float)
    unmatched = np.isnan(pos)
    if unmatched.any() and strict_inner:
        k, n = int(unmatched.sum()), len(a.ids)
        bad = pd.concat([a.ids, a.meta_df[link]], axis=1).loc[unmatched].rename(columns={"__obj__": "ObjectNumber"})
        raise ValueError(
            f"{k} of {n} {anchor} object(s) in {a.label} have no matching {other} object in "
            f"{t.label} (join key {keys + [link.removeprefix('Metadata_')]} → {keys + ['ObjectNumber']}), "
            f"e.g. {_examples(bad, [*keys, 'ObjectNumber', link])}. The tables do not belong together, or "
            f"some objects have no parent: pass join='left' to keep them with missing {other} features, "
            "or strict=False to drop them (pycytominer drops them silently)."
        )
    return pos


def _link(
    tables: dict[str, ObjectTable], anchor: str, links: dict[str, str], keys: list[str], join: str, strict: bool,
    summary: dict,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Link each anchor object to its parents, on the key columns only: kept anchor rows, parent rows (-1: none)."""
    a = tables[anchor]
    positions: dict[str, np.ndarray] = {}
    keep = np.ones(len(a.ids), dtype=bool)
    for other, parent_col in links.items():
        pos = _link_parent(a, tables[other], anchor, other, parent_col, keys, strict_inner=strict and join == "inner")
        unmatched = np.isnan(pos)
        if unmatched.any():
            summary["unmatched_anchor"][other] = int(unmatched.sum())
            if join == "inner":
                keep &= ~unmatched
        positions[other] = np.where(unmatched, -1, np.nan_to_num(pos, nan=-1)).astype(np.int64)
    rows = np.flatnonzero(keep)
    for other, pos in positions.items():
        used = np.zeros(len(tables[other].ids), dtype=bool)
        kept = pos[rows]
        used[kept[kept >= 0]] = True
        summary["unreferenced"][other] = int((~used).sum())
    return rows, positions


def _gather(
    tables: dict[str, ObjectTable], anchor: str, links: dict[str, str], rows: np.ndarray, positions: dict[str, np.ndarray],
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Object metadata (narrow frames) and measurement blocks (arrays), gathered by row position."""
    a = tables[anchor]
    meta_parts = [
        pd.concat([a.ids["__obj__"].iloc[rows].reset_index(drop=True).rename("Metadata_ObjectNumber"),
                   a.meta_df.iloc[rows].reset_index(drop=True)], axis=1)
    ]
    blocks = {anchor: a.X[rows]}
    for other in links:
        t = tables[other]
        pos = positions[other][rows]
        part = pd.concat([t.ids["__obj__"].rename(f"Metadata_{other}_ObjectNumber"), t.meta_df], axis=1)
        part = _take_frame(part, pos)
        for c in t.meta:  # object-level metadata repeated in several tables: one copy when identical
            prev = next((p[c] for p in meta_parts if c in p.columns), None)
            if prev is None:
                continue
            if _same(prev, part[c]):
                part = part.drop(columns=c)
            else:
                part = part.rename(columns={c: f"Metadata_{other}_{c.removeprefix('Metadata_')}"})
        meta_parts.append(part)
        blocks[other] = _take(t.X, pos)
    return pd.concat(meta_parts, axis=1), blocks


def _join_image(
    img: ImageTable, ids: pd.DataFrame, objects: pd.DataFrame, keys: list[str], strict: bool, summary: dict,
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Image-level columns joined on the image keys: (image obs, object obs, image feature block)."""
    dup = img.keys.duplicated()
    if dup.any():
        raise ValueError(f"{img.label}: {int(dup.sum())} duplicated image key(s) {keys}, e.g. {_examples(img.keys[dup], keys)}.")
    m = ids.merge(img.keys.assign(__pos__=np.arange(len(img.keys))), on=keys, how="left")
    ipos = m["__pos__"].to_numpy(dtype=float)
    missing = np.isnan(ipos)
    if missing.any():
        ex = sorted(set(_examples(ids[missing], keys, n=len(ids))))[:5]
        if strict:
            raise ValueError(
                f"{int(missing.sum())} object(s) reference image(s) {ex} absent from the image table {img.label} "
                f"(join key {keys}). Pass strict=False to keep them with missing image metadata."
            )
        summary["objects_without_image"] = int(missing.sum())
    ipos = np.where(missing, -1, np.nan_to_num(ipos, nan=-1)).astype(np.int64)
    image_obs = _take_frame(img.obs, ipos)
    # Image metadata also written into the object tables: keep the image copy when identical.
    for c in [c for c in img.obs_names if c in objects.columns]:
        if _same(image_obs[c], objects[c]):
            objects = objects.drop(columns=c)
        else:
            objects = objects.rename(columns={c: f"Metadata_Object_{c.removeprefix('Metadata_')}"})
    summary["image_columns_not_read"] = int(img.n_left)
    return image_obs, objects, _take(img.X, ipos)


def merge_one(
    source: Source,
    *,
    compartments: Sequence[str],
    image_table: str | None,
    anchor: str,
    links: dict[str, str],
    image_args: tuple[Any, Any, bool],
    join: str,
    strict: bool,
    dtype: np.dtype,
) -> Merged:
    """Join the tables of one source.

    The join runs on the narrow key columns only; each compartment's measurement block is then
    gathered once by row position, so no wide DataFrame is ever merged or copied.
    ``image_args`` is ``(image_columns, image_features, rename_image_metadata)``.
    """
    tables, img, keys = _load_tables(source, compartments, image_table, image_args, dtype)
    summary: dict = {"source": str(source.path), "n_objects": {c: int(len(t.ids)) for c, t in tables.items()},
                     "unmatched_anchor": {}, "unreferenced": {}}
    rows, positions = _link(tables, anchor, links, keys, join, strict, summary)
    ids = tables[anchor].ids[keys].iloc[rows].reset_index(drop=True)
    objects, blocks = _gather(tables, anchor, links, rows, positions)
    features = [f for comp in compartments for f in tables[comp].features]
    dtypes = [d for comp in compartments for d in tables[comp].dtypes]
    X_parts = [blocks[comp] for comp in compartments]
    if img is not None:
        image_obs, objects, X_img = _join_image(img, ids, objects, keys, strict, summary)
        features += img.features
        dtypes += img.dtypes
        X_parts.append(X_img)
    else:
        image_obs = pd.DataFrame(index=ids.index)
    ids.columns = [f"Metadata_{k}" for k in keys]
    obs = pd.concat([image_obs, ids, objects], axis=1)
    summary["folded_object_number_columns"] = sorted({c for t in tables.values() for c in t.folded})
    X = np.hstack(X_parts) if X_parts else np.empty((len(obs), 0))
    return Merged(obs, X.astype(dtype, copy=False), features, dtypes, summary)
