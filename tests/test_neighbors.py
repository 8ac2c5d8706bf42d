"""Tests of spectralnet_seg.neighbors: exact and approximate faiss search, batching, errors."""

from __future__ import annotations

import os

import faiss
import numpy as np
import pytest
import scipy.sparse as sp
from _reference import neighbour_recall
from sklearn.neighbors import NearestNeighbors

from spectralnet_seg import neighbors
from spectralnet_seg.neighbors import (
    KNNMemoryError,
    estimate_knn_memory,
    faiss_gpu_count,
    knn_search,
)


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    return rng.normal(size=(400, 16)).astype(np.float32), rng.normal(size=(60, 16))


@pytest.fixture(scope="module")
def clustered():
    """5000 x 32 points in 50 overlapping Gaussian clusters (approximate search is not trivial)."""
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(50, 32))
    X = centers[rng.integers(0, 50, size=5000)] + rng.normal(size=(5000, 32))
    return X.astype(np.float32)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_exact_search_matches_sklearn(small, metric):
    X, Y = small
    reference = NearestNeighbors(n_neighbors=7, metric="euclidean" if metric == "l2" else "cosine")
    reference.fit(X)
    # Y=None: self excluded, as sklearn's kneighbors() without arguments.
    dist, ind = knn_search(X, n_neighbors=7, metric=metric)
    ref_dist, ref_ind = reference.kneighbors()
    np.testing.assert_array_equal(ind, ref_ind)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-4)
    # Separate queries (float64 input is converted).
    dist, ind = knn_search(X, Y, n_neighbors=7, metric=metric)
    ref_dist, ref_ind = reference.kneighbors(Y)
    np.testing.assert_array_equal(ind, ref_ind)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-4)
    assert dist.dtype == np.float32 and ind.dtype == np.int64
    assert np.all(np.diff(dist, axis=1) >= 0)


@pytest.mark.parametrize("index", ["hnsw", "ivf"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_approximateneighbour_recall(clustered, index, metric):
    _, exact = knn_search(clustered, n_neighbors=10, metric=metric)
    # One thread: OpenMP busy-waiting makes threads slower on a shared 2-core CI machine.
    dist, approx = knn_search(clustered, n_neighbors=10, metric=metric, index=index,
                              random_state=0, n_threads=1)
    recall = neighbour_recall(approx, exact)
    assert recall >= 0.9, recall
    assert np.all(approx != np.arange(len(clustered))[:, None])  # self excluded
    assert np.all(np.diff(dist, axis=1) >= 0)


@pytest.mark.parametrize("offset", [0.0, 1e3])  # 1e3: rows centred before faiss
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_ivf_is_reproducible_and_never_returns_missing(clustered, offset, metric, tmp_path):
    # One probe of 100 lists of ~50 points cannot supply 120 candidates for every query:
    # those rows are searched again exactly, so no -1 ever reaches the caller.
    X = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float64,
                                  shape=(2000, clustered.shape[1]))
    X[:] = clustered[:2000] + offset  # a memmap: read (and centred) chunk by chunk
    kwargs = dict(n_neighbors=120, index="ivf", n_lists=40, n_probe=1, random_state=3,
                  metric=metric)
    dist, ind = knn_search(X, **kwargs)
    dist2, ind2 = knn_search(X, **kwargs)
    np.testing.assert_array_equal(ind, ind2)
    np.testing.assert_array_equal(dist, dist2)
    assert ind.min() >= 0 and np.all(np.isfinite(dist))
    assert all(len(set(row)) == 120 for row in ind)
    # The exact fallback's neighbours are right: the nearest one is scikit-learn's.
    reference = NearestNeighbors(n_neighbors=1, metric="euclidean" if metric == "l2"
                                 else "cosine").fit(np.asarray(X))
    assert np.mean(ind[:, 0] == reference.kneighbors()[1][:, 0]) >= 0.99


def test_batching_gives_identical_results(small):
    X, Y = small
    full = knn_search(X, Y, n_neighbors=5)
    batched = knn_search(X, Y, n_neighbors=5, batch_size=25)
    np.testing.assert_array_equal(full[1], batched[1])
    np.testing.assert_allclose(full[0], batched[0], rtol=1e-6, atol=1e-6)
    full = knn_search(X, n_neighbors=5, metric="cosine")
    batched = knn_search(X, n_neighbors=5, metric="cosine", batch_size=64)
    np.testing.assert_array_equal(full[1], batched[1])


def test_exclude_self_with_duplicates():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(50, 4)).astype(np.float32)
    X = np.concatenate([base, base[:10], base[:10]])  # rows 0-9 appear three times
    dist, ind = knn_search(X, n_neighbors=3)
    n = len(X)
    assert np.all(ind != np.arange(n)[:, None])
    assert all(len(set(row)) == 3 for row in ind)
    for i in range(10):
        twins = {i, i + 50, i + 60} - {i}
        for row in (i, i + 50, i + 60):
            assert set(ind[row, :2]) == {i, i + 50, i + 60} - {row}
            np.testing.assert_allclose(dist[row, :2], 0.0, atol=1e-3)
        assert twins <= set(ind[i])
    # Without exclusion the nearest neighbour of every point is at distance ~0.
    dist, ind = knn_search(X, X, n_neighbors=3)
    np.testing.assert_allclose(dist[:, 0], 0.0, atol=1e-3)


