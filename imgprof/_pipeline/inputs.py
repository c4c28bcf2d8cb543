"""The [input] step: read every input file with :func:`imgprof.io.read` and join them.

Private module of :mod:`imgprof.pipeline`. File formats are detected in one place,
:mod:`imgprof.io` (``reader_for``/``read``); an explicit ``kind`` picks the reader.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad

from .._core.provenance import inherit, log_step, record
from .checks import INPUT_KINDS, input_kind, input_reader
from .config import Config, ConfigError

_READ_ERRORS = (ValueError, TypeError, KeyError, OSError, EOFError)


def _detected(path: Path) -> bool:
    from ..io import reader_for

    try:
        reader_for(path)
    except ValueError:
        return False
    return True


def read_one(path: Path, kind: str, options: dict[str, Any]) -> ad.AnnData:
    """Read one input: ``ip.io.read`` (format detected by :mod:`imgprof.io`) unless ``kind`` names the reader."""
    from .. import io as ipio

    k = input_kind(path, kind)
    if k != "images" and kind == "auto" and _detected(path):
        return ipio.read(str(path), **options)
    return input_reader(k)(str(path), **options)


def _input_options(cfg: Config) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """The input paths, the [input] options of the pipeline, and the reader options."""
    inp = dict(cfg.sections["input"])
    paths = inp.pop("paths", None) or inp.pop("path", None)
    if paths is None:
        raise ConfigError(f"{cfg.where('input')}: [input] needs path = \"...\" (or paths = [...]).")
    paths = paths if isinstance(paths, list) else [paths]
    own = {"kind": inp.pop("kind", "auto"), "batch_key": inp.pop("batch_key", "Metadata_Batch"),
           "join": inp.pop("join", "inner"),
           "batch_names": inp.pop("batch_names", None) or [Path(p).name.split(".")[0] for p in paths]}
    if len(paths) > 1 and len(set(own["batch_names"])) != len(own["batch_names"]):
        raise ConfigError(f"{cfg.where('input', 'paths')}: two inputs have the same file stem {own['batch_names']}; "
                          "set [input] batch_names = [...] (one per path).")
    return paths, own, inp


def _read_part(cfg: Config, p: str, kind: str, options: dict[str, Any], on_file: Callable[[Path], None] | None) -> ad.AnnData:
    key = "path" if "path" in cfg.sections["input"] else "paths"
    pth = Path(p)
    if not pth.exists():
        raise ConfigError(f"{cfg.where('input', key)}: input {p} does not exist.")
    k = input_kind(pth, kind)
    if k not in ("profiles", "cellprofiler", "cytotable", "deepprofiler", "gct", "gctx", "images"):
        raise ConfigError(f"{cfg.where('input', 'kind')}: unknown input kind {k!r}; use one of {list(INPUT_KINDS)}.")
    if on_file is not None:
        on_file(pth)  # e.g. name the file on the progress bar while a large input is read
    try:
        return read_one(pth, kind, options)
    except _READ_ERRORS as e:
        raise ConfigError(f"{cfg.where('input', key)}: could not read the input: {e}") from e


def read_input(cfg: Config, on_file: Callable[[Path], None] | None = None) -> ad.AnnData:
    """Read every [input] file; several are joined (``join``) with a batch column and prefixed names."""
    paths, own, options = _input_options(cfg)
    parts = []
    for p, bname in zip(paths, own["batch_names"]):
        a = _read_part(cfg, p, own["kind"], options, on_file)
        if len(paths) > 1:
            a.obs[own["batch_key"]] = bname
            a.obs_names = [f"{bname}:{i}" for i in a.obs_names]
        parts.append(a)
    inputs = {
        "files": [str(p) for p in paths],
        "n_obs": [int(a.n_obs) for a in parts],
        "n_vars": [int(a.n_vars) for a in parts],
    }
    if len(parts) == 1:
        _log_inputs(parts[0], inputs, own["join"], [])
        return parts[0]
    var = parts[0].var
    adata = ad.concat(parts, join=own["join"], merge="first")
    adata.var = var.loc[adata.var_names] if set(adata.var_names) <= set(var.index) else adata.var
    rec = record(adata)
    for k in list(rec.as_dict()):
        rec.pop(k)  # what concat merged is dropped: the first input's level and steps are carried over
    inherit(adata, parts[0])
    if rec.level is None:
        rec.level = "well"
    kept = set(map(str, adata.var_names))
    union = list(dict.fromkeys(str(v) for a in parts for v in a.var_names))
    _log_inputs(adata, inputs, own["join"], [v for v in union if v not in kept])
    return adata


def _log_inputs(adata: ad.AnnData, inputs: dict, join: str, dropped: list[str]) -> None:
    """Record every input file and the features the join between them dropped (for the report)."""
    log_step(adata, "io.read_input", {"files": inputs["files"], "join": join},
             n_obs=inputs["n_obs"], n_vars=inputs["n_vars"], dropped_by_join=dropped)
