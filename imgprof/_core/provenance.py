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
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
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


def get_level(adata, default: str | None = None) -> str | None:
    """The profile level recorded in ``adata.uns['imgprof']`` (``default`` when none).

    Parameters
    ----------
    adata
        Profiles.
    default
        Returned when no level is recorded.

    Returns
    -------
    str or None
        ``"single_cell"``, ``"well"``, ``"consensus"``...

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof._core.provenance import get_level
    >>> get_level(ip.datasets.simulate(n_plates=1, seed=0))
    'well'
    """
    store = adata.uns.get(UNS_KEY, {})
    return store.get("level", default) if isinstance(store, dict) else default


def set_level(adata, level: str) -> None:
    """Record the profile level (``"single_cell"``, ``"well"``, ``"consensus"``...)."""
    uns(adata)["level"] = level


def inherit(dst, src, keys: tuple[str, ...] = ("steps", "level")) -> None:
    """Carry the provenance of ``src`` over to a new AnnData ``dst`` built from it.

    Functions that assemble a new AnnData from another one (``mm.join``'s
    exploded rows, for instance) call this instead of writing
    ``dst.uns['imgprof']`` themselves, so that the earlier steps are not lost.
    Only ``keys`` are copied (deep): the table layout ``to_pandas`` restores
    belongs to the source table, not to the new object.

    Parameters
    ----------
    dst
        The new AnnData.
    src
        The AnnData it was built from.
    keys
        Entries of ``src.uns['imgprof']`` to copy.

    Returns
    -------
    None

    Examples
    --------
    >>> import anndata as ad, numpy as np, imgprof as ip
    >>> from imgprof._core.provenance import inherit
    >>> src = ip.datasets.simulate(n_plates=1, seed=0)
    >>> dst = ad.AnnData(np.zeros((2, 2)))
    >>> inherit(dst, src)
    >>> ip.provenance(dst)["function"].tolist() == ip.provenance(src)["function"].tolist()
    True
    """
    import copy as _copy

    store = src.uns.get(UNS_KEY, {})
    out = uns(dst)
    for k in keys:
        if k in store:
            out[k] = _copy.deepcopy(store[k])


class ImgprofUns:
    """The one owner of ``adata.uns['imgprof']``: read and write it through this, not by key.

    Holds the profile ``level``, the provenance ``steps`` and a few step-specific
    records (``renamed_columns``, ``dataset``, ``sites``...). Every module reads
    and writes through :func:`record`, so the key and its layout live here only.

    Parameters
    ----------
    adata
        The AnnData whose record this is.

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof._core.provenance import record
    >>> adata = ip.datasets.simulate(n_plates=1, seed=0)
    >>> rec = record(adata)
    >>> rec.level
    'well'
    >>> rec.set("note", "checked"); rec.get("note")
    'checked'
    """

    __slots__ = ("adata",)

    def __init__(self, adata: Any) -> None:
        self.adata = adata

    def _store(self, create: bool) -> dict:
        store = self.adata.uns.get(UNS_KEY)
        if not isinstance(store, dict):
            if not create:
                return {}
            store = self.adata.uns[UNS_KEY] = {}
        return store

    def get(self, key: str, default: Any = None) -> Any:
        """The value recorded under ``key`` (``default`` when none)."""
        return self._store(create=False).get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Record ``value`` under ``key``."""
        self._store(create=True)[key] = value

    def setdefault(self, key: str, default: Any) -> Any:
        """The value under ``key``, recording ``default`` first when there is none."""
        return self._store(create=True).setdefault(key, default)

    def pop(self, key: str, default: Any = None) -> Any:
        """Remove and return the value under ``key``."""
        return self._store(create=False).pop(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._store(create=False)

    @property
    def level(self) -> str | None:
        """The profile level (``"single_cell"``, ``"well"``, ``"consensus"``...)."""
        return self.get("level")

    @level.setter
    def level(self, value: str) -> None:
        self.set("level", value)

    @property
    def steps(self) -> dict:
        """The raw provenance steps (see :func:`provenance` for a table)."""
        steps = self.get("steps")
        return steps if isinstance(steps, dict) else {}

    def as_dict(self) -> dict:
        """The whole record (the live dict; empty when none)."""
        return self._store(create=False)


def record(adata: Any) -> ImgprofUns:
    """The :class:`ImgprofUns` of ``adata`` (the one way to read/write ``uns['imgprof']``).

    Parameters
    ----------
    adata
        Profiles.

    Returns
    -------
    ImgprofUns
        Accessor with ``get``/``set``/``level``/``steps``.

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof._core.provenance import record
    >>> record(ip.datasets.simulate(n_plates=1, seed=0)).level
    'well'
    """
    return ImgprofUns(adata)
