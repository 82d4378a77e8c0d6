"""mlp.sklearn with solver="lbfgs": the same L-BFGS-B path as
sklearn.neural_network in float64 (same data, same initial weights), and
scikit-learn's behaviour around it (max_fun, ConvergenceWarning, no
partial_fit, warm_start, errors)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import require

sklearn = require("sklearn")

from sklearn import neural_network  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from mlp import _lbfgs  # noqa: E402
from mlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


def _classification(n_classes, n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6))
    score = X[:, 0] + X[:, 1] ** 2 - X[:, 2] * X[:, 3]
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1]))
    return X, y


def _regression(n_outputs, n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6))
    Y = np.column_stack([np.sin(X[:, j]) + X[:, j + 1] * X[:, j + 2]
                         for j in range(n_outputs)])
    return X, (Y[:, 0] if n_outputs == 1 else Y)


def _fit_both(ours, theirs, X, y, sample_weight=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs.fit(X, y, sample_weight=sample_weight)
        ours.fit(X, y, sample_weight=sample_weight)
    return ours, theirs


def _assert_same_solution(ours, theirs, rtol=1e-6):
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    for mine, reference in zip(ours.coefs_ + ours.intercepts_,
                               theirs.coefs_ + theirs.intercepts_):
        scale = np.abs(reference).max()
        np.testing.assert_allclose(mine, reference, rtol=0, atol=rtol * scale)


# What L-BFGS amplifies over many iterations is rounding; 30 iterations
# of these small problems keep it far below the tolerance on every machine
# (about 1e-12 where they were written), and far above what a wrong loss or
# gradient would leave (the clipped log-loss alone moved the relu case by 8%).
ITERATIONS = 30


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("alpha, weighted", [(0.0, False), (1e-2, False), (1e-3, True)])
def test_classifier_follows_scikit_learn(activation, n_classes, alpha, weighted):
    X, y = _classification(n_classes)
    weight = np.random.default_rng(1).uniform(0.2, 3, len(y)) if weighted else None
    params = dict(hidden_layer_sizes=(7, 5), activation=activation, solver="lbfgs",
                  alpha=alpha, max_iter=ITERATIONS, random_state=0)
    ours, theirs = _fit_both(MLPClassifier(dtype="float64", **params),
                             neural_network.MLPClassifier(**params), X, y, weight)
    assert ours.out_activation_ == theirs.out_activation_
    _assert_same_solution(ours, theirs)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-6)


def test_multilabel_classifier_follows_scikit_learn():
    X, y = _classification(3)
    Y = np.column_stack([y == 0, y == 1, X[:, 4] > 0]).astype(int)
    params = dict(hidden_layer_sizes=(8,), activation="tanh", solver="lbfgs", alpha=1e-3,
                  max_iter=ITERATIONS, random_state=2)
    ours, theirs = _fit_both(MLPClassifier(dtype="float64", **params),
                             neural_network.MLPClassifier(**params), X, Y)
    _assert_same_solution(ours, theirs)


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("n_outputs", [1, 2])
@pytest.mark.parametrize("alpha, weighted", [(0.0, False), (1e-2, True)])
def test_regressor_follows_scikit_learn(activation, n_outputs, alpha, weighted):
    # Two outputs: scikit-learn's value is a mean over them, its gradient
    # that of their sum; the path follows only if mlp's does the same.
    X, y = _regression(n_outputs)
    weight = np.random.default_rng(1).uniform(0.2, 3, len(y)) if weighted else None
    params = dict(hidden_layer_sizes=(7,), activation=activation, solver="lbfgs",
                  alpha=alpha, max_iter=ITERATIONS, random_state=0)
    ours, theirs = _fit_both(MLPRegressor(dtype="float64", **params),
                             neural_network.MLPRegressor(**params), X, y, weight)
    _assert_same_solution(ours, theirs)


def test_every_worker_count_gives_the_same_objective():
    """The rows split into blocks, one per worker: the value and gradient
    are the same sums to rounding."""
    X, y = _classification(3, n=200)
    fitted = MLPClassifier(hidden_layer_sizes=(9,), solver="lbfgs", max_iter=3,
                           dtype="float64", random_state=0)
    _fit_both(fitted, neural_network.MLPClassifier(), X[:10], y[:10])
    Y = np.eye(3)[y]
    weight = np.random.default_rng(3).uniform(0, 2, len(y))
    results = []
    for threads in (1, 2, 3):
        objective = _lbfgs.FullBatchObjective(fitted.model_, np.ascontiguousarray(X), Y, 1,
                                              weight, 0.1, 1.0, threads)
        with objective.running():
            results.append(objective(objective.initial_point()))
    for value, gradient in results[1:]:
        assert value == pytest.approx(results[0][0], rel=1e-12)
        np.testing.assert_allclose(gradient, results[0][1], rtol=1e-10, atol=1e-14)


def test_packed_order_is_scikit_learns():
    sizes = (3, 4, 2)
    x = np.arange(sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])), dtype=float)
    flat = x[_lbfgs.sklearn_order(sizes)]
    # scikit-learn's packing: coefs_ (n_in, n_out) row-major, then intercepts_.
    W0, W1 = x[:12].reshape(3, 4), x[12:20].reshape(4, 2)
    b0, b1 = x[20:24], x[24:26]
    np.testing.assert_array_equal(flat, np.concatenate([W0.T.ravel(), b0, W1.T.ravel(), b1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("sizes, output, loss", [
    ([30, 40, 7], "softmax", "cross_entropy"),
    ([30, 20, 9, 3], "sigmoid", "binary_cross_entropy"),
    ([30, 5, 2], "identity", "mse")])
def test_big_networks_permuted_layer_by_layer_get_the_same_value_and_gradient(
        monkeypatch, dtype, sizes, output, loss):
    """Networks of many parameters are moved between the two layouts layer
    by layer (transposed views), small ones through the index arrays; both
    give the same point, model parameters, value and gradient, bit for bit."""
    import mlp
    from mlp import _kernels

    rng = np.random.default_rng(0)
    model = mlp.Model(sizes, output=output, dtype=dtype, seed=0)
    start = model.parameters.copy()
    X = rng.standard_normal((60, sizes[0])).astype(dtype)
    Y = {"softmax": lambda: np.eye(sizes[-1])[rng.integers(0, sizes[-1], 60)],
         "sigmoid": lambda: (rng.random((60, sizes[-1])) < 0.5).astype(float),
         "identity": lambda: rng.standard_normal((60, sizes[-1]))}[output]().astype(dtype)
    weight = rng.uniform(0.5, 2, 60)
    results = []
    for threshold in (10 ** 9, 0):
        monkeypatch.setattr(_lbfgs, "_BY_LAYER_PARAMS", threshold)
        model.parameters[...] = start
        objective = _lbfgs.FullBatchObjective(model, X, Y, _kernels.LOSSES[loss], weight, 0.01,
                                              1.0, 2)
        x = objective.initial_point()
        with objective.running():
            value, gradient = objective(1.1 * x)
        results.append((x, value, gradient, model.parameters.copy()))
    for first, second in zip(results[0], results[1]):
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("sizes, output, loss", [
    ([30, 40, 7], "softmax", "cross_entropy"),
    ([30, 20, 9, 3], "sigmoid", "binary_cross_entropy"),
    ([30, 5, 2], "identity", "mse")])
def test_sparse_big_networks_keep_the_first_layer_in_shared_panels(monkeypatch, dtype, sizes,
                                                                   output, loss):
    """Sparse X and many parameters: the blocks read the first layer's
    weights from one panel that the objective fills, and leave its gradient
    in panels of scikit-learn's layout, added up by column from the kept
    deltas (or, without room for them, row by row). Value and gradient are
    those of the per-block panels to rounding, and set_parameters still
    writes every parameter into the model."""
    import scipy.sparse as sp

    import mlp
    from mlp import _kernels

    rng = np.random.default_rng(1)
    model = mlp.Model(sizes, output=output, dtype=dtype, seed=0)
    start = model.parameters.copy()
    X = rng.standard_normal((70, sizes[0]))
    X[rng.random(X.shape) < 0.8] = 0
    X = sp.csr_matrix(X.astype(dtype))
    Y = {"softmax": lambda: np.eye(sizes[-1])[rng.integers(0, sizes[-1], 70)],
         "sigmoid": lambda: (rng.random((70, sizes[-1])) < 0.5).astype(float),
         "identity": lambda: rng.standard_normal((70, sizes[-1]))}[output]().astype(dtype)
    weight = rng.uniform(0.5, 2, 70)
    results = []
    for shared in ("none", "by column", "by row"):
        monkeypatch.setattr(_lbfgs, "_BY_LAYER_PARAMS", 0)
        # Where the deltas would take too much memory: the gradient by row.
        monkeypatch.setattr(_lbfgs, "_keeps_deltas", lambda x, units: shared != "by row")
        model.parameters[...] = start
        objective = _lbfgs.FullBatchObjective(model, X, Y, _kernels.LOSSES[loss], weight, 0.01,
                                              1.0, 2)
        assert objective._panels is not None
        assert all((panels.deltas is None) == (shared == "by row")
                   for panels in objective._panels)
        if shared == "none":
            objective._panels = None
        x = objective.initial_point()
        with objective.running():
            value, gradient = objective(1.1 * x)
            again = objective(1.2 * x)
        objective.set_parameters(1.1 * x)
        results.append((x, value, gradient, *again, model.parameters.copy()))
    for other in results[1:]:
        for i, (first, second) in enumerate(zip(results[0], other)):
            if i in (1, 3):
                # The values' sums of squares run in another order.
                assert second == pytest.approx(first, rel=1e-12)
            elif i in (2, 4):
                # The same operations in the same order; a compiler may fuse
                # the penalty's product and sum where the CPU has FMA.
                np.testing.assert_allclose(second, first, rtol=1e-12,
                                           atol=1e-14 * np.abs(first).max())
            else:
                np.testing.assert_array_equal(first, second)


def test_sparse_blocks_keep_their_deltas_where_they_take_little_memory():
    import scipy.sparse as sp

    from mlp import _kernels

    X = sp.random(1000, 500, density=0.02, format="csr", random_state=0, dtype=np.float32)
    rows = _kernels.CsrMatrix(X.data, X.indices, X.indptr.astype(np.int64), 500)
    # 1,000 x 112 floats of deltas (448 KB) against 10,000 non-zeros (80 KB):
    # within the floor, not beyond it.
    assert _lbfgs._keeps_deltas(rows, 100)
    assert not _lbfgs._keeps_deltas(rows, 100_000)


def test_float32_reaches_a_solution_as_good_as_scikit_learns():
    X, y = _classification(3, n=200)
    params = dict(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=200, random_state=0)
    ours, theirs = _fit_both(MLPClassifier(**params), neural_network.MLPClassifier(**params),
                             X.astype(np.float32), y)
    assert ours.loss_ < 1.5 * theirs.loss_ + 1e-3
    assert ours.score(X, y) >= theirs.score(X, y) - 0.05


def test_stopping_at_max_iter_warns_as_scikit_learn():
    X, y = _classification(3)
    clf = MLPClassifier(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=5, random_state=0)
    with pytest.warns(ConvergenceWarning, match=r"(?s)lbfgs failed to converge after 5 "
                                                r"iteration\(s\).*max_iter=5"):
        clf.fit(X, y)
    assert clf.n_iter_ == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        MLPClassifier(hidden_layer_sizes=(3,), solver="lbfgs", max_iter=10_000, tol=1e-2,
                      random_state=0).fit(X, y)


def test_max_fun_bounds_the_loss_evaluations(monkeypatch):
    X, y = _regression(1)
    calls = []
    original = _lbfgs.FullBatchObjective.__call__

    def counting(self, x):
        calls.append(1)
        return original(self, x)

    monkeypatch.setattr(_lbfgs.FullBatchObjective, "__call__", counting)
    reg = MLPRegressor(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=1000, max_fun=7,
                       random_state=0, dtype="float64")
    with pytest.warns(ConvergenceWarning, match="(?is)lbfgs failed to converge.*evaluations"):
        reg.fit(X, y)
    # scipy checks the count between iterations, so a line search may finish.
    assert 7 <= len(calls) < 7 + 20
    assert reg.n_iter_ < 1000
    reference = neural_network.MLPRegressor(hidden_layer_sizes=(10,), solver="lbfgs",
                                            max_iter=1000, max_fun=7, random_state=0)
    with pytest.warns(ConvergenceWarning):
        reference.fit(X, y)
    assert reg.n_iter_ == reference.n_iter_


@pytest.mark.parametrize("max_fun, exc", [(0, ValueError), (-3, ValueError), (2.5, TypeError),
                                          ("many", TypeError), (True, TypeError)])
def test_bad_max_fun_fails_at_fit(max_fun, exc):
    X, y = _classification(2)
    clf = MLPClassifier(solver="lbfgs", max_fun=max_fun)
    assert clf.get_params()["max_fun"] == max_fun
    with pytest.raises(exc, match=r"The 'max_fun' parameter of MLPClassifier must be an int "
                                  r"in the range \[1, inf\)"):
        clf.fit(X, y)


def test_dropout_is_refused_with_lbfgs():
    X, y = _classification(2)
    with pytest.raises(ValueError, match="'dropout' parameter .* solver='lbfgs'"):
        MLPClassifier(solver="lbfgs", dropout=0.5).fit(X, y)


def test_all_zero_sample_weight_is_refused():
    # A zero sum of weights would make the objective 0 / 0.
    X, y = _regression(1)
    with pytest.raises(ValueError, match="at least one non-zero"):
        MLPRegressor(solver="lbfgs").fit(X, y, sample_weight=np.zeros(len(y)))


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_partial_fit_is_absent_for_lbfgs(cls):
    assert not hasattr(cls(solver="lbfgs"), "partial_fit")
    assert hasattr(cls(solver="adam"), "partial_fit")
    with pytest.raises(AttributeError, match="partial_fit"):
        cls(solver="lbfgs").partial_fit(*_regression(1))


def test_max_fun_is_a_parameter_with_scikit_learns_default():
    for ours, theirs in [(MLPClassifier(), neural_network.MLPClassifier()),
                         (MLPRegressor(), neural_network.MLPRegressor())]:
        assert ours.get_params()["max_fun"] == theirs.get_params()["max_fun"] == 15000
        assert ours.set_params(max_fun=9).max_fun == 9


def test_warm_start_continues_as_scikit_learn():
    X, y = _classification(3)
    params = dict(hidden_layer_sizes=(6,), activation="tanh", solver="lbfgs", max_iter=10,
                  random_state=0, warm_start=True)
    ours = MLPClassifier(dtype="float64", **params)
    theirs = neural_network.MLPClassifier(**params)
    for _ in range(3):
        _fit_both(ours, theirs, X, y)
        _assert_same_solution(ours, theirs)
    assert ours.t_ == theirs.t_ == 0
    # A fit without warm_start starts again from random_state's weights.
    ours.set_params(warm_start=False)
    theirs.set_params(warm_start=False)
    _fit_both(ours, theirs, X, y)
    _assert_same_solution(ours, theirs)


@parametrize_with_checks(
    [MLPClassifier(solver="lbfgs", max_iter=100, n_threads=1, dtype="float64"),
     MLPRegressor(solver="lbfgs", max_iter=100, n_threads=1, dtype="float64")],
)
def test_lbfgs_estimators_pass_scikit_learns_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("softmax", [True, False])
def test_clipped_log_loss_is_scikit_learns_row_by_row(dtype, softmax):
    """_kernels.clipped_log_loss: each row's scikit-learn log-loss of the
    outputs clipped to their dtype's [eps, 1 - eps], for 0/1 and fractional
    targets and for probabilities at and past the clip (0, 1, tiny)."""
    from scipy.special import xlogy

    from mlp import _kernels

    rng = np.random.default_rng(0)
    n, k = 40, 4
    P = rng.uniform(0, 1, (n, k))
    P[:5] = [0.0, 1.0, 1e-30, 0.5]
    if softmax:
        P /= P.sum(axis=1, keepdims=True)
    P = P.astype(dtype)
    Y = np.eye(k)[rng.integers(0, k, n)]
    Y[-5:] = rng.uniform(0, 1, (5, k))
    Y = Y.astype(dtype)
    eps = np.finfo(dtype).eps
    clipped = np.clip(P, eps, 1 - eps).astype(np.float64)
    terms = xlogy(Y.astype(np.float64), clipped)
    if not softmax:
        terms += xlogy(1 - Y.astype(np.float64), 1 - clipped)
    per_row = np.empty(n)
    _kernels.clipped_log_loss(_kernels.Rows(P, Y, None, P), softmax, per_row)
    np.testing.assert_allclose(per_row, -terms.sum(axis=1), rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="outputs"):
        _kernels.clipped_log_loss(_kernels.Rows(P, Y), softmax, per_row)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_first_layer_gradient_is_numpys_sum_penalty_and_scale(dtype):
    """_kernels.first_layer_gradient: the panels' gradients added in
    order, plus alpha times the weights rounded to the panels' type, over
    the weight sum, in scikit-learn's (n_inputs, units) layout; the sum of
    the rounded weights' squares."""
    import mlp
    from mlp import _kernels

    rng = np.random.default_rng(0)
    network = mlp.Model([9, 21, 3], dtype=dtype, seed=0).kernel_network
    first = _kernels.FirstLayerPanels(network)
    panels = [first, _kernels.FirstLayerPanels(network, first.weights),
              _kernels.FirstLayerPanels(network, first.weights)]
    for p in panels:
        p.gradient[...] = rng.standard_normal(p.gradient.shape)
    x = rng.standard_normal(9 * 21)
    out = np.empty(9 * 21)
    squares = _kernels.first_layer_gradient(panels, x, 0.3, 7.0, out)
    total = panels[0].gradient[:, :21].astype(np.float64)
    for p in panels[1:]:
        total += p.gradient[:, :21]
    w = x.astype(dtype).astype(np.float64)
    np.testing.assert_allclose(out, (total.ravel() + w * 0.3) / 7.0, rtol=1e-14, atol=1e-15)
    assert squares == pytest.approx(np.dot(w, w), rel=1e-13)
    with pytest.raises(ValueError, match="n_inputs"):
        _kernels.first_layer_gradient(panels, x[1:], 0.3, 7.0, out)


def test_sparse_big_network_follows_scikit_learn():
    """Sparse X and over 50,000 parameters (the shared first-layer panel,
    the gradient by column, the compiled first-layer penalty): float64
    follows scikit-learn's path, with sample weights, to rounding."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    X = sp.random(400, 600, density=0.05, format="csr", random_state=0)
    y = rng.integers(0, 3, 400)
    weight = rng.uniform(0.5, 2, 400)
    params = dict(hidden_layer_sizes=(100,), solver="lbfgs", alpha=1e-3, max_iter=15,
                  random_state=0)
    ours, theirs = _fit_both(MLPClassifier(dtype="float64", **params),
                             neural_network.MLPClassifier(**params), X, y, weight)
    assert ours.model_.n_params > _lbfgs._BY_LAYER_PARAMS
    _assert_same_solution(ours, theirs)
