"""Command line: ``mlp train``, ``evaluate``, ``report`` and ``predict`` (or ``python -m mlp``)."""
from __future__ import annotations

import argparse
import os
import sys
import time

from .presets import PRESETS

EXIT_USAGE = 2


def _layers(text):
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--layers takes comma-separated integers such as 784,300,100,10, got {text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--layers needs at least two positive sizes, got {text!r}")
    return sizes


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    return parse


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mlp", description="Train and evaluate multilayer perceptrons on MNIST.")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train on MNIST and report test accuracy",
                        description="Train on the MNIST training split (50,000 images) and "
                                    "report accuracy on the 10,000 test images.")
    tr.add_argument("--preset", choices=sorted(PRESETS), default="default",
                    help="starting configuration (default: %(default)s); other flags override it. "
                         + "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()))
    tr.add_argument("--layers", type=_layers, help="layer sizes, e.g. 784,300,100,10")
    steps = tr.add_mutually_exclusive_group()
    steps.add_argument("--epochs", type=_positive(int))
    steps.add_argument("--iterations", type=_positive(int), help="SGD steps")
    tr.add_argument("--batch-size", type=_positive(int))
    tr.add_argument("--lr", type=_positive(float), dest="learning_rate", help="learning rate")
    tr.add_argument("--lr-schedule", choices=["constant", "linear", "cosine"],
                    help="learning-rate decay over the run")
    tr.add_argument("--weight-decay", type=float, help="L2 penalty on the weights (default 0)")
    tr.add_argument("--loss", choices=["mse", "cross_entropy"])
    tr.add_argument("--activation", choices=["sigmoid", "tanh", "relu"], help="hidden activation")
    tr.add_argument("--output", choices=["sigmoid", "softmax"], help="output activation")
    tr.add_argument("--init", choices=["normal", "xavier", "he"])
    tr.add_argument("--sampling", choices=["replacement", "shuffle"])
    tr.add_argument("--dtype", choices=["float32", "float64"])
    tr.add_argument("--seed", type=int, help="seed for initialisation and batches")
    tr.add_argument("--threads", type=_positive(int),
                    help="training worker threads (default: all cores, 1 for tiny networks)")
    tr.add_argument("--data", metavar="PATH",
                    help="mnist.pkl.gz or a directory of the four IDX files "
                         "(default: cached copy, fetched on first use)")
    tr.add_argument("--save", metavar="MODEL.npz", help="write the trained model here")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", help="report a saved model's test accuracy")
    ev.add_argument("model", metavar="MODEL.npz")
    ev.add_argument("--data", metavar="PATH", help="as for train")
    ev.add_argument("--threads", type=_positive(int), help="BLAS threads")

    rep = sub.add_parser("report", help="write an HTML report on a saved model",
                         description="Write one self-contained HTML file on a saved model: its "
                                     "configuration and training, test accuracy, precision and "
                                     "recall per class, the confusion matrix, misclassified "
                                     "digits, learning curves and first-layer weights. Needs "
                                     "matplotlib.")
    rep.add_argument("model", metavar="MODEL.npz")
    rep.add_argument("--data", metavar="PATH", help="as for train; the report uses its test split")
    rep.add_argument("--out", metavar="REPORT.html", default="report.html",
                     help="where to write the report (default: %(default)s)")

    pr = sub.add_parser("predict", help="classify your own images of digits",
                        description="Classify images of single handwritten digits (PNG, JPEG, "
                                    "GIF, BMP, TIFF, WebP; any size, colour or grey, dark on "
                                    "light or light on dark). Each is prepared as MNIST's digits "
                                    "were: grey, cropped, scaled to fit 20x20, centred by mass "
                                    "in 28x28. Needs Pillow.")
    pr.add_argument("model", metavar="MODEL.npz")
    pr.add_argument("images", metavar="IMAGE", nargs="+")
    pr.add_argument("--json", action="store_true",
                    help='print a JSON list of {"file", "prediction", "top3"} objects')
    return parser


def _load_data(path):
    from .datasets import load_mnist

    start = time.perf_counter()
    data = load_mnist(path)
    return data, time.perf_counter() - start


def _report(model, test, threads):
    from .training import evaluate

    result = evaluate(model, test.images, test.labels, n_threads=threads)
    print(f"The model classified correctly {result.correct} out of {len(test.labels)} test examples")
    return result


def _train(args):
    from ._threads import train_workers
    from .training import train

    preset = PRESETS[args.preset].with_overrides(
        layers=args.layers, epochs=args.epochs, iterations=args.iterations,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        lr_schedule=args.lr_schedule, weight_decay=args.weight_decay, loss=args.loss,
        activation=args.activation, output=args.output, init=args.init, sampling=args.sampling,
        dtype=args.dtype, seed=args.seed)
    data, load_time = _load_data(args.data)
    if preset.layers[0] != data.train.images.shape[1]:
        raise ValueError(f"--layers must start with {data.train.images.shape[1]} inputs for this "
                         f"data, got {preset.layers[0]}")
    n_classes = int(data.train.labels.max()) + 1
    if preset.layers[-1] != n_classes:
        raise ValueError(f"--layers must end with {n_classes} outputs, one per class, got "
                         f"{preset.layers[-1]}")
    model = preset.build_model()
    threads = train_workers(args.threads, preset.batch_size, preset.layers)
    length = (f"{preset.epochs} epochs" if preset.epochs is not None
              else f"{preset.iterations} iterations")
    print(f"Training {model!r}\n  preset {preset.name}: {length}, batch {preset.batch_size}, "
          f"lr {preset.learning_rate} ({preset.lr_schedule}), loss {preset.loss}, sampling {preset.sampling}, "
          f"{threads} worker thread(s); data loaded in {load_time:.2f} s", flush=True)
    history = train(model, data.train.images, data.train.labels,
                    validation=(data.validation.images, data.validation.labels),
                    progress=not args.no_progress, n_threads=threads, **preset.train_kwargs())
    result = _report(model, data.test, args.threads)
    print(f"Test accuracy: {100 * result.accuracy:.2f}%  (validation {100 * history.val_accuracy[-1]:.2f}%)"
          f"\nTraining time: {history.total_time:.1f} s for {history.steps[-1]} steps "
          f"({history.steps[-1] / max(history.total_time, 1e-9):.0f} steps/s)")
    if args.save:
        model.save(args.save)
        print(f"Saved the model to {args.save}")
    return 0


def _warn_never_predicted(model, images, threads=None):
    """Print a warning naming the classes the model never predicts on images."""
    from .metrics import never_predicted, never_predicted_message

    predicted = model.predict(images, n_threads=threads)
    message = never_predicted_message(never_predicted(predicted, n_classes=model.n_outputs),
                                      f"the {len(images)} test images")
    if message:
        print(f"mlp: warning: {message}", file=sys.stderr)


def _evaluate(args):
    from .model import Model

    model = Model.load(args.model)
    data, _ = _load_data(args.data)
    result = _report(model, data.test, args.threads)
    print(f"Test accuracy: {100 * result.accuracy:.2f}%")
    _warn_never_predicted(model, data.test.images, args.threads)
    return 0


def _check_model_fits_data(model, data, path):
    if model.n_inputs != data.test.images.shape[1]:
        raise ValueError(f"the model in {path} takes {model.n_inputs} inputs but the test "
                         f"images have {data.test.images.shape[1]} pixels")
    n_classes = int(data.test.labels.max()) + 1
    if model.n_outputs < n_classes:
        raise ValueError(f"the model in {path} has {model.n_outputs} outputs but the test "
                         f"labels go up to {n_classes - 1}")


def _write_report(args):
    from .model import Model
    from .report import write_report

    model = Model.load(args.model)
    data, _ = _load_data(args.data)
    _check_model_fits_data(model, data, args.model)
    write_report(model, data.test.images, data.test.labels, args.out,
                 source=os.path.basename(args.model))
    print(f"Wrote the report to {args.out}")
    return 0


def _share(probability):
    """A probability as a percentage that never rounds to a certain 100% or 0%."""
    text = f"{100 * probability:.1f}%"
    if text == "100.0%" and probability < 1:
        return ">99.9%"
    if text == "0.0%" and probability > 0:
        return "<0.1%"
    return text


def _predict(args):
    import json

    import numpy as np

    from .datasets import N_PIXELS, prepare_digit
    from .model import Model

    model = Model.load(args.model)
    if model.n_inputs != N_PIXELS:
        raise ValueError(f"the model in {args.model} takes {model.n_inputs} inputs; mlp predict "
                         f"prepares 28x28 images, {N_PIXELS} inputs")
    # Prepare every image before printing anything: one bad file fails the
    # command without leaving half a result.
    inputs = np.stack([prepare_digit(path) for path in args.images])
    probabilities = model.predict_proba(inputs)
    results = []
    for path, row in zip(args.images, probabilities):
        top = np.argsort(-row, kind="stable")[:3]
        results.append({"file": path, "prediction": int(top[0]),
                        "top3": [[int(c), round(float(row[c]), 6)] for c in top]})
    if args.json:
        # One object per line: readable, and still one JSON document.
        print("[\n" + ",\n".join("  " + json.dumps(result) for result in results) + "\n]")
        return 0
    width = max(len(path) for path in args.images)
    for result in results:
        ranked = ", ".join(f"{c} ({_share(p)})" for c, p in result["top3"])
        print(f"{result['file']:<{width}}  {result['prediction']}   top 3: {ranked}")
    return 0


def main(argv=None):
    """Entry point of the ``mlp`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    from .datasets import DatasetUnavailableError

    commands = {"train": _train, "evaluate": _evaluate, "report": _write_report,
                "predict": _predict}
    try:
        return commands[args.command](args)
    except (ValueError, TypeError, OSError, ImportError, DatasetUnavailableError) as exc:
        # OSError covers a missing file and an unwritable output; ImportError
        # an optional dependency (matplotlib, Pillow) that is not installed.
        print(f"mlp: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("mlp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
