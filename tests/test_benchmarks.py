"""Smoke tests of the benchmark scripts (tiny sizes) and of their pure helpers."""

from __future__ import annotations

import csv
import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    """Import a benchmark script by name (they are scripts, not a package)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(BENCHMARKS))


def _csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), list(reader)


def _check_outputs(out: Path, name: str, csv_suffixes=("",)) -> str:
    assert (out / f"{name}.png").stat().st_size > 1000
    for suffix in csv_suffixes:
        assert (out / f"{name}{suffix}.csv").exists()
    md = (out / f"{name}.md").read_text()
    for field in ("**Machine:**", "**Threads:**", "**Versions:**", "GPU:", "quick mode"):
        assert field in md
    assert f"![{name}]({name}.png)" in md
    return md


def test_bench_scaling_quick(bench, tmp_path):
    scaling = bench("bench_scaling")
    docs = tmp_path / "docs"
    result = scaling.main(["--quick", "--n", "300", "600", "--methods", "eigsh-flat", "sklearn",
                           "neural", "--max-iter", "400", "--n-test", "100", "--repeats", "1",
                           "--hidden", "16", "--threads", "1", "--isolate", "no",
                           "--out", str(tmp_path / "o"),
                           "--docs-dir", str(docs)])
    md = _check_outputs(tmp_path / "o", "bench_scaling")
    columns, rows = _csv(tmp_path / "o" / "bench_scaling.csv")
    assert columns == scaling.COLUMNS
    # The reference (eigsh on the HNSW graph) is measured first and added when not asked for.
    assert [(r["method"], int(r["n"])) for r in rows] == [
        (m, n) for m in ("eigsh-hnsw", "eigsh-flat", "sklearn", "neural") for n in (300, 600)]
    by_method = {(r["method"], r["n"]): r for r in result["rows"]}
    for n in (300, 600):
        ref = by_method["eigsh-hnsw", n]
        assert ref["status"] == "ok" and ref["nmi"] > 0.8 and ref["fit_s"] > 0
        assert ref["quality"] == "reference" and ref["ttq_s"] == ref["fit_s"]
        assert ref["speedup"] == 1.0
        neural = by_method["neural", n]
        assert neural["status"] == "ok" and neural["ref_nmi"] == ref["nmi"]
        curve = neural["curve"]
        # One point per convergence check and one at the end of training, in training order;
        # the end point is the converged fit itself.
        steps = [p["n_iter"] for p in curve]
        assert steps == sorted(set(steps)) and steps[-1] == neural["n_iter"] and len(steps) > 3
        assert curve[-1]["quality"] == neural["nmi"]
        assert all(p["time_s"] == p["train_s"] + p["finish_s"] for p in curve)
        target = ref["nmi"] - 0.01
        if neural["quality"] == "reached":
            hit = next(p for p in curve if p["n_iter"] == neural["ttq_iter"])
            assert neural["ttq_nmi"] == hit["quality"] >= target
            assert all(p["quality"] < target for p in curve[:curve.index(hit)])  # the first
            assert neural["ttq_s"] == hit["time_s"]
            # Within the fit's wall time, which adds the callback's to fit_s.
            assert 0 < neural["ttq_s"] <= neural["fit_s"] + neural["eval_s"]
            assert neural["speedup"] == pytest.approx(ref["fit_s"] / neural["ttq_s"])
        else:
            assert neural["quality"] == "not reached" and neural["best_nmi"] < target
            assert neural.get("ttq_s") is None
    assert by_method["sklearn", 600]["predict_pts_per_s"] is None  # no out-of-sample predict
    # The headline: one line per N at equal quality (or "not reached"), then the crossover.
    for n in (300, 600):
        line = next(s for s in md.splitlines() if s.startswith(f"- N = {n}, neural: "))
        reached = by_method["neural", n]["quality"] == "reached"
        assert ("as fast" in line) == reached and ("**not reached**" in line) != reached
    assert "- neural " in md and "eigsh-hnsw" in md
    assert (docs / "bench_scaling_quick" / "bench_scaling.md").read_text() == md
    curve_columns, curve_rows = _csv(tmp_path / "o" / "bench_scaling_curves.csv")
    assert curve_columns == scaling.CURVE_COLUMNS
    assert len([r for r in curve_rows if r["method"] == "neural"]) == sum(
        len(by_method["neural", n]["curve"]) for n in (300, 600))
    assert (tmp_path / "o" / "bench_scaling_curves.png").is_file()


def test_time_to_quality_rules(bench):
    scaling = bench("bench_scaling")

    def curve(*points):
        return [{"n_iter": i, "time_s": t, "quality": q} for i, t, q in points]

    rows = [
        {"method": "eigsh-hnsw", "n": 10, "status": "ok", "fit_s": 4.0, "nmi": 0.9,
         "curve": curve((None, 4.0, 0.9))},
        {"method": "neural", "n": 10, "status": "ok", "fit_s": 9.0, "nmi": 0.95, "n_iter": 300,
         "curve": curve((100, 1.0, 0.5), (200, 2.0, 0.891), (300, 9.0, 0.95))},
        {"method": "discrete", "n": 10, "status": "ok", "fit_s": 3.0, "nmi": 0.88,
         "n_iter": 200, "curve": curve((100, 1.0, 0.85), (200, 3.0, 0.889))},
        {"method": "neural", "n": 20, "status": "ok", "fit_s": 1.0, "nmi": 0.9,
         "curve": curve((100, 1.0, 0.9))},  # no reference at this N
    ]
    scaling.add_time_to_quality(rows, "eigsh-hnsw", 0.01)
    ref, neural, discrete, alone = rows
    assert ref["quality"] == "reference" and ref["speedup"] == 1.0
    # The first point at or above 0.9 - 0.01, not the best nor the last one.
    assert neural["quality"] == "reached" and neural["ttq_iter"] == 200
    assert neural["ttq_s"] == 2.0 and neural["speedup"] == 2.0
    assert discrete["quality"] == "not reached" and "ttq_s" not in discrete
    assert discrete["best_nmi"] == 0.889
    assert "quality" not in alone
    lines = scaling.headline(rows, ["eigsh-hnsw", "neural", "discrete"], "eigsh-hnsw", 0.01)
    assert "**2.00x** as fast" in lines[0] and "step 200" in lines[0]
    assert "**not reached**" in lines[1] and "0.889" in lines[1]


def test_scaling_data_is_seeded(bench):
    scaling = bench("bench_scaling")
    X, y = scaling.manifold_clusters(50, seed=3)
    assert X.shape == (50, 384) and X.dtype == np.float32 and set(y) <= set(range(10))
    X_again, y_again = scaling.manifold_clusters(50, seed=3)
    np.testing.assert_array_equal(X, X_again)
    np.testing.assert_array_equal(y, y_again)
    assert not np.allclose(X, scaling.manifold_clusters(50, seed=4)[0])


def test_scaling_skip_and_crossover_rules(bench):
    scaling = bench("bench_scaling")
    history = [{"n": 1000, "status": "ok", "fit_s": 1.0, "peak_rss_mb": 100.0},
               {"n": 10000, "status": "ok", "fit_s": 100.0, "peak_rss_mb": 1000.0}]
    # quadratic time growth: 1e4 s predicted at 1e5 points
    assert "est. fit 10000 s" in scaling.skip_reason(history, 100_000, 3600, 1e6)
    assert "est. memory" in scaling.skip_reason(history, 100_000, 1e5, 5000)
    assert scaling.skip_reason(history, 20_000, 3600, 1e6) is None
    failed = [*history, {"n": 20000, "status": "timeout: stopped"}]
    assert "did not finish" in scaling.skip_reason(failed, 40_000, 3600, 1e6)
    skipped = [*history, {"n": 20000, "status": "skipped: est. fit 9999 s"}]
    assert scaling.skip_reason(skipped, 40_000, 3600, 1e6) == "skipped: est. fit 9999 s"
    # one measured size: time assumed to grow at least linearly, unless the floor is lower
    one = history[-1:]
    assert "est. fit 20000 s" in scaling.skip_reason(one, 2_000_000, 3600, 1e9)
    assert scaling.skip_reason(one, 2_000_000, 3600, 1e9, min_time_slope=0.0) is None
    assert scaling.MIN_TIME_SLOPE["neural"] == 0.0

    rows = [{"method": m, "n": n, "status": "ok", "fit_s": t}
            for m, n, t in [("eigsh", 1e3, 1.0), ("eigsh", 1e4, 100.0),
                            ("neural", 1e3, 10.0), ("neural", 1e4, 10.0)]]
    n_cross, note = scaling.crossover(rows, "neural", "eigsh")
    assert 1e3 < n_cross < 1e4 and "10.00x" in note
    assert scaling.crossover(rows, "neural", "missing")[0] is None


def test_scaling_features_file_errors(bench, tmp_path):
    scaling = bench("bench_scaling")
    path = tmp_path / "flat.npy"
    np.save(path, np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match="2-D"):
        scaling.load_data(5, str(path), None, 0)
    np.save(path, np.zeros((10, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="exceeds the 10 rows"):
        scaling.load_data(20, str(path), None, 0)


def test_bench_quality_quick(bench, tmp_path):
    quality = bench("bench_quality")
    result = quality.main(["--quick", "--datasets", "moons", "mosaics", "mosaics-other",
                           "--methods", "eigsh", "neural", "sklearn-spectral", "kmeans",
                           "--n-points", "200", "--max-iter", "5", "--hidden", "16",
                           "--mosaics", "2", "1", "64", "--out", str(tmp_path)])
    _check_outputs(tmp_path, "bench_quality")
    columns, rows = _csv(tmp_path / "bench_quality.csv")
    assert columns == quality.COLUMNS and len(rows) == 13  # 12 + mosaics-other's true labels
    by_key = {(r["dataset"], r["method"]): r for r in result["rows"]}
    assert by_key["moons", "eigsh"]["ari"] > 0.95  # spectral clustering solves moons
    assert by_key["moons", "kmeans"]["ari"] < 0.8  # k-means does not
    assert by_key["mosaics", "sklearn-spectral"]["status"].startswith("n/a")
    assert 0 <= by_key["mosaics", "eigsh"]["miou"] <= 1
    # The other photographs are told apart by their colour statistics: far above chance.
    assert by_key["mosaics-other", "eigsh"]["nmi"] > 0.5
    assert by_key["mosaics-other", quality.TRUTH]["train_ncut"] > 0
    assert "each estimator's default" in (tmp_path / "bench_quality.md").read_text()


def test_bench_quality_cuts_the_graph_eigsh_cuts(bench):
    # train_ncut recomputes the default graph of the training tokens: it must be the graph
    # eigsh fitted on, token for token, and the classes those under the tokens' centres.
    from spectralnet_seg import EigshSpectralClustering
    from spectralnet_seg.features import make_extractor
    from spectralnet_seg.metrics import normalized_cut
    from spectralnet_seg.segmentation import Segmenter

    quality = bench("bench_quality")
    train, _ = quality.mosaic_splits("mosaics-other", {"n_train_images": 2, "n_test_images": 1,
                                                       "image_size": 48})
    segmenter = Segmenter(make_extractor("pixel"),
                          EigshSpectralClustering(3, random_state=0)).fit(train.images())
    graph, classes = quality.default_graph_and_token_classes(segmenter.extractor_, train)
    fitted = segmenter.estimator_
    assert abs(graph - fitted.affinity_matrix_).max() < 1e-12
    assert normalized_cut(graph, fitted.labels_) == pytest.approx(fitted.normalized_cut_)
    grid = segmenter.grid_shape_[0]
    assert classes.shape == (2 * grid * grid,)
    assert classes[grid + 1] == train.masks()[0][8 + 4, 8 + 4]  # token (1, 1): stride 8


@pytest.mark.parametrize("discrete, kmeans, near, above", [
    (0.80, 0.70, "met", "met"), (0.73, 0.70, "not met", "met"), (0.77, 0.78, "met", "not met")])
def test_bench_quality_states_the_mosaic_check_from_its_rows(bench, discrete, kmeans, near,
                                                             above):
    quality = bench("bench_quality")
    rows = [{"dataset": "mosaics-other", "method": m, "status": "ok", "miou": v}
            for m, v in (("eigsh", 0.79), ("discrete", discrete), ("kmeans", kmeans))]
    line = quality.mosaic_check(rows)
    assert f"within 0.05: {near};" in line and line.endswith(f"above: {above}.")
    assert quality.mosaic_check(rows[:2]) is None  # no k-means row, no verdict


def test_bench_eigenfunctions_quick(bench, tmp_path):
    eigen = bench("bench_eigenfunctions")
    result = eigen.main(["--quick", "--steps", "3", "6", "--batch-sizes", "64", "--hidden",
                         "16", "--out", str(tmp_path)])
    _check_outputs(tmp_path, "bench_eigenfunctions")
    columns, rows = _csv(tmp_path / "bench_eigenfunctions.csv")
    assert columns == eigen.COLUMNS and [int(r["steps"]) for r in rows] == [3, 6]
    for row in result["rows"]:
        assert row["status"] == "ok" and 1 <= row["n_iter"] <= row["steps"]
        assert 0 <= row["min_cosine"] <= row["mean_cosine"] <= 1
    assert result["reference_eigenvalues"][0] == pytest.approx(1.0, abs=1e-6)


def test_bench_knn_quick(bench, tmp_path):
    knn = bench("bench_knn")
    result = knn.main(["--quick", "--n", "3000", "--n-queries", "50", "--dim", "32",
                       "--gemm-size", "128", "--repeats", "1", "--threads", "1",
                       "--out", str(tmp_path)])
    _check_outputs(tmp_path, "bench_knn", csv_suffixes=("_throughput", "_recall"))
    operations = [r["operation"] for r in result["throughput"]]
    assert operations == ["numpy sgemm (A @ B)", "torch.mm float32",
                          "faiss IndexFlatL2.search", "spectralnet_seg knn_search(flat)"]
    assert all(r["gflops"] > 0 for r in result["throughput"])
    recalls = [r["recall_at_k"] for r in result["recall"] if r["index"] == "HNSW32"]
    assert len(recalls) == len(knn.HNSW_EF) and all(0 < r <= 1 for r in recalls)


def test_recall_helper(bench):
    knn = bench("bench_knn")
    truth = np.array([[0, 1], [2, 3]])
    assert knn.recall(np.array([[1, 0], [2, 9]]), truth) == pytest.approx(0.75)


def _peak_of_block(mib: int) -> tuple[bool, float, float]:
    """PeakRSS of allocating (and touching) ``mib`` MiB; run in a subprocess."""
    sys.path.insert(0, str(BENCHMARKS))
    import _common as common

    with common.PeakRSS() as mem:
        block = np.ones(mib * 2**20 // 8)
    del block
    return mem.exact, mem.peak_mb, mem.delta_mb


def test_common_isolation_and_errors(bench, tmp_path):
    common = bench("_common")
    status, value = common.run_isolated(common.available_memory_bytes, {}, timeout=120)
    assert status == "ok" and value > 0
    status, value = common.run_isolated(os.abort, {}, timeout=120)  # dies without a result
    assert status == "error" and "killed by signal 6" in value
    status, value = common.run_isolated(np.load, {"file": str(tmp_path / "missing.npy")},
                                        timeout=None, isolate=False)
    assert status == "error" and "FileNotFoundError" in value
    # In a fresh process, so that no freed memory of earlier tests is reused.
    status, (exact, peak_mb, delta_mb) = common.run_isolated(_peak_of_block, {"mib": 64},
                                                             timeout=120)
    assert status == "ok" and peak_mb >= delta_mb
    assert 60 <= delta_mb < 80 if exact else delta_mb >= 0
    args = common.base_parser("x", "test").parse_args(["--repeats", "0"])
    with pytest.raises(SystemExit, match="at least 1"):
        common.repeats(args)


def _three_torch_threads() -> int:
    torch.set_num_threads(3)
    return torch.get_num_threads()


def test_in_process_measurements_leave_the_callers_thread_counts(bench, monkeypatch,
                                                                 tmp_path):
    # Quick runs measure in the test's process: bench_peers and bench_scaling set torch to
    # every core and kept it, so each later test on that pytest-xdist worker ran 2 threads
    # beside the other worker's (4x slower on 2 cores).
    import faiss

    from spectralnet_seg import _utils

    common = bench("_common")
    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    assert common.run_isolated(_three_torch_threads, {}, timeout=None,
                               isolate=False) == ("ok", 3)
    with common.cpu_threads(3):
        assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == (3, 3)
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert (common.default_threads(None), common.default_threads(4)) == (1, 4)
    monkeypatch.delenv("OMP_NUM_THREADS")
    quota = tmp_path / "cpu.max"  # cgroup v2: no quota, then one CPU's worth
    monkeypatch.setattr(_utils, "_CGROUP_CPU_FILES", ((str(quota),),))
    quota.write_text("max 100000\n")
    assert common.default_threads(None) == len(os.sched_getaffinity(0))
    quota.write_text("100000 100000\n")
    assert common.default_threads(None) == 1


def test_coins_graph_is_scikit_learns_pixel_graph(bench):
    coins = bench("bench_coins")
    data = coins.coins_data(0.1)
    h, w = data.image.shape
    W = data.graph
    assert (h, w) == (30, 38) and W.shape == (h * w, h * w)
    assert W.nnz == 2 * (h * (w - 1) + w * (h - 1))  # 4-neighbour grid, no self-loops
    assert abs(W - W.T).max() == 0 and W.diagonal().max() == 0
    assert 1e-6 <= W.data.min() and W.data.max() <= 1 + 1e-6  # exp(-beta grad / std) + eps
    assert data.features.shape == (h * w, 3)


def test_bench_coins_quick(bench, tmp_path, monkeypatch):
    from sklearn.cluster import KMeans

    from spectralnet_seg.metrics import normalized_cut

    coins = bench("bench_coins")
    # The hook for more rows (the neural estimators will take fit(features, graph=W)).
    monkeypatch.setitem(coins.METHODS, "kmeans features", lambda data, k, seed: KMeans(
        k, n_init=1, random_state=seed).fit_predict(data.features))
    methods = ["sklearn arpack", "eigsh arpack", "eigsh arpack row", "kmeans features"]
    result = coins.main(["--quick", "--scales", "0.1", "--methods", *methods, "--repeats", "1",
                         "--isolate", "no", "--out", str(tmp_path)])
    md = _check_outputs(tmp_path, "bench_coins")
    columns, rows = _csv(tmp_path / "bench_coins.csv")
    assert columns == coins.COLUMNS and [r["method"] for r in rows] == methods
    by = {r["method"]: r for r in result["rows"]}
    assert all(r["status"] == "ok" and r["fit_s"] > 0 for r in result["rows"])
    # The same algorithm as scikit-learn's gives a partition as good as scikit-learn's;
    # clustering the row-normalised eigenvectors cuts this pixel graph worse.
    assert by["eigsh arpack"]["ncut_vs_sklearn"] <= 1.1
    assert by["eigsh arpack row"]["ncut"] > 2 * by["eigsh arpack"]["ncut"]
    assert "ncut_vs_sklearn" not in by["kmeans features"]  # no scikit-learn twin
    # The Ncut column is the metric on the graph, recomputed here from the labels.
    data = coins.coins_data(0.1)
    labels = coins.METHODS["sklearn arpack"](data, 25, 0)
    assert by["sklearn arpack"]["ncut"] == pytest.approx(normalized_cut(data.graph, labels))
    assert "normalised cut" in md and "embedding_norm='degree'" in md


@pytest.mark.filterwarnings("ignore:NeuralEigenClustering stopped at max_iter")
def test_coins_neural_rows_fit_the_features_on_the_pixel_graph(bench):
    coins = bench("bench_coins")
    data = coins.coins_data(0.05)
    labels = coins.WARMUPS["neural"](data, 3, 0)  # 10 steps: the wiring, not the quality
    assert labels.shape == (data.graph.shape[0],) and labels.max() < 3
    assert "discrete" in coins.METHODS and "discrete" not in coins.quick_methods()


def test_gallery_quick(bench, tmp_path):
    from spectralnet_seg.metrics import normalized_cut
    from spectralnet_seg.segmentation import segment_image

    gallery = bench("gallery")
    publish = bench("publish")
    result = gallery.main(["--quick", "--images", "coffee", "coins", "--out", str(tmp_path)])
    for name in ("coffee", "coins"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    columns, rows = _csv(tmp_path / "gallery.csv")
    assert columns == gallery.COLUMNS
    assert [(r["image"], r["method"]) for r in rows] == [
        (i, m) for i in ("coffee", "coins") for m in gallery.METHODS]
    assert all(1 <= int(r["regions"]) <= int(r["n_clusters"]) for r in rows)
    # The Ncut is the metric of segment_image's label map on the image's pixel graph.
    image = gallery.load("coffee", gallery.QUICK_SIZE)
    assert max(image.shape[:2]) == gallery.QUICK_SIZE
    labels = segment_image(image, gallery.IMAGES["coffee"], method="eigsh", random_state=0)
    by = {(r["image"], r["method"]): r for r in result["rows"]}
    assert by["coffee", "eigsh"]["ncut"] == pytest.approx(
        normalized_cut(gallery.pixel_graph(image), labels.ravel()))
    # The docs page's block is rendered from these files: every picture, every number.
    section = publish.gallery_section(tmp_path)
    assert "![coffee" in section and "(gallery/coins.png)" in section
    for row in result["rows"]:
        assert f"| {row['method']} | {row['time_s']:.1f} | {row['ncut']:.3f} |" in section


def test_pixel_graph_is_a_weighted_four_neighbour_grid(bench):
    gallery = bench("gallery")
    image = np.zeros((4, 5, 3), np.uint8)
    image[:, 3:] = 255  # an edge between columns 2 and 3
    W = gallery.pixel_graph(image)
    assert W.shape == (20, 20) and W.nnz == 2 * (4 * 4 + 5 * 3)
    assert abs(W - W.T).max() == 0 and W.diagonal().max() == 0
    assert W[2, 3] < 1e-3 and W[0, 1] == pytest.approx(1 + 1e-6)


def test_bench_defaults_quick(bench, tmp_path):
    defaults = bench("bench_defaults")
    result = defaults.main(["--quick", "--methods", "eigsh", "neural", "discrete", "sklearn",
                            "kmeans", "--out", str(tmp_path)])
    md = _check_outputs(tmp_path, "bench_defaults")
    columns, rows = _csv(tmp_path / "bench_defaults.csv")
    assert columns == defaults.COLUMNS
    assert [(r["data"], r["method"]) for r in rows] == [
        (d, m) for d in ("moons", "iris") for m in ("eigsh", "neural", "discrete", "sklearn",
                                                     "kmeans")]
    # The table's NMI is scikit-learn's score of the labels: recompute eigsh's on moons.
    from sklearn.metrics import normalized_mutual_info_score

    from spectralnet_seg import EigshSpectralClustering
    X, y = defaults.load("moons", quick=True)
    reference = normalized_mutual_info_score(
        y, EigshSpectralClustering(2, random_state=0).fit(X).labels_)
    by = {(r["data"], r["method"]): r for r in result["rows"]}
    assert by["moons", "eigsh"]["nmi"] == pytest.approx(reference)
    assert by["moons", "neural"]["nmi_vs_eigsh"] == pytest.approx(
        by["moons", "neural"]["nmi"] / by["moons", "eigsh"]["nmi"])
    assert all(r["fit_s_max"] >= r["fit_s"] > 0 for r in result["rows"])
    assert "Issue 10's bars in this run" in md and "moons: neural ARI" in md


def test_mosaic_tokens_carry_the_texture_under_their_centre(bench):
    defaults = bench("bench_defaults")
    X, y = defaults.load("mosaics")
    assert X.shape == (8 * 12 * 12, X.shape[1]) and y.shape == (8 * 12 * 12,)
    from spectralnet_seg.datasets import TextureMosaics

    first = np.asarray(TextureMosaics(8, image_size=96, seed=0).masks()[0])
    assert y[0] == first[4, 4] and y[13] == first[12, 12]  # token (1, 1): pixel (12, 12)


def test_gpu_check_cpu_quick(bench, tmp_path):
    gpu_check = bench("gpu_check")
    docs = tmp_path / "docs"
    result = gpu_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path / "o"),
                             "--docs-dir", str(docs)])
    md = _check_outputs(tmp_path / "o", "gpu_check", csv_suffixes=(
        "", "_device", "_knn", "_fit", "_loader", "_distributed", "_features", "_persistence"))
    assert (docs / "gpu_check_quick" / "gpu_check.md").read_text() == md
    assert "torch 1, faiss 1" in md  # --quick runs one CPU thread unless told otherwise
    columns, rows = _csv(tmp_path / "o" / "gpu_check.csv")
    assert columns == gpu_check.SUMMARY_COLUMNS
    assert {r["check"] for r in rows} == {"device", "knn", "fit", "loader", "distributed",
                                          "features", "persistence"}
    assert all(r["status"] == "ok" and r["device"] == "cpu" for r in rows), rows
    assert result["failed"] == []
    tables = result["tables"]
    # CPU against CPU: the exact searches agree to the last bit.
    knn = {r["case"]: r for r in tables["knn"]}
    for case in ("flat l2 k=10", "flat cosine k=10"):
        assert knn[case]["recall_at_k"] == 1.0 and knn[case]["identical_ids"] == 1.0
        assert knn[case]["max_dist_diff"] == 0.0 and knn[case]["faiss_index"] == "IndexFlat"
    assert knn["ivf l2 k=10"]["faiss_index"] == "IndexIVFFlat"
    assert 0 < knn["ivf l2 k=10"]["recall_at_k"] == knn["ivf l2 k=10"]["cpu_index_recall"]
    # Seeded fits repeat exactly on the CPU, and find the clusters of the manifold data.
    fits = {r["case"]: r for r in tables["fit"]}
    assert set(fits) == {"neural digits", "neural-minibatch digits", "discrete digits",
                         "neural manifold", "discrete manifold"}
    assert all(r["nmi_device_vs_cpu"] == pytest.approx(1.0) for r in fits.values())
    assert fits["neural manifold"]["nmi_truth_cpu"] > 0.7
    for row in tables["loader"]:  # no CUDA: nothing pinned, and said so
        assert row["pin_memory"] is False and row["identical"] and row["rows_checked"] > 0
    (distributed,) = tables["distributed"]
    assert distributed["backend"] == "gloo" and distributed["world_size"] == 1
    assert distributed["identical_labels"] and distributed["all_reduce_ok"]
    assert distributed["ddp_grad_max_diff"] == 0.0
    assert tables["features"][0]["max_abs_diff"] == 0.0
    # Saved and loaded in a process without a GPU: the same labels and features, exactly.
    (saved,) = tables["persistence"]
    assert saved["labels_agree"] == 1.0 and saved["relative_diff"] == 0.0
    assert "14 of 14 checks ok" in md and "This is the CPU run" in md


def test_gpu_check_records_failures_and_skips(bench):
    gpu_check = bench("_gpu_checks")

    def broken():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    row = gpu_check.run_check("fit", "neural digits", "cuda", broken)
    assert row["status"] == "failed" and "RuntimeError: CUDA error" in row["reason"]
    assert row["seconds"] >= 0

    def out_of_bounds():
        return gpu_check._require({"recall_at_k": 0.5}, ["recall 0.5 < 0.99"])

    row = gpu_check.run_check("knn", "flat l2", "cuda", out_of_bounds)
    assert (row["status"], row["reason"], row["recall_at_k"]) == ("failed", "recall 0.5 < 0.99",
                                                                  0.5)

    def no_gpu():
        raise gpu_check.Skipped("faiss has no GPU support")

    row = gpu_check.run_check("knn", "flat l2", "cuda", no_gpu)
    assert (row["status"], row["reason"]) == ("skipped", "faiss has no GPU support")

def test_bench_peers_quick(bench, tmp_path):
    peers = bench("bench_peers")
    methods = ["eigsh", "sklearn arpack", "sklearn-fn arpack", "sklearn-fn amg", "spectralnet",
               "cuml"]
    docs = tmp_path / "docs"
    result = peers.main(["--quick", "--methods", *methods, "--out", str(tmp_path / "o"),
                         "--docs-dir", str(docs)])
    md = _check_outputs(tmp_path / "o", "bench_peers")
    columns, rows = _csv(tmp_path / "o" / "bench_peers.csv")
    assert columns == peers.COLUMNS
    assert [(r["data"], r["method"]) for r in rows] == [("digits-500", m) for m in methods]
    by = {r["method"]: r for r in result["rows"]}
    # Every row says whether it ran; a peer that cannot run says why.
    for method, row in by.items():
        assert row["status"] == "ok" or row["status"].startswith(("not installed", "no GPU"))
        assert (row["status"] == "ok") == (peers.unavailable(method) is None)
    assert by["eigsh"]["status"] == by["sklearn-fn arpack"]["status"] == "ok"
    assert by["cuml"]["status"] != "ok" or peers.unavailable("cuml") is None

    # The scores are the metrics of an independent fit: eigsh with its defaults, seed 0.
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from spectralnet_seg import EigshSpectralClustering
    from spectralnet_seg.kernels import KNNKernel
    from spectralnet_seg.metrics import normalized_cut

    X, y = peers.load("digits-500")
    graph = KNNKernel().graph(X)
    labels = EigshSpectralClustering(10, random_state=0).fit(X).labels_
    assert by["eigsh"]["nmi"] == pytest.approx(normalized_mutual_info_score(y, labels))
    assert by["eigsh"]["ncut"] == pytest.approx(normalized_cut(graph, labels))
    # The Ncut column is the normalised cut of each row's labels on our graph.
    for (_, method), row_labels in result["labels"].items():
        assert by[method]["ncut"] == pytest.approx(normalized_cut(graph, row_labels))
    # scikit-learn's solver on our graph clusters the same vectors as eigsh (degree-scaled
    # eigenvectors, k-means): the same partition, up to label names.
    same = adjusted_rand_score(result["labels"]["digits-500", "eigsh"],
                               result["labels"]["digits-500", "sklearn-fn arpack"])
    assert same >= 0.99
    assert abs(by["eigsh"]["nmi"] - by["sklearn-fn arpack"]["nmi"]) <= 0.01
    # the solver-alone row reports the solver's time and the end-to-end time apart
    assert 0 < by["sklearn-fn arpack"]["solver_s"] <= by["sklearn-fn arpack"]["fit_s"]
    assert "Where a peer is faster or better" in md
    assert all(line.startswith("- digits-500: ") for line in result["wins"])
    assert (docs / "bench_peers_quick" / "bench_peers.md").read_text() == md


def test_peers_time_limit_stops_a_fit(bench, tmp_path):
    peers = bench("bench_peers")
    result = peers.main(["--quick", "--methods", "eigsh", "--isolate", "yes", "--time-limit",
                         "0.05", "--out", str(tmp_path)])
    (row,) = result["rows"]
    assert row["status"].startswith("timeout") and "nmi" not in row


def test_peers_wins_lines(bench):
    peers = bench("bench_peers")
    ok = {"status": "ok", "data": "d"}
    rows = [{**ok, "method": "eigsh", "nmi": 0.90, "ncut": 0.50, "fit_s": 10.0},
            {**ok, "method": "neural", "nmi": 0.80, "ncut": 0.60, "fit_s": 1.0},
            {**ok, "method": "sklearn arpack", "nmi": 0.905, "ncut": 0.50, "fit_s": 2.0},
            {"data": "d", "method": "cuml", "status": "no GPU"}]
    (line,) = peers.peer_wins(rows)
    # faster than eigsh; better NMI and Ncut than neural, not faster than it
    assert line == ("- d: **sklearn arpack** beats eigsh (fit 2 s vs 10 s); neural "
                    "(NMI 0.905 vs 0.800, Ncut 0.500 vs 0.600).")
    rows[2].update(fit_s=20.0, nmi=0.85, ncut=0.55)
    assert peers.peer_wins(rows[:1] + rows[2:]) == [
        "- d: no peer is faster or better than any of eigsh."]


def test_peers_update_replaces_only_rerun_rows(bench, tmp_path):
    peers = bench("bench_peers")
    old = [{"data": "d", "method": m, "status": "ok", "nmi": 0.5} for m in ("a", "b")]
    new = [{"data": "d", "method": "b", "status": "timeout: stopped after 9 s"},
           {"data": "e", "method": "a", "status": "ok", "nmi": 0.7}]
    assert peers.merge_rows(old, new) == [old[0], new[0], new[1]]
    path = tmp_path / "t.csv"
    import _common

    _common.write_csv(path, old, peers.COLUMNS)
    assert peers.read_rows(path) == old  # numbers come back as numbers, empty cells dropped
