"""`import imgprof` must stay light: heavy libraries load only when used."""

import json
import subprocess
import sys

HEAVY = ["torch", "scvi", "jax", "matplotlib", "skimage", "cp_measure", "harmonypy", "scanorama", "pycytominer", "copairs", "scib_metrics"]


def _loaded_after(code: str) -> dict:
    prog = f"import sys, json\n{code}\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_imgprof_loads_no_heavy_library():
    loaded = _loaded_after("import imgprof")
    assert not any(loaded.values()), {k: v for k, v in loaded.items() if v}


def test_namespaces_load_without_torch_or_plotting():
    loaded = _loaded_after(
        "import imgprof as ip\n"
        "for ns in ['io', 'pp', 'tl', 'metrics', 'bench', 'mm', 'datasets', 'im']: getattr(ip, ns)"
    )
    for mod in ("torch", "scvi", "jax", "cp_measure", "pycytominer", "copairs", "scib_metrics"):
        assert not loaded[mod], f"{mod} imported by a namespace at import time"


def test_version_and_namespaces():
    import imgprof as ip

    assert ip.__version__
    for ns in ("io", "im", "pp", "tl", "pl", "metrics", "bench", "mm", "datasets"):
        assert getattr(ip, ns).__name__ == f"imgprof.{ns}"
    try:
        ip.not_a_namespace  # noqa: B018
    except AttributeError as e:
        assert "not_a_namespace" in str(e)
    else:  # pragma: no cover
        raise AssertionError("unknown attribute did not raise")
