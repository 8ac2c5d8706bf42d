"""Resumable extraction to .npy shards: identical output after interruptions, no recomputation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from spectralnet_seg.data import (
    NpyShardSource,
    ShardManifest,
    as_feature_source,
    extract_to_shards,
    load_shards,
)

N_IMAGES, SHARD_SIZE, GRID = 10, 3, 2
N_SHARDS = 4  # ceil(10 / 3); the last shard holds one image


@dataclasses.dataclass
class _Result:
    features: np.ndarray  # (n, h, w, d)
    colors: np.ndarray  # (n, h, w, 3)
    positions: np.ndarray  # (n, h, w, 2)
    image_sizes: list


class FakeExtractor(BaseEstimator):
    """Deterministic features of (H, W, 3) images: cell means and a scaled product.

    ``fail_on_call`` (not a parameter, so resuming with a healthy extractor is allowed)
    makes the k-th ``extract`` call raise, like a crash in the middle of a run.
    """

    def __init__(self, scale=1.0):
        self.scale = scale

    def extract(self, images):
        self.calls = getattr(self, "calls", []) + [[float(im[0, 0, 0]) for im in images]]
        if len(self.calls) == getattr(self, "fail_on_call", None):
            raise RuntimeError("simulated crash")
        images = np.asarray(images, dtype=np.float32)
        n, height, width, _ = images.shape
        cells = images.reshape(n, GRID, height // GRID, GRID, width // GRID, 3).mean((2, 4))
        features = np.concatenate(
            [cells, self.scale * cells[..., :2] * cells[..., 1:]], axis=-1)  # d = 5
        yy, xx = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
        positions = np.broadcast_to(np.stack([yy, xx], -1) / GRID, (n, GRID, GRID, 2))
        return _Result(features, cells, positions, [(height, width)] * n)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).random((N_IMAGES, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> Path:
    """An uninterrupted extraction, the standard the other runs are compared with."""
    out = tmp_path_factory.mktemp("reference")
    extract_to_shards(FakeExtractor(), images, out, shard_size=SHARD_SIZE)
    return out


def _npy_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.npy"))}


def _assert_same_output(directory: Path, reference: Path) -> None:
    assert _npy_bytes(directory) == _npy_bytes(reference)
    assert ShardManifest.load(directory).to_dict() == ShardManifest.load(reference).to_dict()
    assert not list(directory.glob("*.tmp"))


def test_shards_hold_the_flattened_features(images, reference):
    manifest = ShardManifest.load(reference)
    assert manifest.complete and len(manifest.shards) == N_SHARDS == manifest.n_shards
    assert [s.n_rows for s in manifest.shards] == [12, 12, 12, 4]
    assert manifest.n_features == 5 and manifest.n_rows == N_IMAGES * GRID * GRID
    assert manifest.extractor["params"] == {"scale": 1.0}
    direct = FakeExtractor().extract(images)
    source = load_shards(reference)
    assert isinstance(source, NpyShardSource) and source.shape == (40, 5)
    np.testing.assert_array_equal(source[:], direct.features.reshape(-1, 5))
    np.testing.assert_array_equal(load_shards(reference, kind="colors")[:],
                                  direct.colors.reshape(-1, 3))
    np.testing.assert_array_equal(load_shards(reference, kind="positions")[:],
                                  direct.positions.reshape(-1, 2))
    ranges = manifest.image_row_ranges()
    assert ranges.shape == (N_IMAGES, 2)
    for i, (start, stop) in enumerate(ranges):
        np.testing.assert_array_equal(source[start:stop], direct.features[i].reshape(-1, 5))
    assert manifest.shards[0].image_sizes == [[8, 8]] * 3


def test_interrupted_extraction_resumes_without_recomputing(images, reference, tmp_path):
    crashing = FakeExtractor()
    crashing.fail_on_call = 3  # shards 0 and 1 finish, shard 2 crashes
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_to_shards(crashing, images, tmp_path, shard_size=SHARD_SIZE)
    partial = ShardManifest.load(tmp_path)
    assert not partial.complete and [s.index for s in partial.shards] == [0, 1]
    with pytest.raises(ValueError, match="unfinished"):
        load_shards(tmp_path)
    assert len(load_shards(tmp_path, allow_incomplete=True)) == 24

    healthy = FakeExtractor()
    extract_to_shards(healthy, images, tmp_path, shard_size=SHARD_SIZE)
    first_images = [call[0] for call in healthy.calls]
    assert first_images == [float(images[6, 0, 0, 0]), float(images[9, 0, 0, 0])]
    _assert_same_output(tmp_path, reference)

    again = FakeExtractor()  # a finished extraction costs nothing to "resume"
    extract_to_shards(again, images, tmp_path, shard_size=SHARD_SIZE)
    assert getattr(again, "calls", []) == []


def test_half_written_shard_is_redone(images, reference, tmp_path):
    extract_to_shards(FakeExtractor(), images, tmp_path, shard_size=SHARD_SIZE)
    # Crash while writing shard 3: its temp file is half there, and the final file exists
    # but the manifest never listed it (the crash came before the manifest update).
    manifest = ShardManifest.load(tmp_path)
    manifest.shards, manifest.complete = manifest.shards[:3], False
    manifest.save()
    last = tmp_path / "shard_00003.npy"
    last.write_bytes(last.read_bytes()[:50])
    (tmp_path / "shard_00003_colors.npy.tmp").write_bytes(b"partial")
    extractor = FakeExtractor()
    extract_to_shards(extractor, images, tmp_path, shard_size=SHARD_SIZE)
    assert len(extractor.calls) == 1
    _assert_same_output(tmp_path, reference)


def test_damaged_finished_shard_is_detected_and_redone(images, reference, tmp_path):
    extract_to_shards(FakeExtractor(), images, tmp_path, shard_size=SHARD_SIZE)
    shard = tmp_path / "shard_00001.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        load_shards(tmp_path, verify=True)
    size_only = FakeExtractor()
    extract_to_shards(size_only, images, tmp_path, shard_size=SHARD_SIZE, verify="size")
    assert getattr(size_only, "calls", []) == []  # sizes match: the cheap check trusts it
    extractor = FakeExtractor()
    with pytest.warns(RuntimeWarning, match=r"shards \[1\]"):
        extract_to_shards(extractor, images, tmp_path, shard_size=SHARD_SIZE)
    assert len(extractor.calls) == 1
    _assert_same_output(tmp_path, reference)


def test_extractors_holding_arrays_that_differ_only_inside_are_told_apart(tmp_path):
    """repr() elides the middle of a large array, so PrecomputedFeatures of two arrays that
    differed only there looked like one extractor and a resume mixed their features."""
    from spectralnet_seg.features import PrecomputedFeatures

    first = np.zeros((4, 20, 20, 4), np.float32)
    second = first.copy()
    second[:, 5:15, 5:15] = 7.0  # repr(second) == repr(first)
    assert repr(first) == repr(second)
    extract_to_shards(PrecomputedFeatures(first), list(range(4)), tmp_path, shard_size=2)
    with pytest.raises(ValueError, match="extractor changed"):
        extract_to_shards(PrecomputedFeatures(second), list(range(4)), tmp_path, shard_size=2)


def test_changed_extraction_is_refused_unless_overwrite(images, reference, tmp_path):
    extract_to_shards(FakeExtractor(), images, tmp_path, shard_size=SHARD_SIZE)
    other_images = images.copy()
    other_images[4] += 1.0
    with pytest.raises(ValueError, match="image_list_hash changed"):
        extract_to_shards(FakeExtractor(), other_images, tmp_path, shard_size=SHARD_SIZE)
    with pytest.raises(ValueError, match="extractor changed"):
        extract_to_shards(FakeExtractor(scale=2.0), images, tmp_path, shard_size=SHARD_SIZE)
    with pytest.raises(ValueError, match="shard_size changed"):
        extract_to_shards(FakeExtractor(), images, tmp_path, shard_size=4)
    with pytest.raises(ValueError, match="resume=True"):
        extract_to_shards(FakeExtractor(), images, tmp_path, shard_size=SHARD_SIZE,
                          resume=False)

    extractor = FakeExtractor(scale=2.0)
    extract_to_shards(extractor, images, tmp_path, shard_size=4, overwrite=True)
    assert len(extractor.calls) == 3  # everything recomputed
    assert not (tmp_path / "shard_00003.npy").exists()  # stale shard of the old run removed
    expected = FakeExtractor(scale=2.0).extract(images).features.reshape(-1, 5)
    np.testing.assert_array_equal(as_feature_source(tmp_path)[:], expected)


def test_pil_images_are_identified_by_what_the_extractor_sees(tmp_path):
    """Two "P" images with the same palette indices and different palettes hashed alike
    (their arrays are the indices), so the second list resumed with the first's features."""
    from PIL import Image

    from spectralnet_seg.features import PixelExtractor

    indices = np.random.default_rng(0).integers(0, 4, (16, 16)).astype(np.uint8)

    def paletted(colours):
        image = Image.fromarray(indices, "P")
        image.putpalette([value for colour in colours for value in colour] + [0] * 756)
        return image

    red = paletted([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)])
    grey = paletted([(0, 0, 0), (80, 80, 80), (160, 160, 160), (240, 240, 240)])
    extractor = PixelExtractor(stride=4)
    extract_to_shards(extractor, [red], tmp_path)
    with pytest.raises(ValueError, match="image_list_hash changed"):
        extract_to_shards(extractor, [grey], tmp_path)
    extract_to_shards(extractor, [red], tmp_path)  # the same image still resumes


