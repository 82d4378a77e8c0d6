"""Optimizers: immutable configurations of an update rule, in one registry.

Each optimizer is a frozen dataclass, validated when it is built, that says
which update rule the kernel runs (mlp/_updates.pxi) and with which
hyperparameters; :func:`register` enters it in ``OPTIMIZERS`` by its name,
from which the CLI (``--optimizer`` and the hyperparameter flags),
``mlp.sklearn``'s ``solver``, ``Model.save``/``Model.load`` and mlp's
exports all take it. The rules are exactly those of ``torch.optim.SGD``,
``Adam``, ``AdamW``, ``RMSprop`` and ``Adagrad``, applied to the batch's
mean gradient. Weight decay applies to the weights, never to the biases.
One difference: on x86, the rules that keep state treat numbers below the
dtype's smallest normal (1.2e-38 in float32) as zero. A velocity or moment
that small moves no weight, and it is what a weight whose gradient stays
zero (a pixel blank in most images) decays to; computing with it is many
times slower on these CPUs. The weights come out as they would without it.

The state an optimizer builds up (velocities, moments, step count) lives
with the model, in ``model.optimizer_state`` (an
:class:`mlp.state.OptimizerState`, also reachable as
``mlp.optimizers.OptimizerState``),
so that a later ``train()`` or ``training_step()`` with an equal optimizer
continues it and ``Model.save`` / ``Model.load`` carry it.

To add an optimizer:

1. here, its class, decorated with ``@register``: a frozen dataclass of
   ``_Optimizer`` whose fields are its hyperparameters (each with a one-line
   ``help`` in its metadata; the CLI gives it the flag ``--field-name``,
   shared with other optimizers' fields of that name), with ``name``,
   ``state_buffers``, ``kernel_rule()``, checks in ``__post_init__``, and
   where needed ``initial_state`` (fresh state that is not zeros),
   ``_summary_parts`` (the CLI's summary) and ``cli_choices``;
2. in mlp/_updates.pxi, its rule with its code (``OPT_*`` and
   ``UPDATE_RULES``), its hyperparameters in ``_Optimizer`` and as keywords
   of ``_kernels.UpdateRule`` (mlp/_kernels.pyx), its state count in
   ``_n_state_buffers``, and its case in ``_rule_step`` (the loop may live in
   mlp/_updates.h, as the others' do);
3. in tests/test_optimizers.py, its float64 reference in ``ref_step`` and
   its cases in ``TORCH_CASES``, ``RULES`` and the hypothesis strategy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from . import _kernels
from ._validation import check_real, spoken


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


OPTIMIZERS = {}


def register(cls):
    """Class decorator: enter an optimizer in OPTIMIZERS under its ``name``.

    An optimizer is a frozen dataclass whose fields are its hyperparameters,
    each with a one-line ``help`` in its metadata (the CLI's flag
    ``--field-name``, or metadata ``flag``: another name, None for none),
    and with

    name : str
        Its name in the CLI's ``--optimizer``, in saved models and in
        ``mlp.sklearn``'s ``solver``.
    state_buffers : tuple of str
        The per-parameter state arrays it keeps, in the kernel rule's order
        (a property where it depends on the hyperparameters).
    kernel_rule() : _kernels.UpdateRule
        Its rule as the kernel runs it (mlp/_updates.pxi).
    initial_state(n_params, dtype) : dict of str to ndarray
        Its fresh state (zeros, from :class:`_Optimizer`, unless it says otherwise).
    summary() : str
        A short description for the CLI.
    cli_choices : dict of str to dict
        Its ``--optimizer`` names and the fields each one fixes (Adam's
        "adamw" is ``decoupled=True``); ``{name: {}}`` from :class:`_Optimizer`.
    """
    if cls.name in OPTIMIZERS:
        raise ValueError(f"an optimizer named {cls.name!r} is registered already")
    OPTIMIZERS[cls.name] = cls
    return cls


class _Optimizer:
    """What the registered optimizers share (see :func:`register`)."""

    name = None
    state_buffers = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "cli_choices" not in cls.__dict__:
            cls.cli_choices = {cls.name: {}}

    def initial_state(self, n_params, dtype):
        """The state of a run that has taken no step: {buffer name: array
        of n_params values of dtype}."""
        return {name: np.zeros(n_params, dtype=dtype) for name in self.state_buffers}

    def cli_name(self):
        """The ``--optimizer`` choice this configuration is."""
        return next(choice for choice, fixed in self.cli_choices.items()
                    if all(getattr(self, key) == value for key, value in fixed.items()))

    def summary(self):
        """Short text: the name, the rate and the hyperparameters that are set."""
        decay = getattr(self, "weight_decay", 0)
        return ", ".join([f"{self.cli_name()} lr {self.learning_rate:g}", *self._summary_parts(),
                          *([f"weight decay {decay:g}"] if decay else [])])

    def _summary_parts(self):
        return []


@register
@dataclass(frozen=True)
class SGD(_Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD`` (dampening 0).

    Per step, with g the batch's mean gradient::

        g = g + weight_decay * w              # weights only
        v = momentum * v + g                  # v starts at 0
        w = w - learning_rate * (g + momentum * v if nesterov else v)

    With ``momentum=0`` this is plain SGD, ``w -= learning_rate * g``, which
    the kernel folds into the weight-gradient GEMM (its fastest step).

    Parameters
    ----------
    learning_rate : float > 0
    momentum : float in [0, 1)
    nesterov : bool
        Nesterov momentum; needs ``momentum > 0``.
    weight_decay : float >= 0
        L2 penalty on the weights (not the biases), added to the gradient.
    """
    learning_rate: float = field(default=0.01, metadata={"help": "learning rate",
                                                          "flag": "--lr"})
    momentum: float = field(default=0.0, metadata={
        "help": "momentum, in [0, 1) (SGD, RMSprop)"})
    nesterov: bool = field(default=False, metadata={"help": "Nesterov momentum (SGD)"})
    weight_decay: float = field(default=0.0, metadata={
        "help": "L2 penalty on the weights (Adam: in the gradient; AdamW: decoupled)"})

    name = "sgd"

    def _summary_parts(self):
        return ([f"momentum {self.momentum:g}" + (" (Nesterov)" if self.nesterov else "")]
                if self.momentum else [])

    def __post_init__(self):
        object.__setattr__(self, "learning_rate", check_real(
            self.learning_rate, "learning_rate", low=0, low_open=True))
        object.__setattr__(self, "momentum", check_real(
            self.momentum, "momentum", low=0, high=1, high_open=True))
        object.__setattr__(self, "nesterov", _check_bool(self.nesterov, "nesterov"))
        object.__setattr__(self, "weight_decay", check_real(
            self.weight_decay, "weight_decay", low=0))
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0 (Nesterov momentum with no "
                             "momentum is plain SGD); set momentum, e.g. 0.9")
        if self.momentum == 0 and self.learning_rate * self.weight_decay >= 1:
            raise ValueError(
                f"{spoken('learning_rate')} * {spoken('weight_decay')} must be below 1 (plain "
                f"SGD scales the weights by 1 - their product every step); got {self.learning_rate * self.weight_decay}")

    @property
    def state_buffers(self):
        """Names of the per-parameter state arrays this optimizer keeps."""
        return ("velocity",) if self.momentum > 0 else ()

    def kernel_rule(self):
        """The update rule as the kernel takes it (see _kernels.train_steps)."""
        rule = "sgd_momentum" if self.momentum > 0 else "sgd"
        return _kernels.UpdateRule(_kernels.UPDATE_RULES[rule], weight_decay=self.weight_decay,
                                   momentum=self.momentum, nesterov=self.nesterov)


