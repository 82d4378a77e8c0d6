"""BLAS thread limits: chosen per call, restored afterwards, and safe next to numpy's own
BLAS; mlp's own worker threads across Python threads and forks."""
import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import mlp
from mlp._kernels import MAX_TRAIN_WORKERS
from mlp._threads import (INFERENCE_MIN_MACS, SHORT_RUN_MACS, SMALL_STEP_MACS, blas_threads,
                          default_threads, inference_threads, train_workers)

from conftest import run_in_threads


def _blas_threads_now():
    return sorted((i["filepath"], i["num_threads"]) for i in threadpool_info()
                  if i["user_api"] == "blas")


def test_train_workers():
    layers = (784, 300, 100, 10)
    assert train_workers(None, 30, layers) == default_threads()
    macs_per_row = 784 * 300 + 300 * 100 + 100 * 10
    assert train_workers(None, SMALL_STEP_MACS // macs_per_row, layers) == 1
    assert train_workers(3, 30, layers) == 3
    assert train_workers(10 ** 6, 30, layers) == MAX_TRAIN_WORKERS
    # A short run stays on one worker; asked for, it gets what it asks for.
    short = SHORT_RUN_MACS // (30 * macs_per_row) - 1
    assert train_workers(None, 30, layers, steps=short) == 1
    assert train_workers(None, 30, layers, steps=short + 2) == default_threads()
    assert train_workers(2, 30, layers, steps=1) == 2


def test_inference_threads_follow_the_size_of_the_call():
    layers = (784, 300, 100, 10)
    macs_per_row = 784 * 300 + 300 * 100 + 100 * 10
    # A tiny call stays on the calling thread; a big one uses every core.
    assert inference_threads(None, 1, (20, 10, 3)) == 1
    assert inference_threads(None, INFERENCE_MIN_MACS // macs_per_row, layers) == 1
    big = inference_threads(None, 10_000, layers)
    assert big == min(default_threads(), MAX_TRAIN_WORKERS)
    assert inference_threads(None, -(-INFERENCE_MIN_MACS // 230), (23, 10)) == big
    # The workers claim blocks of rows or units and the caller never waits
    # for one that has not started, so one row of MNIST's network is enough.
    assert inference_threads(None, 1, layers) == big
    # n_threads, when given, is what the call gets.
    assert inference_threads(1, 10_000, layers) == 1
    assert inference_threads(3, 1, (20, 10, 3)) == 3
    with pytest.raises(ValueError, match="n_threads"):
        inference_threads(0, 10, layers)


def test_forward_asks_inference_threads_with_the_rows_it_was_given(monkeypatch):
    import mlp.model

    seen = []
    real = mlp.model.inference_threads

    def spy(n_threads, rows, layer_sizes):
        seen.append((n_threads, rows, tuple(layer_sizes)))
        return real(n_threads, rows, layer_sizes)

    monkeypatch.setattr(mlp.model, "inference_threads", spy)
    model = mlp.Model([6, 5, 3], seed=0)
    X = np.random.default_rng(0).random((7, 6))
    model.predict(X)
    model.predict_proba(X, n_threads=2)
    assert seen == [(None, 7, (6, 5, 3)), (2, 7, (6, 5, 3))]


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                      ("2", TypeError), (True, TypeError)])
def test_bad_thread_counts_are_refused(bad, exc):
    model = mlp.Model([4, 3], seed=0)
    with pytest.raises(exc, match="n_threads"):
        model.forward(np.zeros((2, 4)), n_threads=bad)
    with pytest.raises(exc, match="n_threads"):
        mlp.train(model, np.zeros((2, 4)), [0, 1], iterations=1, n_threads=bad, progress=False)


def test_limits_do_not_leak_into_user_code():
    before = _blas_threads_now()
    model = mlp.Model([30, 20, 5], seed=0)
    X = np.random.default_rng(0).random((50, 30))
    model.forward(X, n_threads=1)
    mlp.train(model, X, np.arange(50) % 5, iterations=3, n_threads=1, progress=False)
    with pytest.raises(ValueError):
        with blas_threads(1):
            raise ValueError("the limit must be undone on errors too")
    assert _blas_threads_now() == before


def test_overlapping_calls_restore_the_user_setting():
    before = _blas_threads_now()
    models = [mlp.Model([200, 100, 10], seed=s) for s in range(2)]
    X = np.random.default_rng(0).random((400, 200))

    def work(model):
        for _ in range(20):
            model.forward(X, n_threads=1)

    threads = [threading.Thread(target=work, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _blas_threads_now() == before


def test_numpy_between_mlp_calls_computes_the_same_numbers():
    """A user loop that alternates numpy's BLAS with mlp's (scipy's) BLAS.

    Two OpenBLAS pools spinning against each other on two cores were measured
    at 4x (and once ~50x) slower than either alone when mlp ran these calls on
    2 threads; with the defaults the mix stays ~1.05x the parts run apart
    (bench/bench_blas_mix.py measures that ratio: timings belong in bench/,
    where a busy machine cannot fail a build). Here: the same numbers, and
    the user's BLAS settings as they were."""
    rng = np.random.default_rng(0)
    A = rng.random((256, 784), dtype=np.float32)
    W = rng.random((300, 784), dtype=np.float32)
    model = mlp.Model([784, 300, 100, 10], seed=0)
    X = rng.random((256, 784), dtype=np.float32)
    Y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 256)]
    before = _blas_threads_now()
    expected_product = A @ W.T
    expected_prediction = model.predict(X)
    expected_loss = model.loss(X, Y)
    for _ in range(20):
        np.testing.assert_array_equal(A @ W.T, expected_product)
        np.testing.assert_array_equal(model.predict(X), expected_prediction)
        assert model.loss(X, Y) == expected_loss
    assert _blas_threads_now() == before


def test_default_thread_counts(monkeypatch):
    """Short calls default to 1 thread; training and n_threads > 1 use mlp's own
    workers with BLAS on 1 thread (see mlp/_threads.py)."""
    import contextlib

    import mlp.model

    seen = []

    @contextlib.contextmanager
    def record(n):
        seen.append(n)
        yield

    # Training limits BLAS through Model.locked(), which is in mlp.model.
    monkeypatch.setattr(mlp.model, "blas_threads", record)
    model = mlp.Model([784, 300, 10], output="softmax", seed=0)
    X = np.zeros((256, 784), dtype=np.float32)
    y = np.arange(256) % 10
    Y = np.eye(10, dtype=np.float32)[y]
    model.forward(X)
    model.loss(X, Y)
    model.gradients(X, Y)
    mlp.training_step(model, X, Y, 0.1)
    assert seen == [1, 1, 1, 1]
    # n_threads > 1 means mlp's own workers, each calling a single-threaded
    # BLAS: BLAS stays at 1 and the workers get the count.
    workers = []
    # (Model.forward runs on _kernels.infer, training's passes on forward.)
    real_forward = mlp.model._kernels.infer

    def spy_forward(*args, **kwargs):
        workers.append(args[-1])
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(mlp.model._kernels, "infer", spy_forward)
    model.forward(X, n_threads=2)
    assert seen[-1] == 1 and workers[-1] == 2
    # Left to choose, a call this big (256 rows of 784-300-10) uses every core.
    model.forward(X)
    assert workers[-1] == min(default_threads(), MAX_TRAIN_WORKERS)
    mlp.Model([20, 10, 3], seed=0).forward(np.zeros((4, 20), dtype=np.float32))
    assert workers[-1] == 1
    mlp.train(model, X, y, iterations=1, batch_size=30, progress=False)
    assert seen[-1] == 1
    mlp.train(model, X, y, iterations=1, batch_size=256, n_threads=2, progress=False)
    assert seen[-1] == 1


def test_limits_apply_from_any_python_thread():
    """threadpoolctl lets only the first thread that set an OpenBLAS limit set it
    again; mlp's calls come from any thread, so they must take effect there too."""
    from mlp._threads import _blas_controllers

    with blas_threads(1):  # the main thread sets a limit first
        pass
    seen = []

    def work():
        with blas_threads(1):
            seen.extend(pool.get() for pool in _blas_controllers())

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert seen and all(n == 1 for n in seen)


@pytest.mark.parametrize("n_threads", [2, 3])
def test_inference_on_workers_gives_the_same_numbers(n_threads):
    """forward/predict/evaluate with n_threads split the rows between mlp's
    workers. Every row is computed as on one thread, up to rounding: BLAS
    rounds a row differently depending on where it falls in a block."""
    rng = np.random.default_rng(1)
    model = mlp.Model([50, 40, 7], output="softmax", seed=3, dtype=np.float32)
    X = rng.random((1000, 50), dtype=np.float32)
    y = rng.integers(0, 7, 1000)
    before = _blas_threads_now()
    one = model.forward(X)
    many = model.forward(X, n_threads=n_threads)
    np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict(X, n_threads=n_threads), many.argmax(axis=1))
    expected = np.count_nonzero(many.argmax(axis=1) == y)
    assert mlp.evaluate(model, X, y, n_threads=n_threads).correct == expected
    # A block too small to split by rows splits each layer's units.
    for rows in (1, 5, 64):
        np.testing.assert_allclose(model.forward(X[:rows], n_threads=n_threads),
                                   model.forward(X[:rows]), rtol=1e-5, atol=1e-6)
    assert _blas_threads_now() == before


def _train_and_predict(model, X, y, n_threads=2):
    mlp.train(model, X, y, iterations=30, batch_size=40, seed=1, n_threads=n_threads,
              progress=False)
    return model.forward(X[:50], n_threads=n_threads)


def test_calls_from_several_python_threads_at_once():
    """mlp's worker threads stay between calls (_parallel.h's pool); one call
    at a time owns them and a concurrent one starts threads of its own.
    Both must compute what the same call computes alone, bit for bit (the
    same split, only other threads)."""
    rng = np.random.default_rng(2)
    X = rng.random((400, 30), dtype=np.float32)
    y = rng.integers(0, 5, 400)
    start = mlp.Model([30, 64, 32, 5], seed=0, dtype=np.float32)
    alone = _train_and_predict(start.copy(), X, y)
    results = []

    def work():
        for _ in range(5):
            results.append(_train_and_predict(start.copy(), X, y))

    run_in_threads(work)
    assert len(results) == 20
    for result in results:
        np.testing.assert_array_equal(result, alone)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_its_own_workers():
    """The pool's threads do not exist in a child forked after they were
    started (multiprocessing's fork start method, joblib's fallbacks): the
    child must start its own rather than wait for them forever."""
    rng = np.random.default_rng(3)
    X = rng.random((300, 20), dtype=np.float32)
    y = rng.integers(0, 4, 300)
    start = mlp.Model([20, 48, 4], seed=0, dtype=np.float32)
    expected = _train_and_predict(start.copy(), X, y)  # the parent's pool is running
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process that has threads: the
        # point of this test.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        status = 1
        try:
            result = _train_and_predict(start.copy(), X, y)
            os.write(write_end, b"same" if np.array_equal(result, expected) else b"different")
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung waiting for its workers")
    answer = os.read(read_end, 100)
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer == b"same"


@pytest.mark.parametrize("n_threads", [None, 2])
def test_numpy_between_training_calls_trains_as_alone(n_threads):
    """The same mix with short mlp.train runs. numpy's pool keeps spinning for
    ~0.1 s after each matmul; by default so short a run stays on one worker
    and does not compete with it (asked for two workers it costs about 2x:
    bench/bench_blas_mix.py measures it). Either way the runs must train
    exactly as they do alone."""
    rng = np.random.default_rng(0)
    A = rng.random((256, 784), dtype=np.float32)
    W = rng.random((300, 784), dtype=np.float32)
    X = rng.random((600, 784), dtype=np.float32)
    y = rng.integers(0, 10, 600)
    start = mlp.Model([784, 300, 100, 10], seed=0)
    n = 5

    def train_once(model, seed):
        mlp.train(model, X, y, iterations=20, batch_size=30, seed=seed, n_threads=n_threads,
                  progress=False)

    alone = start.copy()
    for i in range(n):
        train_once(alone, i)

    before = _blas_threads_now()
    model = start.copy()
    for i in range(n):
        A @ W.T
        train_once(model, i)
    np.testing.assert_array_equal(model._params, alone._params)
    assert _blas_threads_now() == before
