"""mlp.Model: gradients against finite differences, forward against numpy,
parameter views, initialisation, save/load, and input validation."""
from __future__ import annotations

import json
import math
import os
import pickle
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import mlp
from mlp.activations import HIDDEN_ACTIVATIONS
import mlp.model as model_module
from mlp.serialization import write_model_file

from conftest import (ACT, DTYPES, assert_close, assert_rejected_cleanly, min_abs_hidden_z, mutate,
                      npy_bytes, ref_forward, ref_loss, require, stored_zip, zip_members)

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# float32 network-level tolerance: sums of O(10) products per layer, a few
# layers, eps32 = 1.2e-7 -> ~1e-5 relative; 2e-4 gives headroom.
FWD_TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-9, atol=1e-10)}


def _refs(model):
    hidden = ACT[model.activation]
    out = ACT[model.output]
    Ws = [np.asarray(w, np.float64) for w in model.weights]
    bs = [np.asarray(b, np.float64) for b in model.biases]
    return Ws, bs, hidden, out


@st.composite
def models_and_data(draw, dtype=None, max_batch=6):
    n_layers = draw(st.integers(2, 4))  # 2-4 layers = 1-3 weight layers
    sizes = [draw(st.integers(1, 8)) for _ in range(n_layers)]
    activation = draw(st.sampled_from(HIDDEN_ACTIVATIONS))
    output = draw(st.sampled_from(["sigmoid", "softmax"]))
    loss = draw(st.sampled_from(["mse", "cross_entropy"] if output == "softmax" else ["mse"]))
    init = draw(st.sampled_from(["normal", "xavier", "he"]))
    dtype = dtype or draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1, max_batch))
    model = mlp.Model(sizes, activation=activation, output=output, init=init, dtype=dtype,
                      seed=seed)
    rng = np.random.default_rng(seed + 1)
    if init != "normal":  # non-zero biases so that every parameter matters
        for b in model.biases:
            b[...] = rng.standard_normal(b.shape) * 0.5
    X = rng.standard_normal((n, sizes[0])) * 1.5
    if draw(st.booleans()):
        Y = np.zeros((n, sizes[-1]))
        Y[np.arange(n), rng.integers(0, sizes[-1], n)] = 1
    else:
        # Arbitrary real targets; the cross-entropies take them in [0, 1].
        Y = rng.uniform(-0.5, 1.5, (n, sizes[-1])) if loss == "mse" else rng.uniform(
            0, 1, (n, sizes[-1]))
    return model, X, Y, loss


# ---------------------------------------------------------------------------
# Gradients against central finite differences
# ---------------------------------------------------------------------------

@SETTINGS
@given(case=models_and_data(dtype=np.float64))
def test_gradients_match_central_finite_differences(case):
    model, X, Y, loss = case
    Ws, bs, hidden, out = _refs(model)
    if model.activation == "relu":
        # h = 1e-6 moves any pre-activation by < 1e-4 here: stay clear of kinks.
        assume(min_abs_hidden_z(Ws, bs, X, hidden, out) > 1e-3)
    gW, gb = model.gradients(X, Y, loss)
    assert len(gW) == len(model.weights) and len(gb) == len(model.biases)
    h = 1e-6
    for grads, params in ((gW, model.weights), (gb, model.biases)):
        for g, p in zip(grads, params):
            assert g.shape == p.shape and g.dtype == np.float64
            fd = np.empty(p.shape)
            for idx in np.ndindex(p.shape):
                old = p[idx]
                p[idx] = old + h  # p is a live view: this changes the model
                up = model.loss(X, Y, loss)
                p[idx] = old - h
                down = model.loss(X, Y, loss)
                p[idx] = old
                fd[idx] = (up - down) / (2 * h)
            # Central differences: truncation O(h^2 f''') ~ 1e-11, cancellation
            # ~ eps * |loss| / h ~ 1e-10 * |loss|.
            base = max(1.0, abs(model.loss(X, Y, loss)))
            np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6 * base)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_gradients_float32_agree_with_float64(dtype):
    m64 = mlp.Model([5, 6, 4, 3], activation="tanh", output="softmax", dtype=np.float64, seed=3)
    m = mlp.Model([5, 6, 4, 3], activation="tanh", output="softmax", dtype=dtype, seed=3)
    m._params[...] = m64._params  # same (float32-representable after rounding) parameters
    m64._params[...] = m._params
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 5)).astype(dtype)
    Y = rng.uniform(0, 1, (4, 3))
    for loss in ("mse", "cross_entropy"):
        g, _ = m.gradients(X, Y, loss)
        g64, _ = m64.gradients(X, Y, loss)
        for a, b in zip(g, g64):
            assert a.dtype == dtype
            assert_close(a, b, **FWD_TOL[dtype])


# ---------------------------------------------------------------------------
# forward / predict / predict_proba / loss against numpy
# ---------------------------------------------------------------------------

