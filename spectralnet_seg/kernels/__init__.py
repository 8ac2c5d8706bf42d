"""Affinity kernels shared by every estimator (see [`Kernel`][Kernel]).

Importing this package registers the built-in kernels: ``"knn"``, ``"rbf"``, ``"cosine"``,
``"precomputed"``, ``"sum"``, ``"spatial_color"`` and ``"paper"`` (see
[`list_kernels`][list_kernels]).
"""

from ._base import Kernel, KernelTags, degree_normalize, degree_normalize_dense
from ._capabilities import kernel_tags, requires_context
from ._registry import list_kernels, make_kernel, register_kernel, resolve_kernel
from .combined import SumKernel
from .knn import KNNKernel
from .precomputed import PrecomputedKernel
from .rbf import CosineKernel, RBFKernel
from .spatial_color import (
    SpatialColorKernel,
    TokenContext,
    as_token_context,
    paper_kernel,
)

__all__ = [
    "CosineKernel",
    "KNNKernel",
    "Kernel",
    "KernelTags",
    "PrecomputedKernel",
    "RBFKernel",
    "SpatialColorKernel",
    "SumKernel",
    "TokenContext",
    "as_token_context",
    "degree_normalize",
    "degree_normalize_dense",
    "kernel_tags",
    "list_kernels",
    "make_kernel",
    "paper_kernel",
    "register_kernel",
    "requires_context",
    "resolve_kernel",
]
