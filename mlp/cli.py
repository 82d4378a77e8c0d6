"""Command line: ``mlp train`` and ``mlp evaluate`` (also ``python -m mlp``)."""
from __future__ import annotations

import argparse
import sys
import time

from . import __version__
from ._validation import check_writable
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
    parser.add_argument("--version", action="version", version=f"mlp {__version__}")
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
    ev.add_argument("--threads", type=_positive(int),
                    help="worker threads sharing the test images during inference (default 1)")
    return parser


def _parse_args(argv):
    """Parse argv; an unknown flag is reported with its subcommand's usage."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        subcommands = next(action for action in parser._actions
                           if isinstance(action, argparse._SubParsersAction))
        subcommands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _load_data(path):
    from .datasets import load_mnist

    start = time.perf_counter()
    data = load_mnist(path)
    return data, time.perf_counter() - start


def _check_shapes(model, data, flag):
    """The model must fit the data: say so in the CLI's terms (inputs, outputs)."""
    n_inputs = data.train.images.shape[1]
    n_classes = int(max(split.labels.max(initial=0) for split in data)) + 1
    if model.n_inputs != n_inputs or model.n_outputs < n_classes:
        raise ValueError(
            f"{flag} expects {model.n_inputs} inputs and {model.n_outputs} outputs, but the "
            f"data has {n_inputs} inputs (pixels per image) and {n_classes} classes")


def _report(model, test, threads):
    from .training import evaluate

    result = evaluate(model, test.images, test.labels, n_threads=threads)
    print(f"The model classified correctly {result.correct} out of {len(test.labels)} test examples")
    return result


def _train(args):
    from ._threads import train_workers
    from .training import train

    if args.save:
        # Before hours of training, not after.
        check_writable(args.save, "--save")
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
    length = (_plural(preset.epochs, "epoch") if preset.epochs is not None
              else _plural(preset.iterations, "iteration"))
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


def _evaluate(args):
    from .model import Model

    model = Model.load(args.model)
    data, _ = _load_data(args.data)
    _check_shapes(model, data, f"the model {args.model!r}")
    result = _report(model, data.test, args.threads)
    print(f"Test accuracy: {100 * result.accuracy:.2f}%")
    return 0


def _plural(count, noun):
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _file_error(exc):
    """One line for an OSError: the path the user gave and what went wrong."""
    if exc.filename is None or exc.strerror is None:
        return str(exc)
    return f"{exc.filename}: {exc.strerror}"


def main(argv=None):
    """Entry point of the ``mlp`` console script; returns the exit status."""
    args = _parse_args(argv)
    from .datasets import DatasetUnavailableError

    try:
        return _train(args) if args.command == "train" else _evaluate(args)
    except (ValueError, TypeError, DatasetUnavailableError) as exc:
        print(f"mlp: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # FileNotFoundError, PermissionError, a full disk...
        print(f"mlp: error: {_file_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("mlp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
