"""Bad input that used to crash natively, fail deep inside a library or give a silently wrong
answer: extreme scales, kNN ids of -1, string data, index options that do nothing."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from _forked import run_in_child
from _reference import neighbour_recall
from numpy.testing import assert_array_equal
from sklearn.datasets import make_blobs, make_moons
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning, UndefinedMetricWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.neighbors import NearestNeighbors, kneighbors_graph

from spectralnet_seg.cluster import (
    DiscreteNeuralEigenClustering,
    EigshSpectralClustering,
    NeuralEigenClustering,
)
from spectralnet_seg.evaluation import evaluate
from spectralnet_seg.features import ImageMemoryError, PixelExtractor, estimate_pixel_memory
from spectralnet_seg.kernels import CosineKernel, KNNKernel, RBFKernel, make_kernel
from spectralnet_seg.kernels.knn import _neighbor_csr
from spectralnet_seg.metrics import mean_iou, pixel_accuracy, segmentation_scores
from spectralnet_seg.neighbors import knn_search


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(300, centers=3, n_features=5, random_state=0)
    return X.astype(np.float32), y


# ----------------------------------------------------------------------------- scale
def _eigsh_labels_at_scales(X):
    out = {}
    for scale in (1.0, 1e19, 1e30):
        est = EigshSpectralClustering(3, kernel=make_kernel("knn", metric="l2"),
                                      random_state=0).fit(X * np.float32(scale))
        out[scale] = est.labels_
    try:  # distances beyond float32 itself: a clear error, not a crash
        wide = np.random.default_rng(0).normal(size=(50, 400)).astype(np.float32)
        make_kernel("knn", metric="l2").graph(wide * np.float32(1e37))
    except ValueError as exc:
        out["error"] = str(exc)
    return out


@pytest.mark.filterwarnings("ignore::spectralnet_seg.cluster.DisconnectedGraphWarning")
def test_huge_values_give_the_unscaled_clustering_not_a_native_crash(blobs):
    """x 1e19 made faiss return id -1, which scipy wrote out of bounds ("double free or
    corruption", exit 134): run in a child process so that a regression cannot take pytest
    down with it."""
    exit_code, report = run_in_child(_eigsh_labels_at_scales, blobs[0])
    assert exit_code == 0 and report is not None, f"the child died (exit code {exit_code})"
    assert report[0] == "ok", report[-1]
    out = report[1]
    for scale in (1.0, 1e19, 1e30):  # the same partition (labels may be permuted)
        assert adjusted_rand_score(blobs[1], out[scale]) == 1.0
    assert "too large for float32 distances" in out["error"]
    assert "divide X by a constant" in out["error"]


def test_values_beyond_float32_are_named_as_such():
    """float64 values above float32's range became inf in the conversion: the fit said "X
    contains NaN or infinity" about data holding none, after an "overflow encountered in
    cast" RuntimeWarning and a rounding warning of "inf %"."""
    X = np.random.default_rng(0).normal(size=(60, 4)) * 1e39
    for fit in (lambda: KNNKernel().graph(X),
                lambda: EigshSpectralClustering(2, random_state=0).fit(X),
                lambda: knn_search(X, n_neighbors=5),  # faiss's own pass, same words
                lambda: NeuralEigenClustering(2, max_iter=2, random_state=0).fit(X)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match=r"X has values beyond float32's range \(\|"
                                                 rf"value\| up to {re.escape(f'{np.abs(X).max():.3g}')},"):
                fit()
    with pytest.raises(ValueError, match="contains NaN or infinity"):  # a real inf
        KNNKernel().graph(np.where(np.eye(60, 4) > 0, np.inf, X / 1e39))
    if np.isfinite(np.longdouble("1e400")):  # x87 long double: beyond float64 as well
        wide = (X / 1e39).astype(np.longdouble)
        wide[3, 2] = np.longdouble("1e400")
        with pytest.raises(ValueError, match=r"up to 1e\+400, .*first at row 3, column 2"):
            knn_search(wide, n_neighbors=5)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_precomputed_affinities_at_extreme_scales_cluster_as_unscaled():
    """x 1e-310 (subnormal) fell under the degree floor and put every point in cluster 0;
    x 1e308 overflowed in W + W^T. The power-of-two rescaling is exact, so the embedding is
    the unscaled one up to the rounding of W * scale itself (subnormals keep ~40 bits), and
    predict rescales the cross-affinities the same way."""
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 20)
    W = (truth[:, None] == truth[None, :]) * rng.uniform(0.5, 1.0, (40, 40))
    W = (W + W.T) / 2
    W[0, 39] = W[39, 0] = 0.01  # one weak link: a connected graph
    reference = EigshSpectralClustering(2, kernel="precomputed", random_state=0).fit(W)
    assert reference.kernel_.scale_exponent_ == 0
    for scale in (1e-310, 1e-200, 1e308):
        est = EigshSpectralClustering(2, kernel="precomputed", random_state=0).fit(W * scale)
        assert est.kernel_.scale_exponent_ != 0
        assert adjusted_rand_score(truth, est.labels_) == 1.0
        np.testing.assert_allclose(est.embedding_, reference.embedding_, rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(est.predict(W[::7] * scale), reference.predict(W[::7]))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("cls", [NeuralEigenClustering, DiscreteNeuralEigenClustering])
def test_neural_refuses_float64_values_beyond_float32(blobs, cls):
    """The network computes in float32: 1e39 became inf, then NaN outputs in transform and
    label 0 for every row in predict, without an error."""
    X = blobs[0].astype(np.float64)
    huge = np.full((2, X.shape[1]), 1e39)
    match = r"X has values beyond float32's range .*the precision of the network"
    with pytest.raises(ValueError, match=match):
        cls(3, sampler="minibatch", max_iter=2, random_state=0).fit(X * 1e39)
    est = cls(3, max_iter=30, random_state=0).fit(X)
    for method in ("transform", "predict"):
        with pytest.raises(ValueError, match=r"up to 1e\+39, above 3.4e\+38; first at row 0, "
                                             "column 0"):
            getattr(est, method)(huge)
    assert np.isfinite(est.transform(X * 1e-3)).all()  # small float64 values stay accepted


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("scale", [1e-40, 1e-30, 1e19, 1e30])
def test_knn_search_is_scale_invariant(blobs, metric, scale):
    X = blobs[0]
    dist, ind = knn_search(X, n_neighbors=6, metric=metric)
    dist_s, ind_s = knn_search(X * np.float32(scale), n_neighbors=6, metric=metric)
    assert ind_s.min() >= 0
    np.testing.assert_array_equal(ind_s, ind)
    expected = dist * scale if metric == "l2" else dist
    np.testing.assert_allclose(dist_s, expected, rtol=1e-4, atol=1e-6)


def test_neighbour_ids_out_of_range_never_reach_a_sparse_matrix():
    weights = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"neighbour indices must lie in \[0, 3\)"):
        _neighbor_csr(weights, np.array([[1, 2], [0, -1], [0, 1]]), 3)
    with pytest.raises(ValueError, match=r"neighbour indices must lie in \[0, 3\)"):
        _neighbor_csr(weights, np.array([[1, 2], [0, 3], [0, 1]]), 3)


