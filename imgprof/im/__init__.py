"""imgprof.im: from Cell Painting images to single-cell profiles.

Read a plate of images lazily (:func:`read_images`, also ``ip.io.read_images``), check
image quality (:func:`image_qc`), correct illumination (:func:`compute_illumination`,
:func:`correct_illumination`), segment nuclei/cells/cytoplasm (:func:`segment_site`,
:class:`CellProfilerSegmenter`, :class:`CellposeSegmenter`, your own callable),
measure with cp-measure in CellProfiler's feature naming (:func:`measure_objects`),
embed crops with any featurizer (:func:`extract_crops`, :class:`TorchFeaturizer`),
or do it all in one call: :func:`profile_images`.

Heavy dependencies (scikit-image, cp-measure, torch, cellpose) load only when used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .._core.namespace import public_dir

_EXPORTS = {
    # read
    "ImageSet": "read", "ImageReadError": "read", "read_images": "read", "read_image": "read", "PATTERNS": "read",
    # qc
    "image_qc": "qc", "image_quality": "qc", "qc_flags": "qc", "power_log_log_slope": "qc", "QC_METRICS": "qc",
    # illumination
    "compute_illumination": "illumination", "correct_illumination": "illumination",
    "save_illumination": "illumination", "load_illumination": "illumination",
    "smooth_illumination": "illumination", "apply_illumination": "illumination",
    # segmentation
    "segment_site": "segment", "identify_primary": "segment", "identify_secondary": "segment",
    "identify_tertiary": "segment", "threshold_image": "segment", "fill_labeled_holes": "segment",
    "relate_objects": "segment", "PrimaryObjects": "segment", "CellProfilerSegmenter": "segment",
    "PrecomputedLabels": "segment", "CellposeSegmenter": "segment",
    "THRESHOLDS": "segment", "SECONDARY_METHODS": "segment",
    # measurement
    "measure_objects": "measure", "objects_to_anndata": "measure", "FEATURE_GROUPS": "measure",
    "MEASUREMENTS": "measure",
    # crops / featurizers
    "extract_crops": "crops", "featurize_site": "crops", "TorchFeaturizer": "crops",
    "intensity_histogram_featurizer": "crops",
    # pipeline
    "profile_images": "pipeline", "profile_site": "pipeline",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .crops import TorchFeaturizer, extract_crops, featurize_site, intensity_histogram_featurizer  # noqa: F401
    from .illumination import (  # noqa: F401
        apply_illumination,
        compute_illumination,
        correct_illumination,
        load_illumination,
        save_illumination,
        smooth_illumination,
    )
    from .measure import FEATURE_GROUPS, MEASUREMENTS, measure_objects, objects_to_anndata  # noqa: F401
    from .pipeline import profile_images, profile_site  # noqa: F401
    from .qc import QC_METRICS, image_qc, image_quality, power_log_log_slope, qc_flags  # noqa: F401
    from .read import PATTERNS, ImageReadError, ImageSet, read_image, read_images  # noqa: F401
    from .segment import (  # noqa: F401
        SECONDARY_METHODS,
        THRESHOLDS,
        CellposeSegmenter,
        CellProfilerSegmenter,
        PrecomputedLabels,
        PrimaryObjects,
        fill_labeled_holes,
        identify_primary,
        identify_secondary,
        identify_tertiary,
        relate_objects,
        segment_site,
        threshold_image,
    )


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'imgprof.im' has no attribute {name!r}")


__dir__ = public_dir(__all__)  # tab completion shows the public API only
