"""Checkpoints and reproducibility of the neural estimators: an interrupted fit resumes from
its latest checkpoint and ends exactly where an uninterrupted run with the same seed ends."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from sklearn.datasets import make_blobs

from spectralnet_seg.cluster import DiscreteNeuralEigenClustering, NeuralEigenClustering
from spectralnet_seg.cluster._neural_base import BaseNeuralEigenClustering
from spectralnet_seg.kernels import RBFKernel

MAX_ITER, EVERY, CRASH_AT, FINE_TUNE = 40, 10, 27, 10


@pytest.fixture(scope="module")
def X():
    return make_blobs(n_samples=150, centers=3, n_features=4, random_state=0)[0]


def _make(cls, **params):
    defaults = dict(kernel=RBFKernel(gamma=0.2), hidden_layer_sizes=(16,), batch_size=64,
                    max_iter=MAX_ITER, learning_rate=5e-3, device="cpu", random_state=0,
                    checkpoint_every=EVERY)
    if cls is NeuralEigenClustering:
        defaults["n_init"] = 2
    else:
        defaults["fine_tune_iter"] = FINE_TUNE
    return cls(3, **{**defaults, **params})


def _assert_same_fit(a, b):
    for (name, p), q in zip(a.network_.state_dict().items(),
                            b.network_.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, atol=0, rtol=0, msg=name)
    assert a.loss_curve_ == b.loss_curve_
    np.testing.assert_array_equal(a.eigenvalues_, b.eigenvalues_)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    assert_array_equal(a.labels_, b.labels_)
    assert a.n_iter_ == b.n_iter_


@pytest.mark.parametrize("cls", [NeuralEigenClustering, DiscreteNeuralEigenClustering])
def test_interrupted_fit_resumes_to_the_same_result(cls, X, tmp_path, monkeypatch):
    reference = _make(cls).fit(X)  # uninterrupted, no checkpoints

    original_step = BaseNeuralEigenClustering._train_step
    steps_done = []

    def crashing_step(self, run, X, objective):
        if run.step == CRASH_AT:
            raise KeyboardInterrupt("simulated crash")
        steps_done.append(run.step)
        return original_step(self, run, X, objective)

    monkeypatch.setattr(BaseNeuralEigenClustering, "_train_step", crashing_step)
    est = _make(cls, checkpoint_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        est.fit(X)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    state = torch.load(files[0], weights_only=True)
    assert state["step"] == 20  # the latest multiple of checkpoint_every before the crash
    assert {"network", "normalizer", "optimizer", "schedule", "generator", "permutation",
            "eigenvalues", "diffusion_steps"} <= set(state)
    assert state["schedule"]["history"][-1]["step"] == 20  # the plateau test's record
    assert state["optimizer"]["state"]  # Adam moments are saved

    monkeypatch.setattr(BaseNeuralEigenClustering, "_train_step", original_step)
    steps_done.clear()
    counted = []
    monkeypatch.setattr(BaseNeuralEigenClustering, "_train_step",
                        lambda self, run, X, objective: counted.append(run.step)
                        or original_step(self, run, X, objective))
    resumed = _make(cls, checkpoint_dir=tmp_path).fit(X)
    # Resumed, not restarted (the discrete estimator's fine-tuning phase follows, unsaved).
    fine_tune = list(range(FINE_TUNE)) if cls is DiscreteNeuralEigenClustering else []
    assert counted == list(range(20, MAX_ITER)) + fine_tune
    _assert_same_fit(resumed, reference)
    assert torch.load(files[0], weights_only=True)["step"] == MAX_ITER  # final state saved


def test_checkpoints_of_other_runs_are_not_reused(X, tmp_path):
    _make(NeuralEigenClustering, checkpoint_dir=tmp_path).fit(X)
    _make(NeuralEigenClustering, checkpoint_dir=tmp_path, learning_rate=1e-3).fit(X)
    _make(NeuralEigenClustering, checkpoint_dir=tmp_path).fit(X[:100])
    assert len(list(tmp_path.glob("neuraleigenclustering-*.pt"))) == 3


@pytest.mark.parametrize("cls", [NeuralEigenClustering, DiscreteNeuralEigenClustering])
def test_random_state_makes_cpu_fits_reproducible(cls, X):
    state = torch.random.get_rng_state()
    a, b = _make(cls).fit(X), _make(cls).fit(X)
    _assert_same_fit(a, b)
    assert torch.equal(torch.random.get_rng_state(), state)  # global torch RNG untouched
    c = _make(cls, random_state=1).fit(X)
    assert c.loss_curve_ != a.loss_curve_


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_runs_that_differ_only_in_weights_context_or_long_kernels_get_their_own_checkpoints(
        X, tmp_path):
    """A checkpoint was found by the graph's edges (not its weights), the network's and the
    kernel's repr (which scikit-learn elides past 700 characters) and not the token context,
    so such runs resumed another run's finished model and trained 0 steps."""
    import scipy.sparse as sp
    from sklearn.neighbors import kneighbors_graph

    from spectralnet_seg.cluster._checkpoints import checkpoint_path
    from spectralnet_seg.kernels import KNNKernel, SumKernel, TokenContext

    def path(est, W=None, context=None):
        est.sampler_ = "graph"
        return checkpoint_path(tmp_path, "x", est._fingerprint(X, W, context))

    binary = sp.csr_matrix(kneighbors_graph(X, 5, include_self=False))
    binary = ((binary + binary.T) > 0).astype(float).tocsr()
    weighted = binary.copy()
    weighted.data = np.random.default_rng(0).uniform(0.5, 1.0, weighted.nnz)
    est = _make(NeuralEigenClustering)
    assert path(est, binary) != path(est, weighted)
    rng = np.random.default_rng(0)
    contexts = [TokenContext(rng.random((150, 3)), np.zeros((150, 2)), np.zeros(150, int))
                for _ in range(2)]
    assert path(est, binary, contexts[0]) != path(est, binary, contexts[1])
    networks = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        networks.append(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
                                            torch.nn.Linear(8, 3)))
    assert repr(networks[0]) == repr(networks[1])
    assert path(_make(NeuralEigenClustering, network=networks[0])) != \
        path(_make(NeuralEigenClustering, network=networks[1]))
    long = [SumKernel([KNNKernel(k, metric="cosine") for k in range(5, 45)]) for _ in range(2)]
    long[1].kernels[20].n_neighbors = 99
    assert repr(long[0]) == repr(long[1])  # elided: "..."
    assert path(_make(NeuralEigenClustering, kernel=long[0])) != \
        path(_make(NeuralEigenClustering, kernel=long[1]))
    assert path(est, binary, contexts[0]) == path(_make(NeuralEigenClustering), binary,
                                                  contexts[0])  # the same run: the same file


def test_a_resumed_fit_shows_where_it_resumed(X, tmp_path, monkeypatch, capsys):
    """The progress bar of a resumed fit counted from 0 and did not say it resumed."""
    original_step = BaseNeuralEigenClustering._train_step

    def crashing_step(self, run, X, objective):
        if run.step == CRASH_AT:
            raise KeyboardInterrupt("simulated crash")
        return original_step(self, run, X, objective)

    monkeypatch.setattr(BaseNeuralEigenClustering, "_train_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        _make(NeuralEigenClustering, checkpoint_dir=tmp_path).fit(X)
    monkeypatch.setattr(BaseNeuralEigenClustering, "_train_step", original_step)
    capsys.readouterr()
    _make(NeuralEigenClustering, checkpoint_dir=tmp_path, verbose=True).fit(X)
    err = capsys.readouterr().err
    assert "training (resumed at step 20)" in err and f"20/{MAX_ITER}" in err
