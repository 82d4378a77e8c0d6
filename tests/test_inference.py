"""Inference's own float32 kernels (_dense.h, _kernels.infer): every path this
CPU runs (its vector path, the portable one, BLAS) gives the outputs of a
float64 numpy reference to float32 rounding, for every activation, odd sizes
and row counts that leave tails; float64 and training stay on BLAS."""

import numpy as np
import pytest

import mlp
from mlp import _kernels
from mlp.activations import ACTIVATIONS

from conftest import assert_close, ref_forward, run_in_threads, run_python, unflatten

HIDDEN = sorted(a.name for a in ACTIVATIONS.values() if a.hidden)
OUTPUT = sorted(a.name for a in ACTIVATIONS.values() if a.output)
# Odd fan-ins (tails of the 16-wide vectors, fan-ins under 16), odd unit
# counts (tails of the unit blocks) and MNIST's shape.
SIZES = [(784, 300, 100, 10), (37, 19, 7, 3), (5, 40, 9), (1, 1), (16, 33)]
# Tails of the row blocks, one row (the units shared between workers), and
# blocks big enough for the rows to be shared.
ROWS = [1, 2, 3, 7, 13, 129, 200]


@pytest.fixture(params=_kernels.inference_paths())
def path(request):
    previous = _kernels._set_inference_path(request.param)
    yield request.param
    _kernels._set_inference_path(previous)


def _reference(model, X):
    Ws, bs = unflatten(model.parameters, model.layer_sizes)
    _, acts = ref_forward(Ws, bs, X, _kernels.ACTIVATIONS[model.activation],
                          _kernels.ACTIVATIONS[model.output])
    return acts[-1]


def _outputs(model, X, n_threads, fused=True):
    with model.locked():
        return model.forward_unchecked(X, n_threads, fused=fused)


def test_the_paths_listed_include_the_chosen_one_and_the_fallbacks():
    assert _kernels.inference_path() in _kernels.inference_paths()
    assert {"blas", "portable"} <= set(_kernels.inference_paths())


@pytest.mark.parametrize("activation", HIDDEN)
@pytest.mark.parametrize("output", OUTPUT)
def test_every_path_computes_the_reference(path, activation, output):
    rng = np.random.default_rng(0)
    for sizes in SIZES:
        model = mlp.Model(list(sizes), activation=activation, output=output, seed=1)
        for n in ROWS:
            X = rng.standard_normal((n, sizes[0])).astype(np.float32)
            ref = _reference(model, X)
            for n_threads in (1, 2):
                assert_close(_outputs(model, X, n_threads), ref, rtol=1e-4, atol=1e-5,
                             err_msg=f"{path} {sizes} {n} rows {n_threads} threads")


@pytest.mark.parametrize("n_threads", [1, 2])
def test_every_path_on_mostly_zero_inputs(path, n_threads):
    """The sparse first layer, then the other layers on the chosen path."""
    rng = np.random.default_rng(2)
    model = mlp.Model([300, 40, 17, 10], seed=0)
    X = rng.standard_normal((150, 300)).astype(np.float32)
    X[rng.random(X.shape) < 0.9] = 0
    ref = _reference(model, X)
    for sparse_input in (True, False):
        with model.locked():
            got = model.forward_unchecked(X, n_threads, sparse_input=sparse_input)
        assert_close(got, ref, rtol=1e-4, atol=1e-5, err_msg=f"sparse_input={sparse_input}")


def test_every_path_finds_non_finite_inputs_and_propagates_nan(path):
    model = mlp.Model([21, 9, 4], seed=0)
    X = np.ones((5, 21), dtype=np.float32)
    X[3, 20] = np.nan  # in the vectors' tail
    with pytest.raises(ValueError, match="NaN"):
        model.forward(X)
    # A NaN weight makes its unit NaN, and ReLU keeps it NaN.
    model.weights[0][2, 0] = np.nan
    out = model.forward(np.ones((3, 21), dtype=np.float32))
    assert np.isnan(out).all()


