"""compute_dtype="bfloat16": every matrix product's inputs (weights and
activations) rounded to bfloat16, sums in float32; parameters, optimizer
state, losses and elementwise maths float32. Held against numpy references
that round the same inputs and sum in float64, within bounds that float32
products would break (each test checks that too), so that the tests hold
for any order of summation, portable or native."""
import warnings

import numpy as np
import pytest

import mlp
from mlp import _kernels
from mlp.cli import main
from mlp.sklearn import MLPClassifier, MLPRegressor

from conftest import ACT, LOSS, run_python

BF16 = "bfloat16"


@pytest.fixture(autouse=True)
def _quiet_portable_warning():
    # The once-per-process warning has its own test (in a subprocess).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "compute_dtype='bfloat16'", RuntimeWarning)
        yield


def bf16(values):
    """values rounded to the nearest bfloat16 (ties to even), as float32."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32)


def product(a, b):
    """a @ b on bfloat16-rounded inputs, summed exactly enough (float64),
    and the bound a float32 sum of the same terms stays within: 2**-20
    (16 float32 ulps) of the sum of the terms' magnitudes."""
    ra, rb = bf16(a).astype(np.float64), bf16(b).astype(np.float64)
    return ra @ rb, 2.0 ** -20 * (np.abs(ra) @ np.abs(rb)) + 1e-30


def mostly_zeros(rng, n, d, zeros=0.8):
    x = rng.random((n, d)).astype(np.float32)
    x[x < zeros] = 0
    return x


def bf16_model(sizes, **options):
    return mlp.Model(list(sizes), seed=0, compute_dtype=BF16, **options)


# -- the products -----------------------------------------------------------

@pytest.mark.parametrize("n", [1, 7, 40, 300])
def test_one_layer_is_the_product_of_rounded_inputs_within_float32_sums(n):
    """z = bf16(x) @ bf16(W).T + b, whatever path the rows take (gemv's
    single row, feature-major blocks, row-major ones, two workers)."""
    rng = np.random.default_rng(n)
    model = bf16_model([50, 30], output="identity")
    x = rng.standard_normal((n, 50)).astype(np.float32)
    reference, bound = product(x, model.weights[0].T)
    reference += model.biases[0]
    for threads in (1, 2):
        error = np.abs(model.forward(x, n_threads=threads) - reference)
        assert np.all(error <= bound + 1e-6 * np.abs(model.biases[0])), threads
    # float32 products are farther from it than the bound: the test can fail.
    model.compute_dtype = None
    assert np.any(np.abs(model.forward(x) - reference) > bound)


def _reference_forward(model, x):
    """Every layer's output, bf16 products, float32 elementwise (relu, softmax)."""
    acts = [x]
    for l, (w, b) in enumerate(zip(model.weights, model.biases)):
        z = (product(acts[-1], w.T)[0]).astype(np.float32) + b
        if l < len(model.weights) - 1:
            acts.append(np.maximum(z, 0))
        else:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            acts.append(e / e.sum(axis=1, keepdims=True))
    return acts


@pytest.mark.parametrize("sparse_input", [False, True])
def test_forward_matches_the_reference_dense_and_from_the_non_zero_inputs(sparse_input):
    """Three layers: a float32 rounding difference may move a hidden value
    across a bfloat16 rounding boundary (one bf16 ulp of one input), so the
    bound is 1e-4 on the probabilities, which float32 products exceed."""
    rng = np.random.default_rng(1)
    model = bf16_model([196, 64, 32, 10])
    x = mostly_zeros(rng, 300, 196)
    reference = _reference_forward(model, x)[-1]
    for threads in (1, 2):
        with model.locked():
            out = model.forward_unchecked(x, threads, sparse_input=sparse_input)
        assert np.abs(out - reference).max() < 1e-4, threads
    model.compute_dtype = None
    assert np.abs(model.forward(x) - reference).max() > 1e-4


def test_gradients_match_the_reference():
    """loss_and_gradients: every GEMM of the backward pass on rounded
    inputs too (deltas, activations, weights), the loss in float32. A delta
    or activation whose float32 value differs from the reference's in the
    last bit may round to the neighbouring bfloat16: the bound, 2e-3 of the
    largest gradient, allows that; float32 products miss it by far."""
    rng = np.random.default_rng(2)
    model = bf16_model([40, 24, 5])
    x = rng.standard_normal((64, 40)).astype(np.float32)
    labels = rng.integers(0, 5, 64)
    y = np.eye(5, dtype=np.float32)[labels]
    a0, a1, p = _reference_forward(model, x)
    d2 = (p - y).astype(np.float32)
    g_w1 = product(d2.T, a1)[0]
    d1 = product(d2, model.weights[1])[0].astype(np.float32) * (a1 > 0)
    g_w0 = product(d1.T, a0)[0]
    reference = np.concatenate([g_w0.ravel(), d1.sum(0), g_w1.ravel(), d2.sum(0)])
    loss = -np.log(p[np.arange(64), labels]).sum()

    def gradients(m):
        grads = np.empty(m.n_params, np.float32)
        with m.locked():
            total = _kernels.loss_and_gradients(m.kernel_network, LOSS["cross_entropy"], x, y,
                                                grads, m.workspace(64), 64)
        return total, grads

    total, grads = gradients(model)
    scale = np.abs(reference).max()
    assert np.abs(grads - reference).max() < 2e-3 * scale
    assert total == pytest.approx(loss, rel=1e-5)
    model.compute_dtype = None
    assert np.abs(gradients(model)[1] - reference).max() > 1e-2 * scale