@SETTINGS
@given(case=models_and_data())
def test_forward_predict_proba_loss_match_reference(case):
    model, X, Y, loss = case
    dtype = model.dtype.type
    Ws, bs, hidden, out = _refs(model)
    Xd = X.astype(dtype)
    zs, acts = ref_forward(Ws, bs, Xd, hidden, out)
    a = model.forward(X)
    assert a.shape == (len(X), model.layer_sizes[-1]) and a.dtype == dtype
    assert_close(a, acts[-1], **FWD_TOL[dtype])

    proba = model.predict_proba(X)
    expected = acts[-1] if model.output == "softmax" else acts[-1] / acts[-1].sum(1, keepdims=True)
    assert_close(proba, expected, **FWD_TOL[dtype])
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5 if dtype == np.float32 else 1e-12)

    pred = model.predict(X)
    assert pred.dtype == np.int64 and pred.shape == (len(X),)
    np.testing.assert_array_equal(pred, np.argmax(a, axis=1))
    # Where the reference is decisive, the labels agree with it.
    top2 = np.sort(acts[-1], axis=1)[:, -2:] if acts[-1].shape[1] > 1 else None
    if top2 is not None:
        clear = top2[:, 1] - top2[:, 0] > 1e-3
        np.testing.assert_array_equal(pred[clear], np.argmax(acts[-1], axis=1)[clear])

    value = model.loss(X, Y, loss)
    assert type(value) is float
    expected_loss, terms = ref_loss(acts[-1], zs[-1], Y.astype(dtype), loss)
    tol = FWD_TOL[dtype]
    assert abs(value - expected_loss) <= tol["rtol"] * abs(expected_loss) + \
        tol["atol"] * max(1.0, np.abs(terms).sum())


def test_loss_definitions_on_a_hand_example():
    model = mlp.Model([2, 2], output="softmax", dtype=np.float64, seed=0)
    model.weights[0][...] = [[1.0, 0.0], [0.0, 1.0]]
    model.biases[0][...] = 0
    X = np.array([[0.0, 0.0], [math.log(3.0), 0.0]])
    Y = np.array([[1.0, 0.0], [0.0, 1.0]])
    # softmax rows: [1/2, 1/2] and [3/4, 1/4]
    assert model.loss(X, Y, "mse") == pytest.approx(0.5 * (0.25 + 0.25) + 0.5 * (0.5625 + 0.5625))
    assert model.loss(X, Y, "cross_entropy") == pytest.approx(math.log(2) + math.log(4))


def test_forward_many_rows_crosses_chunk_boundary(dtype):
    model = mlp.Model([3, 4, 2], activation="relu", dtype=dtype, seed=1)
    X = np.random.default_rng(1).standard_normal((2500, 3))
    Ws, bs, hidden, out = _refs(model)
    _, acts = ref_forward(Ws, bs, X.astype(dtype), hidden, out)
    assert_close(model.forward(X), acts[-1], **FWD_TOL[dtype])


def test_cross_entropy_stays_finite_for_huge_logits(dtype):
    model = mlp.Model([2, 3], output="softmax", dtype=dtype, seed=0)
    model.weights[0][...] = [[1000.0, 0], [-1000.0, 0], [0, 0]]
    model.biases[0][...] = 0
    X = np.array([[1.0, 0.0]])
    Y = np.array([[0.0, 1.0, 0.0]])
    assert model.loss(X, Y, "cross_entropy") == pytest.approx(2000.0, rel=1e-6)
    gW, gb = model.gradients(X, Y, "cross_entropy")
    assert all(np.isfinite(g).all() for g in gW + gb)
    assert np.isfinite(model.forward(X)).all()


def test_predict_proba_all_sigmoids_underflow_is_uniform():
    model = mlp.Model([1, 3], dtype=np.float64, seed=0)
    model.weights[0][...] = 0
    model.biases[0][...] = -1000.0
    np.testing.assert_array_equal(model.predict_proba([[0.0]]), [[1 / 3, 1 / 3, 1 / 3]])


@pytest.mark.parametrize("output,loss", [("sigmoid", "cross_entropy")])
def test_cross_entropy_needs_softmax_output(output, loss):
    model = mlp.Model([3, 2], output=output, seed=0)
    X, Y = np.zeros((1, 3)), np.zeros((1, 2))
    for call in (model.loss, model.gradients):
        with pytest.raises(ValueError, match="cross_entropy"):
            call(X, Y, loss)


# ---------------------------------------------------------------------------
# Parameter views
# ---------------------------------------------------------------------------

def test_weights_and_biases_are_live_c_contiguous_views(dtype):
    sizes = [4, 3, 2]
    model = mlp.Model(sizes, activation="sigmoid", output="sigmoid", dtype=dtype, seed=0)
    assert len(model.weights) == len(model.biases) == 2
    for l, (w, b) in enumerate(zip(model.weights, model.biases)):
        assert w.shape == (sizes[l + 1], sizes[l]) and b.shape == (sizes[l + 1],)
        assert w.dtype == dtype and b.dtype == dtype
        assert w.flags.c_contiguous and b.flags.c_contiguous
        assert model.weights[l] is w or np.shares_memory(model.weights[l], w)
    X = np.random.default_rng(0).standard_normal((5, 4))
    before = model.forward(X)
    model.weights[0][...] = 0
    after_w = model.forward(X)
    assert not np.allclose(before, after_w)
    # With W0 = 0 the hidden layer is sigmoid(b0) for every row.
    np.testing.assert_allclose(after_w, np.broadcast_to(after_w[0], after_w.shape), rtol=1e-6)
    model.biases[1][0] += 5
    after_b = model.forward(X)
    assert np.all(after_b[:, 0] > after_w[:, 0]) and np.array_equal(after_b[:, 1], after_w[:, 1])


def test_copy_is_independent():
    model = mlp.Model([3, 2], seed=0)
    twin = model.copy()
    X = np.ones((1, 3))
    np.testing.assert_array_equal(twin.forward(X), model.forward(X))
    twin.weights[0][...] = 0
    assert not np.array_equal(twin.forward(X), model.forward(X))


