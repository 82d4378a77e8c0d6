"""Training: single steps, a full training run, and evaluation.

``train()`` reads as: check the arguments, prepare a run (optimizer state,
buffers, sampling), then an epoch loop whose epochs are a few compiled
calls each, with small callbacks for what happens between them (progress
bar, History, validation, early stopping, divergence). The steps themselves
run inside the kernel (mlp/_worker.pxi).
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np

from . import _kernels
from ._threads import blas_threads, call_threads, check_threads, train_workers
from ._validation import check_labels, check_matrix, check_targets_or_labels
from .augment import _training_images_and_plan
from .hyperparams import TrainingOptions, keyword_parameters, numpydoc_parameters
from .model import Model, loss_code
from .optimizers import OptimizerState, check_optimizer
from .schedules import learning_rates

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


def _check_inputs_and_labels(model, X, y, X_name="X", y_name="y", for_training=False):
    # for_training: the training kernel widens float32 rows to a float64
    # model as it gathers them (so the data set is not copied), and checks
    # the rows it gathers for NaN and inf (so the data set is not scanned).
    widen = for_training and model.dtype == np.float64
    X = check_matrix(X, X_name, n_columns=model.n_inputs, dtype=None if widen else model.dtype,
                     finite=not for_training)
    y = check_labels(y, y_name, n_classes=model.n_outputs, n_rows=X.shape[0])
    return X, y


def _default_loss(model):
    return "cross_entropy" if model.output == "softmax" else "mse"


def _optimizer_state(model, optimizer):
    """The model's state for `optimizer`: continued when equal, else fresh."""
    state = model.optimizer_state
    if state is None or state.optimizer != optimizer:
        state = OptimizerState.fresh(optimizer, model.n_params, model.dtype)
        model.optimizer_state = state
    return state


def _kernel_step_arguments(model, state, max_norm):
    """The optimizer-related arguments of _kernels.train_steps, in order."""
    velocity, second_moment = state.kernel_buffers(model.dtype)
    needs_gradients = state.optimizer.kernel_rule()["code"] != _kernels.UPDATE_RULES["sgd"]
    gradients = np.empty(model.n_params if needs_gradients else 0, dtype=model.dtype)
    return (state.optimizer.kernel_rule(), velocity, second_moment, gradients,
            0.0 if max_norm is None else max_norm)


def training_step(model, X, Y, learning_rate=None, loss=None, *, optimizer=None,
                  weight_decay=None, dropout=0.0, input_dropout=0.0, max_norm=None,
                  seed=0):
    """One in-place training step on one batch.

    Parameters
    ----------
    model : Model
    X : array-like (n, n_inputs)
    Y : array-like (n, n_outputs) targets, or (n,) integer labels (one-hot encoded)
    learning_rate, weight_decay : float, optional
        Plain SGD with these (``p -= learning_rate * mean gradient``, weights
        also ``-= learning_rate * weight_decay * W``); not together with optimizer.
    loss : str, optional
        Default: cross_entropy for softmax models, mse otherwise.
    optimizer : SGD or Adam, optional
        The update rule; its state continues across calls on the model while
        the optimizer stays equal.
    dropout, input_dropout, max_norm : as in :func:`train`
    seed : int
        Keys the dropout masks (with the step count).

    Returns
    -------
    float
        The batch's summed loss before the step.
    """
    _check_model(model)
    loss = _default_loss(model) if loss is None else loss
    code = loss_code(loss, model.output)
    options = TrainingOptions(optimizer=optimizer, learning_rate=learning_rate,
                              weight_decay=weight_decay, dropout=dropout,
                              input_dropout=input_dropout, max_norm=max_norm, seed=seed)
    if options.optimizer is None and options.learning_rate is None:
        raise ValueError("training_step needs optimizer= (e.g. mlp.SGD(learning_rate=0.1)) "
                         "or learning_rate=")
    optimizer = options.resolved_optimizer()
    X = check_matrix(X, "X", n_columns=model.n_inputs, dtype=model.dtype)
    Y = check_targets_or_labels(Y, "Y", n_outputs=model.n_outputs, n_rows=X.shape[0],
                                dtype=model.dtype, loss=loss)
    n = X.shape[0]
    empty = np.empty(0, dtype=model.dtype)
    total = np.zeros(1)
    with model._lock, blas_threads(1):
        state = _optimizer_state(model, optimizer)
        rates = np.array([optimizer.learning_rate])
        status = _kernels.train_steps(
            model._params, model._sizes, model._hidden_code, model._output_code, code, X,
            Y if Y.ndim == 1 else np.empty(0, dtype=np.int64),
            Y.reshape(-1) if Y.ndim == 2 else empty, empty, np.arange(n, dtype=np.int64), n,
            rates, state.step, *_kernel_step_arguments(model, state, options.max_norm),
            options.dropout, options.input_dropout, options.seed or 0, None, 0.0,
            model._workspace(n), total, n <= _kernels.FEATURE_MAJOR_MAX_BATCH, 1)
        state.step += status
    return float(total[0])


