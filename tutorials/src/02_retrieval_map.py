# %% [markdown]
# # 2. Replicate and mechanism retrieval with mAP
#
# Two questions drive the evaluation of a profiling experiment:
#
# * **Phenotypic activity**: are a perturbation's replicate profiles more similar to each other than
#   to negative controls? (can its replicates be *retrieved* against DMSO?)
# * **Phenotypic consistency**: do perturbations with the same mechanism of action (MOA) retrieve
#   each other?
#
# `ip.metrics` answers both with average precision (AP) and its mean per group (mAP, with a
# permutation p-value and FDR correction), using the pair definitions of copairs (Kalinin et al.).
# We also compute the older *percent replicating* of Way et al. 2022 and compare it, as far as the
# data allow, with the published values. Everything runs on bundled real data:
#
# * one **LINCS Cell Painting plate** (A549, 48 h; 384 wells × 454 features, MAD-robustized),
# * the **nELISA** secretome proteomics set (A549, 24 h; 4 plates × ~381 wells × 191 proteins).

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import imgprof as ip

warnings.filterwarnings("ignore", category=FutureWarning)
pd.set_option("display.width", 160)
pd.set_option("display.max_colwidth", 50)

# %% [markdown]
# ## The LINCS plate: what counts as a replicate here
#
# The plate holds 56 compounds at 6 doses with **one well per compound-dose**, 2 compounds with
# 12 wells at 20 µM, and 24 DMSO wells. `Metadata_mmoles_per_liter` holds the dose in µM (see
# tutorial 4); `ip.mm.recode_dose` snaps it to the standard series and flags the wells that are not
# on it.

# %%
adata = ip.datasets.lincs_plate()
ip.mm.recode_dose(adata, "Metadata_mmoles_per_liter", "uM")
obs = adata.obs
wells_per_compound = obs[obs["Metadata_pert_type"] == "trt"].groupby("Metadata_broad_sample", observed=True).size()
print("wells per compound:", wells_per_compound.value_counts().to_dict())
print("DMSO wells:", int((obs["Metadata_pert_type"] == "control").sum()))
obs["Metadata_dose_recode_status"].value_counts()

# %% [markdown]
# Since no compound has two wells at the same standard dose, the only replicates available are a
# compound's wells **across doses**. In this section a compound's six doses are pooled and treated
# as its replicates. That is a harder test than true replicates: at low doses a well can look like
# DMSO.
#
# ## 1. Phenotypic activity against DMSO
#
# For each compound well, the other wells of the same compound are **positives** and the 24 DMSO
# wells are **negatives**. The AP of a well is the average precision of its positives when all of
# them are ranked by cosine similarity to it. The compound's mAP is the mean over its wells. Its
# p-value is a label-permutation test: if the compound were inactive, its wells would be
# exchangeable with the DMSO wells, so its mAP is compared with the mAP of 10,000 random choices of
# "which wells are the compound" among its wells + the DMSO wells (exact when there are fewer
# labelings than that; `p_value_method` says which). It is then Benjamini–Hochberg corrected over compounds.

# %%
res = ip.metrics.phenotypic_activity(
    adata, "Metadata_broad_sample", controls="Metadata_pert_type == 'control'", null_size=10000, return_ap=True
)
ap, act = res.ap, res.map  # per-well APs, per-compound mAP
queries = ap[ap["Metadata_pert_type"] == "trt"]
queries.groupby(["n_pos_pairs", "n_total_pairs"]).size().rename("wells")  # 5 (or 11) positives + 24 DMSO negatives

# %%
moa = obs.groupby("Metadata_broad_sample", observed=True)["Metadata_moa"].first()
act["Metadata_moa"] = act["Metadata_broad_sample"].map(moa).fillna("(no MOA)").to_numpy()
cols = ["Metadata_broad_sample", "Metadata_moa", "n_profiles", "mean_average_precision", "corrected_p_value", "below_corrected_p"]
act.sort_values("mean_average_precision", ascending=False)[cols].head(10)

# %%
print(f"active compounds (q < 0.05): {int(act['below_corrected_p'].sum())} / {len(act)} = {act['below_corrected_p'].mean():.1%}")
print(f"nominal p < 0.05 (uncorrected): {act['below_p'].mean():.1%}")

# %%
ip.pl.map_scatter(act, title="LINCS plate: activity vs DMSO (doses pooled)", show=False);