# ---------------------------------------------------------------------------
# Pickling (joblib and Dask send models to workers this way)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_pickle_round_trip(dtype):
    import copy

    model = mlp.Model([5, 4, 3], activation="tanh", output="softmax", init="xavier",
                      dtype=dtype, seed=0)
    model.history = mlp.History(steps=[10], loss=[0.5])
    X = np.random.default_rng(1).standard_normal((6, 5))
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert repr(twin) == repr(model)
        assert (twin.layer_sizes, twin.dtype, twin.init) == (model.layer_sizes, model.dtype,
                                                             model.init)
        assert twin._params.dtype == dtype
        np.testing.assert_array_equal(twin._params, model._params)
        assert twin.history == model.history
        np.testing.assert_array_equal(twin.forward(X), model.forward(X))
        np.testing.assert_array_equal(twin.predict(X), model.predict(X))
        # The views are live again on the other side, and the twin is independent.
        assert all(np.shares_memory(w, twin._params) for w in twin.weights + twin.biases)
        # One bias only: adding 1 to all of them leaves a softmax unchanged.
        twin.biases[-1][0] += 1
        assert not np.array_equal(twin.forward(X), model.forward(X))
        assert twin._lock is not model._lock


def test_pickled_model_trains_like_the_original():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5))
    y = rng.integers(0, 3, 40)
    model = mlp.Model([5, 4, 3], activation="relu", output="softmax", init="he",
                      dtype=np.float64, seed=0)
    model.forward(X)  # a used workspace must not travel either
    twin = pickle.loads(pickle.dumps(model))
    before = model._params.copy()
    runs = [mlp.train(m, X, y, epochs=3, batch_size=8, learning_rate=0.1, seed=5,
                      progress=False, n_threads=1) for m in (model, twin)]
    assert not np.array_equal(twin._params, before)
    np.testing.assert_array_equal(twin._params, model._params)
    assert runs[0].loss == runs[1].loss


@pytest.mark.parametrize("optimizer", [
    mlp.SGD(learning_rate=0.05, momentum=0.9),
    mlp.RMSprop(learning_rate=0.01, momentum=0.5, centered=True),
    mlp.Adagrad(learning_rate=0.05, initial_accumulator_value=0.1)], ids=lambda o: o.name)
def test_model_from_a_read_only_memory_map_trains_on(tmp_path, optimizer):
    # joblib hands large arrays to its workers as read-only memory maps.
    joblib = require("joblib")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 30))
    y = rng.integers(0, 3, 500)
    model = mlp.Model([30, 40, 3], dtype=np.float64, seed=0)
    mlp.train(model, X, y, epochs=1, optimizer=optimizer, seed=1, progress=False, n_threads=1)
    joblib.dump(model, tmp_path / "model.joblib")
    twin = joblib.load(tmp_path / "model.joblib", mmap_mode="r")
    assert twin._params.flags.writeable and twin.weights[0].base is not None
    assert twin.optimizer_state.step == model.optimizer_state.step
    assert twin.history == model.history
    for name in optimizer.state_buffers:
        np.testing.assert_array_equal(twin.optimizer_state.buffers[name],
                                      model.optimizer_state.buffers[name])
    for m in (model, twin):
        mlp.train(m, X, y, epochs=1, optimizer=optimizer, seed=2, progress=False, n_threads=1)
    np.testing.assert_array_equal(twin._params, model._params)


# ---------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------

def test_normal_init_is_standard_normal():
    model = mlp.Model([200, 300, 10], init="normal", dtype=np.float64, seed=0)
    w = np.concatenate([w.ravel() for w in model.weights])
    b = np.concatenate([b.ravel() for b in model.biases])
    for v in (w, b):
        # n >= 310: mean has sd 1/sqrt(n) <= 0.057, std's sd ~ 1/sqrt(2n) <= 0.04.
        assert abs(v.mean()) < 4 / math.sqrt(v.size)
        assert abs(v.std() - 1) < 4 / math.sqrt(2 * v.size)


def test_xavier_init_bounds_and_zero_biases():
    sizes = [300, 100, 10]
    model = mlp.Model(sizes, init="xavier", dtype=np.float64, seed=0)
    for w, b in zip(model.weights, model.biases):
        fan_out, fan_in = w.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert np.all(np.abs(w) <= bound)
        assert np.abs(w).max() > 0.95 * bound  # fills the interval
        assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
        np.testing.assert_array_equal(b, 0)


def test_he_init_scale_and_zero_biases():
    model = mlp.Model([400, 200, 10], init="he", dtype=np.float64, seed=0)
    for w, b in zip(model.weights, model.biases):
        fan_in = w.shape[1]
        assert abs(w.std() / math.sqrt(2 / fan_in) - 1) < 0.1
        np.testing.assert_array_equal(b, 0)


@pytest.mark.parametrize("init", ["normal", "xavier", "he"])
def test_seed_reproducibility(init, dtype):
    a = mlp.Model([5, 4, 3], init=init, dtype=dtype, seed=42)
    b = mlp.Model([5, 4, 3], init=init, dtype=dtype, seed=42)
    c = mlp.Model([5, 4, 3], init=init, dtype=dtype, seed=43)
    d = mlp.Model([5, 4, 3], init=init, dtype=dtype, seed=np.random.default_rng(42))
    for wa, wb, wc in zip(a.weights, b.weights, c.weights):
        np.testing.assert_array_equal(wa, wb)
        assert not np.array_equal(wa, wc)
    for wa, wd in zip(a.weights, d.weights):
        np.testing.assert_array_equal(wa, wd)
    e, f = mlp.Model([5, 4, 3], init=init, seed=None), mlp.Model([5, 4, 3], init=init, seed=None)
    assert not np.array_equal(e.weights[0], f.weights[0])


# ---------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("activation,output,init", [("sigmoid", "sigmoid", "normal"),
                                                    ("relu", "softmax", "he"),
                                                    ("tanh", "softmax", "xavier")])
