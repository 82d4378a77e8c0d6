"""The network: parameters, forward pass, loss, gradients, save and load."""
from __future__ import annotations

import json
import os
import threading

import numpy as np

from . import _kernels
from ._files import NpzReader, atomic_write
from ._threads import blas_threads, call_threads
from ._validation import (
    check_choice,
    check_dtype,
    check_int,
    check_matrix,
    check_path,
    check_seed,
)

HIDDEN_ACTIVATIONS = {"sigmoid": 0, "tanh": 1, "relu": 2}
OUTPUT_ACTIVATIONS = {"sigmoid": 0, "softmax": 3}
LOSSES = {"mse": 0, "cross_entropy": 1}
INITIALISERS = ("normal", "xavier", "he")

FORMAT_NAME = "mlp.Model"
FORMAT_VERSION = 1

# Rows per block in forward(), loss() and gradients(): big enough that the
# GEMMs run near peak, small enough that the activations stay in cache and
# memory does not grow with the batch.
_FORWARD_CHUNK = 1024
# Fewer rows than this per worker and a forward pass is cheaper on one
# thread than the cost of starting another.
_ROWS_PER_WORKER = 64


def loss_code(loss, output):
    """The kernel's code for `loss`, refusing pairings it has no gradient for."""
    check_choice(loss, LOSSES, "loss")
    if loss == "cross_entropy" and output != "softmax":
        raise ValueError(
            f"loss='cross_entropy' needs a model with output='softmax'; this model's output is {output!r}"
        )
    return LOSSES[loss]


