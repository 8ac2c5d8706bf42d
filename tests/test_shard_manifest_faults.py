"""Shard manifests that lie: paths outside their folder, wrong row counts, malformed JSON,
truncated arrays. Each is refused with an error naming the file, before anything is read or
deleted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from spectralnet_seg.data import as_feature_source, extract_to_shards, load_shards
from spectralnet_seg.data.shards import MANIFEST_NAME


@dataclasses.dataclass
class _Result:
    features: np.ndarray
    colors: np.ndarray
    positions: np.ndarray
    image_sizes: list


class _CellMeans:
    """A 2 x 2 grid of cell means per image: 4 tokens of 3 features."""

    def extract(self, images):
        images = np.asarray(images, dtype=np.float32)
        cells = images.reshape(len(images), 2, 4, 2, 4, 3).mean((2, 4))
        positions = np.zeros((len(images), 2, 2, 2), np.float32)
        return _Result(cells, cells, positions, [(8, 8)] * len(images))


IMAGES = np.random.default_rng(0).random((5, 8, 8, 3)).astype(np.float32)


@pytest.fixture
def out(tmp_path) -> Path:
    directory = tmp_path / "out"
    extract_to_shards(_CellMeans(), IMAGES, directory, shard_size=2)
    return directory


def _edit_manifest(directory: Path, edit) -> None:
    path = directory / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("outside", ["relative", "absolute", "symlink"])
def test_manifest_paths_outside_the_folder_are_refused(out, tmp_path, outside):
    victim = tmp_path / "victim.npy"
    np.save(victim, np.zeros((8, 3), np.float32))
    if outside == "symlink":
        (out / "link.npy").symlink_to(victim)
        name = "link.npy"
    else:
        name = "../victim.npy" if outside == "relative" else str(victim)

    def point_outside(data):
        data["shards"][0]["files"]["features"] = name

    _edit_manifest(out, point_outside)
    with pytest.raises(ValueError, match="refusing to read or delete"):
        extract_to_shards(_CellMeans(), IMAGES, out, shard_size=2, overwrite=True)
    assert victim.exists()
    for read in (lambda: load_shards(out), lambda: as_feature_source(out)):
        with pytest.raises(ValueError, match=f"{MANIFEST_NAME} lists the shard file"):
            read()


def test_manifest_path_traversal_through_the_cli(tmp_path, capsys):
    from PIL import Image

    from spectralnet_seg.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(IMAGES[:2]):
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"im{i}.png")
    args = ["extract", str(folder), "--extractor", "pixel", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    victim = tmp_path / "precious.txt"
    victim.write_text("not yours to delete")
    _edit_manifest(tmp_path / "out", lambda data: data["shards"][0]["files"].update(
        colors="../precious.txt"))
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "'../precious.txt'" in err and "refusing to read or delete" in err
    assert victim.read_text() == "not yours to delete"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["shards"][0].update(n_rows=7), "shard 0 has n_rows=7, but its 2 images"),
    (lambda d: d["shards"][1].update(image_start=1), r"shard 1 covers images \[1, 4\)"),
    (lambda d: d["shards"].pop(1), r"marked complete but lists shards \[0, 2\] of 3"),
    (lambda d: d["shards"][0].update(grid=[2]), "has grid"),
    (lambda d: d["shards"][0].pop("files"), "not a valid manifest"),
    # A hand-edited checksum table: was KeyError('colors') on resume and verify.
    (lambda d: d["shards"][0]["sha256"].pop("colors"), "sha256 .*one entry per file"),
    (lambda d: d["shards"][1].update(nbytes=None), "nbytes None"),
], ids=["n_rows", "row_range", "missing_shard", "grid", "no_files", "sha256", "nbytes"])
def test_inconsistent_manifests_are_refused(out, edit, message):
    _edit_manifest(out, edit)
    with pytest.raises(ValueError, match=message):
        load_shards(out)


def test_shard_with_the_wrong_number_of_rows_is_refused(out):
    np.save(out / "shard_00001.npy", np.zeros((5, 3), np.float32))  # the manifest says 8
    with pytest.raises(ValueError, match=r"shard_00001.npy holds an array of shape \(5, 3\), "
                       "but the manifest lists 8 rows"):
        load_shards(out)
    with pytest.raises(ValueError, match="holds an array of shape"):
        as_feature_source(out)


def test_malformed_manifest_json_names_the_file(out):
    (out / MANIFEST_NAME).write_text('{"format_version": 1, "shards": [')
    with pytest.raises(ValueError, match=f"{MANIFEST_NAME} is not a valid manifest "
                       r"\(malformed JSON"):
        load_shards(out)


def test_overwrite_replaces_an_invalid_manifest_and_its_shards(out):
    """The message says to rerun with overwrite=True, which used to fail on the same
    manifest. Now it removes the files extract_to_shards names itself, and nothing else."""
    reference = load_shards(out)[:]
    (out / MANIFEST_NAME).write_text('{"format_version": 1, "shards": [')
    (out / "notes.txt").write_text("mine")
    (out / "shard_00009.npy").write_bytes(b"stale")  # an old shard of the same naming
    with pytest.raises(ValueError, match="not a valid manifest"):
        extract_to_shards(_CellMeans(), IMAGES, out, shard_size=2)
    extract_to_shards(_CellMeans(), IMAGES, out, shard_size=2, overwrite=True)
    np.testing.assert_array_equal(load_shards(out)[:], reference)
    assert (out / "notes.txt").read_text() == "mine" and not (out / "shard_00009.npy").exists()


def test_truncated_npy_names_the_file(out, tmp_path):
    shard = out / "shard_00000.npy"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ValueError, match="shard_00000.npy is truncated"):
        load_shards(out)
    single = tmp_path / "single.npy"
    np.save(single, np.ones((100, 4), np.float32))
    single.write_bytes(single.read_bytes()[:500])
    with pytest.raises(ValueError, match="single.npy is truncated: its header describes"):
        as_feature_source(single)
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match="junk.npy is not a valid .npy file"):
        as_feature_source(tmp_path / "junk.npy")