# -- training ----------------------------------------------------------------

def _sgd_step_reference(model, x, labels, lr):
    """Parameters after one plain-SGD step on the batch, bf16 products."""
    n = len(x)
    acts = _reference_forward(model, x)
    delta = acts[-1].copy()
    delta[np.arange(n), labels] -= 1
    weights, biases = [], []
    for l in range(len(model.weights) - 1, -1, -1):
        w = model.weights[l]
        weights.insert(0, w - lr / n * product(delta.T, acts[l])[0])
        biases.insert(0, model.biases[l] - lr / n * delta.sum(0))
        if l:
            delta = product(delta, w)[0].astype(np.float32) * (acts[l] > 0)
    return weights, biases


@pytest.mark.parametrize("batch, threads, sparse_input", [
    (16, 1, False),    # feature-major batches
    (64, 1, False), (64, 2, False),       # units split
    (64, 2, True),     # sparse first layer, weights kept by input in panels
    (1024, 2, False),  # samples split
    (1024, 2, True),   # samples split, sparse first layer
])
def test_a_training_step_matches_the_reference(batch, threads, sparse_input):
    rng = np.random.default_rng(batch)
    model = bf16_model([196, 48, 24, 10])
    x = mostly_zeros(rng, batch, 196)
    labels = rng.integers(0, 10, batch)
    weights, biases = _sgd_step_reference(model, x, labels, 0.1)
    data = _kernels.TrainingData(x, labels.astype(np.int64), batch_size=batch,
                                 feature_major=batch <= _kernels.FEATURE_MAJOR_MAX_BATCH,
                                 sparse_input=sparse_input)
    run = _kernels.TrainingRun(model.kernel_network, data, loss=LOSS["cross_entropy"],
                               rule=mlp.SGD(0.1).kernel_rule(), n_workers=threads)
    with model.locked():
        assert _kernels.train_steps(run, np.arange(batch, dtype=np.int64), np.full(1, 0.1), 0,
                                    np.zeros(1)) == 1
    for got, want in zip(model.weights + model.biases, weights + biases):
        assert np.abs(got - want).max() < 1e-6


def _train_steps(model, x, labels, optimizer, sparse_input, steps=6, batch=32, **options):
    state = mlp.optimizers.OptimizerState.fresh(optimizer, model.n_params, np.float32)
    data = _kernels.TrainingData(x, labels.astype(np.int64), batch_size=batch,
                                 feature_major=False, sparse_input=sparse_input)
    run = _kernels.TrainingRun(model.kernel_network, data, loss=LOSS["cross_entropy"],
                               rule=optimizer.kernel_rule(), state=state.kernel_buffers(),
                               n_workers=2, **options)
    order = np.arange(steps * batch, dtype=np.int64) % x.shape[0]
    with model.locked():
        assert _kernels.train_steps(run, order, np.full(steps, optimizer.learning_rate), 0,
                                    np.zeros(steps)) == steps
    return model.parameters.copy()


@pytest.mark.parametrize("optimizer, options", [
    (mlp.SGD(0.1), {}), (mlp.SGD(0.05, momentum=0.9), {}),
    (mlp.SGD(0.1), {"max_norm": 0.5}), (mlp.SGD(0.05, momentum=0.9), {"max_norm": 0.5})])
def test_the_sparse_first_layer_trains_as_the_dense_one(optimizer, options):
    """Several steps, so that the sparse path's rounded copy of the weights
    it keeps by input must follow every update (and max-norm's caps)."""
    rng = np.random.default_rng(3)
    x = mostly_zeros(rng, 96, 196)
    labels = rng.integers(0, 10, 96)
    dense = _train_steps(bf16_model([196, 40, 10]), x, labels, optimizer, False, **options)
    sparse = _train_steps(bf16_model([196, 40, 10]), x, labels, optimizer, True, **options)
    start = bf16_model([196, 40, 10]).parameters
    assert np.abs(sparse - dense).max() < 1e-4 * np.abs(dense - start).max()


