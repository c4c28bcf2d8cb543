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

import itertools
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._core.validation import check_int

__all__ = ["FEATURE_GROUPS", "measure_objects", "objects_to_anndata"]

#: Feature groups measured by default (all of CellProfiler's standard Cell Painting groups).
FEATURE_GROUPS = ("AreaShape", "Intensity", "Texture", "Granularity", "RadialDistribution", "Correlation", "Neighbors")
_CORRELATIONS = ("pearson", "manders_fold", "rwc", "costes")
_NEIGHBOR_METHODS = {"adjacent": "Adjacent", "expanded": "Expand until adjacent"}


def _import_cp_measure():
    from .._core.optional import require

    require("cp_measure", extra="im", pip_name="cp-measure", purpose="ip.im measurements")
    try:
        import cp_measure  # noqa: F401
        from cp_measure import bulk
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "Measurements need the optional 'cp-measure' package: pip install 'imgprof[im]' (or pip install cp-measure)."
        ) from e
    return bulk


def _functions(accelerator: str | None, legacy: bool) -> tuple[dict, dict, dict]:
    """Fetch cp-measure's measurement functions for an accelerator without leaving global state changed."""
    import cp_measure

    bulk = _import_cp_measure()
    if accelerator == "auto":
        from importlib.util import find_spec

        accelerator = "numba" if find_spec("numba") is not None else None
    if accelerator not in (None, "numba"):
        raise ValueError(f"accelerator={accelerator!r}: expected 'auto', 'numba' or None.")
    previous = getattr(cp_measure, "_ACCELERATOR", None)
    cp_measure.set_accelerator(accelerator)
    try:
        core = bulk.get_core_measurements(legacy=legacy, sanitize=False)
        corr = bulk.get_correlation_measurements(sanitize=False)
    finally:
        cp_measure.set_accelerator(previous)
    multi = bulk.get_multimask_measurements()
    return core, corr, multi


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


def _name_channel_feature(comp: str, group: str, key: str, ch: str) -> str:
    """cp-measure key (for one channel) → CellProfiler column name."""
    if group == "Intensity":
        # 'Intensity_MeanIntensity' / 'Location_CenterMassIntensity_X' -> channel appended last
        return f"{comp}_{key}_{ch}"
    if group == "Texture":
        feat, _, params = key.partition("_")
        return f"{comp}_Texture_{feat}_{ch}_{params}"
    if group == "Granularity":
        return f"{comp}_{key}_{ch}"
    if group == "RadialDistribution":
        # 'RadialDistribution_FracAtD_1of4' -> RadialDistribution_FracAtD_<ch>_1of4
        _, feat, *params = key.split("_")
        return f"{comp}_RadialDistribution_{feat}_{ch}" + ("_" + "_".join(params) if params else "")
    raise AssertionError(group)


def _name_correlation(comp: str, key: str, a: str, b: str) -> str:
    feat = key.removeprefix("Correlation_")
    if feat == "Pearson":
        return f"{comp}_Correlation_Correlation_{a}_{b}"
    if feat.endswith("_1"):
        return f"{comp}_Correlation_{feat[:-2]}_{a}_{b}"
    if feat.endswith("_2"):
        return f"{comp}_Correlation_{feat[:-2]}_{b}_{a}"
    return f"{comp}_Correlation_{feat}_{a}_{b}"


