"""Evaluation-time geometric transforms of ``(image, mask)`` pairs.

The ReCo protocol (Shin et al., NeurIPS 2022), used by the spectral segmentation paper for
Pascal Context-59 and Cityscapes-27: resize the short side to 320 pixels (bilinear for the
image, nearest neighbour for the labels so that no new class ids appear), then take the
central 320 x 320 crop.

>>> import numpy as np
>>> from spectralnet_seg.datasets import reco_protocol
>>> image, mask = reco_protocol(np.zeros((480, 640, 3), np.uint8), np.zeros((480, 640), int))
>>> image.shape, mask.shape
((320, 320, 3), (320, 320))
"""

from __future__ import annotations

from functools import partial

import numpy as np

__all__ = ["resize_short_side", "center_crop", "reco_protocol", "ReCoProtocol"]


def _resize(array: np.ndarray, size_hw: tuple[int, int], *, nearest: bool) -> np.ndarray:
    from PIL import Image

    height, width = size_hw
    if array.shape[:2] == (height, width):
        return array.copy()
    if nearest:
        # Index arithmetic instead of PIL: masks may hold values > 255 or int64 dtypes.
        # Pixel-centre sampling, as PIL's NEAREST, except where a centre falls exactly on a
        # cell border: this takes the upper cell, PIL the lower (both are equally near).
        rows = np.minimum(((np.arange(height) + 0.5) * array.shape[0] / height).astype(int),
                          array.shape[0] - 1)
        cols = np.minimum(((np.arange(width) + 0.5) * array.shape[1] / width).astype(int),
                          array.shape[1] - 1)
        return array[rows[:, None], cols[None, :]]
    if array.dtype != np.uint8:  # Pillow's bilinear resize of an RGB image needs uint8
        raise ValueError(f"images must be uint8 RGB arrays here, got dtype {array.dtype}; "
                         "convert with spectralnet_seg.images.load_image(image)")
    return np.asarray(Image.fromarray(array).resize((width, height), Image.BILINEAR))


def _check_mask_shape(image: np.ndarray, mask: np.ndarray | None) -> None:
    """Refuse a mask that is not the image's (H, W): resized or cropped anyway, it would
    come out with the image's shape and the wrong labels (a transposed mask, say)."""
    if mask is not None and np.shape(mask) != image.shape[:2]:
        raise ValueError(
            f"mask shape {np.shape(mask)} does not match image shape {image.shape[:2]}.")


def resize_short_side(image: np.ndarray, mask: np.ndarray | None, size: int):
    """Resize so that the shorter side is ``size`` pixels, keeping the aspect ratio.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8
        The image (resized bilinearly, with Pillow's antialiasing).
    mask : ndarray of shape (H, W) or None
        Labels, resized with nearest neighbour; ``None`` to resize the image only.
    size : int
        Target length of the shorter side.

    Returns
    -------
    image : ndarray of shape (H', W', 3)
    mask : ndarray of shape (H', W') or None
    """
    _check_mask_shape(image, mask)
    height, width = image.shape[:2]
    scale = size / min(height, width)
    new_hw = (max(size, round(height * scale)), max(size, round(width * scale)))
    out_image = _resize(image, new_hw, nearest=False)
    out_mask = None if mask is None else _resize(mask, new_hw, nearest=True)
    return out_image, out_mask


def center_crop(image: np.ndarray, mask: np.ndarray | None, size: int):
    """Crop the central ``size x size`` window (the image must be at least that large)."""
    _check_mask_shape(image, mask)
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(f"cannot centre-crop {size}x{size} from a {height}x{width} image.")
    top, left = (height - size) // 2, (width - size) // 2
    window = (slice(top, top + size), slice(left, left + size))
    return image[window].copy(), None if mask is None else mask[window].copy()


def reco_protocol(image: np.ndarray, mask: np.ndarray | None = None, size: int = 320):
    """Resize the short side to ``size`` then centre-crop ``size x size`` (ReCo protocol).

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8
        The image.
    mask : ndarray of shape (H, W), optional
        Its labels (nearest-neighbour resizing keeps them valid class ids / 255).
    size : int, default=320
        Output side length.

    Returns
    -------
    image : ndarray of shape (size, size, 3)
    mask : ndarray of shape (size, size) or None
    """
    image, mask = resize_short_side(image, mask, size)
    return center_crop(image, mask, size)


def ReCoProtocol(size: int = 320):  # noqa: N802 -- reads like a class at call sites
    """A ``transform`` for datasets: ``PascalContext(root, transform=ReCoProtocol(320))``."""
    return partial(reco_protocol, size=size)