@pytest.mark.parametrize("kernel", [KNNKernel(10, metric="cosine"),
                                    CosineKernel(sparsify_neighbors=10), CosineKernel()],
                         ids=["knn", "cosine-sparsified", "cosine-dense"])
def test_cosine_batch_of_rows_sharing_one_direction_matches_scikit_learn(kernel):
    """Unit rows sharing one direction: float32 inner products near 1 rounded their
    differences away in the minibatch kernels too (the faiss graph is fixed separately).
    The batch over all points must give scikit-learn's float64 cosine neighbours."""
    X = np.random.default_rng(0).normal(size=(400, 8)) + 1e3
    batch = kernel.batch(torch.from_numpy(X.astype(np.float32))).numpy()
    X32 = X.astype(np.float32).astype(np.float64)
    if isinstance(kernel, KNNKernel):
        A = kneighbors_graph(X32, 10, metric="cosine", include_self=False)
        expected = ((A + A.T) * 0.5).toarray()
        assert np.mean((batch > 0) == (expected > 0)) >= 0.9999
        return
    similarity = cosine_similarity(X32)
    np.fill_diagonal(similarity, 0.0)
    if kernel.sparsify_neighbors:
        kept = batch > 0
        order = np.argsort(-similarity, axis=1)[:, :10]
        expected = np.zeros_like(kept)
        np.put_along_axis(expected, order, True, axis=1)
        expected |= expected.T
        assert np.mean(kept == expected) >= 0.9999
    else:
        np.testing.assert_allclose(batch, np.clip(similarity, 0, None), atol=1e-6)


