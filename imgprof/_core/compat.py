"""Compatibility shims for third-party libraries (kept minimal and documented).

scanpy 1.11 / scipy >= 1.15: ``sc.pp.neighbors``
-------------------------------------------------
From 4,096 observations (8,192 with the euclidean metric) :func:`scanpy.pp.neighbors`
uses pynndescent, which returns a ``scipy.sparse.csr_array``. scanpy 1.11 then calls
``getnnz`` (``scanpy.neighbors._common._ind_dist_shortcut``) and ``.A1``
(``_ind_dist_slow``), which scipy's sparse *arrays* do not have, so the call fails
with ``AttributeError: 'csr_array' object has no attribute 'getnnz'``.

:func:`patch_scanpy_neighbors` wraps those two private helpers so that a
``csr_array`` is converted to the equivalent ``csr_matrix`` first (same data, same
indices: the graph scanpy builds is unchanged). It is applied

* when :mod:`imgprof.tl` is imported, and
* when ``scanpy.neighbors`` is imported after ``import imgprof`` (a one-module import
  hook installed by ``import imgprof``; it never imports scanpy itself, so
  ``import imgprof`` stays light).

It does nothing when scanpy already handles sparse arrays (helpers without the bug)
and is idempotent. Remove it once scanpy >= 1.12 (which fixes this upstream) is the
minimum supported version.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any

_TARGET = "scanpy.neighbors._common"
_PATCHED_ATTR = "_imgprof_csr_array_shim"


def _needs_patch() -> bool:
    import scipy.sparse as sp

    return not hasattr(sp.csr_array, "getnnz") or not hasattr(sp.csr_array, "A1")


def _as_matrix(d: Any) -> Any:
    import scipy.sparse as sp

    if isinstance(d, sp.sparray) and d.format == "csr":
        return sp.csr_matrix(d)
    return d


def _patch_module(mod: Any) -> bool:
    """Wrap ``_ind_dist_shortcut``/``_ind_dist_slow`` in ``scanpy.neighbors._common``."""
    if getattr(mod, _PATCHED_ATTR, False) or not _needs_patch():
        return False
    for name in ("_ind_dist_shortcut", "_ind_dist_slow"):
        original = getattr(mod, name, None)
        if original is None:  # scanpy changed its internals: nothing to patch
            continue

        def wrapper(d, *args, __original=original, **kwargs):
            return __original(_as_matrix(d), *args, **kwargs)

        wrapper.__name__ = name
        wrapper.__doc__ = original.__doc__
        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(mod, name, wrapper)
    setattr(mod, _PATCHED_ATTR, True)
    return True


def patch_scanpy_neighbors() -> bool:
    """Apply the ``csr_array`` shim to scanpy's neighbour helpers (imports scanpy).

    Returns
    -------
    bool
        ``True`` when the helpers were patched by this call, ``False`` when they were
        already patched or need no patch.
    """
    mod = importlib.import_module(_TARGET)
    return _patch_module(mod)


class _PatchOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Meta-path finder that patches ``scanpy.neighbors._common`` right after it loads."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            _patch_module(module)
        except (AttributeError, ImportError, TypeError) as e:  # pragma: no cover - never break scanpy's import
            import warnings

            warnings.warn(f"imgprof: scanpy neighbours shim not applied ({e!r}).", RuntimeWarning, stacklevel=2)


def install_import_hook() -> None:
    """Patch scanpy now if its neighbour helpers are loaded, else when they are imported."""
    mod = sys.modules.get(_TARGET)
    if mod is not None:
        _patch_module(mod)
        return
    if not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
