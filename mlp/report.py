"""A self-contained HTML report on a trained model: ``mlp report``.

The page holds the model's configuration and training history, its test
accuracy with precision and recall per class, and the figures of
:mod:`mlp.plots`, embedded as PNG data URIs so that the one file can be
mailed or archived without losing its images.
"""
from __future__ import annotations

import base64
import html
import io
import math

import numpy as np

from . import plots
from ._files import atomic_write
from ._validation import check_int, check_writable
from .metrics import (
    class_scores,
    confusion_matrix,
    never_predicted,
    never_predicted_message,
    predict_checked,
)

__all__ = ["build_report", "write_report"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f5f5f5; } td.text, th.text { text-align: left; }
.warning { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 1em; }
.note { color: #666; font-style: italic; }
img { max-width: 100%; height: auto; }
"""


def _png_data_uri(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(title, fig, alt):
    return (f"<h2>{html.escape(title)}</h2>\n"
            f'<img src="{_png_data_uri(fig)}" alt="{html.escape(alt)}">')


def _note(text):
    return f'<p class="note">{html.escape(text)}</p>'


def _table(header, rows, text_columns=1):
    """An HTML table; the first text_columns columns are left-aligned text."""
    def cells(values, tag):
        text = ' class="text"'
        return "".join(
            f"<{tag}{text if i < text_columns else ''}>{html.escape(str(v))}</{tag}>"
            for i, v in enumerate(values))

    body = "\n".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    return f"<table>\n<tr>{cells(header, 'th')}</tr>\n{body}\n</table>"


def _percent(value):
    return "undefined" if math.isnan(value) else f"{100 * value:.2f}%"


def _configuration(model, source, data_rows=()):
    rows = [
        ("file", source),
        ("layer sizes", " - ".join(map(str, model.layer_sizes))),
        ("hidden activation",
         model.activation if len(model.layer_sizes) > 2 else "(no hidden layer)"),
        ("output", model.output),
        ("initialisation", getattr(model, "init", None) or "unknown"),
        ("dtype", model.dtype.name),
        ("parameters", f"{model.n_params:,}"),
    ]
    optimizer = getattr(getattr(model, "optimizer_state", None), "optimizer", None)
    if optimizer is not None:
        rows.append(("optimizer", repr(optimizer)))
    rows += list(data_rows)
    return _table(("setting", "value"), rows, text_columns=2)


def _training(history):
    if history is None:
        return _note("no training history saved with this model")
    steps = list(getattr(history, "steps", []))
    loss = list(getattr(history, "loss", []))
    val = [v for v in getattr(history, "val_accuracy", []) if v is not None]
    times = list(getattr(history, "time", []))
    total_time = getattr(history, "total_time", times[-1] if times else 0.0)
    rows = [("epochs", len(loss)), ("optimizer steps", steps[-1] if steps else 0),
            ("training time", f"{total_time:.1f} s")]
    if loss:
        rows.append(("final training loss", f"{loss[-1]:.4g}"))
    if val:
        rows.append(("final validation accuracy", _percent(val[-1])))
        rows.append(("best validation accuracy", _percent(max(val))))
    if getattr(history, "stopped_early", False):
        rows.append(("stopped early", f"yes, parameters of step {history.best_step} restored"))
    return _table(("training", "value"), rows, text_columns=2)


def _learning_curves(history):
    if history is None:
        return ["<h2>Learning curves</h2>", _note("no training history saved with this model")]
    try:
        curves = plots.learning_curves(history)
    except (TypeError, ValueError) as exc:
        # A history that cannot be drawn should not cost the whole report.
        return ["<h2>Learning curves</h2>", _note(f"cannot draw the learning curves: {exc}")]
    return [_figure("Learning curves", curves, "training loss and validation accuracy per epoch")]


def _class_names(model):
    info = getattr(model, "data_info", None)
    names = tuple(info.class_names) if info is not None else ()
    return names + tuple(str(k) for k in range(len(names), model.n_outputs))


def _data_rows(info):
    """The model's data, as rows of the configuration table."""
    if info is None:
        return []
    if info.input_kind == "image":
        height, width, channels = info.image_shape
        inputs = f"{'grey' if channels == 1 else 'colour'} images, {height}x{width}"
    else:
        names = ", ".join(info.feature_names[:12]) + (", ..." if len(info.feature_names) > 12
                                                      else "")
        inputs = f"{len(info.feature_names)} features: {names}"
    classes = ", ".join(info.class_names[:30]) + (", ..." if len(info.class_names) > 30 else "")
    return [("data", info.source or "MNIST"), ("format", info.format), ("inputs", inputs),
            ("classes", classes), ("preprocessing", info.preprocessing)]


def _misclassified_rows(raw, y, predicted, names, info, n):
    """Misclassified samples of tabular data as an HTML table of their features."""
    wrong = np.flatnonzero(predicted != y)[:n]
    title = (f"Misclassified test samples (the first {len(wrong)} of "
             f"{int(np.count_nonzero(predicted != y)):,})" if len(wrong)
             else "Misclassified test samples (none)")
    features = list(info.feature_names)
    header = ["sample", "true", "predicted"] + features
    rows = [[int(i), names[y[i]], names[predicted[i]]] + [f"{v:.6g}" for v in raw[i]]
            for i in wrong]
    return [f"<h2>{html.escape(title)}</h2>", _table(header, rows, text_columns=3)]


def build_report(model, X, y, *, source="model", n_misclassified=36, raw_inputs=None):
    """The report on `model` tested on (X, y), as one HTML document.

    Parameters
    ----------
    model : mlp.Model
        ``model.history`` (an :class:`mlp.History`, when saved with the
        model) supplies the training time and learning curves.
    X : array-like of float, shape (n, n_inputs)
        Test inputs.
    y : array-like of int, shape (n,)
        Test labels in [0, model.n_outputs).
    source : str
        Names the model in the page (e.g. its file name).
    n_misclassified : int
        At most this many misclassified samples are drawn.
    raw_inputs : array-like of float, shape (n, n_inputs), optional
        X as the data holds it, for the table of misclassified rows of a
        model trained on features (default: X).

    Returns
    -------
    str
        A complete HTML5 document. Every text is HTML-escaped; the figures
        are PNG ``data:`` URIs, so the page needs no other file.
    """
    n_misclassified = check_int(n_misclassified, "n_misclassified", minimum=1)
    X, y, predicted = predict_checked(model, X, y)
    n_classes = model.n_outputs
    info = getattr(model, "data_info", None)
    names = _class_names(model)
    counts = confusion_matrix(y, predicted, n_classes)
    scores = class_scores(y, predicted, n_classes)
    correct = int(np.trace(counts))
    history = getattr(model, "history", None)

    parts = [f"<h1>{html.escape(f'mlp report: {source}')}</h1>",
             "<h2>Model</h2>", _configuration(model, source, _data_rows(info)),
             "<h2>Training</h2>", _training(history)]
    # The sections follow the README's description: configuration, training and its
    # curves, then what the test set says.
    parts += _learning_curves(history)
    parts += ["<h2>Test results</h2>",
              f"<p>Test accuracy: <strong>{html.escape(_percent(correct / len(y)))}</strong> "
              f"({correct:,} of {len(y):,} correct)</p>"]
    message = never_predicted_message(never_predicted(predicted, n_classes=n_classes),
                                      f"these {len(y):,} test samples",
                                      names=None if info is None or info.digits else names)
    if message:
        parts.append(f'<p class="warning">Warning: {html.escape(message)}.</p>')
    parts.append(_table(
        ("class", "samples", "predicted", "precision", "recall"),
        [(names[c], f"{scores.support[c]:,}", f"{scores.predicted[c]:,}",
          _percent(scores.precision[c]), _percent(scores.recall[c])) for c in range(n_classes)]))
    parts.append(_note("Precision: of the samples predicted as the class, the share that "
                       "belongs to it (undefined when the class is never predicted). Recall: "
                       "of the samples of the class, the share predicted as it."))
    parts.append(_figure("Confusion matrix", plots._confusion_figure(counts),
                         "confusion matrix: true class by row, predicted class by column"))

    side, not_square, weights_drawn = None, None, True
    if info is not None and info.input_kind == "features":
        raw = X if raw_inputs is None else np.asarray(raw_inputs, dtype=np.float64)
        parts += _misclassified_rows(raw, y, predicted, names, info, n_misclassified)
        not_square = "the model takes features, not an image"
    else:
        if info is not None:
            side = info.image_shape
            weights_drawn = info.image_shape[2] == 1
            not_square = "the model takes colour images; its weights are not drawn"
        else:
            try:
                side = plots.image_side(model.n_inputs)
            except ValueError as exc:
                not_square = str(exc)
        if side is not None:
            wrong = np.flatnonzero(predicted != y)[:n_misclassified]
            title = (f"Misclassified test samples (the first {len(wrong)} of "
                     f"{len(y) - correct:,})" if len(wrong)
                     else "Misclassified test samples (none)")
            parts.append(_figure(title, plots._misclassified_figure(
                X[wrong], y[wrong], predicted[wrong], side,
                names=None if info is None or info.digits else names),
                "misclassified test samples, each titled with its true and predicted class"))
        else:
            parts += ["<h2>Misclassified test samples</h2>", _note(not_square)]

    if side is not None and weights_drawn:
        parts.append(_figure("First-layer weights", plots.first_layer_weights(model),
                             "incoming weights of the first layer's units drawn as images"))
    else:
        parts += ["<h2>First-layer weights</h2>", _note(not_square)]

    from ._version import __version__

    parts.append(_note(f"Made by mlp {__version__}."))
    title = html.escape(f"mlp report: {source}")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n"
            f"</body>\n</html>\n")


