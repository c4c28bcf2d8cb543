"""Loaders for the small real data sets bundled with imgprof (see ``data/ATTRIBUTION.md``).

Each loader reads the bundled file (never modifying it) and returns a fresh AnnData.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import anndata as ad
import pandas as pd

from .._core.provenance import log_step, record
from .._core.storable import make_storable


def data_path(*parts: str) -> Path:
    """Path of a bundled file, e.g. ``data_path("lincs", "SQ00015054_normalized_feature_select.csv.gz")``.

    Parameters
    ----------
    *parts
        Path components below ``imgprof/datasets/data`` (folder, file name).

    Returns
    -------
    pathlib.Path
        Absolute path of the bundled file or folder (it need not exist).

    Examples
    --------
    >>> import imgprof as ip
    >>> ip.datasets.data_path("lincs", "SQ00015054_normalized_feature_select.csv.gz").exists()
    True
    """
    p = Path(str(resources.files("imgprof.datasets").joinpath("data", *parts)))
    if not p.exists():
        raise FileNotFoundError(f"bundled data file {p} is missing; reinstall imgprof.")
    return p


def _tag(adata: ad.AnnData, name: str, license_: str) -> ad.AnnData:
    # Every bundled data set must round-trip through write_h5ad and write_zarr (see _core/storable.py:
    # all-missing object columns become NaN floats; a column whose name differs only by case from an
    # earlier one gets the suffix ``_2``).
    make_storable(adata)
    record(adata).set("dataset", {"name": name, "license": license_,
                                  "attribution": "see imgprof/datasets/data/ATTRIBUTION.md"})
    log_step(adata, f"datasets.{name}", {})
    return adata


def lincs_plate() -> ad.AnnData:
    """One LINCS Cell Painting plate (A549, 48 h), MAD-robustized and feature-selected.

    384 wells × 454 CellProfiler features, 26 ``Metadata_*`` columns including
    ``Metadata_broad_sample``, ``Metadata_moa`` (50 MOAs), ``Metadata_target``,
    ``Metadata_mmoles_per_liter`` (dose, µM) and ``Metadata_pert_type``
    (``trt``/``control``). 56 compounds × 6 doses with **one well per
    compound-dose**, 2 compounds × 12 wells at 20 µM, and 24 DMSO wells.
    Source: cytomining/cytominer-eval example data (BSD-3-Clause).

    The source file has both ``Metadata_plate_map_name`` and
    ``Metadata_Plate_Map_Name`` (same values); names that differ only by case
    cannot be stored by ``write_zarr``, so the second is renamed
    ``Metadata_Plate_Map_Name_2`` (recorded as ``renamed_columns`` in the imgprof record
    of ``.uns``).

    Returns
    -------
    AnnData
        Well-level profiles with ``.var`` feature anatomy and provenance.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.lincs_plate()
    >>> adata.shape
    (384, 454)
    """
    from ..io.profiles import read_profiles

    adata = read_profiles(data_path("lincs", "SQ00015054_normalized_feature_select.csv.gz"))
    return _tag(adata, "lincs_plate", "BSD-3-Clause")


def repurposing_hub() -> pd.DataFrame:
    """Drug Repurposing Hub annotations (``pert_iname``, ``moa``, ``target``...), CC0.

    Returns
    -------
    pandas.DataFrame
        One row per compound: ``pert_iname``, ``clinical_phase``, ``moa``, ``target``,
        ``disease_area``, ``indication``.

    Examples
    --------
    >>> import imgprof as ip
    >>> "moa" in ip.datasets.repurposing_hub().columns
    True
    """
    return pd.read_csv(data_path("lincs", "repurposing_drugs_20180516.txt"), sep="\t", comment="!", encoding="latin-1")


CMQTL_FILES = (
    "2022_09_07_Batch8_cmQTL_CRISPRi_plate1_normalized_feature_select_batch.csv.gz",
    "2022_09_22_Batch8Rerun_MT_rerun_20220919_normalized_feature_select_batch.csv.gz",
)


def cmqtl_crispri(join: str = "inner") -> ad.AnnData:
    """Two real batches of one CRISPRi Cell Painting plate layout (cmQTL), well level.

    Each batch has 384 wells: five target genes (56 wells each) and 104
    ``CONTROL`` wells (``Metadata_target_gene``). The batches were normalized
    and feature-selected separately and share 362 features; ``join="inner"``
    keeps those. ``Metadata_Batch`` names the batch. A well's 10 nearest
    neighbours come from its own batch 83 % of the time: a real batch effect
    beside real gene signal. Source: broadinstitute/cmQTL (BSD-3-Clause).

    Parameters
    ----------
    join
        ``"inner"`` keeps the 362 features both batches share; ``"outer"`` keeps all
        (missing values NaN).

    Returns
    -------
    AnnData
        Profiles (``.obs`` metadata, ``.X`` features, ``.var`` anatomy) with the
        data set's name, licence and a provenance entry in the imgprof record of ``.uns`` (see ``ip.provenance``).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.cmqtl_crispri()
    >>> adata.obs["Metadata_Batch"].value_counts().tolist()
    [384, 384]
    """
    from ..io.profiles import read_profiles

    parts = []
    for fname in CMQTL_FILES:
        a = read_profiles(data_path("cmqtl", fname))
        a.obs["Metadata_Batch"] = fname.split("_normalized")[0]
        a.obs_names = [f"{fname[:10]}_{i}" for i in a.obs_names]
        parts.append(a)
    adata = ad.concat(parts, join=join, merge="first", uns_merge=None)
    var = pd.concat([a.var for a in parts])  # join="outer" keeps features of either batch
    adata.var = var[~var.index.duplicated()].loc[adata.var_names]
    record(adata).level = "well"  # ad.concat(uns_merge=None) left no record behind
    return _tag(adata, "cmqtl_crispri", "BSD-3-Clause")


def nelisa() -> ad.AnnData:
    """nELISA secretome proteomics: 1,525 wells × 191 proteins, 4 plates (A549, 24 h).

    ``Metadata_control_type``: ``negcon`` (DMSO, 64 per plate), ``poscon_*``, NaN =
    treatment. The values are already normalized per plate against DMSO (on every
    plate the DMSO median is 0 and the scaled MAD 1), so re-running
    ``mad_robustize`` on negcon changes nothing. DMSO wells have no
    ``Metadata_broad_sample``. Source: alxndrkalinin/2024_Kalinin_mAP (BSD-3-Clause).

    Returns
    -------
    AnnData
        1,525 wells × 191 proteins; all-missing metadata columns are stored as NaN
        so that the object writes to h5ad and zarr.

    Examples
    --------
    >>> import imgprof as ip
    >>> ip.datasets.nelisa().shape
    (1525, 191)
    """
    from ..io.profiles import read_profiles

    adata = read_profiles(data_path("nelisa", "nelisa_profiles.parquet"))
    return _tag(adata, "nelisa", "BSD-3-Clause")


def l1000_plate(obs_prefix: str | None = None) -> ad.AnnData:
    """One L1000 plate (A375, 24 h, LJP005 kinase inhibitors): 377 wells × 978 landmark genes.

    ``pert_iname``, ``pert_dose`` (µM, -666 = n/a), ``pert_type`` (``trt_cp``,
    ``ctl_vehicle`` = DMSO, ``trt_poscon``). Source: cmap/cmapPy test data (BSD-3-Clause).

    Parameters
    ----------
    obs_prefix
        Prefix for the column-metadata names (e.g. ``"Metadata_"``); ``None`` keeps CMap's names.

    Returns
    -------
    AnnData
        377 samples × 978 genes, CMap metadata in ``.obs`` and ``.var``.

    Examples
    --------
    >>> import imgprof as ip
    >>> int(ip.datasets.l1000_plate().obs["pert_type"].value_counts()["ctl_vehicle"])
    26
    """
    from ..io.gct import read_gct

    adata = read_gct(data_path("l1000", "LJP005_A375_24H_X1_B19.gct.gz"), obs_prefix=obs_prefix)
    return _tag(adata, "l1000_plate", "BSD-3-Clause")


def examplehuman_images_path() -> Path:
    """Folder with CellProfiler's ExampleHuman images (DNA ``d0``, PH3 ``d1``, cell body ``d2``), pipeline and measurements.

    Source: cytomining/CytoTable test data (BSD-3-Clause).

    Returns
    -------
    pathlib.Path
        The folder holding the ``.tif`` images, the CellProfiler pipeline and its measurements.

    Examples
    --------
    >>> import imgprof as ip
    >>> sorted(p.name for p in ip.datasets.examplehuman_images_path().glob("*.tif"))[0]
    'AS_09125_050116030001_D03f00d0.tif'
    """
    return data_path("examplehuman")


def examplehuman_cells() -> ad.AnnData:
    """Single cells measured by CellProfiler on the ExampleHuman images (289 cells, Cells/Cytoplasm/Nuclei joined).

    Returns
    -------
    AnnData
        289 cells × CellProfiler features, ``Metadata_*`` image/object columns in ``.obs``.

    Examples
    --------
    >>> import imgprof as ip
    >>> ip.datasets.examplehuman_cells().n_obs
    289
    """
    from ..io.cellprofiler import read_cellprofiler

    adata = read_cellprofiler(data_path("examplehuman"))
    return _tag(adata, "examplehuman_cells", "BSD-3-Clause")


def way2022_percent_replicating() -> pd.DataFrame:
    """Published percent replicating per dose, Cell Painting vs L1000 (Way et al. 2022, Fig. 1).

    Typed in from the paper's notebook output (12 rows). BSD-3-Clause.

    Returns
    -------
    pandas.DataFrame
        Columns ``assay``, ``dose``, ``dose_recode`` and ``percent_replicating``, 12 rows.

    Examples
    --------
    >>> import imgprof as ip
    >>> ip.datasets.way2022_percent_replicating().shape
    (12, 4)
    """
    return pd.read_csv(data_path("published", "percent_replicating_by_dose.csv"))
