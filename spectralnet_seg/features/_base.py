"""The feature-extractor contract and the helpers every extractor shares.

An extractor turns a batch of images into a dense grid of token features per image plus
the per-token context the pixel kernel needs (token colour and position). All images of one
``extract`` call share a single token grid ``(h, w)``: extractors resize every image to a
common input size first (or require equal sizes), which keeps batching simple; the original
sizes travel along in ``image_sizes`` so label maps can be upsampled back to them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator

from .._utils import accepts_keyword, as_numpy, is_integer, is_real

__all__ = ["ExtractedFeatures", "FeatureExtractor", "token_positions", "cell_means",
           "resize_image"]


@dataclass
class ExtractedFeatures:
    """Dense token features of a batch of images.

    Parameters
    ----------
    features : ndarray of shape (n_images, h, w, d)
        Token (patch or pixel-cell) features, float32.
    colors : ndarray of shape (n_images, h, w, 3)
        Mean RGB in ``[0, 1]`` of the image area each token covers (input of the pixel
        kernel).
    positions : ndarray of shape (n_images, h, w, 2)
        Token centre ``(y, x)`` normalised to ``[0, 1]``.
    image_sizes : list of (int, int)
        Original ``(H, W)`` of each image, to upsample label maps back.

    Examples
    --------
    >>> import numpy as np
    >>> from spectralnet_seg.features import ExtractedFeatures, token_positions
    >>> out = ExtractedFeatures(np.zeros((2, 3, 4, 5)), np.zeros((2, 3, 4, 3)),
    ...                         np.broadcast_to(token_positions(3, 4), (2, 3, 4, 2)),
    ...                         [(30, 40), (30, 40)])
    >>> out.flatten().shape, out.grid_shape
    ((24, 5), (3, 4))
    """

    features: np.ndarray
    colors: np.ndarray
    positions: np.ndarray
    image_sizes: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self):
        self.features = np.ascontiguousarray(as_numpy(self.features), dtype=np.float32)
        self.colors = np.ascontiguousarray(as_numpy(self.colors), dtype=np.float32)
        self.positions = np.ascontiguousarray(as_numpy(self.positions), dtype=np.float32)
        if self.features.ndim != 4:
            raise ValueError(
                f"features must have shape (n_images, h, w, d); got {self.features.shape}")
        n, h, w, _ = self.features.shape
        if self.colors.shape != (n, h, w, 3):
            raise ValueError(f"colors must have shape {(n, h, w, 3)}; got {self.colors.shape}")
        if self.positions.shape != (n, h, w, 2):
            raise ValueError(
                f"positions must have shape {(n, h, w, 2)}; got {self.positions.shape}")
        if 0 in (h, w, self.features.shape[-1]):
            raise ValueError(f"features has an empty token grid or no feature dimension: "
                             f"shape {self.features.shape} (n_images, h, w, d)")
        if self.image_sizes is None or len(self.image_sizes) == 0:  # an array has no truth
            self.image_sizes = [(h, w)] * n
        self.image_sizes = check_image_sizes(self.image_sizes, n)

    # ------------------------------------------------------------------ shapes
    @property
    def n_images(self) -> int:
        """Number of images."""
        return self.features.shape[0]

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Token grid ``(h, w)`` shared by all images."""
        return self.features.shape[1], self.features.shape[2]

    @property
    def n_features(self) -> int:
        """Feature dimension ``d``."""
        return self.features.shape[3]

    @property
    def n_tokens(self) -> int:
        """Total number of tokens ``n_images * h * w``."""
        n, h, w, _ = self.features.shape
        return n * h * w

    # ------------------------------------------------------------------ views
    def flatten(self) -> np.ndarray:
        """Features as a matrix of shape ``(n_images * h * w, d)`` (image-major order)."""
        return self.features.reshape(-1, self.n_features)

    def unflatten(self, values: np.ndarray) -> np.ndarray:
        """Reshape per-token values ``(n_images * h * w, ...)`` to ``(n_images, h, w, ...)``."""
        values = np.asarray(values)
        if values.shape[0] != self.n_tokens:
            raise ValueError(
                f"expected {self.n_tokens} rows (one per token), got {values.shape[0]}")
        return values.reshape(self.n_images, *self.grid_shape, *values.shape[1:])

    @classmethod
    def concatenate(cls, parts) -> ExtractedFeatures:
        """Join several results with the same grid and feature dimension along images."""
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        shapes = {p.features.shape[1:] for p in parts}
        if len(shapes) != 1:
            raise ValueError(
                f"cannot concatenate features of different token grids / widths "
                f"{sorted(shapes)}: the images of one fit must share one grid (give the "
                "extractor an image_size, or precomputed features of one grid)")
        return cls(np.concatenate([p.features for p in parts]),
                   np.concatenate([p.colors for p in parts]),
                   np.concatenate([p.positions for p in parts]),
                   [s for p in parts for s in p.image_sizes])


