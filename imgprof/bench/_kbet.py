"""kBET and kBET per label (scib-metrics' definitions): the batch composition of kNN neighbourhoods.

Re-exported by :mod:`imgprof.bench.batch`, where the other batch-removal metrics live.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from .._core.docs import doc_params
from ._docs import BENCH_DOC
from ._kernels import codes_of, limited_threads, n_threads_for
from ._neighbors import Neighbors, as_neighbors, knn

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- kBET


def _kbet_from_batch_ids(neigh_batch_ids: np.ndarray, batch_codes: np.ndarray, n_batches: int):
    from scipy.special import gammaincc

    expected_freq = np.bincount(batch_codes, minlength=n_batches).astype(np.float64)
    expected_freq /= expected_freq.sum()
    dof = n_batches - 1
    n, k = neigh_batch_ids.shape
    observed = np.zeros((n, n_batches))
    for b in range(n_batches):
        observed[:, b] = (neigh_batch_ids == b).sum(axis=1)
    expected = expected_freq * k
    with np.errstate(divide="ignore", invalid="ignore"):
        stats = np.sum((observed - expected) ** 2 / expected, axis=1)
    pvals = gammaincc(dof / 2, stats / 2)
    return stats, pvals


@doc_params(**BENCH_DOC)
def kbet(X: Neighbors, batches: np.ndarray, alpha: float = 0.05) -> tuple[float, np.ndarray, np.ndarray]:
    """kBET (Büttner et al. 2019) on a kNN graph: share of neighbourhoods whose batch mix passes a χ² test.

    Each observation's neighbourhood (self included, as in scib-metrics /
    Pegasus) is compared with the global batch frequencies.

    Parameters
    ----------
    {X_neighbors}
    {batches}
    alpha
        Significance level of each neighbourhood's χ² test.

    Returns
    -------
    acceptance_rate, test_statistics, p_values

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> rate, stats, pvals = ip.bench.kbet(ip.bench.knn(adata.X, 50), adata.obs["Metadata_Batch"])
    >>> 0 <= rate <= 1 and len(pvals) == adata.n_obs
    True
    """
    nn = as_neighbors(X)
    if len(batches) != nn.n_samples:
        raise ValueError("Length of batches does not match number of cells.")
    codes, L = codes_of(batches)
    stats, pvals = _kbet_from_batch_ids(codes[nn.indices], codes, L)
    return float((pvals >= alpha).mean()), stats, pvals


def _diffusion_embedding(conn: sparse.spmatrix, n_comps: int, power: int = 8) -> np.ndarray:
    """Diffusion-map embedding of a connectivity graph (scanpy's transitions, scib-metrics' scaling).

    The ``n_comps`` eigenpairs of largest magnitude of the symmetric transition
    matrix ``T`` are those of ``T**power`` for even ``power``; running ARPACK on
    ``T**power`` (applied as repeated sparse products) separates them far
    better and needs several times fewer Lanczos restarts. Eigenvalues are
    recovered as Rayleigh quotients ``v' T v``.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    n = conn.shape[0]
    # float64 from the start: with float32 transitions (scib-metrics), the eigenvalue 1 of every
    # extra connected component comes out as 1 ± 1e-7 and its scaling e / (1 - e) explodes at random.
    conn = sparse.csr_matrix(conn, dtype=np.float64)
    q = np.asarray(conn.sum(axis=0))
    Q = sparse.spdiags(1.0 / q, 0, n, n)
    K = Q @ conn @ Q
    z = np.sqrt(np.asarray(K.sum(axis=0)))
    Z = sparse.spdiags(1.0 / z, 0, n, n)
    T = (Z @ K @ Z).astype(np.float64).tocsr()
    n_comps = min(n - 1, n_comps)
    # Fixed starting vector: ARPACK's default is random (scipy >= 1.15 draws it from OS entropy).
    v0 = np.random.default_rng(0).uniform(-1.0, 1.0, size=n)
    if power > 1 and power % 2 == 0 and n > 2 * n_comps + 1:

        def matvec(x):
            for _ in range(power):
                x = T @ x
            return x

        op = LinearOperator(T.shape, matvec=matvec, dtype=np.float64)
        _, evecs = eigsh(op, k=n_comps, which="LM", v0=v0)
        evals = np.einsum("ij,ij->j", evecs, T @ evecs)
    else:
        evals, evecs = eigsh(T, k=n_comps, which="LM", ncv=None, v0=v0)
    evals, evecs = evals.astype(np.float32), evecs.astype(np.float32)
    evals = evals + np.float32(1e-8)
    scaled = np.array([e if e == 1 else e / (1 - e) for e in evals])
    return evecs * scaled


def _diffusion_nn(conn: sparse.spmatrix, k: int, n_comps: int) -> Neighbors:
    emb = _diffusion_embedding(conn, n_comps)
    if not np.isfinite(emb).all():
        raise ValueError("diffusion embedding is not finite")
    return knn(emb, n_neighbors=min(k + 1, emb.shape[0]), method="exact", n_jobs=1)


