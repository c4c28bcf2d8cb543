"""Illumination correction, CellProfiler style (CorrectIlluminationCalculate / Apply).

:func:`compute_illumination` aggregates every site of a plate per channel (mean, as
CellProfiler's "Regular / All: across cycles", or the more robust per-pixel median),
smooths the result (median filter, Gaussian, or a quadratic polynomial fit) and
rescales it (divided by its median, or by its 2nd-percentile robust minimum as
CellProfiler's "Yes"). :func:`correct_illumination` returns an image set whose images
are divided by their plate's function when read. Functions are saved and reloaded as
``<plate>_Illum<channel>.npy`` (CellProfiler's naming) or ``.tiff``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._core.validation import check_float

if TYPE_CHECKING:  # pragma: no cover
    from .read import ImageSet

__all__ = [
    "apply_illumination",
    "compute_illumination",
    "correct_illumination",
    "load_illumination",
    "save_illumination",
    "smooth_illumination",
]

ROBUST_FACTOR = 0.02


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def _fit_polynomial(img: np.ndarray) -> np.ndarray:
    h, w = img.shape
    y, x = np.mgrid[0:h, 0:w].astype(float)
    y /= max(h - 1, 1)
    x /= max(w - 1, 1)
    A = np.column_stack([np.ones(img.size), x.ravel(), y.ravel(), (x * x).ravel(), (y * y).ravel(), (x * y).ravel()])
    coef = np.linalg.lstsq(A, img.ravel(), rcond=None)[0]
    return (A @ coef).reshape(h, w)


def smooth_illumination(
    image: np.ndarray,
    *,
    method: str = "median",
    filter_size: float | None = None,
    downsample: int = 1,
    rescale: str | None = "median",
) -> np.ndarray:
    """Smooth and rescale an averaged image into an illumination function (pure kernel).

    Parameters
    ----------
    image
        The per-pixel mean or median of a plate's images for one channel.
    method
        ``"median"`` (median filter over a disk), ``"gaussian"``, ``"polynomial"``
        (quadratic surface fit) or ``None``.
    filter_size
        CellProfiler's "smoothing filter size"; ``None`` = automatic
        (``min(30, max(shape) / 40)``). The Gaussian sigma and median radius are
        ``size / 2.35`` (median radius rounded, at least 1).
    downsample
        Compute the filter on an image shrunk by this factor (block mean) and
        interpolate back: much faster for large filters, nearly identical for smooth fields.
    rescale
        ``"median"`` (divide by the median: corrected images keep their intensity
        scale), ``"min"`` (CellProfiler's "Yes": clip below the 2nd percentile and divide
        by it so every value is >= 1) or ``None``.

    Returns
    -------
    numpy.ndarray
        The illumination function (float, same shape as ``image``).

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[0:64, 0:64]
    >>> field = 1 + 0.5 * np.exp(-((x - 32) ** 2 + (y - 32) ** 2) / 800)
    >>> f = smooth_illumination(field, method="gaussian", filter_size=5)
    >>> round(float(np.median(f)), 3)
    1.0
    """
    from scipy import ndimage as ndi

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}.")
    if method not in ("median", "gaussian", "polynomial", None):
        raise ValueError(f"method={method!r}: expected 'median', 'gaussian', 'polynomial' or None.")
    if rescale not in ("median", "min", None):
        raise ValueError(f"rescale={rescale!r}: expected 'median', 'min' or None.")
    check_float(filter_size, "filter_size", min_value=0.0, include_min=False, allow_none=True)
    downsample = int(downsample)
    if downsample < 1:
        raise ValueError(f"downsample={downsample}: must be >= 1.")
    size = min(30.0, float(max(img.shape)) / 40.0) if filter_size is None else float(filter_size)
    work = img
    if downsample > 1 and method in ("median", "gaussian"):
        from skimage.measure import block_reduce

        work = block_reduce(img, (downsample, downsample), np.mean)
        size = size / downsample
    sigma = size / 2.35
    if method == "median":
        radius = max(1, int(sigma + 0.5))
        out = ndi.median_filter(work, footprint=_disk(radius), mode="reflect")
    elif method == "gaussian":
        mask = np.ones(work.shape)
        out = ndi.gaussian_filter(work, sigma, mode="constant", cval=0) / (
            ndi.gaussian_filter(mask, sigma, mode="constant", cval=0) + np.finfo(float).eps)
    elif method == "polynomial":
        out = _fit_polynomial(work)
    else:
        out = work
    if out.shape != img.shape:
        from skimage.transform import resize

        out = resize(out, img.shape, order=1, mode="edge", anti_aliasing=False)
    if rescale is not None:
        pos = np.sort(out[out > 0])
        if pos.size:
            if rescale == "min":
                robust = pos[int(pos.size * ROBUST_FACTOR)]
                out = np.maximum(out, robust)
            else:
                robust = pos[pos.size // 2]
            if robust > 0:
                out = out / robust
    return out.astype(np.float32)


def apply_illumination(image: np.ndarray, illum: np.ndarray) -> np.ndarray:
    """Divide an image by an illumination function (CorrectIlluminationApply, "Divide").

    Parameters
    ----------
    image
        2-D image.
    illum
        Illumination function of the same shape (values > 0).

    Returns
    -------
    numpy.ndarray
        ``image / illum`` as float.

    Examples
    --------
    >>> import numpy as np
    >>> apply_illumination(np.full((2, 2), 4.0), np.full((2, 2), 2.0)).tolist()
    [[2.0, 2.0], [2.0, 2.0]]
    """
    image = np.asarray(image)
    illum = np.asarray(illum)
    if image.shape != illum.shape:
        raise ValueError(f"image shape {image.shape} != illumination function shape {illum.shape}.")
    if not (illum > 0).all():
        raise ValueError("illumination function must be strictly positive.")
    return image / illum


def _sum_sites(images, sites, ch):
    total = None
    for i in sites:
        a = images.read(int(i), [ch], corrected=False)[ch].astype(np.float64)
        total = a if total is None else total + a
    return total


def compute_illumination(
    images: ImageSet,
    *,
    channels: Sequence[str] | None = None,
    by: str = "Metadata_Plate",
    aggregate: str = "mean",
    method: str | None = "median",
    filter_size: float | None = None,
    downsample: int = 1,
    rescale: str | None = "median",
    skip_flagged: bool = True,
    n_jobs: int | None = None,
    scheduler: str | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-plate, per-channel illumination functions from all sites of each plate.

    Parameters
    ----------
    images
        :class:`~imgprof.im.read.ImageSet` (all sites of a plate share one image shape).
    channels
        Channels to compute (default: all).
    by
        Metadata column defining the groups (one function per plate by default).
    aggregate
        ``"mean"`` (CellProfiler's Regular / All across cycles; streamed, memory of one
        image) or ``"median"`` (per-pixel median across sites, via a dask array).
    method, filter_size, downsample, rescale
        See :func:`smooth_illumination`.
    skip_flagged
        Leave out sites with a read error or flagged by QC (``Metadata_qc_pass`` False
        when present).
    n_jobs, scheduler
        Parallelism over plate × channel jobs (dask).

    Returns
    -------
    ``{plate: {channel: float32 array}}``.

    Examples
    --------
    >>> import imgprof as ip
    >>> imgs = ip.io.read_images(ip.datasets.examplehuman_images_path(),
    ...                          channels={"0": "DNA", "1": "PH3", "2": "cellbody"})
    >>> illum = ip.im.compute_illumination(imgs, method="gaussian", filter_size=100)
    >>> sorted(illum["AS_09125_050116030001"])
    ['DNA', 'PH3', 'cellbody']
    """
    import dask

    from .qc import compute

    chans = images._check_channels(channels)
    if aggregate not in ("mean", "median"):
        raise ValueError(f"aggregate={aggregate!r}: expected 'mean' or 'median'.")
    if by not in images.table:
        raise KeyError(f"by={by!r}: column not found in the image set table ({list(images.table.columns)[:8]}...).")
    import warnings

    ok = images.ok
    groups = images.table[by].astype(str).to_numpy()
    use = ok.copy()
    if skip_flagged and "Metadata_qc_pass" in images.table:
        use &= images.table["Metadata_qc_pass"].fillna(False).to_numpy(bool)
        for p in dict.fromkeys(groups):
            if not (use & (groups == p)).any() and (ok & (groups == p)).any():
                warnings.warn(f"compute_illumination: every site of {by}={p!r} is QC-flagged; using them anyway.",
                              UserWarning, stacklevel=2)
                use |= ok & (groups == p)

    def one(plate, ch):
        sites = np.flatnonzero(use & (groups == plate))
        if aggregate == "mean":
            agg = _sum_sites(images, sites, ch) / len(sites)
        else:
            stack = images.to_dask([ch], corrected=False, sites=sites.tolist())[:, 0]
            agg = np.asarray(stack.rechunk({0: -1}).map_blocks(
                lambda b: np.median(b, axis=0, keepdims=True), dtype=np.float32
            ).compute(scheduler="synchronous"))[0]
        return smooth_illumination(agg, method=method, filter_size=filter_size, downsample=downsample, rescale=rescale)

    plates = [p for p in dict.fromkeys(groups) if (use & (groups == p)).any()]
    missing = [p for p in dict.fromkeys(groups) if p not in plates]
    if not plates:
        raise ValueError("compute_illumination: no usable site (all have read errors or QC flags).")
    jobs = [(p, ch) for p in plates for ch in chans]
    results = compute([dask.delayed(one)(p, ch) for p, ch in jobs], n_jobs=n_jobs, scheduler=scheduler or "threads")
    out: dict[str, dict[str, np.ndarray]] = {}
    for (p, ch), f in zip(jobs, results):
        out.setdefault(p, {})[ch] = f
    if missing:
        warnings.warn(f"compute_illumination: plate(s) {missing} have no usable site and get no function.", UserWarning,
                      stacklevel=2)
    return out


