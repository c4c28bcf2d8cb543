"""Read a plate/site/channel image set from a folder or a CellProfiler load-data table, lazily.

:func:`read_images` returns an :class:`ImageSet`: a table with one row per site
(``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site`` and any other metadata, plus
CellProfiler's ``FileName_<channel>`` / ``PathName_<channel>`` columns) and a reader
that loads a site's channels on demand, as numpy arrays or as a lazy dask array, so a
plate never has to fit in memory.

Problems that concern one site (a missing channel, an unreadable or empty file,
channels of different shapes) do not stop the plate: the site is flagged in
``Metadata_qc_error`` with a message naming the file, a warning is issued, and later
steps skip it. Problems with the whole request (no matching file, a channel map
naming a channel that no file has) raise immediately.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da

from ._layout import IMAGE_EXTENSIONS, PATTERNS, QC_ERROR, from_folder, from_table

PathLike = str | os.PathLike

__all__ = ["ImageReadError", "ImageSet", "PATTERNS", "read_image", "read_images"]


class ImageReadError(ValueError):
    """An image file could not be read (the message names the file)."""


def _reader_for(path: Path):
    name = path.name.lower()
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    return "imageio"


def _checked_kind(path: Path) -> str:
    """The reader kind of an existing, non-empty image file (clear errors otherwise)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image file.")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image file.")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: the image file is empty (0 bytes).")
    return _reader_for(path)


