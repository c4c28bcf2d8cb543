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
    "input", "qc", "aggregate", "annotate", "normalize", "feature_select", "consensus", "pca",
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
    if not path.exists():
        raise ConfigError(f"{path}: config file not found.")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give the config file (.toml, .yaml or .yml).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: the config is not UTF-8 text ({e}).") from e
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
    _check_path_options(cfg)
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


def _check_path_options(cfg: Config) -> None:
    """Paths in [input], [annotate] and [output] must be strings (a TOML number is not a path)."""
    inp = cfg.sections["input"]
    if "path" in inp and "paths" in inp:
        raise ConfigError(f"{cfg.where('input', 'paths')}: [input] has both path and paths; keep one.")
    if "path" not in inp and "paths" not in inp:
        raise ConfigError(f"{cfg.where('input')}: [input] needs path = \"...\" (or paths = [...]).")
    if "path" in inp and not isinstance(inp["path"], str):
        hint = " (use paths = [...] for several files)" if isinstance(inp["path"], list) else ""
        raise ConfigError(f"{cfg.where('input', 'path')}: [input] path must be a quoted file name, got {inp['path']!r}{hint}.")
    if "paths" in inp:
        vals = inp["paths"]
        if isinstance(vals, str):
            vals = inp["paths"] = [vals]
        if not isinstance(vals, list) or not vals or not all(isinstance(v, str) for v in vals):
            raise ConfigError(f"{cfg.where('input', 'paths')}: [input] paths must be a list of quoted file names, got {vals!r}.")
    for sec, key in (("annotate", "platemap"), ("output", "dir")):
        val = cfg.sections.get(sec, {}).get(key)
        if val is not None and not isinstance(val, str):
            raise ConfigError(f"{cfg.where(sec, key)}: [{sec}] {key} must be a quoted path, got {val!r}.")


def _check_kwargs(cfg: Config, section: str, func, options: dict[str, Any], skip: tuple[str, ...] = (),
                  given: tuple[str, ...] = ("adata", "self", "method")) -> None:
    sig = inspect.signature(func)
    params = sig.parameters
    accepts_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key, value in options.items():
        if key in skip:
            continue
        if key not in params and not accepts_var_kw:
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            valid = [p for p in params if p not in ("adata", "copy", "ap")]
            raise ConfigError(f"{cfg.where(section, key)}: [{section}] has no option {key!r}.{hint} Valid options: {valid}.")
        if key in params:
            _check_type(cfg, section, key, value, params[key])
    for name, p in params.items():
        # A required argument the config does not give fails only after the work before it: say so now.
        if (p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and name not in options and name not in given and name not in skip and list(params).index(name) > 0):
            raise ConfigError(f"{cfg.where(section)}: [{section}] needs {name} = ... (a required option).")


_SCALARS = {"int", "float", "str", "bool", "None"}


def _check_type(cfg: Config, section: str, key: str, value: Any, param: inspect.Parameter) -> None:
    """Refuse a config value whose type the function's hint cannot accept (``n_comps = "thirty"``)."""
    ann = param.annotation
    if ann is inspect.Parameter.empty:
        return
    ann = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    lit = re.fullmatch(r"\s*Literal\[(.*)\]\s*(\|\s*None\s*)?", ann)
    if lit:
        import ast

        try:
            allowed = ast.literal_eval(f"[{lit.group(1)}]")
        except (ValueError, SyntaxError):
            return
        if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed if a == value):
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{cfg.where(section, key)}: [{section}] {key} must be one of {allowed}, got {value!r}.{hint}")
        return
    tokens = set(re.findall(r"[A-Za-z_][A-Za-z_0-9.]*", ann))
    if not tokens or not tokens <= _SCALARS:
        return  # sequences, mappings, literals, arrays: the function checks them itself
    ok = {
        bool: "bool" in tokens,
        int: bool(tokens & {"int", "float"}),
        float: "float" in tokens,
        str: "str" in tokens,
    }
    kind = next((t for t in (bool, int, float, str) if isinstance(value, t)), None)
    if kind is not None and ok[kind]:
        return
    want = " or ".join(sorted(
        {"int": "an integer", "float": "a number", "str": "a quoted string", "bool": "true/false"}[t]
        for t in tokens if t != "None"
    ))
    raise ConfigError(f"{cfg.where(section, key)}: [{section}] {key} must be {want}, got {value!r}.")


