"""mlp.sklearn: scikit-learn's estimator checks, equivalence with
sklearn.neural_network on the same data, and the behaviour scikit-learn
users rely on (labels, partial_fit, warm_start, pickling, errors)."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

from conftest import assert_close, require, run_python

sklearn = require("sklearn")

from sklearn import neural_network  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import mlp  # noqa: E402
from mlp.activations import ACTIVATIONS  # noqa: E402
from mlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# Short fits are the point of most tests here; the tests about convergence
# turn the warning back on.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# ---------------------------------------------------------------------------
# scikit-learn's estimator checks
# ---------------------------------------------------------------------------

# Checks that ask float32 (the default dtype) for agreement to about float32's
# rounding (rtol=1e-7, atol=1e-7 or 1e-9): whether they pass depends on the
# machine (a row's outputs may or may not change in the last bits with its
# position in the batch or the batch's size, as BLAS computes the rows at the
# edge of a block, or a batch of one row, with other instructions; a weighted
# and a repeated fit round differently). They run in float64, where they hold on
# every machine; test_float32_outputs_do_not_depend_on_the_batch asserts the
# bound float32 keeps everywhere.
FLOAT64_CHECKS = {"check_sample_weight_equivalence_on_dense_data",
                  "check_methods_sample_order_invariance",
                  "check_methods_subset_invariance",
                  "check_sample_weight_equivalence_on_sparse_data"}
# Every check these estimators are expected to fail, with the reason: none of
# them for a rounding difference, so that strict xfail fails on no machine.
EXPECTED_FAILURES = {
    "MLPClassifier": {},
    "MLPRegressor": {
        "check_regressor_multioutput": (
            "predictions have the model's dtype, float32 by default, and the check asks for "
            "float64; test_float64_passes_the_multioutput_check runs it with dtype='float64'"),
    },
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILURES[type(estimator).__name__]


# Small max_iter keeps the checks quick; n_threads=1 keeps them deterministic
# and out of each other's way.
@parametrize_with_checks(
    [MLPClassifier(max_iter=100, n_threads=1), MLPRegressor(max_iter=100, n_threads=1)],
    expected_failed_checks=_expected_failed_checks, xfail_strict=True,
)
def test_sklearn_compatible_estimator(estimator, check):
    if getattr(check, "func", check).__name__ in FLOAT64_CHECKS:
        estimator = clone(estimator).set_params(dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def test_float64_passes_the_multioutput_check():
    from sklearn.utils.estimator_checks import check_regressor_multioutput

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_regressor_multioutput("MLPRegressor",
                                    MLPRegressor(max_iter=100, n_threads=1, dtype="float64"))


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_float32_outputs_do_not_depend_on_the_batch(Estimator):
    """The questions of check_methods_sample_order_invariance and
    check_methods_subset_invariance in float32: a row's outputs are the same
    wherever it stands in the batch and whatever the batch's size, to float32
    rounding of sums of a few hundred products (not to the last bit, which the
    BLAS kernel decides)."""
    X, y = _data(n=300, features=6)
    estimator = Estimator(hidden_layer_sizes=(100, 30), max_iter=20, random_state=0)
    estimator.fit(X, y.astype(float) if Estimator is MLPRegressor else y)
    permutation = np.random.default_rng(1).permutation(len(X))
    methods = ["predict"] if Estimator is MLPRegressor else ["predict_proba",
                                                             "predict_log_proba"]
    for method in methods:
        outputs = getattr(estimator, method)
        in_order = outputs(X)
        assert in_order.dtype == np.float32
        shuffled = outputs(X[permutation])
        assert_close(shuffled, in_order[permutation], rtol=1e-5, atol=1e-5, err_msg=method)
        one_by_one = np.concatenate([outputs(X[i:i + 1]) for i in range(0, len(X), 7)])
        assert_close(one_by_one, in_order[::7], rtol=1e-5, atol=1e-5, err_msg=method)


# ---------------------------------------------------------------------------
# Same data, same hyper-parameters: the same training as scikit-learn
# ---------------------------------------------------------------------------
# With one batch per epoch the order of the samples does not matter, and
# both start from the same draws of random_state; in float64 the two must
# then agree to rounding, epoch by epoch, whatever scikit-learn decides
# between epochs (stopping, adaptive and inverse-scaling rates, early
# stopping and its split, the L2 term, sample weights, the loss reported).

def _data(n=60, features=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    return X, y % classes


def _fit_both(cls_name, X, y, sample_weight=None, **params):
    params = dict(hidden_layer_sizes=(7, 5), random_state=0, batch_size=len(X), **params)
    theirs = getattr(neural_network, cls_name)(**params)
    ours = getattr(mlp.sklearn, cls_name)(dtype="float64", n_threads=1, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # batch_size clipped by early stopping
        theirs.fit(X, y, sample_weight=sample_weight)
        ours.fit(X, y, sample_weight=sample_weight)
    return theirs, ours


def _assert_same_training(theirs, ours, rtol=1e-7):
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.t_ == theirs.t_
    assert (ours.n_layers_, ours.n_outputs_, ours.out_activation_) == (
        theirs.n_layers_, theirs.n_outputs_, theirs.out_activation_)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=rtol)
    for mine, expected in zip(ours.coefs_ + ours.intercepts_,
                              theirs.coefs_ + theirs.intercepts_):
        assert mine.shape == expected.shape
        np.testing.assert_allclose(mine, expected, rtol=100 * rtol, atol=100 * rtol)


@pytest.mark.parametrize("params", [
    dict(solver="sgd", momentum=0.9, nesterovs_momentum=True, learning_rate_init=0.1),
    dict(solver="sgd", momentum=0.5, nesterovs_momentum=False, learning_rate_init=0.2,
         alpha=0.01, activation="tanh"),
    dict(solver="sgd", momentum=0.0, learning_rate="invscaling", learning_rate_init=0.5,
         power_t=0.25, activation="logistic"),
    dict(solver="sgd", momentum=0.0, learning_rate="adaptive", learning_rate_init=0.3,
         tol=0.05, n_iter_no_change=2, max_iter=40),
    dict(solver="sgd", momentum=0.9, learning_rate_init=0.1, tol=0.02, n_iter_no_change=3,
         max_iter=60),
    dict(solver="sgd", momentum=0.9, learning_rate_init=0.05, activation="identity"),
], ids=["nesterov", "momentum-l2-tanh", "invscaling-logistic", "adaptive", "tol-stop",
        "identity"])
def test_classifier_sgd_trains_as_sklearn(params):
    X, y = _data()
    params.setdefault("max_iter", 12)
    _assert_same_training(*_fit_both("MLPClassifier", X, y, **params))


def test_classifier_adam_trains_as_sklearn():
    X, y = _data()
    # epsilon=1e-3 makes where eps goes (before sqrt(v)'s bias correction, as
    # scikit-learn adds it, or after, as PyTorch does) show at rtol 1e-3.
    for epsilon in (1e-8, 1e-3):
        _assert_same_training(*_fit_both("MLPClassifier", X, y, solver="adam",
                                         learning_rate_init=0.01, alpha=1e-3, max_iter=15,
                                         epsilon=epsilon))


def test_early_stopping_splits_scores_and_restores_as_sklearn():
    X, y = _data(n=100)
    theirs, ours = _fit_both("MLPClassifier", X, y, solver="sgd", learning_rate_init=0.5,
                             early_stopping=True, validation_fraction=0.2, tol=0.01,
                             n_iter_no_change=3, max_iter=50)
    _assert_same_training(theirs, ours)
    assert ours.validation_scores_ == theirs.validation_scores_
    assert ours.best_validation_score_ == theirs.best_validation_score_
    assert ours.best_loss_ is None and ours.validation_scores_


@pytest.mark.parametrize("kind", ["binary", "multilabel"])
def test_logistic_outputs_train_as_sklearn(kind):
    X, y = _data(classes=2)
    if kind == "multilabel":
        y = np.column_stack([y, X[:, 3] > 0, X[:, 1] < 0]).astype(int)
    theirs, ours = _fit_both("MLPClassifier", X, y, solver="sgd", learning_rate_init=0.2,
                             alpha=0.01, max_iter=10)
    _assert_same_training(theirs, ours)
    assert ours.out_activation_ == "logistic"
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-6)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.parametrize("outputs", [1, 3])
def test_regressor_trains_as_sklearn(outputs):
    X, _ = _data()
    rng = np.random.default_rng(1)
    y = X @ rng.standard_normal((4, outputs)) + 0.1 * rng.standard_normal((len(X), outputs))
    if outputs == 1:
        y = y.ravel()
    theirs, ours = _fit_both("MLPRegressor", X, y, solver="sgd", learning_rate_init=0.05,
                             alpha=0.1, max_iter=10)
    _assert_same_training(theirs, ours)
    assert ours.out_activation_ == "identity"
    assert ours.predict(X).shape == y.shape
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-6, atol=1e-9)


def test_sample_weight_trains_as_sklearn():
    X, y = _data()
    weights = np.random.default_rng(2).uniform(0.2, 3.0, len(X))
    _assert_same_training(*_fit_both("MLPClassifier", X, y, sample_weight=weights,
                                     solver="sgd", learning_rate_init=0.1, alpha=0.05,
                                     max_iter=8))


# ---------------------------------------------------------------------------
# Labels and outputs
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [
    np.array(["cat", "dog", "emu"]), np.array([3, 7, 11]), np.array([-1.0, 0.0, 2.0])])
def test_any_labels_come_back(labels):
    X, y = _data(n=120)
    y_named = labels[y]
    clf = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.05, max_iter=60,
                        random_state=0).fit(X, y_named)
    np.testing.assert_array_equal(clf.classes_, np.sort(labels))
    predicted = clf.predict(X)
    assert predicted.dtype == y_named.dtype and set(predicted) <= set(labels)
    assert clf.score(X, y_named) > 0.8
    proba = clf.predict_proba(X)
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], predicted)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba), rtol=1e-5)


def test_boolean_labels_are_binary():
    X, y = _data(classes=2)
    clf = MLPClassifier(max_iter=50, learning_rate_init=0.05, random_state=0).fit(X, y == 1)
    np.testing.assert_array_equal(clf.classes_, [False, True])
    assert clf.n_outputs_ == 1 and clf.out_activation_ == "logistic"
    assert clf.coefs_[-1].shape == (100, 1)
    assert clf.predict(X).dtype == bool
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)


def test_multilabel_indicator():
    X, y = _data(classes=2)
    Y = np.column_stack([y, X[:, 3] > 0]).astype(int)
    clf = MLPClassifier(max_iter=100, learning_rate_init=0.05, random_state=0).fit(X, Y)
    np.testing.assert_array_equal(clf.classes_, [0, 1])
    assert clf.model_.output == "sigmoid" and clf.n_outputs_ == 2
    assert clf.predict(X).shape == (len(X), 2)
    assert clf.score(X, Y) > 0.7  # subset accuracy


def test_coefs_are_sklearn_oriented_live_views():
    X, y = _data()
    clf = MLPClassifier(hidden_layer_sizes=(6, 5), max_iter=3, random_state=0).fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(4, 6), (6, 5), (5, 3)]
    assert [b.shape for b in clf.intercepts_] == [(6,), (5,), (3,)]
    # The forward pass in scikit-learn's orientation gives predict_proba.
    a = X
    for W, b in zip(clf.coefs_[:-1], clf.intercepts_[:-1]):
        a = np.maximum(a @ W + b, 0)
    z = a @ clf.coefs_[-1] + clf.intercepts_[-1]
    softmax = np.exp(z - z.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(X), softmax, rtol=1e-4, atol=1e-6)
    clf.intercepts_[-1][...] = [0, 0, 100]
    assert (clf.predict(X) == 2).all()


def test_assigning_coefs_and_intercepts_changes_the_model():
    # As in scikit-learn, whose lists hold the network itself.
    X, y = _data()
    clf = MLPClassifier(hidden_layer_sizes=(6,), max_iter=3, random_state=0).fit(X, y)
    theirs = neural_network.MLPClassifier(hidden_layer_sizes=(6,), max_iter=3,
                                          random_state=0).fit(X, y)
    for estimator in (clf, theirs):
        estimator.coefs_[0] = np.zeros((4, 6))
        estimator.coefs_[1] = np.zeros((6, 3))
        estimator.intercepts_[1] = np.array([0.0, 5.0, 0.0])
    np.testing.assert_allclose(clf.predict_proba(X), theirs.predict_proba(X), rtol=1e-6)
    assert (clf.predict(X) == 1).all()
    clf.coefs_ = [np.ones((4, 6)), np.ones((6, 3))]
    clf.intercepts_[:] = [np.zeros(6), np.array([0.0, 0.0, 1.0])]
    assert (clf.model_.weights[0] == 1).all() and (clf.predict(X) == 2).all()
    with pytest.raises(ValueError, match=r"coefs_\[0\] must have shape \(4, 6\)"):
        clf.coefs_[0] = np.zeros((6, 4))
    with pytest.raises(ValueError, match="one array per layer, 2; got 1"):
        clf.coefs_ = [np.zeros((4, 6))]
    with pytest.raises(ValueError, match=r"intercepts_\[1\] must be finite"):
        clf.intercepts_[1] = [0.0, np.nan, 0.0]
    with pytest.raises(TypeError, match=r"intercepts_\[0\] must be an array of numbers"):
        clf.intercepts_[0] = "zeros"
    with pytest.raises(NotFittedError):
        MLPClassifier().coefs_ = [np.zeros((4, 6))]
    # A bad layer leaves every layer as it was, not the ones before it replaced.
    before = [c.copy() for c in clf.coefs_]
    with pytest.raises(ValueError, match=r"coefs_\[1\] must have shape \(6, 3\)"):
        clf.coefs_ = [np.zeros((4, 6)), np.zeros((3, 6))]
    assert all((c == b).all() for c, b in zip(clf.coefs_, before))
    with pytest.raises(TypeError, match="coefs_ must be a list of arrays, one per layer"):
        clf.coefs_ = 5


def test_dtype_threads_and_dropout_reach_the_model():
    X, y = _data()
    clf = MLPClassifier(dtype="float64", max_iter=2, random_state=0).fit(X, y)
    assert clf.model_.dtype == np.float64 and clf.predict_proba(X).dtype == np.float64
    assert MLPClassifier(max_iter=2).fit(X, y).predict_proba(X).dtype == np.float32
    plain = MLPClassifier(max_iter=5, random_state=0, n_threads=1).fit(X, y)
    dropped = MLPClassifier(max_iter=5, random_state=0, n_threads=1, dropout=0.5).fit(X, y)
    assert not np.array_equal(plain.coefs_[0], dropped.coefs_[0])


@pytest.mark.parametrize("activation", sorted(
    a.sklearn_name for a in ACTIVATIONS.values() if a.hidden))
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_every_hidden_activation_is_accepted_and_trains(Estimator, activation):
    # scikit-learn's four names and mlp's own beyond them (leaky_relu, gelu, silu).
    X, y = _data()
    if Estimator is MLPRegressor:
        y = X[:, 0] - 0.5 * X[:, 1]
    model = Estimator(hidden_layer_sizes=(6,), activation=activation, max_iter=3,
                      random_state=0, n_threads=1, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    assert model.model_.activation == {a.sklearn_name: name
                                       for name, a in ACTIVATIONS.items()}[activation]
    assert model.loss_curve_[-1] < model.loss_curve_[0]


# ---------------------------------------------------------------------------
# Training control
# ---------------------------------------------------------------------------

def test_max_iter_warns_and_tol_stops():
    X, y = _data()
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(3\\)"):
        clf = MLPClassifier(max_iter=3, random_state=0).fit(X, y)
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 3 and clf.t_ == 3 * len(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = MLPClassifier(max_iter=200, tol=10.0, n_iter_no_change=2, random_state=0).fit(X, y)
    # The first epoch sets best_loss_; no later one improves on it by 10, and
    # training stops after n_iter_no_change + 1 such epochs.
    assert clf.n_iter_ == 4
    assert clf.best_loss_ == min(clf.loss_curve_)


def test_fit_is_reproducible_and_restarts():
    X, y = _data()
    a = MLPClassifier(max_iter=5, random_state=3, n_threads=1).fit(X, y)
    b = MLPClassifier(max_iter=5, random_state=3, n_threads=1).fit(X, y)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    first = a.coefs_[0].copy()
    a.fit(X, y)  # a second fit without warm_start starts again
    np.testing.assert_array_equal(a.coefs_[0], first)
    assert len(a.loss_curve_) == 5


def test_warm_start_continues():
    X, y = _data()
    clf = MLPClassifier(max_iter=4, warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
        model = clf.model_
        clf.fit(X, y)
    assert clf.model_ is model and len(clf.loss_curve_) == 8 and clf.t_ == 8 * len(X)
    assert clf.n_iter_ == 4
    with pytest.raises(ValueError, match="warm_start can only be used"):
        clf.fit(X, np.where(y == 2, 5, y))


def test_partial_fit():
    X, y = _data(n=300)
    clf = MLPClassifier(hidden_layer_sizes=(20,), learning_rate_init=0.01, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    for epoch in range(30):
        for rows in np.array_split(np.arange(300), 3):
            clf.partial_fit(X[rows], y[rows], classes=[0, 1, 2] if epoch == 0 else None)
    assert clf.n_iter_ == 1 and clf.t_ == 30 * 300 and len(clf.loss_curve_) == 90
    assert clf.score(X, y) > 0.85
    # scikit-learn's argument order: sample_weight, then classes.
    weighted = MLPClassifier(random_state=0, n_threads=1).partial_fit(
        X, y, np.where(y == 0, 0.0, 1.0), [0, 1, 2])
    unweighted = MLPClassifier(random_state=0, n_threads=1).partial_fit(X, y, None, [0, 1, 2])
    assert not np.allclose(weighted.coefs_[0], unweighted.coefs_[0])
    # A batch with fewer classes is fine; new classes or other classes are not.
    clf.partial_fit(X[y == 0], y[y == 0])
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(X, np.where(y == 2, 7, y))
    with pytest.raises(ValueError, match="is not the same"):
        clf.partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])


def test_partial_fit_regressor_and_optimizer_state_continues():
    X, _ = _data(n=200)
    y = X @ np.array([1.0, -2.0, 0.5, 0.0])
    reg = MLPRegressor(hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=0.01,
                       random_state=0)
    reg.partial_fit(X, y)
    state = reg.model_.optimizer_state
    assert state is not None and state.step == 1
    for _ in range(100):
        reg.partial_fit(X, y)
    assert reg.model_.optimizer_state is state and state.step == 101
    assert reg.score(X, y) > 0.9


@pytest.mark.parametrize("weights", [False, True], ids=["sizes", "sample-weights"])
def test_partial_fit_keeps_momentum_through_chunks_of_other_sizes(weights):
    # alpha is divided by each chunk's weight, so the weight decay differs
    # from chunk to chunk; scikit-learn keeps its velocities through that.
    X, y = _data(n=200)
    rng = np.random.default_rng(1)
    params = dict(hidden_layer_sizes=(7,), solver="sgd", momentum=0.9, alpha=0.01,
                  random_state=0)
    ours = MLPClassifier(dtype="float64", n_threads=1, **params)
    theirs = neural_network.MLPClassifier(**params)
    for n in (60, 70, 80, 90):
        weight = rng.uniform(0.5, 2.0, n) if weights else None
        # One batch a chunk: scikit-learn divides a batch by its own weight,
        # mlp by the chunk's mean weight times the batch size (the same here).
        ours.partial_fit(X[:n], y[:n], sample_weight=weight, classes=[0, 1, 2])
        theirs.partial_fit(X[:n], y[:n], sample_weight=weight, classes=[0, 1, 2])
    assert ours.model_.optimizer_state.step == 4
    for mine, expected in zip(ours.coefs_ + ours.intercepts_,
                              theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("solver, expected", [
    # momentum is SGD's only, as scikit-learn documents it: plain RMSprop.
    ("rmsprop", mlp.RMSprop(learning_rate=0.01, eps=1e-6, weight_decay=0.01 / 50)),
    ("adagrad", mlp.Adagrad(learning_rate=0.01, eps=1e-6, weight_decay=0.01 / 50)),
])
def test_other_registered_solvers_take_the_parameters_they_share(solver, expected):
    """solver names any of mlp's optimizers; learning_rate_init, epsilon and
    alpha (as the weight decay over the batch, not RMSprop's smoothing
    constant) reach it, momentum does not, and fit trains with it as
    mlp.train does."""
    X, y = _data(n=200)
    params = dict(hidden_layer_sizes=(7,), solver=solver, learning_rate_init=0.01,
                  epsilon=1e-6, momentum=0.5, alpha=0.01, batch_size=50, max_iter=3,
                  shuffle=False, random_state=0, dtype="float64", n_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(**params).fit(X, y)
    state = clf.model_.optimizer_state
    assert state.optimizer == expected and state.step == 12
    twin = MLPClassifier(**{**params, "max_iter": 1})
    twin.partial_fit(X, y, classes=[0, 1, 2])
    assert twin.model_.optimizer_state.optimizer == expected
    assert np.all(np.isfinite(clf.coefs_[0])) and clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_pipeline_and_grid_search():
    X, y = _data(n=150)
    search = GridSearchCV(
        make_pipeline(StandardScaler(), MLPClassifier(max_iter=40, random_state=0, n_threads=1)),
        {"mlpclassifier__hidden_layer_sizes": [(2,), (32,)],
         "mlpclassifier__learning_rate_init": [1e-4, 0.03]}, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X, y)
    assert search.best_params_ == {"mlpclassifier__hidden_layer_sizes": (32,),
                                   "mlpclassifier__learning_rate_init": 0.03}
    assert search.best_score_ > 0.8


# ---------------------------------------------------------------------------
# Pickling, cloning, export
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_pickle_and_clone(Estimator):
    X, y = _data()
    est = Estimator(hidden_layer_sizes=(8,), max_iter=5, random_state=0, dropout=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    twin = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(twin.predict(X), est.predict(X))
    assert twin.loss_curve_ == est.loss_curve_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        twin.partial_fit(X, y)  # and it trains on
    assert twin.t_ == est.t_ + len(X)
    fresh = clone(est)
    assert fresh.get_params() == est.get_params() and not hasattr(fresh, "model_")


def test_to_onnx_gives_predict_proba(tmp_path):
    ort = require("onnxruntime")
    X, y = _data()
    clf = MLPClassifier(max_iter=5, random_state=0).fit(X, y)
    clf.to_onnx(tmp_path / "clf.onnx")
    session = ort.InferenceSession(str(tmp_path / "clf.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": X.astype(np.float32)})[0]
    np.testing.assert_allclose(got, clf.predict_proba(X), rtol=1e-5, atol=1e-6)
    with pytest.raises(NotFittedError):
        MLPClassifier().to_onnx(tmp_path / "x.onnx")


# ---------------------------------------------------------------------------
# Bad input and bad parameters
# ---------------------------------------------------------------------------

def test_bad_input_raises_what_sklearn_raises():
    X, y = _data()
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(X)
    clf = MLPClassifier(max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 4"):
        clf.predict(X[:, :3])
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        clf.predict(bad)
    with pytest.raises(ValueError, match="NaN"):
        MLPClassifier().fit(bad, y)
    bad[3, 1] = -np.inf
    for method in (clf.predict, clf.predict_proba, clf.predict_log_proba):
        with pytest.raises(ValueError, match="Input X contains infinity"):
            method(bad)
    with pytest.raises(ValueError, match="Input X contains infinity"):
        clf.score(bad, y)
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier().fit(X, X[:, 0])


@pytest.mark.parametrize("params,exc,match", [
    (dict(max_fun=0), ValueError, "'max_fun' parameter"),
    # Parameters that fit alone but not together: named as scikit-learn names them.
    (dict(epsilon=1e-50), ValueError, "'epsilon' parameter .* not 0 in float32"),
    (dict(hidden_layer_sizes=(), dropout=0.5), ValueError, "'dropout' parameter .* none"),
    (dict(solver="newton"), ValueError, "'solver' parameter .*'rmsprop', 'adagrad'"),
    (dict(solver="rmsprop", epsilon=1e-50), ValueError, "rmsprop divides by zero"),
    (dict(activation="softplus"), ValueError, "'activation' parameter"),
    (dict(hidden_layer_sizes=(10, 0)), ValueError, "must be > 0"),
    (dict(hidden_layer_sizes="10"), TypeError, "hidden_layer_sizes"),
    (dict(alpha=-1.0), ValueError, "'alpha' parameter"),
    (dict(learning_rate_init=0), ValueError, "'learning_rate_init'"),
    (dict(batch_size=0), ValueError, "'batch_size'"),
    (dict(batch_size="big"), TypeError, "'batch_size'"),
    (dict(max_iter=0), ValueError, "'max_iter'"),
    (dict(momentum=1.5), ValueError, "'momentum'"),
    (dict(beta_2=1.0), ValueError, "'beta_2'"),
    (dict(validation_fraction=1.0), ValueError, "'validation_fraction'"),
    (dict(learning_rate="cosine"), ValueError, "'learning_rate'"),
    (dict(dtype="float16"), TypeError, "dtype"),
    (dict(n_threads=0), ValueError, "'n_threads'"),
    (dict(dropout=1.0), ValueError, "'dropout'"),
    (dict(shuffle="yes"), TypeError, "'shuffle'"),
])
def test_bad_parameters_fail_at_fit(params, exc, match):
    X, y = _data()
    clf = MLPClassifier(**params)  # __init__ only stores
    assert clf.get_params()[next(iter(params))] == next(iter(params.values()))
    with pytest.raises(exc, match=match):
        clf.fit(X, y)


@pytest.mark.parametrize("dtype,lr,scale", [("float32", 1e38, 1e6), ("float64", 1e300, 1e10)])
def test_a_diverging_fit_raises_and_keeps_finite_weights(dtype, lr, scale):
    # One batch, one epoch: its loss (taken before the step) is finite and the
    # step overflows the weights on any machine, so only the check of the
    # weights themselves sees it.
    X, y = _data()
    clf = MLPClassifier(hidden_layer_sizes=(5,), solver="sgd", momentum=0.0,
                        learning_rate_init=lr, alpha=0.0, batch_size=len(X), max_iter=1, dtype=dtype,
                        random_state=0)
    with pytest.raises(ValueError, match="non-finite parameter weights"):
        clf.fit(scale * X, y)
    assert all(np.isfinite(w).all() for w in clf.coefs_ + clf.intercepts_)


def test_poisson_regressor_rejects_negative_targets():
    X, y = _data()
    with pytest.raises(ValueError, match=r"valid range of the loss 'poisson'.*>= 0"):
        MLPRegressor(loss="poisson").fit(X, y.astype(float) - 1)
    with pytest.raises(ValueError, match="'loss' parameter of MLPRegressor"):
        MLPRegressor(loss="absolute_error").fit(X, y.astype(float))


def test_import_mlp_does_not_import_sklearn(tmp_path):
    code = "import sys, mlp; assert 'sklearn' not in sys.modules, 'sklearn imported'"
    run_python(code, tmp_path)


# ---------------------------------------------------------------------------
# Real MNIST
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_mnist_subset(mnist, tmp_path):
    ort = require("onnxruntime")
    train, _, test = mnist
    clf = MLPClassifier(hidden_layer_sizes=(100,), solver="sgd", momentum=0.9,
                        learning_rate_init=0.1, batch_size=100, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(train.images[:10000], train.labels[:10000])
    assert clf.score(test.images, test.labels) > 0.93
    clf.to_onnx(tmp_path / "mnist.onnx")
    session = ort.InferenceSession(str(tmp_path / "mnist.onnx"),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": test.images})[0]
    np.testing.assert_allclose(got, clf.predict_proba(test.images), rtol=1e-5, atol=1e-6)