def test_memmap_and_torch_input(small, tmp_path):
    import torch

    X, _ = small
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                   shape=X.shape)
    mm[:] = X
    mm.flush()
    reference = knn_search(X, n_neighbors=4)
    for data in (np.load(tmp_path / "x.npy", mmap_mode="r"), torch.from_numpy(X)):
        dist, ind = knn_search(data, n_neighbors=4)
        np.testing.assert_array_equal(ind, reference[1])


def test_cpu_fallback_when_faiss_has_no_gpu(small, monkeypatch):
    """CUDA torch with CPU-only faiss: device='cuda' still searches (on the CPU) correctly."""
    import torch

    import spectralnet_seg._utils as utils
    from spectralnet_seg.neighbors import _backend

    X, _ = small
    assert isinstance(faiss_gpu_count(), int) and faiss_gpu_count() >= 0
    monkeypatch.setattr(utils, "resolve_device", lambda device: torch.device("cuda"))
    monkeypatch.setattr(_backend, "faiss_gpu_count", lambda: 0)  # where _resolve_gpu looks
    assert neighbors._resolve_gpu("cuda", 10) is None
    np.testing.assert_array_equal(knn_search(X, n_neighbors=3, device="cuda")[1],
                                  knn_search(X, n_neighbors=3, device="cpu")[1])


def test_sharded_multi_gpu_index_is_filled_before_it_is_split(small, monkeypatch):
    """faiss shards a flat database over GPUs as IndexShards with successive ids, which takes
    one add() only: adding in 64 MiB chunks failed at the second chunk on 2+ GPUs. Simulated
    with CPU shards cloned the way faiss's GpuCloner splits a filled index."""
    import torch

    import spectralnet_seg._utils as utils
    from spectralnet_seg.neighbors import _backend, _index, _rows

    class Options:  # faiss.GpuMultipleClonerOptions without a GPU build
        shard = False

    def index_cpu_to_all_gpus(index, co=None):
        assert co.shard
        shards = faiss.IndexShards(index.d, True, True)
        kept = [faiss.IndexFlat(index.d, index.metric_type) for _ in range(2)]
        for shard in kept:
            shards.add_shard(shard)
        shards.add(index.reconstruct_n(0, index.ntotal))  # one pass, split over the shards
        shards.referenced_objects = kept
        return shards

    X, _ = small
    reference = knn_search(X, n_neighbors=3, device="cpu")
    monkeypatch.setattr(utils, "resolve_device", lambda device: torch.device("cuda"))
    for module in (_backend, _index):
        monkeypatch.setattr(module, "faiss_gpu_count", lambda: 2)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", Options, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", index_cpu_to_all_gpus, raising=False)
    monkeypatch.setattr(_rows, "_CHUNK_BYTES", 4 * X.shape[1] * 50)  # 50-row add() chunks
    dist, ind = knn_search(X, n_neighbors=3, device="cuda")
    np.testing.assert_array_equal(ind, reference[1])
    monkeypatch.setenv("LOCAL_RANK", "1")  # under torchrun: the rank's GPU, not all of them
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert neighbors._resolve_gpu("cuda", 10) == 1
    assert neighbors._resolve_gpu("cuda", 4096) is None  # beyond the GPU's k-selection


