"""ip.mm joins: name/dose normalisation, reports, real LINCS / L1000 / nELISA overlap, bad input."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import imgprof as ip
from imgprof._core.provenance import record
from imgprof.mm._keys import normalize_names, recode_doses, to_micromolar, unit_factor

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def morph():
    return ip.datasets.lincs_plate()


@pytest.fixture(scope="module")
def hub():
    return ip.datasets.repurposing_hub()


@pytest.fixture(scope="module")
def expr(hub):
    e = ip.datasets.l1000_plate()
    ip.mm.map_annotations(e, hub, on="pert_iname", columns=["moa", "target"])
    return e


def _toy(names, doses=None, unit=None, n_feat=4, seed=0, prefix="f"):
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame({"name": names})
    if doses is not None:
        obs["dose"] = doses
    if unit is not None:
        obs["unit"] = unit
    obs.index = [f"r{i}" for i in range(len(names))]
    return ad.AnnData(X=rng.normal(size=(len(names), n_feat)), obs=obs,
                      var=pd.DataFrame(index=[f"{prefix}{j}" for j in range(n_feat)]))


def _split_set(values, sep="|"):
    out = set()
    for v in values:
        if isinstance(v, str) and v.strip():
            out |= {p.strip().casefold() for p in v.split(sep) if p.strip()}
    return out


# --------------------------------------------------------------------------- kernels


def test_normalize_names_modes():
    s = ["  Dasatinib ", "DASATINIB", "PD-0325901", None, "-666", "", "BRD-K93779381-001-01-9"]
    assert normalize_names(s, "exact").tolist()[:3] == ["  Dasatinib ", "DASATINIB", "PD-0325901"]
    cf = normalize_names(s, "casefold")
    assert cf[0] == cf[1] == "dasatinib"
    assert cf[3:6].isna().all()  # None, -666 and "" are missing, never a key
    assert normalize_names(["PD-0325901", "pd 0325901"], "alnum").nunique() == 1
    assert normalize_names(s, "broad_id")[6] == "brd-k93779381"
    assert normalize_names(["a"], str.upper).tolist() == ["A"]
    with pytest.raises(ValueError, match="names="):
        normalize_names(["a"], "lower")


def test_units_and_conversion():
    for u in ("uM", "µM", "μM", "um", "micromolar", "umol/L"):
        assert unit_factor(u) == 1.0
    assert unit_factor("nM") == 1e-3 and unit_factor("mM") == 1e3
    with pytest.raises(ValueError, match="mg/ml"):
        unit_factor("mg/ml")
    np.testing.assert_allclose(to_micromolar([10, 40, -666], ["nM", "uM", "-666"]), [0.01, 40, np.nan])
    with pytest.raises(ValueError, match="no unit"):
        to_micromolar([10, 5], ["uM", None])
    with pytest.raises(ValueError, match="unknown concentration unit"):
        to_micromolar([1.0], ["mg/ml"])
    with pytest.raises(ValueError, match="non-numeric"):
        to_micromolar(["ten"], "uM")


def test_recode_doses_tolerance_and_off_series():
    rec, st = recode_doses([0.041152, 0.12346, 3.3333, 10.0, 1.0, 19.999, 0.0, -1.0, np.nan])
    np.testing.assert_allclose(rec[:4], [0.04, 0.12, 3.33, 10.0])
    assert st.tolist() == ["on_series"] * 4 + ["off_series", "off_series", "zero", "negative", "missing"]
    rec2, st2 = recode_doses([1.0], off_series="nearest")
    assert rec2[0] == 1.11 and st2[0] == "snapped"
    with pytest.raises(ValueError, match="not within"):
        recode_doses([1.0], off_series="raise")
    # with a looser tolerance 1.0 µM is 'the same' as 1.11 µM (ratio 1.11)
    assert recode_doses([1.0], rtol=0.12)[1][0] == "on_series"


def test_recode_dose_lincs_real(morph):
    a = morph.copy()
    ip.mm.recode_dose(a, "Metadata_mmoles_per_liter", "uM")
    d = a.obs["Metadata_mmoles_per_liter"].to_numpy(float)
    series = np.array(ip.mm.STANDARD_DOSES_UM)
    # independent expectation: within 5 % of a series value on the ratio scale
    ratio = d[:, None] / series[None, :]
    on = (d > 0) & (np.abs(np.log(np.where(ratio > 0, ratio, 1e-300))).min(axis=1) <= np.log(1.05))
    st = a.obs["Metadata_dose_recode_status"].astype(str).to_numpy()
    assert ((st == "on_series") == on).all()
    assert (st == "zero").sum() == (d == 0).sum() == 24
    # the compound with the 1/3^k series (0.0041..1 µM) and the 20 µM wells are off the series, not snapped
    off = a.obs.loc[st == "off_series"]
    assert set(off["Metadata_broad_sample"].str[:13]) == {"BRD-K92301463", "BRD-K50691590", "BRD-K60230970"}
    assert np.isnan(a.obs.loc[st == "off_series", "Metadata_dose_recode"]).all()
    # the stored step documents the unit
    assert "mm.recode_dose" in ip.provenance(a)["function"].tolist()


def test_recode_dose_l1000_unit_column():
    e = ip.datasets.l1000_plate()
    ip.mm.recode_dose(e, "pert_dose", "pert_dose_unit")
    trt = e.obs["pert_dose_unit"] == "um"
    np.testing.assert_allclose(e.obs.loc[trt, "Metadata_dose_recode"], e.obs.loc[trt, "pert_dose"].astype(float))
    assert (e.obs.loc[~trt, "Metadata_dose_recode_status"] == "missing").all()
    assert (~trt).sum() == 26


def test_recode_dose_wrong_unit_is_explicit(morph):
    for wrong in ("nM", "mM"):
        with pytest.raises(ip.mm.DoseUnitError, match="probably uM"):
            ip.mm.recode_dose(morph, "Metadata_mmoles_per_liter", wrong, copy=True)
    with pytest.raises(ip.mm.DoseUnitError, match="neither a known concentration unit"):
        ip.mm.recode_dose(morph, "Metadata_mmoles_per_liter", "mmoles", copy=True)


# --------------------------------------------------------------------------- annotation


def test_annotate_l1000_through_repurposing_hub(hub):
    e = ip.datasets.l1000_plate()
    ip.mm.map_annotations(e, hub, on="pert_iname", columns=["moa", "target"])
    rep = e.uns["mm_annotate"]
    names = set(e.obs["pert_iname"])
    hub_cf = {n.casefold() for n in hub["pert_iname"]}
    expect_unmatched = {n for n in names if n.casefold() not in hub_cf}
    assert set(rep.loc[~rep["matched"], "name"]) == expect_unmatched
    assert len(expect_unmatched) == 21
    # CYT387 is spelled 'cyt387' in the hub: matched only after case folding, and said so
    row = rep.set_index("name").loc["CYT387"]
    assert row["matched"] and row["table_name"] == "cyt387" and "normalisation" in row["note"]
    # (the hub has no MOA for cyt387, but its targets)
    assert (e.obs.loc[e.obs["pert_iname"] == "CYT387", "target"] == "JAK1|JAK2|JAK3").all()
    e2 = ip.datasets.l1000_plate()
    ip.mm.map_annotations(e2, hub, on="pert_iname", columns=["target"], names="exact")
    assert e2.obs.loc[e2.obs["pert_iname"] == "CYT387", "target"].isna().all()


def test_annotate_ambiguous_and_clash():
    a = _toy(["x", "y"])
    table = pd.DataFrame({"name": ["X", "x", "y"], "moa": ["m1", "m2", "m3"]})
    with pytest.raises(ip.mm.AmbiguousKeyError, match="several different annotations"):
        ip.mm.map_annotations(a, table, on="name", columns=["moa"])
    same = pd.DataFrame({"name": ["X", "x", "y"], "moa": ["m1", "m1", "m3"]})
    ip.mm.map_annotations(a, same, on="name", columns=["moa"])  # identical duplicates collapse
    assert a.obs["moa"].tolist() == ["m1", "m3"]
    with pytest.raises(KeyError, match="already has column"):
        ip.mm.map_annotations(a, same, on="name", columns=["moa"])
    with pytest.raises(KeyError, match="annotation table"):
        ip.mm.map_annotations(a, same, on="name", columns=["target"])


# --------------------------------------------------------------------------- real data: mechanism-level overlap


def test_shared_moas_and_targets_match_independent_count(morph, expr):
    """The issue states 8 shared MOAs and 15 shared targets; recompute them with plain pandas."""
    trt = expr.obs["pert_type"] != "ctl_vehicle"
    for lcol, rcol, n_expected in (("Metadata_moa", "moa", 8), ("Metadata_target", "target", 15)):
        expected = _split_set(morph.obs[lcol]) & _split_set(expr.obs.loc[trt, rcol])
        assert len(expected) == n_expected
        rep = ip.mm.match_keys(morph, expr, on=(lcol, rcol), sep="|")
        assert set(rep.matched) == expected
        assert rep.summary["n_matched"] == n_expected
        # keys seen on each side equal the split label sets (nothing dropped silently)
        t = rep.table
        assert set(t.loc[t["n_morph"] > 0, lcol]) == _split_set(morph.obs[lcol])
        assert set(t.loc[t["n_expr"] > 0, lcol]) == _split_set(expr.obs[rcol])
        # rows without a label are reported with their reason
        d = rep.dropped.set_index(["modality", "reason"])["n_rows"]
        assert d[("morph", f"missing {lcol}")] == int(morph.obs[lcol].isna().sum())
        assert d[("expr", f"missing {rcol}")] == int(expr.obs[rcol].isna().sum())


def test_join_moa_consensus_is_median_of_rows(morph, expr):
    md = ip.mm.join(morph, expr, on={"moa": ("Metadata_moa", "moa")}, sep="|")
    assert md.n_obs == 8
    assert list(md["morph"].obs_names) == list(md["expr"].obs_names) == list(md.obs_names)
    assert md["morph"].shape[1] == morph.n_vars and md["expr"].shape[1] == expr.n_vars
    for key in ("egfr inhibitor", "pdgfr tyrosine kinase receptor inhibitor"):
        for mod, src, col in (("morph", morph, "Metadata_moa"), ("expr", expr, "moa")):
            rows = src.obs[col].map(lambda v: isinstance(v, str) and key in [p.strip().casefold() for p in v.split("|")])
            np.testing.assert_allclose(md[mod][key].X.ravel(), np.median(src.X[rows.to_numpy()], axis=0))
            assert md[mod].obs.loc[key, "mm_n_profiles"] == rows.sum()
            assert md.obs.loc[key, f"n_{mod}"] == rows.sum()
    assert ip.mm.join_report(md).summary["n_matched"] == 8
    assert record(md["morph"]).level == "consensus"


def test_join_target_report_flags_identical_profiles(morph, expr):
    rep = ip.mm.match_keys(morph, expr, on=("Metadata_target", "target"), sep="|")
    groups = rep.summary["keys_with_identical_rows"]
    # the four PKC targets come from one compound on each plate: the same profile four times
    assert ["prkca", "prkcb", "prkcd", "prkcg"] in groups["morph"]
    assert ["prkca", "prkcb", "prkcd", "prkcg"] in groups["expr"]
    assert "same morph rows" in rep.table.set_index("key").loc["prkca", "note"]


def test_no_shared_treatment_compound_only_dmso(morph, expr):
    # compound ids: LINCS Metadata_broad_sample (long Broad ids) vs L1000 pert_id (short ids)
    rep = ip.mm.match_keys(morph, expr, on=("Metadata_broad_sample", "pert_id"), names="broad_id")
    assert rep.matched == ["dmso"]
    with pytest.raises(ip.mm.JoinError, match="0 key\\(s\\) matched") as err:
        ip.mm.join(morph, expr, on=("Metadata_pert_id", "pert_id"))
    assert err.value.report is not None and err.value.report.summary["n_matched"] == 0
    assert "Metadata_pert_id: 0 shared value(s)" in str(err.value)


def test_nelisa_shares_compounds_with_lincs_and_l1000(morph, expr):
    prot = ip.datasets.nelisa()
    r1 = ip.mm.match_keys(morph, prot, on="Metadata_broad_sample", names="broad_id", mod_names=("morph", "prot"))
    lincs_ids = {v[:13].casefold() for v in morph.obs["Metadata_broad_sample"].dropna()}
    nel_ids = {v[:13].casefold() for v in prot.obs["Metadata_broad_sample"].dropna()}
    assert set(r1.matched) == lincs_ids & nel_ids
    assert len(r1.matched) == 2
    r2 = ip.mm.match_keys(prot, expr, on=("Metadata_pert_iname", "pert_iname"), mod_names=("prot", "expr"))
    assert set(r2.matched) == {n.casefold() for n in prot.obs["Metadata_pert_iname"].dropna()} & {
        n.casefold() for n in expr.obs["pert_iname"]}


# --------------------------------------------------------------------------- doses in the join


def test_join_with_dose_key(morph, expr):
    md = ip.mm.join(morph, expr, on={"moa": ("Metadata_moa", "moa")}, dose=("Metadata_mmoles_per_liter", "pert_dose"),
                    dose_unit=("uM", "pert_dose_unit"), sep="|")
    assert set(md.obs["dose"].astype(float)) <= set(ip.mm.STANDARD_DOSES_UM)
    assert md.n_obs == 8 * 6
    rep = ip.mm.join_report(md)
    reasons = dict(zip(zip(rep.dropped["modality"], rep.dropped["reason"]), rep.dropped["n_rows"]))
    assert reasons[("expr", "missing dose (pert_dose)")] == 26
    assert rep.summary["dose_status"]["morph"]["off_series"] == 30
    with pytest.raises(ip.mm.DoseUnitError, match="dose_unit= is required"):
        ip.mm.join(morph, expr, on=("Metadata_moa", "moa"), dose=("Metadata_mmoles_per_liter", "pert_dose"))
    with pytest.raises(ip.mm.DoseUnitError, match="probably uM"):
        ip.mm.join(morph, expr, on=("Metadata_moa", "moa"), dose=("Metadata_mmoles_per_liter", "pert_dose"),
                   dose_unit=("nM", "pert_dose_unit"), sep="|")


def test_dose_units_normalised_before_matching():
    a = _toy(["c1", "c1", "c2"], doses=[10.0, 3.3333, 1.1111])
    b = _toy(["C1", "c1", "c2"], doses=[10000, 3330, 1110], unit=["nM", "nM", "nM"], seed=1, prefix="g")
    rep = ip.mm.match_keys(a, b, on="name", dose="dose", dose_unit=("uM", "unit"))
    assert sorted(rep.matched) == ["c1; 10", "c1; 3.33", "c2; 1.11"]
    b.obs.loc["r2", "unit"] = "mg/ml"
    with pytest.raises(ip.mm.DoseUnitError, match="mg/ml"):
        ip.mm.match_keys(a, b, on="name", dose="dose", dose_unit=("uM", "unit"))


# --------------------------------------------------------------------------- names, ambiguity, levels


def test_names_normalisation_is_explicit():
    a = _toy(["Dasatinib", "PD-0325901", "x"])
    b = _toy(["dasatinib ", "PD0325901", "y"], seed=1, prefix="g")
    with pytest.raises(ip.mm.JoinError):
        ip.mm.join(a, b, on="name", names="exact")
    rep = ip.mm.match_keys(a, b, on="name")
    assert rep.matched == ["dasatinib"]
    t = rep.table.set_index("key")
    assert "matched after name normalisation" in t.loc["dasatinib", "note"]
    assert "names='alnum'" in t.loc["pd-0325901", "note"]  # the near miss is pointed out
    assert sorted(ip.mm.match_keys(a, b, on="name", names="alnum").matched) == ["dasatinib", "pd0325901"]


def test_well_level_pairing_and_ambiguity(sim_wells):
    a = sim_wells
    rng = np.random.default_rng(0)
    b = ad.AnnData(X=rng.normal(size=(a.n_obs, 7)), obs=a.obs.copy(), var=pd.DataFrame(index=[f"p{i}" for i in range(7)]))
    b = b[rng.permutation(b.n_obs)].copy()  # other row order
    md = ip.mm.join(a, b, on=["Metadata_Plate", "Metadata_Well"], level="well", mod_names=("morph", "prot"))
    assert md.n_obs == a.n_obs
    # rows are paired by plate/well whatever the input order
    pa = md["morph"].obs[["Metadata_Plate", "Metadata_Well"]].to_numpy()
    pb = md["prot"].obs[["Metadata_Plate", "Metadata_Well"]].to_numpy()
    assert (pa == pb).all()
    src = pd.DataFrame(b.X, index=b.obs["Metadata_Plate"] + "/" + b.obs["Metadata_Well"])
    np.testing.assert_allclose(md["prot"].X, src.loc[[f"{p}/{w}" for p, w in pa]].to_numpy())
    with pytest.raises(ip.mm.AmbiguousKeyError, match="identify several rows"):
        ip.mm.join(a, b, on="Metadata_Perturbation", level="well")
    md2 = ip.mm.join(a, b, on="Metadata_Perturbation", level="well", paired=False)
    assert md2["morph"].n_obs == a.n_obs and all(n.startswith("morph:") for n in md2["morph"].obs_names)
    with pytest.raises(ValueError, match="only used with level='well', paired=False"):
        ip.mm.join(a, b, on="Metadata_Perturbation", controls=("Metadata_moa == 'control'",) * 2)


def test_unpaired_join_keeps_controls(morph, expr):
    md = ip.mm.join(morph, expr, on={"moa": ("Metadata_moa", "moa")}, sep="|", level="well", paired=False,
                    controls=("Metadata_pert_type == 'control'", "pert_type == 'ctl_vehicle'"))
    assert int(md["morph"].obs["mm_control"].sum()) == 24 and int(md["expr"].obs["mm_control"].sum()) == 26
    rep = ip.mm.join_report(md)
    assert md["morph"].n_obs == 24 + rep.summary["n_rows_matched"]["morph"]
    assert (md["morph"].obs.loc[~md["morph"].obs["mm_control"], "mm_moa"] != "").all()


def test_levels_differ_consensus_first(sim_wells):
    wells = sim_wells
    trt = wells[wells.obs["Metadata_control_type"] == "trt"].copy()
    cons = ip.pp.consensus(trt, by="Metadata_Perturbation")
    md = ip.mm.join(wells, cons, on="Metadata_Perturbation", level="perturbation", mod_names=("wells", "cons"))
    # the already-consensus side passes through unchanged, the well side is aggregated
    ref = pd.DataFrame(cons.X, index=cons.obs["Metadata_Perturbation"].astype(str).str.casefold())
    np.testing.assert_allclose(md["cons"].X, ref.loc[md.obs_names].to_numpy())
    assert (md["cons"].obs["mm_n_profiles"] == 1).all() and (md["wells"].obs["mm_n_profiles"] == 4).all()


def test_bad_input_messages(morph, expr):
    with pytest.raises(TypeError, match="expected an AnnData"):
        ip.mm.join(morph, expr.obs, on="x")
    with pytest.raises(KeyError, match=r"on \(expr\)"):
        ip.mm.join(morph, expr, on="Metadata_moa")
    with pytest.raises(ValueError, match="level="):
        ip.mm.join(morph, expr, on=("Metadata_moa", "moa"), level="plate")
    with pytest.raises(ValueError, match="two different names"):
        ip.mm.join(morph, expr, on=("Metadata_moa", "moa"), mod_names=("a", "a"))
    with pytest.raises(ip.mm.JoinError, match="need at least 9"):
        ip.mm.join(morph, expr, on=("Metadata_moa", "moa"), sep="|", min_matches=9)


def test_report_survives_h5mu(tmp_path, morph, expr):
    import mudata

    md = ip.mm.join(morph, expr, on=("Metadata_moa", "moa"), sep="|")
    p = tmp_path / "j.h5mu"
    with mudata.set_options(pull_on_update=False):
        md.write(p)
        back = ip.mm.join_report(mudata.read_h5mu(p))
    assert back.matched == ip.mm.join_report(md).matched
    assert back.summary["keys"] == ["Metadata_moa"]
    assert "8 matched" in repr(back)


@pytest.mark.parametrize("level,paired", [("perturbation", True), ("well", True), ("well", False)])
def test_join_keeps_earlier_provenance(sim_wells, level, paired):
    """Every branch of join keeps the inputs' provenance steps and level (two of three used to reset them)."""
    a = sim_wells.copy()
    ip.pp.normalize(a, "standardize", controls="Metadata_control_type == 'negcon'", by="Metadata_Plate")
    rng = np.random.default_rng(1)
    b = ad.AnnData(X=rng.normal(size=(a.n_obs, 5)), obs=a.obs.copy(), var=pd.DataFrame(index=[f"p{i}" for i in range(5)]))
    on = "Metadata_Perturbation" if level == "perturbation" or not paired else ["Metadata_Plate", "Metadata_Well"]
    md = ip.mm.join(a, b, on=on, level=level, paired=paired, mod_names=("morph", "prot"))
    before = ip.provenance(a)["function"].tolist()
    after = ip.provenance(md["morph"])["function"].tolist()
    assert "pp.normalize" in before
    assert after[: len(before)] == before  # earlier steps first, unchanged
    assert after[-1] == "mm.join"
    if level == "perturbation":
        assert "pp.consensus" in after and record(md["morph"]).level == "consensus"
    else:
        assert record(md["morph"]).level == record(a).level
    # the MuData itself logs the join once; the input's level is not overwritten
    assert ip.provenance(md)["function"].tolist() == ["mm.join"]
    assert record(a).level == "well"


def test_annotate_is_a_deprecated_alias_of_map_annotations(hub):
    """mm.annotate was renamed map_annotations (pp.annotate joins a platemap); the old name warns for one release."""
    new, old = ip.datasets.l1000_plate(), ip.datasets.l1000_plate()
    ip.mm.map_annotations(new, hub, on="pert_iname", columns=["moa"])
    with pytest.warns(FutureWarning, match="map_annotations"):
        ip.mm.annotate(old, hub, on="pert_iname", columns=["moa"])
    pd.testing.assert_series_equal(new.obs["moa"], old.obs["moa"])
    pd.testing.assert_frame_equal(new.uns["mm_annotate"], old.uns["mm_annotate"])
    assert ip.provenance(new)["function"].iloc[-1] == "mm.map_annotations"