class Model:
    """A fully connected feed-forward network.

    Parameters
    ----------
    layer_sizes : sequence of int
        Units per layer, input first, e.g. ``(784, 300, 100, 10)``.
    activation : {"sigmoid", "tanh", "relu"}
        Activation of the hidden layers.
    output : {"sigmoid", "softmax"}
        Activation of the output layer.
    init : {"normal", "xavier", "he"}
        ``"normal"`` draws every weight and bias from N(0, 1), as the
        notebook does. ``"xavier"`` is Glorot uniform, U(-r, r) with
        r = sqrt(6 / (fan_in + fan_out)), and zero biases. ``"he"`` is
        N(0, 2 / fan_in) with zero biases, for ReLU.
    dtype : float32 or float64
    seed : int, np.random.Generator or None
        Seeds the initialisation.

    Attributes
    ----------
    weights : tuple of ndarray
        ``weights[l]`` has shape (layer_sizes[l+1], layer_sizes[l]).
    biases : tuple of ndarray
        ``biases[l]`` has shape (layer_sizes[l+1],).

    Both are live, C-contiguous views into one flat parameter array:
    writing into them changes the model.
    """

    def __init__(self, layer_sizes, *, activation="sigmoid", output="sigmoid", init="normal",
                 dtype=np.float32, seed=None):
        sizes = _check_layer_sizes(layer_sizes)
        check_choice(activation, HIDDEN_ACTIVATIONS, "activation")
        check_choice(output, OUTPUT_ACTIVATIONS, "output")
        check_choice(init, INITIALISERS, "init")
        self._setup(sizes, activation, output, check_dtype(dtype))
        self.init = init
        self._initialise(init, np.random.default_rng(check_seed(seed)))

    def _setup(self, sizes, activation, output, dtype):
        self.layer_sizes = tuple(sizes)
        self.activation = activation
        self.output = output
        self.dtype = dtype
        self._sizes = np.asarray(sizes, dtype=np.intp)
        n_params = sum(o * (i + 1) for i, o in zip(sizes[:-1], sizes[1:]))
        self._params = np.zeros(n_params, dtype=dtype)
        self.weights, self.biases = _layer_views(self._params, sizes)
        self._hidden_code = HIDDEN_ACTIVATIONS[activation]
        self._output_code = OUTPUT_ACTIVATIONS[output]
        self._lock = threading.Lock()
        self._work = np.empty(0, dtype=dtype)

    def _initialise(self, init, rng):
        if init == "normal":
            # Biases first, then weights, as the notebook draws them.
            for b in self.biases:
                b[...] = rng.standard_normal(b.shape)
            for w in self.weights:
                w[...] = rng.standard_normal(w.shape)
            return
        for w, b in zip(self.weights, self.biases):
            fan_out, fan_in = w.shape
            if init == "xavier":
                bound = np.sqrt(6.0 / (fan_in + fan_out))
                w[...] = rng.uniform(-bound, bound, size=w.shape)
            else:
                w[...] = rng.standard_normal(w.shape) * np.sqrt(2.0 / fan_in)
            b[...] = 0

    # -- properties -----------------------------------------------------------

    @property
    def n_inputs(self):
        return self.layer_sizes[0]

    @property
    def n_outputs(self):
        return self.layer_sizes[-1]

    @property
    def n_params(self):
        return self._params.size

    def __repr__(self):
        return (f"Model({list(self.layer_sizes)}, activation={self.activation!r}, "
                f"output={self.output!r}, init={self.init!r}, dtype={self.dtype.name})")

    def copy(self):
        """An independent model with the same configuration and parameters."""
        twin = Model.__new__(Model)
        twin._setup(self.layer_sizes, self.activation, self.output, self.dtype)
        twin.init = self.init
        twin._params[...] = self._params
        return twin

    def _workspace(self, rows, copies=1):
        # Kernels release the GIL, so two threads may share a model; callers
        # hold self._lock while they use the buffer returned here.
        need = copies * _kernels.workspace_size(self._sizes, rows)
        if self._work.size < need:
            self._work = np.empty(need, dtype=self.dtype)
        return self._work

    def _check_x(self, X, name="X"):
        return check_matrix(X, name, n_columns=self.n_inputs, dtype=self.dtype)

    def _check_targets(self, Y, n_rows, name="Y"):
        return check_matrix(Y, name, n_columns=self.n_outputs, dtype=self.dtype, n_rows=n_rows,
                            targets=True)

    # -- inference ------------------------------------------------------------

    def forward(self, X, *, n_threads=None):
        """Output activations for X.

        X : array-like (n, layer_sizes[0]); converted to the model's dtype.
        n_threads : worker threads sharing the rows (default 1: see
            mlp/_threads.py for why); each runs a single-threaded BLAS.
        Returns ndarray (n, layer_sizes[-1]) of the model's dtype.
        """
        threads = call_threads(n_threads)
        X = self._check_x(X)
        with self._lock, blas_threads(1):
            return self._forward_locked(X, threads)

    def _forward_locked(self, X, n_threads=1):
        # X is validated, the caller holds self._lock and has limited BLAS to
        # one thread: rows are split between n_threads of mlp's own workers
        # (at least _ROWS_PER_WORKER each), so no BLAS pool is woken.
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        if X.shape[0] == 0:
            return out
        workers = max(1, min(n_threads, X.shape[0] // _ROWS_PER_WORKER))
        chunk = min(-(-X.shape[0] // workers), _FORWARD_CHUNK)
        _kernels.forward(self._params, self._sizes, self._hidden_code, self._output_code,
                         X, out, self._workspace(chunk, workers), chunk, workers)
        return out

    def predict(self, X, *, n_threads=None):
        """Predicted class per row of X: int64 ndarray (n,)."""
        return np.argmax(self.forward(X, n_threads=n_threads), axis=1).astype(np.int64)

    def predict_proba(self, X, *, n_threads=None):
        """Class probabilities (n, n_outputs): the softmax output, or the
        sigmoid outputs normalised to sum to 1 per row."""
        a = self.forward(X, n_threads=n_threads)
        if self.output == "softmax":
            return a
        total = a.sum(axis=1, keepdims=True)
        # A row of sigmoids can only sum to 0 by underflowing everywhere;
        # call that row uniform rather than divide by zero.
        zero = total == 0
        if zero.any():
            a[zero[:, 0]] = 1
            total[zero] = self.n_outputs
        return a / total

    # -- loss and gradients ---------------------------------------------------

    def loss(self, X, Y, loss="mse"):
        """Sum over the batch of the per-sample loss, as a Python float.

        X : (n, layer_sizes[0]); Y : (n, layer_sizes[-1]) targets (one-hot rows
        for classification). ``"mse"`` is 0.5 * ||a - y||^2 per sample;
        ``"cross_entropy"`` is -sum(y * log softmax(z)), for softmax models only.
        """
        return self._loss_and_gradients(X, Y, loss, want_gradients=False)[0]

    def gradients(self, X, Y, loss="mse"):
        """Gradient of ``self.loss(X, Y, loss)`` with respect to every parameter.

        Returns (weight_grads, bias_grads): lists of ndarrays shaped like
        ``weights`` and ``biases``, in the model's dtype.
        """
        _, flat = self._loss_and_gradients(X, Y, loss, want_gradients=True)
        w, b = _layer_views(flat, self.layer_sizes)
        return list(w), list(b)

    def _loss_and_gradients(self, X, Y, loss, want_gradients):
        code = loss_code(loss, self.output)
        X = self._check_x(X)
        Y = self._check_targets(Y, X.shape[0])
        # Without want_gradients the kernel never touches grads; any buffer of
        # the right type satisfies its signature.
        grads = np.empty_like(self._params) if want_gradients else self._params
        chunk = min(X.shape[0], _FORWARD_CHUNK)
        with self._lock, blas_threads(1):
            total = _kernels.loss_and_gradients(
                self._params, self._sizes, self._hidden_code, self._output_code, code,
                X, Y, grads, self._workspace(chunk), want_gradients, chunk)
        return float(total), grads

    # -- persistence ----------------------------------------------------------

    def save(self, path):
        """Write the model to `path` as an .npz archive with JSON metadata.

        No pickle is involved. The file is written to a temporary name and
        renamed into place, so a failure never leaves a half-written model
        where a good one stood; it gets the permissions the umask gives a new
        file. The name is used exactly as given.

        Raises ValueError if a parameter is NaN or infinite: :meth:`load`
        would refuse such a file.
        """
        path = check_path(path)
        if not _kernels.all_finite(self._params):
            raise ValueError(
                f"cannot save a model whose parameters hold NaN or infinity "
                f"({_non_finite_summary(self)}); Model.load would refuse the file. This is "
                f"what a diverged training run leaves: train again with a lower learning_rate.")
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "layer_sizes": list(self.layer_sizes),
            "activation": self.activation,
            "output": self.output,
            "init": self.init,
            "dtype": self.dtype.name,
        }
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"W{l}"] = w
            arrays[f"b{l}"] = b
        atomic_write(path, lambda fh: np.savez(fh, **arrays))

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`. Never unpickles anything.

        Raises FileNotFoundError when there is no file at `path`, and
        ValueError for any file that is not a complete, intact model file:
        every size the file declares is checked against its real length
        before anything is allocated.
        """
        path = check_path(path)
        if os.path.isdir(path):
            raise FileNotFoundError(f"{path!r} is a directory, not a model file")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no model file at {path!r}")
        try:
            with NpzReader(path) as archive:
                return cls._from_archive(archive)
        except ValueError as exc:
            raise ValueError(f"{path!r} is not a valid mlp model file: {exc}") from None

    @classmethod
    def _from_archive(cls, archive):
        names = archive.names
        if "meta" not in names or archive.header("meta")[1] != np.uint8 \
                or len(archive.header("meta")[0]) != 1:
            raise ValueError("missing metadata")
        meta = _parse_meta(archive.read("meta").tobytes())
        if meta.get("format") != FORMAT_NAME:
            raise ValueError("metadata does not describe an mlp.Model")
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {meta.get('version')!r}, this mlp reads "
                             f"{FORMAT_VERSION}")
        try:
            sizes = _check_layer_sizes(meta["layer_sizes"])
            activation = check_choice(meta["activation"], HIDDEN_ACTIVATIONS, "activation")
            output = check_choice(meta["output"], OUTPUT_ACTIVATIONS, "output")
            # Only the two names save() writes: np.dtype() would parse anything.
            dtype = check_choice(meta["dtype"], ("float32", "float64"), "dtype")
            init = meta.get("init", "normal")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad metadata ({exc})") from None
        expected = {}
        for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            expected[f"W{l}"] = (fan_out, fan_in)
            expected[f"b{l}"] = (fan_out,)
        extra = set(names) - {"meta"} - set(expected)
        if extra:
            raise ValueError(f"unexpected arrays {sorted(extra)}")
        # Every array's size is checked against the file before the model,
        # sized from the metadata, is allocated.
        for name, shape in expected.items():
            got_shape, got_dtype = archive.header(name)
            if got_shape != shape or got_dtype != np.dtype(dtype):
                raise ValueError(f"array {name} has shape {got_shape} and dtype {got_dtype}, "
                                 f"expected {shape} and {dtype}")
        model = cls.__new__(cls)
        model._setup(sizes, activation, output, np.dtype(dtype))
        model.init = init if init in INITIALISERS else "normal"
        for l, (w, b) in enumerate(zip(model.weights, model.biases)):
            archive.read(f"W{l}", out=w)
            archive.read(f"b{l}", out=b)
        if not _kernels.all_finite(model._params):
            raise ValueError(f"parameters hold NaN or infinity ({_non_finite_summary(model)})")
        return model


def _parse_meta(raw):
    """The metadata dict from its JSON bytes; ValueError for anything else."""
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError covers malformed JSON and integers too long to convert;
        # RecursionError, JSON nested deeper than Python's recursion limit.
        raise ValueError("metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise ValueError("metadata does not describe an mlp.Model")
    return meta


def _non_finite_summary(model):
    """Which arrays hold NaN or infinity, e.g. "W0, b1: 12 of 2,410 parameters"."""
    names = [f"{p}{l}" for l, (w, b) in enumerate(zip(model.weights, model.biases))
             for p, a in (("W", w), ("b", b)) if not np.isfinite(a).all()]
    count = int(np.count_nonzero(~np.isfinite(model._params)))
    return f"{', '.join(names)}: {count:,} of {model.n_params:,} parameters"


def _check_layer_sizes(layer_sizes):
    if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__len__"):
        raise TypeError(f"layer_sizes must be a sequence of ints, got {layer_sizes!r}")
    sizes = [check_int(s, "layer_sizes[%d]" % i, minimum=1) for i, s in enumerate(layer_sizes)]
    if len(sizes) < 2:
        raise ValueError(f"layer_sizes needs at least an input and an output size, got {sizes}")
    if len(sizes) - 1 > _kernels.MAX_WEIGHT_LAYERS:
        raise ValueError(f"layer_sizes allows at most {_kernels.MAX_WEIGHT_LAYERS} weight layers")
    # BLAS takes 32-bit dimensions.
    if max(sizes) >= 2**31:
        raise ValueError("layer_sizes entries must be below 2**31")
    return sizes


def _layer_views(flat, sizes):
    """Split a flat parameter-layout array into per-layer (weights, biases) views."""
    weights, biases = [], []
    off = 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        weights.append(flat[off:off + fan_out * fan_in].reshape(fan_out, fan_in))
        off += fan_out * fan_in
        biases.append(flat[off:off + fan_out])
        off += fan_out
    return tuple(weights), tuple(biases)
