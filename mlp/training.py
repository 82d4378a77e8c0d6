"""Training: single steps, a full training run, and evaluation.

``train()`` reads as: check the arguments, prepare a run (optimizer state,
buffers, sampling), then an epoch loop whose epochs are a few compiled
calls each, with small callbacks for what happens between them (progress
bar, History, validation, early stopping, divergence). The steps themselves
run inside the kernel (mlp/_worker.pxi).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import signal
import threading
import time
from typing import NamedTuple

import numpy as np
import scipy.sparse

from . import _kernels
from ._threads import check_threads, inference_threads, train_workers
from ._validation import (
    check_batch_size,
    check_keywords,
    check_labels,
    check_matrix,
    check_path,
    check_positive_float,
    check_targets,
    check_targets_or_labels,
    check_writable,
    spoken,
)
from .activations import ACTIVATIONS
from .augment import _training_images_and_plan, augment_from_dict, augment_to_dict
from .hyperparams import TrainingOptions, keyword_parameters, numpydoc_parameters
from .metrics import regression_scores
from .model import Model, check_classifiable, loss_code, predicted_classes
from .optimizers import optimizer_from_dict, optimizer_to_dict
from .schedules import learning_rates
from .serialization import read_model_file, write_model_file
from .state import History, OptimizerState

# Each kernel call runs for about this long (or at least one step), so that
# Python (the progress bar, Ctrl-C) gets control a few times a second while
# costing well under 1% of the run.
_SECONDS_PER_CALL = 0.2
# Steps of the first call of a run; later calls are sized from the measured
# step time so that they last about _SECONDS_PER_CALL.
_FIRST_CALL_STEPS = 16


def _check_model(model, name="model"):
    if not isinstance(model, Model):
        raise TypeError(f"{name} must be an mlp.Model, got {type(model).__name__}")
    return model


def _check_inputs_and_labels(model, X, y, X_name="X", y_name="y"):
    # Sparse X comes back a csr_matrix, which model.forward_unchecked takes.
    X = check_matrix(X, X_name, n_columns=model.n_inputs, dtype=model.dtype, sparse=True)
    y = check_labels(y, y_name, n_classes=model.n_outputs, n_rows=X.shape[0])
    return X, y


def _check_training_inputs(model, X, *, dtype, finite, sparse=False):
    """X, checked to train model on: float input far beyond order 1 gets a
    classifier the warning raw integer pixels get (see warn_if_unscaled).
    With sparse, scipy.sparse input comes back as a canonical csr_matrix
    (check_sparse_matrix)."""
    return check_matrix(X, "X", n_columns=model.n_inputs, dtype=dtype, finite=finite,
                        warn_float_scale=not model.is_regressor, sparse=sparse)


def _kernel_inputs(X):
    """X as TrainingData takes it: a dense array as it is, a csr_matrix
    (from check_sparse_matrix) as a _kernels.CsrMatrix sharing its values."""
    if not scipy.sparse.issparse(X):
        return X
    return _kernels.CsrMatrix(X.data, X.indices.astype(np.int32, copy=False),
                              X.indptr.astype(np.int64, copy=False), X.shape[1])


def _suggesting_keywords(function):
    """function, with an unknown keyword argument refused by check_keywords
    (which suggests the closest valid name) rather than by Python."""
    valid = tuple(inspect.signature(function).parameters)

    @functools.wraps(function)
    def checked(*args, **kwargs):
        check_keywords(function.__name__, kwargs, valid)
        return function(*args, **kwargs)

    return checked


def _default_loss(model):
    return ACTIVATIONS[model.output].default_loss


def _check_options_fit(model, options):
    """What TrainingOptions cannot check alone: the options against the model."""
    # The options are named as the caller names them (spoken: the CLI's flags).
    if options.dropout and len(model.layer_sizes) == 2:
        raise ValueError(f"{spoken('dropout')} drops hidden units, and {model!r} has none; "
                         f"use {spoken('input_dropout')}, or add a hidden layer")
    optimizer = options.resolved_optimizer(model.output)
    eps = getattr(optimizer, "eps", None)
    if eps is not None and model.dtype.type(eps) == 0:
        raise ValueError(f"{spoken('eps')} {eps} is 0 in {model.dtype.name}, and "
                         f"{type(optimizer).__name__} would divide by zero; use at least "
                         f"{np.finfo(model.dtype).tiny:.3g} (typically 1e-8)")


def _optimizer_state(model, optimizer):
    """The model's state for `optimizer`: continued when equal, else fresh."""
    state = model.optimizer_state
    if state is None or state.optimizer != optimizer:
        state = OptimizerState.fresh(optimizer, model.n_params, model.dtype)
        model.optimizer_state = state
    return state


