"""One place that writes results into an AnnData and logs the step.

``key_added`` has one documented meaning per *kind of result* (the table below
is also in ``docs/api.md``):

============================  ==================================  =====================================
kind of result                where it goes                        ``key_added``
============================  ==================================  =====================================
feature matrix, same features ``.X`` (default) or ``.layers``      layer name; ``None`` replaces ``.X``
embedding / corrected rep.    ``.obsm``                            ``.obsm`` key (``"X_harmony"``)
per-observation values        ``.obs``                             column name, or prefix ``key_added_*``
per-feature values            ``.var``                             column name, or prefix ``key_added_*``
graph between observations    ``.obsp``                            prefix (``{key}_distances``...)
table, report, per-group      ``.uns``                             ``.uns`` key
============================  ==================================  =====================================

:func:`store` writes one result to its slot (refusing to overwrite when asked)
and appends the provenance step, so every public function ends the same way.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from .provenance import log_step

Slot = Literal["X", "layers", "obsm", "obsp", "obs", "var", "varm", "uns"]

#: Slot → what ``key_added`` names there (used in messages and the docs table).
KEY_ADDED_MEANING: dict[str, str] = {
    "X": "nothing (the result replaces .X)",
    "layers": "a layer name (None replaces .X)",
    "obsm": "an .obsm key",
    "obsp": "an .obsp key",
    "obs": "a column name, or a prefix for several columns (key_added_<name>)",
    "var": "a column name, or a prefix for several columns (key_added_<name>)",
    "varm": "a .varm key",
    "uns": "an .uns key",
}

_ROWS = {"X": "n_obs", "layers": "n_obs", "obsm": "n_obs", "obsp": "n_obs", "obs": "n_obs", "var": "n_vars", "varm": "n_vars"}


def _check_rows(adata: Any, slot: str, key: str | None, value: Any) -> None:
    if slot not in _ROWS:
        return
    n = getattr(adata, _ROWS[slot])
    rows = value.shape[0] if hasattr(value, "shape") else len(value)
    if rows != n:
        raise RuntimeError(f"internal error: result for {slot}[{key!r}] has {rows} rows for {n} {_ROWS[slot][2:]}.")


def _columns(value: Any, key: str | None) -> dict[str, Any]:
    """Column name → values for an .obs/.var result (a DataFrame is written column by column)."""
    if isinstance(value, pd.DataFrame):
        prefix = f"{key}_" if key else ""
        return {f"{prefix}{c}": value[c].to_numpy() for c in value.columns}
    if key is None:
        raise ValueError("store: an .obs/.var result that is not a DataFrame needs key_added.")
    return {key: np.asarray(value) if not isinstance(value, pd.Series) else value.to_numpy()}


def _container(adata: Any, slot: str) -> Any:
    return {"layers": adata.layers, "obsm": adata.obsm, "obsp": adata.obsp, "varm": adata.varm,
            "uns": adata.uns, "obs": adata.obs, "var": adata.var}[slot]


def store(
    adata: Any,
    value: Any,
    *,
    slot: Slot,
    key_added: str | None,
    function: str | None,
    params: dict[str, Any] | None = None,
    overwrite: bool = True,
    **extra: Any,
) -> None:
    """Write one result where ``slot``/``key_added`` say and log the provenance step.

    Parameters
    ----------
    adata
        The AnnData to write into (already the copy when ``copy=True``).
    value
        The result: an array (``X``/``layers``/``obsm``/``obsp``/``varm``), a
        DataFrame, Series or array (``obs``/``var``: a DataFrame is written as
        columns ``{key_added}_{column}``), or any storable object (``uns``).
    slot
        ``"X"``, ``"layers"``, ``"obsm"``, ``"obsp"``, ``"obs"``, ``"var"``,
        ``"varm"`` or ``"uns"``; ``slot="layers"`` with ``key_added=None``
        replaces ``.X``.
    key_added
        Where in ``slot`` (see :data:`KEY_ADDED_MEANING`).
    function
        Public name logged in the provenance (``"pp.normalize"``); ``None``
        writes without logging (a function that stores several results logs once).
    params
        Parameters the step was called with, logged.
    overwrite
        When False, refuse to replace an existing key (``KeyError`` naming it).
    **extra
        Summary values logged with the step.

    Returns
    -------
    None

    Examples
    --------
    >>> import numpy as np, imgprof as ip
    >>> from imgprof._core.store import store
    >>> adata = ip.datasets.simulate(n_plates=1, seed=0)
    >>> store(adata, np.zeros((adata.n_obs, 2)), slot="obsm", key_added="X_zero", function="example")
    >>> adata.obsm["X_zero"].shape[1], ip.provenance(adata)["function"].iloc[-1]
    (2, 'example')
    """
    if slot not in KEY_ADDED_MEANING:
        raise ValueError(f"store: unknown slot {slot!r}; choose one of {list(KEY_ADDED_MEANING)}.")
    _check_rows(adata, slot, key_added, value)
    if slot == "X" or (slot == "layers" and key_added is None):
        adata.X = value
        slot, key_added = "X", None
    elif slot in ("obs", "var"):
        cols = _columns(value, key_added)
        frame = _container(adata, slot)
        if not overwrite:
            clash = [c for c in cols if c in frame.columns]
            if clash:
                raise KeyError(f"adata.{slot} already has column(s) {clash}; pass a different key_added= or overwrite=True.")
        for c, v in cols.items():
            frame[c] = v
    else:
        if key_added is None:
            raise ValueError(f"store: slot {slot!r} needs key_added ({KEY_ADDED_MEANING[slot]}).")
        container = _container(adata, slot)
        if not overwrite and key_added in container:
            raise KeyError(f"adata.{slot}[{key_added!r}] already exists; pass a different key_added= or overwrite=True.")
        container[key_added] = value
    if function is not None:
        log_step(adata, function, params, slot=slot, key_added=key_added, **extra)
