"""mlp.training_step, mlp.train and mlp.evaluate."""
from __future__ import annotations

import itertools
import threading
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlp
import mlp.training as training_module
from mlp.optimizers import OptimizerState
from mlp.serialization import read_model_file, write_model_file

from conftest import ACT, DTYPES, LOSS, KernelSpy, assert_close, kernel_train_steps, one_hot

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _blobs(n_per_class, centres, spread, seed):
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + spread * rng.standard_normal((n_per_class, len(c))) for c in centres])
    y = np.repeat(np.arange(len(centres)), n_per_class)
    perm = rng.permutation(len(y))
    return X[perm], y[perm]


# ---------------------------------------------------------------------------
# training_step
# ---------------------------------------------------------------------------

@SETTINGS
@given(dtype=st.sampled_from(DTYPES),
       case=st.sampled_from([("sigmoid", "sigmoid", "mse"), ("tanh", "softmax", "mse"),
                             ("relu", "softmax", "cross_entropy"),
                             ("sigmoid", "softmax", "cross_entropy")]),
       n=st.integers(1, 7), lr=st.floats(0.01, 5.0), seed=st.integers(0, 2**31))
def test_training_step_is_sgd_on_model_gradients(dtype, case, n, lr, seed):
    activation, output, loss = case
    model = mlp.Model([4, 5, 3], activation=activation, output=output, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    Y = rng.uniform(0, 1, (n, 3))
    before = [p.copy() for p in model.weights + model.biases]
    expected_loss = model.loss(X, Y, loss)
    gW, gb = model.gradients(X, Y, loss)
    returned = mlp.training_step(model, X, Y, lr, loss)
    # The loss before the step. Small batches run feature-major, which sums in
    # another order than model.loss: equal to rounding, not bit for bit.
    rel = 1e-5 if dtype == np.float32 else 1e-12
    assert type(returned) is float and returned == pytest.approx(expected_loss, rel=rel, abs=1e-30)
    eps = np.finfo(dtype).eps
    step = lr / n
    for p_new, p_old, g in zip(model.weights + model.biases, before, gW + gb):
        expected = p_old.astype(np.float64) - step * g.astype(np.float64)
        # Only the rounding of the fused update differs (kernel computes
        # p + (-lr/n) * sum in one GEMM, with lr/n rounded to the dtype).
        scale = float(np.abs(p_old).max() + step * n * np.abs(g).max())
        assert_close(p_new, expected, rtol=64 * eps, atol=64 * eps, scale=scale)


def test_training_step_labels_equal_one_hot(dtype):
    a = mlp.Model([4, 6, 3], output="softmax", dtype=dtype, seed=0)
    b = a.copy()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 4))
    labels = rng.integers(0, 3, 8)
    for loss in ("mse", "cross_entropy"):
        la = mlp.training_step(a, X, labels, 0.5, loss)
        lb = mlp.training_step(b, X, one_hot(labels, 3), 0.5, loss)
        assert la == lb
        np.testing.assert_array_equal(a._params, b._params)
    c = a.copy()
    mlp.training_step(a, X, labels.tolist(), 0.5)
    mlp.training_step(c, X, labels.astype(np.float64), 0.5)  # whole-number floats are labels
    np.testing.assert_array_equal(a._params, c._params)


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(learning_rate=0.0), ValueError, "learning_rate"),
    (dict(learning_rate=-1.0), ValueError, "learning_rate"),
    (dict(learning_rate=float("nan")), ValueError, "learning_rate"),
    (dict(learning_rate=float("inf")), ValueError, "learning_rate"),
    (dict(learning_rate="1"), TypeError, "learning_rate"),
    (dict(learning_rate=None), ValueError, "learning_rate"),
    (dict(loss="bogus"), ValueError, "loss"),
    (dict(loss="cross_entropy"), ValueError, "cross_entropy"),
    (dict(Y=np.array([0, 1, 2])), ValueError, "Y"),  # label out of range for 2 outputs
    (dict(Y=np.array([0, -1, 1])), ValueError, "Y"),
    (dict(Y=np.array([0.5, 1, 0])), TypeError, "Y"),
    (dict(Y=np.array([0, 1])), ValueError, "Y"),
    (dict(Y=np.zeros((3, 3))), ValueError, "Y"),
    (dict(Y=np.full((3, 2), np.nan)), ValueError, "Y"),
    (dict(X=np.zeros((3, 5))), ValueError, "X"),
    (dict(X=np.full((3, 4), np.inf)), ValueError, "X"),
    (dict(X=np.zeros(4)), ValueError, "X"),
    (dict(model="not a model"), TypeError, "model"),
])
def test_training_step_bad_arguments(kwargs, exc, name):
    model = mlp.Model([4, 2], output="sigmoid", seed=0)
    args = dict(model=model, X=np.zeros((3, 4)), Y=np.zeros((3, 2)), learning_rate=1.0, loss="mse")
    args.update(kwargs)
    before = model._params.copy()
    with pytest.raises(exc, match=name):
        mlp.training_step(**args)
    np.testing.assert_array_equal(model._params, before)


# ---------------------------------------------------------------------------
# train: determinism, step counts, sampling
# ---------------------------------------------------------------------------

def test_train_is_deterministic_for_a_seed(dtype):
    X, y = _blobs(20, [(0, 0), (2, 2), (0, 2)], 0.5, seed=0)
    runs = []
    for seed in (7, 7, 8):
        model = mlp.Model([2, 5, 3], dtype=dtype, seed=1)
        h = mlp.train(model, X, y, iterations=25, batch_size=4, learning_rate=1.0, seed=seed,
                      progress=False)
        runs.append((model._params.copy(), h.loss))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert not np.array_equal(runs[0][0], runs[2][0])


