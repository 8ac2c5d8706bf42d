"""NeuralEigenClustering: learned eigenfunctions agree with eigsh on the same kernel, the
clustering matches the baseline, new points are embedded by a forward pass, inputs of every
kind are read lazily, and bad input gets clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from numpy.testing import assert_array_equal
from sklearn.datasets import make_blobs, make_circles, make_moons
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import InvalidParameterError

from spectralnet_seg.cluster import (
    DiscreteNeuralEigenClustering,
    EigshSpectralClustering,
    NeuralEigenClustering,
    _neural_io,
)
from spectralnet_seg.eigenfunctions import eigenfunction_alignment
from spectralnet_seg.kernels import KNNKernel, RBFKernel
from spectralnet_seg.metrics import normalized_cut

# Issue 10: the estimators' defaults only (n_clusters and random_state), on the default
# kernel (scikit-learn's 10-NN connectivity graph) shared with eigsh.


# The tests of these fixtures form the pytest-xdist group "digits_split": run on one worker,
# they share one fit.
@pytest.fixture(scope="module")
def digits_split(digits):
    X, y = digits  # conftest's session fixture: scikit-learn's digits
    return train_test_split(X.astype(np.float32), y, test_size=0.2, stratify=y, random_state=0)


@pytest.fixture(scope="module")
def digits_eigsh(digits_split):
    return EigshSpectralClustering(10, random_state=0).fit(digits_split[0])


@pytest.fixture(scope="module")
def digits_neural(digits_split):
    return NeuralEigenClustering(10, random_state=0).fit(digits_split[0])


# ---------------------------------------------------------------------------- correctness


@pytest.mark.xdist_group("digits_split")
def test_eigenfunctions_match_eigsh(digits_split, digits_neural, digits_eigsh):
    X_train = digits_split[0]
    report = eigenfunction_alignment(digits_neural, X_train, digits_eigsh)
    print(f"\nmean cosine {report.mean_cosine:.4f}; cosines {np.round(report.cosines, 3)}; "
          f"eigenvalue errors {np.round(report.eigenvalue_relative_errors, 4)}")
    assert report.cosines.shape == (10,)
    assert report.mean_cosine >= 0.95
    # Rayleigh quotients on the training graph bound the eigenvalues from below.
    assert np.all(digits_neural.eigenvalues_ <= digits_eigsh.eigenvalues_ + 1e-9)
    assert report.max_eigenvalue_relative_error <= 0.05
    assert digits_neural.converged_ and digits_neural.sampler_ == "graph"


@pytest.mark.xdist_group("digits_split")
def test_embedding_is_orthogonal_under_the_degree_measure(digits_split, digits_neural):
    # Checked against the graph built independently by the kernel.
    W = KNNKernel().graph(digits_split[0])
    degree = np.asarray(W.sum(axis=1)).ravel()
    E = digits_neural.embedding_
    gram = E.T @ (E * (degree / degree.mean())[:, None])
    np.testing.assert_allclose(gram, np.eye(10), atol=1e-8)
    rayleigh = np.diag(E.T @ (W @ E)) / np.diag(E.T @ (E * degree[:, None]))
    np.testing.assert_allclose(rayleigh, digits_neural.eigenvalues_, rtol=1e-8)


@pytest.mark.xdist_group("digits_split")
def test_digits_clustering_matches_the_baseline(digits_split, digits_neural, digits_eigsh):
    _, _, y_train, _ = digits_split
    neural = normalized_mutual_info_score(y_train, digits_neural.labels_)
    eigsh = normalized_mutual_info_score(y_train, digits_eigsh.labels_)
    print(f"\nNMI neural {neural:.4f}, eigsh {eigsh:.4f}, ratio {neural / eigsh:.3f}")
    assert neural >= 0.97 * eigsh
    assert digits_neural.normalized_cut_ == pytest.approx(
        normalized_cut(KNNKernel().graph(digits_split[0]), digits_neural.labels_))


@pytest.mark.xdist_group("digits_split")
def test_out_of_sample_is_a_forward_pass(digits_split, digits_neural):
    X_train, X_test, _, _ = digits_split
    assert_array_equal(digits_neural.predict(X_train), digits_neural.labels_)
    # Each row is embedded on its own: a row's embedding does not depend on the others.
    np.testing.assert_allclose(digits_neural.transform(X_test[:5]),
                               digits_neural.transform(X_test)[:5], rtol=1e-5, atol=1e-6)


@pytest.mark.xdist_group("digits_split")
def test_out_of_sample_nmi_matches_in_sample(digits_split, digits_neural):
    _, X_test, y_train, y_test = digits_split
    in_sample = normalized_mutual_info_score(y_train, digits_neural.labels_)
    out_of_sample = normalized_mutual_info_score(y_test, digits_neural.predict(X_test))
    print(f"\nNMI in-sample {in_sample:.4f}, out-of-sample {out_of_sample:.4f}")
    assert abs(in_sample - out_of_sample) <= 0.03


@pytest.mark.parametrize("cls", [NeuralEigenClustering, DiscreteNeuralEigenClustering])
@pytest.mark.parametrize("make", [make_moons, make_circles])
def test_non_convex_shapes_with_defaults(cls, make):
    params = {"noise": 0.05, "random_state": 0}
    if make is make_circles:
        params["factor"] = 0.5
    X, y = make(600, **params)
    est = cls(2, random_state=0).fit(X)
    score = adjusted_rand_score(y, est.labels_)
    print(f"\n{cls.__name__} {make.__name__}: ARI {score:.3f}, t = {est.diffusion_steps_}")
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


def test_graph_sampler_builds_one_graph_and_minibatches_build_one_per_step(blobs,
                                                                            monkeypatch):
    X, _ = blobs
    graphs, batches = [], []
    original_graph, original_batch = RBFKernel.graph, RBFKernel.batch
    monkeypatch.setattr(RBFKernel, "graph", lambda self, X, context=None: graphs.append(
        len(X)) or original_graph(self, X, context))
    monkeypatch.setattr(RBFKernel, "batch", lambda self, X, context=None: batches.append(
        len(X)) or original_batch(self, X, context))
    est = _small(max_iter=5).fit(X)
    assert est.sampler_ == "graph" and graphs == [len(X)] and batches == []
    graphs.clear()
    est = _small(sampler="minibatch", batch_size=50, max_iter=5, fourier_features=0).fit(X)
    assert est.sampler_ == "minibatch" and graphs == [] and batches == [50] * 5


def test_partial_fit_streams_chunks(blobs):
    X, y = blobs
    est = _small()
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


def test_partial_fit_caps_neighbours_per_chunk_not_for_the_stream(blobs):
    """A first chunk of 6 rows lowered n_neighbors to 5 for the whole stream, and a later
    chunk of 4 rows (or one of 5 after a fit) failed: "KNNKernel.batch needs 5 neighbours
    per point but there are only 4 points"."""
    X, _ = blobs
    est = NeuralEigenClustering(3, kernel=KNNKernel(10), random_state=0, device="cpu")
    with pytest.warns(UserWarning, match=r"'n_neighbors': 10.*the chunk's rows - 1 = 5"):
        est.partial_fit(X[:6])
    assert est.kernel_.n_neighbors == 5  # what the chunk trained with
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        est.partial_fit(X[6:150])
    assert est.kernel_.n_neighbors == 10  # the stream's own
    with pytest.warns(UserWarning, match="the chunk's rows - 1 = 3"):
        est.partial_fit(X[150:154])
    assert est.kernel.n_neighbors == 10  # the user's kernel is never modified
    fitted = NeuralEigenClustering(3, kernel=KNNKernel(10), max_iter=20, random_state=0,
                                   device="cpu").fit(X[:150])
    with pytest.warns(UserWarning, match="the chunk's rows - 1 = 4"):
        fitted.partial_fit(X[150:155])
    assert np.isfinite(fitted.transform(X)).all()
    # a graph fit's kernel was not bounded by the batch size: the chunk's batches are
    graph_fit = NeuralEigenClustering(3, kernel=KNNKernel(20), sampler="graph", batch_size=16,
                                      max_iter=10, random_state=0, device="cpu").fit(X[:120])
    with pytest.warns(UserWarning, match="batch_size - 1 = 15"):
        graph_fit.partial_fit(X[:50])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_neural_estimators_take_pandas_nullable_and_categorical_columns():
    """pandas' Float64 / Int64 / category columns failed in the dtype check ("Cannot
    interpret 'Float64Dtype()' as a data type"), and a Series with "'Float64DType' object is
    not iterable", where eigsh and scikit-learn validate them."""
    pd = pytest.importorskip("pandas")
    X = np.random.default_rng(0).normal(size=(60, 2))
    frame = pd.DataFrame(X, columns=["a", "b"])
    reference = _small(max_iter=5).fit(frame)
    for columns in (frame.astype("Float64"), frame.astype("float32").astype("Float32")):
        est = _small(max_iter=5).fit(columns)
        assert list(est.feature_names_in_) == ["a", "b"]
        assert_array_equal(est.predict(columns), reference.predict(frame))
    assert _small(max_iter=5).fit((frame * 10).round().astype("Int64")).labels_.shape == (60,)
    with pytest.raises(ValueError, match="Expected a 2-dimensional container"):
        _small(max_iter=5).fit(frame["a"])


