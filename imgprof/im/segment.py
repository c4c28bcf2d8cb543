"""Segmentation: nuclei, cells and cytoplasm as label images (CellProfiler-style), pluggable.

The default segmenter mirrors CellProfiler's object identification modules:

- :func:`identify_primary` ≈ ``IdentifyPrimaryObjects`` (global threshold, Gaussian
  smoothing before thresholding, hole filling, intensity/shape declumping with a
  marker watershed, border and size filters);
- :func:`identify_secondary` ≈ ``IdentifySecondaryObjects`` (propagation,
  watershed on the gradient or the image, or a fixed distance);
- :func:`identify_tertiary` ≈ ``IdentifyTertiaryObjects`` (cell minus nucleus).

Everything is scikit-image / SciPy except the ``"propagation"`` method, which uses
CellProfiler's own propagation kernel from ``centrosome`` (installed with
``cp-measure``, the ``imgprof[im]`` extra); the pure scikit-image alternatives are
``"watershed_gradient"``, ``"watershed_image"`` and ``"distance"``.

A *segmenter* is any callable ``segmenter(images) -> labels`` where ``images`` maps
channel names to 2-D float arrays and ``labels`` maps compartment names
(``"Nuclei"``, ``"Cells"``, optionally ``"Cytoplasm"``) to integer label images whose
object numbers agree across compartments (label *k* is the same cell everywhere).
:class:`CellProfilerSegmenter`, :class:`PrecomputedLabels` and
:class:`CellposeSegmenter` are provided; any function with that signature works.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._core.docs import doc_params
from ._cppipe import segmenter_from_cppipe
from ._identify import (
    SECONDARY_METHODS,
    THRESHOLDS,
    PrimaryObjects,
    identify_primary,
    identify_secondary,
    identify_tertiary,
    relate_objects,
    threshold_image,
)
from ._segment_kernels import check_labels, fill_labeled_holes, relabel_sequential

__all__ = [
    "SECONDARY_METHODS",
    "THRESHOLDS",
    "CellProfilerSegmenter",
    "CellposeSegmenter",
    "PrecomputedLabels",
    "PrimaryObjects",
    "fill_labeled_holes",
    "identify_primary",
    "identify_secondary",
    "identify_tertiary",
    "relate_objects",
    "segment_site",
    "threshold_image",
]


_DOC_CHANNELS = "nuclei_channel, cells_channel\n    Channel names of the nuclear stain and of the cell (body) stain."


# ---------------------------------------------------------------------------
# Segmenters (pluggable)
# ---------------------------------------------------------------------------


def _get_channel(images: Mapping[str, np.ndarray], name: str, role: str) -> np.ndarray:
    if name not in images:
        raise KeyError(f"{role}={name!r} is not one of the site's channels {list(images)}.")
    return images[name]


def _finish_compartments(labels: dict[str, np.ndarray], shrink: bool = True) -> dict[str, np.ndarray]:
    if "Cytoplasm" not in labels and "Cells" in labels and "Nuclei" in labels:
        labels["Cytoplasm"] = identify_tertiary(labels["Cells"], labels["Nuclei"], shrink=shrink)
    return labels


@doc_params(channels=_DOC_CHANNELS)
@dataclass
class CellProfilerSegmenter:
    """Nuclei → cells → cytoplasm, CellProfiler style (the default segmenter).

    Parameters
    ----------
    {channels}
    nuclei
        Keyword arguments of :func:`identify_primary`.
    cells
        Keyword arguments of :func:`identify_secondary`.
    shrink_nuclei
        ``IdentifyTertiaryObjects``' "Shrink smaller object prior to subtraction".

    Examples
    --------
    >>> import imgprof as ip
    >>> seg = ip.im.CellProfilerSegmenter.from_cppipe(
    ...     ip.datasets.examplehuman_images_path() / "ExampleHuman.cppipe")
    >>> seg.nuclei_channel, seg.cells_channel, seg.nuclei["diameter"]
    ('DNA', 'cellbody', (8.0, 80.0))
    """

    nuclei_channel: str = "DNA"
    cells_channel: str = "AGP"
    nuclei: dict = field(default_factory=dict)
    cells: dict = field(default_factory=lambda: {"threshold_correction": 0.8})
    shrink_nuclei: bool = True

    def __call__(self, images: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        nuc = identify_primary(_get_channel(images, self.nuclei_channel, "nuclei_channel"), **self.nuclei)
        cells = identify_secondary(_get_channel(images, self.cells_channel, "cells_channel"), nuc, **self.cells)
        # Nuclei whose cell was removed (e.g. exclude_border on cells) are dropped too, keeping numbers aligned.
        nuclei = np.where(np.isin(nuc.labels, np.unique(cells)), nuc.labels, 0).astype(np.int32)
        return _finish_compartments({"Nuclei": nuclei, "Cells": cells}, self.shrink_nuclei)

    def with_params(self, **changes) -> CellProfilerSegmenter:
        return replace(self, **changes)

    @classmethod
    def from_cppipe(cls, path: str | Path, *, nuclei: str | None = None, cells: str | None = None,
                    channel_names: Mapping[str, str] | None = None) -> CellProfilerSegmenter:
        """Read IdentifyPrimary/Secondary/TertiaryObjects settings from a CellProfiler ``.cppipe``.

        ``nuclei``/``cells`` name the objects to use when the pipeline identifies several
        (default: the first primary objects and the secondary objects grown from them).
        ``channel_names`` renames the pipeline's image names to your channel names.
        """
        return segmenter_from_cppipe(cls, Path(path), nuclei=nuclei, cells=cells, channel_names=channel_names)


@dataclass
class PrecomputedLabels:
    """A segmenter that returns labels you already have (arrays, or a function of the site).

    Parameters
    ----------
    labels
        ``{"Nuclei": array, "Cells": array}`` (one site), or a callable
        ``labels(images) -> {...}``. Cytoplasm is derived when missing; nuclei are
        renumbered to their parent cell when ``relate=True``.
    relate
        Renumber nuclei by the cell that contains them (largest overlap) so object
        numbers agree across compartments; nuclei outside any cell are dropped and
        several nuclei of one cell are merged into one object.

    Examples
    --------
    >>> import numpy as np
    >>> cells = np.zeros((9, 9), int); cells[1:8, 1:8] = 1
    >>> nuc = np.zeros((9, 9), int); nuc[3:6, 3:6] = 5
    >>> out = PrecomputedLabels({"Nuclei": nuc, "Cells": cells})({})
    >>> int(out["Nuclei"].max()), sorted(out)
    (1, ['Cells', 'Cytoplasm', 'Nuclei'])
    """

    labels: Mapping[str, np.ndarray] | Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
    relate: bool = True

    def __call__(self, images: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        labels = self.labels(images) if callable(self.labels) else self.labels
        out = {k: check_labels(v, f"labels[{k!r}]") for k, v in dict(labels).items()}
        shapes = {k: v.shape for k, v in out.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"label images have different shapes: {shapes}.")
        for k, img in images.items():
            if shapes and np.shape(img) != next(iter(shapes.values())):
                raise ValueError(f"label images {shapes} do not match channel {k!r} of shape {np.shape(img)}.")
        if self.relate and "Cells" in out and "Nuclei" in out:
            parent = relate_objects(out["Cells"], out["Nuclei"])
            table = np.r_[0, parent].astype(np.int32)
            # several nuclei in one cell become one object with the cell's number
            out["Nuclei"] = table[out["Nuclei"]]
        return _finish_compartments(out)


@doc_params(channels=_DOC_CHANNELS)
@dataclass
class CellposeSegmenter:
    """Segment with a Cellpose model you have locally (optional; ``pip install cellpose``).

    Nothing is downloaded: ``model_path`` must be an existing file of trained weights
    (built-in model names, which Cellpose would download, are refused). Nuclei are
    taken from ``nuclei_model_path`` when given, else by :func:`identify_primary`
    on the nuclear channel; cells come from Cellpose on ``[cells_channel, nuclei_channel]``
    and nuclei are renumbered to their cell.

    Parameters
    ----------
    model_path
        Local file of trained Cellpose weights for the cells.
    {channels}
    nuclei_model_path
        Optional local Cellpose weights for nuclei; default: :func:`identify_primary`.
    diameter
        Expected object diameter in pixels (``None``: Cellpose estimates it).
    gpu
        Run Cellpose on the GPU.
    eval_kwargs
        Extra keyword arguments for ``model.eval``.
    nuclei
        Keyword arguments of :func:`identify_primary` for the nuclei.

    Examples
    --------
    >>> seg = CellposeSegmenter("/models/cyto3_finetuned", nuclei_channel="DNA",
    ...                         cells_channel="AGP")  # doctest: +SKIP
    """

    model_path: str | Path
    nuclei_channel: str = "DNA"
    cells_channel: str = "AGP"
    nuclei_model_path: str | Path | None = None
    diameter: float | None = None
    gpu: bool = False
    eval_kwargs: dict = field(default_factory=dict)
    nuclei: dict = field(default_factory=dict)

    def _model(self, path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"Cellpose model file {path} does not exist; pass the path of locally stored weights "
                "(imgprof never downloads models)."
            )
        try:
            from cellpose import models
        except ImportError as e:
            raise ImportError("CellposeSegmenter needs the optional 'cellpose' package (pip install cellpose).") from e
        return models.CellposeModel(gpu=self.gpu, pretrained_model=str(path))

    def __call__(self, images: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cyto = _get_channel(images, self.cells_channel, "cells_channel")
        dna = _get_channel(images, self.nuclei_channel, "nuclei_channel")
        model = self._model(self.model_path)
        res = model.eval(np.stack([cyto, dna], axis=-1), diameter=self.diameter, channel_axis=-1, **self.eval_kwargs)
        cells = relabel_sequential(np.asarray(res[0], np.int32))
        if self.nuclei_model_path is not None:
            nres = self._model(self.nuclei_model_path).eval(dna, diameter=self.diameter, **self.eval_kwargs)
            nuclei = np.asarray(nres[0], np.int32)
        else:
            nuclei = identify_primary(dna, **self.nuclei).labels
        return PrecomputedLabels({"Nuclei": nuclei, "Cells": cells}, relate=True)(images)


def segment_site(
    images: Mapping[str, np.ndarray],
    segmenter: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]] | None = None,
    **kwargs: Any,
) -> dict[str, np.ndarray]:
    """Segment one site: ``{channel: image}`` → ``{"Nuclei", "Cells", "Cytoplasm": labels}``.

    Parameters
    ----------
    images
        Channel name → 2-D image in [0, 1].
    segmenter
        Any callable ``images -> labels``; default :class:`CellProfilerSegmenter` built
        from ``kwargs`` (``nuclei_channel=``, ``cells_channel=``, ``nuclei={...}``, ``cells={...}``).
    **kwargs
        Arguments of :class:`CellProfilerSegmenter` when ``segmenter`` is ``None``.

    Returns
    -------
    dict
        ``{"Nuclei", "Cells", "Cytoplasm"}`` → label images.

    Examples
    --------
    >>> import imgprof as ip
    >>> images = ip.io.read_images(ip.datasets.examplehuman_images_path(),
    ...     channels={"0": "DNA", "1": "PH3", "2": "cellbody"}).site(0)
    >>> labels = ip.im.segment_site(images, nuclei_channel="DNA", cells_channel="cellbody")
    >>> sorted(labels)
    ['Cells', 'Cytoplasm', 'Nuclei']
    """
    if segmenter is None:
        segmenter = CellProfilerSegmenter(**kwargs)
    elif kwargs:
        raise TypeError(f"keyword arguments {sorted(kwargs)} are only used when segmenter=None.")
    shapes = {k: np.shape(v) for k, v in images.items()}
    out = segmenter(images)
    if not isinstance(out, Mapping):
        raise TypeError(f"segmenter must return a mapping of compartment -> label image, got {type(out).__name__}.")
    out = {str(k): check_labels(v, f"segmenter output {k!r}", next(iter(shapes.values()), None)) for k, v in out.items()}
    missing = [c for c in ("Nuclei", "Cells") if c not in out]
    if missing and len(out) == 0:
        raise ValueError(f"segmenter returned no label image (expected at least {missing}).")
    return _finish_compartments(dict(out))
