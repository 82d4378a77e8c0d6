"""Confusion matrix, per-class precision and recall, and never-predicted classes."""
import numpy as np
import pytest

from conftest import require
from hypothesis import given
from hypothesis import strategies as st

from mlp import Model
from mlp.metrics import (
    class_scores,
    confusion_matrix,
    never_predicted,
    never_predicted_message,
    predict_checked,
)


def constant_model(winner, n_inputs=4, n_classes=3):
    """A softmax model that predicts `winner` for every input."""
    model = Model([n_inputs, n_classes], activation="relu", output="softmax", init="xavier")
    model.weights[0][...] = 0
    model.biases[0][...] = 0
    model.biases[0][winner] = 5
    return model


def test_confusion_matrix_counts_pairs_true_by_row():
    counts = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], n_classes=4)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = expected[0, 1] = expected[1, 1] = expected[2, 0] = 1
    expected[2, 2] = 2
    np.testing.assert_array_equal(counts, expected)
    assert counts.dtype == np.int64


@given(st.integers(1, 6).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1,
                         max_size=40))))
def test_confusion_matrix_and_scores_match_a_loop(case):
    k, pairs = case
    y_true, y_pred = (np.array(column) for column in zip(*pairs))
    loop = np.zeros((k, k), dtype=np.int64)
    for t, p in pairs:
        loop[t, p] += 1
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, k), loop)
    scores = class_scores(y_true, y_pred, k)
    for c in range(k):
        hits = np.sum((y_true == c) & (y_pred == c))
        predicted, support = np.sum(y_pred == c), np.sum(y_true == c)
        assert scores.predicted[c] == predicted and scores.support[c] == support
        if predicted:
            assert scores.precision[c] == pytest.approx(hits / predicted)
        else:
            assert np.isnan(scores.precision[c])
        if support:
            assert scores.recall[c] == pytest.approx(hits / support)
        else:
            assert np.isnan(scores.recall[c])


def test_scores_agree_with_scikit_learn():
    metrics = require("sklearn.metrics")
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, 5),
                                  metrics.confusion_matrix(y_true, y_pred, labels=range(5)))
    scores = class_scores(y_true, y_pred, 5)
    np.testing.assert_allclose(scores.precision, metrics.precision_score(y_true, y_pred,
                                                                         average=None))
    np.testing.assert_allclose(scores.recall, metrics.recall_score(y_true, y_pred, average=None))


def test_never_predicted_from_predictions_and_from_a_model():
    assert never_predicted([0, 2, 2, 4], n_classes=6) == [1, 3, 5]
    assert never_predicted(np.arange(3), n_classes=3) == []
    model = constant_model(winner=1)
    X = np.random.default_rng(0).random((20, 4))
    assert never_predicted(model, X) == [0, 2]


@pytest.mark.parametrize("call, error, words", [
    (lambda m: never_predicted(m), TypeError, "needs the inputs X"),
    (lambda m: never_predicted(m, np.zeros((2, 4)), n_classes=3), TypeError, "leave n_classes out"),
    (lambda m: never_predicted([0, 1]), TypeError, "needs n_classes"),
    (lambda m: never_predicted([0, 1], np.zeros((2, 4)), n_classes=2), TypeError, "not inputs"),
    (lambda m: never_predicted([0, 3], n_classes=3), ValueError, "[0, 3)"),
    (lambda m: never_predicted([[0, 1]], n_classes=3), ValueError, "1-D"),
    (lambda m: never_predicted(m, np.zeros((2, 5))), ValueError, "4 columns"),
    (lambda m: predict_checked("model", np.zeros((2, 4))), TypeError, "mlp.Model"),
    (lambda m: confusion_matrix([0, 1], [0], 2), ValueError, "same length, got 2 and 1"),
])
def test_bad_arguments_name_the_problem(call, error, words):
    with pytest.raises(error) as info:
        call(constant_model(0))
    assert words in str(info.value)


def test_never_predicted_message():
    assert never_predicted_message([]) is None
    one = never_predicted_message([7], "the 10000 test images")
    assert one.startswith("class 7 is never predicted on the 10000 test images")
    many = never_predicted_message([1, 4, 9])
    assert many.startswith("classes 1, 4 and 9 are never predicted on the test set")
