"""The steps of a pipeline run, one runner per kind of step, and the run's output files.

Private module of :mod:`imgprof.pipeline`: :data:`RUNNERS` maps a section to the
function that runs it on the :class:`Run` state; ``run_pipeline`` only loops.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .checks import SIMPLE_STEPS
from .config import OUTPUT_FORMATS, Config, ConfigError
from .inputs import read_input


@dataclass
class Run:
    """The state a run's steps share."""

    cfg: Config
    bar: Any
    progress: bool
    verbose: bool
    adata: Any = None
    metrics_tables: list[pd.DataFrame] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=lambda: {"map": {}, "benchmark": None, "warnings": []})
    timings: dict[str, float] = field(default_factory=dict)

    def label(self, text: str) -> None:
        """Show ``text`` on the run's progress bar."""
        self.bar.set_description(f"imgprof run [{text}]")
        self.bar.refresh()


def _batch_key(cfg: Config) -> str:
    for sec in ("benchmark", "integrate", "input"):
        if cfg.sections.get(sec, {}).get("batch_key"):
            return cfg.sections[sec]["batch_key"]
    return "Metadata_Batch"


def embeddings(adata: Any) -> list[str]:
    """The representations to evaluate: every ``X_*`` of ``.obsm`` but UMAP/t-SNE, else ``["X"]``."""
    keys = [k for k in adata.obsm if k.startswith("X_") and k not in ("X_umap", "X_tsne")]
    return keys or ["X"]


def run_input(run: Run, s: str, opts: dict[str, Any]) -> None:
    """[input]: read (and join) the input files."""
    run.adata = read_input(run.cfg, on_file=lambda p: run.label(f"input: {p.name}"))


def run_simple(run: Run, s: str, opts: dict[str, Any]) -> None:
    """A step that is one call ``ip.<module>.<function>(adata, **opts)``; ``[qc] filter`` keeps passing rows."""
    import imgprof as ip

    mod, name = SIMPLE_STEPS[s]
    do_filter = bool(opts.pop("filter", False)) if s == "qc" else False
    res = getattr(getattr(ip, mod), name)(run.adata, **opts)
    if res is not None and hasattr(res, "obs") and hasattr(res, "X"):
        run.adata = res
    if do_filter:
        flag = f"{opts.get('key_added', 'Metadata_qc')}_pass"
        keep = run.adata.obs[flag].to_numpy(dtype=bool)
        if not keep.any():
            raise ConfigError(f"{run.cfg.where(s, 'filter')}: [qc] filter = true would drop every row "
                              f"(no row passes {flag!r}).")
        run.adata = run.adata[keep].copy()


def run_integrate(run: Run, s: str, opts: dict[str, Any]) -> None:
    """[integrate]: ``ip.tl.integrate`` once per method (``params.<method>`` for one method only)."""
    from tqdm.auto import tqdm

    import imgprof as ip

    methods = opts.pop("methods", None) or opts.pop("method")
    opts.pop("method", None)
    methods = [methods] if isinstance(methods, str) else methods
    per_method = opts.pop("params", {}) or {}
    for m in tqdm(methods, desc="integrate", disable=not (run.progress and run.verbose), leave=False):
        run.label(f"integrate: {m}")
        ip.tl.integrate(run.adata, m, **opts, **per_method.get(m, {}))


