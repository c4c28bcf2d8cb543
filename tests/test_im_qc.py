"""Image QC: CellProfiler's PowerLogLogSlope on real images and Metadata_qc_* flags that never drop sites."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from conftest import EH_CHANNELS
from scipy import ndimage as ndi

import imgprof as ip

CH = EH_CHANNELS


def centrosome_plls(img):
    """CellProfiler's MeasureImageQuality slope, computed with centrosome's rps (numpy-2 shim for .ptp)."""
    rps_mod = pytest.importorskip("centrosome.radial_power_spectrum")

    class _Arr(np.ndarray):
        def ptp(self, *a, **k):
            return np.ptp(np.asarray(self), *a, **k)

    radii, magnitude, power = rps_mod.rps(np.asarray(img, float).view(_Arr))
    valid = np.asarray(magnitude) > 0
    radii, power = np.asarray(radii)[valid], np.asarray(power)[valid]
    A = np.column_stack([np.log(radii), np.ones(len(radii))])
    return float(np.linalg.lstsq(A, np.log(power), rcond=None)[0][0])


@pytest.mark.parametrize("channel", ["DNA", "PH3", "cellbody"])
def test_power_log_log_slope_matches_cellprofiler(site, channel):
    ours = ip.im.power_log_log_slope(site[channel])
    assert ours == pytest.approx(centrosome_plls(site[channel]), rel=1e-6)
    # blur makes the spectrum fall faster
    assert ip.im.power_log_log_slope(ndi.gaussian_filter(site[channel], 2)) < ours - 0.5


def test_image_quality_metrics(site):
    q = ip.im.image_quality(site["DNA"])
    img = site["DNA"]
    assert q["MaxIntensity"] == pytest.approx(img.max()) and q["MinIntensity"] == pytest.approx(img.min())
    assert q["PercentMaximal"] == pytest.approx(100 * (img == img.max()).mean())
    assert q["FocusScore"] == pytest.approx(img.var() / img.mean(), rel=1e-5)
    assert q["IntensityRange"] > 0
    empty = ip.im.image_quality(np.zeros((64, 64)))
    assert empty["PowerLogLogSlope"] == 0 and empty["PercentMaximal"] == 100


def make_plate(folder, site, n=8):
    """8 sites from the real images (quadrant crops / flips); site 5 blurred, 6 saturated, 7 blank."""
    folder.mkdir()
    quads = [(slice(0, 256), slice(0, 256)), (slice(0, 256), slice(256, 512)),
             (slice(256, 512), slice(0, 256)), (slice(256, 512), slice(256, 512))]
    for s in range(n):
        for c, name in enumerate(("DNA", "PH3", "cellbody"), start=1):
            a = site[name][quads[s % 4]]
            if s >= 4:
                a = a[::-1]
            a = a.astype(np.float64)
            if s == 5:
                a = ndi.gaussian_filter(a, 3)
            if s == 6 and name == "DNA":
                a = np.minimum(a * 4, 1.0)
            if s == 7:
                a = np.zeros_like(a)
            tifffile.imwrite(folder / f"P1_B02_s{s + 1}_w{c}.tif", np.round(a * 255).astype(np.uint8))
    return folder


def test_flags_on_a_plate_never_drop_sites(tmp_path, site):
    imgs = ip.io.read_images(make_plate(tmp_path / "plate", site), channels=["DNA", "PH3", "cellbody"])
    ip.im.image_qc(imgs, n_jobs=2)
    t = imgs.table
    assert len(t) == 8  # nothing dropped
    for ch in ("DNA", "PH3", "cellbody"):
        assert f"Metadata_qc_PowerLogLogSlope_{ch}" in t
    assert t["Metadata_qc_blurry"].tolist() == [False] * 5 + [True] + [False] * 2
    assert t["Metadata_qc_saturated"].tolist() == [False] * 6 + [True, False]
    assert t["Metadata_qc_empty"].tolist() == [False] * 7 + [True]
    assert t["Metadata_qc_pass"].tolist() == [True] * 5 + [False] * 3
    assert "DNA:saturated" in t.loc[6, "Metadata_qc_flagged_channels"]
    # inplace=False returns the table and leaves the image set alone
    again = ip.io.read_images(tmp_path / "plate", channels=["DNA", "PH3", "cellbody"])
    out = ip.im.image_qc(again, inplace=False, saturation_percent=50.0)
    assert "Metadata_qc_pass" not in again.table and not out["Metadata_qc_saturated"].any()


def test_qc_flags_needs_metrics():
    import pandas as pd

    with pytest.raises(KeyError, match="image_qc"):
        ip.im.qc_flags(pd.DataFrame({"Metadata_Plate": ["P"]}), ["DNA"])
