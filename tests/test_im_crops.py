"""Single-cell crops and pluggable featurizers on the real ExampleHuman cells."""

from __future__ import annotations

import numpy as np
import pytest

import imgprof as ip

CH = {"0": "DNA", "1": "PH3", "2": "cellbody"}


@pytest.fixture(scope="module")
def site():
    return ip.io.read_images(ip.datasets.examplehuman_images_path(), channels=CH).read(0)


@pytest.fixture(scope="module")
def labels(site):
    return ip.im.segment_site(site, nuclei_channel="DNA", cells_channel="cellbody")


def test_crops_are_centred_and_padded(site, labels):
    from scipy import ndimage as ndi

    crops, ids = ip.im.extract_crops(site, labels["Cells"], size=48, channels=["DNA", "cellbody"])
    n = int(labels["Cells"].max())
    assert crops.shape == (n, 2, 48, 48) and crops.dtype == np.float32
    assert ids.tolist() == list(range(1, n + 1))
    cen = np.rint(ndi.center_of_mass(np.ones(labels["Cells"].shape), labels["Cells"], ids)).astype(int)
    for k in (0, n // 2, n - 1):
        cy, cx = cen[k]
        assert crops[k, 0, 24, 24] == site["DNA"][cy, cx]
        assert crops[k, 1, 24, 20] == site["cellbody"][cy, cx - 4]
    # an object near the border gets zero padding outside the image
    k = int(np.argmin(cen[:, 0]))
    top = cen[k, 0] - 24
    assert top < 0 and np.all(crops[k, :, : -top, :] == 0)


def test_mask_modes(site, labels):
    lab = labels["Cells"]
    full, _ = ip.im.extract_crops(site, lab, size=64, channels=["cellbody"], object_numbers=[10])
    obj, _ = ip.im.extract_crops(site, lab, size=64, channels=["cellbody"], object_numbers=[10], mask="object")
    oth, _ = ip.im.extract_crops(site, lab, size=64, channels=["cellbody"], object_numbers=[10], mask="others")
    assert obj.sum() < oth.sum() <= full.sum()
    assert (obj > 0).sum() <= (lab == 10).sum()
    with pytest.raises(ValueError, match="not present"):
        ip.im.extract_crops(site, lab, object_numbers=[99999])


def test_featurize_site_batches_consistently(site, labels):
    emb, ids = ip.im.featurize_site(site, labels["Cells"], ip.im.intensity_histogram_featurizer, size=32,
                                    batch_size=50)
    emb1, _ = ip.im.featurize_site(site, labels["Cells"], ip.im.intensity_histogram_featurizer, size=32,
                                   batch_size=1000)
    np.testing.assert_array_equal(emb, emb1)
    assert emb.shape == (len(ids), 3 * 10)
    # with pixels outside the cell masked, the crop mean is the cell's integrated intensity / crop area
    emb, ids = ip.im.featurize_site(site, labels["Cells"], ip.im.intensity_histogram_featurizer, size=64,
                                    mask="object")
    integrated = np.array([site["DNA"][labels["Cells"] == i].sum() for i in ids]) / 64**2
    fits = np.array([np.ptp(np.nonzero(labels["Cells"] == i)[0]) < 60 for i in ids])
    np.testing.assert_allclose(emb[fits, 0], integrated[fits], rtol=1e-4)


def test_torch_featurizer(site, labels):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    emb, ids = ip.im.featurize_site(site, labels["Cells"], ip.im.TorchFeaturizer(net, batch_size=64), size=32)
    assert emb.shape == (len(ids), 8) and np.isfinite(emb).all()


def test_bad_featurizer_output_is_rejected(site, labels):
    with pytest.raises(ValueError, match="expected \\(n_crops, d\\)"):
        ip.im.featurize_site(site, labels["Cells"], lambda c: np.zeros((3, 4)), size=16)
    with pytest.raises(TypeError, match="callable"):
        ip.im.featurize_site(site, labels["Cells"], "resnet50", size=16)