def test_threads_restored_and_verbose(small, capsys):
    X, _ = small
    before = faiss.omp_get_max_threads()
    knn_search(X, n_neighbors=3, verbose=True, batch_size=100)
    knn_search(X, n_neighbors=3, n_threads=2)
    assert faiss.omp_get_max_threads() == before
    assert neighbors._search_work(400, 400, 16, "flat", None, 16, 128, 32) < 2e9  # 1 thread
    assert "GiB estimated" in capsys.readouterr().err


def test_available_cores_honour_a_containers_cpu_quota(tmp_path, monkeypatch):
    # faiss's threads (and the test workers) are capped by the cores this process may use:
    # the affinity mask showed a 2-CPU container on a 64-core host all 64 cores.
    from spectralnet_seg import _utils

    affinity = len(os.sched_getaffinity(0))
    v2, quota, period = tmp_path / "cpu.max", tmp_path / "quota", tmp_path / "period"
    monkeypatch.setattr(_utils, "_CGROUP_CPU_FILES", ((str(v2),), (str(quota), str(period))))
    assert _utils.available_cores() == affinity  # no cgroup files: the affinity mask
    quota.write_text("50000\n")
    period.write_text("100000\n")
    assert _utils.available_cores() == 1  # cgroup v1: half a CPU still gets one thread
    v2.write_text("max 100000\n")
    assert _utils.available_cores() == affinity  # v2 is read first; "max": no quota
    v2.write_text("150000 100000\n")
    assert _utils.available_cores() == min(affinity, 2)  # 1.5 CPUs, rounded up
    v2.write_text("nonsense\n")
    assert _utils.available_cores() == affinity


def test_memory_estimate_and_refusal(small):
    X, _ = small
    flat = estimate_knn_memory(10**6, 10**6, 128, 10)
    assert flat >= 4 * 10**6 * 128 + 12 * 10**6 * 10  # database + outputs at least
    assert estimate_knn_memory(2 * 10**6, 10**6, 128, 10) > flat
    assert estimate_knn_memory(10**6, 10**6, 128, 10, index="hnsw") > flat
    assert estimate_knn_memory(10**6, 10**6, 128, 10, batch_size=1000) < flat
    with pytest.raises(KNNMemoryError, match=r"GiB.*batch_size.*index='ivf'") as info:
        knn_search(X, n_neighbors=3, max_memory_bytes=1000)
    assert isinstance(info.value, MemoryError) and isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="unknown index"):
        estimate_knn_memory(10, 10, 2, 1, index="lsh")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda X, Y: knn_search(X, n_neighbors=400), "n_neighbors=400 is too large"),
        (lambda X, Y: knn_search(X, Y, n_neighbors=401), "n_neighbors=401 is too large"),
        (lambda X, Y: knn_search(X, n_neighbors=0), "'n_neighbors' parameter .* range \\[1, inf\\)"),
        (lambda X, Y: knn_search(X, n_neighbors=2.5), "'n_neighbors' parameter of knn_search must be an int"),
        (lambda X, Y: knn_search(X, n_neighbors=3, metric="manhattan"), "'metric' parameter .* among {.*cosine.*}"),
        (lambda X, Y: knn_search(X, n_neighbors=3, index="lsh"), "'index' parameter"),
        (lambda X, Y: knn_search(X, n_neighbors=3, index="ivf", n_lists=500), "n_lists=500"),
        (lambda X, Y: knn_search(X, n_neighbors=3, batch_size=0), "'batch_size' parameter"),
        (lambda X, Y: knn_search(X, Y, n_neighbors=3, exclude_self=True), "exclude_self=True"),
    ],
)
def test_parameter_errors(small, call, match):
    X, Y = small
    with pytest.raises(ValueError, match=match):
        call(X, Y)


