"""Seurat 4.3's reciprocal-PCA (RPCA) integration, reproduced in Python (no R).

``ip.tl.rpca`` computes what Seurat 4.3.0 computes for the vignette workflow

.. code-block:: r

    obj.list <- lapply(obj.list, function(x) RunPCA(ScaleData(x, features = features), features = features))
    anchors <- FindIntegrationAnchors(obj.list, anchor.features = features, reduction = "rpca")
    integrated <- IntegrateData(anchors)

with Seurat's defaults, on every column of the input (all features are anchor
features and are integrated). It is tested against Seurat 4.3.0's own output
(``tests/data/seurat_rpca``): with exact neighbours, the integrated matrix
agrees with Seurat's to float32 precision on the per-batch standardised cmQTL
batches and on four simulated batches (max difference ≤ 4e-7 of the data's
range); against Seurat's default approximate (Annoy) neighbours the largest
difference on cmQTL is 0.8 % of the range (10-NN overlap 0.99). The batches,
in the order of the ``batch_key`` categories, play the role of Seurat's
``object.list``. Steps:

1. **Per-batch PCA.** Each batch is scaled on its own (``ScaleData``: centre,
   divide by the n−1 standard deviation, clip values *above* +10) and reduced to
   ``npcs`` = 50 components by an uncentred exact SVD (``RunPCA``; its ``irlba``
   result equals the exact SVD when ``npcs`` is well below the matrix size).
2. **Reciprocal projection** (``ReciprocalProject``). For each pair of batches
   (1, 2), batch 2's scaled data are projected onto batch 1's loadings (space
   "ref": 1's embeddings and 2's projection) and vice versa (space "query").
   In each space every one of the ``npcs`` coordinates is divided by its
   standard deviation and every cell is scaled to unit length (``L2Dim``);
   neighbour searches then use the first ``dims`` = 30 coordinates.
3. **Anchors** (``FindNN``, ``FindAnchorPairs``). Cells of 1 look for their
   ``max(k_anchor, k_score)`` nearest cells of 2 in space "query", cells of 2
   for theirs among 1 in space "ref"; pairs within each other's ``k_anchor`` = 5
   are anchors. Seurat sets ``k.filter = NA`` for RPCA: no filtering.
4. **Scores** (``ScoreAnchors``). Shared neighbours of the two anchor cells
   (their ``k_score`` = 30 nearest in their own batch's first ``dims`` PCs,
   themselves included, plus 30 across), rescaled between the 1 % and 90 %
   quantiles and clipped to [0, 1].
5. **Merge order** (``CountAnchors``, ``BuildSampleTree``). R's ``hclust``
   (complete linkage, R's tie-breaking) on 1 / (anchor rows between two
   batches, both orientations / the smaller batch). At each merge the group
   with more cells is the reference (unless ``preserve_order``); an already
   integrated group enters the next merge with its integrated values.
6. **Weights** (``FindWeights``, ``FindWeightsC``). A PCA (``dims``
   components) of the merged reference + query data, each feature scaled over
   both (clip above +10). Each query cell finds its ``k_weight`` = 100 nearest
   *distinct* anchor cells of the query (itself included when it is one);
   ``w = 1 − d / d_k`` with ``d_k`` the distance to the ``k_weight``-th; walking
   out from the nearest, every anchor row of those cells gets
   ``1 − exp(−w · score · sd_weight² / 4)``, until ``k_weight`` anchor rows have
   been used; the weights are normalised to sum to one per cell.
7. **Correction** (``FindIntegrationMatrix``, ``TransformDataMatrix``). The
   query minus its weights times the anchor vectors (query cell − reference
   cell, at the anchors); the reference keeps its values.

Where imgprof differs from Seurat 4.3.0 (all outside Seurat's working range):

* neighbours are exact (scikit-learn) where Seurat's default uses Annoy
  (approximate, float32 distances); ``nn.method = "rann"`` in Seurat is exact;
* where a query has fewer distinct anchor cells than ``k_weight`` (or fewer
  anchor rows), Seurat 4.3.0 stops with an R error ("number of items to replace
  is not a multiple of replacement length"); imgprof uses all of them
  (``k = number of distinct anchor cells``) and records the lowered value;
* a cell whose weights are all zero (its nearest anchors all have score 0)
  gets NaN from Seurat (0/0); imgprof leaves it uncorrected and counts it in
  the provenance record (``n_cells_no_weight``);
* a feature with zero variance within a batch is scaled to 0 (Seurat: NaN);
  identical anchor scores (no spread) all become 1 (Seurat: NaN);
* ``npcs`` is capped by the batch size and the number of features − 1 and
  ``dims`` by ``npcs``, where Seurat's ``irlba``/``FindIntegrationAnchors``
  would stop.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._core.docs import doc_params
from .._core.validation import check_float, check_int, finish, start
from .integrate import INTEGRATION_DOC, prepare, store_correction


def _scale(X: np.ndarray, clip: float | None = 10.0) -> np.ndarray:
    """Seurat's ``ScaleData``: centre, divide by the (n−1) standard deviation, clip values above ``clip``."""
    mu = X.mean(axis=0)
    sd = X.std(axis=0, ddof=1) if X.shape[0] > 1 else np.ones(X.shape[1])
    sd = np.where(sd > 0, sd, 1.0)
    Z = (X - mu) / sd
    if clip is not None:
        np.minimum(Z, clip, out=Z)  # Seurat clips only above (scale.max); large negative values stay
    return Z


