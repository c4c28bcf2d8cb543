"""Join a plate map / external metadata onto profiles: ``ip.pp.annotate``.

Same join semantics as ``pycytominer.annotate`` (``Metadata_`` prefix added to
plate-map columns, ``join_on=[platemap key(s), profile key(s)]``, colliding
plate-map columns suffixed ``_platemap``, external metadata left-joined), but a
profile without a plate-map match or a duplicated plate-map key is an error,
never a silently dropped well.
"""

from __future__ import annotations

import csv
import gzip
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core.docs import doc_params
from .._core.provenance import log_step
from .._core.validation import (
    as_list,
    check_adata,
    check_df_keys,
    check_obs_keys,
    finish,
    start,
)

PathLike = str | os.PathLike

_CP_RENAME = {
    "Image_Metadata_Plate": "Metadata_Plate",
    "Image_Metadata_Well": "Metadata_Well",
    "Image_Metadata_Site": "Metadata_Site",
}


def _read_table(path: Path, sep: str | None, *, what: str) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} not found.")
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if sep is None:
        base = name.removesuffix(".gz")
        if base.endswith((".tsv", ".txt")):
            sep = "\t"
        elif base.endswith(".csv"):
            sep = ","
        else:
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:
                sample = fh.read(64 * 1024)
            try:
                sep = csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
            except csv.Error as e:
                raise ValueError(f"{what}: could not detect the column separator of {path}; pass sep=.") from e
    df = pd.read_csv(path, sep=sep)
    if df.shape[0] == 0:
        raise ValueError(f"{what}: {path} has a header but no rows.")
    return df


def load_platemap(platemap: pd.DataFrame | PathLike, *, add_metadata_prefix: bool = True, sep: str | None = None) -> pd.DataFrame:
    """Read a plate map (DataFrame, CSV/TSV path) and prefix its columns with ``Metadata_``.

    Like ``pycytominer.cyto_utils.load_platemap``: a DataFrame is copied (never
    modified), a path is read with the separator guessed from the extension or
    sniffed, and every column not already starting with ``Metadata_`` gets the
    prefix when ``add_metadata_prefix``.

    Parameters
    ----------
    platemap
        A DataFrame or a CSV/TSV path.
    add_metadata_prefix
        Prefix every column not starting with ``Metadata_``.
    sep
        Separator for a path (default: from the extension, else sniffed).

    Returns
    -------
    pandas.DataFrame
        The plate map (a copy), columns prefixed.

    Examples
    --------
    >>> import pandas as pd
    >>> load_platemap(pd.DataFrame({"well_position": ["A01"], "Metadata_x": [1]})).columns.tolist()
    ['Metadata_well_position', 'Metadata_x']
    """
    if isinstance(platemap, pd.DataFrame):
        pm = platemap.copy()
    elif isinstance(platemap, (str, os.PathLike)):
        pm = _read_table(Path(platemap), sep, what="platemap")
    else:
        raise TypeError(f"platemap must be a DataFrame or a file path, got {type(platemap).__name__}.")
    if add_metadata_prefix:
        pm.columns = pd.Index(
            [f"Metadata_{c}" if isinstance(c, str) and not c.startswith("Metadata_") else c for c in pm.columns]
        )
    dup = pm.columns[pm.columns.duplicated()].tolist()
    if dup:
        raise ValueError(f"platemap: duplicated column(s) {dup} (after adding the Metadata_ prefix).")
    return pm


def _prepare_external(ext: pd.DataFrame) -> pd.DataFrame:
    """pycytominer's ``prepare_external_metadata_for_annotate``: prefix unprotected columns.

    ``Metadata_*`` and ``Image_*`` columns keep their names (numeric ``Image_``
    columns are CellProfiler image features); every other string column gets
    the ``Metadata_`` prefix.
    """
    ext = ext.copy()
    ext.columns = pd.Index(
        [f"Metadata_{c}" if isinstance(c, str) and not c.startswith(("Metadata_", "Image_")) else c for c in ext.columns]
    )
    return ext


