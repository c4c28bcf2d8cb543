"""Segmentation checked against CellProfiler's own ExampleHuman output (real images, real pipeline)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
from conftest import EH_CHANNELS
from scipy.spatial import cKDTree

import imgprof as ip
from imgprof.im import _segment_kernels as kern
from imgprof.im import segment as seg

CH = EH_CHANNELS


@pytest.fixture(scope="module")
def segmenter(eh):
    return ip.im.CellProfilerSegmenter.from_cppipe(eh / "ExampleHuman.cppipe")


@pytest.fixture(scope="module")
def labels(site, segmenter):
    return ip.im.segment_site(site, segmenter)


def cp_table(eh, name):
    return pd.read_csv(eh / f"{name}.csv.gz")


def test_cppipe_settings_are_mirrored(segmenter):
    # IdentifyPrimaryObjects (basic mode): diameters 8-80, discard border/size; automatic MCE threshold
    assert segmenter.nuclei_channel == "DNA" and segmenter.cells_channel == "cellbody"
    assert segmenter.nuclei == {"diameter": (8.0, 80.0), "exclude_size": True, "exclude_border": True}
    # IdentifySecondaryObjects: propagation, lambda 0.05, MCE x 0.8, no smoothing, fill holes
    c = segmenter.cells
    assert (c["method"], c["regularization"], c["threshold"], c["threshold_correction"],
            c["threshold_smoothing_scale"], c["fill_holes"]) == ("propagation", 0.05, "minimum_cross_entropy", 0.8, 0.0, True)
    assert segmenter.shrink_nuclei is True


def test_thresholds_match_cellprofiler(eh, site):
    image = pd.read_csv(eh / "Image.csv")
    nuc = ip.im.identify_primary(site["DNA"])
    assert nuc.threshold == pytest.approx(image["Threshold_FinalThreshold_Nuclei"].iloc[0], rel=1e-5)
    cells_thr = ip.im.threshold_image(site["cellbody"], correction=0.8)
    assert cells_thr == pytest.approx(image["Threshold_FinalThreshold_Cells"].iloc[0], rel=1e-5)


@pytest.mark.parametrize("compartment", ["Nuclei", "Cells", "Cytoplasm"])
def test_objects_match_cellprofiler(eh, labels, compartment):
    from skimage.measure import regionprops_table

    cp = cp_table(eh, compartment)
    ours = pd.DataFrame(regionprops_table(labels[compartment], properties=["label", "area", "centroid"]))
    # object count within 10 % of CellProfiler's (289)
    assert abs(len(ours) - len(cp)) <= 0.1 * len(cp)
    # object by object: nearest centroid, same object number, area within 5 %
    dist, idx = cKDTree(ours[["centroid-1", "centroid-0"]].to_numpy()).query(
        cp[["AreaShape_Center_X", "AreaShape_Center_Y"]].to_numpy())
    matched = ours.iloc[idx]
    close = (dist < 2) & (np.abs(matched["area"].to_numpy() - cp["AreaShape_Area"].to_numpy())
                          <= 0.05 * cp["AreaShape_Area"].to_numpy())
    assert close.mean() >= 0.95
    assert (matched["label"].to_numpy() == cp["ObjectNumber"].to_numpy()).mean() >= 0.95


def test_compartments_are_consistent(labels):
    nuc, cells, cyto = labels["Nuclei"], labels["Cells"], labels["Cytoplasm"]
    assert set(np.unique(nuc)) == set(np.unique(cells)) == set(np.unique(cyto))
    inside = nuc > 0
    assert (cells[inside] == nuc[inside]).all()          # every nucleus lies in its own cell
    assert ((cyto > 0) <= (cells > 0)).all()               # cytoplasm is part of the cell
    assert not ((cyto > 0) & (nuc > 0) & ~kern.outline(nuc)).any()  # only the nuclear outline is shared


def test_fill_holes_and_maxima_match_centrosome(labels, site):
    cpm = pytest.importorskip("centrosome.cpmorphology")
    lab = labels["Cells"].copy()
    rng = np.random.default_rng(0)
    ys, xs = np.nonzero(lab)
    pick = rng.choice(len(ys), 200, replace=False)
    lab[ys[pick], xs[pick]] = 0  # punch single-pixel holes
    np.testing.assert_array_equal(seg.fill_labeled_holes(lab), cpm.fill_labeled_holes(lab))
    fp = kern._disk(4.8333)
    ours = kern._is_local_maximum(site["DNA"].astype(float), labels["Nuclei"], fp)
    theirs = cpm.is_local_maximum(site["DNA"].astype(float), labels["Nuclei"], fp)
    assert (ours == theirs).mean() > 0.999


@pytest.mark.parametrize("method", ["watershed_gradient", "watershed_image", "distance"])
def test_pure_skimage_cell_methods(site, method):
    nuc = ip.im.identify_primary(site["DNA"])
    cells = ip.im.identify_secondary(site["cellbody"], nuc, method=method, threshold_correction=0.8)
    assert set(np.unique(cells)) == set(np.unique(nuc.labels))
    assert (cells[nuc.labels > 0] == nuc.labels[nuc.labels > 0]).all()
    assert (cells > 0).sum() > 2 * (nuc.labels > 0).sum()


def test_precomputed_labels_relate_nuclei_to_cells(labels):
    # renumber the nuclei arbitrarily: PrecomputedLabels must map them back to their cells
    perm = np.r_[0, np.random.default_rng(1).permutation(np.arange(1, labels["Nuclei"].max() + 1)) + 1000]
    scrambled = perm[labels["Nuclei"]]
    out = ip.im.segment_site({}, ip.im.PrecomputedLabels({"Nuclei": scrambled, "Cells": labels["Cells"]}))
    np.testing.assert_array_equal(out["Nuclei"], labels["Nuclei"])
    np.testing.assert_array_equal(out["Cytoplasm"], labels["Cytoplasm"])


def test_cellpose_segmenter_uses_local_weights_only(tmp_path, site, monkeypatch):
    missing = ip.im.CellposeSegmenter(tmp_path / "no_model", nuclei_channel="DNA", cells_channel="cellbody")
    with pytest.raises(FileNotFoundError, match="no_model"):
        missing(site)
    weights = tmp_path / "my_model"
    weights.write_bytes(b"weights")
    calls = {}

    class FakeModel:
        def __init__(self, gpu, pretrained_model):
            calls["pretrained_model"] = pretrained_model

        def eval(self, x, diameter=None, channel_axis=None, **kw):
            calls["shape"] = x.shape
            nuc = ip.im.identify_primary(x[..., 1])
            return ip.im.identify_secondary(x[..., 0], nuc, method="distance", distance=5), None, None

    fake = types.ModuleType("cellpose")
    fake.models = types.SimpleNamespace(CellposeModel=FakeModel)
    monkeypatch.setitem(sys.modules, "cellpose", fake)
    out = ip.im.CellposeSegmenter(weights, nuclei_channel="DNA", cells_channel="cellbody")(site)
    assert calls == {"pretrained_model": str(weights), "shape": (512, 512, 2)}
    assert sorted(out) == ["Cells", "Cytoplasm", "Nuclei"]
    assert set(np.unique(out["Nuclei"])) <= set(np.unique(out["Cells"]))


def test_custom_callable_segmenter_and_errors(site):
    def only_cells(images):
        return {"Cells": ip.im.identify_primary(images["cellbody"], diameter=(10, 200)).labels}

    out = ip.im.segment_site(site, only_cells)
    assert list(out) == ["Cells"] and out["Cells"].max() > 0
    with pytest.raises(TypeError, match="mapping"):
        ip.im.segment_site(site, lambda images: np.zeros((512, 512), int))
    with pytest.raises(ValueError, match="shape"):
        ip.im.segment_site(site, lambda images: {"Cells": np.zeros((10, 10), int)})
    with pytest.raises(KeyError, match="'Mito'"):
        ip.im.segment_site(site, nuclei_channel="Mito", cells_channel="cellbody")
    with pytest.raises(ValueError, match="diameter"):
        ip.im.identify_primary(site["DNA"], diameter=(10, 5))


def test_empty_image_gives_no_objects():
    nuc = ip.im.identify_primary(np.zeros((64, 64)))
    assert nuc.count == 0
    cells = ip.im.identify_secondary(np.zeros((64, 64)), nuc, method="watershed_image")
    assert cells.max() == 0


def test_threshold_and_secondary_methods_are_registries():
    """Adding a threshold method is one registered function; threshold_image and identify_primary use it."""
    from imgprof.im.segment import SECONDARY_METHODS, THRESHOLDS

    assert SECONDARY_METHODS.names() == ("propagation", "watershed_gradient", "watershed_image", "distance")
    img = np.zeros((40, 40))
    img[5:15, 5:15] = 0.8
    img[25:35, 22:32] = 0.3
    THRESHOLDS.add("fixed_half", lambda data: 0.5)
    try:
        assert seg.threshold_image(img, "fixed_half") == 0.5
        assert seg.identify_primary(img, diameter=(4, 30), threshold="fixed_half").count == 1
        assert seg.identify_primary(img, diameter=(4, 30), threshold=0.2).count == 2
    finally:
        THRESHOLDS.unregister("fixed_half")
    with pytest.raises(ValueError, match="fixed_half"):
        seg.threshold_image(img, "fixed_half")
