"""Folder of Cell Painting images → single-cell AnnData, in one call.

:func:`profile_images` chains :func:`~imgprof.io.read_images`, image QC,
illumination correction, segmentation, cp-measure measurements and an optional
deep-learning featurizer, site by site in parallel with dask. One bad site never
aborts the plate: it is reported in the per-site report
(``imgprof._core.provenance.record(adata).get("sites")``) and by a warning, and
skipped. The result has the same layout as profiles read from CellProfiler's own
output (``Compartment_Group_Feature_Channel`` features).
"""

from __future__ import annotations

import os
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .measure import FEATURE_GROUPS
from .read import QC_ERROR, ImageSet

__all__ = ["profile_images", "profile_site"]

_CELL_BODY_GUESSES = ("AGP", "Actin", "RNA", "ER", "CellBody", "cellbody", "Mito")


def profile_site(
    images: Mapping[str, np.ndarray],
    *,
    segmenter: Callable | None = None,
    labels: Mapping[str, np.ndarray] | None = None,
    features: Sequence[str] | None = FEATURE_GROUPS,
    measure_channels: Sequence[str] | None = None,
    measure_kwargs: Mapping[str, Any] | None = None,
    featurizer: Callable | None = None,
    crop_kwargs: Mapping[str, Any] | None = None,
    crop_compartment: str = "Cells",
    timings: dict[str, float] | None = None,
) -> tuple[pd.DataFrame, np.ndarray | None, dict[str, np.ndarray]]:
    """Segment (or take ``labels``), measure and featurize one site (pure, no AnnData).

    Returns ``(table, embeddings or None, labels)``; the table has one row per cell
    (``Metadata_ObjectNumber``, centroids, features) as :func:`imgprof.im.measure_objects`.

    Parameters
    ----------
    images
        Channel name → 2-D image in [0, 1].
    segmenter
        Callable ``images -> {"Nuclei", "Cells", "Cytoplasm": labels}`` (default CellProfiler-style).
    labels
        Precomputed label images (skip segmentation).
    features
        CellProfiler feature groups to measure (``None``: none).
    measure_channels
        Channels to measure (default: all).
    measure_kwargs
        Extra arguments of :func:`measure_objects`.
    featurizer, crop_kwargs, crop_compartment
        Optional crop featurizer (see :func:`featurize_site`), its arguments and the
        compartment whose objects are cropped.
    timings
        Dict that receives the seconds spent per stage.

    Returns
    -------
    tuple
        ``(table, embeddings or None, labels)``: one row per cell, the crop embeddings,
        and the label images.

    Examples
    --------
    >>> import imgprof as ip
    >>> imgs = ip.io.read_images(ip.datasets.examplehuman_images_path(),
    ...                          channels={"0": "DNA", "1": "PH3", "2": "cellbody"})
    >>> seg = ip.im.CellProfilerSegmenter(nuclei_channel="DNA", cells_channel="cellbody")
    >>> df, _, labels = ip.im.profile_site(imgs.read(0), segmenter=seg, features=["AreaShape"])
    >>> len(df) == int(labels["Cells"].max())
    True
    """
    from .crops import featurize_site
    from .measure import measure_objects
    from .segment import PrecomputedLabels, segment_site

    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    if labels is not None:
        labs = segment_site(images, PrecomputedLabels(dict(labels)))
    else:
        labs = segment_site(images, segmenter)
    timings["segmentation"] = timings.get("segmentation", 0.0) + time.perf_counter() - t0
    primary = "Cells" if "Cells" in labs else next(iter(labs))
    n = int(len(np.unique(labs[primary])) - 1)
    if n == 0:
        return pd.DataFrame({"Metadata_ObjectNumber": np.zeros(0, np.int64)}), None, labs
    t0 = time.perf_counter()
    if features:
        mt: dict[str, float] = {}
        df = measure_objects(images, labs, features=features, channels=measure_channels, primary=primary,
                             timings=mt, **dict(measure_kwargs or {}))
        for k, v in mt.items():
            timings[f"measure.{k}"] = timings.get(f"measure.{k}", 0.0) + v
    else:
        ids = np.unique(labs[primary])
        df = pd.DataFrame({"Metadata_ObjectNumber": ids[ids > 0].astype(np.int64)})
    timings["measurement"] = timings.get("measurement", 0.0) + time.perf_counter() - t0
    emb = None
    if featurizer is not None:
        t0 = time.perf_counter()
        if crop_compartment not in labs:
            raise KeyError(f"crop_compartment={crop_compartment!r} not among {list(labs)}.")
        emb, _ = featurize_site(images, labs[crop_compartment], featurizer,
                                object_numbers=df["Metadata_ObjectNumber"].to_numpy(), **dict(crop_kwargs or {}))
        timings["featurizer"] = timings.get("featurizer", 0.0) + time.perf_counter() - t0
    return df, emb, labs


