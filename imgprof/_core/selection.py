"""One resolver for every row selection of the package.

``controls=``, ``samples=``, ``negcon=``, ``query=``, ``gene_controls=`` … all
go through :func:`resolve_rows`, so that every function accepts the same forms
and refuses the same mistakes:

* a pandas query string evaluated on ``adata.obs``
  (``"Metadata_control_type == 'negcon'"``) that gives one boolean per row;
* a boolean numpy array (or list) of length ``n_obs``, used by position;
* a boolean pandas Series, aligned on ``adata.obs_names`` **by its index**
  (never by position: a Series in another row order selects the right rows);
* a list / Index / array of observation names.

A bare column name (``"Metadata_control_type"``) is refused with a hint to
write ``"Metadata_control_type == 'value'"`` (pandas would otherwise return the
column itself, whose non-empty values are all "true"), except for a column
that is already boolean. An empty selection is an error naming the query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

#: What ``controls=``, ``samples=``, ``negcon=`` and ``query=`` accept: an ``.obs`` query string, a boolean
#: column name, a boolean mask (array or Series), a list of obs names, or ``None`` (see :func:`resolve_rows`).
Selection = str | Sequence[str] | np.ndarray | pd.Series | None

__all__ = ["check_bool_vector", "resolve_features", "resolve_rows"]


def _short(sel: Any, n: int = 80) -> str:
    if isinstance(sel, str) or not hasattr(sel, "__len__"):
        text = repr(sel)
    else:
        text = f"<{type(sel).__name__} of length {len(sel)}>"
    return text if len(text) <= n else text[: n - 3] + "..."


def _column_hint(obs: pd.DataFrame, col: str) -> str:
    values = pd.unique(obs[col].dropna())[:3]
    if len(values) == 0:
        return f"\"{col} == <value>\""
    v = values[0]
    v = repr(v.item() if isinstance(v, np.generic) else v)
    return f"\"{col} == {v}\""


def _bare_column(obs: pd.DataFrame, sel: str) -> str | None:
    name = sel.strip()
    if len(name) > 1 and name[0] == name[-1] == "`":
        name = name[1:-1]
    return name if name in obs.columns else None


def _from_query(adata, sel: str, param: str) -> np.ndarray:
    obs = adata.obs
    col = _bare_column(obs, sel)
    if col is not None and not pd.api.types.is_bool_dtype(obs[col].dtype):
        raise ValueError(
            f"{param}={sel!r} is a column name, not a selection: it would select every row with a value. "
            f"Write a condition, e.g. {param}={_column_hint(obs, col)} (column dtype {obs[col].dtype})."
        )
    # pandas' eval builds a Series for every column of the frame it runs on (slow on wide .obs, and
    # copies under copy-on-write): run it on the columns the query names, the whole frame if that fails
    named = [c for c in obs.columns if isinstance(c, str) and c in sel]
    res = None
    if 0 < len(named) < obs.shape[1]:
        try:
            res = obs.loc[:, named].eval(sel)
        except Exception:
            res = None
    try:
        if res is None:
            res = obs.eval(sel)
    except Exception as e:  # pandas raises many types here (SyntaxError, UndefinedVariableError, ...)
        raise ValueError(
            f"{param}={sel!r} could not be evaluated on adata.obs: {type(e).__name__}: {e}. "
            "Give a pandas query such as \"Metadata_control_type == 'negcon'\"."
        ) from e
    if np.isscalar(res) or getattr(res, "shape", None) != (adata.n_obs,):
        raise ValueError(f"{param}={sel!r} did not evaluate to one boolean per observation (got {_short(res)}).")
    res = pd.Series(np.asarray(res) if not isinstance(res, pd.Series) else res)
    if res.isna().any():
        raise ValueError(
            f"{param}={sel!r} is undefined (NA) for {int(res.isna().sum())} observation(s); "
            "fill the missing values first or make the condition explicit."
        )
    if not pd.api.types.is_bool_dtype(res.dtype):
        raise ValueError(
            f"{param}={sel!r} evaluated to values of dtype {res.dtype}, not booleans; "
            "write a condition such as \"Metadata_control_type == 'negcon'\"."
        )
    return res.to_numpy(dtype=bool)


def _from_series(adata, sel: pd.Series, param: str) -> np.ndarray:
    if not pd.api.types.is_bool_dtype(sel.dtype):
        raise TypeError(
            f"{param}: a pandas Series must hold booleans (e.g. adata.obs['Metadata_control_type'] == 'negcon'), "
            f"got dtype {sel.dtype}."
        )
    if sel.isna().any():
        raise ValueError(f"{param}: the boolean Series has {int(sel.isna().sum())} missing value(s).")
    index = pd.Index(sel.index.astype(str))
    names = adata.obs_names
    if index.equals(names):
        return sel.to_numpy(dtype=bool)
    if index.has_duplicates:
        dup = index[index.duplicated()].unique().tolist()[:5]
        raise ValueError(f"{param}: the boolean Series has duplicated index labels {dup}; it is aligned by index.")
    missing = names.difference(index)
    extra = index.difference(names)
    if len(missing) or len(extra):
        raise ValueError(
            f"{param}: the boolean Series is aligned on adata.obs_names by its index, but its index "
            f"{'lacks ' + str(list(missing[:5])) if len(missing) else ''}"
            f"{' and ' if len(missing) and len(extra) else ''}"
            f"{'has labels not in adata.obs_names ' + str(list(extra[:5])) if len(extra) else ''}. "
            "Build it from adata.obs (e.g. adata.obs[col] == value) or pass a numpy array of length n_obs."
        )
    return pd.Series(sel.to_numpy(dtype=bool), index=index).reindex(names).to_numpy(dtype=bool)


def resolve_rows(adata, sel, *, param: str = "controls", allow_empty: bool = False) -> np.ndarray:
    """Turn a selection of observations into a boolean mask of length ``n_obs``.

    Parameters
    ----------
    adata
        The AnnData whose rows are selected.
    sel
        ``None`` (all rows); a pandas query on ``adata.obs``; a boolean numpy
        array or list of length ``n_obs`` (by position); a boolean pandas
        Series (aligned on ``adata.obs_names`` by its index); or a list of
        observation names.
    param
        Name of the parameter, used in every error message.
    allow_empty
        Accept a selection that matches no row.

    Returns
    -------
    numpy.ndarray
        Boolean mask, one entry per observation.

    Raises
    ------
    ValueError
        A bare (non-boolean) column name, a query that fails or is not boolean,
        a mask of the wrong length, a Series whose index does not match, or an
        empty selection.
    TypeError
        A non-boolean Series or a numeric array.
    KeyError
        Observation names that are not in ``adata.obs_names``.

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof._core.selection import resolve_rows
    >>> adata = ip.datasets.simulate(n_plates=1, seed=0)
    >>> mask = resolve_rows(adata, "Metadata_control_type == 'negcon'")
    >>> int(mask.sum()) == int((adata.obs["Metadata_control_type"] == "negcon").sum())
    True
    """
    from .validation import check_adata

    check_adata(adata, var_names=False)
    n = adata.n_obs
    if sel is None:
        return np.ones(n, dtype=bool)
    if isinstance(sel, str):
        mask = _from_query(adata, sel, param)
    elif isinstance(sel, pd.Series):
        mask = _from_series(adata, sel, param)
    else:
        if isinstance(sel, (pd.Index, pd.DataFrame)):
            if isinstance(sel, pd.DataFrame):
                raise TypeError(f"{param}: got a DataFrame; give a query string, a boolean mask or a list of obs names.")
            arr = sel.to_numpy()
        elif isinstance(sel, (bool, np.bool_, int, float, np.number)):
            raise TypeError(
                f"{param}={sel!r}: expected a query string, a boolean mask of length n_obs={n} or a list of obs names."
            )
        else:
            arr = np.asarray(sel)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise ValueError(
                    f"{param}: boolean mask has length {arr.shape[0] if arr.ndim else 0} (shape {arr.shape}), "
                    f"expected n_obs={n} (one entry per observation)."
                )
            mask = arr.copy()
        elif arr.dtype.kind in "iuf" and arr.size:
            raise TypeError(
                f"{param}: got a numeric array (dtype {arr.dtype}); give a boolean mask of length n_obs={n}, "
                "a query string or a list of obs names (integer positions are not accepted)."
            )
        else:
            names = pd.Index(arr.ravel().astype(str))
            missing = names.difference(adata.obs_names)
            if len(missing):
                raise KeyError(f"{param}: observation name(s) {list(missing[:5])} not in adata.obs_names.")
            mask = adata.obs_names.isin(names)
    if n == 0:
        raise ValueError(f"{param}: adata has 0 observations; nothing to select.")
    if not allow_empty and not mask.any():
        raise ValueError(f"{param}={_short(sel)} selects no observation (0 of {n} rows match).")
    return mask


def check_bool_vector(values, n: int, *, param: str) -> np.ndarray:
    """A boolean vector of length ``n`` (numpy array, list or Series), refusing non-boolean values.

    Used where a selection arrives without an AnnData (``ip.bench`` metrics take
    arrays): strings or numbers would otherwise all turn ``True`` under ``astype(bool)``.

    Parameters
    ----------
    values
        The candidate mask.
    n
        The expected length.
    param
        Name of the parameter, used in error messages.

    Returns
    -------
    numpy.ndarray
        The mask as ``bool``.

    Examples
    --------
    >>> import numpy as np
    >>> from imgprof._core.selection import check_bool_vector
    >>> check_bool_vector(np.array([True, False]), 2, param="negcon").tolist()
    [True, False]
    """
    arr = values.to_numpy() if isinstance(values, (pd.Series, pd.Index)) else np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.ravel()
    if arr.dtype == object and len(arr) and all(isinstance(v, (bool, np.bool_)) for v in arr):
        arr = arr.astype(bool)
    if arr.dtype != bool:
        raise TypeError(
            f"{param} must be a boolean mask (e.g. obs['Metadata_control_type'] == 'negcon'), got dtype {arr.dtype}."
        )
    if arr.shape != (n,):
        raise ValueError(f"{param} has shape {arr.shape} but there are {n} observations; lengths must match.")
    return arr


def resolve_features(adata: Any, features: Any, *, param: str = "features", unique: bool = False) -> np.ndarray:
    """Positions (into ``adata.var_names``) of named features; all of them for ``None``.

    The one feature lookup (the column counterpart of :func:`resolve_rows`).

    Parameters
    ----------
    adata
        The AnnData whose features are named.
    features
        ``None`` (every feature), one name, or a sequence of names.
    param
        Name of the parameter, used in the error message.
    unique
        Refuse a name given twice.

    Returns
    -------
    numpy.ndarray
        Integer positions, in the order given.

    Raises
    ------
    KeyError
        Names not in ``adata.var_names`` (the first five are named).
    ValueError
        A name given twice, with ``unique=True``.

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof._core.selection import resolve_features
    >>> adata = ip.datasets.simulate(n_plates=1, seed=0)
    >>> resolve_features(adata, [adata.var_names[2], adata.var_names[0]]).tolist()
    [2, 0]
    """
    if features is None:
        return np.arange(adata.n_vars)
    names = [features] if isinstance(features, str) else list(features)
    pos = adata.var_names.get_indexer(pd.Index(names))
    missing = [f for f, i in zip(names, pos) if i < 0]
    if missing:
        more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        raise KeyError(f"{param}: {missing[:5]}{more} not found in adata.var_names.")
    if unique and len(set(pos.tolist())) != len(pos):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{param}: {twice[:5]} listed more than once.")
    return pos
