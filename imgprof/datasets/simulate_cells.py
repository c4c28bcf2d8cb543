"""A seeded simulator of single cells whose perturbations change the distribution, not only the mean."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .._core.provenance import log_step, set_level

#: Effect types accepted by :func:`simulate_cells`.
EFFECTS = ("none", "mean", "variance", "subpopulation")


def simulate_cells(
    n_perturbations: int = 8,
    n_cells: int = 200,
    *,
    n_controls: int | None = None,
    n_features: int = 10,
    effects: str | Sequence[str] = "mean",
    effect_size: float = 1.0,
    n_affected: int | None = None,
    subpopulation_fraction: float = 0.2,
    n_plates: int = 1,
    wells_per_group: int = 4,
    plate_effect: float = 0.0,
    seed: int | None = 0,
) -> ad.AnnData:
    """Simulate single cells with known perturbation effects on their distribution.

    Control cells are standard normal in ``n_features`` dimensions. Each perturbation
    has one effect type, applied to the first ``n_affected`` features:

    - ``"none"``: same distribution as controls (for calibration);
    - ``"mean"``: every cell shifted by ``effect_size``;
    - ``"variance"``: every cell's deviation scaled by ``1 + effect_size`` (same mean and median);
    - ``"subpopulation"``: a ``subpopulation_fraction`` of cells moved to ``±(2 + 2 * effect_size)``,
      half up and half down, the rest unchanged, so mean and median stay at 0 (by symmetry)
      while a new cell state appears.

    Cells are spread evenly over ``wells_per_group`` wells per plate; each plate adds
    ``plate_effect`` times a random (seeded) offset to all its cells.

    Parameters
    ----------
    n_perturbations
        Perturbations (``P00``, ``P01``...), besides the ``"control"`` group.
    n_cells
        Cells per perturbation (over all plates).
    n_controls
        Control cells (default ``4 * n_cells``).
    n_features
        Dimensions.
    effects
        One effect type for all perturbations, or one per perturbation (see :data:`EFFECTS`).
    effect_size
        Strength of the effect (see above).
    n_affected
        Features the effect touches (default: all).
    subpopulation_fraction
        Share of cells in the shifted state (``"subpopulation"``).
    n_plates, wells_per_group, plate_effect
        Layout and plate-to-plate offsets.
    seed
        Random seed; the same seed gives the same cells.

    Returns
    -------
    AnnData (cells × ``Feature_00``...) with ``.obs`` columns ``Metadata_perturbation``
    (``"control"`` or ``P..``), ``Metadata_effect`` (truth), ``Metadata_Plate``, ``Metadata_Well``
    and ``Metadata_pert_type`` (``control``/``trt``).

    Examples
    --------
    >>> import imgprof as ip
    >>> adata = ip.datasets.simulate_cells(n_perturbations=2, n_cells=50, effects=["variance", "none"])
    >>> adata.obs.groupby("Metadata_perturbation", observed=True)["Metadata_effect"].first().to_dict()
    {'P00': 'variance', 'P01': 'none', 'control': 'none'}
    """
    eff = [effects] * n_perturbations if isinstance(effects, str) else list(effects)
    if len(eff) != n_perturbations:
        raise ValueError(f"effects has {len(eff)} entries, expected one per perturbation ({n_perturbations}).")
    bad = sorted({e for e in eff if e not in EFFECTS})
    if bad:
        raise ValueError(f"effects: unknown effect type(s) {bad}; choose from {EFFECTS}.")
    if n_cells < 2 or n_features < 1 or n_plates < 1 or wells_per_group < 1:
        raise ValueError("simulate_cells: n_cells >= 2, n_features, n_plates and wells_per_group >= 1 are required.")
    if not 0 < subpopulation_fraction < 1:
        raise ValueError(f"subpopulation_fraction must lie in (0, 1), got {subpopulation_fraction}.")
    k = n_features if n_affected is None else int(n_affected)
    if not 1 <= k <= n_features:
        raise ValueError(f"n_affected must lie in [1, n_features={n_features}], got {n_affected}.")
    rng = np.random.default_rng(seed)
    n_ctrl = 4 * n_cells if n_controls is None else int(n_controls)
    plate_offsets = rng.normal(size=(n_plates, n_features)) * plate_effect
    blocks, obs = [], []
    groups = [("control", "none", n_ctrl, 4 * wells_per_group)] + [
        (f"P{i:02d}", e, n_cells, wells_per_group) for i, e in enumerate(eff)
    ]
    well_counter = 0
    for name, e, n, n_wells in groups:
        X = rng.normal(size=(n, n_features))
        if e == "mean":
            X[:, :k] += effect_size
        elif e == "variance":
            X[:, :k] *= 1.0 + effect_size
        elif e == "subpopulation":
            m = round(subpopulation_fraction * n / 2)
            idx = rng.choice(n, 2 * m, replace=False)
            X[idx[:m], :k] += 2.0 + 2.0 * effect_size
            X[idx[m:], :k] -= 2.0 + 2.0 * effect_size
        plate = np.arange(n) % n_plates
        well = (np.arange(n) // n_plates) % n_wells
        X += plate_offsets[plate]
        blocks.append(X)
        obs.append(pd.DataFrame({
            "Metadata_perturbation": name,
            "Metadata_effect": e,
            "Metadata_Plate": [f"plate{p}" for p in plate],
            "Metadata_Well": [f"W{well_counter + w:03d}" for w in well],
            "Metadata_pert_type": "control" if name == "control" else "trt",
        }))
        well_counter += n_wells
    obs_df = pd.concat(obs, ignore_index=True)
    obs_df.index = obs_df.index.astype(str)
    for c in ("Metadata_perturbation", "Metadata_effect", "Metadata_Plate", "Metadata_pert_type"):
        obs_df[c] = obs_df[c].astype("category")
    adata = ad.AnnData(np.vstack(blocks), obs=obs_df, var=pd.DataFrame(index=[f"Feature_{j:02d}" for j in range(n_features)]))
    set_level(adata, "single_cell")
    log_step(adata, "datasets.simulate_cells", {"n_perturbations": n_perturbations, "n_cells": n_cells, "n_controls": n_ctrl,
                                                    "n_features": n_features, "effects": eff, "effect_size": effect_size,
                                                    "n_affected": k, "subpopulation_fraction": subpopulation_fraction,
                                                    "n_plates": n_plates, "wells_per_group": wells_per_group,
                                                    "plate_effect": plate_effect, "seed": seed})
    return adata
