"""ip.im.profile_images: images → single-cell AnnData (real ExampleHuman data), bad sites, parallel sites."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import EH_CHANNELS

import imgprof as ip

pytest.importorskip("cp_measure")

CH = EH_CHANNELS


@pytest.fixture(scope="module")
def full(eh):  # ~20-30 s: used by the two tests marked slow
    """Every feature group on the full ExampleHuman image (the one full-set run of the suite)."""
    return ip.im.profile_images(eh, channels=CH, segmenter=eh / "ExampleHuman.cppipe", n_jobs=1)


@pytest.mark.slow
def test_full_profile_matches_cellprofiler_layout(full, eh):
    cp = ip.io.read_cellprofiler(eh)
    assert abs(full.n_obs - cp.n_obs) <= 0.1 * cp.n_obs
    groups = set(full.var["feature_group"])
    assert {"AreaShape", "Intensity", "Texture", "Granularity", "RadialDistribution", "Correlation", "Neighbors"} <= groups
    assert set(full.var["compartment"]) == {"Nuclei", "Cells", "Cytoplasm"}
    assert set(full.var["channel"].dropna()) == {"DNA", "PH3", "cellbody"}
    # every CellProfiler column is there, except relationship counts and the 2-D Z centroid
    missing = set(cp.var_names) - set(full.var_names)
    assert all(("_Children_" in m) or m.endswith("Location_Center_Z") for m in missing), sorted(missing)
    assert len(missing) <= 6
    # anatomy of our names equals the anatomy the reader parses for CellProfiler's names
    shared = sorted(set(cp.var_names) & set(full.var_names))
    cols = ["compartment", "feature_group", "feature", "channel", "parameters"]
    pd.testing.assert_frame_equal(full.var.loc[shared, cols].astype(object), cp.var.loc[shared, cols].astype(object))
    # the two can be stacked for joint analysis
    import anndata as ad

    both = ad.concat([cp[:, shared], full[:, shared]], join="inner", label="source", index_unique="-")
    assert both.shape == (cp.n_obs + full.n_obs, len(shared))


@pytest.mark.slow
def test_full_profile_obs_and_report(full):
    obs = full.obs
    for c in ("Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ImageNumber", "Metadata_ObjectNumber",
              "Metadata_Cells_Location_Center_X", "Metadata_Nuclei_Location_Center_Y", "Metadata_FileName_DNA",
              "Metadata_qc_PowerLogLogSlope_DNA", "Metadata_qc_pass"):
        assert c in obs, c
    assert obs["Metadata_ObjectNumber"].is_unique
    sites = full.uns["imgprof"]["sites"]
    assert sites.loc["0", "n_objects"] == full.n_obs and sites.loc["0", "error"] == ""
    assert sites.loc["0", "seconds_segmentation"] > 0 and sites.loc["0", "seconds_measure.Texture"] > 0
    prov = ip.provenance(full)
    assert prov["function"].iloc[-1] == "im.profile_images"
    assert prov["extra"].iloc[-1]["n_cells"] == full.n_obs
    assert ip.io.to_pandas(full).shape == (full.n_obs, full.obs.shape[1] + full.n_vars)
    frac_nan = np.isnan(np.asarray(full.X)).mean()
    assert frac_nan < 0.05


def write_bad_plate(folder, eh):
    raw = {name: tifffile.imread(eh / f"AS_09125_050116030001_D03f00d{t}.tif") for t, name in CH.items()}
    folder.mkdir()
    quads = [(slice(0, 256), slice(0, 256)), (slice(0, 256), slice(256, 512)),
             (slice(256, 512), slice(0, 256)), (slice(256, 512), slice(256, 512))]
    for s, q in enumerate(quads + quads[:3], start=1):
        for c, name in enumerate(("DNA", "PH3", "cellbody"), start=1):
            tifffile.imwrite(folder / f"PB_A01_s{s}_w{c}.tif", raw[name][q])
    (folder / "PB_A01_s5_w2.tif").unlink()                                           # missing channel
    (folder / "PB_A01_s6_w3.tif").write_bytes(b"")                                   # empty file
    tifffile.imwrite(folder / "PB_A01_s7_w1.tif", np.zeros((256, 256), np.uint8))     # blank image
    return folder


def test_bad_sites_reported_and_skipped_in_parallel(tmp_path, eh):
    folder = write_bad_plate(tmp_path / "plate", eh)
    with pytest.warns(UserWarning) as rec:
        par = ip.im.profile_images(folder, channels=["DNA", "PH3", "cellbody"], nuclei_channel="DNA",
                                   cells_channel="cellbody", features=["AreaShape", "Intensity"], n_jobs=2,
                                   scheduler="processes")
    text = " | ".join(str(w.message) for w in rec)
    assert "2 of 7 site(s) have problems" in text and "PB_A01_s6_w3.tif" in text
    assert "1 site(s) yielded no object" in text
    sites = par.uns["imgprof"]["sites"]
    assert (sites["n_objects"].iloc[:4] > 30).all() and (sites["error"].iloc[:4] == "").all()
    assert "no file" in sites.loc["4", "error"] and "empty" in sites.loc["5", "error"]
    assert sites.loc["6", "n_objects"] == 0
    assert set(par.obs["Metadata_Site"]) == {"1", "2", "3", "4"}
    # the blank site is flagged by QC and kept in the report
    assert sites.loc["6", "error"] == ""
    # the same plate processed synchronously gives identical profiles
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = ip.im.profile_images(folder, channels=["DNA", "PH3", "cellbody"], nuclei_channel="DNA",
                                   cells_channel="cellbody", features=["AreaShape", "Intensity"], n_jobs=1)
    np.testing.assert_array_equal(np.asarray(par.X), np.asarray(seq.X))
    assert list(par.var_names) == list(seq.var_names)
    # per site, the cells of a quadrant equal what profiling that quadrant alone gives
    assert (par.obs.groupby("Metadata_Site", observed=True).size() > 30).all()


@pytest.mark.filterwarnings("ignore:read_images:UserWarning", "ignore:profile_images. 1 site:UserWarning")
def test_site_failing_during_processing_does_not_abort(tmp_path, eh):
    folder = write_bad_plate(tmp_path / "plate", eh)

    def flaky(images):
        if images["DNA"].mean() > 0.066:  # one specific real quadrant
            raise RuntimeError("segmentation exploded")
        return ip.im.CellProfilerSegmenter(nuclei_channel="DNA", cells_channel="cellbody")(images)

    means = [ip.im.read_image(folder / f"PB_A01_s{s}_w1.tif").mean() / 255 for s in range(1, 5)]
    assert sum(m > 0.066 for m in means) == 1
    with pytest.warns(UserWarning, match="segmentation exploded"):
        ad = ip.im.profile_images(folder, channels=["DNA", "PH3", "cellbody"], segmenter=flaky,
                                  features=["AreaShape"], n_jobs=1)
    sites = ad.uns["imgprof"]["sites"]
    assert (sites["error"].str.contains("RuntimeError: segmentation exploded")).sum() == 1
    assert ad.obs["Metadata_Site"].nunique() == 3


def test_featurizer_only_and_alongside(eh):
    emb_only = ip.im.profile_images(eh, channels=CH, nuclei_channel="DNA", cells_channel="cellbody", features=None,
                                    featurizer=ip.im.intensity_histogram_featurizer, featurizer_key="X_hist",
                                    crop_kwargs={"size": 32}, qc=False, n_jobs=1)
    assert emb_only.n_vars == 30 and emb_only.var_names[0] == "hist_0"
    assert set(emb_only.var["source"]) == {"embedding"}
    both = ip.im.profile_images(eh, channels=CH, nuclei_channel="DNA", cells_channel="cellbody",
                                features=["Intensity"], featurizer=ip.im.intensity_histogram_featurizer,
                                crop_kwargs={"size": 32}, qc=False, n_jobs=1)
    np.testing.assert_array_equal(both.obsm["X_embedding"], np.asarray(emb_only.X))


def test_precomputed_labels_from_load_data(tmp_path, eh):
    imgs = ip.io.read_images(eh, channels=CH)
    labels = ip.im.segment_site(imgs.read(0), nuclei_channel="DNA", cells_channel="cellbody")
    for name in ("Nuclei", "Cells"):
        tifffile.imwrite(tmp_path / f"{name}.tif", labels[name].astype(np.uint16))
    table = imgs.table.drop(columns=["Metadata_qc_error"]).assign(
        ObjectsFileName_Nuclei="Nuclei.tif", ObjectsPathName_Nuclei=str(tmp_path),
        ObjectsFileName_Cells="Cells.tif", ObjectsPathName_Cells=str(tmp_path))
    ad = ip.im.profile_images(table, features=["AreaShape"], qc=False, n_jobs=1)
    assert ad.n_obs == labels["Cells"].max()
    assert ip.provenance(ad)["params"].iloc[-1]["segmenter"] == "ObjectsFileName labels"


def test_output_written_and_errors(tmp_path, eh):
    out = tmp_path / "cells.parquet"
    ad = ip.im.profile_images(eh, channels=CH, nuclei_channel="DNA", cells_channel="cellbody",
                              features=["AreaShape"], qc=False, n_jobs=1, output=out)
    back = ip.io.read_profiles(out)
    assert back.shape == ad.shape
    with pytest.raises(ValueError, match="nuclei_channel"):
        ip.im.profile_images(eh, channels={"0": "A", "1": "B", "2": "C"}, features=["AreaShape"])
    with pytest.raises(ValueError, match="nothing to compute"):
        ip.im.profile_images(eh, channels=CH, nuclei_channel="DNA", cells_channel="cellbody", features=None)
    with pytest.raises(ValueError, match="not both"):
        ip.im.profile_images(eh, channels=CH, segmenter=lambda x: x, nuclei_channel="DNA")


def test_illumination_in_the_pipeline(tmp_path, eh):
    imgs = ip.io.read_images(eh, channels=CH)
    illum = ip.im.compute_illumination(imgs, method="polynomial", rescale="median")
    ip.im.save_illumination(illum, tmp_path / "illum")
    kw = dict(channels=CH, nuclei_channel="DNA", cells_channel="cellbody", features=["Intensity"],
              measure_channels=["PH3"], qc=False, n_jobs=1)
    plain = ip.im.profile_images(eh, **kw)
    saved = ip.im.profile_images(eh, illumination=tmp_path / "illum", **kw)
    computed = ip.im.profile_images(eh, illumination="compute", illumination_kwargs={"method": "polynomial"}, **kw)
    np.testing.assert_allclose(np.asarray(saved.X), np.asarray(computed.X), rtol=1e-6)
    # corrected images are segmented and measured: intensities change, but only by the (median-1) function
    col = "Cells_Intensity_MeanIntensity_PH3"
    a, b = np.median(plain[:, col].X), np.median(saved[:, col].X)
    assert a != b and abs(a - b) < 0.2 * a
    assert abs(saved.n_obs - plain.n_obs) <= 0.1 * plain.n_obs
    assert ip.provenance(saved)["params"].iloc[-1]["illumination"] is True
