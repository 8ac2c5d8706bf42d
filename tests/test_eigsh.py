"""EigshSpectralClustering and its free functions: quality, agreement, Nyström, invariances."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from scipy.linalg import eigh, subspace_angles
from sklearn.cluster import SpectralClustering
from sklearn.datasets import load_digits, make_blobs
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import kneighbors_graph

from spectralnet_seg.cluster import (
    DisconnectedGraphWarning,
    EigenSolverConvergenceError,
    EigshSpectralClustering,
    IsolatedPointWarning,
    _assign,
    _eigensolvers,
    normalized_affinity,
    nystrom_extension,
    spectral_clustering,
    spectral_embedding,
)
from spectralnet_seg.kernels import KNNKernel
from spectralnet_seg.metrics import normalized_cut


def _knn_affinity(X, k=10):
    """Symmetric binary kNN affinity without self-loops (scikit-learn's construction)."""
    A = kneighbors_graph(X, n_neighbors=k, include_self=False)
    return sp.csr_matrix(0.5 * (A + A.T))


def _coins_pixel_graph(scale=0.1):
    """scikit-learn's coin-segmentation graph (its example's weighting), without self-loops.

    At scale 0.1 it has 1140 pixels and its top eigenvalues lie within 5e-6 of 1.
    """
    from scipy.ndimage import gaussian_filter
    from skimage.data import coins
    from skimage.transform import rescale
    from sklearn.feature_extraction.image import img_to_graph

    image = rescale(gaussian_filter(coins(), sigma=2), scale, mode="reflect",
                    anti_aliasing=False)
    W = img_to_graph(image)
    W.data = np.exp(-10 * W.data / W.data.std()) + 1e-6
    W = sp.csr_matrix(W)
    W.setdiag(0)
    W.eliminate_zeros()
    return W


def _l2_knn(k=10):
    return KNNKernel(n_neighbors=k, metric="l2", weighting="binary")


@pytest.fixture(scope="module")
def digits():
    return load_digits(return_X_y=True)


@pytest.fixture(scope="module")
def digits_fit(digits):
    X, _ = digits
    return EigshSpectralClustering(n_clusters=10, kernel=_l2_knn(), random_state=0).fit(X)


# ---------------------------------------------------------------------------- free functions


def test_normalized_affinity_is_symmetric_normalisation():
    W = sp.csr_matrix(np.array([[0, 2.0, 0], [2, 0, 1], [0, 1, 0]]))
    M, degree = normalized_affinity(W)
    assert_allclose(degree, [2, 3, 1])
    D = np.diag(1 / np.sqrt(degree))
    assert_allclose(M.toarray(), D @ W.toarray() @ D)


@pytest.mark.parametrize("solver", ["arpack", "lobpcg", "amg"])
def test_spectral_embedding_matches_dense_eigh(digits, solver):
    W = _knn_affinity(digits[0][:400])
    values, vectors = spectral_embedding(W, 6, eigen_solver=solver, random_state=0)
    M, _ = normalized_affinity(W)
    ref_values, ref_vectors = eigh(M.toarray())
    assert_allclose(values, ref_values[::-1][:6], atol=1e-6)
    assert np.all(np.diff(values) <= 0)  # decreasing order
    assert_allclose(np.linalg.norm(vectors, axis=0), 1.0)
    assert subspace_angles(vectors, ref_vectors[:, ::-1][:, :6]).max() < 1e-3
    # Deterministic sign: the largest-magnitude entry of each column is positive.
    assert np.all(vectors[np.abs(vectors).argmax(axis=0), np.arange(6)] > 0)


def test_arpack_mode_auto_tells_pixel_grids_from_knn_graphs(digits):
    assert _eigensolvers.arpack_mode_for(_coins_pixel_graph(0.1)) == "shift-invert"
    assert _eigensolvers.arpack_mode_for(_coins_pixel_graph(0.2)) == "shift-invert"
    assert _eigensolvers.arpack_mode_for(_knn_affinity(digits[0])) == "normal"


@pytest.mark.parametrize("mode", ["auto", "shift-invert"])
def test_arpack_on_a_pixel_graph_matches_dense_eigh(mode):
    W = _coins_pixel_graph(0.1)
    values, vectors = spectral_embedding(W, 8, arpack_mode=mode, random_state=0)
    n = W.shape[0]
    ref_values, ref_vectors = eigh(normalized_affinity(W)[0].toarray(),
                                   subset_by_index=[n - 8, n - 1])
    assert_allclose(values, ref_values[::-1], atol=1e-10)
    # The eigenvalues are packed within 5e-6 of 1, so compare the subspace they span.
    assert subspace_angles(vectors, ref_vectors).max() < 1e-6


@pytest.mark.parametrize("mode", ["normal", "shift-invert"])
def test_both_arpack_modes_match_dense_eigh_on_a_knn_graph(digits, mode):
    W = _knn_affinity(digits[0][:400])
    values, vectors = spectral_embedding(W, 6, arpack_mode=mode, random_state=0)
    ref_values, ref_vectors = eigh(normalized_affinity(W)[0].toarray())
    assert_allclose(values, ref_values[::-1][:6], atol=1e-8)
    assert subspace_angles(vectors, ref_vectors[:, ::-1][:, :6]).max() < 1e-4


def test_amg_is_deterministic_under_random_state_and_leaves_numpy_global_rng_alone():
    # numpy's legacy global generator is the one pyamg draws from (hence NPY002 below).
    W = _coins_pixel_graph(0.2)
    np.random.seed(123)  # noqa: NPY002
    expected_next = np.random.rand()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    runs = [spectral_embedding(W, 8, eigen_solver="amg", random_state=0) for _ in range(3)]
    assert np.random.rand() == expected_next  # noqa: NPY002 - pyamg's draws do not leak out
    for values, vectors in runs[1:]:
        assert_array_equal(values, runs[0][0])
        assert_array_equal(vectors, runs[0][1])


def test_coins_partition_is_as_good_as_sklearns():
    # scikit-learn's coin-segmentation example (20 %, 25 regions): with degree-normalised
    # eigenvectors our partition's normalised cut is within 10 % of scikit-learn's.
    from sklearn.cluster import spectral_clustering as sk_spectral_clustering

    W = _coins_pixel_graph(0.2)
    theirs = sk_spectral_clustering(W, n_clusters=25, random_state=42)
    ours = spectral_clustering(W, 25, embedding_norm="degree", random_state=42)
    assert normalized_cut(W, ours) <= 1.1 * normalized_cut(W, theirs)


def test_small_graphs_use_the_dense_solver():
    W = np.ones((5, 5)) - np.eye(5)
    values, vectors = spectral_embedding(W, 5)  # K = n: iterative solvers cannot do this
    assert_allclose(values, [1, -0.25, -0.25, -0.25, -0.25], atol=1e-12)
    assert_allclose(vectors.T @ vectors, np.eye(5), atol=1e-10)


@pytest.mark.parametrize("solver", ["arpack", "lobpcg"])
def test_non_convergence_is_a_clear_error(digits, solver):
    W = _knn_affinity(digits[0][:400])
    with pytest.raises(EigenSolverConvergenceError, match="eigen_tol.*n_components"):
        spectral_embedding(W, 8, eigen_solver=solver, max_iter=1, random_state=0)


def test_amg_without_pyamg_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyamg", None)  # makes `import pyamg` fail
    with pytest.raises(ImportError, match=r"spectralnet-seg\[amg\]"):
        spectral_embedding(np.ones((4, 4)), 2, eigen_solver="amg")


def test_spectral_embedding_bad_arguments():
    with pytest.raises(ValueError, match="'eigen_solver' parameter of spectral_embedding"):
        spectral_embedding(np.ones((4, 4)), 2, eigen_solver="eigh")
    with pytest.raises(ValueError, match="'arpack_mode' parameter of spectral_embedding"):
        spectral_embedding(np.ones((4, 4)), 2, arpack_mode="buckling")
    with pytest.raises(ValueError, match="n_components=5 must be between 1 and"):
        spectral_embedding(np.ones((4, 4)), 5)
    with pytest.raises(ValueError, match="symmetric"):
        spectral_clustering(np.triu(np.ones((4, 4))), 2)
    with pytest.raises(ValueError, match="negative"):
        spectral_clustering(-np.ones((4, 4)), 2)


@pytest.mark.parametrize("scale", [1.0, 1e-9])
def test_a_directed_graph_is_refused_at_any_scale(scale):
    """A directed kNN graph: spectral_embedding returned 'eigenvalues' above 1 without a
    word, and spectral_clustering refused it at scale 1 but took it at 1e-9 (the asymmetry
    tolerance was absolute below weight 1); scikit-learn symmetrises such a graph."""
    A = kneighbors_graph(np.random.default_rng(0).normal(size=(150, 2)), 5) * scale
    for call in (lambda: spectral_embedding(A, 3, random_state=0),
                 lambda: spectral_clustering(A, 3, random_state=0)):
        with pytest.raises(ValueError, match=r"must be symmetric.*\(W \+ W.T\) / 2"):
            call()
    values, _ = spectral_embedding((A + A.T) * 0.5, 3, random_state=0)  # symmetrised: fine
    assert values.max() <= 1.0 + 1e-12


def test_nystrom_extension_reproduces_training_eigenvectors(digits):
    W = _knn_affinity(digits[0][:300])
    values, vectors = spectral_embedding(W, 5, random_state=0)
    degree = np.asarray(W.sum(axis=1)).ravel()
    assert_allclose(nystrom_extension(W, degree, vectors, values), vectors, atol=1e-8)


def test_nystrom_isolated_query_is_zero_with_warning():
    W = np.ones((4, 4)) - np.eye(4)
    values, vectors = spectral_embedding(W, 2)
    C = np.array([[1.0, 0, 0, 0], [0, 0, 0, 0]])
    with pytest.warns(IsolatedPointWarning, match="1 of 2 new points"):
        U = nystrom_extension(C, W.sum(axis=1), vectors, values)
    assert_array_equal(U[1], 0.0)
    assert np.abs(U[0]).sum() > 0
    with pytest.raises(ValueError, match="n_samples_fit"):
        nystrom_extension(C[:, :3], W.sum(axis=1), vectors, values)
    # One eigenvalue for two columns broadcast: every column was divided by λ_1.
    with pytest.raises(ValueError, match="one eigenvalue per column"):
        nystrom_extension(C, W.sum(axis=1), vectors, values[:1])
    # A list of eigenvectors failed on .shape.
    assert_allclose(nystrom_extension(C[:1], W.sum(axis=1), vectors.tolist(), values), U[:1])


def test_spectral_clustering_function_agrees_with_estimator(digits):
    X, y = digits[0][:500], digits[1][:500]
    W = _knn_affinity(X)
    labels, values, vectors = spectral_clustering(W, 10, random_state=0,
                                                  return_embedding=True)
    est = EigshSpectralClustering(10, kernel="precomputed", random_state=0).fit(W)
    assert_array_equal(labels, est.labels_)
    assert_allclose(values, est.eigenvalues_)
    assert normalized_mutual_info_score(y, labels) >= 0.8


def test_assign_label_helpers():
    E = np.array([[1.0, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0, 0]])
    assert_allclose(np.linalg.norm(_assign.normalize_embedding(E)[:4], axis=1), 1.0)
    assert_array_equal(_assign.normalize_embedding(E)[4], 0.0)  # zero rows stay zero
    assert_allclose(_assign.normalize_embedding(E, np.full(5, 4.0), norm="degree"), E / 2)
    labels = _assign.cluster_qr(E[:4])
    assert adjusted_rand_score([0, 0, 1, 1], labels) == 1.0
    centers = np.array([[1.0, 0], [np.nan, np.nan], [0, 1]])  # empty cluster 1 is skipped
    assert_array_equal(_assign.nearest_centroid(E[:4], centers), [0, 0, 2, 2])
    with pytest.raises(ValueError, match="n_components >= n_clusters"):
        _assign.assign_labels(E, 3, method="cluster_qr")


def test_discretize_with_as_many_rows_of_direction_as_clusters():
    """Exactly k non-zero rows put every point in cluster 0; scikit-learn's discretize of
    those rows gives k clusters (the zero rows then join one of them, as with k-means)."""
    from sklearn.cluster._spectral import discretize

    E = np.zeros((10, 3))
    E[[0, 1, 2]] = np.eye(3)
    labels, _ = _assign.assign_labels(E, 3, method="discretize", random_state=0)
    reference = discretize(np.eye(3), random_state=0)
    assert adjusted_rand_score(reference, labels[:3]) == 1.0
    assert len(np.unique(labels)) == 3


@pytest.mark.parametrize("method", ["kmeans", "discretize", "cluster_qr"])
def test_assign_labels_refuses_a_non_finite_embedding(method):
    """"discretize" labelled NaN rows as isolated (zero) rows, silently; their cluster's
    mean became NaN and nearest_centroid then skipped that cluster."""
    E = np.random.default_rng(0).normal(size=(20, 3))
    E[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        _assign.assign_labels(E, 3, method=method, random_state=0)


# ---------------------------------------------------------------------------- quality


def test_digits_nmi_with_knn_kernel(digits, digits_fit):
    X, y = digits
    ours = normalized_mutual_info_score(y, digits_fit.labels_)
    sk = SpectralClustering(n_clusters=10, affinity="nearest_neighbors", n_neighbors=10,
                            random_state=0).fit(X)
    theirs = normalized_mutual_info_score(y, sk.labels_)
    assert ours >= 0.85
    # the same binary 10-NN graph as scikit-learn's: no worse than its clustering of it
    assert ours >= theirs - 0.01
    assert digits_fit.embedding_.shape == (1797, 10)
    assert digits_fit.affinity_matrix_.shape == (1797, 1797)
    assert digits_fit.labels_.dtype == np.int32 and set(digits_fit.labels_) == set(range(10))
    assert digits_fit.eigenvalues_[0] == pytest.approx(1.0)


@pytest.mark.parametrize("assign", ["discretize", "cluster_qr"])
def test_other_label_assignments(digits, assign):
    X, y = digits
    est = EigshSpectralClustering(10, kernel=_l2_knn(), assign_labels=assign,
                                  random_state=0).fit(X)
    assert normalized_mutual_info_score(y, est.labels_) >= 0.8
    # predict uses the nearest training-cluster mean: it agrees with labels_ on X.
    assert adjusted_rand_score(est.labels_, est.predict(X)) >= 0.9


def test_precomputed_affinity_agrees_with_sklearn(digits):
    X, y = digits
    W = _knn_affinity(X)
    sk = SpectralClustering(n_clusters=10, affinity="precomputed", random_state=0).fit(W)
    # embedding_norm="degree" clusters the same vectors as scikit-learn (D^-1/2 u); the
    # default row normalisation (Ng-Jordan-Weiss) is a different, here better, algorithm.
    ours = EigshSpectralClustering(10, kernel="precomputed", embedding_norm="degree",
                                   random_state=0).fit(W)
    assert adjusted_rand_score(sk.labels_, ours.labels_) >= 0.99


def test_precomputed_transform_is_exact_on_training_affinity(digits):
    W = _knn_affinity(digits[0][:500])
    est = EigshSpectralClustering(10, kernel="precomputed", random_state=0).fit(W)
    assert est.n_features_in_ == 500
    assert_allclose(est.transform(W), est.embedding_, atol=1e-8)
    assert_array_equal(est.predict(W), est.labels_)
    # A dense affinity gives the same result as the sparse one.
    dense = EigshSpectralClustering(10, kernel="precomputed", random_state=0).fit(W.toarray())
    assert_array_equal(dense.labels_, est.labels_)
    assert_array_equal(dense.predict(W.toarray()[:20]), est.labels_[:20])
    with pytest.raises(ValueError, match="X has 499 features.*expecting 500"):
        est.predict(W[:, :499])


def test_nystrom_holdout_matches_in_sample(digits):
    X, y = digits
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, stratify=y,
                                              random_state=0)
    est = EigshSpectralClustering(10, kernel=_l2_knn(), random_state=0).fit(X_tr)
    nmi_in = normalized_mutual_info_score(y_tr, est.labels_)
    nmi_out = normalized_mutual_info_score(y_te, est.predict(X_te))
    assert abs(nmi_in - nmi_out) <= 0.05
    assert nmi_out >= 0.8


def test_transform_on_training_set_approximates_embedding(digits, digits_fit):
    X, _ = digits
    U, E = digits_fit.embedding_, digits_fit.transform(X)
    cosine = (U * E).sum(axis=0) / np.linalg.norm(U, axis=0) / np.linalg.norm(E, axis=0)
    assert cosine.min() >= 0.95
    assert E.dtype == np.float64
    assert adjusted_rand_score(digits_fit.labels_, digits_fit.predict(X)) >= 0.95
    assert_array_equal(digits_fit.fit_predict(X), digits_fit.labels_)


# ---------------------------------------------------------------------------- invariances


def test_deterministic_under_random_state(digits):
    X = digits[0][:600]
    a = EigshSpectralClustering(10, kernel=_l2_knn(), random_state=3).fit(X)
    b = EigshSpectralClustering(10, kernel=_l2_knn(), random_state=3).fit(X)
    assert_array_equal(a.labels_, b.labels_)
    assert_allclose(a.embedding_, b.embedding_)
    assert_array_equal(a.predict(X[:50]), b.predict(X[:50]))


def test_partition_invariant_to_sample_permutation():
    X, y = make_blobs(n_samples=300, centers=[[0, 0], [6, 0], [0, 6]], cluster_std=1.0,
                      random_state=0)
    perm = np.random.default_rng(0).permutation(len(X))
    a = EigshSpectralClustering(3, kernel=_l2_knn(15), random_state=0).fit(X)
    b = EigshSpectralClustering(3, kernel=_l2_knn(15), random_state=0).fit(X[perm])
    assert adjusted_rand_score(a.labels_[perm], b.labels_) == 1.0
    assert adjusted_rand_score(y, a.labels_) >= 0.95
    assert_allclose(a.eigenvalues_, b.eigenvalues_, atol=1e-10)
    # The sign rule does not depend on the order of the rows.
    assert_allclose(a.embedding_[perm][:, :1], b.embedding_[:, :1], atol=1e-8)


def test_disconnected_graph_warns_and_still_clusters():
    X, y = make_blobs(n_samples=[30, 30], centers=[[0, 0], [100, 100]], random_state=0)
    est = EigshSpectralClustering(2, kernel=_l2_knn(3), random_state=0)
    with pytest.warns(DisconnectedGraphWarning, match=r"has \d+ connected components"):
        est.fit(X)
    assert adjusted_rand_score(y, est.labels_) == 1.0


def test_tiny_data_clips_neighbour_count_with_warning():
    X = np.random.default_rng(0).normal(size=(6, 3))
    est = EigshSpectralClustering(2, kernel=_l2_knn(10), random_state=0)
    with pytest.warns(UserWarning, match="exceed n_samples - 1 = 5; using 5"):
        est.fit(X)
    assert est.kernel_.n_neighbors == 5
    assert est.kernel.n_neighbors == 10  # the user's kernel is not modified
    assert est.labels_.shape == (6,)


def test_verbose_prints_stages(capsys):
    X, _ = make_blobs(n_samples=40, random_state=0)
    EigshSpectralClustering(3, kernel=_l2_knn(5), verbose=True, random_state=0).fit(X)
    out = capsys.readouterr().out
    assert "affinity graph: 40 nodes" in out and "labels by 'kmeans'" in out


@pytest.mark.filterwarnings("ignore::spectralnet_seg.cluster.DisconnectedGraphWarning")
def test_int_random_state_seeds_an_unseeded_ivf_index():
    """The IVF index trains on a random subsample; its seed came from numpy's global
    generator, so an int random_state did not make fit deterministic."""
    X, _ = make_blobs(400, centers=3, n_features=5, random_state=0)
    kernel = KNNKernel(10, index="ivf", index_params={"n_probe": 1})
    graphs = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)  # noqa: NPY002 - the global generator is the point
        est = EigshSpectralClustering(3, kernel=kernel, random_state=0).fit(X)
        graphs.append(est.affinity_matrix_)
        assert est.kernel_.index_params == {"n_probe": 1, "random_state": 0}
    assert (graphs[0] != graphs[1]).nnz == 0
    assert kernel.index_params == {"n_probe": 1}  # the user's kernel is left as it was
    seeded = KNNKernel(10, index="ivf", index_params={"n_probe": 1, "random_state": 5})
    est = EigshSpectralClustering(3, kernel=seeded, random_state=0).fit(X)
    assert est.kernel_.index_params["random_state"] == 5  # the kernel's own seed wins