def _parse_join_on(join_on) -> tuple[list[str], list[str]]:
    if isinstance(join_on, str):
        return [join_on], [join_on]
    join_on = list(join_on)
    if len(join_on) != 2:
        raise ValueError(
            "join_on must be one column name (same in both tables) or [platemap key(s), profile key(s)], "
            f"got {join_on!r}."
        )
    left, right = as_list(join_on[0]), as_list(join_on[1])
    if len(left) != len(right) or not left:
        raise ValueError(f"join_on: {left} (platemap) and {right} (profiles) must name the same number of columns.")
    return left, right


def _describe_keys(frame: pd.DataFrame, cols: list[str], n: int = 5) -> list:
    return [tuple(r) if len(cols) > 1 else r[0] for r in frame.loc[:, cols].head(n).itertuples(index=False, name=None)]


def _match(
    obs_keys: pd.DataFrame, table: pd.DataFrame, left: list[str], right: list[str], *, what: str
) -> np.ndarray:
    """Row of ``table`` matching each profile (``-1`` when none). Duplicated table keys raise."""
    dup = table.duplicated(subset=left, keep=False)
    if dup.any():
        ex = _describe_keys(table.loc[dup], left)
        raise ValueError(
            f"{what}: {int(dup.sum())} rows share a key {left} with another row (e.g. {ex}); "
            "each key must identify one row, otherwise profiles would be duplicated."
        )
    for l_, r_ in zip(left, right):
        lk, rk = table[l_].dtype.kind, obs_keys[r_].dtype.kind
        if (lk in "iuf") != (rk in "iuf") and not isinstance(obs_keys[r_].dtype, pd.CategoricalDtype):
            warnings.warn(
                f"{what}: join key {l_!r} is {table[l_].dtype} but profile key {r_!r} is {obs_keys[r_].dtype}; "
                "values are compared as they are (convert one side if nothing matches).",
                UserWarning,
                stacklevel=4,
            )
    keys_df = pd.DataFrame({f"k{i}": obs_keys[r_].astype(object).to_numpy() for i, r_ in enumerate(right)})
    tab_df = pd.DataFrame({f"k{i}": table[l_].astype(object).to_numpy() for i, l_ in enumerate(left)})
    tab_df["_row"] = np.arange(len(table))
    merged = keys_df.merge(tab_df, on=[f"k{i}" for i in range(len(left))], how="left", sort=False)
    if len(merged) != len(keys_df):  # pragma: no cover - duplicates are rejected above
        raise AssertionError("annotate: join produced extra rows.")
    return merged["_row"].fillna(-1).to_numpy(dtype=np.int64)


def _take(table: pd.DataFrame, col: str, rows: np.ndarray) -> np.ndarray:
    """``table[col]`` at ``rows`` (one per profile); missing (NaN) where ``rows`` is ``-1``."""
    miss = rows < 0
    vals = table[col].iloc[np.where(miss, 0, rows)].reset_index(drop=True)
    if miss.any():
        vals = vals.astype(object) if vals.dtype.kind in "biu" else vals
        vals[miss] = np.nan
    return vals.to_numpy()


def _add_columns(
    obs: pd.DataFrame, table: pd.DataFrame, rows: np.ndarray, *, skip: list[str], what: str, suffix: str, features: set[str]
) -> list[str]:
    """Copy the columns of ``table`` (but ``skip``) into ``obs``, a name taken already gets ``_{suffix}``."""
    added = []
    for c in table.columns:
        if c in skip:
            continue
        name = f"{c}_{suffix}" if c in obs.columns else c
        if name in obs.columns:
            raise ValueError(f"annotate: {what} column {c!r} collides with existing .obs columns {c!r} and {name!r}.")
        if name in features:
            raise ValueError(
                f"annotate: {what} column {name!r} has the name of a feature (adata.var_names); the table would "
                "hold two columns of one name. Rename that column first."
            )
        obs[name] = _take(table, c, rows)
        added.append(name)
    return added


