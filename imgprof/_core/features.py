"""Split a profile table into metadata and feature columns, with clear errors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .validation import as_list

METADATA_PREFIXES: tuple[str, ...] = ("Metadata_",)


def check_unique_columns(columns: Sequence[str], *, source: str) -> None:
    """Raise if a table has duplicated column names (naming them and the source)."""
    s = pd.Index(columns)
    dup = s[s.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"{source}: duplicated column name(s) {dup[:10]}; every column must be unique.")


def split_columns(
    df: pd.DataFrame,
    *,
    source: str = "table",
    metadata: Sequence[str] | None = None, features: Sequence[str] | None = None,
    metadata_prefix: str | Sequence[str] = METADATA_PREFIXES, require_metadata: bool = True,
) -> tuple[list[str], list[str]]:
    """Decide which columns are metadata and which are features.

    By default metadata are the columns starting with ``metadata_prefix`` and
    features are all others. Either list may be given explicitly; the other is
    then the complement. Every column ends up in exactly one of the two lists:
    nothing is dropped silently.
    """
    cols = [str(c) for c in df.columns]
    check_unique_columns(cols, source=source)
    prefixes = tuple(as_list(metadata_prefix))
    metadata_given = metadata is not None
    col_set = set(cols)
    if metadata is not None:
        metadata = as_list(metadata)
        missing = [c for c in metadata if c not in col_set]
        if missing:
            raise KeyError(f"{source}: metadata column(s) {missing} not found.")
    if features is not None:
        features = as_list(features)
        missing = [c for c in features if c not in col_set]
        if missing:
            raise KeyError(f"{source}: feature column(s) {missing[:10]} not found.")
    if metadata is None and features is None:
        metadata = [c for c in cols if c.startswith(prefixes)]
        features = [c for c in cols if not c.startswith(prefixes)]
    elif metadata is None:
        fset = set(features or [])
        metadata = [c for c in cols if c not in fset]
    elif features is None:
        mset = set(metadata)
        features = [c for c in cols if c not in mset]
    else:
        overlap = set(metadata) & set(features)
        if overlap:
            raise ValueError(f"{source}: column(s) {sorted(overlap)[:10]} given as both metadata and features.")
        given = set(metadata) | set(features)
        rest = [c for c in cols if c not in given]
        if rest:
            raise ValueError(
                f"{source}: column(s) {rest[:10]} are neither metadata nor features; "
                "list them in one of metadata= or features= (nothing is dropped silently)."
            )
    if require_metadata and not metadata and not metadata_given:
        raise ValueError(
            f"{source}: no metadata column found (none starts with {list(prefixes)}). "
            "Pass metadata=[...] to name them, or metadata=[] if the table truly has none."
        )
    if not features:
        raise ValueError(f"{source}: no feature column found; every column is metadata ({len(cols)} columns).")
    return list(metadata), list(features)


def check_numeric_features(df: pd.DataFrame, features: Sequence[str], *, source: str) -> None:
    """Raise ``TypeError`` naming every feature column that is not numeric."""
    dtypes = dict(df.dtypes.items())  # one lookup for all columns (df[c] per column is slow on wide tables)
    bad = [c for c in features if not (pd.api.types.is_numeric_dtype(dtypes[c]) or pd.api.types.is_bool_dtype(dtypes[c]))]
    if bad:
        examples = {c: df[c].dropna().astype(str).head(2).tolist() for c in bad[:3]}
        raise TypeError(
            f"{source}: feature column(s) {bad[:10]} are not numeric (e.g. {examples}). "
            "Convert them, or declare them as metadata with metadata=[...]."
        )


def feature_matrix(df: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """Stack feature columns into one float matrix (float32 kept when all are float32)."""
    all_dtypes = dict(df.dtypes.items())
    dtypes = {all_dtypes[c] for c in features}
    dtype = np.float32 if dtypes == {np.dtype("float32")} else np.float64
    sub = df.loc[:, list(features)]
    if all(isinstance(t, np.dtype) for t in dtypes):
        # Plain numpy columns hold NaN already; na_value= would force one more full copy.
        return np.asarray(sub.to_numpy(dtype=dtype))
    return sub.to_numpy(dtype=dtype, na_value=np.nan)  # nullable (Int64, boolean) columns: pd.NA -> NaN


def record_values_changed(adata, dtype=None, *, replace_all: bool = False) -> None:
    """The one owner of ``adata.var['input_dtype']`` after a step changed the values of ``.X``.

    ``var['input_dtype']`` remembers the dtype each feature had in the source
    table so that :func:`imgprof.io.to_pandas` can restore it. Once a step has
    replaced the values (normalized, aggregated, corrected...), an integer or
    boolean record would truncate the new values on export (-1.12 → -1): every
    value-changing step calls this function when it stores ``.X``, and the
    integer/boolean records become the dtype of the stored floats.

    Parameters
    ----------
    adata
        The AnnData whose ``.X`` was just replaced (or a ``var`` DataFrame).
    dtype
        dtype of the new values (default ``adata.X.dtype``; float64 when unknown).
    replace_all
        Record ``dtype`` for every feature, float ones included (aggregates are float64).

    Returns
    -------
    None

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from imgprof._core.features import record_values_changed
    >>> a = ad.AnnData(np.zeros((2, 1)), var=pd.DataFrame({"input_dtype": ["int64"]}, index=["f"]))
    >>> record_values_changed(a)
    >>> a.var["input_dtype"].tolist()
    ['float64']
    """
    var = adata if isinstance(adata, pd.DataFrame) else adata.var
    if "input_dtype" not in var.columns:
        return
    if dtype is None:
        X = None if isinstance(adata, pd.DataFrame) else adata.X
        dtype = getattr(X, "dtype", np.float64)
    dtype = np.dtype(dtype)
    new = "float64" if dtype.kind != "f" else str(dtype)

    def _exact(t) -> bool:
        try:
            return np.dtype(str(t)).kind == "f"
        except TypeError:  # nullable pandas dtypes ("Int64", "boolean") and unknown names
            return str(t) in ("Float32", "Float64")

    keep = np.zeros(len(var), dtype=bool) if replace_all else var["input_dtype"].map(_exact).to_numpy(dtype=bool)
    if not keep.all():
        var["input_dtype"] = np.where(keep, var["input_dtype"].astype(object), new)
