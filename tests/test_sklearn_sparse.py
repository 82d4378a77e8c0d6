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


@pytest.mark.parametrize("form", [sparse.csr_matrix, sparse.csc_matrix, sparse.csr_array])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("estimator, target", [(MLPClassifier, "classes"),
                                               (MLPClassifier, "multilabel"),
                                               (MLPRegressor, "values")])
def test_lbfgs_fits_sparse_x_as_the_same_data_dense(form, dtype, estimator, target):
    """The full-batch objective from the non-zeros: the same path as dense X
    to rounding (the first layer's sums go in another order)."""
    X, y = _data()
    # A duplicate entry in a COO-built matrix counts twice, as scipy sums it.
    if target == "multilabel":
        y = np.column_stack([y == 0, y == 1, X[:, 0] > 0]).astype(int)
    elif target == "values":
        y = X[:, 0] + X[:, 1] ** 2
    params = dict(hidden_layer_sizes=(20, 7), solver="lbfgs", max_iter=15, random_state=0,
                  n_threads=2, dtype=dtype, alpha=1e-3)
    weight = np.random.default_rng(1).uniform(0.5, 2, len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = estimator(**params).fit(X, y, sample_weight=weight)
        sparse_fit = estimator(**params).fit(form(X), y, sample_weight=weight)
    assert sparse_fit.n_iter_ == dense.n_iter_
    rtol = 1e-9 if dtype == "float64" else 2e-3
    assert sparse_fit.loss_ == pytest.approx(dense.loss_, rel=rtol)
    for mine, reference in zip(sparse_fit.coefs_ + sparse_fit.intercepts_,
                               dense.coefs_ + dense.intercepts_):
        np.testing.assert_allclose(mine, reference, rtol=0,
                                   atol=rtol * 10 * np.abs(reference).max())


def test_lbfgs_on_sparse_x_does_not_make_it_dense(monkeypatch):
    """Never densified, and the workspace is a small fraction of the dense
    matrix (1.2 GB here)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(2)
    n, d, per_row = 10000, 30000, 30
    columns = np.sort(rng.integers(0, d, (n, per_row)), axis=1).ravel()
    X = sp.csr_matrix((rng.random(n * per_row, dtype=np.float32), columns,
                       np.arange(0, n * per_row + 1, per_row)), shape=(n, d))
    y = rng.integers(0, 2, n)
    clf = MLPClassifier(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=3, random_state=0)
    with warnings.catch_warnings(), monkeypatch.context() as patch:
        warnings.simplefilter("ignore")
        patch.setattr(sp.csr_matrix, "toarray", lambda *a, **k: pytest.fail("densified"))
        clf.fit(X, y)
    dense_bytes = X.shape[0] * X.shape[1] * 4
    assert clf.model_._work.nbytes < dense_bytes / 20
    assert clf.n_iter_ == 3
    assert np.isfinite(clf.loss_)


def test_nan_in_sparse_x_is_named():
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=1).fit(sparse.csr_matrix(X), y)
    bad = sparse.csr_matrix(X)
    bad.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(bad)
