"""Bad configs and inputs to the ``imgprof`` CLI and the declarative pipeline (issues #14 and #16).

A user error never prints a traceback: one ``error:`` line naming the file (and config line)
at fault, exit code 2, inputs and earlier outputs byte-for-byte unchanged, and (for config
problems) no work started and nothing written.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import imgprof as ip
from imgprof.cli import app
from imgprof.pipeline import ConfigError, load_config, run_pipeline, validate_config

runner = CliRunner()


def tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def profiles_src(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    a = ip.datasets.simulate(n_plates=2, seed=0)
    ip.io.write_profiles(a, d / "prof.csv")
    ip.io.write_profiles(a[a.obs["Metadata_Plate"] == "plate_1"].copy(), d / "plate_1.csv")
    ip.io.write_profiles(a[a.obs["Metadata_Plate"] == "plate_2"].copy(), d / "plate_2.csv")
    return d


@pytest.fixture
def ws(tmp_path, profiles_src):
    """A workspace with the input tables; returns its folder."""
    for f in profiles_src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def write_cfg(ws: Path, text: str, name: str = "p.toml") -> Path:
    p = ws / name
    p.write_text(text)
    return p


def assert_user_error(res, *needles: str) -> None:
    """One ``error:`` line, exit code 2, no traceback, the culprit named."""
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert "Traceback" not in res.output
    errs = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errs) == 1, res.output
    for n in needles:
        assert n in errs[0], (n, errs[0])


BASE = '[input]\npath = "prof.csv"\n\n[output]\ndir = "out"\nreport = false\n'

# (config text, needles in the error line: file name + line + culprit)
CONFIG_CASES = {
    "path = 42": ('[input]\npath = 42\n', ["p.toml, line 2", "path", "42"]),
    "path = list": ('[input]\npath = ["a.csv", "b.csv"]\n', ["line 2", "paths = [...]"]),
    "paths = 42": ('[input]\npaths = 42\n', ["line 2", "paths", "42"]),
    "path and paths": ('[input]\npath = "prof.csv"\npaths = ["prof.csv"]\n', ["line 3", "both path and paths"]),
    "missing input file": ('[input]\npath = "nope.csv"\n', ["line 2", "nope.csv", "does not exist"]),
    "typo in an [input] option": ('[input]\npath = "prof.csv"\nmetadata_prefx = "Metadata_"\n', ["line 3", "metadata_prefx", "metadata_prefix"]),
    "unknown input kind": ('[input]\npath = "prof.csv"\nkind = "profile"\n', ["line 3", "'profile'", "Did you mean 'profiles'"]),
    "batch_key as a number": ('[input]\npath = "prof.csv"\nbatch_key = 3\n', ["line 3", "batch_key"]),
    "join = left": ('[input]\npath = "prof.csv"\njoin = "left"\n', ["line 3", "join"]),
    "batch_names too short": ('[input]\npaths = ["plate_1.csv", "plate_2.csv"]\nbatch_names = ["A"]\n', ["line 3", "batch_names has 1 names for 2"]),
    "batch_names duplicated": ('[input]\npaths = ["plate_1.csv", "plate_2.csv"]\nbatch_names = ["A", "A"]\n', ["line 3", "unique"]),
    "batch_names not a list": ('[input]\npaths = ["plate_1.csv", "plate_2.csv"]\nbatch_names = "A"\n', ["line 3", "batch_names"]),
    "n_comps = 'thirty'": (BASE + '\n[pca]\nn_comps = "thirty"\n', ["line 9", "[pca] n_comps", "'thirty'", "integer"]),
    "n_comps = 3.5": (BASE + '\n[pca]\nn_comps = 3.5\n', ["line 9", "n_comps", "3.5"]),
    "n_comps = true": (BASE + '\n[pca]\nn_comps = true\n', ["line 9", "n_comps", "True"]),
    "typo in a step option": (BASE + '\n[normalize]\nmethd = "mad_robustize"\n', ["line 9", "methd", "Did you mean 'method'"]),
    "normalize method as a number": (BASE + '\n[normalize]\nmethod = 5\n', ["line 9", "[normalize] method", "5"]),
    "normalize method typo": (BASE + '\n[normalize]\nmethod = "mad_robustise"\n', ["line 9", "'mad_robustise'", "Did you mean 'mad_robustize'"]),
    "integrate without batch_key": (BASE + '\n[integrate]\nmethods = ["none"]\n', ["line 8", "needs batch_key"]),
    "typo in a per-method option": (BASE + '\n[integrate]\nmethods = ["combat"]\nbatch_key = "Metadata_Plate"\n[integrate.params.combat]\ncovariate = "Metadata_moa"\n',
                                    ["covariate", "Did you mean 'covariates'", "[integrate.params.combat]"]),
    "qc filter = 'yes'": (BASE + '\n[qc]\nfilter = "yes"\n', ["line 9", "[qc] filter", "'yes'"]),
    "methods = 'harmoni' (a string typo)": (BASE + '\n[integrate]\nmethods = "harmoni"\nbatch_key = "Metadata_Batch"\n', ["line 9", "'harmoni'", "Did you mean 'harmony'"]),
    "methods = 5": (BASE + '\n[integrate]\nmethods = 5\nbatch_key = "Metadata_Batch"\n', ["line 9", "list of method names"]),
    "methods = []": (BASE + '\n[integrate]\nmethods = []\nbatch_key = "Metadata_Batch"\n', ["line 9", "list of method names"]),
    "unknown method in a list": (BASE + '\n[integrate]\nmethods = ["none", "combatt"]\nbatch_key = "Metadata_Batch"\n', ["line 9", "'combatt'"]),
    "integrate without methods": (BASE + '\n[integrate]\nbatch_key = "Metadata_Batch"\n', ["line 8", "needs methods"]),
    "params for a method not run": (BASE + '\n[integrate]\nmethods = ["none"]\nbatch_key = "Metadata_Batch"\n[integrate.params.harmony]\ntheta = 2\n',
                                    ["[integrate.params.harmony]"]),
    "typo in an integrate option": (BASE + '\n[integrate]\nmethods = ["none"]\nbatch_kye = "Metadata_Batch"\n', ["line 10", "batch_kye"]),
    "typo in an evaluate option": (BASE + '\n[evaluate]\nperturbation_ky = "Metadata_moa"\n', ["line 9", "perturbation_ky"]),
    "typo in a benchmark option": (BASE + '\n[benchmark]\nbatch_ky = "Metadata_Batch"\n', ["line 9", "batch_ky"]),
    "typo in a consensus option": (BASE + '\n[consensus]\noperaton = "median"\n', ["line 9", "operaton", "operation"]),
    "output format xlsx": ('[input]\npath = "prof.csv"\n[output]\nformat = "xlsx"\n', ["line 4", "'xlsx'", "h5ad"]),
    "output format typo": ('[input]\npath = "prof.csv"\n[output]\nformat = "parqet"\n', ["line 4", "Did you mean 'parquet'"]),
    "output format number": ('[input]\npath = "prof.csv"\n[output]\nformat = 5\n', ["line 4", "format"]),
    "output format list with a bad entry": ('[input]\npath = "prof.csv"\n[output]\nformat = ["h5ad", "xls"]\n', ["line 4", "'xls'"]),
    "output unknown option": ('[input]\npath = "prof.csv"\n[output]\nformt = "h5ad"\n', ["line 4", "formt", "Did you mean 'format'"]),
    "output report = 'no'": ('[input]\npath = "prof.csv"\n[output]\nreport = "no"\n', ["line 4", "report"]),
    "output dir = 5": ('[input]\npath = "prof.csv"\n[output]\ndir = 5\n', ["line 4", "dir"]),
    "output dir is a file": ('[input]\npath = "prof.csv"\n[output]\ndir = "prof.csv"\n', ["line 4", "is a file"]),
    "unknown section": ('[input]\npath = "prof.csv"\n[consensuss]\n', ["line 3", "Did you mean [consensus]"]),
    "invalid TOML": ('[input\npath = "prof.csv"\n', ["invalid TOML"]),
    "section that is not a table": ('input = 3\n', ["[input] must hold key = value"]),
}


def run_refused(ws, cfg, needles):
    """``imgprof run cfg`` fails as a user error naming ``needles``, and leaves ``ws`` as it was."""
    before = tree_hash(ws)
    assert_user_error(runner.invoke(app, ["run", str(cfg), "--no-progress"]), *needles)
    assert tree_hash(ws) == before


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_cli_config_error(ws, case):
    text, needles = CONFIG_CASES[case]
    run_refused(ws, write_cfg(ws, text), needles)  # validated before any work: nothing read-modified, nothing written


def test_config_errors_are_raised_before_any_work(ws, monkeypatch):
    # the reader must not even be called when a later section is wrong
    called = []
    monkeypatch.setattr(ip.io, "read_profiles", lambda *a, **k: called.append(a))
    cfg = write_cfg(ws, BASE + '\n[pca]\nn_comps = "thirty"\n')
    with pytest.raises(ConfigError, match="n_comps"):
        run_pipeline(cfg, progress=False)
    assert called == []


def test_methods_as_one_string_is_one_method(ws):
    cfg = load_config(write_cfg(ws, BASE + '\n[integrate]\nmethods = "none"\nbatch_key = "Metadata_Plate"\n'))
    validate_config(cfg)
    res = run_pipeline(cfg, progress=False)
    assert list(res.adata.obsm) == ["X_none"]  # not 'n', 'o', 'n', 'e'


@pytest.mark.parametrize(("method", "pip"), [("scanorama", "imgprof[integration]"), ("scvi", "imgprof[scvi]")])
def test_missing_optional_package_prints_pip_command(ws, monkeypatch, method, pip):
    import imgprof._core.optional as optional

    monkeypatch.setattr(optional, "is_available", lambda name: False)
    cfg = write_cfg(ws, BASE + f'\n[integrate]\nmethods = ["none", "{method}"]\nbatch_key = "Metadata_Batch"\n')
    before = tree_hash(ws)
    res = runner.invoke(app, ["run", str(cfg), "--no-progress"])
    assert_user_error(res, "line 9", f'pip install "{pip}"')
    assert tree_hash(ws) == before


def _cut_gz(p: Path) -> None:
    blob = gzip.compress(p.read_bytes())
    p.with_suffix(".csv.gz").write_bytes(blob[: len(blob) // 2])


INPUT_CASES = {
    "truncated gzip input": (lambda ws: _cut_gz(ws / "prof.csv") or "prof.csv.gz", ["prof.csv.gz", "truncated"]),
    "latin-1 input": (lambda ws: (ws / "l1.csv").write_bytes("Metadata_Plate,Metadata_Name,Cells_A\nP1,Caféine,1\n".encode("latin-1")) and "l1.csv",
                      ["l1.csv", "line 2", "latin-1"]),
    "truncated csv input": (lambda ws: (ws / "cut.csv").write_text((ws / "prof.csv").read_text()[:-25]) and "cut.csv", ["cut.csv", "truncated"]),
    "xlsx input": (lambda ws: (ws / "x.xlsx.csv").write_bytes(b"PK\x03\x04rest-of-zip") and "x.xlsx.csv", ["x.xlsx.csv", "Excel"]),
    "duplicated columns": (lambda ws: (ws / "d.csv").write_text("Metadata_Plate,Cells_A,Cells_A\nP1,1,2\n") and "d.csv", ["d.csv", "duplicated", "Cells_A"]),
    "empty input": (lambda ws: (ws / "e.csv").write_text("") or "e.csv", ["e.csv", "empty"]),
}


@pytest.mark.parametrize("case", list(INPUT_CASES))
def test_cli_bad_input_file(ws, case):
    build, needles = INPUT_CASES[case]
    name = build(ws)
    cfg = write_cfg(ws, f'[input]\npath = "{name}"\n[output]\ndir = "out"\nreport = false\n')
    before = tree_hash(ws)
    res = runner.invoke(app, ["run", str(cfg), "--no-progress"])
    assert_user_error(res, "p.toml, line 2", *needles)
    assert "Aborted" not in res.output
    assert tree_hash(ws) == before
    # `imgprof info` on the same file: one line, exit 2, the file named
    res = runner.invoke(app, ["info", str(ws / name)])
    assert_user_error(res, name)


def test_cli_info_missing_file(tmp_path):
    assert_user_error(runner.invoke(app, ["info", str(tmp_path / "nope.csv")]), "nope.csv")


def test_cli_missing_and_odd_config(tmp_path):
    assert_user_error(runner.invoke(app, ["run", str(tmp_path / "nope.toml")]), "nope.toml", "not found")
    (tmp_path / "cfg.toml").mkdir()
    assert_user_error(runner.invoke(app, ["run", str(tmp_path / "cfg.toml")]), "cfg.toml", "folder")
    (tmp_path / "l1.toml").write_bytes('[input]\npath = "café.csv"\n'.encode("latin-1"))
    assert_user_error(runner.invoke(app, ["run", str(tmp_path / "l1.toml")]), "l1.toml", "UTF-8")
    (tmp_path / "c.ini").write_text("[input]\n")
    assert_user_error(runner.invoke(app, ["run", str(tmp_path / "c.ini")]), "c.ini", ".toml")


def test_zarr_output_with_case_clashing_columns_is_refused_before_writing(ws):
    df = pd.read_csv(ws / "prof.csv")
    df.insert(1, "Metadata_plate", df["Metadata_Plate"])
    df.to_csv(ws / "case.csv", index=False)
    cfg = write_cfg(ws, '[input]\npath = "case.csv"\n[output]\ndir = "out"\nformat = ["h5ad", "zarr"]\nreport = false\n')
    res = runner.invoke(app, ["run", str(cfg), "--no-progress"])
    assert_user_error(res, "line 5", "Metadata_Plate", "Metadata_plate", "differ only by upper/lower case")
    assert not (ws / "out").exists()  # nothing written, not even the output folder


def test_existing_outputs_are_replaced_whole_or_kept(ws):
    cfg = write_cfg(ws, BASE.replace("report = false", 'report = false\nformat = ["h5ad", "csv"]'))
    res = runner.invoke(app, ["run", str(cfg), "--no-progress"])
    assert res.exit_code == 0, res.output
    before = tree_hash(ws / "out")
    # the same run again, now with a config error: the earlier outputs stay byte-for-byte
    bad = write_cfg(ws, BASE.replace("report = false", 'report = false\nformat = ["h5ad", "csv"]') + '\n[pca]\nn_comps = "x"\n', "bad.toml")
    assert_user_error(runner.invoke(app, ["run", str(bad), "--no-progress"]), "n_comps")
    assert tree_hash(ws / "out") == before
    # and with an input that fails to read
    (ws / "prof.csv").write_text((ws / "prof.csv").read_text()[:-30])
    assert_user_error(runner.invoke(app, ["run", str(cfg), "--no-progress"]), "prof.csv", "truncated")
    assert tree_hash(ws / "out") == before
    assert not [p for p in (ws / "out").iterdir() if p.name.startswith(".~imgprof")]


def test_output_formats_and_steps_run(ws):
    cfg = write_cfg(ws, """