def _require(cfg: Config, section: str, key: str, what: str) -> None:
    """Refuse a method or input kind whose optional package is missing (the one check in _core.optional)."""
    from ._core.optional import MissingDependencyError, require, require_methods

    try:
        if what == "images":
            require("cp_measure", extra="im", pip_name="cp-measure", purpose=f"[{section}] {key} = 'images'")
        else:
            require_methods([what], purpose=f"[{section}] {key}")
    except MissingDependencyError as e:
        raise ConfigError(f"{cfg.where(section, key)}: {e}") from None


#: Output formats of [output] format: format → file name of the profiles.
OUTPUT_FORMATS: dict[str, str] = {"h5ad": "profiles.h5ad", "zarr": "profiles.zarr", "parquet": "profiles.parquet",
                                  "csv": "profiles.csv", "csv.gz": "profiles.csv.gz", "tsv": "profiles.tsv"}

_INPUT_KEYS = ("path", "paths", "kind", "batch_key", "join", "batch_names")
_INPUT_KINDS = ("auto", "profiles", "cellprofiler", "cytotable", "deepprofiler", "gct", "images")


def _input_kind(path: Path, kind: str) -> str:
    if kind != "auto":
        return kind
    from .io.profiles import reader_for

    try:
        name = reader_for(path)
    except ValueError:
        return "profiles"
    return {"read_cellprofiler": "cellprofiler", "read_gct": "gct", "read_gctx": "gctx", "read_deepprofiler": "deepprofiler",
            "read_images": "images", "read_cytotable": "cytotable"}.get(name, "profiles")


def _reader(kind: str):
    from . import io as ipio

    return {
        "profiles": ipio.read_profiles, "cellprofiler": ipio.read_cellprofiler, "cytotable": ipio.read_cytotable,
        "deepprofiler": ipio.read_deepprofiler, "gct": ipio.read_gct, "gctx": ipio.read_gctx,
        "images": _read_images_to_cells,
    }[kind]


