"""mlp.optimizers: the update rules against float64 numpy references and
torch.optim, optimizer state across calls and files, and bad configurations."""
from __future__ import annotations

import platform

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import mlp
from mlp import _kernels as K
from mlp.optimizers import OptimizerState

from conftest import (
    ACT,
    LOSS,
    assert_close,
    flatten,
    kernel_train_steps,
    ref_loss_and_gradients,
    require,
    unflatten,
)
from test_kernels import networks, switch_over_batches

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-9, atol=1e-10)}


# ---------------------------------------------------------------------------
# float64 references, written from torch.optim's documentation
# ---------------------------------------------------------------------------

def _is_weight(sizes):
    """Mask over the flat layout: True for weights, False for biases."""
    parts = []
    for fin, fout in zip(sizes[:-1], sizes[1:]):
        parts += [np.ones(fout * fin, bool), np.zeros(fout, bool)]
    return np.concatenate(parts)


def ref_step(optimizer, params, grad, state, t, weights_mask, lr=None):
    """One step of optimizer on flat float64 params with mean gradient grad;
    state is a dict of float64 buffers, updated in place. Returns new params."""
    lr = optimizer.learning_rate if lr is None else lr
    p = params.astype(np.float64).copy()
    wd = np.where(weights_mask, optimizer.weight_decay, 0.0)
    if optimizer.name == "rmsprop":
        g = grad + wd * p
        alpha = optimizer.alpha
        square_avg = alpha * state["square_avg"] + (1 - alpha) * g * g
        state["square_avg"][...] = square_avg
        if optimizer.centered:
            grad_avg = state["grad_avg"] + (1 - alpha) * (g - state["grad_avg"])
            state["grad_avg"][...] = grad_avg
            avg = np.sqrt(square_avg - grad_avg * grad_avg) + optimizer.eps
        else:
            avg = np.sqrt(square_avg) + optimizer.eps
        if optimizer.momentum == 0:
            return p - lr * g / avg
        buf = optimizer.momentum * state["momentum_buffer"] + g / avg
        state["momentum_buffer"][...] = buf
        return p - lr * buf
    if optimizer.name == "adagrad":
        g = grad + wd * p
        state["sum"][...] = state["sum"] + g * g
        clr = lr / (1 + (t - 1) * optimizer.lr_decay)
        return p - clr * g / (np.sqrt(state["sum"]) + optimizer.eps)
    if isinstance(optimizer, mlp.SGD):
        g = grad + wd * p
        if optimizer.momentum == 0:
            return p - lr * g
        v = optimizer.momentum * state["velocity"] + g
        state["velocity"][...] = v
        return p - lr * (g + optimizer.momentum * v if optimizer.nesterov else v)
    if optimizer.decoupled:
        p = p * (1 - lr * wd)
        g = grad.copy()
    else:
        g = grad + wd * p
    m = optimizer.beta1 * state["exp_avg"] + (1 - optimizer.beta1) * g
    v = optimizer.beta2 * state["exp_avg_sq"] + (1 - optimizer.beta2) * g * g
    state["exp_avg"][...], state["exp_avg_sq"][...] = m, v
    if optimizer.eps_hat:  # the Adam paper's epsilon-hat, as scikit-learn writes it
        step = lr * np.sqrt(1 - optimizer.beta2 ** t) / (1 - optimizer.beta1 ** t)
        return p - step * m / (np.sqrt(v) + optimizer.eps)
    denom = np.sqrt(v) / np.sqrt(1 - optimizer.beta2 ** t) + optimizer.eps
    return p - lr / (1 - optimizer.beta1 ** t) * m / denom


def _rounding_slack(optimizer, params, grad, expected, state, t, weights_mask, dtype):
    """How far the rule's result may move, element by element, when the mean
    gradient is off by its rounding in dtype (the kernel's gradient is a
    sum of products of size about 1): Adam divides by about |g| + eps, so
    where g is no larger than its own rounding error (float32: 1e-7 of the
    terms it was summed from) the step's size and even its direction are
    the rounding's. Elsewhere the slack is far below the tolerance.
    expected: the rule's result from grad; state: the state before it."""
    error = 16 * float(np.finfo(dtype).eps) * max(1.0, float(np.abs(grad).max()))
    moved = [ref_step(optimizer, params, grad + f * error,
                      {k: v.copy() for k, v in state.items()}, t, weights_mask)
             for f in (-1.0, -0.5, 0.5, 1.0)]
    return np.max(np.abs(np.array(moved) - expected), axis=0)


