"""Small helpers shared across the package: devices, seeding, progress bars, input checks."""

from __future__ import annotations

import inspect
import math
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


class DeviceUnavailableError(ValueError):
    """A valid torch device that this machine lacks (no CUDA / MPS, or too few GPUs)."""


def resolve_device(device: str | None = "auto"):
    """Return a ``torch.device`` for ``device``.

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
        If the name is not a torch device.
    DeviceUnavailableError
        A ValueError: a CUDA or MPS device is requested but not available in this build or
        on this machine.
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
        raise DeviceUnavailableError(
            f"device={str(device)!r} was requested but {name} is not available; "
            "use device='cpu' or device='auto'."
        )
    if device.type == "cuda" and device.index is not None and (
            device.index >= torch.cuda.device_count()):
        raise DeviceUnavailableError(
            f"device={str(device)!r} was requested but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 to "
            f"cuda:{torch.cuda.device_count() - 1}).")
    return device


def loaded_model_device(device, owner: str):
    """The device a fitted, possibly unpickled, model runs on: ``device``, or the CPU where
    that device is missing here (a model fitted on a GPU and loaded on a machine without
    one), with a warning.

    Parameters
    ----------
    device : str, torch.device or None
        The owner's ``device`` parameter.
    owner : str
        Its class name, for the warning.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If ``device`` is not a torch device name at all (a typo stays an error; only a
        [`DeviceUnavailableError`][DeviceUnavailableError] falls back).
    """
    import torch

    try:
        return resolve_device(device)
    except DeviceUnavailableError as err:
        warnings.warn(f"{err} The fitted {owner} runs on the CPU; set device='cpu' (or "
                      "'auto') to silence this.", UserWarning, stacklevel=user_stacklevel())
        return torch.device("cpu")


# cgroup v2's "quota period" file, then v1's two files: a container's CPU quota (docker
# --cpus, Kubernetes CPU limits), which the affinity mask does not show.
_CGROUP_CPU_FILES: tuple[tuple[str, ...], ...] = (
    ("/sys/fs/cgroup/cpu.max",),
    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
)


def _cgroup_cpu_quota() -> float | None:
    """CPUs' worth of time the cgroup CPU quota grants, or None where there is no quota."""
    for files in _CGROUP_CPU_FILES:
        fields: list[str] = []
        try:
            for name in files:
                with open(name) as fh:
                    fields += fh.read().split()
        except OSError:
            continue
        if len(fields) < 2 or fields[0] in ("max", "-1"):
            return None
        try:
            quota, period = float(fields[0]), float(fields[1])
        except ValueError:
            return None
        return quota / period if quota > 0 and period > 0 else None
    return None


def available_cores() -> int:
    """CPU cores this process may run on: its affinity mask (all cores where there is none),
    at most its cgroup CPU quota rounded up (a 2-CPU container on a 64-core host: 2)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return cores


def progress(iterable: Iterable[T], *, verbose: bool | int, desc: str, total: int | None = None,
             leave: bool = False, initial: int = 0) -> Iterable[T]:
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
    initial : int, default=0
        Count the bar starts from (work done before, e.g. by a resumed run).
    """
    if not verbose:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=leave, initial=initial)


# scikit-learn's wording (check_array with dtype="numeric"), so users see one message.
_NOT_NUMERIC = ("dtype='numeric' is not compatible with arrays of bytes/strings. Convert your "
                "data to numeric values explicitly instead.")


def check_numeric(X, *, name: str = "X"):
    """Refuse strings and other non-numbers with scikit-learn's message instead of numpy's.

    numpy's "could not convert string to float: 'a'" names neither the argument nor the
    fix. Sparse matrices, tensors and objects numpy cannot view as one array (ragged
    lists, feature sources) pass through unchanged for the caller's own checks.

    Parameters
    ----------
    X : object
        The input about to be converted to a float array.
    name : str, default="X"
        Name used in the message.

    Returns
    -------
    X : object
        ``X`` itself.

    Raises
    ------
    ValueError
        If ``X`` is an array of strings or bytes, an object array holding a string that is
        not a number, or a file path (or list of them) instead of the data.

    Examples
    --------
    >>> check_numeric([[1, 2], [3, "4a"]])
    Traceback (most recent call last):
    ...
    ValueError: X holds strings or other values that are not numbers (dtype <U21). dtype='numeric' is not compatible with arrays of bytes/strings. Convert your data to numeric values explicitly instead.
    """
    import scipy.sparse as sp

    if sp.issparse(X) or hasattr(X, "detach"):
        return X
    if _is_path_or_paths(X):
        raise ValueError(
            f"{name} is a file path or a list of paths, but in-memory data are expected "
            "here: load it first (e.g. np.load(path)). The neural estimators read .npy "
            "files and shard folders themselves.")
    try:
        array = X if isinstance(X, np.ndarray) else np.asarray(X)
    except (TypeError, ValueError):
        return X
    numeric = array.dtype.kind not in "USV"
    if array.dtype.kind == "O":
        try:
            array.astype(np.float64)
        except ValueError:  # a string that is not a number
            numeric = False
        except TypeError:  # dicts, None...: numpy's TypeError is what sklearn expects too
            pass
    if not numeric:
        raise ValueError(f"{name} holds strings or other values that are not numbers (dtype "
                         f"{array.dtype}). {_NOT_NUMERIC}")
    return X