def correct_illumination(
    images: ImageSet, illumination: Mapping[str, Mapping[str, np.ndarray]] | str | os.PathLike
) -> ImageSet:
    """Return an image set whose images are divided by their plate's illumination function when read.

    ``illumination`` is the output of :func:`compute_illumination`, a folder saved with
    :func:`save_illumination`, or ``{"*": {channel: array}}`` to use one set of
    functions for every plate. Channels without a function are left as they are.

    Parameters
    ----------
    images
        An :class:`~imgprof.im.ImageSet` (see :func:`imgprof.io.read_images`).
    illumination
        ``{plate: {channel: array}}``, a folder saved by :func:`save_illumination`, or
        ``{"*": {channel: array}}`` for every plate.

    Returns
    -------
    ImageSet
        A new image set reading corrected images (the input is not modified).

    Examples
    --------
    >>> import imgprof as ip
    >>> imgs = ip.io.read_images(ip.datasets.examplehuman_images_path(),
    ...                          channels={"0": "DNA", "1": "PH3", "2": "cellbody"})
    >>> corrected = ip.im.correct_illumination(imgs, ip.im.compute_illumination(imgs, method="polynomial"))
    >>> corrected.illumination is not None
    True
    """
    if isinstance(illumination, (str, os.PathLike)):
        illumination = load_illumination(illumination)
    if not isinstance(illumination, Mapping):
        raise TypeError("illumination must be {plate: {channel: array}} or a folder of saved functions.")
    for p, funcs in illumination.items():
        for ch, f in funcs.items():
            f = np.asarray(f)
            if f.ndim != 2 or not (f > 0).all():
                raise ValueError(f"illumination function for plate {p!r}, channel {ch!r} must be 2-D and > 0.")
    return images.with_illumination(illumination)


