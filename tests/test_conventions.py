"""The package's conventions, checked over everything that is public or registered (issue #15).

* every public function is typed (parameters and return);
* every registered entry (normalizers, feature-selection operations, Benchmarker metrics,
  integration methods, distances, readers) is reachable, documented with an Examples section
  and typed;
* every public step driven by a registry honours ``copy`` (the input is untouched with
  ``copy=True``; ``None`` comes back and the input changes without it) and logs one
  provenance step;
* the code shape: functions (code lines, docstring excluded) and modules stay within the limits.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from imgprof._core.registry import load_all

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("io", "im", "pp", "tl", "pl", "metrics", "bench", "mm", "datasets")


def _public_functions():
    for sub in SUBPACKAGES:
        mod = importlib.import_module(f"imgprof.{sub}")
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isfunction(obj):
                yield f"ip.{sub}.{name}", obj


def _untyped(fn) -> list[str]:
    sig = inspect.signature(fn)
    missing = [p for p, v in sig.parameters.items()
               if v.annotation is inspect.Parameter.empty and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
    if sig.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def test_every_public_function_is_typed():
    bad = {name: miss for name, fn in _public_functions() if (miss := _untyped(fn))}
    assert not bad, f"untyped public functions (parameter names / 'return'): {bad}"


REGISTRIES = load_all()
ENTRIES = [(kind, entry.name) for kind, reg in sorted(REGISTRIES.items()) for entry in reg.entries()
           if not kind.startswith("example")]


def test_registries_exist():
    kinds = set(REGISTRIES)
    for kind in ("normalizer", "reader", "distance", "integration_method"):
        assert kind in kinds, f"no registry of kind {kind!r}; registries: {sorted(kinds)}"
    assert len(ENTRIES) >= 20


@pytest.mark.parametrize(("kind", "name"), ENTRIES, ids=[f"{k}:{n}" for k, n in ENTRIES])
def test_registered_entry_conventions(kind, name):
    entry = REGISTRIES[kind].get(name)
    obj = entry.obj
    assert obj is not None
    doc = (inspect.getdoc(obj) or "") if (inspect.isfunction(obj) or inspect.isclass(obj)) else ""
    described = doc.strip() or str(entry.meta.get("description", "")).strip()
    assert described, f"{kind} {name!r}: neither a docstring nor a description"
    target = obj.__call__ if (not inspect.isfunction(obj) and not inspect.isclass(obj) and callable(obj)) else obj
    if inspect.isfunction(target):
        assert not _untyped(target), f"{kind} {name!r}: untyped {_untyped(target)}"


def test_code_shape_limits():
    """No function over 80 code lines outside numerical kernels, no module over 600 lines."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "code_shape.py"), str(ROOT / "imgprof"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def _private_imports() -> list[str]:
    """``from .module import _name`` across modules: a private helper used outside its module."""
    import ast

    found = []
    for path in sorted((ROOT / "imgprof").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                base = base.joinpath(*(node.module or "").split(".")) if node.module else base
                for alias in node.names:
                    is_module = (base / f"{alias.name}.py").exists() or (base / alias.name).is_dir()
                    if alias.name.startswith("_") and not alias.name.startswith("__") and not is_module:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module or '.'}.{alias.name}")
    return found


def test_no_private_helper_imported_across_modules():
    found = _private_imports()
    assert not found, "private helpers imported from another module (make them public in a private module):\n" + "\n".join(found)


def test_no_unfilled_docstring_placeholder():
    """Every ``{name}`` line of a doc_params docstring was filled (a typo would leave it on the docs site)."""
    import re

    pattern = re.compile(r"^\s*\{[A-Za-z_]\w*\}\s*$", re.MULTILINE)
    bad = [name for name, fn in _public_functions() if pattern.search(fn.__doc__ or "")]
    assert not bad, f"unfilled docstring placeholders in {bad}"
