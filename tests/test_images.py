"""Tests of image loading and validation (spectralnet_seg.images)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from spectralnet_seg.images import is_image_like, load_image, load_images


def _rgb(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_file_pil_and_array_agree(tmp_path):
    rgb = _rgb()
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    for source in (path, str(path), Image.fromarray(rgb), rgb):
        out = load_image(source)
        assert out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, rgb)


def test_greyscale_is_replicated(tmp_path):
    grey = _rgb()[..., 0]
    path = tmp_path / "grey.png"
    Image.fromarray(grey).save(path)
    for source in (path, grey, grey[..., None], Image.fromarray(grey)):
        out = load_image(source)
        assert out.shape == (5, 7, 3)
        np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=-1))


def test_alpha_is_composited_over_the_background(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[0, 0, 3] = 255  # opaque: kept
    rgba[0, 1, 3] = 0  # transparent: background
    rgba[1, :, 3] = 128
    out = load_image(rgba)
    np.testing.assert_array_equal(out[0, 0], (10, 20, 30))
    np.testing.assert_array_equal(out[0, 1], (255, 255, 255))
    np.testing.assert_array_equal(load_image(rgba, background=(0, 0, 0))[0, 1], (0, 0, 0))
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    np.testing.assert_array_equal(load_image(path), out)
    # palette image with a transparent index
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    palette.putpalette([200, 0, 0, 0, 0, 200] + [0] * 762)
    palette.info["transparency"] = 1
    np.testing.assert_array_equal(load_image(palette), [[(200, 0, 0), (255, 255, 255)]])
    # greyscale and RGB PNGs with a colour key (tRNS): the keyed pixels were left black
    grey = np.array([[0, 100]], np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "key_l.png", transparency=0)
    np.testing.assert_array_equal(load_image(tmp_path / "key_l.png"),
                                  [[(255, 255, 255), (100, 100, 100)]])
    rgb = np.array([[(1, 2, 3), (40, 50, 60)]], np.uint8)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "key_rgb.png", transparency=(1, 2, 3))
    np.testing.assert_array_equal(load_image(tmp_path / "key_rgb.png", background=(9, 9, 9)),
                                  [[(9, 9, 9), (40, 50, 60)]])


def test_dtypes_are_converted():
    np.testing.assert_array_equal(load_image(np.full((2, 2), 1.0))[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(load_image(np.ones((2, 2), bool))[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(load_image(np.full((2, 2), 65535, np.uint16))[0, 0],
                                  (255, 255, 255))
    np.testing.assert_array_equal(load_image(np.full((2, 2, 3), 7, np.int64))[0, 0], (7, 7, 7))
    sixteen = Image.fromarray(np.full((2, 2), 65535, np.uint16))  # mode I;16
    np.testing.assert_array_equal(load_image(sixteen)[0, 0], (255, 255, 255))


@pytest.mark.parametrize("bits", [8, 12])
def test_16_bit_images_holding_fewer_bits_are_reported(bits):
    """A 12-bit image in uint16 is mapped by the full 16-bit range onto 17 grey levels:
    silently, it lost almost all of its contrast."""
    peak = 2**bits - 1
    ramp = np.linspace(0, peak, 64).astype(np.uint16).reshape(8, 8)
    levels = round(peak * 255 / 65535) + 1  # 0 .. round(peak / 257): 2 for 8-bit, 17 for 12
    with pytest.warns(UserWarning, match=rf"largest value is {peak}: .* keeps {levels} of 256 "
                                         rf"grey levels. If it holds {bits}-bit data"):
        grey = load_image(ramp)
    assert len(np.unique(grey)) == levels  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image((ramp.astype(np.uint32) * (65535 // peak)).astype(np.uint16))  # full range
        load_image(np.zeros((4, 4), np.uint16))  # black: nothing to report


def test_float16_and_big_endian_16_bit_arrays_are_mapped_like_their_float64_values():
    # float16 products rounded once more (0.0058823 gave level 2, not 1: 124 of the
    # float16 values in [0, 1] were one level off); ">u2" arrays were refused as "not
    # uint16" with advice to cast them to uint16.
    halves = np.unique(np.arange(0, 65536, dtype=np.uint16).view(np.float16))
    halves = halves[(halves >= 0) & (halves <= 1)].reshape(1, -1)
    expected = np.round(halves.astype(np.float64) * 255)
    np.testing.assert_array_equal(load_image(halves)[0, :, 0], expected[0])
    ramp = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)
    np.testing.assert_array_equal(load_image(ramp.astype(">u2")), load_image(ramp))


def test_an_alpha_channel_does_not_hide_few_bits_in_the_colours(tmp_path):
    """The 12-bit check took its peak over alpha too (opaque: 65535)."""
    colour = np.linspace(0, 4095, 64 * 3).astype(np.uint16).reshape(8, 8, 3)
    rgba = np.dstack([colour, np.full((8, 8), 65535, np.uint16)])
    with pytest.warns(UserWarning, match="largest value is 4095"):
        load_image(rgba)


def _write_16_bit_rgb_png(path, rgb16: np.ndarray) -> None:
    """A colour PNG of 16 bits a channel, which Pillow cannot write itself."""
    import struct
    import zlib

    height, width = rgb16.shape[:2]
    rows = b"".join(b"\x00" + rgb16[i].astype(">u2").tobytes() for i in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_a_16_bit_colour_png_of_few_bits_is_reported(tmp_path):
    """Pillow reads a 16-bit colour PNG as its high bytes: 12-bit data kept 16 levels
    without the warning a uint16 array of the same data gives."""
    twelve = np.linspace(0, 4095, 8 * 8 * 3).astype(np.uint16).reshape(8, 8, 3)
    _write_16_bit_rgb_png(tmp_path / "twelve.png", twelve)
    with pytest.warns(UserWarning, match="16-bit colour image file"):
        loaded = load_image(tmp_path / "twelve.png")
    np.testing.assert_array_equal(loaded, twelve >> 8)  # Pillow's reading, the reference
    full = (twelve.astype(np.uint32) * 16).astype(np.uint16)
    _write_16_bit_rgb_png(tmp_path / "full.png", full)
    _write_16_bit_rgb_png(tmp_path / "black.png", np.zeros_like(twelve))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(tmp_path / "full.png")
        load_image(tmp_path / "black.png")  # black: nothing to report, as for arrays


def test_32_bit_tiff_files_are_scaled_or_refused(tmp_path):
    """Modes F and I (float / int32 TIFFs) follow the array rules instead of being clipped."""
    ramp = np.linspace(0.0, 1.0, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "float.tif")  # mode F
    loaded = load_image(tmp_path / "float.tif")
    np.testing.assert_array_equal(loaded[..., 0], load_image(ramp)[..., 0])
    assert np.unique(loaded).size == 256  # Pillow's convert("RGB") kept only 0 and 1
    small = np.arange(256, dtype=np.int32).reshape(16, 16)
    Image.fromarray(small).save(tmp_path / "int.tif")  # mode I, values 0..255
    np.testing.assert_array_equal(load_image(tmp_path / "int.tif")[..., 1], small)
    for name, array, match in [("nan.tif", np.full((4, 4), np.nan, np.float32), "NaN"),
                               ("big.tif", np.full((4, 4), 70000, np.int32), "0..255"),
                               ("over.tif", np.full((4, 4), 2.0, np.float32), r"\[0, 1\]")]:
        Image.fromarray(array).save(tmp_path / name)
        with pytest.raises(ValueError, match=match):
            load_image(tmp_path / name)
    # The error names the file and its place in the list (it said "image").
    with pytest.raises(ValueError, match=r"images\[1\] \(.*over\.tif\)"):
        load_images([tmp_path / "float.tif", tmp_path / "over.tif"])


def test_missing_corrupt_and_directory_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match="corrupt or not an image"):
        load_image(bad)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(_rgb(64, 64)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt"):
        load_image(truncated)
    with pytest.raises(ValueError, match="is a directory"):
        load_image(tmp_path)


@pytest.mark.parametrize("array, error, match", [
    (np.zeros((3, 8, 8), np.uint8), ValueError, "Channels-first"),
    (np.zeros((8, 8, 2), np.uint8), ValueError, "must have shape"),
    (np.zeros((8,), np.uint8), ValueError, "must have shape"),
    (np.full((4, 4), 300), ValueError, "0..255"),
    (np.full((4, 4), -1), ValueError, "0..255"),
    (np.full((4, 4), 2.0), ValueError, r"\[0, 1\]"),
    (np.full((4, 4), np.nan), ValueError, "NaN"),
    (np.zeros((0, 4)), ValueError, "empty"),
    (np.zeros((4, 4), complex), TypeError, "unsupported dtype"),
])
def test_bad_arrays(array, error, match):
    with pytest.raises(error, match=match):
        load_image(array)


def test_bad_types_and_min_size():
    with pytest.raises(TypeError, match="file path, a PIL image or a numpy array"):
        load_image([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="smaller than the minimum 16x16"):
        load_image(_rgb(8, 32), min_size=16)


def test_load_images_collections(tmp_path):
    batch = np.stack([_rgb(seed=i) for i in range(3)])
    assert len(load_images(batch)) == 3
    assert len(load_images(_rgb())) == 1  # a single image is a batch of one
    assert len(load_images(iter([_rgb(), _rgb(3, 4)]))) == 2
    with pytest.raises(ValueError, match="no images"):
        load_images([])
    with pytest.raises(ValueError, match=r"images\[1\]"):
        load_images([_rgb(), np.zeros((3, 8, 8), np.uint8)])
    with pytest.raises(ValueError, match="n_images, H, W, C"):
        load_images(np.zeros((1, 2, 3, 4, 5), np.uint8))
    with pytest.raises(TypeError, match="list of paths"):
        load_images(42)
    assert is_image_like(tmp_path / "x.png") and not is_image_like([1])


@pytest.mark.parametrize("background", [(1, 2), (300, 300, 300), (-1, 0, 0), "white",
                                        (True, 0, 0)])
def test_bad_background_colours_are_refused(background):
    """Were numpy's "cannot reshape", or colours wrapped around in uint8 (300 -> 44)."""
    rgba = np.zeros((2, 2, 4), np.uint8)  # fully transparent: every pixel is background
    with pytest.raises(ValueError, match="background must be an RGB colour"):
        load_image(rgba, background=background)