@pytest.mark.parametrize("kernel", [KNNKernel(5, weighting="gaussian"),
                                    RBFKernel(bandwidth="self-tuning", gamma=None)],
                         ids=["knn-gaussian", "rbf-self-tuning"])
@pytest.mark.parametrize("scale", [1e-25, 1e22])
def test_self_tuned_batch_weights_ignore_the_data_scale(blobs, kernel, scale):
    """Self-tuned Gaussian weights d^2 / (sigma_i sigma_j) do not depend on the data's
    scale, and the full graph (float64) gets them right at any scale; the float32 batch
    squared 1e22 into NaN and 1e-25 into 0 (every weight 1)."""
    X = blobs[0][:64].astype(np.float64)
    expected = kernel.graph(X).toarray()
    np.testing.assert_allclose(kernel.graph(X * scale).toarray(), expected, atol=1e-6)
    batch = kernel.batch(torch.from_numpy((X * scale).astype(np.float32))).numpy()
    np.testing.assert_allclose(batch, expected, atol=1e-5)


@pytest.mark.parametrize("scale", [1e-30, 1e20])
def test_tiny_and_huge_rows_are_not_called_all_zero(blobs, scale):
    """float32 squares of 1e-30 underflow to 0 and of 1e20 overflow: cosine must not care."""
    X = blobs[0] * np.float32(scale)
    batch = torch.from_numpy(X[:64])
    for kernel in (KNNKernel(5), CosineKernel(), KNNKernel(5, metric="l2")):
        expected = kernel.batch(torch.from_numpy(blobs[0][:64]))
        torch.testing.assert_close(kernel.batch(batch), expected, rtol=1e-5, atol=1e-6)
    W = CosineKernel(sparsify_neighbors=5).graph(X)
    expected = CosineKernel(sparsify_neighbors=5).graph(blobs[0])
    assert abs(W - expected).max() < 1e-5
    with pytest.raises(ValueError, match="all zeros"):  # a real zero row is still refused
        knn_search(np.vstack([X[:10], np.zeros((1, 5), np.float32)]), n_neighbors=3,
                   metric="cosine")


@pytest.mark.filterwarnings("ignore::spectralnet_seg.cluster.DisconnectedGraphWarning")
def test_eigsh_cosine_on_huge_values_clusters_as_unscaled(blobs):
    X, y = blobs
    for scale in (1e20, 1e30):  # used to end in "ARPACK did not converge"
        est = EigshSpectralClustering(3, random_state=0).fit(X * np.float32(scale))
        assert adjusted_rand_score(y, est.labels_) == 1.0


def test_eigsh_on_an_empty_graph_points_at_the_scale(blobs):
    """A fixed RBF bandwidth far too narrow for the data leaves no edge at all."""
    with pytest.raises(ValueError, match="no edges.*scale of the data.*gamma"):
        EigshSpectralClustering(3, kernel=RBFKernel(), random_state=0).fit(blobs[0] * 1e20)
    with pytest.raises(ValueError, match="no edges"):
        EigshSpectralClustering(3, kernel=RBFKernel(gamma=1e9), random_state=0).fit(blobs[0])


# ----------------------------------------------------------------------------- offset
@pytest.fixture(scope="module")
def unit_normal_points():
    # 2e4 points: the old exact search lost half the neighbours at this size (0.9999 kept
    # at 1e4; faiss's cancelling |x|^2 + |y|^2 - 2xy path depends on the sizes).
    rng = np.random.default_rng(0)
    return rng.normal(size=(20000, 8)), rng.normal(size=(300, 8))