def test_save_load_round_trip_is_bit_for_bit(tmp_path, dtype, activation, output, init):
    model = mlp.Model([6, 5, 4, 3], activation=activation, output=output, init=init, dtype=dtype,
                      seed=5)
    for b in model.biases:
        b += 0.1
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = mlp.Model.load(path)
    assert loaded.layer_sizes == model.layer_sizes
    assert (loaded.activation, loaded.output, loaded.dtype) == (activation, output, np.dtype(dtype))
    for a, b in zip(model.weights + model.biases, loaded.weights + loaded.biases):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    X = np.random.default_rng(0).standard_normal((50, 6))
    assert model.forward(X).tobytes() == loaded.forward(X).tobytes()
    np.testing.assert_array_equal(model.predict(X), loaded.predict(X))
    # The loaded model owns its parameters.
    loaded.weights[0][...] = 0
    assert not np.array_equal(model.weights[0], loaded.weights[0])
    assert mlp.Model.load(str(path)).forward(X).tobytes() == model.forward(X).tobytes()
    # No pickle in the file.
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            assert b"cnumpy" not in zf.read(name)[:200]
    with np.load(path, allow_pickle=False) as archive:
        assert all(archive[k].dtype != object for k in archive.files)


def _good_arrays(sizes=(3, 2), dtype="float64"):
    meta = {"format": "mlp.Model", "version": 1, "layer_sizes": list(sizes),
            "activation": "sigmoid", "output": "sigmoid", "init": "normal", "dtype": dtype}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for l, (fin, fout) in enumerate(zip(sizes[:-1], sizes[1:])):
        arrays[f"W{l}"] = np.ones((fout, fin), dtype=dtype)
        arrays[f"b{l}"] = np.zeros(fout, dtype=dtype)
    return arrays


