"""ip.mm cross-modal analysis: CCA/PLS alignment, held-out retrieval, per-modality retrieval, complementarity,
gene–compound matching."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import imgprof as ip


def _paired(n=40, p=30, q=45, k=3, noise=0.3, seed=0, shuffle=False):
    """Two modalities that share a k-dimensional latent per perturbation (known truth)."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, k))
    X = Z @ rng.normal(size=(k, p)) + noise * rng.normal(size=(n, p))
    Zy = Z[rng.permutation(n)] if shuffle else Z
    Y = Zy @ rng.normal(size=(k, q)) + noise * rng.normal(size=(n, q))
    keys = [f"pert_{i:02d}" for i in range(n)]
    a = ad.AnnData(X=X, obs=pd.DataFrame({"pert": keys}, index=keys), var=pd.DataFrame(index=[f"f{j}" for j in range(p)]))
    b = ad.AnnData(X=Y, obs=pd.DataFrame({"pert": keys}, index=[f"s{i}" for i in range(n)]),
                   var=pd.DataFrame(index=[f"g{j}" for j in range(q)]))
    return ip.mm.join(a, b, on="pert", level="well")


def test_align_writes_shared_space():
    md = _paired()
    ip.mm.align(md, n_components=3, n_pcs=10)
    U, V = md["morph"].obsm["X_cca"], md["expr"].obsm["X_cca"]
    assert U.shape == V.shape == (40, 3)
    corr = [np.corrcoef(U[:, j], V[:, j])[0, 1] for j in range(3)]
    np.testing.assert_allclose(corr, md.uns["X_cca"]["correlations"], atol=1e-10)
    assert min(corr) > 0.9 and md.uns["X_cca"]["in_sample"]
    ip.mm.align(md, method="pls", n_components=2, key_added="X_pls2")
    assert md["expr"].obsm["X_pls2"].shape == (40, 2)
    with pytest.raises(ValueError, match="method="):
        ip.mm.align(md, method="ica")


@pytest.mark.parametrize("method", ["cca", "pls"])
def test_cross_retrieval_recovers_true_pairs_held_out(method):
    md = _paired(seed=1)
    res, per_q = ip.mm.cross_retrieval(md, method=method, n_components=3, n_pcs=10, null_size=2000,
                                       return_per_query=True)
    assert res["direction"].tolist() == ["morph->expr", "expr->morph"]
    assert (res["mean_average_precision"] > 3 * res["chance_map"]).all()
    assert (res["corrected_p_value"] < 0.01).all()
    # each pair is queried exactly once per direction, always out of fold
    assert per_q.groupby("direction")["pair_key"].nunique().eq(40).all()
    assert (per_q["n_pos_pairs"] == 1).all() and (per_q["n_total_pairs"] == 40).all()


def test_cross_retrieval_shuffled_pairs_is_chance():
    md = _paired(seed=2, shuffle=True)
    res = ip.mm.cross_retrieval(md, n_components=3, n_pcs=10, null_size=2000)
    assert (res["corrected_p_value"] > 0.05).all()
    assert (res["mean_average_precision"] < 2 * res["chance_map"]).all()


def test_cross_retrieval_duplicate_keys_do_not_inflate():
    """Keys built from the same profile (e.g. 4 targets of one compound) must not count as 4 hits."""
    rng = np.random.default_rng(3)
    n = 12
    X, Y = rng.normal(size=(n, 20)), rng.normal(size=(n, 25))  # no shared signal at all
    dup = 6  # one profile repeated under 6 keys in both modalities
    X[:dup] = X[0]
    Y[:dup] = Y[0]
    keys = [f"k{i}" for i in range(n)]
    a = ad.AnnData(X=X, obs=pd.DataFrame({"k": keys}, index=keys))
    b = ad.AnnData(X=Y, obs=pd.DataFrame({"k": keys}, index=keys))
    md = ip.mm.join(a, b, on="k", level="well")
    res = ip.mm.cross_retrieval(md, n_splits=4, null_size=2000)
    assert (res["n_distinct_pairs"] == n - dup + 1).all()
    assert (res["n_profiles"] == n - dup + 1).all()  # duplicates are queried once
    assert (res["corrected_p_value"] > 0.05).all()


def test_cross_retrieval_needs_pairs(sim_wells):
    md = ip.mm.join(sim_wells, sim_wells.copy(), on="Metadata_Perturbation", level="well", paired=False)
    with pytest.raises(ValueError, match="do not share their observations"):
        ip.mm.cross_retrieval(md)
    with pytest.raises(ValueError, match="n_splits"):
        ip.mm.cross_retrieval(_paired(n=10), n_splits=1)


