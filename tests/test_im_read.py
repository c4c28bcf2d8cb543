"""ip.io.read_images: folders, load-data tables, laziness and bad input (real ExampleHuman images)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import EH_CHANNELS

import imgprof as ip

CH = EH_CHANNELS


@pytest.fixture(scope="module")
def raw(eh):
    return {name: tifffile.imread(eh / f"AS_09125_050116030001_D03f00d{tok}.tif") for tok, name in CH.items()}


def write_plate(folder, raw, *, plate="P1", wells=("A01", "A02"), sites=(1, 2)):
    """Quadrants of the real images as sites, ImageXpress names <plate>_<well>_s<site>_w<channel>.tif."""
    folder.mkdir(parents=True, exist_ok=True)
    quads = [(slice(0, 256), slice(0, 256)), (slice(0, 256), slice(256, 512)),
             (slice(256, 512), slice(0, 256)), (slice(256, 512), slice(256, 512))]
    k = 0
    for w in wells:
        for s in sites:
            q = quads[k % 4]
            k += 1
            for c, name in enumerate(("DNA", "PH3", "cellbody"), start=1):
                tifffile.imwrite(folder / f"{plate}_{w}_s{s}_w{c}.tif", raw[name][q])
    return folder


def test_read_examplehuman_folder(eh, raw):
    imgs = ip.io.read_images(eh, channels=CH)
    assert len(imgs) == 1 and imgs.channels == ["DNA", "PH3", "cellbody"]
    row = imgs.table.iloc[0]
    assert (row["Metadata_Plate"], row["Metadata_Well"], row["Metadata_Site"]) == ("AS_09125_050116030001", "D03", "00")
    assert row["FileName_PH3"] == "AS_09125_050116030001_D03f00d1.tif"
    site = imgs.read(0)
    # CellProfiler's convention: 8-bit images divided by 255
    np.testing.assert_allclose(site["DNA"], raw["DNA"] / 255.0, rtol=1e-6)
    assert imgs.dtypes["DNA"] == "uint8" and imgs.scale_max == 255
    assert ip.im.read_images is ip.io.read_images


def test_to_dask_is_lazy_and_matches(tmp_path, raw):
    folder = write_plate(tmp_path / "plate", raw)
    imgs = ip.io.read_images(folder, channels=["DNA", "PH3", "cellbody"])
    assert len(imgs) == 4
    assert imgs.table["Metadata_Well"].tolist() == ["A01", "A01", "A02", "A02"]
    arr = imgs.to_dask()
    assert type(arr).__module__.startswith("dask")
    assert arr.shape == (4, 3, 256, 256) and arr.dtype == np.float32
    # one chunk per site and channel: nothing is read until computed
    assert arr.numblocks[:2] == (4, 3)
    np.testing.assert_allclose(arr[3, 2].compute(), raw["cellbody"][256:, 256:] / 255.0, rtol=1e-6)


def test_load_data_table_round_trip(tmp_path, raw, eh):
    folder = write_plate(tmp_path / "plate", raw)
    imgs = ip.io.read_images(folder, channels=["DNA", "PH3", "cellbody"])
    csv = tmp_path / "load_data.csv"
    imgs.table.drop(columns=["Metadata_qc_error"]).to_csv(csv, index=False)
    again = ip.io.read_images(csv)
    assert again.channels == imgs.channels and len(again) == 4
    np.testing.assert_array_equal(again.read(2)["PH3"], imgs.read(2)["PH3"])
    # channel selection and renaming on a load-data table
    sub = ip.io.read_images(csv, channels={"DNA": "Hoechst"})
    assert sub.channels == ["Hoechst"] and "FileName_Hoechst" in sub.table


def test_custom_pattern_and_metadata(tmp_path, raw):
    folder = tmp_path / "custom"
    folder.mkdir()
    for c, name in enumerate(("DNA", "PH3")):
        tifffile.imwrite(folder / f"exp7-B12-site3-ch{c}.tif", raw[name][:64, :64])
    imgs = ip.io.read_images(folder, pattern=r"(?P<Batch>\w+)-(?P<Well>[A-P]\d\d)-site(?P<Site>\d)-ch(?P<Channel>\d)",
                             channels={"0": "DNA", "1": "PH3"}, metadata={"Metadata_Plate": "PX"})
    row = imgs.table.iloc[0]
    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_Batch"]
    assert tuple(row[k] for k in keys) == ("PX", "B12", "3", "exp7")


def test_unknown_channel_token_names_the_token(eh):
    with pytest.raises(ValueError, match=r"'7'.*Mito"):
        ip.io.read_images(eh, channels={"0": "DNA", "7": "Mito"})


def test_unselected_channels_are_reported_not_silent(eh):
    with pytest.warns(UserWarning, match=r"token\(s\) \['2'\] are not in channels="):
        imgs = ip.io.read_images(eh, channels={"0": "DNA", "1": "PH3"})
    assert imgs.channels == ["DNA", "PH3"]


def test_bad_sites_are_flagged_not_fatal(tmp_path, raw):
    folder = write_plate(tmp_path / "plate", raw, wells=("A01", "A02", "A03"), sites=(1, 2))
    (folder / "P1_A01_s2_w2.tif").unlink()                              # missing channel
    (folder / "P1_A02_s1_w3.tif").write_bytes(b"")                      # empty file
    (folder / "P1_A02_s2_w1.tif").write_bytes(b"this is not a tiff")    # unreadable file
    tifffile.imwrite(folder / "P1_A03_s1_w2.tif", raw["PH3"][:100, :100])  # different shape within the site
    with pytest.warns(UserWarning, match="4 of 6 site"):
        imgs = ip.io.read_images(folder, channels=["DNA", "PH3", "cellbody"])
    err = dict(zip(imgs.table["Metadata_Well"] + "_" + imgs.table["Metadata_Site"], imgs.table["Metadata_qc_error"]))
    assert "channel 'PH3': no file" in err["A01_2"]
    assert "P1_A02_s1_w3.tif" in err["A02_1"] and "empty" in err["A02_1"]
    assert "P1_A02_s2_w1.tif" in err["A02_2"] and "could not be read" in err["A02_2"]
    assert "different shapes" in err["A03_1"]
    assert err["A01_1"] == "" and err["A03_2"] == ""
    assert imgs.ok.tolist() == [True, False, False, False, False, True]
    # reading a flagged site raises an error that names the file
    with pytest.raises(ip.im.ImageReadError, match="P1_A02_s2_w1.tif"):
        imgs.read(3)
    # strict mode raises on the first problem
    with pytest.raises(FileNotFoundError, match=r"Well=A01, Site=2.*no file for channel 'PH3'"):
        ip.io.read_images(folder, channels=["DNA", "PH3", "cellbody"], on_error="raise")


def test_load_data_missing_file_is_named(tmp_path, raw):
    folder = write_plate(tmp_path / "plate", raw, wells=("A01",), sites=(1,))
    df = pd.DataFrame({"Metadata_Plate": ["P1", "P1"], "Metadata_Well": ["A01", "A02"], "Metadata_Site": ["1", "1"],
                       "FileName_DNA": ["P1_A01_s1_w1.tif", "does_not_exist.tif"],
                       "PathName_DNA": [str(folder), str(folder)]})
    with pytest.warns(UserWarning, match="does_not_exist.tif"):
        imgs = ip.io.read_images(df)
    assert "does_not_exist.tif" in imgs.table.loc[1, "Metadata_qc_error"]
    with pytest.raises(FileNotFoundError, match="does_not_exist.tif"):
        imgs.read(1)
    with pytest.raises(FileNotFoundError, match="does_not_exist.tif"):
        ip.io.read_images(df, on_error="raise")


def test_whole_request_errors(tmp_path, eh):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ip.io.read_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image file"):
        ip.io.read_images(tmp_path / "empty")
    with pytest.raises(ValueError, match="FileName_"):
        ip.io.read_images(pd.DataFrame({"Metadata_Well": ["A01"], "x": [1]}))
    with pytest.raises(ValueError, match="2 name"):
        ip.io.read_images(eh, channels=["DNA", "PH3"])
    with pytest.raises(KeyError, match="Mito"):
        ip.io.read_images(eh, channels=CH).read(0, ["Mito"])
