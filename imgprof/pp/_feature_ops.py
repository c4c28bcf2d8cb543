"""The feature-selection operations of :func:`imgprof.pp.feature_select`, one registered function each.

An operation receives a :class:`FeatureData` (the selected rows, the features
still in play) plus the ``feature_select`` arguments it names in ``params=``,
and returns a boolean *drop* mask over ``data.columns``, optionally with a small
report dict (logged in the provenance). Adding an operation is one function::

    from imgprof.pp.feature_select import FEATURE_OPS

    @FEATURE_OPS.register("drop_negative_means")
    def drop_negative_means(data):
        return np.nanmean(data.sub(), axis=0) < 0

Registration metadata read by ``feature_select``: ``params`` (names of its
arguments passed on as keywords), ``values`` (whether the operation reads the
matrix; default True), ``groups`` (whether it needs the replicate groups of
``noise_removal_perturb_groups``) and ``requires`` (arguments that must not be
``None`` when the operation is requested).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._core.docs import doc_params
from .._core.registry import Registry
from . import _feature_select_kernels as K

__all__ = ["BLOCKLIST_PATH", "FEATURE_OPS", "FeatureData", "load_blocklist"]

#: Feature-selection operations: name → function returning a drop mask (``operation=`` of ``feature_select``).
FEATURE_OPS = Registry("feature_select_operation", param="operation")

#: The standard CellProfiler blocklist shipped with imgprof (copied from pycytominer, BSD-3).
BLOCKLIST_PATH = Path(__file__).with_name("data") / "blocklist.txt"


@dataclass
class FeatureData:
    """What an operation sees.

    Parameters
    ----------
    X
        The ``samples=`` rows × all features, float64 (numpy or dask), checked
        for inf; ``None`` when no requested operation reads values.
    columns
        Positions (into ``var_names``) of the features still in play, in order:
        the operation's mask is over these.
    var_names
        All feature names of the AnnData.
    n_rows
        Number of rows the statistics are computed on.
    codes, n_groups
        Replicate group of each row (``-1``: none) and the number of groups, for
        operations registered with ``groups=True``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from imgprof.pp.feature_select import FeatureData
    >>> d = FeatureData(np.eye(3), np.array([0, 2]), pd.Index(["a", "b", "c"]), 3)
    >>> d.names, d.sub().shape
    (['a', 'c'], (3, 2))
    """

    X: Any
    columns: np.ndarray
    var_names: pd.Index
    n_rows: int
    codes: np.ndarray | None = None
    n_groups: int = 0

    @property
    def names(self) -> list[str]:
        """Names of the features still in play."""
        return [str(self.var_names[i]) for i in self.columns]

    def sub(self) -> Any:
        """``X`` restricted to the features still in play (no copy when that is all of them)."""
        p = self.X.shape[1]
        rem = self.columns
        return self.X if rem.size == p and (rem == np.arange(p)).all() else self.X[:, rem]


def load_blocklist(path: str | Path | None = None) -> list[str]:
    """Feature names of a blocklist file (one per line, ``#`` comments).

    ``None`` reads the standard CellProfiler blocklist shipped with imgprof
    (pycytominer's ``blocklist_features.txt``, 55 features). A file with a
    ``blocklist`` header line (pycytominer's CSV format) is accepted too.

    Parameters
    ----------
    path
        A blocklist file; ``None`` for the standard one (:data:`BLOCKLIST_PATH`).

    Returns
    -------
    list of str
        The feature names, in file order.

    Examples
    --------
    >>> from imgprof.pp.feature_select import load_blocklist
    >>> len(load_blocklist())
    55
    """
    p = Path(path) if path is not None else BLOCKLIST_PATH
    if not p.exists():
        raise FileNotFoundError(f"{p}: blocklist file not found.")
    names = []
    for line in p.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and line != "blocklist":
            names.append(line)
    return names


# ----------------------------------------------------------------------------------------------
# the operations (pycytominer's names and order); column-wise statistics are computed on all
# columns (no copy) and indexed, the frequency and correlation tests on the remaining columns
# ----------------------------------------------------------------------------------------------
_OP_DATA = "data\n    The ``samples=`` rows and the features still in play (:class:`FeatureData`)."
_OP_EXAMPLE = (
    ">>> d = FeatureData(np.array([[1., 0, 2], [2, 0, 4], [3, 0, 6], [4, 0, np.nan]]), np.arange(3),\n"
    "...                  pd.Index(list('abc')), 4)  # a varies, b is constant, c = 2a with a NaN"
)
_OP_DROP = "numpy.ndarray\n    Boolean, one entry per feature in play: True drops it."
_OP_DROP_REPORT = "tuple\n    The boolean drop mask over the features in play, and a small report dict (logged)."
#: Shared docstring text of the operations: the ``data`` parameter, the returns and the example data.
_OP_DOC = {
    "params_data": f"Parameters\n----------\n{_OP_DATA}",
    "returns_drop": f"Returns\n-------\n{_OP_DROP}\n\nExamples\n--------\n{_OP_EXAMPLE}",
    "returns_drop_report": f"Returns\n-------\n{_OP_DROP_REPORT}\n\nExamples\n--------\n{_OP_EXAMPLE}",
}


@FEATURE_OPS.register("variance_threshold", params=("min_variance",))
@doc_params(**_OP_DOC)
def variance_threshold(data: FeatureData, *, min_variance: float) -> np.ndarray:
    """Drop features whose variance (``ddof=0``, NaN skipped) is not above ``min_variance``.

    {params_data}
    min_variance
        Features with a variance ``<= min_variance`` are dropped.

    {returns_drop}
    >>> variance_threshold(d, min_variance=1e-6).tolist()
    [False, True, False]
    """
    var = K.variance(data.X, min_variance)[data.columns]
    with np.errstate(invalid="ignore"):
        return ~(var > min_variance)


@FEATURE_OPS.register("frequency_threshold", params=("freq_cut", "unique_cut"))
@doc_params(**_OP_DOC)
def frequency_threshold(data: FeatureData, *, freq_cut: float, unique_cut: float) -> np.ndarray:
    """Drop features whose 2nd/1st most common value ratio is below ``freq_cut`` or distinct share below ``unique_cut``.

    {params_data}
    freq_cut, unique_cut
        Cut-offs on the 2nd/1st most common value ratio and on the distinct-value share.

    {returns_drop}
    >>> frequency_threshold(d, freq_cut=0.05, unique_cut=0.01).tolist()
    [False, True, False]
    """
    ratio, n_unique = K.frequency(data.sub())
    return (ratio < freq_cut) | (n_unique / max(data.n_rows, 1) < unique_cut)


@FEATURE_OPS.register("correlation_threshold", params=("corr_threshold", "corr_method"))
@doc_params(**_OP_DOC)
def correlation_threshold(data: FeatureData, *, corr_threshold: float, corr_method: str) -> np.ndarray:
    """Of every pair correlated above ``corr_threshold``, drop the member with the larger total |correlation|.

    {params_data}
    corr_threshold, corr_method
        Cut-off and ``"pearson"``, ``"spearman"`` or ``"kendall"``.

    {returns_drop}
    >>> correlation_threshold(d, corr_threshold=0.9, corr_method='pearson').tolist()
    [False, False, True]
    """
    return K.correlation_exclusions(K.correlation(data.sub(), corr_method), corr_threshold)


@FEATURE_OPS.register("drop_na_columns", params=("na_cutoff",))
@doc_params(**_OP_DOC)
def drop_na_columns(data: FeatureData, *, na_cutoff: float) -> np.ndarray:
    """Drop features with a NaN fraction above ``na_cutoff``.

    {params_data}
    na_cutoff
        Largest tolerated NaN fraction.

    {returns_drop}
    >>> drop_na_columns(d, na_cutoff=0.2).tolist()
    [False, False, True]
    """
    return K.na_fraction(data.X, data.n_rows)[data.columns] > na_cutoff


@FEATURE_OPS.register("blocklist", params=("blocklist",), values=False)
@doc_params(**_OP_DOC)
def blocklist(data: FeatureData, *, blocklist: Any) -> tuple[np.ndarray, dict]:
    """Drop the features of a blocklist (``None``: the standard CellProfiler one; a path; or names).

    {params_data}
    blocklist
        ``None`` (the standard CellProfiler blocklist), a blocklist file, or feature names.

    {returns_drop_report}
    >>> blocklist(d, blocklist=['b'])
    (array([False,  True, False]), {'n_blocklisted': 1})
    """
    if blocklist is None or isinstance(blocklist, (str, Path)):
        block = set(load_blocklist(blocklist))
    else:
        block = {str(b) for b in blocklist}
    return np.array([name in block for name in data.names], dtype=bool), {"n_blocklisted": len(block)}


@FEATURE_OPS.register("drop_outliers", params=("outlier_cutoff",))
@doc_params(**_OP_DOC)
def drop_outliers(data: FeatureData, *, outlier_cutoff: float) -> np.ndarray:
    """Drop features whose max or min absolute value exceeds ``outlier_cutoff``.

    {params_data}
    outlier_cutoff
        Largest tolerated absolute max/min.

    {returns_drop}
    >>> drop_outliers(d, outlier_cutoff=5).tolist()
    [False, False, True]
    """
    hi, lo = K.minmax(data.X)
    rem = data.columns
    with np.errstate(invalid="ignore"):
        return (np.abs(hi[rem]) > outlier_cutoff) | (np.abs(lo[rem]) > outlier_cutoff)


@FEATURE_OPS.register(
    "noise_removal", params=("noise_removal_stdev_cutoff",), groups=True,
    requires=("noise_removal_perturb_groups", "noise_removal_stdev_cutoff"),
)
@doc_params(**_OP_DOC)
def noise_removal(data: FeatureData, *, noise_removal_stdev_cutoff: float) -> tuple[np.ndarray, dict]:
    """Drop features whose mean within-group std (``ddof=0``) exceeds ``noise_removal_stdev_cutoff``.

    {params_data}
    noise_removal_stdev_cutoff
        Largest tolerated mean within-group std.

    {returns_drop_report}
    >>> d.codes, d.n_groups = np.array([0, 0, 1, 1]), 2
    >>> noise_removal(d, noise_removal_stdev_cutoff=0.4)
    (array([ True, False,  True]), {'n_groups': 2})
    """
    assert data.codes is not None  # groups=True: feature_select resolved them
    stdev = K.noise(data.X, data.codes, data.n_groups)[data.columns]
    with np.errstate(invalid="ignore"):
        return stdev > noise_removal_stdev_cutoff, {"n_groups": data.n_groups}
