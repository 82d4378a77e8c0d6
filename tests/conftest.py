"""Shared float64 numpy references for the core tests (kernels, model, training).

Everything here is written independently of mlp's compiled core: plain
numpy, float64, straight from the maths, so that the tests hold the compiled
core against a second opinion rather than against itself. (The activations'
and losses' own references sit beside their entries in mlp/activations.py.)
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# No Hypothesis test depends on the machine's speed: no deadline per example
# (200 ms by default, which a busy 2-core machine can miss) and no health
# check for slow data generation. Tests' own settings keep these unless they
# say otherwise.
settings.register_profile("machine-independent", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
# CI (which sets CI=true) replays the same Hypothesis examples on every run, so
# that main is green or red for a reason; locally each run explores new ones.
settings.register_profile("ci", parent=settings.get_profile("machine-independent"),
                          derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "machine-independent")

# The kernel's codes, as it exports them.
from mlp._kernels import ACTIVATIONS as ACT  # noqa: E402
from mlp._kernels import LOSSES as LOSS  # noqa: E402
from mlp import _kernels  # noqa: E402
# The numpy references of the activations and losses, plain float64 numpy
# written from the maths, beside the tables that name them.
from mlp.activations import ACTIVATIONS as ACTIVATION_TABLE  # noqa: E402
from mlp.activations import LOSSES as LOSS_TABLE  # noqa: E402
from mlp.activations import by_code  # noqa: E402

DTYPES = (np.float32, np.float64)


def kernel_train_steps(params, sizes_arr, hidden, out, loss_code, x, labels, order, batch_size,
                       lr, weight_decay, work, batch_losses, feature_major, n_workers=1, *,
                       targets=None, sample_weights=None, rule=None, state=(), steps_before=0,
                       max_norm=0.0, dropout=0.0, input_dropout=0.0, dropout_seed=0,
                       augment=None, sparse_input=None):
    """_kernels.train_steps, through the TrainingRun that train() builds, with
    plain SGD at a constant rate unless told otherwise."""
    dtype = params.dtype
    n_steps = max(1, -(-len(order) // batch_size))
    if rule is None:
        rule = _kernels.UpdateRule(_kernels.UPDATE_RULES["sgd"], weight_decay=weight_decay)
    rates = np.full(n_steps, lr) if np.ndim(lr) == 0 else np.asarray(lr, dtype=np.float64)
    data = _kernels.TrainingData(
        x, None if targets is not None else labels,
        None if targets is None else np.ascontiguousarray(targets, dtype=dtype).reshape(-1),
        None if sample_weights is None else np.asarray(sample_weights, dtype=dtype),
        batch_size=batch_size, feature_major=feature_major, sparse_input=sparse_input)
    run = _kernels.TrainingRun(
        _kernels.Network(params, sizes_arr, hidden, out), data, loss=loss_code, rule=rule,
        state=tuple(state), dropout=_kernels.Dropout(dropout, input_dropout, dropout_seed),
        augment=augment, augment_seed=dropout_seed, max_norm=max_norm, n_workers=n_workers,
        work=work)
    return _kernels.train_steps(run, order, rates, steps_before, batch_losses)


class KernelSpy:
    """Stands in for mlp._kernels in mlp.training (monkeypatch
    training._kernels) and records the sample order and batch size of every
    train_steps call: only the rows trained on, since a call may stop early
    at its time limit (on a busy machine) and the next starts where it stopped."""

    def __init__(self):
        self.orders = []
        self.batch_sizes = []

    def __getattr__(self, name):
        return getattr(_kernels, name)

    def train_steps(self, run, order, *args):
        status = _kernels.train_steps(run, order, *args)
        self.orders.append(np.array(order[:max(status, 0) * run.data.batch_size]))
        self.batch_sizes.append(run.data.batch_size)
        return status


def kernel_sgd_step(params, sizes_arr, hidden, out, loss_code, x, y, lr, weight_decay, work,
                    feature_major, **kwargs):
    """One step on the whole of x (rows in order) with targets y; returns its loss."""
    total = np.zeros(1)
    kernel_train_steps(params, sizes_arr, hidden, out, loss_code, x, None,
                       np.arange(len(x), dtype=np.int64), len(x), lr, weight_decay, work,
                       total, feature_major, targets=y, **kwargs)
    return float(total[0])


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------

def ref_act(z, code):
    """act(z) in float64, from the activation's numpy reference (mlp/activations.py)."""
    return by_code(code).reference(z)


