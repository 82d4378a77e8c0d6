"""The network: parameters, forward pass, loss and gradients.

Layer (b) of the package (see tests/test_architecture.py): it imports only
the kernels and validation below it. Saving and loading live above it, in
mlp/serialization.py, which attaches ``Model.save`` and ``Model.load``;
ONNX export in mlp/onnx.py, which attaches ``Model.to_onnx``.

The internal interface
----------------------
What training (mlp/training.py), serialization (mlp/serialization.py) and
the estimators (mlp/sklearn.py) use of a model, instead of its private
attributes. Not public API: names and behaviour may change between
releases without notice.

``Model.allocate(layer_sizes, activation=, output=, init=, dtype=)``
    A model with zero parameters, for a reader to fill.
``model.parameters``
    The flat parameter array, live (weights and biases are views into it).
``model.kernel_network``
    The kernels' typed view of the network (``_kernels.Network``).
``model.locked()``
    Context: holds the model's (reentrant) lock and limits BLAS to one
    thread, for a sequence of compiled calls on the model.
``model.workspace(rows, copies=1, at_least=0)``
    The scratch buffer for `rows` rows; only inside ``locked()``.
``model.forward_unchecked(X, n_threads=1, sparse_input=None, check_finite=False)``
    forward() on checked X, inside ``locked()``.
``model.sampling_state``
    (numpy Generator or None, dropout seed): the batch sampler of the last
    training run, which the next run continues unless given a seed.
"""
from __future__ import annotations

import copy
import threading
import warnings
from contextlib import contextmanager

import numpy as np
import scipy.sparse

from . import _kernels
from .activations import (ACTIVATIONS, HIDDEN_ACTIVATIONS, LOSS_NAMES, LOSSES,
                          OUTPUT_ACTIVATIONS, default_init)
from ._threads import blas_threads, check_threads, inference_threads
from ._validation import (
    check_choice,
    check_dtype,
    check_layer_sizes,
    check_matrix,
    check_seed,
    check_target_range,
    spoken,
)

# Which activations go where, and the losses: mlp/activations.py.
INITIALISERS = ("normal", "xavier", "he")

# Rows per block in forward(), loss() and gradients(): big enough that the
# GEMMs run near peak, small enough that the activations stay in cache and
# memory does not grow with the batch.
_FORWARD_CHUNK = 1024
# Sparse X goes through forward() made dense a block of rows at a time, a
# block of about this many values (16 MB of float32), in whole blocks of
# the kernel's sparse first layer (128 rows), at most _FORWARD_CHUNK rows.
_SPARSE_BLOCK_VALUES = 1 << 22
_SPARSE_BLOCK_ALIGN = 128


# The compute types besides the parameters' own: the kernels' table.
COMPUTE_DTYPES = _kernels.COMPUTE_DTYPES