# %% [markdown]
# Each dot is a compound; the dashed line marks q = 0.05. Several compounds reach mAP = 1: every one
# of their wells ranks all of the compound's other wells above all 24 DMSO wells.
#
# ## 2. Phenotypic consistency: which mechanisms are retrieved?
#
# `phenotypic_consistency` first builds one consensus profile per compound (the median over its
# wells). Then, for each compound and each of its MOA labels, the other compounds carrying that
# label are positives and compounds sharing **no** label are negatives. MOAs are multi-label
# (`"NFkB pathway inhibitor|proteasome inhibitor"` counts for both), and a label can only be scored
# when at least two compounds carry it.

# %%
labels = obs.loc[obs["Metadata_pert_type"] == "trt"].groupby("Metadata_broad_sample", observed=True)["Metadata_moa"].first().dropna()
per_label = labels.str.split("|").explode().value_counts()
print(f"{labels.str.contains('|', regex=False).sum()} multi-label compounds; {len(per_label)} distinct labels, "
      f"{(per_label >= 2).sum()} carried by >= 2 compounds: {sorted(per_label[per_label >= 2].index)}")

# %%
cons = ip.metrics.phenotypic_consistency(
    adata, "Metadata_moa", "Metadata_broad_sample", controls="Metadata_pert_type == 'control'", null_size=10000
)
cons.sort_values("p_value")

# %% [markdown]
# The warnings above are expected. Three compounds have no MOA and are left out. Labels carried by a
# single compound have no positive and get a NaN AP. With two compounds per label and the median over
# all six doses (low doses included), no MOA passes FDR. The proteasome inhibitors come closest, and
# they rank each other first (mAP = 1). Still, each query has 1 positive among 54 candidates, so a
# random ranking puts it first 1 time in 54. Both queries have the same (positives, candidates)
# configuration, so they share one null draw, as in copairs. That gives p ≈ 0.02, and q ≈ 0.16 after
# correcting over the 8 labels.
#
# Two variants use more of the data:
#
# * `active=act` keeps only the compounds called active in section 1 (the usual copairs workflow).
# * `aggregate=None` scores wells rather than consensus profiles. Each well's positives are the
#   wells of *other* compounds with the same MOA (at any dose). This gives 12 or more queries per
#   label instead of 2.

# %%
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ip.metrics.RetrievalWarning)  # same notices as above
    cons_active = ip.metrics.phenotypic_consistency(
        adata, "Metadata_moa", "Metadata_broad_sample", controls="Metadata_pert_type == 'control'", active=act, null_size=10000
    )
    cons_wells = ip.metrics.phenotypic_consistency(
        adata, "Metadata_moa", "Metadata_broad_sample", controls="Metadata_pert_type == 'control'", aggregate=None, null_size=10000
    )
variants = {"consensus, all compounds": cons, "consensus, active only": cons_active, "wells (aggregate=None)": cons_wells}
table = pd.DataFrame({name: t.set_index("Metadata_moa")["mean_average_precision"] for name, t in variants.items()}).round(3)
table["retrieved (q < 0.05) in"] = [
    ", ".join(name for name, t in variants.items() if t.set_index("Metadata_moa")["below_corrected_p"].get(m, False)) or "-"
    for m in table.index
]
table  # mAP per MOA label; NaN: fewer than two (active) compounds carry the label

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
ip.pl.map_scatter(cons, label="Metadata_moa", n_labels=3, ax=axes[0], title="MOA, consensus profiles", show=False)
ip.pl.map_scatter(cons_wells, label="Metadata_moa", n_labels=3, ax=axes[1], title="MOA, wells (aggregate=None)", show=False)
fig.tight_layout()

# %% [markdown]
# Only one MOA passes FDR with consensus profiles of the active compounds: **proteasome inhibitor**.
# With wells as queries, **proteasome inhibitor** and **ATPase inhibitor** are retrieved. Only 8
# labels can be scored on this plate, so these are small-sample results.
#
# ## 3. Percent replicating (Way et al. 2022) and the published numbers
#
# Way et al. define a compound as *replicating* when the median pairwise Spearman correlation among
# its replicate wells is above the 95th percentile of a null. The null is the same median over
# random sets of wells from **different** compounds. They report the percentage per dose, over
# 1,258 compounds measured in replicate wells across plates:

