"""Array/Series kernels for multimodal joins: name normalisation, dose units and dose recoding.

Pure functions on pandas Series / numpy arrays (no AnnData, no I/O). The public
AnnData-level functions live in :mod:`imgprof.mm.join`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

#: The LINCS / Connectivity Map 6-point dose series (µM): 10 µM and five 3-fold dilutions, rounded.
STANDARD_DOSES_UM: tuple[float, ...] = (0.04, 0.12, 0.37, 1.11, 3.33, 10.0)

#: Values that mean "not available" in CMap / LINCS metadata.
MISSING_TOKENS = frozenset({"", "-666", "-666.0", "nan", "none", "na", "n/a", "null"})

#: Concentration units understood by :func:`unit_factor` and their factor to µM.
UNIT_TO_UM: dict[str, float] = {
    "m": 1e6,
    "mol/l": 1e6,
    "molar": 1e6,
    "mm": 1e3,
    "mmol/l": 1e3,
    "millimolar": 1e3,
    "um": 1.0,
    "umol/l": 1.0,
    "micromolar": 1.0,
    "nm": 1e-3,
    "nmol/l": 1e-3,
    "nanomolar": 1e-3,
    "pm": 1e-6,
    "pmol/l": 1e-6,
    "picomolar": 1e-6,
}

NAME_MODES = ("exact", "strip", "casefold", "alnum", "broad_id")
_BRD = re.compile(r"^(BRD-[A-Z]\d{8})(-.*)?$", re.IGNORECASE)


def canonical_unit(unit) -> str | None:
    """Canonical spelling of a concentration unit (``"µM"``, ``"uM"``, ``"um"`` → ``"um"``); ``None`` if missing."""
    if unit is None or (isinstance(unit, float) and np.isnan(unit)):
        return None
    u = str(unit).strip()
    if u.lower() in MISSING_TOKENS:
        return None
    u = u.replace("µ", "u").replace("μ", "u").casefold().replace(" ", "")
    u = u.replace("micromol/l", "umol/l").replace("nanomol/l", "nmol/l").replace("millimol/l", "mmol/l")
    return u


def unit_factor(unit, *, where: str = "dose_unit") -> float:
    """Factor that converts a concentration in ``unit`` to µM.

    Raises
    ------
    ValueError
        For units that are not concentrations (``mg/ml``, ``%``...), naming ``where``.

    Examples
    --------
    >>> unit_factor("nM")
    0.001
    >>> unit_factor("µM")
    1.0
    """
    u = canonical_unit(unit)
    if u is None:
        raise ValueError(f"{where}: the dose unit is missing.")
    if u not in UNIT_TO_UM:
        raise ValueError(
            f"{where}: unknown concentration unit {unit!r}; known units: M, mM, uM (µM), nM, pM "
            "(mass concentrations such as mg/ml cannot be compared without molecular weights)."
        )
    return UNIT_TO_UM[u]


def is_missing(values: pd.Series) -> np.ndarray:
    """Boolean mask of missing entries: NaN/None, empty strings and the CMap ``-666`` sentinel."""
    s = pd.Series(values, copy=False)
    miss = s.isna().to_numpy()
    txt = s.astype(str).str.strip().str.casefold()
    return miss | txt.isin(MISSING_TOKENS).to_numpy()


def normalize_names(values, how: str | Callable[[str], str] = "casefold") -> pd.Series:
    """Normalise identifiers (compound names, MOAs, genes) so spellings can be matched.

    Parameters
    ----------
    values
        Strings (missing values and ``-666`` stay missing, as ``<NA>``).
    how
        ``"exact"`` (unchanged), ``"strip"`` (surrounding whitespace removed),
        ``"casefold"`` (strip, casefold, collapse inner whitespace), ``"alnum"``
        (casefold and drop every non-alphanumeric character, so ``"PD-0325901"``
        equals ``"pd0325901"``), ``"broad_id"`` (like ``"casefold"``, and Broad sample
        ids ``BRD-K12345678-001-01-1`` are cut to the compound id ``brd-k12345678``,
        so a ``Metadata_broad_sample`` matches a ``pert_id``), or a callable applied
        to each string.

    Examples
    --------
    >>> normalize_names(["CYT387 ", "cyt387", "PD-0325901"], "casefold").tolist()
    ['cyt387', 'cyt387', 'pd-0325901']
    >>> normalize_names(["PD-0325901"], "alnum").tolist()
    ['pd0325901']
    >>> normalize_names(["BRD-K93779381-001-01-9", "DMSO"], "broad_id").tolist()
    ['brd-k93779381', 'dmso']
    """
    s = pd.Series(values, copy=True)
    miss = is_missing(s)
    out = s.astype(object).where(~miss, None)
    if callable(how):
        fn = how
    elif how == "exact":
        def fn(x):
            return str(x)
    elif how == "strip":
        def fn(x):
            return str(x).strip()
    elif how == "casefold":
        def fn(x):
            return re.sub(r"\s+", " ", str(x).strip()).casefold()
    elif how == "broad_id":
        def fn(x):
            t = re.sub(r"\s+", " ", str(x).strip())
            m = _BRD.match(t)
            return (m.group(1) if m else t).casefold()
    elif how == "alnum":
        def fn(x):
            return re.sub(r"[\W_]+", "", str(x).casefold())
    else:
        raise ValueError(f"names={how!r}: expected one of {NAME_MODES} or a callable.")
    res = [fn(v) if v is not None else None for v in out.tolist()]
    res = pd.Series(res, index=s.index, dtype="string")
    res[res.fillna("") == ""] = pd.NA
    return res


def split_multi(values: pd.Series, sep: str | None) -> list[list[str]]:
    """Split multi-valued labels (``"EGFR inhibitor|KIT inhibitor"``) into sorted unique lists."""
    out: list[list[str]] = []
    for v in values.tolist():
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            out.append([])
        elif sep is None:
            out.append([v])
        else:
            parts = [p.strip() for p in str(v).split(sep)]
            out.append(sorted({p for p in parts if p}))
    return out


def to_micromolar(values, unit, *, where: str = "dose") -> np.ndarray:
    """Convert concentrations to µM.

    Parameters
    ----------
    values
        Numbers (``-666`` and other missing tokens become NaN).
    unit
        One unit for all values (``"uM"``, ``"nM"``...) or one unit per value.

    Examples
    --------
    >>> to_micromolar([10, -666, 40], "nM").tolist()
    [0.01, nan, 0.04]
    """
    s = pd.Series(values, copy=False)
    miss = is_missing(s)
    num = pd.to_numeric(s.where(~miss, np.nan), errors="coerce")
    bad = num.isna().to_numpy() & ~miss
    if bad.any():
        ex = s[bad].astype(str).unique()[:5].tolist()
        raise ValueError(f"{where}: non-numeric dose value(s) {ex}.")
    x = num.to_numpy(dtype=float)
    if isinstance(unit, str) or unit is None:
        return x * unit_factor(unit, where=where)
    units = pd.Series(unit, copy=False)
    if len(units) != len(x):
        raise ValueError(f"{where}: {len(units)} units given for {len(x)} doses.")
    factors = np.full(len(x), np.nan)
    canon = units.map(canonical_unit)
    unknown = sorted({str(u) for u, c in zip(units, canon) if c is not None and c not in UNIT_TO_UM})
    if unknown:
        raise ValueError(
            f"{where}: unknown concentration unit(s) {unknown}; known units: M, mM, uM (µM), nM, pM."
        )
    ok = canon.notna().to_numpy()
    factors[ok] = canon[ok].map(UNIT_TO_UM).to_numpy(dtype=float)
    no_unit = ok == False  # noqa: E712
    has_dose = ~np.isnan(x) & (x != 0)
    if (no_unit & has_dose).any():
        n = int((no_unit & has_dose).sum())
        raise ValueError(f"{where}: {n} dose value(s) have no unit (unit missing or -666) but a non-zero dose.")
    factors[no_unit] = 1.0
    return x * factors


def recode_doses(
    doses_um,
    series: Sequence[float] = STANDARD_DOSES_UM,
    *,
    rtol: float = 0.05,
    off_series: str = "nan",
) -> tuple[np.ndarray, np.ndarray]:
    """Snap doses (µM) to a nominal dose series.

    A dose is on the series when it lies within a factor ``1 + rtol`` of a
    series value (log-scale distance), e.g. LINCS's 0.041152 µM → 0.04 µM.

    Parameters
    ----------
    doses_um
        Doses in µM (NaN = missing).
    series
        Nominal doses in µM.
    rtol
        Relative tolerance for "the same dose".
    off_series
        What to do with doses farther from every series value: ``"nan"`` (recode
        to NaN, status ``"off_series"``), ``"nearest"`` (snap to the nearest value
        on the log scale anyway, status ``"snapped"``; this is what the LINCS
        ``recode_dose`` helpers do), or ``"raise"``.

    Returns
    -------
    ``(recoded, status)``: recoded doses and one status per dose among
    ``"on_series"``, ``"off_series"``, ``"snapped"``, ``"zero"`` (vehicle, dose 0),
    ``"negative"`` and ``"missing"``.

    Examples
    --------
    >>> r, s = recode_doses([0.041152, 1.0, 0.0, float("nan")])
    >>> r.tolist(), s.tolist()
    ([0.04, nan, nan, nan], ['on_series', 'off_series', 'zero', 'missing'])
    """
    if off_series not in ("nan", "nearest", "raise"):
        raise ValueError(f"off_series={off_series!r}: expected 'nan', 'nearest' or 'raise'.")
    if rtol < 0:
        raise ValueError(f"rtol={rtol} must be >= 0.")
    ser = np.asarray(sorted(float(s) for s in series), dtype=float)
    if ser.size == 0 or (ser <= 0).any():
        raise ValueError(f"series={list(series)}: needs at least one positive dose.")
    d = np.asarray(doses_um, dtype=float)
    out = np.full(d.shape, np.nan)
    status = np.full(d.shape, "missing", dtype=object)
    pos = d > 0
    status[d == 0] = "zero"
    status[d < 0] = "negative"
    if pos.any():
        logd = np.log(d[pos])[:, None]
        dist = np.abs(logd - np.log(ser)[None, :])
        nearest = dist.argmin(axis=1)
        ok = dist[np.arange(len(nearest)), nearest] <= np.log1p(rtol) + 1e-12
        vals = ser[nearest]
        idx = np.flatnonzero(pos)
        out[idx[ok]] = vals[ok]
        status[idx[ok]] = "on_series"
        if (~ok).any():
            if off_series == "raise":
                ex = np.unique(d[idx[~ok]])[:5].tolist()
                raise ValueError(
                    f"{int((~ok).sum())} dose(s) are not within {rtol:.0%} of the series {ser.tolist()} µM, e.g. {ex}."
                )
            if off_series == "nearest":
                out[idx[~ok]] = vals[~ok]
                status[idx[~ok]] = "snapped"
            else:
                status[idx[~ok]] = "off_series"
    return out, status


def unit_mismatch_hint(doses_um: np.ndarray, series: Sequence[float], rtol: float,
                       declared_factor: float | None = None) -> str | None:
    """If most positive doses fall off the series but a x1000 or /1000 shift puts them on it, say so.

    ``declared_factor`` (the declared unit's factor to µM) lets the message name the likely unit.
    """
    d = np.asarray(doses_um, dtype=float)
    d = d[d > 0]
    if d.size == 0:
        return None
    _, st = recode_doses(d, series, rtol=rtol)
    frac_on = float(np.mean(st == "on_series"))
    if frac_on >= 0.5:
        return None
    for shift in (1e3, 1e-3):
        _, st2 = recode_doses(d * shift, series, rtol=rtol)
        frac2 = float(np.mean(st2 == "on_series"))
        if frac2 >= 0.8:
            msg = (
                f"only {frac_on:.0%} of the doses are on the series {list(series)} µM, but {frac2:.0%} would be "
                f"after {'multiplying' if shift > 1 else 'dividing'} them by 1000"
            )
            if declared_factor is not None:
                likely = [u for u, f in UNIT_TO_UM.items() if np.isclose(f, declared_factor * shift) and len(u) == 2]
                if likely:
                    unit = likely[0].replace("um", "uM").replace("nm", "nM").replace("mm", "mM").replace("pm", "pM")
                    msg += f": the unit is probably {unit}"
            return msg
    return None
