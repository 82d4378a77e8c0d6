"""Every training hyperparameter, defined once.

``TrainingOptions`` is the single definition: ``mlp.train()`` takes its
fields as keyword arguments (its signature and defaults are generated from
it), a :class:`mlp.presets.Preset` holds one, and ``mlp train`` makes a
flag of each field that has one. ``ModelOptions`` does the same for the
network's shape (``mlp.Model``'s arguments), and the optimizers' own fields
(mlp/optimizers.py) give the optimizer flags.

To add a hyperparameter: a field here with its default, help text and
flag; then use it in mlp/training.py.
"""
from __future__ import annotations

import dataclasses
import inspect
import textwrap
from dataclasses import dataclass, field

import numpy as np

from .activations import ACTIVATIONS, HIDDEN_ACTIVATIONS, LOSS_NAMES, OUTPUT_ACTIVATIONS
from ._validation import check_choice, check_int, check_positive_float, check_seed, spoken
from .augment import _check_augment
from .model import COMPUTE_DTYPES, Model, check_compute_dtype
from .optimizers import SGD, Adam, check_optimizer
from .schedules import SCHEDULES, check_schedule, check_warmup

SAMPLING = ("shuffle", "replacement", "sequential")
# The CLI trains classifiers on labels: every output but the regressions' (identity, exp).
CLASSIFIER_OUTPUTS = tuple(name for name in OUTPUT_ACTIVATIONS
                           if not ACTIVATIONS[name].regression)
# Model(init=None)'s rule, as the help says it: "he for relu and gelu, xavier otherwise".
_HE_FIRST = [name for name in HIDDEN_ACTIVATIONS if ACTIVATIONS[name].init == "he"]
_INIT_RULE = f"he for {', '.join(_HE_FIRST[:-1])} and {_HE_FIRST[-1]}, xavier otherwise"

# Chosen by measurement (README, "Choosing the defaults"): with the cosine
# schedule and batches of 64 it took Model([784, 128, 10]) past 97% on MNIST
# in 3 epochs for every seed tried, where Adam and constant rates hovered at 97%.
DEFAULT_OPTIMIZER = SGD(learning_rate=0.1, momentum=0.9, nesterov=True)
DEFAULT_SCHEDULE = "cosine"
# Models with an identity output (regression) default to scikit-learn's
# MLPRegressor recipe instead. With squared error at an identity output the
# loss's curvature grows with the width of the last hidden layer (the output's
# gradient is that layer's activations, whose common positive part alone has a
# squared norm of about width / 3 for ReLU units on standardised inputs), so
# no fixed SGD rate is safe: measured on standardised data, Nesterov SGD at 0.1
# diverged with 64 units, at 0.05 with 256, at 0.01 with 1024. Softmax and
# cross-entropy bound that curvature, which is why the rate suits classifiers.
# Adam's steps do not grow with the curvature.
REGRESSION_DEFAULT_OPTIMIZER = Adam(learning_rate=0.001)
REGRESSION_DEFAULT_SCHEDULE = "constant"


def option(default, help, *, flag=None, cli_type=None, choices=None, metavar=None,
           doc_type=None):
    """A hyperparameter field: its default, its help text, and its CLI flag
    (None: no flag), parsed with cli_type and limited to choices. doc_type
    is its type in train()'s docstring, for a field whose annotation (say
    ``object``) does not tell the reader what to pass."""
    return field(default=default, metadata={
        "help": help, "flag": flag, "cli_type": cli_type, "choices": choices,
        "metavar": metavar, "doc_type": doc_type})


def _layers(text):
    sizes = tuple(int(part) for part in text.split(","))
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(text)
    return sizes


# Model's own defaults (activation, output, init), defined once in its signature.
_MODEL_DEFAULTS = {name: parameter.default
                   for name, parameter in inspect.signature(Model).parameters.items()}


def _is_regression(output):
    """Whether a model with output activation `output` (None: a classifier's) regresses."""
    return output is not None and ACTIVATIONS[output].regression


