import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

import imgprof as ip
from imgprof.pl.plate import well_to_rowcol


def test_well_to_rowcol_parses_96_384_1536():
    r, c = well_to_rowcol(["A01", "P24", "AF48", "h12"])
    assert r.tolist() == [0, 15, 31, 7]
    assert c.tolist() == [0, 23, 47, 11]
    with pytest.raises(ValueError, match="'X-1'"):
        well_to_rowcol(["X-1"])


def test_plate_layout_places_values_in_their_wells(sim_wells):
    ax = ip.pl.plate_layout(sim_wells, "Metadata_Count_Cells", plate="plate_2", show=False)
    grid = ax.images[0].get_array()
    sub = sim_wells.obs[sim_wells.obs["Metadata_Plate"] == "plate_2"]
    r, c = well_to_rowcol(sub["Metadata_Well"])
    np.testing.assert_array_equal(np.asarray(grid)[r, c], sub["Metadata_Count_Cells"].to_numpy(dtype=float))
    # a well that holds no profile stays empty
    assert np.isnan(np.asarray(grid, dtype=float)).sum() == grid.size - len(sub)


def test_plate_layout_errors_name_the_culprit(sim_wells):
    with pytest.raises(KeyError, match="nope"):
        ip.pl.plate_layout(sim_wells, "nope", show=False)
    with pytest.raises(KeyError, match="plate_99"):
        ip.pl.plate_layout(sim_wells, "Metadata_Count_Cells", plate="plate_99", show=False)


def test_feature_group_summary_on_real_plate(lincs):
    df = ip.pl.feature_group_summary(lincs, groupby="channel", samples="Metadata_pert_type == 'trt'")
    assert df["n_features"].sum() == lincs.n_vars
    assert {"DNA", "RNA", "ER", "AGP", "Mito"} <= set(df.index)
    # scores are mean |z| over treated wells, so they must equal a direct computation for one channel
    mask = (lincs.obs["Metadata_pert_type"] == "trt").to_numpy()
    cols = (lincs.var["channel"] == "DNA").fillna(False).to_numpy(dtype=bool)
    expected = np.abs(lincs.X[mask][:, cols]).mean(axis=0).mean()
    assert df.loc["DNA", "score"] == pytest.approx(expected)
    with pytest.raises(KeyError, match="organelle"):
        ip.pl.feature_group_summary(lincs, groupby="organelle")


def test_embedding_wraps_scanpy(sim_wells, tmp_path):
    import scanpy as sc

    sc.pp.pca(sim_wells, n_comps=5)
    out = tmp_path / "emb.png"
    axes = ip.pl.embedding(sim_wells, "pca", color=["Metadata_Batch", "Metadata_moa"], show=False, save=str(out))
    assert len(axes) == 2 and out.stat().st_size > 0
    with pytest.raises(KeyError, match="X_umap"):
        ip.pl.embedding(sim_wells, "umap", color="Metadata_Batch", show=False)


def test_significance_scatters_draw_alike():
    """map_scatter and distance_volcano: grey then coloured points at −log10 p, the threshold line, top labels."""
    import anndata as ad
    import pandas as pd

    m = pd.DataFrame({"mean_average_precision": [0.9, 0.5, 0.1], "corrected_p_value": [0.0, 0.2, 0.04],
                      "name": ["a", "b", "c"]})
    ax = ip.pl.map_scatter(m, label="name", n_labels=2, show=False)
    grey, red = (c.get_offsets() for c in ax.collections)
    assert len(grey) == 1 and len(red) == 2
    np.testing.assert_allclose(red[:, 1], [300.0, -np.log10(0.04)])  # p = 0 clipped to 1e-300
    assert [t.get_text() for t in ax.texts] == ["a", "c"]
    assert ax.get_ylabel() == "−log10(corrected p value)"
    assert ax.lines[0].get_ydata()[0] == pytest.approx(-np.log10(0.05))

    a = ad.AnnData(np.zeros((1, 1)))
    a.uns["distance_test"] = pd.DataFrame({"distance": [3.0, 1.0, 2.0], "pvalue_adj": [0.01, 0.5, 0.02]},
                                          index=["P0", "P1", "P2"])
    ax = ip.pl.distance_volcano(a, n_labels=1, show=False)
    assert [len(c.get_offsets()) for c in ax.collections] == [1, 2]
    assert [t.get_text() for t in ax.texts] == ["P0"]  # the largest distance among the significant ones
    ax = ip.pl.distance_volcano(a, threshold=None, show=False)
    assert not ax.lines and not ax.texts and len(ax.collections[1].get_offsets()) == 0
