"""Array kernels of the segmentation (pure NumPy/SciPy, CellProfiler's algorithms).

Used by :mod:`imgprof.im._identify` (``identify_primary``/``identify_secondary``) and
the segmenters of :mod:`imgprof.im.segment`; ``fill_labeled_holes`` is public there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .._core.validation import check_float

EIGHT = np.ones((3, 3), bool)
_FOUR = ndi.generate_binary_structure(2, 1)


# ---------------------------------------------------------------------------
# Kernels (pure array functions)
# ---------------------------------------------------------------------------


def check_image(image, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D image, got shape {image.shape}.")
    if not np.issubdtype(image.dtype, np.number):
        raise TypeError(f"{name}: expected a numeric image, got dtype {image.dtype}.")
    image = image.astype(np.float64, copy=False)
    if not np.isfinite(image).all():
        raise ValueError(f"{name}: contains NaN or inf pixels.")
    return image


def check_labels(labels, name: str = "labels", shape: tuple[int, ...] | None = None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D label image, got shape {labels.shape}.")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise TypeError(f"{name}: label images must be integers, got dtype {labels.dtype}.")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name}: label images must be non-negative.")
    if shape is not None and labels.shape != tuple(shape):
        raise ValueError(f"{name}: shape {labels.shape} does not match the image shape {tuple(shape)}.")
    return labels.astype(np.int32, copy=False)



def smooth_with_mask(image: np.ndarray, sigma: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Gaussian smoothing with zero padding, corrected for the bleed-over of the mask/edges (CellProfiler)."""
    if sigma <= 0:
        return image
    mask = np.ones(image.shape, bool) if mask is None else mask
    masked = np.where(mask, image, 0.0)
    bleed = ndi.gaussian_filter(mask.astype(float), sigma, mode="constant", cval=0)
    smoothed = ndi.gaussian_filter(masked, sigma, mode="constant", cval=0)
    return smoothed / (bleed + np.finfo(float).eps)


def _smooth_truncated(image: np.ndarray, filter_size: float) -> np.ndarray:
    """CellProfiler's declumping smoother: Gaussian (sigma = size / 2.35) truncated at ±size/2, edge corrected."""
    if filter_size <= 0:
        return image
    sigma = filter_size / 2.35
    half = max(int(float(filter_size) / 2.0), 1)
    f = np.exp(-0.5 * np.arange(-half, half + 1) ** 2 / sigma**2)

    def conv(x):
        return ndi.convolve1d(ndi.convolve1d(x, f, axis=0, mode="constant"), f, axis=1, mode="constant")

    edge = conv(np.ones(image.shape))
    return conv(image) / edge


def _disk(radius: float) -> np.ndarray:
    r = int(radius)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y) <= radius * radius