@dataclass(frozen=True)
class ModelOptions:
    """The network: ``mlp.Model(layers, activation=..., output=..., init=..., dtype=...,
    compute_dtype=...)``."""
    layers: tuple = option((784, 300, 100, 10), "layer sizes, input first",
                           flag="--layers", cli_type=_layers, metavar="784,300,100,10")
    activation: str = option(_MODEL_DEFAULTS["activation"], "hidden activation",
                             flag="--activation", choices=HIDDEN_ACTIVATIONS)
    output: str = option(_MODEL_DEFAULTS["output"], "output activation", flag="--output",
                         choices=CLASSIFIER_OUTPUTS)
    init: str | None = option(_MODEL_DEFAULTS["init"], f"initialisation (default: {_INIT_RULE})",
                              flag="--init", choices=("normal", "xavier", "he"))
    dtype: str = option("float32", "parameter dtype", flag="--dtype",
                        choices=("float32", "float64"))
    compute_dtype: str | None = option(
        _MODEL_DEFAULTS["compute_dtype"],
        "type of the matrix products' inputs: bfloat16 rounds weights and activations to "
        "bfloat16 and sums in float32, parameters and optimizer state staying float32 "
        "(float32 models only; not set: the parameter dtype)",
        flag="--compute-dtype", choices=COMPUTE_DTYPES)

    def __post_init__(self):
        check_compute_dtype(self.compute_dtype, self.dtype)

    def build(self, seed=None):
        return Model(self.layers, activation=self.activation, output=self.output,
                     init=self.init, dtype=np.dtype(self.dtype),
                     compute_dtype=self.compute_dtype, seed=seed)