def test_discretize_labels_a_graph_with_an_isolated_node():
    # discretize normalised the isolated node's zero row to NaN: 30 "SVD did not converge"
    # retries, then a LinAlgError. It now joins the cluster k-means gives it.
    import warnings

    from spectralnet_seg.cluster import spectral_clustering
    W = np.kron(np.eye(3), np.ones((5, 5))) + 0.01  # 3 dense groups of 5
    np.fill_diagonal(W, 0)
    W = np.pad(W, ((0, 1), (0, 1)))  # node 15: no edges at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the graph is disconnected, and says so
        kmeans = spectral_clustering(W, 3, assign_labels="kmeans", random_state=0)
        discretized = spectral_clustering(W, 3, assign_labels="discretize", random_state=0)
    assert adjusted_rand_score(np.repeat([0, 1, 2], 5), discretized[:15]) == 1.0
    assert adjusted_rand_score(kmeans, discretized) == 1.0


@pytest.mark.parametrize("params, name", [
    (dict(n_components=0), "n_components"),  # was silently n_clusters
    (dict(n_clusters="3"), "n_clusters"),
    (dict(n_init=0), "n_init"),
    (dict(assign_labels="foo"), "assign_labels"),
])
def test_spectral_clustering_checks_its_own_parameters(params, name):
    from sklearn.utils._param_validation import InvalidParameterError
    W = np.kron(np.eye(2), np.ones((3, 3))) + 0.01
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of spectral_clustering"):
        spectral_clustering(W, **{"n_clusters": 2, **params})


