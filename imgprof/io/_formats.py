"""The one place that tells file formats apart: ``detect_format`` and the reader registry.

``ip.io.read``, ``ip.io.read_profiles`` (lazy or not), the pipeline's input step and
``ip.pp.aggregate``'s streamed sources all ask :func:`detect_format` what a path is;
:data:`READERS` maps each format to the :mod:`imgprof.io` reader that loads it.
Adding a format is one ``READERS.register_lazy`` line plus its suffixes.
"""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad

from .._core.registry import Registry

PathLike = str | os.PathLike

#: Format → reader (a lazy entry, loaded on first use); ``meta``: ``reader`` (its name in
#: :mod:`imgprof.io`) and ``suffixes`` (file-name endings, lower case).
READERS = Registry("reader", param="path")

for _fmt, _reader, _ends in (
    ("sqlite", "read_cellprofiler", (".sqlite", ".sqlite3", ".db")),
    ("gct", "read_gct", (".gct.gz", ".gct")),
    ("gctx", "read_gctx", (".gctx",)),
    ("deepprofiler", "read_deepprofiler", (".npz",)),
    ("h5ad", "read_profiles", (".h5ad",)),
    ("zarr", "read_profiles", (".zarr",)),
    ("parquet", "read_profiles", (".parquet", ".pq")),
    ("tsv", "read_profiles", (".tsv.gz", ".txt.gz", ".tsv", ".txt")),
    ("csv", "read_profiles", (".csv.gz", ".csv")),
    ("parquet_folder", "read_cytotable", ()),
    ("images", "read_images", ()),
    ("cellprofiler_folder", "read_cellprofiler", ()),
):
    READERS.register_lazy(_fmt, f"imgprof.io:{_reader}", reader=_reader, suffixes=_ends)


def _suffixes() -> list[tuple[str, str]]:
    """(suffix, format) pairs, longest suffixes first."""
    pairs = [(s, e.name) for e in READERS.entries() for s in e["suffixes"]]
    return sorted(pairs, key=lambda kv: len(kv[0]), reverse=True)


def suffix_table() -> dict[str, str]:
    """Every known file suffix → the name of the reader that loads it (longest suffixes first)."""
    return {s: READERS.get(fmt)["reader"] for s, fmt in _suffixes()}


def parquet_files(path: Path) -> list[str]:
    """The parquet file itself, or the ``*.parquet``/``*.pq`` files of a folder (recursively, sorted by path)."""
    if path.is_file():
        return [str(path)]
    return sorted(str(p) for p in path.rglob("*") if p.is_file() and p.name.lower().endswith((".parquet", ".pq")))


def _folder_format(path: Path) -> str:
    if parquet_files(path) and not any(path.glob("*.csv*")):
        return "parquet_folder"
    if any(path.glob("*.tif*")) and not any(path.glob("Cells.csv*")):
        return "images"
    return "cellprofiler_folder"


def detect_format(path: PathLike, *, look_inside: bool = True) -> str:
    """The format of ``path``: a name of :data:`READERS` (``"parquet"``, ``"zarr"``, ``"csv"``...).

    Parameters
    ----------
    path
        A file or folder (it need not exist for a file; a folder is looked into). A folder holding
        parquet files (and no CSV) is ``"parquet_folder"``, one holding TIFF images (and no
        ``Cells.csv``) ``"images"``, other folders ``"cellprofiler_folder"``.
    look_inside
        ``False``: go by the name alone, also for an existing folder (writers).

    Returns
    -------
    str
        The format name.

    Raises
    ------
    ValueError
        No reader handles the suffix (listing the known ones).

    Examples
    --------
    >>> from imgprof.io._formats import detect_format
    >>> detect_format("plate.csv.gz"), detect_format("cells.pq"), detect_format("SQ00014613.sqlite")
    ('csv', 'parquet', 'sqlite')
    """
    path = Path(path)
    name = path.name.lower()
    if look_inside and path.is_dir() and not name.endswith(".zarr"):
        return _folder_format(path)
    for suffix, fmt in _suffixes():
        if name.endswith(suffix):
            return fmt
    raise ValueError(f"{path}: no reader for this file type; known suffixes: {sorted(suffix_table())}.")


def is_parquet_source(path: Path) -> bool:
    """True for a ``.parquet``/``.pq`` file or a folder holding such files (and not a zarr store)."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")) and path.is_file():
        return True
    return path.is_dir() and not name.endswith(".zarr") and bool(parquet_files(path))


def reader_for(path: PathLike) -> str:
    """The name of the :mod:`imgprof.io` reader :func:`imgprof.io.read` uses for ``path``.

    Parameters
    ----------
    path
        A file or folder. Folders holding TIFF images (and no ``Cells.csv``) are ``"read_images"``,
        folders of parquet files ``"read_cytotable"``, other folders CellProfiler CSV folders
        (``"read_cellprofiler"``).

    Returns
    -------
    The reader's name, e.g. ``"read_profiles"``.

    Raises
    ------
    ValueError
        No reader handles the suffix; the message lists the known suffixes.

    Examples
    --------
    >>> import imgprof as ip
    >>> ip.io.reader_for("plate.gct.gz"), ip.io.reader_for("SQ00014613.sqlite")
    ('read_gct', 'read_cellprofiler')
    """
    return READERS.get(detect_format(path), where="io.read")["reader"]


def read(path: PathLike, **kwargs) -> ad.AnnData:
    """Read any supported input, picking the reader by format (see :func:`reader_for`).

    Parameters
    ----------
    path
        Profile table (``.csv[.gz]``, ``.tsv``, ``.parquet``, ``.h5ad``, ``.zarr``), CellProfiler
        SQLite (``.sqlite``/``.db``) or CSV folder, GCT/GCTX, DeepProfiler ``.npz``, image folder.
    **kwargs
        Passed to the reader.

    Returns
    -------
    AnnData.

    Examples
    --------
    >>> import imgprof as ip, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "p.csv")
    >>> ip.io.write_profiles(ip.datasets.simulate(n_plates=1, seed=0), p)
    >>> ip.io.read(p).n_obs > 0
    True
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder.")
    return READERS.get(detect_format(path), where="io.read").obj(path, **kwargs)
