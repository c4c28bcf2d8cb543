"""ip.pl follows sc.pl (show/save/return_fig/ax, scanpy's save-suffix convention), and sc.pl works on imgprof keys."""

from __future__ import annotations

import inspect
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import scanpy as sc

import imgprof as ip

NON_PLOTS = {"feature_group_summary"}  # returns a table, draws nothing


@pytest.fixture(scope="module")
def cm():
    from threadpoolctl import threadpool_limits

    adata = ip.datasets.cmqtl_crispri()
    with threadpool_limits(1):
        ip.tl.pca(adata, n_comps=20)
        ip.tl.neighbors(adata)
        ip.tl.umap(adata)
        ip.tl.leiden(adata)
        ip.tl.integrate(adata, "harmony", batch_key="Metadata_Batch")
        ip.tl.integrate(adata, "combat", batch_key="Metadata_Batch")
    return adata


@pytest.fixture
def figdir(tmp_path):
    names = ("figdir", "file_format_figs", "plot_suffix", "autoshow")
    saved = {n: getattr(sc.settings, n) for n in names}
    sc.settings.figdir = tmp_path / "figs"
    sc.settings.file_format_figs = "png"
    sc.settings.plot_suffix = ""
    yield tmp_path / "figs"
    for n, v in saved.items():  # scanpy settings are class properties: restore by hand
        setattr(sc.settings, n, v)
    plt.close("all")


def test_every_plot_takes_scanpy_keywords():
    """General: applies to any plotting function added to ip.pl later."""
    for name in ip.pl.__all__:
        if name in NON_PLOTS:
            continue
        fn = getattr(ip.pl, name)
        params = inspect.signature(fn).parameters
        for kw in ("show", "save", "return_fig"):
            assert kw in params, f"ip.pl.{name} lacks {kw}="
            assert params[kw].kind is inspect.Parameter.KEYWORD_ONLY, f"ip.pl.{name}: {kw} should be keyword-only"
        assert params["show"].default is None and params["return_fig"].default is False, name


def test_savefig_or_show_conventions(figdir, monkeypatch):
    from imgprof.pl._utils import figure_path, savefig_or_show

    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(1))
    fig, ax = plt.subplots()
    assert savefig_or_show(fig, ax, show=True) is None and shown == [1]
    assert savefig_or_show(fig, ax, show=False) is ax
    assert savefig_or_show(fig, ax, show=False, return_fig=True) is fig
    sc.settings.autoshow = False
    assert savefig_or_show(fig, ax) is ax  # show=None follows sc.settings.autoshow
    # scanpy's naming: figdir / writekey + suffix . ext
    assert figure_path("umap", True) == figdir / "umap.png"
    assert figure_path("umap", "_batch.pdf") == figdir / "umap_batch.pdf"
    assert figure_path("umap", "_batch") == figdir / "umap_batch.png"
    assert figure_path("umap", "out/x.svg") == Path("out/x.svg")


def test_plate_layout_save_suffix_return_fig_and_ax(figdir, monkeypatch):
    wells = ip.datasets.simulate(n_plates=1, seed=0)
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(1))
    assert ip.pl.plate_layout(wells, "Metadata_Count_Cells") is None and shown  # shown by default, like sc.pl
    out = ip.pl.plate_layout(wells, "Metadata_Count_Cells", show=False, save="_counts.png")
    assert (figdir / "plate_layout_counts.png").stat().st_size > 1000
    assert out.__class__.__name__ == "Axes"
    fig = ip.pl.plate_layout(wells, "Metadata_Count_Cells", show=False, return_fig=True)
    assert isinstance(fig, matplotlib.figure.Figure)
    _, ax = plt.subplots()
    assert ip.pl.plate_layout(wells, "Metadata_Count_Cells", ax=ax, show=False) is ax


def test_ip_pl_umap_and_pca(cm, figdir):
    ax = ip.pl.umap(cm, color="Metadata_target_gene", show=False, save="_gene.png")
    assert (figdir / "umap_gene.png").exists()
    assert ax.get_title() == "Metadata_target_gene"
    assert len(ax.collections[0].get_offsets()) == cm.n_obs
    axes = ip.pl.umap(cm, color=["Metadata_Batch", "leiden"], show=False)
    assert [a.get_title() for a in axes] == ["Metadata_Batch", "leiden"]
    ax = ip.pl.pca(cm, show=False)  # default colour: Metadata_Batch
    assert ax.get_title() == "Metadata_Batch"
    ratio = cm.uns["pca"]["variance_ratio"]
    assert ax.get_xlabel() == f"PC1 ({100 * ratio[0]:.1f}%)"
    np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 0], cm.obsm["X_pca"][:, 0], rtol=1e-5)
    fig = ip.pl.pca(cm, color="leiden", components="2,3", return_fig=True, show=False)
    assert fig.axes[0].get_xlabel().startswith("PC2")
    with pytest.raises(KeyError, match="nope"):
        ip.pl.umap(cm, color="nope", show=False)
    bare = cm.copy()
    del bare.obsm["X_umap"]
    with pytest.raises(KeyError, match=r"ip.tl.umap"):
        ip.pl.umap(bare, show=False)


def test_scanpy_plotting_works_on_every_imgprof_key(cm, figdir):
    """sc.pl.* on each embedding and key imgprof writes (obsm, obs, uns, obsp, varm)."""
    embeddings = [k for k in cm.obsm if cm.obsm[k].shape[1] >= 2]
    assert {"X_pca", "X_umap", "X_harmony", "X_combat"} <= set(embeddings)
    for key in embeddings:
        ax = sc.pl.embedding(cm, basis=key, color=["Metadata_Batch"], show=False)
        assert len(ax.collections[0].get_offsets()) == cm.n_obs, key
    assert sc.pl.umap(cm, color="leiden", show=False) is not None
    assert sc.pl.pca(cm, color="Metadata_target_gene", show=False) is not None
    sc.pl.pca_variance_ratio(cm, show=False)
    sc.pl.violin(cm, keys=cm.var_names[0], groupby="Metadata_Batch", show=False)
    sc.pl.heatmap(cm, var_names=list(cm.var_names[:5]), groupby="leiden", show=False)
    sc.pl.dotplot(cm, var_names=list(cm.var_names[:5]), groupby="Metadata_target_gene", show=False)
    sc.tl.rank_genes_groups(cm, groupby="Metadata_target_gene", method="t-test")
    sc.pl.rank_genes_groups(cm, n_genes=3, show=False)
    sc.pl.umap(cm, color=cm.var_names[0], show=False)  # a feature as colour
    sc.pl.embedding(cm, basis="umap", color="Metadata_Batch", save="_sc.png", show=False)
    assert (figdir / "umap_sc.png").exists()
    plt.close("all")