def test_directory_source_follows_the_manifest(reference, tmp_path):
    for path in reference.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    np.save(tmp_path / "zz_stray.npy", np.zeros((7, 5), dtype=np.float32))
    assert as_feature_source(tmp_path).shape == (40, 5)  # the stray file is not a shard


def test_float16_storage(images, tmp_path):
    extract_to_shards(FakeExtractor(), images, tmp_path, shard_size=5, dtype="float16")
    source = load_shards(tmp_path)
    assert source.dtype == np.float16 and source[:3].dtype == np.float32
    expected = FakeExtractor().extract(images).features.reshape(-1, 5)
    np.testing.assert_allclose(source[:], expected, rtol=1e-3)


def test_image_paths_and_ids_identify_the_image_list(images, tmp_path):
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"img{i}.npy")
        np.save(paths[-1], image)

    class PathExtractor(FakeExtractor):
        def extract(self, image_paths):
            return super().extract([np.load(p) for p in image_paths])

    out = tmp_path / "out"
    extract_to_shards(PathExtractor(), [str(p) for p in paths], out, shard_size=4)
    with pytest.raises(ValueError, match="image_list_hash"):
        extract_to_shards(PathExtractor(), [str(p) for p in paths[::-1]], out, shard_size=4)
    ids = [f"frame{i}" for i in range(N_IMAGES)]
    out_ids = tmp_path / "ids"
    extract_to_shards(FakeExtractor(), images, out_ids, shard_size=4, image_ids=ids)
    extractor = FakeExtractor()  # same ids: recognised as the same list, nothing to redo
    extract_to_shards(extractor, images, out_ids, shard_size=4, image_ids=ids)
    assert getattr(extractor, "calls", []) == []
    with pytest.raises(ValueError, match="image_ids has 2 entries"):
        extract_to_shards(FakeExtractor(), images, tmp_path / "x", image_ids=ids[:2])


