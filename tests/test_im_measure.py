"""cp-measure measurements vs CellProfiler's own ExampleHuman measurements (per-image medians)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import EH_CHANNELS

import imgprof as ip

pytest.importorskip("cp_measure")

CH = EH_CHANNELS
COMPARTMENTS = ("Nuclei", "Cells", "Cytoplasm")


@pytest.fixture(scope="module")
def labels(eh, site):
    return ip.im.segment_site(site, ip.im.CellProfilerSegmenter.from_cppipe(eh / "ExampleHuman.cppipe"))


@pytest.fixture(scope="module")
def shape_intensity(site, labels):
    # the pipeline measured intensity of DNA and PH3 (MeasureObjectIntensity) and size/shape with Zernikes
    return ip.im.measure_objects(site, labels, features=["AreaShape", "Intensity"], channels=["DNA", "PH3"])


def compare_medians(eh, ours: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for comp in COMPARTMENTS:
        cp = pd.read_csv(eh / f"{comp}.csv.gz")
        for col in cp.columns:
            if not col.startswith(("AreaShape_", "Intensity_")):
                continue
            name = f"{comp}_{col}"
            assert name in ours, f"{name} (CellProfiler) missing from our measurements"
            a, b = float(ours[name].median()), float(cp[col].median())
            if col == "AreaShape_Orientation":
                # CellProfiler 4.0.6 reported radians; cp-measure (like CellProfiler >= 4.1) reports degrees
                a = np.deg2rad(a)
                iqr = float(cp[col].quantile(0.75) - cp[col].quantile(0.25))
                rel = abs(a - b) / iqr
            else:
                rel = abs(a - b) / abs(b) if b != 0 else abs(a - b)
            rows.append((name, a, b, rel))
    return pd.DataFrame(rows, columns=["feature", "imgprof", "cellprofiler", "rel_diff"])


def test_shape_and_intensity_medians_within_10_percent(eh, shape_intensity):
    cmp = compare_medians(eh, shape_intensity)
    # CellProfiler wrote 54 AreaShape (24 + 30 Zernike) and 15 Intensity x 2 channels per compartment
    assert len(cmp) == 3 * (54 + 15 * 2)
    bad = cmp[cmp["rel_diff"] > 0.10]
    assert bad.empty, bad.to_string()
    # most are far closer than 10 %
    assert (cmp["rel_diff"] < 0.01).mean() > 0.9


def test_object_numbers_and_centroids(shape_intensity, labels, eh):
    df = shape_intensity
    assert df["Metadata_ObjectNumber"].tolist() == list(range(1, int(labels["Cells"].max()) + 1))
    cp = pd.read_csv(eh / "Cells.csv.gz")
    np.testing.assert_allclose(np.median(df["Metadata_Cells_Location_Center_X"]), cp["Location_Center_X"].median(), rtol=0.02)
    assert (df["Metadata_Cells_Parent_Nuclei"] == df["Metadata_ObjectNumber"]).all()
    # centroid features exported like CellProfiler's Location_Center_X
    np.testing.assert_array_equal(df["Cells_Location_Center_X"], df["Metadata_Cells_Location_Center_X"])


def test_feature_names_parse_like_cellprofiler(shape_intensity):
    var = ip._core.anatomy.parse_feature_names([c for c in shape_intensity.columns if not c.startswith("Metadata_")])
    assert set(var["compartment"]) == set(COMPARTMENTS)
    assert var.loc["Nuclei_Intensity_MeanIntensity_PH3", "channel"] == "PH3"
    assert var.loc["Cells_Location_CenterMassIntensity_X_DNA", "channel"] == "DNA"
    assert set(var["feature_group"]) == {"AreaShape", "Intensity", "Location"}


def test_all_feature_groups_small(site, labels):
    # a crop with a few dozen cells keeps this quick; the full image runs in test_im_pipeline
    win = (slice(0, 200), slice(0, 200))
    imgs = {k: v[win] for k, v in site.items()}
    labs = {k: v[win] for k, v in labels.items()}
    df = ip.im.measure_objects(imgs, labs, scale_max=255, texture_scales=(3, 5))
    names = [c for c in df.columns if not c.startswith("Metadata_")]
    var = ip._core.anatomy.parse_feature_names(names)
    for comp in COMPARTMENTS:
        groups = set(var.loc[var["compartment"] == comp, "feature_group"])
        assert {"AreaShape", "Intensity", "Texture", "Granularity", "RadialDistribution", "Correlation"} <= groups
    assert {"Cells_Neighbors_NumberOfNeighbors_Adjacent", "Cells_Neighbors_PercentTouching_5",
            "Nuclei_Neighbors_FirstClosestDistance_1"} <= set(names)
    # CellProfiler's naming: Texture_<feature>_<channel>_<scale>_<direction>_<levels>, Granularity_<n>_<channel>
    for n in ("Cells_Texture_Contrast_cellbody_5_03_256", "Nuclei_Granularity_16_DNA",
              "Cytoplasm_RadialDistribution_FracAtD_PH3_4of4", "Cells_Correlation_Correlation_DNA_PH3",
              "Cells_Correlation_Manders_PH3_DNA", "Cells_Correlation_Costes_DNA_cellbody",
              "Cells_Correlation_RWC_cellbody_PH3"):
        assert n in names, n
    assert var.loc["Cells_Texture_Contrast_cellbody_5_03_256", "parameters"] == "5_03_256"
    assert tuple(var.loc["Cells_Correlation_Correlation_DNA_PH3", ["channel", "channel2"]]) == ("DNA", "PH3")
    # the correlation of a channel with itself-like signals is in [-1, 1]
    corr = df["Cells_Correlation_Correlation_DNA_cellbody"].dropna()
    assert corr.between(-1, 1).all() and len(corr) > 0.9 * len(df)


def test_neighbors_closest_objects_are_other_objects(site, labels):
    df = ip.im.measure_objects(site, labels, features=["Neighbors"], neighbors={"Nuclei": "adjacent"})
    from scipy import ndimage as ndi

    ids = df["Metadata_ObjectNumber"].to_numpy()
    cen = np.asarray(ndi.center_of_mass(np.ones(labels["Nuclei"].shape), labels["Nuclei"], ids))
    d = np.linalg.norm(cen[:, None] - cen[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    expected = ids[np.argmin(d, axis=1)]
    first = df["Nuclei_Neighbors_FirstClosestObjectNumber_Adjacent"].to_numpy()
    assert (first != ids).all()
    assert (first == expected).mean() > 0.99
    np.testing.assert_allclose(df["Nuclei_Neighbors_FirstClosestDistance_Adjacent"], d.min(axis=1), rtol=1e-6)


def test_measure_errors(site, labels):
    with pytest.raises(ValueError, match="Shape"):
        ip.im.measure_objects(site, labels, features=["Shape"])
    with pytest.raises(KeyError, match="Mito"):
        ip.im.measure_objects(site, labels, channels=["Mito"], features=["Intensity"])
    with pytest.raises(ValueError, match="one shape"):
        ip.im.measure_objects({"DNA": site["DNA"][:100]}, labels, features=["Intensity"])
    with pytest.raises(TypeError, match="integers"):
        ip.im.measure_objects(site, {"Cells": labels["Cells"].astype(float)}, features=["AreaShape"])


def test_feature_groups_are_the_measurement_registry():
    from imgprof.im.measure import FEATURE_GROUPS, MEASUREMENTS

    assert MEASUREMENTS.names() == FEATURE_GROUPS
    assert {e["scope"] for e in MEASUREMENTS.entries()} <= {"objects", "channel", "channel_pair", "neighbourhood"}
    with pytest.raises(ValueError, match="Shape"):
        ip.im.measure_objects({"DNA": np.zeros((8, 8))}, {"Cells": np.zeros((8, 8), np.int32)}, features=["Shape"])
