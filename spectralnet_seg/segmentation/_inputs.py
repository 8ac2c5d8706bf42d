"""What a [`Segmenter`][spectralnet_seg.segmentation.Segmenter] accepts from its callers.

Images come as one path/PIL image/array, a 4-D batch array or an iterable of those and are
made a list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .._utils import is_integer
from ..images import is_image_like


def _as_image_list(images) -> list:
    """A list of single images from a path/PIL/array, a 4-D batch array or an iterable
    (or of image indices, for [`PrecomputedFeatures`][spectralnet_seg.features.PrecomputedFeatures])."""
    if is_image_like(images) or is_integer(images):  # an int: PrecomputedFeatures' index
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 1 and images.dtype.kind in "iu":  # indices, as for an int
            return [int(i) for i in images]
        if images.ndim != 4:
            raise ValueError(
                f"an array of images must have shape (n_images, H, W, C); got {images.shape}")
        return list(images)
    if isinstance(images, (Mapping, set, frozenset)):  # keys, or no order: not a batch
        raise TypeError(
            "images must be a path, a PIL image, an array, or a list of those; got a "
            f"{type(images).__name__}, whose order is not the images' (pass a list, e.g. "
            "sorted(...) or list(d.values())).")
    if isinstance(images, (str, bytes)) or not isinstance(images, (Sequence, np.ndarray)):
        try:
            images = list(images)
        except TypeError:
            raise TypeError(
                "images must be a path, a PIL image, an array, or a list of those; got "
                f"{type(images).__name__}") from None
    images = list(images)
    if not images:
        raise ValueError("no images were given; pass at least one image.")
    return images