def is_path_list(X) -> bool:
    """Whether ``X`` is a non-empty sequence (not a string) of ``str`` / ``os.PathLike``."""
    return (isinstance(X, Sequence) and not isinstance(X, (str, bytes)) and len(X) > 0
            and all(isinstance(x, (str, os.PathLike)) for x in X))


def _is_path_or_paths(X) -> bool:
    """Whether ``X`` is a file path, or a non-empty sequence of them.

    A string counts as a path when it names something on disk or ends in ``.npy``, so that
    words that are not numbers keep scikit-learn's message.
    """
    def is_path(x) -> bool:
        return isinstance(x, os.PathLike) or (isinstance(x, str) and (
            x.lower().endswith(".npy") or os.path.exists(x)))

    return all(is_path(x) for x in X) if is_path_list(X) else is_path(X)


def check_finite_rows(chunk: np.ndarray, *, offset: int = 0, name: str = "X",
                      note: str = "") -> None:
    """Raise a ValueError naming the first NaN or infinite entry of a block of rows.

    The one finiteness check of the package for data read in chunks (memmaps, feature
    sources, the kNN search's streaming pass): callers loop over their chunks and pass each
    one with the index of its first row.

    Parameters
    ----------
    chunk : ndarray of shape (n_rows, n_features)
        Rows ``offset`` to ``offset + n_rows`` of the data.
    offset : int, default=0
        Index of the chunk's first row in the whole data (reported in the message).
    name : str, default="X"
        Name of the data in the message.
    note : str, default=""
        Added after "contains NaN or infinity".

    Examples
    --------
    >>> check_finite_rows(np.array([[0.0, 1.0], [2.0, np.inf]]), offset=10)
    Traceback (most recent call last):
    ...
    ValueError: X contains NaN or infinity: first at row 11, column 1 (value inf); clean or drop those rows first.
    """
    finite = np.isfinite(chunk)
    if finite.all():
        return
    row, col = np.argwhere(~finite)[0]
    raise ValueError(f"{name} contains NaN or infinity{note}: first at row {offset + row}, "
                     f"column {col} (value {chunk[row, col]}); clean or drop those rows first.")


def check_float32_rows(chunk, rows: np.ndarray, *, offset: int = 0, name: str = "X",
                       precision_of: str, note: str = "") -> None:
    """Raise a ValueError naming the first entry of ``rows``, the float32 conversion of
    ``chunk``, that is not finite: "beyond float32's range" where ``chunk`` held a finite
    value there, "contains NaN or infinity" (as [`check_finite_rows`][check_finite_rows])
    where it did not.

    The one message, for the kNN search, the kernels and the neural estimators, about values
    above float32's ~3.4e38 that a conversion turned into inf (they were reported as
    "contains NaN or infinity" about data holding none).

    Parameters
    ----------
    chunk : array-like of shape (n_rows, n_features)
        Rows ``offset`` to ``offset + n_rows`` of the data, as given.
    rows : ndarray of shape (n_rows, n_features), float32
        The same rows converted.
    offset : int, default=0
        Index of the chunk's first row in the whole data (reported in the message).
    name : str, default="X"
        Name of the data in the message.
    precision_of : str
        What computes in float32, for the message (e.g. ``"the network"``).
    note : str, default=""
        Passed to [`check_finite_rows`][check_finite_rows] (``chunk`` may be float32
        already: a feature source's rows, whose storage may have been wider).

    Examples
    --------
    >>> chunk = np.array([[0.0, 1.0], [2.0, 1e39]])
    >>> check_float32_rows(chunk, chunk.astype(np.float32), offset=10, precision_of="faiss")
    Traceback (most recent call last):
    ...
    ValueError: X has values beyond float32's range (|value| up to 1e+39, above 3.4e+38; first at row 11, column 1), the precision of faiss; divide X by a constant first (a kNN graph does not change).
    """
    finite = np.isfinite(rows)
    if finite.all():
        return
    row, col = np.argwhere(~finite)[0]
    wide = np.asarray(chunk)  # its own dtype: long double holds values beyond float64 too
    if not np.isfinite(wide[row, col]):
        check_finite_rows(rows, offset=offset, name=name, note=note)
    values = np.abs(wide[~finite])
    peak = values[np.isfinite(values)].max()
    peak = (f"{float(peak):.3g}" if np.isfinite(float(peak))
            else np.format_float_scientific(peak, precision=2, trim="-"))
    raise ValueError(
        f"{name} has values beyond float32's range (|value| up to {peak}, above "
        f"{float(np.finfo(np.float32).max):.3g}; first at row {offset + row}, column {col}), "
        f"the precision of {precision_of}; divide {name} by a constant first (a kNN graph "
        "does not change).")


