"""The NeuralEF objective (Deng, Shi & Zhu, ICML 2022; Deng & Luo, ICCV 2023) as pure functions."""

from __future__ import annotations

import torch

__all__ = ["neuralef_loss", "rayleigh_matrices"]


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
                  normalize_penalty: bool = False, *, eps: float = 1e-6,
                  return_rayleigh: bool = False):
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
