"""Per-object measurements through ``cp-measure`` with CellProfiler feature names.

``cp-measure`` is the Python implementation of CellProfiler's measurement modules
(MeasureObjectSizeShape, MeasureObjectIntensity, MeasureTexture, MeasureGranularity,
MeasureObjectIntensityDistribution, MeasureColocalization, MeasureObjectNeighbors).
:func:`measure_objects` runs it for every compartment × channel (and channel pair)
and renames its outputs to CellProfiler's ``Compartment_Group_Feature_Channel[_params]``
form, e.g. ``Cells_Texture_Contrast_DNA_3_00_256`` or
``Nuclei_Correlation_Correlation_DNA_PH3``, so the table matches what
:func:`imgprof.io.read_cellprofiler` reads from CellProfiler's own output.

``cp-measure`` is an optional dependency (``pip install 'imgprof[im]'``); it is
imported only when a measurement runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._core.validation import check_int

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
from ._measurements import MEASUREMENTS, Context, measure_groups, measurement_functions

__all__ = ["FEATURE_GROUPS", "MEASUREMENTS", "measure_objects", "objects_to_anndata"]

#: Feature groups measured by default (all of CellProfiler's standard Cell Painting groups).
FEATURE_GROUPS = ("AreaShape", "Intensity", "Texture", "Granularity", "RadialDistribution", "Correlation", "Neighbors")
_CORRELATIONS = ("pearson", "manders_fold", "rwc", "costes")


def _as_float_images(images: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int | None]:
    out, scale = {}, None
    for name, img in images.items():
        a = np.asarray(img)
        if a.ndim != 2:
            raise ValueError(f"images[{name!r}]: expected a 2-D image, got shape {a.shape}.")
        if np.issubdtype(a.dtype, np.integer):
            mx = int(np.iinfo(a.dtype).max)
            scale = mx if scale is None else max(scale, mx)
            a = a.astype(np.float64) / mx
        elif np.issubdtype(a.dtype, np.floating):
            a = a.astype(np.float64, copy=False)
        else:
            raise TypeError(f"images[{name!r}]: expected a numeric image, got dtype {a.dtype}.")
        if not np.isfinite(a).all():
            raise ValueError(f"images[{name!r}]: contains NaN or inf pixels.")
        out[str(name)] = a
    return out, scale


def _sanitize(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel to contiguous 1..N; return (clean, original ids sorted)."""
    ids = np.unique(labels)
    ids = ids[ids > 0].astype(np.int64)
    if len(ids) == 0 or ids[-1] == len(ids):
        return labels.astype(np.int32, copy=False), ids
    table = np.zeros(int(ids[-1]) + 1, np.int32)
    table[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return table[labels], ids


def _check_options(features: Sequence[str], texture_scales: Sequence[int], texture_gray_levels: int, radial_bins: int,
                   correlations: Sequence[str], intensity_convention: str) -> None:
    unknown = [f for f in features if f not in MEASUREMENTS]
    if unknown:
        raise ValueError(f"features: unknown group(s) {unknown}; choose from {list(MEASUREMENTS.names())}.")
    check_int(radial_bins, "radial_bins", min_value=1)
    check_int(texture_gray_levels, "texture_gray_levels", min_value=2)
    for scale in texture_scales:
        check_int(scale, "texture_scales", min_value=1)
    bad_corr = [c for c in correlations if c not in _CORRELATIONS]
    if bad_corr:
        raise ValueError(f"correlations: unknown measure(s) {bad_corr}; choose from {list(_CORRELATIONS)}.")
    if intensity_convention not in ("cellprofiler", "numpy"):
        raise ValueError(f"intensity_convention={intensity_convention!r}: expected 'cellprofiler' or 'numpy'.")


def _check_inputs(
    images: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], channels: Sequence[str] | None,
    compartments: Sequence[str] | None, primary: str | None, neighbors: Any, scale_max: int | None,
) -> tuple[dict[str, np.ndarray], list[str], list[str], str, Mapping[str, Any], int]:
    """Checked images (as float), channels, compartments, primary compartment, neighbours per compartment, scale."""
    if not labels:
        raise ValueError("labels: no compartment given.")
    imgs, inferred_scale = _as_float_images(images)
    channels = list(imgs) if channels is None else list(channels)
    missing = [c for c in channels if c not in imgs]
    if missing:
        raise KeyError(f"channels: {missing} not among the images' channels {list(imgs)}.")
    comps = list(labels) if compartments is None else list(compartments)
    missing = [c for c in comps if c not in labels]
    if missing:
        raise KeyError(f"compartments: {missing} not among the label images {list(labels)}.")
    shapes = {f"images[{k!r}]": v.shape for k, v in imgs.items()}
    shapes.update({f"labels[{k!r}]": np.shape(v) for k, v in labels.items()})
    if len(set(shapes.values())) > 1:
        raise ValueError(f"images and labels must share one shape; got {shapes}.")
    for k, v in labels.items():
        v = np.asarray(v)
        if not np.issubdtype(v.dtype, np.integer):
            raise TypeError(f"labels[{k!r}]: label images must be integers, got dtype {v.dtype}.")
    if primary is None:
        primary = "Cells" if "Cells" in labels else comps[0]
    if primary not in labels:
        raise KeyError(f"primary={primary!r} is not among the label images {list(labels)}.")
    if neighbors is None:
        neighbors = {"Cells": ("adjacent", 5), "Nuclei": (1,)}  # as in the JUMP Cell Painting pipelines
    elif not isinstance(neighbors, Mapping):
        neighbors = dict.fromkeys(comps, neighbors)
    scale = int(scale_max) if scale_max is not None else (inferred_scale or 65535)
    return imgs, channels, comps, primary, neighbors, scale


