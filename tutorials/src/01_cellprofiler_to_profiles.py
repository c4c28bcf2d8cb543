# %% [markdown]
# # 1. From CellProfiler output to normalized profiles
#
# This notebook reads real CellProfiler measurements (the *ExampleHuman* images that ship with
# imgprof), shows how imgprof lays out single-cell data in `AnnData`, aggregates cells into a
# profile, and then runs the well-level steps (normalize, feature selection) on a multi-plate set.
# Everything runs on bundled data.

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
# ## Well-level processing on several plates
# One image is one well, which is too little to normalize against controls. The simulator
# produces single cells on four plates with DMSO controls and a known truth, so the same calls can
# be shown on a realistic layout.

# %%
sim_cells = ip.datasets.simulate(n_plates=4, n_perturbations=24, n_moa=4, n_features=120, level="single_cell", cells_per_well=20, seed=0)
wells = ip.pp.aggregate(sim_cells, by=["Metadata_Plate", "Metadata_Well"], operation="median")
ip.pp.normalize(wells, method="mad_robustize", controls="Metadata_control_type == 'negcon'", by="Metadata_Plate")
# drop_outliers: no feature may dominate the distances (ip.pp.normalize warns with a
# FeatureDominanceWarning when one carries > 10 % of the variance or values exceed ±500)
ip.pp.feature_select(wells, operation=["variance_threshold", "correlation_threshold", "drop_na_columns", "blocklist",
                                       "drop_outliers"], outlier_cutoff=100)
wells

# %% [markdown]
# Every step is recorded with its parameters:

# %%
ip.provenance(wells)[["function", "params", "shape"]]

# %%
ax = ip.pl.plate_layout(wells, "Metadata_Count_Cells", plate="plate_1", show=False)

# %% [markdown]
# ## Save and round-trip to pycytominer
# `to_pandas` returns the pycytominer-style table (metadata columns, then features).

# %%
out = Path(tempfile.mkdtemp())
wells.write_h5ad(out / "wells.h5ad")
df = ip.io.to_pandas(wells)
df.iloc[:3, :6]
