"""Every public callable documents Parameters, Returns and an Example (numpydoc).

The walk is general: every name in ``__all__`` of ``imgprof`` and of each public
namespace listed there (``ip.io``, ``ip.pp``, ``ip.tl``, ``ip.metrics``, ``ip.bench``,
``ip.mm``, ``ip.pl``, ``ip.im``, ``ip.datasets``, and any namespace added later), so
new public functions are held to the same rule.

Rules:
* functions: a ``Parameters`` section naming every parameter (when there are any),
  a ``Returns`` (or ``Yields``) section, an ``Examples`` section with a ``>>>`` line;
* classes: ``Parameters`` or ``Attributes`` naming every constructor argument, and
  ``Examples``;
* exception and warning classes: a docstring saying when they are raised (they are
  raised, not called).
"""

from __future__ import annotations

import inspect
import re
import types

import pytest

import imgprof as ip

SECTION = re.compile(r"^([A-Z][A-Za-z ]+)\n-{3,}\s*$", re.MULTILINE)


def _namespaces():
    yield "ip", ip
    for name in ip.__all__:
        obj = getattr(ip, name)
        if isinstance(obj, types.ModuleType):
            yield f"ip.{name}", obj


def _collect():
    out = {}
    for qual_ns, mod in _namespaces():
        for name in mod.__all__:
            obj = getattr(mod, name)
            if isinstance(obj, types.ModuleType) or not callable(obj):
                continue
            out.setdefault(id(obj), (f"{qual_ns}.{name}", obj))
    return sorted(out.values(), key=lambda t: t[0])


CALLABLES = _collect()


def _sections(doc: str) -> dict[str, str]:
    """Section title -> body text."""
    marks = list(SECTION.finditer(doc))
    return {m.group(1).strip(): doc[m.end(): marks[i + 1].start() if i + 1 < len(marks) else len(doc)]
            for i, m in enumerate(marks)}


def _documented_names(body: str) -> set[str]:
    names: set[str] = set()
    for line in body.splitlines():
        if line and not line[0].isspace():
            for tok in line.split(":")[0].split(","):
                names.add(tok.strip().lstrip("*"))
    return names


def _params(obj) -> list[str]:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values() if p.name not in ("self", "cls")]


def test_walk_finds_every_namespace():
    names = {q for q, _ in CALLABLES}
    for ns in ("io", "pp", "tl", "metrics", "bench", "mm", "pl", "im", "datasets"):
        assert any(n.startswith(f"ip.{ns}.") for n in names), ns
    assert "ip.provenance" in names
    assert len(CALLABLES) > 100


@pytest.mark.parametrize("qual,obj", CALLABLES, ids=[q for q, _ in CALLABLES])
def test_public_callable_is_documented(qual, obj):
    doc = inspect.getdoc(obj)
    assert doc and len(doc.split()) >= 5, f"{qual}: no docstring"
    if inspect.isclass(obj) and issubclass(obj, (BaseException, Warning)):
        return
    secs = _sections(doc)
    params = _params(obj)
    problems = []
    if params:
        body = secs.get("Parameters", "") + (secs.get("Attributes", "") if inspect.isclass(obj) else "")
        if not body.strip():
            problems.append("no Parameters section")
        else:
            missing = [p for p in params if p not in _documented_names(body)]
            if missing:
                problems.append(f"Parameters does not name {missing}")
    if not inspect.isclass(obj):
        if not (secs.get("Returns", "").strip() or secs.get("Yields", "").strip()):
            problems.append("no Returns section")
    if ">>>" not in secs.get("Examples", secs.get("Example", "")):
        problems.append("no Examples section with a >>> line")
    assert not problems, f"{qual}: " + "; ".join(problems)