class Evaluation(NamedTuple):
    """Result of :func:`evaluate`."""
    accuracy: float
    correct: int


def evaluate(model, X, y, *, n_threads=None):
    """Classification accuracy of model on (X, y).

    Parameters
    ----------
    X : array-like (n, n_inputs)
    y : array-like (n,) integer labels
    n_threads : int, optional
        Worker threads sharing the rows (default 1).

    Returns
    -------
    Evaluation
        (accuracy, correct): a float in [0, 1] and an int.
    """
    _check_model(model)
    threads = call_threads(n_threads)
    X, y = _check_inputs_and_labels(model, X, y)
    # X is checked once above; model.predict would check it again.
    with model._lock, blas_threads(1):
        predicted = model._forward_locked(X, threads).argmax(axis=1)
    correct = int(np.count_nonzero(predicted == y))
    return Evaluation(correct / len(y), correct)


@dataclass
class History:
    """What happened during :func:`train`, one entry per epoch (or, when
    sampling with replacement by iterations, per epoch's worth of steps).

    Attributes
    ----------
    steps : list of int
        Steps done at the end of the epoch, counted over every run of the
        model's optimizer (a second ``train()`` call continues the count).
    loss : list of float
        Mean per-sample training loss over the epoch's batches (the data
        loss, without weight decay, with dropout as trained).
    val_accuracy : list of float
        Validation accuracy at the end of the epoch (when validation data was given).
    time : list of float
        Seconds since this run started.
    stopped_early : bool
    best_step : int or None
        With patience: the step whose parameters were kept.
    """
    steps: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    time: list = field(default_factory=list)
    stopped_early: bool = False
    best_step: int | None = None

    @property
    def loss_curve_(self):
        return list(self.loss)

    @property
    def total_time(self):
        return self.time[-1] if self.time else 0.0

    def extend(self, other):
        """Append another run's entries (its times offset by this one's total).
        Where only one of the runs was validated, the other's epochs get None."""
        offset = self.total_time
        if self.val_accuracy or other.val_accuracy:
            self.val_accuracy += [None] * (len(self.steps) - len(self.val_accuracy))
            self.val_accuracy += other.val_accuracy + [None] * (
                len(other.steps) - len(other.val_accuracy))
        self.steps += other.steps
        self.loss += other.loss
        self.time += [offset + t for t in other.time]
        self.stopped_early = other.stopped_early
        self.best_step = other.best_step if other.best_step is not None else self.best_step

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        return cls(**data)


# ---------------------------------------------------------------------------
# Callbacks: what happens between kernel calls and between epochs
# ---------------------------------------------------------------------------

class Callback:
    """Hooks into :func:`train`. ``on_steps`` runs after every compiled call
    (a few times a second), ``on_epoch_end`` after every epoch and may stop
    the run by returning True, ``on_train_end`` once at the end."""

    def on_steps(self, run, steps, loss_sum, samples):
        pass

    def on_epoch_end(self, run, history):
        return False

    def on_train_end(self, run, history):
        pass


class _ProgressBar(Callback):
    def __init__(self, total_steps):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, mininterval=0.2)

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

    def __init__(self, X_val, y_val, patience):
        self.X_val, self.y_val, self.patience = X_val, y_val, patience
        self.best_accuracy, self.best_params, self.stale = -1.0, None, 0

    def on_epoch_end(self, run, history):
        model = run.model
        predicted = model._forward_locked(self.X_val, run.workers).argmax(axis=1)
        accuracy = float(np.count_nonzero(predicted == self.y_val)) / len(self.y_val)
        history.val_accuracy.append(accuracy)
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.stale = accuracy, 0
            if self.patience is not None:
                self.best_params = model._params.copy()
            history.best_step = history.steps[-1]
        else:
            self.stale += 1
        if self.patience is not None and self.stale >= self.patience:
            history.stopped_early = True
            return True
        return False

    def on_train_end(self, run, history):
        if self.best_params is not None:
            run.model._params[...] = self.best_params


