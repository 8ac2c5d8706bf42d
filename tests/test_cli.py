"""The ``spectralnet-seg`` command: segment and evaluate (the demo is in test_demo.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from spectralnet_seg.cli import build_parser, main
from spectralnet_seg.datasets import TextureMosaics


@pytest.fixture(scope="module")
def mosaic_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, (image, _) in enumerate(TextureMosaics(n_images=3, image_size=48, seed=3)):
        paths.append(folder / f"mosaic{i}.png")
        Image.fromarray(image).save(paths[-1])
    return [str(p) for p in paths]


def read_png(path):
    return np.asarray(Image.open(path))


@pytest.mark.parametrize(("estimator", "kernel"),
                         [("kmeans", "paper"), ("discrete", "paper"), ("eigsh", "knn")])
def test_segment_writes_full_resolution_label_maps_and_overlays(mosaic_files, tmp_path,
                                                                 capsys, estimator, kernel):
    out = tmp_path / "segs"
    # 3 images of 6 x 6 tokens: a batch of 108 holds them whole (the pixel graph is per image)
    status = main(["segment", *mosaic_files, "--estimator", estimator, "--n-clusters", "4",
                   "--kernel", kernel, "--n-neighbors", "8", "--pixel-weight", "0.5",
                   "--max-iter", "20", "--batch-size", "108", "--out", str(out)])
    assert status == 0
    for path in mosaic_files:
        stem = path.rsplit("/", 1)[-1][:-4]
        labels = read_png(out / f"{stem}_labels.png")
        overlay = read_png(out / f"{stem}_overlay.png")
        assert labels.shape == (48, 48) and labels.max() < 4
        assert overlay.shape == (48, 48, 3)
    assert "3 images into 4 clusters" in capsys.readouterr().out


def test_segment_with_a_random_init_timm_vit(mosaic_files, tmp_path):
    pytest.importorskip("timm")
    out = tmp_path / "vit"
    status = main(["segment", *mosaic_files[:2], "--extractor", "timm:vit_tiny_patch16_224",
                   "--random-init", "--estimator", "eigsh", "--n-clusters", "3",
                   "--n-neighbors", "5", "--out", str(out)])
    assert status == 0
    assert read_png(out / "mosaic0_labels.png").shape == (48, 48)


def test_segment_reports_user_errors_without_a_traceback(mosaic_files, tmp_path, capsys):
    status = main(["segment", str(tmp_path / "nope.png"), "--out", str(tmp_path)])
    assert status == 2
    assert "image file not found" in capsys.readouterr().err
    status = main(["segment", *mosaic_files, "--checkpoint-path", "w.pth",
                   "--out", str(tmp_path)])
    assert status == 2
    assert "only apply to timm extractors" in capsys.readouterr().err
    status = main(["segment", *mosaic_files, "--extractor", "sift", "--out", str(tmp_path)])
    assert status == 2
    assert "unknown extractor" in capsys.readouterr().err


def test_parser_rejects_bad_values():
    parser = build_parser()
    for argv in (["segment", "a.png", "--out", "x", "--n-clusters", "0"],
                 ["segment", "a.png", "--out", "x", "--estimator", "dbscan"],
                 ["segment", "a.png", "--out", "x", "--kernel", "rbf"],
                 ["segment", "a.png", "--out", "x", "--pixel-weight", "-1"],
                 ["segment", "a.png", "--out", "x", "--diffusion-steps", "0"],
                 ["demo", "--kernel", "cosine"],
                 ["evaluate"], []):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        assert info.value.code == 2


def test_demo_options_reach_the_configuration(monkeypatch):
    import spectralnet_seg.demo as demo

    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda out, config: seen.update(config=config))
    assert main(["demo", "--quick", "--kernel", "knn", "--seed", "3", "--n-images", "2"]) == 0
    config = seen["config"]
    assert (config.kernel, config.random_state, config.n_train) == ("knn", 3, 2)
    assert config.max_iter == demo.DemoConfig.quick().max_iter


def test_evaluate_on_the_bundled_mosaics_writes_scores(tmp_path, capsys):
    out = tmp_path / "eval"
    status = main(["evaluate", "--dataset", "mosaics", "--estimator", "kmeans",
                   "--n-clusters", "6", "--max-fit-images", "4", "--max-images", "3",
                   "--crop-size", "64", "--matching", "hungarian", "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "mosaics (3 images, hungarian matching" in printed and "brick" in printed
    scores = json.loads((out / "scores.json").read_text())
    assert 0.0 < scores["mean_iou"] <= 1.0 and scores["n_images"] == 3
    assert len(scores["per_class_iou"]) == 6 and len(scores["mapping"]) == 6
    assert (out / "per_class_iou.png").stat().st_size > 0


def test_evaluate_needs_a_root_for_folder_datasets(tmp_path, capsys):
    assert main(["evaluate", "--dataset", "ade20k"]) == 2
    assert "--root is required" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", "ade20k", "--root", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("spectralnet-seg evaluate: error:")