def kbet_per_label(
    X: Neighbors, batches: np.ndarray, labels: np.ndarray,
    alpha: float = 0.05,
    diffusion_n_comps: int = 100,
    return_df: bool = False,
    *,
    n_jobs: int | None = None,
) -> float | tuple[float, pd.DataFrame]:
    """kBET per label as in scib / scib-metrics, averaged over labels.

    For each label, the subgraph of its observations in the (UMAP)
    connectivity graph is embedded with diffusion maps
    (``diffusion_n_comps`` components) and kBET is run on the ``k0``
    nearest neighbours there, ``k0 = clip(mean batch size / 4, 10, 70)``.
    Labels with fewer than 10 observations or a single batch are skipped;
    labels whose graph splits into many small components score 0, as in scib.
    Nearest neighbours in the diffusion space are exact here (scib-metrics uses pynndescent).

    Parameters
    ----------
    X
        Neighbour graph (scib-metrics' Benchmarker uses 50 neighbours).
    batches, labels
        Batch and label of every observation.
    alpha
        Significance level of the χ² test.
    diffusion_n_comps
        Diffusion components.
    return_df
        Also return the per-label scores.
    n_jobs
        Threads for the per-label kNN/diffusion computations (default: all).

    Returns
    -------
    Mean acceptance rate over labels (higher = better mixing).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> nn = ip.bench.knn(adata.X, 50)
    >>> s = ip.bench.kbet_per_label(nn, adata.obs["Metadata_Batch"], adata.obs["Metadata_target_gene"])
    >>> 0 <= s <= 1
    True
    """
    nn = as_neighbors(X)
    if len(batches) != nn.n_samples:
        raise ValueError("Length of batches does not match number of cells.")
    if len(labels) != nn.n_samples:
        raise ValueError("Length of labels does not match number of cells.")
    # ARPACK and the small dense products inside it are far slower with a
    # multithreaded BLAS (thread start-up and spinning dominate); labels run
    # in parallel threads instead.
    with limited_threads(None):
        return _kbet_per_label(nn, batches, labels, alpha, diffusion_n_comps, return_df, n_jobs)


def _kbet_per_label(nn, batches, labels, alpha, diffusion_n_comps, return_df, n_jobs):
    size_max = 2**31 - 1
    batch_codes, _ = codes_of(batches)
    labels = np.asarray(labels)
    conn_graph = nn.knn_graph_connectivities
    uniq = np.unique(labels)

    def one(clus):
        mask = labels == clus
        sub = conn_graph[mask, :][:, mask]
        sub.sort_indices()
        n_obs = sub.shape[0]
        b_sub = batch_codes[mask]
        if n_obs < 10 or len(np.unique(b_sub)) == 1:
            logger.info("%s consists of a single batch or is too small. Skip.", clus)
            return np.nan
        quarter_mean = int(np.floor(np.mean(pd.Series(b_sub).value_counts()) / 4))
        k0 = int(min(70, max(10, quarter_mean)))
        if k0 * n_obs >= size_max:
            k0 = int(np.floor(size_max / n_obs))
        n_comp, labs = connected_components(sub, connection="strong")
        if n_comp == 1:
            graph, b_use = sub, b_sub
        else:
            comp_size = pd.Series(labs).value_counts()
            idx = np.flatnonzero(np.isin(labs, comp_size[comp_size >= 3 * k0].index))
            if len(idx) / len(labs) < 0.75:
                return 0.0  # too many small components: 100% rejection, as scib
            graph = sub[idx, :][:, idx]
            graph.sort_indices()
            b_use = b_sub[idx]
        try:
            nn_sub = _diffusion_nn(graph, k=k0, n_comps=min(diffusion_n_comps, graph.shape[0] - 1))
            score, _, _ = kbet(nn_sub, b_use, alpha=alpha)
        except ValueError:
            logger.info("Diffusion distance failed. Skip.")
            score = 0.0  # i.e. 100% rejection
        return score

    n_threads = min(n_threads_for(n_jobs), len(uniq))
    if n_threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        # largest labels first so the threads finish together
        order = np.argsort([-(labels == c).sum() for c in uniq], kind="stable")
        with ThreadPoolExecutor(n_threads) as ex:
            res = dict(zip(uniq[order], ex.map(one, uniq[order])))
        scores = [res[c] for c in uniq]
    else:
        scores = [one(c) for c in uniq]
    rows = {"cluster": list(uniq), "kBET": scores}
    df = pd.DataFrame(rows)
    if df["kBET"].isna().all():
        warnings.warn(
            "kbet_per_label: every label is too small (< 10 observations) or seen in a single batch; score is NaN.",
            stacklevel=2,
        )
        final = float("nan")
    else:
        final = float(np.nanmean(df["kBET"]))
    return (final, df) if return_df else final