def test_a_csr_x_trains_as_the_dense_one():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(4)
    x = mostly_zeros(rng, 64, 100)
    labels = rng.integers(0, 10, 64)
    csr = scipy_sparse.csr_matrix(x)
    as_csr = _kernels.CsrMatrix(csr.data.astype(np.float32), csr.indices.astype(np.int32),
                                csr.indptr.astype(np.int64), 100)
    dense = _train_steps(bf16_model([100, 20, 10]), x, labels, mlp.SGD(0.1), True)
    listed = _train_steps(bf16_model([100, 20, 10]), as_csr, labels, mlp.SGD(0.1), True)
    assert np.abs(listed - dense).max() < 1e-6


def test_training_reaches_about_the_float32_loss():
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((4, 20)) * 2
    labels = rng.integers(0, 4, 2000)
    x = (centres[labels] + rng.standard_normal((2000, 20))).astype(np.float32)
    losses = {}
    for compute_dtype in (None, BF16):
        model = mlp.Model([20, 64, 32, 4], seed=0, compute_dtype=compute_dtype)
        history = mlp.train(model, x, labels, epochs=5, batch_size=32, seed=0)
        losses[compute_dtype] = history.loss[-1]
        assert mlp.evaluate(model, x, labels).accuracy > 0.9
    assert losses[BF16] == pytest.approx(losses[None], rel=0.1, abs=0.01)


def test_float32_by_default_and_unchanged_after_a_round_trip_through_bf16():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((50, 30)).astype(np.float32)
    model = mlp.Model([30, 20, 5], seed=0)
    assert model.compute_dtype is None and not model.kernel_network.bf16
    before = model.forward(x)
    model.compute_dtype = BF16
    assert model.kernel_network.bf16
    assert not np.array_equal(model.forward(x), before)
    model.compute_dtype = None
    np.testing.assert_array_equal(model.forward(x), before)


# -- checks, files, CLI, estimators ---------------------------------------------

def test_float64_and_unknown_compute_dtypes_are_refused():
    with pytest.raises(ValueError, match="compute_dtype.*float32.*float64"):
        mlp.Model([4, 3], dtype=np.float64, compute_dtype=BF16)
    model = mlp.Model([4, 3], dtype=np.float64)
    with pytest.raises(ValueError, match="compute_dtype"):
        model.compute_dtype = BF16
    assert model.compute_dtype is None
    with pytest.raises(ValueError, match="compute_dtype must be None.*'bf16'"):
        mlp.Model([4, 3], compute_dtype="bf16")
    with pytest.raises(TypeError, match="compute_dtype"):
        mlp.Model([4, 3], compute_dtype=np.float16)
    sizes = np.array([4, 3], dtype=np.intp)
    with pytest.raises(ValueError, match="float32"):
        _kernels.Network(np.zeros(15), sizes, ACT["relu"], ACT["softmax"], compute_dtype=BF16)
    with pytest.raises(ValueError, match="compute_dtype"):
        _kernels.Network(np.zeros(15, np.float32), sizes, ACT["relu"], ACT["softmax"],
                         compute_dtype="float16")


def test_save_load_copy_and_pickle_keep_compute_dtype(tmp_path):
    import pickle

    model = bf16_model([6, 4, 3])
    path = tmp_path / "m.npz"
    model.save(path)
    for twin in (mlp.Model.load(path), model.copy(), pickle.loads(pickle.dumps(model))):
        assert twin.compute_dtype == BF16 and twin.kernel_network.bf16
    plain = tmp_path / "plain.npz"
    mlp.Model([6, 4, 3]).save(plain)
    assert mlp.Model.load(plain).compute_dtype is None
    assert "compute_dtype='bfloat16'" in repr(model)