def _locations(comp: str, clean: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Object centroids, as metadata and (as CellProfiler also exports them) as positional features."""
    from scipy import ndimage as ndi

    cen = np.asarray(ndi.center_of_mass(np.ones(clean.shape), clean, np.arange(1, n + 1))).reshape(-1, 2)
    return {f"Metadata_{comp}_Location_Center_X": cen[:, 1], f"Metadata_{comp}_Location_Center_Y": cen[:, 0],
            f"{comp}_Location_Center_X": cen[:, 1], f"{comp}_Location_Center_Y": cen[:, 0]}


def _add_columns(columns: dict[str, np.ndarray], res: dict[str, np.ndarray], ids: np.ndarray, row_ids: np.ndarray) -> None:
    """Align one compartment's per-object values (``ids``) to the output rows (``row_ids``; NaN where absent)."""
    pos = np.searchsorted(ids, row_ids)
    present = np.isin(row_ids, ids)
    for name, values in res.items():
        values = np.asarray(values, dtype=float).reshape(-1)
        if values.shape[0] != len(ids):
            raise RuntimeError(f"cp-measure returned {values.shape[0]} values for {name}, expected {len(ids)}.")
        col = np.full(len(row_ids), np.nan)
        col[present] = values[pos[present]]
        if name in columns:
            raise RuntimeError(f"duplicate feature name {name!r}.")
        columns[name] = col


def measure_objects(
    images: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    *,
    features: Sequence[str] = FEATURE_GROUPS,
    channels: Sequence[str] | None = None,
    compartments: Sequence[str] | None = None,
    primary: str | None = None,
    texture_scales: Sequence[int] = (3,),
    texture_gray_levels: int = 256,
    granularity: Mapping[str, Any] | None = None,
    radial_bins: int = 4,
    radial_zernikes: bool = False,
    zernike: bool = True,
    advanced_shape: bool = False,
    correlations: Sequence[str] = _CORRELATIONS,
    scale_max: int | None = None,
    neighbors: str | int | Mapping[str, str | int] | None = None,
    intensity_convention: str = "cellprofiler",
    accelerator: str | None = "auto",
    timings: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Measure every compartment × channel of one site with cp-measure.

    Parameters
    ----------
    images
        Channel name → 2-D image. Integer images are scaled to [0, 1] by their dtype
        maximum (CellProfiler's convention); float images are used as they are.
    labels
        Compartment name (``"Nuclei"``, ``"Cells"``, ``"Cytoplasm"``...) → label image.
        Object *k* must be the same cell in every compartment (as returned by
        :func:`imgprof.im.segment`).
    features
        Feature groups among ``AreaShape``, ``Intensity``, ``Texture``, ``Granularity``,
        ``RadialDistribution``, ``Correlation``, ``Neighbors``.
    channels
        Channels to measure (default: all). Correlation uses every pair of them, in this
        order (``Correlation_Correlation_A_B`` for A listed before B; JUMP profiles list
        channels alphabetically).
    compartments
        Compartments to measure (default: all in ``labels``).
    primary
        Compartment whose objects define the rows (default ``"Cells"`` when present,
        else the first compartment). Objects absent from another compartment get NaN there.
    texture_scales, texture_gray_levels
        Haralick scales (pixels) and gray levels (CellProfiler: 3 and 256).
    granularity
        Keyword arguments of cp-measure's ``get_granularity`` (``subsample_size``,
        ``image_sample_size``, ``element_size``, ``granular_spectrum_length``).
    radial_bins, radial_zernikes
        RadialDistribution bins; also compute intensity Zernikes (CellProfiler default: no).
    zernike, advanced_shape
        AreaShape Zernike shape features (CellProfiler default: yes) and the advanced
        moments plus cp-measure's newer FilledArea/PerimeterCrofton (CellProfiler default: no).
    correlations
        Colocalization measures among ``pearson``, ``manders_fold``, ``rwc``, ``costes``.
    scale_max
        Acquisition maximum used by Costes' threshold search (255 for 8-bit, 65535 for
        16-bit); inferred from integer inputs, else 65535.
    neighbors
        ``"adjacent"`` (touching objects), ``"expanded"`` (expand until adjacent) or a
        distance in pixels (or a list of those); a mapping gives them per compartment.
        Default ``{"Cells": ("adjacent", 5), "Nuclei": (1,)}`` as in the JUMP pipelines;
        compartments not listed are skipped.
    intensity_convention
        ``"cellprofiler"`` (quartiles at ``n*q``, CellProfiler's convention; cp-measure's
        ``legacy=True``) or ``"numpy"`` (``numpy.percentile``).
    accelerator
        cp-measure backend: ``"auto"`` (numba when installed; identical results up to
        round-off and ties of ``Location_MaxIntensity``), ``"numba"`` or ``None``.
    timings
        Optional dict that receives seconds spent per feature group (for benchmarks).

    Returns
    -------
    DataFrame with one row per object of ``primary``: ``Metadata_ObjectNumber``,
    ``Metadata_<Compartment>_Location_Center_X/Y`` and the feature columns.

    Examples
    --------
    >>> import numpy as np
    >>> from imgprof.im.measure import measure_objects
    >>> lab = np.zeros((40, 40), np.int32); lab[5:15, 5:15] = 1; lab[20:32, 18:30] = 2
    >>> img = np.random.default_rng(0).random((40, 40))
    >>> df = measure_objects({"DNA": img}, {"Cells": lab}, features=["AreaShape", "Intensity"])
    >>> df["Cells_AreaShape_Area"].tolist()
    [100.0, 144.0]
    """
    _check_options(features, texture_scales, texture_gray_levels, radial_bins, correlations, intensity_convention)
    imgs, channels, comps, primary, neighbors, scale = _check_inputs(
        images, labels, channels, compartments, primary, neighbors, scale_max)
    core, corr, multi = measurement_functions(accelerator, legacy=intensity_convention == "cellprofiler")
    options = dict(texture_scales=texture_scales, texture_gray_levels=texture_gray_levels, granularity=granularity,
                   radial_bins=radial_bins, radial_zernikes=radial_zernikes, zernike=zernike,
                   advanced_shape=advanced_shape, correlations=correlations, scale_max=scale, neighbors=neighbors)
    ctx = Context(core, corr, multi, imgs, channels, options, {} if timings is None else timings)
    row_ids = np.unique(np.asarray(labels[primary]))
    row_ids = row_ids[row_ids > 0].astype(np.int64)
    columns: dict[str, np.ndarray] = {"Metadata_ObjectNumber": row_ids.astype(np.int64)}
    for comp in comps:
        clean, ids = _sanitize(np.asarray(labels[comp]))
        extra = np.setdiff1d(ids, row_ids)
        if len(extra):
            warnings.warn(
                f"labels[{comp!r}] has {len(extra)} object(s) with no {primary} object of the same number "
                f"(e.g. {extra[:5].tolist()}); they are not in the output rows.",
                UserWarning, stacklevel=2,
            )
        res: dict[str, np.ndarray] = {}
        if len(ids):
            res.update(_locations(comp, clean, len(ids)))
            res.update(measure_groups(ctx, comp, clean, features))
        _add_columns(columns, res, ids, row_ids)
    # parent links, as CellProfiler/pycytominer name them (object numbers agree across compartments)
    for child, parent in (("Cells", "Nuclei"), ("Cytoplasm", "Cells"), ("Cytoplasm", "Nuclei")):
        if child in comps and parent in labels:
            has = np.isin(row_ids, np.unique(np.asarray(labels[parent])))
            columns[f"Metadata_{child}_Parent_{parent}"] = np.where(has, row_ids, 0).astype(np.int64)
    meta = [c for c in columns if c.startswith("Metadata_")]
    return pd.DataFrame({c: columns[c] for c in meta + [c for c in columns if c not in meta]})


def objects_to_anndata(
    df: pd.DataFrame, *, metadata: Mapping[str, Any] | None = None, source: str = "im.measure"
) -> AnnData:
    """Turn a :func:`measure_objects` table into a single-cell AnnData.

    ``Metadata_*`` columns go to ``.obs`` (names unchanged), features to ``.X`` with
    parsed anatomy in ``.var``. ``metadata`` adds constant columns (e.g. plate/well/site).

    Parameters
    ----------
    df
        Table from :func:`measure_objects` (one row per object).
    metadata
        Constant ``.obs`` columns to add (e.g. ``{"Metadata_Plate": "P1"}``).
    source
        Name recorded in the provenance log.

    Returns
    -------
    AnnData
        Single-cell profiles: ``Metadata_*`` in ``.obs``, features in ``.X``, anatomy in ``.var``.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"Metadata_ObjectNumber": [1, 2], "Cells_AreaShape_Area": [10.0, 12.0]})
    >>> objects_to_anndata(df, metadata={"Metadata_Plate": "P1"}).obs["Metadata_Plate"].tolist()
    ['P1', 'P1']
    """
    from ..io.profiles import from_pandas

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be the DataFrame of object measurements (measure_objects), got {type(df).__name__}.")
    df = df.copy()
    for k, v in (metadata or {}).items():
        df.insert(0, k, v)
    meta = [c for c in df.columns if c.startswith("Metadata_")]
    df = df[meta + [c for c in df.columns if c not in meta]]
    df.index = pd.RangeIndex(len(df))
    return from_pandas(df, level="single_cell", source=source)
