"""Embeddings coloured by batch / mechanism, reusing scanpy's plotting.

:func:`embedding`, :func:`umap` and :func:`pca` are thin wrappers over
:func:`scanpy.pl.embedding`: every keyword of scanpy's works, and the plots
look like scanpy's. What they add: a clear error when the embedding or a
colour key is missing, and profile-friendly defaults (colour by
``Metadata_Batch`` when present and nothing else is asked for).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

from collections.abc import Sequence

from .._core.docs import doc_params
from .._core.validation import as_list, check_obs_keys
from ._utils import PLOT_DOC, PlotReturn, savefig_or_show

#: ``.obs`` columns tried, in order, as the default colour when ``color=None``.
DEFAULT_COLORS = ("Metadata_Batch", "Metadata_Plate")


#: Parameter text shared by :func:`embedding`, :func:`umap` and :func:`pca`.
_EMB_DOC = PLOT_DOC | {
    "emb_color": "\n".join([
        "color\n    Column(s) of ``.obs`` or feature names; ``None`` → ``Metadata_Batch``\n"
        "    (or ``Metadata_Plate``) when present.",
        PLOT_DOC["ax_panel"], PLOT_DOC["show_save"]]),
    "emb_kwargs": "**kwargs\n    Passed to :func:`scanpy.pl.embedding` (``size``, ``palette``, ``legend_loc``, ``ncols``...).",
    "emb_returns": ("Axes, list of Axes, Figure or None\n    The axes (a list for several colours); the figure with "
                    "``return_fig=True``;\n    ``None`` when shown."),
}

def _default_color(adata, color):
    if color is not None:
        return color
    for c in DEFAULT_COLORS:
        if c in adata.obs.columns:
            return c
    return None


def _draw(adata, key: str, color, *, ax, show, save, return_fig, writekey: str, post=None, **kwargs):
    """Check ``key`` and the colours, draw with :func:`scanpy.pl.embedding` (``color=None`` → :data:`DEFAULT_COLORS`),
    apply ``post(axes)`` and save/show under ``writekey``."""
    import scanpy as sc

    if key not in adata.obsm:
        hint = {"X_umap": " Run ip.tl.umap(adata) first.", "X_pca": " Run ip.tl.pca(adata) first."}.get(key, "")
        raise KeyError(f"basis={key!r}: adata.obsm[{key!r}] not found (available: {list(adata.obsm.keys())}).{hint}")
    colors = as_list(_default_color(adata, color))
    check_obs_keys(adata, [c for c in colors if c not in adata.var_names], param="color")
    if ax is not None and len(colors) > 1:
        raise ValueError(f"ax= draws one panel; got {len(colors)} colours ({colors}). Pass one colour or no ax.")
    if "components" not in kwargs and adata.obsm[key].shape[1] < 2:
        raise ValueError(f"adata.obsm[{key!r}] has one dimension; an embedding plot needs two.")
    axes = sc.pl.embedding(adata, basis=key, color=colors or None, ax=ax, show=False, **kwargs)
    if post is not None:
        post(axes)
    first = axes[0] if isinstance(axes, list) else axes
    return savefig_or_show(first.figure, axes, show=show, save=save, return_fig=return_fig, writekey=writekey)


@doc_params(**_EMB_DOC)
def embedding(
    adata: AnnData,
    basis: str = "umap",
    color: str | Sequence[str] | None = None,
    *,
    ax: Axes | None = None, show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
    **kwargs,
) -> PlotReturn:
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
    {emb_color}
    {emb_kwargs}

    Returns
    -------
    {emb_returns}

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate(n_plates=2, seed=0)
    >>> ip.tl.pca(adata, n_comps=5)
    >>> axes = ip.pl.embedding(adata, "pca", color=["Metadata_Batch", "Metadata_moa"], show=False)
    >>> len(axes)
    2
    """
    key = basis if basis.startswith("X_") else f"X_{basis}"
    return _draw(adata, key, color, ax=ax, show=show, save=save, return_fig=return_fig, writekey=key[2:], **kwargs)


@doc_params(**_EMB_DOC)
def umap(
    adata: AnnData,
    color: str | Sequence[str] | None = None,
    *,
    ax: Axes | None = None, show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
    **kwargs,
) -> PlotReturn:
    """UMAP (``.obsm['X_umap']`` from :func:`imgprof.tl.umap`) coloured by ``.obs`` columns, like :func:`scanpy.pl.umap`.

    Parameters
    ----------
    adata
        Profiles after ``ip.tl.umap`` (or ``sc.tl.umap``).
    {emb_color}
    {emb_kwargs}

    Returns
    -------
    {emb_returns}

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> ip.tl.pca(adata, n_comps=20); ip.tl.neighbors(adata); ip.tl.umap(adata)
    >>> ax = ip.pl.umap(adata, color="Metadata_target_gene", show=False)
    """
    return _draw(adata, "X_umap", color, ax=ax, show=show, save=save, return_fig=return_fig, writekey="umap", **kwargs)


@doc_params(**_EMB_DOC)
def pca(
    adata: AnnData,
    color: str | Sequence[str] | None = None,
    *,
    components: str | Sequence[str] | None = None,
    ax: Axes | None = None, show: bool | None = None, save: bool | str | None = None, return_fig: bool = False,
    **kwargs,
) -> PlotReturn:
    """PCA scatter (``.obsm['X_pca']`` from :func:`imgprof.tl.pca`), like :func:`scanpy.pl.pca`.

    Axis labels carry the percentage of variance explained when
    ``uns['pca']['variance_ratio']`` is present (as scanpy's
    ``annotate_var_explained=True``).

    Parameters
    ----------
    adata
        Profiles after ``ip.tl.pca`` (or ``sc.pp.pca``).
    color
        Column(s) of ``.obs`` or feature names; ``None`` → ``Metadata_Batch``
        (or ``Metadata_Plate``) when present.
    components
        Which components, scanpy-style (``"1,2"``, ``["1,2", "2,3"]``); default ``"1,2"``.
    {ax_panel}
    {show_save}
    {emb_kwargs}

    Returns
    -------
    {emb_returns}

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> ip.tl.pca(adata, n_comps=10)
    >>> ax = ip.pl.pca(adata, show=False)
    >>> ax.get_xlabel().startswith("PC1")
    True
    """
    if components is not None:
        kwargs["components"] = components
    ratio = adata.uns.get("pca", {}).get("variance_ratio") if "pca" in adata.uns else None

    def label_variance(axes):
        if ratio is None:
            return
        comps = kwargs.get("components") or "1,2"
        first_pair = comps if isinstance(comps, str) else comps[0]
        i, j = (int(x) - 1 for x in str(first_pair).split(",")[:2])
        for a in axes if isinstance(axes, list) else [axes]:
            a.set_xlabel(f"PC{i + 1} ({100 * ratio[i]:.1f}%)")
            a.set_ylabel(f"PC{j + 1} ({100 * ratio[j]:.1f}%)")

    return _draw(adata, "X_pca", color, ax=ax, show=show, save=save, return_fig=return_fig,
                 writekey="pca", post=label_variance, **kwargs)