def _kernel_run(model, data, loss_code, state, options, seed, augment_plan=None, n_workers=1,
                work=None):
    """The kernel's description of training `model` on `data` (a
    _kernels.TrainingData) with the optimizer `state` and the regularisers
    of `options`; `seed` keys the dropout masks and the distortions."""
    return _kernels.TrainingRun(
        model.kernel_network, data, loss=loss_code, rule=state.optimizer.kernel_rule(),
        state=state.kernel_buffers(),
        dropout=_kernels.Dropout(options.dropout, options.input_dropout, seed),
        augment=augment_plan, augment_seed=seed,
        max_norm=0.0 if options.max_norm is None else options.max_norm, n_workers=n_workers,
        work=work)


@_suggesting_keywords
def training_step(model, X, Y, learning_rate=None, loss=None, *, optimizer=None,
                  weight_decay=None, dropout=0.0, input_dropout=0.0, max_norm=None,
                  seed=0):
    """One in-place training step on one batch.

    Parameters
    ----------
    model : Model
    X : array-like of float, shape (n, n_inputs)
        Converted to the model's dtype.
    Y : array-like of float, shape (n, n_outputs), or array-like of int, shape (n,)
        Targets, converted to the model's dtype (in [0, 1] for the
        cross-entropy losses), or class labels in [0, n_outputs), which
        train as their one-hot rows. A model with one output takes 1-D Y,
        shape (n,), as its targets.
    learning_rate, weight_decay : float, optional
        Plain SGD with these (``p -= learning_rate * mean gradient``, weights
        also ``-= learning_rate * weight_decay * W``); not together with optimizer.
    loss : str, optional
        Default: cross_entropy for softmax models, mse otherwise.
    optimizer : SGD or Adam, optional
        The update rule; its state continues across calls on the model while
        the optimizer stays equal.
    dropout, input_dropout, max_norm : as in :func:`train`
    seed : int, default 0
        Keys the dropout masks (with the step count).

    Returns
    -------
    float
        The batch's summed loss before the step.

    Raises
    ------
    FloatingPointError
        When the loss or the parameters stop being finite (the learning rate
        is too high for this model): the model is left as the step made it.
    """
    loss_sum = _training_step(model, X, Y, learning_rate, loss, optimizer=optimizer,
                              weight_decay=weight_decay, dropout=dropout,
                              input_dropout=input_dropout, max_norm=max_norm, seed=seed)
    if not (math.isfinite(loss_sum) and _kernels.all_finite(model.parameters)):
        raise FloatingPointError(
            f"training diverged: the batch's loss is {loss_sum} and the parameters are "
            f"{'finite' if _kernels.all_finite(model.parameters) else 'no longer finite'}; "
            f"lower the learning rate and start from finite parameters")
    return loss_sum


def _training_step(model, X, Y, learning_rate=None, loss=None, *, optimizer=None,
                   weight_decay=None, dropout=0.0, input_dropout=0.0, max_norm=None, seed=0):
    """training_step without the check for divergence (mlp.compat's, which
    goes on with NaN as the notebook's numpy does); returns the summed loss."""
    _check_model(model)
    loss = _default_loss(model) if loss is None else loss
    code = loss_code(loss, model.output)
    options = TrainingOptions(optimizer=optimizer, learning_rate=learning_rate,
                              weight_decay=weight_decay, dropout=dropout,
                              input_dropout=input_dropout, max_norm=max_norm, seed=seed)
    if options.optimizer is None and options.learning_rate is None:
        raise ValueError("training_step needs optimizer= (e.g. mlp.SGD(learning_rate=0.1)) "
                         "or learning_rate=")
    _check_options_fit(model, options)
    optimizer = options.resolved_optimizer(model.output)
    X = _check_training_inputs(model, X, dtype=model.dtype, finite=True)
    Y = check_targets_or_labels(Y, "Y", n_outputs=model.n_outputs, n_rows=X.shape[0],
                                dtype=model.dtype, loss=loss)
    n = X.shape[0]
    total = np.zeros(1)
    with model.locked():
        state = _optimizer_state(model, optimizer)
        data = _kernels.TrainingData(X, Y if Y.ndim == 1 else None,
                                     Y.reshape(-1) if Y.ndim == 2 else None, batch_size=n,
                                     feature_major=n <= _kernels.FEATURE_MAJOR_MAX_BATCH)
        run = _kernel_run(model, data, code, state, options, options.seed or 0,
                          work=model.workspace(n))
        status = _kernels.train_steps(run, np.arange(n, dtype=np.int64),
                                      np.array([optimizer.learning_rate]), state.step, total)
        state.step += status
    return float(total[0])


