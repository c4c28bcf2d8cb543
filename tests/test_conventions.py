"""The package's conventions, checked over everything that is public or registered (issue #15).

* every public function is typed (parameters and return);
* every registered entry (normalizers, feature-selection operations, Benchmarker metrics,
  integration methods, distances, map nulls, retrieval similarities, readers) is reachable,
  typed and documented with an Examples section of its own (its docstring), whose examples run;
* every public step driven by a registry honours ``copy`` (the input is untouched with
  ``copy=True``; ``None`` comes back and the input changes without it) and logs one
  provenance step;
* the code shape: functions (code lines, docstring excluded) and modules stay within the limits.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import imgprof as ip
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


ENTRY_IDS = [f"{k}:{n}" for k, n in ENTRIES]
EXAMPLES = re.compile(r"^Examples\n-{3,}\n", re.MULTILINE)


def _examples(doc: str) -> str:
    """The text after a numpydoc ``Examples`` heading ('' when there is none)."""
    head = EXAMPLES.search(doc)
    return doc[head.end():] if head else ""


@pytest.mark.parametrize(("kind", "name"), ENTRIES, ids=ENTRY_IDS)
def test_registered_entry_conventions(kind, name):
    entry = REGISTRIES[kind].get(name)
    obj = entry.obj
    assert obj is not None
    doc = inspect.getdoc(obj) or ""  # a function's or class's own; a callable object's, else its class's
    described = doc.strip() or str(entry.meta.get("description", "")).strip()
    assert described, f"{kind} {name!r}: neither a docstring nor a description"
    assert ">>>" in _examples(doc), f"{kind} {name!r}: {obj!r} has no Examples section with a >>> line"
    target = obj.__call__ if (not inspect.isfunction(obj) and not inspect.isclass(obj) and callable(obj)) else obj
    if inspect.isfunction(target):
        assert not _untyped(target), f"{kind} {name!r}: untyped {_untyped(target)}"


@pytest.mark.parametrize(("kind", "name"), [pytest.param(k, n, marks=pytest.mark.slow) if k == "integration_method"
                                            else (k, n) for k, n in ENTRIES], ids=ENTRY_IDS)
def test_registered_entry_examples_run(kind, name):
    """The entry's Examples run as doctests, in its module's namespace (as ``pytest --doctest-modules``)."""
    import matplotlib

    matplotlib.use("Agg")
    obj = REGISTRIES[kind].get(name).obj
    module = inspect.getmodule(obj) or inspect.getmodule(type(obj))
    tests = doctest.DocTestFinder(recurse=False).find(obj, f"{kind}:{name}", module=module, globs=dict(vars(module)))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0 and runner.tries > 0, "".join(report)


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


# ----------------------------------------------------------------------------------------------
# every registered method, run through its public coordinator: copy honoured, one provenance step
# ----------------------------------------------------------------------------------------------


def _run_both_ways(adata, call, function: str):
    """``call(a, copy)`` with copy=True (input untouched, one new step on the copy) and copy=False (in place)."""
    before_X = np.array(adata.X, copy=True)
    n_steps = len(ip.provenance(adata))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = call(adata, True)
    assert out is not None, f"{function}: copy=True returned None"
    assert np.array_equal(np.asarray(adata.X), before_X, equal_nan=True), f"{function}: copy=True changed the input"
    assert len(ip.provenance(adata)) == n_steps, f"{function}: copy=True logged on the input"
    steps = ip.provenance(out)
    assert len(steps) == n_steps + 1 and steps["function"].iloc[-1] == function, steps["function"].tolist()[-3:]
    work = adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert call(work, False) is None, f"{function}: copy=False returned something"
    assert len(ip.provenance(work)) == n_steps + 1
    return out, steps["params"].iloc[-1]


@pytest.fixture(scope="module")
def wells():
    return ip.datasets.simulate(n_plates=2, n_features=40, seed=0)


@pytest.mark.parametrize("name", REGISTRIES["normalizer"].names())
def test_every_normalizer_through_normalize(wells, name):
    _, params = _run_both_ways(
        wells, lambda a, copy: ip.pp.normalize(a, method=name, samples="Metadata_pert_type == 'control'", copy=copy),
        "pp.normalize")
    assert params["method"] == name


@pytest.mark.parametrize("name", REGISTRIES["feature_select_operation"].names())
def test_every_feature_selection_operation_through_feature_select(wells, name):
    extra = ({"noise_removal_perturb_groups": "Metadata_Perturbation", "noise_removal_stdev_cutoff": 2.5}
             if name == "noise_removal" else {})
    _, params = _run_both_ways(
        wells, lambda a, copy: ip.pp.feature_select(a, operation=[name], copy=copy, **extra), "pp.feature_select")
    assert name in params["operation"]


@pytest.fixture(scope="module")
def batches():
    a = ip.datasets.cmqtl_crispri()
    a = a[:, :60].copy()
    ip.tl.pca(a, n_comps=10)
    return a


@pytest.mark.parametrize("name", REGISTRIES["integration_method"].names())
def test_every_integration_method_through_integrate(batches, name):
    if name == "scvi":
        pytest.importorskip("scvi")
    kw = {"max_epochs": 1, "accelerator": "cpu"} if name == "scvi" else {}
    if name == "sphering":
        kw["controls"] = None
    out, _ = _run_both_ways(batches, lambda a, copy: ip.tl.integrate(a, name, "Metadata_Batch", copy=copy, **kw),
                            "tl." + ("no_correction" if name == "none" else name))
    assert f"X_{name}" in out.obsm


@pytest.fixture(scope="module")
def cells():
    return ip.datasets.simulate_cells(seed=0)


@pytest.mark.parametrize("name", REGISTRIES["distance"].names())
def test_every_distance_through_distance(cells, name):
    out, params = _run_both_ways(
        cells, lambda a, copy: ip.tl.distance(a, "Metadata_perturbation", metric=name, reference="control",
                                              max_cells=60, copy=copy), "tl.distance")
    assert params["metric"] == name


@pytest.mark.parametrize("name", REGISTRIES["retrieval_similarity"].names())
def test_every_similarity_through_average_precision(wells, name):
    a = wells.copy()
    n_steps = len(ip.provenance(a))
    ap = ip.metrics.average_precision(a, "Metadata_Perturbation", neg_diffby="Metadata_Perturbation", metric=name,
                                      key_added="ap")
    assert len(ap) == a.n_obs and "ap" in a.obs
    assert len(ip.provenance(a)) == n_steps + 1


WRITABLE = {"csv": "p.csv", "tsv": "p.tsv", "parquet": "p.parquet", "h5ad": "p.h5ad", "zarr": "p.zarr",
            "gct": "p.gct", "gctx": "p.gctx"}


@pytest.mark.parametrize("name", REGISTRIES["reader"].names())
def test_every_reader_is_reachable(name, tmp_path, wells):
    entry = REGISTRIES["reader"].get(name)
    assert callable(entry.obj) and entry.obj is getattr(ip.io, entry["reader"])
    for suffix in entry["suffixes"]:
        assert ip.io.reader_for(f"x{suffix}") == entry["reader"]
    if name in WRITABLE:
        path = tmp_path / WRITABLE[name]
        a = wells[:, :5].copy()
        (ip.io.write_gct if name == "gct" else ip.io.write_gctx if name == "gctx" else ip.io.write_profiles)(a, path)
        back = ip.io.read(path)
        assert back.shape == a.shape and len(ip.provenance(back)) >= 1