def run_evaluate(run: Run, s: str, opts: dict[str, Any]) -> None:
    """[evaluate]: mAP against the controls per embedding, and the same-batch share of the 10 nearest wells."""
    import imgprof as ip

    adata = run.adata
    use_reps = opts.pop("use_reps", None) or embeddings(adata)
    opts.pop("use_rep", None)
    batch_key = _batch_key(run.cfg)
    neg = None
    if opts.get("controls") is not None:
        from .._core.validation import resolve_mask

        neg = resolve_mask(adata, opts["controls"], param="controls")
    for rep in use_reps:
        mmap = ip.metrics.phenotypic_activity(adata, use_rep=None if rep == "X" else rep, **opts)
        run.extras["map"][rep] = mmap
        names, values = ["mean_mAP", "fraction_active"], [
            float(mmap["mean_average_precision"].mean()), float(mmap["below_corrected_p"].mean())]
        if batch_key in adata.obs.columns and adata.obs[batch_key].nunique() > 1:
            E = adata.X if rep == "X" else adata.obsm[rep]
            sh = ip.bench.batch_neighbor_share(E, adata.obs[batch_key], k=10, exclude=neg)
            names += ["same_batch_share_10nn", "same_batch_share_expected"]
            values += [sh["share"], sh["expected"]]
        run.metrics_tables.append(pd.DataFrame({"embedding": rep, "metric": names, "value": values}))


def run_benchmark(run: Run, s: str, opts: dict[str, Any]) -> None:
    """[benchmark]: ``ip.bench.Benchmarker`` over the embeddings (negative controls from [evaluate])."""
    import imgprof as ip

    keys = opts.pop("embedding_obsm_keys", None) or embeddings(run.adata)
    if "negcon" not in opts and run.cfg.sections.get("evaluate", {}).get("controls") is not None:
        opts["negcon"] = run.cfg.sections["evaluate"]["controls"]
    opts.setdefault("progress_bar", bool(run.progress and run.verbose))  # nested bars only with --verbose
    bm = ip.bench.Benchmarker(run.adata, embedding_obsm_keys=keys, **opts)
    bm.benchmark()
    run.extras["benchmark"] = bm
    tidy = bm.get_results(tidy=True)  # embedding, metric_type, metric, value
    run.metrics_tables.append(tidy[["embedding", "metric", "value", "metric_type"]])


#: Section → the function that runs it.
RUNNERS: dict[str, Callable[[Run, str, dict[str, Any]], None]] = {
    "input": run_input, **dict.fromkeys(SIMPLE_STEPS, run_simple), "integrate": run_integrate,
    "evaluate": run_evaluate, "benchmark": run_benchmark,
}


def write_outputs(run: Run, formats: list[str], out_dir: Path, write_report: bool) -> tuple[pd.DataFrame, dict[str, str]]:
    """The profiles (each format), metrics, mAP tables, report and run.json, each written atomically."""
    import imgprof as ip

    from ..io._atomic import atomic_path, atomic_write_text

    adata, cfg = run.adata, run.cfg
    files: dict[str, str] = {}
    targets = [out_dir / OUTPUT_FORMATS[f] for f in formats]
    for t in targets:  # refused before anything is written when a format cannot hold the data
        try:
            ip.io.check_writable(adata, t)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"{cfg.where('output', 'format')}: {e}") from e
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(targets):
        ip.io.write_profiles(adata, t)
        files["adata" if i == 0 else f"adata_{formats[i]}"] = str(t)
    metrics = (pd.concat(run.metrics_tables, ignore_index=True) if run.metrics_tables
               else pd.DataFrame(columns=["embedding", "metric", "value"]))
    with atomic_path(out_dir / "metrics.csv") as tmp:
        metrics.to_csv(tmp, index=False)
    files["metrics"] = str(out_dir / "metrics.csv")
    for rep, mmap in run.extras["map"].items():
        p = out_dir / f"map_{rep}.csv"
        with atomic_path(p) as tmp:
            mmap.to_csv(tmp, index=False)
        files[f"map_{rep}"] = str(p)
    if write_report:
        from ..report import write_report as _write_report

        files["report"] = str(_write_report(adata, out_dir / "report.html", metrics=metrics, extras=run.extras,
                                            config=cfg, timings=run.timings))
    atomic_write_text(out_dir / "run.json", json.dumps({"config": str(cfg.path), "timings_s": run.timings, "files": files},
                                                       indent=2))
    return metrics, files