def test_a_file_with_a_bad_compute_dtype_is_refused(tmp_path):
    import json
    import zipfile

    path = tmp_path / "m.npz"
    bf16_model([6, 4, 3]).save(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    for bad in ("float8", 3):
        raw = np.load(path)["meta"].tobytes()
        meta = json.loads(raw)
        meta["compute_dtype"] = bad
        buffer = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        arrays = {name: np.load(path)[name] for name in np.load(path).files}
        arrays["meta"] = buffer
        broken = tmp_path / f"bad_{bad}.npz"
        np.savez(broken, **arrays)
        with pytest.raises(ValueError, match="compute_dtype"):
            mlp.Model.load(broken)
    assert members  # the original file was read


def test_the_cli_flag(tiny_mnist, tmp_path, capsys):
    saved = tmp_path / "m.npz"
    assert main(["train", "--data", str(tiny_mnist), "--iterations", "3", "--layers",
                 "784,16,10", "--compute-dtype", BF16, "--no-progress", "--seed", "1",
                 "--save", str(saved)]) == 0
    assert mlp.Model.load(saved).compute_dtype == BF16
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # refused by argparse, from the choices
        main(["train", "--data", str(tiny_mnist), "--compute-dtype", "float16"])
    assert info.value.code == 2
    assert "--compute-dtype" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_mnist), "--iterations", "1", "--no-progress",
                 "--dtype", "float64", "--compute-dtype", BF16]) == 2
    err = capsys.readouterr().err
    assert "--compute-dtype" in err and "--dtype" in err and len(err.strip().splitlines()) == 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_estimators_take_compute_dtype(estimator):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((120, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) if estimator is MLPClassifier else x[:, 0]
    fitted = estimator(hidden_layer_sizes=(16,), compute_dtype=BF16, max_iter=5,
                       random_state=0).fit(x, y)
    assert fitted.get_params()["compute_dtype"] == BF16
    assert fitted.model_.compute_dtype == BF16
    # set_params then a warm start computes as it now says.
    fitted.set_params(compute_dtype=None, warm_start=True).fit(x, y)
    assert fitted.model_.compute_dtype is None
    with pytest.raises(ValueError, match="compute_dtype"):
        estimator(compute_dtype="bf16").fit(x, y)
    with pytest.raises(ValueError, match="compute_dtype"):
        estimator(compute_dtype=BF16, dtype="float64").fit(x, y)


def test_portable_path_warns_once_per_process(tmp_path):
    """Where the bfloat16 products take the portable path (forced with
    MLP_BF16_PATH=portable where the build honours it), one RuntimeWarning
    however many models; on a native path, none."""
    script = (
        "import warnings, mlp, numpy as np\n"
        "from mlp import _kernels\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    for _ in range(3):\n"
        "        m = mlp.Model([8, 4, 2], compute_dtype='bfloat16', seed=0)\n"
        "        m.forward(np.ones((3, 8), np.float32))\n"
        "    m.compute_dtype = None\n"
        "    m.compute_dtype = 'bfloat16'\n"
        "n = sum('compute_dtype' in str(w.message) for w in caught)\n"
        "print(_kernels.bf16_path(), n)\n")
    out = run_python(script, tmp_path, env={"MLP_BF16_PATH": "portable"},
                     capture_output=True, text=True).stdout.split()
    path, count = out[0], int(out[1])
    assert count == (1 if path == "portable" else 0)


def test_large_bf16_batches_on_a_native_path_keep_the_first_layer_dense_on_images():
    """Samples split on a native bfloat16 path: the first layer's bfloat16
    GEMMs for inputs about as sparse as images, the sparse path only for
    sparser ones; float32, the portable path and small batches unchanged."""
    rng = np.random.default_rng(8)
    images = mostly_zeros(rng, 64, 784, zeros=0.81)
    sparser = mostly_zeros(rng, 64, 784, zeros=0.95)
    large = 2 * _kernels.SPLIT_SAMPLES_MIN_ROWS
    native = _kernels.bf16_path() != "portable"
    assert _kernels.trains_sparse_input(images, 3, large, 2, False)
    assert _kernels.trains_sparse_input(images, 3, large, 2, False, bf16=True) == (not native)
    assert _kernels.trains_sparse_input(sparser, 3, large, 2, False, bf16=True)
    assert _kernels.trains_sparse_input(images, 3, 64, 2, False, bf16=True)
    assert _kernels.trains_sparse_input(images, 3, large, 2, False, True, bf16=True)


def test_loss_and_gradients_of_a_csr_x_match_the_dense_ones():
    """The full-batch path (L-BFGS's) on a CsrMatrix: its first layer from
    the non-zero inputs rounds the weights, the inputs and the deltas as the
    dense GEMMs do, so both agree to float32 sums; float32 products differ."""
    scipy_sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(9)
    x = mostly_zeros(rng, 48, 60)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 48)]
    csr = scipy_sparse.csr_matrix(x)
    as_csr = _kernels.CsrMatrix(csr.data.astype(np.float32), csr.indices.astype(np.int32),
                                csr.indptr.astype(np.int64), 60)
    model = bf16_model([60, 16, 4])

    def gradients(inputs):
        grads = np.empty(model.n_params, np.float32)
        with model.locked():
            total = _kernels.loss_and_gradients(model.kernel_network, LOSS["cross_entropy"],
                                                inputs, y, grads, model.workspace(48), 48)
        return total, grads

    (dense_loss, dense), (listed_loss, listed) = gradients(x), gradients(as_csr)
    scale = np.abs(dense).max()
    assert listed_loss == pytest.approx(dense_loss, rel=1e-5)
    assert np.abs(listed - dense).max() < 1e-4 * scale
    model.compute_dtype = None
    assert np.abs(gradients(x)[1] - dense).max() > 1e-3 * scale
