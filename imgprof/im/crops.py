"""Single-cell crops and pluggable featurizers (deep-learning embeddings).

:func:`extract_crops` cuts a fixed-size window around every object's centroid (zero
padding at image borders) for the chosen channels. A *featurizer* is any callable
``featurizer(crops) -> array (n_cells, n_features)`` where ``crops`` is a float32
array ``(n_cells, n_channels, size, size)``; :class:`TorchFeaturizer` wraps a
``torch.nn.Module`` you built or loaded yourself (nothing is downloaded).
:func:`featurize_site` runs a featurizer in batches on one site.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._core.validation import check_int

__all__ = ["TorchFeaturizer", "extract_crops", "featurize_site", "intensity_histogram_featurizer"]

Featurizer = Callable[[np.ndarray], np.ndarray]


def extract_crops(
    images: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    size: int = 64,
    channels: Sequence[str] | None = None,
    mask: str = "none",
    object_numbers: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Crops ``(n, C, size, size)`` centred on every object of ``labels``.

    Parameters
    ----------
    images
        Channel → 2-D image (same shape as ``labels``).
    labels
        Integer label image; one crop per object (centroid-centred).
    size
        Crop side in pixels.
    channels
        Channels to stack (default: all, in order).
    mask
        ``"none"`` (raw window), ``"object"`` (zero pixels outside the object) or
        ``"others"`` (zero pixels of other objects, keep background).
    object_numbers
        Objects to crop (default: every label, ascending).

    Returns
    -------
    ``(crops, object_numbers)``; windows falling off the image are zero-padded.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((20, 20), int); lab[2:6, 2:6] = 1; lab[10:15, 10:15] = 2
    >>> crops, ids = extract_crops({"DNA": np.ones((20, 20))}, lab, size=8)
    >>> crops.shape, ids.tolist()
    ((2, 1, 8, 8), [1, 2])
    """
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 2-D integer image, got shape {labels.shape} dtype {labels.dtype}.")
    chans = list(images) if channels is None else list(channels)
    missing = [c for c in chans if c not in images]
    if missing:
        raise KeyError(f"channels {missing} not among the images' channels {list(images)}.")
    for c in chans:
        if np.shape(images[c]) != labels.shape:
            raise ValueError(f"images[{c!r}] has shape {np.shape(images[c])}, labels have {labels.shape}.")
    if mask not in ("none", "object", "others"):
        raise ValueError(f"mask={mask!r}: expected 'none', 'object' or 'others'.")
    checked_size = check_int(size, "size", min_value=1)
    assert checked_size is not None  # allow_none=False
    size = checked_size
    if object_numbers is None:
        ids = np.unique(labels)
        ids = ids[ids > 0]
    else:
        ids = np.asarray(object_numbers, dtype=np.int64)
    n = len(ids)
    out = np.zeros((n, len(chans), size, size), np.float32)
    if n == 0:
        return out, ids.astype(np.int64)
    absent = ids[~np.isin(ids, np.unique(labels))]
    if len(absent):
        raise ValueError(f"object_numbers {absent[:5].tolist()} are not present in labels.")
    centers = np.asarray(ndi.center_of_mass(np.ones(labels.shape), labels, ids)).reshape(n, 2)
    stack = np.stack([np.asarray(images[c], np.float32) for c in chans])
    pad = size
    stack = np.pad(stack, ((0, 0), (pad, pad), (pad, pad)))
    lab = np.pad(labels, ((pad, pad), (pad, pad)))
    half = size // 2
    for k, (cy, cx) in enumerate(np.rint(centers).astype(int)):
        y0, x0 = cy + pad - half, cx + pad - half
        win = stack[:, y0 : y0 + size, x0 : x0 + size]
        if mask == "none":
            out[k] = win
        else:
            lw = lab[y0 : y0 + size, x0 : x0 + size]
            keep = lw == ids[k] if mask == "object" else (lw == 0) | (lw == ids[k])
            out[k] = win * keep
    return out, ids.astype(np.int64)


def intensity_histogram_featurizer(crops: np.ndarray, bins: int = 8) -> np.ndarray:
    """A tiny reference featurizer: per-channel mean, std and an intensity histogram.

    Useful for tests and as a template for your own featurizer.

    Parameters
    ----------
    crops
        ``(n, channels, size, size)`` crops.
    bins
        Histogram bins per channel.

    Returns
    -------
    numpy.ndarray
        ``(n, channels * (2 + bins))`` float32 features: mean, std, histogram per channel.

    Examples
    --------
    >>> import numpy as np
    >>> intensity_histogram_featurizer(np.zeros((3, 2, 8, 8))).shape
    (3, 20)
    """
    crops = np.asarray(crops, np.float32)
    if crops.ndim != 4:
        raise ValueError(f"crops must be (n, C, H, W), got shape {crops.shape}.")
    n, c = crops.shape[:2]
    flat = crops.reshape(n, c, -1)
    feats = [flat.mean(-1), flat.std(-1)]
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(flat, edges[1:-1]), 0, bins - 1)
    hist = np.stack([(idx == b).mean(-1) for b in range(bins)], axis=-1)  # (n, c, bins)
    feats.append(hist.reshape(n, c * bins))
    return np.concatenate(feats, axis=1)


