"""Illumination functions: recover a known vignetting imposed on real images; save/load; apply."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import imgprof as ip

CH = {"0": "DNA", "1": "PH3", "2": "cellbody"}
N = 256


def field():
    y, x = np.mgrid[0:N, 0:N] / (N - 1)
    return 1.0 - 0.5 * ((x - 0.3) ** 2 + (y - 0.4) ** 2)  # off-centre vignetting, 0.72..1


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    eh = ip.datasets.examplehuman_images_path()
    site = ip.io.read_images(eh, channels=CH).read(0)
    folder = tmp_path_factory.mktemp("vignetted")
    f = field()
    k = 0
    for qy in (0, 256):
        for qx in (0, 256):
            for t in range(4):  # rotations/flips of real quadrants: cells land everywhere
                for c, name in enumerate(("DNA", "cellbody"), start=1):
                    a = np.rot90(site[name][qy : qy + N, qx : qx + N], t)
                    tifffile.imwrite(folder / f"PV_C0{1 + k // 9}_s{k % 9 + 1}_w{c}.tif",
                                     np.round(np.clip(a * f, 0, 1) * 65535).astype(np.uint16))
                k += 1
    return ip.io.read_images(folder, channels=["DNA", "cellbody"])


def test_recovers_known_field(plate):
    illum = ip.im.compute_illumination(plate, method="gaussian", filter_size=60, n_jobs=2)
    assert list(illum) == ["PV"] and sorted(illum["PV"]) == ["DNA", "cellbody"]
    f = field()
    for ch in ("DNA", "cellbody"):
        g = illum["PV"][ch]
        assert g.shape == (N, N) and g.dtype == np.float32
        assert np.median(g) == pytest.approx(1.0, abs=1e-3)  # rescale="median"
        assert np.corrcoef(g.ravel(), f.ravel())[0, 1] > 0.9  # 16 real sites: cells add noise


@pytest.mark.parametrize("aggregate,method", [("mean", "median"), ("median", "polynomial")])
def test_correction_flattens_plate(plate, aggregate, method):
    illum = ip.im.compute_illumination(plate, aggregate=aggregate, method=method, filter_size=40, downsample=4,
                                       channels=["cellbody"])
    corrected = ip.im.correct_illumination(plate, illum)
    f = field()
    bright, dim = f > np.quantile(f, 0.8), f < np.quantile(f, 0.2)

    def ratio(imgset):
        s = np.mean([imgset.read(i, ["cellbody"])["cellbody"] for i in range(len(imgset))], axis=0)
        return s[bright].mean() / s[dim].mean()

    before, after = ratio(plate), ratio(corrected)
    assert before > 1.2
    assert abs(after - 1) < 0.4 * abs(before - 1)
    # channels without a function are untouched
    np.testing.assert_array_equal(corrected.read(0, ["DNA"])["DNA"], plate.read(0, ["DNA"])["DNA"])


@pytest.mark.parametrize("fmt", ["npy", "tiff"])
def test_save_load_and_reuse(tmp_path, plate, fmt):
    illum = ip.im.compute_illumination(plate, method="polynomial")
    paths = ip.im.save_illumination(illum, tmp_path / "illum", format=fmt)
    assert sorted(p.name for p in paths) == [f"PV_IllumDNA.{fmt}", f"PV_Illumcellbody.{fmt}"]
    back = ip.im.load_illumination(tmp_path / "illum")
    np.testing.assert_array_equal(back["PV"]["DNA"], illum["PV"]["DNA"])
    # reuse from the folder: identical to applying in memory
    a = ip.im.correct_illumination(plate, tmp_path / "illum").read(3)
    b = ip.im.correct_illumination(plate, illum).read(3)
    np.testing.assert_array_equal(a["cellbody"], b["cellbody"])
    with pytest.raises(FileExistsError, match="overwrite"):
        ip.im.save_illumination(illum, tmp_path / "illum", format=fmt)


def test_illumination_errors(plate, tmp_path):
    with pytest.raises(ValueError, match="aggregate"):
        ip.im.compute_illumination(plate, aggregate="max")
    with pytest.raises(KeyError, match="Metadata_Batch"):
        ip.im.compute_illumination(plate, by="Metadata_Batch")
    bad = ip.im.correct_illumination(plate, {"PV": {"DNA": np.ones((10, 10))}})
    with pytest.raises(ValueError, match=r"shape \(10, 10\)"):
        bad.read(0)
    with pytest.raises(KeyError, match="no illumination function for plate"):
        ip.im.correct_illumination(plate, {"OTHER": {"DNA": np.ones((N, N))}}).read(0)
    with pytest.raises(ValueError, match="> 0"):
        ip.im.correct_illumination(plate, {"PV": {"DNA": np.zeros((N, N))}})
    with pytest.raises(FileNotFoundError):
        ip.im.load_illumination(tmp_path)
