"""Join image-based profiles with another modality (expression, proteomics) by perturbation keys.

The join is explicit about every decision: how names are normalised (case,
whitespace, punctuation), how doses are converted to µM and recoded onto the
standard dose series, how multi-valued labels (``"EGFR inhibitor|KIT inhibitor"``)
are split, and which perturbations matched, which did not and why. The result is
a :class:`mudata.MuData` whose modalities share observations (one per matched
perturbation) so that cross-modal analyses can pair them.

The work is done in private modules: ``_spec`` (key specifications, errors),
``_sides`` (the keys of each row), ``_report`` (:class:`JoinReport`), ``_build``
(the modalities of each ``level``/``paired`` branch) and ``_annotate``
(:func:`map_annotations`, :func:`recode_dose`); this module coordinates. :mod:`imgprof.mm`
exports the public names of all of them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._core.docs import doc_params
from .._core.provenance import log_step
from .._core.validation import resolve_mask
from ._build import keys_frame, paired_mods, perturbation_mods, unpaired_mods
from ._keys import STANDARD_DOSES_UM
from ._report import JoinReport, build_report, load_report, per_component_overlap, store_report
from ._sides import DoseOptions, Side, prepare_side
from ._spec import JoinError, parse_dose, parse_on, sep_label

__all__ = ["join", "join_report", "match_keys"]


def _check_modalities(morph: Any, expr: Any, mod_names: tuple[str, str]) -> None:
    for x, m in zip((morph, expr), mod_names):
        if not isinstance(x, ad.AnnData):
            raise TypeError(f"{m}: expected an AnnData, got {type(x).__name__}.")
    if len(mod_names) != 2 or mod_names[0] == mod_names[1]:
        raise ValueError(f"mod_names={mod_names!r}: give two different names.")


def _match(morph: ad.AnnData, expr: ad.AnnData, on: Any, *, dose: Any, dose_unit: Any,
           dose_series: Sequence[float] | None, dose_rtol: float, dose_off_series: str, names: Any, sep: Any,
           mod_names: tuple[str, str], level: str) -> tuple[JoinReport, list[Side]]:
    _check_modalities(morph, expr, mod_names)
    keys = parse_on(on, sep)
    dspec = parse_dose(dose, dose_unit, [k.name for k in keys])
    if not keys and dspec is None:
        raise ValueError("on: give at least one key column (or a dose=).")
    opts = DoseOptions(dose_series, dose_rtol, dose_off_series)
    sides = [prepare_side(x, m, i, keys, dspec, names, opts) for i, (x, m) in enumerate(zip((morph, expr), mod_names))]
    return build_report(sides[0], sides[1], keys, dspec, names, level, sep), sides


@doc_params("example_mm_target_join", "example_mm_moa")
def match_keys(
    morph: ad.AnnData,
    expr: ad.AnnData,
    on: Any,
    *,
    mod_names: tuple[str, str] = ("morph", "expr"),
    level: str = "perturbation",
    dose: Any = None, dose_unit: Any = None, dose_series: Sequence[float] | None = STANDARD_DOSES_UM, dose_rtol: float = 0.05,
    dose_off_series: str = "nan", names: str | Callable[[str], str] = "casefold", sep: str | Mapping[str, str] | None = None,
) -> JoinReport:
    """Match perturbation keys between two modalities and report the outcome, without joining.

    Takes the same key arguments as :func:`join` and never raises for a poor
    overlap: use it to inspect what a join would keep.

    Parameters
    ----------
    morph, expr
        The two modalities (profiles at perturbation or well level).
    on
        Key column(s): one name for both, or ``(morph_column, expr_column)``.
    mod_names
        Names of the two modalities in the report.
    level
        Level at which keys are matched (``"perturbation"``).
    dose, dose_unit, dose_series, dose_rtol, dose_off_series
        Optional dose matching, as in :func:`imgprof.mm.join`.
    names
        Name normalisation (``"casefold"`` or a callable).
    sep
        Separator of multi-valued keys (``"|"``), per modality when a mapping.

    Returns
    -------
    :class:`JoinReport`

    Examples
    --------
    {example_mm_moa}
    >>> rep = ip.mm.match_keys(morph, expr, on=("Metadata_moa", "moa"), sep="|")
    >>> rep.summary["n_matched"]
    8
    """
    return _match(
        morph, expr, on, dose=dose, dose_unit=dose_unit, dose_series=dose_series, dose_rtol=dose_rtol,
        dose_off_series=dose_off_series, names=names, sep=sep, mod_names=mod_names, level=level,
    )[0]



def _control_masks(morph: ad.AnnData, expr: ad.AnnData, controls: Any, level: str, paired: bool,
                   mod_names: tuple[str, str]) -> list[np.ndarray]:
    if controls is not None and (level != "well" or paired):
        raise ValueError("controls= is only used with level='well', paired=False (unpaired wells).")
    if controls is None:
        return [np.zeros(morph.n_obs, bool), np.zeros(expr.n_obs, bool)]
    if isinstance(controls, (str, np.ndarray, pd.Series)) or len(controls) != 2:
        raise ValueError("controls: give one selection per modality, e.g. (query_for_morph, query_for_expr).")
    return [resolve_mask(x, c, param=f"controls ({m})") for x, c, m in zip((morph, expr), controls, mod_names)]


def _join_params(report: JoinReport, **kw: Any) -> dict[str, Any]:
    """The parameters logged with every ``mm.join`` step."""
    dose_unit, dose_series, controls = kw.pop("dose_unit"), kw.pop("dose_series"), kw.pop("controls")
    return {
        "on": report.summary["columns"], "level": kw["level"], "names": report.summary["names"],
        "sep": sep_label(kw["sep"]), "dose_unit": list(dose_unit) if isinstance(dose_unit, (tuple, list)) else dose_unit,
        "dose_series": list(dose_series) if dose_series is not None else None, "dose_rtol": kw["dose_rtol"],
        "consensus": kw["consensus"], "paired": kw["paired"], "mod_names": list(kw["mod_names"]),
        "controls": [c if isinstance(c, str) else "<mask>" for c in controls] if controls is not None else None,
    }


def _mudata(mods: dict[str, ad.AnnData], report: JoinReport, mod_names: tuple[str, str], shared_obs: bool) -> Any:
    """The MuData of the joined modalities; the key components in ``mdata.obs`` when observations are shared."""
    import mudata as md

    a_name, b_name = mod_names
    report.summary["n_shared_var_names"] = len(set(mods[a_name].var_names) & set(mods[b_name].var_names))
    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        # shared feature names (two Cell Painting sets) are fine here; their count is in the report
        warnings.filterwarnings("ignore", message="var_names are not unique")
        mdata = md.MuData(mods)
    if shared_obs:
        comp_names = report.summary["keys"]
        kf = keys_frame(list(mdata.obs_names), comp_names, report)
        for c in comp_names:
            mdata.obs[c] = kf[c].to_numpy()
        for m in mod_names:
            if "mm_n_profiles" in mods[m].obs:
                mdata.obs[f"n_{m}"] = mods[m].obs.loc[mdata.obs_names, "mm_n_profiles"].to_numpy()
    return mdata


def join(
    morph: ad.AnnData,
    expr: ad.AnnData,
    on: Any,
    *,
    level: str = "perturbation",
    consensus: str = "median",
    paired: bool = True,
    controls: Any = None,
    mod_names: tuple[str, str] = ("morph", "expr"),
    min_matches: int = 1,
    dose: Any = None, dose_unit: Any = None, dose_series: Sequence[float] | None = STANDARD_DOSES_UM, dose_rtol: float = 0.05,
    dose_off_series: str = "nan", names: str | Callable[[str], str] = "casefold", sep: str | Mapping[str, str] | None = None,
) -> Any:
    """Join morphology profiles with another modality, matched by perturbation keys.

    Parameters
    ----------
    morph, expr
        The two modalities (any AnnData: Cell Painting, L1000/RNA-seq, proteomics).
    on
        Key columns: a name present in both ``.obs``, a ``(left, right)`` pair when
        the columns are named differently, a list of those, or a dict
        ``{key_name: (left, right)}``. E.g. ``on=("Metadata_moa", "moa")``.
    level
        ``"perturbation"``: take a consensus profile per key in each modality first
        (so well-level and consensus-level inputs can be joined) and pair the
        consensus profiles one to one. ``"well"``: keep every row; with
        ``paired=True`` each key must identify exactly one row in each modality
        (e.g. the same sample measured twice), otherwise an
        :class:`AmbiguousKeyError` is raised.
    consensus
        Consensus method for ``level="perturbation"`` (passed to :func:`imgprof.pp.consensus`).
    paired
        For ``level="well"``: require one row per key on each side (observations are then
        shared between modalities). ``paired=False`` keeps all rows of matched keys
        unpaired (observation names prefixed by the modality name) for per-modality
        analyses on the same perturbations.
    controls
        Only with ``level="well", paired=False``: negative controls to keep as well,
        one selection per modality (query strings, boolean masks or obs names), e.g.
        ``("Metadata_pert_type == 'control'", "pert_type == 'ctl_vehicle'")``. They
        get ``obs["mm_control"] = True`` and an empty ``mm_key`` (also when their
        name matched as a key, e.g. DMSO; the report counts them), so replicate
        retrieval against controls can run on the joined object.
    mod_names
        Modality names in the result.
    min_matches
        Raise :class:`JoinError` when fewer keys match (default 1: an empty join is an error).
    dose, dose_unit
        Optional dose key: column name (or ``(left, right)``), with the unit of each
        side, as a unit string (``"uM"``, ``"nM"``...) or the name of a column with one
        unit per row (e.g. ``("uM", "pert_dose_unit")``). Doses are converted to µM
        and recoded onto ``dose_series``.
    dose_series, dose_rtol, dose_off_series
        Nominal doses (µM; default the 6-point LINCS series 0.04–10 µM), the relative
        tolerance for "the same dose", and what to do with doses off the series
        (``"nan"``: exclude and report, ``"nearest"``: snap anyway, ``"raise"``).
        ``dose_series=None`` matches exact doses (after unit conversion).
    names
        Name normalisation applied to every key before matching: ``"exact"``,
        ``"strip"``, ``"casefold"`` (default: case and whitespace ignored), ``"alnum"``
        (punctuation ignored too) or a callable.
    sep
        Separator of multi-valued labels (``"|"`` for Repurposing Hub MOAs and
        targets), for all keys or per key ``{key_name: "|"}``. A profile with several
        labels contributes to each of them.

    Returns
    -------
    :class:`mudata.MuData` with modalities ``mod_names``. Each modality's ``.obs``
    holds ``mm_key`` and ``mm_<key>`` (normalised key values; plus
    ``mm_n_profiles`` for consensus profiles). ``mdata.obs`` holds the key columns
    when paired. The report is in ``mdata.uns`` (read it with :func:`join_report`).

    Raises
    ------
    JoinError
        No (or fewer than ``min_matches``) matched keys; the message counts the
        shared values per key component to show which key prevents matching.
    AmbiguousKeyError
        ``level="well", paired=True`` and a key matches several rows.
    DoseUnitError
        Missing or unknown dose units, or doses that look like the wrong unit.

    Examples
    --------
    >>> import imgprof as ip
    >>> morph, expr = ip.datasets.lincs_plate(), ip.datasets.l1000_plate()
    >>> ip.mm.map_annotations(expr, ip.datasets.repurposing_hub(), on="pert_iname", columns=["moa", "target"])
    >>> mdata = ip.mm.join(morph, expr, on={"moa": ("Metadata_moa", "moa")}, sep="|")
    >>> mdata.n_obs, mdata["morph"].shape[1], mdata["expr"].shape[1]
    (8, 454, 978)
    """
    if level not in ("perturbation", "well"):
        raise ValueError(f"level={level!r}: expected 'perturbation' or 'well'.")
    a_name, b_name = mod_names
    report, sides = _match(
        morph, expr, on, dose=dose, dose_unit=dose_unit, dose_series=dose_series, dose_rtol=dose_rtol,
        dose_off_series=dose_off_series, names=names, sep=sep, mod_names=mod_names, level=level,
    )
    matched = report.matched
    if len(matched) < max(1, min_matches):
        raise JoinError(
            f"join: {len(matched)} key(s) matched between {a_name} and {b_name} (need at least {max(1, min_matches)}). "
            f"Per key: {per_component_overlap(report, a_name, b_name)}. "
            f"Rows usable: {report.summary['n_rows_usable']}. See the .report attribute of this error, or "
            "ip.mm.match_keys(...) to inspect; names='alnum' ignores punctuation.",
            report,
        )
    ctrl_masks = _control_masks(morph, expr, controls, level, paired, mod_names)
    params = _join_params(report, level=level, sep=sep, dose_unit=dose_unit, dose_series=dose_series,
                          dose_rtol=dose_rtol, consensus=consensus, paired=paired, mod_names=mod_names, controls=controls)
    inputs = (morph, expr)
    if level == "perturbation":
        mods = perturbation_mods(inputs, sides, report, consensus, params)
    elif paired:
        mods = paired_mods(inputs, sides, report, params)
    else:
        mods = unpaired_mods(inputs, sides, report, ctrl_masks, params)
    mdata = _mudata(mods, report, mod_names, shared_obs=level == "perturbation" or paired)
    store_report(mdata, report)
    log_step(mdata, "mm.join", params, n_matched=len(matched), summary=report.summary)
    return mdata


@doc_params("example_mm_target_join", "example_mm_moa")
def join_report(mdata: Any) -> JoinReport:
    """The :class:`JoinReport` stored by :func:`join` in ``mdata.uns['mm_join']``.

    Parameters
    ----------
    mdata
        MuData returned by :func:`imgprof.mm.join`.

    Returns
    -------
    JoinReport
        Matched keys, keys only in one modality and dropped rows.

    Examples
    --------
    {example_mm_target_join}
    >>> len(ip.mm.join_report(mdata).matched)
    15
    """
    return load_report(mdata)