def _process(images, i: int, cfg: dict) -> dict:
    """Worker: one site → measurements + report. Never raises (errors are reported)."""
    from .qc import image_quality

    t_start = time.perf_counter()
    cpu_start = time.process_time()
    timings: dict[str, float] = {}
    report: dict[str, Any] = {"site_index": i, "n_objects": 0, "error": "", "seconds": 0.0}
    try:
        t0 = time.perf_counter()
        raw = images.read(i, corrected=False)
        timings["read"] = time.perf_counter() - t0
        qc = {}
        if cfg["qc"]:
            t0 = time.perf_counter()
            for ch, a in raw.items():
                for k, v in image_quality(a).items():
                    qc[f"Metadata_qc_{k}_{ch}"] = v
            timings["qc"] = time.perf_counter() - t0
        report["qc"] = qc
        site = raw
        if images.illumination:
            plate = str(images.table.iloc[i].get("Metadata_Plate", ""))
            funcs = images.illumination.get(plate, images.illumination.get("*"))
            if funcs is None:
                raise KeyError(f"no illumination function for plate {plate!r}.")
            site = {ch: (a / np.asarray(funcs[ch], np.float32) if ch in funcs else a) for ch, a in raw.items()}
        labels = None
        if cfg["use_objects"]:
            labels = images.read_objects(i) or None
        df, emb, _ = profile_site(
            site, segmenter=cfg["segmenter"], labels=labels, features=cfg["features"],
            measure_channels=cfg["measure_channels"], measure_kwargs=cfg["measure_kwargs"],
            featurizer=cfg["featurizer"], crop_kwargs=cfg["crop_kwargs"], crop_compartment=cfg["crop_compartment"],
            timings=timings,
        )
        report["n_objects"] = len(df)
        out = {"df": df, "emb": emb}
    except Exception as e:  # one bad site never aborts the plate
        report["error"] = f"{type(e).__name__}: {e}"
        report["traceback"] = traceback.format_exc(limit=3)
        out = {"df": None, "emb": None}
    report["timings"] = timings
    report["seconds"] = time.perf_counter() - t_start
    report["cpu_seconds"] = time.process_time() - cpu_start
    out["report"] = report
    return out


def _default_segmenter(channels: list[str], nuclei_channel, cells_channel):
    from .segment import CellProfilerSegmenter

    if nuclei_channel is None:
        nuclei_channel = "DNA" if "DNA" in channels else None
    if cells_channel is None:
        cells_channel = next((c for c in _CELL_BODY_GUESSES if c in channels and c != nuclei_channel), None)
    if nuclei_channel is None or cells_channel is None:
        raise ValueError(
            f"cannot guess the segmentation channels among {channels}: pass nuclei_channel= and cells_channel= "
            "(or segmenter=)."
        )
    for role, ch in (("nuclei_channel", nuclei_channel), ("cells_channel", cells_channel)):
        if ch not in channels:
            raise KeyError(f"{role}={ch!r} is not one of the channels {channels}.")
    return CellProfilerSegmenter(nuclei_channel=nuclei_channel, cells_channel=cells_channel)


