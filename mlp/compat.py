"""The notebook's own names, signatures and array shapes, backed by the kernels.

    from mlp.compat import *

makes the notebook's training and testing cells run unchanged: ``Model`` has
``weights`` (out, in) and ``biases`` (1, out) like the notebook's, and
``training_step`` / ``backprop`` / ``call`` run through the Cython core.
Random draws (initialisation, ``get_batch``) use numpy's global generator,
as the notebook does, so ``np.random.seed`` makes a run repeatable.
"""
from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from . import _kernels
from . import training as _training
from ._validation import check_layer_arrays
from .model import Model as _Model

# np and tqdm are exported too: the notebook's cells use both by those names.
__all__ = ["np", "tqdm", "load_data", "one_hot", "get_batch", "Model", "sigmoid", "sigmoid_prime",
           "cost_prime", "call", "backprop", "training_step"]

_SIGMOID = _kernels.ACTIVATIONS["sigmoid"]


def load_data(path="mnist.pkl.gz"):
    """(training_data, validation_data, test_data), each (images (n, 784) float32,
    labels (n,) int64), read safely (hash check or restricted unpickler).

    If `path` names ``mnist.pkl.gz`` and no such file exists, the cached or
    fetched copy is used: it is the same file, verified by its sha256.
    """
    from .datasets import load_mnist

    if (isinstance(path, (str, os.PathLike)) and not os.path.exists(path)
            and os.path.basename(os.fspath(path)) == "mnist.pkl.gz"):
        path = None
    train, validation, test = load_mnist(path)
    return tuple(train), tuple(validation), tuple(test)


def one_hot(j):
    """(10, 1) float64 column with a 1 in row j."""
    r = np.zeros((10, 1))
    r[j] = 1
    return r


def get_batch(input_data, output_data, batch_size):
    """batch_size rows drawn uniformly with replacement: x (batch_size, 784),
    y one-hot (batch_size, 10) float64."""
    n = len(input_data)
    idx = np.random.choice(n, batch_size)
    x_batch = np.asarray(input_data)[idx].reshape(batch_size, -1)
    y_batch = np.zeros((batch_size, 10))
    y_batch[np.arange(batch_size), np.asarray(output_data)[idx]] = 1
    return x_batch, y_batch


class Model:
    """The notebook's Model(layers): N(0, 1) biases (1, n) and weights (n_out, n_in).

    Parameters live in an :class:`mlp.Model` (float64, like the notebook's
    arrays); ``weights`` and ``biases`` are views into it. Assigning a new
    list to either copies the values in.
    """

    def __init__(self, layers):
        self.layers_count = len(layers)
        self.layers = list(layers)
        self.model = _Model(layers, activation="sigmoid", output="sigmoid", init="normal",
                            dtype=np.float64)
        # Drawn from the global generator in the notebook's order.
        for b in self.model.biases:
            b[...] = np.random.randn(1, b.size)[0]
        for w in self.model.weights:
            w[...] = np.random.randn(*w.shape)

    @property
    def weights(self):
        return list(self.model.weights)

    @weights.setter
    def weights(self, values):
        _assign(self.model.weights, values, "weights")

    @property
    def biases(self):
        return [b.reshape(1, -1) for b in self.model.biases]

    @biases.setter
    def biases(self, values):
        _assign(self.model.biases, values, "biases")


def _assign(targets, values, name):
    # Biases as the notebook keeps them, (1, n), or as mlp does, (n,); a weight
    # matrix (n_out, n_in) only, so that a transposed one is an error rather
    # than reshaped into a scramble. NaN is let through, as numpy lets it.
    checked = check_layer_arrays(
        values, targets, name, finite=False,
        other_shapes=lambda target: [(1, target.size)] if target.ndim == 1 else [])
    for target, array in zip(targets, checked):
        target[...] = array


def _model_of(model):
    if isinstance(model, Model):
        return model.model
    if isinstance(model, _Model):
        return model
    raise TypeError(f"model must be an mlp.compat.Model or mlp.Model, got {type(model).__name__}")


def sigmoid(z):
    """Elementwise logistic function, overflow-free; float64 unless z is float32."""
    z = np.asarray(z)
    out = np.array(z, dtype=np.float32 if z.dtype == np.float32 else np.float64, order="C")
    if out.size:
        _kernels.activation(out.reshape(-1), _SIGMOID)
    return out


def sigmoid_prime(z):
    """Elementwise derivative of the sigmoid, sigmoid(z) * (1 - sigmoid(z))."""
    s = sigmoid(z)
    if s.size:
        flat = s.reshape(1, -1)
        _kernels.activation_derivative(flat.copy(), flat, _SIGMOID)
    return s


def cost_prime(output_activations, y):
    """Derivative of the MSE cost with respect to the output: a - y."""
    return output_activations - y


def call(model, x):
    """Forward pass: (n, 784) or (784,) input to (n, 10) output activations."""
    m = _model_of(model)
    x = np.asarray(x)
    return m.forward(x.reshape(1, -1) if x.ndim == 1 else x)


def backprop(model, x, y):
    """(nabla_b, nabla_w): gradients of the MSE cost summed over the batch.

    nabla_b[l] has shape (n_out,) and nabla_w[l] (n_out, n_in), as the
    notebook's backprop returns them."""
    grads_w, grads_b = _model_of(model).gradients(x, y, "mse")
    return grads_b, grads_w


def training_step(model, input_batch, output_batch, learning_rate):
    """One SGD step in place: p -= learning_rate / len(batch) * grad_p."""
    _training._training_step(_model_of(model), input_batch, output_batch, learning_rate, "mse")
