"""The NeuralEF objective (Deng, Shi & Zhu, ICML 2022; Deng & Luo, ICCV 2023) as pure functions."""

from __future__ import annotations

import torch

__all__ = ["diffusion_operator", "eigenvalues_from_diffusion", "minibatch_operator",
           "neuralef_loss", "rayleigh_matrices"]


def minibatch_operator(W: torch.Tensor, n_samples: int) -> torch.Tensor:
    r"""Minibatch estimate G of the normalised affinity M = D^{-1/2} W D^{-1/2} of n points.

    For a batch B of b of the n points, G is scaled so that for any functions ψ, φ with
    ψ ≈ √n u (u a unit vector over the n points) E_B[ψ_Bᵀ G φ_B] ≈ ψᵀMφ / n; in particular
    ``diag(ΨᵀGΨ)`` estimates the eigenvalues of M on the full data, the scale of eigsh's.

    The full degrees D are unknown, so they are estimated inside the batch. For the pair
    (i, j) the estimate of D_i is

    .. math::

        \hat D_i^{(j)} = W_{ii} + W_{ij} + \frac{n-2}{b-2}\sum_{k \in B \setminus \{i,j\}} W_{ik},

    unbiased *given that j is in the batch*: the plain batch degree Σ_{k∈B} W_ik / s
    would count the partner's affinity W_ij with weight 1/s although it is always there,
    which shrinks G_ij for close pairs and makes the estimated eigenvalues of local kernels
    several percent too small. Then, with the pair probability b(b-1)/(n(n-1)),

    .. math::

        G_{ij} = \frac{n-1}{b(b-1)} \frac{W_{ij}}{\sqrt{\hat D_i^{(j)} \hat D_j^{(i)}}},
        \qquad G_{ii} = \frac{1}{b}\frac{W_{ii}}{\hat D_i}.

    When b = n this is exactly M / n. What remains is the (second-order) bias of the
    ratio, which shrinks as the batch holds more of each point's neighbours.

    Parameters
    ----------
    W : torch.Tensor of shape (b, b)
        Symmetric non-negative affinity of the batch (``kernel.batch(X_b)``).
    n_samples : int
        Number n of points the batch is drawn from (≥ b).

    Returns
    -------
    G : torch.Tensor of shape (b, b)
        Symmetric; same dtype and device as ``W``. Points without neighbours get zero rows.

    Examples
    --------
    >>> import torch
    >>> W = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    >>> minibatch_operator(W, n_samples=2)  # b = n: D^{-1/2} W D^{-1/2} / n
    tensor([[0.0000, 0.5000],
            [0.5000, 0.0000]])
    """
    b = W.shape[0]
    if W.ndim != 2 or W.shape[1] != b:
        raise ValueError(f"W must be a square (b, b) affinity, got shape {tuple(W.shape)}")
    if n_samples < b:
        raise ValueError(f"n_samples={n_samples} is smaller than the batch size b={b}")
    self_affinity = torch.diagonal(W)  # (b,)
    others = W.sum(dim=1) - self_affinity  # (b,) affinity to the other batch points
    pair_scale = 1.0 if b == n_samples else (n_samples - 2) / max(b - 2, 1)
    # (b, b): estimate of D_i given that j is in the batch (symmetric roles via transpose)
    degree_pair = self_affinity[:, None] + W + (others[:, None] - W) * pair_scale
    degree_self = self_affinity + others * ((n_samples - 1) / max(b - 1, 1))
    tiny = torch.finfo(W.dtype).tiny
    inv_sqrt = torch.where(degree_pair > 0, degree_pair.clamp_min(tiny).rsqrt(),
                           torch.zeros_like(degree_pair))
    G = W * inv_sqrt * inv_sqrt.T * ((n_samples - 1) / (b * max(b - 1, 1)))
    diagonal = torch.where(degree_self > 0, self_affinity / degree_self.clamp_min(tiny),
                           torch.zeros_like(degree_self)) / b
    return G - torch.diag_embed(torch.diagonal(G)) + torch.diag_embed(diagonal)