def profile_images(
    source: str | os.PathLike | pd.DataFrame | ImageSet,
    *,
    channels: Mapping[str, str] | Sequence[str] | None = None,
    pattern: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    segmenter: Callable | str | os.PathLike | None = None,
    nuclei_channel: str | None = None,
    cells_channel: str | None = None,
    features: Sequence[str] | None = FEATURE_GROUPS,
    measure_channels: Sequence[str] | None = None,
    measure_kwargs: Mapping[str, Any] | None = None,
    illumination: str | os.PathLike | Mapping | None = None,
    illumination_kwargs: Mapping[str, Any] | None = None,
    qc: bool = True,
    qc_kwargs: Mapping[str, Any] | None = None,
    featurizer: Callable | None = None,
    featurizer_key: str = "X_embedding",
    crop_kwargs: Mapping[str, Any] | None = None,
    crop_compartment: str = "Cells",
    n_jobs: int | None = None,
    scheduler: str | None = None,
    output: str | os.PathLike | None = None,
    read_kwargs: Mapping[str, Any] | None = None,
) -> AnnData:
    """Turn a folder (or load-data table, or :class:`~imgprof.im.read.ImageSet`) of images into single-cell profiles.

    Parameters
    ----------
    source
        Image folder, load-data CSV/DataFrame (see :func:`imgprof.io.read_images`) or an ImageSet.
    channels, pattern, metadata
        Passed to :func:`~imgprof.io.read_images` when ``source`` is not an ImageSet.
    segmenter
        A segmenter callable (:class:`~imgprof.im.CellProfilerSegmenter`,
        :class:`~imgprof.im.CellposeSegmenter`, your own ``images -> labels``), or the
        path of a CellProfiler ``.cppipe`` whose Identify modules are mirrored. Default:
        CellProfiler-style segmentation of ``nuclei_channel`` / ``cells_channel``
        (guessed: ``DNA`` and ``AGP``/``RNA``/...). Sites whose load-data rows carry
        ``ObjectsFileName_<name>`` columns use those label images instead.
    features
        cp-measure feature groups (default: all); ``None`` or ``()`` for no measurement
        (e.g. embeddings only).
    measure_channels, measure_kwargs
        Channels to measure (default: all) and options of :func:`~imgprof.im.measure_objects`.
    illumination
        ``"compute"`` (per-plate functions via :func:`~imgprof.im.compute_illumination`
        with ``illumination_kwargs``), a folder of saved functions, a dict
        ``{plate: {channel: array}}``, or ``None`` (no correction).
    qc, qc_kwargs
        Compute image QC metrics and ``Metadata_qc_*`` flags (never drops a site);
        options of :func:`~imgprof.im.qc_flags`.
    featurizer, featurizer_key, crop_kwargs, crop_compartment
        Optional callable on crops ``(n, C, H, W) -> (n, d)``; embeddings go to
        ``.obsm[featurizer_key]`` (or ``.X`` when ``features`` is empty). ``crop_kwargs``:
        ``size``, ``channels``, ``mask`` of :func:`~imgprof.im.extract_crops`.
    n_jobs, scheduler
        Sites processed in parallel with dask (``"processes"`` by default when
        ``n_jobs > 1``, else ``"synchronous"``; an active ``dask.distributed`` client is
        used when ``scheduler="distributed"``).
    output
        Optional path: the profiles are also written there (``.h5ad``, ``.parquet``, ``.csv.gz``...).
    read_kwargs
        Extra options of :func:`~imgprof.io.read_images`.
    nuclei_channel, cells_channel
        Channels for the default segmenter (nuclear stain; cell body stain); guessed
        (``DNA``; the first cell-body-like channel) when ``None``.
    illumination_kwargs
        Keyword arguments of :func:`~imgprof.im.compute_illumination` with
        ``illumination="compute"``.

    Returns
    -------
    AnnData: one row per cell. ``.obs``: site metadata (``Metadata_Plate``,
    ``Metadata_Well``, ``Metadata_Site``...), ``Metadata_ImageNumber``,
    ``Metadata_ObjectNumber``, centroids ``Metadata_<Compartment>_Location_Center_X/Y``
    and the site's ``Metadata_qc_*`` columns; ``.X``: features; ``.var``: anatomy;
    per-site report (cells, seconds, error, QC) in the imgprof record of ``.uns``
    (``imgprof._core.provenance.record(adata).get("sites")``).

    Notes
    -----
    Silent by default; inside ``imgprof._core.progress.show_progress()`` (as in
    ``imgprof run``) a bar ticks once per finished site (local dask schedulers).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.im.profile_images(ip.datasets.examplehuman_images_path(),
    ...     channels={"0": "DNA", "1": "PH3", "2": "cellbody"},
    ...     nuclei_channel="DNA", cells_channel="cellbody", features=["AreaShape", "Intensity"], n_jobs=1)
    >>> adata.n_obs
    289
    """
    from .._core.provenance import log_step, record
    from .illumination import compute_illumination, correct_illumination

    if features:  # cp-measure does the measuring: check it before reading a single image
        from .._core.optional import require

        require("cp_measure", extra="im", pip_name="cp-measure", purpose="ip.im.profile_images(features=...)")
    t_total = time.perf_counter()
    images = _open_images(source, channels, pattern, metadata, read_kwargs)
    features = tuple(features or ())
    segmenter, use_objects = _resolve_segmenter(images, segmenter, nuclei_channel, cells_channel)
    if featurizer is not None and not callable(featurizer):
        raise TypeError(f"featurizer must be callable (crops -> array), got {type(featurizer).__name__}.")
    if not features and featurizer is None:
        raise ValueError("nothing to compute: features is empty and no featurizer was given.")
    mk = dict(measure_kwargs or {})
    if "Correlation" in features and "scale_max" not in mk:
        mk["scale_max"] = images.scale_max

    if illumination is not None:
        if isinstance(illumination, str) and illumination == "compute":
            illumination = compute_illumination(images, n_jobs=n_jobs, **dict(illumination_kwargs or {}))
        images = correct_illumination(images, illumination)

    cfg = dict(segmenter=segmenter, features=features, measure_channels=measure_channels, measure_kwargs=mk,
               featurizer=featurizer, crop_kwargs=dict(crop_kwargs or {}), crop_compartment=crop_compartment,
               qc=qc, use_objects=use_objects)
    ok = np.flatnonzero(images.ok)
    results = _run_sites(images, ok, cfg, n_jobs=n_jobs, scheduler=scheduler)
    table, rep, timing_rows = _site_table(images, ok, results, qc=qc, qc_kwargs=qc_kwargs)
    adata = _cells_to_anndata(table, rep, ok, results, featurizer_key, source=str(images.source or "ImageSet"))
    rec = record(adata)
    rec.level = "single_cell"
    rec.set("sites", _site_report(table, rep, timing_rows))
    seg_desc = repr(segmenter) if segmenter is not None else "ObjectsFileName labels"
    log_step(
        adata, "im.profile_images",
        {"source": str(images.source), "channels": images.channels, "segmenter": seg_desc[:500],
         "features": list(features), "measure_kwargs": mk, "illumination": images.illumination is not None,
         "qc": qc, "featurizer": featurizer, "n_jobs": n_jobs, "scheduler": scheduler},
        n_sites=len(table), n_failed=int((rep["error"] != "").sum()), n_cells=int(adata.n_obs),
        seconds=round(time.perf_counter() - t_total, 3),
    )
    if output is not None:
        from ..io.profiles import write_profiles

        write_profiles(adata, Path(output))
    return adata


