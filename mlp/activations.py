"""The activations and losses mlp offers, each described once.

Every other module reads these tables: the model's checks and default
initialisation (mlp/model.py), the choices of ``mlp.train`` and the CLI
(mlp/hyperparams.py), the ONNX export (mlp/onnx.py), the scikit-learn
names (mlp/sklearn.py) and the tests' numpy references. Adding an
activation is an entry in ACTIVATIONS plus its code in the compiled core
(an ``ACT_*`` code and ``ACTIVATIONS`` entry in mlp/_kernels.pyx, its
forward and derivative in mlp/_elementwise.pxi).

This module imports nothing of mlp but the compiled core's codes, so that
any module may import it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import _kernels

__all__ = ["Activation", "Loss", "ACTIVATIONS", "LOSSES", "HIDDEN_ACTIVATIONS",
           "OUTPUT_ACTIVATIONS", "LOSS_NAMES", "by_code", "default_init"]

# leaky_relu's slope below zero (torch.nn.LeakyReLU's default); the kernel's
# LEAKY_RELU_SLOPE in mlp/_elementwise.pxi.
LEAKY_RELU_SLOPE = 0.01


@dataclass(frozen=True)
class Activation:
    """One activation.

    Attributes
    ----------
    name : str
        As ``mlp.Model(activation=...)``, ``output=...`` and the CLI spell it.
    hidden, output : bool
        Whether it may be the hidden layers' or the output layer's activation.
    init : str
        The initialisation ``mlp.Model(init=None)`` picks for it as hidden
        activation: "he" for ReLU-like units (as torch's kaiming), "xavier"
        otherwise.
    sklearn_name : str
        Its name in scikit-learn's ``activation`` (mlp.sklearn accepts it and
        ``name`` alike).
    onnx : callable or None
        ``onnx(graph, x, y)`` adds the nodes computing y = act(x) to an ONNX
        graph under construction (see mlp/onnx.py's ``_Graph``: ``node`` and
        ``constant``); None when the layer's output is its Gemm's.
    reference : callable
        Numpy act(z), float64, written from the maths (the tests' reference).
    reference_derivative : callable or None
        Numpy act'(z), elementwise; None for softmax.
    regression : bool
        As an output: whether its model is a regressor (predicts its outputs,
        is scored by mean squared error and R², trains by Adam by default)
        rather than a classifier of its outputs' argmax.
    default_loss : str
        As an output: the loss training uses when none is named.
    """
    name: str
    hidden: bool
    output: bool
    init: str
    sklearn_name: str
    onnx: Callable | None
    reference: Callable
    reference_derivative: Callable | None
    regression: bool = False
    default_loss: str = "mse"

    @property
    def code(self):
        """The compiled core's code (mlp/_kernels.pyx's ACTIVATIONS)."""
        return _kernels.ACTIVATIONS[self.name]


@dataclass(frozen=True)
class Loss:
    """One loss.

    Attributes
    ----------
    name : str
    output : str or None
        The output activation it is defined for (its gradient is computed
        through that activation); None: any.
    reference : callable
        Numpy ``reference(a, z, y)``: the loss's terms (n, k) from the
        outputs a, logits z and targets y, (n, k), in float64; a sample's
        loss is the sum of its row.
    target_range : tuple of float or None
        (low, high) that every target must lie in (inf for no bound);
        None: any finite value.
    target_help : str
        What such targets are, for the error that refuses others.
    """
    name: str
    output: str | None
    reference: Callable
    target_range: tuple | None = None
    target_help: str = ""

    @property
    def code(self):
        """The compiled core's code (mlp/_kernels.pyx's LOSSES)."""
        return _kernels.LOSSES[self.name]


# -- numpy references ---------------------------------------------------------

def _sigmoid(z):
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(under="ignore", over="ignore"):
        e = np.exp(-np.abs(z))  # never overflows
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softmax(z):
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(under="ignore"):
        e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _f64(values):
    return np.asarray(values, dtype=np.float64)


def _float64(function):
    return lambda z: function(_f64(z))


def _xlogy(x, y):
    """x log y, 0 where x is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


def _logsumexp(z):
    m = z.max(axis=-1, keepdims=True)
    with np.errstate(under="ignore"):
        return m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


# -- ONNX nodes ---------------------------------------------------------------

def _onnx_operator(operator, **attributes):
    """One ONNX operator applied to the layer's Gemm output."""
    def add(graph, x, y):
        graph.node(operator, [x], y, **attributes)
    return add


def _onnx_leaky_relu(graph, x, y):
    # LeakyRelu's alpha is a float32 attribute: a float64 graph would have
    # 0.01f. There, max(x, 0.01 x) with a float64 constant, which is the
    # same function for any slope in (0, 1).
    if graph.dtype == np.float32:
        graph.node("LeakyRelu", [x], y, alpha=LEAKY_RELU_SLOPE)
    else:
        graph.node("Max", [x, graph.node("Mul", [x, graph.constant(LEAKY_RELU_SLOPE)])], y)


def _onnx_silu(graph, x, y):
    graph.node("Mul", [x, graph.node("Sigmoid", [x])], y)


