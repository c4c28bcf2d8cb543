"""Bundled real data sets and a seeded simulator with known ground truth."""

from .._core.namespace import public_dir
from .real import (
    cmqtl_crispri,
    data_path,
    examplehuman_cells,
    examplehuman_images_path,
    l1000_plate,
    lincs_plate,
    nelisa,
    repurposing_hub,
    way2022_percent_replicating,
)
from .simulate import simulate
from .simulate_cells import simulate_cells

__all__ = [
    "cmqtl_crispri",
    "data_path",
    "examplehuman_cells",
    "examplehuman_images_path",
    "l1000_plate",
    "lincs_plate",
    "nelisa",
    "repurposing_hub",
    "simulate",
    "simulate_cells",
    "way2022_percent_replicating",
]


__dir__ = public_dir(__all__)  # tab completion shows the public API only
