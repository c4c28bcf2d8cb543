# %% [markdown]
# # 6. UMAP, Leiden and scanpy's plots (sc.pl) on imgprof objects
#
# imgprof objects are plain `AnnData`, and `ip.tl.pca/neighbors/umap/leiden` write the keys scanpy
# expects, so every `sc.pl` function works on them unchanged. `ip.pl.umap` and `ip.pl.pca` are thin
# wrappers over `sc.pl.embedding` with profile defaults (colour by batch when nothing is asked);
# all `ip.pl` functions take scanpy's `show=`, `save=` and `return_fig=`.
#
# Real data: two batches of a CRISPRi Cell Painting plate (cmQTL), 768 wells, already normalized
# per batch; features with extreme values (`drop_outliers`, pycytominer's rule) are removed first,
# otherwise one of them carries almost all of the variance.

# %%
import tempfile
from pathlib import Path

import scanpy as sc

import imgprof as ip

adata = ip.datasets.cmqtl_crispri()
ip.pp.feature_select(adata, operation="drop_outliers", outlier_cutoff=100)  # no feature may carry most of the variance
ip.tl.pca(adata, n_comps=30)
ip.tl.integrate(adata, "harmony", batch_key="Metadata_Batch")
ip.tl.neighbors(adata, use_rep="X_harmony")   # exact neighbours (cosine) up to 10,000 wells
ip.tl.umap(adata)
ip.tl.leiden(adata, resolution=0.5)
adata

# %% [markdown]
# ## imgprof's plots
# Colour by batch by default; several colours give several panels, as in scanpy.

# %%
ip.pl.umap(adata, color=["Metadata_Batch", "Metadata_target_gene", "leiden"])

# %%
ip.pl.pca(adata, color="Metadata_Batch")   # axis labels carry the variance explained

# %% [markdown]
# ## scanpy's plots on the same object

# %%
sc.pl.umap(adata, color="Metadata_target_gene")

# %%
sc.pl.embedding(adata, basis="X_harmony", color="Metadata_Batch")   # any imgprof embedding

# %%
sc.pl.pca_variance_ratio(adata, n_pcs=30)

# %% [markdown]
# Features are `var_names`, so feature-level scanpy plots work too: which features separate the
# target genes?

# %%
sc.tl.rank_genes_groups(adata, groupby="Metadata_target_gene", method="t-test")
sc.pl.rank_genes_groups_dotplot(adata, n_genes=2)

# %% [markdown]
# ## Saving figures the scanpy way
# `save=True` or a suffix writes into `sc.settings.figdir` as `<plot><suffix>`; a path with a
# directory is used as given; `return_fig=True` hands back the figure.

# %%
sc.settings.figdir = Path(tempfile.mkdtemp())
ip.pl.umap(adata, color="leiden", save="_leiden.png", show=False)
sorted(p.name for p in sc.settings.figdir.iterdir())

# %%
fig = ip.pl.umap(adata, color="Metadata_target_gene", return_fig=True, show=False)
type(fig).__name__