[input]
paths = ["plate_1.csv", "plate_2.csv"]
batch_names = ["first", "second"]
batch_key = "Metadata_Run"

[qc]
by = "Metadata_Plate"
filter = true
outlier_z = 2.0

[normalize]
method = "standardize"

[consensus]
by = ["Metadata_Run", "Metadata_Perturbation"]

[output]
dir = "out"
format = ["h5ad", "zarr", "parquet", "csv"]
report = false
""")
    res = runner.invoke(app, ["run", str(cfg), "--no-progress"])
    assert res.exit_code == 0, res.output
    out = ws / "out"
    a = ip.io.read_profiles(out / "profiles.h5ad")
    for f in ("profiles.zarr", "profiles.parquet", "profiles.csv"):
        b = ip.io.read_profiles(out / f)
        assert b.shape == a.shape, f
    # batch names come from the config, not the file stems
    assert set(a.obs["Metadata_Run"]) == {"first", "second"}
    # consensus collapsed replicates: one row per (run, perturbation)
    assert not a.obs.duplicated(["Metadata_Run", "Metadata_Perturbation"]).any()
    assert "pp.consensus" in ip.provenance(a)["function"].tolist()


def test_qc_filter_drops_flagged_rows(ws):
    text = '[input]\npath = "prof.csv"\n[qc]\nby = "Metadata_Plate"\noutlier_z = 1.0\n{extra}[output]\ndir = "{out}"\nreport = false\n'
    kept = run_pipeline(write_cfg(ws, text.format(extra="filter = true\n", out="o1"), "a.toml"), progress=False).adata
    flagged = run_pipeline(write_cfg(ws, text.format(extra="", out="o2"), "b.toml"), progress=False).adata
    n_pass = int(flagged.obs["Metadata_qc_pass"].sum())
    assert 0 < n_pass < flagged.n_obs  # the threshold flags some rows
    assert kept.n_obs == n_pass and kept.obs["Metadata_qc_pass"].all()


def test_qc_filter_dropping_everything_is_an_error(ws, monkeypatch):
    def flag_all(adata, **kw):
        adata.obs["Metadata_qc_pass"] = False

    monkeypatch.setattr(ip.pp, "qc", flag_all)
    cfg = write_cfg(ws, '[input]\npath = "prof.csv"\n[qc]\nfilter = true\n[output]\ndir = "out"\nreport = false\n')
    assert_user_error(runner.invoke(app, ["run", str(cfg), "--no-progress"]), "line 4", "drop every row")


def test_same_file_stems_need_batch_names(ws):
    (ws / "b").mkdir()
    shutil.copy(ws / "plate_1.csv", ws / "b" / "plate_1.csv")
    cfg = write_cfg(ws, '[input]\npaths = ["plate_1.csv", "b/plate_1.csv"]\n[output]\ndir = "out"\nreport = false\n')
    assert_user_error(runner.invoke(app, ["run", str(cfg), "--no-progress"]), "batch_names")


def test_warnings_point_at_the_config(ws):
    cfg = write_cfg(ws, BASE + '\n[consensus]\nby = ["Metadata_Plate", "Metadata_Well"]\n')  # one replicate per group → warns
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_pipeline(cfg, progress=False)
    ours = [w for w in caught if "[consensus]" in str(w.message)]
    assert ours, [str(w.message) for w in caught]
    assert all(w.filename == str(cfg) and w.lineno == 8 for w in ours)
    assert not any(w.filename.endswith("pipeline.py") for w in caught)


def test_progress_bar_completes(ws, capsys):
    cfg = write_cfg(ws, BASE + '\n[normalize]\nmethod = "standardize"\n')
    run_pipeline(cfg, progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err  # input, normalize, output
    assert "[normalize]" in err  # the running step is named
    assert "2/3" not in err.rsplit("\r", 1)[-1]


def test_nested_bars_only_with_verbose(ws, capsys):
    cfg = write_cfg(ws, BASE + '\n[integrate]\nmethods = ["none", "combat"]\nbatch_key = "Metadata_Plate"\n')
    run_pipeline(cfg, progress=True)
    assert "integrate:" not in capsys.readouterr().err.replace("[integrate: ", "")
    run_pipeline(cfg, progress=True, verbose=True)
    assert "integrate: " in capsys.readouterr().err.replace("[integrate: ", "")


@pytest.mark.parametrize("cmd", ["run", "demo", "benchmark", "info"])
def test_help_shows_section_names(cmd):
    res = runner.invoke(app, [cmd, "--help"])
    assert res.exit_code == 0
    if cmd == "benchmark":
        assert "[input]" in res.output and "[normalize]" in res.output
        assert "///" not in res.output


def test_benchmark_bad_method_and_columns(tmp_path):
    before = tree_hash(tmp_path)
    res = runner.invoke(app, ["benchmark", "--methods", "none,harmoni", "--out", str(tmp_path / "b")])
    assert_user_error(res, "--methods", "'harmoni'")
    assert tree_hash(tmp_path) == before


def test_benchmark_out_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    assert_user_error(runner.invoke(app, ["benchmark", "--out", str(tmp_path / "f")]), "--out", "is a file")


def test_demo_out_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    assert_user_error(runner.invoke(app, ["demo", "--out", str(tmp_path / "f")]), "--out", "is a file")


@pytest.mark.parametrize(("fmt", "make"), [("h5ad", "folder"), ("zarr", "file"), ("parquet", "folder"), ("csv", "folder")])
def test_output_target_of_the_wrong_kind(ws, fmt, make):
    out = ws / "out"
    out.mkdir()
    target = out / f"profiles.{fmt}"
    if make == "folder":
        target.mkdir()
        (target / "keep.txt").write_text("keep")
    else:
        target.write_text("keep")
    cfg = write_cfg(ws, f'[input]\npath = "prof.csv"\n[output]\ndir = "out"\nformat = "{fmt}"\nreport = false\n')
    before = tree_hash(ws)
    res = runner.invoke(app, ["run", str(cfg), "--no-progress"])
    assert_user_error(res, "line 5", f"profiles.{fmt}", "exists and is a")
    assert tree_hash(ws) == before


YAML_CASES = {
    "path: 42": ("input:\n  path: 42\n", ["p.yml, line 2", "path"]),
    "typo in an option": ("input:\n  path: prof.csv\nnormalize:\n  methd: standardize\n", ["p.yml, line 4", "methd"]),
    "n_comps: thirty": ("input:\n  path: prof.csv\npca:\n  n_comps: thirty\n", ["p.yml, line 4", "n_comps", "'thirty'"]),
    "unknown section": ("input:\n  path: prof.csv\nnormalise:\n  method: standardize\n", ["p.yml, line 3", "Did you mean [normalize]"]),
    "invalid YAML": ("input:\n  path: [prof.csv\n", ["invalid YAML"]),
    "not a mapping": ("- input\n- qc\n", ["mapping of sections"]),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_yaml_config_errors(ws, case):
    text, needles = YAML_CASES[case]
    run_refused(ws, write_cfg(ws, text, "p.yml"), needles)


def test_methods_harmony_string_validates_as_one_method(ws):
    cfg = load_config(write_cfg(ws, BASE + '\n[pca]\nn_comps = 5\n\n[integrate]\nmethods = "harmony"\nbatch_key = "Metadata_Plate"\n'))
    validate_config(cfg)  # accepted: a single name, not the letters 'h', 'a', ...
    res = run_pipeline(cfg, progress=False)
    assert "X_harmony" in res.adata.obsm and not any(k in res.adata.obsm for k in ("X_h", "X_a"))
