# %% [markdown]
# # 4. Morphology vs transcriptomics (and proteomics): what the bundled data can and cannot show
#
# Image-based profiles are most informative next to other readouts. This notebook puts one
# **LINCS Cell Painting plate** (A549 cells, 48 h) next to one **L1000 plate** (A375 cells, 24 h,
# kinase inhibitors) and the **nELISA** secretome proteomics set (A549, 24 h), using `ip.mm`.
#
# **Read this first — what these data allow.**
#
# * The Cell Painting and L1000 plates share **no treatment compound** (only the DMSO vehicle) and
#   use **different cell lines** and time points. Compound-level comparison or compound-level
#   cross-modal retrieval is therefore **impossible** here; we show the join failing loudly.
# * They overlap at **mechanism level**: after mapping L1000 compound names through the Drug
#   Repurposing Hub, **8 MOAs** and **15 targets** occur in both. On the Cell Painting plate those
#   8 MOAs are covered by only **6 compounds**, and the 15 targets collapse to **6 distinct pairs of
#   profiles** (several targets are annotated to the same compound). Any MOA-level comparison rests on
#   a handful of compounds in different cells: it demonstrates the workflow, it cannot establish
#   which modality "captures" a mechanism better.
# * nELISA shares **2 compounds** with the Cell Painting plate (same cell line, other time point)
#   and **6** with the L1000 plate (by name; 5 by compound id).
#
# The numbers quoted in the text are computed below; the tests in `tests/test_mm_*.py` recompute the
# overlaps independently with plain pandas.

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import imgprof as ip

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="IProgress not found")
pd.set_option("display.width", 160)
pd.set_option("display.max_colwidth", 60)

# %% [markdown]
# ## The three data sets

# %%
morph = ip.datasets.lincs_plate()      # Cell Painting, MAD-robustized per plate, feature-selected
expr = ip.datasets.l1000_plate()       # L1000 level 3 (log2 expression of 978 landmark genes)
prot = ip.datasets.nelisa()            # nELISA, 191 secreted proteins, 4 plates
hub = ip.datasets.repurposing_hub()    # pert_iname -> moa, target ('|'-separated)
pd.DataFrame({
    "assay": ["Cell Painting", "L1000", "nELISA"],
    "cells": [morph.obs["Metadata_cell_id"].iloc[0], expr.obs["cell_id"].iloc[0], "A549"],
    "time": ["48 h", f"{expr.obs['pert_time'].iloc[0]} h", "24 h"],
    "profiles x features": [str(morph.shape), str(expr.shape), str(prot.shape)],
})

# %% [markdown]
# The L1000 matrix is level 3 (expression). CMap's level 4 is a robust z-score against the plate
# population; `ip.pp.normalize` with `mad_robustize` and no control selection does exactly that.

# %%
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # one probe has zero MAD on this plate; reported by pp.normalize
    ip.pp.normalize(expr, method="mad_robustize")

# %% [markdown]
# ## Doses: explicit units, explicit recoding
#
# LINCS stores doses in `Metadata_mmoles_per_liter`. Despite the name, the values are the final
# concentration in **µM**: they are the stock-plate concentrations in mM, and stocks are diluted
# 1:1000 into the wells. The companion column `Metadata_mg_per_ml` confirms the reading: mg/ml
# divided by the value gives a molecular weight in the drug-like range only if the value is in mmol/l.

# %%
t = morph.obs[morph.obs["Metadata_mmoles_per_liter"] > 0]
mw = t["Metadata_mg_per_ml"] / t["Metadata_mmoles_per_liter"] * 1000
print(f"implied molecular weight (g/mol) if the stock is in mM: median {mw.median():.0f}, range {mw.min():.0f}-{mw.max():.0f}")

# %% [markdown]
# `ip.mm.recode_dose` converts to µM (the unit is always given, never guessed) and snaps each dose
# to the standard 6-point series (0.04, 0.12, 0.37, 1.11, 3.33, 10 µM) when it lies within 5 %.
# Doses further away are **not** silently snapped: they are marked `off_series`.

