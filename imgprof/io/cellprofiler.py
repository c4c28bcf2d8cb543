"""CellProfiler per-compartment outputs (CSV folders or SQLite) → one single-cell AnnData.

CellProfiler writes one table per object type (``Cells``, ``Cytoplasm``, ``Nuclei``...) plus an
``Image`` table, either as CSV files (ExportToSpreadsheet, one folder per site or plate) or as a
SQLite database (ExportToDatabase: ``Per_Image``/``Per_Cells``...; or cytominer-database:
``Image``/``Cells``...). :func:`read_cellprofiler` joins them the way pycytominer's
``SingleCells.merge_single_cells`` does: every row of the *anchor* compartment (``Cytoplasm`` by
default) is linked to its parent cell and nucleus through ``Cytoplasm_Parent_Cells`` /
``Cytoplasm_Parent_Nuclei`` within the same image (``ImageNumber``, plus ``TableNumber`` where
present), and image-level metadata join on the image keys.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import anndata as ad
import numpy as np
import pandas as pd

from .._core.features import check_numeric_features, check_unique_columns
from .._core.progress import progress_bar, progress_enabled
from .._core.provenance import log_step
from .._core.validation import as_list
from .profiles import _from_parts

PathLike = str | os.PathLike

DEFAULT_COMPARTMENTS: tuple[str, ...] = ("Cells", "Cytoplasm", "Nuclei")
#: Image-table column groups copied into ``.obs`` by default (as ``Metadata_<column>``).
DEFAULT_IMAGE_COLUMNS: tuple[str, ...] = ("Metadata", "FileName", "PathName")
_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_SQL_CHUNK = 2000  # rows per SQLite fetch
_TABLE_EXTENSIONS = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".parquet")


# --------------------------------------------------------------------------------------------
# Locating and loading the raw tables
# --------------------------------------------------------------------------------------------


class _Source:
    """Where the tables of one CellProfiler output live (a folder of files or a SQLite file)."""

    def __init__(self, path: Path):
        self.path = path
        self.kind = "sqlite" if path.is_file() else "folder"
        self._tables: list[str] | None = None
        self._objects: tuple[str, pd.DataFrame] | None = None

    # -- SQLite --
    def _connect(self) -> sqlite3.Connection:
        # Read-only URI: the input database is never modified (not even its journal).
        return sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?mode=ro", uri=True)

    def tables(self) -> list[str]:
        if self._tables is None:
            if self.kind == "sqlite":
                try:
                    with self._connect() as con:
                        self._tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
                except sqlite3.DatabaseError as e:
                    raise ValueError(f"{self.path}: not a readable SQLite database ({e}).") from e
            else:
                self._tables = sorted(p.name for p in self.path.iterdir() if p.is_file())
        return self._tables

    def find(self, name: str, *, role: str) -> str:
        """Return the table (SQLite) or file name (folder) holding table ``name``."""
        tables = self.tables()
        low = name.lower()
        if self.kind == "sqlite":
            exact = [t for t in tables if t.lower() == low]
            if exact:
                return exact[0]
            per = [t for t in tables if t.lower() == f"per_{low}" or t.lower().endswith(f"_per_{low}")]
            if len(per) == 1:
                return per[0]
            if len(per) > 1:
                raise ValueError(f"{self.path}: several tables match the {role} table {name!r}: {per}; pass its exact name.")
            raise KeyError(
                f"{self.path}: no {role} table {name!r} (looked for {name!r} and 'Per_{name}'); "
                f"tables in the database: {tables}."
            )
        exact = [t for t in tables if t.lower() in {low + ext for ext in _TABLE_EXTENSIONS}]
        if len(exact) == 1:
            return exact[0]
        if len(exact) > 1:
            raise ValueError(f"{self.path}: several files hold the {role} table {name!r}: {exact}; keep only one.")
        prefixed = [t for t in tables if any(t.lower().endswith(f"_{low}{ext}") for ext in _TABLE_EXTENSIONS)]
        if len(prefixed) == 1:
            return prefixed[0]
        if len(prefixed) > 1:
            raise ValueError(f"{self.path}: several files could hold the {role} table {name!r}: {prefixed}.")
        raise FileNotFoundError(
            f"{self.path}: no {role} file {name}.csv (or .csv.gz/.parquet) in this folder; files present: {tables}."
        )

    def label(self, table: str) -> str:
        return f"{self.path}::{table}" if self.kind == "sqlite" else str(self.path / table)

    def object_table(self, comp: str) -> tuple[pd.DataFrame, str]:
        """The table of compartment ``comp`` and its label.

        A SQLite file written by ExportToDatabase with "single object table" holds every
        compartment in one ``Per_Object`` table (columns ``<Comp>_*``, one row per object
        number): when ``comp`` has no table of its own, its columns are taken from there
        (rows where its object number is missing hold no such object and are left out).
        """
        try:
            name = self.find(comp, role="compartment")
        except KeyError:
            combined = self._combined_objects() if self.kind == "sqlite" else None
            if combined is None:
                raise
            name, df = combined
            own = [c for c in df.columns if str(c).startswith(f"{comp}_")]
            if not own:
                prefixes = sorted({str(c).split("_")[0] for c in df.columns if "_" in str(c)})
                raise KeyError(
                    f"{self.label(name)}: no {comp} table and no '{comp}_*' column in the combined object table "
                    f"(column prefixes there: {prefixes})."
                ) from None
            ids = [c for c in ("TableNumber", "ImageNumber", "ObjectNumber") if c in df.columns]
            part = df.loc[:, ids + own]
            num = f"{comp}_Number_Object_Number"
            present = part[num].notna() if num in part.columns else part[own].notna().any(axis=1)
            part = part.loc[present.to_numpy()].reset_index(drop=True)
            if "ObjectNumber" in part.columns and num in part.columns:
                part = part.drop(columns="ObjectNumber")  # the row's number; the compartment's own one is kept
            # object numbers and links come back as floats when other compartments' rows left NULLs
            for c in [c for c in part.columns if c in (num, "ImageNumber", "ObjectNumber") or c.startswith(f"{comp}_Parent_")]:
                v = part[c]
                if v.dtype.kind == "f" and v.notna().all() and (v == np.floor(v)).all():
                    part[c] = v.astype(np.int64)
            if part.shape[0] == 0:
                raise ValueError(f"{self.label(name)}: no {comp} object in the combined object table.")
            return part, f"{self.label(name)} ({comp} columns)"
        return self.read(name), self.label(name)

    def _combined_objects(self) -> tuple[str, pd.DataFrame] | None:
        """ExportToDatabase's single object table (``Per_Object``), read once; ``None`` when absent."""
        if self._objects is None:
            try:
                name = self.find("Object", role="combined object")
            except KeyError:
                return None
            self._objects = (name, self.read(name))
        return self._objects

    def read(self, table: str) -> pd.DataFrame:
        label = self.label(table)
        if self.kind == "sqlite":
            with self._connect() as con:
                cur = con.execute(f'SELECT * FROM "{table}" LIMIT 0')
                cols = [d[0] for d in cur.description]
                check_unique_columns(cols, source=label)
                # In chunks: sqlite3 hands rows over as Python objects, so a whole table at once would
                # hold every value as a Python float (several times the size of the final array).
                # A column NULL throughout one chunk comes back as object there: make it float first.
                total = con.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] if progress_enabled() else None
                bar = progress_bar(total=total, desc=f"read {table}", unit="rows")
                chunks = []
                for c in pd.read_sql_query(f'SELECT * FROM "{table}"', con, chunksize=_SQL_CHUNK):
                    chunks.append(_as_numeric_if_empty(c, list(c.columns)))
                    bar.update(len(c))
                bar.close()
                df = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=cols)
        else:
            from .profiles import _sep_for

            p = self.path / table
            if p.stat().st_size == 0:
                raise ValueError(f"{label}: the file is empty (0 bytes).")
            if table.lower().endswith(".parquet"):
                import pyarrow as pa
                import pyarrow.parquet as pq

                try:
                    check_unique_columns(pq.read_schema(p).names, source=label)
                    df = pd.read_parquet(p)
                except (pa.ArrowException, OSError) as e:
                    raise ValueError(f"{label}: not a readable parquet file ({type(e).__name__}: {e}).") from e
            else:
                from ._text import read_text_table

                # round_trip: correctly rounded floats (pandas' default parser can be 1 ulp off).
                # read_text_table sniffs the separator, refuses duplicated columns, truncated files
                # and undecodable text, naming the file.
                df = read_text_table(p, sep=None, label=label, default_sep=_sep_for(p), float_precision="round_trip")
        if df.shape[0] == 0:
            raise ValueError(f"{label}: the table has a header but no rows.")
        return df