def test_graph_pairs_per_step_are_not_capped_by_the_number_of_points(monkeypatch):
    # Pairs are drawn with replacement: on 150 points the default still draws 256 per step
    # (a cap at n, added with the streaming fix, changed iris' and wine's published fits).
    from spectralnet_seg.cluster import _pair_sampler

    drawn = []
    original = _pair_sampler.GraphPairSampler.sample
    monkeypatch.setattr(_pair_sampler.GraphPairSampler, "sample",
                        lambda self, n_pairs, **kw: drawn.append(n_pairs)
                        or original(self, n_pairs, **kw))
    X, _ = make_blobs(n_samples=150, centers=3, random_state=0)
    est = NeuralEigenClustering(3, hidden_layer_sizes=(16,), max_iter=5, device="cpu",
                                random_state=0).fit(X)
    assert est.sampler_ == "graph" and est.batch_size_ == 256
    assert drawn[-5:] == [256] * 5


def test_a_small_first_chunk_does_not_fix_the_batch_size_of_the_stream():
    # batch_size="auto" was capped by the first chunk: after a chunk of 50 rows, chunks of
    # 1000 trained 20 steps of 50-point batch graphs each, for the rest of the stream.
    X, _ = make_blobs(n_samples=1050, centers=3, n_features=4, random_state=0)
    est = NeuralEigenClustering(3, hidden_layer_sizes=(16,), device="cpu", random_state=0)
    est.partial_fit(X[:50])
    assert est.batch_size_ == 1024  # the "auto" rule, max(1024, 4 K), as documented
    assert est.n_iter_ == 1  # one batch of the chunk's 50 rows
    est.partial_fit(X[50:])
    assert est.n_iter_ == 1 + 1  # ceil(1000 / min(1024, 1000)) = 1, not ceil(1000 / 50) = 20