def check_finite_2d(X, *, name: str = "X", dtype=np.float32, copy: bool = False) -> np.ndarray:
    """Validate a dense 2-D float array with a clear message for the usual mistakes.

    Wraps ``sklearn.utils.check_array``, which already rejects NaN/inf, empty
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

    X = check_array(check_numeric(X, name=name), dtype=dtype, order="C", copy=copy,
                    input_name=name,
                    ensure_all_finite=True)
    return X


def _library_folders() -> tuple[str, ...]:
    import sklearn

    return (os.path.dirname(os.path.abspath(__file__)) + os.sep,
            os.path.dirname(os.path.abspath(sklearn.__file__)) + os.sep)


def user_stacklevel() -> int:
    """``stacklevel`` that makes a warning point at the first caller outside this package
    and scikit-learn (whose ``fit`` and parameter-validation wrappers sit in between).

    Called as ``warnings.warn(message, Category, stacklevel=user_stacklevel())``: a fixed
    level is right for one call path only, and pointed into scikit-learn's wrappers.
    """
    folders = _library_folders()
    frame, level = sys._getframe(1), 1  # level 1: the function that calls warnings.warn
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(folders):
        frame, level = frame.f_back, level + 1
    return level


def accepts_keyword(method, name: str) -> bool:
    """Whether ``method`` takes the keyword argument ``name`` (by name or ``**kwargs``)."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):  # a builtin or C method without a signature
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def as_numpy(value) -> np.ndarray:
    """``value`` as a numpy array; a torch tensor is detached and copied to the CPU, and a
    bfloat16 one (numpy has no such dtype) becomes float32 with the same values."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = value.float() if str(value.dtype) == "torch.bfloat16" else value
        return value.numpy()
    return np.asarray(value)


def is_integer(value) -> bool:
    """An integer (Python or numpy), not a bool: ``True`` would silently count as 1."""
    from numbers import Integral

    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """A real number (Python or numpy, integer or float), not a bool."""
    from numbers import Real

    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_))


def stable_description(value):
    """A JSON-ready description of parameters, equal exactly when they are.

    What identifies a run (a checkpoint, an extraction to resume): nested estimators by
    class and parameters (recursively), arrays and tensors by shape, dtype and a SHA-256 of
    their bytes, torch modules by their architecture and weights. ``repr`` is not enough:
    scikit-learn and numpy elide long ones ("..."), so two settings that differ inside would
    look the same.

    Examples
    --------
    >>> stable_description({"k": 10, "weights": np.zeros(2)})["weights"]["array"]
    [2]
    """
    import hashlib
    import re

    if isinstance(value, dict):
        return {str(k): stable_description(v)
                for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [stable_description(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "state_dict") and hasattr(value, "parameters"):  # a torch module
        return {"module": re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value)),
                "weights": stable_description(dict(value.state_dict()))}
    if isinstance(value, np.ndarray) or hasattr(value, "detach"):
        array = np.ascontiguousarray(as_numpy(value))
        digest = hashlib.sha256(array.view(np.uint8).reshape(-1) if array.dtype != object
                                else repr(array.tolist()).encode()).hexdigest()
        return {"array": list(array.shape), "dtype": str(array.dtype), "sha256": digest}
    if hasattr(value, "get_params"):
        return {"class": type(value).__qualname__,
                "params": stable_description(value.get_params(deep=False))}
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))
