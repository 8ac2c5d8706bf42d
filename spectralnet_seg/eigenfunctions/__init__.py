"""Neural eigenfunctions: ψ networks, the NeuralEF loss, normalisation, discretisation, diagnostics."""

from .diagnostics import AlignmentReport, eigenfunction_alignment, orthogonality_error
from .discretize import cosine_temperature, gumbel_softmax
from .losses import (
    diffusion_eigenvalues,
    eigenvalues_from_diffusion,
    graph_rayleigh_matrices,
    neuralef_loss,
    neuralef_objective,
    pair_rayleigh_matrices,
    rayleigh_matrices,
)
from .networks import (
    InputStandardization,
    MLPEigenfunctions,
    RandomFourierFeatures,
    TransformerEigenfunctions,
    orthogonal_head,
)
from .normalization import ColumnNormalization

__all__ = [
    "AlignmentReport",
    "ColumnNormalization",
    "InputStandardization",
    "MLPEigenfunctions",
    "RandomFourierFeatures",
    "TransformerEigenfunctions",
    "cosine_temperature",
    "diffusion_eigenvalues",
    "eigenfunction_alignment",
    "eigenvalues_from_diffusion",
    "graph_rayleigh_matrices",
    "gumbel_softmax",
    "neuralef_loss",
    "neuralef_objective",
    "orthogonal_head",
    "orthogonality_error",
    "pair_rayleigh_matrices",
    "rayleigh_matrices",
]
