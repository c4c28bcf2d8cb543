"""Plots (matplotlib, scanpy style): plate layouts, embeddings, retrieval, benchmark tables, feature groups.

Every plotting function follows :mod:`scanpy.plotting`: ``show=`` (``None`` →
``sc.settings.autoshow``; a shown plot returns ``None``), ``save=`` (``True`` or a
suffix such as ``"_batch.png"`` writes into ``sc.settings.figdir``; a path with a
directory is used as is), ``return_fig=`` and, for single-panel plots, ``ax=``.
One helper (``imgprof.pl._utils.savefig_or_show``) does this for all of them.
matplotlib is imported only when a plot is drawn.
"""

from .._core.namespace import public_dir
from .bench import benchmark_table, plot_results_table
from .distance import cluster_fractions, distance_heatmap, distance_volcano
from .embedding import embedding, pca, umap
from .features import feature_group_summary, feature_groups
from .mm import (
    mm_complementarity,
    mm_cross_retrieval,
    mm_embedding,
    mm_join_report,
    mm_retrieval,
)
from .plate import plate_layout
from .retrieval import map_scatter, percent_replicating

__all__ = ["embedding", "feature_group_summary", "feature_groups", "plate_layout"]
__all__ += ["map_scatter", "percent_replicating"]
__all__ += ["pca", "umap"]
__all__ += ["mm_complementarity", "mm_cross_retrieval", "mm_embedding", "mm_join_report", "mm_retrieval"]
__all__ += ["benchmark_table", "plot_results_table"]
__all__ += ["cluster_fractions", "distance_heatmap", "distance_volcano"]


__dir__ = public_dir(__all__)  # tab completion shows the public API only
