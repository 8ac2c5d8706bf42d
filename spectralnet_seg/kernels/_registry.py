"""String registry of kernels, in the style of timm's model registry.

>>> from spectralnet_seg.kernels import make_kernel, list_kernels
>>> "knn" in list_kernels()
True
>>> make_kernel("knn", n_neighbors=5).n_neighbors
5
"""

from __future__ import annotations

from collections.abc import Callable

from sklearn.base import clone

from .._registry import Registry
from ._base import Kernel

KERNELS = Registry("kernel")
"""The kernel registry (see
[`spectralnet_seg._registry.Registry`][spectralnet_seg._registry.Registry])."""


def register_kernel(name: str) -> Callable[[Callable[..., Kernel]], Callable[..., Kernel]]:
    """Class decorator that registers a kernel constructor under ``name``.

    Parameters
    ----------
    name : str
        Registry key, lower case (e.g. ``"knn"``).
    """
    return KERNELS.register(name)


def list_kernels(pattern: str = "*") -> list[str]:
    """Names of the registered kernels matching a shell-style ``pattern``, sorted."""
    return KERNELS.list(pattern)


def make_kernel(name: str, **params) -> Kernel:
    """Build a registered kernel by name.

    Parameters
    ----------
    name : str
        One of [`list_kernels`][list_kernels].
    **params
        Constructor parameters of that kernel.

    Returns
    -------
    Kernel
    """
    return KERNELS.create(name, **params)


def resolve_kernel(kernel: str | Kernel) -> Kernel:
    """Return a fresh (unfitted), validated copy of ``kernel``, built first if it is a name.

    Estimators call this in ``fit`` so that the user's kernel object is never mutated, and
    so that the kernel's parameters are validated once per fit: ``Kernel.batch``, which
    runs every training step, does not validate them again.

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        When a parameter of the kernel (or of a member of a combined kernel) is invalid.
    """
    if isinstance(kernel, str):
        kernel = make_kernel(kernel)
    elif isinstance(kernel, Kernel):
        kernel = clone(kernel)
    else:
        raise TypeError(
            f"kernel must be a registered name ({', '.join(list_kernels())}) or a Kernel "
            f"instance, got {type(kernel).__name__}"
        )
    kernel._validate_params()
    return kernel
