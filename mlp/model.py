"""The network: parameters, forward pass, loss, gradients, save and load."""
from __future__ import annotations

import copy
import json
import os
import threading

import numpy as np

from . import _kernels
from .activations import (ACTIVATIONS, HIDDEN_ACTIVATIONS, LOSS_NAMES, LOSSES,
                          OUTPUT_ACTIVATIONS, default_init)
from ._files import NpzReader, atomic_write
from ._threads import blas_threads, call_threads
from .hyperparams import ModelOptions
from ._validation import (
    check_choice,
    check_dtype,
    check_int,
    check_matrix,
    check_path,
    check_seed,
    check_target_range,
    check_writable,
)

# Which activations go where, and the losses: mlp/activations.py.
INITIALISERS = ("normal", "xavier", "he")

FORMAT_NAME = "mlp.Model"
FORMAT_VERSION = 2
# Version 1 files (parameters only) still load.
READABLE_VERSIONS = (1, 2)

# Rows per block in forward(), loss() and gradients(): big enough that the
# GEMMs run near peak, small enough that the activations stay in cache and
# memory does not grow with the batch.
_FORWARD_CHUNK = 1024


def loss_code(loss, output):
    """The kernel's code for `loss`, refusing pairings it has no gradient for."""
    check_choice(loss, LOSS_NAMES, "loss")
    needed = LOSSES[loss].output
    if needed is not None and output != needed:
        raise ValueError(
            f"loss={loss!r} needs a model with output={needed!r}; this model's output is {output!r}")
    return LOSSES[loss].code



def check_classifiable(outputs, task="classify"):
    """outputs, checked to hold no NaN: a diverged model's, or one that
    overflows on this input, say nothing of the classes, and argmax would
    silently call them class 0. task names what the caller wanted done."""
    if np.isnan(outputs).any():
        raise ValueError(f"the model's outputs are NaN for some rows: its parameters have "
                         f"diverged or overflow on this input, and it cannot {task} them")
    return outputs


def predicted_classes(outputs):
    """Each row's class, the index of its largest output, as int64 (NaN
    outputs are an error, see check_classifiable)."""
    return np.argmax(check_classifiable(outputs), axis=1).astype(np.int64)