@register
@dataclass(frozen=True)
class Adam(_Optimizer):
    """Adam, as ``torch.optim.Adam``; with ``decoupled=True``, AdamW
    (``torch.optim.AdamW``).

    Per step t = 1, 2, ..., with g the batch's mean gradient::

        w = w * (1 - learning_rate * weight_decay)   # decoupled (AdamW), weights only
        g = g + weight_decay * w                      # otherwise (Adam), weights only
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        w = w - learning_rate / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    With ``eps_hat=True`` the last line is the Adam paper's faster form, in
    which eps is added before the bias correction of sqrt(v) (the paper's
    epsilon-hat; scikit-learn's, Keras's and TensorFlow's Adam)::

        w = w - learning_rate * sqrt(1 - beta2**t) / (1 - beta1**t) * m / (sqrt(v) + eps)

    i.e. PyTorch's rule with eps / sqrt(1 - beta2**t) in place of eps, a
    larger eps in the first thousand or so steps.

    Parameters
    ----------
    learning_rate : float > 0
    beta1, beta2 : float in [0, 1)
    eps : float > 0
    weight_decay : float >= 0
    decoupled : bool
        Decay the weights directly (AdamW) instead of through the gradient.
    eps_hat : bool
        Add eps to sqrt(v) before its bias correction, as scikit-learn does
        (``mlp.sklearn`` sets it); PyTorch's placement by default.
    """
    learning_rate: float = field(default=0.001, metadata={"help": "learning rate",
                                                           "flag": "--lr"})
    beta1: float = field(default=0.9, metadata={"help": "first-moment decay (Adam)"})
    beta2: float = field(default=0.999, metadata={"help": "second-moment decay (Adam)"})
    eps: float = field(default=1e-8, metadata={
        "help": "term added to the denominator (Adam, RMSprop, Adagrad)"})
    weight_decay: float = field(default=0.0, metadata={"help": "L2 penalty on the weights"})
    # No flags: decoupled is --optimizer adamw; eps_hat is scikit-learn's
    # placement of eps, for mlp.sklearn.
    decoupled: bool = field(default=False, metadata={"help": "AdamW's decoupled weight decay",
                                                     "flag": None})
    eps_hat: bool = field(default=False, metadata={
        "help": "add eps before sqrt(v)'s bias correction (scikit-learn's Adam)", "flag": None})

    name = "adam"
    cli_choices = {"adam": {"decoupled": False}, "adamw": {"decoupled": True}}

    def _summary_parts(self):
        return [f"betas {self.beta1:g}/{self.beta2:g}, eps {self.eps:g}"]

    def __post_init__(self):
        object.__setattr__(self, "learning_rate", check_real(
            self.learning_rate, "learning_rate", low=0, low_open=True))
        for name in ("beta1", "beta2"):
            object.__setattr__(self, name, check_real(
                getattr(self, name), name, low=0, high=1, high_open=True))
        object.__setattr__(self, "eps", check_real(self.eps, "eps", low=0, low_open=True))
        object.__setattr__(self, "weight_decay", check_real(
            self.weight_decay, "weight_decay", low=0))
        object.__setattr__(self, "decoupled", _check_bool(self.decoupled, "decoupled"))
        object.__setattr__(self, "eps_hat", _check_bool(self.eps_hat, "eps_hat"))
        if self.decoupled and self.learning_rate * self.weight_decay >= 1:
            raise ValueError(
                f"{spoken('learning_rate')} * {spoken('weight_decay')} must be below 1 (AdamW "
                f"scales the weights by 1 - their product every step); got {self.learning_rate * self.weight_decay}")

    state_buffers = ("exp_avg", "exp_avg_sq")

    def __repr__(self):
        # Decoupled decay is AdamW: shown as the call that builds it, so that
        # the repr reads (and evaluates, with mlp's names) as written.
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        if self.decoupled:
            del values["decoupled"]
        arguments = ", ".join(f"{name}={value!r}" for name, value in values.items())
        return f"{'AdamW' if self.decoupled else 'Adam'}({arguments})"

    def kernel_rule(self):
        """The update rule as the kernel takes it (see _kernels.train_steps)."""
        return _kernels.UpdateRule(_kernels.UPDATE_RULES["adam"], weight_decay=self.weight_decay,
                                   beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                                   decoupled=self.decoupled, eps_hat=self.eps_hat)


