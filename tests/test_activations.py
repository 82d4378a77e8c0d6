"""The activation table (mlp/activations.py), and the activations added
through it held against torch and against the numpy reference on every
training path of the kernel (dense and sparse first layer, one and two
workers, feature-major and row-major batches, samples split, dropout)."""
from __future__ import annotations

import numpy as np
import pytest

import mlp
from mlp import _kernels as K
from mlp.activations import ACTIVATIONS, HIDDEN_ACTIVATIONS, LOSSES, OUTPUT_ACTIVATIONS

from conftest import (ACT, LOSS, assert_close, kernel_train_steps, one_hot, ref_act,
                      ref_act_prime, ref_output_delta, require, unflatten)

# The activations added through the table, and their torch modules.
NEW = ("identity", "leaky_relu", "gelu", "silu")
TORCH_MODULES = {"identity": lambda nn: nn.Identity(), "leaky_relu": lambda nn: nn.LeakyReLU(0.01),
                 "gelu": lambda nn: nn.GELU(approximate="none"), "silu": lambda nn: nn.SiLU()}
# float64: rounding only; float32: its own rounding through three layers.
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}


def test_the_table_and_the_kernel_name_the_same_activations_and_losses():
    assert set(ACTIVATIONS) == set(K.ACTIVATIONS)
    assert {a.code for a in ACTIVATIONS.values()} == set(K.ACTIVATIONS.values())
    assert set(LOSSES) == set(K.LOSSES)
    assert set(NEW) <= set(HIDDEN_ACTIVATIONS)
    assert OUTPUT_ACTIVATIONS == ("sigmoid", "softmax", "identity", "exp")
    for loss in LOSSES.values():
        assert loss.output is None or loss.output in OUTPUT_ACTIVATIONS


@pytest.mark.parametrize("activation,init", [("relu", "he"), ("sigmoid", "xavier"),
                                             ("tanh", "xavier"), ("leaky_relu", "he"),
                                             ("gelu", "he"), ("silu", "he"),
                                             ("identity", "xavier")])
def test_default_init_follows_the_activation(activation, init):
    default = mlp.Model([3, 4, 2], activation=activation, seed=1)
    assert default.init == init
    # The weights are drawn that way too, not only named so.
    explicit = mlp.Model([3, 4, 2], activation=activation, init=init, seed=1)
    np.testing.assert_array_equal(default._params, explicit._params)


def _torch_net(torch, model, activation):
    layers = []
    for l, (w, b) in enumerate(zip(model.weights, model.biases)):
        linear = torch.nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64 if
                                 model.dtype == np.float64 else torch.float32)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.copy()))
            linear.bias.copy_(torch.from_numpy(b.copy()))
        layers.append(linear)
        if l < len(model.weights) - 1:
            layers.append(TORCH_MODULES[activation](torch.nn))
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("activation", NEW)
def test_forward_and_one_sgd_step_match_torch(activation, dtype):
    torch = require("torch")
    rng = np.random.default_rng(7)
    model = mlp.Model([6, 9, 7, 4], activation=activation, output="softmax", dtype=dtype,
                      seed=3)
    for b in model.biases:
        b[...] = rng.standard_normal(b.shape) * 0.5
    X = (rng.standard_normal((20, 6)) * 1.5).astype(dtype)
    labels = rng.integers(0, 4, 20)
    net = _torch_net(torch, model, activation)
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(X)), dim=1).numpy()
    assert_close(model.forward(X), expected, **TOL[dtype])

    # One plain SGD step on the whole batch, mean cross-entropy, both sides.
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(net(torch.from_numpy(X)),
                                      torch.from_numpy(labels)).backward()
    optimizer.step()
    mlp.train(model, X, labels, iterations=1, batch_size=len(X), learning_rate=0.5,
              loss="cross_entropy", progress=False, n_threads=1, seed=0)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    for l, linear in enumerate(linears):
        assert_close(model.weights[l], linear.weight.detach().numpy(), **TOL[dtype],
                     err_msg=f"W{l}")
        assert_close(model.biases[l], linear.bias.detach().numpy(), **TOL[dtype],
                     err_msg=f"b{l}")


