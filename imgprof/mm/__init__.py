"""Multimodal profiling: join image-based profiles with expression/proteomics and compare what each captures.

- :func:`join` / :func:`match_keys` / :func:`join_report`: match two modalities by perturbation keys
  (compound, gene, dose, MOA...) with explicit name and dose normalisation and a report of what matched.
- :func:`map_annotations`, :func:`recode_dose`: prepare keys (Repurposing Hub MOA/target, standard dose series);
  ``annotate`` is the deprecated former name of :func:`map_annotations`.
"""

from .._core.namespace import public_dir
from ._annotate import annotate, map_annotations, recode_dose
from ._keys import STANDARD_DOSES_UM
from ._report import JoinReport
from ._spec import AmbiguousKeyError, DoseUnitError, JoinError
from .join import join, join_report, match_keys

__all__ = [
    "STANDARD_DOSES_UM",
    "AmbiguousKeyError",
    "DoseUnitError",
    "JoinError",
    "JoinReport",
    "annotate",
    "join",
    "join_report",
    "map_annotations",
    "match_keys",
    "recode_dose",
]

from .crossmodal import align, compare_retrieval, complementarity, cross_retrieval, gene_compound_match

__all__ += ["align", "compare_retrieval", "complementarity", "cross_retrieval", "gene_compound_match"]

from .compare import pipeline_summary, run_pipeline  # noqa: E402

__all__ += ["pipeline_summary", "run_pipeline"]


__dir__ = public_dir(__all__)  # tab completion shows the public API only