def test_real_target_level_cross_retrieval_is_chance():
    """LINCS (A549) vs L1000 (A375): different cells and compounds, 15 shared targets but only 6 distinct pairs."""
    morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
    ip.mm.map_annotations(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["target"])
    md = ip.mm.join(morph, expr, on=("Metadata_target", "target"), sep="|")
    res = ip.mm.cross_retrieval(md, null_size=2000)
    assert (res["n_distinct_pairs"] == 6).all() and (res["n_pairs"] == 15).all()
    assert (res["corrected_p_value"] > 0.05).all()


# --------------------------------------------------------------------------- per-modality retrieval


@pytest.fixture(scope="module")
def two_mods():
    """The same simulated perturbations measured by two 'assays' (different features, shared biology)."""
    a = ip.datasets.simulate(n_plates=3, n_perturbations=16, n_moa=4, n_features=40, seed=5)
    ip.pp.normalize(a, method="mad_robustize", controls="Metadata_control_type == 'negcon'")
    b = ip.datasets.simulate(n_plates=3, n_perturbations=16, n_moa=4, n_features=25, seed=5, moa_strength=0.0,
                             perturbation_strength=0.0)  # an assay that sees nothing
    ip.pp.normalize(b, method="mad_robustize", controls="Metadata_control_type == 'negcon'")
    b.var_names = [f"prot_{i}" for i in range(b.n_vars)]
    return a, b


def test_compare_retrieval_matches_metrics_and_sees_the_difference(two_mods):
    a, b = two_mods
    md = ip.mm.join(a, b, on="Metadata_Perturbation", level="well", paired=False,
                    controls=("Metadata_control_type == 'negcon'",) * 2)
    res = ip.mm.compare_retrieval(md, perturbation="Metadata_Perturbation", controls="mm_control",
                                  annotation="Metadata_moa", null_size=2000)
    assert set(res["task"]) == {"activity", "consistency", "replicating"}
    act_a = res[(res["modality"] == "morph") & (res["task"] == "activity")].set_index("id")
    direct = ip.metrics.phenotypic_activity(a, "Metadata_Perturbation", "Metadata_control_type == 'negcon'",
                                            null_size=2000).set_index("Metadata_Perturbation")
    np.testing.assert_allclose(act_a["mean_average_precision"], direct.loc[act_a.index, "mean_average_precision"])
    frac = res.groupby(["modality", "task"])["retrieved"].mean()
    # the informative assay retrieves most active perturbations; the blind one almost none
    n_active = a.obs.loc[a.obs["Metadata_control_type"] == "trt"].groupby("Metadata_Perturbation")["Metadata_active"].first()
    assert frac[("morph", "activity")] >= 0.6 * n_active.mean()
    assert frac[("expr", "activity")] <= 0.15
    # percent replicating agrees with ip.metrics and shows the same contrast
    pr = ip.metrics.percent_replicating(a, "Metadata_Perturbation", controls="Metadata_control_type == 'negcon'",
                                        n_null=1000, seed=0)
    assert frac[("morph", "replicating")] == pytest.approx(pr.percent)
    assert frac[("morph", "replicating")] > frac[("expr", "replicating")] + 0.4
    comp = ip.mm.complementarity(res, task="activity")
    s = comp.attrs["summary"]
    assert s["n_only_expr"] <= 2 and s["n_only_morph"] >= 5
    assert s["n_both"] + s["n_only_morph"] + s["n_only_expr"] == s["n_union"]


def test_compare_retrieval_real_plates_restricted_to_shared_moas():
    morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ip.pp.normalize(expr, method="mad_robustize")
    ip.mm.map_annotations(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["moa"])
    md = ip.mm.join(morph, expr, on={"moa": ("Metadata_moa", "moa")}, sep="|", level="well", paired=False,
                    controls=("Metadata_pert_type == 'control'", "pert_type == 'ctl_vehicle'"))
    res = ip.mm.compare_retrieval(md, perturbation={"morph": "Metadata_pert_id", "expr": "pert_id"},
                                  controls="mm_control", annotation="mm_moa", null_size=1000)
    act = res[res["task"] == "activity"]
    # same perturbation sets as the join kept: 6 LINCS compounds, 14 L1000 compounds in the 8 shared MOAs
    assert act.groupby("modality")["id"].nunique().to_dict() == {"expr": 14, "morph": 6}
    shared = set(ip.mm.join_report(md).matched)
    assert set(res.loc[res["task"] == "consistency", "id"]) <= shared
    comp = ip.mm.complementarity(res, ids=sorted(shared))
    assert len(comp) == 8
    # one LINCS compound per shared MOA except PDGFR: most MOAs cannot be scored on the morphology side
    assert comp.attrs["summary"]["n_not_evaluable"] >= 6


