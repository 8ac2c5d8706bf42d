"""What the neural estimators decide from the data at fit time, without labels.

Each "auto" parameter is resolved here from the training data and its graph, and the value
used is recorded on the estimator (``batch_size_``, ``fourier_scale_``, ``sampler_``, …):

* ``sampler``: pairs from the global graph (the graph eigsh decomposes) when building it
  costs less than a few seconds of training (the kernel's declared ``graph_cost``), else
  graphs built inside each minibatch;
* ``batch_size``: 256 pairs, or 4 per output when K is large (the K × K Rayleigh matrix
  must be estimated from many more pairs than K);
* the network's input standardisation: centre and one global scale (the root-mean-square
  norm), after projecting rows to the sphere when the kernel is a cosine kernel — so the
  network sees unit-scale inputs whatever the feature units;
* ``fourier_scale``: frequencies of about half a radian per typical graph edge length, so
  the Fourier features resolve the scale at which the graph links points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import _neural_io as io

__all__ = ["GRAPH_COST_BUDGET", "InputStatistics", "default_batch_size",
           "fourier_scale_from_edges", "input_statistics"]

#: Largest estimated cost (floating-point operations) of the global graph that
#: ``sampler="auto"`` accepts: about 10 s of an exact faiss search on two CPU cores.
GRAPH_COST_BUDGET = 1e12
#: Rows used to estimate the input statistics (a seeded subset of larger data sets).
_STATISTICS_ROWS = 65536
#: Float64 values per block read for the statistics: the byte budget of the inference
#: chunks (``data._feature_source.CHUNK_BYTES``, which says why it is small) whatever the
#: width.
_CHUNK_VALUES = io.CHUNK_BYTES // np.dtype(np.float64).itemsize
#: Phase difference (radians) of the Fourier features across a typical graph edge.
_PHASE_PER_EDGE = 0.5
#: Default number of Fourier frequencies of the default MLP ("auto").
AUTO_FOURIER_FEATURES = 64


def default_batch_size(n_outputs: int, n_samples: int, *, pairs: bool) -> int:
    """Pairs (global graph) or points (minibatch graphs) per step for K outputs.

    Examples
    --------
    >>> default_batch_size(10, 5000, pairs=True), default_batch_size(256, 5000, pairs=True)
    (256, 1024)
    """
    size = max(256, 4 * n_outputs) if pairs else max(1024, 4 * n_outputs)
    return int(size if pairs else min(size, n_samples))


@dataclass(frozen=True)
class InputStatistics:
    """Offset and scale of
    [`InputStandardization`][spectralnet_seg.eigenfunctions.InputStandardization]."""

    offset: np.ndarray  # (d,)
    scale: float
    normalize_rows: bool


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def input_statistics(X, *, normalize_rows: bool, generator: torch.Generator) -> InputStatistics:
    """Mean and root-mean-square norm of the (row-normalised) inputs, in float64.

    Computed on all rows, or on a seeded subset of ``65536`` rows of larger data, read in
    blocks of about 8 MiB (memory stays bounded for wide features and memory-mapped files).
    The rows are divided by the largest magnitude first, so values near the float32 limits
    (1e30) or below its resolution (1e-30) give the same statistics as unit data.
    """
    n, n_features = X.shape
    rows = (np.sort(torch.randperm(n, generator=generator)[:_STATISTICS_ROWS].numpy())
            if n > _STATISTICS_ROWS else np.arange(n))
    chunk_rows = max(1, _CHUNK_VALUES // max(1, n_features))
    chunks = [rows[i:i + chunk_rows] for i in range(0, rows.size, chunk_rows)]

    def read(index):
        block = np.asarray(X[index], dtype=np.float64)
        return _unit_rows(block) if normalize_rows else block

    def largest_magnitude(block):
        return max(float(block.max()), -float(block.min()))

    magnitude = max(largest_magnitude(read(index)) for index in chunks) or 1.0
    total, total_square = np.zeros(n_features), 0.0
    for index in chunks:
        block = read(index)
        block /= magnitude  # in place: no second block-sized temporary
        total += block.sum(axis=0)
        total_square += float(np.einsum("ij,ij->", block, block))
    offset = total / rows.size
    scale = float(np.sqrt(max(total_square / rows.size - np.square(offset).sum(), 0.0)))
    if not scale > 1e-12:  # all rows identical: nothing to standardise
        scale = 1.0
    return InputStatistics(offset=offset * magnitude, scale=scale * magnitude,
                           normalize_rows=normalize_rows)


def fourier_scale_from_edges(X, heads: np.ndarray, tails: np.ndarray,
                             statistics: InputStatistics) -> float:
    """Fourier frequency scale from the median edge length in standardised input units.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Training data (only the listed rows are read).
    heads, tails : ndarray of shape (n_edges,)
        Endpoints of sampled graph edges.
    statistics : InputStatistics
        The standardisation the network applies.

    Returns
    -------
    float
        ``0.5 / median edge length``; 1.0 when every sampled edge has length 0.
    """
    def standardised(index):
        rows = io.gather_rows(X, index).double().numpy()
        if statistics.normalize_rows:
            rows = _unit_rows(rows)
        rows -= statistics.offset
        rows /= statistics.scale
        return rows

    step = max(1, _CHUNK_VALUES // max(1, X.shape[1]))  # edges per block of ~8 MiB
    lengths = np.concatenate([
        np.linalg.norm(standardised(heads[i:i + step]) - standardised(tails[i:i + step]),
                       axis=1)
        for i in range(0, len(heads), step)]) if len(heads) else np.zeros(0)
    lengths = lengths[lengths > 0]
    if lengths.size == 0:
        return 1.0
    return float(_PHASE_PER_EDGE / np.median(lengths))