def _svd(Z: np.ndarray, n_comps: int) -> tuple[np.ndarray, np.ndarray]:
    """Uncentred exact SVD (``RunPCA``'s irlba converges to it): embeddings ``U·S`` and loadings ``V``."""
    n_comps = int(min(n_comps, *Z.shape))
    U, s, Vt = np.linalg.svd(Z, full_matrices=False)
    return U[:, :n_comps] * s[:n_comps], Vt[:n_comps].T


def _knn_idx(data: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k nearest rows of ``data`` for each row of ``query`` (distances ascending)."""
    from sklearn.neighbors import NearestNeighbors

    k = int(min(k, data.shape[0]))
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(data)
    dist, idx = nn.kneighbors(query)
    return dist, idx


def _l2_space(M: np.ndarray) -> np.ndarray:
    """``ReciprocalProject``'s ``l2.norm``: divide each column by its sd, then each row by its length."""
    sd = M.std(axis=0, ddof=1)
    M = M / np.where(sd > 0, sd, 1.0)
    norm = np.linalg.norm(M, axis=1, keepdims=True)
    return M / np.where(norm > 0, norm, 1.0)


def _rescale_scores(score: np.ndarray) -> np.ndarray:
    """``ScoreAnchors``: (score − q01) / (q90 − q01), clipped to [0, 1] (R quantile type 7 = numpy's default)."""
    lo, hi = np.quantile(score, 0.01), np.quantile(score, 0.9)
    if hi <= lo:
        return np.ones_like(score, dtype=float)
    return np.clip((score - lo) / (hi - lo), 0.0, 1.0)


def _indicator(idx: np.ndarray, n_cols: int, offset: int = 0) -> sp.csr_matrix:
    rows = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
    M = sp.csr_matrix((np.ones(idx.size), (rows, idx.ravel() + offset)), shape=(idx.shape[0], n_cols))
    M.data[:] = 1.0  # set semantics
    return M


def find_anchors_pair(
    S1: np.ndarray, S2: np.ndarray, pca1: tuple[np.ndarray, np.ndarray], pca2: tuple[np.ndarray, np.ndarray], *,
    k_anchor: int = 5, k_score: int = 30, l2_norm: bool = True, dims: int = 30,
    self1: np.ndarray | None = None, self2: np.ndarray | None = None,
) -> np.ndarray:
    """Anchors between two batches, Seurat's ``FindAnchors`` for RPCA.

    Returns rows ``(cell in 1, cell in 2, score)`` (local indices), ordered as
    Seurat orders them (by cell of 1, then by its rank among the neighbours of
    the cell of 2, then by the rank of the cell of 2 among its own).
    ``pca1``/``pca2`` are the batches' ``(embeddings, loadings)`` with all
    ``npcs`` components; ``self1``/``self2`` optionally pass the within-batch
    neighbour indices (``k + 1`` nearest, self first) computed once per batch.
    """
    emb1, load1 = pca1
    emb2, load2 = pca2
    n1 = S1.shape[0]
    k = max(k_anchor, k_score)
    # ReciprocalProject: "ref" = 1's embeddings and 2 projected on 1's loadings; "query" = the reverse.
    space1 = np.vstack([emb1, S2 @ load1])
    space2 = np.vstack([S1 @ load2, emb2])
    if l2_norm:  # over all npcs columns, before the first `dims` are taken
        space1, space2 = _l2_space(space1), _l2_space(space2)
    d1, d2 = min(dims, space1.shape[1]), min(dims, space2.shape[1])
    space1, space2 = space1[:, :d1], space2[:, :d2]
    nnaa = self1 if self1 is not None else _knn_idx(emb1[:, :dims], emb1[:, :dims], k + 1)[1]
    nnbb = self2 if self2 is not None else _knn_idx(emb2[:, :dims], emb2[:, :dims], k + 1)[1]
    _, nnab = _knn_idx(space2[n1:], space2[:n1], k)  # cells of 1 among cells of 2, in the "query" space
    _, nnba = _knn_idx(space1[:n1], space1[n1:], k)  # cells of 2 among cells of 1, in the "ref" space
    ka = min(k_anchor, nnab.shape[1], nnba.shape[1])
    a = np.repeat(np.arange(n1), ka)
    b = nnab[:, :ka].ravel()
    back = nnba[b, :ka]
    hit = back == a[:, None]
    mutual = hit.any(axis=1)
    # FindAnchorPairs: which(arr.ind = TRUE) runs down the columns, so a cell's anchors are
    # ordered by its rank among the partner's neighbours, then by the partner's rank among its own.
    rank = np.tile(np.arange(ka), n1)[mutual]
    col = hit.argmax(axis=1)[mutual]
    a, b = a[mutual], b[mutual]
    o = np.lexsort((rank, col, a))
    a, b = a[o], b[o]
    if a.size == 0:
        return np.empty((0, 3))
    total = n1 + S2.shape[0]
    ks = min(k_score, nnaa.shape[1], nnab.shape[1], nnba.shape[1], nnbb.shape[1])
    A = (_indicator(nnaa[:, :ks], total) + _indicator(nnab[:, :ks], total, n1)).tocsr()
    B = (_indicator(nnba[:, :ks], total) + _indicator(nnbb[:, :ks], total, n1)).tocsr()
    A.data[:] = 1.0
    B.data[:] = 1.0
    shared = np.asarray(A[a].multiply(B[b]).sum(axis=1)).ravel()
    return np.column_stack([a, b, _rescale_scores(shared)])


def _nn_chain_pairs(D: np.ndarray) -> list[tuple[int, int]]:
    """Complete-linkage merges ``(i, j)`` (0-based, ``i < j``) by R's nearest-neighbour-list algorithm (``D`` is modified)."""
    n = D.shape[0]
    active = np.ones(n, bool)
    nn = np.zeros(n, int)
    dnn = np.full(n, np.inf)

    def refresh(i: int) -> None:
        best, arg = np.inf, i
        for j in range(i + 1, n):
            if active[j] and D[i, j] < best:
                best, arg = D[i, j], j
        nn[i], dnn[i] = arg, best

    for i in range(n - 1):
        refresh(i)
    pairs: list[tuple[int, int]] = []
    for _ in range(n - 1):
        best, im = np.inf, -1
        for i in range(n - 1):
            if active[i] and dnn[i] < best:
                best, im = dnn[i], i
        if im < 0:  # all remaining distances infinite: merge the first two active
            act = np.flatnonzero(active)
            im, nn[act[0]] = act[0], act[1]
        i2, j2 = min(im, nn[im]), max(im, nn[im])
        pairs.append((i2, j2))
        active[j2] = False
        for k in range(n):
            if active[k] and k != i2:
                D[i2, k] = D[k, i2] = max(D[i2, k], D[j2, k])
                if k < i2 and D[i2, k] < dnn[k]:
                    dnn[k], nn[k] = D[i2, k], i2
        refresh(i2)
        for i in range(n - 1):
            if active[i] and nn[i] in (i2, j2):
                refresh(i)
    return pairs


def _r_hclust_complete(dist: np.ndarray) -> np.ndarray:
    """R's ``hclust(as.dist(dist))$merge`` (complete linkage), R's tie-breaking and sign convention.

    Rows are merges; a negative entry −i is dataset i (1-based), a positive entry
    m is the group formed at merge m. Follows the nearest-neighbour-list
    algorithm of R's ``hclust`` (F. Murtagh), so ties resolve as in R.
    """
    pairs = _nn_chain_pairs(np.array(dist, dtype=float))
    n = dist.shape[0]
    # R's labels: a group is named by the merge that formed it; singletons are negative.
    label = {i: -(i + 1) for i in range(n)}
    merge = np.zeros((n - 1, 2), dtype=np.int64)
    for t, (i2, j2) in enumerate(pairs):
        x, y = label[i2], label[j2]
        if x > 0 and y < 0:
            x, y = y, x
        elif x > 0 and y > 0:
            x, y = min(x, y), max(x, y)
        merge[t] = (x, y)
        label[i2] = t + 1
    return merge


def _weights(
    q_emb: np.ndarray, anchor_q: np.ndarray, score: np.ndarray, k_weight: int, sd_weight: float
) -> tuple[sp.csr_matrix, int, int]:
    """Seurat's ``FindWeights``/``FindWeightsC``: (n_query × n_anchor rows) weights, rows summing to one.

    ``anchor_q`` gives, per anchor row, its query cell (local index). Returns the
    weights, the ``k`` used and the number of query cells whose weights are all zero.
    """
    cells, first = np.unique(anchor_q, return_index=True)
    cells = cells[np.argsort(first)]  # Seurat: unique() keeps the order of first appearance
    n_u, n_anchor, n_q = cells.size, anchor_q.size, q_emb.shape[0]
    k = int(min(k_weight, n_anchor, n_u))
    dist, idx = _knn_idx(q_emb[cells], q_emb, k)
    dk = dist[:, -1:]
    w = 1.0 - np.divide(dist, dk, out=np.zeros_like(dist), where=dk > 0)
    # anchor rows of each anchor cell, in row order
    cell_pos = np.empty(int(anchor_q.max()) + 1, dtype=np.int64)
    cell_pos[cells] = np.arange(n_u)
    u_of_row = cell_pos[anchor_q]
    order = np.argsort(u_of_row, kind="stable")
    cnt = np.bincount(u_of_row, minlength=n_u)
    starts = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    c = cnt[idx]
    kept = np.clip(k - (np.cumsum(c, axis=1) - c), 0, c).ravel()  # at most k anchor rows per cell, nearest first
    total = int(kept.sum())
    q_of = np.repeat(np.repeat(np.arange(n_q), k), kept)
    nb = np.repeat(idx.ravel(), kept)
    wv = np.repeat(w.ravel(), kept)
    within = np.arange(total) - np.repeat(np.cumsum(kept) - kept, kept)
    rows = order[starts[nb] + within]
    val = 1.0 - np.exp(-wv * score[rows] / (2.0 / sd_weight) ** 2)
    W = sp.csr_matrix((val, (q_of, rows)), shape=(n_q, n_anchor))
    sums = np.asarray(W.sum(axis=1)).ravel()
    W = (sp.diags(np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)) @ W).tocsr()
    return W, k, int((sums <= 0).sum())


