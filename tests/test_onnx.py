"""mlp.onnx: exported graphs run in onnxruntime and agree with Model.forward."""
from __future__ import annotations

import os

import numpy as np
import pytest

import mlp
from mlp.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS

from conftest import require, run_python

onnx = require("onnx")
ort = require("onnxruntime")

import mlp.onnx  # noqa: E402  (after the skips: it is the module under test)

# Agreement within float32 rounding: a few layers of sums of tens of
# products, each rounded at eps32 = 1.2e-7, and the runtimes order their sums
# differently.
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
# A float64 graph computes gelu's Erf in float32 (onnxruntime has no float64
# Erf): float32 rounding in every hidden unit, carried through two layers.
GELU_FLOAT64_TOL = dict(rtol=1e-6, atol=1e-7)


def _run(path, X):
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": X})[0]


def _model(activation, output, dtype, sizes=(20, 16, 12, 5), seed=0):
    model = mlp.Model(list(sizes), activation=activation, output=output, init="xavier",
                      dtype=dtype, seed=seed)
    # Non-zero biases, so that a mis-wired bias would show.
    rng = np.random.default_rng(seed + 1)
    for b in model.biases:
        b[...] = rng.standard_normal(b.shape) * 0.5
    return model


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("output", sorted(OUTPUT_ACTIVATIONS))
@pytest.mark.parametrize("activation", sorted(HIDDEN_ACTIVATIONS))
def test_onnxruntime_matches_forward(tmp_path, activation, output, dtype):
    model = _model(activation, output, dtype)
    path = tmp_path / "model.onnx"
    model.to_onnx(path)
    X = np.random.default_rng(2).standard_normal((37, 20)).astype(dtype)
    got = _run(path, X)
    assert got.dtype == dtype and got.shape == (37, 5)
    tolerance = GELU_FLOAT64_TOL if (activation, dtype) == ("gelu", np.float64) else TOL[dtype]
    np.testing.assert_allclose(got, model.forward(X), **tolerance)


def test_float64_model_exported_as_float32(tmp_path):
    model = _model("tanh", "softmax", np.float64)
    path = tmp_path / "model.onnx"
    proto = mlp.onnx.to_onnx(model, path, dtype=np.float32)
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in proto.graph.initializer)
    X = np.random.default_rng(3).standard_normal((9, 20))
    got = _run(path, X.astype(np.float32))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, model.forward(X), rtol=2e-5, atol=2e-6)


def test_batch_dimension_is_dynamic(tmp_path):
    model = _model("relu", "softmax", np.float32, sizes=(6, 4, 3))
    path = tmp_path / "model.onnx"
    model.to_onnx(path)
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    for n in (1, 2, 1500):
        X = np.random.default_rng(n).random((n, 6), dtype=np.float32)
        got = session.run(None, {"input": X})[0]
        np.testing.assert_allclose(got, model.forward(X), **TOL[np.float32])
    dims = session.get_inputs()[0].shape
    assert dims == ["batch", 6]


def test_graph_is_gemm_and_activation_nodes(tmp_path):
    model = _model("sigmoid", "softmax", np.float32, sizes=(8, 7, 6, 3))
    proto = model.to_onnx(tmp_path / "m.onnx")
    assert [n.op_type for n in proto.graph.node] == [
        "Gemm", "Sigmoid", "Gemm", "Sigmoid", "Gemm", "Softmax"]
    softmax = proto.graph.node[-1]
    assert [(a.name, a.i) for a in softmax.attribute] == [("axis", -1)]
    assert all(dict((a.name, a.i) for a in n.attribute) == {"transB": 1}
               for n in proto.graph.node if n.op_type == "Gemm")
    assert {o.domain: o.version for o in proto.opset_import}[""] >= 13
    # The written file is the returned proto and passes onnx's checker.
    written = onnx.load(os.fspath(tmp_path / "m.onnx"))
    onnx.checker.check_model(written)
    assert written.SerializeToString() == proto.SerializeToString()
    props = {p.key: p.value for p in written.metadata_props}
    assert props == {"layer_sizes": "8,7,6,3", "activation": "sigmoid", "output": "softmax"}


def test_single_layer_and_overwrite(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    model = _model("relu", "sigmoid", np.float32, sizes=(4, 2))
    model.to_onnx(path)
    X = np.eye(4, dtype=np.float32)
    np.testing.assert_allclose(_run(path, X), model.forward(X), **TOL[np.float32])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_bad_paths_and_arguments(tmp_path):
    model = _model("relu", "softmax", np.float32, sizes=(4, 2))
    with pytest.raises(ValueError, match="does not exist"):
        model.to_onnx(tmp_path / "missing" / "m.onnx")
    with pytest.raises(ValueError, match="is a directory"):
        model.to_onnx(tmp_path)
    with pytest.raises(ValueError, match="path is empty; give a file name, such as 'model.onnx'"):
        model.to_onnx("")
    with pytest.raises(TypeError, match="path"):
        model.to_onnx(42)
    with pytest.raises(TypeError, match="dtype"):
        model.to_onnx(tmp_path / "m.onnx", dtype=np.int32)
    with pytest.raises(TypeError, match="mlp.Model"):
        mlp.onnx.to_onnx("not a model", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_import_mlp_does_not_import_onnx(tmp_path):
    code = ("import sys, mlp; m = mlp.Model([3, 2]); "
            "assert not {'onnx', 'onnxruntime'} & set(sys.modules), 'onnx imported'")
    run_python(code, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("activation,output", [("relu", "softmax"), ("sigmoid", "sigmoid"),
                                               ("tanh", "softmax")])
def test_trained_model_on_mnist_test_images(tmp_path, mnist, activation, output):
    train, _, test = mnist
    model = mlp.Model([784, 64, 32, 10], activation=activation, output=output, init="xavier",
                      seed=0)
    loss = "cross_entropy" if output == "softmax" else "mse"
    mlp.train(model, train.images[:10000], train.labels[:10000], epochs=1, batch_size=10,
              learning_rate=0.1 if output == "softmax" else 3.0, loss=loss, sampling="shuffle",
              seed=0, progress=False)
    path = tmp_path / "mnist.onnx"
    model.to_onnx(path)
    got = _run(path, test.images)
    expected = model.forward(test.images)
    np.testing.assert_allclose(got, expected, **TOL[np.float32])
    # The runtime classifies the test images as the model does (a training
    # run long enough to make the comparison about a real classifier).
    agree = np.count_nonzero(got.argmax(axis=1) == expected.argmax(axis=1))
    assert agree >= len(test.labels) - 2
    assert np.mean(got.argmax(axis=1) == test.labels) > 0.85


def test_a_diverged_model_or_one_that_overflows_float32_is_not_exported(tmp_path):
    model = mlp.Model([4, 3, 2], seed=0)
    model.weights[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.to_onnx(tmp_path / "nan.onnx")
    wide = mlp.Model([4, 3, 2], dtype=np.float64, seed=0)
    wide.weights[0][0, 0] = 1e300
    with pytest.raises(ValueError, match="do not fit in float32"):
        wide.to_onnx(tmp_path / "wide.onnx", dtype=np.float32)
    wide.to_onnx(tmp_path / "wide.onnx")  # in its own dtype it fits
    assert not (tmp_path / "nan.onnx").exists()