_NAME = re.compile(r"^(?P<plate>.+)_Illum(?P<channel>[^.]+)\.(?P<ext>npy|tif|tiff)$")


def save_illumination(illumination: Mapping[str, Mapping[str, np.ndarray]], folder: str | os.PathLike, *,
                      format: str = "npy", overwrite: bool = False) -> list[Path]:
    """Save functions as ``<folder>/<plate>_Illum<channel>.npy`` (or ``.tiff``, float32).

    Parameters
    ----------
    illumination
        ``{plate: {channel: array}}``.
    folder
        Output folder (created).
    format
        ``"npy"`` or ``"tiff"``.
    overwrite
        Replace existing files (otherwise an error).

    Returns
    -------
    list of pathlib.Path
        The files written.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> paths = save_illumination({"P1": {"DNA": np.ones((4, 4))}}, tempfile.mkdtemp())
    >>> paths[0].name
    'P1_IllumDNA.npy'
    """
    if format not in ("npy", "tiff"):
        raise ValueError(f"format={format!r}: expected 'npy' or 'tiff'.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for plate, funcs in illumination.items():
        for ch, f in funcs.items():
            if "_Illum" in str(ch) or "/" in str(plate) or "/" in str(ch):
                raise ValueError(f"plate {plate!r} / channel {ch!r}: names must not contain '/' or '_Illum'.")
            p = folder / f"{plate}_Illum{ch}.{format}"
            if p.exists() and not overwrite:
                raise FileExistsError(f"{p} exists; pass overwrite=True to replace it.")
            arr = np.asarray(f, np.float32)
            if format == "npy":
                np.save(p, arr)
            else:
                import tifffile

                tifffile.imwrite(p, arr)
            out.append(p)
    return out


def load_illumination(folder: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Load functions saved by :func:`save_illumination` (or CellProfiler's ``<plate>_Illum<channel>.npy``).

    Parameters
    ----------
    folder
        Folder with ``<plate>_Illum<channel>.npy`` (or ``.tiff``) files.

    Returns
    -------
    dict
        ``{plate: {channel: illumination function}}``.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> d = tempfile.mkdtemp(); _ = save_illumination({"P1": {"DNA": np.ones((4, 4))}}, d)
    >>> load_illumination(d)["P1"]["DNA"].shape
    (4, 4)
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of illumination functions.")
    out: dict[str, dict[str, np.ndarray]] = {}
    for p in sorted(folder.iterdir()):
        m = _NAME.match(p.name)
        if not m:
            continue
        if m.group("ext") == "npy":
            arr = np.load(p, allow_pickle=False)
        else:
            import tifffile

            arr = tifffile.imread(p)
        arr = np.asarray(arr, np.float32)
        if arr.ndim != 2:
            raise ValueError(f"{p}: illumination function must be 2-D, got shape {arr.shape}.")
        out.setdefault(m.group("plate"), {})[m.group("channel")] = arr
    if not out:
        raise FileNotFoundError(f"{folder}: no file named <plate>_Illum<channel>.npy/.tiff.")
    return out
