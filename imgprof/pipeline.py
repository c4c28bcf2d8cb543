"""Declarative whole-pipeline runs: a TOML/YAML config → AnnData, metrics table and HTML report.

A config has one section per step, run in this fixed order when present::

    [input]          path (or paths), kind = auto|profiles|cellprofiler|cytotable|deepprofiler|images, batch_key
    [qc]             → ip.pp.qc
    [aggregate]      → ip.pp.aggregate
    [annotate]       → ip.pp.annotate
    [normalize]      → ip.pp.normalize
    [feature_select] → ip.pp.feature_select
    [pca]            → ip.tl.pca
    [integrate]      methods = [...], batch_key, other keys → ip.tl.integrate per method
    [evaluate]       → ip.metrics.phenotypic_activity (mAP vs controls) per embedding
    [benchmark]      → ip.bench.Benchmarker over the embeddings
    [output]         dir, format = h5ad|zarr, report = true

Every option of a step section is passed to that function as a keyword, after
checking it against the function's signature: an unknown option is reported
with the config line it stands on.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STEP_ORDER = (
    "input", "qc", "aggregate", "annotate", "normalize", "feature_select", "pca",
    "integrate", "evaluate", "benchmark", "output",
)


class ConfigError(ValueError):
    """A problem in a pipeline config; the message names the file and line."""


@dataclass
class Config:
    """A parsed pipeline config with the text it came from (for line numbers)."""

    sections: dict[str, dict[str, Any]]
    path: Path | None = None
    text: str = ""

    def line_of(self, section: str, key: str | None = None) -> int | None:
        """1-based line of ``[section]`` (or of ``key`` inside it), or None."""
        lines = self.text.splitlines()
        start = None
        sec_pat = re.compile(rf"^\s*\[\s*{re.escape(section)}\s*\]\s*$|^\s*{re.escape(section)}\s*:\s*$")
        for i, line in enumerate(lines):
            if sec_pat.match(line):
                start = i
                break
        if start is None:
            return None
        if key is None:
            return start + 1
        key_pat = re.compile(rf"^\s*{re.escape(key)}\s*[=:]")
        for j in range(start + 1, len(lines)):
            if re.match(r"^\s*\[", lines[j]) or (lines[j] and not lines[j][0].isspace() and lines[j].rstrip().endswith(":") and self.path and self.path.suffix in (".yaml", ".yml")):
                break
            if key_pat.match(lines[j]):
                return j + 1
        return start + 1

    def where(self, section: str, key: str | None = None) -> str:
        line = self.line_of(section, key)
        name = str(self.path) if self.path else "<config>"
        return f"{name}, line {line}" if line else name


def load_config(path: str | os.PathLike) -> Config:
    """Read a TOML or YAML pipeline config.

    Relative paths inside ``[input]``/``[annotate]``/``[output]`` are resolved
    against the config file's folder.

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
    if not path.exists():
        raise ConfigError(f"{path}: config file not found.")
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from e
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
    else:
        raise ConfigError(f"{path}: config must be .toml, .yaml or .yml.")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections.")
    cfg = Config(sections={}, path=path, text=text)
    for sec, body in data.items():
        if sec not in STEP_ORDER:
            close = difflib.get_close_matches(sec, STEP_ORDER, n=1)
            hint = f" Did you mean [{close[0]}]?" if close else ""
            raise ConfigError(f"{cfg.where(sec)}: unknown section [{sec}]. Sections: {', '.join(STEP_ORDER)}.{hint}")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ConfigError(f"{cfg.where(sec)}: section [{sec}] must hold key = value options.")
        cfg.sections[sec] = dict(body)
    if "input" not in cfg.sections:
        raise ConfigError(f"{path}: the config needs an [input] section with path = ...")
    base = path.parent
    inp = cfg.sections["input"]
    for key in ("path", "paths"):
        if key in inp:
            vals = inp[key] if isinstance(inp[key], list) else [inp[key]]
            vals = [str((base / v).resolve()) if not Path(v).is_absolute() else v for v in vals]
            inp[key] = vals if isinstance(inp[key], list) else vals[0]
    for key in ("segmenter", "illumination"):
        val = inp.get(key)
        if isinstance(val, str) and not Path(val).is_absolute() and (base / val).exists():
            inp[key] = str((base / val).resolve())
    ann = cfg.sections.get("annotate", {})
    if isinstance(ann.get("platemap"), str) and not Path(ann["platemap"]).is_absolute():
        ann["platemap"] = str((base / ann["platemap"]).resolve())
    out = cfg.sections.setdefault("output", {})
    out["dir"] = str((base / out.get("dir", "imgprof-out")).resolve()) if not Path(out.get("dir", "imgprof-out")).is_absolute() else out["dir"]
    return cfg


