"""Training-free token features from the pixels themselves: colour, position and texture.

[`PixelExtractor`][PixelExtractor] needs no network and no download, so it is what the offline demo
and
the tests run on. Every pixel gets its CIE Lab colour and multi-scale texture responses
(Gaussian-smoothed gradient magnitude and Hessian eigenvalues, from scikit-image's
``multiscale_basic_features``); these are averaged over the cells of a
grid with a cell side of ``stride`` pixels, which plays the role of a ViT's patch grid. The
texture block holds the local standard deviation of each (scale-normalised) response over a
Gaussian window about one cell wide: the mean of a Hessian eigenvalue over a textured area
is close to zero, its spread is not.

Token positions are *not* part of the features by default (``position_weight=0``): clusters
are shared across images, and a region's place in one image says nothing about its class.
They always travel in [`ExtractedFeatures.positions`][ExtractedFeatures.positions], with the cell
colours, for the
pixel kernel ([`SpatialColorKernel`][spectralnet_seg.kernels.SpatialColorKernel]).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.utils._param_validation import Interval

from .._utils import progress
from ..images import load_images
from ..neighbors import available_memory_bytes
from ._base import (
    ExtractedFeatures,
    FeatureExtractor,
    cell_means,
    check_input_size,
    resize_image,
    token_positions,
)
from ._registry import register_extractor

__all__ = ["ImageMemoryError", "PixelExtractor", "common_size", "estimate_pixel_memory"]

# Lab channels span about [0, 100] (L) and [-110, 110] (a, b); this brings them to ~[-1, 1].
_LAB_SCALE = np.array([1 / 100, 1 / 110, 1 / 110], dtype=np.float32)
# Lightness given to cells whose features are all exactly zero (flat pure black): the limit
# of a flat dark grey, whose direction (lightness only) it takes, so that the cosine metric
# of the paper's kernel is defined there. Far below the lightness of 8-bit grey 1 (~0.003).
_BLACK_LIGHTNESS = 1e-6
# Peak bytes per pixel of one image's features (tracemalloc, 500-1000 px images): float64
# texture responses of skimage and their float32 moments grow with the number of scales.
_BYTES_PER_PIXEL = 40
_BYTES_PER_PIXEL_PER_SCALE = 180
_FIXED_BYTES = 16 * 2**20  # skimage / scipy workspaces that do not grow with the image


class ImageMemoryError(ValueError, MemoryError):
    """Images whose feature extraction would need more memory than is available."""


def estimate_pixel_memory(height: int, width: int, n_scales: int) -> int:
    """Peak memory (bytes) [`PixelExtractor`][PixelExtractor] needs to process one ``height x
    width`` image.

    Parameters
    ----------
    height, width : int
        Size the image is processed at (after ``image_size`` resizing).
    n_scales : int
        Number of texture scales ([`PixelExtractor.n_scales`][PixelExtractor.n_scales]).

    Returns
    -------
    int
        About ``(40 + 180 * n_scales)`` bytes per pixel (760 with the default 4 scales)
        plus 16 MiB, measured on the temporaries of colour conversion, texture responses and
        their smoothed moments; images are processed one at a time.

    Examples
    --------
    >>> round(estimate_pixel_memory(3000, 3000, 4) / 2**30, 1)
    6.4
    """
    per_pixel = _BYTES_PER_PIXEL + _BYTES_PER_PIXEL_PER_SCALE * n_scales
    return int(height) * int(width) * per_pixel + _FIXED_BYTES


def common_size(images: list[np.ndarray], image_size, size=None) -> tuple[int, int]:
    """The ``(H, W)`` every image of one call is resized to.

    Parameters
    ----------
    images : list of ndarray of shape (H_i, W_i, 3)
    image_size : int, (int, int) or None
        A square side, an explicit ``(H, W)``, or ``None`` for ``size``.
    size : (int, int) or None, default=None
        The call's own size (``extract(images, size=...)``); None: the first image's.
    """
    if image_size is None:
        image_size = size
    if image_size is None:
        return tuple(int(s) for s in images[0].shape[:2])
    if isinstance(image_size, Integral):
        return int(image_size), int(image_size)
    return int(image_size[0]), int(image_size[1])


@register_extractor("pixel")
class PixelExtractor(FeatureExtractor):
    """Colour, position and multi-scale texture features averaged over a grid of cells.

    Parameters
    ----------
    stride : int, default=8
        Side of a grid cell in pixels: an ``H x W`` image gives a grid of
        ``(max(1, H // stride), max(1, W // stride))`` tokens. Images must be at least
        ``stride`` pixels on each side.
    image_size : int, (int, int) or None, default=None
        Size every image is resized to before extraction, so that all images of one call
        share a token grid. ``None`` uses the size of the first image of each call.
    sigma_min, sigma_max : float, default=1.0, 8.0
        Smallest and largest Gaussian scale of the texture responses, in pixels.
    num_sigma : int, optional
        Number of scales between them (log-spaced); default ``log2(sigma_max / sigma_min)
        + 1``.
    color_weight : float, default=1.0
        Factor on the 3 Lab channels (scaled to about ``[-1, 1]``). A flat, pure black cell,
        whose features would all be 0, gets a lightness of 1e-6 instead: the limit of a flat
        dark grey, so that cosine similarities (``kernel="paper"``) are defined for it.
    position_weight : float, default=0.0
        Factor on the 2 normalised cell coordinates ``(y, x)`` in ``[0, 1]``; with 0 they
        are left out of the features.
    texture_weight : float, default=4.0
        Factor on the texture block (``3 * n_scales`` values: the local standard deviation
        of one gradient magnitude and two Hessian eigenvalues per scale).
    texture_window : float, optional
        Standard deviation in pixels of the Gaussian window of the texture statistics;
        default ``stride``; 0 uses the cell alone.
    verbose : bool, default=False
        Show a progress bar over images.

    See Also
    --------
    TimmExtractor : features of a pretrained network.
    skimage.feature.multiscale_basic_features : the per-pixel texture responses.

    Examples
    --------
    >>> import numpy as np
    >>> from spectralnet_seg.features import PixelExtractor
    >>> images = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    >>> out = PixelExtractor(stride=8).extract(images)
    >>> out.features.shape, out.colors.shape, out.positions.shape
    ((2, 4, 6, 15), (2, 4, 6, 3), (2, 4, 6, 2))
    """

    _parameter_constraints: dict = {
        "stride": [Interval(Integral, 1, None, closed="left")],
        "image_size": [None, Interval(Integral, 1, None, closed="left"), tuple, list],
        "sigma_min": [Interval(Real, 0, None, closed="neither")],
        "sigma_max": [Interval(Real, 0, None, closed="neither")],
        "num_sigma": [None, Interval(Integral, 1, None, closed="left")],
        "color_weight": [Interval(Real, 0, None, closed="left")],
        "position_weight": [Interval(Real, 0, None, closed="left")],
        "texture_weight": [Interval(Real, 0, None, closed="left")],
        "texture_window": [None, Interval(Real, 0, None, closed="left")],
        "verbose": ["boolean", "verbose"],
    }

    def __init__(self, *, stride: int = 8, image_size=None, sigma_min: float = 1.0,
                 sigma_max: float = 8.0, num_sigma: int | None = None,
                 color_weight: float = 1.0, position_weight: float = 0.0,
                 texture_weight: float = 4.0, texture_window: float | None = None,
                 verbose: bool = False):
        self.stride = stride
        self.image_size = image_size
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.num_sigma = num_sigma
        self.color_weight = color_weight
        self.position_weight = position_weight
        self.texture_weight = texture_weight
        self.texture_window = texture_window
        self.verbose = verbose

    @property
    def n_scales(self) -> int:
        """Number of texture scales (``num_sigma`` or its default)."""
        if self.num_sigma is not None:
            return int(self.num_sigma)
        return int(np.log2(self.sigma_max / self.sigma_min) + 1)

    @property
    def n_features(self) -> int:
        """Feature dimension ``d``: 3 colour + 2 position (if weighted) + ``3 * n_scales``."""
        return 3 + (2 if self.position_weight > 0 else 0) + 3 * self.n_scales

    def extract(self, images, *, size=None) -> ExtractedFeatures:
        """Features of ``images`` on a grid of ``stride``-pixel cells.

        Parameters
        ----------
        images : list of (path, PIL image or ndarray of shape (H, W, 3)), or ndarray of \
shape (n_images, H, W, 3)
            The images (any sizes; resized to one common size, see ``image_size``).
        size : (int, int), optional
            Size to resize to in this call when ``image_size`` is None (instead of the
            first image's); a [`Segmenter`][spectralnet_seg.segmentation.Segmenter] passes
            its training size so that all its batches share one token grid.

        Returns
        -------
        ExtractedFeatures
            ``features`` of shape ``(n_images, h, w, n_features)`` (float32: weighted Lab
            colour, position ``(y, x)`` if ``position_weight > 0``, texture spreads),
            ``colors`` (mean RGB in ``[0, 1]`` per cell), ``positions`` (cell centres) and
            the original ``image_sizes``.
        """
        self._validate_params()
        if self.sigma_max < self.sigma_min:
            raise ValueError(f"sigma_max ({self.sigma_max}) must be >= sigma_min "
                             f"({self.sigma_min})")
        minimum = max(self.stride, 2)  # the texture filters' gradients need 2 pixels a side
        check_input_size(self.image_size, minimum, name="image_size")
        loaded = load_images(images, min_size=minimum)  # names a too-small image first
        check_input_size(size, minimum, name="size")
        size = common_size(loaded, self.image_size, size)
        self._check_memory(size, len(loaded))
        grid = (max(1, size[0] // self.stride), max(1, size[1] // self.stride))
        features, colors = [], []
        for image in progress(loaded, verbose=self.verbose, desc="pixel features",
                              total=len(loaded)):
            feats, rgb = self._image_features(resize_image(image, size), grid)
            features.append(feats)
            colors.append(rgb)
        positions = np.broadcast_to(token_positions(*grid), (len(loaded), *grid, 2))
        return ExtractedFeatures(np.stack(features), np.stack(colors), positions,
                                 [im.shape[:2] for im in loaded])

    def _check_memory(self, size: tuple[int, int], n_images: int) -> None:
        """Refuse, before any work, images whose features would not fit in memory."""
        need = estimate_pixel_memory(*size, self.n_scales)
        budget = available_memory_bytes()
        if budget is not None and need > budget:
            side = int(np.sqrt(budget / need * size[0] * size[1]))
            raise ImageMemoryError(
                f"PixelExtractor would need about {need / 2**30:.1f} GiB to process images of "
                f"{size[0]} x {size[1]} pixels (~{need // (size[0] * size[1])} bytes per "
                f"pixel, one image at a time; {n_images} image(s) in this call), but only "
                f"{budget / 2**30:.1f} GiB are available. Pass image_size=(H, W) to resize "
                f"them first (at most about {side} x {side} pixels fit), or use a smaller "
                "sigma_max / num_sigma.")

    def _scale_factors(self) -> np.ndarray:
        """``sigma`` for each gradient and ``sigma**2`` for each Hessian eigenvalue."""
        sigmas = np.logspace(np.log2(self.sigma_min), np.log2(self.sigma_max),
                             num=self.n_scales, base=2)
        return np.stack([sigmas, sigmas**2, sigmas**2], axis=1).reshape(-1).astype(np.float32)

    def _image_features(self, image: np.ndarray, grid: tuple[int, int]):
        """Per-cell features ``(h, w, d)`` and mean colours ``(h, w, 3)`` of one image."""
        from skimage.color import rgb2gray, rgb2lab
        from skimage.feature import multiscale_basic_features

        rgb = image.astype(np.float32) / 255.0
        lab = rgb2lab(rgb).astype(np.float32) * _LAB_SCALE
        responses = multiscale_basic_features(
            rgb2gray(rgb), intensity=False, edges=True, texture=True,
            sigma_min=self.sigma_min, sigma_max=self.sigma_max, num_sigma=self.n_scales,
            workers=1,  # the caller decides on parallelism (e.g. over images)
        ).astype(np.float32)  # (H, W, 3 * n_scales): per scale [gradient, 2 Hessian eigvals]
        # Scale-normalised derivatives (Lindeberg): sigma * gradient, sigma^2 * Hessian;
        # without it the coarse scales are orders of magnitude weaker and barely count.
        responses *= self._scale_factors()
        colour = cell_means(np.concatenate([rgb, lab], axis=-1), grid)
        # Texture = local spread of each response over a Gaussian window (about one cell,
        # overlapping its neighbours): wider than a cell gives steadier statistics. The
        # mean of a response is left out: over a textured area it is near zero and noisy.
        moments = np.concatenate([responses, responses**2], axis=-1)
        window = self.stride if self.texture_window is None else self.texture_window
        if window > 0:
            moments = gaussian_filter(moments, sigma=(window, window, 0), mode="reflect")
        moments = cell_means(moments, grid)
        n_resp = responses.shape[-1]
        spread = np.sqrt(np.maximum(moments[..., n_resp:] - moments[..., :n_resp]**2, 0.0))
        blocks = [self.color_weight * colour[..., 3:]]
        if self.position_weight > 0:
            blocks.append(self.position_weight * token_positions(*grid))
        blocks.append(self.texture_weight * spread)
        feats = np.concatenate(blocks, axis=-1)
        feats[~feats.any(axis=-1), 0] = _BLACK_LIGHTNESS  # black: no direction otherwise
        rgb_mean = colour[..., :3]
        return feats.astype(np.float32), np.clip(rgb_mean, 0.0, 1.0)
