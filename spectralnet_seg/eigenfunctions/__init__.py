"""Neural eigenfunctions: ψ networks, the NeuralEF loss, normalisation, discretisation, diagnostics."""

from .diagnostics import AlignmentReport, eigenfunction_alignment, orthogonality_error
from .discretize import cosine_temperature, gumbel_softmax
from .losses import (
    diffusion_operator,
    eigenvalues_from_diffusion,
    minibatch_operator,
    neuralef_loss,
    rayleigh_matrices,
)
from .networks import (
    MLPEigenfunctions,
    RandomFourierFeatures,
    TransformerEigenfunctions,
    orthogonal_head,
)
from .normalization import ColumnNormalization

__all__ = [
    "AlignmentReport",
    "ColumnNormalization",
    "MLPEigenfunctions",
    "RandomFourierFeatures",
    "TransformerEigenfunctions",
    "cosine_temperature",
    "diffusion_operator",
    "eigenfunction_alignment",
    "eigenvalues_from_diffusion",
    "gumbel_softmax",
    "minibatch_operator",
    "neuralef_loss",
    "orthogonal_head",
    "orthogonality_error",
    "rayleigh_matrices",
]