@pytest.mark.parametrize("index", ["flat", "hnsw", "ivf"])
@pytest.mark.parametrize("offset", [1e3, 1e6])
def test_knn_search_finds_float64_neighbours_under_a_large_common_offset(
        unit_normal_points, index, offset):
    """faiss's exact search computes |x|^2 + |y|^2 - 2xy in float32: shifted by 1e3 (~250x the
    points' spread), the flat index found 44 % of the true neighbours. The same
    neighbours as scikit-learn's float64 search are expected, in the graph and across sets."""
    X, Y = unit_normal_points
    reference = NearestNeighbors(n_neighbors=10).fit(X)
    ref_dist, ref_ind = reference.kneighbors()
    ref_dist_y, ref_ind_y = reference.kneighbors(Y)
    shifted = X + offset
    untouched = shifted.copy()
    dist, ind = knn_search(shifted, n_neighbors=10, index=index, random_state=0)
    np.testing.assert_array_equal(shifted, untouched)  # centred in copies, not in place
    dist_y, ind_y = knn_search(X + offset, Y + offset, n_neighbors=10, index=index,
                               random_state=0)
    exact = index == "flat"
    assert neighbour_recall(ind, ref_ind) >= (0.999 if exact else 0.95)
    assert neighbour_recall(ind_y, ref_ind_y) >= (0.999 if exact else 0.95)
    if exact:
        np.testing.assert_allclose(dist, ref_dist, rtol=1e-4)
        np.testing.assert_allclose(dist_y, ref_dist_y, rtol=1e-4)


def test_knn_graph_under_an_offset_is_scikit_learns_graph_of_the_float32_data(
        unit_normal_points):
    """The kernel converts X to float32, then must find those values' neighbours: scikit-learn's
    symmetrised ``kneighbors_graph`` of the float32 values (computed in float64), also when
    they are shifted by 1e3, ~250x their spread (the old graph kept 44 % of its edges).
    faiss's float32 arithmetic may swap a neighbour tied to ~1e-7: at most 1 edge in 10^4."""
    for offset in (0.0, 1e3):
        X32 = (unit_normal_points[0] + offset).astype(np.float32)
        A = kneighbors_graph(X32.astype(np.float64), 10, include_self=False)
        expected = ((A + A.T) * 0.5).tocsr()
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataConversionWarning)  # nothing is lost: silent
            W = KNNKernel().graph(unit_normal_points[0] + offset)
        assert (abs(W - expected) > 0).nnz <= 1e-4 * expected.nnz


@pytest.mark.parametrize("kernel", [KNNKernel(), RBFKernel(gamma=1.0), CosineKernel()],
                         ids=["knn", "rbf", "cosine"])
def test_float32_rounding_of_an_extreme_offset_is_reported(kernel):
    """Projected map coordinates (offset 1e7, spread ~1) keep one significant bit in
    float32: the default graph split the moons at random (ARI 0.02), and the RBF weights
    were off by up to 0.87 against scikit-learn's rbf_kernel, silently."""
    X, _ = make_moons(600, noise=0.05, random_state=0)
    with pytest.warns(DataConversionWarning, match=r"Centre X first \(X - X.mean\(axis=0\)\)"):
        kernel.graph(X + 1e7)
    with pytest.warns(DataConversionWarning, match=r"Centre Y first"):
        kernel.cross(X[:5] + 1e7)
    with warnings.catch_warnings(record=True) as caught:  # it points at the caller's line
        warnings.simplefilter("always", DataConversionWarning)
        kernel.graph(X + 1e7)
    assert [w.filename for w in caught] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataConversionWarning)
        kernel.graph(X + 1e3)  # rounded by 1e-4 of the spread: no warning
        kernel.graph((X + 1e7).astype(np.float32))  # already float32: nothing to report
        # Integer map coordinates far from 0 that float32 holds exactly: nothing is lost.
        kernel.graph(np.random.default_rng(0).integers(0, 600, (300, 2)) + 10**7)


def test_eigsh_reports_the_float32_rounding_of_its_input():
    """The estimator converted X to float32 before the kernel's check could see it: at an
    offset of 3e7, 200 blob points kept 17 distinct rows (ARI 0.10) without a word."""
    from spectralnet_seg.cluster import EigshSpectralClustering

    X, _ = make_blobs(200, centers=3, random_state=0)
    est = EigshSpectralClustering(3, random_state=0)
    with pytest.warns(DataConversionWarning, match="Centre X first"):
        est.fit(X + 3e7)
    with pytest.warns(DataConversionWarning, match="Centre X first"):
        est.predict(X[:5] + 3e7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataConversionWarning)
        centred = EigshSpectralClustering(3, random_state=0).fit(X)
    # Integers beyond 2**24 are measured too (from float64 copies); small ones, which
    # float32 holds exactly, are not copied to float64 and are silent.
    with pytest.warns(DataConversionWarning, match="Centre X first"):
        EigshSpectralClustering(3, random_state=0).fit(np.round(X * 1000).astype(np.int64)
                                                       + 2**30)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataConversionWarning)
        EigshSpectralClustering(3, random_state=0).fit(np.round(X * 1000).astype(np.int64))
    # The float32 rows the kernel sees are what they were: the same labels from float64
    # and from float32 input.
    assert_array_equal(centred.labels_,
                       EigshSpectralClustering(3, random_state=0).fit(
                           X.astype(np.float32)).labels_)


