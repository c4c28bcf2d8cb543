"""CellProfiler outputs, table by table: locate and load the raw tables of one source.

A *source* is a folder of CSV/Parquet files or a SQLite file (:class:`Source`); each object
table becomes an :class:`ObjectTable` (join keys, metadata, measurement matrix) and the image
table an :class:`ImageTable`. :mod:`imgprof.io._cp_merge` joins them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from .._core.features import check_numeric_features, check_unique_columns
from .._core.progress import progress_bar, progress_enabled
from .._core.validation import as_list

_SQL_CHUNK = 2000  # rows per SQLite fetch
_TABLE_EXTENSIONS = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".parquet")


# --------------------------------------------------------------------------------------------
# Locating and loading the raw tables
# --------------------------------------------------------------------------------------------


def _only(candidates: list[str], ambiguous: str) -> str | None:
    """The one candidate (``None`` when there is none; ``ValueError(ambiguous)`` when several)."""
    if len(candidates) > 1:
        raise ValueError(ambiguous)
    return candidates[0] if candidates else None


class Source:
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
                        query = "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
                        self._tables = [r[0] for r in con.execute(query)]
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
            found = _only(per, f"{self.path}: several tables match the {role} table {name!r}: {per}; pass its exact name.")
            if found is not None:
                return found
            raise KeyError(
                f"{self.path}: no {role} table {name!r} (looked for {name!r} and 'Per_{name}'); "
                f"tables in the database: {tables}."
            )
        exact = [t for t in tables if t.lower() in {low + ext for ext in _TABLE_EXTENSIONS}]
        found = _only(exact, f"{self.path}: several files hold the {role} table {name!r}: {exact}; keep only one.")
        if found is None:
            prefixed = [t for t in tables if any(t.lower().endswith(f"_{low}{ext}") for ext in _TABLE_EXTENSIONS)]
            found = _only(prefixed, f"{self.path}: several files could hold the {role} table {name!r}: {prefixed}.")
        if found is not None:
            return found
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
            return self._combined_part(comp, *combined)
        return self.read(name), self.label(name)

    def _combined_part(self, comp: str, name: str, df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
        """The ``comp`` columns and rows of the combined ``Per_Object`` table ``name``."""
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
            from .profiles import sep_for

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
                df = read_text_table(p, sep=None, label=label, default_sep=sep_for(p), float_precision="round_trip")
        if df.shape[0] == 0:
            raise ValueError(f"{label}: the table has a header but no rows.")
        return df


# --------------------------------------------------------------------------------------------
# Normalizing one table
# --------------------------------------------------------------------------------------------


def _as_numeric_if_empty(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """SQLite returns all-NULL columns as object; make them float so they count as numeric."""
    dtypes = dict(df.dtypes.items())
    empty = [c for c in cols if dtypes[c] == np.dtype(object) and df[c].isna().all()]
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


def _renamed(df: pd.DataFrame, cols: Sequence[str], names: Sequence[str]) -> pd.DataFrame:
    """Columns ``cols`` of ``df`` under the names ``names``, on a fresh RangeIndex."""
    out = df.loc[:, list(cols)].reset_index(drop=True)
    out.columns = list(names)
    return out


def _typed_matrix(df: pd.DataFrame, cols: Sequence[str], dtype: np.dtype) -> tuple[list[str], np.ndarray]:
    """The columns' input dtypes (for ``.var``) and their values as a ``dtype`` matrix."""
    all_dtypes = dict(df.dtypes.items())
    return [str(all_dtypes[c]) for c in cols], _matrix(df, cols, dtype)


class ObjectTable:
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
        self.meta_df = _renamed(df, meta_src, meta)
        self.meta = meta
        self.features = feats
        self.dtypes, self.X = _typed_matrix(df, feat_src, dtype)


def _check_numeric_named(df: pd.DataFrame, src: Sequence[str], names: Sequence[str], label: str) -> None:
    """check_numeric_features on the source columns, reporting their prefixed names."""
    dtypes = dict(df.dtypes.items())
    bad = [(s, n) for s, n in zip(src, names) if not pd.api.types.is_numeric_dtype(dtypes[s])]
    if bad:
        sub = df.loc[:, [s for s, _ in bad]]
        sub.columns = [n for _, n in bad]
        check_numeric_features(sub, list(sub.columns), source=label)


class ImageTable:
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
        self.obs = _renamed(df, obs_cols, obs_names)
        self.obs_names = obs_names
        self.features = feat_names
        self.dtypes, self.X = _typed_matrix(df, feat_cols, dtype)
        self.n_left = len(base) - len(obs_cols) - len(feat_cols)
