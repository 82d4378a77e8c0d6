"""The spec notebook's training algorithm, as the notebook writes it, in plain numpy.

Copied from the notebook mlp grew out of (cells 3-9) with two changes
only, both so the benchmark can run it in float32 as well as the notebook's
float64:

* ``Model`` and ``one_hot`` take a ``dtype`` (default float64, the notebook's);
* the random draws come from a ``np.random.RandomState`` passed in (seeded),
  instead of the global state.

Everything else is kept on purpose, since this is the baseline being
measured: Python lists of per-sample (784, 1) reshapes in get_batch, one
one_hot array per sample, ``np.dot``, sigmoid recomputed inside
sigmoid_prime, fresh lists of weights built by list comprehension each step.
"""
import numpy as np


def one_hot(j, dtype=np.float64):
    r = np.zeros((10, 1), dtype=dtype)
    r[j] = 1
    return r


def get_batch(input_data, output_data, batch_size, rs=np.random):
    n = len(input_data)
    idx = rs.choice(n, batch_size)
    dtype = input_data.dtype
    input_batch = [np.reshape(input_data[i], (784, 1)) for i in idx]
    output_batch = [one_hot(output_data[i], dtype) for i in idx]

    x_batch = np.reshape(input_batch, [batch_size, 784])
    y_batch = np.reshape(output_batch, [batch_size, 10])

    return x_batch, y_batch


class Model(object):
    def __init__(self, layers, dtype=np.float64, rs=np.random):
        self.layers_count = len(layers)
        self.layers = layers
        self.biases = [rs.randn(1, layer).astype(dtype) for layer in layers[1:]]
        self.weights = [rs.randn(y, x).astype(dtype) for x, y in zip(layers[:-1], layers[1:])]


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    return sigmoid(z) * (1 - sigmoid(z))


def cost_prime(output_activations, y):
    return (output_activations - y)


def call(model, x):
    for w, b in zip(model.weights, model.biases):
        z = np.dot(x, w.T) + b
        x = sigmoid(z)
    return x


def training_step(model, input_batch, output_batch, learning_rate):
    delta_nabla_b, delta_nabla_w = backprop(model, input_batch, output_batch)

    model.weights = [w - (learning_rate / len(input_batch)) * nw
                     for w, nw in zip(model.weights, delta_nabla_w)]
    model.biases = [b - (learning_rate / len(input_batch)) * nb
                    for b, nb in zip(model.biases, delta_nabla_b)]


def backprop(model, x, y):
    nabla_b = [np.zeros(b.shape, dtype=b.dtype) for b in model.biases]
    nabla_w = [np.zeros(w.shape, dtype=w.dtype) for w in model.weights]
    activation = x
    activations = [x]
    zs = []

    # Forward pass
    for w, b in zip(model.weights, model.biases):
        z = np.dot(activation, w.T) + b
        zs.append(z)
        activation = sigmoid(z)
        activations.append(activation)

    # Backward pass
    delta = cost_prime(activations[-1], y) * sigmoid_prime(zs[-1])
    nabla_b[-1] = np.sum(delta, axis=0)
    nabla_w[-1] = np.dot(delta.T, activations[-2])

    for l in range(2, model.layers_count):
        z = zs[-l]
        delta = np.dot(delta, model.weights[-l + 1]) * sigmoid_prime(z)
        nabla_b[-l] = np.sum(delta, axis=0)
        nabla_w[-l] = np.dot(delta.T, activations[-l - 1])

    return (nabla_b, nabla_w)


def train(model, images, labels, iterations, batch_size=30, learning_rate=2.0, rs=np.random):
    """The notebook's training loop (cell 12) without tqdm."""
    for _ in range(iterations):
        x, y = get_batch(images, labels, batch_size, rs)
        training_step(model, x, y, learning_rate)


def accuracy(model, images, labels):
    """The notebook's test loop (cell 13): one row at a time."""
    counter = 0
    for i in range(len(images)):
        x = call(model, np.reshape(images[i], (1, 784)))
        if np.argmax(x) == labels[i]:
            counter += 1
    return counter