# beta2 stays well above 0: with beta2 = 0, sqrt(v) is |g| of the last step
# alone, and a tiny last gradient under a remembered first moment makes a
# step of lr * m / |g|, where float32's rounding of g is amplified a
# million-fold (a property of the rule, not of the kernel).
optimizers = st.one_of(
    st.builds(lambda lr, mu, nesterov, wd: mlp.SGD(lr, mu, nesterov and mu > 0, wd),
              st.floats(0.01, 1.0), st.sampled_from([0.0, 0.5, 0.9, 0.99]), st.booleans(),
              st.sampled_from([0.0, 1e-3, 0.1])),
    st.builds(lambda lr, b1, b2, eps, wd, decoupled, eps_hat:
              mlp.Adam(lr, b1, b2, eps, wd, decoupled, eps_hat),
              st.floats(1e-4, 0.1), st.sampled_from([0.0, 0.9, 0.5]),
              st.sampled_from([0.999, 0.99, 0.9]), st.sampled_from([1e-8, 1e-3]),
              st.sampled_from([0.0, 1e-2, 0.5]), st.booleans(), st.booleans()),
    # alpha well above 0 for the reason beta2 is.
    st.builds(lambda lr, alpha, eps, wd, mu, centered: mlp.RMSprop(lr, alpha, eps, wd, mu, centered),
              st.floats(1e-4, 0.1), st.sampled_from([0.99, 0.9]), st.sampled_from([1e-8, 1e-3]),
              st.sampled_from([0.0, 1e-2, 0.5]), st.sampled_from([0.0, 0.9]), st.booleans()),
    st.builds(lambda lr, lr_decay, wd, initial, eps: mlp.Adagrad(lr, lr_decay, wd, initial, eps),
              st.floats(1e-3, 0.5), st.sampled_from([0.0, 0.1]), st.sampled_from([0.0, 1e-2, 0.5]),
              st.sampled_from([0.0, 0.1]), st.sampled_from([1e-10, 1e-3])),
)


@SETTINGS
@given(net=networks(), optimizer=optimizers, workers=st.integers(1, 3),
       feature_major=st.booleans(), n_steps=st.integers(1, 4))
# Found by Hypothesis: a hidden bias whose mean gradient (-7e-8) is no larger
# than its float32 rounding, where Adam's first step (lr g / (|g| + eps)) is
# the rounding's; _rounding_slack allows for that.
@example(
    net={"dtype": np.float32, "sizes": [1, 6, 3], "sizes_arr": np.array([1, 6, 3]),
         "hidden": 1, "out": 0, "loss": "mse",
         "flat": np.array([0.5183763, 1.2324272, 0.49565563, -1.9547359, 1.3580338,
                           0.66956186, -0.2684766, 0.29055905, 0.1822862, 0.14706625,
                           0.01421112, 0.2733565, -0.45098418, -0.09976156, -0.2952366,
                           0.36671692, 0.02432472, -0.17909245, -0.4788192, -0.15749744,
                           0.00498605, -0.16877162, 0.792449, 0.61649024, -1.6602411,
                           -1.1567796, -0.10702561, -0.25853777, 0.13082908, 0.13308196,
                           1.0589194, -0.55601037, -0.18880251], dtype=np.float32),
         "x": np.array([[4.085543]], dtype=np.float32),
         "y": np.array([[1.3345954, -0.42081425, 0.5571785]], dtype=np.float32)},
    optimizer=mlp.Adam(0.0625, 0.0, 0.999, 1e-08, 0.0, False),
    workers=1, feature_major=False, n_steps=1)
def test_kernel_steps_match_the_float64_rule(net, optimizer, workers, feature_major, n_steps):
    """Every step, from the kernel's own parameters and state, against the
    reference rule applied to the float64 mean gradient."""
    dtype, sizes = net["dtype"], net["sizes"]
    n = len(net["x"])
    params = net["flat"].copy()
    state = OptimizerState.fresh(optimizer, params.size, dtype)
    mask = _is_weight(sizes)
    for t in range(1, n_steps + 1):
        before = params.astype(np.float64)
        ref_state = {k: v.astype(np.float64) for k, v in state.buffers.items()}
        Ws, bs = unflatten(before, sizes)
        _, dWs, dbs = ref_loss_and_gradients(Ws, bs, net["x"], net["y"], net["hidden"],
                                             net["out"], net["loss"])
        grad = flatten(dWs, dbs) / n
        state_before = {k: v.copy() for k, v in ref_state.items()}
        expected = ref_step(optimizer, before, grad, ref_state, t, mask)
        slack = _rounding_slack(optimizer, before, grad, expected, state_before, t, mask, dtype)
        kernel_sgd = np.zeros(1)
        kernel_train_steps(params, net["sizes_arr"], net["hidden"], net["out"],
                           LOSS[net["loss"]], net["x"], None, np.arange(n, dtype=np.int64), n,
                           optimizer.learning_rate, 0.0,
                           np.empty(K.workspace_size(net["sizes_arr"], n, net["hidden"]), dtype), kernel_sgd,
                           feature_major, workers, targets=net["y"],
                           rule=optimizer.kernel_rule(), state=state.kernel_buffers(),
                           steps_before=t - 1)
        scale = max(1.0, float(np.abs(expected).max()))
        assert_close(params, expected, scale=scale, slack=slack, err_msg=f"step {t}",
                     **TOL[dtype])
        for name, buffer in state.buffers.items():
            assert_close(buffer, ref_state[name], scale=max(1.0, float(np.abs(ref_state[name]).max())),
                         err_msg=f"{name} after step {t}", **TOL[dtype])
            # Continue from the kernel's own state, as the next call would.


