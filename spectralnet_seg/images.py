"""Image input: file paths, PIL images and arrays to RGB ``uint8`` arrays, with clear errors.

Every extractor and dataset goes through [`load_image`][load_image], so all of them accept the same
inputs and fail the same way:

* a path (``str`` or ``os.PathLike``) -- read with Pillow; a missing file raises
  [`FileNotFoundError`][FileNotFoundError], an unreadable or corrupt one [`ValueError`][ValueError];
* a ``PIL.Image.Image`` of any mode;
* an array of shape ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``, of dtype
  ``uint8``, ``uint16`` (the 16-bit range is mapped onto ``0..255``, with a warning for
  data that use 12 bits or fewer), another integer
  dtype with values in ``[0, 255]``, ``bool``, or float with values in ``[0, 1]``.

Greyscale is replicated to three channels. Images with an alpha channel (RGBA, LA, palette
images with transparency) are *composited* over a constant ``background`` colour (white by
default) rather than having the alpha dropped: dropping it would expose whatever colour the
fully transparent pixels happen to store, which is arbitrary and would show up as spurious
segments. Opaque pixels are unchanged.

EXIF orientation tags are deliberately *not* applied: dataset masks are stored in the raw
pixel order of their images, and rotating one without the other would misalign them. A file
whose tag says it is displayed rotated or flipped gets a ``UserWarning`` saying so.

>>> import numpy as np
>>> from spectralnet_seg.images import load_image
>>> load_image(np.zeros((4, 5), dtype=np.uint8)).shape
(4, 5, 3)
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ._utils import is_real, user_stacklevel

__all__ = ["load_image", "load_images", "is_image_like"]

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def is_image_like(obj) -> bool:
    """Whether ``obj`` is a single image (path, PIL image or 2-D/3-D array)."""
    from PIL import Image

    if isinstance(obj, (str, os.PathLike, Image.Image)):
        return True
    return isinstance(obj, np.ndarray) and obj.ndim in (2, 3)


def load_image(image, *, min_size: int = 1, background=(255, 255, 255),
               name: str = "image") -> np.ndarray:
    """Return ``image`` as a C-contiguous RGB array of dtype ``uint8``.

    Parameters
    ----------
    image : str, os.PathLike, PIL.Image.Image or ndarray of shape (H, W[, C])
        The image; see the module docstring for the accepted forms.
    min_size : int, default=1
        Smallest accepted height and width (e.g. the patch size of a ViT).
    background : tuple of 3 ints, default=(255, 255, 255)
        Colour that transparent pixels are composited over.
    name : str, default="image"
        How the image is called in error messages (e.g. ``"images[3]"``).

    Returns
    -------
    ndarray of shape (H, W, 3), dtype uint8

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If the file cannot be decoded, the array has the wrong shape or value range, or
        the image is smaller than ``min_size``.
    TypeError
        If ``image`` is of an unsupported type or dtype.
    """
    from PIL import Image

    _check_background(background)
    if isinstance(image, (str, os.PathLike)):
        name = f"{name} ({os.fspath(image)})"
        array = _read_file(Path(image), background=background, name=name)
    elif isinstance(image, Image.Image):
        _warn_exif_orientation(image, name, advice="PIL.ImageOps.exif_transpose(image) (an "
                               "image rotated by hand keeps the tag: drop it instead)")
        array = _pil_to_rgb(image, background=background, name=name)
    elif isinstance(image, np.ndarray):
        array = _array_to_rgb(image, background=background, name=name)
    else:
        raise TypeError(
            f"{name} must be a file path, a PIL image or a numpy array of shape (H, W) or "
            f"(H, W, 3); got {type(image).__name__}."
        )
    height, width = array.shape[:2]
    if height < min_size or width < min_size:
        raise ValueError(
            f"{name} is {height}x{width} pixels, smaller than the minimum {min_size}x{min_size} "
            "(e.g. one patch of the backbone); upsample it or use a smaller patch/stride."
        )
    return np.ascontiguousarray(array)


def load_images(images, *, min_size: int = 1, background=(255, 255, 255)) -> list[np.ndarray]:
    """Load a collection of images with [`load_image`][load_image].

    Parameters
    ----------
    images : sequence of images, ndarray of shape (n_images, H, W[, C]), or a single image
        A list/tuple of paths, PIL images or arrays (sizes may differ), or a 4-D array
        holding a batch. A single image (path, PIL image, 2-D or 3-D array) is treated
        as a batch of one.
    min_size : int, default=1
        Smallest accepted height and width.
    background : tuple of 3 ints, default=(255, 255, 255)
        Colour that transparent pixels are composited over.

    Returns
    -------
    list of ndarray of shape (H_i, W_i, 3), dtype uint8

    Raises
    ------
    ValueError
        If there are no images, or one of them is invalid (its index is in the message).
    """
    if is_image_like(images):
        images = [images]
    elif isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(
                f"an array of images must have shape (n_images, H, W, C); got {images.shape}."
            )
        images = list(images)
    elif isinstance(images, (Mapping, set, frozenset)):  # keys / no order: not a batch
        raise TypeError(
            "images must be a list of paths / PIL images / arrays or an array of shape "
            f"(n_images, H, W, 3); got a {type(images).__name__} (pass list(d.values())?).")
    elif not isinstance(images, Sequence):
        try:
            images = list(images)
        except TypeError:
            raise TypeError(
                "images must be a list of paths / PIL images / arrays or an array of shape "
                f"(n_images, H, W, 3); got {type(images).__name__}."
            ) from None
    if len(images) == 0:
        raise ValueError("no images were given; pass at least one image.")
    return [load_image(im, min_size=min_size, background=background, name=f"images[{i}]")
            for i, im in enumerate(images)]


# ---------------------------------------------------------------------------- helpers
def _read_file(path: Path, *, background, name: str = "image") -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise ValueError(f"expected an image file but {path} is a directory.")
    try:
        with Image.open(path) as img:
            high_bytes_only = _is_16_bit_colour_file(img)  # known before decoding only
            img.load()  # decode now so truncated files fail here, not later
            _warn_exif_orientation(img, path)
            return _pil_to_rgb(img, background=background, name=name,
                               high_bytes_only=high_bytes_only)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image file {path}: it is corrupt or not an image "
                         f"({err}).") from err


@contextlib.contextmanager
def _without_exif_warning():
    """Silence the EXIF orientation warning while an image is read again for something else
    than its segmentation (hashing it, drawing its overlay): it was said when it was read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".* has EXIF orientation", category=UserWarning)
        yield


