"""The documentation site builds with warnings as errors."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mkdocs_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()
    # executed tutorials are rendered with their figures; guides carry figures with alt text
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        page = tmp_path / "site" / "notebooks" / nb.stem / "index.html"
        assert page.exists(), f"tutorial {nb.name} is not rendered on the site"
    html = (tmp_path / "site" / "notebooks" / "06_umap_scanpy" / "index.html").read_text()
    assert html.count("<img") >= 3 and "data:image/png;base64" in html
    assert (tmp_path / "site" / "figures" / "umap_batch_harmony.png").exists()
    shutil.rmtree(tmp_path / "site", ignore_errors=True)


def test_docs_pages_and_tutorials_are_wired():
    """Cheap checks (no build): nav pages, executed notebooks, figures with alt text, benchmark tables in one place."""
    import re

    import yaml

    text = (ROOT / "mkdocs.yml").read_text()
    nav = yaml.safe_load(text.replace("!!python", "#"))["nav"]
    flat = str(nav)
    for page in ("performance.md", "for_pycytominer_users.md", "for_scanpy_users.md"):
        assert page in flat and (ROOT / "docs" / page).exists(), page
    notebooks = sorted((ROOT / "tutorials").glob("*.ipynb"))
    assert len(notebooks) >= 8
    import json

    for nb in notebooks:
        assert f"notebooks/{nb.name}" in flat, f"{nb.name} missing from the docs nav"
        assert (ROOT / "docs" / "notebooks" / nb.name).exists(), f"docs/notebooks/{nb.name} link missing"
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        assert all(c.get("outputs") is not None for c in cells)
        assert sum(bool(c.get("outputs")) for c in cells) >= len(cells) // 2, f"{nb.name} is not stored executed"
        assert not any(o.get("output_type") == "error" for c in cells for o in c.get("outputs", [])), nb.name
    t1 = (ROOT / "tutorials" / "src" / "01_cellprofiler_to_profiles.py").read_text()
    assert "simulate(" not in t1, "tutorial 1 stays on real data"
    guides = ["pp_aggregate.md", "pp_normalize.md", "io.md", "im.md", "tl.md", "metrics.md", "bench.md", "mm.md"]
    for g in guides:
        body = (ROOT / "docs" / g).read_text()
        assert "performance.md" in body, f"{g} does not link to the Performance page"
        assert not re.search(r"^\|.*speed-up|^\| *configuration \|", body, re.MULTILINE), f"{g} still holds a benchmark table"
    images = re.findall(r"!\[([^\]]*)\]\((figures/[^)]+)\)", "".join((ROOT / "docs" / g).read_text() for g in guides))
    assert len(images) >= 4
    for alt, path in images:
        assert len(alt.split()) >= 5, f"{path}: alt text too short"
        assert (ROOT / "docs" / path).exists(), path
