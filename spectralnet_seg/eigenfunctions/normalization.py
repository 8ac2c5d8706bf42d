"""Column normalisation of the ψ outputs to unit second moment."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ColumnNormalization"]


class ColumnNormalization(nn.Module):
    """Scale each output column to unit second moment: ψ_j = f_j / sqrt(E[f_j²] + eps).

    In training mode the second moment is that of the current minibatch (the gradient flows
    through it, which is how the unit-norm constraint of NeuralEF enters the objective), and a
    running estimate is updated as an exponential moving average. In evaluation mode the
    running estimate is used, so the map is a fixed per-column scaling and every row is
    transformed independently of the others.

    Parameters
    ----------
    n_features : int
        Number of columns K.
    momentum : float, default=0.9
        Weight of the old value in the moving average (``running = m·running + (1-m)·batch``).
    eps : float, default=1e-8
        Added to the second moment before the square root.

    Attributes
    ----------
    running_second_moment : torch.Tensor of shape (K,)
        Buffer; the running estimate of E[f_j²].
    num_batches_tracked : torch.Tensor
        Buffer; 0 until the first training batch, which initialises the estimate.

    Examples
    --------
    >>> import torch
    >>> norm = ColumnNormalization(2)
    >>> out = norm(torch.tensor([[1.0, 2.0], [3.0, 0.0]]))
    >>> [round(v, 4) for v in out.square().mean(0).tolist()]
    [1.0, 1.0]
    """

    def __init__(self, n_features: int, momentum: float = 0.9, eps: float = 1e-8) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("running_second_moment", torch.ones(n_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, f: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``f`` of shape (b, K) column-wise; update the running estimate in training.

        ``weights`` of shape (b,), summing to one, give the measure of the second moment
        (e.g. the degree measure of a minibatch graph); uniform when None. In evaluation
        mode ``f`` may have any leading shape (..., K).
        """
        n_features = self.running_second_moment.numel()
        if f.ndim == 0 or f.shape[-1] != n_features:
            raise ValueError(f"expected outputs of shape (batch, {n_features}), got shape "
                             f"{tuple(f.shape)}")
        if self.training:
            if f.ndim != 2 or f.shape[0] == 0:  # an empty batch would set the moments to NaN
                raise ValueError("training needs a non-empty batch of shape (batch, "
                                 f"{n_features}) to estimate the second moments, got shape "
                                 f"{tuple(f.shape)}")
            if weights is not None and tuple(weights.shape) != (f.shape[0],):
                raise ValueError(f"weights must have shape ({f.shape[0]},), one per row, got "
                                 f"shape {tuple(weights.shape)}")
            squares = f.square()
            second_moment = (squares.mean(dim=0) if weights is None
                             else (weights.to(f.dtype)[:, None] * squares).sum(dim=0))  # (K,)
            with torch.no_grad():
                batch = second_moment.detach().to(self.running_second_moment.dtype)
                if int(self.num_batches_tracked) == 0:
                    self.running_second_moment.copy_(batch)
                else:
                    self.running_second_moment.mul_(self.momentum).add_(
                        batch, alpha=1.0 - self.momentum)
                self.num_batches_tracked += 1
        else:
            second_moment = self.running_second_moment.to(f.dtype)
        return f * torch.rsqrt(second_moment + self.eps)

    @torch.no_grad()
    def set_statistics(self, second_moment: torch.Tensor) -> None:
        """Replace the running estimate, e.g. by the exact second moment over a data set.

        Parameters
        ----------
        second_moment : torch.Tensor of shape (K,)
            Non-negative E[f_j²] per column.
        """
        self.running_second_moment.copy_(second_moment.to(self.running_second_moment))
        self.num_batches_tracked.fill_(max(int(self.num_batches_tracked), 1))

    def extra_repr(self) -> str:
        return f"{self.running_second_moment.numel()}, momentum={self.momentum}, eps={self.eps}"