def _is_local_maximum(image: np.ndarray, labels: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Pixels that are >= every pixel of the *same label* within ``footprint`` (labels > 0 only)."""
    h, w = image.shape
    ry, rx = footprint.shape[0] // 2, footprint.shape[1] // 2
    pad_img = np.pad(image, ((ry, ry), (rx, rx)), constant_values=-np.inf)
    pad_lab = np.pad(labels, ((ry, ry), (rx, rx)), constant_values=-1)
    result = labels > 0
    for dy, dx in zip(*np.nonzero(footprint)):
        if dy == ry and dx == rx:
            continue
        other = pad_img[dy : dy + h, dx : dx + w]
        same = pad_lab[dy : dy + h, dx : dx + w] == labels
        result &= ~(same & (other > image))
    return result


def _shrink_to_points(binary: np.ndarray) -> np.ndarray:
    """Reduce every 8-connected blob to one pixel (the blob pixel nearest its centroid)."""
    lab, n = ndi.label(binary, EIGHT)
    out = np.zeros(binary.shape, bool)
    if n == 0:
        return out
    yy, xx = np.nonzero(lab)
    ids = lab[yy, xx]
    counts = np.bincount(ids, minlength=n + 1).astype(float)
    cy = np.bincount(ids, yy, minlength=n + 1) / np.maximum(counts, 1)
    cx = np.bincount(ids, xx, minlength=n + 1) / np.maximum(counts, 1)
    d = (yy - cy[ids]) ** 2 + (xx - cx[ids]) ** 2
    order = np.lexsort((d, ids))
    first = np.r_[True, ids[order][1:] != ids[order][:-1]]
    keep = order[first]
    out[yy[keep], xx[keep]] = True
    return out


def fill_labeled_holes(labels: np.ndarray, max_hole_area: float | None = None) -> np.ndarray:
    """Fill background holes that are enclosed by a single object (CellProfiler's ``fill_labeled_holes``).

    A hole is a 4-connected background region that does not touch the image border
    and whose neighbouring foreground pixels all belong to one label. Holes larger
    than ``max_hole_area`` pixels are kept.

    Parameters
    ----------
    labels
        Label image (0 = background).
    max_hole_area
        Largest hole (pixels) to fill; ``None`` fills all enclosed holes.

    Returns
    -------
    numpy.ndarray
        Label image with the enclosed holes filled with their object's label.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((7, 7), int); lab[1:6, 1:6] = 1; lab[3, 3] = 0
    >>> int(fill_labeled_holes(lab)[3, 3])
    1
    """
    labels = check_labels(labels)
    check_float(max_hole_area, "max_hole_area", min_value=0.0, allow_none=True)
    is_bool = labels.dtype == bool
    lab = labels.astype(np.int64)
    bg, n = ndi.label(lab == 0, _FOUR)
    if n == 0:
        return labels.copy()
    border = np.unique(np.concatenate([bg[0, :], bg[-1, :], bg[:, 0], bg[:, -1]]))
    parts: list[np.ndarray] = []
    for a, b in (((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                 ((slice(1, None), slice(None)), (slice(None, -1), slice(None)))):
        for s1, s2 in ((a, b), (b, a)):
            bb, ff = bg[s1], lab[s2]
            m = (bb > 0) & (ff > 0)
            parts.append(np.stack([bb[m], ff[m]], axis=1))
    pairs = np.unique(np.concatenate(parts), axis=0) if parts else np.zeros((0, 2), int)
    n_adj = np.bincount(pairs[:, 0], minlength=n + 1)
    owner = np.zeros(n + 1, np.int64)
    owner[pairs[:, 0]] = pairs[:, 1]
    fill = n_adj == 1
    fill[0] = False
    fill[border] = False
    if max_hole_area is not None:
        sizes = np.bincount(bg.ravel(), minlength=n + 1)
        fill &= sizes < max_hole_area
    out = lab.copy()
    where = fill[bg]
    out[where] = owner[bg[where]]
    if is_bool:
        return out > 0
    return out.astype(labels.dtype if np.issubdtype(labels.dtype, np.integer) else np.int32)


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    table = np.zeros(int(labels.max(initial=0)) + 1, np.int32)
    table[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return table[labels]


def outline(labels: np.ndarray) -> np.ndarray:
    """Label pixels with an 8-neighbour of another value, plus labelled pixels on the image edge."""
    diff = np.zeros(labels.shape, bool)
    for s1, s2 in (
        ((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
        ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
        ((slice(1, None), slice(1, None)), (slice(None, -1), slice(None, -1))),
        ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None))),
    ):
        d = labels[s1] != labels[s2]
        diff[s1] |= d
        diff[s2] |= d
    diff[0, :] = diff[-1, :] = diff[:, 0] = diff[:, -1] = True
    return diff & (labels > 0)


def touching_border(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(np.concatenate([labels[0, :], labels[-1, :], labels[:, 0], labels[:, -1]]))
    return ids[ids > 0]



def map_to_primary(labels_out: np.ndarray, primary: np.ndarray) -> np.ndarray:
    """Renumber ``labels_out`` regions by the (final) primary label they contain; others become 0."""
    n = int(labels_out.max(initial=0))
    if n == 0:
        return labels_out.astype(np.int32)
    lookup = np.asarray(ndi.maximum(primary, labels_out, np.arange(n + 1)), dtype=np.int64)
    lookup = np.atleast_1d(lookup)
    lookup[0] = 0
    return lookup[labels_out].astype(np.int32)



def _seed_maxima(landscape: np.ndarray, labeled: np.ndarray, footprint: np.ndarray, factor: float) -> np.ndarray:
    """Declumping seeds: local maxima of ``landscape`` per object, found at ``factor`` × resolution when < 1."""
    if factor < 1.0:
        shape = np.array(labeled.shape) * factor
        ij = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float) / factor
        small = ndi.map_coordinates(landscape, ij)
        small_lab = ndi.map_coordinates(labeled, ij, order=0).astype(labeled.dtype)
        maxima = _is_local_maximum(small, small_lab, footprint) & (small > 0)
        inv = float(labeled.shape[0]) / float(maxima.shape[0])
        ij = np.mgrid[0 : labeled.shape[0], 0 : labeled.shape[1]].astype(float) / inv
        maxima = ndi.map_coordinates(maxima.astype(float), ij) > 0.5
    else:
        maxima = _is_local_maximum(landscape, labeled, footprint) & (landscape > 0)
    return _shrink_to_points(maxima)


def declump_objects(
    image: np.ndarray,
    labeled: np.ndarray,
    dmin: float,
    *,
    declump: str,
    dividing_lines: str,
    smoothing_filter_size: float | None,
    maxima_suppression: float | None,
    low_res_maxima: bool,
) -> np.ndarray:
    """Split touching objects: seeds at intensity/shape maxima, then a marker watershed (CellProfiler)."""
    from skimage.segmentation import watershed

    filter_size = 2.35 * dmin / 3.5 if smoothing_filter_size is None else float(smoothing_filter_size)
    smoothed = _smooth_truncated(image, filter_size) if filter_size > 0 else image
    if dmin > 10 and low_res_maxima:
        factor = 10.0 / dmin
        supp = 7.0 if maxima_suppression is None else maxima_suppression * factor + 0.5
    else:
        factor = 1.0
        supp = dmin / 1.5 if maxima_suppression is None else float(maxima_suppression)
    footprint = _disk(max(1.0, supp - 0.5))
    if declump == "intensity":
        landscape = smoothed
    else:
        landscape = ndi.distance_transform_edt(fill_labeled_holes(labeled) > 0)
        landscape = landscape + np.random.default_rng(0).uniform(0, 0.001, landscape.shape)
    markers, _ = ndi.label(_seed_maxima(landscape, labeled, footprint, factor), EIGHT)
    if dividing_lines == "intensity":
        ws_image = 1.0 - image
    else:
        dist = ndi.distance_transform_edt(labeled > 0)
        ws_image = dist.max() - dist
    return watershed(ws_image, markers=markers, mask=labeled != 0, connectivity=2).astype(np.int32)


def filter_objects(
    labeled: np.ndarray, dmin: float, dmax: float, *, exclude_border: bool, exclude_size: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Drop border objects and objects outside the diameter range; also return the small-removed stage."""
    if exclude_border:
        touching = touching_border(labeled)
        if len(touching):
            labeled[np.isin(labeled, touching)] = 0
    if exclude_size and labeled.max(initial=0) > 0:
        areas = np.bincount(labeled.ravel())
        area_img = areas[labeled]
        labeled[area_img < np.pi * dmin * dmin / 4] = 0
        small_removed = labeled.copy()
        labeled[area_img > np.pi * dmax * dmax / 4] = 0
    else:
        small_removed = labeled.copy()
    return labeled, small_removed