# %%
ip.mm.recode_dose(morph, "Metadata_mmoles_per_liter", "uM")
ip.mm.recode_dose(expr, "pert_dose", "pert_dose_unit")   # L1000 gives one unit per row ('um', -666 for DMSO)
pd.concat({
    "Cell Painting": morph.obs["Metadata_dose_recode_status"].value_counts(),
    "L1000": expr.obs["Metadata_dose_recode_status"].value_counts(),
}, axis=1).fillna(0).astype(int)

# %%
off = morph.obs[morph.obs["Metadata_dose_recode_status"] == "off_series"]
off.groupby("Metadata_broad_sample")["Metadata_mmoles_per_liter"].agg(lambda s: sorted(s.round(4).unique()))

# %% [markdown]
# One compound was plated on a shifted series (0.004–1 µM, a factor 10/9 off the standard points) and
# two compounds at 20 µM; they stay out of dose-matched joins. A wrong unit is caught:

# %%
try:
    ip.mm.recode_dose(morph, "Metadata_mmoles_per_liter", "nM", copy=True, overwrite=True)
except ip.mm.DoseUnitError as e:
    print("DoseUnitError:", e)

# %% [markdown]
# ## Compound level: no overlap, and the join says so

# %%
try:
    ip.mm.join(morph, expr, on=("Metadata_pert_id", "pert_id"))
except ip.mm.JoinError as e:
    print("JoinError:", e)

# %%
rep = ip.mm.match_keys(morph, expr, on=("Metadata_broad_sample", "pert_id"), names="broad_id")
print("compound ids shared:", rep.matched)

# %% [markdown]
# ## Mechanism level: annotate L1000 through the Repurposing Hub
#
# L1000 has no MOA column. `ip.mm.map_annotations` maps `pert_iname` to the hub's `moa` and `target` with
# explicit name normalisation (case and whitespace ignored) and records every name it could not map.

# %%
ip.mm.map_annotations(expr, hub, on="pert_iname", columns=["moa", "target"])
ann = expr.uns["mm_annotate"]
trt = ann[ann["name"] != "DMSO"]
print(f"{int(trt['matched'].sum())} of {len(trt)} L1000 treatment names found in the hub")
print("matched only after case folding:", ann.loc[ann["note"] != "", ["name", "table_name"]].values.tolist())
print("not in the hub:", sorted(trt.loc[~trt["matched"], "name"]))

# %%
rep_moa = ip.mm.match_keys(morph, expr, on={"moa": ("Metadata_moa", "moa")}, sep="|")
rep_moa

# %%
rep_moa.table.query("status == 'matched'")[["moa", "n_morph", "n_expr", "note"]]

# %%
rep_tgt = ip.mm.match_keys(morph, expr, on={"target": ("Metadata_target", "target")}, sep="|")
print(rep_tgt.summary["n_matched"], "shared targets:", rep_tgt.matched)
print("keys built from the very same wells:", rep_tgt.summary["keys_with_identical_rows"])

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
ip.pl.mm_join_report(rep_moa, ax=axes[0], show=False)
ip.pl.mm_join_report(rep_tgt, ax=axes[1], show=False)
fig.tight_layout()

# %% [markdown]
# ## Per-modality retrieval on the same mechanisms
#
# `join(level="well", paired=False, controls=...)` keeps, in each modality, the wells of the
# perturbations whose MOA is shared, plus the vehicle controls. `compare_retrieval` then runs the
# same tests in each modality with `ip.metrics`: **activity** (are a compound's wells retrieved
# against DMSO? mAP), **replicating** (is the median correlation between a compound's wells above a
# null of unrelated wells? Way et al. 2022) and **consistency** (do compounds with the same MOA
# retrieve each other?). Each compound has one well per dose on these plates, so its "replicates"
# are its six doses.

# %%
md_wells = ip.mm.join(
    morph, expr, on={"moa": ("Metadata_moa", "moa")}, sep="|", level="well", paired=False,
    controls=("Metadata_pert_type == 'control'", "pert_type == 'ctl_vehicle'"),
)
{m: (a.n_obs, int(a.obs["mm_control"].sum())) for m, a in md_wells.mod.items()}  # (wells kept, of which controls)