class _DivergenceCheck(Callback):
    """After every epoch: a NaN/inf loss or parameter ends the run, keeping
    the parameters of the last good epoch. A loss that grew a hundredfold
    from its first epoch, or that has not moved from it in three epochs or
    more, gets a warning naming the learning rate."""

    def __init__(self, run):
        self.last_good = run.model._params.copy()
        self.warned = False

    def on_epoch_end(self, run, history):
        model, loss = run.model, history.loss[-1]
        if not (math.isfinite(loss) and _kernels.all_finite(model._params)):
            model._params[...] = self.last_good
            first = history.steps[-2] if len(history.steps) > 1 else run.first_step
            raise FloatingPointError(
                f"training diverged between steps {first} and {history.steps[-1]} "
                f"(loss {loss}); the model keeps its parameters from step {first}. "
                f"Lower the learning rate ({run.optimizer.learning_rate}).")
        self.last_good[...] = model._params
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
    """The state of one train() call: checked data, optimizer state, buffers
    and sampling. Kept apart from the loop so that the loop reads plainly."""

    def __init__(self, model, X, y, options, sample_weight, n_threads):
        self.model = model
        self.options = options
        self.loss = _default_loss(model) if options.loss is None else options.loss
        self.loss_code = loss_code(self.loss, model.output)
        widen = model.dtype == np.float64
        self.X = check_matrix(X, "X", n_columns=model.n_inputs,
                              dtype=None if widen else model.dtype, finite=False)
        # Distortions are drawn in float32 (and widened for a float64 model).
        self.X, self.augment_plan = _training_images_and_plan(options.augment, self.X,
                                                               model.n_inputs)
        n = self.X.shape[0]
        targets = check_targets_or_labels(y, "y", n_outputs=model.n_outputs, n_rows=n,
                                          dtype=model.dtype, loss=self.loss)
        self.labels = targets if targets.ndim == 1 else np.empty(0, dtype=np.int64)
        self.targets = targets.reshape(-1) if targets.ndim == 2 else np.empty(0, model.dtype)
        self.sample_weight = np.empty(0, model.dtype) if sample_weight is None else \
            _check_sample_weight(sample_weight, n, model.dtype)
        self.batch_size = options.batch_size
        self.steps_per_epoch = math.ceil(n / self.batch_size)
        epochs = options.epochs if options.epochs is not None else (
            None if options.iterations is not None else 10)
        self.total_steps = (options.iterations if epochs is None
                            else epochs * self.steps_per_epoch)
        self.optimizer = options.resolved_optimizer()
        self.schedule = options.resolved_schedule()
        self.state = _optimizer_state(model, self.optimizer)
        self.first_step = self.state.step
        # The schedule counts the optimizer's steps, so a second call goes on
        # where the first stopped (a warm-up is not repeated); its length is
        # the steps before this call plus this call's.
        self.schedule_steps = self.first_step + self.total_steps
        self.workers = train_workers(check_threads(n_threads), self.batch_size,
                                     model.layer_sizes, self.total_steps)
        self.rng, self.dropout_seed = self._sampling(options.seed)
        self.work = np.empty(_kernels.workspace_size(model._sizes, self.batch_size),
                             dtype=model.dtype)
        self.step_arguments = _kernel_step_arguments(model, self.state, options.max_norm)
        self.feature_major = self.batch_size <= _kernels.FEATURE_MAJOR_MAX_BATCH
        self.steps_per_call = _FIRST_CALL_STEPS
        # Bad data found mid-run (a NaN row) undoes the whole call.
        self._start = (model._params.copy(), self.state.copy())

    def restore_start(self):
        params, state = self._start
        self.model._params[...] = params
        self.state.step = state.step
        for name, buffer in state.buffers.items():
            self.state.buffers[name][...] = buffer

    def _sampling(self, seed):
        """The batch sampler and the dropout masks' key. seed=None continues
        those of the model's previous run, so that a run split over several
        train() calls draws what one would."""
        model = self.model
        if isinstance(seed, np.random.RandomState):
            # The notebook's draws: numpy's legacy generator, used as it is and
            # not kept (its state is the caller's).
            model._sampling_rng, model._dropout_seed = None, 0
            return seed, 0
        if seed is None and model._sampling_rng is not None and self.first_step > 0:
            return model._sampling_rng, model._dropout_seed
        rng = np.random.default_rng(seed)
        model._sampling_rng, model._dropout_seed = rng, int(rng.integers(2 ** 63))
        return model._sampling_rng, model._dropout_seed

    def epoch_order(self, steps):
        """Sample indices for the next `steps` steps."""
        n = self.X.shape[0]
        if self.options.sampling == "shuffle":
            return self.rng.permutation(n)[: min(n, steps * self.batch_size)]
        if isinstance(self.rng, np.random.RandomState):
            # np.random.choice(n, batch_size) per step, as the notebook's
            # get_batch draws: the same numbers as one call for all steps.
            return self.rng.randint(0, n, size=steps * self.batch_size).astype(np.int64)
        return self.rng.integers(0, n, size=steps * self.batch_size, dtype=np.int64)

    def run_steps(self, order, batch_losses):
        """One compiled call over the batches of `order`: (steps done, summed loss)."""
        steps = math.ceil(len(order) / self.batch_size)
        rates = learning_rates(self.optimizer.learning_rate, self.schedule, self.state.step,
                               steps, self.schedule_steps, self.options.warmup)
        model = self.model
        started = time.perf_counter()
        status = _kernels.train_steps(
            model._params, model._sizes, model._hidden_code, model._output_code,
            self.loss_code, self.X, self.labels, self.targets, self.sample_weight, order,
            self.batch_size, rates, self.state.step, *self.step_arguments,
            self.options.dropout, self.options.input_dropout, self.dropout_seed,
            self.augment_plan, _SECONDS_PER_CALL, self.work, batch_losses, self.feature_major, self.workers)
        if status < 0:
            self.restore_start()
            raise ValueError(f"X[{-1 - status}] holds NaN, infinity or a value too large for "
                             f"{model.dtype.name}; the model is left as it was before train()")
        self.state.step += status
        # Size the next call to last about _SECONDS_PER_CALL.
        per_step = (time.perf_counter() - started) / max(status, 1)
        self.steps_per_call = max(1, min(4096, int(_SECONDS_PER_CALL / max(per_step, 1e-7))))
        return status, float(batch_losses[:status].sum())