def ref_act_prime(z, code):
    """Elementwise derivative at z (not for softmax). ReLU'(0) is taken as 0."""
    derivative = by_code(code).reference_derivative
    if derivative is None:
        raise AssertionError(code)
    return derivative(z)


# ---------------------------------------------------------------------------
# Losses and output deltas
# ---------------------------------------------------------------------------

def ref_loss(a, z, y, loss):
    """Summed loss; its terms returned too (for scale-aware tolerances)."""
    terms = LOSS_TABLE[loss].reference(a, z, y)
    return terms.sum(), terms


def ref_output_delta(z, y, out_code, loss):
    """dL/dz for the output layer, per sample, from the logits z."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a = ref_act(z, out_code)
    if loss == "cross_entropy":
        assert out_code == ACT["softmax"]
        # L = -sum_j y_j (z_j - lse(z))  =>  dL/dz_k = -y_k + (sum_j y_j) softmax_k
        return -y + y.sum(axis=1, keepdims=True) * a
    g = a - y
    if loss in ("binary_cross_entropy", "poisson"):
        # Through the sigmoid and the exponential, whose derivatives cancel.
        assert out_code == ACT[LOSS_TABLE[loss].output]
        return g
    if out_code == ACT["softmax"]:
        # J = diag(a) - a a^T is symmetric, so J^T g = a * g - a (a . g)
        return a * g - a * (a * g).sum(axis=1, keepdims=True)
    return g * ref_act_prime(z, out_code)


# ---------------------------------------------------------------------------
# Whole networks
# ---------------------------------------------------------------------------

def n_params(sizes):
    return sum(o * (i + 1) for i, o in zip(sizes[:-1], sizes[1:]))


def unflatten(flat, sizes):
    """[W0, b0, W1, b1, ...] flat layout -> lists of float64 (W, b) copies."""
    flat = np.asarray(flat, dtype=np.float64)
    Ws, bs, off = [], [], 0
    for fin, fout in zip(sizes[:-1], sizes[1:]):
        Ws.append(flat[off:off + fout * fin].reshape(fout, fin).copy())
        off += fout * fin
        bs.append(flat[off:off + fout].copy())
        off += fout
    assert off == flat.size
    return Ws, bs


def flatten(Ws, bs):
    return np.concatenate([np.concatenate([W.ravel(), b.ravel()]) for W, b in zip(Ws, bs)])


def ref_forward(Ws, bs, x, hidden_code, out_code):
    """Returns (zs, acts): pre-activations per layer and activations (acts[0] = x)."""
    a = np.asarray(x, dtype=np.float64)
    zs, acts = [], [a]
    for l, (W, b) in enumerate(zip(Ws, bs)):
        z = a @ np.asarray(W, np.float64).T + np.asarray(b, np.float64)
        a = ref_act(z, out_code if l == len(Ws) - 1 else hidden_code)
        zs.append(z)
        acts.append(a)
    return zs, acts


def ref_loss_and_gradients(Ws, bs, x, y, hidden_code, out_code, loss):
    """Summed loss and its gradient (dWs, dbs) by plain backprop in float64."""
    zs, acts = ref_forward(Ws, bs, x, hidden_code, out_code)
    total, _ = ref_loss(acts[-1], zs[-1], y, loss)
    delta = ref_output_delta(zs[-1], y, out_code, loss)
    dWs, dbs = [None] * len(Ws), [None] * len(Ws)
    for l in range(len(Ws) - 1, -1, -1):
        dWs[l] = delta.T @ acts[l]
        dbs[l] = delta.sum(axis=0)
        if l > 0:
            delta = (delta @ np.asarray(Ws[l], np.float64)) * ref_act_prime(zs[l - 1], hidden_code)
    return total, dWs, dbs


def ref_sgd(flat, sizes, x, y, hidden_code, out_code, loss, lr):
    """One SGD step p - lr/n * grad on the flat layout, in float64."""
    Ws, bs = unflatten(flat, sizes)
    total, dWs, dbs = ref_loss_and_gradients(Ws, bs, x, y, hidden_code, out_code, loss)
    return np.asarray(flat, np.float64) - lr / len(x) * flatten(dWs, dbs), total


def one_hot(labels, k, dtype=np.float64):
    out = np.zeros((len(labels), k), dtype=dtype)
    out[np.arange(len(labels)), labels] = 1
    return out


def min_abs_hidden_z(Ws, bs, x, hidden_code, out_code):
    """Distance of the nearest hidden pre-activation to the ReLU kink at 0."""
    zs, _ = ref_forward(Ws, bs, x, hidden_code, out_code)
    hidden = zs[:-1]
    return min((np.abs(z).min() for z in hidden), default=np.inf)


def assert_close(got, ref, *, rtol, atol, scale=None, slack=0.0, err_msg=""):
    """|got - ref| <= rtol*|ref| + atol*max(1, scale) + slack; scale defaults
    to max|ref|, slack (a number or one per element) to 0.

    Scaling atol with the array's magnitude keeps one tolerance meaningful
    for quantities that are sums of many products of size ~scale, where a
    result near 0 still carries rounding error of order eps * scale."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.isfinite(got).all(), f"non-finite result {err_msg}"
    if scale is None:
        scale = float(np.abs(ref).max()) if ref.size else 0.0
    atol = atol * max(1.0, scale)
    slack = np.broadcast_to(np.asarray(slack, dtype=np.float64), ref.shape)
    outside = ~(np.abs(got - ref) <= rtol * np.abs(ref) + atol + slack)
    if outside.any():
        # numpy's report, on the elements outside even with their slack.
        np.testing.assert_allclose(got[outside], ref[outside], rtol=rtol, atol=atol,
                                   err_msg=f"{err_msg} (outside their slack too, which was "
                                           f"at most {slack[outside].max():.3g})")


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return request.param