@pytest.mark.parametrize("kwargs, error, message", [
    ({"shard_size": 0}, ValueError, "shard_size"),
    ({"verify": "md5"}, ValueError, "verify"),
    ({"dtype": "int8"}, ValueError, "dtype"),
])
def test_bad_arguments(images, tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        extract_to_shards(FakeExtractor(), images, tmp_path, **kwargs)


def test_bad_extractors_and_directories(images, reference, tmp_path):
    with pytest.raises(TypeError, match="extract"):
        extract_to_shards(object(), images, tmp_path)
    with pytest.raises(ValueError, match="empty"):
        extract_to_shards(FakeExtractor(), [], tmp_path)

    class Short(FakeExtractor):
        def extract(self, images):
            out = super().extract(images)
            return _Result(out.features[:1], out.colors[:1], out.positions[:1], [])

    with pytest.raises(ValueError, match=r"expected \(n_images, h, w, d\)"):
        extract_to_shards(Short(), images, tmp_path / "short", shard_size=3)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_shards(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="kind"):
        load_shards(reference, kind="labels")
    broken = tmp_path / "old"
    broken.mkdir()
    manifest = json.loads((reference / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version"):
        load_shards(broken)


def test_pixel_extractor_resumes_identically(tmp_path):
    from spectralnet_seg import features
    images = (np.random.default_rng(1).random((5, 32, 32, 3)) * 255).astype(np.uint8)
    extract_to_shards(features.PixelExtractor(), images, tmp_path / "a", shard_size=2)
    crashing = features.PixelExtractor()
    original = crashing.extract
    calls = []

    def extract(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return original(batch)

    crashing.extract = extract
    with pytest.raises(RuntimeError):
        extract_to_shards(crashing, images, tmp_path / "b", shard_size=2)
    extract_to_shards(features.PixelExtractor(), images, tmp_path / "b", shard_size=2)
    _assert_same_output(tmp_path / "b", tmp_path / "a")


def test_cli_extract_resumes_after_interruption(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from spectralnet_seg.cli import main
    from spectralnet_seg.features import PixelExtractor

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(5):  # 3 shards of 2, 2 and 1 images
        Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).save(
            folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    args = ["extract", str(folder), "--extractor", "pixel", "--shard-size", "2", "--out"]
    assert main([*args, str(tmp_path / "reference")]) == 0

    calls = []
    original = PixelExtractor.extract

    def interrupted_after_one_shard(self, images):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second shard is computed
        return original(self, images)

    monkeypatch.setattr(PixelExtractor, "extract", interrupted_after_one_shard)
    with pytest.raises(KeyboardInterrupt):
        main([*args, str(tmp_path / "out")])
    assert len(ShardManifest.load(tmp_path / "out").shards) == 1
    calls.clear()
    monkeypatch.setattr(PixelExtractor, "extract", lambda self, images: (
        calls.append(len(images)), original(self, images))[1])
    assert main([*args, str(tmp_path / "out")]) == 0
    assert calls == [2, 1]  # only the two unfinished shards were computed
    _assert_same_output(tmp_path / "out", tmp_path / "reference")
    assert "5 images" in capsys.readouterr().out


def test_cli_extract_errors(tmp_path, capsys):
    from spectralnet_seg.cli import main

    assert main(["extract", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no image file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["extract", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no image files" in capsys.readouterr().err
    # An unreadable image is found before any shard is written (3 were, then the error).
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / f"img{i}.png")
    (folder / "img3.png").write_text("not an image")
    assert main(["extract", str(folder), "--out", str(tmp_path / "o2"), "--shard-size",
                 "1"]) == 2
    assert "img3.png is not a readable image" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() or not list((tmp_path / "o2").iterdir())
    # The library's advice is given in the command's options, not as Python arguments.
    (folder / "img3.png").unlink()
    argv = ["extract", str(folder), "--out", str(tmp_path / "o3"), "--extractor", "pixel"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--no-resume"]) == 2
    error = capsys.readouterr().err
    assert "drop --no-resume" in error and "--overwrite" in error and "=True" not in error


class _Returns(BaseEstimator):
    """An extractor returning fixed arrays whatever the images (for bad outputs)."""

    def __init__(self, features=None, colors=None, positions=None):
        self.features, self.colors, self.positions = features, colors, positions

    def extract(self, images):
        n = len(images)
        return _Result(self.features[:n], None if self.colors is None else self.colors[:n],
                       None if self.positions is None else self.positions[:n], [(8, 8)] * n)


def test_extractor_outputs_that_cannot_be_stored_are_refused(tmp_path):
    images = np.zeros((2, 8, 8, 3), np.float32)
    big = np.full((2, 2, 2, 3), 1e5, np.float32)  # float16 tops out at 65504
    with pytest.raises(ValueError, match="do not fit float16 storage.*dtype='float32'"):
        extract_to_shards(_Returns(big), images, tmp_path / "a", dtype="float16")  # was inf
    features = np.ones((2, 2, 2, 3), np.float32)
    with pytest.raises(ValueError, match=r"colors of shape \(2, 3, 2, 2\)"):  # channels first
        extract_to_shards(_Returns(features, colors=np.ones((2, 3, 2, 2))), images,
                          tmp_path / "b")
    with pytest.raises(ValueError, match="empty token grid"):  # was a manifest refused later
        extract_to_shards(_Returns(np.ones((2, 0, 2, 3))), images, tmp_path / "c")


def test_a_file_replaced_under_the_same_name_is_a_changed_extraction(tmp_path):
    """The image list was identified by paths alone: rerunning after replacing a file
    resumed with the old file's features."""
    import os

    from PIL import Image

    from spectralnet_seg.features import PixelExtractor

    paths = []
    for i in range(2):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(paths[-1])
    out = tmp_path / "shards"
    extract_to_shards(PixelExtractor(stride=8), paths, out)
    extract_to_shards(PixelExtractor(stride=8), paths, out)  # unchanged: a finished resume
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(paths[0])
    os.utime(paths[0], ns=(0, 10**18))  # a new version, whatever the clock's resolution
    with pytest.raises(ValueError, match="image_list_hash changed"):
        extract_to_shards(PixelExtractor(stride=8), paths, out)


def test_images_of_several_sizes_share_one_grid_whatever_the_shard(tmp_path):
    """Each shard used to be sized by its own first image: with shard_size 2 the 48 x 40
    image below was extracted at 32 x 32 in one run and at its own size in another."""
    from spectralnet_seg import features
    rng = np.random.default_rng(2)
    sizes = [(64, 64), (32, 32), (48, 40), (64, 64), (32, 48)]
    images = [(rng.random((*size, 3)) * 255).astype(np.uint8) for size in sizes]
    extract_to_shards(features.PixelExtractor(), images, tmp_path / "pairs", shard_size=2)
    extract_to_shards(features.PixelExtractor(), images, tmp_path / "whole", shard_size=5)
    pairs, whole = load_shards(tmp_path / "pairs"), load_shards(tmp_path / "whole")
    assert {tuple(s.grid) for s in ShardManifest.load(tmp_path / "pairs").shards} == {(8, 8)}
    np.testing.assert_array_equal(np.asarray(pairs), np.asarray(whole))
    # the grid is the first image's, as one call of the extractor makes it
    expected = features.PixelExtractor().extract(images).features.reshape(-1, whole.shape[1])
    np.testing.assert_allclose(np.asarray(whole), expected, rtol=1e-6)


def test_only_the_extractions_own_leftover_files_are_removed(images, tmp_path):
    (tmp_path / "shard_00001.npy.tmp").write_bytes(b"cut short")
    (tmp_path / "my_download.tmp").write_text("the user's")
    extract_to_shards(FakeExtractor(), images, tmp_path, shard_size=SHARD_SIZE)
    assert not (tmp_path / "shard_00001.npy.tmp").exists()
    assert (tmp_path / "my_download.tmp").read_text() == "the user's"


def test_bfloat16_tensor_features_are_stored_as_their_values(tmp_path):
    torch = pytest.importorskip("torch")
    values = torch.randn(2, 2, 2, 4).to(torch.bfloat16)

    class BFloat16Extractor:
        def extract(self, images):
            from spectralnet_seg.features import ExtractedFeatures, token_positions
            n = len(images)
            return ExtractedFeatures(values[:n], np.zeros((n, 2, 2, 3), np.float32),
                                     np.broadcast_to(token_positions(2, 2), (n, 2, 2, 2)))

    extract_to_shards(BFloat16Extractor(), np.zeros((2, 8, 8, 3), np.uint8), tmp_path)
    np.testing.assert_array_equal(np.asarray(load_shards(tmp_path)),
                                  values.float().numpy().reshape(-1, 4))


def test_a_dataset_of_image_mask_pairs_is_refused_clearly(tmp_path):
    pairs = [(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))] * 2
    with pytest.raises(ValueError, match="pass the images alone"):
        extract_to_shards(FakeExtractor(), pairs, tmp_path)
