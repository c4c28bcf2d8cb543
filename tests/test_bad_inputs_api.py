"""Bad inputs to the API (issue #14): every case raises a clear error and changes nothing.

Each case asserts the exception type, that the message names the culprit (the
parameter, column, key or value at fault) and that the input AnnData -- and a
view's parent -- is unchanged (``X``, ``obs``, ``var``, ``uns``, layers, obsm).
The data are tiny, so the module runs in seconds. The io readers/writers and
the CLI have their own module.
"""

from __future__ import annotations

import pickle
import re
import warnings
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import imgprof as ip

# --------------------------------------------------------------------------- data


def _wells() -> ad.AnnData:
    return ip.datasets.simulate(n_plates=2, n_perturbations=4, n_moa=2, n_controls=4, n_features=12, seed=0)


def _cells() -> ad.AnnData:
    return ip.datasets.simulate(
        n_plates=1, n_perturbations=4, n_moa=2, n_controls=4, n_features=12, level="single_cell", seed=0
    )


@pytest.fixture(scope="module")
def base():
    w = _wells()
    g = w.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ip.tl.pca(g, n_comps=5)
        ip.tl.neighbors(g, n_neighbors=4)
    return SimpleNamespace(w=w, c=_cells(), g=g)


def _with_x(a: ad.AnnData, X) -> ad.AnnData:
    b = a.copy()
    b.X = X
    return b


def _string_x(a: ad.AnnData) -> ad.AnnData:
    X = a.X.astype(object)
    X[3, 2] = "n/a"
    return ad.AnnData(X=X, obs=a.obs.copy(), var=a.var.copy(), uns=dict(a.uns))


