"""Provenance log: every public step appends one entry to ``adata.uns['imgprof']['steps']``.

The log is stored as a dict of dicts with JSON-encoded parameters so that it
survives ``write_h5ad``/``write_zarr`` unchanged. :func:`provenance` returns it
as a tidy DataFrame.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

import numpy as np
import pandas as pd

UNS_KEY = "imgprof"


def _jsonable(value: Any):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.size > 50:
            return f"<array shape={value.shape} dtype={value.dtype}>"
        return value.tolist()
    if isinstance(value, pd.Series):
        return f"<Series n={len(value)}>"
    if callable(value):
        return getattr(value, "__name__", repr(value))
    return repr(value)


def uns(adata) -> dict:
    """Return (creating if needed) ``adata.uns['imgprof']``."""
    if UNS_KEY not in adata.uns:
        adata.uns[UNS_KEY] = {}
    return adata.uns[UNS_KEY]


def log_step(adata, function: str, params: dict[str, Any] | None = None, **extra: Any) -> None:
    """Append one step to the provenance log of ``adata``.

    Parameters
    ----------
    adata
        The AnnData that was modified (or created) by the step.
    function
        Public name, e.g. ``"pp.normalize"``.
    params
        Parameters the step was called with (AnnData arguments excluded).
    extra
        Extra summary values (counts, dropped features...), JSON-encoded.
    """
    from .. import __version__

    store = uns(adata)
    steps = store.get("steps")
    if steps is None or not isinstance(steps, dict):
        steps = {}
    idx = len(steps)
    steps[f"{idx:03d}_{function}"] = {
        "function": function,
        "params": json.dumps(_jsonable(params or {}), sort_keys=True),
        "extra": json.dumps(_jsonable(extra), sort_keys=True),
        "version": __version__,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "shape": json.dumps([int(adata.n_obs), int(adata.n_vars)]),
    }
    store["steps"] = steps


def provenance(adata) -> pd.DataFrame:
    """The provenance log of ``adata`` as a DataFrame, one row per step.

    Parameters
    ----------
    adata
        Any AnnData produced or modified by imgprof.

    Returns
    -------
    pandas.DataFrame
        Columns ``function``, ``params`` (dict), ``extra`` (dict), ``version``, ``time``,
        ``shape``; empty when the object has no log.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate(n_plates=2, seed=0)
    >>> ip.provenance(adata)["function"].tolist()[:1]
    ['datasets.simulate']
    """
    steps = adata.uns.get(UNS_KEY, {}).get("steps", {})
    rows = []
    for key in sorted(steps):
        s = dict(steps[key])
        s["params"] = json.loads(s.get("params", "{}"))
        s["extra"] = json.loads(s.get("extra", "{}"))
        s["shape"] = tuple(json.loads(s.get("shape", "[]")))
        rows.append(s)
    return pd.DataFrame(rows, columns=["function", "params", "extra", "version", "time", "shape"])


def set_level(adata, level: str) -> None:
    """Record the profile level (``"single_cell"``, ``"well"``, ``"consensus"``...)."""
    uns(adata)["level"] = level