class Evaluation(NamedTuple):
    """Result of :func:`evaluate` for a classifier.

    Attributes
    ----------
    accuracy : float
        The fraction of samples classified correctly, in [0, 1].
    correct : int
        The number of samples classified correctly.
    """
    accuracy: float
    correct: int


def evaluate(model, X, y, *, n_threads=None):
    """Classification accuracy of model on (X, y); for a regression model
    (identity output), the mean squared error and R² of its predictions.

    Parameters
    ----------
    model : Model
    X : array-like of float, shape (n, n_inputs)
    y : array-like of int, shape (n,); or array-like of float, shape (n, n_outputs) or (n,)
        Class labels in [0, n_outputs); for a regression model, targets,
        1-D for a model with one output.
    n_threads : int, optional
        Worker threads sharing the rows; default chosen by the size of the
        call, as :meth:`Model.forward` chooses.

    Returns
    -------
    Evaluation
        For a classifier: (accuracy, correct), a float in [0, 1] and an int.
    RegressionEvaluation
        For a regression model: (mse, r2), two floats computed in float64;
        see :class:`mlp.metrics.RegressionEvaluation`.

    Raises
    ------
    ValueError
        If the model's outputs are NaN (a diverged model), or X or y do not
        fit the model.
    TypeError
        If X or y is not numeric.
    """
    _check_model(model)
    check_threads(n_threads)
    if model.is_regressor:
        X = check_matrix(X, "X", n_columns=model.n_inputs, dtype=model.dtype, sparse=True)
        y = check_targets(y, "y", n_outputs=model.n_outputs, n_rows=X.shape[0],
                          dtype=np.float64)
    else:
        X, y = _check_inputs_and_labels(model, X, y)
    threads = inference_threads(n_threads, X.shape[0], model.layer_sizes)
    # X is checked once above; model.predict would check it again.
    with model.locked():
        outputs = model.forward_unchecked(X, threads)
    if model.is_regressor:
        return regression_scores(y, check_classifiable(outputs, task="predict"))
    predicted = predicted_classes(outputs)
    correct = int(np.count_nonzero(predicted == y))
    return Evaluation(correct / len(y), correct)


# ---------------------------------------------------------------------------
# Callbacks: what happens between kernel calls and between epochs
# ---------------------------------------------------------------------------

class Callback:
    """Hooks into :func:`train`. ``on_epoch_start`` runs at the start of
    every epoch, ``on_steps`` after every compiled call (a few times a
    second), ``on_epoch_end`` after every epoch and may stop the run by
    returning True, ``on_train_end`` once at the end.

    Each gets the run as ``run``: ``run.model``, ``run.options`` (the
    TrainingOptions), ``run.done`` and ``run.total_steps`` (steps of this
    run), ``run.batch_size``, and ``run.order``, the rows of the current
    epoch's batches in the order they are trained on (int64, batch after
    batch).
    """

    def on_epoch_start(self, run):
        """The epoch's sample order, ``run.order``, is drawn; no step of the
        epoch has run. Not called for the epoch a resumed run continues."""

    def on_steps(self, run, steps, loss_sum, samples):
        pass

    def on_epoch_end(self, run, history):
        return False

    def on_train_end(self, run, history):
        pass


class _ProgressBar(Callback):
    def __init__(self, total_steps, done=0):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=done, unit="step", dynamic_ncols=True,
                        mininterval=0.2)

    def on_steps(self, run, steps, loss_sum, samples):
        self.bar.update(steps)
        self.bar.set_postfix(loss=f"{loss_sum / max(samples, 1):.4f}", refresh=False)

    def on_epoch_end(self, run, history):
        postfix = {"loss": f"{history.loss[-1]:.4f}"}
        if history.val_accuracy:
            postfix["val_acc"] = f"{history.val_accuracy[-1]:.4f}"
        self.bar.set_postfix(postfix)

    def on_train_end(self, run, history):
        self.bar.close()


class _Validation(Callback):
    """Scores the validation data after every epoch; with patience, stops
    when it has not improved for that many epochs and restores the best."""

    def __init__(self, X_val, y_val, patience, resumed=None):
        self.X_val, self.y_val, self.patience = X_val, y_val, patience
        self.best_accuracy, self.best_params, self.stale = -1.0, None, 0
        if resumed is not None and "validation" in resumed[0]:
            self.best_accuracy = float(resumed[0]["validation"]["best_accuracy"])
            self.stale = int(resumed[0]["validation"]["stale"])
            self.best_params = resumed[1].get("best_params")

    def on_epoch_end(self, run, history):
        model = run.model
        predicted = model.forward_unchecked(self.X_val, run.workers, fused=False).argmax(axis=1)
        accuracy = float(np.count_nonzero(predicted == self.y_val)) / len(self.y_val)
        history.val_accuracy.append(accuracy)
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.stale = accuracy, 0
            if self.patience is not None:
                self.best_params = model.parameters.copy()
            history.best_step = history.steps[-1]
        else:
            self.stale += 1
        if self.patience is not None and self.stale >= self.patience:
            history.stopped_early = True
            return True
        return False

    def on_train_end(self, run, history):
        if self.best_params is not None:
            run.model.parameters[...] = self.best_params


