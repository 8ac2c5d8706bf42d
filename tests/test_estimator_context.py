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
    graphs, batches = [], []
    original_graph, original_batch = SpatialColorKernel.graph, SpatialColorKernel.batch
    monkeypatch.setattr(SpatialColorKernel, "graph", lambda self, X, context=None: (
        graphs.append(context), original_graph(self, X, context))[1])
    monkeypatch.setattr(SpatialColorKernel, "batch", lambda self, X, context=None: (
        batches.append(context), original_batch(self, X, context))[1])
    extra = {"fine_tune_iter": 5} if cls is DiscreteNeuralEigenClustering else {}
    # The global graph: the pixel kernel gets the context of all 72 tokens, once.
    est = cls(2, kernel=_kernel(), hidden_layer_sizes=(16,), max_iter=5, device="cpu",
              random_state=0, **extra).fit(X, context=ctx)
    assert est.sampler_ == "graph" and len(graphs) == 1 and graphs[0] is ctx and batches == []
    assert est.predict(X).shape == side.shape  # inference needs no context
    graphs.clear()
    # Minibatch graphs: each minibatch's pixel kernel gets the context of exactly its rows.
    cls(2, kernel=_kernel(), sampler="minibatch", hidden_layer_sizes=(16,), batch_size=24,
        max_iter=5, fourier_features=0, device="cpu", random_state=0, **extra).fit(
        X, context=ctx)
    steps = 5 + extra.get("fine_tune_iter", 0)
    assert graphs == [] and len(batches) == steps
    assert all(isinstance(c, TokenContext) and len(c) == 24 for c in batches)


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
