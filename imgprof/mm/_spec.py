"""Key specifications of :func:`imgprof.mm.join`: which columns are keys, the dose key, and the errors.

Private module: :mod:`imgprof.mm` exports the public names (the errors).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._report import JoinReport

KEY_SEP = "; "


class JoinError(ValueError):
    """A join that cannot produce a meaningful result (no overlap, ambiguous keys). ``.report`` holds the details."""

    def __init__(self, message: str, report: JoinReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class AmbiguousKeyError(JoinError):
    """One key matches several rows where exactly one was required."""


class DoseUnitError(ValueError):
    """Doses whose unit is unknown, missing or evidently wrong."""



# ----------------------------------------------------------------------------- key specs


@dataclass(frozen=True)
class KeySpec:
    name: str
    cols: tuple[str, str]
    sep: str | None = None


@dataclass(frozen=True)
class DoseSpec:
    name: str
    cols: tuple[str, str]
    units: tuple[str, str]


def pair(value: Any, what: str) -> tuple[str, str]:
    if isinstance(value, str):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return (value[0], value[1])
    raise TypeError(f"{what}: expected a column name or a (left, right) pair of column names, got {value!r}.")


def parse_on(on: Any, sep: Any) -> list[KeySpec]:
    if on is None:
        return []
    if isinstance(on, Mapping):
        items = [(str(k), pair(v, f"on[{k!r}]")) for k, v in on.items()]
    else:
        entries = [on] if isinstance(on, (str, tuple)) else list(on)
        items = []
        for e in entries:
            cols = pair(e, "on")
            items.append((cols[0], cols))
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"on: key names must be unique, got {names}.")
    if isinstance(sep, Mapping):
        unknown = set(sep) - set(names)
        if unknown:
            raise KeyError(f"sep: key(s) {sorted(unknown)} are not join keys {names}.")
        return [KeySpec(n, c, sep.get(n)) for n, c in items]
    return [KeySpec(n, c, sep) for n, c in items]


def parse_dose(dose: Any, dose_unit: Any, key_names: list[str]) -> DoseSpec | None:
    if dose is None:
        if dose_unit is not None:
            raise ValueError("dose_unit= was given without dose=.")
        return None
    if isinstance(dose, Mapping):
        if len(dose) != 1:
            raise ValueError("dose: give one {name: (left, right)} entry.")
        (name, cols), = dose.items()
        cols = pair(cols, "dose")
    else:
        cols = pair(dose, "dose")
        name = "dose"
    if name in key_names:
        raise ValueError(f"dose key name {name!r} clashes with a join key in on=.")
    if dose_unit is None:
        raise DoseUnitError(
            "dose_unit= is required with dose=: give the unit of each side, as a unit ('uM', 'nM', 'mM') or the "
            "name of a column that holds one unit per row, e.g. dose_unit=('uM', 'pert_dose_unit'). "
            "Units are never guessed from column names (LINCS's 'Metadata_mmoles_per_liter' holds µM)."
        )
    units = pair(dose_unit, "dose_unit") if not isinstance(dose_unit, str) else (dose_unit, dose_unit)
    return DoseSpec(str(name), cols, units)


def sep_label(sep: Any) -> str | dict | None:
    return dict(sep) if isinstance(sep, Mapping) else sep

