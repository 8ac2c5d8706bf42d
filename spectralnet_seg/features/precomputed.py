"""Features the user already has (from another pipeline, or a cache on disk).

[`PrecomputedFeatures`][PrecomputedFeatures] serves stored token grids through the extractor
contract, so
that they can go into a [`Segmenter`][spectralnet_seg.segmentation.Segmenter]; the "images" it
is asked about are the integer indices of the stored entries.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from .._utils import check_numeric
from ..images import is_image_like
from ._base import ExtractedFeatures, FeatureExtractor, check_image_sizes, token_positions
from ._registry import register_extractor

__all__ = ["PrecomputedFeatures"]


def _as_grids(value, name: str, n_channels: int | None, n_images: int | None) -> list:
    """A list of ``(h, w, c)`` float32 arrays from a 4-D array or a list of 3-D arrays."""
    if isinstance(value, np.ndarray) or not isinstance(value, (list, tuple)):
        value = np.asarray(value)
        if value.ndim != 4:
            raise ValueError(f"{name} must have shape (n_images, h, w, c) or be a list of "
                             f"(h, w, c) arrays; got an array of shape {value.shape}")
        value = list(value)
    grids = []
    for i, grid in enumerate(value):
        grid = np.asarray(check_numeric(grid, name=f"{name}[{i}]"), dtype=np.float32)
        if grid.ndim != 3 or (n_channels is not None and grid.shape[-1] != n_channels):
            want = f"(h, w, {n_channels})" if n_channels else "(h, w, d)"
            raise ValueError(f"{name}[{i}] must have shape {want}; got {grid.shape}")
        if 0 in grid.shape:
            raise ValueError(f"{name}[{i}] is empty: shape {grid.shape} (h, w, c)")
        if not np.all(np.isfinite(grid)):
            raise ValueError(f"{name}[{i}] contains NaN or infinite values")
        grids.append(grid)
    if not grids:
        raise ValueError(f"{name} is empty; pass at least one image's features")
    if n_images is not None and len(grids) != n_images:
        raise ValueError(f"{name} has {len(grids)} entries but features has {n_images}")
    return grids


@register_extractor("precomputed")
class PrecomputedFeatures(FeatureExtractor):
    """Serve user-supplied token features through the [`FeatureExtractor`][FeatureExtractor]
    contract.

    Parameters
    ----------
    features : ndarray of shape (n_images, h, w, d) or list of ndarray of shape (h_i, w_i, d)
        Token features of each image. Grids may differ between images, but the images of
        one [`extract`][extract] call must share a grid.
    colors : same layout as ``features`` with 3 channels, optional
        Mean RGB in ``[0, 1]`` of each token (for the pixel kernel). Default: mid-grey
        everywhere, so a colour-position kernel sees positions only.
    positions : same layout as ``features`` with 2 channels, optional
        Token centres ``(y, x)`` in ``[0, 1]``. Default: the centres of a regular grid.
    image_sizes : list of (int, int), optional
        Full-resolution ``(H, W)`` of each image, which label maps are upsampled to.
        Default: the token grid itself.

    Examples
    --------
    >>> import numpy as np
    >>> from spectralnet_seg.features import PrecomputedFeatures
    >>> store = PrecomputedFeatures(np.ones((3, 4, 5, 8)), image_sizes=[(64, 80)] * 3)
    >>> out = store.extract([2, 0])
    >>> out.features.shape, out.image_sizes
    ((2, 4, 5, 8), [(64, 80), (64, 80)])
    """

    _parameter_constraints: dict = {
        "features": ["array-like"],
        "colors": [None, "array-like"],
        "positions": [None, "array-like"],
        "image_sizes": [None, list, tuple],
    }

    def __init__(self, features, *, colors=None, positions=None, image_sizes=None):
        self.features = features
        self.colors = colors
        self.positions = positions
        self.image_sizes = image_sizes

    def __len__(self) -> int:
        return len(self.features)

    def _stored(self):
        """Validated per-image feature, colour and position grids and image sizes."""
        feats = _as_grids(self.features, "features", None, None)
        n = len(feats)
        if len({f.shape[-1] for f in feats}) != 1:
            raise ValueError("all entries of features must have the same dimension d; got "
                             f"{sorted({f.shape[-1] for f in feats})}")
        colors = (None if self.colors is None
                  else _as_grids(self.colors, "colors", 3, n))
        positions = (None if self.positions is None
                     else _as_grids(self.positions, "positions", 2, n))
        for name, grids in (("colors", colors), ("positions", positions)):
            for i, grid in enumerate(grids or []):
                if grid.shape[:2] != feats[i].shape[:2]:
                    raise ValueError(f"{name}[{i}] has grid {grid.shape[:2]} but features[{i}] "
                                     f"has {feats[i].shape[:2]}")
        sizes = self.image_sizes
        if sizes is None:
            sizes = [f.shape[:2] for f in feats]
        return feats, colors, positions, check_image_sizes(sizes, n)

    def extract(self, images) -> ExtractedFeatures:
        """The stored features of the images numbered ``images``.

        Parameters
        ----------
        images : int, sequence of int or ndarray of int
            Indices into the stored images (negative indices count from the end).

        Returns
        -------
        ExtractedFeatures
            The selected features ``(n_selected, h, w, d)`` with their colours, positions and
            image sizes.
        """
        self._validate_params()
        feats, colors, positions, sizes = self._stored()
        indices = self._check_indices(images, len(feats))
        grids = {feats[i].shape[:2] for i in indices}
        if len(grids) != 1:
            raise ValueError(
                f"the selected images have different token grids {sorted(grids)}; select "
                "images with one grid per extract call (e.g. a batch_size of 1)")
        grid = grids.pop()
        gray = np.full((*grid, 3), 0.5, dtype=np.float32)
        return ExtractedFeatures(
            np.stack([feats[i] for i in indices]),
            np.stack([gray if colors is None else colors[i] for i in indices]),
            np.stack([token_positions(*grid) if positions is None else positions[i]
                      for i in indices]),
            [sizes[i] for i in indices])

    @staticmethod
    def _check_indices(images, n: int) -> list[int]:
        if isinstance(images, Integral):
            images = [images]
        elif isinstance(images, np.ndarray) and images.ndim > 1 or is_image_like(images):
            raise TypeError("PrecomputedFeatures.extract takes the indices of stored images "
                            "(ints), not images")
        indices = list(images)
        if not indices:
            raise ValueError("no images were selected; pass at least one index")
        for item in indices:
            if not isinstance(item, Integral) or isinstance(item, bool):
                raise TypeError("PrecomputedFeatures.extract takes the indices of stored "
                                f"images (ints), got an item of type {type(item).__name__}")
            if not -n <= item < n:
                raise IndexError(f"image index {item} is out of range for {n} stored images")
        return [int(i) % n for i in indices]