# ---------------------------------------------------------------------------
# What CI installs and fetches: a skip elsewhere, a failure in CI
# ---------------------------------------------------------------------------

def require(module):
    """Import and return an optional dependency (an extra, or torch), as
    pytest.importorskip does, skipping where it is not installed; but with
    MLP_REQUIRE_EXTRAS=1 (set by CI, which installs all of them) a missing one
    is a failure, so that no skip hides a test CI is meant to run."""
    if os.environ.get("MLP_REQUIRE_EXTRAS") == "1":
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module)


def skip_without_data(error, reason):
    """Skip a test whose data set cannot be had offline (call it in the
    ``except`` clause that caught `error`); with MLP_REQUIRE_DATA=1 (CI)
    raise `error` instead: missing data is then a failure."""
    if os.environ.get("MLP_REQUIRE_DATA") == "1":
        raise error
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mnist():
    """MNIST's (train, validation, test) splits; skips offline unless
    MLP_REQUIRE_DATA=1 (CI), where missing data is a failure."""
    from mlp.datasets import DatasetUnavailableError, load_mnist

    try:
        return load_mnist()
    except DatasetUnavailableError as error:
        skip_without_data(error, "MNIST is not available offline")


# ---------------------------------------------------------------------------
# A place no one can write, root included (CI runs as root)
# ---------------------------------------------------------------------------

@pytest.fixture
def unwritable_file():
    """An existing file in a directory where no new file can be created.
    Root ignores permission bits, so on Linux it is /proc/self/comm (procfs
    creates no files, for root either); elsewhere a file in a directory
    without write permission, which only a user other than root cannot
    bypass."""
    if os.path.isfile("/proc/self/comm"):
        yield "/proc/self/comm"
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root on a system without Linux's /proc: no directory refuses root a file")
    import tempfile

    with tempfile.TemporaryDirectory() as parent:
        locked = os.path.join(parent, "locked")
        os.mkdir(locked)
        existing = os.path.join(locked, "existing")
        with open(existing, "wb") as fh:
            fh.write(b"the existing file")
        os.chmod(locked, 0o500)
        try:
            yield existing
        finally:
            os.chmod(locked, 0o700)


# ---------------------------------------------------------------------------
# Fuzzing the file readers (tests/test_model.py, tests/test_datasets.py)
# ---------------------------------------------------------------------------

# What a reader may allocate beyond the file's own size: parsing state, the
# parsed arrays (at most a few copies of the file) and Python's own caches.
READ_ALLOWANCE = 4 * 2**20


def read_outcome(read, data):
    """Run ``read(data)`` under tracemalloc; return (exception or None, peak bytes).

    numpy reports its array allocations to tracemalloc, so an array sized
    from a header shows in the peak even where the OS would hand out the
    address space without complaint."""
    import tracemalloc

    tracemalloc.start()
    try:
        read(data)
        error = None
    except Exception as exc:  # noqa: BLE001 - the caller asserts on the type
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


