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
from collections.abc import Mapping, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._core.features import check_unique_columns
from .._core.provenance import log_step
from .._core.validation import as_list
from ._cp_merge import Merged, merge_one
from ._cp_tables import Source
from .profiles import from_parts

PathLike = str | os.PathLike

DEFAULT_COMPARTMENTS: tuple[str, ...] = ("Cells", "Cytoplasm", "Nuclei")
#: Image-table column groups copied into ``.obs`` by default (as ``Metadata_<column>``).
DEFAULT_IMAGE_COLUMNS: tuple[str, ...] = ("Metadata", "FileName", "PathName")
_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


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
            src = Source(p)
            try:
                src.find(image_table or "Image", role="image")
                out.append(p)
                continue
            except FileNotFoundError:
                subs = sorted(q for q in p.iterdir() if q.is_dir())
                found = []
                for q in subs:
                    try:
                        Source(q).find(image_table or "Image", role="image")
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
    imgprof record in ``.uns``: level ``"single_cell"`` and a provenance entry with object counts
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
    merged: list[Merged] = []
    for p in paths:
        anchor, links = _check_linking(linking if linking is not None else default_linking(compartments), compartments)
        m = merge_one(
            Source(p), compartments=compartments, image_table=image_table, anchor=anchor, links=links,
            image_args=(image_columns, image_features, rename_image_metadata), join=join, strict=strict, dtype=dtype,
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
    adata = from_parts(obs.reset_index(drop=True), X, features, dtypes, level="single_cell", source=str(path))
    params = dict(
        path=[str(p) for p in paths] if len(paths) > 1 else str(paths[0]), compartments=compartments,
        image_table=image_table, linking=linking, image_columns=image_columns, image_features=image_features,
        rename_image_metadata=rename_image_metadata, join=join, strict=strict, dtype=str(dtype),
    )
    log_step(adata, "io.read_cellprofiler", params, sources=[m.summary for m in merged])
    return adata
