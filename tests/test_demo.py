"""The offline demo, in its quick configuration (the full run is timed by hand, see README)."""

from __future__ import annotations

import contextlib
import csv
import io

import numpy as np
import pytest
from PIL import Image

from spectralnet_seg.cli import main
from spectralnet_seg.demo import (
    ESTIMATORS,
    DemoConfig,
    demo_kernel,
    format_table,
    make_estimator,
    run_demo,
)
from spectralnet_seg.kernels import requires_context


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """One quick run through the command line: its output folder and what it printed."""
    out = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["demo", "--quick", "--out", str(out)])
    return status, out, printed.getvalue()


def test_demo_prints_a_table_of_the_four_methods(quick_demo):
    status, _, printed = quick_demo
    assert status == 0
    header = next(line for line in printed.splitlines() if line.startswith("method"))
    assert "mIoU (%)" in header and "fit time (s)" in header and "predict time (s)" in header
    for name in ESTIMATORS:
        assert any(line.split()[:1] == [name] for line in printed.splitlines())


def test_demo_uses_the_paper_kernel_and_the_estimators_defaults(quick_demo):
    _, _, printed = quick_demo
    assert "pixel graph" in printed and "every estimator with its defaults" in printed
    assert requires_context(demo_kernel(kind=DemoConfig().kernel))
    assert not requires_context(demo_kernel(kind="knn"))
    # Nothing but the kernel, the seed and (in the smoke test) a step cap reaches them.
    assert DemoConfig().neural_params() == {}
    assert DemoConfig.quick().neural_params() == {"max_iter": 100}


def test_demo_writes_scores_and_overlay_pictures(quick_demo):
    _, out, _ = quick_demo
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == list(ESTIMATORS)
    for r in rows:
        assert 0.0 < float(r["mean_iou"]) <= 1.0 and 0.0 < float(r["pixel_accuracy"]) <= 1.0
        assert float(r["fit_time_s"]) > 0
    config = DemoConfig.quick()
    size = (config.image_size, config.image_size)
    for name in ESTIMATORS:
        overlay = np.asarray(Image.open(out / f"image0_{name}.png"))
        assert overlay.shape == (*size, 3)
    for figure in ("overlays.png", "eigenfunctions.png", "per_class_iou.png"):
        assert (out / figure).stat().st_size > 1000
    assert (out / "results.md").read_text().startswith("| method |")


def test_run_demo_without_output_folder_returns_rows():
    config = DemoConfig(n_train=2, n_test=1, image_size=32, methods=("kmeans",),
                        n_clusters=4)
    result = run_demo(None, config=config, verbose=False)
    assert [r["method"] for r in result["rows"]] == ["kmeans"] and result["files"] == []


def test_bad_demo_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown estimator 'spectral'"):
        make_estimator("spectral", 4)
    with pytest.raises(ValueError, match="unknown method"):
        run_demo(None, config=DemoConfig(methods=("kmeans", "dbscan")), verbose=False)
    with pytest.raises(ValueError, match=r"a sequence of names, e.g. \('kmeans',\)"):
        run_demo(None, config=DemoConfig(methods="kmeans"), verbose=False)
    with pytest.raises(ValueError, match="unknown kernel 'rbf'"):
        demo_kernel(kind="rbf")


def test_format_table_aligns_columns_and_speaks_markdown():
    rows = [{"method": "eigsh", "mean_iou": 0.5, "pixel_accuracy": 0.75, "fit_time": 1.25,
             "predict_time": 0.5}]
    text = format_table(rows)
    assert text.splitlines()[1].split() == ["eigsh", "50.0", "75.0", "1.2", "0.50"]
    assert format_table(rows, markdown=True).splitlines()[2] == (
        "| eigsh | 50.0 | 75.0 | 1.2 | 0.50 |")


def test_default_demo_discrete_beats_kmeans_and_tracks_eigsh():
    # The full default demo (seed 0), every estimator with its own defaults. Issue 10's
    # bars: neural >= 0.97 x eigsh and discrete >= 0.95 x eigsh on the same kernel; and the
    # margins this test has always kept: discrete >= eigsh - 4 and >= k-means + 5 points.
    rows = run_demo(None, config=DemoConfig(), verbose=False)["rows"]
    miou = {row["method"]: 100 * row["mean_iou"] for row in rows}
    assert miou["neural"] >= 0.97 * miou["eigsh"], miou
    assert miou["discrete"] >= 0.95 * miou["eigsh"], miou
    assert miou["discrete"] >= miou["eigsh"] - 4, miou
    assert miou["discrete"] >= miou["kmeans"] + 5, miou


def test_results_csv_writes_absent_classes_as_nan_not_zero(tmp_path):
    """np.nan_to_num wrote an absent class as IoU 0.0000 beside a mean that left it out."""
    import csv

    from spectralnet_seg.demo import _write_tables

    rows = [{"method": "eigsh", "mean_iou": 0.5, "pixel_accuracy": 0.75, "fit_time": 1.0,
             "predict_time": 0.5, "per_class_iou": np.array([0.5, np.nan, 0.5])}]
    _write_tables(tmp_path, rows, ["a", "b", "c"])
    with open(tmp_path / "results.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    assert (row["iou_a"], row["iou_b"], row["iou_c"]) == ("0.5000", "nan", "0.5000")


def test_a_smaller_rerun_leaves_no_stale_pictures_of_the_earlier_run(tmp_path):
    # The same folder, first with 3 test images shown, then with 1: image1_* and image2_*
    # of the first run used to stay beside the second run's results.
    config = dict(n_train=2, image_size=32, methods=("kmeans",), n_clusters=4)
    run_demo(tmp_path, config=DemoConfig(n_test=3, **config), verbose=False)
    assert (tmp_path / "image2_kmeans.png").exists()
    (tmp_path / "image9_notes.txt").write_text("the user's")  # not a demo picture: kept
    # The user's own pictures of a similar name were deleted too (image\d+_\w+.png).
    (tmp_path / "image1_holiday.png").write_bytes(b"the user's")
    result = run_demo(tmp_path, config=DemoConfig(n_test=1, **config), verbose=False)
    pictures = sorted(p.name for p in tmp_path.glob("image*.png"))
    assert pictures == ["image0_ground_truth.png", "image0_kmeans.png", "image1_holiday.png"]
    assert set(pictures) - {"image1_holiday.png"} <= {p.name for p in result["files"]}
    assert (tmp_path / "image9_notes.txt").exists()


def test_make_estimator_refuses_neural_params_it_would_overwrite():
    """neural_params={"device": "cpu"} gave device "auto", silently (also random_state,
    kernel, verbose); the default kernel is the default DemoConfig's, as in run_demo."""
    for key, value in [("device", "cpu"), ("random_state", 5), ("kernel", "knn")]:
        with pytest.raises(ValueError, match=f"neural_params sets \\['{key}'\\]"):
            make_estimator("neural", 3, neural_params={key: value})
    assert make_estimator("neural", 3, neural_params={"max_iter": 7}).max_iter == 7
    assert repr(make_estimator("eigsh", 3).kernel) == repr(DemoConfig().build_kernel())
    assert repr(make_estimator("eigsh", 3).kernel) != repr(demo_kernel())  # what it was