def check_compute_dtype(value, dtype=np.float32, name="compute_dtype"):
    """value if it is None, or a name in COMPUTE_DTYPES and the parameters'
    dtype float32; else ValueError (TypeError for a value that is not a
    string) naming the argument."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{spoken(name)} must be None or one of {list(COMPUTE_DTYPES)}; "
                        f"got {type(value).__name__} {value!r}")
    if value not in COMPUTE_DTYPES:
        raise ValueError(f"{spoken(name)} must be None (compute in the parameters' dtype) or "
                         f"one of {list(COMPUTE_DTYPES)}; got {value!r}")
    if np.dtype(dtype) != np.float32:
        raise ValueError(f"{spoken(name)}={value!r} needs float32 parameters (they and the "
                         f"products' sums stay float32); got {spoken('dtype')} "
                         f"{np.dtype(dtype).name}: use float32, or leave {spoken(name)} None")
    return value


# Whether this process has said that its bfloat16 products take the portable path.
_warned_portable_bf16 = False


def _warn_if_portable_bf16():
    """Once per process: where the CPU has no native bfloat16 instructions
    (_kernels.bf16_path() is "portable"), compute_dtype='bfloat16' computes
    the same results as elsewhere but through float32 GEMMs on rounded
    copies, slower than float32 itself."""
    global _warned_portable_bf16
    if _warned_portable_bf16 or _kernels.bf16_path() != "portable":
        return
    _warned_portable_bf16 = True
    warnings.warn("compute_dtype='bfloat16': mlp has no native bfloat16 matrix products for "
                  "this CPU (they need AVX512_BF16 or AMX), so it computes the same results "
                  "through float32 products of rounded copies, which is slower than "
                  "compute_dtype=None (float32)", RuntimeWarning, stacklevel=3)


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
    # The method, not np.argmax (whose dispatch costs 1 us of a one-row
    # predict's 20); argmax already gives int64 where intp is 64-bit.
    return check_classifiable(outputs).argmax(axis=1).astype(np.int64, copy=False)

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
    output : {"softmax", "sigmoid", "identity", "exp"}
        Activation of the output layer ("identity" for regression, "exp"
        for positive targets such as counts, with loss="poisson").
    init : {None, "he", "xavier", "normal"}
        None picks "he" for ReLU-like activations (relu, leaky_relu, gelu,
        silu) and "xavier" otherwise. ``"he"`` is
        N(0, 2 / fan_in) with zero biases. ``"xavier"`` is Glorot uniform,
        U(-r, r) with r = sqrt(6 / (fan_in + fan_out)), and zero biases.
        ``"normal"`` draws every weight and bias from N(0, 1), as the
        notebook does.
    dtype : float32 or float64
    compute_dtype : {None, "bfloat16"}
        The type of the matrix products' inputs. None computes in `dtype`.
        "bfloat16" (float32 models only), as PyTorch's CPU autocast and
        Keras's mixed_bfloat16: the weights and activations that enter each
        matrix product, in training and inference, are rounded to bfloat16
        and the products summed in float32, while the parameters, the
        optimizer's state, the losses and every elementwise operation stay
        float32. Faster on CPUs with AVX512_BF16 or AMX; elsewhere the same
        results, slower (a RuntimeWarning says so once). Settable
        afterwards, e.g. to train in bfloat16 and predict in float32.
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

    # What the model was trained on (an mlp.data.DataInfo: class names, the
    # input's shape, preprocessing), set by whoever trains it on a loaded data
    # set and kept in the model file; None when unknown.
    data_info = None

    # The defaults of the network's options: mlp.hyperparams.ModelOptions
    # (and through it the CLI) reads them from this signature.
    def __init__(self, layer_sizes, *, activation="relu", output="softmax", init=None,
                 dtype=np.float32, compute_dtype=None, seed=None):
        self._configure(layer_sizes, activation, output, init, dtype)
        self.compute_dtype = compute_dtype
        if isinstance(seed, np.random.RandomState):
            self._initialise_as_notebook(seed)
        else:
            self._initialise(self.init, np.random.default_rng(check_seed(seed)))

    @classmethod
    def allocate(cls, layer_sizes, *, activation, output, init, dtype, compute_dtype=None):
        """A model of this configuration with all parameters zero, for a
        reader (mlp.serialization) to fill. Internal interface (see the
        module's docstring)."""
        model = cls.__new__(cls)
        model._configure(layer_sizes, activation, output, init, dtype)
        model.compute_dtype = compute_dtype
        return model

    def _configure(self, layer_sizes, activation, output, init, dtype):
        sizes = check_layer_sizes(layer_sizes)
        check_choice(activation, HIDDEN_ACTIVATIONS, "activation")
        check_choice(output, OUTPUT_ACTIVATIONS, "output")
        if init is None:
            init = default_init(activation)
        check_choice(init, INITIALISERS, "init")
        self._setup(sizes, activation, output, check_dtype(dtype))
        self.init = init

    def _setup(self, sizes, activation, output, dtype):
        self.layer_sizes = tuple(sizes)
        self.activation = activation
        self.output = output
        self.dtype = dtype
        self._sizes = np.asarray(sizes, dtype=np.intp)
        self._compute_dtype = None
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
    def compute_dtype(self):
        """None, or "bfloat16": the type of the matrix products' inputs
        (see the class's docstring). Settable; a float64 model refuses
        "bfloat16"."""
        return self._compute_dtype

    @compute_dtype.setter
    def compute_dtype(self, value):
        value = check_compute_dtype(value, self.dtype)
        with self._lock:
            self._compute_dtype = value
            self._bind_network()
        if value is not None:
            _warn_if_portable_bf16()

    @property
    def is_regressor(self):
        """True for a regression model, one with identity (or exp) output:
        its :meth:`predict` returns the outputs, :func:`mlp.evaluate` reports
        their mean squared error and R², and training defaults to Adam."""
        return ACTIVATIONS[self.output].regression

    # -- internal interface (see the module's docstring) ---------------------

    @property
    def parameters(self):
        """The flat parameter array, live: every layer's weights (row-major,
        shape (fan_out, fan_in)) then its biases. Internal interface."""
        return self._params

    @property
    def kernel_network(self):
        """The kernels' typed view of this network (_kernels.Network), over
        :attr:`parameters` itself. Internal interface."""
        return self._network

    @contextmanager
    def locked(self):
        """Hold the model's lock, with BLAS limited to one thread, for a
        sequence of compiled calls (reentrant: train() holds it for the whole
        run, and its callbacks may predict). Internal interface."""
        with self._lock, blas_threads(1):
            yield self

    @property
    def sampling_state(self):
        """(generator, dropout_seed): the batch sampler of the last train()
        run (a numpy Generator, or None) and the key of its dropout masks,
        which the next run continues unless given a seed. Internal interface."""
        return self._sampling_rng, self._dropout_seed

    @sampling_state.setter
    def sampling_state(self, state):
        self._sampling_rng, self._dropout_seed = state

    def __repr__(self):
        compute = ("" if self.compute_dtype is None
                   else f", compute_dtype={self.compute_dtype!r}")
        return (f"Model({list(self.layer_sizes)}, activation={self.activation!r}, "
                f"output={self.output!r}, init={self.init!r}, dtype={self.dtype.name}"
                f"{compute})")

    def copy(self):
        """An independent model with the same configuration and parameters."""
        twin = Model.__new__(Model)
        twin._setup(self.layer_sizes, self.activation, self.output, self.dtype)
        twin.init = self.init
        twin._compute_dtype = self.compute_dtype
        twin._bind_network()
        twin._params[...] = self._params
        if self.optimizer_state is not None:
            twin.optimizer_state = self.optimizer_state.copy()
        if self.history is not None:
            twin.history = type(self.history).from_dict(self.history.to_dict())
        if self._sampling_rng is not None:
            twin._sampling_rng = copy.deepcopy(self._sampling_rng)
            twin._dropout_seed = self._dropout_seed
        twin.data_info = self.data_info  # frozen: shared, never changed in place
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
                                         self._output_code,
                                         compute_dtype=getattr(self, "_compute_dtype", None))

    def workspace(self, rows, copies=1, at_least=0):
        """Scratch for compiled calls on `rows` rows (`copies` of it, at least
        `at_least` elements). Kernels release the GIL, so two threads may
        share a model; callers hold :meth:`locked` while they use the buffer
        returned here. Internal interface."""
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
        X : array-like of float, shape (n, n_inputs); or scipy.sparse matrix or array
            At least one row; converted to the model's dtype (copied only
            when its dtype or memory layout differs). A sparse X (CSR;
            CSC and COO are converted) is never made dense as a whole, only
            a block of rows at a time.
        n_threads : int, optional
            Worker threads sharing the rows (up to 7 rows, the first layer's
            units), each running a single-threaded BLAS; a worker that has
            not started by the time the others are done does not delay the
            call. Default: chosen by the size of the call, one thread below
            ``mlp._threads.INFERENCE_MIN_MACS`` multiply-adds (rows times the
            network's multiply-adds per row, e.g. 266,200 for 784-300-100-10)
            and every available core from there.

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
        check_threads(n_threads)
        # The kernel looks for NaN and inf in the rows as it reads them (the
        # check of a sparse X scans its stored values).
        checked = check_matrix(X, "X", n_columns=self.n_inputs, dtype=self.dtype, finite=False,
                               sparse=True)
        threads = inference_threads(n_threads, checked.shape[0], self.layer_sizes)
        out = self._forward_checked(checked, threads)
        if out is None:
            self._check_x(X)  # raises, saying what is wrong
        return out

    def _forward_checked(self, X, n_threads):
        # X checked but for NaN and inf (2-D, n_inputs columns, the model's
        # dtype, C-contiguous), n_threads a positive int. None when X holds
        # a NaN or an infinity.
        if (self.dtype == np.float32 and type(X) is np.ndarray
                and X.shape[0] <= _kernels.fused_max_rows() * n_threads
                and X.shape[0] < _kernels.SPARSE_INPUT_MIN_ROWS):
            # Each worker's block of rows runs on _dense.h (_kernels.infer):
            # no BLAS call, so no BLAS limit to set and restore, 4 us of a
            # one-row call's 20.
            with self._lock:
                return self.forward_unchecked(X, n_threads, check_finite=True)
        with self.locked():
            return self.forward_unchecked(X, n_threads, check_finite=True)

    def _forward_sparse(self, X, n_threads, sparse_input, check_finite, fused):
        # X a checked csr_matrix: its rows made dense a block at a time, so
        # that memory is X's plus a block's. None as forward_unchecked.
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        rows = max(_SPARSE_BLOCK_ALIGN, _SPARSE_BLOCK_VALUES // self.n_inputs
                   // _SPARSE_BLOCK_ALIGN * _SPARSE_BLOCK_ALIGN)
        rows = min(rows, _FORWARD_CHUNK)
        for start in range(0, X.shape[0], rows):
            block = X[start:start + rows].toarray()
            outputs = self.forward_unchecked(block, n_threads, sparse_input, check_finite, fused)
            if outputs is None:
                return None
            out[start:start + len(block)] = outputs
        return out

    def forward_unchecked(self, X, n_threads=1, sparse_input=None, check_finite=False,
                          fused=True):
        """The outputs for X, which the caller has checked (2-D, n_inputs
        columns, the model's dtype, C-contiguous; or a csr_matrix from
        check_matrix(sparse=True)), inside :meth:`locked`; None when
        check_finite finds a NaN or an infinity. fused=False computes them
        as training does (_kernels.forward, on BLAS) rather than on the
        inference kernels (_kernels.infer), which differ by rounding only:
        for training's own uses, whose results must not change. Internal
        interface."""
        if type(X) is not np.ndarray and scipy.sparse.issparse(X):
            return self._forward_sparse(X, n_threads, sparse_input, check_finite, fused)
        # n_threads of mlp's own workers share the rows (at least
        # FORWARD_MIN_ROWS_PER_WORKER each) or, for smaller blocks, each
        # layer's units, so no BLAS pool is woken. sparse_input: see
        # _kernels.forward (None chooses by the input).
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        if X.shape[0] == 0:
            return out
        if fused:
            # _kernels.infer's workers claim blocks of rows from 2 rows on.
            row_workers = min(n_threads, X.shape[0]) if X.shape[0] > 1 else 1
        else:
            row_workers = max(1, min(n_threads,
                                     X.shape[0] // _kernels.FORWARD_MIN_ROWS_PER_WORKER))
        chunk = min(-(-X.shape[0] // row_workers), _FORWARD_CHUNK)
        # at_least: the first layer may skip zero inputs (_kernels.forward)
        # and needs its own scratch then.
        sparse_work = _kernels.sparse_input_workspace_size(self._sizes, n_threads,
                                                           self.dtype == np.float32)
        kernel = _kernels.infer if fused else _kernels.forward
        finite = kernel(self._network, X, out, self.workspace(chunk, row_workers, sparse_work),
                        chunk, n_threads, sparse_input=sparse_input, check_finite=check_finite)
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
        loss : {"mse", "cross_entropy", "binary_cross_entropy", "poisson"}, optional
            ``"mse"`` is 0.5 * ||a - y||^2 per sample; ``"cross_entropy"`` is
            -sum(y * log softmax(z)), for softmax models;
            ``"binary_cross_entropy"`` is -sum(y log a + (1 - y) log(1 - a)),
            for sigmoid models; ``"poisson"`` is half the Poisson deviance,
            sum(y log(y / a) - y + a), for exp models (targets >= 0). None:
            cross_entropy for softmax models, poisson for exp models, else mse.

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
            loss = ACTIVATIONS[self.output].default_loss
        code = loss_code(loss, self.output)
        X = self._check_x(X)
        Y = check_target_range(self._check_targets(Y, X.shape[0]), "Y", loss)
        grads = np.empty_like(self._params) if want_gradients else None
        chunk = min(X.shape[0], _FORWARD_CHUNK)
        with self.locked():
            total = _kernels.loss_and_gradients(self._network, code, X, Y, grads,
                                                self.workspace(chunk), chunk)
        return float(total), grads


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