def three_kernel_steps_match_the_rule(optimizer, sizes, x, y, workers):
    """Three kernel steps of optimizer on the whole of (x, y), from the
    kernel's own state, each against the reference rule on the float64 mean
    gradient from the same parameters; and the state after each."""
    rng = np.random.default_rng(2)
    batch = len(x)
    Ws = [rng.standard_normal((o, i)) * 0.4 for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [rng.standard_normal(o) * 0.1 for o in sizes[1:]]
    params = flatten(Ws, bs)
    state = OptimizerState.fresh(optimizer, params.size, np.float64)
    mask = _is_weight(sizes)
    sizes_arr = np.asarray(sizes, np.intp)
    for t in range(1, 4):
        before = params.copy()
        ref_state = {k: v.copy() for k, v in state.buffers.items()}
        _, dWs, dbs = ref_loss_and_gradients(*unflatten(before, sizes), x, y, ACT["relu"],
                                             ACT["softmax"], "cross_entropy")
        expected = ref_step(optimizer, before, flatten(dWs, dbs) / batch, ref_state, t, mask)
        kernel_train_steps(params, sizes_arr, ACT["relu"], ACT["softmax"], LOSS["cross_entropy"],
                           x, None, np.arange(batch, dtype=np.int64), batch,
                           optimizer.learning_rate, 0.0,
                           np.empty(K.workspace_size(sizes_arr, batch)), np.zeros(1), False,
                           workers, targets=y, rule=optimizer.kernel_rule(),
                           state=state.kernel_buffers(), steps_before=t - 1)
        assert_close(params, expected, scale=max(1.0, float(np.abs(expected).max())),
                     err_msg=f"step {t}", **TOL[np.float64])
        for name, buffer in state.buffers.items():
            assert_close(buffer, ref_state[name],
                         scale=max(1.0, float(np.abs(ref_state[name]).max())),
                         err_msg=f"{name} after step {t}", **TOL[np.float64])


RULES = [mlp.SGD(0.3, momentum=0.9, nesterov=True, weight_decay=0.01),
         mlp.Adam(0.01, weight_decay=0.1), mlp.AdamW(0.01, weight_decay=0.1),
         mlp.RMSprop(0.01, weight_decay=0.1),
         mlp.RMSprop(0.01, alpha=0.9, momentum=0.9, centered=True, weight_decay=0.01),
         mlp.Adagrad(0.1, lr_decay=0.1, initial_accumulator_value=0.1, weight_decay=0.1)]


@pytest.mark.parametrize("optimizer", RULES)
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("side", [0, 1])
def test_rules_on_both_sides_of_the_samples_split_match_the_float64_rule(optimizer, workers,
                                                                          side):
    """Large batches split samples rather than units between the workers
    (the switch-over depends on the worker count): every rule, just below
    and just above it."""
    batch = switch_over_batches(workers)[side]
    assert K.splits_samples(batch, workers, False) == bool(side)
    rng = np.random.default_rng(2)
    x = rng.random((batch, 12))
    y = np.eye(4)[rng.integers(0, 4, batch)]
    three_kernel_steps_match_the_rule(optimizer, [12, 10, 7, 4], x, y, workers)


@pytest.mark.parametrize("optimizer", RULES)
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("samples_split", [False, True])
def test_rules_on_mostly_zero_inputs_match_the_float64_rule(optimizer, workers, samples_split):
    """The first layer's gradient from the non-zero inputs (in the units
    split, applied where its weights are kept by input for the call; in the
    samples split, transposed into the parameters' layout before the rule):
    every rule. 37 inputs, 21 units: neither a multiple of a vector."""
    batch = switch_over_batches(workers)[1] if samples_split else 40
    assert K.splits_samples(batch, workers, False) == samples_split
    rng = np.random.default_rng(4)
    x = rng.random((batch, 37))
    x[rng.random(x.shape) < 0.8] = 0
    y = np.eye(4)[rng.integers(0, 4, batch)]
    assert K.trains_sparse_input(x, 3, batch, workers, False)
    three_kernel_steps_match_the_rule(optimizer, [37, 21, 7, 4], x, y, workers)


@pytest.mark.parametrize("optimizer", [mlp.SGD(0.2, weight_decay=0.01)] + RULES)
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mostly_zero_inputs_run_split_over_calls_is_the_same_run(optimizer, workers, dtype):
    """In the units split on mostly-zero inputs each worker keeps its
    first-layer weights and their optimizer state by input for a whole call,
    and puts them back at its end: six steps in one call and in calls of 1,
    2 and 3 steps end with the same bits (parameters, state, losses), with
    max-norm and dropout; and within rounding where the first layer is a GEMM."""
    rng = np.random.default_rng(9)
    sizes = [37, 21, 7, 4]
    sizes_arr = np.asarray(sizes, np.intp)
    x = rng.random((300, 37))
    x[rng.random(x.shape) < 0.8] = 0
    x = x.astype(dtype)
    labels = rng.integers(0, 4, 300).astype(np.int64)
    batch = 40
    order = rng.integers(0, 300, 6 * batch).astype(np.int64)
    assert not K.splits_samples(batch, workers, False)
    assert K.trains_sparse_input(x, 3, batch, workers, False)
    flat = (rng.standard_normal(sum(o * (i + 1) for i, o in zip(sizes[:-1], sizes[1:])))
            * 0.4).astype(dtype)

    def run(calls, sparse_input):
        params = flat.copy()
        state = OptimizerState.fresh(optimizer, params.size, dtype)
        losses, done = [], 0
        for steps in calls:
            batch_losses = np.empty(steps)
            kernel_train_steps(params, sizes_arr, ACT["relu"], ACT["softmax"],
                               LOSS["cross_entropy"], x, labels,
                               order[done * batch:(done + steps) * batch], batch,
                               optimizer.learning_rate, 0.0,
                               np.empty(K.workspace_size(sizes_arr, batch), dtype), batch_losses,
                               False, workers, rule=optimizer.kernel_rule(),
                               state=state.kernel_buffers(), steps_before=done, max_norm=1.2,
                               dropout=0.3, input_dropout=0.1, dropout_seed=4,
                               sparse_input=sparse_input)
            losses.extend(batch_losses)
            done += steps
        return [params, *state.buffers.values(), np.asarray(losses)]

    whole = run([6], True)
    for split, together in zip(run([1, 2, 3], True), whole):
        np.testing.assert_array_equal(split, together)
    tolerance = dict(rtol=2e-3, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-12)
    for dense, sparse in zip(run([6], False), whole):
        np.testing.assert_allclose(sparse, dense, **tolerance)


@pytest.mark.parametrize("eps", [1e-8, 1e-3, 1e-35])
@pytest.mark.parametrize("decoupled, eps_hat", [(False, False), (True, False), (False, True)])
def test_float32_adam_rule_at_the_edges(eps, decoupled, eps_hat):
    """The float32 Adam loop (mlp/_updates.h, vectorised): every parameter is
    the float64 rule's to float32 rounding, including zero, subnormal, tiny,
    huge and overflowing gradients, a count that is not a multiple of the
    vector width, and a tiny eps."""
    rng = np.random.default_rng(0)
    n = 203
    grads = rng.standard_normal(n) * 10.0 ** rng.integers(-12, 4, n)
    grads[:7] = 0
    grads[7:12] = [1e-45, 1e-40, -1e-39, 1e-38, 1e-30]
    grads[12:16] = [3e19, -3e19, 1e-19, 1e19]       # g*g overflows float32 in the first two
    params = rng.standard_normal(n).astype(np.float32)
    first = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    second = (rng.random(n) * 1e-6).astype(np.float32)
    second[:4] = 0
    optimizer = mlp.Adam(0.01, 0.9, 0.999, eps, 0.1, decoupled, eps_hat)
    mask = np.ones(n, bool)
    for t in (1, 2, 7):
        g32 = grads.astype(np.float32)
        state = {"exp_avg": first.astype(np.float64), "exp_avg_sq": second.astype(np.float64)}
        with np.errstate(over="ignore", invalid="ignore"):
            expected = ref_step(optimizer, params.astype(np.float64), g32.astype(np.float64),
                                state, t, mask)
        got, m, v = params.copy(), first.copy(), second.copy()
        K.apply_rule(optimizer.kernel_rule(), got, g32, (m, v), 0.01, t)
        finite = np.isfinite(expected)
        np.testing.assert_array_equal(np.isfinite(got), finite.astype(bool))
        # A parameter moves by at most a few lr: its float32 rounding (and the
        # float32 rounding of g, m and v) sets the tolerance.
        np.testing.assert_allclose(got[finite], expected[finite], rtol=2e-6, atol=1e-7)
        with np.errstate(over="ignore"):
            # b1 m + (1 - b1)(grad + wd p) cancels where the terms have
            # opposite signs: float32's rounding of them sets the tolerance.
            np.testing.assert_allclose(m, state["exp_avg"].astype(np.float32), rtol=1e-6,
                                       atol=1e-9)
            np.testing.assert_allclose(v, state["exp_avg_sq"].astype(np.float32), rtol=1e-6)


# ---------------------------------------------------------------------------
# Against torch.optim, step by step on the same model
# ---------------------------------------------------------------------------

TORCH_CASES = [
    (mlp.SGD(0.1), "SGD", dict(lr=0.1)),
    (mlp.SGD(0.1, weight_decay=0.01), "SGD", dict(lr=0.1, weight_decay=0.01)),
    (mlp.SGD(0.1, momentum=0.9), "SGD", dict(lr=0.1, momentum=0.9)),
    (mlp.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3), "SGD",
     dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (mlp.Adam(0.01), "Adam", dict(lr=0.01)),
    (mlp.Adam(0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1), "Adam",
     dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    (mlp.Adam(0.01, weight_decay=0.1, decoupled=True), "AdamW", dict(lr=0.01, weight_decay=0.1)),
    (mlp.AdamW(0.003), "AdamW", dict(lr=0.003)),
    (mlp.RMSprop(0.01), "RMSprop", dict(lr=0.01)),
    (mlp.RMSprop(0.01, momentum=0.9), "RMSprop", dict(lr=0.01, momentum=0.9)),
    (mlp.RMSprop(0.01, centered=True), "RMSprop", dict(lr=0.01, centered=True)),
    (mlp.RMSprop(0.005, alpha=0.9, eps=1e-6, weight_decay=0.1, momentum=0.5, centered=True),
     "RMSprop", dict(lr=0.005, alpha=0.9, eps=1e-6, weight_decay=0.1, momentum=0.5,
                     centered=True)),
    (mlp.RMSprop(0.01, weight_decay=0.1), "RMSprop", dict(lr=0.01, weight_decay=0.1)),
    (mlp.Adagrad(0.1), "Adagrad", dict(lr=0.1)),
    (mlp.Adagrad(0.1, lr_decay=0.2), "Adagrad", dict(lr=0.1, lr_decay=0.2)),
    (mlp.Adagrad(0.1, initial_accumulator_value=0.5, eps=1e-6), "Adagrad",
     dict(lr=0.1, initial_accumulator_value=0.5, eps=1e-6)),
    (mlp.Adagrad(0.05, weight_decay=0.1, lr_decay=0.01), "Adagrad",
     dict(lr=0.05, weight_decay=0.1, lr_decay=0.01)),
]


@pytest.mark.parametrize("optimizer, torch_name, torch_kwargs", TORCH_CASES)
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("mostly_zero", [False, True], ids=["dense", "mostly-zero"])
def test_steps_match_torch_optim(optimizer, torch_name, torch_kwargs, n_threads, mostly_zero):
    """Eight steps, each against torch's on the same batch; mostly-zero
    inputs take the first layer by input (weights and state in panels)."""
    torch = require("torch")
    rng = np.random.default_rng(0)
    X = rng.random((64, 12))
    if mostly_zero:
        X[rng.random(X.shape) < 0.8] = 0
    assert K.trains_sparse_input(X, 3, 8, n_threads, False) == mostly_zero
    y = rng.integers(0, 4, 64)
    model = mlp.Model([12, 10, 8, 4], dtype=np.float64, seed=0)
    layers = [torch.nn.Linear(i, o).double() for i, o in zip(model.layer_sizes[:-1],
                                                              model.layer_sizes[1:])]
    for layer, w, b in zip(layers, model.weights, model.biases):
        layer.weight.data = torch.tensor(w.copy())
        layer.bias.data = torch.tensor(b.copy())
    net = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
    # Weight decay on the weights only, as mlp applies it.
    groups = [{"params": [layer.weight for layer in layers]},
              {"params": [layer.bias for layer in layers], "weight_decay": 0.0}]
    torch_optimizer = getattr(torch.optim, torch_name)(groups, **torch_kwargs)
    for step in range(8):
        rows = np.arange(step * 8, step * 8 + 8)
        mlp.train(model, X[rows], y[rows], epochs=1, batch_size=8, optimizer=optimizer,
                  lr_schedule="constant", sampling="shuffle", progress=False,
                  n_threads=n_threads, seed=0)
        torch_optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.tensor(X[rows])), torch.tensor(y[rows]))
        loss.backward()
        torch_optimizer.step()
        for layer, w, b in zip(layers, model.weights, model.biases):
            np.testing.assert_allclose(w, layer.weight.data.numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(b, layer.bias.data.numpy(), rtol=1e-10, atol=1e-12)
    assert model.optimizer_state.step == 8


@pytest.mark.parametrize("optimizer, torch_name, torch_kwargs",
                         TORCH_CASES[2:6] + [case for case in TORCH_CASES
                                             if case[1] in ("RMSprop", "Adagrad")])
def test_train_on_two_workers_matches_torch_over_an_epoch(optimizer, torch_name, torch_kwargs):
    """train() with workers and a constant rate makes the same steps torch does
    over the same batches (up to rounding)."""
    torch = require("torch")
    rng = np.random.default_rng(1)
    X = rng.random((96, 30))
    y = rng.integers(0, 5, 96)
    model = mlp.Model([30, 40, 5], dtype=np.float64, seed=1)
    layers = [torch.nn.Linear(30, 40).double(), torch.nn.Linear(40, 5).double()]
    for layer, w, b in zip(layers, model.weights, model.biases):
        layer.weight.data = torch.tensor(w.copy())
        layer.bias.data = torch.tensor(b.copy())
    net = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1])
    groups = [{"params": [layer.weight for layer in layers]},
              {"params": [layer.bias for layer in layers], "weight_decay": 0.0}]
    torch_optimizer = getattr(torch.optim, torch_name)(groups, **torch_kwargs)
    orders = []

    class RecordOrder(mlp.Callback):
        def on_epoch_start(self, run):
            orders.append(run.order.copy())

    mlp.train(model, X, y, epochs=1, batch_size=16, optimizer=optimizer,
              lr_schedule="constant", seed=3, n_threads=2, progress=False,
              callbacks=[RecordOrder()])
    for start in range(0, 96, 16):
        rows = orders[0][start:start + 16]
        torch_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.tensor(X[rows])),
                                          torch.tensor(y[rows])).backward()
        torch_optimizer.step()
    for layer, w, b in zip(layers, model.weights, model.biases):
        np.testing.assert_allclose(w, layer.weight.data.numpy(), rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(b, layer.bias.data.numpy(), rtol=1e-9, atol=1e-11)


# ---------------------------------------------------------------------------
# State: continued, restarted, saved
# ---------------------------------------------------------------------------

def _data():
    rng = np.random.default_rng(0)
    return rng.random((120, 6)), rng.integers(0, 3, 120)


@pytest.mark.parametrize("optimizer", [mlp.SGD(0.1), mlp.SGD(0.1, momentum=0.9, nesterov=True),
                                       mlp.Adam(0.01), mlp.AdamW(0.01), mlp.RMSprop(0.01),
                                       mlp.RMSprop(0.01, momentum=0.9, centered=True),
                                       mlp.Adagrad(0.1, lr_decay=0.1,
                                                   initial_accumulator_value=0.2)])
@pytest.mark.parametrize("through_file", [False, True])
def test_a_run_split_in_two_ends_where_one_run_does(optimizer, through_file, tmp_path):
    X, y = _data()
    kwargs = dict(batch_size=16, optimizer=optimizer, lr_schedule="constant", progress=False,
                  dropout=0.2)
    whole = mlp.Model([6, 8, 3], seed=0)
    h_whole = mlp.train(whole, X, y, epochs=4, seed=5, **kwargs)
    split = mlp.Model([6, 8, 3], seed=0)
    h_first = mlp.train(split, X, y, epochs=2, seed=5, **kwargs)
    if through_file:
        split.save(tmp_path / "half.npz")
        split = mlp.Model.load(tmp_path / "half.npz")
    h_second = mlp.train(split, X, y, epochs=2, **kwargs)  # no seed: continues the sampler
    np.testing.assert_array_equal(split._params, whole._params)
    for name, buffer in whole.optimizer_state.buffers.items():
        np.testing.assert_array_equal(split.optimizer_state.buffers[name], buffer)
    assert h_first.steps + h_second.steps == h_whole.steps
    assert h_second.steps[0] == h_first.steps[-1] + 8
    assert split.history.steps == h_whole.steps
    assert split.optimizer_state.step == whole.optimizer_state.step == 32


def test_a_warmup_is_not_repeated_by_a_second_call():
    X, y = _data()
    rates = []

    class Record(mlp.Callback):
        pass

    model = mlp.Model([6, 8, 3], seed=0)
    from mlp import training

    real = training.learning_rates

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        rates.extend(out.tolist())
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "learning_rates", recording)
        mlp.train(model, X, y, iterations=10, batch_size=12, optimizer=mlp.SGD(0.5),
                  lr_schedule="constant", warmup=5, progress=False, seed=0)
        mlp.train(model, X, y, iterations=10, batch_size=12, optimizer=mlp.SGD(0.5),
                  lr_schedule="constant", warmup=5, progress=False)
    assert rates[:5] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert rates[5:] == [0.5] * 15


