"""Spectral clustering estimators: the eigsh baseline and the neural eigenfunction variants."""

from sklearn.cluster import KMeans

from ._assign import (
    assign_labels,
    cluster_embedding,
    cluster_qr,
    nearest_centroid,
    normalize_embedding,
)
from ._checkpoints import CheckpointError, CheckpointWarning
from ._discrete import DiscreteNeuralEigenClustering
from ._eigsh import EigshSpectralClustering
from ._neural import NeuralEigenClustering
from ._registry import estimator_defaults, list_estimators, make_estimator, register_estimator
from ._spectral_embedding import (
    DisconnectedGraphWarning,
    EigenSolverConvergenceError,
    IsolatedPointWarning,
    normalized_affinity,
    nystrom_extension,
    spectral_clustering,
    spectral_embedding,
)

# The package's estimators register themselves where they are defined
# (``@register_estimator("eigsh")``); k-means, the usual baseline on the same features, here.
register_estimator("kmeans")(KMeans)

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "DiscreteNeuralEigenClustering",
    "NeuralEigenClustering",
    "DisconnectedGraphWarning",
    "EigenSolverConvergenceError",
    "EigshSpectralClustering",
    "IsolatedPointWarning",
    "assign_labels",
    "cluster_embedding",
    "cluster_qr",
    "estimator_defaults",
    "list_estimators",
    "make_estimator",
    "nearest_centroid",
    "normalize_embedding",
    "normalized_affinity",
    "nystrom_extension",
    "register_estimator",
    "spectral_clustering",
    "spectral_embedding",
]
