"""The estimator registry: names to estimators, defaults untouched, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans

from spectralnet_seg.cluster import (
    DiscreteNeuralEigenClustering,
    EigshSpectralClustering,
    NeuralEigenClustering,
    _registry,
    estimator_defaults,
    list_estimators,
    make_estimator,
    register_estimator,
)


@pytest.mark.parametrize(("name", "cls"), [
    ("eigsh", EigshSpectralClustering), ("neural", NeuralEigenClustering),
    ("discrete", DiscreteNeuralEigenClustering), ("kmeans", KMeans)])
def test_builtin_names_build_their_estimator_with_its_own_defaults(name, cls):
    assert name in list_estimators()
    estimator = make_estimator(name, 5)
    assert type(estimator) is cls and estimator.n_clusters == 5
    expected = {**cls().get_params(deep=False), "n_clusters": 5}
    assert estimator.get_params(deep=False) == expected
    assert estimator_defaults(name) == cls().get_params(deep=False)


def test_parameters_reach_the_estimator():
    est = make_estimator("eigsh", 3, embedding_norm="degree", random_state=7)
    assert (est.embedding_norm, est.random_state) == ("degree", 7)


def test_list_estimators_filters_by_pattern():
    assert list_estimators("*e*") == ["discrete", "eigsh", "kmeans", "neural"]
    assert list_estimators("k*") == ["kmeans"]


def test_errors_name_what_is_available():
    with pytest.raises(ValueError, match="unknown estimator 'dbscan'; available estimators: "
                                         "discrete, eigsh, kmeans, neural"):
        make_estimator("dbscan", 3)
    with pytest.raises(ValueError, match="'kmeans' .* no parameter.* kernel; it takes .*n_init"):
        make_estimator("kmeans", 3, kernel="knn")
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("eigsh")(KMeans)


def test_a_toy_estimator_registers_through_the_public_api(request):
    request.addfinalizer(lambda: _registry.ESTIMATORS.unregister("first-feature-sign"))

    @register_estimator("first-feature-sign")
    class FirstFeatureSign(ClusterMixin, BaseEstimator):
        def __init__(self, n_clusters=2, *, offset=0.0):
            self.n_clusters = n_clusters
            self.offset = offset

        def fit(self, X, y=None):
            self.labels_ = (np.asarray(X)[:, 0] > self.offset).astype(int)
            return self

    assert "first-feature-sign" in list_estimators()
    labels = make_estimator("first-feature-sign", 2, offset=1.0).fit_predict([[0.0], [2.0]])
    assert labels.tolist() == [0, 1]


def test_unset_n_clusters_keeps_the_estimator_s_own_default(request):
    """make_estimator passed n_clusters=8 always: AgglomerativeClustering (default 2) got 8,
    estimator_defaults said 8, and an estimator without n_clusters (DBSCAN) failed with a
    TypeError on every call."""
    from sklearn.cluster import DBSCAN, AgglomerativeClustering

    for name, cls in [("agg-example", AgglomerativeClustering), ("dbscan-example", DBSCAN)]:
        request.addfinalizer(lambda name=name: _registry.ESTIMATORS.unregister(name))
        register_estimator(name)(cls)
    assert make_estimator("agg-example").n_clusters == 2
    assert estimator_defaults("agg-example") == AgglomerativeClustering().get_params()
    assert make_estimator("agg-example", 5).n_clusters == 5
    assert make_estimator("dbscan-example", eps=0.3).eps == 0.3
    with pytest.raises(ValueError, match="takes no n_clusters"):
        make_estimator("dbscan-example", 3)

    @register_estimator("required-k-example")
    class RequiredK(ClusterMixin, BaseEstimator):  # n_clusters without a default
        def __init__(self, n_clusters, random_state=None):
            self.n_clusters = n_clusters
            self.random_state = random_state

    request.addfinalizer(lambda: _registry.ESTIMATORS.unregister("required-k-example"))
    assert estimator_defaults("required-k-example") == {"n_clusters": 8, "random_state": None}


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(_registry)
    assert result.attempted > 0 and result.failed == 0