def _onnx_gelu(graph, x, y):
    # x * 0.5 * (1 + erf(x / sqrt 2)): opset 17 has no Gelu (20 has, and
    # onnxruntime expands it to Erf anyway).
    scaled = graph.node("Mul", [x, graph.constant(math.sqrt(0.5))])
    cdf = graph.node("Add", [graph.erf(scaled), graph.constant(1.0)])
    graph.node("Mul", [graph.node("Mul", [x, graph.constant(0.5)]), cdf], y)


# -- the tables -----------------------------------------------------------------

ACTIVATIONS = {a.name: a for a in (
    Activation("sigmoid", hidden=True, output=True, init="xavier", sklearn_name="logistic",
               onnx=_onnx_operator("Sigmoid"), reference=_sigmoid,
               reference_derivative=lambda z: _sigmoid(z) * (1 - _sigmoid(z))),
    Activation("tanh", hidden=True, output=False, init="xavier", sklearn_name="tanh",
               onnx=_onnx_operator("Tanh"), reference=_float64(np.tanh),
               reference_derivative=_float64(lambda z: 1 - np.tanh(z) ** 2)),
    # relu'(0) is taken as 0, as the kernel and torch take it.
    Activation("relu", hidden=True, output=False, init="he", sklearn_name="relu",
               onnx=_onnx_operator("Relu"), reference=_float64(lambda z: np.where(z > 0, z, 0.0)),
               reference_derivative=_float64(lambda z: (z > 0).astype(np.float64))),
    Activation("leaky_relu", hidden=True, output=False, init="he", sklearn_name="leaky_relu",
               onnx=_onnx_leaky_relu,
               reference=_float64(lambda z: np.where(z > 0, z, LEAKY_RELU_SLOPE * z)),
               reference_derivative=_float64(lambda z: np.where(z > 0, 1.0, LEAKY_RELU_SLOPE))),
    # The exact gelu, z Phi(z) (torch's approximate="none").
    Activation("gelu", hidden=True, output=False, init="he", sklearn_name="gelu",
               onnx=_onnx_gelu,
               reference=_float64(lambda z: z * 0.5 * (1 + _erf(z / math.sqrt(2)))),
               reference_derivative=_float64(
                   lambda z: 0.5 * (1 + _erf(z / math.sqrt(2)))
                   + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi))),
    Activation("silu", hidden=True, output=False, init="he", sklearn_name="silu",
               onnx=_onnx_silu, reference=_float64(lambda z: z * _sigmoid(z)),
               reference_derivative=_float64(
                   lambda z: _sigmoid(z) * (1 + z * (1 - _sigmoid(z))))),
    Activation("softmax", hidden=False, output=True, init="xavier", sklearn_name="softmax",
               onnx=_onnx_operator("Softmax", axis=-1), reference=_softmax,
               reference_derivative=None, default_loss="cross_entropy"),
    Activation("identity", hidden=True, output=True, init="xavier", sklearn_name="identity",
               onnx=None, reference=_float64(lambda z: z.copy()),
               reference_derivative=_float64(np.ones_like), regression=True),
    # Positive outputs (counts, rates): scikit-learn's output for its Poisson loss.
    Activation("exp", hidden=False, output=True, init="xavier", sklearn_name="exp",
               onnx=_onnx_operator("Exp"), reference=_float64(np.exp),
               reference_derivative=_float64(np.exp), regression=True, default_loss="poisson"),
)}

LOSSES = {loss.name: loss for loss in (
    Loss("mse", output=None, reference=lambda a, z, y: 0.5 * (_f64(a) - _f64(y)) ** 2),
    Loss("cross_entropy", output="softmax",
         reference=lambda a, z, y: -_f64(y) * (_f64(z) - _logsumexp(_f64(z))),
         target_range=(0.0, 1.0), target_help="one-hot or probabilities"),
    # softplus(z) - y z = -y log sigmoid(z) - (1 - y) log(1 - sigmoid(z))
    Loss("binary_cross_entropy", output="sigmoid",
         reference=lambda a, z, y: np.logaddexp(0, _f64(z)) - _f64(y) * _f64(z),
         target_range=(0.0, 1.0), target_help="one-hot or probabilities"),
    # Half the Poisson deviance, y log(y / mu) - y + mu with mu = exp(z), as
    # scikit-learn's MLPRegressor(loss="poisson") computes it.
    Loss("poisson", output="exp",
         reference=lambda a, z, y: (np.exp(_f64(z)) - _f64(y) * _f64(z)
                                    + _xlogy(_f64(y), _f64(y)) - _f64(y)),
         target_range=(0.0, math.inf), target_help="counts or rates"),
)}

HIDDEN_ACTIVATIONS = tuple(name for name, a in ACTIVATIONS.items() if a.hidden)
OUTPUT_ACTIVATIONS = tuple(name for name, a in ACTIVATIONS.items() if a.output)
LOSS_NAMES = tuple(LOSSES)

if set(ACTIVATIONS) != set(_kernels.ACTIVATIONS) or set(LOSSES) != set(_kernels.LOSSES):
    raise ImportError("mlp/activations.py and the compiled core disagree on the activations "
                      "or losses: rebuild the extension (python setup.py build_ext --inplace)")


def by_code(code):
    """The Activation whose kernel code is `code`."""
    for activation in ACTIVATIONS.values():
        if activation.code == code:
            return activation
    raise KeyError(code)


def default_init(activation):
    """The initialisation ``mlp.Model(init=None)`` picks for hidden `activation`."""
    return ACTIVATIONS[activation].init
