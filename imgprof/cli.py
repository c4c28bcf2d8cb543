"""The ``imgprof`` command line: ``run``, ``demo``, ``benchmark``, ``info``.

Exit codes: 0 success, 2 bad config or input (one ``error:`` line naming the
file and line, never a traceback), 1 an unexpected error (a bug: the traceback
is printed so it can be reported).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    # Plain help text: with Rich markup, "[input]" or "[normalize]" in a help string would be
    # swallowed as a style tag ("Config with ///").
    rich_markup_mode=None,
    help="imgprof: image-based profiling pipelines (read → aggregate → normalize → feature_select → integrate → evaluate).",
)

#: Exceptions that mean "bad input or config", reported as one ``error:`` line with exit code 2.
USER_ERRORS = (ValueError, TypeError, KeyError, OSError, EOFError, ImportError)


def _fail(msg: str, code: int = 2) -> None:
    msg = " ".join(str(msg).split())  # one line, whatever the underlying message held
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _user_error(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, ImportError):
        name = getattr(e, "name", None) or msg
        if "pip install" not in msg:
            msg = f"{msg} (install it with: pip install {name})" if name else msg
    return msg or type(e).__name__


def _run(config: Path, progress: bool, verbose: bool = False) -> None:
    from .pipeline import ConfigError, run_pipeline

    try:
        res = run_pipeline(config, progress=progress, verbose=verbose)
    except ConfigError as e:
        _fail(str(e))
    except USER_ERRORS as e:
        _fail(_user_error(e))
    typer.echo(f"profiles: {res.files['adata']}  ({res.adata.n_obs} × {res.adata.n_vars})")
    typer.echo(f"metrics:  {res.files['metrics']}")
    if "report" in res.files:
        typer.echo(f"report:   {res.files['report']}")


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Pipeline config (.toml, .yaml or .yml).")],
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Also show the nested progress bars of integration and benchmark steps.")] = False,
) -> None:
    """Run the pipeline declared in CONFIG; write profiles, metrics.csv and report.html."""
    _run(config, progress, verbose)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("imgprof-demo"),
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show nested progress bars.")] = False,
) -> None:
    """Run the whole pipeline on bundled real data (two cmQTL CRISPRi batches) and print where the report is."""
    from .pipeline import write_demo_config

    if out.exists() and not out.is_dir():
        _fail(f"--out {out} exists and is a file, not a folder.")
    cfg = write_demo_config(out)
    typer.echo(f"config:   {cfg}")
    _run(cfg, progress, verbose)


@app.command()
def benchmark(
    config: Annotated[Path | None, typer.Argument(
        help="Config with [input], [normalize], [integrate], [benchmark] sections; default: the demo data.")] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated ip.tl methods.")] = "none,harmony,combat,sphering,mnn,rpca",
    batch_key: Annotated[str | None, typer.Option(help="Batch column (default: the config's, else Metadata_Batch).")] = None,
    label_key: Annotated[str | None, typer.Option(
        help="Biological label column (default: the config's, else Metadata_target_gene).")] = None,
    controls: Annotated[str | None, typer.Option(
        help="Negative controls (an .obs query) for sphering and mAP (default: the config's [evaluate] controls).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("imgprof-benchmark"),
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the per-method and per-metric progress bars.")] = False,
) -> None:
    """Run batch-correction methods and benchmark them (scib-style + mAP metrics, same-batch share); write
    benchmark.csv (scib-metrics' wide table), metrics.csv and report.html."""
    from ._core.optional import MissingDependencyError, require_methods
    from .io._atomic import atomic_path
    from .pipeline import ConfigError, integration_methods, load_config, run_pipeline, write_demo_config

    if out.exists() and not out.is_dir():
        _fail(f"--out {out} exists and is a file, not a folder.")
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    known = list(integration_methods())
    for m in method_list:
        if m.lower() not in known:
            _fail(f"--methods: unknown method {m!r}; choose from {known}.")
    try:
        require_methods(method_list, purpose="--methods")
    except MissingDependencyError as e:
        _fail(str(e))
    try:
        out.mkdir(parents=True, exist_ok=True)
        cfg = load_config(config if config is not None else write_demo_config(out))
        sec = cfg.sections
        bench = dict(sec.get("benchmark", {}))
        batch_key = batch_key or bench.get("batch_key") or sec.get("integrate", {}).get("batch_key") or "Metadata_Batch"
        label_key = label_key or bench.get("label_key") or "Metadata_target_gene"
        controls = controls or sec.get("evaluate", {}).get("controls")
        integ = dict(sec.get("integrate", {}))
        params = {k: dict(v) for k, v in (integ.pop("params", {}) or {}).items()}
        integ.pop("method", None)
        integ.update(methods=method_list, batch_key=batch_key)
        if "sphering" in method_list:
            sph = params.setdefault("sphering", {})
            if controls is not None:
                sph.setdefault("controls", controls)
            if "controls" not in sph:
                _fail("sphering is fitted on negative controls: pass --controls \"<.obs query>\" (e.g. "
                      "\"Metadata_control_type == 'negcon'\") or leave sphering out of --methods.")
        integ["params"] = {k: v for k, v in params.items() if k in method_list}
        sec["integrate"] = integ
        sec.setdefault("pca", {"n_comps": 30})
        bench.update(batch_key=batch_key, label_key=label_key)
        sec["benchmark"] = bench
        if controls is not None:
            ev = dict(sec.get("evaluate", {}))
            ev.setdefault("perturbation_key", label_key)
            ev.setdefault("controls", controls)
            sec["evaluate"] = ev
        sec.setdefault("output", {})["dir"] = str(out.resolve())
        res = run_pipeline(cfg, progress=progress, verbose=verbose)
    except ConfigError as e:
        _fail(str(e))
    except USER_ERRORS as e:
        _fail(_user_error(e))
    table = res.benchmarker.get_results() if res.benchmarker is not None else res.metrics
    path = out / "benchmark.csv"
    with atomic_path(path) as tmp:
        table.to_csv(tmp)
    m = res.metrics
    show = m[m["metric"].isin(["same_batch_share_10nn", "mean_mAP", "Batch correction", "Bio conservation", "Total"])]
    if len(show):
        summary = show.pivot_table(index="embedding", columns="metric", values="value", sort=False)
        typer.echo(summary.round(3).to_string())
        typer.echo("same_batch_share_10nn: lower = batches better mixed; mean_mAP and the scores: higher is better.")
    flags = res.benchmarker.flags if res.benchmarker is not None else None
    if flags is not None and len(flags):
        with atomic_path(out / "benchmark_flags.csv") as tmp:
            flags.to_csv(tmp, index=False)
        typer.echo(f"guardrail flags: {len(flags)} (see {out / 'benchmark_flags.csv'} and the report)")
    typer.echo(f"benchmark: {path}")
    typer.echo(f"report:    {res.files.get('report')}")


@app.command()
def info(path: Annotated[Path, typer.Argument(help="A profile table, CellProfiler output, h5ad or zarr.")]) -> None:
    """Describe a profile file: shape, metadata columns, feature anatomy."""
    import imgprof as ip

    if not path.exists():
        _fail(f"{path}: no such file or folder.")
    try:
        adata = ip.io.read(path)
    except USER_ERRORS as e:
        msg = _user_error(e)
        _fail(msg if str(path) in msg else f"{path}: {msg}")
    typer.echo(str(adata))
    if "feature_group" in adata.var.columns:
        typer.echo(adata.var.groupby(["compartment", "feature_group"], observed=True).size().to_string())


def main() -> None:  # pragma: no cover - console entry point
    """Console entry point.

    Parameters
    ----------
    None; arguments come from ``sys.argv``.

    Returns
    -------
    None; exits with 0 (success), 1 (unexpected error), 2 (bad config or input) or 130 (Ctrl-C).

    Examples
    --------
    >>> from imgprof.cli import main  # doctest: +SKIP
    >>> main()                        # doctest: +SKIP
    """
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