@pytest.mark.parametrize("sampler", ["graph", "minibatch"])
def test_neural_estimators_report_an_extreme_offset_once_whatever_the_sampler(sampler):
    """The network and the minibatch kernels see float32 rows: with sampler="minibatch" no
    kernel converted X, and the rounding went unreported. One warning, at the caller's
    fit line (the graph's kernel says the same words there)."""
    X, _ = make_moons(200, noise=0.05, random_state=0)
    est = NeuralEigenClustering(2, sampler=sampler, max_iter=20, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's default: once per text and line
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X + 1e7)
    rounding = [w for w in caught if issubclass(w.category, DataConversionWarning)]
    assert len(rounding) == 1 and rounding[0].filename == __file__
    assert "Centre X first" in str(rounding[0].message)


@pytest.mark.parametrize("as_input", [
    lambda X: np.round(X * 1000).astype(np.int64), lambda X: X.tolist()], ids=["int64", "list"])
def test_integers_and_lists_are_checked_for_float32_rounding_too(as_input):
    """int64 values beyond 2**24 and lists of float64 values were converted to float32 before
    the rounding check could see them: the same values as a float64 array warned, these
    did not."""
    X, _ = make_moons(200, noise=0.05, random_state=0)
    X = as_input(np.round(X, 3) + 2.0**26)  # an offset float32 cannot hold to 1e-3
    assert np.any(np.asarray(X, dtype=np.float32) != np.asarray(X, dtype=np.float64))
    est = NeuralEigenClustering(2, max_iter=20, random_state=0)
    with pytest.warns(DataConversionWarning, match="Centre X first"):
        est.fit(X)


def test_half_precision_arrays_become_float32_not_float64():
    """Only non-floating input goes to float64: float16 data at 4x their memory would undo
    the half-precision savings."""
    from spectralnet_seg.cluster import _neural_io

    X = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float16)
    assert _neural_io.validate_rows(NeuralEigenClustering(2), X, reset=True).dtype == np.float32
    ints = np.arange(150).reshape(50, 3)
    assert _neural_io.validate_rows(NeuralEigenClustering(2), ints, reset=True).dtype == np.float64


def test_small_offsets_keep_the_plain_float32_rows():
    """Centring only where it matters: data whose mean is within a few times its spread
    (standardised data, pixel features, the published benchmarks' data) are searched as
    plain float32 rows, bit for bit."""
    from spectralnet_seg.neighbors._rows import _check_rows, _rows_f32, faiss_rows

    rng = np.random.default_rng(0)
    for offset in (0.0, 1.0, 3.0, 7.0):  # unit-normal columns: mean / spread = offset
        X = rng.normal(size=(500, 4)) + offset
        for metric in ("l2", "cosine"):
            rows = faiss_rows(_check_rows(X, metric, "X"), metric)
            assert rows.shift is None
            plain = X.astype(np.float32)
            if metric == "cosine":
                plain /= np.linalg.norm(plain, axis=1, keepdims=True)
            np.testing.assert_array_equal(_rows_f32(X, 0, 500, metric, "X", rescaling=rows),
                                          plain)
    shifted = faiss_rows(_check_rows(rng.normal(size=(500, 4)) + 100.0, "l2", "X"), "l2")
    assert shifted.shift is not None and np.all(np.abs(shifted.shift - 100.0) < 0.5)


