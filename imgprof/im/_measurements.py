"""cp-measure's measurement modules as a registry of feature groups, named as CellProfiler names them.

:data:`MEASUREMENTS` maps a feature group (``"AreaShape"``, ``"Intensity"``...) to a function
that measures one compartment and returns ``{CellProfiler column name: values}``. Its ``scope``
says what it loops over: ``"objects"`` (the label image alone), ``"channel"`` (one image),
``"channel_pair"`` (two images) or ``"neighbourhood"`` (objects against each other); columns
come out in that order, and within a scope in registration order. Adding a group is one
decorated function here (and its name in ``FEATURE_GROUPS``).
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._core.registry import Registry

__all__ = ["MEASUREMENTS", "SCOPES"]

_NEIGHBOR_METHODS = {"adjacent": "Adjacent", "expanded": "Expand until adjacent"}

#: Feature group → measuring function (meta ``scope``); see the module docstring.
MEASUREMENTS = Registry("measurement", param="features", case_sensitive=True)
#: Scopes in the order their columns are written.
SCOPES = ("objects", "channel", "channel_pair", "neighbourhood")


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


def measurement_functions(accelerator: str | None, legacy: bool) -> tuple[dict, dict, dict]:
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


def _texture_name(comp: str, key: str, ch: str) -> str:
    """``Texture_Contrast_3_00_256`` → ``<comp>_Texture_Contrast_<ch>_3_00_256``."""
    feat, _, params = key.partition("_")
    return f"{comp}_Texture_{feat}_{ch}_{params}"


def _radial_name(comp: str, key: str, ch: str) -> str:
    """``RadialDistribution_FracAtD_1of4`` → ``<comp>_RadialDistribution_FracAtD_<ch>_1of4``."""
    _, feat, *params = key.split("_")
    return f"{comp}_RadialDistribution_{feat}_{ch}" + ("_" + "_".join(params) if params else "")


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


@dataclass
class Context:
    """What every feature group of one :func:`~imgprof.im.measure.measure_objects` call needs."""

    core: dict
    corr: dict
    multi: dict
    images: dict[str, np.ndarray]
    channels: Sequence[str]
    options: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, group: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.timings[group] = self.timings.get(group, 0.0) + time.perf_counter() - t0


@MEASUREMENTS.register("AreaShape", scope="objects")
def _area_shape(ctx: Context, comp: str, clean: np.ndarray) -> dict[str, np.ndarray]:
    """MeasureObjectSizeShape: size, shape, Zernike and Feret features of the objects.

    Examples
    --------
    >>> ell = np.zeros((8, 8), np.int32); ell[2:6, 2:6] = 1; ell[2:4, 4:6] = 0  # an L of 12 pixels
    >>> ctx = Context(*measurement_functions(None, legacy=True), {}, [], {"advanced_shape": False, "zernike": False})
    >>> shape = _area_shape(ctx, "Nuclei", ell)
    >>> shape["Nuclei_AreaShape_Area"], shape["Nuclei_AreaShape_Extent"]  # 12 of its 4 x 4 box
    (array([12.]), array([0.75]))
    """
    advanced = ctx.options["advanced_shape"]
    r = ctx.timed("AreaShape", ctx.core["sizeshape"], clean, None, calculate_advanced=advanced, new_features=advanced)
    if ctx.options["zernike"]:
        r.update(ctx.timed("AreaShape", ctx.core["zernike"], clean, None))
    r.update(ctx.timed("AreaShape", ctx.core["feret"], clean, None))
    return {f"{comp}_AreaShape_{k}": v for k, v in r.items()}


@MEASUREMENTS.register("Intensity", scope="channel")
def _intensity(ctx: Context, comp: str, clean: np.ndarray, ch: str) -> dict[str, np.ndarray]:
    """MeasureObjectIntensity on one channel.

    Examples
    --------
    >>> obj = np.zeros((6, 6), np.int32); obj[1:5, 1:5] = 1
    >>> dna = np.where(obj > 0, 0.5, 0.0); dna[2, 3] = 1.0
    >>> core, corr, multi = measurement_functions(None, legacy=True)
    >>> r = _intensity(Context(core, corr, multi, {"DNA": dna}, ["DNA"], {}), "Nuclei", obj, "DNA")
    >>> r["Nuclei_Intensity_IntegratedIntensity_DNA"], r["Nuclei_Location_MaxIntensity_X_DNA"]
    (array([8.5]), array([3.]))
    """
    r = ctx.timed("Intensity", ctx.core["intensity"], clean, ctx.images[ch])
    # 'Intensity_MeanIntensity' / 'Location_CenterMassIntensity_X': the channel goes last
    return {f"{comp}_{k}_{ch}": v for k, v in r.items()}


@MEASUREMENTS.register("Texture", scope="channel")
def _texture(ctx: Context, comp: str, clean: np.ndarray, ch: str) -> dict[str, np.ndarray]:
    """MeasureTexture (Haralick) on one channel, at every ``texture_scales`` scale.

    Examples
    --------
    13 Haralick features x 4 directions per scale, named ``<feature>_<channel>_<scale>_<direction>_<levels>``:

    >>> core = measurement_functions(None, legacy=True)[0]
    >>> mito = np.random.default_rng(0).random((7, 7))
    >>> ctx = Context(core, {}, {}, {"Mito": mito}, ["Mito"], {"texture_scales": (1, 2), "texture_gray_levels": 8})
    >>> tex = _texture(ctx, "Cells", np.ones((7, 7), np.int32), "Mito")
    >>> len(tex), [k for k in tex if k.startswith("Cells_Texture_Contrast_Mito_2")]  # doctest: +NORMALIZE_WHITESPACE
    (104, ['Cells_Texture_Contrast_Mito_2_00_8', 'Cells_Texture_Contrast_Mito_2_01_8',
           'Cells_Texture_Contrast_Mito_2_02_8', 'Cells_Texture_Contrast_Mito_2_03_8'])
    """
    out = {}
    for s in ctx.options["texture_scales"]:
        r = ctx.timed("Texture", ctx.core["texture"], clean, ctx.images[ch], scale=int(s),
                      gray_levels=int(ctx.options["texture_gray_levels"]))
        out.update({_texture_name(comp, k, ch): v for k, v in r.items()})
    return out


@MEASUREMENTS.register("Granularity", scope="channel")
def _granularity(ctx: Context, comp: str, clean: np.ndarray, ch: str) -> dict[str, np.ndarray]:
    """MeasureGranularity on one channel.

    Examples
    --------
    One feature per step of the granular spectrum (``granular_spectrum_length``):

    >>> blob = np.zeros((10, 10), np.int32); blob[2:8, 2:8] = 1
    >>> ctx = Context(*measurement_functions(None, legacy=True), {"AGP": blob * 0.7}, ["AGP"],
    ...               {"granularity": {"granular_spectrum_length": 3}})
    >>> list(_granularity(ctx, "Cytoplasm", blob, "AGP"))
    ['Cytoplasm_Granularity_1_AGP', 'Cytoplasm_Granularity_2_AGP', 'Cytoplasm_Granularity_3_AGP']
    """
    r = ctx.timed("Granularity", ctx.core["granularity"], clean, ctx.images[ch], **dict(ctx.options["granularity"] or {}))
    return {f"{comp}_{k}_{ch}": v for k, v in r.items()}


@MEASUREMENTS.register("RadialDistribution", scope="channel")
def _radial_distribution(ctx: Context, comp: str, clean: np.ndarray, ch: str) -> dict[str, np.ndarray]:
    """MeasureObjectIntensityDistribution on one channel (optionally with Zernikes).

    Examples
    --------
    The fraction of the intensity in each of ``radial_bins`` rings, centre (1of2) to edge (2of2):

    >>> cell = np.zeros((12, 12), np.int32); cell[2:8, 3:9] = 1
    >>> img = cell * 0.5; img[4, 5] = 1.0
    >>> radial = _radial_distribution(Context(*measurement_functions(None, legacy=True), {"DNA": img}, ["DNA"],
    ...     {"radial_bins": 2, "radial_zernikes": False}), "Nuclei", cell, "DNA")
    >>> [round(float(radial[f"Nuclei_RadialDistribution_FracAtD_DNA_{i}of2"][0]), 3) for i in (1, 2)]
    [0.324, 0.676]
    """
    px = ctx.images[ch]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = ctx.timed("RadialDistribution", ctx.core["radial_distribution"], clean, px,
                      bin_count=int(ctx.options["radial_bins"]))
        if ctx.options["radial_zernikes"]:
            r.update(ctx.timed("RadialDistribution", ctx.core["radial_zernikes"], clean, px))
    return {_radial_name(comp, k, ch): v for k, v in r.items()}


@MEASUREMENTS.register("Correlation", scope="channel_pair")
def _correlation(ctx: Context, comp: str, clean: np.ndarray, a: str, b: str) -> dict[str, np.ndarray]:
    """MeasureColocalization between two channels (the ``correlations`` measures).

    Examples
    --------
    >>> lab = np.ones((5, 5), np.int32); dna = np.arange(25.0).reshape(5, 5) / 25
    >>> _, corr, _ = measurement_functions(None, legacy=True)
    >>> ctx = Context({}, corr, {}, {"DNA": dna, "RNA": 2 * dna}, ["DNA", "RNA"], {"correlations": ["pearson"]})
    >>> {k: v.round(6).tolist() for k, v in _correlation(ctx, "Cells", lab, "DNA", "RNA").items()}
    {'Cells_Correlation_Correlation_DNA_RNA': [1.0], 'Cells_Correlation_Slope_DNA_RNA': [2.0]}
    """
    out = {}
    for cname in ctx.options["correlations"]:
        kw = {"scale_max": ctx.options["scale_max"]} if cname == "costes" else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = ctx.timed("Correlation", ctx.corr[cname], ctx.images[a], ctx.images[b], clean, **kw)
        out.update({_name_correlation(comp, k, a, b): np.asarray(v, float) for k, v in r.items()})
    return out


@MEASUREMENTS.register("Neighbors", scope="neighbourhood")
def _neighbours(ctx: Context, comp: str, clean: np.ndarray) -> dict[str, np.ndarray]:
    """MeasureObjectNeighbors, for the methods ``neighbors`` gives this compartment.

    Examples
    --------
    Two touching nuclei are each other's neighbour; compartments ``neighbors`` leaves out get nothing:

    >>> pair = np.zeros((6, 9), np.int32); pair[1:5, 1:4] = 1; pair[1:5, 4:8] = 2
    >>> ctx = Context({}, {}, measurement_functions(None, legacy=True)[2], {}, [], {"neighbors": {"Nuclei": "adjacent"}})
    >>> _neighbours(ctx, "Nuclei", pair)["Nuclei_Neighbors_FirstClosestObjectNumber_Adjacent"], _neighbours(ctx, "Cells", pair)
    (array([2., 1.]), {})
    """
    neighbors = ctx.options["neighbors"]
    if comp not in neighbors:
        return {}
    methods = neighbors[comp]
    methods = [methods] if isinstance(methods, (str, int)) else list(methods)
    out = {}
    for method in methods:
        r = ctx.timed("Neighbors", _neighbors, ctx.multi["neighbors"], clean, method)
        out.update({f"{comp}_{k}": v for k, v in r.items()})
    return out


def measure_groups(ctx: Context, comp: str, clean: np.ndarray, features: Sequence[str]) -> dict[str, np.ndarray]:
    """Every requested feature group of one compartment, in column order (see the module docstring)."""
    res: dict[str, np.ndarray] = {}
    for scope in SCOPES:
        entries = [e for e in MEASUREMENTS.entries() if e["scope"] == scope and e.name in features]
        if scope == "channel":
            for ch in ctx.channels:
                for e in entries:
                    res.update(e.obj(ctx, comp, clean, ch))
        elif scope == "channel_pair":
            for e in entries:
                for a, b in itertools.combinations(ctx.channels, 2):
                    res.update(e.obj(ctx, comp, clean, a, b))
        else:
            for e in entries:
                res.update(e.obj(ctx, comp, clean))
    return res
