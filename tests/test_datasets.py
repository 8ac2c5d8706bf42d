"""Tests of the dataset loaders (on tiny fake folder trees), the mosaics and the transforms."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spectralnet_seg.datasets import (
    ADE20K,
    IGNORE_INDEX,
    TEXTURE_NAMES,
    Cityscapes27,
    CocoStuff27,
    PascalContext,
    TextureMosaics,
    center_crop,
    list_datasets,
    make_dataset,
    reco_protocol,
    resize_short_side,
)
from spectralnet_seg.datasets.standard import COCOSTUFF_FINE_TO_COARSE

H, W = 6, 8


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _labels(values):
    """A (H, W) label map cycling through ``values``."""
    return np.resize(np.asarray(values, dtype=np.uint8), H * W).reshape(H, W)


# ---------------------------------------------------------------------------- Pascal Context
def _pascal_tree(root, ids=("2008_000001", "2008_000002"), split="val"):
    base = root / "VOCdevkit" / "VOC2010"
    for i, name in enumerate(ids):
        _write(base / "JPEGImages" / f"{name}.jpg", _image(i))
        _write(base / "SegmentationClassContext" / f"{name}.png", _labels([0, 1, 59, 30]))
    lists = base / "ImageSets" / "SegmentationContext"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return base


def test_pascal_context_59_and_60(tmp_path):
    _pascal_tree(tmp_path)
    data = make_dataset("pascal_context", root=tmp_path, split="val")
    assert isinstance(data, PascalContext) and len(data) == 2 and data.n_classes == 59
    image, mask = data[1]
    assert image.shape == (H, W, 3) and mask.dtype == np.int64
    np.testing.assert_array_equal(mask, _labels([IGNORE_INDEX, 0, 58, 29]))
    assert data.class_names[0] == "aeroplane" and data.class_names[-1] == "wood"
    sixty = make_dataset("pascal_context60", root=tmp_path / "VOCdevkit")
    assert sixty.n_classes == 60 and sixty.class_names[0] == "background"
    np.testing.assert_array_equal(sixty[0][1], _labels([0, 1, 59, 30]))
    # root may also be the VOC2010 folder itself
    assert len(PascalContext(tmp_path / "VOCdevkit" / "VOC2010")) == 2


def test_pascal_context_errors(tmp_path):
    base = _pascal_tree(tmp_path)
    with pytest.raises(ValueError, match="n_classes must be 59 or 60"):
        PascalContext(tmp_path, n_classes=21)
    with pytest.raises(ValueError, match="split must be one of"):
        PascalContext(tmp_path, split="test")
    with pytest.raises(FileNotFoundError, match="image list"):
        PascalContext(tmp_path, split="train")
    (base / "SegmentationClassContext" / "2008_000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 label files are missing"):
        PascalContext(tmp_path)


# ---------------------------------------------------------------------------- Cityscapes
def test_cityscapes27_mapping(tmp_path):
    for city, frame in (("aachen", "000000_000019"), ("bremen", "000001_000019")):
        stem = f"{city}_{frame}"
        _write(tmp_path / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png", _image())
        _write(tmp_path / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png",
               _labels([0, 6, 7, 26, 33]))
        _write(tmp_path / "gtFine" / "val" / city / f"{stem}_gtFine_color.png", _image())
    data = make_dataset("cityscapes27", root=tmp_path, split="val")
    assert isinstance(data, Cityscapes27) and len(data) == 2 and data.n_classes == 27
    _, mask = data[-1]
    np.testing.assert_array_equal(mask, _labels([255, 255, 0, 19, 26]))
    assert data.class_names[19] == "car"
    with pytest.raises(ValueError, match="no images were found"):
        Cityscapes27(tmp_path, split="train")


def test_cityscapes_colour_label_is_rejected(tmp_path):
    stem = "aachen_000000_000019"
    _write(tmp_path / "leftImg8bit" / "val" / "aachen" / f"{stem}_leftImg8bit.png", _image())
    _write(tmp_path / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_labelIds.png", _image())
    with pytest.raises(ValueError, match="single-channel"):
        Cityscapes27(tmp_path)[0]


# ---------------------------------------------------------------------------- ADE20K
def test_ade20k_mapping_and_mismatched_sizes(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    for i in range(3):
        _write(base / "images" / "validation" / f"ADE_val_{i:08d}.jpg", _image(i))
        _write(base / "annotations" / "validation" / f"ADE_val_{i:08d}.png",
               _labels([0, 1, 150]))
    data = make_dataset("ade20k", root=tmp_path)
    assert isinstance(data, ADE20K) and len(data) == 3 and data.n_classes == 150
    np.testing.assert_array_equal(data[0][1], _labels([255, 0, 149]))
    assert len(ADE20K(base)) == 3
    _write(base / "annotations" / "validation" / "ADE_val_00000001.png", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="mask .* is 3x3 but its image is 6x8"):
        data[1]
    (base / "annotations" / "validation" / "ADE_val_00000002.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="corrupt"):
        data[2]


def test_label_values_beyond_the_format_are_refused(tmp_path):
    """They became 255 (ignored) without a word: a 16-bit mask lost 47 of 48 pixels."""
    base = tmp_path / "ADEChallengeData2016"
    _write(base / "images" / "validation" / "ADE_val_00000000.jpg", _image(0))
    mask = base / "annotations" / "validation" / "ADE_val_00000000.png"
    mask.parent.mkdir(parents=True)
    Image.fromarray(np.resize(np.array([300, 151, 1], np.uint16), (H, W))).save(mask)  # I;16
    data = make_dataset("ade20k", root=tmp_path)
    with pytest.raises(ValueError, match=r"holds values \[151, 300\] beyond ADE20K's label "
                                         r"ids 0..150 \(and 255\)"):
        data[0]
    _write(mask, _labels([0, 1, 150, 255]))  # the format's own values, 255 included
    np.testing.assert_array_equal(data[0][1], _labels([255, 0, 149, 255]))


# ---------------------------------------------------------------------------- COCO-Stuff
def _coco_tree(root, ids=("000000000139", "000000000285")):
    for i, name in enumerate(ids):
        _write(root / "images" / "val2017" / f"{name}.jpg", _image(i))
        _write(root / "annotations" / "val2017" / f"{name}.png", _labels([0, 2, 156, 181, 255]))
    curated = root / "curated" / "val2017"
    curated.mkdir(parents=True)
    (curated / "Coco164kFull_Stuff_Coarse_7.txt").write_text(ids[0] + "\n")


def test_cocostuff27_fine_to_coarse(tmp_path):
    _coco_tree(tmp_path)
    data = make_dataset("cocostuff27", root=tmp_path)
    assert isinstance(data, CocoStuff27) and len(data) == 1 and data.n_classes == 27
    # person -> person (9), car -> vehicle (11), sky-other -> sky (23), wood -> solid (24)
    np.testing.assert_array_equal(data[0][1], _labels([9, 11, 23, 24, 255]))
    assert [data.class_names[c] for c in (9, 11, 23, 24)] == ["person", "vehicle", "sky",
                                                               "solid"]
    assert len(CocoStuff27(tmp_path, image_list="all")) == 2
    with pytest.raises(FileNotFoundError, match="image list"):
        CocoStuff27(tmp_path, image_list="missing.txt")


def test_cocostuff_table_structure():
    table = COCOSTUFF_FINE_TO_COARSE
    assert table.shape == (256,) and table[255] == 255
    counts = np.bincount(table[:182], minlength=27)
    assert counts.shape == (27,) and np.all(counts >= 1)  # every coarse class is used
    assert np.all(table[182:] == 255)
    # Things (COCO ids 1..91, fine 0..90) map to the 12 thing classes, stuff to the 15 others.
    assert set(table[:91]) == set(range(12)) and set(table[91:182]) == set(range(12, 27))


# ---------------------------------------------------------------------------- registry/roots
def test_registry_and_root_errors(tmp_path):
    assert {"pascal_context", "pascal_context59", "pascal_context60", "cityscapes27",
            "ade20k", "ade20k150", "cocostuff27", "mosaics"} <= set(list_datasets())
    with pytest.raises(ValueError, match="unknown dataset 'voc'"):
        make_dataset("voc", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_dataset("ade20k", root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="expected folders"):
        make_dataset("cityscapes27", root=tmp_path)
    with pytest.raises(ValueError, match="needs root"):
        make_dataset("cocostuff27")
    with pytest.raises(ValueError, match="generated in memory and takes no root"):
        make_dataset("mosaics", root=tmp_path)
    assert len(make_dataset("mosaics", n_images=2, image_size=32)) == 2


def test_transform_applies_on_access(tmp_path):
    _pascal_tree(tmp_path)
    data = PascalContext(tmp_path, transform=lambda im, m: (im[:2], m[:2]))
    image, mask = data[0]
    assert image.shape == (2, W, 3) and mask.shape == (2, W)


# ---------------------------------------------------------------------------- mosaics
def test_mosaics_are_deterministic_with_exact_masks():
    data = TextureMosaics(2, image_size=48, n_regions=3, seed=4)
    (a, ma), (b, mb) = data[0], TextureMosaics(2, image_size=48, n_regions=3, seed=4)[0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8 and ma.shape == (48, 48)
    assert set(np.unique(ma)) <= set(range(data.n_classes)) and len(np.unique(ma)) == 3
    other = TextureMosaics(2, image_size=48, n_regions=3, seed=5)[0][0]
    assert not np.array_equal(a, other)
    blobs = TextureMosaics(1, image_size=32, region_shape="blobs", n_textures=9)[0][1]
    assert blobs.max() < 9


def test_mosaics_of_named_textures_fill_each_class_with_its_photograph():
    data = TextureMosaics(3, image_size=48, n_regions=2, textures=("starfield", "moon"), seed=2)
    assert data.class_names == ["starfield", "moon"] and data.n_classes == 2
    for image, mask in data:
        assert set(np.unique(mask)) == {0, 1}
        # moon() is a grey photograph (R = G = B survives the brightness jitter), the
        # Hubble deep field is not.
        moon, stars = image[mask == 1].astype(int), image[mask == 0].astype(int)
        assert (moon[:, 0] == moon[:, 1]).all() and (moon[:, 1] == moon[:, 2]).all()
        assert (stars[:, 0] != stars[:, 2]).mean() > 0.5
    # Naming the default classes is the default data set, pixel for pixel.
    default = TextureMosaics(2, image_size=32, seed=7)
    named = TextureMosaics(2, image_size=32, seed=7, textures=TEXTURE_NAMES[:6])
    for (a, ma), (b, mb) in zip(default, named, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ma, mb)


@pytest.mark.parametrize("params, match", [
    ({"n_images": 0}, "n_images"), ({"image_size": 8}, "image_size"),
    ({"n_regions": (3, 2)}, "n_regions"), ({"n_textures": 10}, "n_textures"),
    ({"region_shape": "squares"}, "region_shape"), ({"seed": -1}, "seed"),
    ({"textures": ("moon", "lava")}, "lava"), ({"textures": ()}, "textures"),
    ({"textures": "moon"}, "string"), ({"textures": ("moon", "moon")}, "distinct"),
    ({"textures": ("moon", "brick"), "n_textures": 3}, "contradicts"),
    # Were a TypeError from tuple(2.5), and booleans silently taken as 1.
    ({"n_regions": 2.5}, r"n_regions .* got 2\.5"), ({"n_regions": (2, True)}, "n_regions"),
    ({"seed": True}, "seed"), ({"n_images": True}, "n_images"),
])
def test_mosaics_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        TextureMosaics(**params)


# ---------------------------------------------------------------------------- transforms
def test_reco_protocol_and_its_parts():
    image = np.zeros((480, 640, 3), np.uint8)
    cols = np.arange(640)
    mask = np.tile(np.where(cols < 64, 0, np.where(cols < 576, 1, 2)), (480, 1))
    mask[:90] = IGNORE_INDEX
    out_image, out_mask = reco_protocol(image, mask)
    assert out_image.shape == (320, 320, 3) and out_mask.shape == (320, 320)
    # The crop covers original columns 80..560 (the middle stripe) and all rows; nearest
    # neighbour keeps ids exact: the ignored top band becomes 60 rows, nothing new appears.
    assert set(np.unique(out_mask)) == {1, IGNORE_INDEX}
    assert np.all(out_mask[:60] == IGNORE_INDEX) and np.all(out_mask[60:] == 1)
    small, _ = resize_short_side(image, None, 100)
    assert small.shape == (100, 133, 3)
    with pytest.raises(ValueError, match="cannot centre-crop"):
        center_crop(small, None, 200)
    with pytest.raises(ValueError, match="does not match"):
        reco_protocol(image, mask[:10])
    # Each part checks too: a transposed mask was resized or cropped to the image's shape
    # anyway, holding the wrong labels.
    with pytest.raises(ValueError, match="does not match"):
        resize_short_side(image, mask.T, 320)
    with pytest.raises(ValueError, match="does not match"):
        center_crop(image[:, :480], mask.T[:, :480], 320)


@pytest.mark.parametrize("index", [True, np.bool_(False), 1.0])
def test_dataset_indices_must_be_integers_not_booleans(index):
    """``data[True]`` quietly gave item 1 (a bool is an Integral)."""
    with pytest.raises(TypeError, match="dataset indices must be integers"):
        TextureMosaics(3, image_size=16)[index]