def _neighbors(fn, clean: np.ndarray, method: str | int) -> dict[str, np.ndarray]:
    """MeasureObjectNeighbors via cp-measure, with closest-object numbers recomputed.

    cp-measure 0.3.0 reports each object itself as its ``FirstClosestObjectNumber``
    (its distance matrix includes the object); we recompute the two closest *other*
    objects from the centroids, as CellProfiler does.
    """
    from scipy import ndimage as ndi
    from scipy.spatial import cKDTree

    if isinstance(method, str):
        if method not in _NEIGHBOR_METHODS:
            raise ValueError(f"neighbors={method!r}: expected 'adjacent', 'expanded' or a distance in pixels.")
        res = fn(clean, clean, distance_method=_NEIGHBOR_METHODS[method])
    else:
        res = fn(clean, clean, distance_method="Within a specified distance", distance=int(method))
    out = {k: np.asarray(v, dtype=float) for k, v in res.items()}
    n = int(clean.max())
    suffix = next(iter(out)).rsplit("_", 1)[-1] if out else ""
    first = np.zeros(n)
    second = np.zeros(n)
    if n > 1:
        centers = np.asarray(ndi.center_of_mass(np.ones(clean.shape), clean, np.arange(1, n + 1)))
        k = min(3, n)
        _, idx = cKDTree(centers).query(centers, k=k)
        idx = np.asarray(idx).reshape(n, k)
        # drop the object itself wherever it appears
        for i in range(n):
            others = [j for j in idx[i] if j != i]
            if others:
                first[i] = others[0] + 1
            if len(others) > 1:
                second[i] = others[1] + 1
    out[f"Neighbors_FirstClosestObjectNumber_{suffix}"] = first
    out[f"Neighbors_SecondClosestObjectNumber_{suffix}"] = second
    return out


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
    unknown = [f for f in features if f not in FEATURE_GROUPS]
    if unknown:
        raise ValueError(f"features: unknown group(s) {unknown}; choose from {list(FEATURE_GROUPS)}.")
    check_int(radial_bins, "radial_bins", min_value=1)
    check_int(texture_gray_levels, "texture_gray_levels", min_value=2)
    for scale in texture_scales:
        check_int(scale, "texture_scales", min_value=1)
    bad_corr = [c for c in correlations if c not in _CORRELATIONS]
    if bad_corr:
        raise ValueError(f"correlations: unknown measure(s) {bad_corr}; choose from {list(_CORRELATIONS)}.")
    if intensity_convention not in ("cellprofiler", "numpy"):
        raise ValueError(f"intensity_convention={intensity_convention!r}: expected 'cellprofiler' or 'numpy'.")
    if not labels:
        raise ValueError("labels: no compartment given.")
    imgs, inferred_scale = _as_float_images(images)
    if channels is None:
        channels = list(imgs)
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

    core, corr, multi = _functions(accelerator, legacy=intensity_convention == "cellprofiler")
    timings = {} if timings is None else timings

    def timed(group, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timings[group] = timings.get(group, 0.0) + time.perf_counter() - t0

    row_ids = np.unique(np.asarray(labels[primary]))
    row_ids = row_ids[row_ids > 0].astype(np.int64)
    columns: dict[str, np.ndarray] = {"Metadata_ObjectNumber": row_ids.astype(np.int64)}
    for comp in comps:
        clean, ids = _sanitize(np.asarray(labels[comp]))
        pos = np.searchsorted(ids, row_ids)
        present = np.isin(row_ids, ids)
        extra = np.setdiff1d(ids, row_ids)
        if len(extra):
            warnings.warn(
                f"labels[{comp!r}] has {len(extra)} object(s) with no {primary} object of the same number "
                f"(e.g. {extra[:5].tolist()}); they are not in the output rows.",
                UserWarning, stacklevel=2,
            )
        res: dict[str, np.ndarray] = {}
        if len(ids):
            from scipy import ndimage as ndi

            cen = np.asarray(ndi.center_of_mass(np.ones(clean.shape), clean, np.arange(1, len(ids) + 1))).reshape(-1, 2)
            res[f"Metadata_{comp}_Location_Center_X"] = cen[:, 1]
            res[f"Metadata_{comp}_Location_Center_Y"] = cen[:, 0]
            # CellProfiler also exports the centroid as a (positional) feature column
            res[f"{comp}_Location_Center_X"] = cen[:, 1]
            res[f"{comp}_Location_Center_Y"] = cen[:, 0]
            if "AreaShape" in features:
                r = timed("AreaShape", core["sizeshape"], clean, None, calculate_advanced=advanced_shape,
                          new_features=advanced_shape)
                if zernike:
                    r.update(timed("AreaShape", core["zernike"], clean, None))
                r.update(timed("AreaShape", core["feret"], clean, None))
                res.update({f"{comp}_AreaShape_{k}": v for k, v in r.items()})
            for ch in channels:
                px = imgs[ch]
                if "Intensity" in features:
                    r = timed("Intensity", core["intensity"], clean, px)
                    res.update({_name_channel_feature(comp, "Intensity", k, ch): v for k, v in r.items()})
                if "Texture" in features:
                    for s in texture_scales:
                        r = timed("Texture", core["texture"], clean, px, scale=int(s), gray_levels=int(texture_gray_levels))
                        res.update({_name_channel_feature(comp, "Texture", k, ch): v for k, v in r.items()})
                if "Granularity" in features:
                    r = timed("Granularity", core["granularity"], clean, px, **dict(granularity or {}))
                    res.update({_name_channel_feature(comp, "Granularity", k, ch): v for k, v in r.items()})
                if "RadialDistribution" in features:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        r = timed("RadialDistribution", core["radial_distribution"], clean, px, bin_count=int(radial_bins))
                        if radial_zernikes:
                            r.update(timed("RadialDistribution", core["radial_zernikes"], clean, px))
                    res.update({_name_channel_feature(comp, "RadialDistribution", k, ch): v for k, v in r.items()})
            if "Correlation" in features and len(channels) > 1:
                for a, b in itertools.combinations(channels, 2):
                    for cname in correlations:
                        kw = {"scale_max": scale} if cname == "costes" else {}
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", RuntimeWarning)
                            r = timed("Correlation", corr[cname], imgs[a], imgs[b], clean, **kw)
                        res.update({_name_correlation(comp, k, a, b): np.asarray(v, float) for k, v in r.items()})
            if "Neighbors" in features and comp in neighbors:
                methods = neighbors[comp]
                methods = [methods] if isinstance(methods, (str, int)) else list(methods)
                for method in methods:
                    r = timed("Neighbors", _neighbors, multi["neighbors"], clean, method)
                    res.update({f"{comp}_{k}": v for k, v in r.items()})
        for name, values in res.items():
            values = np.asarray(values, dtype=float).reshape(-1)
            if values.shape[0] != len(ids):
                raise RuntimeError(f"cp-measure returned {values.shape[0]} values for {name}, expected {len(ids)}.")
            col = np.full(len(row_ids), np.nan)
            col[present] = values[pos[present]]
            if name in columns:
                raise RuntimeError(f"duplicate feature name {name!r}.")
            columns[name] = col
    # parent links, as CellProfiler/pycytominer name them (object numbers agree across compartments)
    for child, parent in (("Cells", "Nuclei"), ("Cytoplasm", "Cells"), ("Cytoplasm", "Nuclei")):
        if child in comps and parent in labels:
            has = np.isin(row_ids, np.unique(np.asarray(labels[parent])))
            columns[f"Metadata_{child}_Parent_{parent}"] = np.where(has, row_ids, 0).astype(np.int64)
    meta = [c for c in columns if c.startswith("Metadata_")]
    return pd.DataFrame({c: columns[c] for c in meta + [c for c in columns if c not in meta]})


def objects_to_anndata(df: pd.DataFrame, *, metadata: Mapping[str, Any] | None = None, source: str = "im.measure"):
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