def _check_unmatched(adata: AnnData, rows: np.ndarray, right: list[str], unmatched: str) -> np.ndarray:
    """Profiles without a plate-map row: raise, or warn that they are kept or dropped; return their mask."""
    miss = rows < 0
    n_miss = int(miss.sum())
    if n_miss:
        ex = _describe_keys(adata.obs.loc[miss], right)
        msg = f"annotate: {n_miss} of {adata.n_obs} profile(s) have no plate-map row for {right} (e.g. {ex})."
        if unmatched == "raise":
            raise ValueError(msg + " Fix the plate map or join keys, or pass unmatched='keep' / 'drop'.")
        tail = " Their plate-map columns are missing." if unmatched == "keep" else " They are removed."
        warnings.warn(msg + tail, UserWarning, stacklevel=3)
    return miss


def _join_external(
    adata: AnnData, obs: pd.DataFrame, external_metadata: pd.DataFrame | PathLike, external_join_on: Any,
    features: set[str],
) -> tuple[list[str], int]:
    """Left-join external metadata onto ``obs`` (in place); return the added columns and the unmatched count."""
    ext = external_metadata
    ext_src = "external_metadata DataFrame"
    if not isinstance(ext, pd.DataFrame):
        ext_src = str(ext)
        ext = _read_table(Path(ext), None, what="external_metadata")
    ext = _prepare_external(ext)
    ekeys = as_list(external_join_on)
    check_df_keys(ext, ekeys, param="external_join_on", where=f"external metadata ({ext_src}, after prefixing)")
    check_obs_keys(adata, ekeys, param="external_join_on")
    erows = _match(obs.loc[:, ekeys], ext, ekeys, ekeys, what=f"external metadata ({ext_src})")
    emiss = erows < 0
    n_unmatched = int(emiss.sum())
    if n_unmatched:
        warnings.warn(
            f"annotate: {n_unmatched} of {adata.n_obs} profile(s) have no external-metadata row for "
            f"{ekeys} (e.g. {_describe_keys(obs.loc[emiss], ekeys)}); their external columns are missing.",
            UserWarning,
            stacklevel=3,
        )
    return _add_columns(obs, ext, erows, skip=ekeys, what="external", suffix="external", features=features), n_unmatched


def _clean_cellprofiler(obs: pd.DataFrame, features: set[str]) -> dict[str, str]:
    """Rename ``Image_Metadata_Plate/Well/Site`` to ``Metadata_*`` (pycytominer's ``cp_clean``) when free."""
    renamed = {old: new for old, new in _CP_RENAME.items()
               if old in obs.columns and new not in obs.columns and new not in features}
    if renamed:
        obs.rename(columns=renamed, inplace=True)
    return renamed


