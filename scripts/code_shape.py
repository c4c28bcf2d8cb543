"""Measure the code shape #15 asks for: function and module lengths.

A function's length is its code lines, docstring excluded (numba/numerical
kernels, in files named ``_*kernels.py``, are exempt); a module's length is all
of its lines. Usage::

    python scripts/code_shape.py [paths...]      # default: imgprof/
    python scripts/code_shape.py --max-function 80 --max-module 600 --check
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def _docstring_lines(node: ast.AST) -> int:
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0].end_lineno - body[0].lineno + 1
    return 0


def measure(paths: list[Path]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Return (functions, modules) as (length, label) pairs."""
    funcs, mods = [], []
    files = [f for p in paths for f in (sorted(p.rglob("*.py")) if p.is_dir() else [p])]
    for f in files:
        src = f.read_text()
        mods.append((len(src.splitlines()), str(f)))
        if f.name.startswith("_") and f.name.endswith("kernels.py"):
            continue
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1 - _docstring_lines(node)
                funcs.append((n, f"{f}:{node.lineno} {node.name}"))
    return sorted(funcs, reverse=True), sorted(mods, reverse=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", default=["imgprof"])
    p.add_argument("--max-function", type=int, default=80)
    p.add_argument("--max-module", type=int, default=600)
    p.add_argument("--check", action="store_true", help="exit 1 when a limit is passed")
    a = p.parse_args(argv)
    funcs, mods = measure([Path(x) for x in a.paths])
    long_f = [r for r in funcs if r[0] > a.max_function]
    long_m = [r for r in mods if r[0] > a.max_module]
    print(f"{len(long_f)} functions over {a.max_function} code lines")
    for n, label in long_f:
        print(f"  {n:4d}  {label}")
    print(f"{len(long_m)} modules over {a.max_module} lines")
    for n, label in long_m:
        print(f"  {n:4d}  {label}")
    return 1 if a.check and (long_f or long_m) else 0


if __name__ == "__main__":
    sys.exit(main())