# %%
res = ip.mm.compare_retrieval(
    md_wells, perturbation={"morph": "Metadata_pert_id", "expr": "pert_id"}, controls="mm_control",
    annotation="mm_moa", null_size=5000,
)
res.groupby(["modality", "task"]).agg(
    n=("id", "size"), retrieved=("retrieved", "sum"), share=("retrieved", "mean"),
    mean_mAP=("mean_average_precision", "mean"), median_corr=("median_correlation", "median"),
).round(2)

# %%
comp = ip.mm.complementarity(res, task="consistency", ids=rep_moa.matched)
print(comp.attrs["summary"])
comp

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
ip.pl.mm_retrieval(res, task="activity", ax=axes[0], show=False)
ip.pl.mm_retrieval(res, task="replicating", ax=axes[1], show=False)
ip.pl.mm_complementarity(comp, ax=axes[2], show=False)
fig.tight_layout()

# %% [markdown]
# Only one shared MOA (PDGFR inhibitor) has two compounds on the Cell Painting plate, so MOA
# retrieval is evaluable for 1 of the 8 shared MOAs in morphology and for 5 in L1000; nothing is
# retrieved significantly. This is a statement about the size of the overlap, not about the
# modalities.
#
# For context, the same tests on **whole plates** (all compounds, not only the shared MOAs), and
# percent replicating (Way et al. 2022). On these single plates "replicates" are a compound's six
# doses, so the numbers are **not** comparable to the published per-dose values (replicate wells at
# one dose across plates), which are shown below them.

# %%
act_m = ip.metrics.phenotypic_activity(morph, "Metadata_broad_sample", "Metadata_pert_type == 'control'", null_size=5000)
act_e = ip.metrics.phenotypic_activity(expr, "pert_id", "pert_type == 'ctl_vehicle'", null_size=5000)
pr_m = ip.metrics.percent_replicating(morph, "Metadata_broad_sample", controls="Metadata_pert_type == 'control'", n_null=1000)
pr_e = ip.metrics.percent_replicating(expr, "pert_id", controls="pert_type == 'ctl_vehicle'", n_null=1000)
pd.DataFrame({
    "assay": ["Cell Painting (this plate)", "L1000 (this plate)"],
    "compounds": [len(act_m), len(act_e)],
    "active vs DMSO (mAP, q<0.05)": [act_m["below_corrected_p"].mean(), act_e["below_corrected_p"].mean()],
    "percent replicating (doses pooled)": [pr_m.percent, pr_e.percent],
}).round(2)

# %%
ip.datasets.way2022_percent_replicating().pivot(index=["dose_recode", "dose"], columns="assay", values="percent_replicating")

# %% [markdown]
# ## Cross-modal retrieval after alignment (CCA / PLS)
#
# A paired join takes a consensus profile per shared key in each modality (median over every well
# carrying the label; a multi-target compound contributes to each of its targets). CCA then finds
# directions where the two modalities co-vary. **In-sample** canonical correlations are meaningless
# with 15 pairs and hundreds of features: the first is 1 by construction.

# %%
md = ip.mm.join(morph, expr, on={"target": ("Metadata_target", "target")}, sep="|")
ip.mm.align(md, method="cca", n_components=2)
print("in-sample canonical correlations:", np.round(md.uns["X_cca"]["correlations"], 3))

# %% [markdown]
# `cross_retrieval` does it properly: folds are split by *distinct* profile pairs (targets built from
# the same wells stay together), the alignment is fitted on the training pairs only, and each held-out
# profile of one modality ranks all profiles of the other. The mAP is compared with random rankings.

# %%
cr = pd.concat([ip.mm.cross_retrieval(md, method=m, null_size=5000) for m in ("cca", "pls")])
cr[["method", "direction", "n_pairs", "n_distinct_pairs", "mean_average_precision", "chance_map", "p_value"]]

# %%
ip.pl.mm_cross_retrieval(cr[cr["method"] == "cca"], show=False);