def diffusion_operator(G: torch.Tensor, steps: int) -> torch.Tensor:
    r"""The minibatch operator raised to a diffusion time: ``(b G)^steps / b``.

    ``T = b G`` is the Monte-Carlo quadrature of the normalised affinity M on the batch
    (T = M when the batch is the whole data set), so ``T^steps`` is that of M^steps, which has
    the same eigenfunctions and eigenvalues λ_j^steps. Dividing by b again keeps the scale of
    :func:`minibatch_operator`: for unit-second-moment ψ, ψᵀ(result)ψ ≈ λ^steps.

    Why: with local kernels the top eigenvalues crowd against 1 (two moons: 1, 0.99995,
    0.995), so the cluster indicator beats a smooth wrong function by well under 1% of the
    objective and SGD does not find it. After t steps the gap becomes 0.99995^t vs 0.995^t
    (0.995 vs 0.61 at t = 100), while the eigenvectors are unchanged. The eigenvalues below
    λ_K should keep some signal (λ_K^t not ≈ 0), so t is moderate. Eigenvalues of either
    sign enter as λ^t: choose t so that no negative eigenvalue has |λ| > λ_K (normalised
    Gaussian affinities are positive semi-definite, so this only matters for kNN graphs).

    Parameters
    ----------
    G : torch.Tensor of shape (b, b)
        Output of :func:`minibatch_operator`.
    steps : int
        Diffusion time t ≥ 1; 1 returns ``G`` itself.

    Returns
    -------
    torch.Tensor of shape (b, b)
        Symmetric, same dtype and device as ``G``.

    Examples
    --------
    >>> import torch
    >>> G = torch.tensor([[0.5, 0.0], [0.0, 0.25]])   # b = 2: T = diag(1, 0.5)
    >>> diffusion_operator(G, 3)
    tensor([[0.5000, 0.0000],
            [0.0000, 0.0625]])
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if steps == 1:
        return G
    b = G.shape[0]
    # Binary powering: about 2 log2(t) (b, b) products, computed once per minibatch.
    return torch.linalg.matrix_power(G * b, int(steps)) / b


def eigenvalues_from_diffusion(rayleigh: torch.Tensor, steps: int) -> torch.Tensor:
    """Eigenvalue estimates λ = sign(R) |R|^(1/t) from Rayleigh quotients R ≈ λ^t.

    Parameters
    ----------
    rayleigh : torch.Tensor of shape (K,)
        Rayleigh quotients on the diffusion operator (e.g. the EMA of diag(R)).
    steps : int
        Diffusion time t used in training.

    Returns
    -------
    torch.Tensor of shape (K,)

    Examples
    --------
    >>> import torch
    >>> eigenvalues_from_diffusion(torch.tensor([0.25, 1.0]), 2)
    tensor([0.5000, 1.0000])
    """
    if steps == 1:
        return rayleigh
    return torch.sign(rayleigh) * rayleigh.abs().pow(1.0 / steps)


def rayleigh_matrices(psi: torch.Tensor, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``R = ΨᵀGΨ`` and its stop-gradient twin ``R̂ = sg(Ψ)ᵀGΨ``.

    Parameters
    ----------
    psi : torch.Tensor of shape (b, K)
        Outputs Ψ of the K eigenfunctions on a minibatch.
    G : torch.Tensor of shape (b, b)
        The (normalised) kernel on the same minibatch; treated as a constant.

    Returns
    -------
    R : torch.Tensor of shape (K, K)
        Gradient flows into both factors.
    R_hat : torch.Tensor of shape (K, K)
        Gradient flows only into the right factor, so in ``R_hat[i, j]`` only ψ_j moves.
    """
    G_psi = G.detach() @ psi  # (b, K)
    return psi.T @ G_psi, psi.detach().T @ G_psi