def write_report(model, X, y, path, *, source=None, raw_inputs=None):
    """Write :func:`build_report` to `path` as UTF-8.

    The page is built completely before the file is opened, so an error in
    the model or the data leaves no file behind.

    Parameters
    ----------
    model : mlp.Model
    X : array-like of float, shape (n, n_inputs)
        Test inputs.
    y : array-like of int, shape (n,)
        Test labels in [0, n_outputs).
    path : str or os.PathLike
        The file to write; an existing file is replaced atomically, so that a
        failure (a full disk) leaves it as it was.
    source : str, optional
        Names the model in the page (default ``"model"``).
    raw_inputs : array-like, optional
        As for :func:`build_report`.

    Returns
    -------
    str
        `path`, as a str.

    Raises
    ------
    TypeError
        If `path` is not a str or os.PathLike, `model` not an mlp.Model, or
        X or y not numeric.
    ValueError
        If X or y do not fit the model (shape, NaN, labels out of range), or
        `path` is empty, a directory, or in a directory that is missing or
        cannot be written.
    OSError
        If the write fails all the same (e.g. a full disk).
    ImportError
        If matplotlib is not installed.
    """
    # Checked before the figures are drawn, which takes seconds.
    path = check_writable(path, "path", example="report.html")
    page = build_report(model, X, y, source=source or "model",
                        raw_inputs=raw_inputs).encode("utf-8")
    try:
        atomic_write(path, lambda fh: fh.write(page))
    except OSError as exc:
        raise OSError(f"cannot write the report to {path!r}: {exc.strerror or exc}") from None
    return path