def test_float64_stays_on_blas(path):
    """Bit for bit what training's forward pass gives."""
    model = mlp.Model([37, 19, 3], dtype=np.float64, seed=0)
    X = np.random.default_rng(3).standard_normal((13, 37))
    np.testing.assert_array_equal(_outputs(model, X, 1), _outputs(model, X, 1, fused=False))


def test_training_validation_scores_do_not_depend_on_the_inference_path():
    """Early stopping scores the validation set as training computes, so a
    regressor's R² (which any rounding changes) is the same on every path."""
    pytest.importorskip("sklearn")
    from mlp.sklearn import MLPRegressor
    rng = np.random.default_rng(4)
    X = rng.standard_normal((300, 23)).astype(np.float32)
    y = X @ rng.standard_normal(23) + 0.1 * rng.standard_normal(300)
    scores = {}
    previous = _kernels.inference_path()
    try:
        for name in _kernels.inference_paths():
            _kernels._set_inference_path(name)
            reg = MLPRegressor(hidden_layer_sizes=(31,), early_stopping=True, max_iter=5,
                               n_iter_no_change=50, random_state=0)
            with pytest.warns(Warning):  # max_iter reached
                reg.fit(X, y)
            scores[name] = reg.validation_scores_
    finally:
        _kernels._set_inference_path(previous)
    first = scores[_kernels.inference_paths()[0]]
    for name, got in scores.items():
        assert got == first, name


def test_the_environment_chooses_the_path_and_unknown_names_are_refused(tmp_path):
    code = "from mlp import _kernels; print(_kernels.inference_path())"
    for name in ("portable", "blas"):
        out = run_python(code, tmp_path, env={"MLP_DENSE_PATH": name},
                         capture_output=True, text=True).stdout.strip()
        assert out == name
    with pytest.raises(ValueError, match="path must be one of"):
        _kernels._set_inference_path("avx9000")


@pytest.mark.parametrize("n_threads", [2, 3])
def test_workers_claiming_blocks_give_the_single_thread_outputs(path, n_threads):
    """infer's workers claim blocks of rows (_kernels.infer_block_rows), or
    for a few rows blocks of the first layer's units: on _dense.h's loops a
    row's sums do not depend on the block it is in, so the outputs are the
    single thread's bit for bit; on sgemm, to rounding."""
    rng = np.random.default_rng(5)
    model = mlp.Model([37, 19, 7, 3], seed=2)
    for n in (1, 2, 3, 5, 7, 8, 13, 24, 25, 129, 1000):
        X = rng.standard_normal((n, 37)).astype(np.float32)
        one = _outputs(model, X, 1)
        many = _outputs(model, X, n_threads)
        fused = _kernels.fused_max_rows()
        if n <= fused:
            np.testing.assert_array_equal(many, one, err_msg=f"{path} {n} rows")
        else:
            assert_close(many, one, rtol=1e-5, atol=1e-6, err_msg=f"{path} {n} rows")


def test_infer_blocks_share_the_rows_and_fit_the_workspace(path):
    fused = _kernels.fused_max_rows()
    for n in (2, 3, 8, 17, 100, 1000, 10_000):
        for workers in (1, 2, 3):
            for chunk in (1, 7, 1024):
                block = _kernels.infer_block_rows(n, workers, chunk)
                assert 1 <= block <= chunk
                per = -(-n // workers)
                if fused and per <= fused:
                    # Equal shares, one block each.
                    assert block == min(per, chunk)
                else:
                    assert block <= per


def test_inference_from_several_python_threads_at_once():
    """A call that finds the worker pool in use by another runs its blocks
    on its own thread: the same outputs as the call alone."""
    rng = np.random.default_rng(6)
    model = mlp.Model([40, 30, 5], seed=0)
    X = rng.standard_normal((300, 40)).astype(np.float32)
    alone = {n: model.forward(X[:n], n_threads=2) for n in (3, 10, 300)}

    def work():
        for _ in range(50):
            for n, expected in alone.items():
                assert_close(model.forward(X[:n], n_threads=2), expected, rtol=1e-5, atol=1e-6)

    run_in_threads(work)
