"""DiscreteNeuralEigenClustering: Gumbel-softmax training with a cosine temperature,
argmax prediction, calibrated probabilities, and clusters that map to classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from sklearn.datasets import load_digits, make_blobs
from sklearn.metrics import normalized_mutual_info_score

from spectralnet_seg import metrics
from spectralnet_seg.cluster import (
    DiscreteNeuralEigenClustering,
    EigshSpectralClustering,
    _discrete,
    _neural_base,
)
from spectralnet_seg.eigenfunctions import cosine_temperature
from spectralnet_seg.kernels import RBFKernel

# K = 20 > 10 classes (the many-to-one setting of the paper) and a weak orthogonality weight:
# on digits the default 20 / K lets a few outputs take every point early in training.
DIGITS_KERNEL = dict(gamma=1.0)
DIGITS_FIT = dict(hidden_layer_sizes=(128,), batch_size=512, max_iter=400,
                  learning_rate=3e-3, orthogonality_weight=0.02, device="cpu", random_state=0)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=300, centers=3, n_features=4, cluster_std=1.0, random_state=0)
    return X.astype(np.float32), y


def _small(n_clusters=3, **params):
    return DiscreteNeuralEigenClustering(
        n_clusters, **{"kernel": RBFKernel(gamma=0.1), "hidden_layer_sizes": (32,),
                       "batch_size": 100, "max_iter": 150, "learning_rate": 1e-2,
                       "device": "cpu", "random_state": 0, **params})


@pytest.fixture(scope="module")
def fitted(blobs):
    return _small().fit(blobs[0])


def test_training_uses_soft_gumbel_samples_with_a_cosine_temperature(blobs, monkeypatch):
    temperatures, samples, betas = [], [], []
    original_sample, original_loss = _discrete.gumbel_softmax, _neural_base.neuralef_loss

    def recording_sample(logits, temperature, *, generator=None):
        assert generator is not None  # seeded noise, global RNG untouched
        temperatures.append(temperature)
        out = original_sample(logits, temperature, generator=generator)
        samples.append(out.detach())
        return out

    def recording_loss(psi, G, orthogonality_weight, *args, **kwargs):
        assert kwargs["stop_gradient"] is False  # clusters are unordered: symmetric penalty
        betas.append(orthogonality_weight)
        return original_loss(psi, G, orthogonality_weight, *args, **kwargs)

    monkeypatch.setattr(_discrete, "gumbel_softmax", recording_sample)
    monkeypatch.setattr(_neural_base, "neuralef_loss", recording_loss)
    _small(n_clusters=4, max_iter=20).fit(blobs[0])
    assert temperatures == [cosine_temperature(s, 20, 1.0, 0.3) for s in range(20)]
    assert temperatures[0] == 1.0 and temperatures[-1] == pytest.approx(0.3, abs=0.01)
    p = torch.cat(samples)
    torch.testing.assert_close(p.sum(1), torch.ones(len(p)))
    assert ((samples[0] > 0) & (samples[0] < 1)).all()  # soft relaxation at tau = 1
    assert (p.max(1).values < 0.999).float().mean() > 0.2  # still soft at the end
    assert betas == [0.1] * 20  # default orthogonality weight: min(20 / n_clusters, 0.1)
    temperatures.clear()
    _small(n_clusters=4, max_iter=5, temperature_start=2.0, temperature_end=0.5,
           orthogonality_weight=0.7).fit(blobs[0])
    assert temperatures[0] == 2.0 and betas[-1] == 0.7


def test_predict_is_argmax_and_proba_uses_the_final_temperature(blobs, fitted):
    X, y = blobs
    logits = fitted.transform(X)
    assert_array_equal(fitted.predict(X), logits.argmax(1))
    assert_array_equal(fitted.labels_, logits.argmax(1))
    proba = fitted.predict_proba(X)
    expected = np.exp(logits / 0.3 - (logits / 0.3).max(1, keepdims=True))
    np.testing.assert_allclose(proba, expected / expected.sum(1, keepdims=True), rtol=1e-6)
    assert_array_equal(proba.argmax(1), fitted.predict(X))
    assert normalized_mutual_info_score(y, fitted.labels_) >= 0.9
    assert fitted.n_active_clusters_ == 3
    assert_array_equal(fitted.cluster_sizes_, np.bincount(fitted.labels_, minlength=3))
    assert fitted.eigenvalues_.shape == (3,)


def test_more_clusters_than_classes_map_back_by_majority_vote(blobs):
    X, y = blobs
    est = _small(n_clusters=8).fit(X)
    assert est.n_active_clusters_ >= 3
    mapping = metrics.match_clusters(y, est.labels_, "majority", n_classes=3, n_clusters=8)
    accuracy = np.mean(metrics.apply_mapping(est.labels_, mapping) == y)
    print(f"\nK=8 on 3 blobs: {est.n_active_clusters_} active clusters, "
          f"majority-vote accuracy {accuracy:.3f}")
    assert accuracy >= 0.95


@pytest.fixture(scope="module")
def digits_scores():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    est = DiscreteNeuralEigenClustering(20, kernel=RBFKernel(**DIGITS_KERNEL),
                                        **DIGITS_FIT).fit(X)
    eigsh = EigshSpectralClustering(20, kernel=RBFKernel(**DIGITS_KERNEL),
                                    random_state=0).fit(X)
    scores = (normalized_mutual_info_score(y, est.labels_),
              normalized_mutual_info_score(y, eigsh.labels_))
    print(f"\ndiscrete digits NMI {scores[0]:.4f} ({est.n_active_clusters_} active clusters), "
          f"eigsh + k-means on the same kernel {scores[1]:.4f}")
    return scores


def test_digits_nmi_matches_the_baseline(digits_scores):
    discrete, eigsh = digits_scores
    assert discrete >= 0.95 * eigsh


# NMI >= 0.80 (issue 3) needs a kernel with a higher ceiling than the dense RBF above (eigsh
# + k-means: 0.80 there, 0.89 on the binary 10-NN graph). A kNN graph is only right on whole
# batches (n = 1797: its operator is computed once), and its top eigenvalues crowd against 1,
# so training uses diffusion_steps=10 (the operator's 10th power; same eigenvectors, wider
# gaps). Measured NMI over random_state 0/1/2: 0.820 / 0.819 / 0.823 (t = 1: 0.801 at
# random_state=0; t = 30: 0.828 / 0.793 with beta = 0.02).
DIGITS_KNN_FIT = dict(kernel="knn", hidden_layer_sizes=(128,), diffusion_steps=10,
                      batch_size=2048, max_iter=400, learning_rate=3e-3,
                      orthogonality_weight=0.2, device="cpu", random_state=0)


def test_default_orthogonality_weight_keeps_every_cluster_on_digits():
    # The paper's uncapped 20 / K (= 2 at K = 10) left 7 of 10 clusters and NMI 0.48 here;
    # the capped default (0.1) gave 0.859 / 0.831 at random_state 0 / 1 (1 thread).
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    params = {**DIGITS_KNN_FIT, "hidden_layer_sizes": (256,), "max_iter": 500}
    del params["orthogonality_weight"]
    est = DiscreteNeuralEigenClustering(10, **params).fit(X)
    assert est._orthogonality_weight() == 0.1
    assert DiscreteNeuralEigenClustering(400)._default_orthogonality_weight() == 20 / 400
    assert est.n_active_clusters_ == 10
    assert normalized_mutual_info_score(y, est.labels_) >= 0.78


def test_digits_nmi():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    est = DiscreteNeuralEigenClustering(20, **DIGITS_KNN_FIT).fit(X)
    score = normalized_mutual_info_score(y, est.labels_)
    print(f"\ndiscrete digits NMI on the 10-NN graph {score:.4f} "
          f"({est.n_active_clusters_} active clusters)")
    assert score >= 0.80
