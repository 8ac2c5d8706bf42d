"""``EigshSpectralClustering``: the classic eigsh baseline, with a Nyström ``predict``.

A thin validated wrapper around the free functions of ``_spectral_embedding`` (the math)
and ``_assign`` (label assignment), as scikit-learn's ``SpectralClustering`` wraps
``spectral_clustering``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.base import ClassNamePrefixFeaturesOutMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, check_non_negative, validate_data

from .._utils import check_numeric, user_stacklevel
from ..kernels import kernel_tags
from ..metrics import normalized_cut
from ._assign import cluster_embedding, nearest_centroid, normalize_embedding
from ._base import BaseSpectralClustering, check_n_clusters, check_n_components
from ._registry import register_estimator
from ._spectral_embedding import (
    check_affinity,
    nystrom_extension,
    spectral_embedding,
)
from ._spectral_embedding.clustering import SPECTRAL_CLUSTERING_CONSTRAINTS

__all__ = ["EigshSpectralClustering"]

def _is_precomputed(kernel) -> bool:
    """Whether ``kernel`` takes affinities instead of features (its declared tags)."""
    try:
        return kernel_tags(kernel).input_is_affinity
    except (ValueError, TypeError):  # an unknown kernel name: fit reports it
        return False


@register_estimator("eigsh")
class EigshSpectralClustering(ClassNamePrefixFeaturesOutMixin, BaseSpectralClustering):
    """Normalised spectral clustering by sparse eigendecomposition, with out-of-sample predict.

    ``fit`` builds the affinity ``W = kernel.graph(X)``, computes the top ``n_components``
    eigenvectors of ``M = D^{-1/2} W D^{-1/2}`` (ARPACK, LOBPCG or AMG-preconditioned
    LOBPCG), normalises the rows of this embedding and assigns labels (k-means, Yu–Shi
    discretisation or cluster_qr). ``transform`` embeds new points by the Nyström
    extension through the same kernel — each new point's affinities to the fitted points,
    weighted by the eigenvectors and divided by the eigenvalue — and ``predict`` labels
    them by the nearest cluster centre in the normalised embedding, which scikit-learn's
    ``SpectralClustering`` cannot do.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    kernel : str or Kernel, default="knn"
        Affinity: a registered name ([`list_kernels`][spectralnet_seg.kernels.list_kernels], built
        with its defaults) or a [`Kernel`][spectralnet_seg.kernels.Kernel] instance (cloned,
        never modified). With ``"precomputed"``, ``X`` in ``fit`` is the affinity matrix
        and ``X`` in ``transform``/``predict`` the cross-affinity to the fitted points.
        Neighbour counts the kernel declares (``Kernel.neighbor_params``, e.g.
        ``n_neighbors``; members of a ``SumKernel`` included) larger than
        ``n_samples - 1`` are lowered to ``n_samples - 1`` with a warning, so small data
        sets (a small image with the paper's k = 256) still work.
    n_components : int, optional
        Number of eigenvectors K; ``n_clusters`` when None.
    eigen_solver : {"arpack", "lobpcg", "amg"}, default="arpack"
        Eigensolver (see [`spectral_embedding`][spectralnet_seg.cluster.spectral_embedding]);
        ``"amg"``
        needs pyamg (the ``amg`` extra). ``"arpack"`` runs in shift-invert mode on nearly
        planar graphs (an image's pixel grid, as in scikit-learn's coins example) and in
        normal mode on kNN graphs, whichever converges fast on the graph at hand. Graphs
        under 200 nodes use a dense solver.
    eigen_tol : float or "auto", default="auto"
        Eigensolver tolerance; ``"auto"``: machine precision for ARPACK, LOBPCG's default
        for ``"lobpcg"``, at most 1e-3 for ``"amg"`` (see
        [`spectral_embedding`][spectralnet_seg.cluster.spectral_embedding]).
    assign_labels : {"kmeans", "discretize", "cluster_qr"}, default="kmeans"
        Label assignment in the normalised embedding. ``"discretize"`` and
        ``"cluster_qr"`` need ``n_components >= n_clusters``.
    embedding_norm : {"degree", "row", "auto"} or None, default="degree"
        Row scaling before label assignment: ``"degree"`` rows divided by ``sqrt(degree)``,
        the random-walk eigenvectors (Shi & Malik) that scikit-learn's ``SpectralClustering``
        clusters and the neural estimators learn; ``"row"`` unit-norm rows (Ng, Jordan &
        Weiss); None the raw eigenvectors. ``"degree"`` is the default because ``"row"``
        gives every point the same weight in k-means, however weakly it is connected:
        points in low-density bands between clusters, and pixels of a flat background in an
        image graph, then pull centres towards them (scikit-learn's coins graph at 20 %:
        normalised cut 0.030 with ``"row"`` against 0.0017 with ``"degree"``; on iris and
        breast_cancer ``"row"`` also loses 0.03 NMI). ``"auto"`` tries both and keeps the
        lower normalised cut on the training graph (``embedding_norm_``; see
        [`cluster_embedding`][spectralnet_seg.cluster.cluster_embedding]).
    n_init : int, default=10
        Number of k-means restarts (``assign_labels="kmeans"``).
    random_state : int, RandomState instance or None, default=None
        Seeds the eigensolver start vectors and the label assignment; an int makes
        ``fit`` deterministic.
    verbose : bool, default=False
        Print the size of the graph and the time of each stage.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,), int32
        Cluster of each training point.
    normalized_cut_ : float
        Normalised cut of ``labels_`` on ``affinity_matrix_`` (lower is better): the
        objective the method relaxes, to compare clusterings of one graph without labels.
    embedding_norm_ : str or None
        The row scaling used (the one chosen with ``embedding_norm="auto"``).
    embedding_ : ndarray of shape (n_samples, n_components)
        Eigenvectors of ``M`` (unit-norm columns, decreasing eigenvalue).
    eigenvalues_ : ndarray of shape (n_components,)
        Matching eigenvalues of ``M``, decreasing (at most 1).
    affinity_matrix_ : scipy.sparse.csr_matrix of shape (n_samples, n_samples)
        ``kernel_.graph(X)``.
    degree_ : ndarray of shape (n_samples,)
        Degrees of ``affinity_matrix_`` (its row sums).
    kernel_ : Kernel
        The fitted copy of ``kernel``.
    cluster_centers_ : ndarray of shape (n_clusters, n_components)
        Centres in the normalised embedding used by ``predict``: the k-means centroids,
        or for ``"discretize"``/``"cluster_qr"`` the mean embedding of each training
        cluster (NaN rows for clusters left empty).
    n_features_in_ : int
        Number of features of ``X``; with ``kernel="precomputed"``, the number of fitted
        samples (the number of columns ``predict`` expects).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``X`` has string column names.

    See Also
    --------
    spectral_clustering : The same algorithm as a function of a precomputed affinity.
    sklearn.cluster.SpectralClustering : scikit-learn's version (no ``predict``).

    Notes
    -----
    ``fit_transform(X)`` returns ``fit(X).transform(X)``, the Nyström embedding of the
    training points, which approximates ``embedding_`` (it equals it for a precomputed
    affinity with a zero diagonal); ``embedding_`` holds the exact eigenvectors.
    ``predict`` on the training points approximately reproduces ``labels_``: a kNN
    cross-affinity links each query to its own neighbours (itself included) without the
    training graph's symmetrisation, so a few points in a hundred may change cluster with
    ``"kmeans"`` (up to about 5 % in a review's sweep), and up to about 10 % with
    ``"discretize"`` and ``"cluster_qr"`` (which use the nearest mean of the training
    clusters, having no natural rule for new points). The Nyström step divides by the
    eigenvalues, so the gap grows when some of ``eigenvalues_`` are small (many
    components, or nearly as many clusters as points): with ``n_components=40`` on 150
    points (smallest eigenvalue 0.006) a fifth of the points changed cluster. Use
    ``labels_`` or ``fit_predict`` for the training points' own labels.

    References
    ----------
    .. [1] A. Ng, M. Jordan, Y. Weiss, "On Spectral Clustering: Analysis and an
       Algorithm", NIPS 2001.
    .. [2] U. von Luxburg, "A Tutorial on Spectral Clustering", Statistics and
       Computing 17(4), 2007.
    .. [3] Y. Bengio, J.-F. Paiement, P. Vincent, O. Delalleau, N. Le Roux, M. Ouimet,
       "Out-of-Sample Extensions for LLE, Isomap, MDS, Eigenmaps, and Spectral
       Clustering", NIPS 2004 (the Nyström extension).
    .. [4] S. Yu, J. Shi, "Multiclass Spectral Clustering", ICCV 2003.
    .. [5] A. Damle, V. Minden, L. Ying, "Simple, direct and efficient multi-way spectral
       clustering", Information and Inference 8(1), 2019.

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> from sklearn.metrics import adjusted_rand_score
    >>> from spectralnet_seg.cluster import EigshSpectralClustering
    >>> from spectralnet_seg.kernels import make_kernel
    >>> X, y = make_blobs(n_samples=300, centers=3, random_state=1)
    >>> est = EigshSpectralClustering(
    ...     n_clusters=3, kernel=make_kernel("knn", metric="l2"), random_state=0
    ... ).fit(X[:250])
    >>> est.embedding_.shape
    (250, 3)
    >>> adjusted_rand_score(y[:250], est.labels_) > 0.9
    True
    >>> adjusted_rand_score(y[250:], est.predict(X[250:])) > 0.9
    True
    """

    _parameter_constraints: dict = {
        **BaseSpectralClustering._base_constraints,
        **SPECTRAL_CLUSTERING_CONSTRAINTS,
        "verbose": ["verbose"],
    }

    def __init__(self, n_clusters: int = 8, *, kernel="knn", n_components: int | None = None,
                 eigen_solver: str = "arpack", eigen_tol: float | str = "auto",
                 assign_labels: str = "kmeans", embedding_norm: str | None = "degree",
                 n_init: int = 10, random_state=None, verbose: bool = False):
        self.n_clusters = n_clusters
        self.kernel = kernel
        self.n_components = n_components
        self.eigen_solver = eigen_solver
        self.eigen_tol = eigen_tol
        self.assign_labels = assign_labels
        self.embedding_norm = embedding_norm
        self.n_init = n_init
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers
    def _log(self, message: str, start: float) -> None:
        if self.verbose:
            print(f"[{type(self).__name__}] {message} ({time.perf_counter() - start:.2f}s)")

    def _validate_affinity_input(self, X, *, reset: bool):
        """Validate a precomputed (cross-)affinity; ``n_features_in_`` = fitted samples.

        Finiteness, sign and shape are checked here, symmetry by the kernel's ``graph``
        (the precomputed kernel symmetrises a non-symmetric affinity with a warning).
        """
        X = validate_data(self, check_numeric(X), accept_sparse=["csr", "csc", "coo"],
                          dtype=np.float64, ensure_min_samples=2 if reset else 1, reset=reset)
        # sklearn's standard message, which check_estimator expects for positive_only.
        check_non_negative(X, f"{type(self).__name__} with kernel='precomputed'")
        if reset:
            if X.shape[0] != X.shape[1]:
                raise ValueError(
                    "with kernel='precomputed', X must be a square (n_samples, n_samples) "
                    f"affinity matrix, got shape {X.shape}.")
            check_n_clusters(self.n_clusters, X.shape[0])
        return X

    def _clip_neighbors(self, kernel, n_samples: int) -> None:
        """Lower the kernel's declared neighbour counts to n_samples - 1 at most."""
        if not hasattr(kernel, "cap_neighbors"):  # a duck-typed kernel declares nothing
            return
        too_big = kernel.cap_neighbors(n_samples - 1)
        if too_big:
            warnings.warn(
                f"{type(kernel).__name__} parameters {too_big} exceed n_samples - 1 = "
                f"{n_samples - 1}; using {n_samples - 1} instead.", UserWarning,
                stacklevel=user_stacklevel())

    def _embed_new(self, X, context=None) -> tuple[np.ndarray, np.ndarray]:
        """Nyström eigenvectors of new points, and their degrees to the fitted points."""
        check_is_fitted(self)
        if _is_precomputed(self.kernel_):
            X = self._validate_affinity_input(X, reset=False)
        else:
            X = self._validate_predict_input(X)
        C = sp.csr_matrix(self.kernel_.cross(X, context), dtype=np.float64)
        U = nystrom_extension(C, self.degree_, self.embedding_, self.eigenvalues_)
        return U, np.asarray(C.sum(axis=1)).ravel()

    # ------------------------------------------------------------------ API
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, context=None):
        """Cluster ``X`` (features, or an affinity with ``kernel="precomputed"``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or {array-like, sparse matrix} \
of shape (n_samples, n_samples) with ``kernel="precomputed"``
            Training data, or the symmetric non-negative affinity.
        y : Ignored
            Not used, present for API consistency.
        context : object, optional
            Per-sample side information for kernels that use it, e.g. the token colours
            and positions ([`TokenContext`][spectralnet_seg.kernels.TokenContext]) of
            [`SpatialColorKernel`][spectralnet_seg.kernels.SpatialColorKernel]; ignored by plain
            feature
            kernels.

        Returns
        -------
        self : EigshSpectralClustering
            Fitted estimator.
        """
        start = time.perf_counter()
        kernel = self._resolve_kernel()
        if _is_precomputed(kernel):
            X = self._validate_affinity_input(X, reset=True)
        else:
            X = self._validate_fit_input(X)
        n_samples = X.shape[0]
        n_components = self.n_clusters if self.n_components is None else self.n_components
        check_n_components(n_components, n_samples)
        if self.assign_labels != "kmeans" and n_components < self.n_clusters:
            raise ValueError(
                f"assign_labels={self.assign_labels!r} needs n_components >= n_clusters, "
                f"got n_components={n_components} < n_clusters={self.n_clusters}.")
        self._clip_neighbors(kernel, n_samples)

        W = check_affinity(kernel.graph(X, context), name=f"{type(kernel).__name__}.graph(X)")
        self._log(f"affinity graph: {n_samples} nodes, {W.nnz} non-zeros", start)
        rs = check_random_state(self.random_state)
        values, vectors = spectral_embedding(
            W, n_components, eigen_solver=self.eigen_solver, eigen_tol=self.eigen_tol,
            random_state=rs)
        self._log(f"{n_components} eigenvectors with {self.eigen_solver!r}", start)
        degree = np.asarray(W.sum(axis=1)).ravel()
        labels, centers, self.embedding_norm_ = cluster_embedding(
            vectors, degree, self.n_clusters, norm=self.embedding_norm,
            method=self.assign_labels, n_init=self.n_init, random_state=rs, graph=W)
        self._log(f"labels by {self.assign_labels!r}", start)

        self.kernel_ = kernel
        self.affinity_matrix_ = W
        self.degree_ = degree
        self.eigenvalues_ = values
        self.embedding_ = vectors
        self.cluster_centers_ = centers
        self.labels_ = labels
        self.normalized_cut_ = normalized_cut(W, labels)
        return self

    def transform(self, X, *, context=None) -> np.ndarray:
        """Nyström embedding of new points (eigenvector coordinates, like ``embedding_``).

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), or {array-like, sparse matrix} \
of shape (n_queries, n_samples_fit) with ``kernel="precomputed"``
            New points, or their affinities to the fitted points.
        context : object, optional
            Side information of the new points for kernels that use it, e.g. the token colours
            and positions ([`TokenContext`][spectralnet_seg.kernels.TokenContext]) of
            [`SpatialColorKernel`][spectralnet_seg.kernels.SpatialColorKernel]; ignored by plain
            feature
            kernels.

        Returns
        -------
        embedding : ndarray of shape (n_queries, n_components), float64
            Zero rows for points with no affinity to any fitted point (with a warning).
        """
        return self._embed_new(X, context)[0]

    def predict(self, X, *, context=None) -> np.ndarray:
        """Cluster of new points: nearest centre of their normalised Nyström embedding.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), or {array-like, sparse matrix} \
of shape (n_queries, n_samples_fit) with ``kernel="precomputed"``
            New points, or their affinities to the fitted points.
        context : object, optional
            Side information of the new points for kernels that use it, e.g. the token colours
            and positions ([`TokenContext`][spectralnet_seg.kernels.TokenContext]) of
            [`SpatialColorKernel`][spectralnet_seg.kernels.SpatialColorKernel]; ignored by plain
            feature
            kernels.

        Returns
        -------
        labels : ndarray of shape (n_queries,), int32
        """
        U, query_degree = self._embed_new(X, context)
        E = normalize_embedding(U, query_degree, norm=self.embedding_norm_)
        return nearest_centroid(E, self.cluster_centers_)

    def fit_transform(self, X, y=None, *, context=None) -> np.ndarray:
        """Fit on ``X`` and return the Nyström embedding of ``X`` (see [`transform`][transform]).

        Parameters
        ----------
        X, y, context
            As in [`fit`][fit].

        Returns
        -------
        embedding : ndarray of shape (n_samples, n_components), float64
        """
        return self.fit(X, context=context).transform(X, context=context)

    @property
    def _n_features_out(self) -> int:
        # Output names of get_feature_names_out: one per eigenvector.
        return self.embedding_.shape[1]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        precomputed = _is_precomputed(self.kernel)
        tags.input_tags.pairwise = precomputed
        tags.input_tags.sparse = precomputed
        tags.input_tags.positive_only = precomputed
        return tags
