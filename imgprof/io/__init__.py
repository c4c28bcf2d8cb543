"""Readers and writers: profile tables, CellProfiler outputs, CytoTable, DeepProfiler, GCT, images."""

from .._core.namespace import public_dir
from .profiles import READERS, check_writable, from_pandas, read, read_profiles, reader_for, to_pandas, write_profiles

__all__ = ["from_pandas", "read_profiles", "to_pandas", "write_profiles", "read", "reader_for", "READERS", "check_writable"]

from .gct import read_gct, read_gctx, write_gct, write_gctx

__all__ += ["read_gct", "read_gctx", "write_gct", "write_gctx"]

from .cellprofiler import read_cellprofiler  # noqa: E402
from .cytotable import read_cytotable  # noqa: E402
from .deepprofiler import read_deepprofiler, read_embeddings  # noqa: E402

__all__ += ["read_cellprofiler", "read_cytotable", "read_deepprofiler", "read_embeddings"]

from ..im.read import read_images  # noqa: E402  (light: tifffile/imageio load on first read)

__all__ += ["read_images"]

from ._text import ReadError  # noqa: E402

__all__ += ["ReadError"]

from ._lazy import read_zarr_lazy  # noqa: E402

__all__ += ["read_zarr_lazy"]

__dir__ = public_dir(__all__)  # tab completion shows the public API only