def _anchor_distances(A: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Seurat's CountAnchors: batch × batch distance 1 / (anchors between them / smaller batch size)."""
    n_b = len(sizes)
    dist = np.zeros((n_b, n_b))
    for i in range(n_b):
        for j in range(i):
            sel = np.isin(A[:, 3], (i, j)) & np.isin(A[:, 4], (i, j))
            s = sel.sum() / min(sizes[i], sizes[j])
            dist[i, j] = dist[j, i] = 1.0 / s if s > 0 else np.inf
    return dist


def rpca_kernel(
    X: np.ndarray,
    codes: np.ndarray,
    *,
    dims: int,
    npcs: int,
    k_anchor: int,
    k_score: int,
    k_weight: int,
    sd_weight: float,
    scale: bool,
    l2_norm: bool,
    preserve_order: bool,
) -> tuple[np.ndarray, dict]:
    """Integrate the rows of ``X`` (n × p) across batches ``codes`` (0..B−1); returns ``(corrected, info)``.

    The options are those of :func:`rpca`, which holds their defaults.
    """
    X = np.asarray(X, dtype=np.float64)
    n_b = int(codes.max()) + 1
    rows = [np.flatnonzero(codes == b) for b in range(n_b)]
    sizes = np.array([r.size for r in rows])
    n_pc = int(min(npcs, X.shape[1] - 1, sizes.min() - 1))
    d = int(min(dims, n_pc))
    if d < 2:
        raise ValueError(
            f"rpca: the smallest batch has {sizes.min()} observations and there are {X.shape[1]} features; "
            "need at least 3 of each for a PCA."
        )
    S = [_scale(X[r]) if scale else X[r] for r in rows]
    pcs = [_svd(s, n_pc) for s in S]
    k_nb = max(k_anchor, k_score)
    selfnn = [_knn_idx(e[:, :d], e[:, :d], k_nb + 1)[1] for e, _ in pcs]
    # Seurat's global cell index: batches concatenated in order; pos maps it to rows of X.
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pos = np.concatenate(rows)
    # 1-4: anchors for every pair in Seurat's order (expand.grid: j outer, i inner, i < j).
    anchors = []
    for j in range(n_b):
        for i in range(j):
            an = find_anchors_pair(S[i], S[j], pcs[i], pcs[j], k_anchor=k_anchor, k_score=k_score, l2_norm=l2_norm,
                                   dims=d, self1=selfnn[i], self2=selfnn[j])
            if an.size:
                anchors.append(np.column_stack([an[:, 0] + offsets[i], an[:, 1] + offsets[j], an[:, 2],
                                                np.full(len(an), i), np.full(len(an), j)]))
    if not anchors:
        raise ValueError("rpca: no anchors found between any pair of batches.")
    A = np.vstack(anchors)
    A = np.vstack([A, A[:, [1, 0, 2, 4, 3]]])  # both orientations, as Seurat
    # 5: merge tree (CountAnchors + BuildSampleTree).
    tree = _r_hclust_complete(_anchor_distances(A, sizes))
    groups: dict[int, np.ndarray] = {-(b + 1): np.arange(offsets[b], offsets[b] + sizes[b]) for b in range(n_b)}
    members: dict[int, list[int]] = {-(b + 1): [b] for b in range(n_b)}
    data = X.copy()
    info: dict = {"dims": d, "npcs": n_pc, "n_anchors": int(len(A) // 2), "merges": []}
    for t, (m1, m2) in enumerate(tree.tolist()):
        if not preserve_order and groups[m2].size > groups[m1].size:
            m1, m2 = m2, m1
        g_ref, g_qry = groups.pop(m1), groups.pop(m2)
        b_ref, b_qry = members.pop(m1), members.pop(m2)
        groups[t + 1] = np.concatenate([g_ref, g_qry])  # merge(): reference cells, then query cells
        members[t + 1] = b_ref + b_qry
        sel = np.isin(A[:, 3], b_ref) & np.isin(A[:, 4], b_qry)
        if not sel.any():
            raise ValueError(f"rpca: no anchors between batch group(s) {b_ref} and {b_qry}; they cannot be integrated.")
        anc = A[sel]
        ref_rows, qry_rows = pos[g_ref], pos[g_qry]
        # 6: weights from a PCA of the merged (reference, query) data, scaled together.
        merged = _scale(data[np.concatenate([ref_rows, qry_rows])])
        emb, _ = _svd(merged, min(d, merged.shape[1] - 1))
        q_emb = emb[ref_rows.size:]
        local = np.empty(X.shape[0], dtype=np.int64)
        local[g_qry] = np.arange(g_qry.size)
        W, k_used, n_zero = _weights(q_emb, local[anc[:, 1].astype(int)], anc[:, 2], k_weight, sd_weight)
        # 7: anchor vectors (query − reference, current values) and the correction.
        integration = data[pos[anc[:, 1].astype(int)]] - data[pos[anc[:, 0].astype(int)]]
        data[qry_rows] = data[qry_rows] - W @ integration
        info["merges"].append({"reference": [int(b) for b in b_ref], "query": [int(b) for b in b_qry],
                               "n_anchors": int(sel.sum()), "k_weight": k_used, "n_cells_no_weight": n_zero})
    return data, info


@doc_params(**INTEGRATION_DOC)
def rpca(
    adata: AnnData, batch_key: str, *,
    dims: int = 30,
    npcs: int = 50,
    k_anchor: int = 5,
    k_score: int = 30,
    k_weight: int = 100,
    sd_weight: float = 1.0,
    scale: bool = True,
    l2_norm: bool = True,
    preserve_order: bool = False,
    use_rep: str = "X", key_added: str = "X_rpca", add_layer: bool = False, copy: bool = False,
) -> AnnData | None:
    """Seurat 4.3 reciprocal-PCA integration (``FindIntegrationAnchors(reduction = "rpca")`` + ``IntegrateData``).

    Reproduces Seurat 4.3.0 with its defaults (tested against Seurat's own
    output, see the module docstring for the steps and the few places where
    imgprof differs): ``dims = 1:30``, per-batch ``RunPCA`` with
    ``npcs = 50``, ``k.anchor = 5``, ``k.score = 30``, ``k.weight = 100``,
    ``sd.weight = 1``, ``scale = TRUE``, ``l2.norm = TRUE``; every column of
    ``use_rep`` is an anchor feature and is integrated. The batches, in the
    order of the ``batch_key`` categories (sorted labels unless the column
    is categorical), are Seurat's ``object.list``. The reference group of each
    merge keeps its values; the result has the columns of ``use_rep``, like
    Seurat's ``integrated`` assay.

    Parameters
    ----------
    {adata_batch}
    dims
        PCs used for the neighbour searches and the weights (Seurat ``dims = 1:dims``).
    npcs
        Components of each batch's PCA (Seurat's ``RunPCA`` default 50); all of them
        enter the L2 normalisation of the projected spaces. Capped by the smallest
        batch − 1 and the number of features − 1.
    k_anchor, k_score, k_weight, sd_weight
        Seurat's anchor, scoring and weighting parameters.
    scale
        Scale each batch before its PCA (Seurat ``scale = TRUE``); set False when
        the features are already scaled per batch.
    l2_norm
        L2-normalise the projected embeddings.
    preserve_order
        Do not swap reference and query at a merge by size.
    use_rep
        ``"X"`` (default) or an ``.obsm`` key.
    {key_added}
    {add_layer}
    {copy}

    Returns
    -------
    None, or the modified copy; sets ``adata.obsm[key_added]``. The provenance
    record lists, per merge, the reference and query batches, the anchors, the
    ``k_weight`` used and the cells left uncorrected (all weights zero).

    {example_cmqtl}
    >>> ip.tl.rpca(adata, "Metadata_Batch")
    >>> adata.obsm["X_rpca"].shape == adata.shape
    True
    """
    # the options, as the kernel takes them and as they are logged
    opts: dict[str, Any] = dict(dims=dims, npcs=npcs, k_anchor=k_anchor, k_score=k_score, k_weight=k_weight,
                                sd_weight=sd_weight, scale=scale, l2_norm=l2_norm, preserve_order=preserve_order)
    for name in ("k_anchor", "k_score", "k_weight", "dims", "npcs"):
        check_int(opts[name], name, min_value=1)
    check_float(sd_weight, "sd_weight", min_value=0.0, include_min=False)
    X, codes, levels = prepare(adata, batch_key, use_rep, min_per_batch=3, add_layer=add_layer)
    adata = start(adata, copy)
    Y, info = rpca_kernel(X, codes, **opts)
    for m in info["merges"]:
        m["reference"] = [levels[b] for b in m["reference"]]
        m["query"] = [levels[b] for b in m["query"]]
        if m["k_weight"] < k_weight:
            warnings.warn(
                f"rpca: the query {m['query']} has only {m['k_weight']} distinct anchor cells or anchor rows, fewer "
                f"than k_weight={k_weight}; all are used (Seurat 4.3 stops with an error here).",
                UserWarning, stacklevel=2,
            )
        if m["n_cells_no_weight"]:
            warnings.warn(
                f"rpca: {m['n_cells_no_weight']} cell(s) of the query {m['query']} have all-zero anchor weights "
                "(their nearest anchors all score 0) and are left uncorrected (Seurat returns NaN for them).",
                UserWarning, stacklevel=2,
            )
    store_correction(adata, Y, function="tl.rpca", batch_key=batch_key, levels=levels, params=opts, use_rep=use_rep,
                     key_added=key_added, add_layer=add_layer, **info)
    return finish(adata, copy)
