"""Every tutorial notebook executes without error on bundled data."""

from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_executes(path, tmp_path, monkeypatch):
    try:  # fail, never skip silently: the test extra installs these
        import nbclient
        import nbformat
    except ImportError as e:  # pragma: no cover - environment problem
        pytest.fail(f"tutorial tests need nbformat and nbclient ({e}); install them: pip install -e '.[test]'")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_there_are_four_tutorials():
    names = [p.stem for p in TUTORIALS]
    assert len(names) >= 4, names
