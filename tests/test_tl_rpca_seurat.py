"""ip.tl.rpca against Seurat 4.3.0's own RPCA integration (stored outputs; R is not needed).

The reference outputs in tests/data/seurat_rpca were computed once by
``make_seurat_rpca.R`` (run through ``regenerate.py``; versions in ``versions.txt``):
``FindIntegrationAnchors(reduction = "rpca")`` + ``IntegrateData`` with Seurat's
defaults. Cases: the per-batch standardised cmQTL batches (exact neighbours, and
Seurat's default Annoy), four batches of unequal size (merge tree), fewer anchors
than ``k.weight`` (Seurat stops with an error) and ``k.weight = 2`` (cells whose
weights are all zero; Seurat returns NaN for them).
"""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import imgprof as ip

HERE = Path(__file__).resolve().parent / "data" / "seurat_rpca"


def _load_regenerate():
    spec = importlib.util.spec_from_file_location("seurat_rpca_regenerate", HERE / "regenerate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


REGEN = _load_regenerate()


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(HERE / "seurat_rpca.npz"))


@pytest.fixture(scope="module")
def cases():
    return REGEN.cases()


def _run(case, **kw):
    obs = pd.DataFrame({"batch": case["batch"]}, index=[f"c{i}" for i in range(len(case["batch"]))])
    a = ad.AnnData(np.asarray(case["X"], dtype=np.float64), obs=obs)
    ip.tl.rpca(a, "batch", k_weight=case["k_weight"], **kw)
    return a


def _seurat(case, ref, name):
    """Seurat's integrated matrix (input − stored correction)."""
    np.testing.assert_allclose(REGEN.fingerprint(case["X"]), ref[f"{name}__fingerprint"], rtol=1e-12,
                               err_msg=f"{name}: the rebuilt input is not the one Seurat integrated")
    return np.asarray(case["X"], dtype=np.float64) - ref[f"{name}__correction"].astype(np.float64)


def _knn_overlap(A, B, k=10):
    from sklearn.neighbors import NearestNeighbors

    ia = NearestNeighbors(n_neighbors=k + 1).fit(A).kneighbors(A)[1][:, 1:]
    ib = NearestNeighbors(n_neighbors=k + 1).fit(B).kneighbors(B)[1][:, 1:]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ia, ib)]))


def _tree_merges(tree: np.ndarray, sizes: np.ndarray) -> list[tuple[list[int], list[int]]]:
    """Seurat's merges as (reference batches, query batches), 0-based, after its size swap."""
    groups = {-(b + 1): [b] for b in range(len(sizes))}
    out = []
    for t, (m1, m2) in enumerate(tree.tolist()):
        g1, g2 = groups.pop(m1), groups.pop(m2)
        if sizes[g2].sum() > sizes[g1].sum():
            g1, g2 = g2, g1
        groups[t + 1] = g1 + g2
        out.append((g1, g2))
    return out


@pytest.mark.parametrize("name", ["cmqtl", "four_batches"])
def test_rpca_reproduces_seurat(ref, cases, name):
    """Exact neighbours: the integrated matrix equals Seurat's to float32 precision."""
    case = cases[name]
    S = _seurat(case, ref, name)
    a = _run(case)
    Y = a.obsm["X_rpca"]
    scale = np.abs(S).max()
    assert np.abs(Y - S).max() <= 1e-4 * scale, np.abs(Y - S).max() / scale
    assert _knn_overlap(Y, S) >= 0.999
    # Seurat's correction is far larger than the tolerance (the comparison is not trivial)
    assert np.abs(S - case["X"]).max() > 100 * 1e-4 * scale
    # same anchors and the same merges as Seurat
    extra = ip.provenance(a).iloc[-1]["extra"]
    assert extra["n_anchors"] == len(ref[f"{name}__anchors"]) // 2
    levels = sorted(set(case["batch"]))
    sizes = np.array([(case["batch"] == lv).sum() for lv in levels])
    expect = _tree_merges(ref[f"{name}__tree"], sizes)
    got = [([levels.index(b) for b in m["reference"]], [levels.index(b) for b in m["query"]]) for m in extra["merges"]]
    assert got == expect


def test_four_batches_exercise_the_merge_tree(ref):
    """The multi-batch case really has a reference swap and a merge of two integrated groups."""
    tree = ref["four_batches__tree"]
    assert tree.shape == (3, 2) and (tree[-1] > 0).all()  # last merge joins two groups
    assert tree[0].tolist() == [-3, -2]  # R's hclust order, not sorted pairs