def test_an_equal_optimizer_continues_and_a_different_one_starts_afresh():
    X, y = _data()
    model = mlp.Model([6, 8, 3], seed=0)
    mlp.train(model, X, y, iterations=5, batch_size=10, optimizer=mlp.Adam(0.01),
              progress=False, seed=0)
    state = model.optimizer_state
    assert state.step == 5 and np.abs(state.buffers["exp_avg_sq"]).sum() > 0
    mlp.train(model, X, y, iterations=3, batch_size=10, optimizer=mlp.Adam(0.01),
              progress=False)
    assert model.optimizer_state is state and state.step == 8
    mlp.train(model, X, y, iterations=2, batch_size=10,
              optimizer=mlp.SGD(0.1, momentum=0.5), progress=False)
    assert model.optimizer_state.step == 2
    assert set(model.optimizer_state.buffers) == {"velocity"}
    mlp.training_step(model, X[:4], y[:4], optimizer=mlp.SGD(0.1, momentum=0.5))
    assert model.optimizer_state.step == 3


@pytest.mark.parametrize("optimizer, buffers", [
    (mlp.Adam(0.01, weight_decay=0.1, decoupled=True), ("exp_avg", "exp_avg_sq")),
    (mlp.RMSprop(0.01, momentum=0.9, centered=True, weight_decay=0.1),
     ("square_avg", "momentum_buffer", "grad_avg")),
    (mlp.Adagrad(0.1, lr_decay=0.1, initial_accumulator_value=0.3), ("sum",)),
])
def test_save_and_load_keep_the_optimizer_state_and_history(tmp_path, optimizer, buffers):
    X, y = _data()
    model = mlp.Model([6, 8, 3], seed=0)
    mlp.train(model, X, y, epochs=2, optimizer=optimizer, progress=False, seed=0)
    model.save(tmp_path / "m.npz")
    loaded = mlp.Model.load(tmp_path / "m.npz")
    assert loaded.optimizer_state.optimizer == model.optimizer_state.optimizer == optimizer
    assert loaded.optimizer_state.step == model.optimizer_state.step
    assert optimizer.state_buffers == buffers
    assert loaded.optimizer_state.kernel_buffers()[0] is loaded.optimizer_state.buffers[buffers[0]]
    assert sorted(loaded.optimizer_state.buffers) == sorted(buffers)
    for name in buffers:
        assert np.any(model.optimizer_state.buffers[name] != 0), name
        np.testing.assert_array_equal(loaded.optimizer_state.buffers[name],
                                      model.optimizer_state.buffers[name])
    assert loaded.history == model.history


