# %% [markdown]
# # 9. What aggregation hides: single-cell distances and tests against controls
#
# The usual profiling workflow aggregates cells to **well medians** (`ip.pp.aggregate`) and compares
# wells. That is robust and cheap, but it throws away what single-cell imaging measures: a compound
# that **widens** a distribution, or moves a **subpopulation** of cells into a new state while the
# rest stay put, can leave the median where it was.
#
# This notebook shows it on simulated cells with a known truth, then uses the single-cell tools:
#
# * `ip.tl.distance`: distances between groups of cells (E-distance, MMD, Wasserstein, mean
#   distances, classifier), as a group × group matrix and against the controls;
# * `ip.tl.distance_test`: a permutation test of each perturbation against the controls (the
#   E-test of scPerturb), plate-aware, with Benjamini–Hochberg across perturbations;
# * `ip.tl.cluster_composition`: which cell states (Leiden clusters) a perturbation enriches;
# * `ip.pl.distance_heatmap`, `ip.pl.distance_volcano`, `ip.pl.cluster_fractions`.
#
# The last section runs the same calls on real single cells (CellProfiler's ExampleHuman image).

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import ttest_ind

import imgprof as ip

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="IProgress not found")
pd.set_option("display.width", 160)
G = "Metadata_perturbation"

# %% [markdown]
# ## Cells with a known truth
#
# `ip.datasets.simulate_cells` draws control cells from a standard normal in 10 dimensions and gives
# each perturbation one effect on its first 3 features: a **mean** shift, a **variance** change
# (every cell's deviation doubled, same mean and median), or a **subpopulation** (20 % of cells
# moved far away, half up and half down: mean and median unchanged), or **none**. Cells sit in
# 6 wells per perturbation on 2 plates, with a small plate offset.

# %%
effects = ["mean"] * 3 + ["variance"] * 3 + ["subpopulation"] * 3 + ["none"] * 3
adata = ip.datasets.simulate_cells(n_perturbations=12, n_cells=300, n_features=10, n_affected=3, effects=effects,
                                   effect_size=1.0, n_plates=2, wells_per_group=6, plate_effect=0.2, seed=7)
truth = adata.obs.groupby(G, observed=True)["Metadata_effect"].first()
print(adata)
truth.to_frame("effect").T

# %% [markdown]
# ## The aggregate-first view: well medians
#
# Aggregate cells to well medians, then test each perturbation's wells against the control wells
# feature by feature (Welch's t-test, which allows unequal variances), Bonferroni across features.

# %%
wells = ip.pp.aggregate(adata, ["Metadata_Plate", "Metadata_Well", G], operation="median", count_key=None)
g = wells.obs[G].astype(str).to_numpy()
ctrl = wells.X[g == "control"]
well_p = pd.Series({p: min(1.0, ttest_ind(wells.X[g == p], ctrl, equal_var=False).pvalue.min() * wells.n_vars)
                    for p in sorted(set(g) - {"control"})}, name="well-median p")
print(wells.shape, "wells x features")

# %% [markdown]
# ## The single-cell view: the E-test
#
# `ip.tl.distance_test` computes the energy distance between each perturbation's cells and the
# control cells and permutes the labels between them (here only **within plate**,
# `batch_key="Metadata_Plate"`), p = (k + 1) / (N + 1), BH-adjusted across perturbations.

# %%
ip.tl.distance_test(adata, G, "control", obsm_key="X", n_perms=999, batch_key="Metadata_Plate", seed=0)
cell = adata.uns["distance_test"]
summary = pd.DataFrame({
    "true effect": truth.drop("control"),
    "well-median p": well_p,
    "E-distance": cell["distance"].round(3),
    "E-test p (BH)": cell["pvalue_adj"].round(4),
})
summary["found by well medians"] = summary["well-median p"] < 0.05
summary["found by E-test"] = summary["E-test p (BH)"] < 0.05
summary

# %%
found = summary.groupby("true effect")[["found by well medians", "found by E-test"]].mean()
found

# %% [markdown]
# The mean shifts are found both ways. The **variance** and **subpopulation** perturbations are
# invisible in the well medians (their medians did not move) and obvious to the distribution test.
# The perturbations with no effect are not flagged by either.

# %%
assert found.loc["mean"].all()
assert found.loc["variance", "found by E-test"] == 1 and found.loc["variance", "found by well medians"] == 0
assert found.loc["subpopulation", "found by E-test"] == 1 and found.loc["subpopulation", "found by well medians"] == 0
assert found.loc["none", "found by E-test"] == 0

# %% [markdown]
# ## Distances between all groups
#
# `ip.tl.distance` writes a group × group matrix to `.uns` (blocked computation: no cell × cell
# matrix is held for all cells at once). Here with E-distance and with MMD (RBF kernel, bandwidth
# by the median heuristic, recorded in the parameters).

# %%
ip.tl.distance(adata, G, "edistance", reference="control", obsm_key="X")
ip.tl.distance(adata, G, "mmd", reference="control", obsm_key="X")
print("MMD gamma (median heuristic):", round(adata.uns["distance_mmd"]["params"]["gamma"], 4))
fig, axes = plt.subplots(1, 2, figsize=(12, 5))
ip.pl.distance_heatmap(adata, "distance_edistance", ax=axes[0], annotate=False, show=False)
ip.pl.distance_volcano(adata, ax=axes[1], show=False)
fig.tight_layout()

