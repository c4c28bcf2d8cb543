"""One entry point for every batch-correction method: ``ip.tl.integrate(adata, method, batch_key)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anndata import AnnData

from .._core.optional import require_methods
from .._core.registry import Registry
from .._core.validation import finish, start
from ._validate import prepare, store

#: Every batch-correction method: name → function (imported when first used, so torch/scvi load lazily)
#: and its default ``use_rep``. Adding a method is one function in its own module plus one line here.
INTEGRATIONS = Registry("integration_method", param="method")
INTEGRATIONS.register_lazy("none", "imgprof.tl.integrate:no_correction", default_use_rep="X")
INTEGRATIONS.register_lazy("harmony", "imgprof.tl.harmony:harmony", default_use_rep="X_pca")
INTEGRATIONS.register_lazy("scvi", "imgprof.tl.scvi:scvi", default_use_rep="X")
INTEGRATIONS.register_lazy("combat", "imgprof.tl.combat:combat", default_use_rep="X")
INTEGRATIONS.register_lazy("sphering", "imgprof.tl.sphering:sphering", default_use_rep="X")
INTEGRATIONS.register_lazy("mnn", "imgprof.tl.mnn:mnn", default_use_rep="X")
INTEGRATIONS.register_lazy("scanorama", "imgprof.tl.scanorama:scanorama", default_use_rep="X_pca")
INTEGRATIONS.register_lazy("rpca", "imgprof.tl.rpca:rpca", default_use_rep="X")

#: Names accepted by :func:`integrate` (the names of :data:`INTEGRATIONS`).
METHODS: tuple[str, ...] = INTEGRATIONS.names()


def no_correction(
    adata: AnnData,
    batch_key: str,
    *,
    use_rep: str = "X",
    key_added: str = "X_none",
    add_layer: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """The uncorrected baseline: copy ``use_rep`` to ``adata.obsm[key_added]``.

    Benchmarks compare every method against this entry, read the same way.

    Parameters
    ----------
    adata
        Profiles.
    batch_key
        ``.obs`` batch column (checked, not used: the baseline removes nothing).
    use_rep
        ``"X"`` or an ``.obsm`` key to copy.
    key_added
        ``.obsm`` key for the copy.
    add_layer
        Also store the copy as ``adata.layers[key_added]``.
    copy
        Return a modified copy.

    Returns
    -------
    AnnData or None
        ``None`` (``copy=False``) or the modified copy; writes ``obsm[key_added]``.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> ip.tl.integrate(adata, "none", "Metadata_Batch")
    >>> bool((adata.obsm["X_none"] == adata.X).all())
    True
    """
    X, _, levels = prepare(adata, batch_key, use_rep, add_layer=add_layer)
    adata = start(adata, copy)
    store(adata, X.copy(), key_added=key_added, function="tl.no_correction",
          params=dict(batch_key=batch_key, use_rep=use_rep), use_rep=use_rep, add_layer=add_layer,
          n_batches=len(levels))
    return finish(adata, copy)


def get_method(method: str) -> Callable[..., Any]:
    """The function behind a method name (``"harmony"`` → :func:`imgprof.tl.harmony`).

    Parameters
    ----------
    method
        One of :data:`imgprof.tl.METHODS` (``"harmony"``, ``"scvi"``, ``"combat"``...).

    Returns
    -------
    callable
        The integration function, e.g. :func:`imgprof.tl.harmony`.

    Examples
    --------
    >>> import imgprof as ip
    >>> ip.tl.get_method("harmony").__name__
    'harmony'
    """
    if not isinstance(method, str) or method not in INTEGRATIONS:
        raise ValueError(f"integrate: unknown method {method!r}; choose one of {list(METHODS)}.")
    return INTEGRATIONS.get(method).obj


def integrate(
    adata: AnnData,
    method: str,
    batch_key: str,
    *,
    use_rep: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
    **params: Any,
) -> AnnData | Any | None:
    """Correct batch effects with one of several methods, all called the same way.

    Parameters
    ----------
    adata
        Profiles.
    method
        ``"none"`` (baseline), ``"harmony"``, ``"scvi"``, ``"combat"``,
        ``"sphering"``, ``"mnn"``, ``"scanorama"`` or ``"rpca"``.
    batch_key
        Column of ``adata.obs`` with the batch (plate, batch or source).
    use_rep
        ``"X"`` or an ``.obsm`` key; default per method (``"X_pca"`` for
        harmony and scanorama, ``"X"`` for the others).
    key_added
        ``.obsm`` key for the result; default ``f"X_{method}"``.
    copy
        Return a modified copy.
    **params
        Method parameters (see :func:`harmony`, :func:`scvi`, :func:`combat`,
        :func:`sphering`, :func:`mnn`, :func:`scanorama`, :func:`rpca`).

    Returns
    -------
    None, or the modified copy. The result is always
    ``adata.obsm[key_added]`` (a corrected feature matrix or an embedding,
    usable as ``use_rep`` by ``ip.tl.neighbors`` and the metrics); the
    method and its parameters are in the provenance log.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> ip.tl.pca(adata, n_comps=30)
    >>> for m in ["none", "harmony", "combat", "mnn", "rpca"]:
    ...     ip.tl.integrate(adata, m, "Metadata_Batch")
    >>> sorted(k for k in adata.obsm if k != "X_pca")
    ['X_combat', 'X_harmony', 'X_mnn', 'X_none', 'X_rpca']
    """
    fn = get_method(method)
    require_methods([method], purpose=f"ip.tl.integrate(method={method!r})")
    name = method.lower()
    kw = dict(params)
    kw["use_rep"] = INTEGRATIONS.get(name)["default_use_rep"] if use_rep is None else use_rep
    kw["key_added"] = f"X_{name}" if key_added is None else key_added
    return fn(adata, batch_key, copy=copy, **kw)