def assert_rejected_cleanly(read, data, allowed=(ValueError,)):
    """``read(data)`` must succeed or raise one of `allowed`, and allocate no
    more than a small multiple of the data it was given."""
    error, peak = read_outcome(read, data)
    if error is not None and not isinstance(error, allowed):
        raise AssertionError(f"{type(error).__name__}: {error}") from error
    assert peak <= 4 * len(data) + READ_ALLOWANCE, (
        f"reading {len(data)} bytes allocated {peak} ({type(error).__name__}: {error})")
    return error


def stored_zip(members):
    """An uncompressed zip of {name: bytes} with correct CRCs, as np.savez writes."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def zip_members(data):
    """{name: bytes} of a zip archive."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def npy_bytes(array=None, *, header=None, body=b""):
    """A .npy member: `array` as np.save writes it, or a hand-written header dict
    (a string, padded as numpy pads it) followed by `body`."""
    import io

    if array is not None:
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        return buf.getvalue()
    text = header.encode("latin1")
    pad = -(len(text) + 11) % 64
    text = text + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + body


def mutate(data, edits):
    """Apply byte edits to data. Each edit is (op, position, payload):
    "set" overwrites bytes, "insert" inserts them, "delete" drops len(payload)
    bytes, "truncate" cuts the data at position."""
    out = bytearray(data)
    for op, position, payload in edits:
        position %= len(out) + 1
        if op == "set":
            out[position:position + len(payload)] = payload
        elif op == "insert":
            out[position:position] = payload
        elif op == "delete":
            del out[position:position + len(payload)]
        else:
            del out[position:]
    return bytes(out)


def run_python(code, tmp_path, env=None, **run_options):
    """Run `python -c code` as a user would, importing the same mlp as the tests
    (installed, or the built checkout), from a directory holding no mlp: `python -c`
    puts its working directory first on sys.path, and a source tree there has no
    compiled core (CI tests the installed wheel from a clone). `env` adds variables;
    `run_options` go to subprocess.run (capture_output=True, text=True, ...)."""
    import subprocess
    import sys

    import mlp

    env = dict(os.environ, **(env or {}),
               PYTHONPATH=os.path.dirname(os.path.dirname(mlp.__file__)))
    return subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env,
                          **run_options)

# ---------------------------------------------------------------------------
# Tiny IDX data sets on disk (the CLI's --data, the data loaders)
# ---------------------------------------------------------------------------

def _pixels(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 784), dtype=np.uint8)


def _idx_images(px):
    return struct.pack(">IIII", 2051, len(px), 28, 28) + px.tobytes()


def _idx_labels(y):
    return struct.pack(">II", 2049, len(y)) + np.asarray(y, np.uint8).tobytes()


def write_idx(directory, n_train=20, n_test=5, gz=True, seed=0):
    """Write four tiny IDX files; return (train_px, train_y, test_px, test_y)."""
    from mlp.data import sources

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    train_px, test_px = _pixels(n_train, seed), _pixels(n_test, seed + 1)
    train_y, test_y = np.arange(n_train) % 10, (np.arange(n_test) * 3) % 10
    blobs = {
        sources.IDX_TRAIN_IMAGES: _idx_images(train_px),
        sources.IDX_TRAIN_LABELS: _idx_labels(train_y),
        sources.IDX_TEST_IMAGES: _idx_images(test_px),
        sources.IDX_TEST_LABELS: _idx_labels(test_y),
    }
    for name, blob in blobs.items():
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(blob))
        else:
            (directory / name).write_bytes(blob)
    return train_px, train_y, test_px, test_y


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """A directory of IDX files with 120 training and 30 test images (what
    the CLI's --data takes), and a cache directory of the test's own."""
    monkeypatch.setenv("MLP_CACHE_DIR", str(tmp_path / "cache"))
    directory = tmp_path / "idx"
    write_idx(directory, n_train=120, n_test=30)
    return directory


def run_in_threads(work, n_threads=4, timeout=120):
    """Run work() on n_threads Python threads at once; fail if one has not
    returned after timeout seconds, or re-raise the first error one met."""
    import threading

    errors = []

    def guarded():
        try:
            work()
        except Exception as error:  # reported below, on the test's thread
            errors.append(error)

    threads = [threading.Thread(target=guarded) for _ in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a call never returned"
    if errors:
        raise errors[0]