class Model:
    """A fully connected feed-forward network.

    Parameters
    ----------
    layer_sizes : sequence of int
        Units per layer, input first, e.g. ``(784, 300, 100, 10)``.
    activation : {"relu", "tanh", "sigmoid", "leaky_relu", "gelu", "silu", "identity"}
        Activation of the hidden layers (mlp.activations.HIDDEN_ACTIVATIONS).
        leaky_relu's slope below zero is 0.01; gelu is the exact
        z * Phi(z); silu is z * sigmoid(z).
    output : {"softmax", "sigmoid", "identity"}
        Activation of the output layer ("identity" for regression).
    init : {None, "he", "xavier", "normal"}
        None picks "he" for ReLU-like activations (relu, leaky_relu, gelu,
        silu) and "xavier" otherwise. ``"he"`` is
        N(0, 2 / fan_in) with zero biases. ``"xavier"`` is Glorot uniform,
        U(-r, r) with r = sqrt(6 / (fan_in + fan_out)), and zero biases.
        ``"normal"`` draws every weight and bias from N(0, 1), as the
        notebook does.
    dtype : float32 or float64
    seed : int, np.random.Generator, np.random.RandomState or None
        Seeds the initialisation. A RandomState draws as the notebook does
        (``np.random.randn``: biases first, then weights), whatever init is.

    Attributes
    ----------
    weights : tuple of ndarray
        ``weights[l]`` has shape (layer_sizes[l+1], layer_sizes[l]).
    biases : tuple of ndarray
        ``biases[l]`` has shape (layer_sizes[l+1],).

        Both are live, C-contiguous views into one flat parameter array of
        the model's dtype: writing into them changes the model.
    optimizer_state : OptimizerState or None
        What the last optimizer built up (see mlp.optimizers); train()
        continues it when given an equal optimizer.
    history : History or None
        Every train() run on this model, one entry per epoch.
    """

    def __init__(self, layer_sizes, *, activation=ModelOptions.activation,
                 output=ModelOptions.output, init=ModelOptions.init, dtype=np.float32,
                 seed=None):
        sizes = _check_layer_sizes(layer_sizes)
        check_choice(activation, HIDDEN_ACTIVATIONS, "activation")
        check_choice(output, OUTPUT_ACTIVATIONS, "output")
        if init is None:
            init = default_init(activation)
        check_choice(init, INITIALISERS, "init")
        self._setup(sizes, activation, output, check_dtype(dtype))
        self.init = init
        if isinstance(seed, np.random.RandomState):
            self._initialise_as_notebook(seed)
        else:
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
        self._hidden_code = ACTIVATIONS[activation].code
        self._output_code = ACTIVATIONS[output].code
        self._bind_network()
        # Reentrant: train() holds it for the whole run, and its callbacks and
        # schedules, on the same thread between compiled calls, may predict.
        self._lock = threading.RLock()
        self._work = np.empty(0, dtype=dtype)
        self.optimizer_state = None
        self.history = None
        # The batch sampler of the last train() run, continued by the next
        # one unless it is given a seed.
        self._sampling_rng = None
        self._dropout_seed = 0

    def _initialise_as_notebook(self, random_state):
        # The notebook's Model: np.random.randn(1, n) biases, then
        # np.random.randn(n_out, n_in) weights, from the legacy generator.
        for b in self.biases:
            b[...] = random_state.randn(1, b.size)[0]
        for w in self.weights:
            w[...] = random_state.randn(*w.shape)

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

    @property
    def is_regressor(self):
        """True for a regression model, one with identity output: its
        :meth:`predict` returns the outputs, :func:`mlp.evaluate` reports
        their mean squared error and R², and training defaults to Adam."""
        return self.output == "identity"

    def __repr__(self):
        return (f"Model({list(self.layer_sizes)}, activation={self.activation!r}, "
                f"output={self.output!r}, init={self.init!r}, dtype={self.dtype.name})")

    def copy(self):
        """An independent model with the same configuration and parameters."""
        twin = Model.__new__(Model)
        twin._setup(self.layer_sizes, self.activation, self.output, self.dtype)
        twin.init = self.init
        twin._params[...] = self._params
        if self.optimizer_state is not None:
            twin.optimizer_state = self.optimizer_state.copy()
        if self.history is not None:
            twin.history = type(self.history).from_dict(self.history.to_dict())
        if self._sampling_rng is not None:
            twin._sampling_rng = copy.deepcopy(self._sampling_rng)
            twin._dropout_seed = self._dropout_seed
        return twin

    # -- pickling -------------------------------------------------------------
    # joblib and Dask send models to worker processes by pickling them. The
    # lock and the scratch buffer belong to one process, and the per-layer
    # views would unpickle as copies cut loose from _params; so they are
    # dropped here and rebuilt from _params on the other side. Everything else
    # (history, optimizer_state, ...) travels as it is.

    _PROCESS_LOCAL = ("_lock", "_work", "weights", "biases", "_network")

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in self._PROCESS_LOCAL}

    def __setstate__(self, state):
        self.__dict__.update(state)
        # joblib unpickles large arrays as read-only memory maps; training
        # writes the parameters and the optimizer's buffers in place.
        self._params = _writable(self._params)
        optimizer_state = getattr(self, "optimizer_state", None)
        if optimizer_state is not None:
            for name, buffer in optimizer_state.buffers.items():
                optimizer_state.buffers[name] = _writable(buffer)
        self.weights, self.biases = _layer_views(self._params, self.layer_sizes)
        self._bind_network()
        self._lock = threading.RLock()
        self._work = np.empty(0, dtype=self.dtype)

    def _bind_network(self):
        # The kernels' typed view of this network (_kernels.Network): the
        # parameters themselves, not a copy, so built again whenever
        # _params is replaced.
        self._network = _kernels.Network(self._params, self._sizes, self._hidden_code,
                                         self._output_code)

    def _workspace(self, rows, copies=1, at_least=0):
        # Kernels release the GIL, so two threads may share a model; callers
        # hold self._lock while they use the buffer returned here.
        need = max(copies * _kernels.workspace_size(self._sizes, rows, self._hidden_code),
                   at_least)
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

        Parameters
        ----------
        X : array-like of float, shape (n, n_inputs)
            At least one row; converted to the model's dtype (copied only
            when its dtype or memory layout differs).
        n_threads : int, optional
            Worker threads sharing the rows (default 1: see mlp/_threads.py
            for why); each runs a single-threaded BLAS.

        Returns
        -------
        ndarray of the model's dtype, shape (n, n_outputs)
            A new array.

        Raises
        ------
        TypeError
            If X is not numeric or n_threads not an int.
        ValueError
            If X is not 2-D with n_inputs columns, has no rows, or holds NaN,
            infinity or values too large for the model's dtype; or if
            n_threads < 1.

        Notes
        -----
        From 24 rows that are mostly zeros (images), the first layer is
        computed from each row's non-zero inputs only; the outputs are the
        same up to float rounding.
        """
        threads = call_threads(n_threads)
        # The kernel looks for NaN and inf in the rows as it reads them.
        checked = check_matrix(X, "X", n_columns=self.n_inputs, dtype=self.dtype, finite=False)
        out = self._forward_checked(checked, threads)
        if out is None:
            self._check_x(X)  # raises, saying what is wrong
        return out

    def _forward_checked(self, X, n_threads):
        # X checked but for NaN and inf (2-D, n_inputs columns, the model's
        # dtype, C-contiguous), n_threads a positive int. None when X holds
        # a NaN or an infinity.
        with self._lock, blas_threads(1):
            return self._forward_locked(X, n_threads, check_finite=True)

    def _forward_locked(self, X, n_threads=1, sparse_input=None, check_finite=False):
        # X is validated, the caller holds self._lock and has limited BLAS to
        # one thread: n_threads of mlp's own workers share the rows (at least
        # FORWARD_MIN_ROWS_PER_WORKER each) or, for smaller blocks, each
        # layer's units, so no BLAS pool is woken. sparse_input: see
        # _kernels.forward (None chooses by the input).
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        if X.shape[0] == 0:
            return out
        row_workers = max(1, min(n_threads, X.shape[0] // _kernels.FORWARD_MIN_ROWS_PER_WORKER))
        chunk = min(-(-X.shape[0] // row_workers), _FORWARD_CHUNK)
        # at_least: the first layer may skip zero inputs (_kernels.forward)
        # and needs its own scratch then.
        sparse_work = _kernels.sparse_input_workspace_size(self._sizes, n_threads,
                                                           self.dtype == np.float32)
        finite = _kernels.forward(self._network, X, out,
                                  self._workspace(chunk, row_workers, sparse_work), chunk,
                                  n_threads, sparse_input=sparse_input,
                                  check_finite=check_finite)
        return out if finite else None

    def predict(self, X, *, n_threads=None):
        """Predicted class per row of X, the index of the largest output; or,
        for a regression model (identity output), the predicted values.

        Parameters
        ----------
        X : array-like of float, shape (n, n_inputs)
            As for :meth:`forward`.
        n_threads : int, optional
            As for :meth:`forward`.

        Returns
        -------
        ndarray of int64, shape (n,)
            For a classifier (softmax or sigmoid output): classes in
            [0, n_outputs); a tie goes to the lowest index.
        ndarray of the model's dtype, shape (n,) or (n, n_outputs)
            For a regression model: its outputs, shape (n,) when it has one
            output (as scikit-learn's regressors return them).

        Raises
        ------
        ValueError
            If an output is NaN (a diverged model), or as :meth:`forward`.
        TypeError
            As :meth:`forward`.
        """
        outputs = self.forward(X, n_threads=n_threads)
        if self.is_regressor:
            check_classifiable(outputs, task="predict")
            return outputs.reshape(-1) if self.n_outputs == 1 else outputs
        return predicted_classes(outputs)

    def predict_proba(self, X, *, n_threads=None):
        """Class probabilities: the softmax output, or the sigmoid outputs
        normalised to sum to 1 per row.

        Parameters
        ----------
        X : array-like of float, shape (n, n_inputs)
            As for :meth:`forward`.
        n_threads : int, optional
            As for :meth:`forward`.

        Returns
        -------
        ndarray of the model's dtype, shape (n, n_outputs)
            Each row sums to 1 (up to rounding); a sigmoid row whose outputs
            all underflow to 0 is uniform.

        Raises
        ------
        ValueError
            If the model's output is "identity" (a regressor), or an output
            is NaN (a diverged model), or as :meth:`forward`.
        TypeError
            As :meth:`forward`.
        """
        if self.is_regressor:
            raise ValueError("predict_proba needs a classifier (output 'softmax' or 'sigmoid'); "
                             "this model's output is 'identity', a regression model: use "
                             "predict() for its predicted values")
        a = check_classifiable(self.forward(X, n_threads=n_threads))
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

    def loss(self, X, Y, loss=None):
        """Sum over the batch of the per-sample loss.

        Parameters
        ----------
        X : array-like of float, shape (n, n_inputs)
            Converted to the model's dtype.
        Y : array-like of float, shape (n, n_outputs)
            Targets, converted to the model's dtype (one-hot rows for
            classification; labels are not accepted here).
        loss : {"mse", "cross_entropy", "binary_cross_entropy"}, optional
            ``"mse"`` is 0.5 * ||a - y||^2 per sample; ``"cross_entropy"`` is
            -sum(y * log softmax(z)), for softmax models;
            ``"binary_cross_entropy"`` is -sum(y log a + (1 - y) log(1 - a)),
            for sigmoid models. None: cross_entropy for softmax models, else mse.

        Returns
        -------
        float
            A Python float, not a numpy scalar.

        Raises
        ------
        TypeError
            If X or Y is not numeric, or loss not a string.
        ValueError
            If loss is unknown or does not fit the model's output, or X or Y
            has the wrong shape or holds NaN or infinity, or Y holds targets
            outside [0, 1] for a cross-entropy loss.
        """
        return self._loss_and_gradients(X, Y, loss, want_gradients=False)[0]

    def gradients(self, X, Y, loss=None):
        """Gradient of ``self.loss(X, Y, loss)`` with respect to every parameter.

        The gradients are views into one new flat array, not into the model.

        Parameters
        ----------
        X : array-like of float, shape (n, n_inputs)
        Y : array-like of float, shape (n, n_outputs)
            Targets, as for :meth:`loss`.
        loss : {"mse", "cross_entropy", "binary_cross_entropy"}, optional
            As for :meth:`loss`.

        Returns
        -------
        weight_grads : list of ndarray of the model's dtype
            ``weight_grads[l]`` has the shape of ``weights[l]``,
            (layer_sizes[l+1], layer_sizes[l]).
        bias_grads : list of ndarray of the model's dtype
            ``bias_grads[l]`` has the shape of ``biases[l]``, (layer_sizes[l+1],).

        Raises
        ------
        TypeError, ValueError
            As :meth:`loss`.
        """
        _, flat = self._loss_and_gradients(X, Y, loss, want_gradients=True)
        w, b = _layer_views(flat, self.layer_sizes)
        return list(w), list(b)

    def _loss_and_gradients(self, X, Y, loss, want_gradients):
        if loss is None:
            loss = "cross_entropy" if self.output == "softmax" else "mse"
        code = loss_code(loss, self.output)
        X = self._check_x(X)
        Y = check_target_range(self._check_targets(Y, X.shape[0]), "Y", loss)
        # Without want_gradients the kernel never touches grads; any buffer of
        # the right type satisfies its signature.
        grads = np.empty_like(self._params) if want_gradients else self._params
        chunk = min(X.shape[0], _FORWARD_CHUNK)
        with self._lock, blas_threads(1):
            total = _kernels.loss_and_gradients(self._network, code, X, Y, grads,
                                                self._workspace(chunk), want_gradients, chunk)
        return float(total), grads

    # -- persistence ----------------------------------------------------------

    def save(self, path):
        """Write the model to `path` as an .npz archive with JSON metadata.

        Besides the parameters, the file holds the optimizer state, the
        training History and the batch sampler, so that training can go on
        from it. No pickle is involved. The file is written to a temporary
        name and renamed into place, so a failure never leaves a
        half-written model where a good one stood; it gets the permissions
        the umask gives a new file.

        Parameters
        ----------
        path : str or os.PathLike
            Used exactly as given (no ``.npz`` is appended). Its directory
            must exist.

        Raises
        ------
        TypeError
            If path is not a str or os.PathLike.
        ValueError
            If a parameter is NaN or infinite (:meth:`load` would refuse
            such a file), or `path` is empty, a directory, or in a directory
            that is missing or cannot be written.
        OSError
            If the write fails all the same (e.g. a full disk); whatever
            stood at `path` is left as it was.
        """
        self._save(check_writable(path))

    def _save(self, path, checkpoint=None):
        """save(), plus, for a training checkpoint, checkpoint = (JSON-ready
        dict, {name: array}) stored under "checkpoint" and "checkpoint.<name>"."""
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
        arrays = {}
        state = self.optimizer_state
        if state is not None:
            from .optimizers import optimizer_to_dict

            meta["optimizer"] = {"config": optimizer_to_dict(state.optimizer), "step": state.step,
                                 "buffers": sorted(state.buffers)}
            for name, buffer in state.buffers.items():
                arrays[f"optimizer.{name}"] = buffer
        if self.history is not None:
            meta["history"] = self.history.to_dict()
        if self._sampling_rng is not None:
            meta["sampling_rng"] = self._sampling_rng.bit_generator.state
            meta["dropout_seed"] = self._dropout_seed
        if checkpoint is not None:
            meta["checkpoint"] = checkpoint[0]
            arrays.update({f"checkpoint.{name}": value for name, value in checkpoint[1].items()})
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"W{l}"] = w
            arrays[f"b{l}"] = b
        atomic_write(path, lambda fh: np.savez(fh, **arrays))

    def to_onnx(self, path, *, dtype=None):
        """Write the model to `path` as an ONNX graph; see :func:`mlp.onnx.to_onnx`.

        Needs the ``onnx`` package (``pip install onnx``).

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (atomically); its directory must exist.
        dtype : None, float32 or float64
            Element type of the graph's input, parameters and output. None
            keeps the model's dtype.

        Returns
        -------
        onnx.ModelProto
            The model written: input ``"input"`` of shape (batch, n_inputs),
            output ``"output"`` of shape (batch, n_outputs), both of `dtype`.

        Raises
        ------
        ImportError
            If onnx is not installed.
        TypeError
            If path is not a path, or dtype not float32 or float64.
        ValueError
            If `path` is empty, a directory, or in a directory that is
            missing or cannot be written; or the parameters are not finite
            (in `dtype`).
        """
        from .onnx import to_onnx

        return to_onnx(self, path, dtype=dtype)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save` (or a training checkpoint).
        Never unpickles anything.

        Parameters
        ----------
        path : str or os.PathLike

        Returns
        -------
        Model
            With the saved parameters, dtype, optimizer state, History and
            batch sampler, so that :func:`mlp.train` can go on from them.

        Raises
        ------
        TypeError
            If path is not a str or os.PathLike.
        FileNotFoundError
            If there is no file at `path`, or `path` is a directory.
        ValueError
            For any file that is not a complete, intact model file (not a
            zip archive, unknown format version, damaged or missing arrays,
            NaN or infinite parameters): every size the file declares is
            checked against its real length before anything is allocated.
        OSError
            If the file exists but cannot be read.
        """
        return cls._load(path)[0]

    @classmethod
    def _load(cls, path):
        """(model, checkpoint): checkpoint is None, or (dict, {name: array})
        as _save stored it."""
        path = check_path(path)
        if os.path.isdir(path):
            raise FileNotFoundError(f"{path!r} is a directory, not a model file")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no model file at {path!r}")
        try:
            with NpzReader(path) as archive:
                return cls._from_archive(archive)
        except ValueError as exc:
            raise ValueError(f"{path!r} is not a model saved by mlp.Model.save: {exc}") from None

    @classmethod
    def _from_archive(cls, archive):
        names = archive.names
        if "meta" not in names or archive.header("meta")[1] != np.uint8 \
                or len(archive.header("meta")[0]) != 1:
            raise ValueError("missing metadata")
        meta = _parse_meta(archive.read("meta").tobytes())
        if meta.get("format") != FORMAT_NAME:
            raise ValueError("metadata does not describe an mlp.Model")
        if meta.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"format version {meta.get('version')!r}, this mlp reads "
                             f"{', '.join(map(str, READABLE_VERSIONS))}")
        try:
            sizes = _check_layer_sizes(meta["layer_sizes"])
            activation = check_choice(meta["activation"], HIDDEN_ACTIVATIONS, "activation")
            output = check_choice(meta["output"], OUTPUT_ACTIVATIONS, "output")
            # Only the two names save() writes: np.dtype() would parse anything.
            dtype = np.dtype(check_choice(meta["dtype"], ("float32", "float64"), "dtype"))
            init = meta.get("init", "normal")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad metadata ({exc})") from None
        expected = {}
        for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            expected[f"W{l}"] = (fan_out, fan_in)
            expected[f"b{l}"] = (fan_out,)
        training = [name for name in names if name.startswith(("optimizer.", "checkpoint."))]
        extra = set(names) - {"meta"} - set(expected) - set(training)
        if extra:
            raise ValueError(f"unexpected arrays {sorted(extra)}")
        # Every array's size is checked against the file before the model,
        # sized from the metadata, is allocated.
        for name, shape in expected.items():
            got_shape, got_dtype = archive.header(name)
            if got_shape != shape or got_dtype != dtype:
                raise ValueError(f"array {name} has shape {got_shape} and dtype {got_dtype}, "
                                 f"expected {shape} and {dtype}")
        model = cls.__new__(cls)
        model._setup(sizes, activation, output, dtype)
        model.init = init if init in INITIALISERS else "normal"
        for l, (w, b) in enumerate(zip(model.weights, model.biases)):
            archive.read(f"W{l}", out=w)
            archive.read(f"b{l}", out=b)
        if not _kernels.all_finite(model._params):
            raise ValueError(f"parameters hold NaN or infinity ({_non_finite_summary(model)})")
        # The training state's arrays: each read is the size of its member,
        # whose size was checked against the file.
        arrays = {name: archive.read(name) for name in training}
        known = {"meta"} | set(expected)
        known |= _restore_training_state(model, meta, arrays, ValueError)
        checkpoint = None
        if "checkpoint" in meta:
            prefix = "checkpoint."
            checkpoint = (meta["checkpoint"], {name[len(prefix):]: value for name, value
                                               in arrays.items() if name.startswith(prefix)})
            known |= {prefix + name for name in checkpoint[1]}
        extra = set(names) - known
        if extra:
            raise ValueError(f"unexpected arrays {sorted(extra)}")
        return model, checkpoint


