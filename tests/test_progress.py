"""Progress inside long single steps: silent by default, shown when asked for (and by `imgprof run`)."""

from __future__ import annotations

import re

import pytest
from conftest import shared
from typer.testing import CliRunner

import imgprof as ip
from imgprof._core.progress import (
    progress_bar,
    progress_enabled,
    set_progress,
    show_progress,
)
from imgprof.cli import app

NF1_SQLITE = ("cytotable", "NF1_SchwannCell", "all_cellprofiler.sqlite")


@pytest.fixture
def cells_parquet(tmp_path):
    cells = ip.datasets.simulate(n_plates=2, n_perturbations=4, n_moa=2, n_controls=4, n_features=12,
                                 level="single_cell", seed=0)
    path = tmp_path / "cells.parquet"
    ip.io.write_profiles(cells, path)
    return path


@pytest.fixture
def bars(monkeypatch):
    """Every tqdm bar the helper opens, as ``[desc, n, total]`` when closed (counts the updates)."""
    import tqdm.auto

    seen: list[list] = []

    class Counting(tqdm.auto.tqdm):
        def close(self):
            if not getattr(self, "_counted", False):
                self._counted = True
                seen.append([self.desc, self.n, self.total])
            super().close()

    monkeypatch.setattr(tqdm.auto, "tqdm", Counting)
    return seen


def _bar_totals(bars: list, desc: str) -> list[tuple[int, int]]:
    return [(n, total) for d, n, total in bars if d.startswith(desc)]


def test_helper_is_off_by_default_and_scoped():
    assert progress_enabled() is False
    bar = progress_bar(range(3))
    assert list(bar) == [0, 1, 2]
    with show_progress():
        assert progress_enabled()
        with show_progress(False):
            assert not progress_enabled()
        assert progress_enabled()
    assert not progress_enabled()
    assert set_progress(True) is False
    assert set_progress(False) is True


def test_aggregate_from_parquet_silent_by_default_and_progress_when_on(cells_parquet, capsys, bars):
    quiet = ip.pp.aggregate(cells_parquet, by=["Metadata_Plate", "Metadata_Well"])
    assert capsys.readouterr().err == "" and bars == []
    with show_progress():
        loud = ip.pp.aggregate(cells_parquet, by=["Metadata_Plate", "Metadata_Well"])
    err = capsys.readouterr().err
    assert "aggregate cells.parquet" in err
    totals = _bar_totals(bars, "aggregate cells.parquet")
    assert len(totals) == 1, bars
    n, total = totals[-1]
    assert n == total >= 1  # one tick per row group, all done
    assert (loud.X == quiet.X).all()


def test_aggregate_column_passes_show_progress(cells_parquet, tmp_path, capsys, bars):
    import pandas as pd

    # shuffle the rows so they are not grouped: the column-block path runs
    df = pd.read_parquet(cells_parquet).sample(frac=1.0, random_state=0)
    shuffled = tmp_path / "shuffled.parquet"
    df.to_parquet(shuffled, row_group_size=100)
    with show_progress():
        ip.pp.aggregate(shuffled, by=["Metadata_Plate", "Metadata_Well"])
    assert "aggregate shuffled.parquet (column passes)" in capsys.readouterr().err
    totals = _bar_totals(bars, "aggregate shuffled.parquet (column passes)")
    assert totals and totals[-1][0] == totals[-1][1] >= 1, bars


def test_read_sqlite_shows_rows_per_table(capsys, bars):
    src = shared(*NF1_SQLITE)
    ip.io.read_cellprofiler(src)
    assert capsys.readouterr().err == "" and bars == []
    with show_progress():
        adata = ip.io.read_cellprofiler(src)
    assert "read " in capsys.readouterr().err
    # one bar per table read, counting its rows; the object tables hold one row per cell
    assert len(bars) >= 2, bars
    assert all(n == total for _, n, total in bars), bars
    assert any(n == adata.n_obs for n, _ in _bar_totals(bars, "read ")), bars


def test_neighbors_approximate_announces_itself(monkeypatch, capsys):
    import imgprof.tl.embedding as emb

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(emb, "_pynndescent_transformer", stop)
    a = ip.datasets.simulate(n_plates=1, n_features=10, seed=0)
    with pytest.raises(Stop):
        ip.tl.neighbors(a, exact=False, use_rep="X")
    assert "approximate kNN" not in capsys.readouterr().err
    with show_progress(), pytest.raises(Stop):
        ip.tl.neighbors(a, exact=False, use_rep="X")
    assert f"approximate kNN (pynndescent) on {a.n_obs} observations" in capsys.readouterr().err


def test_profile_images_ticks_per_site(capsys, bars):
    pytest.importorskip("cp_measure")
    eh = ip.datasets.examplehuman_images_path()
    ch = {"0": "DNA", "1": "PH3", "2": "cellbody"}
    with show_progress():
        ip.im.profile_images(eh, channels=ch, nuclei_channel="DNA", cells_channel="cellbody", features=["AreaShape"],
                             qc=False, n_jobs=1)
    assert "profile_images" in capsys.readouterr().err
    assert _bar_totals(bars, "profile_images") == [(1, 1)], bars  # ExampleHuman is one site: one tick


def test_cli_run_shows_inner_progress_unless_no_progress(tmp_path, bars):
    src = shared(*NF1_SQLITE)
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(f'[input]\npath = "{src}"\n\n[aggregate]\nby = ["Metadata_Plate", "Metadata_Well"]\n\n'
                   f'[output]\ndir = "{tmp_path / "out"}"\nformat = "h5ad"\n')
    runner = CliRunner()
    loud = runner.invoke(app, ["run", str(cfg)])
    assert loud.exit_code == 0, loud.output
    assert re.search(r"read \w+:", loud.output), loud.output
    read_bars = _bar_totals(bars, "read ")
    assert read_bars and all(n == total > 0 for n, total in read_bars), bars
    bars.clear()
    quiet = runner.invoke(app, ["run", str(cfg), "--no-progress"])
    assert quiet.exit_code == 0, quiet.output
    assert not re.search(r"read \w+:", quiet.output)
    assert not _bar_totals(bars, "read "), bars
    assert not progress_enabled()  # the run switched it back off


def test_public_switch_is_ip_show_progress():
    import imgprof as ip
    from imgprof._core.progress import progress_enabled

    assert "show_progress" in dir(ip)
    assert not progress_enabled()
    with ip.show_progress():
        assert progress_enabled()
    assert not progress_enabled()
