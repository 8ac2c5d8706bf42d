"""Smoke tests of the benchmark scripts (tiny sizes) and of their pure helpers."""

from __future__ import annotations

import csv
import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

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
                           "neural", "--max-iter", "5", "--n-test", "100", "--repeats", "1",
                           "--hidden", "16", "--isolate", "no", "--out", str(tmp_path / "o"),
                           "--docs-dir", str(docs)])
    md = _check_outputs(tmp_path / "o", "bench_scaling")
    columns, rows = _csv(tmp_path / "o" / "bench_scaling.csv")
    assert columns == scaling.COLUMNS
    assert [(r["method"], int(r["n"])) for r in rows] == [
        (m, n) for m in ("eigsh-flat", "sklearn", "neural") for n in (300, 600)]
    by_method = {(r["method"], r["n"]): r for r in result["rows"]}
    eigsh = by_method["eigsh-flat", 600]
    assert eigsh["status"] == "ok" and eigsh["nmi"] > 0.8 and eigsh["fit_s"] > 0
    assert eigsh["predict_pts_per_s"] > 0 and eigsh["peak_rss_mb"] > 0
    assert by_method["sklearn", 600]["predict_pts_per_s"] is None  # no out-of-sample predict
    assert "overtake" in md or "faster" in md  # the crossover statement
    assert (docs / "bench_scaling" / "bench_scaling.md").read_text() == md


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
    result = quality.main(["--quick", "--datasets", "moons", "mosaics", "--methods", "eigsh",
                           "neural", "sklearn-spectral", "kmeans", "--n-points", "200",
                           "--max-iter", "5", "--hidden", "16", "--mosaics", "2", "1", "64",
                           "--out", str(tmp_path)])
    _check_outputs(tmp_path, "bench_quality")
    columns, rows = _csv(tmp_path / "bench_quality.csv")
    assert columns == quality.COLUMNS and len(rows) == 8
    by_key = {(r["dataset"], r["method"]): r for r in result["rows"]}
    assert by_key["moons", "eigsh"]["ari"] > 0.95  # spectral clustering solves moons
    assert by_key["moons", "kmeans"]["ari"] < 0.8  # k-means does not
    assert by_key["mosaics", "sklearn-spectral"]["status"].startswith("n/a")
    assert 0 <= by_key["mosaics", "eigsh"]["miou"] <= 1


def test_bench_eigenfunctions_quick(bench, tmp_path):
    eigen = bench("bench_eigenfunctions")
    result = eigen.main(["--quick", "--steps", "3", "6", "--batch-sizes", "64", "--hidden",
                         "16", "--out", str(tmp_path)])
    _check_outputs(tmp_path, "bench_eigenfunctions")
    columns, rows = _csv(tmp_path / "bench_eigenfunctions.csv")
    assert columns == eigen.COLUMNS and [int(r["steps"]) for r in rows] == [3, 6]
    for row in result["rows"]:
        assert row["status"] == "ok"
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
    assert "Issue 10's bars in this run" in md and "moons: neural ARI" in md


def test_mosaic_tokens_carry_the_texture_under_their_centre(bench):
    defaults = bench("bench_defaults")
    X, y = defaults.load("mosaics")
    assert X.shape == (8 * 12 * 12, X.shape[1]) and y.shape == (8 * 12 * 12,)
    from spectralnet_seg.datasets import TextureMosaics

    first = np.asarray(TextureMosaics(8, image_size=96, seed=0).masks()[0])
    assert y[0] == first[4, 4] and y[13] == first[12, 12]  # token (1, 1): pixel (12, 12)
