"""Classification metrics: the confusion matrix, per-class precision and
recall, and the classes a model never predicts; and the regression scores
(mean squared error and R²) that :func:`mlp.evaluate` reports for a model
with identity output.

The classification metrics work on integer labels; the functions that take a
model run it once over the data and reuse the predictions.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._validation import _as_numeric_array, check_int, check_labels, check_matrix, check_targets
from .model import Model

__all__ = [
    "ClassScores",
    "RegressionEvaluation",
    "check_model",
    "class_scores",
    "confusion_matrix",
    "never_predicted",
    "never_predicted_message",
    "predict_checked",
    "regression_scores",
]


class ClassScores(NamedTuple):
    """Per-class results of :func:`class_scores`, each an array of shape (n_classes,).

    Attributes
    ----------
    precision : ndarray of float64, shape (n_classes,)
        Of the samples predicted as the class, the fraction that belong to
        it. NaN for a class that is never predicted.
    recall : ndarray of float64, shape (n_classes,)
        Of the samples of the class, the fraction predicted as it. NaN for a
        class with no samples.
    support : ndarray of int64, shape (n_classes,)
        Samples whose true label is the class.
    predicted : ndarray of int64, shape (n_classes,)
        Samples predicted as the class.
    """

    precision: np.ndarray
    recall: np.ndarray
    support: np.ndarray
    predicted: np.ndarray


class RegressionEvaluation(NamedTuple):
    """Scores of a regression: what :func:`mlp.evaluate` returns for a model
    with identity output, and :func:`regression_scores` computes.

    Attributes
    ----------
    mse : float
        Mean squared error over every sample and output,
        ``mean((y_pred - y_true) ** 2)`` (scikit-learn's
        ``mean_squared_error``). Twice the training loss ``"mse"`` per
        sample for one output, which is ``0.5 * ||a - y||^2``.
    r2 : float
        Coefficient of determination, ``1 - sum((y_pred - y_true) ** 2) /
        sum((y_true - mean(y_true)) ** 2)`` per output, averaged over the
        outputs (scikit-learn's ``r2_score``): 1 for exact predictions, 0 for
        predicting the mean, negative for worse. An output whose targets are
        all equal scores 1 if predicted exactly, else 0.
    """

    mse: float
    r2: float


def regression_scores(y_true, y_pred):
    """Mean squared error and R² of predictions, computed in float64.

    Parameters
    ----------
    y_true : array-like of float, shape (n,) or (n, n_outputs)
        The targets.
    y_pred : array-like of float, the shape of y_true
        The predictions, e.g. ``model.predict(X)``.

    Returns
    -------
    RegressionEvaluation
        (mse, r2), two Python floats.

    Raises
    ------
    TypeError
        If either is not numeric.
    ValueError
        If the shapes differ or are not (n,) or (n, n_outputs), there is no
        sample, or a value is NaN or infinite.
    """
    y_true = _as_numeric_array(y_true, "y_true")
    given_shape = y_true.shape
    n_outputs = 1 if y_true.ndim == 1 else y_true.shape[-1]
    y_true = check_targets(y_true, "y_true", n_outputs=n_outputs, n_rows=None, dtype=np.float64)
    y_pred = _as_numeric_array(y_pred, "y_pred")
    # One output may come as (n,) or (n, 1) on either side.
    if y_pred.shape not in (y_true.shape, y_true.shape[:1] if n_outputs == 1 else None):
        raise ValueError(f"y_pred must have the shape of y_true, {given_shape}, got "
                         f"{y_pred.shape}")
    y_pred = check_targets(y_pred, "y_pred", n_outputs=n_outputs, n_rows=y_true.shape[0],
                           dtype=np.float64)
    squared = (y_pred - y_true) ** 2
    residual = squared.sum(axis=0)
    total = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(total > 0, 1 - residual / total, np.where(residual == 0, 1.0, 0.0))
    return RegressionEvaluation(float(squared.mean()), float(r2.mean()))


def check_model(model, name="model"):
    """Return model if it is an :class:`mlp.Model`, else raise TypeError."""
    if not isinstance(model, Model):
        raise TypeError(f"{name} must be an mlp.Model, got {type(model).__name__}")
    return model


def check_classifier(model, name="model"):
    """Return model if it is an :class:`mlp.Model` that classifies (softmax or
    sigmoid output), else raise TypeError or ValueError."""
    if check_model(model, name).is_regressor:
        raise ValueError(f"{name} has 'identity' output, a regression model, which has no "
                         f"classes to count; mlp.evaluate(model, X, y) reports its mean "
                         f"squared error and R²")
    return model


def predict_checked(model, X, y=None):
    """Validate (model, X[, y]) and predict once.

    Parameters
    ----------
    model : mlp.Model
    X : array-like of float, shape (n, n_inputs)
    y : array-like of int, shape (n,), optional
        Labels in [0, model.n_outputs).

    Returns
    -------
    X : ndarray of the model's dtype, shape (n, n_inputs)
        C-contiguous.
    y : ndarray of int64, shape (n,), or None
        None when y is None.
    predicted : ndarray of int64, shape (n,)

    Raises
    ------
    ValueError
        For a regression model (identity output), and as
        :meth:`mlp.Model.predict`.
    """
    check_classifier(model)
    X = check_matrix(X, "X", n_columns=model.n_inputs, dtype=model.dtype)
    if y is not None:
        y = check_labels(y, "y", n_classes=model.n_outputs, n_rows=X.shape[0])
    return X, y, model.predict(X)


def _check_label_pair(y_true, y_pred, n_classes):
    n_classes = check_int(n_classes, "n_classes", minimum=1)
    y_true = check_labels(y_true, "y_true", n_classes=n_classes)
    y_pred = check_labels(y_pred, "y_pred", n_classes=n_classes)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {y_true.shape[0]} "
                         f"and {y_pred.shape[0]}")
    return y_true, y_pred, n_classes


def confusion_matrix(y_true, y_pred, n_classes):
    """Counts of (true, predicted) label pairs.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n,)
        Labels in [0, n_classes).
    n_classes : int

    Returns
    -------
    ndarray of int64, shape (n_classes, n_classes)
        ``counts[i, j]`` is the number of samples of class i predicted as j:
        rows are true classes, columns predicted ones (scikit-learn's layout).
    """
    y_true, y_pred, n_classes = _check_label_pair(y_true, y_pred, n_classes)
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def class_scores(y_true, y_pred, n_classes):
    """Precision, recall, support and prediction count for every class.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n,)
        Labels in [0, n_classes).
    n_classes : int

    Returns
    -------
    ClassScores
        Undefined ratios (a class never predicted, or absent from y_true)
        are NaN rather than 0, so that a table can show them as undefined.
    """
    counts = confusion_matrix(y_true, y_pred, n_classes)
    hits = np.diag(counts).astype(np.float64)
    support = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, hits / predicted, np.nan)
        recall = np.where(support > 0, hits / support, np.nan)
    return ClassScores(precision, recall, support, predicted)


def never_predicted(model_or_predictions, X=None, *, n_classes=None):
    """The classes that never come out as a prediction.

    Call it either with a model and its inputs, ``never_predicted(model, X)``,
    or with predictions already made, ``never_predicted(y_pred, n_classes=10)``.

    Parameters
    ----------
    model_or_predictions : mlp.Model or array-like of int, shape (n,)
    X : array-like of float, shape (n, n_inputs)
        The inputs, with a model; must be omitted with predictions.
    n_classes : int
        The number of classes, with predictions; a model's is its n_outputs.

    Returns
    -------
    list of int
        The classes in [0, n_classes) that no sample is predicted as, ascending.
    """
    if isinstance(model_or_predictions, Model):
        if X is None:
            raise TypeError("never_predicted(model, X) needs the inputs X to predict on")
        if n_classes is not None:
            raise TypeError("never_predicted(model, X) takes the number of classes from the "
                            "model; leave n_classes out")
        _, _, predicted = predict_checked(model_or_predictions, X)
        n_classes = model_or_predictions.n_outputs
    else:
        if X is not None:
            raise TypeError("never_predicted(y_pred, n_classes=...) takes predictions, not "
                            "inputs; pass a model as the first argument to predict on X")
        if n_classes is None:
            raise TypeError("never_predicted(y_pred, n_classes=...) needs n_classes")
        n_classes = check_int(n_classes, "n_classes", minimum=1)
        arr = _as_numeric_array(model_or_predictions, "y_pred")
        if arr.ndim != 1:
            raise ValueError(f"y_pred must be 1-D (n_samples,) predicted labels, got shape "
                             f"{arr.shape}")
        predicted = check_labels(arr, "y_pred", n_classes=n_classes)
    counts = np.bincount(predicted, minlength=n_classes)
    return [int(c) for c in np.flatnonzero(counts == 0)]


def never_predicted_message(classes, where="the test set", names=None):
    """One sentence naming the classes never predicted on `where`, or None if none.

    Parameters
    ----------
    classes : sequence of int
        From :func:`never_predicted`.
    where : str
        Names the data, e.g. ``"the 10000 test images"``.
    names : sequence of str, optional
        The class names, to say instead of the class numbers.
    """
    classes = [int(c) for c in classes] if names is None else [names[c] for c in classes]
    if not classes:
        return None
    if len(classes) == 1:
        named = f"class {classes[0]} is"
    else:
        named = "classes " + ", ".join(map(str, classes[:-1])) + f" and {classes[-1]} are"
    whose = "its" if len(classes) == 1 else "their"
    return f"{named} never predicted on {where}, so all of {whose} samples are misclassified"