def _dup_var(a: ad.AnnData) -> ad.AnnData:
    b = a.copy()
    names = list(b.var_names)
    names[1] = names[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b.var_names = names
    return b


def _inf_x(a: ad.AnnData) -> ad.AnnData:
    X = np.array(a.X, dtype=float)
    X[0, 4] = np.inf
    return _with_x(a, X)


def _nan_x(a: ad.AnnData) -> ad.AnnData:
    X = np.array(a.X, dtype=float)
    X[2, 1] = np.nan
    return _with_x(a, X)


def _empty(a: ad.AnnData) -> ad.AnnData:
    return a[:0].copy()


# --------------------------------------------------------------------------- snapshots


def _snap(a) -> dict:
    if not isinstance(a, ad.AnnData):
        return {"obj": pickle.dumps(a)}
    X = a.X
    return {
        "X": np.array(X, dtype=object if X.dtype == object else None, copy=True),
        "obs": a.obs.copy(),
        "var": a.var.copy(),
        "uns": pickle.dumps(dict(a.uns)),
        "layers": {k: np.array(v, copy=True) for k, v in a.layers.items()},
        "obsm": {k: np.array(v, copy=True) for k, v in a.obsm.items()},
        "obs_names": list(a.obs_names),
        "var_names": list(a.var_names),
        "is_view": a.is_view,
    }


def _assert_same(before: dict, after: dict) -> None:
    if "obj" in before:
        assert before["obj"] == after["obj"]
        return
    assert before["obs_names"] == after["obs_names"] and before["var_names"] == after["var_names"]
    assert before["is_view"] == after["is_view"]
    if before["X"].dtype == object:
        assert (before["X"] == after["X"]).all()
    else:
        np.testing.assert_array_equal(before["X"], after["X"])
    pd.testing.assert_frame_equal(before["obs"], after["obs"])
    pd.testing.assert_frame_equal(before["var"], after["var"])
    assert before["uns"] == after["uns"], "adata.uns changed"
    assert before["layers"].keys() == after["layers"].keys()
    assert before["obsm"].keys() == after["obsm"].keys()
    for k in before["layers"]:
        np.testing.assert_array_equal(before["layers"][k], after["layers"][k])
    for k in before["obsm"]:
        np.testing.assert_array_equal(before["obsm"][k], after["obsm"][k])


# --------------------------------------------------------------------------- cases
# Each case: id, builder (base -> the object(s) passed), call (obj -> None), exception, culprit regex.
# A builder returning a tuple (parent, view) checks the view's parent too.

NEG = "Metadata_control_type == 'negcon'"


def _view(a):
    parent = a.copy()
    return parent, parent[parent.obs["Metadata_Plate"] == "plate_1"]


W = lambda b: b.w.copy()
C = lambda b: b.c.copy()
G = lambda b: b.g.copy()


def _mdata(a):
    """A paired MuData of ``a`` with itself (well level, by plate and well)."""
    return ip.mm.join(a.copy(), a.copy(), on=["Metadata_Plate", "Metadata_Well"], level="well",
                      mod_names=("morph", "copy"))


def _site():
    """One tiny image site: channels and a label image with two objects."""
    img = np.random.default_rng(0).random((32, 32))
    lab = np.zeros((32, 32), dtype=int)
    lab[4:10, 4:10] = 1
    lab[20:28, 20:28] = 2
    return [{"DNA": img}, lab]  # a list: a tuple would mean (parent, view) to the test


def _reordered_series(a):
    """A boolean Series selecting the controls, in another row order (aligned by index it is right)."""
    s = a.obs["Metadata_control_type"] == "negcon"
    return s.iloc[::-1]


def _foreign_series(a):
    return pd.Series(np.ones(a.n_obs, dtype=bool), index=[f"x{i}" for i in range(a.n_obs)])


def _normalize_with_controls(controls):
    """``pp.normalize`` called with ``controls``: a value, or a function of the AnnData that builds it."""
    return lambda a: ip.pp.normalize(a, controls=controls(a) if callable(controls) else controls)


# pp.normalize's controls= selections that must fail: case, controls (or a function of the AnnData), exception, culprit.
NORMALIZE_CONTROLS = [
    ("bare-column", "Metadata_control_type", ValueError, r"Metadata_control_type.*column name.*=="),
    ("bare-numeric-column", "Metadata_Count_Cells", ValueError, r"Metadata_Count_Cells.*=="),
    ("backticked-column", "`Metadata_moa`", ValueError, r"Metadata_moa.*column name"),
    ("empty-selection", "Metadata_Plate == 'nope'", ValueError, r"controls=.*nope.*selects no observation"),
    ("query-error", "Metadata_nope == 1", ValueError, r"controls=.*Metadata_nope"),
    ("query-not-bool", "Metadata_Count_Cells + 1", ValueError, r"controls=.*not booleans"),
    ("mask-length", np.ones(3, bool), ValueError, r"controls.*length 3.*n_obs=16"),
    ("series-foreign-index", _foreign_series, ValueError, r"controls.*index"),
    ("series-not-bool", lambda a: a.obs["Metadata_control_type"], TypeError, r"controls.*booleans"),
    ("int-positions", np.arange(4), TypeError, r"controls.*integer positions"),
    ("scalar-selection", True, TypeError, r"controls=True"),
    ("unknown-names", ["nope_1"], KeyError, r"controls.*nope_1"),
]

CASES: list[tuple] = [
    # ---- pp.normalize
    ("normalize-dataframe", lambda b: b.w.obs.copy(), lambda a: ip.pp.normalize(a), TypeError, r"AnnData.*DataFrame"),
    ("normalize-none", lambda b: None, lambda a: ip.pp.normalize(a), TypeError, r"AnnData.*NoneType"),
    ("normalize-array", lambda b: np.zeros((3, 3)), lambda a: ip.pp.normalize(a), TypeError, r"AnnData.*ndarray"),
    ("normalize-view", lambda b: _view(b.w), lambda a: ip.pp.normalize(a, controls=NEG), ValueError, r"view"),
    *[(f"normalize-{name}", W, _normalize_with_controls(sel), exc, culprit) for name, sel, exc, culprit in NORMALIZE_CONTROLS],
    ("normalize-method", W, lambda a: ip.pp.normalize(a, "zscore"), ValueError, r"method.*zscore"),
    ("normalize-string-x", lambda b: _string_x(b.w), lambda a: ip.pp.normalize(a), TypeError, r"adata\.X.*'n/a'"),
    ("normalize-dup-var", lambda b: _dup_var(b.w), lambda a: ip.pp.normalize(a), ValueError, r"var_names.*duplicated"),
    ("normalize-n-quantiles-str", W, lambda a: ip.pp.normalize(a, "inverse_normal", n_quantiles="30"), TypeError,
     r"n_quantiles"),
    ("normalize-epsilon", W, lambda a: ip.pp.normalize(a, epsilon=-1.0), ValueError, r"epsilon"),
    ("normalize-epsilon-str", W, lambda a: ip.pp.normalize(a, epsilon="1e-18"), TypeError, r"epsilon.*'1e-18'"),
    ("normalize-spherize-center", W, lambda a: ip.pp.normalize(a, "spherize", spherize_center="yes"), TypeError,
     r"spherize_center"),
    ("normalize-by-missing", W, lambda a: ip.pp.normalize(a, by="Metadata_Plat"), KeyError, r"Metadata_Plat"),
    ("normalize-inf", lambda b: _inf_x(b.w), lambda a: ip.pp.normalize(a), ValueError, r"adata\.X.*1 inf value"),
    ("normalize-layer", W, lambda a: ip.pp.normalize(a, layer="raw"), KeyError, r"layer='raw'"),
    ("normalize-zero-scale", W, lambda a: ip.pp.normalize(a, zero_scale="ignore"), ValueError, r"zero_scale"),
    ("normalize-zero-rows", lambda b: _empty(b.w), lambda a: ip.pp.normalize(a), ValueError, r"0 observations"),
    ("normalize-copy-str", W, lambda a: ip.pp.normalize(a, copy="yes"), TypeError, r"copy"),
    ("normalize-samples-and-controls", W, lambda a: ip.pp.normalize(a, controls=NEG, samples="all"), ValueError,
     r"controls= or samples="),
    # ---- pp.feature_select
    ("fs-min-variance-bool", W, lambda a: ip.pp.feature_select(a, min_variance=True), TypeError, r"min_variance"),
    ("fs-noise-groups-int", W, lambda a: ip.pp.feature_select(
        a, "noise_removal", noise_removal_perturb_groups=12345, noise_removal_stdev_cutoff=0.5), TypeError,
     r"noise_removal_perturb_groups.*12345"),
    ("fs-noise-groups-length", W, lambda a: ip.pp.feature_select(
        a, "noise_removal", noise_removal_perturb_groups=["a", "b"], noise_removal_stdev_cutoff=0.5), ValueError,
     r"noise_removal_perturb_groups.*2 labels"),
    ("fs-noise-missing-cutoff", W, lambda a: ip.pp.feature_select(
        a, "noise_removal", noise_removal_perturb_groups="Metadata_Perturbation"), ValueError,
     r"noise_removal_stdev_cutoff"),
    ("fs-na-cutoff", W, lambda a: ip.pp.feature_select(a, "drop_na_columns", na_cutoff=2), ValueError, r"na_cutoff"),
    ("fs-corr-threshold-str", W, lambda a: ip.pp.feature_select(a, corr_threshold="0.9"), TypeError, r"corr_threshold"),
    ("fs-operation", W, lambda a: ip.pp.feature_select(a, "variance"), ValueError, r"operation.*variance"),
    ("fs-operation-twice", W, lambda a: ip.pp.feature_select(a, ["blocklist", "blocklist"]), ValueError, r"twice"),
    ("fs-samples-bare-column", W, lambda a: ip.pp.feature_select(a, samples="Metadata_control_type"), ValueError,
     r"samples=.*Metadata_control_type.*=="),
    ("fs-samples-empty", W, lambda a: ip.pp.feature_select(a, samples="Metadata_moa == 'zzz'"), ValueError,
     r"samples=.*zzz"),
    ("fs-corr-method", W, lambda a: ip.pp.feature_select(a, corr_method="cosine"), ValueError, r"corr_method.*cosine"),
    ("fs-dup-var", lambda b: _dup_var(b.w), lambda a: ip.pp.feature_select(a), ValueError, r"duplicated feature name"),
    ("fs-view", lambda b: _view(b.w), lambda a: ip.pp.feature_select(a), ValueError, r"view"),
    ("fs-dataframe", lambda b: b.w.obs.copy(), lambda a: ip.pp.feature_select(a), TypeError, r"AnnData"),
    ("fs-string-x", lambda b: _string_x(b.w), lambda a: ip.pp.feature_select(a), TypeError, r"adata\.X.*'n/a'"),
    ("fs-features-missing", W, lambda a: ip.pp.feature_select(a, features=["nope"]), KeyError, r"features.*nope"),
    ("fs-inf", lambda b: _inf_x(b.w), lambda a: ip.pp.feature_select(a), ValueError, r"inf"),
    ("fs-outlier-cutoff", W, lambda a: ip.pp.feature_select(a, "drop_outliers", outlier_cutoff=-3), ValueError,
     r"outlier_cutoff"),
    ("fs-key-added", W, lambda a: ip.pp.feature_select(a, key_added=None), TypeError, r"key_added"),
    ("fs-zero-rows", lambda b: _empty(b.w), lambda a: ip.pp.feature_select(a), ValueError, r"0 observations"),
    # ---- pp.qc
    ("qc-min-cells", W, lambda a: ip.pp.qc(a, min_cells=-5), ValueError, r"min_cells.*-5"),
    ("qc-min-cells-float", W, lambda a: ip.pp.qc(a, min_cells=2.5), TypeError, r"min_cells"),
    ("qc-count-z", W, lambda a: ip.pp.qc(a, count_z=0), ValueError, r"count_z"),
    ("qc-outlier-fraction", W, lambda a: ip.pp.qc(a, outlier_fraction=1.5), ValueError, r"outlier_fraction"),
    ("qc-max-nan-fraction", W, lambda a: ip.pp.qc(a, max_nan_fraction="half"), TypeError, r"max_nan_fraction"),
    ("qc-level", W, lambda a: ip.pp.qc(a, level="plate"), ValueError, r"level.*plate"),
    ("qc-controls-bare", W, lambda a: ip.pp.qc(a, controls="Metadata_control_type"), ValueError,
     r"Metadata_control_type.*=="),
    ("qc-view", lambda b: _view(b.w), lambda a: ip.pp.qc(a), ValueError, r"view"),
    ("qc-dataframe", lambda b: b.w.obs.copy(), lambda a: ip.pp.qc(a), TypeError, r"AnnData"),
    ("qc-by-missing", W, lambda a: ip.pp.qc(a, by="Metadata_Plates"), KeyError, r"Metadata_Plates"),
    ("qc-key-added", W, lambda a: ip.pp.qc(a, key_added=3), TypeError, r"key_added"),
    ("qc-string-x", lambda b: _string_x(b.w), lambda a: ip.pp.qc(a), TypeError, r"adata\.X"),
    ("qc-zero-rows", lambda b: _empty(b.w), lambda a: ip.pp.qc(a), ValueError, r"0 observations"),
    # ---- pp.aggregate
    ("agg-count-key-overwrites", C, lambda a: ip.pp.aggregate(a, count_key="Metadata_moa"), ValueError,
     r"count_key='Metadata_moa'.*overwrite=True"),
    ("agg-operation", C, lambda a: ip.pp.aggregate(a, operation="max"), ValueError, r"operation.*max"),
    ("agg-dataframe", lambda b: b.c.obs.copy(), lambda a: ip.pp.aggregate(a), TypeError, r"AnnData"),
    ("agg-none", lambda b: None, lambda a: ip.pp.aggregate(a), TypeError, r"AnnData"),
    ("agg-by-missing", C, lambda a: ip.pp.aggregate(a, by="Metadata_Wel"), KeyError, r"Metadata_Wel"),
    ("agg-count-key-in-by", C, lambda a: ip.pp.aggregate(a, by="Metadata_Well", count_key="Metadata_Well"),
     ValueError, r"count_key='Metadata_Well'"),
    ("agg-zero-rows", lambda b: _empty(b.c), lambda a: ip.pp.aggregate(a), ValueError, r"0 observations"),
    ("agg-string-x", lambda b: _string_x(b.c), lambda a: ip.pp.aggregate(a), TypeError, r"adata\.X.*'n/a'"),
    ("agg-inf-option", C, lambda a: ip.pp.aggregate(a, inf="skip"), ValueError, r"inf.*skip"),
    ("agg-n-jobs", C, lambda a: ip.pp.aggregate(a, n_jobs=0), ValueError, r"n_jobs"),
    ("agg-dup-var", lambda b: _dup_var(b.c), lambda a: ip.pp.aggregate(a), ValueError, r"duplicated feature name"),
    ("agg-count-key-type", C, lambda a: ip.pp.aggregate(a, count_key=5), TypeError, r"count_key"),
    # ---- pp.consensus
    ("cons-min-weight", W, lambda a: ip.pp.consensus(a, "Metadata_Perturbation", operation="modz", min_weight=-1),
     ValueError, r"min_weight"),
    ("cons-operation", W, lambda a: ip.pp.consensus(a, "Metadata_Perturbation", operation="max"), ValueError,
     r"operation.*max"),
    ("cons-method", W, lambda a: ip.pp.consensus(a, "Metadata_Perturbation", operation="modz", method="cosine"),
     ValueError, r"method.*cosine"),
    ("cons-count-key-overwrites", W, lambda a: ip.pp.consensus(a, "Metadata_Perturbation", count_key="Metadata_moa"),
     ValueError, r"count_key='Metadata_moa'.*overwrite=True"),
    ("cons-precision", W, lambda a: ip.pp.consensus(a, "Metadata_Perturbation", precision=-1), ValueError,
     r"precision"),
    ("cons-dataframe", lambda b: b.w.obs.copy(), lambda a: ip.pp.consensus(a), TypeError, r"AnnData"),
    ("cons-single-replicate", W, lambda a: ip.pp.consensus(a, "Metadata_Perturbation", single_replicate="x"),
     ValueError, r"single_replicate"),
    ("cons-zero-rows", lambda b: _empty(b.w), lambda a: ip.pp.consensus(a, "Metadata_Perturbation"), ValueError,
     r"0 observations"),
    ("cons-by-missing", W, lambda a: ip.pp.consensus(a, "Metadata_Pert"), KeyError, r"Metadata_Pert"),
    # ---- pp.annotate
    ("annotate-feature-name", W, lambda a: ip.pp.annotate(
        a, pd.DataFrame({"well_position": a.obs["Metadata_Well"].unique(), a.var_names[0]: 1.0}),
        add_metadata_prefix=False, join_on=["well_position", "Metadata_Well"]), ValueError,
     r"name of a feature"),
    ("annotate-dataframe", lambda b: b.w.obs.copy(), lambda a: ip.pp.annotate(a, pd.DataFrame()), TypeError,
     r"AnnData"),
    ("annotate-unmatched", W, lambda a: ip.pp.annotate(a, pd.DataFrame({"well_position": ["A01"]}), unmatched="x"),
     ValueError, r"unmatched"),
    ("annotate-join-key", W, lambda a: ip.pp.annotate(a, pd.DataFrame({"well": ["A01"], "dose": [1]})), KeyError,
     r"join_on"),
    ("annotate-view", lambda b: _view(b.w), lambda a: ip.pp.annotate(
        a, pd.DataFrame({"well_position": a.obs["Metadata_Well"].unique(), "dose": 1.0})), ValueError, r"view"),
    # ---- tl
    ("pca-n-comps-str", W, lambda a: ip.tl.pca(a, n_comps="30"), TypeError, r"n_comps.*'30'"),
    ("pca-n-comps-zero", W, lambda a: ip.tl.pca(a, n_comps=0), ValueError, r"n_comps"),
    ("pca-n-comps-float", W, lambda a: ip.tl.pca(a, n_comps=2.5), TypeError, r"n_comps"),
    ("pca-dataframe", lambda b: b.w.obs.copy(), lambda a: ip.tl.pca(a), TypeError, r"AnnData"),
    ("pca-view", lambda b: _view(b.w), lambda a: ip.tl.pca(a, n_comps=3), ValueError, r"view"),
    ("pca-nan", lambda b: _nan_x(b.w), lambda a: ip.tl.pca(a, n_comps=3), ValueError, r"NaN"),
    ("pca-string-x", lambda b: _string_x(b.w), lambda a: ip.tl.pca(a, n_comps=3), TypeError, r"adata\.X"),
    ("pca-dup-var", lambda b: _dup_var(b.w), lambda a: ip.tl.pca(a, n_comps=3), ValueError, r"duplicated"),
    ("neighbors-float-k", G, lambda a: ip.tl.neighbors(a, n_neighbors=5.7), TypeError, r"n_neighbors.*5\.7"),
    ("neighbors-k-zero", G, lambda a: ip.tl.neighbors(a, n_neighbors=0), ValueError, r"n_neighbors"),
    ("neighbors-use-rep", G, lambda a: ip.tl.neighbors(a, use_rep="X_nope"), KeyError, r"X_nope"),
    ("neighbors-n-pcs", G, lambda a: ip.tl.neighbors(a, n_pcs="5"), TypeError, r"n_pcs"),
    ("neighbors-view", lambda b: _view(b.g), lambda a: ip.tl.neighbors(a), ValueError, r"view"),
    ("leiden-resolution", G, lambda a: ip.tl.leiden(a, resolution=-1), ValueError, r"resolution.*-1"),
    ("leiden-overwrites-annotation", G, lambda a: ip.tl.leiden(a, key_added="Metadata_moa"), ValueError,
     r"key_added='Metadata_moa'.*overwrite=True"),
    ("leiden-no-graph", W, lambda a: ip.tl.leiden(a), KeyError, r"neighbors"),
    ("leiden-n-iterations", G, lambda a: ip.tl.leiden(a, n_iterations=0), ValueError, r"n_iterations"),
    ("umap-n-components", G, lambda a: ip.tl.umap(a, n_components=0), ValueError, r"n_components"),
    ("umap-min-dist", G, lambda a: ip.tl.umap(a, min_dist=-1), ValueError, r"min_dist"),
    ("umap-no-graph", W, lambda a: ip.tl.umap(a), KeyError, r"neighbors"),
    ("umap-dataframe", lambda b: b.g.obs.copy(), lambda a: ip.tl.umap(a), TypeError, r"AnnData"),
    ("integrate-method", W, lambda a: ip.tl.integrate(a, "harmonize", batch_key="Metadata_Batch"), ValueError,
     r"harmonize"),
    ("combat-batch-missing", W, lambda a: ip.tl.combat(a, batch_key="Metadata_Btch"), KeyError, r"Metadata_Btch"),
    ("combat-batch-none", W, lambda a: ip.tl.combat(a, batch_key=None), ValueError, r"batch_key"),
    ("combat-zero-rows", lambda b: _empty(b.w), lambda a: ip.tl.combat(a, batch_key="Metadata_Plate"), ValueError,
     r"0 observations"),
    ("mnn-dup-var", lambda b: _dup_var(b.w), lambda a: ip.tl.mnn(a, "Metadata_Plate"), ValueError, r"duplicated"),
    ("combat-dataframe", lambda b: b.w.obs.copy(), lambda a: ip.tl.combat(a, batch_key="Metadata_Batch"),
     TypeError, r"AnnData"),
    ("combat-view", lambda b: _view(b.w), lambda a: ip.tl.combat(a, batch_key="Metadata_Plate"), ValueError,
     r"view|single level"),
    ("mnn-k-zero", W, lambda a: ip.tl.mnn(a, "Metadata_Plate", k=0), ValueError, r"\bk\b.*>= 1"),
    ("mnn-n-comps-str", W, lambda a: ip.tl.mnn(a, "Metadata_Plate", n_comps="5"), TypeError, r"n_comps.*'5'"),
    ("mnn-sigma", W, lambda a: ip.tl.mnn(a, "Metadata_Plate", sigma=-1.0), ValueError, r"sigma"),
    ("rpca-sd-weight", W, lambda a: ip.tl.rpca(a, "Metadata_Plate", sd_weight=0), ValueError, r"sd_weight"),
    ("rpca-k-anchor-float", W, lambda a: ip.tl.rpca(a, "Metadata_Plate", k_anchor=2.5), TypeError, r"k_anchor"),
    ("harmony-sigma", G, lambda a: ip.tl.harmony(a, "Metadata_Plate", sigma=-1), ValueError, r"sigma"),
    ("harmony-max-iter", G, lambda a: ip.tl.harmony(a, "Metadata_Plate", max_iter_harmony=0), ValueError,
     r"max_iter_harmony"),
    ("harmony-nclust", G, lambda a: ip.tl.harmony(a, "Metadata_Plate", nclust=1.5), TypeError, r"nclust"),
    ("scanorama-knn", G, lambda a: ip.tl.scanorama(a, "Metadata_Plate", knn=0), ValueError, r"knn"),
    ("scanorama-alpha", G, lambda a: ip.tl.scanorama(a, "Metadata_Plate", alpha=5), ValueError, r"alpha"),
    ("scvi-n-latent", W, lambda a: ip.tl.scvi(a, "Metadata_Plate", n_latent=0), ValueError, r"n_latent"),
    ("sphering-controls-bare", W, lambda a: ip.tl.sphering(a, controls="Metadata_control_type", epsilon=1e-2), ValueError,
     r"Metadata_control_type.*=="),
    ("sphering-view", lambda b: _view(b.w), lambda a: ip.tl.sphering(a, epsilon=1e-2), ValueError, r"view"),
    ("sphering-method", W, lambda a: ip.tl.sphering(a, method="whiten"), ValueError, r"method.*whiten"),
    # ---- metrics
    ("prep-n-null-zero", W, lambda a: ip.metrics.percent_replicating(a, "Metadata_Perturbation", n_null=0),
     ValueError, r"n_null"),
    ("prep-alpha", W, lambda a: ip.metrics.percent_replicating(a, "Metadata_Perturbation", alpha=5), ValueError,
     r"alpha.*5"),
    ("prep-method", W, lambda a: ip.metrics.percent_replicating(a, "Metadata_Perturbation", method="kendall"),
     ValueError, r"method.*kendall"),
    ("prep-controls-bare", W, lambda a: ip.metrics.percent_replicating(
        a, "Metadata_Perturbation", controls="Metadata_control_type"), ValueError, r"Metadata_control_type.*=="),
    ("prep-key-missing", W, lambda a: ip.metrics.percent_replicating(a, "Metadata_broad_sample"), KeyError,
     r"Metadata_broad_sample"),
    ("prep-dataframe", lambda b: b.w.obs.copy(), lambda a: ip.metrics.percent_replicating(a), TypeError, r"AnnData"),
    ("prep-n-null-float", W, lambda a: ip.metrics.percent_replicating(a, "Metadata_Perturbation", n_null=10.5),
     TypeError, r"n_null"),
    ("pmatch-n-null", W, lambda a: ip.metrics.percent_matching(a, "Metadata_moa", "Metadata_Perturbation", n_null=-1),
     ValueError, r"n_null"),
    ("ap-query-bare", W, lambda a: ip.metrics.average_precision(a, "Metadata_moa", query="Metadata_moa"), ValueError,
     r"query=.*Metadata_moa.*=="),
    ("ap-key-added-overwrites", W, lambda a: ip.metrics.average_precision(a, "Metadata_moa", key_added="Metadata_moa"),
     ValueError, r"key_added='Metadata_moa'.*overwrite=True"),
    ("ap-key-added-view", lambda b: _view(b.w), lambda a: ip.metrics.average_precision(
        a, "Metadata_moa", key_added="ap"), ValueError, r"view"),
    ("ap-max-block", W, lambda a: ip.metrics.average_precision(a, "Metadata_moa", max_block_elements=0), ValueError,
     r"max_block_elements"),
    ("ap-dataframe", lambda b: b.w.obs.copy(), lambda a: ip.metrics.average_precision(a, "Metadata_moa"), TypeError,
     r"AnnData"),
    ("ap-string-x", lambda b: _string_x(b.w), lambda a: ip.metrics.average_precision(a, "Metadata_moa"), TypeError,
     r"adata\.X"),
    ("activity-zero-rows", lambda b: _empty(b.w), lambda a: ip.metrics.phenotypic_activity(
        a, "Metadata_Perturbation", controls=NEG), ValueError, r"0 observations"),
    ("pmatch-zero-rows", lambda b: _empty(b.w), lambda a: ip.metrics.percent_matching(
        a, "Metadata_moa", "Metadata_Perturbation"), ValueError, r"0 observation"),
    ("bench-zero-rows", lambda b: _empty(b.w), lambda a: ip.bench.map_nonrep(a.X, a.obs["Metadata_moa"]), ValueError,
     r"0 row"),
    ("activity-controls-empty", W, lambda a: ip.metrics.phenotypic_activity(
        a, "Metadata_Perturbation", controls="Metadata_pert_type == 'ctl'"), ValueError, r"controls=.*ctl"),
    ("activity-controls-bare", W, lambda a: ip.metrics.phenotypic_activity(
        a, "Metadata_Perturbation", controls="Metadata_pert_type"), ValueError, r"Metadata_pert_type.*=="),
    ("activity-null-size", W, lambda a: ip.metrics.phenotypic_activity(
        a, "Metadata_Perturbation", controls=NEG, null_size=0), ValueError, r"null_size"),
    ("activity-threshold", W, lambda a: ip.metrics.phenotypic_activity(
        a, "Metadata_Perturbation", controls=NEG, threshold=5), ValueError, r"threshold"),
    ("activity-reordered-series-ok-shape", W, lambda a: ip.metrics.phenotypic_activity(
        a, "Metadata_Perturbation", controls=_reordered_series(a), null_size="100"), TypeError, r"null_size"),
    ("consistency-controls-bare", W, lambda a: ip.metrics.phenotypic_consistency(
        a, "Metadata_moa", "Metadata_Perturbation", controls="Metadata_moa"), ValueError, r"Metadata_moa.*=="),
    # ---- bench
    ("bench-negcon-strings", W, lambda a: ip.bench.map_negcon(
        a.X, a.obs["Metadata_moa"], a.obs["Metadata_control_type"]), TypeError, r"negcon.*boolean"),
    ("bench-negcon-length", W, lambda a: ip.bench.map_negcon(a.X, a.obs["Metadata_moa"], np.ones(3, bool)),
     ValueError, r"negcon"),
    ("bench-nonrep-negcon-ints", W, lambda a: ip.bench.map_nonrep(
        a.X, a.obs["Metadata_moa"], a.obs["Metadata_Count_Cells"]), TypeError, r"negcon"),
    ("bench-string-embedding", lambda b: _string_x(b.w), lambda a: ip.bench.map_nonrep(a.X, a.obs["Metadata_moa"]),
     TypeError, r"X.*'n/a'"),
    ("bench-nan-embedding", lambda b: _nan_x(b.w), lambda a: ip.bench.silhouette_label(a.X, a.obs["Metadata_moa"]),
     ValueError, r"NaN"),
    ("bench-benchmarker-negcon-bare", G, lambda a: ip.bench.Benchmarker(
        a, batch_key="Metadata_Plate", label_key="Metadata_moa", embedding_obsm_keys=["X_pca"],
        negcon="Metadata_control_type"), ValueError, r"negcon=.*Metadata_control_type.*=="),
    ("bench-benchmarker-dataframe", lambda b: b.w.obs.copy(), lambda a: ip.bench.Benchmarker(
        a, batch_key="Metadata_Plate", label_key="Metadata_moa", embedding_obsm_keys=["X_pca"]), TypeError,
     r"AnnData"),
    # ---- mm
    ("mm-join-dataframe", W, lambda a: ip.mm.join(a, a.obs, on="Metadata_Perturbation"), TypeError, r"AnnData"),
    ("mm-join-level", W, lambda a: ip.mm.join(a, a.copy(), on="Metadata_Perturbation", level="plate"), ValueError,
     r"level"),
    ("mm-join-controls-bare", W, lambda a: ip.mm.join(
        a, a.copy(), on="Metadata_Perturbation", level="well", paired=False,
        controls=("Metadata_control_type", NEG)), ValueError, r"Metadata_control_type.*=="),
    ("mm-join-controls-one", W, lambda a: ip.mm.join(
        a, a.copy(), on="Metadata_Perturbation", level="well", paired=False, controls=NEG), ValueError, r"controls"),
    ("mm-recode-dose-overwrites", W, lambda a: ip.mm.recode_dose(a, "Metadata_Count_Cells", "uM",
                                                                  key_added="Metadata_moa"), ValueError,
     r"key_added='Metadata_moa'.*overwrite=True"),
    ("mm-recode-dose-rtol", W, lambda a: ip.mm.recode_dose(a, "Metadata_Count_Cells", "uM", rtol=-1), ValueError,
     r"rtol"),
    ("mm-recode-dose-view", lambda b: _view(b.w), lambda a: ip.mm.recode_dose(a, "Metadata_Count_Cells", "uM"),
     ValueError, r"view"),
    ("mm-align-dataframe", W, lambda a: ip.mm.align(a.obs), TypeError, r"MuData.*DataFrame"),
    ("mm-align-anndata", W, lambda a: ip.mm.align(a), TypeError, r"MuData.*AnnData"),
    ("mm-align-n-components", W, lambda a: ip.mm.align(_mdata(a), n_components="2"), TypeError, r"n_components"),
    ("mm-align-n-pcs", W, lambda a: ip.mm.align(_mdata(a), n_pcs=0), ValueError, r"n_pcs"),
    ("mm-cross-null-size", W, lambda a: ip.mm.cross_retrieval(_mdata(a), null_size=0), ValueError, r"null_size"),
    ("mm-cross-threshold", W, lambda a: ip.mm.cross_retrieval(_mdata(a), threshold=2), ValueError, r"threshold"),
    ("mm-cross-n-splits", W, lambda a: ip.mm.cross_retrieval(_mdata(a), n_splits=1.5), TypeError, r"n_splits"),
    # ---- im
    ("im-quality-1d", lambda b: np.zeros(10), lambda a: ip.im.image_quality(a), ValueError, r"2-D|image"),
    ("im-smooth-method", lambda b: np.ones((16, 16)), lambda a: ip.im.smooth_illumination(a, method="blur"),
     ValueError, r"method.*blur"),
    ("im-apply-shape", lambda b: np.ones((16, 16)), lambda a: ip.im.apply_illumination(a, np.ones((8, 8))),
     ValueError, r"shape"),
    ("im-crops-size-float", lambda b: _site(), lambda a: ip.im.extract_crops(a[0], a[1], size=2.5), TypeError,
     r"size"),
    ("im-crops-mask", lambda b: _site(), lambda a: ip.im.extract_crops(a[0], a[1], mask="x"), ValueError, r"mask='x'"),
    ("im-crops-channel", lambda b: _site(), lambda a: ip.im.extract_crops(a[0], a[1], channels=["ER"]), KeyError,
     r"ER"),
    ("im-measure-radial-bins", lambda b: _site(), lambda a: ip.im.measure_objects(
        a[0], {"Nuclei": a[1]}, radial_bins=0), ValueError, r"radial_bins"),
    ("im-measure-shape", lambda b: _site(), lambda a: ip.im.measure_objects(a[0], {"Nuclei": a[1][:10]}), ValueError,
     r"shape"),
    ("im-smooth-filter-size", lambda b: np.ones((16, 16)), lambda a: ip.im.smooth_illumination(a, filter_size=-1),
     ValueError, r"filter_size"),
    ("im-fill-holes-float", lambda b: np.ones((8, 8)), lambda a: ip.im.fill_labeled_holes(a), TypeError,
     r"integers"),
    ("im-fill-holes-area", lambda b: _site()[1], lambda a: ip.im.fill_labeled_holes(a, max_hole_area=-1), ValueError,
     r"max_hole_area"),
    ("im-objects-to-anndata", lambda b: [1, 2], lambda a: ip.im.objects_to_anndata(a), TypeError, r"DataFrame"),
    ("im-quality-strings", lambda b: np.array([["a", "b"], ["c", "d"]]), lambda a: ip.im.image_quality(a), TypeError,
     r"numeric"),
    ("im-threshold-method", lambda b: np.ones((16, 16)), lambda a: ip.im.threshold_image(a, method="magic"),
     ValueError, r"magic"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(base, case):
    _, build, call, exc, culprit = case
    obj = build(base)
    parent = None
    if isinstance(obj, tuple):
        parent, obj = obj
    before = _snap(obj)
    before_parent = _snap(parent) if parent is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc) as info:
            call(obj)
    msg = str(info.value.args[0]) if info.type is KeyError and info.value.args else str(info.value)
    assert re.search(culprit, msg, flags=re.DOTALL), f"message does not name the culprit ({culprit!r}): {msg}"
    _assert_same(before, _snap(obj))
    if parent is not None:
        _assert_same(before_parent, _snap(parent))


def test_enough_cases():
    assert len(CASES) >= 100
    mods = {c[0].split("-")[0] for c in CASES}
    assert len(mods) >= 10