# ---------------------------------------------------------------------------
# Bad configurations
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("build, exc, match", [
    (lambda: mlp.SGD(momentum=-0.1), ValueError, "momentum"),
    (lambda: mlp.SGD(momentum=1.0), ValueError, "momentum"),
    (lambda: mlp.SGD(momentum="0.9"), TypeError, "momentum"),
    (lambda: mlp.SGD(nesterov=True), ValueError, "nesterov"),
    (lambda: mlp.SGD(nesterov=1), TypeError, "nesterov"),
    (lambda: mlp.SGD(learning_rate=0), ValueError, "learning_rate"),
    (lambda: mlp.SGD(learning_rate=float("nan")), ValueError, "learning_rate"),
    (lambda: mlp.SGD(weight_decay=-1e-4), ValueError, "weight_decay"),
    (lambda: mlp.SGD(learning_rate=2.0, weight_decay=0.6), ValueError, "weight_decay"),
    (lambda: mlp.Adam(beta1=1.0), ValueError, "beta1"),
    (lambda: mlp.Adam(beta1=-0.1), ValueError, "beta1"),
    (lambda: mlp.Adam(beta2=1.5), ValueError, "beta2"),
    (lambda: mlp.Adam(beta2=float("nan")), ValueError, "beta2"),
    (lambda: mlp.Adam(eps=0), ValueError, "eps"),
    (lambda: mlp.Adam(decoupled="yes"), TypeError, "decoupled"),
    (lambda: mlp.RMSprop(alpha=1.0), ValueError, "alpha"),
    (lambda: mlp.RMSprop(alpha=-0.1), ValueError, "alpha"),
    (lambda: mlp.RMSprop(eps=0), ValueError, "eps"),
    (lambda: mlp.RMSprop(momentum=1.0), ValueError, "momentum"),
    (lambda: mlp.RMSprop(weight_decay=-1.0), ValueError, "weight_decay"),
    (lambda: mlp.RMSprop(centered=1), TypeError, "centered"),
    (lambda: mlp.RMSprop(learning_rate=0), ValueError, "learning_rate"),
    (lambda: mlp.Adagrad(lr_decay=-0.1), ValueError, "lr_decay"),
    (lambda: mlp.Adagrad(initial_accumulator_value=-1.0), ValueError,
     "initial_accumulator_value"),
    (lambda: mlp.Adagrad(initial_accumulator_value=float("inf")), ValueError,
     "initial_accumulator_value"),
    (lambda: mlp.Adagrad(eps=0), ValueError, "eps"),
    (lambda: mlp.Adagrad(weight_decay="0.1"), TypeError, "weight_decay"),
])
def test_bad_optimizer_configurations(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


@pytest.mark.parametrize("optimizer", [mlp.Adam(eps=1e-320), mlp.RMSprop(eps=1e-320),
                                       mlp.Adagrad(eps=1e-320)])
def test_an_eps_that_is_zero_in_the_model_s_type_is_refused_naming_the_optimizer(optimizer):
    X, y = _data()
    with pytest.raises(ValueError, match=f"eps 1e-320 is 0 in float32, and "
                                         f"{type(optimizer).__name__} would divide by zero"):
        mlp.training_step(mlp.Model([6, 8, 3], seed=0), X[:4], y[:4], optimizer=optimizer)


def test_optimizers_are_immutable_and_comparable():
    adam = mlp.Adam(0.01)
    with pytest.raises(AttributeError):
        adam.learning_rate = 0.1
    assert adam == mlp.Adam(0.01) and adam != mlp.Adam(0.02) and adam != mlp.SGD(0.01)
    assert hash(adam) == hash(mlp.Adam(0.01))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(optimizer=mlp.SGD(0.1), learning_rate=0.1), ValueError, "learning_rate"),
    (dict(optimizer=mlp.Adam(), weight_decay=0.1), ValueError, "weight_decay"),
    (dict(optimizer="adam"), TypeError, "optimizer"),
    (dict(dropout=1.0), ValueError, "dropout"),
    (dict(dropout=-0.1), ValueError, "dropout"),
    (dict(input_dropout=1.5), ValueError, "input_dropout"),
    (dict(max_norm=0.0), ValueError, "max_norm"),
    (dict(lr_schedule=lambda step, total: float("nan")), ValueError, "lr_schedule"),
    (dict(lr_schedule=lambda step, total: -1.0), ValueError, "lr_schedule"),
    (dict(lr_schedule=lambda step, total: "fast"), ValueError, "lr_schedule"),
    (dict(warmup=-1), ValueError, "warmup"),
    (dict(warmup=2.5), ValueError, "warmup"),
    (dict(warmup="10"), TypeError, "warmup"),
])
def test_train_refuses_bad_optimizer_arguments(kwargs, exc, match):
    X, y = _data()
    model = mlp.Model([6, 8, 3], seed=0)
    before = model._params.copy()
    with pytest.raises(exc, match=match):
        mlp.train(model, X, y, iterations=3, progress=False, **kwargs)
    np.testing.assert_array_equal(model._params, before)