def check_image_sizes(sizes, n_images: int) -> list[tuple[int, int]]:
    """``sizes`` as a list of ``n_images`` pairs ``(height, width)`` of positive ints.

    Label maps are upsampled to these sizes, so a wrong one would fail deep inside the
    resampling (negative dimensions, division by zero) or give maps of the wrong size.

    Examples
    --------
    >>> check_image_sizes([(48, 64.0)], 1)
    [(48, 64)]
    >>> check_image_sizes([(48, 0)], 1)
    Traceback (most recent call last):
    ...
    ValueError: image_sizes[0] must be a pair (height, width) of positive integers; got (48, 0)
    """
    sizes = list(sizes)
    if len(sizes) != n_images:
        raise ValueError(f"image_sizes has {len(sizes)} entries for {n_images} images")
    return [check_image_size(size, name=f"image_sizes[{i}]") for i, size in enumerate(sizes)]


def check_image_size(size, *, name: str = "size") -> tuple[int, int]:
    """One ``(height, width)`` of positive integers (integral floats are accepted)."""
    pair = tuple(size) if isinstance(size, (tuple, list, np.ndarray)) else ()
    if len(pair) != 2 or not all(is_real(v) and float(v).is_integer() and v >= 1
                                 for v in pair):
        raise ValueError(f"{name} must be a pair (height, width) of positive integers; "
                         f"got {size!r}")
    return int(pair[0]), int(pair[1])


def check_input_size(value, minimum: int = 1, *, name: str = "image_size") -> None:
    """Refuse an input size that is not None, an int or a pair (H, W) of ints >= ``minimum``
    (one grid cell / network stride, so that an image gives at least one token)."""
    if value is None:
        return
    sides = ([value] * 2 if is_integer(value)
             else list(value) if isinstance(value, (tuple, list)) else [])
    if len(sides) != 2 or not all(is_integer(s) and s >= minimum for s in sides):
        raise ValueError(f"{name} must be None, an int or a pair (H, W) of ints >= "
                         f"{minimum}, got {value!r}")


class FeatureExtractor(BaseEstimator, ABC):
    """Base class of feature extractors: images in, [`ExtractedFeatures`][ExtractedFeatures] out.

    Subclasses follow scikit-learn conventions: ``__init__`` stores its keyword parameters
    unchanged; validation happens in [`extract`][extract] (``self._validate_params()``); state
    built lazily (e.g. a network) lives in attributes ending in ``_``. Extractors that bring a
    call's images to one size (an ``image_size`` parameter, None for the first image's) may
    also accept ``extract(images, *, size=(H, W))`` for that call; a
    [`Segmenter`][spectralnet_seg.segmentation.Segmenter] uses it to give its batches one
    size in ``fit`` and each new image its own.
    """

    @abstractmethod
    def extract(self, images) -> ExtractedFeatures:
        """Dense features of ``images``.

        Parameters
        ----------
        images : list of (path, PIL image or ndarray of shape (H, W, 3)), or ndarray of \
shape (n_images, H, W, 3)
            The images; see ``spectralnet_seg.images.load_image`` for accepted forms.

        Returns
        -------
        ExtractedFeatures
        """


