"""Scale-safe row norms and rescaling for float32 computations.

float32 squares leave the normal range for values beyond about 1e±19 (``1e20 ** 2``
overflows to ``inf``, ``1e-30 ** 2`` underflows to 0). Cosine similarity does not depend on
the scale of the data, and the nearest neighbours under the Euclidean distance do not
either, so both are computed here in a way that gives the same answer at any finite scale:

* [`unit_rows`][unit_rows] / [`unit_rows_torch`][unit_rows_torch] divide the rows whose norm cannot
be trusted by
  their largest absolute value first (ordinary rows take the usual fast path, bit for bit);
* [`power_of_two_exponent`][power_of_two_exponent] gives the exact (power-of-two) factor that brings
data to unit
  magnitude before faiss squares it.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CENTRE_OFFSET_RATIO", "Float32Rounding", "may_have_cancelled", "power_of_two_exponent",
           "share_an_offset", "unit_rows", "unit_rows_torch"]

# Norms inside this band come from sums of squares with no overflow and no loss to underflow
# in float32 (tiny is 1.2e-38, max 3.4e38): they are trusted as computed.
_TRUSTED_NORMS = (1e-18, 1e18)
# Magnitudes faiss handles directly: squared distances stay far from float32's limits.
_PLAIN_MAGNITUDES = (2.0**-32, 2.0**32)
# Centre the rows that float32 distances compare when their mean is more than this many
# times their spread (root of the total variance). float32's |x|^2 + |y|^2 - 2xy (faiss, and
# the minibatch kernels) loses distances to rounding in proportion to |x|^2: on 2e4
# unit-normal points in 8-D shifted by 100 (ratio 100), faiss's recall@10 was 0.986, by 1000
# it was 0.44; by 10 (ratio 10) it was 0.9999. The same holds for the cosine metric's unit
# rows when they share one direction (offset 1000: recall 0.49). Translating is exact
# (distances do not change). Below this ratio rows keep their plain float32 rounding, so that
# results on ordinary data do not move: the published benchmarks' data reach 5.5 (the demo's
# per-image pixel graphs).
CENTRE_OFFSET_RATIO = 8.0


# A k-th squared distance below this many times the typical rounding error of float32's
# |x|^2 + |y|^2 - 2xy is suspected of cancellation (see may_have_cancelled).
_CANCELLATION_MARGIN = 64.0


def may_have_cancelled(kth_square, query_square, database_square, n_features: int, *,
                       unit_roundoff: float = 2.0**-24):
    """Which queries' k-th squared L2 distance float32's ``|q|^2 + |x|^2 - 2 q.x`` may have
    lost to cancellation.

    The expansion's error grows like ``d u (|q|^2 + |x|^2)`` (``u``: the unit roundoff,
    2^-24 in float32); centring removes a common offset, not clusters far from each other
    (8 clusters at +-300, spread 0.1: faiss's recall 0.03, the minibatch kNN's edge
    agreement 0.42). Flagged: a k-th squared distance whose typical error
    ``sqrt(d) u (|q|^2 + |x|^2)`` may exceed 1/64 of it, where ``|x|^2`` bounds the squared
    norms of the rows that can be among the k nearest: those within the k-th distance ``r``
    of the query have ``|x| <= |q| + r``, so a far outlier does not make every query
    suspect. Ordinary data stay far below (digits, the 384-D manifold set: ratios under 250,
    flagged above 13,000 in 384-D).

    Parameters
    ----------
    kth_square : ndarray or torch.Tensor of shape (n_queries,)
        Each query's k-th smallest squared distance, as the expansion computed it.
    query_square : ndarray or torch.Tensor of shape (n_queries,)
        The queries' squared norms.
    database_square : float
        A bound on the database rows' squared norms (the largest); tightened per query to
        ``(|q| + r)^2``.
    n_features : int
        Dimension ``d`` of the rows.
    unit_roundoff : float, default=2**-24
        Of the precision the expansion was computed in (2**-53 for float64).

    Returns
    -------
    suspect : ndarray or torch.Tensor of shape (n_queries,), bool
    """
    reach = (query_square**0.5 + abs(kth_square) ** 0.5) ** 2
    nearby_square = reach.clip(max=database_square)  # numpy and torch alike
    typical_error = math.sqrt(n_features) * unit_roundoff * (query_square + nearby_square)
    return kth_square < _CANCELLATION_MARGIN * typical_error


def share_an_offset(mean_square: float, variance: float) -> bool:
    """Whether rows are to be centred: the norm of their mean is more than
    ``CENTRE_OFFSET_RATIO`` times the root of their total variance (equal rows away from the
    origin count as offset; rows all at the origin do not).

    Parameters
    ----------
    mean_square : float
        Squared norm of the rows' mean.
    variance : float
        Their total variance, ``E|x|^2 - |E x|^2`` (rounding may make it <= 0).
    """
    if not variance > 0:
        return mean_square > 0
    return mean_square > CENTRE_OFFSET_RATIO**2 * variance


def unit_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows divided by their Euclidean norm, at any finite scale.

    Parameters
    ----------
    rows : ndarray of shape (n, d), floating
        Finite values.

    Returns
    -------
    unit : ndarray of shape (n, d), dtype of ``rows``
        Unit-norm rows (all-zero rows are left at zero).
    zero : ndarray of shape (n,), bool
        Which rows are all zeros (their direction, hence the cosine, is undefined).

    Examples
    --------
    >>> import numpy as np
    >>> unit, zero = unit_rows(np.array([[3e-30, 4e-30], [0, 0], [3e20, 4e20]], np.float32))
    >>> unit.astype(float).round(3).tolist(), zero.tolist()
    ([[0.6, 0.8], [0.0, 0.0], [0.6, 0.8]], [False, True, False])
    """
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(rows, axis=1)
    untrusted = ~((norms > _TRUSTED_NORMS[0]) & (norms < _TRUSTED_NORMS[1]))
    if not untrusted.any():
        return rows / norms[:, None], np.zeros(rows.shape[0], dtype=bool)
    peak = np.abs(rows[untrusted]).max(axis=1)
    zero = np.zeros(rows.shape[0], dtype=bool)
    zero[untrusted] = peak == 0
    # Divide by the peak first: the largest entry becomes +-1, nothing over- or underflows.
    scaled = rows[untrusted] / np.where(peak > 0, peak, 1)[:, None]
    norms[untrusted] = np.where(peak > 0, np.linalg.norm(scaled, axis=1), 1)
    unit = np.empty_like(rows)
    unit[~untrusted] = rows[~untrusted] / norms[~untrusted, None]
    unit[untrusted] = scaled / norms[untrusted, None]
    return unit, zero