# ---------------------------------------------------------------------------
# Subnormal state is flushed to zero (mlp/_updates.h)
# ---------------------------------------------------------------------------

# The flush uses x86's MXCSR (mlp/_updates.h); elsewhere the rules keep IEEE
# subnormals.
x86_only = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                              reason="subnormals are flushed on x86 only")


def _subnormal_count(values):
    values = np.asarray(values)
    return int(np.sum((values != 0) & (np.abs(values) < np.finfo(values.dtype).tiny)))


@x86_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_rule_flushes_a_subnormal_moment_and_moves_no_weight(dtype):
    """A first moment decayed into the subnormal range reads zero and
    stays zero, the weight is exactly what IEEE arithmetic gives (no move),
    and the calling thread's arithmetic keeps its subnormals afterwards."""
    tiny = np.finfo(dtype).tiny
    params = np.array([0.5, -0.25, 1e-3, 2.0], dtype)
    first = np.array([tiny / 4, -tiny / 1024, tiny * 8, 0], dtype)
    second = np.array([1e-6, 1e-8, 1e-10, 0], dtype)
    grads = np.array([0, 0, 0, tiny / 2], dtype)
    got = params.copy()
    K.apply_rule(mlp.Adam(1e-3).kernel_rule(), got, grads, (first, second), 1e-3, 10)
    np.testing.assert_array_equal(first[[0, 1, 3]], 0)
    assert first[2] == dtype(0.9) * dtype(tiny * 8)
    np.testing.assert_array_equal(got, params)
    assert _subnormal_count(first) == 0 and _subnormal_count(second) == 0
    assert np.multiply(dtype(tiny), dtype(0.5)) == tiny / 2 != 0


