"""Regression through the Python API: a model with identity output trains on
float targets, predicts values, is evaluated by mean squared error and R²,
and its default recipe does not diverge on standardised data."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import require

import mlp
from mlp.hyperparams import DEFAULT_OPTIMIZER, REGRESSION_DEFAULT_OPTIMIZER


def standardised_regression(n, n_features, seed, n_targets=1):
    """(X, y): standardised float32 features and targets of a smooth
    function of them; y is (n,) for one target, else (n, n_targets)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features))
    W = rng.standard_normal((n_features, n_targets))
    y = X @ W + np.sin(2 * X[:, :1]) + 0.1 * rng.standard_normal((n, n_targets))
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    y = (y - y.mean(axis=0)) / y.std(axis=0)
    y = y[:, 0] if n_targets == 1 else y
    return X.astype(np.float32), y.astype(np.float32)


def test_a_one_output_model_trains_on_1d_float_targets_as_on_a_column():
    X, y = standardised_regression(200, 5, seed=0)
    flat = mlp.Model([5, 16, 1], output="identity", seed=0)
    column = flat.copy()
    mlp.train(flat, X, y, epochs=2, progress=False, seed=0)
    mlp.train(column, X, y[:, None], epochs=2, progress=False, seed=0)
    np.testing.assert_array_equal(flat._params, column._params)
    step = mlp.Model([5, 16, 1], output="identity", seed=0)
    loss = mlp.training_step(step, X, y, learning_rate=0.01)
    assert loss == pytest.approx(mlp.Model([5, 16, 1], output="identity", seed=0)
                                 .loss(X, y[:, None]), rel=1e-5)


def test_1d_targets_of_the_wrong_length_are_refused_naming_y():
    X, y = standardised_regression(50, 5, seed=0)
    model = mlp.Model([5, 4, 1], output="identity", seed=0)
    with pytest.raises(ValueError, match="y must have 50 values to match X, got 49"):
        mlp.train(model, X, y[:-1], epochs=1, progress=False)


def test_a_multi_output_regression_still_takes_2d_targets_and_labels_stay_labels():
    X, Y = standardised_regression(200, 5, seed=1, n_targets=3)
    model = mlp.Model([5, 16, 3], output="identity", seed=0)
    mlp.train(model, X, Y, epochs=2, progress=False, seed=0)
    classifier = mlp.Model([5, 8, 3], seed=0)
    mlp.train(classifier, X, np.arange(200) % 3, epochs=1, progress=False, seed=0)
    with pytest.raises(TypeError, match="integer class labels"):
        mlp.train(classifier, X, Y[:, 0], epochs=1, progress=False)