def test_complementarity_categories():
    res = pd.DataFrame({
        "modality": ["a"] * 4 + ["b"] * 3, "task": "consistency",
        "id": ["w", "x", "y", "z", "w", "x", "y"],
        "mean_average_precision": [0.9, 0.8, 0.1, 0.5, 0.9, 0.2, 0.7],
        "retrieved": [True, True, False, True, True, False, True],
    })
    t = ip.mm.complementarity(res).set_index("id")
    assert t["category"].to_dict() == {"w": "both", "x": "only_a", "y": "only_b", "z": "not_evaluable"}
    s = t.attrs["summary"] if t.attrs else ip.mm.complementarity(res).attrs["summary"]
    assert (s["n_both"], s["n_union"], s["jaccard"]) == (1, 3, 1 / 3)
    with pytest.raises(ValueError, match="no rows with task"):
        ip.mm.complementarity(res, task="activity")


# --------------------------------------------------------------------------- gene–compound matching


def test_gene_compound_match_simulated():
    rng = np.random.default_rng(0)
    p, genes = 30, ["EGFR", "BRAF", "MTOR", "KIT"]
    sig = {g: rng.normal(size=p) for g in genes}
    feats = [f"Cells_AreaShape_F{j}" for j in range(p)]
    # CRISPR: 3 guides-wells per gene + 6 non-targeting controls
    rows, X = [], []
    for g in genes:
        for _ in range(3):
            rows.append(g)
            X.append(sig[g] + 0.3 * rng.normal(size=p))
    for _ in range(6):
        rows.append("non-targeting")
        X.append(0.3 * rng.normal(size=p))
    crispr = ad.AnnData(X=np.array(X), obs=pd.DataFrame({"gene": rows}, index=[f"c{i}" for i in range(len(rows))]),
                        var=pd.DataFrame(index=feats))
    # compounds: 2 per gene (one also hits KIT), 6 decoys with unrelated targets; 2 wells each
    cpds, targets = [], []
    for g in genes[:3]:
        for j in range(2):
            cpds.append(f"{g.lower()}_inh_{j}")
            targets.append(g if j == 0 else f"{g}|kit")
    for j in range(6):
        cpds.append(f"decoy_{j}")
        targets.append(f"GENE{j}")
    rows, X = [], []
    for c, t in zip(cpds, targets):
        base = sig[t.split("|")[0].upper()] if not c.startswith("decoy") else rng.normal(size=p)
        for _ in range(2):
            rows.append((c, t))
            X.append(base + 0.3 * rng.normal(size=p))
    comp = ad.AnnData(X=np.array(X)[:, ::-1], obs=pd.DataFrame(rows, columns=["cpd", "target"], index=[f"d{i}" for i in range(len(rows))]),
                      var=pd.DataFrame(index=feats[::-1]))  # other column order: matched by name
    out = ip.mm.gene_compound_match(crispr, comp, gene_key="gene", target_key="target", compound_key="cpd",
                                    gene_controls="gene == 'non-targeting'", null_size=2000).set_index("gene")
    assert out.attrs["n_shared_features"] == p
    for g in ("egfr", "braf", "mtor"):
        assert out.loc[g, "n_target_compounds"] == 2
        assert out.loc[g, "mean_average_precision"] > 0.95
        assert out.loc[g, "top_compounds"].split("|")[0].startswith(g)
    # KIT is targeted (as a second target) by compounds whose profiles follow other genes: not retrieved
    assert out.loc["kit", "n_target_compounds"] == 3
    assert out.loc["kit", "mean_average_precision"] < out.loc["egfr", "mean_average_precision"]
    bad = comp.copy()
    bad.var_names = [f"x{j}" for j in range(p)]
    with pytest.raises(ValueError, match="share no feature"):
        ip.mm.gene_compound_match(crispr, bad, gene_key="gene", target_key="target", compound_key="cpd")


def test_gene_compound_match_real_cmqtl_vs_lincs_has_no_shared_target():
    crispr, cpds = ip.datasets.cmqtl_crispri(), ip.datasets.lincs_plate()
    genes = {g.casefold() for g in crispr.obs["Metadata_target_gene"].unique()} - {"control"}
    targets = {t.casefold() for v in cpds.obs["Metadata_target"].dropna() for t in v.split("|")}
    assert not genes & targets  # independent check of what the error says
    with pytest.raises(ValueError, match="no compound in `compounds` targets any"):
        ip.mm.gene_compound_match(crispr, cpds, gene_key="Metadata_target_gene", target_key="Metadata_target",
                                  compound_key="Metadata_broad_sample", gene_controls="Metadata_target_gene == 'CONTROL'")
