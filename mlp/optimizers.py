"""Optimizers: immutable configurations of an update rule.

Each optimizer is a frozen dataclass, validated when it is built, that says
which update rule the kernel runs (mlp/_updates.pxi) and with which
hyperparameters. The rules are exactly those of ``torch.optim.SGD``,
``torch.optim.Adam`` and ``torch.optim.AdamW``, applied to the batch's mean
gradient. Weight decay applies to the weights, never to the biases. One
difference: on x86, momentum's and Adam's update treats numbers below the
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

To add an optimizer: a dataclass here with ``name``, ``state_buffers`` and
``kernel_rule()``, its rule in mlp/_updates.pxi with a code in
``_kernels.UPDATE_RULES``, and a reference test in tests/test_optimizers.py.
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


@dataclass(frozen=True)
class SGD:
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
    learning_rate: float = field(default=0.01, metadata={"help": "learning rate"})
    momentum: float = field(default=0.0, metadata={"help": "momentum, in [0, 1) (SGD)"})
    nesterov: bool = field(default=False, metadata={"help": "Nesterov momentum (SGD)"})
    weight_decay: float = field(default=0.0, metadata={
        "help": "L2 penalty on the weights (Adam: in the gradient; AdamW: decoupled)"})

    name = "sgd"

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


@dataclass(frozen=True)
class Adam:
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
    learning_rate: float = field(default=0.001, metadata={"help": "learning rate"})
    beta1: float = field(default=0.9, metadata={"help": "first-moment decay (Adam)"})
    beta2: float = field(default=0.999, metadata={"help": "second-moment decay (Adam)"})
    eps: float = field(default=1e-8, metadata={"help": "term added to the denominator (Adam)"})
    weight_decay: float = field(default=0.0, metadata={"help": "L2 penalty on the weights"})
    decoupled: bool = field(default=False, metadata={"help": "AdamW's decoupled weight decay"})
    eps_hat: bool = field(default=False, metadata={
        "help": "add eps before sqrt(v)'s bias correction (scikit-learn's Adam)"})

    name = "adam"

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


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def check_optimizer(optimizer, name="optimizer"):
    """Return optimizer if it is one of mlp's optimizer configurations."""
    if not isinstance(optimizer, tuple(OPTIMIZERS.values())):
        raise TypeError(f"{name} must be mlp.SGD(...) or mlp.Adam(...), got {optimizer!r}")
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
