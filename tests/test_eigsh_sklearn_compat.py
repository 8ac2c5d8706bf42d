"""EigshSpectralClustering as a scikit-learn citizen: shared checks, pipelines, search,
cloning, persistence, and clear errors on bad input."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import load_digits, make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score, make_scorer, normalized_mutual_info_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from spectralnet_seg.cluster import EigshSpectralClustering
from spectralnet_seg.kernels import KNNKernel


def _l2_knn(k=10):
    return KNNKernel(n_neighbors=k, metric="l2", weighting="binary")


# n_init=3 keeps the ~50 checks fast; they test the API, not the clustering quality.
_CHECKED = [
    EigshSpectralClustering(n_clusters=3, kernel=_l2_knn(5), n_init=3, random_state=0),
    EigshSpectralClustering(n_clusters=3, n_init=3, random_state=0),  # default "knn"
    EigshSpectralClustering(n_clusters=3, kernel="precomputed", n_init=3, random_state=0),
]


def _expected_failed_checks(estimator):
    if estimator.kernel == "precomputed":
        return {
            "check_clustering": (
                "passes raw features (n_samples, 2), not the pairwise affinity that "
                "kernel='precomputed' takes (the pairwise tag is ignored by this check)"),
        }
    return {}


@parametrize_with_checks(_CHECKED, expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    return load_digits(return_X_y=True)


def test_pipeline_with_scaler(digits):
    X, y = digits
    pipe = Pipeline([("scale", StandardScaler()),
                     ("sc", EigshSpectralClustering(10, kernel=_l2_knn(), random_state=0))])
    labels = pipe.fit_predict(X)
    assert_array_equal(labels, pipe.named_steps["sc"].labels_)
    assert normalized_mutual_info_score(y, labels) >= 0.75
    assert adjusted_rand_score(labels, pipe.predict(X)) >= 0.95
    assert pipe.transform(X[:5]).shape == (5, 10)
    names = pipe.get_feature_names_out()
    assert list(names[:2]) == ["eigshspectralclustering0", "eigshspectralclustering1"]


def test_grid_search_with_label_scorer(digits):
    X, y = digits[0][:600], digits[1][:600]
    pipe = Pipeline([("scale", StandardScaler()),
                     ("sc", EigshSpectralClustering(10, kernel=_l2_knn(), n_init=3,
                                                    random_state=0))])
    search = GridSearchCV(pipe, {"sc__kernel__n_neighbors": [5, 15]},
                          scoring=make_scorer(adjusted_rand_score), cv=StratifiedKFold(3))
    search.fit(X, y)
    # Each setting scored by hand on the same folds: the parameter reaches the kernel and the
    # search picks the better one.
    by_hand = []
    for k in (5, 15):
        fold_scores = []
        for train, test in StratifiedKFold(3).split(X, y):
            fitted = clone(pipe).set_params(sc__kernel__n_neighbors=k).fit(X[train])
            fold_scores.append(adjusted_rand_score(y[test], fitted.predict(X[test])))
        by_hand.append(np.mean(fold_scores))
    assert_allclose(search.cv_results_["mean_test_score"], by_hand, atol=1e-12)
    assert by_hand[0] != by_hand[1]
    assert search.best_params_["sc__kernel__n_neighbors"] == (5, 15)[int(np.argmax(by_hand))]
    assert search.best_score_ >= 0.5  # held-out ARI through Nystrom predict
    assert search.best_estimator_.named_steps["sc"].kernel_.n_neighbors == \
        search.best_params_["sc__kernel__n_neighbors"]


def test_clone_and_joblib_round_trip(tmp_path, digits):
    X = digits[0][:500]
    est = EigshSpectralClustering(10, kernel=_l2_knn(), random_state=0)
    unfitted = clone(est)
    assert unfitted.get_params()["kernel"] is not est.kernel
    assert unfitted.get_params(deep=True)["kernel__n_neighbors"] == 10
    assert not hasattr(unfitted, "labels_")
    est.fit(X)
    assert not hasattr(clone(est), "labels_")
    path = tmp_path / "eigsh.joblib"
    joblib.dump(est, path)
    loaded = joblib.load(path)
    X_new = digits[0][500:700]
    assert_array_equal(loaded.predict(X_new), est.predict(X_new))
    np.testing.assert_array_equal(loaded.transform(X_new), est.transform(X_new))
    assert_array_equal(loaded.labels_, est.labels_)


# ---------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def fitted():
    X, _ = make_blobs(n_samples=60, n_features=4, random_state=0)
    return EigshSpectralClustering(3, kernel=_l2_knn(5), random_state=0).fit(X)


@pytest.mark.parametrize("X, match", [
    (np.array([[0.0, np.nan], [1, 2], [3, 4]]), "NaN"),
    (np.array([[0.0, np.inf], [1, 2], [3, 4]]), "infinity"),
    (np.empty((0, 3)), "0 sample"),
    (np.arange(10.0), "Expected 2D array, got 1D array"),
])
def test_fit_rejects_bad_arrays(X, match):
    with pytest.raises(ValueError, match=match):
        EigshSpectralClustering(2).fit(X)


def test_more_clusters_than_samples():
    X = np.random.default_rng(0).normal(size=(5, 2))
    with pytest.raises(ValueError, match="n_clusters=8 is larger than the number of samples"):
        EigshSpectralClustering(8).fit(X)
    with pytest.raises(ValueError, match="n_components=6 is larger than the number of"):
        EigshSpectralClustering(2, n_components=6).fit(X)


def test_predict_input_checks(fitted):
    with pytest.raises(ValueError, match="X has 3 features, but EigshSpectralClustering is "
                                         "expecting 4 features"):
        fitted.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        fitted.predict(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        fitted.transform(np.full((2, 4), np.nan))


@pytest.mark.parametrize("method", ["predict", "transform"])
def test_not_fitted(method):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(EigshSpectralClustering(2), method)(np.zeros((3, 2)))


def test_unknown_kernel_name_lists_the_registry():
    with pytest.raises(ValueError, match="unknown kernel 'nope'; available kernels: .*knn"):
        EigshSpectralClustering(2, kernel="nope").fit(np.zeros((4, 2)))


@pytest.mark.parametrize("params, match", [
    ({"n_clusters": 0}, "'n_clusters' parameter"),
    ({"n_components": 0}, "'n_components' parameter"),
    ({"eigen_solver": "eigh"}, "'eigen_solver' parameter"),
    ({"eigen_tol": -1.0}, "'eigen_tol' parameter"),
    ({"assign_labels": "greedy"}, "'assign_labels' parameter"),
    ({"embedding_norm": "l1"}, "'embedding_norm' parameter"),
    ({"n_init": 0}, "'n_init' parameter"),
    ({"kernel": 3}, "'kernel' parameter"),
])
def test_invalid_parameters(params, match):
    with pytest.raises(InvalidParameterError, match=match):
        EigshSpectralClustering(**{"n_clusters": 2, **params}).fit(np.eye(4))


def test_label_assignment_needs_enough_eigenvectors():
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match="needs n_components >= n_clusters"):
        EigshSpectralClustering(3, n_components=2, assign_labels="discretize").fit(X)


def test_precomputed_input_checks():
    W = np.ones((6, 6))
    with pytest.raises(ValueError, match="must be a square"):
        EigshSpectralClustering(2, kernel="precomputed").fit(np.ones((6, 3)))
    with pytest.raises(ValueError, match="Negative values in data"):
        EigshSpectralClustering(2, kernel="precomputed").fit(-W)
    with pytest.warns(UserWarning, match="not symmetric"):
        EigshSpectralClustering(2, kernel="precomputed").fit(np.triu(W) + 0.1)
    est = EigshSpectralClustering(2, kernel="precomputed", random_state=0).fit(sp.csr_matrix(W))
    assert est.__sklearn_tags__().input_tags.pairwise
    with pytest.raises(ValueError, match="X has 4 features, but EigshSpectralClustering is "
                                         "expecting 6"):
        est.predict(np.ones((2, 4)))