# %% [markdown]
# The heatmap groups the perturbations by effect type; the volcano puts each perturbation's
# distance to the controls against its BH-adjusted p-value.
#
# Other distances are one argument away. Mean-based distances (`euclidean`, `cosine`, `pearson`)
# compare group means only, so, like the well medians, they miss the variance and subpopulation
# effects:

# %%
to_ctrl = {}
for metric in ["edistance", "mmd", "wasserstein", "euclidean"]:
    ip.tl.distance(adata, G, metric, reference="control", pairwise=False, obsm_key="X", key_added="d")
    to_ctrl[metric] = adata.uns["d"]["to_reference"]["distance"].drop("control")
to_ctrl = pd.DataFrame(to_ctrl)
to_ctrl.groupby(truth.drop("control")).mean().round(3)

# %% [markdown]
# ## Which cell states? Cluster composition
#
# `ip.tl.cluster_composition` clusters all cells together (Leiden on the joint embedding, via
# `ip.tl.neighbors` and `ip.tl.leiden`), then compares each perturbation's cluster fractions with
# the controls' (χ² test per perturbation, Fisher's exact test per cluster, BH-adjusted).

# %%
ip.tl.cluster_composition(adata, G, "control", obsm_key="X", resolution=0.4, seed=0)
comp = adata.uns["cluster_composition"]
comp["test"].join(truth.rename("true effect"))[["true effect", "statistic", "pvalue_adj", "top_cluster",
                                                 "top_log2_ratio"]].round(4)

# %%
ip.pl.cluster_fractions(adata, show=False)
plt.tight_layout()

# %% [markdown]
# The subpopulation perturbations put about 20 % of their cells into clusters that controls
# barely occupy: the enrichment table names those clusters.

# %%
enr = comp["enrichment"]
enr[enr["significant"] & (enr["log2_ratio"] > 1)].merge(
    truth.rename("true effect"), left_on=G, right_index=True)[[G, "true effect", "leiden", "fraction",
                                                               "reference_fraction", "log2_ratio", "pvalue_adj"]].round(4)

# %% [markdown]
# ## Is the test calibrated?
#
# Under no effect, a p-value below 0.05 should occur 5 % of the time. 200 perturbations without an
# effect (10 data sets of 20, each with its own controls; the test suite runs 1,000):

# %%
pvals = []
for rep in range(10):
    null = ip.datasets.simulate_cells(n_perturbations=20, n_cells=40, n_controls=160, n_features=10,
                                      effects="none", seed=100 + rep)
    ip.tl.distance_test(null, G, "control", obsm_key="X", n_perms=199, seed=rep)
    pvals.append(null.uns["distance_test"]["pvalue"].to_numpy())
pvals = np.concatenate(pvals)
share = np.mean(pvals < 0.05)
half_width = 1.96 * np.sqrt(0.05 * 0.95 / len(pvals))  # binomial sampling error around 5 %
print(f"share of p < 0.05 under the null: {share:.3f} (n = {len(pvals)}; 0.05 ± {half_width:.3f} expected)")
plt.figure(figsize=(4, 3))
plt.hist(pvals, bins=20, range=(0, 1), color="#8c8c8c")
plt.xlabel("p-value (no effect)")
plt.ylabel("perturbations");

# %% [markdown]
# ## Real single cells
#
# The bundled ExampleHuman cells (289 cells that CellProfiler measured on one image, read by
# `ip.io.read_cellprofiler`) have no perturbations, but they do have a real cell state: mitotic
# cells are bright in the PH3 channel. Cells in the top 10 % of nuclear PH3 intensity form one
# group, the others are split at random into two halves: the E-test should separate PH3-high cells
# from the rest and not the two random halves.

# %%
cells = ip.datasets.examplehuman_cells()
X = np.asarray(cells.X, dtype=float)
keep = np.isfinite(X).all(axis=0) & (X.std(axis=0) > 0) & ~cells.var_names.str.contains("Location")
cells = cells[:, keep].copy()
cells.X = (cells.X - cells.X.mean(axis=0)) / cells.X.std(axis=0)
ip.tl.pca(cells, n_comps=15)
ph3 = cells[:, "Nuclei_Intensity_MeanIntensity_PH3"].X.ravel()
rng = np.random.default_rng(0)
state = np.where(rng.random(cells.n_obs) < 0.5, "half_A", "half_B").astype(object)
state[ph3 > np.quantile(ph3, 0.9)] = "PH3_high"
cells.obs["state"] = pd.Categorical(state)
ip.tl.distance_test(cells, "state", "half_A", obsm_key="X_pca", n_perms=999)
cells.uns["distance_test"][["distance", "pvalue", "pvalue_adj", "n_cells", "n_reference_cells"]]

# %% [markdown]
# ## Where to go next
#
# * The docs page *Single-cell distances* gives each distance's definition and reference, and how
#   the values match pertpy's (`pt.tl.Distance`).
# * With many cells per group, `max_cells=` subsamples (seeded, recorded in `ip.provenance`).
# * Cells from one well share its conditions: a cell-level test treats them as independent. Keep
#   `batch_key=` (permute within plate), and confirm hits across wells or plates.