def _check_sample_weight(sample_weight, n, dtype):
    weights = check_matrix(np.asarray(sample_weight).reshape(-1, 1) if np.ndim(sample_weight) == 1
                           else sample_weight, "sample_weight", n_columns=1, dtype=dtype,
                           n_rows=n).reshape(-1)
    if (weights < 0).any():
        raise ValueError("sample_weight must be >= 0 for every sample")
    return weights


def train(model, X, y, *, validation=None, sample_weight=None, progress=True,
          n_threads=None, callbacks=(), **options):
    _check_model(model)
    options = TrainingOptions(**options)
    run = _Run(model, X, y, options, sample_weight, n_threads)
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise TypeError("validation must be a pair (X_val, y_val)")
        X_val, y_val = _check_inputs_and_labels(model, *validation, "validation[0]",
                                                "validation[1]")
    elif options.patience is not None:
        raise ValueError("patience needs validation data to watch: pass validation=(X_val, y_val)")
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise TypeError(f"callbacks must be mlp.training.Callback instances, got {callback!r}")

    hooks = [_DivergenceCheck(run)]
    if validation is not None:
        hooks.append(_Validation(X_val, y_val, options.patience))
    if progress:
        hooks.append(_ProgressBar(run.total_steps))
    hooks += list(callbacks)

    history = History()
    batch_losses = np.empty(4096)
    start = time.perf_counter()
    done = 0
    try:
        with model._lock, blas_threads(1):
            while done < run.total_steps:
                # One epoch (or an epoch's worth of steps), in calls of ~0.2 s.
                epoch_steps = min(run.steps_per_epoch, run.total_steps - done)
                order = run.epoch_order(epoch_steps)
                loss_sum, position = 0.0, 0
                while position < len(order):
                    stop = min(len(order), position + run.steps_per_call * run.batch_size)
                    steps, chunk_loss = run.run_steps(order[position:stop], batch_losses)
                    position = min(len(order), position + steps * run.batch_size)
                    done += steps
                    loss_sum += chunk_loss
                    for hook in hooks:
                        hook.on_steps(run, steps, chunk_loss, steps * run.batch_size)
                history.steps.append(run.state.step)
                history.loss.append(loss_sum / len(order))
                history.time.append(time.perf_counter() - start)
                stop_requested = False
                for hook in hooks:
                    stop_requested |= bool(hook.on_epoch_end(run, history))
                if stop_requested:
                    break
    except BaseException:
        # Whatever stopped the run (Ctrl-C included) leaves finite parameters.
        if not _kernels.all_finite(model._params):
            model._params[...] = hooks[0].last_good
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
                             ("n_threads", None), ("callbacks", ()))]
    + keyword_parameters(TrainingOptions))

train.__doc__ = f"""Train model in place.

    Parameters
    ----------
    model : Model
    X : array-like (n, n_inputs)
        Converted once to the model's dtype, except float32 data for a
        float64 model: its rows are widened as batches are gathered.
    y : array-like (n,) integer labels in [0, n_outputs), or (n, n_outputs) targets
    validation : (X_val, y_val), optional
        Scored at the end of every epoch.
    sample_weight : array-like (n,), optional
        Scales each sample's loss and gradient.
    progress : bool
        Show a progress bar.
    n_threads : int, optional
        Worker threads sharing each step (at most 64); None uses all cores
        unless the network or the run is too small to gain from them. BLAS
        runs single-threaded inside each worker.
    callbacks : sequence of Callback
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
    end of the last good epoch.
    """
