"""imgprof: image-based (Cell Painting) profiling on AnnData.

>>> import imgprof as ip
>>> adata = ip.datasets.lincs_plate()          # doctest: +SKIP
>>> ip.pp.normalize(adata, method="mad_robustize", controls="Metadata_pert_type == 'control'")  # doctest: +SKIP

Submodules are loaded on first attribute access so that ``import imgprof`` stays
light (no torch, scvi, matplotlib or scikit-image at import time).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# scanpy 1.11 + scipy >= 1.15: make ``sc.pp.neighbors`` work on >= 4,096 cells (see _core/compat.py).
from ._core.compat import install_import_hook as _install_import_hook
from ._core.namespace import public_dir as _public_dir

__version__ = "0.1.0"

_SUBMODULES = ("io", "im", "pp", "tl", "pl", "metrics", "bench", "mm", "datasets")

__all__ = [*_SUBMODULES, "provenance", "concat", "show_progress", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from . import bench, datasets, im, io, metrics, mm, pl, pp, tl  # noqa: F401
    from ._core.provenance import provenance


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    if name == "provenance":
        from ._core.provenance import provenance

        return provenance
    if name == "concat":
        from ._core.concat import concat

        return concat
    if name == "show_progress":  # progress bars inside long steps (off by default; the CLI turns them on)
        from ._core.progress import show_progress

        return show_progress
    raise AttributeError(f"module 'imgprof' has no attribute {name!r}")


__dir__ = _public_dir(__all__)  # tab completion shows the public API only (no importlib/TYPE_CHECKING leftovers)


_install_import_hook()