def neuralef_loss(psi: torch.Tensor, G: torch.Tensor, orthogonality_weight: float,
                  normalize_penalty: bool = False, *, stop_gradient: bool = True,
                  eps: float = 1e-6, return_rayleigh: bool = False):
    r"""NeuralEF loss of K eigenfunctions on one minibatch.

    With R = ΨᵀGΨ and R̂ = sg(Ψ)ᵀGΨ (sg = stop-gradient),

    .. math::

        L = -\frac{1}{K}\sum_j R_{jj}
            + \beta \frac{1}{K}\sum_{i<j} \hat R_{ij}^2 \quad\text{(Deng \& Luo, 2023)}

    or, with ``normalize_penalty=True``, the original NeuralEF form whose penalty is
    :math:`\hat R_{ij}^2 / \hat R_{ii}`. Minimising L over functions with unit second moment
    makes ψ_j maximise its Rayleigh quotient R_jj while staying G-orthogonal to the earlier
    ψ_1..ψ_{j-1} (the stop-gradient keeps earlier functions from being pushed by later ones),
    so the ψ_j converge to the top eigenfunctions in order and R_jj to their eigenvalues.

    Parameters
    ----------
    psi : torch.Tensor of shape (b, K)
        Outputs on the minibatch, already normalised (see
        :class:`~spectralnet_seg.eigenfunctions.ColumnNormalization`).
    G : torch.Tensor of shape (b, b)
        Kernel on the minibatch. The estimators pass ``D^{-1/2} W D^{-1/2} / b`` so that
        R_jj estimates eigenvalues of the full normalised affinity.
    orthogonality_weight : float
        β ≥ 0. With the normalised penalty, β = 1 is NeuralEF's exact form (β ≥ 1 keeps the
        eigenfunctions the maximiser); Deng & Luo use β ≈ 20 / K with the plain penalty.
    normalize_penalty : bool, default=False
        Divide each penalty term by R̂_ii (clamped below by ``eps``).
    stop_gradient : bool, default=True
        Use R̂ in the penalty, so that it only moves the later function of each pair (the
        eigenfunction form). With False the penalty is Σ_{i<j} R_ij² and pushes both
        functions apart — a symmetric objective whose maximisers span the same subspace
        but are not ordered; the discrete estimator uses it (see
        :class:`~spectralnet_seg.cluster.DiscreteNeuralEigenClustering`).
    eps : float, default=1e-6
        Lower bound on R̂_ii in the normalised penalty.
    return_rayleigh : bool, default=False
        Also return the detached diagonal of R (the eigenvalue estimates).

    Returns
    -------
    loss : torch.Tensor
        Scalar.
    rayleigh : torch.Tensor of shape (K,)
        Only when ``return_rayleigh=True``: ``diag(R)``, detached.

    Examples
    --------
    >>> import torch
    >>> psi = torch.eye(3)[:, :2] * 3 ** 0.5     # two orthogonal columns, unit second moment
    >>> G = torch.eye(3) / 3
    >>> round(float(neuralef_loss(psi, G, orthogonality_weight=1.0)), 6)
    -1.0
    """
    if psi.ndim != 2 or G.ndim != 2 or G.shape != (psi.shape[0], psi.shape[0]):
        raise ValueError(
            f"psi must be (b, K) and G (b, b); got psi {tuple(psi.shape)}, G {tuple(G.shape)}"
        )
    K = psi.shape[1]
    R, R_hat = rayleigh_matrices(psi, G)
    if not stop_gradient:
        R_hat = R
    diag = torch.diagonal(R)
    upper = torch.triu(torch.ones(K, K, dtype=torch.bool, device=psi.device), diagonal=1)
    penalty = R_hat.square()
    if normalize_penalty:
        # Row i of R̂ belongs to the earlier function ψ_i: divide by its Rayleigh quotient.
        penalty = penalty / torch.diagonal(R_hat).detach().clamp_min(eps)[:, None]
    loss = -diag.sum() / K + orthogonality_weight * penalty[upper].sum() / K
    if return_rayleigh:
        return loss, diag.detach()
    return loss