class _DivergenceCheck(Callback):
    """After every epoch: a NaN/inf loss or parameter ends the run, keeping
    the parameters of the last good epoch. A loss that grew a hundredfold
    from its first epoch, or that has not moved from it in three epochs or
    more, gets a warning naming the learning rate."""

    def __init__(self, run):
        self.last_good = run.model.parameters.copy()
        self.warned = False

    def on_epoch_end(self, run, history):
        model, loss = run.model, history.loss[-1]
        if not (math.isfinite(loss) and _kernels.all_finite(model.parameters)):
            model.parameters[...] = self.last_good
            first = history.steps[-2] if len(history.steps) > 1 else run.first_step
            last = history.steps[-1]
            # The diverged epoch's entry and the optimizer's state (NaN
            # velocities or moments) go too: the model must save and load, and
            # a next run must not start from NaN.
            for entries in (history.steps, history.loss, history.time):
                del entries[-1]
            del history.val_accuracy[len(history.steps):]
            model.optimizer_state = None
            raise FloatingPointError(
                f"training diverged between steps {first} and {last} (loss {loss}); the "
                f"model keeps its parameters from step {first}, and its optimizer starts "
                f"afresh. Lower the learning rate ({run.optimizer.learning_rate}).")
        self.last_good[...] = model.parameters
        first, rate = history.loss[0], run.optimizer.learning_rate
        message = None
        if len(history.loss) > 1 and loss > 100 * first > 0:
            message = (f"the training loss grew from {first:.4g} to {loss:.4g}: the learning "
                       f"rate ({rate}) is probably too high")
        elif (run.loss == "cross_entropy" and len(history.loss) > 1
              and loss > 10 * math.log(model.n_outputs)):
            message = (f"the training loss is {loss:.4g}, far worse than guessing "
                       f"({math.log(model.n_outputs):.3g}): the learning rate ({rate}) is "
                       f"probably too high")
        elif len(history.loss) >= 3 and loss > 1e-3 and all(
                abs(l - loss) <= 1e-6 * loss for l in history.loss[-3:]):
            message = (f"the training loss has stopped at {loss:.4g} for three epochs: "
                       f"saturated units, or a learning rate ({rate}) too high or too low")
        if message and not self.warned:
            import warnings

            self.warned = True
            warnings.warn(message, RuntimeWarning, stacklevel=4)
        return False


# ---------------------------------------------------------------------------
# A training run
# ---------------------------------------------------------------------------