def _output_formats(cfg: Config) -> list[str]:
    out = cfg.sections.get("output", {})
    fmt = out.get("format", "h5ad")
    fmts = fmt if isinstance(fmt, list) else [fmt]
    if not fmts or not all(isinstance(f, str) for f in fmts):
        raise ConfigError(f"{cfg.where('output', 'format')}: [output] format must be one of {sorted(OUTPUT_FORMATS)} "
                          f"(or a list of them), got {fmt!r}.")
    for f in fmts:
        if f.lower().lstrip(".") not in OUTPUT_FORMATS:
            close = difflib.get_close_matches(f.lower(), list(OUTPUT_FORMATS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{cfg.where('output', 'format')}: [output] format {f!r} is not one of "
                              f"{sorted(OUTPUT_FORMATS)}.{hint}")
    return [f.lower().lstrip(".") for f in fmts]


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
    import imgprof as ip

    steps = [s for s in STEP_ORDER if s in cfg.sections and s != "output"]
    # [input]
    inp = cfg.sections["input"]
    kind = inp.get("kind", "auto")
    if kind not in _INPUT_KINDS:
        close = difflib.get_close_matches(str(kind), _INPUT_KINDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{cfg.where('input', 'kind')}: unknown input kind {kind!r}; use one of {list(_INPUT_KINDS)}.{hint}")
    paths = inp.get("paths") or [inp.get("path")]
    key = "path" if "path" in inp else "paths"
    for p in paths:
        if not Path(p).exists():
            raise ConfigError(f"{cfg.where('input', key)}: input {p} does not exist.")
    for k in ("batch_key", "join"):
        if k in inp and not isinstance(inp[k], str):
            raise ConfigError(f"{cfg.where('input', k)}: [input] {k} must be a quoted string, got {inp[k]!r}.")
    if inp.get("join", "inner") not in ("inner", "outer"):
        raise ConfigError(f"{cfg.where('input', 'join')}: [input] join must be 'inner' or 'outer', got {inp['join']!r}.")
    if "batch_names" in inp:
        names = inp["batch_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"{cfg.where('input', 'batch_names')}: [input] batch_names must be a list of names, got {names!r}.")
        if len(names) != len(paths):
            raise ConfigError(f"{cfg.where('input', 'batch_names')}: [input] batch_names has {len(names)} names for "
                              f"{len(paths)} input file(s); give one per path.")
        if len(set(names)) != len(names):
            raise ConfigError(f"{cfg.where('input', 'batch_names')}: [input] batch_names must be unique, got {names!r}.")
    reader_opts = {k: v for k, v in inp.items() if k not in _INPUT_KEYS}
    for kd in sorted({_input_kind(Path(p), kind) for p in paths}):
        _require(cfg, "input", "kind", kd)
        func = _reader(kd)
        if kd == "images":
            from .im import profile_images as func
        try:
            _check_kwargs(cfg, "input", func, reader_opts)
        except ConfigError as e:
            raise ConfigError(f"{e} (reader ip.io.{getattr(func, '__name__', kd)}; [input] also takes {list(_INPUT_KEYS)})") from None
    # steps
    simple = _SIMPLE_STEPS
    for s in steps:
        if s in simple:
            mod, name = simple[s]
            func = getattr(getattr(ip, mod), name, None)
            if func is None:
                raise ConfigError(f"{cfg.where(s)}: step [{s}] is not available in this imgprof build (ip.{mod}.{name} missing).")
            opts = cfg.sections[s]
            if s == "qc" and "filter" in opts and not isinstance(opts["filter"], bool):
                raise ConfigError(f"{cfg.where(s, 'filter')}: [qc] filter must be true or false, got {opts['filter']!r}.")
            _check_kwargs(cfg, s, func, opts, skip=("filter",) if s == "qc" else ())
        elif s == "integrate":
            opts = cfg.sections[s]
            if "methods" not in opts and "method" not in opts:
                raise ConfigError(f"{cfg.where(s)}: [integrate] needs methods = [\"harmony\", ...].")
            key = "methods" if "methods" in opts else "method"
            methods = opts[key]
            if isinstance(methods, str):
                # One name, not a sequence of letters ('h', 'a', ...): accept it as a one-method list.
                methods = [methods]
            if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
                raise ConfigError(f"{cfg.where(s, key)}: [integrate] {key} must be a list of method names, e.g. "
                                  f"methods = [\"harmony\", \"combat\"], got {opts[key]!r}.")
            known = list(_integrate_methods())
            for m in methods:
                if m.lower() not in known:
                    close = difflib.get_close_matches(m.lower(), known, n=1)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    raise ConfigError(f"{cfg.where(s, key)}: [integrate] unknown method {m!r}; choose from {known}.{hint}")
                _require(cfg, s, key, m.lower())
            params = opts.get("params", {}) or {}
            if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
                raise ConfigError(f"{cfg.where(s, 'params')}: [integrate.params.<method>] must hold key = value options.")
            for m in params:
                if m not in methods:
                    raise ConfigError(f"{cfg.where(s)}: [integrate.params.{m}] is for a method not in {key} = {methods}.")
            from .tl.integrate import get_method

            own = set(inspect.signature(ip.tl.integrate).parameters)
            for m in methods:
                func = get_method(m)
                extra = {k: v for k, v in opts.items() if k not in own and k not in ("methods", "method", "params")}
                _check_kwargs(cfg, s, func, extra, given=tuple(own) + ("adata",))
                mparams = {k: v for k, v in (params.get(m) or {}).items() if k not in own}
                try:
                    _check_kwargs(cfg, s, func, mparams, given=tuple(own) + ("adata",))
                except ConfigError as e:
                    raise ConfigError(f"{e} (in [integrate.params.{m}])") from None
            _check_kwargs(cfg, s, ip.tl.integrate, opts, skip=("methods", "method", "params"))
        elif s == "evaluate":
            _check_kwargs(cfg, s, ip.metrics.phenotypic_activity, cfg.sections[s], skip=("use_reps",))
        elif s == "benchmark":
            _check_kwargs(cfg, s, ip.bench.Benchmarker, cfg.sections[s], skip=("embedding_obsm_keys",))
    # [output]
    out = cfg.sections.get("output", {})
    for k in out:
        if k not in ("dir", "format", "report"):
            close = difflib.get_close_matches(k, ["dir", "format", "report"], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{cfg.where('output', k)}: [output] has no option {k!r}.{hint} Valid options: ['dir', 'format', 'report'].")
    if "report" in out and not isinstance(out["report"], bool):
        raise ConfigError(f"{cfg.where('output', 'report')}: [output] report must be true or false, got {out['report']!r}.")
    _output_formats(cfg)
    out_dir = Path(out.get("dir", "imgprof-out"))
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{cfg.where('output', 'dir')}: [output] dir {out_dir} exists and is a file, not a folder.")
    for f in _output_formats(cfg):
        target = out_dir / OUTPUT_FORMATS[f]
        if target.exists() and target.is_dir() != (f == "zarr"):
            raise ConfigError(f"{cfg.where('output', 'format')}: output {target} exists and is a "
                              f"{'folder' if target.is_dir() else 'file'}; remove it or choose another dir.")


def _integrate_methods() -> tuple[str, ...]:
    from .tl.integrate import METHODS

    return METHODS


_SIMPLE_STEPS = {
    "qc": ("pp", "qc"), "aggregate": ("pp", "aggregate"), "annotate": ("pp", "annotate"),
    "normalize": ("pp", "normalize"), "feature_select": ("pp", "feature_select"), "consensus": ("pp", "consensus"),
    "pca": ("tl", "pca"),
}


@dataclass
class RunResult:
    """What :func:`run_pipeline` produced."""

    adata: Any
    metrics: Any
    files: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    benchmarker: Any = None
    warnings: list = field(default_factory=list)


def _read_input(cfg: Config, on_file=None):
    import anndata as ad

    inp = dict(cfg.sections["input"])
    paths = inp.pop("paths", None) or inp.pop("path", None)
    if paths is None:
        raise ConfigError(f"{cfg.where('input')}: [input] needs path = \"...\" (or paths = [...]).")
    paths = paths if isinstance(paths, list) else [paths]
    kind = inp.pop("kind", "auto")
    batch_key = inp.pop("batch_key", "Metadata_Batch")
    join = inp.pop("join", "inner")
    batch_names = inp.pop("batch_names", None) or [Path(p).name.split(".")[0] for p in paths]
    if len(paths) > 1 and len(set(batch_names)) != len(batch_names):
        raise ConfigError(f"{cfg.where('input', 'paths')}: two inputs have the same file stem {batch_names}; "
                          "set [input] batch_names = [...] (one per path).")
    key = "path" if "path" in cfg.sections["input"] else "paths"
    parts = []
    for p, bname in zip(paths, batch_names):
        pth = Path(p)
        if not pth.exists():
            raise ConfigError(f"{cfg.where('input', key)}: input {p} does not exist.")
        k = _input_kind(pth, kind)
        if k not in ("profiles", "cellprofiler", "cytotable", "deepprofiler", "gct", "gctx", "images"):
            raise ConfigError(f"{cfg.where('input', 'kind')}: unknown input kind {k!r}; use one of {list(_INPUT_KINDS)}.")
        if on_file is not None:
            on_file(pth)  # e.g. name the file on the progress bar while a large input is read
        try:
            a = _reader(k)(str(pth), **inp)
        except (ValueError, TypeError, KeyError, OSError, EOFError) as e:
            raise ConfigError(f"{cfg.where('input', key)}: could not read the input: {e}") from e
        if len(paths) > 1:
            a.obs[batch_key] = bname
            a.obs_names = [f"{bname}:{i}" for i in a.obs_names]
        parts.append(a)
    inputs = {
        "files": [str(p) for p in paths],
        "n_obs": [int(a.n_obs) for a in parts],
        "n_vars": [int(a.n_vars) for a in parts],
    }
    if len(parts) == 1:
        _log_inputs(parts[0], inputs, join, [])
        return parts[0]
    var = parts[0].var
    adata = ad.concat(parts, join=join, merge="first")
    adata.var = var.loc[adata.var_names] if set(adata.var_names) <= set(var.index) else adata.var
    from ._core.provenance import UNS_KEY, inherit, set_level

    adata.uns.pop(UNS_KEY, None)
    inherit(adata, parts[0])  # one owner of uns['imgprof']: level and steps of the first input
    if "level" not in adata.uns[UNS_KEY]:
        set_level(adata, "well")
    kept = set(map(str, adata.var_names))
    union = list(dict.fromkeys(str(v) for a in parts for v in a.var_names))
    _log_inputs(adata, inputs, join, [v for v in union if v not in kept])
    return adata


def _log_inputs(adata, inputs: dict, join: str, dropped: list[str]) -> None:
    """Record every input file and the features the join between them dropped (for the report)."""
    from ._core.provenance import log_step

    log_step(adata, "io.read_input", {"files": inputs["files"], "join": join},
             n_obs=inputs["n_obs"], n_vars=inputs["n_vars"], dropped_by_join=dropped)


def _read_images_to_cells(path: str, **kwargs):
    from . import im

    return im.profile_images(path, **kwargs)


def _batch_key(cfg: Config) -> str:
    for sec in ("benchmark", "integrate", "input"):
        if cfg.sections.get(sec, {}).get("batch_key"):
            return cfg.sections[sec]["batch_key"]
    return "Metadata_Batch"


def _embeddings(adata) -> list[str]:
    keys = [k for k in adata.obsm.keys() if k.startswith("X_") and k not in ("X_umap", "X_tsne")]
    return keys or ["X"]


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
    >>> import imgprof as ip
    >>> from imgprof.pipeline import write_demo_config, run_pipeline
    >>> res = run_pipeline(write_demo_config("demo-run"), progress=False)   # doctest: +SKIP
    >>> res.files["report"]                                                # doctest: +SKIP
    'demo-run/report.html'
    """
    from ._core.progress import show_progress

    # the long steps (SQLite reads, aggregate from a file, profile_images, neighbours) show their own bars too
    with show_progress(bool(progress)):
        return _run_pipeline(config, progress=progress, verbose=verbose)


def _run_pipeline(config: str | os.PathLike | Config, *, progress: bool, verbose: bool) -> RunResult:
    import warnings

    import pandas as pd
    from tqdm.auto import tqdm

    import imgprof as ip

    from .io._atomic import atomic_path, atomic_write_text

    cfg = config if isinstance(config, Config) else load_config(config)
    steps = [s for s in STEP_ORDER if s in cfg.sections and s != "output"]
    out_cfg = cfg.sections.get("output", {})
    out_dir = Path(out_cfg.get("dir", "imgprof-out"))
    # Validate every section (names, types, methods, optional packages, output formats) before any work.
    validate_config(cfg)
    formats = _output_formats(cfg)
    timings: dict[str, float] = {}
    metrics_tables: list[pd.DataFrame] = []
    extras: dict[str, Any] = {"map": {}, "benchmark": None}
    simple = _SIMPLE_STEPS

    def _relay(caught, section: str) -> None:
        # Warnings raised inside a step point at the user's config line, not at imgprof's source.
        for w in caught:
            warnings.warn_explicit(
                f"[{section}] {w.message}", w.category, filename=str(cfg.path) if cfg.path else "<config>",
                lineno=cfg.line_of(section) or 0, module="imgprof.pipeline",
            )

    extras["warnings"] = []

    def _keep_warnings(step: str, caught) -> None:
        # every warning of a step is kept for the report and shown pointing at the user's config line
        for w in caught:
            extras["warnings"].append({"step": step, "category": w.category.__name__, "message": str(w.message)})
        _relay(caught, step)

    bar = tqdm(total=len(steps) + 1, desc="imgprof run", disable=not progress)
    for s in steps:
        bar.set_description(f"imgprof run [{s}]")
        bar.refresh()  # the step's name shows while a long step runs
        t0 = time.perf_counter()
        opts = dict(cfg.sections[s])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if s == "input":
                    def _label(p: Path) -> None:
                        bar.set_description(f"imgprof run [input: {p.name}]")
                        bar.refresh()

                    adata = _read_input(cfg, on_file=_label)
                elif s in simple:
                    mod, name = simple[s]
                    do_filter = bool(opts.pop("filter", False)) if s == "qc" else False
                    res = getattr(getattr(ip, mod), name)(adata, **opts)
                    if res is not None and hasattr(res, "obs") and hasattr(res, "X"):
                        adata = res
                    if do_filter:
                        flag = f"{opts.get('key_added', 'Metadata_qc')}_pass"
                        keep = adata.obs[flag].to_numpy(dtype=bool)
                        if not keep.any():
                            raise ConfigError(f"{cfg.where(s, 'filter')}: [qc] filter = true would drop every row "
                                              f"(no row passes {flag!r}).")
                        adata = adata[keep].copy()
                elif s == "integrate":
                    methods = opts.pop("methods", None) or opts.pop("method")
                    opts.pop("method", None)
                    methods = [methods] if isinstance(methods, str) else methods
                    per_method = opts.pop("params", {}) or {}
                    for m in tqdm(methods, desc="integrate", disable=not (progress and verbose), leave=False):
                        bar.set_description(f"imgprof run [integrate: {m}]")
                        bar.refresh()
                        ip.tl.integrate(adata, m, **opts, **per_method.get(m, {}))
                elif s == "evaluate":
                    use_reps = opts.pop("use_reps", None) or _embeddings(adata)
                    opts.pop("use_rep", None)
                    batch_key = _batch_key(cfg)
                    neg = None
                    if opts.get("controls") is not None:
                        from ._core.validation import resolve_mask

                        neg = resolve_mask(adata, opts["controls"], param="controls")
                    for rep in use_reps:
                        mmap = ip.metrics.phenotypic_activity(adata, use_rep=None if rep == "X" else rep, **opts)
                        extras["map"][rep] = mmap
                        names, values = ["mean_mAP", "fraction_active"], [
                            float(mmap["mean_average_precision"].mean()), float(mmap["below_corrected_p"].mean())]
                        if batch_key in adata.obs.columns and adata.obs[batch_key].nunique() > 1:
                            E = adata.X if rep == "X" else adata.obsm[rep]
                            sh = ip.bench.batch_neighbor_share(E, adata.obs[batch_key], k=10, exclude=neg)
                            names += ["same_batch_share_10nn", "same_batch_share_expected"]
                            values += [sh["share"], sh["expected"]]
                        metrics_tables.append(pd.DataFrame({"embedding": rep, "metric": names, "value": values}))
                elif s == "benchmark":
                    keys = opts.pop("embedding_obsm_keys", None) or _embeddings(adata)
                    if "negcon" not in opts and cfg.sections.get("evaluate", {}).get("controls") is not None:
                        opts["negcon"] = cfg.sections["evaluate"]["controls"]
                    opts.setdefault("progress_bar", bool(progress and verbose))  # nested bars only with --verbose
                    bm = ip.bench.Benchmarker(adata, embedding_obsm_keys=keys, **opts)
                    bm.benchmark()
                    extras["benchmark"] = bm
                    tidy = bm.get_results(tidy=True)  # embedding, metric_type, metric, value
                    metrics_tables.append(tidy[["embedding", "metric", "value", "metric_type"]])
            except ConfigError:
                raise
            except (KeyError, ValueError, TypeError) as e:
                raise ConfigError(f"{cfg.where(s)}: step [{s}] failed: {e}") from e
        _keep_warnings(s, caught)
        timings[s] = time.perf_counter() - t0
        bar.update(1)

    # Outputs: refused before anything is written when a format cannot hold the data (zarr keys
    # differing by case, obs/feature name clashes in tables); each file written atomically.
    bar.set_description("imgprof run [output]")
    bar.refresh()
    files: dict[str, str] = {}
    targets = [out_dir / OUTPUT_FORMATS[f] for f in formats]
    for t in targets:
        try:
            ip.io.check_writable(adata, t)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"{cfg.where('output', 'format')}: {e}") from e
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(targets):
        ip.io.write_profiles(adata, t)
        files["adata" if i == 0 else f"adata_{formats[i]}"] = str(t)
    metrics = pd.concat(metrics_tables, ignore_index=True) if metrics_tables else pd.DataFrame(columns=["embedding", "metric", "value"])
    metrics_path = out_dir / "metrics.csv"
    with atomic_path(metrics_path) as tmp:
        metrics.to_csv(tmp, index=False)
    files["metrics"] = str(metrics_path)
    for rep, mmap in extras["map"].items():
        p = out_dir / f"map_{rep}.csv"
        with atomic_path(p) as tmp:
            mmap.to_csv(tmp, index=False)
        files[f"map_{rep}"] = str(p)
    if out_cfg.get("report", True):
        from .report import write_report

        files["report"] = str(write_report(adata, out_dir / "report.html", metrics=metrics, extras=extras, config=cfg, timings=timings))
    atomic_write_text(out_dir / "run.json", json.dumps({"config": str(cfg.path), "timings_s": timings, "files": files}, indent=2))
    bar.update(1)
    bar.set_description("imgprof run")
    bar.close()
    return RunResult(adata=adata, metrics=metrics, files=files, timings=timings, benchmarker=extras["benchmark"],
                     warnings=list(extras["warnings"]))


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