@dataclass(frozen=True)
class TrainingOptions:
    """The hyperparameters of ``mlp.train()``: see its docstring."""
    epochs: int | None = option(
        None, "passes over the training data (default 10 when iterations is not given either)",
        flag="--epochs", cli_type=int)
    iterations: int | None = option(None, "training steps, instead of epochs",
                                    flag="--iterations", cli_type=int)
    batch_size: int = option(64, "samples per step", flag="--batch-size", cli_type=int)
    optimizer: object = option(
        None, "an optimizer (any of mlp.optimizers.OPTIMIZERS); default SGD(learning_rate=0.1, momentum=0.9, "
              "nesterov=True), Adam(learning_rate=0.001) for a model with identity output "
              "(regression), or plain SGD when learning_rate or weight_decay is given instead",
        doc_type="optimizer (mlp.SGD, mlp.Adam, ...) or None")
    learning_rate: float | None = option(
        None, "plain SGD with this rate (not together with optimizer)")
    weight_decay: float | None = option(
        None, "plain SGD with this L2 penalty on the weights (not together with optimizer)")
    lr_schedule: object = option(
        None, "the learning rate's factor over the run: a name or a callable "
              "schedule(step, total_steps) -> factor, evaluated every step; steps count on "
              "from the model's previous run with the same optimizer. None: cosine with the "
              "default SGD, constant with Adam or an optimizer you chose",
        flag="--lr-schedule", choices=tuple(SCHEDULES), doc_type="str, callable or None")
    warmup: float = option(0, "linear warm-up: steps, or a fraction of the run below 1",
                           flag="--warmup", cli_type=float, doc_type="int or float")
    loss: str | None = option(
        None, f"{', '.join(LOSS_NAMES[:-1])} or {LOSS_NAMES[-1]} (default: cross_entropy for "
              "softmax models, poisson for exp models, mse otherwise)",
        flag="--loss", choices=LOSS_NAMES)
    sampling: str = option(
        "shuffle", "shuffle: a fresh permutation every epoch; replacement: every batch "
                   "drawn uniformly with replacement; sequential: the rows in "
                   "their order every epoch", flag="--sampling", choices=SAMPLING)
    dropout: float = option(0.0, "probability of dropping each hidden unit (inverted dropout)",
                            flag="--dropout", cli_type=float)
    input_dropout: float = option(0.0, "probability of dropping each input",
                                  flag="--input-dropout", cli_type=float)
    max_norm: float | None = option(
        None, "after every step, cap each unit's incoming weight norm at this",
        flag="--max-norm", cli_type=float)
    patience: int | None = option(
        None, "with validation data: stop after this many epochs without a better "
              "validation accuracy, and keep the best parameters",
        flag="--patience", cli_type=int)
    augment: object = option(
        None, "random distortions of the training images, drawn afresh every time an image "
              "is used (validation data is never distorted): an mlp.augment.Affine, Elastic "
              "or Compose (Affine() + Elastic()); needs square images with values in [0, 1]",
        doc_type="Affine, Elastic, Compose or None")
    seed: object = option(None, "seed for batches, dropout masks and distortions; None "
                                "continues the model's last run, or draws fresh entropy",
                          flag="--seed", cli_type=int,
                          doc_type="int, numpy.random.Generator or None")

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("epochs", check_int(self.epochs, "epochs", minimum=1, allow_none=True))
        set_("iterations", check_int(self.iterations, "iterations", minimum=1, allow_none=True))
        if self.epochs is not None and self.iterations is not None:
            raise ValueError(f"give {spoken('epochs')} or {spoken('iterations')}, not both")
        set_("batch_size", check_int(self.batch_size, "batch_size", minimum=1))
        if self.optimizer is not None:
            check_optimizer(self.optimizer)
            if self.learning_rate is not None or self.weight_decay is not None:
                raise ValueError(
                    "give the learning rate and weight decay inside the optimizer, e.g. "
                    "optimizer=mlp.SGD(learning_rate=0.1, weight_decay=1e-4), not beside it")
        if self.learning_rate is not None:
            set_("learning_rate", check_positive_float(self.learning_rate, "learning_rate"))
        if self.weight_decay is not None:
            set_("weight_decay", check_positive_float(self.weight_decay, "weight_decay",
                                                      allow_zero=True))
        if self.lr_schedule is not None:
            check_schedule(self.lr_schedule)
        set_("warmup", check_warmup(self.warmup))
        if self.loss is not None:
            check_choice(self.loss, LOSS_NAMES, "loss")
        check_choice(self.sampling, SAMPLING, "sampling")
        for name in ("dropout", "input_dropout"):
            value = check_positive_float(getattr(self, name), name, allow_zero=True)
            if value >= 1:
                raise ValueError(f"{spoken(name)} is the probability of dropping a unit and must be "
                                 f"in [0, 1); got {value} (1 would drop everything)")
            set_(name, value)
        if self.max_norm is not None:
            set_("max_norm", check_positive_float(self.max_norm, "max_norm"))
        set_("patience", check_int(self.patience, "patience", minimum=1, allow_none=True))
        if self.augment is not None:
            _check_augment(self.augment)
        if not isinstance(self.seed, np.random.RandomState):
            set_("seed", check_seed(self.seed))

    def resolved_optimizer(self, output=None):
        """The optimizer this configuration trains a model with `output`
        (its output activation; None: a classifier's) with."""
        if self.optimizer is not None:
            return self.optimizer
        if self.learning_rate is not None or self.weight_decay is not None:
            return SGD(learning_rate=SGD.learning_rate if self.learning_rate is None
                       else self.learning_rate, weight_decay=self.weight_decay or 0.0)
        return REGRESSION_DEFAULT_OPTIMIZER if _is_regression(output) else DEFAULT_OPTIMIZER

    def resolved_schedule(self, output=None):
        """The schedule this configuration trains a model with `output` with,
        as a callable."""
        if self.lr_schedule is not None:
            return check_schedule(self.lr_schedule)
        chosen = self.optimizer is not None or self.learning_rate is not None \
            or self.weight_decay is not None
        if chosen:
            return check_schedule("constant")
        return check_schedule(REGRESSION_DEFAULT_SCHEDULE if _is_regression(output)
                              else DEFAULT_SCHEDULE)

    def replace(self, **changes):
        """A copy with the given fields replaced; epochs and iterations replace each other."""
        if changes.get("epochs") is not None:
            changes.setdefault("iterations", None)
        if changes.get("iterations") is not None:
            changes.setdefault("epochs", None)
        return dataclasses.replace(self, **changes)


def keyword_parameters(options_class):
    """inspect.Parameters (keyword-only) for every field of options_class."""
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
            for f in dataclasses.fields(options_class)]


def numpydoc_parameters(options_class, indent="    ", width=79):
    """The fields of options_class as numpydoc parameter entries, each
    ``name : type, default value`` at `indent` and its help text one level
    deeper, wrapped to `width` columns, to sit in a docstring indented by `indent`.

    The help text is used as written: it is also the CLI's help, and starts
    with a name (mse, shuffle) that capitalising would change."""
    lines = []
    for f in dataclasses.fields(options_class):
        # Annotations are strings here (from __future__ import annotations).
        doc_type = f.metadata.get("doc_type") or str(f.type).replace(" | ", " or ")
        lines.append(f"{indent}{f.name} : {doc_type}, default {f.default!r}")
        lines.append(textwrap.fill(f"{f.metadata['help']}.", width=width,
                                   initial_indent=2 * indent, subsequent_indent=2 * indent,
                                   break_long_words=False, break_on_hyphens=False))
    return "\n".join(lines)