@pytest.mark.parametrize("Estimator", [NeuralEigenClustering, DiscreteNeuralEigenClustering])
def test_partial_fit_after_fit_trains_at_the_current_learning_rate(blobs, Estimator):
    # fit anneals its rate to 0; the stored Adam state used to carry that 0 into the stream,
    # which then changed no weight while n_iter_ grew.
    X, _ = blobs
    est = Estimator(3, hidden_layer_sizes=(16,), batch_size=64, max_iter=20, tol=0.0,
                    random_state=0).fit(X)
    before = [w.detach().clone() for w in est.network_.parameters()]
    est.partial_fit(X)
    changed = [not torch.equal(a, b)
               for a, b in zip(before, est.network_.parameters(), strict=True)]
    assert all(changed)
    assert est._optimizer_state["param_groups"][0]["lr"] == est.learning_rate


def test_an_interrupted_partial_fit_leaves_the_model_as_it_was(blobs, monkeypatch):
    # The stream trained network_ itself: an interrupt left new weights beside old labels.
    from spectralnet_seg.cluster._neural_training import TrainingLoopMixin
    X, _ = blobs
    est = _small(max_iter=10).fit(X)
    embedding, weights = est.transform(X), [w.detach().clone() for w in est.network_.parameters()]
    update, steps = TrainingLoopMixin._update_statistics, []

    def interrupted(self, run, *args):
        steps.append(run.step)
        if len(steps) == 3:  # after two optimiser steps
            raise KeyboardInterrupt
        return update(self, run, *args)

    monkeypatch.setattr(TrainingLoopMixin, "_update_statistics", interrupted)
    with pytest.raises(KeyboardInterrupt):
        est.partial_fit(X)
    monkeypatch.undo()
    assert all(torch.equal(a, b) for a, b in zip(weights, est.network_.parameters(), strict=True))
    assert_array_equal(est.transform(X), embedding)
    assert est.n_iter_ == 10 and est.sampler_ == "graph"


