"""Building blocks of the neighbour graphs the feature kernels share.

Exact k nearest neighbours inside a minibatch (torch), a CSR matrix from neighbour lists,
sparse and dense symmetrisation, removal of self-loops, and the floor of local scales.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._numeric import (
    may_have_cancelled,
    power_of_two_exponent,
    share_an_offset,
    unit_rows_torch,
)

# Floor of the local scale: duplicated points have a zero distance to their neighbours, and
# exp(-0 / 0) must be 1 (same point), exp(-d^2 / 0) must be 0, never NaN. The full graphs
# compute the bandwidth of a pair (the product of two scales) in float64.
_TINY_SCALE = float(np.finfo(np.float32).tiny)


def _batch_scale_floor(dtype) -> float:
    """Floor of the local scale inside a minibatch of ``dtype``: the square root of its
    smallest normal number, so that the product of two floored scales stays positive
    (float32's tiny * tiny underflowed to 0, and duplicates got -0/0 = NaN)."""
    import torch

    return float(torch.finfo(dtype).tiny) ** 0.5


def _symmetrize_sparse(W: sp.csr_matrix, mode: str) -> sp.csr_matrix:
    if mode == "mean":
        W = (W + W.T) * 0.5
    elif mode == "max":
        W = W.maximum(W.T)
    else:  # "mutual": an edge survives only when both endpoints chose it
        W = W.minimum(W.T)
    W = sp.csr_matrix(W)
    W.eliminate_zeros()
    W.sort_indices()
    return W


def _symmetrize_dense(W, mode: str):
    import torch

    if mode == "mean":
        return (W + W.T) * 0.5
    if mode == "max":
        return torch.maximum(W, W.T)
    return torch.minimum(W, W.T)


def _neighbor_csr(weights: np.ndarray, indices: np.ndarray, n_columns: int) -> sp.csr_matrix:
    """CSR (n_rows, n_columns) with ``weights[i, j]`` at column ``indices[i, j]``, no zeros."""
    n_rows, k = indices.shape
    if indices.size and (indices.min() < 0 or indices.max() >= n_columns):
        # scipy does not bounds-check CSR indices: a -1 would be written out of bounds.
        raise ValueError(f"neighbour indices must lie in [0, {n_columns}), got "
                         f"[{indices.min()}, {indices.max()}].")
    indptr = np.arange(0, n_rows * k + 1, k, dtype=np.int64)
    W = sp.csr_matrix((weights.astype(np.float64).ravel(), indices.ravel(), indptr),
                      shape=(n_rows, n_columns))
    W.sum_duplicates()
    W.eliminate_zeros()
    return W


def _drop_diagonal(W: sp.spmatrix) -> sp.csr_matrix:
    W = sp.coo_matrix(W)
    keep = W.row != W.col
    return sp.csr_matrix((W.data[keep], (W.row[keep], W.col[keep])), shape=W.shape)


def _centred(X):
    """``X`` minus its column means (computed in float64): Euclidean distances are the same,
    but ``|a|^2 + |b|^2 - 2ab`` no longer cancels the rows' common offset in float32."""
    return X - X.double().mean(dim=0, keepdim=True).to(X.dtype)


def _half_square_distances_if_one_direction(Xn):
    """``1 - cos`` as ``|c_i - c_j|^2 / 2`` of the centred unit rows ``c``, when the rows
    share one direction ([`share_an_offset`][spectralnet_seg._numeric.share_an_offset]);
    else None.

    Such rows have cosines so close to 1 that float32 rounds their differences away, whether
    as ``u.v`` or as ``1 - u.v``; the centred rows keep them. Ordinary rows return None, and
    the callers keep their plain ``Xn @ Xn.T``, bit for bit.
    """
    mean = Xn.double().mean(dim=0)
    mean_square = float(mean @ mean)
    variance = float(Xn.double().square().sum(dim=1).mean()) - mean_square
    if not share_an_offset(mean_square, variance):
        return None
    C = (Xn.double() - mean).to(Xn.dtype)
    sq = (C * C).sum(dim=1)
    return 0.5 * (sq[:, None] + sq[None, :] - 2.0 * (C @ C.T)).clamp_min(0.0)


def _unit_magnitude(X):
    """``(X / 2**e, e)``: ``X`` divided by the exact power of two that brings extreme
    magnitudes near 1 (``e = 0`` and ``X`` itself for ordinary ones).

    float32 squares of 1e22 overflow and those of 1e-25 vanish. Weights that do not depend
    on the data's scale (neighbours, cosines, self-tuned Gaussians ``d^2 / (sigma_i
    sigma_j)``) are computed on the scaled rows; distances are scaled back by ``2**e``.
    """
    exponent = power_of_two_exponent(float(X.abs().max()))
    return ((X.double() * 2.0**-exponent).to(X.dtype) if exponent else X), exponent


def _batch_topk(X, k: int, metric: str):
    """Exact k nearest neighbours inside a batch, self excluded: (distances, indices, cos).

    ``cos`` is the (b, b) cosine-similarity matrix when it was needed anyway, else ``None``.
    Rows whose neighbours float32 cancellation may have lost (clusters far apart against
    their spread) are searched again from differences
    ([`_refine_cancelled_rows`][_refine_cancelled_rows]).
    """
    import torch

    if metric == "cosine":
        Xn, zero = unit_rows_torch(X)
        if bool(zero.any()):
            raise ValueError("X_batch has an all-zero row; the cosine metric is undefined for "
                             "zero vectors (remove them or use metric='l2').")
        half_d2 = _half_square_distances_if_one_direction(Xn)
        if half_d2 is not None:  # rows sharing one direction: rank by the accurate 1 - cos
            cos = 1.0 - half_d2
            half_d2.fill_diagonal_(torch.inf)
            dist, ind = half_d2.topk(k, dim=1, largest=False)
            d2, ind = _refine_cancelled_rows(_centred(Xn), 2.0 * dist, ind)
            return 0.5 * d2, ind, cos
        cos = Xn @ Xn.T
        scores = cos.clone()
        scores.fill_diagonal_(-torch.inf)
        sim, ind = scores.topk(k, dim=1)
        d2, ind = _refine_cancelled_rows(Xn, 2.0 * (1.0 - sim).clamp_min(0.0), ind)
        return 0.5 * d2, ind, cos
    # Squares of values beyond ~1e±19 leave float32's range: divide by an exact power of two.
    X, exponent = _unit_magnitude(X)
    X = _centred(X)
    sq = (X * X).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (X @ X.T)).clamp_min(0.0)
    d2.fill_diagonal_(torch.inf)
    d2_k, ind = d2.topk(k, dim=1, largest=False)
    d2_k, ind = _refine_cancelled_rows(X, d2_k, ind)
    dist = d2_k.sqrt()
    if exponent:
        dist = (dist.double() * 2.0**exponent).to(dist.dtype)
    return dist, ind, None


