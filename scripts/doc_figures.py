"""Draw the figures shown in the docs' guides (docs/figures/*.png) from bundled real data.

Run: python scripts/doc_figures.py   (about a minute; the PNGs are committed).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import imgprof as ip

OUT = Path(__file__).resolve().parents[1] / "docs" / "figures"


def save(fig, name: str) -> None:
    fig.savefig(OUT / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print("wrote", OUT / name)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    wells = ip.datasets.cmqtl_crispri()
    # pp: plate layout of cells per well (first batch)
    save(ip.pl.plate_layout(wells, "Metadata_Count_Cells", plate_key="Metadata_Batch", show=False,
                            return_fig=True), "plate_layout_cmqtl.png")
    # tl: UMAP before and after harmony, coloured by batch
    ip.pp.feature_select(wells, operation="drop_outliers")
    ip.tl.pca(wells, n_comps=30)
    ip.tl.integrate(wells, "harmony", batch_key="Metadata_Batch")
    wells.obs["batch"] = wells.obs["Metadata_Batch"].astype(str).str.slice(0, 10).astype("category")  # the run date
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, rep, title, loc in zip(axes, ["X_pca", "X_harmony"], ["PCA (uncorrected)", "Harmony"], ["none", "right margin"]):
        ip.tl.neighbors(wells, use_rep=rep, key_added=rep)
        ip.tl.umap(wells, neighbors_key=rep, key_added=f"{rep}_umap")
        ip.pl.embedding(wells, f"{rep}_umap", color="batch", ax=ax, show=False, title=title, legend_loc=loc)
    save(fig, "umap_batch_harmony.png")
    # metrics: mAP scatter on the LINCS plate
    lincs = ip.datasets.lincs_plate()
    act = ip.metrics.phenotypic_activity(lincs, "Metadata_broad_sample", controls="Metadata_pert_type == 'control'")
    save(ip.pl.map_scatter(act, show=False, return_fig=True), "map_scatter_lincs.png")
    # io: feature groups of the LINCS plate
    save(ip.pl.feature_groups(lincs, groupby="channel", show=False, return_fig=True), "feature_groups_lincs.png")


if __name__ == "__main__":
    main()
