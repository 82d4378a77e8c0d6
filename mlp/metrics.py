"""Classification metrics: the confusion matrix, per-class precision and
recall, and the classes a model never predicts.

Everything here works on integer labels; the functions that take a model
run it once over the data and reuse the predictions.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._validation import _as_numeric_array, check_int, check_labels, check_matrix
from .model import Model

__all__ = [
    "ClassScores",
    "check_model",
    "class_scores",
    "confusion_matrix",
    "never_predicted",
    "never_predicted_message",
    "predict_checked",
]


class ClassScores(NamedTuple):
    """Per-class results of :func:`class_scores`, each an array of shape (n_classes,).

    precision : float64; of the samples predicted as the class, the fraction
        that belong to it. NaN for a class that is never predicted.
    recall : float64; of the samples of the class, the fraction predicted as
        it. NaN for a class with no samples.
    support : int64; samples whose true label is the class.
    predicted : int64; samples predicted as the class.
    """

    precision: np.ndarray
    recall: np.ndarray
    support: np.ndarray
    predicted: np.ndarray


def check_model(model, name="model"):
    """Return model if it is an :class:`mlp.Model`, else raise TypeError."""
    if not isinstance(model, Model):
        raise TypeError(f"{name} must be an mlp.Model, got {type(model).__name__}")
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
    """
    check_model(model)
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


def never_predicted_message(classes, where="the test set"):
    """One sentence naming the classes never predicted on `where`, or None if none.

    Parameters
    ----------
    classes : sequence of int
        From :func:`never_predicted`.
    where : str
        Names the data, e.g. ``"the 10000 test images"``.
    """
    classes = [int(c) for c in classes]
    if not classes:
        return None
    if len(classes) == 1:
        named = f"class {classes[0]} is"
    else:
        named = "classes " + ", ".join(map(str, classes[:-1])) + f" and {classes[-1]} are"
    whose = "its" if len(classes) == 1 else "their"
    return f"{named} never predicted on {where}, so all of {whose} samples are misclassified"