def _restore_training_state(model, meta, arrays, bad):
    """Optimizer state, History and sampling generator from a file's
    metadata and arrays onto model; returns the array names it used."""
    from .optimizers import OptimizerState, optimizer_from_dict
    from .training import History

    used = set()
    if "optimizer" in meta:
        description = meta["optimizer"]
        try:
            optimizer = optimizer_from_dict(description["config"])
            step = description["step"]
            names = description["buffers"]
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"bad optimizer state ({exc})") from None
        # The kernel counts steps in int64.
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 2 ** 62 \
                or not isinstance(names, list) or not all(isinstance(n, str) for n in names) \
                or sorted(names) != sorted(optimizer.state_buffers):
            raise bad("bad optimizer state (step or buffer names)")
        state = OptimizerState(optimizer, step, {})
        for name in names:
            key = f"optimizer.{name}"
            buffer = arrays.get(key)
            if buffer is None or buffer.shape != (model.n_params,) or buffer.dtype != model.dtype:
                raise bad(f"array {key} is missing or not ({model.n_params},) {model.dtype}")
            if not np.isfinite(buffer).all():
                raise bad(f"array {key} holds NaN or infinity")
            state.buffers[name] = np.array(buffer)
            used.add(key)
        model.optimizer_state = state
    if "history" in meta:
        try:
            history = History.from_dict(meta["history"])
        except (TypeError, ValueError) as exc:
            raise bad(f"bad training history ({exc})") from None
        model.history = history
    if "sampling_rng" in meta:
        try:
            generator = np.random.PCG64()
            generator.state = meta["sampling_rng"]
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            # OverflowError: a negative or too large integer for its uint64.
            raise bad(f"bad sampling generator state ({exc})") from None
        dropout_seed = meta.get("dropout_seed", 0)
        if not isinstance(dropout_seed, int) or not 0 <= dropout_seed < 2 ** 64:
            raise bad("bad dropout seed")
        model._sampling_rng = np.random.Generator(generator)
        model._dropout_seed = dropout_seed
    return used


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


def _writable(array):
    """array itself if it is a writable C-contiguous ndarray, else a copy that is."""
    if type(array) is np.ndarray and array.flags.writeable and array.flags.c_contiguous:
        return array
    return np.array(array, copy=True, order="C", subok=False)


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
