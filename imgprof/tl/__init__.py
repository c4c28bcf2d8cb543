"""imgprof.tl: batch correction behind one interface, and scanpy-style embedding and clustering.

``ip.tl.integrate(adata, method, batch_key)`` runs any of :data:`METHODS` (the
names in the :data:`INTEGRATIONS` registry: ``none``, ``harmony``, ``scvi``, ``combat``, ``sphering``, ``mnn``,
``scanorama``, ``rpca``); each method is also a function of its own. The
heavy dependencies (torch, scvi-tools, harmonypy, scanorama) are imported
only when the method runs.
"""

from .._core.compat import patch_scanpy_neighbors as _patch_scanpy_neighbors
from .._core.namespace import public_dir
from ._distance import (
    DISTANCES,
    TESTABLE,
    cluster_composition,
    distance,
    distance_test,
    group_distances,
    median_heuristic_gamma,
)
from .combat import combat
from .embedding import leiden, neighbors, pca, umap
from .harmony import harmony
from .integrate import INTEGRATIONS, METHODS, get_method, integrate, no_correction
from .mnn import mnn
from .rpca import rpca
from .scanorama import scanorama
from .scvi import scvi
from .sphering import sphering

__all__: list[str] = [
    "INTEGRATIONS",
    "METHODS",
    "combat",
    "get_method",
    "harmony",
    "integrate",
    "leiden",
    "mnn",
    "neighbors",
    "no_correction",
    "pca",
    "rpca",
    "scanorama",
    "scvi",
    "sphering",
    "umap",
]
__all__ += [
    "DISTANCES", "TESTABLE", "cluster_composition", "distance", "distance_test", "group_distances", "median_heuristic_gamma",
]

# scanpy 1.11 + scipy >= 1.15: ``sc.pp.neighbors`` on >= 4,096 cells (see imgprof/_core/compat.py).
_patch_scanpy_neighbors()


__dir__ = public_dir(__all__)  # tab completion shows the public API only
