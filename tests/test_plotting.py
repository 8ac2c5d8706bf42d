"""Pictures: palettes, overlays, segmentation grids, eigenfunction maps, IoU bar charts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spectralnet_seg.plotting import (
    colorize_labels,
    label_colors,
    label_overlay,
    plot_eigenfunctions,
    plot_per_class_iou,
    plot_segmentations,
    save_label_map,
    save_overlay,
)


def _image_and_labels(h=24, w=32):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    labels = np.zeros((h, w), dtype=np.int64)
    labels[:, w // 2:] = 1
    labels[h // 2:, :] = 2
    return image, labels


def test_palette_is_deterministic_and_distinct_beyond_tab20():
    colors = label_colors(40)
    assert colors.shape == (40, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == 40
    np.testing.assert_array_equal(label_colors(40), colors)
    np.testing.assert_array_equal(label_colors(5), colors[:5])


def test_colorize_labels_paints_ignored_pixels_black():
    _, labels = _image_and_labels()
    labels[0, 0] = 255
    rgb = colorize_labels(labels)
    assert rgb.shape == labels.shape + (3,)
    assert (rgb[0, 0] == 0).all()
    palette = label_colors(3)
    np.testing.assert_array_equal(rgb[-1, -1], palette[2])
    np.testing.assert_array_equal(rgb[1, 1], palette[0])


def test_overlay_blends_colours_and_draws_boundaries():
    image, labels = _image_and_labels()
    plain = label_overlay(image, labels, alpha=0.0, boundaries=False)
    np.testing.assert_array_equal(plain, image)
    solid = label_overlay(image, labels, alpha=1.0, boundaries=False)
    np.testing.assert_array_equal(solid, colorize_labels(labels))
    outlined = label_overlay(image, labels, alpha=0.0, boundaries=True)
    changed = (outlined != image).any(axis=2)
    # boundary pixels only: next to a label change, never in the middle of a region
    assert changed[:, 15:17].any() and not changed[2:8, 2:8].any()
    assert (outlined[changed] == 255).all()


def test_overlay_rejects_bad_label_maps():
    image, labels = _image_and_labels()
    with pytest.raises(ValueError, match="resolution"):
        label_overlay(image, labels[:-1])
    with pytest.raises(ValueError, match="integer"):
        label_overlay(image, labels.astype(float))
    with pytest.raises(ValueError, match="alpha"):
        label_overlay(image, labels, alpha=2.0)


def test_save_overlay_writes_a_png_of_the_image_size(tmp_path):
    image, labels = _image_and_labels()
    save_overlay(tmp_path / "o.png", image, labels)
    with Image.open(tmp_path / "o.png") as png:
        assert png.size == (32, 24) and png.mode == "RGB"


def test_label_maps_round_trip_as_raw_ids_and_as_a_visible_palette(tmp_path):
    _, labels = _image_and_labels()
    save_label_map(tmp_path / "raw.png", labels)
    save_label_map(tmp_path / "color.png", labels, palette=True)
    with Image.open(tmp_path / "raw.png") as raw, Image.open(tmp_path / "color.png") as color:
        assert raw.mode == "L" and color.mode == "P"
        np.testing.assert_array_equal(np.asarray(raw), labels)
        np.testing.assert_array_equal(np.asarray(color), labels)  # indices are the ids
        # What a viewer shows: each id in its palette colour, not near-black grey.
        np.testing.assert_array_equal(np.asarray(color.convert("RGB")), colorize_labels(labels))
    many = np.arange(300 * 2).reshape(20, 30) % 300  # ids >= 256: 16-bit ids, RGB picture
    save_label_map(tmp_path / "raw16.png", many)
    save_label_map(tmp_path / "color16.png", many, palette=True)
    with Image.open(tmp_path / "raw16.png") as raw, Image.open(tmp_path / "color16.png") as c:
        np.testing.assert_array_equal(np.asarray(raw), many)
        np.testing.assert_array_equal(np.asarray(c), colorize_labels(many, ignore_index=None))
    with pytest.raises(ValueError, match="non-negative"):
        save_label_map(tmp_path / "bad.png", -labels)


def test_figures_render_without_pyplot_state(tmp_path):
    import matplotlib.pyplot as plt

    open_before = len(plt.get_fignums())
    image, labels = _image_and_labels()
    grid = plot_segmentations([image, image], {"a": [labels, labels], "b": [labels, labels]},
                              ground_truth=[labels, labels])
    assert len(grid.axes) == 2 * 4  # rows = images; image, a, b, ground truth
    assert [ax.get_title() for ax in grid.axes[:4]] == ["image", "a", "b", "ground truth"]
    grid.savefig(tmp_path / "grid.png")

    maps = np.random.default_rng(0).normal(size=(6, 8, 5))
    eig = plot_eigenfunctions(image, maps, n_show=3)
    titles = [ax.get_title() for ax in eig.axes]
    assert {"image", "ψ_1", "ψ_2", "ψ_3"} <= set(titles) and "ψ_4" not in titles
    eig.savefig(tmp_path / "eig.png")

    iou = np.array([0.5, np.nan, 0.25])
    bars = plot_per_class_iou(iou, ["a", "b", "c"], title="t")
    heights = [p.get_width() for p in bars.axes[0].patches]
    np.testing.assert_allclose(heights, [50.0, 0.0, 25.0])
    bars.savefig(tmp_path / "iou.png")

    for name in ("grid.png", "eig.png", "iou.png"):
        with Image.open(tmp_path / name) as png:
            assert png.size[0] > 100 and png.size[1] > 100
    assert len(plt.get_fignums()) == open_before  # nothing registered with pyplot


def test_plot_functions_validate_their_inputs():
    image, labels = _image_and_labels()
    with pytest.raises(ValueError, match="label maps"):
        plot_segmentations([image, image], {"a": [labels]})
    with pytest.raises(ValueError, match="no images"):
        plot_segmentations([], [])
    with pytest.raises(ValueError, match=r"\(h, w, K\)"):
        plot_eigenfunctions(image, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="class names"):
        plot_per_class_iou([0.1, 0.2], ["only one"])
    with pytest.raises(ValueError, match="ground_truth has 1 masks for 2 images"):
        plot_segmentations([image, image], [labels, labels], ground_truth=[labels])
    with pytest.raises(ValueError, match="titles has 1 entries for 3 panels"):
        plot_eigenfunctions(image, np.zeros((4, 4, 5)), n_show=3, titles=["a"])


def test_cluster_255_is_drawn_like_any_other_cluster():
    """With K = 256 (the paper's), cluster 255 was left without overlay, as "ignore"."""
    image = np.zeros((16, 16, 3), np.uint8)
    labels = np.arange(256).reshape(16, 16) % 255
    labels[:8, :8] = 255  # pixel (3, 3) lies inside it, off the drawn boundaries
    grid = plot_segmentations([image], [labels], alpha=1.0)
    drawn = np.asarray(grid.axes[1].images[0].get_array())
    np.testing.assert_array_equal(drawn[3, 3], label_colors(256)[255])
    assert drawn[3, 3].any()
    masked = plot_segmentations([image], [labels], alpha=1.0, ignore_index=255)
    np.testing.assert_array_equal(np.asarray(masked.axes[1].images[0].get_array())[3, 3], 0)
