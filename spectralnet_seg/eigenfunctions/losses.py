"""The NeuralEF objective (Deng, Shi & Zhu, ICML 2022; Deng & Luo, ICCV 2023) as pure functions.

The estimators learn the top eigenfunctions of the random-walk operator ``P = D^{-1} W`` of a
symmetric affinity ``W`` with degrees ``d``: functions f with ``W f = λ D f``. They are the
eigenvectors ``u`` of the normalised affinity ``D^{-1/2} W D^{-1/2}`` divided by ``√d`` — the
embedding that scikit-learn's ``SpectralClustering`` clusters — and, unlike ``u``, they are
functions of a point alone, so a network can output them for new points without knowing
their degree.

With the degree measure π_i = d_i / vol (vol = Σ d), the Rayleigh quotients of f are

.. math::

    R_{jk} = \\frac{f_j^\\top W f_k}{\\mathrm{vol}}
           = \\mathbb{E}_{(a, b) \\sim W / \\mathrm{vol}}[f_j(a) f_k(b)],
    \\qquad \\mathbb{E}_{i \\sim \\pi}[f_j(i)^2] = 1,

an expectation over edges drawn with probability proportional to their weight, whose
endpoints are π-distributed. Both are estimated without forming W
([`pair_rayleigh_matrices`][pair_rayleigh_matrices]), or exactly on a minibatch's own affinity
([`graph_rayleigh_matrices`][graph_rayleigh_matrices]). Training on the diffusion ``W P^{t-1}``
(lazy steps
``(I + P) / 2``) keeps the eigenfunctions and turns λ into
μ = λ ((1 + λ) / 2)^{t-1} ([`diffusion_eigenvalues`][diffusion_eigenvalues]), which widens the gaps
between
eigenvalues that crowd against 1.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["diffusion_eigenvalues", "eigenvalues_from_diffusion", "graph_rayleigh_matrices",
           "neuralef_loss", "neuralef_objective", "pair_rayleigh_matrices",
           "rayleigh_matrices"]


def diffusion_eigenvalues(eigenvalues, steps: int):
    """μ = λ ((1 + λ) / 2)^(t - 1): eigenvalues of one random-walk step then t - 1 lazy ones.

    Parameters
    ----------
    eigenvalues : array-like of shape (K,)
        Eigenvalues λ of the random-walk operator, in [-1, 1].
    steps : int
        Diffusion time t ≥ 1.

    Returns
    -------
    ndarray of shape (K,)

    Examples
    --------
    >>> diffusion_eigenvalues([1.0, 0.5], 3)
    array([1.     , 0.28125])
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return lam * ((1.0 + lam) / 2.0) ** (_check_steps(steps) - 1)


def _check_steps(steps) -> int:
    """A diffusion time t ≥ 1 (0 or -1 used to give silently wrong eigenvalues)."""
    from .._utils import is_integer

    if not is_integer(steps) or steps < 1:
        raise ValueError(f"steps (the diffusion time t) must be an integer >= 1, got "
                         f"{steps!r}.")
    return int(steps)


def eigenvalues_from_diffusion(rayleigh, steps: int):
    """Invert [`diffusion_eigenvalues`][diffusion_eigenvalues]: λ from Rayleigh quotients μ of the
    t-step diffusion.

    μ(λ) is increasing on [0, 1], so λ is found by bisection; μ ≤ 0 maps to 0 (an eigenvalue
    of the walk that the diffusion cannot tell from 0).

    Parameters
    ----------
    rayleigh : array-like or torch.Tensor of shape (K,)
        Rayleigh quotients μ on the diffusion operator.
    steps : int
        Diffusion time t used in training.

    Returns
    -------
    ndarray of shape (K,), float64

    Examples
    --------
    >>> eigenvalues_from_diffusion([1.0, 0.28125], 3).round(6)
    array([1. , 0.5])
    """
    steps = _check_steps(steps)
    if isinstance(rayleigh, torch.Tensor):
        rayleigh = rayleigh.detach().cpu().double().numpy()
    mu = np.clip(np.asarray(rayleigh, dtype=np.float64), 0.0, 1.0)
    if steps == 1:
        return mu
    low, high = np.zeros_like(mu), np.ones_like(mu)
    for _ in range(60):  # 2^-60: below float64 resolution of [0, 1]
        mid = 0.5 * (low + high)
        below = diffusion_eigenvalues(mid, steps) < mu
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    # NaN (an estimate that failed) stays NaN, as with steps=1, instead of reading as 0.
    return np.where(mu > 0, 0.5 * (low + high), np.where(np.isnan(mu), np.nan, 0.0))