# %% [markdown]
# Held-out retrieval is at chance level. With 6 distinct pairs, two cell lines and different
# compounds per target, that is the expected outcome; the function itself recovers planted pairings
# (see `tests/test_mm_crossmodal.py`).
#
# ## One pipeline, both modalities, side by side
#
# `run_pipeline` applies the same normalize → PCA → neighbours → Leiden → UMAP to each modality
# (normalized values go to a layer, `.X` is untouched).

# %%
views = {"Cell Painting": morph, "L1000": expr}
for name, a in views.items():
    a.obs["dose (µM)"] = a.obs["Metadata_dose_recode"].map(lambda d: "none" if np.isnan(d) else f"{d:g}")
morph.obs["vehicle"] = (morph.obs["Metadata_pert_type"] == "control").map({True: "DMSO", False: "compound"})
expr.obs["vehicle"] = (expr.obs["pert_type"] == "ctl_vehicle").map({True: "DMSO", False: "compound"})
ip.mm.run_pipeline(views, normalize="standardize", n_comps=20, n_neighbors=10, seed=0)
ip.mm.pipeline_summary(views)

# %%
ip.pl.mm_embedding(views, basis="umap", color=["vehicle", "dose (µM)", "leiden"], show=False);

# %% [markdown]
# The observations differ between the plates, so no neighbourhood comparison is possible here. On the
# paired MOA-level consensus profiles (8 observations in both modalities), `pipeline_summary` compares
# the partitions and neighbourhoods directly (with 8 points this is a demonstration: compare the
# Jaccard overlap with its chance level, and note an ARI near 0).

# %%
md_moa = ip.mm.join(morph, expr, on={"moa": ("Metadata_moa", "moa")}, sep="|")
ip.mm.run_pipeline(md_moa, normalize=None, n_comps=5, n_neighbors=3, umap=False)
ip.mm.pipeline_summary(md_moa)

# %% [markdown]
# ## Proteomics: nELISA
#
# nELISA stores compound ids as Broad sample ids and names as `Metadata_pert_iname`.

# %%
r_cp = ip.mm.match_keys(morph, prot, on="Metadata_broad_sample", names="broad_id", mod_names=("morph", "prot"))
print("nELISA ∩ Cell Painting (compound id):", r_cp.matched)
r_l1 = ip.mm.match_keys(prot, expr, on=("Metadata_pert_iname", "pert_iname"), mod_names=("prot", "expr"))
r_l1_id = ip.mm.match_keys(prot, expr, on=("Metadata_broad_sample", "pert_id"), names="broad_id", mod_names=("prot", "expr"))
print("nELISA ∩ L1000 by name:", r_l1.matched)
print("nELISA ∩ L1000 by compound id:", r_l1_id.matched)

# %%
geld = ["geldanamycin"]
pd.DataFrame({
    "nELISA id": prot.obs.loc[prot.obs["Metadata_pert_iname"].str.casefold().isin(geld), "Metadata_broad_sample"].str[:13].unique(),
    "L1000 id": expr.obs.loc[expr.obs["pert_iname"].str.casefold().isin(geld), "pert_id"].unique(),
})

# %% [markdown]
# Geldanamycin matches by name but carries different compound ids in the two sources: a join on names
# and a join on ids give different answers, and the report makes that visible. Two shared compounds
# with Cell Painting (amiloride and ingenol mebutate, both A549) are too few for any retrieval
# statistic.
#
# ## Summary
#
# | question | possible with the bundled data? |
# |---|---|
# | compound-level Cell Painting ↔ L1000 matching or retrieval | **no**: no shared treatment compound (only DMSO) |
# | MOA / target-level comparison | only as a demonstration: 8 MOAs / 15 targets (6 distinct profile pairs), different cell lines |
# | per-modality activity and consistency on whole plates | yes (one plate each; doses stand in for replicates) |
# | cross-modal retrieval after CCA/PLS | runs, held-out result at chance; needs many shared compounds in one cell line |
# | gene–compound matching (CRISPRi vs compounds) | **no**: the cmQTL genes are not targets of any LINCS-plate compound |
# | proteomics ↔ morphology | 2 shared compounds: too few |