class _Boom:
    """Unpickling this runs code: it creates the file named in the argument."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_accepts_a_hand_made_good_file(tmp_path):
    path = tmp_path / "ok.npz"
    np.savez(path, **_good_arrays())
    model = mlp.Model.load(path)
    np.testing.assert_array_equal(model.weights[0], np.ones((2, 3)))


def _write_bad(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / f"{kind}.npz"
    if kind == "truncated":
        mlp.Model([3, 4, 2], seed=0).save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x00\x01not a zip file at all" * 10)
    elif kind == "text":
        path.write_text("layer_sizes = [3, 2]\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy":
        np.save(tmp_path / "plain.npy", np.ones(3))
        os.replace(tmp_path / "plain.npy", path)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(_Boom(str(marker))))
    elif kind == "object_array":
        arrays = _good_arrays()
        arrays["W0"] = np.array([_Boom(str(marker))] * 6, dtype=object).reshape(2, 3)
        np.savez(path, **arrays)
    elif kind == "object_meta":
        arrays = _good_arrays()
        arrays["meta"] = np.array([_Boom(str(marker))], dtype=object)
        np.savez(path, **arrays)
    elif kind == "wrong_shape":
        arrays = _good_arrays()
        arrays["W0"] = np.ones((3, 3))
        np.savez(path, **arrays)
    elif kind == "wrong_dtype":
        arrays = _good_arrays()
        arrays["W0"] = np.ones((2, 3), dtype=np.float32)
        np.savez(path, **arrays)
    elif kind == "missing_array":
        arrays = _good_arrays()
        del arrays["b0"]
        np.savez(path, **arrays)
    elif kind == "extra_array":
        arrays = _good_arrays()
        arrays["W7"] = np.ones(2)
        np.savez(path, **arrays)
    elif kind == "nan":
        arrays = _good_arrays()
        arrays["W0"][0, 0] = np.nan
        np.savez(path, **arrays)
    elif kind == "no_meta":
        arrays = _good_arrays()
        del arrays["meta"]
        np.savez(path, **arrays)
    elif kind == "meta_not_json":
        arrays = _good_arrays()
        arrays["meta"] = np.frombuffer(b"\xff\xfe{{{", dtype=np.uint8)
        np.savez(path, **arrays)
    elif kind in ("bad_sizes", "bad_activation", "bad_version", "bad_format", "bad_dtype"):
        arrays = _good_arrays()
        meta = json.loads(arrays["meta"].tobytes())
        key, value = {"bad_sizes": ("layer_sizes", [3, 0]), "bad_activation": ("activation", "x"),
                      "bad_version": ("version", 99), "bad_format": ("format", "other"),
                      "bad_dtype": ("dtype", "object")}[kind]
        meta[key] = value
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez(path, **arrays)
    else:
        raise AssertionError(kind)
    return path, marker


@pytest.mark.parametrize("kind", [
    "truncated", "garbage", "text", "empty", "npy", "pickle", "object_array", "object_meta",
    "wrong_shape", "wrong_dtype", "missing_array", "extra_array", "nan", "no_meta",
    "meta_not_json", "bad_sizes", "bad_activation", "bad_version", "bad_format", "bad_dtype"])
def test_load_rejects_bad_files_with_value_error_and_runs_no_code(tmp_path, kind):
    path, marker = _write_bad(tmp_path, kind)
    with pytest.raises(ValueError):
        mlp.Model.load(path)
    assert not marker.exists(), "loading unpickled something"


def test_load_missing_file_and_bad_path_type(tmp_path):
    with pytest.raises(FileNotFoundError):
        mlp.Model.load(tmp_path / "nope.npz")
    with pytest.raises(TypeError, match="path"):
        mlp.Model.load(123)
    with pytest.raises(TypeError, match="path"):
        mlp.Model([2, 2]).save(None)


def test_failed_save_keeps_existing_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    mlp.Model([3, 2], seed=0).save(path)
    good = path.read_bytes()

    def exploding_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(model_module.np, "savez", exploding_savez)
    with pytest.raises(OSError):
        mlp.Model([3, 2], seed=1).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    mlp.Model.load(path)


def test_save_to_unwritable_directory_keeps_existing_file(unwritable_file):
    with open(unwritable_file, "rb") as fh:
        good = fh.read()
    with pytest.raises(ValueError, match="cannot be written"):
        mlp.Model([3, 2], seed=1).save(unwritable_file)
    with open(unwritable_file, "rb") as fh:
        assert fh.read() == good


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_save_refuses_non_finite_parameters_and_keeps_the_old_file(tmp_path, bad):
    path = tmp_path / "model.npz"
    mlp.Model([3, 4, 2], seed=0).save(path)
    good = path.read_bytes()
    model = mlp.Model([3, 4, 2], seed=1)
    model.biases[1][0] = bad
    model.weights[0][2, 1] = bad
    with pytest.raises(ValueError, match=r"NaN or infinity \(W0, b1: 2 of 26 parameters\)"):
        model.save(path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_file_gets_the_permissions_of_a_new_file(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        mlp.Model([3, 2], seed=0).save(tmp_path / "new.npz")
        (tmp_path / "old.npz").write_bytes(b"")
        (tmp_path / "old.npz").chmod(0o600)
        mlp.Model([3, 2], seed=0).save(tmp_path / "old.npz")  # replaced, not rewritten
    finally:
        os.umask(old)
    assert (tmp_path / "new.npz").stat().st_mode & 0o777 == mode
    assert (tmp_path / "old.npz").stat().st_mode & 0o777 == mode


# ---------------------------------------------------------------------------
# Model.load on damaged and hostile files: only ValueError, nothing sized from
# what the file claims
# ---------------------------------------------------------------------------

def _model_file_bytes(sizes=(3, 4, 2), dtype=np.float32):
    import io

    buf = io.BytesIO()
    model = mlp.Model(list(sizes), dtype=dtype, seed=0)
    arrays = {"meta": None}
    meta = {"format": "mlp.Model", "version": 1, "layer_sizes": list(sizes),
            "activation": "sigmoid", "output": "sigmoid", "init": "normal",
            "dtype": np.dtype(dtype).name}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    for l, (w, b) in enumerate(zip(model.weights, model.biases)):
        arrays[f"W{l}"], arrays[f"b{l}"] = w, b
    np.savez(buf, **arrays)
    return buf.getvalue()


GOOD_MODEL_FILE = _model_file_bytes()


def _checkpoint_file_bytes():
    """A training checkpoint: parameters, Adam's state, History, sampler and the
    run's place, every part of the format that Model.load reads."""
    import tempfile

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 3)), rng.integers(0, 2, 12)
    model = mlp.Model([3, 4, 2], seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.ckpt")
        mlp.train(model, X, y, epochs=2, batch_size=4, optimizer=mlp.Adam(), seed=0,
                  progress=False, checkpoint=path, validation=(X, y))
        # The run's place as an interrupted run leaves it: mid-epoch, with its order.
        write_model_file(model, path, checkpoint=({"done": 3, "position": 4, "history": {}},
                                      {"order": np.arange(12), "best_params": model._params}))
        with open(path, "rb") as fh:
            return fh.read()


CHECKPOINT_FILE = _checkpoint_file_bytes()


@pytest.fixture(scope="module")
def load_bytes(tmp_path_factory):
    """Model.load applied to bytes, through a file (the fixture is module-scoped so
    that Hypothesis can use it)."""
    path = tmp_path_factory.mktemp("fuzz") / "model.npz"

    def load(data):
        path.write_bytes(data)
        return mlp.Model.load(path)

    return load


def test_the_fuzzing_seed_file_loads(load_bytes):
    model = load_bytes(GOOD_MODEL_FILE)
    assert model.layer_sizes == (3, 4, 2)
    assert assert_rejected_cleanly(load_bytes, GOOD_MODEL_FILE) is None


def _meta_bytes(**changes):
    meta = {"format": "mlp.Model", "version": 1, "layer_sizes": [3, 4, 2],
            "activation": "sigmoid", "output": "sigmoid", "init": "normal", "dtype": "float32"}
    meta.update(changes)
    return json.dumps(meta).encode()


def _with_member(name, data, base=GOOD_MODEL_FILE):
    members = zip_members(base)
    members[name] = data
    return stored_zip(members)


@pytest.mark.parametrize("history", [
    {"steps": [1, 2], "loss": [0.5], "time": [1.0, 2.0]},              # lengths differ
    {"steps": [1], "loss": [0.5], "time": [1.0], "stopped_early": "yes"},
    {"steps": [1], "loss": [0.5], "time": [1.0], "best_step": "x"},
    {"steps": [1], "loss": [float("nan")], "time": [1.0]},
    {"steps": [1], "loss": [0.5], "time": [1.0], "val_accuracy": [0.5, 0.6]},
    {"steps": [1], "loss": [0.5], "time": [1.0], "epochs": [1]},
    {"steps": [10**400], "loss": [0.5], "time": [1.0]},                # past float's range
])
def test_a_damaged_history_in_a_model_file_is_refused(load_bytes, history):
    # The report prints these: "parameters of step x restored" came from one.
    data = _with_member("meta.npy", npy_bytes(np.frombuffer(_meta_bytes(history=history),
                                                           dtype=np.uint8)))
    with pytest.raises(ValueError, match="history"):
        load_bytes(data)
    good = {"steps": [1], "loss": [0.5], "time": [1.0], "val_accuracy": [None]}
    assert load_bytes(_with_member("meta.npy", npy_bytes(np.frombuffer(
        _meta_bytes(history=good), dtype=np.uint8)))).history.steps == [1]


@pytest.mark.parametrize("sizes", [[100000, 100000, 100000], [2**30, 2**30], [2**31 - 1, 1],
                                   [65536] * 60])
def test_huge_layer_sizes_in_a_small_file_are_refused_before_allocating(load_bytes, sizes):
    data = stored_zip({"meta.npy": npy_bytes(np.frombuffer(
        _meta_bytes(layer_sizes=sizes), dtype=np.uint8))})
    assert len(data) < 1200
    error = assert_rejected_cleanly(load_bytes, data)
    assert isinstance(error, ValueError)


def test_huge_shape_in_an_npy_header_is_refused_before_allocating(load_bytes):
    huge = npy_bytes(header="{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }",
                     body=b"\0" * 48)
    for name in ("W0.npy", "meta.npy"):
        error = assert_rejected_cleanly(load_bytes, _with_member(name, huge))
        assert isinstance(error, ValueError) and "bytes" in str(error)


@pytest.mark.parametrize("depth", [100, 10_000, 200_000])
def test_deeply_nested_metadata_is_a_value_error(load_bytes, depth):
    for nested in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        data = _with_member("meta.npy", npy_bytes(np.frombuffer(nested, dtype=np.uint8)))
        error = assert_rejected_cleanly(load_bytes, data)
        assert isinstance(error, ValueError)


@pytest.mark.parametrize("data", [
    pickle.dumps({"a": 1}),
    npy_bytes(np.ones(3)),
    pickle.dumps(np.ones(2)),
    b"PK\x05\x06" + b"\0" * 18,
    GOOD_MODEL_FILE[: len(GOOD_MODEL_FILE) // 2],
], ids=["pickle", "npy", "pickled array", "empty zip", "truncated"])
def test_corrupt_file_message_is_mlps_own(load_bytes, data):
    with pytest.raises(ValueError, match="is not a model saved by mlp.Model.save") as info:
        load_bytes(data)
    assert "allow_pickle" not in str(info.value)
    assert "\n" not in str(info.value)


def test_compressed_and_overlapping_members_are_refused(load_bytes):
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, member in zip_members(GOOD_MODEL_FILE).items():
            archive.writestr(name, member)
    with pytest.raises(ValueError, match="compressed"):
        load_bytes(buf.getvalue())
    # Two directory entries pointing at the same bytes.
    with zipfile.ZipFile(io.BytesIO(GOOD_MODEL_FILE)) as archive:
        first = archive.infolist()[1]
    data = bytearray(GOOD_MODEL_FILE)
    directory = data.rindex(b"PK\x01\x02")  # the last member's directory entry
    data[directory + 42:directory + 46] = first.header_offset.to_bytes(4, "little")
    with pytest.raises(ValueError):
        load_bytes(bytes(data))


_EDIT = st.tuples(
    st.sampled_from(["set", "set", "insert", "delete", "truncate"]),
    st.integers(0, len(GOOD_MODEL_FILE)),
    st.one_of(st.binary(min_size=1, max_size=6),
              st.sampled_from([b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80",
                               b"\x00\x00\x00\x00", b"\xff\xff", b"\x00\x00"])))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(edits=st.lists(_EDIT, min_size=1, max_size=4))
def test_fuzz_load_mutated_model_files(load_bytes, edits):
    assert_rejected_cleanly(load_bytes, mutate(GOOD_MODEL_FILE, edits))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.one_of(st.binary(max_size=600),
                      st.binary(max_size=600).map(lambda b: b"PK\x03\x04" + b),
                      st.binary(max_size=600).map(lambda b: GOOD_MODEL_FILE[:40] + b),
                      st.binary(max_size=600).map(lambda b: b + GOOD_MODEL_FILE[-22:])))
def test_fuzz_load_random_bytes(load_bytes, data):
    assert_rejected_cleanly(load_bytes, data)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                      max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(["layer_sizes", "activation", "output", "dtype", "init", "format",
                            "version"]),
       value=_JSON | st.lists(st.integers(-3, 2**64), max_size=6)
       | st.sampled_from(["float16", "object", "V99999999999", "<f4", "int64"]))