class _Run:
    """The state of one train() call: checked data, optimizer state, buffers,
    sampling, and where the run stands (step, epoch order, position in it).
    Kept apart from the loop so that the loop reads plainly; a checkpoint is
    this state written down (see _CheckpointWriter)."""

    def __init__(self, model, X, y, options, sample_weight, n_threads, resumed=None):
        self.model = model
        self.options = options
        self.loss = _default_loss(model) if options.loss is None else options.loss
        self.loss_code = loss_code(self.loss, model.output)
        # A float64 model widens float32 rows as it gathers them (so the data
        # set is not copied); the kernel checks the rows it gathers for NaN
        # and inf (so the data set is not scanned).
        widen = model.dtype == np.float64
        self.X = _check_training_inputs(model, X, dtype=None if widen else model.dtype,
                                        finite=False, sparse=True)
        sparse = scipy.sparse.issparse(self.X)
        if sparse and options.augment is not None:
            raise ValueError("augment distorts dense images, and X is a scipy.sparse matrix: "
                             "train without augment, or on X.toarray()")
        # Distortions are drawn in float32 (and widened for a float64 model).
        self.X, self.augment_plan = _training_images_and_plan(options.augment, self.X,
                                                               model.n_inputs)
        n = self.X.shape[0]
        targets = check_targets_or_labels(y, "y", n_outputs=model.n_outputs, n_rows=n,
                                          dtype=model.dtype, loss=self.loss)
        self.labels = targets if targets.ndim == 1 else None
        self.targets = targets.reshape(-1) if targets.ndim == 2 else None
        self.sample_weight = None if sample_weight is None else \
            _check_sample_weight(sample_weight, n, model.dtype)
        self.batch_size = check_batch_size(options.batch_size, n)
        self.steps_per_epoch = math.ceil(n / self.batch_size)
        epochs = options.epochs if options.epochs is not None else (
            None if options.iterations is not None else 10)
        self.total_steps = (options.iterations if epochs is None
                            else epochs * self.steps_per_epoch)
        self.optimizer = options.resolved_optimizer(model.output)
        self.schedule = options.resolved_schedule(model.output)
        self.state = _optimizer_state(model, self.optimizer)
        self.first_step = self.state.step
        # The schedule counts the optimizer's steps, so a second call goes on
        # where the first stopped (a warm-up is not repeated); its length is
        # the steps before this call plus this call's.
        self.schedule_steps = self.first_step + self.total_steps
        self.workers = train_workers(check_threads(n_threads), self.batch_size,
                                     model.layer_sizes, self.total_steps)
        self.rng, self.dropout_seed = self._sampling(options.seed, resumed is not None)
        # Sparse X: row-major batches, so that the first layer reads each
        # row's stored entries (up to SPARSE_INPUT_MAX_BATCH rows; larger
        # batches are made dense one at a time for the GEMMs).
        data = _kernels.TrainingData(
            _kernel_inputs(self.X), self.labels, self.targets,
            self.sample_weight, batch_size=self.batch_size,
            feature_major=not sparse and self.batch_size <= _kernels.FEATURE_MAJOR_MAX_BATCH)
        self.kernel_run = _kernel_run(model, data, self.loss_code, self.state, options,
                                      self.dropout_seed, self.augment_plan, self.workers)
        self.steps_per_call = _FIRST_CALL_STEPS
        # Where the run stands: steps done in it, this epoch's sample order
        # (None between epochs), the position in it and its summed loss.
        self.done, self.order, self.position, self.loss_sum = 0, None, 0, 0.0
        self.history = History()
        self.elapsed_before = 0.0
        if resumed is not None:
            self._resume(resumed)
        self.started = time.perf_counter()
        # Bad data found mid-run (a NaN row) undoes the whole call.
        self._start = (model.parameters.copy(), self.state.copy())

    def _resume(self, resumed):
        place, arrays = resumed
        if place["total_steps"] < place["done"] or place["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError("resume: the checkpoint's run does not fit this data and batch size")
        self.first_step = self.state.step - place["done"]
        self.total_steps = place["total_steps"]
        self.schedule_steps = place["schedule_steps"]
        self.done, self.position, self.loss_sum = place["done"], place["position"], place["loss_sum"]
        self.order = arrays.get("order")
        if self.order is not None and (self.order.dtype != np.int64 or self.order.ndim != 1
                                       or not 0 <= self.position <= len(self.order)
                                       or (len(self.order) and not (
                                           0 <= self.order.min()
                                           and self.order.max() < self.X.shape[0]))):
            raise ValueError("resume: the checkpoint's sample order does not fit this data")
        self.history = History.from_dict(place["history"])
        self.elapsed_before = self.history.total_time if place.get("elapsed") is None \
            else place["elapsed"]

    def restore_start(self):
        params, state = self._start
        self.model.parameters[...] = params
        self.state.step = state.step
        for name, buffer in state.buffers.items():
            self.state.buffers[name][...] = buffer

    def _sampling(self, seed, resuming):
        """The batch sampler and the dropout masks' key. seed=None continues
        those of the model's previous run, so that a run split over several
        train() calls (or resumed from a checkpoint) draws what one would."""
        model = self.model
        if isinstance(seed, np.random.RandomState):
            # The notebook's draws: numpy's legacy generator, used as it is and
            # not kept (its state is the caller's).
            model.sampling_state = (None, 0)
            return seed, 0
        if (seed is None or resuming) and model.sampling_state[0] is not None \
                and self.first_step > 0:
            return model.sampling_state
        rng = np.random.default_rng(seed)
        model.sampling_state = (rng, int(rng.integers(2 ** 63)))
        return model.sampling_state

    def elapsed(self):
        return self.elapsed_before + time.perf_counter() - self.started

    def start_epoch(self):
        """Draw the sample order of the next epoch (or an epoch's worth of steps)."""
        n = self.X.shape[0]
        steps = min(self.steps_per_epoch, self.total_steps - self.done)
        if self.options.sampling == "shuffle":
            order = self.rng.permutation(n)[: min(n, steps * self.batch_size)]
        elif self.options.sampling == "sequential":
            order = np.arange(min(n, steps * self.batch_size))
        elif isinstance(self.rng, np.random.RandomState):
            # np.random.choice(n, batch_size) per step, as the notebook's
            # get_batch draws: the same numbers as one call for all steps.
            order = self.rng.randint(0, n, size=steps * self.batch_size)
        else:
            order = self.rng.integers(0, n, size=steps * self.batch_size)
        self.order, self.position, self.loss_sum = order.astype(np.int64), 0, 0.0

    def end_epoch(self):
        self.history.steps.append(self.state.step)
        self.history.loss.append(self.loss_sum / len(self.order))
        self.history.time.append(self.elapsed())
        self.order = None

    def run_steps(self, batch_losses):
        """One compiled call of about _SECONDS_PER_CALL from the current
        position in the epoch: returns (steps done, their summed loss)."""
        stop = min(len(self.order), self.position + self.steps_per_call * self.batch_size)
        order = self.order[self.position:stop]
        steps = math.ceil(len(order) / self.batch_size)
        rates = learning_rates(self.optimizer.learning_rate, self.schedule, self.state.step,
                               steps, self.schedule_steps, self.options.warmup)
        model = self.model
        started = time.perf_counter()
        status = _kernels.train_steps(self.kernel_run, order, rates, self.state.step,
                                      batch_losses, _SECONDS_PER_CALL)
        if status < 0:
            self.restore_start()
            raise ValueError(f"X[{-1 - status}] holds NaN, infinity or a value too large for "
                             f"{model.dtype.name}; the model is left as it was before train()")
        chunk_loss = float(batch_losses[:status].sum())
        self.state.step += status
        self.done += status
        self.position = min(len(self.order), self.position + status * self.batch_size)
        self.loss_sum += chunk_loss
        # Size the next call to last about _SECONDS_PER_CALL.
        per_step = (time.perf_counter() - started) / max(status, 1)
        self.steps_per_call = max(1, min(4096, int(_SECONDS_PER_CALL / max(per_step, 1e-7))))
        return status, chunk_loss


# ---------------------------------------------------------------------------
# Interrupts and checkpoints
# ---------------------------------------------------------------------------

class _InterruptsBetweenCalls:
    """Ctrl-C during train() takes effect after the compiled call in flight
    (at most about _SECONDS_PER_CALL) and its bookkeeping: the handler only
    records it, and the loop raises KeyboardInterrupt at a point where the
    parameters, optimizer state and position agree, so that a checkpoint
    written then resumes exactly. Only the main thread can do this; other
    threads keep Python's handling."""

    def __enter__(self):
        self.requested = False
        self.previous = None
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._record)
        return lambda: self.requested

    def _record(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self.requested and exc[0] is None:
            raise KeyboardInterrupt
        return False


class _CheckpointWriter:
    """Writes the run's state to `path` (atomically: a model file with the
    run's place in it) at most every `every` seconds, at the end, and on
    Ctrl-C."""

    def __init__(self, run, hooks, path, every):
        self.run, self.hooks, self.path, self.every = run, hooks, path, every
        self.last = time.perf_counter()

    def write_if_due(self):
        if self.path is not None and time.perf_counter() - self.last >= self.every:
            self.write()

    def write(self):
        # A diverged state is no checkpoint: the last finite one stays on disk.
        if self.path is None or not _kernels.all_finite(self.run.model.parameters):
            return
        run = self.run
        place = {"total_steps": run.total_steps, "schedule_steps": run.schedule_steps,
                 "steps_per_epoch": run.steps_per_epoch, "done": run.done,
                 "position": run.position, "loss_sum": run.loss_sum,
                 "history": run.history.to_dict(), "elapsed": run.elapsed(),
                 "options": _options_fingerprint(run.options)}
        arrays = {} if run.order is None else {"order": run.order}
        for hook in self.hooks:
            if isinstance(hook, _Validation):
                place["validation"] = {"best_accuracy": hook.best_accuracy, "stale": hook.stale}
                if hook.best_params is not None:
                    arrays["best_params"] = hook.best_params
        write_model_file(run.model, self.path, checkpoint=(place, arrays))
        self.last = time.perf_counter()


def _options_fingerprint(options):
    """The training options as JSON-ready values, to check a resume against.
    The seed is left out: a resumed run continues the checkpoint's sampler."""
    fingerprint = {}
    for spec in dataclasses.fields(options):
        value = getattr(options, spec.name)
        if spec.name == "seed":
            continue
        if spec.name == "optimizer" and value is not None:
            value = optimizer_to_dict(value)
        elif spec.name == "augment" and value is not None:
            value = augment_to_dict(value)
        elif callable(value):
            value = f"callable {getattr(value, '__qualname__', type(value).__name__)}"
        elif isinstance(value, tuple):
            value = list(value)
        fingerprint[spec.name] = value
    return fingerprint


def options_from_checkpoint(path):
    """(model, TrainingOptions) of the run a checkpoint holds, for resuming it
    without repeating its configuration (the CLI's --resume)."""
    model, checkpoint = read_model_file(check_path(path, "resume"))
    if checkpoint is None:
        raise ValueError(f"{path!r} is a model file, not a training checkpoint")
    try:
        fields = dict(checkpoint[0]["options"])
        if fields.get("optimizer") is not None:
            fields["optimizer"] = optimizer_from_dict(fields["optimizer"])
        if fields.get("augment") is not None:
            fields["augment"] = augment_from_dict(fields["augment"])
        if isinstance(fields.get("lr_schedule"), str) and fields["lr_schedule"].startswith(
                "callable "):
            raise ValueError("the run used a callable lr_schedule; resume it from Python")
        options = TrainingOptions(**fields)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path!r}: cannot resume its run ({exc})") from None
    return model, options


