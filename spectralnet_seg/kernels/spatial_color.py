"""The per-image pixel graph of Deng & Luo (ICCV 2023) and the paper's combined kernel.

Tokens of a feature grid carry more than their feature vector: the colour of the image
region they cover and their position in the image. [`TokenContext`][TokenContext] holds that side
information; [`SpatialColorKernel`][SpatialColorKernel] turns it into the paper's *pixel graph* Ã —
per
image, binary k-nearest-neighbour graphs on ``[r, g, b, λy, λx]`` (``k = 10, λ = 2.0``: local,
spatially coherent neighbours; ``k = 5, λ = 0.1``: same-colour neighbours anywhere in the
image), OR-combined, symmetric, without self-edges and block-diagonal across images, the
KNN-matting affinity used by Deep Spectral Methods (Melas-Kyriazi et al., CVPR 2022).

[`paper_kernel`][paper_kernel] builds the full kernel of the paper,

    G = D^{-1/2} A D^{-1/2} + α D̃^{-1/2} Ã D̃^{-1/2},   α = 0.3,

with A the cosine kNN graph of the features (k = 256), as one [`Kernel`][Kernel] object that
both the eigsh baseline (``graph``/``cross``) and the neural estimators (``batch``) use.

``TokenContext`` and ``as_token_context`` live in ``_token_context`` and are importable from
here, as when they were defined here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from numbers import Integral, Real
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.utils._param_validation import Interval, validate_params

from ._base import Kernel, KernelTags
from ._checks import _as_batch
from ._graph_ops import _centred
from ._registry import register_kernel
from ._token_context import TokenContext, as_token_context

__all__ = ["SpatialColorKernel", "TokenContext", "as_token_context", "paper_kernel"]


_KNN_PARAM = [Interval(Integral, 1, None, closed="left")]
_LAMBDA_PARAM = [Interval(Real, 0, None, closed="left")]


@register_kernel("spatial_color")
class SpatialColorKernel(Kernel):
    """The paper's per-image pixel graph on ``[r, g, b, λy, λx]`` (binary, OR-combined).

    For every image and every pair ``(k, λ)`` of ``n_neighbors`` and ``spatial_weights``,
    each token is linked to its ``k`` nearest other tokens of the same image in the space
    ``[r, g, b, λ·y, λ·x]``; the graphs are OR-combined and symmetrised (``max(W, Wᵀ)``), so
    every edge has weight 1. The features ``X`` are not used, only the context.

    Parameters
    ----------
    n_neighbors : sequence of int, default=(10, 5)
        Neighbours per token for each graph, capped by each image's token count − 1 when
        the graph is built (images differ in size, so there is no single cap to declare:
        ``neighbor_params`` is empty).
    spatial_weights : sequence of float, default=(2.0, 0.1)
        λ for each graph: the weight of the normalised position against the colour.

    Notes
    -----
    *Out-of-sample.* The pixel graph only links tokens of the same image, and a new image
    shares no image with the fitted tokens, so [`cross`][cross] returns an all-zero
    ``(n_queries, n_fit)`` matrix: in [`paper_kernel`][paper_kernel] the feature part alone carries
    the
    Nyström extension of the eigsh baseline, while the neural estimators, which were
    *trained* with the pixel graph, embed new images with a forward pass.

    *Scale.* ``graph`` searches neighbours image by image (faiss through
    [`spectralnet_seg.neighbors.knn_search`][spectralnet_seg.neighbors.knn_search]); ``batch`` uses
    exact dense distances in
    torch, masked to same-image pairs, as minibatches are small.

    References
    ----------
    Deng & Luo, "Learning Neural Eigenfunctions for Unsupervised Semantic Segmentation",
    ICCV 2023. Chen, Li & Tang, "KNN Matting", TPAMI 2013.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ctx = TokenContext(rng.random((50, 3)), rng.random((50, 2)), np.repeat([0, 1], 25))
    >>> W = SpatialColorKernel().graph(np.zeros((50, 1), np.float32), ctx)
    >>> bool((W != W.T).nnz == 0), W[:25, 25:].nnz
    (True, 0)
    """

    def __init__(self, n_neighbors: Sequence[int] = (10, 5),
                 spatial_weights: Sequence[float] = (2.0, 0.1)) -> None:
        self.n_neighbors = n_neighbors
        self.spatial_weights = spatial_weights

    def __kernel_tags__(self) -> KernelTags:
        """The pixel graph is built from the token context alone."""
        return replace(super().__kernel_tags__(), requires_context=True)

    def _validate_params(self) -> None:
        self._pairs()

    # ------------------------------------------------------------------ helpers
    def _pairs(self) -> list[tuple[int, float]]:
        ks = list(np.atleast_1d(self.n_neighbors))
        lambdas = np.atleast_1d(np.asarray(self.spatial_weights, dtype=float)).tolist()
        if len(ks) == 0 or len(ks) != len(lambdas):
            raise ValueError(
                "n_neighbors and spatial_weights must be non-empty and of equal length, got "
                f"{self.n_neighbors!r} and {self.spatial_weights!r}"
            )
        if any(isinstance(k, bool) or not isinstance(k, Integral) or k < 1 for k in ks):
            raise ValueError(f"n_neighbors must be positive integers, got {self.n_neighbors!r}")
        if any(not np.isfinite(lam) or lam < 0 for lam in lambdas):
            raise ValueError(
                f"spatial_weights must be finite and non-negative, got {self.spatial_weights!r}"
            )
        return [(int(k), float(lam)) for k, lam in zip(ks, lambdas, strict=True)]

    @staticmethod
    def _embedding(colors: np.ndarray, positions: np.ndarray, lam: float) -> np.ndarray:
        """The ``[r, g, b, λy, λx]`` coordinates of tokens, shape (n, 5)."""
        return np.ascontiguousarray(np.hstack([colors, lam * positions]), dtype=np.float32)

    # ------------------------------------------------------------------ Kernel API
    def graph_cost(self, n_samples: int, n_features: int) -> float:
        """Per-image searches in 5 dimensions: cheap next to any feature graph."""
        return 2.0 * n_samples * 5.0 * 1024.0

    def graph(self, X: np.ndarray, context: Any = None) -> sp.csr_matrix:
        """Block-diagonal pixel graph over all tokens.

        Parameters
        ----------
        X : ndarray of shape (n_tokens, n_features)
            Token features; only the number of rows is used.
        context : TokenContext or ExtractedFeatures
            Colour, position and image id of each row of ``X``.

        Returns
        -------
        W : scipy.sparse.csr_matrix of shape (n_tokens, n_tokens)
            Symmetric binary affinity, zero diagonal, no edges across images.
        """
        from ..neighbors import knn_search

        n = int(np.shape(X)[0])
        ctx = as_token_context(context, n, owner=type(self).__name__)
        pairs = self._pairs()
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        for image in np.unique(ctx.image_ids):
            members = np.flatnonzero(ctx.image_ids == image)  # (n_i,)
            n_i = len(members)
            if n_i < 2:
                continue
            for k, lam in pairs:
                k_i = min(k, n_i - 1)
                emb = self._embedding(ctx.colors[members], ctx.positions[members], lam)
                # Ask for one more neighbour and drop the token itself: robust to how the
                # search orders exact ties, and exact when positions are distinct.
                _, idx = knn_search(emb, n_neighbors=k_i + 1, metric="l2", device="cpu",
                                    exclude_self=False)
                local = np.arange(n_i)[:, None]
                keep = (idx != local) & (idx >= 0)
                keep &= np.cumsum(keep, axis=1) <= k_i
                r, c = np.nonzero(keep)
                rows.append(members[r])
                cols.append(members[idx[r, c]])
        self.n_fit_ = n
        if not rows:
            return sp.csr_matrix((n, n), dtype=np.float32)
        r = np.concatenate(rows)
        c = np.concatenate(cols)
        # OR over graphs and symmetrisation in one step: every (i, j) or (j, i) edge -> 1
        ij = np.concatenate([r, c])
        ji = np.concatenate([c, r])
        W = sp.csr_matrix((np.ones(len(ij), dtype=np.float32), (ij, ji)), shape=(n, n))
        W.data[:] = 1.0  # duplicates were summed; self-edges were dropped above
        return W

    def cross(self, Y: np.ndarray, context: Any = None) -> sp.csr_matrix:
        """All-zero affinities between new tokens and the fitted ones (see Notes).

        Parameters
        ----------
        Y : ndarray of shape (n_queries, n_features)
            New token features; only the number of rows is used.
        context : TokenContext, optional
            Ignored: tokens of new images have no same-image partner among fitted tokens.

        Returns
        -------
        C : scipy.sparse.csr_matrix of shape (n_queries, n_fit)
        """
        if not hasattr(self, "n_fit_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                f"{type(self).__name__}.cross needs a previous call to graph() on the fitted tokens"
            )
        return sp.csr_matrix((int(np.shape(Y)[0]), self.n_fit_), dtype=np.float32)

    def batch(self, X_batch, context: Any = None):
        """Pixel graph within a minibatch, block-diagonal over the batch's images.

        Parameters
        ----------
        X_batch : torch.Tensor of shape (batch_size, n_features)
            Token features; sets device and dtype of the result.
        context : TokenContext or ExtractedFeatures
            Context of the rows of ``X_batch``.

        Returns
        -------
        W : torch.Tensor of shape (batch_size, batch_size)
            Symmetric binary affinity, zero diagonal.
        """
        import torch

        X_batch = _as_batch(X_batch)  # a numpy batch too, as KNNKernel.batch takes
        b = int(X_batch.shape[0])
        ctx = as_token_context(context, b, owner=type(self).__name__)
        pairs = self._pairs()
        device, dtype = X_batch.device, X_batch.dtype
        with torch.no_grad():
            colors = torch.as_tensor(ctx.colors, device=device, dtype=torch.float32)
            positions = torch.as_tensor(ctx.positions, device=device, dtype=torch.float32)
            ids = torch.as_tensor(ctx.image_ids, device=device)
            same_image = ids[:, None] == ids[None, :]
            same_image.fill_diagonal_(False)  # no self-edges
            W = torch.zeros((b, b), device=device, dtype=torch.bool)
            rows = torch.arange(b, device=device)[:, None]
            for k, lam in pairs:
                # Centred: bright, nearly flat colours (~0.95, distances ~1e-3) would
                # otherwise lose their neighbour order in cdist's float32 |a|²+|b|²-2ab.
                emb = _centred(torch.cat([colors, lam * positions], dim=1))  # (b, 5)
                dist = torch.cdist(emb, emb).masked_fill(~same_image, float("inf"))
                k_b = min(k, b - 1)
                if k_b < 1:
                    continue
                d_k, idx = torch.topk(dist, k_b, dim=1, largest=False)  # (b, k_b)
                # Rows of small images have fewer than k partners: drop the inf picks.
                hit = torch.zeros_like(W)
                hit[rows.expand_as(idx), idx] = torch.isfinite(d_k)
                W |= hit
            W = W | W.T
        return W.to(dtype)


@validate_params(
    {
        "n_neighbors": _KNN_PARAM,
        "pixel_weight": _LAMBDA_PARAM,
        "pixel_neighbors": ["array-like"],
        "spatial_weights": ["array-like"],
    },
    prefer_skip_nested_validation=True,
)
def paper_kernel(n_neighbors: int = 256, pixel_weight: float = 0.3, *,
                 pixel_neighbors: Sequence[int] = (10, 5),
                 spatial_weights: Sequence[float] = (2.0, 0.1)) -> Kernel:
    """The combined feature + pixel kernel of Deng & Luo (ICCV 2023).

    ``G = D^{-1/2} A D^{-1/2} + α D̃^{-1/2} Ã D̃^{-1/2}`` where ``A`` is the symmetrised cosine
    kNN graph of the features (negative cosines dropped, weights = cosine) and ``Ã`` the
    [`SpatialColorKernel`][SpatialColorKernel] pixel graph.

    Parameters
    ----------
    n_neighbors : int, default=256
        Neighbours per token in the feature graph (the paper's k = 256). On fewer than
        k + 1 tokens, [`SumKernel.cap_neighbors`][SumKernel.cap_neighbors] lowers it to the tokens
        available
        minus one, which the estimators do before building the graph.
    pixel_weight : float, default=0.3
        α, the weight of the normalised pixel graph.
    pixel_neighbors, spatial_weights : sequence, default=(10, 5) and (2.0, 0.1)
        Parameters of the [`SpatialColorKernel`][SpatialColorKernel].

    Returns
    -------
    Kernel
        A [`SumKernel`][spectralnet_seg.kernels.SumKernel] of a ``KNNKernel`` and a
        ``SpatialColorKernel``; it needs the token context (see [`TokenContext`][TokenContext]).

    Examples
    --------
    >>> k = paper_kernel(n_neighbors=32)
    >>> [type(m).__name__ for m in k.kernels]
    ['KNNKernel', 'SpatialColorKernel']
    """
    from .combined import SumKernel
    from .knn import KNNKernel

    feature = KNNKernel(n_neighbors=n_neighbors, metric="cosine", weighting="cosine")
    pixel = SpatialColorKernel(n_neighbors=tuple(pixel_neighbors),
                               spatial_weights=tuple(spatial_weights))
    return SumKernel(kernels=[feature, pixel], weights=[1.0, float(pixel_weight)])


register_kernel("paper")(paper_kernel)