@x86_only
@pytest.mark.parametrize("optimizer", [mlp.SGD(0.1, momentum=0.9),
                                       mlp.SGD(0.1, momentum=0.9, nesterov=True),
                                       mlp.Adam(0.01), mlp.RMSprop(0.001, momentum=0.9)],
                         ids=["momentum", "nesterov", "adam", "rmsprop"])
@pytest.mark.parametrize("mostly_zero", [False, True])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_state_of_an_input_gone_blank_decays_to_zero_not_to_subnormals(optimizer, mostly_zero,
                                                                        n_threads):
    """A velocity (first moment) whose gradient stays zero decays by 0.9 a
    step; under IEEE rounding it would stop at the smallest subnormal, 0.9 of
    it rounding back up. The rules flush it to zero, on the dense and the
    mostly-zero (weights by input) paths, and the weights from that input
    stop moving."""
    rng = np.random.default_rng(0)
    n, d = 256, 64
    X = rng.random((n, d)).astype(np.float32)
    if mostly_zero:
        X[rng.random((n, d)) < 0.85] = 0
    X[:, 0] = 1.0
    y = rng.integers(0, 3, n)
    model = mlp.Model([d, 8, 3], seed=0)
    kwargs = dict(batch_size=16, optimizer=optimizer, progress=False, n_threads=n_threads)
    mlp.train(model, X, y, iterations=20, seed=1, **kwargs)
    X[:, 0] = 0
    assert K.trains_sparse_input(X, 2, 16, n_threads, False) == mostly_zero
    mlp.train(model, X, y, iterations=1100, seed=2, **kwargs)
    before = model.weights[0][:, 0].copy()
    mlp.train(model, X, y, iterations=5, seed=3, **kwargs)
    np.testing.assert_array_equal(model.weights[0][:, 0], before)
    buffers = model.optimizer_state.buffers
    velocity = buffers[{"sgd": "velocity", "adam": "exp_avg",
                        "rmsprop": "momentum_buffer"}[optimizer.name]]
    weights_state = mlp.model._layer_views(velocity, model.layer_sizes)[0][0]
    np.testing.assert_array_equal(weights_state[:, 0], 0)
    for name, buffer in buffers.items():
        assert _subnormal_count(buffer) == 0, name