# --------------------------------------------------------------------------------------------
# Normalizing one table
# --------------------------------------------------------------------------------------------


def _as_numeric_if_empty(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """SQLite returns all-NULL columns as object; make them float so they count as numeric."""
    dtypes = dict(df.dtypes.items())
    empty = [c for c in cols if dtypes[c] == object and df[c].isna().all()]
    return df.astype(dict.fromkeys(empty, "float64")) if empty else df


def _matrix(df: pd.DataFrame, cols: Sequence[str], dtype) -> np.ndarray:
    """The measurement block as one array (a single selection: fast with copy-on-write too)."""
    if not cols:
        return np.empty((len(df), 0), dtype=dtype)
    if all(pd.api.types.is_numeric_dtype(t) for t in df.dtypes):
        # One interleave of the whole (numeric) table, then pick columns: selecting ~2,000 columns with
        # .loc is slow when pandas keeps one block per column (copy-on-write mode, as pycytominer sets it).
        return df.to_numpy(dtype=dtype, na_value=np.nan)[:, df.columns.get_indexer(list(cols))]
    return df.loc[:, list(cols)].to_numpy(dtype=dtype, na_value=np.nan)


class _ObjectTable:
    """One compartment table, standardized.

    ``ids``: ``TableNumber``? + ``ImageNumber`` + ``__obj__`` (the object number);
    ``meta_df``: metadata columns in their ``.obs`` names (parents, object-level metadata);
    ``X``: the ``<Compartment>_*`` measurements; ``features``/``dtypes``: their names and input dtypes.
    """

    def __init__(self, compartment: str, df: pd.DataFrame, label: str, dtype):
        self.compartment = comp = compartment
        self.label = label
        cols = [str(c) for c in df.columns]
        df.columns = cols
        if "ImageNumber" not in cols:
            raise KeyError(f"{label}: join key column 'ImageNumber' not found in the {comp} table.")
        # Object number: 'ObjectNumber' (CSV, cytominer-database) or '<Comp>_Number_Object_Number' (ExportToDatabase).
        num_col = next((c for c in (f"{comp}_Number_Object_Number", "Number_Object_Number") if c in cols), None)
        self.folded: list[str] = []
        skip = {"ImageNumber", "TableNumber", "ObjectNumber"}
        if "ObjectNumber" in cols:
            obj = df["ObjectNumber"]
            if num_col is not None and df[num_col].equals(obj):
                self.folded.append(num_col)  # identical copy of the object number: kept once
                skip.add(num_col)
        elif num_col is not None:
            obj = df[num_col]
            self.folded.append(num_col)
            skip.add(num_col)
        else:
            raise KeyError(
                f"{label}: join key column 'ObjectNumber' (or '{comp}_Number_Object_Number') not found in the {comp} table."
            )
        if obj.isna().any():
            raise ValueError(f"{label}: the object number column has {int(obj.isna().sum())} missing value(s).")
        self.has_table_number = "TableNumber" in cols
        meta_src, meta, feat_src, feats = [], [], [], []
        for c in cols:
            if c in skip:
                continue
            if c.startswith("Metadata_"):
                meta_src.append(c)
                meta.append(c)
                continue
            name = c if c.startswith(f"{comp}_") else f"{comp}_{c}"
            if name.startswith(f"{comp}_Parent_") or name == f"{comp}_Number_Object_Number":
                meta_src.append(c)  # object links (and an object number that differs from ObjectNumber)
                meta.append(f"Metadata_{name}")
            else:
                feat_src.append(c)
                feats.append(name)
        check_unique_columns(
            [*meta, *feats, "ImageNumber"], source=f"{label} (after prefixing columns with '{comp}_')"
        )
        df = _as_numeric_if_empty(df, feat_src)
        _check_numeric_named(df, feat_src, feats, label)
        keys = [k for k in ("TableNumber", "ImageNumber") if k in cols]
        ids = df.loc[:, keys].reset_index(drop=True)
        ids["__obj__"] = obj.to_numpy()
        self.ids = ids
        meta_df = df.loc[:, meta_src].reset_index(drop=True)
        meta_df.columns = meta
        self.meta_df = meta_df
        self.meta = meta
        self.features = feats
        all_dtypes = dict(df.dtypes.items())
        self.dtypes = [str(all_dtypes[c]) for c in feat_src]
        self.X = _matrix(df, feat_src, dtype)


def _check_numeric_named(df: pd.DataFrame, src: Sequence[str], names: Sequence[str], label: str) -> None:
    """check_numeric_features on the source columns, reporting their prefixed names."""
    dtypes = dict(df.dtypes.items())
    bad = [(s, n) for s, n in zip(src, names) if not pd.api.types.is_numeric_dtype(dtypes[s])]
    if bad:
        sub = df.loc[:, [s for s, _ in bad]]
        sub.columns = [n for _, n in bad]
        check_numeric_features(sub, list(sub.columns), source=label)


class _ImageTable:
    """The image table split into keys, ``.obs`` columns and (optional) image features."""

    def __init__(self, df: pd.DataFrame, label: str, image_columns, image_features, rename_metadata: bool, dtype):
        self.label = label
        cols = [str(c) for c in df.columns]
        df.columns = cols
        if "ImageNumber" not in cols:
            raise KeyError(f"{label}: join key column 'ImageNumber' not found in the image table.")
        # SQLite image tables prefix every measurement with 'Image_'; CSV ones do not.
        base = {c: c.removeprefix("Image_") for c in cols if c not in ("ImageNumber", "TableNumber")}
        check_unique_columns(list(base.values()), source=f"{label} (after removing the 'Image_' prefix)")

        def group(b: str) -> str:
            return b.split("_", 1)[0]

        if image_columns == "all":
            obs_cols = list(base)
        elif image_columns is None:
            obs_cols = []
        else:
            wanted = as_list(image_columns)
            groups = {w for w in wanted if "_" not in w}
            names = {w for w in wanted if "_" in w}
            obs_cols = [c for c, b in base.items() if group(b) in groups or b in names or c in names]
            missing = [w for w in names if w not in base and w not in base.values()]
            if missing:
                raise KeyError(f"image_columns: column(s) {missing} not found in the image table {label}.")
        feat_cols: list[str] = []
        if image_features:
            skip = {"Metadata", "FileName", "PathName", "URL", "MD5Digest", "ModuleError", "ExecutionTime", "Group",
                    "ImageSet", "Channel", "Frame", "Series", "Height", "Width", "Scaling"}
            cats = None if image_features is True else set(as_list(image_features))
            dtypes = dict(df.dtypes.items())
            for c, b in base.items():
                if cats is None:
                    ok = group(b) not in skip and pd.api.types.is_numeric_dtype(dtypes[c])
                else:
                    ok = group(b) in cats
                if ok:
                    feat_cols.append(c)
            if cats is not None:
                absent = sorted(cats - {group(base[c]) for c in feat_cols})
                if absent:
                    raise KeyError(f"image_features: no image column in group(s) {absent} in {label}.")
            obs_cols = [c for c in obs_cols if c not in set(feat_cols)]
        # Image metadata (Plate, Well, Site...) first, then the other groups in table order.
        obs_cols = sorted(obs_cols, key=lambda c: group(base[c]) != "Metadata")
        obs_names = []
        for c in obs_cols:
            b = base[c]
            if rename_metadata:  # Image_Metadata_Plate -> Metadata_Plate, FileName_OrigDNA -> Metadata_FileName_OrigDNA
                obs_names.append(b if b.startswith("Metadata_") else f"Metadata_{b}")
            elif b.startswith("Metadata_"):  # names kept as the table has them
                obs_names.append(c)
            else:
                obs_names.append(c if c.startswith("Image_") else f"Image_{c}")
        feat_names = [c if c.startswith("Image_") else f"Image_{c}" for c in feat_cols]
        keys = [k for k in ("TableNumber", "ImageNumber") if k in cols]
        check_unique_columns([*keys, *obs_names, *feat_names], source=f"{label} (image columns as named in .obs/.X)")
        df = _as_numeric_if_empty(df, feat_cols)
        _check_numeric_named(df, feat_cols, feat_names, label)
        self.keys = df.loc[:, keys].reset_index(drop=True)
        obs = df.loc[:, obs_cols].reset_index(drop=True)
        obs.columns = obs_names
        self.obs = obs
        self.obs_names = obs_names
        self.features = feat_names
        all_dtypes = dict(df.dtypes.items())
        self.dtypes = [str(all_dtypes[c]) for c in feat_cols]
        self.X = _matrix(df, feat_cols, dtype)
        self.n_left = len(base) - len(obs_cols) - len(feat_cols)


def default_linking(compartments: Sequence[str]) -> dict[str, dict[str, str]]:
    """The compartment links CellProfiler's standard Cell Painting pipeline produces.

    ``{anchor: {other: parent_column_in_anchor}}``: each anchor object points to the object
    number of its parent in the other compartment. For ``Cells``/``Cytoplasm``/``Nuclei`` the
    anchor is ``Cytoplasm`` (as in pycytominer), for ``Cells``/``Nuclei`` it is ``Cells``.

    Examples
    --------
    >>> default_linking(["Cells", "Cytoplasm", "Nuclei"])
    {'Cytoplasm': {'Cells': 'Cytoplasm_Parent_Cells', 'Nuclei': 'Cytoplasm_Parent_Nuclei'}}
    """
    cs = {c.lower(): c for c in compartments}
    if len(cs) == 1:
        return {next(iter(cs.values())): {}}
    if set(cs) == {"cells", "cytoplasm", "nuclei"}:
        cyto = cs["cytoplasm"]
        return {cyto: {cs["cells"]: f"{cyto}_Parent_{cs['cells']}", cs["nuclei"]: f"{cyto}_Parent_{cs['nuclei']}"}}
    if set(cs) == {"cells", "nuclei"}:
        cells = cs["cells"]
        return {cells: {cs["nuclei"]: f"{cells}_Parent_{cs['nuclei']}"}}
    raise ValueError(
        f"compartments={list(compartments)}: no default way to link these compartments; pass "
        "linking={anchor: {other: '<anchor>_Parent_<other>', ...}}."
    )


def _check_linking(linking: Mapping, compartments: Sequence[str]) -> tuple[str, dict[str, str]]:
    if not isinstance(linking, Mapping) or len(linking) != 1:
        raise ValueError("linking must be a dict with one anchor compartment: {anchor: {other: parent_column, ...}}.")
    anchor, links = next(iter(linking.items()))
    links = dict(links or {})
    named = [anchor, *links]
    if sorted(named) != sorted(compartments):
        raise ValueError(f"linking names compartments {named}, but compartments={list(compartments)}; they must match.")
    return anchor, links


# --------------------------------------------------------------------------------------------
# Joining
# --------------------------------------------------------------------------------------------


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


class _Merged:
    """The joined single cells of one source: ``obs`` (narrow), ``X`` and feature names/dtypes."""

    def __init__(self, obs: pd.DataFrame, X: np.ndarray, features: list[str], dtypes: list[str], summary: dict):
        self.obs, self.X, self.features, self.dtypes, self.summary = obs, X, features, dtypes, summary


def _merge_one(
    source: _Source,
    *,
    compartments: Sequence[str],
    image_table: str | None,
    linking: Mapping | None,
    image_columns,
    image_features,
    rename_image_metadata: bool,
    join: str,
    strict: bool,
    dtype,
) -> _Merged:
    """Join the tables of one source.

    The join runs on the narrow key columns only; each compartment's measurement block is then
    gathered once by row position, so no wide DataFrame is ever merged or copied.
    """
    anchor, links = _check_linking(linking if linking is not None else default_linking(compartments), compartments)
    tables: dict[str, _ObjectTable] = {}
    for comp in compartments:
        frame, label = source.object_table(comp)
        tables[comp] = _ObjectTable(comp, frame, label, dtype)
    with_tn = [t.has_table_number for t in tables.values()]
    img = None
    if image_table is not None:
        iname = source.find(image_table, role="image")
        img = _ImageTable(source.read(iname), source.label(iname), image_columns, image_features, rename_image_metadata, dtype)
        with_tn.append("TableNumber" in img.keys.columns)
    if any(with_tn) and not all(with_tn):
        lacking = [t.label for t in tables.values() if not t.has_table_number]
        if img is not None and "TableNumber" not in img.keys.columns:
            lacking.append(img.label)
        raise KeyError(f"join key column 'TableNumber' is missing from {lacking} but present in the other tables.")
    keys = ["TableNumber", "ImageNumber"] if all(with_tn) else ["ImageNumber"]
    summary: dict = {"source": str(source.path), "n_objects": {}, "unmatched_anchor": {}, "unreferenced": {}}
    for comp, t in tables.items():
        summary["n_objects"][comp] = int(len(t.ids))
        dup = t.ids.duplicated()
        if dup.any():
            raise ValueError(
                f"{t.label}: {int(dup.sum())} duplicated object key(s) {keys + ['ObjectNumber']}, "
                f"e.g. {_examples(t.ids[dup], [*keys, '__obj__'])}; each object must appear once."
            )

    # 1. Link each anchor object to its parents, on the key columns only.
    a = tables[anchor]
    n = len(a.ids)
    positions: dict[str, np.ndarray] = {}
    keep = np.ones(n, dtype=bool)
    for other, parent_col in links.items():
        t = tables[other]
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
        if unmatched.any():
            k = int(unmatched.sum())
            summary["unmatched_anchor"][other] = k
            if strict and join == "inner":
                bad = pd.concat([a.ids, a.meta_df[link]], axis=1).loc[unmatched].rename(columns={"__obj__": "ObjectNumber"})
                raise ValueError(
                    f"{k} of {n} {anchor} object(s) in {a.label} have no matching {other} object in "
                    f"{t.label} (join key {keys + [link.removeprefix('Metadata_')]} → {keys + ['ObjectNumber']}), "
                    f"e.g. {_examples(bad, [*keys, 'ObjectNumber', link])}. The tables do not belong together, or "
                    f"some objects have no parent: pass join='left' to keep them with missing {other} features, "
                    "or strict=False to drop them (pycytominer drops them silently)."
                )
            if join == "inner":
                keep &= ~unmatched
        positions[other] = np.where(unmatched, -1, np.nan_to_num(pos, nan=-1)).astype(np.int64)
    rows = np.flatnonzero(keep)
    for other, pos in positions.items():
        used = np.zeros(len(tables[other].ids), dtype=bool)
        kept = pos[rows]
        used[kept[kept >= 0]] = True
        summary["unreferenced"][other] = int((~used).sum())

    # 2. Gather metadata (narrow frames) and measurement blocks (arrays) by row position.
    ids = a.ids[keys].iloc[rows].reset_index(drop=True)
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
    objects = pd.concat(meta_parts, axis=1)
    features = [f for comp in compartments for f in tables[comp].features]
    dtypes = [d for comp in compartments for d in tables[comp].dtypes]
    X_parts = [blocks[comp] for comp in compartments]

    # 3. Image-level columns, joined on the image keys.
    if img is not None:
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
        features += img.features
        dtypes += img.dtypes
        X_parts.append(_take(img.X, ipos))
        summary["image_columns_not_read"] = int(img.n_left)
    else:
        image_obs = pd.DataFrame(index=ids.index)
    ids.columns = [f"Metadata_{k}" for k in keys]
    obs = pd.concat([image_obs, ids, objects], axis=1)
    summary["folded_object_number_columns"] = sorted({c for t in tables.values() for c in t.folded})
    X = np.hstack(X_parts) if X_parts else np.empty((len(obs), 0))
    return _Merged(obs, X.astype(dtype, copy=False), features, dtypes, summary)


def _sources(path) -> list[Path]:
    if isinstance(path, (list, tuple)):
        paths = [Path(p) for p in path]
        if not paths:
            raise ValueError("read_cellprofiler: empty list of paths.")
    else:
        paths = [Path(path)]
    out = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder.")
        if p.is_file():
            if p.stat().st_size == 0:
                raise ValueError(f"{p}: the file is empty (0 bytes).")
            if not p.name.lower().endswith(_SQLITE_SUFFIXES):
                with open(p, "rb") as fh:
                    head = fh.read(16)
                if head != b"SQLite format 3\x00":
                    raise ValueError(
                        f"{p}: not a SQLite database nor a folder of CellProfiler tables. For a single profile "
                        "table use ip.io.read_profiles."
                    )
            out.append(p)
        else:
            out.append(p)
    return out


def _expand_folders(paths: list[Path], image_table: str | None) -> list[Path]:
    """A folder without the image table but with sub-folders that hold one → read each sub-folder."""
    out = []
    for p in paths:
        if p.is_dir():
            src = _Source(p)
            try:
                src.find(image_table or "Image", role="image")
                out.append(p)
                continue
            except FileNotFoundError:
                subs = sorted(q for q in p.iterdir() if q.is_dir())
                found = []
                for q in subs:
                    try:
                        _Source(q).find(image_table or "Image", role="image")
                        found.append(q)
                    except (FileNotFoundError, ValueError):
                        pass
                if not found:
                    if image_table is None:
                        out.append(p)
                        continue
                    raise
                out.extend(found)
        else:
            out.append(p)
    return out


def read_cellprofiler(
    path: PathLike | Sequence[PathLike],
    *,
    compartments: Sequence[str] = DEFAULT_COMPARTMENTS,
    image_table: str | None = "Image",
    linking: Mapping[str, Mapping[str, str]] | None = None,
    image_columns: str | Sequence[str] | None = DEFAULT_IMAGE_COLUMNS,
    image_features: bool | Sequence[str] = False,
    rename_image_metadata: bool = True,
    join: str = "inner",
    strict: bool = True,
    dtype: str | np.dtype = "float64",
) -> ad.AnnData:
    """Read CellProfiler per-compartment outputs into one single-cell AnnData.

    Parameters
    ----------
    path
        A folder holding ``Image.csv``, ``Cells.csv``, ``Cytoplasm.csv``, ``Nuclei.csv`` (``.csv.gz``,
        ``.tsv`` or ``.parquet`` too; an ExportToSpreadsheet prefix such as ``MyExpt_Cells.csv`` is
        recognised); a folder whose sub-folders each hold such a set (one per site, as
        CellProfiler writes them on a cluster); a list of such folders; or a SQLite file written by
        ExportToDatabase (``Per_Image``, ``Per_Cells``...; or ``Per_Image`` + ``Per_Object`` when
        written as a single object table) or cytominer-database (``Image``, ``Cells``...). Inputs
        are only read (SQLite is opened read-only).
    compartments
        Object tables to join. Their features are prefixed with the compartment name
        (``AreaShape_Area`` in ``Cells.csv`` becomes ``Cells_AreaShape_Area``), as CellProfiler's
        database export and pycytominer name them.
    image_table
        Name of the image table (``None``: do not read it; no image metadata).
    linking
        ``{anchor: {other: parent_column}}``. Each row of the anchor compartment becomes one cell
        and is linked to the object of ``other`` whose ``ObjectNumber`` equals the anchor's
        ``parent_column``, within the same image. Default: :func:`default_linking`
        (``Cytoplasm_Parent_Cells``/``Cytoplasm_Parent_Nuclei``, pycytominer's default).
    image_columns
        Image-table columns copied into ``.obs``: column groups (the first token of the
        CellProfiler name, e.g. ``"Metadata"``, ``"FileName"``, ``"PathName"``, ``"Count"``) or exact
        column names; ``"all"`` for every column; ``None`` for none. They are named
        ``Metadata_<name>`` (``Metadata_Plate``, ``Metadata_FileName_OrigDNA``, ``Metadata_Count_Cells``).
    image_features
        Image-level measurements to add as features (``Image_<name>``): ``True`` for every numeric
        measurement, or a list of groups such as ``["Granularity", "Texture"]`` (pycytominer's
        ``image_feature_categories``).
    rename_image_metadata
        SQLite image tables name metadata ``Image_Metadata_Plate``; ``True`` (default) stores them
        as ``Metadata_Plate`` (what pycytominer's ``annotate(clean_cellprofiler=True)`` does),
        ``False`` keeps the table's names (``Image_Metadata_Plate``, ``Image_FileName_...``).
    join
        ``"inner"``: keep anchor objects whose parents exist in every other table (pycytominer);
        ``"left"``: keep every anchor object, with NaN features where a parent is missing.
    strict
        With ``join="inner"``, raise (naming the tables, the join column and example objects)
        when anchor objects have no parent, instead of dropping them; also raise when objects
        reference images missing from the image table.
    dtype
        Float type of ``.X`` (``"float32"`` halves memory).

    Returns
    -------
    AnnData, one observation per anchor object. ``.obs``: image metadata (``Metadata_Plate``,
    ``Metadata_Well``, ``Metadata_Site``, file names...), then ``Metadata_TableNumber`` (when
    present, or the folder name when several folders are read), ``Metadata_ImageNumber``,
    ``Metadata_ObjectNumber`` (the anchor's object number), ``Metadata_<Other>_ObjectNumber``
    and the ``Metadata_<Compartment>_Parent_<X>`` columns; object-level ``Metadata_*`` columns
    follow. ``.X``: every ``<Compartment>_*`` measurement; ``.var``: their anatomy.
    ``.uns["imgprof"]``: level ``"single_cell"`` and a provenance entry with object counts
    and unmatched objects per compartment.

    Raises
    ------
    FileNotFoundError, KeyError, ValueError, TypeError
        A missing table (naming the folder and the files found), a missing join column (naming
        the file and the column), duplicated or unmatched objects, empty tables, duplicated
        column names or non-numeric measurement columns (naming file and column).

    Notes
    -----
    Silent by default; inside ``imgprof._core.progress.show_progress()`` (as in
    ``imgprof run``) each SQLite table read shows a bar counting its rows.

    Examples
    --------
    >>> import imgprof as ip
    >>> cells = ip.io.read_cellprofiler(ip.datasets.examplehuman_images_path())
    >>> cells.n_obs, cells.var.loc["Cells_AreaShape_Area", "compartment"]
    (289, 'Cells')
    >>> cells.obs[["Metadata_ImageNumber", "Metadata_ObjectNumber"]].iloc[0].tolist()
    [1, 1]
    """
    if join not in ("inner", "left"):
        raise ValueError(f"join must be 'inner' or 'left', got {join!r}.")
    compartments = as_list(compartments)
    if not compartments:
        raise ValueError("compartments: give at least one compartment table.")
    if len({c.lower() for c in compartments}) != len(compartments):
        raise ValueError(f"compartments: duplicated names in {compartments}.")
    dtype = np.dtype(dtype)
    paths = _expand_folders(_sources(path), image_table)
    merged: list[_Merged] = []
    for p in paths:
        m = _merge_one(
            _Source(p), compartments=compartments, image_table=image_table, linking=linking,
            image_columns=image_columns, image_features=image_features, rename_image_metadata=rename_image_metadata,
            join=join, strict=strict, dtype=dtype,
        )
        if merged and m.features != merged[0].features:
            diff = sorted(set(m.features) ^ set(merged[0].features))
            raise ValueError(
                f"{p}: its feature columns differ from those of {paths[0]} ({len(diff)} differ, e.g. {diff[:5]}); "
                "read the folders separately and intersect the features."
            )
        merged.append(m)
    features = merged[0].features
    if len(merged) > 1:
        frames = []
        for p, m in zip(paths, merged):
            o = m.obs
            if "Metadata_TableNumber" not in o.columns:  # keeps ImageNumber unique across folders
                o = o.copy()
                o.insert(list(o.columns).index("Metadata_ImageNumber"), "Metadata_TableNumber", p.name)
            frames.append(o)
        obs = pd.concat(frames, ignore_index=True)
        X = np.vstack([m.X for m in merged])
        dtypes = [d if len({m.dtypes[i] for m in merged}) == 1 else "float64" for i, d in enumerate(merged[0].dtypes)]
    else:
        obs, X, dtypes = merged[0].obs, merged[0].X, merged[0].dtypes
    if len(obs) == 0:
        raise ValueError(f"{path}: no object left after joining the compartments.")
    if dtype != np.float64:
        dtypes = [str(dtype)] * len(features)
    check_unique_columns([*map(str, obs.columns), *features], source=f"{path} (joined tables)")
    adata = _from_parts(obs.reset_index(drop=True), X, features, dtypes, level="single_cell", source=str(path))
    params = dict(
        path=[str(p) for p in paths] if len(paths) > 1 else str(paths[0]), compartments=compartments,
        image_table=image_table, linking=linking, image_columns=image_columns, image_features=image_features,
        rename_image_metadata=rename_image_metadata, join=join, strict=strict, dtype=str(dtype),
    )
    log_step(adata, "io.read_cellprofiler", params, sources=[m.summary for m in merged])
    return adata
