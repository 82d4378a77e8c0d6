"""Command line: ``mlp train``, ``evaluate``, ``report``, ``predict`` and
``augment-preview`` (or ``python -m mlp``).

The train flags are made from the definitions of the hyperparameters
(mlp/hyperparams.py: ModelOptions, TrainingOptions), of the optimizers
(mlp/optimizers.py) and of the distortions (mlp/augment.py), so that a new
hyperparameter gets its flag there.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import os
import pathlib
import re
import shlex
import sys
import time
import warnings

from ._files import atomic_write
from ._validation import argument_names, check_writable
from .augment import Affine, Compose, Elastic
from .data.registry import describe_formats
from .hyperparams import ModelOptions, TrainingOptions
from .optimizers import OPTIMIZERS
from .presets import PRESETS

EXIT_USAGE = 2
# --augment NAME: the distortions it draws.
AUGMENT_CHOICES = {"none": (), "affine": (Affine,), "elastic": (Elastic,),
                   "both": (Affine, Elastic)}
# Flag prefix of each distortion's fields: a bare --alpha or --sigma would not
# say what it is.
_AUGMENT_FLAG_PREFIXES = {Affine: "--", Elastic: "--elastic-"}
# Far more threads than any machine has cores, but bounded: each worker gets
# its own workspace, and a huge count overflowed the kernels' int (a traceback
# after training, losing the model).
MAX_THREADS = 1024
# Integer flags checked when parsed, so that the error names the flag:
# {flag: (lowest, highest)}. The notebook preset seeds numpy's legacy
# generator, which takes seeds below 2**32.
_FLAG_BOUNDS = {"--threads": (1, MAX_THREADS), "--seed": (0, 2**32 - 1)}
# --seed none: no seed, fresh entropy (a different run each time).
FRESH_SEED = "none"
# Library help that speaks of what only Python can pass (a callable, None):
# on the command line, what the flag takes instead.
_COMMAND_LINE_HELP = {
    "lr_schedule": "the learning rate's factor over the run: constant; linear, down to 0 at "
                   "the end; cosine, half a cosine down to 0; step, 0.1 after half the run "
                   "and 0.01 after three quarters",
    "seed": "seed of the initial weights, batches, dropout masks and distortions; none draws "
            "fresh entropy, a different run each time",
}
# A library default said in the help, "(default: he for relu, ...)" or "(default 10
# when ...)": the CLI shows the preset's value instead, or this rule when it is None.
_LIBRARY_DEFAULT = re.compile(r"\s*\(default:? ([^()]*)\)")
# augment-preview draws one matplotlib plot per digit, about 20 ms each: 32 by
# 10 (352 plots with the originals) is drawn in seconds, 100 by 100 took minutes.
MAX_PREVIEW_COLUMNS, MAX_PREVIEW_ROWS = 32, 10


def _typed(parse_value, name):
    """argparse type: parse with parse_value, refusing what it refuses, naming the flag."""
    def parse(text):
        try:
            return parse_value(text)
        except (ValueError, TypeError):
            what = {int: "an integer", float: "a number"}.get(
                parse_value, "two or more comma-separated sizes >= 1, like 784,300,100,10")
            raise argparse.ArgumentTypeError(f"{name} takes {what}, got {text!r}") from None
    return parse


def _hidden_sizes(text):
    """argparse type of --hidden: sizes >= 1, comma-separated."""
    parts = text.split(",")
    if not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated layer sizes >= 1, "
                                         f"like 300,100, got {text!r}")
    return tuple(int(p) for p in parts)


def _image_size(text):
    """argparse type of --image-size: HEIGHTxWIDTH."""
    height, x, width = text.lower().partition("x")
    if not (x and height.isdigit() and width.isdigit() and int(height) >= 1 and int(width) >= 1):
        raise argparse.ArgumentTypeError(f"--image-size takes HEIGHTxWIDTH, like 32x32, "
                                         f"got {text!r}")
    return int(height), int(width)


def _path(name):
    """argparse type: a path that is not empty (an empty --save saved nothing,
    an empty --data meant the working directory)."""
    def parse(text):
        if not text:
            raise argparse.ArgumentTypeError(f"{name} takes a path, got an empty string")
        return text
    return parse


def _bounded(name):
    """argparse type: an integer within _FLAG_BOUNDS[name]."""
    low, high = _FLAG_BOUNDS[name]
    parse_int = _typed(int, name)

    def parse(text):
        value = parse_int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be between {low} and {high}, "
                                             f"got {value}")
        return value
    return parse


def _seed(name):
    """argparse type: a seed, an integer within _FLAG_BOUNDS[name], or none
    (any case) for fresh entropy, returned as FRESH_SEED."""
    parse_bounded = _bounded(name)

    def parse(text):
        if text.lower() == FRESH_SEED:
            return FRESH_SEED
        try:
            int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes an integer or none, "
                                             f"got {text!r}") from None
        return parse_bounded(text)
    return parse


def _shown(value):
    """A default as the command line spells it: 784,300,100,10; on/off for a switch."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "on" if value else "off"
    return "not set" if value is None else str(value)


def _default_preset_value(options_class, name):
    default = PRESETS["default"]
    if name == "seed":
        return default.seed
    return getattr(default.model if options_class is ModelOptions else default.training, name)


def _flag_help(help_text, value, label="default preset"):
    """help_text with one default: value, or for None the library's own rule
    for it ("he for relu, xavier otherwise"), which help_text may state."""
    rule = _LIBRARY_DEFAULT.search(help_text)
    if rule:
        help_text = help_text[:rule.start()] + help_text[rule.end():]
    shown = rule.group(1) if value is None and rule else _shown(value)
    return f"{help_text} ({label}: {shown})"


def _add_option_flags(group, options_class, only=None, skip=()):
    """One flag per field of options_class that declares one; its help shows
    the default preset's value (--preset picks another)."""
    for spec in dataclasses.fields(options_class):
        meta = spec.metadata
        if not meta.get("flag") or spec.name in skip or (only and spec.name not in only):
            continue
        kwargs = dict(dest=f"{options_class.__name__}.{spec.name}", default=None,
                      help=_flag_help(_COMMAND_LINE_HELP.get(spec.name, meta["help"]),
                                      _default_preset_value(options_class, spec.name)))
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if meta["flag"] == "--seed":
            kwargs["type"] = _seed(meta["flag"])
            kwargs["metavar"] = "N|none"
        elif meta["flag"] in _FLAG_BOUNDS:
            kwargs["type"] = _bounded(meta["flag"])
            kwargs["metavar"] = "N"
        elif meta.get("cli_type"):
            kwargs["type"] = _typed(meta["cli_type"], meta["flag"])
            kwargs["metavar"] = meta.get("metavar") or {int: "N", float: "X"}[meta["cli_type"]]
        group.add_argument(meta["flag"], **kwargs)


