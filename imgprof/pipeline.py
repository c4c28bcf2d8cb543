"""Declarative whole-pipeline runs: a TOML/YAML config → AnnData, metrics table and HTML report.

A config has one section per step, run in this fixed order when present::

    [input]          path (or paths), kind = auto|profiles|cellprofiler|cytotable|deepprofiler|gct|images,
                     batch_key, batch_names (one per path; default the file stems), reader options
    [qc]             → ip.pp.qc; filter = true keeps only the rows that pass (``<key_added>_pass``)
    [aggregate]      → ip.pp.aggregate
    [annotate]       → ip.pp.annotate
    [normalize]      → ip.pp.normalize
    [feature_select] → ip.pp.feature_select
    [consensus]      → ip.pp.consensus (one row per group; returns a new AnnData)
    [pca]            → ip.tl.pca
    [integrate]      methods = [...], batch_key, other keys → ip.tl.integrate per method
    [evaluate]       → ip.metrics.phenotypic_activity (mAP vs controls) per embedding
    [benchmark]      → ip.bench.Benchmarker over the embeddings
    [output]         dir, format = h5ad|zarr|parquet|csv (or a list of them), report = true

Every option of a step section is passed to that function as a keyword, after
checking it against the function's signature and its type hints: an unknown
option, a wrong type, an unknown method or a missing optional package is
reported with the config file and line before any work starts.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._pipeline.checks import integration_methods, validate_sections
from ._pipeline.config import OUTPUT_FORMATS, STEP_ORDER, Config, ConfigError, output_formats, parse_config, resolve_paths
from ._pipeline.steps import RUNNERS, Run, write_outputs

__all__ = [
    "OUTPUT_FORMATS",
    "STEP_ORDER",
    "Config",
    "ConfigError",
    "RunResult",
    "demo_config_text",
    "integration_methods",
    "load_config",
    "run_pipeline",
    "validate_config",
    "write_demo_config",
]


def load_config(path: str | os.PathLike) -> Config:
    """Read a TOML or YAML pipeline config.

    Relative paths inside ``[input]``/``[annotate]``/``[output]`` are resolved
    against the config file's folder.

    Parameters
    ----------
    path
        A ``.toml``, ``.yaml`` or ``.yml`` file.

    Returns
    -------
    :class:`Config` with one dict of options per section. Raises :class:`ConfigError` (naming the
    file and line) for a missing or unreadable file, invalid TOML/YAML, an unknown section, or
    paths that are not strings. :func:`validate_config` checks the options themselves.

    Examples
    --------
    >>> from imgprof.pipeline import load_config, demo_config_text
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "demo.toml")
    >>> _ = open(p, "w").write(demo_config_text())
    >>> sorted(load_config(p).sections)[:3]
    ['benchmark', 'evaluate', 'feature_select']
    """

    path = Path(path)
    cfg = parse_config(path)
    resolve_paths(cfg, path.parent)
    return cfg


def validate_config(cfg: Config) -> None:
    """Check every section of a config before any work starts.

    Checks option names against each step's signature, option types against its type hints,
    ``[input]`` paths (present, one batch name per path), integration methods (known, optional
    package installed), ``[qc] filter``, ``[output]`` format, dir and report. Every problem raises
    :class:`ConfigError` naming the config file and line.

    Parameters
    ----------
    cfg
        A config from :func:`load_config`.

    Returns
    -------
    None; raises :class:`ConfigError` on the first problem.

    Examples
    --------
    >>> import os, tempfile
    >>> from imgprof.pipeline import load_config, validate_config, write_demo_config
    >>> validate_config(load_config(write_demo_config(tempfile.mkdtemp())))
    """

    validate_sections(cfg)


@dataclass
class RunResult:
    """What :func:`run_pipeline` produced."""

    adata: Any
    metrics: Any
    files: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    benchmarker: Any = None
    warnings: list = field(default_factory=list)


def run_pipeline(config: str | os.PathLike | Config, *, progress: bool = True, verbose: bool = False) -> RunResult:
    """Run a declared pipeline and write the AnnData, a tidy metrics table and an HTML report.

    The whole config is validated first (:func:`validate_config`); every output file is
    written atomically (temporary file + rename), so a failed run never leaves half a file.

    Parameters
    ----------
    config
        Path to a TOML/YAML config, or a :class:`Config`.
    progress
        Show the run's progress bar (one tick per step plus one for the outputs; its label
        names the step running) and the progress inside long steps (reading a CellProfiler
        SQLite, aggregating a parquet/zarr file, ``im.profile_images``, approximate neighbours).
    verbose
        Also show the nested bars of the integration and benchmark steps.

    Returns
    -------
    :class:`RunResult` with the processed AnnData, the metrics DataFrame and the written files.

    Examples
    --------
    >>> from imgprof.pipeline import write_demo_config, run_pipeline
    >>> res = run_pipeline(write_demo_config("demo-run"), progress=False)   # doctest: +SKIP
    >>> res.files["report"]                                                # doctest: +SKIP
    'demo-run/report.html'
    """

    from ._core.progress import show_progress

    # the long steps (SQLite reads, aggregate from a file, profile_images, neighbours) show their own bars too
    with show_progress(bool(progress)):
        return _run_pipeline(config, progress=progress, verbose=verbose)


def _relay(run: Run, section: str, caught: list) -> None:
    """Keep every warning of a step for the report and show it pointing at the user's config line."""
    cfg = run.cfg
    for w in caught:
        run.extras["warnings"].append({"step": section, "category": w.category.__name__, "message": str(w.message)})
    for w in caught:
        warnings.warn_explicit(
            f"[{section}] {w.message}", w.category, filename=str(cfg.path) if cfg.path else "<config>",
            lineno=cfg.line_of(section) or 0, module="imgprof.pipeline",
        )