def _warn_exif_orientation(img, what, *,
                           advice: str = "PIL.ImageOps.exif_transpose(Image.open(path))") -> None:
    """Say so when a photo is displayed rotated: its label map follows the stored pixels.

    A PIL image opened from such a file carries the tag too (``exif_transpose`` removes it
    from the image it returns); one that is not a photo has no EXIF and costs nothing.
    """
    try:
        orientation = img.getexif().get(0x0112, 1)  # the EXIF Orientation tag
    except (AssertionError, AttributeError, ValueError, OSError):
        return  # a closed image (Pillow asserts) is refused in words by the decoding after
    if orientation not in (0, 1):
        from ._utils import user_stacklevel

        warnings.warn(
            f"{what} has EXIF orientation {orientation}: viewers show it rotated or "
            "flipped, but it is read (and its label map made) in its stored pixel order. "
            f"To segment it as displayed, pass {advice} in Python, or for the command line "
            "save it upright first (an image tool's auto-orient, e.g. ImageMagick's "
            "'mogrify -auto-orient').",
            UserWarning, stacklevel=user_stacklevel())


def _pil_to_rgb(img, *, background, name: str = "image",
                high_bytes_only: bool | None = None) -> np.ndarray:
    if high_bytes_only is None:  # known before the pixels are decoded only (load() clears
        high_bytes_only = _is_16_bit_colour_file(img)  # the tile list)
    rgb = _decoded_pil_to_rgb(img, background=background, name=name)
    if high_bytes_only and 0 < int(rgb.max()) < 16:  # black: nothing to report
        warnings.warn(
            f"{name} is a 16-bit colour image file, which Pillow reads as 8-bit (the high "
            f"byte of each value), and its largest value is below 4096: it keeps at most "
            f"{int(rgb.max()) + 1} of 256 levels. If it holds 12-bit (or fewer) data, read "
            "it as a uint16 array with another reader, scale it, and pass the array.",
            UserWarning, stacklevel=user_stacklevel())
    return rgb


def _is_16_bit_colour_file(img) -> bool:
    """Whether a lazily opened colour file stores 16 bits a channel (PNG ``RGB;16B``)."""
    return img.mode in ("RGB", "RGBA") and any(
        ";16" in str(tile[3]) for tile in (getattr(img, "tile", None) or ()))


