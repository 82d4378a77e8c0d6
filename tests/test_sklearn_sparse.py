"""The estimators take scipy.sparse X for fit, partial_fit, predict, predict_proba
and score, and train from its non-zeros without densifying it (mlp.train's sparse
path): the same result as the same data dense."""
import warnings

import numpy as np
import pytest
from conftest import require

sparse = require("scipy.sparse")
require("sklearn")

from mlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


def _data(n=300, d=50, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    X[X < 0.85] = 0
    return X, rng.integers(0, 3, n)


def _same(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a.coefs_ + a.intercepts_,
                                                    b.coefs_ + b.intercepts_))


@pytest.mark.parametrize("form", [sparse.csr_matrix, sparse.csc_matrix, sparse.coo_matrix,
                                  sparse.csr_array])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_classifier_fits_sparse_x_as_the_same_data_dense(form, solver):
    X, y = _data()
    params = dict(hidden_layer_sizes=(20,), solver=solver, max_iter=4, batch_size=64,
                  random_state=0, n_threads=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = MLPClassifier(**params).fit(X, y)
        sparse_fit = MLPClassifier(**params).fit(form(X), y)
        sparse_fit.partial_fit(form(X), y)
        dense.partial_fit(X, y)
    assert _same(dense, sparse_fit)
    np.testing.assert_array_equal(dense.predict_proba(X), sparse_fit.predict_proba(form(X)))
    np.testing.assert_array_equal(dense.predict(X), sparse_fit.predict(form(X)))
    assert dense.score(X, y) == sparse_fit.score(form(X), y)


def test_regressor_with_early_stopping_takes_sparse_x():
    X, _ = _data()
    params = dict(hidden_layer_sizes=(10,), max_iter=3, random_state=0, early_stopping=True,
                  batch_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = MLPRegressor(**params).fit(X, X[:, 0])
        sparse_fit = MLPRegressor(**params).fit(sparse.csc_matrix(X), X[:, 0])
    assert _same(dense, sparse_fit)
    assert dense.score(X, X[:, 0]) == sparse_fit.score(sparse.coo_matrix(X), X[:, 0])


def test_lbfgs_asks_for_dense_x_and_nan_in_sparse_x_is_named():
    X, y = _data()
    with pytest.raises(TypeError, match="dense data is required"):
        MLPClassifier(solver="lbfgs").fit(sparse.csr_matrix(X), y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=1).fit(sparse.csr_matrix(X), y)
    bad = sparse.csr_matrix(X)
    bad.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(bad)