# %%
published = ip.datasets.way2022_percent_replicating()
published.pivot(index=["dose_recode", "dose"], columns="assay", values="percent_replicating")

# %% [markdown]
# **What this plate cannot show.** There is one well per compound-dose, so no compound has
# replicates at any standard dose. Per-dose percent replicating cannot be computed here, and the
# published curve is **not reproduced**. The two compounds with 12 wells at 20 µM are the only
# same-dose replicates on the plate, and two compounds are too few for a percentage.
#
# **What we compute instead** (each a different statistic, none equal to the published one):
#
# 1. Percent replicating with the Way et al. definition and null, taking a compound's six doses as
#    its replicates (doses pooled).
# 2. Per dose, whether the well at that dose **retrieves the same compound's other doses** against
#    DMSO. These are the per-well APs from section 1, grouped by (compound, dose), with q < 0.05
#    over all 330 wells.
# 3. Per dose, **percent matching** within MOA: whether compounds that share an MOA correlate more
#    than compounds that share none (Way et al.'s null), using only the wells at that dose. Seven
#    MOAs have two compounds on the standard series, so each MOA is worth 14 percentage points.

# %%
pr = ip.metrics.percent_replicating(
    adata, "Metadata_broad_sample", controls="Metadata_pert_type == 'control'", method="spearman", n_null=1000
)
pr

# %%
on_series = queries[queries["Metadata_dose_recode_status"] == "on_series"]
per_well = ip.metrics.mean_average_precision(on_series, ["Metadata_broad_sample", "Metadata_dose_recode"], null_size=10000)
by_dose = per_well.groupby("Metadata_dose_recode").agg(
    compounds=("Metadata_broad_sample", "size"),
    mean_AP=("mean_average_precision", "mean"),
    retrieves_other_doses=("below_corrected_p", "mean"),
)
matching = {}
for dose in by_dose.index:
    res = ip.metrics.percent_matching(adata[obs["Metadata_dose_recode"] == dose], "Metadata_moa", n_null=1000)
    matching[dose] = (res.percent, int(res.table["p_value"].notna().sum()))
by_dose["percent_matching_MOA"] = [matching[d][0] for d in by_dose.index]
by_dose["MOAs_scored"] = [matching[d][1] for d in by_dose.index]
pub = published.pivot(index="dose_recode", columns="assay", values="percent_replicating").sort_index() / 100
by_dose["published_CP_percent_replicating"] = pub["Cell Painting"].to_numpy()
by_dose["published_L1000_percent_replicating"] = pub["L1000"].to_numpy()
by_dose.round(3)

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
ip.pl.percent_replicating(pr, ax=axes[0], title=f"this plate, doses pooled: {100 * pr.percent:.0f}% replicating", show=False)
x = np.arange(len(by_dose))
ticks = [f"{d:g}" for d in by_dose.index]
for assay, style in (("Cell Painting", "o-"), ("L1000", "s-")):
    axes[1].plot(x, 100 * pub[assay], style, label=assay)
axes[1].set(title="published (Way et al. 2022, 1,258 compounds)", ylabel="percent replicating", ylim=(0, 100))
axes[2].plot(x, 100 * by_dose["retrieves_other_doses"], "o-", color="C2", label="well retrieves its other doses (mAP, q<0.05)")
axes[2].plot(x, 100 * by_dose["percent_matching_MOA"], "d--", color="C3", label="percent matching within MOA (7 MOAs)")
axes[2].set(title="this plate, per dose (different statistics)", ylabel="percent", ylim=(0, 100))
for ax in axes[1:]:
    ax.set_xticks(x, ticks)
    ax.set_xlabel("dose (µM)")
    ax.legend(frameon=False, fontsize=8)
fig.tight_layout()