def test_fuzz_load_metadata_values(load_bytes, key, value):
    data = _with_member("meta.npy", npy_bytes(np.frombuffer(_meta_bytes(**{key: value}),
                                                           dtype=np.uint8)))
    assert_rejected_cleanly(load_bytes, data)


def test_the_checkpoint_seed_file_loads(load_bytes):
    model = load_bytes(CHECKPOINT_FILE)
    assert model.optimizer_state is not None and model.optimizer_state.step > 0
    assert sorted(zip_members(CHECKPOINT_FILE)) == sorted(
        ["meta.npy", "W0.npy", "b0.npy", "W1.npy", "b1.npy", "optimizer.exp_avg.npy",
         "optimizer.exp_avg_sq.npy", "checkpoint.order.npy", "checkpoint.best_params.npy"])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(edits=st.lists(_EDIT, min_size=1, max_size=4))
def test_fuzz_load_mutated_checkpoints(load_bytes, edits):
    assert_rejected_cleanly(load_bytes, mutate(CHECKPOINT_FILE, edits))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.lists(st.sampled_from(["optimizer", "config", "step", "buffers", "history",
                                      "steps", "loss", "val_accuracy", "time", "sampling_rng",
                                      "state", "dropout_seed", "checkpoint", "done", "order"]),
                     min_size=1, max_size=3),
       value=_JSON | st.integers(-2**70, 2**130) | st.lists(st.integers(-3, 2**64), max_size=4))
