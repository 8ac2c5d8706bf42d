"""What every spectral estimator shares: input validation, kernel resolution, cluster checks."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from .._utils import check_numeric
from ..kernels import Kernel, resolve_kernel
from ..kernels._checks import _as_float32


def _validation_dtype(X):
    """The dtype(s) ``validate_data`` converts ``X`` to before the checked float32 conversion.

    float64 (and integers beyond 2**24, which float32 rounds) keep or get float64, so that
    the conversion can report what it rounds away; float32 stays as it is, and float16 and
    integers that float32 holds exactly go straight to float32 (no float64 copy of data
    stored small on purpose).
    """
    dtype = getattr(X, "dtype", None)
    if not isinstance(dtype, np.dtype):
        return [np.float64, np.float32]
    if dtype.kind in "fiub" and (dtype.itemsize <= 2 or dtype == np.float32):
        return np.float32
    if (dtype.kind in "iu" and isinstance(X, np.ndarray) and X.size
            and max(abs(int(X.min())), abs(int(X.max()))) <= 2**24):
        return np.float32  # every such integer is a float32
    return [np.float64, np.float32]


def check_n_clusters(n_clusters: int, n_samples: int) -> None:
    """Raise a ValueError when there are more clusters than samples to put in them.

    The one place of this check for the estimators and [`spectral_clustering`][spectral_clustering].

    Parameters
    ----------
    n_clusters : int
        Requested number of clusters.
    n_samples : int
        Number of samples (rows of ``X``, or nodes of the affinity).
    """
    if n_clusters > n_samples:
        raise ValueError(f"n_clusters={n_clusters} is larger than the number of samples "
                         f"n_samples={n_samples}; use at most {n_samples} clusters.")


def check_n_components(n_components: int, n_samples: int) -> None:
    """Raise a ValueError when more eigenvectors are asked for than there are samples."""
    if n_components > n_samples:
        raise ValueError(f"n_components={n_components} is larger than the number of "
                         f"samples n_samples={n_samples}; use at most {n_samples}.")


class BaseSpectralClustering(ClusterMixin, TransformerMixin, BaseEstimator):
    """Shared base of [`EigshSpectralClustering`][EigshSpectralClustering] and the neural
    estimators.

    Subclasses add their own ``_parameter_constraints`` to [`_base_constraints`][_base_constraints]
    and
    implement ``fit``, ``transform`` and ``predict``. This class only holds helpers; it
    never stores state in ``__init__``.
    """

    _base_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        # Any string: unknown names get resolve_kernel's message listing the registry.
        "kernel": [str, HasMethods(["graph", "batch"])],
        "random_state": ["random_state"],
    }

    # ------------------------------------------------------------------ validation
    def set_params(self, **params):
        """Set parameters; ``kernel__<name>`` needs ``kernel`` to be a kernel object."""
        kernel = params.get("kernel", getattr(self, "kernel", None))
        nested = sorted(key for key in params if key.startswith("kernel__"))
        if nested and isinstance(kernel, str):  # sklearn would fail on str.set_params
            raise ValueError(
                f"cannot set {nested[0]}: kernel is the name {kernel!r}, which has no "
                f"parameters. Pass a kernel object instead, e.g. kernel=make_kernel("
                f"{kernel!r}), then set its parameters (in a grid search: search over "
                f"kernel=[make_kernel({kernel!r}, n_neighbors=5), ...] or set the object "
                "first).")
        return super().set_params(**params)

    def _validate_fit_input(self, X) -> np.ndarray:
        """Validate training data and record ``n_features_in_``.

        Returns a C-contiguous float32 array; raises ``ValueError`` on NaN/inf, empty or
        1-D input, and when ``n_clusters`` exceeds the number of samples.
        """
        X = check_numeric(X)
        X = validate_data(self, X, dtype=_validation_dtype(X), ensure_min_samples=2,
                          reset=True)
        check_n_clusters(self.n_clusters, X.shape[0])
        return _as_float32(X)

    def _validate_predict_input(self, X) -> np.ndarray:
        """Validate new data against the fitted estimator (same number of features)."""
        check_is_fitted(self)
        X = check_numeric(X)
        return _as_float32(validate_data(self, X, dtype=_validation_dtype(X), reset=False))

    def _resolve_kernel(self) -> Kernel:
        """A fresh copy of ``self.kernel`` (built from its name when it is a string).

        An IVF kNN index trains on a random subsample: where the kernel does not fix its
        seed, it gets one from the estimator's ``random_state`` (else it would come from
        numpy's global generator and an int ``random_state`` would not make ``fit``
        deterministic).
        """
        kernel = resolve_kernel(self.kernel)
        unseeded = [k for k in _member_kernels(kernel) if getattr(k, "index", None) == "ivf"
                    and "random_state" not in (k.index_params or {})]
        if unseeded and self.random_state is not None:
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
                       if not isinstance(self.random_state, Integral) else self.random_state)
            for member in unseeded:
                member.index_params = {**(member.index_params or {}), "random_state": seed}
        return kernel

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        if tags.transformer_tags is not None:
            # transform gives float64 whatever the input's dtype (ClusterMixin's default of
            # [] would claim that not even float64 input keeps its dtype)
            tags.transformer_tags.preserves_dtype = ["float64"]
        return tags


def _member_kernels(kernel) -> list:
    """``kernel`` and, for a combined kernel, its members (recursively)."""
    members = getattr(kernel, "kernels", None)
    if not isinstance(members, (list, tuple)):
        return [kernel]
    return [kernel] + [k for member in members for k in _member_kernels(member)]
