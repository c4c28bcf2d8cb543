"""Object identification, CellProfiler's way: threshold, primary, secondary and tertiary objects.

Public names are re-exported by :mod:`imgprof.im.segment` (and ``ip.im``). Threshold methods
(:data:`THRESHOLDS`) and secondary-object growth methods (:data:`SECONDARY_METHODS`) are
registries: adding one is one decorated function.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .._core.registry import Registry
from ._segment_kernels import (
    EIGHT,
    check_image,
    check_labels,
    declump_objects,
    fill_labeled_holes,
    filter_objects,
    map_to_primary,
    outline,
    relabel_sequential,
    smooth_with_mask,
    touching_border,
)

__all__ = [
    "SECONDARY_METHODS",
    "THRESHOLDS",
    "PrimaryObjects",
    "identify_primary",
    "identify_secondary",
    "identify_tertiary",
    "relate_objects",
    "threshold_image",
]


#: Global threshold methods: name → ``f(pixels) -> float`` on the (non-empty, non-constant) pixels.
#: Adding a method is one decorated function.
THRESHOLDS = Registry("threshold", param="method", case_sensitive=True)


@THRESHOLDS.register("minimum_cross_entropy")
def _minimum_cross_entropy(data: np.ndarray) -> float:
    """Li's minimum cross-entropy threshold (CellProfiler's default; also registered as ``"li"``).

    Examples
    --------
    >>> round(_minimum_cross_entropy(np.array([0.2, 0.2, 0.6, 0.6])), 3)
    0.4
    """
    from skimage import filters

    return float(filters.threshold_li(data))


THRESHOLDS.add("li", _minimum_cross_entropy)


@THRESHOLDS.register("otsu")
def _otsu(data: np.ndarray) -> float:
    """Two-class Otsu threshold.

    Examples
    --------
    >>> two_levels = np.repeat([0.2, 0.6], 8)
    >>> int((two_levels > _otsu(two_levels)).sum())  # the 8 bright pixels
    8
    """
    from skimage import filters

    return float(filters.threshold_otsu(data))


def _otsu3(data: np.ndarray, foreground: bool) -> float:
    """Three-class Otsu: the lower (middle class as foreground) or upper threshold."""
    from skimage import filters

    lo, hi = filters.threshold_multiotsu(data, classes=3)
    return float(lo if foreground else hi)


@THRESHOLDS.register("otsu3_foreground")
def _otsu3_foreground(data: np.ndarray) -> float:
    """Three-class Otsu, middle class assigned to the foreground.

    Examples
    --------
    >>> three_levels = np.repeat([0.1, 0.5, 0.9], 5)
    >>> np.unique(three_levels[three_levels > _otsu3_foreground(three_levels)]).tolist()
    [0.5, 0.9]
    """
    return _otsu3(data, foreground=True)


@THRESHOLDS.register("otsu3_background")
def _otsu3_background(data: np.ndarray) -> float:
    """Three-class Otsu, middle class assigned to the background.

    Examples
    --------
    >>> levels = np.array([0.1] * 5 + [0.5] * 5 + [0.9] * 5)
    >>> t = _otsu3_background(levels)
    >>> 0.5 <= t < 0.9  # only the brightest class is foreground
    True
    """
    return _otsu3(data, foreground=False)


_THRESHOLD_CHOICES = ", ".join(repr(n) for n in THRESHOLDS.names() if n != "li")


def threshold_image(
    image: np.ndarray,
    method: str | float = "minimum_cross_entropy",
    *,
    correction: float = 1.0,
    bounds: tuple[float, float] = (0.0, 1.0),
    mask: np.ndarray | None = None,
) -> float:
    """Global threshold of an image, CellProfiler's way.

    Parameters
    ----------
    image
        2-D float image (intensities in [0, 1] for CellProfiler-like bounds).
    method
        ``"minimum_cross_entropy"`` (Li; CellProfiler's default), ``"otsu"``,
        ``"otsu3_foreground"`` / ``"otsu3_background"`` (three-class Otsu with the middle
        class assigned to foreground / background) or a number (manual threshold);
        any name registered in ``THRESHOLDS``.
    correction
        Multiplicative correction factor (``Threshold correction factor``).
    bounds
        Lower and upper bounds on the final threshold.
    mask
        Pixels to consider (all when ``None``).

    Returns
    -------
    The threshold (float).

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((20, 20)); img[5:10, 5:10] = 1.0
    >>> 0 < threshold_image(img, "otsu") < 1
    True
    """
    image = check_image(image)
    data = image[mask] if mask is not None else image.ravel()
    if isinstance(method, (int, float)) and not isinstance(method, bool):
        return float(method)
    if not isinstance(method, str) or method not in THRESHOLDS:
        raise ValueError(f"method={method!r}: expected {_THRESHOLD_CHOICES} or a number.")
    if data.size == 0:
        thr = 0.0
    elif np.all(data == data[0]):
        thr = float(data[0])
    else:
        thr = float(THRESHOLDS.get(method, where="im.threshold_image").obj(data))
    thr *= float(correction)
    return float(min(max(thr, bounds[0]), bounds[1]))


@dataclass
class PrimaryObjects:
    """Result of :func:`identify_primary`.

    Attributes
    ----------
    labels
        Final objects (after border/size filters and hole filling), numbered 1..N.
    unedited
        Objects after declumping, before filtering (used by :func:`identify_secondary`
        so that discarded border objects still claim their territory, as in CellProfiler).
    small_removed
        ``unedited`` without the objects smaller than the minimum diameter.
    threshold
        The global threshold used.
    params
        The settings :func:`identify_primary` used (diameter range, threshold method...).

    Examples
    --------
    >>> import numpy as np, imgprof as ip
    >>> img = np.zeros((64, 64)); img[10:20, 10:20] = 1; img[40:52, 40:52] = 1
    >>> objs = ip.im.identify_primary(img)
    >>> int(objs.labels.max())
    2
    """

    labels: np.ndarray
    unedited: np.ndarray
    small_removed: np.ndarray
    threshold: float
    params: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(self.labels.max(initial=0))


def identify_primary(
    image: np.ndarray,
    *,
    diameter: tuple[float, float] = (8, 80),
    threshold: str | float = "minimum_cross_entropy",
    threshold_correction: float = 1.0,
    threshold_bounds: tuple[float, float] = (0.0, 1.0),
    threshold_smoothing_scale: float | None = None,
    declump: str = "intensity",
    dividing_lines: str = "intensity",
    smoothing_filter_size: float | None = None,
    maxima_suppression: float | None = None,
    low_res_maxima: bool = True,
    exclude_border: bool = True,
    exclude_size: bool = True,
    fill_holes: str = "both",
    mask: np.ndarray | None = None,
) -> PrimaryObjects:
    """Identify primary objects (nuclei) like CellProfiler's ``IdentifyPrimaryObjects``.

    Parameters
    ----------
    image
        2-D image, intensities scaled to [0, 1] (as CellProfiler scales 8/16-bit images).
    diameter
        Typical (min, max) object diameter in pixels; drives the size filter and the
        automatic declumping parameters.
    threshold, threshold_correction, threshold_bounds
        See :func:`threshold_image`. CellProfiler's basic mode uses minimum cross-entropy.
    threshold_smoothing_scale
        Gaussian smoothing before thresholding: the image is smoothed with
        ``sigma = scale / 0.6744 / 2`` and the smoothed image is compared with the
        threshold. ``None`` uses CellProfiler's automatic setting (``sigma = 1``).
    declump
        ``"intensity"`` (seeds at intensity maxima), ``"shape"`` (maxima of the distance
        transform) or ``"none"``.
    dividing_lines
        Watershed landscape: ``"intensity"`` (``1 - image``) or ``"shape"`` (distance).
    smoothing_filter_size
        Declumping smoothing filter size; ``None`` = automatic (``2.35 * min_diameter / 3.5``).
    maxima_suppression
        Minimum distance between seeds; ``None`` = automatic (``min_diameter / 1.5``).
    low_res_maxima
        Find maxima on a downsampled image when the minimum diameter is over 10 px (CellProfiler).
    exclude_border, exclude_size
        Discard objects touching the image border / outside the diameter range.
    fill_holes
        ``"both"`` (after thresholding and after declumping; CellProfiler basic mode),
        ``"after_declumping"``, ``"thresholding"`` or ``"never"``.
    mask
        Optional boolean mask of valid pixels.

    Returns
    -------
    :class:`PrimaryObjects` (``.labels`` is the label image).

    Examples
    --------
    >>> import numpy as np
    >>> from imgprof.im.segment import identify_primary
    >>> img = np.zeros((64, 64)); img[10:20, 10:20] = 0.8; img[40:52, 30:42] = 0.6
    >>> identify_primary(img, diameter=(5, 40)).count
    2
    """
    image = check_image(image)
    mask = np.ones(image.shape, bool) if mask is None else np.asarray(mask, bool)
    dmin, dmax = float(diameter[0]), float(diameter[1])
    if not 0 < dmin <= dmax:
        raise ValueError(f"diameter={diameter!r}: expected 0 < min <= max.")
    if fill_holes not in ("both", "after_declumping", "thresholding", "never"):
        raise ValueError(f"fill_holes={fill_holes!r}: expected 'both', 'after_declumping', 'thresholding' or 'never'.")
    if declump not in ("intensity", "shape", "none"):
        raise ValueError(f"declump={declump!r}: expected 'intensity', 'shape' or 'none'.")
    if dividing_lines not in ("intensity", "shape"):
        raise ValueError(f"dividing_lines={dividing_lines!r}: expected 'intensity' or 'shape'.")

    thr = threshold_image(image, threshold, correction=threshold_correction, bounds=threshold_bounds, mask=mask)
    sigma = 1.0 if threshold_smoothing_scale is None else threshold_smoothing_scale / 0.6744 / 2.0
    blurred = smooth_with_mask(image, sigma, mask) if sigma > 0 else image
    binary = (blurred >= thr) & mask
    if fill_holes in ("both", "thresholding"):
        binary = fill_labeled_holes(binary, max_hole_area=dmax * dmax)
    labeled, n = ndi.label(binary, EIGHT)
    if declump != "none" and n > 0:
        labeled = declump_objects(image, labeled, dmin, declump=declump, dividing_lines=dividing_lines,
                           smoothing_filter_size=smoothing_filter_size, maxima_suppression=maxima_suppression,
                           low_res_maxima=low_res_maxima)
    unedited = labeled.copy()
    labeled, small_removed = filter_objects(labeled, dmin, dmax, exclude_border=exclude_border, exclude_size=exclude_size)
    if fill_holes in ("both", "after_declumping"):
        labeled = fill_labeled_holes(labeled)
    labeled = relabel_sequential(labeled)
    params = dict(diameter=(dmin, dmax), threshold=threshold, threshold_correction=threshold_correction,
                  declump=declump, exclude_border=exclude_border, exclude_size=exclude_size, fill_holes=fill_holes)
    return PrimaryObjects(labels=labeled, unedited=unedited, small_removed=small_removed, threshold=thr, params=params)



#: How secondary objects grow from their seeds: name → ``f(image, seeds, foreground, mask, *,
#: regularization, distance) -> labels``; ``threshold=False`` methods get ``foreground=None``.
SECONDARY_METHODS = Registry("secondary_method", param="method", case_sensitive=True)


@SECONDARY_METHODS.register("propagation", threshold=True)
def _grow_propagation(image: np.ndarray, seeds: np.ndarray, foreground: np.ndarray, mask: np.ndarray, *,
                      regularization: float, distance: int) -> np.ndarray:
    """CellProfiler's propagation (centrosome): distance-regularized growth over the foreground.

    Examples
    --------
    A dim and a bright cell: the border follows the step (column 7), not the seeds' midpoint.

    >>> img = np.tile([0, .3, .3, .3, .3, .3, .3, .8, .8, 0], (3, 1))
    >>> seeds = np.zeros(img.shape, np.int32); seeds[1, 1], seeds[1, 8] = 1, 2
    >>> _grow_propagation(img, seeds, img > 0, img >= 0, regularization=0.05, distance=0)[1].tolist()
    [0, 1, 1, 1, 1, 1, 1, 2, 2, 0]
    """
    try:
        from centrosome.propagate import propagate
    except ImportError as e:  # pragma: no cover - centrosome ships with cp-measure
        raise ImportError(
            "method='propagation' uses CellProfiler's propagation kernel from the 'centrosome' package "
            "(installed with cp-measure: pip install 'imgprof[im]'). Use method='watershed_gradient' "
            "for a pure scikit-image alternative."
        ) from e
    labels_out, _ = propagate(image, seeds, foreground, float(regularization))
    return labels_out


def _grow_watershed(land: np.ndarray, seeds: np.ndarray, foreground: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from skimage.segmentation import watershed

    return watershed(land, markers=seeds, mask=(foreground | (seeds > 0)) & mask, connectivity=2)


@SECONDARY_METHODS.register("watershed_gradient", threshold=True)
def _grow_watershed_gradient(image: np.ndarray, seeds: np.ndarray, foreground: np.ndarray, mask: np.ndarray, *,
                             regularization: float, distance: int) -> np.ndarray:
    """Watershed on the Sobel gradient, within the foreground.

    Examples
    --------
    >>> step = np.tile([0.3] * 3 + [0.8] * 7, (3, 1))  # an edge after column 2
    >>> markers = np.zeros(step.shape, np.int32); markers[1, 0], markers[1, 9] = 1, 2
    >>> everywhere = np.ones(step.shape, bool)
    >>> _grow_watershed_gradient(step, markers, everywhere, everywhere, regularization=0, distance=0)[1].tolist()
    [1, 1, 1, 2, 2, 2, 2, 2, 2, 2]
    """
    return _grow_watershed(np.abs(ndi.sobel(image)), seeds, foreground, mask)


@SECONDARY_METHODS.register("watershed_image", threshold=True)
def _grow_watershed_image(image: np.ndarray, seeds: np.ndarray, foreground: np.ndarray, mask: np.ndarray, *,
                          regularization: float, distance: int) -> np.ndarray:
    """Watershed on the inverted image, within the foreground.

    Examples
    --------
    Two bright cells split along the dark valley at column 7:

    >>> valley = np.tile([0.9] * 7 + [0.1] + [0.9] * 3, (3, 1))
    >>> s = np.zeros(valley.shape, np.int32); s[1, 0] = 1; s[1, 10] = 2
    >>> _grow_watershed_image(valley, s, valley > 0, valley > 0, regularization=0, distance=0)[1].tolist()
    [1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    """
    return _grow_watershed(1.0 - image, seeds, foreground, mask)


@SECONDARY_METHODS.register("distance", threshold=False)
def _grow_distance(image: np.ndarray, seeds: np.ndarray, foreground: np.ndarray | None, mask: np.ndarray, *,
                   regularization: float, distance: int) -> np.ndarray:
    """Expand every seed by ``distance`` pixels (no threshold).

    Examples
    --------
    >>> seed = np.zeros((7, 7), int); seed[3, 3] = 1
    >>> grown = _grow_distance(np.zeros((7, 7)), seed, None, seed >= 0, regularization=0, distance=2)
    >>> int(grown.sum())  # the disk of radius 2, whatever the image
    13
    """
    from skimage.segmentation import expand_labels

    return expand_labels(seeds, distance=distance)


_SECONDARY_CHOICES = ", ".join(repr(n) for n in SECONDARY_METHODS.names()[:-1]) + f" or {SECONDARY_METHODS.names()[-1]!r}"


def identify_secondary(
    image: np.ndarray,
    primary: PrimaryObjects | np.ndarray,
    *,
    method: str = "propagation",
    threshold: str | float = "minimum_cross_entropy",
    threshold_correction: float = 1.0,
    threshold_bounds: tuple[float, float] = (0.0, 1.0),
    threshold_smoothing_scale: float = 0.0,
    regularization: float = 0.05,
    distance: int = 10,
    fill_holes: bool = True,
    exclude_border: bool = False,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Grow cells from primary objects like CellProfiler's ``IdentifySecondaryObjects``.

    Parameters
    ----------
    image
        2-D cell-body image scaled to [0, 1].
    primary
        :class:`PrimaryObjects` (preferred: its unedited objects compete for territory
        as in CellProfiler) or a label image.
    method
        ``"propagation"`` (CellProfiler's algorithm, via ``centrosome``),
        ``"watershed_gradient"`` (Sobel gradient watershed), ``"watershed_image"``
        (watershed on the inverted image), ``"distance"`` (expand by ``distance`` pixels,
        no threshold); any name registered in ``SECONDARY_METHODS``.
    threshold, threshold_correction, threshold_bounds, threshold_smoothing_scale
        Foreground threshold (see :func:`threshold_image`); smoothing 0 = none.
    regularization
        Propagation's lambda: weight of spatial distance versus intensity difference.
    distance
        Pixels to expand for ``"distance"``.
    fill_holes
        Fill holes in the secondary objects.
    exclude_border
        Discard cells touching the image border.
    mask
        Boolean image; pixels outside it are never assigned to a cell (default: all pixels).

    Returns
    -------
    Integer label image whose label *k* is the cell of primary object *k*.

    Examples
    --------
    >>> import numpy as np
    >>> from imgprof.im.segment import identify_primary, identify_secondary
    >>> img = np.zeros((64, 64)); img[20:30, 20:30] = 0.8
    >>> body = np.zeros((64, 64)); body[14:36, 14:36] = 0.5
    >>> nuc = identify_primary(img, diameter=(5, 40))
    >>> cells = identify_secondary(body, nuc, method="watershed_image")
    >>> int((cells == 1).sum()) > int((nuc.labels == 1).sum())
    True
    """
    image = check_image(image, "image")
    mask = np.ones(image.shape, bool) if mask is None else np.asarray(mask, bool)
    if isinstance(primary, PrimaryObjects):
        final = check_labels(primary.labels, "primary.labels", image.shape)
        labels_in = primary.unedited.copy().astype(np.int32)
        touching = np.zeros(int(labels_in.max(initial=0)) + 1, bool)
        touching[touching_border(labels_in)] = True
        labels_in[(~touching[labels_in]) & (final == 0)] = 0
    else:
        final = check_labels(primary, "primary", image.shape)
        labels_in = final.copy()
    if not isinstance(method, str) or method not in SECONDARY_METHODS:
        raise ValueError(f"method={method!r}: expected {_SECONDARY_CHOICES}.")
    grow = SECONDARY_METHODS.get(method, where="im.identify_secondary")
    foreground = None
    if grow["threshold"]:
        thr = threshold_image(image, threshold, correction=threshold_correction, bounds=threshold_bounds, mask=mask)
        sig = threshold_smoothing_scale / 0.6744 / 2.0 if threshold_smoothing_scale else 0.0
        src = smooth_with_mask(image, sig, mask) if sig > 0 else image
        foreground = (src >= thr) & mask
    labels_out = grow.obj(image, labels_in, foreground, mask, regularization=regularization, distance=distance)
    labels_out = np.asarray(labels_out, np.int32)
    if fill_holes:
        labels_out = fill_labeled_holes(labels_out)
    out = map_to_primary(labels_out, final)
    if exclude_border:
        touching = touching_border(out)
        if len(touching):
            out[np.isin(out, touching)] = 0
    return out


def identify_tertiary(larger: np.ndarray, smaller: np.ndarray, *, shrink: bool = True) -> np.ndarray:
    """Subtract the smaller objects from the larger ones (cytoplasm = cell − nucleus).

    With ``shrink=True`` (CellProfiler's default) the nucleus outline stays in the
    cytoplasm, so every cell keeps a non-empty cytoplasm. Labels keep the cell numbers.

    Parameters
    ----------
    larger
        Label image of the larger objects (cells).
    smaller
        Label image of the smaller objects (nuclei).
    shrink
        Keep the smaller objects' outline in the result (CellProfiler's default).

    Returns
    -------
    numpy.ndarray
        Label image of ``larger`` minus ``smaller`` (e.g. cytoplasm), numbered as ``larger``.

    Examples
    --------
    >>> import numpy as np
    >>> cells = np.zeros((9, 9), int); cells[1:8, 1:8] = 1
    >>> nuc = np.zeros((9, 9), int); nuc[3:6, 3:6] = 1
    >>> int(identify_tertiary(cells, nuc, shrink=False).astype(bool).sum())
    40
    """
    larger = check_labels(larger, "larger")
    smaller = check_labels(smaller, "smaller", larger.shape)
    out = larger.copy()
    keep = (smaller == 0) | outline(smaller) if shrink else smaller == 0
    out[~keep] = 0
    return out


def relate_objects(parent: np.ndarray, child: np.ndarray) -> np.ndarray:
    """Parent label of every child object (largest overlap; 0 when none), indexed by child label - 1.

    Parameters
    ----------
    parent
        Label image of the parents (e.g. cells).
    child
        Label image of the children (e.g. nuclei).

    Returns
    -------
    numpy.ndarray
        ``(n_children,)`` parent label of each child (0 = no parent).

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((6, 6), int); p[:, :3] = 2; p[:, 3:] = 1
    >>> c = np.zeros((6, 6), int); c[1:3, 0:2] = 1; c[3:5, 4:6] = 2
    >>> relate_objects(p, c).tolist()
    [2, 1]
    """
    parent = check_labels(parent, "parent")
    child = check_labels(child, "child", parent.shape)
    n = int(child.max(initial=0))
    m = (child > 0) & (parent > 0)
    if n == 0:
        return np.zeros(0, np.int64)
    pairs, counts = np.unique(np.stack([child[m], parent[m]]), axis=1, return_counts=True)
    best = np.zeros(n + 1, np.int64)
    best_count = np.zeros(n + 1, np.int64)
    for (c, p), k in zip(pairs.T, counts):
        if k > best_count[c]:
            best[c], best_count[c] = p, k
    return best[1:]


# ---------------------------------------------------------------------------
# Segmenters (pluggable)
# ---------------------------------------------------------------------------