# ---------------------------------------------------------------------------- helpers
def shared_input_size(extractor, images) -> tuple[int, int] | None:
    """The size to pass as ``extract(images, size=...)`` so that every call of a run shares
    one token grid: the first image's ``(H, W)``.

    Without it an extractor whose ``image_size`` is None sizes each call by that call's
    first image, so an image's features would depend on the other images of its batch.

    Parameters
    ----------
    extractor : object with ``extract(images, ...)``
    images : sequence of images (paths, PIL images, arrays of shape (H, W, C))

    Returns
    -------
    (int, int) or None
        None when the extractor sets its own size (``image_size``), has no scikit-learn
        parameters, or takes no ``size``: its calls are then made as they come.
    """
    from ..images import load_image

    try:
        own = extractor.get_params(deep=False).get("image_size", 0)
    except AttributeError:  # a duck-typed extractor without scikit-learn parameters
        return None
    if own is not None or not accepts_keyword(extractor.extract, "size"):
        return None
    return tuple(int(side) for side in load_image(images[0], name="images[0]").shape[:2])


def token_positions(h: int, w: int) -> np.ndarray:
    """Centres ``(y, x)`` of an ``h x w`` token grid, normalised to ``[0, 1]``.

    Returns
    -------
    ndarray of shape (h, w, 2), float32
    """
    ys = (np.arange(h, dtype=np.float32) + 0.5) / h
    xs = (np.arange(w, dtype=np.float32) + 0.5) / w
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([yy, xx], axis=-1)


def _bin_edges(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    # Same bins as torch's adaptive_avg_pool: [floor(i*n/m), ceil((i+1)*n/m)).
    i = np.arange(n_out)
    return (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)


def cell_means(array: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Average ``array`` over the cells of a ``grid`` (adaptive average pooling).

    Uses a summed-area table, so the cost does not depend on the cell size.

    Parameters
    ----------
    array : ndarray of shape (H, W, C)
        Per-pixel values.
    grid : (int, int)
        Output grid ``(h, w)``, at most ``(H, W)``.

    Returns
    -------
    ndarray of shape (h, w, C), float32
    """
    height, width = array.shape[:2]
    h, w = grid
    table = np.zeros((height + 1, width + 1, array.shape[2]), dtype=np.float64)
    table[1:, 1:] = array.astype(np.float64).cumsum(0).cumsum(1)
    r0, r1 = _bin_edges(height, h)
    c0, c1 = _bin_edges(width, w)
    sums = (table[r1][:, c1] - table[r0][:, c1] - table[r1][:, c0] + table[r0][:, c0])
    area = ((r1 - r0)[:, None] * (c1 - c0)[None, :])[..., None]
    return (sums / area).astype(np.float32)


def resize_image(image: np.ndarray, size_hw: tuple[int, int],
                 interpolation: str = "bilinear") -> np.ndarray:
    """Resize an RGB ``uint8`` image to ``size_hw = (H, W)`` with Pillow (antialiased).

    Parameters
    ----------
    image : ndarray of shape (H0, W0, 3), uint8
    size_hw : (int, int)
    interpolation : {"bilinear", "bicubic", "nearest", "lanczos"}, default="bilinear"

    Returns
    -------
    ndarray of shape (H, W, 3), uint8
    """
    from PIL import Image

    methods = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
               "nearest": Image.NEAREST, "lanczos": Image.LANCZOS, "box": Image.BOX,
               "hamming": Image.HAMMING}  # every name timm's configs use
    if interpolation not in methods:  # a typo must not silently become bilinear (checked
        raise ValueError(f"interpolation must be one of {sorted(methods)}, got "  # first:
                         f"{interpolation!r}.")  # an image of the right size hid it)
    if tuple(image.shape[:2]) == tuple(size_hw):
        return image
    resample = methods[interpolation]
    out = Image.fromarray(image).resize((int(size_hw[1]), int(size_hw[0])), resample)
    return np.asarray(out)
