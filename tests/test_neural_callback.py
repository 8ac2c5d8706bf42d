"""The neural estimators' ``callback``: called at every convergence check and at the end of
training with a lazily finished snapshot, which is the estimator as ``fit`` would leave it at
that step; the fit itself does not depend on it; it is a plain scikit-learn parameter."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning

from spectralnet_seg.cluster import DiscreteNeuralEigenClustering, NeuralEigenClustering

ESTIMATORS = {
    "neural": lambda **kw: NeuralEigenClustering(
        3, hidden_layer_sizes=(16,), max_iter=60, n_init=1, random_state=0, **kw),
    "discrete": lambda **kw: DiscreteNeuralEigenClustering(
        3, hidden_layer_sizes=(16,), max_iter=60, n_init=1, fine_tune_iter=10,
        random_state=0, **kw),
}


@pytest.fixture(scope="module")
def blobs():
    X, _ = make_blobs(n_samples=200, centers=3, n_features=4, random_state=0)
    return X.astype(np.float32)


class Recorder:
    """Keeps every call; finishes the snapshot only when asked to."""

    def __init__(self, finish: bool = True):
        self.finish = finish
        self.steps: list[int] = []
        self.snapshots: list = []
        self.fitted: list = []

    def __call__(self, snapshot, n_iter):
        self.steps.append(n_iter)
        self.snapshots.append(snapshot)
        if self.finish:
            self.fitted.append(snapshot())


@pytest.fixture(scope="module", params=list(ESTIMATORS))
def fits(request, blobs):
    """(estimator fitted with a recording callback, the recorder, the same fit without)."""
    recorder = Recorder()
    with quiet():
        with_callback = ESTIMATORS[request.param](callback=recorder).fit(blobs)
        without = ESTIMATORS[request.param]().fit(blobs)
    return with_callback, recorder, without


@contextmanager
def quiet():
    """Short runs stop at max_iter before their plateau: that warning is not the subject."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def test_callback_is_called_at_the_checks_then_at_the_end(fits):
    est, recorder, _ = fits
    checks = [entry["step"] for entry in est.convergence_history_]
    assert len(checks) >= 2
    # Every check in order, then the step training ended at (never itself a check: the
    # learning rate is annealed after the last one).
    assert recorder.steps[:-1] == checks
    assert recorder.steps[-1] > checks[-1]
    assert recorder.steps == sorted(set(recorder.steps))
    eigen_steps = est.n_iter_ - (est.fine_tune_iter if isinstance(
        est, DiscreteNeuralEigenClustering) else 0)
    assert recorder.steps[-1] == eigen_steps


def test_callback_snapshot_at_the_end_is_the_fitted_estimator(fits):
    est, recorder, _ = fits
    final = recorder.fitted[-1]
    assert final is not est and final.network_ is not est.network_
    assert_array_equal(final.labels_, est.labels_)
    assert_allclose(final.embedding_, est.embedding_)
    assert_allclose(final.eigenvalues_, est.eigenvalues_)
    assert final.n_iter_ == est.n_iter_
    assert_allclose(final.predict(np.zeros((2, 4), np.float32)),
                    est.predict(np.zeros((2, 4), np.float32)))


def test_callback_snapshots_hold_the_state_of_their_step(fits, blobs):
    est, recorder, _ = fits
    extra = est.n_iter_ - recorder.steps[-1]  # the discrete fine-tuning
    for n_iter, snapshot, fitted in zip(recorder.steps, recorder.snapshots, recorder.fitted,
                                        strict=True):
        assert snapshot() is fitted  # finished once, then cached
        assert fitted.n_iter_ == n_iter + extra
        assert len(fitted.loss_curve_) == n_iter + extra
        assert fitted.labels_.shape == (blobs.shape[0],)
        assert fitted.callback_time_ == 0.0
    # Snapshots of different steps have different networks (training went on in between).
    first, last = recorder.fitted[0], recorder.fitted[-1]
    assert not np.allclose(first.transform(blobs), last.transform(blobs))


def test_fit_is_the_same_with_and_without_a_callback(fits):
    est, _, without = fits
    assert_array_equal(est.labels_, without.labels_)
    assert_allclose(est.embedding_, without.embedding_)
    assert est.loss_curve_ == without.loss_curve_
    assert est.callback_time_ > 0.0 and without.callback_time_ == 0.0


def test_a_snapshot_finished_after_fit_still_holds_its_step(blobs):
    recorder = Recorder(finish=False)
    with quiet():
        est = ESTIMATORS["neural"](callback=recorder).fit(blobs)
    late = [snapshot() for snapshot in recorder.snapshots]
    assert [s.n_iter_ for s in late] == recorder.steps
    assert_array_equal(late[-1].labels_, est.labels_)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_callback_is_a_parameter_kept_by_clone(name):
    def callback(snapshot, n_iter):
        pass

    est = ESTIMATORS[name](callback=callback)
    assert est.get_params()["callback"] is callback
    assert clone(est).callback is callback
    assert ESTIMATORS[name]().get_params()["callback"] is None


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_callback_errors_propagate(name, blobs):
    def callback(snapshot, n_iter):
        raise KeyError(f"stop at {n_iter}")

    with pytest.raises(KeyError, match="stop at"):
        ESTIMATORS[name](callback=callback).fit(blobs)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_a_fit_stopped_by_its_callback_leaves_the_estimator_as_it_was(name, blobs):
    """A raising callback left a first fit half-fitted (predict: AttributeError network_)
    and a refit on other data with the new n_features_in_ but the old network."""
    from sklearn.exceptions import NotFittedError

    def stop(snapshot, n_iter):
        raise KeyError("stop")

    est = ESTIMATORS[name](callback=stop)
    with pytest.raises(KeyError):
        est.fit(blobs)
    with pytest.raises(NotFittedError):
        est.predict(blobs)
    est.set_params(callback=None).fit(blobs)
    labels = est.predict(blobs)
    with pytest.raises(KeyError):
        est.set_params(callback=stop).fit(blobs[:, :3])
    assert est.n_features_in_ == blobs.shape[1]
    np.testing.assert_array_equal(est.predict(blobs), labels)


def test_callback_must_be_callable(blobs):
    with pytest.raises(ValueError, match="callback"):
        ESTIMATORS["neural"](callback="print").fit(blobs)


def test_callback_is_not_part_of_the_checkpoint_identity(blobs, tmp_path):
    recorder = Recorder(finish=False)
    with quiet():
        first = ESTIMATORS["neural"](checkpoint_dir=tmp_path).fit(blobs)
        resumed = ESTIMATORS["neural"](checkpoint_dir=tmp_path, callback=recorder).fit(blobs)
    assert len(list(tmp_path.glob("*.pt"))) == 1  # the same checkpoint file
    assert_array_equal(resumed.labels_, first.labels_)
    # Resumed from a finished run: no training left, one call for the final state.
    assert recorder.steps == [first.n_iter_]