def _decoded_pil_to_rgb(img, *, background, name: str) -> np.ndarray:
    try:
        img.load()  # decodes a lazily opened file; a no-op once its pixels are in memory
    except (AssertionError, ValueError) as err:
        # Pillow says "assert self.fp is not None" or "Operation on closed image".
        raise ValueError(
            f"{name} is a closed PIL image whose pixels cannot be read (an image opened "
            "in a `with Image.open(...)` block is closed at its end); keep a copy made "
            "inside the block (img.copy()) or pass the file path.") from err
    mode = img.mode
    if mode in ("1", "L", "P", "RGB") and "transparency" in img.info:
        # A palette index or a colour key (PNG tRNS) marks the transparent pixels.
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        return _composite(np.asarray(img.convert("RGBA")), background)
    if mode.startswith("I;16"):
        # 16-bit greyscale: Pillow's convert("RGB") clips instead of rescaling.
        grey = np.asarray(img).astype(np.uint16)
        if "transparency" in img.info:  # a 16-bit colour key (PNG tRNS): composite it
            alpha = np.where(grey == img.info["transparency"], 0, 65535).astype(np.uint16)
            grey = np.stack([grey, grey, grey, alpha], axis=-1)
        return _array_to_rgb(grey, background=background, name=name)
    if mode in ("I", "F"):
        # 32-bit integer / float greyscale (e.g. TIFF): convert("RGB") clips them to 0/255
        # and turns NaN into 0; the array rules scale [0, 1] floats and refuse the rest.
        return _array_to_rgb(np.asarray(img), background=background, name=name)
    return np.asarray(img.convert("RGB"))


def _array_to_rgb(array: np.ndarray, *, background, name: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"{name} must have shape (H, W) greyscale, (H, W, 3) RGB or (H, W, 4) RGBA; got "
            f"shape {array.shape}. Channels-first (C, H, W) arrays must be transposed to "
            "(H, W, C)."
        )
    array = _to_uint8(array, name=name)
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=-1)
    if array.shape[-1] == 4:
        return _composite(array, background)
    return array


def _to_uint8(array: np.ndarray, *, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}).")
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:
        # 16-bit images (either byte order): map the full range onto 0..255. The alpha
        # channel does not tell how many bits the colours use.
        _warn_if_few_bits_used(array[..., :3] if array.ndim == 3 else array, name)
        return (array.astype(np.float64) * (255.0 / 65535.0)).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 255:
            raise ValueError(
                f"integer {name} must have values in 0..255; got {lo}..{hi}. Rescale it or "
                "cast 16-bit data to uint16."
            )
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains NaN or infinite values.")
        lo, hi = float(array.min()), float(array.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"float {name} must have values in [0, 1]; got [{lo:.3g}, {hi:.3g}]. Divide by "
                "255 (or cast to uint8) for images stored as 0..255 floats."
            )
        # In float64: float16 products round once more, one level off for 124 of its values.
        return (array.astype(np.float64) * 255.0).round().astype(np.uint8)
    raise TypeError(f"{name} has unsupported dtype {array.dtype}; use uint8 or float in [0, 1].")


def _warn_if_few_bits_used(array: np.ndarray, name: str) -> None:
    """Warn when a 16-bit image holds 12-bit (or smaller) data: mapped by the full 16-bit
    range it keeps at most 17 of the 256 output levels (12-bit camera or scanner data stored
    as uint16; 8-bit data cast to uint16)."""
    peak = int(array.max())
    if 0 < peak < 4096:
        warnings.warn(
            f"{name} is a 16-bit image whose largest value is {peak}: mapped by the full "
            f"0..65535 range it keeps {round(peak * 255 / 65535) + 1} of 256 grey levels. If it holds "
            f"{max(1, peak.bit_length())}-bit data, scale it first (e.g. "
            f"image * (65535 // {2 ** peak.bit_length() - 1})) or convert it to uint8 yourself.",
            UserWarning, stacklevel=user_stacklevel())


def _check_background(background) -> None:
    """Three values in 0..255 (out-of-range colours would wrap around in uint8)."""
    values = np.asarray(background, dtype=object).ravel()
    if (np.ndim(background) != 1 or values.size != 3
            or not all(is_real(v) and 0 <= v <= 255 for v in values)):
        raise ValueError(f"background must be an RGB colour of 3 values in 0..255, got "
                         f"{background!r}")


def _composite(rgba: np.ndarray, background) -> np.ndarray:
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
    out = rgba[..., :3].astype(np.float32) * alpha + bg * (1.0 - alpha)
    return out.round().astype(np.uint8)