def test_anchors_equal_seurat_cmqtl(ref, cases):
    """Anchor pairs, their order and their scores are Seurat's (FindAnchorPairs + ScoreAnchors)."""
    R = importlib.import_module("imgprof.tl.rpca")
    case = cases["cmqtl"]
    levels = sorted(set(case["batch"]))
    rows = [np.flatnonzero(case["batch"] == lv) for lv in levels]
    S = [R._scale(case["X"][r]) for r in rows]
    pcs = [R._svd(s, 50) for s in S]
    mine = R.find_anchors_pair(S[0], S[1], pcs[0], pcs[1])
    theirs = ref["cmqtl__anchors"]
    theirs = theirs[: len(theirs) // 2]  # first orientation; Seurat's cell indices are 1-based, per batch
    np.testing.assert_array_equal(mine[:, :2] + 1, theirs[:, :2])
    np.testing.assert_allclose(mine[:, 2], theirs[:, 2], atol=1e-12)


def test_rpca_close_to_seurat_default_annoy(ref, cases):
    """With Seurat's default approximate (Annoy) neighbours the match is close, not exact."""
    case = cases["cmqtl_annoy"]
    S = _seurat(case, ref, "cmqtl_annoy")
    Y = _run(case).obsm["X_rpca"]
    scale = np.abs(S).max()
    assert np.abs(Y - S).max() <= 0.02 * scale
    assert np.abs(Y - S).mean() <= 1e-3 * scale
    assert _knn_overlap(Y, S) >= 0.98


def test_zero_weight_cells_left_uncorrected(ref, cases):
    """k.weight = 2: cells whose weights are all zero get NaN from Seurat; imgprof leaves them as they are."""
    case = cases["zero_weights"]
    S = _seurat(case, ref, "zero_weights")
    nan_rows = ~np.isfinite(S).all(axis=1)
    assert nan_rows.sum() >= 1
    with pytest.warns(UserWarning, match="all-zero anchor weights"):
        a = _run(case)
    Y = a.obsm["X_rpca"]
    assert np.isfinite(Y).all()
    np.testing.assert_array_equal(Y[nan_rows], case["X"][nan_rows])
    ok = ~nan_rows
    assert np.abs(Y[ok] - S[ok]).max() <= 1e-4 * np.abs(S[ok]).max()
    merges = ip.provenance(a).iloc[-1]["extra"]["merges"]
    assert sum(m["n_cells_no_weight"] for m in merges) == nan_rows.sum()


def test_fewer_anchor_cells_than_k_weight(ref, cases):
    """Seurat 4.3 stops with an error; imgprof uses every anchor cell and says so."""
    assert "not a multiple of replacement length" in str(ref["few_anchors_annoy__error"])
    assert "more nearest neighbours than there are points" in str(ref["few_anchors__error"])
    case = cases["few_anchors"]
    with pytest.warns(UserWarning, match="fewer than k_weight=300"):
        a = _run(case)
    Y = a.obsm["X_rpca"]
    assert np.isfinite(Y).all()
    k_used = ip.provenance(a).iloc[-1]["extra"]["merges"][0]["k_weight"]
    assert 0 < k_used < 300
    # the same as asking for that k directly (which warns about nothing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = _run({**case, "k_weight": k_used})
    np.testing.assert_allclose(Y, b.obsm["X_rpca"], rtol=0, atol=1e-12)


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript not installed (needs R 4.2 + Seurat 4.3.0)")
def test_regenerate_with_r_matches_stored(tmp_path, ref):
    """Rerunning the R script reproduces the stored Seurat outputs (only where R and Seurat are installed)."""
    import subprocess

    out = subprocess.run(["Rscript", "-e", 'cat(as.character(packageVersion("Seurat")))'],
                         check=False, capture_output=True, text=True)
    if out.returncode != 0 or out.stdout.strip() != "4.3.0":
        pytest.skip(f"Seurat 4.3.0 not available in R (got {out.stdout.strip() or out.stderr.strip()[:80]!r})")
    new = dict(np.load(REGEN.main(["--out", str(tmp_path)])))
    assert set(new) == set(ref)
    for k, v in ref.items():
        if k.endswith("__correction"):
            np.testing.assert_allclose(new[k], v, rtol=0, atol=1e-5, err_msg=k)
        elif v.dtype.kind in "fi":
            np.testing.assert_allclose(new[k], v, rtol=1e-10, atol=1e-10, err_msg=k)
