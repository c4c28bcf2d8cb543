"""One entry point for every batch-correction method: ``ip.tl.integrate(adata, method, batch_key)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from anndata import AnnData

from .._core.docs import DOC, doc_params
from .._core.inputs import check_batches
from .._core.optional import require_methods
from .._core.registry import Registry
from .._core.store import store
from .._core.validation import check_adata, check_array, finish, get_matrix, is_dask, start

#: The start of the Examples of ``ip.tl`` functions run on the cmQTL CRISPRi plates.
EXAMPLE_CMQTL = "Examples\n--------\n>>> import imgprof as ip\n>>> adata = ip.datasets.cmqtl_crispri()"

#: Docstring text shared by the integration methods (``@doc_params(**INTEGRATION_DOC)``). Every method's
#: signature is ``adata, batch_key, *, <its own parameters>, use_rep, key_added, [add_layer,] copy``, and its
#: Parameters section ends with ``{key_added}``, ``{add_layer}`` (where it has one) and ``{copy}``.
INTEGRATION_DOC: dict[str, str] = {
    "adata_batch": DOC["adata"] + "\n" + DOC["batch_key"],
    "key_added": "key_added\n    ``.obsm`` key for the result (the corrected matrix or embedding).",
    "add_layer": ("add_layer\n    With ``use_rep=\"X\"``, also store the corrected features as ``adata.layers[key_added]``\n"
                  "    (the same array)."),
    "copy": DOC["copy"],
    "example_cmqtl": EXAMPLE_CMQTL,
    "returns_obsm": "Returns\n-------\nAnnData or None\n    The modified copy when ``copy=True``, else ``None``; the result is "
                    "``adata.obsm[key_added]``.",
}

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



@doc_params("adata")
def get_rep(adata: AnnData, use_rep: str | None, *, param: str = "use_rep") -> np.ndarray:
    """The matrix to integrate, as a finite in-memory float array (dask arrays are computed).

    Parameters
    ----------
    {adata}
    use_rep
        ``"X"`` (or ``None``) for ``adata.X``, else an ``.obsm`` key.
    param
        Parameter name used in messages.

    Returns
    -------
    numpy.ndarray
        A 2-D floating array with at least 2 columns.

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof.tl.integrate import get_rep
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> get_rep(adata, "X").shape == adata.shape
    True
    """
    try:
        X = get_matrix(adata, use_rep=use_rep)
    except KeyError as e:
        hint = " Run ip.tl.pca(adata) first." if use_rep == "X_pca" else ""
        raise KeyError(f"{param}: {e.args[0]}{hint}") from None
    if is_dask(X):
        X = X.compute()
    is_x = use_rep in (None, "X")
    what = "adata.X" if is_x else f"adata.obsm[{use_rep!r}]"
    # the one matrix check: 2-D, numeric, finite (names the offending columns)
    names = list(map(str, adata.var_names)) if is_x else None
    X = check_array(X, param=what if is_x else f"{param}={use_rep!r}", var_names=names, allow_nan=False, min_rows=1, min_cols=1)
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    if X.shape[1] < 2:
        raise ValueError(f"{what} has {X.shape[1]} column(s); integration needs at least 2.")
    return X


@doc_params("adata", "batch_key")
def prepare(adata: AnnData, batch_key: str | None, use_rep: str | None, *, min_per_batch: int = 2,
            add_layer: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Check the batches and the representation before any heavy import; return ``(X, codes, levels)``.

    Parameters
    ----------
    {adata}
    {batch_key}
    use_rep
        ``"X"`` or an ``.obsm`` key.
    min_per_batch
        Fewest observations a batch may have.
    add_layer
        Whether the caller will also store a layer (needs ``use_rep="X"``).

    Returns
    -------
    tuple
        The matrix, the batch code of every observation and the batch names.

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof.tl.integrate import prepare
    >>> X, codes, levels = prepare(ip.datasets.cmqtl_crispri(), "Metadata_Batch", "X")
    >>> X.shape[0] == codes.shape[0]
    True
    """
    if add_layer and use_rep not in (None, "X"):
        raise ValueError(
            f"add_layer=True stores a corrected feature matrix, which needs use_rep='X' (got use_rep={use_rep!r})."
        )
    check_adata(adata)
    if adata.n_obs == 0:
        raise ValueError("adata has 0 observations; nothing to integrate.")
    codes, levels = check_batches(adata, batch_key, min_per_batch=min_per_batch)
    return get_rep(adata, use_rep), codes, levels


