"""Checks of a pipeline config against the functions it will call, before any work starts.

Private module of :mod:`imgprof.pipeline` (whose :func:`~imgprof.pipeline.validate_config`
runs :func:`validate_sections`).
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import OUTPUT_FORMATS, STEP_ORDER, Config, ConfigError, output_formats

#: Options of [input] that are not reader options.
INPUT_KEYS = ("path", "paths", "kind", "batch_key", "join", "batch_names")
#: [input] kind → the :mod:`imgprof.io` reader that loads it (``"images"`` runs ``ip.im.profile_images``).
INPUT_READERS: dict[str, str] = {
    "profiles": "read_profiles", "cellprofiler": "read_cellprofiler", "cytotable": "read_cytotable",
    "deepprofiler": "read_deepprofiler", "gct": "read_gct", "gctx": "read_gctx", "images": "read_images",
}
INPUT_KINDS = ("auto", "profiles", "cellprofiler", "cytotable", "deepprofiler", "gct", "images")

#: Steps run by one call ``ip.<module>.<function>(adata, **options)``.
SIMPLE_STEPS = {
    "qc": ("pp", "qc"), "aggregate": ("pp", "aggregate"), "annotate": ("pp", "annotate"),
    "normalize": ("pp", "normalize"), "feature_select": ("pp", "feature_select"), "consensus": ("pp", "consensus"),
    "pca": ("tl", "pca"),
}


def integration_methods() -> tuple[str, ...]:
    """Names accepted by ``[integrate] methods`` (those of :func:`imgprof.tl.integrate`)."""
    from ..tl.integrate import METHODS

    return tuple(METHODS)


def input_kind(path: Path, kind: str) -> str:
    """The [input] kind of ``path``: ``kind`` itself, or (``"auto"``) what :func:`imgprof.io.reader_for` detects."""
    if kind != "auto":
        return kind
    from ..io import reader_for

    try:
        name = reader_for(path)
    except ValueError:
        return "profiles"
    by_reader = {reader: k for k, reader in INPUT_READERS.items() if k != "profiles"}
    return by_reader.get(name, "profiles")


def input_reader(kind: str) -> Callable[..., Any]:
    """The function that reads an input of ``kind`` (for its signature and to read it)."""
    if kind == "images":
        from ..im import profile_images

        return profile_images
    from .. import io as ipio

    return getattr(ipio, INPUT_READERS[kind])


def check_kwargs(cfg: Config, section: str, func: Callable[..., Any], options: dict[str, Any], skip: tuple[str, ...] = (),
                 given: tuple[str, ...] = ("adata", "self", "method")) -> None:
    """Refuse options ``func`` does not take or whose type its hints refuse, and missing required ones."""
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
            check_type(cfg, section, key, value, params[key])
            check_registered(cfg, section, key, value)
    for name, p in params.items():
        # A required argument the config does not give fails only after the work before it: say so now.
        if (p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and name not in options and name not in given and name not in skip and list(params).index(name) > 0):
            raise ConfigError(f"{cfg.where(section)}: [{section}] needs {name} = ... (a required option).")


#: Config options whose values name a registered method: (section, option) → "module:registry".
REGISTERED_OPTIONS = {
    ("normalize", "method"): "imgprof.pp.normalize:NORMALIZERS",
    ("feature_select", "operation"): "imgprof.pp.feature_select:FEATURE_OPS",
}


def check_registered(cfg: Config, section: str, key: str, value: Any) -> None:
    """Refuse a method name its registry does not know, at the config line that gives it."""
    target = REGISTERED_OPTIONS.get((section, key))
    if target is None:
        return
    import importlib

    module, _, attr = target.partition(":")
    registry = getattr(importlib.import_module(module), attr)
    for name in [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]:
        if name not in registry:
            close = difflib.get_close_matches(str(name), list(registry.names()), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{cfg.where(section, key)}: [{section}] {key} must be one of {list(registry.names())}, "
                              f"got {name!r}.{hint}")


SCALARS = {"int", "float", "str", "bool", "None"}


def check_type(cfg: Config, section: str, key: str, value: Any, param: inspect.Parameter) -> None:
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
    if not tokens or not tokens <= SCALARS:
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


def require_package(cfg: Config, section: str, key: str, what: str) -> None:
    """Refuse a method or input kind whose optional package is missing (the one check in _core.optional)."""
    from .._core.optional import MissingDependencyError, require, require_methods

    try:
        if what == "images":
            require("cp_measure", extra="im", pip_name="cp-measure", purpose=f"[{section}] {key} = 'images'")
        else:
            require_methods([what], purpose=f"[{section}] {key}")
    except MissingDependencyError as e:
        raise ConfigError(f"{cfg.where(section, key)}: {e}") from None




def _check_input_options(cfg: Config, inp: dict[str, Any], paths: list[str]) -> None:
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


def validate_input(cfg: Config) -> None:
    """[input]: kind, paths present, options, one batch name per path, reader options against the reader."""
    inp = cfg.sections["input"]
    kind = inp.get("kind", "auto")
    if kind not in INPUT_KINDS:
        close = difflib.get_close_matches(str(kind), INPUT_KINDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{cfg.where('input', 'kind')}: unknown input kind {kind!r}; use one of {list(INPUT_KINDS)}.{hint}")
    paths = inp.get("paths") or [inp.get("path")]
    key = "path" if "path" in inp else "paths"
    for p in paths:
        if not Path(p).exists():
            raise ConfigError(f"{cfg.where('input', key)}: input {p} does not exist.")
    _check_input_options(cfg, inp, paths)
    reader_opts = {k: v for k, v in inp.items() if k not in INPUT_KEYS}
    for kd in sorted({input_kind(Path(p), kind) for p in paths}):
        require_package(cfg, "input", "kind", kd)
        func = input_reader(kd)
        try:
            check_kwargs(cfg, "input", func, reader_opts)
        except ConfigError as e:
            where = f"reader ip.io.{getattr(func, '__name__', kd)}; [input] also takes {list(INPUT_KEYS)}"
            raise ConfigError(f"{e} ({where})") from None


def _integrate_method_list(cfg: Config, opts: dict[str, Any]) -> tuple[str, list[str]]:
    if "methods" not in opts and "method" not in opts:
        raise ConfigError(f"{cfg.where('integrate')}: [integrate] needs methods = [\"harmony\", ...].")
    key = "methods" if "methods" in opts else "method"
    methods = opts[key]
    if isinstance(methods, str):
        # One name, not a sequence of letters ('h', 'a', ...): accept it as a one-method list.
        methods = [methods]
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
        raise ConfigError(f"{cfg.where('integrate', key)}: [integrate] {key} must be a list of method names, e.g. "
                          f"methods = [\"harmony\", \"combat\"], got {opts[key]!r}.")
    known = list(integration_methods())
    for m in methods:
        if m.lower() not in known:
            close = difflib.get_close_matches(m.lower(), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{cfg.where('integrate', key)}: [integrate] unknown method {m!r}; choose from {known}.{hint}")
        require_package(cfg, "integrate", key, m.lower())
    return key, methods


def validate_integrate(cfg: Config) -> None:
    """[integrate]: known methods with their packages, options of ip.tl.integrate and of each method."""
    import imgprof as ip

    from ..tl.integrate import get_method

    s = "integrate"
    opts = cfg.sections[s]
    key, methods = _integrate_method_list(cfg, opts)
    params = opts.get("params", {}) or {}
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise ConfigError(f"{cfg.where(s, 'params')}: [integrate.params.<method>] must hold key = value options.")
    for m in params:
        if m not in methods:
            raise ConfigError(f"{cfg.where(s)}: [integrate.params.{m}] is for a method not in {key} = {methods}.")
    own = set(inspect.signature(ip.tl.integrate).parameters)
    for m in methods:
        func = get_method(m)
        extra = {k: v for k, v in opts.items() if k not in own and k not in ("methods", "method", "params")}
        check_kwargs(cfg, s, func, extra, given=tuple(own) + ("adata",))
        mparams = {k: v for k, v in (params.get(m) or {}).items() if k not in own}
        try:
            check_kwargs(cfg, s, func, mparams, given=tuple(own) + ("adata",))
        except ConfigError as e:
            raise ConfigError(f"{e} (in [integrate.params.{m}])") from None
    check_kwargs(cfg, s, ip.tl.integrate, opts, skip=("methods", "method", "params"))


def validate_simple(cfg: Config, s: str) -> None:
    """A step run as ``ip.<module>.<function>(adata, **options)``; ``[qc] filter`` is the pipeline's own."""
    import imgprof as ip

    mod, name = SIMPLE_STEPS[s]
    func = getattr(getattr(ip, mod), name, None)
    if func is None:
        raise ConfigError(f"{cfg.where(s)}: step [{s}] is not available in this imgprof build (ip.{mod}.{name} missing).")
    opts = cfg.sections[s]
    if s == "qc" and "filter" in opts and not isinstance(opts["filter"], bool):
        raise ConfigError(f"{cfg.where(s, 'filter')}: [qc] filter must be true or false, got {opts['filter']!r}.")
    check_kwargs(cfg, s, func, opts, skip=("filter",) if s == "qc" else ())