# %% [markdown]
# How to read these:
#
# * **Doses pooled**, 84 % of compounds replicate: their six wells correlate more than six wells of
#   different compounds. This number mixes doses, comes from one plate, and uses a different
#   replicate definition, so it does not confirm or contradict the published 57–83 %.
# * **Retrieval of the other doses** peaks at the middle doses and drops at both ends. This suggests
#   weak phenotypes at the lowest dose, and at the top dose a phenotype that the lower doses lack.
#   A compound's doses are then not interchangeable replicates, which is one more reason the pooled
#   number is not the published one.
# * **Percent matching within MOA** rises with dose (0 % up to 1.11 µM, then 2 and 3 of 7 MOAs). This
#   has the same direction as the published dose trend, but it rests on 7 MOAs with 2 compounds each.
#
# ## 4. A second modality: nELISA proteomics
#
# The same calls apply to any profile matrix. nELISA measures 191 secreted proteins on 4 plates with
# 64 DMSO wells (`Metadata_control_type == 'negcon'`) per plate. Most compounds have one well on each
# plate, so their replicates come from different plates (the 14 `poscon_diverse` compounds have two
# wells per plate). In `ip.metrics` a pair column may not hold
# missing values, and the DMSO wells have no `Metadata_broad_sample`, so we name them first.

# %%
prot = ip.datasets.nelisa()
prot.obs["Metadata_broad_sample"] = prot.obs["Metadata_broad_sample"].fillna("DMSO")
pd.crosstab(prot.obs["Metadata_Plate"], prot.obs["Metadata_control_type"].fillna("treatment"))

# %% [markdown]
# Normalize each plate against its own DMSO wells (robust z-score: median and MAD of the controls).
# The bundled values turn out to be normalized this way already: on every plate the DMSO median is 0
# and the scaled MAD is 1. `ip.pp.normalize` therefore changes them only at rounding level, which is
# a useful check rather than a transformation.

# %%
neg = "Metadata_control_type == 'negcon'"
before = prot.X.copy()
ip.pp.normalize(prot, method="mad_robustize", controls=neg, by="Metadata_Plate")
print(f"max |change| from normalization: {np.abs(prot.X - before).max():.1e}")
ip.provenance(prot)[["function", "params"]].tail(1)

# %% [markdown]
# Activity: replicates (the same compound on other plates) against the DMSO wells of the **query's
# own plate** (`sameby_controls="Metadata_Plate"`), so plate-to-plate differences cannot create
# activity by themselves. The positive controls are scored like any other compound, and they should
# be called active more often.

# %%
res_p = ip.metrics.phenotypic_activity(
    prot, "Metadata_broad_sample", controls=neg, sameby_controls="Metadata_Plate", null_size=10000, return_ap=True
)
ap_p, act_p = res_p.ap, res_p.map
kind = prot.obs.groupby("Metadata_broad_sample", observed=True)["Metadata_control_type"].first().fillna("treatment")
act_p["kind"] = act_p["Metadata_broad_sample"].map(kind).to_numpy()
by_kind = act_p.groupby("kind").agg(
    compounds=("below_corrected_p", "size"), active=("below_corrected_p", "sum"),
    fraction_active=("below_corrected_p", "mean"), mean_mAP=("mean_average_precision", "mean"),
)
print(f"nELISA: {int(act_p['below_corrected_p'].sum())} / {len(act_p)} = {act_p['below_corrected_p'].mean():.1%} active")
by_kind.round(3)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
ip.pl.map_scatter(act_p, ax=axes[0], title=f"nELISA activity vs same-plate DMSO: {act_p['below_corrected_p'].mean():.0%} active", show=False)
axes[1].barh(by_kind.index, 100 * by_kind["fraction_active"], color="#c44e52")
for i, (k, r) in enumerate(by_kind.iterrows()):
    axes[1].text(100 * r["fraction_active"] + 1, i, f"{int(r['active'])}/{int(r['compounds'])}", va="center", fontsize=8)
axes[1].set(xlabel="% active (q < 0.05)", xlim=(0, 100), title="by kind of perturbation")
fig.tight_layout()

# %% [markdown]
# ## Summary
#
# | question | call | result on bundled data |
# |---|---|---|
# | replicates vs DMSO (Cell Painting, doses pooled) | `phenotypic_activity` | 32 / 58 compounds active (55 %) |
# | MOA retrieval (multi-label) | `phenotypic_consistency` | 8 scorable labels; proteasome inhibitor retrieved (active compounds, and wells), ATPase inhibitor (wells) |
# | percent replicating (Way et al.) | `percent_replicating` | 84 % with doses pooled; per-dose replicates do not exist on this plate, so the published 57–83 % curve is not reproduced |
# | same calls on proteomics | `pp.normalize` + `phenotypic_activity(sameby_controls=)` | 120 / 304 active (39 %); positive controls 48–79 %, treatments 36 % |