def AdamW(learning_rate=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
          eps_hat=False):
    """``Adam(..., decoupled=True)``, with torch.optim.AdamW's default weight decay.

    Returns an :class:`Adam` (equal to ``Adam(..., decoupled=True)``, and
    stored as one by ``Model.save``), whose repr reads ``AdamW(...)``.
    """
    return Adam(learning_rate, beta1, beta2, eps, weight_decay, decoupled=True, eps_hat=eps_hat)


@register
@dataclass(frozen=True)
class RMSprop(_Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``.

    Per step, with g the batch's mean gradient::

        g = g + weight_decay * w                       # weights only
        s = alpha * s + (1 - alpha) * g**2             # square_avg, starts at 0
        a = a + (1 - alpha) * (g - a)                  # centered: grad_avg, starts at 0
        d = sqrt(s - a**2) + eps if centered else sqrt(s) + eps
        b = momentum * b + g / d                       # momentum > 0: momentum_buffer
        w = w - learning_rate * (b if momentum > 0 else g / d)

    Parameters
    ----------
    learning_rate : float > 0
    alpha : float in [0, 1)
        Smoothing constant of the average of the squared gradient.
    eps : float > 0
    weight_decay : float >= 0
        L2 penalty on the weights (not the biases), added to the gradient.
    momentum : float in [0, 1)
    centered : bool
        Divide by the gradient's estimated variance (its mean square less
        its squared mean) rather than its mean square.
    """
    learning_rate: float = field(default=0.01, metadata={"help": "learning rate",
                                                          "flag": "--lr"})
    alpha: float = field(default=0.99, metadata={
        "help": "smoothing constant of the squared gradient's average (RMSprop)"})
    eps: float = field(default=1e-8, metadata={"help": "term added to the denominator"})
    weight_decay: float = field(default=0.0, metadata={"help": "L2 penalty on the weights"})
    momentum: float = field(default=0.0, metadata={"help": "momentum, in [0, 1)"})
    centered: bool = field(default=False, metadata={
        "help": "divide by the gradient's estimated variance (RMSprop)"})

    name = "rmsprop"

    def __post_init__(self):
        object.__setattr__(self, "learning_rate", check_real(
            self.learning_rate, "learning_rate", low=0, low_open=True))
        object.__setattr__(self, "alpha", check_real(
            self.alpha, "alpha", low=0, high=1, high_open=True))
        object.__setattr__(self, "eps", check_real(self.eps, "eps", low=0, low_open=True))
        object.__setattr__(self, "weight_decay", check_real(
            self.weight_decay, "weight_decay", low=0))
        object.__setattr__(self, "momentum", check_real(
            self.momentum, "momentum", low=0, high=1, high_open=True))
        object.__setattr__(self, "centered", _check_bool(self.centered, "centered"))

    @property
    def state_buffers(self):
        """Names of the per-parameter state arrays this optimizer keeps."""
        return (("square_avg",) + (("momentum_buffer",) if self.momentum > 0 else ())
                + (("grad_avg",) if self.centered else ()))

    def kernel_rule(self):
        """The update rule as the kernel takes it (see _kernels.train_steps)."""
        return _kernels.UpdateRule(_kernels.UPDATE_RULES["rmsprop"],
                                   weight_decay=self.weight_decay, alpha=self.alpha,
                                   eps=self.eps, momentum=self.momentum, centered=self.centered)

    def _summary_parts(self):
        return [f"alpha {self.alpha:g}, eps {self.eps:g}"
                + (f", momentum {self.momentum:g}" if self.momentum else "")
                + (" (centered)" if self.centered else "")]


@register
@dataclass(frozen=True)
class Adagrad(_Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``.

    Per step t = 1, 2, ..., with g the batch's mean gradient::

        g = g + weight_decay * w                       # weights only
        s = s + g**2                                   # sum, starts at initial_accumulator_value
        w = w - learning_rate / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)

    Parameters
    ----------
    learning_rate : float > 0
    lr_decay : float >= 0
    weight_decay : float >= 0
        L2 penalty on the weights (not the biases), added to the gradient.
    initial_accumulator_value : float >= 0
        Where every parameter's sum of squared gradients starts.
    eps : float > 0
    """
    learning_rate: float = field(default=0.01, metadata={"help": "learning rate",
                                                          "flag": "--lr"})
    lr_decay: float = field(default=0.0, metadata={
        "help": "step t's rate is lr / (1 + (t - 1) lr_decay) (Adagrad)"})
    weight_decay: float = field(default=0.0, metadata={"help": "L2 penalty on the weights"})
    initial_accumulator_value: float = field(default=0.0, metadata={
        "help": "where the sums of squared gradients start (Adagrad)"})
    eps: float = field(default=1e-10, metadata={"help": "term added to the denominator"})

    name = "adagrad"
    state_buffers = ("sum",)

    def __post_init__(self):
        object.__setattr__(self, "learning_rate", check_real(
            self.learning_rate, "learning_rate", low=0, low_open=True))
        object.__setattr__(self, "lr_decay", check_real(self.lr_decay, "lr_decay", low=0))
        object.__setattr__(self, "weight_decay", check_real(
            self.weight_decay, "weight_decay", low=0))
        object.__setattr__(self, "initial_accumulator_value", check_real(
            self.initial_accumulator_value, "initial_accumulator_value", low=0))
        object.__setattr__(self, "eps", check_real(self.eps, "eps", low=0, low_open=True))

    def initial_state(self, n_params, dtype):
        """The sums start at initial_accumulator_value, as torch's do."""
        return {"sum": np.full(n_params, self.initial_accumulator_value, dtype=dtype)}

    def kernel_rule(self):
        """The update rule as the kernel takes it (see _kernels.train_steps)."""
        return _kernels.UpdateRule(_kernels.UPDATE_RULES["adagrad"],
                                   weight_decay=self.weight_decay, lr_decay=self.lr_decay,
                                   eps=self.eps)

    def _summary_parts(self):
        return [f"eps {self.eps:g}"] + ([f"lr decay {self.lr_decay:g}"] if self.lr_decay else [])


# What ``import mlp`` exports: each registered optimizer, and AdamW.
__all__ = [*(cls.__name__ for cls in OPTIMIZERS.values()), "AdamW"]


def check_optimizer(optimizer, name="optimizer"):
    """Return optimizer if it is one of mlp's optimizer configurations."""
    if not isinstance(optimizer, tuple(OPTIMIZERS.values())):
        choices = ", ".join(f"mlp.{cls.__name__}(...)" for cls in OPTIMIZERS.values())
        raise TypeError(f"{name} must be one of {choices}; got {optimizer!r}")
    return optimizer


def optimizer_to_dict(optimizer):
    """A JSON-ready description: {"name": ..., hyperparameters...}."""
    return {"name": optimizer.name, **asdict(optimizer)}


def optimizer_from_dict(description):
    """The inverse of optimizer_to_dict; ValueError for anything else."""
    if not isinstance(description, dict) or description.get("name") not in OPTIMIZERS:
        raise ValueError(f"not an optimizer description: {description!r}")
    fields = {k: v for k, v in description.items() if k != "name"}
    try:
        return OPTIMIZERS[description["name"]](**fields)
    except TypeError as exc:
        raise ValueError(f"bad optimizer description {description!r}: {exc}") from None