@pytest.mark.parametrize("n_outputs", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_of_a_regression_model_returns_its_outputs(n_outputs, dtype):
    X, _ = standardised_regression(7, 5, seed=0)
    model = mlp.Model([5, 16, n_outputs], output="identity", dtype=dtype, seed=0)
    predicted = model.predict(X)
    outputs = model.forward(X)
    assert predicted.dtype == dtype
    if n_outputs == 1:
        assert predicted.shape == (7,)
        np.testing.assert_array_equal(predicted, outputs[:, 0])
    else:
        assert predicted.shape == (7, n_outputs)
        np.testing.assert_array_equal(predicted, outputs)
    assert len(np.unique(predicted)) > 1  # no longer argmax over the outputs


def test_predict_of_a_classifier_still_returns_int64_labels():
    X, _ = standardised_regression(7, 5, seed=0)
    for output in ("softmax", "sigmoid"):
        predicted = mlp.Model([5, 16, 3], output=output, seed=0).predict(X)
        assert predicted.dtype == np.int64 and predicted.shape == (7,)


def test_predict_of_a_diverged_regression_model_is_an_error_not_nan():
    X, _ = standardised_regression(7, 5, seed=0)
    model = mlp.Model([5, 16, 1], output="identity", seed=0)
    model.weights[0][...] = 3e38
    model.weights[1][...] = 3e38
    model.weights[1][0, 0] = -3e38
    with pytest.raises(ValueError, match="outputs are NaN.*cannot predict them"):
        model.predict(X)


def test_predict_proba_of_a_regression_model_is_refused_clearly():
    X, _ = standardised_regression(7, 5, seed=0)
    with pytest.raises(ValueError, match="predict_proba needs a classifier.*'identity'.*predict()"):
        mlp.Model([5, 16, 1], output="identity", seed=0).predict_proba(X)


def test_evaluate_reports_mse_and_r2_of_a_regression_model():
    sklearn_metrics = require("sklearn.metrics")
    X, y = standardised_regression(300, 5, seed=0)
    model = mlp.Model([5, 16, 1], output="identity", seed=0)
    mlp.train(model, X, y, epochs=5, progress=False, seed=0)
    result = mlp.evaluate(model, X, y)
    assert isinstance(result, mlp.RegressionEvaluation)
    assert not hasattr(result, "accuracy")
    predicted = model.predict(X).astype(np.float64)
    assert result.mse == pytest.approx(sklearn_metrics.mean_squared_error(y, predicted), rel=1e-9)
    assert result.r2 == pytest.approx(sklearn_metrics.r2_score(y, predicted), rel=1e-9)
    assert mlp.evaluate(model, X, y[:, None]) == result
    # A constant prediction scores R² 0 in the mean and a bad one below.
    assert mlp.metrics.regression_scores(y, np.full_like(y, y.mean())).r2 == pytest.approx(
        0, abs=1e-9)


def test_evaluate_averages_r2_over_the_outputs_as_scikit_learn_does():
    sklearn_metrics = require("sklearn.metrics")
    X, Y = standardised_regression(100, 5, seed=2, n_targets=3)
    model = mlp.Model([5, 8, 3], output="identity", dtype=np.float64, seed=0)
    result = mlp.evaluate(model, X, Y)
    predicted = model.predict(X)
    assert result.mse == pytest.approx(sklearn_metrics.mean_squared_error(Y, predicted), rel=1e-9)
    assert result.r2 == pytest.approx(sklearn_metrics.r2_score(Y, predicted), rel=1e-9)


def test_regression_scores_checks_its_arguments_and_constant_targets():
    scores = mlp.metrics.regression_scores
    assert scores([1.0, 1.0], [1.0, 1.0]) == (0.0, 1.0)
    assert scores([1.0, 1.0], [1.0, 2.0]) == (0.5, 0.0)
    assert scores([[0.0], [2.0]], [0.0, 2.0]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="y_pred must have the shape of y_true, \\(3,\\), got "
                                         "\\(2,\\)"):
        scores([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="y_true contains NaN"):
        scores([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(TypeError, match="y_pred must hold real numbers"):
        scores([1.0, 2.0], ["a", "b"])


def test_evaluate_of_a_classifier_is_unchanged():
    X, _ = standardised_regression(60, 5, seed=0)
    y = np.arange(60) % 3
    model = mlp.Model([5, 8, 3], seed=0)
    result = mlp.evaluate(model, X, y)
    assert isinstance(result, mlp.Evaluation)
    assert result.correct == int(np.count_nonzero(model.predict(X) == y))


def test_classification_metrics_refuse_a_regression_model():
    X, _ = standardised_regression(20, 5, seed=0)
    model = mlp.Model([5, 8, 3], output="identity", seed=0)
    with pytest.raises(ValueError, match="regression model, which has no classes"):
        mlp.metrics.never_predicted(model, X)
    with pytest.raises(ValueError, match="regression model, which has no classes"):
        mlp.metrics.predict_checked(model, X, np.zeros(20, dtype=int))


def test_validation_of_a_regression_run_is_refused_with_what_to_do_instead():
    X, y = standardised_regression(50, 5, seed=0)
    model = mlp.Model([5, 8, 1], output="identity", seed=0)
    with pytest.raises(ValueError, match="regression model; score it after training with "
                                         "mlp.evaluate"):
        mlp.train(model, X, y, epochs=1, validation=(X, y), progress=False)


@pytest.mark.parametrize("sizes", [[5, 16, 1], [10, 100, 1], [20, 256, 1], [13, 64, 64, 1],
                                   [20, 32, 3]])
@pytest.mark.parametrize("n", [200, 500])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_default_recipe_trains_a_regression_without_diverging(sizes, n, seed):
    """Nesterov SGD at 0.1 (the classifiers' default) diverged on most of
    these: the curvature of squared error at an identity output grows with the
    width of the last hidden layer."""
    X, y = standardised_regression(n, sizes[0], seed, n_targets=sizes[-1])
    model = mlp.Model(sizes, output="identity", seed=seed)
    before = mlp.evaluate(model, X, y).mse
    history = mlp.train(model, X, y, progress=False, seed=seed)
    after = mlp.evaluate(model, X, y).mse
    assert np.isfinite(model._params).all() and np.isfinite(history.loss).all()
    assert history.loss[-1] < history.loss[0]
    assert after < 0.9 * before
    assert model.optimizer_state.optimizer == REGRESSION_DEFAULT_OPTIMIZER


def test_regression_default_is_adam_and_classifiers_keep_nesterov_sgd():
    X, y = standardised_regression(64, 5, seed=0)
    regression = mlp.Model([5, 8, 1], output="identity", seed=0)
    mlp.train(regression, X, y, epochs=1, progress=False, seed=0)
    assert regression.optimizer_state.optimizer == mlp.Adam(learning_rate=0.001)
    for output in ("softmax", "sigmoid"):
        classifier = mlp.Model([5, 8, 2], output=output, seed=0)
        mlp.train(classifier, X, (y > 0).astype(int), epochs=1, progress=False, seed=0)
        assert classifier.optimizer_state.optimizer == DEFAULT_OPTIMIZER
        assert DEFAULT_OPTIMIZER == mlp.SGD(0.1, momentum=0.9, nesterov=True)
    # An explicit learning rate is still plain SGD, whatever the output.
    chosen = mlp.Model([5, 8, 1], output="identity", seed=0)
    mlp.train(chosen, X, y, epochs=1, learning_rate=0.01, progress=False, seed=0)
    assert chosen.optimizer_state.optimizer == mlp.SGD(0.01)


def test_a_regression_model_saves_and_loads_with_its_default_optimizer(tmp_path):
    X, y = standardised_regression(100, 5, seed=0)
    whole = mlp.Model([5, 8, 1], output="identity", seed=0)
    mlp.train(whole, X, y, epochs=4, progress=False, seed=0)
    split = mlp.Model([5, 8, 1], output="identity", seed=0)
    mlp.train(split, X, y, epochs=2, progress=False, seed=0)
    split.save(tmp_path / "model.npz")
    loaded = mlp.Model.load(tmp_path / "model.npz")
    # Constant rate: two runs of 2 epochs continue as one of 4.
    mlp.train(loaded, X, y, epochs=2, progress=False)
    np.testing.assert_array_equal(loaded._params, whole._params)
