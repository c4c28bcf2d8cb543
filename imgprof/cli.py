"""The ``imgprof`` command line: ``run``, ``demo``, ``benchmark``, ``info``.

Exit codes: 0 success, 2 bad config or input (the message names the file and
line), 1 an unexpected error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="imgprof: image-based profiling pipelines (read → aggregate → normalize → feature_select → integrate → evaluate).",
)


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _run(config: Path, progress: bool) -> None:
    from .pipeline import ConfigError, run_pipeline

    try:
        res = run_pipeline(config, progress=progress)
    except ConfigError as e:
        _fail(str(e))
    except FileNotFoundError as e:
        _fail(str(e))
    typer.echo(f"profiles: {res.files['adata']}  ({res.adata.n_obs} × {res.adata.n_vars})")
    typer.echo(f"metrics:  {res.files['metrics']}")
    if "report" in res.files:
        typer.echo(f"report:   {res.files['report']}")


@app.command()
def run(
    config: Path = typer.Argument(..., help="Pipeline config (.toml, .yaml or .yml)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Run the pipeline declared in CONFIG; write profiles, metrics.csv and report.html."""
    _run(config, progress)


@app.command()
def demo(
    out: Path = typer.Option(Path("imgprof-demo"), "--out", "-o", help="Output folder."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Run the whole pipeline on bundled real data (two cmQTL CRISPRi batches) and print where the report is."""
    from .pipeline import write_demo_config

    cfg = write_demo_config(out)
    typer.echo(f"config:   {cfg}")
    _run(cfg, progress)


@app.command()
def benchmark(
    config: Path = typer.Argument(None, help="Config with [input]/[normalize]/[integrate]/[benchmark]; default: the demo data."),
    methods: str = typer.Option("none,harmony,combat,sphering,mnn,rpca", help="Comma-separated ip.tl methods."),
    batch_key: str = typer.Option("Metadata_Batch", help="Batch column."),
    label_key: str = typer.Option("Metadata_target_gene", help="Biological label column."),
    out: Path = typer.Option(Path("imgprof-benchmark"), "--out", "-o", help="Output folder."),
) -> None:
    """Run batch-correction methods and benchmark them (scib-style + mAP metrics)."""
    import imgprof as ip

    from .pipeline import ConfigError, _read_input, load_config, write_demo_config

    out.mkdir(parents=True, exist_ok=True)
    try:
        cfg = load_config(config if config is not None else write_demo_config(out))
        adata = _read_input(cfg)
        if "normalize" in cfg.sections:
            ip.pp.normalize(adata, **cfg.sections["normalize"])
        if "feature_select" in cfg.sections:
            ip.pp.feature_select(adata, **cfg.sections["feature_select"])
    except ConfigError as e:
        _fail(str(e))
    bm = ip.bench.run_methods(adata, methods=[m.strip() for m in methods.split(",") if m.strip()], batch_key=batch_key, label_key=label_key)
    table = bm.get_results(tidy=False) if hasattr(bm, "get_results") else bm
    path = out / "benchmark.csv"
    table.to_csv(path)
    typer.echo(table.to_string())
    typer.echo(f"benchmark: {path}")


@app.command()
def info(path: Path = typer.Argument(..., help="A profile table, CellProfiler output, h5ad or zarr.")) -> None:
    """Describe a profile file: shape, metadata columns, feature anatomy."""
    import imgprof as ip

    from .pipeline import Config, _read_input

    try:
        adata = _read_input(Config(sections={"input": {"path": str(path)}}))
    except Exception as e:  # noqa: BLE001 - surface a one-line message
        _fail(f"{path}: {e}")
    typer.echo(str(adata))
    if "feature_group" in adata.var.columns:
        typer.echo(adata.var.groupby(["compartment", "feature_group"], observed=True).size().to_string())
    del ip


def main() -> None:  # pragma: no cover - console entry point
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