def _check_kwargs(cfg: Config, section: str, func, options: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    sig = inspect.signature(func)
    params = sig.parameters
    accepts_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in options:
        if key in skip:
            continue
        if key not in params and not accepts_var_kw:
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            valid = [p for p in params if p not in ("adata", "copy", "ap")]
            raise ConfigError(f"{cfg.where(section, key)}: [{section}] has no option {key!r}.{hint} Valid options: {valid}.")


@dataclass
class RunResult:
    """What :func:`run_pipeline` produced."""

    adata: Any
    metrics: Any
    files: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def _read_input(cfg: Config):
    import anndata as ad

    from . import io as ipio

    inp = dict(cfg.sections["input"])
    paths = inp.pop("paths", None) or inp.pop("path", None)
    if paths is None:
        raise ConfigError(f"{cfg.where('input')}: [input] needs path = \"...\" (or paths = [...]).")
    paths = paths if isinstance(paths, list) else [paths]
    kind = inp.pop("kind", "auto")
    batch_key = inp.pop("batch_key", "Metadata_Batch")
    join = inp.pop("join", "inner")
    parts = []
    for p in paths:
        pth = Path(p)
        if not pth.exists():
            raise ConfigError(f"{cfg.where('input', 'path' if 'path' in cfg.sections['input'] else 'paths')}: input {p} does not exist.")
        k = kind
        if k == "auto":
            name = pth.name.lower()
            if pth.is_dir():
                k = "images" if any(pth.glob("*.tif*")) and not any(pth.glob("Cells.csv*")) else "cellprofiler"
            elif name.endswith((".sqlite", ".db")):
                k = "cellprofiler"
            elif name.endswith(".npz"):
                k = "deepprofiler"
            elif name.endswith((".gct", ".gct.gz")):
                k = "gct"
            else:
                k = "profiles"
        readers = {
            "profiles": lambda q, **kw: ipio.read_profiles(q, **kw),
            "cellprofiler": lambda q, **kw: ipio.read_cellprofiler(q, **kw),
            "cytotable": lambda q, **kw: ipio.read_cytotable(q, **kw),
            "deepprofiler": lambda q, **kw: ipio.read_deepprofiler(q, **kw),
            "gct": lambda q, **kw: ipio.read_gct(q, **kw),
            "images": _read_images_to_cells,
        }
        if k not in readers:
            raise ConfigError(f"{cfg.where('input', 'kind')}: unknown input kind {k!r}; use one of {sorted(readers)} or auto.")
        a = readers[k](str(pth), **inp)
        if len(paths) > 1:
            a.obs[batch_key] = pth.name.split(".")[0]
            a.obs_names = [f"{pth.name.split('.')[0]}:{i}" for i in a.obs_names]
        parts.append(a)
    if len(parts) == 1:
        return parts[0]
    var = parts[0].var
    adata = ad.concat(parts, join=join, merge="first")
    adata.var = var.loc[adata.var_names] if set(adata.var_names) <= set(var.index) else adata.var
    adata.uns["imgprof"] = {"level": parts[0].uns.get("imgprof", {}).get("level", "well"), "steps": parts[0].uns.get("imgprof", {}).get("steps", {})}
    return adata


def _read_images_to_cells(path: str, **kwargs):
    from . import im

    return im.profile_images(path, **kwargs)


def _embeddings(adata) -> list[str]:
    keys = [k for k in adata.obsm.keys() if k.startswith("X_") and k not in ("X_umap", "X_tsne")]
    return keys or ["X"]


def run_pipeline(config: str | os.PathLike | Config, *, progress: bool = True) -> RunResult:
    """Run a declared pipeline and write the AnnData, a tidy metrics table and an HTML report.

    Parameters
    ----------
    config
        Path to a TOML/YAML config, or a :class:`Config`.
    progress
        Show progress bars on long steps.

    Returns
    -------
    :class:`RunResult` with the processed AnnData, the metrics DataFrame and the written files.

    Examples
    --------
    >>> import imgprof as ip
    >>> from imgprof.pipeline import write_demo_config, run_pipeline
    >>> res = run_pipeline(write_demo_config("demo-run"), progress=False)   # doctest: +SKIP
    >>> res.files["report"]                                                # doctest: +SKIP
    'demo-run/report.html'
    """
    import pandas as pd
    from tqdm.auto import tqdm

    import imgprof as ip

    cfg = config if isinstance(config, Config) else load_config(config)
    steps = [s for s in STEP_ORDER if s in cfg.sections and s != "output"]
    out_cfg = cfg.sections.get("output", {})
    out_dir = Path(out_cfg.get("dir", "imgprof-out"))
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    metrics_tables: list[pd.DataFrame] = []
    extras: dict[str, Any] = {"map": {}, "benchmark": None}

    simple = {
        "qc": ("pp", "qc"), "aggregate": ("pp", "aggregate"), "annotate": ("pp", "annotate"),
        "normalize": ("pp", "normalize"), "feature_select": ("pp", "feature_select"), "pca": ("tl", "pca"),
    }
    # Validate every section before any heavy work starts.
    for s in steps:
        if s in simple:
            mod, name = simple[s]
            func = getattr(getattr(ip, mod), name, None)
            if func is None:
                raise ConfigError(f"{cfg.where(s)}: step [{s}] is not available in this imgprof build (ip.{mod}.{name} missing).")
            _check_kwargs(cfg, s, func, cfg.sections[s])
        elif s == "integrate":
            opts = cfg.sections[s]
            if "methods" not in opts and "method" not in opts:
                raise ConfigError(f"{cfg.where(s)}: [integrate] needs methods = [\"harmony\", ...].")
            _check_kwargs(cfg, s, ip.tl.integrate, opts, skip=("methods", "method", "params"))
            from ._core.optional import MissingDependencyError, require_methods

            try:  # optional packages (scanorama, scvi) are checked before any step runs
                require_methods(opts.get("methods") or [opts.get("method")], purpose=f"{cfg.where(s)}: [integrate]")
            except MissingDependencyError as e:
                raise ConfigError(str(e)) from None
        elif s == "evaluate":
            _check_kwargs(cfg, s, ip.metrics.phenotypic_activity, cfg.sections[s], skip=("use_reps",))
        elif s == "benchmark":
            _check_kwargs(cfg, s, ip.bench.Benchmarker, cfg.sections[s], skip=("embedding_obsm_keys",))

    bar = tqdm(total=len(steps) + 1, desc="imgprof run", disable=not progress)
    t0 = time.perf_counter()
    adata = _read_input(cfg)
    timings["input"] = time.perf_counter() - t0
    bar.update(1)
    for s in steps:
        if s == "input":
            continue
        bar.set_postfix_str(s)
        t0 = time.perf_counter()
        opts = dict(cfg.sections[s])
        try:
            if s in simple:
                mod, name = simple[s]
                res = getattr(getattr(ip, mod), name)(adata, **opts)
                if res is not None and hasattr(res, "obs") and hasattr(res, "X"):
                    adata = res
            elif s == "integrate":
                methods = opts.pop("methods", None) or [opts.pop("method")]
                per_method = opts.pop("params", {}) or {}
                for m in tqdm(methods, desc="integrate", disable=not progress, leave=False):
                    ip.tl.integrate(adata, m, **opts, **per_method.get(m, {}))
            elif s == "evaluate":
                use_reps = opts.pop("use_reps", None) or _embeddings(adata)
                opts.pop("use_rep", None)
                for rep in use_reps:
                    mmap = ip.metrics.phenotypic_activity(adata, use_rep=None if rep == "X" else rep, **opts)
                    extras["map"][rep] = mmap
                    metrics_tables.append(pd.DataFrame({
                        "embedding": rep, "metric": ["mean_mAP", "fraction_active"],
                        "value": [float(mmap["mean_average_precision"].mean()), float(mmap["below_corrected_p"].mean())],
                    }))
            elif s == "benchmark":
                keys = opts.pop("embedding_obsm_keys", None) or _embeddings(adata)
                bm = ip.bench.Benchmarker(adata, embedding_obsm_keys=keys, **opts)
                bm.benchmark()
                extras["benchmark"] = bm
                tidy = bm.get_results(tidy=True)  # embedding, metric_type, metric, value
                metrics_tables.append(tidy[["embedding", "metric", "value", "metric_type"]])
        except ConfigError:
            raise
        except (KeyError, ValueError, TypeError) as e:
            raise ConfigError(f"{cfg.where(s)}: step [{s}] failed: {e}") from e
        timings[s] = time.perf_counter() - t0
        bar.update(1)
    bar.close()

    files: dict[str, str] = {}
    fmt = out_cfg.get("format", "h5ad")
    adata_path = out_dir / f"profiles.{fmt}"
    if fmt == "h5ad":
        adata.write_h5ad(adata_path)
    elif fmt == "zarr":
        adata.write_zarr(adata_path)
    else:
        raise ConfigError(f"{cfg.where('output', 'format')}: format must be h5ad or zarr, got {fmt!r}.")
    files["adata"] = str(adata_path)
    metrics = pd.concat(metrics_tables, ignore_index=True) if metrics_tables else pd.DataFrame(columns=["embedding", "metric", "value"])
    metrics_path = out_dir / "metrics.csv"
    metrics.to_csv(metrics_path, index=False)
    files["metrics"] = str(metrics_path)
    for rep, mmap in extras["map"].items():
        p = out_dir / f"map_{rep}.csv"
        mmap.to_csv(p, index=False)
        files[f"map_{rep}"] = str(p)
    if out_cfg.get("report", True):
        from .report import write_report

        files["report"] = str(write_report(adata, out_dir / "report.html", metrics=metrics, extras=extras, config=cfg, timings=timings))
    (out_dir / "run.json").write_text(json.dumps({"config": str(cfg.path), "timings_s": timings, "files": files}, indent=2))
    return RunResult(adata=adata, metrics=metrics, files=files, timings=timings)


def demo_config_text(out_dir: str = "imgprof-demo") -> str:
    """The demo pipeline on bundled real data: two cmQTL CRISPRi batches, corrected and evaluated."""
    from .datasets.real import CMQTL_FILES, data_path

    paths = ", ".join(f'"{data_path("cmqtl", f)}"' for f in CMQTL_FILES)
    return f"""# imgprof demo: two real batches of a CRISPRi Cell Painting plate (cmQTL), bundled with imgprof.
[input]
paths = [{paths}]
batch_key = "Metadata_Batch"

[normalize]
method = "mad_robustize"
controls = "Metadata_target_gene == 'CONTROL'"
by = "Metadata_Batch"

[feature_select]
operation = ["variance_threshold", "correlation_threshold", "drop_na_columns", "blocklist"]

[pca]
n_comps = 30

[integrate]
methods = ["none", "harmony", "combat", "sphering"]
batch_key = "Metadata_Batch"

[integrate.params.sphering]          # options for one method only
controls = "Metadata_target_gene == 'CONTROL'"
label_key = "Metadata_target_gene"   # epsilon chosen from a grid by replicate retrieval

[evaluate]
perturbation_key = "Metadata_target_gene"
controls = "Metadata_target_gene == 'CONTROL'"
null_size = 2000
seed = 0

[benchmark]
batch_key = "Metadata_Batch"
label_key = "Metadata_target_gene"

[output]
dir = "{out_dir}"
format = "h5ad"
"""


def write_demo_config(out_dir: str | os.PathLike = "imgprof-demo") -> Path:
    """Write the demo config into ``out_dir/demo.toml`` and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = out_dir / "demo.toml"
    p.write_text(demo_config_text(str(out_dir.resolve())))
    return p
