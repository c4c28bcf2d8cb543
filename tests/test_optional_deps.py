"""Optional imports fail fast, before any work, with the pip command (simulated missing modules)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import tomllib

import imgprof as ip
from imgprof._core import optional

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def without(monkeypatch):
    """Make find_spec report the given modules as not installed."""

    def hide(*names):
        real = importlib.util.find_spec

        def fake(name, *a, **k):
            if name.split(".")[0] in names:
                return None
            return real(name, *a, **k)

        monkeypatch.setattr(optional.importlib.util, "find_spec", fake)

    return hide


def test_require_message_names_the_extra(without):
    without("scanorama")
    with pytest.raises(optional.MissingDependencyError, match=r'pip install "imgprof\[integration\]"') as e:
        optional.require("scanorama", extra="integration", purpose="ip.tl.scanorama")
    assert isinstance(e.value, ImportError) and "ip.tl.scanorama" in str(e.value)
    optional.require("numpy", extra="core")  # available: silent


def test_integrate_scanorama_fails_before_any_work(without, monkeypatch):
    without("scanorama")
    adata = ip.datasets.cmqtl_crispri()
    import importlib

    v = importlib.import_module("imgprof.tl.scanorama")  # the module (ip.tl.scanorama is the function): where it looks prepare up

    calls = []
    monkeypatch.setattr(v, "prepare", lambda *a, **k: calls.append(1))
    before = adata.copy()
    with pytest.raises(ImportError, match=r'imgprof\[integration\]'):
        ip.tl.integrate(adata, "scanorama", "Metadata_Batch")
    with pytest.raises(ImportError, match=r'imgprof\[integration\]'):
        ip.tl.scanorama(adata, "Metadata_Batch")
    assert not calls and set(adata.obsm) == set(before.obsm) and len(ip.provenance(adata)) == len(ip.provenance(before))


def test_run_methods_checks_every_method_first(without, monkeypatch):
    without("scanorama", "scvi")
    adata = ip.datasets.cmqtl_crispri()
    ran = []
    monkeypatch.setattr(ip.tl, "integrate", lambda *a, **k: ran.append(a[1]))
    with pytest.raises(ImportError) as e:
        ip.bench.run_methods(adata, ["none", "harmony", "scanorama", "scvi"], "Metadata_Batch", "Metadata_target_gene")
    msg = str(e.value)
    assert "'scanorama' needs scanorama" in msg and "'scvi' needs scvi-tools" in msg
    assert 'imgprof[integration,scvi]' in msg and "Nothing was run" in msg
    assert ran == [] and "X_pca" not in adata.obsm  # not even the PCA ran


def test_scvi_fails_fast(without):
    without("scvi")
    adata = ip.datasets.cmqtl_crispri()
    with pytest.raises(ImportError, match=r'imgprof\[scvi\]'):
        ip.tl.scvi(adata, "Metadata_Batch")


def test_cli_config_with_missing_method_is_refused_before_any_step(without, tmp_path):
    from imgprof import pipeline
    from imgprof.pipeline import ConfigError

    without("scanorama")

    cfg = pipeline.write_demo_config(tmp_path / "demo")
    import re

    text, n = re.subn(r'(?m)^methods = \[.*\]$', 'methods = ["none", "scanorama"]', Path(cfg).read_text())
    assert n == 1, "the demo config's [integrate] methods line was not found"
    Path(cfg).write_text(text)
    with pytest.raises(ConfigError, match=r'imgprof\[integration\]'):
        pipeline.run_pipeline(cfg, progress=False)
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["demo.toml"]  # nothing was written


def test_profile_images_checks_cp_measure_first(without, tmp_path):
    without("cp_measure")
    with pytest.raises(ImportError, match=r'imgprof\[im\]'):
        ip.im.profile_images(tmp_path / "does-not-matter")  # fails on the dependency, not on the folder


def test_extras_exist_and_are_documented():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name in ("all", "scvi", "im", "integration", "tutorials"):
        assert name in extras, name
    assert any("scanorama" in r for r in extras["integration"])
    assert any("jupyter" in r for r in extras["tutorials"])
    for extra_name in ("scvi", "im", "integration", "tutorials"):
        assert extra_name in extras["all"][0], "all must pull every extra"
    for doc in ("README.md", "docs/install.md"):
        text = (ROOT / doc).read_text()
        for name in ("all", "scvi", "im", "integration", "tutorials"):
            assert f"imgprof[{name}]" in text or f'.[{name}]' in text, f"{doc} does not name the [{name}] extra"


def test_readme_demo_installs_what_the_demo_uses(without):
    """scripts/demo.sh installs the core package; the demo config must need no optional package."""
    import imgprof.pipeline as pipeline

    without("scanorama", "scvi", "torch", "cp_measure")
    cfg = tomllib.loads(pipeline.demo_config_text("x"))
    methods = cfg["integrate"]["methods"]
    optional.require_methods(methods, purpose="imgprof demo")  # raises if the demo needed an extra
    assert cfg["input"].get("kind", "auto") != "images"  # image input would need cp-measure ([im])
    demo_sh = (ROOT / "scripts" / "demo.sh").read_text()
    assert "pip install" in demo_sh and "imgprof demo" in demo_sh