def _run_step(run: Run, s: str) -> None:
    """Run one section; its warnings are relayed, a KeyError/ValueError/TypeError names the section."""
    run.label(s)  # the step's name shows while a long step runs
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            RUNNERS[s](run, s, dict(run.cfg.sections[s]))
        except ConfigError:
            raise
        except (KeyError, ValueError, TypeError) as e:
            raise ConfigError(f"{run.cfg.where(s)}: step [{s}] failed: {e}") from e
    _relay(run, s, caught)
    run.timings[s] = time.perf_counter() - t0
    run.bar.update(1)


def _run_pipeline(config: str | os.PathLike | Config, *, progress: bool, verbose: bool) -> RunResult:
    from tqdm.auto import tqdm

    cfg = config if isinstance(config, Config) else load_config(config)
    steps = [s for s in STEP_ORDER if s in cfg.sections and s != "output"]
    out_cfg = cfg.sections.get("output", {})
    # Validate every section (names, types, methods, optional packages, output formats) before any work.
    validate_config(cfg)
    formats = output_formats(cfg)
    bar = tqdm(total=len(steps) + 1, desc="imgprof run", disable=not progress)
    run = Run(cfg=cfg, bar=bar, progress=progress, verbose=verbose)
    for s in steps:
        _run_step(run, s)
    # Outputs: refused before anything is written when a format cannot hold the data (zarr keys
    # differing by case, obs/feature name clashes in tables); each file written atomically.
    run.label("output")
    metrics, files = write_outputs(run, formats, Path(out_cfg.get("dir", "imgprof-out")), bool(out_cfg.get("report", True)))
    bar.update(1)
    bar.set_description("imgprof run")
    bar.close()
    return RunResult(adata=run.adata, metrics=metrics, files=files, timings=run.timings,
                     benchmarker=run.extras["benchmark"], warnings=list(run.extras["warnings"]))


def demo_config_text(out_dir: str = "imgprof-demo") -> str:
    """The demo pipeline on bundled real data: two cmQTL CRISPRi batches, corrected and evaluated."""
    from .datasets.real import CMQTL_FILES, data_path

    paths = ", ".join(f'"{data_path("cmqtl", f)}"' for f in CMQTL_FILES)
    return f"""# imgprof demo: two real batches of a CRISPRi Cell Painting plate (cmQTL), bundled with imgprof.
# The same plate layout was imaged twice (a batch and its rerun): a batch-correction method should mix the
# two batches while keeping the target-gene replicates together.
[input]
paths = [{paths}]
batch_key = "Metadata_Batch"

[normalize]
# Before comparing batch corrections, standardize every feature within each batch (all wells), as the
# field does before integration. (Robust scaling against the CONTROL wells alone lets a few features with
# near-constant controls carry almost all the variance; imgprof warns when that happens.)
method = "standardize"
by = "Metadata_Batch"

[feature_select]
# drop_outliers removes features with |value| > outlier_cutoff (no feature should dominate the distances)
operation = ["variance_threshold", "correlation_threshold", "drop_na_columns", "blocklist", "drop_outliers"]
outlier_cutoff = 100

[pca]
n_comps = 30                         # X_pca: the uncorrected baseline of harmony, in the same space

[integrate]
methods = ["none", "harmony", "combat", "mnn", "rpca", "sphering"]
batch_key = "Metadata_Batch"

[integrate.params.sphering]          # options for one method only
controls = "Metadata_target_gene == 'CONTROL'"
criterion = "control_likelihood"     # epsilon chosen label-free (not on the gene label it is scored on)

[evaluate]
perturbation_key = "Metadata_target_gene"
controls = "Metadata_target_gene == 'CONTROL'"
# p-values: label permutation (exact where enumerable, else null_size random labelings, (k+1)/(N+1));
# each gene has ~112 replicate wells here, so 500 labelings (smallest p = 1/501) keep the demo quick.
null_size = 500
seed = 0

[benchmark]
batch_key = "Metadata_Batch"
label_key = "Metadata_target_gene"

[output]
dir = "{out_dir}"
format = "h5ad"
"""


def write_demo_config(out_dir: str | os.PathLike = "imgprof-demo") -> Path:
    """Write the demo config into ``out_dir/demo.toml`` and return its path.

    Parameters
    ----------
    out_dir
        Folder for the config and the run's outputs (created when missing).

    Returns
    -------
    The config's :class:`~pathlib.Path` (written atomically).

    Examples
    --------
    >>> import tempfile
    >>> from imgprof.pipeline import write_demo_config
    >>> write_demo_config(tempfile.mkdtemp()).name
    'demo.toml'
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = out_dir / "demo.toml"
    from .io._atomic import atomic_write_text

    atomic_write_text(p, demo_config_text(str(out_dir.resolve())))
    return p
