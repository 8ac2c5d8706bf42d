"""The pure pieces of the neural estimators: loss, minibatch operator, normalisation,
discretisation, networks and the alignment diagnostic (no training here)."""

from __future__ import annotations

import copy
import itertools
import pickle

import numpy as np
import pytest
import torch

from spectralnet_seg.eigenfunctions import (
    ColumnNormalization,
    MLPEigenfunctions,
    RandomFourierFeatures,
    TransformerEigenfunctions,
    cosine_temperature,
    diffusion_operator,
    eigenfunction_alignment,
    eigenvalues_from_diffusion,
    gumbel_softmax,
    minibatch_operator,
    neuralef_loss,
    orthogonality_error,
    rayleigh_matrices,
)
from spectralnet_seg.kernels import degree_normalize_dense

# ---------------------------------------------------------------------------- loss


def _random_G(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.rand(b, b, generator=g, dtype=torch.float64)
    W = (A + A.T) / 2
    W.fill_diagonal_(0.0)
    return degree_normalize_dense(W) / b


def test_loss_value_matches_the_formula():
    torch.manual_seed(0)
    # Positive outputs and affinities: R_ii > 0, so the normalised penalty is not clamped.
    psi, G = torch.rand(6, 3, dtype=torch.float64), _random_G(6)
    R = psi.T @ G @ psi
    iu = torch.triu_indices(3, 3, offset=1)
    plain = -torch.diagonal(R).sum() / 3 + 0.7 * R[iu[0], iu[1]].square().sum() / 3
    normalised = -torch.diagonal(R).sum() / 3 + (
        R[iu[0], iu[1]].square() / torch.diagonal(R)[iu[0]]).sum() / 3
    torch.testing.assert_close(neuralef_loss(psi, G, 0.7), plain)
    torch.testing.assert_close(neuralef_loss(psi, G, 1.0, normalize_penalty=True), normalised)
    loss, rayleigh = neuralef_loss(psi, G, 0.7, return_rayleigh=True)
    torch.testing.assert_close(rayleigh, torch.diagonal(R))
    assert not rayleigh.requires_grad


def test_stop_gradient_earlier_functions_ignore_the_later_ones():
    """ψ_1's gradient is that of -R_11 / K alone: the penalty only moves later functions."""
    torch.manual_seed(0)
    G = _random_G(8)
    psi = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    neuralef_loss(psi, G, orthogonality_weight=5.0, normalize_penalty=True).backward()
    expected = -(2.0 / 3) * (G @ psi.detach()[:, 0])
    torch.testing.assert_close(psi.grad[:, 0], expected)
    R, R_hat = rayleigh_matrices(psi, G)
    torch.testing.assert_close(R.detach(), R_hat.detach())
    assert R.requires_grad and R_hat.requires_grad


def test_symmetric_penalty_moves_both_functions():
    torch.manual_seed(0)
    G = _random_G(8)
    psi = torch.rand(8, 2, dtype=torch.float64, requires_grad=True)
    neuralef_loss(psi, G, orthogonality_weight=3.0, stop_gradient=False).backward()
    R = psi.detach().T @ G @ psi.detach()
    # d/dψ_1 of -R_11/K + β R_12²/K, with R_12 = ψ_1ᵀGψ_2 (K = 2)
    expected = -(G @ psi.detach()[:, 0]) + 3.0 * R[0, 1] * (G @ psi.detach()[:, 1])
    torch.testing.assert_close(psi.grad[:, 0], expected)


def test_true_eigenvectors_are_a_stationary_point():
    """Scaled top eigenvectors zero the gradient of the loss within the unit-norm sphere."""
    G = _random_G(10)
    values, vectors = torch.linalg.eigh(G)
    psi = (vectors[:, -3:].flip(1) * 10**0.5).requires_grad_(True)
    neuralef_loss(psi, G, 1.0, normalize_penalty=True).backward()
    # The gradient of each column is parallel to the column (a change of norm only).
    for j in range(3):
        g, p = psi.grad[:, j], psi.detach()[:, j]
        residual = g - (g @ p) / (p @ p) * p
        assert residual.norm() < 1e-10 * max(1.0, g.norm())


def test_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"psi must be \(b, K\) and G \(b, b\)"):
        neuralef_loss(torch.ones(4, 2), torch.ones(3, 3), 1.0)


# ---------------------------------------------------------------------------- operator


def test_minibatch_operator_is_exact_on_the_full_batch():
    G = _random_G(7)
    W = G * 7  # any symmetric affinity
    torch.testing.assert_close(minibatch_operator(W, 7), degree_normalize_dense(W) / 7)