def _read_checkpoint(model, path, options):
    """Load the checkpoint at path into model; returns (place, arrays) for _Run."""
    saved, checkpoint = read_model_file(path)
    if checkpoint is None:
        raise ValueError(f"resume: {path!r} is a model file, not a training checkpoint "
                         f"(write one with train(..., checkpoint=PATH))")
    if (saved.layer_sizes, saved.activation, saved.output, saved.dtype) != (
            model.layer_sizes, model.activation, model.output, model.dtype):
        raise ValueError(f"resume: the checkpoint holds {saved!r}, not this {model!r}")
    place, arrays = checkpoint
    for name, value in arrays.items():
        expected = (model.n_params, model.dtype) if name == "best_params" else (None, np.int64)
        if name not in ("best_params", "order") or value.ndim != 1 or value.dtype != expected[1] \
                or expected[0] not in (None, value.shape[0]):
            raise ValueError(f"resume: {path!r} has a damaged checkpoint (array {name})")
    try:
        stored = place["options"]
        for key in ("total_steps", "schedule_steps", "steps_per_epoch", "done", "position"):
            if not isinstance(place[key], int) or isinstance(place[key], bool) \
                    or not 0 <= place[key] < 2 ** 62:
                raise ValueError(key)
        place["loss_sum"] = float(place["loss_sum"])
        if not math.isfinite(place["loss_sum"]):
            raise ValueError("loss_sum")
        if place.get("elapsed") is not None:
            place["elapsed"] = float(place["elapsed"])
            if not 0 <= place["elapsed"] < math.inf:
                raise ValueError("elapsed")
        if "validation" in place:
            best, stale = place["validation"]["best_accuracy"], place["validation"]["stale"]
            if not isinstance(best, (int, float)) or not -1 <= best <= 1 \
                    or not isinstance(stale, int) or stale < 0:
                raise ValueError("validation")
        History.from_dict(place["history"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"resume: {path!r} has a damaged checkpoint ({exc})") from None
    current = _options_fingerprint(options)
    for name, value in current.items():
        if stored.get(name) != value:
            raise ValueError(f"resume: the checkpoint's run has {name}={stored.get(name)!r}, "
                             f"this call {name}={value!r}; resume with the same options")
    if saved.sampling_state[0] is None:
        raise ValueError("resume: the checkpoint's run drew from numpy's legacy generator "
                         "(the notebook preset's seeding), which a checkpoint does not keep")
    model.parameters[...] = saved.parameters
    model.optimizer_state = saved.optimizer_state
    model.history = saved.history
    model.sampling_state = saved.sampling_state
    return place, arrays


def _check_sample_weight(sample_weight, n, dtype):
    weights = check_matrix(np.asarray(sample_weight).reshape(-1, 1) if np.ndim(sample_weight) == 1
                           else sample_weight, "sample_weight", n_columns=1, dtype=dtype,
                           n_rows=n, network_input=False).reshape(-1)
    if (weights < 0).any():
        raise ValueError("sample_weight must be >= 0 for every sample")
    return weights


def train(model, X, y, *, validation=None, sample_weight=None, progress=True,
          n_threads=None, callbacks=(), checkpoint=None, checkpoint_every=60.0, resume=None,
          **options):
    _check_model(model)
    check_keywords("train", options, _TRAIN_KEYWORDS)
    options = TrainingOptions(**options)
    _check_options_fit(model, options)
    # Checked now, not when the first checkpoint is due, after minutes of training.
    checkpoint = None if checkpoint is None else check_writable(checkpoint, "checkpoint")
    checkpoint_every = check_positive_float(checkpoint_every, "checkpoint_every", allow_zero=True)
    resumed = None if resume is None else _read_checkpoint(model, check_path(resume, "resume"),
                                                           options)
    run = _Run(model, X, y, options, sample_weight, n_threads, resumed)
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise TypeError("validation must be a pair (X_val, y_val)")
        if model.is_regressor:
            raise ValueError("validation scores classification accuracy, and this model has "
                             "'identity' output, a regression model; score it after training "
                             "with mlp.evaluate(model, X_val, y_val), which reports its mean "
                             "squared error and R²")
        X_val, y_val = _check_inputs_and_labels(model, *validation, "validation[0]",
                                                "validation[1]")
    elif options.patience is not None:
        raise ValueError("patience needs validation data to watch: pass validation=(X_val, y_val)")
    if isinstance(callbacks, Callback):
        raise TypeError("callbacks must be a list of mlp.Callback instances; put the one in a "
                        "list: callbacks=[...]")
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise TypeError(f"callbacks must be mlp.training.Callback instances, got {callback!r}")

    divergence = _DivergenceCheck(run)
    hooks = [divergence]
    if validation is not None:
        hooks.append(_Validation(X_val, y_val, options.patience, resumed))
    if progress:
        hooks.append(_ProgressBar(run.total_steps, run.done))
    hooks += list(callbacks)
    writer = _CheckpointWriter(run, hooks, checkpoint, checkpoint_every)

    history = run.history
    batch_losses = np.empty(4096)
    try:
        with model.locked(), _InterruptsBetweenCalls() as interrupted:
            while run.done < run.total_steps:
                # One epoch (or an epoch's worth of steps), in calls of ~0.2 s.
                if run.order is None:
                    run.start_epoch()
                    for hook in hooks:
                        hook.on_epoch_start(run)
                while run.position < len(run.order):
                    steps, chunk_loss = run.run_steps(batch_losses)
                    for hook in hooks:
                        hook.on_steps(run, steps, chunk_loss, steps * run.batch_size)
                    if interrupted():
                        writer.write()
                        raise KeyboardInterrupt
                    writer.write_if_due()
                run.end_epoch()
                stop_requested = False
                for hook in hooks:
                    stop_requested |= bool(hook.on_epoch_end(run, history))
                if stop_requested:
                    break
            writer.write()
    except BaseException:
        # Whatever stopped the run (Ctrl-C included) leaves finite parameters.
        if not _kernels.all_finite(model.parameters):
            model.parameters[...] = divergence.last_good
            model.optimizer_state = None
        raise
    finally:
        for hook in reversed(hooks):
            hook.on_train_end(run, history)
        if model.history is None:
            model.history = History()
        model.history.extend(history)
    return history


train.__signature__ = inspect.Signature(
    [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
     for name in ("model", "X", "y")]
    + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
       for name, default in (("validation", None), ("sample_weight", None), ("progress", True),
                             ("n_threads", None), ("callbacks", ()), ("checkpoint", None),
                             ("checkpoint_every", 60.0), ("resume", None))]
    + keyword_parameters(TrainingOptions))
