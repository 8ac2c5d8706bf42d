"""The ``spectralnet-seg`` command: segment and evaluate (the demo is in test_demo.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import spectralnet_seg
from spectralnet_seg import cli
from spectralnet_seg.cli import build_parser, main
from spectralnet_seg.cluster import DiscreteNeuralEigenClustering, NeuralEigenClustering
from spectralnet_seg.datasets import TextureMosaics
from spectralnet_seg.features import PixelExtractor
from spectralnet_seg.segmentation import Segmenter


@pytest.fixture(scope="module")
def mosaic_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, (image, _) in enumerate(TextureMosaics(n_images=3, image_size=48, seed=3)):
        paths.append(folder / f"mosaic{i}.png")
        Image.fromarray(image).save(paths[-1])
    return [str(p) for p in paths]


@pytest.fixture
def work_log(monkeypatch):
    """Records every feature extraction and fit, to check that errors come before work."""
    calls = []
    extract, fit = PixelExtractor.extract, Segmenter._fit_extracted

    def logged_extract(self, images):
        calls.append("extract")
        return extract(self, images)

    def logged_fit(self, extracted):  # fit and fit_predict both fit through this
        calls.append("fit")
        return fit(self, extracted)

    monkeypatch.setattr(PixelExtractor, "extract", logged_extract)
    monkeypatch.setattr(Segmenter, "_fit_extracted", logged_fit)
    return calls


def read_png(path):
    with Image.open(path) as png:
        return np.asarray(png)


def one_line_error(capsys, command="segment") -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"spectralnet-seg {command}: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(("estimator", "options"), [
    ("kmeans", ["--seed", "0"]),
    # 3 images of 6 x 6 tokens: a batch of 108 holds them whole (the pixel graph is per image)
    ("discrete", ["--kernel", "paper", "--n-neighbors", "8", "--pixel-weight", "0.5",
                  "--max-iter", "20", "--batch-size", "108", "--seed", "0"]),
    ("eigsh", ["--kernel", "knn", "--n-neighbors", "8", "--seed", "0"]),
])
def test_segment_writes_full_resolution_label_maps_and_overlays(mosaic_files, tmp_path,
                                                                 capsys, estimator, options):
    out = tmp_path / "segs"
    status = main(["segment", *mosaic_files, "--estimator", estimator, "--n-clusters", "4",
                   *options, "--out", str(out)])
    assert status == 0
    for path in mosaic_files:
        stem = Path(path).stem
        labels = read_png(out / f"{stem}_labels.png")
        assert labels.shape == (48, 48) and labels.max() < 4
        with Image.open(out / f"{stem}_labels_color.png") as color:  # a picture one can see
            assert color.mode == "P"
            np.testing.assert_array_equal(np.asarray(color), labels)
        assert read_png(out / f"{stem}_overlay.png").shape == (48, 48, 3)
    assert "3 images into 4 clusters" in capsys.readouterr().out


def test_segment_one_photo_matches_segment_image(mosaic_files, tmp_path):
    """The shell's one-photo segmentation is the Python one (`segment_image`), label for
    label: same kernel, same embedding scaling (`embedding_norm="auto"` for one photo)."""
    from spectralnet_seg.images import load_image
    from spectralnet_seg.segmentation import segment_image

    assert main(["segment", mosaic_files[0], "--seed", "0", "--quiet",
                 "--out", str(tmp_path)]) == 0
    expected = segment_image(load_image(mosaic_files[0]), 8, random_state=0)
    labels = read_png(tmp_path / f"{Path(mosaic_files[0]).stem}_labels.png")
    # (on this mosaic the estimator default, embedding_norm="degree", differs from "auto")
    np.testing.assert_array_equal(labels, expected)


def test_segment_takes_a_folder_of_images(mosaic_files, tmp_path, capsys):
    folder = tmp_path / "photos"  # the three mosaics, and a file that is not an image
    folder.mkdir()
    for path in mosaic_files:
        shutil.copy(path, folder)
    (folder / "notes.txt").write_text("skipped: not an image suffix")
    out = tmp_path / "segs"
    assert main(["segment", str(folder), "--estimator", "kmeans", "--n-clusters", "3",
                 "--seed", "0", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.glob("*_labels.png")) == [
        f"{Path(p).stem}_labels.png" for p in sorted(mosaic_files)]
    assert "3 images into 3 clusters" in capsys.readouterr().out


def test_segment_into_its_input_folder_does_not_fit_its_own_outputs(mosaic_files, tmp_path,
                                                                     capsys):
    # A rerun with --overwrite fitted the earlier label maps and overlays as new photos.
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(mosaic_files[0], folder)
    argv = ["segment", str(folder), "--estimator", "kmeans", "--n-clusters", "3", "--seed",
            "0", "--out", str(folder)]
    assert main(argv) == 0
    first = read_png(folder / "mosaic0_labels.png")
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 0
    assert "on 1 image(s)" in capsys.readouterr().err
    np.testing.assert_array_equal(read_png(folder / "mosaic0_labels.png"), first)
    assert not list(folder.glob("*_labels_labels.png"))


def test_segment_one_photo_with_defaults_shows_progress_unless_quiet(mosaic_files, tmp_path,
                                                                     capsys):
    assert main(["segment", mosaic_files[0], "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert "fitting eigsh (K = 8) on 1 image(s)" in captured.err
    assert "segmenting" in captured.err  # the progress bar
    assert "[EigshSpectralClustering] affinity graph" in captured.out  # stage messages
    assert read_png(tmp_path / "a" / "mosaic0_labels.png").shape == (48, 48)
    assert main(["segment", mosaic_files[0], "--out", str(tmp_path / "b"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "EigshSpectralClustering" not in captured.out


def test_segment_with_a_random_init_timm_vit(mosaic_files, tmp_path):
    out = tmp_path / "vit"
    status = main(["segment", *mosaic_files[:2], "--extractor", "timm:vit_tiny_patch16_224",
                   "--random-init", "--estimator", "eigsh", "--n-clusters", "3",
                   "--n-neighbors", "5", "--out", str(out), "--quiet"])
    assert status == 0
    assert read_png(out / "mosaic0_labels.png").shape == (48, 48)


def test_inputs_with_the_same_file_name_get_distinct_outputs(tmp_path, capsys):
    # Different sizes tell the two results apart: each label map has its own image's size.
    for folder, size in (("a", (48, 48)), ("b", (40, 56))):
        (tmp_path / folder).mkdir()
        image = TextureMosaics(n_images=1, image_size=64, seed=len(folder)).images()[0]
        Image.fromarray(image[: size[0], : size[1]]).save(tmp_path / folder / "x0.png")
    inputs = [str(tmp_path / "a" / "x0.png"), str(tmp_path / "b" / "x0.png")]
    out = tmp_path / "out"
    assert main(["segment", *inputs, "--estimator", "kmeans", "--n-clusters", "3",
                 "--out", str(out)]) == 0
    assert "results are named x0-2_*.png" in capsys.readouterr().err
    assert read_png(out / "x0_labels.png").shape == (48, 48)
    assert read_png(out / "x0-2_labels.png").shape == (40, 56)
    assert read_png(out / "x0-2_overlay.png").shape == (40, 56, 3)


def test_existing_outputs_are_refused_before_any_work_unless_overwrite(
        mosaic_files, tmp_path, capsys, work_log):
    out = tmp_path / "out"
    argv = ["segment", mosaic_files[0], "--estimator", "kmeans", "--n-clusters", "3",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    first = (out / "mosaic0_labels.png").read_bytes()
    work_log.clear()
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert "output file(s) already exist" in err and "pass --overwrite" in err
    assert work_log == []  # refused up-front: nothing extracted, nothing fitted
    assert (out / "mosaic0_labels.png").read_bytes() == first
    assert main([*argv, "--overwrite"]) == 0 and "fit" in work_log


def test_out_naming_an_existing_file_is_refused_before_any_work(mosaic_files, tmp_path, capsys,
                                                                work_log):
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    assert main(["segment", *mosaic_files, "--out", str(a_file)]) == 2
    assert "is an existing file" in one_line_error(capsys)
    assert main(["evaluate", "--dataset", "mosaics", "--out", str(a_file)]) == 2
    assert "is an existing file" in one_line_error(capsys, "evaluate")
    assert main(["extract", *mosaic_files, "--out", str(a_file)]) == 2
    assert "is an existing file" in one_line_error(capsys, "extract")
    assert main(["demo", "--quick", "--out", str(a_file)]) == 2
    assert "is an existing file" in one_line_error(capsys, "demo")
    assert work_log == [] and a_file.read_text() == "keep me"


def test_unusable_device_and_checkpoint_are_one_line_errors_before_work(
        mosaic_files, tmp_path, capsys, work_log):
    import torch

    if not torch.backends.mps.is_available():
        assert main(["segment", *mosaic_files, "--estimator", "discrete", "--device", "mps",
                     "--out", str(tmp_path)]) == 2
        assert "MPS (Apple GPU) is not available" in one_line_error(capsys)
    assert main(["segment", *mosaic_files, "--estimator", "neural", "--device", "tpu",
                 "--out", str(tmp_path)]) == 2
    assert "'tpu' is not a torch device" in one_line_error(capsys)
    garbage = tmp_path / "weights.pth"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    assert main(["segment", *mosaic_files, "--extractor", "timm:vit_tiny_patch16_224",
                 "--checkpoint-path", str(garbage), "--out", str(tmp_path)]) == 2
    err = one_line_error(capsys)
    assert "could not be loaded as timm weights" in err and str(garbage) in err
    assert "weights_only=False" not in err  # torch's unsafe advice is never passed on
    assert work_log == []


def test_timm_weights_without_network_are_a_one_line_error(mosaic_files, tmp_path):
    # A fresh process with the hub offline: what a user without network sees.
    root = Path(spectralnet_seg.__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-m", "spectralnet_seg.cli", "segment", mosaic_files[0],
         "--extractor", "timm:vit_tiny_patch16_224", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "could not get the pretrained weights" in result.stderr
    assert "--checkpoint-path FILE or --random-init" in result.stderr
    assert not list((tmp_path / "o").glob("*.png"))


def test_segment_reports_user_errors_without_a_traceback(mosaic_files, tmp_path, capsys):
    status = main(["segment", str(tmp_path / "nope.png"), "--out", str(tmp_path / "new" / "o")])
    assert status == 2
    assert "no image file or folder" in one_line_error(capsys)
    assert not (tmp_path / "new").exists()  # the output folder was made before the check
    # "n_samples=12" did not say that the samples are the extractor's cells
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tiny)
    for estimator in ("eigsh", "kmeans"):
        assert main(["segment", str(tiny), "--n-clusters", "13", "--estimator", estimator,
                     "--out", str(tmp_path / "o13"), "--quiet"]) == 2
        assert ("n_clusters=13 is more than the 12 tokens the images gave (the extractor's "
                "3x4 grid per image)") in one_line_error(capsys)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    assert main(["segment", str(not_an_image), "--out", str(tmp_path)]) == 2
    assert "is not a readable image" in one_line_error(capsys)
    status = main(["segment", *mosaic_files, "--checkpoint-path", "w.pth",
                   "--out", str(tmp_path)])
    assert status == 2
    assert "only apply to timm extractors" in one_line_error(capsys)
    status = main(["segment", *mosaic_files, "--extractor", "timm:vit_tiny_patch16_224",
                   "--checkpoint-path", "w.pth", "--random-init", "--out", str(tmp_path)])
    assert status == 2  # the checkpoint used to win silently
    assert "exclude each other" in one_line_error(capsys)
    status = main(["segment", *mosaic_files, "--extractor", "sift", "--out", str(tmp_path)])
    assert status == 2
    assert "unknown extractor" in one_line_error(capsys)
    assert main(["segment", *mosaic_files, "--max-iter", "5", "--out", str(tmp_path)]) == 2
    assert "--max-iter: not used by --estimator eigsh" in one_line_error(capsys)
    assert main(["segment", *mosaic_files, "--estimator", "kmeans", "--n-neighbors", "5",
                 "--out", str(tmp_path)]) == 2
    assert "uses no kernel" in one_line_error(capsys)
    assert main(["segment", *mosaic_files, "--kernel", "knn", "--pixel-weight", "1",
                 "--out", str(tmp_path)]) == 2
    assert "--pixel-weight only applies to --kernel paper" in one_line_error(capsys)
    if importlib.util.find_spec("pydensecrf") is None:  # the option's words, not Python's
        assert main(["segment", *mosaic_files, "--crf", "--out", str(tmp_path)]) == 2
        message = one_line_error(capsys)
        assert "or run without --crf" in message and "crf=None" not in message
        assert "pip install 'spectralnet-seg[crf]'" in message


def test_unexpected_failures_are_one_line_too_unless_debug(mosaic_files, tmp_path, capsys,
                                                           monkeypatch):
    def broken_fit(self, extracted):
        raise RuntimeError("something deep\nbroke here")

    monkeypatch.setattr(Segmenter, "_fit_extracted", broken_fit)
    argv = ["segment", *mosaic_files, "--estimator", "kmeans", "--out", str(tmp_path),
            "--quiet"]
    assert main(argv) == 2
    assert "error: RuntimeError: something deep broke here" in one_line_error(capsys)
    with pytest.raises(RuntimeError, match="something deep"):
        main(["--debug", *argv])


def test_unset_options_keep_the_estimators_own_defaults():
    # No setting comes from the demo (tuned on texture mosaics): a left-out option is the
    # estimator's own default, read here from the classes themselves.
    args = build_parser().parse_args(["segment", "x.png", "--out", "o", "--estimator",
                                      "discrete"])
    estimator = cli._make_estimator(args)
    reference = DiscreteNeuralEigenClustering(8).get_params(deep=False)
    ours = estimator.get_params(deep=False)
    for name in ("batch_size", "learning_rate", "max_iter", "diffusion_steps",
                 "orthogonality_weight", "hidden_layer_sizes", "random_state", "device"):
        assert ours[name] == reference[name], name
    assert ours["kernel"].kernels[0].n_neighbors == 256  # paper_kernel's own k


def test_help_shows_the_estimators_own_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    neural, discrete = NeuralEigenClustering(), DiscreteNeuralEigenClustering()
    assert f"[neural {neural.batch_size}, discrete {discrete.batch_size}]" in text
    assert f"[neural {neural.learning_rate}, discrete {discrete.learning_rate}]" in text
    assert f"[neural {neural.diffusion_steps}, discrete {discrete.diffusion_steps}]" in text
    assert f"[neural {neural.max_iter}, discrete {discrete.max_iter}]" in text
    assert "[paper 256, knn 10]" in text and "[0.3]" in text


def test_parser_rejects_bad_values():
    parser = build_parser()
    for argv in (["segment", "a.png", "--out", "x", "--n-clusters", "0"],
                 ["segment", "a.png", "--out", "x", "--estimator", "dbscan"],
                 ["segment", "a.png", "--out", "x", "--kernel", "rbf"],
                 ["segment", "a.png", "--out", "x", "--pixel-weight", "-1"],
                 ["segment", "a.png", "--out", "x", "--diffusion-steps", "0"],
                 ["demo", "--kernel", "cosine"],
                 ["demo", "--seed", "-1"], ["segment", "a.png", "--out", "x", "--seed",
                                            str(2**32)],  # refused after the data, before
                 ["evaluate"], []):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        assert info.value.code == 2


def test_usage_errors_are_one_line(capsys):
    """argparse printed the usage block and then the error: 7 lines."""
    with pytest.raises(SystemExit) as info:
        main(["extract", "x", "--out", "y", "--shard-size", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spectralnet-seg extract: error: ")
    assert "--shard-size" in err and "--help" in err


def test_demo_options_reach_the_configuration(monkeypatch, tmp_path):
    import spectralnet_seg.demo as demo

    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda out, config: seen.update(config=config))
    assert main(["demo", "--quick", "--kernel", "knn", "--seed", "3", "--n-images", "2",
                 "--out", str(tmp_path)]) == 0
    config = seen["config"]
    assert (config.kernel, config.random_state, config.n_train) == ("knn", 3, 2)
    assert config.max_iter == demo.DemoConfig.quick().max_iter


def test_evaluate_on_the_bundled_mosaics_writes_scores(tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--dataset", "mosaics", "--estimator", "kmeans", "--seed", "0",
            "--n-clusters", "6", "--max-fit-images", "4", "--max-images", "3",
            "--crop-size", "64", "--matching", "hungarian", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "mosaics (3 images, hungarian matching" in printed and "brick" in printed
    scores = json.loads((out / "scores.json").read_text())
    assert scores["n_images"] == 3 and len(scores["per_class_iou"]) == 6
    assert sorted(scores["mapping"]) == list(range(6))  # --matching hungarian: one-to-one
    per_class = np.array(scores["per_class_iou"], dtype=float)  # null (absent class) -> nan
    assert scores["mean_iou"] == pytest.approx(np.nanmean(per_class), abs=1e-12)
    assert (out / "per_class_iou.png").stat().st_size > 0
    assert main(argv) == 2  # a second run would overwrite the scores
    assert "--overwrite" in one_line_error(capsys, "evaluate")
    assert main([*argv, "--overwrite"]) == 0


def test_evaluate_mosaics_refuses_unknown_splits_and_a_root(tmp_path, capsys, work_log):
    base = ["evaluate", "--dataset", "mosaics", "--estimator", "kmeans"]
    assert main([*base, "--eval-split", "vall"]) == 2  # was: silently the training split
    assert "--eval-split 'vall'" in one_line_error(capsys, "evaluate")
    assert main([*base, "--fit-split", "training"]) == 2
    assert "train, val, test" in one_line_error(capsys, "evaluate")
    assert main([*base, "--root", str(tmp_path)]) == 2
    assert "--root does not apply" in one_line_error(capsys, "evaluate")
    assert work_log == []


def test_evaluate_needs_a_root_for_folder_datasets(tmp_path, capsys):
    assert main(["evaluate", "--dataset", "ade20k"]) == 2
    assert "--root is required" in one_line_error(capsys, "evaluate")
    assert main(["evaluate", "--dataset", "ade20k", "--root", str(tmp_path / "none")]) == 2
    one_line_error(capsys, "evaluate")
    assert main(["evaluate", "--dataset", "mosaic"]) == 2  # a typo, not a missing root
    assert "unknown dataset 'mosaic'" in one_line_error(capsys, "evaluate")


def test_resolve_device_rejects_unknown_and_unavailable_devices():
    import torch

    from spectralnet_seg._utils import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'tpu' is not a torch device"):
        resolve_device("tpu")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="MPS .* is not available"):
            resolve_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_output_names_doctest():
    import doctest

    from spectralnet_seg import _cli_checks

    result = doctest.testmod(_cli_checks)
    assert result.attempted > 0 and result.failed == 0


def test_scores_json_is_strict_json_when_nothing_was_scored(tmp_path):
    """NaN scores (every pixel ignored) were written as the non-JSON token NaN."""
    scores = {"pixel_accuracy": float("nan"), "mean_iou": float("nan"), "matching": "majority",
              "protocol": None, "n_images": 1, "n_clusters": 2, "class_names": ["a", "b"],
              "per_class_iou": np.array([np.nan, np.nan]), "mapping": np.array([0, 1])}
    cli._write_scores(tmp_path, scores, "custom")
    written = json.loads((tmp_path / "scores.json").read_text(),
                         parse_constant=lambda token: pytest.fail(f"non-JSON {token}"))
    assert written["mean_iou"] is None and written["per_class_iou"] == [None, None]
