"""Normalised spectral clustering of a precomputed affinity: embedding, then labels."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from .._assign import ASSIGN_METHODS, cluster_embedding
from .._base import check_n_clusters
from .._eigensolvers import EIGEN_SOLVERS
from .affinity import check_affinity
from .embedding import spectral_embedding

__all__ = ["spectral_clustering"]


# The constraints of the parameters spectral_clustering shares with EigshSpectralClustering.
SPECTRAL_CLUSTERING_CONSTRAINTS: dict = {
    "n_components": [Interval(Integral, 1, None, closed="left"), None],
    "eigen_solver": [StrOptions(set(EIGEN_SOLVERS))],
    "eigen_tol": [Interval(Real, 0.0, None, closed="left"), StrOptions({"auto"})],
    "assign_labels": [StrOptions(set(ASSIGN_METHODS))],
    "embedding_norm": [StrOptions({"row", "degree", "auto"}), None],
    "n_init": [Interval(Integral, 1, None, closed="left")],
}


@validate_params(
    {
        "affinity": "no_validation",  # check_affinity says what is wrong with it
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        **SPECTRAL_CLUSTERING_CONSTRAINTS,
        "random_state": ["random_state"],
        "return_embedding": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def spectral_clustering(
    affinity,
    n_clusters: int = 8,
    *,
    n_components: int | None = None,
    eigen_solver: str = "arpack",
    eigen_tol: float | str = "auto",
    assign_labels: str = "kmeans",
    embedding_norm: str | None = "degree",
    n_init: int = 10,
    random_state=None,
    return_embedding: bool = False,
):
    """Normalised spectral clustering of a precomputed affinity.

    Embeds the points with the top ``n_components`` eigenvectors of
    ``D^{-1/2} W D^{-1/2}`` ([`spectral_embedding`][spectral_embedding]), normalises the embedding
    (``embedding_norm``) and assigns labels (``assign_labels``). ``W`` is used as given,
    diagonal included; ``EigshSpectralClustering(kernel="precomputed")`` drops the
    diagonal first (no self-loops, like every kernel).

    Parameters
    ----------
    affinity : {array-like, sparse matrix} of shape (n_samples, n_samples)
        Symmetric non-negative affinity.
    n_clusters : int, default=8
        Number of clusters.
    n_components : int, optional
        Number of eigenvectors (``n_clusters`` when None).
    eigen_solver : {"arpack", "lobpcg", "amg"}, default="arpack"
        See [`spectral_embedding`][spectral_embedding].
    eigen_tol : float or "auto", default="auto"
        See [`spectral_embedding`][spectral_embedding].
    assign_labels : {"kmeans", "discretize", "cluster_qr"}, default="kmeans"
        Label assignment in the embedding (see
        [`assign_labels`][spectralnet_seg.cluster.assign_labels]).
    embedding_norm : {"degree", "row", "auto"} or None, default="degree"
        ``"degree"``: rows divided by ``sqrt(d)``, the random-walk eigenvectors (Shi &
        Malik; what scikit-learn's ``SpectralClustering`` clusters); ``"row"``: unit-norm
        rows (Ng, Jordan & Weiss, 2001); ``"auto"``: the one with the lower normalised cut
        ([`cluster_embedding`][cluster_embedding]); None: the raw eigenvectors.
    n_init : int, default=10
        Number of k-means restarts.
    random_state : int, RandomState instance or None, default=None
        Seeds the eigensolver and the label assignment.
    return_embedding : bool, default=False
        Also return the eigenvalues and eigenvectors.

    Returns
    -------
    labels : ndarray of shape (n_samples,)
        Cluster labels in ``[0, n_clusters)``.
    eigenvalues : ndarray of shape (n_components,)
        Only when ``return_embedding=True``.
    eigenvectors : ndarray of shape (n_samples, n_components)
        Only when ``return_embedding=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from spectralnet_seg.cluster import spectral_clustering
    >>> W = np.kron(np.eye(2), np.ones((3, 3))) + 0.01
    >>> spectral_clustering(W, n_clusters=2, random_state=0)
    array([0, 0, 0, 1, 1, 1], dtype=int32)
    """
    W = check_affinity(affinity)
    check_n_clusters(n_clusters, W.shape[0])
    rs = check_random_state(random_state)
    values, vectors = spectral_embedding(
        W, n_clusters if n_components is None else n_components, eigen_solver=eigen_solver, eigen_tol=eigen_tol,
        random_state=rs)
    degree = np.asarray(W.sum(axis=1)).ravel()
    labels, _, _ = cluster_embedding(vectors, degree, n_clusters, norm=embedding_norm,
                                     method=assign_labels, n_init=n_init, random_state=rs,
                                     graph=W)
    if return_embedding:
        return labels, values, vectors
    return labels
