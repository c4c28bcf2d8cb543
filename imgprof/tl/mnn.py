"""Fast mutual-nearest-neighbour correction (fastMNN-inspired, numpy/scikit-learn).

Follows the steps of batchelor's ``fastMNN`` (Haghverdi et al. 2018; Lun 2019):

1. cosine-normalise every profile;
2. multi-batch PCA: centre on the mean of the batch means and weight every
   batch equally when computing the rotation;
3. merge batches one at a time into a growing reference: find mutual nearest
   neighbours (MNN pairs) between the reference and the next batch, average
   the pair differences per MNN cell, remove the variation along the overall
   batch vector in both (fastMNN's "centre along batch vector" step),
   recompute the differences, and smooth them onto every cell of the new batch.

It is not batchelor's algorithm number for number and has not been compared
with it (batchelor, a Bioconductor package, is not installable here). Known
differences from ``fastMNN()`` with its defaults: the smoothing is a Gaussian
kernel over each cell's 100 nearest MNN cells with one bandwidth per batch (the
median distance to the 100th), where fastMNN uses a tricube kernel over the 20
nearest MNN cells with a per-cell bandwidth of 3 × the distance to the 10th;
the default merge order is largest batch first (fastMNN: input order); with
three or more batches fastMNN also centres each side of a merge along the batch
vectors of the other side's earlier merges, which is not done here (only the
current batch vector is removed); the PCA is scikit-learn's randomized SVD for
large inputs (fastMNN: irlba).

The output is the corrected PC embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from anndata import AnnData

from .._core.docs import doc_params
from .._core.validation import check_float, check_int, finish, start
from .integrate import INTEGRATION_DOC, prepare, store_correction


def cosine_normalize(X: np.ndarray) -> np.ndarray:
    """Divide each row by its L2 norm (rows of zeros stay zero)."""
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norm > 0, norm, 1.0)


def multibatch_pca(X: np.ndarray, codes: np.ndarray, n_comps: int, *, random_state: int = 0) -> np.ndarray:
    """PCA in which every batch has the same weight (batchelor's ``multiBatchPCA``).

    The centre is the mean of the batch means; rows are scaled by
    ``1/sqrt(n_batch)`` for the SVD so large batches do not dominate the
    rotation; all rows are then projected onto it.
    """
    from sklearn.utils.extmath import randomized_svd

    levels = np.unique(codes)
    means = np.vstack([X[codes == b].mean(axis=0) for b in levels])
    center = means.mean(axis=0)
    counts = np.bincount(codes)
    w = 1.0 / np.sqrt(counts[codes])
    Xc = X - center
    n_comps = int(min(n_comps, min(Xc.shape) - 1))
    if n_comps < 1:
        raise ValueError("mnn: not enough observations or features for a PCA.")
    if n_comps >= min(Xc.shape) // 2:
        _, _, Vt = np.linalg.svd(Xc * w[:, None], full_matrices=False)
        Vt = Vt[:n_comps]
    else:
        _, _, Vt = randomized_svd(Xc * w[:, None], n_comps, random_state=random_state)
    return Xc @ Vt.T


def _knn(data: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.neighbors import NearestNeighbors

    k = min(k, data.shape[0])
    nn = NearestNeighbors(n_neighbors=k).fit(data)
    dist, idx = nn.kneighbors(query)
    return dist, idx


def find_mutual_nn(ref: np.ndarray, cur: np.ndarray, k1: int, k2: int) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours: pairs (i in ref, j in cur) with j among i's k1 NN in cur and i among j's k2 NN in ref."""
    _, idx_cur = _knn(cur, ref, k1)  # for each ref cell, its NN in cur
    _, idx_ref = _knn(ref, cur, k2)  # for each cur cell, its NN in ref
    n_ref = ref.shape[0]
    ref_side = np.repeat(np.arange(n_ref), idx_cur.shape[1])
    cur_side = idx_cur.ravel()
    fwd = ref_side.astype(np.int64) * cur.shape[0] + cur_side
    back = idx_ref.ravel().astype(np.int64) * cur.shape[0] + np.repeat(np.arange(cur.shape[0]), idx_ref.shape[1])
    keep = np.isin(fwd, back)
    return ref_side[keep], cur_side[keep]


def _average_correction(ref: np.ndarray, pairs_ref: np.ndarray, cur: np.ndarray, pairs_cur: np.ndarray):
    """Mean correction vector (ref partner − cur cell) per unique MNN cell of ``cur``."""
    cells, inv = np.unique(pairs_cur, return_inverse=True)
    delta = ref[pairs_ref] - cur[pairs_cur]
    sums = np.zeros((cells.size, ref.shape[1]))
    np.add.at(sums, inv, delta)
    counts = np.bincount(inv, minlength=cells.size)[:, None]
    return sums / counts, cells


def _center_along(mat: np.ndarray, vec: np.ndarray) -> np.ndarray:
    """Remove variation along the batch vector (batchelor's ``.center_along_batch_vector``)."""
    norm = np.linalg.norm(vec)
    if norm == 0:
        return mat
    u = vec / norm
    loc = mat @ u
    return mat + np.outer(loc.mean() - loc, u)


def _gaussian_smooth(cur: np.ndarray, mnn_cells: np.ndarray, vectors: np.ndarray, k: int, sigma: float | None):
    """Correction for every cur cell: Gaussian-weighted mean of the vectors of its ``k`` nearest MNN cells."""
    dist, idx = _knn(cur[mnn_cells], cur, k)
    if sigma is None:
        sigma = float(np.median(dist[:, -1]))
    sigma = max(sigma, 1e-12)
    d2 = dist**2
    w = np.exp(-(d2 - d2[:, :1]) / (2 * sigma**2))  # shift by the nearest for numerical stability
    w /= w.sum(axis=1, keepdims=True)
    return np.einsum("nk,nkd->nd", w, vectors[idx]), sigma


def fastmnn_kernel(
    X: np.ndarray,
    codes: np.ndarray,
    *,
    n_comps: int | None,
    merge_order: Sequence[int] | None,
    k: int,
    k_smooth: int,
    sigma: float | None,
    cos_norm: bool,
    center_batch_vector: bool,
    random_state: int,
) -> tuple[np.ndarray, dict]:
    """Correct ``X`` (n × p) for the batches in ``codes``; returns ``(embedding, info)``.

    The options are those of :func:`mnn` (which holds their defaults), except that
    ``n_comps=None`` skips the PCA (``X`` is already an embedding) and ``merge_order``
    lists batch codes; ``merge_order=None`` merges the largest batch first.
    """
    Y = cosine_normalize(X) if cos_norm else np.asarray(X, dtype=np.float64)
    if n_comps is not None:
        Y = multibatch_pca(Y, codes, n_comps, random_state=random_state)
    n_batches = int(codes.max()) + 1
    if merge_order is None:
        sizes = np.bincount(codes, minlength=n_batches)
        merge_order = list(np.argsort(-sizes, kind="stable"))
    merge_order = [int(b) for b in merge_order]
    if sorted(merge_order) != list(range(n_batches)):
        raise ValueError(f"mnn: merge_order must be a permutation of the {n_batches} batch indices, got {merge_order}.")
    first = np.flatnonzero(codes == merge_order[0])
    ref, ref_rows = Y[first].copy(), [first]
    info: dict[str, list[Any]] = {"merge_order": merge_order, "n_pairs": [], "sigma": []}
    for b in merge_order[1:]:
        rows = np.flatnonzero(codes == b)
        cur = Y[rows].copy()
        p_ref, p_cur = find_mutual_nn(ref, cur, k, k)
        if p_ref.size == 0:
            raise ValueError(f"mnn: no mutual nearest neighbours between batch {b} and the merged reference; "
                             "the batches share no population (try a larger k).")
        vec, cells = _average_correction(ref, p_ref, cur, p_cur)
        if center_batch_vector:
            overall = vec.mean(axis=0)
            ref = _center_along(ref, overall)
            cur = _center_along(cur, overall)
            vec, cells = _average_correction(ref, p_ref, cur, p_cur)
        corr, s = _gaussian_smooth(cur, cells, vec, min(k_smooth, cells.size), sigma)
        ref = np.vstack([ref, cur + corr])
        ref_rows.append(rows)
        info["n_pairs"].append(int(p_ref.size))
        info["sigma"].append(float(s))
    out = np.empty_like(ref)
    out[np.concatenate(ref_rows)] = ref
    return out, info


@doc_params(**INTEGRATION_DOC)
def mnn(
    adata: AnnData, batch_key: str, *,
    n_comps: int | None = 50,
    k: int = 20,
    k_smooth: int = 100,
    sigma: float | None = None,
    cos_norm: bool = True,
    center_batch_vector: bool = True,
    merge_order: Sequence[str] | None = None,
    random_state: int = 0,
    use_rep: str = "X", key_added: str = "X_mnn", copy: bool = False,
) -> AnnData | None:
    """Fast mutual-nearest-neighbour batch correction (fastMNN-inspired; see the module notes for the differences).

    Parameters
    ----------
    {adata_batch}
    n_comps
        PCs of the multi-batch PCA (ignored when ``use_rep`` is an embedding).
    k
        Neighbours for the mutual-nearest-neighbour search.
    k_smooth
        MNN cells that each cell's correction is averaged over.
    sigma
        Gaussian kernel bandwidth; default: the median distance from a cell
        to its ``k_smooth``-th nearest MNN cell.
    cos_norm
        Cosine-normalise profiles first (as fastMNN's default ``cos.norm = TRUE``).
    center_batch_vector
        Remove variation along the average batch vector before correcting (fastMNN).
    merge_order
        Batch names in merge order; default largest batch first (fastMNN's
        default is the input order).
    random_state
        Seed of the randomized SVD.
    use_rep
        ``"X"`` (default: cosine-normalise, then multi-batch PCA) or an
        ``.obsm`` embedding (then no PCA is done).
    {key_added}
    {copy}

    {returns_obsm}

    {example_cmqtl}
    >>> ip.tl.mnn(adata, "Metadata_Batch", n_comps=30)
    >>> adata.obsm["X_mnn"].shape
    (768, 30)
    """
    check_int(n_comps, "n_comps", min_value=1)
    check_int(k, "k", min_value=1)
    check_int(k_smooth, "k_smooth", min_value=1)
    check_float(sigma, "sigma", min_value=0.0, include_min=False, allow_none=True)
    X, codes, levels = prepare(adata, batch_key, use_rep)
    order_idx = None
    if merge_order is not None:
        missing = [b for b in merge_order if str(b) not in levels]
        if missing or len(merge_order) != len(levels):
            raise ValueError(f"mnn: merge_order must list every batch of {batch_key!r} once: {levels}; got {list(merge_order)}.")
        order_idx = [levels.index(str(b)) for b in merge_order]
    adata = start(adata, copy)
    # the options go to the kernel and to the log as they are; n_comps and merge_order are translated for the kernel
    opts: dict[str, Any] = dict(k=k, k_smooth=k_smooth, sigma=sigma, cos_norm=cos_norm,
                                center_batch_vector=center_batch_vector, random_state=random_state)
    Y, info = fastmnn_kernel(X, codes, n_comps=None if use_rep not in (None, "X") else n_comps, merge_order=order_idx, **opts)
    info["merge_order"] = [levels[i] for i in info["merge_order"]]
    store_correction(adata, Y, function="tl.mnn", batch_key=batch_key, levels=levels,
                     params=dict(n_comps=n_comps, merge_order=merge_order, **opts), use_rep=use_rep, key_added=key_added,
                     kind="embedding", **info)
    return finish(adata, copy)
