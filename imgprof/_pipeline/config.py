"""A pipeline config: parsing TOML/YAML, line numbers for messages, paths resolved against the file.

Private module of :mod:`imgprof.pipeline` (which re-exports :class:`Config`,
:class:`ConfigError` and :data:`STEP_ORDER`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
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
            yaml_section = (lines[j] and not lines[j][0].isspace() and lines[j].rstrip().endswith(":")
                            and self.path and self.path.suffix in (".yaml", ".yml"))
            if re.match(r"^\s*\[", lines[j]) or yaml_section:
                break
            if key_pat.match(lines[j]):
                return j + 1
        return start + 1

    def where(self, section: str, key: str | None = None) -> str:
        """``"<file>, line <n>"`` of ``[section]`` (or ``key``) for messages."""
        line = self.line_of(section, key)
        name = str(self.path) if self.path else "<config>"
        return f"{name}, line {line}" if line else name



#: Output formats of [output] format: format → file name of the profiles.
OUTPUT_FORMATS: dict[str, str] = {"h5ad": "profiles.h5ad", "zarr": "profiles.zarr", "parquet": "profiles.parquet",
                                  "csv": "profiles.csv", "csv.gz": "profiles.csv.gz", "tsv": "profiles.tsv"}


def _parse(path: Path) -> tuple[str, Any]:
    """The text of a config file and its parsed content (ConfigError for anything unreadable)."""
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
            return text, tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from e
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return text, yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
    raise ConfigError(f"{path}: config must be .toml, .yaml or .yml.")


def parse_config(path: Path) -> Config:
    """The sections of a config file, checked to be known sections holding options (paths not resolved)."""
    text, data = _parse(path)
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
    return cfg


def resolve_paths(cfg: Config, base: Path) -> None:
    """Resolve relative paths of [input], [annotate] and [output] against ``base`` (the config's folder)."""
    inp = cfg.sections["input"]
    check_path_options(cfg)
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
    out_dir = out.get("dir", "imgprof-out")
    out["dir"] = str((base / out_dir).resolve()) if not Path(out_dir).is_absolute() else out["dir"]


def check_path_options(cfg: Config) -> None:
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




def output_formats(cfg: Config) -> list[str]:
    """The [output] formats, normalised (``"h5ad"``, ``"csv.gz"``...); ConfigError for an unknown one."""
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