def _open_images(source: Any, channels: Any, pattern: str | None, metadata: Mapping[str, Any] | None,
                 read_kwargs: Mapping[str, Any] | None) -> ImageSet:
    from .read import ImageSet, read_images

    if isinstance(source, ImageSet):
        if channels is not None or pattern is not None:
            raise ValueError("channels=/pattern= apply only when source is a folder or load-data table, not an ImageSet.")
        return source
    return read_images(source, channels=channels, pattern=pattern, metadata=metadata, **dict(read_kwargs or {}))


def _resolve_segmenter(images: ImageSet, segmenter: Any, nuclei_channel: str | None,
                       cells_channel: str | None) -> tuple[Callable | None, bool]:
    """The segmenter to run (``None``: the image set's own object labels are used) and whether labels are read."""
    from .segment import CellProfilerSegmenter

    if isinstance(segmenter, (str, os.PathLike)):
        segmenter = CellProfilerSegmenter.from_cppipe(Path(segmenter))
    if segmenter is not None and (nuclei_channel is not None or cells_channel is not None):
        raise ValueError("pass either segmenter= or nuclei_channel=/cells_channel=, not both.")
    use_objects = bool(images.object_names) and segmenter is None and nuclei_channel is None and cells_channel is None
    if segmenter is None and not use_objects:
        segmenter = _default_segmenter(images.channels, nuclei_channel, cells_channel)
    if segmenter is not None and not callable(segmenter):
        raise TypeError(f"segmenter must be callable (images -> labels), got {type(segmenter).__name__}.")
    return segmenter, use_objects