def test_input_errors(small):
    X, Y = small
    with pytest.raises(ValueError, match="8 features but X has 16"):
        knn_search(X, Y[:, :8], n_neighbors=3)
    bad = X.copy()
    bad[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity: first at row 5, column 3"):
        knn_search(bad, n_neighbors=3)
    bad[5, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        knn_search(X, bad, n_neighbors=3)
    with pytest.raises(ValueError, match=r"Y has values beyond float32's range \(\|value\| up "
                                         r"to 1e\+300, above 3.4e\+38; first at row 0, column 0"):
        knn_search(X[:, :2], np.full((5, 2), 1e300), n_neighbors=1)
    with pytest.raises(ValueError, match="empty"):
        knn_search(np.zeros((0, 3)), n_neighbors=1)
    with pytest.raises(ValueError, match="2-D"):
        knn_search(np.arange(5.0), n_neighbors=1)
    with pytest.raises(TypeError, match="sparse"):
        knn_search(sp.csr_matrix(X), n_neighbors=1)
    zero_row = X.copy()
    zero_row[7] = 0
    with pytest.raises(ValueError, match="row 7 is all zeros"):
        knn_search(zero_row, n_neighbors=3, metric="cosine")
    knn_search(zero_row, n_neighbors=3, metric="l2")  # fine for Euclidean distances


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_clusters_far_apart_keep_their_exact_neighbours(index):
    """faiss's float32 |q|^2 + |x|^2 - 2 q.x cancels within-cluster distances of clusters
    far from each other (no common offset for the mean shift to remove): 8 clusters at
    +-300 in 16-D with spread 0.1 kept 3 % of scikit-learn's neighbours with the flat
    index, every distance about 0."""
    rng = np.random.default_rng(3)
    centres = rng.choice([-300.0, 300.0], size=(8, 16))
    X = centres[rng.integers(0, 8, 8000)] + 0.1 * rng.normal(size=(8000, 16))
    dist, ind = knn_search(X, n_neighbors=10, index=index, random_state=0)
    ref_dist, ref_ind = NearestNeighbors(n_neighbors=11).fit(X).kneighbors(X)
    assert neighbour_recall(ind, ref_ind[:, 1:]) >= 0.999
    np.testing.assert_allclose(dist, ref_dist[:, 1:], rtol=1e-3)


def test_bfloat16_tensors_are_searched_as_float32():
    """torch bfloat16 (a common ViT feature dtype) failed in .numpy() ("unsupported
    ScalarType BFloat16")."""
    import torch

    X = torch.randn(300, 8).bfloat16()
    dist, ind = knn_search(X, n_neighbors=5)
    expected = knn_search(X.float().numpy(), n_neighbors=5)
    np.testing.assert_array_equal(ind, expected[1])


def test_duplicates_and_approximate_indexes_are_not_searched_twice(monkeypatch):
    """The cancellation check suspects every query whose k-th distance is 0: 20 copies of
    each point were all searched again over the whole database (flat 9.8 s -> 23.1 s on
    60k rows), and HNSW, which measures distances from differences, too (16 s -> 79 s)."""
    from spectralnet_seg.neighbors import _batches

    calls = []
    exact = _batches._exact_rows
    monkeypatch.setattr(_batches, "_exact_rows",
                        lambda *a, **k: calls.append(k.get("direct")) or exact(*a, **k))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8))[rng.integers(0, 200, 4000)]
    for index in ("flat", "hnsw"):
        dist, _ = knn_search(X, n_neighbors=10, index=index, random_state=0)
        assert (dist == 0).mean() > 0.5  # the duplicates are found
    assert calls == []
