"""The exponential output and the Poisson deviance (half of it, as
scikit-learn's MLPRegressor(loss="poisson") computes it): the table entries,
the kernel's loss and gradient against numpy and finite differences, every
training path against a reference step, the target check, and the estimator
against scikit-learn's."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse

import mlp
from mlp import _kernels as K
from mlp.activations import ACTIVATIONS, LOSS_NAMES, LOSSES

from conftest import ACT, LOSS, ref_loss, ref_loss_and_gradients, ref_sgd, require, unflatten


def _counts(rng, n, k, scale=1.0):
    return rng.poisson(scale * np.exp(rng.standard_normal((n, k)) * 0.5)).astype(np.float64)


def _net(dtype, sizes=(5, 7, 3), hidden="tanh", seed=0):
    model = mlp.Model(list(sizes), activation=hidden, output="exp", dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    model.parameters[...] = (model.parameters * 0.5).astype(dtype)
    for b in model.biases:
        b[...] = rng.standard_normal(b.shape) * 0.3
    return model


def test_the_table_pairs_the_exponential_output_with_the_poisson_loss():
    assert LOSSES["poisson"].output == "exp"
    assert "poisson" in LOSS_NAMES
    exp = ACTIVATIONS["exp"]
    assert exp.output and not exp.hidden and exp.regression and exp.default_loss == "poisson"
    assert mlp.Model([2, 3, 1], output="exp").is_regressor
    with pytest.raises(ValueError, match="output='exp'"):
        mlp.Model([2, 3, 1], output="identity").loss(np.zeros((2, 2)), np.zeros(2),
                                                      loss="poisson")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_batch_loss_is_half_the_poisson_deviance(dtype):
    rng = np.random.default_rng(1)
    z = (rng.standard_normal((9, 3)) * 2).astype(dtype)
    y = _counts(rng, 9, 3).astype(dtype)
    y[0] = 0  # y log y is 0 there
    a = np.exp(z.astype(np.float64)).astype(dtype)
    got = K.batch_loss(a, z, y, LOSS["poisson"])
    expected, terms = ref_loss(a, z, y, "poisson")
    assert got == pytest.approx(expected, rel=1e-12)
    # scikit-learn's formula: y log(y / mu) - y + mu, mu = exp(z).
    from scipy.special import xlogy
    z64, y64 = z.astype(np.float64), y.astype(np.float64)
    mu = np.exp(z64)
    assert got == pytest.approx(float((xlogy(y64, y64 / mu) - y64 + mu).sum()), rel=1e-12)
    # Zero where the prediction is exact, and never negative.
    exact = np.log(np.array([[1.0, 2.0, 7.0]]))
    assert K.batch_loss(np.exp(exact), exact, np.array([[1.0, 2.0, 7.0]]),
                        LOSS["poisson"]) == pytest.approx(0, abs=1e-14)
    assert (terms >= -1e-12).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("hidden", ["relu", "tanh", "identity"])
def test_loss_and_gradients_match_the_numpy_reference(dtype, hidden):
    rng = np.random.default_rng(2)
    model = _net(dtype, hidden=hidden)
    X = rng.standard_normal((11, 5)).astype(dtype)
    Y = _counts(rng, 11, 3).astype(dtype)
    total = model.loss(X, Y, loss="poisson")
    grads_w, grads_b = model.gradients(X, Y, loss="poisson")
    Ws, bs = unflatten(model.parameters, model.layer_sizes)
    ref_total, dWs, dbs = ref_loss_and_gradients(Ws, bs, X, Y, ACT[hidden], ACT["exp"],
                                                 "poisson")
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    assert total == pytest.approx(ref_total, rel=rtol)
    for got, want in zip(list(grads_w) + list(grads_b), dWs + dbs):
        np.testing.assert_allclose(got, want, rtol=0, atol=rtol * max(1.0, np.abs(want).max()))


def test_the_gradient_is_the_loss_s_derivative_by_finite_differences():
    rng = np.random.default_rng(3)
    model = _net(np.float64, hidden="tanh")
    X = rng.standard_normal((8, 5))
    Y = _counts(rng, 8, 3)
    network = model.kernel_network
    sizes = np.asarray(model.layer_sizes, np.intp)
    work = np.empty(K.workspace_size(sizes, 8, network.hidden_activation))
    grads = np.empty(model.n_params)
    K.loss_and_gradients(network, LOSS["poisson"], X, Y, grads, work, 8)
    base = model.parameters.copy()
    h = 1e-6
    numeric = np.empty(model.n_params)
    for i in range(model.n_params):
        values = []
        for step in (h, -h):
            model.parameters[...] = base
            model.parameters[i] += step
            values.append(K.loss_and_gradients(network, LOSS["poisson"], X, Y, None, work, 8))
        numeric[i] = (values[0] - values[1]) / (2 * h)
    model.parameters[...] = base
    np.testing.assert_allclose(grads, numeric, rtol=1e-6, atol=1e-7)


# (rows, n_threads, sparse X): feature-major and row-major batches, one and
# two workers, the dense and the sparse first layer.
PATHS = [(16, 1, False), (16, 2, False), (16, 2, True), (1100, 2, False), (1100, 2, True)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"n{p[0]}-w{p[1]}-sp{int(p[2])}")
def test_every_training_path_takes_the_reference_step(path, dtype):
    rows, threads, sparse = path
    rng = np.random.default_rng(4)
    model = _net(dtype, sizes=(12, 9, 2), hidden="relu")
    X = rng.standard_normal((rows, 12))
    X[rng.random(X.shape) < 0.8] = 0
    Y = _counts(rng, rows, 2)
    expected, _ = ref_sgd(model.parameters, model.layer_sizes, X, Y, ACT["relu"], ACT["exp"],
                          "poisson", 0.05)
    history = mlp.train(model, scipy.sparse.csr_matrix(X) if sparse else X.astype(dtype), Y,
                        iterations=1, batch_size=rows, learning_rate=0.05, loss="poisson",
                        progress=False, n_threads=threads, seed=0)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.parameters, expected, **tol)
    assert np.isfinite(history.loss).all()


def test_training_defaults_to_poisson_and_refuses_negative_targets():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 3)).astype(np.float32)
    y = rng.poisson(np.exp(0.8 * X[:, 0] - 0.5 * X[:, 1] + 0.5)).astype(np.float32)[:, None]
    model = mlp.Model([3, 16, 1], output="exp", seed=0)
    before = model.loss(X, y, loss="poisson")
    assert model.loss(X, y) == before  # exp models default to the Poisson loss
    mlp.train(model, X, y, epochs=30, batch_size=20, progress=False, seed=0)
    assert model.loss(X, y) < 0.7 * before
    assert (model.predict(X) > 0).all()
    with pytest.raises(ValueError, match=r"y must hold targets >= 0 for loss='poisson'"):
        mlp.train(model, X, y - 2, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r">= 0 for loss='poisson'"):
        model.loss(X, y - 2)


def test_onnx_export_of_an_exp_output_matches_predict(tmp_path):
    require("onnxruntime")
    import onnxruntime

    model = _net(np.float32)
    X = np.random.default_rng(6).standard_normal((10, 5)).astype(np.float32)
    path = tmp_path / "poisson.onnx"
    model.to_onnx(path)
    session = onnxruntime.InferenceSession(str(path))
    (got,) = session.run(None, {session.get_inputs()[0].name: X})
    np.testing.assert_allclose(got, model.forward(X), rtol=1e-5)


# -- the estimator ------------------------------------------------------------------

def _poisson_regression(n_outputs, n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6))
    mu = np.exp(0.5 * X[:, :n_outputs] - 0.3 * X[:, 1:n_outputs + 1] ** 2 + 0.5)
    Y = rng.poisson(mu).astype(np.float64)
    return X, (Y[:, 0] if n_outputs == 1 else Y)


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("n_outputs", [1, 2])
@pytest.mark.parametrize("alpha, weighted", [(0.0, False), (1e-2, True)])
def test_lbfgs_regressor_follows_scikit_learn(activation, n_outputs, alpha, weighted):
    require("sklearn")
    from sklearn import neural_network
    from mlp.sklearn import MLPRegressor

    X, y = _poisson_regression(n_outputs)
    weight = np.random.default_rng(1).uniform(0.2, 3, len(y)) if weighted else None
    params = dict(loss="poisson", hidden_layer_sizes=(7,), activation=activation,
                  solver="lbfgs", alpha=alpha, max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = neural_network.MLPRegressor(**params).fit(X, y, sample_weight=weight)
        ours = MLPRegressor(dtype="float64", **params).fit(X, y, sample_weight=weight)
    assert ours.out_activation_ == theirs.out_activation_ == "exp"
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    for mine, reference in zip(ours.coefs_ + ours.intercepts_,
                               theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, reference, rtol=0,
                                   atol=1e-6 * np.abs(reference).max())
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-6)


def test_stochastic_regressor_reports_scikit_learns_loss():
    """One full-batch epoch from the same weights: the same loss_ (the
    deviance with its constant terms), in float64."""
    require("sklearn")
    from sklearn import neural_network
    from mlp.sklearn import MLPRegressor

    X, y = _poisson_regression(1)
    params = dict(loss="poisson", hidden_layer_sizes=(7,), solver="sgd", momentum=0,
                  learning_rate_init=0.01, batch_size=len(X), max_iter=3, shuffle=False,
                  random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = neural_network.MLPRegressor(**params).fit(X, y)
        ours = MLPRegressor(dtype="float64", **params).fit(X, y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-8)
