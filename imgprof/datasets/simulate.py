"""A seeded simulator of Cell Painting profiles with known ground truth."""

from __future__ import annotations

import json
import string

import anndata as ad
import numpy as np
import pandas as pd

from .._core.anatomy import parse_feature_names
from .._core.provenance import log_step, record

_COMPARTMENTS = ("Cells", "Cytoplasm", "Nuclei")
_CHANNELS = ("DNA", "RNA", "ER", "AGP", "Mito")
_TEMPLATES = (
    ("AreaShape", ("Area", "Perimeter", "FormFactor", "Eccentricity", "Solidity", "Extent", "MajorAxisLength",
                   "Zernike_0_0", "Zernike_2_2"), False),
    ("Intensity", ("MeanIntensity", "MedianIntensity", "IntegratedIntensity", "StdIntensity", "MaxIntensity",
                   "MassDisplacement"), True),
    ("Texture", ("AngularSecondMoment_{c}_3_00_256", "Contrast_{c}_3_00_256", "Entropy_{c}_3_00_256",
                 "InfoMeas1_{c}_3_00_256", "SumVariance_{c}_5_00_256"), None),
    ("Granularity", ("1_{c}", "2_{c}", "3_{c}", "4_{c}"), None),
    ("RadialDistribution", ("FracAtD_{c}_1of4", "MeanFrac_{c}_2of4", "RadialCV_{c}_3of4", "FracAtD_{c}_4of4"), None),
    ("Correlation", ("Correlation_DNA_{c}", "K_{c}_RNA", "Overlap_ER_{c}"), None),
)


def feature_names(n_features: int) -> list[str]:
    """CellProfiler-style names for ``n_features`` simulated features (cycled over compartments and channels)."""
    names: list[str] = []
    for comp in _COMPARTMENTS:
        for group, feats, per_channel in _TEMPLATES:
            for f in feats:
                if per_channel is False:
                    names.append(f"{comp}_{group}_{f}")
                elif per_channel is True:
                    names.extend(f"{comp}_{group}_{f}_{c}" for c in _CHANNELS)
                else:
                    names.extend(f"{comp}_{group}_{f.format(c=c)}" for c in _CHANNELS)
    names = list(dict.fromkeys(names))
    if n_features <= len(names):
        rng = np.random.default_rng(12345)
        idx = np.sort(rng.choice(len(names), size=n_features, replace=False))
        return [names[i] for i in idx]
    extra = [f"Cells_Texture_Variance_{_CHANNELS[i % 5]}_{3 + i // 5}_00_256" for i in range(n_features - len(names))]
    return names + extra


def _wells(n: int) -> list[str]:
    rows = string.ascii_uppercase[:16]
    all_wells = [f"{r}{c:02d}" for r in rows for c in range(1, 25)]
    if n > len(all_wells):
        raise ValueError(f"simulate: {n} wells per plate do not fit a 384-well plate; lower n_perturbations or n_controls.")
    return all_wells[:n]


