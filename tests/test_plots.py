"""Figures: each renders to a PNG of the size it promises, and is not blank."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import require

from mlp import History, Model
from mlp.metrics import confusion_matrix as confusion_counts

require("matplotlib")
Image = require("PIL.Image")

from mlp import plots  # noqa: E402  (after the skip: plots needs matplotlib)


def render(fig):
    """The figure as an RGB array, decoded from the PNG that savefig writes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float64)


def assert_renders(fig, width_inches, height_inches):
    pixels = render(fig)
    assert pixels.shape[:2] == (round(height_inches * plots.DPI), round(width_inches * plots.DPI))
    # A blank canvas has one colour; a drawn one has lines, text and images.
    assert pixels.std() > 10
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def image_model(side=6, n_hidden=5, n_classes=4, seed=0):
    return Model([side * side, n_hidden, n_classes], activation="tanh", output="softmax",
                 init="xavier", seed=seed)


def data(n_inputs, n_classes=4, n=60, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, n_inputs)), rng.integers(0, n_classes, n)


def history(n_epochs=5, validation=True):
    steps = [100 * (i + 1) for i in range(n_epochs)]
    loss = [1.0 / (i + 1) ** 2 for i in range(n_epochs)]
    val = [0.5 + 0.05 * i for i in range(n_epochs)] if validation else []
    return History(steps=steps, loss=loss, val_accuracy=val,
                   time=[0.5 * (i + 1) for i in range(n_epochs)])


# -- learning curves ----------------------------------------------------------

def test_learning_curves_draw_loss_and_validation_accuracy():
    fig = plots.learning_curves(history())
    assert [ax.get_title() for ax in fig.axes] == ["training loss", "validation accuracy"]
    loss_line, val_line = fig.axes[0].lines[0], fig.axes[1].lines[0]
    np.testing.assert_array_equal(loss_line.get_xdata(), [1, 2, 3, 4, 5])
    np.testing.assert_allclose(val_line.get_ydata(), [50, 55, 60, 65, 70])
    # The loss falls 25-fold: a log scale keeps the late epochs readable.
    assert fig.axes[0].get_yscale() == "log"
    assert_renders(fig, 10, 4)


def test_learning_curves_without_validation_draw_the_loss_alone():
    fig = plots.learning_curves(history(validation=False))
    assert [ax.get_title() for ax in fig.axes] == ["training loss"]
    assert_renders(fig, 10, 4)


def test_learning_curves_against_steps_mark_the_best_step():
    h = history()
    h.best_step = 300
    fig = plots.learning_curves(h, x="steps")
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_xdata(), h.steps)
    assert fig.axes[0].get_xlabel() == "SGD steps"
    marks = [line for line in fig.axes[0].lines[1:] if list(line.get_xdata()) == [300, 300]]
    assert marks, "no line at the best step"
    assert_renders(fig, 10, 4)


@pytest.mark.parametrize("bad, error, words", [
    ([1.0, 0.5], TypeError, "mlp.History"),
    (History(), ValueError, "no epochs recorded"),
    (History(steps=[1, 2], loss=[1.0]), ValueError, "one entry per epoch"),
    (History(steps=[1, 2], loss=[1.0, 0.5], val_accuracy=[0.5]), ValueError, "val_accuracy"),
    (History(steps=[1], loss=["high"]), TypeError, "numbers"),
])
def test_learning_curves_reject_bad_histories(bad, error, words):
    with pytest.raises(error) as info:
        plots.learning_curves(bad)
    assert words in str(info.value)
    with pytest.raises(ValueError, match="'epoch' or 'steps'"):
        plots.learning_curves(history(), x="time")


# -- confusion matrix ---------------------------------------------------------

def test_confusion_matrix_writes_each_count_in_its_cell():
    model = image_model()
    X, y = data(36)
    fig = plots.confusion_matrix(model, X, y)
    ax = fig.axes[0]
    expected = confusion_counts(y, model.predict(X), 4)
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text())
             for t in ax.texts}
    assert cells == {(i, j): int(expected[i, j]) for i in range(4) for j in range(4)}
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    width, height = fig.get_size_inches()
    assert_renders(fig, width, height)


def test_confusion_matrix_checks_its_arguments():
    model = image_model()
    with pytest.raises(TypeError, match="mlp.Model"):
        plots.confusion_matrix("model", *data(36))
    with pytest.raises(ValueError, match="36 columns"):
        plots.confusion_matrix(model, *data(35))
    X, y = data(36)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        plots.confusion_matrix(model, X, y + 4)
    with pytest.raises(ValueError, match="labels"):
        plots.confusion_matrix(model, X, y[:-1])


# -- misclassified ------------------------------------------------------------

