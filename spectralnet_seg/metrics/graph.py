"""A score of a partition of a graph without ground truth: the normalised cut."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["normalized_cut"]


def normalized_cut(affinity, labels) -> float:
    """Normalised cut of a partition of a graph (Shi & Malik, 2000).

    ``Ncut = Σ_k cut(C_k, V \\ C_k) / vol(C_k)``, where ``cut(A, B) = Σ_{i∈A, j∈B} w_ij``
    and ``vol(C) = Σ_{i∈C} d_i`` with the degrees ``d = W 1`` (self-loops count in the
    volume, never in a cut). It lies in ``[0, K]`` for K clusters; lower is better, 0
    when no edge joins two clusters. Normalised spectral clustering minimises a relaxation
    of it, so it compares partitions of one graph without ground truth.

    Parameters
    ----------
    affinity : {array-like, sparse matrix} of shape (n_samples, n_samples)
        Symmetric, non-negative, finite affinity ``W``.
    labels : array-like of shape (n_samples,)
        Cluster of each node (any integer ids).

    Returns
    -------
    float
        The normalised cut. A cluster of zero volume (isolated nodes only) has no edge to
        cut and adds 0.

    Raises
    ------
    ValueError
        If ``affinity`` is not square, symmetric, non-negative and finite, or ``labels``
        does not have one entry per node.

    References
    ----------
    J. Shi, J. Malik, "Normalized Cuts and Image Segmentation", IEEE TPAMI 22(8), 2000.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.array([[0, 1, 0.1], [1, 0, 0], [0.1, 0, 0]])
    >>> round(normalized_cut(W, [0, 0, 1]), 4)  # 0.1 / 2.1 + 0.1 / 0.1
    1.0476
    """
    from sklearn.utils import check_array

    W = sp.csr_matrix(check_array(affinity, accept_sparse=["csr", "csc", "coo"],
                                  dtype=np.float64, input_name="affinity"))
    n = W.shape[0]
    if W.shape[1] != n:
        raise ValueError(f"affinity must be square (n_samples, n_samples), got {W.shape}.")
    if W.nnz and W.data.min() < 0:
        raise ValueError(f"affinity has negative entries (min {W.data.min():.3g}).")
    asym = abs(W - W.T)
    if asym.nnz and asym.max() > 1e-8 * abs(W).max():  # relative: any scale of weights
        raise ValueError(f"affinity must be symmetric (max |W - W.T| = {asym.max():.3g}).")
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) (one per node), got {labels.shape}.")
    _, codes = np.unique(labels, return_inverse=True)
    W = W.tocoo()
    same = codes[W.row] == codes[W.col]
    n_clusters = int(codes.max()) + 1 if n else 0
    within = np.bincount(codes[W.row[same]], weights=W.data[same], minlength=n_clusters)
    volume = np.bincount(codes[W.row], weights=W.data, minlength=n_clusters)
    cut = volume - within
    safe = volume > 0
    return float(np.sum(cut[safe] / volume[safe]))
