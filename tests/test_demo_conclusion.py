"""The demo's conclusion holds on the bundled data, its report says what a scientist needs, and
`imgprof benchmark` runs with its defaults."""

import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import imgprof as ip
from imgprof.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    res = runner.invoke(app, ["demo", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    return out


def _wide(out):
    m = pd.read_csv(out / "metrics.csv")
    return m.pivot_table(index="embedding", columns="metric", values="value")


def test_a_correction_mixes_batches_and_keeps_the_gene_signal(demo):
    w = _wide(demo)
    share, mAP = w["same_batch_share_10nn"], w["mean_mAP"]
    # baselines in the same space: the PCA for harmony, the uncorrected features for rpca/mnn/combat
    winners = []
    for method, base in (("X_harmony", "X_pca"), ("X_rpca", "X_none"), ("X_mnn", "X_none")):
        if share[base] - share[method] >= 0.10 and abs(mAP[method] - mAP[base]) <= 0.02:
            winners.append(method)
    assert "X_harmony" in winners and len(winners) >= 2, (share.round(3).to_dict(), mAP.round(3).to_dict())
    # perfect mixing of two equal batches gives about 0.5; the baseline is far from it
    assert w["same_batch_share_expected"].iloc[0] == pytest.approx(0.5, abs=0.01)
    assert share["X_pca"] > 0.75


def test_demo_matrix_has_no_dominant_feature_and_tuning_is_label_free(demo):
    adata = ip.io.read_profiles(demo / "profiles.h5ad")
    v = np.nanvar(np.asarray(adata.X, dtype=float), axis=0)
    assert (v / v.sum()).max() <= 0.10
    sph = ip.provenance(adata)
    sph = sph[sph["function"] == "tl.sphering"].iloc[-1]
    assert sph["extra"]["tuned_on_label"] is None and sph["params"]["criterion"] == "control_likelihood"


def test_demo_report_explains_and_warns(demo):
    html = (demo / "report.html").read_text()
    for title in ("Conclusions", "What these data do not support", "Warnings", "What went in",
                  "How to read the metrics"):
        assert f"<h2>{title}</h2>" in html, title
    assert "mixes the batches clearly better than its baseline" in html
    # every warning of the run is shown: sphering is fitted on the controls mAP uses as negatives
    assert "CircularTuningWarning" in html and "negative controls of mAP negcon" in html
    # what went in: both input files and the features the join dropped
    for f in ("2022_09_07_Batch8_cmQTL_CRISPRi_plate1", "2022_09_22_Batch8Rerun_MT_rerun_20220919"):
        assert f in html
    assert re.search(r"Features dropped by the inner join between the files \(present in some files only\): \d+",
                     html)
    # every figure has a description, never a generic one
    alts = re.findall(r'<img alt="([^"]*)"', html)
    assert len(alts) >= 4 and all(len(a) > 20 and a != "figure" for a in alts)
    # no pandas RangeIndex column leaks into a table
    assert not re.search(r"<tr>\s*<th>0</th>", html)
    # metric directions are stated
    assert "lower" in html and "higher" in html


def test_benchmark_command_runs_with_its_defaults(tmp_path):
    out = tmp_path / "bench"
    res = runner.invoke(app, ["benchmark", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "benchmark.csv", index_col=0)
    # scib-metrics' wide shape: one row per embedding and a "Metric Type" row
    assert table.index[-1] == "Metric Type"
    for emb in ("X_pca", "X_none", "X_harmony", "X_combat", "X_sphering", "X_mnn", "X_rpca"):
        assert emb in table.index
    assert {"Total", "iLISI", "mAP negcon"} <= set(table.columns)
    assert (out / "report.html").exists()
    flags = pd.read_csv(out / "benchmark_flags.csv")
    assert "circular" in set(flags["kind"])
    assert "same_batch_share_10nn" in res.output