# The generator's state words are uint64: numpy raised OverflowError for these.
@example(path=["sampling_rng", "state", "state"], value=-1)
@example(path=["sampling_rng", "state", "inc"], value=2**128)
def test_fuzz_load_checkpoint_metadata(load_bytes, path, value):
    members = zip_members(CHECKPOINT_FILE)
    header_length = 10 + int.from_bytes(members["meta.npy"][8:10], "little")
    meta = json.loads(members["meta.npy"][header_length:])
    node = meta
    for key in path[:-1]:  # walk into existing dicts; stop where there are none
        if not isinstance(node.get(key), dict):
            break
        node = node[key]
    node[path[-1]] = value
    members["meta.npy"] = npy_bytes(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    assert_rejected_cleanly(load_bytes, stored_zip(members))


_DESCR = st.sampled_from(["<f4", "<f8", ">f4", "|u1", "|O", "<c16", "<U3", "|V8", "<f2", "<i8",
                          "[('a', '<f4')]", "('<f4', (2,))"])
_SHAPE = st.lists(st.integers(0, 2**40), max_size=3).map(tuple) | st.sampled_from(
    [(4, 3), (4,), (2, 4), (2,), (), (0,), (3, 4), (10**20,)])


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(member=st.sampled_from(["meta.npy", "W0.npy", "b0.npy", "W1.npy", "b1.npy", "x.npy", "W0"]),
       descr=_DESCR, fortran=st.booleans(), shape=_SHAPE, body=st.binary(max_size=80),
       raw=st.none() | st.text(st.characters(max_codepoint=255), max_size=120), version=st.sampled_from([b"\x01\x00", b"\x02\x00",
                                                                      b"\x03\x00", b"\x09\x00"]))
def test_fuzz_load_npy_headers(load_bytes, member, descr, fortran, shape, body, raw, version):
    descr_text = descr if descr.startswith(("[", "(")) else repr(descr)
    header = raw if raw is not None else (
        f"{{'descr': {descr_text}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}")
    npy = npy_bytes(header=header, body=body)
    if version != b"\x01\x00":
        npy = b"\x93NUMPY" + version + len(npy[10:]).to_bytes(4, "little") + npy[10:]
    assert_rejected_cleanly(load_bytes, _with_member(member, npy))


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("layer_sizes,exc", [
    ([], ValueError), ([784], ValueError), ([0, 10], ValueError), ([10, 0], ValueError),
    ([-3, 2], ValueError), ([3.5, 2], TypeError), ([3, 2.0], TypeError), ("abc", TypeError),
    (True, TypeError), ([True, 2], TypeError), (None, TypeError), (5, TypeError),
    ([3, "2"], TypeError), ([3, None], TypeError), ([2, 2**40], ValueError),
    ([2] * 70, ValueError),
])
def test_bad_layer_sizes(layer_sizes, exc):
    with pytest.raises(exc, match="layer_sizes"):
        mlp.Model(layer_sizes)


def test_layer_sizes_accepts_tuples_and_numpy_ints():
    assert mlp.Model((3, 2)).layer_sizes == (3, 2)
    assert mlp.Model(np.array([3, 4, 2])).layer_sizes == (3, 4, 2)


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(activation="softmax"), ValueError, "activation"),
    (dict(activation="bogus"), ValueError, "activation"),
    (dict(activation=1), TypeError, "activation"),
    (dict(output="relu"), ValueError, "output"),
    (dict(output=None), TypeError, "output"),
    (dict(init="zeros"), ValueError, "init"),
    (dict(dtype=np.int32), TypeError, "dtype"),
    (dict(dtype=np.float16), TypeError, "dtype"),
    (dict(dtype=np.complex128), TypeError, "dtype"),
    (dict(dtype="abc"), TypeError, "dtype"),
    (dict(dtype=object), TypeError, "dtype"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(seed="0"), TypeError, "seed"),
])
def test_bad_constructor_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        mlp.Model([3, 2], **kwargs)


BAD_X = [
    ("1-D", np.zeros(3), ValueError),
    ("3-D", np.zeros((1, 2, 3)), ValueError),
    ("scalar", 1.0, ValueError),
    ("wrong columns", np.zeros((2, 4)), ValueError),
    ("empty", np.zeros((0, 3)), ValueError),
    ("nan", np.array([[0.0, np.nan, 0.0]]), ValueError),
    ("inf", np.array([[0.0, np.inf, 0.0]]), ValueError),
    ("overflows float32", np.array([[1e300, 0.0, 0.0]]), ValueError),
    ("strings", np.array([["a", "b", "c"]]), TypeError),
    ("objects", np.array([[object(), 1, 2]], dtype=object), TypeError),
    ("None", None, TypeError),
    ("complex", np.zeros((1, 3), dtype=complex), TypeError),
    ("ragged", [[1, 2, 3], [1, 2]], TypeError),
]


def _method_calls(model, X, Y):
    return {
        "forward": lambda: model.forward(X),
        "predict": lambda: model.predict(X),
        "predict_proba": lambda: model.predict_proba(X),
        "loss": lambda: model.loss(X, Y),
        "gradients": lambda: model.gradients(X, Y),
    }


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("label,X,exc", BAD_X, ids=[b[0] for b in BAD_X])
@pytest.mark.parametrize("method", ["forward", "predict", "predict_proba", "loss", "gradients"])
def test_bad_X_to_every_method(method, label, X, exc):
    model = mlp.Model([3, 2], dtype=np.float32, seed=0)
    before = model._params.copy()
    with pytest.raises(exc, match="X"):
        _method_calls(model, X, np.zeros((1, 2)))[method]()
    np.testing.assert_array_equal(model._params, before)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("bad,message", [(np.nan, "NaN or infinity"), (np.inf, "NaN or infinity"),
                                         (1e300, "too large for float32")])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("zeros", [0.0, 0.9])