def test_partial_fit_after_a_graph_fit_and_changed_outputs_are_refused(blobs):
    X, _ = blobs
    W = KNNKernel(n_neighbors=8).graph(X)
    with pytest.raises(ValueError, match="fitted with graph="):
        _small(max_iter=5).fit(X, graph=W).partial_fit(X)
    est = _small(max_iter=5).fit(X).set_params(n_clusters=4)
    for method in (est.transform, est.predict, est.partial_fit):
        with pytest.raises(ValueError, match="fitted with 3 outputs, but its n_clusters is "
                                             "now 4"):
            method(X)


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
    ({"sampler": "exact"}, "'sampler' parameter"),
    ({"tol": -1.0}, "'tol' parameter"),
    ({"n_iter_no_change": 0}, "'n_iter_no_change' parameter"),
    ({"batch_size": "big"}, "'batch_size' parameter"),
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


# ---------------------------------------------------------------------------- graphs


@pytest.mark.parametrize("cls", [NeuralEigenClustering, DiscreteNeuralEigenClustering])
def test_users_own_graph_is_learned_from_the_features(cls, blobs):
    X, y = blobs
    W = KNNKernel(n_neighbors=8).graph(X)  # any symmetric affinity, here a kNN graph
    est = cls(3, max_iter=300, random_state=0, **({"fine_tune_iter": 50}
                                                   if cls is DiscreteNeuralEigenClustering
                                                   else {})).fit(X, graph=W)
    assert est.sampler_ == "graph" and est.kernel_ is None
    assert adjusted_rand_score(y, est.labels_) >= 0.9
    assert est.normalized_cut_ == pytest.approx(normalized_cut(W, est.labels_))
    assert_array_equal(est.predict(X), est.labels_)  # the network needs no graph to predict
    with pytest.raises(ValueError, match=r"graph is 5 x 5 but X has 200 rows"):
        cls(3).fit(X, graph=np.eye(5))
    with pytest.raises(ValueError, match="graph must be symmetric"):
        cls(3).fit(X, graph=sp.random(200, 200, density=0.05, random_state=0))


