"""Plots (matplotlib, scanpy style): plate layouts, embeddings, retrieval, benchmark tables, feature groups.

Each plotting function takes ``show=`` and ``save=`` and returns the axes when not shown.
matplotlib is imported only when a plot is drawn.
"""

from .embedding import embedding
from .features import feature_group_summary, feature_groups
from .plate import plate_layout
from .retrieval import map_scatter, percent_replicating

__all__ = ["embedding", "feature_group_summary", "feature_groups", "plate_layout"]
__all__ += ["map_scatter", "percent_replicating"]

from .mm import (
    mm_complementarity,
    mm_cross_retrieval,
    mm_embedding,
    mm_join_report,
    mm_retrieval,
)

__all__ += ["mm_complementarity", "mm_cross_retrieval", "mm_embedding", "mm_join_report", "mm_retrieval"]

from .bench import benchmark_table, plot_results_table

__all__ += ["benchmark_table", "plot_results_table"]

from .distance import cluster_fractions, distance_heatmap, distance_volcano

__all__ += ["cluster_fractions", "distance_heatmap", "distance_volcano"]