def _check_layout(level: str, n_moa: int, n_perturbations: int, n_plates: int, n_batches: int | None) -> int:
    """Check the layout; return the number of batches (default: half the plates)."""
    if level not in ("well", "single_cell"):
        raise ValueError(f"simulate: level must be 'well' or 'single_cell', got {level!r}.")
    if n_moa < 1 or n_perturbations < n_moa:
        raise ValueError("simulate: need 1 <= n_moa <= n_perturbations.")
    n_batches = n_batches or max(1, n_plates // 2)
    if n_batches > n_plates:
        raise ValueError(f"simulate: n_batches={n_batches} > n_plates={n_plates}.")
    return n_batches


def _biology(
    rng: np.random.Generator, p_base: int, n_latent: int, n_moa: int, n_perturbations: int,
    moa_strength: float, perturbation_strength: float, frac_active: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Latent MOA and perturbation effects mapped to features: centroids, MOA per perturbation, activity, effects."""
    loadings = rng.normal(size=(n_latent, p_base)) / np.sqrt(n_latent)
    moa_centroids = rng.normal(scale=moa_strength, size=(n_moa, n_latent))
    pert_moa = np.arange(n_perturbations) % n_moa
    rng.shuffle(pert_moa)
    active = rng.random(n_perturbations) < frac_active
    pert_latent = moa_centroids[pert_moa] + rng.normal(scale=perturbation_strength, size=(n_perturbations, n_latent))
    pert_latent[~active] = 0.0
    return moa_centroids, pert_moa, active, pert_latent @ loadings * np.sqrt(n_latent / 2)


def _technical(
    rng: np.random.Generator, p_base: int, n_plates: int, n_batches: int, batch_additive: float,
    batch_multiplicative: float, plate_additive: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batch of each plate, batch shifts and scales, plate shifts."""
    plate_batch = np.sort(np.arange(n_plates) % n_batches)
    batch_shift = rng.normal(scale=batch_additive, size=(n_batches, p_base))
    batch_scale = np.exp(rng.normal(scale=batch_multiplicative, size=(n_batches, p_base)))
    plate_shift = rng.normal(scale=plate_additive, size=(n_plates, p_base))
    return plate_batch, batch_shift, batch_scale, plate_shift


def _well_row(rng: np.random.Generator, plate: int, b: int, well: str, name: str, i: int, pert_moa: np.ndarray,
              active: np.ndarray, cells_per_well: int) -> dict:
    return {
        "Metadata_Plate": f"plate_{plate + 1}",
        "Metadata_Batch": f"batch_{b + 1}",
        "Metadata_Well": well,
        "Metadata_Perturbation": name,
        "Metadata_moa": f"moa_{pert_moa[i]}" if i >= 0 else "control",
        "Metadata_control_type": "negcon" if i < 0 else "trt",
        "Metadata_pert_type": "control" if i < 0 else "trt",
        "Metadata_active": bool(active[i]) if i >= 0 else False,
        "Metadata_Count_Cells": int(rng.poisson(cells_per_well)) + 1,
    }


def _to_cells(rng: np.random.Generator, obs: pd.DataFrame, Z: np.ndarray, cell_noise: float) -> tuple[pd.DataFrame, np.ndarray]:
    """Each well's ``Metadata_Count_Cells`` cells spread ``cell_noise`` around the well's profile."""
    counts = obs["Metadata_Count_Cells"].to_numpy()
    idx = np.repeat(np.arange(len(obs)), counts)
    Z = Z[idx] + rng.normal(scale=cell_noise, size=(len(idx), Z.shape[1]))
    obs = obs.iloc[idx].reset_index(drop=True)
    obs["Metadata_Site"] = rng.integers(1, 5, size=len(obs))
    obs["Metadata_ObjectNumber"] = obs.groupby(["Metadata_Plate", "Metadata_Well"]).cumcount() + 1
    return obs, Z


def _data_traps(
    rng: np.random.Generator, X: np.ndarray, names: list[str], scale: np.ndarray, n_correlated: int, n_constant: int,
    nan_fraction: float,
) -> tuple[np.ndarray, list[str]]:
    """Append near-duplicate and constant features, then blank a share of the entries."""
    if n_correlated:
        src = rng.choice(X.shape[1], size=n_correlated, replace=True)
        factor = rng.uniform(0.5, 2.0, size=n_correlated)  # drawn before the noise, as always
        dup = X[:, src] * factor + rng.normal(scale=0.01, size=(X.shape[0], n_correlated)) * scale[src]
        X = np.hstack([X, dup])
        names += [f"Cells_Intensity_LowerQuartileIntensity_{_CHANNELS[i % 5]}_dup{i}" for i in range(n_correlated)]
    if n_constant:
        X = np.hstack([X, np.full((X.shape[0], n_constant), 7.0)])
        names += [f"Nuclei_Neighbors_NumberOfNeighbors_{i}" for i in range(n_constant)]
    if nan_fraction > 0:
        mask = rng.random(X.shape) < nan_fraction
        X[mask] = np.nan
    return X, names


def simulate(
    n_plates: int = 4,
    n_batches: int | None = None,
    n_perturbations: int = 48,
    n_moa: int = 8,
    n_controls: int = 16,
    replicates_per_plate: int = 1,
    n_features: int = 200,
    n_latent: int = 12,
    moa_strength: float = 1.5,
    perturbation_strength: float = 0.6,
    frac_active: float = 0.75,
    batch_additive: float = 1.0,
    batch_multiplicative: float = 0.3,
    plate_additive: float = 0.2,
    noise: float = 1.0,
    level: str = "well",
    cells_per_well: int = 30,
    cell_noise: float = 1.0,
    nan_fraction: float = 0.0,
    n_constant: int = 0,
    n_correlated: int = 0,
    seed: int | None = 0,
) -> ad.AnnData:
    """Simulate Cell Painting profiles with a known ground truth.

    Plates are grouped into batches. Every plate holds ``n_controls`` negative
    control wells and each perturbation ``replicates_per_plate`` times, so a
    perturbation's replicates span plates (and batches). Perturbations share
    mechanism classes (MOAs): an active perturbation's effect is its MOA's
    centroid plus its own deviation, both living in an ``n_latent``-dimensional
    subspace mapped onto correlated features; inactive perturbations look like
    controls. Batches add a shift (``batch_additive``) and a per-feature scale
    (``batch_multiplicative``); plates add a smaller shift. Features sit on
    CellProfiler-like raw scales (positive, different magnitudes), so
    normalization matters.

    Parameters
    ----------
    n_plates, n_batches
        Plates, and batches they are split into (default: ``max(1, n_plates // 2)``).
    n_perturbations, n_moa, n_controls, replicates_per_plate
        Layout of each plate.
    n_features, n_latent
        Feature count and rank of the biological signal.
    moa_strength, perturbation_strength, frac_active
        Size of MOA and perturbation effects (in noise units) and the share of active perturbations.
    batch_additive, batch_multiplicative, plate_additive, noise
        Technical effects and measurement noise.
    level
        ``"well"`` or ``"single_cell"`` (``cells_per_well`` Poisson-distributed cells per well around
        the well mean, ``cell_noise`` spread).
    nan_fraction, n_constant, n_correlated
        Data-quality traps: share of NaN entries, constant features, and near-duplicate (r > 0.99) features appended.
    seed
        Random seed; the same seed gives the same data.
    cells_per_well
        Mean number of cells per well with ``level="single_cell"`` (Poisson).
    cell_noise
        Standard deviation of each cell around its well mean (``level="single_cell"``).

    Returns
    -------
    AnnData whose ``.obs`` holds ``Metadata_Plate``, ``Metadata_Batch``, ``Metadata_Well``,
    ``Metadata_Perturbation``, ``Metadata_moa``, ``Metadata_control_type`` (``negcon``/``trt``),
    ``Metadata_pert_type``, ``Metadata_active`` (truth) and ``Metadata_Count_Cells``;
    ``.uns['simulation']`` holds the parameters and the true MOA centroids.

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate(n_plates=2, n_perturbations=12, n_moa=3, seed=0)
    >>> int(adata.obs["Metadata_control_type"].value_counts()["negcon"])
    32
    """
    n_batches = _check_layout(level, n_moa, n_perturbations, n_plates, n_batches)
    rng = np.random.default_rng(seed)
    p_base = n_features
    moa_centroids, pert_moa, active, pert_effect = _biology(
        rng, p_base, n_latent, n_moa, n_perturbations, moa_strength, perturbation_strength, frac_active)
    plate_batch, batch_shift, batch_scale, plate_shift = _technical(
        rng, p_base, n_plates, n_batches, batch_additive, batch_multiplicative, plate_additive)
    # Raw CellProfiler-like scales.
    loc = np.exp(rng.uniform(0, 6, size=p_base))
    scale = loc * rng.uniform(0.05, 0.3, size=p_base)
    rows, profiles = [], []
    n_wells = n_controls + n_perturbations * replicates_per_plate
    all_wells = _wells(n_wells) if n_wells > 384 else _wells(384)
    slots = [("DMSO", -1)] * n_controls + [
        (f"pert_{i:03d}", i) for i in range(n_perturbations) for _ in range(replicates_per_plate)]
    for plate in range(n_plates):
        wells = [all_wells[i] for i in np.sort(rng.choice(len(all_wells), size=n_wells, replace=False))]
        b = plate_batch[plate]
        for w, k in zip(wells, rng.permutation(len(slots))):
            name, i = slots[k]
            effect = pert_effect[i] if i >= 0 else np.zeros(p_base)
            z = effect + rng.normal(scale=noise, size=p_base)
            profiles.append(z * batch_scale[b] + batch_shift[b] + plate_shift[plate])
            rows.append(_well_row(rng, plate, b, w, name, i, pert_moa, active, cells_per_well))
    Z = np.asarray(profiles)
    obs = pd.DataFrame(rows)
    if level == "single_cell":
        obs, Z = _to_cells(rng, obs, Z, cell_noise)
    X, names = _data_traps(rng, loc + Z * scale, feature_names(p_base), scale, n_correlated, n_constant, nan_fraction)
    obs.index = obs.index.astype(str)
    var = parse_feature_names(names)
    var["input_dtype"] = "float64"
    adata = ad.AnnData(X=X, obs=obs, var=var)
    rec = record(adata)
    rec.set("columns", list(obs.columns) + names)
    rec.level = level
    params = dict(
        n_plates=n_plates, n_batches=n_batches, n_perturbations=n_perturbations, n_moa=n_moa, n_controls=n_controls,
        replicates_per_plate=replicates_per_plate, n_features=n_features, n_latent=n_latent, moa_strength=moa_strength,
        perturbation_strength=perturbation_strength, frac_active=frac_active, batch_additive=batch_additive,
        batch_multiplicative=batch_multiplicative, plate_additive=plate_additive, noise=noise, level=level,
        cells_per_well=cells_per_well, cell_noise=cell_noise, nan_fraction=nan_fraction, n_constant=n_constant,
        n_correlated=n_correlated, seed=seed,
    )
    adata.uns["simulation"] = {
        "params": json.dumps(params),
        "moa_centroids": moa_centroids,
        "perturbation_moa": np.array([f"moa_{m}" for m in pert_moa]),
        "perturbation_active": active,
    }
    log_step(adata, "datasets.simulate", params)
    return adata
