"""The input check every embedding metric of :mod:`imgprof.bench` starts with."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core.inputs import check_embedding, check_vector


def embedding_labels(X: Any, labels: Any, *, min_levels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``X`` as a checked 2-D embedding and ``labels`` as a 1-D array of its length with at least ``min_levels`` values.

    Parameters
    ----------
    X
        Embedding ``(n_obs, n_dims)``.
    labels
        Label of every observation.
    min_levels
        Fewest distinct labels.

    Returns
    -------
    tuple
        The embedding and the labels (see :func:`imgprof._core.inputs.check_embedding` and ``check_vector``).

    Examples
    --------
    >>> from imgprof.bench._inputs import embedding_labels
    >>> X, labels = embedding_labels([[0.0, 1.0], [1.0, 0.0]], ["a", "b"], min_levels=2)
    >>> X.shape, labels.tolist()
    ((2, 2), ['a', 'b'])
    """
    X = check_embedding(X)
    return X, check_vector(labels, X.shape[0], what="labels", min_levels=min_levels)