_TRAIN_KEYWORDS = tuple(train.__signature__.parameters)

train.__doc__ = f"""Train model in place.

    Parameters
    ----------
    model : Model
    X : array-like of float, shape (n, n_inputs)
        Converted once to the model's dtype, except float32 data for a
        float64 model: its rows are widened as batches are gathered.
    y : array-like of int, shape (n,), or array-like of float, shape (n, n_outputs)
        Class labels in [0, n_outputs) (converted to int64), or targets
        (converted to the model's dtype; in [0, 1] for the cross-entropy
        losses). A model with one output takes 1-D y, shape (n,), as its
        targets: a regression's y.
    validation : tuple (X_val, y_val), optional
        Inputs and integer labels, scored at the end of every epoch (a
        classifier's accuracy; refused for a regression model).
    sample_weight : array-like of float, shape (n,), optional
        Scales each sample's loss and gradient; every weight >= 0.
    progress : bool, default True
        Show a progress bar.
    n_threads : int, optional
        Worker threads sharing each step (at most 64); None uses all cores
        unless the network or the run is too small to gain from them. BLAS
        runs single-threaded inside each worker.
    callbacks : sequence of Callback, default ()
        Called at the start of every epoch, between compiled calls, after
        every epoch and at the end.
    checkpoint : str or os.PathLike, optional
        Write the run's state here (atomically): the model, optimizer state,
        History, sampler and the place in the epoch, every
        `checkpoint_every` seconds, at the end, and on Ctrl-C.
    checkpoint_every : float, default 60.0
        Seconds between checkpoint writes, checked after each compiled call
        (about 0.2 s of steps); 0 writes after every call.
    resume : str or os.PathLike, optional
        A checkpoint to continue from: its state is loaded into `model` and
        the run goes on where it stopped, ending with the parameters an
        uninterrupted run would have (same options and threads). The other
        arguments must be the ones the run started with.
{numpydoc_parameters(TrainingOptions)}

    Returns
    -------
    History
        This run's epochs. The model's optimizer state, step count and
        sampling generator carry over to the next call; ``model.history``
        accumulates every run.

    Notes
    -----
    Whatever ends the run early (an exception, Ctrl-C, divergence) leaves
    the parameters finite: as they were after the last compiled call
    (about 0.2 s of steps) if those are finite, else as they were at the
    end of the last good epoch. Ctrl-C takes effect after the compiled call
    in flight.
    """
