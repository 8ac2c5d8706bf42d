"""The pure pieces of the neural estimators: loss, graph terms and pair sampling,
Rayleigh–Ritz, schedule, normalisation,
discretisation, networks and the alignment diagnostic (no training here)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from spectralnet_seg.cluster._convergence import PlateauSchedule, diffusion_steps_for
from spectralnet_seg.cluster._pair_sampler import GraphPairSampler
from spectralnet_seg.cluster._spectral_embedding import rayleigh_ritz
from spectralnet_seg.eigenfunctions import (
    ColumnNormalization,
    MLPEigenfunctions,
    RandomFourierFeatures,
    TransformerEigenfunctions,
    cosine_temperature,
    diffusion_eigenvalues,
    eigenfunction_alignment,
    eigenvalues_from_diffusion,
    graph_rayleigh_matrices,
    gumbel_softmax,
    neuralef_loss,
    orthogonality_error,
    pair_rayleigh_matrices,
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


# ---------------------------------------------------------------------------- graph terms


def _small_graph(n=7, seed=0):
    """A dense symmetric affinity, and its random-walk eigenpairs by numpy (the reference)."""
    rng = np.random.default_rng(seed)
    W = rng.random((n, n))
    W = (W + W.T) / 2
    np.fill_diagonal(W, 0.0)
    d = W.sum(1)
    values, u = np.linalg.eigh(W / np.sqrt(np.outer(d, d)))
    f = u / np.sqrt(d)[:, None] * np.sqrt(d.sum())  # E_pi[f^2] = 1 with pi = d / vol
    return W, values[::-1].copy(), np.ascontiguousarray(f[:, ::-1])


@pytest.mark.parametrize("steps", [1, 4])
def test_graph_rayleigh_matrices_are_the_diffused_rayleigh_quotients(steps):
    W, values, f = _small_graph()
    R, R_hat = graph_rayleigh_matrices(torch.from_numpy(f), torch.from_numpy(W), steps)
    expected = np.diag(values * ((1 + values) / 2) ** (steps - 1))
    np.testing.assert_allclose(R.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(R_hat.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(diffusion_eigenvalues(values, steps), np.diag(expected))


def test_eigenvalues_from_diffusion_inverts_the_diffusion():
    lam = np.array([1.0, 0.999, 0.97, 0.6, 0.2])
    for steps in (1, 2, 7, 32):
        np.testing.assert_allclose(
            eigenvalues_from_diffusion(diffusion_eigenvalues(lam, steps), steps), lam,
            atol=1e-9)
    assert eigenvalues_from_diffusion(torch.tensor([-0.3]), 5)[0] == 0.0


@pytest.mark.parametrize("steps", [1, 3])
def test_pair_sampler_draws_the_diffused_edge_distribution(steps):
    W, _, _ = _small_graph(6, seed=1)
    W[W < 0.4] = 0.0  # a sparse graph with unequal weights
    n, d = len(W), W.sum(1)
    P = W / d[:, None]
    lazy = np.linalg.matrix_power((np.eye(n) + P) / 2, steps - 1)
    expected = (W @ lazy) / d.sum()  # pi_a [P ((I + P) / 2)^(t-1)]_ab
    a, b = GraphPairSampler(sp.csr_matrix(W)).sample(
        200_000, steps=steps, generator=torch.Generator().manual_seed(0))
    counts = np.zeros((n, n))
    np.add.at(counts, (a.numpy(), b.numpy()), 1.0)
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=4e-3)
    np.testing.assert_allclose(expected, expected.T, atol=1e-12)  # reversible: symmetric


def test_pair_rayleigh_estimate_is_unbiased():
    W, values, f = _small_graph(6, seed=2)
    a, b = GraphPairSampler(sp.csr_matrix(W)).sample(
        400_000, steps=2, generator=torch.Generator().manual_seed(1))
    psi = torch.from_numpy(f)
    R, R_hat = pair_rayleigh_matrices(psi[a], psi[b])
    np.testing.assert_allclose(R.numpy(), np.diag(diffusion_eigenvalues(values, 2)),
                               atol=0.02)
    torch.testing.assert_close(R, R_hat)
    with pytest.raises(ValueError, match=r"psi_a and psi_b must both be \(B, K\)"):
        pair_rayleigh_matrices(psi[:3], psi[:4])


def test_pair_sampler_refuses_a_graph_without_edges():
    with pytest.raises(ValueError, match="no edges"):
        GraphPairSampler(sp.csr_matrix((4, 4)))


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
def test_pair_sampler_refuses_weights_that_are_no_distribution(bad):
    """Edges are drawn by weight: a negative or NaN weight used to corrupt the cumulative
    sums, and pairs came out without an error."""
    W = np.ones((3, 3)) - np.eye(3)
    W[0, 1] = W[1, 0] = bad
    with pytest.raises(ValueError, match="finite and non-negative"):
        GraphPairSampler(sp.csr_matrix(W))
    with pytest.raises(ValueError, match="must be square"):
        GraphPairSampler(sp.csr_matrix(np.ones((2, 3))))


def test_rayleigh_ritz_recovers_eigenpairs_from_any_basis_of_their_span():
    W, values, f = _small_graph(9, seed=3)
    basis = f[:, :3] @ np.random.default_rng(0).normal(size=(3, 3))  # mixed and rescaled
    ritz, rotation = rayleigh_ritz(sp.csr_matrix(W), basis)
    np.testing.assert_allclose(ritz, values[:3], atol=1e-10)
    recovered = basis @ rotation
    d = W.sum(1)
    np.testing.assert_allclose(recovered.T @ (recovered * d[:, None]), np.eye(3), atol=1e-10)
    for j in range(3):  # each Ritz vector is an eigenfunction, up to sign
        cosine = abs(recovered[:, j] @ (f[:, j] * d)) / np.sqrt(d.sum())
        assert cosine == pytest.approx(1.0, abs=1e-10)
    # Any other basis: Ritz values bound the top eigenvalues from below.
    other = np.random.default_rng(1).normal(size=(9, 3))
    assert np.all(rayleigh_ritz(sp.csr_matrix(W), other)[0] <= values[:3] + 1e-12)
    # A rank-deficient basis of negative eigenfunctions (a path graph is bipartite, with
    # eigenvalues -1 and -1/2): the missing direction is 0 and the values stay decreasing
    # (the zero was appended after -1).
    path = sp.diags([1.0, 1.0, 1.0], 1, shape=(4, 4))
    path = (path + path.T).toarray()
    d = path.sum(1)
    exact, u = np.linalg.eigh(path / np.sqrt(np.outer(d, d)))
    psi = u[:, :2] / np.sqrt(d)[:, None]
    ritz, rotation = rayleigh_ritz(sp.csr_matrix(path), np.column_stack([psi, psi[:, 0]]))
    np.testing.assert_allclose(ritz, [0.0, exact[1], exact[0]], atol=1e-12)
    assert np.all(rotation[:, 0] == 0) and np.all(np.diff(ritz) <= 0)


def test_diffusion_time_and_plateau_schedule():
    # t with lambda ((1 + lambda) / 2)^(t - 1) ~ 1/2, by hand: 0.9 -> 1 + ln(5/9) / ln(0.95).
    assert diffusion_steps_for(0.9) == round(1 + np.log(0.5 / 0.9) / np.log(0.95))
    assert diffusion_steps_for(0.3) == 1 and diffusion_steps_for(1.0) == 32
    schedule = PlateauSchedule(max_iter=1000, tol=0.1, n_iter_no_change=2, check_every=10)
    for step, mean in [(10, 0.5), (20, 0.8), (30, 0.81), (40, 0.815)]:
        assert schedule.learning_rate_factor(step) == 1.0
        schedule.update(step, np.array([mean]), 1)
    # 0.81 and 0.815 are within tol x (1 - 0.8) = 0.02 of the best: a plateau at step 40.
    assert schedule.converged and schedule.anneal_start == 40
    assert schedule.anneal_length == 10  # max(check_every, 40 / 4)
    assert schedule.learning_rate_factor(45) == pytest.approx(0.5)
    assert not schedule.is_done(49) and schedule.is_done(50)
    forced = PlateauSchedule(max_iter=100, tol=0.0, n_iter_no_change=99, check_every=10)
    for step in range(10, 90, 10):
        forced.update(step, np.array([step / 100]), 1)
    assert not forced.converged and forced.anneal_start == 80 and forced.is_done(100)


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


def test_column_normalization_refuses_batches_it_cannot_estimate_from():
    """An empty batch set the running second moments to NaN (every later output NaN); a 1-D
    batch or the wrong width broadcast into a wrong scaling."""
    norm = ColumnNormalization(2)
    for bad in (torch.zeros(0, 2), torch.ones(2), torch.ones(4, 3)):
        with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
            norm(bad)
    with pytest.raises(ValueError, match=r"weights must have shape \(3,\)"):
        norm(torch.ones(3, 2), weights=torch.ones(2) / 2)
    assert torch.equal(norm.running_second_moment, torch.ones(2))  # untouched
    assert int(norm.num_batches_tracked) == 0
    norm.eval()  # evaluation maps rows independently: any leading shape
    assert norm(torch.ones(5, 4, 2)).shape == (5, 4, 2)


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
    rff = net.fourier
    assert isinstance(rff, RandomFourierFeatures)
    assert net.trunk[0].in_features == 2 + 32  # the inputs are kept beside the features
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


def test_input_standardisation_makes_the_network_scale_free():
    # A network standardised on data x and one standardised on 1e20 x (offset and scale
    # scaled alike) give identical outputs: the estimators fit them on the data.
    X = torch.randn(6, 3)
    offset, scale = X.mean(0), float((X - X.mean(0)).square().sum(1).mean().sqrt())
    torch.manual_seed(0)
    net = MLPEigenfunctions(3, 2, hidden=(8,), input_offset=offset, input_scale=scale)
    big = copy.deepcopy(net)
    big.standardize.offset.mul_(1e20)
    big.standardize.scale.mul_(1e20)
    torch.testing.assert_close(big(X * 1e20), net(X), rtol=1e-5, atol=1e-6)
    cosine = MLPEigenfunctions(3, 2, hidden=(8,), normalize_rows=True)
    torch.testing.assert_close(cosine(X * 7.0), cosine(X))  # the norm of a row is ignored


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
    # Eigenfunctions psi = u / sqrt(d) of a graph with uneven degrees: D-orthogonal only.
    rng = np.random.default_rng(0)
    A = rng.random((30, 30)) * (rng.random((30, 30)) < 0.3)
    W = A + A.T
    W[:5, :5] += 20.0  # a dense corner: degrees differ by an order of magnitude
    np.fill_diagonal(W, 0.0)
    d = W.sum(axis=1)
    _, u = np.linalg.eigh(W / np.sqrt(np.outer(d, d)))
    psi = u[:, -4:] / np.sqrt(d)[:, None]
    assert orthogonality_error(psi) > 0.1
    assert orthogonality_error(psi, weights=d) < 1e-10
    with pytest.raises(ValueError, match="weights must be 30 finite non-negative"):
        orthogonality_error(psi, weights=-d)


def test_diffusion_time_must_be_a_positive_integer():
    # steps=0 returned 0.333 for 0.5 and steps=-1 returned 0.172, both silently.
    from spectralnet_seg.eigenfunctions import diffusion_eigenvalues, eigenvalues_from_diffusion
    assert eigenvalues_from_diffusion([0.28125], np.int64(3)).round(6).tolist() == [0.5]
    for steps in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="diffusion time"):
            eigenvalues_from_diffusion([0.5], steps)
        with pytest.raises(ValueError, match="diffusion time"):
            diffusion_eigenvalues([0.5], steps)


def test_alignment_counts_a_collapsed_eigenfunction_as_orthogonal():
    """scipy's subspace_angles returns one angle per direction of the smaller span: a
    repeated or dead estimate reported cosines [1, 1] and mean 1.0 for 3 eigenfunctions."""
    U = np.linalg.qr(np.random.default_rng(0).normal(size=(50, 3)))[0]
    for collapsed in (U[:, [0, 1, 0]], np.column_stack([U[:, :2], np.zeros(50)])):
        report = eigenfunction_alignment(collapsed, None, U)
        np.testing.assert_allclose(report.cosines, [1.0, 1.0, 0.0], atol=1e-8)
        assert report.mean_cosine == pytest.approx(2 / 3)


def test_diffusion_inversion_keeps_nan_and_accepts_mixed_precision():
    """NaN became eigenvalue 0 for t >= 2 (t = 1 kept it); a float64 affinity beside float32
    outputs failed inside matmul ("expected m1 and m2 to have the same dtype")."""
    out = eigenvalues_from_diffusion([np.nan, 0.5], 3)
    assert np.isnan(out[0]) and out[1] == pytest.approx(
        eigenvalues_from_diffusion([0.5], 3)[0])
    psi = torch.randn(6, 2)
    W = torch.rand(6, 6, dtype=torch.float64)
    W = W + W.T
    R, _ = graph_rayleigh_matrices(psi, W)
    expected, _ = graph_rayleigh_matrices(psi, W.float())
    torch.testing.assert_close(R, expected)
    R, _ = rayleigh_matrices(psi, W)
    torch.testing.assert_close(R, psi.T @ W.float() @ psi)