@pytest.mark.parametrize("k", [1, 7, 12, 13, 450])
def test_replacement_does_exactly_k_steps(k):
    X, y = _blobs(6, [(0, 0), (1, 1)], 0.3, seed=0)  # 12 samples, batch 4: 3 steps per epoch
    model = mlp.Model([2, 3, 2], seed=0)
    h = mlp.train(model, X, y, iterations=k, batch_size=4, seed=0, progress=False)
    assert h.steps[-1] == k
    assert h.steps == sorted(h.steps) and len(h.steps) == -(-k // 3)
    assert h.steps[:-1] == list(range(3, 3 * len(h.steps) - 2, 3))  # one interval per epoch
    assert len(h.loss) == len(h.time) == len(h.steps)
    assert h.val_accuracy == []


def test_train_epochs_step_count_with_short_last_batch():
    X, y = _blobs(5, [(0, 0), (1, 1)], 0.3, seed=0)  # 10 samples, batch 3: 4 steps per epoch
    h = mlp.train(mlp.Model([2, 2], seed=0), X, y, epochs=3, batch_size=3, sampling="shuffle",
                  seed=0, progress=False)
    assert h.steps == [4, 8, 12]


@pytest.mark.parametrize("seconds_per_call", [None, 1e-9], ids=["default", "calls-cut-short"])
@pytest.mark.parametrize("n,batch_size", [(10, 3), (7, 7), (5, 1), (4, 10)])
def test_shuffle_visits_every_sample_once_per_epoch(monkeypatch, n, batch_size,
                                                    seconds_per_call):
    """Also when every compiled call stops at its time limit after one step,
    as on a busy machine: the next call starts where it stopped."""
    if seconds_per_call is not None:
        monkeypatch.setattr(training_module, "_SECONDS_PER_CALL", seconds_per_call)
    spy = KernelSpy()
    monkeypatch.setattr(training_module, "_kernels", spy)
    X, y = np.random.default_rng(0).standard_normal((n, 2)), np.arange(n) % 2
    epochs = 4
    h = mlp.train(mlp.Model([2, 2], seed=0), X, y, epochs=epochs, batch_size=batch_size,
                  sampling="shuffle", seed=3, progress=False)
    seen = np.concatenate(spy.orders)
    assert len(seen) == epochs * n
    per_epoch = seen.reshape(epochs, n)
    for order in per_epoch:
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
    if n > 4:
        assert len({tuple(o) for o in per_epoch}) > 1, "same order every epoch"
    assert h.steps[-1] == epochs * -(-n // batch_size)


def test_replacement_indices_are_in_range_and_count(monkeypatch):
    spy = KernelSpy()
    monkeypatch.setattr(training_module, "_kernels", spy)
    X, y = np.random.default_rng(0).standard_normal((9, 2)), np.arange(9) % 2
    mlp.train(mlp.Model([2, 2], seed=0), X, y, iterations=10, batch_size=4, seed=0,
              sampling="replacement", progress=False)
    seen = np.concatenate(spy.orders)
    assert len(seen) == 10 * 4 and seen.min() >= 0 and seen.max() < 9
    assert len(np.unique(seen)) < len(seen)  # with replacement: 40 draws from 9 repeat


def test_shuffle_equals_sequential_training_steps_over_a_permutation():
    """Black box: 3 samples, batch 2, one epoch = steps on {a, b} then {c}. The
    result must match such a sequence for some permutation (a, b, c), and no
    sequence that repeats or skips a sample."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 2)) * 2
    y = np.array([0, 1, 1])
    base = mlp.Model([2, 3, 2], activation="tanh", dtype=np.float64, seed=2)
    trained = base.copy()
    mlp.train(trained, X, y, epochs=1, batch_size=2, learning_rate=1.5, sampling="shuffle",
              seed=4, progress=False)
    matches = []
    for a, b, c in itertools.product(range(3), repeat=3):
        m = base.copy()
        mlp.training_step(m, X[[a, b]], y[[a, b]], 1.5)
        mlp.training_step(m, X[[c]], y[[c]], 1.5)
        if np.allclose(m._params, trained._params, rtol=1e-12, atol=1e-14):
            matches.append((a, b, c))
    assert matches, "train(shuffle) matches no sequence of two steps"
    assert all(sorted(mt) == [0, 1, 2] for mt in matches), matches


# ---------------------------------------------------------------------------
# train: learning
# ---------------------------------------------------------------------------

def test_train_learns_four_blobs_softmax_cross_entropy():
    X, y = _blobs(100, [(0, 0), (3, 0), (0, 3), (3, 3)], 0.5, seed=0)
    Xv, yv = _blobs(50, [(0, 0), (3, 0), (0, 3), (3, 3)], 0.5, seed=1)
    model = mlp.Model([2, 16, 4], activation="tanh", output="softmax", init="xavier", seed=0)
    before = model.loss(X, one_hot(y, 4), "cross_entropy")
    h = mlp.train(model, X, y, epochs=20, batch_size=10, learning_rate=0.5, loss="cross_entropy",
                  sampling="shuffle", seed=0, validation=(Xv, yv), progress=False)
    after = model.loss(X, one_hot(y, 4), "cross_entropy")
    assert after < 0.2 * before
    assert h.loss[-1] < h.loss[0]
    assert mlp.evaluate(model, Xv, yv).accuracy > 0.95
    assert len(h.val_accuracy) == len(h.steps) == 20
    assert all(0 <= a <= 1 for a in h.val_accuracy)
    # The last recorded validation accuracy is that of the final model.
    assert h.val_accuracy[-1] == mlp.evaluate(model, Xv, yv).accuracy
    assert h.time == sorted(h.time) and h.time[0] >= 0


def test_train_learns_two_blobs_with_notebook_defaults(dtype):
    X, y = _blobs(100, [(-1, -1), (1, 1)], 0.4, seed=0)
    model = mlp.Model([2, 8, 2], activation="sigmoid", output="sigmoid", init="normal",
                      dtype=dtype, seed=0)
    h = mlp.train(model, X, y, iterations=300, batch_size=30, learning_rate=2.0,
                  sampling="replacement", seed=0, progress=False)
    assert h.loss[-1] < h.loss[0]
    result = mlp.evaluate(model, X, y)
    assert result.accuracy > 0.97


def test_patience_stops_early_and_restores_best_parameters():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 2))
    y = (X[:, 0] + 0.8 * rng.standard_normal(60) > 0).astype(int)
    Xv = rng.standard_normal((40, 2))
    yv = (Xv[:, 0] + 0.8 * rng.standard_normal(40) > 0).astype(int)
    kwargs = dict(batch_size=5, learning_rate=8.0, seed=0, progress=False)  # noisy on purpose
    model = mlp.Model([2, 4, 2], seed=0)
    h = mlp.train(model, X, y, epochs=30, validation=(Xv, yv), patience=3, **kwargs)
    assert h.stopped_early
    assert h.steps[-1] < 30 * 12
    best = int(np.argmax(h.val_accuracy))  # first best
    assert h.best_step == h.steps[best] < h.steps[-1]
    assert len(h.val_accuracy) - 1 - best == 3  # stopped after `patience` stale intervals
    assert mlp.evaluate(model, Xv, yv).accuracy == max(h.val_accuracy)
    # The same run cut at best_step reproduces the restored parameters.
    replay = mlp.Model([2, 4, 2], seed=0)
    mlp.train(replay, X, y, epochs=h.best_step // 12, **kwargs)
    np.testing.assert_array_equal(model._params, replay._params)


def test_evaluate_counts(dtype):
    model = mlp.Model([2, 2], output="softmax", dtype=dtype, seed=0)
    model.weights[0][...] = [[1, 0], [0, 1]]
    model.biases[0][...] = 0
    X = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [5.0, 4.0]])
    y = np.array([0, 0, 0, 1, 1])  # predictions are 0, 1, 0, 1, 0
    result = mlp.evaluate(model, X, y)
    assert isinstance(result, mlp.Evaluation)
    assert result.correct == 3 and type(result.correct) is int
    assert result.accuracy == pytest.approx(0.6)
    accuracy, correct = result
    assert (accuracy, correct) == (result.accuracy, result.correct)


@pytest.mark.parametrize("X,y,exc,name", [
    (np.zeros((3, 2)), np.array([0, 1]), ValueError, "y"),
    (np.zeros((3, 2)), np.array([0, 1, 2]), ValueError, "y"),
    (np.zeros((3, 2)), np.array([0.5, 1, 0]), TypeError, "y"),
    (np.zeros((3, 2)), np.zeros((3, 2)), ValueError, "y"),
    (np.zeros((3, 3)), np.array([0, 1, 0]), ValueError, "X"),
    (np.full((3, 2), np.nan), np.array([0, 1, 0]), ValueError, "X"),
])
def test_evaluate_bad_arguments(X, y, exc, name):
    with pytest.raises(exc, match=name):
        mlp.evaluate(mlp.Model([2, 2], seed=0), X, y)


# ---------------------------------------------------------------------------
# train: argument checking
# ---------------------------------------------------------------------------

_X = np.random.default_rng(0).standard_normal((6, 3))
_y = np.array([0, 1, 1, 0, 1, 0])


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(iterations=5, epochs=1), ValueError, "iterations"),
    (dict(iterations=0), ValueError, "iterations"),
    (dict(iterations=2.5), TypeError, "iterations"),
    (dict(iterations=None, epochs=-1), ValueError, "epochs"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=-4), ValueError, "batch_size"),
    (dict(batch_size=2.0), TypeError, "batch_size"),
    (dict(learning_rate=-0.1), ValueError, "learning_rate"),
    (dict(learning_rate=0), ValueError, "learning_rate"),
    (dict(learning_rate=float("nan")), ValueError, "learning_rate"),
    (dict(learning_rate=float("inf")), ValueError, "learning_rate"),
    (dict(learning_rate="2"), TypeError, "learning_rate"),
    (dict(y=np.array([0, 1, 2, 0, 1, 0])), ValueError, "y"),
    (dict(y=np.array([0, 1, -1, 0, 1, 0])), ValueError, "y"),
    (dict(y=np.array([0, 1, 0.5, 0, 1, 0])), TypeError, "y"),
    (dict(y=np.array([0, 1, np.nan, 0, 1, 0])), TypeError, "y"),
    (dict(y=np.array([True, False] * 3)), TypeError, "y"),
    (dict(y=np.array([0, 1, 1])), ValueError, "y"),
    (dict(y=one_hot(_y, 3)), ValueError, "y"),
    (dict(y=one_hot(_y, 2) * 2, loss="cross_entropy"), ValueError, "y"),
    (dict(y=np.array(["a"] * 6)), TypeError, "y"),
    (dict(X=np.zeros((6, 4))), ValueError, "X"),
    (dict(X=np.full((6, 3), np.inf)), ValueError, "X"),
    (dict(sampling="bogus"), ValueError, "sampling"),
    (dict(sampling=None), TypeError, "sampling"),
    (dict(loss="bogus"), ValueError, "loss"),
    (dict(loss="cross_entropy"), ValueError, "cross_entropy"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(validation=_X), TypeError, "validation"),
    (dict(validation=(np.zeros((2, 4)), np.array([0, 1]))), ValueError, r"validation\[0\]"),
    (dict(validation=(np.zeros((2, 3)), np.array([0, 5]))), ValueError, r"validation\[1\]"),
    (dict(patience=2), ValueError, "patience"),
    (dict(patience=0, validation=(_X, _y)), ValueError, "patience"),
    (dict(n_threads=0), ValueError, "n_threads"),
    (dict(model=object()), TypeError, "model"),
])
def test_train_bad_arguments(kwargs, exc, name):
    model = mlp.Model([3, 2], output="sigmoid", seed=0)
    if kwargs.get("loss") == "cross_entropy" and "y" in kwargs:
        model = mlp.Model([3, 2], seed=0)
    args = dict(model=model, X=_X, y=_y, iterations=5, progress=False)
    args.update(kwargs)
    before = model._params.copy()
    with pytest.raises(exc, match=name):
        mlp.train(args.pop("model"), args.pop("X"), args.pop("y"), **args)
    np.testing.assert_array_equal(model._params, before)


# ---------------------------------------------------------------------------
# Divergence
# ---------------------------------------------------------------------------

# Inputs of 1e6 to 1e10 make every first-layer gradient huge, so one step at
# these rates overflows the parameters to inf/NaN on any machine (no rounding
# decides it), while that step's loss, computed before the update, is finite.
# Only the check of the parameters themselves can then see the divergence.
OVERFLOWING = [(np.float32, 1e38, 1e6), (np.float64, 1e300, 1e10)]


def _overflow_data(scale, n=30, seed=0):
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal((n, 4)), rng.integers(0, 3, n)


class _AtCall(mlp.Callback):
    """Records the parameters each compiled call left; at call number `call`,
    with poison=True makes the first weight NaN as a diverged step would (after
    that call's loss was summed, so the loss stays finite), then raises `then`
    if given."""

    def __init__(self, call, *, poison=True, then=None):
        self.call, self.poison, self.then, self.seen = call, poison, then, []

    def on_steps(self, run, steps, loss_sum, samples):
        self.seen.append(run.model._params.copy())
        if len(self.seen) == self.call:
            if self.poison:
                run.model._params[0] = np.nan
            if self.then is not None:
                raise self.then


@pytest.mark.parametrize("dtype,lr,scale", OVERFLOWING)
def test_an_epoch_that_overflows_the_parameters_raises_and_restores(dtype, lr, scale):
    X, y = _overflow_data(scale)
    model = mlp.Model([4, 5, 3], dtype=dtype, seed=0)
    start = model._params.copy()
    # One step in the one epoch: its loss (before the step) is finite.
    with pytest.raises(FloatingPointError, match="training diverged"):
        mlp.train(model, X, y, epochs=1, batch_size=len(X), learning_rate=lr, progress=False)
    np.testing.assert_array_equal(model._params, start)
    assert model.optimizer_state is None and len(model.history.steps) == 0


def test_non_finite_parameters_after_a_finite_loss_end_the_run_at_the_last_good_epoch():
    # The divergence a ReLU network can hide: non-finite weights whose epoch
    # loss is finite. One step an epoch, the second step's parameters poisoned.
    X, y = _blobs(10, [(0, 0), (2, 2), (0, 2)], 0.5, seed=0)
    model = mlp.Model([2, 4, 3], seed=0)
    poison = _AtCall(2)
    with pytest.raises(FloatingPointError, match="keeps its parameters from step 1"):
        mlp.train(model, X, y, epochs=3, batch_size=len(X), optimizer=mlp.SGD(0.1, momentum=0.9),
                  progress=False, callbacks=[poison])
    np.testing.assert_array_equal(model._params, poison.seen[0])  # the end of epoch 1
    assert model.optimizer_state is None
    assert model.history.steps == [1] and np.isfinite(model.history.loss).all()


def test_an_interrupt_after_non_finite_parameters_restores_the_last_good_epoch():
    X, y = _blobs(10, [(0, 0), (2, 2), (0, 2)], 0.5, seed=0)
    model = mlp.Model([2, 4, 3], seed=0)
    poison = _AtCall(3, then=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        mlp.train(model, X, y, epochs=5, batch_size=len(X), optimizer=mlp.SGD(0.1, momentum=0.9),
                  progress=False, callbacks=[poison])
    np.testing.assert_array_equal(model._params, poison.seen[1])  # the end of epoch 2
    assert model.optimizer_state is None


def test_ctrl_c_after_non_finite_parameters_writes_no_checkpoint_and_restores(tmp_path):
    """SIGINT is handled between compiled calls: the checkpoint written then
    must not hold the non-finite parameters, and the model keeps finite ones."""
    import os
    import signal

    X, y = _blobs(10, [(0, 0), (2, 2), (0, 2)], 0.5, seed=0)
    model = mlp.Model([2, 4, 3], seed=0)
    poison = _AtCall(2)

    class _SigintAfterPoison(mlp.Callback):
        def on_steps(self, run, steps, loss_sum, samples):
            if len(poison.seen) == 2:
                os.kill(os.getpid(), signal.SIGINT)

    checkpoint = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        mlp.train(model, X, y, epochs=5, batch_size=len(X), learning_rate=0.1, progress=False,
                  callbacks=[poison, _SigintAfterPoison()], checkpoint=checkpoint,
                  checkpoint_every=1e9)
    assert not checkpoint.exists()
    np.testing.assert_array_equal(model._params, poison.seen[0])


@pytest.mark.parametrize("optimizer", [None, mlp.SGD(1e30, momentum=0.9), mlp.Adam(1e30)])
def test_a_diverged_run_leaves_a_model_that_saves_loads_and_trains_on(tmp_path, optimizer):
    # The diverged epoch's NaN loss stayed in the History, which save wrote and
    # load refused; momentum's NaN velocities stayed in the optimizer state.
    X, y = _blobs(40, [(0, 0), (2, 2), (0, 2)], 0.5, seed=0)
    model = mlp.Model([2, 8, 3], seed=0)
    mlp.train(model, X, y, epochs=2, batch_size=8, progress=False, optimizer=mlp.SGD(0.1),
              validation=(X, y))
    kwargs = dict(learning_rate=1e30) if optimizer is None else dict(optimizer=optimizer)
    with pytest.raises(FloatingPointError, match="optimizer starts afresh"):
        mlp.train(model, X, y, epochs=3, batch_size=8, progress=False, validation=(X, y),
                  **kwargs)
    assert model.optimizer_state is None
    assert all(np.isfinite(model.history.loss)) and len(model.history.steps) == 2
    assert len(model.history.val_accuracy) == 2
    model.save(tmp_path / "m.npz")
    loaded = mlp.Model.load(tmp_path / "m.npz")
    assert loaded.history == model.history
    mlp.train(loaded, X, y, epochs=1, batch_size=8, progress=False, optimizer=mlp.SGD(0.1))
    assert np.isfinite(loaded._params).all()


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------

def test_concurrent_forward_matches_sequential():
    model = mlp.Model([20, 64, 10], activation="relu", output="softmax", dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((n, 20)) for n in (1, 7, 300, 1500, 64, 2)]
    expected = [model.forward(X) for X in inputs]
    results = {0: [], 1: []}
    errors = []
    barrier = threading.Barrier(2)

    def work(tid):
        try:
            barrier.wait()
            for _ in range(15):
                for i, X in enumerate(inputs if tid == 0 else inputs[::-1]):
                    results[tid].append((i if tid == 0 else len(inputs) - 1 - i,
                                         model.forward(X)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(results[0]) == len(results[1]) == 15 * len(inputs)
    # Bit for bit: every call runs on the same number of BLAS threads, from
    # whichever Python thread it comes.
    for tid in (0, 1):
        for i, out in results[tid]:
            np.testing.assert_array_equal(out, expected[i])


# --- learning-rate schedules -------------------------------------------------------------------

def test_schedules_decay_from_the_learning_rate_to_zero():
    from mlp.schedules import learning_rates

    def rate(name, step, total):
        return learning_rates(0.5, mlp.schedules.SCHEDULES[name], step, 1, total)[0]

    assert rate("constant", 70, 100) == 0.5
    assert rate("linear", 0, 100) == 0.5
    assert rate("linear", 75, 100) == pytest.approx(0.125)
    assert rate("cosine", 50, 100) == pytest.approx(0.25)
    assert rate("cosine", 100, 100) == pytest.approx(0.0)
    assert [rate("step", s, 100) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [0.5, 0.5, 0.05, 0.05, 0.005, 0.005])


def test_a_schedule_changes_training_and_stays_deterministic():
    rng = np.random.default_rng(0)
    X = rng.random((90, 5))
    y = rng.integers(0, 3, 90)

    def run(schedule):
        model = mlp.Model([5, 4, 3], output="softmax", seed=1, dtype=np.float64)
        mlp.train(model, X, y, epochs=3, batch_size=10, learning_rate=0.5, loss="cross_entropy",
                  seed=2, progress=False, lr_schedule=schedule)
        return model._params.copy()

    np.testing.assert_array_equal(run("cosine"), run("cosine"))
    assert not np.array_equal(run("cosine"), run("constant"))


@pytest.mark.parametrize("bad, exc", [("bogus", ValueError), (3, TypeError)])
def test_unknown_schedule_is_refused(bad, exc):
    model = mlp.Model([2, 2], seed=0)
    with pytest.raises(exc, match="lr_schedule"):
        mlp.train(model, np.zeros((4, 2)), [0, 1, 0, 1], iterations=1, lr_schedule=bad,
                  progress=False)


@pytest.mark.parametrize("sampling", ["replacement", "shuffle"])
def test_float32_data_trains_a_float64_model_without_a_copy_and_identically(sampling, monkeypatch):
    rng = np.random.default_rng(0)
    X32 = rng.random((64, 6), dtype=np.float32)
    y = rng.integers(0, 3, 64)
    seen = []
    real = training_module._kernels.train_steps

    def spy(run, *args):
        seen.append(run.data.x)
        return real(run, *args)

    monkeypatch.setattr(training_module._kernels, "train_steps", spy)
    models = []
    for X in (X32, X32.astype(np.float64)):
        model = mlp.Model([6, 5, 3], seed=3, dtype=np.float64)
        mlp.train(model, X, y, epochs=2, batch_size=7, sampling=sampling, seed=1,
                  learning_rate=0.5, progress=False)
        models.append(model)
    assert seen[0] is X32  # handed to the kernel as it is
    np.testing.assert_array_equal(models[0]._params, models[1]._params)


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("optimizer", [mlp.SGD(0.1), mlp.SGD(0.1, momentum=0.9, nesterov=True),
                                       mlp.Adam(0.01)], ids=["sgd", "nesterov", "adam"])
def test_mostly_zero_rows_listed_by_each_worker_train_as_shared_lists(optimizer, workers):
    """Float32 rows of mostly zeros into a float32 model: each worker lists
    every row of a batch itself, straight from x. The same values as
    float64 rows: each worker converts every row into a buffer of its own
    and lists it from there. Same lists, so the same steps, bit for bit."""
    rng = np.random.default_rng(0)
    x = rng.random((400, 50), dtype=np.float32)
    x[x < 0.8] = 0
    labels = rng.integers(0, 4, 400)
    order = rng.permutation(400).astype(np.int64)
    sizes = np.array([50, 37, 11, 4], dtype=np.intp)
    start = mlp.Model(list(sizes), seed=1)._params
    results = []
    for data in (x, x.astype(np.float64)):
        params = start.copy()
        state = OptimizerState.fresh(optimizer, params.size, np.float32)
        losses = np.zeros(7)
        work = np.empty(training_module._kernels.workspace_size(sizes, 64), dtype=np.float32)
        steps = kernel_train_steps(
            params, sizes, ACT["relu"], ACT["softmax"], LOSS["cross_entropy"], data, labels,
            order, 64, optimizer.learning_rate, 0.0, work, losses, False, workers,
            rule=optimizer.kernel_rule(), state=state.kernel_buffers(),
            sparse_input=True)
        assert steps == 7
        results.append((params, losses, [b.copy() for b in state.buffers.values()]))
    (params, losses, buffers), (params64, losses64, buffers64) = results
    np.testing.assert_array_equal(params, params64)
    np.testing.assert_array_equal(losses, losses64)
    for buffer, buffer64 in zip(buffers, buffers64):
        np.testing.assert_array_equal(buffer, buffer64)
    assert np.isfinite(params).all() and not np.array_equal(params, start)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_train_refuses_a_non_finite_row_and_leaves_the_model_alone(dtype, bad):
    rng = np.random.default_rng(0)
    X = rng.random((40, 5))
    X[17, 3] = bad
    y = rng.integers(0, 3, 40)
    # Sigmoids saturate instead of overflowing on the huge but finite input.
    model = mlp.Model([5, 4, 3], activation="sigmoid", output="sigmoid", seed=0, dtype=dtype)
    before = model._params.copy()
    if bad == 1e300 and dtype == np.float64:
        mlp.train(model, X, y, epochs=1, batch_size=8, sampling="shuffle", progress=False)
        return  # representable in float64: a legitimate (if silly) input
    with pytest.raises(ValueError, match=r"X\[17\]"):
        mlp.train(model, X, y, epochs=2, batch_size=8, sampling="shuffle", progress=False)
    np.testing.assert_array_equal(model._params, before)


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("column", [1, 20, 39])
@pytest.mark.parametrize("feature_major,sparse_input", [(False, False), (True, False),
                                                         (False, True)])
def test_train_kernel_reports_the_bad_row_before_stepping(feature_major, sparse_input, column,
                                                          workers):
    """Workers check the rows they gather (or, on the sparse-input path,
    list straight from X); whichever holds the bad one, all of them stop
    before the step."""
    model = mlp.Model([40, 8, 2], seed=0)
    X = np.ones((4, 40), dtype=np.float32)
    if sparse_input:
        X[:, ::3] = 0
    X[2, column] = np.nan
    work = np.empty(training_module._kernels.workspace_size(model._sizes, 2), dtype=np.float32)
    order = np.array([0, 1, 3, 2], dtype=np.int64)
    expected = model._params.copy()
    kernel_train_steps(expected, model._sizes, 0, 0, 0, X, np.zeros(4, dtype=np.int64),
                       order[:2], 2, 0.5, 0.0, work, np.empty(1), feature_major, 1,
                       sparse_input=sparse_input)
    status = kernel_train_steps(model._params, model._sizes, 0, 0, 0, X,
                                np.zeros(4, dtype=np.int64), order, 2, 0.5, 0.0, work,
                                np.empty(2), feature_major, workers, sparse_input=sparse_input)
    assert status == -1 - 2
    # The first, clean batch was applied, and nothing after it.
    np.testing.assert_allclose(model._params, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_train_gives_the_same_model_on_any_number_of_workers(n_threads):
    rng = np.random.default_rng(0)
    X = rng.random((300, 30), dtype=np.float32)
    y = rng.integers(0, 4, 300)
    models = []
    for threads in (1, n_threads):
        model = mlp.Model([30, 40, 20, 4], activation="relu", output="softmax", seed=2)
        mlp.train(model, X, y, epochs=3, batch_size=16, loss="cross_entropy",
                  learning_rate=0.3, seed=5, n_threads=threads, progress=False)
        models.append(model)
    np.testing.assert_allclose(models[1]._params, models[0]._params, rtol=1e-4, atol=1e-5)
    if n_threads == 1:
        np.testing.assert_array_equal(models[1]._params, models[0]._params)



def test_training_step_weight_decay_matches_pytorch_sgd_semantics():
    rng = np.random.default_rng(0)
    X = rng.random((6, 4))
    Y = np.eye(3)[rng.integers(0, 3, 6)]
    model = mlp.Model([4, 5, 3], seed=0, dtype=np.float64)
    grads_w, grads_b = model.gradients(X, Y)
    before_w = [w.copy() for w in model.weights]
    before_b = [b.copy() for b in model.biases]
    mlp.training_step(model, X, Y, 0.5, weight_decay=0.1)
    for w, w0, g in zip(model.weights, before_w, grads_w):
        np.testing.assert_allclose(w, (1 - 0.5 * 0.1) * w0 - 0.5 / 6 * g, rtol=1e-12, atol=1e-14)
    for b, b0, g in zip(model.biases, before_b, grads_b):
        np.testing.assert_allclose(b, b0 - 0.5 / 6 * g, rtol=1e-12, atol=1e-14)


def test_weight_decay_keeps_weights_smaller():
    rng = np.random.default_rng(0)
    X = rng.random((200, 8))
    y = rng.integers(0, 3, 200)
    norms = {}
    for decay in (0.0, 0.05):
        model = mlp.Model([8, 16, 3], output="softmax", init="xavier", seed=0)
        mlp.train(model, X, y, epochs=5, batch_size=20, learning_rate=0.5, loss="cross_entropy",
                  seed=0, weight_decay=decay, progress=False)
        norms[decay] = sum(float(np.square(w).sum()) for w in model.weights)
    assert norms[0.05] < 0.9 * norms[0.0]


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(weight_decay=float("nan")), ValueError, "weight_decay"),
    (dict(weight_decay="0.1"), TypeError, "weight_decay"),
    (dict(weight_decay=0.6, learning_rate=2.0), ValueError, "learning_rate \\* weight_decay"),
])
def test_bad_weight_decay(kwargs, exc, match):
    model = mlp.Model([2, 2], seed=0)
    kwargs = dict(dict(learning_rate=0.1), **kwargs)
    with pytest.raises(exc, match=match):
        mlp.train(model, np.zeros((4, 2)), [0, 1, 0, 1], iterations=1, progress=False, **kwargs)
    with pytest.raises(exc, match=match):
        mlp.training_step(model, np.zeros((4, 2)), [0, 1, 0, 1], **kwargs)


# ---------------------------------------------------------------------------
# Interrupted and hopeless runs
# ---------------------------------------------------------------------------

def test_an_interrupt_leaves_the_parameters_it_reached():
    """Ctrl-C (here raised between two compiled calls) during a healthy run
    keeps the parameters of the last call, mid-epoch (a diverged run's case:
    test_an_interrupt_after_non_finite_parameters_restores_the_last_good_epoch)."""
    rng = np.random.default_rng(0)
    X = rng.random((600, 20))
    y = rng.integers(0, 4, 600)
    model = mlp.Model([20, 64, 4], seed=0)
    start = model._params.copy()
    interrupt = _AtCall(3, poison=False, then=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        mlp.train(model, X, y, epochs=50, batch_size=10, learning_rate=0.1,
                  progress=False, callbacks=[interrupt], seed=0)
    np.testing.assert_array_equal(model._params, interrupt.seen[-1])
    assert not np.array_equal(model._params, start)
    assert model.history is not None
    assert np.isfinite(model.predict_proba(X[:5])).all()


@pytest.mark.parametrize("learning_rate", [1e3, 1e4, 1e6])
@pytest.mark.parametrize("activation, output, match", [
    ("sigmoid", "sigmoid", "stopped at"), ("relu", "softmax", "far worse than guessing")])
def test_a_hopeless_learning_rate_gets_a_warning_naming_it(learning_rate, activation, output,
                                                          match):
    """Rates of 1e3 to 1e6 leave a finite but useless model: saturated
    sigmoids whose loss no longer moves, or a cross-entropy far above chance."""
    rng = np.random.default_rng(1)
    X = rng.random((200, 5))
    y = rng.integers(0, 3, 200)
    model = mlp.Model([5, 8, 3], activation=activation, output=output, seed=1)
    with pytest.warns(RuntimeWarning, match=match) as record:
        try:
            mlp.train(model, X, y, epochs=6, batch_size=10, learning_rate=learning_rate,
                      progress=False, seed=0)
        except FloatingPointError:
            return
    assert f"learning rate ({learning_rate})" in str(record[0].message)


def test_a_healthy_run_gets_no_warning(recwarn):
    X, y = _blobs(100, [(0, 0), (3, 0), (0, 3)], 0.5, seed=0)
    mlp.train(mlp.Model([2, 16, 3], seed=0), X, y, epochs=8, progress=False, seed=0)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


# ---------------------------------------------------------------------------
# Checkpoints and resuming
# ---------------------------------------------------------------------------

class _SigintAfter(mlp.Callback):
    """Sends this process SIGINT after the given number of compiled calls,
    as Ctrl-C would."""

    def __init__(self, calls):
        self.calls = calls

    def on_steps(self, run, steps, loss_sum, samples):
        import os
        import signal

        self.calls -= 1
        if self.calls == 0:
            os.kill(os.getpid(), signal.SIGINT)


_CHECKPOINT_KWARGS = dict(epochs=4, batch_size=16, dropout=0.2, progress=False, n_threads=2,
                          optimizer=mlp.Adam(0.01), lr_schedule="cosine", warmup=5)


@pytest.mark.parametrize("calls", [1, 3, 7])
def test_a_run_interrupted_and_resumed_ends_as_an_uninterrupted_one(tmp_path, monkeypatch,
                                                                   calls):
    monkeypatch.setattr(training_module, "_FIRST_CALL_STEPS", 3)
    monkeypatch.setattr(training_module, "_SECONDS_PER_CALL", 1e-9)  # 1 step per call after
    X, y = _blobs(60, [(0, 0), (2, 2), (0, 2)], 0.7, seed=0)
    Xv, yv = _blobs(20, [(0, 0), (2, 2), (0, 2)], 0.7, seed=1)
    whole = mlp.Model([2, 12, 3], seed=0)
    h_whole = mlp.train(whole, X, y, seed=4, validation=(Xv, yv), **_CHECKPOINT_KWARGS)
    path = tmp_path / "run.npz"
    model = mlp.Model([2, 12, 3], seed=0)
    with pytest.raises(KeyboardInterrupt):
        mlp.train(model, X, y, seed=4, validation=(Xv, yv), checkpoint=path,
                  callbacks=[_SigintAfter(calls)], **_CHECKPOINT_KWARGS)
    resumed = mlp.Model([2, 12, 3], seed=99)  # another start: all of it comes from the file
    h_rest = mlp.train(resumed, X, y, validation=(Xv, yv), resume=path, **_CHECKPOINT_KWARGS)
    np.testing.assert_array_equal(resumed._params, whole._params)
    assert h_rest.steps == h_whole.steps and h_rest.loss == h_whole.loss
    assert h_rest.val_accuracy == h_whole.val_accuracy
    assert resumed.optimizer_state.step == whole.optimizer_state.step


def test_checkpoints_are_written_periodically_and_at_the_end(tmp_path):
    X, y = _blobs(30, [(0, 0), (2, 2)], 0.5, seed=0)
    path = tmp_path / "ck.npz"
    model = mlp.Model([2, 4, 2], seed=0)
    mlp.train(model, X, y, epochs=2, batch_size=8, progress=False, checkpoint=path,
              checkpoint_every=0, seed=0)
    loaded, checkpoint = read_model_file(path)
    assert checkpoint[0]["done"] == 16 and checkpoint[0]["total_steps"] == 16
    np.testing.assert_array_equal(loaded._params, model._params)
    assert mlp.Model.load(path).optimizer_state.step == 16  # a checkpoint is a model file too


@pytest.mark.parametrize("change, match", [
    (dict(batch_size=8), "fit this data and batch size|batch_size"),
    (dict(optimizer=mlp.Adam(0.02)), "optimizer"),
    (dict(dropout=0.3), "dropout"),
])
def test_resume_refuses_other_options(tmp_path, change, match):
    X, y = _blobs(30, [(0, 0), (2, 2)], 0.5, seed=0)
    path = tmp_path / "ck.npz"
    kwargs = dict(epochs=2, batch_size=16, optimizer=mlp.Adam(0.01), dropout=0.1,
                  progress=False)
    mlp.train(mlp.Model([2, 4, 2], seed=0), X, y, checkpoint=path, seed=0, **kwargs)
    with pytest.raises(ValueError, match=match):
        mlp.train(mlp.Model([2, 4, 2], seed=0), X, y, resume=path, **dict(kwargs, **change))


def _damaged_checkpoint(tmp_path, monkeypatch, damage):
    """A checkpoint written mid-epoch (so it holds the epoch's sample order),
    rewritten after damage(place, arrays) changed it."""
    monkeypatch.setattr(training_module, "_FIRST_CALL_STEPS", 2)
    monkeypatch.setattr(training_module, "_SECONDS_PER_CALL", 1e-9)
    X, y = _blobs(60, [(0, 0), (2, 2)], 0.5, seed=0)
    Xv, yv = _blobs(10, [(0, 0), (2, 2)], 0.5, seed=1)
    path = tmp_path / "ck.npz"
    with pytest.raises(KeyboardInterrupt):
        mlp.train(mlp.Model([2, 4, 2], seed=0), X, y, epochs=2, batch_size=8, progress=False,
                  validation=(Xv, yv), checkpoint=path, callbacks=[_SigintAfter(2)], seed=0)
    model, (place, arrays) = read_model_file(path)
    assert place["position"] > 0 and "order" in arrays
    damage(place, arrays)
    write_model_file(model, path, checkpoint=(place, arrays))
    return path, X, y, (Xv, yv)


def _set(mapping, key, value):
    mapping[key] = value


@pytest.mark.parametrize("damage, match", [
    # Indices past the data once passed a check that Python parsed as
    # (not 0 <= min) and (max < n), and the kernel read out of bounds.
    (lambda place, arrays: arrays["order"].__setitem__(slice(None), 10 ** 12), "sample order"),
    (lambda place, arrays: arrays["order"].__setitem__(slice(None), -1), "sample order"),
    (lambda place, arrays: _set(place, "validation", {}), "damaged checkpoint"),
    (lambda place, arrays: _set(place, "validation", {"best_accuracy": "x", "stale": 0}),
     "damaged checkpoint"),
    (lambda place, arrays: _set(place, "elapsed", "x"), "damaged checkpoint"),
    (lambda place, arrays: _set(place, "loss_sum", "nan"), "damaged checkpoint"),
    (lambda place, arrays: _set(place, "done", 2 ** 70), "damaged checkpoint"),
    (lambda place, arrays: _set(place, "history", {"steps": "abc"}), "damaged checkpoint"),
    (lambda place, arrays: _set(place, "history", {"steps": [1], "loss": [], "time": []}),
     "damaged checkpoint"),
])
def test_resume_refuses_a_damaged_checkpoint(tmp_path, monkeypatch, damage, match):
    path, X, y, validation = _damaged_checkpoint(tmp_path, monkeypatch, damage)
    with pytest.raises(ValueError, match=match):
        mlp.train(mlp.Model([2, 4, 2], seed=0), X, y, epochs=2, batch_size=8, progress=False,
                  validation=validation, resume=path)


def test_resume_refuses_a_plain_model_file_and_another_network(tmp_path):
    X, y = _blobs(30, [(0, 0), (2, 2)], 0.5, seed=0)
    model = mlp.Model([2, 4, 2], seed=0)
    model.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        mlp.train(model, X, y, epochs=1, resume=tmp_path / "m.npz", progress=False)
    mlp.train(model, X, y, epochs=1, checkpoint=tmp_path / "c.npz", progress=False)
    with pytest.raises(ValueError, match="not this"):
        mlp.train(mlp.Model([2, 5, 2]), X, y, epochs=1, resume=tmp_path / "c.npz",
                  progress=False)


@pytest.mark.parametrize("use", ["predict", "evaluate", "loss", "training_step", "schedule"])
def test_callbacks_and_schedules_may_use_the_model_being_trained(use):
    # train() holds the model's lock for the whole run; a plain lock made
    # these wait on it forever (and Ctrl-C went to train's handler).
    import threading

    X, y = _blobs(40, [(0, 0), (2, 2)], 0.5, seed=0)
    model = mlp.Model([2, 4, 2], seed=0)
    seen = []

    def use_model(*_):
        if use in ("predict", "schedule"):
            seen.append(model.predict(X))
        elif use == "evaluate":
            seen.append(mlp.evaluate(model, X, y))
        elif use == "loss":
            seen.append(model.loss(X, np.eye(2)[y]))
        elif use == "training_step":
            seen.append(mlp.training_step(model, X[:4], y[:4], learning_rate=0.01))
        return 1.0

    class UseModel(mlp.Callback):
        def on_epoch_end(self, run, history):
            use_model()
            return False

    kwargs = dict(lr_schedule=use_model, learning_rate=0.1) if use == "schedule" else dict(
        callbacks=[UseModel()])
    worker = threading.Thread(target=mlp.train, args=(model, X, y), daemon=True,
                              kwargs=dict(epochs=2, batch_size=8, progress=False, **kwargs))
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), f"train() hung when a {use} used the model"
    assert len(seen) == 2 if use != "schedule" else len(seen) >= 2  # once per call
    assert model.history is not None and len(model.history.steps) == 2


def test_on_epoch_start_is_called_before_each_epoch_with_its_sample_order():
    X, y = np.random.default_rng(1).random((30, 4)), np.arange(30) % 3
    events = []

    class Record(mlp.Callback):
        def on_epoch_start(self, run):
            events.append(("start", run.done, np.sort(run.order).tolist()))

        def on_epoch_end(self, run, history):
            events.append(("end", run.done))

    model = mlp.Model([X.shape[1], 5, 3], seed=0)
    mlp.train(model, X, y, epochs=3, batch_size=10, progress=False, seed=0, callbacks=[Record()])
    # Every epoch of shuffle sampling is a permutation of the 30 rows, drawn before its steps.
    assert events == [event for epoch in range(3)
                      for event in (("start", 3 * epoch, list(range(30))), ("end", 3 * epoch + 3))]


@pytest.mark.parametrize("dtype,lr,scale", OVERFLOWING)
def test_training_step_raises_when_the_step_diverges(dtype, lr, scale):
    X, y = _overflow_data(scale)
    # The step's loss is finite (it is taken before the update), its result is not.
    reference = mlp.Model([4, 5, 3], dtype=dtype, seed=0)
    assert np.isfinite(training_module._training_step(reference, X, y, lr))
    assert not np.isfinite(reference._params).all()
    model = mlp.Model([4, 5, 3], dtype=dtype, seed=0)
    with pytest.raises(FloatingPointError, match="no longer finite.*lower the learning rate"):
        mlp.training_step(model, X, y, lr)
    # What the model gives now is no class at all, not a silent class 0.
    with pytest.raises(ValueError, match="outputs are NaN"):
        model.predict(X)
    with pytest.raises(ValueError, match="outputs are NaN"):
        mlp.evaluate(model, X, y)
    with pytest.raises(ValueError, match="outputs are NaN"):
        model.predict_proba(X)
    assert np.isnan(model.forward(X)).any()  # forward shows the NaN as it is


def test_compat_training_step_goes_on_with_nan_as_the_notebook_does():
    from mlp import compat

    X, y = _blobs(32, [(0, 0), (2, 2), (0, 2)], 0.5, seed=0)
    model = mlp.Model([2, 4, 3], output="identity", seed=0)
    for _ in range(3):
        compat.training_step(model, X, np.eye(3)[y], 1e38)
    assert not np.isfinite(model._params).all()


def test_options_that_do_not_fit_the_model_are_refused_before_training(tmp_path):
    X, y = _blobs(20, [(0, 0), (2, 2)], 0.5, seed=0)
    flat = mlp.Model([2, 2], seed=0)  # no hidden layer
    with pytest.raises(ValueError, match="dropout drops hidden units"):
        mlp.train(flat, X, y, epochs=1, dropout=0.5, progress=False)
    mlp.train(flat, X, y, epochs=1, input_dropout=0.5, progress=False)
    tiny_eps = mlp.Adam(eps=1e-320)  # 0 in float32: a division by zero
    with pytest.raises(ValueError, match="eps 1e-320 is 0 in float32"):
        mlp.training_step(mlp.Model([2, 3, 2], seed=0), X, y, optimizer=tiny_eps)
    mlp.training_step(mlp.Model([2, 3, 2], dtype=np.float64, seed=0), X, y, optimizer=tiny_eps)
    with pytest.raises(TypeError, match="put the one in a list"):
        mlp.train(flat, X, y, epochs=1, progress=False, callbacks=mlp.Callback())
    model = mlp.Model([2, 3, 2], seed=0)
    before = model._params.copy()
    with pytest.raises(ValueError, match="checkpoint .* does not exist"):
        mlp.train(model, X, y, epochs=1, progress=False,
                  checkpoint=tmp_path / "missing" / "run.npz")
    np.testing.assert_array_equal(model._params, before)  # refused before any step