def read_image(path: PathLike, *, frame: int | None = None) -> np.ndarray:
    """Read one single-channel 2-D image (TIFF, PNG, JPEG, NPY...) with a clear error naming the file.

    Parameters
    ----------
    path
        Image file.
    frame
        Frame of a multi-frame TIFF (default: the file must hold one 2-D image).

    Returns
    -------
    numpy.ndarray
        The 2-D image in its stored dtype.

    Examples
    --------
    >>> import imgprof as ip
    >>> p = ip.datasets.examplehuman_images_path() / "AS_09125_050116030001_D03f00d0.tif"
    >>> read_image(p).shape
    (512, 512)
    """
    path = Path(path)
    kind = _checked_kind(path)
    try:
        if kind == "npy":
            arr = np.load(path, allow_pickle=False)
        elif kind == "tiff":
            import tifffile

            arr = tifffile.imread(path, key=frame if frame is not None else 0)
        else:
            import imageio.v3 as iio

            arr = iio.imread(path, index=frame if frame is not None else None)
    except Exception as e:  # many decoders, many exception types
        raise ImageReadError(f"{path}: could not be read as an image ({type(e).__name__}: {e}).") from e
    arr = np.asarray(arr)
    if arr.ndim > 2:
        arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise ImageReadError(
            f"{path}: expected a single-channel 2-D image, got shape {arr.shape}. Split multi-channel files "
            "into one file per channel, or select a plane with a Frame_<channel> column."
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ImageReadError(f"{path}: unsupported pixel type {arr.dtype}.")
    return arr


def _image_header(path: Path, frame: int | None = None) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an image without decoding the pixels when the format allows (TIFF, NPY)."""
    kind = _checked_kind(path)
    try:
        if kind == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tf:
                page = tf.pages[frame if frame is not None else 0]
                shape, dtype = tuple(page.shape), np.dtype(page.dtype)
        elif kind == "npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            shape, dtype = tuple(arr.shape), arr.dtype
        else:
            arr = read_image(path, frame=frame)
            return arr.shape, arr.dtype
    except (FileNotFoundError, ImageReadError):
        raise
    except Exception as e:
        raise ImageReadError(f"{path}: could not be read as an image ({type(e).__name__}: {e}).") from e
    shape = tuple(s for s in shape if s != 1) if len(shape) > 2 else shape
    if len(shape) != 2:
        raise ImageReadError(f"{path}: expected a single-channel 2-D image, got shape {shape}.")
    return shape, dtype


def _scale_for(dtype: np.dtype) -> float:
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


@dataclass
class ImageSet:
    """Sites × channels of images, read lazily.

    Attributes
    ----------
    table
        One row per site: ``Metadata_*`` columns, ``FileName_<ch>`` / ``PathName_<ch>``
        (CellProfiler's load-data convention), optional ``Frame_<ch>``,
        ``ObjectsFileName_<name>`` / ``ObjectsPathName_<name>`` (label images to use
        instead of segmenting) and ``Metadata_qc_error`` ("" when the site is usable).
    channels
        Channel names in order.
    rescale
        ``"dtype"`` (divide integer images by their dtype maximum, CellProfiler's
        convention), ``None`` (raw values as float) or a number to divide by.
    illumination
        ``{plate: {channel: illumination function}}`` applied by division when reading
        (see :func:`imgprof.im.correct_illumination`).
    dtypes
        ``{channel: numpy dtype name}`` of the stored images (used by ``rescale="dtype"``).
    source
        Where the table came from (folder or file), for messages.

    Examples
    --------
    >>> import imgprof as ip
    >>> images = ip.io.read_images(ip.datasets.examplehuman_images_path(),
    ...                            channels={"DNA": "d0", "PH3": "d1", "Cells": "d2"})  # doctest: +SKIP
    >>> images.channels  # doctest: +SKIP
    ['DNA', 'PH3', 'Cells']
    """

    table: pd.DataFrame
    channels: list[str]
    rescale: str | float | None = "dtype"
    illumination: dict[str, dict[str, np.ndarray]] | None = None
    dtypes: dict[str, str] = field(default_factory=dict)
    source: str = ""

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        n_bad = int((self.table[QC_ERROR] != "").sum()) if QC_ERROR in self.table else 0
        plates = self.table["Metadata_Plate"].nunique() if "Metadata_Plate" in self.table else "?"
        ill = ", illumination-corrected" if self.illumination else ""
        return (f"ImageSet: {len(self)} sites × {len(self.channels)} channels {self.channels} "
                f"on {plates} plate(s), {n_bad} flagged site(s){ill}")

    @property
    def metadata(self) -> pd.DataFrame:
        """The ``Metadata_*`` columns (one row per site)."""
        return self.table[[c for c in self.table.columns if c.startswith("Metadata_")]]

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of sites without a read error."""
        if QC_ERROR not in self.table:
            return np.ones(len(self), bool)
        return (self.table[QC_ERROR].fillna("") == "").to_numpy()

    @property
    def object_names(self) -> list[str]:
        """Names of label images supplied through ``ObjectsFileName_<name>`` columns."""
        return [c.removeprefix("ObjectsFileName_") for c in self.table.columns if c.startswith("ObjectsFileName_")]

    @property
    def scale_max(self) -> int:
        """Largest storage maximum among the channels (255 for 8-bit, 65535 for 16-bit; 65535 for floats)."""
        vals = [int(_scale_for(np.dtype(d))) for d in self.dtypes.values() if np.issubdtype(np.dtype(d), np.integer)]
        return max(vals) if vals else 65535

    def _check_site(self, i: int) -> pd.Series:
        if not -len(self) <= i < len(self):
            raise IndexError(f"site index {i} out of range for {len(self)} sites.")
        return self.table.iloc[i]

    def _check_channels(self, channels) -> list[str]:
        channels = list(self.channels) if channels is None else ([channels] if isinstance(channels, str) else list(channels))
        unknown = [c for c in channels if c not in self.channels]
        if unknown:
            raise KeyError(f"channels {unknown} not in this image set (channels: {self.channels}).")
        return channels

    def path(self, i: int, channel: str) -> Path:
        """Path of one site's image for ``channel``."""
        row = self._check_site(i)
        self._check_channels([channel])
        return Path(str(row.get(f"PathName_{channel}", "") or "")) / str(row[f"FileName_{channel}"])

    def _frame(self, row, ch) -> int | None:
        v = row.get(f"Frame_{ch}")
        return None if v is None or pd.isna(v) else int(v)

    def _convert(self, arr: np.ndarray, plate: Any, ch: str, corrected: bool) -> np.ndarray:
        if self.rescale == "dtype":
            out = arr.astype(np.float32) / np.float32(_scale_for(arr.dtype))
        elif self.rescale is None:
            out = arr.astype(np.float32)
        else:
            out = arr.astype(np.float32) / np.float32(self.rescale)
        if corrected and self.illumination:
            funcs = self.illumination.get(str(plate), self.illumination.get("*"))
            if funcs is None:
                raise KeyError(
                    f"no illumination function for plate {plate!r} (have {sorted(self.illumination)}); "
                    "compute one per plate or pass {'*': {...}} to use one for all plates."
                )
            if ch in funcs:
                f = np.asarray(funcs[ch], np.float32)
                if f.shape != out.shape:
                    raise ValueError(
                        f"illumination function of plate {plate!r}, channel {ch!r} has shape {f.shape} "
                        f"but the image has shape {out.shape}."
                    )
                out = out / f
        return out

    def read(self, i: int, channels: Sequence[str] | str | None = None, *, corrected: bool = True) -> dict[str, np.ndarray]:
        """Load one site as ``{channel: float32 2-D array}`` (scaled, illumination-corrected).

        Raises a clear error naming the file when a file is missing, empty or unreadable,
        or when the channels of the site differ in shape.

        Examples
        --------
        >>> import imgprof as ip
        >>> imgs = ip.io.read_images(ip.datasets.examplehuman_images_path(),
        ...                          channels={"0": "DNA", "1": "PH3", "2": "cellbody"})
        >>> site = imgs.read(0)
        >>> sorted(site), site["DNA"].dtype
        (['DNA', 'PH3', 'cellbody'], dtype('float32'))
        """
        row = self._check_site(i)
        channels = self._check_channels(channels)
        out: dict[str, np.ndarray] = {}
        for ch in channels:
            fn = row.get(f"FileName_{ch}")
            if fn is None or (isinstance(fn, float) and np.isnan(fn)) or str(fn) == "":
                raise FileNotFoundError(f"site {self._describe(row)}: no file for channel {ch!r}.")
            arr = read_image(self.path(i, ch), frame=self._frame(row, ch))
            out[ch] = self._convert(arr, row.get("Metadata_Plate", ""), ch, corrected)
        shapes = {ch: a.shape for ch, a in out.items()}
        if len(set(shapes.values())) > 1:
            files = {ch: str(self.path(i, ch)) for ch in out}
            raise ImageReadError(f"site {self._describe(row)}: channels have different shapes {shapes} (files {files}).")
        return out

    site = read

    def read_objects(self, i: int) -> dict[str, np.ndarray]:
        """Label images given in ``ObjectsFileName_<name>`` columns for site ``i`` (empty dict when none)."""
        row = self._check_site(i)
        out = {}
        for name in self.object_names:
            fn = row.get(f"ObjectsFileName_{name}")
            if fn is None or pd.isna(fn):
                continue
            p = Path(str(row.get(f"ObjectsPathName_{name}", "") or "")) / str(fn)
            arr = read_image(p)
            if not np.issubdtype(arr.dtype, np.integer):
                if np.all(np.mod(arr, 1) == 0):
                    arr = arr.astype(np.int32)
                else:
                    raise ImageReadError(f"{p}: label image must hold integers, got {arr.dtype} with fractions.")
            out[name] = arr.astype(np.int32)
        return out

    def _describe(self, row) -> str:
        keys = ("Metadata_Plate", "Metadata_Well", "Metadata_Site")
        parts = [f"{k.removeprefix('Metadata_')}={row[k]}" for k in keys if k in row]
        return "(" + ", ".join(parts) + ")"

    def describe(self, i: int) -> str:
        """Human-readable site identity, e.g. ``(Plate=P1, Well=A01, Site=1)``."""
        return self._describe(self._check_site(i))

    def to_dask(
        self, channels: Sequence[str] | str | None = None, *, corrected: bool = True, sites: Sequence[int] | None = None
    ) -> da.Array:
        """Lazy dask array ``(sites, channels, Y, X)`` of float32 (one chunk per site and channel).

        Only usable sites are included by default (``ImageSet.ok``); all must share one shape.

        Examples
        --------
        >>> import imgprof as ip
        >>> imgs = ip.io.read_images(ip.datasets.examplehuman_images_path(),
        ...                          channels={"0": "DNA", "1": "PH3", "2": "cellbody"})
        >>> imgs.to_dask().shape
        (1, 3, 512, 512)
        """
        import dask
        import dask.array as da

        channels = self._check_channels(channels)
        if sites is None:
            sites = np.flatnonzero(self.ok).tolist()
        shapes = set()
        for i in sites:
            row = self.table.iloc[i]
            for ch in channels:
                shapes.add(_image_header(self.path(i, ch), self._frame(row, ch))[0])
        if len(shapes) > 1:
            raise ValueError(f"sites have different image shapes {sorted(shapes)}; use read(i) per site instead.")
        if not shapes:
            raise ValueError("no usable site to stack.")
        shape = shapes.pop()

        def load(i, ch):
            return self.read(i, [ch], corrected=corrected)[ch]

        blocks = [
            da.stack([da.from_delayed(dask.delayed(load)(i, ch), shape=shape, dtype=np.float32) for ch in channels])
            for i in sites
        ]
        return da.stack(blocks)

    def subset(self, sites: str | Sequence[int] | np.ndarray) -> ImageSet:
        """A new ImageSet with the selected sites (boolean mask, indices, or a pandas query on the table)."""
        if isinstance(sites, str):
            table = self.table.query(sites)
        else:
            sites = np.asarray(sites)
            table = self.table.iloc[np.flatnonzero(sites) if sites.dtype == bool else sites]
        return ImageSet(table.reset_index(drop=True), list(self.channels), self.rescale, self.illumination,
                        dict(self.dtypes), self.source)

    def with_illumination(self, illumination: Mapping[str, Mapping[str, np.ndarray]] | None) -> ImageSet:
        """A new ImageSet that divides every image by its plate's illumination function when read."""
        ill = None if illumination is None else {str(p): dict(f) for p, f in illumination.items()}
        return ImageSet(self.table.copy(), list(self.channels), self.rescale, ill, dict(self.dtypes), self.source)


def _validate(table: pd.DataFrame, channels: list[str]) -> dict[str, str]:
    """Check every file (exists, non-empty, readable header, same shape per site); record problems per site."""
    dtypes: dict[str, str] = {}
    errs = table[QC_ERROR].tolist()
    for r in range(len(table)):
        row = table.iloc[r]
        shapes, msgs = {}, []
        for ch in channels:
            fn = row.get(f"FileName_{ch}")
            if not fn:
                continue
            p = Path(str(row.get(f"PathName_{ch}", "") or "")) / str(fn)
            frame = row.get(f"Frame_{ch}")
            frame = None if frame is None or pd.isna(frame) else int(frame)
            try:
                shape, dt = _image_header(p, frame)
                shapes[ch] = shape
                dtypes.setdefault(ch, str(dt))
            except (FileNotFoundError, ImageReadError) as e:
                msgs.append(str(e))
        if len(set(shapes.values())) > 1:
            msgs.append("channels have different shapes " + ", ".join(f"{c}={s}" for c, s in shapes.items()))
        if msgs:
            errs[r] = "; ".join([e for e in [errs[r]] if e] + msgs)
    table[QC_ERROR] = errs
    return dtypes


def read_images(
    source: PathLike | pd.DataFrame,
    *,
    channels: Mapping[str, str] | Sequence[str] | None = None,
    pattern: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    recursive: bool = False,
    root: PathLike | None = None,
    rescale: str | float | None = "dtype",
    validate: bool = True,
    on_error: str = "flag",
) -> ImageSet:
    """Read a plate/site/channel image set lazily from a folder or a load-data table.

    Parameters
    ----------
    source
        A folder of images (file names parsed with ``pattern``), a CSV load-data file,
        or a load-data DataFrame with CellProfiler's ``FileName_<channel>`` /
        ``PathName_<channel>`` columns (plus ``Metadata_*``, optional ``Frame_<channel>``
        and ``ObjectsFileName_<name>``/``ObjectsPathName_<name>`` for label images).
    channels
        Folder: ``{token: name}`` mapping the ``Channel`` group of the pattern to channel
        names (e.g. ``{"0": "DNA", "1": "PH3"}``), or names in token order. Load-data:
        channels to keep (list) or ``{column channel: new name}``.
    pattern
        Regular expression with named groups ``Plate``, ``Well`` (or ``Row``/``Column``),
        ``Site``, ``Channel``; other named groups become ``Metadata_<name>``. ``None`` tries
        the ImageXpress, Cellomics and Phenix patterns in :data:`PATTERNS`.
    metadata
        Constant metadata to add to every site (e.g. ``{"Metadata_Plate": "P1"}`` when
        the plate is not in the file names).
    extensions, recursive
        Which files are images; search sub-folders too (without a ``Plate`` group, a file's
        folder name is its plate).
    root
        Folder against which relative ``PathName_`` entries are resolved (default: the
        load-data file's folder).
    rescale
        ``"dtype"``: divide integer images by their dtype maximum (CellProfiler's
        convention; 8-bit → /255); ``None``: raw values; a number: divide by it.
    validate
        Check every file's header now (exists, non-empty, readable, same shape within a
        site). Cheap for TIFF.
    on_error
        ``"flag"`` (default): record a site's problem in ``Metadata_qc_error``, warn and
        go on; ``"raise"``: raise on the first problem.

    Returns
    -------
    :class:`ImageSet`

    Examples
    --------
    >>> import imgprof as ip
    >>> imgs = ip.io.read_images(ip.datasets.examplehuman_images_path(),
    ...                          channels={"0": "DNA", "1": "PH3", "2": "cellbody"})
    >>> imgs.table[["Metadata_Plate", "Metadata_Well", "Metadata_Site"]].iloc[0].tolist()
    ['AS_09125_050116030001', 'D03', '00']
    """
    if on_error not in ("flag", "raise"):
        raise ValueError(f"on_error={on_error!r}: expected 'flag' or 'raise'.")
    if rescale not in ("dtype", None) and not isinstance(rescale, (int, float)):
        raise ValueError(f"rescale={rescale!r}: expected 'dtype', None or a number.")
    notes: list[str] = []
    if isinstance(source, pd.DataFrame):
        table, chans, notes = from_table(source, Path(root) if root is not None else None, channels)
        src = "DataFrame"
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such folder or load-data file.")
        if path.is_dir():
            table, chans, notes = from_folder(path, pattern, channels, extensions, recursive, metadata)
        else:
            if path.stat().st_size == 0:
                raise ValueError(f"{path}: the load-data file is empty (0 bytes).")
            df = pd.read_csv(path, sep="\t" if path.name.lower().removesuffix(".gz").endswith((".tsv", ".txt")) else ",")
            table, chans, notes = from_table(df, Path(root) if root is not None else path.parent, channels)
        src = str(path)
    for k, v in (metadata or {}).items():
        if not str(k).startswith("Metadata_"):
            raise ValueError(f"metadata: key {k!r} must start with 'Metadata_'.")
        table[k] = v
    dtypes = _validate(table, chans) if validate else {}
    for n in notes:
        warnings.warn(f"read_images({src}): {n}.", UserWarning, stacklevel=2)
    bad = table[QC_ERROR] != ""
    if bad.any():
        first = table.loc[bad, QC_ERROR].tolist()
        if on_error == "raise":
            r = int(np.flatnonzero(bad)[0])
            probe = ImageSet(table, chans, rescale=rescale)
            desc = probe._describe(table.iloc[r])
            try:
                probe.read(r)
            except (FileNotFoundError, ImageReadError) as e:
                raise type(e)(f"site {desc}: {e}") from e
            raise ImageReadError(f"site {desc}: {first[0]}")
        if bad.all():
            raise ImageReadError(f"read_images({src}): no usable site; problems: {first[:5]}")
        warnings.warn(
            f"read_images({src}): {int(bad.sum())} of {len(table)} site(s) have problems and are flagged in "
            f"{QC_ERROR} (they will be skipped): {first[:3]}",
            UserWarning, stacklevel=2,
        )
    meta = [c for c in table.columns if c.startswith("Metadata_") and c != QC_ERROR]
    rest = [c for c in table.columns if c not in meta and c != QC_ERROR]
    table = table[meta + rest + [QC_ERROR]].reset_index(drop=True)
    return ImageSet(table=table, channels=chans, rescale=rescale, dtypes=dtypes, source=src)