def _reference_step(flat, sizes, x, y, hidden, lr, masks):
    """One SGD step on the mean cross-entropy, with the hidden layers'
    dropout masks (0 or 1 / (1 - p) each; None for none), in float64."""
    Ws, bs = unflatten(flat, sizes)
    a, zs, acts = np.asarray(x, np.float64), [], [np.asarray(x, np.float64)]
    for l, (W, b) in enumerate(zip(Ws, bs)):
        z = a @ W.T + b
        last = l == len(Ws) - 1
        a = ref_act(z, ACT["softmax"] if last else hidden)
        if not last and masks is not None:
            a = a * masks[l]
        zs.append(z)
        acts.append(a)
    delta = ref_output_delta(zs[-1], y, ACT["softmax"], "cross_entropy")
    grads = []
    for l in range(len(Ws) - 1, -1, -1):
        grads[:0] = [delta.T @ acts[l], delta.sum(axis=0)]
        if l > 0:
            delta = (delta @ Ws[l]) * ref_act_prime(zs[l - 1], hidden)
            if masks is not None:
                delta = delta * masks[l - 1]
    flat_grads = np.concatenate([g.ravel() for g in grads])
    return np.asarray(flat, np.float64) - lr / len(x) * flat_grads


# The kernel's training paths: (batch, feature_major, workers, sparse_input).
PATHS = [(16, False, 1, False), (16, False, 2, False), (16, True, 1, False),
         (16, True, 2, False), (16, False, 1, True), (16, False, 2, True),
         (1100, False, 2, False), (1100, False, 2, True)]


@pytest.mark.parametrize("dropout", [0.0, 0.3], ids=["plain", "dropout"])
@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"b{p[0]}-fm{int(p[1])}-w{p[2]}-sp{int(p[3])}")
@pytest.mark.parametrize("activation", NEW)
def test_every_training_path_takes_the_reference_step(activation, path, dropout):
    batch, feature_major, workers, sparse = path
    sizes = [12, 9, 7, 3]
    sizes_arr = np.asarray(sizes, np.intp)
    rng = np.random.default_rng(11)
    flat = np.concatenate([np.concatenate([rng.standard_normal(o * i) / np.sqrt(i),
                                           rng.standard_normal(o) * 0.3])
                           for i, o in zip(sizes[:-1], sizes[1:])])
    x = rng.standard_normal((batch, sizes[0]))
    x[rng.random(x.shape) < 0.8] = 0.0  # mostly zeros, as the sparse path expects
    labels = rng.integers(0, sizes[-1], batch).astype(np.int64)
    hidden = ACT[activation]
    if activation == "leaky_relu":
        Ws, bs = unflatten(flat, sizes)
        a = x
        for W, b in zip(Ws[:-1], bs[:-1]):  # away from the kink
            z = a @ W.T + b
            assert np.abs(z).min() > 1e-9
            a = ref_act(z, hidden)
    masks = None
    if dropout:
        masks = []
        for layer, width in enumerate(sizes[1:-1], start=1):
            mask = np.ones((batch, width))
            K.dropout_mask(mask, dropout, 5, 1, layer, (0, batch), (0, width), False)
            masks.append(mask)
    expected = _reference_step(flat, sizes, x, one_hot(labels, sizes[-1]), hidden, 0.2, masks)
    params = flat.copy()
    work = np.empty(K.workspace_size(sizes_arr, batch, hidden))
    kernel_train_steps(params, sizes_arr, hidden, ACT["softmax"], LOSS["cross_entropy"], x,
                       labels, np.arange(batch, dtype=np.int64), batch, 0.2, 0.0, work,
                       np.zeros(1), feature_major, workers, dropout=dropout, dropout_seed=5,
                       sparse_input=sparse)
    assert_close(params, expected, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("activation", NEW)
def test_save_and_load_keep_the_activation(tmp_path, activation):
    model = mlp.Model([5, 4, 3], activation=activation, seed=0)
    model.save(tmp_path / "m.npz")
    loaded = mlp.Model.load(tmp_path / "m.npz")
    assert loaded.activation == activation
    X = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_a_workspace_too_small_for_the_kept_inputs_is_refused(activation):
    sizes = np.asarray([4, 5, 2], np.intp)
    params = np.zeros(5 * 5 + 2 * 6)
    data = K.TrainingData(np.zeros((8, 4)), np.zeros(8, np.int64), batch_size=8,
                          feature_major=False)
    short = np.empty(K.workspace_size(sizes, 8))
    with pytest.raises(ValueError, match="work must hold"):
        K.TrainingRun(K.Network(params, sizes, ACT[activation], ACT["softmax"]), data,
                      loss=LOSS["cross_entropy"],
                      rule=K.UpdateRule(K.UPDATE_RULES["sgd"]), work=short)
    assert K.workspace_size(sizes, 8, ACT[activation]) == K.workspace_size(sizes, 8) + 8 * 5