def test_misclassified_shows_the_first_mistakes_titled_true_and_predicted():
    model = image_model()
    X, y = data(36, n=80)
    predicted = model.predict(X)
    wrong = np.flatnonzero(predicted != y)
    assert len(wrong) > 10
    fig = plots.misclassified(model, X, y, n=10)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == [
        f"true {y[i]}, pred {predicted[i]}" for i in wrong[:10]]
    # 6x6 images, 4 per row, with 1-pixel gaps and a 4-pixel label strip above each row.
    mosaic = np.ma.filled(ax.images[0].get_array(), np.nan)
    assert mosaic.shape == (3 * (6 + 4), 4 * 7 - 1)
    np.testing.assert_allclose(mosaic[4:10, 0:6], X[wrong[0]].reshape(6, 6))
    np.testing.assert_allclose(mosaic[4:10, 7:13], X[wrong[1]].reshape(6, 6))
    np.testing.assert_allclose(mosaic[14:20, 0:6], X[wrong[4]].reshape(6, 6))
    assert np.isnan(mosaic[:4]).all() and np.isnan(mosaic[-10:, -6:]).all()
    # 10 images: a 4-column grid of 3 rows, 1.3 x 1.5 inches each.
    assert_renders(fig, 4 * 1.3, 3 * 1.5)


def test_misclassified_says_so_when_nothing_is_wrong():
    model = image_model()
    X, _ = data(36)
    fig = plots.misclassified(model, X, model.predict(X))
    assert "no misclassified samples" in fig.texts[0].get_text()
    assert_renders(fig, 4, 1.5)


def test_misclassified_checks_its_arguments():
    model = image_model()
    X, y = data(36)
    with pytest.raises(ValueError, match="n must be >= 1"):
        plots.misclassified(model, X, y, n=0)
    with pytest.raises(TypeError, match="n must be an integer"):
        plots.misclassified(model, X, y, n=2.5)
    with pytest.raises(ValueError, match="not a square image"):
        plots.misclassified(Model([10, 4]), *data(10))
    with pytest.raises(TypeError, match="mlp.Model"):
        plots.misclassified(None, X, y)


# -- first-layer weights ------------------------------------------------------

def test_first_layer_weights_tile_each_unit_as_an_image():
    model = image_model(side=5, n_hidden=7)
    fig = plots.first_layer_weights(model)
    mosaic = np.ma.filled(fig.axes[0].images[0].get_array(), np.nan)
    # 7 units: 3 columns x 3 rows of 5x5 tiles with 1-pixel gutters.
    assert mosaic.shape == (3 * 6 - 1, 3 * 6 - 1)
    first = model.weights[0][0]
    np.testing.assert_allclose(mosaic[:5, :5], (first / np.abs(first).max()).reshape(5, 5))
    second = model.weights[0][1]
    np.testing.assert_allclose(mosaic[:5, 6:11], (second / np.abs(second).max()).reshape(5, 5))
    assert np.isnan(mosaic[5, :]).all() and np.isnan(mosaic[-5:, -5:]).all()
    assert "7 of 7 hidden units" in fig.axes[0].get_title()
    assert_renders(fig, 3, 3.5)


def test_first_layer_weights_draw_at_most_n_units():
    model = image_model(side=4, n_hidden=30)
    fig = plots.first_layer_weights(model, n=9)
    assert fig.axes[0].images[0].get_array().shape == (3 * 5 - 1, 3 * 5 - 1)
    assert "9 of 30" in fig.axes[0].get_title()


def test_first_layer_weights_check_their_arguments():
    with pytest.raises(ValueError, match="785 inputs are not a square image"):
        plots.first_layer_weights(Model([785, 3]))
    with pytest.raises(ValueError, match="n must be >= 1"):
        plots.first_layer_weights(image_model(), n=0)
    with pytest.raises(TypeError, match="mlp.Model"):
        plots.first_layer_weights(np.zeros((3, 4)))


def test_mnist_sized_figures_render():
    model = Model([784, 100, 10], activation="relu", output="softmax", init="he", seed=0)
    fig = plots.first_layer_weights(model)
    assert "64 of 100" in fig.axes[0].get_title()
    assert_renders(fig, 8, 8.5)


def test_optional_packages_are_imported_only_when_used(tmp_path):
    # A fresh interpreter: this one has imported matplotlib for the tests.
    code = ("import sys, mlp, mlp.metrics, mlp.plots, mlp.report, mlp.datasets\n"
            "print(sorted(m for m in ('matplotlib', 'PIL') if m in sys.modules))\n"
            "mlp.plots.learning_curves(mlp.History(steps=[1], loss=[1.0]))\n"
            "print('matplotlib.pyplot' in sys.modules)\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(plots.__file__)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "False"]