@doc_params("copy", "returns_copy")
def annotate(
    adata: AnnData,
    platemap: pd.DataFrame | PathLike,
    join_on: str | Sequence = ("Metadata_well_position", "Metadata_Well"),
    *,
    add_metadata_prefix: bool = True,
    platemap_sep: str | None = None,
    external_metadata: pd.DataFrame | PathLike | None = None,
    external_join_on: str | Sequence[str] | None = None,
    clean_cellprofiler: bool = True,
    unmatched: str = "raise",
    copy: bool = False,
) -> AnnData | None:
    """Add plate-map (and external) metadata to the profiles' ``.obs``.

    Parameters
    ----------
    adata
        Profiles (any level). Rows keep their order; only ``.obs`` changes.
    platemap
        Plate map as a DataFrame or a CSV/TSV/parquet path (one row per well, or
        per plate and well).
    join_on
        ``[platemap key(s), profile key(s)]`` as in pycytominer (default
        ``["Metadata_well_position", "Metadata_Well"]``, i.e. the plate map's
        ``well_position`` column after prefixing), each a column or a list of
        columns, e.g. ``[["Metadata_plate", "Metadata_well_position"],
        ["Metadata_Plate", "Metadata_Well"]]``; or one name used on both sides.
    add_metadata_prefix
        Prepend ``Metadata_`` to plate-map columns that lack it (pycytominer's
        ``add_metadata_id_to_platemap``).
    platemap_sep
        Separator of a plate-map text file (default: from the extension, else sniffed).
    external_metadata, external_join_on
        Extra table (DataFrame or path, e.g. a QC table) left-joined on
        ``external_join_on`` (column names present on both sides after its
        columns got the ``Metadata_`` prefix). Give both or neither.
    clean_cellprofiler
        Rename ``Image_Metadata_Plate/Well/Site`` to ``Metadata_Plate/Well/Site``
        (pycytominer's ``cp_clean``) when the target name is free.
    unmatched
        Profiles whose key is not in the plate map: ``"raise"`` (default),
        ``"keep"`` (warn; their new columns are missing) or ``"drop"`` (warn and
        remove those rows, as pycytominer's inner join does silently).
    {copy}

    Returns
    -------
    {returns_copy}
        New columns are appended to ``.obs``; a plate-map column whose name is
        already in ``.obs`` is added as ``<name>_platemap`` (external:
        ``<name>_external``).

    Notes
    -----
    Differences from pycytominer: unmatched profiles and duplicated plate-map
    keys raise instead of being dropped/duplicated by the inner join; rows keep
    the profiles' order (pycytominer returns them in plate-map order); external
    metadata with duplicated keys raise (pycytominer would duplicate rows, then
    ``drop_duplicates``); profiles without external match are warned about.

    Examples
    --------
    >>> import pandas as pd, imgprof as ip
    >>> wells = ip.datasets.simulate(n_plates=1, n_perturbations=4, n_moa=2, n_controls=4, n_features=10, seed=0)
    >>> pm = pd.DataFrame({"well_position": wells.obs["Metadata_Well"], "dose_uM": 1.0})
    >>> ip.pp.annotate(wells, pm, join_on=["Metadata_well_position", "Metadata_Well"])
    >>> wells.obs["Metadata_dose_uM"].unique().tolist()
    [1.0]
    """
    if unmatched not in ("raise", "keep", "drop"):
        raise ValueError(f"unmatched must be 'raise', 'keep' or 'drop', got {unmatched!r}.")
    if (external_metadata is None) != (external_join_on is None):
        raise ValueError("external_metadata and external_join_on must be given together.")
    check_adata(adata)
    left, right = _parse_join_on(join_on)
    check_obs_keys(adata, right, param="join_on (profile keys)")
    pm = load_platemap(platemap, add_metadata_prefix=add_metadata_prefix, sep=platemap_sep)
    src = str(platemap) if not isinstance(platemap, pd.DataFrame) else "platemap DataFrame"
    check_df_keys(pm, left, param="join_on (platemap keys)", where=f"the plate map ({src}, columns after prefixing)")
    rows = _match(adata.obs.loc[:, right], pm, left, right, what=f"platemap ({src})")
    miss = _check_unmatched(adata, rows, right, unmatched)
    adata = start(adata, copy)
    obs = adata.obs.copy()  # every check passes before adata changes (no half-annotated object on error)
    features = set(map(str, adata.var_names))
    # pycytominer drops the plate-map key columns when their names differ from the profile keys
    added = _add_columns(obs, pm, rows, skip=left, what="plate-map", suffix="platemap", features=features)
    n_unmatched_external = 0
    if external_metadata is not None:
        ext_added, n_unmatched_external = _join_external(adata, obs, external_metadata, external_join_on, features)
        added += ext_added
    renamed = _clean_cellprofiler(obs, features) if clean_cellprofiler else {}
    added = [renamed.get(c, c) for c in added]
    adata.obs = obs
    n_miss = int(miss.sum())
    if n_miss and unmatched == "drop":
        adata._inplace_subset_obs(~miss)
    ext_logged = external_metadata
    if ext_logged is not None:
        ext_logged = "DataFrame" if isinstance(ext_logged, pd.DataFrame) else str(ext_logged)
    log_step(
        adata, "pp.annotate",
        {"platemap": src, "join_on": [left, right], "add_metadata_prefix": add_metadata_prefix,
         "external_metadata": ext_logged, "external_join_on": external_join_on,
         "clean_cellprofiler": clean_cellprofiler, "unmatched": unmatched},
        added_columns=added, renamed=renamed, n_unmatched=n_miss, n_unmatched_external=n_unmatched_external,
        n_dropped=n_miss if unmatched == "drop" else 0,
    )
    return finish(adata, copy)
