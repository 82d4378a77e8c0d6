"""mlp.sklearn behaves as scikit-learn's estimators where users see it: what
verbose prints, the order shuffle=False trains in, the labels that come back,
the error of a diverging fit, class_weight, and validation data given to fit."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from conftest import KernelSpy, require

sklearn = require("sklearn")

from sklearn import neural_network  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from test_sklearn import _assert_same_training, _data  # noqa: E402

import mlp  # noqa: E402
import mlp.sklearn  # noqa: E402
from mlp import training as training_module  # noqa: E402
from mlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _both(cls_name, **params):
    """scikit-learn's estimator and mlp's, float64 on one thread, same params."""
    params = dict(hidden_layer_sizes=(7, 5), random_state=0, **params)
    return (getattr(neural_network, cls_name)(**params),
            getattr(mlp.sklearn, cls_name)(dtype="float64", n_threads=1, **params))


# ---------------------------------------------------------------------------
# verbose: scikit-learn's lines on stdout
# ---------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d+\.\d+")


def _printed(estimator, capsys, X, y):
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X, y)
    captured = capsys.readouterr()
    return captured.out.splitlines(), captured.err


@pytest.mark.parametrize("params", [
    dict(solver="sgd", learning_rate_init=0.1, tol=0.02, n_iter_no_change=3, max_iter=60),
    dict(solver="sgd", learning_rate_init=0.5, early_stopping=True, validation_fraction=0.2,
         tol=0.01, n_iter_no_change=3, max_iter=50),
    dict(solver="sgd", momentum=0.0, learning_rate="adaptive", learning_rate_init=0.3,
         tol=0.05, n_iter_no_change=2, max_iter=40),
    dict(solver="adam", learning_rate_init=0.01, max_iter=5),
], ids=["loss-stop", "early-stopping", "adaptive", "max-iter"])
def test_verbose_prints_sklearns_lines(capsys, params):
    """The same lines as scikit-learn's, in the same order; in float64 the
    numbers in them agree to rounding."""
    X, y = _data(n=100)
    theirs, ours = _both("MLPClassifier", batch_size=100, verbose=True, **params)
    expected, _ = _printed(theirs, capsys, X, y)
    printed, err = _printed(ours, capsys, X, y)
    assert err == ""  # no progress bar
    assert any(line.startswith("Iteration 1, loss = ") for line in printed)
    if params.get("early_stopping"):
        assert any(line.startswith("Validation score: ") for line in printed)
    assert [_NUMBER.sub("#", line) for line in printed] == [
        _NUMBER.sub("#", line) for line in expected]
    for line, reference in zip(printed, expected):
        np.testing.assert_allclose([float(v) for v in _NUMBER.findall(line)],
                                   [float(v) for v in _NUMBER.findall(reference)],
                                   rtol=1e-6, atol=2e-8, err_msg=line)


def test_verbose_false_prints_nothing(capsys):
    X, y = _data()
    printed, err = _printed(MLPClassifier(max_iter=3, random_state=0), capsys, X, y)
    assert printed == [] and err == ""


# ---------------------------------------------------------------------------
# shuffle=False: X's order, every epoch
# ---------------------------------------------------------------------------

def test_sequential_sampling_visits_the_rows_in_order_every_epoch(monkeypatch):
    spy = KernelSpy()
    monkeypatch.setattr(training_module, "_kernels", spy)
    X, y = np.random.default_rng(0).standard_normal((10, 2)), np.arange(10) % 2
    history = mlp.train(mlp.Model([2, 2], seed=0), X, y, epochs=3, batch_size=3,
                        sampling="sequential", seed=0, progress=False)
    np.testing.assert_array_equal(np.concatenate(spy.orders), np.tile(np.arange(10), 3))
    assert history.steps == [4, 8, 12]


@pytest.mark.parametrize("cls_name,params", [
    ("MLPClassifier", dict(solver="sgd", momentum=0.9, learning_rate_init=0.1)),
    ("MLPClassifier", dict(solver="adam", learning_rate_init=0.01)),
    ("MLPRegressor", dict(solver="sgd", learning_rate_init=0.02)),
], ids=["sgd", "adam", "regressor"])
def test_shuffle_false_trains_as_sklearn_with_several_batches(cls_name, params):
    """Batches of 16 of 60 rows (the last one short), in X's order: the same
    steps as scikit-learn's, epoch by epoch. alpha=0: with several batches
    the L2 term's share of the reported loss is estimated (see the module's
    notes), and the short batch's decay is scaled by the full batch size."""
    X, y = _data()
    if cls_name == "MLPRegressor":
        y = X @ np.array([1.0, -2.0, 0.5, 0.0])
    theirs, ours = _both(cls_name, batch_size=16, shuffle=False, max_iter=8, alpha=0.0,
                         **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs.fit(X, y)
        ours.fit(X, y)
    _assert_same_training(theirs, ours)


def test_shuffle_false_with_l2_takes_sklearns_steps():
    X, y = _data()
    theirs, ours = _both("MLPClassifier", batch_size=15, shuffle=False, max_iter=8,
                         alpha=0.01, solver="sgd", learning_rate_init=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs.fit(X, y)
        ours.fit(X, y)
    for mine, expected in zip(ours.coefs_ + ours.intercepts_,
                              theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, expected, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------
# A diverging fit: scikit-learn's error, at the end of fit
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,lr,scale", [("float32", 1e38, 1e6), ("float64", 1e300, 1e10)])
def test_a_diverging_fit_raises_sklearns_error(dtype, lr, scale):
    X, y = _data()
    X = (scale * X).astype(dtype)  # scikit-learn computes in X's dtype
    params = dict(hidden_layer_sizes=(5,), solver="sgd", momentum=0.0, learning_rate_init=lr,
                  alpha=0.0, batch_size=len(X), max_iter=3, random_state=0)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError) as expected:
            neural_network.MLPClassifier(**params).fit(X, y)
        with pytest.raises(ValueError) as raised:
            MLPClassifier(dtype=dtype, **params).fit(X, y)
    assert str(raised.value) == str(expected.value)
    assert str(raised.value) == ("Solver produced non-finite parameter weights. The input data "
                                 "may contain large values and need to be preprocessed.")


def test_early_stopping_keeps_its_best_parameters_when_training_diverges_later(monkeypatch):
    """scikit-learn trains on with non-finite weights and, with early
    stopping, brings back its best (finite) ones at the end of fit: no error.
    mlp stops at the epoch that diverges and brings back the best ones too."""
    X, y = _data(n=100)
    train = training_module.train

    class NonFiniteAfterSecondEpoch(training_module.Callback):
        # After the estimator's own bookkeeping of epoch 2: epoch 3 then
        # trains on a NaN weight, and train() stops there (FloatingPointError).
        def on_epoch_end(self, run, history):
            if len(history.loss) == 2:
                run.model.parameters[0] = np.nan

    def diverging_third_epoch(*args, callbacks=(), **kwargs):
        return train(*args, callbacks=[*callbacks, NonFiniteAfterSecondEpoch()], **kwargs)

    monkeypatch.setattr(mlp.sklearn._training, "train", diverging_third_epoch)
    clf = MLPClassifier(hidden_layer_sizes=(5,), early_stopping=True, max_iter=10,
                        random_state=0, dtype="float64", n_threads=1).fit(X, y)
    assert clf.n_iter_ == 2 and len(clf.validation_scores_) == 2
    np.testing.assert_array_equal(clf.model_.parameters, clf._best_params)
    assert np.isfinite(clf.model_.parameters).all()
    clf.set_params(early_stopping=False)
    with pytest.raises(ValueError, match="^Solver produced non-finite parameter weights"):
        clf.fit(X, y)


# ---------------------------------------------------------------------------
# class_weight
# ---------------------------------------------------------------------------

def _fit_params(clf, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(*args, **kwargs)
    return clf.model_.parameters.copy()


def test_class_weight_multiplies_sample_weight():
    X, y = _data()
    params = dict(hidden_layer_sizes=(5,), max_iter=5, batch_size=20, random_state=0,
                  dtype="float64", n_threads=1)
    weights = np.random.default_rng(3).uniform(0.5, 2.0, len(X))
    doubled = np.where(y == 0, 2.0, 1.0)
    np.testing.assert_array_equal(
        _fit_params(MLPClassifier(class_weight={0: 2}, **params), X, y),
        _fit_params(MLPClassifier(**params), X, y, sample_weight=doubled))
    np.testing.assert_array_equal(
        _fit_params(MLPClassifier(class_weight={0: 2}, **params), X, y, sample_weight=weights),
        _fit_params(MLPClassifier(**params), X, y, sample_weight=weights * doubled))
    counts = np.bincount(y)
    balanced = len(y) / (len(counts) * counts[y])
    np.testing.assert_array_equal(
        _fit_params(MLPClassifier(class_weight="balanced", **params), X, y),
        _fit_params(MLPClassifier(**params), X, y, sample_weight=balanced))
    assert not np.array_equal(_fit_params(MLPClassifier(class_weight={0: 2}, **params), X, y),
                              _fit_params(MLPClassifier(**params), X, y))


def test_class_weight_in_partial_fit():
    X, y = _data()
    params = dict(hidden_layer_sizes=(5,), random_state=0, dtype="float64", n_threads=1)
    weighted = MLPClassifier(class_weight={"b": 3.0}, **params)
    reference = MLPClassifier(**params)
    labels = np.array(["a", "b", "c"])[y]
    weighted.partial_fit(X, labels, classes=["a", "b", "c"])
    reference.partial_fit(X, labels, classes=["a", "b", "c"],
                          sample_weight=np.where(labels == "b", 3.0, 1.0))
    np.testing.assert_array_equal(weighted.model_.parameters, reference.model_.parameters)
    with pytest.raises(ValueError, match="class_weight 'balanced' is not supported for "
                                         "partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=[0, 1, 2])


@pytest.mark.parametrize("class_weight", ["auto", [1, 2], 3])
def test_bad_class_weight_names_the_parameter(class_weight):
    X, y = _data()
    with pytest.raises(ValueError, match="'class_weight' parameter of MLPClassifier"):
        MLPClassifier(class_weight=class_weight).fit(X, y)


# ---------------------------------------------------------------------------
# fit(..., X_val=, y_val=): the validation data early stopping watches
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_given_validation_data_replaces_the_split(Estimator):
    X, y = _data(n=100)
    if Estimator is MLPRegressor:
        y = X @ np.array([1.0, -2.0, 0.5, 0.0])
    weights = np.linspace(0.5, 2.0, 30)
    clf = Estimator(hidden_layer_sizes=(8,), early_stopping=True, max_iter=20, random_state=0,
                    dtype="float64", n_threads=1)
    clf.fit(X[:70], y[:70], X_val=X[70:], y_val=y[70:], sample_weight_val=weights)
    assert clf.t_ == 70 * clf.n_iter_  # trained on all of X, nothing held out
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    # The best epoch's parameters come back: their score on the given data.
    assert clf.score(X[70:], y[70:], sample_weight=weights) == pytest.approx(
        clf.best_validation_score_, rel=1e-12)


def test_validation_data_errors_follow_hist_gradient_boosting():
    X, y = _data()
    with pytest.raises(ValueError, match="early_stopping is False"):
        MLPClassifier().fit(X, y, X_val=X, y_val=y)
    clf = MLPClassifier(early_stopping=True, max_iter=2)
    with pytest.raises(ValueError, match="X_val is provided, but y_val was not provided"):
        clf.fit(X, y, X_val=X)
    with pytest.raises(ValueError, match="y_val is provided, but X_val was not provided"):
        clf.fit(X, y, y_val=y)
    with pytest.raises(ValueError, match="X has 3 features"):
        clf.fit(X, y, X_val=X[:, :3], y_val=y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.fit(X, y, X_val=X, y_val=y[:-1])
    with pytest.raises(ValueError, match="y_val has classes not in"):
        clf.fit(X, y, X_val=X, y_val=y + 5)


# ---------------------------------------------------------------------------
# Labels come back as they were given
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [np.array([False, True]), np.array(["no", "yes"])])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_labels_come_back_unchanged(labels, early_stopping):
    X, y = _data(classes=2)
    y_labels = labels[y]
    clf = MLPClassifier(max_iter=5, random_state=0, early_stopping=early_stopping).fit(
        X, y_labels)
    predicted = clf.predict(X)
    assert predicted.dtype == y_labels.dtype and set(predicted) <= set(labels)
    assert clf.classes_.dtype == y_labels.dtype
    online = MLPClassifier(random_state=0).partial_fit(X, y_labels, classes=labels)
    assert online.predict(X).dtype == y_labels.dtype


def test_label_errors_quote_labels_as_sklearn():
    X, y = _data(classes=2)
    messages = []
    for Estimator in (neural_network.MLPClassifier, MLPClassifier):
        clf = Estimator(max_iter=2, random_state=0)
        clf.partial_fit(X, y == 1, classes=[False, True])
        with pytest.raises(ValueError) as raised:
            clf.partial_fit(X, np.where(y == 1, "yes", "no"))
        messages.append(str(raised.value))
        clf = Estimator(max_iter=2, random_state=0, warm_start=True).fit(X, y == 1)
        with pytest.raises(ValueError) as raised:
            clf.fit(X, np.arange(len(X)) % 3)
        messages.append(str(raised.value))
    assert messages[:2] == messages[2:]
    assert "[False  True]" in messages[0]


def test_unscaled_x_gets_no_warning_of_mlp_train_as_in_scikit_learn():
    """mlp.train warns of classifier inputs far beyond order 1; the
    estimators, like scikit-learn's, fit such X silently."""
    rng = np.random.default_rng(0)
    X = 50 * rng.standard_normal((60, 4))
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MLPClassifier(hidden_layer_sizes=(5,), max_iter=2).fit(X, y)
        MLPClassifier(hidden_layer_sizes=(5,)).partial_fit(X, y, classes=[0, 1])
    assert [w for w in caught if not issubclass(w.category, ConvergenceWarning)] == []
    with pytest.warns(UserWarning, match="expects features scaled"):
        mlp.train(mlp.Model([4, 5, 2], seed=0), X, y, epochs=1, progress=False)
