"""Shared docstring text for recurring parameters (as scanpy's ``_doc_params``).

Write ``{adata}``, ``{copy}``, ``{layer}``, ``{use_rep}``... on a line of its own
in a numpy-style Parameters section and decorate the function with
:func:`doc_params`; the placeholder is replaced by the shared text, indented like
the placeholder. Only names given to the decorator are replaced, so other braces
in a docstring (dict literals in examples) are left alone::

    @doc_params(adata=DOC["adata"], copy=DOC["copy"])
    def step(adata, *, copy=False):
        \"\"\"One step.

        Parameters
        ----------
        {adata}
        {copy}
        \"\"\"
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: Shared parameter descriptions (``name\n    description`` as in a numpy docstring).
DOC: dict[str, str] = {
    "adata": "adata\n    Profiles: observations (cells, wells or consensus profiles) × features.",
    "copy": "copy\n    Return a modified copy instead of writing into ``adata`` (then ``None`` is returned).",
    "layer": "layer\n    Layer to read instead of ``adata.X``.",
    "use_rep": "use_rep\n    ``\"X\"`` or an ``.obsm`` key to read (an embedding such as ``\"X_pca\"``).",
    "samples": (
        "samples\n    Rows to fit on: ``\"all\"``, an ``adata.obs`` query, a boolean column name, a boolean mask\n"
        "    or a list of obs names (pycytominer's ``samples=``)."
    ),
    "batch_key": "batch_key\n    ``adata.obs`` column holding the batch (plate, batch or source).",
    "label_key": "label_key\n    ``adata.obs`` column holding the biological label (perturbation, gene, compound).",
    "ax": "ax\n    Matplotlib axes to draw into (a new figure when ``None``).",
    "returns_copy": "AnnData or None\n    The modified copy when ``copy=True``, else ``None`` (``adata`` is modified in place).",
    # Example set-ups shared by the multimodal (``ip.mm`` / ``ip.pl.mm_*``) doctests: the two LINCS plates,
    # the expression side annotated from the Repurposing Hub (and, for ``_join``, joined on the target).
    "example_mm_moa": (
        ">>> import imgprof as ip\n>>> morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()\n"
        '>>> ip.mm.map_annotations(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["moa"])'
    ),
    "example_mm_target_join": (
        ">>> import imgprof as ip\n>>> morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()\n"
        '>>> ip.mm.map_annotations(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["target"])\n'
        '>>> mdata = ip.mm.join(morph, expr, on=("Metadata_target", "target"), sep="|")'
    ),
}

_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}[ \t]*$", re.MULTILINE)


def fill(doc: str, values: dict[str, str]) -> str:
    """Replace ``{name}`` lines of ``doc`` by ``values[name]``, indented like the placeholder.

    Parameters
    ----------
    doc
        A docstring.
    values
        Name → text (first line the parameter, then its description).

    Returns
    -------
    str
        The docstring with the placeholders replaced; unknown names are kept.

    Examples
    --------
    >>> print(fill("    {copy}", {"copy": "copy\\n    Return a copy."}))
        copy
            Return a copy.
    """

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in values:
            return m.group(0)
        indent = m.group("indent")
        return "\n".join(indent + line if line else line for line in values[name].splitlines())

    return _PLACEHOLDER.sub(sub, doc)


def doc_params(*names: str, **values: str) -> Callable[[F], F]:
    """Decorator: fill the shared parameter text into a docstring.

    Parameters
    ----------
    *names
        Keys of :data:`DOC` to fill in.
    **values
        Extra name → text pairs (override :data:`DOC`).

    Returns
    -------
    callable
        A decorator that rewrites ``obj.__doc__`` and returns ``obj``.

    Examples
    --------
    >>> @doc_params("copy")
    ... def f(copy=False):
    ...     '''Do.
    ...
    ...     Parameters
    ...     ----------
    ...     {copy}
    ...     '''
    >>> "Return a modified copy" in f.__doc__
    True
    """
    unknown = [n for n in names if n not in DOC]
    if unknown:
        raise KeyError(f"doc_params: no shared text for {unknown}; known: {sorted(DOC)}.")
    table = {n: DOC[n] for n in names} | values

    def deco(obj: F) -> F:
        if obj.__doc__:
            obj.__doc__ = fill(obj.__doc__, table)
        return obj

    return deco
