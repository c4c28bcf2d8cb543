"""``ip.concat``: :func:`anndata.concat` that keeps the feature anatomy (``.var``) and the provenance."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from anndata import AnnData

from .anatomy import ANATOMY_COLUMNS, parse_feature_names
from .provenance import UNS_KEY, log_step


def _labels(adatas, keys) -> tuple[list[AnnData], list[str]]:
    if isinstance(adatas, Mapping):
        if keys is not None:
            raise ValueError("concat: pass keys= only with a sequence of AnnData, not with a mapping.")
        return list(adatas.values()), [str(k) for k in adatas]
    items = list(adatas)
    if keys is not None:
        keys = [str(k) for k in keys]
        if len(keys) != len(items):
            raise ValueError(f"concat: keys has {len(keys)} entries for {len(items)} AnnData objects.")
        return items, keys
    return items, [str(i) for i in range(len(items))]


def _merge_provenance(adatas: list[AnnData], names: list[str]) -> dict[str, Any]:
    """One ``uns['imgprof']``: every input's steps (tagged with its key), the common level, inputs kept whole."""
    stores = [a.uns.get(UNS_KEY, {}) or {} for a in adatas]
    levels = {s.get("level") for s in stores if s.get("level") is not None}
    if len(levels) > 1:
        detail = ", ".join(f"{n}: {s.get('level')!r}" for n, s in zip(names, stores))
        raise ValueError(
            f"concat: the objects are at different profile levels ({detail}); aggregate them to one "
            "level first (ip.pp.aggregate) before concatenating."
        )
    steps: dict[str, Any] = {}
    for name, store in zip(names, stores):
        for key in sorted(store.get("steps", {}) or {}):
            step = dict(store["steps"][key])
            extra = json.loads(step.get("extra", "{}") or "{}")
            extra["input"] = name
            step["extra"] = json.dumps(extra, sort_keys=True)
            steps[f"{len(steps):03d}_{step.get('function', key.split('_', 1)[-1])}"] = step
    out: dict[str, Any] = {"steps": steps}
    if levels:
        out["level"] = levels.pop()
    return out


def concat(
    adatas: Sequence[AnnData] | Mapping[str, AnnData],
    *,
    join: str = "inner",
    label: str | None = None,
    keys: Sequence[str] | None = None,
    index_unique: str | None = None,
    fill_value: Any = None,
    **kwargs: Any,
) -> AnnData:
    """Concatenate profiles along observations, keeping ``.var`` anatomy and provenance.

    :func:`anndata.concat` drops ``.var`` (the feature anatomy: compartment,
    feature group, channel...) and ``.uns`` (the provenance log) unless told
    otherwise. ``ip.concat`` calls it with ``merge="same"`` (a ``.var`` column
    is kept where all inputs agree), re-derives the anatomy of features that
    only some inputs have (``join="outer"``), and merges ``uns['imgprof']``:
    every input's steps in order, each tagged with its input's key
    (``extra["input"]``), followed by one ``concat`` step. Objects at different
    profile levels (cells and wells) are refused.

    Parameters
    ----------
    adatas
        The AnnData objects, as a sequence or a mapping ``{key: adata}``
        (the keys then label the inputs).
    join
        ``"inner"`` (features in every input) or ``"outer"`` (all features,
        missing values filled with ``fill_value``, NaN by default).
    label
        Add an ``.obs`` column of this name holding each row's input key (as
        in :func:`anndata.concat`), e.g. ``"Metadata_Batch"``.
    keys
        Keys for a sequence of inputs (default ``"0"``, ``"1"``...).
    index_unique
        Separator to make ``obs_names`` unique by appending the key (as in
        :func:`anndata.concat`); ``None`` keeps them as they are.
    fill_value
        Value for features missing from an input with ``join="outer"``.
    **kwargs
        Passed to :func:`anndata.concat` (e.g. ``uns_merge=``, ``pairwise=``).
        ``merge`` defaults to ``"same"``.

    Returns
    -------
    AnnData
        The concatenated profiles, with ``.var`` anatomy, ``uns['imgprof']``
        (merged provenance and the common level) and any other ``.uns``
        entries merged by ``uns_merge`` (default: ``"same"``).

    Examples
    --------
    >>> import imgprof as ip
    >>> a = ip.datasets.simulate(n_plates=2, seed=0)
    >>> b = ip.datasets.simulate(n_plates=2, seed=1)
    >>> both = ip.concat({"run1": a, "run2": b}, label="run", index_unique="-")
    >>> both.n_obs == a.n_obs + b.n_obs, "compartment" in both.var
    (True, True)
    >>> ip.provenance(both)["function"].iloc[-1]
    'concat'
    """
    import anndata as ad

    items, names = _labels(adatas, keys)
    if not items:
        raise ValueError("concat: no AnnData objects given.")
    for name, a in zip(names, items):
        if not isinstance(a, AnnData):
            raise TypeError(f"concat: input {name!r} is a {type(a).__name__}, not an AnnData.")
    if join not in ("inner", "outer"):
        raise ValueError(f"concat: join must be 'inner' or 'outer', got {join!r}.")
    prov = _merge_provenance(items, names)
    kwargs.setdefault("merge", "same")
    kwargs.setdefault("uns_merge", "same")
    # uns['imgprof'] is replaced below by the merged provenance (anndata's "same" would drop differing logs).
    out = ad.concat(dict(zip(names, items)), join=join, label=label, index_unique=index_unique,
                    fill_value=fill_value, **kwargs)
    # Anatomy of features some inputs lack (outer join) is derived from the name, as the readers do.
    anatomy = [c for c in ANATOMY_COLUMNS if any(c in a.var for a in items)]
    if anatomy:
        parsed = parse_feature_names(list(out.var_names))
        for c in anatomy:
            if c in out.var and out.var[c].notna().all():
                continue
            known = pd.Series(index=out.var_names, dtype=object)
            for a in items:
                if c in a.var:
                    known = known.fillna(a.var[c].astype(object).reindex(out.var_names))
            known = known.fillna(parsed[c].astype(object))
            out.var[c] = pd.Categorical(known.where(known.notna(), None))
    first_cols = list((items[0].uns.get(UNS_KEY, {}) or {}).get("columns", []))

    def ordered(present: list[str]) -> list[str]:  # the first input's column order, new columns after
        return [c for c in first_cols if c in set(present)] + [c for c in present if c not in set(first_cols)]

    out.uns[UNS_KEY] = prov
    out.uns[UNS_KEY]["columns"] = ordered(list(map(str, out.obs.columns))) + ordered(list(map(str, out.var_names)))
    log_step(out, "concat", {"join": join, "label": label, "keys": names, "index_unique": index_unique,
                             "merge": kwargs.get("merge"), "uns_merge": kwargs.get("uns_merge")},
             n_obs_per_input=dict(zip(names, (int(a.n_obs) for a in items))))
    return out
