"""Optional dependencies: one helper that fails fast, before any work, with the pip command.

Extras (``pyproject.toml``):

=================  ==========================================  =====================================
extra              installs                                    needed by
=================  ==========================================  =====================================
``integration``    scanorama                                   ``ip.tl.scanorama`` / ``integrate("scanorama")``
``scvi``           torch, scvi-tools                           ``ip.tl.scvi`` / ``integrate("scvi")``
``im``             cp-measure                                  ``ip.im`` measurements
``tutorials``      jupyter, nbformat, nbclient, ipykernel      opening and running ``tutorials/*.ipynb``
``all``            every extra above
=================  ==========================================  =====================================

:func:`require` checks that a module can be imported *without importing it*
(``importlib.util.find_spec``), so a pipeline can check every method it will
run before the first one starts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

#: Integration methods whose packages are optional: method → ((module, pip name), ...), extra.
METHOD_REQUIREMENTS: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {
    "scanorama": ((("scanorama", "scanorama"),), "integration"),
    "scvi": ((("torch", "torch"), ("scvi", "scvi-tools")), "scvi"),
}


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message gives the ``pip install`` command."""


def is_available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it).

    Parameters
    ----------
    module
        Top-level module name, e.g. ``"scanorama"``.

    Returns
    -------
    bool
        ``True`` when an import would find the module.

    Examples
    --------
    >>> from imgprof._core.optional import is_available
    >>> is_available("numpy"), is_available("no_such_module_xyz")
    (True, False)
    """
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken parent package or a module with __spec__ None
        return False


def require(module: str, *, extra: str, pip_name: str | None = None, purpose: str | None = None) -> None:
    """Raise :class:`MissingDependencyError` with the pip command when ``module`` is missing.

    Parameters
    ----------
    module
        Module to import (``"scanorama"``).
    extra
        imgprof extra that installs it (``"integration"``).
    pip_name
        Distribution name when it differs from the module (``"scvi-tools"``).
    purpose
        What needs it, for the message (``"ip.tl.scanorama"``).

    Returns
    -------
    None
        Returns silently when the module is available.

    Examples
    --------
    >>> from imgprof._core.optional import require
    >>> require("numpy", extra="core")
    >>> require("no_such_module_xyz", extra="integration")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    imgprof._core.optional.MissingDependencyError: ... pip install "imgprof[integration]" ...
    """
    if is_available(module):
        return
    who = f"{purpose} needs" if purpose else "This needs"
    raise MissingDependencyError(
        f"{who} the optional package {pip_name or module!r}, which is not installed. "
        f'Install it with: pip install "imgprof[{extra}]"  (or: pip install {pip_name or module}; '
        f'everything optional: pip install "imgprof[all]").'
    )


def require_methods(methods: Iterable[str], *, purpose: str = "ip.tl.integrate") -> None:
    """Check the optional packages of every integration method before any of them runs.

    Parameters
    ----------
    methods
        Method names of :func:`imgprof.tl.integrate` (case-insensitive; unknown names are
        left to the caller's own check).
    purpose
        What runs them, for the message.

    Returns
    -------
    None
        Returns silently when every method can run; otherwise raises
        :class:`MissingDependencyError` naming all missing packages and the extras.

    Examples
    --------
    >>> from imgprof._core.optional import require_methods
    >>> require_methods(["none", "harmony", "combat"])
    """
    missing: list[str] = []
    extras: list[str] = []
    for m in methods:
        spec = METHOD_REQUIREMENTS.get(str(m).lower())
        if spec is None:
            continue
        modules, extra = spec
        lack = [pip for mod, pip in modules if not is_available(mod)]
        if lack:
            missing.append(f"{m!r} needs {', '.join(lack)}")
            if extra not in extras:
                extras.append(extra)
    if missing:
        wanted = ",".join(extras)
        raise MissingDependencyError(
            f"{purpose}: {'; '.join(missing)} (not installed). Nothing was run. "
            f'Install with: pip install "imgprof[{wanted}]"  (everything optional: pip install "imgprof[all]"), '
            "or leave those methods out."
        )