def _optimizer_choices():
    """--optimizer NAME: {NAME: (registered optimizer class, the fields NAME
    fixes)}, from each class's cli_choices (adamw: Adam's decoupled=True)."""
    return {choice: (cls, fixed) for cls in OPTIMIZERS.values()
            for choice, fixed in cls.cli_choices.items()}


def _optimizer_fields():
    """Each optimizer hyperparameter once, with its flag (--field-name unless
    its metadata names another, or None for no flag), shared by the
    optimizers that have a field of that name:
    {name: (flag, type, help, {optimizer name: its default})}, help from the
    first optimizer that has it."""
    seen = {}
    for cls in OPTIMIZERS.values():
        for spec in dataclasses.fields(cls):
            flag = spec.metadata.get("flag", "--" + spec.name.replace("_", "-"))
            if flag:
                seen.setdefault(spec.name, (flag, spec.type, spec.metadata["help"], {}))
                seen[spec.name][3][cls.name] = spec.default
    return seen


def _defaults_help(help_text, defaults):
    """help_text with its default, or each optimizer's where they differ."""
    values = list(dict.fromkeys(defaults.values()))
    if len(values) == 1:
        return _flag_help(help_text, values[0], label="default")
    shown = "; ".join(f"{_shown(value)} for " + ", ".join(
        name for name, default in defaults.items() if default == value) for value in values)
    return f"{help_text} (default: {shown})"


def _augment_fields():
    """Each distortion parameter with its flag: {(class, name): (flag, help)}."""
    return {(cls, spec.name): (prefix + spec.name.replace("_", "-"), spec.metadata["help"])
            for cls, prefix in _AUGMENT_FLAG_PREFIXES.items()
            for spec in dataclasses.fields(cls)}


def _augment_parts(augment):
    """{Affine: ..., Elastic: ...}: the distortions augment (or None) is made of."""
    if isinstance(augment, Compose):
        return {Affine: augment.affine, Elastic: augment.elastic}
    return {} if augment is None else {type(augment): augment}


def _augment_name(augment):
    parts = set(_augment_parts(augment))
    return next(name for name, classes in AUGMENT_CHOICES.items() if set(classes) == parts)


def _augment_summary(augment):
    """Short text: "affine (rotation 10, scale 0.1, ...) + elastic (alpha 34, sigma 4)"."""
    return " + ".join(
        f"{cls.__name__.lower()} (" + ", ".join(
            f"{spec.name} {getattr(part, spec.name):g}" for spec in dataclasses.fields(cls)) + ")"
        for cls, part in _augment_parts(augment).items())


def _add_augment_flags(group, base, base_label):
    """--augment and one flag per distortion parameter; help shows base's values."""
    group.add_argument("--augment", choices=list(AUGMENT_CHOICES), default=None,
                       help=f"random distortions of every training image each time it is "
                            f"drawn: none, affine (rotation, scale, shear, shift), elastic, "
                            f"or both ({base_label}: {_augment_name(base)})")
    parts = _augment_parts(base)
    for (cls, name), (flag, help_text) in _augment_fields().items():
        shown = (f"{base_label}: {getattr(parts[cls], name):g}" if cls in parts
                 else f"default: {getattr(cls(), name):g}")
        group.add_argument(flag, dest=f"augment.{cls.__name__}.{name}", default=None,
                           metavar="X", type=_typed(float, flag), help=f"{help_text} ({shown})")


def _augment_from_flags(base, args):
    """The distortions the flags ask for, starting from base (the preset's,
    or None): --augment picks which, keeping base's values for the parts
    base has, and each parameter flag sets one value."""
    fields = _augment_fields()
    given = {}
    for (cls, name), (flag, _) in fields.items():
        value = getattr(args, f"augment.{cls.__name__}.{name}")
        if value is not None:
            given[(cls, name)] = value
    if args.augment is None and not given:
        return base
    choice = args.augment or _augment_name(base)
    wanted = AUGMENT_CHOICES[choice]
    parts = _augment_parts(base)
    values = {cls: dataclasses.asdict(parts[cls]) if cls in parts else {} for cls in wanted}
    for (cls, name), value in given.items():
        flag = fields[(cls, name)][0]
        if cls not in wanted:
            hint = ("; choose the distortions with --augment affine, elastic or both"
                    if args.augment is None else "")
            raise ValueError(f"{flag} does not apply to --augment {choice}{hint}")
        values[cls][name] = value
    # The checks name each parameter by its flag (see _flag_names).
    built = [cls(**values[cls]) for cls in wanted]
    if not built:
        return None
    return built[0] if len(built) == 1 else Compose(*built)


def _one_line(message):
    """message with its line breaks, and the indentation after them, folded into spaces."""
    return re.sub(r"\s*\n\s*", " ", str(message).strip())


def _say(kind, message):
    """Print "mlp: KIND: message" (kind: error or warning) as one line on stderr."""
    _say_line(f"mlp: {kind}: {_one_line(message)}")


