"""Pairs of training points drawn from the global affinity graph, for minibatch NeuralEF.

A uniform minibatch of b out of n points holds about k·b/n of each point's k graph
neighbours, so a graph built *inside* the batch is not the graph eigsh decomposes. Instead
the Rayleigh quotients are estimated from pairs drawn from the global graph itself:

* an edge (a, b) with probability W_ab / vol — its endpoints are distributed by the degree
  measure π = d / vol, which is the measure of the random-walk eigenfunctions' norm, so the
  pairs alone give an unbiased estimate of both terms of the objective (no degrees needed);
* then t − 1 lazy random-walk steps from b (stay with probability ½, else move to a
  neighbour with probability W_bc / d_b), which draws the pair from the diffusion
  W ((I + P) / 2)^{t-1} instead (same eigenfunctions, wider eigenvalue gaps).

Every draw comes from a private torch CPU generator (reproducible, checkpointable); the walk's
arithmetic runs in numpy, whose per-operation cost is lower on a few hundred walkers.
The graph is O(nnz) memory: CSR indices and the cumulative edge weights.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["GraphPairSampler"]


class GraphPairSampler:
    """Weight-proportional edge sampler with lazy random-walk continuation.

    Parameters
    ----------
    W : scipy.sparse matrix of shape (n, n)
        Symmetric, non-negative affinity with at least one edge.

    Attributes
    ----------
    n_nodes : int
    degree : ndarray of shape (n,), float64
        Row sums of ``W``.
    volume : float
        Sum of all edge weights (both directions).

    Examples
    --------
    >>> import scipy.sparse as sp, torch
    >>> W = sp.csr_matrix([[0, 1.0], [1.0, 0]])
    >>> a, b = GraphPairSampler(W).sample(4, steps=1, generator=torch.Generator().manual_seed(0))
    >>> sorted(set(zip(a.tolist(), b.tolist())))
    [(0, 1), (1, 0)]
    """

    def __init__(self, W) -> None:
        W = sp.csr_matrix(W, dtype=np.float64)
        W.sort_indices()
        if W.shape[0] != W.shape[1]:
            raise ValueError(f"the affinity graph must be square, got shape {W.shape}")
        if W.nnz == 0:
            raise ValueError("the affinity graph has no edges")
        if not np.all(np.isfinite(W.data)) or W.data.min() < 0:
            # Sampling edges by weight needs a valid distribution: a NaN or a negative weight
            # would corrupt the cumulative sums and draw wrong pairs without an error.
            raise ValueError("the affinity graph's weights must be finite and non-negative")
        self.n_nodes = W.shape[0]
        self.degree = np.asarray(W.sum(axis=1)).ravel()
        # numpy, not torch: a walk step is a dozen operations on a few hundred walkers,
        # where torch's per-operation dispatch cost more than the arithmetic (the samples
        # are the same: the draws still come from the torch generator).
        self._neighbors = W.indices.astype(np.int64)  # (nnz,)
        self._cumulative = np.cumsum(W.data)  # (nnz,)
        self.volume = float(self._cumulative[-1])
        self._source = np.repeat(np.arange(self.n_nodes, dtype=np.int64), np.diff(W.indptr))
        start = np.concatenate([np.zeros(1), self._cumulative])
        self._row_start = start[W.indptr[:-1]]  # (n,) cumulative weight before each row
        self._row_weight = start[W.indptr[1:]] - self._row_start  # (n,) = degree
        self._last = W.nnz - 1

    def _edge_at(self, position: np.ndarray) -> np.ndarray:
        """Index of the edge whose cumulative-weight interval holds ``position``."""
        return np.minimum(np.searchsorted(self._cumulative, position, side="right"),
                          self._last)

    def sample(self, n_pairs: int, *, steps: int = 1, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw pairs (a, b): an edge ∝ its weight, then ``steps - 1`` lazy walk steps from b.

        Parameters
        ----------
        n_pairs : int
            Number of pairs B.
        steps : int, default=1
            Diffusion time t ≥ 1.
        generator : torch.Generator
            CPU generator (the only source of randomness).

        Returns
        -------
        a, b : torch.Tensor of shape (B,), int64
            Node indices.
        """
        position = _uniform(n_pairs, generator, torch.float64) * self.volume
        edge = self._edge_at(position)
        a, b = self._source[edge], self._neighbors[edge]
        for _ in range(int(steps) - 1):
            # Every walker draws a neighbour; half of them (the lazy coin) keep their node.
            u = _uniform(n_pairs, generator, torch.float64)
            weight = self._row_weight[b]
            step_to = self._neighbors[self._edge_at(self._row_start[b] + u * weight)]
            stay = _uniform(n_pairs, generator, torch.float32) < 0.5
            b = np.where(stay | (weight <= 0), b, step_to)
        return torch.from_numpy(a), torch.from_numpy(b)

    def sample_nodes(self, n_nodes: int, *, generator: torch.Generator) -> torch.Tensor:
        """Nodes drawn from the degree measure π (endpoints of weight-proportional edges)."""
        position = _uniform(n_nodes, generator, torch.float64) * self.volume
        return torch.from_numpy(self._source[self._edge_at(position)])


def _uniform(n: int, generator: torch.Generator, dtype: torch.dtype) -> np.ndarray:
    """``n`` draws of U[0, 1) from the torch generator (its stream, reproducible), as numpy."""
    return torch.rand(n, generator=generator, dtype=dtype).numpy()
