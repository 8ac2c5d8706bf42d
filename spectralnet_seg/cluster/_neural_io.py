"""Data access and checkpoint files for the neural estimators.

Training data may be far larger than device memory (millions of patch tokens), so the
estimators never move a whole data set: numpy arrays, ``np.memmap`` files and torch tensors
are kept where they are, and only the rows of one minibatch (or one inference chunk) are
gathered, converted to float32 and sent to the device. The checkpoint files live in
``_checkpoints``; their functions are re-exported here for the estimators.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from sklearn.utils.validation import _check_feature_names, _check_n_features, validate_data

from .._numeric import Float32Rounding
from .._utils import check_float32_rows, check_numeric, is_path_list
from ..data._feature_source import (  # noqa: F401 - one chunk size for every sequential pass
    CHUNK_BYTES,
    chunk_rows,
)
from ._checkpoints import (  # noqa: F401 - the estimators reach checkpoints through this module
    CheckpointError,
    CheckpointWarning,
    checkpoint_path,
    checkpoints_wanted,
    data_checksum,
    load_checkpoint,
    resume_from_checkpoint,
    save_checkpoint,
)


def _lazy_view(X):
    """Return ``X`` as an array that may stay out of memory, or None for ordinary input.

    Torch tensors become numpy views (CPU tensors share memory; CUDA tensors are brought to
    the host once, never to another device). ``np.memmap`` files, ``.npy`` paths, shard
    directories and torch Datasets become [`FeatureSource`][spectralnet_seg.data.FeatureSource]
    objects, which read rows with ``pread`` so that resident memory stays bounded by the
    rows read (indexing a memmap would keep every touched page resident).
    """
    from ..data import FeatureSource, as_feature_source

    if isinstance(X, FeatureSource):
        return X
    if isinstance(X, (str, os.PathLike, torch.utils.data.Dataset)) or is_path_list(X):
        return as_feature_source(X)
    if isinstance(X, np.memmap):
        # Other shapes and dtypes keep the memmap, for the usual checks and messages below.
        return as_feature_source(X) if X.ndim == 2 and X.dtype.kind in "fiu" else X
    if isinstance(X, torch.Tensor):
        X = X.detach()
        if X.device.type != "cpu":
            X = X.cpu()
        if X.dtype in (torch.bfloat16, torch.float16) and X.ndim == 2:
            # Half precision is converted a minibatch at a time (a float32 copy of the
            # whole tensor would double its memory); numpy has no bfloat16, the source
            # keeps such a tensor as is.
            return as_feature_source(X)
        if X.dtype in (torch.bfloat16, torch.float16):
            X = X.float()  # not 2-D: refused below with scikit-learn's shape message
        return X.numpy()
    return None


def _check_lazy(estimator, X: np.ndarray, *, reset: bool, min_samples: int) -> np.ndarray:
    """Validate a lazy array without copying it: shape, dtype and finiteness (chunked)."""
    if X.ndim != 2:
        raise ValueError(
            f"Expected 2D array, got {X.ndim}D array instead with shape {X.shape}. Reshape "
            "your data with array.reshape(-1, 1) if it has a single feature or "
            "array.reshape(1, -1) if it contains a single sample."
        )
    if np.iscomplexobj(X):
        raise ValueError("Complex data not supported")
    if X.dtype.kind not in "fiub":
        raise ValueError(f"X must hold numbers; got an array of dtype {X.dtype}")
    n_samples, n_features = X.shape
    if n_samples < min_samples:
        raise ValueError(
            f"Found array with {n_samples} sample(s) (shape={X.shape}) while a minimum of "
            f"{min_samples} is required."
        )
    if n_features < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required."
        )
    from ..data import FeatureSource

    # A source's rows come as float32 whatever it reports as dtype (a torch Dataset reports
    # its first item's, which may be an integer row followed by rows holding NaN).
    if X.dtype.kind == "f" or isinstance(X, FeatureSource):
        wide = _wider_than_float32(X)
        # Only a source that converts on reading has lost the value by the time it is seen.
        converts = isinstance(X, FeatureSource) and (
            type(X).read_stored is FeatureSource.read_stored)
        _check_float32_rows(X, note=_SOURCE_NOTE if wide and converts else "",
                            report_rounding=reset and wide)
    _check_n_features(estimator, X, reset=reset)
    _check_feature_names(estimator, X, reset=reset)
    return X


def validate_rows(estimator, X, *, reset: bool, min_samples: int = 1):
    """Validate ``X`` for fit (``reset=True``) or inference, without copying lazy inputs.

    Parameters
    ----------
    estimator : BaseEstimator
        Receives ``n_features_in_`` (and ``feature_names_in_``) when ``reset=True``.
    X : array-like, np.memmap, torch.Tensor or FeatureSource of shape (n_samples, n_features)
        Input data.
    reset : bool
        True in ``fit``; False checks the number of features against the fitted one.
    min_samples : int, default=1
        Minimum number of rows.

    Returns
    -------
    ndarray, np.memmap or FeatureSource of shape (n_samples, n_features)
        Memmaps, tensors and sources are returned as (numpy views of) themselves; other
        input goes through ``validate_data``, which keeps
        float32 and float64 arrays as they are (minibatches are converted to float32 one at
        a time) and converts anything else to float64 (checked for what float32 rounds).
    """
    lazy = _lazy_view(X)
    if lazy is not None:  # checked chunk by chunk in float32, the range included
        return _check_lazy(estimator, lazy, reset=reset, min_samples=min_samples)
    # Floating arrays keep their dtype (float16 becomes float32); integers and lists become
    # float64, not float32: int64 values beyond 2**24 (and lists of float64 values) were
    # rounded to float32 before the rounding check below could see them, so nothing warned.
    X = check_numeric(X)
    X = validate_data(estimator, X, reset=reset, ensure_min_samples=min_samples,
                      dtype=[np.float32, np.float64] if _floating(X) else [np.float64, np.float32])
    if _wider_than_float32(X):  # finite in float64 is not enough: the network is float32
        _check_float32_rows(X, report_rounding=reset)
    return X


def _floating(X) -> bool:
    """Whether ``X`` holds floating-point values already (an array's dtype, or every column
    of a DataFrame); lists and other objects without a dtype do not."""
    dtypes = getattr(X, "dtypes", None)  # a DataFrame's columns (a Series has one dtype)
    if dtypes is None or not hasattr(dtypes, "__iter__"):
        dtypes = [getattr(X, "dtype", np.dtype(object))]
    return all(_numpy_kind(dtype) == "f" for dtype in dtypes)


def _numpy_kind(dtype) -> str:
    """numpy's kind of ``dtype``; "O" for what numpy cannot read (pandas' nullable Float64,
    Int64 and category dtypes), which scikit-learn's validation converts itself."""
    try:
        return np.dtype(dtype).kind
    except TypeError:
        return "O"