def _say_line(line):
    """Print line on stderr, above a progress bar that is being drawn rather than into it."""
    try:
        from tqdm import tqdm
    except ImportError:  # a dependency, but a warning must never fail for its sake
        print(line, file=sys.stderr, flush=True)
    else:
        tqdm.write(line, file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning for the command line: the message alone, as every
    mlp warning is shown, not Python's file, line number and source line."""
    _say("warning", message)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, as every mlp error is: the
    usage argparse prints first would bury the message under a screenful of
    flags. They start "mlp: error:" (not "mlp train: error:"), as the errors
    found after parsing do; the help to see names the subcommand."""

    def error(self, message):
        # "argument --epochs: --epochs takes an integer": say the flag once.
        flag, _, rest = message.partition(": ")
        if flag.startswith("argument ") and rest.startswith(flag.split()[-1] + " "):
            message = rest
        _say("error", f"{message} (see {self.prog} --help)")
        self.exit(EXIT_USAGE)


def build_parser():
    from ._version import __version__

    parser = _Parser(
        prog="mlp", description="Train and evaluate multilayer perceptrons on MNIST or on "
                                "your own data (image folders, CSV, npz, IDX).")
    parser.add_argument("--version", action="version", version=f"mlp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train on MNIST or your own data and report test accuracy",
                        description="Train on the training split of the data (MNIST's 50,000 "
                                    "images unless --data names other data) and report accuracy "
                                    "on its test split. Flags override the preset's values; the "
                                    "network's input and output widths come from the data.")
    tr.add_argument("--preset", choices=sorted(PRESETS), default="default",
                    help="starting configuration (default: default); " + "; ".join(
                        f"{p.name}: {p.description}" for p in PRESETS.values()))
    network = tr.add_argument_group("network")
    _add_option_flags(network, ModelOptions)
    network.add_argument("--hidden", metavar="300,100", type=_hidden_sizes,
                         help="hidden layer sizes; the input and output widths come from the "
                              "data (default: the preset's hidden layers; --layers gives all "
                              "sizes instead)")
    training = tr.add_argument_group("training")
    steps = training.add_mutually_exclusive_group()
    _add_option_flags(steps, TrainingOptions, only={"epochs", "iterations"})
    _add_option_flags(training, TrainingOptions, skip={"epochs", "iterations"})
    optimizer = tr.add_argument_group("optimizer (the preset's, unless --optimizer names another)")
    default_optimizer = PRESETS["default"].training.resolved_optimizer()
    optimizer.add_argument("--optimizer", choices=sorted(_optimizer_choices()), default=None,
                           help="update rule: " + ", ".join(_optimizer_choices()) + "; the flags "
                                "below apply to those that have them (adamw: adam with "
                                "decoupled weight decay) (default preset: "
                                f"{default_optimizer.cli_name()})")
    for name, (flag, value_type, help_text, defaults) in _optimizer_fields().items():
        # Adam's betas and eps are not the preset's (it uses SGD): their own defaults.
        help_text = (_flag_help(help_text, getattr(default_optimizer, name))
                     if hasattr(default_optimizer, name)
                     else _defaults_help(help_text, defaults))
        if value_type in (bool, "bool"):
            optimizer.add_argument(flag, dest=f"optimizer.{name}", default=None,
                                   action=argparse.BooleanOptionalAction, help=help_text)
        else:
            optimizer.add_argument(flag, dest=f"optimizer.{name}", default=None, metavar="X",
                                   type=_typed(float, flag), help=help_text)
    _add_augment_flags(
        tr.add_argument_group("augmentation (the preset's, unless --augment names another)"),
        PRESETS["default"].training.augment, "default preset")
    run = tr.add_argument_group("run")
    run.add_argument("--threads", type=_bounded("--threads"),
                     help=f"training worker threads, at most {MAX_THREADS} (default: all cores, "
                          "1 for tiny networks)")
    run.add_argument("--data", metavar="PATH", type=_path("--data"),
                     help=f"the data to train on: {describe_formats()} (default: MNIST, "
                          f"cached, fetched on first use)")
    run.add_argument("--target", metavar="COLUMN",
                     help="CSV: the column holding the labels (default: the last)")
    run.add_argument("--color", action="store_true",
                     help="image folders: keep colour (RGB) instead of grey")
    run.add_argument("--image-size", metavar="HxW", type=_image_size,
                     help="image folders: resize every image to this (default: the most "
                          "common size)")
    run.add_argument("--save", metavar="MODEL.npz", type=_path("--save"),
                     help="write the trained model here")
    run.add_argument("--checkpoint", metavar="PATH", type=_path("--checkpoint"),
                     help="write the run's state here every minute, at the end and on Ctrl-C")
    run.add_argument("--resume", metavar="PATH", type=_path("--resume"),
                     help="continue the run a checkpoint holds (its configuration comes from "
                          "the file; it keeps checkpointing there unless --checkpoint says "
                          "otherwise)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", help="report a saved model's test accuracy")
    ev.add_argument("model", metavar="MODEL.npz", type=_path("MODEL.npz"))
    ev.add_argument("--data", metavar="PATH", type=_path("--data"),
                    help="as for train; its test split is scored (default: the data the "
                         "model was trained on, as recorded in the model file)")
    ev.add_argument("--threads", type=_bounded("--threads"),
                    help=f"worker threads sharing the test images, at most {MAX_THREADS} "
                         "(default 1)")

    rep = sub.add_parser("report", help="write an HTML report on a saved model",
                         description="Write one self-contained HTML file on a saved model: its "
                                     "configuration and training, test accuracy, precision and "
                                     "recall per class, the confusion matrix, misclassified "
                                     "digits, learning curves and first-layer weights. Needs "
                                     "matplotlib.")
    rep.add_argument("model", metavar="MODEL.npz", type=_path("MODEL.npz"))
    rep.add_argument("--data", metavar="PATH", type=_path("--data"),
                     help="as for train; the report uses its test split (default: the data "
                          "the model was trained on)")
    rep.add_argument("--out", metavar="REPORT.html", type=_path("--out"),
                     default="report.html",
                     help="where to write the report (default: %(default)s)")

    pr = sub.add_parser("predict", help="classify your own images or table rows",
                        description="Classify inputs with a saved model. A model trained on "
                                    "images takes image files (PNG, JPEG, GIF, BMP, TIFF, WebP), "
                                    "made grey or colour and resized as its training images "
                                    "were; a digit model (trained on MNIST) prepares each as "
                                    "MNIST's digits were: grey, cropped, scaled to fit 20x20, "
                                    "centred by mass in 28x28. A model trained on a table takes "
                                    "CSV/TSV files whose header names its feature columns, and "
                                    "classifies every row. Needs Pillow for images.")
    pr.add_argument("model", metavar="MODEL.npz", type=_path("MODEL.npz"))
    pr.add_argument("images", metavar="INPUT", type=_path("INPUT"), nargs="+")
    pr.add_argument("--json", action="store_true",
                    help='print a JSON list of {"file", "prediction", "top3"} objects (and '
                         '"row" for table rows)')

    pv = sub.add_parser("augment-preview", help="draw digits next to random distortions of them",
                        description="Write a PNG of MNIST training digits (top row) above "
                                    "random distortions of them, as training with --augment "
                                    "draws them. The distortions are the augmented preset's "
                                    "unless the flags say otherwise. Needs matplotlib.")
    pv.add_argument("--out", metavar="GRID.png", type=_path("--out"),
                    default="augment-preview.png",
                    help="where to write the image (default: %(default)s)")
    _add_augment_flags(pv.add_argument_group("augmentation"),
                       PRESETS["augmented"].training.augment, "augmented preset")
    pv.add_argument("--data", metavar="PATH", type=_path("--data"),
                    help="as for train; the digits come from its training split")
    pv.add_argument("--columns", type=_typed(int, "--columns"), metavar="N", default=8,
                    help=f"digits shown, at most {MAX_PREVIEW_COLUMNS} (default: %(default)s)")
    pv.add_argument("--rows", type=_typed(int, "--rows"), metavar="N", default=3,
                    help=f"distorted copies of each, at most {MAX_PREVIEW_ROWS} "
                         "(default: %(default)s)")
    pv.add_argument("--seed", type=_seed("--seed"), metavar="N|none", default=0,
                    help="seed of the distortions; none draws fresh ones each time "
                         "(default: %(default)s)")
    return parser


def _grouped(args, prefix):
    """The flags given under prefix ("ModelOptions", ...) as {field: value}."""
    return {key.split(".", 1)[1]: value for key, value in vars(args).items()
            if key.startswith(prefix + ".") and value is not None}


def _optimizer_from_flags(preset, args):
    """The preset's optimizer with the optimizer flags applied, or None to keep it."""
    given = _grouped(args, "optimizer")
    if args.optimizer is None and not given:
        return None
    current = preset.training.resolved_optimizer()
    current_name = current.cli_name()
    name = args.optimizer or current_name
    cls, fixed = _optimizer_choices()[name]
    values = dataclasses.asdict(current) if name == current_name else {}
    fields = {f.name for f in dataclasses.fields(cls)}
    for field_name, value in given.items():
        if field_name not in fields:
            flag = _optimizer_fields()[field_name][0]
            raise ValueError(f"{flag} does not apply to --optimizer {name}")
        values[field_name] = value
    values.update(fixed)
    # The library's message says nesterov=True; on the command line the fix is a flag.
    if values.get("nesterov") and values.get("momentum") == 0:
        raise ValueError("--nesterov needs --momentum > 0 (Nesterov momentum with no momentum "
                         "is plain SGD); add --no-nesterov, or give --momentum, e.g. 0.9")
    return cls(**values)


def _flag_names():
    """{name the library's checks use: flag} for every hyperparameter that has
    a flag (a distortion parameter's name is "Affine.scale"), for
    argument_names: the library's errors then name the flag."""
    names = {name: flag for name, (flag, *_) in _optimizer_fields().items()}
    for options_class in (ModelOptions, TrainingOptions):
        for spec in dataclasses.fields(options_class):
            if spec.metadata.get("flag"):
                names[spec.name] = spec.metadata["flag"]
    names.update({f"{cls.__name__}.{name}": flag
                  for (cls, name), (flag, _) in _augment_fields().items()})
    return names


def _configure(args):
    """The preset with the flags applied; errors speak of flags, not fields."""
    preset = PRESETS[args.preset]
    training = _grouped(args, "TrainingOptions")
    with argument_names(_flag_names()):
        optimizer = _optimizer_from_flags(preset, args)
        if optimizer is not None:
            # The optimizer now holds the rate and decay; drop the preset's own (the
            # notebook's learning_rate=2.0) here, as with_overrides ignores None.
            preset = dataclasses.replace(preset, training=preset.training.replace(
                optimizer=optimizer, learning_rate=None, weight_decay=None))
        seed = training.pop("seed", None)
        preset = preset.with_overrides(model=_grouped(args, "ModelOptions"), training=training,
                                       seed=None if seed == FRESH_SEED else seed)
        if seed == FRESH_SEED:  # with_overrides keeps the preset's seed for None
            preset = dataclasses.replace(preset, seed=None)
        augment = _augment_from_flags(preset.training.augment, args)
        if augment != preset.training.augment:
            preset = dataclasses.replace(preset, training=preset.training.replace(augment=augment))
        return preset


def _parse_args(argv):
    """Parse argv; an unknown flag is reported with its subcommand's usage."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        subcommands = next(action for action in parser._actions
                           if isinstance(action, argparse._SubParsersAction))
        subcommands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _load_data(path, options=None, progress=True):
    """(splits, DataInfo, seconds) of the data at path (None: MNIST), loaded
    with the options of mlp.datasets.load."""
    from .datasets import load

    start = time.perf_counter()
    splits, info = load(path, progress=progress, **(options or {}))
    return splits, info, time.perf_counter() - start


def _train_data_options(args):
    """The options of mlp.datasets.load that train's flags give."""
    options = {"target": args.target, "color": args.color or None,
               "image_size": args.image_size}
    return {name: value for name, value in options.items() if value is not None}


def _model_data(model, args, progress=True):
    """(splits, DataInfo, path) of the data evaluate and report score a model
    on: --data, loaded as the model's training data was (its target column,
    colour, image size), or the data the model file names."""
    info = model.data_info
    options = {}
    if info is not None:
        options = {name: (tuple(value) if name == "image_size" else value)
                   for name, value in info.load_options.items()}
    path = args.data
    if path is None and info is not None and info.source is not None:
        path = info.source
        if not os.path.exists(path):
            raise ValueError(f"the model in {args.model} was trained on {path}, which is not "
                             f"there any more; give the data with --data PATH")
    elif path is None and not (info is not None and info.format == "mnist-pickle"):
        # Scoring on MNIST a model that may never have seen it gives a
        # number that means nothing (a Fashion-MNIST model scores ~9%).
        raise ValueError(f"the model in {args.model} does not record the data it was trained "
                         f"on (it was saved by an older mlp, or from Python); give the data "
                         f"with --data PATH ({_mnist_hint()})")
    if path is not None and info is not None and info.source is None:
        # A model trained on MNIST: new data is loaded with the format's own defaults.
        options = {}
    if args.data is not None and options:
        from .data.registry import format_of

        # Only the options that apply to --data's format (a model trained on
        # a CSV file may be scored on an .npz of the same features).
        fmt = format_of(pathlib.Path(path))
        options = {name: value for name, value in options.items()
                   if name in fmt.options or name == "seed"
                   or (name == "validation_size" and fmt.name != "mnist-pickle")}
    splits, data_info, _ = _load_data(path, options, progress)
    return splits, data_info, path


def _mnist_hint():
    """Where MNIST is, for a message asking for --data."""
    from .data.sources import PKL_NAME, get_cache_dir

    cached = get_cache_dir() / PKL_NAME
    if cached.is_file():
        return f"for MNIST: --data {cached}"
    return "for MNIST: mnist.pkl.gz or a directory of its four IDX files"


def _model_inputs(model, X):
    """X as the model takes it: standardised first if the model was saved
    unfolded (a training checkpoint of tabular data)."""
    import numpy as np

    info = model.data_info
    if info is None or info.standardization is None or info.standardization_folded:
        return X
    mean, std = (np.asarray(v, dtype=np.float64) for v in info.standardization)
    return ((X - mean) / std).astype(X.dtype)


def _labels_for_model(model, labels, data_info, path):
    """The data's labels as the model's class indices, matched by class name."""
    import numpy as np

    names = _class_names(model)
    if data_info.class_names == names[:len(data_info.class_names)]:
        return labels
    unknown = [n for n in data_info.class_names if n not in names]
    if unknown:
        raise ValueError(f"{path} holds the class {unknown[0]!r}, which the model does not know "
                         f"(its classes: {', '.join(names[:20])})")
    mapping = np.array([names.index(n) for n in data_info.class_names], dtype=np.int64)
    return mapping[labels]


def _class_names(model):
    """The model's class names: its data's, or 0, 1, ... for a model without."""
    info = model.data_info
    if info is not None:
        names = tuple(info.class_names)
        return names + tuple(str(k) for k in range(len(names), model.n_outputs))
    return tuple(str(k) for k in range(model.n_outputs))


def _check_data(data, path, command, info=None):
    """Refuse a data set with an empty split the command needs, saying what it holds
    (the library would fail later, speaking of arrays, not of --data)."""
    where = f"--data {path}" if path else "the MNIST data"
    noun = "samples" if info is not None and info.input_kind == "features" else "images"
    if command == "train" and len(data.validation.labels) == 0:
        n_train = len(data.train.labels)
        raise ValueError(f"{where} holds {n_train} training {noun} and no validation {noun}; "
                         + ("mlp train needs some to validate on (from IDX files it keeps one "
                            "training image in six for that, so it needs at least 6)"
                            if info is None or info.format in ("idx", "mnist-pickle") else
                            "mlp train needs some to validate on (it holds a tenth of each "
                            "class out for that, so each class needs 5 or more samples)"))
    if len(data.test.labels) == 0:
        raise ValueError(f"{where} holds no test {noun}; mlp {command} needs at least one, "
                         f"to measure accuracy on")


def _report(model, test, threads):
    from .training import evaluate

    result = evaluate(model, test.images, test.labels, n_threads=threads)
    print(f"The model classified correctly {result.correct} out of {len(test.labels)} test examples")
    return result


def _describe(preset, optimizer):
    options = preset.training
    length = (f"{options.epochs} epoch{'s' if options.epochs != 1 else ''}"
              if options.epochs is not None
              else f"{options.iterations} iteration{'s' if options.iterations != 1 else ''}")
    extras = [f"{name} {getattr(options, name)}" for name in ("dropout", "input_dropout", "max_norm")
              if getattr(options, name)]
    if options.augment is not None:
        extras.append(f"augment {_augment_summary(options.augment)}")
    schedule = options.resolved_schedule().__name__
    return (f"preset {preset.name}: {length}, batch {options.batch_size}, "
            f"{optimizer.summary()} ({schedule}), loss {options.loss or 'default'}, "
            f"sampling {options.sampling}"
            + "".join(", " + e for e in extras))


def _resumed_configuration(args):
    """The preset-like configuration of the run in args.resume's checkpoint."""
    from .training import options_from_checkpoint

    given = [key for key, value in vars(args).items()
             if key.split(".", 1)[0] in ("ModelOptions", "TrainingOptions", "optimizer")
             and value is not None] + (["--optimizer"] if args.optimizer else [])
    if given:
        raise ValueError("--resume continues the checkpoint's run with its own configuration; "
                         "leave out the network, training and optimizer flags")
    model, options = options_from_checkpoint(args.resume)
    preset = PRESETS[args.preset]
    return dataclasses.replace(preset, name=f"resumed from {args.resume}", training=options,
                               model=ModelOptions(layers=model.layer_sizes,
                                                  activation=model.activation,
                                                  output=model.output, init=model.init,
                                                  dtype=model.dtype.name,
                                                  compute_dtype=model.compute_dtype),
                               notebook_seeding=False), model


class _Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what the user can do next (resume the checkpoint) as its message."""


def _file_version(path):
    """What tells one version of the file at path from another (a checkpoint
    is replaced by renaming a new file into place), or None if there is none."""
    if path is None:
        return None
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status.st_ino, status.st_mtime_ns, status.st_size


def _resume_advice(args, checkpoint, version_before):
    """"the checkpoint P holds the run after step S of T: resume with: mlp train
    --resume P ...", for the checkpoint this run wrote, else the one it resumed
    from; None when there is neither (a file at the path that this run did not
    write holds another run)."""
    version = _file_version(checkpoint)
    if version is None or version == version_before:
        checkpoint = args.resume
    if checkpoint is None:
        return None
    from .serialization import read_model_file

    try:
        _, state = read_model_file(checkpoint)
        place = state[0]
        done, total = int(place["done"]), int(place["total_steps"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    # The configuration is in the checkpoint; the run flags are not.
    command = ["mlp", "train", "--resume", checkpoint]
    for flag, value in (("--data", args.data), ("--save", args.save),
                        ("--threads", args.threads)):
        if value is not None:
            command += [flag, str(value)]
    if getattr(args, "target", None) is not None:
        command += ["--target", args.target]
    if getattr(args, "color", False):
        command.append("--color")
    if getattr(args, "image_size", None) is not None:
        command += ["--image-size", "x".join(map(str, args.image_size))]
    if args.no_progress:
        command.append("--no-progress")
    return (f"the checkpoint {checkpoint} holds the run after step {done} of {total}: "
            f"resume with: {shlex.join(command)}")


def _train(args):
    """mlp train; on Ctrl-C, says how to resume the checkpoint it wrote."""
    checkpoint = args.checkpoint or args.resume
    version_before = _file_version(checkpoint)
    try:
        return _train_run(args)
    except KeyboardInterrupt:
        advice = _resume_advice(args, checkpoint, version_before)
        if advice is None:
            raise
        raise _Interrupted(advice) from None


def _train_run(args):
    from ._threads import train_workers
    from .training import train

    # The output paths are checked before hours of training, not after.
    for flag, path in (("--save", args.save), ("--checkpoint", args.checkpoint),
                       ("--resume", None if args.checkpoint else args.resume)):
        if path:
            check_writable(path, flag)
    layers_given = getattr(args, "ModelOptions.layers") is not None
    if args.hidden is not None and (layers_given or args.resume):
        raise ValueError(f"--hidden does not go with {'--layers' if layers_given else '--resume'}"
                         f": --layers gives every size, --resume the checkpoint's network")
    if args.resume:
        preset, model = _resumed_configuration(args)
    else:
        preset, model = _configure(args), None
    options = preset.training
    optimizer = options.resolved_optimizer()
    data, info, load_time = _load_data(args.data, _train_data_options(args),
                                       progress=not args.no_progress)
    _check_data(data, args.data, "train", info)
    n_inputs, n_classes = data.train.images.shape[1], info.n_classes
    layers = preset.model.layers
    if not (layers_given or args.resume):
        # The preset's (or --hidden's) hidden layers between the data's widths.
        hidden = args.hidden if args.hidden is not None else tuple(layers[1:-1])
        layers = (n_inputs, *hidden, n_classes)
        preset = dataclasses.replace(preset, model=dataclasses.replace(preset.model,
                                                                       layers=layers))
    if layers[0] != n_inputs:
        raise ValueError(f"--layers must start with {n_inputs} inputs for this data, got "
                         f"{layers[0]} (or give the hidden sizes alone with --hidden)")
    if layers[-1] != n_classes:
        raise ValueError(f"--layers must end with {n_classes} outputs, one per class, got "
                         f"{layers[-1]} (or give the hidden sizes alone with --hidden)")
    if options.augment is not None and not (
            info.input_kind == "image" and info.image_shape[2] == 1
            and info.image_shape[0] == info.image_shape[1]):
        what = (f"{info.image_shape[0]}x{info.image_shape[1]} "
                f"{'grey' if info.image_shape[2] == 1 else 'colour'} images"
                if info.input_kind == "image" else "features")
        raise ValueError(f"--augment distorts grey square images, and this data holds {what}; "
                         f"train with --augment none")
    X_train, X_validation = data.train.images, data.validation.images
    if info.input_kind == "features":
        # Standardised for training; folded into the first layer when saved.
        X_train, X_validation, info = _standardized(X_train, X_validation, info)
    elif info.format in _CENTRED_IMAGE_FORMATS:
        # Centred likewise: on light backgrounds (inputs near 1) the presets'
        # recipes diverge (33% on three classes of shapes drawn on white).
        X_train, X_validation, info = _centred_images(X_train, X_validation, info)
    model_seed, training_seed = preset.seeds()
    if model is None:
        model = preset.build_model(model_seed)
    model.data_info = dataclasses.replace(info, standardization_folded=False)
    threads = train_workers(args.threads, options.batch_size, layers)
    print(f"Training {model!r}\n  {_describe(preset, optimizer)}, {threads} worker "
          f"thread{'s' if threads != 1 else ''}; data loaded in {load_time:.2f} s", flush=True)
    # Options that do not fit the network (dropout, eps) are named by their flags.
    with argument_names(_flag_names()):
        history = train(model, X_train, data.train.labels,
                        validation=(X_validation, data.validation.labels),
                        progress=not args.no_progress, n_threads=threads,
                        checkpoint=args.checkpoint or args.resume, resume=args.resume,
                        **_options_as_kwargs(options, training_seed))
    if info.standardization is not None:
        _fold_standardization(model)
    # Save before evaluating: a failure there must not throw the trained model away.
    if args.save:
        # Again, in the flag's words: the directory may have gone during the run.
        check_writable(args.save, "--save")
        try:
            model.save(args.save)
        except OSError as exc:
            # A failed write names Model.save's temporary file, which the user
            # never heard of.
            raise OSError(exc.errno, exc.strerror, args.save) from None
        print(f"Saved the model to {args.save}")
    result = _report(model, data.test, args.threads)
    print(f"Test accuracy: {100 * result.accuracy:.2f}%  (validation {100 * history.val_accuracy[-1]:.2f}%)"
          f"\nTraining time: {history.total_time:.1f} s for {history.steps[-1]} steps "
          f"({history.steps[-1] / max(history.total_time, 1e-9):.0f} steps/s)")
    _warn_never_predicted(model, data.test.images, args.threads)
    return 0


def _standardized(X_train, X_validation, info):
    """(X_train, X_validation) standardised by the training split's mean and
    standard deviation, and info recording them (constant features keep std 1)."""
    import numpy as np

    mean = X_train.mean(axis=0, dtype=np.float64)
    std = X_train.std(axis=0, dtype=np.float64)
    std[~(std > 1e-12 * np.maximum(np.abs(mean), 1))] = 1.0
    scaled = [((X - mean) / std).astype(np.float32) for X in (X_train, X_validation)]
    info = dataclasses.replace(info, standardization=(tuple(mean.tolist()), tuple(std.tolist())))
    return scaled[0], scaled[1], info


# Image formats whose pixels are centred for training: MNIST's pickle and IDX
# directories keep the recipes' inputs (and results) as they were.
_CENTRED_IMAGE_FORMATS = ("image-folder", "npz")


def _centred_images(X_train, X_validation, info):
    """(X_train, X_validation) less each pixel's training mean, and info
    recording it as a standardisation with std 1, as _standardized does.
    Pixels keep their [0, 1] scale: divided by their std as well, wide
    images make the presets' steps too large again."""
    import numpy as np

    mean = X_train.mean(axis=0, dtype=np.float64)
    mean32 = mean.astype(np.float32)
    scaled = [_rows_less(X, mean32) for X in (X_train, X_validation)]
    info = dataclasses.replace(info, standardization=(tuple(mean.tolist()),
                                                      (1.0,) * len(mean)))
    return scaled[0], scaled[1], info


def _rows_less(X, row):
    """X - row (float32, X's shape) into new memory of 4 KB pages, its rows
    split between the cores. The first touch of new memory is most of the
    cost: numpy's huge pages took 0.03-0.44 s for 60,000 x 784 floats from
    run to run here (the kernel compacts memory for them when none is
    free), 4 KB pages 0.11 s on one thread and 0.06 s on two, every time
    (bench/README.md, bench_load.py)."""
    import os
    import threading

    import numpy as np

    from ._kernels import empty_in_small_pages

    out = empty_in_small_pages(X.shape[0] * X.shape[1], np.float32).reshape(X.shape)
    edges = np.linspace(0, X.shape[0], min(os.cpu_count() or 1, 8) + 1).astype(int)
    # numpy releases the GIL in the ufunc's loop, so the parts run at once.
    workers = [threading.Thread(target=np.subtract, args=(X[a:b], row),
                                kwargs={"out": out[a:b], "dtype": np.float32})
               for a, b in zip(edges[1:-1], edges[2:])]
    for worker in workers:
        worker.start()
    np.subtract(X[:edges[1]], row, out=out[:edges[1]], dtype=np.float32)
    for worker in workers:
        worker.join()
    return out


def _fold_standardization(model):
    """Fold the standardisation the model was trained behind into its first
    layer, so that it takes raw features: with W (n_hidden, n_inputs) and
    z = W (x - mean) / std + b, W' = W / std and b' = b - W' mean."""
    import numpy as np

    info = model.data_info
    mean, std = (np.asarray(v, dtype=np.float64) for v in info.standardization)
    weights = model.weights[0].astype(np.float64) / std
    model.biases[0][...] = model.biases[0] - weights @ mean
    model.weights[0][...] = weights
    model.data_info = dataclasses.replace(info, standardization_folded=True)


def _options_as_kwargs(options, seed):
    # Shallow, so that the optimizer stays an optimizer (asdict would recurse).
    kwargs = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    kwargs["seed"] = seed
    return kwargs


def _warn_never_predicted(model, images, threads=None):
    """Print a warning naming the classes the model never predicts on images."""
    from .metrics import never_predicted, never_predicted_message

    info = model.data_info
    named = info is not None and not info.digits
    what = "samples" if named and info.input_kind == "features" else "images"
    predicted = model.predict(images, n_threads=threads)
    message = never_predicted_message(never_predicted(predicted, n_classes=model.n_outputs),
                                      f"the {len(images)} test {what}",
                                      names=_class_names(model) if named else None)
    if message:
        _say("warning", message)


def _evaluate(args):
    from .model import Model

    model = Model.load(args.model)
    _require_classifier(model, args.model, args.command)
    data, labels, path = _scored_data(model, args)
    X = _model_inputs(model, data.test.images)
    result = _report(model, data.test._replace(images=X, labels=labels), args.threads)
    print(f"Test accuracy: {100 * result.accuracy:.2f}%")
    _warn_never_predicted(model, X, args.threads)
    return 0


def _scored_data(model, args):
    """(splits, test labels as the model's classes, path) of the data that
    evaluate and report score the model on, checked to fit the model."""
    data, data_info, path = _model_data(model, args)
    _check_data(data, path, args.command, data_info)
    _check_model_fits_data(model, data, data_info, args.model, path)
    return data, _labels_for_model(model, data.test.labels, data_info, path or "MNIST"), path


def _require_classifier(model, path, command):
    """Every command but train works on classes: digits, labels, accuracy."""
    if model.is_regressor:
        raise ValueError(f"the model in {path} has {model.output!r} output, a regression "
                         f"model; mlp {command} needs a classifier, a model with softmax or "
                         f"sigmoid output (in Python, mlp.evaluate reports a regression "
                         f"model's mean squared error and R²)")


def _check_model_fits_data(model, data, data_info, path, data_path):
    where = f"--data {data_path}" if data_path else "MNIST"
    info = model.data_info
    if info is not None and info.input_kind != data_info.input_kind:
        kinds = {"image": "images", "features": "features"}
        raise ValueError(f"the model in {path} was trained on {kinds[info.input_kind]}, but "
                         f"{where} holds {kinds[data_info.input_kind]}")
    if info is not None and info.input_kind == "features" \
            and data_info.feature_names != info.feature_names:
        raise ValueError(f"the model in {path} takes the features "
                         f"{', '.join(info.feature_names[:10])}; {where} holds "
                         f"{', '.join(data_info.feature_names[:10])}")
    if model.n_inputs != data.test.images.shape[1]:
        if data_info.input_kind == "image":
            height, width, channels = data_info.image_shape
            what = f"images have {data.test.images.shape[1]} pixels" + (
                "" if (height, width, channels) == (28, 28, 1)
                else f" ({height}x{width}{'' if channels == 1 else ' colour'} images)")
        else:
            what = f"samples of {where} have {data.test.images.shape[1]} features"
        raise ValueError(f"the model in {path} takes {model.n_inputs} inputs but the test {what}")
    if info is None and model.n_outputs < data_info.n_classes:
        raise ValueError(f"the model in {path} has {model.n_outputs} outputs but the test "
                         f"labels go up to {data_info.n_classes - 1}")


def _write_report(args):
    from .model import Model
    from .report import write_report

    if _same_file(args.out, args.model):
        raise ValueError(f"--out {args.out!r} is the model file {args.model!r}: the report "
                         f"would replace the model; give another path, such as report.html")
    check_writable(args.out, "--out", example="report.html")
    model = Model.load(args.model)
    _require_classifier(model, args.model, args.command)
    data, labels, _ = _scored_data(model, args)
    write_report(model, _model_inputs(model, data.test.images), labels, args.out,
                 source=os.path.basename(args.model), raw_inputs=data.test.images)
    print(f"Wrote the report to {args.out}")
    return 0


def _same_file(path, other):
    """Whether path and other name one file, however spelt (./m.npz, a link)."""
    if os.path.exists(path) and os.path.exists(other):
        return os.path.samefile(path, other)
    return os.path.realpath(path) == os.path.realpath(other)


def _share(probability):
    """A probability as a percentage that never rounds to a certain 100% or 0%."""
    text = f"{100 * probability:.1f}%"
    if text == "100.0%" and probability < 1:
        return ">99.9%"
    if text == "0.0%" and probability > 0:
        return "<0.1%"
    return text


def _prepare_image(path, info):
    """The model's input row for the image file at path: MNIST's digit
    preparation for digit models (and models that say nothing of their data),
    else grey or colour, resized and scaled as the training images were."""
    import numpy as np

    from .datasets import prepare_digit, read_image

    if info is None or info.digits:
        return prepare_digit(path)
    from .data.folders import image_to_pixels

    height, width, channels = info.image_shape
    pixels = image_to_pixels(read_image(path), (height, width), channels == 3)
    return np.multiply(pixels.reshape(-1), np.float32(info.pixel_scale), dtype=np.float32)


def _predict(args):
    import json

    import numpy as np

    from .datasets import N_PIXELS
    from .model import Model

    model = Model.load(args.model)
    _require_classifier(model, args.model, args.command)
    info = model.data_info
    if info is None and model.n_inputs != N_PIXELS:
        raise ValueError(f"the model in {args.model} takes {model.n_inputs} inputs and does not "
                         f"say what they are (saved by an older mlp); mlp predict prepares "
                         f"28x28 images, {N_PIXELS} inputs")
    names = _class_names(model)
    # Every input that can be read is classified; each one that cannot is named
    # on its own line, and the command fails (status 2) once all are done.
    labels, inputs, failed = [], [], False
    for path in args.images:
        try:
            if info is not None and info.input_kind == "features":
                from .data.tables import read_csv_rows

                rows, lines = read_csv_rows(pathlib.Path(path), info.feature_names)
                inputs += list(rows)
                labels += [(path, line) for line in lines]
            else:
                inputs.append(_prepare_image(path, info))
                labels.append((path, None))
        except (ValueError, OSError) as exc:
            _say("error", _about_image(path, exc))
            failed = True
    results = []
    probabilities = (model.predict_proba(_model_inputs(model, np.stack(inputs)))
                     if inputs else [])
    for (path, line), row in zip(labels, probabilities):
        top = np.argsort(-row, kind="stable")[:3]
        result = {"file": path}
        if line is not None:
            result["row"] = int(line)
        result.update({"prediction": names[top[0]],
                       "top3": [[names[c], round(float(row[c]), 6)] for c in top]})
        if info is None or info.digits:
            # Digits as numbers, as mlp predict has always printed them.
            result["prediction"] = int(top[0])
            result["top3"] = [[int(c), p] for c, (_, p) in zip(top, result["top3"])]
        results.append(result)
    status = EXIT_USAGE if failed else 0
    if args.json:
        # One object per line: readable, and still one JSON document ([] if none).
        print("[\n" + ",\n".join("  " + json.dumps(result) for result in results) + "\n]"
              if results else "[]")
        return status
    shown = [r["file"] + (f":{r['row']}" if "row" in r else "") for r in results]
    width = max((len(text) for text in shown), default=0)
    name_width = max((len(str(r["prediction"])) for r in results), default=0)
    for text, result in zip(shown, results):
        ranked = ", ".join(f"{c} ({_share(p)})" for c, p in result["top3"])
        print(f"{text:<{width}}  {str(result['prediction']):<{name_width}}   top 3: {ranked}")
    return status


def _about_image(path, exc):
    """Why the image at path cannot be classified, starting with the path as given."""
    message = str(exc)
    # The library names the file as pathlib spells it: ./x.png as x.png.
    spellings = (path, str(pathlib.Path(path)))
    if message.startswith(spellings):
        return message  # "note.txt is not an image...", "blank.png: no ink found..."
    # "no image file at 'x.png'": the path goes first, and only there.
    for spelling in spellings:
        message = message.replace(f" at {spelling!r}", "")
    return f"{path}: {message}"


def _file_error(exc):
    """One line for an OSError: the path the user gave and what went wrong."""
    if exc.filename is None or exc.strerror is None:
        return str(exc)
    return f"{exc.filename}: {exc.strerror}"


def _augment_preview(args):
    from .augment import preview_grid

    for flag, value, most in (("--columns", args.columns, MAX_PREVIEW_COLUMNS),
                              ("--rows", args.rows, MAX_PREVIEW_ROWS)):
        if not 1 <= value <= most:
            raise ValueError(f"{flag} must be between 1 and {most}, got {value}")
    check_writable(args.out, "--out", example="augment-preview.png")
    augment = _augment_from_flags(PRESETS["augmented"].training.augment, args)
    if augment is None:
        raise ValueError("--augment none leaves nothing to preview; choose affine, elastic "
                         "or both")
    data, _, _ = _load_data(args.data)
    if args.columns > len(data.train.images):
        raise ValueError(f"--columns must be at most the {len(data.train.images)} training "
                         f"images of --data, got {args.columns}")
    figure = preview_grid(data.train.images, augment,
                          seed=None if args.seed == FRESH_SEED else args.seed, n=args.columns,
                          copies=args.rows)
    figure.suptitle(_augment_summary(augment), fontsize=8)
    # Render in memory and rename into place: a failure (a full disk) leaves no
    # partial image and any earlier one intact. The format follows the extension.
    image = io.BytesIO()
    figure.savefig(image, format=os.path.splitext(args.out)[1][1:] or None, dpi=100)
    try:
        atomic_write(args.out, lambda fh: fh.write(image.getvalue()))
    except OSError as exc:
        raise OSError(f"cannot write the image to {args.out!r}: {exc.strerror or exc}") from None
    print(f"Wrote {args.columns} digits and {args.rows} distortions of each to {args.out}")
    return 0


def main(argv=None):
    """Entry point of the ``mlp`` console script; returns the exit status."""
    # Warnings are shown as mlp's own while the command runs, and only then:
    # a program that imports mlp keeps Python's way of showing them.
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(argv)


def _run(argv):
    args = _parse_args(argv)
    from .datasets import DatasetUnavailableError

    commands = {"train": _train, "evaluate": _evaluate, "report": _write_report,
                "predict": _predict, "augment-preview": _augment_preview}
    try:
        return commands[args.command](args)
    except (ValueError, TypeError, ImportError, DatasetUnavailableError,
            FloatingPointError) as exc:
        # ImportError: an optional dependency (matplotlib, Pillow) that is not installed.
        # FloatingPointError: training diverged; the message says which flag to lower.
        _say("error", exc)
        return EXIT_USAGE
    except OSError as exc:  # FileNotFoundError, PermissionError, a full disk...
        _say("error", _file_error(exc))
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        # "mlp: interrupted" starts the line, for scripts; then what to do next.
        line = "mlp: interrupted" + (f"; {_one_line(exc)}" if str(exc) else "")
        _say_line(line)
        return 130


if __name__ == "__main__":
    sys.exit(main())