@x86_only
@pytest.mark.parametrize("optimizer", [mlp.SGD(0.1, momentum=0.9), mlp.Adam(0.01)],
                         ids=["momentum", "adam"])
def test_training_leaves_the_workers_arithmetic_ieee(optimizer):
    """The flush is for the rules only: after training on 2 threads, the
    same worker threads compute a subnormal output as IEEE arithmetic does,
    not as zero."""
    rng = np.random.default_rng(0)
    X = rng.random((256, 64)).astype(np.float32)
    X[rng.random(X.shape) < 0.85] = 0
    model = mlp.Model([64, 8, 3], seed=0)
    mlp.train(model, X, rng.integers(0, 3, 256), iterations=20, batch_size=64,
              optimizer=optimizer, progress=False, n_threads=2, seed=1)
    probe = mlp.Model([2, 2, 1], output="identity", seed=0)
    probe.weights[0][:] = [[1e-20, 0], [0, 0]]
    probe.biases[0][:] = 0
    probe.weights[1][:] = [[1, 0]]
    probe.biases[1][:] = 0
    rows = np.tile(np.array([[1e-20, 0]], np.float32), (512, 1))
    expected = np.float32(1e-20) * np.float32(1e-20)
    assert 0 < expected < np.finfo(np.float32).tiny
    np.testing.assert_array_equal(probe.forward(rows, n_threads=2), expected)