def test_forward_finds_a_bad_value_in_the_last_of_many_rows(bad, message, n_threads, zeros):
    """Many rows, mostly zeros or not (the kernel's sparse-input and dense
    paths look for NaN and inf themselves), the bad value in the last row:
    forward and predict still raise, naming X."""
    rng = np.random.default_rng(0)
    X = rng.random((300, 50))
    X[rng.random(X.shape) < zeros] = 0
    model = mlp.Model([50, 20, 3], dtype=np.float32, seed=0)
    model.forward(X, n_threads=n_threads)
    X[-1, -1] = bad
    for method in (model.forward, model.predict, model.predict_proba):
        with pytest.raises(ValueError, match=f"X .*{message}"):
            method(X, n_threads=n_threads)


BAD_Y = [
    ("1-D", np.zeros(2), ValueError),
    ("wrong columns", np.zeros((2, 3)), ValueError),
    ("wrong rows", np.zeros((3, 2)), ValueError),
    ("nan", np.array([[np.nan, 0.0], [0.0, 0.0]]), ValueError),
    ("inf", np.array([[-np.inf, 0.0], [0.0, 0.0]]), ValueError),
    ("strings", np.array([["a", "b"], ["c", "d"]]), TypeError),
    ("None", None, TypeError),
]


@pytest.mark.parametrize("label,Y,exc", BAD_Y, ids=[b[0] for b in BAD_Y])
@pytest.mark.parametrize("method", ["loss", "gradients"])
def test_bad_Y_to_loss_and_gradients(method, label, Y, exc):
    model = mlp.Model([3, 2], seed=0)
    with pytest.raises(exc, match="Y"):
        getattr(model, method)(np.zeros((2, 3)), Y)


@pytest.mark.parametrize("method", ["loss", "gradients"])
@pytest.mark.parametrize("output, loss", [("softmax", "cross_entropy"),
                                          ("sigmoid", "binary_cross_entropy")])
def test_cross_entropy_targets_outside_0_1_are_refused(method, output, loss):
    # As train() refuses them: a negative one-hot gave a loss of -45.
    model = mlp.Model([3, 2], output=output, seed=0)
    with pytest.raises(ValueError, match=r"Y must hold targets in \[0, 1\]"):
        getattr(model, method)(np.ones((2, 3)), -np.eye(2), loss)
    assert getattr(model, "loss")(np.ones((2, 3)), np.eye(2) * 0.5, loss) > 0


@pytest.mark.parametrize("loss,exc", [("bogus", ValueError), (2.5, TypeError), (1, TypeError),
                                      ("MSE", ValueError)])
@pytest.mark.parametrize("method", ["loss", "gradients"])
def test_bad_loss_name(method, loss, exc):
    model = mlp.Model([3, 2], output="softmax", seed=0)
    with pytest.raises(exc, match="loss"):
        getattr(model, method)(np.zeros((1, 3)), np.zeros((1, 2)), loss)


# ---------------------------------------------------------------------------
# Layouts and dtypes that must be accepted
# ---------------------------------------------------------------------------

def _layouts(X):
    wide = np.zeros((X.shape[0], 2 * X.shape[1]), dtype=X.dtype)
    wide[:, ::2] = X
    tall = np.zeros((2 * X.shape[0], X.shape[1]), dtype=X.dtype)
    tall[::2] = X
    return {
        "fortran": np.asfortranarray(X),
        "column stride": wide[:, ::2],
        "row stride": tall[::2],
        "transposed": np.ascontiguousarray(X.T).T,
        "list": X.tolist(),
    }


def test_non_contiguous_and_converted_inputs_give_same_answer(dtype):
    model = mlp.Model([4, 5, 3], output="softmax", dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 4)).astype(dtype)
    Y = rng.uniform(0, 1, (6, 3)).astype(dtype)
    ref_out, ref_loss_value = model.forward(X), model.loss(X, Y, "cross_entropy")
    ref_g, _ = model.gradients(X, Y, "cross_entropy")
    for name, Xv in _layouts(X).items():
        for Yname, Yv in _layouts(Y).items():
            assert model.loss(Xv, Yv, "cross_entropy") == ref_loss_value, (name, Yname)
        np.testing.assert_array_equal(model.forward(Xv), ref_out, err_msg=name)
        np.testing.assert_array_equal(model.predict(Xv), model.predict(X))
        np.testing.assert_array_equal(model.gradients(Xv, Y, "cross_entropy")[0][0], ref_g[0])
    # Integer inputs are converted, and give what their float conversion gives.
    # (Integers above 1 get a warning: they are usually unscaled pixels.)
    Xi = rng.integers(-3, 4, (6, 4))
    with pytest.warns(UserWarning, match="/ 255"):
        np.testing.assert_array_equal(model.forward(Xi), model.forward(Xi.astype(dtype)))
        np.testing.assert_array_equal(model.forward(Xi.astype(np.int8)),
                                      model.forward(Xi.astype(dtype)))
    # float64 data into a float32 model (and the other way round).
    other = np.float64 if dtype == np.float32 else np.float32
    Xo = rng.standard_normal((6, 4)).astype(other)
    np.testing.assert_array_equal(model.forward(Xo), model.forward(Xo.astype(dtype)))
    assert model.forward(Xo).dtype == dtype
    # The caller's array is not modified.
    Xf = np.asfortranarray(X.copy())
    model.forward(Xf)
    np.testing.assert_array_equal(Xf, X)


def test_save_names_what_is_wrong_with_the_path(tmp_path):
    model = mlp.Model([3, 2], seed=0)
    with pytest.raises(ValueError, match="path is empty"):
        model.save("")
    with pytest.raises(ValueError, match="is a directory"):
        model.save(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        model.save(tmp_path / "missing" / "m.npz")
    assert list(tmp_path.iterdir()) == []  # and no temporary file left behind
