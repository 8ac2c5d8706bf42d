"""Suite-wide settings and fixtures.

``pytest`` runs the suite on one worker process per core (``-n auto`` in pyproject.toml; at
most 8, and no more than a container's CPU quota allows).
The estimators train small networks, whose operations gain almost nothing from a second
torch thread (a default digits fit: 4.6 s for 400 steps on 2 threads, 5.0 s on 1) while
an idle OpenMP thread busy-waits on a core another worker needs; so each worker computes
on one thread, and the workers, not the threads, share the cores. Every estimator gives
the same result at any thread count (``test_same_labels_with_one_and_two_threads``).
"""

from __future__ import annotations

import os

import pytest

# Read by OpenMP, OpenBLAS and MKL when they load, and inherited by the subprocesses
# that tests start (CLI runs, distributed ranks); a test may still set its own.
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pytest_xdist_auto_num_workers(config) -> int | None:
    """``-n auto``: the cores this process may use, counting a container's CPU quota (xdist
    counts the host's), at most 8 (each worker holds its own torch)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    from spectralnet_seg._utils import available_cores

    return min(available_cores(), 8)


def pytest_configure(config) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # a serial run (-n 0, or -p no:xdist) keeps the machine's defaults
    for name in _ONE_THREAD:
        os.environ[name] = "1"
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)  # BLAS and OpenMP libraries loaded before this hook


# Fits with the estimators' defaults on scikit-learn's digits (n_clusters=10,
# random_state=0), shared by the tests of the group "digits_defaults": pytest-xdist's
# --dist loadgroup runs a group on one worker, so each fit runs once per suite.


@pytest.fixture(scope="session")
def digits():
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)


@pytest.fixture(scope="session")
def digits_neural_defaults(digits):
    from spectralnet_seg import NeuralEigenClustering

    return NeuralEigenClustering(10, random_state=0).fit(digits[0])


@pytest.fixture(scope="session")
def digits_discrete_defaults(digits):
    from spectralnet_seg import DiscreteNeuralEigenClustering

    return DiscreteNeuralEigenClustering(10, random_state=0).fit(digits[0])