@pytest.mark.parametrize("images", [{"a": np.zeros((4, 4, 3), np.uint8)},
                                    {"a.png", "b.png"}])
def test_mappings_and_sets_of_images_are_refused(images):
    """A dict was read as its keys (file names: "image file not found: a"); a set has no
    order for the label maps to follow."""
    with pytest.raises(TypeError, match="images must be a list"):
        load_images(images)


def test_a_16_bit_colour_key_is_composited_like_an_8_bit_one(tmp_path):
    # The I;16 branch dropped the tRNS key: transparent pixels kept their stored black.
    from PIL import Image
    grey = np.zeros((4, 4), np.uint16)
    grey[:2] = 65535  # the bottom half holds the key value 0: transparent
    Image.fromarray(grey).save(tmp_path / "g16.png", transparency=0)
    Image.fromarray((grey // 257).astype(np.uint8)).save(tmp_path / "g8.png", transparency=0)
    eight, sixteen = load_image(tmp_path / "g8.png"), load_image(tmp_path / "g16.png")
    assert (eight[2:] == 255).all()  # Pillow's own 8-bit compositing, the reference
    np.testing.assert_array_equal(sixteen, eight)


def test_a_photo_displayed_rotated_is_read_as_stored_with_a_warning(tmp_path):
    from PIL import Image
    image = Image.fromarray(np.zeros((48, 64, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    image.save(tmp_path / "portrait.jpg", exif=exif)
    image.save(tmp_path / "plain.jpg")
    with pytest.warns(UserWarning, match="EXIF orientation 6.*exif_transpose"):
        assert load_image(tmp_path / "portrait.jpg").shape == (48, 64, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(tmp_path / "plain.jpg")
    # The same photo opened with PIL was read as stored without a word; transposed, it is
    # the displayed image and nothing is said.
    from PIL import ImageOps
    with Image.open(tmp_path / "portrait.jpg") as opened:
        with pytest.warns(UserWarning, match=r"image has EXIF orientation 6.*"
                                             r"exif_transpose\(image\).*auto-orient"):
            assert load_image(opened).shape == (48, 64, 3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert load_image(ImageOps.exif_transpose(opened)).shape == (64, 48, 3)
            load_image(Image.open(tmp_path / "plain.jpg"))


def test_resize_refuses_an_unknown_interpolation():
    from spectralnet_seg.features import resize_image
    image = np.zeros((8, 8, 3), np.uint8)
    assert resize_image(image, (4, 4), interpolation="box").shape == (4, 4, 3)
    with pytest.raises(ValueError, match="interpolation must be one of"):
        resize_image(image, (4, 4), interpolation="bicubc")
    with pytest.raises(ValueError, match="interpolation must be one of"):  # was returned as is
        resize_image(image, (8, 8), interpolation="bicubc")


def test_pixel_features_of_a_one_pixel_wide_image_are_refused_clearly():
    from spectralnet_seg.features import PixelExtractor
    with pytest.raises(ValueError, match="minimum 2x2"):
        PixelExtractor(stride=1).extract([np.zeros((1, 40, 3), np.uint8)])


def test_a_closed_pil_image_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(_rgb(16, 16)).save(path)
    with Image.open(path) as image:  # opened lazily, closed before its pixels were read
        pass
    with pytest.raises(ValueError, match=r"images\[0\] is a closed PIL image.*img.copy\(\)"):
        load_images([image])
    with Image.open(path) as image:
        kept = image.copy()
    np.testing.assert_array_equal(load_image(kept), _rgb(16, 16))
