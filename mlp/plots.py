"""Figures of a model and its training: learning curves, the confusion
matrix, misclassified images and the first layer's weights.

Needs matplotlib (``pip install matplotlib``), imported on first use. Every
function returns a :class:`matplotlib.figure.Figure` built without pyplot, so
nothing needs a display and nothing is shown or kept in pyplot's global
state: save it with ``fig.savefig("name.png")``, or let Jupyter display it.

    >>> from mlp import plots
    >>> plots.confusion_matrix(model, test.images, test.labels).savefig("confusion.png")
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ._validation import check_int
from .metrics import confusion_matrix as _confusion_counts
from .metrics import check_model, predict_checked

__all__ = ["learning_curves", "confusion_matrix", "misclassified", "first_layer_weights"]

# Dots per inch of every figure: the PNG of a figure is its size in inches
# times this many pixels.
DPI = 100


def _new_figure(width, height):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("mlp.plots needs matplotlib: pip install matplotlib") from None
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def image_side(n_inputs):
    """The side of the square image whose pixels are the n_inputs inputs.

    Raises ValueError when n_inputs is not a perfect square.
    """
    side = math.isqrt(n_inputs)
    if side * side != n_inputs:
        raise ValueError(f"the model's {n_inputs} inputs are not a square image (28x28 = 784 "
                         f"for MNIST), so they cannot be drawn as one")
    return side


# -- learning curves ----------------------------------------------------------

def _history_series(history):
    """steps, loss and val_accuracy of history as float arrays, checked."""
    missing = [name for name in ("steps", "loss", "val_accuracy") if not hasattr(history, name)]
    if missing:
        raise TypeError(f"history must be an mlp.History (with steps, loss and val_accuracy), "
                        f"got {type(history).__name__} without {', '.join(missing)}")

    def series(name):
        # None marks an epoch without a value (e.g. no validation data then).
        values = [np.nan if v is None else v for v in getattr(history, name)]
        if not all(isinstance(v, numbers.Real) for v in values):
            raise TypeError(f"history.{name} must hold numbers")
        return np.asarray(values, dtype=np.float64)

    steps, loss, val = series("steps"), series("loss"), series("val_accuracy")
    if loss.size == 0:
        raise ValueError("history has no epochs recorded: train the model first")
    if steps.size != loss.size:
        raise ValueError(f"history.steps has {steps.size} entries but history.loss has "
                         f"{loss.size}; they must hold one entry per epoch each")
    if val.size not in (0, loss.size):
        raise ValueError(f"history.val_accuracy has {val.size} entries but history.loss has "
                         f"{loss.size}; it must be empty or hold one entry per epoch")
    return steps, loss, val


def learning_curves(history, *, x="epoch"):
    """Training loss and validation accuracy after every epoch.

    Parameters
    ----------
    history : mlp.History
        From :func:`mlp.train`, or ``model.history``. ``val_accuracy`` may be
        empty (trained without validation data): then only the loss is drawn.
    x : {"epoch", "steps"}
        The horizontal axis: epochs counted from 1, or SGD steps done.

    Returns
    -------
    matplotlib.figure.Figure
        10 x 4 inches: the loss on the left, the validation accuracy (in %)
        on the right. A log scale is used for a loss that falls by more than
        a factor of 10. When ``history.best_step`` is set (early stopping), a
        dashed line marks it.
    """
    if x not in ("epoch", "steps"):
        raise ValueError(f"x must be 'epoch' or 'steps', got {x!r}")
    steps, loss, val = _history_series(history)
    positions = np.arange(1, loss.size + 1) if x == "epoch" else steps
    has_val = val.size > 0 and np.isfinite(val).any()
    fig = _new_figure(10, 4)
    axes = fig.subplots(1, 2 if has_val else 1, squeeze=False)[0]
    marker = "o" if loss.size <= 30 else None
    label = "epoch" if x == "epoch" else "SGD steps"

    ax = axes[0]
    ax.plot(positions, loss, marker=marker, color="tab:blue")
    finite = loss[np.isfinite(loss)]
    if finite.size and finite.min() > 0 and finite.max() > 10 * finite.min():
        ax.set_yscale("log")
    ax.set(title="training loss", xlabel=label, ylabel="mean loss per sample")
    if has_val:
        ax = axes[1]
        ax.plot(positions, 100 * val, marker=marker, color="tab:green")
        best = int(np.nanargmax(val))
        ax.annotate(f"best {100 * val[best]:.2f}%", (positions[best], 100 * val[best]),
                    textcoords="offset points", xytext=(0, -14), ha="center", fontsize=9)
        ax.set(title="validation accuracy", xlabel=label, ylabel="accuracy (%)")
    best_step = getattr(history, "best_step", None)
    if best_step is not None and best_step in steps:
        where = positions[int(np.flatnonzero(steps == best_step)[0])]
        for ax in axes:
            ax.axvline(where, color="grey", linestyle="--", linewidth=1)
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if x == "epoch" and loss.size <= 20:
            ax.set_xticks(positions)
    return fig


# -- confusion matrix ---------------------------------------------------------

def confusion_matrix(model, X, y):
    """The counts of (true, predicted) classes of model on (X, y), as a grid.

    Parameters
    ----------
    model : mlp.Model
    X : array-like of float, shape (n, n_inputs)
    y : array-like of int, shape (n,)
        Labels in [0, model.n_outputs).

    Returns
    -------
    matplotlib.figure.Figure
        Rows are true classes, columns predicted ones; each cell shows its
        count (for up to 30 classes). The title gives the accuracy.
    """
    _, y, predicted = predict_checked(model, X, y)
    return _confusion_figure(_confusion_counts(y, predicted, model.n_outputs))


def _confusion_figure(counts):
    n_classes = counts.shape[0]
    size = min(4 + 0.45 * n_classes, 14)
    fig = _new_figure(size + 1, size)
    ax = fig.add_subplot()
    # Log-like shading: the diagonal holds almost everything, and a plain
    # linear scale would leave every mistake the same pale colour.
    shade = np.log1p(counts)
    image = ax.imshow(shade, cmap="Blues", vmin=0, vmax=max(shade.max(), 1e-9))
    if n_classes <= 30:
        threshold = shade.max() / 2
        for (i, j), count in np.ndenumerate(counts):
            ax.text(j, i, str(count), ha="center", va="center",
                    fontsize=9 if n_classes <= 12 else 6,
                    color="white" if shade[i, j] > threshold else "black")
    ticks = np.arange(n_classes)
    if n_classes <= 30:
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
    total = counts.sum()
    accuracy = np.trace(counts) / total if total else float("nan")
    ax.set(xlabel="predicted class", ylabel="true class",
           title=f"confusion matrix: {100 * accuracy:.2f}% of {total:,} correct")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    colorbar.set_label("samples (log scale)")
    levels = [c for c in (1, 10, 100, 1000, 10000, 100000) if c <= max(counts.max(), 1)]
    colorbar.set_ticks(np.log1p(levels), labels=[str(c) for c in levels])
    return fig


# -- misclassified samples ----------------------------------------------------

def misclassified(model, X, y, n=36):
    """A grid of the first n samples (in data order) that model gets wrong.

    Parameters
    ----------
    model : mlp.Model
        Its inputs must form a square image (784 = 28 x 28 for MNIST).
    X : array-like of float, shape (n_samples, n_inputs)
        Pixel values; drawn dark on light, between the smallest and largest
        pixel shown.
    y : array-like of int, shape (n_samples,)
    n : int >= 1
        At most this many samples are drawn.

    Returns
    -------
    matplotlib.figure.Figure
        Each image titled with its true and predicted class; 1.3 x 1.5 inches
        per image in a near-square grid. With no mistakes the figure says so.
    """
    n = check_int(n, "n", minimum=1)
    check_model(model)
    side = image_side(model.n_inputs)
    X, y, predicted = predict_checked(model, X, y)
    wrong = np.flatnonzero(predicted != y)[:n]
    return _misclassified_figure(X[wrong], y[wrong], predicted[wrong], side)


def _misclassified_figure(images, true, predicted, side, names=None):
    """side: a square grey image's side, or its (height, width, channels);
    names: the class names, for the labels (default: the class numbers).
    Digits (no names) are drawn as ink, dark on light; other images as they
    are, 1 white (a light background stays light)."""
    height, width, channels = (side, side, 1) if isinstance(side, int) else side
    side = max(height, width)
    count = len(images)
    if count == 0:
        fig = _new_figure(4, 1.5)
        fig.text(0.5, 0.5, "no misclassified samples", ha="center", va="center", fontsize=12)
        return fig
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    # One image with a strip above each tile for its label: drawing one axes
    # per sample would take a second for a 6x6 grid.
    gap, label = max(1, side // 14), max(4, round(0.45 * side))
    shape = (count, height, width) + ((3,) if channels == 3 else ())
    mosaic = _tiles(images.reshape(shape), columns, gap, label)
    fig = _new_figure(1.3 * columns * max(1, width / height), 1.5 * rows)
    ax = fig.add_subplot()
    low, high = float(images.min()), float(images.max())
    import matplotlib

    if channels == 3:
        # Colour as it is, on white.
        ax.imshow(np.nan_to_num(np.clip(mosaic, 0, 1), nan=1.0), interpolation="nearest")
    elif names is None:
        cmap = matplotlib.colormaps["gray_r"].with_extremes(bad="white")
        ax.imshow(mosaic, cmap=cmap, vmin=low, vmax=max(high, low + 1e-9),
                  interpolation="nearest")
    else:
        cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
        ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    for index, (t, p) in enumerate(zip(true, predicted)):
        r, c = divmod(index, columns)
        # Names run longer than digits: one line each, to stay over their tile.
        text = f"true {t}, pred {p}" if names is None else f"true {names[t]}\npred {names[p]}"
        ax.text(c * (width + gap) + (width - 1) / 2, r * (height + label) + label - 1.5,
                text, ha="center", va="bottom", fontsize=8, color="firebrick")
    ax.set_axis_off()
    return fig


def _tiles(images, columns, gap, top=0):
    """(count, height, width) images (or (count, height, width, 3) colour
    ones) laid out row by row in one float array.

    Tiles are `gap` pixels apart side by side and `top` pixels apart (above
    each row, the first too); the space between them is NaN, drawn as the
    colour map's "bad" colour.
    """
    count, height, width = images.shape[:3]
    rows = math.ceil(count / columns)
    mosaic = np.full((rows * (height + top), columns * (width + gap) - gap) + images.shape[3:],
                     np.nan)
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        first_row, first_column = r * (height + top) + top, c * (width + gap)
        mosaic[first_row:first_row + height, first_column:first_column + width] = image
    return mosaic


# -- first-layer weights ------------------------------------------------------

def first_layer_weights(model, n=64):
    """The incoming weights of the first layer's units, each drawn as an image.

    Parameters
    ----------
    model : mlp.Model
        Its inputs must form a square image (784 = 28 x 28 for MNIST).
    n : int >= 1
        Draw the first n units (or every unit, if there are fewer).

    Returns
    -------
    matplotlib.figure.Figure
        One mosaic, 1 inch per unit in a near-square grid. Each unit has its
        own colour scale, symmetric about 0: red is a positive weight (that
        pixel's ink excites the unit), blue a negative one.
    """
    n = check_int(n, "n", minimum=1)
    check_model(model)
    info = getattr(model, "data_info", None)
    if info is not None and info.input_kind == "image" and info.image_shape[2] == 1:
        height, width = info.image_shape[:2]
    else:
        height = width = image_side(model.n_inputs)
    weights = np.asarray(model.weights[0][:n], dtype=np.float64)
    count = weights.shape[0]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    scale = np.abs(weights).max(axis=1, keepdims=True)
    scaled = weights / np.where(scale > 0, scale, 1)
    # One image with NaN gutters draws much faster than one axes per unit.
    # The gutter above the first row is dropped.
    mosaic = _tiles(scaled.reshape(count, height, width), columns, gap=1, top=1)[1:]
    fig = _new_figure(max(1.0 * columns, 3), 1.0 * rows + 0.5)
    ax = fig.add_subplot()
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    layer = "hidden" if len(model.layer_sizes) > 2 else "output"
    ax.set_title(f"first-layer weights: {count} of {model.layer_sizes[1]} {layer} units",
                 fontsize=10)
    ax.set_axis_off()
    return fig