@pytest.mark.parametrize("cls", [NeuralEigenClustering, DiscreteNeuralEigenClustering])
def test_precomputed_kernel_is_refused_with_the_way_out(cls, blobs):
    with pytest.raises(ValueError, match=r"kernel='precomputed' is not supported.*"
                                         r"fit\(X, graph=W\)"):
        cls(3, kernel="precomputed").fit(blobs[0])


@pytest.mark.parametrize("sampler", ["graph", "minibatch"])
def test_a_graph_without_edges_is_a_clear_error(blobs, sampler):
    # gamma = 1e9: every affinity underflows to 0 (the loss would be 0 at every step).
    with pytest.raises(ValueError, match="no edge"):
        _small(kernel=RBFKernel(gamma=1e9), sampler=sampler).fit(blobs[0])


def test_more_components_than_clusters_warns_that_it_cannot_converge():
    X, _ = make_blobs(n_samples=240, centers=6, cluster_std=0.05, center_box=(-50, 50),
                      random_state=0)
    with pytest.warns(ConvergenceWarning, match="6 connected components but only 3 outputs"):
        NeuralEigenClustering(3, max_iter=20, random_state=0).fit(X)


def test_max_iter_before_the_plateau_warns(blobs):
    with pytest.warns(ConvergenceWarning, match="stopped at max_iter=20"):
        est = NeuralEigenClustering(3, max_iter=20, tol=0.0, random_state=0).fit(blobs[0])
    assert not est.converged_ and est.n_iter_ == 20


@pytest.mark.xdist_group("digits_defaults")
def test_same_labels_with_one_and_two_threads(tmp_path, digits_neural_defaults,
                                              digits_discrete_defaults):
    # Issue 10: the same random_state gives the same clustering whatever the thread count
    # (floating-point order may differ, so NMI >= 0.99 rather than bit identity). This
    # process's fits (one thread under pytest-xdist) against a subprocess on another count.
    threads = 2 if torch.get_num_threads() == 1 else 1
    script = tmp_path / "fit.py"
    script.write_text(
        "import sys, numpy as np, torch\n"
        "from sklearn.datasets import load_digits\n"
        "from spectralnet_seg import DiscreteNeuralEigenClustering, NeuralEigenClustering\n"
        "torch.set_num_threads(int(sys.argv[1]))\n"
        "X, _ = load_digits(return_X_y=True)\n"
        "a = NeuralEigenClustering(10, random_state=0).fit(X).labels_\n"
        "b = DiscreteNeuralEigenClustering(10, random_state=0).fit(X).labels_\n"
        "np.save(sys.argv[2], np.stack([a, b]))\n")
    out = tmp_path / "labels.npy"
    # Passive waiting: an OpenMP thread that spins while its sibling waits for a core held
    # by another xdist worker made this run 4x slower. It changes waiting, not arithmetic.
    subprocess.run([sys.executable, str(script), str(threads), str(out)], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": str(threads),
                        "OMP_WAIT_POLICY": "PASSIVE"})
    ours = [digits_neural_defaults.labels_, digits_discrete_defaults.labels_]
    for one, two in zip(ours, np.load(out), strict=True):
        assert normalized_mutual_info_score(one, two) >= 0.99


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_isolated_points_are_labelled_by_their_network_outputs():
    """Isolated points have u = psi * sqrt(d) = 0 in the labelling space: all of them took
    the cluster nearest the origin (labels_ disagreed with predict on the training points)."""
    from sklearn.neighbors import kneighbors_graph

    from spectralnet_seg.cluster import DisconnectedGraphWarning

    X, y = make_blobs(200, centers=3, random_state=0)
    A = kneighbors_graph(X, 8, include_self=False)
    W = (0.5 * (A + A.T)).tolil()
    isolated = [0, 1, 2]
    for i in isolated:
        W[i, :] = 0
        W[:, i] = 0
    W = W.tocsr()
    W.eliminate_zeros()
    with pytest.warns(DisconnectedGraphWarning, match="3 of 200 points have no edge"):
        est = NeuralEigenClustering(3, max_iter=200, random_state=0).fit(X, graph=W)
    assert_array_equal(est.labels_, est.predict(X))
    linked = np.setdiff1d(np.arange(200), isolated)
    for i in isolated:  # each takes its own blob's cluster (they lie in different blobs)
        blob = est.labels_[linked][y[linked] == y[i]]
        assert est.labels_[i] == np.bincount(blob).argmax()
    assert len(set(y[isolated])) > 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_too_few_linked_points_are_labelled_as_predict_labels_them():
    """With fewer linked points than clusters every point was clustered on its degree-scaled
    row: the isolated ones (degree 0) all became 0 and took one cluster, which predict
    (the network's outputs) did not give them."""
    X, _ = make_blobs(10, centers=3, random_state=0)
    W = np.zeros((10, 10))
    W[0, 1] = W[1, 0] = 1.0  # 8 of 10 points have no edge
    from spectralnet_seg.cluster import DisconnectedGraphWarning

    with pytest.warns(DisconnectedGraphWarning):
        est = NeuralEigenClustering(3, max_iter=30, random_state=0).fit(X, graph=W)
    assert_array_equal(est.labels_, est.predict(X))
    assert np.isfinite(est.normalized_cut_)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_disconnected_graph_is_reported_as_by_eigsh():
    """With 2..K components the neural estimators said nothing where eigsh warns; on a
    40-cluster graph of 38 pieces the fit's normalised cut was 3-6x eigsh's."""
    from spectralnet_seg.cluster import DisconnectedGraphWarning, EigshSpectralClustering

    X, _ = make_blobs(120, centers=[[0, 0], [100, 100]], random_state=0)
    with pytest.warns(DisconnectedGraphWarning, match="2 connected components"):
        W = EigshSpectralClustering(3, random_state=0).fit(X).affinity_matrix_
    with pytest.warns(DisconnectedGraphWarning, match="2 connected components"):
        NeuralEigenClustering(3, max_iter=20, random_state=0).fit(X, graph=W)
    with warnings.catch_warnings():  # as many components as clusters: they are the answer
        warnings.simplefilter("error", DisconnectedGraphWarning)
        NeuralEigenClustering(2, max_iter=20, random_state=0).fit(X, graph=W)