def pair_rayleigh_matrices(psi_a: torch.Tensor, psi_b: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte-Carlo ``R = E[ψ(a) ψ(b)ᵀ]`` over sampled pairs, symmetrised, and its stop-gradient
    twin.

    Parameters
    ----------
    psi_a, psi_b : torch.Tensor of shape (B, K)
        Normalised outputs at the two endpoints of B pairs drawn from the (diffused) graph.

    Returns
    -------
    R : torch.Tensor of shape (K, K)
        ``(ψ_aᵀψ_b + ψ_bᵀψ_a) / 2B``; gradient flows into both factors.
    R_hat : torch.Tensor of shape (K, K)
        The same with the left factor detached, so that in ``R_hat[i, j]`` only ψ_j moves.

    Examples
    --------
    >>> import torch
    >>> a = torch.tensor([[1.0], [-1.0]])
    >>> pair_rayleigh_matrices(a, a)[0]   # both endpoints agree: R = E[ψ²] = 1
    tensor([[1.]])
    """
    if psi_a.shape != psi_b.shape or psi_a.ndim != 2:
        raise ValueError(f"psi_a and psi_b must both be (B, K); got {tuple(psi_a.shape)} and "
                         f"{tuple(psi_b.shape)}")
    n_pairs = psi_a.shape[0]
    R = (psi_a.T @ psi_b + psi_b.T @ psi_a) / (2 * n_pairs)
    R_hat = (psi_a.detach().T @ psi_b + psi_b.detach().T @ psi_a) / (2 * n_pairs)
    return R, R_hat


def graph_rayleigh_matrices(psi: torch.Tensor, W: torch.Tensor, steps: int = 1
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``R = ψᵀ W P^{t-1} ψ / vol`` on a dense affinity (a minibatch's own graph).

    ``P^{t-1}`` are lazy steps ``(I + D^{-1} W) / 2`` applied to ψ (t - 1 products of
    shape (b, b) × (b, K)), so the (b, b) power is never formed. ψ must already be
    normalised with the degree weights ``d / vol`` of ``W``.

    Parameters
    ----------
    psi : torch.Tensor of shape (b, K)
        Normalised outputs.
    W : torch.Tensor of shape (b, b)
        Symmetric non-negative affinity; treated as a constant.
    steps : int, default=1
        Diffusion time t ≥ 1.

    Returns
    -------
    R, R_hat : torch.Tensor of shape (K, K)
        As in [`pair_rayleigh_matrices`][pair_rayleigh_matrices].
    """
    b = W.shape[0]
    if W.ndim != 2 or W.shape[1] != b or psi.ndim != 2 or psi.shape[0] != b:
        raise ValueError(f"psi must be (b, K) and W (b, b); got psi {tuple(psi.shape)}, "
                         f"W {tuple(W.shape)}")
    W = W.detach().to(psi.dtype)  # float64 W beside float32 ψ failed inside matmul
    degree = W.sum(dim=1)  # (b,)
    volume = degree.sum().clamp_min(torch.finfo(W.dtype).tiny)
    inv_degree = torch.where(degree > 0, 1.0 / degree.clamp_min(torch.finfo(W.dtype).tiny),
                             torch.zeros_like(degree))
    diffused = psi
    for _ in range(int(steps) - 1):
        diffused = 0.5 * (diffused + inv_degree[:, None] * (W @ diffused))
    W_psi = W @ diffused  # (b, K)
    return psi.T @ W_psi / volume, psi.detach().T @ W_psi / volume


def rayleigh_matrices(psi: torch.Tensor, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``R = ΨᵀGΨ`` and its stop-gradient twin ``R̂ = sg(Ψ)ᵀGΨ`` for a fixed matrix G.

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
    G_psi = G.detach().to(psi.dtype) @ psi  # (b, K); a float64 G met float32 ψ in matmul
    return psi.T @ G_psi, psi.detach().T @ G_psi


def neuralef_objective(R: torch.Tensor, R_hat: torch.Tensor, orthogonality_weight: float, *,
                       normalize_penalty: bool = False, stop_gradient: bool = True,
                       eps: float = 1e-6) -> torch.Tensor:
    r"""NeuralEF loss from the Rayleigh matrices of K normalised functions.

    .. math::

        L = -\frac{1}{K}\sum_j R_{jj}
            + \beta \frac{1}{K}\sum_{i<j} \hat R_{ij}^2 \quad\text{(Deng \& Luo, 2023)}

    or, with ``normalize_penalty=True``, the original NeuralEF form whose penalty is
    :math:`\hat R_{ij}^2 / \hat R_{ii}`. Minimising L over unit-second-moment functions makes
    ψ_j maximise its Rayleigh quotient while staying orthogonal to ψ_1..ψ_{j-1} (the
    stop-gradient keeps earlier functions from being pushed by later ones), so the ψ_j
    converge to the top eigenfunctions in order.

    Parameters
    ----------
    R, R_hat : torch.Tensor of shape (K, K)
        From [`pair_rayleigh_matrices`][pair_rayleigh_matrices],
        [`graph_rayleigh_matrices`][graph_rayleigh_matrices] or
        [`rayleigh_matrices`][rayleigh_matrices].
    orthogonality_weight : float
        β ≥ 0. With the normalised penalty β = 1 is NeuralEF's exact form.
    normalize_penalty : bool, default=False
        Divide each penalty term by R̂_ii (clamped below by ``eps``).
    stop_gradient : bool, default=True
        Use R̂ in the penalty. With False the penalty is Σ_{i<j} R_ij², which pushes both
        functions of a pair apart: a symmetric objective for unordered outputs (clusters).
    eps : float, default=1e-6
        Lower bound on R̂_ii in the normalised penalty.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    K = R.shape[0]
    penalty_matrix = R_hat if stop_gradient else R
    penalty = penalty_matrix.square()
    if normalize_penalty:
        # Row i belongs to the earlier function ψ_i: divide by its Rayleigh quotient.
        penalty = penalty / torch.diagonal(penalty_matrix).detach().clamp_min(eps)[:, None]
    upper = torch.triu(torch.ones(K, K, dtype=torch.bool, device=R.device), diagonal=1)
    return -torch.diagonal(R).sum() / K + orthogonality_weight * penalty[upper].sum() / K


def neuralef_loss(psi: torch.Tensor, G: torch.Tensor, orthogonality_weight: float,
                  normalize_penalty: bool = False, *, stop_gradient: bool = True,
                  eps: float = 1e-6, return_rayleigh: bool = False):
    r"""NeuralEF loss of K normalised functions on a minibatch with a fixed kernel matrix G.

    [`rayleigh_matrices`][rayleigh_matrices] followed by [`neuralef_objective`][neuralef_objective].

    Parameters
    ----------
    psi : torch.Tensor of shape (b, K)
        Normalised outputs on the minibatch.
    G : torch.Tensor of shape (b, b)
        Kernel on the minibatch, scaled so that ``ψᵀGψ`` is a Rayleigh quotient.
    orthogonality_weight : float
        β ≥ 0.
    normalize_penalty : bool, default=False
        NeuralEF's R̂_ii-normalised penalty.
    stop_gradient : bool, default=True
        See [`neuralef_objective`][neuralef_objective].
    eps : float, default=1e-6
        Lower bound on R̂_ii in the normalised penalty.
    return_rayleigh : bool, default=False
        Also return the detached diagonal of R.

    Returns
    -------
    loss : torch.Tensor
        Scalar.
    rayleigh : torch.Tensor of shape (K,)
        Only when ``return_rayleigh=True``.

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
    R, R_hat = rayleigh_matrices(psi, G)
    loss = neuralef_objective(R, R_hat, orthogonality_weight,
                              normalize_penalty=normalize_penalty,
                              stop_gradient=stop_gradient, eps=eps)
    if return_rayleigh:
        return loss, torch.diagonal(R).detach()
    return loss
