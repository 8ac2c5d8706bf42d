"""The estimators hand the token context to kernels that need it (the paper's pixel graph)."""

from __future__ import annotations

import numpy as np
import pytest

from spectralnet_seg import (
    DiscreteNeuralEigenClustering,
    EigshSpectralClustering,
    NeuralEigenClustering,
)
from spectralnet_seg.kernels import SpatialColorKernel, TokenContext, paper_kernel


@pytest.fixture(scope="module")
def tokens():
    """Two 6x6 'images' whose halves differ in features and colour."""
    rng = np.random.default_rng(0)
    h = w = 6
    n_images = 2
    side = np.tile(np.repeat([0, 1], w // 2), h)  # left / right half of each image
    side = np.tile(side, n_images)
    X = rng.normal(scale=0.1, size=(side.size, 5)).astype(np.float32)
    X[:, 0] += 3 * side
    X[:, 1] += 1.0
    colors = np.where(side[:, None] == 1, [0.9, 0.1, 0.1], [0.1, 0.1, 0.9])
    yy, xx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    positions = np.tile(np.stack([yy.ravel(), xx.ravel()], axis=1), (n_images, 1))
    image_ids = np.repeat(np.arange(n_images), h * w)
    return X, side, TokenContext(colors, positions, image_ids)


def _kernel():
    return paper_kernel(n_neighbors=8)


def test_eigsh_uses_the_context_in_fit_and_predict(tokens):
    X, side, ctx = tokens
    est = EigshSpectralClustering(2, kernel=_kernel(), random_state=0).fit(X, context=ctx)
    assert abs(np.corrcoef(est.labels_, side)[0, 1]) > 0.99
    np.testing.assert_array_equal(est.predict(X, context=ctx), est.labels_)
    assert est.fit_transform(X, context=ctx).shape == (X.shape[0], 2)


@pytest.mark.parametrize("cls", [NeuralEigenClustering, DiscreteNeuralEigenClustering])
def test_neural_estimators_use_the_context_in_training(cls, tokens, monkeypatch):
    X, side, ctx = tokens
    seen = []
    original = SpatialColorKernel.batch

    def recording_batch(self, X_batch, context=None):
        seen.append(context)
        return original(self, X_batch, context)

    monkeypatch.setattr(SpatialColorKernel, "batch", recording_batch)
    est = cls(2, kernel=_kernel(), hidden_layer_sizes=(16,), batch_size=24, max_iter=5,
              device="cpu", random_state=0).fit(X, context=ctx)
    # Each minibatch's pixel kernel got the context of exactly its 24 rows.
    assert len(seen) == 5
    assert all(isinstance(c, TokenContext) and len(c) == 24 for c in seen)
    assert est.predict(X).shape == side.shape  # inference needs no context


@pytest.mark.parametrize("cls", [EigshSpectralClustering, NeuralEigenClustering])
def test_missing_or_mismatched_context_is_a_clear_error(cls, tokens):
    X, _, ctx = tokens
    est = cls(2, kernel=_kernel(), random_state=0)
    if cls is NeuralEigenClustering:
        est.set_params(max_iter=2, device="cpu")
    with pytest.raises(ValueError, match="needs the token context"):
        est.fit(X)
    with pytest.raises(ValueError, match="describes 36 tokens but X has 72 rows"):
        est.fit(X, context=ctx[np.arange(36)])
    with pytest.raises(TypeError, match="expects a TokenContext"):
        est.fit(X, context=np.zeros((72, 3)))