def test_more_components_than_samples_is_refused_as_by_eigsh():
    """60 of 100 outputs were silently zero columns."""
    from spectralnet_seg.cluster import EigshSpectralClustering

    X, _ = make_blobs(40, centers=3, random_state=0)
    message = "n_components=100 is larger than the number of samples n_samples=40"
    for est in (NeuralEigenClustering(3, n_components=100, max_iter=5),
                EigshSpectralClustering(3, n_components=100)):
        with pytest.raises(ValueError, match=message):
            est.fit(X)
    with pytest.raises(ValueError, match=message):
        NeuralEigenClustering(3, n_components=100).partial_fit(X)


def test_a_network_narrower_than_k_says_its_last_estimates_are_empty():
    # Four hidden units (plus the output bias) span at most 5 directions: eigenvalues_ ended
    # in three silent zeros, with zero embedding columns.
    X, _ = make_blobs(300, centers=8, random_state=0)
    est = NeuralEigenClustering(8, hidden_layer_sizes=(4,), max_iter=30, random_state=0,
                                device="cpu")
    with pytest.warns(UserWarning, match=r"outputs span only (\d) directions") as caught:
        est.fit(X)
    spanned = int(next(w for w in caught if "span only" in str(w.message)).message.args[0]
                  .split("span only ")[1].split()[0])
    with torch.no_grad():
        raw = est.network_(torch.as_tensor(X, dtype=torch.float32)).double().numpy()
    assert spanned == np.linalg.matrix_rank(raw, tol=1e-5 * np.abs(raw).max()) <= 5
    assert np.count_nonzero(est.eigenvalues_ == 0) == 8 - spanned