def _site_table(images: ImageSet, ok: np.ndarray, results: list[dict], *, qc: bool,
                qc_kwargs: Mapping[str, Any] | None) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, dict]]:
    """Per-site metadata with QC flags, the per-site report (objects, seconds, error) and per-site timings."""
    from .qc import QC_METRICS, qc_flags

    table = images.table.copy()
    table["Metadata_ImageNumber"] = np.arange(1, len(table) + 1)
    for ch in images.channels:  # image file names travel with the cells, as in CellProfiler's joined tables
        for kind in ("FileName", "PathName"):
            if f"{kind}_{ch}" in table:
                table[f"Metadata_{kind}_{ch}"] = table[f"{kind}_{ch}"]
    rep = pd.DataFrame(index=range(len(table)))
    rep["n_objects"] = 0
    rep["seconds"] = np.nan
    rep["cpu_seconds"] = np.nan
    rep["error"] = table[QC_ERROR].fillna("").astype(str)
    timing_rows: dict[int, dict] = {}
    for i, res in zip(ok, results):
        r = res["report"]
        rep.loc[i, "n_objects"] = r["n_objects"]
        rep.loc[i, "seconds"] = r["seconds"]
        rep.loc[i, "cpu_seconds"] = r["cpu_seconds"]
        if r["error"]:
            rep.loc[i, "error"] = r["error"]
        timing_rows[int(i)] = r["timings"]
        for k, v in r.get("qc", {}).items():
            if k not in table:
                table[k] = np.nan
            table.loc[i, k] = v
    if qc:
        have = [ch for ch in images.channels if f"Metadata_qc_{QC_METRICS[0]}_{ch}" in table]
        if have:
            table = qc_flags(table.assign(**{QC_ERROR: rep["error"]}), have, **dict(qc_kwargs or {}))
    table[QC_ERROR] = rep["error"].to_numpy()
    table["Metadata_qc_no_objects"] = (rep["n_objects"].to_numpy() == 0) & (rep["error"].to_numpy() == "")
    _warn_failed_sites(table, rep, images.channels)
    return table, rep, timing_rows


def _warn_failed_sites(table: pd.DataFrame, rep: pd.DataFrame, channels: list[str]) -> None:
    from .read import ImageSet

    failed = rep["error"] != ""
    if failed.any():
        msgs = [f"{ImageSet(table, channels)._describe(table.iloc[i])}: {rep.loc[i, 'error']}"
                for i in np.flatnonzero(failed)]
        warnings.warn(f"profile_images: {int(failed.sum())} of {len(table)} site(s) failed and were skipped: {msgs[:3]}",
                      UserWarning, stacklevel=4)
    n_empty = int(table["Metadata_qc_no_objects"].sum())
    if n_empty:
        warnings.warn(f"profile_images: {n_empty} site(s) yielded no object (flagged Metadata_qc_no_objects).",
                      UserWarning, stacklevel=4)


