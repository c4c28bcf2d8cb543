"""Where the images of a plate are: file-name patterns and load-data tables → one row per site.

Used by :func:`imgprof.im.read.read_images`; ``PATTERNS`` is re-exported there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Filename patterns tried when ``pattern=None`` (named groups: Plate, Well or Row/Column, Site, Channel).
PATTERNS: dict[str, str] = {
    # ImageXpress: <plate>_<well>_s<site>_w<channel>[...].tif
    "imagexpress": r"^(?P<Plate>.+?)_(?P<Well>[A-P][0-9]{2})_s(?P<Site>[0-9]+)_w(?P<Channel>[0-9]+)",
    # Cellomics/ArrayScan: <plate>_<well>f<site>d<channel>.tif (e.g. ExampleHuman)
    "cellomics": r"^(?P<Plate>.+)_(?P<Well>[A-P][0-9]{2})f(?P<Site>[0-9]+)d(?P<Channel>[0-9]+)",
    # Opera Phenix / Operetta: r<row>c<col>f<site>p<plane>-ch<channel>...
    "phenix": r"^r(?P<Row>[0-9]{2})c(?P<Column>[0-9]{2})f(?P<Site>[0-9]+)p(?P<Plane>[0-9]+)-ch(?P<Channel>[0-9]+)",
}
IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".npy")
QC_ERROR = "Metadata_qc_error"


# ---------------------------------------------------------------------------
# Building an ImageSet
# ---------------------------------------------------------------------------


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s))]


def _well_from(groups: dict[str, str]) -> str | None:
    if groups.get("Well"):
        return groups["Well"]
    if groups.get("Row") and groups.get("Column"):
        r, c = groups["Row"], groups["Column"]
        row = chr(ord("A") + int(r) - 1) if r.isdigit() else r
        return f"{row}{int(c):02d}" if c.isdigit() else f"{row}{c}"
    return None


def _scan_folder(folder: Path, pattern: str | None, extensions, recursive: bool):
    files = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir())
                   if p.is_file() and p.name.lower().endswith(tuple(e.lower() for e in extensions)))
    if not files:
        raise FileNotFoundError(f"{folder}: no image file with extension {list(extensions)}.")
    if pattern is None:
        best = None
        for name, pat in PATTERNS.items():
            rx = re.compile(pat)
            n = sum(bool(rx.search(p.name)) for p in files)
            if n and (best is None or n > best[1]):
                best = (name, n, pat)
        if best is None:
            raise ValueError(
                f"{folder}: no file name matches a known pattern ({', '.join(PATTERNS)}); pass pattern= with named "
                "groups, e.g. r'(?P<Plate>.+)_(?P<Well>[A-P][0-9]{2})_s(?P<Site>[0-9])_w(?P<Channel>[0-9])'. "
                f"First files: {[p.name for p in files[:3]]}"
            )
        pattern = best[2]
    rx = re.compile(pattern)
    if "Channel" not in rx.groupindex and "ChannelNumber" not in rx.groupindex:
        raise ValueError(f"pattern={pattern!r} needs a named group (?P<Channel>...) for the channel.")
    matched: list[tuple[Path, dict | None]] = []
    unmatched: list[tuple[Path, dict | None]] = []
    for p in files:
        m = rx.search(p.name)
        (matched if m else unmatched).append((p, m.groupdict() if m else None))
    if not matched:
        raise ValueError(f"{folder}: no file name matches pattern {pattern!r} (e.g. {files[0].name!r}).")
    return pattern, matched, [p for p, _ in unmatched]


def _channel_names(tokens: list[str], channels) -> dict[str, str]:
    tokens = sorted(set(tokens), key=_natural_key)
    if channels is None:
        return {t: (t if re.match(r"^[A-Za-z]\w*$", t) else f"ch{t}") for t in tokens}
    if isinstance(channels, Mapping):
        mapping = {str(k): str(v) for k, v in channels.items()}
        absent = [k for k in mapping if k not in tokens]
        if absent:
            raise ValueError(
                f"channels: channel token(s) {absent} (→ {[mapping[a] for a in absent]}) match no file; "
                f"tokens found in the file names: {tokens}."
            )
        if len(set(mapping.values())) != len(mapping):
            raise ValueError(f"channels: names must be unique, got {list(mapping.values())}.")
        return mapping
    names = [str(c) for c in channels]
    if len(names) != len(tokens):
        raise ValueError(
            f"channels: {len(names)} name(s) {names} given but the file names hold {len(tokens)} channel token(s) "
            f"{tokens}; pass a dict {{token: name}} to choose."
        )
    return dict(zip(tokens, names))


def from_folder(folder: Path, pattern, channels, extensions, recursive, metadata) -> tuple[pd.DataFrame, list[str], list[str]]:
    pattern, matched, unmatched = _scan_folder(folder, pattern, extensions, recursive)
    chan_group = "Channel" if "Channel" in re.compile(pattern).groupindex else "ChannelNumber"
    tokens = [g[chan_group] for _, g in matched]
    mapping = _channel_names(tokens, channels)
    notes = []
    ignored = sorted({t for t in tokens if t not in mapping}, key=_natural_key)
    if ignored:
        notes.append(f"files of channel token(s) {ignored} are not in channels= and were ignored")
    if unmatched:
        notes.append(f"{len(unmatched)} file(s) do not match the pattern and were ignored (e.g. {unmatched[0].name!r})")
    sites: dict[tuple, dict] = {}
    for p, g in matched:
        tok = g[chan_group]
        if tok not in mapping:
            continue
        plate = g.get("Plate") or (metadata or {}).get("Metadata_Plate") or p.parent.name
        well = _well_from(g) or ""
        site = g.get("Site") or "1"
        extra = {f"Metadata_{k}": v for k, v in g.items()
                 if k not in ("Plate", "Well", "Row", "Column", "Site", "Channel", "ChannelNumber") and v is not None}
        key = (plate, well, site, tuple(sorted(extra.items())))
        rec = sites.setdefault(key, {"Metadata_Plate": plate, "Metadata_Well": well, "Metadata_Site": site, **extra,
                                     "_files": {}})
        rec["_files"].setdefault(mapping[tok], []).append(p)
    rows = []
    for key in sorted(sites, key=lambda k: (_natural_key(k[0]), _natural_key(k[1]), _natural_key(k[2]), k[3])):
        rec = sites[key]
        files = rec.pop("_files")
        errors = []
        for ch in mapping.values():
            got = files.get(ch, [])
            if len(got) == 0:
                errors.append(f"channel {ch!r}: no file for this site")
                rec[f"FileName_{ch}"], rec[f"PathName_{ch}"] = "", ""
            else:
                if len(got) > 1:
                    errors.append(f"channel {ch!r}: {len(got)} files match ({[x.name for x in got]})")
                rec[f"FileName_{ch}"], rec[f"PathName_{ch}"] = got[0].name, str(got[0].parent)
        rec[QC_ERROR] = "; ".join(errors)
        rows.append(rec)
    table = pd.DataFrame(rows)
    return table, list(mapping.values()), notes


def _table_channels(found: list[str], channels: Any) -> dict[str, str]:
    """Load-data channel → channel name, checked against the ``FileName_<channel>`` columns ``found``."""
    if channels is None:
        mapping = {c: c for c in found}
    elif isinstance(channels, Mapping):
        mapping = {str(k): str(v) for k, v in channels.items()}
    else:
        mapping = {str(c): str(c) for c in channels}
    absent = [c for c in mapping if c not in found]
    if absent:
        raise KeyError(f"channels: {absent} have no FileName_<channel> column in the load-data table (found {found}).")
    return mapping


def _table_paths(df: pd.DataFrame, old: str, new: str, base: Path | None, errors: list[list[str]]) -> list[tuple[str, str]]:
    """``(file name, folder)`` of channel ``old`` on every row; empty names are recorded in ``errors``."""
    fn = df[f"FileName_{old}"]
    pn = df[f"PathName_{old}"] if f"PathName_{old}" in df else pd.Series([""] * len(df))
    paths = []
    for r, (f, p) in enumerate(zip(fn, pn)):
        if f is None or (isinstance(f, float) and np.isnan(f)) or str(f).strip() == "":
            errors[r].append(f"channel {new!r}: empty FileName_{old}")
            paths.append(("", ""))
            continue
        p = "" if p is None or (isinstance(p, float) and np.isnan(p)) else str(p)
        pp = Path(p)
        if not pp.is_absolute() and base is not None:
            pp = base / pp
        paths.append((str(f), str(pp)))
    return paths


def from_table(df: pd.DataFrame, base: Path | None, channels) -> tuple[pd.DataFrame, list[str], list[str]]:
    if df.shape[0] == 0:
        raise ValueError("load-data table: no rows.")
    found = [c.removeprefix("FileName_") for c in df.columns if c.startswith("FileName_")]
    if not found:
        raise ValueError(
            "load-data table: no FileName_<channel> column (CellProfiler's load-data convention: "
            f"FileName_<channel> and PathName_<channel>); columns are {list(df.columns)[:10]}."
        )
    mapping = _table_channels(found, channels)
    table = pd.DataFrame(index=range(len(df)))
    for c in df.columns:
        if c.startswith("Metadata_"):
            table[c] = df[c].to_numpy()
    for k in ("Metadata_Plate", "Metadata_Well", "Metadata_Site"):
        if k not in table:
            table[k] = "" if k != "Metadata_Site" else np.arange(1, len(df) + 1).astype(str)
    errors: list[list[str]] = [[] for _ in range(len(df))]
    for old, new in mapping.items():
        paths = _table_paths(df, old, new, base, errors)
        table[f"FileName_{new}"] = [a for a, _ in paths]
        table[f"PathName_{new}"] = [b for _, b in paths]
        if f"Frame_{old}" in df:
            table[f"Frame_{new}"] = df[f"Frame_{old}"].to_numpy()
    for c in df.columns:
        if c.startswith(("ObjectsFileName_", "ObjectsPathName_")):
            vals = df[c].to_numpy()
            if c.startswith("ObjectsPathName_") and base is not None:
                vals = [str(base / v) if isinstance(v, str) and not Path(v).is_absolute() else v for v in vals]
            table[c] = vals
    table[QC_ERROR] = ["; ".join(e) for e in errors]
    return table, list(mapping.values()), []
