"""Read segmentation settings (IdentifyPrimary/Secondary/TertiaryObjects) from a CellProfiler ``.cppipe``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["segmenter_from_cppipe"]


def _parse_cppipe(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    modules: list[tuple[str, dict[str, list[str]]]] = []
    current: dict[str, list[str]] | None = None
    for line in text.splitlines():
        m = re.match(r"^(\w+):\[module_num:", line)
        if m:
            current = {}
            modules.append((m.group(1), current))
            continue
        if current is not None and line.startswith("    ") and ":" in line:
            key, _, value = line.strip().partition(":")
            current.setdefault(key, []).append(value)
    return modules


def _num_pair(v: str) -> tuple[float, float]:
    a, b = v.split(",")
    return float(a), float(b)


_TM = {"Minimum Cross-Entropy": "minimum_cross_entropy", "Otsu": "otsu", "Manual": "manual"}


def _threshold_kwargs(s: dict[str, list[str]]) -> dict[str, Any]:
    method: str | float = _TM.get(s.get("Thresholding method", ["Minimum Cross-Entropy"])[0], "minimum_cross_entropy")
    if method == "otsu" and s.get("Two-class or three-class thresholding?", ["Two classes"])[0] == "Three classes":
        middle = s.get("Assign pixels in the middle intensity class to the foreground or the background?", ["Foreground"])[0]
        method = "otsu3_foreground" if middle == "Foreground" else "otsu3_background"
    if method == "manual":
        method = float(s.get("Manual threshold", ["0"])[0])
    return {
        "threshold": method,
        "threshold_correction": float(s.get("Threshold correction factor", ["1"])[0]),
        "threshold_bounds": _num_pair(s.get("Lower and upper bounds on threshold", ["0,1"])[0]),
        "threshold_smoothing_scale": float(s.get("Threshold smoothing scale", ["1.3488"])[0]),
    }


def _first(s: dict[str, list[str]], key: str, default: str) -> str:
    return s.get(key, [default])[0]


def _pick_primary(path: Path, prim: list[dict[str, list[str]]], nuclei: str | None) -> dict[str, list[str]]:
    if not prim:
        raise ValueError(f"{path}: no IdentifyPrimaryObjects module found.")
    if nuclei is None:
        return prim[0]
    found = [s for s in prim if _first(s, "Name the primary objects to be identified", "") == nuclei]
    if not found:
        raise ValueError(f"{path}: no IdentifyPrimaryObjects module names objects {nuclei!r}.")
    return found[0]


def _pick_secondary(path: Path, sec: list[dict[str, list[str]]], nuc_name: str, cells: str | None) -> dict[str, list[str]]:
    for cand in sec:
        if _first(cand, "Select the input objects", "") == nuc_name and (
            cells is None or _first(cand, "Name the objects to be identified", "") == cells
        ):
            return cand
    raise ValueError(f"{path}: no IdentifySecondaryObjects module grows objects from {nuc_name!r}.")


def _advanced_primary_kwargs(p: dict[str, list[str]]) -> dict[str, Any]:
    nkw: dict[str, Any] = _threshold_kwargs(p)
    unclump = _first(p, "Method to distinguish clumped objects", "Intensity")
    nkw["declump"] = {"Intensity": "intensity", "Shape": "shape", "None": "none"}.get(unclump, "intensity")
    lines = _first(p, "Method to draw dividing lines between clumped objects", "Intensity")
    nkw["dividing_lines"] = "shape" if lines == "Shape" else "intensity"
    if p.get("Automatic calculate size of smoothing filter for declumping?",
             p.get("Automatically calculate size of smoothing filter for declumping?", ["Yes"]))[0] == "No":
        nkw["smoothing_filter_size"] = float(p["Size of smoothing filter"][0])
    if _first(p, "Automatically calculate minimum allowed distance between local maxima?", "Yes") == "No":
        nkw["maxima_suppression"] = float(p["Suppress local maxima that are closer than this minimum allowed distance"][0])
    nkw["low_res_maxima"] = _first(p, "Speed up by using lower-resolution image to find local maxima?", "Yes") == "Yes"
    fh = _first(p, "Fill holes in identified objects?", "After both thresholding and declumping")
    nkw["fill_holes"] = {"After declumping only": "after_declumping", "After thresholding only": "thresholding",
                         "Never": "never"}.get(fh, "both")
    return nkw


def _primary_kwargs(p: dict[str, list[str]]) -> dict[str, Any]:
    nkw: dict[str, Any] = {
        "diameter": _num_pair(p["Typical diameter of objects, in pixel units (Min,Max)"][0]),
        "exclude_size": _first(p, "Discard objects outside the diameter range?", "Yes") == "Yes",
        "exclude_border": _first(p, "Discard objects touching the border of the image?", "Yes") == "Yes",
    }
    if _first(p, "Use advanced settings?", "No") == "Yes":
        nkw.update(_advanced_primary_kwargs(p))
    return nkw


def _secondary_kwargs(s: dict[str, list[str]]) -> dict[str, Any]:
    meth = _first(s, "Select the method to identify the secondary objects", "Propagation")
    ckw: dict[str, Any] = {
        "method": {"Propagation": "propagation", "Watershed - Gradient": "watershed_gradient",
                   "Watershed - Image": "watershed_image", "Distance - N": "distance"}.get(meth, "propagation"),
        "regularization": float(_first(s, "Regularization factor", "0.05")),
        "distance": int(float(_first(s, "Number of pixels by which to expand the primary objects", "10"))),
        "fill_holes": _first(s, "Fill holes in identified objects?", "Yes") == "Yes",
        "exclude_border": _first(s, "Discard secondary objects touching the border of the image?", "No") == "Yes",
    }
    ckw.update(_threshold_kwargs(s))
    return ckw


def segmenter_from_cppipe(cls: type[T], path: Path, *, nuclei: str | None = None, cells: str | None = None,
                          channel_names: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` (a :class:`~imgprof.im.segment.CellProfilerSegmenter`) from a ``.cppipe`` file.

    Parameters
    ----------
    cls
        The segmenter class to instantiate.
    path
        CellProfiler pipeline file.
    nuclei, cells
        Names of the primary / secondary objects to use (default: the first ones).
    channel_names
        Pipeline image name → channel name.

    Returns
    -------
    The segmenter.

    Examples
    --------
    >>> import imgprof as ip
    >>> seg = segmenter_from_cppipe(ip.im.CellProfilerSegmenter,
    ...     ip.datasets.examplehuman_images_path() / "ExampleHuman.cppipe")
    >>> seg.cells["method"]
    'propagation'
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CellProfiler pipeline file.")
    modules = _parse_cppipe(path.read_text(errors="replace"))
    rename = dict(channel_names or {})
    p = _pick_primary(path, [s for name, s in modules if name == "IdentifyPrimaryObjects"], nuclei)
    nuc_name = p["Name the primary objects to be identified"][0]
    s = _pick_secondary(path, [s for name, s in modules if name == "IdentifySecondaryObjects"], nuc_name, cells)
    ter = [s for name, s in modules if name == "IdentifyTertiaryObjects"]
    shrink = _first(ter[0], "Shrink smaller object prior to subtraction?", "Yes") == "Yes" if ter else True
    nuc_image, cell_image = p["Select the input image"][0], s["Select the input image"][0]
    return cls(nuclei_channel=rename.get(nuc_image, nuc_image), cells_channel=rename.get(cell_image, cell_image),  # type: ignore[call-arg]
               nuclei=_primary_kwargs(p), cells=_secondary_kwargs(s), shrink_nuclei=shrink)