def _cells_to_anndata(table: pd.DataFrame, rep: pd.DataFrame, ok: np.ndarray, results: list[dict],
                      featurizer_key: str, source: str) -> AnnData:
    """Site metadata joined to every site's cells; features in ``.X``, crop embeddings in ``.obsm[featurizer_key]``."""
    from .measure import objects_to_anndata

    site_meta = [c for c in table.columns if c.startswith("Metadata_")]
    parts, embs = [], []
    for i, res in zip(ok, results):
        df = res["df"]
        if df is None or len(df) == 0:
            continue
        meta = table.loc[[i] * len(df), site_meta].reset_index(drop=True)
        parts.append(pd.concat([meta, df.reset_index(drop=True)], axis=1))
        if res["emb"] is not None:
            embs.append(res["emb"])
    if not parts:
        raise ValueError(
            f"profile_images: no cell was found in any of {len(table)} site(s); errors: "
            f"{[e for e in rep['error'] if e][:3]}"
        )
    cells = pd.concat(parts, ignore_index=True, sort=False)
    meta_cols = [c for c in cells.columns if c.startswith("Metadata_")]
    feat_cols = [c for c in cells.columns if not c.startswith("Metadata_")]
    prefix = featurizer_key.removeprefix("X_") or "embedding"
    emb = np.concatenate(embs) if embs else None
    if not feat_cols:
        if emb is None:
            raise ValueError("profile_images: no feature and no embedding computed.")
        cells = pd.concat([cells[meta_cols], pd.DataFrame(emb, columns=[f"{prefix}_{j}" for j in range(emb.shape[1])])],
                          axis=1)
    adata = objects_to_anndata(cells[meta_cols + [c for c in cells.columns if c not in meta_cols]], source=source)
    if emb is not None and feat_cols:
        adata.obsm[featurizer_key] = emb
    return adata


def _site_report(table: pd.DataFrame, rep: pd.DataFrame, timing_rows: dict[int, dict]) -> pd.DataFrame:
    keys = [c for c in ("Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ImageNumber") if c in table]
    site_report = pd.concat([table[keys], rep], axis=1)
    tim = pd.DataFrame.from_dict(timing_rows, orient="index").add_prefix("seconds_")
    site_report = site_report.join(tim)
    site_report.index = site_report.index.astype(str)
    return site_report


def _run_sites(images, sites, cfg, *, n_jobs, scheduler):
    import dask

    n_jobs = n_jobs or os.cpu_count() or 1
    if scheduler is None:
        scheduler = "processes" if n_jobs > 1 and len(sites) > 1 else "synchronous"
    if scheduler not in ("processes", "threads", "synchronous", "distributed"):
        raise ValueError(f"scheduler={scheduler!r}: expected 'processes', 'threads', 'synchronous' or 'distributed'.")
    # each task gets a one-site ImageSet (with only its plate's illumination) to keep pickles small
    tasks = []
    for i in sites:
        sub = images.subset([int(i)])
        if images.illumination:
            plate = str(images.table.iloc[int(i)].get("Metadata_Plate", ""))
            keep = {k: v for k, v in images.illumination.items() if k in (plate, "*")}
            sub = sub.with_illumination(keep)
        tasks.append(dask.delayed(_process)(sub, 0, cfg))
    if not tasks:
        return []
    from dask.callbacks import Callback

    from .._core.progress import progress_bar

    bar = progress_bar(total=len(tasks), desc="profile_images", unit="sites")

    class _SiteDone(Callback):  # one tick per finished site (local schedulers run the callbacks)
        def _posttask(self, key, result, dsk, state, worker_id):
            name = key[0] if isinstance(key, tuple) else key
            if str(name).startswith("_process"):
                bar.update(1)

    with _SiteDone():
        if scheduler == "distributed":
            out = dask.compute(*tasks)
        elif scheduler == "synchronous":
            out = dask.compute(*tasks, scheduler="synchronous")
        else:
            out = dask.compute(*tasks, scheduler=scheduler, num_workers=n_jobs)
    if scheduler == "distributed":
        bar.update(len(tasks))
    bar.close()
    out = list(out)
    for i, res in zip(sites, out):
        res["report"]["site_index"] = int(i)
    return out
