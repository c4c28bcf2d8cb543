# %% [markdown]
# # 1. From CellProfiler output to normalized profiles
#
# This notebook reads real CellProfiler measurements (the *ExampleHuman* images that ship with
# imgprof), shows how imgprof lays out single-cell data in `AnnData`, aggregates cells into a
# profile, and then runs the well-level steps (normalize, feature selection) on a multi-plate set.
# Everything runs on bundled real data.

# %%
import tempfile
from pathlib import Path

import imgprof as ip

# %% [markdown]
# ## Read CellProfiler's per-compartment tables
# `read_cellprofiler` joins `Image`, `Cells`, `Cytoplasm` and `Nuclei` on `ImageNumber`/`ObjectNumber`
# into one single-cell AnnData. Folder of CSVs or a SQLite file: same call.

# %%
folder = ip.datasets.examplehuman_images_path()
cells = ip.io.read_cellprofiler(folder)
cells

# %% [markdown]
# `.obs` holds metadata exactly as CellProfiler named it; `.var` holds each feature's anatomy
# parsed from its name.

# %%
cells.obs.iloc[:3, :8]

# %%
cells.var[["compartment", "feature_group", "feature", "channel", "parameters"]].head(10)

# %%
cells.var.groupby(["compartment", "feature_group"], observed=True).size().unstack(fill_value=0)

# %% [markdown]
# ## Single-cell QC and aggregation
# QC writes flags into `.obs` and never drops a cell by itself.

# %%
ip.pp.qc(cells, by="Metadata_ImageNumber")  # this example has one image and no plate column
[c for c in cells.obs.columns if c.startswith("Metadata_qc")]

# %%
image_profile = ip.pp.aggregate(cells, by=["Metadata_ImageNumber"], operation="median")
image_profile

# %% [markdown]
# ## Well-level processing on two real plates
# One image is one well, which is too little to normalize against controls. The same calls on a
# real layout: two batches of a CRISPRi Cell Painting plate (cmQTL, bundled), 384 wells each, with
# 104 `CONTROL` wells per batch. Normalize each batch against its own controls, then select features.

# %%
wells = ip.datasets.cmqtl_crispri()
ip.pp.normalize(wells, method="mad_robustize", controls="Metadata_target_gene == 'CONTROL'", by="Metadata_Batch")
ip.pp.feature_select(wells, operation=["variance_threshold", "correlation_threshold", "drop_na_columns", "drop_outliers"],
                    outlier_cutoff=100)  # no feature may dominate: normalize warns (FeatureDominanceWarning) above 10 % of the variance
wells

# %% [markdown]
# Every step is recorded with its parameters:

# %%
ip.provenance(wells)[["function", "params", "shape"]]

# %%
ip.pl.plate_layout(wells, "Metadata_Count_Cells", plate_key="Metadata_Batch")   # cells per well, first batch

# %% [markdown]
# ## Save and round-trip to pycytominer
# `to_pandas` returns the pycytominer-style table (metadata columns, then features).

# %%
out = Path(tempfile.mkdtemp())
wells.write_h5ad(out / "wells.h5ad")
df = ip.io.to_pandas(wells)
df.iloc[:3, :6]