def _separate_knn_graphs(n_groups, n_per_group=300, seed=0):
    """Block-diagonal union of kNN graphs of unrelated Gaussian clouds: ``n_groups`` components."""
    rng = np.random.RandomState(seed)
    W = sp.block_diag([_knn_affinity(rng.randn(n_per_group, 20))
                       for _ in range(n_groups)]).tocsr()
    return W, np.repeat(np.arange(n_groups), n_per_group)


@pytest.mark.parametrize("seed", [0, 2])
def test_arpack_finds_every_copy_of_eigenvalue_one_of_a_disconnected_graph(seed):
    # Lanczos on M from one start vector returned eigenvalue 1 five times for six components
    # (seeds 0 and 2), merging two of them and splitting a third, with ARI 0.83.
    W, components = _separate_knn_graphs(6)
    with pytest.warns(DisconnectedGraphWarning):
        est = EigshSpectralClustering(6, kernel="precomputed", random_state=seed).fit(W)
    assert_allclose(est.eigenvalues_, np.ones(6), atol=1e-10)
    assert adjusted_rand_score(components, est.labels_) == 1.0
    assert normalized_cut(W, est.labels_) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n_groups, k", [(3, 7), (8, 5)])
def test_normal_mode_on_a_disconnected_graph_matches_dense_eigh(n_groups, k):
    # Fewer components than eigenpairs (the rest come from the deflated operator) and more
    # (any k vectors of the eigenvalue-1 eigenspace are right).
    W, _ = _separate_knn_graphs(n_groups, n_per_group=120, seed=1)
    M, _ = normalized_affinity(W)
    dense_values, dense_vectors = eigh(M.toarray())
    with pytest.warns(DisconnectedGraphWarning):
        values, vectors = spectral_embedding(W, k, arpack_mode="normal", random_state=0)
    assert_allclose(values, dense_values[::-1][:k], atol=1e-9)
    assert_allclose(M @ vectors, vectors * values, atol=1e-8)
    assert_allclose(vectors.T @ vectors, np.eye(k), atol=1e-8)
    if n_groups < k:  # distinct eigenvalues beyond the components: the same subspace
        assert np.max(subspace_angles(vectors, dense_vectors[:, ::-1][:, :k])) < 1e-6