@doc_params("adata", "batch_key")
def store_correction(adata: AnnData, Y: np.ndarray, *, function: str, batch_key: str | None, levels: list[str] | None,
                     params: dict[str, Any], use_rep: str | None, key_added: str, add_layer: bool = False,
                     kind: str | None = None, **extra: Any) -> None:
    """Write a correction to ``adata.obsm[key_added]`` (and ``.layers`` on request) and log the step.

    ``add_layer=True`` also stores ``Y`` as ``adata.layers[key_added]`` when it
    is a corrected feature matrix (``use_rep="X"`` and one column per feature),
    so ``ip.io.to_pandas(adata, layer=key_added)`` exports it with feature names.
    Every method logs the same record: ``batch_key`` and ``use_rep`` first among
    its parameters, and the number of batches and of result columns.

    Parameters
    ----------
    {adata}
    Y
        The corrected matrix or embedding.
    function
        Public name logged in the provenance.
    {batch_key}
    levels
        The batch names (from :func:`prepare`); their number is logged as ``n_batches``.
    params
        The method's own logged parameters (``batch_key`` and ``use_rep`` are added).
    use_rep
        The representation corrected.
    key_added
        ``.obsm`` key (and layer name with ``add_layer``).
    add_layer
        Also store a layer.
    kind
        ``"features"`` or ``"embedding"`` (default: inferred from ``use_rep`` and the shape).
    **extra
        Logged summary values.

    Returns
    -------
    None
        ``adata`` is written in place (``.obsm[key_added]``, and the layer with ``add_layer``).

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof.tl.integrate import store_correction
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> store_correction(adata, adata.X.copy(), function="example", batch_key=None, levels=None, params={}, use_rep="X",
    ...                  key_added="X_same")
    >>> "X_same" in adata.obsm
    True
    """
    Y = np.asarray(Y)
    if kind is None:
        kind = "features" if (use_rep in (None, "X") and Y.ndim == 2 and Y.shape[1] == adata.n_vars) else "embedding"
    if add_layer and kind != "features":
        raise ValueError(
            f"add_layer=True needs a corrected feature matrix (use_rep='X' and {adata.n_vars} columns); "
            f"this result is an embedding with {Y.shape[1]} columns and stays in adata.obsm[{key_added!r}]."
        )
    if add_layer:
        store(adata, Y, slot="layers", key_added=key_added, function=None)
    store(adata, Y, slot="obsm", key_added=key_added, function=function,
          params={"batch_key": batch_key, "use_rep": use_rep, **params}, kind=kind, n_columns=int(Y.shape[1]),
          n_batches=len(levels) if levels is not None else None, **extra)


@doc_params(**INTEGRATION_DOC)
def no_correction(
    adata: AnnData, batch_key: str, *,
    use_rep: str = "X", key_added: str = "X_none", add_layer: bool = False, copy: bool = False,
) -> AnnData | None:
    """The uncorrected baseline: copy ``use_rep`` to ``adata.obsm[key_added]``.

    Benchmarks compare every method against this entry, read the same way.

    Parameters
    ----------
    {adata_batch}
    use_rep
        ``"X"`` or an ``.obsm`` key to copy.
    {key_added}
    {add_layer}
    {copy}

    Returns
    -------
    AnnData or None
        ``None`` (``copy=False``) or the modified copy; writes ``obsm[key_added]``.

    {example_cmqtl}
    >>> ip.tl.integrate(adata, "none", "Metadata_Batch")
    >>> bool((adata.obsm["X_none"] == adata.X).all())
    True
    """
    X, _, levels = prepare(adata, batch_key, use_rep, add_layer=add_layer)
    adata = start(adata, copy)
    store_correction(adata, X.copy(), function="tl.no_correction", batch_key=batch_key, levels=levels, params={},
                     use_rep=use_rep, key_added=key_added, add_layer=add_layer)
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


@doc_params("adata", "batch_key", "copy", example_cmqtl=EXAMPLE_CMQTL)
def integrate(
    adata: AnnData,
    method: str,
    batch_key: str,
    *,
    use_rep: str | None = None, key_added: str | None = None, copy: bool = False,
    **params: Any,
) -> AnnData | Any | None:
    """Correct batch effects with one of several methods, all called the same way.

    Parameters
    ----------
    {adata}
    method
        ``"none"`` (baseline), ``"harmony"``, ``"scvi"``, ``"combat"``,
        ``"sphering"``, ``"mnn"``, ``"scanorama"`` or ``"rpca"``.
    {batch_key}
    use_rep
        ``"X"`` or an ``.obsm`` key; default per method (``"X_pca"`` for
        harmony and scanorama, ``"X"`` for the others).
    key_added
        ``.obsm`` key for the result; default ``f"X_{method}"``.
    {copy}
    **params
        Method parameters (see :func:`harmony`, :func:`scvi`, :func:`combat`,
        :func:`sphering`, :func:`mnn`, :func:`scanorama`, :func:`rpca`).

    Returns
    -------
    None, or the modified copy. The result is always
    ``adata.obsm[key_added]`` (a corrected feature matrix or an embedding,
    usable as ``use_rep`` by ``ip.tl.neighbors`` and the metrics); the
    method and its parameters are in the provenance log.

    {example_cmqtl}
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
