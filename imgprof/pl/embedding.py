"""Embeddings coloured by batch / mechanism, reusing scanpy's plotting."""

from __future__ import annotations

from collections.abc import Sequence

from .._core.validation import as_list, check_obs_keys


def embedding(
    adata,
    basis: str = "umap",
    color: str | Sequence[str] | None = None,
    *,
    show: bool | None = None,
    save: str | None = None,
    **kwargs,
):
    """Scatter an embedding (``.obsm['X_<basis>']``) coloured by ``.obs`` columns or features.

    A thin wrapper over :func:`scanpy.pl.embedding` so imgprof objects look the
    same as scanpy's; when ``basis`` has more than two dimensions the first two
    are used.

    Parameters
    ----------
    adata
        Profiles with an embedding in ``.obsm``.
    basis
        ``"umap"``, ``"pca"``, ``"harmony"``... (``X_`` prefix optional).
    color
        Column(s) of ``.obs`` or feature names.
    show, save
        As in scanpy (``save`` is a file path here).
    kwargs
        Passed to :func:`scanpy.pl.embedding`.

    Examples
    --------
    >>> import imgprof as ip, scanpy as sc
    >>> adata = ip.datasets.simulate(n_plates=2, seed=0)
    >>> sc.pp.pca(adata, n_comps=5)
    >>> axes = ip.pl.embedding(adata, "pca", color=["Metadata_Batch", "Metadata_moa"], show=False)
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    key = basis if basis.startswith("X_") else f"X_{basis}"
    if key not in adata.obsm:
        raise KeyError(f"basis={basis!r}: adata.obsm[{key!r}] not found (available: {list(adata.obsm.keys())}).")
    colors = as_list(color)
    check_obs_keys(adata, [c for c in colors if c not in adata.var_names], param="color")
    axes = sc.pl.embedding(adata, basis=key, color=colors or None, show=False, **kwargs)
    fig = (axes[0] if isinstance(axes, list) else axes).figure
    if save:
        fig.savefig(save, bbox_inches="tight", dpi=150)
    if show:
        plt.show()
        return None
    return axes
