"""The declarative pipeline, the HTML report and the `imgprof` CLI."""

import re
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

import imgprof as ip
from imgprof.cli import app
from imgprof.pipeline import ConfigError, load_config, run_pipeline

runner = CliRunner()


def _write(tmp_path, text, name="pipeline.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture
def examplehuman_copy(tmp_path):
    src = ip.datasets.examplehuman_images_path()
    dst = tmp_path / "ExampleHuman"
    shutil.copytree(src, dst)
    return dst


def test_help_everywhere():
    for args in (["--help"], ["run", "--help"], ["demo", "--help"], ["benchmark", "--help"], ["info", "--help"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, args
        assert "Usage" in res.output


def test_unknown_section_points_at_its_line(tmp_path):
    cfg = _write(tmp_path, '[input]\npath = "x.csv"\n\n[normalise]\nmethod = "standardize"\n')
    with pytest.raises(ConfigError, match=r"line 4: unknown section \[normalise\].*Did you mean \[normalize\]"):
        load_config(cfg)
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 2
    assert "line 4" in res.output


def test_unknown_option_points_at_its_line(tmp_path, examplehuman_copy):
    cfg = _write(tmp_path, f'[input]\npath = "{examplehuman_copy}"\n\n[aggregate]\nby = ["Metadata_Well"]\nmethd = "median"\n')
    with pytest.raises(ConfigError, match=r"line 6: \[aggregate\] has no option 'methd'.*Valid options"):
        run_pipeline(cfg, progress=False)


def test_missing_input_and_bad_toml(tmp_path):
    cfg = _write(tmp_path, '[input]\npath = "does_not_exist.csv"\n')
    with pytest.raises(ConfigError, match="does_not_exist.csv"):
        run_pipeline(cfg, progress=False)
    bad = _write(tmp_path, "[input\npath = 1\n", "bad.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    noinput = _write(tmp_path, "[output]\ndir = 'x'\n", "noinput.toml")
    with pytest.raises(ConfigError, match=r"\[input\]"):
        load_config(noinput)


def test_run_on_a_copy_of_the_cellprofiler_example(tmp_path, examplehuman_copy):
    before = {p.name: p.read_bytes() for p in examplehuman_copy.iterdir()}
    cfg = _write(
        tmp_path,
        f"""
[input]
path = "{examplehuman_copy}"

[qc]
by = "Metadata_ImageNumber"

[aggregate]
by = ["Metadata_ImageNumber"]
operation = "median"

[output]
dir = "out"
format = "h5ad"
""",
    )
    res = runner.invoke(app, ["run", str(cfg), "--no-progress"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    report = (out / "report.html").read_text()
    assert "<img" in report and "Provenance" in report
    prof = ip.io.read_profiles(out / "profiles.h5ad")
    assert prof.n_obs == 1  # one image → one aggregated profile
    steps = ip.provenance(prof)["function"].tolist()
    assert "pp.aggregate" in steps
    assert re.search(r"report:\s+\S+report.html", res.output)
    # the input folder is untouched
    assert {p.name: p.read_bytes() for p in examplehuman_copy.iterdir()} == before


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    res = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--no-progress"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "demo"
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"embedding", "metric", "value"} <= set(metrics.columns)
    assert metrics["embedding"].nunique() >= 2
    html = (out / "report.html").read_text()
    assert html.count("<img") >= 3
    adata = ip.io.read_profiles(out / "profiles.h5ad")
    assert {"X_harmony", "X_combat"} <= set(adata.obsm.keys())


@pytest.mark.slow
def test_run_starts_from_an_image_folder(tmp_path):
    src = ip.datasets.examplehuman_images_path()
    images = tmp_path / "images"
    images.mkdir()
    for p in src.glob("*.tif"):
        shutil.copy(p, images / p.name)
    shutil.copy(src / "ExampleHuman.cppipe", tmp_path / "ExampleHuman.cppipe")
    cfg = _write(
        tmp_path,
        """
[input]
path = "images"
kind = "images"
channels = { "0" = "DNA", "1" = "PH3", "2" = "cellbody" }
segmenter = "ExampleHuman.cppipe"
features = ["AreaShape", "Intensity"]
n_jobs = 1

[aggregate]
by = ["Metadata_Well"]

[output]
dir = "out"
""",
    )
    res = runner.invoke(app, ["run", str(cfg), "--no-progress"])
    assert res.exit_code == 0, res.output
    wells = ip.io.read_profiles(tmp_path / "out" / "profiles.h5ad")
    assert wells.n_obs == 1
    assert int(wells.obs["Metadata_Object_Count"].iloc[0]) == 289  # CellProfiler found 289 cells
    assert "Cells_AreaShape_Area" in wells.var_names


def test_input_step_reads_through_ip_io_read(tmp_path, monkeypatch):
    """[input] files are read by ip.io.read (formats detected in imgprof.io only); kind= picks a reader."""
    from imgprof._pipeline.inputs import read_input

    a = ip.datasets.simulate(n_plates=1, seed=0)
    ip.io.write_profiles(a, tmp_path / "p.csv")
    calls = []
    real = ip.io.read
    monkeypatch.setattr(ip.io, "read", lambda path, **kw: calls.append(path) or real(path, **kw))
    back = read_input(load_config(_write(tmp_path, '[input]\npath = "p.csv"\n')))
    assert calls == [str(tmp_path / "p.csv")] and back.shape == a.shape
    assert ip.provenance(back)["function"].iloc[-1] == "io.read_input"
    calls.clear()
    read_input(load_config(_write(tmp_path, '[input]\npath = "p.csv"\nkind = "profiles"\n', "k.toml")))
    assert calls == []  # an explicit kind calls its reader (ip.io.read_profiles) directly
    import imgprof.pipeline as pipeline

    assert not hasattr(pipeline, "_read_input")
