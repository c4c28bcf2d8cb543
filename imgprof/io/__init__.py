"""Readers and writers: profile tables, CellProfiler outputs, CytoTable, DeepProfiler, GCT, images."""

from .profiles import from_pandas, read_profiles, to_pandas, write_profiles

__all__ = ["from_pandas", "read_profiles", "to_pandas", "write_profiles"]

from .gct import read_gct, write_gct  # noqa: E402

__all__ += ["read_gct", "write_gct"]