def validate_output(cfg: Config) -> None:
    """[output]: known options, report a bool, known formats, a dir that is a folder and targets of the right kind."""
    out = cfg.sections.get("output", {})
    for k in out:
        if k not in ("dir", "format", "report"):
            close = difflib.get_close_matches(k, ["dir", "format", "report"], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{cfg.where('output', k)}: [output] has no option {k!r}.{hint} "
                              "Valid options: ['dir', 'format', 'report'].")
    if "report" in out and not isinstance(out["report"], bool):
        raise ConfigError(f"{cfg.where('output', 'report')}: [output] report must be true or false, got {out['report']!r}.")
    formats = output_formats(cfg)
    out_dir = Path(out.get("dir", "imgprof-out"))
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{cfg.where('output', 'dir')}: [output] dir {out_dir} exists and is a file, not a folder.")
    for f in formats:
        target = out_dir / OUTPUT_FORMATS[f]
        if target.exists() and target.is_dir() != (f == "zarr"):
            raise ConfigError(f"{cfg.where('output', 'format')}: output {target} exists and is a "
                              f"{'folder' if target.is_dir() else 'file'}; remove it or choose another dir.")


def validate_sections(cfg: Config) -> None:
    """Every check of :func:`imgprof.pipeline.validate_config`, section by section, in run order."""
    import imgprof as ip

    validate_input(cfg)
    for s in [s for s in STEP_ORDER if s in cfg.sections and s not in ("input", "output")]:
        if s in SIMPLE_STEPS:
            validate_simple(cfg, s)
        elif s == "integrate":
            validate_integrate(cfg)
        elif s == "evaluate":
            check_kwargs(cfg, s, ip.metrics.phenotypic_activity, cfg.sections[s], skip=("use_reps",))
        elif s == "benchmark":
            check_kwargs(cfg, s, ip.bench.Benchmarker, cfg.sections[s], skip=("embedding_obsm_keys",))
    validate_output(cfg)
