"""CytoTable output (joined single-cell parquet) → AnnData.

CytoTable (cytomining/CytoTable) converts CellProfiler/DeepProfiler/IN Carta outputs into one
joined parquet table per plate: ``Metadata_*`` columns (``Metadata_ImageNumber``,
``Metadata_ObjectNumber``, ``Metadata_Cells_Parent_Nuclei``...), image columns
(``Image_FileName_*``, ``Image_Metadata_*``...) and ``Cells_*``/``Cytoplasm_*``/``Nuclei_*``
measurements.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import pandas as pd

from .._core.anatomy import parse_feature_names
from .._core.features import check_unique_columns
from .._core.provenance import log_step
from .._core.validation import as_list

PathLike = str | os.PathLike


def _read_table(path: Path) -> pd.DataFrame:
    import pyarrow.dataset as pds

    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes).")
    name = path.name.lower()
    if path.is_file() and name.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except Exception as e:  # pyarrow raises several types for unreadable input
            raise ValueError(f"{path}: not a readable parquet file ({e}).") from e
        check_unique_columns(names, source=str(path))
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # a valid footer over a cut data page
            raise ValueError(f"{path}: not a readable parquet file ({type(e).__name__}: {e}).") from e
    elif path.is_dir():
        try:
            dataset = pds.dataset(path, format="parquet")
        except Exception as e:  # pyarrow raises several types for unreadable input
            raise ValueError(f"{path}: not a readable parquet file or folder ({e}).") from e
        check_unique_columns(dataset.schema.names, source=str(path))
        df = dataset.to_table().to_pandas()
    elif name.removesuffix(".gz").endswith((".csv", ".tsv")):
        from ._text import read_text_table

        df = read_text_table(path)
    else:
        raise ValueError(f"{path}: expected a CytoTable .parquet file (or a folder of them) or a .csv[.gz].")
    if df.shape[0] == 0:
        raise ValueError(f"{path}: the table has a header but no rows.")
    return df


def read_cytotable(
    path: PathLike,
    *,
    compartments: Sequence[str] | None = None,
    image_features: bool = False,
    ids_to_obs: bool = True,
    level: str = "single_cell",
) -> ad.AnnData:
    """Read a CytoTable joined table (parquet file or folder of parquet files) into AnnData.

    Parameters
    ----------
    path
        CytoTable output: one ``.parquet`` file, a folder of parquet files (one dataset), or a
        ``.csv[.gz]`` written by CytoTable.
    compartments
        Measurement prefixes to treat as features. Default: every prefix that parses as a
        CellProfiler compartment (``Cells``, ``Cytoplasm``, ``Nuclei``, or any other object name
        such as ``PH3``) except ``Image``.
    image_features
        Also treat numeric ``Image_*`` measurements (``Image_Count_Cells``,
        ``Image_Granularity_...``) as features. By default every ``Image_*`` column goes to ``.obs``.
    ids_to_obs
        Move per-compartment identifier columns (``<Compartment>_Number_Object_Number`` and
        ``<Compartment>_Parent_<X>``) out of the features into ``.obs`` as
        ``Metadata_<Compartment>_ObjectNumber`` and ``Metadata_<Compartment>_Parent_<X>`` (names
        that :func:`~imgprof.io.read_cellprofiler` gives them). They are object numbers, not
        measurements. ``False`` keeps them as features (as CytoTable and pycytominer do).
    level
        Profile level recorded in the imgprof record (``record(adata).level``).

    Returns
    -------
    AnnData: ``.obs`` holds every non-feature column with its CytoTable name (``Metadata_*``,
    ``Image_FileName_*``... and ``Metadata_SourceBBox*`` bounding boxes when present), ``.X`` the
    measurements, ``.var`` their anatomy.

    Examples
    --------
    >>> import imgprof as ip
    >>> cells = ip.io.read_cytotable("examplehuman_joined_profiles.parquet")  # doctest: +SKIP
    >>> cells.shape  # doctest: +SKIP
    (289, 295)
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder.")
    df = _read_table(path)
    cols = [str(c) for c in df.columns]
    df.columns = cols
    anatomy = parse_feature_names(cols)
    if compartments is None:
        comps = anatomy.loc[anatomy["source"] == "cellprofiler", "compartment"].dropna().astype(str)
        compartments = sorted(set(comps) - {"Image"})
    else:
        compartments = as_list(compartments)
    prefixes = tuple(f"{c}_" for c in compartments)
    if image_features:
        prefixes = (*prefixes, "Image_")
    feats, meta, rename = [], [], {}
    for c in cols:
        if c.startswith("Metadata_") or not c.startswith(prefixes):
            meta.append(c)
            continue
        if c.startswith("Image_") and not pd.api.types.is_numeric_dtype(df[c]):
            meta.append(c)  # file names, paths, image metadata
            continue
        comp = c.split("_", 1)[0]
        if ids_to_obs and c == f"{comp}_Number_Object_Number":
            rename[c] = f"Metadata_{comp}_ObjectNumber"
            meta.append(c)
        elif ids_to_obs and c.startswith(f"{comp}_Parent_"):
            rename[c] = f"Metadata_{c}"
            meta.append(c)
        else:
            feats.append(c)
    if not feats:
        raise ValueError(
            f"{path}: no feature column found (no column starts with {list(prefixes)}); "
            f"columns start with {sorted({c.split('_', 1)[0] for c in cols})[:10]}."
        )
    clash = [v for v in rename.values() if v in cols]
    if clash:
        raise ValueError(f"{path}: cannot move identifier columns to .obs, {clash} already exist; pass ids_to_obs=False.")
    from .profiles import from_pandas

    # Keep CytoTable's column order, with the renamed identifier columns in place.
    df = df.rename(columns=rename)
    meta = [rename.get(c, c) for c in meta]
    adata = from_pandas(df, metadata=meta, features=feats, level=level, source=str(path), require_metadata=False)
    log_step(
        adata, "io.read_cytotable",
        {"path": str(path), "compartments": list(compartments), "image_features": image_features, "ids_to_obs": ids_to_obs},
        moved_to_obs=sorted(rename.values()),
    )
    return adata