@dataclass
class TorchFeaturizer:
    """Wrap a ``torch.nn.Module`` (that you built or loaded) as a featurizer.

    Parameters
    ----------
    model
        Module mapping a float tensor ``(batch, C, H, W)`` to ``(batch, d)`` (extra
        dimensions are flattened). It is put in ``eval()`` mode; no gradients.
    device
        ``"cpu"`` or ``"cuda"``.
    batch_size
        Crops per forward pass.
    normalize
        ``"per_crop"`` (zero mean, unit std per crop and channel), ``None``, or a pair
        ``(mean, std)`` of per-channel sequences.

    Examples
    --------
    >>> import torch, numpy as np
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    >>> TorchFeaturizer(net)(np.zeros((5, 2, 16, 16), np.float32)).shape
    (5, 4)
    """

    model: Any
    device: str = "cpu"
    batch_size: int = 256
    normalize: Any = "per_crop"
    _ready: bool = field(default=False, init=False, repr=False)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        import torch

        if not self._ready:
            self.model = self.model.to(self.device).eval()
            self._ready = True
        x = np.asarray(crops, np.float32)
        if self.normalize == "per_crop":
            mu = x.mean(axis=(2, 3), keepdims=True)
            sd = x.std(axis=(2, 3), keepdims=True)
            x = (x - mu) / np.where(sd > 0, sd, 1)
        elif self.normalize is not None:
            mean, std = (np.asarray(v, np.float32).reshape(1, -1, 1, 1) for v in self.normalize)
            x = (x - mean) / std
        outs = []
        with torch.no_grad():
            for s in range(0, len(x), self.batch_size):
                t = torch.from_numpy(x[s : s + self.batch_size]).to(self.device)
                y = self.model(t)
                outs.append(y.reshape(y.shape[0], -1).float().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def featurize_site(
    images: Mapping[str, np.ndarray],
    labels: np.ndarray,
    featurizer: Featurizer,
    *,
    size: int = 64,
    channels: Sequence[str] | None = None,
    mask: str = "none",
    batch_size: int = 512,
    object_numbers: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``featurizer`` on crops of every object of one site, in batches.

    Returns ``(embeddings (n, d) float32, object_numbers)``.

    Parameters
    ----------
    images
        Channel name → 2-D image.
    labels
        Label image of the objects to crop (0 = background).
    featurizer
        Callable ``crops (n, c, size, size) -> (n, d)`` embeddings (e.g. a model).
    size
        Crop side in pixels, centred on each object.
    channels
        Channels stacked into the crops (default: all, in order).
    mask
        ``"none"`` (raw window), ``"object"`` (zero pixels outside the object) or
        ``"others"`` (zero pixels of other objects), as in :func:`extract_crops`.
    batch_size
        Crops per featurizer call.
    object_numbers
        Only these objects (default: all labels).

    Returns
    -------
    tuple of numpy.ndarray
        ``(embeddings (n, d) float32, object_numbers (n,))``.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((32, 32), int); lab[4:10, 4:10] = 1; lab[20:28, 20:28] = 2
    >>> emb, ids = featurize_site({"DNA": np.ones((32, 32))}, lab, intensity_histogram_featurizer, size=16)
    >>> emb.shape
    (2, 10)
    """
    if not callable(featurizer):
        raise TypeError(f"featurizer must be callable (crops -> array), got {type(featurizer).__name__}.")
    crops, ids = extract_crops(images, labels, size=size, channels=channels, mask=mask, object_numbers=object_numbers)
    if len(ids) == 0:
        return np.zeros((0, 0), np.float32), ids
    outs = []
    for s in range(0, len(ids), batch_size):
        y = np.asarray(featurizer(crops[s : s + batch_size]))
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2 or y.shape[0] != min(batch_size, len(ids) - s):
            raise ValueError(
                f"featurizer returned shape {y.shape} for {min(batch_size, len(ids) - s)} crops; expected (n_crops, d)."
            )
        outs.append(y.astype(np.float32))
    emb = np.concatenate(outs)
    if not np.isfinite(emb).all():
        raise ValueError("featurizer returned NaN or inf values.")
    return emb, ids