def _wider_than_float32(X) -> bool:
    return X.dtype.kind == "f" and X.dtype.itemsize > 4


# A feature source that converts on reading (a torch Dataset of float64 items) gives float32
# rows, where values beyond float32's range are inf already.
_SOURCE_NOTE = (" as float32, the precision of the network (an inf where the data hold a "
                "finite value is one beyond float32's range, about 3.4e38: divide the data by "
                "a constant)")


def _check_float32_rows(X, *, report_rounding: bool = False, note: str = "") -> None:
    """Refuse NaN, inf and values that become infinite in float32, chunk by chunk.

    Without the float32 view, values beyond ~3.4e38 would turn into inf in the minibatches
    and into NaN outputs (or labels of NaN scores) in ``transform`` / ``predict``. With
    ``report_rounding``, also warn when float32 rounds the columns' detail away (the network
    and the minibatch kernels see float32 rows; see
    [`Float32Rounding`][spectralnet_seg._numeric.Float32Rounding]).
    """
    step = chunk_rows(X.shape[1])
    rounding = Float32Rounding(X.shape[1]) if report_rounding else None
    from ..data import FeatureSource

    # A source's rows as stored (a float64 memmap or .npy as float64), read once: a source's
    # slice is a real read.
    read = (X.read_stored if isinstance(X, FeatureSource)
            else lambda start, stop: X[start:stop])
    for start in range(0, X.shape[0], step):
        chunk = read(start, min(start + step, X.shape[0]))
        with np.errstate(over="ignore"):  # overflow is what is being looked for
            rows = np.asarray(chunk, dtype=np.float32)
        check_float32_rows(chunk, rows, offset=start, precision_of="the network", note=note)
        if rounding is not None:
            rounding.add(chunk, rows)
    if rounding is not None:
        rounding.warn("X")


def gather_rows(X: np.ndarray, indices: np.ndarray) -> torch.Tensor:
    """Rows ``X[indices]`` as a float32 CPU tensor (sorted indices read memmaps sequentially)."""
    return torch.from_numpy(np.ascontiguousarray(X[indices], dtype=np.float32))


def iter_chunks(X: np.ndarray) -> Iterator[torch.Tensor]:
    """Consecutive row chunks of ``X`` (of [`chunk_rows`][chunk_rows] rows) as float32
    CPU tensors."""
    step = chunk_rows(X.shape[1])
    for start in range(0, X.shape[0], step):
        yield torch.from_numpy(np.ascontiguousarray(X[start:start + step], dtype=np.float32))


def to_cpu(obj):
    """Recursively move the tensors of a (nested) state dict to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj
