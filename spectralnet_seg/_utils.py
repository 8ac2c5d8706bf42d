"""Small helpers shared across the package: devices, seeding, progress bars, input checks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import numpy as np
from sklearn.utils import check_random_state

T = TypeVar("T")


def resolve_device(device: str | None = "auto"):
    """Return a :class:`torch.device` for ``device``.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"} or torch.device, default="auto"
        ``"auto"`` picks CUDA when available, else the CPU.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If the name is not a torch device, or a CUDA or MPS device is requested but not
        available in this build or on this machine.
    """
    import torch

    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device; use 'cpu', 'cuda', "
                         "'cuda:N', 'mps' or 'auto'.") from err
    available = {"cuda": torch.cuda.is_available,
                 "mps": lambda: torch.backends.mps.is_available()}
    if device.type in available and not available[device.type]():
        name = "CUDA" if device.type == "cuda" else "MPS (Apple GPU)"
        raise ValueError(
            f"device={str(device)!r} was requested but {name} is not available; "
            "use device='cpu' or device='auto'."
        )
    return device


def torch_generator(random_state, device=None):
    """Return a seeded :class:`torch.Generator` derived from a sklearn ``random_state``.

    Parameters
    ----------
    random_state : int, RandomState instance or None
        Seed source, as in scikit-learn.
    device : torch.device or str, optional
        Device of the generator (CPU by default).
    """
    import torch

    rng = check_random_state(random_state)
    seed = int(rng.randint(0, np.iinfo(np.int32).max))
    gen = torch.Generator(device=device or "cpu")
    gen.manual_seed(seed)
    return gen


def progress(iterable: Iterable[T], *, verbose: bool | int, desc: str, total: int | None = None,
             leave: bool = False) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm progress bar when ``verbose`` is truthy.

    Parameters
    ----------
    iterable : iterable
        What to iterate over.
    verbose : bool or int
        Show the bar when truthy; silent otherwise.
    desc : str
        Label of the bar.
    total : int, optional
        Number of items, when ``len(iterable)`` is not available.
    leave : bool, default=False
        Keep the bar on screen after it finishes.
    """
    if not verbose:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=leave)


def check_finite_2d(X, *, name: str = "X", dtype=np.float32, copy: bool = False) -> np.ndarray:
    """Validate a dense 2-D float array with a clear message for the usual mistakes.

    Wraps :func:`sklearn.utils.check_array`, which already rejects NaN/inf, empty
    and 1-D input with explicit messages.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Input data.
    name : str, default="X"
        Name used in error messages.
    dtype : numpy dtype, default=np.float32
        Output dtype.
    copy : bool, default=False
        Force a copy.

    Returns
    -------
    ndarray of shape (n_samples, n_features)
        C-contiguous array of ``dtype``.
    """
    from sklearn.utils import check_array

    X = check_array(X, dtype=dtype, order="C", copy=copy, input_name=name,
                    ensure_all_finite=True)
    return X