def test_minibatch_operator_is_nearly_unbiased_for_quadratic_forms():
    """Averaged over all batches of size b, uᵀGu ≈ uᵀMu/n (exact enumeration, n=9, b=6)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, 2))
    W = torch.from_numpy(np.exp(-((X[:, None] - X[None]) ** 2).sum(-1)))
    W.fill_diagonal_(0.0)
    M = degree_normalize_dense(W)
    values, vectors = torch.linalg.eigh(M)
    psi = vectors[:, -3:] * 3.0  # unit second moment
    total = torch.zeros(3, dtype=torch.float64)
    batches = list(itertools.combinations(range(9), 6))
    for idx in batches:
        idx = list(idx)
        G = minibatch_operator(W[idx][:, idx], 9)
        total += torch.diagonal(psi[idx].T @ G @ psi[idx])
    estimate = total / len(batches)
    np.testing.assert_allclose(estimate, values[-3:], rtol=0.1)


def test_minibatch_operator_errors():
    with pytest.raises(ValueError, match="square"):
        minibatch_operator(torch.ones(3, 2), 5)
    with pytest.raises(ValueError, match="smaller than the batch size"):
        minibatch_operator(torch.ones(3, 3), 2)


def test_diffusion_operator_is_the_power_of_the_full_operator():
    """On the whole set, (nG)^t / n = M^t / n: same eigenvectors, eigenvalues λ^t."""
    W = _random_G(8) * 8
    M = degree_normalize_dense(W)
    G = minibatch_operator(W, 8)
    assert diffusion_operator(G, 1) is G
    powered = diffusion_operator(G, 5)
    torch.testing.assert_close(powered, torch.linalg.matrix_power(M, 5) / 8)
    values, vectors = torch.linalg.eigh(M)
    psi = vectors * 8 ** 0.5  # unit second moment
    rayleigh = torch.diagonal(psi.T @ powered @ psi)
    torch.testing.assert_close(rayleigh, values ** 5)
    # Back on the scale of t = 1, signs included (odd t keeps negative eigenvalues negative).
    torch.testing.assert_close(eigenvalues_from_diffusion(rayleigh, 5), values)


@pytest.mark.parametrize("steps", [0, -2, 1.5])
def test_diffusion_operator_errors(steps):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        diffusion_operator(torch.eye(3), steps)


# ---------------------------------------------------------------------------- normalisation


def test_column_normalization_train_and_eval():
    norm = ColumnNormalization(2, momentum=0.5)
    a = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    out = norm(a)
    torch.testing.assert_close(out.square().mean(0), torch.ones(2))
    torch.testing.assert_close(norm.running_second_moment, a.square().mean(0))
    b = 2 * a
    norm(b)  # running = 0.5 old + 0.5 new
    torch.testing.assert_close(norm.running_second_moment, 2.5 * a.square().mean(0))
    norm.eval()
    single = norm(a[:1])  # a fixed per-column scaling: rows independent
    torch.testing.assert_close(single, a[:1] / (2.5 * a.square().mean(0)).sqrt())
    norm.set_statistics(torch.tensor([4.0, 1.0]))
    torch.testing.assert_close(norm(a), a / torch.tensor([2.0, 1.0]))
    with pytest.raises(ValueError, match="momentum"):
        ColumnNormalization(2, momentum=1.0)


# ---------------------------------------------------------------------------- discretisation


def test_gumbel_softmax_is_a_seeded_soft_sample():
    logits = torch.tensor([[2.0, 0.0, -1.0]]).repeat(2000, 1)
    p = gumbel_softmax(logits, 1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(p.sum(1), torch.ones(2000))
    assert (p > 0).all() and (p < 1).all()  # soft, not one-hot
    # argmax of z + Gumbel noise is a sample of softmax(z).
    freq = torch.bincount(p.argmax(1), minlength=3) / 2000
    torch.testing.assert_close(freq, torch.softmax(logits[0], 0), atol=0.03, rtol=0)
    again = gumbel_softmax(logits, 1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(p, again)
    cold = gumbel_softmax(logits, 0.05, generator=torch.Generator().manual_seed(0))
    assert cold.max(1).values.mean() > 0.95  # low temperature: nearly one-hot
    with pytest.raises(ValueError, match="temperature must be > 0"):
        gumbel_softmax(logits, 0.0)


def test_cosine_temperature_schedule():
    values = [cosine_temperature(s, 100) for s in range(101)]
    assert values[0] == 1.0 and values[-1] == pytest.approx(0.3)
    assert values[50] == pytest.approx(0.65)
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert cosine_temperature(500, 100) == pytest.approx(0.3)  # clipped after the end
    assert cosine_temperature(3, 0, 2.0, 0.5) == 0.5


# ---------------------------------------------------------------------------- networks


def test_mlp_head_has_orthonormal_rows_and_pickles():
    net = MLPEigenfunctions(5, 3, hidden=(16, 8))
    weight = net.head.weight
    torch.testing.assert_close(weight @ weight.T, torch.eye(3), atol=1e-5, rtol=0)
    net.eval()
    x = torch.randn(4, 5)
    for other in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        torch.testing.assert_close(other(x), net(x), atol=0, rtol=0)
        assert not other.training
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLPEigenfunctions(5, 3, activation="swish")
    with pytest.raises(ValueError, match="hidden layer sizes must be >= 1"):
        MLPEigenfunctions(5, 3, hidden=(0,))


def test_fourier_features_are_fixed_and_pickle():
    torch.manual_seed(0)
    net = MLPEigenfunctions(2, 3, hidden=(8,), fourier_features=16, fourier_scale=2.0).eval()
    rff = net.trunk[0]
    assert isinstance(rff, RandomFourierFeatures)
    assert not any(p is rff.frequencies for p in net.parameters())  # a buffer, never trained
    assert rff.frequencies.shape == (2, 16)
    x = torch.randn(5, 2)
    features = rff(x)
    torch.testing.assert_close(features[:, :16] ** 2 + features[:, 16:] ** 2, torch.ones(5, 16))
    torch.testing.assert_close(pickle.loads(pickle.dumps(net))(x), net(x), atol=0, rtol=0)
    with pytest.raises(ValueError, match="n_frequencies must be >= 1 and scale > 0"):
        RandomFourierFeatures(2, 4, scale=0.0)
    with pytest.raises(ValueError, match="fourier_features must be >= 0"):
        MLPEigenfunctions(2, 3, fourier_features=-1)


def test_transformer_shapes_and_pickle():
    net = TransformerEigenfunctions(6, 4, width=8, n_heads=2).eval()
    tokens = torch.randn(2, 5, 6)
    assert net(tokens).shape == (2, 5, 4)
    assert net(tokens[:, 0]).shape == (2, 4)
    torch.testing.assert_close(pickle.loads(pickle.dumps(net))(tokens), net(tokens))
    with pytest.raises(ValueError, match="expected input of shape"):
        net(torch.randn(6))
    with pytest.raises(ValueError, match="divisible by n_heads"):
        TransformerEigenfunctions(6, 4, width=9, n_heads=2)


# ---------------------------------------------------------------------------- diagnostics


def test_alignment_is_invariant_to_rotation_and_scale():
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(50, 4)))
    rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    report = eigenfunction_alignment(basis @ rotation * 7.0, None, basis)
    np.testing.assert_allclose(report.cosines, 1.0, atol=1e-10)
    assert report.mean_cosine == pytest.approx(1.0)
    assert report.eigenvalue_relative_errors is None
    assert report.max_eigenvalue_relative_error is None
    # One shared direction out of two: cosines (1, 0).
    other, _ = np.linalg.qr(np.column_stack([basis[:, 0], rng.normal(size=50)]))
    other[:, 1] -= basis @ (basis.T @ other[:, 1])
    half = eigenfunction_alignment(other, None, basis[:, :2])
    np.testing.assert_allclose(half.cosines, [1.0, 0.0], atol=1e-10)


def test_alignment_compares_eigenvalues_of_an_estimator():
    class Fitted:
        eigenvalues_ = np.array([1.0, 0.55, 0.2])

        def transform(self, X):
            return X

    basis = np.eye(6)[:, :3]
    report = eigenfunction_alignment(Fitted(), basis, basis,
                                     reference_eigenvalues=[1.0, 0.5, 0.25, 0.1])
    np.testing.assert_allclose(report.eigenvalue_relative_errors, [0.0, 0.1, 0.2])
    assert report.max_eigenvalue_relative_error == pytest.approx(0.2)


def test_alignment_errors():
    with pytest.raises(ValueError, match="has 5 rows but the reference has 6"):
        eigenfunction_alignment(np.ones((5, 2)), None, np.ones((6, 2)))
    with pytest.raises(ValueError, match="must be 2-D"):
        eigenfunction_alignment(np.ones(5), None, np.ones((5, 2)))


def test_orthogonality_error():
    assert orthogonality_error(np.eye(4)[:, :3] * 5) == 0.0
    assert orthogonality_error(np.ones((4, 2))) == pytest.approx(1.0)
    assert orthogonality_error(np.ones((4, 1))) == 0.0
    with pytest.raises(ValueError, match="must be 2-D"):
        orthogonality_error(np.ones(3))
