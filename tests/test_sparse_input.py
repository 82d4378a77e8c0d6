"""scipy.sparse X in mlp.train and Model.forward/predict/predict_proba: the
same results as the dense matrix, without ever making the whole of it dense.

Training lists each row's non-zero inputs for the first layer whether the
rows come dense (mostly zeros, row-major batches) or as CSR (copied from the
matrix's entries), in the same order, so the parameters come out bit for bit
the same; the paths that make each batch dense (the samples split, more than
two workers, batches above SPARSE_INPUT_MAX_BATCH) do the same arithmetic as
on the dense matrix too."""
import resource
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

import mlp
from mlp import _kernels
from mlp.augment import Affine

from conftest import require


def _sparse_problem(n, d, classes, density, seed, dtype=np.float32):
    """A CSR matrix (n, d) with about density * d non-zero inputs a row, and
    labels that depend on them (so that training moves every parameter)."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, format="csr", dtype=dtype, random_state=seed)
    w = rng.normal(size=(d, classes))
    y = np.argmax(X @ w + 0.1 * rng.normal(size=(n, classes)), axis=1)
    return X, y


def _trained(model, X, y, **options):
    model = model.copy()
    mlp.train(model, X, y, progress=False, seed=3, **options)
    return model.parameters.copy()


OPTIMIZERS = {
    "sgd": lambda: mlp.SGD(learning_rate=0.05),
    "momentum": lambda: mlp.SGD(learning_rate=0.05, momentum=0.9),
    "adam": lambda: mlp.Adam(learning_rate=0.01),
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("n_threads", [1, 2])
def test_training_on_csr_equals_training_on_the_dense_matrix(dtype, optimizer, n_threads):
    """Row-major batches of 50: both list the non-zero inputs of each row,
    the dense path by scanning the row, the CSR path from its entries."""
    X, y = _sparse_problem(600, 300, 5, 0.05, seed=0)
    weights = np.random.default_rng(1).uniform(0.5, 2.0, size=600)
    model = mlp.Model([300, 24, 5], dtype=dtype, seed=0)
    options = dict(epochs=2, batch_size=50, n_threads=n_threads, dropout=0.1,
                   input_dropout=0.1, sample_weight=weights)
    dense = _trained(model, X.toarray(), y, optimizer=OPTIMIZERS[optimizer](), **options)
    sparse = _trained(model, X, y, optimizer=OPTIMIZERS[optimizer](), **options)
    np.testing.assert_array_equal(sparse, dense)
    assert not np.array_equal(sparse, model.parameters)


@pytest.mark.parametrize("n_threads,batch_size", [
    (2, 1100),   # the samples split: each worker scatters its rows into the batch
    (3, 100),    # more workers than list every row themselves
    (1, _kernels.SPARSE_INPUT_MAX_BATCH + 104),  # GEMMs on a batch made dense
])
def test_csr_batches_made_dense_train_as_the_dense_matrix(dtype, n_threads, batch_size):
    X, y = _sparse_problem(_kernels.SPARSE_INPUT_MAX_BATCH + 104, 60, 3, 0.1, seed=2)
    model = mlp.Model([60, 16, 3], dtype=dtype, seed=0)
    options = dict(epochs=1, batch_size=batch_size, n_threads=n_threads, input_dropout=0.1,
                   optimizer=mlp.Adam(learning_rate=0.01))
    np.testing.assert_array_equal(_trained(model, X, y, **options),
                                  _trained(model, X.toarray(), y, **options))


@pytest.mark.parametrize("data_dtype", [np.float32, np.float64])
def test_csr_data_of_the_other_float_type_trains_as_the_dense_matrix(dtype, data_dtype):
    """float32 data under a float64 model is widened as it is listed;
    float64 data under a float32 model is converted at the boundary."""
    X, y = _sparse_problem(300, 200, 4, 0.05, seed=4, dtype=data_dtype)
    model = mlp.Model([200, 16, 4], dtype=dtype, seed=0)
    options = dict(epochs=1, batch_size=40, optimizer=mlp.SGD(learning_rate=0.05, momentum=0.9))
    np.testing.assert_array_equal(_trained(model, X, y, **options),
                                  _trained(model, X.toarray(), y, **options))


@pytest.mark.parametrize("form", ["csr_array", "csc", "coo", "unsorted", "duplicates",
                                  "explicit_zeros", "int64_indices", "integers"])
def test_any_sparse_form_trains_as_its_dense_matrix(form):
    X, y = _sparse_problem(200, 100, 3, 0.08, seed=5)
    dense = X.toarray()
    if form == "csr_array":
        X = sp.csr_array(X)
    elif form == "csc":
        X = X.tocsc()
    elif form == "coo":
        X = X.tocoo()
    elif form == "unsorted":
        X = sp.csr_matrix((X.data[::-1].copy(), X.indices[::-1].copy(), X.indptr), shape=X.shape)
        for r in range(X.shape[0]):  # each row's entries in reverse order
            lo, hi = X.indptr[r], X.indptr[r + 1]
            X.data[lo:hi] = dense[r, np.nonzero(dense[r])[0][::-1]]
            X.indices[lo:hi] = np.nonzero(dense[r])[0][::-1]
        X.has_sorted_indices = False
        assert not X.has_canonical_format
    elif form == "duplicates":
        # Every entry split in two halves, which toarray() adds up again.
        coo = X.tocoo()
        X = sp.coo_matrix((np.concatenate([coo.data / 2, coo.data / 2]),
                           (np.concatenate([coo.row, coo.row]),
                            np.concatenate([coo.col, coo.col]))), shape=X.shape).tocsr()
        dense = X.toarray()
    elif form == "explicit_zeros":
        X = X.copy()
        X.data[::3] = 0
        X.data[1::3] *= -1
        X.data[2] = -0.0
        dense = X.toarray()
    elif form == "int64_indices":
        X = sp.csr_matrix((X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)),
                          shape=X.shape)
    elif form == "integers":
        X = sp.csr_matrix((np.ones(X.nnz, dtype=np.int64), X.indices, X.indptr), shape=X.shape)
        dense = X.toarray().astype(np.float32)
    model = mlp.Model([100, 12, 3], seed=0)
    options = dict(epochs=1, batch_size=40)
    np.testing.assert_array_equal(_trained(model, X, y, **options),
                                  _trained(model, dense, y, **options))


def test_training_on_csr_does_not_change_the_matrix():
    X, y = _sparse_problem(100, 50, 2, 0.1, seed=6)
    before = X.copy()
    mlp.train(mlp.Model([50, 8, 2], seed=0), X, y, epochs=1, batch_size=40, progress=False)
    assert (X != before).nnz == 0 and X.has_canonical_format


@pytest.mark.parametrize("n_threads", [1, 2])
def test_forward_predict_and_predict_proba_on_sparse_equal_the_dense_matrix(dtype, n_threads):
    """Over several blocks of rows made dense (5,000 inputs: 768 rows a block)."""
    X, _ = _sparse_problem(2000, 5000, 4, 0.004, seed=7, dtype=np.float64)
    model = mlp.Model([5000, 32, 16, 4], dtype=dtype, seed=0)
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    for form in (X, X.tocsc(), sp.csr_array(X)):
        np.testing.assert_allclose(model.forward(form, n_threads=n_threads),
                                   model.forward(X.toarray(), n_threads=n_threads),
                                   rtol=tolerance, atol=tolerance)
        np.testing.assert_allclose(model.predict_proba(form, n_threads=n_threads),
                                   model.predict_proba(X.toarray(), n_threads=n_threads),
                                   rtol=tolerance, atol=tolerance)
    assert model.forward(X).dtype == dtype and model.forward(X).shape == (2000, 4)
    # Classes: the same wherever the two largest outputs are not within rounding.
    dense = model.forward(X.toarray())
    top2 = np.sort(dense, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 10 * tolerance
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(model.predict(X)[clear], model.predict(X.toarray())[clear])


def test_evaluate_and_validation_take_sparse_x():
    X, y = _sparse_problem(400, 120, 3, 0.05, seed=13)
    model = mlp.Model([120, 16, 3], seed=0)
    assert mlp.evaluate(model, X, y) == mlp.evaluate(model, X.toarray(), y)
    options = dict(epochs=3, batch_size=40, progress=False, seed=0)
    with_sparse, with_dense = model.copy(), model.copy()
    sparse_history = mlp.train(with_sparse, X[:300], y[:300], validation=(X[300:], y[300:]),
                               **options)
    dense_history = mlp.train(with_dense, X[:300].toarray(), y[:300],
                              validation=(X[300:].toarray(), y[300:]), **options)
    assert sparse_history.val_accuracy == dense_history.val_accuracy
    regressor = mlp.Model([120, 8, 2], output="identity", seed=0)
    targets = np.random.default_rng(0).normal(size=(400, 2))
    np.testing.assert_allclose(mlp.evaluate(regressor, X, targets),
                               mlp.evaluate(regressor, X.toarray(), targets), rtol=1e-6)


def test_forward_unchecked_finds_nan_in_a_sparse_block():
    """The internal interface the estimators call: a csr_matrix whose
    values were not scanned is checked block by block when asked."""
    X, _ = _sparse_problem(3000, 40, 2, 0.1, seed=14)
    X.data[-1] = np.inf
    model = mlp.Model([40, 8, 2], seed=0)
    with model.locked():
        assert model.forward_unchecked(X, 1, check_finite=True) is None
        assert model.forward_unchecked(X[:-1], 1, check_finite=True) is not None


def test_a_regression_model_predicts_sparse_rows():
    X, _ = _sparse_problem(300, 40, 1, 0.1, seed=8)
    model = mlp.Model([40, 8, 2], output="identity", seed=0)
    np.testing.assert_allclose(model.predict(X), model.predict(X.toarray()), rtol=1e-5,
                               atol=1e-6)


def test_sparse_input_errors_say_what_is_wrong():
    X, y = _sparse_problem(50, 16, 2, 0.2, seed=9)
    model = mlp.Model([16, 4, 2], seed=0)
    with pytest.raises(ValueError, match="16 columns"):
        model.forward(sp.csr_matrix((3, 15), dtype=np.float32))
    with pytest.raises(ValueError, match="at least one sample"):
        model.forward(sp.csr_matrix((0, 16), dtype=np.float32))
    bad = X.copy()
    bad.data[5] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        mlp.train(model.copy(), bad, y, epochs=1, progress=False)
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        model.forward(bad)
    huge = sp.csr_matrix(X.toarray().astype(np.float64))
    huge.data[0] = 1e300
    with pytest.raises(ValueError, match="too large for float32"):
        model.predict(huge)
    with pytest.raises(TypeError, match="real numbers"):
        model.forward(X.astype(np.complex64))
    with pytest.raises(ValueError, match="2-D"):
        model.forward(sp.coo_array(np.ones(16, dtype=np.float32)))
    with pytest.raises(ValueError, match="y must have 50 labels"):
        mlp.train(model.copy(), X, y[:40], epochs=1, progress=False)
    # Where sparse X is not taken, the error says so, not "dtype object".
    with pytest.raises(TypeError, match=r"scipy.sparse.*X.toarray\(\)"):
        model.loss(X, np.eye(2, dtype=np.float32)[y])


def test_augment_refuses_sparse_x():
    X, y = _sparse_problem(50, 16, 2, 0.2, seed=10)
    with pytest.raises(ValueError, match="augment distorts dense images.*toarray"):
        mlp.train(mlp.Model([16, 4, 2], seed=0), X, y, epochs=1, progress=False,
                  augment=Affine(rotation=5))


def test_the_kernel_checks_what_would_take_it_out_of_bounds():
    data = np.ones(3, dtype=np.float32)
    with pytest.raises(ValueError, match="indptr"):
        _kernels.CsrMatrix(data, np.array([0, 1, 2], np.int32), np.array([0, 2, 1, 3]), 4)
    with pytest.raises(ValueError, match="indices"):
        _kernels.CsrMatrix(data, np.array([0, 1, 4], np.int32), np.array([0, 3]), 4)
    with pytest.raises(TypeError, match="int32"):
        _kernels.CsrMatrix(data, np.array([0, 1, 2]), np.array([0, 3]), 4)
    csr = _kernels.CsrMatrix(data, np.array([0, 1, 2], np.int32), np.array([0, 3]), 4)
    assert csr.shape == (1, 4) and csr.dtype == np.float32


def test_a_classifier_learns_from_sparse_input_as_scikit_learns_does():
    """A problem a linear model separates: both mlp and scikit-learn's
    MLPClassifier, trained on the same CSR matrix, fit it."""
    neural_network = require("sklearn.neural_network")
    X, y = _sparse_problem(1500, 400, 3, 0.05, seed=11)
    model = mlp.Model([400, 32, 3], seed=0)
    mlp.train(model, X, y, epochs=30, batch_size=50, optimizer=mlp.Adam(learning_rate=0.003),
              progress=False, seed=0)
    ours = np.mean(model.predict(X) == y)
    theirs = neural_network.MLPClassifier((32,), max_iter=30, random_state=0).fit(X, y).score(X, y)
    assert ours > 0.9 and theirs > 0.9, (ours, theirs)


# 200,000 x 2,000 float32 = 1.6 GB dense; 20 non-zeros a row, 34 MB as CSR.
_BIG_ROWS, _BIG_COLUMNS, _BIG_PER_ROW = 200_000, 2_000, 20


def _big_csr():
    rng = np.random.default_rng(12)
    # Distinct columns in each row: 20 of a stride-100 comb, shifted per row.
    columns = np.sort((rng.integers(0, 100, size=(_BIG_ROWS, 1))
                       + 100 * np.arange(_BIG_PER_ROW)) % _BIG_COLUMNS, axis=1)
    values = rng.uniform(0.1, 1.0, size=_BIG_ROWS * _BIG_PER_ROW).astype(np.float32)
    indptr = np.arange(0, _BIG_ROWS * _BIG_PER_ROW + 1, _BIG_PER_ROW, dtype=np.int64)
    X = sp.csr_matrix((values, columns.reshape(-1).astype(np.int32), indptr),
                      shape=(_BIG_ROWS, _BIG_COLUMNS))
    y = (columns[:, 0] % 2).astype(np.int64)
    return X, y


def test_training_and_predicting_on_a_big_csr_matrix_takes_a_fraction_of_its_dense_size():
    X, y = _big_csr()
    dense_bytes = _BIG_ROWS * _BIG_COLUMNS * 4
    model = mlp.Model([_BIG_COLUMNS, 32, 2], seed=0)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        mlp.train(model, X, y, epochs=1, batch_size=200, progress=False, n_threads=2)
        predicted = model.predict(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    assert peak < dense_bytes / 16, peak
    assert rss_growth < dense_bytes / 4, rss_growth
    assert predicted.shape == (_BIG_ROWS,)
    assert np.mean(predicted == y) > 0.6


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("hidden, sizes, output, loss", [
    ("relu", [30, 9, 4], "softmax", "cross_entropy"),
    ("gelu", [30, 9, 5, 2], "sigmoid", "binary_cross_entropy"),
    ("tanh", [30, 3], "identity", "mse")])
def test_rows_loss_and_gradients_of_csr_rows_are_the_dense_rows(dtype, hidden, sizes, output,
                                                                loss):
    """The full-batch loss, gradient and outputs (L-BFGS's objective) from
    a CsrMatrix, its first layer from the non-zeros: the dense rows' to
    rounding, over several chunks, with weights."""
    rng = np.random.default_rng(0)
    model = mlp.Model(sizes, activation=hidden, output=output, dtype=dtype, seed=0)
    X = rng.standard_normal((50, sizes[0]))
    X[rng.random(X.shape) < 0.8] = 0
    X = X.astype(dtype)
    Y = rng.uniform(0, 1, (50, sizes[-1])).astype(dtype)
    weights = rng.uniform(0, 2, 50).astype(dtype)
    csr = sp.csr_matrix(X)
    rows = _kernels.CsrMatrix(csr.data, csr.indices, csr.indptr.astype(np.int64), sizes[0])
    network = model.kernel_network
    work = np.empty(_kernels.workspace_size(np.asarray(sizes, np.intp), 7,
                                            network.hidden_activation), dtype)
    results = []
    for x in (X, rows):
        grads, outputs = np.empty(model.n_params, dtype), np.empty_like(Y)
        total = _kernels.rows_loss_and_gradients(network, _kernels.LOSSES[loss],
                                                 _kernels.Rows(x, Y, weights, outputs), grads,
                                                 work, 7)
        results.append((total, grads, outputs))
    (dense_total, dense_grads, dense_out), (total, grads, outputs) = results
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert total == pytest.approx(dense_total, rel=tol)
    np.testing.assert_allclose(grads, dense_grads, rtol=0,
                               atol=tol * np.abs(dense_grads).max())
    np.testing.assert_allclose(outputs, dense_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(dense_out, model.forward(X), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("units", [1, 17, 100, 161, 300])
@pytest.mark.parametrize("wide", [True, False], ids=["wide", "narrow"])
def test_csr_first_layer_weight_gradient_sums_each_entry_over_the_rows_in_order(dtype, units,
                                                                                wide):
    """The first layer's weight gradient from a CsrMatrix, for units narrower
    than a vector, between vectors and wider than a pass of registers, with
    16- and 8-float vectors: each entry is the sum over the rows, in row
    order, of value times the row's delta, each product rounded before it is
    added (the same bits as a scalar loop). With one identity layer and the
    squared error, the deltas are the outputs minus the targets, exactly."""
    rng = np.random.default_rng(units)
    d, n = 70, 90
    model = mlp.Model([d, units], activation="relu", output="identity", dtype=dtype, seed=0)
    csr = sp.random(n, d, density=0.1, format="csr", random_state=units, dtype=np.float64)
    csr = csr.astype(dtype)
    Y = rng.standard_normal((n, units)).astype(dtype)
    rows = _kernels.CsrMatrix(csr.data, csr.indices.astype(np.int32),
                              csr.indptr.astype(np.int64), d)
    network = model.kernel_network
    work = np.empty(_kernels.workspace_size(np.asarray([d, units], np.intp), 16,
                                            network.hidden_activation), dtype)
    grads, outputs = np.empty(model.n_params, dtype), np.empty_like(Y)
    try:
        _kernels.sparse_wide_rows(wide)
        _kernels.rows_loss_and_gradients(network, _kernels.LOSSES["mse"],
                                         _kernels.Rows(rows, Y, None, outputs), grads, work, 16)
    finally:
        _kernels.sparse_wide_rows(True)
    delta = outputs - Y
    expected = np.zeros((d, units), dtype)
    for i in range(n):
        begin, end = csr.indptr[i], csr.indptr[i + 1]
        expected[csr.indices[begin:end]] += csr.data[begin:end, None] * delta[i]
    np.testing.assert_array_equal(grads[:units * d].reshape(units, d), expected.T)
    np.testing.assert_allclose(grads[units * d:], delta.sum(axis=0), rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_csr_matrix_lists_its_non_zeros_by_column_as_scipys_csc(dtype):
    """CsrMatrix.index_columns: each column's rows in increasing order and
    their values, where scipy's canonical CSC form has them; an empty matrix
    has empty columns."""
    X = sp.random(60, 45, density=0.1, format="csr", random_state=2, dtype=np.float64)
    X = X.astype(dtype)
    rows = _kernels.CsrMatrix(X.data, X.indices.astype(np.int32), X.indptr.astype(np.int64),
                              45).index_columns()
    C = X.tocsc()
    C.sort_indices()
    np.testing.assert_array_equal(rows.column_starts, C.indptr)
    np.testing.assert_array_equal(rows.column_rows, C.indices)
    np.testing.assert_array_equal(rows.column_values, C.data)
    empty = _kernels.CsrMatrix(np.zeros(0, dtype), np.zeros(0, np.int32), np.zeros(4, np.int64),
                               5).index_columns()
    np.testing.assert_array_equal(empty.column_starts, np.zeros(6))


def test_rows_loss_and_gradients_without_the_total_gives_the_same_gradient_and_outputs():
    """total=False (L-BFGS's classifiers take their value from the outputs):
    0.0 for the loss, and the gradient and outputs of total=True."""
    rng = np.random.default_rng(0)
    model = mlp.Model([6, 8, 3], output="softmax", seed=0)
    X = rng.standard_normal((20, 6)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 20)]
    network = model.kernel_network
    work = np.empty(_kernels.workspace_size(np.asarray([6, 8, 3], np.intp), 20,
                                            network.hidden_activation), np.float32)
    results = []
    for total in (True, False):
        grads, outputs = np.empty(model.n_params, np.float32), np.empty_like(Y)
        value = _kernels.rows_loss_and_gradients(network, _kernels.LOSSES["cross_entropy"],
                                                 _kernels.Rows(X, Y, None, outputs), grads,
                                                 work, 20, None, total)
        results.append((value, grads, outputs))
    assert results[0][0] > 0 and results[1][0] == 0.0
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][2], results[1][2])
