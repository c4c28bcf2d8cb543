# %% [markdown]
# # 5. Annotate with a plate map, then build consensus signatures
#
# Profiles straight out of CellProfiler know only their plate and well. The plate map says what
# was in each well; `ip.pp.annotate` joins it (pycytominer's `annotate`), and `ip.pp.consensus`
# collapses replicate wells into one signature per perturbation (median or MODZ, pycytominer's
# `consensus`). Real data throughout: the bundled LINCS Cell Painting plate (A549, 384 wells).
#
# Open this notebook with `pip install "imgprof[tutorials]"` then `jupyter lab tutorials/`.

# %%
import pandas as pd

import imgprof as ip

full = ip.datasets.lincs_plate()
full

# %% [markdown]
# ## A plate map as it comes from a layout file
# One row per well, plain column names (no `Metadata_` prefix), the well in `well_position`.
# We take it from the published annotations of this plate so that the result can be checked.

# %%
platemap = full.obs[["Metadata_Well", "Metadata_broad_sample", "Metadata_mmoles_per_liter", "Metadata_moa",
                     "Metadata_pert_type"]].rename(columns=lambda c: c.removeprefix("Metadata_"))
platemap = platemap.rename(columns={"Well": "well_position"}).reset_index(drop=True)
platemap.head()

# %% [markdown]
# ## Profiles that only know plate and well

# %%
bare = full.copy()
bare.obs = bare.obs[["Metadata_Plate", "Metadata_Well"]].copy()
bare.obs.head(3)

# %% [markdown]
# `annotate` prefixes the plate-map columns with `Metadata_`, joins on well position, and refuses
# wells that the map does not cover (``unmatched="raise"``) instead of silently leaving NaN.

# %%
ip.pp.annotate(bare, platemap, join_on=["Metadata_well_position", "Metadata_Well"])
bare.obs.head(3)

# %%
same = (bare.obs["Metadata_broad_sample"].astype(str).to_numpy() == full.obs["Metadata_broad_sample"].astype(str).to_numpy())
print(f"wells whose compound matches the published annotation: {same.mean():.0%}")

# %% [markdown]
# ## Consensus signatures
# One signature per compound, pooling its doses (this plate has one well per compound-dose).
# MODZ weights each replicate by its mean Spearman correlation with the others, so a replicate
# that disagrees counts less; `Metadata_Replicate_Count` says how many wells went in.

# %%
treated = bare[bare.obs["Metadata_pert_type"] == "trt"].copy()
sig = ip.pp.consensus(treated, by="Metadata_broad_sample", operation="modz")
sig

# %%
sig.obs[["Metadata_broad_sample", "Metadata_Replicate_Count", "Metadata_moa"]].head()

# %% [markdown]
# Metadata that differ between the pooled wells (the dose) are dropped; constant ones (the MOA)
# are kept. The provenance log records every step:

# %%
ip.provenance(sig)[["function", "shape"]]

# %% [markdown]
# ## Do signatures of the same mechanism look alike?
# mAP of each MOA among the consensus signatures (multi-MOA compounds count for each of their MOAs).

# %%
cons = ip.metrics.phenotypic_consistency(sig, "Metadata_moa", multilabel_sep="|")
cons.sort_values("mean_average_precision", ascending=False).head()

# %%
ax = ip.pl.map_scatter(cons, label="Metadata_moa", n_labels=3)
