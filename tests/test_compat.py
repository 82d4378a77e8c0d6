"""mlp.compat against the notebook's own code (reference/notebook.txt), copied here as the spec."""
import numpy as np
import pytest

import mlp.compat as compat


# --- the notebook, verbatim in substance -----------------------------------------------------

def nb_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def nb_sigmoid_prime(z):
    return nb_sigmoid(z) * (1 - nb_sigmoid(z))


class NbModel:
    def __init__(self, layers):
        self.layers_count = len(layers)
        self.biases = [np.random.randn(1, layer) for layer in layers[1:]]
        self.weights = [np.random.randn(y, x) for x, y in zip(layers[:-1], layers[1:])]


def nb_backprop(model, x, y):
    activation, activations, zs = x, [x], []
    for w, b in zip(model.weights, model.biases):
        z = np.dot(activation, w.T) + b
        zs.append(z)
        activation = nb_sigmoid(z)
        activations.append(activation)
    nabla_b, nabla_w = [None] * len(model.weights), [None] * len(model.weights)
    delta = (activations[-1] - y) * nb_sigmoid_prime(zs[-1])
    nabla_b[-1] = np.sum(delta, axis=0)
    nabla_w[-1] = np.dot(delta.T, activations[-2])
    for l in range(2, model.layers_count):
        delta = np.dot(delta, model.weights[-l + 1]) * nb_sigmoid_prime(zs[-l])
        nabla_b[-l] = np.sum(delta, axis=0)
        nabla_w[-l] = np.dot(delta.T, activations[-l - 1])
    return nabla_b, nabla_w


def nb_training_step(model, x, y, lr):
    nb, nw = nb_backprop(model, x, y)
    model.weights = [w - (lr / len(x)) * g for w, g in zip(model.weights, nw)]
    model.biases = [b - (lr / len(x)) * g for b, g in zip(model.biases, nb)]


def nb_call(model, x):
    for w, b in zip(model.weights, model.biases):
        x = nb_sigmoid(np.dot(x, w.T) + b)
    return x


# --- tests -----------------------------------------------------------------------------------

LAYERS = [12, 7, 5, 10]


def test_model_draws_like_the_notebook():
    np.random.seed(4)
    ours = compat.Model(LAYERS)
    np.random.seed(4)
    theirs = NbModel(LAYERS)
    assert ours.layers_count == 4 and ours.layers == LAYERS
    for a, b in zip(ours.weights + ours.biases, theirs.weights + theirs.biases):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_training_matches_the_notebook_step_for_step():
    rng = np.random.default_rng(0)
    data_x = rng.random((50, 12)).astype(np.float32)
    data_y = rng.integers(0, 10, 50)
    np.random.seed(1)
    ours = compat.Model(LAYERS)
    np.random.seed(1)
    theirs = NbModel(LAYERS)
    for step in range(25):
        np.random.seed(100 + step)
        x, y = compat.get_batch(data_x, data_y, 6)
        compat.training_step(ours, x, y, 2.0)
        nb_training_step(theirs, x.astype(np.float64), y, 2.0)
    for a, b in zip(ours.weights + ours.biases, theirs.weights + theirs.biases):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    probe = data_x[:3].astype(np.float64)
    np.testing.assert_allclose(compat.call(ours, probe), nb_call(theirs, probe), rtol=1e-12)


def test_backprop_shapes_and_values():
    np.random.seed(2)
    ours = compat.Model(LAYERS)
    x = np.random.rand(4, 12)
    y = np.eye(10)[[1, 2, 3, 4]]
    nabla_b, nabla_w = compat.backprop(ours, x, y)
    ref_b, ref_w = nb_backprop(ours, x, y)
    for a, b in zip(nabla_b + nabla_w, ref_b + ref_w):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_get_batch_draws_like_the_notebook():
    data_x = np.arange(20 * 784, dtype=np.float32).reshape(20, 784)
    data_y = np.arange(20) % 10
    np.random.seed(9)
    x, y = compat.get_batch(data_x, data_y, 5)
    np.random.seed(9)
    idx = np.random.choice(20, 5)
    assert x.shape == (5, 784) and y.shape == (5, 10)
    np.testing.assert_array_equal(x, data_x[idx])
    np.testing.assert_array_equal(y.argmax(axis=1), data_y[idx])
    assert y.sum() == 5


def test_one_hot_and_cost_prime():
    r = compat.one_hot(3)
    assert r.shape == (10, 1) and r[3, 0] == 1 and r.sum() == 1
    np.testing.assert_array_equal(compat.cost_prime(np.ones(3), np.arange(3)), [1, 0, -1])


def test_sigmoid_matches_and_never_overflows():
    z = np.linspace(-30, 30, 101)
    np.testing.assert_allclose(compat.sigmoid(z), nb_sigmoid(z), rtol=1e-14)
    np.testing.assert_allclose(compat.sigmoid_prime(z), nb_sigmoid_prime(z), rtol=1e-12, atol=1e-300)
    with np.errstate(all="raise"):
        big = compat.sigmoid(np.array([[-1e4, 1e4]]))
    np.testing.assert_array_equal(big, [[0.0, 1.0]])
    assert compat.sigmoid(np.float32(0.0)).dtype == np.float32
    assert compat.sigmoid([[0.0]]).shape == (1, 1)


def test_notebook_style_assignment_updates_the_model():
    np.random.seed(0)
    model = compat.Model([3, 2])
    model.weights = [w * 0 for w in model.weights]
    model.biases = [b * 0 + 1 for b in model.biases]
    np.testing.assert_allclose(compat.call(model, np.ones((1, 3))), nb_sigmoid(np.ones((1, 2))))
    with pytest.raises(ValueError, match="weights"):
        model.weights = [np.zeros((5, 5))]


def test_call_checks_its_input():
    np.random.seed(0)
    model = compat.Model([3, 2])
    with pytest.raises(ValueError, match="columns"):
        compat.call(model, np.ones((1, 4)))
    with pytest.raises(TypeError, match="model"):
        compat.call("not a model", np.ones((1, 3)))


def test_assigned_weights_must_have_the_notebooks_shapes():
    net = compat.Model([4, 3, 2])
    with pytest.raises(ValueError, match=r"weights\[0\] must have shape \(3, 4\), got \(4, 3\)"):
        net.weights = [w.T for w in net.weights]  # was reshaped in, scrambled
    net.biases = [np.zeros((1, 3)), np.zeros(2)]  # the notebook's (1, n) and mlp's (n,)
    assert all((b == 0).all() for b in net.biases)
