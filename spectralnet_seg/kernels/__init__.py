"""Affinity kernels shared by every estimator (see :class:`Kernel`)."""

from ._base import Kernel, degree_normalize, degree_normalize_dense
from ._registry import list_kernels, make_kernel, register_kernel, resolve_kernel

__all__ = [
    "Kernel",
    "degree_normalize",
    "degree_normalize_dense",
    "list_kernels",
    "make_kernel",
    "register_kernel",
    "resolve_kernel",
]