def unit_rows_torch(X):
    """Torch counterpart of [`unit_rows`][unit_rows] (same device and dtype).

    Parameters
    ----------
    X : torch.Tensor of shape (b, d), floating

    Returns
    -------
    unit : torch.Tensor of shape (b, d)
    zero : torch.Tensor of shape (b,), bool
    """
    import torch

    norms = X.norm(dim=1)
    untrusted = ~((norms > _TRUSTED_NORMS[0]) & (norms < _TRUSTED_NORMS[1]))
    if not bool(untrusted.any()):  # one host sync, as the zero-row check always needed
        return X / norms[:, None], torch.zeros_like(norms, dtype=torch.bool)
    peak = X.abs().amax(dim=1)
    scaled = X / torch.where(peak > 0, peak, torch.ones_like(peak))[:, None]
    safe_norms = torch.where(untrusted, scaled.norm(dim=1), norms)
    safe_norms = torch.where(peak > 0, safe_norms, torch.ones_like(safe_norms))
    unit = torch.where(untrusted[:, None], scaled / safe_norms[:, None],
                       X / safe_norms[:, None])
    return unit, peak == 0


def power_of_two_exponent(max_abs: float) -> int:
    """Exponent ``e`` such that data divided by ``2**e`` has its largest magnitude near 1.

    Parameters
    ----------
    max_abs : float
        Largest absolute value of the data.

    Returns
    -------
    int
        0 when ``max_abs`` is already in a range where float32 squared distances are safe
        (``[2**-32, 2**32]``, or 0); else ``floor(log2(max_abs))``. Scaling by a power of two
        (``numpy.ldexp``) is exact, so neighbours and (rescaled) distances are those of
        the original data.

    Examples
    --------
    >>> power_of_two_exponent(255.0), power_of_two_exponent(3e19), power_of_two_exponent(1e-40)
    (0, 64, -133)
    """
    if max_abs == 0 or _PLAIN_MAGNITUDES[0] <= max_abs <= _PLAIN_MAGNITUDES[1]:
        return 0
    return math.floor(math.log2(max_abs))


class Float32Rounding:
    """How far a conversion to float32 moves each column's values, measured chunk by chunk.

    float32 rounds a value ``v`` to a multiple of up to ``|v| 2^-24``: columns whose offset is
    large against their spread (projected map coordinates: offset 1e7, spread 1) keep one
    significant bit, while integers that float32 holds exactly lose nothing. The kNN search
    is exact under any common offset of float32 rows (it centres them), so the conversion
    itself is what to report.

    Parameters
    ----------
    n_features : int
        Number of columns.
    """

    # Report when the conversion moves a column's values by more than this fraction of its
    # half-range (e.g. an offset ~16,000x the spread): nearest neighbours of dense data start
    # to move.
    TOLERANCE = 2.0**-10

    def __init__(self, n_features: int) -> None:
        self.error = np.zeros(n_features)
        self.low = np.full(n_features, np.inf)
        self.high = np.full(n_features, -np.inf)

    def add(self, rows, rows32) -> None:
        """Account for ``rows`` (any real dtype) converted to ``rows32``, both (m, n_features)."""
        with np.errstate(invalid="ignore", over="ignore"):
            rows = np.asarray(rows, dtype=np.float64)
            self.error = np.maximum(self.error, np.abs(rows - rows32).max(axis=0, initial=0.0))
            self.low = np.minimum(self.low, rows.min(axis=0, initial=np.inf))
            self.high = np.maximum(self.high, rows.max(axis=0, initial=-np.inf))

    def worst(self) -> float:
        """Largest change of a varying column's values over its half-range (0: none)."""
        half_range = 0.5 * (self.high - self.low)
        varying = half_range > 0
        return float(np.max(self.error[varying] / half_range[varying], initial=0.0))

    def warn(self, name: str) -> None:
        """``DataConversionWarning`` at the caller's line when ``worst()`` exceeds the
        tolerance."""
        import warnings

        from sklearn.exceptions import DataConversionWarning

        from ._utils import user_stacklevel

        worst = self.worst()
        if worst > self.TOLERANCE:
            warnings.warn(
                f"{name} is converted to float32, which moves its values by up to "
                f"{100 * worst:.2g} % of a column's half-range (their offset is large against "
                f"their spread), so close neighbours can swap or coincide. Centre {name} first "
                f"({name} - {name}.mean(axis=0)) or rescale those columns.",
                DataConversionWarning, stacklevel=user_stacklevel())
