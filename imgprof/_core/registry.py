"""One registry per kind of pluggable thing.

A :class:`Registry` maps a name to an implementation plus a little metadata.
Normalizers, feature-selection operations, Benchmarker metrics, integration
methods, distances and readers each have one; the public function of that kind
(``ip.pp.normalize``, ``ip.pp.feature_select``, ``ip.bench.Benchmarker``,
``ip.tl.integrate``, ``ip.tl.distance``, ``ip.io.read``) only looks the name up
and coordinates. Adding a method is one decorated function in one file::

    from imgprof.pp.normalize import NORMALIZERS

    @NORMALIZERS.register("my_method", fit="...")
    def my_method(...): ...

Entries may be *lazy* (``register_lazy(name, "module:attr")``): the module is
imported on first use, so optional dependencies (torch, scvi) never load at
``import imgprof``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["REGISTRIES", "Entry", "Registry", "load_all", "registry"]


@dataclass
class Entry:
    """One registered implementation.

    Parameters
    ----------
    name
        The name users pass (``method="mad_robustize"``).
    kind
        The registry's kind (``"normalizer"``...).
    target
        The object itself, or ``"package.module:attr"`` for a lazy entry.
    meta
        Free metadata the coordinating function reads (display name, inputs...).
    """

    name: str
    kind: str
    target: Any
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def obj(self) -> Any:
        """The implementation (imported on first access for a lazy entry)."""
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            self.target = getattr(importlib.import_module(module), attr)
        return self.target

    @property
    def loaded(self) -> bool:
        """Whether the implementation is imported already."""
        return not isinstance(self.target, str)

    def __getitem__(self, key: str) -> Any:
        return self.meta[key]


class Registry:
    """A name → implementation table for one kind of pluggable thing.

    Parameters
    ----------
    kind
        What is registered, in messages (``"normalizer"``, ``"reader"``...).
    param
        The public parameter that takes the name (``"method"``, ``"operation"``...).
    case_sensitive
        Whether names are matched exactly (default: case-insensitively).

    Examples
    --------
    >>> from imgprof._core.registry import Registry
    >>> SHOUT = Registry("shouter", param="how")
    >>> @SHOUT.register("upper", doc="all capitals")
    ... def upper(s):
    ...     return s.upper()
    >>> SHOUT.get("UPPER").obj("hi"), SHOUT.names()
    ('HI', ('upper',))
    """

    def __init__(self, kind: str, *, param: str = "method", case_sensitive: bool = False) -> None:
        self.kind = kind
        self.param = param
        self.case_sensitive = case_sensitive
        self._entries: dict[str, Entry] = {}
        REGISTRIES[kind] = self

    # -- registration --------------------------------------------------------------------------
    def _key(self, name: str) -> str:
        return name if self.case_sensitive else name.lower()

    def add(self, name: str, target: Any, **meta: Any) -> Entry:
        """Register ``target`` (an object, or ``"module:attr"``) under ``name``; return the entry."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} names must be non-empty strings, got {name!r}.")
        entry = Entry(name=name, kind=self.kind, target=target, meta=dict(meta))
        self._entries[self._key(name)] = entry
        return entry

    def register(self, name: str, **meta: Any) -> Callable[[Any], Any]:
        """Decorator: register the decorated object under ``name`` with ``meta``."""

        def deco(obj: Any) -> Any:
            self.add(name, obj, **meta)
            return obj

        return deco

    def register_lazy(self, name: str, target: str, **meta: Any) -> Entry:
        """Register ``"package.module:attr"``, imported when first used."""
        if ":" not in target:
            raise ValueError(f"lazy {self.kind} {name!r}: target must read 'package.module:attr', got {target!r}.")
        return self.add(name, target, **meta)

    def unregister(self, name: str) -> Entry:
        """Remove and return the entry under ``name`` (tests and plug-ins that replace a method)."""
        return self._entries.pop(self._key(self.get(name).name))

    # -- lookup --------------------------------------------------------------------------------
    def get(self, name: Any, *, param: str | None = None, where: str = "") -> Entry:
        """The entry for ``name``; a clear error naming the parameter and the choices otherwise."""
        param = param or self.param
        prefix = f"{where}: " if where else ""
        if not isinstance(name, str):
            raise TypeError(f"{prefix}{param} must be a string naming a {self.kind}; got {name!r}. "
                            f"Choose one of {list(self.names())}.")
        entry = self._entries.get(self._key(name))
        if entry is None:
            close = difflib.get_close_matches(self._key(name), list(self._entries), n=1)
            hint = f" Did you mean {self._entries[close[0]].name!r}?" if close else ""
            raise ValueError(f"{prefix}unknown {self.kind} {param}={name!r}; choose one of {list(self.names())}.{hint}")
        return entry

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(e.name for e in self._entries.values())

    def entries(self) -> list[Entry]:
        """Registered entries, in registration order."""
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


#: Every registry, by kind (the conventions test walks them all).
REGISTRIES: dict[str, Registry] = {}


def load_all() -> dict[str, Registry]:
    """Import every subpackage that registers entries; return :data:`REGISTRIES`.

    Returns
    -------
    dict
        Kind → registry, all entries registered.

    Examples
    --------
    >>> from imgprof._core.registry import load_all
    >>> isinstance(load_all(), dict)
    True
    """
    # ip.im loads its modules lazily: name the ones that register (thresholds, secondary methods, measurements)
    for mod in ("io", "pp", "tl", "metrics", "bench", "mm", "im._identify", "im._measurements"):
        importlib.import_module(f"imgprof.{mod}")
    return REGISTRIES


def registry(kind: str) -> Registry:
    """The registry of one kind (``"normalizer"``, ``"feature_select"``, ``"metric"``...).

    Parameters
    ----------
    kind
        A key of :data:`REGISTRIES`.

    Returns
    -------
    Registry
        The table of that kind.

    Examples
    --------
    >>> from imgprof._core.registry import Registry, registry
    >>> _ = Registry("example_kind")
    >>> registry("example_kind").kind
    'example_kind'
    """
    if kind not in REGISTRIES:
        raise KeyError(f"no registry of kind {kind!r}; known: {sorted(REGISTRIES)}.")
    return REGISTRIES[kind]