def _refine_cancelled_rows(R, d2_k, ind):
    """Search again, from the rows' differences, the rows whose top-k squared L2 distances
    float32's ``|x|^2 + |y|^2 - 2xy`` may have lost
    ([`may_have_cancelled`][spectralnet_seg._numeric.may_have_cancelled]).

    A suspect whose k found neighbours all lie exactly 0 away (duplicates: nothing can be
    nearer) is kept as found, so flat image regions are not searched twice. Ordinary rows are
    never suspected and come back as given, bit for bit.

    Parameters
    ----------
    R : torch.Tensor of shape (b, n_features)
        The rows the squared distances compare (centred data, or unit rows).
    d2_k : torch.Tensor of shape (b, k)
        Each row's k smallest squared distances from the expansion, self excluded.
    ind : torch.Tensor of shape (b, k)
        Their column indices.

    Returns
    -------
    d2_k, ind : torch.Tensor of shape (b, k)
        With the suspects' rows replaced by an exact search.
    """
    import torch

    sq = R.double().square().sum(dim=1)
    suspect = may_have_cancelled(d2_k[:, -1].double(), sq, float(sq.max()), R.shape[1],
                                 unit_roundoff=torch.finfo(R.dtype).eps / 2)
    if not bool(suspect.any()):
        return d2_k, ind
    d2_k, ind = d2_k.clone(), ind.clone()
    b, k = ind.shape
    step = max(1, 2**22 // max(b, k * R.shape[1]))  # bounds the (rows, b) distance blocks
    for rows in suspect.nonzero().squeeze(1).split(step):
        found = (R[ind[rows]] - R[rows][:, None, :]).square().sum(dim=2)
        rows = rows[found.amax(dim=1) > 0]
        if rows.numel() == 0:
            continue
        # direct differences, not the matrix-product expansion that cancelled
        d2 = torch.cdist(R[rows], R, compute_mode="donot_use_mm_for_euclid_dist").square()
        d2[torch.arange(rows.numel(), device=R.device), rows] = torch.inf
        d2_k[rows], ind[rows] = d2.topk(k, dim=1, largest=False)
    return d2_k, ind


def _pair_row_chunks(queries: np.ndarray, database: np.ndarray, ind: np.ndarray):
    """The rows of listed pairs in bounded-memory chunks, as float64.

    Yields ``(rows, q, neighbors)``: a slice of the query rows, the queries ``q`` of shape
    (m, n_features) and their listed database rows ``database[ind[rows]]`` of shape
    (m, k, n_features).
    """
    step = max(1, (32 * 2**20) // (4 * max(ind.shape[1], 1) * max(queries.shape[1], 1)))
    for start in range(0, ind.shape[0], step):
        q = np.asarray(queries[start:start + step], dtype=np.float64)
        neighbors = np.asarray(database[ind[start:start + step].ravel()], dtype=np.float64)
        yield slice(start, start + step), q, neighbors.reshape(q.shape[0], ind.shape[1], -1)


def _pair_distances(queries: np.ndarray, database: np.ndarray, ind: np.ndarray,
                    metric: str) -> np.ndarray:
    """Distances of listed pairs from the rows themselves, in float64: (n_queries, k).

    ``|q - x|`` (``"l2"``) or ``1 - cos(q, x) = |q/|q| - x/|x||^2 / 2`` (``"cosine"``), from
    differences of the rows, so identical rows are exactly 0 apart. The search's float32
    ``|q|^2 + |x|^2 - 2 q.x`` leaves them rounding noise (6e-8 to 7e-7), and self-tuned
    Gaussian weights divide that by the local scale, which is noise too where a point has
    more duplicates than ``local_scale_neighbor``: their weights came out 0, 0.37 or 0.68
    instead of 1.
    """
    out = np.empty(ind.shape, dtype=np.float64)
    for rows, q, neighbors in _pair_row_chunks(queries, database, ind):
        if metric == "cosine":
            q = q / np.linalg.norm(q, axis=1, keepdims=True)
            neighbors = neighbors / np.linalg.norm(neighbors, axis=2, keepdims=True)
            out[rows] = 0.5 * np.square(neighbors - q[:, None, :]).sum(axis=2)
        else:
            out[rows] = np.sqrt(np.square(neighbors - q[:, None, :]).sum(axis=2))
    return out


def _pair_cosine(queries: np.ndarray, database: np.ndarray, ind: np.ndarray) -> np.ndarray:
    """cos(queries[i], database[ind[i, j]]) for each listed pair, in float64: (n_queries, k)."""
    out = np.empty(ind.shape, dtype=np.float64)
    for rows, q, neighbors in _pair_row_chunks(queries, database, ind):
        dots = np.einsum("qd,qkd->qk", q, neighbors)
        norms = np.linalg.norm(q, axis=1)[:, None] * np.linalg.norm(neighbors, axis=2)
        if not np.all(norms > 0):
            raise ValueError("cosine weighting is undefined for all-zero rows; remove them or "
                             "use weighting='binary' or 'gaussian'.")
        out[rows] = dots / norms
    return out


def _pair_distances_torch(X, ind, metric: str):
    """[`_pair_distances`][_pair_distances] inside a minibatch: (b, k), dtype of ``X``."""
    if metric == "cosine":
        X, _ = unit_rows_torch(X)
        return 0.5 * (X[ind] - X[:, None, :]).square().sum(dim=2)
    return (X[ind] - X[:, None, :]).square().sum(dim=2).sqrt()

