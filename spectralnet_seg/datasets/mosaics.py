"""Texture mosaics: an offline segmentation benchmark built from scikit-image's photographs.

In the style of the Prague texture-segmentation benchmark, each image is a partition of the
canvas into regions (Voronoi cells or smooth blobs), each region filled with one texture.
The textures are real photographs that ship inside the scikit-image wheel (nothing is
downloaded):

============  ====================================================  ======
class         source (``skimage.data``) and crop (rows, cols)        colour
============  ====================================================  ======
brick         ``brick()``, whole image, half size                    grey
grass         ``grass()``, whole image, half size                    grey
gravel        ``gravel()``, whole image, half size                   grey
wood          ``coffee()`` table top right of the saucer             colour
fur           ``chelsea()`` forehead above the eyes                  colour
tissue        ``immunohistochemistry()`` stained epithelium          colour
retina        ``retina()`` fundus away from disc and fovea, half     colour
starfield     ``hubble_deep_field()``, half size                     colour
moon          ``moon()``, whole image, half size                     grey
============  ====================================================  ======

The three grey textures come first and have their mean brightness equalised, so colour
alone cannot separate them; the colour textures (wood, fur, tissue) share brownish hues.
Grey photographs are replicated to three channels, not tinted.

The class of a pixel is the identity of its texture, shared across the whole dataset (as in
semantic segmentation), and the masks are exact. Each region uses a random crop of its
texture with random flips and a small brightness change, so the same class looks different
from image to image. Everything is a deterministic function of ``(seed, index)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
from scipy.ndimage import gaussian_filter

from .._utils import is_integer
from ._base import SegmentationDataset, register_dataset

__all__ = ["TextureMosaics", "TEXTURE_NAMES", "load_texture"]

# name -> (skimage.data function, crop (row0, row1, col0, col1) or None, zoom)
_TEXTURES: dict[str, tuple[str, tuple[int, int, int, int] | None, float]] = {
    "brick": ("brick", None, 0.5),
    "grass": ("grass", None, 0.5),
    "gravel": ("gravel", None, 0.5),
    "wood": ("coffee", (0, 400, 495, 600), 1.0),
    "fur": ("chelsea", (0, 95, 60, 330), 1.0),
    "tissue": ("immunohistochemistry", (0, 240, 0, 250), 1.0),
    "retina": ("retina", (300, 700, 780, 1180), 0.5),
    "starfield": ("hubble_deep_field", None, 0.5),
    "moon": ("moon", None, 0.5),
}
TEXTURE_NAMES: tuple[str, ...] = tuple(_TEXTURES)
"""All available texture classes, in class-id order."""

# Brightness the grey textures are equalised to (their natural means are 111-126 of 255).
_GREY_MEAN = 118.0


@cache
def load_texture(name: str) -> np.ndarray:
    """The source photograph of texture ``name`` as ``(H, W, 3) uint8`` (cached).

    Parameters
    ----------
    name : str
        One of [`TEXTURE_NAMES`][TEXTURE_NAMES].
    """
    import skimage.data
    from PIL import Image

    if name not in _TEXTURES:
        raise ValueError(f"unknown texture {name!r}; available: {', '.join(TEXTURE_NAMES)}")
    source, crop, zoom = _TEXTURES[name]
    image = getattr(skimage.data, source)()
    if crop is not None:
        image = image[crop[0]:crop[1], crop[2]:crop[3]]
    grey = image.ndim == 2
    if grey:
        image = image.astype(np.float32)
        image = np.clip(image + (_GREY_MEAN - image.mean()), 0, 255).astype(np.uint8)
        image = np.repeat(image[..., None], 3, axis=-1)
    if zoom != 1.0:
        height, width = image.shape[:2]
        size = (round(width * zoom), round(height * zoom))
        image = np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))
    image = np.ascontiguousarray(image)
    image.setflags(write=False)
    return image


def _region_map(rng: np.random.Generator, size: int, n_regions: int, shape: str) -> np.ndarray:
    """Partition a ``size x size`` canvas into ``n_regions`` labelled regions."""
    if shape == "voronoi":
        # Seeds at least ~half the mean cell spacing apart, so no cell is a sliver.
        min_dist = 0.5 / np.sqrt(n_regions)
        seeds = rng.random((1, 2))
        for _ in range(1000):
            if len(seeds) == n_regions:
                break
            candidate = rng.random(2)
            if np.min(np.linalg.norm(seeds - candidate, axis=1)) >= min_dist:
                seeds = np.vstack([seeds, candidate])
        while len(seeds) < n_regions:  # pathological spacing: accept what we have
            seeds = np.vstack([seeds, rng.random(2)])
        grid = (np.arange(size) + 0.5) / size
        yy, xx = np.meshgrid(grid, grid, indexing="ij")
        dist = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
        return np.argmin(dist, axis=-1)
    # "blobs": the argmax of independent smooth random fields gives organic shapes.
    fields = rng.standard_normal((n_regions, size, size))
    fields = np.stack([gaussian_filter(f, sigma=size / 8, mode="wrap") for f in fields])
    return np.argmax(fields, axis=0)


def _texture_patch(rng: np.random.Generator, texture: np.ndarray, size: int) -> np.ndarray:
    """A random ``size x size`` view of ``texture``: crop, flips, brightness jitter."""
    height, width = texture.shape[:2]
    if height < size or width < size:  # mirror-tile small crops up to the canvas size
        pad = ((0, max(0, size - height)), (0, max(0, size - width)), (0, 0))
        texture = np.pad(texture, pad, mode="symmetric")
        height, width = texture.shape[:2]
    top = rng.integers(0, height - size + 1)
    left = rng.integers(0, width - size + 1)
    patch = texture[top:top + size, left:left + size].astype(np.float32)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if rng.random() < 0.5:
        patch = patch[::-1]
    patch *= rng.uniform(0.9, 1.1)
    return patch


def _texture_names(textures: Sequence[str] | None, n_textures: int | None) -> tuple[str, ...]:
    """The class names of a mosaic set from its ``textures`` / ``n_textures`` arguments."""
    if textures is None:
        return TEXTURE_NAMES[: 6 if n_textures is None else int(n_textures)]
    if isinstance(textures, str):
        raise ValueError(f"textures must be a sequence of texture names, got the string "
                         f"{textures!r}; write ({textures!r},) for one texture")
    names = tuple(textures)
    unknown = [name for name in names if name not in _TEXTURES]
    if not names or unknown:
        raise ValueError(f"textures must name one or more of {', '.join(TEXTURE_NAMES)}; "
                         f"got {list(names)!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"textures must be distinct, got {list(names)!r}")
    if n_textures is not None and n_textures != len(names):
        raise ValueError(f"n_textures={n_textures} contradicts the {len(names)} textures "
                         f"{list(names)!r}; give one of the two")
    return names


@register_dataset("mosaics")
class TextureMosaics(SegmentationDataset):
    """Deterministic texture-mosaic images with exact ground-truth masks.

    Parameters
    ----------
    n_images : int, default=20
        Number of images.
    image_size : int, default=128
        Side of the square images, in pixels (at least 16).
    n_regions : int or (int, int), default=(3, 5)
        Regions per image: a fixed number, or an inclusive range sampled per image.
    n_textures : int, optional
        Number of texture classes used, the first ``n_textures`` of
        [`TEXTURE_NAMES`][TEXTURE_NAMES] (at most 9); 6 when ``textures`` is not given.
        Regions of one image get distinct textures whenever ``n_regions <= n_textures``.
    textures : sequence of str, optional
        The texture classes by name, in class-id order (distinct names of
        [`TEXTURE_NAMES`][TEXTURE_NAMES]), instead of the first ``n_textures``: e.g.
        ``("retina", "starfield", "moon")`` for mosaics that share no photograph with the
        demo's.
    region_shape : {"voronoi", "blobs", "mixed"}, default="voronoi"
        Voronoi cells (convex, straight borders), blobs (argmax of smooth random fields:
        curved borders, possibly several pieces per class) or a random choice per image.
    seed : int, default=0
        Seed; image ``i`` depends only on ``(seed, i)``.
    transform : callable, optional
        Applied to each ``(image, mask)`` pair on access.

    Attributes
    ----------
    class_names : list of str
        Texture name of each class id.

    Examples
    --------
    >>> from spectralnet_seg.datasets import TextureMosaics
    >>> data = TextureMosaics(n_images=2, image_size=64, seed=0)
    >>> image, mask = data[0]
    >>> image.shape, image.dtype.name, mask.shape, data.n_classes
    ((64, 64, 3), 'uint8', (64, 64), 6)
    """

    def __init__(self, n_images: int = 20, *, image_size: int = 128, n_regions=(3, 5),
                 n_textures: int | None = None, textures: Sequence[str] | None = None,
                 region_shape: str = "voronoi", seed: int = 0, transform=None):
        if not is_integer(n_images) or n_images < 1:
            raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
        if not is_integer(image_size) or image_size < 16:
            raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}")
        given_regions = n_regions
        if is_integer(n_regions):
            n_regions = (int(n_regions), int(n_regions))
        n_regions = tuple(n_regions) if isinstance(n_regions, (tuple, list)) else (n_regions,)
        if (len(n_regions) != 2 or not all(is_integer(v) for v in n_regions)
                or not 1 <= n_regions[0] <= n_regions[1]):
            raise ValueError(
                f"n_regions must be a positive int or a range (low, high) with "
                f"1 <= low <= high, got {given_regions!r}")
        if n_textures is not None and (not is_integer(n_textures)
                                       or not 1 <= n_textures <= len(TEXTURE_NAMES)):
            raise ValueError(
                f"n_textures must be an integer in [1, {len(TEXTURE_NAMES)}], got {n_textures!r}")
        names = _texture_names(textures, n_textures)
        if region_shape not in ("voronoi", "blobs", "mixed"):
            raise ValueError(
                f"region_shape must be 'voronoi', 'blobs' or 'mixed', got {region_shape!r}")
        if not is_integer(seed) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.n_images = int(n_images)
        self.image_size = int(image_size)
        self.n_regions = n_regions
        self.textures = names
        self.n_textures = len(names)
        self.region_shape = region_shape
        self.seed = int(seed)
        self.transform = transform

    def __len__(self) -> int:
        return self.n_images

    @property
    def class_names(self) -> list[str]:
        return list(self.textures)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, index])
        size = self.image_size
        n_regions = int(rng.integers(self.n_regions[0], self.n_regions[1] + 1))
        shape = self.region_shape
        if shape == "mixed":
            shape = "voronoi" if rng.random() < 0.5 else "blobs"
        regions = _region_map(rng, size, n_regions, shape)
        classes = rng.choice(self.n_textures, size=n_regions,
                             replace=n_regions > self.n_textures)
        image = np.zeros((size, size, 3), dtype=np.float32)
        for region, cls in enumerate(classes):
            inside = regions == region
            patch = _texture_patch(rng, load_texture(self.textures[cls]), size)
            image[inside] = patch[inside]
        mask = classes[regions].astype(np.int64)
        return np.clip(image, 0, 255).round().astype(np.uint8), mask
