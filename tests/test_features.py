"""Tests of the pixel and precomputed extractors and the extractor registry."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spectralnet_seg.features import (
    ExtractedFeatures,
    FeatureExtractor,
    PixelExtractor,
    PrecomputedFeatures,
    list_extractors,
    make_extractor,
    register_extractor,
    token_positions,
)


def _noise(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ---------------------------------------------------------------------------- pixel
def test_pixel_shapes_context_and_sizes():
    images = _noise((3, 40, 56, 3))
    out = PixelExtractor(stride=8).extract(images)
    assert isinstance(out, ExtractedFeatures)
    assert out.features.shape == (3, 5, 7, PixelExtractor().n_features)
    assert out.features.dtype == np.float32 and np.all(np.isfinite(out.features))
    assert out.image_sizes == [(40, 56)] * 3
    # Colours are the cell means of the image in [0, 1]: check one cell by hand.
    np.testing.assert_allclose(out.colors[1, 2, 3], images[1, 16:24, 24:32].mean((0, 1)) / 255,
                               atol=1e-5)
    assert out.positions.min() > 0 and out.positions.max() < 1
    np.testing.assert_allclose(out.positions[0, 0, 0], [0.1, 1 / 14], atol=1e-6)


def test_pixel_mixed_sizes_share_one_grid_and_keep_original_sizes(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(_noise((30, 20))).save(path)  # greyscale file
    rgba = np.dstack([_noise((64, 64, 3)), np.full((64, 64), 255, np.uint8)])
    out = PixelExtractor(stride=4).extract([_noise((48, 32, 3)), path, rgba])
    assert out.grid_shape == (12, 8)  # the first image's size sets the grid
    assert out.image_sizes == [(48, 32), (30, 20), (64, 64)]
    fixed = PixelExtractor(stride=4, image_size=(16, 24)).extract([path, rgba])
    assert fixed.grid_shape == (4, 6)
    assert PixelExtractor(stride=4, image_size=16).extract(rgba).grid_shape == (4, 4)


def test_pixel_features_separate_colour_and_texture():
    rng = np.random.default_rng(0)
    flat_red = np.zeros((32, 32, 3), np.uint8)
    flat_red[..., 0] = 200
    flat_blue = flat_red[..., ::-1].copy()
    grey = np.full((32, 32, 3), 128, np.uint8)
    textured = np.clip(128 + rng.normal(0, 60, (32, 32, 1)), 0, 255).astype(np.uint8)
    textured = np.repeat(textured, 3, axis=-1)
    out = PixelExtractor(stride=8).extract([flat_red, flat_blue, grey, textured])
    texture = out.features[..., 3:]
    assert np.abs(texture[:3]).max() < 1e-3  # flat images have no texture response
    assert texture[3].mean() > 0.05
    red_ab, blue_ab = out.features[0, ..., 1:3], out.features[1, ..., 1:3]
    assert np.linalg.norm(red_ab - blue_ab, axis=-1).min() > 0.5
    # Same mean brightness: the colour block alone cannot tell grey from textured.
    assert abs(out.features[2, ..., 0].mean() - out.features[3, ..., 0].mean()) < 0.05


def test_pixel_is_deterministic_and_options_change_the_layout():
    images = _noise((2, 32, 32, 3), seed=3)
    a = PixelExtractor().extract(images).features
    np.testing.assert_array_equal(a, PixelExtractor().extract(images).features)
    with_pos = PixelExtractor(position_weight=1.0, num_sigma=2)
    out = with_pos.extract(images)
    assert out.n_features == with_pos.n_features == 3 + 2 + 6
    np.testing.assert_allclose(out.features[..., 3:5], out.positions)


def test_pixel_verbose_shows_progress(capsys):
    PixelExtractor(verbose=True).extract(_noise((2, 16, 16, 3)))
    assert "pixel features" in capsys.readouterr().err


@pytest.mark.parametrize("params, match", [
    ({"stride": 0}, "stride"),
    ({"texture_weight": -1.0}, "texture_weight"),
    ({"sigma_min": 4.0, "sigma_max": 2.0}, "sigma_max"),
    ({"image_size": (16, 2)}, "image_size"),
    ({"image_size": "big"}, "image_size"),
    ({"image_size": (16,)}, "image_size"),  # one side: was an IndexError in common_size
    ({"image_size": [16, 16, 3]}, "image_size"),
    ({"image_size": (True, 16)}, "image_size"),
])
def test_pixel_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        PixelExtractor(**params).extract(_noise((1, 16, 16, 3)))


def test_pixel_bad_images(tmp_path):
    with pytest.raises(ValueError, match="smaller than the minimum 8x8"):
        PixelExtractor(stride=8).extract(_noise((1, 6, 32, 3)))
    with pytest.raises(FileNotFoundError):
        PixelExtractor().extract([tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="no images"):
        PixelExtractor().extract([])
    with pytest.raises(ValueError, match="Channels-first"):
        PixelExtractor().extract([np.zeros((3, 16, 16), np.uint8)])


# ---------------------------------------------------------------------------- precomputed
def test_precomputed_serves_selected_images():
    feats = np.random.default_rng(0).random((4, 3, 5, 6)).astype(np.float32)
    colors = np.random.default_rng(1).random((4, 3, 5, 3))
    store = PrecomputedFeatures(feats, colors=colors, image_sizes=[(30, 50)] * 4)
    assert isinstance(store, FeatureExtractor) and len(store) == 4
    out = store.extract([3, -4])
    np.testing.assert_array_equal(out.features, feats[[3, 0]])
    np.testing.assert_allclose(out.colors, colors[[3, 0]])
    assert out.image_sizes == [(30, 50), (30, 50)]
    np.testing.assert_allclose(out.positions[0, 0, 0], [1 / 6, 1 / 10])
    single = store.extract(np.int64(2))
    assert single.n_images == 1 and single.image_sizes == [(30, 50)]
    # A Segmenter takes the same index forms (an array or an int was "not an image").
    from sklearn.cluster import KMeans

    from spectralnet_seg.segmentation import Segmenter

    seg = Segmenter(store, KMeans(2, n_init=1, random_state=0)).fit(np.arange(4))
    by_list = Segmenter(store, KMeans(2, n_init=1, random_state=0)).fit([0, 1, 2, 3])
    np.testing.assert_array_equal(seg.estimator_.labels_, by_list.estimator_.labels_)
    np.testing.assert_array_equal(seg.predict(2)[0], seg.predict([2])[0])
    assert seg.predict(2)[0].shape == (30, 50)


def test_precomputed_defaults_for_a_list_of_grids():
    grids = [np.ones((2, 3, 4)), np.zeros((2, 3, 4)), np.ones((4, 4, 4))]
    store = PrecomputedFeatures(grids)
    out = store.extract([0, 1])
    assert out.image_sizes == [(2, 3), (2, 3)]  # default: the token grid itself
    assert np.all(out.colors == 0.5)
    assert store.extract([2]).grid_shape == (4, 4)
    with pytest.raises(ValueError, match="different token grids"):
        store.extract([0, 2])


@pytest.mark.parametrize("kwargs, match", [
    ({"features": np.ones((2, 3, 4))}, "n_images, h, w, c"),
    ({"features": []}, "empty"),
    ({"features": [np.ones((2, 2, 3)), np.ones((2, 2, 4))]}, "same dimension"),
    ({"features": np.full((1, 2, 2, 3), np.nan)}, "NaN"),
    ({"features": np.ones((2, 2, 2, 3)), "colors": np.ones((2, 2, 2, 4))}, "colors"),
    ({"features": np.ones((2, 2, 2, 3)), "colors": np.ones((1, 2, 2, 3))}, "entries"),
    ({"features": np.ones((2, 2, 2, 3)), "positions": np.ones((2, 3, 2, 2))}, "grid"),
    ({"features": np.ones((2, 2, 2, 3)), "image_sizes": [(4, 4)]}, "image_sizes"),
    # Sizes the label maps are upsampled to: were numpy's "negative dimensions",
    # ZeroDivisionError, "not enough values to unpack" and "invalid literal for int()".
    ({"features": np.ones((2, 2, 2, 3)), "image_sizes": [(-3, 5), (4, 4)]},
     r"image_sizes\[0\] must be a pair \(height, width\) of positive integers"),
    ({"features": np.ones((2, 2, 2, 3)), "image_sizes": [(4, 4), (0, 0)]}, r"image_sizes\[1\]"),
    ({"features": np.ones((2, 2, 2, 3)), "image_sizes": [(3,), (4, 5)]}, r"image_sizes\[0\]"),
    ({"features": np.ones((2, 2, 2, 3)), "image_sizes": ["ab", "cd"]}, r"image_sizes\[0\]"),
    ({"features": np.ones((2, 2, 2, 0))}, "is empty"),  # was "cannot reshape array of size 0"
    ({"features": np.ones((2, 0, 2, 3))}, "is empty"),
    ({"features": np.array([[[["a"]]]])}, "not numbers"),
])
def test_precomputed_bad_arrays(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PrecomputedFeatures(**kwargs).extract([0])


def test_precomputed_bad_indices():
    store = PrecomputedFeatures(np.ones((2, 2, 2, 3)))
    with pytest.raises(IndexError, match="out of range"):
        store.extract([2])
    with pytest.raises(TypeError, match="indices"):
        store.extract(["a.png"])
    with pytest.raises(TypeError, match="not images"):
        store.extract(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="at least one"):
        store.extract([])


# ---------------------------------------------------------------------------- registry
def test_registry_builds_by_name():
    assert {"pixel", "precomputed"} <= set(list_extractors())
    assert list_extractors("pix*") == ["pixel"]
    pixel = make_extractor("pixel", stride=4)
    assert isinstance(pixel, PixelExtractor) and pixel.stride == 4
    store = make_extractor("precomputed", features=np.ones((1, 2, 2, 3)))
    assert store.extract([0]).n_features == 3


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown extractor 'nope'.*pixel"):
        make_extractor("nope")
    with pytest.raises(ValueError, match="takes no"):
        make_extractor("pixel:big")
    with pytest.raises(TypeError, match="string"):
        make_extractor(PixelExtractor)
    with pytest.raises(ValueError, match="already registered"):
        register_extractor("pixel")(PixelExtractor)
    with pytest.raises(ValueError, match="':'"):
        register_extractor("a:b")


def test_extracted_features_check_sizes_and_grids():
    positions = np.broadcast_to(token_positions(3, 4), (2, 3, 4, 2))
    features, colors = np.zeros((2, 3, 4, 5)), np.zeros((2, 3, 4, 3))
    out = ExtractedFeatures(features, colors, positions, [(30, 40), (31.0, 41)])
    assert out.image_sizes == [(30, 40), (31, 41)]
    with pytest.raises(ValueError, match=r"image_sizes\[1\] must be a pair"):
        ExtractedFeatures(features, colors, positions, [(30, 40), (0, 41)])
    with pytest.raises(ValueError, match="empty token grid"):
        ExtractedFeatures(np.zeros((2, 3, 0, 5)), np.zeros((2, 3, 0, 3)),
                          np.zeros((2, 3, 0, 2)))


def test_extracted_features_take_image_sizes_as_an_array():
    """``if not image_sizes`` failed on a numpy array ("truth value ... is ambiguous")."""
    features = np.zeros((2, 3, 4, 5), np.float32)
    colours, positions = np.zeros((2, 3, 4, 3), np.float32), np.zeros((2, 3, 4, 2), np.float32)
    out = ExtractedFeatures(features, colours, positions, np.array([[30, 40], [31, 41]]))
    assert [tuple(size) for size in out.image_sizes] == [(30, 40), (31, 41)]