def test_centring_keeps_the_search_in_float32_range_when_float32_cannot_see_the_spread():
    """Values ~1e30 with a spread of 1e20 all round to the same float32 numbers; centred in
    float64 they are ~1e20 again, but the power of two was taken from the float32 rows (0),
    faiss's squares overflowed and the search raised "no valid neighbours"."""
    X = np.random.default_rng(0).normal(size=(200, 3)) * 1e20 + 1e30
    dist, ind = knn_search(X, n_neighbors=3)
    ref_dist, ref_ind = NearestNeighbors(n_neighbors=3, algorithm="kd_tree").fit(X).kneighbors()
    assert neighbour_recall(ind, ref_ind) == 1.0
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-3)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_one_outlier_does_not_hide_the_offset_of_the_others(unit_normal_points, metric):
    """The offset test used each column's range: one row at the origin made the range as
    large as the offset, centring was skipped and recall fell back to 0.44."""
    X = unit_normal_points[0] + 1e3
    X[0] = 1e-3  # (not 0: the cosine metric refuses zero rows)
    _, ind = knn_search(X, n_neighbors=10, metric=metric)
    reference = NearestNeighbors(n_neighbors=10, metric="euclidean" if metric == "l2"
                                 else "cosine").fit(X)
    assert neighbour_recall(ind, reference.kneighbors()[1]) >= 0.999


def test_cosine_neighbours_of_rows_sharing_one_direction(unit_normal_points):
    """Unit rows that share one direction have 1 - cos ~ 1e-6, below float32's resolution of
    an inner product near 1: the flat cosine search found 49 % of the true neighbours of
    unit-normal points shifted by 1e3 (scikit-learn computes in float64)."""
    X, Y = unit_normal_points
    X, Y = X + 1e3, Y + 1e3
    reference = NearestNeighbors(n_neighbors=10, metric="cosine").fit(X)
    ref_dist, ref_ind = reference.kneighbors()
    dist, ind = knn_search(X, n_neighbors=10, metric="cosine")
    assert neighbour_recall(ind, ref_ind) >= 0.999
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-3)
    _, ind_y = knn_search(X, Y, n_neighbors=10, metric="cosine", index="hnsw")
    assert neighbour_recall(ind_y, reference.kneighbors(Y)[1]) >= 0.95


# ----------------------------------------------------------------------------- index_params
@pytest.mark.parametrize(("index", "params", "users"), [
    ("flat", {"n_lists": 8}, "'ivf'"),
    ("flat", {"hnsw_m": 8, "n_probe": 2}, "'hnsw' or 'ivf'"),
    ("hnsw", {"random_state": 0}, "'ivf'"),
    ("ivf", {"ef_search": 64}, "'hnsw'"),
])
def test_index_params_the_index_ignores_are_an_error(blobs, index, params, users):
    kernel = KNNKernel(5, index=index, index_params=params)
    with pytest.raises(ValueError, match=f"no effect with index='{index}'.*{users}"):
        kernel.graph(blobs[0])


def test_index_params_the_index_uses_are_accepted(blobs):
    W = KNNKernel(5, index="ivf", index_params={"n_lists": 4, "n_probe": 4,
                                                "random_state": 0}).graph(blobs[0])
    assert W.shape == (300, 300)
    KNNKernel(5, index="hnsw", index_params={"hnsw_m": 8, "ef_search": 32,
                                             "n_threads": 1}).graph(blobs[0])


