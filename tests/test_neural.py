"""NeuralEigenClustering: learned eigenfunctions agree with eigsh on the same kernel, the
clustering matches the baseline, new points are embedded by a forward pass, inputs of every
kind are read lazily, and bad input gets clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from sklearn.datasets import load_digits, make_blobs, make_circles, make_moons
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import InvalidParameterError

from spectralnet_seg.cluster import (
    DiscreteNeuralEigenClustering,
    EigshSpectralClustering,
    NeuralEigenClustering,
    _neural_io,
)
from spectralnet_seg.eigenfunctions import eigenfunction_alignment, orthogonality_error
from spectralnet_seg.kernels import RBFKernel

# A dense Gaussian kernel on digits / 16: exp(-||x - y||²) has a clear gap after the 10th
# eigenvalue (0.85 -> 0.78), so the top-10 subspace is well defined.
DIGITS_KERNEL = dict(gamma=1.0)
DIGITS_FIT = dict(hidden_layer_sizes=(256,), batch_size=512, max_iter=1000,
                  learning_rate=3e-3, device="cpu", random_state=0)


@pytest.fixture(scope="module")
def digits_split():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)


@pytest.fixture(scope="module")
def digits_eigsh(digits_split):
    X_train, _, _, _ = digits_split
    return EigshSpectralClustering(10, kernel=RBFKernel(**DIGITS_KERNEL),
                                   random_state=0).fit(X_train)


@pytest.fixture(scope="module")
def digits_neural(digits_split):
    X_train, _, _, _ = digits_split
    return NeuralEigenClustering(10, kernel=RBFKernel(**DIGITS_KERNEL),
                                 **DIGITS_FIT).fit(X_train)


# ---------------------------------------------------------------------------- correctness


def test_eigenfunctions_match_eigsh(digits_split, digits_neural, digits_eigsh):
    X_train = digits_split[0]
    report = eigenfunction_alignment(digits_neural, X_train, digits_eigsh)
    print(f"\nmean cosine {report.mean_cosine:.4f}; cosines {np.round(report.cosines, 3)}; "
          f"eigenvalue errors {np.round(report.eigenvalue_relative_errors, 4)}")
    assert report.cosines.shape == (10,)
    assert report.mean_cosine >= 0.95
    assert report.max_eigenvalue_relative_error <= 0.05
    assert np.all(np.diff(digits_neural.eigenvalues_) <= 0)  # ordered like eigsh's
    # Scaled like eigsh's eigenvectors: unit-norm columns over the training set.
    np.testing.assert_allclose(np.linalg.norm(digits_neural.embedding_, axis=0), 1.0,
                               rtol=1e-6)
    assert orthogonality_error(digits_neural.embedding_) < 0.2


def test_digits_clustering_matches_the_baseline(digits_split, digits_neural, digits_eigsh):
    _, _, y_train, _ = digits_split
    neural = normalized_mutual_info_score(y_train, digits_neural.labels_)
    eigsh = normalized_mutual_info_score(y_train, digits_eigsh.labels_)
    print(f"\nNMI neural {neural:.4f}, eigsh {eigsh:.4f}, ratio {neural / eigsh:.3f}")
    assert neural >= 0.95 * eigsh


def test_out_of_sample_is_a_forward_pass(digits_split, digits_neural):
    X_train, X_test, _, _ = digits_split
    assert_array_equal(digits_neural.predict(X_train), digits_neural.labels_)
    # Each row is embedded on its own: a row's embedding does not depend on the others.
    np.testing.assert_allclose(digits_neural.transform(X_test[:5]),
                               digits_neural.transform(X_test)[:5], rtol=1e-5, atol=1e-6)


# Out-of-sample quality (issue 3: |NMI(in) - NMI(out)| <= 0.03). On the dense RBF kernel
# above the network generalises less well (gap 0.046: 0.761 in, 0.716 out, also with whole
# batches). The binary 10-NN graph is sharper; with whole batches (1437 rows, the operator is
# computed once) and diffusion_steps=10 (its top eigenvalues crowd against 1) the gap over
# random_state 0/1/2 is 0.006 / 0.019 / -0.016 (NMI in-sample 0.81 / 0.80 / 0.80).
DIGITS_KNN_FIT = dict(kernel="knn", hidden_layer_sizes=(256,), diffusion_steps=10,
                      batch_size=2048, max_iter=500, learning_rate=3e-3, device="cpu",
                      random_state=0)


@pytest.fixture(scope="module")
def digits_knn_neural(digits_split):
    X_train, _, _, _ = digits_split
    return NeuralEigenClustering(10, **DIGITS_KNN_FIT).fit(X_train)


def test_out_of_sample_nmi_matches_in_sample(digits_split, digits_knn_neural):
    _, X_test, y_train, y_test = digits_split
    in_sample = normalized_mutual_info_score(y_train, digits_knn_neural.labels_)
    out_of_sample = normalized_mutual_info_score(y_test, digits_knn_neural.predict(X_test))
    print(f"\nNMI in-sample {in_sample:.4f}, out-of-sample {out_of_sample:.4f}")
    assert abs(in_sample - out_of_sample) <= 0.03


# Two moons / two circles need two things (measured, ARI of both estimators, n = 300):
# - diffusion_steps: on RBF gamma=50 the top eigenvalues are 1, 0.99995 (the moon
#   indicator) and 0.995; the indicator beats a smooth half-split by < 1% of the objective.
#   t = 100 turns the gap into 0.995 vs 0.62 (t = 1: ARI 0.28-0.53 even with Fourier
#   features);
# - Fourier features: a plain MLP on the 2-D coordinates does not reach the indicator
#   (t = 100 without them: ARI 0.41 / 0.53 on moons, 0 for the discrete one on circles).
# Whole-set batches make the operator exact and it is computed once.
MOONS_FIT = dict(kernel=RBFKernel(gamma=50.0), hidden_layer_sizes=(64,), fourier_features=64,
                 fourier_scale=2.0, diffusion_steps=100, batch_size=300, max_iter=300,
                 learning_rate=5e-3, device="cpu", random_state=0)


@pytest.mark.parametrize("cls", [NeuralEigenClustering, DiscreteNeuralEigenClustering])
@pytest.mark.parametrize("make", [make_moons, make_circles])
def test_non_convex_shapes(cls, make):
    params = {"noise": 0.05, "random_state": 0}
    if make is make_circles:
        params["factor"] = 0.5
    X, y = make(300, **params)
    est = cls(2, **MOONS_FIT).fit(X)
    score = adjusted_rand_score(y, est.labels_)
    print(f"\n{cls.__name__} {make.__name__}: ARI {score:.3f}, eigenvalues {est.eigenvalues_}")
    assert score >= 0.95


# ---------------------------------------------------------------------------- data access


def _small(**params):
    defaults = dict(kernel=RBFKernel(gamma=0.2), hidden_layer_sizes=(16,), batch_size=64,
                    max_iter=25, n_init=2, device="cpu", random_state=0)
    return NeuralEigenClustering(3, **{**defaults, **params})


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=200, centers=3, n_features=4, random_state=0)
    return X.astype(np.float32), y


def test_numpy_memmap_and_tensor_inputs_agree(blobs, tmp_path):
    X, _ = blobs
    reference = _small().fit(X)
    path = tmp_path / "X.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    readonly = np.memmap(path, dtype=np.float32, mode="r", shape=X.shape)
    tensor = torch.from_numpy(X.copy())
    for data in (readonly, tensor):
        est = _small().fit(data)
        assert_array_equal(est.labels_, reference.labels_)
        np.testing.assert_allclose(est.transform(data), reference.embedding_, rtol=1e-6)
    # A CPU tensor is read in place: validation returns a view, not a copy.
    view = _neural_io.validate_rows(_small(), tensor, reset=True)
    assert np.shares_memory(np.asarray(view), tensor.numpy())


def test_whole_set_batches_compute_the_operator_once(blobs, monkeypatch):
    X, _ = blobs
    calls = []
    original = NeuralEigenClustering._batch_operator

    def counting(self, X_batch, n_samples, context=None):
        calls.append(X_batch.shape[0])
        return original(self, X_batch, n_samples, context)

    monkeypatch.setattr(NeuralEigenClustering, "_batch_operator", counting)
    _small(batch_size=len(X), max_iter=5).fit(X)
    assert calls == [len(X)]
    calls.clear()
    _small(batch_size=50, max_iter=5).fit(X)  # minibatches: one operator per step
    assert calls == [50] * 5


def test_partial_fit_streams_chunks(blobs):
    X, y = blobs
    est = _small(max_iter=None)
    order = np.random.default_rng(0).permutation(len(X))
    for _ in range(4):  # four passes over a stream of three chunks
        for chunk in np.array_split(order, 3):
            est.partial_fit(X[chunk])
    chunk_steps = -(-len(order[: len(X) // 3 + 1]) // 64)  # ceil(chunk / batch_size)
    assert est.n_iter_ == 4 * 3 * chunk_steps
    assert est.n_train_samples_ == 4 * len(X)
    assert len(est.loss_curve_) == est.n_iter_
    score = adjusted_rand_score(y, est.predict(X))
    print(f"\npartial_fit blobs ARI {score:.3f}")
    assert score >= 0.9
    with pytest.raises(ValueError, match="X has 3 features, but NeuralEigenClustering is "
                                         "expecting 4 features"):
        est.partial_fit(np.zeros((10, 3)))


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("X, match", [
    (np.array([[0.0, np.nan], [1, 2], [3, 4]]), "NaN"),
    (np.array([[0.0, np.inf], [1, 2], [3, 4]]), "infinity"),
    (np.empty((0, 3)), "0 sample"),
    (np.arange(10.0), "Expected 2D array, got 1D array"),
    (torch.tensor([[0.0, float("nan")], [1, 2], [3, 4]]), "NaN"),
    (torch.arange(10.0), "Expected 2D array, got 1D array"),
])
@pytest.mark.parametrize("cls", [NeuralEigenClustering, DiscreteNeuralEigenClustering])
def test_fit_rejects_bad_arrays(cls, X, match):
    with pytest.raises(ValueError, match=match):
        cls(2, device="cpu").fit(X)


@pytest.mark.parametrize("cls", [NeuralEigenClustering, DiscreteNeuralEigenClustering])
def test_more_clusters_than_samples(cls):
    X = np.random.default_rng(0).normal(size=(5, 2))
    with pytest.raises(ValueError, match="n_clusters=8 is larger than the number of samples"):
        cls(8, device="cpu").fit(X)


@pytest.fixture(scope="module")
def fitted(blobs):
    return _small().fit(blobs[0])


def test_predict_input_checks(fitted):
    with pytest.raises(ValueError, match="X has 3 features, but NeuralEigenClustering is "
                                         "expecting 4 features"):
        fitted.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        fitted.transform(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict(np.full((2, 4), np.nan))


@pytest.mark.parametrize("cls, method", [
    (NeuralEigenClustering, "predict"), (NeuralEigenClustering, "transform"),
    (DiscreteNeuralEigenClustering, "predict"), (DiscreteNeuralEigenClustering, "transform"),
    (DiscreteNeuralEigenClustering, "predict_proba"),
])
def test_not_fitted(cls, method):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(cls(2), method)(np.zeros((3, 2)))


def test_user_network(blobs):
    X, y = blobs
    # Seed the user's initialisation: it draws from the global torch RNG, which earlier
    # tests leave in an order-dependent state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        good = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(),
                                   torch.nn.Linear(16, 3))
    before = [p.detach().clone() for p in good.parameters()]
    est = _small(network=good, max_iter=150).fit(X)
    assert adjusted_rand_score(y, est.labels_) >= 0.9
    for p, q in zip(before, good.parameters(), strict=True):  # the user's module is copied, not trained
        torch.testing.assert_close(p, q, atol=0, rtol=0)
    wrong_size = torch.nn.Linear(4, 5)
    with pytest.raises(ValueError, match=r"must map a batch of shape \(batch_size, n_features\)"
                                         r" to \(batch_size, 3\) \(3 = n_clusters\); it "
                                         r"returned \(2, 5\)"):
        _small(network=wrong_size).fit(X)
    with pytest.raises(ValueError, match=r"\(3 = n_components\)"):
        _small(network=wrong_size, n_components=3).fit(X)
    wrong_input = torch.nn.Linear(7, 3)
    with pytest.raises(ValueError, match=r"the network failed on a batch of shape \(2, 4\) "
                                         r"\(n_features=4\)"):
        _small(network=wrong_input).fit(X)


@pytest.mark.parametrize("params, match", [
    ({"n_clusters": 0}, "'n_clusters' parameter"),
    ({"batch_size": 1}, "'batch_size' parameter"),
    ({"learning_rate": 0.0}, "'learning_rate' parameter"),
    ({"network": "resnet"}, "'network' parameter"),
    ({"orthogonality_weight": -1.0}, "'orthogonality_weight' parameter"),
    ({"eigenvalue_momentum": 1.0}, "'eigenvalue_momentum' parameter"),
    ({"checkpoint_every": 0}, "'checkpoint_every' parameter"),
    ({"diffusion_steps": 0}, "'diffusion_steps' parameter"),
    ({"fourier_features": -1}, "'fourier_features' parameter"),
    ({"fourier_scale": 0.0}, "'fourier_scale' parameter"),
    ({"kernel": 3}, "'kernel' parameter"),
])
def test_invalid_parameters(params, match):
    with pytest.raises(InvalidParameterError, match=match):
        NeuralEigenClustering(**{"n_clusters": 2, **params}).fit(np.eye(4))


def test_invalid_values_with_clear_messages(blobs):
    X = blobs[0]
    with pytest.raises(ValueError, match="hidden_layer_sizes must be a sequence of positive"):
        _small(hidden_layer_sizes=(8, 0)).fit(X)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            _small(device="cuda").fit(X)
    with pytest.raises(ValueError, match="unknown kernel 'nope'"):
        _small(kernel="nope").fit(X)