def test_stored_zeros_are_not_edges_and_the_callers_matrix_keeps_them():
    # connected_components counted stored 0.0 entries as edges: a disconnected graph passed
    # as connected, with no warning and eigsh's multiple eigenvalue unhandled.
    W, components = _separate_knn_graphs(2, n_per_group=150)
    C = W.tocoo()  # plus a stored zero each way between the two components
    W = sp.csr_matrix((np.r_[C.data, 0.0, 0.0], (np.r_[C.row, 0, 150], np.r_[C.col, 150, 0])),
                      shape=C.shape)
    stored = W.nnz
    assert stored == C.nnz + 2
    with pytest.warns(DisconnectedGraphWarning, match="2 connected components"):
        labels = spectral_clustering(W, 2, random_state=0)
    assert adjusted_rand_score(components, labels) == 1.0
    assert W.nnz == stored


def test_identical_isolated_nodes_share_a_label_with_row_normalisation():
    # The solvers left rounding noise (1e-18 to 1e-7) on the rows of isolated nodes, which
    # row normalisation turned into unit vectors pointing anywhere: three identical isolated
    # nodes got two or three different labels.
    W, _ = _separate_knn_graphs(1, n_per_group=300)
    W = sp.block_diag([W, sp.csr_matrix((3, 3))]).tocsr()
    for solver in ("arpack", "lobpcg"):
        with pytest.warns(DisconnectedGraphWarning):
            values, vectors = spectral_embedding(W, 3, eigen_solver=solver, random_state=0)
        assert np.all(vectors[-3:] == 0.0)  # M's rows there are 0, so eigenvectors vanish
        with pytest.warns((DisconnectedGraphWarning, IsolatedPointWarning)):
            est = EigshSpectralClustering(3, kernel="precomputed", eigen_solver=solver,
                                          embedding_norm="row", random_state=0).fit(W)
        assert len(set(est.labels_[-3:])) == 1