# ----------------------------------------------------------------------------- strings
STRINGS = [["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]] * 5
MIXED = np.array([[1.0, "x"], [2.0, 3.0]] * 10, dtype=object)


@pytest.mark.parametrize("fit", [
    lambda X: EigshSpectralClustering(2).fit(X),
    lambda X: NeuralEigenClustering(2, max_iter=1, device="cpu").fit(X),
    lambda X: DiscreteNeuralEigenClustering(2, max_iter=1, device="cpu").fit(X),
    lambda X: RBFKernel().graph(X),
    lambda X: CosineKernel().graph(X),
], ids=["eigsh", "neural", "discrete", "rbf", "cosine"])
@pytest.mark.parametrize("X", [STRINGS, np.array(STRINGS), MIXED], ids=["list", "str", "obj"])
def test_strings_get_scikit_learns_message(fit, X):
    with pytest.raises(ValueError, match="X holds strings.*Convert your data to numeric"):
        fit(X)


@pytest.mark.filterwarnings("ignore::spectralnet_seg.cluster.DisconnectedGraphWarning")
def test_numeric_object_arrays_and_sparse_input_still_work(blobs):
    X = blobs[0][:40].astype(object)
    assert EigshSpectralClustering(3, random_state=0).fit(X).labels_.shape == (40,)
    W = sp.csr_matrix(RBFKernel(gamma=0.1).graph(blobs[0][:40]))
    est = EigshSpectralClustering(3, kernel="precomputed", random_state=0).fit(W)
    assert est.labels_.shape == (40,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no spurious warning on ordinary data
        make_kernel("knn").graph(blobs[0])


# ----------------------------------------------------------------------------- evaluate
class _ConstantSegmenter:
    """Predicts cluster 0 everywhere (evaluate only needs ``predict``)."""

    def predict(self, images):
        return [np.zeros(np.shape(im)[:2], dtype=np.int64) for im in images]


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_evaluate_with_every_pixel_ignored_warns(dtype):
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    data = [(im, np.full((8, 8), 255, dtype=dtype)) for im in images]
    with pytest.warns(UndefinedMetricWarning, match="every ground-truth pixel of the 2 "
                      "evaluated masks is ignore_index=255"):
        scores = evaluate(_ConstantSegmenter(), data, protocol=None)
    assert np.isnan(scores["pixel_accuracy"]) and np.isnan(scores["mean_iou"])


def test_evaluate_infers_classes_from_every_mask():
    """The first mask all ignored used to fix n_classes at 0 for the whole set."""
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    masks = [np.full((4, 4), 255, np.uint8), np.ones((4, 4), np.uint8)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)
        scores = evaluate(_ConstantSegmenter(), list(zip(images, masks, strict=True)),
                          protocol=None)
    assert scores["confusion"].shape == (2, 1) and scores["pixel_accuracy"] == 1.0


def test_metrics_warn_when_nothing_is_scored():
    ignored, pred = np.full(6, 255), np.zeros(6, dtype=int)
    for score in (lambda: pixel_accuracy(ignored, pred), lambda: mean_iou(ignored, pred, 2),
                  lambda: segmentation_scores(ignored, pred, 2)["mean_iou"]):
        with pytest.warns(UndefinedMetricWarning, match="no ground-truth pixel to score"):
            assert np.isnan(score())


# ----------------------------------------------------------------------------- image memory
def test_pixel_extractor_refuses_images_too_large_for_memory_before_any_work(monkeypatch):
    from spectralnet_seg.features import pixel

    monkeypatch.setattr(pixel, "available_memory_bytes", lambda: 200 * 2**20)
    monkeypatch.setattr(PixelExtractor, "_image_features",
                        lambda *a: pytest.fail("features computed despite the estimate"))
    image = np.zeros((1000, 800, 3), dtype=np.uint8)  # ~0.57 GiB of temporaries
    with pytest.raises(ImageMemoryError, match=r"about 0.6 GiB to process images of 1000 x "
                       r"800 pixels.*only 0.2 GiB are available.*image_size=\(H, W\)"):
        PixelExtractor().extract([image])
    with pytest.raises(MemoryError):  # also a MemoryError (and a ValueError for the CLI)
        PixelExtractor(image_size=(600, 480)).extract([image])


@pytest.mark.parametrize("num_sigma", [None, 6])
def test_pixel_memory_estimate_bounds_the_measured_peak(num_sigma):
    import tracemalloc

    extractor = PixelExtractor(num_sigma=num_sigma)
    image = np.random.default_rng(0).integers(0, 256, (192, 256, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        extractor.extract([image])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = estimate_pixel_memory(192, 256, extractor.n_scales)
    assert peak <= estimate <= 1.5 * peak


def test_warnings_point_at_the_callers_line():
    """Fixed stacklevels pointed into scikit-learn's fit and validation wrappers
    (sklearn/base.py, sklearn/utils/_param_validation.py) for every estimator warning."""
    X, _ = make_blobs(30, centers=2, random_state=0)
    far = np.vstack([X, X + 100])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        EigshSpectralClustering(2, kernel=KNNKernel(40), random_state=0).fit(X)  # k capped
        NeuralEigenClustering(2, max_iter=5, random_state=0).fit(X)  # max_iter first
        DiscreteNeuralEigenClustering(2, max_iter=5, fine_tune_iter=2, random_state=0).fit(X)
        EigshSpectralClustering(2, kernel=KNNKernel(3), random_state=0).fit(far)  # components
    kinds = {w.category.__name__ for w in caught}
    assert {"UserWarning", "ConvergenceWarning", "DisconnectedGraphWarning"} <= kinds
    assert {w.filename for w in caught} == {__file__}, [(w.filename, w.lineno) for w in caught]
