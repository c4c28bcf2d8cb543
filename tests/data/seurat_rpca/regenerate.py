"""Inputs for, and packing of, the Seurat 4.3.0 RPCA reference outputs in this folder.

``python tests/data/seurat_rpca/regenerate.py [--out DIR]`` writes every case's input
as CSV, runs ``make_seurat_rpca.R`` (needs ``Rscript`` with Seurat 4.3.0) and packs
Seurat's integrated matrices into ``seurat_rpca.npz`` (float32) in ``DIR`` (default:
this folder). ``tests/test_tl_rpca_seurat.py`` reads the npz, and rebuilds the inputs
with :func:`cases` (the npz keeps a fingerprint of each input to check they match).
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def cmqtl_standardized() -> tuple[np.ndarray, np.ndarray]:
    """The bundled cmQTL batches, each feature z-scored within each batch (population sd)."""
    import imgprof as ip

    a = ip.datasets.cmqtl_crispri()
    X = np.asarray(a.X, dtype=np.float64)
    batch = a.obs["Metadata_Batch"].astype(str).to_numpy()
    Z = np.empty_like(X)
    for b in np.unique(batch):
        m = batch == b
        Z[m] = (X[m] - X[m].mean(0)) / X[m].std(0)
    return Z, batch


def simulate(sizes: list[int], n_features: int, seed: int, n_clusters: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Clusters shared by all batches, each batch with its own per-feature shift and scale; rows shuffled.

    The within-cluster spread has geometrically decaying variances along random directions, so
    consecutive principal components are well separated (about 7 %): the PCA is well defined and
    R's ``irlba`` converges to the exact SVD (with nearly tied components neither would be stable).
    """
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.normal(size=(n_features, n_features)))[0]
    sd = 3.0 * 0.93 ** np.arange(n_features)
    centres = rng.normal(0.0, 0.8, (n_clusters, n_features)) * sd
    parts, labels = [], []
    for b, n in enumerate(sizes):
        lab = rng.integers(0, n_clusters, n)
        shift, scale = rng.normal(0.0, 1.5, n_features), rng.uniform(0.6, 1.4, n_features)
        Z = centres[lab] + rng.normal(0.0, 1.0, (n, n_features)) * sd
        parts.append((Z @ Q.T) * scale + shift)
        labels += [f"b{b + 1}"] * n
    X, batch = np.vstack(parts), np.array(labels)
    perm = rng.permutation(len(X))
    return X[perm], batch[perm]


def cases() -> dict[str, dict]:
    """name -> dict(X, batch, k_weight, nn_method, note)."""
    Z, b = cmqtl_standardized()
    out = {
        "cmqtl": {"X": Z, "batch": b, "k_weight": 100, "nn_method": "exact",
                  "note": "cmQTL CRISPRi, 2 batches x 384 wells x 362 features, standardised per batch; "
                          "Seurat defaults, every neighbour search exact"},
        "cmqtl_annoy": {"X": Z, "batch": b, "k_weight": 100, "nn_method": "annoy",
                        "note": "as cmqtl, Seurat's default approximate neighbours (Annoy)"},
    }
    # Seurat's own PCA (irlba, npcs = 50) equals the exact SVD only when 50 is well below
    # min(cells, features) and the components are well separated, and IntegrateData stops when a query has fewer than k.weight
    # distinct anchor cells: hence 120 features and a few hundred cells per batch.
    X, b = simulate([320, 240, 380, 260], 120, seed=1)
    out["four_batches"] = {"X": X, "batch": b, "irlba_tol": 1e-10, "k_weight": 100, "nn_method": "exact",
                               "note": "4 batches of unequal size: merge tree, reference swap by size, integrated group as reference"}
    X, b = simulate([150, 120], 120, seed=2)
    out["few_anchors"] = {"X": X, "batch": b, "irlba_tol": 1e-10, "k_weight": 300, "nn_method": "exact",
                              "note": "k.weight = 300, more than the anchors between the two batches"}
    out["few_anchors_annoy"] = {**out["few_anchors"], "nn_method": "annoy",
                                "note": "as few_anchors, Seurat's default Annoy neighbours"}
    X, b = simulate([200, 160], 120, seed=3)
    out["zero_weights"] = {"X": X, "batch": b, "irlba_tol": 1e-10, "k_weight": 2, "nn_method": "exact",
                               "note": "k.weight = 2: cells whose nearest anchor has score 0 get all-zero weights"}
    return out


def fingerprint(X: np.ndarray) -> np.ndarray:
    """A few numbers that identify an input matrix (to check a rebuilt input is the one R saw)."""
    X = np.asarray(X, dtype=np.float64)
    return np.array([X.shape[0], X.shape[1], X.sum(), (X * X).sum(), X[0].sum(), X[:, 0].sum()])


def write_inputs(d: Path) -> dict[str, dict]:
    cs = cases()
    rows = []
    for name, c in cs.items():
        X = c["X"]
        df = pd.DataFrame(X, columns=[f"f{j + 1}" for j in range(X.shape[1])],
                          index=[f"c{i + 1}" for i in range(X.shape[0])])
        df.insert(0, "batch", c["batch"])
        with gzip.open(d / f"{name}_input.csv.gz", "wt") as fh:
            df.to_csv(fh, float_format="%.17g")
        rows.append({"name": name, "k_weight": c["k_weight"], "nn_method": c["nn_method"],
                     "irlba_tol": c.get("irlba_tol", np.nan)})
    pd.DataFrame(rows).to_csv(d / "cases.csv", index=False)
    return cs


def pack(cs: dict[str, dict], rdir: Path, out: Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    for name, c in cs.items():
        arrays[f"{name}__fingerprint"] = fingerprint(c["X"])
        err = rdir / f"{name}_error.txt"
        if err.exists():
            arrays[f"{name}__error"] = np.array(err.read_text().strip())
            continue
        Y = pd.read_csv(rdir / f"{name}_integrated.csv.gz", index_col=0).to_numpy()
        # Seurat's correction (input − integrated): zero on reference rows, so it packs small
        arrays[f"{name}__correction"] = (np.asarray(c["X"], dtype=np.float64) - Y).astype(np.float32)
        an = pd.read_csv(rdir / f"{name}_anchors.csv.gz")
        arrays[f"{name}__anchors"] = an[["cell1", "cell2", "score", "dataset1", "dataset2"]].to_numpy(np.float64)
        arrays[f"{name}__tree"] = pd.read_csv(rdir / f"{name}_tree.csv").to_numpy(np.int64)
        warn = rdir / f"{name}_warnings.txt"
        if warn.exists():
            arrays[f"{name}__warnings"] = np.array(warn.read_text().strip())
    arrays["versions"] = np.array((rdir / "versions.txt").read_text().strip())
    np.savez_compressed(out, **arrays)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(HERE), help="folder for seurat_rpca.npz")
    p.add_argument("--keep", default=None, help="keep the CSV inputs/outputs in this folder")
    a = p.parse_args(argv)
    rscript = shutil.which("Rscript")
    if rscript is None:
        raise SystemExit("Rscript not found: install R and Seurat 4.3.0 (apt-get install r-base-core r-cran-seurat).")
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="seurat_rpca_"))
    work.mkdir(parents=True, exist_ok=True)
    cs = write_inputs(work)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    subprocess.run([rscript, str(HERE / "make_seurat_rpca.R"), str(work), str(work / "out")], check=True, env=env)
    out = Path(a.out) / "seurat_rpca.npz"
    pack(cs, work / "out", out)
    if not a.keep:
        shutil.rmtree(work)
    return out


if __name__ == "__main__":
    print(main())
