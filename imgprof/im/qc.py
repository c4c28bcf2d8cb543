"""Image quality control per site and channel, written as ``Metadata_qc_*`` columns.

Metrics follow CellProfiler's MeasureImageQuality / MeasureImageIntensity:

- ``PowerLogLogSlope``: slope of the radial power spectrum on log-log axes (blur makes
  it more negative);
- ``FocusScore``: normalized variance ``var / mean``;
- ``PercentMaximal`` / ``PercentMinimal``: percentage of pixels at the image's maximum /
  minimum (saturation, clipping);
- ``MinIntensity``, ``MaxIntensity``, ``MeanIntensity``, ``StdIntensity`` and the robust
  ``IntensityRange`` (99th − 1st percentile).

Flags (booleans) never drop anything: ``Metadata_qc_blurry`` (PowerLogLogSlope a low
outlier within its plate and channel), ``Metadata_qc_saturated``, ``Metadata_qc_empty``
(constant image), ``Metadata_qc_low_range`` and ``Metadata_qc_pass`` (none of those and
no read error).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from .read import ImageSet

__all__ = ["QC_METRICS", "image_qc", "image_quality", "power_log_log_slope", "qc_flags"]

QC_METRICS = (
    "PowerLogLogSlope",
    "FocusScore",
    "PercentMaximal",
    "PercentMinimal",
    "MinIntensity",
    "MaxIntensity",
    "MeanIntensity",
    "StdIntensity",
    "IntensityRange",
)
FLAGS = ("Metadata_qc_blurry", "Metadata_qc_saturated", "Metadata_qc_empty", "Metadata_qc_low_range")


def _as_float_image(image: np.ndarray) -> np.ndarray:
    """A numeric 2-D image as float64 (clear errors otherwise)."""
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}.")
    if img.dtype.kind not in "fiub":
        raise TypeError(f"image must be a numeric 2-D array, got dtype {img.dtype}.")
    return img.astype(np.float64, copy=False)


def power_log_log_slope(image: np.ndarray) -> float:
    """Slope of log(power) versus log(spatial frequency) (CellProfiler's PowerLogLogSlope).

    The radial power spectrum is summed in integer-radius rings from radius 2 up to
    1/8 of the smaller image side, after making the image intensity-invariant (division
    by its mean absolute deviation). Constant images give 0.

    Parameters
    ----------
    image
        2-D image.

    Returns
    -------
    float
        The slope (more negative = blurrier); 0 for a constant image.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage as ndi
    >>> img = np.random.default_rng(0).random((128, 128))
    >>> power_log_log_slope(ndi.gaussian_filter(img, 2)) < power_log_log_slope(img)
    True
    """
    img = _as_float_image(image)
    if img.size == 0 or np.ptp(img) == 0:
        return 0.0
    h, w = img.shape
    r2 = (np.arange(h)[:, None] ** 2) + (np.arange(w)[None, :] ** 2)
    r2 = np.minimum(r2, np.flipud(r2))
    r2 = np.minimum(r2, np.fliplr(r2))
    maxwidth = min(h, w) / 8.0
    mad = np.median(np.abs(img - img.mean()))
    if mad > 0:
        img = img / mad
    mag = np.abs(np.fft.fft2(img - img.mean()))
    power = mag**2
    radii = np.floor(np.sqrt(r2)).astype(np.int64) + 1
    labels = np.arange(2, int(np.floor(maxwidth)))
    if len(labels) < 2:
        return 0.0
    nb = int(labels.max()) + 1
    rr = radii.ravel()
    keep = rr < nb
    magsum = np.bincount(rr[keep], mag.ravel()[keep], minlength=nb)[labels]
    powsum = np.bincount(rr[keep], power.ravel()[keep], minlength=nb)[labels]
    if magsum.sum() <= 0:
        return 0.0
    valid = magsum > 0
    x = np.log(labels[valid].astype(float))
    with np.errstate(divide="ignore"):
        y = np.log(powsum[valid])
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return 0.0
    A = np.column_stack([x[ok], np.ones(ok.sum())])
    slope = np.linalg.lstsq(A, y[ok], rcond=None)[0][0]
    return float(slope)


def image_quality(image: np.ndarray) -> dict[str, float]:
    """All QC metrics of one 2-D image (see the module docstring).

    Parameters
    ----------
    image
        2-D image (rescaled to [0, 1] or raw).

    Returns
    -------
    dict
        Metric name → value: ``PowerLogLogSlope``, ``FocusScore``, ``PercentMaximal``,
        ``PercentMinimal``, ``IntensityRange``, ``Min/Max/Mean/StdIntensity``.

    Examples
    --------
    >>> import numpy as np
    >>> q = image_quality(np.zeros((32, 32)))
    >>> q["PercentMaximal"], q["StdIntensity"]
    (100.0, 0.0)
    """
    img = _as_float_image(image)
    if img.size == 0:
        raise ValueError("empty image (0 pixels).")
    mn, mx, mean = float(img.min()), float(img.max()), float(img.mean())
    p1, p99 = np.percentile(img, [1, 99])
    focus = float(np.sum((img - mean) ** 2) / (img.size * mean)) if mean > 0 else 0.0
    return {
        "PowerLogLogSlope": power_log_log_slope(img),
        "FocusScore": focus,
        "PercentMaximal": 100.0 * float(np.count_nonzero(img == mx)) / img.size,
        "PercentMinimal": 100.0 * float(np.count_nonzero(img == mn)) / img.size,
        "MinIntensity": mn,
        "MaxIntensity": mx,
        "MeanIntensity": mean,
        "StdIntensity": float(img.std()),
        "IntensityRange": float(p99 - p1),
    }


def _site_quality(images, i: int, channels: Sequence[str]) -> dict[str, float]:
    row = {}
    site = images.read(i, channels, corrected=False)
    for ch in channels:
        for k, v in image_quality(site[ch]).items():
            row[f"Metadata_qc_{k}_{ch}"] = v
    return row


def qc_flags(
    table: pd.DataFrame,
    channels: Sequence[str],
    *,
    by: str | None = "Metadata_Plate",
    blur_nmads: float = 3.0,
    min_sites: int = 5,
    plls_min: float | None = None,
    saturation_percent: float = 1.0,
    min_range: float = 0.005,
) -> pd.DataFrame:
    """Add boolean ``Metadata_qc_*`` flags to a table holding ``Metadata_qc_<Metric>_<channel>`` columns.

    Parameters
    ----------
    table
        Site table (e.g. ``ImageSet.table`` after :func:`image_qc` metrics).
    channels
        Channels whose metrics are checked.
    by
        Column grouping sites for the blur outlier rule (per plate by default).
    blur_nmads
        A site is blurry in a channel when its PowerLogLogSlope is more than
        ``blur_nmads`` scaled MADs below the group median (groups with at least
        ``min_sites`` sites only), or below ``plls_min`` when given.
    saturation_percent
        Flag as saturated when PercentMaximal exceeds this (percent of pixels).
    min_range
        Flag ``low_range`` when the 1–99 % intensity range is below this (in the image's
        intensity units, [0, 1] for rescaled images).
    min_sites
        Smallest group for which the blur outlier rule is applied.
    plls_min
        Absolute PowerLogLogSlope floor; sites below it are blurry in any group size.

    Returns
    -------
    The table with ``Metadata_qc_blurry``, ``Metadata_qc_saturated``,
    ``Metadata_qc_empty``, ``Metadata_qc_low_range``, ``Metadata_qc_flagged_channels``
    and ``Metadata_qc_pass`` added (a copy).

    Examples
    --------
    >>> import pandas as pd, imgprof as ip
    >>> t = pd.DataFrame({"Metadata_Plate": "P1", "Metadata_qc_PowerLogLogSlope_DNA": [-2.0] * 6,
    ...                   "Metadata_qc_PercentMaximal_DNA": [0.0] * 5 + [5.0],
    ...                   "Metadata_qc_Range_DNA": [0.5] * 6})
    >>> ip.im.qc_flags(t, ["DNA"])["Metadata_qc_saturated"].tolist()  # doctest: +SKIP
    [False, False, False, False, False, True]
    """
    out = table.copy()
    n = len(out)
    flags = {f: np.zeros(n, bool) for f in FLAGS}
    which: list[list[str]] = [[] for _ in range(n)]
    groups = out[by].astype(str).to_numpy() if by is not None and by in out else np.array(["all"] * n)
    for ch in channels:
        cols = {m: f"Metadata_qc_{m}_{ch}" for m in QC_METRICS}
        missing = [c for c in cols.values() if c not in out]
        if missing:
            raise KeyError(f"qc_flags: metric column(s) {missing[:3]} not found; run ip.im.image_qc first.")
        plls = out[cols["PowerLogLogSlope"]].to_numpy(float)
        blurry = np.zeros(n, bool)
        for g in np.unique(groups):
            m = (groups == g) & np.isfinite(plls)
            if m.sum() >= min_sites:
                med = np.median(plls[m])
                mad = 1.4826 * np.median(np.abs(plls[m] - med))
                if mad > 0:
                    blurry |= m & (plls < med - blur_nmads * mad)
        if plls_min is not None:
            blurry |= plls < plls_min
        std = out[cols["StdIntensity"]].to_numpy(float)
        empty = ~(std > 0)
        saturated = (out[cols["PercentMaximal"]].to_numpy(float) > saturation_percent) & ~empty
        low = (out[cols["IntensityRange"]].to_numpy(float) < min_range) & ~empty
        for name, f in (("blurry", blurry), ("saturated", saturated), ("empty", empty), ("low_range", low)):
            flags[f"Metadata_qc_{name}"] |= f
            for r in np.flatnonzero(f):
                which[r].append(f"{ch}:{name}")
    for k, v in flags.items():
        out[k] = v
    out["Metadata_qc_flagged_channels"] = [", ".join(w) for w in which]
    err = out["Metadata_qc_error"].fillna("").astype(str).to_numpy() if "Metadata_qc_error" in out else np.array([""] * n)
    out["Metadata_qc_pass"] = ~np.any(np.column_stack([flags[f] for f in FLAGS]), axis=1) & (err == "")
    return out


def image_qc(
    images: ImageSet,
    *,
    channels: Sequence[str] | None = None,
    inplace: bool = True,
    n_jobs: int | None = None,
    scheduler: str | None = None,
    **flag_kwargs,
) -> pd.DataFrame | None:
    """Measure image quality for every site and channel and flag problems (never drops a site).

    Parameters
    ----------
    images
        An :class:`~imgprof.im.read.ImageSet` (see :func:`imgprof.io.read_images`).
    channels
        Channels to assess (default: all).
    inplace
        Write the ``Metadata_qc_*`` columns into ``images.table`` and return ``None``;
        otherwise return the new site table.
    n_jobs, scheduler
        Parallelism over sites (dask; ``scheduler`` ``"threads"``, ``"processes"`` or
        ``"synchronous"``).
    flag_kwargs
        Passed to :func:`qc_flags` (``blur_nmads``, ``saturation_percent``, ``min_range``...).

    Returns
    -------
    pandas.DataFrame or None
        ``None`` with ``inplace=True`` (columns written into ``images.table``); otherwise the
        site table with ``Metadata_qc_*`` metric and flag columns.

    Examples
    --------
    >>> import imgprof as ip
    >>> imgs = ip.io.read_images(ip.datasets.examplehuman_images_path(),
    ...                          channels={"0": "DNA", "1": "PH3", "2": "cellbody"})
    >>> ip.im.image_qc(imgs)
    >>> bool(imgs.table["Metadata_qc_pass"].iloc[0])
    True
    """
    import dask

    chans = images._check_channels(channels)
    ok = np.flatnonzero(images.ok)
    tasks = [dask.delayed(_site_quality)(images, int(i), chans) for i in ok]
    results = compute(tasks, n_jobs=n_jobs, scheduler=scheduler or "threads")
    metrics = pd.DataFrame(index=range(len(images)),
                           columns=[f"Metadata_qc_{m}_{ch}" for ch in chans for m in QC_METRICS], dtype=float)
    for i, r in zip(ok, results):
        for k, v in r.items():
            metrics.loc[i, k] = v
    table = images.table.drop(columns=[c for c in metrics.columns if c in images.table], errors="ignore")
    table = pd.concat([table.reset_index(drop=True), metrics], axis=1)
    table = qc_flags(table, chans, **flag_kwargs)
    # keep Metadata_qc_error last among metadata for readability
    if inplace:
        images.table = table
        return None
    return table


def compute(tasks, *, n_jobs: int | None, scheduler: str):
    import os

    import dask

    if not tasks:
        return []
    n_jobs = n_jobs or os.cpu_count() or 1
    if scheduler not in ("threads", "processes", "synchronous"):
        raise ValueError(f"scheduler={scheduler!r}: expected 'threads', 'processes' or 'synchronous'.")
    if n_jobs == 1:
        scheduler = "synchronous"
    kwargs = {} if scheduler == "synchronous" else {"num_workers": n_jobs}
    return list(dask.compute(*tasks, scheduler=scheduler, **kwargs))
